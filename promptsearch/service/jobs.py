"""The job API that the CLI and the REST service share: submit, run (or resume), cancel, status,
trials, front, repair.

    promptsearch search jobs/breast_pixel.yaml --workspace ./promptsearch-runs

Public, stable API (the REST server calls it, possibly from another process reading the same
workspace): :func:`submit`, :func:`run_job`, :func:`cancel`, :func:`job_status`, :func:`list_jobs`,
:func:`job_trials`, :func:`trial_page`, :func:`job_front`, :func:`check_readable`, :func:`repair`.
A job runs as a :class:`~promptsearch.search.loop.SearchLoop` driven by
:func:`promptsearch.dispatch.fit.fit`; its records live in the
:class:`~promptsearch.search.workspace.Workspace` (an event log per job: :mod:`promptsearch.search.state`).

Cost: :func:`job_status`, :func:`list_jobs` and :func:`job_front` read each job's small summary
and front files (O(running trials + front), whatever the job's size; no torch, no numpy);
:func:`job_trials` reads the whole log (O(trials)); :func:`trial_page` (the API's paged trials)
keeps the replayed log of the last few jobs it served and reads only what was appended since, so a
polling client pays O(new events + page) per request (plus a CRC of the log's bytes, which catches
a log changed in place), and the whole log once. A job whose files cannot be read lists as
``corrupt`` (with the file and the reason) and never breaks the listing of the others; reading its
trials or resuming it raises :class:`CorruptJob`.
"""

from __future__ import annotations

import collections
import copy
import json
import logging
import os
import secrets
import socket
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..files import atomic_write
from ..yamlio import JobError
from ..search.state import LOG, MIRROR, CorruptJob, EventError, JobStore, JobWriter, LogError, Replay, parse_events
from ..search.summary import corrupt_summary, job_summary
from ..search.workspace import (Workspace, WorkspaceError, as_workspace, cancel_requested, coordinator_alive,
                                job_lock, request_cancel)

if TYPE_CHECKING:
    from ..jobs import JobSpec
    from ..search.loop import Progress

__all__ = ["CorruptJob", "JobError", "PageOfTrials", "Workspace", "cancel", "check_readable", "coordinator_alive",
           "job_front", "job_status", "job_trials", "list_jobs", "repair", "run_job", "submit", "trial_page"]

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

    from ..jobs import check_job, job_space, resolve_paths
    from ..preflight import preflight

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


@dataclass
class PageOfTrials:
    """One page of a job's trials (:func:`trial_page`): ``total`` trials match, ``items`` are those
    from ``offset`` on: copies of their records, or the rows a ``rows`` function made of them."""

    total: int
    offset: int
    limit: int | None
    items: list[Any]


# Jobs whose replayed log trial_page keeps, with the rows made of it: ~6 kB a trial for the records
# and as much for the API's rows (a 10,000-trial job: ~120 MB). The dashboard polls one job at a time.
PAGE_CACHE_JOBS = 2


@dataclass
class _Replayed:
    """A job's log replayed up to byte ``offset`` (``lines`` events), ``crc`` the CRC-32 of those
    bytes: checked before anything after them is read, so a log replaced, cut back or changed in
    place is read again from its start (its damage then reported as the full read reports it)."""

    inode: int
    offset: int
    lines: int
    crc: int
    view: Replay
    lock: threading.Lock = field(default_factory=threading.Lock)
    rows: dict[Any, tuple[int, list[Any]]] = field(default_factory=dict)  # rows function -> (seq, rows)


class _TrialCache:
    """The replayed logs of the last :data:`PAGE_CACHE_JOBS` jobs :func:`trial_page` served."""

    def __init__(self, size: int):
        self.size, self.lock = size, threading.Lock()
        self.items: collections.OrderedDict[Path, _Replayed] = collections.OrderedDict()

    def get(self, key: Path) -> _Replayed | None:
        with self.lock:
            item = self.items.get(key)
            if item is not None:
                self.items.move_to_end(key)
            return item

    def put(self, key: Path, item: _Replayed) -> None:
        with self.lock:
            self.items[key] = item
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)

    def drop(self, key: Path) -> None:
        with self.lock:
            self.items.pop(key, None)


_trial_cache = _TrialCache(PAGE_CACHE_JOBS)


