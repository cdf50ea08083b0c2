"""The gateway in a nameko container on the real broker: limits, slow and absent
services, readiness, metrics, tokens. Backends are real or stand-ins as each
test needs."""
import time
import uuid

import eventlet
import pytest
import requests
import sqlalchemy as sa
from nameko.rpc import rpc

from gateway.limits import limiter
from gateway.service import GatewayService
from lastmile.db import make_engine
from services.needs.service import NeedsService
from tests.e2e.conftest import free_port

ADMIN_PHONE, ADMIN_PASSWORD = "13800000000", "gateway-admin-pass"


class HungVolunteers:
    """Stands in for a volunteers service that takes the request and never answers."""

    name = "volunteers"

    @rpc
    def get_volunteer(self, actor, volunteer_id):
        eventlet.sleep(30)

    @rpc
    def health(self):
        eventlet.sleep(30)


class SwampedVolunteers:
    """Stands in for a volunteers service busy with one request far longer than the
    gateway waits (run with one worker, so the next request waits in its queue)."""

    name = "volunteers"
    carried_out = []

    @rpc
    def get_volunteer(self, actor, volunteer_id):
        SwampedVolunteers.carried_out.append(volunteer_id)
        eventlet.sleep(4)
        return {"id": volunteer_id}


class NeedsWithAnAilingDatabase:
    """Stands in for a needs service whose PostgreSQL ends its session mid-query, as
    a restarting server does, or which runs a statement PostgreSQL refuses."""

    name = "needs"

    @rpc
    def get_need(self, actor, need_id):
        engine = make_engine("needs", pool_size=1)
        try:
            with engine.connect() as conn:
                if need_id == "bad-statement":
                    return conn.execute(sa.text("SELECT 1 / 0")).scalar()
                pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
                eventlet.spawn_after(0.3, self._terminate, pid)
                conn.execute(sa.text("SELECT pg_sleep(5)"))
        finally:
            engine.dispose()

    @staticmethod
    def _terminate(pid):
        other = make_engine("needs", pool_size=1)
        with other.connect() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        other.dispose()

    @rpc
    def health(self):
        return {"status": "ok"}


@pytest.fixture
def proxy_hops():
    return "0"  # a test parametrizes it to stand behind proxies


@pytest.fixture
def gateway(run_services, monkeypatch, proxy_hops):
    port = free_port()
    monkeypatch.setenv("LASTMILE_PORT", str(port))
    monkeypatch.setenv("LASTMILE_PROXY_HOPS", proxy_hops)
    limiter.windows.clear()  # counts are per process: one test's requests must not weigh on the next
    monkeypatch.setenv("LASTMILE_ADMIN_PHONE", ADMIN_PHONE)
    monkeypatch.setenv("LASTMILE_ADMIN_PASSWORD", ADMIN_PASSWORD)
    monkeypatch.setenv("LASTMILE_RATE_LIMIT", "0")
    run_services(GatewayService)
    base = f"http://127.0.0.1:{port}"
    token = requests.post(base + "/api/v1/auth/token", json={"phone": ADMIN_PHONE, "password": ADMIN_PASSWORD},
                          timeout=5).json()["access_token"]
    return base, {"Authorization": f"Bearer {token}"}


def timed(method, url, **kwargs):
    started = time.monotonic()
    response = requests.request(method, url, timeout=10, **kwargs)
    return response, time.monotonic() - started


def test_a_stopped_service_is_503_and_a_hung_one_504_within_two_seconds(gateway, run_services):
    base, admin = gateway
    run_services(HungVolunteers)
    down, seconds = timed("GET", base + "/api/v1/needs/some-id", headers=admin)
    assert down.status_code == 503 and seconds < 2
    assert down.json()["error"]["details"]["service"] == "needs"
    hung, seconds = timed("GET", base + "/api/v1/volunteers/some-id", headers=admin)
    assert hung.status_code == 504 and seconds < 2.5
    assert hung.json()["error"]["code"] == "service_timeout"
    ready, seconds = timed("GET", base + "/readyz")
    assert ready.status_code == 503 and seconds < 3
    assert {"needs", "dispatch", "ratings", "volunteers"} <= set(ready.json()["missing"])
    assert ready.json()["checks"]["broker"] == "ok"


def test_a_database_going_away_is_503_but_a_statement_it_refuses_stays_500(gateway, run_services, monkeypatch):
    """The first is worth a retry (the server is restarting); the second is a bug."""
    base, admin = gateway
    monkeypatch.setenv("LASTMILE_RPC_TIMEOUT", "10")  # a loaded machine must not turn either into a 504
    run_services(NeedsWithAnAilingDatabase)
    going_away = requests.get(base + "/api/v1/needs/mid-query", headers=admin, timeout=10)
    assert going_away.status_code == 503, going_away.text
    assert going_away.json()["error"]["code"] == "service_unavailable"
    refused = requests.get(base + "/api/v1/needs/bad-statement", headers=admin, timeout=10)
    assert refused.status_code == 500 and refused.json()["error"]["code"] == "internal_error"


def test_a_request_the_gateway_gave_up_on_is_not_carried_out_later(gateway, run_services, monkeypatch):
    base, admin = gateway
    monkeypatch.setenv("LASTMILE_MAX_WORKERS", "1")
    run_services(SwampedVolunteers)
    first = eventlet.spawn(requests.get, base + "/api/v1/volunteers/first", headers=admin, timeout=10)
    eventlet.sleep(0.3)
    queued, seconds = timed("GET", base + "/api/v1/volunteers/queued", headers=admin)
    assert queued.status_code == 504 and seconds < 2.5
    assert first.wait().status_code == 504
    eventlet.sleep(5)  # the first is done: the queued one would run now had it not expired
    assert SwampedVolunteers.carried_out == ["first"]


