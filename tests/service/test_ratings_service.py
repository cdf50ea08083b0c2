"""The ratings service on the real broker and database, driven by RPC and by the
service_completed events volunteers would publish (群众评单)."""
import uuid
from contextlib import ExitStack

import eventlet
import pytest
from kombu import Connection
from nameko.standalone.rpc import ClusterRpcProxy

from lastmile.errors import Conflict, Forbidden, InvalidInput, NotFound
from services.ratings.service import RatingsService
from tests.service.conftest import ADMIN, actor
from tests.support import publish_event, wait_for


@pytest.fixture
def ratings(run_services, rpc):
    run_services(RatingsService)
    return rpc.ratings


def complete(uri, site_id, owner_id=None, collector_id=None, volunteer_id=None, need_id=None, event=None):
    """Publish volunteers' service_completed for a need, as check-out would."""
    need_id = need_id or str(uuid.uuid4())
    data = {
        "volunteer_id": volunteer_id or str(uuid.uuid4()), "user_id": str(uuid.uuid4()),
        "record_id": str(uuid.uuid4()), "hours": 1.5, "beneficiaries_served": 1,
        "check_in_at": "2026-03-09T01:00:00Z", "check_out_at": "2026-03-09T02:40:00Z", "flagged": False,
        "site_id": site_id, "category": "health", "owner_id": owner_id, "collector_id": collector_id,
    }
    return publish_event(uri, "volunteers", "service_completed", data, need_id=need_id, event=event)


def wait_rateable(ratings, need_id):
    """A stranger's rating is a Conflict until the service is known, Forbidden after."""
    def known():
        try:
            ratings.submit_rating(actor("resident"), need_id, {"stars": 5})
        except Conflict:
            return False
        except Forbidden:
            return True
        raise AssertionError("a stranger's rating was accepted")

    wait_for(known, timeout=10, message=f"service of {need_id} to be rateable")


def test_owner_and_collector_rate_once_and_scores_follow(ratings, tap, site_tree, infrastructure):
    uri = infrastructure["LASTMILE_AMQP_URI"]
    owner, volunteer_id = actor("resident"), str(uuid.uuid4())
    need_id = str(uuid.uuid4())
    with pytest.raises(Conflict):
        ratings.submit_rating(owner, need_id, {"stars": 5})

    complete(uri, site_tree["station"], owner_id=owner["id"], volunteer_id=volunteer_id, need_id=need_id)
    wait_rateable(ratings, need_id)

    for body, field in (({"stars": 0}, "stars"), ({"stars": 6}, "stars"), ({"stars": "5"}, "stars"),
                        ({"stars": 4, "tags": ["patient", "sleepy"]}, "tags"),
                        ({"stars": 4, "comment": "好" * 501}, "comment"), ({"stars": 4, "mood": "x"}, "mood")):
        with pytest.raises(InvalidInput) as caught:
            ratings.submit_rating(owner, need_id, body)
        assert set(caught.value.details) == {field}, body
    with pytest.raises(Forbidden):
        ratings.submit_rating(actor("resident"), need_id, {"stars": 1})

    rating = ratings.submit_rating(owner, need_id, {"stars": 5, "tags": ["patient", "punctual", "patient"],
                                                    "comment": "很" * 500})
    assert rating["stars"] == 5 and rating["tags"] == ["patient", "punctual"]
    assert rating["volunteer_id"] == volunteer_id and rating["site_id"] == site_tree["station"]
    submitted = tap.wait("rating_submitted", need_id)
    assert len(submitted) == 1 and submitted[0]["data"]["id"] == rating["id"]
    updates = tap.wait("score_updated", need_id, count=2)
    assert {(u["data"]["subject_type"], u["data"]["subject_id"]) for u in updates} == {
        ("volunteer", volunteer_id), ("site", site_tree["station"])}
    assert all(u["data"]["count"] == 1 and u["data"]["bayesian_mean"] == 4.167 for u in updates)

    score = ratings.score("volunteer", volunteer_id)
    assert (score["count"], score["mean"], score["bayesian_mean"]) == (1, 5.0, round((4.0 * 5 + 5) / 6, 3))
    assert score["distribution"] == {"1": 0, "2": 0, "3": 0, "4": 0, "5": 1}
    assert ratings.score("site", site_tree["station"])["count"] == 1

    with pytest.raises(Conflict):
        ratings.submit_rating(owner, need_id, {"stars": 1})

    # A need the collector registered for a resident who cannot: the collector may rate it.
    collector, helped = actor("collector", site_tree["station"]), actor("resident")
    collected = complete(uri, site_tree["station"], owner_id=helped["id"], collector_id=collector["id"],
                         volunteer_id=volunteer_id)["need_id"]
    wait_rateable(ratings, collected)
    assert ratings.submit_rating(collector, collected, {"stars": 4})["stars"] == 4
    with pytest.raises(Conflict):
        ratings.submit_rating(helped, collected, {"stars": 4})

    score = ratings.score("volunteer", volunteer_id)
    assert (score["count"], score["mean"], score["bayesian_mean"]) == (2, 4.5, round((4.0 * 5 + 9) / 7, 3))
    assert score["distribution"] == {"1": 0, "2": 0, "3": 0, "4": 1, "5": 1}
    assert ratings.score("site", site_tree["station"])["distribution"] == score["distribution"]
    unrated = ratings.score("volunteer", str(uuid.uuid4()))
    assert unrated["count"] == 0 and unrated["mean"] is None and unrated["bayesian_mean"] == 4.0
    assert ratings.list_ratings(owner, {"volunteer_id": volunteer_id})["total"] == 2
    assert ratings.list_ratings(owner, {"site_id": site_tree["institute"]})["total"] == 2
    assert ratings.list_ratings(owner, {"site_id": site_tree["other_institute"]})["total"] == 0
    tap.drain(0.3)
    assert tap.of("rating_flagged") == []


