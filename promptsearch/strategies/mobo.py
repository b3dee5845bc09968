"""Multi-objective Bayesian optimisation: Optuna's GP sampler (log expected hypervolume
improvement) behind the same ask/tell, the best-known peer method for PEFT search (AutoPEFT).

    python -c "from promptsearch.strategies import make_strategy; from promptsearch.space import load_space; s = make_strategy('mobo', load_space('pixel'), seed=0); print(s.ask().architecture)"

Optuna's ``GPSampler`` fits a Matern-5/2 ARD Gaussian process per objective to the normalised
objective values (1 = best) and maximises logEHVI over the genes' categorical choices. It is the
:class:`~promptsearch.strategies.optuna_search.OptunaStrategy` adapter with another sampler, so
conditional decisions, repeats, failures and the exact replayed state work the same way. The
space's constraint stays with ``ask`` (repair), not with Optuna's constraint model: it is a rule,
not a noisy black box. The GP needs a fixed set of parameters (a define-by-run conditional space
makes Optuna fall back to random sampling for conditional genes), so every gene is suggested and
the genome is then made canonical: a decision whose ``when`` is unmet just carries a value the GP
learns is irrelevant. Costs ~0.3-0.4 s of CPU per ask after the random start on one torch thread
(the GP is refitted on every told result), nothing next to a trial. torch is imported when it
samples, so this module is registered lazily.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna

from ..threads import torch_threads
from .base import STRATEGIES, Genome, Observation
from .optuna_search import SAMPLERS, OptunaStrategy


@SAMPLERS.register("gp")
def _gp(seed: int, n_startup_trials: int, population_size: int) -> optuna.samplers.BaseSampler:
    # trial results are noisy (seeds): deterministic_objective=False lets the GP fit a noise term
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_startup_trials, deterministic_objective=False,
                                     warn_independent_sampling=False)


@STRATEGIES.register("mobo")
class MultiObjectiveBO(OptunaStrategy):
    """Optuna's GP sampler with logEHVI (multi-objective Bayesian optimisation)."""

    name = "mobo"

    def __init__(self, space, objectives=None, seed: int = 0, sampler: str = "gp",
                 max_retries: int = 3,  # each retry is a GP fit and acquisition (~0.3 s); then a random unseen one
                 **options: Any):
        super().__init__(space, objectives, seed, sampler=sampler, max_retries=max_retries, **options)

    def _suggest(self, trial: optuna.Trial) -> Genome:
        g = [trial.suggest_categorical(gene.name, list(range(len(gene.choices)))) for gene in self.space.genes]
        return self.space.canonical(g)

    def _params(self, genome: Genome) -> dict[str, int]:
        return {gene.name: genome[i] for i, gene in enumerate(self.space.genes)}

    def _propose(self) -> Sequence[int]:
        with torch_threads(1):  # the GP's small matrices: more threads only spin on a busy CPU
            return super()._propose()

    def _observe(self, obs: Observation) -> None:
        with torch_threads(1):
            super()._observe(obs)
