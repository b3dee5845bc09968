"""The strategy contract: one suite over every registered strategy x every bundled space file.

    python -m pytest tests/test_strategies.py -q

Trial results here are synthetic — metrics computed deterministically from the genome — which is
a legitimate stand-in for *strategy logic* (a strategy sees only genomes and numbers); real
trials are exercised by the trial tests and by ``benchmarks/search_quality.py``.
"""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from promptsearch.objectives import hypervolume
from promptsearch.space import list_spaces, load_space, parse_space
from promptsearch.strategies import STRATEGIES, StrategyError, make_strategy
from promptsearch.trial import TrialResult

NAMES = sorted(STRATEGIES)
VARIANTS = [("evolution", {"steady_state": False, "population_size": 6}), ("optuna", {"sampler": "nsga2"}),
            ("rl", {"batch_size": 1}), ("handover", {"first": "mobo", "after": 4}),
            ("handover", {"then": "rl", "first": "random", "after": 4})]
# the contract holds a hand-over to it *across* the hand-over (the tests below ask 12-24 candidates),
# led by a fast strategy; led by mobo (its default) it would only repeat mobo's contract for 30 asks
CONTRACT_OPTIONS = {"handover": {"first": "optuna-tpe", "after": 6}}
SPACES = list_spaces()


def metrics_of(genome) -> dict[str, float]:
    """A deterministic, structured landscape: accuracy rises with the gene values' pattern,
    prompt parameters with the number of genes switched on."""
    h = sum((i + 3) * (v + 1) ** 2 for i, v in enumerate(genome))
    auc = 0.5 + 0.45 * ((h % 29) / 28)
    return {"auc": auc, "worst_class_recall": max(0.0, auc - 0.1 - 0.05 * (h % 3)),
            "prompt_params": 50.0 * (1 + sum(genome)) ** 2, "latency_ms": 1.0 + 0.1 * (h % 7)}


def result(cand, status="completed", **override) -> TrialResult:
    m = {**metrics_of(cand.genome), **override} if status == "completed" else {}
    return TrialResult(candidate=cand.to_json(), status=status, metrics=m)


def drive(strategy, n: int, ahead: int = 1, order=None, fail_every: int = 0):
    """Ask ``ahead`` at a time, tell them (in ``order``), n asks in all; returns the genomes."""
    out = []
    rng = random.Random(0)
    while len(out) < n:
        batch = [strategy.ask() for _ in range(min(ahead, n - len(out)))]
        out += [c.genome for c in batch]
        told = list(batch)
        if order == "reverse":
            told.reverse()
        elif order == "shuffle":
            rng.shuffle(told)
        for c in told:
            failed = fail_every and (len(strategy.told) % fail_every == fail_every - 1)
            strategy.tell(c.key, result(c, "failed") if failed else result(c))
    return out


# mobo refits a Gaussian process on every tell (~0.3-2 s of CPU an ask): the default suite runs its
# generic contract on the pixel space (and the space-free tests below); on every other space it is
# marked long (tests/conftest.py reads this), so `pytest -m long` holds it to the contract there too.
LONG_OFF_SPACE = {"mobo": "pixel"}


def contract_strategy(name: str, space, **options):
    """``make_strategy`` with the contract's options for ``name`` (:data:`CONTRACT_OPTIONS`)."""
    return make_strategy(name, space, **{**CONTRACT_OPTIONS.get(name, {}), **options})


@pytest.fixture(params=SPACES)
def space(request):
    return load_space(request.param)


@pytest.mark.parametrize("name", NAMES)
def test_seeded_reproducibility(name, space):
    a = drive(contract_strategy(name, space, seed=3), 14, ahead=3, order="shuffle")
    b = drive(contract_strategy(name, space, seed=3), 14, ahead=3, order="shuffle")
    c = drive(contract_strategy(name, space, seed=4), 14, ahead=3, order="shuffle")
    assert a == b
    assert a != c


