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
    "gateway": "gateway.service:GatewayService",
}


def service_class(name):
    module_name, _, class_name = SERVICES[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def subscriptions():
    """(source, event_type, listening service, method) for every reliable handler."""
    from lastmile.consumer import ReliableEventHandler

    found = []
    for name in SERVICES:
        cls = service_class(name)
        for method_name, method in inspect.getmembers(cls, inspect.isfunction):
            for entrypoint in getattr(method, "nameko_entrypoints", ()):
                if isinstance(entrypoint, ReliableEventHandler):
                    found.append((entrypoint.source_service, entrypoint.event_type, cls.name, method_name))
    return sorted(found)


def declare_consumer_queues(channel, source_service):
    from lastmile.consumer import handler_queue

    for source, event_type, service_name, method_name in subscriptions():
        if source == source_service:
            handler_queue(source, event_type, service_name, method_name)(channel).declare()
