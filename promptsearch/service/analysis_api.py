"""The dashboard's analysis endpoints (an ``APIRouter`` that :func:`promptsearch.service.app.create_app`
includes, guarded by the same bearer-token dependency as every job endpoint).

    curl 'localhost:8000/jobs/JOB/importance'
    curl 'localhost:8000/jobs/JOB/match?where=prompt_params%20<=%2010000%20and%20worst_class_recall%20>=%200.6'
    curl 'localhost:8000/compare?jobs=JOB_A&jobs=JOB_B'

| endpoint | |
|---|---|
| ``GET /jobs/{id}/decisions`` | the space's decisions and choices; each component on the front vs among all trials |
| ``GET /jobs/{id}/importance`` | fANOVA importance of every decision (and component) per objective |
| ``GET /jobs/{id}/curves?trial=t0001&trial=t0002`` | per-epoch history and status of those trials |
| ``GET /jobs/{id}/match?where=...`` | validate a constraint (``--pick``'s ``where``) and list the trials meeting it |
| ``GET /compare/jobs`` | every job with its space hash (what can be compared with what) |
| ``GET /compare?jobs=a&jobs=b`` | fronts and hypervolume curves of jobs on the same space |

Trials are read only through :func:`promptsearch.service.jobs.job_trials` / ``job_status`` and the
views (``trial_views``, ``pareto_view``); what is computed from them lives in
:mod:`promptsearch.service.analysis`. ``trials_download`` serves
``GET /jobs/{id}/trials?format=csv|json``.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from ..objectives import ObjectiveError, objective_row
from . import analysis, jobs
from .requests import valid_id
from .views import existing, job_objectives, job_spec, pareto_view, status_of, trial_views

MAX_COMPARE = 8  # jobs on one compare plot (each one's trials are read in full)


def job_space(ws: Path, job_id: str):
    """The space stored with the job (``job.json``), as a SearchSpace."""
    return analysis.space_of(jobs.Workspace(ws).read_job(job_id)["space"])


def _filename(job_id: str, what: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{job_id}-{what}"'}


def trials_download(ws: Path, job_id: str, fmt: Literal["csv", "json"], status: str | None = None,
                    include_test: bool = False, offset: int = 0, limit: int | None = None) -> Response:
    """``GET /jobs/{id}/trials?format=csv|json``: every trial (``status`` filters) as one flat table,
    one column per decision; test metrics only with ``include_test``."""
    existing(ws, job_id)
    records = jobs.job_trials(ws, job_id)
    spec = job_spec(ws, job_id)
    cols, rows = analysis.trial_rows(records, job_space(ws, job_id), spec.objective_list, include_test, spec.front_stopped)
    if status:
        rows = [r for r in rows if r["status"] == status]
    rows = rows[offset:offset + limit if limit else None]
    if fmt == "csv":
        return Response(analysis.rows_csv(cols, rows), media_type="text/csv; charset=utf-8",
                        headers=_filename(job_id, "trials.csv"))
    return Response(json.dumps(rows, indent=1, allow_nan=False, default=str), media_type="application/json",
                    headers=_filename(job_id, "trials.json"))


class _Cache:
    """A few computed answers by (job, what its trials were): fANOVA over 1,000 trials takes seconds,
    and a polling page asks again every few seconds; a new trial changes the key."""

    def __init__(self, size: int = 32):
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()
        self.locks: dict[Any, threading.Lock] = {}

    def get(self, key: Any, make) -> Any:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
            lock = self.locks.setdefault(key, threading.Lock())
        with lock:  # one computation per key; a second request waits for it
            with self.lock:
                if key in self.items:
                    return self.items[key]
            value = make()
            with self.lock:
                self.items[key] = value
                while len(self.items) > self.size:
                    self.items.popitem(last=False)
                self.locks.pop(key, None)
            return value


def _signature(records: list[dict[str, Any]]) -> tuple:
    return tuple((r["trial_id"], r.get("status"), r.get("finished_at")) for r in records)


def analysis_router(ws: Path, guarded: list) -> APIRouter:
    """The analysis endpoints over the workspace ``ws``; ``guarded``: the app's auth dependencies."""
    r = APIRouter(tags=["analysis"], dependencies=guarded)
    cache = _Cache()

    @r.get("/jobs/{job_id}/decisions")
    def decisions(job_id: str) -> dict[str, Any]:
        """The job's space (decisions with their choices, component groups) and, for every component,
        how many usable trials and how many front trials have it on."""
        existing(ws, job_id)
        space = job_space(ws, job_id)
        records = jobs.job_trials(ws, job_id)
        freq = analysis.component_frequency(records, space, job_objectives(ws, job_id))
        return {"space": space.name, "space_hash": space.hash,
                "decisions": [{"name": d.name, "choices": list(d.choices), "when": {k: list(v) for k, v in d.when.items()}}
                              for d in space.spec.decisions.values()],
                "component_groups": {g: list(n) for g, n in space.spec.components.items()}, **freq}

    @r.get("/jobs/{job_id}/importance")
    def importance(job_id: str) -> dict[str, Any]:
        """Which decisions matter: fANOVA importance of every decision of the space (and each component
        on/off) for every objective, over the usable trials (values in [0, 1]: the fraction of the
        objective's variance the decision explains alone)."""
        existing(ws, job_id)
        records = jobs.job_trials(ws, job_id)
        objectives = job_objectives(ws, job_id)
        key = ("importance", job_id, _signature(records))
        if any(r.get("status") == "running" for r in records):
            # while trials run, recompute once the usable trials grew by ~5 % (every trial below 20):
            # fANOVA over 1,000 trials takes seconds of the CPU the trials need ("n_trials" says how many it saw)
            n = sum(1 for r in records if objective_row(r, objectives) is not None)
            key = ("importance", job_id, "running", n // max(1, n // 20))
        return cache.get(key, lambda: analysis.importance(records, job_space(ws, job_id), objectives))

    @r.get("/jobs/{job_id}/curves")
    def curves(job_id: str, trial: list[str] = Query(..., min_length=1, max_length=50,
                                                        description="trial ids (repeat: ?trial=t0001&trial=t0002)")
               ) -> dict[str, Any]:
        """Per-epoch learning curves (``history``: epoch, train_loss, val_* per epoch) and status of the
        named trials; a running trial's curve grows as its epochs end."""
        existing(ws, job_id)
        for t in trial:
            valid_id(t, "trial id")
        try:
            return {"trials": analysis.curves(jobs.job_trials(ws, job_id), trial)}
        except KeyError as e:
            raise HTTPException(404, f"job {job_id} has no trial {e.args[0]!r}") from None

    @r.get("/jobs/{job_id}/match")
    def match(job_id: str, where: str = Query(..., max_length=500,
                                              description="e.g. prompt_params <= 10000 and worst_class_recall >= 0.6")
              ) -> dict[str, Any]:
        """Validate a constraint in ``--pick``'s ``where`` syntax and return the trials meeting it
        (completed, every objective finite, every condition true). 422 with the reason when it does
        not parse or names an unknown metric."""
        existing(ws, job_id)
        records = jobs.job_trials(ws, job_id)
        objectives = job_objectives(ws, job_id)
        known = {o.name for o in objectives} | {k for t in records for k in (t.get("metrics") or {})}
        try:
            conditions = analysis.parse_where(where, known)
        except ObjectiveError as e:
            raise HTTPException(422, str(e)) from None
        idx = analysis.where_matches(records, objectives, conditions)
        return {"where": " and ".join(map(str, conditions)),
                "conditions": [{"name": c.name, "op": c.op, "value": c.value} for c in conditions],
                "trial_ids": [records[i]["trial_id"] for i in idx], "matched": len(idx),
                "usable": sum(1 for t in records if objective_row(t, objectives) is not None)}

    @r.get("/compare/jobs")
    def compare_jobs() -> dict[str, Any]:
        """Every job with its space and space hash: jobs with the same hash can be compared."""
        return {"jobs": [{"id": s["job_id"], "name": s["name"], "status": s["status"], "space": s["space"],
                          "space_hash": s["space_hash"], "strategy": s["strategy"], "done": s["trials"]["finished"],
                          "objectives": [o["name"] for o in s["objectives"]]} for s in jobs.list_jobs(ws)]}

    @r.get("/compare")
    def compare(jobs_: list[str] = Query(..., alias="jobs", min_length=2, max_length=MAX_COMPARE,
                                         description="two or more job ids on the same space (?jobs=a&jobs=b)")
                ) -> dict[str, Any]:
        """Two or more jobs on the same space (same space hash, same objectives): each one's trials
        (objective values, on its own front or not), front, and hypervolume over trials."""
        if len(set(jobs_)) != len(jobs_):
            raise HTTPException(422, f"jobs listed twice: {jobs_}")
        statuses = [status_of(ws, j) for j in jobs_]
        try:
            analysis.compare_check(statuses)
        except ValueError as e:
            raise HTTPException(409, str(e)) from None
        out = []
        for s in statuses:
            p = pareto_view(ws, s["job_id"])
            spec = job_spec(ws, s["job_id"])
            objectives = spec.objective_list
            names = [o.name for o in objectives]
            ranked_as = ("completed", "stopped") if spec.front_stopped else ("completed",)  # as the job's own front
            points = [{"trial_id": t.trial_id, "number": t.number, "on_front": t.on_front,
                       "metrics": {n: t.metrics[n] for n in names if n in t.metrics}}
                      for t in trial_views(jobs.job_trials(ws, s["job_id"]), objectives, spec.front_stopped)
                      if t.status in ranked_as and all(n in t.metrics for n in names)]
            out.append({"id": s["job_id"], "name": s["name"], "status": s["status"], "strategy": s["strategy"],
                        "dataset": s["dataset"], "hypervolume": p.hypervolume, "hypervolume_curve": p.hypervolume_curve,
                        "front": p.front, "knee": p.knee, "trials": points})
        first = statuses[0]
        return {"space": first["space"], "space_hash": first["space_hash"], "objectives": first["objectives"],
                "jobs": out}

    return r
