"""Dead letters: events a handler failed on after every retry.

    python -m lastmile.deadletters list [--service dispatch]
    python -m lastmile.deadletters replay [--service dispatch] [--event-id ID]

``list`` shows each parked event without taking it off its queue. ``replay``
sends events back to the handler that failed on them, as a first attempt, once
the cause is fixed; the handler's idempotence makes a replay of an event that
did get applied harmless.
"""
import argparse
import json
import sys

from kombu import Connection

from lastmile import config, topology
from lastmile.consumer import ATTEMPT_HEADER, REDELIVER_EXCHANGE, dead_letter_queue


def _parked(channel, queue_name):
    """Every message of a dead-letter queue, unacknowledged (they stay queued
    unless acked)."""
    messages = []
    while True:
        message = channel.basic_get(queue_name, no_ack=False)
        if message is None:
            return messages
        messages.append(message)


def _describe(service, message):
    headers = message.headers or {}
    try:
        body = json.loads(message.body)
    except (TypeError, ValueError):
        body = {}
    return {
        "service": service,
        "event_id": body.get("event_id"),
        "type": body.get("type"),
        "source": body.get("source"),
        "need_id": body.get("need_id"),
        "handler_queue": headers.get("x-lastmile-queue"),
        "attempts": headers.get(ATTEMPT_HEADER),
        "error": headers.get("x-lastmile-error"),
    }


def list_dead_letters(amqp_uri, services):
    found = []
    with Connection(amqp_uri) as conn:
        for service in services:
            channel = conn.channel()
            queue = dead_letter_queue(service)
            queue(channel).declare()
            found += [_describe(service, m) for m in _parked(channel, queue.name)]
            channel.close()  # unacked messages return to the queue
    return found


def replay(amqp_uri, services, event_id=None):
    """Send dead letters back to their handlers; returns what was replayed."""
    replayed = []
    with Connection(amqp_uri) as conn:
        producer = conn.Producer()
        for service in services:
            channel = conn.channel()
            queue = dead_letter_queue(service)
            queue(channel).declare()
            for message in _parked(channel, queue.name):
                described = _describe(service, message)
                if event_id and described["event_id"] != event_id or not described["handler_queue"]:
                    continue
                headers = {k: v for k, v in (message.headers or {}).items() if not k.startswith("x-lastmile-")}
                producer.publish(
                    message.body, exchange=REDELIVER_EXCHANGE, routing_key=described["handler_queue"],
                    headers=headers, content_type=message.content_type,
                    content_encoding=message.content_encoding, delivery_mode=2, declare=[REDELIVER_EXCHANGE],
                )
                channel.basic_ack(message.delivery_tag)
                replayed.append(described)
            channel.close()
    return replayed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("list", "replay"))
    parser.add_argument("--service", choices=sorted(topology.SERVICES), help="one service only")
    parser.add_argument("--event-id", help="replay only this event")
    args = parser.parse_args(argv)
    services = [args.service] if args.service else sorted(topology.SERVICES)
    uri = config.get("LASTMILE_AMQP_URI")
    if args.command == "list":
        letters = list_dead_letters(uri, services)
    else:
        letters = replay(uri, services, args.event_id)
    for letter in letters:
        print(json.dumps(letter, ensure_ascii=False))
    print(f"{len(letters)} dead letter(s) {'parked' if args.command == 'list' else 'replayed'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
