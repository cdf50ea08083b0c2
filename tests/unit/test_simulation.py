"""bench/simulate.py: the simulated day keeps dispatch's invariants, whatever the dispatcher,
and its figures are computed right."""
import json
from collections import Counter

import pytest

from bench import simulate
from services.dispatch import domain

SEED, VOLUNTEERS, NEEDS = 7, 150, 60


@pytest.fixture(scope="module")
def world():
    return simulate.build_world(SEED, VOLUNTEERS, NEEDS)


@pytest.fixture(scope="module")
def runs(world):
    return {d.name: simulate.simulate(world, d) for d in simulate.dispatchers()}


@pytest.fixture(scope="module")
def guarded_runs(world):
    return {d.name: simulate.simulate(world, d, guard_accept=True) for d in simulate.dispatchers()}


NAMES = ("lastmile", "qiangdan", "nearest")

# --------------------------------------------------------------------------- the world


def test_the_world_is_qiongshan(world):
    station_ids = {s.id for s in world.stations}
    assert {f"qiongshan.{sid}" for sid, *_ in simulate.demo.STATIONS} <= station_ids
    institutes = {simulate.sites.parent(s) for s in station_ids}
    assert institutes == {f"qiongshan.{code}" for code, *_ in simulate.demo.INSTITUTES}
    assert len(world.volunteers) == VOLUNTEERS and len(world.needs) == NEEDS
    for volunteer in world.volunteers:
        assert 1 <= len(volunteer.candidate.skills) <= 3
        assert set(volunteer.candidate.skills) <= set(simulate.CATEGORIES)
        assert volunteer.candidate.site_id in station_ids
    for need in world.needs:
        assert need.site_id in station_ids and need.category in simulate.CATEGORIES
        assert need.window_start is None or need.approved_at < need.window_start < need.window_end


# --------------------------------------------------------------------------- invariants


@pytest.mark.parametrize("name", NAMES)
def test_each_need_ends_filled_or_unfilled(runs, world, name):
    sim = runs[name]
    assert set(sim.orders) == {n.id for n in world.needs}
    for order in sim.orders.values():
        # Every assigned service has been completed by the end of the simulated day.
        assert order.status in (domain.COMPLETED, domain.UNFILLED)
        assert (order.status == domain.COMPLETED) == (order.assigned_at is not None)
        if order.status == domain.UNFILLED:  # asked everyone up to the district, or ran out of time
            start = order.need.window_start
            assert order.level == "district" or (start is not None and (
                not order.offers or order.offers[-1].deadline >= start))
    assert not [o for o in sim.offers if o.status == domain.PENDING]


@pytest.mark.parametrize("name", NAMES)
def test_at_most_one_acceptance_per_need(runs, name):
    sim = runs[name]
    accepted = Counter(o.order.need.id for o in sim.offers if o.status == domain.ACCEPTED)
    assert max(accepted.values()) == 1
    for order in sim.orders.values():
        winners = [o for o in order.offers if o.status == domain.ACCEPTED]
        assert len(winners) == (1 if order.assigned_at else 0)
        if winners:
            assert winners[0].volunteer_id == order.volunteer_id
    assert Counter(need for _, kind, need, _ in sim.log if kind == "offer_accepted") == accepted


@pytest.mark.parametrize("name", NAMES)
def test_offers_go_only_to_volunteers_below_max_active_assignments(runs, name):
    sim = runs[name]
    cap = sim.policy.max_active_assignments
    assert all(o.active_at_offer < cap for o in sim.offers)
    assert all(c.active_assignments == 0 for c in sim.candidates.values())  # all released by the day's end


@pytest.mark.parametrize("name", NAMES)
def test_no_volunteer_exceeds_max_active_assignments_when_acceptance_is_guarded(guarded_runs, name):
    sim = guarded_runs[name]
    assert max(sim.peak_active.values()) <= sim.policy.max_active_assignments
    assert sim.over_cap == 0


