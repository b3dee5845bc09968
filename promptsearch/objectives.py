"""Objectives, Pareto ranks, hypervolume and picking one trial from a front.

    python -c "from promptsearch.objectives import DEFAULT_OBJECTIVES as O; print([(o.name, o.direction, o.group) for o in O])"

One typed list of :class:`Objective` is the single source of truth: DEAP weights (``weight``),
Ray's ``metric``/``mode``, MLflow keys (``name``), plot axes and the scalarized reward are all
derived from it. Results are ``TrialResult`` objects or the dicts ``job_trials`` returns (anything
with ``status`` and ``metrics``); only *usable* results count — completed, with a finite value
for every objective.

Normalisation (used by :func:`hypervolume`, :func:`scalarize` and the ``knee`` rule): each
objective maps its raw value onto ``[0, 1]`` with **1 = best**, against fixed bounds
``(lo, hi)`` that belong to the objective, not to the job, so figures are deterministic and
comparable across strategies, seeds and jobs:

* ``scale="linear"`` (AUC, recalls, accuracies; bounds ``[0, 1]``): ``(v - lo) / (hi - lo)``;
* ``scale="log"`` (prompt parameters ``[10, 1e7]``, latency ``[0.1, 1e4]`` ms):
  ``(log v - log lo) / (log hi - log lo)`` — one decade is worth the same anywhere in the range;
* a ``min`` objective is flipped (``1 - x``); values outside the bounds are clipped.

The hypervolume is then the volume dominated in that unit cube with the reference point at the
worst corner (all zeros, i.e. raw ``lo`` for max and ``hi`` for min objectives): a number in
``[0, 1]`` (moocore's exact algorithm). Override bounds per objective in the job
(``{"name": "prompt_params", "direction": "min", "bounds": [100, 1e5]}``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from collections.abc import Iterable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any, Literal

import moocore
import numpy as np
from deap.tools.emo import assignCrowdingDist
from pydantic import BaseModel, ConfigDict, Field, model_validator

Direction = Literal["max", "min"]
Group = Literal["accuracy", "efficiency", "safety"]


class Objective(BaseModel):
    """One objective: a metric name (a key of ``TrialResult.metrics``), its direction and group,
    and the bounds and scale that normalise it to ``[0, 1]`` (1 = best)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.]+$")
    direction: Direction
    group: Group = "accuracy"
    bounds: tuple[float, float] = (0.0, 1.0)  # raw values mapped to the worst/best ends
    scale: Literal["linear", "log"] = "linear"

    @model_validator(mode="after")
    def _check(self) -> Objective:
        lo, hi = self.bounds
        if not lo < hi:
            raise ValueError(f"objective {self.name!r}: bounds must be (lo, hi) with lo < hi, got {self.bounds}")
        if self.scale == "log" and lo <= 0:
            raise ValueError(f"objective {self.name!r}: a log scale needs bounds > 0, got {self.bounds}")
        return self

    @property
    def weight(self) -> float:
        """DEAP's fitness weight: +1 to maximise, -1 to minimise."""
        return 1.0 if self.direction == "max" else -1.0

    @property
    def maximise(self) -> bool:
        return self.direction == "max"

    @property
    def mode(self) -> str:
        """Ray Tune's ``mode``."""
        return self.direction

    def normalise(self, values: Any) -> np.ndarray:
        """Raw values -> ``[0, 1]``, 1 = best (see the module docstring)."""
        v = np.asarray(values, dtype=float)
        lo, hi = self.bounds
        if self.scale == "log":
            x = (np.log(np.clip(v, lo, hi)) - math.log(lo)) / (math.log(hi) - math.log(lo))
        else:
            x = (np.clip(v, lo, hi) - lo) / (hi - lo)
        return x if self.maximise else 1.0 - x

    def denormalise(self, x: Any) -> np.ndarray:
        """The inverse of :meth:`normalise` (inside the bounds)."""
        x = np.asarray(x, dtype=float)
        x = x if self.maximise else 1.0 - x
        lo, hi = self.bounds
        if self.scale == "log":
            return np.exp(math.log(lo) + x * (math.log(hi) - math.log(lo)))
        return lo + x * (hi - lo)