def at_once(infrastructure, calls):
    """Make each ``call(proxy)`` at the same moment, on RPC proxies of their own, and
    return what each returned or raised. The service's connection pool is warmed
    first so that no call waits for a new database connection."""
    config = {"AMQP_URI": infrastructure["LASTMILE_AMQP_URI"], "serializer": "json"}

    def attempt(call, proxy):
        try:
            return call(proxy)
        except Exception as exc:
            return exc

    with ExitStack() as stack:
        proxies = [stack.enter_context(ClusterRpcProxy(config, timeout=10)) for _ in calls]
        list(eventlet.GreenPool().starmap(lambda proxy: proxy.ratings.health(), [(p,) for p in proxies]))
        return list(eventlet.GreenPool().starmap(attempt, zip(calls, proxies)))


def test_first_ratings_of_a_volunteer_submitted_at_once_all_count(ratings, site_tree, infrastructure):
    uri = infrastructure["LASTMILE_AMQP_URI"]
    for round_ in range(4):  # the race is one of timing: run it a few times
        site_id, volunteer_id = f"{site_tree['institute']}.r{round_}", str(uuid.uuid4())
        owners = [actor("resident") for _ in range(5)]
        needs = [complete(uri, site_id, owner_id=o["id"], volunteer_id=volunteer_id)["need_id"] for o in owners]
        for need_id in needs:
            wait_rateable(ratings, need_id)

        def rate(i):
            return lambda proxy: proxy.ratings.submit_rating(owners[i], needs[i], {"stars": 1 + i})

        results = at_once(infrastructure, [rate(i) for i in range(len(owners))])
        assert all(isinstance(r, dict) for r in results), results
        for subject_type, subject_id in (("volunteer", volunteer_id), ("site", site_id)):
            score = ratings.score(subject_type, subject_id)
            assert (score["count"], score["sum"], score["mean"]) == (5, 15.0, 3.0), subject_type
            assert score["distribution"] == {str(s): 1 for s in range(1, 6)}
            assert score["bayesian_mean"] == round((4.0 * 5 + 15) / 10, 3)


