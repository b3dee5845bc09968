"""The promptsearch service: REST API + Pareto dashboard, jobs run in the background.

    promptsearch serve --host 127.0.0.1 --port 8000 --workspace promptsearch-runs

Jobs are submitted to the workspace through the job API (:mod:`promptsearch.service.jobs`),
queued, and each one runs in **its own subprocess** (:mod:`promptsearch.service.runner`), at most
``max_jobs`` at a time: the API stays responsive, and a killed server loses nothing.

Security: job ids and names follow one rule (:func:`promptsearch.jobs.check_id`), checked before
they reach the job API; a request cannot name files (:mod:`promptsearch.service.requests`) and is
held to the server's limits (:class:`~promptsearch.service.settings.Limits`): a body over
``limits.max_body_bytes`` is a 413, a field over its limit a 422, a full queue a 429, all naming
the limit. A refused request writes nothing. Bad input is always a 4xx with the reason and never
echoes the input back. With ``PROMPTSEARCH_API_TOKEN`` set, every API endpoint except ``/health``
needs ``Authorization: Bearer <token>`` (the dashboard's static shell and the API description carry
no job data and stay public, so the page can ask for it).
"""

from __future__ import annotations

import hmac
import json
import logging
import tempfile
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles

from ..preflight import WorkspaceUnusable, collect_warnings
from . import jobs
from .requests import JobRequest, job_spec, valid_id
from .requests import meta as meta_view
from .runner import JobRunner
from .settings import STORAGE_ERRNOS, Settings, os_error_line
from .views import (JobSummary, Pareto, TrialOut, TrialPage, existing, pareto_view, spec_json, status_of, summary_view,
                    trial_views)

DASHBOARD = Path(__file__).resolve().parent.parent / "dashboard"
log = logging.getLogger("promptsearch.service")


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is a 413 naming the limit, whether it says
    its length (``Content-Length``) or streams; the body is read once, bounded, and handed on."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return await _reply(send, 400, "Content-Length is not a number")
            if declared > self.max_bytes:
                return await _reply(send, 413, self._too_big(declared))
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                return await _reply(send, 413, self._too_big(size, streamed=True))
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    def _too_big(self, size: int, streamed: bool = False) -> str:
        return (f"request body of {'more than ' if streamed else ''}{size} bytes is over this server's limit "
                f"(limits.max_body_bytes = {self.max_bytes})")