# Known metrics: direction, group, bounds and scale, so a job may name them with a bare string.
# Bounds of the cost objectives span everything from a 2-px frame on 28-px inputs to deep VPT on
# a ViT-Base (prompt params) and a batch-1 CPU forward pass of a large model (latency).
KNOWN_OBJECTIVES: dict[str, Objective] = {o.name: o for o in [
    Objective(name="auc", direction="max", group="accuracy"),
    Objective(name="accuracy", direction="max", group="accuracy"),
    Objective(name="balanced_accuracy", direction="max", group="accuracy"),
    Objective(name="worst_class_recall", direction="max", group="safety"),
    Objective(name="prompt_params", direction="min", group="efficiency", bounds=(10.0, 1e7), scale="log"),
    # bytes of the stored prompts (prompts.safetensors of an export with the job's budget.compress)
    Objective(name="prompt_bytes", direction="min", group="efficiency", bounds=(100.0, 1e9), scale="log"),
    Objective(name="trainable_params", direction="min", group="efficiency", bounds=(10.0, 1e8), scale="log"),
    Objective(name="head_params", direction="min", group="efficiency", bounds=(1.0, 1e7), scale="log"),
    Objective(name="latency_ms", direction="min", group="efficiency", bounds=(0.1, 1e4), scale="log"),
]}

DEFAULT_OBJECTIVES: tuple[Objective, ...] = tuple(
    KNOWN_OBJECTIVES[n] for n in ("auc", "worst_class_recall", "prompt_params", "latency_ms"))


class ObjectiveError(ValueError):
    """A bad objective list, rule or weights: the message says what to write instead."""


def parse_objectives(items: Sequence[str | Mapping[str, Any] | Objective] | None) -> tuple[Objective, ...]:
    """Objectives from a job: ``"auc"`` (a known metric), ``"auc:max"``, or a dict of
    :class:`Objective` fields (unset fields of a known metric keep its defaults).
    ``None`` or empty -> :data:`DEFAULT_OBJECTIVES`."""
    if not items:
        return DEFAULT_OBJECTIVES
    out: list[Objective] = []
    for item in items:
        if isinstance(item, Objective):
            out.append(item)
            continue
        if isinstance(item, str):
            name, _, direction = item.partition(":")
            fields: dict[str, Any] = {"name": name.strip()}
            if direction:
                fields["direction"] = direction.strip()
        elif isinstance(item, Mapping):
            fields = dict(item)
        else:
            raise ObjectiveError(f"objective {item!r}: write a name ('auc'), 'name:max|min' or a mapping")
        name = fields.get("name")
        base = KNOWN_OBJECTIVES.get(name) if isinstance(name, str) else None
        if base is None and "direction" not in fields:
            raise ObjectiveError(f"objective {name!r} is not a known metric ({', '.join(KNOWN_OBJECTIVES)}); "
                                 "give its direction, e.g. 'my_metric:max'")
        try:
            out.append(Objective(**{**(base.model_dump() if base else {}), **fields}))
        except Exception as e:  # pydantic's message, without the stack
            raise ObjectiveError(f"objective {item!r}: {e}") from None
    names = [o.name for o in out]
    if len(set(names)) != len(names):
        raise ObjectiveError(f"duplicate objectives in {names}")
    return tuple(out)


# --- results -> arrays --------------------------------------------------------------------------
def _status_metrics(result: Any) -> tuple[str | None, Mapping[str, Any]]:
    if isinstance(result, Mapping):
        return result.get("status"), result.get("metrics") or {}
    return getattr(result, "status", None), getattr(result, "metrics", None) or {}


def objective_row(result: Any, objectives: Sequence[Objective]) -> np.ndarray | None:
    """A completed result's raw objective values (m,), or None if it failed or any is missing or non-finite."""
    status, metrics = _status_metrics(result)
    return metrics_row(metrics, objectives) if status == "completed" else None


