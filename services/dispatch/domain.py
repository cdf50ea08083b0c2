"""政府派单 as pure rules: who may be offered an order, in what order, and when the
search widens. No database, no broker: unit-tested on plain values."""
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Optional
from zoneinfo import ZoneInfo

from lastmile import sites
from lastmile.errors import Conflict

LOCAL_TIME = ZoneInfo("Asia/Shanghai")
LEVELS = ("station", "institute", "district")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# order statuses
DISPATCHING = "dispatching"
ASSIGNED = "assigned"
UNFILLED = "unfilled"
CANCELLED = "cancelled"
COMPLETED = "completed"

# offer statuses
PENDING = "pending"
ACCEPTED = "accepted"
DECLINED = "declined"
EXPIRED = "expired"
WITHDRAWN = "withdrawn"
OFFER_STATUSES = (PENDING, ACCEPTED, DECLINED, EXPIRED, WITHDRAWN)


@dataclass(frozen=True)
class Weights:
    distance: float = 0.4
    rating: float = 0.3
    fairness: float = 0.2
    acceptance: float = 0.1


@dataclass(frozen=True)
class Policy:
    offers_per_level: int = 3
    max_active_assignments: int = 2
    broadcast_size: int = 3
    normal_minutes: float = 30
    urgent_minutes: float = 10
    rating_prior_mean: float = 4.0
    rating_prior_weight: float = 5.0
    weights: Weights = field(default_factory=Weights)
    # {category: {urgency: {"strategy": "broadcast"|"sequential", "size": K, "minutes": M}}}
    overrides: dict = field(default_factory=dict)

    def strategy(self, urgency, category=None):
        """(strategy, offers at once, deadline) for a need's urgency and category."""
        if urgency == "urgent":
            chosen = ("broadcast", self.broadcast_size, self.urgent_minutes)
        else:
            chosen = ("sequential", 1, self.normal_minutes)
        override = self.overrides.get(category, {}).get(urgency)
        if override:
            name = override.get("strategy", chosen[0])
            size = 1 if name == "sequential" else int(override.get("size", self.broadcast_size))
            chosen = (name, size, float(override.get("minutes", chosen[2])))
        return chosen[0], chosen[1], timedelta(minutes=chosen[2])


def parse_overrides(raw):
    """``LASTMILE_DISPATCH_STRATEGIES``: JSON such as
    ``{"health": {"normal": {"strategy": "broadcast", "size": 2, "minutes": 15}}}``."""
    if not raw:
        return {}
    try:
        overrides = json.loads(raw)
        for category, by_urgency in overrides.items():
            for urgency, rule in by_urgency.items():
                if urgency not in ("normal", "urgent") or rule.get("strategy", "sequential") not in (
                        "sequential", "broadcast") or float(rule.get("minutes", 1)) <= 0 or int(
                        rule.get("size", 1)) < 1:
                    raise ValueError(f"{category}.{urgency}")
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"LASTMILE_DISPATCH_STRATEGIES is not valid: {exc}")
    return overrides


@dataclass
class Candidate:
    volunteer_id: str
    user_id: Optional[str]
    site_id: str
    skills: tuple
    lat: Optional[float] = None
    lon: Optional[float] = None
    active: bool = True
    availability: Optional[dict] = None
    active_assignments: int = 0
    rating_count: int = 0
    rating_sum: float = 0.0
    recent_hours: float = 0.0
    recent_offers: int = 0
    accepted: int = 0
    declined: int = 0


@dataclass
class NeedFacts:
    category: str
    site_id: str
    urgency: str = "normal"
    lat: Optional[float] = None
    lon: Optional[float] = None
    window_start: Optional[datetime] = None
    window_end: Optional[datetime] = None


def level_site(need_site_id, level):
    """The site whose volunteers are asked at an escalation level."""
    chain = sites.ancestors(need_site_id)  # station, institute, district
    return chain[min(LEVELS.index(level), len(chain) - 1)]


def next_level(level):
    index = LEVELS.index(level) + 1
    return LEVELS[index] if index < len(LEVELS) else None


