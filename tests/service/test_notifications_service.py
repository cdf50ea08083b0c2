"""The notifications service on the real broker and database, with a fake SMS
provider served on loopback by the test itself (eventlet.wsgi in a greenthread).

The first test runs a whole cycle through the real needs, dispatch, volunteers and
ratings services and checks that exactly the expected people get exactly the expected
messages, in the app and by SMS. The others drive notifications with the events those
services (and the gateway) would publish: quiet hours, the hourly limit, redelivery,
a provider outage, staff timers and the inbox.

Looks behind the curtain, as tests/service/test_dispatch_service.py does: the service's
ledger of consumed events (to know it has applied what it was given) and its SMS
outbox (the state of a held or retried SMS, which no RPC shows).
"""
import json
import uuid
from datetime import datetime, timedelta, timezone

import eventlet
import eventlet.wsgi
import pytest
import requests
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from lastmile.db import database_url
from lastmile.errors import Forbidden, InvalidInput, NotFound
from lastmile.events import isoformat, make_event
from services.dispatch.service import DispatchService
from services.needs.service import NeedsService
from services.notifications import domain
from services.notifications.service import NotificationsService
from services.ratings.service import RatingsService
from services.volunteers.service import VolunteersService
from tests.service.conftest import ADMIN, actor
from tests.support import publish_event, wait_for

SMS_KEY = "test-sms-key"
LAT, LON = 20.00, 110.35
SIGN = "【文明实践】"


