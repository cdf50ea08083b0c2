import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from lastmile.db import UTCDateTime
from lastmile.outbox import messaging_tables


class Base(DeclarativeBase):
    pass


class Contact(Base):
    """How to reach an account, from the gateway's ``account_registered``: the
    directory SMS are addressed by. The phone never leaves this service except as
    the number an SMS is sent to."""

    __tablename__ = "contacts"
    user_id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    role: Mapped[str] = mapped_column(sa.String(16))
    site_id: Mapped[str | None] = mapped_column(sa.String(128), nullable=True, index=True)
    name: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    phone: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    updated_at = mapped_column(UTCDateTime, nullable=False)


class Preference(Base):
    """A person's own quiet hours and whether they want SMS; absent: the defaults."""

    __tablename__ = "preferences"
    user_id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    # HH:MM-HH:MM in China time, "off" for none, NULL for the default (LASTMILE_QUIET_HOURS).
    quiet_hours: Mapped[str | None] = mapped_column(sa.String(11), nullable=True)
    sms: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    updated_at = mapped_column(UTCDateTime, nullable=False)


class NeedFact(Base):
    """What notifications know of a need, from the needs and dispatch events: its
    title and urgency for messages, who to tell, and what the timers watch."""

    __tablename__ = "need_facts"
    need_id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(200), default="")
    site_id: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)
    urgency: Mapped[str] = mapped_column(sa.String(16), default="normal")
    owner_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    collector_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    window_start = mapped_column(UTCDateTime, nullable=True)
    submitted_at = mapped_column(UTCDateTime, nullable=True)
    reviewed: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    review_alerted: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    assignee_user_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    reminded_user_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    closed: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    updated_at = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (
        sa.Index("ix_need_facts_review", "reviewed", "review_alerted", "submitted_at"),
        sa.Index("ix_need_facts_reminder", "closed", "window_start"),
    )


class Notification(Base):
    """One in-app notification to one addressee: a person, or the staff of a site
    (seen by staff of that site and of every site enclosing it)."""

    __tablename__ = "notifications"
    seq: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(sa.String(36), unique=True)
    key: Mapped[str] = mapped_column(sa.String(120))
    kind: Mapped[str] = mapped_column(sa.String(40))
    recipient_type: Mapped[str] = mapped_column(sa.String(8))
    recipient_id: Mapped[str] = mapped_column(sa.String(128))
    need_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True, index=True)
    title: Mapped[str] = mapped_column(sa.String(100))
    body: Mapped[str] = mapped_column(sa.String(1000))
    link: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    created_at = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (
        # One message per event per addressee, however often the event is delivered.
        sa.UniqueConstraint("key", "recipient_type", "recipient_id", name="uq_notifications_once"),
        sa.Index("ix_notifications_recipient", "recipient_type", "recipient_id", "seq"),
    )


class NotificationRead(Base):
    """Who has read what: per person, so one staff member reading a site's
    notification leaves it unread for their colleagues."""

    __tablename__ = "notification_reads"
    notification_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("notifications.id"), primary_key=True)
    user_id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    read_at = mapped_column(UTCDateTime, nullable=False)


class SmsMessage(Base):
    """An SMS to send: the outbox the timer-driven sender works through. The number
    is looked up in the directory when it is sent."""

    __tablename__ = "sms_messages"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(120))
    user_id: Mapped[str] = mapped_column(sa.String(36))
    kind: Mapped[str] = mapped_column(sa.String(40))
    need_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    topic: Mapped[str | None] = mapped_column(sa.String(80), nullable=True, index=True)
    text: Mapped[str] = mapped_column(sa.String(500))
    urgent: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    # pending (waits for due_at), sending (claimed until due_at), sent, failed (refused
    # for good), expired (past its deadline), cancelled (no phone, SMS off, superseded)
    status: Mapped[str] = mapped_column(sa.String(12))
    due_at = mapped_column(UTCDateTime, nullable=False)
    expires_at = mapped_column(UTCDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(sa.String(300), nullable=True)
    created_at = mapped_column(UTCDateTime, nullable=False)
    sent_at = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        # One SMS per event per person, however often the event is delivered.
        sa.UniqueConstraint("key", "user_id", name="uq_sms_messages_once"),
        sa.Index("ix_sms_messages_due", "status", "due_at"),
        sa.Index("ix_sms_messages_user_sent", "user_id", "sent_at"),
    )


class DeliveryAttempt(Base):
    """Every attempt to deliver a notification, and how it went: stored (in-app),
    sent, failed, retry (the provider failed; tried again later), held (quiet hours
    or the hourly limit), expired, cancelled. Phones only masked."""

    __tablename__ = "delivery_attempts"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(sa.String(8))
    message_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    kind: Mapped[str] = mapped_column(sa.String(40))
    need_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True, index=True)
    recipient: Mapped[str] = mapped_column(sa.String(140), index=True)
    phone: Mapped[str | None] = mapped_column(sa.String(20), nullable=True)  # masked
    attempt: Mapped[int] = mapped_column(sa.Integer, default=0)
    outcome: Mapped[str] = mapped_column(sa.String(12))
    status_code: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    detail: Mapped[str | None] = mapped_column(sa.String(300), nullable=True)
    at = mapped_column(UTCDateTime, nullable=False)


MESSAGING = messaging_tables(Base.metadata)
