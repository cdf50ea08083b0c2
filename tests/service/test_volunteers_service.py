"""The volunteers service on the real broker and database, driven by RPC and by the
events dispatch and needs would publish (志愿者接单: check-in, check-out, hours)."""
import math
import time
import uuid
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone

import eventlet
import pytest
import sqlalchemy as sa
from nameko.standalone.rpc import ClusterRpcProxy

from lastmile.db import database_url
from lastmile.errors import Conflict, Forbidden, InvalidInput, NotFound
from services.volunteers.service import VolunteersService
from tests.service.conftest import actor
from tests.support import publish_event, wait_for

NEED_LAT, NEED_LON = 20.0, 110.35
MINIMUM_MINUTES = 0.005  # 0.3 s
STEP_MINUTES = 0.01      # 0.6 s: a test of seconds earns a few steps


@pytest.fixture
def volunteers(run_services, rpc, monkeypatch):
    monkeypatch.setenv("LASTMILE_HOURS_MINIMUM_MINUTES", str(MINIMUM_MINUTES))
    monkeypatch.setenv("LASTMILE_HOURS_STEP_MINUTES", str(STEP_MINUTES))
    monkeypatch.setenv("LASTMILE_HOURS_DAILY_CAP", "12")
    monkeypatch.setenv("LASTMILE_GEOFENCE_METRES", "500")
    run_services(VolunteersService)
    return rpc.volunteers


@pytest.fixture
def assignments(infrastructure):
    """Read the service's assignments table: the one fact no RPC shows."""
    engine = sa.create_engine(database_url("volunteers"))

    def of(need_id):
        with engine.connect() as conn:
            return conn.execute(
                sa.text("SELECT volunteer_id, status FROM assignments WHERE need_id = :n"), {"n": need_id}
            ).all()

    yield of
    engine.dispose()


def volunteer_body(tree, **overrides):
    body = {"name": "志愿者小符", "skills": ["health", "education"], "site_id": tree["station"],
            "phone": "13900001111", "lat": NEED_LAT, "lon": NEED_LON}
    body.update(overrides)
    return body


def register(volunteers, tree, **overrides):
    person = actor("volunteer", tree["station"])
    return person, volunteers.create_volunteer(person, volunteer_body(tree, **overrides))


def assign(uri, profile, tree, need_id=None, event=None, **need):
    need_id = need_id or str(uuid.uuid4())
    data = {
        "volunteer_id": profile["id"], "user_id": profile["user_id"], "offer_id": str(uuid.uuid4()),
        "order_id": str(uuid.uuid4()),
        "need": {"need_id": need_id, "category": "health", "site_id": tree["station"], "title": "上门量血压",
                 "lat": NEED_LAT, "lon": NEED_LON, "owner_id": str(uuid.uuid4()), "collector_id": None, **need},
    }
    return publish_event(uri, "dispatch", "order_assigned", data, need_id=need_id, event=event)


def wait_assigned(assignments, need_id, count=1):
    return wait_for(lambda: len(assignments(need_id)) >= count, timeout=10, message=f"assignment of {need_id}")


def expected_hours(record):
    """The hours rule, applied to the times the service reports."""
    def parse(value):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))

    minutes = (parse(record["check_out_at"]) - parse(record["check_in_at"])).total_seconds() / 60
    if minutes < MINIMUM_MINUTES:
        return 0.0
    return round(math.floor(minutes / STEP_MINUTES) * STEP_MINUTES / 60, 4)


CHECK_OUT = {"summary": "量了血压，叮嘱按时服药", "beneficiaries_served": 2}


