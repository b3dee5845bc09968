"""Search quality: the hypervolume each strategy finds within N trials, over a table of real trials.

    python benchmarks/search_quality.py replay            # the figures and the plot (a minute)
    nice -n 10 python benchmarks/search_quality.py record # (re)makes the table; resumable (~1 h)

Figures: ``benchmarks/results/search_quality.md`` (+ ``_hv.png``, ``_curves.csv``); how the table
was made and its noise: ``benchmarks/data/search_quality_breastmnist_mnv2_32px.md``.

``record`` runs real short trials (``promptsearch.trial.run_trial``: the ImageNet MobileNetV2 from
``../shared/weights`` frozen, pixel prompts, BreastMNIST at a small working size) for candidates
of ``medical.yaml`` fixed to ``module=pixel`` and appends one CSV row per finished trial, so an
interrupted run loses nothing and picks up where it stopped. The first ``--spread`` candidates
are also trained with other seeds, to measure seed-to-seed noise against candidate differences.

Pixel prompt components are interchangeable learnable blocks: two genomes with the same decisions
and the same *number* of components build identical models (same parameter shapes, same seeded
initialisation), so a trial is determined by its *class* = (decisions, number of components). The
table records a seeded random sample of classes. ``replay`` answers a strategy's proposal with the
recorded row of its class; a class not in the table gets the **nearest recorded class** (Hamming
distance over the decisions plus the difference in component count, ties to the earliest row) —
nearest rather than a random table row, so the landscape keeps its neighbourhood structure, which
is what evolution and the RL controller exploit; a random row would turn every unrecorded
proposal into noise and hide the difference between strategies.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import random
import re
import shlex
import sys
import time
from pathlib import Path

import typer

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from promptsearch.objectives import hypervolume, parse_objectives  # noqa: E402
from promptsearch.space import SearchSpace, load_space  # noqa: E402

app = typer.Typer(add_completion=False, help=__doc__.split("\n")[0])


@app.callback()
def _main() -> None:
    """record | replay"""

DEFAULT_TABLE = HERE / "data" / "search_quality_breastmnist_mnv2_32px.csv"
FIELDS = ["phase", "class_key", "seed", "genome", "n_components", "architecture", "status", "reason",
          "auc", "worst_class_recall", "accuracy", "balanced_accuracy", "prompt_params", "latency_ms",
          "test_auc", "test_worst_class_recall", "wall_time_s", "finished_at"]
# The benchmark's objectives: latency is recorded but left out — at a 32 px working size a pixel
# prompt adds no measurable forward time, and wall-clock on a shared 2-core machine is noise.
BENCH_OBJECTIVES = parse_objectives(["auc", "worst_class_recall", "prompt_params"])


def bench_space() -> SearchSpace:
    return load_space("medical").fix(module="pixel")


def class_of(space: SearchSpace, genome: list[int] | tuple[int, ...]) -> str:
    """The trial-determining part of a genome: active decisions + number of components on."""
    arch = space.decode(genome)
    n = sum(len(v) for v in arch.pop("components", {}).values())
    return json.dumps({**arch, "n_components": n}, sort_keys=True)


def plan_classes(space: SearchSpace, n: int, seed: int = 0) -> list[tuple[int, ...]]:
    """``n`` distinct classes drawn uniformly (seeded), each with a representative genome."""
    rng = random.Random(seed)
    decisions: set[tuple[int, ...]] = set()
    nd = space.n_decisions
    for g in itertools.product(*(range(len(x.choices)) for x in space.genes[:nd])):
        decisions.add(space.canonical(list(g) + [1] * (len(space.genes) - nd))[:nd])
    n_comp = len(space.genes) - nd
    classes = sorted((d, k) for d in decisions for k in range(max(1, space.spec.min_components), n_comp + 1))
    rng.shuffle(classes)
    out = []
    for d, k in classes[:n]:
        on = set(rng.sample(range(n_comp), k))
        out.append(space.canonical(list(d) + [int(i in on) for i in range(n_comp)]))
    return out


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@app.command()
def record(out: Path = typer.Option(DEFAULT_TABLE, help="CSV to append to (resumes if it exists)."),
           n: int = typer.Option(300, help="Candidate classes in the table."),
           spread: int = typer.Option(8, help="Candidates re-run with extra seeds to measure noise."),
           spread_seeds: int = typer.Option(3, help="Seeds per spread candidate (seed 0 included)."),
           dataset: str = typer.Option("breastmnist"),
           image_size: int = typer.Option(32, help="Backbone working size (px)."),
           epochs: int = typer.Option(3),
           max_train_samples: int | None = typer.Option(None),
           threads: int = typer.Option(1, help="torch threads (the machine is shared)."),
           weights: Path = typer.Option(REPO.parent / "shared" / "weights" / "mobilenet_v2-b0353104.pth"),
           data_root: Path = typer.Option(Path(os.environ.get("PROMPTSEARCH_DATA_ROOT", REPO.parent / "shared" / "data" / "medmnist"))),
           plan_seed: int = typer.Option(0)) -> None:
    """Run real trials and append them to the table (skips rows already there)."""
    import torch

    from promptsearch.data import load_dataset
    from promptsearch.backbones import BackboneSpec, build_backbone
    from promptsearch.trial import Budget, run_trial

    torch.set_num_threads(threads)
    space = bench_space()
    data = load_dataset(dataset, root=data_root)
    backbone = build_backbone(BackboneSpec(name="torchvision:mobilenet_v2", image_size=image_size, weights=str(weights)))
    budget = Budget(epochs=epochs, batch_size=32, max_train_samples=max_train_samples, threads=threads, latency_repeats=5)
    plan = plan_classes(space, n, plan_seed)
    jobs = [("spread" if s else "table", g, s) for g in plan[:spread] for s in range(spread_seeds)]
    jobs += [("table", g, 0) for g in plan[spread:]]
    done = {(r["class_key"], int(r["seed"])) for r in read_rows(out)}
    out.parent.mkdir(parents=True, exist_ok=True)
    new = not out.exists()
    meta = out.with_suffix(".json")
    if new:
        meta.write_text(json.dumps({
            "command": "python benchmarks/search_quality.py record " + " ".join(sys.argv[2:]),
            "space": "medical.yaml fixed to module=pixel", "space_hash": space.hash, "dataset": dataset,
            "backbone": "torchvision:mobilenet_v2 (ImageNet weights, frozen)", "weights": weights.name,
            "image_size": image_size, "budget": budget.model_dump(), "n_classes": n, "plan_seed": plan_seed,
            "spread": spread, "spread_seeds": spread_seeds, "torch": torch.__version__,
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=2) + "\n")
    todo = [j for j in jobs if (class_of(space, j[1]), j[2]) not in done]
    print(f"{len(jobs) - len(todo)} rows done, {len(todo)} to go -> {out}", flush=True)
    with out.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            w.writeheader()
        for i, (phase, genome, seed) in enumerate(todo, 1):
            cand = space.candidate(genome)
            r = run_trial(cand, data, backbone, budget, seed=seed)
            m, t = r.metrics, r.test_metrics
            w.writerow({"phase": phase, "class_key": class_of(space, genome), "seed": seed,
                        "genome": json.dumps(list(genome)), "n_components": space.n_components_on(genome),
                        "architecture": json.dumps(cand.architecture, sort_keys=True), "status": r.status,
                        "reason": (r.reason or "").splitlines()[0] if r.reason else "",
                        **{k: f"{m[k]:.6g}" if k in m else "" for k in
                           ("auc", "worst_class_recall", "accuracy", "balanced_accuracy", "prompt_params", "latency_ms")},
                        "test_auc": f"{t['auc']:.6g}" if "auc" in t else "",
                        "test_worst_class_recall": f"{t['worst_class_recall']:.6g}" if "worst_class_recall" in t else "",
                        "wall_time_s": f"{r.wall_time_s:.2f}", "finished_at": time.strftime("%Y-%m-%d %H:%M:%S")})
            f.flush()
            print(f"[{i}/{len(todo)}] {phase} seed={seed} {r.status} auc={m.get('auc', math.nan):.3f} "
                  f"wcr={m.get('worst_class_recall', math.nan):.3f} params={m.get('prompt_params', math.nan):.0f} "
                  f"{r.wall_time_s:.1f}s", flush=True)


# --- replay ------------------------------------------------------------------------------------
REPLAY_STRATEGIES = ["random", "rl", "evolution", "regularized-evolution", "optuna-tpe", "optuna-nsga2"]
BUDGETS = (25, 50, 100)


class TableOracle:
    """Answers a candidate with a recorded trial: its class's row, else the nearest recorded class.

    Distance = number of differing decisions + |difference in component count| / 4 (four more
    components change the trial about as much as one decision); ties go to the earliest row.
    Prompt parameters are exact for every candidate (computed from the prompt module alone, no
    training), so only the trained metrics (AUC, worst-class recall) come from a neighbour.
    """

    def __init__(self, rows: list[dict[str, str]], space: SearchSpace, image_size: int):
        self.space, self.image_size = space, image_size
        table = [r for r in rows if r["phase"] == "table" and int(r["seed"]) == 0]
        self.rows = {r["class_key"]: r for r in table}
        self.keys = list(self.rows)
        self.features = [self._features(json.loads(self.rows[k]["genome"])) for k in self.keys]
        self._params: dict[str, float] = {}
        self.exact = self.nearest = 0

    def _features(self, genome) -> tuple[tuple[int, ...], int]:
        g = self.space.canonical(genome)
        return g[: self.space.n_decisions], self.space.n_components_on(g)

    def prompt_params(self, genome) -> float:
        from promptsearch.prompts import PixelPrompt

        key = class_of(self.space, genome)
        if key not in self._params:
            module = PixelPrompt(self.space.architecture(genome), self.image_size)
            self._params[key] = float(sum(p.numel() for p in module.parameters()))
        return self._params[key]

    def row(self, genome) -> dict[str, str]:
        key = class_of(self.space, genome)
        if key in self.rows:
            self.exact += 1
            return self.rows[key]
        self.nearest += 1
        d0, n0 = self._features(genome)
        dist = [sum(a != b for a, b in zip(d0, d)) + abs(n0 - n) / 4 for d, n in self.features]
        return self.rows[self.keys[min(range(len(dist)), key=dist.__getitem__)]]

    def result(self, cand):
        from promptsearch.trial import TrialResult

        r = self.row(cand.genome)
        if r["status"] != "completed":
            return TrialResult(candidate=cand.to_json(), status="failed", reason=r["reason"] or "failed in the table")
        metrics = {k: float(r[k]) for k in ("auc", "worst_class_recall", "accuracy", "balanced_accuracy", "latency_ms")}
        metrics["prompt_params"] = self.prompt_params(cand.genome)
        return TrialResult(candidate=cand.to_json(), status="completed", metrics=metrics)


def parse_label(label: str) -> tuple[str, dict]:
    """``evolution[population_size=8,aging=true]`` -> ("evolution", {...}); values are YAML scalars."""
    import yaml

    m = re.fullmatch(r"([\w-]+)(?:\[(.*)\])?", label)
    if not m:
        raise typer.BadParameter(f"cannot read strategy {label!r}: write name or name[key=value,...]")
    options = {}
    for part in filter(None, (m[2] or "").split(",")):
        k, _, v = part.partition("=")
        options[k.strip()] = yaml.safe_load(v)
    return m[1], options


def run_one(args: tuple[str, int, int, str, int]) -> tuple[str, int, list[float], float, tuple[int, int]]:
    """One strategy, one seed: the hypervolume after each trial."""
    import torch

    from promptsearch.strategies import make_strategy

    name, seed, budget, table, image_size = args
    torch.set_num_threads(1)
    space = bench_space()
    oracle = TableOracle(read_rows(Path(table)), space, image_size)
    base, options = parse_label(name)
    strategy = make_strategy(base, space, BENCH_OBJECTIVES, seed=seed, **options)
    results, curve = [], []
    t0 = time.process_time()
    for _ in range(budget):
        cand = strategy.ask()
        res = oracle.result(cand)
        strategy.tell(cand.key, res)
        results.append(res)
        curve.append(hypervolume(results, BENCH_OBJECTIVES))
    return name, seed, curve, time.process_time() - t0, (oracle.exact, oracle.nearest)


def spread_summary(rows: list[dict[str, str]]) -> dict[str, float]:
    """Seed-to-seed spread (mean per-candidate std over seeds) vs spread between candidates."""
    import numpy as np

    by_class: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        if r["status"] == "completed":
            by_class.setdefault(r["class_key"], []).append(r)
    multi = [v for v in by_class.values() if len(v) > 1]
    table = [r for r in rows if r["phase"] == "table" and r["status"] == "completed"]
    out = {"spread_candidates": len(multi), "seeds_per_candidate": max((len(v) for v in multi), default=0)}
    for m in ("auc", "worst_class_recall"):
        seed_sd = float(np.mean([np.std([float(r[m]) for r in v], ddof=1) for v in multi])) if multi else math.nan
        cand_sd = float(np.std([float(r[m]) for r in table], ddof=1))
        out[f"{m}_seed_sd"], out[f"{m}_candidate_sd"] = seed_sd, cand_sd
        out[f"{m}_range"] = (min(float(r[m]) for r in table), max(float(r[m]) for r in table))
    return out


@app.command()
def replay(table: Path = typer.Option(DEFAULT_TABLE, help="The recorded table (see `record`)."),
           seeds: int = typer.Option(20, help="Seeds per strategy."),
           budget: int = typer.Option(max(BUDGETS), help="Trials per run (figures at 25/50/100)."),
           strategies: str = typer.Option(",".join(REPLAY_STRATEGIES),
                                          help="Comma-separated registry names, each optionally name[key=value,...]."),
           image_size: int = typer.Option(32, help="The working size the table was recorded at."),
           jobs: int = typer.Option(1, help="Worker processes."),
           out_dir: Path = typer.Option(HERE / "results", help="Where the summary, curves and plot go.")) -> None:
    """Replay every strategy over the table; print hypervolume mean ± std per budget; save a plot."""
    import numpy as np

    rows = read_rows(table)
    if not rows:
        raise typer.BadParameter(f"no table at {table}: run `python benchmarks/search_quality.py record` first")
    space = bench_space()
    oracle = TableOracle(rows, space, image_size)
    done = [r for r in rows if r["phase"] == "table" and r["status"] == "completed"]
    table_values = [{"status": "completed", "metrics": {"auc": float(r["auc"]), "worst_class_recall": float(r["worst_class_recall"]),
                                                         "prompt_params": float(r["prompt_params"])}} for r in done]
    spread = spread_summary(rows)
    names = [n.strip() for n in re.split(r",(?![^\[]*\])", strategies) if n.strip()]
    work = [(n, s, budget, str(table), image_size) for n in names for s in range(seeds)]
    t0 = time.time()
    if jobs > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(jobs) as pool:
            runs = list(pool.map(run_one, work))
    else:
        runs = [run_one(w) for w in work]
    curves = {n: np.array([r[2] for r in runs if r[0] == n]) for n in names}  # (seeds, budget)
    cpu = {n: float(np.mean([r[3] for r in runs if r[0] == n])) for n in names}
    exact = sum(r[4][0] for r in runs)
    nearest = sum(r[4][1] for r in runs)

    budgets = [b for b in BUDGETS if b <= budget]
    ref = float(curves["random"][:, budget - 1].mean()) if "random" in curves else math.nan
    lines = [f"table: {len(oracle.rows)} recorded candidate classes ({len(done)} completed) of "
             f"{len(plan_classes(space, 10**9))}; space size {space.size()}; objectives "
             f"{', '.join(o.name + ' ' + o.direction for o in BENCH_OBJECTIVES)}",
             f"noise: AUC seed-to-seed sd {spread['auc_seed_sd']:.3f} vs between candidates {spread['auc_candidate_sd']:.3f}; "
             f"worst-class recall {spread['worst_class_recall_seed_sd']:.3f} vs {spread['worst_class_recall_candidate_sd']:.3f} "
             f"({spread['spread_candidates']} candidates x {spread['seeds_per_candidate']} seeds)",
             f"hypervolume of the whole table: {hypervolume(table_values, BENCH_OBJECTIVES):.4f}",
             f"{seeds} seeds per strategy, {budget} trials each, asks and tells one at a time", "",
             "| strategy | " + " | ".join(f"HV @{b}" for b in budgets) + f" | trials to random's HV@{budget} ({ref:.4f}) | CPU s/run |",
             "|---|" + "---|" * (len(budgets) + 2)]
    for n in names:
        c = curves[n]
        mean = c.mean(0)
        reach = next((t + 1 for t in range(budget) if mean[t] >= ref), None)
        per_seed = [next((t + 1 for t in range(budget) if row[t] >= ref), None) for row in c]
        hit = [x for x in per_seed if x is not None]
        reach_txt = (f"{reach} (mean curve); median seed {int(np.median(hit))}, {len(hit)}/{len(per_seed)} seeds reach it"
                     if reach else f">{budget} (mean curve); {len(hit)}/{len(per_seed)} seeds reach it")
        lines.append(f"| {n} | " + " | ".join(f"{c[:, b - 1].mean():.4f} ± {c[:, b - 1].std(ddof=1):.4f}" for b in budgets)
                     + f" | {reach_txt} | {cpu[n]:.1f} |")
    lines += ["", f"lookups: {exact} answered by the candidate's own class, {nearest} by the nearest recorded class "
                  f"({100 * exact / max(1, exact + nearest):.1f}% exact); replay wall time {time.time() - t0:.0f} s"]
    text = "\n".join(lines)
    print(text)

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "search_quality.md").write_text(
        "# Search quality (replayed over recorded real trials)\n\n"
        "    python benchmarks/search_quality.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]) + "\n\n" + text + "\n")
    with (out_dir / "search_quality_curves.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["strategy", "seed"] + [f"hv_{t + 1}" for t in range(budget)])
        for r in runs:
            w.writerow([r[0], r[1]] + [f"{x:.6f}" for x in r[2]])
    save_plot(curves, out_dir / "search_quality_hv.png", f"{len(oracle.rows)} recorded classes")
    print(f"wrote {out_dir / 'search_quality.md'}, {out_dir / 'search_quality_curves.csv'}, {out_dir / 'search_quality_hv.png'}")


def save_plot(curves: dict, path: Path, note: str = "") -> None:
    """Mean hypervolume against trials per strategy, with a standard-error band."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    any_curve = next(iter(curves.values()))
    seeds, budget = any_curve.shape
    x = np.arange(1, budget + 1)
    for n, c in curves.items():  # mean over seeds, band = standard error of the mean
        m, se = c.mean(0), c.std(0, ddof=1) / math.sqrt(seeds)
        ax.plot(x, m, label=n)
        ax.fill_between(x, m - se, m + se, alpha=0.15)
    if "random" in curves:
        ax.axhline(curves["random"][:, -1].mean(), color="grey", ls=":", lw=1, label=f"random @ {budget}")
    ax.set_xlabel("trials")
    ax.set_ylabel("hypervolume (normalised)")
    ax.set_ylim(bottom=float(min(c[:, min(9, budget - 1)].mean() for c in curves.values())) - 0.02)
    ax.set_title(f"BreastMNIST, MobileNetV2 + pixel prompts ({note}); mean ± s.e. over {seeds} seeds", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@app.command()
def plot(curves_csv: Path = typer.Option(HERE / "results" / "search_quality_curves.csv"),
         out: Path = typer.Option(HERE / "results" / "search_quality_hv.png"),
         note: str = typer.Option("300 recorded classes")) -> None:
    """Redraw the plot from a replay's curves CSV."""
    import numpy as np

    runs: dict[str, list[list[float]]] = {}
    for r in read_rows(curves_csv):
        runs.setdefault(r["strategy"], []).append([float(v) for k, v in r.items() if k.startswith("hv_")])
    save_plot({k: np.array(v) for k, v in runs.items()}, out, note)
    print(f"wrote {out}")

if __name__ == "__main__":
    app()
