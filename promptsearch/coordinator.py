"""The search coordinator: a job's ask/tell loop on Ray Tune, recorded in MLflow, resumable.

    promptsearch search jobs/breast_pixel.yaml --workspace ./promptsearch-runs

Public, stable API (the REST server calls it, possibly from another process reading the same
workspace): :class:`Workspace`, :func:`submit`, :func:`run_job`, :func:`cancel`, :func:`job_status`,
:func:`list_jobs`, :func:`job_trials`, :func:`job_front`.

Flow: ``Tuner.fit`` drives the trials; the one Searcher adapter (``tune_adapter.StrategySearcher``) maps
Tune's ``suggest`` onto :meth:`SearchLoop.ask` (-> ``strategy.ask()``) and ``on_trial_complete`` onto
:meth:`SearchLoop.tell` (-> ``strategy.tell()``; an errored trial is told as failed). The loop owns
the job's state: after every ask, epoch and tell it writes ``state.json`` atomically (strategy
``state_dict`` + trial records), so a coordinator killed at any point resumes exactly:
finished trials are kept, trials that were in flight are recorded ``preempted`` and re-queued.

Workspace layout (everything a job writes)::

    <workspace>/jobs/<job id>/job.json      the submitted job (absolute paths) + its space, immutable
                             /job.yaml      the job file as submitted
                             /state.json    status, strategy state, trial records, hypervolume curve
                             /weights/<trial>.safetensors   prompt + head weights of each trial
                             /coordinator.lock, /cancel     liveness lock, cancel request
               /tune/<job id>/attempt-<n>/  Ray Tune's storage (one experiment per coordinator run)
               /ray/                        RAY_TMPDIR of a locally started Ray
               /mlflow/mlflow.db, /mlflow/artifacts/   MLflow record (default tracking URI)
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from .files import atomic_write
from .jobs import JobError, JobSpec, check_job, resolve_paths
from .metrics import clean_metrics
from .search.records import JobState, TrialRecord
from .search.workspace import (DEFAULT_WORKSPACE, Workspace, as_workspace, cancel_requested, coordinator_alive,
                               job_lock, request_cancel)

log = logging.getLogger(__name__)

FINISHED = "FINISHED"  # SearchLoop.ask's "no more trials" (tune_adapter maps it to Searcher.FINISHED)

Progress = Callable[[dict[str, Any]], None]


# --- public API --------------------------------------------------------------------------------------------
def submit(workspace: Workspace | str | Path | None, spec: JobSpec, job_file: str | None = None,
           base_dir: str | Path | None = None) -> str:
    """Record a job (status ``queued``) and return its id; :func:`run_job` runs it.

    Relative paths resolve against ``base_dir`` (default: the current directory); the stored job
    keeps its space itself, so editing the space file later does not change a submitted job.
    """
    import yaml

    ws = as_workspace(workspace)
    spec = resolve_paths(spec, base_dir)
    space = check_job(spec)
    job_id = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    d = ws.job_dir(job_id)
    (d / "weights").mkdir(parents=True)
    record = {"job_id": job_id, "spec": spec.model_dump(mode="json"), "space": space.to_dict(),
              "space_name": space.name, "space_hash": space.hash, "created_at": time.time(),
              "host": socket.gethostname()}
    atomic_write(d / "job.json", json.dumps(record, indent=2))
    atomic_write(d / "job.yaml", job_file or yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    ws.write_state(JobState(job_id=job_id))
    return job_id


def cancel(workspace: Workspace | str | Path | None, job_id: str) -> dict[str, Any]:
    """Stop a job cleanly: a running coordinator stops its trials (recorded ``preempted``) and
    marks the job ``cancelled``; a queued or interrupted job is marked at once. Returns its status."""
    ws = as_workspace(workspace)
    job_id = ws.resolve(job_id)
    if ws.read_state(job_id).status in ("completed", "failed"):
        return job_status(ws, job_id)
    try:
        with job_lock(ws, job_id, wait_s=0):
            state = ws.read_state(job_id)  # no coordinator: mark it here
            if state.status not in ("completed", "failed", "cancelled"):
                for t in state.trials:
                    if t.status == "running":
                        t.status, t.reason, t.finished_at = "preempted", "job cancelled", time.time()
                state.status, state.message = "cancelled", "cancelled before it ran to the end"
                state.finished_at = time.time()
                ws.write_state(state)
    except JobError:
        # A coordinator holds the lock (running, or resuming a cancelled job): the request is written
        # after it took the lock, so it is newer than the coordinator's start and it stops within a second.
        request_cancel(ws, job_id)
    return job_status(ws, job_id)


def job_trials(workspace: Workspace | str | Path | None, job_id: str) -> list[dict[str, Any]]:
    """Every trial record of a job, in start order: trial_id, candidate, status, reason, metrics,
    test_metrics, history, weights (path when saved), node, timings."""
    ws = as_workspace(workspace)
    return [t.model_dump(mode="json") for t in ws.read_state(ws.resolve(job_id)).trials]


def job_front(workspace: Workspace | str | Path | None, job_id: str) -> list[dict[str, Any]]:
    """The trial records on the job's Pareto front (non-dominated completed trials)."""
    from .objectives import pareto_front

    ws = as_workspace(workspace)
    job_id = ws.resolve(job_id)
    trials = job_trials(ws, job_id)
    objectives = JobSpec.model_validate(ws.read_job(job_id)["spec"]).objective_list
    return [trials[i] for i in pareto_front(trials, objectives)]


