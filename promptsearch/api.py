"""The promptsearch service: REST API + Pareto dashboard, jobs run in the background.

    promptsearch serve --host 127.0.0.1 --port 8000 --workspace promptsearch-runs

Jobs are submitted to the coordinator's :class:`~promptsearch.coordinator.Workspace` (state on
disk), queued, and each one runs in **its own subprocess** (``python -m promptsearch.api run JOB``,
i.e. ``coordinator.run_job``), at most ``max_jobs`` at a time: the API stays responsive, and a
killed server loses nothing: on start it runs the queued jobs and resumes the interrupted ones.
Job subprocesses die with the server (Linux ``PR_SET_PDEATHSIG``), so a restarted server never
races an orphan.

Security: job ids and names are validated against a strict pattern before they reach the
coordinator; a request cannot name files: ``data_root``, ``tracking_uri``, ``ray_address`` and
backbone weights come from the server's job defaults (``--job-defaults FILE``), spaces are names
from ``search_spaces/`` or inline space documents. With ``PROMPTSEARCH_API_TOKEN`` set, every
API endpoint except ``/health`` needs ``Authorization: Bearer <token>`` (the dashboard's static
shell and the API description carry no job data and stay public, so the page can ask for it).
"""

from __future__ import annotations

import collections
import contextlib
import hmac
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("promptsearch.api")

TOKEN_ENV = "PROMPTSEARCH_API_TOKEN"
DASHBOARD = Path(__file__).resolve().parent / "dashboard"
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# request fields that would name files or remote services: only the server's defaults set them
SERVER_FIELDS = ("data_root", "tracking_uri", "ray_address")


def plotly_js() -> Path:
    """The plotly.min.js bundled in the installed ``plotly`` package (no CDN: works air-gapped)."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.exists():
        raise RuntimeError(f"{path} missing: reinstall the plotly package")
    return path


# --- settings -----------------------------------------------------------------------------------
class Settings(BaseModel):
    """How one server runs. ``promptsearch serve --help`` sets these."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    workspace: Path
    max_jobs: int = Field(1, ge=1, le=64)  # jobs running at once; each is its own subprocess
    token: str | None = None  # PROMPTSEARCH_API_TOKEN
    job_defaults: dict[str, Any] = Field(default_factory=dict)  # --job-defaults FILE
    defaults_source: str | None = None
    python: str = sys.executable
    poll_s: float = 0.5  # how often the runner looks at its queue


def valid_id(value: str, what: str = "job id") -> str:
    if not isinstance(value, str) or not ID_RE.match(value) or ".." in value:
        raise HTTPException(422, f"invalid {what} {value!r}: use 1-128 letters, digits, '-', '_' or '.'")
    return value


