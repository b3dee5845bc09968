"""Trial-function overhead: ``run_trial``'s time per training image against a bare PyTorch loop.

    PROMPTSEARCH_DATA_ROOT=../shared/data/medmnist python benchmarks/trial_overhead.py --epochs 3

Both train the same prompted model (same candidate, backbone, data, batch size, optimizer) for the
same epochs, with the threads a job's trial gets: one per CPU it reserves (``--cpus``, default 1 as
in the default job; ``--threads`` overrides). The bare loop does only forward/backward/step; the
trial adds per-epoch validation, the latency probe, the final test evaluation and bookkeeping.
Prints both and the ratio (aim <= 1.15).
"""

from __future__ import annotations

import argparse
import time

import torch

from promptsearch.data import load_dataset
from promptsearch.backbones import BackboneSpec, build_backbone
from promptsearch.prompts import build_prompted_model
from promptsearch.space import load_space
from promptsearch.trial import Budget, run_trial

CONFIGS = {
    "mobilenet_v2 pixel 64px": (BackboneSpec("torchvision:mobilenet_v2", image_size=64), "pixel",
                                {"module": "pixel", "pixel_prompt": "frame", "frame_width": 6, "fusion": "gate",
                                 "init": "zero", "lr": 0.01, "components": {"modality": ["ultrasound", "xray"]}}),
    "vit_tiny token 28px/4": (BackboneSpec("vit_tiny_patch16_224", image_size=28, patch_size=4), "medical",
                              {"module": "token", "tokens": 8, "depth": "shallow", "placement": "prepend",
                               "fusion": "concat", "init": "xavier", "lr": 0.01,
                               "components": {"anatomical": ["lung"]}}),
}


def bare_loop(model, data, epochs: int, batch_size: int, seed: int) -> float:
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=model.arch.lr)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(data.train), generator=gen)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            x = data.train.images[idx].float() / 255.0
            loss = torch.nn.functional.cross_entropy(model(x), data.train.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="breastmnist")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--cpus", type=float, default=1.0, help="CPUs a trial reserves (the job's resources.cpu)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: one per reserved CPU)")
    ap.add_argument("--weights", default="../shared/weights/mobilenet_v2-b0353104.pth")
    ap.add_argument("--repeats", type=int, default=2, help="best of N for each side")
    args = ap.parse_args()
    args.threads = args.threads or max(1, int(args.cpus))  # what dispatch.fit.trial_payload gives a trial
    torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset, root=args.data_root)
    n_images = args.epochs * len(data.train)
    print(f"{data!r}; {args.epochs} epochs = {n_images} training images; {args.threads} threads")
    print(f"{'config':28s} {'bare ms/img':>12s} {'trial ms/img':>13s} {'ratio':>7s}")
    for label, (spec, space_name, arch) in CONFIGS.items():
        if spec.name.startswith("torchvision:"):
            spec = BackboneSpec(spec.name, image_size=spec.image_size, weights=args.weights)
        space = load_space(space_name)
        cand = space.candidate(space.encode(arch))
        backbone = build_backbone(spec)
        budget = Budget(epochs=args.epochs, threads=args.threads, device="cpu")  # where the bare loop runs
        bare, trial = [], []
        for _ in range(args.repeats):
            torch.manual_seed(0)
            bare.append(bare_loop(build_prompted_model(cand.arch, backbone, data.num_outputs), data,
                                  args.epochs, budget.batch_size, 0))
            t0 = time.perf_counter()
            r = run_trial(cand, data, backbone, budget, seed=0)
            trial.append(time.perf_counter() - t0)
            assert r.status == "completed", r.reason
        b, t = min(bare) / n_images * 1000, min(trial) / n_images * 1000
        print(f"{label:28s} {b:12.2f} {t:13.2f} {t / b:7.3f}")


if __name__ == "__main__":
    main()
