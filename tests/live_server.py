"""A real ``promptsearch serve`` for the tests that speak HTTP to it (service, hardening, dashboard):
a subprocess on a free loopback port, its output in a log beside its workspace.

    PROMPTSEARCH_DATA_ROOT=../shared/data/medmnist python -m pytest tests/test_service.py -q
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float, interval: float = 0.5, what: str = "condition"):
    """``check()``'s first truthy value, polled every ``interval`` s; an AssertionError naming
    ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class Server:
    """``promptsearch serve`` as a subprocess on a free loopback port."""

    def __init__(self, workspace: Path, defaults: Path, token: str | None = None, max_jobs: int = 1,
                 log_level: str = "warning", args: tuple[str, ...] = (), prefix: tuple[str, ...] = ()):
        self.workspace, self.defaults, self.token, self.max_jobs = workspace, defaults, token, max_jobs
        self.log_level, self.args, self.prefix = log_level, list(args), list(prefix)  # prefix: e.g. unshare ...
        self.proc: subprocess.Popen | None = None
        self.log = workspace.parent / f"{workspace.name}-server.log"

    def start(self) -> Server:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("PROMPTSEARCH_API_TOKEN", None)
        env.pop("MLFLOW_TRACKING_URI", None)
        if self.token:
            env["PROMPTSEARCH_API_TOKEN"] = self.token
        cmd = [*self.prefix, sys.executable, "-m", "promptsearch.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--workspace", str(self.workspace), "--job-defaults", str(self.defaults),
               "--max-jobs", str(self.max_jobs), "--log-level", self.log_level, *self.args]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.workspace.parent)

        def up():
            assert self.proc.poll() is None, f"server exited: {self.log.read_text()[-3000:]}"
            try:
                return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 120, what="the server's /health")
        self.client = httpx.Client(base_url=self.url, timeout=120,
                                   headers={"Authorization": f"Bearer {self.token}"} if self.token else {})
        return self

    def kill(self) -> None:  # kill -9: no shutdown handler runs
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def job(self, job_id: str) -> dict:
        r = self.client.get(f"/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait_job(self, job_id: str, statuses: tuple[str, ...] = ("completed",), timeout: float = 400) -> dict:
        """The job once its status is one of ``statuses``; fails at once on an end it will not
        leave (failed, cancelled) that is not one of them, with the server log's tail."""
        def done():
            j = self.job(job_id)
            assert j["status"] in statuses or j["status"] not in ("failed", "cancelled"), (j, self.log.read_text()[-3000:])
            return j if j["status"] in statuses else None

        return wait_for(done, timeout, 1.0, f"job {job_id} to be {'/'.join(statuses)}")

    def trials(self, job_id: str) -> list[dict]:
        return self.client.get(f"/jobs/{job_id}/trials", params={"limit": 10000}).json()["trials"]
