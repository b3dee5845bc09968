"""What the dashboard and ``promptsearch trials`` compute from a job's trial records: pure functions
over the dicts :func:`promptsearch.service.jobs.job_trials` returns (no workspace, no HTTP).

    python -c "from promptsearch.service.analysis import parse_where; print(parse_where('prompt_params <= 1e4 and auc > .7'))"

* :func:`trial_rows` — the trial table, one column per decision of the space and one per component
  group (the components' names), validation metrics, and test metrics only when asked;
  :func:`rows_csv` writes it as CSV.
* :func:`parse_where` / :func:`where_matches` — a constraint in ``--pick``'s ``where`` syntax
  (``prompt_params <= 10000 and worst_class_recall >= 0.6``), read with the grammar of
  :func:`promptsearch.objectives.pick`, and the trials that meet it.
* :func:`importance` — which decisions matter: fANOVA (Optuna's ``FanovaImportanceEvaluator``) per
  objective over the usable trials, fed in memory as FrozenTrials.
* :func:`component_frequency` — how often each component is on, on the front vs among all trials.
* :func:`curves` — per-epoch learning curves of some trials, with their status.
* :func:`compare_check` — whether jobs can share a plot (same space, same objectives).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..objectives import Condition, Objective, ObjectiveError, front_ranks, normalised_values, objective_row, parse_where, where_matches  # noqa: F401
from ..search.records import EARLY_STOPPING_FIELDS
from ..space import SearchSpace, SpaceFile

INACTIVE = "n/a"  # a decision switched off by another's value (``when``): its own category for fANOVA
COMPONENT_SEP = ";"  # component names in one CSV cell: "brain;lung"

# fANOVA settings: 32 trees of depth 8 rank parameters like Optuna's default 64 x 64 at a sixth of the time
# (a random study of 1,000 trials x 4 objectives x 19 parameters, loaded 2-CPU machine: 6.9 s vs 40.7 s,
# same top parameters, shares within 0.02; benchmarks/results/dashboard_load.md).
FANOVA_TREES = 32
FANOVA_DEPTH = 8


def space_of(space: Mapping[str, Any]) -> SearchSpace:
    """The job's own space (``job.json``'s ``space``: the document as submitted, validated again)."""
    return SearchSpace(SpaceFile.model_validate(dict(space)), "<job>")


def _usable(records: Sequence[Mapping[str, Any]], objectives: Sequence[Objective]) -> list[int]:
    return [i for i, r in enumerate(records) if objective_row(r, objectives) is not None]


# --- the trial table -----------------------------------------------------------------------------------
def _iso(ts: float | None) -> str | None:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds") if ts else None


def _metric_names(records: Iterable[Mapping[str, Any]], key: str, first: Sequence[str]) -> list[str]:
    seen = {k for r in records for k, v in (r.get(key) or {}).items() if v is not None}
    return [n for n in first if n in seen] + sorted(seen - set(first))


def table_columns(records: Sequence[Mapping[str, Any]], space: SearchSpace, objectives: Sequence[Objective],
                  include_test: bool = False) -> list[str]:
    """The trial table's columns, in order: identity, one per decision, one per component group,
    validation metrics (objectives first), timings, and ``test_<metric>`` only with ``include_test``."""
    names = [o.name for o in objectives]
    cols = ["trial_id", "number", "status", "on_front", "rank", *space.spec.decisions,
            *(f"components.{g}" for g in space.spec.components), "n_components",
            *_metric_names(records, "metrics", names), "epochs",
            *(k for k in EARLY_STOPPING_FIELDS if any(r.get(k) is not None for r in records)),  # only when a job has them
            "wall_time_s", "started", "finished",
            "reason", "key", "genome"]
    if include_test:
        cols += [f"test_{m}" for m in _metric_names(records, "test_metrics", names)]
    return cols


def trial_rows(records: Sequence[Mapping[str, Any]], space: SearchSpace, objectives: Sequence[Objective],
               include_test: bool = False, front_stopped: bool = False) -> tuple[list[str], list[dict[str, Any]]]:
    """``(columns, rows)``: one flat row per trial in record order. A decision a trial does not
    use (its ``when`` is not met) is ``None``; component groups are lists of the names switched on.
    Test-split metrics are left out unless ``include_test``: a table sorted by them selects on
    the test split."""
    cols = table_columns(records, space, objectives, include_test)
    metric_cols = set(_metric_names(records, "metrics", []))
    from ..search.records import ranked

    # re-evaluations off the front; stopped trials too, unless the job puts them on it (front_stopped)
    rank_of = front_ranks(ranked(list(records), front_stopped), objectives)
    rows = []
    for i, r in enumerate(records):
        cand = r.get("candidate") or {}
        arch = cand.get("architecture") or {}
        comps = arch.get("components") or {}
        row: dict[str, Any] = {
            "trial_id": r["trial_id"], "number": r.get("index", i + 1), "status": r.get("status"),
            "on_front": rank_of.get(i) == 0, "rank": rank_of.get(i),
            **{d: arch.get(d) for d in space.spec.decisions},
            **{f"components.{g}": list(comps.get(g) or []) for g in space.spec.components},
            "n_components": sum(len(v or []) for v in comps.values()),
            "epochs": len(r.get("history") or []), "wall_time_s": r.get("wall_time_s"),
            "started": _iso(r.get("started_at")), "finished": _iso(r.get("finished_at")),
            "reason": r.get("reason"), "key": cand.get("key"), "genome": list(cand.get("genome") or []),
            **{k: r.get(k) for k in EARLY_STOPPING_FIELDS},
        }
        row.update({k: v for k, v in (r.get("metrics") or {}).items() if k in metric_cols})
        if include_test:
            for k, v in (r.get("test_metrics") or {}).items():
                row[f"test_{k}"] = v
        rows.append({c: row.get(c) for c in cols})
    return cols, rows


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, list):
        return (COMPONENT_SEP if all(isinstance(x, str) for x in v) else " ").join(map(str, v))
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        # a spreadsheet runs a cell that starts with = + - @ as a formula: keep names and reasons text
        return "'" + v if v[:1] in ("=", "+", "-", "@", "\t", "\r") else v
    return v


def rows_csv(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """The rows as CSV (header first; lists joined, ``None`` empty, formula-like text defused)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([_cell(row.get(c)) for c in columns])
    return buf.getvalue()


