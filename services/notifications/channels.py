"""The channels a notification goes by, behind one interface.

``Channel.deliver(session, message, rendered, now)`` records one message for the
people behind its addressee, in the transaction of the event that caused it:

- ``InApp`` stores it (``notifications``), for ``list_notifications``;
- ``Sms`` queues one row per person in ``sms_messages``, an outbox that
  ``SmsSender`` works through on a timer: quiet hours and the hourly limit hold a
  row, a failing provider retries it with backoff, each row on its own, so one
  failure never holds up the others and nothing is sent from an event handler.

Every attempt, and what came of it, is written to ``delivery_attempts``.
"""
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import eventlet
import requests
import sqlalchemy as sa
import yaml
from nameko.extensions import DependencyProvider
from prometheus_client import Counter

from lastmile import config
from lastmile.db import insert_missing, is_postgres, new_id, utcnow
from lastmile.events import isoformat
from lastmile.metrics import REGISTRY
from lastmile.validation import mask_phone
from services.notifications import domain
from services.notifications.domain import IN_APP, SMS, USER
from services.notifications.models import Contact, DeliveryAttempt, Notification, Preference, SmsMessage

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates.yml"
SEND_BATCH = 100
SEND_CONCURRENCY = 10
LEASE = timedelta(seconds=60)  # a claimed SMS is tried again after this if its sender died
PROVIDER_TIMEOUT = (3, 5)  # seconds to connect, to answer

DELIVERIES = Counter("lastmile_notifications", "Notification deliveries, by channel and outcome",
                     ["channel", "outcome"], registry=REGISTRY)


# ---- configuration ----------------------------------------------------------------------


def default_preferences():
    start, end = domain.parse_quiet_hours(config.get("LASTMILE_QUIET_HOURS"))
    return domain.Preferences(quiet_start=start, quiet_end=end, sms=True)


def preferences_of(row, default=None):
    default = default or default_preferences()
    if row is None:
        return default
    if row.quiet_hours is None:
        return domain.Preferences(quiet_start=default.quiet_start, quiet_end=default.quiet_end, sms=row.sms)
    start, end = domain.parse_quiet_hours(row.quiet_hours)
    return domain.Preferences(quiet_start=start, quiet_end=end, sms=row.sms)


def preferences_for(session, user_ids):
    default = default_preferences()
    rows = {}
    if user_ids:
        rows = {p.user_id: p for p in session.scalars(sa.select(Preference).where(Preference.user_id.in_(user_ids)))}
    return {user_id: preferences_of(rows.get(user_id), default) for user_id in user_ids}


def load_templates(path=TEMPLATES):
    return domain.Templates(yaml.safe_load(Path(path).read_text(encoding="utf-8")))


def check_configuration(templates):
    """Refuse to start on a bad setting or template, rather than misbehave later."""
    problems = templates.problems()
    try:
        default_preferences()
    except ValueError as exc:
        problems.append(f"LASTMILE_QUIET_HOURS: {exc}")
    for name in ("LASTMILE_SMS_PER_HOUR", "LASTMILE_REVIEW_MINUTES", "LASTMILE_REMINDER_MINUTES"):
        value = config.get(name)
        if not value.isdigit():
            problems.append(f"{name} must be a whole number of zero or more, not {value!r}")
    return problems


# ---- the record of attempts ---------------------------------------------------------------


def record(session, channel, message_id, kind, need_id, recipient, outcome, now, to=None, attempt=0,
           status_code=None, detail=None):
    session.add(DeliveryAttempt(channel=channel, message_id=message_id, kind=kind, need_id=need_id,
                                recipient=recipient, phone=mask_phone(to) if to else None, attempt=attempt,
                                outcome=outcome, status_code=status_code,
                                detail=domain.mask_phones(detail)[:300] if detail else None, at=now))
    DELIVERIES.labels(channel, outcome).inc()


def _recipient(to):
    return to.id if to.type == USER else f"{to.type}:{to.id}"


# ---- the channels -------------------------------------------------------------------------


class Channel:
    name = None

    def deliver(self, session, message, rendered, now):
        """Record ``message`` for the people behind its addressee; how many rows it made."""
        raise NotImplementedError


class InApp(Channel):
    name = IN_APP

    def deliver(self, session, message, rendered, now):
        notification_id = new_id()
        stored = insert_missing(
            session, Notification.__table__, id=notification_id, key=message.key, kind=message.kind,
            recipient_type=message.to.type, recipient_id=message.to.id, need_id=message.need_id,
            title=rendered.title[:100], body=rendered.body[:1000], link=rendered.link, created_at=now)
        if stored:
            record(session, IN_APP, notification_id, message.kind, message.need_id, _recipient(message.to),
                   "stored", now)
        return int(stored)


