"""Search quality: strategies compared on exact tables of real trials (every candidate recorded).

    python benchmarks/search_quality.py replay                       # the README table (minutes)
    nice -n 15 python benchmarks/search_quality.py record --target pneumoniamnist --workers 2   # hours, resumable

A *bench* (``BENCHES`` below) is a small search space whose every distinct candidate is trained
with the project's own trial code (``promptsearch.trial.run_trial``) on one target, with two seeds,
and recorded with its per-epoch validation curve. ``replay`` runs each strategy's ask/tell loop
against the table: every proposal is answered **exactly** by a recorded trial of that candidate,
with one of its recorded seeds drawn per lookup (so seed noise is part of the benchmark). There is
no nearest-neighbour fallback: a proposal outside the table is a bug and stops the replay.

Identity: a candidate's table key is its ``Candidate.key`` in the bench space; equivalent
genomes (the space's canonical form) share a key, so a strategy that proposes an equivalent of a
trial it already ran is told nothing new.

Statistics (per bench, ``--seeds`` replays of ``--budget`` trials each): mean ± sd hypervolume at
25 / 50 / 100 trials; a one-sided Mann-Whitney U test of each strategy against random at each
budget (the replays are independent runs, so unpaired); trials to reach random's mean HV@100;
the whole table's hypervolume (seed-averaged metrics) as the ceiling. Options are tuned on the
``--tune`` bench and reported on the ``--report`` bench.
"""

from __future__ import annotations

import csv
import fcntl
import functools
import hashlib
import json
import math
import os
import random
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = HERE / "data"
RESULTS = HERE / "results"
sys.path.insert(0, str(REPO))

from promptsearch.objectives import hypervolume, parse_objectives  # noqa: E402
from promptsearch.space import SearchSpace, load_space  # noqa: E402

app = typer.Typer(add_completion=False, help=__doc__.split("\n")[0])

SHARED = REPO.parent / "shared"
# The benchmark's objectives. Latency is recorded but left out: wall-clock on a shared 2-core
# machine is noise; the backbone's cost shows in trainable parameters (its head) instead.
BENCH_OBJECTIVES = parse_objectives(["auc", "worst_class_recall", "prompt_params"])
METRICS = ("auc", "worst_class_recall", "accuracy", "balanced_accuracy", "prompt_params", "trainable_params",
           "library_params", "latency_ms")
FIELDS = ["key", "seed", "genome", "architecture", "status", "reason", *METRICS, "test_auc",
          "test_worst_class_recall", "curve", "image_passes", "wall_time_s", "worker", "finished_at"]


@dataclass(frozen=True)
class Bench:
    """One exact table: a space, a target dataset and the recipe every candidate is trained with."""

    name: str
    space: str  # a space file
    dataset: str  # a catalogue / MedMNIST name
    data_root: Path
    backbones: dict[str, dict[str, Any]]  # backbone decision choice -> BackboneSpec fields
    libraries: dict[str, Path] = field(default_factory=dict)  # backbone choice -> library folder
    epochs: int = 9  # rungs 1, 3, 9 of the early-stopping benchmark replay these curves
    max_train_samples: int | None = 512
    batch_size: int = 32
    seeds: tuple[int, ...] = (0, 1)

    @property
    def table(self) -> Path:
        return DATA / f"search_quality_{self.name}.csv"

    def load_space(self) -> SearchSpace:
        return load_space(self.space)

    def shares_images_with(self, other: Bench) -> bool:
        """Whether the two benches' targets are the same data by the catalogue (one ``source``, one
        folder or a shared image file): then neither is independent of the other."""
        from promptsearch.catalog import same_source

        return same_source(self.dataset, other.dataset, FOLDERS)


MEDMNIST = SHARED / "data" / "medmnist"
FOLDERS = SHARED / "data" / "folders"
LIBS = REPO / "artifacts" / "library_transfer"  # shared with benchmarks/library_transfer.py (same recipe)
BACKBONES = {  # the bench spaces' backbone decision -> the frozen backbone
    "mobilenet_v2": {"name": "torchvision:mobilenet_v2", "image_size": 32,
                     "weights": str(SHARED / "weights" / "mobilenet_v2-b0353104.pth")},
    "efficientnet_lite0": {"name": "tf_efficientnet_lite0", "image_size": 32,
                           "weights": str(SHARED / "weights" / "tf_efficientnet_lite0_imagenet_timm.pth")},
}
LIBRARY_TAG = {"mobilenet_v2": "mnv2", "efficientnet_lite0": "effnet"}  # library_transfer.py's folder names
BENCHES: dict[str, Bench] = {}


def register_bench(bench: Bench) -> Bench:
    BENCHES[bench.name] = bench
    return bench


