"""HTTP plumbing of the gateway on nameko's web server: JSON everywhere, the
error body of the public contract, limits, request ids and RPC with timeouts."""
import json
import logging
import time
import uuid

import eventlet
import eventlet.wsgi
import sqlalchemy as sa
from amqp.exceptions import ChannelError
from kombu import Connection
from nameko.exceptions import ContainerBeingKilled, RemoteError, UnknownService
from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import WebServer, WsgiApp
from werkzeug.exceptions import HTTPException, NotFound as NoSuchPath
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import RequestRedirect
from werkzeug.wrappers import Request, Response

from gateway.observability import HTTP_REQUESTS, HTTP_SECONDS, RPC_CALLS, RPC_SECONDS
from lastmile import config
from lastmile.errors import InvalidInput, LastmileError, ServiceTimeout, ServiceUnavailable

log = logging.getLogger(__name__)

API = "/api/v1"
MAX_BODY_BYTES = 64 * 1024
REQUEST_ID = "HTTP_X_REQUEST_ID"
RAW_BODY = "lastmile.raw_body"
# Errors of a database that cannot be reached just now: psycopg2 files the SQLSTATE
# classes of a server that is down, restarting, full or failing (08, 53, 54, 57, 58) as
# OperationalError (and a transaction rolled back as a deadlock's victim, which the same
# request, sent again, survives), a lost connection as InterfaceError; SQLAlchemy keeps
# the names.
DEPENDENCY_ERRORS = {"OperationalError", "InterfaceError", "DisconnectionError", "TimeoutError"}


def database_unavailable(error_type):
    """Whether an error (by its class name) says the database cannot be reached just
    now: the client should retry (503), nothing is wrong with the request."""
    return error_type in DEPENDENCY_ERRORS


def unexpected_error_response(exc, where):
    """503 when the gateway's own database is unreachable or the gateway is stopping,
    else a logged 500."""
    if isinstance(exc, sa.exc.SQLAlchemyError) and database_unavailable(type(exc).__name__):
        log.warning("database unavailable in %s: %s", where, str(exc).splitlines()[0])
        return error_response(503, "service_unavailable", "The gateway cannot reach its database; try again soon")
    if isinstance(exc, ContainerBeingKilled):
        # A request that reached a gateway process as it stops: another (or this one
        # restarted) will take it.
        return error_response(503, "service_unavailable", "The gateway is restarting; try again soon")
    log.error("unhandled error in %s", where, exc_info=(type(exc), exc, exc.__traceback__))
    return error_response(500, "internal_error", "Something went wrong on our side")


def json_response(status, body, headers=None):
    response = Response(
        json.dumps(body, ensure_ascii=False), status=status, mimetype="application/json", headers=headers
    )
    return response


def error_response(status, code, message, details=None, headers=None):
    return json_response(status, {"error": {"code": code, "message": message, "details": details or {}}}, headers)


HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "body_too_large", 415: "unsupported_media_type", 429: "too_many_requests",
}

# eventlet's server refuses a request line (method, URL, version) over 8 KiB itself, before
# any WSGI app sees it, with a bare 414; give that answer the JSON error body too.
_URI_TOO_LONG = json.dumps({"error": {
    "code": "uri_too_long", "message": f"The URL may be at most {eventlet.wsgi.MAX_REQUEST_LINE} bytes",
    "details": {}}}).encode()
