"""``promptsearch serve``: the REST API and the Pareto dashboard, with jobs running in the background.

    promptsearch serve --host 127.0.0.1 --port 8000 --workspace promptsearch-runs --job-defaults jobs/breast_pixel.yaml
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from .common import WorkspaceOpt, console, fail


def serve(host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (0.0.0.0: every interface)."),
          port: int = typer.Option(8000, "--port", help="TCP port."),
          workspace: Optional[Path] = WorkspaceOpt,
          max_jobs: int = typer.Option(1, "--max-jobs", envvar="PROMPTSEARCH_MAX_JOBS", min=1,
                                       help="Jobs that run at once (each in its own process); the rest queue."),
          job_defaults: Optional[Path] = typer.Option(
              None, "--job-defaults", envvar="PROMPTSEARCH_JOB_DEFAULTS",
              help="A job file whose fields fill what a submitted job leaves out (data root, backbone weights, ...)."),
          log_level: str = typer.Option("info", "--log-level", help="uvicorn log level.")) -> None:
    """Serve the REST API (/docs) and the dashboard (/) on HOST:PORT; jobs run in the background."""
    import logging

    import uvicorn

    from ..jobs import JobError
    from ..search.workspace import as_workspace
    from ..service.app import create_app
    from ..service.settings import TOKEN_ENV, Settings, load_job_defaults

    try:
        defaults = load_job_defaults(job_defaults)
    except JobError as e:
        fail(f"--job-defaults: {e}")
    workspace = as_workspace(workspace).root
    workspace.mkdir(parents=True, exist_ok=True)
    token = os.environ.get(TOKEN_ENV) or None
    settings = Settings(workspace=workspace, max_jobs=max_jobs, token=token, job_defaults=defaults,
                        defaults_source=str(job_defaults) if job_defaults else None)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    console.print(f"promptsearch serving http://{host}:{port}/ (API docs /docs), workspace {workspace}, "
                  f"{max_jobs} job(s) at once, auth {'on' if token else 'off'}", highlight=False)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
