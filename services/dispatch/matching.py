"""Matching: the best eligible candidates of one need, without reading them all.

``ranked()`` answers exactly what ``domain.rank`` over every eligible candidate
would put first (same volunteers, same order, same score and parts), reading a few
dozen rows in one or two statements however many volunteers the projection holds.
No approximation: every shortcut below is a bound that is proved before it is used.

The score
---------
A total is ``distance + static``. ``static`` (rating + fairness + acceptance, at
most 0.6) depends on the candidate alone; the distance part (at most ``w``, the
distance weight) falls as the candidate is farther from the need: ``w / (1 + km/5)``
when both have coordinates, else ``w / (1 + steps in the site tree)``.

The index
---------
``candidate_skills`` (one row per volunteer and skill) is the search index. Each row
carries a copy of what the search needs: active, the site and its institute and
district, lat/lon and the 0.01-degree grid cell holding them, and ``static_score``
computed by ``domain.score`` itself (under ``STATIC_POLICY``). ORM flush events keep
the copy: any write of a ``Candidate`` row, by any handler, re-copies it in the same
transaction, reading the row back after the write (so two transactions writing one
candidate cannot leave a copy that mixes their values); a new ``CandidateSkill`` is
filled from its candidate. ``sync_all`` re-copies everything (the migration's
backfill). Indexes (category, active, X, static_score), X in: the grid cell (it also
carries volunteer_id, site_id, lat, lon, so reading a box needs no table access),
the site, the institute, the district, and the site again for rows without
coordinates only.

The search
----------
Each row gets a key: its exact total but for the parts' rounding (coordinates on
both sides, haversine computed in SQL; or the need's own site or an ancestor), or a
bound above it (another site of the scope: at least one step away, two below a
station). Rows are read best key first a page at a time (the best N, 2N, 4N...),
each page's candidates judged by ``domain.ineligibility`` (availability windows,
assignments, earlier offers...) and scored by ``domain.score``. The reading of a
region stops when the K-th best exact total beats the last key read by more than
the rounding (``KEY_SLACK``): nothing unread can come before it, ties included. So
however many candidates fail the availability or assignment rules, reading goes on
until K are found or the region is exhausted: filtering cannot starve the result.

* A station (a few hundred rows at most): its rows, best key first.
* An institute or district:

  1. Probe: the rows with coordinates in the grid cells within 2 km of the need
     (then 8, then 20 when fewer than K qualify, or when what lies beyond would be
     too wide a box), and every row without coordinates at the need's site or an
     ancestor. Their exact top K; the K-th total T is a threshold the answer's K-th
     can only beat. The same statement fetches S, the highest static_score of the
     scope (an index look-up).
  2. Beyond: outside the probe's box a row's distance part is below D(reach), so
     it can reach T only if its static reaches ``T - D(reach)`` and it lies within
     r(T - S) km of the need; at another site without coordinates, only if its static
     reaches T less that site's bound. Those rows (grid cells of the wider box, or,
     when that box is too wide, the scope's index in static_score order keyed by
     the bound), read as above with the probe's K as a start. Often nothing can:
     then the probe's answer stands, in one statement.
  3. Fewer than K eligible in the widest probe: the whole scope, best key first.

The final list is ``domain.rank`` over the eligible candidates read, cut at K.

Exactness rests on ``static_score`` matching ``STATIC_POLICY``: for other rating,
fairness or acceptance weights or rating prior, or ``limit=None``, ``ranked``
ranks every eligible candidate of the scope in Python (``rank_all``: exact, as slow
as dispatch was before). On SQLite (no trigonometry in SQL) a region's rows are
keyed in Python; the search is otherwise the same. On PostgreSQL the statements are
written with plain values in place (see ``_Search``) and run with parallel plans and
JIT off for the transaction (``_SETTINGS``).
"""
import math
import re

import sqlalchemy as sa
from sqlalchemy import event