@pytest.mark.parametrize("name", NAMES)
def test_failed_nan_and_inf_results(name, space):
    s = contract_strategy(name, space, seed=0)
    seen = []
    for i in range(16):
        c = s.ask()
        seen.append(c.genome)
        kind = i % 4
        r = (result(c, "failed") if kind == 0 else result(c, auc=float("nan")) if kind == 1
             else result(c, prompt_params=float("inf")) if kind == 2 else result(c))
        if kind == 3 and i % 8 == 3:
            r = TrialResult(candidate=c.to_json(), status="completed", metrics={"auc": 0.9})  # objectives missing
        s.tell(c.key, r)
    assert sum(not o.ok for o in s.told) == 14  # failed, NaN, inf and missing objectives
    assert all(o.reward == 0.0 for o in s.told if not o.ok)
    seen += drive(s, 8)
    assert len(set(seen)) == len(seen)
    json.dumps(s.state_dict(), allow_nan=False)  # no NaN leaks into the state


@pytest.mark.parametrize("name", NAMES)
def test_asks_ahead_and_out_of_order_tells(name, space):
    s = contract_strategy(name, space, seed=1)
    genomes = drive(s, 24, ahead=6, order="reverse", fail_every=5)
    assert len(set(genomes)) == 24 and not s.pending
    pending = [s.ask() for _ in range(4)]
    assert len(s.pending) == 4
    s.tell(pending[2].key, result(pending[2]))
    s.tell(pending[2].key, result(pending[2]))  # a duplicate delivery is ignored
    assert len(s.told) == 25
    with pytest.raises(StrategyError, match="was not asked"):
        s.tell("0123456789abcdef", result(pending[0]))


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trip(name, space):
    s = contract_strategy(name, space, seed=5)
    drive(s, 14, ahead=3, order="reverse")
    in_flight = [s.ask() for _ in range(2)]  # saved while trials are running
    state = json.loads(json.dumps(s.state_dict(), allow_nan=False))
    r = contract_strategy(name, space, seed=5)
    r.load_state_dict(state)
    for c in in_flight:  # the restored object accepts the tells of trials started before the save
        s.tell(c.key, result(c))
        r.tell(c.key, result(c))
    assert drive(s, 6, ahead=2) == drive(r, 6, ahead=2)
    assert json.dumps(s.state_dict()) == json.dumps(r.state_dict())


@pytest.mark.parametrize("learn", [True, False], ids=["learn_stopped", "ignore_stopped"])
@pytest.mark.parametrize("name", NAMES)
def test_stopped_results_keep_the_contract(name, space, learn):
    """Trials the job's scheduler stopped early (``status: stopped``, lower metrics at a rung),
    asked ahead and told out of order: proposals stay valid and unrepeated, the state round-trips
    (whole, and without history as the search loop saves it), and ``learn_stopped`` decides
    whether they are learned from."""
    def stopped(c):
        m = metrics_of(c.genome)
        return TrialResult(candidate=c.to_json(), status="stopped", rung=1, metrics={**m, "auc": m["auc"] - 0.1})

    s = contract_strategy(name, space, seed=2, learn_stopped=learn)
    events, seen = [], []
    for k in range(4):
        batch = [s.ask() for _ in range(3)]
        for c in batch:
            events.append(("ask", list(c.genome), c.key))
        seen += [c.genome for c in batch]
        for i, c in enumerate(reversed(batch)):
            r = stopped(c) if (k + i) % 2 == 0 else result(c)
            s.tell(c.key, r)
            events.append(("tell", c.key, r.model_dump()))
    assert all(space.is_valid(g) for g in seen) and len(set(seen)) == len(seen) and not s.pending
    n_stopped = sum(1 for e in events if e[0] == "tell" and e[2]["status"] == "stopped")
    assert len(s.told) == (12 if learn else 12 - n_stopped)
    assert all(o.ok for o in s.told)  # a stopped result is usable (its rung metrics), never a failure
    whole = contract_strategy(name, space, seed=2, learn_stopped=learn)
    whole.load_state_dict(json.loads(json.dumps(s.state_dict(), allow_nan=False)))
    bare = contract_strategy(name, space, seed=2, learn_stopped=learn)
    bare.load_state_dict(json.loads(json.dumps(s.state_dict(history=False))), history=events)
    nxt = drive(s, 4, ahead=2)
    assert drive(whole, 4, ahead=2) == nxt and drive(bare, 4, ahead=2) == nxt
    assert not set(nxt) & set(seen)