def _replayed(store: JobStore, static: dict[str, Any]) -> _Replayed:
    """The job's whole log replayed (every trial record): the cached replay plus what was appended
    since, or the log read again from its start (a new job, one ``repair`` replaced, damage)."""
    key = store.dir.resolve()
    item = _trial_cache.get(key)
    if item is not None:
        with item.lock:
            if _catch_up(store, item):
                return item
        _trial_cache.drop(key)
    before = os.stat(store.path(LOG))
    view, end = store.replay(static)  # or CorruptJob
    with open(store.path(LOG), "rb") as f:
        after = os.fstat(f.fileno())
        data = f.read(end)
    item = _Replayed(after.st_ino, end, view.seq + 1, zlib.crc32(data), view)
    if before.st_ino == after.st_ino and len(data) == end:  # the file replay() read (not replaced meanwhile)
        _trial_cache.put(key, item)
    return item


def _catch_up(store: JobStore, item: _Replayed) -> bool:
    """Apply what was appended to the log since ``item`` read it; False when the log is not what
    ``item`` read (replaced, cut back, changed in place, or what follows does not fit). Costs a
    read and a CRC of the log (~10 ms for a 10,000-trial job's 15 MB) plus the new events."""
    try:
        mirror = os.stat(store.path(MIRROR)).st_size  # first: both only grow, the log ahead of its mirror
    except FileNotFoundError:
        mirror = 0
    try:
        with open(store.path(LOG), "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_ino != item.inode or st.st_size < max(item.offset, mirror):
                return False
            data = f.read()
    except FileNotFoundError:
        return False
    if zlib.crc32(memoryview(data)[:item.offset]) != item.crc:
        return False
    new = data[item.offset:]
    try:
        events, end = parse_events(new, first_line=item.lines + 1)
        for ev in events:
            item.view.apply(ev)
    except (LogError, EventError):
        item.inode = -1  # half applied: no one uses it again
        return False  # the full read says what is wrong (CorruptJob), with the file and the line
    item.offset += end
    item.lines += len(events)
    item.crc = zlib.crc32(memoryview(new)[:end], item.crc)
    return True


def trial_page(workspace: Workspace | str | Path | None, job_id: str, offset: int = 0, limit: int | None = None,
               status: str | None = None,
               rows: Callable[[dict[str, Any], list[dict[str, Any]]], list[Any]] | None = None) -> PageOfTrials:
    """Trials ``offset`` to ``offset + limit`` (all from ``offset`` when ``limit`` is None) of a job,
    in start order, those of one ``status`` only when given: a page of what :func:`job_trials`
    returns, as copies of the records, or as ``rows(static, records)`` makes them (one row per
    record, from every record: the API's views, whose Pareto ranks are among all the job's trials;
    ``static`` is the job's fixed fields, its objectives among them). ``rows`` runs once per change
    of the log, and its rows are kept with the replayed log (see the module docstring) for the next
    call, so it must be a function that stays the same from call to call (a module's, not a lambda).
    Raises :class:`~promptsearch.search.state.CorruptJob` when the job's log cannot be read."""
    ws = as_workspace(workspace)
    store = ws.store(ws.resolve(job_id))
    static = store.static()
    if store.legacy:  # an old-format job: its state.json, read whole (they were small)
        records = store.read_trials()
        return _page(records, rows(static, records) if rows else None, offset, limit, status)
    item = _replayed(store, static)
    with item.lock:  # the records are the cache's own: nothing reads them while a catch-up changes them
        records = list(item.view.trials.values())
        made = None
        if rows is not None:
            seq, made = item.rows.get(rows, (None, None))
            if seq != item.view.seq:
                made = rows(static, records)
                item.rows[rows] = (item.view.seq, made)
        return _page(records, made, offset, limit, status)


def _page(records: list[dict[str, Any]], rows: list[Any] | None, offset: int, limit: int | None,
          status: str | None) -> PageOfTrials:
    index = [i for i, r in enumerate(records) if status is None or r["status"] == status]
    chosen = index[offset:None if limit is None else offset + limit]
    items = [copy.deepcopy(records[i]) for i in chosen] if rows is None else [rows[i] for i in chosen]
    return PageOfTrials(total=len(index), offset=offset, limit=limit, items=items)


def check_readable(workspace: Workspace | str | Path | None, job_id: str) -> None:
    """Raise :class:`~promptsearch.search.state.CorruptJob` (the file, the reason and what to do:
    ``promptsearch repair JOB``) unless everything a resume reads reads back: ``job.json`` and the
    whole event log (or an old job's ``state.json``). O(log): what a resume reads anyway."""
    ws = as_workspace(workspace)
    store = ws.store(ws.resolve(job_id))
    static = store.static()
    if store.legacy:
        store.read_legacy()
    else:
        store.replay(static, keep_finished=False, curve=False)


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
        from ..search.records import ranked

        trials = store.read_trials()
        front = [trials[i] for i in pareto_front(ranked(trials, static.get("front_stopped", False)),
                                                  [Objective(**o) for o in static["objectives"]])]
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
