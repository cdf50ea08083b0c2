"""The gateway's Prometheus metrics: requests by route and status, latencies, RPC
calls; ``/metrics`` adds every service's own (events published and consumed)."""
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

REGISTRY = CollectorRegistry()

HTTP_REQUESTS = Counter("lastmile_http_requests", "HTTP requests answered", ["method", "route", "status"],
                        registry=REGISTRY)
HTTP_SECONDS = Histogram("lastmile_http_request_seconds", "Time to answer an HTTP request", ["route"],
                         registry=REGISTRY)
RPC_CALLS = Counter("lastmile_rpc_calls", "RPC calls from the gateway, by outcome", ["service", "method", "outcome"],
                    registry=REGISTRY)
RPC_SECONDS = Histogram("lastmile_rpc_seconds", "Time a service took to answer the gateway", ["service"],
                        registry=REGISTRY)


class ServiceSamples:
    """Samples gathered from the services for one scrape, labelled by service."""

    def __init__(self, by_service):
        self.by_service = by_service

    def collect(self):
        families = {}
        for service, samples in self.by_service.items():
            for sample in samples:
                name = sample["name"]
                family = families.get(name)
                if family is None:
                    labels = ["service"] + sorted(sample["labels"])
                    family = families[name] = GaugeMetricFamily(name, sample["help"], labels=labels)
                family.add_metric([service] + [sample["labels"][k] for k in sorted(sample["labels"])], sample["value"])
        return list(families.values())


def exposition(by_service):
    registry = CollectorRegistry()
    registry.register(ServiceSamples(by_service))
    return generate_latest(REGISTRY) + generate_latest(registry)
