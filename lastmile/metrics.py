"""Counters each process keeps for Prometheus: events published and consumed. The
gateway serves them all at ``GET /metrics``, asking each service for its own."""
from prometheus_client import CollectorRegistry, Counter

REGISTRY = CollectorRegistry()

EVENTS_PUBLISHED = Counter(
    "lastmile_events_published", "Events relayed from the outbox to RabbitMQ", ["type"], registry=REGISTRY)
EVENTS_CONSUMED = Counter(
    "lastmile_events_consumed", "Events handled, by outcome: applied, duplicate, retried, dead_lettered",
    ["handler", "outcome"], registry=REGISTRY)


def samples():
    """This process's metrics as plain JSON, for the gateway to serve."""
    found = []
    for family in REGISTRY.collect():
        for sample in family.samples:
            found.append({"name": sample.name, "labels": sample.labels, "value": sample.value,
                          "help": family.documentation, "type": family.type})
    return found
