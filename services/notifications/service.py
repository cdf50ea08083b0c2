"""Who is told what, by which channel: volunteers of their offers, residents of
their needs, staff of what waits for them — in the app and by SMS."""
import logging
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from nameko.rpc import rpc
from nameko.timer import timer

from lastmile import config
from lastmile.auth import Actor
from lastmile.consumer import event_batch_handler, event_handler
from lastmile.db import insert_missing, is_postgres, locked_row, paged, upsert, utcnow
from lastmile.errors import EXPECTED, Forbidden, NotFound, NotReady
from lastmile.events import isoformat
from lastmile.service import LastmileService
from lastmile.store import Store
from lastmile.validation import load, mask_phone
from services.notifications import domain
from services.notifications.channels import Notifications, preferences_of
from services.notifications.models import (
    MESSAGING, Base, Contact, DeliveryAttempt, NeedFact, Notification, NotificationRead, Preference, SmsMessage,
)
from services.notifications.schemas import DeliveryQuerySchema, NotificationQuerySchema, PreferencesSchema

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger(__name__)

# Events whose data is a snapshot of the need (order_assigned carries one as "need").
SNAPSHOT_EVENTS = frozenset({"need_submitted", "need_approved", "need_rejected", "need_cancelled",
                             "need_status_changed", "order_assigned"})


def _iso(value):
    return isoformat(value) if value else None


def notification_view(notification, read_at=None):
    return {
        "id": notification.id, "seq": notification.seq, "kind": notification.kind, "title": notification.title,
        "body": notification.body, "link": notification.link, "need_id": notification.need_id,
        "to": {"type": notification.recipient_type, "id": notification.recipient_id},
        "created_at": _iso(notification.created_at), "read": read_at is not None, "read_at": _iso(read_at),
    }


def _clock(moment):
    return moment.strftime("%H:%M") if moment else None


def preferences_view(row):
    prefs = preferences_of(row)
    return {"quiet_start": _clock(prefs.quiet_start), "quiet_end": _clock(prefs.quiet_end), "sms": prefs.sms,
            "default_quiet_hours": row is None or row.quiet_hours is None, "timezone": str(domain.LOCAL_TIME)}


def attempt_view(attempt):
    return {
        "id": attempt.id, "channel": attempt.channel, "message_id": attempt.message_id, "kind": attempt.kind,
        "need_id": attempt.need_id, "recipient": attempt.recipient, "phone": attempt.phone, "attempt": attempt.attempt,
        "outcome": attempt.outcome, "status_code": attempt.status_code, "detail": attempt.detail,
        "at": _iso(attempt.at),
    }


def facts_of(row):
    return domain.NeedFacts(
        need_id=row.need_id, title=row.title, site_id=row.site_id, urgency=row.urgency, owner_id=row.owner_id,
        collector_id=row.collector_id, window_start=row.window_start, assignee_user_id=row.assignee_user_id,
        submitted_at=row.submitted_at)


def visible_to(actor):
    """What an actor sees: what is addressed to them, and, for staff, what is
    addressed to the staff of their site or of any site inside it (admins: all)."""
    mine = sa.and_(Notification.recipient_type == domain.USER, Notification.recipient_id == actor.id)
    if actor.is_admin:
        return sa.or_(mine, Notification.recipient_type == domain.SITE)
    if actor.role == "staff" and actor.site_id:
        inside = sa.or_(Notification.recipient_id == actor.site_id,
                        Notification.recipient_id.startswith(actor.site_id + ".", autoescape=True))
        return sa.or_(mine, sa.and_(Notification.recipient_type == domain.SITE, inside))
    return mine


