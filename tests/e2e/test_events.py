"""Other systems follow orders as they happen: the event log, its live stream, and
webhooks that are signed and catch up after their receiver was down."""
import hashlib
import hmac
import json
import time

import eventlet
import pytest
import requests
from eventlet import wsgi

from tests.e2e.conftest import free_port
from tests.e2e.flows import pending_offer, register, submit, wait_status
from tests.support import wait_for

CYCLE_TYPES = ["need_submitted", "need_approved", "order_created", "offer_made", "offer_accepted", "order_assigned",
               "service_started", "service_completed", "hours_credited", "rating_submitted"]
SECRET = "a-shared-secret-of-the-receiver"


class Receiver:
    """A webhook receiver on loopback that can be down (503) for a while."""

    def __init__(self):
        self.up = False
        self.received, self.refused = [], 0
        self.port = free_port()
        self.server = eventlet.spawn(wsgi.server, eventlet.listen(("127.0.0.1", self.port)), self.app,
                                     log_output=False)

    def app(self, environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        if not self.up:
            self.refused += 1
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"down"]
        self.received.append((environ.get("HTTP_X_LASTMILE_SIGNATURE"), body))
        start_response("204 No Content", [])
        return [b""]

    def close(self):
        self.server.kill()


def run_cycle(anonymous, staff, volunteer, station):
    resident, _ = register(anonymous, "resident", "关注订单的居民")
    need = submit(resident, station)
    staff.post(f"/needs/{need['id']}/approve")
    offer = pending_offer(volunteer, need["id"])
    volunteer.post(f"/offers/{offer['id']}/accept")
    wait_status(resident, need["id"], "assigned")
    volunteer.post(f"/needs/{need['id']}/check-in", json={})
    wait_status(resident, need["id"], "in_service")
    volunteer.post(f"/needs/{need['id']}/check-out", json={"summary": "完成", "beneficiaries_served": 1})
    wait_status(resident, need["id"], "completed")
    wait_for(lambda: resident.post(f"/needs/{need['id']}/rating", json={"stars": 4}).status_code == 201, 10,
             interval=0.2, message="the rating")
    wait_status(resident, need["id"], "rated")
    return need["id"]


def types_of(events, need_id):
    return [e["type"] for e in events if e.get("need_id") == need_id]


def test_the_event_log_pages_from_a_cursor_and_masks_what_is_private(anonymous, admin, staff, volunteer, station):
    start = admin.get("/events", params={"after": 0, "limit": 1}).json()
    latest = admin.get("/events", params={"after": 0, "limit": 500}).json()
    after = latest["next_after"] if latest["items"] else start["next_after"]
    need_id = run_cycle(anonymous, staff, volunteer, station)

    def logged():
        found, cursor = [], after
        while True:
            page = admin.get("/events", params={"after": cursor, "limit": 50}).json()
            found += page["items"]
            if not page["items"]:
                return found if set(CYCLE_TYPES) <= set(types_of(found, need_id)) else None
            cursor = page["next_after"]

    events = wait_for(logged, 15, interval=0.3, message="the whole cycle in the event log")
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    mine = [e for e in events if e.get("need_id") == need_id]
    assert all({"event_id", "type", "occurred_at", "source", "data"} <= set(e) for e in mine)
    assert "13700000001" not in json.dumps(mine, ensure_ascii=False)
    only = admin.get("/events", params={"after": after, "types": "order_assigned", "limit": 500}).json()["items"]
    assert {e["type"] for e in only} == {"order_assigned"}
    outside = staff.get("/events", params={"site_id": "qiongshan.fucheng"})
    assert outside.status_code == 403
    inside = staff.get("/events", params={"after": after, "limit": 500}).json()["items"]
    assert need_id in {e.get("need_id") for e in inside}
    resident, _ = register(anonymous, "resident", "好奇")
    assert resident.get("/events").status_code == 403


def test_a_cursor_beyond_any_sequence_number_is_refused_not_a_500(admin):
    """Found by the fuzz: a cursor past 2**31 overflowed PostgreSQL's integer column."""
    for cursor in (2**31, 5169411387, -1, "x"):
        answer = admin.get("/events", params={"after": cursor})
        assert answer.status_code == 400, (cursor, answer.text)
        assert "after" in answer.json()["error"]["details"]
    assert admin.get("/events", params={"after": 2**31 - 1}).json() == {"items": [], "next_after": 2**31 - 1}
    for cursor in (2**31, -1):
        answer = admin.get("/notifications", params={"after": cursor})
        assert answer.status_code == 400, (cursor, answer.text)


