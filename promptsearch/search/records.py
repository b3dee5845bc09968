"""What a job records: its trial records and its state, as plain JSON-able pydantic models.

    python -c "from promptsearch.search.records import JobState; print(JobState(job_id='x').model_dump_json())"
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field

STATE_VERSION = 1
JobStatus = Literal["queued", "running", "completed", "failed", "cancelled", "interrupted"]  # interrupted: Ctrl-C/SIGTERM
TrialStatus = Literal["running", "completed", "failed", "preempted", "stopped"]  # stopped: early, at a rung

# the fields early stopping adds to a record, where a trial has them: a stopped trial's rung (and, under
# informative_rho, what it was ranked on), its training cost, and the trial a front re-evaluation re-runs
EARLY_STOPPING_FIELDS = ("rung", "ranked_by", "image_passes", "repeat_of")


class TrialRecord(BaseModel):
    """One trial as the job records it (``job_trials`` returns these as dicts). Non-finite metric
    values are stored as ``None`` so every record is plain JSON."""

    trial_id: str
    index: int
    candidate: dict[str, Any]
    status: TrialStatus = "running"
    reason: str | None = None
    metrics: dict[str, float | None] = Field(default_factory=dict)
    test_metrics: dict[str, float | None] = Field(default_factory=dict)
    history: list[dict[str, float | None]] = Field(default_factory=list)
    seed: int = 0
    attempt: int = 1  # which coordinator run started it
    requeued_from: str | None = None  # the preempted trial this one re-runs
    node_id: str | None = None
    node_ip: str | None = None
    pid: int | None = None
    cpu_time_s: float | None = None  # the worker process's CPU time for the trial
    threads: int | None = None  # torch intra-op threads the trial ran with (one per reserved CPU by default)
    tune_trial_id: str | None = None
    mlflow_run_id: str | None = None
    weights: str | None = None  # safetensors file of prompt + head (completed trials; stopped: at its rung)
    epochs: int | None = None  # epochs trained (a stopped trial: its rung)
    rung: int | None = None  # stopped: the rung (epoch) it was stopped at
    ranked_by: list[str] | None = None  # stopped under ``informative_rho``: the objectives its rung ranked on
    image_passes: int | None = None  # training images seen (epochs x training images)
    repeat_of: str | None = None  # a re-evaluation (front_repeats) of this trial with another seed
    repeats: dict[str, Any] | None = None  # front_repeats: {"seeds", "trials", "mean", "sd", "n"} over every seed
    started_at: float = Field(default_factory=time.time)
    finished_at: float | None = None
    wall_time_s: float | None = None


class JobState(BaseModel):
    """Everything that changes while a job runs, whole: format 1 kept it in ``state.json``
    (rewritten after every event); format 2 keeps an event log (:mod:`.state`), and
    ``Workspace.read_state`` rebuilds this from it."""

    version: int = STATE_VERSION
    job_id: str
    status: JobStatus = "queued"
    message: str | None = None
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float = Field(default_factory=time.time)
    attempts: int = 0
    coordinator: dict[str, Any] | None = None  # pid, host, ray address, nodes of the current run
    next_index: int = 1
    strategy_state: dict[str, Any] | None = None
    requeue: list[dict[str, Any]] = Field(default_factory=list)  # {"candidate": ..., "from": trial_id}
    trials: list[TrialRecord] = Field(default_factory=list)
    hypervolume: list[tuple[int, float]] = Field(default_factory=list)  # (finished trials, hypervolume)
    mlflow: dict[str, Any] = Field(default_factory=dict)  # tracking_uri, experiment_id, parent_run_id


def effective_metrics(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """The metrics a trial is ranked by: its own, or the mean over its seeds once the front was
    re-evaluated (``repeats``)."""
    metrics = record.get("metrics") or {}
    rep = record.get("repeats")
    return {**metrics, **rep["mean"]} if rep and rep.get("mean") else metrics


def front_status(record: Mapping[str, Any], front_stopped: bool) -> bool:
    """Whether a trial's status lets it on the front: completed, or stopped when the job asks (a
    re-evaluation trial never: it is its original's)."""
    if record.get("repeat_of"):
        return False
    return record.get("status") == "completed" or (front_stopped and record.get("status") == "stopped")


def ranked(records: list[Mapping[str, Any]], front_stopped: bool = False) -> list[dict[str, Any]]:
    """The records as Pareto ranking and picking (the knee, ``best:``) see them, in the same order:
    a trial that may be on the front as ``completed`` with its effective metrics (its seeds' mean
    once re-evaluated), every other one (failed, running, stopped unless the job asks, a
    re-evaluation trial) as not rankable."""
    return [{**r, "status": "completed", "metrics": dict(effective_metrics(r))} if front_status(r, front_stopped)
            else {**r, "status": "not-ranked"} for r in records]
