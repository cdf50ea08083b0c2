"""Event handlers that never lose a message.

nameko's own ``event_handler`` acks a message whose handler raised, so the event
is gone. ``event_handler`` here republishes a failed message to a delay queue
(1 s, 5 s, 30 s … from ``LASTMILE_EVENT_RETRY_DELAYS``) that dead-letters it back
to the handler's queue, and after the last delay parks it in the service's
dead-letter queue ``lastmile.dead.<service>`` for ``python -m lastmile.deadletters``.
Only then is the original acked, so a poison message never blocks the queue.
"""
import logging
import traceback

from kombu import Connection, Exchange, Queue, binding
from kombu.pools import producers
from nameko.events import EventHandler
from nameko.standalone.events import get_event_exchange

from lastmile import config
from lastmile.errors import NotReady
from lastmile.metrics import EVENTS_CONSUMED

log = logging.getLogger(__name__)

ATTEMPT_HEADER = "x-lastmile-attempt"
REDELIVER_EXCHANGE = Exchange("lastmile.redeliver", type="direct", durable=True)


def event_exchange(source_service):
    """The topic exchange ``<service>.events`` nameko's own handlers bind to."""
    return get_event_exchange(source_service, {})


def delay_exchange(seconds):
    return Exchange(f"lastmile.delay.{seconds}s", type="fanout", durable=True)


def delay_queue(seconds):
    # Expired messages keep their routing key (the handler queue's name) and so
    # return through the redeliver exchange to exactly the handler that failed.
    return Queue(
        f"lastmile.delay.{seconds}s",
        exchange=delay_exchange(seconds),
        durable=True,
        queue_arguments={"x-message-ttl": seconds * 1000, "x-dead-letter-exchange": REDELIVER_EXCHANGE.name},
    )


def dead_letter_queue(service_name):
    return Queue(f"lastmile.dead.{service_name}", exchange=Exchange(""), routing_key=f"lastmile.dead.{service_name}", durable=True)


def handler_queue_name(source_service, event_type, service_name, method_name):
    return f"evt-{source_service}-{event_type}--{service_name}.{method_name}"


def handler_queue(source_service, event_type, service_name, method_name):
    name = handler_queue_name(source_service, event_type, service_name, method_name)
    return Queue(
        name,
        bindings=[
            binding(event_exchange(source_service), routing_key=event_type),
            binding(REDELIVER_EXCHANGE, routing_key=name),
        ],
        durable=True,
        auto_delete=False,
    )


def declare_retry_topology(channel, service_name):
    REDELIVER_EXCHANGE(channel).declare()
    for seconds in sorted(set(config.retry_delays())):
        delay_exchange(seconds)(channel).declare()
        delay_queue(seconds)(channel).declare()
    dead_letter_queue(service_name)(channel).declare()


class ReliableEventHandler(EventHandler):
    def setup(self):
        service_name = self.container.service_name
        amqp_uri = self.container.config["AMQP_URI"]
        self.connection = Connection(amqp_uri, transport_options={"confirm_publish": True})
        with Connection(amqp_uri) as conn:
            channel = conn.channel()
            event_exchange(self.source_service)(channel).declare()
            declare_retry_topology(channel, service_name)
        self.queue = handler_queue(self.source_service, self.event_type, service_name, self.method_name)
        # Skip EventHandler.setup, which would build a queue with a single binding.
        super(EventHandler, self).setup()

    def handle_result(self, message, worker_ctx, result=None, exc_info=None):
        handler = f"{self.container.service_name}.{self.method_name}"
        if exc_info is None:
            EVENTS_CONSUMED.labels(handler, "handled").inc()
        else:
            try:
                self._retry_later(message, exc_info)
            except Exception:
                log.exception("could not park failed message of %s; it will be redelivered", self.queue.name)
                self.queue_consumer.requeue_message(message)
                return result, exc_info
        self.queue_consumer.ack_message(message)
        return result, exc_info

    def _retry_later(self, message, exc_info):
        delays = config.retry_delays()
        attempt = int((message.headers or {}).get(ATTEMPT_HEADER, 0)) + 1
        error = "".join(traceback.format_exception_only(exc_info[0], exc_info[1])).strip()
        headers = dict(message.headers or {})
        headers[ATTEMPT_HEADER] = attempt
        headers["x-lastmile-error"] = error[:1000]
        headers["x-lastmile-queue"] = self.queue.name
        properties = {"message_id": message.properties.get("message_id")}
        with producers[self.connection].acquire(block=True, timeout=10) as producer:
            if attempt <= len(delays):
                seconds = delays[attempt - 1]
                level = logging.INFO if issubclass(exc_info[0], NotReady) else logging.WARNING
                log.log(level, "%s failed (%s); retry %d in %ds", self.queue.name, error, attempt, seconds)
                EVENTS_CONSUMED.labels(f"{self.container.service_name}.{self.method_name}", "retried").inc()
                producer.publish(
                    message.body, exchange=delay_exchange(seconds), routing_key=self.queue.name,
                    headers=headers, content_type=message.content_type,
                    content_encoding=message.content_encoding, delivery_mode=2, **properties,
                )
            else:
                dead = dead_letter_queue(self.container.service_name)
                log.error("%s failed %d times (%s); dead-lettered to %s", self.queue.name, attempt, error, dead.name)
                EVENTS_CONSUMED.labels(f"{self.container.service_name}.{self.method_name}", "dead_lettered").inc()
                producer.publish(
                    message.body, exchange="", routing_key=dead.name, headers=headers,
                    content_type=message.content_type, content_encoding=message.content_encoding,
                    delivery_mode=2, **properties,
                )


def stream_queue(sources, service_name, method_name):
    name = f"evt-all--{service_name}.{method_name}"
    return Queue(
        name,
        bindings=[binding(event_exchange(source), routing_key="#") for source in sources]
        + [binding(REDELIVER_EXCHANGE, routing_key=name)],
        durable=True,
        auto_delete=False,
    )


class EventStreamHandler(ReliableEventHandler):
    """Every event of the given services, on one queue, in the order they arrive."""

    def __init__(self, sources, **kwargs):
        self.sources = tuple(sources)
        super().__init__("*", "#", **kwargs)

    def setup(self):
        service_name = self.container.service_name
        self.connection = Connection(self.container.config["AMQP_URI"], transport_options={"confirm_publish": True})
        with Connection(self.container.config["AMQP_URI"]) as conn:
            channel = conn.channel()
            for source in self.sources:
                event_exchange(source)(channel).declare()
            declare_retry_topology(channel, service_name)
        self.queue = stream_queue(self.sources, service_name, self.method_name)
        super(EventHandler, self).setup()


event_handler = ReliableEventHandler.decorator
event_stream = EventStreamHandler.decorator
