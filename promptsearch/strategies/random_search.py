"""Random search: uniform sampling without repeats (the baseline that is hard to beat).

    python -c "from promptsearch.strategies import make_strategy; from promptsearch.space import load_space; s = make_strategy('random', load_space('vpt'), seed=0); print([s.ask().genome for _ in range(3)])"

Uniform over valid genomes (the space's sampler rejects constraint violations rather than
repairing them, which would bias towards more components); repeats are redrawn by ``ask``.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import STRATEGIES, Strategy


@STRATEGIES.register("random")
class RandomSearch(Strategy):
    name = "random"

    def _propose(self) -> Sequence[int]:
        return self.space.sample(self.rng).genome
