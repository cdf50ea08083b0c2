"""The gateway describes itself: an OpenAPI 3.0.3 document made from its routes
(the ``lastmile_route`` of each entrypoint: method, path, who may call it, and the
marshmallow schemas of its body, query and answer, the same ones the gateway and
the services validate with), and Swagger UI served from the gateway itself, so
that ``/docs`` needs no network beyond the gateway."""
import base64
import hashlib
import os
import re
from functools import lru_cache
from pathlib import Path

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.ext.marshmallow.common import resolve_schema_cls
from eventlet.wsgi import MAX_REQUEST_LINE
from swagger_ui_bundle import swagger_ui_path
from werkzeug.security import safe_join
from werkzeug.wrappers import Response

from gateway import schemas, webconsole
from gateway.http import API, MAX_BODY_BYTES
from lastmile.errors import NotFound

TITLE = "Lastmile"
VERSION = "1.0.0"
DESCRIPTION = (
    "The public HTTP contract of Lastmile (DESIGN.md §4): 群众点单 → 政府派单 → 志愿者接单 → 群众评单.\n\n"
    f"JSON in and out under `{API}`; bearer tokens from `POST {API}/auth/token`. Every error answers "
    "`{\"error\": {\"code\", \"message\", \"details\"}}`: 400 invalid body or fields (details name each), "
    "401 no or bad token, 403 not allowed, 404 unknown (or not yours to see), 409 a transition the state "
    f"does not allow, 413 a body over {MAX_BODY_BYTES // 1024} KiB, 414 a URL over "
    f"{MAX_REQUEST_LINE // 1024} KiB, 415 a body that is not JSON, 429 too "
    "many requests (see `Retry-After`), 503 a service is not running, 504 it did not answer in time."
)

# Each error status: its component name and what it means.
ERRORS = {
    400: ("BadRequest", "Invalid body, query or fields; `details` names each bad field."),
    401: ("Unauthorized", "No bearer token, or a bad, expired or revoked one."),
    403: ("Forbidden", "The caller's role, site or ownership does not allow this."),
    404: ("NotFound", "Unknown, or not the caller's to see."),
    409: ("Conflict", "A transition the current state does not allow, or a duplicate."),
    413: ("PayloadTooLarge", f"The body is over {MAX_BODY_BYTES} bytes."),
    414: ("UriTooLong", f"The request line (method, URL with its query) is over {MAX_REQUEST_LINE} bytes."),
    415: ("UnsupportedMediaType", "The body is not application/json."),
    429: ("TooManyRequests", "Over the request-rate limit (or, for a login, five failures in a row)."),
    503: ("ServiceUnavailable", "A service behind the gateway, or the message broker, is not running."),
    504: ("GatewayTimeout", "A service behind the gateway did not answer in time."),
}

TAGS = [
    ("operations", "Health, readiness, metrics and this documentation."),
    ("accounts", "Registration, tokens, passwords and accounts."),
    ("sites", "The site tree, categories, the service menu (projects) and the beneficiary registry."),
    ("needs", "群众点单: needs, their review and their history."),
    ("dispatch", "政府派单 and 志愿者接单: orders and offers."),
    ("volunteers", "Volunteers, teams, check-in and check-out, hours and certificates."),
    ("ratings", "群众评单: ratings, scores, follow-ups and the center's figures."),
    ("events", "The event log, its live stream and webhooks, for other systems."),
    ("notifications", "What each person is told in the app and by SMS, and their quiet hours."),
    ("open311", "Open311 GeoReport v2, for any Open311 client."),
    ("console", "The web console for residents, volunteers and staff, and its files."),
]
# The first pattern that matches a route's path names its tag.
TAG_OF_PATH = [
    (r"^/open311/|/open311/", "open311"),
    (r"^/$|^/console\b", "console"),
    (r"^/(healthz|readyz|metrics|docs)\b|^/api/openapi", "operations"),
    (rf"^{API}/(auth|accounts|me)\b", "accounts"),
    (r"/(sites|categories|projects)\b", "sites"),
    (r"/needs/<[^>]+>/(order|dispatch)$|/offers\b", "dispatch"),
    (r"/needs/<[^>]+>/rating$|/ratings\b|/score$|/follow-ups\b|/stats\b", "ratings"),
    (r"/needs/<[^>]+>/check-(in|out)$|/(volunteers|teams|assignments|hours-requests|service-records|certificates)\b",
     "volunteers"),
    (r"/(events|subscriptions)\b", "events"),
    (r"/needs\b", "needs"),
]

# Routes that answer without a call to a service behind the gateway (no 503/504).
LOCAL_ROUTES = {"healthz", "metrics", "readyz", "register", "token", "change_password", "me", "issue_api_key",
                "list_api_keys", "revoke_api_key",
                "openapi_document", "docs", "docs_asset", "list_events", "create_subscription", "list_subscriptions",
                "delete_subscription", "list_deliveries", "home", "console", "console_asset"}