@pytest.mark.parametrize("name", NAMES)
def test_offers_follow_eligibility_levels_and_the_offer_budget(runs, world, name):
    sim = runs[name]
    for order in sim.orders.values():
        need = order.need
        per_level = Counter(o.level for o in order.offers)
        assert per_level["station"] <= sim.policy.offers_per_level
        assert per_level["institute"] <= sim.policy.offers_per_level
        assert all(o.created_at < need.window_start for o in order.offers if need.window_start)
        assert order.escalations <= 2
        assert len({o.volunteer_id for o in order.offers}) == len(order.offers)  # never the same one twice
        for offer in order.offers:
            candidate = sim.candidates[offer.volunteer_id]
            assert need.category in candidate.skills
            assert simulate.sites.is_inside(candidate.site_id, domain.level_site(need.site_id, offer.level))
            assert domain.available(candidate.availability, need.window_start, need.window_end)
            assert offer.deadline - offer.created_at == sim.policy.strategy(need.urgency, need.category)[2]


def test_lastmile_offers_one_at_a_time_for_normal_needs_and_three_at_once_for_urgent_ones(runs):
    """At the district, the last call, normal needs too are offered three at a time."""
    sim = runs["lastmile"]
    for order in sim.orders.values():
        at_once = Counter((o.created_at, o.level) for o in order.offers)
        for (_, level), count in at_once.items():
            assert count <= (1 if order.need.urgency == "normal" and level != "district" else 3)


# A constructed day: one station, volunteers at known distances, needs at known times.
STATION = "qiongshan.hongqi.benli"
LAT, LON = 19.785, 110.495


def _volunteer(index, km_north, accept_p=0.0, skills=("health",), site_id=STATION):
    lat = LAT + km_north / simulate.KM_PER_DEG_LAT
    candidate = domain.Candidate(volunteer_id=f"v{index}", user_id=f"u{index}", site_id=site_id, skills=skills,
                                 lat=lat, lon=LON, rating_count=index * 3, rating_sum=index * 3 * (5 - index % 3))
    return simulate.Volunteer(id=f"v{index}", station_id=site_id, profile="flexible", true_availability=None,
                              accept_p=accept_p, responsiveness=1.0, median_minutes=5.0, candidate=candidate)


def _need(index, hour=9.0, urgency="normal", start=12.0):
    day = simulate.DEFAULT_DATE
    return simulate.Need(id=f"n{index}", category="health", site_id=STATION, urgency=urgency, lat=LAT, lon=LON,
                         true_lat=LAT, true_lon=LON, approved_at=simulate.local(day, hour),
                         window_start=simulate.local(day, start + index * 2),
                         window_end=simulate.local(day, start + index * 2 + 1),
                         duration=simulate.timedelta(hours=1))


def _world(volunteers, needs):
    return simulate.World(seed=1, day=simulate.DEFAULT_DATE, stations=simulate.build_stations(),
                          volunteers=volunteers, needs=needs)


def test_nearest_first_asks_by_distance_then_escalates_to_unfilled():
    # Everyone declines: the order walks the station's three, finds nobody wider, gives up.
    world = _world([_volunteer(1, 3.0), _volunteer(2, 1.0), _volunteer(3, 2.0), _volunteer(4, 0.5)], [_need(0)])
    nearest = next(d for d in simulate.dispatchers() if d.name == "nearest")
    sim = simulate.simulate(world, nearest)
    order = sim.orders["n0"]
    assert [o.volunteer_id for o in order.offers] == ["v4", "v2", "v3", "v1"]
    assert [o.level for o in order.offers] == ["station"] * 3 + ["institute"]
    assert order.status == domain.UNFILLED and order.escalations == 2
    kinds = [kind for _, kind, _, _ in sim.log]
    assert kinds.count("order_escalated") == 2 and kinds[-1] == "order_unfilled"


def test_lastmile_offers_in_the_order_of_domain_rank():
    world = _world([_volunteer(i, km) for i, km in enumerate((3.0, 1.0, 2.0, 0.5, 4.0), start=1)], [_need(0)])
    sim = simulate.simulate(world, simulate.dispatchers()[0])
    expected = [c.volunteer_id for c, _, _ in domain.rank([v.candidate for v in world.volunteers],
                                                           world.needs[0].facts(), domain.Policy())]
    assert [o.volunteer_id for o in sim.orders["n0"].offers][:3] == expected[:3]