# --- the background runner ------------------------------------------------------------------------
def _die_with_parent() -> None:  # runs in the child between fork and exec
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
        from . import coordinator

        ws = coordinator.Workspace(self.s.workspace)
        for job in coordinator.list_jobs(ws):  # oldest first
            job_id = job["job_id"]
            if job["status"] in ("queued", "running") and not coordinator.coordinator_alive(ws, job_id):
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
        from . import coordinator

        with self.lock:
            was_queued = job_id in self.queue
            if was_queued:
                self.queue.remove(job_id)
            self.resume_cancelled.discard(job_id)
            proc = self.procs.get(job_id)
        coordinator.cancel(self.s.workspace, job_id)
        if proc is not None:
            threading.Thread(target=self._reap_cancelled, args=(job_id, proc), daemon=True).start()

    def _reap_cancelled(self, job_id: str, proc: subprocess.Popen, grace: float = 120.0) -> None:
        """The coordinator stops a cancelled job itself; one that does not within ``grace`` is
        killed, and the cancel is then recorded here (its lock is free)."""
        from . import coordinator

        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            log.warning("job %s did not stop %.0f s after cancel: killing it", job_id, grace)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            coordinator.cancel(self.s.workspace, job_id)

    # the loop
    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self._tick()
            except Exception:  # the runner must outlive any one job's trouble
                log.exception("job runner")
            self.stopping.wait(self.s.poll_s)

    def _tick(self) -> None:
        from . import coordinator

        with self.lock:
            for job_id, p in list(self.procs.items()):
                if p.poll() is not None:
                    del self.procs[job_id]
                    log.info("job %s process exited with code %s", job_id, p.returncode)
                    if p.returncode and not coordinator.coordinator_alive(coordinator.Workspace(self.s.workspace), job_id):
                        self.exits[job_id] = p.returncode  # (exit 2 with a live lock: another coordinator runs it)
            for job_id in list(self.queue):
                if len(self.procs) >= self.s.max_jobs or self.stopping.is_set():
                    break
                if job_id not in self.procs:  # else: its last process is still exiting
                    self.queue.remove(job_id)
                    self.procs[job_id] = self._spawn(job_id)

    def _spawn(self, job_id: str) -> subprocess.Popen:
        from . import coordinator

        log_path = coordinator.Workspace(self.s.workspace).job_dir(job_id) / "service.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [self.s.python, "-m", "promptsearch.api", "run", job_id, "--workspace", str(self.s.workspace)]
        if job_id in self.resume_cancelled:
            self.resume_cancelled.discard(job_id)
            cmd.append("--resume-cancelled")
        with open(log_path, "ab") as out:
            return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    preexec_fn=_die_with_parent, close_fds=True)


# --- coordinator access ---------------------------------------------------------------------------
def _existing(workspace: Path, job_id: str) -> None:
    """404 unless ``job_id`` is a valid, exact id of a job in the workspace (no prefixes)."""
    from . import coordinator

    valid_id(job_id)
    if job_id not in coordinator.Workspace(workspace).job_ids():
        raise HTTPException(404, f"unknown job {job_id!r}")


def _status(workspace: Path, job_id: str) -> dict[str, Any]:
    """The coordinator's ``job_status`` of an existing job, by its exact, validated id (else 404)."""
    from . import coordinator

    _existing(workspace, job_id)
    return coordinator.job_status(workspace, job_id)