# tune on PneumoniaMNIST (val 524), report on the brain MRI folder (val 200): see the space files
for _target, _root in (("pneumoniamnist", MEDMNIST), ("brain_tumor_mri", FOLDERS)):
    register_bench(Bench(name=_target, space=str(DATA / f"bench_{_target}.yaml"), dataset=_target, data_root=_root,
                         backbones=BACKBONES,
                         libraries={b: LIBS / f"{tag}-32-without-{_target}" for b, tag in LIBRARY_TAG.items()}))
# the brain MRI bench with a fourth component (472 candidates): its libraries are committed beside the
# table (DATA / "libraries"), built once with the recipe above; a rebuild on another CPU is not bit-identical
register_bench(Bench(name="brain_tumor_mri_4c", space=str(DATA / "bench_brain_tumor_mri_4c.yaml"),
                     dataset="brain_tumor_mri", data_root=FOLDERS, backbones=BACKBONES,
                     libraries={b: DATA / "libraries" / f"{tag}-32-without-brain_tumor_mri" for b, tag in LIBRARY_TAG.items()}))
# a third target (2026-12-03, session 10), recorded and declared a report bench before any strategy was
# replayed on it: eye fundus photographs (val 120; kidney CT was tried first and abandoned after 17
# trials: AUC .998-1.000 at 32 px, nothing to search for); libraries committed as for 4c
register_bench(Bench(name="eye_fundus", space=str(DATA / "bench_eye_fundus.yaml"), dataset="eye_fundus",
                     data_root=FOLDERS, backbones=BACKBONES,
                     libraries={b: DATA / "libraries" / f"{tag}-32-without-eye_fundus" for b, tag in LIBRARY_TAG.items()}))
# a second report bench (2026-12-04, session 11), recorded and declared before any strategy was replayed
# on it, so that what was designed after eye_fundus's table (the hand-over strategy) has a clean report:
# the Kermany chest X-rays (val 120). Its source is PneumoniaMNIST's, on which evolution was tuned: out
# of sample for every option set since, not for evolution's
register_bench(Bench(name="chest_xray", space=str(DATA / "bench_chest_xray.yaml"), dataset="chest_xray_pneumonia",
                     data_root=FOLDERS, backbones=BACKBONES,
                     libraries={b: DATA / "libraries" / f"{tag}-32-without-chest_xray_pneumonia"
                                for b, tag in LIBRARY_TAG.items()}))


def ensure_library(bench: Bench, choice: str) -> Path:
    """The bench's library for one backbone, built (or resumed) with library_transfer.py's recipe:
    every catalogue source except the target and anything of its source."""
    out = bench.libraries[choice]
    if (out / "library.json").is_file():
        return out
    import importlib.util

    from promptsearch.library import BuildConfig, build_library

    spec = importlib.util.spec_from_file_location("library_transfer", HERE / "library_transfer.py")
    lt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lt)
    bb = bench.backbones[choice]
    config = BuildConfig.make(datasets=lt.library_sources(bench.dataset), backbone=bb["name"],
                              backbone_weights=bb["weights"], image_size=bb["image_size"], **lt.BUILD)
    print(f"building library {out.name} from {list(config.datasets)}", flush=True)
    build_library(config, out, data_root=MEDMNIST, folders_root=FOLDERS, threads=1)
    return out


# --- the table ------------------------------------------------------------------------------------
def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("key")]  # a torn last line has no key: dropped


