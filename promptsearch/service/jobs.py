"""The job API that the CLI and the REST service share: submit, run (or resume), cancel, status,
trials, front.

    promptsearch search jobs/breast_pixel.yaml --workspace ./promptsearch-runs

Public, stable API (the REST server calls it, possibly from another process reading the same
workspace): :func:`submit`, :func:`run_job`, :func:`cancel`, :func:`job_status`, :func:`list_jobs`,
:func:`job_trials`, :func:`job_front`. A job runs as a :class:`~promptsearch.search.loop.SearchLoop`
driven by :func:`promptsearch.dispatch.fit.fit`; its records live in the
:class:`~promptsearch.search.workspace.Workspace`.
"""

from __future__ import annotations

import contextlib
import json
import socket
import secrets
import time
from pathlib import Path
from typing import Any

from ..files import atomic_write
from ..jobs import JobError, JobSpec, check_job, job_space, resolve_paths
from ..preflight import preflight
from ..search.loop import Progress, SearchLoop
from ..search.records import JobState
from ..search.summary import job_summary
from ..search.workspace import Workspace, as_workspace, coordinator_alive, job_lock, request_cancel

__all__ = ["JobError", "Workspace", "cancel", "coordinator_alive", "job_front", "job_status", "job_trials", "list_jobs", "run_job", "submit"]


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
    from ..objectives import pareto_front

    ws = as_workspace(workspace)
    job_id = ws.resolve(job_id)
    trials = job_trials(ws, job_id)
    objectives = JobSpec.model_validate(ws.read_job(job_id)["spec"]).objective_list
    return [trials[i] for i in pareto_front(trials, objectives)]


def job_status(workspace: Workspace | str | Path | None, job_id: str) -> dict[str, Any]:
    """A job's status (queued | running | completed | failed | cancelled), trial counts
    (finished/completed/failed/preempted/running), best value per objective, current hypervolume,
    and ``interrupted`` (its coordinator died: resume it)."""
    ws = as_workspace(workspace)
    job_id = ws.resolve(job_id)
    state = ws.read_state(job_id)
    alive = coordinator_alive(ws, job_id) if state.status in ("running", "queued") else None
    return job_summary(ws.read_job(job_id), state, alive)


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
        from ..dispatch.fit import fit

        SearchLoop(ws, job_id, progress, started=started).run(fit, ray_address)
    return job_status(ws, job_id)


