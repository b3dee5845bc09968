"""Learning a component library: :func:`build_library` (from source datasets) and :func:`add_to_library`
(continual growth: new blocks for tags a library lacks, old ones left bit-identical).

    promptsearch library build --datasets brain_tumor_mri kidney_ct --folders-root ../shared/data/folders \
        --backbone torchvision:mobilenet_v2 --backbone-weights ../shared/weights/mobilenet_v2-b0353104.pth \
        --image-size 32 --epochs 2 --out artifacts/library/try

Multi-task: each step takes one batch of one source dataset (batches of all datasets interleaved
in a seeded order), composes that dataset's prompt from its anatomy block, its modality block,
the pathology blocks of its classes (and the generic ``medical`` block) through the fusion, and
trains the blocks, that dataset's fusion parameters and its head; so a "tumor" block learns from
every source whose classes show a tumour. AdamW, cosine learning rate over all steps.

Deterministic on CPU: blocks, fusions and heads draw from ``seed``; epoch ``e``'s order from a
generator seeded by (seed, e); so a run resumed from its per-epoch checkpoint (after Ctrl-C or
kill -9) ends bit for bit where an uninterrupted one does (same thread count).
"""

from __future__ import annotations

import hashlib
import math
import resource
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..backbones import BackboneSpec, build_backbone
from ..catalog import get_entry, load_entry
from ..data import DataError, Dataset, Split
from ..files import atomic_write, file_sha256
from ..losses import loss_fn
from ..metrics import classification_metrics
from ..space import Depth
from ..threads import torch_threads
from .manifest import CHECKPOINT, GENERIC, TASKS, LibraryError
from .model import LibraryModel, Task
from .store import Library, open_library, write_library

CHECKPOINT_FORMAT = "promptsearch-library-checkpoint"
CHECKPOINT_VERSION = 1


class BuildConfig(BaseModel):
    """Everything that determines the blocks; a resumed build must ask for exactly this config."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    datasets: tuple[str, ...] = Field(min_length=1)  # catalogue names (promptsearch data list)
    module: Literal["pixel", "token"] = "pixel"  # pixel: any CNN/ViT; token: a timm ViT
    backbone: str = "torchvision:mobilenet_v2"
    backbone_weights: str | None = None  # a local file (absolute path)
    pretrained: bool = False
    image_size: int = Field(32, ge=8, le=1024)  # pixel blocks are patterns at this size
    patch_size: int | None = Field(None, ge=1)  # ViTs only
    tokens: int = Field(8, ge=1, le=512)  # token blocks: tokens per block
    depth: Depth = "shallow"  # token blocks: layers (shallow, deep, first_k)
    fusion: Literal["gate", "attention", "concat"] = "gate"  # how a dataset composes its blocks
    init: Literal["normal", "xavier", "uniform", "zero"] = "xavier"
    generic: bool = True  # also learn the generic `medical` block on every source
    epochs: int = Field(3, ge=1, le=10_000)
    batch_size: int = Field(32, ge=1, le=4096)
    lr: float = Field(0.01, gt=0, le=10.0)  # the trials' default prompt learning rate
    weight_decay: float = Field(0.0, ge=0, le=1.0)
    max_train_samples: int | None = Field(None, ge=1)  # per dataset, a seeded subset
    max_eval_samples: int | None = Field(256, ge=1)  # per dataset, for the per-epoch validation figures
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> BuildConfig:
        if len(set(self.datasets)) != len(self.datasets):
            raise ValueError(f"datasets: {list(self.datasets)} names one twice")
        if self.module == "pixel" and self.fusion == "concat":
            raise ValueError("fusion: pixel blocks are full-image patterns, mixed by gate or attention "
                             "(concat would leave each block a segment of the image)")
        if self.backbone.startswith("torchvision:") and self.module == "token":
            raise ValueError("module: token blocks need a timm ViT; a torchvision CNN takes pixel blocks")
        return self

    @property
    def spec(self) -> BackboneSpec:
        return BackboneSpec(self.backbone, image_size=self.image_size, patch_size=self.patch_size,
                            weights=self.backbone_weights, pretrained=self.pretrained)

    @classmethod
    def make(cls, **values: Any) -> BuildConfig:
        """Validate (the weights path made absolute); errors become one-line ``LibraryError``s."""
        if values.get("backbone_weights"):
            values["backbone_weights"] = str(Path(values["backbone_weights"]).expanduser().resolve())
        try:
            return cls(**values)
        except ValidationError as e:
            raise LibraryError("; ".join(f"{'.'.join(map(str, err['loc'])) or 'config'}: "
                                         f"{err['msg'].removeprefix('Value error, ')}" for err in e.errors())) from None


class BuildHooks:
    """Progress callbacks; these do nothing (the CLI draws them as rich progress bars)."""

    def stage(self, description: str, total: int) -> None:
        """A unit of work of ``total`` steps starts (an epoch, an evaluation)."""

    def advance(self, n: int, **info: float) -> None:
        """``n`` more steps done; ``info``: running figures (loss)."""

    def epoch_end(self, epoch: int, row: dict[str, float]) -> None:
        """An epoch finished and was checkpointed."""


class BuildResult(BaseModel):
    """What a call did: ``status='stopped'`` when ``stop_after`` ended it early (rerun to resume)."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["completed", "stopped"]
    out_dir: str
    version: str | None = None
    start_epoch: int
    epochs_done: int
    epochs: int
    components: list[str] = Field(default_factory=list)
    history: list[dict[str, float]]
    wall_time_s: float
    peak_rss_mb: float