def append_row(path: Path, row: dict[str, Any]) -> None:
    """One row, appended under an exclusive lock (several recording workers share the file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            if f.tell() == 0:
                csv.DictWriter(f, fieldnames=FIELDS).writeheader()
            csv.DictWriter(f, fieldnames=FIELDS).writerow(row)
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def candidates(space: SearchSpace) -> list:
    """Every distinct candidate of the bench space (one per key)."""
    seen: dict[str, Any] = {}
    for c in space.enumerate():
        seen.setdefault(c.key, c)
    return list(seen.values())


def candidate_rows(space: SearchSpace, rows: Iterable[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    """The table's rows by candidate (``arch_key``) of ``space``, every candidate present (an empty
    list if unrecorded); a row of a candidate an equivalence rule later folded into another is left out."""
    out: dict[str, list[dict[str, str]]] = {arch_key(c): [] for c in candidates(space)}
    for r in rows:
        if r["architecture"] in out:
            out[r["architecture"]].append(r)
    return out


# --- recording ------------------------------------------------------------------------------------
class Recorder:
    """Trains candidates of one bench in this process (one torch thread), caching data and backbones."""

    def __init__(self, bench: Bench, worker: int):
        import torch

        from promptsearch.data import load_dataset

        torch.set_num_threads(1)
        from promptsearch.library import bind_library

        self.bench, self.worker = bench, worker
        self.space = bench.load_space()
        self.data = load_dataset(bench.dataset, root=bench.data_root)
        self._backbones: dict[str, Any] = {}
        # one copy of the bench space per backbone, bound to that backbone's library (blocks are
        # learned on one frozen backbone); a candidate keeps its genome and its bench-space key
        self.bound = {b: bind_library(self.space, ensure_library(bench, b)) for b in bench.libraries}

    def backbone(self, choice: str):
        from promptsearch.backbones import BackboneSpec, build_backbone

        if choice not in self._backbones:
            self._backbones[choice] = build_backbone(BackboneSpec(**self.bench.backbones[choice]))
        return self._backbones[choice]

    def run(self, cand, seed: int) -> dict[str, Any]:
        from promptsearch.budget import Budget
        from promptsearch.trial import run_trial

        b = self.bench
        arch = cand.architecture
        choice = arch.get("backbone") or next(iter(b.backbones))
        budget = Budget(epochs=b.epochs, batch_size=b.batch_size, max_train_samples=b.max_train_samples,
                        threads=1, latency_repeats=5, device="cpu")
        trial_cand = self.bound[choice].candidate(cand.genome) if self.bound else cand
        r = run_trial(trial_cand, self.data, self.backbone(choice), budget, seed=seed)
        m, t = r.metrics, r.test_metrics
        curve = [{k: round(v, 6) for k, v in h.items() if k in ("epoch", "train_loss", "val_auc", "val_worst_class_recall")}
                 for h in r.history]
        n_train = min(len(self.data.train), b.max_train_samples or len(self.data.train))
        return {"key": cand.key, "seed": seed, "genome": json.dumps(list(cand.genome)),
                "architecture": json.dumps(arch, sort_keys=True), "status": r.status,
                "reason": (r.reason or "").splitlines()[0][:300] if r.reason else "",
                **{k: f"{m[k]:.6g}" if k in m else "" for k in METRICS},
                "test_auc": f"{t['auc']:.6g}" if "auc" in t else "",
                "test_worst_class_recall": f"{t['worst_class_recall']:.6g}" if "worst_class_recall" in t else "",
                "curve": json.dumps(curve), "image_passes": n_train * len(r.history),
                "wall_time_s": f"{r.wall_time_s:.2f}", "worker": self.worker,
                "finished_at": time.strftime("%Y-%m-%d %H:%M:%S")}


def worker_pool(workers: int):
    """A spawn pool whose workers go with this process on SIGTERM (``kill``, a scheduler's stop): the
    handler turns it into SystemExit, so the pool's ``with`` terminates them; without it they outlive
    the parent as orphans and go on writing (a recording's rows are whole lines, so a resume after
    either is exact)."""
    import multiprocessing as mp
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    return mp.get_context("spawn").Pool(workers)


def _shard(key: str, workers: int) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % workers


def _record_shard(args: tuple[str, int, int, int | None]) -> int:
    name, worker, workers, limit = args
    bench = BENCHES[name]
    rec = Recorder(bench, worker)
    # resumed by architecture, not key: a key hashes the space file, and an equivalence rule added to
    # it later (one identity for what was two) must not re-record what the table holds; a candidate's
    # worker is a hash of it, not its place in the list, which such a rule shifts
    done = {(r["architecture"], int(r["seed"])) for r in read_rows(bench.table)}
    todo = [(c, s) for c in candidates(rec.space) for s in bench.seeds
            if _shard(arch_key(c), workers) == worker and (arch_key(c), s) not in done]
    if limit is not None:
        todo = todo[:limit]
    for n, (cand, seed) in enumerate(todo, 1):
        row = rec.run(cand, seed)
        append_row(bench.table, row)
        print(f"[w{worker} {n}/{len(todo)}] {row['status']} seed={seed} auc={row['auc'] or 'nan'} "
              f"wcr={row['worst_class_recall'] or 'nan'} params={row['prompt_params'] or 'nan'} "
              f"{row['wall_time_s']}s {row['architecture']}", flush=True)
    return len(todo)


def write_meta(bench: Bench) -> None:
    import torch

    meta = bench.table.with_suffix(".json")
    if meta.exists():
        return
    space = bench.load_space()
    meta.write_text(json.dumps({
        "bench": bench.name, "space": str(Path(bench.space).name), "space_hash": space.hash,
        "candidates": len(candidates(space)), "dataset": bench.dataset, "backbones": bench.backbones,
        "libraries": {k: {"path": str(v.relative_to(REPO)), "version": json.loads((v / "library.json").read_text())["version"]}
                      for k, v in bench.libraries.items()}, "epochs": bench.epochs,
        "max_train_samples": bench.max_train_samples, "batch_size": bench.batch_size, "seeds": list(bench.seeds),
        "torch": torch.__version__, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": "python benchmarks/search_quality.py record " + " ".join(sys.argv[2:])}, indent=2) + "\n")


@app.command()
def record(target: str = typer.Option(..., "--target", help=f"A bench: {', '.join(BENCHES) or '(none yet)'}."),
           workers: int = typer.Option(1, help="Processes, one torch thread each."),
           limit: int | None = typer.Option(None, help="At most this many new rows per worker (a smoke run).")) -> None:
    """Train every candidate of a bench with each of its seeds; append rows (resumes where it stopped)."""
    if target not in BENCHES:
        raise typer.BadParameter(f"unknown bench {target!r}; known: {', '.join(BENCHES)}")
    bench = BENCHES[target]
    for choice in bench.libraries:  # built once, here, before any worker needs them
        ensure_library(bench, choice)
    write_meta(bench)
    space = bench.load_space()
    total = len(candidates(space)) * len(bench.seeds)
    print(f"bench {bench.name}: {total} rows in all, {len(read_rows(bench.table))} recorded -> {bench.table}", flush=True)
    if workers == 1:
        _record_shard((target, 0, 1, limit))
        return
    with worker_pool(workers) as pool:
        pool.map(_record_shard, [(target, w, workers, limit) for w in range(workers)])


# --- replay ---------------------------------------------------------------------------------------
def arch_key(cand) -> str:
    """A candidate's identity in a table: its canonical decoded architecture (the same in the
    bench space and in any copy of it with some decisions pinned)."""
    return json.dumps(cand.architecture, sort_keys=True)


class ExactOracle:
    """Answers a candidate with one of its recorded trials (a seed drawn per lookup)."""

    def __init__(self, rows: Iterable[dict[str, str]]):
        self.rows: dict[str, list[dict[str, str]]] = {}
        for r in rows:
            self.rows.setdefault(r["architecture"], []).append(r)

    def row(self, cand, rng: random.Random) -> dict[str, str]:
        """One recorded trial of ``cand`` (its seed drawn by ``rng``): the table row, curve included."""
        try:
            options = self.rows[arch_key(cand)]
        except KeyError:
            raise LookupError(f"proposal outside the table (a bug): {cand.architecture}") from None
        return rng.choice(options)

    def result(self, cand, rng: random.Random) -> dict[str, Any]:
        return as_result(self.row(cand, rng))

    def mean_result(self, cand) -> dict[str, Any]:
        """``cand`` at its seeds' mean metrics (what it is worth, rather than what one lookup drew)."""
        return self._means[arch_key(cand)]

    def mean_results(self) -> list[dict[str, Any]]:
        """Every completed candidate at its seeds' mean metrics (over the whole table: the ceiling)."""
        return [r for r in self._means.values() if r["status"] == "completed"]

    @functools.cached_property
    def _means(self) -> dict[str, dict[str, Any]]:
        out = {}
        for arch, rows in self.rows.items():
            ok = [r for r in rows if r["status"] == "completed"]
            out[arch] = {"status": "completed", "metrics": {k: sum(float(r[k]) for r in ok) / len(ok) for k in
                                                            ("auc", "worst_class_recall", "prompt_params")}} \
                if ok else {"status": "failed", "metrics": {}}
        return out


