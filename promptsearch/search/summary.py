"""A job's status as one small dict: what ``promptsearch jobs``, the API and the live view show.

    python -c "from promptsearch.service.jobs import list_jobs; print(list_jobs('promptsearch-runs'))"

Built from the job's :class:`~.state.Replay` without finished trials (``summary.json`` plus the
events after it), so it costs O(running trials), not O(trials). Two statuses exist only here,
never on disk: ``cancelling`` (a cancel was requested and the coordinator is stopping the job) and
``corrupt`` (the job's files cannot be read: ``corrupt`` says which file and why).
"""

from __future__ import annotations

from typing import Any

from .state import CorruptJob, Replay


def job_summary(static: dict[str, Any], view: Replay, alive: bool | None) -> dict[str, Any]:
    """Status, trial counts, best value per objective, hypervolume and running trials of a job;
    ``alive``: whether its coordinator holds the lock (None: not asked), which makes ``interrupted``."""
    j = view.job
    interrupted = j["status"] == "interrupted" or (
        j["status"] in ("running", "queued") and alive is False and j["attempts"] > 0)
    counts = view.counts
    return {
        "job_id": static["job_id"], "name": static["name"], "status": j["status"], "message": j["message"],
        "interrupted": interrupted,  # the coordinator is gone: `promptsearch resume` continues it
        "strategy": static["strategy"], "space": static["space"], "space_hash": static["space_hash"],
        "dataset": static["dataset"], "backbone": static["backbone"],
        "trials": {"requested": static["requested"], "finished": view.finished, **counts},
        "image_passes": _passes(view.image_passes),
        "scheduler": static.get("scheduler"), "repeats": _repeats(j.get("repeats")),
        "concurrency": static["concurrency"], "failure_limit": static["failure_limit"],
        "objectives": static["objectives"], "best": dict(view.best), "hypervolume": view.hypervolume,
        "running_trials": [{"trial_id": t["trial_id"], "epoch": len(t["history"]), "epochs": static["epochs"],
                            "node_id": t.get("node_id"), "repeat_of": t.get("repeat_of")} for t in view.running()],
        "created_at": j["created_at"], "started_at": j["started_at"], "finished_at": j["finished_at"],
        "updated_at": j["updated_at"], "attempts": j["attempts"], "coordinator": j["coordinator"],
        "mlflow": j["mlflow"],
    }


def _passes(used_full: list[int]) -> dict[str, Any]:
    """Training images the job's finished trials saw, what they would have at full budget, the saving."""
    used, full = used_full
    return {"used": used, "full_budget": full, "saved": (1 - used / full) if full else 0.0}


def _repeats(rep: dict[str, Any] | None) -> dict[str, Any] | None:
    """The front re-evaluation's progress and outcome (without its plan's candidates)."""
    if not rep:
        return None
    return {"k": rep.get("k"), "round": rep.get("round", 1), "planned": len(rep.get("plan", [])),
            "done": bool(rep.get("done")),
            "front_before": rep.get("front_before", []), "front_after": rep.get("front_after"),
            "moved_off": rep.get("moved_off")}


def corrupt_summary(job_id: str, error: CorruptJob, created_at: float | None = None) -> dict[str, Any]:
    """The summary of a job whose files cannot be read: every field a listing shows, status
    ``corrupt``, the file and reason in ``corrupt``, what to do in ``message``."""
    return {
        "job_id": job_id, "name": job_id.rsplit("-", 3)[0] if job_id.count("-") >= 3 else job_id,
        "status": "corrupt", "message": str(error).removeprefix(f"job {job_id} is corrupt: "), "interrupted": False,
        "corrupt": {"file": error.file, "reason": error.reason, "hint": error.hint},
        "strategy": None, "space": None, "space_hash": None, "dataset": None, "backbone": None,
        "trials": {"requested": 0, "finished": 0, "completed": 0, "failed": 0, "stopped": 0, "preempted": 0, "running": 0},
        "image_passes": _passes([0, 0]), "scheduler": None, "repeats": None,
        "concurrency": None, "failure_limit": None, "objectives": [], "best": {}, "hypervolume": 0.0,
        "running_trials": [], "created_at": created_at or 0.0, "started_at": None, "finished_at": None,
        "updated_at": None, "attempts": 0, "coordinator": None, "mlflow": {},
    }
