"""Transfer of locally pretrained ViT backbones (X-ray -> ultrasound): linear probe and VPT on BreastMNIST.

    nice -n 10 python benchmarks/pretrain_transfer.py        # ~30-60 min on a busy 2-core CPU; resumable

Backbones (all frozen, evaluated the same way):

* ``vit random``: ``vit_tiny_patch16_224`` at 28 px / patch 4 with timm's random init (the trial
  seed draws it) — what token prompts get when no weights exist.
* ``vit <mode>``: the same ViT after ``promptsearch pretrain --mode <mode>`` on PneumoniaMNIST
  (chest X-ray), read from ``artifacts/pretrained/<mode>/backbone.safetensors`` (make them with
  the commands in the README; missing ones are skipped).
* ``mobilenet_v2``: the ImageNet MobileNetV2 from ``../shared/weights`` at 64 px (the baseline
  every accuracy claim in this project uses).

Two evaluations on BreastMNIST (ultrasound; official splits 546/78/156), never seen in pretraining:

* ``linear probe``: pooled features of the frozen backbone -> standardised -> logistic regression,
  C in {0.01, 0.1, 1, 10} picked on validation AUC (so the validation figure is optimistic; test
  is clean). Deterministic.
* ``prompt``: ``promptsearch.trial.run_trial`` with one fixed candidate, 5 epochs, batch 32, per
  seed — for ViTs VPT-deep with 10 tokens from ``search_spaces/vpt.yaml``, for MobileNetV2 a
  6-px frame pixel prompt from ``search_spaces/pixel.yaml`` (token prompts need a ViT).

Each finished row is appended to ``benchmarks/data/pretrain_transfer.csv`` at once, keyed by
(backbone, weights sha256, method, seed): an interrupted run resumes; changed weights re-run.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import typer

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from promptsearch.data import Dataset, Split, load_dataset  # noqa: E402
from promptsearch.backbones import BackboneSpec, build_backbone, preprocess  # noqa: E402
from promptsearch.files import file_sha256  # noqa: E402
from promptsearch.space import Candidate, load_space  # noqa: E402
from promptsearch.trial import Budget, run_trial  # noqa: E402

CSV = HERE / "data" / "pretrain_transfer.csv"
DEFAULT_DIR = REPO / "artifacts" / "pretrained"
FIELDS = ["backbone", "method", "seed", "val_auc", "test_auc", "val_accuracy", "test_accuracy", "detail",
          "weights", "weights_sha256", "pretrain_mode", "pretrain_epochs", "pretrain_images", "pretrain_time_s",
          "pretrain_peak_rss_mb", "weights_mb", "wall_time_s"]
VIT = dict(name="vit_tiny_patch16_224", image_size=28, patch_size=4)
MOBILENET = Path(os.environ.get("PROMPTSEARCH_BACKBONE_WEIGHTS", REPO.parent / "shared" / "weights" / "mobilenet_v2-b0353104.pth"))
VPT_ARCH = {"module": "token", "tokens": 10, "depth": "deep", "dropout": 0.0, "init": "xavier", "lr": 0.01}
PIXEL_ARCH = {"module": "pixel", "pixel_prompt": "frame", "frame_width": 6, "fusion": "concat", "init": "zero",
              "lr": 0.01, "components": {"modality": ["ultrasound"]}}
MODES = ("supervised", "mae", "distill")


def candidate(space: str, arch: dict[str, Any]) -> Candidate:
    s = load_space(space)
    return s.candidate(s.encode(arch))


@torch.no_grad()
def pooled(spec: BackboneSpec, split: Split, seed: int = 0) -> np.ndarray:
    torch.manual_seed(seed)  # the random ViT's init
    b = build_backbone(spec)
    model = b.model.eval()
    out = [model(preprocess(split.images[i:i + 256].float() / 255, b.image_size, b.mean, b.std))
           for i in range(0, len(split), 256)]  # (b, F) each
    return torch.cat(out).numpy()


def linear_probe(spec: BackboneSpec, data: Dataset) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    X = {k: pooled(spec, getattr(data, k)) for k in ("train", "val", "test")}
    y = {k: getattr(data, k).labels.numpy() for k in X}
    scaler = StandardScaler().fit(X["train"])
    X = {k: scaler.transform(v) for k, v in X.items()}
    best = None
    for C in (0.01, 0.1, 1.0, 10.0):
        clf = LogisticRegression(C=C, max_iter=5000).fit(X["train"], y["train"])
        val = roc_auc_score(y["val"], clf.predict_proba(X["val"])[:, 1])
        if best is None or val > best[0]:
            best = (val, C, clf)
    val, C, clf = best
    return {"val_auc": val, "test_auc": roc_auc_score(y["test"], clf.predict_proba(X["test"])[:, 1]),
            "val_accuracy": clf.score(X["val"], y["val"]), "test_accuracy": clf.score(X["test"], y["test"]),
            "detail": f"C={C}"}


def prompt_tuning(spec: BackboneSpec, data: Dataset, cand: Candidate, seed: int, epochs: int, threads: int) -> dict[str, Any]:
    r = run_trial(cand, data, spec, Budget(epochs=epochs, batch_size=32, threads=threads), seed=seed)
    if r.status != "completed":
        raise RuntimeError(f"trial failed: {r.reason}")
    return {"val_auc": r.metrics["auc"], "test_auc": r.test_metrics["auc"], "val_accuracy": r.metrics["accuracy"],
            "test_accuracy": r.test_metrics["accuracy"],
            "detail": f"{json.dumps(cand.architecture, sort_keys=True)}; {epochs} epochs; {int(r.metrics['trainable_params'])} trainable"}


def backbones(pretrained_dir: Path) -> list[tuple[str, BackboneSpec, dict[str, Any]]]:
    """(label, spec, facts) for every backbone to evaluate; facts describe a pretrained one."""
    out = [("vit random", BackboneSpec(**VIT), {"pretrain_mode": "none", "weights_sha256": "random-init"})]
    for mode in MODES:
        weights = pretrained_dir / mode / "backbone.safetensors"
        if not weights.exists():
            print(f"skip vit {mode}: {weights} not found (make it with promptsearch pretrain --mode {mode})")
            continue
        doc = json.loads(weights.with_suffix(".json").read_text())
        facts = {"weights": str(weights.relative_to(REPO) if weights.is_relative_to(REPO) else weights),
                 "weights_sha256": doc["sha256"], "pretrain_mode": mode, "pretrain_epochs": doc["epochs"],
                 "pretrain_images": "+".join(f"{d['name']}:{d['train_images']}" for d in doc["data"]),
                 "pretrain_time_s": doc["wall_time_s"], "pretrain_peak_rss_mb": doc["peak_rss_mb"],
                 "weights_mb": round(doc["bytes"] / 2**20, 1)}
        tag = "" if pretrained_dir.resolve() == DEFAULT_DIR else f" ({pretrained_dir.name})"  # e.g. a longer run
        out.append((f"vit {mode}{tag}", BackboneSpec(**VIT, weights=str(weights)), facts))
    out.append(("mobilenet_v2 64px", BackboneSpec("torchvision:mobilenet_v2", image_size=64, weights=str(MOBILENET)),
                {"pretrain_mode": "imagenet", "weights": str(MOBILENET), "weights_sha256": file_sha256(MOBILENET),
                 "weights_mb": round(MOBILENET.stat().st_size / 2**20, 1)}))
    return out


def read_rows() -> list[dict[str, str]]:
    if not CSV.exists():
        return []
    with CSV.open() as f:
        return list(csv.DictReader(f))


def append_row(row: dict[str, Any]) -> None:
    CSV.parent.mkdir(parents=True, exist_ok=True)
    new = not CSV.exists()
    with CSV.open("a", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        if new:
            w.writeheader()
        w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})


def print_table(rows: list[dict[str, str]], labels: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="BreastMNIST AUC from frozen backbones (mean ± sd over seeds; linear probe: C picked on val)")
    for c in ("backbone", "pretraining", "method", "seeds", "val AUC", "test AUC"):
        t.add_column(c, justify="left" if c in ("backbone", "pretraining", "method") else "right")

    def fmt(xs: list[float]) -> str:
        return f"{statistics.mean(xs):.3f}" + (f" ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else "")

    for label in labels:
        for method in ("linear probe", "prompt"):
            mine = [r for r in rows if r["backbone"] == label and r["method"] == method]
            if not mine:
                continue
            r0 = mine[0]
            pre = r0["pretrain_mode"] if r0["pretrain_mode"] in ("none", "imagenet") else \
                f"{r0['pretrain_mode']}, {r0['pretrain_epochs']} ep on {r0['pretrain_images']}, {float(r0['pretrain_time_s']) / 60:.1f} min"
            what = "VPT-deep 10 tok" if method == "prompt" and label.startswith("vit") else \
                ("frame prompt 6 px" if method == "prompt" else method)
            t.add_row(label, pre, what, str(len(mine)), fmt([float(r["val_auc"]) for r in mine]),
                      fmt([float(r["test_auc"]) for r in mine]))
    Console(width=150).print(t)
    print("README (../shared/weights) MobileNetV2 linear probe: 64 px .885/.838, 224 px .911/.931 (val/test); "
          "MedMNIST ResNet-18 from scratch at 28 px: .901 test")


def main(pretrained_dir: Path = typer.Option(DEFAULT_DIR, "--pretrained-dir",
                                             help="Holds <mode>/backbone.safetensors (+ .json) per pretraining mode."),
         seeds: list[int] = typer.Option([0, 1], "--seed", help="Prompt-tuning seeds (repeat)."),
         epochs: int = typer.Option(5, "--epochs", help="Prompt-tuning epochs."),
         threads: int = typer.Option(1, "--threads"),
         data_root: Path = typer.Option(REPO.parent / "shared" / "data" / "medmnist", "--data-root",
                                        envvar="PROMPTSEARCH_DATA_ROOT"),
         table_only: bool = typer.Option(False, "--table-only", help="Print the table from the CSV; run nothing.")) -> None:
    """Evaluate every backbone (skipping rows already in the CSV), then print the table."""
    torch.set_num_threads(threads)
    data = load_dataset("breastmnist", root=data_root)
    found = backbones(pretrained_dir)
    done = {(r["backbone"], r["weights_sha256"], r["method"], r["seed"]) for r in read_rows()}
    if not table_only:
        for label, spec, facts in found:
            cand = candidate("vpt", VPT_ARCH) if label.startswith("vit") else candidate("pixel", PIXEL_ARCH)
            jobs = [("linear probe", 0)] + [("prompt", s) for s in seeds]
            for method, seed in jobs:
                if (label, facts["weights_sha256"], method, str(seed)) in done:
                    continue
                t0 = time.perf_counter()
                res = linear_probe(spec, data) if method == "linear probe" else \
                    prompt_tuning(spec, data, cand, seed, epochs, threads)
                row = {"backbone": label, "method": method, "seed": seed, **facts, **res,
                       "wall_time_s": round(time.perf_counter() - t0, 1)}
                append_row(row)
                print(f"{label:22s} {method:12s} seed {seed}: val {res['val_auc']:.3f} test {res['test_auc']:.3f} "
                      f"({row['wall_time_s']:.0f} s)", flush=True)
    current = {(label, facts["weights_sha256"]) for label, _, facts in found}
    rows = [r for r in read_rows() if (r["backbone"], r["weights_sha256"]) in current]
    print_table(rows, [label for label, _, _ in found])


if __name__ == "__main__":
    typer.run(main)
