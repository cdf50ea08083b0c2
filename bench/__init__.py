"""Benchmarks and simulations of Lastmile (see bench/README.md)."""


def percentile(values, p):
    """The nearest-rank ``p``th percentile (0 to 100) of ``values``; None when empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]