class FakeSmsProvider:
    """An SMS provider on 127.0.0.1: takes POST {to, text} with the bearer key, and
    answers ``status`` (200 unless a test breaks it); numbers in ``refused`` get 400."""

    def __init__(self):
        self.status = 200
        self.refused = set()
        self.delivered = []  # the bodies it accepted, with the Idempotency-Key
        self.calls = []  # (to, status) of every request
        self._sock = eventlet.listen(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/v1/sms"
        self._server = eventlet.spawn(eventlet.wsgi.server, self._sock, self._app, log_output=False)

    def _app(self, environ, start_response):
        raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        body = json.loads(raw or b"{}")
        if environ.get("HTTP_AUTHORIZATION") != f"Bearer {SMS_KEY}":
            status = 401
        elif self.status != 200:
            status = self.status
        elif body.get("to") in self.refused:
            status = 400
        else:
            status = 200
            self.delivered.append(dict(body, key=environ.get("HTTP_IDEMPOTENCY_KEY")))
        self.calls.append((body.get("to"), status))
        start_response(f"{status} Fake", [("Content-Type", "application/json")])
        return [json.dumps({"ok": status == 200}).encode()]

    def texts(self, phone=None):
        return [d["text"] for d in self.delivered if phone is None or d["to"] == phone]

    def close(self):
        self._server.kill()
        self._sock.close()


@pytest.fixture
def sms(monkeypatch):
    provider = FakeSmsProvider()
    monkeypatch.setenv("LASTMILE_SMS_URL", provider.url)
    monkeypatch.setenv("LASTMILE_SMS_KEY", SMS_KEY)
    monkeypatch.setenv("LASTMILE_QUIET_HOURS", "off")  # tests that want quiet hours set them
    yield provider
    provider.close()


@pytest.fixture
def notifications_db(infrastructure):
    engine = sa.create_engine(database_url("notifications"), poolclass=NullPool)
    yield engine
    engine.dispose()


def local_clock(moment):
    return moment.astimezone(domain.LOCAL_TIME).strftime("%H:%M")


class World:
    """Plays the gateway (accounts), the other services' events and the people."""

    def __init__(self, uri, rpc, engine, sms, tree):
        self.uri, self.rpc, self.engine, self.sms, self.tree = uri, rpc, engine, sms, tree
        self.phones = iter(f"13{n:09d}" for n in range(700000000 + uuid.uuid4().int % 10 ** 6 * 100, 10 ** 9))

    # ---- people, as the gateway announces them ---------------------------------------

    def person(self, role, site_id=None, name=None, phone=True):
        who = actor(role, site_id)
        who["name"] = name or role
        who["phone"] = next(self.phones) if phone else None
        self.settled(publish_event(self.uri, "gateway", "account_registered",
                                   {"id": who["id"], "role": role, "site_id": site_id, "name": who["name"],
                                    "phone": who["phone"]}))
        return who

    # ---- events ------------------------------------------------------------------------

    def publish(self, source, type_, data, need_id=None, event=None, settle=True):
        event = publish_event(self.uri, source, type_, data, need_id=need_id, event=event)
        if settle:
            self.settled(event)
        return event

    def need(self, owner, site_id=None, urgency="normal", title="上门量血压", **extra):
        """need_submitted for a new need, as the needs service would publish it."""
        need_id = str(uuid.uuid4())
        occurred_at = extra.pop("occurred_at", None)
        data = {"need_id": need_id, "category": "health", "project_id": None, "title": title,
                "site_id": site_id or self.tree["station"], "urgency": urgency, "beneficiary_group": "elderly_alone",
                "beneficiaries": 1, "window_start": None, "window_end": None, "lat": LAT, "lon": LON,
                "owner_id": owner["id"], "collector_id": None, "channel": "web", **extra}
        event = make_event("needs", "need_submitted", data, need_id=need_id, occurred_at=occurred_at)
        self.publish("needs", "need_submitted", data, need_id, event=event)
        return data

    def offer(self, volunteer, need, minutes=10, settle=True):
        data = {"offer_id": str(uuid.uuid4()), "order_id": str(uuid.uuid4()), "volunteer_id": str(uuid.uuid4()),
                "user_id": volunteer["id"], "status": "pending", "level": "station",
                "deadline": isoformat(datetime.now(timezone.utc) + timedelta(minutes=minutes)), "score": 1.0,
                "manual": False, "reason": None, "site_id": need["site_id"], "category": "health", "team_id": None}
        return self.publish("dispatch", "offer_made", data, need["need_id"], settle=settle)

    def consumed(self, event):
        with self.engine.connect() as conn:
            return conn.execute(
                sa.text("SELECT 1 FROM consumed_events WHERE event_id = :e AND consumer = :c"),
                {"e": event["event_id"], "c": f"notifications.{event['type']}"}).first() is not None

    def settled(self, *events, timeout=10):
        for event in events:
            wait_for(lambda: self.consumed(event), timeout=timeout,
                     message=f"notifications to consume {event['type']}")

    # ---- what people see ------------------------------------------------------------------

    def inbox(self, who, **query):
        return self.rpc.notifications.list_notifications(who, query)

    def kinds(self, who):
        return sorted(n["kind"] for n in self.inbox(who, page_size=100)["items"])

    def contact_phone(self, user_id):
        with self.engine.connect() as conn:
            return conn.execute(sa.text("SELECT phone FROM contacts WHERE user_id = :u"), {"u": user_id}).scalar()

    def sms_rows(self, user_id):
        with self.engine.connect() as conn:
            return conn.execute(sa.text("SELECT kind, status, due_at, attempts FROM sms_messages WHERE user_id = :u "
                                        "ORDER BY created_at"), {"u": user_id}).all()

    def wait_texts(self, phone, count, timeout=15):
        return wait_for(lambda: len(self.sms.texts(phone)) >= count and self.sms.texts(phone), timeout=timeout,
                        message=f"{count} SMS to {phone}")

    def quiet(self):
        """Let the sender run a few more times, so that what should not come does not."""
        for _ in range(3):
            self.rpc.notifications.send_due_sms()
            eventlet.sleep(0.3)


@pytest.fixture
def world(run_services, rpc, sms, notifications_db, site_tree, infrastructure):
    run_services(NotificationsService)
    return World(infrastructure["LASTMILE_AMQP_URI"], rpc, notifications_db, sms, site_tree)


# ---- a whole cycle through the real services ---------------------------------------------------


def test_a_full_cycle_tells_each_person_exactly_what_concerns_them(run_services, world, rpc, site_tree, sms):
    run_services(NeedsService, DispatchService, VolunteersService, RatingsService)
    for key in ("district", "institute", "station", "other_institute"):
        rpc.needs.create_site(ADMIN, {"id": site_tree[key], "name": key})
    station = site_tree["station"]
    resident = world.person("resident", name="王阿姨")
    staff = {level: world.person("staff", site_tree[level], name=f"staff of {level}")
             for level in ("station", "institute", "district", "other_institute")}
    first, second = world.person("volunteer", name="小李"), world.person("volunteer", name="小王")
    profiles = {}
    for volunteer in (first, second):
        profiles[volunteer["id"]] = rpc.volunteers.create_volunteer(volunteer, {
            "name": volunteer["name"], "skills": ["health"], "site_id": station, "phone": volunteer["phone"],
            "lat": LAT, "lon": LON})
    dispatch_db = sa.create_engine(database_url("dispatch"), poolclass=NullPool)

    def candidates():
        with dispatch_db.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM candidates WHERE user_id IN (:a, :b)"),
                                {"a": first["id"], "b": second["id"]}).scalar()

    wait_for(lambda: candidates() == 2, message="dispatch to hear of both volunteers")
    dispatch_db.dispose()

    # 点单 and 派单: an urgent need, broadcast to both volunteers.
    window = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=2)
    need = rpc.needs.submit_need(resident, {
        "category": "health", "title": "上门量血压", "site_id": station, "address": "村东3号",
        "contact_phone": resident["phone"], "beneficiary_group": "elderly_alone", "beneficiaries": 1,
        "urgency": "urgent", "window_start": isoformat(window), "lat": LAT, "lon": LON})["need"]
    need_id = need["id"]
    rpc.needs.approve_need(staff["institute"], need_id)
    offers = {v["id"]: wait_for(lambda v=v: rpc.dispatch.list_offers(v, {"status": "pending"})["items"], timeout=15,
                                message="an offer")[0] for v in (first, second)}
    deadline = domain.local_time(domain.parse_time(offers[first["id"]]["deadline"]), datetime.now(timezone.utc))
    offer_text = f"{SIGN}您有一项新的服务邀请「上门量血压」，请在{deadline}前打开小程序接单或婉拒。"
    assert world.wait_texts(first["phone"], 1) == [offer_text]
    assert world.wait_texts(second["phone"], 1) == [offer_text]

    # 接单: the first accepts; the second hears the offer is off; check-in, check-out.
    rpc.dispatch.accept_offer(first, offers[first["id"]]["id"])
    wait_for(lambda: rpc.needs.get_need(resident, need_id)["status"] == "assigned", message="assigned")
    wait_for(lambda: world.kinds(second) == ["offer_made", "offer_withdrawn"], message="the withdrawal")
    wait_for(lambda: _checked_in(rpc, first, need_id), message="the check-in")
    wait_for(lambda: rpc.needs.get_need(resident, need_id)["status"] == "in_service", message="in service")
    rpc.volunteers.check_out(first, need_id, {"summary": "量了血压", "beneficiaries_served": 1})
    wait_for(lambda: rpc.needs.get_need(resident, need_id)["status"] == "completed", message="completed")

    # 评单: a poor rating opens a follow-up for the station.
    wait_for(lambda: _rated(rpc, resident, need_id), timeout=15, message="the rating")
    wait_for(lambda: world.kinds(staff["station"]) == ["rating_flagged"], message="the follow-up notice")

    # Exactly these, in the app:
    wait_for(lambda: world.kinds(resident) == ["need_approved", "need_assigned", "service_completed",
                                               "service_started"], message="the resident's notifications")
    assert world.kinds(first) == ["offer_made"]
    assert world.kinds(second) == ["offer_made", "offer_withdrawn"]
    for level in ("station", "institute", "district"):
        assert world.kinds(staff[level]) == ["rating_flagged"], level
    assert world.kinds(staff["other_institute"]) == []
    by_kind = {n["kind"]: n for n in world.inbox(resident)["items"]}
    assert by_kind["service_completed"]["link"] == f"/needs/{need_id}/rating"
    assert by_kind["need_assigned"]["body"] == (
        f"志愿者小李已接下您的需求「上门量血压」，将于{domain.local_time(window, datetime.now(timezone.utc))}上门服务。")
    assert world.inbox(staff["station"])["items"][0]["to"] == {"type": "site", "id": station}

    # … and exactly these by SMS (the check-in only in the app; staff of the district only in the app).
    resident_texts = [
        f"{SIGN}您的需求「上门量血压」已通过审核，正在为您安排志愿者。",
        f"{SIGN}{by_kind['need_assigned']['body']}",
        f"{SIGN}「上门量血压」服务已完成，请在小程序“我的需求”中为本次服务评价。",
    ]
    flagged = f"{SIGN}需求「上门量血压」收到1星评价（迟到），请跟进回访。"
    expected = {
        resident["phone"]: resident_texts,
        first["phone"]: [offer_text],
        second["phone"]: [offer_text, f"{SIGN}「上门量血压」的服务邀请已撤回（已有其他志愿者接单），无需再回复。"],
        staff["station"]["phone"]: [flagged],
        staff["institute"]["phone"]: [flagged],
    }
    for phone, texts in expected.items():
        world.wait_texts(phone, len(texts))
    world.quiet()
    assert {phone: sorted(sms.texts(phone)) for phone in {d["to"] for d in sms.delivered}} == {
        phone: sorted(texts) for phone, texts in expected.items()}
    assert len({d["key"] for d in sms.delivered}) == len(sms.delivered)  # each SMS once


