"""政府派单 and 志愿者接单: orders, offers, deadlines and escalation."""
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from nameko.extensions import DependencyProvider
from nameko.rpc import rpc
from nameko.timer import timer

from lastmile import config
from lastmile.auth import Actor
from lastmile.consumer import event_handler
from lastmile.db import is_postgres, new_id, paged, utcnow
from lastmile.errors import EXPECTED, Conflict, InvalidInput, NotFound
from lastmile.events import isoformat
from lastmile.service import LastmileService
from lastmile.store import Store
from lastmile.validation import load
from services.dispatch import domain, matching
from services.dispatch.models import MESSAGING, Base, Candidate, CandidateSkill, Offer, Order, TeamCandidate
from services.dispatch.schemas import DeclineSchema, ManualDispatchSchema, OfferQuerySchema

MIGRATIONS = Path(__file__).parent / "migrations"


def policy_from_config():
    return domain.Policy(
        offers_per_level=config.get_int("LASTMILE_OFFERS_PER_LEVEL"),
        max_active_assignments=config.get_int("LASTMILE_MAX_ACTIVE_ASSIGNMENTS"),
        broadcast_size=config.get_int("LASTMILE_BROADCAST_SIZE"),
        normal_minutes=config.get_float("LASTMILE_OFFER_MINUTES_NORMAL"),
        urgent_minutes=config.get_float("LASTMILE_OFFER_MINUTES_URGENT"),
        overrides=domain.parse_overrides(config.get("LASTMILE_DISPATCH_STRATEGIES")),
    )


class DispatchPolicy(DependencyProvider):
    """The dispatch policy from configuration: checked when the service starts, so
    a bad setting stops it at once; read again for each worker."""

    def setup(self):
        try:
            policy_from_config()
        except ValueError as exc:
            raise SystemExit(str(exc))

    def get_dependency(self, worker_ctx):
        return policy_from_config()


def _iso(value):
    return isoformat(value) if value else None


def _parse_time(value):
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def offer_view(offer, order=None, with_score=True):
    view = {
        "id": offer.id,
        "need_id": offer.need_id,
        "order_id": offer.order_id,
        "volunteer_id": offer.volunteer_id,
        "team_id": offer.team_id,
        "status": offer.status,
        "level": offer.level,
        "manual": offer.manual,
        "deadline": _iso(offer.deadline),
        "reason": offer.reason,
        "created_at": _iso(offer.created_at),
        "responded_at": _iso(offer.responded_at),
    }
    if with_score:
        view["score"] = offer.score
        view["score_parts"] = offer.score_parts
    if order is not None:
        need = order.need
        view["need"] = {k: need.get(k) for k in (
            "title", "category", "site_id", "urgency", "window_start", "window_end", "beneficiaries",
            "beneficiary_group", "lat", "lon")}
    return view


def order_view(order, offers, with_scores):
    return {
        "id": order.id,
        "need_id": order.need_id,
        "status": order.status,
        "category": order.category,
        "site_id": order.site_id,
        "urgency": order.urgency,
        "strategy": order.strategy,
        "level": order.level,
        "level_site_id": domain.level_site(order.site_id, order.level),
        "volunteer_id": order.volunteer_id,
        "team_id": order.team_id,
        "assigned_at": _iso(order.assigned_at),
        "started_at": _iso(order.started_at),
        "created_at": _iso(order.created_at),
        "offers": [offer_view(o, with_score=with_scores) for o in offers],
    }


def need_facts(order):
    need = order.need
    return domain.NeedFacts(
        category=order.category, site_id=order.site_id, urgency=order.urgency, lat=need.get("lat"),
        lon=need.get("lon"), window_start=_parse_time(need.get("window_start")),
        window_end=_parse_time(need.get("window_end")),
    )


