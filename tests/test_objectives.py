"""Objectives, Pareto tools, hypervolume, scalarization and pick rules.

    python -m pytest tests/test_objectives.py -q
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from promptsearch.objectives import (
    DEFAULT_OBJECTIVES,
    KNOWN_OBJECTIVES,
    Objective,
    ObjectiveError,
    Scalarization,
    crowding_distance,
    hypervolume,
    nondominated_ranks,
    objective_values,
    parse_objectives,
    pareto_front,
    pick,
    scalarize,
    usable_indices,
)
from promptsearch.trial import TrialResult

TWO = parse_objectives(["auc", "prompt_params"])


def res(status="completed", **metrics) -> TrialResult:
    return TrialResult(candidate={}, status=status, metrics=metrics)


def test_defaults_and_parsing():
    assert [o.name for o in DEFAULT_OBJECTIVES] == ["auc", "worst_class_recall", "prompt_params", "latency_ms"]
    assert [o.weight for o in DEFAULT_OBJECTIVES] == [1, 1, -1, -1]
    assert [o.group for o in DEFAULT_OBJECTIVES] == ["accuracy", "safety", "efficiency", "efficiency"]
    assert parse_objectives(None) == DEFAULT_OBJECTIVES
    objs = parse_objectives(["auc", "f1:max", {"name": "prompt_params", "bounds": [100, 1e5]}])
    assert objs[1] == Objective(name="f1", direction="max")
    assert objs[2].direction == "min" and objs[2].scale == "log" and objs[2].bounds == (100, 1e5)
    with pytest.raises(ObjectiveError, match="give its direction"):
        parse_objectives(["mystery"])
    with pytest.raises(ObjectiveError, match="duplicate"):
        parse_objectives(["auc", "auc"])
    with pytest.raises(ObjectiveError, match="lo < hi"):
        parse_objectives([{"name": "auc", "bounds": [1, 0]}])
    with pytest.raises(ObjectiveError, match="direction"):
        parse_objectives(["auc:up"])


def test_normalisation_is_fixed_and_log_scaled():
    pp = KNOWN_OBJECTIVES["prompt_params"]
    assert pp.normalise(10) == pytest.approx(1.0) and pp.normalise(1e7) == pytest.approx(0.0)
    # one decade is worth the same anywhere: 1e3 -> 1e4 and 1e5 -> 1e6 both lose 1/6
    assert pp.normalise(1e3) - pp.normalise(1e4) == pytest.approx(pp.normalise(1e5) - pp.normalise(1e6))
    assert pp.normalise(1.0) == 1.0 and pp.normalise(1e9) == 0.0  # clipped
    assert pp.denormalise(pp.normalise(5000)) == pytest.approx(5000)
    assert KNOWN_OBJECTIVES["auc"].normalise(0.8) == pytest.approx(0.8)


def test_usable_values_front_and_ranks():
    results = [res(auc=0.9, prompt_params=1000), res("failed"), res(auc=0.8, prompt_params=100),
               res(auc=0.7, prompt_params=5000), res(auc=float("nan"), prompt_params=10),
               {"status": "completed", "metrics": {"auc": 0.95, "prompt_params": 1e5}}, res(auc=0.5)]
    assert usable_indices(results, TWO) == [0, 2, 3, 5]
    vals = objective_values(results, TWO)
    assert vals.shape == (4, 2)
    assert pareto_front(results, TWO) == [0, 2, 5]  # 3 is dominated by 0 (better auc, fewer params)
    assert list(nondominated_ranks(vals, TWO)) == [0, 0, 1, 0]
    assert pareto_front([], TWO) == [] and hypervolume([], TWO) == 0.0


def test_crowding_distance_within_fronts():
    vals = np.array([[0.9, 1000], [0.8, 100], [0.85, 500], [0.5, 1e5]])
    ranks = nondominated_ranks(vals, TWO)
    d = crowding_distance(vals, ranks)
    assert math.isinf(d[0]) and math.isinf(d[1]) and 0 < d[2] < math.inf  # extremes inf, middle finite
    assert math.isinf(d[3])  # alone in its front


def test_hypervolume_normalised_and_monotone():
    one = [res(auc=1.0, prompt_params=10)]
    assert hypervolume(one, TWO) == pytest.approx(1.0)  # the ideal point fills the unit square
    a = [res(auc=0.8, prompt_params=1e4)]
    pp = KNOWN_OBJECTIVES["prompt_params"]
    assert hypervolume(a, TWO) == pytest.approx(0.8 * pp.normalise(1e4))
    b = a + [res(auc=0.6, prompt_params=100)]
    assert hypervolume(b, TWO) > hypervolume(a, TWO)
    assert hypervolume(b + [res(auc=0.5, prompt_params=1e5)], TWO) == pytest.approx(hypervolume(b, TWO))  # dominated
    assert hypervolume(np.array([[0.8, 1e4]]), TWO) == pytest.approx(hypervolume(a, TWO))
    assert hypervolume(a, TWO, reference=[0.8, 1e7]) == 0.0  # not strictly better than the reference
    four = [res(auc=0.9, worst_class_recall=0.7, prompt_params=1000, latency_ms=5)]
    assert 0 < hypervolume(four) < 1


def test_scalarize_weights_and_failures():
    r = res(auc=0.8, worst_class_recall=0.5, prompt_params=1e4, latency_ms=10)
    pp, lat = KNOWN_OBJECTIVES["prompt_params"], KNOWN_OBJECTIVES["latency_ms"]
    expected = 0.6 * 0.8 + 0.2 * 0.5 + 0.1 * pp.normalise(1e4) + 0.1 * lat.normalise(10)
    assert scalarize(r) == pytest.approx(expected)
    assert scalarize(r, weights={"groups": {"accuracy": 1.0}}) == pytest.approx(0.8)
    assert scalarize(r, weights=Scalarization(groups={}, objectives={"worst_class_recall": 2})) == pytest.approx(0.5)
    assert scalarize(res("failed")) == 0.0 and scalarize(res(auc=float("nan"))) == 0.0
    with pytest.raises(ObjectiveError, match="weight 0"):
        scalarize(r, weights={"groups": {"accuracy": 0.0}})
    with pytest.raises(ValueError, match=">= 0"):
        Scalarization(groups={"accuracy": -1})


def test_pick_rules():
    results = [res(auc=0.95, prompt_params=1e6), res(auc=0.90, prompt_params=5000),
               res(auc=0.60, prompt_params=20), res("failed"), res(auc=0.85, prompt_params=20000)]
    assert pick(results, TWO, "best:auc") == 0
    assert pick(results, TWO, "best:prompt_params") == 2
    assert pick(results, TWO, "best:auc where prompt_params <= 10000") == 1
    assert pick(results, TWO, "best:auc where prompt_params < 10000 and auc > 0.7") == 1
    assert pick(results, TWO, "knee") == 1  # the balanced compromise, not an extreme
    with pytest.raises(ObjectiveError, match="no completed trial meets"):
        pick(results, TWO, "best:auc where prompt_params <= 1")
    with pytest.raises(ObjectiveError, match="not an objective"):
        pick(results, TWO, "best:latency_ms")
    with pytest.raises(ObjectiveError, match="unknown pick rule"):
        pick(results, TWO, "median")
    with pytest.raises(ObjectiveError, match="no completed"):
        pick([res("failed")], TWO)
