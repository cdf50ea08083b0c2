"""The site tree is encoded in the ids: ``qiongshan.hongqi.benli`` is a station of
the institute ``qiongshan.hongqi`` of the district ``qiongshan``. Every service
can reason about enclosure and escalation from the id alone."""
import re

LEVELS = ("district", "institute", "station")
SITE_ID = re.compile(r"^[a-z][a-z0-9_-]{0,39}(\.[a-z][a-z0-9_-]{0,39}){0,2}\Z")


def is_valid(site_id):
    return isinstance(site_id, str) and bool(SITE_ID.match(site_id))


def level(site_id):
    return LEVELS[site_id.count(".")]


def parent(site_id):
    return site_id.rpartition(".")[0] or None


def is_inside(site_id, other_id):
    """True when ``site_id`` is ``other_id`` or lies inside it."""
    if site_id is None or other_id is None:
        return False
    return site_id == other_id or site_id.startswith(other_id + ".")


def ancestors(site_id):
    """The site and each enclosing site, innermost first."""
    chain = []
    while site_id:
        chain.append(site_id)
        site_id = parent(site_id)
    return chain


def tree_distance(a, b):
    """Steps up and down the tree between two sites."""
    pa, pb = ancestors(a)[::-1], ancestors(b)[::-1]
    common = 0
    for x, y in zip(pa, pb):
        if x != y:
            break
        common += 1
    return (len(pa) - common) + (len(pb) - common)
