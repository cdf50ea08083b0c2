"""Handlers of gathered events: the events waiting on a queue are handled together, each
exactly once; one that fails is retried alone while the others go through; and a
ledger marks a list of events consumed in one statement."""
import eventlet
import pytest
import sqlalchemy as sa
from nameko.containers import ServiceContainer

from lastmile import config, db
from lastmile.consumer import event_batch_handler
from lastmile.deadletters import list_dead_letters
from lastmile.events import make_event
from lastmile.outbox import messaging_tables
from lastmile.store import UnitOfWork
from tests.support import publish_event, wait_for

calls = []  # the events of each call, as the handler committed them
slow_first = {"on": False}


class Gatherer:
    name = "gatherer"

    @event_batch_handler("needs", "need_submitted")
    def remember(self, events):
        if slow_first["on"]:
            slow_first["on"] = False
            eventlet.sleep(1)  # the events published meanwhile gather on the queue
        if any(event["data"].get("poison") for event in events):
            raise RuntimeError("cannot handle this one")
        calls.append([event["event_id"] for event in events])  # "committed" only when all went through


@pytest.fixture
def gatherer(infrastructure):
    calls.clear()
    container = ServiceContainer(Gatherer, config.nameko_config())
    container.start()
    yield infrastructure["LASTMILE_AMQP_URI"]
    container.stop()


def handled():
    return [event_id for call in calls for event_id in call]


def test_events_that_gathered_are_handled_together_each_once(gatherer):
    slow_first["on"] = True
    first = publish_event(gatherer, "needs", "need_submitted", {"n": 0}, need_id="n-0")
    wait_for(lambda: not slow_first["on"], message="the first call to begin")
    rest = [publish_event(gatherer, "needs", "need_submitted", {"n": i}, need_id=f"n-{i}") for i in range(1, 31)]
    wanted = [first["event_id"]] + [event["event_id"] for event in rest]
    wait_for(lambda: len(handled()) >= len(wanted), message="every event")
    eventlet.sleep(0.2)
    assert sorted(handled()) == sorted(wanted)  # each once
    assert max(len(call) for call in calls) > 1  # some were handled together …
    assert max(len(call) for call in calls) <= config.get_int("LASTMILE_MAX_WORKERS")  # … no more than prefetched


def test_a_failing_event_is_retried_alone_while_the_others_go_through(gatherer):
    slow_first["on"] = True
    publish_event(gatherer, "needs", "need_submitted", {"n": 0}, need_id="n-0")
    wait_for(lambda: not slow_first["on"], message="the first call to begin")
    poison = publish_event(gatherer, "needs", "need_submitted", {"poison": True}, need_id="n-poison")
    healthy = [publish_event(gatherer, "needs", "need_submitted", {"n": i}, need_id=f"n-{i}") for i in range(1, 8)]
    wait_for(lambda: {event["event_id"] for event in healthy} <= set(handled()), message="the healthy events")
    # LASTMILE_EVENT_RETRY_DELAYS is 1,1,2 in tests: parked after about 4 s.
    letters = wait_for(lambda: [d for d in list_dead_letters(gatherer, ["gatherer"])
                                if d["event_id"] == poison["event_id"]], timeout=20, interval=0.5,
                       message="the dead letter")
    assert letters[0]["attempts"] == 4 and "cannot handle" in letters[0]["error"]
    assert poison["event_id"] not in handled()
    assert len(handled()) == len(set(handled())) == 8  # the healthy ones once each, none lost


@pytest.fixture
def ledger(infrastructure):
    engine = db.make_engine("gatheringtest")
    metadata = sa.MetaData()
    outbox, consumed = messaging_tables(metadata)
    metadata.drop_all(engine)
    metadata.create_all(engine)

    class Store:  # what UnitOfWork needs of a service's Store
        pass

    store = Store()
    store.consumed = consumed
    try:
        yield engine, UnitOfWork(store, None)
    finally:
        metadata.drop_all(engine)
        engine.dispose()


def test_first_deliveries_keeps_the_events_not_consumed_before_each_once_in_order(ledger):
    engine, unit = ledger
    a, b, c = (make_event("needs", "need_submitted", {}) for _ in range(3))
    with engine.begin() as connection:
        assert unit.first_deliveries(connection, [a], "ratings.report") == [a]
    with engine.begin() as connection:
        # a was consumed before; b comes twice; c once.
        assert unit.first_deliveries(connection, [b, a, c, b], "ratings.report") == [b, c]
    with engine.begin() as connection:
        # Another consumer has its own ledger; a consumer named by a function of the event.
        assert unit.first_deliveries(connection, [a, c], lambda event: f"notes.{event['type']}") == [a, c]
        assert unit.first_deliveries(connection, [a], "notes.need_submitted") == []
    with engine.begin() as connection:
        assert unit.first_deliveries(connection, [], "ratings.report") == []