async def _reply(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def _clip(text: str, n: int = 300) -> str:
    return text if len(text) <= n else text[:n] + "..."


def validation_detail(exc: RequestValidationError) -> list[dict[str, Any]]:
    """FastAPI's 422 detail (``loc``, ``msg``, ``type``) without the ``input`` it would echo: a NaN
    cannot be serialised (a 500), and a 5 MB field should not come back."""
    out = []
    for err in exc.errors():
        loc = [x if isinstance(x, int | str) else str(x) for x in err.get("loc", ())]
        out.append({"loc": loc, "msg": _clip(str(err.get("msg", ""))).removeprefix("Value error, "),
                    "type": str(err.get("type", ""))})
    return out


def plotly_js() -> Path:
    """The plotly.min.js bundled in the installed ``plotly`` package (no CDN: works air-gapped)."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.exists():
        raise RuntimeError(f"{path} missing: reinstall the plotly package")
    return path


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
    app.add_middleware(BodyLimit, max_bytes=settings.limits.max_body_bytes)
    bearer = HTTPBearer(auto_error=False)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_detail(exc)}, status_code=422)

    @app.exception_handler(jobs.CorruptJob)
    async def corrupt_job(request: Request, exc: jobs.CorruptJob) -> JSONResponse:
        # the request is fine, the job's files are not: 409 naming the file, the reason and what to do
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": str(exc), "corrupt": {"job_id": exc.job_id, "file": exc.file,
                                                               "reason": exc.reason, "hint": exc.hint}}, status_code=409)

    @app.exception_handler(OSError)
    async def storage_error(request: Request, exc: OSError) -> JSONResponse:
        log.error("%s %s: %s", request.method, request.url.path, os_error_line(exc))
        if exc.errno in STORAGE_ERRNOS:  # a full or read-only disk: the server's trouble, said in one line
            return JSONResponse({"detail": f"the server could not write its workspace ({exc.strerror}, errno "
                                           f"{exc.errno}); nothing was submitted"}, status_code=507)
        return JSONResponse({"detail": "internal error reading the workspace (see the server's log)"}, status_code=500)

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
        return meta_view(settings)

    @app.post("/jobs", status_code=201, tags=["jobs"], dependencies=guarded)
    def submit_job(req: JobRequest) -> dict[str, Any]:
        """Submit a search job (queued; runs in the background). Returns its id, and ``warnings``
        (a randomly initialised backbone). The dataset and weights are opened before it is queued:
        a bad file is a 422 naming it."""
        limit = settings.limits.max_queued_jobs
        if len(runner.queued()) >= limit:
            raise HTTPException(429, f"{len(runner.queued())} jobs are queued: this server's limit is "
                                     f"limits.max_queued_jobs = {limit} (wait, or cancel a queued job)")
        created: list[Path] = []
        try:
            spec = job_spec(req, settings, created)
            with collect_warnings() as notes:
                job_id = jobs.submit(ws, spec)  # the job's checks and preflight run here, once
        except WorkspaceUnusable as e:  # the server's disk, not the request
            _remove(created)
            raise HTTPException(507, f"{e}; nothing was submitted") from None
        except jobs.JobError as e:
            _remove(created)
            raise HTTPException(422, str(e).removeprefix("<job>: ")) from None
        except BaseException:
            _remove(created)
            raise
        runner.enqueue(job_id)
        for note in notes:
            log.warning("job %s: %s", job_id, note)
        return {"id": job_id, "status": "queued", "url": f"/jobs/{job_id}", "warnings": notes}

    @app.get("/jobs", tags=["jobs"], dependencies=guarded)
    def list_jobs() -> dict[str, list[JobSummary]]:
        return {"jobs": [summary_view(j, runner) for j in jobs.list_jobs(ws)]}

    @app.get("/jobs/{job_id}", tags=["jobs"], dependencies=guarded)
    def get_job(job_id: str) -> dict[str, Any]:
        """Status, progress, best values, hypervolume, objectives and the job's fields."""
        st = status_of(ws, job_id)
        return {**summary_view(st, runner).model_dump(), "objectives": st["objectives"],
                "spec": spec_json(ws, job_id)}

    @app.post("/jobs/{job_id}/cancel", status_code=202, tags=["jobs"], dependencies=guarded)
    def cancel_job(job_id: str) -> JobSummary:
        st = status_of(ws, job_id)
        if st["status"] not in ("queued", "running"):
            raise HTTPException(409, f"job {job_id} is {st['status']}: only queued or running jobs can be cancelled")
        runner.cancel(job_id)
        return summary_view(status_of(ws, job_id), runner)

    @app.post("/jobs/{job_id}/resume", status_code=202, tags=["jobs"], dependencies=guarded)
    def resume_job(job_id: str) -> JobSummary:
        st = status_of(ws, job_id)
        if job_id in runner.queued() or (job_id in runner.running() and st["status"] in ("queued", "running")):
            raise HTTPException(409, f"job {job_id} is already {'queued' if job_id in runner.queued() else 'running'}")
        if st["status"] == "completed":
            raise HTTPException(409, f"job {job_id} is completed: nothing to resume")
        if jobs.coordinator_alive(jobs.Workspace(ws), job_id):
            raise HTTPException(409, f"job {job_id} is running in another coordinator process")
        jobs.check_readable(ws, job_id)  # a corrupt job: 409 naming the file and `promptsearch repair JOB`
        runner.enqueue(job_id, resume_cancelled=st["status"] == "cancelled")
        return summary_view(status_of(ws, job_id), runner)

    @app.get("/jobs/{job_id}/trials", tags=["jobs"], dependencies=guarded, response_model=TrialPage,
             responses={200: {"content": {"text/csv": {}}, "description": "a TrialPage; with format: a file"}})
    def trials(job_id: str, offset: int = Query(0, ge=0),
               limit: int | None = Query(None, ge=1, le=10000, description="default 100; with format: every trial"),
               status: Literal["completed", "stopped", "failed", "preempted", "running"] | None = None,
               fmt: Literal["csv", "json"] | None = Query(None, alias="format", description=(
                   "csv | json: the trials as one flat table to download, one column per decision")),
               test: bool = Query(False, description="with format: add test_* columns (report them; don't choose by them)"),
               ) -> TrialPage | Response:
        """The job's trials in submission order, paged; ``status`` filters; ``format`` downloads them."""
        if fmt:
            from .analysis_api import trials_download

            return trials_download(ws, job_id, fmt, status, test, offset, limit)
        limit = limit or 100
        existing(ws, job_id)
        page = jobs.trial_page(ws, job_id, offset, limit, status, rows=trial_rows)  # a poll: O(new events + page)
        return TrialPage(total=page.total, offset=offset, limit=limit, trials=page.items)

    @app.get("/jobs/{job_id}/pareto", tags=["jobs"], dependencies=guarded)
    def pareto(job_id: str) -> Pareto:
        """The Pareto front over the job's objectives, its knee, and the hypervolume curve."""
        existing(ws, job_id)
        return pareto_view(ws, job_id)

    @app.get("/jobs/{job_id}/export", tags=["jobs"], dependencies=guarded,
             responses={200: {"content": {"application/zip": {}}, "description": "the bundle as a zip"}})
    def export(job_id: str, pick: str = Query("knee", max_length=200,
                                              description="knee | best:<objective>[ where <metric> <= v] | trial=<id>")) -> Response:
        """The export bundle (config.json, prompts.safetensors, MODEL_CARD.md) of one trial, as a zip."""
        from ..export import ExportError, NothingToExport, UnknownTrial, bundle_bytes, export_job

        existing(ws, job_id)
        if pick.startswith("trial="):
            valid_id(pick.removeprefix("trial="), "trial id")
        scratch = ws / "tmp"  # the bundle is built in the workspace (0700), not the shared system temp dir
        scratch.mkdir(mode=0o700, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="export-", dir=scratch) as tmp:
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

    from .analysis_api import analysis_router

    app.include_router(analysis_router(ws, guarded))  # importance, curves, constraints, compare (the dashboard's)
    from .explain_api import explain_router
    app.include_router(explain_router(ws, guarded))  # example explanation maps of a trial

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


def trial_rows(static: dict[str, Any], records: list[dict[str, Any]]) -> list[TrialOut]:
    """Every trial of a job as the API shows it (ranked among them all): ``jobs.trial_page`` keeps
    these with the job's replayed log and makes them again only when the log changed."""
    from ..objectives import Objective

    return trial_views(records, [Objective(**o) for o in static["objectives"]], static.get("front_stopped", False))


def _remove(paths: list[Path]) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


def _version() -> str:
    from .. import __version__

    return __version__