from lastmile import sites
from lastmile.db import is_postgres
from services.dispatch import domain
from services.dispatch.models import Candidate, CandidateSkill

# The policy ``static_score`` is computed with: the configured one (its weights and
# rating prior are not configurable).
STATIC_POLICY = domain.Policy()

EARTH_KM = 6371.0  # as domain.haversine_km
KM_PER_DEGREE = EARTH_KM * math.pi / 180
CELL_DEGREES = 0.01
CELL_COLUMNS = 40000
NO_CELL = -1  # coordinates that are no place on earth: always read, keyed at the highest closeness
PROBE_RADII_KM = (2.0, 8.0, 20.0)
SMALL_SCOPE = 400  # rows of a category in a scope small enough to read whole rather than probe again
MAX_CELLS = 1500  # a bounding box of more grid cells than this (~20 km around) is read otherwise
# |exact total - key| for a key computed from coordinates: the four parts and the total are
# each rounded to 4 decimals (<= 2.5e-4), plus floating point noise.
KEY_SLACK = 5e-4
# Regions keep every row whose key is within this of the threshold.
REGION_SLACK = 1e-3

SKILLS = CandidateSkill.__table__
CANDIDATES = Candidate.__table__
_STATIC_FIELDS = ("rating_count", "rating_sum", "recent_hours", "recent_offers", "accepted", "declined")


# --------------------------------------------------------------------------- what the index row carries


def static_score(rating_count=0, rating_sum=0.0, recent_hours=0.0, recent_offers=0, accepted=0, declined=0,
                 policy=STATIC_POLICY):
    """rating + fairness + acceptance, exactly as ``domain.score`` rounds them."""
    facts = domain.Candidate(
        volunteer_id="", user_id=None, site_id="x", skills=(), rating_count=rating_count or 0,
        rating_sum=rating_sum or 0.0, recent_hours=recent_hours or 0.0, recent_offers=recent_offers or 0,
        accepted=accepted or 0, declined=declined or 0,
    )
    _, parts = domain.score(facts, domain.NeedFacts(category="", site_id="x"), policy)
    return parts["rating"] + parts["fairness"] + parts["acceptance"]


def _finite_position(lat, lon):
    try:
        return math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180
    except TypeError:
        return False


def _row(lat):
    return math.floor((lat + 90) / CELL_DEGREES)


def _column(lon):
    return math.floor((lon + 180) / CELL_DEGREES)


def cell_of(lat, lon):
    """The grid square of a position; None without one (as ``domain.score`` sees it)."""
    if lat is None or lon is None:
        return None
    if not _finite_position(lat, lon):
        return NO_CELL
    return _row(lat) * CELL_COLUMNS + _column(lon)


def match_values(candidate):
    """The copy of ``candidate`` (a ``Candidate`` or a row of its columns) that its
    skill rows carry."""
    site_id = candidate.site_id
    parts = site_id.split(".") if site_id else []
    return {
        "active": bool(candidate.active),
        "site_id": site_id,
        "district_id": parts[0] if parts else None,
        "institute_id": ".".join(parts[:2]) if len(parts) >= 2 else None,
        "lat": candidate.lat,
        "lon": candidate.lon,
        "cell": cell_of(candidate.lat, candidate.lon),
        "static_score": static_score(*(getattr(candidate, name) for name in _STATIC_FIELDS)),
    }


MATCH_COLUMNS = ("active", "site_id", "district_id", "institute_id", "lat", "lon", "cell", "static_score")
_CANDIDATE_COLUMNS = [CANDIDATES.c[name] for name in ("volunteer_id", "site_id", "active", "lat", "lon",
                                                      *_STATIC_FIELDS)]


def sync(connection, volunteer_id):
    """Re-copy one candidate into its skill rows, from the row as the database has it
    now (within this transaction, after this transaction's own write)."""
    row = connection.execute(sa.select(*_CANDIDATE_COLUMNS).where(CANDIDATES.c.volunteer_id == volunteer_id)).first()
    if row is not None:
        connection.execute(sa.update(SKILLS).where(SKILLS.c.volunteer_id == volunteer_id).values(**match_values(row)))


