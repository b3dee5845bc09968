"""``promptsearch serve``: the REST API and the Pareto dashboard, with jobs running in the background.

    promptsearch serve --host 127.0.0.1 --port 8000 --workspace promptsearch-runs --job-defaults jobs/breast_pixel.yaml

Start-up refuses, in one line, a job-defaults file that does not load or does not fit the limits,
and a workspace it cannot write (read-only, full). ``PROMPTSEARCH_API_TOKEN`` is read once and
removed from the environment, so no job process, Ray daemon or trial worker inherits it; the
access log shows query-string values only for the API's own paging and pick parameters.
"""

from __future__ import annotations

import copy
import logging
import os
import re
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qsl, quote

import typer

from .common import WorkspaceOpt, console, fail

# query parameters whose values the access log may show (the API's own); every other value is
# redacted: a token sent as ?token=... must not land in a log file
LOGGED_QUERY_PARAMS = frozenset({"offset", "limit", "status", "pick", "format", "test"})


class RedactQuery(logging.Filter):
    """On ``uvicorn.access``: query values other than :data:`LOGGED_QUERY_PARAMS` become ``<redacted>``."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], redact_query(args[2]), *args[3:])
        return True


def redact_query(path: str) -> str:
    """``/x?token=abc&limit=5`` -> ``/x?token=<redacted>&limit=5``; a bare or odd key (``/x?abc``,
    which may be the secret itself) -> ``<redacted>`` whole."""
    base, _, query = path.partition("?")
    parts = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in LOGGED_QUERY_PARAMS:
            parts.append(f"{key}={quote(value, safe='')}")
        elif value and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,31}", key):
            parts.append(f"{key}=<redacted>")
        else:
            parts.append("<redacted>")
    return f"{base}?{'&'.join(parts)}" if parts else f"{base}?<redacted>"


def log_config() -> dict[str, Any]:
    """uvicorn's logging config with :class:`RedactQuery` on its access logger."""
    from uvicorn.config import LOGGING_CONFIG

    cfg = copy.deepcopy(LOGGING_CONFIG)
    cfg.setdefault("filters", {})["redact_query"] = {"()": f"{__name__}.RedactQuery"}
    cfg["loggers"]["uvicorn.access"]["filters"] = ["redact_query"]
    return cfg


def check_writable(folder: Path) -> None:
    """Create ``folder`` (0700) and write, sync and remove a 64 KiB probe in it: an OSError
    (read-only file system, no space left) says so before anything else starts."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    probe = folder / f".write-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as f:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())
    finally:
        try:
            probe.unlink()
        except FileNotFoundError:
            pass


def serve(host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (0.0.0.0: every interface)."),
          port: int = typer.Option(8000, "--port", help="TCP port."),
          workspace: Optional[Path] = WorkspaceOpt,
          max_jobs: int = typer.Option(1, "--max-jobs", envvar="PROMPTSEARCH_MAX_JOBS", min=1,
                                       help="Jobs that run at once (each in its own process); the rest queue."),
          job_defaults: Optional[Path] = typer.Option(
              None, "--job-defaults", envvar="PROMPTSEARCH_JOB_DEFAULTS",
              help="A job file whose fields fill what a submitted job leaves out (data root, backbone weights, ...); "
                   "its limits: section sets the server's limits."),
          limit: list[str] = typer.Option(
              [], "--limit", help="Override one limit: --limit max_trials=200 (repeatable; names: "
                                  "max_trials, max_concurrency, max_epochs, max_image_size, max_queued_jobs, "
                                  "max_body_bytes, max_space_choices, ...; see promptsearch.service.settings.Limits)."),
          log_level: str = typer.Option("info", "--log-level", help="uvicorn log level.")) -> None:
    """Serve the REST API (/docs) and the dashboard (/) on HOST:PORT; jobs run in the background."""
    import uvicorn

    from ..jobs import JobError, job_from_dict
    from ..search.workspace import as_workspace
    from ..service.app import create_app
    from ..service.requests import limit_problems
    from ..service.settings import TOKEN_ENV, Settings, load_server_file, os_error_line

    overrides = {}
    for item in limit:
        key, sep, value = item.partition("=")
        if not sep or not value.strip().lstrip("-").isdigit():
            fail(f"--limit {item!r}: write NAME=WHOLE_NUMBER, e.g. --limit max_trials=200")
        overrides[key.strip()] = int(value)
    try:
        defaults, limits = load_server_file(job_defaults, overrides)
        problems = limit_problems(job_from_dict({k: v for k, v in defaults.items() if k != "space"}, "defaults",
                                                check=False), limits)
    except JobError as e:
        fail(f"--job-defaults: {e}" if job_defaults else str(e))
    if problems:
        fail(f"--job-defaults {job_defaults}: over the server's own limits: {'; '.join(problems)}")
    workspace = as_workspace(workspace).root
    try:
        check_writable(workspace)
    except OSError as e:
        fail(f"workspace {workspace} is not writable: {os_error_line(e)}")
    token = os.environ.pop(TOKEN_ENV, None) or None  # read once; nothing this server starts inherits it
    settings = Settings(workspace=workspace, max_jobs=max_jobs, token=token, job_defaults=defaults,
                        defaults_source=str(job_defaults) if job_defaults else None, limits=limits)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    console.print(f"promptsearch serving http://{host}:{port}/ (API docs /docs), workspace {workspace}, "
                  f"{max_jobs} job(s) at once, auth {'on' if token else 'off'}", highlight=False)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5,
                log_config=log_config())


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