def as_result(r: dict[str, str]) -> dict[str, Any]:
    if r["status"] != "completed":
        return {"status": "failed", "metrics": {}}
    return {"status": "completed", "metrics": {k: float(r[k]) for k in METRICS if r.get(k)}}


def replay_one(args: tuple) -> tuple[str, int, list[float], float, list[float]]:
    """One strategy run of ``budget`` sequential asks and tells: its running hypervolume (of the
    told results), CPU seconds in ask and tell, and the running hypervolume of the candidates found at
    their seed-mean metrics (what the search found is worth, without the luck of the seeds drawn).
    ``args``: (strategy, bench, seed, budget, options JSON[, decisions to pin JSON])."""
    from promptsearch.strategies import make_strategy

    strategy, bench_name, seed, budget, options, *rest = args
    bench = BENCHES[bench_name]
    space = bench.load_space()
    if rest and rest[0]:
        space = space.fix(**json.loads(rest[0]))
    oracle = ExactOracle(read_rows(bench.table))
    s = make_strategy(strategy, space, BENCH_OBJECTIVES, seed=seed, **json.loads(options or "{}"))
    rng = random.Random(10_000 + seed)  # the seed draws: common to every strategy with this replay seed
    told: list[dict[str, Any]] = []
    found: list[dict[str, Any]] = []
    curve, worth = [], []
    cpu = 0.0
    for _ in range(budget):
        t0 = time.process_time()
        cand = s.ask()
        res = oracle.result(cand, rng)
        s.tell(cand.key, res)
        cpu += time.process_time() - t0
        told.append(res)
        found.append(oracle.mean_result(cand))
        curve.append(hypervolume(told, BENCH_OBJECTIVES))
        worth.append(hypervolume(found, BENCH_OBJECTIVES))
    return strategy, seed, curve, cpu, worth


