"""The dispatch service on the real broker and database: 政府派单 and 志愿者接单.

Volunteers and approved needs reach dispatch the way they do in production, as the
events the volunteers and needs services would publish. What is asserted is what
staff, volunteers and residents would notice: the events dispatch publishes (seen
through the tap) and the offers and orders its RPCs answer.

The only look behind the curtain is ``Harness.settled``: before a test goes on it
waits until dispatch has consumed the events it was given (its own ledger of
consumed events), because each event type travels on a queue of its own and their
relative order is not guaranteed.
"""
import uuid

import eventlet
import pytest
import sqlalchemy as sa
from kombu import Connection
from nameko.standalone.rpc import ClusterRpcProxy
from sqlalchemy.pool import NullPool

from lastmile.consumer import event_exchange
from lastmile.db import database_url
from lastmile.errors import Conflict, InvalidInput, NotFound
from lastmile.events import make_event
from services.dispatch.service import DispatchService
from tests.service.conftest import ADMIN, actor
from tests.support import publish_event, wait_for

# Haikou, Qiongshan. 0.009 degrees of latitude is about one kilometre.
LAT, LON = 20.00, 110.35
KM = 0.009


class Harness:
    """Plays the volunteers and needs services and the people who use dispatch."""

    def __init__(self, uri, rpc, tap, tree, engine):
        self.uri = uri
        self.rpc = rpc
        self.tap = tap
        self.tree = tree
        self.engine = engine
        self.resident = actor("resident")
        self.unsettled = []

    # ---- the volunteers service's side ------------------------------------------

    def volunteer(self, site_id, km=0.0, skills=("health",), status="active", name=None, settle=True):
        data = {
            "volunteer_id": str(uuid.uuid4()), "user_id": str(uuid.uuid4()), "name": name or "志愿者",
            "skills": list(skills), "site_id": site_id, "lat": LAT + km * KM, "lon": LON,
            "availability": None, "status": status, "revision": 1,
        }
        event = publish_event(self.uri, "volunteers", "volunteer_registered", data)
        self.unsettled.append(event)
        if settle:
            self.settle_volunteers()
        return data

    def settle_volunteers(self):
        """Wait until dispatch has heard of every volunteer registered so far."""
        self.settled(*self.unsettled)
        self.unsettled.clear()

    def update_volunteer(self, volunteer, **changes):
        volunteer.update(changes)
        volunteer["revision"] += 1
        self.settled(publish_event(self.uri, "volunteers", "volunteer_updated", dict(volunteer)))
        return volunteer

    # ---- the needs service's side -------------------------------------------------

    def need_data(self, site_id, category="health", urgency="normal", need_id=None):
        return {
            "need_id": need_id or str(uuid.uuid4()), "category": category, "project_id": None,
            "title": "上门量血压", "site_id": site_id, "urgency": urgency, "beneficiary_group": "elderly_alone",
            "beneficiaries": 1, "window_start": None, "window_end": None, "lat": LAT, "lon": LON,
            "owner_id": self.resident["id"], "collector_id": None,
        }

    def approve(self, site_id=None, **kwargs):
        data = self.need_data(site_id or self.tree["station"], **kwargs)
        return publish_event(self.uri, "needs", "need_approved", data, need_id=data["need_id"])

    def cancel(self, approved):
        data = dict(approved["data"], reason="不需要了", previous_status="dispatching", volunteer_id=None)
        return publish_event(self.uri, "needs", "need_cancelled", data, need_id=approved["need_id"])

    # ---- the people ---------------------------------------------------------------

    @staticmethod
    def as_volunteer(volunteer):
        return actor("volunteer", volunteer["site_id"], id=volunteer["user_id"])

    def offers_of(self, volunteer, status="pending"):
        return self.rpc.dispatch.list_offers(self.as_volunteer(volunteer), {"status": status})["items"]

    def order(self, need_id, by=ADMIN):
        return self.rpc.dispatch.get_order(by, need_id)

    # ---- synchronisation ------------------------------------------------------------

    def consumed(self, event):
        with self.engine.connect() as conn:
            return conn.execute(
                sa.text("SELECT 1 FROM consumed_events WHERE event_id = :e AND consumer = :c"),
                {"e": event["event_id"], "c": f"dispatch.{event['type']}"},
            ).first() is not None

    def settled(self, *events, timeout=10):
        for event in events:
            wait_for(lambda: self.consumed(event), timeout=timeout, message=f"dispatch to consume {event['type']}")

    def offer_made(self, need_id, count=1, timeout=10):
        return self.tap.wait("offer_made", need_id, count=count, timeout=timeout)

    def types(self, need_id):
        """What dispatch has published about a need, in order."""
        return [e["type"] for e in self.tap.of(need_id=need_id) if e["source"] == "dispatch"]


