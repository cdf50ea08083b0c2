"""A day of Qiongshan through the real dispatch rules, on a simulated clock.

    .venv/bin/python -m bench.simulate [--seed N] [--volunteers N] [--needs N] [--date YYYY-MM-DD]

No broker, no database, no sleeping: an event loop over simulated time drives
``services.dispatch.domain`` (Policy, ineligibility, rank, score, level_site,
next_level, available, check_offer_open) through a faithful re-implementation of
the control flow of ``DispatchService`` (``_advance``, ``_make_offer``,
``accept_offer``, ``decline_offer``, ``expire_offers``, ``on_service_completed``).

The same seeded day -- stations, volunteers, their behaviour, the needs -- is
dispatched three times:

``lastmile``  Lastmile's ranking, Policy defaults (sequential for normal needs,
              broadcast to 3 for urgent ones, 3 offers per level).
``qiangdan``  抢单: broadcast to everyone eligible at the level at once, first
              acceptance wins (same deadlines, same escalation).
``nearest``   nearest-first sequential: ranked by distance alone, one offer at a time
              whatever the urgency (same deadlines, same escalation).

Volunteers answer with common random numbers: a volunteer offered the same need
under two dispatchers draws the same chance, the same delay and the same
attention, so differences come from the dispatcher, not from the dice.
"""
import argparse
import json
import math
import random
import sys
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta, timezone
from heapq import heappop, heappush
from pathlib import Path
from typing import Optional

from lastmile import demo, sites
from lastmile.errors import Conflict
from services.dispatch import domain

CATEGORIES = ("theory", "education", "culture", "science", "health", "fitness")
# What residents order (health and education lead: elderly alone, left-behind children) ...
NEED_MIX = {"health": 0.22, "education": 0.22, "culture": 0.17, "theory": 0.13, "fitness": 0.13, "science": 0.13}
# ... and what volunteers can do (fewer medical and science volunteers than speakers and artists).
SKILL_MIX = {"culture": 0.22, "education": 0.21, "theory": 0.20, "fitness": 0.15, "science": 0.12, "health": 0.10}
URGENT_SHARE = 0.15
STREETS = {"fucheng", "binjiang", "guoxing", "fengxiang"}  # urban 街道; the others are towns (镇)
STATIONS_PER_STREET = 8  # communities (社区)
STATIONS_PER_TOWN = 10  # villages (村)
DEFAULT_DATE = date(2026, 3, 10)  # a Tuesday
DEFAULT_VOLUNTEERS = 800
DEFAULT_NEEDS = 160
KM_PER_DEG_LAT = 111.0
KM_PER_DEG_LON = 111.0 * math.cos(math.radians(19.9))
RESULTS = Path(__file__).resolve().parent / "results" / "simulation.json"

ALL_DAYS = domain.WEEKDAYS
WORK_DAYS = domain.WEEKDAYS[:5]
WEEKEND = domain.WEEKDAYS[5:]


def _weekly(**slots_by_days):
    """``_weekly(work=[...], weekend=[...])`` or ``every=[...]`` as the domain's weekly dict."""
    result = {}
    for key, slots in slots_by_days.items():
        days = {"every": ALL_DAYS, "work": WORK_DAYS, "weekend": WEEKEND}[key]
        for day in days:
            result[day] = [list(slot) for slot in slots]
    return result


@dataclass(frozen=True)
class Profile:
    name: str
    share: float
    availability: Optional[dict]  # as declared; None: never filled in (eligible at any time)
    accept_beta: tuple  # Beta(a, b) of the personal chance to accept
    responsiveness: tuple  # uniform range of the chance to see and answer an offer at all
    median_minutes: float  # typical delay before answering


PROFILES = (
    Profile("retired", 0.25, _weekly(every=[("07:30", "11:30"), ("14:30", "20:00")]), (3.0, 2.0), (0.70, 0.95), 9),
    Profile("office", 0.28, _weekly(work=[("18:00", "21:30")], weekend=[("08:00", "20:00")]), (2.0, 2.5),
            (0.55, 0.85), 14),
    Profile("student", 0.15, _weekly(work=[("13:30", "21:00")], weekend=[("08:00", "21:00")]), (2.5, 2.0),
            (0.70, 0.95), 6),
    Profile("flexible", 0.15, _weekly(every=[("07:00", "21:30")]), (3.0, 2.0), (0.75, 0.98), 5),
    Profile("unset", 0.17, None, (2.0, 2.5), (0.50, 0.90), 12),
)


