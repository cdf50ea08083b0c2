"""The running gateway describes itself (/api/openapi.json), shows it with Swagger UI
from its own files only (/docs), and keeps its word under a property-based fuzz:
schemathesis sends bad and random input to every documented operation and no
answer is a 5xx, every error is the JSON error body, no request hangs.

The fuzz is bounded: LASTMILE_FUZZ_EXAMPLES examples per operation and mode
(negative, then positive; default 6), derandomized so that CI runs the same
examples each time; raise LASTMILE_FUZZ_EXAMPLES or set LASTMILE_FUZZ_SEED to
explore further by hand, and LASTMILE_FUZZ_REPORT=FILE to have every failure
written there."""
import json
import os
import re
import time
from html.parser import HTMLParser

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance, negative_data_rejection, response_schema_conformance, status_code_conformance,
)

from gateway import openapi
from gateway.service import GatewayService
from tests.e2e.flows import PASSWORD, register, unique_phone

EXAMPLES = int(os.environ.get("LASTMILE_FUZZ_EXAMPLES", "6"))
SEED = os.environ.get("LASTMILE_FUZZ_SEED")
HANG_SECONDS = 5
# Operations the fuzz leaves alone, and why.
NOT_FUZZED = {
    "create_subscription": "a subscription makes the stack POST events to whatever URL it names: "
                           "random URLs would send traffic off this machine",
}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]
# Negative cases a route rightly accepts: Open311 ignores every other filter when ids are given.
IGNORED_NEGATIVES = {"open311_requests": lambda case: bool((case.query or {}).get("service_request_id"))}


class References(HTMLParser):
    def __init__(self):
        super().__init__()
        self.found = []

    def handle_starttag(self, tag, attrs):
        self.found += [value for name, value in attrs if name in ("src", "href") and value]


