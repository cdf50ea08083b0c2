"""services/dispatch/domain.py: escalation levels, eligibility, availability in
local time, scoring and ranking, and when an offer may still be answered."""
from datetime import datetime, timedelta, timezone

import pytest

from lastmile.errors import Conflict
from services.dispatch import domain
from services.dispatch.domain import Candidate, NeedFacts, Policy

STATION = "qiongshan.hongqi.benli"
INSTITUTE = "qiongshan.hongqi"
DISTRICT = "qiongshan"

# --------------------------------------------------------------------------- escalation levels


@pytest.mark.parametrize(
    "level, site", [("station", STATION), ("institute", INSTITUTE), ("district", DISTRICT)],
)
def test_level_site_widens_from_station_to_district(level, site):
    assert domain.level_site(STATION, level) == site


@pytest.mark.parametrize(
    "level, following", [("station", "institute"), ("institute", "district"), ("district", None)],
)
def test_next_level(level, following):
    assert domain.next_level(level) == following


# --------------------------------------------------------------------------- availability


def utc(day, hour, minute=0):
    """A moment in March 2026, given in UTC (2026-03-09 is a Monday)."""
    return datetime(2026, 3, day, hour, minute, tzinfo=timezone.utc)


# Monday 09:00-11:00 in Haikou is Monday 01:00-03:00 UTC.
MON_9_TO_11 = (utc(9, 1), utc(9, 3))


@pytest.mark.parametrize(
    "availability, window, ok",
    [
        ({"mon": [["08:00", "12:00"]]}, MON_9_TO_11, True),
        ({"mon": [["09:00", "11:00"]]}, MON_9_TO_11, True),            # exactly the slot
        ({"mon": [["06:00", "08:00"], ["08:30", "11:30"]]}, MON_9_TO_11, True),
        ({"mon": [["10:00", "12:00"]]}, MON_9_TO_11, False),           # starts too early
        ({"mon": [["08:00", "10:30"]]}, MON_9_TO_11, False),           # ends too late
        ({"mon": [["01:00", "03:00"]]}, MON_9_TO_11, False),           # the UTC hours are not local hours
        ({"tue": [["00:00", "24:00"]]}, MON_9_TO_11, False),           # another weekday
        ({"mon": []}, MON_9_TO_11, False),
        # Sunday 20:00-21:00 UTC is Monday 04:00-05:00 in Haikou.
        ({"mon": [["03:00", "06:00"]]}, (utc(8, 20), utc(8, 21)), True),
        ({"sun": [["19:00", "22:00"]]}, (utc(8, 20), utc(8, 21)), False),
        # A start with no end: the volunteer must be free at the start.
        ({"mon": [["08:00", "12:00"]]}, (utc(9, 1), None), True),
        ({"mon": [["10:00", "12:00"]]}, (utc(9, 1), None), False),
        # Monday 22:00 to Tuesday 01:00 local: only the start is asked.
        ({"mon": [["21:00", "24:00"]]}, (utc(9, 14), utc(9, 17)), True),
        ({"tue": [["00:00", "02:00"]]}, (utc(9, 14), utc(9, 17)), False),
    ],
)
def test_available_in_local_time(availability, window, ok):
    assert domain.available(availability, *window) is ok


@pytest.mark.parametrize(
    "availability, window",
    [
        (None, MON_9_TO_11),                     # no availability given: no constraint
        ({}, MON_9_TO_11),
        ({"tue": [["08:00", "12:00"]]}, (None, None)),   # no window: no constraint
    ],
)
def test_no_availability_or_no_window_means_no_constraint(availability, window):
    assert domain.available(availability, *window) is True


# --------------------------------------------------------------------------- eligibility

POLICY = Policy()


def candidate(volunteer_id="v-1", **changes):
    values = dict(volunteer_id=volunteer_id, user_id="u-" + volunteer_id, site_id=STATION, skills=("health",))
    values.update(changes)
    return Candidate(**values)


def need(**changes):
    values = dict(category="health", site_id=STATION, window_start=MON_9_TO_11[0], window_end=MON_9_TO_11[1])
    values.update(changes)
    return NeedFacts(**values)


def test_a_fitting_volunteer_is_eligible():
    fit = candidate(availability={"mon": [["08:00", "12:00"]]}, active_assignments=1)
    assert domain.ineligibility(fit, need(), STATION, set(), POLICY) is None


