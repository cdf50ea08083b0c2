"""The access rules of docs/access.md, on the whole stack.

One small world is built per module: two branches (institutes) with a station each,
their staff and collectors, a resident of each, a volunteer of each, needs in every
state that matters, an offer, an assignment, a completed and poorly rated service
with its follow-up, an hours request, a certificate, a team and a project. Then
every cell of the table that must be refused is tried (``CASES``), and each refused
write is checked to have changed nothing; a hidden object answers exactly as an id
that does not exist. ``test_every_route_has_access_rules_and_cases`` fails when the
gateway serves a route that has no row in docs/access.md, or no case here for
anonymous callers and for each refused cell.
"""
import inspect
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from nameko.web.handlers import HttpRequestHandler
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule

from gateway.http import API
from gateway.service import GatewayService
from tests.e2e.conftest import Client
from tests.e2e.flows import PASSWORD, pending_offer, register, submit, unique_phone, wait_status
from tests.support import wait_for

ACCESS_DOC = Path(__file__).resolve().parents[2] / "docs" / "access.md"
ROLES = ("anonymous", "resident", "collector", "volunteer", "staff", "admin")
# Routes served at the root, not under /api/v1: operations, the API's documentation, the web console, Open311.
AT_ROOT = ("/healthz", "/readyz", "/metrics", "/api/openapi.json", "/docs", "/console", "/open311/v2/")
OPEN311 = "/open311/v2/"
ERROR_CODES = {400: "invalid_input", 401: "unauthorized", 403: "forbidden", 404: "not_found"}

# The people of the world, and their role. "_a" belong to branch A, "_b" to branch B.
WHO = {
    "anonymous": "anonymous",
    "resident_a": "resident", "resident_b": "resident", "spare": "resident",
    "collector_a": "collector", "collector_b": "collector",
    "volunteer_a": "volunteer", "volunteer_b": "volunteer",
    "staff_a": "staff", "staff_b": "staff", "staff_station_a": "staff",
    "admin": "admin",
}


# --------------------------------------------------------------------------- the gateway's routes

def route_key(method, path):
    """``GET /needs/{need_id}``: the route as docs/access.md names it."""
    if path.startswith(API + "/"):
        path = path[len(API):]
    return method + " " + re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", path)


def gateway_routes():
    """Every HTTP entrypoint of the gateway, as declared with ``@route``."""
    routes, undeclared = {}, []
    for name, member in inspect.getmembers(GatewayService):
        for entrypoint in getattr(member, "nameko_entrypoints", ()):
            if not isinstance(entrypoint, HttpRequestHandler):
                continue
            declared = getattr(member, "lastmile_route", None)
            if declared is None or (declared["method"], declared["path"]) != (entrypoint.method, entrypoint.url):
                undeclared.append(f"{name}: {entrypoint.method} {entrypoint.url} is not declared with @route")
                continue
            routes[route_key(declared["method"], declared["path"])] = dict(declared, name=name)
    return routes, undeclared