# Routes that answer server-sent events.
STREAMS = {"stream_events"}
# Path parameters that take only some values (any other answers 404).
PATH_ENUMS = {"decision": ("approve", "refuse")}
EXTRA_PARAMETERS = {
    "submit_need": [{
        "in": "header", "name": "Idempotency-Key", "required": False,
        "description": "A retry with the same key and body answers 200 with the need the first request created; "
                       "the same key with another body answers 409.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 128},
    }],
}
OPTIONAL_DATE_TIME = {"oneOf": [{"type": "string", "format": "date-time"}, {"type": "string", "maxLength": 0}]}
OPEN311_PARAMETERS = {
    "open311_requests": [
        ("service_request_id", {"type": "string"}, "Ids separated by commas; the other filters are then ignored."),
        ("service_code", {"type": "string"}, "A category code."),
        ("start_date", OPTIONAL_DATE_TIME, "Default (or empty): 90 days before end_date."),
        ("end_date", OPTIONAL_DATE_TIME, "Default (or empty): now."),
        ("status", {"type": "string"}, "open, closed, or both separated by a comma."),
    ],
}
ASSET_TYPES = {".css": "text/css", ".js": "application/javascript", ".png": "image/png", ".map": "application/json"}
# The bundle's own start page and initializer point at a public demo; ours replace them.
HIDDEN_ASSETS = {"swagger-initializer.js"}
RULE_PART = re.compile(r"<(?:(?P<converter>[a-zA-Z_]\w*)(?:\((?P<args>[^)]*)\))?:)?(?P<name>[a-zA-Z_]\w*)>")


def schema_name(schema):
    """Component names: the class name less ``Schema``; a PATCH body that makes
    every field optional is ``…Partial``."""
    name = resolve_schema_cls(schema).__name__
    if name.endswith("Schema") and name != "Schema":
        name = name[: -len("Schema")]
    if getattr(schema, "partial", False) is True:
        name += "Partial"
    return name


def routes(service_cls):
    """``(name, route, handler)`` of every route the service declares, by path and method."""
    found = []
    for name in dir(service_cls):
        member = getattr(service_cls, name, None)
        meta = getattr(member, "lastmile_route", None)
        if isinstance(meta, dict):
            found.append((name, meta, member))
    return sorted(found, key=lambda r: (r[1]["path"], r[1]["method"]))


def openapi_path(rule):
    """A werkzeug rule as an OpenAPI path and its path parameters:
    ``/needs/<need_id>`` → ``/needs/{need_id}``."""
    parameters = []

    def replace(match):
        name, converter, args = match["name"], match["converter"] or "default", match["args"]
        if converter == "any":
            schema = {"type": "string", "enum": [a.strip().strip("'\"") for a in args.split(",")]}
        elif converter == "int":
            schema = {"type": "integer", "minimum": 0}
        elif converter == "path":
            schema = {"type": "string", "pattern": "^.+$"}
        elif name in PATH_ENUMS:
            schema = {"type": "string", "enum": list(PATH_ENUMS[name])}
        else:
            schema = {"type": "string", "pattern": "^[^/]+$"}
        parameters.append({"in": "path", "name": name, "required": True, "schema": schema})
        return "{" + name + "}"

    return RULE_PART.sub(replace, rule), parameters


def tag_of(path):
    for pattern, tag in TAG_OF_PATH:
        if re.search(pattern, path):
            return tag
    return path.removeprefix(API).strip("/").split("/")[0] or "operations"


# Summaries of routes whose handler has no docstring to give one.
SUMMARIES = {
    "healthz": "The gateway process is up.",
    "register": "Register as a resident or a volunteer.",
    "token": "A bearer token for a phone and password.",
    "me": "The caller's account.",
    "create_account": "An account for a collector, staff or an admin.",
    "submit_need": "Order a service (点单); honours Idempotency-Key.",
}


def _summary(name, handler):
    doc = (handler.__doc__ or "").strip()
    if doc:
        return doc.split("\n\n")[0].replace("\n", " ")
    return SUMMARIES.get(name) or name.replace("_", " ").capitalize()


def _who(meta):
    if meta["public"]:
        return "Anyone (no token)."
    if meta["roles"] is None:
        return "Any signed-in caller; the owning service decides ownership and site scope."
    return f"Roles: {', '.join(meta['roles'])}; the owning service decides ownership and site scope."


def _error(code):
    return {"$ref": f"#/components/responses/{ERRORS[code][0]}"}


