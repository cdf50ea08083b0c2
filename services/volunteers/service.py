"""志愿者: volunteers, their assignments, check-in and check-out, and the hours ledger."""
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from nameko.rpc import rpc
from nameko.timer import timer

from lastmile import config
from lastmile.auth import Actor
from lastmile.consumer import event_handler
from lastmile.db import new_id, utcnow
from lastmile.errors import EXPECTED, Conflict, Forbidden, InvalidInput, NotFound, NotReady
from lastmile.events import isoformat
from lastmile.service import LastmileService
from lastmile.store import Store
from lastmile.validation import PeriodSchema, load, mask_id_number, mask_phone
from services.volunteers import domain, schemas
from services.volunteers.models import (
    MESSAGING, Assignment, AssignmentClosure, Base, Certificate, HoursEntry, HoursRequest, ServiceRecord, Team,
    TeamMember, Volunteer,
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
        "id_number": mask_id_number(volunteer.id_number),
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
        "flagged": record.flagged, "flag_reason": record.flag_reason, "review": record.review,
        "volunteer_id": record.volunteer_id,
        "rating": None if record.rating_stars is None else {
            "stars": record.rating_stars, "tags": record.rating_tags, "comment": record.rating_comment},
    }


def hours_request_view(request):
    return {
        "id": request.id, "volunteer_id": request.volunteer_id, "kind": request.kind, "hours": request.hours,
        "service_date": request.service_date.isoformat(), "need_id": request.need_id, "reason": request.reason,
        "status": request.status, "decided_by": request.decided_by, "decision_note": request.decision_note,
        "created_at": _iso(request.created_at), "decided_at": _iso(request.decided_at),
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


class VolunteersService(LastmileService):
    name = "volunteers"

    db = Store(Base.metadata, MIGRATIONS, MESSAGING)

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
            self.db.emit(session, "service_completed",
                         self._completion(assignment, volunteer, record, team, team_hours), need_id=need_id)
            return record_view(record)

    def _completion(self, assignment, volunteer, record, team, team_hours):
        need = assignment.need
        return {
            "volunteer_id": volunteer.id, "user_id": volunteer.user_id, "record_id": record.id,
            "team_id": team.id if team else None,
            # Credited now; a flagged record's hours wait for staff (pending_hours).
            "hours": 0.0 if record.flagged else record.hours,
            "pending_hours": record.hours if record.flagged else 0.0,
            "team_hours": round(team_hours, 4),
            "beneficiaries_served": record.beneficiaries_served,
            "check_in_at": _iso(record.check_in_at), "check_out_at": _iso(record.check_out_at),
            "flagged": record.flagged, "site_id": need["site_id"], "category": need["category"],
            "owner_id": need.get("owner_id"), "collector_id": need.get("collector_id"),
            "project_id": need.get("project_id"),
        }

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
                # Checked-in hours apart from corrections and backfills (补录), as the rules ask.
                "by_kind": {kind: round(sum(e.hours for e in entries if e.kind == kind), 4)
                            for kind in ("checked_in",) + domain.REQUEST_KINDS},
                "records": items,
            }

    # ---- the hours ledger: reviews, corrections and backfills ---------------------------

    @rpc(expected_exceptions=EXPECTED)
    def request_hours(self, actor, volunteer_id, data):
        actor = Actor.from_dict(actor)
        data = load(schemas.HoursRequestSchema(), data)
        with self.db.session() as session:
            volunteer = self._volunteer(session, volunteer_id)
            if volunteer.user_id != actor.id:
                raise Forbidden("Volunteers ask for corrections of their own hours")
            domain.check_hours_request(data["kind"], data["hours"], data["service_date"], local_date(utcnow()),
                                       hours_rule())
            request = HoursRequest(id=new_id(), volunteer_id=volunteer.id, status="pending", site_id=volunteer.site_id,
                                   created_at=utcnow(), **data)
            session.add(request)
            session.flush()
            return hours_request_view(request)

    @rpc(expected_exceptions=EXPECTED)
    def list_hours_requests(self, actor, query):
        actor = Actor.from_dict(actor)
        query = load(schemas.StatusQuerySchema(), query)
        with self.db.session() as session:
            stmt = sa.select(HoursRequest).order_by(HoursRequest.created_at.desc())
            if actor.role == "volunteer":
                stmt = stmt.join(Volunteer, Volunteer.id == HoursRequest.volunteer_id).where(Volunteer.user_id == actor.id)
            elif actor.role == "staff":
                stmt = stmt.where(sa.or_(HoursRequest.site_id == actor.site_id,
                                         HoursRequest.site_id.startswith(actor.site_id + ".")))
            elif not actor.is_admin:
                raise Forbidden("Hours requests are for volunteers and staff")
            if query["status"]:
                stmt = stmt.where(HoursRequest.status == query["status"])
            items = [hours_request_view(r) for r in session.scalars(stmt.limit(500))]
            return {"items": items, "total": len(items)}

    @rpc(expected_exceptions=EXPECTED)
    def decide_hours_request(self, actor, request_id, approve, data):
        actor = Actor.from_dict(actor)
        data = load(schemas.DecisionSchema(), data or {})
        now = utcnow()
        with self.db.session() as session:
            request = session.get(HoursRequest, request_id, with_for_update=True) if isinstance(request_id, str) else None
            if request is None or not actor.governs(request.site_id):
                raise NotFound(f"No hours request {request_id}")
            if request.status != "pending":
                raise Conflict(f"This request is {request.status} already", {"status": request.status})
            request.status = "approved" if approve else "refused"
            request.decided_by, request.decided_at, request.decision_note = actor.id, now, data["note"]
            if approve:
                volunteer = session.get(Volunteer, request.volunteer_id)
                entry = HoursEntry(id=new_id(), volunteer_id=volunteer.id, need_id=request.need_id, record_id=None,
                                   kind=request.kind, hours=request.hours, service_date=request.service_date,
                                   request_id=request.id, created_at=now)
                session.add(entry)
                session.flush()
                self._hours_credited(session, entry, volunteer.site_id, None)
            return hours_request_view(request)

    @rpc(expected_exceptions=EXPECTED)
    def list_service_records(self, actor, query):
        actor = Actor.from_dict(actor)
        query = load(schemas.RecordQuerySchema(), query)
        if actor.role != "staff" and not actor.is_admin:
            raise Forbidden("Service records are reviewed by staff")
        with self.db.session() as session:
            stmt = sa.select(ServiceRecord).order_by(ServiceRecord.check_in_at.desc())
            if actor.role == "staff":
                stmt = stmt.where(sa.or_(ServiceRecord.site_id == actor.site_id,
                                         ServiceRecord.site_id.startswith(actor.site_id + ".")))
            if query["flagged"] is not None:
                stmt = stmt.where(ServiceRecord.flagged.is_(query["flagged"]))
            if query["volunteer_id"]:
                stmt = stmt.where(ServiceRecord.volunteer_id == query["volunteer_id"])
            items = [record_view(r) for r in session.scalars(stmt.limit(500))]
            return {"items": items, "total": len(items)}

    @rpc(expected_exceptions=EXPECTED)
    def review_service_record(self, actor, record_id, approve, data):
        """Staff decide a flagged record: approved, its hours are credited."""
        actor = Actor.from_dict(actor)
        data = load(schemas.DecisionSchema(), data or {})
        now = utcnow()
        with self.db.session() as session:
            record = session.get(ServiceRecord, record_id, with_for_update=True) if isinstance(record_id, str) else None
            if record is None or not actor.governs(record.site_id):
                raise NotFound(f"No service record {record_id}")
            if not record.flagged or record.check_out_at is None:
                raise Conflict("Only a flagged, closed service record waits for review")
            if record.review is not None:
                raise Conflict(f"This record was {record.review} already", {"review": record.review})
            record.review = "approved" if approve else "refused"
            record.reviewed_by, record.reviewed_at = actor.id, now
            record.flag_reason = (record.flag_reason or "") + (f"; {data['note']}" if data["note"] else "")
            if approve:
                volunteer = session.get(Volunteer, record.volunteer_id)
                self._credit(session, volunteer, record, local_date(record.check_in_at), now)
            return record_view(record)

    @timer(interval=60)
    @rpc
    def close_forgotten_check_ins(self):
        """A check-in left open for a day is closed at its 24th hour and flagged, so
        that staff decide what of it counts."""
        now = utcnow()
        limit = timedelta(hours=domain.OPEN_CHECK_IN_LIMIT_HOURS)
        with self.db.session() as session:
            stale = session.execute(
                sa.select(ServiceRecord.id).where(ServiceRecord.check_out_at.is_(None),
                                                  ServiceRecord.check_in_at <= now - limit).limit(100)
            ).scalars().all()
        for record_id in stale:
            with self.db.session() as session:
                record = session.get(ServiceRecord, record_id, with_for_update=True)
                if record is None or record.check_out_at is not None:
                    continue
                assignment = session.get(Assignment, record.assignment_id, with_for_update=True)
                volunteer = session.get(Volunteer, record.volunteer_id)
                record.flagged = True
                record.flag_reason = "closed automatically after 24 hours without check-out"
                self._close_service(session, assignment, volunteer, record.check_in_at + limit,
                                    {"lat": None, "lon": None, "summary": record.flag_reason,
                                     "beneficiaries_served": 0})
                team = session.get(Team, assignment.team_id) if assignment.team_id else None
                if team is None or team.leader_id == volunteer.id:
                    self.db.emit(session, "service_completed",
                                 self._completion(assignment, volunteer, record, team, record.hours),
                                 need_id=record.need_id)

    # ---- certificates (志愿服务证明) ---------------------------------------------------------

    @rpc(expected_exceptions=EXPECTED)
    def issue_certificate(self, actor, volunteer_id, query):
        """Certify the hours of a period: a new numbered certificate, kept as issued."""
        actor = Actor.from_dict(actor)
        period = load(PeriodSchema(), query or {})
        now = utcnow()
        with self.db.session() as session:
            volunteer = self._volunteer(session, volunteer_id)
            if not (volunteer.user_id == actor.id or actor.governs(volunteer.site_id)):
                raise Forbidden("Only the volunteer or staff of their site may ask for this certificate")
            entries = sa.select(HoursEntry).where(HoursEntry.volunteer_id == volunteer.id)
            if period["from_"]:
                entries = entries.where(HoursEntry.service_date >= period["from_"])
            if period["to"]:
                entries = entries.where(HoursEntry.service_date <= period["to"])
            entries = session.scalars(entries.order_by(HoursEntry.service_date, HoursEntry.created_at)).all()
            records = {r.id: r for r in session.scalars(
                sa.select(ServiceRecord).where(ServiceRecord.id.in_([e.record_id for e in entries if e.record_id])))}
            services, adjustments = [], []
            for entry in entries:
                record = records.get(entry.record_id)
                if record is not None:
                    services.append({
                        "need_id": record.need_id, "title": record.title, "category": record.category,
                        "site_id": record.site_id, "date": entry.service_date.isoformat(),
                        "check_in_at": _iso(record.check_in_at), "check_out_at": _iso(record.check_out_at),
                        "hours": entry.hours, "summary": record.summary,
                        "beneficiaries_served": record.beneficiaries_served, "rating_stars": record.rating_stars,
                    })
                else:
                    adjustments.append({"kind": entry.kind, "date": entry.service_date.isoformat(),
                                        "hours": entry.hours})
            content = {
                "certificate_number": domain.certificate_number(now, new_id()),
                "volunteer": {"id": volunteer.id, "name": volunteer.name, "number": volunteer.number,
                              "id_number": mask_id_number(volunteer.id_number)},
                "period": {"from": period["from_"].isoformat() if period["from_"] else None,
                           "to": period["to"].isoformat() if period["to"] else None},
                "total_hours": round(sum(e.hours for e in entries), 4),
                "service_hours": round(sum(s["hours"] for s in services), 4),
                "adjustment_hours": round(sum(a["hours"] for a in adjustments), 4),
                "services": services,
                "adjustments": adjustments,
                "issuing_site_id": volunteer.site_id.split(".")[0],
                "issued_at": _iso(now),
            }
            session.add(Certificate(number=content["certificate_number"], volunteer_id=volunteer.id,
                                    content=content, issued_at=now))
            return content

    @rpc(expected_exceptions=EXPECTED)
    def verify_certificate(self, number):
        with self.db.session() as session:
            certificate = session.get(Certificate, number) if isinstance(number, str) else None
            if certificate is None:
                raise NotFound(f"No certificate {number}")
            return certificate.content

    # ---- the volunteer's inbox -----------------------------------------------------------------

    @rpc(expected_exceptions=EXPECTED)
    def list_assignments(self, actor, query):
        actor = Actor.from_dict(actor)
        query = load(schemas.AssignmentQuerySchema(), query)
        with self.db.session() as session:
            stmt = (sa.select(Assignment).join(Volunteer, Volunteer.id == Assignment.volunteer_id)
                    .where(Volunteer.user_id == actor.id).order_by(Assignment.assigned_at.desc()))
            if query["status"]:
                stmt = stmt.where(Assignment.status == query["status"])
            items = [{"id": a.id, "need_id": a.need_id, "status": a.status, "team_id": a.team_id,
                      "assigned_at": _iso(a.assigned_at), "need": a.need}
                     for a in session.scalars(stmt.limit(200))]
            return {"items": items, "total": len(items)}

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

    @event_handler("ratings", "rating_submitted")
    def on_rating_submitted(self, event):
        """The resident's evaluation becomes part of the service record."""
        data = event["data"]
        with self.db.session() as session:
            if not self.db.first_delivery(session, event, "volunteers.rating_submitted"):
                return
            for record in session.scalars(
                sa.select(ServiceRecord).where(ServiceRecord.need_id == event["need_id"]).with_for_update()
            ):
                record.rating_stars, record.rating_tags = data["stars"], data.get("tags")
                record.rating_comment = data.get("comment")

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
        self._hours_credited(session, entry, record.site_id, record.category)

    def _hours_credited(self, session, entry, site_id, category):
        self.db.emit(session, "hours_credited",
                     {"volunteer_id": entry.volunteer_id, "entry_id": entry.id, "hours": entry.hours,
                      "kind": entry.kind, "record_id": entry.record_id, "site_id": site_id, "category": category,
                      "service_date": entry.service_date.isoformat()},
                     need_id=entry.need_id)

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
