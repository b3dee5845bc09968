"""Post-hoc compression of trained prompts: what SVD truncation and int8 cost in bytes and AUC.

    nice -n 19 python benchmarks/compression.py            # trains 6 real trials (resumable), then the table
    python benchmarks/compression.py --table-only          # rebuild the .md from the .csv

No published figure exists for how much accuracy post-hoc compression of *trained visual prompts*
costs, so this measures it. Real trials on BreastMNIST (full train split, 3 epochs, seeds 0 and 1,
one thread each): MobileNetV2 (ImageNet weights, ../shared/weights) at 32 px with an overlay pixel
prompt and with 1x1-conv adapters on its last 4 stages, and a ViT-tiny (28 px, patch 4, **random
init**: no pretrained ViT weights are available offline here) with deep token prompts + LoRA. Each
trained state (prompt + inserts + head) is compressed with every spec (:mod:`promptsearch.compress`:
svd:1/2/4/8, int8, svd:4+int8), rebuilt and evaluated on the full validation and test splits;
bytes are the tensors' payload and the whole safetensors file (header and manifest included).
Also: seconds per explanation (``explain_images``: Grad-CAM, and on the ViT the attention maps).

Trial weights are kept in artifacts/bench_compression/ (an interrupted run retrains only what is
missing); rows go to benchmarks/results/compression.csv, the table to compression.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from promptsearch.backbones import BackboneSpec, build_backbone  # noqa: E402
from promptsearch.budget import Budget  # noqa: E402
from promptsearch.compress import payload_bytes, read_compressed_bytes, write_compressed  # noqa: E402
from promptsearch.data import load_dataset  # noqa: E402
from promptsearch.prompts import build_prompted_model  # noqa: E402
from promptsearch.space import load_space  # noqa: E402
from promptsearch.trial import evaluate, run_trial  # noqa: E402

SHARED = REPO.parent / "shared"
CACHE = REPO / "artifacts" / "bench_compression"
RESULTS = REPO / "benchmarks" / "results"
SPECS = ["none", "svd:1", "svd:2", "svd:4", "svd:8", "int8", "svd:4+int8"]
SEEDS = (0, 1)
BUDGET = Budget(epochs=3, batch_size=32, threads=1, latency_repeats=2)
MNV2 = BackboneSpec("torchvision:mobilenet_v2", image_size=32, weights=str(SHARED / "weights" / "mobilenet_v2-b0353104.pth"))
VIT = BackboneSpec("vit_tiny_patch16_224", image_size=28, patch_size=4)
CONFIGS = {  # name -> (backbone, peft-space choices)
    "mnv2_pixel_overlay": (MNV2, {"module": "pixel", "pixel_prompt": "overlay", "init": "xavier", "lr": 0.01}),
    "mnv2_conv_adapter": (MNV2, {"module": "none", "adapter": "conv", "adapter_reduction": 8, "adapter_blocks": "last_4",
                                 "init": "xavier", "lr": 0.003}),
    "vit_token_lora": (VIT, {"module": "token", "tokens": 10, "depth": "deep", "lora_rank": 8, "lora_targets": "q+v",
                             "lora_blocks": "all", "init": "xavier", "lr": 0.01}),
}
FIELDS = ["config", "seed", "spec", "payload_bytes", "file_bytes", "val_auc", "test_auc", "val_accuracy",
          "test_accuracy", "d_val_auc", "d_test_auc", "max_prob_change"]


def trained(name: str, seed: int, data) -> Path:
    """The trial's weights file, trained once (3 epochs) and kept."""
    out = CACHE / f"{name}_s{seed}.safetensors"
    if out.exists():
        return out
    spec, choices = CONFIGS[name]
    space = load_space("peft")
    cand = space.candidate(space.encode(choices))
    torch.manual_seed(seed)  # the random ViT's initialisation, as load_exported rebuilds it from the seed
    backbone = build_backbone(spec)
    t0 = time.perf_counter()
    result = run_trial(cand, data, backbone, BUDGET, seed=seed, weights_out=out)
    if result.status != "completed":
        raise SystemExit(f"{name} seed {seed} failed: {result.reason}")
    (CACHE / f"{name}_s{seed}.json").write_text(json.dumps(
        {"metrics": result.metrics, "test_metrics": result.test_metrics, "wall_s": time.perf_counter() - t0}))
    print(f"trained {name} seed {seed}: val auc {result.metrics['auc']:.4f} in {time.perf_counter() - t0:.0f}s", flush=True)
    return out


def done_keys(path: Path) -> set[tuple[str, str, str]]:
    if not path.exists():
        return set()
    with path.open() as f:
        return {(r["config"], r["seed"], r["spec"]) for r in csv.DictReader(f)}