def offers_to_make(policy, level, offers_at_level, at_once):
    """How many offers to make now at this level; 0 when its budget is spent and the
    search must widen. Station and institute get ``offers_per_level`` offers each. The
    district is the last call: it keeps asking, at least ``broadcast_size`` at once,
    until nobody eligible is left (a cap there left needs unfilled with willing
    volunteers never asked; see bench/simulate.py)."""
    if next_level(level) is None:
        return max(at_once, policy.broadcast_size)
    return max(0, min(at_once, policy.offers_per_level - offers_at_level))


def window_started(window_start, now):
    """No new offers once the service should have begun: staff are told it is unfilled
    and may dispatch it by hand."""
    return window_start is not None and now >= window_start


def available(availability, start, end):
    """Weekly availability ``{"mon": [["08:00", "12:00"]], ...}`` in local time.
    No availability given, or no window given, means no constraint."""
    if not availability or start is None:
        return True
    start_local = start.astimezone(LOCAL_TIME)
    end_local = (end or start).astimezone(LOCAL_TIME)
    if start_local.date() != end_local.date():
        # A window across midnight: ask only that the volunteer can start.
        end_local = start_local
    slots = availability.get(WEEKDAYS[start_local.weekday()], [])
    begin, finish = start_local.strftime("%H:%M"), end_local.strftime("%H:%M")
    return any(slot[0] <= begin and finish <= slot[1] for slot in slots)


def ineligibility(candidate, need, scope_site_id, already_offered, policy):
    """Why ``candidate`` may not be offered this order now, or None."""
    if not candidate.active:
        return "inactive"
    if need.category not in candidate.skills:
        return "lacks the skill"
    if not sites.is_inside(candidate.site_id, scope_site_id):
        return "outside the current level"
    if candidate.volunteer_id in already_offered:
        return "already offered this order"
    if candidate.active_assignments >= policy.max_active_assignments:
        return "has enough assignments"
    if not available(candidate.availability, need.window_start, need.window_end):
        return "not available then"
    return None


def haversine_km(lat1, lon1, lat2, lon2):
    r = 6371.0
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * r * math.asin(math.sqrt(a))


def bayesian_mean(count, total, prior_mean, prior_weight):
    return (prior_mean * prior_weight + total) / (prior_weight + count)


def score(candidate, need, policy):
    """Total in [0, 1] and its weighted parts, kept on each offer for staff."""
    w = policy.weights
    if None not in (candidate.lat, candidate.lon, need.lat, need.lon):
        km = haversine_km(candidate.lat, candidate.lon, need.lat, need.lon)
        closeness = 1 / (1 + km / 5)
    else:
        km = None
        closeness = 1 / (1 + sites.tree_distance(candidate.site_id, need.site_id))
    rating = (bayesian_mean(candidate.rating_count, candidate.rating_sum, policy.rating_prior_mean,
                            policy.rating_prior_weight) - 1) / 4
    fairness = 0.5 / (1 + candidate.recent_hours / 10) + 0.5 / (1 + candidate.recent_offers / 5)
    acceptance = (candidate.accepted + 1) / (candidate.accepted + candidate.declined + 2)
    parts = {
        "distance": round(w.distance * closeness, 4),
        "rating": round(w.rating * rating, 4),
        "fairness": round(w.fairness * fairness, 4),
        "acceptance": round(w.acceptance * acceptance, 4),
    }
    if km is not None:
        parts["distance_km"] = round(km, 3)
    total = round(sum(v for k, v in parts.items() if k != "distance_km"), 4)
    return total, parts


def rank(candidates, need, policy):
    """Best first; ties broken by id so the order is stable and explainable."""
    scored = [(score(c, need, policy), c) for c in candidates]
    scored.sort(key=lambda item: (-item[0][0], item[1].volunteer_id))
    return [(c, total, parts) for (total, parts), c in scored]


def check_offer_open(offer_status, deadline, now):
    """An offer can be answered only while pending and before its deadline."""
    if offer_status != PENDING:
        reasons = {
            ACCEPTED: "already accepted", DECLINED: "already declined",
            EXPIRED: "expired", WITHDRAWN: "withdrawn",
        }
        raise Conflict(f"This offer is {reasons[offer_status]}", {"status": offer_status})
    if deadline <= now:
        raise Conflict("This offer has expired", {"status": EXPIRED})