# --- request and response models ----------------------------------------------------------------
class JobRequest(BaseModel):
    """A job submitted over HTTP: the job file's fields as JSON (``promptsearch search`` reads the
    same fields from YAML). Unset fields come from the server's job defaults. ``space``: a name in
    ``search_spaces/`` or an inline space document. Paths and addresses (``data_root``,
    ``tracking_uri``, ``ray_address``, ``backbone.weights``) are the server's to set."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"name": "breast", "space": "pixel", "dataset": "breastmnist", "strategy": "evolution", "trials": 12,
         "budget": {"epochs": 3, "max_train_samples": 256}, "objectives": ["auc", "worst_class_recall", "prompt_params"]}]})

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="prefix of the job id")
    description: str | None = None
    space: str | dict[str, Any] | None = Field(None, description="space name, or the space document inline")
    fix: dict[str, Any] | None = Field(None, description="decisions to pin, e.g. {\"module\": \"pixel\"}")
    dataset: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$", description="a MedMNIST name (2D)")
    backbone: dict[str, Any] | None = Field(None, description="name, image_size, patch_size")
    budget: dict[str, Any] | None = Field(None, description="training of one trial: epochs, batch_size, max_train_samples, ...")
    strategy: str | None = None
    strategy_options: dict[str, Any] | None = None
    objectives: list[str | dict[str, Any]] | None = None
    scalarization: dict[str, Any] | None = None
    trials: int | None = None
    concurrency: int | None = None
    resources: dict[str, Any] | None = Field(None, description="per trial: cpu, gpu (fractions share a device)")
    seed: int | None = None
    max_failures: int | None = None


class JobSummary(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    name: str | None = None
    status: str
    space: str | None = None
    dataset: str | None = None
    strategy: str | None = None
    trials: int = 0
    done: int = 0
    running: int = 0
    failed: int = 0
    hypervolume: float | None = None
    best: dict[str, float] = Field(default_factory=dict)
    message: str | None = None


class TrialOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    trial_id: str
    number: int
    status: str
    reason: str | None = None
    architecture: dict[str, Any] = Field(default_factory=dict)
    genome: list[int] = Field(default_factory=list)
    key: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    test_metrics: dict[str, float] = Field(default_factory=dict)
    wall_time_s: float | None = None
    started: str | None = None
    finished: str | None = None
    on_front: bool = False
    rank: int | None = None


class TrialPage(BaseModel):
    total: int
    offset: int
    limit: int
    trials: list[TrialOut]


class Pareto(BaseModel):
    objectives: list[dict[str, Any]]
    front: list[str]  # trial ids, non-dominated over all objectives
    knee: str | None
    hypervolume: float
    hypervolume_curve: list[dict[str, Any]]  # [{n, trial_id, hypervolume}] in finishing order
    trials: list[TrialOut]  # the front's trials


# --- the app --------------------------------------------------------------------------------------
def create_app(settings: Settings, start_runner: bool = True) -> FastAPI:
    from contextlib import asynccontextmanager

    from fastapi_offline import FastAPIOffline

    runner = JobRunner(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if start_runner:
            runner.start()
        yield
        runner.stop()

    app = FastAPIOffline(title="promptsearch", version=_version(), lifespan=lifespan,
                         description="Prompt architecture search jobs, their Pareto fronts and exports. "
                                     "The dashboard is at `/`.")
    app.state.settings, app.state.runner = settings, runner
    bearer = HTTPBearer(auto_error=False)

    def auth(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if not settings.token:
            return
        if creds is None or creds.scheme.lower() != "bearer" or not hmac.compare_digest(
                creds.credentials.encode(), settings.token.encode()):
            raise HTTPException(401, "missing or wrong bearer token (Authorization: Bearer <PROMPTSEARCH_API_TOKEN>)",
                                headers={"WWW-Authenticate": "Bearer"})

    guarded = [Depends(auth)]
    ws = settings.workspace

    @app.get("/health", tags=["service"])
    def health() -> dict[str, Any]:
        """Liveness: always public."""
        return {"status": "ok", "version": _version(), "jobs_running": len(runner.running()),
                "jobs_queued": len(runner.queued()), "auth": bool(settings.token)}

    @app.get("/meta", tags=["service"], dependencies=guarded)
    def meta() -> dict[str, Any]:
        """What the submit form offers: spaces, strategies, datasets, objectives and the job defaults."""
        return _meta(settings)

    @app.post("/jobs", status_code=201, tags=["jobs"], dependencies=guarded)
    def submit_job(req: JobRequest) -> dict[str, Any]:
        """Submit a search job (queued; runs in the background). Returns its id."""
        from . import coordinator

        spec = _job_spec(req, settings)
        job_id = coordinator.submit(ws, spec)
        runner.enqueue(job_id)
        return {"id": job_id, "status": "queued", "url": f"/jobs/{job_id}"}

    @app.get("/jobs", tags=["jobs"], dependencies=guarded)
    def list_jobs() -> dict[str, list[JobSummary]]:
        from . import coordinator

        return {"jobs": [_summary(j, runner) for j in coordinator.list_jobs(ws)]}

    @app.get("/jobs/{job_id}", tags=["jobs"], dependencies=guarded)
    def get_job(job_id: str) -> dict[str, Any]:
        """Status, progress, best values, hypervolume, objectives and the job's fields."""
        st = _status(ws, job_id)
        return {**_summary(st, runner).model_dump(), "objectives": st["objectives"],
                "spec": _spec_json(ws, job_id)}

    @app.post("/jobs/{job_id}/cancel", status_code=202, tags=["jobs"], dependencies=guarded)
    def cancel_job(job_id: str) -> JobSummary:
        st = _status(ws, job_id)
        if st["status"] not in ("queued", "running"):
            raise HTTPException(409, f"job {job_id} is {st['status']}: only queued or running jobs can be cancelled")
        runner.cancel(job_id)
        return _summary(_status(ws, job_id), runner)

    @app.post("/jobs/{job_id}/resume", status_code=202, tags=["jobs"], dependencies=guarded)
    def resume_job(job_id: str) -> JobSummary:
        from . import coordinator

        st = _status(ws, job_id)
        if job_id in runner.queued() or (job_id in runner.running() and st["status"] in ("queued", "running")):
            raise HTTPException(409, f"job {job_id} is already {'queued' if job_id in runner.queued() else 'running'}")
        if st["status"] == "completed":
            raise HTTPException(409, f"job {job_id} is completed: nothing to resume")
        if coordinator.coordinator_alive(coordinator.Workspace(ws), job_id):
            raise HTTPException(409, f"job {job_id} is running in another coordinator process")
        runner.enqueue(job_id, resume_cancelled=st["status"] == "cancelled")
        return _summary(_status(ws, job_id), runner)

    @app.get("/jobs/{job_id}/trials", tags=["jobs"], dependencies=guarded)
    def trials(job_id: str, offset: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=10000),
               status: Literal["completed", "failed", "preempted", "running"] | None = None) -> TrialPage:
        """The job's trials in submission order, paged; ``status`` filters."""
        from . import coordinator

        _existing(ws, job_id)
        rows = _trials(coordinator.job_trials(ws, job_id), _objectives(ws, job_id))
        if status:
            rows = [t for t in rows if t.status == status]
        return TrialPage(total=len(rows), offset=offset, limit=limit, trials=rows[offset:offset + limit])

    @app.get("/jobs/{job_id}/pareto", tags=["jobs"], dependencies=guarded)
    def pareto(job_id: str) -> Pareto:
        """The Pareto front over the job's objectives, its knee, and the hypervolume curve."""
        _existing(ws, job_id)
        return _pareto(ws, job_id)

    @app.get("/jobs/{job_id}/export", tags=["jobs"], dependencies=guarded,
             responses={200: {"content": {"application/zip": {}}, "description": "the bundle as a zip"}})
    def export(job_id: str, pick: str = Query("knee", max_length=200,
                                              description="knee | best:<objective>[ where <metric> <= v] | trial=<id>")) -> Response:
        """The export bundle (config.json, prompts.safetensors, MODEL_CARD.md) of one trial, as a zip."""
        from .export import ExportError, NothingToExport, UnknownTrial, bundle_bytes, export_job

        _existing(ws, job_id)
        if pick.startswith("trial="):
            valid_id(pick.removeprefix("trial="), "trial id")
        with tempfile.TemporaryDirectory(prefix="promptsearch-export-") as tmp:
            try:
                folder, info = export_job(ws, job_id, pick, Path(tmp) / "bundle")
            except UnknownTrial as e:
                raise HTTPException(404, str(e)) from None
            except NothingToExport as e:
                raise HTTPException(409, str(e)) from None
            except ExportError as e:  # a pick rule that does not parse or matches nothing
                raise HTTPException(422, str(e)) from None
            data = bundle_bytes(folder)
        name = f"{job_id}-{info['trial_id']}.zip"
        return Response(data, media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="{name}"',
                                 "X-Promptsearch-Trial": str(info["trial_id"])})

    # the dashboard: a static shell (no data) + Plotly from the installed package
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(DASHBOARD / "index.html")

    @app.get("/static/vendor/plotly.min.js", include_in_schema=False)
    def plotly() -> FileResponse:
        return FileResponse(plotly_js(), media_type="application/javascript",
                            headers={"Cache-Control": "public, max-age=86400"})

    app.mount("/static", StaticFiles(directory=DASHBOARD), name="static")
    return app