# --- which decisions matter -----------------------------------------------------------------------------
def importance_params(space: SearchSpace) -> list[dict[str, Any]]:
    """The parameters fANOVA sees: every decision (a conditional one gains an ``n/a`` choice for
    trials that do not use it), then every component as off/on."""
    out = []
    for d in space.spec.decisions.values():
        choices = list(d.choices) + ([INACTIVE] if d.when else [])
        out.append({"name": d.name, "kind": "decision", "choices": choices, "conditional": bool(d.when)})
    for group, names in space.spec.components.items():
        for n in names:
            out.append({"name": f"component:{n}", "kind": "component", "group": group, "component": n,
                        "choices": ["off", "on"]})
    return out


def _params_of(record: Mapping[str, Any], params: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    arch = (record.get("candidate") or {}).get("architecture") or {}
    on = {n for names in (arch.get("components") or {}).values() for n in names or []}
    values: dict[str, Any] = {}
    for p in params:
        if p["kind"] == "component":
            values[p["name"]] = "on" if p["component"] in on else "off"
        else:
            v = arch.get(p["name"], INACTIVE)
            if v not in p["choices"]:
                return None  # not this space's value: leave the trial out rather than guess
            values[p["name"]] = v
    return values


def importance(records: Sequence[Mapping[str, Any]], space: SearchSpace, objectives: Sequence[Objective], *,
               n_trees: int = FANOVA_TREES, max_depth: int = FANOVA_DEPTH, seed: int = 0) -> dict[str, Any]:
    """fANOVA importance of each decision (and component) for each objective.

    The usable trials go into one in-memory Optuna study (``optuna.create_study`` + ``add_trials``
    of FrozenTrials with a ``CategoricalDistribution`` over each decision's choices), one value per
    objective; ``FanovaImportanceEvaluator`` then scores each parameter for each objective. The
    target is the objective's *normalised* value (:meth:`Objective.normalise`: log scale for
    parameter counts and latency), so a few huge prompts do not own the variance. A value is the
    fraction of the objective's variance that the parameter explains on its own (the rest is
    interactions and noise): in ``[0, 1]``, not normalised to sum to 1. A decision with one
    choice, or an objective that never varies, scores 0.
    """
    import warnings

    import numpy as np
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.importance import FanovaImportanceEvaluator

    params = importance_params(space)
    dists = {p["name"]: CategoricalDistribution(tuple(p["choices"])) for p in params}
    rows, values = [], []
    for i in _usable(records, objectives):
        pv = _params_of(records[i], params)
        if pv is not None:
            rows.append(pv)
            values.append(objective_row(records[i], objectives))
    out: dict[str, Any] = {
        "method": f"fANOVA (optuna FanovaImportanceEvaluator, {n_trees} trees, depth {max_depth}, seed {seed}) "
                  "on normalised objective values; each value is the fraction of that objective's variance "
                  "the parameter explains alone",
        "n_trials": len(rows), "params": params, "objectives": [o.name for o in objectives],
        "importance": {o.name: {p["name"]: 0.0 for p in params} for o in objectives}, "note": None}
    if len(rows) < 2:
        out["note"] = f"{len(rows)} usable trial(s): importance needs at least 2 (every value is 0 until then)"
        return out
    norm = normalised_values(np.array(values), objectives)  # (n, m), 1 = best
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize"] * len(objectives))
    study.add_trials([optuna.trial.create_trial(params=pv, distributions=dists, values=[float(x) for x in row])
                      for pv, row in zip(rows, norm)])
    flat = []
    for j, o in enumerate(objectives):
        if float(np.ptp(norm[:, j])) == 0.0:
            flat.append(o.name)
            continue
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            scores = FanovaImportanceEvaluator(n_trees=n_trees, max_depth=max_depth, seed=seed).evaluate(
                study, target=lambda t, j=j: t.values[j])
        for name, v in scores.items():
            v = float(v)
            out["importance"][o.name][name] = min(max(v, 0.0), 1.0) if math.isfinite(v) else 0.0
    if flat:
        out["note"] = f"{', '.join(flat)}: the same for every trial (importance 0)"
    return out


def component_frequency(records: Sequence[Mapping[str, Any]], space: SearchSpace,
                        objectives: Sequence[Objective]) -> dict[str, Any]:
    """For each component: among the usable trials and among the front's, how many have it on."""
    rank_of = front_ranks(records, objectives)
    usable = list(rank_of)
    front = [i for i, r in rank_of.items() if r == 0]

    def on(i: int) -> set[str]:
        arch = (records[i].get("candidate") or {}).get("architecture") or {}
        return {n for names in (arch.get("components") or {}).values() for n in names or []}

    sets = {i: on(i) for i in usable}
    comps = []
    for group, names in space.spec.components.items():
        for n in names:
            a = sum(1 for i in usable if n in sets[i])
            f = sum(1 for i in front if n in sets[i])
            comps.append({"name": n, "group": group, "all": a, "front": f,
                          "all_frac": a / len(usable) if usable else None,
                          "front_frac": f / len(front) if front else None})
    return {"n_trials": len(usable), "n_front": len(front), "components": comps}


# --- learning curves ------------------------------------------------------------------------------------
def curves(records: Sequence[Mapping[str, Any]], trial_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The per-epoch history (``{epoch, train_loss, val_auc, ...}`` rows) and status of each named
    trial, in the order asked; ``KeyError`` names an unknown trial."""
    by_id = {r["trial_id"]: r for r in records}
    out = []
    for tid in trial_ids:
        if tid not in by_id:
            raise KeyError(tid)
        r = by_id[tid]
        out.append({"trial_id": tid, "number": r.get("index"), "status": r.get("status"), "reason": r.get("reason"),
                    "history": list(r.get("history") or []), "epochs_done": len(r.get("history") or [])})
    return out


# --- comparing jobs -------------------------------------------------------------------------------------
def compare_check(statuses: Sequence[Mapping[str, Any]]) -> None:
    """``ValueError`` unless the jobs (``job_status`` dicts) share a space hash and objectives — then
    their fronts share axes and their hypervolumes (fixed per-objective bounds) are comparable."""
    if len(statuses) < 2:
        raise ValueError("compare needs two or more jobs")
    first = statuses[0]
    for s in statuses[1:]:
        if s["space_hash"] != first["space_hash"]:
            raise ValueError(f"jobs {first['job_id']} and {s['job_id']} search different spaces "
                             f"({first['space']} {first['space_hash']} vs {s['space']} {s['space_hash']}): "
                             "compare jobs on the same space")
        if s["objectives"] != first["objectives"]:
            raise ValueError(f"jobs {first['job_id']} and {s['job_id']} have different objectives "
                             f"({[o['name'] for o in first['objectives']]} vs {[o['name'] for o in s['objectives']]}): "
                             "their hypervolumes are not comparable")