@pytest.mark.parametrize(
    "changes, already_offered, keyword",
    [
        ({"active": False}, set(), "inactive"),
        ({"skills": ("education", "culture")}, set(), "skill"),
        ({"skills": ()}, set(), "skill"),
        ({"site_id": "qiongshan.hongqi.longtang"}, set(), "level"),   # sibling station
        ({"site_id": INSTITUTE}, set(), "level"),                     # above the station level
        ({}, {"v-1"}, "offered"),
        ({"active_assignments": 2}, set(), "assignments"),            # policy allows 2 at once
        ({"active_assignments": 5}, set(), "assignments"),
        ({"availability": {"tue": [["08:00", "12:00"]]}}, set(), "available"),
    ],
)
def test_each_rule_makes_a_volunteer_ineligible(changes, already_offered, keyword):
    reason = domain.ineligibility(candidate(**changes), need(), STATION, already_offered, POLICY)
    assert reason is not None and keyword in reason


@pytest.mark.parametrize(
    "site_id, level, eligible",
    [
        ("qiongshan.hongqi.longtang", "station", False),
        ("qiongshan.hongqi.longtang", "institute", True),   # widened to the institute
        (INSTITUTE, "institute", True),
        ("qiongshan.sanmenpo.benli", "institute", False),  # another institute's station
        ("qiongshan.sanmenpo.benli", "district", True),
        (DISTRICT, "district", True),
        ("meilan.haidian", "district", False),
    ],
)
def test_escalation_widens_who_is_inside_the_level(site_id, level, eligible):
    scope = domain.level_site(STATION, level)
    reason = domain.ineligibility(candidate(site_id=site_id), need(), scope, set(), POLICY)
    assert (reason is None) is eligible


def test_a_stricter_policy_lowers_the_assignment_limit():
    busy = candidate(active_assignments=1)
    assert domain.ineligibility(busy, need(), STATION, set(), POLICY) is None
    assert domain.ineligibility(busy, need(), STATION, set(), Policy(max_active_assignments=1)) is not None


# --------------------------------------------------------------------------- distance

HAIKOU = (20.0440, 110.1999)
SANYA = (18.2528, 109.5120)


def test_haversine_haikou_to_sanya():
    assert 200 <= domain.haversine_km(*HAIKOU, *SANYA) <= 230
    assert domain.haversine_km(*HAIKOU, *SANYA) == pytest.approx(domain.haversine_km(*SANYA, *HAIKOU))


def test_haversine_one_degree_of_latitude_is_about_111_km():
    assert domain.haversine_km(20.0, 110.0, 21.0, 110.0) == pytest.approx(111.19, abs=0.1)
    assert domain.haversine_km(*HAIKOU, *HAIKOU) == 0


# --------------------------------------------------------------------------- score and rank


def test_score_of_a_newcomer_at_the_need_station():
    total, parts = domain.score(candidate(), need(), POLICY)
    # closeness 1 (same station), rating (4.0 prior - 1) / 4, no recent load, acceptance prior 1/2
    assert parts == {"distance": 0.4, "rating": 0.225, "fairness": 0.2, "acceptance": 0.05}
    assert total == pytest.approx(0.875)


def test_score_with_coordinates_reports_the_distance():
    total, parts = domain.score(candidate(lat=SANYA[0], lon=SANYA[1]),
                                need(lat=HAIKOU[0], lon=HAIKOU[1]), POLICY)
    assert parts["distance_km"] == pytest.approx(domain.haversine_km(*HAIKOU, *SANYA), abs=0.01)
    assert parts["distance"] < 0.01          # 200 km away is worth almost nothing
    assert total == pytest.approx(parts["distance"] + parts["rating"] + parts["fairness"] + parts["acceptance"],
                                  abs=1e-3)


def test_score_stays_between_0_and_1():
    best = candidate(lat=20.0, lon=110.3, rating_count=1000, rating_sum=5000, accepted=1000)
    worst = candidate(site_id="meilan.x.y", rating_count=1000, rating_sum=1000, recent_hours=1e6,
                      recent_offers=1e6, declined=1000)
    assert 0 <= domain.score(worst, need(), POLICY)[0] < domain.score(best, need(lat=20.0, lon=110.3), POLICY)[0] <= 1


def ranked_ids(candidates, facts=None):
    return [c.volunteer_id for c, _, _ in domain.rank(candidates, facts or need(), POLICY)]


# In each pair below the better volunteer has the id that would lose a tie, so a
# rule that is not applied shows up as a wrong order.
@pytest.mark.parametrize(
    "better, worse, facts",
    [
        # nearer, all else equal (1 km vs 10 km east of the need)
        (dict(lat=20.0, lon=110.3096), dict(lat=20.0, lon=110.3957), need(lat=20.0, lon=110.3)),
        # same station rather than a sibling station, when nobody gave coordinates
        (dict(), dict(site_id="qiongshan.hongqi.longtang"), None),
        # higher rating, same number of ratings
        (dict(rating_count=10, rating_sum=48), dict(rating_count=10, rating_sum=40), None),
        # Bayesian: twenty ratings averaging 4.8 beat a single 5-star
        (dict(rating_count=20, rating_sum=96), dict(rating_count=1, rating_sum=5), None),
        # fewer recent hours
        (dict(recent_hours=2), dict(recent_hours=20), None),
        # fewer recent offers
        (dict(recent_offers=0), dict(recent_offers=8), None),
        # accepts more of what they are offered
        (dict(accepted=9, declined=1), dict(accepted=1, declined=9), None),
    ],
)
def test_rank_prefers(better, worse, facts):
    assert ranked_ids([candidate("v-a", **worse), candidate("v-z", **better)], facts) == ["v-z", "v-a"]
    assert ranked_ids([candidate("v-z", **better), candidate("v-a", **worse)], facts) == ["v-z", "v-a"]


