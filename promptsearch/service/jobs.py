"""The job API that the CLI and the REST service share: submit, run (or resume), cancel, status,
trials, front, repair.

    promptsearch search jobs/breast_pixel.yaml --workspace ./promptsearch-runs

Public, stable API (the REST server calls it, possibly from another process reading the same
workspace): :func:`submit`, :func:`run_job`, :func:`cancel`, :func:`job_status`, :func:`list_jobs`,
:func:`job_trials`, :func:`job_front`, :func:`repair`. A job runs as a
:class:`~promptsearch.search.loop.SearchLoop` driven by :func:`promptsearch.dispatch.fit.fit`; its
records live in the :class:`~promptsearch.search.workspace.Workspace` (an event log per job:
:mod:`promptsearch.search.state`).

Cost: :func:`job_status`, :func:`list_jobs` and :func:`job_front` read each job's small summary
and front files (O(running trials + front), whatever the job's size; no torch, no numpy);
:func:`job_trials` reads the whole log (O(trials)). A job whose files cannot be read lists as
``corrupt`` (with the file and the reason) and never breaks the listing of the others.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..files import atomic_write
from ..jobs import JobError, JobSpec, check_job, job_space, resolve_paths
from ..preflight import preflight
from ..search.state import CorruptJob, JobStore, JobWriter
from ..search.summary import corrupt_summary, job_summary
from ..search.workspace import (Workspace, WorkspaceError, as_workspace, cancel_requested, coordinator_alive,
                                job_lock, request_cancel)

if TYPE_CHECKING:
    from ..search.loop import Progress

__all__ = ["CorruptJob", "JobError", "Workspace", "cancel", "coordinator_alive", "job_front", "job_status", "job_trials",
           "list_jobs", "repair", "run_job", "submit"]

log = logging.getLogger("promptsearch.service")


def submit(workspace: Workspace | str | Path | None, spec: JobSpec, job_file: str | None = None,
           base_dir: str | Path | None = None, checked: bool = False) -> str:
    """Record a job (status ``queued``) and return its id; :func:`run_job` runs it.

    Relative paths resolve against ``base_dir`` (default: the current directory); the stored job
    keeps its space itself, so editing the space file later does not change a submitted job.
    ``checked``: the caller already ran :func:`~promptsearch.jobs.check_job` on ``spec`` (the
    loaders do, naming the file and line): it is not run a second time.
    """
    import yaml

    ws = as_workspace(workspace)
    spec = resolve_paths(spec, base_dir)
    space = job_space(spec) if checked else check_job(spec)
    preflight(spec, ws)  # workspace space, dataset and weights checked before anything is written (names the file)
    job_id = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    final = ws.job_dir(job_id)
    d = final.with_name(f".{job_id}.submitting")  # written whole, then renamed: no reader sees half a job
    (d / "weights").mkdir(parents=True)
    record = {"job_id": job_id, "spec": spec.model_dump(mode="json"), "space": space.to_dict(),
              "space_name": space.name, "space_hash": space.hash, "created_at": time.time(),
              "host": socket.gethostname()}
    atomic_write(d / "job.json", json.dumps(record, indent=2))
    atomic_write(d / "job.yaml", job_file or yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    JobWriter.create(JobStore(d, job_id), record)  # the event log (status queued) and its summary
    d.rename(final)
    return job_id


def cancel(workspace: Workspace | str | Path | None, job_id: str) -> dict[str, Any]:
    """Stop a job cleanly: a running coordinator stops its trials (recorded ``preempted``) and
    marks the job ``cancelled`` (until then its status reads ``cancelling``); a queued or
    interrupted job is marked at once. Returns its status."""
    ws = as_workspace(workspace)
    job_id = ws.resolve(job_id)
    if ws.store(job_id).read_view()[0].job["status"] in ("completed", "failed"):
        return job_status(ws, job_id)
    try:
        with job_lock(ws, job_id, wait_s=0):
            store = ws.store(job_id)  # no coordinator: mark it here
            writer = JobWriter(store, store.static())
            view = writer.open()
            try:
                if view.job["status"] not in ("completed", "failed", "cancelled"):
                    for t in view.running():
                        writer.emit("preempt", id=t["trial_id"], reason="job cancelled", requeue=True)
                    writer.emit("job", set={"status": "cancelled", "message": "cancelled before it ran to the end",
                                            "finished_at": time.time()})
            finally:
                writer.close()
    except WorkspaceError:
        # A coordinator holds the lock (running, starting Ray, or resuming a cancelled job): the
        # request is written after it took the lock, so it is newer than the coordinator's start,
        # and it stops at its next look (twice a second, and before Ray and Tune start).
        request_cancel(ws, job_id)
    return job_status(ws, job_id)


def job_trials(workspace: Workspace | str | Path | None, job_id: str) -> list[dict[str, Any]]:
    """Every trial record of a job, in start order: trial_id, candidate, status, reason, metrics,
    test_metrics, history, weights (path when saved), node, timings. Raises
    :class:`~promptsearch.search.state.CorruptJob` when the job's log cannot be read."""
    ws = as_workspace(workspace)
    return ws.store(ws.resolve(job_id)).read_trials()


