"""Helpers for service and end-to-end tests: a tap on the event exchanges, event
publishing in the envelope, polling."""
import os
import time
import uuid

from kombu import Connection, Consumer, Queue

from lastmile.consumer import event_exchange
from lastmile.events import make_event

SOURCES = ("needs", "dispatch", "volunteers", "ratings")


# A loaded 2-core machine can be several times slower than a quiet one; every wait
# is stretched by this factor so that slowness is not mistaken for failure.
PATIENCE = float(os.environ.get("LASTMILE_TEST_PATIENCE", "3"))


def wait_for(predicate, timeout=10.0, interval=0.05, message="condition"):
    """Poll until ``predicate()`` returns something truthy, and return it."""
    timeout *= PATIENCE
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class EventTap:
    """Collects every event the services publish, as an outside subscriber would."""

    def __init__(self, amqp_uri, sources=SOURCES):
        self.connection = Connection(amqp_uri)
        self.events = []
        channel = self.connection.channel()
        self.queues = []
        tap_id = uuid.uuid4().hex[:8]
        for source in sources:
            exchange = event_exchange(source)
            exchange(channel).declare()
            self.queues.append(Queue(f"tap-{tap_id}-{source}", exclusive=True, auto_delete=True, exchange=exchange,
                                     routing_key="#"))
        self.consumer = Consumer(channel, queues=self.queues, callbacks=[self._on_message], accept=["json"])
        self.consumer.consume()

    def _on_message(self, body, message):
        self.events.append(body)
        message.ack()

    def drain(self, seconds=0.1):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self.connection.drain_events(timeout=0.05)
            except TimeoutError:
                pass
            except OSError:
                pass

    def of(self, type_=None, need_id=None):
        self.drain(0.05)
        return [e for e in self.events if (type_ is None or e["type"] == type_)
                and (need_id is None or e.get("need_id") == need_id)]

    def wait(self, type_, need_id=None, count=1, timeout=10.0):
        def enough():
            self.drain(0.05)
            found = self.of(type_, need_id)
            return found if len(found) >= count else None

        return wait_for(enough, timeout, interval=0.0, message=f"{count} {type_} event(s)")

    def close(self):
        self.connection.release()


def publish_event(amqp_uri, source, type_, data, need_id=None, event=None):
    """Publish an event in Lastmile's envelope, as the named service would."""
    event = event or make_event(source, type_, data, need_id=need_id)
    with Connection(amqp_uri) as conn:
        producer = conn.Producer()
        exchange = event_exchange(source)
        producer.publish(event, exchange=exchange, routing_key=type_, serializer="json", declare=[exchange],
                         delivery_mode=2)
    return event