def sync_all(connection, batch=5000):
    """Re-copy every candidate (the migration's backfill; a repair)."""
    update = sa.update(SKILLS).where(SKILLS.c.volunteer_id == sa.bindparam("vid")).values(
        **{name: sa.bindparam(f"v_{name}") for name in MATCH_COLUMNS})
    pending = []
    for row in connection.execute(sa.select(*_CANDIDATE_COLUMNS)):
        values = match_values(row)
        pending.append({"vid": row.volunteer_id, **{f"v_{k}": v for k, v in values.items()}})
        if len(pending) >= batch:
            connection.execute(update, pending)
            pending = []
    if pending:
        connection.execute(update, pending)


_COPIED_FIELDS = ("site_id", "active", "lat", "lon", *_STATIC_FIELDS)
_UNLOADED = object()


@event.listens_for(Candidate, "after_insert")
@event.listens_for(Candidate, "after_update")
def _candidate_written(mapper, connection, target):
    state = sa.inspect(target)
    if any(state.dict.get(name, _UNLOADED) is _UNLOADED for name in _COPIED_FIELDS):
        # A value only the database knows (an SQL expression, expired by the UPDATE): read it back.
        sync(connection, target.volunteer_id)
        return
    if not any(state.attrs[name].history.has_changes() for name in _COPIED_FIELDS):
        return  # nothing the skill rows carry changed (an assignment count, a name)
    # The object holds what was just written: copied from it, without reading the row again.
    connection.execute(sa.update(SKILLS).where(SKILLS.c.volunteer_id == target.volunteer_id)
                       .values(**match_values(target)))


@event.listens_for(CandidateSkill, "before_insert")
def _skill_added(mapper, connection, target):
    row = connection.execute(
        sa.select(*_CANDIDATE_COLUMNS).where(CANDIDATES.c.volunteer_id == target.volunteer_id)).first()
    if row is not None:
        for name, value in match_values(row).items():
            setattr(target, name, value)


# --------------------------------------------------------------------------- the search


def ranked(session, need, scope, offered, policy, limit):
    """The best ``limit`` candidates eligible for ``need`` at the level whose site is
    ``scope``, as ``domain.rank(every eligible candidate)[:limit]`` would give them:
    a list of (``Candidate`` row, total, parts), best first. ``limit=None`` ranks them
    all."""
    if limit is not None and limit <= 0:
        return []
    distance = policy.weights.distance
    if limit is None or not _static_agrees(policy) or not (0 <= distance < math.inf) or _scope_column(scope) is None:
        return rank_all(session, need, scope, offered, policy)[:limit]
    return _Search(session, need, scope, offered, policy, limit).run()


def rank_all(session, need, scope, offered, policy):
    """Every eligible candidate, ranked in Python: the reference, and the way for
    policies ``static_score`` was not computed with."""
    rows = session.scalars(
        sa.select(Candidate)
        .join(CandidateSkill, CandidateSkill.volunteer_id == Candidate.volunteer_id)
        .where(
            CandidateSkill.category == need.category,
            Candidate.active.is_(True),
            Candidate.active_assignments < policy.max_active_assignments,
            sa.or_(Candidate.site_id == scope, Candidate.site_id.startswith(scope + ".", autoescape=True)),
        )
    ).all()
    by_id, eligible = {}, []
    for row in rows:
        facts = candidate_facts(row, (need.category,))
        if domain.ineligibility(facts, need, scope, offered, policy) is None:
            by_id[row.volunteer_id] = row
            eligible.append(facts)
    return [(by_id[c.volunteer_id], total, parts) for c, total, parts in domain.rank(eligible, need, policy)]


