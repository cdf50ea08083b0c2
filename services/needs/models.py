import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from lastmile.db import UTCDateTime
from lastmile.outbox import messaging_tables


class Base(DeclarativeBase):
    pass


class Site(Base):
    __tablename__ = "sites"
    id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64))
    level: Mapped[str] = mapped_column(sa.String(16))
    parent_id: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)
    auto_approve: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    lat: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    lon: Mapped[float | None] = mapped_column(sa.Float, nullable=True)


class Category(Base):
    __tablename__ = "categories"
    code: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64))
    active: Mapped[bool] = mapped_column(sa.Boolean, default=True)


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(80))
    category: Mapped[str] = mapped_column(sa.String(32))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    team_name: Mapped[str | None] = mapped_column(sa.String(80), nullable=True)
    site_id: Mapped[str] = mapped_column(sa.String(128), index=True)
    active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    created_at = mapped_column(UTCDateTime, nullable=False)


class Need(Base):
    __tablename__ = "needs"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    status: Mapped[str] = mapped_column(sa.String(16), index=True)
    channel: Mapped[str] = mapped_column(sa.String(16))
    category: Mapped[str] = mapped_column(sa.String(32), index=True)
    project_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    title: Mapped[str] = mapped_column(sa.String(60))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    site_id: Mapped[str] = mapped_column(sa.String(128), index=True)
    address: Mapped[str] = mapped_column(sa.String(200))
    contact_phone: Mapped[str] = mapped_column(sa.String(16))
    contact_name: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    beneficiary_group: Mapped[str] = mapped_column(sa.String(32))
    beneficiaries: Mapped[int] = mapped_column(sa.Integer)
    urgency: Mapped[str] = mapped_column(sa.String(8))
    window_start = mapped_column(UTCDateTime, nullable=True)
    window_end = mapped_column(UTCDateTime, nullable=True)
    lat: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    lon: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    owner_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    collector_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True, index=True)
    possible_duplicate: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    volunteer_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    assignee_user_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    rejection_reason: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)
    request_fingerprint: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    created_at = mapped_column(UTCDateTime, nullable=False, index=True)
    updated_at = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (sa.UniqueConstraint("owner_id", "idempotency_key", name="uq_needs_idempotency"),)


class NeedHistory(Base):
    __tablename__ = "need_history"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    need_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("needs.id"), index=True)
    status: Mapped[str] = mapped_column(sa.String(16))
    at = mapped_column(UTCDateTime, nullable=False)
    by: Mapped[str] = mapped_column(sa.String(36))
    note: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)


class BeneficiaryCount(Base):
    """弱势群体底数: how many residents of a group a station's collectors and staff know of."""

    __tablename__ = "beneficiary_counts"
    site_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    group: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    count: Mapped[int] = mapped_column(sa.Integer)
    updated_by: Mapped[str] = mapped_column(sa.String(36))
    updated_at = mapped_column(UTCDateTime, nullable=False)


class BeneficiaryEntry(Base):
    """A named resident of a group; phone and ID number leave the service masked
    except to staff."""

    __tablename__ = "beneficiary_entries"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    site_id: Mapped[str] = mapped_column(sa.String(128), index=True)
    group: Mapped[str] = mapped_column(sa.String(32))
    name: Mapped[str] = mapped_column(sa.String(64))
    phone: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    id_number: Mapped[str | None] = mapped_column(sa.String(18), nullable=True)
    note: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
    recorded_by: Mapped[str] = mapped_column(sa.String(36))
    created_at = mapped_column(UTCDateTime, nullable=False)


MESSAGING = messaging_tables(Base.metadata)
