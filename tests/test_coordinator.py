"""Search jobs end to end on real Ray Tune, real MLflow (SQLite) and real BreastMNIST trials:
faults, NaN trials and the failure limit, kill -9 of the coordinator and resume, cancel, and a
real two-node Ray cluster on this machine.

    PROMPTSEARCH_DATA_ROOT=../shared/data/medmnist python -m pytest tests/test_coordinator.py -q

Trials are tiny (MobileNetV2 at 32 px, 64 training images, 1-2 epochs: ~1-3 s); most of each
test's time is Ray starting and its worker processes importing torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from live_server import free_port

from promptsearch.service.jobs import Workspace, cancel, job_status, job_trials, list_jobs, run_job, submit
from promptsearch.jobs import job_from_dict

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).with_name("ray"))


def _spec_dict(data_root, weights, **kw) -> dict:
    spec = dict(name="tiny", space="pixel", dataset="breastmnist", data_root=str(data_root),
                backbone={"name": "torchvision:mobilenet_v2", "image_size": 32, "weights": str(weights)},
                budget={"epochs": 1, "max_train_samples": 64, "latency_repeats": 3, "threads": 1},
                strategy="random", trials=6, concurrency=2, seed=0)
    spec.update(kw)
    return spec


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    """One workspace for the module: MLflow creates its SQLite schema once (~10 s)."""
    return Workspace(tmp_path_factory.mktemp("ws"))


def _mlflow_runs(ws: Workspace, job_id: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(ws.tracking_uri)
    m = job_status(ws, job_id)["mlflow"]
    runs = client.search_runs([m["experiment_id"]], filter_string=f"tags.job_id = '{job_id}'", max_results=1000)
    parent = [r for r in runs if r.data.tags.get("kind") == "job"]
    assert len(parent) == 1 and parent[0].info.run_id == m["parent_run_id"]
    children = {r.data.tags["trial_id"]: r for r in runs if r.data.tags.get("kind") == "trial"}
    return client, parent[0], children


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"coordinator exited ({proc.returncode}) before {what}")
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _job_named(ws: Workspace, name: str):
    return next((j for j in list_jobs(ws) if j["name"] == name), None)


def _start_search(tmp_path, ws, spec: dict, log_name: str) -> subprocess.Popen:
    job = tmp_path / f"{spec['name']}.yaml"
    job.write_text(yaml.safe_dump(spec, sort_keys=False))
    log = open(tmp_path / log_name, "w")
    return subprocess.Popen([sys.executable, "-m", "promptsearch.cli", "search", str(job), "--workspace", str(ws.root),
                             "--json"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PROMPTSEARCH_FAULTS": ""})


def _kill_group(proc: subprocess.Popen) -> None:
    """Our coordinator's process group: it and any Ray process it left behind."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(timeout=10)