class Sms(Channel):
    name = SMS

    def __init__(self, enabled):
        self.enabled = enabled

    def people(self, session, to):
        """Contacts with a phone: the person, or the staff of the site's station and institute."""
        if to.type == USER:
            contact = session.get(Contact, to.id)
            return [contact] if contact is not None and contact.phone else []
        return session.scalars(sa.select(Contact).where(
            Contact.role == "staff", Contact.site_id.in_(domain.staff_sms_sites(to.id)),
            Contact.phone.is_not(None)).order_by(Contact.user_id)).all()

    def deliver(self, session, message, rendered, now):
        if not self.enabled or rendered.sms is None:
            return 0
        if message.follows and not self._close_topic(session, message, now):
            return 0  # the SMS it follows never went: this one would only puzzle
        people = self.people(session, message.to)
        preferences = preferences_for(session, [c.user_id for c in people])
        queued = 0
        for contact in people:
            if not preferences[contact.user_id].sms:
                continue
            queued += insert_missing(
                session, SmsMessage.__table__, id=new_id(), key=message.key, user_id=contact.user_id,
                kind=message.kind, need_id=message.need_id, topic=message.topic, text=rendered.sms[:500],
                urgent=message.urgent, status="pending", due_at=now, expires_at=message.expires_at, attempts=0,
                created_at=now)
        return queued

    def _close_topic(self, session, message, now):
        """Drop the unsent SMS of the topic this message follows up; True when one
        of them did go (or is going) out."""
        went = False
        for row in session.scalars(sa.select(SmsMessage).where(
                SmsMessage.topic == message.follows, SmsMessage.user_id == message.to.id).with_for_update()):
            if row.status == "pending":
                row.status, row.last_error = "cancelled", f"superseded by {message.kind}"
                record(session, SMS, row.id, row.kind, row.need_id, row.user_id, "cancelled", now,
                       attempt=row.attempts, detail=row.last_error)
            went = went or row.status in ("sent", "sending")
        return went


# ---- the SMS provider and the sender ---------------------------------------------------------


class SmsProvider:
    """POST {"to", "text"} as JSON to ``LASTMILE_SMS_URL`` with the bearer key
    ``LASTMILE_SMS_KEY``; an ``Idempotency-Key`` header lets a provider drop a
    retry of a message it already took."""

    def __init__(self, http, url, key):
        self.http, self.url, self.key = http, url, key

    @property
    def enabled(self):
        return bool(self.url)

    def send(self, to, text, message_id):
        """(status code or None, error text or None)."""
        headers = {"Authorization": f"Bearer {self.key}", "Idempotency-Key": message_id}
        try:
            response = self.http.post(self.url, json={"to": to, "text": text}, headers=headers,
                                      timeout=PROVIDER_TIMEOUT, allow_redirects=False)
        except requests.RequestException as exc:
            return None, f"{type(exc).__name__}: {exc}"[:300]
        if 200 <= response.status_code < 300:
            return response.status_code, None
        return response.status_code, f"HTTP {response.status_code}: {response.text[:200]}"


@dataclass(frozen=True)
class Claim:
    id: str
    user_id: str
    phone: str
    text: str
    attempt: int
    kind: str
    need_id: str | None


