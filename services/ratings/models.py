import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from lastmile.db import UTCDateTime
from lastmile.outbox import messaging_tables


class Base(DeclarativeBase):
    pass


class CompletedService(Base):
    """A service that may be rated, as volunteers told us."""

    __tablename__ = "completed_services"
    need_id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    volunteer_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    team_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    project_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    owner_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    collector_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    site_id: Mapped[str] = mapped_column(sa.String(128))
    category: Mapped[str] = mapped_column(sa.String(32))
    completed_at = mapped_column(UTCDateTime, nullable=False)


class Rating(Base):
    __tablename__ = "ratings"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    need_id: Mapped[str] = mapped_column(sa.String(36), unique=True)
    volunteer_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    team_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True, index=True)
    project_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    site_id: Mapped[str] = mapped_column(sa.String(128), index=True)
    category: Mapped[str] = mapped_column(sa.String(32))
    stars: Mapped[int] = mapped_column(sa.Integer)
    tags = mapped_column(sa.JSON, nullable=False)
    comment: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
    by: Mapped[str] = mapped_column(sa.String(36))
    created_at = mapped_column(UTCDateTime, nullable=False)


class ScoreRow(Base):
    __tablename__ = "scores"
    subject_type: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    subject_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    count: Mapped[int] = mapped_column(sa.Integer, default=0)
    total: Mapped[float] = mapped_column(sa.Float, default=0.0)
    distribution = mapped_column(sa.JSON, nullable=False)


class FollowUp(Base):
    __tablename__ = "follow_ups"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    need_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    rating_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("ratings.id"))
    site_id: Mapped[str] = mapped_column(sa.String(128), index=True)
    # Who must handle it: the need's station, then its institute once overdue.
    responsible_site_id: Mapped[str] = mapped_column(sa.String(128), index=True, default="")
    escalated_at = mapped_column(UTCDateTime, nullable=True)
    status: Mapped[str] = mapped_column(sa.String(16))
    reason: Mapped[str] = mapped_column(sa.String(200))
    note: Mapped[str | None] = mapped_column(sa.String(1000), nullable=True)
    resolved_by: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    created_at = mapped_column(UTCDateTime, nullable=False)
    resolved_at = mapped_column(UTCDateTime, nullable=True)


class ReportNeed(Base):
    """The reporting view of one need, kept current by the events of every service,
    so that the center's figures never query another service's database."""

    __tablename__ = "report_needs"
    need_id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    site_id: Mapped[str] = mapped_column(sa.String(128), index=True)
    category: Mapped[str] = mapped_column(sa.String(32))
    status: Mapped[str] = mapped_column(sa.String(16))
    submitted_at = mapped_column(UTCDateTime, nullable=True, index=True)
    approved_at = mapped_column(UTCDateTime, nullable=True)
    accepted_at = mapped_column(UTCDateTime, nullable=True)
    minutes_to_accept: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    completed_at = mapped_column(UTCDateTime, nullable=True)
    people_served: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    stars: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)


class ReportHours(Base):
    """Each credited hours entry, by the day it was served."""

    __tablename__ = "report_hours"
    entry_id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    need_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    site_id: Mapped[str] = mapped_column(sa.String(128), index=True)
    category: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    hours: Mapped[float] = mapped_column(sa.Float)
    service_date = mapped_column(sa.Date, nullable=False, index=True)


MESSAGING = messaging_tables(Base.metadata)
