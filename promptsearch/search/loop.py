"""The search loop: one coordinator run of one job — the strategy's ask/tell, the trial records on
disk, MLflow — with no Ray in it (the dispatcher drives it).

    python -c "from promptsearch.search.loop import SearchLoop; help(SearchLoop.run)"

The loop owns the job's state: after every ask, epoch and tell it writes ``state.json``
atomically (strategy ``state_dict`` + trial records), so a coordinator killed at any point resumes
exactly: finished trials are kept, trials that were in flight are recorded ``preempted`` and
re-queued.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from ..jobs import JobError, JobSpec
from ..metrics import clean_metrics
from ..results import TrialResult, finite_rows
from .records import TrialRecord
from .summary import job_summary
from .workspace import Workspace, cancel_requested

log = logging.getLogger("promptsearch.search")

FINISHED = None  # what SearchLoop.ask returns when the job needs no more trials
Progress = Callable[[dict[str, Any]], None]
Fit = Callable[["SearchLoop", "str | None"], None]  # drives the trials: promptsearch.dispatch.fit.fit


class SearchLoop:
    """One coordinator run of one job: the strategy, the records, MLflow. Knows no Ray or Tune:
    :meth:`run` is handed the function that drives the trials (``promptsearch.dispatch.fit``), whose
    adapters translate Tune's calls into :meth:`ask`, :meth:`epoch`, :meth:`tell` (and
    :meth:`should_stop`, :meth:`error_reason`)."""

    def __init__(self, ws: Workspace, job_id: str, progress: Progress | None = None, started: float | None = None):
        from ..space import SearchSpace, SpaceFile
        from ..strategies import make_strategy

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

    def save(self, strategy: bool = False) -> None:
        """Write the state (with the strategy's, when ``strategy``) and tell the progress callback."""
        if strategy:
            self.state.strategy_state = self.strategy.state_dict()
        self.ws.write_state(self.state)
        if self.progress is not None:
            try:
                self.progress(job_summary(self.job, self.state, True))
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
    def run(self, fit: Fit, ray_address: str | None = None) -> None:
        """Run the job's remaining trials through ``fit(loop, address)`` and record how it ended."""
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
        self.save(strategy=True)
        error: BaseException | None = None
        try:
            if self.finished < self.spec.trials and self.failed < self.spec.failure_limit:
                with self._interruptible():
                    fit(self, address)
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

        old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        self.handle_signals()
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # ours, not Tune's
        try:
            yield
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)

    def handle_signals(self) -> None:
        """(Re)install the loop's SIGINT/SIGTERM handler: ``ray.init`` installs its own SIGTERM
        handler (which exits at once), so the dispatcher calls this again once Ray is up."""
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum, frame):
            if self.stop_reason == "interrupted":
                raise KeyboardInterrupt
            log.warning("%s: stopping the job's trials (again to abort)", signal.Signals(signum).name)
            self.stop_reason = "interrupted"

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, handler)

    def _start_tracking(self) -> None:
        from ..tracking import Tracker, experiment_name

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
            st.status = "interrupted"  # a signal (Ctrl-C, SIGTERM): resumable like a crash, not a user's cancel
            st.message = f"interrupted after {self.finished} of {self.spec.trials} trials; `promptsearch resume` continues it"
        else:
            st.status = "failed"
            st.message = str(error) if isinstance(error, JobError) else f"coordinator error: {type(error).__name__}: {error}"
        st.finished_at = time.time()
        st.coordinator = {**(st.coordinator or {}), "ended_at": time.time()}
        self._end_tracking()
        self.save(strategy=True)

    def _end_tracking(self) -> None:
        m = self.state.mlflow
        if self.tracker is None or not m.get("parent_run_id"):
            return
        from ..objectives import pareto_front

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

    def ask(self, tune_trial_id: str | None = None) -> dict[str, Any] | None:
        """The next trial's config (``strategy.ask()``, or a re-queued candidate first), or
        ``None`` (:data:`FINISHED`) when the job needs no more trials."""
        from ..space import Candidate

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
        self.save(strategy=True)
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
        self.save()

    def tell(self, trial_id: str, result: Any | None, error: str | None = None,
             node: dict[str, Any] | None = None, weights: str | None = None) -> None:
        """A trial ended: ``result`` is its ``TrialResult`` (None if it ended without one);
        ``error`` is set when Ray reports the trial errored (the worker raised or died)."""
        from ..objectives import hypervolume

        t = self.by_id.get(trial_id)
        if t is None or t.status != "running":
            return
        node = node or {}
        _where(t, node)
        if result is None and self.should_stop():  # stopped (or killed by the same Ctrl-C) as the job stops
            self._preempt(t, self._stop_text())
            self.save()
            return
        if result is None and error is None:
            error = "the trial ended without reporting a result"
        if result is None:
            result = TrialResult.failed(t.candidate, error, history=finite_rows(t.history), seed=t.seed)
        else:
            result = result.checked(o.name for o in self.objectives)
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
        self.save(strategy=True)

    def error_reason(self, trial_id: str, reason: str) -> None:
        """Ray's error text for an errored trial (arrives just after :meth:`tell`)."""
        t = self.by_id.get(trial_id)
        if t is None or t.status != "failed":
            return
        t.reason = reason
        if t.mlflow_run_id:
            self._track("set_reason", self.tracker.set_reason, t.mlflow_run_id, reason)
        self.save()


def _where(t: TrialRecord, node: dict[str, Any]) -> None:
    """Where (and with how much CPU) a trial ran: the fields the dispatcher reports."""
    for key, value in node.items():
        if value is not None:
            setattr(t, key, value)