def job_front(workspace: Workspace | str | Path | None, job_id: str) -> list[dict[str, Any]]:
    """The trial records on the job's Pareto front (non-dominated completed trials), in start
    order: ``front.json``, which the coordinator replaces whenever the front changes."""
    ws = as_workspace(workspace)
    job_id = ws.resolve(job_id)
    return front_records(ws.store(job_id))[0]


def front_records(store: JobStore) -> tuple[list[dict[str, Any]], Any, dict[str, Any]]:
    """(front records, the job's view, its static fields): front.json when it matches the log,
    else computed from every trial (a reader racing the coordinator, an old-format job)."""
    view, static = store.read_view()
    if view.front_seq is None:
        return [], view, static
    front = None if store.legacy else store.read_front(view.front_seq)
    if front is None:
        from ..objectives import Objective, pareto_front

        trials = store.read_trials()
        front = [trials[i] for i in pareto_front(trials, [Objective(**o) for o in static["objectives"]])]
    return front, view, static


def job_status(workspace: Workspace | str | Path | None, job_id: str) -> dict[str, Any]:
    """A job's status (queued | running | cancelling | completed | failed | cancelled |
    interrupted, or corrupt), trial counts (finished/completed/failed/preempted/running), best
    value per objective, current hypervolume, and ``interrupted`` (its coordinator died: resume it)."""
    ws = as_workspace(workspace)
    return _status(ws, ws.resolve(job_id))


def _status(ws: Workspace, job_id: str) -> dict[str, Any]:
    store = ws.store(job_id)
    try:
        view, static = store.read_view()
    except CorruptJob as e:
        return corrupt_summary(job_id, e, _created(ws, job_id))
    status = view.job["status"]
    alive = coordinator_alive(ws, job_id) if status in ("running", "queued") else None
    summary = job_summary(static, view, alive)
    if alive:
        coordinator = view.job["coordinator"] or {}
        since = coordinator.get("cancel_since", coordinator.get("started_at", 0.0)) if status == "running" else 0.0
        if cancel_requested(ws, job_id, since):
            summary["status"] = "cancelling"
            summary["message"] = "cancel requested: its coordinator is stopping the trials"
    return summary


def _created(ws: Workspace, job_id: str) -> float:
    try:
        return ws.job_dir(job_id).stat().st_mtime
    except OSError:
        return 0.0


def list_jobs(workspace: Workspace | str | Path | None = None) -> list[dict[str, Any]]:
    """:func:`job_status` of every job in the workspace, oldest first; a job whose files cannot
    be read is listed ``corrupt`` (never an error: one damaged job must not hide the others)."""
    ws = as_workspace(workspace)
    out = []
    for job_id in ws.job_ids():
        try:
            out.append(_status(ws, job_id))
        except Exception as e:  # noqa: BLE001 - whatever is wrong with one job's files
            log.warning("job %s: %s", job_id, e)
            out.append(corrupt_summary(job_id, CorruptJob(job_id, "?", f"{type(e).__name__}: {e}"),
                                       _created(ws, job_id)))
    return sorted(out, key=lambda s: s["created_at"] or 0.0)


def repair(workspace: Workspace | str | Path | None, job_id: str) -> list[str]:
    """Restore a corrupt job from its second copies (the log's mirror; job.json from the log's
    first line) and rebuild its derived files; says what it did and what, if anything, was lost.
    Refuses while a coordinator runs the job."""
    from ..search.state import repair as repair_store

    ws = as_workspace(workspace)
    job_id = ws.resolve(job_id)
    try:
        with job_lock(ws, job_id, wait_s=0):
            return repair_store(ws.store(job_id))
    except WorkspaceError:
        raise WorkspaceError(f"job {job_id} is running in a coordinator: cancel it (or wait) before repairing") from None


def run_job(workspace: Workspace | str | Path | None, job_id: str, progress: Progress | None = None, *,
            ray_address: str | None = None, resume_cancelled: bool = False) -> dict[str, Any]:
    """Run a job to its end in this process (blocking) and return its final :func:`job_status`.

    A queued job starts; an interrupted one (its coordinator was killed) resumes: strategy state
    restored, finished trials kept, trials that were in flight re-queued (recorded ``preempted``).
    A cancelled job resumes only with ``resume_cancelled``. ``progress`` is called with a
    status dict after every event. ``ray_address`` overrides the job's (``auto``/host:port).
    A corrupt job raises :class:`~promptsearch.search.state.CorruptJob`, which says what to do.
    """
    ws = as_workspace(workspace)
    job_id = ws.resolve(job_id)
    with job_lock(ws, job_id):
        started = time.time()  # cancel requests older than this were for an earlier run
        status = ws.store(job_id).read_view()[0].job["status"]
        if status == "completed":
            return job_status(ws, job_id)
        if status == "cancelled" and not resume_cancelled:
            raise JobError(f"job {job_id} was cancelled; `promptsearch resume {job_id}` continues it")
        from ..dispatch.fit import fit
        from ..search.loop import SearchLoop

        SearchLoop(ws, job_id, progress, started=started).run(fit, ray_address)
    return job_status(ws, job_id)