# --- data ----------------------------------------------------------------------------------------
def _images_sha256(split: Split) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(split.images.numpy()).tobytes())
    h.update(np.ascontiguousarray(split.labels.numpy()).tobytes())
    return h.hexdigest()


def _load(name: str, data_root: str | Path | None, folders_root: str | Path | None, catalog: Any) -> tuple[Any, Dataset]:
    entry = get_entry(name, folders_root, catalog)
    root = data_root if entry.kind == "medmnist" else folders_root
    return entry, load_entry(entry, root, catalog=catalog)


def composition(entry: Any, generic: bool) -> tuple[str, ...]:
    """A dataset's blocks, in stack order: anatomy, modality, its classes' pathology tags, (medical)."""
    return (entry.anatomy, entry.modality, *entry.tags(), *([GENERIC] if generic else []))


def component_kinds(entry: Any) -> dict[str, str]:
    return {entry.anatomy: "anatomy", entry.modality: "modality", **{t: "pathology" for t in entry.tags()},
            GENERIC: "generic"}


class _Source:
    """One source dataset, loaded and cut to the build's sample caps."""

    def __init__(self, name: str, config: BuildConfig, data_root: Any, folders_root: Any, catalog: Any):
        try:
            self.entry, data = _load(name, data_root, folders_root, catalog)
        except DataError as e:
            raise LibraryError(f"dataset {name!r}: {e}") from None
        self.name, self.data = name, data
        self.train = data.train.subset(config.max_train_samples, config.seed)
        self.val = data.val.subset(config.max_eval_samples, 0)
        self.sha256 = _images_sha256(self.train)

    def record(self, components: Sequence[str], metrics: dict[str, float], added_in: int) -> dict[str, Any]:
        e = self.entry
        return {"kind": e.kind, "source": e.source, "anatomy": e.anatomy, "modality": e.modality, "tags": e.tags(),
                "classes": {c: list(t) for c, t in e.classes.items()}, "task": self.data.task,
                "components": list(components), "metrics": metrics, "added_in": added_in,
                "images": {"train": len(self.train), "val": len(self.val), "sha256": self.sha256},
                "catalog": "shipped" if e.shipped else e.origin}


# --- the loop --------------------------------------------------------------------------------------
def _lr_at(step: int, total: int, lr: float) -> float:
    return lr * 0.5 * (1 + math.cos(math.pi * step / max(1, total)))  # as CosineAnnealingLR over all steps


