"""What a trial reports, as plain data (no torch): the one type trial workers, the search loop and
strategies exchange.

    python -c "from promptsearch.results import TrialResult; print(TrialResult(candidate={}, status='failed', reason='x').usable(['auc']))"
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["completed", "failed", "preempted", "stopped"]  # stopped: early, at a rung (promptsearch.rungs)


def is_finite(value: Any) -> bool:
    """A number that is neither NaN nor infinite (``None`` and strings are not)."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


class TrialResult(BaseModel):
    """What a trial reports. ``metrics`` holds validation metrics and costs, keyed by objective
    name (``auc``, ``worst_class_recall``, ``prompt_params``, ``latency_ms``, ...); ``test_metrics``
    the test split's, kept apart and never used to select."""

    model_config = ConfigDict(extra="forbid")

    candidate: dict[str, Any]
    status: Status
    reason: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    test_metrics: dict[str, float] = Field(default_factory=dict)
    history: list[dict[str, float]] = Field(default_factory=list)
    epochs: int = 0
    steps: int = 0
    wall_time_s: float = 0.0
    seed: int = 0
    image_passes: int = 0  # training images seen (epochs trained x training images): the job's cost accounting
    rung: int | None = None  # stopped: the rung (epoch) it was stopped at; its metrics are that epoch's

    @property
    def stopped(self) -> bool:
        return self.status == "stopped"

    @property
    def ok(self) -> bool:
        return self.status == "completed" and all(is_finite(v) for v in self.metrics.values())

    def nonfinite(self, names: Iterable[str]) -> list[str]:
        """Which of ``names`` are missing or non-finite in ``metrics``."""
        return [n for n in names if not is_finite(self.metrics.get(n))]

    def usable(self, names: Iterable[str]) -> bool:
        """Completed with every named objective finite: the one rule for "counts as a result"."""
        return self.status == "completed" and not self.nonfinite(names)

    def checked(self, names: Iterable[str]) -> TrialResult:
        """This result, or (completed but with a missing or non-finite objective) a failed copy
        that says which."""
        bad = self.nonfinite(list(names))
        if self.status != "completed" or not bad:
            return self
        return self.model_copy(update={"status": "failed", "reason": "non-finite objective(s): "
                                       + ", ".join(f"{n}={self.metrics.get(n)}" for n in bad)})

    @classmethod
    def failed(cls, candidate: Any, reason: str, **kw: Any) -> TrialResult:
        cand = candidate.to_json() if hasattr(candidate, "to_json") else dict(candidate)
        return cls(candidate=cand, status="failed", reason=reason, **kw)


def finite_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, float]]:
    """History rows with their ``None`` (non-finite) values dropped."""
    return [{k: v for k, v in r.items() if v is not None} for r in rows]