CACHE = RESULTS / ".replay-cache"  # one JSON per replay run (git-ignored): a rerun replays only what changed


def _run_key(args: tuple) -> str:
    """What a replay run depends on: its arguments, the table's rows and the strategy's source."""
    import inspect

    from promptsearch.strategies import STRATEGIES, Strategy, make_strategy

    bench = BENCHES[args[1]]
    h = hashlib.sha256(json.dumps(list(args)).encode())
    h.update(bench.table.read_bytes())
    h.update(Path(bench.space).read_bytes())
    # the strategy's own code and its bases', and those of the strategies it holds (a hand-over's two)
    held = [v for v in vars(make_strategy(args[0], bench.load_space(), BENCH_OBJECTIVES, seed=0,
                                          **json.loads(args[4] or "{}"))).values() if isinstance(v, Strategy)]
    classes = [c for k in [STRATEGIES.get_or_raise(args[0]), *map(type, held)] for c in k.__mro__
               if c.__module__.startswith("promptsearch")]
    sources = sorted({inspect.getsourcefile(c) for c in classes})
    for f in [*sources, REPO / "promptsearch" / "space.py", REPO / "promptsearch" / "objectives.py"]:
        h.update(Path(f).read_bytes())
    return h.hexdigest()[:24]


def _cached_replay(args: tuple) -> tuple:
    path = CACHE / f"{_run_key(args)}.json"
    if path.exists():
        return tuple(json.loads(path.read_text()))
    out = replay_one(args)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(out))
    tmp.replace(path)
    return out


def replay_many(jobs: list[tuple], workers: int) -> list[tuple]:
    """``replay_one`` of every job, ``workers`` processes; runs already in :data:`CACHE` (same
    arguments, table and strategy code) are read back, not replayed."""
    with worker_pool(workers) as pool:
        return pool.map(_cached_replay, jobs)


STRATEGIES_DEFAULT = ["random", "rl", "evolution", "regularized-evolution", "optuna-tpe", "optuna-nsga2", "mobo",
                      "handover"]


def first_reach(curve, target: float, budget: int) -> str:
    """The trial at which a (mean) curve first reaches ``target``, as text (``>budget``: never)."""
    import numpy as np

    hit = np.nonzero(curve >= target - 1e-12)[0]
    return f"{int(hit[0]) + 1}" if len(hit) else f">{budget}"


def summarise(bench: Bench, curves: dict[str, list[list[float]]], cpu: dict[str, float], budget: int,
              worth: dict[str, list[list[float]]] | None = None) -> str:
    import numpy as np
    from scipy.stats import mannwhitneyu

    by = candidate_rows(bench.load_space(), read_rows(bench.table))
    oracle = ExactOracle(r for rs in by.values() for r in rs)
    ceiling = hypervolume(oracle.mean_results(), BENCH_OBJECTIVES)
    marks = [b for b in (25, 50, 100) if b <= budget]
    mid = marks[1] if len(marks) > 1 else marks[0]
    base = np.array(curves["random"]) if "random" in curves else None
    target = float(base[:, marks[-1] - 1].mean()) if base is not None else math.nan
    worth_target = float(np.array(worth["random"])[:, marks[-1] - 1].mean()) if worth and "random" in worth else math.nan
    lines = [f"bench `{bench.name}`: {len(by)} candidates, {sum(map(len, by.values()))} recorded trials of them; "
             f"ceiling (every candidate at its seed-mean metrics) HV {ceiling:.4f}",
             "", "| strategy | " + " | ".join(f"HV @{b} (p vs random)" for b in marks)
             + f" | trials to random's HV@{marks[-1]} ({target:.4f})"
             + (f" | found, at seed means: HV @{mid} / @{marks[-1]}; trials to random's @{marks[-1]} ({worth_target:.4f})"
                if worth else "")
             + " | CPU s/run |",
             "|---|" + "---|" * (len(marks) + 2 + bool(worth))]
    for name, runs in curves.items():
        arr = np.array(runs)
        cells = []
        for b in marks:
            v = arr[:, b - 1]
            p = "" if name == "random" or base is None else \
                f" (p={mannwhitneyu(v, base[:, b - 1], alternative='greater').pvalue:.3g})"
            cells.append(f"{v.mean():.4f} ± {v.std(ddof=1):.4f}{p}")
        reach = first_reach(arr.mean(0), target, budget)
        per_seed = [int(np.nonzero(r >= target - 1e-12)[0][0]) + 1 for r in arr if (r >= target - 1e-12).any()]
        reach += f" (mean curve); {len(per_seed)}/{len(arr)} seeds reach it" + \
                 (f", median {int(np.median(per_seed))}" if per_seed else "")
        if worth:
            w = np.array(worth[name])
            reach += (f" | {w[:, mid - 1].mean():.4f} / {w[:, marks[-1] - 1].mean():.4f}; "
                      + first_reach(w.mean(0), worth_target, budget))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {reach} | {cpu[name] / len(runs):.2f} |")
    return "\n".join(lines)


