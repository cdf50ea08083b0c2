"""The need's life, as pure rules: no database, no broker.

submitted ─approve→ dispatching ─offer accepted→ assigned ─check-in→ in_service
─check-out→ completed ─rating→ rated; reject, cancel, unfilled and reassignment
as DESIGN.md §2 draws them.
"""
from datetime import timedelta

from lastmile import sites
from lastmile.errors import Conflict, Forbidden, InvalidInput

SUBMITTED = "submitted"
REJECTED = "rejected"
DISPATCHING = "dispatching"
ASSIGNED = "assigned"
IN_SERVICE = "in_service"
COMPLETED = "completed"
RATED = "rated"
UNFILLED = "unfilled"
CANCELLED = "cancelled"

STATUSES = (SUBMITTED, REJECTED, DISPATCHING, ASSIGNED, IN_SERVICE, COMPLETED, RATED, UNFILLED, CANCELLED)
OPEN_STATUSES = (SUBMITTED, DISPATCHING, ASSIGNED, IN_SERVICE, UNFILLED)

# action -> (states it may start from, state it leads to)
TRANSITIONS = {
    "approve": ((SUBMITTED,), DISPATCHING),
    "reject": ((SUBMITTED,), REJECTED),
    "cancel": ((SUBMITTED, DISPATCHING, ASSIGNED, UNFILLED), CANCELLED),
    "assign": ((DISPATCHING,), ASSIGNED),
    "reassign": ((ASSIGNED,), DISPATCHING),
    "exhaust": ((DISPATCHING,), UNFILLED),
    "redispatch": ((UNFILLED,), DISPATCHING),
    "start_service": ((ASSIGNED,), IN_SERVICE),
    "complete": ((IN_SERVICE,), COMPLETED),
    "rate": ((COMPLETED,), RATED),
}

CHANNELS = ("mini_program", "web", "collector", "phone", "open311")
BENEFICIARY_GROUPS = ("left_behind_child", "elderly_alone", "solitary", "disabled", "low_income", "general")
URGENCIES = ("normal", "urgent")
DUPLICATE_WINDOW = timedelta(hours=24)
MAX_WINDOW_AHEAD = timedelta(days=90)
CLOCK_SKEW = timedelta(minutes=10)  # clients' clocks run a little behind


def next_status(current, action):
    """The state ``action`` leads to from ``current``, or Conflict."""
    allowed_from, target = TRANSITIONS[action]
    if current not in allowed_from:
        raise Conflict(
            f"A need that is {current} does not allow {action}",
            {"status": current, "action": action, "allowed_from": list(allowed_from)},
        )
    return target


def can(current, action):
    return current in TRANSITIONS[action][0]


def check_window(window_start, window_end, now):
    errors = {}
    if window_start and window_end and window_end <= window_start:
        errors["window_end"] = ["Must be after window_start."]
    for name, value in (("window_start", window_start), ("window_end", window_end)):
        if value is None:
            continue
        # A window that has opened may still be served; one with no end must start ahead.
        if (name == "window_end" or window_end is None) and value < now - CLOCK_SKEW:
            errors[name] = ["Must not be in the past."]
        if value > now + MAX_WINDOW_AHEAD:
            errors[name] = ["Must be at most 90 days ahead."]
    if errors:
        raise InvalidInput("The service window is not valid", errors)


def check_station(site):
    if site is None:
        raise InvalidInput("Unknown site", {"site_id": ["Unknown site."]})
    if site["level"] != "station":
        raise InvalidInput("Needs are placed at a station", {"site_id": ["Must be a station (实践站)."]})


def check_project_reachable(project_site_id, station_id):
    """A station may order the projects of its own site, its institute and its district."""
    if not sites.is_inside(station_id, project_site_id):
        raise InvalidInput(
            "That project is not on this station's menu",
            {"project_id": [f"Project of {project_site_id} cannot serve {station_id}."]},
        )


def who_submits(actor, on_behalf_of):
    """Residents order for themselves; collectors (and staff) on a resident's behalf."""
    if actor.role == "resident":
        if on_behalf_of:
            raise Forbidden("Only need collectors and staff submit on a resident's behalf")
        return "resident"
    if actor.role in ("collector", "staff", "admin"):
        if not on_behalf_of:
            raise InvalidInput(
                "Say whom this need is for", {"on_behalf_of": ["Required when a collector or staff submits."]}
            )
        return "collector"
    raise Forbidden("Volunteers cannot submit needs; register as a resident")


def may_see(actor, need):
    """Who may read a need at all."""
    if actor.is_admin or actor.governs(need["site_id"]):
        return True
    if actor.role == "resident":
        return need["owner_id"] == actor.id
    if actor.role == "collector":
        return need["collector_id"] == actor.id
    if actor.role == "volunteer":
        return need.get("assignee_user_id") == actor.id and need["status"] in (ASSIGNED, IN_SERVICE, COMPLETED, RATED)
    return False


def sees_contact(actor, need):
    """The contact phone and address are shown unmasked only to those who act on them."""
    if actor.is_admin or actor.governs(need["site_id"]):
        return True
    if need["owner_id"] == actor.id or (need["collector_id"] and need["collector_id"] == actor.id):
        return True
    return need.get("assignee_user_id") == actor.id and need["status"] in (ASSIGNED, IN_SERVICE)


def may_record_beneficiaries(actor, site_id):
    """Collectors record for the stations of their site; staff for those they govern."""
    if actor.governs(site_id):
        return True
    return actor.role == "collector" and sites.is_inside(site_id, actor.site_id)


def may_cancel(actor, need):
    if actor.is_admin or actor.governs(need["site_id"]):
        return True
    return need["owner_id"] == actor.id or (need["collector_id"] is not None and need["collector_id"] == actor.id)