def test_a_parameter_given_twice_is_refused_not_half_read(admin):
    """Found by the fuzz: the first of two values was used and the second silently dropped."""
    for path, name in (("/events", "types"), ("/events", "site_id"), ("/needs", "status")):
        answer = admin.get(path, params=[(name, "a"), (name, "b" * 3000)])
        assert answer.status_code == 400, (path, answer.text)
        assert name in answer.json()["error"]["details"]
    assert admin.get("/events", params=[("types", "order_assigned"), ("cache", "1"), ("cache", "2")]).status_code == 200


def test_a_stream_carries_every_event_of_a_cycle_and_resumes(stack, anonymous, admin, staff, volunteer, station):
    latest = admin.get("/events", params={"after": 0, "limit": 500}).json()
    cursor = latest["next_after"]
    while True:
        page = admin.get("/events", params={"after": cursor, "limit": 500}).json()
        if not page["items"]:
            break
        cursor = page["next_after"]
    received = []

    def listen():
        with requests.get(stack["api"] + "/events/stream", params={"after": cursor}, stream=True, timeout=30,
                          headers={"Authorization": f"Bearer {admin.token}"}) as response:
            assert response.headers["Content-Type"].startswith("text/event-stream")
            event = {}
            for line in response.iter_lines(decode_unicode=True):
                if line.startswith("id: "):
                    event["id"] = int(line[4:])
                elif line.startswith("data: "):
                    event["data"] = json.loads(line[6:])
                elif line == "" and event:
                    received.append(event)
                    event = {}
                    if "rating_submitted" in [e["data"]["type"] for e in received]:
                        return

    listener = eventlet.spawn(listen)
    need_id = run_cycle(anonymous, staff, volunteer, station)
    with eventlet.Timeout(20):
        listener.wait()
    assert set(CYCLE_TYPES) <= set(types_of([e["data"] for e in received], need_id))
    ids = [e["id"] for e in received]
    assert ids == sorted(ids)

    # A client that lost the connection resumes after the last id it saw.
    middle = received[len(received) // 2]["id"]
    with requests.get(stack["api"] + "/events/stream", stream=True, timeout=10,
                      headers={"Authorization": f"Bearer {admin.token}", "Last-Event-ID": str(middle)}) as again:
        first_id = next(int(line[4:]) for line in again.iter_lines(decode_unicode=True) if line.startswith("id: "))
    assert first_id == received[len(received) // 2 + 1]["id"]


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.close()


def test_a_webhook_is_signed_and_catches_up_in_order_after_being_down(anonymous, admin, staff, volunteer, station,
                                                                       receiver):
    refused = admin.post("/subscriptions", json={"url": "ftp://example", "secret": SECRET})
    assert refused.status_code == 400
    created = admin.post("/subscriptions", json={"url": f"http://127.0.0.1:{receiver.port}/hook",
                                                 "types": CYCLE_TYPES, "secret": SECRET})
    assert created.status_code == 201, created.text
    subscription = created.json()

    need_id = run_cycle(anonymous, staff, volunteer, station)  # the receiver is down all along
    wait_for(lambda: receiver.refused >= 2, 15, message="deliveries to be tried and refused")
    assert receiver.received == []
    receiver.up = True

    def delivered():
        events = [json.loads(body) for _, body in receiver.received]
        return events if set(CYCLE_TYPES) <= set(types_of(events, need_id)) else None

    events = wait_for(delivered, 90, interval=0.5, message="the receiver to catch up")
    for signature, body in receiver.received:
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(signature, expected)
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))  # in order, each once
    assert {e["type"] for e in events} <= set(CYCLE_TYPES)

    deliveries = admin.get(f"/subscriptions/{subscription['id']}/deliveries", params={"limit": 500}).json()["items"]
    assert any(not d["delivered"] and d["status_code"] == 503 for d in deliveries)
    assert sum(d["delivered"] for d in deliveries) == len(events)
    time.sleep(1.5)
    assert len(receiver.received) == len(events)  # nothing delivered twice
    assert admin.request("DELETE", f"/subscriptions/{subscription['id']}").json()["active"] is False
