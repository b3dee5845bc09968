"""Library transfer: do prompt components learned on *other* medical datasets help a new one?

    nice -n 15 python benchmarks/library_transfer.py run            # hours on a 2-core CPU; resumable, incremental
    python benchmarks/library_transfer.py table                      # rebuild the .md from the .csv

Leave-one-dataset-out. For each target and backbone a component library is built (pixel blocks,
``promptsearch.library.build_library``) from every catalogue dataset except the target and
anything of the same source (``catalog.same_source``: one source, one folder or identical image
bytes; so BreastMNIST's library never holds BUSI, PneumoniaMNIST's never the Kermany X-rays).
The job-time leakage guard (``library.guard.check_leak``) is run on every pair as a check.

Then, on the target, with the *same* component choice (the target's catalogue tags: its anatomy,
its modality, its classes' pathology tags, and the generic ``medical`` block; an overlay prompt,
gate fusion), three conditions:

* ``scratch``: every block freshly initialised (what components were before libraries);
* ``library frozen``: blocks the library holds start from it and stay fixed (the rest from scratch);
* ``library finetuned``: they start from it and train.

each trained for 1, 3 and 10 epochs (separate trials, a cosine schedule over each budget) with 3
seeds: validation and test AUC. And two 30-trial random searches over one space (pixel prompt,
frame width, fusion, init, lr, components, source, tuning) at equal training compute (same trials,
same budget): ``source free`` and ``scratch only`` (source pinned to scratch); their hypervolume
over (AUC, prompt parameters) and over (AUC, worst-class recall, prompt parameters), and how many
members of the (AUC, parameters) front take library blocks. A frozen library block counts as
``library_params``, not ``prompt_params`` (it is shared by every task); best val AUC does not see that.

Every finished trial is appended at once to ``benchmarks/results/library_transfer.csv`` (keyed, so
an interrupted run resumes where it stopped); ``library_transfer.md`` is rewritten after each
target. Library builds run in a child process (their time and peak memory are its own) and resume
from their checkpoints. Libraries live in ``artifacts/library_transfer/``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import typer

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

SHARED = REPO.parent / "shared"
MEDMNIST = SHARED / "data" / "medmnist"
FOLDERS = SHARED / "data" / "folders"
RESULTS = HERE / "results"
CSV = RESULTS / "library_transfer.csv"
MD = RESULTS / "library_transfer.md"
LIBS = REPO / "artifacts" / "library_transfer"

BACKBONES = {
    "mnv2": ("torchvision:mobilenet_v2", SHARED / "weights" / "mobilenet_v2-b0353104.pth"),
    "effnet": ("tf_efficientnet_lite0", SHARED / "weights" / "tf_efficientnet_lite0_imagenet_timm.pth"),
}
# retinamnist <- eye_fundus (same anatomy + modality, another source: the clean case); eye_fundus <- retinamnist;
# breastmnist and brain_tumor_mri share only pathology tags (and `medical`) with their libraries
TARGETS = ["retinamnist", "eye_fundus", "breastmnist", "brain_tumor_mri"]
SOURCES = ["breastmnist", "pneumoniamnist", "retinamnist", "brain_tumor_mri", "kidney_ct", "busi_breast_us",
           "chest_xray_pneumonia", "eye_fundus", "skin_isic"]
IMAGE_SIZE = 32
BUILD = dict(epochs=5, batch_size=32, lr=0.01, max_train_samples=300, max_eval_samples=200, fusion="gate",
             init="xavier", generic=True, seed=0)  # per source: 300 training images
FIXED_EPOCHS = (1, 3, 10)
FIXED_TRAIN = 500  # training images of the target per fixed trial
SEARCH_TRIALS, SEARCH_EPOCHS, SEARCH_TRAIN = 30, 3, 300
SEEDS = (0, 1, 2)
FIELDS = ["phase", "key", "target", "backbone", "condition", "seed", "epochs", "trial", "val_auc", "test_auc",
          "val_worst_class_recall", "prompt_params", "library_params", "source", "tuning", "architecture", "status",
          "reason", "wall_time_s", "library_version", "build_s", "build_peak_rss_mb", "finished_at"]

app = typer.Typer(add_completion=False, help=__doc__.split("\n")[0])


# --- the results file ---------------------------------------------------------------------------------
def read_rows() -> list[dict[str, str]]:
    if not CSV.exists():
        return []
    with open(CSV, newline="") as f:
        return list(csv.DictReader(f))


def append_row(row: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    new = not CSV.exists()
    with open(CSV, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow({**row, "finished_at": time.strftime("%Y-%m-%d %H:%M:%S")})
        f.flush()
        os.fsync(f.fileno())


# --- libraries -----------------------------------------------------------------------------------------
def library_sources(target: str) -> list[str]:
    from promptsearch.catalog import get_entry, same_source

    t = get_entry(target, FOLDERS)
    return [s for s in SOURCES if not same_source(get_entry(s, FOLDERS), t, FOLDERS)]


BUILD_CHILD = """
import json, sys, time, torch
torch.set_num_threads(1)
from promptsearch.library import BuildConfig, build_library
from promptsearch.library.build import peak_rss_mb
args = json.loads(sys.argv[1])
t0 = time.perf_counter()
cfg = BuildConfig.make(**args["config"])
r = build_library(cfg, args["out"], data_root=args["data_root"], folders_root=args["folders_root"], threads=1)
print(json.dumps({"version": r.version, "train_s": r.wall_time_s, "wall_s": time.perf_counter() - t0,
                  "peak_rss_mb": peak_rss_mb(), "status": r.status}))
