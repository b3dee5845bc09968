"""The workspace: one directory holding every job's records, Ray's files and the MLflow store,
with the lock that lets one coordinator run a job and the file that asks it to stop.

    python -c "from promptsearch.search.workspace import Workspace; print(Workspace('promptsearch-runs').job_ids())"

Layout (everything a job writes)::

    <workspace>/jobs/<job id>/job.json      the submitted job (absolute paths) + its space, immutable
                             /job.yaml      the job file as submitted
                             /events.jsonl, /events.bak.jsonl   the job's event log and its mirror (the record)
                             /snapshot.json, /summary.json, /front.json, /hypervolume.jsonl   derived (state.py)
                             /weights/<trial>.safetensors   prompt + head weights of each trial
                             /coordinator.lock, /cancel     liveness lock, cancel request
               /tune/<job id>/attempt-<n>/  Ray Tune's storage (one experiment per coordinator run)
               /ray/                        RAY_TMPDIR of a locally started Ray
               /mlflow/mlflow.db, /mlflow/artifacts/   MLflow record (default tracking URI)

Safe to read from other processes while a job runs: the log is only appended to (a reader drops
an incomplete last line), every other file is replaced atomically. Jobs written by earlier releases
(one ``state.json``) read as before and become event logs when they are resumed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..files import atomic_write
from ..yamlio import JobError
from .records import JobState
from .state import LEGACY, LOG, MIRROR, CorruptJob, JobStore

__all__ = ["CorruptJob", "DEFAULT_WORKSPACE", "Workspace", "WorkspaceError", "as_workspace", "cancel_requested",
           "coordinator_alive", "job_lock", "request_cancel"]

DEFAULT_WORKSPACE = "promptsearch-runs"


class WorkspaceError(JobError):
    """No such job, an ambiguous prefix, or a job another coordinator holds."""


class Workspace:
    """One directory holding jobs, Ray Tune storage, Ray's temp dir and the MLflow store.

    ``root`` default: ``$PROMPTSEARCH_WORKSPACE`` or ``./promptsearch-runs``. Safe to read from
    other processes while a job runs (see the module docstring).
    """

    def __init__(self, root: str | Path | None = None):
        root = root or os.environ.get("PROMPTSEARCH_WORKSPACE") or DEFAULT_WORKSPACE
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    @property
    def tune_dir(self) -> Path:
        return self.root / "tune"

    @property
    def mlflow_dir(self) -> Path:
        return self.root / "mlflow"

    @property
    def tracking_uri(self) -> str:
        """The default MLflow tracking URI: a SQLite file in the workspace."""
        return f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.mlflow_dir / "artifacts"

    def ray_tmpdir(self) -> Path:
        """``<root>/ray``; reached through a short /tmp symlink when the path is too long for
        Ray's Unix sockets (107 bytes including ``session_.../sockets/plasma_store``)."""
        target = self.root / "ray"
        target.mkdir(parents=True, exist_ok=True)
        if len(str(target)) <= 40:
            return target
        link = Path("/tmp") / f"promptsearch-ray-{hashlib.sha1(str(target).encode()).hexdigest()[:10]}"
        if not (link.is_symlink() and link.resolve() == target.resolve()):
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            link.symlink_to(target, target_is_directory=True)
        return link

    def ray_auth_token(self) -> Path:
        """``<root>/ray/auth_token``: the token of the local Ray this workspace starts (made once, 0600)."""
        path = self.root / "ray" / "auth_token"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        return path

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def job_ids(self) -> list[str]:
        """Every job folder: one with a job record or an event log (a damaged one too: it lists as corrupt)."""
        if not self.jobs_dir.is_dir():
            return []
        names = ("job.json", LOG, MIRROR, LEGACY)
        return sorted(p.name for p in self.jobs_dir.iterdir()
                      if not p.name.startswith(".") and any((p / n).is_file() for n in names))  # .x: being submitted

    def resolve(self, job: str) -> str:
        """A job id from the id itself or a unique prefix of it."""
        ids = self.job_ids()
        if job in ids:
            return job
        hits = [i for i in ids if i.startswith(job)]
        if len(hits) == 1:
            return hits[0]
        if not hits:
            raise WorkspaceError(f"no job {job!r} in workspace {self.root} (promptsearch jobs --workspace {self.root})")
        raise WorkspaceError(f"{job!r} matches {len(hits)} jobs: {', '.join(hits[:5])}")

    def store(self, job_id: str) -> JobStore:
        """The job's files (:class:`~.state.JobStore`): its log, snapshots and summary."""
        return JobStore(self.job_dir(job_id), job_id)

    def read_job(self, job_id: str) -> dict[str, Any]:
        """``job.json``, the submitted job (:class:`~.state.CorruptJob` if unreadable)."""
        return self.store(job_id).read_record()

    def read_state(self, job_id: str) -> JobState:
        """The job's whole state, every trial record included (O(trials): the read paths use
        :meth:`JobStore.read_view`). The strategy's state is the newest snapshot's."""
        store = self.store(job_id)
        if store.legacy:
            return store.read_legacy()
        r = store.read_full()
        snap = next(store.snapshots(), None)
        return JobState.model_validate({
            **{k: v for k, v in r.job.items() if k != "updated_at"}, "version": 2, "updated_at": r.job["updated_at"] or 0.0,
            "created_at": r.job["created_at"] or 0.0, "next_index": r.next_index, "requeue": r.requeue,
            "trials": list(r.trials.values()), "hypervolume": [(n, hv) for n, hv, _ in r.curve or []],
            "strategy_state": snap["strategy"] if snap else None})


def as_workspace(workspace: Workspace | str | Path | None) -> Workspace:
    """A :class:`Workspace` from itself, a path, or ``None`` (the default root)."""
    return workspace if isinstance(workspace, Workspace) else Workspace(workspace)


@contextlib.contextmanager
def job_lock(ws: Workspace, job_id: str, wait_s: float = 2.0) -> Iterator[None]:
    """Held by the one coordinator running a job (released by the OS if it is killed)."""
    path = ws.job_dir(job_id) / "coordinator.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    who: Any = {}
                    with contextlib.suppress(JobError):
                        who = ws.store(job_id).read_view()[0].job["coordinator"] or {}
                    raise WorkspaceError(f"job {job_id} is already running in another coordinator ({who})") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)


def coordinator_alive(ws: Workspace, job_id: str) -> bool:
    """Whether a coordinator holds the job's lock now (same host)."""
    path = ws.job_dir(job_id) / "coordinator.lock"
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def request_cancel(ws: Workspace, job_id: str) -> None:
    """Ask the coordinator that holds the job to stop (it looks twice a second)."""
    atomic_write(ws.job_dir(job_id) / "cancel", repr(time.time()))


def cancel_requested(ws: Workspace, job_id: str, since: float) -> bool:
    """Whether a cancel was requested at or after ``since`` (the coordinator's start): an older
    request belongs to an earlier run, which a resume has overridden."""
    path = ws.job_dir(job_id) / "cancel"
    try:
        return float(path.read_text()) >= since
    except FileNotFoundError:
        return False
    except ValueError:  # unreadable: trust the file's time
        return path.stat().st_mtime >= since