def _summary(job: dict[str, Any], state: JobState, alive: bool | None) -> dict[str, Any]:
    from .objectives import usable_indices

    spec = JobSpec.model_validate(job["spec"])
    objectives = spec.objective_list
    counts = {s: sum(1 for t in state.trials if t.status == s) for s in ("completed", "failed", "preempted", "running")}
    trials = [t.model_dump(mode="json") for t in state.trials]
    usable = [trials[i] for i in usable_indices(trials, objectives)]
    best = {}
    for o in objectives:
        values = [t["metrics"][o.name] for t in usable]
        if values:
            best[o.name] = max(values) if o.maximise else min(values)
    interrupted = state.status in ("running", "queued") and alive is False and state.attempts > 0
    return {
        "job_id": state.job_id, "name": spec.name, "status": state.status, "message": state.message,
        "interrupted": interrupted,  # the coordinator is gone: `promptsearch resume` continues it
        "strategy": spec.strategy, "space": job["space_name"], "space_hash": job["space_hash"],
        "dataset": spec.dataset, "backbone": spec.backbone.name,
        "trials": {"requested": spec.trials, "finished": counts["completed"] + counts["failed"], **counts},
        "concurrency": spec.concurrency, "failure_limit": spec.failure_limit,
        "objectives": [o.model_dump() for o in objectives],
        "best": best, "hypervolume": state.hypervolume[-1][1] if state.hypervolume else 0.0,
        "running_trials": [{"trial_id": t.trial_id, "epoch": len(t.history), "epochs": spec.budget.epochs,
                            "node_id": t.node_id} for t in state.trials if t.status == "running"],
        "created_at": state.created_at, "started_at": state.started_at, "finished_at": state.finished_at,
        "updated_at": state.updated_at, "attempts": state.attempts, "coordinator": state.coordinator,
        "mlflow": state.mlflow,
    }


def job_status(workspace: Workspace | str | Path | None, job_id: str) -> dict[str, Any]:
    """A job's status (queued | running | completed | failed | cancelled), trial counts
    (finished/completed/failed/preempted/running), best value per objective, current hypervolume,
    and ``interrupted`` (its coordinator died: resume it)."""
    ws = as_workspace(workspace)
    job_id = ws.resolve(job_id)
    state = ws.read_state(job_id)
    alive = coordinator_alive(ws, job_id) if state.status in ("running", "queued") else None
    return _summary(ws.read_job(job_id), state, alive)


def list_jobs(workspace: Workspace | str | Path | None = None) -> list[dict[str, Any]]:
    """:func:`job_status` of every job in the workspace, oldest first."""
    ws = as_workspace(workspace)
    out = []
    for job_id in ws.job_ids():
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            out.append(job_status(ws, job_id))
    return sorted(out, key=lambda s: s["created_at"])