"""


def ensure_library(target: str, bb: str, done: dict[str, dict]) -> tuple[Path, dict[str, Any]]:
    name, weights = BACKBONES[bb]
    out = LIBS / f"{bb}-{IMAGE_SIZE}-without-{target}"
    key = f"library|{bb}|{target}"
    if key in done and (out / "library.json").is_file():
        return out, done[key]
    config = {"datasets": library_sources(target), "backbone": name, "backbone_weights": str(weights),
              "image_size": IMAGE_SIZE, **BUILD}
    print(f"[{time.strftime('%H:%M:%S')}] building library {out.name} from {config['datasets']}", flush=True)
    proc = subprocess.run([sys.executable, "-c", BUILD_CHILD, json.dumps({"config": config, "out": str(out),
                          "data_root": str(MEDMNIST), "folders_root": str(FOLDERS)})],
                          capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"library build failed:\n{proc.stderr[-3000:]}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    row = {"phase": "library", "key": key, "target": target, "backbone": bb, "condition": "+".join(config["datasets"]),
           "epochs": BUILD["epochs"], "library_version": info["version"], "build_s": round(info["wall_s"], 1),
           "build_peak_rss_mb": round(info["peak_rss_mb"], 1), "wall_time_s": round(info["train_s"], 1),
           "status": "completed"}
    append_row(row)
    return out, row


# --- the target's spaces ------------------------------------------------------------------------------
def target_space(target: str, library: Path, search: bool):
    """The fixed comparison's space (one candidate family) or the search space, bound to ``library``."""
    import yaml

    from promptsearch.catalog import get_entry
    from promptsearch.library import GENERIC, bind_library, open_library
    from promptsearch.space import parse_space

    e = get_entry(target, FOLDERS)
    lib = open_library(library)
    groups = {"anatomical": [e.anatomy], "modality": [e.modality], "pathological": e.tags(), "generic": [GENERIC]}
    names = [c for g in groups.values() for c in g]
    scratch = [c for c in names if c not in lib.blocks]
    decisions: dict[str, Any] = {"module": {"choices": ["pixel"]}}
    if search:
        decisions.update({
            "pixel_prompt": {"choices": ["frame", "overlay"]},
            "frame_width": {"choices": [2, 4, 6], "when": {"pixel_prompt": ["frame"]}},
            "fusion": {"choices": ["concat", "attention", "gate"]},
            "init": {"choices": ["xavier", "zero"]},
            "lr": {"choices": [0.003, 0.01, 0.03]},
            "source": {"choices": ["scratch", "library"]},
            "tuning": {"choices": ["finetuned", "frozen"], "when": {"source": ["library"]}}})
    else:
        decisions.update({"pixel_prompt": {"choices": ["overlay"]}, "fusion": {"choices": ["gate"]},
                          "source": {"choices": ["scratch", "library"]},
                          "tuning": {"choices": ["finetuned", "frozen"], "when": {"source": ["library"]}}})
    doc = {"name": f"transfer-{target}{'-search' if search else ''}", "components": groups, "scratch": scratch,
           "equivalence": ["scratch_components"], "min_components": 1, "decisions": decisions}
    return bind_library(parse_space(yaml.safe_dump(doc, sort_keys=False), f"<{target}>"), library), names, scratch