def test_poor_rating_opens_a_follow_up_for_staff_of_the_branch(ratings, tap, site_tree, infrastructure):
    uri = infrastructure["LASTMILE_AMQP_URI"]
    low_owner, no_show_owner, fair_owner = actor("resident"), actor("resident"), actor("resident")
    low = complete(uri, site_tree["station"], owner_id=low_owner["id"])["need_id"]
    no_show = complete(uri, site_tree["station"], owner_id=no_show_owner["id"])["need_id"]
    fair = complete(uri, site_tree["station"], owner_id=fair_owner["id"])["need_id"]
    for need_id in (low, no_show, fair):
        wait_rateable(ratings, need_id)

    ratings.submit_rating(low_owner, low, {"stars": 2, "comment": "来晚了"})
    ratings.submit_rating(no_show_owner, no_show, {"stars": 4, "tags": ["no_show"]})
    ratings.submit_rating(fair_owner, fair, {"stars": 3, "tags": ["late"]})
    flagged = tap.wait("rating_flagged", count=2)
    assert {f["need_id"] for f in flagged} == {low, no_show}
    tap.drain(0.3)
    assert tap.of("rating_flagged", fair) == []

    for site in ("station", "institute", "district"):
        listed = ratings.list_follow_ups(actor("staff", site_tree[site]), {})
        assert {f["need_id"] for f in listed["items"]} == {low, no_show} and listed["total"] == 2, site
    for site in ("other_institute", "other_station"):
        assert ratings.list_follow_ups(actor("staff", site_tree[site]), {})["total"] == 0, site
    assert ratings.list_follow_ups(ADMIN, {})["total"] >= 2
    with pytest.raises(Forbidden):
        ratings.list_follow_ups(low_owner, {})

    follow_up = next(f for f in flagged if f["need_id"] == low)["data"]
    assert follow_up["status"] == "open" and follow_up["reason"].startswith("2 stars")
    staff = actor("staff", site_tree["institute"])
    with pytest.raises(InvalidInput) as caught:
        ratings.resolve_follow_up(staff, follow_up["id"], {})
    assert set(caught.value.details) == {"note"}
    with pytest.raises(InvalidInput):
        ratings.resolve_follow_up(staff, follow_up["id"], {"note": ""})
    with pytest.raises(NotFound):
        ratings.resolve_follow_up(actor("staff", site_tree["other_institute"]), follow_up["id"], {"note": "看看"})

    resolved = ratings.resolve_follow_up(staff, follow_up["id"], {"note": "已回访，志愿者致歉"})
    assert resolved["status"] == "resolved" and resolved["resolved_by"] == staff["id"] and resolved["resolved_at"]
    with pytest.raises(Conflict):
        ratings.resolve_follow_up(staff, follow_up["id"], {"note": "再次回访"})
    assert ratings.list_follow_ups(staff, {})["total"] == 1
    assert [f["id"] for f in ratings.list_follow_ups(staff, {"status": "resolved"})["items"]] == [follow_up["id"]]
    assert ratings.list_follow_ups(staff, {"status": "all"})["total"] == 2


def test_redelivered_service_completed_changes_nothing(ratings, tap, site_tree, infrastructure):
    uri = infrastructure["LASTMILE_AMQP_URI"]
    owner, volunteer_id = actor("resident"), str(uuid.uuid4())
    event = complete(uri, site_tree["station"], owner_id=owner["id"], volunteer_id=volunteer_id)
    need_id = event["need_id"]
    complete(uri, site_tree["station"], event=event)  # the broker delivers it again
    wait_rateable(ratings, need_id)

    ratings.submit_rating(owner, need_id, {"stars": 1, "tags": ["rude"]})
    complete(uri, site_tree["station"], event=event)  # and once more, after the rating
    # volunteers publishes the same fact again under a new event id
    complete(uri, site_tree["station"], owner_id=owner["id"], volunteer_id=volunteer_id, need_id=need_id)
    tap.drain(1.5)

    with pytest.raises(Conflict):
        ratings.submit_rating(owner, need_id, {"stars": 5})
    assert len(tap.of("rating_submitted", need_id)) == 1
    assert len(tap.of("score_updated", need_id)) == 2
    assert len(tap.of("rating_flagged", need_id)) == 1
    score = ratings.score("volunteer", volunteer_id)
    assert score["count"] == 1 and score["distribution"]["1"] == 1
    assert ratings.list_ratings(owner, {"volunteer_id": volunteer_id})["total"] == 1
    assert ratings.list_follow_ups(actor("staff", site_tree["station"]), {})["total"] == 1

    with Connection(uri) as conn:
        assert conn.channel().basic_get("lastmile.dead.ratings", no_ack=False) is None


