"""services/needs/domain.py: the need's state machine (DESIGN.md §2) and who may
submit, see, read the contact of, and cancel a need."""
from datetime import datetime, timedelta, timezone

import pytest

from lastmile.auth import Actor
from lastmile.errors import Conflict, Forbidden, InvalidInput
from services.needs import domain

# --------------------------------------------------------------------------- state machine

# Written out from DESIGN.md §2, independently of domain.TRANSITIONS.
STATUSES = ("submitted", "rejected", "dispatching", "assigned", "in_service",
            "completed", "rated", "unfilled", "cancelled")
ACTIONS = ("approve", "reject", "cancel", "assign", "reassign", "exhaust",
           "redispatch", "start_service", "complete", "rate")
ALLOWED = {
    ("submitted", "approve"): "dispatching",
    ("submitted", "reject"): "rejected",
    ("dispatching", "assign"): "assigned",          # offer accepted
    ("assigned", "reassign"): "dispatching",
    ("dispatching", "exhaust"): "unfilled",         # escalation exhausted
    ("unfilled", "redispatch"): "dispatching",      # manual dispatch
    ("assigned", "start_service"): "in_service",    # check-in
    ("in_service", "complete"): "completed",        # check-out
    ("completed", "rate"): "rated",
    ("submitted", "cancel"): "cancelled",
    ("dispatching", "cancel"): "cancelled",
    ("assigned", "cancel"): "cancelled",
    ("unfilled", "cancel"): "cancelled",
}
REFUSED = [(s, a) for s in STATUSES for a in ACTIONS if (s, a) not in ALLOWED]


def test_the_module_knows_every_status_of_the_design():
    assert set(domain.STATUSES) == set(STATUSES)


@pytest.mark.parametrize("status, action", sorted(ALLOWED))
def test_allowed_transition(status, action):
    assert domain.next_status(status, action) == ALLOWED[(status, action)]
    assert domain.can(status, action) is True


@pytest.mark.parametrize("status, action", REFUSED)
def test_refused_transition_is_a_conflict_naming_the_status(status, action):
    assert domain.can(status, action) is False
    with pytest.raises(Conflict) as caught:
        domain.next_status(status, action)
    assert caught.value.status == 409
    assert caught.value.details["status"] == status
    assert status in caught.value.message
    assert action in caught.value.message


@pytest.mark.parametrize("status", ["rejected", "rated", "cancelled"])
def test_final_statuses_allow_nothing(status):
    assert not any(domain.can(status, action) for action in ACTIONS)


def test_the_happy_path_end_to_end():
    status = "submitted"
    for action in ("approve", "assign", "start_service", "complete", "rate"):
        status = domain.next_status(status, action)
    assert status == "rated"


def test_cancel_is_refused_once_service_has_started():
    status = domain.next_status(domain.next_status(domain.next_status("submitted", "approve"), "assign"),
                                "start_service")
    with pytest.raises(Conflict):
        domain.next_status(status, "cancel")


# --------------------------------------------------------------------------- check_window

NOW = datetime(2026, 3, 5, 2, 0, tzinfo=timezone.utc)
H = timedelta(hours=1)
D = timedelta(days=1)


@pytest.mark.parametrize(
    "start, end",
    [
        (None, None),
        (NOW + H, NOW + 3 * H),
        (NOW + H, None),
        (None, NOW + H),
        (NOW - H, NOW + H),                  # a window already open that has not ended
        (NOW + 89 * D, NOW + 90 * D),        # exactly 90 days ahead is still allowed
    ],
)
def test_window_accepted(start, end):
    assert domain.check_window(start, end, NOW) is None