eventlet.wsgi.RESPONSE_414 = (
    b"HTTP/1.0 414 Request URI Too Long\r\nConnection: close\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_URI_TOO_LONG), _URI_TOO_LONG))


def http_exception_response(exc):
    code = exc.code or 500
    headers = {}
    if code == 405 and getattr(exc, "valid_methods", None):
        headers = {"Allow": ", ".join(exc.valid_methods)}
    if isinstance(exc, RequestRedirect):  # such as a path asked for without its trailing slash
        return json_response(code, {"location": exc.new_url}, headers={"Location": exc.new_url})
    return error_response(code, HTTP_CODES.get(code, "http_error"), exc.description or exc.name, headers=headers)


class JsonWsgiApp(WsgiApp):
    """Routes like nameko's, but every answer is JSON, bodies are capped and each
    request carries an id (``X-Request-Id``, taken from the client or made here)."""

    def __call__(self, environ, start_response):
        environ[REQUEST_ID] = (environ.get(REQUEST_ID) or uuid.uuid4().hex)[:64]

        started = time.perf_counter()
        route = "unmatched"

        def start_with_id(status, headers, exc_info=None):
            headers.append(("X-Request-Id", environ[REQUEST_ID]))
            HTTP_REQUESTS.labels(environ.get("REQUEST_METHOD", ""), route, status.split(" ", 1)[0]).inc()
            HTTP_SECONDS.labels(route).observe(time.perf_counter() - started)
            return start_response(status, headers, exc_info)

        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > MAX_BODY_BYTES:
            response = error_response(413, "body_too_large", f"The body may be at most {MAX_BODY_BYTES} bytes")
            return response(environ, start_with_id)
        request = Request(environ, shallow=True)
        adapter = self.url_map.bind_to_environ(environ)
        try:
            provider, values = adapter.match()
            route = provider.url
            if any("\x00" in str(value) for value in values.values()):
                raise NoSuchPath()  # no id holds a NUL character (and PostgreSQL refuses one)
            request.path_values = values
            response = provider.handle_request(request)
        except HTTPException as exc:
            response = http_exception_response(exc)
        except Exception as exc:
            response = unexpected_error_response(exc, request.path)
        return response(environ, start_with_id)


class ApiServer(WebServer):
    def get_wsgi_app(self):
        app = JsonWsgiApp(self)
        hops = config.get_int("LASTMILE_PROXY_HOPS")
        # Behind a reverse proxy every request comes from the proxy: without this, all
        # of a district's residents would share one address's rate limit.
        return ProxyFix(app, x_for=hops) if hops > 0 else app

    def context_data_from_headers(self, request):
        # Carried to every RPC call and into the envelope of the events it causes.
        return {"request_id": request.environ.get(REQUEST_ID)}


class ApiRoute(HttpRequestHandler):
    server = ApiServer()

    def response_from_exception(self, exc):
        if isinstance(exc, LastmileError):
            return error_response(exc.status, exc.code, exc.message, exc.details, getattr(exc, "headers", None))
        return unexpected_error_response(exc, self.method_name)


def read_json(request, required=True):
    """The body as a JSON object; an empty body is ``{}`` where none is required.
    The bytes are kept, so that the route can validate the body before its handler
    reads it again."""
    raw = request.environ.get(RAW_BODY)
    if raw is None:
        raw = request.environ[RAW_BODY] = request.stream.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise BodyTooLarge(f"The body may be at most {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        if required:
            raise InvalidInput("A JSON body is required", {"body": ["Missing."]})
        return {}
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("Send the body as application/json")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("The body is not valid JSON", {"body": [str(exc)]})
    if not isinstance(body, dict):
        raise InvalidInput("The body must be a JSON object", {"body": ["Expected a JSON object."]})
    return body


class BodyTooLarge(LastmileError):
    status = 413
    code = "body_too_large"


class InternalError(LastmileError):
    status = 500
    code = "internal_error"


class UnsupportedMediaType(LastmileError):
    status = 415
    code = "unsupported_media_type"


class ServiceWatch:
    """Whether a service has a process consuming its RPC queue, asked of RabbitMQ at
    most once a second per service, so that a stopped service answers 503 at once
    instead of leaving the request in its queue to be acted on much later."""

    def __init__(self, ttl=1.0):
        self.ttl = ttl
        self.known = {}
        self.asking = set()

    def consumers(self, service):
        now = time.monotonic()
        cached = self.known.get(service)
        # While one request asks the broker, the others take the answer of a second
        # ago rather than each opening a connection of its own.
        if cached and (now - cached[0] < self.ttl or service in self.asking):
            return cached[1]
        self.asking.add(service)
        try:
            with Connection(config.get("LASTMILE_AMQP_URI"), connect_timeout=1) as conn:
                _, _, count = conn.channel().queue_declare(f"rpc-{service}", passive=True)
        except ChannelError:
            count = 0  # no such queue: the service never ran
        except Exception as exc:
            raise ServiceUnavailable("The message broker is not reachable", {"broker": str(exc)})
        finally:
            self.asking.discard(service)
        self.known[service] = (now, count)
        return count


watch = ServiceWatch()


def call(proxy, service, method, *args, timeout=None):
    """One RPC with a deadline: 504 when the service does not answer in time,
    503 when no such service is running."""
    seconds = timeout or config.get_float("LASTMILE_RPC_TIMEOUT")
    if not watch.consumers(service):
        raise ServiceUnavailable(f"The {service} service is not running", {"service": service})
    started, outcome = time.perf_counter(), "ok"
    try:
        with eventlet.Timeout(seconds, ServiceTimeout(f"The {service} service did not answer in time",
                                                      {"service": service})):
            return getattr(proxy, method)(*args)
    except UnknownService:
        outcome = "unavailable"
        raise ServiceUnavailable(f"The {service} service is not running", {"service": service})
    except RemoteError as exc:
        if database_unavailable(exc.exc_type):
            # The service is up but its database is not: a dependency is down, not a bug.
            outcome = "unavailable"
            raise ServiceUnavailable(f"The {service} service cannot reach its database",
                                     {"service": service}) from exc
        outcome = "failed"
        log.error("%s.%s failed: %s", service, method, exc)
        raise InternalError(f"The {service} service failed", {"service": service}) from exc
    except ServiceTimeout:
        outcome = "timeout"
        raise
    except LastmileError as exc:
        outcome = exc.code
        raise
    finally:
        RPC_CALLS.labels(service, method, outcome).inc()
        RPC_SECONDS.labels(service).observe(time.perf_counter() - started)


def query_of(request):
    """The query string as a dict. A parameter given twice stays a list, so that a
    single-valued field refuses it rather than silently keeping the first."""
    return {name: values[0] if len(values) == 1 else values for name, values in request.args.lists()}
