"""RL: an LSTM controller trained with REINFORCE (ENAS, Pham et al. 2018) on a hypervolume-gain reward.

    python -c "from promptsearch.strategies import make_strategy; from promptsearch.space import load_space; s = make_strategy('rl', load_space('medical'), seed=0); print(s.ask().architecture)"

The controller walks the genome gene by gene. A gene is one step when it is a real decision:
active given the choices made so far (``when``) and with more than one choice; other genes take 0.
At each step the LSTM reads the embedding of the previous step's choice (a learned start vector
first), a per-gene linear head gives logits, and ENAS's sampling logits are used:
``tanh_constant * tanh(logits / temperature)``. The space's constraint (``min_components``) is
kept by masking "off" when the remaining components are all needed, so every sample is valid.
With ``unseen`` (default, for spaces of at most ``UNSEEN_MAX`` raw genomes) a sample also masks
every choice all of whose completions were asked already: the policy conditioned on a new
candidate. Without it a narrowed policy re-proposes what it has, and the base class, after 50
retries, draws a uniform candidate instead (on the 216-candidate bench, 53-75 of 100 asks at
lr 0.05): the controller's say would quietly turn into random search's.

Reward (``reward``): ``"hv"`` (default) is the hypervolume a result adds to the front of the
results told before it, in the normalised objective cube the job's hypervolume is measured in,
plus ``scalar_weight`` times the scalarized reward so dominated results still rank (a multi-
objective search's product is the front, and a scalar alone pulls every sample towards one
trade-off); ``"scalar"`` is the scalarized reward alone (ENAS). The first ``warmup`` asks are
uniform samples (still told to the controller), so the policy learns from a spread of results
before it narrows.

Training is REINFORCE, ``update_steps`` Adam steps per ``batch_size`` new results (as they
arrive, in any order): ``loss = -mean(A * log p(genome)) - entropy_weight * mean(H)`` with the
advantage ``A = (r - b) / s``: ``b`` an exponential moving average of rewards (started at the
first batch's mean so early advantages are centred), ``s`` the running standard deviation of
rewards (hypervolume gains are small numbers). Log-probabilities are recomputed under the
current controller, so only genomes and rewards are kept. The state holds the parameters, Adam's
moments, the sampling generator, the baseline, the reward scale, the front and the unused
results: restore is exact.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..threads import torch_threads
from .base import STRATEGIES, Genome, Observation, Strategy, front_distance, hv_gain, nondominated


UNSEEN_MAX = 65_536  # raw genomes (product of the genes' choices) up to which ``unseen`` enumerates them


class Controller(nn.Module):
    """LSTM policy over a genome: one step per decision, previous choice embedded as input."""

    def __init__(self, cardinalities: Sequence[int], hidden: int):
        super().__init__()
        self.start = nn.Parameter(torch.zeros(1, hidden))  # (1, H) input of the first step
        self.lstm = nn.LSTMCell(hidden, hidden)
        self.embed = nn.ModuleList(nn.Embedding(k, hidden) for k in cardinalities)  # choice -> (H,)
        self.heads = nn.ModuleList(nn.Linear(hidden, k) for k in cardinalities)  # (H,) -> (k,)
        for p in self.parameters():  # ENAS: uniform(-0.1, 0.1)
            nn.init.uniform_(p, -0.1, 0.1)
        self.hidden = hidden


def _tensor_to_json(t: torch.Tensor) -> dict[str, Any]:
    """Exact and compact: the raw bytes, base64."""
    t = t.detach().contiguous().cpu()
    return {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
            "b64": base64.b64encode(t.flatten().view(torch.uint8).numpy().tobytes()).decode()}


def _tensor_from_json(d: Mapping[str, Any]) -> torch.Tensor:
    raw = bytearray(base64.b64decode(d["b64"]))
    flat = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
    return flat.view(getattr(torch, d["dtype"])).reshape(d["shape"]).clone()


def _to_json(obj: Any) -> Any:
    """Optimizer state (nested dicts/lists of tensors and numbers) -> JSON."""
    if isinstance(obj, torch.Tensor):
        return {"__tensor__": _tensor_to_json(obj)}
    if isinstance(obj, Mapping):
        return {"__map__": [[_to_json(k), _to_json(v)] for k, v in obj.items()]}
    if isinstance(obj, list | tuple):
        return [_to_json(x) for x in obj]
    return obj


def _from_json(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        if "__tensor__" in obj:
            return _tensor_from_json(obj["__tensor__"])
        return {_from_json(k): _from_json(v) for k, v in obj["__map__"]}
    if isinstance(obj, list):
        return [_from_json(x) for x in obj]
    return obj


@STRATEGIES.register("rl")
class RLStrategy(Strategy):
    name = "rl"

    def __init__(self, space, objectives=None, seed: int = 0,
                 hidden: int = 64,  # LSTM units (ENAS: 64 for the macro search)
                 # Adam; far above ENAS's 3.5e-4: a job gets hundreds of rewards, not tens of thousands. Tuned on
                 # the brain MRI bench (benchmarks/results/search_quality_tuning.md, 2026-12-03): at 5e-3 the policy
                 # hardly moves in 100 trials (it scores as one with lr 1e-9); at 0.02 HV@50 beats random (p .003,
                 # 40 seeds); PneumoniaMNIST cannot tell (its front spreads over three of the four backbone x prompt
                 # regions: random told to sample only the best one is level with random by 25 trials)
                 lr: float = 0.02,
                 batch_size: int = 4,  # results per policy update
                 temperature: float = 5.0,  # ENAS: logits / 5 ...
                 tanh_constant: float = 2.5,  # ... then 2.5 * tanh(.): no choice is ever ruled out
                 entropy_weight: float = 1e-4,  # ENAS's entropy bonus
                 baseline_decay: float = 0.95,  # EMA of rewards (ENAS: 0.99, for much longer runs)
                 reward: str = "hv",  # "hv": hypervolume gain (+ scalar_weight x scalar); "scalar": ENAS's
                 scalar_weight: float = 0.1,  # keeps dominated results ranked under the "hv" reward
                 warmup: int = 8,  # uniform asks before the controller samples
                 update_steps: int = 1,  # Adam steps per batch (more reuse each reward; 1 = ENAS)
                 unseen: bool = True,  # sample only candidates not asked yet (spaces of <= UNSEEN_MAX raw genomes)
                 **common: Any):
        super().__init__(space, objectives, seed, **common)
        if not (hidden >= 1 and lr > 0 and batch_size >= 1 and temperature > 0 and tanh_constant > 0
                and entropy_weight >= 0 and 0 <= baseline_decay < 1 and reward in ("hv", "scalar")
                and scalar_weight >= 0 and warmup >= 0 and update_steps >= 1):
            raise ValueError("rl options out of range: hidden>=1, lr>0, batch_size>=1, temperature>0, "
                             "tanh_constant>0, entropy_weight>=0, 0<=baseline_decay<1, reward hv|scalar, "
                             "scalar_weight>=0, warmup>=0, update_steps>=1")
        self.unseen = bool(unseen) and math.prod(space.cardinalities) <= UNSEEN_MAX
        self._raw: tuple[np.ndarray, list[Genome]] | None = None  # built on first use
        self.reward_kind, self.scalar_weight, self.warmup, self.update_steps = reward, scalar_weight, warmup, update_steps
        self.lr, self.batch_size = lr, batch_size
        self.temperature, self.tanh_constant = temperature, tanh_constant
        self.entropy_weight, self.baseline_decay = entropy_weight, baseline_decay
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
            torch.manual_seed(self.seed)
            self.controller = Controller(space.cardinalities, hidden)
        self.optimizer = torch.optim.Adam(self.controller.parameters(), lr=lr)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.baseline: float | None = None
        self.moments = [0, 0.0, 0.0]  # rewards seen, their mean and sum of squared deviations (Welford)
        self.buffer: list[tuple[Genome, float]] = []  # results not yet used for an update
        self.updates = 0

    # --- the policy ---------------------------------------------------------------------------
    def _walk(self, genomes: Sequence[Sequence[int]] | None) -> tuple[list[list[int]], torch.Tensor, torch.Tensor]:
        """Sample one genome (``genomes=None``) or score a batch: (genomes, log p (B,), entropy (B,)).

        Rows of a batch step together; a row with no decision at a gene keeps its LSTM state and
        input, so each row sees exactly the computation it would see alone. A sample under
        ``unseen`` only takes choices that still lead to a candidate not asked yet (the policy
        conditioned on "new"); a scored batch sees the policy itself.
        """
        space, ctl = self.space, self.controller
        sample = genomes is None
        alive = self._alive() if sample else None  # (R,) walk genomes still leading to an unseen candidate
        G = [[0] * len(space.genes)] if sample else [list(g) for g in genomes]
        B = len(G)
        x = ctl.start.expand(B, -1)  # (B, H) input of the first step
        h = c = torch.zeros(B, ctl.hidden)  # (B, H)
        logp = torch.zeros(B)
        ent = torch.zeros(B)
        for i, gene in enumerate(space.genes):
            if len(gene.choices) < 2:
                continue  # no decision
            act = torch.tensor([space.active(g)[i] for g in G])  # (B,): 'when' looks only at earlier genes
            if not act.any():
                continue
            h2, c2 = ctl.lstm(x, (h, c))  # (B, H)
            logits = self.tanh_constant * torch.tanh(ctl.heads[i](h2) / self.temperature)  # (B, k)
            if gene.is_component:  # "off" is impossible where every remaining component is needed
                left = len(space.genes) - i - 1
                must = torch.tensor([space.n_components_on(g[:i] + [0] * (len(g) - i)) + left < space.spec.min_components
                                     for g in G])  # (B,)
                logits = logits.masked_fill(torch.stack([must, torch.zeros_like(must)], 1), float("-inf"))
            if alive is not None:  # choices whose every completion was asked already are out
                raw = self._raw[0][alive, i]  # (R',)
                logits = logits.masked_fill(~torch.from_numpy(np.isin(np.arange(len(gene.choices)), raw))[None, :],
                                            float("-inf"))
            logprobs = torch.log_softmax(logits, -1)  # (B, k)
            probs = logprobs.exp()
            if sample:
                G[0][i] = int(torch.multinomial(probs[0].detach(), 1, generator=self.generator))
                if alive is not None:
                    alive = alive & (self._raw[0][:, i] == G[0][i])
            choice = torch.tensor([g[i] for g in G])  # (B,)
            step_ent = -(probs * torch.where(probs > 0, logprobs, torch.zeros_like(logprobs))).sum(-1)  # (B,)
            logp = logp + torch.where(act, logprobs.gather(1, choice[:, None])[:, 0], 0.0)
            ent = ent + torch.where(act, step_ent, 0.0)
            keep = act[:, None]
            x = torch.where(keep, ctl.embed[i](choice), x)  # (B, H): the choice feeds the next step
            h, c = torch.where(keep, h2, h), torch.where(keep, c2, c)
        return G, logp, ent

    def _alive(self) -> np.ndarray | None:
        """(R,) which of the genomes the walk can produce have a canonical form not asked yet;
        ``None`` when ``unseen`` is off or every candidate was asked (repeats are then allowed)."""
        if not self.unseen:
            return None
        if self._raw is None:
            space = self.space
            walkable = [g for g in self._walkable() if space.is_valid(g)]
            self._raw = (np.array(walkable, dtype=np.int64), [space.canonical(g) for g in walkable])  # (R, G), R
        alive = np.array([c not in self.asked for c in self._raw[1]])
        return alive if alive.any() else None

    def _walkable(self) -> list[list[int]]:
        """Every genome the walk can produce: a gene branches where it is a decision (active given
        the earlier genes, two or more choices), else takes 0 — as :meth:`_walk` does."""
        space, n = self.space, len(self.space.genes)
        prefixes: list[list[int]] = [[]]
        for i, k in enumerate(space.cardinalities):
            nxt = []
            for g in prefixes:
                branch = k > 1 and space.active(g + [0] * (n - i))[i]  # 'when' looks only at earlier genes
                nxt += [g + [c] for c in range(k)] if branch else [g + [0]]
            prefixes = nxt
        return prefixes

    def _propose(self) -> Sequence[int]:
        if len(self.asked) < self.warmup:
            return self.space.sample(self.rng).genome
        with torch.no_grad(), torch_threads(1):  # tiny ops: more threads only spin (5x slower on a busy CPU)
            return self._walk(None)[0][0]

    def _observe(self, obs: Observation) -> None:
        self.buffer.append((obs.genome, obs.reward))
        if len(self.buffer) >= self.batch_size:
            with torch_threads(1):
                self._update()

    def _rewards(self, batch: Sequence[tuple[Genome, float]]) -> torch.Tensor:
        """Each batch result's reward, all measured against one front (that of every result told so
        far): on the front, the hypervolume only it holds; behind it, minus its distance to it."""
        if self.reward_kind == "scalar":
            return torch.tensor([r for _, r in batch])  # (n,)
        values = {tuple(o.genome): list(o.values) for o in self.told if o.ok}
        front = nondominated(list(values.values()))
        out = []
        for genome, scalar in batch:
            v = values.get(tuple(genome))
            if v is None:
                r = -1.0  # failed: behind any front
            elif v in front:
                r = hv_gain([q for q in front if q != v], v)
            else:
                r = -front_distance(front, v)
            out.append(r + self.scalar_weight * scalar)
        return torch.tensor(out)  # (n,)

    def _update(self) -> None:
        batch, self.buffer = self.buffer, []
        rewards = self._rewards(batch)  # (n,)
        for r in rewards.tolist():
            n, mean, m2 = self.moments
            n += 1
            delta = r - mean
            mean += delta / n
            self.moments = [n, mean, m2 + delta * (r - mean)]
        mean = float(rewards.mean())
        baseline = mean if self.baseline is None else self.baseline
        n, _, m2 = self.moments
        scale = max((m2 / (n - 1)) ** 0.5 if n > 1 else 0.0, 1e-6)
        advantage = (rewards - baseline) / scale  # (n,)
        for _ in range(self.update_steps):
            _, logp, ent = self._walk([g for g, _ in batch])  # (n,), (n,)
            loss = -(advantage * logp).mean() - self.entropy_weight * ent.mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        self.baseline = mean if self.baseline is None else self.baseline_decay * self.baseline + (1 - self.baseline_decay) * mean
        self.updates += 1

    # --- state --------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {"controller": {k: _tensor_to_json(v) for k, v in self.controller.state_dict().items()},
                "optimizer": _to_json(self.optimizer.state_dict()),
                "generator": base64.b64encode(self.generator.get_state().numpy().tobytes()).decode(),
                "baseline": self.baseline, "buffer": [[list(g), r] for g, r in self.buffer], "updates": self.updates,
                "moments": list(self.moments)}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self.controller.load_state_dict({k: _tensor_from_json(v) for k, v in state["controller"].items()})
        self.optimizer.load_state_dict(_from_json(state["optimizer"]))
        raw = base64.b64decode(state["generator"])
        self.generator.set_state(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
        self.baseline = state["baseline"]
        self.buffer = [(tuple(g), float(r)) for g, r in state["buffer"]]
        self.updates = int(state["updates"])
        self.moments = [int(state["moments"][0]), float(state["moments"][1]), float(state["moments"][2])]