class DispatchService(LastmileService):
    name = "dispatch"

    db = Store(Base.metadata, MIGRATIONS, MESSAGING)
    policy = DispatchPolicy()

    # ---- the volunteer's side ---------------------------------------------------

    @rpc(expected_exceptions=EXPECTED)
    def list_offers(self, actor, query):
        actor = Actor.from_dict(actor)
        query = load(OfferQuerySchema(), query)
        stmt = sa.select(Offer, Order).join(Order, Offer.order_id == Order.id).where(Offer.user_id == actor.id)
        if query["status"]:
            stmt = stmt.where(Offer.status == query["status"])
        page, size = query["page"], query["page_size"]
        # Volunteers' apps poll this: one statement, no transaction around it.
        with self.db.reading() as session:
            rows, total = paged(session, stmt, (Offer.created_at.desc(), Offer.id), page, size)
            items = [offer_view(offer, order, with_score=False) for offer, order in rows]
            return {"items": items, "total": total, "page": page, "page_size": size}

    @rpc(expected_exceptions=EXPECTED)
    def accept_offer(self, actor, offer_id):
        actor = Actor.from_dict(actor)
        now = utcnow()
        with self.db.session() as session:
            offer, order = self._own_offer(session, actor, offer_id)
            domain.check_offer_open(offer.status, offer.deadline, now)
            if order.status != domain.DISPATCHING:
                raise Conflict("This need has been taken or closed", {"order_status": order.status})
            candidate = session.get(Candidate, offer.volunteer_id)
            # Offers of several orders can be pending at once; the limit holds when they are
            # accepted too. Staff who chose this volunteer by hand chose past the limit knowingly.
            if (candidate is not None and not offer.manual
                    and candidate.active_assignments >= self.policy.max_active_assignments):
                raise Conflict("You already hold as many services as one volunteer may; finish one first",
                               {"active_assignments": candidate.active_assignments,
                                "max_active_assignments": self.policy.max_active_assignments})
            # Conditional updates make the race safe on any database: one winner.
            won = session.execute(
                sa.update(Order).where(Order.id == order.id, Order.status == domain.DISPATCHING)
                .values(status=domain.ASSIGNED, volunteer_id=offer.volunteer_id, user_id=offer.user_id,
                        team_id=offer.team_id, assigned_at=now, updated_at=now)
            ).rowcount
            taken = session.execute(
                sa.update(Offer).where(Offer.id == offer.id, Offer.status == domain.PENDING)
                .values(status=domain.ACCEPTED, responded_at=now)
            ).rowcount
            if not (won and taken):
                raise Conflict("This need has been taken or closed", {"order_status": "assigned"})
            session.refresh(order)
            session.refresh(offer)
            self._withdraw_pending(session, order, "another volunteer accepted")
            if candidate is not None:
                candidate.active_assignments += 1
                candidate.accepted += 1
            self.db.emit(session, "offer_accepted", self._offer_data(offer, order), need_id=order.need_id)
            self.db.emit(session, "order_assigned", self._assignment_data(order, offer, candidate),
                         need_id=order.need_id)
            return offer_view(offer, order, with_score=False)

    @rpc(expected_exceptions=EXPECTED)
    def decline_offer(self, actor, offer_id, data=None):
        actor = Actor.from_dict(actor)
        data = load(DeclineSchema(), data or {})
        now = utcnow()
        with self.db.session() as session:
            offer, order = self._own_offer(session, actor, offer_id)
            domain.check_offer_open(offer.status, offer.deadline, now)
            offer.status = domain.DECLINED
            offer.responded_at = now
            offer.reason = data["reason"]
            candidate = session.get(Candidate, offer.volunteer_id)
            if candidate is not None:
                candidate.declined += 1
            self.db.emit(session, "offer_declined", self._offer_data(offer, order), need_id=order.need_id)
            self._advance(session, order, now)
            return offer_view(offer, order, with_score=False)

    # ---- the staff's side -------------------------------------------------------

    @rpc(expected_exceptions=EXPECTED)
    def get_order(self, actor, need_id):
        actor = Actor.from_dict(actor)
        with self.db.session() as session:
            order = session.scalars(sa.select(Order).where(Order.need_id == need_id)).first()
            if order is None:
                raise NotFound(f"No order for need {need_id}")
            staff = actor.governs(order.site_id)
            if not staff and actor.id not in (order.need.get("owner_id"), order.need.get("collector_id"), order.user_id):
                raise NotFound(f"No order for need {need_id}")
            offers = session.scalars(
                sa.select(Offer).where(Offer.order_id == order.id).order_by(Offer.created_at, Offer.id)
            ).all()
            if not staff:
                offers = [o for o in offers if o.user_id == actor.id]
            return order_view(order, offers, with_scores=staff)

    @rpc(expected_exceptions=EXPECTED)
    def dispatch_manually(self, actor, need_id, data):
        """Staff offer a need to a volunteer or a team of their choosing: a
        dispatching or unfilled need gets a new offer; an assigned one is
        reassigned (until service starts). A team's offer goes to its leader."""
        actor = Actor.from_dict(actor)
        data = load(ManualDispatchSchema(), data)
        now = utcnow()
        with self.db.session() as session:
            order = self._lock_order(session, need_id=need_id)
            if order is None or not actor.governs(order.site_id):
                # Staff of another branch learn nothing of the need, as on its other routes.
                raise NotFound(f"No order for need {need_id}")
            team = None
            if data["team_id"]:
                team = session.get(TeamCandidate, data["team_id"])
                if team is None:
                    raise InvalidInput("Unknown team", {"team_id": ["Unknown team."]})
                candidate = session.get(Candidate, team.leader_volunteer_id)
            else:
                candidate = session.get(Candidate, data["volunteer_id"])
            if candidate is None or not candidate.active:
                field = "team_id" if team else "volunteer_id"
                raise InvalidInput("Unknown or inactive volunteer", {field: ["Unknown, or led by an inactive volunteer."]})
            if order.status in (domain.CANCELLED, domain.COMPLETED):
                raise Conflict(f"This need is {order.status}", {"order_status": order.status})
            if order.started_at is not None:
                raise Conflict("Service has started; it can no longer be reassigned", {"order_status": "in_service"})
            if order.status == domain.ASSIGNED and (order.volunteer_id, order.team_id) == (
                    candidate.volunteer_id, team.team_id if team else None):
                raise Conflict("Already assigned there", {"volunteer_id": candidate.volunteer_id})
            if order.status == domain.ASSIGNED:
                previous = session.get(Candidate, order.volunteer_id)
                if previous is not None:
                    previous.active_assignments = max(0, previous.active_assignments - 1)
                self.db.emit(session, "order_reassigned",
                             {"previous_volunteer_id": order.volunteer_id, "previous_user_id": order.user_id,
                              "previous_team_id": order.team_id, "by": actor.id, "note": data["note"]},
                             need_id=order.need_id)
                order.volunteer_id = order.user_id = order.assigned_at = order.team_id = None
            elif order.status == domain.UNFILLED:
                self.db.emit(session, "order_reopened", {"by": actor.id, "note": data["note"]}, need_id=order.need_id)
            self._withdraw_pending(session, order, "dispatched by staff")
            order.status = domain.DISPATCHING
            order.updated_at = now
            _, _, deadline = self.policy.strategy(order.urgency, order.category)
            facts = matching.candidate_facts(candidate, self._skills(session, [candidate.volunteer_id]).get(candidate.volunteer_id, ()))
            total, parts = domain.score(facts, need_facts(order), self.policy)
            offer = self._make_offer(session, order, candidate, total, parts, now + deadline, manual=True,
                                     team_id=team.team_id if team else None)
            return offer_view(offer, order)

    # ---- deadlines -----------------------------------------------------------------

    @timer(interval=1)
    def expire_offers(self):
        now = utcnow()
        with self.db.session() as session:
            due = session.execute(
                sa.select(Offer.order_id).where(Offer.status == domain.PENDING, Offer.deadline <= now)
                .group_by(Offer.order_id).limit(100)
            ).scalars().all()
        for order_id in due:
            # One transaction per order, locking the order before its offers (as accept
            # and decline do), so replicas and volunteers never deadlock.
            with self.db.session() as session:
                order = self._lock_order(session, order_id=order_id, skip_locked=True)
                if order is None:
                    continue  # another replica is on it
                expired = session.scalars(
                    sa.select(Offer).where(Offer.order_id == order_id, Offer.status == domain.PENDING,
                                           Offer.deadline <= now).with_for_update()
                ).all()
                for offer in expired:
                    offer.status = domain.EXPIRED
                    offer.responded_at = now
                    candidate = session.get(Candidate, offer.volunteer_id)
                    if candidate is not None:
                        candidate.declined += 1  # an offer left unanswered counts against acceptance too
                    self.db.emit(session, "offer_expired", self._offer_data(offer, order), need_id=order.need_id)
                if expired:
                    self._advance(session, order, now)

    # ---- facts from other services -------------------------------------------------

    @event_handler("needs", "need_approved")
    def on_need_approved(self, event):
        data = event["data"]
        now = utcnow()
        with self.db.session() as session:
            if not self.db.first_delivery(session, event, "dispatch.need_approved"):
                return
            if session.scalars(sa.select(Order.id).where(Order.need_id == event["need_id"])).first():
                return  # cancelled before we heard of the approval
            strategy, _, _ = self.policy.strategy(data["urgency"], data["category"])
            order = Order(
                id=new_id(), need_id=event["need_id"], status=domain.DISPATCHING, need=data,
                category=data["category"], site_id=data["site_id"], urgency=data["urgency"], strategy=strategy,
                level=domain.LEVELS[0], offers_at_level=0, approved_at=_parse_time(event["occurred_at"]),
                created_at=now, updated_at=now,
            )
            # Written once, with its first offers, when the transaction commits: not
            # inserted first and then updated for each offer made.
            with session.no_autoflush:
                session.add(order)
                self.db.emit(session, "order_created", {"order_id": order.id, "strategy": strategy,
                                                        "site_id": order.site_id, "category": order.category},
                             need_id=order.need_id)
                self._advance(session, order, now, new=True)

    @event_handler("needs", "need_cancelled")
    def on_need_cancelled(self, event):
        now = utcnow()
        with self.db.session() as session:
            if not self.db.first_delivery(session, event, "dispatch.need_cancelled"):
                return
            order = self._lock_order(session, need_id=event["need_id"])
            if order is None:
                # Approval may still be on its way: leave a tombstone so it opens nothing.
                data = event["data"]
                session.add(Order(
                    id=new_id(), need_id=event["need_id"], status=domain.CANCELLED, need=data,
                    category=data["category"], site_id=data["site_id"], urgency=data["urgency"],
                    strategy="none", level=domain.LEVELS[0], created_at=now, updated_at=now,
                ))
                return
            if order.status == domain.ASSIGNED and order.volunteer_id:
                candidate = session.get(Candidate, order.volunteer_id)
                if candidate is not None:
                    candidate.active_assignments = max(0, candidate.active_assignments - 1)
            self._withdraw_pending(session, order, "the need was cancelled")
            order.status = domain.CANCELLED
            order.updated_at = now

    @event_handler("volunteers", "volunteer_registered")
    def on_volunteer_registered(self, event):
        self._project_volunteer(event, "dispatch.volunteer_registered")

    @event_handler("volunteers", "volunteer_updated")
    def on_volunteer_updated(self, event):
        self._project_volunteer(event, "dispatch.volunteer_updated")

    @event_handler("volunteers", "service_completed")
    def on_service_completed(self, event):
        data = event["data"]
        with self.db.session() as session:
            if not self.db.first_delivery(session, event, "dispatch.service_completed"):
                return
            candidate = session.get(Candidate, data["volunteer_id"])
            if candidate is not None:
                candidate.active_assignments = max(0, candidate.active_assignments - 1)
                candidate.recent_hours += float(data.get("hours") or 0)
            order = self._lock_order(session, need_id=event["need_id"])
            if order is not None and order.status == domain.ASSIGNED:
                order.status = domain.COMPLETED
                order.updated_at = utcnow()

    @event_handler("volunteers", "service_started")
    def on_service_started(self, event):
        with self.db.session() as session:
            if not self.db.first_delivery(session, event, "dispatch.service_started"):
                return
            order = self._lock_order(session, need_id=event["need_id"])
            if order is not None and order.started_at is None:
                order.started_at = utcnow()

    @event_handler("volunteers", "team_registered")
    def on_team_registered(self, event):
        self._project_team(event, "dispatch.team_registered")

    @event_handler("volunteers", "team_updated")
    def on_team_updated(self, event):
        self._project_team(event, "dispatch.team_updated")

    def _project_team(self, event, consumer):
        data = event["data"]
        with self.db.session() as session:
            if not self.db.first_delivery(session, event, consumer):
                return
            team = session.get(TeamCandidate, data["team_id"], with_for_update=True)
            if team is None:
                team = TeamCandidate(team_id=data["team_id"], revision=0)
                session.add(team)
            elif data["revision"] <= team.revision:
                return  # an older state arriving late
            team.name, team.site_id, team.revision = data["name"], data["site_id"], data["revision"]
            team.leader_volunteer_id, team.leader_user_id = data["leader_volunteer_id"], data["leader_user_id"]
            team.member_ids, team.updated_at = data["member_ids"], utcnow()

    @event_handler("ratings", "score_updated")
    def on_score_updated(self, event):
        data = event["data"]
        if data.get("subject_type") != "volunteer":
            return
        with self.db.session() as session:
            if not self.db.first_delivery(session, event, "dispatch.score_updated"):
                return
            candidate = session.get(Candidate, data["subject_id"])
            if candidate is not None:
                candidate.rating_count = data["count"]
                candidate.rating_sum = data["sum"]

    # ---- the engine ------------------------------------------------------------------

    def _advance(self, session, order, now, new=False):
        """Make the next offers of a dispatching order, widening the search when a
        level is exhausted and giving up as ``unfilled`` past the district. A ``new``
        order has no offers yet: nothing to look up about them."""
        if order.status != domain.DISPATCHING:
            return
        if not new and session.scalar(
            sa.select(sa.func.count()).select_from(Offer)
            .where(Offer.order_id == order.id, Offer.status == domain.PENDING)
        ):
            return
        policy = self.policy
        _, at_once, deadline = policy.strategy(order.urgency, order.category)
        too_late = domain.window_started(need_facts(order).window_start, now)
        while True:
            wanted = 0 if too_late else domain.offers_to_make(policy, order.level, order.offers_at_level, at_once)
            ranked = self._ranked_candidates(session, order, policy, wanted, new) if wanted else []
            if ranked:
                for candidate, total, parts in ranked[:wanted]:
                    self._make_offer(session, order, candidate, total, parts, now + deadline)
                return
            following = None if too_late else domain.next_level(order.level)
            order.updated_at = now
            if following is None:
                order.status = domain.UNFILLED
                self.db.emit(session, "order_unfilled", {
                    "order_id": order.id, "site_id": order.site_id, "category": order.category,
                    "reason": "window_started" if too_late else "no_one_left"}, need_id=order.need_id)
                return
            self.db.emit(session, "order_escalated",
                         {"order_id": order.id, "from_level": order.level, "to_level": following,
                          "site_id": domain.level_site(order.site_id, following)}, need_id=order.need_id)
            order.level = following
            order.offers_at_level = 0

    def _ranked_candidates(self, session, order, policy, wanted, new=False):
        """The ``wanted`` best candidates at the order's level, best first, exactly as
        domain.rank would order every eligible candidate (services/dispatch/matching.py)."""
        scope = domain.level_site(order.site_id, order.level)
        offered = set() if new else set(
            session.scalars(sa.select(Offer.volunteer_id).where(Offer.order_id == order.id)))
        return matching.ranked(session, need_facts(order), scope, offered, policy, wanted)

    def _make_offer(self, session, order, candidate, total, parts, deadline, manual=False, team_id=None):
        offer = Offer(
            id=new_id(), order_id=order.id, need_id=order.need_id, volunteer_id=candidate.volunteer_id,
            user_id=candidate.user_id, status=domain.PENDING, level=order.level, manual=manual, score=total,
            score_parts=parts, deadline=deadline, created_at=utcnow(), team_id=team_id,
        )
        session.add(offer)
        order.offers_at_level += 0 if manual else 1
        candidate.recent_offers += 1
        self.db.emit(session, "offer_made", self._offer_data(offer, order), need_id=order.need_id)
        return offer

    def _withdraw_pending(self, session, order, reason):
        now = utcnow()
        for offer in session.scalars(
            sa.select(Offer).where(Offer.order_id == order.id, Offer.status == domain.PENDING)
        ):
            offer.status = domain.WITHDRAWN
            offer.responded_at = now
            offer.reason = reason
            self.db.emit(session, "offer_withdrawn", self._offer_data(offer, order), need_id=order.need_id)

    def _project_volunteer(self, event, consumer):
        data = event["data"]
        with self.db.session() as session:
            if not self.db.first_delivery(session, event, consumer):
                return
            candidate = session.get(Candidate, data["volunteer_id"], with_for_update=True)
            if candidate is None:
                candidate = Candidate(volunteer_id=data["volunteer_id"], active_assignments=0, rating_count=0,
                                      rating_sum=0.0, recent_hours=0.0, recent_offers=0, accepted=0, declined=0,
                                      revision=0)
                session.add(candidate)
            elif data.get("revision", 0) <= candidate.revision:
                return  # an older profile arriving late: the newer one stands
            candidate.revision = data.get("revision", 0)
            candidate.user_id = data.get("user_id")
            candidate.name = data.get("name") or ""
            candidate.site_id = data["site_id"]
            candidate.lat, candidate.lon = data.get("lat"), data.get("lon")
            candidate.active = data.get("status", "active") == "active"
            candidate.availability = data.get("availability")
            candidate.updated_at = utcnow()
            session.flush()
            session.execute(sa.delete(CandidateSkill).where(CandidateSkill.volunteer_id == candidate.volunteer_id))
            for category in sorted(set(data.get("skills") or [])):
                session.add(CandidateSkill(volunteer_id=candidate.volunteer_id, category=category))

    def _skills(self, session, volunteer_ids):
        skills = {}
        if not volunteer_ids:
            return skills
        for row in session.execute(
            sa.select(CandidateSkill.volunteer_id, CandidateSkill.category)
            .where(CandidateSkill.volunteer_id.in_(volunteer_ids))
        ):
            skills.setdefault(row.volunteer_id, []).append(row.category)
        return skills

    def _lock_order(self, session, need_id=None, order_id=None, skip_locked=False):
        stmt = sa.select(Order).with_for_update(skip_locked=skip_locked and is_postgres(session))
        stmt = stmt.where(Order.need_id == need_id) if need_id else stmt.where(Order.id == order_id)
        return session.scalars(stmt).first()

    def _own_offer(self, session, actor, offer_id):
        offer = session.get(Offer, offer_id) if isinstance(offer_id, str) else None
        if offer is None or offer.user_id != actor.id:
            raise NotFound(f"No offer {offer_id}")
        order = self._lock_order(session, order_id=offer.order_id)
        session.refresh(offer)
        return offer, order

    def _offer_data(self, offer, order):
        return {
            "offer_id": offer.id, "order_id": order.id, "volunteer_id": offer.volunteer_id,
            "user_id": offer.user_id, "status": offer.status, "level": offer.level,
            "deadline": _iso(offer.deadline), "score": offer.score, "manual": offer.manual,
            "reason": offer.reason, "site_id": order.site_id, "category": order.category,
            "team_id": offer.team_id,
        }

    def _assignment_data(self, order, offer, candidate):
        minutes = None
        if order.approved_at:
            minutes = round((order.assigned_at - order.approved_at).total_seconds() / 60, 2)
        return {
            "order_id": order.id, "offer_id": offer.id, "volunteer_id": offer.volunteer_id,
            "user_id": offer.user_id, "volunteer_name": candidate.name if candidate else None,
            "team_id": offer.team_id, "minutes_to_accept": minutes, "need": order.need,
        }