def test_create_volunteer_validates_refuses_duplicates_and_masks_the_phone(volunteers, tap, site_tree):
    person, profile = register(volunteers, site_tree)
    assert profile["user_id"] == person["id"] and profile["status"] == "active"
    assert profile["number"].startswith("LM-") and profile["phone"] == "13900001111"

    event = tap.wait("volunteer_registered")[0]
    assert event["source"] == "volunteers" and event["data"]["volunteer_id"] == profile["id"]
    assert event["data"]["skills"] == ["health", "education"]
    assert event["data"]["site_id"] == site_tree["station"] and event["data"]["user_id"] == person["id"]

    with pytest.raises(Conflict):
        volunteers.create_volunteer(person, volunteer_body(site_tree, name="又一个"))
    with pytest.raises(Forbidden):
        volunteers.create_volunteer(actor("resident"), volunteer_body(site_tree))
    with pytest.raises(InvalidInput) as caught:
        volunteers.create_volunteer(actor("volunteer"), volunteer_body(
            site_tree, name="", skills=[], site_id="Not A Site", phone="12345", lat=91))
    assert set(caught.value.details) == {"name", "skills", "site_id", "phone", "lat"}
    assert len(tap.of("volunteer_registered")) == 1

    other, _ = register(volunteers, site_tree, phone="13900002222")
    seen_by_other = volunteers.get_volunteer(other, profile["id"])
    assert seen_by_other["phone"] == "139****1111" and seen_by_other["lat"] is None
    assert volunteers.get_volunteer(person, profile["id"])["phone"] == "13900001111"
    assert volunteers.my_volunteer(person)["phone"] == "13900001111"
    assert volunteers.get_volunteer(actor("staff", site_tree["institute"]), profile["id"])["phone"] == "13900001111"
    assert volunteers.get_volunteer(actor("staff", site_tree["other_institute"]), profile["id"])["phone"] == "139****1111"
    with pytest.raises(NotFound):
        volunteers.get_volunteer(person, str(uuid.uuid4()))


def at_once(infrastructure, calls):
    """Make each ``call(proxy)`` at the same moment, on RPC proxies of their own, and
    return what each returned or raised. The service's connection pool is warmed
    first so that no call waits for a new database connection."""
    config = {"AMQP_URI": infrastructure["LASTMILE_AMQP_URI"], "serializer": "json"}

    def attempt(call, proxy):
        try:
            return call(proxy)
        except Exception as exc:
            return exc

    with ExitStack() as stack:
        proxies = [stack.enter_context(ClusterRpcProxy(config, timeout=10)) for _ in calls]
        list(eventlet.GreenPool().starmap(lambda proxy: proxy.volunteers.health(), [(p,) for p in proxies]))
        return list(eventlet.GreenPool().starmap(attempt, zip(calls, proxies)))


def test_the_same_user_registering_at_once_gets_one_profile_and_conflicts(volunteers, tap, site_tree,
                                                                         infrastructure):
    for _ in range(5):  # the race is one of timing: run it a few times
        person = actor("volunteer", site_tree["station"])
        create = lambda proxy: proxy.volunteers.create_volunteer(person, volunteer_body(site_tree))  # noqa: E731
        results = at_once(infrastructure, [create] * 8)
        created = [r for r in results if isinstance(r, dict)]
        assert len(created) == 1, results
        assert all(isinstance(r, Conflict) for r in results if not isinstance(r, dict)), results
        assert volunteers.my_volunteer(person)["id"] == created[0]["id"]
    tap.drain(0.5)
    assert len(tap.of("volunteer_registered")) == 5


