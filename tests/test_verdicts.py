"""The one verdict function every recipe's claims go through."""

import math

import pytest
from scipy import stats

from vaelab.evaluation.verdicts import interval, normal_interval, verdict


def test_an_interval_excluding_zero_in_the_claimed_direction_reproduces():
    up = [1.0, 1.2, 0.9, 1.1, 1.05]
    assert verdict("rises", up, +1)["verdict"] == "reproduced"
    assert verdict("falls", up, -1)["verdict"] == "contradicted"
    down = [-x for x in up]
    assert verdict("falls", down, -1)["verdict"] == "reproduced"
    assert verdict("rises", down, +1)["verdict"] == "contradicted"


def test_an_interval_containing_zero_or_a_single_value_is_inconclusive():
    straddles = [1.0, -0.5, 0.8, -0.2]  # mean 0.275, interval wide around it
    result = verdict("rises", straddles, +1)
    low, high = stats.t.interval(0.95, 3, loc=0.275, scale=stats.sem(straddles))
    assert math.isclose(result["ci95"][0], low) and math.isclose(result["ci95"][1], high)
    assert low < 0 < high and result["verdict"] == "inconclusive"
    one = verdict("rises", [5.0], +1)
    assert one["verdict"] == "inconclusive" and one["ci95"] is None and one["mean"] == 5.0
    capped = verdict("rises", [1.0, 1.1, 1.2], +1, caveat="MI at its cap")
    assert capped["verdict"] == "inconclusive" and capped["caveat"] == "MI at its cap"


def test_the_boundary_and_a_normal_interval():
    # an interval whose lower end is exactly 0 does not exclude zero
    exact = {"n": 10, "mean": 1.0, "se": 0.5, "low": 0.0, "high": 2.0}
    assert verdict("rises", exact, +1)["verdict"] == "inconclusive"
    z = normal_interval(3.0, 1.0)  # ±1.96
    assert math.isclose(z["low"], 3.0 - 1.959963984540054)
    assert verdict("rises", z, +1)["verdict"] == "reproduced"
    assert verdict("rises", normal_interval(1.5, 1.0), +1)["verdict"] == "inconclusive"
    with pytest.raises(ValueError):
        verdict("?", [1.0, 2.0], 0)


def test_interval_by_hand():
    got = interval([2.0, 4.0, 6.0])
    # s = 2, SE = 2/√3, t_{0.975, 2} = 4.302652729911275
    assert math.isclose(got["se"], 2 / math.sqrt(3))
    assert math.isclose(got["high"], 4.0 + 4.302652729911275 * 2 / math.sqrt(3))
    assert interval([1.0, float("nan"), None, 3.0])["n"] == 2
