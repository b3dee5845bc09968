"""The pretraining loop: :func:`pretrain` trains (or resumes) a backbone, checkpointing every epoch.

    promptsearch pretrain --mode mae --epochs 1 --max-train-samples 32 --data-root ../shared/data/medmnist --out artifacts/pretrained/try

Deterministic on CPU: initialisation draws from ``seed``; the data order, augmentation and masks
of epoch ``e`` draw from a generator seeded by (seed, e), so a resumed run reproduces an
uninterrupted one bit for bit (same thread count).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ..backbones import Backbone, build_backbone
from ..files import atomic_write
from ..threads import torch_threads
from .batches import epoch_plan, eval_batches, iter_batches, steps_per_epoch
from .config import CHECKPOINT, SIDECAR, WEIGHTS, PretrainConfig, PretrainError, shared_mode
from .hooks import PretrainHooks
from .modes import PRETRAIN_MODES, PretrainMode
from .sidecar import epoch_metrics, peak_rss_mb, write_backbone
from .sources import Source, load_sources

CHECKPOINT_FORMAT = "promptsearch-pretrain-checkpoint"
CHECKPOINT_VERSION = 1


class PretrainResult(BaseModel):
    """What a call to :func:`pretrain` did. ``status='stopped'``: ``stop_after`` ended it early;
    rerun to resume. ``weights``/``sidecar`` are set once all epochs are done."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["completed", "stopped"]
    out_dir: str
    weights: str | None = None
    sidecar: str | None = None
    start_epoch: int  # the first epoch this call trained (epochs + 1 if there was nothing left)
    epochs_done: int
    epochs: int
    history: list[dict[str, float]]
    metrics: dict[str, float] = Field(default_factory=dict)
    wall_time_s: float  # all calls together
    peak_rss_mb: float