def _version() -> str:
    from . import __version__

    return __version__


# --- jobs from requests ---------------------------------------------------------------------------
def load_job_defaults(path: str | Path | None) -> dict[str, Any]:
    """The fields a job file sets (validated like any job file, ``${VAR}`` expanded), relative
    paths made absolute against the current directory; ``{}`` without a file."""
    if path is None:
        return {}
    from .jobs import load_job, resolve_paths

    spec = load_job(path)  # JobError names the file, line and field
    set_fields = spec.model_dump(mode="json", exclude_unset=True)
    resolved = resolve_paths(spec).model_dump(mode="json")
    for key in ("data_root", "space", "dataset"):
        if key in set_fields or (key == "data_root" and resolved.get("data_root")):
            set_fields[key] = resolved[key]
    if "backbone" in set_fields and set_fields["backbone"].get("weights"):
        set_fields["backbone"]["weights"] = resolved["backbone"]["weights"]
    return set_fields


def _no_env(value: Any, path: str = "") -> None:
    """Request strings must not read the server's environment (job files may: ``${VAR}``)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _no_env(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _no_env(v, f"{path}[{i}]")
    elif isinstance(value, str) and "${" in value:
        raise HTTPException(422, f"{path}: '${{' is not allowed in a request (environment variables are "
                                 "read only from the server's job defaults)")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "space" else v
    return out


def _space_field(space: str | dict[str, Any], workspace: Path) -> str:
    """A space name in search_spaces/ -> its file; an inline space document -> validated and stored
    in ``<workspace>/spaces/<name>-<hash>.yaml``. Never a path from the request."""
    import yaml

    from .space import SPACES_DIR, SpaceError, list_spaces, parse_space

    if isinstance(space, str):
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", space) or space.removesuffix(".yaml") not in list_spaces():
            raise HTTPException(422, f"space: unknown space {space!r}; known: {', '.join(list_spaces())} "
                                     "(or send the space document inline)")
        return str(SPACES_DIR / f"{space.removesuffix('.yaml')}.yaml")
    text = yaml.safe_dump(space, sort_keys=False)
    try:
        parsed = parse_space(text, "space")
    except SpaceError as e:
        raise HTTPException(422, f"space (inline): {e}") from None
    folder = workspace / "spaces"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{parsed.name}-{parsed.hash}.yaml"  # name matches ^[A-Za-z0-9_.-]+$ (SpaceFile)
    if not path.exists():
        path.write_text(text)
    return str(path)


def _job_spec(req: JobRequest, settings: Settings):
    """Request fields over the server's job defaults -> a validated ``JobSpec`` (422 with the field)."""
    from .jobs import JobError, JobSpec, check_job

    body = req.model_dump(mode="json", exclude_unset=True)
    _no_env(body)
    server_only = [f for f in SERVER_FIELDS if f in body]
    backbone = body.get("backbone") if isinstance(body.get("backbone"), dict) else {}
    server_only += [f"backbone.{f}" for f in ("weights", "pretrained") if f in backbone]
    if server_only:
        raise HTTPException(422, f"{', '.join(server_only)}: set by the server's job defaults "
                                 "(promptsearch serve --job-defaults FILE), not by a request")
    defaults = settings.job_defaults
    if "dataset" in body and body["dataset"] != defaults.get("dataset") and body["dataset"] not in _medmnist_2d():
        # a name that is not MedMNIST's would be read as a folder path by load_dataset
        raise HTTPException(422, f"dataset: {body['dataset']!r} is not a MedMNIST 2D dataset "
                                 f"({', '.join(_medmnist_2d())}) nor the server's default dataset")
    if backbone.get("name") and backbone["name"] != defaults.get("backbone", {}).get("name", backbone["name"]) \
            and defaults.get("backbone", {}).get("weights"):
        raise HTTPException(422, f"backbone.name: this server has weights for {defaults['backbone']['name']!r} only")
    merged = _merge(defaults, body)
    if "space" in body:
        merged["space"] = _space_field(body["space"], settings.workspace)
    elif "space" in merged:
        merged["space"] = _space_field(Path(merged["space"]).stem, settings.workspace) \
            if not Path(merged["space"]).is_absolute() else merged["space"]
    else:
        merged["space"] = _space_field("medical", settings.workspace)
    try:
        spec = JobSpec.model_validate(merged)  # no ${VAR} expansion: the request is data
        check_job(spec, "job")
    except JobError as e:
        raise HTTPException(422, str(e)) from None
    except Exception as e:  # pydantic ValidationError: name the field
        errors = getattr(e, "errors", None)
        if errors:
            err = errors()[0]
            raise HTTPException(422, f"{'.'.join(map(str, err['loc'])) or 'job'}: {err['msg']}") from None
        raise
    return spec