def _checked_in(rpc, volunteer, need_id):
    try:
        return rpc.volunteers.check_in(volunteer, need_id, {"lat": LAT, "lon": LON})
    except NotFound:
        return None  # volunteers has not heard of the assignment yet


def _rated(rpc, resident, need_id):
    from lastmile.errors import Conflict

    try:
        rpc.ratings.submit_rating(resident, need_id, {"stars": 1, "tags": ["late"]})
    except Conflict as exc:
        return "rated already" in str(exc)
    return True


def test_unfilled_escalated_and_rejected_needs_reach_residents_and_staff(run_services, world, rpc, site_tree, sms):
    run_services(NeedsService, DispatchService)
    for key in ("district", "institute", "station"):
        rpc.needs.create_site(ADMIN, {"id": site_tree[key], "name": key})
    resident = world.person("resident")
    station_staff, institute_staff = world.person("staff", site_tree["station"]), world.person("staff", site_tree["institute"])
    body = {"category": "culture", "title": "送戏下乡", "site_id": site_tree["station"], "address": "村东3号",
            "contact_phone": resident["phone"], "beneficiary_group": "general", "beneficiaries": 30}
    unfilled = rpc.needs.submit_need(resident, body)["need"]["id"]
    rpc.needs.approve_need(station_staff, unfilled)  # nobody does culture: station, institute, district, unfilled
    wait_for(lambda: rpc.needs.get_need(resident, unfilled)["status"] == "unfilled", message="unfilled")
    rejected = rpc.needs.submit_need(resident, dict(body, title="修电脑"))["need"]["id"]
    rpc.needs.reject_need(station_staff, rejected, {"reason": "不在服务范围"})

    wait_for(lambda: world.kinds(resident) == ["need_approved", "need_rejected", "need_unfilled"],
             message="the resident's notifications")
    wait_for(lambda: world.kinds(station_staff) == ["order_escalated", "order_escalated", "order_unfilled"],
             message="the staff's notifications")
    assert world.kinds(institute_staff) == world.kinds(station_staff)
    levels = sorted(n["body"] for n in world.inbox(station_staff)["items"] if n["kind"] == "order_escalated")
    assert levels == ["需求「送戏下乡」在本级无人接单，已扩大到区中心范围派单。",
                      "需求「送戏下乡」在本级无人接单，已扩大到实践所范围派单。"]
    world.wait_texts(resident["phone"], 3)
    world.wait_texts(station_staff["phone"], 1)
    world.quiet()
    assert sorted(sms.texts(resident["phone"])) == sorted([
        f"{SIGN}您的需求「送戏下乡」已通过审核，正在为您安排志愿者。",
        f"{SIGN}很抱歉，您的需求「修电脑」未通过审核：不在服务范围。如有疑问请联系所在实践站。",
        f"{SIGN}您的需求「送戏下乡」暂时没有志愿者接单，工作人员会尽快为您人工安排。"])
    for staff in (station_staff, institute_staff):  # escalations only in the app
        assert sms.texts(staff["phone"]) == [f"{SIGN}需求「送戏下乡」各级均无人接单，请人工派单。"]