class SmsSender:
    def __init__(self, db, provider):
        self.db, self.provider = db, provider

    def send_due(self):
        """Send what is due, each message on its own; what happened, counted."""
        if not self.provider.enabled:
            return {}
        claims, counts = self._claim(utcnow())
        pool = eventlet.GreenPool(SEND_CONCURRENCY)
        for outcome in pool.imap(self._send, claims):
            counts[outcome] = counts.get(outcome, 0) + 1
        return counts

    def _claim(self, now):
        per_hour = config.get_int("LASTMILE_SMS_PER_HOUR")
        counts = {}
        with self.db.session() as session:
            stmt = (sa.select(SmsMessage).where(SmsMessage.status.in_(("pending", "sending")), SmsMessage.due_at <= now)
                    .order_by(SmsMessage.due_at, SmsMessage.created_at).limit(SEND_BATCH))
            if is_postgres(session):
                stmt = stmt.with_for_update(skip_locked=True)  # replicas share the work, never a row
            rows = session.scalars(stmt).all()
            if not rows:
                return [], counts
            users = sorted({row.user_id for row in rows})
            contacts = {c.user_id: c for c in session.scalars(sa.select(Contact).where(Contact.user_id.in_(users)))}
            preferences = preferences_for(session, users)
            recent = defaultdict(list)
            for user_id, sent_at in session.execute(sa.select(SmsMessage.user_id, SmsMessage.sent_at).where(
                    SmsMessage.user_id.in_(users), SmsMessage.status == "sent", SmsMessage.sent_at > now - domain.HOUR)):
                recent[user_id].append(sent_at)
            for user_id in session.scalars(sa.select(SmsMessage.user_id).where(
                    SmsMessage.user_id.in_(users), SmsMessage.status == "sending", SmsMessage.due_at > now)):
                recent[user_id].append(now)  # in flight elsewhere: counts as sent now
            claims = []
            for row in rows:
                contact = contacts.get(row.user_id)
                decision = domain.sms_decision(
                    now, urgent=row.urgent, expires_at=row.expires_at, prefs=preferences[row.user_id],
                    has_phone=bool(contact and contact.phone), recent_sends=recent[row.user_id], per_hour=per_hour)
                if decision.action == "send":
                    row.status, row.due_at, row.attempts = "sending", now + LEASE, row.attempts + 1
                    recent[row.user_id].append(now)
                    claims.append(Claim(row.id, row.user_id, contact.phone, row.text, row.attempts, row.kind,
                                        row.need_id))
                    continue
                if decision.action == "hold":
                    row.status, row.due_at = "pending", decision.until
                    detail = f"{decision.reason} until {isoformat(decision.until)}"
                    outcome = "held"
                else:
                    row.status, row.last_error = ("expired" if decision.action == "expire" else "cancelled",
                                                  decision.reason)
                    detail, outcome = decision.reason, row.status
                record(session, SMS, row.id, row.kind, row.need_id, row.user_id, outcome, now,
                       to=contact.phone if contact else None, attempt=row.attempts, detail=detail)
                counts[outcome] = counts.get(outcome, 0) + 1
        return claims, counts

    def _send(self, claim):
        status_code, error = self.provider.send(claim.phone, claim.text, claim.id)
        outcome = domain.provider_outcome(status_code)
        now = utcnow()
        with self.db.session() as session:
            row = session.get(SmsMessage, claim.id, with_for_update=True)
            if row.status != "sending" or row.attempts != claim.attempt:
                pass  # its lease ran out and another sender took it over: only record this try
            elif outcome == "sent":
                row.status, row.sent_at, row.last_error = "sent", now, None
            elif outcome == "failed":
                row.status, row.last_error = "failed", (domain.mask_phones(error) or "")[:300]
            else:
                row.status, row.last_error = "pending", (domain.mask_phones(error) or "")[:300]
                row.due_at = now + timedelta(seconds=domain.retry_delay(claim.attempt))
            record(session, SMS, claim.id, claim.kind, claim.need_id, claim.user_id, outcome, now, to=claim.phone,
                   attempt=claim.attempt, status_code=status_code, detail=error)
        level = logging.INFO if outcome == "sent" else logging.WARNING
        log.log(level, "sms %s to %s (attempt %d): %s%s", claim.kind, mask_phone(claim.phone), claim.attempt,
                outcome, f" ({domain.mask_phones(error)})" if error else "")
        return "retry" if outcome == "retry" else outcome


# ---- the dependency ---------------------------------------------------------------------------


class Notifier:
    """What the service's entrypoints use: deliver a plan, send what is due."""

    def __init__(self, templates, http):
        self.templates = templates
        self.provider = SmsProvider(http, config.get("LASTMILE_SMS_URL"), config.get("LASTMILE_SMS_KEY"))
        self.channels = {IN_APP: InApp(), SMS: Sms(self.provider.enabled)}

    def deliver(self, session, messages, now):
        delivered = 0
        for message in messages:
            rendered = self.templates.render(message)
            for name in self.templates.channels(message.kind):
                delivered += self.channels[name].deliver(session, message, rendered, now)
        return delivered

    def sender(self, db):
        return SmsSender(db, self.provider)


class Notifications(DependencyProvider):
    """The templates (checked with the settings when the service starts: a bad one
    stops it at once) and one HTTP session to the SMS provider."""

    def setup(self):
        self.templates = load_templates()
        problems = check_configuration(self.templates)
        if problems:
            raise SystemExit("notifications: " + "; ".join(problems))
        self.http = requests.Session()

    def stop(self):
        self.http.close()

    def get_dependency(self, worker_ctx):
        return Notifier(self.templates, self.http)

