"""services/dispatch/matching.py on a real database: the fast search gives exactly
what ``domain.rank`` gives over every eligible candidate (same volunteers, order,
totals and parts), at each escalation level, with availability windows, active
assignments, suspensions, earlier offers, volunteers without coordinates, needs
without coordinates, and ties; and the copy of each candidate that the search
reads is kept current by ordinary ORM writes."""
import random
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from lastmile.db import database_url, ensure_database, migrate, utcnow
from services.dispatch import domain, matching
from services.dispatch.models import Candidate, CandidateSkill
from services.dispatch.service import MIGRATIONS

CATEGORIES = ("theory", "education", "culture", "science", "health", "fitness")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SLOTS = (["07:00", "12:00"], ["08:00", "11:00"], ["13:00", "18:00"], ["14:00", "17:30"], ["18:30", "22:00"])
KM = 0.009  # degrees of latitude


# --------------------------------------------------------------------------- a constructed projection


class World:
    """Two districts of three institutes of four stations, each station a place on
    the map; volunteers around their station (a few at an institute or district)."""

    def __init__(self, seed, size, spread=1.5):
        self.rng = rng = random.Random(seed)
        self.spread = spread  # km around a station
        self.prefix = "m" + uuid.uuid4().hex[:6]
        self.stations, self.centres = [], {}
        for d in range(2):
            district = f"{self.prefix}{d}"
            for i in range(3):
                institute = f"{district}.inst{i}"
                for s in range(4):
                    station = f"{institute}.st{s}"
                    self.stations.append(station)
                    self.centres[station] = (19.9 + d * 0.3 + i * 0.06 + rng.uniform(-0.02, 0.02),
                                             110.2 + d * 0.3 + s * 0.04 + rng.uniform(-0.02, 0.02))
        self.candidates = [self._volunteer(n) for n in range(size)]
        # Ties: twins alike in everything but their id, at one spot.
        twin_station = self.stations[0]
        lat, lon = self.centres[twin_station]
        for n in range(40):
            self.candidates.append(self._base(f"twin-{self.prefix}-{n:03d}", twin_station, lat + 0.001, lon + 0.001,
                                              ("health", "culture"), rating=(3, 14.0)))
        # A crowd right at one station's centre that no one can take: busy or away.
        crowd_station = self.stations[5]
        lat, lon = self.centres[crowd_station]
        for n in range(60):
            volunteer = self._base(f"crowd-{self.prefix}-{n:03d}", crowd_station, lat, lon, ("health",), rating=(60, 300.0))
            volunteer["accepted"] = 10
            if n % 2:
                volunteer["active_assignments"] = 2
            else:
                volunteer["availability"] = {"sun": [["03:00", "04:00"]]}
            self.candidates.append(volunteer)

    def _base(self, vid, site, lat, lon, skills, rating=(0, 0.0)):
        return {
            "volunteer_id": vid, "user_id": "u-" + vid, "name": "志愿者", "site_id": site, "lat": lat, "lon": lon,
            "active": True, "availability": None, "active_assignments": 0, "rating_count": rating[0],
            "rating_sum": rating[1], "recent_hours": 0.0, "recent_offers": 0, "accepted": 0, "declined": 0,
            "revision": 1, "updated_at": utcnow(), "skills": skills,
        }

    def _volunteer(self, n):
        rng = self.rng
        station = rng.choice(self.stations)
        site = station
        if rng.random() < 0.06:
            site = station.rpartition(".")[0] if rng.random() < 0.7 else station.split(".")[0]
        lat, lon = self.centres[station]
        lat, lon = lat + rng.gauss(0, self.spread) * KM, lon + rng.gauss(0, self.spread) * KM
        if rng.random() < 0.1:
            lat = lon = None
        skills = tuple(rng.sample(CATEGORIES, rng.randint(1, 3)))
        if rng.random() < 0.5:
            skills = tuple(set(skills) | {"health"})
        count = rng.choice((0, 0, 0, 1, 2, 5, 12, 40))
        volunteer = self._base(f"v-{n:05d}-{uuid.uuid4().hex[:6]}", site, lat, lon, skills,
                               rating=(count, round(count * rng.uniform(2.5, 5.0), 1)))
        volunteer.update(
            active=rng.random() > 0.05,
            active_assignments=rng.choice((0, 0, 0, 0, 1, 1, 2, 3)),
            recent_hours=rng.choice((0.0, 0.0, 2.5, 8.0, 30.0)),
            recent_offers=rng.choice((0, 0, 1, 3, 9)),
            accepted=rng.choice((0, 0, 1, 4)),
            declined=rng.choice((0, 0, 1, 3)),
        )
        if rng.random() < 0.5:
            volunteer["availability"] = {day: [rng.choice(SLOTS)] for day in rng.sample(DAYS, rng.randint(1, 5))}
        return volunteer

    def need(self, rng):
        station = rng.choice(self.stations)
        site = station if rng.random() < 0.9 else station.rpartition(".")[0]
        lat, lon = self.centres[station]
        lat, lon = lat + rng.gauss(0, 1) * KM, lon + rng.gauss(0, 1) * KM
        if rng.random() < 0.2:
            lat = lon = None
        start = end = None
        if rng.random() < 0.6:
            # 2026-03-09 is a Monday; local time is UTC+8.
            start = datetime(2026, 3, 9, tzinfo=timezone.utc) + timedelta(days=rng.randrange(7),
                                                                          hours=rng.randrange(-8, 14))
            end = start + timedelta(hours=rng.choice((1, 2, 3)))
        category = "health" if rng.random() < 0.6 else rng.choice(CATEGORIES)
        return domain.NeedFacts(category=category, site_id=site, lat=lat, lon=lon, window_start=start,
                                window_end=end)

    def facts(self):
        return [domain.Candidate(
            volunteer_id=c["volunteer_id"], user_id=c["user_id"], site_id=c["site_id"], skills=tuple(c["skills"]),
            lat=c["lat"], lon=c["lon"], active=c["active"], availability=c["availability"],
            active_assignments=c["active_assignments"], rating_count=c["rating_count"], rating_sum=c["rating_sum"],
            recent_hours=c["recent_hours"], recent_offers=c["recent_offers"], accepted=c["accepted"],
            declined=c["declined"],
        ) for c in self.candidates]

    def load(self, engine):
        """Bulk insert, the copy computed by ``matching.match_values`` as the ORM
        events would."""
        rows = [{k: v for k, v in c.items() if k != "skills"} for c in self.candidates]
        skills = []
        for c in self.candidates:
            values = matching.match_values(_Row(c))
            skills += [{"volunteer_id": c["volunteer_id"], "category": s, **values} for s in c["skills"]]
        with engine.begin() as conn:
            for table, batch in ((Candidate.__table__, rows), (CandidateSkill.__table__, skills)):
                for i in range(0, len(batch), 500):
                    conn.execute(sa.insert(table).values(batch[i:i + 500]))