def run_job(workspace: Workspace | str | Path | None, job_id: str, progress: Progress | None = None, *,
            ray_address: str | None = None, resume_cancelled: bool = False) -> dict[str, Any]:
    """Run a job to its end in this process (blocking) and return its final :func:`job_status`.

    A queued job starts; an interrupted one (its coordinator was killed) resumes: strategy state
    restored, finished trials kept, trials that were in flight re-queued (recorded ``preempted``).
    A cancelled job resumes only with ``resume_cancelled``. ``progress`` is called with a
    status dict after every event. ``ray_address`` overrides the job's (``auto``/host:port).
    """
    ws = as_workspace(workspace)
    job_id = ws.resolve(job_id)
    with job_lock(ws, job_id):
        started = time.time()  # cancel requests older than this were for an earlier run
        state = ws.read_state(job_id)
        if state.status == "completed":
            return job_status(ws, job_id)
        if state.status == "cancelled":
            if not resume_cancelled:
                raise JobError(f"job {job_id} was cancelled; `promptsearch resume {job_id}` continues it")
        loop = SearchLoop(ws, job_id, progress, started=started)
        loop.run(ray_address)
    return job_status(ws, job_id)


# --- the loop ------------------------------------------------------------------------------------------------
class SearchLoop:
    """One coordinator run of one job: the strategy, the records, MLflow. Knows no Tune types: the
    adapters in :mod:`promptsearch.tune_adapter` translate Tune's calls into :meth:`ask`,
    :meth:`epoch`, :meth:`tell` (and :meth:`should_stop`, :meth:`error_reason`)."""

    def __init__(self, ws: Workspace, job_id: str, progress: Progress | None = None, started: float | None = None):
        from .space import SearchSpace, SpaceFile
        from .strategies import make_strategy

        self.ws, self.job_id, self.progress = ws, job_id, progress
        self.started = time.time() if started is None else started
        self.dir = ws.job_dir(job_id)
        self.job = ws.read_job(job_id)
        self.spec = JobSpec.model_validate(self.job["spec"])
        self.space = SearchSpace(SpaceFile.model_validate(self.job["space"]), f"job {job_id}")
        if self.space.hash != self.job["space_hash"]:
            raise JobError(f"job {job_id}: stored space hash {self.job['space_hash']} != {self.space.hash}")
        self.objectives = self.spec.objective_list
        self.state = ws.read_state(job_id)
        self.strategy = make_strategy(self.spec.strategy, self.space, self.objectives, seed=self.spec.seed,
                                      **self.spec.strategy_kwargs)
        if self.state.strategy_state is not None:
            self.strategy.load_state_dict(self.state.strategy_state)
        self.by_id = {t.trial_id: t for t in self.state.trials}
        self.stop_reason: Literal["cancelled", "interrupted", "failed"] | None = None
        self.tracker = None
        self._cancel_checked = 0.0

    # bookkeeping
    @property
    def finished(self) -> int:
        return sum(1 for t in self.state.trials if t.status in ("completed", "failed"))

    @property
    def failed(self) -> int:
        return sum(1 for t in self.state.trials if t.status == "failed")

    @property
    def in_flight(self) -> list[TrialRecord]:
        return [t for t in self.state.trials if t.status == "running"]

    def _save(self, strategy: bool = False) -> None:
        if strategy:
            self.state.strategy_state = self.strategy.state_dict()
        self.ws.write_state(self.state)
        if self.progress is not None:
            try:
                self.progress(_summary(self.job, self.state, True))
            except Exception as e:  # noqa: BLE001 - a display must not stop the job
                log.warning("progress callback failed: %s", e)

    def _track(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """MLflow calls never take a job down: a failure is logged and counted."""
        if self.tracker is None:
            return None
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - the record on disk stays complete
            log.warning("MLflow %s failed: %s", what, e)
            self.state.mlflow["errors"] = self.state.mlflow.get("errors", 0) + 1
            return None

    def _preempt(self, t: TrialRecord, reason: str) -> None:
        """An unfinished trial: recorded ``preempted`` (not failed) and its candidate re-queued."""
        t.status, t.reason, t.finished_at = "preempted", reason, time.time()
        self.state.requeue.append({"candidate": t.candidate, "from": t.trial_id})
        if t.mlflow_run_id and self.tracker is not None:
            self._track("preempt", self.tracker.end_trial, t.mlflow_run_id, t.model_dump())

    # the run
    def run(self, ray_address: str | None = None) -> None:
        st = self.state
        st.attempts += 1
        address = ray_address or self.spec.ray_address
        st.coordinator = {"pid": os.getpid(), "host": socket.gethostname(), "attempt": st.attempts,
                          "ray_address": address or "local", "started_at": time.time()}
        self._start_tracking()
        for t in self.in_flight:  # the previous coordinator died with these in flight
            self._preempt(t, f"coordinator stopped before the trial finished (attempt {t.attempt})")
        st.status, st.message = "running", None
        st.started_at = st.started_at or time.time()
        st.finished_at = None
        self._save(strategy=True)
        error: BaseException | None = None
        try:
            if self.finished < self.spec.trials and self.failed < self.spec.failure_limit:
                with self._interruptible():
                    self._fit(address)
        except BaseException as e:  # noqa: BLE001 - recorded, then re-raised
            error = e
        self._finish(error)
        if error is not None:
            raise error

    @contextlib.contextmanager
    def _interruptible(self) -> Iterator[None]:
        """Ctrl-C (or SIGTERM) stops the job like a cancel: trials stop, the record stays
        resumable. A second Ctrl-C raises KeyboardInterrupt. Main thread only."""
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self.stop_reason == "interrupted":
                raise KeyboardInterrupt
            log.warning("interrupted: stopping the job's trials (again to abort)")
            self.stop_reason = "interrupted"

        old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # ours, not Tune's
        try:
            yield
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)

    def _start_tracking(self) -> None:
        from .tracking import Tracker, experiment_name

        uri = self.spec.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or self.ws.tracking_uri
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        artifacts = self.ws.artifact_root if uri == self.ws.tracking_uri else None
        t0 = time.perf_counter()
        try:
            self.tracker = Tracker(uri, artifacts)
            m = self.state.mlflow
            m["tracking_uri"] = uri
            m["experiment_id"] = self.tracker.experiment(self.space.name, self.space.hash)
            m["experiment_name"] = experiment_name(self.space.name, self.space.hash)
            m["parent_run_id"] = self.tracker.start_job(m["experiment_id"], self.job_id, self.job["spec"],
                                                        self.space.hash, m.get("parent_run_id"))
        except Exception as e:  # noqa: BLE001
            raise JobError(f"MLflow tracking at {uri} is not usable: {e}") from e
        log.info("MLflow ready in %.1f s", time.perf_counter() - t0)

    def _fit(self, address: str | None) -> None:
        import ray
        from ray import tune

        t0 = time.perf_counter()
        with ray_session(self.ws, address):
            log.info("ray ready in %.1f s", time.perf_counter() - t0)
            nodes = [n for n in ray.nodes() if n["Alive"]]
            self.state.coordinator["nodes"] = [
                {"node_id": n["NodeID"], "ip": n["NodeManagerAddress"], "resources": n["Resources"]} for n in nodes]
            self._save()
            need = self.spec.resources
            if not any(n["Resources"].get("CPU", 0) >= need.cpu and n["Resources"].get("GPU", 0) >= need.gpu for n in nodes):
                have = ", ".join(f"{n['NodeManagerAddress']}: {n['Resources'].get('CPU', 0):g} CPU "
                                 f"{n['Resources'].get('GPU', 0):g} GPU" for n in nodes)
                raise JobError(f"no Ray node can run a trial: each needs {need.cpu:g} CPU and {need.gpu:g} GPU "
                               f"(resources in the job); the cluster has {have}")
            remaining = self.spec.trials - self.finished
            payload = self._payload()
            from workers.trainable import train_trial

            from .tune_adapter import ErrorReasons, JobStopper, StrategySearcher, trial_dirname

            searcher = StrategySearcher(self)
            tuner = tune.Tuner(
                tune.with_resources(tune.with_parameters(train_trial, job=payload), self.spec.resources.ray()),
                tune_config=tune.TuneConfig(search_alg=searcher, num_samples=remaining,
                                            max_concurrent_trials=self.spec.concurrency,
                                            reuse_actors=True,  # one worker process runs many trials
                                            trial_dirname_creator=trial_dirname, trial_name_creator=trial_dirname),
                run_config=tune.RunConfig(
                    name=f"attempt-{self.state.attempts}", storage_path=str(self.ws.tune_dir / self.job_id),
                    stop=JobStopper(self), callbacks=[ErrorReasons(searcher)], verbose=0,
                    failure_config=tune.FailureConfig(max_failures=0)),  # a failed trial is a result, not retried
            )
            tuner.fit()

    def _payload(self) -> dict[str, Any]:
        budget = self.spec.budget.model_dump()
        budget["threads"] = budget["threads"] or max(1, int(self.spec.resources.cpu))
        return {"job_id": self.job_id, "space": self.job["space"], "dataset": self.spec.dataset,
                "data_root": self.spec.data_root, "backbone": self.spec.backbone.to_json(), "budget": budget,
                "weights_dir": str(self.dir / "weights"), "faults": _faults()}

    def _finish(self, error: BaseException | None) -> None:
        st = self.state
        cancelled = self.stop_reason == "cancelled" or cancel_requested(self.ws, self.job_id, self.started)
        for t in self.in_flight:
            self._preempt(t, self._stop_text())
        last = next((t.reason for t in reversed(st.trials) if t.status == "failed"), "") or "?"
        if self.finished >= self.spec.trials and self.failed == self.finished:
            st.status = "failed"  # nothing to show for it: no front, nothing to export
            st.message = f"all {self.failed} trials failed; last failure: {last.splitlines()[0]}"
        elif self.finished >= self.spec.trials:
            st.status, st.message = "completed", None
        elif self.stop_reason == "failed" or self.failed >= self.spec.failure_limit:
            st.status = "failed"
            st.message = (f"stopped: {self.failed} trials failed (max_failures={self.spec.failure_limit}); "
                          f"last failure: {last.splitlines()[0]}")
        elif cancelled:
            st.status, st.message = "cancelled", "cancelled; `promptsearch resume` continues it"
        elif isinstance(error, KeyboardInterrupt) or error is None or self.stop_reason == "interrupted":
            st.status = "cancelled"
            st.message = f"interrupted after {self.finished} of {self.spec.trials} trials; `promptsearch resume` continues it"
        else:
            st.status = "failed"
            st.message = str(error) if isinstance(error, JobError) else f"coordinator error: {type(error).__name__}: {error}"
        st.finished_at = time.time()
        st.coordinator = {**(st.coordinator or {}), "ended_at": time.time()}
        self._end_tracking()
        self._save(strategy=True)

    def _end_tracking(self) -> None:
        m = self.state.mlflow
        if self.tracker is None or not m.get("parent_run_id"):
            return
        from .objectives import pareto_front

        trials = [t.model_dump(mode="json") for t in self.state.trials]
        front = [trials[i] for i in pareto_front(trials, self.objectives)]
        for t in front:
            if t["weights"] and t["mlflow_run_id"] and Path(t["weights"]).exists():
                self._track("weights", self.tracker.log_weights, t["mlflow_run_id"], t["weights"])
        summary = [{"trial_id": t["trial_id"], "architecture": t["candidate"]["architecture"],
                    "genome": t["candidate"]["genome"], "metrics": t["metrics"], "test_metrics": t["test_metrics"],
                    "mlflow_run_id": t["mlflow_run_id"]} for t in front]
        self._track("end_job", self.tracker.end_job, m["parent_run_id"], self.state.status, self.state.message,
                    self.dir / "job.yaml", summary, self.state.hypervolume)

    # --- what the Tune adapters call ------------------------------------------------------------------------
    def should_stop(self) -> bool:
        """Polled every Tune step: a cancel request, or too many failures."""
        now = time.monotonic()
        if self.stop_reason is None and now - self._cancel_checked > 0.5:
            self._cancel_checked = now
            if cancel_requested(self.ws, self.job_id, self.started):
                self.stop_reason = "cancelled"
        return self.stop_reason is not None

    def _stop_text(self) -> str:
        return {"cancelled": "job cancelled", "interrupted": "job interrupted",
                "failed": "job stopped after too many failures"}.get(self.stop_reason or "", "coordinator stopped")

    def ask(self, tune_trial_id: str | None = None) -> dict[str, Any] | str | None:
        """The next trial's config (``strategy.ask()``, or a re-queued candidate first)."""
        from .space import Candidate

        if self.should_stop() or self.finished + len(self.in_flight) >= self.spec.trials:
            return FINISHED
        st = self.state
        if st.requeue:
            item = st.requeue.pop(0)
            candidate, requeued_from = Candidate.from_json(self.space, item["candidate"]), item["from"]
        else:
            candidate, requeued_from = self.strategy.ask(), None
        record = TrialRecord(trial_id=f"t{st.next_index:04d}", index=st.next_index, candidate=candidate.to_json(),
                             seed=self.spec.seed, attempt=st.attempts, requeued_from=requeued_from,
                             tune_trial_id=tune_trial_id)
        st.next_index += 1
        config = {"trial_id": record.trial_id, "genome": list(candidate.genome), "seed": record.seed}
        m = st.mlflow
        if self.tracker is not None:
            trial_config = {**config, "job_id": self.job_id, "candidate": record.candidate,
                            "backbone": self.job["spec"]["backbone"], "budget": self.job["spec"]["budget"],
                            "dataset": self.spec.dataset}
            record.mlflow_run_id = self._track("start_trial", self.tracker.start_trial, m["experiment_id"],
                                               m["parent_run_id"], self.job_id, self.spec.strategy, self.space.hash,
                                               record.model_dump(), trial_config)
        st.trials.append(record)
        self.by_id[record.trial_id] = record
        self._save(strategy=True)
        return config

    def epoch(self, trial_id: str, row: dict[str, float], node: dict[str, Any]) -> None:
        """One epoch's validation metrics of a running trial."""
        t = self.by_id.get(trial_id)
        if t is None or t.status != "running":
            return
        t.history.append(clean_metrics(row))
        _where(t, node)
        if t.mlflow_run_id:
            self._track("log_epoch", self.tracker.log_epoch, t.mlflow_run_id, row)
        self._save()

    def tell(self, trial_id: str, result: Any | None, error: str | None = None,
             node: dict[str, Any] | None = None, weights: str | None = None) -> None:
        """A trial ended: ``result`` is its ``TrialResult`` (None if it ended without one);
        ``error`` is set when Ray reports the trial errored (the worker raised or died)."""
        from .objectives import hypervolume
        from .trial import TrialResult

        t = self.by_id.get(trial_id)
        if t is None or t.status != "running":
            return
        node = node or {}
        _where(t, node)
        if result is None and self.should_stop():  # stopped (or killed by the same Ctrl-C) as the job stops
            self._preempt(t, self._stop_text())
            self._save()
            return
        if result is None and error is None:
            error = "the trial ended without reporting a result"
        if result is None:
            result = TrialResult.failed(t.candidate, error, history=[{k: v for k, v in h.items() if v is not None}
                                                                     for h in t.history], seed=t.seed)
        else:
            bad = [o.name for o in self.objectives if not _is_finite(result.metrics.get(o.name))]
            if result.status == "completed" and bad:
                result = result.model_copy(update={"status": "failed", "reason": "non-finite objective(s): "
                                                   + ", ".join(f"{n}={result.metrics.get(n)}" for n in bad)})
        self.strategy.tell(t.candidate["key"], result)
        t.status = "completed" if result.status == "completed" else "failed"
        t.reason, t.metrics, t.test_metrics = result.reason, clean_metrics(result.metrics), clean_metrics(result.test_metrics)
        if result.history:
            t.history = [clean_metrics(h) for h in result.history]
        t.finished_at = time.time()
        t.wall_time_s = result.wall_time_s or (t.finished_at - t.started_at)
        t.weights = weights if (weights and t.status == "completed") else None
        trials = [x.model_dump(mode="json") for x in self.state.trials]
        hv = hypervolume(trials, self.objectives)
        self.state.hypervolume.append((self.finished, hv))
        if t.mlflow_run_id:
            self._track("end_trial", self.tracker.end_trial, t.mlflow_run_id, t.model_dump())
            counts = {"completed": self.finished - self.failed, "failed": self.failed}
            self._track("job_progress", self.tracker.job_progress, self.state.mlflow["parent_run_id"],
                        self.finished, hv, counts)
        if self.failed >= self.spec.failure_limit and self.finished < self.spec.trials:
            self.stop_reason = "failed"
        self._save(strategy=True)

    def error_reason(self, trial_id: str, reason: str) -> None:
        """Ray's error text for an errored trial (arrives just after :meth:`tell`)."""
        t = self.by_id.get(trial_id)
        if t is None or t.status != "failed":
            return
        t.reason = reason
        if t.mlflow_run_id:
            self._track("set_reason", self.tracker.set_reason, t.mlflow_run_id, reason)
        self._save()