@app.command()
def replay(benches: str = typer.Option(",".join(BENCHES), help="Comma-separated benches to report."),
           strategies: str = typer.Option(",".join(STRATEGIES_DEFAULT)),
           options: str = typer.Option("{}", help='JSON: {"strategy": {option: value}} applied in every bench.'),
           seeds: int = typer.Option(20), budget: int = typer.Option(100),
           workers: int = typer.Option(2), out: Path = typer.Option(RESULTS / "search_quality.md"),
           add: bool = typer.Option(False, help="Add these strategies' curves to the bench's published curves "
                                                "and plot (same seeds), keeping the other strategies' there.")) -> None:
    """Replay every strategy ``seeds`` times on each bench; write the table, curves and plot."""

    opts = json.loads(options)
    sections = [f"# Search quality (exact replay over recorded real trials)\n\n    python benchmarks/search_quality.py "
                f"replay --benches {benches} --seeds {seeds} --budget {budget}\n"]
    for bench_name in filter(None, benches.split(",")):
        bench = BENCHES[bench_name]
        jobs = [(s, bench_name, seed, budget, json.dumps(opts.get(s, {}))) for s in strategies.split(",")
                for seed in range(seeds)]
        t0 = time.perf_counter()
        results = replay_many(jobs, workers)
        curves: dict[str, list[list[float]]] = {}
        worth: dict[str, list[list[float]]] = {}
        cpu: dict[str, float] = {}
        for name, _, curve, c, w in results:
            curves.setdefault(name, []).append(curve)
            worth.setdefault(name, []).append(w)
            cpu[name] = cpu.get(name, 0.0) + c
        sections.append(f"## {bench_name}\n\n" + summarise(bench, curves, cpu, budget, worth)
                        + f"\n\nreplay wall time {time.perf_counter() - t0:.0f} s ({workers} processes)\n")
        path = RESULTS / f"search_quality_{bench_name}_curves.csv"
        summary = {**(read_curves(path) if add and path.exists() else {}), **curve_summary(curves)}
        write_curves(path, summary)
        plot(RESULTS / f"search_quality_{bench_name}_hv.png", bench_name, summary, seeds)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(sections))
    print(out.read_text())