class _Row:
    def __init__(self, values):
        self.__dict__.update(values)


def reference(facts, need, scope, offered, policy):
    """domain.rank over every eligible candidate: what dispatch did before matching."""
    eligible = [c for c in facts if domain.ineligibility(c, need, scope, offered, policy) is None]
    return [(c.volunteer_id, total, parts) for c, total, parts in domain.rank(eligible, need, policy)]


def fast(engine, need, scope, offered, policy, limit):
    with Session(engine) as session:
        return [(row.volunteer_id, total, parts)
                for row, total, parts in matching.ranked(session, need, scope, offered, policy, limit)]


def compare(world, engine, policy, needs, limits=(1, 3, 10), offered_share=0.0):
    facts = world.facts()
    rng = random.Random(7)
    checked = 0
    for need in needs:
        pool = [c.volunteer_id for c in facts if need.category in c.skills]
        for level in domain.LEVELS:
            scope = domain.level_site(need.site_id, level)
            offered = set(rng.sample(pool, int(len(pool) * offered_share))) if offered_share else set()
            expected = reference(facts, need, scope, offered, policy)
            for limit in limits:
                got = fast(engine, need, scope, offered, policy, limit)
                assert got == expected[:limit], (need, level, limit)
                checked += 1
    return checked


# --------------------------------------------------------------------------- databases


@pytest.fixture(scope="module")
def pg_world(infrastructure):
    url = database_url("matching")
    ensure_database(url)
    engine = sa.create_engine(url, poolclass=NullPool)
    migrate(engine, MIGRATIONS)
    world = World(seed=42, size=3000)
    world.load(engine)
    yield world, engine
    engine.dispose()