def metrics_row(metrics: Mapping[str, Any], objectives: Sequence[Objective]) -> np.ndarray | None:
    """The raw objective values (m,) in ``metrics``, or None if any is missing or non-finite."""
    try:
        row = np.array([float(metrics[o.name]) for o in objectives], dtype=float)
    except (KeyError, TypeError, ValueError):
        return None
    return row if np.isfinite(row).all() else None


def usable_indices(results: Sequence[Any], objectives: Sequence[Objective] = DEFAULT_OBJECTIVES) -> list[int]:
    """Indices of completed results with a finite value for every objective."""
    return [i for i, r in enumerate(results) if objective_row(r, objectives) is not None]


def objective_values(results: Sequence[Any], objectives: Sequence[Objective] = DEFAULT_OBJECTIVES) -> np.ndarray:
    """Raw objective values of the usable results, ``(n_usable, m)`` in :func:`usable_indices` order."""
    rows = [r for r in (objective_row(x, objectives) for x in results) if r is not None]
    return np.array(rows, dtype=float).reshape(len(rows), len(objectives))


def normalised_values(values: np.ndarray, objectives: Sequence[Objective] = DEFAULT_OBJECTIVES) -> np.ndarray:
    """``(n, m)`` raw values -> ``(n, m)`` in ``[0, 1]``, 1 = best."""
    values = np.asarray(values, dtype=float).reshape(-1, len(objectives))
    return np.stack([o.normalise(values[:, j]) for j, o in enumerate(objectives)], axis=1) if len(values) \
        else values.copy()


# --- Pareto tools (moocore, DEAP) -----------------------------------------------------------------
def nondominated_ranks(values: np.ndarray, objectives: Sequence[Objective] = DEFAULT_OBJECTIVES) -> np.ndarray:
    """Pareto rank of each row of raw ``values`` (0 = non-dominated), by moocore's sorting."""
    values = np.asarray(values, dtype=float).reshape(-1, len(objectives))
    if len(values) == 0:
        return np.zeros(0, dtype=int)
    return moocore.pareto_rank(values, maximise=[o.maximise for o in objectives]).astype(int)