@pytest.mark.parametrize("name", NAMES)
def test_state_from_another_strategy_or_space_is_refused(name):
    medical, pixel = load_space("medical"), load_space("pixel")
    state = contract_strategy(name, medical, seed=0).state_dict()
    with pytest.raises(StrategyError, match="space"):
        contract_strategy(name, pixel, seed=0).load_state_dict(state)
    other = "random" if name != "random" else "rl"
    with pytest.raises(StrategyError, match="state is for"):
        make_strategy(other, medical, seed=0).load_state_dict(state)


STRICT = """
name: strict
components: {a: [x, y, z, w]}
min_components: 3
decisions:
  module: {choices: [pixel]}
  pixel_prompt: {choices: [frame, overlay]}
  frame_width: {choices: [2, 4], when: {pixel_prompt: [frame]}}
"""


@pytest.mark.parametrize("name", NAMES)
def test_constraint_respected_and_no_repeats_until_exhausted(name):
    space = parse_space(STRICT)  # 3 placements x (4 + 1) component sets = 15 candidates
    assert space.size() == 15
    s = contract_strategy(name, space, seed=2)
    asked = drive(s, 15, ahead=2, fail_every=4)
    assert all(space.is_valid(g) and space.canonical(g) == g for g in asked)
    assert sorted(asked) == sorted(c.genome for c in space.enumerate())  # every candidate, once
    more = drive(s, 3)  # exhausted: repeats are allowed now, still valid
    assert all(space.is_valid(g) for g in more)


@pytest.mark.parametrize("name", NAMES)
def test_every_proposal_valid_on_bundled_spaces(name, space):
    s = contract_strategy(name, space, seed=7)
    genomes = drive(s, 20, ahead=4, order="shuffle", fail_every=6)
    for g in genomes:
        assert space.is_valid(g) and space.canonical(g) == g
        assert space.candidate(g).arch  # decodes to a typed architecture
    assert len(set(genomes)) == len(genomes)


@pytest.mark.parametrize("name,options", VARIANTS, ids=[f"{n}-{next(iter(o))}" for n, o in VARIANTS])
def test_option_variants_keep_the_contract(name, options):
    space = load_space("medical")
    a = make_strategy(name, space, seed=0, **options)
    genomes = drive(a, 14, ahead=3, order="reverse", fail_every=4)
    assert len(set(genomes)) == 14 and all(space.is_valid(g) for g in genomes)
    in_flight = a.ask()
    b = make_strategy(name, space, seed=0, **options)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    for s in (a, b):
        s.tell(in_flight.key, result(in_flight))
    assert drive(a, 8, ahead=2) == drive(b, 8, ahead=2)


def test_make_strategy_errors():
    space = load_space("pixel")
    with pytest.raises(StrategyError, match="unknown strategy 'nope'"):
        make_strategy("nope", space)
    with pytest.raises(StrategyError, match="has no option 'lrr'"):
        make_strategy("rl", space, lrr=0.1)
    with pytest.raises(StrategyError, match="out of range"):
        make_strategy("evolution", space, population_size=1)
    with pytest.raises(StrategyError, match="unknown sampler"):
        make_strategy("optuna", space, sampler="cmaes")


# --- learning: each non-random strategy improves on a structured synthetic landscape -------------
def target_landscape(space):
    """Reward is high when genes match a hidden target genome; parameters fall with fewer genes on."""
    target = space.sample(123).genome

    def res(c):
        match = np.mean([a == b for a, b in zip(c.genome, target)])
        return TrialResult(candidate=c.to_json(), status="completed",
                           metrics={"auc": 0.5 + 0.5 * match, "worst_class_recall": match,
                                    "prompt_params": 100.0 * (1 + space.n_components_on(c.genome)), "latency_ms": 1.0})
    return res