def append_section(out: Path, lines: list[str]) -> None:
    """Append one section (``tune``, ``pinned``) to ``out`` and print it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


@app.command()
def tune(strategy: str = typer.Argument(..., help="The strategy whose options are tuned."),
         grid: str = typer.Argument(..., help='JSON: {"option": [value, ...]}; every combination is replayed.'),
         bench: str = typer.Option("pneumoniamnist", help="The tuning bench (never the report bench)."),
         seeds: int = typer.Option(20), budget: int = typer.Option(100), workers: int = typer.Option(2),
         out: Path = typer.Option(RESULTS / "search_quality_tuning.md", help="Appended: one section per call.")) -> None:
    """Replay ``strategy`` under every combination of ``grid`` on the tuning bench against random
    (the same replay seeds): mean HV at 25 / 50 / 100 trials and the one-sided Mann-Whitney p at 50."""
    import itertools

    import numpy as np
    from scipy.stats import mannwhitneyu

    options = json.loads(grid)
    combos = [dict(zip(options, values)) for values in itertools.product(*options.values())]
    jobs = [("random", bench, seed, budget, "{}") for seed in range(seeds)]
    jobs += [(strategy, bench, seed, budget, json.dumps(c)) for c in combos for seed in range(seeds)]
    t0 = time.perf_counter()
    results = replay_many(jobs, workers)
    runs = [np.array([r[2] for r in results[i: i + seeds]]) for i in range(0, len(results), seeds)]
    base, arms = runs[0], runs[1:]
    marks = [b for b in (25, 50, 100) if b <= budget]
    mid = marks[1] if len(marks) > 1 else marks[0]
    rows = [("random (reference)", base, None)] + [(json.dumps(c), a, mannwhitneyu(a[:, mid - 1], base[:, mid - 1],
                                                    alternative="greater").pvalue) for c, a in zip(combos, arms)]
    rows.sort(key=lambda r: -r[1][:, mid - 1].mean())
    target = base[:, -1].mean()  # random's HV at the full budget: the trials-to-reach target
    text = [f"## {strategy} on `{bench}` ({seeds} seeds, {budget} trials)", "",
            f"    python benchmarks/search_quality.py tune {strategy} '{grid}' --bench {bench} --seeds {seeds} --budget {budget}",
            "", "| options | " + " | ".join(f"HV @{b}" for b in marks) + f" | p vs random @{mid} "
            f"| trials to random's HV@{budget} ({target:.4f}), mean curve |",
            "|---|" + "---|" * (len(marks) + 2)]
    for name, a, p in rows:
        text.append(f"| {name} | " + " | ".join(f"{a[:, b - 1].mean():.4f}" for b in marks)
                    + f" | {'' if p is None else f'{p:.3g}'} | {first_reach(a.mean(axis=0), target, budget)} |")
    text.append(f"\nwall time {time.perf_counter() - t0:.0f} s ({workers} processes)\n")
    append_section(out, text)


@app.command()
def pinned(pins: str = typer.Argument(..., help='JSON: {"decision": choice, ...}, e.g. the region the front lies in.'),
           bench: str = typer.Option("pneumoniamnist"), seeds: int = typer.Option(20), budget: int = typer.Option(50),
           workers: int = typer.Option(2),
           out: Path = typer.Option(RESULTS / "search_quality_tuning.md", help="Appended: one section per call.")) -> None:
    """Random search on the whole space vs random search told in advance which region to sample (the
    decisions ``pins`` fixes): how much a strategy that *learns* where the front lies could gain, at
    most, by concentrating there. If the pinned arm is not ahead, a bench cannot reward such learning."""
    import numpy as np
    from scipy.stats import mannwhitneyu

    jobs = [("random", bench, seed, budget, "{}", pin) for pin in ("", pins) for seed in range(seeds)]
    t0 = time.perf_counter()
    results = replay_many(jobs, workers)
    whole, region = (np.array([r[2] for r in results[i: i + seeds]]) for i in (0, seeds))
    marks = [b for b in (10, 25, 50, 100) if b <= budget]
    text = [f"## random told where to sample, on `{bench}` ({seeds} seeds, {budget} trials)", "",
            f"    python benchmarks/search_quality.py pinned '{pins}' --bench {bench} --seeds {seeds} --budget {budget}", "",
            "| arm | " + " | ".join(f"HV @{b}" for b in marks) + " | p (pinned > whole) per budget |",
            "|---|" + "---|" * (len(marks) + 1),
            "| random, whole space | " + " | ".join(f"{whole[:, b - 1].mean():.4f}" for b in marks) + " |  |",
            f"| random, only {pins} | " + " | ".join(f"{region[:, b - 1].mean():.4f}" for b in marks) + " | "
            + ", ".join(f"{mannwhitneyu(region[:, b - 1], whole[:, b - 1], alternative='greater').pvalue:.3g}"
                        for b in marks) + " |",
            f"\nwall time {time.perf_counter() - t0:.0f} s ({workers} processes)\n"]
    append_section(out, text)


@app.command()
def card(out: Path = typer.Option(DATA / "README.md")) -> None:
    """The tables' card: each bench's space, recipe, what is recorded, its cost and its noise, read
    from the tables themselves (rerun it as a recording grows)."""
    import numpy as np

    text = ["# Search-quality tables (the exact benchmark's data)", "",
            "    python benchmarks/search_quality.py card      # writes this file from the tables", "",
            "Each `search_quality_<bench>.csv` holds trials of *every* distinct candidate of its bench space",
            "(`bench_<bench>.yaml`), trained with the project's own trial code (`promptsearch.trial.run_trial`:",
            "frozen ImageNet backbone, pixel prompts over component-library blocks, a new linear head) on the",
            "bench's target; one row per (candidate, seed), with the per-epoch validation curve (`curve`: epoch,",
            "train loss, validation AUC and worst-class recall), the validation metrics of the last epoch (what",
            "the benchmark searches on), the test metrics (reported, never searched on), the image passes it",
            "trained, and its wall time. `search_quality_<bench>.json` holds the recording's settings (space",
            "hash, backbones and weights, libraries, epochs, training images, seeds, torch). Append-only,",
            "resumable (`record` skips what is there); a torn last line is dropped when read.", "",
            "A library's version is the hash of its weights. `record` rebuilds a missing library under",
            "`artifacts/` (git-ignored) with a fixed recipe, but a rebuild on another CPU is not bit-identical",
            "(here, the brain_tumor_mri MobileNetV2 library rebuilt as 3011471a…, not the eab60941… its table",
            "was recorded with): a table's rows reproduce up to float-level differences of the trials. The",
            "libraries of `brain_tumor_mri_4c`, `eye_fundus` and `chest_xray` are therefore committed beside their tables (the "
            "`eye_fundus` libraries happened to rebuild bit-identical to those `library_transfer.py` built earlier).", ""]
    for bench in BENCHES.values():
        rows = read_rows(bench.table)
        meta = json.loads(bench.table.with_suffix(".json").read_text()) if bench.table.with_suffix(".json").exists() else {}
        space = bench.load_space()
        by = candidate_rows(space, rows)
        cands = list(by)
        used = [r for rs in by.values() for r in rs]
        full = [rs for rs in by.values() if len(rs) >= len(bench.seeds)]
        ok = [r for r in used if r["status"] == "completed"]
        text += [f"## `{bench.name}`", "",
                 f"- space `{Path(bench.space).name}` (hash {space.hash}): **{len(cands)} distinct candidates** "
                 f"({', '.join(f'{d} {len(v.choices)}' for d, v in space.spec.decisions.items() if len(v.choices) > 1)}; "
                 f"components {', '.join(n for g in space.spec.components.values() for n in g)}, at least "
                 f"{space.spec.min_components}; equivalence {', '.join(space.spec.equivalence) or 'none'})",
                 f"- recipe: {bench.epochs} epochs, {bench.max_train_samples} training images, batch {bench.batch_size}, "
                 f"32 px, seeds {list(bench.seeds)}, one torch thread a trial; backbones "
                 + ", ".join(f"{k} (`{v['name']}`)" for k, v in bench.backbones.items()),
                 f"- recorded: {len(used)} of {len(cands) * len(bench.seeds)} rows ({len(full)} of {len(cands)} candidates "
                 f"with every seed){'' if len(full) == len(cands) else ' — **partial**: the recording continues'}; "
                 f"{len(used) - len(ok)} failed; {len(rows) - len(used)} more rows of candidates an equivalence rule "
                 "later folded into one (left unused)"
                 + (f"; started {meta.get('started', '?')}" if meta else "")]
        if meta.get("libraries"):  # committed beside the tables, or rebuilt by `record` under artifacts/ (ignored)
            text.append("- libraries: " + ", ".join(
                f"{k} `{v['path']}` (version {v['version']}{', committed' if v['path'].startswith('benchmarks/') else ''})"
                for k, v in meta["libraries"].items()))
        if ok:
            wall = {}
            for r in ok:
                wall.setdefault(json.loads(r["architecture"]).get("backbone", "?"), []).append(float(r["wall_time_s"]))
            text.append("- cost (wall time of a trial on one thread, median; the machine was shared): "
                        + ", ".join(f"{k} {np.median(v):.1f} s ({len(v)} trials)" for k, v in sorted(wall.items()))
                        + f"; {sum(float(r['wall_time_s']) for r in ok) / 3600:.2f} h of trial time in all")
            pairs = [[float(r["auc"]) for r in rs if r["status"] == "completed"] for rs in full]
            pairs = [p for p in pairs if len(p) >= 2]
            if pairs:
                seed_sd = float(np.median([np.std(p, ddof=1) for p in pairs]))
                means = [np.mean(p) for p in pairs]
                text.append(f"- noise: validation AUC seed s.d. (median over candidates) {seed_sd:.4f}; spread between "
                            f"candidates' seed means s.d. {np.std(means, ddof=1):.4f} (range {min(means):.3f}–{max(means):.3f}); "
                            f"ratio {seed_sd / max(np.std(means, ddof=1), 1e-12):.2f}")
        text.append("")
    out.write_text("\n".join(text))
    print(out.read_text())


def curve_summary(curves: dict[str, list[list[float]]]) -> dict[str, tuple[list[float], list[float]]]:
    """Each strategy's mean curve and its per-trial s.d. over the replay seeds."""
    import numpy as np

    return {n: (list(np.mean(c, axis=0)), list(np.std(c, axis=0, ddof=1))) for n, c in curves.items()}