@pytest.mark.parametrize(
    "start, end, field",
    [
        (NOW + 3 * H, NOW + H, "window_end"),             # ends before it starts
        (NOW + H, NOW + H, "window_end"),                 # ends as it starts
        (NOW - 3 * H, NOW - H, "window_end"),             # over already
        (None, NOW - H, "window_end"),
        (NOW + 91 * D, None, "window_start"),             # too far ahead
        (NOW + H, NOW + 90 * D + H, "window_end"),
        (NOW + 91 * D, NOW + 92 * D, "window_start"),
    ],
)
def test_window_refused_names_the_field(start, end, field):
    with pytest.raises(InvalidInput) as caught:
        domain.check_window(start, end, NOW)
    assert field in caught.value.details


def test_window_starting_in_the_past_without_an_end_is_refused():
    with pytest.raises(InvalidInput) as caught:
        domain.check_window(NOW - D, None, NOW)
    assert "window_start" in caught.value.details


# --------------------------------------------------------------------------- sites


def test_check_station_accepts_a_station():
    assert domain.check_station({"id": "qiongshan.hongqi.benli", "level": "station"}) is None


@pytest.mark.parametrize(
    "site",
    [None, {"id": "qiongshan.hongqi", "level": "institute"}, {"id": "qiongshan", "level": "district"}],
)
def test_check_station_refuses_unknown_sites_and_other_levels(site):
    with pytest.raises(InvalidInput) as caught:
        domain.check_station(site)
    assert "site_id" in caught.value.details


STATION = "qiongshan.hongqi.benli"


@pytest.mark.parametrize("project_site", [STATION, "qiongshan.hongqi", "qiongshan"])
def test_project_of_the_station_its_institute_or_its_district_is_reachable(project_site):
    assert domain.check_project_reachable(project_site, STATION) is None


@pytest.mark.parametrize(
    "project_site",
    [
        "qiongshan.hongqi.longtang",   # a sibling station
        "qiongshan.sanmenpo",          # another institute
        "qiongshan.sanmenpo.benli",    # a cousin station with the same name
        "qiongshan.hong",              # an id prefix, not an ancestor
        "meilan",                      # another district
    ],
)
def test_project_elsewhere_is_not_on_the_menu(project_site):
    with pytest.raises(InvalidInput) as caught:
        domain.check_project_reachable(project_site, STATION)
    assert "project_id" in caught.value.details


# --------------------------------------------------------------------------- who_submits

BEHALF = {"name": "王阿婆", "phone": "13800138000"}
RESIDENT = Actor(id="u-res", role="resident")
COLLECTOR = Actor(id="u-col", role="collector", site_id=STATION)
STAFF = Actor(id="u-staff", role="staff", site_id="qiongshan.hongqi")
ADMIN = Actor(id="u-admin", role="admin")
VOLUNTEER = Actor(id="u-vol", role="volunteer")


@pytest.mark.parametrize(
    "actor, on_behalf_of, submitter",
    [
        (RESIDENT, None, "resident"),
        (COLLECTOR, BEHALF, "collector"),
        (STAFF, BEHALF, "collector"),
        (ADMIN, BEHALF, "collector"),
    ],
)
def test_who_submits(actor, on_behalf_of, submitter):
    assert domain.who_submits(actor, on_behalf_of) == submitter


def test_resident_may_not_submit_for_someone_else():
    with pytest.raises(Forbidden):
        domain.who_submits(RESIDENT, BEHALF)


@pytest.mark.parametrize("actor", [COLLECTOR, STAFF, ADMIN])
def test_collector_staff_and_admin_must_say_for_whom(actor):
    with pytest.raises(InvalidInput) as caught:
        domain.who_submits(actor, None)
    assert "on_behalf_of" in caught.value.details


@pytest.mark.parametrize("on_behalf_of", [None, BEHALF])
def test_volunteers_cannot_submit_needs(on_behalf_of):
    with pytest.raises(Forbidden):
        domain.who_submits(VOLUNTEER, on_behalf_of)


# --------------------------------------------------------------------------- visibility


def _need(status="assigned", collector_id="u-col", assignee="u-vol"):
    return {
        "id": "n-1", "site_id": STATION, "status": status, "owner_id": "u-res",
        "collector_id": collector_id, "assignee_user_id": assignee,
    }