# ---- care for people -------------------------------------------------------------------------


def test_quiet_hours_hold_sms_until_they_end_but_not_offers_for_urgent_needs(world, monkeypatch):
    now = datetime.now(timezone.utc)
    volunteer, resident = world.person("volunteer"), world.person("resident")
    around_now = {"quiet_start": local_clock(now - timedelta(hours=1)), "quiet_end": local_clock(now + timedelta(hours=1))}
    prefs = world.rpc.notifications.set_preferences(volunteer, around_now)
    assert prefs == {**around_now, "sms": True, "default_quiet_hours": False, "timezone": "Asia/Shanghai"}

    normal, urgent = world.need(resident), world.need(resident, urgency="urgent", title="老人摔倒")
    world.offer(volunteer, normal, minutes=180)  # outlives the quiet hours
    world.offer(volunteer, urgent)
    short = world.need(resident, title="送药")
    world.offer(volunteer, short, minutes=0.05)  # its deadline passes within the quiet hours
    assert world.kinds(volunteer) == ["offer_made", "offer_made", "offer_made"]  # the app tells at once

    assert "老人摔倒" in world.wait_texts(volunteer["phone"], 1)[0]
    wait_for(lambda: {r.status for r in world.sms_rows(volunteer["id"])} == {"sent", "pending", "expired"},
             message="one sent, one held, one expired")
    held = next(r for r in world.sms_rows(volunteer["id"]) if r.status == "pending")
    quiet_end = datetime.now(timezone.utc) + timedelta(hours=1)
    assert abs((held.due_at.replace(tzinfo=timezone.utc) - quiet_end).total_seconds()) < 120
    outcomes = [(d["kind"], d["outcome"]) for d in world.rpc.notifications.list_deliveries(
        ADMIN, {"user_id": volunteer["id"], "channel": "sms"})["items"]]
    assert sorted(outcomes) == [("offer_made", "expired"), ("offer_made", "held"), ("offer_made", "held"),
                                ("offer_made", "sent")]
    world.quiet()
    assert len(world.sms.texts(volunteer["phone"])) == 1

    # The quiet hours end (here: the volunteer turns them off): the held one goes, the expired one never.
    world.rpc.notifications.set_preferences(volunteer, {"quiet_start": None, "quiet_end": None})
    texts = world.wait_texts(volunteer["phone"], 2)
    assert "上门量血压" in texts[1] and not any("送药" in t for t in texts)

    # Without preferences of their own, people have LASTMILE_QUIET_HOURS.
    monkeypatch.setenv("LASTMILE_QUIET_HOURS", f"{around_now['quiet_start']}-{around_now['quiet_end']}")
    assert world.rpc.notifications.get_preferences(resident)["default_quiet_hours"] is True
    world.publish("needs", "need_approved", dict(normal), normal["need_id"])
    wait_for(lambda: [r.status for r in world.sms_rows(resident["id"])] == ["pending"], message="held by default")
    world.rpc.notifications.set_preferences(resident, {"sms": False})
    wait_for(lambda: [r.status for r in world.sms_rows(resident["id"])] == ["cancelled"], message="SMS turned off")
    assert world.sms.texts(resident["phone"]) == []
    assert world.kinds(resident) == ["need_approved"]