def _medmnist_2d() -> list[str]:
    from .data import medmnist_2d

    return medmnist_2d()


def _meta(settings: Settings) -> dict[str, Any]:
    from .objectives import DEFAULT_OBJECTIVES, KNOWN_OBJECTIVES
    from .space import list_spaces
    from .strategies import STRATEGIES

    datasets = _medmnist_2d()
    d = settings.job_defaults
    public = {k: v for k, v in d.items() if k not in SERVER_FIELDS}  # no server paths in the answer
    if "backbone" in public:
        public["backbone"] = {k: v for k, v in public["backbone"].items() if k != "weights"}
    if "space" in public:
        public["space"] = Path(public["space"]).stem
    return {"spaces": list_spaces(), "strategies": sorted(STRATEGIES), "datasets": datasets,
            "objectives": {"known": sorted(KNOWN_OBJECTIVES), "default": [o.name for o in DEFAULT_OBJECTIVES]},
            "defaults": {"space": "medical", "strategy": "random", "dataset": "breastmnist", **public},
            "defaults_source": Path(settings.defaults_source).name if settings.defaults_source else None,
            "auth": bool(settings.token)}


# --- responses from the coordinator's records ----------------------------------------------------
def _summary(st: dict[str, Any], runner: JobRunner | None = None) -> JobSummary:
    t = st.get("trials", {})
    status = st["status"]
    job_id = st["job_id"]
    message = st.get("message")
    here = runner is not None and (job_id in runner.queued() or job_id in runner.running())
    code = runner.exits.get(job_id) if runner is not None else None
    if status in ("queued", "running") and not here and (st.get("interrupted") or code):
        status = "interrupted"  # its coordinator is gone: POST /jobs/{id}/resume continues it
        if code:
            message = f"the job's process exited with code {code} (see jobs/{job_id}/service.log); resume it"
    return JobSummary(id=job_id, name=st.get("name"), status=status, space=st.get("space"), dataset=st.get("dataset"),
                      strategy=st.get("strategy"), trials=t.get("requested", 0), done=t.get("finished", 0),
                      running=t.get("running", 0), failed=t.get("failed", 0), hypervolume=st.get("hypervolume"),
                      best={k: v for k, v in (st.get("best") or {}).items() if v is not None},
                      message=message, completed=t.get("completed", 0), preempted=t.get("preempted", 0),
                      created_at=st.get("created_at"), finished_at=st.get("finished_at"),
                      backbone=st.get("backbone"), concurrency=st.get("concurrency"))


