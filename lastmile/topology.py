"""Who listens to what, read off the service classes themselves.

RabbitMQ drops an event published to an exchange no queue is bound to yet. Each
service's outbox relay therefore declares every consumer queue of its events
before it publishes, so a consumer that starts later still finds them waiting.
"""
import importlib
import inspect

SERVICES = {
    "needs": "services.needs.service:NeedsService",
    "dispatch": "services.dispatch.service:DispatchService",
    "volunteers": "services.volunteers.service:VolunteersService",
    "ratings": "services.ratings.service:RatingsService",
    "notifications": "services.notifications.service:NotificationsService",
    "gateway": "gateway.service:GatewayService",
}


def service_class(name):
    module_name, _, class_name = SERVICES[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def _handlers():
    from lastmile.consumer import ReliableEventHandler

    for name in SERVICES:
        cls = service_class(name)
        for method_name, method in inspect.getmembers(cls, inspect.isfunction):
            for entrypoint in getattr(method, "nameko_entrypoints", ()):
                if isinstance(entrypoint, ReliableEventHandler):
                    yield cls.name, method_name, entrypoint


def subscriptions():
    """(source, event_type, listening service, method) for every handler of one
    event type (``event_type`` ``#`` for a handler of every event of a source)."""
    from lastmile.consumer import EventStreamHandler

    found = []
    for service_name, method_name, entrypoint in _handlers():
        if isinstance(entrypoint, EventStreamHandler):
            found += [(source, "#", service_name, method_name) for source in entrypoint.sources]
        else:
            found.append((entrypoint.source_service, entrypoint.event_type, service_name, method_name))
    return sorted(found)


def consumer_queues(source_service=None):
    """The queue of every handler of ``source_service``'s events (of all, if None)."""
    from lastmile.consumer import EventStreamHandler, handler_queue, stream_queue

    queues = {}
    for service_name, method_name, entrypoint in _handlers():
        if isinstance(entrypoint, EventStreamHandler):
            if source_service is None or source_service in entrypoint.sources:
                queue = stream_queue(entrypoint.sources, service_name, method_name)
                queues[queue.name] = queue
        elif source_service in (None, entrypoint.source_service):
            queue = handler_queue(entrypoint.source_service, entrypoint.event_type, service_name, method_name)
            queues[queue.name] = queue
    return list(queues.values())


def declare_consumer_queues(channel, source_service):
    for queue in consumer_queues(source_service):
        queue(channel).declare()