def test_an_offer_withdrawn_while_its_sms_waits_is_never_sent_nor_is_its_withdrawal(world):
    now = datetime.now(timezone.utc)
    volunteer, resident = world.person("volunteer"), world.person("resident")
    world.rpc.notifications.set_preferences(volunteer, {"quiet_start": local_clock(now - timedelta(hours=1)),
                                                        "quiet_end": local_clock(now + timedelta(hours=1))})
    need = world.need(resident)
    offer = world.offer(volunteer, need, minutes=180)
    wait_for(lambda: [r.status for r in world.sms_rows(volunteer["id"])] == ["pending"], message="the held offer")
    world.publish("dispatch", "offer_withdrawn", dict(offer["data"], status="withdrawn",
                                                      reason="another volunteer accepted"), need["need_id"])
    assert world.kinds(volunteer) == ["offer_made", "offer_withdrawn"]
    assert [(r.kind, r.status) for r in world.sms_rows(volunteer["id"])] == [("offer_made", "cancelled")]
    world.rpc.notifications.set_preferences(volunteer, {"quiet_start": None, "quiet_end": None})
    world.quiet()
    assert world.sms.texts(volunteer["phone"]) == []


def test_preferences_are_validated(world):
    someone = world.person("resident")
    for body, field in (({"quiet_start": "22:00"}, "quiet_end"), ({"quiet_start": "25:00", "quiet_end": "07:00"},
                        "quiet_start"), ({"sms": "yes"}, "sms"), ({"quiet_start": None, "quiet_end": "07:00"},
                        "quiet_end"), ({"colour": "red"}, "colour")):
        with pytest.raises(InvalidInput) as caught:
            world.rpc.notifications.set_preferences(someone, body)
        assert field in caught.value.details, body
    assert world.rpc.notifications.get_preferences(someone) == {
        "quiet_start": None, "quiet_end": None, "sms": True, "default_quiet_hours": True, "timezone": "Asia/Shanghai"}