def test_assigned_volunteer_checks_in_and_out_and_is_credited_hours(volunteers, tap, assignments, site_tree,
                                                                   infrastructure):
    uri = infrastructure["LASTMILE_AMQP_URI"]
    person, profile = register(volunteers, site_tree)
    stranger, _ = register(volunteers, site_tree, phone="13900002222")
    need_id = assign(uri, profile, site_tree)["need_id"]
    wait_assigned(assignments, need_id)

    with pytest.raises(NotFound):
        volunteers.check_in(stranger, need_id, {"lat": NEED_LAT, "lon": NEED_LON})
    with pytest.raises(Conflict):
        volunteers.check_out(person, need_id, CHECK_OUT)

    checked_in = volunteers.check_in(person, need_id, {"lat": NEED_LAT + 0.001, "lon": NEED_LON})  # ~110 m
    assert checked_in["flagged"] is False and checked_in["check_out_at"] is None
    started = tap.wait("service_started", need_id)[0]
    assert started["data"]["volunteer_id"] == profile["id"] and started["data"]["record_id"] == checked_in["id"]
    with pytest.raises(Conflict):
        volunteers.check_in(person, need_id, {"lat": NEED_LAT, "lon": NEED_LON})

    time.sleep(2.0)
    record = volunteers.check_out(person, need_id, CHECK_OUT)
    assert record["id"] == checked_in["id"] and record["beneficiaries_served"] == 2
    assert record["hours"] == expected_hours(record) > 0

    completed = tap.wait("service_completed", need_id)[0]
    assert completed["data"]["hours"] == record["hours"] and completed["data"]["volunteer_id"] == profile["id"]
    assert completed["data"]["site_id"] == site_tree["station"] and completed["data"]["category"] == "health"
    credited = tap.wait("hours_credited", need_id)
    assert len(credited) == 1 and credited[0]["data"]["hours"] == record["hours"]

    hours = volunteers.get_hours(person, profile["id"])
    assert hours["total_hours"] == pytest.approx(record["hours"])
    assert [(r["need_id"], r["kind"], r["record"]["id"]) for r in hours["records"]] == [
        (need_id, "checked_in", record["id"])]
    assert volunteers.get_hours(actor("staff", site_tree["district"]), profile["id"])["total_hours"] == hours["total_hours"]
    with pytest.raises(Forbidden):
        volunteers.get_hours(stranger, profile["id"])

    with pytest.raises(Conflict):
        volunteers.check_out(person, need_id, CHECK_OUT)
    tap.drain(0.5)
    assert len(tap.of("hours_credited", need_id)) == 1


def test_the_daily_cap_limits_credited_hours(volunteers, assignments, site_tree, infrastructure, monkeypatch):
    uri = infrastructure["LASTMILE_AMQP_URI"]
    person, profile = register(volunteers, site_tree)
    monkeypatch.setenv("LASTMILE_HOURS_DAILY_CAP", "0.0001")  # less than one step of 0.6 s (0.000167 h)
    need_id = assign(uri, profile, site_tree)["need_id"]
    wait_assigned(assignments, need_id)
    volunteers.check_in(person, need_id, {"lat": NEED_LAT, "lon": NEED_LON})
    time.sleep(1.5)
    record = volunteers.check_out(person, need_id, CHECK_OUT)
    assert expected_hours(record) > 0.0001 and record["hours"] == pytest.approx(0.0001)
    assert volunteers.get_hours(person, profile["id"])["total_hours"] == pytest.approx(0.0001)


def test_redelivered_assignment_makes_one_assignment_and_hours_are_credited_once(
        volunteers, tap, assignments, site_tree, infrastructure):
    uri = infrastructure["LASTMILE_AMQP_URI"]
    person, profile = register(volunteers, site_tree)
    event = assign(uri, profile, site_tree)
    assign(uri, profile, site_tree, event=event)  # the broker delivers it again
    need_id = event["need_id"]
    wait_assigned(assignments, need_id)

    volunteers.check_in(person, need_id, {"lat": NEED_LAT, "lon": NEED_LON})
    time.sleep(1.5)
    record = volunteers.check_out(person, need_id, CHECK_OUT)
    assert record["hours"] > 0

    tap.wait("hours_credited", need_id)
    tap.drain(1.0)
    assert len(tap.of("hours_credited", need_id)) == 1
    assert len(tap.of("service_completed", need_id)) == 1
    assert assignments(need_id) == [(profile["id"], "completed")]
    hours = volunteers.get_hours(person, profile["id"])
    assert len(hours["records"]) == 1
    assert hours["total_hours"] == pytest.approx(record["hours"]) == pytest.approx(hours["records"][0]["hours"])