def test_urgent_lastmile_broadcasts_to_three_and_the_first_acceptance_wins():
    world = _world([_volunteer(i, 0.2 * i, accept_p=1.0) for i in range(1, 6)], [_need(0, urgency="urgent")])
    sim = simulate.simulate(world, simulate.dispatchers()[0])
    order = sim.orders["n0"]
    assert len(order.offers) == 3 and len({o.created_at for o in order.offers}) == 1
    statuses = Counter(o.status for o in order.offers)
    assert statuses[domain.ACCEPTED] == 1 and statuses[domain.PENDING] == 0
    assert order.status == domain.COMPLETED


def _over_committed(guard_accept):
    # One volunteer, three needs approved at once: the three offers are all made before any answer.
    world = _world([_volunteer(1, 0.1, accept_p=1.0)], [_need(i) for i in range(3)])
    sim = simulate.Simulation(world, simulate.dispatchers()[0], guard_accept=guard_accept)
    sim.acceptance_chance = lambda volunteer, need: 1.0
    return sim.run()


def test_acceptances_past_the_cap_are_counted_and_refused_only_when_guarded():
    # service.py checks the cap when it offers, not when the offer is accepted.
    loose = _over_committed(guard_accept=False)
    assert all(o.active_at_offer == 0 for o in loose.offers)
    assert loose.peak_active["v1"] == 3 and loose.over_cap == 1
    guarded = _over_committed(guard_accept=True)
    assert guarded.peak_active["v1"] == 2 and guarded.over_cap == 0
    assert sum(1 for o in guarded.orders.values() if o.assigned_at) == 2


def test_qiangdan_makes_at_least_as_many_offers_as_lastmile(runs):
    assert len(runs["qiangdan"].offers) >= len(runs["lastmile"].offers)


def test_a_seed_gives_the_same_day_every_time(world):
    first = simulate.run(SEED, VOLUNTEERS, NEEDS)
    second = simulate.run(SEED, VOLUNTEERS, NEEDS)
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    again = simulate.simulate(simulate.build_world(SEED, VOLUNTEERS, NEEDS), simulate.dispatchers()[0])
    once = simulate.simulate(world, simulate.dispatchers()[0])
    assert again.log == once.log
    other = simulate.run(SEED + 1, VOLUNTEERS, NEEDS)
    assert other["results"] != first["results"]


# --------------------------------------------------------------------------- figures


@pytest.mark.parametrize("values, expected", [
    ([], 0.0),
    ([0, 0, 0], 0.0),
    ([5, 5, 5, 5], 0.0),
    ([0, 0, 0, 1], 0.75),
    ([1, 2, 3, 4, 5], 4 / 15),
    ([5, 1, 4, 2, 3], 4 / 15),
    ([1, 3], 0.25),
])
def test_gini_on_known_inputs(values, expected):
    assert simulate.gini(values) == pytest.approx(expected)


@pytest.mark.parametrize("values, q, expected", [
    ([], 50, None),
    ([7], 90, 7),
    ([1, 2, 3, 4], 50, 2.5),
    ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90, 9.1),
])
def test_percentile_interpolates_between_ranks(values, q, expected):
    assert simulate.percentile(values, q) == (None if expected is None else pytest.approx(expected))


def test_summary_counts_agree_with_the_run(runs):
    for name, sim in runs.items():
        summary = simulate.summarize(sim)
        assert summary["filled"] + summary["unfilled"] == summary["needs"] == NEEDS
        assert summary["offers"] == len(sim.offers) == sim.events["offer_made"]
        assert summary["escalations"] == sum(o.escalations for o in sim.orders.values())
        assert sum(summary["filled_at_level"].values()) == summary["filled"]
        assert 0.0 <= summary["gini_assignments"] < 1.0


def test_the_command_prints_the_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "simulation.json"
    assert simulate.main(["--seed", "3", "--volunteers", "60", "--needs", "20", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for label in ("Lastmile ranking", "抢单 broadcast-all", "nearest-first", "fill rate", "Gini"):
        assert label in printed
    report = json.loads(out.read_text(encoding="utf-8"))
    assert [r["dispatcher"] for r in report["results"]] == list(NAMES)
