"""A job's state as an event log, without Ray: the log and its mirror, torn last lines, strategy
snapshots, the incremental Pareto front, the read paths, corrupt files and their repair, worker
deaths, a cancel that arrives before Ray is up.

    PROMPTSEARCH_DATA_ROOT=../shared/data/medmnist python -m pytest tests/test_state.py -q

The search loop here is the real one, driven by hand the way the Tune adapter drives it (ask,
epoch, tell), with results made up for the purpose: what is under test is what the job records.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from promptsearch.cli import app
from promptsearch.jobs import job_from_dict
from promptsearch.objectives import DEFAULT_OBJECTIVES, hypervolume, pareto_front
from promptsearch.results import TrialResult
from promptsearch.search import state as state_mod
from promptsearch.search.front import Front
from promptsearch.search.loop import MAX_WORKER_DEATHS, SearchLoop
from promptsearch.search.state import CorruptJob
from promptsearch.search.workspace import Workspace, job_lock, request_cancel
from promptsearch.service.jobs import cancel, job_front, job_status, job_trials, list_jobs, repair, run_job, submit

REPO = Path(__file__).resolve().parent.parent


def _spec(data_root, weights, **kw):
    d = dict(name="st", space="pixel", dataset="breastmnist", data_root=str(data_root),
             backbone={"name": "torchvision:mobilenet_v2", "image_size": 32, "weights": str(weights)},
             budget={"epochs": 2}, strategy="evolution", trials=40, concurrency=2, seed=0)
    d.update(kw)
    return job_from_dict(d)


def _metrics(r: random.Random) -> dict[str, float]:
    return {"auc": round(r.random(), 2), "worst_class_recall": round(r.random(), 2),
            "prompt_params": float(10 ** r.randint(1, 5)), "latency_ms": round(0.2 + 5 * r.random(), 1)}


def _drive(loop: SearchLoop, n: int, r: random.Random, leave_running: int = 0) -> None:
    """``n`` trials through ask, two epochs and tell (every 7th fails), then ``leave_running`` asked only."""
    for i in range(n):
        config = loop.ask(f"tune-{i}")
        tid = config["trial_id"]
        for e in (1, 2):
            loop.epoch(tid, {"epoch": float(e), "train_loss": 1.0 / e, "val_auc": 0.5 + 0.1 * e}, {"node_id": "n1", "pid": 7})
        cand = loop.view.trials[tid]["candidate"]
        if i % 7 == 3:
            loop.tell(tid, TrialResult.failed(cand, "TrialFailed: made-up failure"))
        else:
            loop.tell(tid, TrialResult(candidate=cand, status="completed", metrics=_metrics(r),
                                       test_metrics={"auc": 0.6}))
    for i in range(leave_running):
        loop.ask(f"tune-run-{i}")


@pytest.fixture(scope="module")
def template(tmp_path_factory, data_root, mobilenet_weights) -> tuple[Path, str]:
    """A workspace with one job: 25 trials told (some failed), 2 in flight, its coordinator gone."""
    root = tmp_path_factory.mktemp("template")
    ws = Workspace(root)
    job_id = submit(ws, _spec(data_root, mobilenet_weights))
    loop = SearchLoop(ws, job_id, tracking=False)
    _drive(loop, 25, random.Random(0), leave_running=2)
    loop.writer.close()
    return root, job_id


@pytest.fixture
def job(template, tmp_path) -> tuple[Workspace, str]:
    root, job_id = template
    shutil.copytree(root, tmp_path / "ws")
    return Workspace(tmp_path / "ws"), job_id


# --- the front --------------------------------------------------------------------------------------------
def test_incremental_front_equals_the_front_of_all_trials():
    r = random.Random(3)
    records = []
    for i in range(400):  # coarse values: many ties and duplicates
        m = {"auc": r.choice([0.5, 0.6, 0.7, 0.8]), "worst_class_recall": r.choice([0.2, 0.5, 0.9]),
             "prompt_params": float(r.choice([10, 100, 1000])), "latency_ms": r.choice([1.0, 2.0])}
        records.append({"trial_id": f"t{i:04d}", "index": i + 1, "status": "failed" if i % 11 == 0 else "completed",
                        "metrics": m})
    front = Front(DEFAULT_OBJECTIVES)
    for k, rec in enumerate(records, 1):
        front.add(rec)
        if k % 50 == 0:
            expect = [records[i]["trial_id"] for i in pareto_front(records[:k])]
            assert [t["trial_id"] for t in front.records()] == expect
            assert front.hypervolume == pytest.approx(hypervolume(records[:k]), abs=1e-12)
    assert front.recomputes < 400 - 36  # dominated and failed trials never recompute the hypervolume
    batched = Front(DEFAULT_OBJECTIVES)  # a resume's way: offers sorted in by moocore, in batches
    batched.BATCH = 64
    batched.extend(records)
    assert [t["trial_id"] for t in batched.records()] == [t["trial_id"] for t in front.records()]
    assert batched.hypervolume == pytest.approx(front.hypervolume, abs=1e-12)


# --- the log ----------------------------------------------------------------------------------------------
def test_new_jobs_write_an_event_log_whose_cost_per_trial_does_not_grow(tmp_path, data_root, mobilenet_weights):
    ws = Workspace(tmp_path)
    job_id = submit(ws, _spec(data_root, mobilenet_weights, trials=300))
    d = ws.job_dir(job_id)
    assert (d / "events.jsonl").is_file() and (d / "events.bak.jsonl").is_file() and not (d / "state.json").exists()
    loop = SearchLoop(ws, job_id, tracking=False)
    r = random.Random(1)
    logged, written = [], []
    for _ in range(6):
        size, before = (d / "events.jsonl").stat().st_size, loop.writer.bytes_written
        _drive(loop, 40, r)
        logged.append(((d / "events.jsonl").stat().st_size - size) / 40)
        written.append((loop.writer.bytes_written - before) / 40)
    # the log grows by the same bytes per trial at 240 trials as at 40; everything written per trial
    # (log, mirror, summary, front when it changes, curve) does not grow either
    assert max(logged) < 1.1 * min(logged), logged
    assert written[-1] < 1.5 * written[1], written
    assert (d / "summary.json").stat().st_size < 20_000  # no trial history in the summary
    lines = (d / "events.jsonl").read_bytes().splitlines()
    assert lines == (d / "events.bak.jsonl").read_bytes().splitlines()
    assert [json.loads(x)["seq"] for x in lines] == list(range(len(lines)))  # 1 header + 240 * (ask, 2 epochs, tell)
    assert len(lines) == 1 + 240 * 4


def test_a_torn_last_line_is_dropped_and_the_trial_rerun(job):
    ws, job_id = job
    d = ws.job_dir(job_id)
    before = {t["trial_id"]: t for t in job_trials(ws, job_id)}
    data = (d / "events.jsonl").read_bytes()
    torn = data + b'{"seq": 99999, "t": 1, "e": "tell", "id": "t0026", "se'  # a tell cut short by kill -9
    (d / "events.jsonl").write_bytes(torn)
    s = job_status(ws, job_id)  # readers drop it: the trial is still running
    assert s["status"] != "corrupt" and s["trials"]["running"] == 2 and s["trials"]["finished"] == 25
    assert {t["trial_id"]: t for t in job_trials(ws, job_id)} == before
    loop = SearchLoop(ws, job_id, tracking=False)  # the next writer cuts it off, keeping it aside
    assert (d / "events.jsonl").read_bytes() == data and b"t0026" in (d / "events.jsonl.torn").read_bytes()
    loop.run(lambda lp, address: None)  # a run that starts no trial: the in-flight ones are preempted, re-queued
    after = {t["trial_id"]: t for t in job_trials(ws, job_id)}
    assert all(after[k] == t for k, t in before.items() if t["status"] in ("completed", "failed"))
    assert [after[k]["status"] for k in ("t0026", "t0027")] == ["preempted", "preempted"]
    again = SearchLoop(ws, job_id, tracking=False)
    assert [again.ask(f"x{i}")["trial_id"] for i in range(2)] == ["t0028", "t0029"]
    reruns = {t["requeued_from"]: t for t in job_trials(ws, job_id) if t["requeued_from"]}
    assert sorted(reruns) == ["t0026", "t0027"]
    assert all(reruns[k]["candidate"] == after[k]["candidate"] for k in reruns)


def test_a_mirror_that_lags_is_caught_up(job):
    ws, job_id = job
    d = ws.job_dir(job_id)
    lines = (d / "events.jsonl").read_bytes().splitlines(keepends=True)
    (d / "events.bak.jsonl").write_bytes(b"".join(lines[:-3]) + lines[-3][:10])  # killed between the two writes
    SearchLoop(ws, job_id, tracking=False).writer.close()
    assert (d / "events.bak.jsonl").read_bytes() == (d / "events.jsonl").read_bytes()


# --- the strategy's state: snapshots without history -------------------------------------------------------
def _restored_equals(ws: Workspace, job_id: str, state: dict, asks: list) -> None:
    again = SearchLoop(ws, job_id, tracking=False)
    assert again.strategy.state_dict() == state
    assert [again.strategy.ask().genome for _ in range(4)] == asks


# handover: led by TPE, handing over after 6 asks: the two snapshots restored from are taken after the
# hand-over (the follower leading), the replay of the whole log crosses it
SNAPSHOT_OPTIONS = {"handover": {"first": "optuna-tpe", "after": 6}}


@pytest.mark.parametrize("strategy", ["random", "evolution", "rl", "optuna-tpe", "optuna-nsga2", "handover"])
def test_snapshots_restore_the_strategy_exactly(tmp_path, data_root, mobilenet_weights, monkeypatch, strategy):
    monkeypatch.setattr(state_mod, "SNAPSHOT_EVENTS", 15)  # a snapshot every ~4 trials
    ws = Workspace(tmp_path)
    job_id = submit(ws, _spec(data_root, mobilenet_weights, strategy=strategy, trials=30,
                              strategy_options=SNAPSHOT_OPTIONS.get(strategy, {})))
    loop = SearchLoop(ws, job_id, tracking=False)
    _drive(loop, 14, random.Random(2), leave_running=1)
    state = loop.strategy.state_dict()
    if strategy == "handover":
        assert loop.strategy.leader is loop.strategy.then  # past the hand-over
    asks = [loop.strategy.ask().genome for _ in range(4)]  # what the live strategy proposes next
    d = ws.job_dir(job_id)
    snap = json.loads((d / "snapshot.json").read_text())
    assert 0 < snap["seq"] < loop.view.seq and "asked" not in snap["strategy"]  # no history: the log has it
    assert (d / "snapshot.prev.json").is_file()
    _restored_equals(ws, job_id, state, asks)
    (d / "snapshot.json").write_bytes(os.urandom(64))  # damaged: the one before it
    _restored_equals(ws, job_id, state, asks)
    (d / "snapshot.prev.json").write_text("{}")  # both: the whole log through a fresh strategy
    _restored_equals(ws, job_id, state, asks)


# --- read paths --------------------------------------------------------------------------------------------
def test_reads_use_the_small_files_and_import_no_torch_or_numpy(job):
    ws, job_id = job
    code = ("import sys; from promptsearch.service.jobs import list_jobs, job_status, job_front; "
            f"ws = {str(ws.root)!r}; (j,) = list_jobs(ws); s = job_status(ws, {job_id!r}); f = job_front(ws, {job_id!r}); "
            "print(j['trials']['finished'], len(f), [m for m in ('torch', 'numpy', 'ray', 'mlflow') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    finished, n_front, heavy = out.stdout.split(" ", 2)
    assert finished == "25" and int(n_front) >= 1 and heavy.strip() == "[]"
    trials = job_trials(ws, job_id)
    assert [t["trial_id"] for t in job_front(ws, job_id)] == [trials[i]["trial_id"] for i in pareto_front(trials)]
    s = job_status(ws, job_id)
    assert s["hypervolume"] == pytest.approx(hypervolume(trials))
    assert s["best"]["auc"] == max(t["metrics"]["auc"] for t in trials if t["status"] == "completed")


@pytest.mark.parametrize("name", ["summary.json", "front.json", "hypervolume.jsonl", "snapshot.json"])
def test_damaged_derived_files_change_nothing_a_reader_sees(job, name):
    ws, job_id = job
    from promptsearch.service.views import pareto_view

    before = (job_status(ws, job_id), job_front(ws, job_id), pareto_view(ws.root, job_id))
    (ws.job_dir(job_id) / name).write_bytes(os.urandom(300))
    after = (job_status(ws, job_id), job_front(ws, job_id), pareto_view(ws.root, job_id))
    assert after[0]["status"] != "corrupt"
    assert after[0]["trials"] == before[0]["trials"] and after[1] == before[1] and after[2] == before[2]


def test_pareto_cli_prints_no_test_column(job):
    ws, job_id = job
    r = CliRunner().invoke(app, ["pareto", job_id, "--workspace", str(ws.root)])
    assert r.exit_code == 0 and "auc (max)" in r.stdout and "test" not in r.stdout.lower(), r.output
    r = CliRunner().invoke(app, ["pareto", job_id, "--json", "--workspace", str(ws.root)])
    assert r.exit_code == 0 and json.loads(r.stdout) and all("test_metrics" not in t for t in json.loads(r.stdout))


@pytest.mark.parametrize("width", [160, 80, 40])
def test_the_front_prints_every_trial_and_folds_architectures_to_the_width(job, width):
    from promptsearch.commands.jobs import _arch, front_text
    from promptsearch.service.jobs import front_records

    ws, job_id = job
    front, _, static = front_records(ws.store(job_id))
    lines = front_text(job_id, front, static["objectives"], width).splitlines()
    assert lines[0] == f"Pareto front of {job_id} ({len(front)} trial(s))" and front
    columns = len(next(line for line in lines if line.startswith("-")))  # the rule under the header
    assert all(len(line) <= max(width, columns) for line in lines)
    ids = [r["trial_id"] for r in front]
    starts = [i for i, line in enumerate(lines) if line.split(" ", 1)[0] in ids]
    assert [lines[i].split()[0] for i in starts] == ids  # every trial once, in the front's order
    for n, r in enumerate(front):
        block = lines[starts[n]: starts[n + 1] if n + 1 < len(starts) else len(lines)]
        assert all(line.startswith(" ") for line in block[1:])  # continuation lines are indented
        squeezed = "".join(" ".join(block).split())  # folding only breaks at (or inside) words
        assert squeezed.endswith("".join(_arch(r["candidate"]).split()))


# --- corrupt files ---------------------------------------------------------------------------------------
DAMAGE = {
    "random bytes": lambda p: p.write_bytes(os.urandom(2000)),
    "{}": lambda p: p.write_text("{}"),
    "empty": lambda p: p.write_bytes(b""),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "missing": lambda p: p.unlink(),
}


@pytest.mark.parametrize("file", ["events.jsonl", "job.json"])
@pytest.mark.parametrize("how", list(DAMAGE))
def test_one_corrupt_job_never_breaks_the_others_and_repair_restores_it(job, data_root, mobilenet_weights, file, how):
    ws, job_id = job
    other = submit(ws, _spec(data_root, mobilenet_weights, name="fine"))
    before = job_trials(ws, job_id)
    DAMAGE[how](ws.job_dir(job_id) / file)
    rows = {j["job_id"]: j for j in list_jobs(ws)}
    assert rows[other]["status"] == "queued"  # the others list as before
    bad = rows[job_id]
    assert bad["status"] == "corrupt" and bad["corrupt"]["file"] == file and bad["corrupt"]["reason"]
    assert "promptsearch repair" in bad["message"]
    r = CliRunner().invoke(app, ["jobs", "--workspace", str(ws.root)])
    assert r.exit_code == 0 and other in r.stdout and "corrupt" in r.output
    with pytest.raises(CorruptJob, match=rf"{file}.*promptsearch repair"):
        run_job(ws, job_id)  # = promptsearch resume: says what is wrong and what to do
    r = CliRunner().invoke(app, ["resume", job_id, "--workspace", str(ws.root)])
    assert r.exit_code == 2 and "promptsearch repair" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["repair", job_id, "--workspace", str(ws.root)])
    assert r.exit_code == 0, r.output
    assert job_trials(ws, job_id) == before  # nothing finished lost, nothing duplicated
    assert job_status(ws, job_id)["trials"]["finished"] == 25


def test_an_unknown_status_in_the_log_is_corrupt_and_repaired_from_the_mirror(job):
    ws, job_id = job
    d = ws.job_dir(job_id)
    before = job_trials(ws, job_id)
    lines = (d / "events.jsonl").read_text().splitlines(keepends=True)
    seq = json.loads(lines[5])["seq"]
    bad = json.dumps({"seq": seq, "t": 0, "e": "job", "set": {"status": "exploded"}})
    lines[5] = bad + " " * (len(lines[5]) - len(bad) - 1) + "\n"  # same length: only its content is wrong
    (d / "events.jsonl").write_text("".join(lines))
    with pytest.raises(CorruptJob, match="events.jsonl: line 6: unknown job status 'exploded'.*events.bak.jsonl is intact"):
        job_trials(ws, job_id)
    done = repair(ws, job_id)
    assert done[0] == f"events.jsonl restored ({len(lines)} events, none lost)", done
    assert job_trials(ws, job_id) == before and job_status(ws, job_id)["status"] == "queued"


def test_both_copies_damaged_keeps_what_survives_and_says_what_was_lost(job):
    ws, job_id = job
    d = ws.job_dir(job_id)
    lines = (d / "events.jsonl").read_bytes().splitlines(keepends=True)
    last_tell = max(i for i, x in enumerate(lines) if b'"e":"tell"' in x)
    (d / "events.jsonl").write_bytes(b"".join(lines[:last_tell]) + b"garbage\n" + b"".join(lines[last_tell + 1:]))
    (d / "events.bak.jsonl").write_bytes(b"".join(lines[:last_tell]))  # the mirror lost everything after it
    done = repair(ws, job_id)
    assert any(x.startswith("lost: 1 event") for x in done), done
    s = job_status(ws, job_id)  # the trial whose end was lost is running again: a resume re-runs it
    assert s["trials"]["finished"] == 24 and s["trials"]["running"] == 3


def test_a_corrupt_old_format_state_is_listed_and_explained(tmp_path):
    fixture = REPO / "tests" / "fixtures" / "old_workspace"
    shutil.copytree(fixture, tmp_path / "ws")
    ws = Workspace(tmp_path / "ws")
    (job_id,) = ws.job_ids()
    (ws.job_dir(job_id) / "state.json").write_text('{"version": 1, "job_id": "x", "status": "exploded"')
    (bad,) = list_jobs(ws)
    assert bad["status"] == "corrupt" and bad["corrupt"]["file"] == "state.json"
    with pytest.raises(CorruptJob, match="no second copy"):
        repair(ws, job_id)


# --- trials whose worker died; cancels before Ray is up --------------------------------------------------------
def test_a_dead_worker_preempts_and_reruns_the_trial_a_raising_trial_fails(tmp_path, data_root, mobilenet_weights):
    ws = Workspace(tmp_path)
    job_id = submit(ws, _spec(data_root, mobilenet_weights, trials=10))
    loop = SearchLoop(ws, job_id, tracking=False)
    first = loop.ask("a")
    genome = first["genome"]
    loop.tell(first["trial_id"], None, error="worker process died: exit code 13")
    t = {x["trial_id"]: x for x in job_trials(ws, job_id)}[first["trial_id"]]
    assert t["status"] == "preempted" and t["reason"].startswith("worker process died")
    assert loop.failed == 0 and loop.finished == 0  # infrastructure: no max_failures spent
    for k in range(1, MAX_WORKER_DEATHS):  # the same candidate again, until it died MAX_WORKER_DEATHS times
        again = loop.ask(f"b{k}")
        assert again["genome"] == genome
        loop.tell(again["trial_id"], None, error="worker process died: killed (out of memory)")
    last = job_trials(ws, job_id)[-1]
    assert last["status"] == "failed" and f"died in {MAX_WORKER_DEATHS} runs" in last["reason"]
    raised = loop.ask("c")
    loop.tell(raised["trial_id"], None, error="RuntimeError: injected fault")
    assert job_trials(ws, job_id)[-1]["status"] == "failed" and loop.failed == 2


def test_a_cancel_before_ray_is_up_stops_the_job_at_once(tmp_path, data_root, mobilenet_weights):
    import ray

    from promptsearch.dispatch.fit import fit

    ws = Workspace(tmp_path)
    job_id = submit(ws, _spec(data_root, mobilenet_weights, trials=4))
    with job_lock(ws, job_id):  # a coordinator took the job (its status still queued) ...
        started = time.time()
        loop = SearchLoop(ws, job_id, started=started, tracking=False)
        request_cancel(ws, job_id)  # ... and a cancel arrives before it has started Ray
        assert cancel(ws, job_id)["status"] == "cancelling"  # says so at once
        t0 = time.monotonic()
        loop.run(fit)
        assert time.monotonic() - t0 < 10 and not ray.is_initialized()  # no Ray started, no trial run
    s = job_status(ws, job_id)
    assert s["status"] == "cancelled" and s["trials"]["finished"] == 0


def test_the_status_says_cancelling_until_the_coordinator_stopped(job):
    ws, job_id = job
    store = ws.store(job_id)
    from promptsearch.search.state import JobWriter

    w = JobWriter(store, store.static())
    w.open()
    w.emit("job", set={"status": "running", "attempts": 1, "coordinator": {"cancel_since": time.time() - 1}})
    with job_lock(ws, job_id):
        assert job_status(ws, job_id)["status"] == "running"
        request_cancel(ws, job_id)
        assert job_status(ws, job_id)["status"] == "cancelling"
        w.emit("job", set={"status": "cancelled"})
        w.close()
        assert job_status(ws, job_id)["status"] == "cancelled"


def test_hypervolume_of_the_log_matches_the_records(job):
    ws, job_id = job
    full = ws.store(job_id).read_full()
    trials = list(full.trials.values())
    assert [p[2] for p in full.curve] == [t["trial_id"] for t in sorted(
        (t for t in trials if t["status"] in ("completed", "failed")), key=lambda t: t["finished_at"])]
    assert full.curve[-1][1] == pytest.approx(hypervolume(trials)) and np.isfinite(full.curve[-1][1])
