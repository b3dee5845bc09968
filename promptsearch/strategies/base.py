"""The strategy interface: ``ask() -> Candidate``, ``tell(candidate_id, result)``, versioned state.

    python -c "from promptsearch.strategies import make_strategy; from promptsearch.space import load_space; s = make_strategy('random', load_space('medical'), seed=0); print(s.ask().architecture)"

The caller (the coordinator) owns the loop. Asks may run ahead of tells (several trials in
flight) and tells may come out of order; a candidate's id is its ``Candidate.key``. A failed
trial is told with ``result.status == "failed"`` (its metrics may be empty or NaN); a completed
result missing an objective or with a non-finite one counts as failed too. A trial the job's
scheduler stopped early is told with ``status == "stopped"`` and its metrics at the rung: a
low-fidelity result, learned from like a completed one unless ``learn_stopped=False`` (then only
its bookkeeping: it is not proposed again, nothing is learned). Strategies know the
space and the objectives, never Ray or MLflow.

:class:`Strategy` does the bookkeeping every strategy shares, so each one only writes
``_propose`` (a genome), ``_observe`` (learn from one result) and its own state:

* every proposal is made canonical and, if it breaks the space's constraint, repaired
  (``SearchSpace.repair``), so no invalid candidate ever leaves ``ask``;
* no candidate is proposed twice: a repeat is re-proposed up to ``max_retries`` times, then a
  random unseen candidate is drawn instead; repeats happen only once the space is exhausted;
* ``tell`` looks the id up among the pending asks (an id told twice is ignored: at-least-once
  delivery is safe) and turns the result into normalised objective values and a scalar reward;
* ``state_dict`` is plain JSON (version, strategy, space hash, RNG state, asks, results, plus
  the strategy's own part); ``load_state_dict`` on a fresh object with the same space and
  options restores it exactly, so the next proposals are identical; ``state_dict(history=False)``
  leaves the asks and results out, for a caller that logs them and hands them back on load.
"""

from __future__ import annotations

import inspect
import random
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..objectives import (FAILED_REWARD, Objective, Scalarization, normalised_values, objective_row, parse_objectives,
                          scalarize)
from ..registry import Registry
from ..space import Candidate, SearchSpace
from ..results import TrialResult

STRATEGIES: Registry = Registry("strategy")

STATE_VERSION = 2  # 2: shared bookkeeping (asks, pending, results) in every strategy's state

Genome = tuple[int, ...]


class StrategyError(ValueError):
    """Bad strategy options, an unknown candidate id or a state from another strategy/space."""


@dataclass(frozen=True)
class Observation:
    """One told result as a strategy sees it: the genome, its normalised objective values
    (``[0, 1]``, 1 = best; ``None`` when the trial failed) and the scalarized reward."""

    genome: Genome
    values: tuple[float, ...] | None
    reward: float

    @property
    def ok(self) -> bool:
        return self.values is not None

    def to_json(self) -> dict[str, Any]:
        return {"genome": list(self.genome), "values": None if self.values is None else list(self.values),
                "reward": self.reward}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Observation:
        return cls(tuple(d["genome"]), None if d["values"] is None else tuple(d["values"]), float(d["reward"]))


def nondominated(points: Sequence[Sequence[float]]) -> list[list[float]]:
    """The non-dominated points (all coordinates maximised), duplicates kept once."""
    pts = [list(p) for p in points]
    keep = []
    for i, p in enumerate(pts):
        dominated = any(all(q[k] >= p[k] for k in range(len(p))) and (q != p or j < i) for j, q in enumerate(pts) if j != i)
        if not dominated:
            keep.append(p)
    return keep


def hv_gain(front: Sequence[Sequence[float]], point: Sequence[float]) -> float:
    """The hypervolume ``point`` adds to ``front`` in the normalised cube (all maximised, reference
    at the origin); 0 for a dominated point."""
    import moocore
    import numpy as np

    if any(v <= 0 for v in point):
        return 0.0
    if any(all(q[k] >= point[k] for k in range(len(point))) for q in front):
        return 0.0
    ref = np.zeros(len(point))
    before = float(moocore.hypervolume(np.array(front), ref=ref, maximise=True)) if len(front) else 0.0
    after = float(moocore.hypervolume(np.array([*front, list(point)]), ref=ref, maximise=True))
    return max(0.0, after - before)


