"""Pareto-aware early stopping (MO-ASHA) and the front's re-evaluation, with real trials.

    PROMPTSEARCH_DATA_ROOT=../shared/data/medmnist python -m pytest tests/test_early_stopping.py -q

The rung rule (:mod:`promptsearch.rungs`) on hand-made vectors; a real trial stopped at its rungs;
the job's scheduler and ``front_repeats`` end to end on real Ray, MLflow and BreastMNIST,
including a kill -9 of the coordinator between rung decisions (slow).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from promptsearch.jobs import JobError, parse_job
from promptsearch.rungs import Scheduler, order, promote

# --- the rung rule ------------------------------------------------------------------------------------


def test_first_at_a_rung_goes_on_a_dominated_one_stops():
    s = Scheduler(rungs=[1])
    assert promote([], [0.1, 0.1], s)  # nothing recorded yet: as Ray's ASHA, it continues
    assert not promote([[0.9, 0.9]], [0.5, 0.5], s)  # dominated by the only recorded vector
    assert promote([[0.5, 0.5]], [0.9, 0.9], s)
    # eta 3 with 3 recorded: at most one may rank above it
    recorded = [[0.9, 0.2], [0.2, 0.9], [0.1, 0.1]]
    assert promote(recorded, [0.5, 0.5], s)  # non-dominated, largest hypervolume contribution
    assert not promote(recorded, [0.15, 0.15], s)  # dominated by two of them


def test_pareto_ranking_keeps_a_balanced_trial_that_a_weighted_sum_stops():
    recorded = [[0.9, 0.1], [0.1, 0.9]]
    balanced = [0.45, 0.45]  # on the front, the largest hypervolume contribution; a lower mean
    assert promote(recorded, balanced, Scheduler(rungs=[1], ranking="nds"))
    assert not promote(recorded, balanced, Scheduler(rungs=[1], ranking="scalar"))
    assert promote(recorded, balanced, Scheduler(rungs=[1], tie_break="crowding")) is False  # extremes first


def test_order_sorts_by_level_then_contribution():
    pts = [[0.2, 0.2], [0.9, 0.1], [0.5, 0.5], [0.1, 0.9], [0.4, 0.4]]
    ranked = list(order(pts, Scheduler(rungs=[1])))
    assert ranked[0] == 2 and set(ranked[:3]) == {1, 2, 3}  # the front first, its biggest contributor first
    assert ranked[3:] == [4, 0]  # then the next level


def test_about_one_in_eta_goes_on_as_trials_arrive():
    rng = random.Random(0)
    for eta in (2, 3):
        s = Scheduler(rungs=[1], eta=eta)
        recorded, promoted = [], 0
        for _ in range(300):
            v = [rng.random(), rng.random(), rng.random()]
            promoted += promote(recorded, v, s)
            recorded.append(v)
        assert 0.6 / eta < promoted / 300 < 1.6 / eta, (eta, promoted)


def test_scheduler_field_errors_name_the_file_and_line():
    ok = parse_job("dataset: breastmnist\nbudget: {epochs: 9}\nscheduler: {rungs: [1, 3], eta: 3}\n", "job.yaml",
                   check=False)
    assert ok.scheduler.active(9) == [1, 3] and ok.front_repeats == 0
    with pytest.raises(JobError, match=r"job.yaml:3: scheduler.rungs: .*no rung below budget.epochs=3"):
        parse_job("dataset: breastmnist\nbudget: {epochs: 3}\nscheduler: {rungs: [3, 9]}\n", "job.yaml", check=False)
    with pytest.raises(JobError, match=r"job.yaml:4: scheduler.rungs: .*ascending"):
        parse_job("dataset: breastmnist\nbudget: {epochs: 9}\nscheduler:\n  rungs: [3, 1]\n", "job.yaml", check=False)
    with pytest.raises(JobError, match=r"job.yaml:3: scheduler.eta"):
        parse_job("dataset: breastmnist\nbudget: {epochs: 9}\nscheduler: {rungs: [1], eta: 1}\n", "job.yaml",
                  check=False)
    with pytest.raises(JobError, match=r"job.yaml:3: scheduler.informative_rho"):
        parse_job("dataset: breastmnist\nbudget: {epochs: 9}\nscheduler: {rungs: [1], informative_rho: 1.5}\n",
                  "job.yaml", check=False)
    with pytest.raises(JobError, match=r"job.yaml:2: front_repeats"):
        parse_job("dataset: breastmnist\nfront_repeats: -1\n", "job.yaml", check=False)


# --- a real trial at its rungs ------------------------------------------------------------------------


def test_a_trial_reports_a_stopped_result_at_each_rung_and_trains_on_unchanged(breast, mobilenet_weights, tmp_path):
    from safetensors.torch import load_file

    from promptsearch.backbones import BackboneSpec, build_backbone
    from promptsearch.budget import Budget
    from promptsearch.space import load_space
    from promptsearch.trial import run_trial

    backbone = build_backbone(BackboneSpec(name="torchvision:mobilenet_v2", image_size=32, weights=str(mobilenet_weights)))
    cand = load_space("pixel").sample(random.Random(3))
    budget = Budget(epochs=3, max_train_samples=64, latency_repeats=2, threads=1)
    seen = []

    def on_rung(epoch, row, result):
        seen.append((epoch, row, result, load_file(str(tmp_path / "w.safetensors"))))

    staged = run_trial(cand, breast, backbone, budget, seed=1, weights_out=tmp_path / "w.safetensors",
                       rungs=[1, 2, 3, 5], on_rung=on_rung)
    plain = run_trial(cand, breast, backbone, budget, seed=1)
    assert [e for e, *_ in seen] == [1, 2]  # rungs at or past the last epoch never stop anything
    for epoch, row, r, weights in seen:
        assert r.status == "stopped" and r.rung == epoch and r.epochs == epoch
        assert r.image_passes == epoch * 64
        assert r.metrics["auc"] == row["val_auc"] and r.metrics["worst_class_recall"] == row["val_worst_class_recall"]
        assert r.metrics["prompt_params"] == plain.metrics["prompt_params"] and r.test_metrics
        assert weights  # the rung's weights were written before the callback: a stopped trial can be exported
    assert staged.status == "completed" and staged.image_passes == 3 * 64 and staged.rung is None
    # evaluating at a rung draws nothing: the trial's training is the same as without rungs
    assert [h["val_auc"] for h in staged.history] == [h["val_auc"] for h in plain.history]
    assert staged.test_metrics == plain.test_metrics
    assert seen[0][2].metrics["auc"] == staged.history[0]["val_auc"]


# --- a real job -----------------------------------------------------------------------------------------


def _spec(data_root, weights, **kw) -> dict:
    spec = dict(name="asha", space="pixel", dataset="breastmnist", data_root=str(data_root),
                backbone={"name": "torchvision:mobilenet_v2", "image_size": 32, "weights": str(weights)},
                budget={"epochs": 3, "max_train_samples": 64, "latency_repeats": 2, "threads": 1},
                strategy="random", trials=8, concurrency=2, seed=0, scheduler={"rungs": [1], "eta": 3},
                front_repeats=1)
    spec.update(kw)
    return spec


def _events(ws, job_id, kind):
    lines = (ws.job_dir(job_id) / "events.jsonl").read_text().splitlines()
    return [ev for ev in map(json.loads, lines) if ev["e"] == kind]


@pytest.mark.slow
@pytest.mark.long
def test_a_job_stops_trials_at_rungs_survives_kill_9_and_re_evaluates_its_front(tmp_path, data_root,
                                                                                mobilenet_weights):
    from mlflow.tracking import MlflowClient

    from promptsearch.export.job import export_job
    from promptsearch.service.jobs import Workspace, job_front, job_status, job_trials, list_jobs, run_job

    ws = Workspace(tmp_path / "ws")
    # informative_rho on, from 2 completed trials: its decisions too must survive the kill unchanged
    spec = _spec(data_root, mobilenet_weights,
                 scheduler={"rungs": [1], "eta": 3, "informative_rho": 0.3, "informative_after": 2})
    job_file = tmp_path / "asha.yaml"
    job_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PROMPTSEARCH_FAULTS": ""}
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "promptsearch.cli", "search", str(job_file), "--workspace",
                                 str(ws.root), "--json"], stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while True:  # kill -9 once a trial was stopped and another one is in flight
            jobs = list_jobs(ws)
            j = jobs[0] if jobs else None
            if j and j["trials"]["stopped"] >= 1 and j["trials"]["running"] >= 1 and j["trials"]["finished"] < 7:
                break
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no stopped trial within 300 s"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)  # the coordinator only
        proc.wait(timeout=30)
        job_id = j["job_id"]
        rungs_before = _events(ws, job_id, "rung")
        before = {t["trial_id"]: t for t in job_trials(ws, job_id)}
        finished_before = {k: t for k, t in before.items() if t["status"] in ("completed", "stopped", "failed")}
        assert any(t["status"] == "stopped" for t in finished_before.values())

        status = run_job(ws, job_id)  # = promptsearch resume
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of the first run's Ray is left
    assert status["status"] == "completed", status["message"]

    # resume: every rung decision logged before the kill is still there, unchanged; finished trials too
    rungs_after = _events(ws, job_id, "rung")
    assert rungs_after[:len(rungs_before)] == rungs_before
    ranked, completed = set(), 0  # a rung decision names the objectives that ranked once 2 ranked trials completed
    for ev in map(json.loads, (ws.job_dir(job_id) / "events.jsonl").read_text().splitlines()):
        if ev["e"] == "rung":
            assert ("by" in ev) == (completed >= 2)
            assert set(ev.get("by", ["auc"])) <= {"auc", "worst_class_recall", "prompt_params", "latency_ms"}
            ranked.add(ev["id"])
        elif ev["e"] == "tell" and ev["id"] in ranked and ev["set"]["status"] == "completed":
            completed += 1
    after = {t["trial_id"]: t for t in job_trials(ws, job_id)}
    for k, t in finished_before.items():  # (a front trial gains its re-evaluation's summary, nothing else)
        assert {**after[k], "repeats": None} == t
    main = [t for t in after.values() if not t.get("repeat_of") and t["status"] != "preempted"]
    assert len(main) == 8 and status["trials"]["finished"] == 8
    stopped = [t for t in main if t["status"] == "stopped"]
    completed = [t for t in main if t["status"] == "completed"]
    assert stopped and completed and status["trials"]["stopped"] == len(stopped)
    decided = {ev["id"]: ev for ev in rungs_after}
    for t in stopped:  # stopped at its rung, with that epoch's metrics, by a logged decision
        assert t["rung"] == 1 and t["epochs"] == 1 and len(t["history"]) == 1 and t["image_passes"] == 64
        assert t["metrics"]["auc"] == t["history"][0]["val_auc"] and decided[t["trial_id"]]["go"] is False
        assert t.get("ranked_by") == decided[t["trial_id"]].get("by")  # what its rung ranked on, when the rule ruled
        assert t["weights"] and Path(t["weights"]).exists()
    for t in completed:
        assert t["epochs"] == 3 and t["image_passes"] == 192
    # cost accounting: what the job trained, against every trial at full budget
    passes = status["image_passes"]
    assert passes["used"] == 64 * len(stopped) + 192 * len(completed) < passes["full_budget"] == 8 * 192

    # the front: completed trials only, each re-run with one more seed, ranked by the mean
    rep = status["repeats"]
    assert rep["done"] and rep["k"] == 1 and rep["planned"] >= len(rep["front_before"])
    front = job_front(ws, job_id)
    assert front and all(t["status"] == "completed" for t in front)
    assert sorted(t["trial_id"] for t in front) == sorted(rep["front_after"])
    repeats = [t for t in after.values() if t.get("repeat_of") and t["status"] == "completed"]
    assert set(rep["front_before"]) <= {t["repeat_of"] for t in repeats}  # every first-round member, once
    assert len(repeats) == len({t["repeat_of"] for t in repeats}) == rep["planned"]
    from promptsearch.search.loop import REPEAT_ROUNDS

    assert all(t.get("repeats") for t in front) or rep["round"] == REPEAT_ROUNDS  # newcomers re-run in rounds
    for t in (t for t in front if t.get("repeats")):
        r = t["repeats"]
        assert r["n"] == 2 and r["seeds"] == [0, 1] and r["trials"][0] == t["trial_id"]
        other = after[r["trials"][1]]
        assert other["seed"] == 1 and other["repeat_of"] == t["trial_id"]
        assert r["mean"]["auc"] == pytest.approx((t["metrics"]["auc"] + other["metrics"]["auc"]) / 2)
        assert r["sd"]["auc"] == pytest.approx(abs(t["metrics"]["auc"] - other["metrics"]["auc"]) / 2 ** 0.5)

    # MLflow: the stopped trial's status and rung, every trial's image passes
    client = MlflowClient(ws.tracking_uri)
    m = job_status(ws, job_id)["mlflow"]
    runs = client.search_runs([m["experiment_id"]], filter_string=f"tags.job_id = '{job_id}'", max_results=100)
    by_trial = {r.data.tags.get("trial_id"): r for r in runs if r.data.tags.get("kind") == "trial"}
    for t in stopped:
        run = by_trial[t["trial_id"]]
        assert run.data.tags["status"] == "stopped" and run.data.tags["rung"] == "1"
        assert run.data.tags.get("ranked_by") == (",".join(t["ranked_by"]) if t.get("ranked_by") else None)
        assert run.data.metrics["image_passes"] == 64
    assert by_trial[repeats[0]["trial_id"]].data.tags["repeat_of"] == repeats[0]["repeat_of"]

    # the export carries the seeds' mean and sd (and the card says so)
    folder, info = export_job(ws, job_id, out=tmp_path / "bundle")
    cfg = json.loads((folder / "config.json").read_text())
    assert info["trial_id"] in rep["front_after"] and cfg["repeats"]["seeds"] == [0, 1]
    assert cfg["repeats"]["mean"]["auc"] == pytest.approx(after[info["trial_id"]]["repeats"]["mean"]["auc"])
    assert "## Seed re-evaluation" in (folder / "MODEL_CARD.md").read_text()


# --- the loop's re-evaluation rounds, on chosen numbers ----------------------------------------------


def test_re_evaluation_ranks_by_the_mean_and_re_runs_trials_that_join_the_front(tmp_path, data_root,
                                                                                 mobilenet_weights):
    """The front's re-evaluation needs a seed's luck to run out on cue, which real training does
    not do on demand: these trial results are made up (SYNTHETIC), the loop, its log and its
    front are real. Trial A is best with seed 0 and poor with seed 1; once ranked by its mean, B
    (one seed) leads, so B is re-run in a second round; A moves off the front."""
    from promptsearch.jobs import job_from_dict
    from promptsearch.results import TrialResult
    from promptsearch.search.loop import FINISHED, SearchLoop
    from promptsearch.service.jobs import Workspace, job_front, job_status, job_trials, submit

    ws = Workspace(tmp_path / "ws")
    spec = _spec(data_root, mobilenet_weights, trials=3, front_repeats=1, scheduler=None,
                 objectives=["auc", "prompt_params"])
    job_id = submit(ws, job_from_dict(spec))
    auc = {}  # (ask order of the candidate, seed) -> val AUC

    def fit(loop, address):
        order = {}
        while (config := loop.ask()) is not FINISHED:
            key = tuple(config["genome"])
            order.setdefault(key, len(order))
            value = {(0, 0): 0.9, (0, 1): 0.5, (1, 0): 0.8, (1, 1): 0.78, (2, 0): 0.6}[(order[key], config["seed"])]
            auc[config["trial_id"]] = value
            t = loop.view.trials[config["trial_id"]]
            result = TrialResult(candidate=t["candidate"], status="completed", epochs=3, image_passes=192,
                                 metrics={"auc": value, "prompt_params": 1000.0, "worst_class_recall": 0.5})
            loop.tell(config["trial_id"], result)

    SearchLoop(ws, job_id, tracking=False).run(fit)
    st = job_status(ws, job_id)
    assert st["status"] == "completed" and st["trials"]["finished"] == 3
    trials = {t["trial_id"]: t for t in job_trials(ws, job_id)}
    a, b = "t0001", "t0002"
    rep = st["repeats"]
    assert rep["round"] == 2 and rep["front_before"] == [a] and rep["front_after"] == [b] and rep["moved_off"] == [a]
    assert [(t["repeat_of"], t["seed"]) for t in trials.values() if t.get("repeat_of")] == [(a, 1), (b, 1)]
    assert trials[a]["repeats"]["mean"]["auc"] == pytest.approx(0.7)
    assert trials[a]["repeats"]["sd"]["auc"] == pytest.approx(0.4 / 2 ** 0.5)
    assert trials[b]["repeats"]["mean"]["auc"] == pytest.approx(0.79)
    assert [t["trial_id"] for t in job_front(ws, job_id)] == [b]
    assert st["image_passes"] == {"used": 3 * 192, "full_budget": 3 * 192, "saved": 0.0}  # re-runs apart


@pytest.mark.parametrize("front_stopped", [False, True], ids=["stopped-off-front", "front_includes_stopped"])
def test_a_stopped_trial_joins_the_front_only_when_the_job_asks(tmp_path, data_root, mobilenet_weights, front_stopped):
    """SYNTHETIC results through the real loop: the second trial is stopped at rung 1 (ranked
    below the first there) although its rung metrics beat everything that completes."""
    from promptsearch.jobs import job_from_dict
    from promptsearch.results import TrialResult
    from promptsearch.search.loop import FINISHED, SearchLoop
    from promptsearch.service.jobs import Workspace, job_front, job_status, job_trials, submit

    ws = Workspace(tmp_path / "ws")
    spec = _spec(data_root, mobilenet_weights, trials=2, front_repeats=0, objectives=["auc", "prompt_params"],
                 scheduler={"rungs": [1], "eta": 3, "front_includes_stopped": front_stopped})
    job_id = submit(ws, job_from_dict(spec))
    plan = {"t0001": ([0.7, 0.8], 0.60), "t0002": ([0.65], None)}  # rung-1 AUC (then epochs 2, 3), final AUC

    def fit(loop, address):
        while (config := loop.ask()) is not FINISHED:
            tid = config["trial_id"]
            cand = loop.view.trials[tid]["candidate"]
            curve, final = plan[tid]
            rung = TrialResult(candidate=cand, status="stopped", rung=1, epochs=1, image_passes=64,
                               metrics={"auc": curve[0], "prompt_params": 1000.0})
            go = loop.epoch(tid, {"epoch": 1.0, "val_auc": curve[0]}, {}, rung)
            loop.tell(tid, rung if not go else TrialResult(
                candidate=cand, status="completed", epochs=3, image_passes=192,
                metrics={"auc": final, "prompt_params": 1000.0}))

    SearchLoop(ws, job_id, tracking=False).run(fit)
    trials = {t["trial_id"]: t for t in job_trials(ws, job_id)}
    assert trials["t0001"]["status"] == "completed" and trials["t0002"]["status"] == "stopped"
    assert trials["t0002"]["rung"] == 1 and trials["t0002"]["metrics"]["auc"] == 0.65
    front = [t["trial_id"] for t in job_front(ws, job_id)]
    assert front == (["t0002"] if front_stopped else ["t0001"])
    # every other view of the trials ranks them as the job's front does: the trials table (CLI, CSV)
    from promptsearch.service.analysis import space_of, trial_rows

    record = ws.read_job(job_id)
    _, rows = trial_rows(job_trials(ws, job_id), space_of(record["space"]),
                         job_from_dict(spec).objective_list, front_stopped=front_stopped)
    assert [r["trial_id"] for r in rows if r["on_front"]] == front
    st = job_status(ws, job_id)
    assert st["trials"]["stopped"] == 1 and st["image_passes"] == {"used": 256, "full_budget": 384,
                                                                    "saved": pytest.approx(1 / 3)}


def test_a_re_evaluation_whose_worker_keeps_dying_fails_after_three_deaths(tmp_path, data_root, mobilenet_weights):
    """SYNTHETIC results through the real loop: the dispatcher reports the re-run's worker process
    dead every time (the fault a real worker can be made to have only by killing it)."""
    from promptsearch.jobs import job_from_dict
    from promptsearch.results import TrialResult
    from promptsearch.search.loop import FINISHED, MAX_WORKER_DEATHS, WORKER_DEATH, SearchLoop
    from promptsearch.service.jobs import Workspace, job_status, job_trials, submit

    ws = Workspace(tmp_path / "ws")
    job_id = submit(ws, job_from_dict(_spec(data_root, mobilenet_weights, trials=1, front_repeats=1, scheduler=None,
                                            objectives=["auc", "prompt_params"])))

    def fit(loop, address):
        while (config := loop.ask()) is not FINISHED:
            t = loop.view.trials[config["trial_id"]]
            if t.get("repeat_of"):
                loop.tell(config["trial_id"], None, error=f"{WORKER_DEATH}: killed")
            else:
                loop.tell(config["trial_id"], TrialResult(candidate=t["candidate"], status="completed", epochs=3,
                                                          metrics={"auc": 0.8, "prompt_params": 1000.0}))

    SearchLoop(ws, job_id, tracking=False).run(fit)
    st = job_status(ws, job_id)
    reruns = [t for t in job_trials(ws, job_id) if t.get("repeat_of")]
    assert [t["status"] for t in reruns] == ["preempted"] * (MAX_WORKER_DEATHS - 1) + ["failed"]
    assert "died in 3 runs" in reruns[-1]["reason"]
    assert st["status"] == "completed" and st["repeats"]["done"]


# --- ranking only on what a rung foretells ----------------------------------------------------------------


def test_informative_keeps_the_objectives_a_rung_foretells():
    from promptsearch.rungs import informative

    s = Scheduler(rungs=[1], informative_rho=0.5, informative_after=3)
    at = [[0.5, 0.1, 0.3], [0.6, 0.2, 0.3], [0.7, 0.3, 0.3]]  # auc, recall, a constant cost
    end = [[0.55, 0.9, 0.3], [0.65, 0.5, 0.3], [0.75, 0.1, 0.3]]  # auc foretold (ρ 1), recall reversed (ρ -1)
    assert list(informative(at, end, s)) == [True, False, True]  # the cost is equal at the rung and the end: ρ 1
    assert informative(at[:2], end[:2], s) is None  # fewer than informative_after completed: every objective
    assert informative(at, end, Scheduler(rungs=[1])) is None  # the rule is off by default
    noisy = [[0.5, 0.1, 0.3], [0.6, 0.2, 0.5], [0.7, 0.3, 0.4]]
    flat = [[0.5, 0.9, 0.1], [0.5, 0.5, 0.2], [0.5, 0.1, 0.3]]  # ρ 0 (constant end), -1, 0.5: the best still ranks
    assert list(informative(noisy, flat, Scheduler(rungs=[1], informative_rho=0.9, informative_after=3))) == \
        [False, False, True]
    # a trial non-dominated only through the unforetold objective goes on when every objective ranks, not otherwise
    recorded, point = [row[:2] for row in at], [0.4, 0.95]
    assert promote(recorded, point, s) and not promote(recorded, point, s, columns=[True, False])


@pytest.mark.parametrize("rho", [None, 0.5], ids=["every-objective", "informative_rho"])
def test_the_loop_ranks_a_rung_on_what_it_foretold_for_the_job_s_completed_trials(tmp_path, data_root,
                                                                                   mobilenet_weights, rho):
    """SYNTHETIC results through the real loop: three trials complete, their recall at rung 1
    ranking their final recall backwards; the fourth is ahead at the rung on recall alone."""
    from promptsearch.jobs import job_from_dict
    from promptsearch.results import TrialResult
    from promptsearch.search.loop import FINISHED, SearchLoop
    from promptsearch.service.jobs import Workspace, job_trials, submit

    ws = Workspace(tmp_path / "ws")
    spec = _spec(data_root, mobilenet_weights, trials=4, front_repeats=0, objectives=["auc", "worst_class_recall"],
                 scheduler={"rungs": [1], "eta": 3, "informative_rho": rho, "informative_after": 3})
    job_id = submit(ws, job_from_dict(spec))
    plan = {"t0001": ((0.5, 0.1), (0.55, 0.9)), "t0002": ((0.6, 0.2), (0.65, 0.5)),  # (rung 1, final): auc, recall
            "t0003": ((0.7, 0.3), (0.75, 0.1)), "t0004": ((0.4, 0.95), (0.45, 0.95))}

    def fit(loop, address):
        while (config := loop.ask()) is not FINISHED:
            tid = config["trial_id"]
            cand = loop.view.trials[tid]["candidate"]
            (ra, rr), (fa, fr) = plan[tid]
            rung = TrialResult(candidate=cand, status="stopped", rung=1, epochs=1, image_passes=64,
                               metrics={"auc": ra, "worst_class_recall": rr})
            go = loop.epoch(tid, {"epoch": 1.0, "val_auc": ra, "val_worst_class_recall": rr}, {}, rung)
            loop.tell(tid, rung if not go else TrialResult(candidate=cand, status="completed", epochs=3,
                                                           image_passes=192,
                                                           metrics={"auc": fa, "worst_class_recall": fr}))

    SearchLoop(ws, job_id, tracking=False).run(fit)
    status = {t["trial_id"]: t["status"] for t in job_trials(ws, job_id)}
    assert [status[k] for k in ("t0001", "t0002", "t0003")] == ["completed"] * 3  # each led its rung when ranked
    decided = {ev["id"]: ev for ev in _events(ws, job_id, "rung")}
    assert all("by" not in decided[k] for k in ("t0001", "t0002", "t0003"))  # fewer than 3 had completed
    if rho is None:  # on recall it is non-dominated, with the largest contribution: it goes on
        assert status["t0004"] == "completed" and "by" not in decided["t0004"]
    else:  # recall at rung 1 foretold the end backwards (ρ -1): ranked on AUC alone, it is last
        assert status["t0004"] == "stopped" and decided["t0004"]["by"] == ["auc"] and decided["t0004"]["go"] is False
    # what the rung ranked on reaches the trial's record (the API, `trials` and the dashboard show it)
    records = {t["trial_id"]: t for t in job_trials(ws, job_id)}
    assert records["t0004"].get("ranked_by") == (None if rho is None else ["auc"])
    assert all(records[k].get("ranked_by") is None for k in ("t0001", "t0002", "t0003"))  # only a stop records it
