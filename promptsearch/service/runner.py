"""The background runner: a FIFO of job ids, each run in its own subprocess
(``python -m promptsearch.service.runner run JOB --workspace DIR``), ``max_jobs`` at a time.

    python -m promptsearch.service.runner run JOB --workspace promptsearch-runs

A killed server loses nothing: on start the runner runs the queued jobs and resumes the
interrupted ones. Job subprocesses die with the server (Linux ``PR_SET_PDEATHSIG``), so a
restarted server never races an orphan. They start with umask 077 (job state, MLflow's store and
Ray's files are the server user's alone) and without ``PROMPTSEARCH_API_TOKEN`` in their
environment (nor, so, in the Ray daemons' and trial workers' that they start).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from . import jobs
from .settings import TOKEN_ENV, Settings, os_error_line, storage_error

log = logging.getLogger("promptsearch.service")


PRIVATE_UMASK = 0o077  # new files 0600, new folders 0700


def job_environment() -> dict[str, str]:
    """The environment of a job process: the server's, less the API token (a job, its Ray daemons
    and its trial workers never need it, and /proc/PID/environ would show it)."""
    return {k: v for k, v in os.environ.items() if k != TOKEN_ENV}


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.umask(PRIVATE_UMASK)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    os.setpgrp()  # its own process group: cancel/stop can signal the job and its helpers together


class JobRunner:
    """A FIFO of job ids, run ``max_jobs`` at a time, each in its own subprocess."""

    def __init__(self, settings: Settings):
        self.s = settings
        self.queue: collections.deque[str] = collections.deque()
        self.procs: dict[str, subprocess.Popen] = {}
        self.resume_cancelled: set[str] = set()  # jobs the user asked to resume after a cancel
        self.exits: dict[str, int] = {}  # job id -> exit code of its last process
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> None:
        self.recover()
        self.thread = threading.Thread(target=self._loop, name="promptsearch-jobs", daemon=True)
        self.thread.start()

    def recover(self) -> None:
        """After a (re)start: queued jobs run, running jobs whose process is gone resume."""
        ws = jobs.Workspace(self.s.workspace)
        for job in jobs.list_jobs(ws):  # oldest first
            job_id = job["job_id"]
            if job["status"] in ("queued", "running") and not jobs.coordinator_alive(ws, job_id):
                log.info("%s job %s", "starting queued" if job["status"] == "queued" else "resuming interrupted", job_id)
                self.enqueue(job_id)

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        with self.lock:
            procs = list(self.procs.items())
        for job_id, p in procs:  # the jobs resume when a server starts again
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for _, p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
        if self.thread:
            self.thread.join(timeout=2)

    # queue operations
    def enqueue(self, job_id: str, resume_cancelled: bool = False) -> None:
        """Queue a job; one whose previous process is still exiting waits for it."""
        with self.lock:
            self.exits.pop(job_id, None)
            if job_id not in self.queue:
                self.queue.append(job_id)
                if resume_cancelled:
                    self.resume_cancelled.add(job_id)

    def running(self) -> list[str]:
        with self.lock:
            return list(self.procs)

    def queued(self) -> list[str]:
        with self.lock:
            return list(self.queue)

    def cancel(self, job_id: str) -> None:
        with self.lock:
            was_queued = job_id in self.queue
            if was_queued:
                self.queue.remove(job_id)
            self.resume_cancelled.discard(job_id)
            proc = self.procs.get(job_id)
        jobs.cancel(self.s.workspace, job_id)
        if proc is not None:
            threading.Thread(target=self._reap_cancelled, args=(job_id, proc), daemon=True).start()

    def _reap_cancelled(self, job_id: str, proc: subprocess.Popen, grace: float = 120.0) -> None:
        """The coordinator stops a cancelled job itself; one that does not within ``grace`` is
        killed, and the cancel is then recorded here (its lock is free)."""
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            log.warning("job %s did not stop %.0f s after cancel: killing it", job_id, grace)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            jobs.cancel(self.s.workspace, job_id)

    # the loop
    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self._tick()
            except Exception:  # the runner must outlive any one job's trouble
                log.exception("job runner")
            self.stopping.wait(self.s.poll_s)

    def _tick(self) -> None:
        with self.lock:
            for job_id, p in list(self.procs.items()):
                if p.poll() is not None:
                    del self.procs[job_id]
                    log.info("job %s process exited with code %s", job_id, p.returncode)
                    if p.returncode and not jobs.coordinator_alive(jobs.Workspace(self.s.workspace), job_id):
                        self.exits[job_id] = p.returncode  # (exit 2 with a live lock: another coordinator runs it)
            for job_id in list(self.queue):
                if len(self.procs) >= self.s.max_jobs or self.stopping.is_set():
                    break
                if job_id not in self.procs:  # else: its last process is still exiting
                    self.queue.remove(job_id)
                    self.procs[job_id] = self._spawn(job_id)

    def _spawn(self, job_id: str) -> subprocess.Popen:
        log_path = jobs.Workspace(self.s.workspace).job_dir(job_id) / "service.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [self.s.python, "-m", "promptsearch.service.runner", "run", job_id, "--workspace", str(self.s.workspace)]
        if job_id in self.resume_cancelled:
            self.resume_cancelled.discard(job_id)
            cmd.append("--resume-cancelled")
        with open(log_path, "ab") as out:
            return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    preexec_fn=_die_with_parent, close_fds=True, env=job_environment())



# --- python -m promptsearch.service.runner run JOB --workspace W: one job, in the runner's subprocess ---
def _run_main(argv: list[str]) -> int:
    import argparse

    from ..jobs import JobError

    p = argparse.ArgumentParser(prog="python -m promptsearch.service.runner run", description="Run (or resume) one job.")
    p.add_argument("job")
    p.add_argument("--workspace", required=True)
    p.add_argument("--resume-cancelled", action="store_true")
    a = p.parse_args(argv)
    os.umask(PRIVATE_UMASK)
    os.environ.pop(TOKEN_ENV, None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the server's stop: die now, resume on its next start
    try:
        status = jobs.run_job(a.workspace, a.job, resume_cancelled=a.resume_cancelled)
    except JobError as e:
        print(f"job {a.job}: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # the workspace could not be written (read-only, full): one line, not a traceback
        cause = e if isinstance(e, OSError) else storage_error(e)
        if cause is None:
            raise
        print(f"job {a.job}: error: {os_error_line(cause)}", file=sys.stderr)
        return 3
    print(f"job {a.job}: {status['status']} {status.get('message') or ''}")
    return 0 if status["status"] == "completed" else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "run":
        sys.exit(_run_main(sys.argv[2:]))
    sys.exit("usage: python -m promptsearch.service.runner run JOB --workspace DIR   (the server runs this; "
             "use `promptsearch serve`)")