def write_curves(path: Path, summary: dict[str, tuple[list[float], list[float]]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial", *[f"{n}_{s}" for n in summary for s in ("mean", "sd")]])
        for t in range(len(next(iter(summary.values()))[0])):
            w.writerow([t + 1, *[f"{x:.5f}" for m, sd in summary.values() for x in (m[t], sd[t])]])


def read_curves(path: Path) -> dict[str, tuple[list[float], list[float]]]:
    """:func:`write_curves`'s file back: strategy -> (mean curve, s.d. curve)."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    names = [c[:-5] for c in rows[0] if c.endswith("_mean")]
    return {n: ([float(r[f"{n}_mean"]) for r in rows], [float(r[f"{n}_sd"]) for r in rows]) for n in names}


def plot(path: Path, title: str, summary: dict[str, tuple[list[float], list[float]]], seeds: int = 20) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, (mean, sd) in summary.items():
        m, se = np.array(mean), np.array(sd) / math.sqrt(seeds)
        x = np.arange(1, len(m) + 1)
        ax.plot(x, m, label=name)
        ax.fill_between(x, m - se, m + se, alpha=0.15)
    ax.set_xlabel("trials"), ax.set_ylabel("hypervolume (mean ± s.e.)"), ax.set_title(title)
    ax.legend(fontsize=8), ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    app()
