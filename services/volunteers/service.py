"""志愿者: volunteers, their assignments, check-in and check-out, and the hours ledger."""
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from nameko.rpc import rpc

from lastmile import config
from lastmile.auth import Actor
from lastmile.consumer import event_handler
from lastmile.db import new_id, utcnow
from lastmile.errors import EXPECTED, Conflict, Forbidden, InvalidInput, NotFound, NotReady
from lastmile.events import isoformat
from lastmile.store import Store
from lastmile.validation import load, mask_phone
from services.volunteers import domain, schemas
from services.volunteers.models import (
    MESSAGING, Assignment, AssignmentClosure, Base, HoursEntry, ServiceRecord, Team, TeamMember, Volunteer,
)

MIGRATIONS = Path(__file__).parent / "migrations"
LOCAL_DAY_OFFSET_HOURS = 8  # service dates are counted in China Standard Time


def _iso(value):
    return isoformat(value) if value else None


def volunteer_view(volunteer, actor=None):
    view = {
        "id": volunteer.id,
        "user_id": volunteer.user_id,
        "number": volunteer.number,
        "name": volunteer.name,
        "phone": volunteer.phone,
        "skills": volunteer.skills,
        "site_id": volunteer.site_id,
        "lat": volunteer.lat,
        "lon": volunteer.lon,
        "availability": volunteer.availability,
        "status": volunteer.status,
        "created_at": _iso(volunteer.created_at),
    }
    if actor is not None and not (actor.id == volunteer.user_id or actor.governs(volunteer.site_id)):
        view["phone"] = mask_phone(volunteer.phone)
        view["lat"] = view["lon"] = None
    return view


def volunteer_event(volunteer):
    """What dispatch's candidate projection needs to know."""
    return {
        "volunteer_id": volunteer.id, "user_id": volunteer.user_id, "name": volunteer.name,
        "skills": volunteer.skills, "site_id": volunteer.site_id, "lat": volunteer.lat, "lon": volunteer.lon,
        "availability": volunteer.availability, "status": volunteer.status, "revision": volunteer.revision,
    }


def record_view(record):
    return {
        "id": record.id, "need_id": record.need_id, "site_id": record.site_id, "category": record.category,
        "title": record.title, "check_in_at": _iso(record.check_in_at), "check_out_at": _iso(record.check_out_at),
        "hours": record.hours, "summary": record.summary, "beneficiaries_served": record.beneficiaries_served,
        "flagged": record.flagged, "flag_reason": record.flag_reason,
    }


def hours_rule():
    return domain.HoursRule(
        minimum_minutes=config.get_float("LASTMILE_HOURS_MINIMUM_MINUTES"),
        step_minutes=config.get_float("LASTMILE_HOURS_STEP_MINUTES"),
        daily_cap_hours=config.get_float("LASTMILE_HOURS_DAILY_CAP"),
        geofence_metres=config.get_float("LASTMILE_GEOFENCE_METRES"),
    )


def local_date(moment):
    return (moment + timedelta(hours=LOCAL_DAY_OFFSET_HOURS)).date()