def front_distance(front: Sequence[Sequence[float]], point: Sequence[float]) -> float:
    """How far ``point`` is behind ``front`` (all maximised): the smallest amount every coordinate
    of it must grow by for no front point to dominate it (the additive epsilon indicator); 0 for a
    point on or beyond the front."""
    if not front:
        return 0.0
    return max(0.0, min(min(q[k] - point[k] for k in range(len(point))) for q in front))


def rng_to_json(rng: random.Random) -> list:
    v, internal, gauss = rng.getstate()
    return [v, list(internal), gauss]


def rng_from_json(rng: random.Random, state: Sequence) -> None:
    v, internal, gauss = state
    rng.setstate((v, tuple(internal), gauss))


class Strategy(ABC):
    """Shared bookkeeping; a subclass implements ``_propose`` and optionally ``_observe``,
    ``_state`` and ``_load_state``. Constructor options are keyword arguments with defaults."""

    name: ClassVar[str] = ""
    adopts: ClassVar[bool] = True  # can learn from a candidate another strategy asked (see adopt)

    def __init__(self, space: SearchSpace, objectives: Sequence[Objective | str | Mapping] | None = None,
                 seed: int = 0, scalarization: Scalarization | Mapping[str, Any] | None = None,
                 max_retries: int = 50, learn_stopped: bool = True):
        self.space = space
        self.objectives: tuple[Objective, ...] = parse_objectives(objectives)
        self.scalarization = (scalarization if isinstance(scalarization, Scalarization)
                              else Scalarization(**(scalarization or {})))
        self.seed = int(seed)
        self.max_retries = max_retries  # re-proposals of a repeat before a random unseen candidate
        self.learn_stopped = bool(learn_stopped)  # learn from trials stopped early (their rung metrics)
        self.rng = random.Random(self.seed)  # bookkeeping draws (repair, fallback) and simple strategies
        self.asked: dict[Genome, int] = {}  # every genome proposed -> ask number
        self.pending: dict[str, Genome] = {}  # candidate id -> genome, asked but not told
        self.told: list[Observation] = []  # in tell order
        self._told_keys: set[str] = set()
        self._size = space.size()

    # --- the public interface ---------------------------------------------------------------
    def ask(self) -> Candidate:
        """The next candidate: valid, and never one already asked unless the space is exhausted."""
        exhausted = self.exhausted
        genome = None
        for _ in range(max(1, self.max_retries)):
            g = self._valid(self._propose())
            if exhausted or g not in self.asked:
                genome = g
                break
            self._rejected(g)
        if genome is None:
            genome = self._unseen()
        self._accepted(genome)
        cand = self.space.candidate(genome)
        self._asked(cand)
        return cand

    def _asked(self, cand: Candidate) -> None:
        """Book ``cand`` as this strategy's newest ask, pending its tell."""
        self.asked[cand.genome] = len(self.asked)
        self.pending[cand.key] = cand.genome

    def tell(self, candidate_id: str, result: TrialResult | Mapping[str, Any]) -> None:
        """Report a finished (or failed) trial of a candidate this strategy proposed."""
        if candidate_id in self._told_keys:
            return  # told already: duplicate deliveries are harmless
        if candidate_id not in self.pending:
            raise StrategyError(f"candidate id {candidate_id!r} was not asked of this {self.name} strategy "
                                f"(or its state was not restored)")
        if stopped_result(result) and not self.learn_stopped:
            self._ignore(candidate_id)
            return
        self._record(candidate_id, self.observation(self.pending[candidate_id], result))

    def adopt(self, candidate: Candidate) -> None:
        """Take on a candidate another strategy asked (a hand-over, ``strategies.handover``): it
        counts as asked (never proposed again) and its tell is learned from as if this strategy had
        proposed it. A strategy whose learning needs its own proposals (Optuna's trials are its own
        asks) sets ``adopts = False`` and refuses."""
        if not self.adopts:
            raise StrategyError(f"the {self.name} strategy cannot learn from candidates it did not propose")
        if candidate.key in self.pending or candidate.key in self._told_keys:
            return
        self.asked.setdefault(candidate.genome, len(self.asked))
        self.pending[candidate.key] = candidate.genome

    def _ignore(self, candidate_id: str) -> None:
        """A stopped trial with ``learn_stopped=False``: asked and answered (never proposed again),
        nothing learned; the strategy's :meth:`_ignored` closes whatever it keeps for the ask."""
        genome = self.pending.pop(candidate_id)
        self._told_keys.add(candidate_id)
        self._ignored(genome)

    def _record(self, candidate_id: str, obs: Observation) -> None:
        del self.pending[candidate_id]
        self._told_keys.add(candidate_id)
        self.told.append(obs)
        self._observe(obs)

    def observation(self, genome: Genome, result: TrialResult | Mapping[str, Any]) -> Observation:
        result = _as_completed(result)
        row = objective_row(result, self.objectives)  # (m,) raw values, None: failed or unusable
        values = None if row is None else tuple(float(x) for x in normalised_values(row, self.objectives)[0])
        return Observation(tuple(genome), values, scalarize(result, self.objectives, self.scalarization))

    def state_dict(self, history: bool = True) -> dict[str, Any]:
        """JSON-serialisable state; ``load_state_dict`` on a fresh object restores it exactly.
        ``history=False`` leaves out what grows with every trial — the asked genomes and told
        results — for a caller that records them itself (the search loop's event log) and hands
        them back to :meth:`load_state_dict` as ``history``."""
        state = {"version": STATE_VERSION, "strategy": self.name, "space": self.space.name,
                 "space_hash": self.space.hash, "seed": self.seed, "rng": rng_to_json(self.rng),
                 "own": self._state() if history else self._own_state()}
        if history:
            state.update(asked=[list(g) for g in self.asked], pending={k: list(g) for k, g in self.pending.items()},
                         told=[o.to_json() for o in self.told], told_keys=sorted(self._told_keys))
        return state

    def _check_state(self, state: Mapping[str, Any]) -> None:
        """A state made by this strategy (name, version) for this space, else a clear error."""
        if state.get("version") != STATE_VERSION or state.get("strategy") != self.name:
            raise StrategyError(f"state is for {state.get('strategy')} v{state.get('version')}, "
                                f"not {self.name} v{STATE_VERSION}")
        if state.get("space_hash") != self.space.hash:
            raise StrategyError(f"state was made for space {state.get('space')!r} ({state.get('space_hash')}), "
                                f"not {self.space.name!r} ({self.space.hash})")

    def load_state_dict(self, state: Mapping[str, Any], history: Iterable[Sequence[Any]] | None = None) -> None:
        """Restore :meth:`state_dict`; a state saved with ``history=False`` needs its ``history``:
        ``("ask", genome, key)`` and ``("tell", key, result)`` in the order they happened."""
        self._check_state(state)
        self.seed = int(state["seed"])
        rng_from_json(self.rng, state["rng"])
        if "asked" in state:
            self.asked = {tuple(g): i for i, g in enumerate(state["asked"])}
            self.pending = {k: tuple(g) for k, g in state["pending"].items()}
            self.told = [Observation.from_json(o) for o in state["told"]]
            self._told_keys = set(state["told_keys"])
            self._load_state(state["own"])
            return
        if history is None:
            raise StrategyError("this state was saved without its history (state_dict(history=False)): "
                                "pass the asks and tells as history=")
        self.replay_history(history)
        self._load_own_state(state["own"])

    def replay_history(self, history: Iterable[Sequence[Any]]) -> None:
        """Rebuild the bookkeeping (asked genomes, pending asks, told results) from ``("ask",
        genome, key)`` / ``("tell", key, result)`` events, as :meth:`ask` and :meth:`tell` kept
        it, without proposing or learning anything again."""
        self.asked, self.pending, self._told_keys = {}, {}, set()
        told: list[tuple[Genome, Any]] = []
        for event in history:
            if event[0] == "ask":
                genome = tuple(int(x) for x in event[1])
                self.asked[genome] = len(self.asked)
                self.pending[event[2]] = genome
            elif event[1] not in self._told_keys:
                if event[1] not in self.pending:
                    raise StrategyError(f"history tells {event[1]!r}, which it never asked")
                genome = self.pending.pop(event[1])
                if self.learn_stopped or not stopped_result(event[2]):
                    told.append((genome, event[2]))
                self._told_keys.add(event[1])
        self.told = self.observations(told)

    def observations(self, told: Sequence[tuple[Genome, Any]]) -> list[Observation]:
        """:meth:`observation` of many (genome, result) pairs in one numpy pass (a resume
        rebuilding thousands): the same numbers — the normalisation is elementwise, and each
        reward is the same dot product as :func:`~promptsearch.objectives.scalarize`'s."""
        rows = [objective_row(_as_completed(r), self.objectives) for _, r in told]
        ok = [row for row in rows if row is not None]
        values = normalised_values(np.array(ok), self.objectives) if ok else np.zeros((0, len(self.objectives)))
        w = self.scalarization.weights(self.objectives) if ok else None
        out, k = [], 0
        for (genome, _), row in zip(told, rows):
            if row is None:
                out.append(Observation(tuple(genome), None, FAILED_REWARD))
            else:
                out.append(Observation(tuple(genome), tuple(float(x) for x in values[k]), float(np.dot(w, values[k]))))
                k += 1
        return out

    # --- what a strategy implements ---------------------------------------------------------------
    @abstractmethod
    def _propose(self) -> Sequence[int]:
        """A genome to try (made canonical and repaired by ``ask``)."""

    def _observe(self, obs: Observation) -> None:
        """Learn from one told result (default: nothing)."""

    def _ignored(self, genome: Genome) -> None:
        """An asked genome whose stopped result is not learned from (default: nothing)."""

    def _rejected(self, genome: Genome) -> None:
        """A proposal that repeats an asked genome (default: nothing)."""

    def _accepted(self, genome: Genome) -> None:
        """The genome ``ask`` is about to return (default: nothing)."""

    def _state(self) -> dict[str, Any]:
        return {}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        return None

    def _own_state(self) -> dict[str, Any]:
        """The strategy's own part of a ``history=False`` state (default: ``_state()``)."""
        return self._state()

    def _load_own_state(self, state: Mapping[str, Any]) -> None:
        self._load_state(state)

    # --- helpers --------------------------------------------------------------------------------
    def _valid(self, genome: Sequence[int]) -> Genome:
        g = [int(x) for x in genome]
        return self.space.canonical(g) if self.space.is_valid(g) else self.space.repair(g, self.rng)

    def _unseen(self) -> Genome:
        """A uniformly random genome not asked yet (walks the enumeration when nearly exhausted)."""
        for _ in range(1000):
            g = self.space.sample(self.rng).genome
            if g not in self.asked:
                return g
        for c in self.space.enumerate():
            if c.genome not in self.asked:
                return c.genome
        return self.space.sample(self.rng).genome  # exhausted: repeats are allowed

    @property
    def exhausted(self) -> bool:
        return len(self.asked) >= self._size


