"""Optuna's TPE and NSGA-II samplers through its ask-and-tell API: our peer baseline.

    python -c "from promptsearch.strategies import make_strategy; from promptsearch.space import load_space; s = make_strategy('optuna-tpe', load_space('medical'), seed=0); print(s.ask().architecture)"

A thin adapter. Each gene is a ``CategoricalDistribution`` over its choice *indices*, suggested
define-by-run in genome order, so a decision whose ``when`` is unmet is never suggested (Optuna
sees the space's conditional structure). The study maximises every normalised objective
(1 = best; prompt parameters on a log scale, as the hypervolume sees them).

Every Optuna trial that is told values has exactly the evaluated genome as its parameters:

* a proposal that repeats a genome already evaluated is told that genome's known values at once
  (it *is* that point) and Optuna is asked again; a repeat of a pending or failed genome, or a
  proposal that breaks the constraint, is told ``FAIL``;
* when ``ask`` settles on a genome Optuna did not propose (a repaired proposal, or a random
  unseen one after ``max_retries`` repeats) it is enqueued (``Study.enqueue_trial``) and asked.

State: Optuna's samplers keep internal RNG state that has no public getter, so the JSON state
is the seed plus the log of asks and told results; ``load_state_dict`` rebuilds the study by
replaying it through the same seeded sampler — exact, and checked (the replayed asks must match).
Without history (``state_dict(history=False)``, what the search loop snapshots) the state is the
study itself — every Optuna trial's parameters, values and attributes, and the sampler pickled
as Optuna's documentation recommends for resuming with the same random state — and a load
re-adds the trials (``Study.add_trials``) instead of sampling them again. Since Optuna 5.1 the GA
samplers hold a ``threading.Lock``, which does not pickle: the snapshot pickles each lock as a
new, unlocked one (a lock guards a live process, it is no state to resume).
"""

from __future__ import annotations

import base64
import io
import pickle
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from ..registry import Registry
from ..space import Candidate
from .base import STRATEGIES, Genome, Observation, Strategy, StrategyError, stopped_result

optuna.logging.set_verbosity(optuna.logging.WARNING)

SAMPLERS: Registry[Callable[..., optuna.samplers.BaseSampler]] = Registry("optuna sampler")


@SAMPLERS.register("tpe")
def _tpe(seed: int, n_startup_trials: int, population_size: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)


@SAMPLERS.register("nsga2")
def _nsga2(seed: int, n_startup_trials: int, population_size: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=population_size)


_FRESH_LOCK = {type(threading.Lock()): threading.Lock, type(threading.RLock()): threading.RLock}


class _SamplerPickler(pickle.Pickler):
    """Pickles a sampler whole, each lock it holds as a fresh one of the same kind."""

    def reducer_override(self, obj: Any) -> Any:
        fresh = _FRESH_LOCK.get(type(obj))
        return (fresh, ()) if fresh is not None else NotImplemented


def _pickle_sampler(sampler: optuna.samplers.BaseSampler) -> str:
    buf = io.BytesIO()
    _SamplerPickler(buf).dump(sampler)
    return base64.b64encode(buf.getvalue()).decode()