def _iso(ts: float | None) -> str | None:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds") if ts else None


def _objectives(ws: Path, job_id: str):
    from . import coordinator
    from .jobs import JobSpec

    return JobSpec.model_validate(coordinator.Workspace(ws).read_job(job_id)["spec"]).objective_list


def _spec_json(ws: Path, job_id: str) -> dict[str, Any]:
    from . import coordinator

    spec = dict(coordinator.Workspace(ws).read_job(job_id)["spec"])
    for k in SERVER_FIELDS:  # server-side paths and addresses stay on the server
        spec.pop(k, None)
    if isinstance(spec.get("backbone"), dict):
        spec["backbone"] = {k: v for k, v in spec["backbone"].items() if k != "weights"}
    spec["space"] = Path(str(spec.get("space", ""))).stem
    return spec


def _trials(records: list[dict[str, Any]], objectives) -> list[TrialOut]:
    """Trial records (``job_trials``) with their Pareto rank over the job's objectives (0 = on the front)."""
    from .objectives import nondominated_ranks, objective_values, usable_indices

    usable = usable_indices(records, objectives)
    ranks = nondominated_ranks(objective_values(records, objectives), objectives) if usable else []
    rank_of = {i: int(r) for i, r in zip(usable, ranks)}
    out = []
    for i, r in enumerate(records):
        cand = r.get("candidate") or {}
        out.append(TrialOut(
            trial_id=r["trial_id"], number=r.get("index", i + 1), status=r["status"], reason=r.get("reason"),
            architecture=cand.get("architecture") or {}, genome=cand.get("genome") or [], key=cand.get("key"),
            metrics={k: v for k, v in (r.get("metrics") or {}).items() if v is not None},
            test_metrics={k: v for k, v in (r.get("test_metrics") or {}).items() if v is not None},
            wall_time_s=r.get("wall_time_s"), started=_iso(r.get("started_at")), finished=_iso(r.get("finished_at")),
            on_front=rank_of.get(i) == 0, rank=rank_of.get(i), requeued_from=r.get("requeued_from"),
            node_id=r.get("node_id"), mlflow_run_id=r.get("mlflow_run_id"), has_weights=bool(r.get("weights")),
            epochs_done=len(r.get("history") or [])))
    return out