def crowding_distance(values: np.ndarray, ranks: np.ndarray | None = None) -> np.ndarray:
    """NSGA-II crowding distance of each row (``inf`` at a front's extremes), computed within each
    front when ``ranks`` is given, else within the whole set. DEAP's ``assignCrowdingDist`` on
    throwaway holders; the distances are returned, nothing is left on shared objects."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    out = np.zeros(n, dtype=float)
    groups = [np.arange(n)] if ranks is None else [np.flatnonzero(ranks == r) for r in np.unique(ranks)]
    for idx in groups:
        holders = [SimpleNamespace(fitness=SimpleNamespace(values=tuple(values[i]), crowding_dist=0.0)) for i in idx]
        if holders:
            assignCrowdingDist(holders)
        for i, h in zip(idx, holders):
            out[i] = h.fitness.crowding_dist
    return out


def front_ranks(results: Sequence[Any], objectives: Sequence[Objective] = DEFAULT_OBJECTIVES) -> dict[int, int]:
    """Index into ``results`` -> Pareto rank (0 = on the front) of every usable trial."""
    idx = usable_indices(results, objectives)
    if not idx:
        return {}
    ranks = nondominated_ranks(objective_values(results, objectives), objectives)
    return {i: int(r) for i, r in zip(idx, ranks)}


def pareto_front(results: Sequence[Any], objectives: Sequence[Objective] = DEFAULT_OBJECTIVES) -> list[int]:
    """Indices into ``results`` of the non-dominated usable trials (in ``results`` order)."""
    return [i for i, r in front_ranks(results, objectives).items() if r == 0]


def hypervolume(results: Sequence[Any] | np.ndarray, objectives: Sequence[Objective] = DEFAULT_OBJECTIVES,
                reference: Sequence[float] | None = None) -> float:
    """Normalised hypervolume in ``[0, 1]`` of the usable results (or of a raw ``(n, m)`` array).

    ``reference``: a raw reference point (one value per objective); default the worst corner of
    every objective's bounds. Points not strictly better than it add nothing. moocore computes it.
    """
    values = (np.asarray(results, dtype=float).reshape(-1, len(objectives)) if isinstance(results, np.ndarray)
              else objective_values(results, objectives))
    values = values[np.isfinite(values).all(axis=1)]
    if len(values) == 0:
        return 0.0
    ref = np.zeros(len(objectives)) if reference is None else normalised_values(np.asarray(reference), objectives)[0]
    pts = normalised_values(values, objectives)
    pts = pts[(pts > ref).all(axis=1)]
    if len(pts) == 0:
        return 0.0
    return float(moocore.hypervolume(pts, ref=ref, maximise=True))


# --- scalarization --------------------------------------------------------------------------------
class Scalarization(BaseModel):
    """Weights that turn normalised objectives into one reward (for RL and single-objective use).

    ``groups`` split the weight between objective groups (default 0.6 accuracy, 0.2 efficiency,
    0.2 clinical safety); within a group the weight is shared equally by its objectives.
    ``objectives`` sets an objective's weight directly (overriding its group share). Weights are
    renormalised over the objectives present, so the reward stays in ``[0, 1]``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    groups: dict[Group, float] = Field(default_factory=lambda: {"accuracy": 0.6, "efficiency": 0.2, "safety": 0.2})
    objectives: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Scalarization:
        for k, w in {**self.groups, **self.objectives}.items():
            if not (math.isfinite(w) and w >= 0):
                raise ValueError(f"weight of {k!r} must be a finite number >= 0, got {w}")
        return self

    def weights(self, objectives: Sequence[Objective]) -> np.ndarray:
        """One weight per objective, summing to 1."""
        counts = {g: sum(1 for o in objectives if o.group == g and o.name not in self.objectives) for g in self.groups}
        w = np.array([self.objectives[o.name] if o.name in self.objectives
                      else self.groups.get(o.group, 0.0) / max(counts.get(o.group, 0), 1) for o in objectives])
        if w.sum() <= 0:
            raise ObjectiveError(f"scalarization {self.model_dump()} gives every objective "
                                 f"({[o.name for o in objectives]}) weight 0")
        return w / w.sum()


FAILED_REWARD = 0.0  # a failed or unusable trial scores the worst possible normalised value


def scalarize(result: Any, objectives: Sequence[Objective] = DEFAULT_OBJECTIVES,
              weights: Scalarization | Mapping[str, Any] | None = None) -> float:
    """The weighted sum of a result's normalised objectives, in ``[0, 1]``; failed -> 0.0."""
    row = objective_row(result, objectives)
    if row is None:
        return FAILED_REWARD
    s = weights if isinstance(weights, Scalarization) else Scalarization(**(weights or {}))
    return float(np.dot(s.weights(objectives), normalised_values(row, objectives)[0]))


# --- picking one trial ------------------------------------------------------------------------------
_RULE = re.compile(r"^\s*best\s*:\s*(?P<name>[A-Za-z0-9_.]+)\s*(?:where\s+(?P<where>.+))?$")
_COND = re.compile(r"^\s*(?P<name>[A-Za-z0-9_.]+)\s*(?P<op><=|>=|==|<|>)\s*(?P<value>[-+0-9.eE]+)\s*$")
_OPS = {"<=": np.less_equal, ">=": np.greater_equal, "<": np.less, ">": np.greater, "==": np.equal}


# --- constraints: the 'where' of pick rules, the dashboard's constraint box ------------------------------------------------------------------------
@dataclass(frozen=True)
class Condition:
    name: str
    op: str
    value: float

    def __str__(self) -> str:
        return f"{self.name} {self.op} {self.value:g}"