def load_target(target: str):
    from promptsearch.catalog import get_entry, load_entry

    e = get_entry(target, FOLDERS)
    return load_entry(e, MEDMNIST if e.kind == "medmnist" else FOLDERS)


# --- runs --------------------------------------------------------------------------------------------
def _trial_row(result, cand, **fields) -> dict[str, Any]:
    m, arch = result.metrics, cand.architecture
    return {**fields, "val_auc": m.get("auc"), "test_auc": result.test_metrics.get("auc"),
            "val_worst_class_recall": m.get("worst_class_recall"), "prompt_params": m.get("prompt_params"),
            "library_params": m.get("library_params", 0.0), "source": arch.get("source", "scratch"),
            "tuning": arch.get("tuning", ""), "architecture": json.dumps(arch, sort_keys=True),
            "status": result.status, "reason": (result.reason or "")[:300], "wall_time_s": round(result.wall_time_s, 2)}


def run_fixed(target: str, bb: str, library: Path, lib_row: dict, data, done: set[str]) -> None:
    from promptsearch.backbones import BackboneSpec
    from promptsearch.budget import Budget
    from promptsearch.trial import run_trial

    space, names, scratch = target_space(target, library, search=False)
    name, weights = BACKBONES[bb]
    spec = BackboneSpec(name, image_size=IMAGE_SIZE, weights=str(weights))
    comps = {g: list(v) for g, v in space.spec.components.items()}
    conditions = {"scratch": {"source": "scratch"}, "library frozen": {"source": "library", "tuning": "frozen"},
                  "library finetuned": {"source": "library", "tuning": "finetuned"}}
    for seed in SEEDS:
        for epochs in FIXED_EPOCHS:
            for cond, arch in conditions.items():
                key = f"fixed|{bb}|{target}|{cond}|{seed}|{epochs}"
                if key in done:
                    continue
                cand = space.candidate(space.encode({"module": "pixel", "pixel_prompt": "overlay", "fusion": "gate",
                                                     **arch, "components": comps}))
                budget = Budget(epochs=epochs, batch_size=32, max_train_samples=FIXED_TRAIN, latency_repeats=2, threads=1)
                result = run_trial(cand, data, spec, budget, seed=seed)
                append_row(_trial_row(result, cand, phase="fixed", key=key, target=target, backbone=bb, condition=cond,
                                      seed=seed, epochs=epochs, library_version=lib_row.get("library_version")))
                done.add(key)
                print(f"[{time.strftime('%H:%M:%S')}] {key}: val {result.metrics.get('auc', float('nan')):.3f} "
                      f"test {result.test_metrics.get('auc', float('nan')):.3f} ({result.wall_time_s:.0f} s)", flush=True)


def run_search(target: str, bb: str, library: Path, lib_row: dict, data, rows: list[dict]) -> None:
    from promptsearch.backbones import BackboneSpec
    from promptsearch.budget import Budget
    from promptsearch.results import TrialResult
    from promptsearch.strategies import make_strategy
    from promptsearch.trial import run_trial

    space, _, _ = target_space(target, library, search=True)
    name, weights = BACKBONES[bb]
    spec = BackboneSpec(name, image_size=IMAGE_SIZE, weights=str(weights))
    for mode, sp in (("source free", space), ("scratch only", space.fix(source="scratch"))):
        recorded = {r["key"]: r for r in rows if r["phase"] == "search"}
        strategy = make_strategy("random", sp, ["auc", "worst_class_recall", "prompt_params"], seed=0)
        for i in range(SEARCH_TRIALS):
            cand = strategy.ask()
            key = f"search|{bb}|{target}|{mode}|{i}|{cand.key}"
            if key in recorded:  # replay the recorded result: the same asks follow
                r = recorded[key]
                metrics = {"auc": float(r["val_auc"] or "nan"), "worst_class_recall": float(r["val_worst_class_recall"] or "nan"),
                           "prompt_params": float(r["prompt_params"] or "nan")}
                strategy.tell(cand.key, TrialResult(candidate=cand.to_json(), status=r["status"], metrics=metrics))
                continue
            budget = Budget(epochs=SEARCH_EPOCHS, batch_size=32, max_train_samples=SEARCH_TRAIN, latency_repeats=2, threads=1)
            result = run_trial(cand, data, spec, budget, seed=0)
            strategy.tell(cand.key, result)
            row = _trial_row(result, cand, phase="search", key=key, target=target, backbone=bb, condition=mode, seed=0,
                             epochs=SEARCH_EPOCHS, trial=i, library_version=lib_row.get("library_version"))
            append_row(row)
            rows.append({k: ("" if v is None else str(v)) for k, v in row.items()})
            print(f"[{time.strftime('%H:%M:%S')}] {key}: {result.status} val {result.metrics.get('auc', float('nan')):.3f}"
                  f" source {row['source']} {row['tuning']}", flush=True)