def error_statuses(name, meta, path_parameters):
    """Every error status the route can answer."""
    calls = name not in LOCAL_ROUTES
    body = meta.get("body") is not None
    # A route made without gateway.service.route() does not say what it reads: assume it may read anything.
    undeclared = "query" not in meta
    if undeclared and meta["method"] in ("POST", "PUT", "PATCH"):
        body = True
    codes = set()
    if body or meta.get("query") is not None or undeclared or name in EXTRA_PARAMETERS:
        codes.add(400)
    if not meta["public"] or name == "token":  # a wrong password is 401 too
        codes.add(401)
        if name != "me":
            codes.add(403)
    if path_parameters or (calls and body) or name in ("my_volunteer", "docs_asset"):
        codes.add(404)
    if meta["method"] != "GET" and (calls or name == "register"):
        codes.add(409)
    if body:
        codes.update((413, 415))
    if path_parameters or meta.get("query") is not None or undeclared:
        codes.add(414)
    if meta.get("limited", True) or name == "token":
        codes.add(429)
    if calls:
        codes.update((503, 504))
    return sorted(codes)


def _json(schema):
    return {"application/json": {"schema": schema}}


def success_responses(name, meta):
    schema = meta.get("response") or {"type": "object"}
    status = str(meta["status"])
    if name == "submit_need":
        return {"201": {"description": "The need, submitted.", "content": _json(schema)},
                "200": {"description": "The need an earlier request with the same Idempotency-Key and body "
                                       "created.", "content": _json(schema)}}
    if name == "volunteer_certificate":
        return {status: {"description": "The certificate: JSON, or with `format=pdf` a PDF.",
                         "content": {**_json(schema),
                                     "application/pdf": {"schema": {"type": "string", "format": "binary"}}}}}
    if name == "metrics":
        return {status: {"description": "Prometheus text exposition.",
                         "content": {"text/plain": {"schema": {"type": "string"}}}}}
    if name == "readyz":
        return {"200": {"description": "The broker and every service answer.", "content": _json(schema)},
                "503": {"description": "Something is missing; `missing` names it.", "content": _json(schema)}}
    if name in STREAMS:
        return {status: {"description": "Server-sent events.",
                         "content": {"text/event-stream": {"schema": {"type": "string"}}}}}
    if name == "docs":
        return {status: {"description": "Swagger UI.", "content": {"text/html": {"schema": {"type": "string"}}}}}
    if name in ("home", "console"):
        return {status: {"description": "The web console's page.",
                         "content": {"text/html": {"schema": {"type": "string"}}}}}
    if name == "console_asset":
        types = sorted(set(webconsole.TYPES.values()))
        return {status: {"description": "A file of the web console.",
                         "content": {t: {"schema": {"type": "string"}} for t in types}}}
    if name == "docs_asset":
        return {status: {"description": "A file of Swagger UI.",
                         "content": {t: {"schema": {"type": "string", "format": "binary"}}
                                     for t in sorted(set(ASSET_TYPES.values()))}}}
    return {status: {"description": "Done.", "content": _json(schema)}}


def operation(name, meta, handler, path_parameters):
    if meta.get("open311"):
        return open311_operation(name, meta, handler, path_parameters)
    op = {
        "operationId": name,
        "tags": [tag_of(meta["path"])],
        "summary": _summary(name, handler),
        "description": _who(meta),
        "security": [] if meta["public"] else [{"bearerAuth": []}],
    }
    parameters = list(path_parameters)
    if meta.get("query") is not None:
        parameters.append({"in": "query", "schema": meta["query"]})
    parameters += EXTRA_PARAMETERS.get(name, [])
    if parameters:
        op["parameters"] = parameters
    body = meta.get("body")
    if body is not None:
        if meta["method"] == "PATCH" and any(f.required for f in body().fields.values()):
            body = body(partial=True)  # what the gateway loads a PATCH with
        op["requestBody"] = {"required": meta.get("body_required", True), "content": _json(body)}
    op["responses"] = success_responses(name, meta)
    for code in error_statuses(name, meta, path_parameters):
        op["responses"].setdefault(str(code), _error(code))
    return op