def test_no_more_than_so_many_sms_an_hour_the_rest_wait(world, monkeypatch):
    monkeypatch.setenv("LASTMILE_SMS_PER_HOUR", "2")
    resident = world.person("resident")
    needs = [world.need(resident, title=f"第{i}件事") for i in range(4)]
    for need in needs:
        world.publish("needs", "need_approved", need, need["need_id"])
    assert world.kinds(resident) == ["need_approved"] * 4
    world.wait_texts(resident["phone"], 2)
    wait_for(lambda: sorted(r.status for r in world.sms_rows(resident["id"])) == ["pending", "pending", "sent", "sent"],
             message="two sent, two waiting")
    world.quiet()
    assert len(world.sms.texts(resident["phone"])) == 2
    assert sorted(world.sms.texts(resident["phone"])) == [  # the first two, in order
        f"{SIGN}您的需求「第{i}件事」已通过审核，正在为您安排志愿者。" for i in (0, 1)]
    waiting = [r for r in world.sms_rows(resident["id"]) if r.status == "pending"]
    in_an_hour = datetime.now(timezone.utc) + timedelta(hours=1)
    assert all(abs((r.due_at.replace(tzinfo=timezone.utc) - in_an_hour).total_seconds()) < 120 for r in waiting)
    held = world.rpc.notifications.list_deliveries(ADMIN, {"user_id": resident["id"], "outcome": "held"})["items"]
    assert len(held) == 2 and all(h["detail"].startswith("2 SMS an hour already until ") for h in held)
    assert all(h["phone"] == resident["phone"][:3] + "****" + resident["phone"][-4:] for h in held)


def test_redelivered_events_send_nothing_twice(world):
    volunteer, resident = world.person("volunteer"), world.person("resident")
    need = world.need(resident)
    offer = world.offer(volunteer, need)
    approved = world.publish("needs", "need_approved", need, need["need_id"])
    for _ in range(3):  # at-least-once delivery: the same envelopes again
        world.publish("dispatch", "offer_made", offer["data"], need["need_id"], event=offer)
        world.publish("needs", "need_approved", need, need["need_id"], event=approved)
    eventlet.sleep(0.5)
    world.quiet()
    assert world.kinds(volunteer) == ["offer_made"] and world.kinds(resident) == ["need_approved"]
    assert len(world.sms.texts(volunteer["phone"])) == 1 and len(world.sms.texts(resident["phone"])) == 1
    assert len(world.sms_rows(volunteer["id"])) == 1


def test_a_provider_outage_delays_but_loses_nothing_and_a_refused_number_holds_up_no_one(world):
    world.sms.status = 503
    residents = [world.person("resident") for _ in range(3)]
    refused = world.person("resident")
    world.sms.refused.add(refused["phone"])
    for person in residents + [refused]:
        need = world.need(person)
        world.publish("needs", "need_approved", need, need["need_id"])
    wait_for(lambda: all(sum(1 for to, status in world.sms.calls if to == p["phone"] and status == 503) >= 2
                         for p in residents), timeout=15, message="two failed tries each")
    assert world.sms.delivered == []
    assert {r.status for p in residents for r in world.sms_rows(p["id"])} <= {"pending", "sending"}

    world.sms.status = 200  # the provider is back
    for person in residents:
        world.wait_texts(person["phone"], 1, timeout=20)
    wait_for(lambda: [r.status for r in world.sms_rows(refused["id"])] == ["failed"], timeout=20, message="refused")
    world.quiet()
    assert sorted(d["to"] for d in world.sms.delivered) == sorted(p["phone"] for p in residents)
    record = world.rpc.notifications.list_deliveries(ADMIN, {"user_id": residents[0]["id"], "channel": "sms"})["items"]
    outcomes = [(d["attempt"], d["outcome"], d["status_code"]) for d in reversed(record)]
    assert outcomes[-1][1:] == ("sent", 200) and all(o[1:] == ("retry", 503) for o in outcomes[:-1])
    assert [o[0] for o in outcomes] == list(range(1, len(outcomes) + 1)) and len(outcomes) >= 3
    [failed] = world.rpc.notifications.list_deliveries(ADMIN, {"user_id": refused["id"], "outcome": "failed"})["items"]
    assert (failed["channel"], failed["status_code"]) == ("sms", 400)
    assert not world.sms.delivered or refused["phone"] not in {d["to"] for d in world.sms.delivered}


