"""Job files and the workspace, without Ray: validation errors name file, line and field; the
job record on disk; queued-job lifecycle; the CLI's error paths.

    PROMPTSEARCH_DATA_ROOT=../shared/data/medmnist python -m pytest tests/test_jobs.py -q
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from promptsearch.cli import app
from promptsearch.service.jobs import cancel, job_status, job_trials, list_jobs, run_job, submit
from promptsearch.search.state import JobWriter
from promptsearch.search.workspace import Workspace, coordinator_alive
from promptsearch.search.workspace import job_lock as _job_lock
from promptsearch.jobs import JobError, JobSpec, load_job, parse_job, parse_override, resolve_paths, with_overrides

REPO = Path(__file__).resolve().parent.parent


def _job_text(data_root, weights, **extra) -> str:
    """A job file; a field of ``extra`` replaces the base line or, if new, starts at line 10."""
    base = {"name": "unit", "space": "pixel", "dataset": "breastmnist", "data_root": data_root,
            "backbone": f"\n  name: torchvision:mobilenet_v2\n  image_size: 32\n  weights: {weights}",
            "budget": "{epochs: 1, max_train_samples: 64}"}
    new = {k: v for k, v in extra.items() if k not in base}
    base.update({k: v for k, v in extra.items() if k in base})
    fields = {**base, **new, **{k: v for k, v in {"trials": 6, "concurrency": 2}.items() if k not in extra}}
    return "".join(f"{k}: {v}\n" for k, v in fields.items()).replace(": \n", ":\n")


def test_default_job_file_loads_with_repo_relative_paths(monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("PROMPTSEARCH_DATA_ROOT", raising=False)
    monkeypatch.delenv("PROMPTSEARCH_BACKBONE_WEIGHTS", raising=False)
    spec = load_job("jobs/breast_pixel.yaml")
    assert spec.data_root == "../shared/data/medmnist"
    assert spec.backbone.weights == "../shared/weights/mobilenet_v2-b0353104.pth"
    assert 8 <= spec.trials <= 12 and spec.concurrency == 2 and spec.strategy == "random"
    resolved = resolve_paths(spec)
    assert Path(resolved.data_root).is_absolute() and Path(resolved.data_root, "breastmnist.npz").exists()
    assert Path(resolved.backbone.weights).is_file()


def test_env_defaults_in_job_files(monkeypatch, data_root, mobilenet_weights):
    monkeypatch.setenv("PS_TEST_ROOT", str(data_root))
    text = _job_text("${PS_TEST_ROOT}", "${PS_TEST_NOT_SET:-" + str(mobilenet_weights) + "}")
    spec = parse_job(text, "env.yaml")
    assert spec.data_root == str(data_root) and spec.backbone.weights == str(mobilenet_weights)
    with pytest.raises(JobError, match=r"env\.yaml:4: data_root: environment variable PS_NOPE is not set"):
        parse_job(_job_text("${PS_NOPE}", mobilenet_weights), "env.yaml")


@pytest.mark.parametrize("extra, expected", [
    ({"trials": 0}, r"bad\.yaml:10: trials: Input should be greater than or equal to 1"),
    ({"strategy": "simulated_annealing"}, r"bad\.yaml:10: strategy: unknown strategy 'simulated_annealing'; known: .*random"),
    ({"colour": "blue"}, r"bad\.yaml:10: colour: unknown key 'colour'"),
    ({"resources": "{cpu: 1, gpu: 1.5}"}, r"bad\.yaml:10: resources\.gpu: Ray takes a fraction below 1 or a whole number"),
    ({"objectives": "[auc, happiness]"}, r"bad\.yaml:10: objectives: .*'happiness' is not a known metric"),
    ({"space": "no_such_space"}, r"bad\.yaml:2: space: space file 'no_such_space' not found"),
    ({"fix": "{depth: deep}"}, r"bad\.yaml:11: fix\.depth: space 'pixel' has no decision 'depth'"),
    ({"fix": "{lr: 5.0}"}, r"bad\.yaml:10: fix: cannot fix lr=5\.0"),
    ({"strategy_options": "{temperature: 3}"}, r"bad\.yaml:10: strategy_options: strategy 'random' rejects its options"),
])
def test_bad_fields_are_named_with_their_line(extra, expected, data_root, mobilenet_weights):
    text = _job_text(data_root, mobilenet_weights, **extra)
    if "fix" in extra and "depth" in extra["fix"]:  # a block mapping, so the key has its own line
        text = text.replace("fix: {depth: deep}", "fix:\n  depth: deep")
    with pytest.raises(JobError, match=expected):
        parse_job(text, "bad.yaml")


def test_missing_paths_and_bad_yaml(tmp_path, data_root, mobilenet_weights):
    with pytest.raises(JobError, match=r"j\.yaml:4: data_root: folder '/nope' not found"):
        parse_job(_job_text("/nope", mobilenet_weights), "j.yaml")
    with pytest.raises(JobError, match=r"j\.yaml:8: backbone\.weights: file '/nope\.pth' not found"):
        parse_job(_job_text(data_root, "/nope.pth"), "j.yaml")
    with pytest.raises(JobError, match=r"j\.yaml:2: not valid YAML"):
        parse_job("name: x\n  bad: [\n", "j.yaml")
    with pytest.raises(JobError, match="not found"):
        load_job(tmp_path / "missing.yaml")


def test_overrides(data_root, mobilenet_weights):
    spec = parse_job(_job_text(data_root, mobilenet_weights), "j.yaml")
    assert parse_override("budget.epochs=2") == ("budget.epochs", 2)
    assert parse_override("resources.gpu=0.5") == ("resources.gpu", 0.5)
    new = with_overrides(spec, dict([parse_override("budget.epochs=2"), ("trials", 3), ("seed", None)]))
    assert new.budget.epochs == 2 and new.trials == 3 and new.seed == spec.seed
    assert new.budget.max_train_samples == 64  # untouched fields keep their values
    with pytest.raises(JobError, match=r"override: budget\.epochs: Input should be greater than or equal to 1"):
        with_overrides(spec, {"budget.epochs": 0})
    with pytest.raises(JobError, match="write FIELD=VALUE"):
        parse_override("epochs")


def test_failure_limit_default():
    assert JobSpec(trials=4).failure_limit == 3
    assert JobSpec(trials=20).failure_limit == 10
    assert JobSpec(trials=20, max_failures=2).failure_limit == 2


def test_submit_status_cancel_of_a_queued_job(tmp_path, data_root, mobilenet_weights):
    ws = Workspace(tmp_path / "ws")
    spec = parse_job(_job_text(data_root, mobilenet_weights), "j.yaml")
    job_id = submit(ws, spec, job_file="# original text\n")
    assert job_id.startswith("unit-") and ws.job_ids() == [job_id]
    assert (ws.job_dir(job_id) / "job.yaml").read_text() == "# original text\n"
    record = ws.read_job(job_id)
    assert record["space_name"] == "pixel" and record["space"]["name"] == "pixel"
    assert Path(record["spec"]["data_root"]).is_absolute()
    s = job_status(ws, job_id)
    assert s["status"] == "queued" and not s["interrupted"]
    assert s["trials"] == {"requested": 6, "finished": 0, "completed": 0, "failed": 0, "stopped": 0, "preempted": 0, "running": 0}
    assert [j["job_id"] for j in list_jobs(ws)] == [job_id] and job_trials(ws, job_id) == []
    assert ws.resolve(job_id[:-3]) == job_id  # a unique prefix
    with pytest.raises(JobError, match="no job 'nope'"):
        ws.resolve("nope")
    assert cancel(ws, job_id)["status"] == "cancelled"
    with pytest.raises(JobError, match="was cancelled"):
        run_job(ws, job_id)


def test_job_scalarization_reaches_the_strategy(tmp_path, data_root, mobilenet_weights):
    """The job's scalarization weights make the strategy's reward (rl learns from that one number)."""
    from promptsearch.search.loop import SearchLoop

    ws = Workspace(tmp_path)
    text = _job_text(data_root, mobilenet_weights, strategy="rl",
                     scalarization="{groups: {accuracy: 0.0, efficiency: 1.0, safety: 0.0}}")
    loop = SearchLoop(ws, submit(ws, parse_job(text, "j.yaml")))
    assert loop.strategy.scalarization.groups == {"accuracy": 0.0, "efficiency": 1.0, "safety": 0.0}
    genome = loop.strategy.ask().genome
    metrics = {"auc": 0.95, "worst_class_recall": 0.9, "prompt_params": 1e6, "latency_ms": 50.0}
    reward = loop.strategy.observation(genome, {"status": "completed", "metrics": metrics}).reward
    default = SearchLoop(ws, submit(ws, parse_job(_job_text(data_root, mobilenet_weights, strategy="rl"), "j.yaml")))
    assert reward < default.strategy.observation(genome, {"status": "completed", "metrics": metrics}).reward
    # an option of the strategy's own wins over the job's field
    text = _job_text(data_root, mobilenet_weights, strategy="rl", scalarization="{groups: {accuracy: 1.0}}",
                     strategy_options="{scalarization: {groups: {safety: 1.0}}}")
    assert SearchLoop(ws, submit(ws, parse_job(text, "j.yaml"))).strategy.scalarization.groups == {"safety": 1.0}


def test_a_cancel_during_a_resume_is_not_lost(tmp_path, data_root, mobilenet_weights):
    """A cancelled job being resumed: an old cancel request does not stop the resume, a cancel that
    arrives once the resuming coordinator holds the job does (it must not be cleared as stale)."""
    from promptsearch.search.loop import SearchLoop
    from promptsearch.search.workspace import cancel_requested

    ws = Workspace(tmp_path)
    job_id = submit(ws, parse_job(_job_text(data_root, mobilenet_weights), "j.yaml"))
    assert cancel(ws, job_id)["status"] == "cancelled"  # no coordinator: marked at once
    (ws.job_dir(job_id) / "cancel").write_text(repr(time.time()))  # an earlier run's request, left behind
    with _job_lock(ws, job_id):  # a coordinator resuming the job took the lock ...
        started = time.time()
        loop = SearchLoop(ws, job_id, started=started)
        assert not loop.should_stop()  # ... the old request is not this run's
        assert cancel(ws, job_id)["status"] == "cancelled"  # the state still says cancelled: not a no-op
        assert cancel_requested(ws, job_id, started)
        loop._cancel_checked = 0.0
        assert loop.should_stop() and loop.stop_reason == "cancelled"


def test_lock_marks_a_live_coordinator(tmp_path, data_root, mobilenet_weights):
    ws = Workspace(tmp_path)
    job_id = submit(ws, parse_job(_job_text(data_root, mobilenet_weights), "j.yaml"))
    assert not coordinator_alive(ws, job_id)
    with _job_lock(ws, job_id):
        assert coordinator_alive(ws, job_id)
        with pytest.raises(JobError, match="already running"):
            run_job(ws, job_id)
    assert not coordinator_alive(ws, job_id)
    # a job whose coordinator died while running reads as interrupted
    store = ws.store(job_id)
    writer = JobWriter(store, store.static())
    writer.open()
    writer.emit("job", set={"status": "running", "attempts": 1})
    writer.close()
    assert job_status(ws, job_id)["interrupted"]


def test_reads_never_see_a_half_written_event(tmp_path, data_root, mobilenet_weights):
    """Another process's reads (status, trials, front) while the coordinator appends events: never
    an error, never a count that goes back, the records always consistent with the counts."""
    from promptsearch.search.loop import SearchLoop
    from promptsearch.trial import TrialResult

    ws = Workspace(tmp_path)
    job_id = submit(ws, parse_job(_job_text(data_root, mobilenet_weights, trials=150, concurrency=3), "j.yaml"))
    errors: list[Exception] = []
    seen: list[int] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                s = job_status(ws, job_id)
                seen.append(s["trials"]["finished"])
                trials = job_trials(ws, job_id)
                assert sum(t["status"] in ("completed", "failed") for t in trials) >= s["trials"]["finished"]
            except Exception as e:  # noqa: BLE001
                errors.append(e)

    t = threading.Thread(target=read)
    t.start()
    try:
        loop = SearchLoop(ws, job_id, tracking=False)
        metrics = {"auc": 0.8, "worst_class_recall": 0.5, "prompt_params": 100.0, "latency_ms": 2.0}
        for i in range(150):
            config = loop.ask(f"tune-{i}")
            loop.epoch(config["trial_id"], {"epoch": 1.0, "val_auc": 0.7}, {"node_id": "n1"})
            cand = job_trials(ws, job_id)[-1]["candidate"]
            loop.tell(config["trial_id"], TrialResult(candidate=cand, status="completed",
                                                      metrics={**metrics, "auc": 0.5 + i / 400}))
    finally:
        done.set()
        t.join()
    assert errors == [] and seen == sorted(seen) and len(seen) > 3
    assert job_status(ws, job_id)["trials"]["finished"] == 150


def test_long_workspace_paths_get_a_short_ray_tmpdir(tmp_path):
    ws = Workspace(tmp_path / ("deep" * 20))
    tmp = ws.ray_tmpdir()
    try:
        assert len(str(tmp)) <= 40 and tmp.resolve() == (ws.root / "ray").resolve()
        assert ws.ray_tmpdir() == tmp  # stable: the same alias every time
    finally:
        tmp.unlink()


def test_cli_reports_bad_jobs_without_a_traceback(tmp_path, data_root, mobilenet_weights):
    bad = tmp_path / "bad.yaml"
    bad.write_text(_job_text(data_root, mobilenet_weights, trials=-3))
    r = CliRunner().invoke(app, ["search", str(bad), "--workspace", str(tmp_path / "ws")])
    assert r.exit_code == 2 and "bad.yaml:10: trials" in r.output and "Traceback" not in r.output
    good = tmp_path / "good.yaml"
    good.write_text(_job_text(data_root, mobilenet_weights))
    r = CliRunner().invoke(app, ["search", str(good), "--set", "trials=2", "--set", "budget.epochs=0",
                                 "--workspace", str(tmp_path / "ws")])
    assert r.exit_code == 2 and "good.yaml (overrides): budget.epochs: Input should be greater" in r.output
    assert not (tmp_path / "ws").exists() or Workspace(tmp_path / "ws").job_ids() == []  # nothing submitted
    r = CliRunner().invoke(app, ["pareto", "nope", "--workspace", str(tmp_path / "ws")])
    assert r.exit_code == 2 and "no job 'nope'" in r.output
    r = CliRunner().invoke(app, ["jobs", "--json", "--workspace", str(tmp_path / "ws")])
    assert r.exit_code == 0 and json.loads(r.stdout) == []
    job_id = submit(Workspace(tmp_path / "ws"), parse_job(_job_text(data_root, mobilenet_weights), "j.yaml"))
    for command in (["jobs"], ["pareto", job_id]):  # tables go to stdout, where a pipe reads them
        r = CliRunner().invoke(app, [*command, "--workspace", str(tmp_path / "ws")])
        assert r.exit_code == 0 and job_id in r.stdout, r.output


def test_the_loop_records_nan_objectives_and_missing_results_as_failures(tmp_path, data_root, mobilenet_weights):
    """SearchLoop's ask/tell without Ray (the Tune adapter calls exactly these)."""
    from promptsearch.search.loop import FINISHED, SearchLoop
    from promptsearch.trial import TrialResult

    ws = Workspace(tmp_path)
    job_id = submit(ws, parse_job(_job_text(data_root, mobilenet_weights, trials=3), "j.yaml"))
    loop = SearchLoop(ws, job_id)
    configs = [loop.ask(f"tune-{i}") for i in range(3)]
    assert [c["trial_id"] for c in configs] == ["t0001", "t0002", "t0003"]
    assert loop.ask("tune-3") == FINISHED  # three in flight = the job's three trials
    # on disk after every ask: a coordinator started now restores the same strategy
    assert [t["candidate"]["genome"] for t in job_trials(ws, job_id)] == [c["genome"] for c in configs]
    again = SearchLoop(ws, job_id, tracking=False)
    assert again.strategy.state_dict() == loop.strategy.state_dict()
    first = job_trials(ws, job_id)[0]
    metrics = {"auc": 0.8, "worst_class_recall": 0.5, "prompt_params": 100.0, "latency_ms": float("nan")}
    loop.tell("t0001", TrialResult(candidate=first["candidate"], status="completed", metrics=metrics))
    loop.tell("t0002", None)  # ended without a result while the job runs: a failure, not a preemption
    records = {t["trial_id"]: t for t in job_trials(ws, job_id)}
    assert records["t0001"]["status"] == "failed"
    assert records["t0001"]["reason"] == "non-finite objective(s): latency_ms=nan"
    assert records["t0001"]["metrics"]["latency_ms"] is None and records["t0001"]["metrics"]["auc"] == 0.8
    assert records["t0002"]["status"] == "failed" and records["t0002"]["reason"] == "the trial ended without reporting a result"
    assert records["t0003"]["status"] == "running"
    assert [n for n, _ in ws.read_state(job_id).hypervolume] == [1, 2]
    loop.tell("t0003", TrialResult.failed(records["t0003"]["candidate"], "RuntimeError: boom"))
    loop._finish(None)  # every trial failed: the job failed, even though it ran all its trials
    state = ws.read_state(job_id)
    assert state.status == "failed" and state.message == "all 3 trials failed; last failure: RuntimeError: boom"