# --- tables ----------------------------------------------------------------------------------------
def _f(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def _ms(vals: list[float]) -> str:
    vals = [v for v in vals if math.isfinite(v)]
    if not vals:
        return "—"
    return f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}" if len(vals) > 1 else f"{vals[0]:.3f}"


def write_table(rows: list[dict[str, str]] | None = None) -> None:
    from promptsearch.objectives import hypervolume, parse_objectives, pareto_front
    from promptsearch.results import TrialResult

    rows = read_rows() if rows is None else rows
    out = ["# Library transfer (leave one dataset out, pixel prompts, 32 px)", "",
           "Made by `benchmarks/library_transfer.py` (see its docstring for the protocol); rows finish incrementally,",
           "so a table may be partial. Means ± sd over the seeds that finished (n: seeds at 10 epochs).", "",
           "What each library holds of its target: retinamnist's has eye + fundus from eye_fundus (another source:",
           "the clean transfer case) and eye_fundus's has them from retinamnist (28 px images); breastmnist's has",
           "neither breast nor ultrasound (BUSI, its source, is left out) and brain_tumor_mri's has neither brain nor",
           "mri: those two share only pathology tags (tumor, normal) and the generic `medical` block with theirs.",
           "Components without a block start from scratch in every condition.", ""]
    libs = [r for r in rows if r["phase"] == "library"]
    if libs:
        out += ["## Library builds", "", "| backbone | without | sources | version | epochs | train s | wall s | peak RSS MB |",
                "|---|---|---|---|---|---|---|---|"]
        for r in libs:
            out.append(f"| {r['backbone']} | {r['target']} | {r['condition'].replace('+', ', ')} | {r['library_version']} | "
                       f"{r['epochs']} | {r['wall_time_s']} | {r['build_s']} | {r['build_peak_rss_mb']} |")
        out.append("")
    fixed = [r for r in rows if r["phase"] == "fixed"]
    if fixed:
        out += ["## Same components: scratch vs library (val / test AUC)", "",
                "| backbone | target | condition | val@1 | val@3 | val@10 | test@1 | test@3 | test@10 | n | "
                "library reaches scratch's val@10 by |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        keys = sorted({(r["backbone"], r["target"]) for r in fixed}, key=lambda k: (k[0] != "mnv2", TARGETS.index(k[1])
                                                                                  if k[1] in TARGETS else 99))
        for bb, tgt in keys:
            sub = [r for r in fixed if r["backbone"] == bb and r["target"] == tgt]
            by = lambda c, e, m: [_f(r[m]) for r in sub if r["condition"] == c and int(r["epochs"]) == e]  # noqa: E731
            goal = [v for v in by("scratch", 10, "val_auc") if math.isfinite(v)]
            goal_m = statistics.mean(goal) if goal else float("nan")
            for cond in ("scratch", "library frozen", "library finetuned"):
                n = len(by(cond, 10, "val_auc")) or len(by(cond, 1, "val_auc"))
                reach = ""
                if cond != "scratch" and math.isfinite(goal_m):
                    hit = [e for e in FIXED_EPOCHS if by(cond, e, "val_auc") and statistics.mean(by(cond, e, "val_auc")) >= goal_m]
                    reach = f"{hit[0]} epoch(s)" if hit else "not within 10"
                out.append(f"| {bb} | {tgt} | {cond} | " + " | ".join(_ms(by(cond, e, "val_auc")) for e in FIXED_EPOCHS)
                           + " | " + " | ".join(_ms(by(cond, e, "test_auc")) for e in FIXED_EPOCHS) + f" | {n} | {reach} |")
        out.append("")
    search = [r for r in rows if r["phase"] == "search"]
    if search:
        two = parse_objectives(["auc", "prompt_params"])
        three = parse_objectives(["auc", "worst_class_recall", "prompt_params"])
        out += ["## 30-trial random search: source free vs scratch only (equal trials and budget)", "",
                "HV: normalised hypervolume (the project's bounds: AUC linear on [0, 1], parameters log on [10, 1e7]).",
                "Worst-class recall is 0 for most short RetinaMNIST trials (5 ordinal classes), so the 3-objective HV",
                "is 0 there; the (AUC, parameters) HV and its front are the comparable figures. `params + library`",
                "counts a frozen library block as the task's own parameters (as if the library were not shared).", "",
                "| backbone | target | search | trials | library trials | HV (auc, params) | HV (auc, params + library) | "
                "HV (auc, wcr, params) | best val AUC | its test AUC | front (auc, params) | of which library |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for bb, tgt, mode in sorted({(r["backbone"], r["target"], r["condition"]) for r in search}):
            sub = [r for r in search if r["backbone"] == bb and r["target"] == tgt and r["condition"] == mode]
            res = [TrialResult(candidate={}, status=r["status"] if r["status"] in ("completed", "failed") else "failed",
                               metrics={k: _f(r[c]) for k, c in (("auc", "val_auc"), ("worst_class_recall",
                                        "val_worst_class_recall"), ("prompt_params", "prompt_params"))
                                        if math.isfinite(_f(r[c]))}) for r in sub]
            counted = [TrialResult(candidate={}, status=x.status, metrics={
                **x.metrics, "prompt_params": x.metrics.get("prompt_params", math.nan) + (_f(r["library_params"]) or 0.0)})
                if x.status == "completed" else x for x, r in zip(res, sub)]  # frozen library blocks counted as the task's
            ok = [i for i, r in enumerate(sub) if r["status"] == "completed"]
            front = pareto_front(res, two)
            lib_on_front = sum(1 for i in front if sub[i]["source"] == "library")
            n_lib = sum(1 for r in sub if r["source"] == "library")
            best = max(ok, key=lambda i: _f(sub[i]["val_auc"])) if ok else None
            out.append(f"| {bb} | {tgt} | {mode} | {len(sub)} | {n_lib} | {hypervolume(res, two):.4f} | "
                       f"{hypervolume(counted, two):.4f} | {hypervolume(res, three):.4f} | {_f(sub[best]['val_auc']):.3f} | {_f(sub[best]['test_auc']):.3f} | "
                       f"{len(front)} | {lib_on_front} |" if best is not None else
                       f"| {bb} | {tgt} | {mode} | {len(sub)} | {n_lib} | — | — | — | — | — | — | — |")
        out.append("")
    RESULTS.mkdir(parents=True, exist_ok=True)
    MD.write_text("\n".join(out) + "\n")


@app.command()
def run(targets: list[str] = typer.Option(TARGETS, "--target"), backbones: list[str] = typer.Option(list(BACKBONES), "--backbone"),
        phases: list[str] = typer.Option(["fixed", "search"], "--phase")) -> None:
    """Run (or resume) the benchmark: per backbone and target, the fixed comparison, then the searches."""
    import torch

    torch.set_num_threads(1)
    from promptsearch.library.guard import check_leak
    from promptsearch.library import read_manifest

    for bb in backbones:
        for target in targets:
            for phase in phases:
                rows = read_rows()
                done = {r["key"] for r in rows}
                libs = {r["key"]: r for r in rows if r["phase"] == "library"}
                library, lib_row = ensure_library(target, bb, libs)
                m = read_manifest(library)
                check_leak(m, target, FOLDERS)  # the job-time guard agrees: no source of the target inside
                data = load_target(target)
                if phase == "fixed":
                    run_fixed(target, bb, library, lib_row, data, done)
                else:
                    run_search(target, bb, library, lib_row, data, rows)
                write_table()


@app.command()
def table() -> None:
    """Rewrite library_transfer.md from the CSV."""
    write_table()
    print(MD.read_text())


if __name__ == "__main__":
    app()