# ---- staff timers, reminders and the inbox -----------------------------------------------------


def test_a_need_waiting_for_review_too_long_reaches_staff_of_its_station_and_institute(world, site_tree):
    station_staff = world.person("staff", site_tree["station"])
    institute_staff = world.person("staff", site_tree["institute"])
    district_staff = world.person("staff", site_tree["district"])
    elsewhere = world.person("staff", site_tree["other_institute"])
    resident = world.person("resident")
    late = world.need(resident, title="修水管", occurred_at=datetime.now(timezone.utc) - timedelta(minutes=90))
    world.need(resident, title="刚提交的")  # not overdue yet
    reviewed = world.need(resident, title="已审核", occurred_at=datetime.now(timezone.utc) - timedelta(minutes=90))
    world.publish("needs", "need_status_changed", dict(reviewed, **{"from": "submitted", "to": "dispatching",
                                                                   "by": "x", "note": None}), reviewed["need_id"])
    assert world.rpc.notifications.check_reviews() == 1
    assert world.rpc.notifications.check_reviews() == 0
    for staff in (station_staff, institute_staff, district_staff):
        [notice] = world.inbox(staff)["items"]
        assert (notice["kind"], notice["need_id"]) == ("review_overdue", late["need_id"])
        assert notice["body"].startswith("需求「修水管」已提交") and notice["to"]["id"] == site_tree["station"]
    assert world.inbox(elsewhere)["total"] == 0
    text = world.wait_texts(station_staff["phone"], 1)[0]
    assert world.wait_texts(institute_staff["phone"], 1) == [text]
    world.quiet()
    assert world.sms.texts(district_staff["phone"]) == [] and len(world.sms.delivered) == 2


def test_an_assigned_volunteer_is_reminded_once_before_the_window(world):
    volunteer, resident = world.person("volunteer"), world.person("resident")
    start = datetime.now(timezone.utc) + timedelta(minutes=30)
    soon = world.need(resident, title="陪老人看病", window_start=isoformat(start))
    later = world.need(resident, title="下周的事", window_start=isoformat(start + timedelta(days=7)))
    for need in (soon, later):
        world.publish("dispatch", "order_assigned", {"order_id": "o", "offer_id": "f", "volunteer_id": "v",
                                                     "user_id": volunteer["id"], "volunteer_name": "小李",
                                                     "team_id": None, "minutes_to_accept": 1.0, "need": need},
                      need["need_id"])
    assert world.rpc.notifications.send_reminders() == 1
    assert world.rpc.notifications.send_reminders() == 0
    [reminder] = world.inbox(volunteer)["items"]
    assert reminder["kind"] == "window_reminder"
    assert reminder["body"] == f"提醒：您接下的「陪老人看病」将于{domain.local_time(start, datetime.now(timezone.utc))}开始，请按时到达并签到。"
    assert world.wait_texts(volunteer["phone"], 1) == [SIGN + reminder["body"]]


def test_a_volunteer_relieved_of_an_order_is_told_and_not_reminded(world):
    volunteer, other, resident = world.person("volunteer"), world.person("volunteer"), world.person("resident")
    need = world.need(resident, title="陪老人看病",
                      window_start=isoformat(datetime.now(timezone.utc) + timedelta(minutes=30)))
    assigned = {"order_id": "o", "offer_id": "f", "volunteer_id": "v", "volunteer_name": "小李", "team_id": None,
                "minutes_to_accept": 1.0, "need": need}

    def release(person):
        world.publish("dispatch", "order_reassigned", {"order_id": "o", "volunteer_id": "v",
                                                       "previous_user_id": person["id"]}, need["need_id"])

    world.publish("dispatch", "order_assigned", {**assigned, "user_id": volunteer["id"]}, need["need_id"])
    release(volunteer)
    assert world.rpc.notifications.send_reminders() == 0  # nobody holds the order now
    assert [n["kind"] for n in world.inbox(volunteer)["items"]] == ["assignment_withdrawn"]

    world.publish("dispatch", "order_assigned", {**assigned, "user_id": other["id"]}, need["need_id"])
    release(volunteer)  # told late of the first release: the order stays with the one holding it
    assert world.rpc.notifications.send_reminders() == 1
    assert [n["kind"] for n in world.inbox(other)["items"]] == ["window_reminder"]