@pytest.fixture(scope="module")
def sqlite_world(tmp_path_factory):
    engine = sa.create_engine(f"sqlite:///{tmp_path_factory.mktemp('matching')}/dispatch.db")
    migrate(engine, MIGRATIONS)
    world = World(seed=5, size=1200)
    world.load(engine)
    yield world, engine
    engine.dispose()


# --------------------------------------------------------------------------- the search is exact


def test_the_fast_path_ranks_exactly_as_the_domain_does_over_every_eligible_candidate(pg_world):
    world, engine = pg_world
    rng = random.Random(1)
    needs = [world.need(rng) for _ in range(60)]
    assert compare(world, engine, domain.Policy(), needs) == 60 * 3 * 3


def test_every_way_through_the_search_is_taken_and_exact(pg_world, monkeypatch):
    """Dense and sparse: a sparse world (few volunteers, far apart) sends the search
    through its wider probes, the reading of what lies beyond them by grid cells or by
    static_score, and the whole scope; every answer is still the domain's."""
    taken = {}

    def count(name, method):
        def wrapper(self, *args, **kwargs):
            result = method(self, *args, **kwargs)
            key = name
            if name == "_probe":
                key = f"probe {self.need.lat is not None and args[0] is not None and len(args[0])}"
            elif name == "_beyond":
                key = "beyond " + ("nothing" if not result else "grid" if any(
                    "cell IN" in branch for branch in result) else "by static")
            taken[key] = taken.get(key, 0) + 1
            return result
        monkeypatch.setattr(matching._Search, name, wrapper)

    for name in ("_probe", "_beyond", "_everything"):
        count(name, getattr(matching._Search, name))
    world, engine = pg_world
    rng = random.Random(11)
    compare(world, engine, domain.Policy(), [world.need(rng) for _ in range(30)], limits=(3,))
    sparse = World(seed=12, size=150, spread=12.0)
    sparse.load(engine)
    compare(sparse, engine, domain.Policy(), [sparse.need(rng) for _ in range(40)], limits=(1, 3, 10))
    assert taken.get("beyond nothing") and taken.get("beyond grid") and taken.get("beyond by static"), taken
    assert taken.get("_everything") and len([k for k in taken if k.startswith("probe")]) >= 3, taken


def test_earlier_offers_are_left_out_and_the_next_best_come_up(pg_world):
    world, engine = pg_world
    rng = random.Random(2)
    needs = [world.need(rng) for _ in range(25)]
    compare(world, engine, domain.Policy(), needs, limits=(3,), offered_share=0.2)


def test_values_that_cannot_be_written_into_sql_go_as_parameters(pg_world):
    # Plain values (ids, categories, numbers) are written into the statements; any other
    # value sends every value as a parameter instead, with the same answers.
    world, engine = pg_world
    rng = random.Random(8)
    facts = world.facts()
    for need in [world.need(rng) for _ in range(12)]:
        pool = sorted(c.volunteer_id for c in facts if need.category in c.skills)
        offered = set(rng.sample(pool, 5)) | {"o'hara:1 --x", "50%"}
        for level in domain.LEVELS:
            scope = domain.level_site(need.site_id, level)
            expected = reference(facts, need, scope, offered, domain.Policy())
            assert fast(engine, need, scope, offered, domain.Policy(), 3) == expected[:3]


def test_ties_are_broken_by_volunteer_id_as_the_domain_does(pg_world):
    world, engine = pg_world
    lat, lon = world.centres[world.stations[0]]
    need = domain.NeedFacts(category="culture", site_id=world.stations[0], lat=lat, lon=lon)
    expected = reference(world.facts(), need, world.stations[0], set(), domain.Policy())
    twins = [vid for vid, _, _ in expected if vid.startswith("twin-")]
    assert twins == sorted(twins) and len(twins) == 40
    for limit in (5, 30, 45):
        assert fast(engine, need, world.stations[0], set(), domain.Policy(), limit) == expected[:limit]


