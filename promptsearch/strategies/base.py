"""The strategy interface: ``ask() -> Candidate``, ``tell(candidate_id, result)``, versioned state.

    python -c "from promptsearch.strategies import make_strategy; from promptsearch.space import load_space; s = make_strategy('random', load_space('medical'), seed=0); print(s.ask().architecture)"

The caller (the coordinator) owns the loop. Asks may run ahead of tells (several trials in
flight) and tells may come out of order; a candidate's id is its ``Candidate.key``. A failed
trial is told with ``result.status == "failed"`` (its metrics may be empty or NaN). Strategies
know the space and the objectives, never Ray or MLflow.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from ..registry import Registry
from ..space import Candidate, SearchSpace
from ..trial import TrialResult

STRATEGIES: Registry = Registry("strategy")

STATE_VERSION = 1


class Strategy(ABC):
    """Base class: holds the space, the objectives and the seed; subclasses implement the rest."""

    name: ClassVar[str] = ""

    def __init__(self, space: SearchSpace, objectives: Any = None, seed: int = 0, **options: Any):
        self.space = space
        self.objectives = objectives
        self.seed = seed
        self.options = options

    @abstractmethod
    def ask(self) -> Candidate:
        """The next candidate to evaluate (never one already asked, unless the space is exhausted)."""

    @abstractmethod
    def tell(self, candidate_id: str, result: TrialResult) -> None:
        """Report a finished (or failed) trial of a candidate this strategy proposed."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state; ``load_state_dict`` on a fresh object restores it exactly."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def make_strategy(name: str, space: SearchSpace, objectives: Any = None, seed: int = 0, **options: Any) -> Strategy:
    return STRATEGIES.get_or_raise(name)(space, objectives, seed=seed, **options)
