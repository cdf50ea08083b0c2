"""群众点单: needs, their history, the site tree, the categories and the service menu."""
import hashlib
import json
from pathlib import Path

import sqlalchemy as sa
from nameko.rpc import rpc

from lastmile import sites
from lastmile.auth import Actor
from lastmile.consumer import event_handler
from lastmile.db import new_id, paged, utcnow
from lastmile.errors import EXPECTED, Conflict, Forbidden, InvalidInput, NotFound, NotReady
from lastmile.events import isoformat
from lastmile.service import LastmileService
from lastmile.store import Store
from lastmile.validation import load, mask_id_number, mask_phone, mask_text
from services.needs import domain, schemas
from services.needs.models import (
    MESSAGING, Base, BeneficiaryCount, BeneficiaryEntry, Category, Need, NeedHistory, Project, Site,
)

MIGRATIONS = Path(__file__).parent / "migrations"


def _iso(value):
    return isoformat(value) if value else None


def need_snapshot(need):
    """What other services are told of a need when it is approved."""
    return {
        "need_id": need.id,
        "category": need.category,
        "project_id": need.project_id,
        "title": need.title,
        "site_id": need.site_id,
        "urgency": need.urgency,
        "beneficiary_group": need.beneficiary_group,
        "beneficiaries": need.beneficiaries,
        "window_start": _iso(need.window_start),
        "window_end": _iso(need.window_end),
        "lat": need.lat,
        "lon": need.lon,
        "owner_id": need.owner_id,
        "collector_id": need.collector_id,
    }


def need_view(need, history, actor):
    record = {
        "id": need.id,
        "status": need.status,
        "channel": need.channel,
        "category": need.category,
        "project_id": need.project_id,
        "title": need.title,
        "description": need.description,
        "site_id": need.site_id,
        "address": need.address,
        "contact_phone": need.contact_phone,
        "contact_name": need.contact_name,
        "beneficiary_group": need.beneficiary_group,
        "beneficiaries": need.beneficiaries,
        "urgency": need.urgency,
        "window_start": _iso(need.window_start),
        "window_end": _iso(need.window_end),
        "lat": need.lat,
        "lon": need.lon,
        "owner_id": need.owner_id,
        "collector_id": need.collector_id,
        "possible_duplicate": need.possible_duplicate,
        "volunteer_id": need.volunteer_id,
        "rejection_reason": need.rejection_reason,
        "created_at": _iso(need.created_at),
        "updated_at": _iso(need.updated_at),
    }
    if not domain.sees_contact(actor, _rules_view(need)):
        record["contact_phone"] = mask_phone(need.contact_phone)
        record["address"] = mask_text(need.address)
        record["contact_name"] = mask_text(need.contact_name)
    if history is not None:
        record["history"] = [
            {"status": h.status, "at": _iso(h.at), "by": h.by, "note": h.note} for h in history
        ]
    return record


def _rules_view(need):
    return {
        "site_id": need.site_id,
        "owner_id": need.owner_id,
        "collector_id": need.collector_id,
        "assignee_user_id": need.assignee_user_id,
        "status": need.status,
    }


def site_view(site):
    return {
        "id": site.id, "name": site.name, "level": site.level, "parent_id": site.parent_id,
        "auto_approve": site.auto_approve, "lat": site.lat, "lon": site.lon,
    }


def project_view(project):
    return {
        "id": project.id, "name": project.name, "category": project.category,
        "description": project.description, "team_name": project.team_name,
        "site_id": project.site_id, "active": project.active, "created_at": _iso(project.created_at),
    }


def beneficiary_entry_view(entry, actor):
    view = {
        "id": entry.id, "site_id": entry.site_id, "group": entry.group, "name": entry.name,
        "phone": entry.phone, "id_number": entry.id_number, "note": entry.note,
        "created_at": _iso(entry.created_at),
    }
    if not actor.governs(entry.site_id):
        view["phone"] = mask_phone(entry.phone)
        view["id_number"] = mask_id_number(entry.id_number)
    return view