def test_readyz_turns_ready_when_a_service_starts(gateway, run_services):
    base, admin = gateway
    run_services(NeedsService)
    body = requests.get(base + "/readyz", timeout=5).json()
    assert body["checks"]["needs"] == "ok" and "needs" not in body["missing"]
    sites = requests.get(base + "/api/v1/sites", timeout=5)
    assert sites.status_code == 200 and "items" in sites.json()


def test_requests_over_the_rate_limit_get_429_with_retry_after(gateway, monkeypatch):
    base, admin = gateway
    monkeypatch.setenv("LASTMILE_RATE_LIMIT", "3")
    answers = [requests.get(base + "/api/v1/me", headers=admin, timeout=5) for _ in range(4)]
    assert [a.status_code for a in answers[:3]] == [200, 200, 200]
    assert answers[3].status_code == 429 and 1 <= int(answers[3].headers["Retry-After"]) <= 61
    assert answers[3].json()["error"]["code"] == "too_many_requests"
    assert requests.get(base + "/healthz", timeout=5).status_code == 200  # operations are not limited


def limited(base, forwarded_for):
    """Whether a request said to come from ``forwarded_for`` is refused for its rate
    (any other answer will do: the needs service behind /categories is not running)."""
    return requests.get(base + "/api/v1/categories", headers={"X-Forwarded-For": forwarded_for},
                        timeout=5).status_code == 429


@pytest.mark.parametrize("proxy_hops", ["1"])
def test_behind_a_proxy_each_client_has_a_limit_of_its_own(gateway, monkeypatch):
    base, _ = gateway
    monkeypatch.setenv("LASTMILE_RATE_LIMIT", "3")
    assert [limited(base, "203.0.113.7") for _ in range(4)] == [False, False, False, True]
    assert not limited(base, "203.0.113.8")  # a neighbour behind the same proxy
    # The proxy appends the address it saw: what a client writes before it changes nothing.
    assert limited(base, "198.51.100.1, 203.0.113.7")


def test_without_a_proxy_the_header_is_not_believed(gateway, monkeypatch):
    base, _ = gateway
    monkeypatch.setenv("LASTMILE_RATE_LIMIT", "3")
    assert [limited(base, f"203.0.113.{n}") for n in range(4)] == [False, False, False, True]


def resident(base):
    phone = "137" + str(uuid.uuid4().int)[:8]
    body = {"phone": phone, "password": "first-password", "name": "居民", "role": "resident"}
    assert requests.post(base + "/api/v1/auth/register", json=body, timeout=5).status_code == 201
    token = requests.post(base + "/api/v1/auth/token", json={"phone": phone, "password": "first-password"},
                          timeout=5).json()["access_token"]
    return phone, {"Authorization": f"Bearer {token}"}


def test_five_failed_logins_lock_the_phone_for_a_minute(gateway):
    base, _ = gateway
    phone, _ = resident(base)
    wrong = {"phone": phone, "password": "not-the-password"}
    codes = [requests.post(base + "/api/v1/auth/token", json=wrong, timeout=5).status_code for _ in range(5)]
    assert codes == [401] * 5
    locked = requests.post(base + "/api/v1/auth/token", json={"phone": phone, "password": "first-password"},
                           timeout=5)
    assert locked.status_code == 429 and 50 <= int(locked.headers["Retry-After"]) <= 61


def test_a_good_login_clears_the_count_of_failures(gateway):
    base, _ = gateway
    phone, _ = resident(base)
    for _ in range(4):
        requests.post(base + "/api/v1/auth/token", json={"phone": phone, "password": "nope"}, timeout=5)
    good = {"phone": phone, "password": "first-password"}
    assert requests.post(base + "/api/v1/auth/token", json=good, timeout=5).status_code == 200
    requests.post(base + "/api/v1/auth/token", json={"phone": phone, "password": "nope"}, timeout=5)
    assert requests.post(base + "/api/v1/auth/token", json=good, timeout=5).status_code == 200


def test_changing_the_password_revokes_older_tokens(gateway):
    base, _ = gateway
    _, admin = resident(base)
    refused = requests.post(base + "/api/v1/auth/password", headers=admin, timeout=5,
                            json={"old_password": "wrong", "new_password": "a-new-password"})
    assert refused.status_code == 403
    changed = requests.post(base + "/api/v1/auth/password", headers=admin, timeout=5,
                            json={"old_password": "first-password", "new_password": "a-new-password"})
    assert changed.status_code == 200
    assert requests.get(base + "/api/v1/me", headers=admin, timeout=5).status_code == 401
    fresh = {"Authorization": f"Bearer {changed.json()['access_token']}"}
    assert requests.get(base + "/api/v1/me", headers=fresh, timeout=5).status_code == 200


def test_metrics_count_requests_by_route_and_status(gateway, run_services):
    base, admin = gateway
    run_services(NeedsService)
    requests.get(base + "/api/v1/categories", timeout=5)
    requests.get(base + "/api/v1/no-such-thing", timeout=5)
    text = requests.get(base + "/metrics", timeout=5).text
    assert 'lastmile_http_requests_total{method="GET",route="/api/v1/categories",status="200"}' in text
    assert 'route="unmatched",status="404"' in text
    assert 'lastmile_rpc_calls_total{method="list_categories",outcome="ok",service="needs"}' in text
    assert "lastmile_http_request_seconds_bucket" in text