def parse_where(text: str, known: Iterable[str] | None = None) -> list[Condition]:
    """``"prompt_params <= 10000 and worst_class_recall >= 0.6"`` -> conditions (``<=, <, >=, >,
    ==`` on a metric, parts joined by ``and``; a leading ``where`` is allowed). ``known``: the
    metric names a condition may use (a misspelt name would silently match nothing)."""
    body = re.sub(r"^\s*where\s+", "", text or "")
    if not body.strip():
        raise ObjectiveError("empty constraint: write e.g. 'prompt_params <= 10000 and worst_class_recall >= 0.6'")
    known = set(known) if known is not None else None
    out = []
    for part in re.split(r"\s+and\s+", body.strip()):
        c = _COND.match(part)
        if not c:
            raise ObjectiveError(f"cannot read condition {part!r} (write e.g. 'prompt_params <= 10000'; "
                                 f"operators {', '.join(_OPS)}; join conditions with 'and')")
        try:
            value = float(c["value"])
        except ValueError:
            raise ObjectiveError(f"condition {part!r}: {c['value']!r} is not a number") from None
        if known is not None and c["name"] not in known:
            raise ObjectiveError(f"condition {part!r}: unknown metric {c['name']!r} (known: {', '.join(sorted(known))})")
        out.append(Condition(c["name"], c["op"], value))
    return out


def where_matches(results: Sequence[Any], objectives: Sequence[Objective],
                  conditions: Sequence[Condition]) -> list[int]:
    """Indices of the trials ``pick`` chooses among: usable (completed, every objective finite)
    and meeting every condition with a finite value."""
    out = []
    for i in usable_indices(results, objectives):
        if all(math.isfinite(v := _metric(results, i, c.name)) and bool(_OPS[c.op](v, c.value)) for c in conditions):
            out.append(i)
    return out


def _metric(results: Sequence[Any], i: int, name: str) -> float:
    try:
        return float(_status_metrics(results[i])[1][name])
    except (KeyError, TypeError, ValueError):
        return float("nan")


def pick(results: Sequence[Any], objectives: Sequence[Objective] = DEFAULT_OBJECTIVES, rule: str = "knee") -> int:
    """One trial's index into ``results``.

    * ``knee`` (default): on the Pareto front, the trial closest (Euclidean) to the ideal point
      after min-max scaling each objective over the front (1 = best) — the balanced compromise;
    * ``best:<objective>``: the best value of one objective (ties: lower Pareto rank, then index);
    * ``best:<objective> where <metric> <= value [and ...]``: the same among trials meeting every
      condition (``<=, <, >=, >, ==`` on any metric), e.g. ``best:auc where prompt_params <= 10000``.
    """
    idx = usable_indices(results, objectives)
    if not idx:
        raise ObjectiveError("no completed trial with every objective to pick from")
    values = objective_values(results, objectives)
    ranks = nondominated_ranks(values, objectives)
    if rule.strip() == "knee":
        front = np.flatnonzero(ranks == 0)
        norm = normalised_values(values[front], objectives)
        span = norm.max(0) - norm.min(0)
        scaled = np.where(span > 0, (norm - norm.min(0)) / np.where(span > 0, span, 1), 1.0)
        dist = np.linalg.norm(1.0 - scaled, axis=1)
        return idx[int(front[np.argmin(dist)])]  # argmin: first on ties -> lowest index
    m = _RULE.match(rule)
    if not m:
        raise ObjectiveError(f"unknown pick rule {rule!r}: use 'knee', 'best:<objective>' or "
                             "'best:<objective> where <metric> <= <value>'")
    name = m["name"]
    by_name = {o.name: j for j, o in enumerate(objectives)}
    if name not in by_name:
        raise ObjectiveError(f"pick rule {rule!r}: {name!r} is not an objective ({', '.join(by_name)})")
    try:
        conditions = parse_where(m["where"]) if m["where"] else []
    except ObjectiveError as e:
        raise ObjectiveError(f"pick rule {rule!r}: {e}") from None
    allowed = set(where_matches(results, objectives, conditions))
    keep = np.array([i in allowed for i in idx], dtype=bool)
    if not keep.any():
        raise ObjectiveError(f"pick rule {rule!r}: no completed trial meets the condition")
    o = objectives[by_name[name]]
    key = values[:, by_name[name]] * o.weight
    order = sorted(np.flatnonzero(keep), key=lambda k: (-key[k], ranks[k], k))
    return idx[int(order[0])]