def test_the_document_is_served_and_valid(stack):
    response = requests.get(stack["base"] + "/api/openapi.json", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    document = response.json()
    validate(document)
    assert document == openapi.build(GatewayService)
    assert len([op for item in document["paths"].values() for op in item]) > 60


def test_docs_need_nothing_but_the_gateway(stack):
    response = requests.get(stack["base"] + "/docs", timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert not re.search(r"(?i)(https?:)?//[a-z0-9]", response.text), "an address outside the gateway"
    parser = References()
    parser.feed(response.text)
    assert len(parser.found) >= 3
    for reference in parser.found:
        assert reference.startswith("/") and not reference.startswith("//"), reference
        asset = requests.get(stack["base"] + reference, timeout=10)
        assert asset.status_code == 200 and asset.content, reference
        if reference.endswith(".css"):
            # Only inline images: a stylesheet could otherwise fetch from elsewhere.
            assert all(url.strip("'\"").startswith("data:")
                       for url in re.findall(r"url\(([^)]*)\)", asset.text)), reference
    assert '"/api/openapi.json"' in response.text
    for outside in ("/docs/../gateway/service.py", "/docs/%2e%2e/%2e%2e/gateway/service.py",
                    "/docs/swagger-initializer.js", "/docs/nothing.js"):
        refused = requests.get(stack["base"] + outside, timeout=10)
        assert refused.status_code == 404, outside
        assert refused.json()["error"]["code"] == "not_found"


def test_text_with_a_nul_character_is_refused_not_a_500(stack, admin, anonymous):
    """PostgreSQL refuses NUL in text: found by the fuzz as 500s, now 400 (or 404 for an id)."""
    token = anonymous.post("/auth/token", json={"phone": "1380000\u00000000", "password": "x"})
    assert token.status_code == 400 and "phone" in token.json()["error"]["details"]
    for path in ("/ratings?team_id=%00n", "/service-records?volunteer_id=%00", "/open311/keys"):
        answer = admin.post(path, json={"name": "ab\u0000"}) if path == "/open311/keys" else admin.get(path)
        assert answer.status_code == 400, (path, answer.text)
        assert answer.json()["error"]["code"] == "invalid_input"
    for path in ("/needs/%00", "/volunteers/a%00b", "/teams/%00/score", "/certificates/%00"):
        answer = admin.get(path)
        assert answer.status_code == 404, (path, answer.text)
        assert answer.json()["error"]["code"] == "not_found"


def test_a_url_too_long_gets_the_json_error_body(stack, admin):
    """eventlet refuses a request line over 8 KiB before the gateway sees it (found by the fuzz)."""
    answer = admin.get("/needs", params={"q": "长" * 3000})
    assert answer.status_code == 414
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json()["error"]["code"] == "uri_too_long"


@pytest.fixture(scope="module")
def callers(admin, anonymous):
    """A token for each kind of route: a fresh admin where admins may call, else a
    volunteer (with a profile whose skill no need asks for, so dispatch never
    picks them) or a resident."""
    phone = unique_phone("138")
    created = admin.post("/accounts", json={"phone": phone, "password": PASSWORD, "name": "fuzz admin",
                                            "role": "admin"})
    assert created.status_code == 201, created.text
    volunteer, _ = register(anonymous, "volunteer", "fuzz volunteer")
    profile = volunteer.post("/volunteers", json={"name": "fuzz volunteer", "skills": ["openapi_fuzz"],
                                                  "site_id": "qiongshan.hongqi.benli"})
    assert profile.status_code == 201, profile.text
    resident, _ = register(anonymous, "resident", "fuzz resident")
    return {"admin": anonymous.login(phone, PASSWORD).token, "volunteer": volunteer.token,
            "resident": resident.token}


def token_for(roles, callers):
    if roles is None or "admin" in roles:
        return callers["admin"]
    return callers["volunteer"] if "volunteer" in roles else callers["resident"]


def error_body_problem(path, response):
    """What is wrong with an error answer, or None."""
    content_type = next((values[0] for key, values in response.headers.items() if key.lower() == "content-type"), "")
    if path.startswith("/open311/"):
        if content_type.startswith("text/xml"):
            return None if b"<errors>" in response.content else "an XML error without <errors>"
        expected = "a list of {code, description}"
    else:
        expected = 'the error body {"error": {"code", "message", "details"}}'
    if not content_type.startswith("application/json"):
        return f"answered {content_type or 'no content type'}, not JSON"
    try:
        body = response.json()
    except ValueError:
        return "a body that is not JSON"
    error = body.get("error") if isinstance(body, dict) else None
    good = (isinstance(error, dict) and isinstance(error.get("code"), str)
            and isinstance(error.get("message"), str) and isinstance(error.get("details"), dict))
    if path.startswith("/open311/"):
        # Or the gateway's own body, where no Open311 route matched (a format other than json or xml).
        good = good or (isinstance(body, list) and all(isinstance(e, dict) and {"code", "description"} <= set(e)
                                                       for e in body))
    elif path == "/readyz":
        good = isinstance(body, dict) and "missing" in body
    return None if good else f"not {expected}: {str(body)[:200]}"


def negates_the_token(case):
    """Whether this negative case is about the Authorization header (left out or
    mangled): then it goes as generated, without our token."""
    data = case.meta.phase.data if case.meta is not None else None
    names = [getattr(data, "parameter", None)] + [m.parameter for m in getattr(data, "mutations", ())]
    return any((name or "").lower() == "authorization" for name in names)


def test_fuzz_every_documented_operation(stack, callers):
    document = requests.get(stack["base"] + "/api/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    roles = {name: meta["roles"] for name, meta, _ in openapi.routes(GatewayService)}
    streams = {op["operationId"] for item in document["paths"].values() for op in item.values()
               if any("text/event-stream" in r.get("content", {}) for r in op["responses"].values())}
    failures, figures = [], {"operations": 0, "examples": 0, "slowest": (0.0, "")}
    started = time.monotonic()
    documented_query = {op["operationId"]: {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
                        for item in document["paths"].values() for op in item.values()}

    def exercise(case, mode, name):
        headers = {} if negates_the_token(case) else {"Authorization": f"Bearer {token_for(roles.get(name), callers)}"}
        label = f"{case.method} {case.formatted_path} ({mode.value}, {name})"
        if name in streams:
            return exercise_stream(case, label, headers)
        timeout = HANG_SECONDS * 2
        began = time.monotonic()
        try:
            response = case.call(base_url=stack["base"], headers=headers, timeout=timeout)
        except requests.RequestException as exc:
            failures.append(f"{label}: no answer within {timeout}s ({exc.__class__.__name__})\n"
                            f"  {case.as_curl_command(headers=headers)}")
            return
        elapsed = time.monotonic() - began
        figures["examples"] += 1
        figures["slowest"] = max(figures["slowest"], (elapsed, label))
        if elapsed > HANG_SECONDS:
            failures.append(f"{label}: took {elapsed:.1f}s")
        problems = []
        if response.status_code >= 500:
            problems.append(f"answered {response.status_code}: {response.content[:300]!r}")
        elif response.status_code >= 400:
            problem = error_body_problem(case.path, response)
            if problem:
                problems.append(f"answered {response.status_code} with {problem}")
        try:
            # Unknown query parameters are ignored by design (cache-busters and the like), so a
            # request made "negative" only by adding one is rightly answered as if it were absent.
            ignored = IGNORED_NEGATIVES.get(name, lambda case: False)(case) or bool(
                set(case.query or {}) - documented_query.get(name, set()))
            # A request line over 8 KiB is refused with 414 (documented) before any field is
            # read: a rejection, though not among the statuses schemathesis counts as one.
            ignored = ignored or response.status_code == 414
            case.validate_response(response, checks=[c for c in CHECKS if not (ignored and c is negative_data_rejection)],
                                   headers=headers)
        except AssertionError as exc:
            problems.append(str(exc).strip()[:1500])
        except FailureGroup as group:  # every failed check, gathered
            problems += [f"{failure.__class__.__name__}: {str(failure).strip()[:1500]}" for failure in group.exceptions]
        if problems:
            failures.append(f"{label}:\n  " + "\n  ".join(problems) + f"\n  {case.as_curl_command(headers=headers)}")

    def exercise_stream(case, label, headers):
        """A stream never ends: its answer is judged by its status and headers."""
        documented = set(case.operation.responses.status_codes)
        try:
            with requests.request(**case.as_transport_kwargs(base_url=stack["base"], headers=headers), stream=True,
                                  timeout=HANG_SECONDS) as response:
                status, content_type = response.status_code, response.headers.get("Content-Type", "")
                body = b"" if status == 200 else response.content
        except requests.RequestException as exc:
            failures.append(f"{label}: no answer within {HANG_SECONDS}s ({exc.__class__.__name__})")
            return
        figures["examples"] += 1
        if str(status) not in documented:
            failures.append(f"{label}: answered {status}, not one of {sorted(documented)}")
        elif status == 200 and not content_type.startswith("text/event-stream"):
            failures.append(f"{label}: a stream of {content_type}")
        elif status >= 400:
            error = (body and content_type.startswith("application/json")) and json.loads(body)
            if not (isinstance(error, dict) and {"code", "message", "details"} <= set(error.get("error") or {})):
                failures.append(f"{label}: answered {status} with {body[:200]!r}")

    for result in schema.get_all_operations():
        operation = result.ok()
        name = operation.definition.raw["operationId"]
        if name in NOT_FUZZED:
            continue
        figures["operations"] += 1
        for mode in (GenerationMode.NEGATIVE, GenerationMode.POSITIVE):
            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=SEED is None,
                      phases=[Phase.generate], suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case):
                exercise(case, mode, name)

            if SEED is not None:
                run = seed(int(SEED))(run)
            try:
                run()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, name  # nothing to get wrong: no parameters, no body

    seconds = time.monotonic() - started
    slowest, slowest_label = figures["slowest"]
    print(f"\nfuzz: {figures['operations']} operations, {figures['examples']} examples in {seconds:.0f}s; "
          f"slowest {slowest:.2f}s ({slowest_label}); {len(failures)} failures; "
          f"not fuzzed: {', '.join(NOT_FUZZED)}")
    if os.environ.get("LASTMILE_FUZZ_REPORT"):
        with open(os.environ["LASTMILE_FUZZ_REPORT"], "w", encoding="utf-8") as report:
            report.write("\n\n".join(failures))
    assert figures["operations"] >= 60
    assert not failures, f"{len(failures)} failures:\n\n" + "\n\n".join(failures[:40])