# --- optimisation --------------------------------------------------------------------------------
def _param_groups(model: PretrainMode, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices only: no decay on norms, biases, class/position tokens (ViT practice)."""
    skip = {f"student.{n}" for n in getattr(model.student, "no_weight_decay", lambda: set())()}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name in skip or name in ("mask_token", "decoder_pos") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_at(step: int, total: int, config: PretrainConfig) -> float:
    warmup = int(total * config.warmup_fraction)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return config.lr * 0.5 * (1 + math.cos(math.pi * progress))


# --- checkpoints ---------------------------------------------------------------------------------
def _save_checkpoint(path: Path, config: PretrainConfig, epoch: int, history: list[dict[str, float]], elapsed: float,
                     model: PretrainMode, optimizer: torch.optim.Optimizer) -> None:
    # "objective" is the mode module's key since checkpoint version 1: kept, so old runs still resume
    state = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
             "config": config.model_dump(mode="json"), "epoch": epoch, "history": history,
             "elapsed_s": elapsed, "objective": model.state_dict(), "optimizer": optimizer.state_dict()}
    atomic_write(path, lambda p: torch.save(state, p), mode=shared_mode())


def _load_checkpoint(path: Path, config: PretrainConfig) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise PretrainError(f"cannot read checkpoint {path}: {e}; pass fresh=True (--fresh) to start over") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise PretrainError(f"{path} is not a promptsearch pretraining checkpoint; use another output folder")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise PretrainError(f"{path}: checkpoint version {ckpt.get('version')} (this promptsearch reads {CHECKPOINT_VERSION})")
    want = config.model_dump(mode="json")
    diff = {k: (ckpt["config"].get(k), v) for k, v in want.items() if ckpt["config"].get(k) != v}
    if diff:
        shown = ", ".join(f"{k}: {a!r} there, {b!r} asked" for k, (a, b) in sorted(diff.items()))
        raise PretrainError(f"{path.parent} holds a run with a different config ({shown}); resume with the same "
                            f"options, or pass fresh=True (--fresh) / another output folder")
    return ckpt


# --- the loop ------------------------------------------------------------------------------------
def _train_epoch(model: PretrainMode, optimizer: torch.optim.Optimizer, sources: list[Source], backbone: Backbone,
                 config: PretrainConfig, epoch: int, per_epoch: int, total_steps: int,
                 hooks: PretrainHooks) -> dict[str, float]:
    """One epoch of training from its own seeds, then the held-out figures: the epoch's history row."""
    torch.manual_seed(config.seed * 100_003 + epoch)  # any global-RNG use is resume-stable too
    gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    model.train()
    hooks.stage(f"epoch {epoch}/{config.epochs}", per_epoch)
    total, n = 0.0, 0
    step = (epoch - 1) * per_epoch
    for batch in iter_batches(sources, epoch_plan(sources, config.batch_size, gen), "train", backbone, gen,
                              config.augments):
        for g in optimizer.param_groups:
            g["lr"] = _lr_at(step, total_steps, config)
        loss, _ = model.loss(batch, gen)
        value = loss.item()  # one device sync a step
        if not math.isfinite(value):
            raise PretrainError(f"non-finite loss at epoch {epoch}, step {step + 1}: lower --lr "
                                f"(now {config.lr}); the last good checkpoint is kept")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        total += value * len(batch.y)
        n += len(batch.y)
        step += 1
        hooks.advance(1, loss=total / n)
    model.eval()
    return {"epoch": float(epoch), "train_loss": total / n, "lr": _lr_at(step - 1, total_steps, config)}


def pretrain(config: PretrainConfig, out_dir: str | Path, data_root: str | Path | None = None,
             threads: int | None = None, stop_after: int | None = None, fresh: bool = False,
             hooks: PretrainHooks | None = None) -> PretrainResult:
    """Train (or resume) a backbone per ``config``; export it to ``out_dir`` when all epochs are done.

    Resumes automatically from ``out_dir/checkpoint.pt`` if it holds the same config (``fresh=True``
    starts over). ``stop_after=k`` trains at most k epochs in this call, then returns
    ``status='stopped'`` (the checkpoint stays; call again to continue).
    """
    hooks = hooks or PretrainHooks()
    out_dir = Path(out_dir)
    if stop_after is not None and stop_after < 1:
        raise PretrainError(f"stop_after must be at least 1 epoch, got {stop_after}")
    mode = PRETRAIN_MODES.get_or_raise(config.mode)
    if config.backbone.startswith("torchvision:"):
        raise PretrainError("pretrain makes timm backbones (e.g. vit_tiny_patch16_224); torchvision models "
                            "serve as teachers only")
    with torch_threads(threads):
        sources = load_sources(config, data_root, labeled=mode.needs_labels)
        torch.manual_seed(config.seed)  # student, heads, decoder: the same init for every run of a config
        try:
            backbone = build_backbone(config.spec)
        except (RuntimeError, ValueError, TypeError) as e:
            raise PretrainError(f"backbone {config.backbone!r}: {e}") from None
        model = mode(backbone, sources, config)
        out_dir.mkdir(parents=True, exist_ok=True)
        ckpt_path = out_dir / CHECKPOINT
        if fresh:
            for name in (CHECKPOINT, WEIGHTS, SIDECAR):
                (out_dir / name).unlink(missing_ok=True)
        ckpt = _load_checkpoint(ckpt_path, config) if ckpt_path.exists() else None
        facts = model.prepare(sources, out_dir, hooks)
        optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)
        history: list[dict[str, float]] = []
        elapsed, start = 0.0, 1
        if ckpt is not None:
            model.load_state_dict(ckpt["objective"])
            optimizer.load_state_dict(ckpt["optimizer"])
            history, elapsed, start = list(ckpt["history"]), float(ckpt["elapsed_s"]), int(ckpt["epoch"]) + 1
        per_epoch = steps_per_epoch(sources, config.batch_size)
        total_steps = per_epoch * config.epochs
        held_out = eval_batches(sources, backbone)
        last = config.epochs if stop_after is None else min(config.epochs, start - 1 + stop_after)
        for epoch in range(start, last + 1):
            t0 = time.perf_counter()
            row = _train_epoch(model, optimizer, sources, backbone, config, epoch, per_epoch, total_steps, hooks)
            row.update(model.evaluate(held_out))
            row["seconds"] = time.perf_counter() - t0
            elapsed += row["seconds"]
            history.append(row)
            hooks.done()
            _save_checkpoint(ckpt_path, config, epoch, history, elapsed, model, optimizer)
            hooks.epoch_end(epoch, row)
        done = len(history)
        result = dict(out_dir=str(out_dir), start_epoch=start, epochs_done=done, epochs=config.epochs,
                      history=history, wall_time_s=round(elapsed, 2), peak_rss_mb=round(peak_rss_mb(), 1))
        if done < config.epochs:
            return PretrainResult(status="stopped", **result)
        weights, sidecar = write_backbone(model.student, backbone, config, sources, out_dir, history, facts, elapsed,
                                          total_steps)
        return PretrainResult(status="completed", weights=str(weights), sidecar=str(sidecar),
                              metrics=epoch_metrics(history[-1]), **result)