class VolunteersService:
    name = "volunteers"

    db = Store(Base.metadata, MIGRATIONS, MESSAGING)

    @rpc
    def health(self):
        with self.db.session() as session:
            session.execute(sa.text("SELECT 1"))
        return {"service": self.name, "ok": True}

    # ---- profiles ------------------------------------------------------------------

    @rpc(expected_exceptions=EXPECTED)
    def create_volunteer(self, actor, data):
        actor = Actor.from_dict(actor)
        if actor.role != "volunteer":
            raise Forbidden("Register as a volunteer to create a volunteer profile")
        data = load(schemas.VolunteerCreateSchema(), data)
        now = utcnow()
        with self.db.session() as session:
            if session.scalars(sa.select(Volunteer.id).where(Volunteer.user_id == actor.id)).first():
                raise Conflict("You have a volunteer profile already; change it with PATCH")
            volunteer_id = new_id()
            volunteer = Volunteer(
                id=volunteer_id, user_id=actor.id, number=domain.volunteer_number(volunteer_id, now.year),
                status="active", revision=1, created_at=now, updated_at=now, **data,
            )
            session.add(volunteer)
            try:
                session.flush()
            except sa.exc.IntegrityError:
                # The same user registering twice at once: the unique user_id refuses the second.
                raise Conflict("You have a volunteer profile already; change it with PATCH")
            self.db.emit(session, "volunteer_registered", volunteer_event(volunteer))
            return volunteer_view(volunteer)

    @rpc(expected_exceptions=EXPECTED)
    def get_volunteer(self, actor, volunteer_id):
        actor = Actor.from_dict(actor)
        with self.db.session() as session:
            return volunteer_view(self._volunteer(session, volunteer_id), actor)

    @rpc(expected_exceptions=EXPECTED)
    def my_volunteer(self, actor):
        actor = Actor.from_dict(actor)
        with self.db.session() as session:
            volunteer = session.scalars(sa.select(Volunteer).where(Volunteer.user_id == actor.id)).first()
            if volunteer is None:
                raise NotFound("You have no volunteer profile yet; create one with POST /volunteers")
            return volunteer_view(volunteer)

    @rpc(expected_exceptions=EXPECTED)
    def update_volunteer(self, actor, volunteer_id, data):
        actor = Actor.from_dict(actor)
        data = load(schemas.VolunteerUpdateSchema(), data, partial=True)
        with self.db.session() as session:
            volunteer = self._volunteer(session, volunteer_id, lock=True)
            is_self = volunteer.user_id == actor.id
            is_staff = actor.governs(volunteer.site_id)
            if not (is_self or is_staff):
                raise Forbidden("Only the volunteer or staff of their site may change this profile")
            if "status" in data and not is_staff:
                raise Forbidden("Only staff suspend or reinstate a volunteer")
            for key, value in data.items():
                setattr(volunteer, key, value)
            volunteer.updated_at = utcnow()
            volunteer.revision += 1
            self.db.emit(session, "volunteer_updated", volunteer_event(volunteer))
            return volunteer_view(volunteer)

    # ---- teams (志愿服务队) ---------------------------------------------------------------

    @rpc(expected_exceptions=EXPECTED)
    def create_team(self, actor, data):
        actor = Actor.from_dict(actor)
        data = load(schemas.TeamCreateSchema(), data)
        now = utcnow()
        with self.db.session() as session:
            if actor.role == "volunteer":
                leader = session.scalars(sa.select(Volunteer).where(Volunteer.user_id == actor.id)).first()
                if leader is None:
                    raise Conflict("Create your volunteer profile before a team")
                if data["leader_volunteer_id"] not in (None, leader.id):
                    raise Forbidden("A volunteer creates a team they lead themself")
            elif actor.governs(data["site_id"]):
                if not data["leader_volunteer_id"]:
                    raise InvalidInput("Name the team's leader", {"leader_volunteer_id": ["Required for staff."]})
                leader = self._volunteer(session, data["leader_volunteer_id"])
            else:
                raise Forbidden("Only volunteers and staff of an enclosing site create teams here")
            team = Team(id=new_id(), name=data["name"], type=data["type"], site_id=data["site_id"],
                        leader_id=leader.id, revision=1, created_at=now)
            session.add(team)
            session.flush()
            session.add(TeamMember(team_id=team.id, volunteer_id=leader.id, joined_at=now))
            session.flush()
            view = self._team_view(session, team)
            self.db.emit(session, "team_registered", self._team_event(view, team, leader))
            return view

    @rpc(expected_exceptions=EXPECTED)
    def list_teams(self, actor, query):
        query = load(schemas.TeamQuerySchema(), query)
        with self.db.session() as session:
            stmt = sa.select(Team).order_by(Team.site_id, Team.name)
            if query["site_id"]:
                stmt = stmt.where(sa.or_(Team.site_id == query["site_id"],
                                         Team.site_id.startswith(query["site_id"] + ".")))
            teams = session.scalars(stmt).all()
            return {"items": [self._team_view(session, t) for t in teams], "total": len(teams)}

    @rpc(expected_exceptions=EXPECTED)
    def get_team(self, actor, team_id):
        with self.db.session() as session:
            return self._team_view(session, self._team(session, team_id))

    @rpc(expected_exceptions=EXPECTED)
    def add_team_member(self, actor, team_id, data):
        actor = Actor.from_dict(actor)
        data = load(schemas.TeamMemberSchema(), data)
        with self.db.session() as session:
            team = self._team(session, team_id, lock=True)
            leader = session.get(Volunteer, team.leader_id)
            if not (leader.user_id == actor.id or actor.governs(team.site_id)):
                raise Forbidden("Only the team's leader or staff of its site manage its members")
            member = self._volunteer(session, data["volunteer_id"])
            if session.get(TeamMember, (team.id, member.id)) is not None:
                raise Conflict("Already a member of this team")
            session.add(TeamMember(team_id=team.id, volunteer_id=member.id, joined_at=utcnow()))
            team.revision += 1
            session.flush()
            view = self._team_view(session, team)
            self.db.emit(session, "team_updated", self._team_event(view, team, leader))
            return view

    # ---- service -------------------------------------------------------------------

    @rpc(expected_exceptions=EXPECTED)
    def check_in(self, actor, need_id, data=None):
        actor = Actor.from_dict(actor)
        data = load(schemas.CheckInSchema(), data or {})
        now = utcnow()
        with self.db.session() as session:
            assignment, volunteer = self._own_assignment(session, actor, need_id)
            domain.check_can_check_in(assignment.status)
            need = assignment.need
            flagged = domain.outside_geofence(need.get("lat"), need.get("lon"), data["lat"], data["lon"],
                                             hours_rule())
            record = ServiceRecord(
                id=new_id(), assignment_id=assignment.id, need_id=need_id, volunteer_id=volunteer.id,
                site_id=need["site_id"], category=need["category"], title=need.get("title", "")[:80],
                check_in_at=now, check_in_lat=data["lat"], check_in_lon=data["lon"], flagged=flagged,
                flag_reason="check-in outside the geofence" if flagged else None,
            )
            session.add(record)
            assignment.status = domain.IN_SERVICE
            assignment.updated_at = now
            session.flush()
            self.db.emit(session, "service_started",
                         {"volunteer_id": volunteer.id, "user_id": volunteer.user_id, "record_id": record.id,
                          "check_in_at": _iso(now), "flagged": flagged}, need_id=need_id)
            return record_view(record)

    @rpc(expected_exceptions=EXPECTED)
    def check_out(self, actor, need_id, data):
        """Close the caller's service record and credit its hours. A team's service
        is complete when its leader checks out: members still serving are checked
        out with the leader, members who never came are released."""
        actor = Actor.from_dict(actor)
        data = load(schemas.CheckOutSchema(), data)
        now = utcnow()
        with self.db.session() as session:
            assignment, volunteer = self._own_assignment(session, actor, need_id)
            domain.check_can_check_out(assignment.status)
            record = self._close_service(session, assignment, volunteer, now, data)
            team = session.get(Team, assignment.team_id) if assignment.team_id else None
            if team is not None and team.leader_id != volunteer.id:
                return record_view(record)
            team_hours = record.hours
            if team is not None:
                for other, member in session.execute(
                    sa.select(Assignment, Volunteer).join(Volunteer, Volunteer.id == Assignment.volunteer_id)
                    .where(Assignment.need_id == need_id, Assignment.team_id == team.id,
                           Assignment.id != assignment.id,
                           Assignment.status.in_((domain.ASSIGNED, domain.IN_SERVICE)))
                    .with_for_update()
                ).all():
                    if other.status == domain.IN_SERVICE:
                        closed = self._close_service(session, other, member, now,
                                                     {"lat": None, "lon": None, "summary": data["summary"],
                                                      "beneficiaries_served": 0})
                        team_hours += closed.hours
                    else:
                        other.status, other.updated_at = domain.RELEASED, now
            need = assignment.need
            completed = {
                "volunteer_id": volunteer.id, "user_id": volunteer.user_id, "record_id": record.id,
                "team_id": team.id if team else None,
                # Credited now; a flagged record's hours wait for staff (pending_hours).
                "hours": 0.0 if record.flagged else record.hours,
                "pending_hours": record.hours if record.flagged else 0.0,
                "team_hours": round(team_hours, 4),
                "beneficiaries_served": record.beneficiaries_served,
                "check_in_at": _iso(record.check_in_at), "check_out_at": _iso(now), "flagged": record.flagged,
                "site_id": need["site_id"], "category": need["category"], "owner_id": need.get("owner_id"),
                "collector_id": need.get("collector_id"),
            }
            self.db.emit(session, "service_completed", completed, need_id=need_id)
            return record_view(record)

    def _close_service(self, session, assignment, volunteer, now, data):
        record = session.scalars(
            sa.select(ServiceRecord).where(ServiceRecord.assignment_id == assignment.id)
        ).one()
        day = local_date(record.check_in_at)
        already = session.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(HoursEntry.hours), 0.0)).where(
                HoursEntry.volunteer_id == volunteer.id, HoursEntry.service_date == day,
                HoursEntry.kind == "checked_in",
            )
        )
        record.check_out_at = now
        record.check_out_lat, record.check_out_lon = data["lat"], data["lon"]
        record.summary = data["summary"]
        record.beneficiaries_served = data["beneficiaries_served"]
        record.hours = domain.credited_hours(record.check_in_at, now, hours_rule(), already_today=float(already or 0))
        assignment.status = domain.COMPLETED
        assignment.updated_at = now
        if not record.flagged:
            self._credit(session, volunteer, record, day, now)
        return record

    @rpc(expected_exceptions=EXPECTED)
    def get_hours(self, actor, volunteer_id):
        actor = Actor.from_dict(actor)
        with self.db.session() as session:
            volunteer = self._volunteer(session, volunteer_id)
            if not (volunteer.user_id == actor.id or actor.governs(volunteer.site_id)):
                raise Forbidden("Only the volunteer or staff of their site may read these hours")
            entries = session.scalars(
                sa.select(HoursEntry).where(HoursEntry.volunteer_id == volunteer.id).order_by(HoursEntry.created_at)
            ).all()
            records = {
                r.id: r for r in session.scalars(sa.select(ServiceRecord).where(ServiceRecord.volunteer_id == volunteer.id))
            }
            items = []
            for entry in entries:
                item = {"need_id": entry.need_id, "hours": entry.hours, "kind": entry.kind,
                        "service_date": entry.service_date.isoformat(), "credited_at": _iso(entry.created_at)}
                if entry.record_id in records:
                    item["record"] = record_view(records[entry.record_id])
                items.append(item)
            return {
                "volunteer_id": volunteer.id,
                "total_hours": round(sum(entry.hours for entry in entries), 4),
                "records": items,
            }

    # ---- facts from dispatch and needs -----------------------------------------------

    @event_handler("dispatch", "order_assigned")
    def on_order_assigned(self, event):
        data = event["data"]
        now = utcnow()
        with self.db.session() as session:
            if not self.db.first_delivery(session, event, "volunteers.order_assigned"):
                return
            volunteer = session.get(Volunteer, data["volunteer_id"])
            if volunteer is None:
                raise NotReady(f"volunteer {data['volunteer_id']} is not known yet")
            team_id = data.get("team_id")
            members = [volunteer.id]
            if team_id:
                # A team's need: every member has an assignment and checks in on their own.
                members += [m for m in session.scalars(
                    sa.select(TeamMember.volunteer_id).where(TeamMember.team_id == team_id)) if m != volunteer.id]
            closures = {c.volunteer_id: c.status for c in session.scalars(
                sa.select(AssignmentClosure).where(AssignmentClosure.need_id == event["need_id"]))}
            for member_id in members:
                status = (closures.get("*") or closures.get(volunteer.id) or closures.get(member_id)
                          or domain.ASSIGNED)
                session.add(Assignment(
                    id=new_id(), need_id=event["need_id"], volunteer_id=member_id, team_id=team_id, status=status,
                    need=data["need"], assigned_at=now, updated_at=now,
                ))

    @event_handler("dispatch", "order_reassigned")
    def on_order_reassigned(self, event):
        self._close_assignments(event, "volunteers.order_reassigned", domain.RELEASED,
                                volunteer_id=event["data"]["previous_volunteer_id"],
                                team_id=event["data"].get("previous_team_id"))

    @event_handler("needs", "need_cancelled")
    def on_need_cancelled(self, event):
        self._close_assignments(event, "volunteers.need_cancelled", domain.CANCELLED)

    # ---- helpers --------------------------------------------------------------------

    def _close_assignments(self, event, consumer, status, volunteer_id=None, team_id=None):
        with self.db.session() as session:
            if not self.db.first_delivery(session, event, consumer):
                return
            stmt = sa.select(Assignment).where(
                Assignment.need_id == event["need_id"], Assignment.status == domain.ASSIGNED
            ).with_for_update()
            if team_id:
                stmt = stmt.where(Assignment.team_id == team_id)
            elif volunteer_id:
                stmt = stmt.where(Assignment.volunteer_id == volunteer_id)
            session.merge(AssignmentClosure(need_id=event["need_id"], volunteer_id=volunteer_id or "*",
                                            status=status, closed_at=utcnow()))
            for assignment in session.scalars(stmt):
                assignment.status = status
                assignment.updated_at = utcnow()

    def _credit(self, session, volunteer, record, day, now):
        entry = HoursEntry(id=new_id(), volunteer_id=volunteer.id, need_id=record.need_id, record_id=record.id,
                           kind="checked_in", hours=record.hours, service_date=day, created_at=now)
        session.add(entry)
        session.flush()
        self.db.emit(session, "hours_credited",
                     {"volunteer_id": volunteer.id, "entry_id": entry.id, "hours": entry.hours, "kind": entry.kind,
                      "record_id": record.id, "site_id": record.site_id, "category": record.category},
                     need_id=record.need_id)

    def _team(self, session, team_id, lock=False):
        team = session.get(Team, team_id, with_for_update=lock) if isinstance(team_id, str) else None
        if team is None:
            raise NotFound(f"No team {team_id}")
        return team

    def _team_view(self, session, team):
        members = session.execute(
            sa.select(Volunteer.id, Volunteer.name, Volunteer.number)
            .join(TeamMember, TeamMember.volunteer_id == Volunteer.id)
            .where(TeamMember.team_id == team.id).order_by(TeamMember.joined_at, Volunteer.id)
        ).all()
        return {
            "id": team.id, "name": team.name, "type": team.type, "site_id": team.site_id,
            "leader_volunteer_id": team.leader_id, "created_at": _iso(team.created_at),
            "members": [{"volunteer_id": m.id, "name": m.name, "number": m.number} for m in members],
        }

    def _team_event(self, view, team, leader):
        return {"team_id": team.id, "name": team.name, "type": team.type, "site_id": team.site_id,
                "leader_volunteer_id": leader.id, "leader_user_id": leader.user_id,
                "member_ids": [m["volunteer_id"] for m in view["members"]], "revision": team.revision}

    def _volunteer(self, session, volunteer_id, lock=False):
        volunteer = session.get(Volunteer, volunteer_id, with_for_update=lock) if isinstance(volunteer_id, str) else None
        if volunteer is None:
            raise NotFound(f"No volunteer {volunteer_id}")
        return volunteer

    def _own_assignment(self, session, actor, need_id):
        """The caller's live assignment for a need; anyone else's does not exist for them."""
        row = session.execute(
            sa.select(Assignment, Volunteer)
            .join(Volunteer, Volunteer.id == Assignment.volunteer_id)
            .where(Assignment.need_id == need_id, Volunteer.user_id == actor.id)
            .order_by(Assignment.assigned_at.desc())
            .with_for_update()
        ).first()
        if row is None:
            raise NotFound(f"You have no assignment for need {need_id}")
        return row
