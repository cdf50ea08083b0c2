import uuid

import pytest
from nameko.containers import ServiceContainer
from nameko.standalone.rpc import ClusterRpcProxy

from kombu import Connection

from lastmile import config, topology
from tests.support import EventTap


def delete_lastmile_queues(amqp_uri):
    """Every queue Lastmile declares, so that no test sees messages another left."""
    names = [queue.name for queue in topology.consumer_queues()]
    names += [f"lastmile.dead.{name}" for name in topology.SERVICES]
    names += [f"rpc-{name}" for name in topology.SERVICES]
    names += [f"lastmile.delay.{seconds}s" for seconds in config.retry_delays()]
    with Connection(amqp_uri) as conn:
        for name in names:
            channel = conn.channel()
            try:
                channel.queue_delete(name)
            except Exception:
                pass
            finally:
                try:
                    channel.close()
                except Exception:
                    pass


@pytest.fixture
def run_services(infrastructure):
    """Start nameko containers of the given service classes on the test broker and
    databases; stopped (gracefully) after the test, and every queue removed."""
    delete_lastmile_queues(infrastructure["LASTMILE_AMQP_URI"])
    containers = []

    def start(*service_classes):
        started = []
        for cls in service_classes:
            container = ServiceContainer(cls, config.nameko_config())
            container.start()
            started.append(container)
        containers.extend(started)
        return started

    yield start
    for container in containers:
        container.stop()
    delete_lastmile_queues(infrastructure["LASTMILE_AMQP_URI"])


@pytest.fixture
def rpc(infrastructure):
    with ClusterRpcProxy({"AMQP_URI": infrastructure["LASTMILE_AMQP_URI"], "serializer": "json"}, timeout=10) as proxy:
        yield proxy


@pytest.fixture
def tap(infrastructure):
    tap = EventTap(infrastructure["LASTMILE_AMQP_URI"])
    yield tap
    tap.close()


@pytest.fixture
def site_tree():
    """A fresh district with one institute and two stations, unique to the test."""
    district = "t" + uuid.uuid4().hex[:8]
    return {
        "district": district,
        "institute": f"{district}.town",
        "station": f"{district}.town.village",
        "other_station": f"{district}.town.hamlet",
        "other_institute": f"{district}.street",
        "far_station": f"{district}.street.block",
    }


def actor(role, site_id=None, id=None):
    return {"id": id or str(uuid.uuid4()), "role": role, "site_id": site_id, "name": role.title()}


ADMIN = actor("admin", id="admin-of-tests")