def test_job_end_to_end_with_a_raising_and_a_dying_trial(ws, tmp_path, data_root, mobilenet_weights, monkeypatch):
    from safetensors.torch import load_file

    monkeypatch.setenv("PROMPTSEARCH_FAULTS", "t0002=raise,t0004=exit")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # where Ray would put its auth token by default
    for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(k, raising=False)
    spec = job_from_dict(_spec_dict(data_root, mobilenet_weights, name="e2e", trials=8))
    job_id = submit(ws, spec)
    seen: list[dict] = []
    status = run_job(ws, job_id, progress=seen.append)
    # the local Ray used token auth with a token kept in the workspace, and left the environment as it found it
    assert not (tmp_path / "home" / ".ray").exists() and (ws.root / "ray" / "auth_token").stat().st_mode & 0o777 == 0o600
    assert not any(k in os.environ for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_TMPDIR"))

    assert status["status"] == "completed", status["message"]
    # t0002 raised: failed (the candidate's fault); t0004's worker process died: preempted (infrastructure),
    # re-run, and the job still ends with exactly 8 finished trials
    assert status["trials"] == {"requested": 8, "finished": 8, "completed": 7, "failed": 1, "stopped": 0, "preempted": 1,
                                "running": 0}
    assert max(len(s["running_trials"]) for s in seen) == 2  # two trials in flight at once
    assert 0 < status["hypervolume"] <= 1 and set(status["best"]) == {"auc", "worst_class_recall", "prompt_params", "latency_ms"}
    trials = {t["trial_id"]: t for t in job_trials(ws, job_id)}
    assert sorted(trials) == [f"t{i:04d}" for i in range(1, 10)]
    assert trials["t0002"]["status"] == "failed" and "RuntimeError: injected fault" in trials["t0002"]["reason"]
    assert trials["t0004"]["status"] == "preempted" and trials["t0004"]["reason"].startswith("worker process died")
    (rerun,) = [t for t in trials.values() if t["requeued_from"] == "t0004"]
    assert rerun["candidate"] == trials["t0004"]["candidate"] and rerun["status"] == "completed"
    assert {t["threads"] for t in trials.values() if t["status"] == "completed"} == {1}  # the job's budget.threads
    for t in trials.values():
        if t["status"] == "completed":
            assert len(t["history"]) == 1 and t["history"][0]["val_auc"] is not None and t["node_id"]
            assert set(load_file(t["weights"])) and Path(t["weights"]).parent == ws.job_dir(job_id) / "weights"
    finished = [t for t in trials.values() if t["status"] in ("completed", "failed")]
    assert len({t["candidate"]["key"] for t in finished}) == 8  # random search never repeats

    # everything under the workspace: Ray's temp dir, Tune's storage, the MLflow store
    assert any(p.name.startswith("session_") for p in (ws.root / "ray").iterdir())
    assert (ws.tune_dir / job_id / "attempt-1").is_dir()
    assert Path(ws.tracking_uri.removeprefix("sqlite:///")).is_file()

    client, parent, children = _mlflow_runs(ws, job_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["status"] == "completed"
    assert parent.data.metrics["hypervolume"] == pytest.approx(status["hypervolume"])
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"job.yaml", "front.json", "hypervolume.json",
                                                                             "hypervolume.png"}
    assert len(client.get_metric_history(parent.info.run_id, "hypervolume")) == 8
    assert sorted(children) == sorted(trials)
    front = {r["trial_id"] for r in json.loads(Path(client.download_artifacts(parent.info.run_id, "front.json")).read_text())}
    assert front and front <= {k for k, t in trials.items() if t["status"] == "completed"}
    for tid, run in children.items():
        t = trials[tid]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["status"] == t["status"] and run.data.tags["strategy"] == "random"
        assert run.data.tags["space_hash"] == status["space_hash"]
        assert run.data.params["genome"] == json.dumps(t["candidate"]["genome"])
        assert run.data.params["arch.pixel_prompt"] == t["candidate"]["architecture"]["pixel_prompt"]
        arts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert "trial.json" in arts
        if t["status"] == "completed":
            assert run.info.status == "FINISHED"
            assert run.data.metrics["auc"] == pytest.approx(t["metrics"]["auc"])
            assert "test_auc" in run.data.metrics and "latency_ms" in run.data.metrics
            assert [m.step for m in client.get_metric_history(run.info.run_id, "val_auc")] == [1]
            assert ("weights" in arts) == (tid in front)
        elif t["status"] == "preempted":
            assert run.info.status == "KILLED" and run.data.tags["status"] == "preempted"
        else:
            assert run.info.status == "FAILED" and run.data.tags["failure_reason"] == t["reason"][:5000]


@pytest.mark.long
def test_nan_trials_fail_and_the_failure_limit_stops_the_job(ws, data_root, mobilenet_weights):
    # one validation image: its AUC is NaN for real, so every trial fails
    spec = job_from_dict(_spec_dict(data_root, mobilenet_weights, name="nan", trials=6, max_failures=2,
                                    budget={"epochs": 1, "max_train_samples": 32, "max_eval_samples": 1,
                                            "latency_repeats": 1, "threads": 1}))
    job_id = submit(ws, spec)
    status = run_job(ws, job_id)
    assert status["status"] == "failed"
    assert status["message"].startswith("stopped: 2 trials failed (max_failures=2); last failure: TrialFailed: non-finite")
    trials = job_trials(ws, job_id)
    assert status["trials"]["failed"] >= 2 and status["trials"]["finished"] < 6 and status["trials"]["running"] == 0
    for t in trials:
        assert t["status"] in ("failed", "preempted")
        if t["status"] == "failed":
            assert "non-finite validation metrics" in t["reason"]
        else:
            assert t["reason"] == "job stopped after too many failures"
    _, parent, children = _mlflow_runs(ws, job_id)
    assert parent.info.status == "FAILED" and "max_failures=2" in parent.data.tags["message"]
    assert all("non-finite" in r.data.tags["failure_reason"] for r in children.values() if r.data.tags["status"] == "failed")


def test_kill_9_of_the_coordinator_then_resume(ws, tmp_path, data_root, mobilenet_weights):
    from promptsearch.space import load_space
    from promptsearch.strategies import make_strategy

    spec = _spec_dict(data_root, mobilenet_weights, name="killed", trials=6,
                      budget={"epochs": 2, "max_train_samples": 96, "latency_repeats": 3, "threads": 1})
    proc = _start_search(tmp_path, ws, spec, "killed.log")
    try:
        job = _wait(lambda: (j := _job_named(ws, "killed")) and 2 <= j["trials"]["finished"] <= 4
                    and j["trials"]["running"] >= 1 and j, 300, "two finished trials and one in flight", proc)
        os.kill(proc.pid, signal.SIGKILL)  # the coordinator only; its Ray dies on its own
        proc.wait(timeout=30)
        job_id = job["job_id"]
        before = {t["trial_id"]: t for t in job_trials(ws, job_id)}
        s = job_status(ws, job_id)
        assert s["status"] == "running" and s["interrupted"]
        in_flight = [t for t in before.values() if t["status"] == "running"]
        done_before = {k: t for k, t in before.items() if t["status"] in ("completed", "failed")}
        assert in_flight and len(done_before) >= 2

        status = run_job(ws, job_id)  # = promptsearch resume
    finally:
        _kill_group(proc)

    assert status["status"] == "completed", status["message"]
    assert status["trials"]["finished"] == 6 and status["attempts"] == 2
    after = {t["trial_id"]: t for t in job_trials(ws, job_id)}
    for k, t in done_before.items():  # finished trials are neither lost nor re-run
        assert after[k] == t
    for t in in_flight:  # in-flight trials: recorded preempted (not failed), re-queued once
        p = after[t["trial_id"]]
        assert p["status"] == "preempted" and p["reason"] == "coordinator stopped before the trial finished (attempt 1)"
        reruns = [r for r in after.values() if r["requeued_from"] == p["trial_id"]]
        assert len(reruns) == 1 and reruns[0]["candidate"] == p["candidate"] and reruns[0]["attempt"] == 2
        assert reruns[0]["status"] in ("completed", "failed")
    finished = [t for t in after.values() if t["status"] in ("completed", "failed")]
    assert len(finished) == 6 and len({t["candidate"]["key"] for t in finished}) == 6
    # the strategy's state was restored, not restarted: its proposals continue one seeded sequence
    asked = [t["candidate"]["genome"] for t in sorted(after.values(), key=lambda t: t["index"]) if not t["requeued_from"]]
    fresh = make_strategy("random", load_space("pixel"), seed=0)
    assert asked == [list(fresh.ask().genome) for _ in asked]

    _, parent, children = _mlflow_runs(ws, job_id)
    assert sorted(children) == sorted(after) and parent.info.status == "FINISHED"
    for t in in_flight:
        run = children[t["trial_id"]]
        assert run.data.tags["status"] == "preempted" and run.info.status == "KILLED"


@pytest.mark.long
def test_sigterm_stops_a_search_gracefully_then_resume_completes(ws, tmp_path, data_root, mobilenet_weights):
    """SIGTERM (``timeout``, a container stop, systemd) stops ``promptsearch search`` like Ctrl-C:
    trials preempted, the job reads interrupted (resumable), not failed with SystemExit;
    ``promptsearch resume`` then completes it with exactly the requested trials."""
    spec = _spec_dict(data_root, mobilenet_weights, name="termed", trials=4,
                      budget={"epochs": 2, "max_train_samples": 96, "latency_repeats": 3, "threads": 1})
    proc = _start_search(tmp_path, ws, spec, "termed.log")
    try:
        job = _wait(lambda: (j := _job_named(ws, "termed")) and j["trials"]["finished"] >= 1
                    and j["trials"]["running"] >= 1 and j, 300, "a finished trial and one in flight", proc)
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        _kill_group(proc)
    job_id = job["job_id"]
    s = job_status(ws, job_id)
    log = (tmp_path / "termed.log").read_text()
    assert "SystemExit" not in (s["message"] or "") and "Traceback" not in log, log[-2000:]
    assert s["status"] == "interrupted" and s["interrupted"] and "interrupted" in s["message"], s
    stopped = [t for t in job_trials(ws, job_id) if t["status"] == "preempted"]
    assert stopped and all(t["reason"] == "job interrupted" for t in stopped)
    r = subprocess.run([sys.executable, "-m", "promptsearch.cli", "resume", job_id, "--workspace", str(ws.root), "--json"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    s = job_status(ws, job_id)
    assert s["status"] == "completed" and s["trials"]["finished"] == 4
    finished = [t for t in job_trials(ws, job_id) if t["status"] in ("completed", "failed")]
    assert len(finished) == 4 and len({t["candidate"]["key"] for t in finished}) == 4


def test_cancel_stops_a_running_job_cleanly(ws, tmp_path, data_root, mobilenet_weights):
    spec = _spec_dict(data_root, mobilenet_weights, name="cancelled", trials=6,
                      budget={"epochs": 2, "max_train_samples": 96, "latency_repeats": 3, "threads": 1})
    proc = _start_search(tmp_path, ws, spec, "cancelled.log")
    try:
        job = _wait(lambda: (j := _job_named(ws, "cancelled")) and j["trials"]["running"] >= 1 and j, 300,
                    "a trial in flight", proc)
        cancel(ws, job["job_id"])
        rc = proc.wait(timeout=180)
    finally:
        _kill_group(proc)
    assert rc == 1, (tmp_path / "cancelled.log").read_text()[-3000:]
    status = job_status(ws, job["job_id"])
    assert status["status"] == "cancelled" and not status["interrupted"]
    assert status["trials"]["running"] == 0 and status["trials"]["finished"] < 6
    trials = job_trials(ws, job["job_id"])
    preempted = [t for t in trials if t["status"] == "preempted"]
    assert preempted and all(t["reason"] == "job cancelled" for t in preempted)
    _, parent, children = _mlflow_runs(ws, job["job_id"])
    assert parent.info.status == "KILLED" and parent.data.tags["status"] == "cancelled"
    assert all(children[t["trial_id"]].info.status == "KILLED" for t in preempted)


def test_a_trial_no_node_can_hold_fails_fast_with_a_clear_message(ws, data_root, mobilenet_weights):
    from promptsearch.jobs import JobError

    job_id = submit(ws, job_from_dict(_spec_dict(data_root, mobilenet_weights, name="nogpu", resources={"cpu": 1, "gpu": 1})))
    with pytest.raises(JobError, match=r"no Ray node can run a trial: each needs 1 CPU and 1 GPU"):
        run_job(ws, job_id)
    s = job_status(ws, job_id)
    assert s["status"] == "failed" and s["message"].startswith("no Ray node can run a trial")


# --- a real two-node Ray cluster on this machine ---------------------------------------------------------------
@contextlib.contextmanager
def ray_cluster(tmp: Path, logs: Path, nodes: int = 2):
    """``ray start --head`` + ``ray start --address`` nodes (1 CPU each), each blocking in its own
    process group, so teardown stops exactly these processes (not every Ray on the machine)."""
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    # every node on loopback: no traffic leaves 127.0.0.1
    common = ["--block", "--num-cpus=1", "--object-store-memory=100000000", "--disable-usage-stats",
              "--node-ip-address=127.0.0.1"]
    procs = [subprocess.Popen([RAY, "start", "--head", f"--port={port}", f"--temp-dir={tmp}", "--include-dashboard=false",
                               *common], env=env, start_new_session=True,
                              stdout=open(logs / "head.log", "w"), stderr=subprocess.STDOUT)]
    try:
        _wait(lambda: not socket.socket().connect_ex(("127.0.0.1", port)), 120, "the head node's GCS")
        address = f"127.0.0.1:{port}"
        for i in range(1, nodes):
            procs.append(subprocess.Popen([RAY, "start", f"--address={address}", *common], env=env, start_new_session=True,
                                          stdout=open(logs / f"node{i}.log", "w"), stderr=subprocess.STDOUT))
        for i in range(1, nodes):
            _wait(lambda: "Ray runtime started" in (logs / f"node{i}.log").read_text(), 120, f"node {i} to join")
        yield address
    finally:
        for p in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)  # `ray start --block` stops its node's processes
        for p in reversed(procs):
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)  # anything of ours that outlived the graceful stop


@pytest.mark.long
def test_two_node_ray_cluster_runs_trials_on_both_nodes(ws, tmp_path, tmp_path_factory, data_root, mobilenet_weights,
                                                       monkeypatch):
    """The CLI's ``--ray-address`` on a real two-node cluster; then, in this process, a local job
    followed by a job on the cluster. One process, two Ray sessions with different auth modes (the
    local one token, the cluster's disabled): Ray caches the mode per process, and a driver still in
    token mode refuses its workers' calls ("Missing authorization header"), so every trial's actor
    died — what failed this test in fresh-clone runs."""
    tmp = Path(f"/tmp/ps-cluster-{os.getpid()}")  # short: Ray's socket paths must fit in 107 bytes
    tmp.mkdir(exist_ok=True)
    job = tmp_path / "cluster.yaml"
    job.write_text(yaml.safe_dump(_spec_dict(data_root, mobilenet_weights, name="cluster", trials=4), sort_keys=False))
    monkeypatch.setenv("PROMPTSEARCH_FAULTS", "")
    local = run_job(ws, submit(ws, job_from_dict(_spec_dict(data_root, mobilenet_weights, name="local-first", trials=2))))
    assert local["status"] == "completed", local["message"]
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, tmp, True)
        address = stack.enter_context(ray_cluster(tmp, tmp_path_factory.mktemp("cluster-logs")))
        # the CLI's --ray-address, in its own process (as a user or the API would run it)
        out = subprocess.run([sys.executable, "-m", "promptsearch.cli", "search", str(job), "--workspace", str(ws.root),
                              "--ray-address", address, "--json"], capture_output=True, text=True, timeout=600,
                             env={**os.environ, "RAY_AUTH_MODE": "disabled"})
        # this process again, now on the cluster: its driver gets the cluster's next job id
        monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
        again = run_job(ws, submit(ws, job_from_dict(_spec_dict(data_root, mobilenet_weights, name="cluster-in-process",
                                                                trials=2, ray_address=address))))
    assert out.returncode in (0, 1) and out.stdout.strip(), out.stderr[-3000:]
    status = json.loads(out.stdout)["status"]
    job_id = status["job_id"]
    assert status["status"] == "completed", (status["message"], [(t["trial_id"], t["node_id"], t["reason"])
                                                                for t in job_trials(ws, job_id)])
    nodes = {n["node_id"] for n in status["coordinator"]["nodes"]}
    assert len(nodes) == 2 and status["coordinator"]["ray_address"] == address
    used = {t["node_id"] for t in job_trials(ws, job_id)}
    assert used == nodes  # one CPU per node and two trials at once: both nodes ran trials
    _, _, children = _mlflow_runs(ws, job_id)
    assert {r.data.tags["node_id"] for r in children.values()} == nodes
    assert again["status"] == "completed", (again["message"], [t["reason"] for t in job_trials(ws, again["job_id"])])
    assert {t["node_id"] for t in job_trials(ws, again["job_id"])} <= nodes
