"""One trial: train a candidate's prompts (and head) on a frozen backbone, then evaluate it.

    promptsearch trial --space pixel --dataset breastmnist --data-root ../shared/data/medmnist \
        --backbone torchvision:mobilenet_v2 --backbone-weights ../shared/weights/mobilenet_v2-b0353104.pth --seed 0

:func:`run_trial` is a pure function of (candidate, dataset, backbone, budget, seed): it never
raises for a bad candidate or diverging training; it returns a ``TrialResult`` with
``status="failed"`` and the reason. Selection metrics come from the validation split; the test
split is evaluated once at the end and stored apart (``test_metrics``), never used to select.

With ``source: library`` the candidate's components start from the blocks of the space's bound
library (:func:`promptsearch.library.trial_library`, checked against its sha256); with a job's
``library_versions`` (weight sharing) from ``library_version`` of them, and a completed trial writes
its fine-tuned blocks back as a child version (:meth:`~promptsearch.library.LibraryVersions.write_back`).
The library record (path, version, sha256, components, the version started from and written) goes
into the saved weights' metadata.
"""

from __future__ import annotations

import json
import math
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .budget import Budget
from .data import Dataset, Split
from .losses import loss_fn
from .metrics import classification_metrics
from .results import TrialResult
from .threads import torch_threads
from .compress import file_bytes
from .version import BUNDLE_FORMAT
from .backbones import Backbone, BackboneSpec, build_backbone
from .prompts import IncompatibleCandidate, PromptedModel, build_prompted_model
from .library import trial_library, write_back
from .space import Candidate

class TrialFailed(RuntimeError):
    """Raised inside a trial to end it as failed with a reason (e.g. NaN loss)."""


EpochCallback = Callable[[int, dict[str, float]], None]


def _batches(split: Split, batch_size: int, generator: torch.Generator | None, device: torch.device | None = None):
    order = torch.randperm(len(split), generator=generator) if generator is not None else torch.arange(len(split))
    for i in range(0, len(split), batch_size):
        idx = order[i:i + batch_size]
        x, y = split.images[idx], split.labels[idx]
        if device is not None and device.type != "cpu":
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        yield x.float().div_(255.0), y  # (B, C, H, W) in [0, 1]


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def evaluate(model: PromptedModel, split: Split, task: str, batch_size: int = 256) -> dict[str, float]:
    """Validation/test metrics of a model on a split (MedMNIST AUC, accuracy, worst-class recall)."""
    model.eval()
    scores, labels = [], []
    for x, y in _batches(split, batch_size, None, _device(model)):
        logits = model(x)
        scores.append(torch.sigmoid(logits) if task == "multi-label" else torch.softmax(logits, -1))
        labels.append(y)
    s = torch.cat(scores).float().cpu().numpy()
    if not np.isfinite(s).all():
        raise TrialFailed("non-finite outputs at evaluation")
    return classification_metrics(task, torch.cat(labels).cpu().numpy(), s)


@torch.no_grad()
def latency_ms(model: PromptedModel, sample: torch.Tensor, repeats: int) -> float:
    """Median wall time of a batch-1 forward pass, in milliseconds (after two warm-up passes)."""
    model.eval()
    device = _device(model)
    x = sample[:1].to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(2):
        model(x)
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        model(x)
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def train_model(model: PromptedModel, data: Dataset, budget: Budget, seed: int,
                on_epoch: EpochCallback | None = None, train: Split | None = None,
                val: Split | None = None) -> tuple[list[dict[str, float]], int]:
    """AdamW on the trainable parameters with a cosine schedule; returns (history, steps)."""
    train = train or data.train
    val = val or data.val
    params = model.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=model.arch.lr, weight_decay=model.arch.weight_decay)
    steps_per_epoch = math.ceil(len(train) / budget.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=budget.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)
    history, steps = [], 0
    for epoch in range(1, budget.epochs + 1):
        model.train()
        total, n = 0.0, 0
        for x, y in _batches(train, budget.batch_size, gen, _device(model)):
            loss = loss_fn(data.task, model(x), y)
            value = loss.item()  # one device sync a step
            if not math.isfinite(value):
                raise TrialFailed(f"non-finite loss ({value}) at epoch {epoch}, step {steps + 1}")
            if value > budget.diverge_loss:
                raise TrialFailed(f"diverged: loss {value:.3g} at epoch {epoch}, step {steps + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += value * len(y)
            n += len(y)
            steps += 1
        row = {"epoch": float(epoch), "train_loss": total / max(n, 1)}
        row.update({f"val_{k}": v for k, v in evaluate(model, val, data.task, budget.eval_batch_size).items()})
        history.append(row)
        if on_epoch is not None:
            on_epoch(epoch, row)
    return history, steps


RungCallback = Callable[[int, dict[str, float], TrialResult], None]


def run_trial(candidate: Candidate, data: Dataset, backbone: BackboneSpec | Backbone, budget: Budget | None = None,
              seed: int = 0, on_epoch: EpochCallback | None = None, weights_out: str | Path | None = None,
              library_versions: str | Path | None = None, library_version: str | None = None,
              rungs: Sequence[int] = (), on_rung: RungCallback | None = None) -> TrialResult:
    """Train and evaluate one candidate; never raises for the candidate's own failures.
    ``library_versions``/``library_version``: weight sharing (see the module docstring).

    ``rungs`` (epochs below ``budget.epochs``) with ``on_rung``: at each rung epoch the trial is
    evaluated as if it ended there — a ``stopped`` result with that epoch's validation metrics, its
    costs, its test metrics, and its weights written to ``weights_out`` — and ``on_rung(epoch, row,
    result)`` is called instead of ``on_epoch``; the caller (the search job's scheduler) decides
    whether training goes on. The final result is the full budget's, as without rungs."""
    budget = budget or Budget()
    t0 = time.perf_counter()
    history: list[dict[str, float]] = []  # filled once training ends: a failed result keeps it
    with torch_threads(budget.threads):
        try:
            return _train_and_evaluate(candidate, data, backbone, budget, seed, on_epoch, weights_out, t0, history,
                                       library_versions, library_version, rungs, on_rung)
        except (TrialFailed, IncompatibleCandidate) as e:
            reason = f"{type(e).__name__}: {e}"
        except Exception as e:  # a trial must never take its caller down
            reason = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=6)}"
    n_train = len(data.train.subset(budget.max_train_samples, seed)) if history else 0
    return TrialResult.failed(candidate, reason, history=history, epochs=len(history), wall_time_s=time.perf_counter() - t0,
                              seed=seed, image_passes=len(history) * n_train)


