"""群众评单 as pure rules: who may rate, when, and what a rating does to scores and
follow-ups."""
from dataclasses import dataclass, field
from datetime import timedelta

from lastmile.errors import Conflict, Forbidden

TAGS = ("punctual", "patient", "professional", "kind", "skilled", "no_show", "rude", "late")
ALARMING_TAGS = ("no_show", "rude")


@dataclass(frozen=True)
class RatingPolicy:
    window: timedelta = timedelta(days=7)
    prior_mean: float = 4.0
    prior_weight: float = 5.0
    follow_up_at_or_below: int = 2


@dataclass
class Score:
    count: int = 0
    total: float = 0.0
    distribution: dict = field(default_factory=lambda: {str(s): 0 for s in range(1, 6)})

    def add(self, stars):
        self.count += 1
        self.total += stars
        self.distribution[str(stars)] = self.distribution.get(str(stars), 0) + 1

    def summary(self, policy=RatingPolicy()):
        mean = round(self.total / self.count, 3) if self.count else None
        bayesian = (policy.prior_mean * policy.prior_weight + self.total) / (policy.prior_weight + self.count)
        return {
            "count": self.count, "sum": self.total, "mean": mean, "bayesian_mean": round(bayesian, 3),
            "distribution": dict(self.distribution),
        }


def check_may_rate(actor_id, owner_id, collector_id, completed_at, now, already_rated, policy=RatingPolicy()):
    if actor_id not in (owner_id, collector_id):
        raise Forbidden("Only the resident who ordered this service, or their collector, may rate it")
    if already_rated:
        raise Conflict("This service has been rated already")
    if now - completed_at > policy.window:
        raise Conflict("The time to rate this service has passed", {"window_days": policy.window.days})


def needs_follow_up(stars, tags, policy=RatingPolicy()):
    return stars <= policy.follow_up_at_or_below or any(tag in ALARMING_TAGS for tag in tags)


FOLLOW_UP_DAYS = 3


def overdue(created_at, now, days=FOLLOW_UP_DAYS):
    return now - created_at >= timedelta(days=days)


def median(values):
    ordered = sorted(values)
    if not ordered:
        return None
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def figures(needs, hours):
    """The center's figures for a set of needs (dicts with status times, people
    served, stars, minutes to accept) and hours entries (dicts with hours)."""
    approved = [n for n in needs if n["approved_at"] is not None]
    accepted = [n for n in needs if n["accepted_at"] is not None]
    completed = [n for n in needs if n["completed_at"] is not None]
    stars = [n["stars"] for n in needs if n["stars"] is not None]
    waits = [n["minutes_to_accept"] for n in accepted if n["minutes_to_accept"] is not None]
    return {
        "needs_submitted": len(needs),
        "needs_completed": len(completed),
        "services_held": len(completed),
        "volunteer_hours": round(sum(h["hours"] for h in hours), 4),
        "people_served": sum(n["people_served"] or 0 for n in completed),
        "average_rating": round(sum(stars) / len(stars), 3) if stars else None,
        "ratings": len(stars),
        "ratings_by_stars": {str(n): stars.count(n) for n in range(1, 6)},
        "fill_rate": round(len(accepted) / len(approved), 4) if approved else None,
        "median_minutes_to_acceptance": None if not waits else round(median(waits), 2),
    }


def child_site(site_id, of_site_id):
    """The site directly under ``of_site_id`` that contains ``site_id`` (itself at a station)."""
    if site_id == of_site_id:
        return site_id
    depth = of_site_id.count(".") + 1
    return ".".join(site_id.split(".")[:depth + 1])