@STRATEGIES.register("optuna")
class OptunaStrategy(Strategy):
    name = "optuna"
    adopts = False  # every Optuna trial is one of its own asks: it leads a hand-over, never follows

    def __init__(self, space, objectives=None, seed: int = 0,
                 sampler: str = "tpe",  # "tpe" or "nsga2"
                 n_startup_trials: int = 10,  # TPE: random trials before the model (Optuna's default)
                 population_size: int = 16,  # NSGA-II: Optuna's 50 would be most of a 100-trial job
                 max_retries: int = 10,  # each retry is a sampler call (TPE: ~0.1 s); then a random unseen one
                 **common: Any):
        super().__init__(space, objectives, seed, max_retries=max_retries, **common)
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; known: {', '.join(sorted(SAMPLERS))}")
        if n_startup_trials < 0 or population_size < 2:
            raise ValueError("n_startup_trials must be >= 0 and population_size >= 2")
        self._init = dict(objectives=objectives, seed=seed, sampler=sampler, n_startup_trials=n_startup_trials,
                          population_size=population_size, max_retries=max_retries, **common)
        self.sampler_name = sampler
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.study = optuna.create_study(
                directions=["maximize"] * len(self.objectives),
                sampler=SAMPLERS[sampler](self.seed, n_startup_trials, population_size))
        self._current: tuple[optuna.Trial, Genome] | None = None  # the proposal being considered
        self._trial_of: dict[Genome, int] = {}  # pending genome -> Optuna trial number
        self._values: dict[Genome, list[float]] = {}  # evaluated genome -> normalised values
        self.events: list[Any] = []  # "ask" or a told observation, in order

    # --- Optuna <-> genomes ---------------------------------------------------------------------
    def _suggest(self, trial: optuna.Trial) -> Genome:
        g = [0] * len(self.space.genes)
        for i, gene in enumerate(self.space.genes):
            if self.space.active(g)[i]:  # 'when' looks only at earlier genes, already set
                g[i] = trial.suggest_categorical(gene.name, list(range(len(gene.choices))))
        return tuple(g)

    def _params(self, genome: Genome) -> dict[str, int]:
        act = self.space.active(genome)
        return {gene.name: genome[i] for i, gene in enumerate(self.space.genes) if act[i]}

    def _propose(self) -> Sequence[int]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial = self.study.ask()
        self._current = (trial, self._suggest(trial))
        return self._current[1]

    def _rejected(self, genome: Genome) -> None:
        trial, proposed = self._current
        if proposed == genome and genome in self._values:
            self.study.tell(trial, self._values[genome])  # the same point: its known values
        else:
            self.study.tell(trial, state=TrialState.FAIL)
        self._current = None

    def _accepted(self, genome: Genome) -> None:
        if self._current is not None and self._current[1] == genome:
            trial = self._current[0]
        else:  # repaired or a random fallback: make Optuna's trial carry the evaluated genome
            if self._current is not None:
                self.study.tell(self._current[0], state=TrialState.FAIL)
            self.study.enqueue_trial(self._params(genome))
            trial = self.study.ask()
            if self._suggest(trial) != genome:
                raise StrategyError("optuna did not honour an enqueued trial")  # a bug, not a user error
        self._current = None
        self._trial_of[genome] = trial.number

    def ask(self) -> Candidate:
        cand = super().ask()
        self.events.append("ask")
        return cand

    def _observe(self, obs: Observation) -> None:
        number = self._trial_of.pop(obs.genome)
        if obs.ok:
            self._values[obs.genome] = list(obs.values)
            self.study.tell(number, list(obs.values))
        else:
            self.study.tell(number, state=TrialState.FAIL)
        self.events.append(obs.to_json())

    def _ignored(self, genome: Genome) -> None:
        """A stopped trial not learned from: Optuna's trial ends PRUNED (its samplers skip those)."""
        self.study.tell(self._trial_of.pop(genome), state=TrialState.PRUNED)
        self.events.append({"ignored": list(genome)})

    # --- state: the seed and the event log, replayed ---------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {"sampler": self.sampler_name, "events": list(self.events)}

    def _own_state(self) -> dict[str, Any]:
        trials = [{"state": t.state.name, "params": t.params, "values": t.values, "system_attrs": t.system_attrs,
                   "user_attrs": t.user_attrs} for t in self.study.get_trials(deepcopy=False)]
        study_attrs = self.study._storage.get_study_system_attrs(self.study._study_id)  # NSGA-II's parent cache
        return {"sampler": self.sampler_name, "study": trials, "study_attrs": study_attrs,
                "sampler_pickle": _pickle_sampler(self.study.sampler),
                "trial_of": [[list(g), n] for g, n in self._trial_of.items()],
                "values": [[list(g), v] for g, v in self._values.items()]}

    def _load_own_state(self, state: Mapping[str, Any]) -> None:
        if state["sampler"] != self.sampler_name:
            raise StrategyError(f"state was made with sampler {state['sampler']!r}, this strategy has {self.sampler_name!r}")
        sampler = pickle.loads(base64.b64decode(state["sampler_pickle"]))  # noqa: S301 - our own snapshot
        dists = {g.name: optuna.distributions.CategoricalDistribution(list(range(len(g.choices))))
                 for g in self.space.genes}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study = optuna.create_study(directions=["maximize"] * len(self.objectives), sampler=sampler)
            study.add_trials([optuna.trial.create_trial(
                state=TrialState[t["state"]], values=t["values"], params=t["params"],
                distributions={k: dists[k] for k in t["params"]}, system_attrs=t["system_attrs"],
                user_attrs=t["user_attrs"]) for t in state["study"]])
            for k, v in state["study_attrs"].items():
                study._storage.set_study_system_attr(study._study_id, k, v)
        self.study = study
        self._trial_of = {tuple(g): int(n) for g, n in state["trial_of"]}
        self._values = {tuple(g): list(v) for g, v in state["values"]}

    def replay_history(self, history: Iterable[Sequence[Any]]) -> None:
        history = list(history)
        super().replay_history(history)
        told = iter(self.told)
        self.events = []
        seen: set[str] = set()
        genome_of: dict[str, list[int]] = {}
        for e in history:  # the same order of asks and observations as ask/tell appended them
            if e[0] == "ask":
                self.events.append("ask")
                genome_of[e[2]] = [int(x) for x in e[1]]
            elif e[1] not in seen:
                seen.add(e[1])
                if not self.learn_stopped and stopped_result(e[2]):
                    self.events.append({"ignored": genome_of[e[1]]})
                else:
                    self.events.append(next(told).to_json())

    def load_state_dict(self, state: Mapping[str, Any], history: Iterable[Sequence[Any]] | None = None) -> None:
        if "asked" not in state:  # saved without history: the study itself, no replay
            return super().load_state_dict(state, history)
        self._check_state(state)
        if state["own"]["sampler"] != self.sampler_name or state["seed"] != self.seed:
            raise StrategyError(f"state was made with sampler {state['own']['sampler']!r} and seed {state['seed']}, "
                                f"this strategy has {self.sampler_name!r} and seed {self.seed}")
        fresh = type(self)(self.space, **self._init)
        for event in state["own"]["events"]:
            if event == "ask":
                fresh.ask()
            elif "ignored" in event:
                fresh._ignore(self.space.candidate(event["ignored"]).key)
            else:
                obs = Observation.from_json(event)
                fresh._record(self.space.candidate(obs.genome).key, obs)
        if [list(g) for g in fresh.asked] != state["asked"] or sorted(fresh.pending) != sorted(state["pending"]):
            raise StrategyError("replaying the optuna state did not reproduce its asks "
                                f"(was it made with another Optuna version? this is {optuna.__version__})")
        self.__dict__.update(fresh.__dict__)


@STRATEGIES.register("optuna-tpe")
class OptunaTPE(OptunaStrategy):
    """Optuna's (multi-objective) TPE sampler."""

    name = "optuna-tpe"

    def __init__(self, space, objectives=None, seed: int = 0, sampler: str = "tpe", **options: Any):
        super().__init__(space, objectives, seed, sampler=sampler, **options)


@STRATEGIES.register("optuna-nsga2")
class OptunaNSGA2(OptunaStrategy):
    """Optuna's NSGA-II sampler."""

    name = "optuna-nsga2"

    def __init__(self, space, objectives=None, seed: int = 0, sampler: str = "nsga2", **options: Any):
        super().__init__(space, objectives, seed, sampler=sampler, **options)