# --------------------------------------------------------------------------- the world


@dataclass(frozen=True)
class Station:
    id: str
    name: str
    lat: float
    lon: float
    urban: bool
    synthetic: bool


@dataclass
class Volunteer:
    """Who a volunteer really is: dispatch sees only ``candidate`` (its projection)."""
    id: str
    station_id: str
    profile: str
    true_availability: dict  # for "unset" volunteers, a hidden real week
    accept_p: float
    responsiveness: float
    median_minutes: float
    candidate: domain.Candidate  # initial projection: skills, place, declared week, history


@dataclass
class Need:
    id: str
    category: str
    site_id: str
    urgency: str
    lat: Optional[float]  # what the order knows (None: registered by a collector without a fix)
    lon: Optional[float]
    true_lat: float
    true_lon: float
    approved_at: datetime
    window_start: Optional[datetime]
    window_end: Optional[datetime]
    duration: timedelta

    def facts(self):
        return domain.NeedFacts(category=self.category, site_id=self.site_id, urgency=self.urgency, lat=self.lat,
                                lon=self.lon, window_start=self.window_start, window_end=self.window_end)


@dataclass
class World:
    seed: int
    day: date
    stations: list
    volunteers: list
    needs: list


def local(day, hours):
    """``hours`` after local midnight of ``day`` (may run past 24), as a UTC datetime."""
    midnight = datetime.combine(day, time(0), tzinfo=domain.LOCAL_TIME)
    return (midnight + timedelta(hours=hours)).astimezone(timezone.utc)


def local_hours(moment, day):
    return (moment - local(day, 0)).total_seconds() / 3600


def km_between(lat1, lon1, lat2, lon2):
    return domain.haversine_km(lat1, lon1, lat2, lon2)


def _jitter(rng, lat, lon, sigma_km):
    return (round(lat + rng.gauss(0, sigma_km) / KM_PER_DEG_LAT, 5),
            round(lon + rng.gauss(0, sigma_km) / KM_PER_DEG_LON, 5))


def build_stations():
    """The demo's stations plus synthetic ones, so each street has 8 communities and each
    town 10 villages (about the size of Qiongshan). Fixed: the map does not depend on the seed."""
    rng = random.Random("qiongshan-stations")
    named = {}
    for station_id, name, lat, lon in demo.STATIONS:
        named.setdefault(station_id.split(".")[0], []).append((station_id, name, lat, lon))
    stations = []
    for code, name, lat, lon in demo.INSTITUTES:
        urban = code in STREETS
        target = STATIONS_PER_STREET if urban else STATIONS_PER_TOWN
        radius = 1.8 if urban else 6.0
        own = named.get(code, [])
        for station_id, station_name, s_lat, s_lon in own:
            stations.append(Station(f"qiongshan.{station_id}", station_name, s_lat, s_lon, urban, False))
        for k in range(1, target - len(own) + 1):
            r, a = radius * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
            stations.append(Station(
                f"qiongshan.{code}.s{k:02d}", f"{name.replace('新时代文明实践所', '')}模拟实践站{k:02d}",
                round(lat + r * math.sin(a) / KM_PER_DEG_LAT, 5), round(lon + r * math.cos(a) / KM_PER_DEG_LON, 5),
                urban, True))
    for station in stations:
        assert sites.is_valid(station.id) and sites.level(station.id) == "station", station.id
    return stations


def _weighted(rng, weights):
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def _skills(rng):
    count = rng.choices((1, 2, 3), weights=(0.35, 0.40, 0.25))[0]
    chosen = []
    while len(chosen) < count:
        skill = _weighted(rng, SKILL_MIX)
        if skill not in chosen:
            chosen.append(skill)
    return tuple(sorted(chosen))


