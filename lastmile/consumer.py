"""Event handlers that never lose a message.

nameko's own ``event_handler`` acks a message whose handler raised, so the event
is gone. ``event_handler`` here republishes a failed message to a delay queue
(1 s, 5 s, 30 s … from ``LASTMILE_EVENT_RETRY_DELAYS``) that dead-letters it back
to the handler's queue, and after the last delay parks it in the service's
dead-letter queue ``lastmile.dead.<service>`` for ``python -m lastmile.deadletters``.
Only then is the original acked, so a poison message never blocks the queue.

``event_batch_handler`` and ``event_batch_stream`` call their method with a list of
events: those that gathered on the queue in the 0.1 s after the first, or while the
previous call ran (up to ``LASTMILE_MAX_WORKERS``, the queue's prefetch), so that one
worker and one transaction serve many. When the method raises, each event is handled
again on its own, so only the one that fails is retried and dead-lettered.
"""
import logging
import traceback
from functools import partial

import eventlet
from kombu import Connection, Exchange, Queue, binding
from kombu.pools import producers
from nameko.events import EventHandler
from nameko.exceptions import ContainerBeingKilled
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


# How long a gathering handler waits for more after its first event: a notification, a
# statistic or an event-log entry 0.1 s later is no later for anyone reading it.
LINGER_SECONDS = 0.1


class Gathering:
    """Mixed into a handler: its method gets a list of the events that gathered on its
    queue while its last call ran, instead of one event. One call at a time, so under
    load each call takes what arrived meanwhile (at most the queue's prefetch), and
    when idle a single event is handled at once."""

    def __init__(self, *args, linger=LINGER_SECONDS, **kwargs):
        self.linger = linger
        super().__init__(*args, **kwargs)

    def setup(self):
        self._gathered = []
        self._calling = False
        super().setup()

    def handle_message(self, body, message):
        self._gathered.append((body, message))
        if not self._calling:
            self._calling = True
            # The queue consumer hands over each message it has received in a greenthread
            # scheduled before this one, so they are all gathered by the time it runs.
            self.container.spawn_managed_thread(self._linger_then_handle, identifier=f"{self.queue.name}.gathered")

    def _linger_then_handle(self):
        # Waiting a moment for more lets one call serve several events even when the
        # handler keeps up; what is not urgent to anyone may wait ``linger`` seconds.
        if self.linger:
            eventlet.sleep(self.linger)
        self._handle_gathered()

    def _handle_gathered(self):
        gathered, self._gathered = self._gathered, []
        if not self._spawn(gathered, partial(self._handled_together, gathered)):
            self._calling = False

    def _spawn(self, gathered, handle_result, context_data=None):
        try:
            self.container.spawn_worker(self, ([body for body, _ in gathered],), {},
                                        context_data=context_data or {}, handle_result=handle_result)
            return True
        except ContainerBeingKilled:
            for _, message in gathered:
                self.queue_consumer.requeue_message(message)
            return False

    def _handled_together(self, gathered, worker_ctx, result=None, exc_info=None):
        try:
            if exc_info is None or len(gathered) == 1:
                for _, message in gathered:
                    self.handle_result(message, worker_ctx, result, exc_info)
            else:
                # One event failed and undid the others' work: each again on its own, so
                # only the one that fails is retried. Not from this worker, which holds a slot.
                log.info("%d events of %s handled together failed; handling each alone", len(gathered),
                         self.queue.name)
                self.container.spawn_managed_thread(partial(self._one_by_one, gathered))
        finally:
            if self._gathered:
                self.container.spawn_managed_thread(self._handle_gathered, identifier=f"{self.queue.name}.gathered")
            else:
                self._calling = False
        return result, exc_info

    def _one_by_one(self, gathered):
        for body, message in gathered:
            self._spawn([(body, message)], partial(self.handle_result, message),
                        context_data=self.unpack_message_headers(message))


class GatheringEventHandler(Gathering, ReliableEventHandler):
    pass


class GatheringEventStreamHandler(Gathering, EventStreamHandler):
    pass


event_handler = ReliableEventHandler.decorator
event_stream = EventStreamHandler.decorator
event_batch_handler = GatheringEventHandler.decorator
event_batch_stream = GatheringEventStreamHandler.decorator