def test_rank_breaks_ties_by_volunteer_id():
    assert ranked_ids([candidate("v-c"), candidate("v-a"), candidate("v-b")]) == ["v-a", "v-b", "v-c"]


def test_rank_returns_totals_best_first_with_their_parts():
    ranked = domain.rank([candidate("v-1", recent_hours=30), candidate("v-2")], need(), POLICY)
    totals = [total for _, total, _ in ranked]
    assert totals == sorted(totals, reverse=True) and totals[0] > totals[1]
    assert all(set(parts) >= {"distance", "rating", "fairness", "acceptance"} for _, _, parts in ranked)


# --------------------------------------------------------------------------- strategy


def test_normal_need_is_offered_to_one_volunteer_at_a_time():
    assert Policy().strategy("normal") == ("sequential", 1, timedelta(minutes=30))


def test_urgent_need_is_broadcast_with_a_short_deadline():
    assert Policy().strategy("urgent") == ("broadcast", 3, timedelta(minutes=10))


def test_strategy_follows_the_policy():
    policy = Policy(broadcast_size=5, urgent_minutes=5, normal_minutes=60)
    assert policy.strategy("urgent") == ("broadcast", 5, timedelta(minutes=5))
    assert policy.strategy("normal") == ("sequential", 1, timedelta(minutes=60))



@pytest.mark.parametrize("level, made, at_once, expected", [
    ("station", 0, 1, 1), ("station", 2, 1, 1), ("station", 3, 1, 0),  # three each, then widen
    ("institute", 1, 3, 2), ("institute", 3, 3, 0),
    ("district", 0, 1, 3), ("district", 30, 1, 3), ("district", 30, 5, 5),  # the last call never runs dry
])
def test_offers_to_make_spend_a_budget_per_level_but_the_district_keeps_asking(level, made, at_once, expected):
    assert domain.offers_to_make(Policy(), level, made, at_once) == expected


def test_no_new_offers_once_the_window_has_started():
    assert domain.window_started(None, NOW) is False
    assert domain.window_started(NOW + timedelta(minutes=1), NOW) is False
    assert domain.window_started(NOW, NOW) is True

# --------------------------------------------------------------------------- offers

NOW = utc(9, 1)


def test_a_pending_offer_before_its_deadline_is_open():
    assert domain.check_offer_open("pending", NOW + timedelta(minutes=1), NOW) is None


@pytest.mark.parametrize("status", ["accepted", "declined", "expired", "withdrawn"])
def test_an_answered_offer_is_closed(status):
    with pytest.raises(Conflict) as caught:
        domain.check_offer_open(status, NOW + timedelta(minutes=10), NOW)
    assert caught.value.details["status"] == status
    assert caught.value.status == 409


@pytest.mark.parametrize("late", [timedelta(0), timedelta(seconds=1), timedelta(hours=3)])
def test_a_pending_offer_past_its_deadline_is_expired(late):
    with pytest.raises(Conflict) as caught:
        domain.check_offer_open("pending", NOW - late, NOW)
    assert caught.value.details["status"] == "expired"


def test_a_category_can_override_the_strategy_of_an_urgency():
    from services.dispatch.domain import parse_overrides

    policy = Policy(overrides=parse_overrides(
        '{"health": {"normal": {"strategy": "broadcast", "size": 2, "minutes": 15}},'
        ' "culture": {"urgent": {"strategy": "sequential", "minutes": 20}}}'))
    assert policy.strategy("normal", "health") == ("broadcast", 2, timedelta(minutes=15))
    assert policy.strategy("urgent", "culture") == ("sequential", 1, timedelta(minutes=20))
    assert policy.strategy("normal", "culture") == ("sequential", 1, timedelta(minutes=30))
    assert policy.strategy("urgent", "health") == ("broadcast", 3, timedelta(minutes=10))


@pytest.mark.parametrize("raw", ['{"health": {"sometimes": {}}}', '{"health": {"normal": {"strategy": "lottery"}}}',
                                 '{"health": {"normal": {"minutes": 0}}}', "not json", '["health"]'])
def test_bad_strategy_overrides_are_refused(raw):
    from services.dispatch.domain import parse_overrides

    with pytest.raises(ValueError):
        parse_overrides(raw)