def candidate_facts(row, skills):
    return domain.Candidate(
        volunteer_id=row.volunteer_id, user_id=row.user_id, site_id=row.site_id, skills=tuple(skills),
        lat=row.lat, lon=row.lon, active=row.active, availability=row.availability,
        active_assignments=row.active_assignments, rating_count=row.rating_count, rating_sum=row.rating_sum,
        recent_hours=row.recent_hours, recent_offers=row.recent_offers, accepted=row.accepted,
        declined=row.declined,
    )


def _static_agrees(policy):
    mine, theirs = STATIC_POLICY, policy
    return (mine.weights.rating, mine.weights.fairness, mine.weights.acceptance, mine.rating_prior_mean,
            mine.rating_prior_weight) == (theirs.weights.rating, theirs.weights.fairness,
                                          theirs.weights.acceptance, theirs.rating_prior_mean,
                                          theirs.rating_prior_weight)


def _depth(site_id):
    return site_id.count(".") + 1


def _scope_column(scope):
    """The column of the skill rows that equals ``scope`` exactly for the rows inside it."""
    return {1: "district_id", 2: "institute_id", 3: "site_id"}.get(_depth(scope))


def cell_ranges(lat, lon, km, max_cells=None):
    """Ranges of grid cells covering every point within ``km`` of (lat, lon), one per
    row of cells; None when no useful box exists (poles, the antimeridian, more than
    ``max_cells`` cells)."""
    if km is None or not _finite_position(lat, lon) or km / EARTH_KM >= math.pi / 2:
        return None
    dlat = km / KM_PER_DEGREE * 1.001 + 1e-9
    south, north = lat - dlat, lat + dlat
    if south < -90 or north > 90:
        return None
    # The widest point of a spherical cap lies off its centre's parallel by asin(sin d / cos lat);
    # measuring it at the box's farthest latitude only widens it.
    ratio = math.sin(km / EARTH_KM) / math.cos(math.radians(max(abs(south), abs(north))))
    if ratio >= 1:
        return None
    dlon = math.degrees(math.asin(ratio)) * 1.001 + 1e-9
    west, east = lon - dlon, lon + dlon
    if west < -180 or east > 180:
        return None
    first, last = _row(south), _row(north)
    west, east = _column(west), _column(east)
    if max_cells is not None and (last - first + 1) * (east - west + 1) > max_cells:
        return None
    return [(row * CELL_COLUMNS + west, row * CELL_COLUMNS + east) for row in range(first, last + 1)]


def _radius(closeness_part, weight):
    """The distance beyond which the distance part is below ``closeness_part``."""
    if closeness_part <= 0:
        return None
    return max(0.0, 5 * (weight / closeness_part - 1))


# Values that can be written into SQL as they are (site ids, categories, uuids): the
# statement then needs no parameters, and carries the transaction's settings with it.
_PLAIN = re.compile(r"[A-Za-z0-9_.\-]*\Z")


def _plain(value):
    if isinstance(value, str):
        return bool(_PLAIN.match(value))
    if isinstance(value, (list, tuple, set)):
        return all(_plain(item) for item in value)
    return value is None or isinstance(value, bool) or (isinstance(value, (int, float)) and math.isfinite(value))


def _literal(value):
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return f"({text})" if text.startswith("-") else text  # never "--", which starts a comment


# Statements of a few milliseconds: a parallel plan or JIT compilation would only add
# their start-up (tens of ms). For the transaction only.
_SETTINGS = "SET LOCAL max_parallel_workers_per_gather = 0; SET LOCAL jit = off"


