"""The time to rank the candidates of one need, with 10^4, 10^5 and 10^6 volunteers
in dispatch's projection on PostgreSQL.

    .venv/bin/python -m bench.matching [--sizes 10000,100000,1000000] [--needs 300] [--seed 1]

It creates a scratch database on the server (``LASTMILE_BENCH_DATABASE_URL``, else
``LASTMILE_DATABASE_URL``, else postgresql://postgres@127.0.0.1:5432/), applies the
dispatch migrations, and loads synthetic volunteers with COPY, growing the same
projection from one size to the next. At each size it times
``services.dispatch.matching.ranked`` (the top 3, as for an urgent broadcast) for
random needs at each escalation level, and the ranking dispatch did before it
(every eligible candidate read and ranked in Python) for fewer needs at the sizes
where that takes reasonable time, checking on those that both give the same top 3.
It prints p50 and p99, writes ``bench/results/matching.json`` and plots time against
size, log-log, to ``bench/results/matching.svg``. The database is dropped at the end.

The province: 6 districts of 12 institutes (towns, streets) of 15 stations (villages,
communities) over Hainan (18.2-20.1 N, 108.6-111.0 E); districts spread over the
island, institutes around their district's centre, stations around their
institute's, volunteers around their station (a few registered at an institute or
district). Each volunteer has 1-3 of the 6 categories, 5% no coordinates, 4% are
suspended, 5% busy (2 assignments) and 10% hold one; 65% declare a weekly
availability. Ratings, recent hours, offers, acceptances and declines are spread as
in a platform that has run for a while (about half never rated). Needs are at a
random station, 90% with coordinates near it, 60% with a time window.
"""
import argparse
import csv
import io
import json
import math
import os
import random
import statistics
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from lastmile.db import migrate
from services.dispatch import domain, matching
from services.dispatch.models import Candidate, CandidateSkill

RESULTS = Path(__file__).resolve().parent / "results"
MIGRATIONS = Path(__file__).resolve().parent.parent / "services" / "dispatch" / "migrations"
CATEGORIES = ("theory", "education", "culture", "science", "health", "fitness")
DISTRICTS = ("qiongshan", "meilan", "longhua", "xiuying", "wenchang", "danzhou")
INSTITUTES, STATIONS = 12, 15
LAT_RANGE, LON_RANGE = (18.2, 20.1), (108.6, 111.0)
DAYS = domain.WEEKDAYS
SLOTS = (["07:00", "11:30"], ["08:00", "12:00"], ["09:00", "17:00"], ["14:00", "18:00"], ["18:30", "21:30"],
         ["19:00", "22:00"])
LIMIT = 3  # an urgent need's broadcast: the most dispatch asks for at once
CANDIDATE_COLUMNS = ("volunteer_id", "user_id", "name", "site_id", "lat", "lon", "active", "availability",
                     "active_assignments", "rating_count", "rating_sum", "recent_hours", "recent_offers",
                     "accepted", "declined", "revision", "updated_at")
SKILL_COLUMNS = ("volunteer_id", "category") + matching.MATCH_COLUMNS


def clamp(value, bounds):
    return min(max(value, bounds[0]), bounds[1])


