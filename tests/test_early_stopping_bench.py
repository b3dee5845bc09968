"""The early-stopping benchmark's replay (issue #15) on a small table of real recorded rows.

    python -m pytest tests/test_early_stopping_bench.py -q

The table is a handful of fully recorded candidates of the pneumoniamnist exact table (both
seeds, real 9-epoch curves), written to a tmp file and read back as the benchmark reads its own.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("early_stopping", REPO / "benchmarks" / "early_stopping.py")
es = importlib.util.module_from_spec(spec)
sys.modules["early_stopping"] = es  # its dataclasses look their module up
spec.loader.exec_module(es)
sq = es.sq

CANDIDATES = 12
MO_ASHA = es.Scheduler(rungs=[1, 3], eta=3)


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> "es.Table":
    bench = sq.BENCHES["pneumoniamnist"]
    by_arch: dict[str, list[dict[str, str]]] = {}
    for r in sq.read_rows(bench.table):
        by_arch.setdefault(r["architecture"], []).append(r)
    full = [rs for rs in by_arch.values() if {int(r["seed"]) for r in rs} >= set(bench.seeds)][:CANDIDATES]
    if len(full) < CANDIDATES:
        pytest.skip(f"pneumoniamnist table: fewer than {CANDIDATES} fully recorded candidates yet")
    path = tmp_path_factory.mktemp("table") / "rows.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=sq.FIELDS)
        w.writeheader()
        for rs in full:
            w.writerows(rs)
    t = es.table_from_rows(bench, sq.read_rows(path))
    assert len(t.oracle.rows) == CANDIDATES and not t.complete
    return t


def test_stopped_trials_cost_their_rung_and_the_axis_is_never_passed(table, monkeypatch):
    calls = []
    real = es.promote

    def spy(recorded, point, scheduler, weights=None, columns=None):
        calls.append((len(recorded), tuple(point)))
        return real(recorded, point, scheduler, weights, columns)

    monkeypatch.setattr(es, "promote", spy)  # the product's rule is what decides
    run = es.replay(table, "random", MO_ASHA, seed=0, trials=20)
    full = table.passes
    assert run.started == CANDIDATES and run.exhausted_at == run.spent  # every candidate tried, budget to spare
    assert sum(run.stopped.values()) > 0 and run.completed > 0  # MO-ASHA stops some, completes others
    assert run.started == run.completed + sum(run.stopped.values())
    # a stopped trial costs its rung's share of a full trial (less than a full one); a completed one costs it all
    stopped_cost = sum(n * r / table.epochs * full for r, n in run.stopped.items())
    assert run.spent == pytest.approx(run.completed * full + stopped_cost)
    assert all(r / table.epochs * full < full for r in run.stopped)
    assert calls and calls[0][0] == 0 and all(0 <= x <= 1 for _, p in calls for x in p)  # normalised vectors
    # a short axis: the budget ends the run; passes never exceed it
    short = es.replay(table, "random", MO_ASHA, seed=1, trials=3)
    assert short.spent <= short.axis * (1 + 1e-9) and short.exhausted_at is None
    assert all(spent <= short.axis * (1 + 1e-9) for spent, _ in short.events)
    a_short = es.replay(table, "random", None, seed=1, trials=3)
    assert a_short.completed == 3 and a_short.spent == pytest.approx(a_short.axis)


def test_without_active_rungs_nothing_stops_and_the_arm_is_random_at_full_budget(table):
    a = es.replay(table, "random", None, seed=2, trials=8)
    for sched in (None, es.Scheduler(rungs=[table.epochs])):  # a rung at the last epoch is none
        c = es.replay(table, "random", sched, seed=2, trials=8)
        assert not c.stopped and c.events == a.events and c.spent == a.spent
    assert list(a.curve()) == sorted(a.curve())  # the front only grows
    again = es.replay(table, "random", MO_ASHA, seed=2, trials=8)
    assert again.events == es.replay(table, "random", MO_ASHA, seed=2, trials=8).events  # seeded


def test_a_learning_strategy_is_refused_on_a_partial_table(table):
    with pytest.raises(ValueError, match="partial table"):
        es.replay(table, "optuna-tpe", MO_ASHA, seed=0, trials=5)
    arms, skip = es.bench_arms(table, MO_ASHA, "optuna-tpe")
    assert [a.name.split()[0] for a in arms] == ["(a)", "(b)", "(c)", "(c')"] and "Table partial" in skip
    assert arms[1].scheduler.ranking == "scalar" and arms[1].scheduler.rungs == MO_ASHA.rungs
    assert arms[1].scheduler.informative_rho is None  # the peer baseline ranks every objective, as Ray's ASHA
    assert arms[3].scheduler == MO_ASHA.model_copy(update={"informative_rho": es.FORETOLD_RHO})  # shown, not chosen


def test_rung_vector_is_the_curve_at_that_epoch(table):
    row = next(iter(table.oracle.rows.values()))[0]
    m = es.rung_metrics(row, 3)
    at3 = json.loads(row["curve"])[2]
    assert m == {"auc": at3["val_auc"], "worst_class_recall": at3["val_worst_class_recall"],
                 "prompt_params": float(row["prompt_params"])}


def test_a_report_bench_that_shares_its_tune_bench_s_images_says_so():
    # PneumoniaMNIST and the chest X-ray folder are one source (Kermany), as are the two brain benches
    assert es.out_of_sample("pneumoniamnist", "chest_xray").startswith("out of sample, but not independent")
    assert es.out_of_sample("brain_tumor_mri", "brain_tumor_mri_4c").startswith("out of sample, but not independent")
    assert es.out_of_sample("brain_tumor_mri", "chest_xray") == "out of sample"
    assert es.out_of_sample("pneumoniamnist", "eye_fundus") == "out of sample"
