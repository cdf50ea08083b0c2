import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from lastmile.db import UTCDateTime
from lastmile.outbox import messaging_tables


class Base(DeclarativeBase):
    pass


class Volunteer(Base):
    __tablename__ = "volunteers"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(sa.String(36), unique=True)
    number: Mapped[str] = mapped_column(sa.String(32), unique=True)
    name: Mapped[str] = mapped_column(sa.String(64))
    phone: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    # Real-name registration: kept here, and only its masked form ever leaves the service.
    id_number: Mapped[str | None] = mapped_column(sa.String(18), nullable=True)
    skills = mapped_column(sa.JSON, nullable=False)
    site_id: Mapped[str] = mapped_column(sa.String(128), index=True)
    lat: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    lon: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    availability = mapped_column(sa.JSON, nullable=True)
    status: Mapped[str] = mapped_column(sa.String(16), default="active")
    # Raised on every change and sent with each event, so that a projection can tell
    # a late, older event from the newest one.
    revision: Mapped[int] = mapped_column(sa.Integer, default=1, server_default="1")
    created_at = mapped_column(UTCDateTime, nullable=False)
    updated_at = mapped_column(UTCDateTime, nullable=False)


class Team(Base):
    """志愿服务队: a team at a site, led by one of its members."""

    __tablename__ = "teams"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(80))
    type: Mapped[str] = mapped_column(sa.String(16))
    site_id: Mapped[str] = mapped_column(sa.String(128), index=True)
    leader_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("volunteers.id"))
    revision: Mapped[int] = mapped_column(sa.Integer, default=1)
    created_at = mapped_column(UTCDateTime, nullable=False)


class TeamMember(Base):
    __tablename__ = "team_members"
    team_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("teams.id"), primary_key=True)
    volunteer_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("volunteers.id"), primary_key=True)
    joined_at = mapped_column(UTCDateTime, nullable=False)


class Assignment(Base):
    """A need assigned to a volunteer, as dispatch told us."""

    __tablename__ = "assignments"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    need_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    volunteer_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("volunteers.id"), index=True)
    status: Mapped[str] = mapped_column(sa.String(16))
    # Set when the need was assigned to a team: each member has an assignment of their own.
    team_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    need = mapped_column(sa.JSON, nullable=False)
    assigned_at = mapped_column(UTCDateTime, nullable=False)
    updated_at = mapped_column(UTCDateTime, nullable=False)


class AssignmentClosure(Base):
    """A need cancelled, or a volunteer released from it. Kept because the closing
    event may arrive before the assignment it closes (they come from different
    services), and the late assignment must then open closed."""

    __tablename__ = "assignment_closures"
    need_id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    # "*" when the whole need is closed (cancelled), else the released volunteer.
    volunteer_id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    status: Mapped[str] = mapped_column(sa.String(16))
    closed_at = mapped_column(UTCDateTime, nullable=False)


class ServiceRecord(Base):
    """志愿服务记录: what one volunteer did for one need."""

    __tablename__ = "service_records"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    assignment_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("assignments.id"), unique=True)
    need_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    volunteer_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("volunteers.id"), index=True)
    site_id: Mapped[str] = mapped_column(sa.String(128))
    category: Mapped[str] = mapped_column(sa.String(32))
    title: Mapped[str] = mapped_column(sa.String(80))
    check_in_at = mapped_column(UTCDateTime, nullable=False)
    check_in_lat: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    check_in_lon: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    check_out_at = mapped_column(UTCDateTime, nullable=True)
    check_out_lat: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    check_out_lon: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    hours: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    summary: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    beneficiaries_served: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    flagged: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    flag_reason: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    reviewed_by: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    reviewed_at = mapped_column(UTCDateTime, nullable=True)
    review: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)  # approved | refused
    # The resident's evaluation, once given (评单).
    rating_stars: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    rating_tags = mapped_column(sa.JSON, nullable=True)
    rating_comment: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)


class HoursEntry(Base):
    """The append-only hours ledger: corrections are new entries, never edits."""

    __tablename__ = "hours_ledger"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    volunteer_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("volunteers.id"), index=True)
    need_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    record_id: Mapped[str | None] = mapped_column(sa.String(36), sa.ForeignKey("service_records.id"), nullable=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    hours: Mapped[float] = mapped_column(sa.Float)
    service_date = mapped_column(sa.Date, nullable=False)
    request_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    created_at = mapped_column(UTCDateTime, nullable=False)

    # One checked-in entry per service record, whatever is redelivered.
    __table_args__ = (
        sa.UniqueConstraint("record_id", "kind", name="uq_hours_record_kind"),
        sa.UniqueConstraint("request_id", name="uq_hours_ledger_request_id"),
    )


class HoursRequest(Base):
    """A correction or backfill (补录) asked for by a volunteer, decided by staff."""

    __tablename__ = "hours_requests"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    volunteer_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("volunteers.id"), index=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    hours: Mapped[float] = mapped_column(sa.Float)
    service_date = mapped_column(sa.Date, nullable=False)
    need_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    reason: Mapped[str] = mapped_column(sa.String(1000))
    status: Mapped[str] = mapped_column(sa.String(16), index=True)
    site_id: Mapped[str] = mapped_column(sa.String(128), index=True)
    decided_by: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    decision_note: Mapped[str | None] = mapped_column(sa.String(1000), nullable=True)
    created_at = mapped_column(UTCDateTime, nullable=False)
    decided_at = mapped_column(UTCDateTime, nullable=True)


class Certificate(Base):
    """志愿服务证明: what was certified, kept as issued so anyone can verify it."""

    __tablename__ = "certificates"
    number: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    volunteer_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("volunteers.id"), index=True)
    content = mapped_column(sa.JSON, nullable=False)
    issued_at = mapped_column(UTCDateTime, nullable=False)


MESSAGING = messaging_tables(Base.metadata)