class Province:
    def __init__(self, rng):
        self.rng = rng
        self.centres = {}
        self.stations = []
        for district in DISTRICTS:
            dlat, dlon = rng.uniform(18.5, 19.9), rng.uniform(108.9, 110.7)
            self.centres[district] = (dlat, dlon)
            for i in range(INSTITUTES):
                institute = f"{district}.t{i:02d}"
                ilat, ilon = clamp(rng.gauss(dlat, 0.12), LAT_RANGE), clamp(rng.gauss(dlon, 0.12), LON_RANGE)
                self.centres[institute] = (ilat, ilon)
                for s in range(STATIONS):
                    station = f"{institute}.s{s:02d}"
                    self.centres[station] = (clamp(rng.gauss(ilat, 0.04), LAT_RANGE),
                                             clamp(rng.gauss(ilon, 0.04), LON_RANGE))
                    self.stations.append(station)

    def volunteer(self, now):
        rng = self.rng
        station = rng.choice(self.stations)
        site, spread = station, 0.012
        roll = rng.random()
        if roll < 0.02:
            site, spread = station.split(".")[0], 0.08
        elif roll < 0.06:
            site, spread = station.rpartition(".")[0], 0.03
        lat, lon = self.centres[site]
        lat, lon = clamp(rng.gauss(lat, spread), LAT_RANGE), clamp(rng.gauss(lon, spread), LON_RANGE)
        if rng.random() < 0.05:
            lat = lon = None
        availability = None
        if rng.random() < 0.65:
            availability = {day: sorted(rng.sample(SLOTS, rng.choice((1, 1, 2))))
                            for day in rng.sample(DAYS, rng.randint(1, 6))}
        count = 0 if rng.random() < 0.5 else min(80, int(rng.expovariate(1 / 8)) + 1)
        stars = clamp(rng.gauss(4.4, 0.4), (1.0, 5.0))
        offers = 0 if rng.random() < 0.4 else min(30, int(rng.expovariate(1 / 4)) + 1)
        accepted = rng.randint(0, offers)
        roll = rng.random()
        return {
            "volunteer_id": str(uuid.uuid4()), "user_id": str(uuid.uuid4()), "name": "志愿者", "site_id": site,
            "lat": lat, "lon": lon, "active": rng.random() > 0.04, "availability": availability,
            "active_assignments": 2 if roll < 0.05 else 1 if roll < 0.15 else 0,
            "rating_count": count, "rating_sum": round(count * stars, 1),
            "recent_hours": 0.0 if rng.random() < 0.4 else round(rng.expovariate(1 / 8), 1),
            "recent_offers": offers, "accepted": accepted, "declined": rng.randint(0, offers - accepted),
            "revision": 1, "updated_at": now,
            "skills": rng.sample(CATEGORIES, rng.choice((1, 2, 2, 3))),
        }

    def need(self, rng):
        station = rng.choice(self.stations)
        lat, lon = self.centres[station]
        lat, lon = (rng.gauss(lat, 0.012), rng.gauss(lon, 0.012)) if rng.random() < 0.9 else (None, None)
        start = end = None
        if rng.random() < 0.6:
            start = datetime(2026, 3, 9, tzinfo=timezone.utc) + timedelta(days=rng.randrange(7),
                                                                          minutes=30 * rng.randrange(-16, 28))
            end = start + timedelta(hours=rng.choice((1, 2, 3)))
        return domain.NeedFacts(category=rng.choice(CATEGORIES), site_id=station, urgency="urgent", lat=lat,
                                lon=lon, window_start=start, window_end=end)


class _Row:
    def __init__(self, values):
        self.__dict__.update(values)


def _csv(rows, columns):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in rows:
        writer.writerow([_cell(row[name]) for name in columns])
    buffer.seek(0)
    return buffer


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return value


