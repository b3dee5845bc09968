"""The search-quality benchmark's replay machinery over the committed table of real trials.

    python -m pytest tests/test_search_quality.py -q
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("search_quality", REPO / "benchmarks" / "search_quality.py")
sq = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sq)


@pytest.fixture(scope="module")
def rows():
    rows = sq.read_rows(sq.DEFAULT_TABLE)
    assert len(rows) >= 50, "the recorded table is missing: python benchmarks/search_quality.py record"
    return rows


def test_table_is_real_and_consistent(rows):
    space = sq.bench_space()
    meta = json.loads(sq.DEFAULT_TABLE.with_suffix(".json").read_text())
    assert meta["space_hash"] == space.hash and meta["dataset"] == "breastmnist"
    for r in rows:
        g = json.loads(r["genome"])
        assert space.is_valid(g) and sq.class_of(space, g) == r["class_key"]
        if r["status"] == "completed":
            assert 0 <= float(r["auc"]) <= 1 and float(r["wall_time_s"]) > 1  # trained, not faked
    keys = [(r["class_key"], r["seed"]) for r in rows]
    assert len(set(keys)) == len(keys)  # the recorder never writes a row twice


def test_oracle_exact_and_nearest(rows):
    space = sq.bench_space()
    oracle = sq.TableOracle(rows, space, image_size=32)
    recorded = next(r for r in rows if r["phase"] == "table" and r["status"] == "completed")
    g = json.loads(recorded["genome"])
    # same class, other components switched on: the same recorded trial (components are interchangeable)
    n = space.n_components_on(g)
    comp = list(range(space.n_decisions, len(g)))
    other = list(g[: space.n_decisions]) + [0] * len(comp)
    for i in comp[::-1][:n]:
        other[i] = 1
    res = oracle.result(space.candidate(other))
    assert res.metrics["auc"] == pytest.approx(float(recorded["auc"]))
    assert res.metrics["prompt_params"] == pytest.approx(float(recorded["prompt_params"]))  # exact params
    assert oracle.exact == 1
    # a class outside the table: a recorded neighbour's metrics, with its own exact parameter count
    missing = next(c for c in (space.sample(s) for s in range(10_000)) if sq.class_of(space, c.genome) not in oracle.rows)
    res = oracle.result(missing)
    assert oracle.nearest == 1
    assert res.metrics["auc"] in {float(r["auc"]) for r in rows if r["status"] == "completed"}


def test_replay_curve_is_a_running_hypervolume(rows):
    name, seed, curve, cpu, (exact, nearest) = sq.run_one(("evolution", 0, 20, str(sq.DEFAULT_TABLE), 32))
    assert len(curve) == 20 and exact + nearest == 20
    assert np.all(np.diff(curve) >= -1e-12) and 0 < curve[-1] < 1