def test_cancelled_need_cannot_be_checked_into(volunteers, tap, assignments, site_tree, infrastructure):
    uri = infrastructure["LASTMILE_AMQP_URI"]
    person, profile = register(volunteers, site_tree)
    need_id = assign(uri, profile, site_tree)["need_id"]
    wait_assigned(assignments, need_id)

    publish_event(uri, "needs", "need_cancelled", {"reason": "不需要了", "by": "resident"}, need_id=need_id)
    wait_for(lambda: assignments(need_id) == [(profile["id"], "cancelled")], timeout=10,
             message="the assignment to be cancelled")
    with pytest.raises(Conflict):
        volunteers.check_in(person, need_id, {"lat": NEED_LAT, "lon": NEED_LON})
    with pytest.raises(Conflict):
        volunteers.check_out(person, need_id, CHECK_OUT)
    tap.drain(0.3)
    assert tap.of("service_started", need_id) == []


def test_a_cancellation_that_overtakes_the_assignment_still_closes_it(volunteers, assignments, site_tree,
                                                                     infrastructure):
    uri = infrastructure["LASTMILE_AMQP_URI"]
    person, profile = register(volunteers, site_tree)
    need_id = str(uuid.uuid4())
    publish_event(uri, "needs", "need_cancelled", {"reason": "不需要了"}, need_id=need_id)
    time.sleep(0.5)
    assign(uri, profile, site_tree, need_id=need_id)
    wait_for(lambda: assignments(need_id) == [(profile["id"], "cancelled")], timeout=10,
             message="the late assignment to open cancelled")
    with pytest.raises(Conflict):
        volunteers.check_in(person, need_id, {"lat": NEED_LAT, "lon": NEED_LON})


def test_check_in_outside_the_geofence_is_flagged_and_not_credited(volunteers, tap, assignments, site_tree,
                                                                   infrastructure):
    uri = infrastructure["LASTMILE_AMQP_URI"]
    person, profile = register(volunteers, site_tree)
    need_id = assign(uri, profile, site_tree)["need_id"]
    wait_assigned(assignments, need_id)

    checked_in = volunteers.check_in(person, need_id, {"lat": NEED_LAT + 0.1, "lon": NEED_LON})  # ~11 km away
    assert checked_in["flagged"] is True and "geofence" in checked_in["flag_reason"]
    assert tap.wait("service_started", need_id)[0]["data"]["flagged"] is True
    time.sleep(1.5)
    record = volunteers.check_out(person, need_id, CHECK_OUT)
    assert record["flagged"] is True and record["check_out_at"]

    completed = tap.wait("service_completed", need_id)[0]
    assert completed["data"]["flagged"] is True
    # Nothing is credited yet: the hours wait for staff, and the event says so.
    assert completed["data"]["hours"] == 0 and completed["data"]["pending_hours"] == record["hours"] > 0
    tap.drain(0.5)
    assert tap.of("hours_credited", need_id) == []
    hours = volunteers.get_hours(person, profile["id"])
    assert hours["total_hours"] == 0 and hours["records"] == []
    assert assignments(need_id) == [(profile["id"], "completed")]


def test_staff_suspend_a_volunteer_who_cannot_suspend_themself(volunteers, tap, site_tree):
    person, profile = register(volunteers, site_tree)
    with pytest.raises(Forbidden):
        volunteers.update_volunteer(person, profile["id"], {"status": "suspended"})
    with pytest.raises(Forbidden):  # staff of another branch
        volunteers.update_volunteer(actor("staff", site_tree["other_institute"]), profile["id"],
                                    {"status": "suspended"})
    assert volunteers.my_volunteer(person)["status"] == "active"

    suspended = volunteers.update_volunteer(actor("staff", site_tree["institute"]), profile["id"],
                                            {"status": "suspended"})
    assert suspended["status"] == "suspended"
    event = tap.wait("volunteer_updated")[0]
    assert event["data"]["volunteer_id"] == profile["id"] and event["data"]["status"] == "suspended"
    assert len(tap.of("volunteer_updated")) == 1
    assert volunteers.get_volunteer(person, profile["id"])["status"] == "suspended"

    renamed = volunteers.update_volunteer(person, profile["id"], {"name": "小符"})
    assert renamed["name"] == "小符" and renamed["status"] == "suspended"


