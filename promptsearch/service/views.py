"""Response views: job summaries, trial rows with their Pareto rank, the front with its knee and
hypervolume curve — all derived from the job API's records (:mod:`promptsearch.service.jobs`).

    python -c "from promptsearch.service.views import TrialOut; print(sorted(TrialOut.model_fields))"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field

from ..search.records import EARLY_STOPPING_FIELDS
from . import jobs
from .requests import valid_id
from .settings import SERVER_FIELDS


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



def existing(workspace: Path, job_id: str) -> None:
    """404 unless ``job_id`` is a valid, exact id of a job in the workspace (no prefixes)."""
    valid_id(job_id)
    if job_id not in jobs.Workspace(workspace).job_ids():
        raise HTTPException(404, f"unknown job {job_id!r}")


def status_of(workspace: Path, job_id: str) -> dict[str, Any]:
    """``job_status`` of an existing job, by its exact, validated id (else 404)."""
    existing(workspace, job_id)
    return jobs.job_status(workspace, job_id)


def summary_view(st: dict[str, Any], runner: Any = None) -> JobSummary:
    """A job status as the API shows it: ``interrupted`` when its coordinator is gone (the job API
    says so) or its process exited with an error, and the runner does not hold it."""
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
                      stopped=t.get("stopped", 0), image_passes=st.get("image_passes"), repeats=st.get("repeats"),
                      created_at=st.get("created_at"), finished_at=st.get("finished_at"),
                      backbone=st.get("backbone"), concurrency=st.get("concurrency"),
                      **({"corrupt": st["corrupt"]} if st.get("corrupt") else {}))


def _iso(ts: float | None) -> str | None:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds") if ts else None


def job_spec(ws: Path, job_id: str):
    """The job's validated spec (:class:`~promptsearch.jobs.JobSpec`)."""
    from ..jobs import JobSpec

    return JobSpec.model_validate(jobs.Workspace(ws).read_job(job_id)["spec"])


def job_objectives(ws: Path, job_id: str):
    return job_spec(ws, job_id).objective_list


def spec_json(ws: Path, job_id: str) -> dict[str, Any]:
    """The job's fields without the server's paths and addresses ({} when job.json is unreadable:
    the job's status says it is corrupt)."""
    try:
        spec = dict(jobs.Workspace(ws).read_job(job_id)["spec"])
    except jobs.CorruptJob:
        return {}
    for k in SERVER_FIELDS:  # server-side paths and addresses stay on the server
        spec.pop(k, None)
    if isinstance(spec.get("backbone"), dict):
        spec["backbone"] = {k: v for k, v in spec["backbone"].items() if k != "weights"}
    spec["space"] = Path(str(spec.get("space", ""))).stem
    return spec


def trial_views(records: list[dict[str, Any]], objectives, front_stopped: bool = False) -> list[TrialOut]:
    """Trial records (``job_trials``) with their Pareto rank over the job's objectives (0 = on the
    front; ranked by the seeds' mean where the front was re-evaluated; stopped trials only when
    the job lets them on the front; re-evaluation trials never)."""
    from ..objectives import front_ranks
    from ..search.records import ranked

    rank_of = front_ranks(ranked(records, front_stopped), objectives)
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
            epochs_done=len(r.get("history") or []),
            **{k: r[k] for k in (*EARLY_STOPPING_FIELDS, "repeats") if r.get(k) is not None}))
    return out


def pareto_view(ws: Path, job_id: str) -> Pareto:
    """The front (``front.json``), its knee, and the hypervolume curve (``hypervolume.jsonl``):
    O(front + finished trials), never the whole log (a corrupt job is a 409 that says why)."""
    from ..objectives import Objective, ObjectiveError, pick

    store = jobs.Workspace(ws).store(job_id)
    try:
        records, view, static = jobs.front_records(store)
    except jobs.CorruptJob as e:
        raise HTTPException(409, str(e)) from None
    from ..search.records import ranked

    objectives = [Objective(**o) for o in static["objectives"]]
    front_stopped = static.get("front_stopped", False)
    trials = trial_views(records, objectives, front_stopped)
    try:
        knee = trials[pick(ranked(records, front_stopped), objectives, "knee")].trial_id
    except ObjectiveError:
        knee = None
    # the coordinator's curve: [finished trials, hypervolume, trial id] after each finished trial
    curve = None if store.legacy else store.read_curve(view.finished)
    if curve is None:  # an old-format job, or a reader racing a tell: from the log
        full = store.read_full()
        curve = full.curve or []
    points = [{"n": int(n), "hypervolume": float(hv), "trial_id": tid} for n, hv, tid in curve]
    return Pareto(objectives=[o.model_dump(mode="json") for o in objectives], front=[t.trial_id for t in trials],
                  knee=knee, hypervolume=view.hypervolume if points else 0.0, hypervolume_curve=points, trials=trials)