def open311_operation(name, meta, handler, path_parameters):
    """Open311 routes keep their own conventions: public, `.json` or `.xml`, and
    errors as a list of {code, description}."""
    parameters = list(path_parameters) + [{
        "in": "query", "name": "jurisdiction_id", "required": False, "schema": {"type": "string"},
        "description": "The district; optional, as there is one."}]
    parameters += [{"in": "query", "name": n, "required": False, "schema": s, "description": d}
                   for n, s, d in OPEN311_PARAMETERS.get(name, [])]
    answer = {"application/json": {"schema": {"oneOf": [{"type": "array", "items": {"type": "object"}},
                                                        {"type": "object"}]}},
              "text/xml": {"schema": {"type": "string"}}}
    errors = {"application/json": {"schema": {"$ref": "#/components/schemas/Open311Errors"}},
              "text/xml": {"schema": {"type": "string"}}}
    status = "201" if meta["method"] == "POST" else str(meta["status"])
    responses = {status: {"description": "Done.", "content": answer}}
    if meta["method"] == "POST":
        responses["200"] = {"description": "The request filed earlier with the same content.", "content": answer}
    for code in (400, 403, 404, 409, 503, 504):
        responses[str(code)] = {"description": ERRORS[code][1], "content": errors}
    # A format other than .json or .xml matches no route: the gateway's own 404.
    responses["404"] = {"description": ERRORS[404][1] + " For a format other than json or xml, the Lastmile error body.",
                        "content": {**errors, "application/json": {"schema": {"oneOf": [
                            {"$ref": "#/components/schemas/Open311Errors"}, {"$ref": "#/components/schemas/Error"}]}}}}
    responses["414"] = _error(414)
    op = {"operationId": name, "tags": ["open311"], "summary": _summary(name, handler),
          "description": "Anyone; filing a request needs an `api_key` an admin issued.", "security": [],
          "parameters": parameters, "responses": responses}
    if meta["method"] == "POST":
        fields = {n: {"type": "string"} for n in (
            "api_key", "service_code", "lat", "long", "address_string", "phone", "first_name", "last_name",
            "description", "attribute[station]", "attribute[beneficiary_group]", "attribute[beneficiaries]",
            "attribute[project]")}
        op["requestBody"] = {"required": True, "content": {"application/x-www-form-urlencoded": {
            "schema": {"type": "object", "properties": fields, "required": ["api_key", "service_code", "phone"]}}}}
    return op


def _ecma_patterns(value):
    """marshmallow's patterns end in Python's ``\\Z``; JSON Schema patterns are
    ECMA-262, where ``$`` (without the m flag) means the same."""
    if isinstance(value, dict):
        return {k: (v.replace(r"\Z", "$") if k == "pattern" and isinstance(v, str) else _ecma_patterns(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_ecma_patterns(v) for v in value]
    return value


def build(service_cls):
    spec = APISpec(
        title=TITLE, version=VERSION, openapi_version="3.0.3",
        plugins=[MarshmallowPlugin(schema_name_resolver=schema_name)],
        info={"description": DESCRIPTION}, servers=[{"url": "/"}],
    )
    spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    spec.components.schema("Error", schema=schemas.ErrorSchema)
    spec.components.schema("Open311Errors", {
        "type": "array", "items": {"type": "object", "required": ["code", "description"],
                                   "properties": {"code": {"type": "integer"}, "description": {"type": "string"}}}})
    for code, (name, description) in ERRORS.items():
        response = {"description": description, "content": _json({"$ref": "#/components/schemas/Error"})}
        if code == 429:
            response["headers"] = {"Retry-After": {"description": "Seconds to wait.",
                                                   "schema": {"type": "integer", "minimum": 1}}}
        spec.components.response(name, response)
    for tag, description in TAGS:
        spec.tag({"name": tag, "description": description})
    paths = {}
    for name, meta, handler in routes(service_cls):
        path, parameters = openapi_path(meta["path"])
        paths.setdefault(path, {})[meta["method"].lower()] = operation(name, meta, handler, parameters)
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return _ecma_patterns(spec.to_dict())


@lru_cache(maxsize=None)
def document(service_cls):
    return build(service_cls)


# ---- Swagger UI, from the gateway ---------------------------------------------------------------

ASSETS = Path(str(swagger_ui_path))
DOCS_SCRIPT = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/api/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
};"""
DOCS_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{TITLE} API</title>
  <link rel="stylesheet" type="text/css" href="/docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32">
  <link rel="icon" type="image/png" href="/docs/favicon-16x16.png" sizes="16x16">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js" charset="utf-8"></script>
  <script>{DOCS_SCRIPT}</script>
</body>
</html>
"""
# The browser itself keeps the page to the gateway.
DOCS_POLICY = (
    "default-src 'self'; "
    f"script-src 'self' 'sha256-{base64.b64encode(hashlib.sha256(DOCS_SCRIPT.encode()).digest()).decode()}'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'"
)


def docs_page():
    return Response(DOCS_PAGE, mimetype="text/html", headers={"Content-Security-Policy": DOCS_POLICY})


def asset(filename):
    """A file of the pinned swagger-ui-bundle, joined safely under its folder."""
    path = safe_join(str(ASSETS), filename)
    suffix = os.path.splitext(filename)[1]
    if path is None or suffix not in ASSET_TYPES or os.path.basename(path) in HIDDEN_ASSETS \
            or not os.path.isfile(path):
        raise NotFound(f"No file {filename} in the documentation")
    with open(path, "rb") as handle:
        content = handle.read()
    return Response(content, mimetype=ASSET_TYPES[suffix], headers={"Cache-Control": "public, max-age=86400"})
