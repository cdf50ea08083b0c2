"""Other systems follow Lastmile's orders as they happen: the event log
(``GET /events``), a live stream of it (``GET /events/stream``, server-sent
events) and webhooks (``POST /subscriptions``): each delivery signed with
HMAC-SHA256, retried with backoff while the receiver fails, and recorded."""
import hashlib
import hmac
import json
import logging
import time
from datetime import datetime, timedelta

import eventlet
import requests
import sqlalchemy as sa
from marshmallow import ValidationError, fields, validate, validates
from nameko.rpc import rpc
from nameko.timer import timer
from werkzeug.wrappers import Response

from gateway.http import ApiRoute, query_of, read_json
from gateway.limits import check_rate
from gateway.models import Delivery, EventLogEntry, Subscription
from lastmile import sites
from lastmile.consumer import event_batch_stream
from lastmile.db import insert_missing_rows, is_postgres, new_id, utcnow
from lastmile.errors import Forbidden, NotFound, ServiceUnavailable
from lastmile.events import isoformat
from lastmile.validation import QuerySchema, StrictSchema, cursor_field, load, mask_phone, mask_text, site_id_field

log = logging.getLogger(__name__)

# The order events: what happens to needs, orders, offers, services and ratings.
ORDER_EVENT_SOURCES = ("needs", "dispatch", "volunteers", "ratings")
PRIVATE_TYPES = {"volunteer_registered", "volunteer_updated", "team_registered", "team_updated"}
MAX_STREAMS = 50
BACKOFF_CAP_SECONDS = 60
DELIVERY_TIMEOUT_SECONDS = 5


def scrub(value):
    """What a subscriber may see: phones and addresses masked, coordinates coarse."""
    if isinstance(value, dict):
        clean = {}
        for key, item in value.items():
            if key in ("phone", "contact_phone") and isinstance(item, str):
                clean[key] = mask_phone(item)
            elif key in ("address", "id_number") and isinstance(item, str):
                clean[key] = mask_text(item)
            elif key in ("lat", "lon") and isinstance(item, (int, float)):
                clean[key] = round(item, 2)  # about a kilometre: a village, not a door
            else:
                clean[key] = scrub(item)
        return clean
    if isinstance(value, list):
        return [scrub(item) for item in value]
    return value


def event_site(event):
    data = event.get("data") or {}
    return data.get("site_id") or (data.get("need") or {}).get("site_id")


def entry_view(entry):
    return {"seq": entry.seq, **entry.body}


def signature(secret, body):
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class EventQuerySchema(QuerySchema):
    after = cursor_field(load_default=0)
    types = fields.String(load_default=None, validate=validate.Length(max=2000))
    site_id = site_id_field(load_default=None)
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))


class SubscriptionSchema(StrictSchema):
    url = fields.Url(required=True, schemes={"http", "https"}, require_tld=False,
                     validate=validate.Length(max=2000))
    types = fields.List(fields.String(validate=validate.Length(min=1, max=64)), load_default=list,
                        validate=validate.Length(max=50))
    secret = fields.String(required=True, validate=validate.Length(min=16, max=200))
    site_id = site_id_field(load_default=None, allow_none=True)

    @validates("types")
    def _types(self, value, **_):
        if set(value) & PRIVATE_TYPES:
            raise ValidationError("Only order events can be subscribed to.")


class DeliveryQuerySchema(QuerySchema):
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))


def subscription_view(subscription):
    return {"id": subscription.id, "url": subscription.url, "types": subscription.types,
            "site_id": subscription.site_id, "active": subscription.active, "cursor": subscription.cursor,
            "failures": subscription.failures, "retry_at": isoformat(subscription.retry_at)
            if subscription.retry_at else None, "created_at": isoformat(subscription.created_at)}


def delivery_view(delivery):
    return {"id": delivery.id, "seq": delivery.seq, "event_id": delivery.event_id, "attempt": delivery.attempt,
            "status_code": delivery.status_code, "error": delivery.error, "delivered": delivery.delivered,
            "at": isoformat(delivery.at)}


