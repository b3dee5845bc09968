"""Prompt families at equal training: which kind of prompt is best on which frozen backbone?

    nice -n 19 python benchmarks/prompt_families.py run        # many hours on a busy 2-core CPU; resumable
    python benchmarks/prompt_families.py table                  # rebuild the .md from the .csv

Families (each one a slice of the ``peft`` space): ``pixel`` (pixel prompts: frame or overlay),
``token`` (VPT prompt tokens, no LoRA), ``adapter`` (bottleneck adapters in ViT blocks; 1x1-conv
adapters after CNN stages), ``lora`` (LoRA alone) and ``token+lora``. Backbones, all frozen:
MobileNetV2 and EfficientNet-Lite0 (ImageNet weights from ../shared/weights, 32 px) and ViT-tiny
(28 px, patch 4, **random init**: no pretrained ViT weights are available offline). Token, LoRA
and bottleneck adapters need a ViT; a CNN gets pixel and conv-adapter. Datasets: BreastMNIST
(official splits) and the brain tumour MRI folder (``load_dataset('brain_tumor_mri',
root=../shared/data/folders)``: 4 classes, its own train/test folders, 10 % of train as validation).

For each (dataset, backbone, family): the same ``CONFIGS`` configurations drawn from the family's
slice of the space (seeded, the same for every backbone), each trained with the same budget (3
epochs, batch 32, at most 1,000 training images, one thread, seed 0); the best by validation AUC
is the family's entry, reported with its test AUC and trainable prompt parameters. Every trial is
appended to benchmarks/results/prompt_families.csv at once (keyed by dataset, backbone, family,
candidate, seed: a rerun skips what is there); prompt_families.md is rewritten after each family.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SHARED = REPO.parent / "shared"
RESULTS = REPO / "benchmarks" / "results"
CSV, MD = RESULTS / "prompt_families.csv", RESULTS / "prompt_families.md"
CONFIGS = 4  # configurations per family (the same draws for every backbone and dataset)
SEED = 0
DATASETS = {"breastmnist": SHARED / "data" / "medmnist", "brain_tumor_mri": SHARED / "data" / "folders"}
BACKBONES = {
    "mobilenet_v2": dict(name="torchvision:mobilenet_v2", image_size=32,
                         weights=str(SHARED / "weights" / "mobilenet_v2-b0353104.pth")),
    "efficientnet_lite0": dict(name="tf_efficientnet_lite0", image_size=32,
                               weights=str(SHARED / "weights" / "tf_efficientnet_lite0_imagenet_timm.pth")),
    "vit_tiny_random": dict(name="vit_tiny_patch16_224", image_size=28, patch_size=4),
}
# family -> which decoded peft architectures belong to it (vit: the backbone is a ViT)
FAMILIES = {
    "pixel": lambda a, vit: a["module"] == "pixel",
    "token": lambda a, vit: vit and a["module"] == "token" and a.get("lora_rank", 0) == 0,
    "adapter": lambda a, vit: (a["module"] == "none" and a.get("adapter") == ("bottleneck" if vit else "conv")
                               and a.get("lora_rank", 0) == 0),
    "lora": lambda a, vit: vit and a["module"] == "none" and a.get("adapter") == "none" and a.get("lora_rank", 0) > 0,
    "token+lora": lambda a, vit: vit and a["module"] == "token" and a.get("lora_rank", 0) > 0,
}
FIELDS = ["dataset", "backbone", "family", "candidate", "seed", "status", "val_auc", "test_auc", "val_accuracy",
          "test_accuracy", "worst_class_recall", "prompt_params", "trainable_params", "wall_s", "architecture", "reason"]


def family_candidates(space, family: str, vit: bool, n: int = CONFIGS) -> list:
    """The first ``n`` distinct candidates of a seeded stream of draws that fall in the family."""
    rng, out, seen = random.Random(family), [], set()  # the same stream for every backbone
    for _ in range(20000):
        cand = space.sample(rng)
        if cand.key not in seen and FAMILIES[family](cand.architecture, vit):
            seen.add(cand.key)
            out.append(cand)
            if len(out) == n:
                break
    return out


def done() -> set[tuple[str, ...]]:
    if not CSV.exists():
        return set()
    with CSV.open() as f:
        return {(r["dataset"], r["backbone"], r["family"], r["candidate"], r["seed"]) for r in csv.DictReader(f)}


def append(row: dict) -> None:
    new = not CSV.exists()
    with CSV.open("a", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        if new:
            w.writeheader()
        w.writerow(row)


def run() -> None:
    import json

    import torch

    from promptsearch.backbones import BackboneSpec, build_backbone
    from promptsearch.budget import Budget
    from promptsearch.data import load_dataset
    from promptsearch.space import load_space
    from promptsearch.trial import run_trial

    torch.set_num_threads(1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    space = load_space("peft")
    budget = Budget(epochs=3, batch_size=32, max_train_samples=1000, threads=1, latency_repeats=2)
    for dname, root in DATASETS.items():
        data = load_dataset(dname, root=root)
        for bname, kw in BACKBONES.items():
            spec = BackboneSpec(**kw)
            torch.manual_seed(SEED)  # the random ViT's weights: the same for every trial
            backbone = None
            for family in FAMILIES:
                vit = bname.startswith("vit")
                cands = family_candidates(space, family, vit)
                for cand in cands:
                    key = (dname, bname, family, cand.key, str(SEED))
                    if key in done():
                        continue
                    if backbone is None:
                        backbone = build_backbone(spec)
                    t0 = time.perf_counter()
                    r = run_trial(cand, data, backbone, budget, seed=SEED)
                    m, t = r.metrics or {}, r.test_metrics or {}
                    append({"dataset": dname, "backbone": bname, "family": family, "candidate": cand.key, "seed": SEED,
                            "status": r.status, "val_auc": m.get("auc"), "test_auc": t.get("auc"),
                            "val_accuracy": m.get("accuracy"), "test_accuracy": t.get("accuracy"),
                            "worst_class_recall": m.get("worst_class_recall"), "prompt_params": m.get("prompt_params"),
                            "trainable_params": m.get("trainable_params"), "wall_s": round(time.perf_counter() - t0, 1),
                            "architecture": json.dumps(cand.architecture, sort_keys=True),
                            "reason": (r.reason or "")[:200]})
                    print(f"{dname} {bname} {family} {cand.key}: {r.status} val auc {m.get('auc')}", flush=True)
                if cands:
                    table()


def table() -> None:
    if not CSV.exists():
        return
    with CSV.open() as f:
        rows = [r for r in csv.DictReader(f)]
    lines = ["# Prompt families at equal training", "",
             "`nice -n 19 python benchmarks/prompt_families.py run` — best of "
             f"{CONFIGS} configurations per family (by validation AUC), each trained 3 epochs (batch 32, ≤ 1,000 "
             "training images, seed 0, one thread). MobileNetV2 and EfficientNet-Lite0: ImageNet weights, 32 px; "
             "ViT-tiny: **random init** (no pretrained ViT weights offline), 28 px / patch 4. `n` = finished "
             f"configurations of the {CONFIGS} (fewer: the run has not got there yet).", ""]
    for dname in DATASETS:
        sub = [r for r in rows if r["dataset"] == dname]
        if not sub:
            continue
        lines += [f"## {dname}", "", "| backbone | family | n | best val AUC | its test AUC | its prompt params | mean val AUC |",
                  "|---|---|---|---|---|---|---|"]
        for bname in BACKBONES:
            for family in FAMILIES:
                rs = [r for r in sub if r["backbone"] == bname and r["family"] == family and r["status"] == "completed"]
                failed = sum(1 for r in sub if r["backbone"] == bname and r["family"] == family and r["status"] != "completed")
                if not rs:
                    continue
                best = max(rs, key=lambda r: float(r["val_auc"]))
                mean = sum(float(r["val_auc"]) for r in rs) / len(rs)
                lines.append(f"| {bname} | {family} | {len(rs)}{f' (+{failed} failed)' if failed else ''} | "
                             f"{float(best['val_auc']):.4f} | {float(best['test_auc']):.4f} | "
                             f"{int(float(best['prompt_params'])):,} | {mean:.4f} |")
        lines.append("")
    MD.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["run", "table"])
    args = ap.parse_args()
    run() if args.what == "run" else table()
    table()


if __name__ == "__main__":
    main()