def _epoch_order(sources: Sequence[_Source], batch_size: int, gen: torch.Generator) -> list[tuple[int, torch.Tensor]]:
    """Every batch of every source once, interleaved in a seeded order: [(task, indices)]."""
    batches = []
    for t, s in enumerate(sources):
        perm = torch.randperm(len(s.train), generator=gen)
        batches += [(t, perm[i:i + batch_size]) for i in range(0, len(perm), batch_size)]
    order = torch.randperm(len(batches), generator=gen)
    return [batches[i] for i in order]


@torch.no_grad()
def _evaluate(model: LibraryModel, t: int, split: Split, task: str, batch_size: int = 256) -> dict[str, float]:
    model.eval()
    scores, labels = [], []
    for i in range(0, len(split), batch_size):
        x = split.images[i:i + batch_size].float().div_(255.0)
        logits = model(x, t)
        scores.append(torch.sigmoid(logits) if task == "multi-label" else torch.softmax(logits, -1))
        labels.append(split.labels[i:i + batch_size])
    return classification_metrics(task, torch.cat(labels).numpy(), torch.cat(scores).float().numpy())


def _save_checkpoint(path: Path, config: BuildConfig, parent: str | None, epoch: int, history: list, elapsed: float,
                     stats: dict, model: LibraryModel, opt: torch.optim.Optimizer, data: dict[str, str]) -> None:
    state = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": config.model_dump(mode="json"),
             "parent": parent, "epoch": epoch, "history": history, "elapsed_s": elapsed, "stats": stats,
             "model": model.state(), "optimizer": opt.state_dict(), "data": data}
    atomic_write(path, lambda p: torch.save(state, p))


def _load_checkpoint(path: Path, config: BuildConfig, parent: str | None, data: dict[str, str]) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise LibraryError(f"cannot read checkpoint {path}: {e}; pass fresh=True (--fresh) to start over") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or ckpt.get("version") != CHECKPOINT_VERSION:
        raise LibraryError(f"{path} is not a promptsearch library checkpoint (v{CHECKPOINT_VERSION}); use another --out")
    want = config.model_dump(mode="json")
    diff = {k: (ckpt["config"].get(k), v) for k, v in want.items() if ckpt["config"].get(k) != v}
    if ckpt.get("parent") != parent:
        diff["parent library"] = (ckpt.get("parent"), parent)
    if diff:
        shown = ", ".join(f"{k}: {a!r} there, {b!r} asked" for k, (a, b) in sorted(diff.items()))
        raise LibraryError(f"{path.parent} holds a build with a different config ({shown}); rerun with the same "
                           f"options, or pass --fresh / another --out")
    changed = sorted(k for k in data if ckpt["data"].get(k) != data[k])
    if changed:
        raise LibraryError(f"{path.parent}: the training images of {changed} differ from the checkpoint's "
                           f"(other files or sample caps); pass --fresh to start over")
    return ckpt


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _backbone_ref(config: BuildConfig) -> dict[str, Any]:
    w = config.backbone_weights
    return {"name": config.backbone, "image_size": config.image_size, "patch_size": config.patch_size,
            "weights_file": Path(w).name if w else None, "weights_sha256": file_sha256(w) if w else None,
            "pretrained": config.pretrained}