def test_the_inbox_pages_filters_unread_marks_read_per_person_and_masks_phones(world, site_tree, monkeypatch):
    monkeypatch.setenv("LASTMILE_SMS_PER_HOUR", "0")  # six SMS to one resident here
    resident, volunteer = world.person("resident"), world.person("volunteer")
    staff_a, staff_b = world.person("staff", site_tree["station"]), world.person("staff", site_tree["institute"])
    needs = [world.need(resident, title=f"事情{i}") for i in range(5)]
    for need in needs:
        world.publish("needs", "need_approved", need, need["need_id"])
    page = world.inbox(resident, page=2, page_size=2)
    assert (page["total"], page["page"], page["page_size"], page["unread"]) == (5, 2, 2, 5)
    assert [n["body"][5:8] for n in page["items"]] == ["事情2", "事情1"]  # newest first
    first = world.inbox(resident)["items"][-1]
    marked = world.rpc.notifications.mark_read(resident, first["id"])
    assert marked["read"] is True and marked["read_at"]
    assert world.rpc.notifications.mark_read(resident, first["id"])["read_at"] == marked["read_at"]
    unread = world.inbox(resident, unread=True)
    assert unread["total"] == 4 and first["id"] not in [n["id"] for n in unread["items"]]
    newest = world.inbox(resident)["items"][0]["seq"]
    assert world.inbox(resident, after=newest)["items"] == []
    for stranger in (volunteer, staff_a, ADMIN):
        with pytest.raises(NotFound):
            world.rpc.notifications.mark_read(stranger, first["id"])
    with pytest.raises(NotFound):
        world.rpc.notifications.mark_read(resident, "no-such-id")

    # A staff notice is read per person: one reading it leaves it unread for the other.
    flagged = world.publish("ratings", "rating_flagged", {"id": "f", "need_id": needs[0]["need_id"],
                                                          "site_id": site_tree["station"],
                                                          "responsible_site_id": site_tree["station"],
                                                          "reason": "2 stars"}, needs[0]["need_id"])
    [notice] = world.inbox(staff_a)["items"]
    world.rpc.notifications.mark_read(staff_a, notice["id"])
    assert world.inbox(staff_a)["unread"] == 0 and world.inbox(staff_b)["unread"] == 1
    assert flagged["need_id"] == notice["need_id"]

    # Phones in what people are told are masked, except the number an SMS goes to.
    phone = "13712345678"
    need = world.need(resident, title=f"请联系{phone}")
    world.publish("needs", "need_approved", need, need["need_id"])
    told = world.inbox(resident)["items"][0]
    assert "137****5678" in told["body"] and phone not in json.dumps(told)
    [text] = [t for t in world.wait_texts(resident["phone"], 6) if "137****5678" in t]
    assert phone not in text and phone not in json.dumps(world.sms.delivered)
    deliveries = wait_for(lambda: (lambda found: found["total"] == 12 and found)(  # 6 stored in the app, 6 sent
        world.rpc.notifications.list_deliveries(ADMIN, {"user_id": resident["id"]})), message="the record")
    assert resident["phone"] not in json.dumps(deliveries)
    with pytest.raises(Forbidden):
        world.rpc.notifications.list_deliveries(resident, {})


# ---- the directory comes from the gateway ---------------------------------------------------------


def test_accounts_made_at_the_gateway_reach_the_directory(run_services, world, monkeypatch):
    from gateway.service import GatewayService
    from tests.e2e.conftest import free_port

    port = free_port()
    monkeypatch.setenv("LASTMILE_PORT", str(port))
    monkeypatch.setenv("LASTMILE_RATE_LIMIT", "0")
    run_services(GatewayService)
    phone = next(world.phones)
    answer = requests.post(f"http://127.0.0.1:{port}/api/v1/auth/register", timeout=10, json={
        "phone": phone, "password": "resident-pass", "name": "王阿姨", "role": "resident"})
    assert answer.status_code == 201, answer.text
    resident = {"id": answer.json()["id"], "role": "resident", "site_id": None}
    wait_for(lambda: world.contact_phone(resident["id"]) == phone, message="the account in the directory")
    need = world.need(resident)
    world.publish("needs", "need_approved", need, need["need_id"])
    assert world.wait_texts(phone, 1) == [f"{SIGN}您的需求「上门量血压」已通过审核，正在为您安排志愿者。"]