def _train_and_evaluate(candidate: Candidate, data: Dataset, backbone: BackboneSpec | Backbone, budget: Budget,
                        seed: int, on_epoch: EpochCallback | None, weights_out: str | Path | None, t0: float,
                        history: list[dict[str, float]], library_versions: str | Path | None = None,
                        library_version: str | None = None, rungs: Sequence[int] = (),
                        on_rung: RungCallback | None = None) -> TrialResult:
    torch.manual_seed(seed)  # prompt and head initialisation (and a random-init backbone's, as load_exported redoes)
    built = backbone if isinstance(backbone, Backbone) else build_backbone(backbone)
    lib = trial_library(candidate, backbone, built.image_size, library_versions, library_version)  # draws nothing
    device = torch.device(budget.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = build_prompted_model(candidate.arch, built, data.num_outputs,
                                 library=lib.blocks if lib is not None else None).to(device)
    train = data.train.subset(budget.max_train_samples, seed)
    val = data.val.subset(budget.max_eval_samples, 0)
    stops = {int(r) for r in rungs if 1 <= int(r) < budget.epochs} if on_rung is not None else set()
    seen: list[dict[str, float]] = []  # the rows so far (train_model returns them at the end)

    def epoch_hook(epoch: int, row: dict[str, float]) -> None:
        seen.append(row)
        if epoch not in stops:
            if on_epoch is not None:
                on_epoch(epoch, row)
            return
        steps = epoch * math.ceil(len(train) / budget.batch_size)
        result = _result(model, candidate, data, budget, seed, list(seen), steps, len(train), lib, weights_out, t0,
                         rung=epoch)
        on_rung(epoch, row, result)

    rows, steps = train_model(model, data, budget, seed, epoch_hook if (on_epoch or stops) else None, train, val)
    history.extend(rows)
    return _result(model, candidate, data, budget, seed, history, steps, len(train), lib, weights_out, t0)


def _result(model: PromptedModel, candidate: Candidate, data: Dataset, budget: Budget, seed: int,
            history: list[dict[str, float]], steps: int, n_train: int, lib: Any, weights_out: str | Path | None,
            t0: float, rung: int | None = None) -> TrialResult:
    """The trial's result after ``history`` (its last row's validation metrics, its costs, the test
    split, the weights written): ``completed``, or ``stopped`` at ``rung`` (no library write-back:
    a stopped trial's blocks are not the full budget's)."""
    final = {k.removeprefix("val_"): v for k, v in history[-1].items() if k.startswith("val_")}
    final.update({k: float(v) for k, v in model.cost().items()})
    # the stored size of what an export writes (prompts.safetensors, same metadata): the prompt_bytes objective
    final["prompt_bytes"] = float(file_bytes(model.trainable_state_dict(), budget.compress,
                                             {"format": BUNDLE_FORMAT, "candidate": candidate.key}))
    final["latency_ms"] = latency_ms(model, data.val.images[:1].float() / 255.0, budget.latency_repeats)
    test = evaluate(model, data.test.subset(budget.max_eval_samples, 0), data.task, budget.eval_batch_size)
    if not all(math.isfinite(final[k]) for k in ("auc", "accuracy", "worst_class_recall")):
        raise TrialFailed(f"non-finite validation metrics: {final}")
    meta = None
    if lib is not None:
        record = lib.record()
        if rung is None:
            written = write_back(model, lib, {"candidate": candidate.key, "seed": seed}, final)
            if written is not None:
                record["wrote"] = written
        meta = {"library": json.dumps(record, sort_keys=True)}
    if weights_out is not None:
        from safetensors.torch import save_file

        Path(weights_out).parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in model.trainable_state_dict().items()},
                  str(weights_out), metadata=meta)
    return TrialResult(candidate=candidate.to_json(), status="stopped" if rung else "completed", metrics=final,
                       test_metrics=test, history=list(history), epochs=len(history), steps=steps,
                       wall_time_s=time.perf_counter() - t0, seed=seed, image_passes=len(history) * n_train,
                       rung=rung)
