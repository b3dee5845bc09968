"""The search loop: one coordinator run of one job — the strategy's ask/tell, the job's event log,
MLflow — with no Ray in it (the dispatcher drives it).

    python -c "from promptsearch.search.loop import SearchLoop; help(SearchLoop.run)"

Every change is one event appended to the job's log (:mod:`.state`): O(1) per ask, epoch and
tell whatever the job's size. The strategy's state goes into a snapshot every
``SNAPSHOT_EVENTS`` events or ``SNAPSHOT_S`` seconds (and at every status change), without the
history the log already holds; a resume restores the newest snapshot, rebuilds the strategy's
bookkeeping from the log and replays only the asks and tells after it. The Pareto front and its
hypervolume are kept as trials finish (:class:`~.front.Front`). A coordinator killed at any point
resumes exactly: finished trials are kept, trials that were in flight are recorded ``preempted``
and re-queued.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any, Literal

from ..jobs import JobError, JobSpec
from ..metrics import clean_metrics
from ..results import TrialResult, finite_rows
from .front import Front
from .records import TrialRecord
from .state import JobStore, JobWriter, compact_record, static_info
from .summary import job_summary
from .workspace import Workspace, cancel_requested

log = logging.getLogger("promptsearch.search")

FINISHED = None  # what SearchLoop.ask returns when the job needs no more trials
Progress = Callable[[dict[str, Any]], None]
Fit = Callable[["SearchLoop", "str | None"], None]  # drives the trials: promptsearch.dispatch.fit.fit
REPEAT_ROUNDS = 3  # front_repeats: rounds of re-evaluating trials that join the front as members' means fall
MAX_WORKER_DEATHS = 3  # a candidate whose worker dies this many times is failed, not re-run again
WORKER_DEATH = "worker process died"  # how the dispatcher's error text starts when the process running a trial died


class ReplayMismatch(RuntimeError):
    """Replaying the log through a restored strategy proposed something else than was recorded."""


class SearchLoop:
    """One coordinator run of one job: the strategy, the records, MLflow. Knows no Ray or Tune:
    :meth:`run` is handed the function that drives the trials (``promptsearch.dispatch.fit``), whose
    adapters translate Tune's calls into :meth:`ask`, :meth:`epoch`, :meth:`tell` (and
    :meth:`should_stop`).

    ``tracking=False`` keeps no MLflow record (the scale benchmark measures the job's own
    persistence with it)."""

    def __init__(self, ws: Workspace, job_id: str, progress: Progress | None = None, started: float | None = None,
                 tracking: bool = True):
        from ..space import SearchSpace, SpaceFile

        self.ws, self.job_id, self.progress, self.tracking = ws, job_id, progress, tracking
        self.started = time.time() if started is None else started
        self.dir = ws.job_dir(job_id)
        store = JobStore(self.dir, job_id)
        self.job = store.read_record()
        self.spec = JobSpec.model_validate(self.job["spec"])
        self.space = SearchSpace(SpaceFile.model_validate(self.job["space"]), f"job {job_id}")
        if self.space.hash != self.job["space_hash"]:
            raise JobError(f"job {job_id}: stored space hash {self.job['space_hash']} != {self.space.hash}")
        self.objectives = self.spec.objective_list
        self.static = static_info(self.job)
        self.front = self._new_front()
        t0 = time.perf_counter()
        self.writer = JobWriter(store, self.static)
        self.view = self.writer.open(front=self.front, history=True)  # running trials only, counts, front
        history, self.view.history = self.view.history or [], None
        if (self.view.job.get("repeats") or {}).get("done"):  # the front is ranked by its seeds' means
            self.front = self._new_front(store.read_full().trials.values())
        self.degraded: str | None = None  # why the strategy could not be restored exactly
        self.strategy = self._restore_strategy(store, history)
        self.restore_s = time.perf_counter() - t0
        self.stop_reason: Literal["cancelled", "interrupted", "failed"] | None = None
        self.tracker = None
        self._cancel_checked = 0.0

    # --- the strategy, restored from a snapshot and the log -------------------------------------------
    def _new_strategy(self):
        from ..strategies import make_strategy

        return make_strategy(self.spec.strategy, self.space, self.objectives, seed=self.spec.seed,
                             **self.spec.strategy_kwargs)

    def _restore_strategy(self, store: JobStore, history: list[tuple]):
        """The newest snapshot that replays cleanly (its history from the log, then the asks and
        tells after it through the strategy itself), else a replay of the whole log from a fresh
        strategy, else (a strategy that no longer reproduces its asks) only its bookkeeping."""
        from ..strategies import StrategyError

        for snap in store.snapshots():
            s = self._new_strategy()
            try:
                s.load_state_dict(snap["strategy"], history=[h[1:] for h in history if h[0] <= snap["seq"]])
                _replay(s, [h for h in history if h[0] > snap["seq"]])
                return s
            except (StrategyError, ReplayMismatch, KeyError, TypeError, ValueError) as e:
                log.warning("job %s: strategy snapshot at event %s not usable (%s): trying an older one",
                            self.job_id, snap["seq"], e)
        s = self._new_strategy()
        try:
            _replay(s, history)
            return s
        except (StrategyError, ReplayMismatch, KeyError, ValueError) as e:
            self.degraded = f"the strategy could not be replayed ({e}): it restarts, knowing every asked candidate"
            log.warning("job %s: %s", self.job_id, self.degraded)
        s = self._new_strategy()
        s.load_state_dict(s.state_dict(history=False), history=[h[1:] for h in history])
        return s

    def _new_front(self, records: Collection[dict[str, Any]] = ()) -> Front:
        """The job's front (its objectives; stopped trials only if the job lets them on) over ``records``."""
        front = Front(self.objectives, include_stopped=self.static["front_stopped"])
        if records:
            front.extend(records)
        return front

    def _snapshot(self) -> None:
        self.writer.write_snapshot(self.strategy.state_dict(history=False))

    # --- bookkeeping -----------------------------------------------------------------------------------
    @property
    def finished(self) -> int:
        return self.view.finished

    @property
    def failed(self) -> int:
        return self.view.counts["failed"]

    @property
    def attempt(self) -> int:
        return self.view.job["attempts"]

    @property
    def in_flight(self) -> list[dict[str, Any]]:
        return self.view.running()

    def summary(self) -> dict[str, Any]:
        return job_summary(self.static, self.view, True)

    def _emit(self, kind: str, **fields: Any) -> None:
        """One event: appended, applied, shown; a strategy snapshot when one is due."""
        self.writer.emit(kind, **fields)
        if self.writer.snapshot_due():
            self._snapshot()
        if self.progress is not None:
            try:
                self.progress(self.summary())
            except Exception as e:  # noqa: BLE001 - a display must not stop the job
                log.warning("progress callback failed: %s", e)

    def _set(self, **fields: Any) -> None:
        self._emit("job", set=fields)

    def set_nodes(self, nodes: list[dict[str, Any]]) -> None:
        """The Ray nodes this run sees (the dispatcher reports them once Ray is up)."""
        self._set(coordinator={**(self.view.job["coordinator"] or {}), "nodes": nodes})

    def _track(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """MLflow calls never take a job down: a failure is logged and counted."""
        if self.tracker is None:
            return None
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - the record on disk stays complete
            log.warning("MLflow %s failed: %s", what, e)
            if self.writer.broken is None:
                m = dict(self.view.job["mlflow"])
                m["errors"] = m.get("errors", 0) + 1
                self._set(mlflow=m)
            return None

    def _preempt(self, t: dict[str, Any], reason: str, node: dict[str, Any] | None = None, deaths: int = 0) -> None:
        """An unfinished trial: recorded ``preempted`` (not failed) and its candidate re-queued."""
        self._emit("preempt", id=t["trial_id"], reason=reason, node=_changed(t, node), requeue=True, deaths=deaths)
        if t.get("mlflow_run_id") and self.tracker is not None:
            self._track("preempt", self.tracker.end_trial, t["mlflow_run_id"], t)

    # --- the run -----------------------------------------------------------------------------------------
    def run(self, fit: Fit, ray_address: str | None = None) -> None:
        """Run the job's remaining trials through ``fit(loop, address)`` and record how it ended."""
        address = ray_address or self.spec.ray_address
        attempt = self.attempt + 1
        if self.tracking:
            self._start_tracking()
        for t in self.in_flight:  # the previous coordinator died with these in flight
            self._preempt(t, f"coordinator stopped before the trial finished (attempt {t['attempt']})")
        coordinator = {"pid": os.getpid(), "host": socket.gethostname(), "attempt": attempt,
                       "ray_address": address or "local", "started_at": time.time(),
                       "cancel_since": self.started}  # cancel requests from then on are this run's
        if self.degraded:
            coordinator["degraded"] = self.degraded
        self._set(attempts=attempt, coordinator=coordinator, status="running", message=None,
                  started_at=self.view.job["started_at"] or time.time(), finished_at=None,
                  **({"mlflow": self._mlflow} if self.tracker is not None else {}))
        self._snapshot()
        error: BaseException | None = None
        try:
            if (self.finished < self.spec.trials or self._repeats_pending()) and self.failed < self.spec.failure_limit:
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
            m = dict(self.view.job["mlflow"])
            m["tracking_uri"] = uri
            m["experiment_id"] = self.tracker.experiment(self.space.name, self.space.hash)
            m["experiment_name"] = experiment_name(self.space.name, self.space.hash)
            m["parent_run_id"] = self.tracker.start_job(m["experiment_id"], self.job_id, self.job["spec"],
                                                        self.space.hash, m.get("parent_run_id"))
        except Exception as e:  # noqa: BLE001
            self.tracker = None
            raise JobError(f"MLflow tracking at {uri} is not usable: {e}") from e
        self._mlflow = m
        log.info("MLflow ready in %.1f s", time.perf_counter() - t0)
        if self.attempt:  # a resume: end the runs of trials that finished as the last coordinator died
            self._track("reconcile", self._end_open_runs, m)

    def _end_open_runs(self, m: dict[str, Any]) -> None:
        open_runs = self.tracker.open_trial_runs(m["experiment_id"], self.job_id)
        running = {t["trial_id"] for t in self.in_flight}  # preempted below, which ends their runs
        stale = {k: v for k, v in open_runs.items() if k not in running}
        if not stale:
            return
        for t in self.writer.store.read_full().trials.values():
            if t["trial_id"] in stale and t["status"] != "running" and t.get("mlflow_run_id") == stale[t["trial_id"]]:
                self.tracker.end_trial(stale[t["trial_id"]], t)

    def _finish(self, error: BaseException | None) -> None:
        if self.writer.broken is not None:  # the log cannot take more: it says running, a resume continues
            self._end_tracking("interrupted", f"the job's log could not be written: {self.writer.broken}")
            self.writer.close()
            return
        cancelled = self.stop_reason == "cancelled" or cancel_requested(self.ws, self.job_id, self.started)
        for t in self.in_flight:
            self._preempt(t, self._stop_text())
        failure = self.view.last_failure
        last = ((failure[1] if failure else "") or "?").splitlines()[0]
        if self.finished >= self.spec.trials and self.failed == self.finished:
            status = "failed"  # nothing to show for it: no front, nothing to export
            message = f"all {self.failed} trials failed; last failure: {last}"
        elif self.finished >= self.spec.trials and not self._repeats_pending():
            status, message = "completed", None
        elif self.stop_reason == "failed" or self.failed >= self.spec.failure_limit:
            status = "failed"
            message = (f"stopped: {self.failed} trials failed (max_failures={self.spec.failure_limit}); "
                       f"last failure: {last}")
        elif cancelled:
            status, message = "cancelled", "cancelled; `promptsearch resume` continues it"
        elif isinstance(error, KeyboardInterrupt) or error is None or self.stop_reason == "interrupted":
            status = "interrupted"  # a signal (Ctrl-C, SIGTERM): resumable like a crash, not a user's cancel
            message = f"interrupted after {self.finished} of {self.spec.trials} trials; `promptsearch resume` continues it"
        else:
            status = "failed"
            message = str(error) if isinstance(error, JobError) else f"coordinator error: {type(error).__name__}: {error}"
        self._end_tracking(status, message)
        self._set(status=status, message=message, finished_at=time.time(),
                  coordinator={**(self.view.job["coordinator"] or {}), "ended_at": time.time()})
        self._snapshot()
        self.writer.close()

    def _end_tracking(self, status: str, message: str | None) -> None:
        m = self.view.job["mlflow"]
        if self.tracker is None or not m.get("parent_run_id"):
            return
        front = self.front.records()
        for t in front:
            if t["weights"] and t["mlflow_run_id"] and Path(t["weights"]).exists():
                self._track("weights", self.tracker.log_weights, t["mlflow_run_id"], t["weights"])
        summary = [{"trial_id": t["trial_id"], "architecture": t["candidate"]["architecture"],
                    "genome": t["candidate"]["genome"], "metrics": t["metrics"], "test_metrics": t["test_metrics"],
                    "mlflow_run_id": t["mlflow_run_id"]} for t in front]
        curve = self.writer.store.read_curve(self.finished) or []
        self._track("end_job", self.tracker.end_job, m["parent_run_id"], status, message,
                    self.dir / "job.yaml", summary, [(n, hv) for n, hv, _ in curve])

    # --- what the Tune adapters call ------------------------------------------------------------------------
    def should_stop(self, now: bool = False) -> bool:
        """Polled every Tune step (the cancel file at most twice a second; ``now``: look now):
        a cancel request, a signal, or too many failures."""
        t = time.monotonic()
        if self.writer.broken is not None:
            return True  # nothing more can be recorded
        if self.stop_reason is None and (now or t - self._cancel_checked > 0.5):
            self._cancel_checked = t
            if cancel_requested(self.ws, self.job_id, self.started):
                self.stop_reason = "cancelled"
        return self.stop_reason is not None

    def waiting(self) -> bool:
        """Whether a :data:`FINISHED` from :meth:`ask` means "not now": the job is not stopping and
        is short of its trials, so a trial in flight that is preempted (its worker died) will be
        re-run — the dispatcher asks again later instead of finishing."""
        return not self.should_stop() and (self.finished < self.spec.trials or self._repeats_pending())

    def _stop_text(self) -> str:
        return {"cancelled": "job cancelled", "interrupted": "job interrupted",
                "failed": "job stopped after too many failures"}.get(self.stop_reason or "", "coordinator stopped")

    def ask(self, tune_trial_id: str | None = None) -> dict[str, Any] | None:
        """The next trial's config (``strategy.ask()``, or a re-queued candidate first), or
        ``None`` (:data:`FINISHED`) when the job needs no more trials."""
        from ..space import Candidate

        view = self.view
        if self.should_stop():
            return FINISHED
        if self.finished + self._main_running >= self.spec.trials:
            return self._ask_repeat(tune_trial_id)
        if view.requeue:
            item = view.requeue[0]
            candidate, requeued_from = Candidate.from_json(self.space, item["candidate"]), item["from"]
        else:
            candidate, requeued_from = self.strategy.ask(), None
        return self._start(candidate.to_json(), self.spec.seed, tune_trial_id, requeued_from=requeued_from)

    def _start(self, candidate: dict[str, Any], seed: int, tune_trial_id: str | None, **fields: Any) -> dict[str, Any]:
        """Record a new trial (an ask event, an MLflow run) and return its Tune config."""
        view = self.view
        record = TrialRecord(trial_id=f"t{view.next_index:04d}", index=view.next_index, candidate=candidate,
                             seed=seed, attempt=self.attempt, tune_trial_id=tune_trial_id,
                             **fields).model_dump(mode="json")
        config = {"trial_id": record["trial_id"], "genome": list(candidate["genome"]), "seed": record["seed"]}
        m = view.job["mlflow"]
        if self.tracker is not None:
            trial_config = {**config, "job_id": self.job_id, "candidate": record["candidate"],
                            "backbone": self.job["spec"]["backbone"], "budget": self.job["spec"]["budget"],
                            "dataset": self.spec.dataset}
            record["mlflow_run_id"] = self._track("start_trial", self.tracker.start_trial, m["experiment_id"],
                                                  m["parent_run_id"], self.job_id, self.spec.strategy, self.space.hash,
                                                  record, trial_config)
        self._emit("ask", trial=compact_record(record))
        return config

    # --- re-evaluating the front with more seeds (front_repeats) ------------------------------------------
    @property
    def _main_running(self) -> int:
        return self.view.counts["running"] - self.view.repeats_running

    def _repeats_pending(self) -> bool:
        """Whether the job's front re-evaluation is still to run (or to fold in)."""
        rep = self.view.job.get("repeats")
        return bool(self.spec.front_repeats) and not (rep or {}).get("done")

    def _ask_repeat(self, tune_trial_id: str | None) -> dict[str, Any] | None:
        """Once the search's trials are done: the next re-evaluation trial (a completed front
        trial with one more seed), else :data:`FINISHED`. The plan is in the job's record (fixed
        when the last search trial ends, extended by each round), so a resume runs the same
        re-evaluations."""
        if not self._repeats_pending() or self._main_running or self.finished < self.spec.trials:
            return FINISHED
        rep = self.view.job.get("repeats")
        if rep is None:
            members = self.front.records()
            rep = {"k": self.spec.front_repeats, "round": 1, "plan": [], "candidates": {}, "done": False,
                   "front_before": [r["trial_id"] for r in members]}
            self._set(repeats=self._plan(rep, members))
            rep = self.view.job["repeats"]
        for trial_id, seed in rep["plan"]:
            if (trial_id, seed) not in self.view.repeat_trials:
                return self._start(rep["candidates"][trial_id], seed, tune_trial_id, repeat_of=trial_id)
        planned = len(rep["plan"])
        self._repeats_progress()  # every planned one has ended: fold them in (which may plan another round)
        grew = self._repeats_pending() and len(self.view.job["repeats"]["plan"]) > planned
        return self._ask_repeat(tune_trial_id) if grew else FINISHED

    def _plan(self, rep: dict[str, Any], members: list[dict[str, Any]]) -> dict[str, Any]:
        """``rep`` with every completed trial of ``members`` planned for ``front_repeats`` more seeds."""
        new = [r for r in members if r["status"] == "completed" and r["trial_id"] not in rep["candidates"]]
        return {**rep, "plan": [*rep["plan"], *([r["trial_id"], self.spec.seed + i] for r in new
                                                for i in range(1, self.spec.front_repeats + 1))],
                "candidates": {**rep["candidates"], **{r["trial_id"]: r["candidate"] for r in new}}}

    def _repeats_progress(self) -> None:
        """When every planned re-evaluation has ended: each re-run trial's mean and sd over its
        seeds (a ``repeats`` event each) and the front recomputed on the means. A trial that joins
        the front only now (a member's mean fell below it) has one seed: it is re-evaluated too,
        in another round (at most :data:`REPEAT_ROUNDS`); then ``front.json``, and which trials
        moved off the front (the job's ``repeats``)."""
        rep = self.view.job.get("repeats")
        if rep is None or rep.get("done"):
            return
        if any(self.view.repeat_trials.get((i, s)) in (None, "running") for i, s in rep["plan"]):
            return
        trials = self.writer.store.read_full().trials  # once a round: every record, for the new front
        for trial_id in dict.fromkeys(i for i, _ in rep["plan"]):
            t = trials[trial_id]
            if t.get("repeats") is None:
                runs = [{"trial_id": trial_id, "seed": t["seed"], "metrics": t["metrics"]},
                        *self.view.repeat_results.get(trial_id, [])]
                t["repeats"] = seed_summary(runs)
                self._emit("repeats", id=trial_id, set=t["repeats"])
        front = self._new_front(trials.values())
        members = front.records()
        if any(r["status"] == "completed" and r["trial_id"] not in rep["candidates"] for r in members) \
                and rep["round"] < REPEAT_ROUNDS:
            self._set(repeats={**self._plan(rep, members), "round": rep["round"] + 1})
            return
        self._emit("repeats", front=True, hv=front.hypervolume)
        self.front = front
        self.writer.write_front(front, fresh=True)
        self._set(repeats={**{k: v for k, v in rep.items() if k != "candidates"}, "done": True,
                           "front_after": [r["trial_id"] for r in members],
                           "moved_off": [i for i in rep["front_before"] if i not in front]})

    def epoch(self, trial_id: str, row: dict[str, float], node: dict[str, Any],
              rung_result: TrialResult | None = None) -> bool:
        """One epoch's validation metrics of a running trial; whether it goes on. At a rung of the
        job's scheduler (``rung_result``: the trial as if it ended there) the trial is ranked
        among the vectors recorded at that rung (:func:`promptsearch.rungs.promote`); the decision
        is logged (a ``rung`` event) before it is acted on."""
        t = self.view.trials.get(trial_id)
        if t is None or t["status"] != "running":
            return True
        self._emit("epoch", id=trial_id, row=clean_metrics(row), node=_changed(t, node))
        if t.get("mlflow_run_id"):
            self._track("log_epoch", self.tracker.log_epoch, t["mlflow_run_id"], row)
        scheduler = self.spec.scheduler
        if scheduler is None or rung_result is None or rung_result.rung is None or t.get("repeat_of"):
            return True
        from ..objectives import metrics_row, normalised_values
        from ..rungs import promote

        raw = metrics_row(rung_result.metrics, self.objectives)
        if raw is None:  # a non-finite objective at the rung: the trial goes on (and fails or recovers)
            return True
        vector = [round(float(x), 9) for x in normalised_values(raw, self.objectives)[0]]
        rung = int(rung_result.rung)
        recorded = [v for k, v in self.view.rungs.get(rung, {}).items() if k != trial_id]
        columns = self._informative(rung)
        go = promote(recorded, vector, scheduler, self._weights, columns)
        by = {} if columns is None else {"by": [o.name for o, c in zip(self.objectives, columns) if c]}
        self._emit("rung", id=trial_id, rung=rung, v=vector, go=go, **by)
        return go

    def _informative(self, rung: int):
        """The objectives that rank at ``rung`` (:func:`promptsearch.rungs.informative`: from the
        completed trials ranked there, their vector at the rung against their final one); None: all."""
        from ..objectives import metrics_row, normalised_values
        from ..rungs import informative

        scheduler, at = self.spec.scheduler, self.view.rungs.get(rung, {})
        if scheduler.informative_rho is None:
            return None
        pairs = [(at[k], row) for k, m in self.view.finals.items()
                 if k in at and (row := metrics_row(m, self.objectives)) is not None]
        final = normalised_values([row for _, row in pairs], self.objectives)  # (n, m); (0, m) when none yet
        return informative([v for v, _ in pairs], final, scheduler)

    @functools.cached_property
    def _weights(self):  # the job's scalarization weights (the scalar rung ranking uses them)
        from ..objectives import Scalarization

        return Scalarization(**(self.spec.scalarization or {})).weights(self.objectives)

    def tell(self, trial_id: str, result: Any | None, error: str | None = None,
             node: dict[str, Any] | None = None, weights: str | None = None) -> None:
        """A trial ended: ``result`` is its ``TrialResult`` (None if it ended without one);
        ``error`` is set when Ray reports the trial errored. A trial whose worker process died
        (``error`` starts with "worker process died": killed for memory, a lost node) is
        infrastructure, not the candidate: it is preempted and re-run, and counts as failed only
        when its candidate's worker died :data:`MAX_WORKER_DEATHS` times."""
        t = self.view.trials.get(trial_id)
        if t is None or t["status"] != "running":
            return
        if result is not None and result.stopped and self.view.stops.get(trial_id) != result.rung:
            result = None  # a rung's report, but the scheduler did not stop it there: Tune ended it otherwise
        if result is None and self.should_stop():  # stopped (or killed by the same Ctrl-C) as the job stops
            self._preempt(t, self._stop_text(), node)
            return
        if result is None and error and error.startswith(WORKER_DEATH):
            deaths = self.view.deaths.get(trial_id, 0) + 1
            if deaths < MAX_WORKER_DEATHS:
                self._preempt(t, error, node, deaths=deaths)
                return
            error = f"{error} (the worker died in {deaths} runs of this candidate)"
        if result is None and error is None:
            error = "the trial ended without reporting a result"
        if result is None:
            result = TrialResult.failed(t["candidate"], error, history=finite_rows(t["history"]), seed=t["seed"])
        else:
            result = result.checked(o.name for o in self.objectives)
        status = result.status if result.status in ("completed", "stopped") else "failed"
        now = time.time()
        fields: dict[str, Any] = {"status": status,
                                  "reason": result.reason, "metrics": clean_metrics(result.metrics),
                                  "test_metrics": clean_metrics(result.test_metrics), "finished_at": now,
                                  "wall_time_s": result.wall_time_s or (now - t["started_at"]),
                                  "weights": weights if (weights and status != "failed") else None,
                                  "epochs": result.epochs or len(result.history) or None,
                                  "image_passes": result.image_passes or None,
                                  **({"rung": result.rung} if status == "stopped" else {}),
                                  **_changed(t, node)}
        if result.history:
            history = [clean_metrics(h) for h in result.history]
            if history != t["history"]:
                fields["history"] = history
        if t.get("repeat_of"):  # a re-evaluation of a front trial: not the strategy's, not on the front
            self._emit("tell", id=trial_id, set=fields, hv=[self.finished, self.front.hypervolume])
            if record_id := t.get("mlflow_run_id"):
                self._track("end_trial", self.tracker.end_trial, record_id, {**t, **fields})
            self._repeats_progress()
            return
        self._tell_strategy(t["candidate"]["key"], result)
        record = {**t, **fields}
        finished = self.finished + 1
        changed = fields["status"] != "failed" and self.front.add(record)
        hv = self.front.hypervolume
        passes = result.image_passes
        full = round(passes * self.spec.budget.epochs / result.epochs) if result.epochs else passes
        self._emit("tell", id=trial_id, set=fields, hv=[finished, hv], passes=[passes, full],
                   **({"front": True} if changed else {}))
        self.writer.append_curve([finished, hv, trial_id])
        if changed:
            self.writer.write_front(self.front)
        if record.get("mlflow_run_id"):
            self._track("end_trial", self.tracker.end_trial, record["mlflow_run_id"], record)
            counts = {k: self.view.counts[k] for k in ("completed", "stopped", "failed")}
            self._track("job_progress", self.tracker.job_progress, self.view.job["mlflow"]["parent_run_id"],
                        self.finished, hv, counts)
        if self.failed >= self.spec.failure_limit and self.finished < self.spec.trials:
            self.stop_reason = "failed"

    def _tell_strategy(self, key: str, result: TrialResult) -> None:
        from ..strategies import StrategyError

        try:
            self.strategy.tell(key, result)
        except (StrategyError, KeyError) as e:
            if not self.degraded:
                raise
            log.warning("job %s: the restarted strategy cannot learn from %s: %s", self.job_id, key, e)


def seed_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample sd of every metric the runs of one candidate (one per seed) all measured."""
    import statistics

    names = set.intersection(*(set(k for k, v in r["metrics"].items() if isinstance(v, (int, float))) for r in runs))
    mean = {n: statistics.fmean(r["metrics"][n] for r in runs) for n in sorted(names)}
    sd = {n: statistics.stdev([r["metrics"][n] for r in runs]) if len(runs) > 1 else 0.0 for n in sorted(names)}
    return {"n": len(runs), "seeds": [r["seed"] for r in runs], "trials": [r["trial_id"] for r in runs],
            "mean": mean, "sd": sd}


def _changed(t: dict[str, Any], node: dict[str, Any] | None) -> dict[str, Any]:
    """The fields of ``node`` (where, and with how much CPU, a trial ran) that are new for ``t``."""
    return {k: v for k, v in (node or {}).items() if v is not None and t.get(k) != v}


def _replay(strategy: Any, events: list[tuple]) -> None:
    """Asks and tells through the strategy itself, each ask checked against the recorded genome."""
    for ev in events:
        if ev[1] == "ask":
            got = strategy.ask().genome
            if tuple(got) != tuple(ev[2]):
                raise ReplayMismatch(f"event {ev[0]}: the strategy proposed {list(got)}, the log has {list(ev[2])}")
        else:
            strategy.tell(ev[2], ev[3])