def measure(name: str, seed: int, data, csv_path: Path) -> None:
    from safetensors.torch import load_file

    done = done_keys(csv_path)
    if all((name, str(seed), s) in done for s in SPECS):
        return
    spec, choices = CONFIGS[name]
    space = load_space("peft")
    cand = space.candidate(space.encode(choices))
    torch.manual_seed(seed)
    model = build_prompted_model(cand.arch, build_backbone(spec), data.num_outputs).eval()
    state = load_file(str(trained(name, seed, data)))
    x = data.test.images.float() / 255.0

    def run(st):
        model.load_trainable_state_dict(st)
        with torch.no_grad():
            probs = torch.softmax(model(x), -1)
        return evaluate(model, data.val, data.task), evaluate(model, data.test, data.task), probs

    ref_val, ref_test, ref_probs = run(state)
    new = not csv_path.exists()
    with csv_path.open("a", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        if new:
            w.writeheader()
        for s in SPECS:
            if (name, str(seed), s) in done:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "p.safetensors"
                if s == "none":
                    from safetensors.torch import save_file

                    save_file(state, str(path))
                else:
                    write_compressed(path, state, s)
                blob = path.read_bytes()
            back, _ = read_compressed_bytes(blob)
            val, test, probs = run(back)
            w.writerow({"config": name, "seed": seed, "spec": s, "payload_bytes": payload_bytes(blob), "file_bytes": len(blob),
                        "val_auc": round(val["auc"], 5), "test_auc": round(test["auc"], 5),
                        "val_accuracy": round(val["accuracy"], 5), "test_accuracy": round(test["accuracy"], 5),
                        "d_val_auc": round(val["auc"] - ref_val["auc"], 5), "d_test_auc": round(test["auc"] - ref_test["auc"], 5),
                        "max_prob_change": f"{float((probs - ref_probs).abs().max()):.2e}"})
            f.flush()


def explain_timing(data, n: int = 8) -> list[dict]:
    """Median seconds per image of explain_images (maps + PNG overlays), one thread."""
    from promptsearch.explain import explain_images

    rows = []
    for name in ("mnv2_pixel_overlay", "mnv2_conv_adapter", "vit_token_lora"):
        spec, choices = CONFIGS[name]
        space = load_space("peft")
        cand = space.candidate(space.encode(choices))
        torch.manual_seed(0)
        model = build_prompted_model(cand.arch, build_backbone(spec), data.num_outputs).eval()
        from safetensors.torch import load_file

        model.load_trainable_state_dict(load_file(str(trained(name, 0, data))))
        images = [data.test.images[i] for i in range(n + 1)]
        with tempfile.TemporaryDirectory() as tmp:
            explain_images(model, images[:1], tmp, save_arrays=True)  # warm-up
            recs = explain_images(model, images[1:], tmp, save_arrays=True)
        secs = [r["seconds"] for r in recs]
        rows.append({"config": name, "maps": ", ".join(recs[0]["maps"]), "images": n,
                     "median_s": round(statistics.median(secs), 3), "max_s": round(max(secs), 3)})
        print(f"explain {name}: median {statistics.median(secs):.3f}s per image", flush=True)
    (RESULTS / "explain_timing.json").write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def table(csv_path: Path, md_path: Path) -> None:
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    by: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        by.setdefault((r["config"], r["spec"]), []).append(r)
    lines = ["# Post-hoc compression of trained prompts (BreastMNIST)", "",
             "`nice -n 19 python benchmarks/compression.py` — real trials: BreastMNIST full train split (546 images), "
             "3 epochs, seeds 0 and 1, one thread. MobileNetV2 = ImageNet weights, 32 px; ViT-tiny = **random init** "
             "(no pretrained ViT weights offline), 28 px / patch 4. Each trained state (prompt + inserts + head) is "
             "compressed, rebuilt and evaluated on the full validation (78) and test (156) splits. ΔAUC = compressed "
             "minus uncompressed, mean over the seeds (min..max). Bytes: tensor payload / whole safetensors file "
             "(its JSON header, with the names and the compression manifest, adds the rest). `max Δp`: the largest change "
             "of any test image's class probability.", ""]
    for config in CONFIGS:
        base = by.get((config, "none"))
        if not base:
            continue
        lines += [f"## {config}", "", "| spec | payload bytes | file bytes | val AUC | test AUC | Δ val AUC | Δ test AUC | max Δp |",
                  "|---|---|---|---|---|---|---|---|"]
        for s in SPECS:
            rs = by.get((config, s))
            if not rs:
                continue
            mean = lambda k: statistics.fmean(float(r[k]) for r in rs)  # noqa: E731
            rng = lambda k: f"{min(float(r[k]) for r in rs):+.4f}..{max(float(r[k]) for r in rs):+.4f}"  # noqa: E731
            lines.append(f"| {s} | {int(mean('payload_bytes')):,} | {int(mean('file_bytes')):,} | {mean('val_auc'):.4f} | "
                         f"{mean('test_auc'):.4f} | {mean('d_val_auc'):+.4f} ({rng('d_val_auc')}) | "
                         f"{mean('d_test_auc'):+.4f} ({rng('d_test_auc')}) | {max(float(r['max_prob_change']) for r in rs):.2g} |")
        lines.append("")
    timing = RESULTS / "explain_timing.json"
    if timing.exists():
        lines += ["## Seconds per explanation", "",
                  "`explain_images` per image (maps computed and PNG overlays written, 224 px), median of 8 BreastMNIST "
                  "test images after one warm-up, one thread, on this loaded 2-core machine:", "",
                  "| model | maps | median s | max s |", "|---|---|---|---|"]
        for r in json.loads(timing.read_text()):
            lines.append(f"| {r['config']} | {r['maps']} | {r['median_s']} | {r['max_s']} |")
        lines.append("")
    md_path.write_text("\n".join(lines) + "\n")
    print(md_path.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    csv_path, md_path = RESULTS / "compression.csv", RESULTS / "compression.md"
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        torch.set_num_threads(1)
        CACHE.mkdir(parents=True, exist_ok=True)
        data = load_dataset("breastmnist", root=SHARED / "data" / "medmnist")
        for name in CONFIGS:
            for seed in SEEDS:
                trained(name, seed, data)
                measure(name, seed, data, csv_path)
                table(csv_path, md_path)
        explain_timing(data)
    table(csv_path, md_path)


if __name__ == "__main__":
    main()
