"""群众评单: ratings, scores and the follow-ups a poor rating opens."""
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from nameko.rpc import rpc
from nameko.timer import timer

from lastmile import config, sites
from lastmile.auth import Actor
from lastmile.consumer import event_batch_handler, event_handler
from lastmile.db import is_postgres, locked_row, new_id, paged, upsert, utcnow
from lastmile.errors import EXPECTED, Conflict, Forbidden, InvalidInput, NotFound
from lastmile.events import isoformat
from lastmile.service import LastmileService
from lastmile.store import Store
from lastmile.validation import load
from services.ratings import domain
from services.ratings.models import (
    MESSAGING, Base, CompletedService, FollowUp, Rating, ReportHours, ReportNeed, ScoreRow,
)
from services.ratings.schemas import (
    FollowUpQuerySchema, RatingQuerySchema, RatingSchema, ResolveSchema, StatsQuerySchema,
)

MIGRATIONS = Path(__file__).parent / "migrations"
LOCAL_TIME = ZoneInfo("Asia/Shanghai")


def start_of(day):
    """Midnight of a day in China Standard Time, in UTC."""
    return datetime.combine(day, datetime.min.time(), tzinfo=LOCAL_TIME).astimezone(timezone.utc)


def report_row(report):
    return {"site_id": report.site_id, "category": report.category, "submitted_at": report.submitted_at,
            "approved_at": report.approved_at,
            "accepted_at": report.accepted_at, "completed_at": report.completed_at,
            "people_served": report.people_served, "stars": report.stars,
            "minutes_to_accept": report.minutes_to_accept}


def _iso(value):
    return isoformat(value) if value else None


def rating_view(rating):
    return {
        "id": rating.id, "need_id": rating.need_id, "volunteer_id": rating.volunteer_id, "team_id": rating.team_id,
        "site_id": rating.site_id,
        "category": rating.category, "stars": rating.stars, "tags": rating.tags, "comment": rating.comment,
        "created_at": _iso(rating.created_at),
    }


def follow_up_view(follow_up):
    return {
        "id": follow_up.id, "need_id": follow_up.need_id, "rating_id": follow_up.rating_id,
        "site_id": follow_up.site_id, "responsible_site_id": follow_up.responsible_site_id,
        "escalated_at": _iso(follow_up.escalated_at), "status": follow_up.status, "reason": follow_up.reason,
        "note": follow_up.note, "resolved_by": follow_up.resolved_by, "created_at": _iso(follow_up.created_at),
        "resolved_at": _iso(follow_up.resolved_at),
    }


def _paged(session, stmt, order_by, query, view):
    page, size = query["page"], query["page_size"]
    rows, total = paged(session, stmt, order_by, page, size)
    return {"items": [view(row) for row, in rows], "total": total, "page": page, "page_size": size}