def _where(t: TrialRecord, node: dict[str, Any]) -> None:
    """Where (and with how much CPU) a trial ran: the reported fields of ``tune_adapter.node_info``."""
    for key, value in node.items():
        if value is not None:
            setattr(t, key, value)


def _is_finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _faults() -> dict[str, str]:
    """Test-only fault injection: ``PROMPTSEARCH_FAULTS="t0002=raise,t0004=exit"``."""
    from workers.trainable import FAULTS

    out = {}
    for item in filter(None, os.environ.get("PROMPTSEARCH_FAULTS", "").split(",")):
        trial, _, fault = item.partition("=")
        if fault not in FAULTS:
            raise JobError(f"PROMPTSEARCH_FAULTS: {item!r}: fault must be one of {FAULTS}")
        out[trial.strip()] = fault
    return out


# Environment a Ray session of this process sets for itself; restored when the session ends, so a
# later session (another job, another cluster) starts from the caller's settings.
_SESSION_ENV = ("RAY_TMPDIR", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")


@contextlib.contextmanager
def ray_session(ws: Workspace, address: str | None) -> Iterator[bool]:
    """A Ray session for one job run (the one Ray adapter's entry): the caller's session if one is
    up, ``address`` (a cluster), else a local Ray whose temp dir and auth token live in the
    workspace. Yields whether it started Ray (and so stops it). One process may run many sessions."""
    import ray

    saved = {k: os.environ.get(k) for k in _SESSION_ENV}
    started = False
    try:
        if not ray.is_initialized():
            _refresh_ray_config()  # this session's auth mode is the environment's now, not an earlier session's
        started = _init_ray(ws, address)
        # Tune's global registry keeps the first session's job id as its key prefix, while workers
        # look the trainable up under their own job's (ray-project/ray#33095): recompute it per session.
        from ray.tune.registry import _global_registry

        _global_registry._prefix = None
        yield started
    finally:
        if started:
            ray.shutdown()
            link = Path(os.environ.get("RAY_TMPDIR", ""))
            if link.is_symlink() and link.parent == Path("/tmp"):  # the short alias ray_tmpdir() made
                link.unlink(missing_ok=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if not ray.is_initialized():
            _refresh_ray_config()


def _refresh_ray_config() -> None:
    """Make Ray re-read its settings (the auth mode, the token) from the environment: it caches
    them per process, and a driver whose mode differs from the cluster's cannot hear its workers."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:  # a Ray without token auth
        return
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def _init_ray(ws: Workspace, address: str | None) -> bool:
    """Connect to Ray (see :func:`ray_session`, which restores the environment this sets)."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")  # the job records errors itself
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/TensorBoard/JSON per trial
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    for name in ("ray", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if ray.is_initialized():
        return False
    if address:  # the cluster's auth: RAY_AUTH_MODE and its token (RAY_AUTH_TOKEN or ~/.ray/auth_token)
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        return True
    tmp = ws.ray_tmpdir()
    os.environ["RAY_TMPDIR"] = str(tmp)
    if not any(os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")):
        # Ray's default for a new local cluster is token auth with a token it writes to
        # ~/.ray/auth_token (which later `ray start`s on the machine then use); keep ours in the workspace.
        os.environ["RAY_AUTH_MODE"], os.environ["RAY_AUTH_TOKEN_PATH"] = "token", str(ws.ray_auth_token())
        _refresh_ray_config()
    ray.init(_temp_dir=str(tmp), include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
             object_store_memory=256 * 1024**2)  # trials exchange only small dicts
    return True