def _train(config: BuildConfig, out: Path, sources: list[_Source], parent: Library | None, data_root: Any,
           folders_root: Any, catalog: Any, threads: int | None, stop_after: int | None, fresh: bool,
           hooks: BuildHooks) -> BuildResult:
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT
    if fresh:
        ckpt_path.unlink(missing_ok=True)
    parent_version = parent.version if parent else None
    data_ids = {s.name: s.sha256 for s in sources}
    ckpt = _load_checkpoint(ckpt_path, config, parent_version, data_ids) if ckpt_path.exists() else None
    torch.manual_seed(config.seed)  # blocks, fusions and heads: one init per config
    try:
        backbone = build_backbone(config.spec)
    except (RuntimeError, ValueError, TypeError, FileNotFoundError) as e:
        raise LibraryError(f"backbone {config.backbone!r}: {e}") from None
    generation = parent.manifest.generation + 1 if parent else 0
    kinds: dict[str, str] = {}
    tasks = []
    for s in sources:
        comps = composition(s.entry, config.generic)
        kinds.update({c: k for c, k in component_kinds(s.entry).items() if c in comps})
        tasks.append(Task(s.name, s.data.task, s.data.num_outputs, comps))
    old = dict(parent.blocks) if parent else {}
    new = sorted(set(kinds) - set(old))
    if parent is not None and not new:
        raise LibraryError(f"library {parent.path} (version {parent.version}) already has a block for every tag of "
                           f"{', '.join(s.name for s in sources)} ({', '.join(sorted(kinds))}): nothing to add")
    try:
        model = LibraryModel(backbone, tasks, config.module, config.fusion, config.init, config.tokens, config.depth,
                             start=old, frozen=old)
    except ValueError as e:
        raise LibraryError(str(e)) from None
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    history: list[dict[str, float]] = []
    elapsed, start = 0.0, 1
    stats: dict[str, dict[str, float]] = {c: {"steps": 0.0, "images_seen": 0.0} for c in kinds}
    if ckpt is not None:
        model.load_state_dict(ckpt["model"], strict=False)
        opt.load_state_dict(ckpt["optimizer"])
        history, elapsed, start, stats = list(ckpt["history"]), float(ckpt["elapsed_s"]), int(ckpt["epoch"]) + 1, ckpt["stats"]
    per_epoch = sum(math.ceil(len(s.train) / config.batch_size) for s in sources)
    total = per_epoch * config.epochs
    last = config.epochs if stop_after is None else min(config.epochs, start - 1 + stop_after)
    final: dict[str, dict[str, float]] = {}
    for epoch in range(start, last + 1):
        t0 = time.perf_counter()
        torch.manual_seed(config.seed * 100_003 + epoch)
        gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        model.train()
        hooks.stage(f"epoch {epoch}/{config.epochs}", per_epoch)
        loss_sum, n_seen = 0.0, 0
        comp_loss = {c: [0.0, 0] for c in kinds}
        step = (epoch - 1) * per_epoch
        for t, idx in _epoch_order(sources, config.batch_size, gen):
            s = sources[t]
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, total, config.lr)
            x, y = s.train.images[idx].float().div_(255.0), s.train.labels[idx]
            loss = loss_fn(s.data.task, model(x, t), y)
            value = loss.item()
            if not math.isfinite(value):
                raise LibraryError(f"non-finite loss on {s.name} at epoch {epoch}, step {step + 1}: lower --lr "
                                   f"(now {config.lr}); the last good checkpoint is kept")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += value * len(y)
            n_seen += len(y)
            for c in tasks[t].components:
                comp_loss[c][0] += value * len(y)
                comp_loss[c][1] += len(y)
                stats[c]["steps"] += 1
                stats[c]["images_seen"] += len(y)
            step += 1
            hooks.advance(1, loss=loss_sum / n_seen)
        row = {"epoch": float(epoch), "train_loss": loss_sum / max(1, n_seen)}
        final = {}
        for t, s in enumerate(sources):
            final[s.name] = _evaluate(model, t, s.val, s.data.task)
            row[f"{s.name}/val_auc"] = final[s.name]["auc"]
        for c, (sm, n) in comp_loss.items():
            stats[c]["train_loss"] = sm / max(1, n)
        row["seconds"] = time.perf_counter() - t0
        elapsed += row["seconds"]
        history.append(row)
        _save_checkpoint(ckpt_path, config, parent_version, epoch, history, elapsed, stats, model, opt, data_ids)
        hooks.epoch_end(epoch, row)
    result = dict(out_dir=str(out), start_epoch=start, epochs_done=len(history), epochs=config.epochs,
                  history=history, wall_time_s=round(elapsed, 2), peak_rss_mb=round(peak_rss_mb(), 1))
    if len(history) < config.epochs:
        return BuildResult(status="stopped", **result)
    if not final:  # resumed after the last epoch: measure again (the same numbers, evaluation is deterministic)
        final = {s.name: _evaluate(model, t, s.val, s.data.task) for t, s in enumerate(sources)}
    lib = _write(config, out, sources, tasks, kinds, model, parent, generation, history, stats, final, elapsed,
                 data_root, folders_root, catalog, threads)
    return BuildResult(status="completed", version=lib.version, components=lib.components, **result)


