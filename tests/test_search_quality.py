"""The exact search-quality benchmark: its recorded tables and its replay machinery.

    python -m pytest tests/test_search_quality.py -q

The tables (``benchmarks/data/search_quality_<bench>.csv``) are real trials recorded by
``benchmarks/search_quality.py record``; recording is resumable and spans sessions, so a table
may be partial. The replay is checked on the part of it that is complete: a copy of the bench
space with decisions pinned so that every one of its candidates is recorded.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("search_quality", REPO / "benchmarks" / "search_quality.py")
sq = importlib.util.module_from_spec(spec)
sys.modules["search_quality"] = sq  # its dataclasses look their module up
spec.loader.exec_module(sq)

RECORDED = [name for name, b in sq.BENCHES.items() if len(sq.read_rows(b.table)) >= 20]


def test_the_benches_are_exact_and_small_enough_to_record():
    for bench in sq.BENCHES.values():
        space = bench.load_space()
        cands = sq.candidates(space)
        assert 100 <= len(cands) <= 1500
        assert len({sq.arch_key(c) for c in cands}) == len(cands)  # one identity per candidate
        assert set(space.spec.decisions["backbone"].choices) == set(bench.backbones)


@pytest.mark.parametrize("name", RECORDED)
def test_recorded_table_is_real_and_consistent(name):
    bench = sq.BENCHES[name]
    rows = sq.read_rows(bench.table)
    space = bench.load_space()
    meta = json.loads(bench.table.with_suffix(".json").read_text())
    assert meta["space_hash"] == space.hash and meta["dataset"] == bench.dataset
    keys = {sq.arch_key(c) for c in sq.candidates(space)}
    for r in rows:
        g = json.loads(r["genome"])
        assert space.is_valid(g) and sq.arch_key(space.candidate(g)) in keys
        if sq.arch_key(space.candidate(g)) != r["architecture"]:  # recorded before an equivalence rule folded it
            assert meta["earlier_space_hashes"] and sum(map(len, json.loads(r["architecture"])["components"].values())) == 1
            assert {**json.loads(r["architecture"]), "fusion": None} == {**space.candidate(g).architecture, "fusion": None}
        if r["status"] == "completed":
            assert 0 <= float(r["auc"]) <= 1 and float(r["wall_time_s"]) > 1  # trained, not faked
            curve = json.loads(r["curve"])
            assert [c["epoch"] for c in curve] == list(range(1, bench.epochs + 1))
            assert float(r["auc"]) == pytest.approx(curve[-1]["val_auc"], abs=1e-5)
    pairs = [(r["architecture"], r["seed"]) for r in rows]
    assert len(set(pairs)) == len(pairs)  # the recorder never writes a row twice
    assert {int(r["seed"]) for r in rows} <= set(bench.seeds)


def _complete_subspace(name: str):
    """Decisions to pin so that every candidate of the pinned space is in the table (or None)."""
    bench = sq.BENCHES[name]
    space = bench.load_space()
    recorded = {r["architecture"] for r in sq.read_rows(bench.table)}
    names = [d for d, spec_ in space.spec.decisions.items() if len(spec_.choices) > 1]
    for k in range(len(names), 0, -1):
        for pinned in itertools.combinations(names, k):
            for values in itertools.product(*(space.spec.decisions[d].choices for d in pinned)):
                fix = dict(zip(pinned, values))
                try:
                    sub = space.fix(**fix)
                except Exception:  # noqa: BLE001 - a pin that leaves no valid candidate
                    continue
                cands = sq.candidates(sub)
                if len(cands) >= 4 and all(sq.arch_key(c) in recorded for c in cands):
                    return fix, cands
    return None


@pytest.mark.parametrize("name", RECORDED)
def test_oracle_answers_exactly_and_refuses_the_unrecorded(name):
    bench = sq.BENCHES[name]
    rows = sq.read_rows(bench.table)
    space = bench.load_space()
    oracle = sq.ExactOracle(rows)
    rng = random.Random(0)
    for r in rows[:10]:
        res = oracle.result(space.candidate(json.loads(r["genome"])), rng)
        seeds = [x for x in oracle.rows[r["architecture"]]]
        assert res in [sq.as_result(x) for x in seeds]
    missing = next((c for c in sq.candidates(space) if sq.arch_key(c) not in oracle.rows), None)
    if missing is not None:
        with pytest.raises(LookupError, match="outside the table"):
            oracle.result(missing, rng)


@pytest.mark.parametrize("name", RECORDED)
def test_replay_on_a_fully_recorded_subspace(name):
    found = _complete_subspace(name)
    if found is None:
        pytest.skip(f"{name}: no pinned subspace is fully recorded yet")
    fix, cands = found
    n = len(cands)
    for strategy in ("random", "evolution"):
        s, seed, curve, cpu, worth = sq.replay_one((strategy, name, 0, n, "{}", json.dumps(fix)))
        assert len(curve) == len(worth) == n and np.all(np.diff(curve) >= -1e-12) and 0 <= curve[-1] <= 1
        # every candidate asked once: what was found is the whole subspace at its seed means
        oracle = sq.ExactOracle(sq.read_rows(sq.BENCHES[name].table))
        assert worth[-1] == pytest.approx(sq.hypervolume([oracle.mean_result(c) for c in cands], sq.BENCH_OBJECTIVES))
    # every candidate asked once: the end is the subspace's hypervolume with the drawn seeds
    a = sq.replay_one(("random", name, 3, n, "{}", json.dumps(fix)))[2]
    b = sq.replay_one(("random", name, 3, n, "{}", json.dumps(fix)))[2]
    assert a == b  # seeded: the strategy and the seed draws


def test_added_strategies_join_the_published_curves(tmp_path):
    """``replay --add``: a strategy replayed later (same seeds) joins the curves already published;
    the others' columns come back unchanged, a replayed one is replaced."""
    runs = {"random": [[0.1, 0.2, 0.3], [0.2, 0.2, 0.4]], "evolution": [[0.1, 0.3, 0.5], [0.3, 0.3, 0.3]]}
    path = tmp_path / "curves.csv"
    sq.write_curves(path, sq.curve_summary(runs))
    published = sq.read_curves(path)
    assert list(published) == ["random", "evolution"]
    assert published["evolution"][0] == pytest.approx([0.2, 0.3, 0.4]) and published["random"][1][2] == pytest.approx(0.0707, abs=1e-4)
    later = sq.curve_summary({"random": [[0.1, 0.2, 0.3], [0.2, 0.2, 0.4]], "handover": [[0.2, 0.4, 0.6], [0.2, 0.4, 0.6]]})
    merged = {**published, **later}
    sq.write_curves(path, merged)
    sq.plot(tmp_path / "hv.png", "t", merged, seeds=2)
    again = sq.read_curves(path)
    assert list(again) == ["random", "evolution", "handover"] and again["evolution"] == published["evolution"]
    assert again["handover"][1] == pytest.approx([0, 0, 0]) and (tmp_path / "hv.png").stat().st_size > 1000