@pytest.mark.parametrize("name", ["rl", "evolution", "regularized-evolution", "optuna-tpe", "optuna-nsga2"])
def test_learns_on_a_structured_landscape(name):
    space = load_space("pixel")
    res = target_landscape(space)
    rewards = []
    s = make_strategy(name, space, ["auc", "prompt_params"], seed=0, **({"lr": 0.05} if name == "rl" else {}))
    for _ in range(80):
        c = s.ask()
        s.tell(c.key, res(c))
        rewards.append(s.told[-1].reward)
    assert np.mean(rewards[-20:]) > np.mean(rewards[:20]) + 0.03


def test_rl_update_moves_the_policy_towards_rewarded_choices():
    space = load_space("pixel")
    s = make_strategy("rl", space, seed=0, batch_size=4, lr=0.05)
    lr_gene = [g.name for g in space.genes].index("lr")
    for _ in range(80):  # reward only the largest learning rate
        c = s.ask()
        good = c.genome[lr_gene] == 3
        s.tell(c.key, TrialResult(candidate=c.to_json(), status="completed",
                                  metrics={"auc": 0.9 if good else 0.5, "worst_class_recall": 0.5,
                                           "prompt_params": 1000.0, "latency_ms": 1.0}))
    assert s.updates == 20
    last = [g[lr_gene] for g in list(s.asked)[-20:]]
    assert sum(v == 3 for v in last) >= 10  # from 1 in 4 at the start


def test_rl_samples_only_unseen_candidates_where_the_space_is_small():
    """A policy that has narrowed re-proposes what it already has; ``unseen`` (default) samples the
    policy conditioned on a new candidate, so no proposal is wasted and none falls back to random."""
    space = load_space("vpt")  # 48 candidates
    proposals = {}
    for unseen in (True, False):
        s = make_strategy("rl", space, seed=0, warmup=0, lr=0.1, unseen=unseen)
        calls = 0
        propose = s._propose

        def counted(propose=propose):
            nonlocal calls
            calls += 1
            return propose()

        s._propose = counted
        keys = []
        for _ in range(40):
            c = s.ask()
            keys.append(c.key)
            s.tell(c.key, TrialResult(candidate=c.to_json(), status="completed",
                                      metrics={"auc": 0.9 if c.genome[1] == 0 else 0.5, "worst_class_recall": 0.5,
                                               "prompt_params": 1000.0, "latency_ms": 1.0}))
        assert len(set(keys)) == 40
        proposals[unseen] = calls
    assert proposals[True] == 40 and proposals[False] > 60, proposals


def test_evolution_keeps_the_front_and_aging_keeps_the_young():
    space = load_space("pixel")
    res = target_landscape(space)
    nsga = make_strategy("evolution", space, seed=0, population_size=8)
    aged = make_strategy("regularized-evolution", space, seed=0, population_size=8)
    for s in (nsga, aged):
        for _ in range(40):
            c = s.ask()
            s.tell(c.key, res(c))
        assert len(s.population) == 8
    assert sorted(ind["birth"] for ind in aged.population) == list(range(32, 40))
    gen = make_strategy("evolution", space, seed=0, population_size=8, steady_state=False)
    for i in range(30):
        c = gen.ask()
        gen.tell(c.key, res(c))
        assert len(gen.population) == 8 or i < 7
        assert len(gen.offspring) == max(0, i + 1 - 8) % 8  # replaced once a generation is in
    # NSGA-II survival never drops a non-dominated result seen so far
    told = [o for o in nsga.told if o.ok]
    vals = np.array([o.values for o in told])
    from promptsearch.objectives import nondominated_ranks, parse_objectives

    front = {told[i].genome for i in np.flatnonzero(
        nondominated_ranks(vals, parse_objectives(["auc", "worst_class_recall", "accuracy:max", "f:max"])) == 0)}
    kept = {tuple(ind["genome"]) for ind in nsga.population}
    assert front <= kept or len(front) > 8