def documented_rules():
    """{route key: {role: cell, "note": ...}} from the table of docs/access.md."""
    rows, duplicates = {}, []
    for line in ACCESS_DOC.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\| `([A-Z]+) (/[^`]*)` \|(.*)\|\s*$", line)
        if not match:
            continue
        key = f"{match.group(1)} {match.group(2)}"
        cells = [cell.strip() for cell in match.group(3).split("|")]
        if key in rows:
            duplicates.append(key)
        rows[key] = dict(zip(ROLES + ("note",), cells))
    return rows, duplicates


def refusals_in(cell):
    return {int(code) for code in re.findall(r"\b(401|403|404)\b", cell)}


# --------------------------------------------------------------------------- the cases

@dataclass(frozen=True)
class Case:
    who: str
    method: str
    path: str            # under /api/v1 (or a route served at the root); {names} are ids of the world
    expected: int
    body: object = None  # JSON body; {names} inside strings are filled in too
    probe: str = None    # what a refused write must leave as it was
    gap: str = None      # a known gap of docs/access.md: the case is an expected failure until it is closed

    @property
    def id(self):
        return f"{self.who}-{self.method}-{self.path}-{self.expected}"

    def param(self):
        marks = [pytest.mark.xfail(strict=True, reason=self.gap)] if self.gap else []
        return pytest.param(self, id=self.id, marks=marks)

    def full_path(self):
        path = self.path.split("?")[0]
        return path if at_root(path) else API + path


def at_root(path):
    path = path.split("?")[0]
    return path == "/" or path.startswith(AT_ROOT)


def need_body(site, **overrides):
    body = {"category": "health", "title": "上门量血压", "description": "访问规则测试", "site_id": site,
            "address": "村委会旁2号", "contact_phone": "13700000002", "beneficiary_group": "elderly_alone",
            "beneficiaries": 1}
    body.update(overrides)
    return body


BEHALF = {"name": "黄阿婆", "phone": "13700000009"}
DOOR = (19.7012345, 110.3012345)  # where need_open_a's resident lives
VOLUNTEER_BODY = {"name": "不是志愿者", "skills": ["health"], "site_id": "{station_a}"}
HOURS_BODY = {"kind": "backfill", "hours": 2, "service_date": "{yesterday}", "reason": "替别人补录"}
CHECK_OUT = {"summary": "不是我的服务", "beneficiaries_served": 1}
SUBSCRIPTION = {"url": "http://127.0.0.1:9/hook", "secret": "a-webhook-secret-of-16+", "types": ["order_assigned"]}


def account_body(role="staff", site="{inst_a}"):
    return {"phone": unique_phone("138"), "password": PASSWORD, "name": "越权账号", "role": role, "site_id": site}


def C(who, method, path, expected, body=None, probe=None, gap=None):
    return Case(who, method, path, expected, body, probe, gap)




# Anonymous callers on every route that is not public: 401, before anything else.
ANONYMOUS = [C("anonymous", method, path, 401, body, probe) for method, path, body, probe in [
    ("POST", "/auth/password", {"old_password": PASSWORD, "new_password": "another-password"}, None),
    ("POST", "/accounts", account_body("admin", None), "login"),
    ("POST", "/open311/keys", {"name": "匿名系统"}, None),
    ("GET", "/open311/keys", None, None),
    ("POST", "/open311/keys/no-such-key/revoke", None, None),
    ("GET", "/me", None, None),
    ("GET", "/notifications", None, None),
    ("POST", "/notifications/{need_done}/read", None, None),
    ("GET", "/notifications/preferences", None, None),
    ("PUT", "/notifications/preferences", {"sms": False}, None),
    ("POST", "/sites", {"id": "qiongshan.anon", "name": "匿名"}, "sites"),
    ("PATCH", "/sites/{station_a}", {"auto_approve": True}, "site_station_a"),
    ("POST", "/categories", {"code": "anonymous_made", "name": "匿名"}, "categories"),
    ("POST", "/projects", {"name": "匿名项目", "category": "health", "site_id": "{inst_a}"}, "projects_inst_a"),
    ("PATCH", "/projects/{project_a}", {"active": False}, "projects_inst_a"),
    ("GET", "/sites/{inst_a}/beneficiaries", None, None),
    ("PUT", "/sites/{station_a}/beneficiaries", {"group": "disabled", "count": 99}, "beneficiaries_station_a"),
    ("POST", "/sites/{station_a}/beneficiaries/entries", {"group": "disabled", "name": "匿名"},
     "beneficiaries_station_a"),
    ("POST", "/needs", need_body("{station_a}"), "needs_station_a"),
    ("GET", "/needs", None, None),
    ("GET", "/needs/{need_open_a}", None, None),
    ("POST", "/needs/{need_open_a}/approve", None, "need_open_a"),
    ("POST", "/needs/{need_open_a}/reject", {"reason": "匿名"}, "need_open_a"),
    ("POST", "/needs/{need_open_a}/cancel", None, "need_open_a"),
    ("GET", "/needs/{need_offered}/order", None, None),
    ("POST", "/needs/{need_offered}/dispatch", {"volunteer_id": "{vb}"}, "need_offered"),
    ("GET", "/offers", None, None),
    ("POST", "/offers/{offer}/accept", None, "need_offered"),
    ("POST", "/offers/{offer}/decline", None, "need_offered"),
    ("POST", "/volunteers", VOLUNTEER_BODY, None),
    ("GET", "/volunteers/me", None, None),
    ("GET", "/volunteers/{va}", None, None),
    ("PATCH", "/volunteers/{va}", {"name": "匿名"}, "volunteer_a"),
    ("POST", "/teams", {"name": "匿名服务队", "type": "social", "site_id": "{station_a}"}, "teams"),
    ("GET", "/teams", None, None),
    ("GET", "/teams/{team_b}", None, None),
    ("POST", "/teams/{team_b}/members", {"volunteer_id": "{va}"}, "team_b"),
    ("GET", "/teams/{team_b}/score", None, None),
    ("POST", "/needs/{need_assigned}/check-in", None, "need_assigned"),
    ("POST", "/needs/{need_assigned}/check-out", CHECK_OUT, "need_assigned"),
    ("GET", "/assignments", None, None),
    ("GET", "/volunteers/{va}/certificate", None, None),
    ("POST", "/volunteers/{va}/hours/requests", HOURS_BODY, "hours_requests_va"),
    ("GET", "/hours-requests", None, None),
    ("POST", "/hours-requests/{hours_request}/approve", None, "hours_request"),
    ("GET", "/service-records", None, None),
    ("POST", "/service-records/{record}/approve", None, "record"),
    ("GET", "/volunteers/{va}/hours", None, None),
    ("POST", "/needs/{need_done}/rating", {"stars": 5}, "need_done"),
    ("GET", "/ratings", None, None),
    ("GET", "/volunteers/{va}/score", None, None),
    ("GET", "/stats", None, None),
    ("GET", "/follow-ups", None, None),
    ("POST", "/follow-ups/{follow_up}/resolve", {"note": "匿名"}, "follow_up"),
    ("GET", "/events", None, None),
    ("GET", "/events/stream", None, None),
    ("POST", "/subscriptions", SUBSCRIPTION, "subscriptions"),
    ("GET", "/subscriptions", None, None),
    ("DELETE", "/subscriptions/{subscription}", None, "subscriptions"),
    ("GET", "/subscriptions/{subscription}/deliveries", None, None),
]]

PUBLIC = [
    C("anonymous", "GET", "/healthz", 200),
    C("anonymous", "GET", "/readyz", 200),
    C("anonymous", "GET", "/metrics", 200),
    C("anonymous", "GET", "/sites", 200),
    C("anonymous", "GET", "/sites/{station_a}", 200),
    C("anonymous", "GET", "/categories", 200),
    C("anonymous", "GET", "/projects?site_id={station_a}", 200),
    C("anonymous", "GET", "/certificates/{certificate}", 200),
    C("anonymous", "GET", "/api/openapi.json", 200),
    C("anonymous", "GET", "/docs", 200),
    C("anonymous", "GET", "/docs/swagger-ui.css", 200),
    C("anonymous", "GET", "/docs/..%2F..%2F..%2Fgateway%2Fservice.py", 404),  # nothing but Swagger UI's files
    C("anonymous", "GET", "/docs/swagger-initializer.js", 404),
    C("anonymous", "GET", "/", 200),
    C("anonymous", "GET", "/console", 200),
    C("anonymous", "GET", "/console/app.js", 200),
    C("anonymous", "GET", "/console/vendor/chart.umd.js", 200),
    C("anonymous", "GET", "/console/..%2F..%2Fgateway%2Fservice.py", 404),  # nothing but the console's files
    C("anonymous", "GET", "/console/node_modules/chart.js/dist/chart.js", 404),  # npm's tree stays private
    C("anonymous", "GET", "/console/index.html", 404),
    C("anonymous", "GET", "/open311/v2/discovery.json", 200),
    C("anonymous", "GET", "/open311/v2/services.xml", 200),
    C("anonymous", "GET", "/open311/v2/services/health.json", 200),
    C("anonymous", "GET", "/open311/v2/requests.json", 200),
    C("anonymous", "GET", "/open311/v2/requests/{need_open_a}.json", 200),
    C("anonymous", "GET", "/open311/v2/tokens/{need_open_a}.json", 200),
    # Self-service registration makes residents and volunteers, never more.
    C("anonymous", "POST", "/auth/register", 400,
      {"phone": unique_phone("138"), "password": PASSWORD, "name": "想当管理员", "role": "admin"}, "login"),
    C("anonymous", "POST", "/auth/register", 400,
      {"phone": unique_phone("138"), "password": PASSWORD, "name": "想当工作人员", "role": "staff"}, "login"),
    C("anonymous", "POST", "/auth/token", 401, {"phone": unique_phone("137"), "password": PASSWORD}),
]

NON_ADMINS = ("resident_a", "collector_a", "volunteer_a", "staff_a")
OPEN311_REQUEST = ("/open311/v2/requests.json?service_code=health&attribute[station]={station_a}"
                   "&phone=13700000005&description=open311-access-test")

SIGNED_IN = [
    *[C(who, "POST", "/notifications/{need_done}/read", 404)  # not a notification of theirs
      for who in ("spare", "collector_a", "volunteer_a", "staff_a", "admin")],
    # accounts and reference data: admins only, staff included
    C("spare", "POST", "/auth/password", 403, {"old_password": "not-the-password", "new_password": "a-new-password1"},
      "spare_token"),
    *[C(who, "POST", "/accounts", 403, account_body(), "login") for who in NON_ADMINS],
    *[C(who, "POST", "/sites", 403, {"id": "{inst_a}.made" + who.replace("_", ""), "name": "越权站点"}, "sites")
      for who in NON_ADMINS],
    *[C(who, "POST", "/categories", 403, {"code": "made_by_" + who, "name": "越权分类"}, "categories")
      for who in NON_ADMINS],
    *[C(who, "POST", "/open311/keys", 403, {"name": "越权系统"}) for who in NON_ADMINS],
    *[C(who, "GET", "/open311/keys", 403) for who in NON_ADMINS],
    *[C(who, "POST", "/open311/keys/no-such-key/revoke", 403) for who in NON_ADMINS],

    # Open311 filing: an admin-issued api_key, never a bearer token
    *[C(who, "POST", OPEN311_REQUEST, 403, None, "needs_station_a")
      for who in ("anonymous", "resident_a", "collector_a", "volunteer_a", "staff_a", "admin")],
    C("anonymous", "POST", OPEN311_REQUEST + "&api_key=lmk_forged", 403, None, "needs_station_a"),

    # sites: staff change their own site and those inside it only
    *[C(who, "PATCH", "/sites/{station_a}", 403, {"auto_approve": True}, "site_station_a")
      for who in ("resident_a", "collector_a", "volunteer_a", "staff_b")],
    C("staff_station_a", "PATCH", "/sites/{inst_a}", 403, {"auto_approve": True, "name": "越级改名"}, "site_inst_a"),
    C("staff_a", "PATCH", "/sites/qiongshan", 403, {"name": "越级改名"}, "site_district"),

    # the service menu
    *[C(who, "POST", "/projects", 403, {"name": "越权项目", "category": "health", "site_id": "{inst_a}"},
        "projects_inst_a") for who in ("resident_a", "collector_a", "volunteer_a", "staff_b", "staff_station_a")],
    *[C(who, "PATCH", "/projects/{project_a}", 403, {"active": False}, "projects_inst_a")
      for who in ("resident_a", "collector_a", "volunteer_a", "staff_b", "staff_station_a")],

    # the beneficiary registry: collectors and staff of the area only
    *[C(who, "GET", "/sites/{inst_a}/beneficiaries", 403)
      for who in ("resident_a", "volunteer_a", "collector_b", "staff_b", "staff_station_a")],
    C("collector_a", "GET", "/sites/qiongshan/beneficiaries", 403),
    *[C(who, "PUT", "/sites/{station_a}/beneficiaries", 403, {"group": "disabled", "count": 99},
        "beneficiaries_station_a") for who in ("resident_a", "volunteer_a", "collector_b", "staff_b")],
    *[C(who, "POST", "/sites/{station_a}/beneficiaries/entries", 403,
        {"group": "disabled", "name": "越权登记", "phone": "13700001111"}, "beneficiaries_station_a")
      for who in ("resident_a", "volunteer_a", "collector_b", "staff_b")],

    # 点单: who may order, and where
    C("volunteer_a", "POST", "/needs", 403, need_body("{station_a}"), "needs_station_a"),
    C("resident_a", "POST", "/needs", 403, need_body("{station_a}", on_behalf_of=BEHALF), "needs_station_a"),
    C("collector_b", "POST", "/needs", 403, need_body("{station_a}", on_behalf_of=BEHALF), "needs_station_a"),
    C("staff_b", "POST", "/needs", 403, need_body("{station_a}", on_behalf_of=BEHALF), "needs_station_a"),

    # reading a need: only its people and the staff of its site; for anyone else it does not exist
    C("resident_b", "GET", "/needs/{need_open_a}", 404),
    C("collector_a", "GET", "/needs/{need_open_a}", 404),
    C("collector_b", "GET", "/needs/{need_collected}", 404),
    C("volunteer_b", "GET", "/needs/{need_assigned}", 404),
    C("volunteer_a", "GET", "/needs/{need_offered}", 404),  # offered is not assigned
    C("staff_b", "GET", "/needs/{need_open_a}", 404),
    C("staff_a", "GET", "/needs/{need_open_b}", 404),

    # approve and reject: staff of an enclosing site
    *[C(who, "POST", "/needs/{need_open_a}/approve", 403, None, "need_open_a")
      for who in ("resident_a", "collector_a", "volunteer_a")],
    C("staff_b", "POST", "/needs/{need_open_a}/approve", 404, None, "need_open_a"),
    C("staff_a", "POST", "/needs/{need_open_b}/approve", 404, None, "need_open_b"),
    *[C(who, "POST", "/needs/{need_open_a}/reject", 403, {"reason": "越权"}, "need_open_a")
      for who in ("resident_a", "collector_a", "volunteer_a")],
    C("staff_b", "POST", "/needs/{need_open_a}/reject", 404, {"reason": "越权"}, "need_open_a"),
    C("staff_a", "POST", "/needs/{need_open_b}/reject", 404, {"reason": "越权"}, "need_open_b"),

    # cancel: the owner, the registering collector, staff of the site
    C("resident_b", "POST", "/needs/{need_open_a}/cancel", 404, {"reason": "越权"}, "need_open_a"),
    C("collector_a", "POST", "/needs/{need_open_a}/cancel", 404, {"reason": "越权"}, "need_open_a"),
    C("collector_b", "POST", "/needs/{need_collected}/cancel", 404, {"reason": "越权"}, "need_collected"),
    C("volunteer_b", "POST", "/needs/{need_open_a}/cancel", 404, {"reason": "越权"}, "need_open_a"),
    C("volunteer_a", "POST", "/needs/{need_assigned}/cancel", 403, {"reason": "不想去了"}, "need_assigned"),
    C("staff_b", "POST", "/needs/{need_open_a}/cancel", 404, {"reason": "越权"}, "need_open_a"),

    # 派单: the order and manual dispatch
    C("resident_b", "GET", "/needs/{need_offered}/order", 404),
    C("collector_b", "GET", "/needs/{need_offered}/order", 404),
    C("volunteer_b", "GET", "/needs/{need_offered}/order", 404),
    C("volunteer_a", "GET", "/needs/{need_offered}/order", 404),
    C("staff_b", "GET", "/needs/{need_offered}/order", 404),
    *[C(who, "POST", "/needs/{need_offered}/dispatch", 403, {"volunteer_id": "{vb}"}, "need_offered")
      for who in ("resident_a", "collector_a", "volunteer_a")],
    C("staff_b", "POST", "/needs/{need_offered}/dispatch", 404, {"volunteer_id": "{vb}"}, "need_offered"),

    # 接单: offers are the offered volunteer's
    *[C(who, "GET", "/offers", 403) for who in ("resident_a", "collector_a", "staff_a", "admin")],
    C("volunteer_b", "POST", "/offers/{offer}/accept", 404, None, "need_offered"),
    C("volunteer_b", "POST", "/offers/{offer}/decline", 404, {"reason": "替别人拒绝"}, "need_offered"),
    *[C(who, "POST", "/offers/{offer}/accept", 403, None, "need_offered")
      for who in ("resident_a", "collector_a", "staff_a", "admin")],
    *[C(who, "POST", "/offers/{offer}/decline", 403, None, "need_offered")
      for who in ("resident_a", "collector_a", "staff_a", "admin")],

    # volunteers' profiles
    *[C(who, "POST", "/volunteers", 403, VOLUNTEER_BODY) for who in ("resident_a", "collector_a", "staff_a", "admin")],
    *[C(who, "GET", "/volunteers/me", 403) for who in ("resident_a", "collector_a", "staff_a", "admin")],
    C("resident_a", "PATCH", "/volunteers/{va}", 403, {"name": "冒名"}, "volunteer_a"),
    C("collector_a", "PATCH", "/volunteers/{va}", 403, {"name": "冒名"}, "volunteer_a"),
    C("volunteer_b", "PATCH", "/volunteers/{va}", 403, {"name": "冒名", "site_id": "{station_b}"}, "volunteer_a"),
    C("volunteer_a", "PATCH", "/volunteers/{va}", 403, {"status": "suspended"}, "volunteer_a"),
    C("staff_b", "PATCH", "/volunteers/{va}", 403, {"status": "suspended"}, "volunteer_a"),

    # teams
    *[C(who, "POST", "/teams", 403, {"name": "越权服务队", "type": "social", "site_id": "{station_a}"}, "teams")
      for who in ("resident_a", "collector_a")],
    C("staff_b", "POST", "/teams", 403,
      {"name": "越权服务队", "type": "social", "site_id": "{station_a}", "leader_volunteer_id": "{va}"}, "teams"),
    C("volunteer_a", "POST", "/teams", 403,
      {"name": "替别人建队", "type": "social", "site_id": "{station_a}", "leader_volunteer_id": "{vb}"}, "teams"),
    *[C(who, "POST", "/teams/{team_b}/members", 403, {"volunteer_id": "{va}"}, "team_b")
      for who in ("resident_b", "collector_b", "volunteer_a", "staff_a")],

    # service: the assigned volunteer only
    C("volunteer_b", "POST", "/needs/{need_assigned}/check-in", 404, {}, "need_assigned"),
    C("volunteer_b", "POST", "/needs/{need_assigned}/check-out", 404, CHECK_OUT, "need_assigned"),
    *[C(who, "POST", "/needs/{need_assigned}/check-in", 403, {}, "need_assigned")
      for who in ("resident_a", "collector_a", "staff_a", "admin")],
    *[C(who, "POST", "/needs/{need_assigned}/check-out", 403, CHECK_OUT, "need_assigned")
      for who in ("resident_a", "collector_a", "staff_a", "admin")],
    *[C(who, "GET", "/assignments", 403) for who in ("resident_a", "collector_a", "staff_a", "admin")],

    # hours, certificates, the ledger's reviews
    *[C(who, "GET", "/volunteers/{va}/hours", 403) for who in ("volunteer_b", "staff_b", "resident_a", "collector_a")],
    *[C(who, "GET", "/volunteers/{va}/certificate", 403)
      for who in ("volunteer_b", "staff_b", "resident_a", "collector_a")],
    *[C(who, "POST", "/volunteers/{va}/hours/requests", 403, HOURS_BODY, "hours_requests_va")
      for who in ("volunteer_b", "resident_a", "collector_a", "staff_a", "admin")],
    *[C(who, "GET", "/hours-requests", 403) for who in ("resident_a", "collector_a")],
    C("staff_b", "POST", "/hours-requests/{hours_request}/approve", 404, None, "hours_request"),
    C("staff_b", "POST", "/hours-requests/{hours_request}/refuse", 404, {"note": "越权"}, "hours_request"),
    *[C(who, "POST", "/hours-requests/{hours_request}/approve", 403, None, "hours_request")
      for who in ("volunteer_a", "resident_a", "collector_a")],
    *[C(who, "GET", "/service-records", 403) for who in ("resident_a", "collector_a", "volunteer_a")],
    C("staff_b", "POST", "/service-records/{record}/approve", 404, None, "record"),
    C("staff_b", "POST", "/service-records/{record}/refuse", 404, {"note": "越权"}, "record"),
    *[C(who, "POST", "/service-records/{record}/approve", 403, None, "record")
      for who in ("volunteer_a", "resident_a", "collector_a")],

    # 评单: the need's resident or collector only
    C("resident_b", "POST", "/needs/{need_done}/rating", 404, {"stars": 5}, "need_done"),
    C("collector_b", "POST", "/needs/{need_done}/rating", 404, {"stars": 5}, "need_done"),
    *[C(who, "POST", "/needs/{need_done}/rating", 403, {"stars": 5}, "need_done")
      for who in ("volunteer_a", "staff_a", "admin")],

    # the center's figures and follow-ups
    *[C(who, "GET", "/stats", 403) for who in ("resident_a", "collector_a", "volunteer_a")],
    C("staff_b", "GET", "/stats?site_id={inst_a}", 403),
    C("staff_a", "GET", "/stats?site_id=qiongshan", 403),
    C("staff_station_a", "GET", "/stats?site_id={inst_a}", 403),
    *[C(who, "GET", "/follow-ups", 403) for who in ("resident_a", "collector_a", "volunteer_a")],
    C("staff_b", "POST", "/follow-ups/{follow_up}/resolve", 404, {"note": "越权"}, "follow_up"),
    *[C(who, "POST", "/follow-ups/{follow_up}/resolve", 403, {"note": "越权"}, "follow_up")
      for who in ("resident_a", "collector_a", "volunteer_a")],

    # the event log and webhooks
    *[C(who, "GET", path, 403) for path in ("/events", "/events/stream")
      for who in ("resident_a", "collector_a", "volunteer_a")],
    *[C(who, "GET", path + "?site_id={inst_a}", 403) for path in ("/events", "/events/stream")
      for who in ("staff_b", "staff_station_a")],
    *[C(who, "POST", "/subscriptions", 403, SUBSCRIPTION, "subscriptions") for who in NON_ADMINS],
    *[C(who, "GET", "/subscriptions", 403) for who in NON_ADMINS],
    *[C(who, "DELETE", "/subscriptions/{subscription}", 403, None, "subscriptions") for who in NON_ADMINS],
    *[C(who, "GET", "/subscriptions/{subscription}/deliveries", 403) for who in NON_ADMINS],
]

CASES = ANONYMOUS + PUBLIC + SIGNED_IN

# The rightful callers get in: without these, a refusal could be a broken world.
ALLOWED = [
    C("admin", "GET", "/open311/keys", 200),
    C("resident_a", "GET", "/needs/{need_open_a}", 200),
    C("collector_a", "GET", "/needs/{need_collected}", 200),
    C("volunteer_a", "GET", "/needs/{need_assigned}", 200),
    C("staff_a", "GET", "/needs/{need_open_a}", 200),
    C("staff_station_a", "GET", "/needs/{need_open_a}", 200),
    C("admin", "GET", "/needs/{need_open_b}", 200),
    C("resident_a", "GET", "/needs/{need_offered}/order", 200),
    C("staff_a", "GET", "/needs/{need_offered}/order", 200),
    C("volunteer_a", "GET", "/volunteers/{va}/hours", 200),
    C("staff_a", "GET", "/volunteers/{va}/hours", 200),
    C("staff_station_a", "GET", "/volunteers/{va}/hours", 200),
    C("volunteer_b", "GET", "/volunteers/{va}", 200),
    C("resident_b", "GET", "/teams/{team_b}", 200),
    C("staff_a", "GET", "/stats?site_id={inst_a}", 200),
    C("staff_station_a", "GET", "/stats", 200),
    C("collector_a", "GET", "/sites/{inst_a}/beneficiaries", 200),
    C("staff_a", "GET", "/sites/{inst_a}/beneficiaries", 200),
    C("volunteer_a", "GET", "/hours-requests", 200),
    C("staff_a", "GET", "/follow-ups", 200),
    C("resident_b", "GET", "/ratings?volunteer_id={va}", 200),
    C("spare", "GET", "/me", 200),
    C("spare", "GET", "/notifications", 200),
    C("staff_a", "GET", "/events?site_id={inst_a}", 200),
    C("admin", "GET", "/subscriptions/{subscription}/deliveries", 200),
]


# --------------------------------------------------------------------------- the world

def local_yesterday():
    return (datetime.now(timezone.utc) + timedelta(hours=8)).date() - timedelta(days=1)


class World:
    def __init__(self, stack, admin, anonymous):
        self.root = Client(stack["base"])
        self.clients = {"anonymous": anonymous, "admin": admin}
        self.ids = {"yesterday": local_yesterday().isoformat()}
        self.admin, self.anonymous = admin, anonymous

    def __getitem__(self, name):
        return self.clients[name]

    def client(self, who, path):
        if at_root(path):
            return self.root if who == "anonymous" else Client(self.root.base, self.clients[who].token)
        return self.clients[who]

    def fill(self, value, ids=None):
        if isinstance(value, str):
            return value.format(**(ids or self.ids))
        if isinstance(value, dict):
            return {key: self.fill(item, ids) for key, item in value.items()}
        if isinstance(value, list):
            return [self.fill(item, ids) for item in value]
        return value

    def call(self, case, ids=None):
        path, body = self.fill(case.path, ids), self.fill(case.body, ids)
        kwargs = {} if body is None else {"json": body}
        return self.client(case.who, path).request(case.method, path, **kwargs), path, body

    # ---- building it ----

    def account(self, role, site_id, name):
        phone = unique_phone("138")
        response = self.admin.post("/accounts", json={"phone": phone, "password": PASSWORD, "name": name,
                                                      "role": role, "site_id": site_id})
        assert response.status_code == 201, response.text
        return self.anonymous.login(phone, PASSWORD)

    def volunteer(self, site_id, name):
        client, phone = register(self.anonymous, "volunteer", name)
        response = client.post("/volunteers", json={"name": name, "skills": ["health"], "site_id": site_id,
                                                    "lat": 19.70, "lon": 110.30, "phone": phone})
        assert response.status_code == 201, response.text
        return client, response.json()["id"]

    def ok(self, response, status=200):
        assert response.status_code == status, response.text
        return response.json()

    def assign(self, need_id):
        """Approve a need of station A and have volunteer A accept its offer."""
        self.ok(self["staff_a"].post(f"/needs/{need_id}/approve"))
        offer = pending_offer(self["volunteer_a"], need_id)
        self.ok(self["volunteer_a"].post(f"/offers/{offer['id']}/accept"))
        wait_status(self.admin, need_id, "assigned")

    def build(self):
        tag = uuid.uuid4().hex[:6]
        ids = self.ids
        ids["inst_a"], ids["inst_b"] = f"qiongshan.acca{tag}", f"qiongshan.accb{tag}"
        ids["station_a"], ids["station_b"] = ids["inst_a"] + ".v", ids["inst_b"] + ".v"
        for site_id in (ids["inst_a"], ids["inst_b"], ids["station_a"], ids["station_b"]):
            # No coordinates: Open311 must never pick these as the station nearest someone.
            self.ok(self.admin.post("/sites", json={"id": site_id, "name": "访问测试" + site_id.rsplit(".", 1)[-1]}),
                    201)

        c = self.clients
        c["staff_a"] = self.account("staff", ids["inst_a"], "A所工作人员")
        c["staff_b"] = self.account("staff", ids["inst_b"], "B所工作人员")
        c["staff_station_a"] = self.account("staff", ids["station_a"], "A站工作人员")
        c["collector_a"] = self.account("collector", ids["inst_a"], "A所快递小哥")
        c["collector_b"] = self.account("collector", ids["inst_b"], "B所快递小哥")
        c["resident_a"], _ = register(self.anonymous, "resident", "A站居民")
        c["resident_b"], _ = register(self.anonymous, "resident", "B站居民")
        c["spare"], _ = register(self.anonymous, "resident", "备用居民")
        c["volunteer_a"], ids["va"] = self.volunteer(ids["station_a"], "A站志愿者")
        c["volunteer_b"], ids["vb"] = self.volunteer(ids["station_b"], "B站志愿者")

        # A completed service, rated one star: a follow-up opens for station A.
        ids["need_done"] = need = submit(c["resident_a"], ids["station_a"])["id"]
        self.assign(need)
        self.ok(c["volunteer_a"].post(f"/needs/{need}/check-in", json={}))
        wait_status(self.admin, need, "in_service")
        self.ok(c["volunteer_a"].post(f"/needs/{need}/check-out",
                                      json={"summary": "量了血压", "beneficiaries_served": 1}))
        wait_status(self.admin, need, "completed")
        wait_for(lambda: c["resident_a"].post(f"/needs/{need}/rating", json={"stars": 1, "tags": ["late"]})
                 .status_code == 201, 15, interval=0.2, message="the rating")
        follow_up = wait_for(lambda: next((f for f in self.admin.get(
            "/follow-ups", params={"status": "all", "page_size": 100}).json().get("items", ())
            if f["need_id"] == need), None), 15, interval=0.2, message="the follow-up")
        ids["follow_up"] = follow_up["id"]
        records = self.ok(self.admin.get("/service-records", params={"volunteer_id": ids["va"]}))["items"]
        ids["record"] = next(r["id"] for r in records if r["need_id"] == need)

        # Assigned, not started; then one with an offer waiting for volunteer A.
        ids["need_assigned"] = submit(c["resident_a"], ids["station_a"], title="陪老人去医院")["id"]
        self.assign(ids["need_assigned"])
        ids["need_offered"] = submit(c["resident_a"], ids["station_a"], title="送药上门")["id"]
        self.ok(c["staff_a"].post(f"/needs/{ids['need_offered']}/approve"))
        ids["offer"] = pending_offer(c["volunteer_a"], ids["need_offered"])["id"]

        # Waiting for approval: one in each branch, and one a collector registered.
        ids["need_open_a"] = submit(c["resident_a"], ids["station_a"], title="修理轮椅", address="本村东头5号",
                                    lat=DOOR[0], lon=DOOR[1])["id"]
        ids["need_open_b"] = submit(c["resident_b"], ids["station_b"], title="修理轮椅")["id"]
        ids["need_collected"] = self.ok(c["collector_a"].post("/needs", json=need_body(
            ids["station_a"], title="代登记：读报", on_behalf_of=BEHALF)), 201)["id"]

        ids["team_b"] = self.ok(c["volunteer_b"].post("/teams", json={
            "name": "B站服务队", "type": "social", "site_id": ids["station_b"]}), 201)["id"]
        ids["project_a"] = self.ok(c["staff_a"].post("/projects", json={
            "name": "A所健康讲座", "category": "health", "site_id": ids["inst_a"]}), 201)["id"]
        ids["hours_request"] = self.ok(c["volunteer_a"].post(f"/volunteers/{ids['va']}/hours/requests", json={
            "kind": "backfill", "hours": 1.5, "service_date": ids["yesterday"], "reason": "纸质签到补录"}), 201)["id"]
        ids["certificate"] = self.ok(c["volunteer_a"].get(f"/volunteers/{ids['va']}/certificate"))[
            "certificate_number"]
        self.ok(c["staff_a"].request("PUT", f"/sites/{ids['station_a']}/beneficiaries",
                                     json={"group": "elderly_alone", "count": 7}))
        # A webhook to nowhere, switched off at once: something real to be refused on.
        ids["subscription"] = self.ok(self.admin.post("/subscriptions", json=dict(
            SUBSCRIPTION, site_id=ids["station_b"])), 201)["id"]
        self.ok(self.admin.request("DELETE", f"/subscriptions/{ids['subscription']}"))
        return self

    # ---- what a refused write must leave as it was ----

    def probe(self, name, body):
        ids, admin = self.ids, self.admin
        if name.startswith("need_"):
            need = self.ok(admin.get(f"/needs/{ids[name]}"))
            state = (need["status"], len(need["history"]), need["volunteer_id"])
            if name == "need_offered":
                order = self.ok(admin.get(f"/needs/{ids[name]}/order"))
                state += (order["status"], sorted((o["id"], o["status"]) for o in order["offers"]))
            if name == "need_done":
                ratings = self.ok(admin.get("/ratings", params={"volunteer_id": ids["va"]}))["items"]
                state += (sorted((r["id"], r["stars"]) for r in ratings if r["need_id"] == ids[name]),)
            return state
        if name == "needs_station_a":
            return self.ok(admin.get("/needs", params={"site_id": ids["station_a"]}))["total"]
        if name == "login":  # the account asked for does not exist, before and after
            return self.anonymous.post("/auth/token", json={"phone": body["phone"],
                                                            "password": body["password"]}).status_code
        if name == "spare_token":
            return self["spare"].get("/me").status_code
        if name == "sites":
            return sorted(site["id"] for site in self.ok(self.anonymous.get("/sites"))["items"])
        if name.startswith("site_"):
            site_id = {"site_station_a": ids["station_a"], "site_inst_a": ids["inst_a"],
                       "site_district": "qiongshan"}[name]
            return self.ok(self.anonymous.get(f"/sites/{site_id}"))
        if name == "categories":
            return self.ok(self.anonymous.get("/categories"))["items"]
        if name == "projects_inst_a":
            return self.ok(self.anonymous.get("/projects", params={"site_id": ids["inst_a"]}))["items"]
        if name == "beneficiaries_station_a":
            return self.ok(admin.get(f"/sites/{ids['station_a']}/beneficiaries"))
        if name == "volunteer_a":
            return self.ok(admin.get(f"/volunteers/{ids['va']}"))
        if name == "subscriptions":
            return self.ok(admin.get("/subscriptions"))["items"]
        if name == "teams":
            return sorted(team["id"] for team in self.ok(admin.get("/teams"))["items"])
        if name == "team_b":
            return self.ok(admin.get(f"/teams/{ids['team_b']}"))["members"]
        if name == "hours_requests_va":
            return sorted(r["id"] for r in self.ok(admin.get("/hours-requests"))["items"]
                          if r["volunteer_id"] == ids["va"])
        if name == "hours_request":
            return next(r for r in self.ok(admin.get("/hours-requests"))["items"] if r["id"] == ids[name])
        if name == "record":
            return next(r for r in self.ok(admin.get("/service-records", params={"volunteer_id": ids["va"]}))["items"]
                        if r["id"] == ids[name])
        if name == "follow_up":
            return next(f for f in self.ok(admin.get("/follow-ups", params={"status": "all", "page_size": 100}))[
                "items"] if f["id"] == ids[name])
        raise KeyError(f"no probe {name}")


@pytest.fixture(scope="module")
def world(stack, admin, anonymous):
    return World(stack, admin, anonymous).build()


# --------------------------------------------------------------------------- the tests

@pytest.mark.parametrize("case", [case.param() for case in CASES])
def test_refused(world, case):
    before = world.probe(case.probe, world.fill(case.body)) if case.probe else None
    response, path, body = world.call(case)
    assert response.status_code == case.expected, (
        f"{case.who} ({WHO[case.who]}) {case.method} {path} answered {response.status_code}, "
        f"not {case.expected}: {response.text[:300]}")
    if case.path.startswith(OPEN311) and case.expected >= 400:
        assert response.json()[0]["code"] == case.expected, response.text  # Open311's own error list
    elif case.expected in ERROR_CODES:
        assert response.json()["error"]["code"] == ERROR_CODES[case.expected], response.text
    if case.probe:
        assert world.probe(case.probe, body) == before, f"{case.who} {case.method} {path} changed {case.probe}"
    if case.expected == 404:
        assert_answers_as_if_missing(world, case, response)


def assert_answers_as_if_missing(world, case, response):
    """Hidden means: the same answer as for ids that do not exist, word for word."""
    names = re.findall(r"\{(\w+)\}", case.path.split("?")[0])
    if not names:
        return
    ghosts = {name: str(uuid.uuid4()) for name in names}
    missing, _, _ = world.call(case, dict(world.ids, **ghosts))

    def said(answer, ids):
        message = answer.json()["error"]["message"]
        for name in names:
            message = message.replace(ids[name], "{" + name + "}")
        return answer.status_code, answer.json()["error"]["code"], message

    assert said(response, world.ids) == said(missing, ghosts)


@pytest.mark.parametrize("case", ALLOWED, ids=[case.id for case in ALLOWED])
def test_the_rightful_caller_gets_in(world, case):
    response, path, _ = world.call(case)
    assert response.status_code == case.expected, f"{case.who} {case.method} {path}: {response.text[:300]}"


def ids_of(client, path, **params):
    response = client.get(path, params=dict(params, page_size=100) if path == "/needs" else params)
    assert response.status_code == 200, response.text
    return {item.get("id") for item in response.json()["items"]}


def test_lists_show_only_what_is_theirs(world):
    ids = world.ids
    branch_a = {ids[n] for n in ("need_done", "need_assigned", "need_offered", "need_open_a", "need_collected")}
    for who in ("resident_b", "collector_b", "volunteer_b", "staff_b"):
        assert not ids_of(world[who], "/needs") & branch_a, who
    assert world["staff_b"].get("/needs", params={"site_id": ids["station_a"]}).json()["total"] == 0
    assert ids_of(world["resident_a"], "/needs") >= branch_a - {ids["need_collected"]}
    assert ids_of(world["collector_a"], "/needs") == {ids["need_collected"]}
    assert ids_of(world["volunteer_a"], "/needs") == {ids["need_done"], ids["need_assigned"]}
    assert ids_of(world["staff_a"], "/needs", site_id=ids["station_a"]) == branch_a

    assert ids["hours_request"] not in ids_of(world["staff_b"], "/hours-requests")
    assert ids["hours_request"] not in ids_of(world["volunteer_b"], "/hours-requests")
    assert ids["hours_request"] in ids_of(world["staff_a"], "/hours-requests")
    assert ids["record"] not in ids_of(world["staff_b"], "/service-records")
    assert ids["record"] in ids_of(world["staff_station_a"], "/service-records")
    assert ids["follow_up"] not in ids_of(world["staff_b"], "/follow-ups", status="all")
    assert ids["follow_up"] in ids_of(world["staff_station_a"], "/follow-ups", status="all")
    assert ids["offer"] not in ids_of(world["volunteer_b"], "/offers")
    assert not {item["need_id"] for item in world["volunteer_b"].get("/assignments").json()["items"]} & branch_a


def test_private_parts_are_masked(world):
    ids = world.ids
    for who in ("volunteer_b", "resident_b", "staff_b", "collector_a"):
        profile = world[who].get(f"/volunteers/{ids['va']}").json()
        assert "*" in profile["phone"] and profile["lat"] is None and profile["lon"] is None, who
    assert "*" not in world["staff_a"].get(f"/volunteers/{ids['va']}").json()["phone"]
    # The volunteer saw the resident's contact while serving; once the need is done it is masked again.
    assert "*" in world["volunteer_a"].get(f"/needs/{ids['need_done']}").json()["contact_phone"]
    assert world["volunteer_a"].get(f"/needs/{ids['need_assigned']}").json()["contact_phone"] == "13700000001"
    # Collectors see the registry's entries masked; the station's staff see them whole.
    entry = {"group": "disabled", "name": "登记测试", "phone": "13700004444"}
    assert world["staff_station_a"].post(f"/sites/{ids['station_a']}/beneficiaries/entries", json=entry
                                         ).status_code == 201
    seen = {e["phone"] for e in world["collector_a"].get(f"/sites/{ids['inst_a']}/beneficiaries").json()["entries"]}
    assert "137****4444" in seen and "13700004444" not in seen


def test_rating_a_need_not_yet_completed_is_hidden_from_strangers(world):
    before = world.probe("need_assigned", None)
    response = world["resident_b"].post(f"/needs/{world.ids['need_assigned']}/rating", json={"stars": 1})
    assert world.probe("need_assigned", None) == before
    assert response.status_code == 404, response.text


def test_open311_lets_no_contact_out(world):
    response = world.root.get(f"/open311/v2/requests/{world.ids['need_open_a']}.json")
    assert response.status_code == 200, response.text
    assert "13700000001" not in response.text and "本村东头5号" not in response.text
    assert "A站居民" not in response.text  # the resident's name


def test_open311_shows_the_village_not_the_door(world):
    request = world.root.get(f"/open311/v2/requests/{world.ids['need_open_a']}.json").json()[0]
    assert request["lat"] in (None, round(DOOR[0], 2)) and request["long"] in (None, round(DOOR[1], 2)), request


def test_every_route_has_access_rules_and_cases():
    """A route added to the gateway without a row in docs/access.md, or without a
    case here for anonymous callers and for each refused cell, fails this."""
    routes, problems = gateway_routes()
    documented, duplicates = documented_rules()
    problems += [f"{key}: two rows in docs/access.md" for key in duplicates]
    problems += [f"{key}: served by the gateway, no row in docs/access.md"
                 for key in sorted(set(routes) - set(documented))]
    problems += [f"{key}: a row in docs/access.md, not served by the gateway"
                 for key in sorted(set(documented) - set(routes))]

    url_map = Map([Rule(declared["path"], methods=[declared["method"]], endpoint=key)
                   for key, declared in routes.items()]).bind("lastmile.test")
    tried, covered = set(), set()
    for case in CASES + ALLOWED:
        assert case.who in WHO, case.who
        try:
            key, _ = url_map.match(case.full_path(), method=case.method)
        except HTTPException:
            problems.append(f"case {case.id}: no such route")
            continue
        covered.add(key)
        if case in CASES:
            tried.add((key, WHO[case.who], case.expected))

    for key, declared in sorted(routes.items()):
        if key not in covered:
            problems.append(f"{key}: no case in tests/e2e/test_access.py")
        row = documented.get(key)
        if row is None:
            continue
        if len([role for role in ROLES if row.get(role)]) != len(ROLES) or not row.get("note"):
            problems.append(f"{key}: its row needs a cell for each of {', '.join(ROLES)} and a note")
            continue
        if declared["public"]:
            if any(401 in refusals_in(row[role]) for role in ROLES):
                problems.append(f"{key}: public, so no cell is '401'")
        elif row["anonymous"] != "401":
            problems.append(f"{key}: not public, so anonymous is '401'")
        if declared["roles"] is not None:
            for role in ROLES[1:]:
                if role not in declared["roles"] and row[role] != "refused 403":
                    problems.append(f"{key}: the gateway lets only {declared['roles']} in; {role} is 'refused 403'")
        for role in ROLES:
            for code in sorted(refusals_in(row[role])):
                if (key, role, code) not in tried:
                    problems.append(f"{key}: no case tries {role} expecting {code}")
    assert not problems, "\n".join(problems)