def test_a_crowd_of_busy_or_unavailable_volunteers_at_the_need_does_not_starve_the_result(pg_world):
    world, engine = pg_world
    station = world.stations[5]
    lat, lon = world.centres[station]
    monday_nine = datetime(2026, 3, 9, 1, tzinfo=timezone.utc)
    need = domain.NeedFacts(category="health", site_id=station, lat=lat, lon=lon, window_start=monday_nine,
                            window_end=monday_nine + timedelta(hours=2))
    facts = world.facts()
    for level in domain.LEVELS:
        scope = domain.level_site(station, level)
        expected = reference(facts, need, scope, set(), domain.Policy())
        got = fast(engine, need, scope, set(), domain.Policy(), 3)
        assert got == expected[:3]
        assert not any(vid.startswith("crowd-") for vid, _, _ in got)
    # Without a window the crowd's availability does not matter: half of it comes first.
    need = domain.NeedFacts(category="health", site_id=station, lat=lat, lon=lon)
    got = fast(engine, need, station, set(), domain.Policy(), 10)
    assert got == reference(facts, need, station, set(), domain.Policy())[:10]
    assert all(vid.startswith("crowd-") for vid, _, _ in got)


def test_other_distance_weights_keep_the_fast_path_and_other_static_weights_fall_back(pg_world):
    world, engine = pg_world
    rng = random.Random(3)
    needs = [world.need(rng) for _ in range(10)]
    near_first = domain.Policy(weights=domain.Weights(distance=0.9, rating=0.3, fairness=0.2, acceptance=0.1))
    compare(world, engine, near_first, needs, limits=(1, 3))
    rating_first = domain.Policy(weights=domain.Weights(distance=0.1, rating=0.7, fairness=0.1, acceptance=0.1),
                                 max_active_assignments=3)
    compare(world, engine, rating_first, needs, limits=(3,))


def test_the_whole_ranking_when_no_limit_is_given(pg_world):
    world, engine = pg_world
    rng = random.Random(4)
    need = world.need(rng)
    scope = domain.level_site(need.site_id, "institute")
    assert fast(engine, need, scope, set(), domain.Policy(), None) == reference(
        world.facts(), need, scope, set(), domain.Policy())


def test_across_the_antimeridian_where_no_grid_box_is_drawn(pg_world):
    world, engine = pg_world
    rng = random.Random(13)
    place = World(seed=14, size=0)
    place.centres = {station: (rng.uniform(-0.05, 0.05), 179.99) for station in place.stations}
    place.candidates = []
    for n in range(200):
        volunteer = place._volunteer(n)
        if volunteer["lat"] is not None:
            volunteer["lon"] = (volunteer["lon"] + 180) % 360 - 180  # some fall east of 180
        place.candidates.append(volunteer)
    place.load(engine)
    assert any(c["lon"] is not None and c["lon"] < 0 for c in place.candidates)
    compare(place, engine, domain.Policy(), [place.need(rng) for _ in range(8)], limits=(3,))


def test_on_sqlite_too(sqlite_world):
    world, engine = sqlite_world
    rng = random.Random(6)
    needs = [world.need(rng) for _ in range(20)]
    compare(world, engine, domain.Policy(), needs, limits=(1, 3))


# --------------------------------------------------------------------------- the copy stays current


def copies(engine, volunteer_id):
    with engine.connect() as conn:
        return conn.execute(
            sa.select(CandidateSkill.__table__).where(CandidateSkill.volunteer_id == volunteer_id)
            .order_by(CandidateSkill.category)
        ).mappings().all()


def assert_current(engine, volunteer_id, categories):
    with Session(engine) as session:
        candidate = session.get(Candidate, volunteer_id)
        expected = matching.match_values(candidate)
    rows = copies(engine, volunteer_id)
    assert [row["category"] for row in rows] == sorted(categories)
    for row in rows:
        assert {name: row[name] for name in matching.MATCH_COLUMNS} == expected