class RatingsService(LastmileService):
    name = "ratings"

    db = Store(Base.metadata, MIGRATIONS, MESSAGING)

    @rpc(expected_exceptions=EXPECTED)
    def submit_rating(self, actor, need_id, data):
        actor = Actor.from_dict(actor)
        data = load(RatingSchema(), data)
        now = utcnow()
        with self.db.session() as session:
            service = session.get(CompletedService, need_id, with_for_update=True) if isinstance(need_id, str) else None
            if service is None:
                raise Conflict("This need has no completed service to rate yet", {"need_id": need_id})
            already = session.scalars(sa.select(Rating.id).where(Rating.need_id == need_id)).first() is not None
            domain.check_may_rate(actor.id, service.owner_id, service.collector_id, service.completed_at, now, already)
            rating = Rating(
                id=new_id(), need_id=need_id, volunteer_id=service.volunteer_id, team_id=service.team_id,
                project_id=service.project_id, site_id=service.site_id,
                category=service.category, stars=data["stars"], tags=sorted(set(data["tags"])),
                comment=data["comment"], by=actor.id, created_at=now,
            )
            session.add(rating)
            session.flush()
            report = session.get(ReportNeed, need_id, with_for_update=True)
            if report is not None:
                report.stars = rating.stars
            self.db.emit(session, "rating_submitted", rating_view(rating), need_id=need_id)
            subjects = [("volunteer", rating.volunteer_id), ("site", rating.site_id)]
            if rating.team_id:
                subjects.append(("team", rating.team_id))
            if rating.project_id:
                subjects.append(("project", rating.project_id))
            for subject_type, subject_id in subjects:
                summary = self._add_to_score(session, subject_type, subject_id, rating.stars)
                self.db.emit(session, "score_updated",
                             {"subject_type": subject_type, "subject_id": subject_id, **summary}, need_id=need_id)
            if domain.needs_follow_up(rating.stars, rating.tags):
                follow_up = FollowUp(
                    id=new_id(), need_id=need_id, rating_id=rating.id, site_id=rating.site_id,
                    responsible_site_id=rating.site_id, status="open",
                    reason=f"{rating.stars} stars" + (f", {', '.join(rating.tags)}" if rating.tags else ""),
                    created_at=now,
                )
                session.add(follow_up)
                session.flush()
                self.db.emit(session, "rating_flagged", follow_up_view(follow_up), need_id=need_id)
            return rating_view(rating)

    @rpc(expected_exceptions=EXPECTED)
    def score(self, subject_type, subject_id):
        with self.db.session() as session:
            row = session.get(ScoreRow, (subject_type, subject_id))
            score = domain.Score()
            if row is not None:
                score = domain.Score(count=row.count, total=row.total, distribution=dict(row.distribution))
            return {"subject_type": subject_type, "subject_id": subject_id, **score.summary()}

    @rpc(expected_exceptions=EXPECTED)
    def list_ratings(self, actor, query):
        query = load(RatingQuerySchema(), query)
        stmt = sa.select(Rating)
        if query["volunteer_id"]:
            stmt = stmt.where(Rating.volunteer_id == query["volunteer_id"])
        if query["team_id"]:
            stmt = stmt.where(Rating.team_id == query["team_id"])
        if query["site_id"]:
            stmt = stmt.where(sa.or_(Rating.site_id == query["site_id"], Rating.site_id.startswith(query["site_id"] + ".")))
        with self.db.session() as session:
            return _paged(session, stmt, (Rating.created_at.desc(), Rating.id), query, rating_view)

    @rpc(expected_exceptions=EXPECTED)
    def list_follow_ups(self, actor, query):
        actor = Actor.from_dict(actor)
        query = load(FollowUpQuerySchema(), query)
        stmt = sa.select(FollowUp)
        if actor.role == "staff":
            # What this staff member must handle: follow-ups their site or one inside it answers for.
            stmt = stmt.where(sa.or_(FollowUp.responsible_site_id == actor.site_id,
                                     FollowUp.responsible_site_id.startswith(actor.site_id + ".")))
        elif not actor.is_admin:
            raise Forbidden("Follow-ups are for staff")
        if query["status"] != "all":
            stmt = stmt.where(FollowUp.status == query["status"])
        with self.db.session() as session:
            return _paged(session, stmt, (FollowUp.created_at.desc(), FollowUp.id), query, follow_up_view)

    @rpc(expected_exceptions=EXPECTED)
    def resolve_follow_up(self, actor, follow_up_id, data):
        actor = Actor.from_dict(actor)
        data = load(ResolveSchema(), data)
        with self.db.session() as session:
            follow_up = session.get(FollowUp, follow_up_id, with_for_update=True) if isinstance(follow_up_id, str) else None
            if follow_up is None or not actor.governs(follow_up.site_id):
                raise NotFound(f"No follow-up {follow_up_id}")
            if follow_up.status != "open":
                raise Conflict("This follow-up is resolved already")
            follow_up.status = "resolved"
            follow_up.note = data["note"]
            follow_up.resolved_by = actor.id
            follow_up.resolved_at = utcnow()
            self.db.emit(session, "follow_up_resolved", follow_up_view(follow_up), need_id=follow_up.need_id)
            return follow_up_view(follow_up)

    @timer(interval=300)
    @rpc
    def escalate_overdue_follow_ups(self):
        """A follow-up its station has not resolved in time goes to the institute."""
        now = utcnow()
        days = config.get_float("LASTMILE_FOLLOW_UP_DAYS")
        with self.db.session() as session:
            stmt = sa.select(FollowUp).where(FollowUp.status == "open", FollowUp.escalated_at.is_(None)).limit(500)
            if is_postgres(session):
                stmt = stmt.with_for_update(skip_locked=True)
            escalated = 0
            for follow_up in session.scalars(stmt):
                parent = sites.parent(follow_up.responsible_site_id)
                if parent is None or not domain.overdue(follow_up.created_at, now, days):
                    continue
                follow_up.responsible_site_id, follow_up.escalated_at = parent, now
                self.db.emit(session, "follow_up_escalated", follow_up_view(follow_up), need_id=follow_up.need_id)
                escalated += 1
            return escalated

    # ---- the center's figures -----------------------------------------------------------

    @rpc(expected_exceptions=EXPECTED)
    def stats(self, actor, query):
        actor = Actor.from_dict(actor)
        query = load(StatsQuerySchema(), query)
        site_id = query["site_id"] or actor.site_id
        if site_id is None:
            raise InvalidInput("Say which site", {"site_id": ["Required."]})
        if not actor.governs(site_id):
            raise Forbidden("Only staff of this site or above see its figures")
        inside_needs = sa.or_(ReportNeed.site_id == site_id, ReportNeed.site_id.startswith(site_id + "."))
        inside_hours = sa.or_(ReportHours.site_id == site_id, ReportHours.site_id.startswith(site_id + "."))
        need_stmt, hours_stmt = sa.select(ReportNeed).where(inside_needs), sa.select(ReportHours).where(inside_hours)
        if query["from_"]:
            need_stmt = need_stmt.where(ReportNeed.submitted_at >= start_of(query["from_"]))
            hours_stmt = hours_stmt.where(ReportHours.service_date >= query["from_"])
        if query["to"]:
            need_stmt = need_stmt.where(ReportNeed.submitted_at < start_of(query["to"] + timedelta(days=1)))
            hours_stmt = hours_stmt.where(ReportHours.service_date <= query["to"])
        with self.db.session() as session:
            needs = [report_row(n) for n in session.scalars(need_stmt)]
            hours = [{"hours": h.hours, "site_id": h.site_id, "category": h.category, "date": h.service_date}
                     for h in session.scalars(hours_stmt)]
        needs_by_day, hours_by_day = defaultdict(list), defaultdict(list)
        for need in needs:
            if need["submitted_at"] is not None:
                needs_by_day[need["submitted_at"].astimezone(LOCAL_TIME).date()].append(need)
        for entry in hours:
            hours_by_day[entry["date"]].append(entry)
        by_category = sorted({n["category"] for n in needs} | {h["category"] for h in hours if h["category"]})
        by_site = sorted({domain.child_site(n["site_id"], site_id) for n in needs}
                         | {domain.child_site(h["site_id"], site_id) for h in hours})
        return {
            "site_id": site_id,
            "from": query["from_"].isoformat() if query["from_"] else None,
            "to": query["to"].isoformat() if query["to"] else None,
            **domain.figures(needs, hours),
            "by_category": {c: domain.figures([n for n in needs if n["category"] == c],
                                              [h for h in hours if h["category"] == c]) for c in by_category},
            "by_site": {s: domain.figures([n for n in needs if domain.child_site(n["site_id"], site_id) == s],
                                          [h for h in hours if domain.child_site(h["site_id"], site_id) == s])
                        for s in by_site},
            # Needs by the China date they were submitted, hours by the date they were served.
            "by_day": {day.isoformat(): domain.figures(needs_by_day[day], hours_by_day[day])
                       for day in sorted(set(needs_by_day) | set(hours_by_day))},
        }

    @event_batch_handler("needs", "need_submitted")
    def report_submitted(self, events):
        self._report(events, "ratings.report_submitted", lambda event, at: {"submitted_at": at},
                     first_only=("submitted_at",))

    @event_batch_handler("needs", "need_status_changed")
    def report_status(self, events):
        def told(event, at):
            to = event["data"]["to"]
            return {"status": to, "approved_at": at} if to == "dispatching" else {"status": to}

        self._report(events, "ratings.report_status", told, first_only=("approved_at",))

    @event_batch_handler("dispatch", "order_assigned")
    def report_assigned(self, events):
        # The first acceptance counts, not a reassignment.
        self._report(events, "ratings.report_assigned",
                     lambda event, at: {"accepted_at": at, "minutes_to_accept": event["data"].get("minutes_to_accept")},
                     first_only=("accepted_at", "minutes_to_accept"), snapshot=lambda event: event["data"].get("need"))

    @event_handler("volunteers", "hours_credited")
    def report_hours(self, event):
        data = event["data"]
        with self.db.session() as session:
            if not self.db.first_delivery(session, event, "ratings.report_hours"):
                return
            session.merge(ReportHours(entry_id=data["entry_id"], need_id=event["need_id"], site_id=data["site_id"],
                                      category=data.get("category"), hours=data["hours"],
                                      service_date=date.fromisoformat(data["service_date"])))

    def _report(self, events, consumer, told, first_only=(), snapshot=None):
        """Fold each event into its need's report row, all in one transaction: the row
        takes the values ``told(event, when)`` gives, except those named in
        ``first_only``, which keep theirs once the first of them has one."""
        table = ReportNeed.__table__
        with self.db.session() as session:
            for event in self.db.first_deliveries(session, events, consumer):
                need = (snapshot(event) if snapshot else None) or event["data"]
                values = told(event, datetime.fromisoformat(event["occurred_at"].replace("Z", "+00:00")))
                changes = {}
                for name, value in values.items():
                    value = sa.literal(value, table.c[name].type)
                    if name in first_only:
                        value = sa.case((table.c[first_only[0]].is_(None), value), else_=table.c[name])
                    changes[name] = value
                # Events of one need arrive on several queues at once: made without racing.
                upsert(session, table, {"need_id": event["need_id"], "site_id": need["site_id"],
                                        "category": need["category"], "status": "submitted", **values}, changes)

    @event_handler("volunteers", "service_completed")
    def on_service_completed(self, event):
        data = event["data"]
        self._report([event], "ratings.report_completed",
                     lambda event, at: {"completed_at": at, "people_served": data.get("beneficiaries_served")},
                     first_only=("completed_at",))
        with self.db.session() as session:
            if not self.db.first_delivery(session, event, "ratings.service_completed"):
                return
            if session.get(CompletedService, event["need_id"]) is not None:
                return
            session.add(CompletedService(
                need_id=event["need_id"], volunteer_id=data["volunteer_id"], team_id=data.get("team_id"),
                project_id=data.get("project_id"), owner_id=data.get("owner_id"),
                collector_id=data.get("collector_id"), site_id=data["site_id"], category=data["category"],
                completed_at=utcnow(),
            ))

    def _add_to_score(self, session, subject_type, subject_id, stars):
        # Create the row if it is missing without racing another first rating of the
        # same subject (two inserts would make one rating fail), then lock it.
        row = locked_row(session, ScoreRow, subject_type=subject_type, subject_id=subject_id, count=0,
                         total=0.0, distribution=domain.Score().distribution)
        score = domain.Score(count=row.count, total=row.total, distribution=dict(row.distribution))
        score.add(stars)
        row.count, row.total, row.distribution = score.count, score.total, score.distribution
        return score.summary()