def _pareto(ws: Path, job_id: str) -> Pareto:
    from . import coordinator
    from .objectives import ObjectiveError, pick

    state = coordinator.Workspace(ws).read_state(job_id)  # one read: trials and curve agree
    records = [t.model_dump(mode="json") for t in state.trials]
    objectives = _objectives(ws, job_id)
    trials = _trials(records, objectives)
    try:
        knee = trials[pick(records, objectives, "knee")].trial_id
    except ObjectiveError:
        knee = None
    # the coordinator's curve: (finished trials, hypervolume) after each finished trial, in that order
    curve = state.hypervolume
    ended = sorted((t for t in trials if t.status in ("completed", "failed") and t.finished), key=lambda t: t.finished)
    points = [{"n": int(n), "hypervolume": float(hv), "trial_id": ended[k].trial_id if k < len(ended) else None}
              for k, (n, hv) in enumerate(curve)]
    front = [t for t in trials if t.on_front]
    return Pareto(objectives=[o.model_dump(mode="json") for o in objectives], front=[t.trial_id for t in front],
                  knee=knee, hypervolume=points[-1]["hypervolume"] if points else 0.0, hypervolume_curve=points,
                  trials=front)


# --- python -m promptsearch.api run JOB --workspace W: one job, in the runner's subprocess -----------
def _run_main(argv: list[str]) -> int:
    import argparse

    from . import coordinator
    from .jobs import JobError

    p = argparse.ArgumentParser(prog="python -m promptsearch.api run", description="Run (or resume) one job.")
    p.add_argument("job")
    p.add_argument("--workspace", required=True)
    p.add_argument("--resume-cancelled", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the server's stop: die now, resume on its next start
    try:
        status = coordinator.run_job(a.workspace, a.job, resume_cancelled=a.resume_cancelled)
    except JobError as e:
        print(f"job {a.job}: {e}", file=sys.stderr)
        return 2
    print(f"job {a.job}: {status['status']} {status.get('message') or ''}")
    return 0 if status["status"] == "completed" else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "run":
        sys.exit(_run_main(sys.argv[2:]))
    sys.exit("usage: python -m promptsearch.api run JOB --workspace DIR   (the server runs this; "
             "use `promptsearch serve`)")