ACTORS = {
    "owner": Actor(id="u-res", role="resident"),
    "other resident": Actor(id="u-res-2", role="resident"),
    "registering collector": Actor(id="u-col", role="collector", site_id=STATION),
    "other collector": Actor(id="u-col-2", role="collector", site_id=STATION),
    "staff of the station": Actor(id="s-1", role="staff", site_id=STATION),
    "staff of the institute": Actor(id="s-2", role="staff", site_id="qiongshan.hongqi"),
    "staff of the district": Actor(id="s-3", role="staff", site_id="qiongshan"),
    "staff of a sibling station": Actor(id="s-4", role="staff", site_id="qiongshan.hongqi.longtang"),
    "staff of a sibling institute": Actor(id="s-5", role="staff", site_id="qiongshan.sanmenpo"),
    "staff of an id prefix": Actor(id="s-6", role="staff", site_id="qiongshan.hongqi.ben"),
    "staff of another district": Actor(id="s-7", role="staff", site_id="meilan"),
    "staff with no site": Actor(id="s-8", role="staff"),
    "admin": Actor(id="a-1", role="admin"),
    "other volunteer": Actor(id="u-vol-2", role="volunteer"),
}

# actor -> (may_see, sees_contact, may_cancel) on an assigned need a collector registered
RIGHTS = {
    "owner": (True, True, True),
    "other resident": (False, False, False),
    "registering collector": (True, True, True),
    "other collector": (False, False, False),
    "staff of the station": (True, True, True),
    "staff of the institute": (True, True, True),
    "staff of the district": (True, True, True),
    "staff of a sibling station": (False, False, False),
    "staff of a sibling institute": (False, False, False),
    "staff of an id prefix": (False, False, False),
    "staff of another district": (False, False, False),
    "staff with no site": (False, False, False),
    "admin": (True, True, True),
    "other volunteer": (False, False, False),
}


@pytest.mark.parametrize("who", sorted(RIGHTS))
def test_rights_on_a_need(who):
    actor, need = ACTORS[who], _need()
    assert (domain.may_see(actor, need), domain.sees_contact(actor, need), domain.may_cancel(actor, need)) \
        == RIGHTS[who]


@pytest.mark.parametrize("who", ["owner", "staff of the institute", "admin"])
@pytest.mark.parametrize("status", STATUSES)
def test_owner_and_governing_staff_keep_their_rights_in_every_status(who, status):
    actor, need = ACTORS[who], _need(status=status)
    assert domain.may_see(actor, need) and domain.sees_contact(actor, need) and domain.may_cancel(actor, need)


def test_a_collector_has_no_rights_on_a_need_a_resident_filed_alone():
    actor, need = ACTORS["registering collector"], _need(collector_id=None)
    assert not domain.may_see(actor, need)
    assert not domain.sees_contact(actor, need)
    assert not domain.may_cancel(actor, need)


# assigned volunteer: (may_see, sees_contact) by status; a volunteer never cancels
ASSIGNEE_BY_STATUS = {
    "submitted": (False, False),
    "dispatching": (False, False),   # e.g. after reassignment
    "assigned": (True, True),
    "in_service": (True, True),
    "completed": (True, False),      # the address and phone go back to masked
    "rated": (True, False),
    "unfilled": (False, False),
    "cancelled": (False, False),
    "rejected": (False, False),
}


@pytest.mark.parametrize("status", STATUSES)
def test_assigned_volunteer_rights_follow_the_status(status):
    actor, need = Actor(id="u-vol", role="volunteer"), _need(status=status)
    assert (domain.may_see(actor, need), domain.sees_contact(actor, need)) == ASSIGNEE_BY_STATUS[status]
    assert domain.may_cancel(actor, need) is False


@pytest.mark.parametrize("status", ["assigned", "in_service", "completed"])
def test_another_volunteer_sees_nothing(status):
    actor, need = ACTORS["other volunteer"], _need(status=status)
    assert not domain.may_see(actor, need)
    assert not domain.sees_contact(actor, need)
