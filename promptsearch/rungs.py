"""Multi-objective asynchronous successive halving (MO-ASHA): the one rung rule every job and
benchmark uses.

    python -c "from promptsearch.rungs import Scheduler, promote; print(promote([[0.9, 0.5], [0.7, 0.4]], [0.8, 0.6], Scheduler(rungs=[1, 3])))"

A job with ``scheduler: {rungs: [1, 3], eta: 3}`` trains each trial to its full ``budget.epochs``
unless, at a rung epoch, the trial's objective vector is not in the top ``1/eta`` of the vectors
recorded at that rung so far (asynchronous: no waiting for a rung to fill; like Ray's ASHA, the
first trials at a rung always continue). The ranking:

* ``nds`` (default, MO-ASHA as in Syne Tune): non-dominated sorting of the rung's vectors, ties
  within a level broken by hypervolume contribution (``tie_break: hv``) or NSGA-II crowding
  distance (``tie_break: crowding``);
* ``scalar``: the weighted sum of normalised objectives (equal weights unless the job's
  scalarization says otherwise) — Ray Tune's ASHA on one metric, the peer baseline.

An early rung can foretell one objective and not another (on the brain MRI bench a trial's AUC
after one epoch ranks its final AUC with Spearman ρ 0.8, its worst-class recall ρ 0.03): ranked on
that noise, a rung stops trials at random. With ``informative_rho`` set, an objective takes part in
a rung's ranking only if, over the job's trials that completed after being ranked there, its value
at the rung ranks their final values with Spearman ρ at least that (:func:`informative`; from
``informative_after`` such trials on; before, every objective ranks). An objective that does not
change with training (prompt parameters) has ρ 1; at least one objective always ranks.

Vectors are *normalised* objective values (``objectives.normalised_values``: ``[0, 1]``, 1 = best),
cost objectives (parameters, bytes, latency) taking part as measured. The rule is a pure function
of the recorded vectors, so the search loop's decisions can be stored in its event log and are
the same after a resume, and a benchmark replays them without Ray.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .budget import Count

if TYPE_CHECKING:  # numpy is imported where a rung is ranked: job files validate without it
    import numpy as np


class Scheduler(BaseModel):
    """Early stopping of a job's trials (the job's ``scheduler:``); ``None`` in a job: every trial
    trains its full budget."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rungs: list[Count] = Field(min_length=1, max_length=32)  # epochs at which a trial is ranked, ascending
    eta: float = Field(3.0, gt=1, le=100)  # keep the top 1/eta at each rung
    ranking: Literal["nds", "scalar"] = "nds"
    tie_break: Literal["hv", "crowding"] = "hv"
    front_includes_stopped: bool = False  # a stopped trial may sit on the job's front (its rung metrics)
    informative_rho: float | None = Field(None, ge=-1, le=1)  # rank a rung only on the objectives it foretells
    informative_after: Count = 8  # completed trials ranked at a rung before ``informative_rho`` applies there

    @field_validator("rungs")
    @classmethod
    def _ascending(cls, v: list[int]) -> list[int]:
        if any(r < 1 for r in v) or any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"rungs must be ascending epochs >= 1, got {v}")
        return v

    def active(self, epochs: int) -> list[int]:
        """The rungs a trial of ``epochs`` epochs can stop at (a rung at or past the last epoch is none)."""
        return [r for r in self.rungs if r < epochs]


def order(points: np.ndarray, scheduler: Scheduler, weights: np.ndarray | None = None) -> np.ndarray:
    """Indices of ``points`` ``(n, m)`` (normalised, maximised) best first under the scheduler's ranking."""
    import moocore
    import numpy as np

    points = np.asarray(points, dtype=float).reshape(len(points), -1)
    n, m = points.shape
    if n == 0:
        return np.zeros(0, dtype=int)
    if m == 1:  # one objective: both rankings are its order
        return np.lexsort((np.arange(n), -points[:, 0]))
    if scheduler.ranking == "scalar":
        w = np.full(m, 1.0 / m) if weights is None else np.asarray(weights, dtype=float)
        score = points @ w
        return np.lexsort((np.arange(n), -score))  # higher score first, then earlier
    levels = moocore.pareto_rank(points, maximise=True).astype(int)  # (n,) 0 = non-dominated
    tie = np.zeros(n)
    for level in np.unique(levels):
        idx = np.flatnonzero(levels == level)
        if len(idx) > 1:
            tie[idx] = _tie_values(points[idx], scheduler.tie_break)
    return np.lexsort((np.arange(n), -tie, levels))  # level, then larger contribution, then earlier


def _tie_values(points: np.ndarray, how: str) -> np.ndarray:
    """(k,) larger = better among points of one non-dominated level."""
    import numpy as np

    if how == "hv":
        import moocore

        return np.asarray(moocore.hv_contributions(points, ref=np.zeros(points.shape[1]), maximise=True), dtype=float)
    from .objectives import crowding_distance

    return crowding_distance(points)


def informative(at_rung: Sequence[Sequence[float]], final: Sequence[Sequence[float]],
                scheduler: Scheduler) -> np.ndarray | None:
    """``(m,)`` bool: which objectives rank at a rung, from the completed trials ranked there
    (``at_rung`` and ``final`` ``(n, m)``: their normalised vectors at the rung and at the end, row
    for row); ``None``, every objective, while ``informative_rho`` is unset or fewer than
    ``informative_after`` trials completed. Else those whose Spearman ρ (rung vs end) is at least
    ``informative_rho`` (an objective equal at the rung and at the end has ρ 1, one constant at
    either 0), and always the one with the largest ρ (the first of equals)."""
    if scheduler.informative_rho is None or len(at_rung) < scheduler.informative_after:
        return None
    import numpy as np
    from scipy.stats import spearmanr

    a = np.asarray(at_rung, dtype=float)  # (n, m)
    f = np.asarray(final, dtype=float)  # (n, m)
    rho = np.array([1.0 if np.array_equal(a[:, j], f[:, j]) else
                    0.0 if np.ptp(a[:, j]) == 0 or np.ptp(f[:, j]) == 0 else
                    float(spearmanr(a[:, j], f[:, j])[0]) for j in range(a.shape[1])])  # (m,)
    keep = rho >= scheduler.informative_rho
    keep[int(np.argmax(rho))] = True
    return keep


def promote(recorded: Sequence[Sequence[float]], point: Sequence[float], scheduler: Scheduler,
            weights: np.ndarray | None = None, columns: np.ndarray | None = None) -> bool:
    """Whether a trial whose (normalised) vector at a rung is ``point`` continues, given the
    vectors ``recorded`` earlier at that rung: it does when at most ``len(recorded) / eta`` of them
    rank above it (the multi-objective form of ASHA's "at least the (1 - 1/eta) quantile").
    ``columns`` ``(m,)`` bool: the objectives that rank (:func:`informative`; default all)."""
    import numpy as np

    if not len(recorded):
        return True
    pts = np.vstack([np.asarray(recorded, dtype=float), np.asarray(point, dtype=float)[None, :]])  # (n+1, m)
    if columns is not None:
        keep = np.asarray(columns, dtype=bool)
        pts = pts[:, keep]  # (n+1, m')
        weights = None if weights is None else np.asarray(weights, dtype=float)[keep]
    ranked = order(pts, scheduler, weights)
    above = int(np.flatnonzero(ranked == len(pts) - 1)[0])  # how many recorded vectors rank above it
    return above <= len(recorded) / scheduler.eta
