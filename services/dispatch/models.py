import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from lastmile.db import UTCDateTime
from lastmile.outbox import messaging_tables


class Base(DeclarativeBase):
    pass


class Candidate(Base):
    """Dispatch's own projection of the volunteers, kept by their events."""

    __tablename__ = "candidates"
    volunteer_id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True, index=True)
    name: Mapped[str] = mapped_column(sa.String(64), default="")
    site_id: Mapped[str] = mapped_column(sa.String(128), index=True)
    lat: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    lon: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    availability = mapped_column(sa.JSON, nullable=True)
    active_assignments: Mapped[int] = mapped_column(sa.Integer, default=0)
    rating_count: Mapped[int] = mapped_column(sa.Integer, default=0)
    rating_sum: Mapped[float] = mapped_column(sa.Float, default=0.0)
    recent_hours: Mapped[float] = mapped_column(sa.Float, default=0.0)
    recent_offers: Mapped[int] = mapped_column(sa.Integer, default=0)
    accepted: Mapped[int] = mapped_column(sa.Integer, default=0)
    declined: Mapped[int] = mapped_column(sa.Integer, default=0)  # declined or left to expire
    revision: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    updated_at = mapped_column(UTCDateTime, nullable=False)


class CandidateSkill(Base):
    """One row per volunteer and skill, and the index matching searches: besides the
    key it carries a copy of what ranking needs from the candidate (see
    ``services/dispatch/matching.py``, which keeps the copy current whenever the ORM
    writes a candidate)."""

    __tablename__ = "candidate_skills"
    volunteer_id: Mapped[str] = mapped_column(
        sa.String(36), sa.ForeignKey("candidates.volunteer_id", ondelete="CASCADE"), primary_key=True
    )
    category: Mapped[str] = mapped_column(sa.String(32), primary_key=True, index=True)
    active: Mapped[bool | None] = mapped_column(sa.Boolean, nullable=True)
    site_id: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)
    # The site's enclosing institute and district (its own id at its own level).
    institute_id: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)
    district_id: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)
    lat: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    lon: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    # Grid square of 0.01 degree holding (lat, lon); null without coordinates.
    cell: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    # The part of the score that does not depend on the need: rating + fairness + acceptance.
    static_score: Mapped[float | None] = mapped_column(sa.Float, nullable=True)

    __table_args__ = (
        # Those with coordinates, by grid square: it carries what their key needs.
        sa.Index("ix_candidate_skills_cell", "category", "active", "cell", "static_score",
                 postgresql_include=["volunteer_id", "site_id", "lat", "lon"],
                 postgresql_where=sa.text("cell IS NOT NULL"), sqlite_where=sa.text("cell IS NOT NULL")),
        sa.Index("ix_candidate_skills_station", "category", "active", "site_id", "static_score"),
        # Those without coordinates, ranked by the site tree when the need has coordinates.
        sa.Index("ix_candidate_skills_placeless", "category", "active", "site_id", "static_score",
                 postgresql_where=sa.text("cell IS NULL"), sqlite_where=sa.text("cell IS NULL")),
        sa.Index("ix_candidate_skills_institute", "category", "active", "institute_id", "static_score"),
        sa.Index("ix_candidate_skills_district", "category", "active", "district_id", "static_score"),
    )


class TeamCandidate(Base):
    """Dispatch's projection of the teams: a team's offers go to its leader."""

    __tablename__ = "team_candidates"
    team_id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(80))
    site_id: Mapped[str] = mapped_column(sa.String(128), index=True)
    leader_volunteer_id: Mapped[str] = mapped_column(sa.String(36))
    leader_user_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    member_ids = mapped_column(sa.JSON, nullable=False)
    revision: Mapped[int] = mapped_column(sa.Integer, default=0)
    updated_at = mapped_column(UTCDateTime, nullable=False)


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    need_id: Mapped[str] = mapped_column(sa.String(36), unique=True)
    status: Mapped[str] = mapped_column(sa.String(16), index=True)
    need = mapped_column(sa.JSON, nullable=False)
    category: Mapped[str] = mapped_column(sa.String(32))
    site_id: Mapped[str] = mapped_column(sa.String(128), index=True)
    urgency: Mapped[str] = mapped_column(sa.String(8))
    strategy: Mapped[str] = mapped_column(sa.String(16))
    level: Mapped[str] = mapped_column(sa.String(16))
    offers_at_level: Mapped[int] = mapped_column(sa.Integer, default=0)
    volunteer_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    user_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    team_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    # Set when the first check-in is heard of: from then on the need cannot be reassigned.
    started_at = mapped_column(UTCDateTime, nullable=True)
    approved_at = mapped_column(UTCDateTime, nullable=True)
    assigned_at = mapped_column(UTCDateTime, nullable=True)
    created_at = mapped_column(UTCDateTime, nullable=False)
    updated_at = mapped_column(UTCDateTime, nullable=False)


class Offer(Base):
    __tablename__ = "offers"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    order_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("orders.id"), index=True)
    need_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    volunteer_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    user_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True, index=True)
    status: Mapped[str] = mapped_column(sa.String(16))
    level: Mapped[str] = mapped_column(sa.String(16))
    team_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    manual: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    score: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    score_parts = mapped_column(sa.JSON, nullable=True)
    deadline = mapped_column(UTCDateTime, nullable=False)
    reason: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
    created_at = mapped_column(UTCDateTime, nullable=False)
    responded_at = mapped_column(UTCDateTime, nullable=True)
    # Never loaded (order_id is what the code sets and reads): it tells a flush to insert
    # an order before the offers that refer to it.
    order: Mapped[Order] = relationship(lazy="raise")

    __table_args__ = (sa.Index("ix_offers_pending_deadline", "status", "deadline"),)


MESSAGING = messaging_tables(Base.metadata)