def load(engine, province, count, batch=100_000):
    """COPY ``count`` more volunteers into the projection, skill rows and their
    copy (``matching.match_values``, as the ORM events write it) included. The
    secondary indexes are dropped for the load and built again after it, as the
    migrations define them."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    indexes = [index for table in (Candidate.__table__, CandidateSkill.__table__) for index in table.indexes]
    with engine.begin() as conn:
        for index in indexes:
            index.drop(conn)
    done = 0
    while done < count:
        people = [province.volunteer(now) for _ in range(min(batch, count - done))]
        skills = []
        for person in people:
            values = matching.match_values(_Row(person))
            skills += [{"volunteer_id": person["volunteer_id"], "category": c, **values} for c in person["skills"]]
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute(f"COPY candidates ({', '.join(CANDIDATE_COLUMNS)}) FROM STDIN WITH (FORMAT csv)",
                           stream=_csv(people, CANDIDATE_COLUMNS))
            cursor.execute(f"COPY candidate_skills ({', '.join(SKILL_COLUMNS)}) FROM STDIN WITH (FORMAT csv)",
                           stream=_csv(skills, SKILL_COLUMNS))
            raw.commit()
        finally:
            raw.close()
        done += len(people)
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL maintenance_work_mem = '512MB'"))
        for index in indexes:
            index.create(conn)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE candidates"))
        conn.execute(sa.text("VACUUM ANALYZE candidate_skills"))


def before(session, need, scope, offered, policy):
    """What ``DispatchService._ranked_candidates`` did before matching: read every
    eligible candidate of the scope and rank them all in Python."""
    rows = session.scalars(
        sa.select(Candidate)
        .join(CandidateSkill, CandidateSkill.volunteer_id == Candidate.volunteer_id)
        .where(
            CandidateSkill.category == need.category,
            Candidate.active.is_(True),
            Candidate.active_assignments < policy.max_active_assignments,
            sa.or_(Candidate.site_id == scope, Candidate.site_id.startswith(scope + ".")),
        )
    ).all()
    skills = {}
    ids = [row.volunteer_id for row in rows]
    for start in range(0, len(ids), 10_000):
        for row in session.execute(sa.select(CandidateSkill.volunteer_id, CandidateSkill.category)
                                   .where(CandidateSkill.volunteer_id.in_(ids[start:start + 10_000]))):
            skills.setdefault(row.volunteer_id, []).append(row.category)
    eligible = []
    for row in rows:
        facts = matching.candidate_facts(row, skills.get(row.volunteer_id, ()))
        if domain.ineligibility(facts, need, scope, offered, policy) is None:
            eligible.append(facts)
    return [(session.get(Candidate, c.volunteer_id), total, parts) for c, total, parts in domain.rank(eligible, need, policy)]


def percentile(values, share):
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def timed(engine, rank, needs, level, policy, statements, repeat=1):
    """Milliseconds per need (its first run, and its best of ``repeat``), statements
    per need, and the answers."""
    first, best, counts, answers = [], [], [], []
    with Session(engine) as session:
        for need in needs:
            scope = domain.level_site(need.site_id, level)
            runs = []
            for run in range(repeat):
                statements[0] = 0
                start = time.perf_counter()
                ranked = rank(session, need, scope, set(), policy)
                runs.append((time.perf_counter() - start) * 1000)
                if run == 0:
                    counts.append(statements[0])
                    answers.append([(row.volunteer_id, total, parts) for row, total, parts in ranked[:LIMIT]])
                session.rollback()
                session.expunge_all()
            first.append(runs[0])
            best.append(min(runs))
    return first, best, counts, answers


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--needs", type=int, default=300, help="needs timed per size and level")
    parser.add_argument("--before-needs", default="40,12",
                        help="needs timed with the old ranking at the first sizes (comma separated; 0 skips)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per need: p50/p99 of the first runs, and of each need's best run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    before_needs = [int(n) for n in args.before_needs.split(",") if n.strip()]
    server = (os.environ.get("LASTMILE_BENCH_DATABASE_URL") or os.environ.get("LASTMILE_DATABASE_URL")
              or "postgresql://postgres@127.0.0.1:5432/")
    url = sa.engine.make_url(server).set(drivername="postgresql+psycopg2")
    name = f"lastmile_bench_matching_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine = sa.create_engine(url.set(database=name), pool_size=2)
    statements = [0]

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _count(*_):
        statements[0] += 1

    rng = random.Random(args.seed)
    province = Province(rng)
    policy = domain.Policy()
    results = {"limit": LIMIT, "needs": args.needs, "seed": args.seed, "sizes": []}
    started = time.perf_counter()
    try:
        migrate(engine, MIGRATIONS)
        loaded = 0
        print(f"{'':>20} | {'before (all ranked)':^23} | {'after: first run':^25} | "
              f"{'after: best of ' + str(args.repeat):^17} |")
        print(f"{'volunteers':>10} {'level':>9} | {'p50':>8} {'p99':>8} {'n':>5} | "
              f"{'p50':>7} {'p99':>7} {'max':>7} {'stm':>3} | {'p50':>7} {'p99':>7} {'':>1}| agree")
        for index, size in enumerate(sizes):
            t0 = time.perf_counter()
            load(engine, province, size - loaded)
            loaded = size
            entry = {"volunteers": size, "load_seconds": round(time.perf_counter() - t0, 1), "levels": {},
                     "load_average": [round(x, 2) for x in os.getloadavg()]}
            needs_rng = random.Random(args.seed * 1000 + index)
            needs = [province.need(needs_rng) for _ in range(args.needs)]
            warm = [province.need(needs_rng) for _ in range(30)]
            def fast(session, need, scope, offered, policy):
                return matching.ranked(session, need, scope, offered, policy, LIMIT)

            for level in domain.LEVELS:
                timed(engine, fast, warm, level, policy, statements)
                after, best, counts, answers = timed(engine, fast, needs, level, policy, statements, args.repeat)
                row = {"after_ms": {"p50": round(statistics.median(after), 3), "p99": round(percentile(after, 0.99), 3),
                                    "max": round(max(after), 3), "mean": round(statistics.mean(after), 3)},
                       "after_best_of_ms": {"p50": round(statistics.median(best), 3),
                                            "p99": round(percentile(best, 0.99), 3), "max": round(max(best), 3),
                                            "runs": args.repeat},
                       "statements_mean": round(statistics.mean(counts), 2)}
                n_before = before_needs[index] if index < len(before_needs) else 0
                agree = ""
                if n_before:
                    old, _, _, old_answers = timed(engine, before, needs[:n_before], level, policy, statements)
                    row["before_ms"] = {"p50": round(statistics.median(old), 3), "p99": round(percentile(old, 0.99), 3),
                                        "n": n_before}
                    same = sum(a == b for a, b in zip(answers, old_answers))
                    row["agree"] = f"{same}/{n_before}"
                    agree = row["agree"]
                entry["levels"][level] = row
                b, a, m = row.get("before_ms"), row["after_ms"], row["after_best_of_ms"]
                print(f"{size:>10,} {level:>9} | "
                      + (f"{b['p50']:>8.1f} {b['p99']:>8.1f} {b['n']:>5}" if b else f"{'-':>8} {'-':>8} {'':>5}")
                      + f" | {a['p50']:>7.2f} {a['p99']:>7.2f} {a['max']:>7.1f} {row['statements_mean']:>3.1f}"
                      f" | {m['p50']:>7.2f} {m['p99']:>7.2f}  | {agree}", flush=True)
            results["sizes"].append(entry)
            print(f"{'':>20}   ({size:,} loaded in {entry['load_seconds']} s; load average during timing "
                  f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)", flush=True)
    finally:
        engine.dispose()
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    results["seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "matching.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (RESULTS / "matching.svg").write_text(svg(results), encoding="utf-8")
    print(f"wrote {RESULTS / 'matching.json'} and {RESULTS / 'matching.svg'} in {results['seconds']} s")
    disagree = [(e["volunteers"], level) for e in results["sizes"] for level, row in e["levels"].items()
                if "agree" in row and row["agree"].split("/")[0] != row["agree"].split("/")[1]]
    if disagree:
        print(f"the old and new rankings disagree at {disagree}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------- the plot


def svg(results, width=720, height=420):
    """Time (ms) against volunteers, both axes logarithmic: p50 and p99 per level,
    after (solid) and before (dashed)."""
    left, right, top, bottom = 70, 150, 30, 50
    series = []
    colours = {"station": "#1b9e77", "institute": "#d95f02", "district": "#7570b3"}
    for level in domain.LEVELS:
        for stat, dash in (("p50", ""), ("p99", "4 3")):
            for when, marker in (("after_ms", "circle"), ("before_ms", "square")):
                points = [(e["volunteers"], e["levels"][level][when][stat]) for e in results["sizes"]
                          if when in e["levels"].get(level, {})]
                if points:
                    series.append((f"{'after' if when == 'after_ms' else 'before'} {level} {stat}", colours[level],
                                   dash if when == "after_ms" else "1 3", marker, points))
    xs = [x for *_, points in series for x, _ in points]
    ys = [max(y, 1e-3) for *_, points in series for _, y in points] + [20.0]
    x0, x1 = math.floor(math.log10(min(xs))), math.ceil(math.log10(max(xs)))
    y0, y1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
    x1 = max(x1, x0 + 1)
    y1 = max(y1, y0 + 1)
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x):
        return left + (math.log10(x) - x0) / (x1 - x0) * plot_w

    def py(y):
        return top + (y1 - math.log10(max(y, 1e-3))) / (y1 - y0) * plot_h

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="18" font-size="13">Ranking one need: time vs volunteers in the projection '
           f'(log-log)</text>']
    for e in range(x0, x1 + 1):
        x = px(10 ** e)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#ddd"/>')
        out.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle">10^{e}</text>')
    for e in range(y0, y1 + 1):
        y = py(10 ** e)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{10 ** e:g} ms</text>')
    target = py(20)
    out.append(f'<line x1="{left}" y1="{target:.1f}" x2="{left + plot_w}" y2="{target:.1f}" stroke="red" '
               f'stroke-dasharray="6 4"/>')
    out.append(f'<text x="{left + plot_w - 4}" y="{target - 4:.1f}" text-anchor="end" fill="red">'
               f'target p99 20 ms</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 12}" text-anchor="middle">volunteers</text>')
    for i, (label, colour, dash, marker, points) in enumerate(series):
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.6" '
                   f'stroke-dasharray="{dash}"/>')
        for x, y in points:
            if marker == "circle":
                out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{colour}"/>')
            else:
                out.append(f'<rect x="{px(x) - 2.5:.1f}" y="{py(y) - 2.5:.1f}" width="5" height="5" '
                           f'fill="{colour}"/>')
        ly = top + 8 + i * 14
        out.append(f'<line x1="{left + plot_w + 10}" y1="{ly}" x2="{left + plot_w + 30}" y2="{ly}" '
                   f'stroke="{colour}" stroke-width="1.6" stroke-dasharray="{dash}"/>')
        out.append(f'<text x="{left + plot_w + 34}" y="{ly + 4}">{label}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