def test_optuna_trials_carry_the_evaluated_genomes():
    space = parse_space(STRICT)
    s = make_strategy("optuna-tpe", space, seed=0, n_startup_trials=2)
    drive(s, 15)
    done = [t for t in s.study.trials if t.values is not None]
    assert len(done) >= 15
    for t in done:
        g = s._suggest(type("Fixed", (), {"suggest_categorical": lambda self, n, ch, p=t.params: p[n]})())
        assert tuple(s.told[[o.genome for o in s.told].index(g)].values) == tuple(t.values)


def test_hypervolume_of_a_search_grows():
    space = load_space("medical")
    s = make_strategy("random", space, seed=0)
    results = []
    for _ in range(30):
        c = s.ask()
        results.append(result(c))
        s.tell(c.key, results[-1])
    hv = [hypervolume(results[:k]) for k in (5, 15, 30)]
    assert hv[0] <= hv[1] <= hv[2] and hv[2] > 0 and math.isfinite(hv[2])


def _logged(strategy, n: int, events: list, ahead: int = 2) -> list:
    """``drive``, logging the asks and tells as the search loop's event log holds them."""
    out = []
    while len(out) < n:
        batch = [strategy.ask() for _ in range(min(ahead, n - len(out)))]
        events += [("ask", list(c.genome), c.key) for c in batch]
        for c in reversed(batch):
            r = result(c)
            strategy.tell(c.key, r)
            events.append(("tell", c.key, r.model_dump()))
        out += [c.genome for c in batch]
    return out


def test_handover_leads_then_follows_with_every_result():
    space = load_space("medical")
    s = make_strategy("handover", space, seed=3, first="optuna-tpe", then="evolution", after=10,
                      then_options={"population_size": 6})
    lead = _logged(s, 10, [])
    assert [tuple(g) for g in s.first.asked] == lead and len(s.first.told) == 10
    # the follower adopted every ask and was told every result: its population is the best of them
    assert len(s.then.told) == 10 and len(s.then.population) == 6 and not s.then.pending
    assert {tuple(ind["genome"]) for ind in s.then.population} <= set(lead)
    follow = drive(s, 12, ahead=3, order="reverse")
    assert len(s.first.asked) == 10  # the leader is never asked again
    assert list(s.then.asked)[10:] == follow and len(set(lead + follow)) == 22  # nothing proposed twice
    assert len(s.then.told) == 22 and len(s.told) == 22
    # a child of the adopted population, not a fresh uniform start: the follower breeds at once
    assert s.then.births == 22


def test_handover_state_without_history_round_trips_across_the_hand_over():
    space = load_space("medical")
    opts = dict(first="optuna-tpe", after=6, first_options={"n_startup_trials": 3})
    s = make_strategy("handover", space, seed=4, **opts)
    events: list = []
    _logged(s, 8, events)
    in_flight = s.ask()  # asked by the follower, running while the job is killed
    events.append(("ask", list(in_flight.genome), in_flight.key))
    bare = make_strategy("handover", space, seed=4, **opts)
    bare.load_state_dict(json.loads(json.dumps(s.state_dict(history=False))), history=events)
    whole = make_strategy("handover", space, seed=4, **opts)
    whole.load_state_dict(json.loads(json.dumps(s.state_dict())))
    for x in (s, bare, whole):
        x.tell(in_flight.key, result(in_flight))
    nxt = drive(s, 5, ahead=2)
    assert drive(bare, 5, ahead=2) == nxt and drive(whole, 5, ahead=2) == nxt
    with pytest.raises(StrategyError, match="after=6"):
        make_strategy("handover", space, seed=4, **{**opts, "after": 7}).load_state_dict(s.state_dict())


def test_handover_refuses_a_follower_that_cannot_adopt():
    space = load_space("pixel")
    with pytest.raises(StrategyError, match="cannot follow"):
        make_strategy("handover", space, then="optuna-tpe")
    with pytest.raises(StrategyError, match="no option"):
        make_strategy("handover", space, first="random", first_options={"population_size": 3})
    with pytest.raises(StrategyError, match="cannot learn from candidates"):
        make_strategy("optuna-tpe", space).adopt(space.sample(random.Random(0)))
