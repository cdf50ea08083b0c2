"""services/volunteers/domain.py: credited hours, check-in/out, geofence and the
volunteer number printed on certificates."""
import re
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from lastmile.errors import Conflict
from services.volunteers import domain
from services.volunteers.domain import HoursRule

CHECK_IN = datetime(2026, 3, 9, 1, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "served, hours",
    [
        (timedelta(minutes=0), 0.0),
        (timedelta(minutes=10), 0.0),
        (timedelta(minutes=14, seconds=59), 0.0),   # under the 15-minute minimum
        (timedelta(minutes=20), 0.0),               # rounded down to the half hour
        (timedelta(minutes=29, seconds=59), 0.0),
        (timedelta(minutes=30), 0.5),
        (timedelta(minutes=59), 0.5),
        (timedelta(minutes=60), 1.0),
        (timedelta(minutes=89), 1.0),
        (timedelta(minutes=90), 1.5),
        (timedelta(hours=3, minutes=10), 3.0),
        (timedelta(hours=11, minutes=59), 11.5),
        (timedelta(hours=12), 12.0),
        (timedelta(hours=13), 12.0),                # daily cap
        (timedelta(hours=30), 12.0),
        (timedelta(minutes=-45), 0.0),              # check-out before check-in never credits
    ],
)
def test_credited_hours(served, hours):
    assert domain.credited_hours(CHECK_IN, CHECK_IN + served) == hours


@pytest.mark.parametrize(
    "already_today, served, hours",
    [
        (0.0, timedelta(hours=3), 3.0),
        (10.0, timedelta(hours=3), 2.0),        # only what is left of the 12 h cap
        (11.5, timedelta(hours=2), 0.5),
        (12.0, timedelta(hours=1), 0.0),
        (13.0, timedelta(hours=1), 0.0),        # never negative
        (8.0, timedelta(minutes=40), 0.5),      # rounding still applies below the cap
    ],
)
def test_credited_hours_include_what_was_already_credited_today(already_today, served, hours):
    assert domain.credited_hours(CHECK_IN, CHECK_IN + served, already_today=already_today) == hours


def test_credited_hours_follow_the_rule():
    rule = HoursRule(minimum_minutes=5, step_minutes=15, daily_cap_hours=8)
    assert domain.credited_hours(CHECK_IN, CHECK_IN + timedelta(minutes=20), rule) == 0.25
    assert domain.credited_hours(CHECK_IN, CHECK_IN + timedelta(hours=9), rule) == 8


# --------------------------------------------------------------------------- check-in / check-out


def test_an_assigned_volunteer_may_check_in():
    assert domain.check_can_check_in("assigned") is None


@pytest.mark.parametrize("status", ["in_service", "completed", "cancelled", "released"])
def test_check_in_refused_otherwise(status):
    with pytest.raises(Conflict) as caught:
        domain.check_can_check_in(status)
    assert caught.value.details["status"] == status


def test_checking_in_twice_says_so():
    with pytest.raises(Conflict) as caught:
        domain.check_can_check_in("in_service")
    assert "already" in caught.value.message


def test_a_volunteer_in_service_may_check_out():
    assert domain.check_can_check_out("in_service") is None


@pytest.mark.parametrize("status", ["assigned", "completed", "cancelled", "released"])
def test_check_out_refused_otherwise(status):
    with pytest.raises(Conflict) as caught:
        domain.check_can_check_out(status)
    assert caught.value.details["status"] == status


def test_checking_out_before_checking_in_says_so():
    with pytest.raises(Conflict) as caught:
        domain.check_can_check_out("assigned")
    assert "check in" in caught.value.message.lower()


# --------------------------------------------------------------------------- geofence

NEED_AT = (20.0, 110.3)
METRES_PER_DEGREE_LAT = 111_195


def north_of_need(metres):
    return NEED_AT[0] + metres / METRES_PER_DEGREE_LAT, NEED_AT[1]


@pytest.mark.parametrize(
    "metres, outside",
    [(0, False), (100, False), (480, False), (520, True), (600, True), (5000, True)],
)
def test_geofence_radius_is_500_metres(metres, outside):
    assert domain.outside_geofence(*NEED_AT, *north_of_need(metres)) is outside


@pytest.mark.parametrize(
    "need_lat, need_lon, lat, lon",
    [
        (None, None, 20.1, 110.3),
        (20.0, None, 20.1, 110.3),
        (20.0, 110.3, None, None),
        (20.0, 110.3, 20.1, None),
        (None, None, None, None),
    ],
)
def test_geofence_not_applied_when_a_place_is_unknown(need_lat, need_lon, lat, lon):
    assert domain.outside_geofence(need_lat, need_lon, lat, lon) is False


def test_geofence_follows_the_rule():
    assert domain.outside_geofence(*NEED_AT, *north_of_need(800), HoursRule(geofence_metres=1000)) is False
    assert domain.outside_geofence(*NEED_AT, *north_of_need(300), HoursRule(geofence_metres=200)) is True


# --------------------------------------------------------------------------- volunteer number


def test_volunteer_number_reads_from_the_id():
    assert domain.volunteer_number("3f9a1c2b-7d4e-4c1a-9b2f-0123456789ab", 2026) == "LM-2026-3F9A1C2B7D4E"


def test_volunteer_number_format_for_any_uuid():
    volunteer_id = str(uuid.uuid4())
    number = domain.volunteer_number(volunteer_id, 2027)
    assert re.fullmatch(r"LM-2027-[0-9A-F]{12}", number)
    assert number == domain.volunteer_number(volunteer_id, 2027)   # stable for the same volunteer


def test_different_volunteers_get_different_numbers():
    first = domain.volunteer_number("3f9a1c2b-0000-4000-8000-000000000001", 2026)
    second = domain.volunteer_number("3f9a1c2b-ffff-4fff-bfff-ffffffffffff", 2026)
    assert first != second
