"""志愿者接单 as pure rules: the assignment's states, the geofence and how service
time becomes credited hours (《志愿服务记录与证明出具办法》 asks that they be true)."""
import math
from dataclasses import dataclass
from lastmile.errors import Conflict, InvalidInput

# assignment statuses
ASSIGNED = "assigned"
IN_SERVICE = "in_service"
COMPLETED = "completed"
CANCELLED = "cancelled"
RELEASED = "released"


@dataclass(frozen=True)
class HoursRule:
    minimum_minutes: float = 15
    step_minutes: float = 30
    daily_cap_hours: float = 12.0
    geofence_metres: float = 500.0


def credited_hours(check_in, check_out, rule=HoursRule(), already_today=0.0):
    """Service time rounded down to the step; under the minimum counts nothing;
    no day credits more than the cap."""
    minutes = (check_out - check_in).total_seconds() / 60
    if minutes < rule.minimum_minutes:
        return 0.0
    steps = math.floor(minutes / rule.step_minutes)
    hours = round(steps * rule.step_minutes / 60, 4)
    return max(0.0, min(hours, rule.daily_cap_hours - already_today))


def check_can_check_in(status):
    if status == IN_SERVICE:
        raise Conflict("You have already checked in", {"status": status})
    if status != ASSIGNED:
        raise Conflict(f"This assignment is {status}; check-in is not possible", {"status": status})


def check_can_check_out(status):
    if status == ASSIGNED:
        raise Conflict("Check in before checking out", {"status": status})
    if status != IN_SERVICE:
        raise Conflict(f"This assignment is {status}; check-out is not possible", {"status": status})


def distance_metres(lat1, lon1, lat2, lon2):
    r = 6371000.0
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * r * math.asin(math.sqrt(a))


def outside_geofence(need_lat, need_lon, lat, lon, rule=HoursRule()):
    """True when both places are known and farther apart than the radius."""
    if None in (need_lat, need_lon, lat, lon):
        return False
    return distance_metres(need_lat, need_lon, lat, lon) > rule.geofence_metres


def volunteer_number(volunteer_id, year):
    """A volunteer number people can read out, derived from the random id so that
    replicas registering at once need no shared counter: LM-2026-3F9A1C2B5D6E.
    48 random bits make a clash improbable; a unique constraint refuses one."""
    return f"LM-{year}-{volunteer_id.replace('-', '')[:12].upper()}"


REQUEST_KINDS = ("correction", "backfill")
OPEN_CHECK_IN_LIMIT_HOURS = 24


def check_hours_request(kind, hours, service_date, today, rule=HoursRule()):
    """A correction may add or remove hours; a backfill (补录) only adds them. Neither
    may exceed a day's cap, nor concern a day to come or more than a year ago."""
    errors = {}
    if kind == "backfill" and hours <= 0:
        errors["hours"] = ["A backfill adds hours: give a positive number."]
    elif hours == 0:
        errors["hours"] = ["Give the hours to add (positive) or remove (negative)."]
    elif abs(hours) > rule.daily_cap_hours:
        errors["hours"] = [f"At most {rule.daily_cap_hours:g} hours for one day."]
    if service_date > today:
        errors["service_date"] = ["Must not be in the future."]
    elif (today - service_date).days > 366:
        errors["service_date"] = ["Must be within the last year."]
    if errors:
        raise InvalidInput("This hours request is not valid", errors)


def certificate_number(issued_at, token):
    """LMC-20261128-3F9A1C2B: date of issue and a random part, unguessable enough
    that the verification page does not become a directory."""
    return f"LMC-{issued_at:%Y%m%d}-{token.replace('-', '')[:10].upper()}"