def stopped_result(result: Any) -> bool:
    status = result.get("status") if isinstance(result, Mapping) else getattr(result, "status", None)
    return status == "stopped"


def _as_completed(result: Any) -> Any:
    """A stopped result as a (low-fidelity) completed one: its rung metrics are what it measured."""
    if not stopped_result(result):
        return result
    metrics = result.get("metrics") if isinstance(result, Mapping) else result.metrics
    return {"status": "completed", "metrics": metrics or {}}


def make_strategy(name: str, space: SearchSpace, objectives: Any = None, seed: int = 0, **options: Any) -> Strategy:
    """A registered strategy by name; unknown names and options are a clear :class:`StrategyError`."""
    try:
        cls = STRATEGIES.get_or_raise(name)
    except KeyError as e:
        raise StrategyError(str(e.args[0])) from None
    params = {p.name for c in type.mro(cls) if c is not object and "__init__" in c.__dict__
              for p in inspect.signature(c.__init__).parameters.values()
              if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}  # **common etc. are not options
    params -= {"self", "space", "objectives", "seed"}
    unknown = sorted(set(options) - params)
    if unknown:
        raise StrategyError(f"strategy {name!r} has no option {', '.join(map(repr, unknown))}; "
                            f"options: {', '.join(sorted(params))}")
    try:
        return cls(space, objectives, seed=seed, **options)
    except (TypeError, ValueError) as e:
        raise StrategyError(f"strategy {name!r}: {e}") from None