def fingerprint(data):
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


class NeedsService(LastmileService):
    name = "needs"

    db = Store(Base.metadata, MIGRATIONS, MESSAGING)

    # ---- sites and categories -------------------------------------------------

    @rpc(expected_exceptions=EXPECTED)
    def list_sites(self):
        with self.db.session() as session:
            return [site_view(s) for s in session.scalars(sa.select(Site).order_by(Site.id))]

    @rpc(expected_exceptions=EXPECTED)
    def get_site(self, site_id):
        with self.db.session() as session:
            site = session.get(Site, site_id)
            if site is None:
                raise NotFound(f"No site {site_id}")
            return site_view(site)

    @rpc(expected_exceptions=EXPECTED)
    def create_site(self, actor, data):
        actor = Actor.from_dict(actor)
        if not actor.is_admin:
            raise Forbidden("Only admins shape the site tree")
        data = load(schemas.SiteCreateSchema(), data)
        with self.db.session() as session:
            if session.get(Site, data["id"]) is not None:
                raise Conflict(f"Site {data['id']} exists already", {"id": data["id"]})
            parent_id = sites.parent(data["id"])
            if parent_id is not None and session.get(Site, parent_id) is None:
                raise InvalidInput("The enclosing site does not exist", {"id": [f"Create {parent_id} first."]})
            site = Site(level=sites.level(data["id"]), parent_id=parent_id, **data)
            session.add(site)
            session.flush()
            return site_view(site)

    @rpc(expected_exceptions=EXPECTED)
    def update_site(self, actor, site_id, data):
        actor = Actor.from_dict(actor)
        actor.require_governs(site_id, "changes to this site")
        data = load(schemas.SiteUpdateSchema(), data)
        with self.db.session() as session:
            site = session.get(Site, site_id)
            if site is None:
                raise NotFound(f"No site {site_id}")
            for key, value in data.items():
                setattr(site, key, value)
            return site_view(site)

    @rpc(expected_exceptions=EXPECTED)
    def list_categories(self):
        with self.db.session() as session:
            rows = session.scalars(sa.select(Category).where(Category.active.is_(True)).order_by(Category.code))
            return [{"code": c.code, "name": c.name} for c in rows]

    @rpc(expected_exceptions=EXPECTED)
    def create_category(self, actor, data):
        if not Actor.from_dict(actor).is_admin:
            raise Forbidden("Only admins configure categories")
        data = load(schemas.CategoryCreateSchema(), data)
        with self.db.session() as session:
            if session.get(Category, data["code"]) is not None:
                raise Conflict(f"Category {data['code']} exists already")
            session.add(Category(code=data["code"], name=data["name"], active=True))
            return {"code": data["code"], "name": data["name"]}

    # ---- service menu ---------------------------------------------------------

    @rpc(expected_exceptions=EXPECTED)
    def list_projects(self, query):
        query = load(schemas.ProjectQuerySchema(), query)
        with self.db.session() as session:
            stmt = sa.select(Project).where(Project.active.is_(True)).order_by(Project.site_id, Project.name)
            if query["site_id"]:
                # A station's menu: its own projects and those of every enclosing site.
                stmt = stmt.where(Project.site_id.in_(sites.ancestors(query["site_id"])))
            if query["category"]:
                stmt = stmt.where(Project.category == query["category"])
            return [project_view(p) for p in session.scalars(stmt)]

    @rpc(expected_exceptions=EXPECTED)
    def create_project(self, actor, data):
        actor = Actor.from_dict(actor)
        data = load(schemas.ProjectCreateSchema(), data)
        actor.require_governs(data["site_id"], "projects of this site")
        with self.db.session() as session:
            if session.get(Site, data["site_id"]) is None:
                raise InvalidInput("Unknown site", {"site_id": ["Unknown site."]})
            self._require_category(session, data["category"])
            project = Project(id=new_id(), created_at=utcnow(), **data)
            session.add(project)
            session.flush()
            return project_view(project)

    @rpc(expected_exceptions=EXPECTED)
    def update_project(self, actor, project_id, data):
        actor = Actor.from_dict(actor)
        data = load(schemas.ProjectUpdateSchema(), data)
        with self.db.session() as session:
            project = session.get(Project, project_id) if isinstance(project_id, str) else None
            if project is None:
                raise NotFound(f"No project {project_id}")
            actor.require_governs(project.site_id, "changes to this project")
            if "category" in data:
                self._require_category(session, data["category"])
            for key, value in data.items():
                setattr(project, key, value)
            return project_view(project)

    # ---- beneficiary registry (弱势群体底数) --------------------------------------

    @rpc(expected_exceptions=EXPECTED)
    def set_beneficiary_count(self, actor, site_id, data):
        actor = Actor.from_dict(actor)
        data = load(schemas.BeneficiaryCountSchema(), data)
        with self.db.session() as session:
            self._recording_station(session, actor, site_id)
            row = session.get(BeneficiaryCount, (site_id, data["group"]), with_for_update=True)
            if row is None:
                row = BeneficiaryCount(site_id=site_id, group=data["group"])
                session.add(row)
            row.count, row.updated_by, row.updated_at = data["count"], actor.id, utcnow()
            session.flush()
            return self._beneficiaries(session, actor, site_id)

    @rpc(expected_exceptions=EXPECTED)
    def add_beneficiary_entry(self, actor, site_id, data):
        actor = Actor.from_dict(actor)
        data = load(schemas.BeneficiaryEntrySchema(), data)
        with self.db.session() as session:
            self._recording_station(session, actor, site_id)
            entry = BeneficiaryEntry(id=new_id(), site_id=site_id, recorded_by=actor.id, created_at=utcnow(), **data)
            session.add(entry)
            session.flush()
            return beneficiary_entry_view(entry, actor)

    @rpc(expected_exceptions=EXPECTED)
    def beneficiaries(self, actor, site_id):
        """Counts for a site and everything inside it, by group and by station."""
        actor = Actor.from_dict(actor)
        with self.db.session() as session:
            if session.get(Site, site_id) is None:
                raise NotFound(f"No site {site_id}")
            if not domain.may_record_beneficiaries(actor, site_id):
                raise Forbidden("Only collectors and staff of this site or above see its beneficiaries")
            return self._beneficiaries(session, actor, site_id)

    # ---- needs ----------------------------------------------------------------

    @rpc(expected_exceptions=EXPECTED)
    def submit_need(self, actor, data, idempotency_key=None):
        """Returns ``{"need": ..., "created": bool}``; a retry with the same
        idempotency key and body returns the need it created the first time."""
        actor = Actor.from_dict(actor)
        data = load(schemas.NeedCreateSchema(), data)
        submitter = domain.who_submits(actor, data["on_behalf_of"])
        if submitter == "collector" and actor.site_id and not sites.is_inside(data["site_id"], actor.site_id):
            raise Forbidden("Collectors and staff register needs only at stations inside their own site")
        now = utcnow()
        domain.check_window(data["window_start"], data["window_end"], now)
        request_print = fingerprint(data)
        with self.db.session() as session:
            if idempotency_key:
                earlier = session.scalars(
                    sa.select(Need).where(Need.owner_id == actor.id, Need.idempotency_key == idempotency_key)
                ).first()
                if earlier is not None:
                    if earlier.request_fingerprint != request_print:
                        raise Conflict("This Idempotency-Key was used with another request", {"idempotency_key": idempotency_key})
                    return {"need": need_view(earlier, self._history(session, earlier.id), actor), "created": False}
            # Read without the ORM (a row, not an object to track): every submission asks.
            site = session.execute(sa.select(Site.__table__).where(Site.id == data["site_id"])).first()
            domain.check_station(site_view(site) if site else None)
            if data["project_id"]:
                project = session.get(Project, data["project_id"])
                if project is None or not project.active:
                    raise InvalidInput("Unknown project", {"project_id": ["Unknown or inactive project."]})
                domain.check_project_reachable(project.site_id, data["site_id"])
                data["category"] = project.category
            if not data["category"]:
                raise InvalidInput("Say what kind of service", {"category": ["Required unless project_id is given."]})
            self._require_category(session, data["category"])
            duplicate = session.scalars(
                sa.select(Need.id).where(
                    Need.contact_phone == data["contact_phone"],
                    Need.category == data["category"],
                    Need.site_id == data["site_id"],
                    Need.status.in_(domain.OPEN_STATUSES),
                    Need.created_at >= now - domain.DUPLICATE_WINDOW,
                )
            ).first()
            behalf = data.pop("on_behalf_of")
            channel = data.pop("channel") or ("collector" if submitter == "collector" else "web")
            need = Need(
                id=new_id(),
                status=domain.SUBMITTED,
                channel=channel,
                contact_name=behalf["name"] if behalf else actor.name,
                owner_id=actor.id,
                collector_id=actor.id if submitter == "collector" else None,
                possible_duplicate=duplicate is not None,
                idempotency_key=idempotency_key,
                request_fingerprint=request_print,
                created_at=now,
                updated_at=now,
                **data,
            )
            submitted = NeedHistory(need_id=need.id, status=domain.SUBMITTED, at=now, by=actor.id, note=None)
            session.add(need)
            session.add(submitted)
            session.flush()
            self.db.emit(session, "need_submitted", need_snapshot(need) | {"channel": channel}, need_id=need.id)
            history = [submitted]  # all there is of a new need's history: no need to read it back
            if site.auto_approve:
                self._move(session, need, "approve", "system", "approved automatically by the station")
                self.db.emit(session, "need_approved", need_snapshot(need), need_id=need.id)
                history = self._history(session, need.id)
            return {"need": need_view(need, history, actor), "created": True}

    @rpc(expected_exceptions=EXPECTED)
    def get_need(self, actor, need_id):
        actor = Actor.from_dict(actor)
        with self.db.session() as session:
            need = self._visible_need(session, actor, need_id)
            return need_view(need, self._history(session, need.id), actor)

    @rpc(expected_exceptions=EXPECTED)
    def list_needs(self, actor, query):
        actor = Actor.from_dict(actor)
        query = load(schemas.NeedQuerySchema(), query)
        stmt = sa.select(Need)
        if actor.role == "staff":
            stmt = stmt.where(sa.or_(Need.site_id == actor.site_id, Need.site_id.startswith(actor.site_id + ".")))
        elif actor.role == "resident":
            stmt = stmt.where(Need.owner_id == actor.id)
        elif actor.role == "collector":
            stmt = stmt.where(Need.collector_id == actor.id)
        elif actor.role == "volunteer":
            stmt = stmt.where(Need.assignee_user_id == actor.id)
        elif not actor.is_admin:
            raise Forbidden("This role cannot list needs")
        if query["status"]:
            stmt = stmt.where(Need.status.in_(query["status"].split(",")))
        if query["created_from"]:
            stmt = stmt.where(Need.created_at >= query["created_from"])
        if query["created_to"]:
            stmt = stmt.where(Need.created_at <= query["created_to"])
        if query["ids"]:
            stmt = stmt.where(Need.id.in_([i.strip() for i in query["ids"].split(",") if i.strip()][:100]))
        if query["site_id"]:
            stmt = stmt.where(sa.or_(Need.site_id == query["site_id"], Need.site_id.startswith(query["site_id"] + ".")))
        if query["category"]:
            stmt = stmt.where(Need.category == query["category"])
        if query["channel"]:
            stmt = stmt.where(Need.channel == query["channel"])
        if query["q"]:
            pattern = "%" + query["q"].replace("%", r"\%").replace("_", r"\_") + "%"
            stmt = stmt.where(sa.or_(Need.title.ilike(pattern, escape="\\"), Need.description.ilike(pattern, escape="\\")))
        page, size = query["page"], query["page_size"]
        with self.db.session() as session:
            rows, total = paged(session, stmt, (Need.created_at.desc(), Need.id), page, size)
            items = [need_view(need, None, actor) for need, in rows]
            return {"items": items, "total": total, "page": page, "page_size": size}

    @rpc(expected_exceptions=EXPECTED)
    def approve_need(self, actor, need_id, data=None):
        actor = Actor.from_dict(actor)
        data = load(schemas.ApproveSchema(), data or {})
        with self.db.session() as session:
            need = self._visible_need(session, actor, need_id, lock=True)
            actor.require_governs(need.site_id, "approval of this need")
            self._move(session, need, "approve", actor.id, data["note"])
            self.db.emit(session, "need_approved", need_snapshot(need), need_id=need.id)
            return need_view(need, self._history(session, need.id), actor)

    @rpc(expected_exceptions=EXPECTED)
    def reject_need(self, actor, need_id, data):
        actor = Actor.from_dict(actor)
        data = load(schemas.RejectSchema(), data)
        with self.db.session() as session:
            need = self._visible_need(session, actor, need_id, lock=True)
            actor.require_governs(need.site_id, "rejection of this need")
            self._move(session, need, "reject", actor.id, data["reason"])
            need.rejection_reason = data["reason"]
            self.db.emit(session, "need_rejected", {"reason": data["reason"], **need_snapshot(need)}, need_id=need.id)
            return need_view(need, self._history(session, need.id), actor)

    @rpc(expected_exceptions=EXPECTED)
    def cancel_need(self, actor, need_id, data=None):
        actor = Actor.from_dict(actor)
        data = load(schemas.ReasonSchema(), data or {})
        with self.db.session() as session:
            need = self._visible_need(session, actor, need_id, lock=True)
            if not domain.may_cancel(actor, _rules_view(need)):
                raise Forbidden("Only the need's owner, its collector or staff may cancel it")
            previous = self._move(session, need, "cancel", actor.id, data["reason"])
            self.db.emit(
                session,
                "need_cancelled",
                {"reason": data["reason"], "previous_status": previous, "volunteer_id": need.volunteer_id,
                 **need_snapshot(need)},
                need_id=need.id,
            )
            return need_view(need, self._history(session, need.id), actor)

    # ---- what other services tell us -----------------------------------------

    @event_handler("dispatch", "order_assigned")
    def on_order_assigned(self, event):
        def assign(need):
            need.volunteer_id = event["data"]["volunteer_id"]
            need.assignee_user_id = event["data"].get("user_id")

        self._follow(event, "assign", waits_in=(domain.SUBMITTED,), before=assign)

    @event_handler("dispatch", "order_reassigned")
    def on_order_reassigned(self, event):
        def release(need):
            need.volunteer_id = None
            need.assignee_user_id = None

        self._follow(event, "reassign", waits_in=(domain.DISPATCHING,), before=release)

    @event_handler("dispatch", "order_unfilled")
    def on_order_unfilled(self, event):
        self._follow(event, "exhaust", waits_in=(domain.SUBMITTED,))

    @event_handler("dispatch", "order_reopened")
    def on_order_reopened(self, event):
        self._follow(event, "redispatch", waits_in=(domain.DISPATCHING,))

    @event_handler("volunteers", "service_started")
    def on_service_started(self, event):
        self._follow(event, "start_service", waits_in=(domain.SUBMITTED, domain.DISPATCHING))

    @event_handler("volunteers", "service_completed")
    def on_service_completed(self, event):
        self._follow(event, "complete", waits_in=(domain.DISPATCHING, domain.ASSIGNED))

    @event_handler("ratings", "rating_submitted")
    def on_rating_submitted(self, event):
        self._follow(event, "rate", waits_in=(domain.ASSIGNED, domain.IN_SERVICE))

    # ---- helpers ----------------------------------------------------------------

    def _follow(self, event, action, waits_in, before=None):
        """Apply a fact from another service to the need it names. A fact that
        arrives before the one it follows is retried later (NotReady); one the
        need has moved past (cancelled, say) changes nothing."""
        consumer = f"needs.{action}"
        with self.db.session() as session:
            if not self.db.first_delivery(session, event, consumer):
                return
            need = session.get(Need, event["need_id"], with_for_update=True)
            if need is None:
                raise NotReady(f"need {event['need_id']} is not known yet")
            if not domain.can(need.status, action):
                if need.status in waits_in:
                    raise NotReady(f"need {need.id} is {need.status}; {action} must wait")
                return
            if before:
                before(need)
            self._move(session, need, action, event["source"], event["data"].get("note"))

    def _move(self, session, need, action, by, note):
        previous = need.status
        need.status = domain.next_status(previous, action)
        need.updated_at = utcnow()
        session.add(NeedHistory(need_id=need.id, status=need.status, at=need.updated_at, by=by, note=note))
        self.db.emit(
            session,
            "need_status_changed",
            {"from": previous, "to": need.status, "by": by, "note": note, **need_snapshot(need)},
            need_id=need.id,
        )
        return previous

    def _visible_need(self, session, actor, need_id, lock=False):
        need = session.get(Need, need_id, with_for_update=lock) if isinstance(need_id, str) else None
        # A need the caller may not see does not exist for them.
        if need is None or not domain.may_see(actor, _rules_view(need)):
            raise NotFound(f"No need {need_id}")
        return need

    def _recording_station(self, session, actor, site_id):
        site = session.get(Site, site_id) if isinstance(site_id, str) else None
        if site is None:
            raise NotFound(f"No site {site_id}")
        if not domain.may_record_beneficiaries(actor, site_id):
            raise Forbidden("Only collectors and staff of this site or above record its beneficiaries")
        if site.level != "station":
            raise InvalidInput("Beneficiaries are recorded per station", {"site_id": ["Must be a station."]})
        return site

    def _beneficiaries(self, session, actor, site_id):
        inside = sa.or_(BeneficiaryCount.site_id == site_id, BeneficiaryCount.site_id.startswith(site_id + "."))
        by_group, by_site = {group: 0 for group in domain.BENEFICIARY_GROUPS}, {}
        for row in session.scalars(sa.select(BeneficiaryCount).where(inside).order_by(BeneficiaryCount.site_id)):
            by_group[row.group] += row.count
            by_site.setdefault(row.site_id, {})[row.group] = row.count
        entries = session.scalars(
            sa.select(BeneficiaryEntry)
            .where(sa.or_(BeneficiaryEntry.site_id == site_id, BeneficiaryEntry.site_id.startswith(site_id + ".")))
            .order_by(BeneficiaryEntry.site_id, BeneficiaryEntry.created_at)
        ).all()
        return {
            "site_id": site_id,
            "total": sum(by_group.values()),
            "by_group": by_group,
            "by_site": [{"site_id": s, "by_group": groups, "total": sum(groups.values())} for s, groups in by_site.items()],
            "entries": [beneficiary_entry_view(entry, actor) for entry in entries],
        }

    def _history(self, session, need_id):
        return session.scalars(
            sa.select(NeedHistory).where(NeedHistory.need_id == need_id).order_by(NeedHistory.id)
        ).all()

    def _require_category(self, session, code):
        active = session.scalar(sa.select(Category.active).where(Category.code == code))
        if not active:
            raise InvalidInput("Unknown category", {"category": [f"Unknown category {code}."]})
