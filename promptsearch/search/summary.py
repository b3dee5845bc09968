"""A job's status as one small dict: what ``promptsearch jobs``, the API and the live view show.

    python -c "from promptsearch.service.jobs import list_jobs; print(list_jobs('promptsearch-runs'))"
"""

from __future__ import annotations

from typing import Any

from ..jobs import JobSpec
from .records import JobState


def job_summary(job: dict[str, Any], state: JobState, alive: bool | None) -> dict[str, Any]:
    """Status, trial counts, best value per objective, hypervolume and running trials of a job;
    ``alive``: whether its coordinator holds the lock (None: not asked), which makes ``interrupted``."""
    from ..objectives import usable_indices

    spec = JobSpec.model_validate(job["spec"])
    objectives = spec.objective_list
    counts = {s: sum(1 for t in state.trials if t.status == s) for s in ("completed", "failed", "preempted", "running")}
    trials = [t.model_dump(mode="json") for t in state.trials]
    usable = [trials[i] for i in usable_indices(trials, objectives)]
    best = {}
    for o in objectives:
        values = [t["metrics"][o.name] for t in usable]
        if values:
            best[o.name] = max(values) if o.maximise else min(values)
    interrupted = state.status == "interrupted" or (
        state.status in ("running", "queued") and alive is False and state.attempts > 0)
    return {
        "job_id": state.job_id, "name": spec.name, "status": state.status, "message": state.message,
        "interrupted": interrupted,  # the coordinator is gone: `promptsearch resume` continues it
        "strategy": spec.strategy, "space": job["space_name"], "space_hash": job["space_hash"],
        "dataset": spec.dataset, "backbone": spec.backbone.name,
        "trials": {"requested": spec.trials, "finished": counts["completed"] + counts["failed"], **counts},
        "concurrency": spec.concurrency, "failure_limit": spec.failure_limit,
        "objectives": [o.model_dump() for o in objectives],
        "best": best, "hypervolume": state.hypervolume[-1][1] if state.hypervolume else 0.0,
        "running_trials": [{"trial_id": t.trial_id, "epoch": len(t.history), "epochs": spec.budget.epochs,
                            "node_id": t.node_id} for t in state.trials if t.status == "running"],
        "created_at": state.created_at, "started_at": state.started_at, "finished_at": state.finished_at,
        "updated_at": state.updated_at, "attempts": state.attempts, "coordinator": state.coordinator,
        "mlflow": state.mlflow,
    }