def events_route(method, path, roles, status=200, query=None, body=None):
    """Like the gateway's own routes: signed-in callers of the given roles. ``query``
    and ``body`` name the schemas the handler loads, for the OpenAPI document."""

    def decorate(handler):
        def entrypoint(self, request, **path_values):
            check_rate(request.remote_addr)
            actor = self.accounts.authenticate(request.headers.get("Authorization"))
            check_rate(None, actor.id)
            if actor.role not in roles:
                raise Forbidden(f"This needs one of the roles: {', '.join(roles)}")
            result = handler(self, request, actor, **path_values)
            if isinstance(result, Response):
                return result
            return Response(json.dumps(result, ensure_ascii=False), status=status, mimetype="application/json")

        entrypoint.__name__ = handler.__name__
        entrypoint.__doc__ = handler.__doc__
        entrypoint.lastmile_route = {"method": method, "path": path, "roles": roles, "public": False,
                                     "status": status, "query": query, "body": body}
        return ApiRoute.decorator(method, path)(entrypoint)

    return decorate


class EventRoutes:
    """Mixed into the gateway service: needs ``self.accounts`` (the gateway's store)."""

    streams = 0

    @event_batch_stream(ORDER_EVENT_SOURCES)
    def record_event(self, events):
        """Log the events that have gathered, in the order they arrived."""
        rows = [{"event_id": event["event_id"], "type": event["type"], "source": event["source"],
                 "need_id": event.get("need_id"), "site_id": event_site(event),
                 "occurred_at": datetime.fromisoformat(event["occurred_at"].replace("Z", "+00:00")),
                 "body": scrub(event)} for event in events if event["type"] not in PRIVATE_TYPES]
        # One statement, its own transaction; a copy redelivered finds its row and adds nothing.
        table = EventLogEntry.__table__
        with self.accounts.store.autocommit_engine.connect() as connection:
            insert_missing_rows(connection, table, rows, (table.c.event_id,))

    def _events_after(self, actor, query, limit):
        stmt = sa.select(EventLogEntry).where(EventLogEntry.seq > query["after"]).order_by(EventLogEntry.seq)
        if query["types"]:
            stmt = stmt.where(EventLogEntry.type.in_([t.strip() for t in query["types"].split(",") if t.strip()]))
        scope = query["site_id"] or (None if actor.is_admin else actor.site_id)
        if scope:
            if not actor.governs(scope):
                raise Forbidden("Staff follow the events of their own site and what is inside it")
            stmt = stmt.where(sa.or_(EventLogEntry.site_id == scope, EventLogEntry.site_id.startswith(scope + ".")))
        with self.accounts.store.Session() as session:
            return [entry_view(e) for e in session.scalars(stmt.limit(limit))]

    @events_route("GET", "/api/v1/events", roles=("staff", "admin"), query=EventQuerySchema)
    def list_events(self, request, actor):
        """The order events after a cursor, oldest first: page with ``after=next_after``."""
        query = load(EventQuerySchema(), query_of(request))
        items = self._events_after(actor, query, query["limit"])
        return {"items": items, "next_after": items[-1]["seq"] if items else query["after"]}

    @events_route("GET", "/api/v1/events/stream", roles=("staff", "admin"), query=EventQuerySchema)
    def stream_events(self, request, actor):
        """Server-sent events: each order event as it is logged; resumes after
        ``Last-Event-ID`` (or ``after``)."""
        args = query_of(request)
        if request.headers.get("Last-Event-ID", "").isdigit():
            args["after"] = request.headers["Last-Event-ID"]
        query = load(EventQuerySchema(), args)
        self._events_after(actor, dict(query, after=0), 1)  # refuse a site outside the caller's now
        if EventRoutes.streams >= MAX_STREAMS:
            raise ServiceUnavailable("Too many open event streams; try again later")
        # eventlet holds back small writes until 4 KiB gather; each event must go out now.
        request.environ["eventlet.minimum_write_chunk_size"] = 0

        def generate():
            EventRoutes.streams += 1
            cursor, quiet_since = query["after"], time.monotonic()
            try:
                yield b"retry: 2000\n\n"
                while True:
                    items = self._events_after(actor, dict(query, after=cursor), 100)
                    for item in items:
                        cursor = item["seq"]
                        yield (f"id: {cursor}\nevent: {item['type']}\n"
                               f"data: {json.dumps(item, ensure_ascii=False)}\n\n").encode()
                    if items:
                        quiet_since = time.monotonic()
                    elif time.monotonic() - quiet_since > 15:
                        yield b": keep-alive\n\n"
                        quiet_since = time.monotonic()
                    eventlet.sleep(0.2)
            finally:
                EventRoutes.streams -= 1

        return Response(generate(), mimetype="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @events_route("POST", "/api/v1/subscriptions", roles=("admin",), status=201, body=SubscriptionSchema)
    def create_subscription(self, request, actor):
        """A webhook: order events POSTed to ``url``, signed with ``secret``."""
        data = load(SubscriptionSchema(), read_json(request))
        with self.accounts.store.Session.begin() as session:
            # It starts at the end of the log: what happens from now on.
            latest = session.scalar(sa.select(sa.func.max(EventLogEntry.seq))) or 0
            subscription = Subscription(id=new_id(), url=data["url"], types=data["types"], site_id=data["site_id"],
                                        secret=data["secret"], active=True, cursor=latest, failures=0,
                                        created_by=actor.id, created_at=utcnow())
            session.add(subscription)
            session.flush()
            return subscription_view(subscription)

    @events_route("GET", "/api/v1/subscriptions", roles=("admin",))
    def list_subscriptions(self, request, actor):
        with self.accounts.store.Session() as session:
            items = [subscription_view(s) for s in session.scalars(
                sa.select(Subscription).order_by(Subscription.created_at))]
            return {"items": items, "total": len(items)}

    @events_route("DELETE", "/api/v1/subscriptions/<subscription_id>", roles=("admin",))
    def delete_subscription(self, request, actor, subscription_id):
        with self.accounts.store.Session.begin() as session:
            subscription = session.get(Subscription, subscription_id)
            if subscription is None:
                raise NotFound(f"No subscription {subscription_id}")
            subscription.active = False
            return subscription_view(subscription)

    @events_route("GET", "/api/v1/subscriptions/<subscription_id>/deliveries", roles=("admin",),
                  query=DeliveryQuerySchema)
    def list_deliveries(self, request, actor, subscription_id):
        query = load(DeliveryQuerySchema(), query_of(request))
        with self.accounts.store.Session() as session:
            if session.get(Subscription, subscription_id) is None:
                raise NotFound(f"No subscription {subscription_id}")
            items = [delivery_view(d) for d in session.scalars(
                sa.select(Delivery).where(Delivery.subscription_id == subscription_id)
                .order_by(Delivery.id.desc()).limit(query["limit"]))]
            return {"items": items, "total": len(items)}

    @timer(interval=3600)
    def prune_messaging(self):
        self.accounts.store.prune_messaging()

    @timer(interval=1)
    @rpc
    def deliver_webhooks(self):
        """Each subscription's next events, in order; a failing receiver holds its
        own queue (and only its own) and is retried with growing delays."""
        store = self.accounts.store
        with store.Session() as session:
            due = session.scalars(sa.select(Subscription.id).where(
                Subscription.active.is_(True),
                sa.or_(Subscription.retry_at.is_(None), Subscription.retry_at <= utcnow())))
            due = list(due)
        pool = eventlet.GreenPool(10)
        list(pool.imap(self._deliver_to, due))

    def _deliver_to(self, subscription_id):
        store = self.accounts.store
        with store.Session.begin() as session:
            stmt = sa.select(Subscription).where(Subscription.id == subscription_id)
            if is_postgres(session):
                stmt = stmt.with_for_update(skip_locked=True)  # one gateway replica at a time
            subscription = session.scalars(stmt).first()
            if subscription is None:
                return
            pending = session.scalars(
                sa.select(EventLogEntry).where(EventLogEntry.seq > subscription.cursor)
                .order_by(EventLogEntry.seq).limit(50)).all()
            for entry in pending:
                wanted = (not subscription.types or entry.type in subscription.types) and (
                    not subscription.site_id or sites.is_inside(entry.site_id, subscription.site_id))
                if wanted and not self._post(session, subscription, entry):
                    subscription.failures += 1
                    delay = min(BACKOFF_CAP_SECONDS, 2 ** min(subscription.failures - 1, 6))
                    subscription.retry_at = utcnow() + timedelta(seconds=delay)
                    return
                subscription.cursor, subscription.failures, subscription.retry_at = entry.seq, 0, None

    def _post(self, session, subscription, entry):
        body = json.dumps(entry_view(entry), ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", "X-Lastmile-Event": entry.type,
                   "X-Lastmile-Delivery": f"{subscription.id}:{entry.seq}",
                   "X-Lastmile-Signature": signature(subscription.secret, body)}
        status, error = None, None
        try:
            response = requests.post(subscription.url, data=body, headers=headers, timeout=DELIVERY_TIMEOUT_SECONDS,
                                     allow_redirects=False)
            status = response.status_code
        except requests.RequestException as exc:
            error = str(exc)[:500]
        delivered = status is not None and 200 <= status < 300
        session.add(Delivery(subscription_id=subscription.id, seq=entry.seq, event_id=entry.event_id,
                             attempt=subscription.failures + 1, status_code=status, error=error,
                             delivered=delivered, at=utcnow()))
        return delivered
