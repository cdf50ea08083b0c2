import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from lastmile.db import UTCDateTime
from lastmile.outbox import messaging_tables


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    phone: Mapped[str] = mapped_column(sa.String(16), unique=True)
    password_hash: Mapped[str] = mapped_column(sa.String(200))
    name: Mapped[str] = mapped_column(sa.String(64))
    role: Mapped[str] = mapped_column(sa.String(16))
    site_id: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)
    # Raised when the password changes, so older tokens stop working.
    token_version: Mapped[int] = mapped_column(sa.Integer, default=1)
    created_at = mapped_column(UTCDateTime, nullable=False)


class LoginFailures(Base):
    """Failed logins in a row per phone: five lock the phone out for a minute."""

    __tablename__ = "login_failures"
    phone: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    count: Mapped[int] = mapped_column(sa.Integer, default=0)
    locked_until = mapped_column(UTCDateTime, nullable=True)


class ApiKey(Base):
    """A key an admin issued to another system, e.g. for Open311 writes. Only its
    SHA-256 is kept."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(80))
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_by: Mapped[str] = mapped_column(sa.String(36))
    created_at = mapped_column(UTCDateTime, nullable=False)
    revoked: Mapped[bool] = mapped_column(sa.Boolean, default=False)


class EventLogEntry(Base):
    """The order events, in the order they reached the gateway, for subscribers to
    read from a cursor (``seq``). Stored as subscribers may see them: masked."""

    __tablename__ = "event_log"
    seq: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(sa.String(36), unique=True)
    type: Mapped[str] = mapped_column(sa.String(64), index=True)
    source: Mapped[str] = mapped_column(sa.String(32))
    need_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True, index=True)
    site_id: Mapped[str | None] = mapped_column(sa.String(128), nullable=True, index=True)
    occurred_at = mapped_column(UTCDateTime, nullable=False)
    body = mapped_column(sa.JSON, nullable=False)


class Subscription(Base):
    """A webhook: events of some types POSTed, signed, in order, to a URL."""

    __tablename__ = "subscriptions"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    url: Mapped[str] = mapped_column(sa.String(2000))
    types = mapped_column(sa.JSON, nullable=False)
    site_id: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)
    secret: Mapped[str] = mapped_column(sa.String(200))
    active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    # The last event log position delivered (or skipped as not wanted).
    cursor: Mapped[int] = mapped_column(sa.Integer, default=0)
    failures: Mapped[int] = mapped_column(sa.Integer, default=0)
    retry_at = mapped_column(UTCDateTime, nullable=True)
    created_by: Mapped[str] = mapped_column(sa.String(36))
    created_at = mapped_column(UTCDateTime, nullable=False)


class Delivery(Base):
    """One attempt to deliver one event to one subscription, and how it went."""

    __tablename__ = "deliveries"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    subscription_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("subscriptions.id"), index=True)
    seq: Mapped[int] = mapped_column(sa.Integer)
    event_id: Mapped[str] = mapped_column(sa.String(36))
    attempt: Mapped[int] = mapped_column(sa.Integer)
    status_code: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
    delivered: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    at = mapped_column(UTCDateTime, nullable=False)


class Setting(Base):
    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    value: Mapped[str] = mapped_column(sa.Text)


MESSAGING = messaging_tables(Base.metadata)