@pytest.fixture
def dispatch_db(infrastructure):
    engine = sa.create_engine(database_url("dispatch"), poolclass=NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def world(run_services, rpc, tap, site_tree, infrastructure, dispatch_db):
    run_services(DispatchService)
    return Harness(infrastructure["LASTMILE_AMQP_URI"], rpc, tap, site_tree, dispatch_db)


def race_to_accept(uri, attempts):
    """Each (volunteer actor, offer id) accepts at the same instant, each through
    its own connection, as separate phones would. Returns ("ok", offer) or
    ("conflict", error) per attempt, in order."""
    ready, go = [], eventlet.event.Event()

    def attempt(who, offer_id):
        with ClusterRpcProxy({"AMQP_URI": uri, "serializer": "json"}, timeout=10) as proxy:
            ready.append(who)
            go.wait()
            try:
                return "ok", proxy.dispatch.accept_offer(who, offer_id)
            except Conflict as exc:
                return "conflict", exc

    pool = eventlet.GreenPool()
    threads = [pool.spawn(attempt, who, offer_id) for who, offer_id in attempts]
    wait_for(lambda: len(ready) == len(attempts), message="every volunteer ready")
    go.send(True)
    return [thread.wait() for thread in threads]


# ------------------------------------------------------------------ the first offer


def test_an_approved_need_is_offered_to_the_nearest_eligible_volunteer_of_its_station(world):
    tree = world.tree
    nearest = world.volunteer(tree["station"], km=0.2, name="近")
    farther = world.volunteer(tree["station"], km=3.0, name="远")
    unskilled = world.volunteer(tree["station"], km=0.0, skills=("education",))
    suspended = world.volunteer(tree["station"], km=0.0)
    world.update_volunteer(suspended, status="suspended")
    elsewhere = world.volunteer(tree["other_station"], km=0.0)

    need_id = world.approve()["need_id"]

    made = world.offer_made(need_id)
    world.tap.drain(0.5)
    assert world.types(need_id) == ["order_created", "offer_made"]
    created = world.tap.of("order_created", need_id)[0]
    assert created["source"] == "dispatch" and created["data"]["strategy"] == "sequential"
    assert made[0]["data"]["volunteer_id"] == nearest["volunteer_id"]
    assert made[0]["data"]["user_id"] == nearest["user_id"] and made[0]["data"]["level"] == "station"

    # The volunteer sees one pending offer with what the need is, not how it was scored.
    [offer] = world.offers_of(nearest)
    assert offer["need_id"] == need_id and offer["status"] == "pending" and offer["deadline"].endswith("Z")
    assert offer["need"]["title"] == "上门量血压" and "score" not in offer
    for other in (farther, unskilled, suspended, elsewhere):
        assert world.offers_of(other) == []

    # Staff of the station see the order and why this volunteer was chosen.
    order = world.order(need_id, by=actor("staff", tree["station"]))
    assert order["status"] == "dispatching" and order["strategy"] == "sequential"
    assert order["level"] == "station" and order["level_site_id"] == tree["station"]
    [shown] = order["offers"]
    assert shown["volunteer_id"] == nearest["volunteer_id"] and shown["status"] == "pending"
    parts = shown["score_parts"]
    assert set(parts) >= {"distance", "rating", "fairness", "acceptance", "distance_km"}
    assert parts["distance_km"] == pytest.approx(0.2, abs=0.02)
    assert shown["score"] == pytest.approx(sum(v for k, v in parts.items() if k != "distance_km"), abs=1e-3)

    # The resident who ordered it sees it is being dispatched, but no one's scores.
    mine = world.order(need_id, by=world.resident)
    assert mine["status"] == "dispatching" and mine["offers"] == []


# ------------------------------------------------------------------ declines and escalation


def test_declines_move_down_the_list_then_widen_level_by_level_until_unfilled(world):
    tree = world.tree
    s1, s2, s3, s4 = (world.volunteer(tree["station"], km=km) for km in (0.0, 1.0, 2.0, 4.0))
    i1 = world.volunteer(tree["other_station"], km=0.5)
    d1 = world.volunteer(tree["far_station"], km=0.5)
    staff = actor("staff", tree["district"])

    need_id = world.approve()["need_id"]
    world.offer_made(need_id)

    expected = [(s1, "station"), (s2, "station"), (s3, "station"),  # LASTMILE_OFFERS_PER_LEVEL = 3
                (i1, "institute"), (s4, "institute"),  # then nobody left in the institute
                (d1, "district")]
    for volunteer, level in expected:
        [offer] = world.offers_of(volunteer)
        assert offer["level"] == level, offer
        declined = world.rpc.dispatch.decline_offer(world.as_volunteer(volunteer), offer["id"], {"reason": "没空"})
        assert declined["status"] == "declined" and declined["reason"] == "没空"
        with pytest.raises(Conflict):
            world.rpc.dispatch.accept_offer(world.as_volunteer(volunteer), offer["id"])

    world.tap.wait("order_unfilled", need_id)
    world.tap.drain(0.3)
    assert world.types(need_id) == (
        ["order_created"]
        + ["offer_made", "offer_declined"] * 3
        + ["order_escalated"]
        + ["offer_made", "offer_declined"] * 2
        + ["order_escalated"]
        + ["offer_made", "offer_declined"]
        + ["order_unfilled"]
    )
    escalations = [e["data"] for e in world.tap.of("order_escalated", need_id)]
    assert [(e["from_level"], e["to_level"], e["site_id"]) for e in escalations] == [
        ("station", "institute", tree["institute"]), ("institute", "district", tree["district"])]
    offered = [e["data"]["volunteer_id"] for e in world.tap.of("offer_made", need_id)]
    assert offered == [v["volunteer_id"] for v, _ in expected]

    order = world.order(need_id, by=staff)
    assert order["status"] == "unfilled" and order["level"] == "district"
    assert [o["status"] for o in order["offers"]] == ["declined"] * 6


def test_the_district_is_the_last_call_three_at_a_time_until_no_one_is_left(world):
    """Past the station and institute budgets the district keeps asking: five far
    volunteers, more than LASTMILE_OFFERS_PER_LEVEL, are all asked before it is unfilled."""
    far = [world.volunteer(world.tree["far_station"], km=km) for km in (0.1, 0.2, 0.3, 0.4, 0.5)]
    need_id = world.approve()["need_id"]
    first = world.offer_made(need_id, count=3)
    assert {e["data"]["volunteer_id"] for e in first} == {v["volunteer_id"] for v in far[:3]}
    assert {e["data"]["level"] for e in first} == {"district"}
    for volunteer in far[:3]:
        [offer] = world.offers_of(volunteer)
        world.rpc.dispatch.decline_offer(world.as_volunteer(volunteer), offer["id"], {"reason": "没空"})
    world.offer_made(need_id, count=5)
    for volunteer in far[3:]:
        [offer] = world.offers_of(volunteer)
        world.rpc.dispatch.decline_offer(world.as_volunteer(volunteer), offer["id"], {"reason": "没空"})
    [unfilled] = world.tap.wait("order_unfilled", need_id)
    assert unfilled["data"]["reason"] == "no_one_left"
    assert [o["status"] for o in world.order(need_id)["offers"]] == ["declined"] * 5


def test_a_need_whose_window_has_started_is_not_offered_but_left_to_staff(world):
    world.volunteer(world.tree["station"])
    data = world.need_data(world.tree["station"])
    data["window_start"] = "2026-01-05T01:00:00Z"  # already begun
    need_id = publish_event(world.uri, "needs", "need_approved", data, need_id=data["need_id"])["need_id"]
    [unfilled] = world.tap.wait("order_unfilled", need_id)
    assert unfilled["data"]["reason"] == "window_started"
    assert world.tap.of("offer_made", need_id) == []
    assert world.order(need_id)["status"] == "unfilled"


def test_a_station_without_candidates_widens_at_once_to_its_institute(world):
    tree = world.tree
    neighbour = world.volunteer(tree["other_station"], km=1.0)

    need_id = world.approve()["need_id"]

    made = world.offer_made(need_id)
    [escalated] = world.tap.of("order_escalated", need_id)
    assert escalated["data"]["from_level"] == "station" and escalated["data"]["to_level"] == "institute"
    assert made[0]["data"]["volunteer_id"] == neighbour["volunteer_id"]
    assert world.types(need_id) == ["order_created", "order_escalated", "offer_made"]
    assert [o["level"] for o in world.offers_of(neighbour)] == ["institute"]


# ------------------------------------------------------------------ deadlines


def test_an_unanswered_offer_expires_and_the_next_volunteer_is_asked(world, monkeypatch):
    tree = world.tree
    first = world.volunteer(tree["station"], km=0.0)
    second = world.volunteer(tree["station"], km=2.0)
    monkeypatch.setenv("LASTMILE_OFFER_MINUTES_NORMAL", "0.03")  # 1.8 s

    need_id = world.approve()["need_id"]
    world.offer_made(need_id)
    # Read at call time: the next offer gets a generous deadline again.
    monkeypatch.setenv("LASTMILE_OFFER_MINUTES_NORMAL", "30")
    [offer] = world.offers_of(first)

    expired = world.tap.wait("offer_expired", need_id, timeout=10)
    assert [e["data"]["offer_id"] for e in expired] == [offer["id"]]
    made = world.offer_made(need_id, count=2)
    assert made[1]["data"]["volunteer_id"] == second["volunteer_id"]

    with pytest.raises(Conflict):
        world.rpc.dispatch.accept_offer(world.as_volunteer(first), offer["id"])
    assert [o["id"] for o in world.offers_of(first, status="expired")] == [offer["id"]]
    assert len(world.offers_of(second)) == 1
    order = world.order(need_id)
    assert [(o["volunteer_id"], o["status"]) for o in order["offers"]] == [
        (first["volunteer_id"], "expired"), (second["volunteer_id"], "pending")]
    assert order["status"] == "dispatching"
    world.tap.drain(0.3)
    assert len(world.tap.of("offer_expired", need_id)) == 1

    # Letting an offer expire counts against acceptance, as a decline does.
    later = world.approve(urgency="urgent")["need_id"]
    world.offer_made(later, count=2)
    parts = {o["volunteer_id"]: o["score_parts"]["acceptance"] for o in world.order(later)["offers"]}
    assert parts[first["volunteer_id"]] < parts[second["volunteer_id"]]


# ------------------------------------------------------------------ urgent needs and the race to accept


def test_urgent_needs_are_broadcast_and_exactly_one_of_the_racing_volunteers_wins(world):
    tree = world.tree
    rounds = []
    for n in range(5):
        station = f"{tree['institute']}.u{n}"
        near = [world.volunteer(station, km=km, settle=False) for km in (0.1, 0.2, 0.3)]
        far = world.volunteer(station, km=9.0, settle=False)
        rounds.append((station, near, far))
    world.settle_volunteers()

    needs = [world.approve(station, urgency="urgent")["need_id"] for station, _, _ in rounds]

    for need_id, (_, near, far) in zip(needs, rounds):
        made = world.offer_made(need_id, count=3)
        assert {e["data"]["volunteer_id"] for e in made} == {v["volunteer_id"] for v in near}
        assert world.offers_of(far) == []
        assert world.order(need_id)["strategy"] == "broadcast"

    for need_id, (_, near, _) in zip(needs, rounds):
        attempts = [(world.as_volunteer(v), world.offers_of(v)[0]["id"]) for v in near]
        outcomes = race_to_accept(world.uri, attempts)

        winners = [i for i, (kind, _) in enumerate(outcomes) if kind == "ok"]
        assert len(winners) == 1, outcomes
        assert all(kind == "conflict" for i, (kind, _) in enumerate(outcomes) if i != winners[0])
        winner = near[winners[0]]

        assigned = world.tap.wait("order_assigned", need_id)
        world.tap.drain(0.3)
        assert len(world.tap.of("order_assigned", need_id)) == 1
        assert len(world.tap.of("offer_accepted", need_id)) == 1
        assert assigned[0]["data"]["volunteer_id"] == winner["volunteer_id"]
        assert assigned[0]["data"]["need"]["title"] == "上门量血压"

        order = world.order(need_id)
        assert order["status"] == "assigned" and order["volunteer_id"] == winner["volunteer_id"]
        statuses = {o["volunteer_id"]: o["status"] for o in order["offers"]}
        assert statuses == {v["volunteer_id"]: ("accepted" if v is winner else "withdrawn") for v in near}
        for loser in near:
            if loser is not winner:
                assert world.offers_of(loser) == []


def test_a_volunteer_holding_offers_of_several_needs_can_accept_only_as_many_as_allowed(world):
    """Offers of three needs are pending at once; the third acceptance would pass
    the limit of two active services, so it is refused and the need stays open."""
    volunteer = world.volunteer(world.tree["station"])
    need_ids = [world.approve()["need_id"] for _ in range(3)]
    for need_id in need_ids:
        world.offer_made(need_id)
    offers = {o["need_id"]: o for o in world.offers_of(volunteer)}
    assert set(offers) == set(need_ids)
    who = world.as_volunteer(volunteer)

    for need_id in need_ids[:2]:
        assert world.rpc.dispatch.accept_offer(who, offers[need_id]["id"])["status"] == "accepted"
    with pytest.raises(Conflict) as refused:
        world.rpc.dispatch.accept_offer(who, offers[need_ids[2]]["id"])
    assert refused.value.details == {"active_assignments": 2, "max_active_assignments": 2}
    order = world.order(need_ids[2])
    assert order["status"] == "dispatching" and order["offers"][0]["status"] == "pending"
    assert len(world.tap.of("order_assigned", need_ids[2])) == 0


# ------------------------------------------------------------------ cancellation


def test_a_cancelled_need_withdraws_its_offers_and_they_can_no_longer_be_accepted(world):
    tree = world.tree
    volunteers = [world.volunteer(tree["station"], km=km) for km in (0.0, 1.0)]
    approved = world.approve(urgency="urgent")
    need_id = approved["need_id"]
    world.offer_made(need_id, count=2)
    offers = [world.offers_of(v)[0] for v in volunteers]

    world.cancel(approved)

    world.tap.wait("offer_withdrawn", need_id, count=2)
    for volunteer, offer in zip(volunteers, offers):
        with pytest.raises(Conflict):
            world.rpc.dispatch.accept_offer(world.as_volunteer(volunteer), offer["id"])
        assert world.offers_of(volunteer) == []
    order = world.order(need_id)
    assert order["status"] == "cancelled"
    assert [o["status"] for o in order["offers"]] == ["withdrawn", "withdrawn"]
    assert world.tap.of("order_assigned", need_id) == []


def test_a_cancellation_that_overtakes_its_approval_leaves_nothing_to_dispatch(world):
    volunteer = world.volunteer(world.tree["station"])
    data = world.need_data(world.tree["station"])
    need_id = data["need_id"]
    # needs published the approval first, but the cancellation is the first to arrive.
    approval = {"need_id": need_id, "data": data}

    world.settled(world.cancel(approval))
    assert world.order(need_id)["status"] == "cancelled"

    world.settled(publish_event(world.uri, "needs", "need_approved", data, need_id=need_id))
    world.tap.drain(0.5)

    order = world.order(need_id)
    assert order["status"] == "cancelled" and order["offers"] == []
    assert world.types(need_id) == []
    assert world.offers_of(volunteer) == []


# ------------------------------------------------------------------ at-least-once delivery


def test_a_redelivered_approval_opens_one_order_and_one_first_offer(world):
    tree = world.tree
    first = world.volunteer(tree["station"], km=0.0)
    second = world.volunteer(tree["station"], km=1.0)

    event = world.approve()
    need_id = event["need_id"]
    publish_event(world.uri, "needs", "need_approved", {}, event=event)  # side by side
    world.offer_made(need_id)
    publish_event(world.uri, "needs", "need_approved", {}, event=event)  # long after
    world.tap.drain(3.0)  # a copy that lost the race is retried after 1 s

    assert world.types(need_id) == ["order_created", "offer_made"]
    order = world.order(need_id)
    assert [o["volunteer_id"] for o in order["offers"]] == [first["volunteer_id"]]
    assert len(world.offers_of(first)) == 1 and world.offers_of(second) == []


def test_a_burst_of_approvals_opens_one_order_and_one_first_offer_each(world):
    tree = world.tree
    for km in (0.0, 1.0, 2.0):
        world.volunteer(tree["station"], km=km)
    # Published back to back: dispatched side by side.
    events = [world.approve() for _ in range(12)]
    publish_event(world.uri, "needs", "need_approved", {}, event=events[3])  # a copy among them
    for event in events:
        world.offer_made(event["need_id"])
    world.tap.drain(1.0)
    for event in events:
        assert world.types(event["need_id"]) == ["order_created", "offer_made"]
        assert len(world.order(event["need_id"])["offers"]) == 1


# ------------------------------------------------------------------ staff dispatch by hand


def test_staff_reopen_an_unfilled_order_by_dispatching_it_to_a_volunteer_they_choose(world):
    tree = world.tree
    need_id = world.approve(category="science")["need_id"]  # nobody in the district has the skill
    world.tap.wait("order_unfilled", need_id)
    assert world.types(need_id) == ["order_created", "order_escalated", "order_escalated", "order_unfilled"]
    assert world.order(need_id)["status"] == "unfilled"

    chosen = world.volunteer(tree["other_station"], km=1.0, skills=("health",))
    outsider = actor("staff", tree["other_institute"])
    with pytest.raises(NotFound):
        world.rpc.dispatch.dispatch_manually(outsider, need_id, {"volunteer_id": chosen["volunteer_id"]})
    staff = actor("staff", tree["institute"])
    with pytest.raises(InvalidInput):
        world.rpc.dispatch.dispatch_manually(staff, need_id, {"volunteer_id": str(uuid.uuid4())})
    assert world.order(need_id)["status"] == "unfilled" and world.offers_of(chosen) == []

    offer = world.rpc.dispatch.dispatch_manually(staff, need_id, {"volunteer_id": chosen["volunteer_id"],
                                                                  "note": "请帮忙"})
    assert offer["manual"] is True and offer["status"] == "pending"
    assert offer["volunteer_id"] == chosen["volunteer_id"]

    made = world.offer_made(need_id)
    [reopened] = world.tap.wait("order_reopened", need_id)
    assert reopened["data"]["by"] == staff["id"] and made[0]["data"]["manual"] is True
    assert world.order(need_id, by=staff)["status"] == "dispatching"
    [pending] = world.offers_of(chosen)
    assert pending["id"] == offer["id"]

    world.rpc.dispatch.accept_offer(world.as_volunteer(chosen), offer["id"])
    [assigned] = world.tap.wait("order_assigned", need_id)
    assert assigned["data"]["volunteer_id"] == chosen["volunteer_id"]
    assert world.order(need_id, by=staff)["status"] == "assigned"


# ------------------------------------------------------------------ two replicas


def publish_together(uri, source, events):
    """Publish events back to back on one connection, so that copies of one event
    reach the replicas at the same moment."""
    exchange = event_exchange(source)
    with Connection(uri) as conn:
        producer = conn.Producer()
        for event in events:
            producer.publish(event, exchange=exchange, routing_key=event["type"], serializer="json",
                             declare=[exchange], delivery_mode=2)


def _consumers(uri, queue):
    with Connection(uri) as conn:
        return conn.channel().queue_declare(queue, passive=True).consumer_count


def test_two_replicas_open_one_order_per_need_and_expire_each_offer_once(
        run_services, rpc, tap, site_tree, infrastructure, dispatch_db, monkeypatch):
    run_services(DispatchService, DispatchService)
    world = Harness(infrastructure["LASTMILE_AMQP_URI"], rpc, tap, site_tree, dispatch_db)
    assert _consumers(world.uri, "rpc-dispatch") == 2
    assert _consumers(world.uri, "evt-needs-need_approved--dispatch.on_need_approved") == 2

    # One district per need, so that each order runs out of volunteers after its station's two.
    stations = [f"{site_tree['district']}r{n}.town.village" for n in range(12)]
    pairs = {}
    for station in stations:
        pairs[station] = [world.volunteer(station, km=km, settle=False) for km in (0.0, 1.0)]
    world.settle_volunteers()

    monkeypatch.setenv("LASTMILE_OFFER_MINUTES_NORMAL", "0.03")  # 1.8 s
    events = [make_event("needs", "need_approved", data, need_id=data["need_id"])
              for data in (world.need_data(station) for station in stations)]
    # Every approval delivered twice in a row, to whichever replicas take the copies.
    publish_together(world.uri, "needs", [copy for event in events for copy in (event, event)])

    for event in events:
        world.tap.wait("order_unfilled", event["need_id"], timeout=20)
    world.tap.drain(1.5)  # time for any duplicate to show

    for station, event in zip(stations, events):
        need_id = event["need_id"]
        assert world.types(need_id).count("order_created") == 1
        made = world.tap.of("offer_made", need_id)
        assert [e["data"]["volunteer_id"] for e in made] == [v["volunteer_id"] for v in pairs[station]]
        expired = [e["data"]["offer_id"] for e in world.tap.of("offer_expired", need_id)]
        assert sorted(expired) == sorted(e["data"]["offer_id"] for e in made)  # each offer once
        assert len(world.tap.of("order_escalated", need_id)) == 2
        assert len(world.tap.of("order_unfilled", need_id)) == 1
        order = world.order(need_id)
        assert order["status"] == "unfilled"
        assert [o["status"] for o in order["offers"]] == ["expired", "expired"]


def test_a_late_older_profile_does_not_undo_a_newer_one(world):
    tree = world.tree
    volunteer = world.volunteer(tree["station"])
    world.update_volunteer(volunteer, status="suspended")
    stale = dict(volunteer, status="active", revision=1)
    world.settled(publish_event(world.uri, "volunteers", "volunteer_updated", stale))

    need_id = world.approve()["need_id"]
    world.tap.wait("order_escalated", need_id)  # nobody left at the station
    assert not [e for e in world.tap.of("offer_made", need_id)
                if e["data"]["volunteer_id"] == volunteer["volunteer_id"]]
