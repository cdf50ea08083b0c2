"""lastmile.sites: the site tree encoded in dotted ids (DESIGN.md §1, "site")."""
import pytest

from lastmile import sites

STATION = "qiongshan.hongqi.benli"
INSTITUTE = "qiongshan.hongqi"
DISTRICT = "qiongshan"


@pytest.mark.parametrize(
    "site_id, other_id, inside",
    [
        (STATION, STATION, True),                       # a site is inside itself
        (STATION, INSTITUTE, True),                     # station inside its institute
        (STATION, DISTRICT, True),                      # ... and its district
        (INSTITUTE, DISTRICT, True),
        (INSTITUTE, STATION, False),                    # enclosure is not symmetric
        (DISTRICT, INSTITUTE, False),
        ("qiongshan.hongqi.longtang", STATION, False),  # sibling stations
        ("qiongshan.sanmenpo.benli", INSTITUTE, False),  # same station name, other institute
        ("qiongshan.hongqi2.benli", INSTITUTE, False),  # id prefix without the dot is not enclosure
        ("qiongshan.hongqi.benlicun", STATION, False),
        ("qiongshanxi", DISTRICT, False),
        ("meilan.haidian", DISTRICT, False),            # another district
        (None, DISTRICT, False),
        (STATION, None, False),
        (None, None, False),
    ],
)
def test_is_inside(site_id, other_id, inside):
    assert sites.is_inside(site_id, other_id) is inside


@pytest.mark.parametrize(
    "site_id, expected",
    [(STATION, INSTITUTE), (INSTITUTE, DISTRICT), (DISTRICT, None)],
)
def test_parent(site_id, expected):
    assert sites.parent(site_id) == expected


@pytest.mark.parametrize(
    "site_id, expected",
    [(DISTRICT, "district"), (INSTITUTE, "institute"), (STATION, "station")],
)
def test_level(site_id, expected):
    assert sites.level(site_id) == expected


@pytest.mark.parametrize(
    "site_id, expected",
    [
        (STATION, [STATION, INSTITUTE, DISTRICT]),
        (INSTITUTE, [INSTITUTE, DISTRICT]),
        (DISTRICT, [DISTRICT]),
    ],
)
def test_ancestors_innermost_first(site_id, expected):
    assert sites.ancestors(site_id) == expected


@pytest.mark.parametrize(
    "a, b, steps",
    [
        (STATION, STATION, 0),
        (STATION, INSTITUTE, 1),
        (STATION, DISTRICT, 2),
        (INSTITUTE, DISTRICT, 1),
        (STATION, "qiongshan.hongqi.longtang", 2),        # sibling stations: up one, down one
        (STATION, "qiongshan.sanmenpo", 3),               # up to the district, down to another institute
        (STATION, "qiongshan.sanmenpo.benli", 4),         # cousin station, even with the same last name
        (STATION, "meilan.haidian.xinbu", 6),             # no common ancestor at all
    ],
)
def test_tree_distance(a, b, steps):
    assert sites.tree_distance(a, b) == steps
    assert sites.tree_distance(b, a) == steps


@pytest.mark.parametrize(
    "site_id",
    [
        "qiongshan",
        "qiongshan.hongqi",
        "qiongshan.hongqi.benli",
        "a",
        "qiong_shan-2.hong-qi.ben_li3",
        "a" * 40 + ".b",                # a segment may be 40 characters long
    ],
)
def test_is_valid_accepts_dotted_paths(site_id):
    assert sites.is_valid(site_id) is True


@pytest.mark.parametrize(
    "site_id",
    [
        "",
        None,
        42,
        ["qiongshan"],
        "Qiongshan",                    # upper case
        "qiongshan.",                   # empty trailing segment
        ".qiongshan",
        "qiongshan..benli",
        "qiongshan.hongqi.benli.group1",  # deeper than a station
        "1qiongshan",                   # segment must start with a letter
        "qiongshan.2hongqi",
        "qiong shan",
        "琼山",
        "qiongshan/hongqi",
        "a" * 41,                       # segment longer than 40
    ],
)
def test_is_valid_refuses_other_values(site_id):
    assert sites.is_valid(site_id) is False


def test_is_valid_refuses_trailing_newline():
    assert sites.is_valid("qiongshan\n") is False
