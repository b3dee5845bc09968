"""Random search: uniform sampling without repeats (the baseline that is hard to beat).

    python -c "from promptsearch.strategies import make_strategy; from promptsearch.space import load_space; s = make_strategy('random', load_space('vpt'), seed=0); print([s.ask().genome for _ in range(3)])"
"""

from __future__ import annotations

import random
from typing import Any

from ..space import Candidate
from ..trial import TrialResult
from .base import STATE_VERSION, STRATEGIES, Strategy


@STRATEGIES.register("random")
class RandomSearch(Strategy):
    name = "random"

    def __init__(self, space, objectives=None, seed: int = 0, max_retries: int = 1000, **options: Any):
        super().__init__(space, objectives, seed, **options)
        self.rng = random.Random(seed)
        self.max_retries = max_retries
        self.seen: set[tuple[int, ...]] = set()

    def ask(self) -> Candidate:
        for _ in range(self.max_retries):
            c = self.space.sample(self.rng)
            if c.genome not in self.seen:
                break
        else:  # nearly exhausted: walk the enumeration for an unseen one, else repeat
            c = next((x for x in self.space.enumerate() if x.genome not in self.seen), c)
        self.seen.add(c.genome)
        return c

    def tell(self, candidate_id: str, result: TrialResult) -> None:
        return None  # random search does not learn

    def state_dict(self) -> dict[str, Any]:
        state = self.rng.getstate()
        return {"version": STATE_VERSION, "strategy": self.name, "seed": self.seed,
                "rng": [state[0], list(state[1]), state[2]], "seen": sorted(list(g) for g in self.seen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION or state.get("strategy") != self.name:
            raise ValueError(f"state is for {state.get('strategy')} v{state.get('version')}, not {self.name} v{STATE_VERSION}")
        v, internal, gauss = state["rng"]
        self.rng.setstate((v, tuple(internal), gauss))
        self.seen = {tuple(g) for g in state["seen"]}
