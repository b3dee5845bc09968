"""Hand-over: one strategy proposes the first ``after`` candidates, another takes over from there,
knowing every result told so far.

    python -c "from promptsearch.strategies import make_strategy; from promptsearch.space import load_space; s = make_strategy('handover', load_space('pixel'), seed=0, first='random', after=2); print([s.ask().architecture.module for _ in range(3)])"

Why: on the exact benches (``benchmarks/results/search_quality.md``) the model-based strategy
(``mobo``: a Gaussian process over every told result) is the best of all at 25 trials and then
levels off, while evolution gains most between 25 and 100, once it has a population to breed from.
A hand-over runs ``first`` for the first ``after`` asks and ``then`` for every ask after. ``then``
*adopts* each candidate ``first`` asks (:meth:`~promptsearch.strategies.base.Strategy.adopt`) and is
told every result from the start, so at the hand-over its population is already the best of what
``first`` found: no cold start, and nothing ``first`` tried is proposed again. ``first`` is told the
results of its own asks (a tell after the hand-over included); it is never asked again.

Both are built with this strategy's space, objectives and seed and the common options given to it
(``learn_stopped``, ``scalarization``, ``max_retries``), each with its own ``first_options`` /
``then_options`` on top. The follower must learn from candidates it did not propose: evolution,
regularized-evolution, rl and random can; Optuna's samplers (``optuna-*``, ``mobo``) cannot (every
Optuna trial is one of its own asks), so they lead and do not follow.

State: both inner states inside this one's. Saved without history (``state_dict(history=False)``,
what the search loop snapshots), each inner history is cut out of this one's on load: ``first``
gets the asks before the hand-over and their tells, ``then`` every ask and tell.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..space import Candidate
from ..results import TrialResult
from .base import STRATEGIES, Strategy, StrategyError, make_strategy


@STRATEGIES.register("handover")
class Handover(Strategy):
    """``first`` for ``after`` asks, then ``then``, warm-started with every result."""

    name = "handover"

    def __init__(self, space, objectives=None, seed: int = 0,
                 first: str = "mobo",  # leads: best early on the benches
                 then: str = "evolution",  # follows: must adopt (learn from asks it did not make)
                 after: int = 30,  # asks by `first`: tuned on the brain MRI bench (10 / 20 / 30 / 40: 30 first to random's HV@100)
                 first_options: Mapping[str, Any] | None = None,
                 then_options: Mapping[str, Any] | None = None,
                 **common: Any):
        super().__init__(space, objectives, seed, **common)
        if after < 0:
            raise ValueError("after must be >= 0")
        if "handover" in (first, then):
            raise ValueError("a hand-over's strategies are plain strategies, not hand-overs")
        self.after = int(after)
        self.first = make_strategy(first, space, objectives, seed=seed, **{**common, **(first_options or {})})
        self.then = make_strategy(then, space, objectives, seed=seed, **{**common, **(then_options or {})})
        if not self.then.adopts:
            raise ValueError(f"{then!r} cannot follow in a hand-over: it learns only from its own asks "
                             "(use evolution, regularized-evolution, rl or random)")
        self._history: list[Sequence[Any]] | None = None  # set by replay_history, read by _load_own_state

    @property
    def leader(self) -> Strategy:
        """The strategy whose turn it is to propose."""
        return self.first if len(self.asked) < self.after else self.then

    def ask(self) -> Candidate:
        lead = self.leader
        cand = lead.ask()
        if lead is self.first:
            self.then.adopt(cand)
        self._asked(cand)
        return cand

    def tell(self, candidate_id: str, result: TrialResult | Mapping[str, Any]) -> None:
        if candidate_id in self.pending and candidate_id not in self._told_keys:
            if candidate_id in self.first.pending:
                self.first.tell(candidate_id, result)
            self.then.tell(candidate_id, result)
        super().tell(candidate_id, result)  # this one's bookkeeping (and its errors)

    def _propose(self) -> Sequence[int]:  # never called: ask delegates to the leader
        raise NotImplementedError

    # --- state ----------------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {"after": self.after, "first": self.first.state_dict(), "then": self.then.state_dict()}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self._check_after(state)
        self.first.load_state_dict(state["first"])
        self.then.load_state_dict(state["then"])

    def _own_state(self) -> dict[str, Any]:
        return {"after": self.after, "first": self.first.state_dict(history=False),
                "then": self.then.state_dict(history=False)}

    def replay_history(self, history: Iterable[Sequence[Any]]) -> None:
        self._history = list(history)
        super().replay_history(self._history)

    def _load_own_state(self, state: Mapping[str, Any]) -> None:
        self._check_after(state)
        history, self._history = self._history or [], None
        led: set[str] = set()  # the keys `first` asked
        for event in history:
            if event[0] == "ask" and len(led) < self.after:
                led.add(event[2])
        self.first.load_state_dict(state["first"], history=[e for e in history
                                                            if (e[2] if e[0] == "ask" else e[1]) in led])
        self.then.load_state_dict(state["then"], history=history)

    def _check_after(self, state: Mapping[str, Any]) -> None:
        if state["after"] != self.after:
            raise StrategyError(f"state was made with after={state['after']}, this hand-over has after={self.after}")