def test_an_unresolved_follow_up_passes_to_the_institute_after_three_days(ratings, tap, site_tree, infrastructure):
    import sqlalchemy as sa

    from lastmile.db import database_url

    uri = infrastructure["LASTMILE_AMQP_URI"]
    owner, need_id = actor("resident"), str(uuid.uuid4())
    complete(uri, site_tree["station"], owner_id=owner["id"], need_id=need_id)
    wait_rateable(ratings, need_id)
    ratings.submit_rating(owner, need_id, {"stars": 1, "tags": ["rude"]})
    station_staff, institute_staff = actor("staff", site_tree["station"]), actor("staff", site_tree["institute"])
    assert ratings.list_follow_ups(station_staff, {})["total"] == 1

    assert ratings.escalate_overdue_follow_ups() == 0  # not overdue yet
    engine = sa.create_engine(database_url("ratings"))
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE follow_ups SET created_at = created_at - interval '73 hours' "
                             "WHERE need_id = :n"), {"n": need_id})
    engine.dispose()
    assert ratings.escalate_overdue_follow_ups() == 1
    assert ratings.escalate_overdue_follow_ups() == 0  # once

    [escalated] = ratings.list_follow_ups(institute_staff, {})["items"]
    assert escalated["responsible_site_id"] == site_tree["institute"] and escalated["escalated_at"]
    assert ratings.list_follow_ups(station_staff, {})["total"] == 0
    assert tap.wait("follow_up_escalated", need_id)[0]["data"]["responsible_site_id"] == site_tree["institute"]
    assert ratings.resolve_follow_up(institute_staff, escalated["id"], {"note": "已电话回访"})["status"] == "resolved"


def test_figures_match_a_scenario_whose_truth_is_known(ratings, site_tree, infrastructure):
    """Five needs at two stations, told to the reporting view by the events every
    service publishes, with known times."""
    from datetime import datetime, timedelta, timezone

    from lastmile.events import make_event

    uri = infrastructure["LASTMILE_AMQP_URI"]
    day = datetime(2026, 3, 10, 1, 0, tzinfo=timezone.utc)  # 09:00 in Haikou
    a, b = site_tree["station"], site_tree["far_station"]
    published = []

    def event(source, type_, need_id, data, minutes):
        published.append(publish_event(uri, source, type_, data, need_id=need_id, event=make_event(
            source, type_, data, need_id=need_id, occurred_at=day + timedelta(minutes=minutes))))

    plan = [  # station, category, approved, accepted after minutes, served, hours, stars
        (a, "health", True, 10, 3, 1.5, 5),
        (a, "health", True, 30, 1, 2.0, 3),
        (a, "culture", True, None, None, None, None),   # approved, never accepted (unfilled)
        (b, "health", True, 20, 6, 0.5, None),          # completed, not rated
        (b, "culture", False, None, None, None, None),  # still waiting for review
    ]
    for station, category, approved, accept_after, served, hours, stars in plan:
        need_id = str(uuid.uuid4())
        snapshot = {"site_id": station, "category": category, "need_id": need_id}
        event("needs", "need_submitted", need_id, snapshot, 0)
        if approved:
            event("needs", "need_status_changed", need_id, {**snapshot, "from": "submitted", "to": "dispatching"}, 5)
        if accept_after is not None:
            event("dispatch", "order_assigned", need_id,
                  {"need": snapshot, "minutes_to_accept": float(accept_after), "volunteer_id": "v"}, 5 + accept_after)
            # A reassignment later on: the first acceptance is the one that counts.
            event("dispatch", "order_assigned", need_id,
                  {"need": snapshot, "minutes_to_accept": 500.0, "volunteer_id": "w"}, 60)
            event("volunteers", "service_completed", need_id,
                  {**snapshot, "volunteer_id": "v", "beneficiaries_served": served, "owner_id": "o"}, 120)
            event("volunteers", "hours_credited", need_id,
                  {"entry_id": str(uuid.uuid4()), "hours": hours, "site_id": station, "category": category,
                   "service_date": "2026-03-10", "volunteer_id": "v"}, 120)
            if stars:
                wait_rateable_by(ratings, need_id, "o")
                ratings.submit_rating({"id": "o", "role": "resident", "site_id": None, "name": "o"}, need_id,
                                      {"stars": stars})

    staff = actor("staff", site_tree["district"])

    def settled():
        figures = ratings.stats(staff, {"from": "2026-03-10", "to": "2026-03-10"})
        # Each event type travels on a queue of its own: wait until every one has been told.
        told = (figures["volunteer_hours"], figures["needs_submitted"], figures["needs_completed"], figures["ratings"],
                figures["fill_rate"])
        return figures if told == (4.0, 5, 3, 2, 0.75) else None

    figures = wait_for(settled, timeout=20, message="the reporting view to catch up")
    assert figures["needs_completed"] == figures["services_held"] == 3
    assert figures["people_served"] == 10
    assert figures["average_rating"] == 4.0 and figures["ratings"] == 2
    assert figures["ratings_by_stars"] == {"1": 0, "2": 0, "3": 1, "4": 0, "5": 1}
    [(day_of_service, that_day)] = figures["by_day"].items()  # 09:00 in Haikou, served the same day
    assert day_of_service == "2026-03-10"
    assert that_day == {k: v for k, v in figures.items() if not k.startswith(("by_", "site_id", "from", "to"))}
    assert figures["fill_rate"] == 0.75  # 3 accepted of 4 approved
    assert figures["median_minutes_to_acceptance"] == 20.0
    assert figures["by_category"]["health"]["needs_submitted"] == 3
    assert figures["by_category"]["culture"]["fill_rate"] == 0.0
    institute, street = site_tree["institute"], site_tree["other_institute"]
    assert figures["by_site"][institute]["volunteer_hours"] == 3.5
    assert figures["by_site"][street]["people_served"] == 6
    assert ratings.stats(staff, {"from": "2026-03-11"})["needs_submitted"] == 0
    with pytest.raises(Forbidden):
        ratings.stats(actor("staff", site_tree["institute"]), {"site_id": site_tree["district"]})
    with pytest.raises(InvalidInput):
        ratings.stats(staff, {"from": "2026-03-11", "to": "2026-03-10"})


