"""Evolution: a steady-state multi-objective genetic algorithm on genomes (DEAP operators, NSGA-II).

    python -c "from promptsearch.strategies import make_strategy; from promptsearch.space import load_space; s = make_strategy('evolution', load_space('medical'), seed=0); print(s.ask().architecture)"

Asynchronous: ``ask`` never waits for anything. Until ``population_size`` results are in it
samples uniformly; after that every ``ask`` breeds one child from the current population.
With ``steady_state=True`` (default) every ``tell`` inserts the result and, above
``population_size``, removes one individual at once; with ``steady_state=False`` (classic
generational NSGA-II, (mu + lambda)) results collect as offspring and the population is
replaced once ``population_size`` of them are in — workers still never idle, children are bred
from the last complete generation. Which individual goes:

* ``aging=False`` (default, NSGA-II): DEAP's ``selNSGA2`` keeps the best ``population_size``
  by Pareto rank then crowding distance (multi-objective, no scalarization);
* ``aging=True`` (regularized evolution, Real et al. 2019): the oldest individual dies.

Parents: ``tournament_size`` individuals drawn at random, the best by (Pareto rank, crowding
distance) over the whole population wins. Child, with probability ``crossover_prob`` (else a copy
of the first parent): DEAP's ``cxUniform`` on the decisions; the components are a *set*
(``set_variation``, default): the child keeps the components both parents have and takes each
one only one parent has with probability 1/2 (the set the two parents' sets bound), instead of
per-gene swaps that ignore which components travel together. Mutation then *always changes the
genome*: one active gene (a decision, or for the components one set move: add, drop, or swap a
component for one that is off) is changed to a different value, and every other active decision
is resampled with probability ``mutation_rate`` (default 1 / active genes) by DEAP's
``mutUniformInt`` — a child equal to its parent is never proposed (``always_mutate=False`` gives
the plain per-gene mutation back). The result is made canonical and repaired to the constraint by
``ask``. Fitness is the normalised objective vector (1 = best; prompt parameters on a log scale),
so crowding is measured on the same scale as the hypervolume. Failed trials never enter the
population. Individuals are plain data (genome, values, birth): no DEAP ``creator`` classes.
DEAP's operators draw from the global ``random`` module; they run on this strategy's own RNG
(swapped in and out), so runs are seeded and never disturb other code.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
from deap import base, tools

from ..objectives import crowding_distance, nondominated_ranks
from .base import STRATEGIES, Observation, Strategy


@contextlib.contextmanager
def deap_rng(rng: random.Random) -> Iterator[None]:
    """Run DEAP (which calls ``random.*``) on ``rng``; the global state is restored after."""
    saved = random.getstate()
    random.setstate(rng.getstate())
    try:
        yield
    finally:
        rng.setstate(random.getstate())
        random.setstate(saved)


@STRATEGIES.register("evolution")
class EvolutionStrategy(Strategy):
    name = "evolution"

    def __init__(self, space, objectives=None, seed: int = 0,
                 # tuned on the PneumoniaMNIST search-quality bench (benchmarks/results/search_quality_tuning.md;
                 # 40 replay seeds): from NSGA-II's usual 16 / binary / 0.9, HV at 50 trials .8711 -> .8751 (random .8690)
                 population_size: int = 12,  # small: a job has 25-200 trials, a generation must turn over
                 tournament_size: int = 4,  # more selection pressure: a good parent is bred from sooner
                 crossover_prob: float = 0.1,  # mostly mutation: crossing two parents' decisions often breaks both
                 mutation_rate: float | None = None,  # per active gene; None = 1 / active genes
                 aging: bool = False,  # True = regularized evolution (oldest dies)
                 steady_state: bool = True,  # False = generational (mu + lambda) replacement
                 always_mutate: bool = True,  # every child differs from its parent in >= 1 gene
                 set_variation: bool = True,  # components cross and mutate as a set (add/drop/swap)
                 **common: Any):
        super().__init__(space, objectives, seed, **common)
        if not (population_size >= 2 and tournament_size >= 1 and 0 <= crossover_prob <= 1
                and (mutation_rate is None or 0 <= mutation_rate <= 1)):
            raise ValueError("evolution options out of range: population_size>=2, tournament_size>=1, "
                             "0<=crossover_prob<=1, 0<=mutation_rate<=1")
        self.population_size, self.tournament_size = population_size, tournament_size
        self.crossover_prob, self.mutation_rate, self.aging = crossover_prob, mutation_rate, aging
        self.steady_state = steady_state
        self.always_mutate, self.set_variation = always_mutate, set_variation
        self.population: list[dict[str, Any]] = []  # {"genome", "values", "birth"}, insertion order
        self.offspring: list[dict[str, Any]] = []  # generational mode: results of this generation
        self.births = 0
        # a local fitness class (all objectives maximised after normalisation); never pickled
        self._fitness = type("Fitness", (base.Fitness,), {"weights": (1.0,) * len(self.objectives)})
        self._maximised = [o.model_copy(update={"direction": "max"}) for o in self.objectives]

    # --- breeding ---------------------------------------------------------------------------------
    def _propose(self) -> Sequence[int]:
        if len(self.population) < self.population_size:
            return self.space.sample(self.rng).genome  # the initial population is uniform
        values = np.array([ind["values"] for ind in self.population])  # (P, m), 1 = best
        ranks = nondominated_ranks(values, self._maximised)
        crowd = crowding_distance(values, ranks)
        p1, p2 = (self.population[self._tournament(ranks, crowd)]["genome"] for _ in range(2))
        nd = self.space.n_decisions
        child1, child2 = list(p1), list(p2)
        active = [i for i, a in enumerate(self.space.active(p1)) if a and len(self.space.genes[i].choices) > 1]
        decisions = [i for i in active if i < nd]
        set_genes = self.set_variation and len(self.space.genes) > nd
        rate = self.mutation_rate if self.mutation_rate is not None else 1.0 / max(1, len(active))
        with deap_rng(self.rng):
            if random.random() < self.crossover_prob:
                if set_genes:
                    d1, d2 = child1[:nd], child2[:nd]
                    tools.cxUniform(d1, d2, indpb=0.5)
                    child1[:nd] = d1
                    child1[nd:] = [a if a == b else int(random.random() < 0.5) for a, b in zip(p1[nd:], p2[nd:])]
                else:
                    tools.cxUniform(child1, child2, indpb=0.5)
            pool = decisions if set_genes else active
            genes = [child1[i] for i in pool]
            tools.mutUniformInt(genes, low=[0] * len(pool),
                                up=[len(self.space.genes[i].choices) - 1 for i in pool], indpb=rate)
            for i, v in zip(pool, genes):
                child1[i] = v
            if self.always_mutate and self.space.canonical(child1) == self.space.canonical(p1):
                self._change_one(child1, decisions if set_genes else active, set_genes)
        return child1

    def _change_one(self, genome: list[int], decisions: list[int], set_genes: bool) -> None:
        """Change one thing (global ``random``, i.e. this strategy's RNG under ``deap_rng``): a
        decision to another choice, or (components as a set) add, drop or swap one component."""
        nd = self.space.n_decisions
        moves = [("decision", i) for i in decisions]
        if set_genes:
            on = [i for i in range(nd, len(genome)) if genome[i]]
            off = [i for i in range(nd, len(genome)) if not genome[i]]
            if off:
                moves.append(("add", None))
            if len(on) > self.space.spec.min_components:
                moves.append(("drop", None))
            if on and off:
                moves.append(("swap", None))
        if not moves:
            return
        kind, i = random.choice(moves)
        if kind == "decision":
            genome[i] = random.choice([v for v in range(len(self.space.genes[i].choices)) if v != genome[i]])
        elif kind == "add":
            genome[random.choice(off)] = 1
        elif kind == "drop":
            genome[random.choice(on)] = 0
        else:
            genome[random.choice(on)], genome[random.choice(off)] = 0, 1

    def _tournament(self, ranks: np.ndarray, crowd: np.ndarray) -> int:
        contenders = self.rng.sample(range(len(self.population)), min(self.tournament_size, len(self.population)))
        return min(contenders, key=lambda k: (ranks[k], -crowd[k], k))

    # --- survival -----------------------------------------------------------------------------------
    def _observe(self, obs: Observation) -> None:
        if not obs.ok:
            return  # failed trials never breed
        ind = {"genome": list(obs.genome), "values": list(obs.values), "birth": self.births}
        self.births += 1
        if self.steady_state or len(self.population) < self.population_size:
            self.population.append(ind)
        else:
            self.offspring.append(ind)
            if len(self.offspring) < self.population_size:
                return
            self.population, self.offspring = self.population + self.offspring, []
        if len(self.population) > self.population_size:
            self.population = self._survivors(self.population)

    def _survivors(self, pool: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The ``population_size`` that live on: the youngest (aging), or NSGA-II's best."""
        if self.aging:
            young = sorted(range(len(pool)), key=lambda k: pool[k]["birth"])[-self.population_size:]
            return [pool[k] for k in sorted(young)]
        holders = [SimpleNamespace(fitness=self._fitness(tuple(ind["values"])), k=k) for k, ind in enumerate(pool)]
        keep = {h.k for h in tools.selNSGA2(holders, self.population_size)}
        return [ind for k, ind in enumerate(pool) if k in keep]

    # --- state --------------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {"population": self.population, "offspring": self.offspring, "births": self.births}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self.population = [dict(ind) for ind in state["population"]]
        self.offspring = [dict(ind) for ind in state["offspring"]]
        self.births = int(state["births"])


@STRATEGIES.register("regularized-evolution")
class RegularizedEvolution(EvolutionStrategy):
    """Evolution with aging (Real et al. 2019): the oldest individual dies, not the worst."""

    name = "regularized-evolution"

    def __init__(self, space, objectives=None, seed: int = 0, aging: bool = True, **options: Any):
        super().__init__(space, objectives, seed, aging=aging, **options)