class _Search:
    """One search.

    Its statements differ from need to need, so they are written out short. On
    PostgreSQL, when every value is plain (ids, categories, numbers), they are written
    with the values in place: a statement without parameters goes to the server in
    one round trip with the settings, and SQLAlchemy has no parameters to process."""

    def __init__(self, session, need, scope, offered, policy, limit):
        self.session, self.need, self.scope, self.policy, self.limit = session, need, scope, policy, limit
        self.offered = sorted(set(offered or ()))
        self.postgres = is_postgres(session)
        self.w = float(policy.weights.distance)
        self.geo = need.lat is not None and need.lon is not None
        depth = _depth(need.site_id)
        # The need's site and its ancestors inside the scope: an exact tree distance each.
        self.classes = [(site, depth - _depth(site), self.w / (1 + depth - _depth(site)))
                        for site in sites.ancestors(need.site_id) if sites.is_inside(site, scope)]
        # Every other site of the scope, in groups with a least tree distance each: those
        # below the need's site (one step at least), then, for each ancestor, the sites
        # inside it but not inside its child towards the need (and not itself).
        self.groups = []  # (inside: (column, site), not inside: (column, site) or None, bonus)
        if depth < 3:
            self.groups.append(((_scope_column(need.site_id), need.site_id), None, self.w / 2))
        chain = [site for site, _, _ in self.classes]
        for child, parent in zip(chain, chain[1:]):
            self.groups.append(((_scope_column(parent), parent), (_scope_column(child), child),
                                self.w / (2 + depth - _depth(parent))))
        self.seen = {}  # volunteer id -> (Candidate, facts, total) when eligible, else None
        self.top_static = None
        self.first_page = 4 * limit + 8
        self.small = None  # whether the scope holds fewer than SMALL_SCOPE rows (learnt with the first probe)
        # Sent with the first statement (a statement without parameters may hold several).
        self.settings = _SETTINGS + "; " if self.postgres else ""
        self.inline = self.postgres and _plain([need.category, scope, need.site_id, *self.offered]) and (
            not self.geo or _plain([float(need.lat), float(need.lon)]))
        self.params, self.expanding = {}, set()
        active = "active" if self.postgres else "active = 1"
        # Rows of the need's category and of active candidates not offered this order yet ...
        self.anywhere = f"category = {self._value('cat', need.category)} AND {active}"
        if self.offered:
            self.anywhere += f" AND volunteer_id NOT IN {self._values('offered', self.offered)}"
        # ... inside the scope.
        self.base = f"{self.anywhere} AND {_scope_column(scope)} = {self._value('scope', scope)}"
        # The same, said with site_id alone (which the grid's index carries).
        self.inside = (f"{self.anywhere} AND (site_id = {self._value('scope', scope)} OR substr(site_id, 1,"
                       f" {len(scope) + 1}) = {self._value('scope_in', scope + '.')})")

    def _value(self, name, value):
        """``value`` in SQL: itself, or a parameter."""
        if self.inline:
            return _literal(value)
        self.params[name] = value
        return f":{name}"

    def _values(self, name, values):
        if self.inline:
            return "(%s)" % ", ".join(_literal(value) for value in values)
        self.params[name] = list(values)
        self.expanding.add(name)
        return f":{name}"

    # ---- regions: SQL selecting (volunteer_id, key) -------------------------------------

    def _select(self, bonus, where, ordered=False):
        """The key is static + bonus on PostgreSQL; SQLite has no trigonometry, so there
        the rows bring what the key is computed from in Python (bonus NULL: by km).
        ``ordered``: the bonus is a constant, so the best keys come first in the index's
        order of static_score, and the branch need read no more rows than the page."""
        if not self.postgres:
            return (f"SELECT volunteer_id, static_score, lat, lon, {bonus} AS bonus FROM candidate_skills"
                    f" WHERE {where}")
        order = " ORDER BY static_score DESC, volunteer_id LIMIT __END__" if ordered else ""
        return f"(SELECT volunteer_id, static_score + {bonus} AS key FROM candidate_skills WHERE {where}{order})"

    def _closeness(self):
        """The distance part by haversine, in SQL (NULL on SQLite)."""
        if not self.postgres:
            return "NULL"
        v = self._value
        nlat = float(self.need.lat)
        km = (f"asin(least(1, sqrt(power(sin((lat - {v('nlat', nlat)}) * {v('half', math.pi / 360)}), 2)"
              f" + {v('cosn', math.cos(math.radians(nlat)))} * cos(lat * {v('rad', math.pi / 180)})"
              f" * power(sin((lon - {v('nlon', float(self.need.lon))}) * {v('half', math.pi / 360)}), 2))))"
              f" * {v('twor', 2 * EARTH_KM)}")
        return f"{v('w', self.w)} / (1 + {km} / 5)"

    def _group(self, index, group):
        """SQL: the rows of a group of other sites (class rows aside)."""
        (column, site), outside, _ = group
        sql = f"{column} = {self._value(f'g{index}', site)} AND site_id <> {self._value(f'g{index}', site)}"
        if outside is not None:
            sql += f" AND {outside[0]} <> {self._value(f'o{index}', outside[1])}"
        return sql

    def _by_tree(self):
        """The distance part by the tree, in SQL: exact at the need's site and its
        ancestors, the group's bound at any other site."""
        whens = [f"WHEN site_id = {self._value(f's{index}', site)} THEN {bonus!r}"
                 for index, (site, _, bonus) in enumerate(self.classes)]
        whens += [f"WHEN {column} = {self._value(f'g{index}', site)} THEN {bonus!r}"
                  for index, ((column, site), _, bonus) in enumerate(self.groups)]
        return f"CASE {' '.join(whens)} ELSE 0.0 END"

    def _near(self, ranges, min_static=None):
        """Rows with coordinates in the grid cells ``ranges``, keyed exactly; the grid's
        index holds all they need (the scope told by site_id)."""
        cells = [NO_CELL] + [cell for lo, hi in ranges for cell in range(lo, hi + 1)]
        where = f"{self.inside} AND cell IS NOT NULL AND cell IN {self._values('cells', cells)}"
        if min_static is not None:
            where += f" AND static_score >= {self._value('gmin', min_static)}"
        return self._select(self._closeness(), where)

    def _tree(self, threshold=None, others=False):
        """Rows ranked by the site tree (without coordinates, or all when the need has
        none): the need's site and each ancestor at its exact distance, then (with
        ``others``) every other site of the scope at least one or two steps away (a
        station has none inside). With a threshold, only rows that may reach it."""
        def floor(bonus):
            return None if threshold is None else threshold - bonus - REGION_SLACK

        without = " AND cell IS NULL" if self.geo else ""
        branches = []
        for index, (site, _, bonus) in enumerate(self.classes):
            where = f"{self.anywhere}{without} AND site_id = {self._value(f's{index}', site)}"
            if threshold is not None:
                where += f" AND static_score >= {self._value(f'm{index}', floor(bonus))}"
            branches.append(self._select(repr(bonus), where, ordered=True))
        for index, group in enumerate(self.groups if others else ()):
            bonus = group[2]
            if threshold is not None and floor(bonus) > self.top_static:
                continue  # no static_score is that high
            where = f"{self.anywhere}{without} AND {self._group(index, group)}"
            if threshold is not None:
                where += f" AND static_score >= {self._value(f'n{index}', floor(bonus))}"
            branches.append(self._select(repr(bonus), where, ordered=True))
        return branches

    def _everything(self):
        """Every row of the scope."""
        if not self.geo:
            return self._tree(others=True)
        # One pass over the scope's index (a station's few hundred rows, or a scope with
        # too few candidates near the need).
        bonus = f"CASE WHEN cell IS NULL THEN {self._by_tree()} ELSE {self._closeness()} END"
        return [self._select(bonus, self.base)]

    def _probe(self, ranges):
        """Rows near the need, and every row at the need's site or an ancestor."""
        return ([self._near(ranges)] if self.geo else []) + self._tree()

    def _too_wide(self, threshold, reach):
        """Whether rows beyond the box of ``reach`` km may reach ``threshold`` and lie in
        too wide a box to read by grid cells."""
        if threshold - self.w / (1 + reach / 5) - REGION_SLACK > self.top_static:
            return False
        wide = _radius(threshold - self.top_static - REGION_SLACK, self.w)
        return cell_ranges(self.need.lat, self.need.lon, wide, MAX_CELLS) is None

    def _beyond(self, threshold, ranges, reach, top_static):
        """Rows outside the probe's region that may total ``threshold`` or more: with
        coordinates outside the box of ``reach`` km, their distance part is below
        D(reach), so their static must reach ``threshold - D(reach)``, and they must lie
        within r(threshold - top_static); at the other sites, static must reach
        ``threshold`` less their distance bound."""
        branches = []
        if self.geo and ranges is not None:
            outside = self.w / (1 + reach / 5)
            floor = threshold - outside - REGION_SLACK
            if floor <= top_static:
                wide = cell_ranges(self.need.lat, self.need.lon,
                                   _radius(threshold - top_static - REGION_SLACK, self.w), MAX_CELLS)
                if wide is not None:
                    branches.append(self._near(wide, floor))
                else:
                    # Too wide a box: the scope's index in static_score order, keyed by the
                    # bound static + D(reach).
                    where = f"{self.base} AND cell IS NOT NULL AND static_score >= {self._value('gmin', floor)}"
                    branches.append(self._select(repr(outside), where, ordered=True))
        branches += self._tree(threshold, others=True)[len(self.classes):]
        return branches

    # ---- reading a region best key first ------------------------------------------------

    def _text(self, sql):
        statement = sa.text(sql)
        for name in self.expanding:
            if f":{name}" in sql:
                statement = statement.bindparams(sa.bindparam(name, expanding=True))
        return statement

    def _pages(self, branches, with_top=False):
        """Pages of (volunteer id, key, Candidate), best key first, and whether the
        region is exhausted: on PostgreSQL the best N rows, then the best 2N, 4N...
        from the start each time (rows already judged are not judged again). No
        OFFSET: an ordered branch stops at N rows in static_score order, and rows whose
        keys round to the same float may come in another order than by key, so an
        offset could skip one. What is left out of a page never keys above its last
        row, which is all the search relies on."""
        if not branches:
            return
        size, offset = self.first_page, 0
        union = " UNION ALL ".join(branches)
        if self.postgres:
            top = (f", (SELECT max(static_score) FROM candidate_skills WHERE {self.base}) AS top, (SELECT count(*)"
                   f" FROM (SELECT 1 FROM candidate_skills WHERE {self.base} LIMIT {SMALL_SCOPE}) s) AS rows"
                   if with_top else "")
            columns = ", ".join(f"c.{column.name}" for column in CANDIDATES.c)
            while True:
                sql = (f"SELECT {columns}, p.key{top} FROM (SELECT volunteer_id, key FROM"
                       f" ({union.replace('__END__', str(size))}) u"
                       f" ORDER BY key DESC NULLS LAST, volunteer_id LIMIT {size}) p"
                       f" JOIN candidates c USING (volunteer_id) ORDER BY p.key DESC NULLS LAST, p.volunteer_id")
                extra = [sa.column("key", sa.Float)] + ([sa.column("top", sa.Float), sa.column("rows")] if top else [])
                text = self._text(self.settings + sql).columns(*CANDIDATES.c, *extra)
                self.settings = ""
                rows = self.session.execute(
                    sa.select(Candidate, *(text.selected_columns[c.name] for c in extra)).from_statement(text),
                    self.params).all()
                if top and rows:
                    self.top_static, self.small = rows[0].top, rows[0].rows < SMALL_SCOPE
                top = ""
                yield [(row[0].volunteer_id, row.key, row[0]) for row in rows], len(rows) < size
                if len(rows) < size:
                    return
                size *= 2
        else:
            keyed = sorted(((row.volunteer_id, self._key(row))
                            for row in self.session.execute(self._text(union), self.params)),
                           key=lambda r: (-r[1], r[0]))
            if with_top:
                self.top_static = self.session.execute(self._text(
                    f"SELECT max(static_score) FROM candidate_skills WHERE {self.base}"), self.params).scalar()
            while True:
                page = keyed[offset:offset + size]
                ids = [vid for vid, _ in page if vid not in self.seen]
                rows = {row.volunteer_id: row for row in self.session.scalars(
                    sa.select(Candidate).where(Candidate.volunteer_id.in_(ids)))} if ids else {}
                yield [(vid, key, rows.get(vid)) for vid, key in page], offset + size >= len(keyed)
                if offset + size >= len(keyed):
                    return
                offset += size
                size *= 2

    def _key(self, row):
        static = row.static_score if row.static_score is not None else -math.inf
        if row.bonus is not None:
            return static + row.bonus
        try:
            km = domain.haversine_km(row.lat, row.lon, self.need.lat, self.need.lon)
        except ValueError:  # coordinates that are no place on earth
            return static + self.w
        return static + self.w / (1 + km / 5)

    def _judge(self, vid, row):
        """By the domain's own rules: (Candidate, facts, total) when eligible, else None."""
        if vid not in self.seen:
            self.seen[vid] = None
            if row is not None:
                facts = candidate_facts(row, (self.need.category,))
                if domain.ineligibility(facts, self.need, self.scope, set(self.offered), self.policy) is None:
                    self.seen[vid] = (row, facts, domain.score(facts, self.need, self.policy)[0])
        return self.seen[vid]

    def _best(self, branches, with_top=False, prior=()):
        """The exact top ``limit`` of a region's eligible rows, and of ``prior``:
        [(total, id)] best first."""
        found = {vid: total for total, vid in prior}
        best = sorted((-total, vid) for vid, total in found.items())[:self.limit]
        for page, exhausted in self._pages(branches, with_top):
            for vid, _, row in page:
                judged = self._judge(vid, row)
                if judged is not None:
                    found[vid] = judged[2]
            best = sorted((-total, vid) for vid, total in found.items())[:self.limit]
            if exhausted:
                break
            last_key = page[-1][1] if page else None
            if len(best) == self.limit and last_key is not None and -best[-1][0] > last_key + KEY_SLACK:
                break
        return [(-negative, vid) for negative, vid in best]

    def run(self):
        if self.postgres and not self.inline:
            self.session.execute(sa.text(_SETTINGS))
            self.settings = ""
        if _depth(self.scope) >= 3:
            # A station: a few hundred rows at most; read them best key first.
            return self._answer(self._best(self._everything()))
        # 1. A probe near the need: the exact top K of its region, the K-th total a
        # threshold that the answer's K-th total can only beat. Wider while what lies
        # beyond it is too wide a box to read.
        best, reach, ranges = [], None, None
        for km in (PROBE_RADII_KM if self.geo else (None,)):
            box = cell_ranges(self.need.lat, self.need.lon, km, MAX_CELLS) if self.geo else None
            if self.geo and box is None:
                break  # no box here (a pole, the antimeridian): go on with what was probed
            reach, ranges = km, box
            best = self._best(self._probe(ranges), with_top=self.top_static is None)
            if len(best) == self.limit and not (self.geo and self._too_wide(best[-1][0], reach)):
                break
            if self.small:
                best = []  # a small scope: reading it all costs less than probing wider
                break
        if len(best) < self.limit:
            # Fewer than K near the need: read the whole scope, best key first.
            return self._answer(self._best(self._everything()))
        # 2. What lies outside the probe's region and may still beat its K-th.
        beyond = self._beyond(best[-1][0], ranges, reach, self.top_static)
        if beyond:
            best = self._best(beyond, prior=best)
        return self._answer(best)

    def _answer(self, best):
        entries = [self.seen[vid] for _, vid in best]
        rows = {row.volunteer_id: row for row, _, _ in entries}
        ranked_facts = domain.rank([facts for _, facts, _ in entries], self.need, self.policy)
        return [(rows[c.volunteer_id], total, parts) for c, total, parts in ranked_facts][:self.limit]