def build_volunteers(rng, stations, count):
    # Streets have more volunteers (party members, university and school teams).
    weights = [2.5 if s.urban else 1.0 for s in stations]
    declared_profiles = [p for p in PROFILES if p.availability is not None]
    volunteers = []
    for index in range(count):
        station = rng.choices(stations, weights=weights)[0]
        profile = rng.choices(PROFILES, weights=[p.share for p in PROFILES])[0]
        lat, lon = _jitter(rng, station.lat, station.lon, 0.6 if station.urban else 1.2)
        true_week = profile.availability
        if true_week is None:  # never declared, yet has a real life
            true_week = rng.choices(declared_profiles, weights=[p.share for p in declared_profiles])[0].availability
        accept_p = rng.betavariate(*profile.accept_beta)
        quality = min(5.0, max(2.5, rng.gauss(4.3, 0.4)))
        rated = rng.choice((0, 0, 1, 2, 3, 5, 8, 12, 20))
        history = 0 if rng.random() < 0.2 else rng.randint(1, 20)  # a fifth are new this month
        accepted = sum(rng.random() < accept_p for _ in range(history))
        volunteer_id = f"v{index:05d}"
        candidate = domain.Candidate(
            volunteer_id=volunteer_id, user_id=f"u{index:05d}", site_id=station.id, skills=_skills(rng),
            lat=lat, lon=lon, active=rng.random() > 0.03, availability=profile.availability,
            active_assignments=0, rating_count=rated, rating_sum=round(rated * quality, 1),
            recent_hours=round(accepted * rng.uniform(1.0, 2.5), 1), recent_offers=history,
            accepted=accepted, declined=history - accepted - rng.randint(0, (history - accepted) // 2),
        )
        volunteers.append(Volunteer(
            id=volunteer_id, station_id=station.id, profile=profile.name, true_availability=true_week,
            accept_p=accept_p, responsiveness=rng.uniform(*profile.responsiveness),
            median_minutes=profile.median_minutes * math.exp(rng.gauss(0, 0.4)), candidate=candidate))
    return volunteers


def _arrival_hour(rng):
    """Approvals through the day: a morning and a late-afternoon peak over a low base."""
    while True:
        kind = rng.random()
        if kind < 0.42:
            hour = rng.gauss(9.0, 1.0)
        elif kind < 0.78:
            hour = rng.gauss(16.5, 1.0)
        else:
            hour = rng.uniform(7.0, 21.0)
        if 6.5 <= hour <= 21.5:
            return hour


def _round_up(hours, step):
    return math.ceil(hours / step - 1e-9) * step


def build_needs(rng, stations, count, day):
    # Villages order relatively more than they have volunteers: the last mile is rural.
    weights = [1.5 if s.urban else 1.0 for s in stations]
    needs = []
    for hour in sorted(_arrival_hour(rng) for _ in range(count)):
        station = rng.choices(stations, weights=weights)[0]
        urgency = "urgent" if rng.random() < URGENT_SHARE else "normal"
        category = _weighted(rng, NEED_MIX)
        true_lat, true_lon = _jitter(rng, station.lat, station.lon, 0.4 if station.urban else 1.0)
        located = rng.random() < 0.8
        if urgency == "urgent":
            duration = rng.choice((1.0, 1.5, 2.0))
            start = _round_up(hour + rng.uniform(0.5, 1.5), 1 / 6)
        else:
            duration = rng.choice((1.0, 1.5, 2.0, 2.0, 3.0))
            start = _round_up(hour + rng.uniform(1.5, 6.0), 0.5)
            if start + duration > 21.0:  # tomorrow morning instead
                start = 24 + rng.choice((8.0, 8.5, 9.0, 9.5, 10.0))
        windowed = urgency == "urgent" or rng.random() < 0.9
        needs.append(Need(
            id=f"n{len(needs):04d}", category=category, site_id=station.id, urgency=urgency,
            lat=true_lat if located else None, lon=true_lon if located else None, true_lat=true_lat, true_lon=true_lon,
            approved_at=local(day, round(hour, 4)),
            window_start=local(day, start) if windowed else None,
            window_end=local(day, start + duration) if windowed else None,
            duration=timedelta(hours=duration),
        ))
    return needs


def build_world(seed=1, volunteers=DEFAULT_VOLUNTEERS, needs=DEFAULT_NEEDS, day=DEFAULT_DATE):
    stations = build_stations()
    return World(seed=seed, day=day, stations=stations,
                 volunteers=build_volunteers(random.Random(f"{seed}:volunteers"), stations, volunteers),
                 needs=build_needs(random.Random(f"{seed}:needs"), stations, needs, day))


# --------------------------------------------------------------------------- dispatchers

BIG = 10 ** 6


@dataclass(frozen=True)
class Dispatcher:
    name: str
    label: str
    policy: domain.Policy


def dispatchers(base=None):
    base = base or domain.Policy()
    everyone = {c: {"normal": {"strategy": "broadcast", "size": BIG, "minutes": base.normal_minutes},
                    "urgent": {"strategy": "broadcast", "size": BIG, "minutes": base.urgent_minutes}}
                for c in CATEGORIES}
    one_by_one = {c: {"urgent": {"strategy": "sequential", "minutes": base.urgent_minutes}} for c in CATEGORIES}
    return [
        Dispatcher("lastmile", "Lastmile ranking", base),
        Dispatcher("qiangdan", "抢单 broadcast-all", replace(base, offers_per_level=BIG, overrides=everyone)),
        Dispatcher("nearest", "nearest-first", replace(base, weights=domain.Weights(1.0, 0.0, 0.0, 0.0),
                                                       overrides=one_by_one)),
    ]


# --------------------------------------------------------------------------- the engine


@dataclass
class Order:
    need: Need
    status: str
    strategy: str
    level: str
    approved_at: datetime
    offers_at_level: int = 0
    offers: list = field(default_factory=list)
    volunteer_id: Optional[str] = None
    assigned_at: Optional[datetime] = None
    assigned_level: Optional[str] = None
    escalations: int = 0


@dataclass
class Offer:
    id: int
    order: Order
    volunteer_id: str
    status: str
    level: str
    deadline: datetime
    created_at: datetime
    score: float
    active_at_offer: int  # the volunteer's active assignments when offered
    responded_at: Optional[datetime] = None
    reason: Optional[str] = None


COMPLETE, ANSWER, EXPIRE, APPROVE = range(4)  # order of events due at the same moment


class Simulation:
    """One dispatcher over one world. The method names follow DispatchService's."""

    def __init__(self, world, dispatcher, guard_accept=True):
        self.world = world
        self.dispatcher = dispatcher
        self.policy = dispatcher.policy
        self.guard_accept = guard_accept  # refuse an acceptance past max_active_assignments, as service.py does
        self.volunteers = {v.id: v for v in world.volunteers}
        self.candidates = {v.id: replace(v.candidate) for v in world.volunteers}  # dispatch's projection
        self.by_skill = {c: [v.id for v in world.volunteers if c in v.candidate.skills] for c in CATEGORIES}
        self.orders = {}
        self.offers = []
        self.events = Counter()  # what DispatchService would emit, by type
        self.conflicts = Counter()  # answers refused with 409, by reason
        self.held = {v.id: [] for v in world.volunteers}  # (start, end, need_id) of assigned services
        self.peak_active = Counter()
        self.over_cap = 0  # acceptances that took a volunteer past max_active_assignments
        self.double_booked = 0  # acceptances overlapping a service the volunteer already holds
        self.hours = Counter()
        self.log = []  # (time, event type, need id, volunteer id)
        self.now = None
        self._queue = []
        self._seq = 0

    # ---- the clock -----------------------------------------------------------------

    def schedule(self, when, kind, *args):
        self._seq += 1
        heappush(self._queue, (when, kind, self._seq, args))

    def run(self):
        for need in self.world.needs:
            self.schedule(need.approved_at, APPROVE, need)
        handlers = {APPROVE: self.on_need_approved, ANSWER: self.on_answer, EXPIRE: self.expire_offers,
                    COMPLETE: self.on_service_completed}
        while self._queue:
            when, kind, _, args = heappop(self._queue)
            self.now = when
            handlers[kind](*args)
        return self

    def emit(self, kind, order, volunteer_id=None):
        self.events[kind] += 1
        self.log.append((self.now, kind, order.need.id, volunteer_id))

    # ---- facts from other services -------------------------------------------------

    def on_need_approved(self, need):
        strategy, _, _ = self.policy.strategy(need.urgency, need.category)
        order = Order(need=need, status=domain.DISPATCHING, strategy=strategy, level=domain.LEVELS[0],
                      approved_at=self.now)
        self.orders[need.id] = order
        self.emit("order_created", order)
        self._advance(order, self.now)

    def on_service_completed(self, order, volunteer_id, hours):
        candidate = self.candidates[volunteer_id]
        candidate.active_assignments = max(0, candidate.active_assignments - 1)
        candidate.recent_hours += hours
        self.hours[volunteer_id] += hours
        self.held[volunteer_id] = [h for h in self.held[volunteer_id] if h[2] != order.need.id]
        if order.status == domain.ASSIGNED:
            order.status = domain.COMPLETED
            self.emit("service_completed", order, volunteer_id)

    # ---- the volunteer's side ------------------------------------------------------

    def on_answer(self, offer, accepts):
        if accepts(self):
            self.accept_offer(offer)
        else:
            self.decline_offer(offer)

    def accept_offer(self, offer):
        order, now = offer.order, self.now
        try:
            domain.check_offer_open(offer.status, offer.deadline, now)
            if order.status != domain.DISPATCHING:
                raise Conflict("This need has been taken or closed", {"order_status": order.status})
            candidate = self.candidates[offer.volunteer_id]
            if self.guard_accept and candidate.active_assignments >= self.policy.max_active_assignments:
                raise Conflict("You hold enough assignments", {"active_assignments": candidate.active_assignments})
        except Conflict as refused:
            self.conflicts[("accept", refused.message)] += 1
            self.emit("acceptance_refused", order, offer.volunteer_id)
            return False
        if candidate.active_assignments >= self.policy.max_active_assignments:
            self.over_cap += 1
        order.status, order.volunteer_id, order.assigned_at = domain.ASSIGNED, offer.volunteer_id, now
        order.assigned_level = offer.level
        offer.status, offer.responded_at = domain.ACCEPTED, now
        self._withdraw_pending(order, "another volunteer accepted")
        candidate.active_assignments += 1
        candidate.accepted += 1
        self.peak_active[offer.volunteer_id] = max(self.peak_active[offer.volunteer_id],
                                                   candidate.active_assignments)
        self.emit("offer_accepted", order, offer.volunteer_id)
        self.emit("order_assigned", order, offer.volunteer_id)
        # The service: at the window (not before the volunteer can get there), for its duration.
        need = order.need
        start = max(need.window_start or now + timedelta(hours=1), now + timedelta(minutes=15))
        end = start + need.duration
        if any(s < end and start < e for s, e, _ in self.held[offer.volunteer_id]):
            self.double_booked += 1
        self.held[offer.volunteer_id].append((start, end, need.id))
        self.schedule(end, COMPLETE, order, offer.volunteer_id, need.duration.total_seconds() / 3600)
        return True

    def decline_offer(self, offer):
        order, now = offer.order, self.now
        try:
            domain.check_offer_open(offer.status, offer.deadline, now)
        except Conflict as refused:
            self.conflicts[("decline", refused.message)] += 1
            return False
        offer.status, offer.responded_at, offer.reason = domain.DECLINED, now, "declined"
        self.candidates[offer.volunteer_id].declined += 1
        self.emit("offer_declined", order, offer.volunteer_id)
        self._advance(order, now)
        return True

    # ---- deadlines -----------------------------------------------------------------

    def expire_offers(self, order):
        now = self.now
        expired = [o for o in order.offers if o.status == domain.PENDING and o.deadline <= now]
        for offer in expired:
            offer.status, offer.responded_at = domain.EXPIRED, now
            self.candidates[offer.volunteer_id].declined += 1
            self.emit("offer_expired", order, offer.volunteer_id)
        if expired:
            self._advance(order, now)

    # ---- the engine (as DispatchService._advance and its helpers) ------------------

    def _advance(self, order, now):
        if order.status != domain.DISPATCHING:
            return
        if any(o.status == domain.PENDING for o in order.offers):
            return
        policy = self.policy
        _, at_once, deadline = policy.strategy(order.need.urgency, order.need.category)
        too_late = domain.window_started(order.need.window_start, now)
        while True:
            wanted = 0 if too_late else domain.offers_to_make(policy, order.level, order.offers_at_level, at_once)
            ranked = self._ranked_candidates(order, policy) if wanted else []
            if ranked:
                for candidate, total, parts in ranked[:wanted]:
                    self._make_offer(order, candidate, total, parts, now + deadline)
                return
            following = None if too_late else domain.next_level(order.level)
            if following is None:
                order.status = domain.UNFILLED
                self.emit("order_unfilled", order)
                return
            self.emit("order_escalated", order)
            order.escalations += 1
            order.level = following
            order.offers_at_level = 0

    def _ranked_candidates(self, order, policy):
        need = order.need
        scope = domain.level_site(need.site_id, order.level)
        offered = {o.volunteer_id for o in order.offers}
        facts = need.facts()
        eligible = []
        for volunteer_id in self.by_skill[need.category]:  # the SQL pre-filter: skill, active, room, scope
            candidate = self.candidates[volunteer_id]
            if not candidate.active or candidate.active_assignments >= policy.max_active_assignments:
                continue
            if not sites.is_inside(candidate.site_id, scope):
                continue
            if domain.ineligibility(candidate, facts, scope, offered, policy) is None:
                eligible.append(candidate)
        return domain.rank(eligible, facts, policy)

    def _make_offer(self, order, candidate, total, parts, deadline):
        offer = Offer(id=len(self.offers) + 1, order=order, volunteer_id=candidate.volunteer_id,
                      status=domain.PENDING, level=order.level, deadline=deadline, created_at=self.now, score=total,
                      active_at_offer=candidate.active_assignments)
        self.offers.append(offer)
        order.offers.append(offer)
        order.offers_at_level += 1
        candidate.recent_offers += 1
        self.emit("offer_made", order, candidate.volunteer_id)
        self.schedule(deadline, EXPIRE, order)
        self._volunteer_receives(offer)
        return offer

    def _withdraw_pending(self, order, reason):
        for offer in order.offers:
            if offer.status == domain.PENDING:
                offer.status, offer.responded_at, offer.reason = domain.WITHDRAWN, self.now, reason
                self.emit("offer_withdrawn", order, offer.volunteer_id)

    # ---- the volunteer's behaviour (not dispatch's knowledge) -----------------------

    def _volunteer_receives(self, offer):
        """Whether, when and how the volunteer answers. The dice depend only on the seed, the
        volunteer and the need, so every dispatcher meets the same person in the same mood."""
        volunteer = self.volunteers[offer.volunteer_id]
        need = offer.order.need
        dice = random.Random(f"{self.world.seed}:{volunteer.id}:{need.id}")
        seen, delay_noise, chance = dice.random(), dice.gauss(0, 0.8), dice.random()
        hour = local_hours(self.now, self.world.day) % 24
        attention = volunteer.responsiveness * (0.25 if hour < 7 or hour >= 22 else 1.0)
        if seen >= attention:
            return  # never answers: the offer expires
        median = volunteer.median_minutes * (0.6 if need.urgency == "urgent" else 1.0)
        answer_at = self.now + timedelta(minutes=median * math.exp(delay_noise))

        def accepts(sim):
            return chance < sim.acceptance_chance(volunteer, need)

        # Answers after the deadline are scheduled too: they meet a 409, as in the service.
        self.schedule(answer_at, ANSWER, offer, accepts)

    def acceptance_chance(self, volunteer, need):
        candidate = self.candidates[volunteer.id]
        home = candidate.lat, candidate.lon
        p = volunteer.accept_p * math.exp(-km_between(*home, need.true_lat, need.true_lon) / 10)
        if candidate.active_assignments:
            p *= 0.6
        start = need.window_start or self.now + timedelta(hours=1)
        end = need.window_end or start + need.duration
        if any(s < end and start < e for s, e, _ in self.held[volunteer.id]):
            p *= 0.1  # already busy then
        if not domain.available(volunteer.true_availability, start, end):
            p *= 0.3  # asked at a time that does not suit
        return p


def simulate(world, dispatcher, guard_accept=True):
    return Simulation(world, dispatcher, guard_accept=guard_accept).run()


# --------------------------------------------------------------------------- figures


def gini(values):
    """Gini coefficient of non-negative values: 0 all equal, (n-1)/n one holds everything."""
    xs = sorted(float(v) for v in values)
    n, total = len(xs), sum(xs)
    if n == 0 or total == 0:
        return 0.0
    weighted = sum(i * x for i, x in enumerate(xs, start=1))
    return 2 * weighted / (n * total) - (n + 1) / n


def percentile(values, q):
    """Linear interpolation between closest ranks (numpy's default); None when empty."""
    xs = sorted(values)
    if not xs:
        return None
    position = (len(xs) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(xs) - 1)
    return xs[low] + (xs[high] - xs[low]) * (position - low)


def _r(value, digits=2):
    return None if value is None else round(value, digits)


def summarize(sim):
    orders = list(sim.orders.values())
    filled = [o for o in orders if o.assigned_at is not None]
    minutes = [(o.assigned_at - o.approved_at).total_seconds() / 60 for o in filled]
    assignments = Counter(o.volunteer_id for o in filled)
    everyone = [v.id for v in sim.world.volunteers]
    km = [km_between(sim.candidates[o.volunteer_id].lat, sim.candidates[o.volunteer_id].lon,
                     o.need.true_lat, o.need.true_lon) for o in filled]
    late = [o for o in filled if o.need.window_start and o.assigned_at > o.need.window_start]
    by_urgency = {}
    for urgency in ("normal", "urgent"):
        group = [o for o in orders if o.need.urgency == urgency]
        got = [(o.assigned_at - o.approved_at).total_seconds() / 60 for o in group if o.assigned_at]
        by_urgency[urgency] = {"needs": len(group), "filled": len(got),
                               "fill_rate": _r(len(got) / len(group), 4) if group else None,
                               "median_minutes": _r(percentile(got, 50)), "p90_minutes": _r(percentile(got, 90))}
    offer_status = Counter(o.status for o in sim.offers)
    return {
        "dispatcher": sim.dispatcher.name,
        "label": sim.dispatcher.label,
        "needs": len(orders),
        "filled": len(filled),
        "fill_rate": _r(len(filled) / len(orders), 4) if orders else None,
        "median_minutes_to_accept": _r(percentile(minutes, 50)),
        "p90_minutes_to_accept": _r(percentile(minutes, 90)),
        "escalations": sim.events["order_escalated"],
        "needs_escalated": sum(1 for o in orders if o.escalations),
        "unfilled": sum(1 for o in orders if o.status == domain.UNFILLED),
        "offers": len(sim.offers),
        "offers_by_status": dict(sorted(offer_status.items())),
        "answers_refused_409": {f"{action}: {message}": count
                                for (action, message), count in sorted(sim.conflicts.items())},
        "acceptances_refused_409": sum(n for (action, _), n in sim.conflicts.items() if action == "accept"),
        "gini_assignments": _r(gini(assignments.get(v, 0) for v in everyone), 4),
        "gini_hours": _r(gini(sim.hours.get(v, 0.0) for v in everyone), 4),
        "gini_assignments_among_serving": _r(gini(assignments.values()), 4),
        "volunteers_serving": len(assignments),
        "max_assignments_per_volunteer": max(assignments.values(), default=0),
        "median_km_to_need": _r(percentile(km, 50)),
        "p90_km_to_need": _r(percentile(km, 90)),
        "filled_at_level": {level: sum(1 for o in filled if o.assigned_level == level) for level in domain.LEVELS},
        "accepted_after_window_start": len(late),
        "offers_after_window_start": sum(1 for o in sim.offers if o.order.need.window_start
                                         and o.created_at >= o.order.need.window_start),
        "over_cap_acceptances": sim.over_cap,
        "peak_active_assignments": max(sim.peak_active.values(), default=0),
        "double_booked": sim.double_booked,
        "by_urgency": by_urgency,
    }


def run(seed=1, volunteers=DEFAULT_VOLUNTEERS, needs=DEFAULT_NEEDS, day=DEFAULT_DATE, guard_accept=True):
    world = build_world(seed, volunteers, needs, day)
    results = [summarize(simulate(world, d, guard_accept=guard_accept)) for d in dispatchers()]
    return {
        "seed": seed,
        "date": day.isoformat(),
        "volunteers": volunteers,
        "needs": needs,
        "stations": len(world.stations),
        "synthetic_stations": sum(1 for s in world.stations if s.synthetic),
        "urgent_needs": sum(1 for n in world.needs if n.urgency == "urgent"),
        "approvals_by_local_hour": dict(sorted(Counter(
            f"{int(local_hours(n.approved_at, day)):02d}" for n in world.needs).items())),
        "volunteer_profiles": dict(sorted(Counter(v.profile for v in world.volunteers).items())),
        "guard_accept": guard_accept,
        "policy": {k: v for k, v in vars(domain.Policy()).items() if k not in ("weights", "overrides")},
        "results": results,
    }


def _fmt(value, pattern="{:.1f}"):
    return "-" if value is None else pattern.format(value)


def table(report):
    head = (f"A simulated day of Qiongshan: seed {report['seed']}, {report['date']}, "
            f"{report['volunteers']} volunteers, {report['needs']} needs ({report['urgent_needs']} urgent), {report['stations']} stations "
            f"({report['synthetic_stations']} synthetic)")
    columns = ["dispatcher", "fill rate", "median min", "p90 min", "escalations", "unfilled", "offers",
               "Gini assign.", "Gini hours"]
    rows = [[r["label"], f"{r['fill_rate'] * 100:.1f}%", _fmt(r["median_minutes_to_accept"]),
             _fmt(r["p90_minutes_to_accept"]), str(r["escalations"]), str(r["unfilled"]), str(r["offers"]),
             f"{r['gini_assignments']:.3f}", f"{r['gini_hours']:.3f}"] for r in report["results"]]
    columns2 = ["dispatcher", "urgent median", "volunteers used", "max/vol", "median km", "grabs lost (409)",
                "after window start", "over cap", "double-booked"]
    rows2 = [[r["label"], _fmt(r["by_urgency"]["urgent"]["median_minutes"]), str(r["volunteers_serving"]),
              str(r["max_assignments_per_volunteer"]), _fmt(r["median_km_to_need"]),
              str(r["acceptances_refused_409"]), str(r["accepted_after_window_start"]),
              str(r["over_cap_acceptances"]), str(r["double_booked"])] for r in report["results"]]
    return "\n".join([head, "", _grid(columns, rows), "", _grid(columns2, rows2)])


def _width(text):
    return sum(2 if ord(ch) > 0x2E80 else 1 for ch in text)  # CJK takes two columns


def _grid(columns, rows):
    widths = [max(_width(str(x)) for x in column) for column in zip(columns, *rows)]

    def line(cells):
        out = []
        for i, (cell, width) in enumerate(zip(cells, widths)):
            pad = " " * (width - _width(cell))
            out.append(cell + pad if i == 0 else pad + cell)
        return "| " + " | ".join(out) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(columns), rule] + [line(r) for r in rows])


def main(argv=None):
    parser = argparse.ArgumentParser(description="A simulated day of Qiongshan through Lastmile's dispatch rules.")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--volunteers", type=int, default=DEFAULT_VOLUNTEERS)
    parser.add_argument("--needs", type=int, default=DEFAULT_NEEDS)
    parser.add_argument("--date", type=date.fromisoformat, default=DEFAULT_DATE, help="the day (YYYY-MM-DD)")
    parser.add_argument("--no-accept-guard", dest="guard_accept", action="store_false",
                        help="let acceptances pass max_active_assignments, to see what the check at acceptance buys")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.volunteers < 1 or args.needs < 1:
        parser.error("--volunteers and --needs must be positive")
    report = run(args.seed, args.volunteers, args.needs, args.date, args.guard_accept)
    print(table(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