def wait_rateable_by(ratings, need_id, owner_id):
    def known():
        try:
            ratings.submit_rating(actor("resident"), need_id, {"stars": 5})
        except Conflict:
            return False
        except Forbidden:
            return True

    wait_for(known, timeout=10, message="the service to be rateable")


def test_a_poor_rating_moves_a_volunteer_down_the_next_dispatch_ranking(run_services, rpc, tap, site_tree,
                                                                        infrastructure):
    """Twin stations with twin volunteers: only the rated one changes its order."""
    import sqlalchemy as sa

    from lastmile.db import database_url
    from services.dispatch.service import DispatchService

    run_services(RatingsService, DispatchService)
    uri = infrastructure["LASTMILE_AMQP_URI"]
    lat, lon, km = 19.78, 110.49, 1 / 111.0
    twins = {}
    for station in (site_tree["station"], site_tree["other_station"]):
        for name, distance in (("near", 0.1), ("far", 0.3)):
            data = {"volunteer_id": str(uuid.uuid4()), "user_id": str(uuid.uuid4()), "name": name,
                    "skills": ["health"], "site_id": station, "lat": lat + distance * km, "lon": lon,
                    "availability": None, "status": "active", "revision": 1}
            publish_event(uri, "volunteers", "volunteer_registered", data)
            twins[(station, name)] = data["volunteer_id"]
    engine = sa.create_engine(database_url("dispatch"))

    def candidate(volunteer_id):
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT rating_count FROM candidates WHERE volunteer_id = :v"),
                                {"v": volunteer_id}).first()

    wait_for(lambda: all(candidate(v) is not None for v in twins.values()), 10, message="the projection")
    rated = twins[(site_tree["station"], "near")]
    owner, earlier_need = actor("resident"), str(uuid.uuid4())
    complete(uri, site_tree["station"], owner_id=owner["id"], volunteer_id=rated, need_id=earlier_need)
    wait_rateable(ratings := rpc.ratings, earlier_need)
    ratings.submit_rating(owner, earlier_need, {"stars": 1})
    wait_for(lambda: candidate(rated)[0] == 1, 10, message="dispatch to hear of the rating")
    engine.dispose()

    first_offers = {}
    for station in (site_tree["station"], site_tree["other_station"]):
        need_id = str(uuid.uuid4())
        publish_event(uri, "needs", "need_approved", {
            "need_id": need_id, "category": "health", "site_id": station, "urgency": "normal", "title": "量血压",
            "window_start": None, "window_end": None, "lat": lat, "lon": lon, "beneficiaries": 1,
            "owner_id": owner["id"], "collector_id": None, "project_id": None}, need_id=need_id)
        first_offers[station] = tap.wait("offer_made", need_id)[0]["data"]["volunteer_id"]
    assert first_offers[site_tree["other_station"]] == twins[(site_tree["other_station"], "near")]  # the control
    assert first_offers[site_tree["station"]] == twins[(site_tree["station"], "far")]
