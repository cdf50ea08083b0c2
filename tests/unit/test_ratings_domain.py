"""services/ratings/domain.py: score aggregates, who may rate and when, and which
ratings open a follow-up for staff."""
from datetime import datetime, timedelta, timezone

import pytest

from lastmile.errors import Conflict, Forbidden
from services.ratings import domain
from services.ratings.domain import RatingPolicy, Score

# --------------------------------------------------------------------------- Score


def test_an_unrated_volunteer_stands_at_the_prior():
    summary = Score().summary()
    assert summary["count"] == 0
    assert summary["mean"] is None
    assert summary["bayesian_mean"] == 4.0
    assert summary["distribution"] == {"1": 0, "2": 0, "3": 0, "4": 0, "5": 0}


def score_of(*stars):
    score = Score()
    for s in stars:
        score.add(s)
    return score.summary()


@pytest.mark.parametrize(
    "stars, mean, bayesian",
    [
        ((5,), 5.0, 4.167),            # (4*5 + 5) / 6
        ((1,), 1.0, 3.5),              # (20 + 1) / 6
        ((5, 4, 4), 4.333, 4.125),     # (20 + 13) / 8
        ((3, 3, 3, 3, 3), 3.0, 3.5),   # (20 + 15) / 10
        ((5,) * 95, 5.0, 4.95),        # (20 + 475) / 100
    ],
)
def test_mean_and_bayesian_mean(stars, mean, bayesian):
    summary = score_of(*stars)
    assert summary["count"] == len(stars)
    assert summary["sum"] == sum(stars)
    assert summary["mean"] == mean
    assert summary["bayesian_mean"] == bayesian


def test_many_good_ratings_outweigh_a_single_perfect_one():
    assert score_of(*([5] * 16 + [4] * 4))["bayesian_mean"] > score_of(5)["bayesian_mean"]


def test_distribution_counts_each_star():
    assert score_of(5, 4, 4, 1, 5, 5)["distribution"] == {"1": 1, "2": 0, "3": 0, "4": 2, "5": 3}


def test_scores_do_not_share_their_distribution():
    first, second = Score(), Score()
    first.add(5)
    assert second.summary()["distribution"]["5"] == 0


def test_summary_follows_the_policy_prior():
    score = Score()
    score.add(5)
    score.add(5)
    assert score.summary(RatingPolicy(prior_mean=3.0, prior_weight=2.0))["bayesian_mean"] == 4.0  # (6 + 10) / 4


# --------------------------------------------------------------------------- check_may_rate

DONE = datetime(2026, 3, 9, 3, 0, tzinfo=timezone.utc)


def may_rate(actor_id="u-res", collector_id="u-col", after=timedelta(hours=2), already_rated=False):
    return domain.check_may_rate(actor_id, "u-res", collector_id, DONE, DONE + after, already_rated)


@pytest.mark.parametrize("actor_id", ["u-res", "u-col"])
def test_owner_or_collector_may_rate(actor_id):
    assert may_rate(actor_id=actor_id) is None


@pytest.mark.parametrize(
    "actor_id, collector_id", [("u-vol", "u-col"), ("u-staff", "u-col"), ("u-col", None), ("u-other", None)],
)
def test_nobody_else_may_rate(actor_id, collector_id):
    with pytest.raises(Forbidden):
        may_rate(actor_id=actor_id, collector_id=collector_id)


def test_a_service_is_rated_once():
    with pytest.raises(Conflict):
        may_rate(already_rated=True)


@pytest.mark.parametrize(
    "after, allowed",
    [
        (timedelta(0), True),
        (timedelta(days=6, hours=23), True),
        (timedelta(days=7), True),                     # the seventh day still counts
        (timedelta(days=7, minutes=1), False),
        (timedelta(days=30), False),
    ],
)
def test_rating_is_open_for_seven_days(after, allowed):
    if allowed:
        assert may_rate(after=after) is None
    else:
        with pytest.raises(Conflict) as caught:
            may_rate(after=after)
        assert caught.value.details["window_days"] == 7


def test_a_stranger_is_forbidden_even_after_the_window():
    with pytest.raises(Forbidden):
        may_rate(actor_id="u-other", after=timedelta(days=30))


# --------------------------------------------------------------------------- follow-ups


@pytest.mark.parametrize(
    "stars, tags, follow_up",
    [
        (1, [], True),
        (2, [], True),
        (3, [], False),
        (4, [], False),
        (5, [], False),
        (5, ["no_show"], True),
        (4, ["rude"], True),
        (3, ["punctual", "late"], False),
        (5, ["patient", "kind"], False),
        (2, ["kind"], True),
    ],
)
def test_needs_follow_up(stars, tags, follow_up):
    assert domain.needs_follow_up(stars, tags) is follow_up