def test_every_write_of_a_candidate_through_the_orm_refreshes_its_skill_rows(pg_world):
    _, engine = pg_world
    vid = "orm-" + uuid.uuid4().hex[:8]
    with Session(engine) as session, session.begin():  # registered (as _project_volunteer does)
        session.add(Candidate(volunteer_id=vid, user_id="u", name="新", site_id="qiongshan.hongqi.benli",
                              lat=20.0, lon=110.35, active=True, availability=None, active_assignments=0,
                              rating_count=0, rating_sum=0.0, recent_hours=0.0, recent_offers=0, accepted=0,
                              declined=0, revision=1, updated_at=utcnow()))
        session.flush()
        for category in ("health", "theory"):
            session.add(CandidateSkill(volunteer_id=vid, category=category))
    assert_current(engine, vid, ("health", "theory"))
    before = copies(engine, vid)[0]["static_score"]

    steps = [
        lambda c: setattr(c, "recent_offers", c.recent_offers + 1),  # _make_offer
        lambda c: (setattr(c, "active_assignments", c.active_assignments + 1),
                   setattr(c, "accepted", c.accepted + 1)),  # accept_offer
        lambda c: setattr(c, "declined", c.declined + 1),  # decline_offer
        lambda c: (setattr(c, "active_assignments", 0), setattr(c, "recent_hours", c.recent_hours + 2.5)),
        lambda c: (setattr(c, "rating_count", 3), setattr(c, "rating_sum", 14.0)),  # score_updated
        lambda c: (setattr(c, "site_id", "qiongshan.lingshan"), setattr(c, "lat", None)),  # profile
        lambda c: setattr(c, "active", False),  # suspended
        lambda c: setattr(c, "declined", Candidate.declined + 1),  # computed by the database: read back
        lambda c: setattr(c, "name", "改名"),  # nothing the copies carry
    ]
    for step in steps:
        with Session(engine) as session, session.begin():
            step(session.get(Candidate, vid))
        assert_current(engine, vid, ("health", "theory"))
    assert copies(engine, vid)[0]["static_score"] != before

    with Session(engine) as session, session.begin():  # new skills, as _project_volunteer re-adds them
        candidate = session.get(Candidate, vid)
        candidate.active, candidate.lat, candidate.lon = True, 19.5, 109.9
        session.flush()
        session.execute(sa.delete(CandidateSkill).where(CandidateSkill.volunteer_id == vid))
        session.add(CandidateSkill(volunteer_id=vid, category="culture"))
    assert_current(engine, vid, ("culture",))


def test_sync_all_repairs_every_copy(pg_world):
    world, engine = pg_world
    victim = world.candidates[0]["volunteer_id"]
    with engine.begin() as conn:
        conn.execute(sa.update(CandidateSkill.__table__).where(CandidateSkill.volunteer_id == victim)
                     .values(static_score=None, cell=None))
        matching.sync_all(conn)
    assert_current(engine, victim, world.candidates[0]["skills"])


# --------------------------------------------------------------------------- pieces


def test_cell_ranges_cover_every_point_within_the_radius():
    rng = random.Random(9)
    for _ in range(300):
        lat, lon = rng.uniform(-60, 60), rng.uniform(-170, 170)
        km = rng.choice((0.3, 2.0, 8.0, 40.0))
        ranges = matching.cell_ranges(lat, lon, km)
        assert ranges is not None
        for _ in range(30):
            plat = lat + rng.uniform(-1, 1) * km / 100
            plon = lon + rng.uniform(-1, 1) * km / 50
            if domain.haversine_km(lat, lon, plat, plon) <= km:
                cell = matching.cell_of(plat, plon)
                assert any(lo <= cell <= hi for lo, hi in ranges)
    assert matching.cell_ranges(89.99, 0.0, 5.0) is None  # over the pole
    assert matching.cell_ranges(0.0, 179.99, 5.0) is None  # over the antimeridian
    assert matching.cell_of(None, 110.0) is None and matching.cell_of(20.0, 200.0) == matching.NO_CELL


def test_static_score_is_the_need_free_part_of_the_domain_score():
    candidate = domain.Candidate(volunteer_id="v", user_id=None, site_id="a.b.c", skills=("health",), lat=20.0,
                                 lon=110.0, rating_count=7, rating_sum=30.0, recent_hours=12.0, recent_offers=4,
                                 accepted=3, declined=1)
    need = domain.NeedFacts(category="health", site_id="a.b.c", lat=20.01, lon=110.0)
    total, parts = domain.score(candidate, need, domain.Policy())
    static = matching.static_score(7, 30.0, 12.0, 4, 3, 1)
    assert abs(total - (parts["distance"] + static)) < 1e-9