class NotificationsService(LastmileService):
    name = "notifications"

    db = Store(Base.metadata, MIGRATIONS, MESSAGING)
    notifier = Notifications()

    # ---- the people's side ------------------------------------------------------------

    @rpc(expected_exceptions=EXPECTED)
    def list_notifications(self, actor, query):
        """The caller's notifications, newest first: {items, total, page, page_size, unread}."""
        actor = Actor.from_dict(actor)
        query = load(NotificationQuerySchema(), query or {})
        is_read = sa.exists().where(NotificationRead.notification_id == Notification.id,
                                    NotificationRead.user_id == actor.id)
        stmt = sa.select(Notification).where(visible_to(actor))
        if query["after"] is not None:
            stmt = stmt.where(Notification.seq > query["after"])
        unread_stmt = stmt.where(~is_read)
        if query["unread"]:
            stmt = unread_stmt
        page, size = query["page"], query["page_size"]
        with self.db.session() as session:
            total = session.scalar(sa.select(sa.func.count()).select_from(stmt.subquery()))
            unread = session.scalar(sa.select(sa.func.count()).select_from(unread_stmt.subquery()))
            rows = session.scalars(stmt.order_by(Notification.seq.desc()).offset((page - 1) * size).limit(size)).all()
            reads = dict(session.execute(sa.select(NotificationRead.notification_id, NotificationRead.read_at).where(
                NotificationRead.user_id == actor.id,
                NotificationRead.notification_id.in_([n.id for n in rows]))).all()) if rows else {}
            return {"items": [notification_view(n, reads.get(n.id)) for n in rows], "total": total, "page": page,
                    "page_size": size, "unread": unread}

    @rpc(expected_exceptions=EXPECTED)
    def mark_read(self, actor, notification_id):
        actor = Actor.from_dict(actor)
        with self.db.session() as session:
            notification = None
            if isinstance(notification_id, str):
                notification = session.scalars(sa.select(Notification).where(
                    Notification.id == notification_id, visible_to(actor))).first()
            if notification is None:
                raise NotFound(f"No notification {notification_id}")
            insert_missing(session, NotificationRead.__table__, notification_id=notification.id, user_id=actor.id,
                           read_at=utcnow())
            read = session.get(NotificationRead, (notification.id, actor.id))
            return notification_view(notification, read.read_at)

    @rpc(expected_exceptions=EXPECTED)
    def get_preferences(self, actor):
        actor = Actor.from_dict(actor)
        with self.db.session() as session:
            return preferences_view(session.get(Preference, actor.id))

    @rpc(expected_exceptions=EXPECTED)
    def set_preferences(self, actor, data):
        """{quiet_start, quiet_end} (HH:MM China time; both null: none) and {sms};
        what is left out stays. SMS held for this person are looked at again."""
        actor = Actor.from_dict(actor)
        data = load(PreferencesSchema(), data or {})
        now = utcnow()
        with self.db.session() as session:
            row = locked_row(session, Preference, user_id=actor.id, quiet_hours=None, sms=True, updated_at=now)
            if "quiet_start" in data:
                row.quiet_hours = "off" if data["quiet_start"] is None else f"{data['quiet_start']}-{data['quiet_end']}"
            if "sms" in data:
                row.sms = data["sms"]
            row.updated_at = now
            session.execute(sa.update(SmsMessage).where(
                SmsMessage.user_id == actor.id, SmsMessage.status == "pending", SmsMessage.due_at > now)
                .values(due_at=now))
            return preferences_view(row)

    @rpc(expected_exceptions=EXPECTED)
    def list_deliveries(self, actor, query):
        """Every delivery attempt and its outcome, newest first (admins)."""
        actor = Actor.from_dict(actor)
        if not actor.is_admin:
            raise Forbidden("The delivery record is for admins")
        query = load(DeliveryQuerySchema(), query or {})
        stmt = sa.select(DeliveryAttempt)
        if query["user_id"]:
            stmt = stmt.where(DeliveryAttempt.recipient == query["user_id"])
        for name in ("need_id", "channel", "outcome"):
            if query[name]:
                stmt = stmt.where(getattr(DeliveryAttempt, name) == query[name])
        page, size = query["page"], query["page_size"]
        with self.db.session() as session:
            rows, total = paged(session, stmt, (DeliveryAttempt.id.desc(),), page, size)
            return {"items": [attempt_view(a) for a, in rows], "total": total, "page": page, "page_size": size}

    # ---- the clock ------------------------------------------------------------------------

    @timer(interval=1)
    @rpc
    def send_due_sms(self):
        """Send the SMS that are due; {outcome: count}."""
        return self.notifier.sender(self.db).send_due()

    @timer(interval=30)
    @rpc
    def check_reviews(self):
        """Tell staff of needs nobody has reviewed for LASTMILE_REVIEW_MINUTES (0: never)."""
        minutes = config.get_int("LASTMILE_REVIEW_MINUTES")
        if minutes <= 0:
            return 0
        now = utcnow()
        with self.db.session() as session:
            stmt = sa.select(NeedFact).where(
                NeedFact.reviewed.is_(False), NeedFact.review_alerted.is_(False), NeedFact.site_id.is_not(None),
                NeedFact.submitted_at <= now - timedelta(minutes=minutes)).limit(500)
            if is_postgres(session):
                stmt = stmt.with_for_update(skip_locked=True)
            told = 0
            for row in session.scalars(stmt).all():
                if not domain.review_overdue(row.submitted_at, row.reviewed, row.review_alerted, now, minutes):
                    continue
                row.review_alerted = True
                self.notifier.deliver(session, [domain.review_message(facts_of(row), now)], now)
                told += 1
            return told

    @timer(interval=30)
    @rpc
    def send_reminders(self):
        """Remind each assigned volunteer LASTMILE_REMINDER_MINUTES before the window starts (0: never)."""
        minutes = config.get_int("LASTMILE_REMINDER_MINUTES")
        if minutes <= 0:
            return 0
        now = utcnow()
        with self.db.session() as session:
            stmt = sa.select(NeedFact).where(
                NeedFact.closed.is_(False), NeedFact.assignee_user_id.is_not(None),
                NeedFact.window_start > now, NeedFact.window_start <= now + timedelta(minutes=minutes),
                sa.or_(NeedFact.reminded_user_id.is_(None), NeedFact.reminded_user_id != NeedFact.assignee_user_id),
            ).limit(500)
            if is_postgres(session):
                stmt = stmt.with_for_update(skip_locked=True)
            reminded = 0
            for row in session.scalars(stmt).all():
                if not domain.reminder_due(row.window_start, now, minutes):
                    continue
                row.reminded_user_id = row.assignee_user_id
                self.notifier.deliver(session, [domain.reminder_message(facts_of(row), now)], now)
                reminded += 1
            return reminded

    # ---- what happened elsewhere ---------------------------------------------------------

    @event_handler("gateway", "account_registered")
    def on_account_registered(self, event):
        data = event["data"]
        now = utcnow()
        with self.db.session() as session:
            if not self.db.first_delivery(session, event, "notifications.account_registered"):
                return
            contact = locked_row(session, Contact, user_id=data["id"], role=data["role"], updated_at=now)
            contact.role, contact.site_id, contact.name = data["role"], data.get("site_id"), data.get("name")
            contact.phone, contact.updated_at = data.get("phone"), now
        log.info("contact of %s %s: %s", data["role"], data["id"], mask_phone(data.get("phone")))

    @event_batch_handler("needs", "need_submitted")
    def on_need_submitted(self, events):
        self._notify(events)

    @event_batch_handler("needs", "need_approved")
    def on_need_approved(self, events):
        self._notify(events)

    @event_batch_handler("needs", "need_rejected")
    def on_need_rejected(self, events):
        self._notify(events)

    @event_batch_handler("needs", "need_cancelled")
    def on_need_cancelled(self, events):
        self._notify(events)

    @event_batch_handler("needs", "need_status_changed")
    def on_need_status_changed(self, events):
        self._notify(events)

    @event_batch_handler("dispatch", "offer_made")
    def on_offer_made(self, events):
        self._notify(events)

    @event_batch_handler("dispatch", "offer_withdrawn")
    def on_offer_withdrawn(self, events):
        self._notify(events)

    @event_batch_handler("dispatch", "order_assigned")
    def on_order_assigned(self, events):
        self._notify(events)

    @event_batch_handler("dispatch", "order_reassigned")
    def on_order_reassigned(self, events):
        self._notify(events)

    @event_batch_handler("dispatch", "order_escalated")
    def on_order_escalated(self, events):
        self._notify(events)

    @event_batch_handler("dispatch", "order_unfilled")
    def on_order_unfilled(self, events):
        self._notify(events)

    @event_batch_handler("ratings", "rating_flagged")
    def on_rating_flagged(self, events):
        self._notify(events)

    @event_batch_handler("ratings", "follow_up_escalated")
    def on_follow_up_escalated(self, events):
        self._notify(events)

    def _notify(self, events):
        """Fold the events into what is known of their needs and deliver what each
        calls for, all in one transaction."""
        now = utcnow()
        with self.db.session() as session:
            for event in self.db.first_deliveries(session, events, lambda event: f"notifications.{event['type']}"):
                need = self._learn(session, event, now)
                if need is None and event["type"] in domain.NEEDS_FACTS:
                    raise NotReady(f"need {event.get('need_id')} is not known yet")
                self.notifier.deliver(session, domain.plan(event, need, now), now)

    def _learn(self, session, event, now):
        """Fold the event into what is known of its need; that knowledge, or None.
        One statement: the facts are made or changed, and read back, at once."""
        need_id, kind, data = event.get("need_id"), event["type"], event.get("data") or {}
        if not need_id:
            return None
        table = NeedFact.__table__
        changes = {}
        if kind == "need_submitted":
            submitted = sa.literal(domain.parse_time(event["occurred_at"]), table.c.submitted_at.type)
            changes["submitted_at"] = sa.func.coalesce(table.c.submitted_at, submitted)
        if kind in ("need_approved", "need_rejected", "need_cancelled") or (
                kind == "need_status_changed" and data.get("from") == "submitted"):
            changes["reviewed"] = True
        if kind in ("need_rejected", "need_cancelled") or (
                kind == "need_status_changed" and data.get("to") in domain.CLOSED_STATUSES):
            changes["closed"] = True
        if kind == "order_assigned":
            changes["assignee_user_id"] = data.get("user_id")
        if kind == "order_reassigned":
            changes["assignee_user_id"] = sa.case(
                (table.c.assignee_user_id == data.get("previous_user_id"), None), else_=table.c.assignee_user_id)
        snapshot = (data.get("need") if kind == "order_assigned" else data) if kind in SNAPSHOT_EVENTS else None
        if snapshot:
            # What the snapshot tells replaces what was known; what it leaves out is kept.
            told = {"title": (snapshot.get("title") or "")[:200], "site_id": snapshot.get("site_id"),
                    "urgency": snapshot.get("urgency"), "owner_id": snapshot.get("owner_id"),
                    "collector_id": snapshot.get("collector_id"),
                    "window_start": domain.parse_time(snapshot.get("window_start"))}
            told = {name: value for name, value in told.items() if value}
            changes.update(told, updated_at=now)
            made = {"title": "", "urgency": "normal", "reviewed": False, "review_alerted": False, "closed": False,
                    **{name: value for name, value in changes.items() if not isinstance(value, sa.ColumnElement)}}
            if kind == "need_submitted":
                made["submitted_at"] = domain.parse_time(event["occurred_at"])
            return facts_of(upsert(session, table, {"need_id": need_id, **made}, changes))
        if changes:
            row = session.execute(sa.update(table).where(table.c.need_id == need_id).values(**changes)
                                  .returning(*table.c)).first()
        else:
            row = session.execute(sa.select(table).where(table.c.need_id == need_id)).first()
        return facts_of(row) if row is not None else None

