"""Intervals and verdicts: how every recipe turns measurements into a claim's outcome.

`interval(values)` is the mean over seeds with its 95 % Student-t interval. `verdict(claim,
effect, direction)` decides a claim of a source work from the interval of the measured
effect (e.g. ELBO after − ELBO before, per seed): *reproduced* when the interval excludes
zero in the claimed direction, *contradicted* when it excludes zero the other way,
*inconclusive* otherwise — also with fewer than two values, or when a `caveat` (weak features,
a capped estimator) makes the measurement unfit to decide.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

LEVEL = 0.95
REPRODUCED, CONTRADICTED, INCONCLUSIVE = "reproduced", "contradicted", "inconclusive"


def interval(values: Sequence[float], level: float = LEVEL) -> dict[str, Any]:
    """n, mean, standard error s/√n (s with n − 1) and the Student-t interval
    mean ± t_{(1+level)/2, n−1}·SE; SE and interval are None for fewer than two values.
    Non-finite values and None are left out."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = len(x)
    if n == 0:
        return {"n": 0, "mean": None, "se": None, "low": None, "high": None}
    mean = float(x.mean())
    if n < 2:
        return {"n": 1, "mean": mean, "se": None, "low": None, "high": None}
    se = float(x.std(ddof=1) / math.sqrt(n))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * se
    return {"n": n, "mean": mean, "se": se, "low": mean - half, "high": mean + half}


def stat(values: Sequence[float]) -> dict[str, Any]:
    """What results files keep of `interval`: {"mean", "ci95": [low, high] (None for fewer
    than two values), "se", "n"}."""
    s = interval(values)
    ci = None if s["low"] is None else [s["low"], s["high"]]
    return {"mean": s["mean"], "ci95": ci, "se": s["se"], "n": s["n"]}


def shown(s: dict[str, Any]) -> str:
    """A `stat` (or a verdict) as '0.123 [0.101, 0.145]', the mean alone for one value."""
    if s["mean"] is None:
        return "—"
    if s["ci95"] is None:
        return f"{s['mean']:.4g}"
    return f"{s['mean']:.4g} [{s['ci95'][0]:.4g}, {s['ci95'][1]:.4g}]"


def normal_interval(mean: float, se: float, level: float = LEVEL) -> dict[str, Any]:
    """mean ± z_{(1+level)/2}·SE, for an effect whose SE comes from many examples (e.g. the
    paired AIS difference over held-out images) rather than from a few seeds."""
    half = float(stats.norm.ppf(0.5 + level / 2)) * se
    return {"n": None, "mean": mean, "se": se, "low": mean - half, "high": mean + half}


def verdict(
    claim: str,
    effect: Sequence[float] | dict[str, Any],
    direction: int,
    caveat: str | None = None,
) -> dict[str, Any]:
    """The outcome of `claim` given its measured `effect` — values per seed (their
    `interval`) or an interval already made — whose sign the claim says is `direction`
    (+1: the effect is positive, −1: negative). `caveat`: a reason the measurement cannot
    decide (then inconclusive whatever the interval)."""
    if direction not in (1, -1):
        raise ValueError("direction must be +1 or -1")
    stat = effect if isinstance(effect, dict) else interval(effect)
    low, high = stat["low"], stat["high"]
    if caveat or low is None:
        outcome = INCONCLUSIVE
    elif direction * low > 0 and direction * high > 0:
        outcome = REPRODUCED
    elif direction * low < 0 and direction * high < 0:
        outcome = CONTRADICTED
    else:
        outcome = INCONCLUSIVE
    return {
        "claim": claim,
        "direction": "positive" if direction > 0 else "negative",
        "mean": stat["mean"],
        "se": stat["se"],
        "ci95": None if low is None else [low, high],
        "n": stat["n"],
        "verdict": outcome,
        "caveat": caveat,
    }


def verdict_table(verdicts: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Headers and rows of a report's table of verdicts."""

    def effect(v: dict[str, Any]) -> str:
        one = v["mean"] is not None and v["ci95"] is None
        return shown(v) + (" (one value: no interval)" if one else "")

    rows = [
        [
            v["claim"],
            v["direction"],
            effect(v),
            v["verdict"] + (f" ({v['caveat']})" if v["caveat"] else ""),
        ]
        for v in verdicts
    ]
    return ["claim", "claimed sign of the effect", "effect, mean [95 % CI]", "verdict"], rows