def _component_records(sources: list[_Source], tasks: list[Task], kinds: dict[str, str], stats: dict,
                       final: dict[str, dict[str, float]], generation: int) -> dict[str, dict[str, Any]]:
    out = {}
    for c, kind in sorted(kinds.items()):
        users = [s for s, t in zip(sources, tasks) if c in t.components]
        aucs = [final[s.name]["auc"] for s in users if math.isfinite(final[s.name]["auc"])]
        metrics = {k: float(v) for k, v in stats[c].items()}
        if aucs:
            metrics.update(val_auc_mean=float(np.mean(aucs)), val_auc_min=float(np.min(aucs)))
        out[c] = {"kind": kind, "datasets": [s.name for s in users], "images": {s.name: s.sha256 for s in users},
                  "train_images": sum(len(s.train) for s in users), "metrics": metrics, "sha256": "",
                  "added_in": generation}
    return out


def _write(config: BuildConfig, out: Path, sources: list[_Source], tasks: list[Task], kinds: dict[str, str],
           model: LibraryModel, parent: Library | None, generation: int, history: list, stats: dict,
           final: dict[str, dict[str, float]], elapsed: float, data_root: Any, folders_root: Any, catalog: Any,
           threads: int | None) -> Library:
    from safetensors.torch import save_file

    blocks = model.block_tensors()
    components = _component_records(sources, tasks, kinds, stats, final, generation)
    datasets = {s.name: s.record(t.components, final[s.name], generation) for s, t in zip(sources, tasks)}
    old_tasks: dict[str, dict[str, dict[str, float]]] = {}
    if parent is not None:
        for name, rec in parent.manifest.components.items():
            components[name] = rec.model_dump(mode="json")  # carried over: the same block, the same record
        datasets = {**{k: v.model_dump(mode="json") for k, v in parent.manifest.datasets.items()}, **datasets}
        old_tasks = _old_tasks(parent, blocks, config, data_root, folders_root, catalog)
    geometry = {"module": config.module, "image_size": config.image_size,
                "shape": list(next(iter(blocks.values())).shape), "patch_size": config.patch_size,
                "tokens": config.tokens if config.module == "token" else None,
                "depth": config.depth if config.module == "token" else None}
    fields = {"parent": parent.version if parent else None, "generation": generation,
              "backbone": _backbone_ref(config), "geometry": geometry, "fusion": config.fusion, "init": config.init,
              "recipe": config.model_dump(mode="json"), "components": components, "datasets": datasets,
              "history": history, "old_tasks": old_tasks,
              "cost": {"wall_time_s": round(elapsed, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
                       "threads": float(torch.get_num_threads()), "epochs": float(len(history)),
                       "steps": float(sum(math.ceil(len(s.train) / config.batch_size) for s in sources) * len(history))}}
    tasks_state = model.task_state()
    if parent is not None and (parent.path / TASKS).is_file():
        from safetensors.torch import load_file

        tasks_state = {**load_file(str(parent.path / TASKS)), **tasks_state}
    atomic_write(out / TASKS, lambda p: save_file(tasks_state, str(p)))
    return write_library(out, fields, blocks)


def _old_tasks(parent: Library, blocks: dict[str, torch.Tensor], config: BuildConfig, data_root: Any,
               folders_root: Any, catalog: Any) -> dict[str, dict[str, dict[str, float]]]:
    """The parent's tasks measured with the parent's blocks and with the new library's (validation,
    their stored fusion parameters and heads): growth must not change them."""
    from safetensors.torch import load_file

    path = parent.path / TASKS
    if not path.is_file():
        raise LibraryError(f"{path}: missing; `library add` re-measures the old tasks with it (rebuild the parent)")
    state = load_file(str(path))
    recipe = BuildConfig.model_validate(parent.manifest.recipe)  # its validation subsets, as recorded
    backbone = build_backbone(config.spec)
    out = {}
    for name, rec in parent.manifest.datasets.items():
        src = _Source(name, recipe, data_root, folders_root, catalog)
        task = Task(name, rec.task, src.data.num_outputs, tuple(rec.components))
        figures = {}
        for when, bl in (("before", parent.blocks), ("after", blocks)):
            torch.manual_seed(0)
            model = LibraryModel(backbone, [task], config.module, config.fusion, config.init,
                                 config.tokens, config.depth, start={c: bl[c] for c in task.components})
            model.load_task_state(state, [name])
            figures[when] = _evaluate(model, 0, src.val, rec.task)
        out[name] = figures
    return out


# --- the two entry points -----------------------------------------------------------------------------
def build_library(config: BuildConfig, out: str | Path, data_root: str | Path | None = None,
                  folders_root: str | Path | None = None, catalog: Any = (), threads: int | None = None,
                  stop_after: int | None = None, fresh: bool = False, hooks: BuildHooks | None = None) -> BuildResult:
    """Learn one block per component of ``config.datasets`` (multi-task, see the module docstring)
    and write ``out/library.safetensors`` + ``out/library.json``. Resumes from ``out/checkpoint.pt``
    (same config); ``stop_after=k`` trains at most k epochs now (``status='stopped'``)."""
    if stop_after is not None and stop_after < 1:
        raise LibraryError(f"stop_after must be at least 1 epoch, got {stop_after}")
    with torch_threads(threads):
        sources = [_Source(n, config, data_root, folders_root, catalog) for n in config.datasets]
        return _train(config, Path(out), sources, None, data_root, folders_root, catalog, threads, stop_after, fresh,
                      hooks or BuildHooks())


def add_to_library(library: str | Path, datasets: Sequence[str], out: str | Path, data_root: str | Path | None = None,
                   folders_root: str | Path | None = None, catalog: Any = (), backbone_weights: str | None = None,
                   threads: int | None = None, stop_after: int | None = None, fresh: bool = False,
                   hooks: BuildHooks | None = None, **overrides: Any) -> BuildResult:
    """A child library of ``library``: blocks for the tags of ``datasets`` it lacks, learned on
    ``datasets`` with the existing blocks frozen (so they stay bit-identical); the manifest records
    the old tasks' validation figures before and after. The recipe is the parent's (``overrides``:
    epochs, batch_size, lr, max_train_samples, ...)."""
    parent = open_library(library)
    if Path(out).expanduser().resolve() == parent.path.resolve():
        raise LibraryError(f"--out {out}: write the grown library to a new folder (the parent {library} stays as it is)")
    clash = sorted(set(datasets) & set(parent.manifest.datasets))
    if clash:
        raise LibraryError(f"library {library} already learned from {clash}")
    recipe = dict(parent.manifest.recipe)
    weights = backbone_weights or recipe.get("backbone_weights")
    if weights and not Path(weights).expanduser().is_file():
        raise LibraryError(f"backbone weights {weights} (the parent's) not found: pass --backbone-weights FILE")
    if weights and parent.manifest.backbone.weights_sha256 and file_sha256(weights) != parent.manifest.backbone.weights_sha256:
        raise LibraryError(f"backbone weights {weights} differ from the ones library {library} was learned on "
                           f"(sha256 {parent.manifest.backbone.weights_sha256[:16]}...)")
    config = BuildConfig.make(**{**recipe, **overrides, "datasets": tuple(datasets), "backbone_weights": weights})
    with torch_threads(threads):
        sources = [_Source(n, config, data_root, folders_root, catalog) for n in config.datasets]
        return _train(config, Path(out), sources, parent, data_root, folders_root, catalog, threads, stop_after, fresh,
                      hooks or BuildHooks())


__all__ = ["BuildConfig", "BuildHooks", "BuildResult", "add_to_library", "build_library", "composition"]