def test_a_check_in_left_open_for_a_day_is_closed_and_flagged_for_staff(volunteers, tap, assignments, site_tree,
                                                                      infrastructure):
    uri = infrastructure["LASTMILE_AMQP_URI"]
    person, profile = register(volunteers, site_tree)
    need_id = assign(uri, profile, site_tree)["need_id"]
    wait_assigned(assignments, need_id)
    volunteers.check_in(person, need_id, {"lat": NEED_LAT, "lon": NEED_LON})
    engine = sa.create_engine(database_url("volunteers"))
    with engine.begin() as conn:  # the volunteer forgot: it is a day later now
        conn.execute(sa.text("UPDATE service_records SET check_in_at = check_in_at - interval '25 hours' "
                             "WHERE need_id = :n"), {"n": need_id})
    engine.dispose()
    volunteers.close_forgotten_check_ins()

    completed = tap.wait("service_completed", need_id)[0]["data"]
    assert completed["flagged"] is True and completed["hours"] == 0 and completed["pending_hours"] > 0
    staff = actor("staff", site_tree["institute"])
    [record] = volunteers.list_service_records(staff, {"flagged": True, "volunteer_id": profile["id"]})["items"]
    assert "24 hours" in record["flag_reason"] and record["hours"] == pytest.approx(completed["pending_hours"])
    assert volunteers.get_hours(person, profile["id"])["total_hours"] == 0
    with pytest.raises(NotFound):
        volunteers.review_service_record(actor("staff", site_tree["other_institute"]), record["id"], True, {})
    approved = volunteers.review_service_record(staff, record["id"], True, {"note": "电话核实，确实服务到晚上"})
    assert approved["review"] == "approved"
    assert volunteers.get_hours(person, profile["id"])["total_hours"] == pytest.approx(record["hours"])
    assert len(tap.wait("hours_credited", need_id)) == 1
    with pytest.raises(Conflict):
        volunteers.review_service_record(staff, record["id"], True, {})


def test_corrections_and_backfills_are_new_entries_decided_by_staff(volunteers, site_tree):
    person, profile = register(volunteers, site_tree)
    today = datetime.now(timezone.utc).date()
    with pytest.raises(InvalidInput):
        volunteers.request_hours(person, profile["id"], {"kind": "backfill", "hours": -1,
                                                         "service_date": today.isoformat(), "reason": "补录"})
    with pytest.raises(Forbidden):
        volunteers.request_hours(actor("volunteer"), profile["id"], {"kind": "backfill", "hours": 2,
                                                                     "service_date": today.isoformat(), "reason": "代别人申请"})
    backfill = volunteers.request_hours(person, profile["id"], {
        "kind": "backfill", "hours": 2.5, "service_date": (today - timedelta(days=3)).isoformat(),
        "reason": "三天前的敬老活动忘记签到"})
    correction = volunteers.request_hours(person, profile["id"], {
        "kind": "correction", "hours": -0.5, "service_date": today.isoformat(), "reason": "多记了半小时"})
    staff = actor("staff", site_tree["station"])
    assert {r["id"] for r in volunteers.list_hours_requests(staff, {"status": "pending"})["items"]} >= {
        backfill["id"], correction["id"]}
    volunteers.decide_hours_request(staff, backfill["id"], True, {"note": "有活动照片"})
    volunteers.decide_hours_request(staff, correction["id"], False, {"note": "记录无误"})
    with pytest.raises(Conflict):
        volunteers.decide_hours_request(staff, backfill["id"], True, {})
    hours = volunteers.get_hours(person, profile["id"])
    assert hours["total_hours"] == 2.5 and hours["by_kind"] == {"checked_in": 0, "correction": 0, "backfill": 2.5}
    assert [r["kind"] for r in hours["records"]] == ["backfill"]
