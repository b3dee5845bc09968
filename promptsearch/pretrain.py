"""Domain backbone pretraining: make a ViT backbone from local images, for sites without hub access.

    promptsearch pretrain --mode distill --dataset pneumoniamnist --data-root ../shared/data/medmnist \
        --teacher-weights ../shared/weights/mobilenet_v2-b0353104.pth --epochs 2 --out artifacts/pretrained/distill

Writes ``backbone.safetensors`` (the student's state dict, exactly the keys
``BackboneSpec(name, image_size, patch_size, weights=FILE)`` loads) and ``backbone.json`` (a sidecar:
architecture, sizes, the data it saw, epochs, final metrics, sha256 of the weights file) into the
output folder, plus ``checkpoint.pt`` after every epoch: rerunning the same command resumes from it.

Three modes (registry ``PRETRAIN_MODES``), each an *objective*: a module that owns the student and
whatever else trains with it, and maps a batch to a loss.

* ``supervised``: one linear head per labeled dataset (MedMNIST name or ``folder:PATH`` of class
  sub-folders); batches come from one dataset at a time; heads are dropped at export.
* ``mae``: masked-patch reconstruction (He et al., 2022). The stock timm ViT encodes the visible
  25% of patch tokens (plus its prefix tokens); a light decoder (2 blocks, width 128) fills in mask
  tokens and predicts each masked patch's normalised pixels. Needs no labels.
* ``distill``: feature distillation from a frozen teacher that exists offline (the ImageNet
  MobileNetV2): a linear projection of the student's *pooled* features (what probes and prompts
  read) regresses the teacher's standardised pooled features. Teacher features are computed once
  per image and cached in the output folder, so training costs no teacher forward passes (and
  images are not augmented in this mode: the cache holds un-augmented views). Feature rather
  than logit distillation: on grey medical images the teacher's 1000 ImageNet class scores are a
  low-entropy, domain-irrelevant signal, while its 1280-d pooled features are what transfers
  (the MobileNetV2 linear probe on BreastMNIST reaches AUC .84-.93).

Deterministic on CPU: initialisation draws from ``seed``; the data order, augmentation and masks
of epoch ``e`` draw from a generator seeded by (seed, e), so a resumed run reproduces an
uninterrupted one bit for bit (same thread count).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import nn

from .data import IMAGE_SUFFIXES, DataError, Split, load_dataset
from .metrics import classification_metrics
from .backbones import Backbone, BackboneSpec, build_backbone, preprocess
from .files import file_sha256
from .registry import Registry
from .trial import loss_fn

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "backbone.safetensors"
SIDECAR = "backbone.json"
TEACHER_CACHE = "teacher_cache.safetensors"
CHECKPOINT_VERSION = 1
SIDECAR_VERSION = 1


class PretrainError(ValueError):
    """A bad pretraining request (config, resume state, teacher): the message says what to change."""


# --- configuration -------------------------------------------------------------------------------
class PretrainConfig(BaseModel):
    """Everything that determines the weights. A resumed run must ask for exactly this config."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: str  # a PRETRAIN_MODES name: supervised | mae | distill
    datasets: tuple[str, ...] = ("pneumoniamnist",)  # MedMNIST names or folder:PATH
    backbone: str = "vit_tiny_patch16_224"  # any timm model name
    image_size: int = Field(28, ge=8, le=1024)  # MedMNIST's native size: no resampling
    patch_size: int | None = Field(4, ge=1)  # 28 px / 4 = 7x7 tokens (16 would leave one)
    epochs: int = Field(5, ge=1, le=10_000)
    batch_size: int = Field(64, ge=2, le=4096)
    lr: float = Field(1e-3, gt=0, le=1.0)  # AdamW peak; linear warmup, then cosine to 0
    weight_decay: float = Field(0.05, ge=0, le=1.0)  # not on norms, biases, tokens, positions
    warmup_fraction: float = Field(0.05, ge=0, lt=1)  # of all steps
    max_train_samples: int | None = Field(None, ge=1)  # per dataset, a seeded subset
    max_eval_samples: int | None = Field(512, ge=1)  # per dataset, for the per-epoch metrics
    augment: bool | None = None  # flips + 2-px shifts; None: on, except in distill (cached targets)
    seed: int = 0
    # mae
    mask_ratio: float = Field(0.75, gt=0, lt=1)  # MAE's 75%: 12 of 49 patches stay visible
    decoder_dim: int = Field(128, ge=8)  # light decoder: ~0.4M params vs the 5.4M encoder
    decoder_depth: int = Field(2, ge=1)
    decoder_heads: int = Field(4, ge=1)
    # distill
    teacher: str = "torchvision:mobilenet_v2"
    teacher_weights: str | None = None  # a local file: the teacher must exist offline
    teacher_image_size: int = Field(64, ge=8, le=1024)  # MobileNetV2 probe: .885 val AUC at 64 px

    @model_validator(mode="after")
    def _check(self) -> PretrainConfig:
        if self.mode not in PRETRAIN_MODES:
            raise ValueError(f"unknown mode {self.mode!r}; modes: {', '.join(sorted(PRETRAIN_MODES))}")
        if not self.datasets:
            raise ValueError("give at least one dataset (a MedMNIST name or folder:PATH)")
        if self.patch_size and self.image_size % self.patch_size:
            raise ValueError(f"mismatched sizes: image size {self.image_size} is not a multiple of "
                             f"patch size {self.patch_size}")
        if self.decoder_dim % self.decoder_heads:
            raise ValueError(f"decoder_dim {self.decoder_dim} is not a multiple of decoder_heads {self.decoder_heads}")
        if self.mode == "distill" and self.augment:
            raise ValueError("distill caches the teacher's features of un-augmented images: leave augment off")
        if self.mode == "distill" and not self.teacher_weights:
            raise ValueError("distill needs a teacher that exists offline: give teacher_weights "
                             "(--teacher-weights FILE, e.g. ../shared/weights/mobilenet_v2-b0353104.pth)")
        return self

    @property
    def augments(self) -> bool:
        return self.mode != "distill" if self.augment is None else self.augment

    @property
    def spec(self) -> BackboneSpec:
        return BackboneSpec(self.backbone, image_size=self.image_size, patch_size=self.patch_size)

    @classmethod
    def make(cls, **values: Any) -> PretrainConfig:
        """Validate, with local paths made absolute; errors become one-line ``PretrainError``s."""
        if values.get("datasets"):
            values["datasets"] = tuple(_absolute_source(d) for d in values["datasets"])
        if values.get("teacher_weights"):
            values["teacher_weights"] = str(Path(values["teacher_weights"]).expanduser().resolve())
        try:
            return cls(**values)
        except ValidationError as e:
            raise PretrainError("; ".join(f"{'.'.join(map(str, err['loc'])) or 'config'}: "
                                          f"{err['msg'].removeprefix('Value error, ')}" for err in e.errors())) from None


def _absolute_source(name: str) -> str:
    source, _, rest = name.partition(":")
    if source == "folder" and rest:
        return f"folder:{Path(rest).expanduser().resolve()}"
    if Path(name).expanduser().is_dir():
        return f"folder:{Path(name).expanduser().resolve()}"
    return name


# --- data ----------------------------------------------------------------------------------------
@dataclass
class Source:
    """One dataset as the pretrainer sees it: train/val images, labels only when a mode uses them."""

    name: str
    train: Split
    val: Split
    task: str | None  # None: unlabeled
    classes: list[str]
    origin: str

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.origin, "train_images": len(self.train),
                "val_images": len(self.val), "channels": int(self.train.images.shape[1]),
                "stored_size": list(self.train.images.shape[2:]), "labeled": self.task is not None,
                "task": self.task, "classes": self.classes,
                "sha256": _images_hash(self.train, self.val)}


def epoch_metrics(row: dict[str, float]) -> dict[str, float]:
    """An epoch's metrics without its bookkeeping (epoch number, learning rate, seconds)."""
    return {k: v for k, v in row.items() if k not in ("epoch", "lr", "seconds")}


def use_flags(backbone: str, image_size: int, patch_size: int | None, weights: str | Path) -> str:
    """The flags that use a made backbone (``promptsearch trial``/``search``)."""
    return (f"--backbone {backbone} --image-size {image_size}"
            + (f" --patch-size {patch_size}" if patch_size else "") + f" --backbone-weights {weights}")


def _images_hash(*splits: Split) -> str:
    h = hashlib.sha256()
    for s in splits:
        h.update(s.images.numpy().tobytes())
    return h.hexdigest()


def load_image_folder(path: str | Path, size: int, seed: int = 0, val_fraction: float = 0.1) -> tuple[Split, Split]:
    """Every image under ``path`` (flat, or in any sub-folders), resized to size x size, split
    train/val by a seed; labels are all zero. For self-supervised modes on unlabeled folders."""
    from PIL import Image, UnidentifiedImageError

    base = Path(path).expanduser()
    if not base.is_dir():
        raise DataError(f"image folder {base} not found")
    files = sorted(f for f in base.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                   and not any(p.startswith(".") for p in f.relative_to(base).parts))
    if not files:
        raise DataError(f"no images in {base} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}, in sub-folders too)")
    pics = []
    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
                pics.append(im.convert("L") if im.mode in ("L", "I;16", "I", "1") else im.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise DataError(f"unreadable image {f}: {e}") from None
    grey = all(p.mode == "L" for p in pics)
    arrs = np.stack([np.asarray(p.convert("L" if grey else "RGB").resize((size, size), Image.BILINEAR)) for p in pics])
    imgs = torch.as_tensor(arrs[:, None] if grey else arrs.transpose(0, 3, 1, 2), dtype=torch.uint8)  # (N, C, S, S)
    order = torch.randperm(len(imgs), generator=torch.Generator().manual_seed(seed))
    n_val = min(len(imgs) - 1, max(1, round(len(imgs) * val_fraction))) if len(imgs) > 1 else 0
    zeros = torch.zeros(len(imgs), dtype=torch.long)
    val, train = order[:n_val].sort().values, order[n_val:].sort().values
    if not n_val:  # one image: it serves as its own validation
        val = train
    return Split(imgs[train].contiguous(), zeros[train]), Split(imgs[val].contiguous(), zeros[val])


def load_sources(config: PretrainConfig, data_root: str | Path | None, labeled: bool) -> list[Source]:
    """The config's datasets as ``Source``s: labeled (MedMNIST / class folders) or images only."""
    sources = []
    for name in config.datasets:
        kind, _, rest = name.partition(":")
        if kind == "folder" and not labeled:
            train, val = load_image_folder(rest, config.image_size, seed=config.seed)
            src = Source(Path(rest).name, train, val, None, [], rest)
        else:
            kwargs = {"size": config.image_size} if kind == "folder" else {}
            data = load_dataset(name, root=data_root, **kwargs)
            src = Source(data.name, data.train, data.val, data.task if labeled else None,
                         data.classes if labeled else [], data.source)
        src.train = src.train.subset(config.max_train_samples, config.seed)
        src.val = src.val.subset(config.max_eval_samples, 0)
        if not len(src.train):
            raise DataError(f"{name}: no training images")
        if src.train.images.shape[1] not in (1, 3):
            raise DataError(f"{name}: images have {src.train.images.shape[1]} channels; expected 1 or 3")
        sources.append(src)
    return sources


def augment(x: torch.Tensor, gen: torch.Generator, shift: int = 2) -> torch.Tensor:
    """Seeded horizontal flips and integer shifts of up to ``shift`` pixels (edges replicated)."""
    B, _, H, W = x.shape
    flip = torch.rand(B, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)  # (B, C, H, W)
    padded = F.pad(x, (shift,) * 4, mode="replicate")  # (B, C, H + 2s, W + 2s)
    dy, dx = torch.randint(0, 2 * shift + 1, (2, B), generator=gen)
    return torch.stack([padded[i, :, dy[i]:dy[i] + H, dx[i]:dx[i] + W] for i in range(B)])  # (B, C, H, W)


@dataclass
class Batch:
    x: torch.Tensor  # (B, 3, S, S) normalised
    y: torch.Tensor  # (B,) labels (zeros when unlabeled)
    source: int  # index into the sources
    index: torch.Tensor  # (B,) rows of the source's split (for cached teacher targets)


def epoch_plan(sources: list[Source], batch_size: int, gen: torch.Generator) -> list[tuple[int, torch.Tensor]]:
    """One epoch's batches: each dataset shuffled and cut into batches, the batches interleaved."""
    plan = []
    for s, src in enumerate(sources):
        order = torch.randperm(len(src.train), generator=gen)
        plan += [(s, order[i:i + batch_size]) for i in range(0, len(order), batch_size)]
    return [plan[i] for i in torch.randperm(len(plan), generator=gen).tolist()]


def steps_per_epoch(sources: list[Source], batch_size: int) -> int:
    return sum(math.ceil(len(s.train) / batch_size) for s in sources)


# --- objectives ----------------------------------------------------------------------------------
PRETRAIN_MODES: Registry = Registry("pretraining mode")


class Objective(nn.Module):
    """A student backbone plus whatever trains with it (heads, decoder, projection)."""

    needs_labels = False

    def __init__(self, backbone: Backbone, sources: list[Source], config: PretrainConfig):
        super().__init__()
        self.student = backbone.model
        self.config = config

    def prepare(self, sources: list[Source], out_dir: Path, hooks: PretrainHooks) -> dict[str, Any]:
        """One-off work before training (e.g. caching teacher outputs); returns sidecar facts."""
        return {}

    def loss(self, batch: Batch, gen: torch.Generator, split: str = "train") -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, batches: list[Batch]) -> dict[str, float]:
        """Mean validation loss (and mode-specific metrics) over held-out batches."""
        gen = torch.Generator().manual_seed(12345)  # fixed masks: epochs are comparable
        total, n = 0.0, 0
        for b in batches:
            loss, _ = self.loss(b, gen, split="val")
            total += loss.item() * len(b.y)
            n += len(b.y)
        return {"val_loss": total / max(n, 1)}


@PRETRAIN_MODES.register("supervised")
class SupervisedObjective(Objective):
    """Cross-entropy (or BCE for multi-label) through one linear head per labeled dataset."""

    needs_labels = True

    def __init__(self, backbone: Backbone, sources: list[Source], config: PretrainConfig):
        super().__init__(backbone, sources, config)
        self.tasks = [s.task for s in sources]
        self.heads = nn.ModuleList(nn.Linear(backbone.num_features, len(s.classes)) for s in sources)

    def loss(self, batch: Batch, gen: torch.Generator, split: str = "train") -> tuple[torch.Tensor, dict[str, float]]:
        logits = self.heads[batch.source](self.student(batch.x))  # (B, classes)
        return loss_fn(self.tasks[batch.source], logits, batch.y), {}

    @torch.no_grad()
    def evaluate(self, batches: list[Batch]) -> dict[str, float]:
        out = super().evaluate(batches)
        for s, task in enumerate(self.tasks):
            mine = [b for b in batches if b.source == s]
            logits = torch.cat([self.heads[s](self.student(b.x)) for b in mine])  # (N, classes)
            scores = torch.sigmoid(logits) if task == "multi-label" else torch.softmax(logits, -1)
            y = torch.cat([b.y for b in mine]).numpy()
            metrics = classification_metrics(task, y, scores.numpy())
            suffix = "" if len(self.tasks) == 1 else f"_{s}"
            out.update({f"val_{k}{suffix}": v for k, v in metrics.items() if k in ("auc", "accuracy")})
        return out


@PRETRAIN_MODES.register("mae")
class MAEObjective(Objective):
    """Masked autoencoder: encode the visible patches with the stock ViT, reconstruct the rest."""

    def __init__(self, backbone: Backbone, sources: list[Source], config: PretrainConfig):
        super().__init__(backbone, sources, config)
        from timm.models.vision_transformer import Block

        if not backbone.is_vit:
            raise PretrainError(f"mae needs a timm VisionTransformer; {config.backbone} is not one")
        vit = self.student
        self.n_patches = vit.patch_embed.num_patches
        self.keep = int(self.n_patches * (1 - config.mask_ratio))
        if not 1 <= self.keep < self.n_patches:
            raise PretrainError(f"mask ratio {config.mask_ratio} keeps {self.keep} of {self.n_patches} patches; "
                                f"it must keep at least one and mask at least one")
        self.patch = tuple(vit.patch_embed.patch_size)
        D, Dd = vit.embed_dim, config.decoder_dim
        self.decoder_embed = nn.Linear(D, Dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, Dd))  # (1, 1, Dd)
        self.decoder_pos = nn.Parameter(torch.zeros(1, self.n_patches, Dd))  # (1, N, Dd), learned
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.normal_(self.decoder_pos, std=0.02)
        self.decoder = nn.Sequential(*(Block(Dd, config.decoder_heads, mlp_ratio=4.0, qkv_bias=True)
                                       for _ in range(config.decoder_depth)))
        self.decoder_norm = nn.LayerNorm(Dd)
        self.decoder_pred = nn.Linear(Dd, self.patch[0] * self.patch[1] * 3)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        p, q = self.patch
        x = x.reshape(B, C, H // p, p, W // q, q).permute(0, 2, 4, 3, 5, 1)  # (B, h, w, p, q, C)
        return x.reshape(B, (H // p) * (W // q), p * q * C)  # (B, N, p*q*C), patch_embed's order

    def loss(self, batch: Batch, gen: torch.Generator, split: str = "train") -> tuple[torch.Tensor, dict[str, float]]:
        vit = self.student
        B, N, prefix = batch.x.shape[0], self.n_patches, vit.num_prefix_tokens
        tokens = vit._pos_embed(vit.patch_embed(batch.x))  # (B, prefix + N, D)
        shuffle = torch.rand(B, N, generator=gen).argsort(1)  # (B, N): a random order per image
        restore = shuffle.argsort(1)  # (B, N)
        visible = shuffle[:, :self.keep]  # (B, K)
        D = tokens.shape[-1]
        patches = tokens[:, prefix:].gather(1, visible[..., None].expand(-1, -1, D))  # (B, K, D)
        x = vit.norm_pre(torch.cat([tokens[:, :prefix], patches], 1))  # (B, prefix + K, D)
        x = vit.norm(vit.blocks(x))  # (B, prefix + K, D)
        x = self.decoder_embed(x)  # (B, prefix + K, Dd)
        Dd = x.shape[-1]
        filled = torch.cat([x[:, prefix:], self.mask_token.expand(B, N - self.keep, -1)], 1)  # (B, N, Dd) shuffled
        filled = filled.gather(1, restore[..., None].expand(-1, -1, Dd)) + self.decoder_pos  # (B, N, Dd) in place
        y = self.decoder_norm(self.decoder(torch.cat([x[:, :prefix], filled], 1)))  # (B, prefix + N, Dd)
        pred = self.decoder_pred(y[:, prefix:])  # (B, N, p*q*3)
        target = self.patchify(batch.x)  # (B, N, p*q*3)
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()  # MAE's per-patch normalised pixels
        masked = (restore >= self.keep).float()  # (B, N): 1 where the patch was hidden
        per_patch = ((pred - target) ** 2).mean(-1)  # (B, N)
        return (per_patch * masked).sum() / masked.sum(), {}


@PRETRAIN_MODES.register("distill")
class DistillObjective(Objective):
    """Regress the teacher's standardised pooled features from a projection of the student's."""

    def __init__(self, backbone: Backbone, sources: list[Source], config: PretrainConfig):
        super().__init__(backbone, sources, config)
        self.teacher_spec = BackboneSpec(config.teacher, image_size=config.teacher_image_size,
                                         weights=config.teacher_weights)
        self.targets: dict[str, torch.Tensor] = {}  # "s/split" -> (N, T) standardised teacher features
        self.proj: nn.Linear | None = None
        self.num_features = backbone.num_features

    def prepare(self, sources: list[Source], out_dir: Path, hooks: PretrainHooks) -> dict[str, Any]:
        from safetensors.torch import load_file, save_file

        weights = Path(self.config.teacher_weights)
        if not weights.is_file():
            raise PretrainError(f"teacher weights {weights} not found")
        teacher_sha256 = file_sha256(weights)
        key = hashlib.sha256(json.dumps({
            "teacher": self.config.teacher, "size": self.config.teacher_image_size, "weights": teacher_sha256,
            "data": [_images_hash(s.train, s.val) for s in sources]}).encode()).hexdigest()
        cache = out_dir / TEACHER_CACHE
        raw: dict[str, torch.Tensor] = {}
        if cache.exists():
            from safetensors import safe_open

            with safe_open(str(cache), "pt") as f:
                if (f.metadata() or {}).get("key") == key:
                    raw = load_file(str(cache))
        cached = bool(raw)
        if not raw:
            try:
                teacher = build_backbone(self.teacher_spec)
            except (ValueError, RuntimeError, KeyError, FileNotFoundError) as e:
                raise PretrainError(f"teacher {self.config.teacher} from {weights}: {e}") from None
            model = teacher.model.eval()
            total = sum(len(s.train) + len(s.val) for s in sources)
            hooks.stage("teacher features (once)", total)
            with torch.no_grad():
                for i, s in enumerate(sources):
                    for split in ("train", "val"):
                        imgs, feats = getattr(s, split).images, []
                        for j in range(0, len(imgs), 128):
                            x = preprocess(imgs[j:j + 128].float() / 255, teacher.image_size, teacher.mean, teacher.std)
                            feats.append(model(x))  # (b, T)
                            hooks.advance(len(x))
                        raw[f"{i}/{split}"] = torch.cat(feats).contiguous()  # (N, T)
            hooks.done()
            _atomic_write(cache, lambda p: save_file(raw, str(p), metadata={"key": key}))
        train = torch.cat([raw[f"{i}/train"] for i in range(len(sources))])  # (sum N, T)
        mean, std = train.mean(0), train.std(0)  # (T,)
        std = std.clamp_min(0.1 * std.mean() + 1e-6)  # near-constant features (dead ReLUs) stay bounded
        self.targets = {k: (v - mean) / std for k, v in raw.items()}
        torch.manual_seed(self.config.seed + 1)  # same init whether or not the teacher ran (it draws too)
        self.proj = nn.Linear(self.num_features, train.shape[1])  # made here: T is known now
        return {"teacher": {"name": self.config.teacher, "weights": str(weights), "weights_sha256": teacher_sha256,
                            "image_size": self.config.teacher_image_size, "features": int(train.shape[1]),
                            "target": "standardised pooled features", "cache": TEACHER_CACHE, "cache_reused": cached}}

    def loss(self, batch: Batch, gen: torch.Generator, split: str = "train") -> tuple[torch.Tensor, dict[str, float]]:
        target = self.targets[f"{batch.source}/{split}"][batch.index]  # (B, T)
        pred = self.proj(self.student(batch.x))  # (B, T)
        return F.mse_loss(pred, target), {}

    @torch.no_grad()
    def evaluate(self, batches: list[Batch]) -> dict[str, float]:
        out = super().evaluate(batches)
        cos = [F.cosine_similarity(self.proj(self.student(b.x)), self.targets[f"{b.source}/val"][b.index], dim=-1)
               for b in batches]
        out["val_cosine"] = float(torch.cat(cos).mean())
        return out


# --- progress ------------------------------------------------------------------------------------
class PretrainHooks:
    """Progress callbacks; these do nothing. The CLI's rich progress bars implement them."""

    def stage(self, description: str, total: int) -> None:
        """A new unit of work of ``total`` items starts (an epoch, the teacher cache)."""

    def advance(self, n: int, **info: float) -> None:
        """``n`` more items done; ``info`` holds running figures (e.g. loss)."""

    def done(self) -> None:
        """The current stage finished."""

    def epoch_end(self, epoch: int, row: dict[str, float]) -> None:
        """An epoch finished and was checkpointed; ``row`` is its history entry."""


# --- results -------------------------------------------------------------------------------------
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


def _atomic_write(path: Path, write) -> None:
    """Write to a temporary sibling, then rename: an interrupted write never leaves a torn file."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # safetensors writes 0600; a made backbone is meant to be shared
    os.replace(tmp, path)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _param_groups(objective: Objective, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices only: no decay on norms, biases, class/position tokens (ViT practice)."""
    skip = {f"student.{n}" for n in getattr(objective.student, "no_weight_decay", lambda: set())()}
    decay, no_decay = [], []
    for name, p in objective.named_parameters():
        (no_decay if p.ndim <= 1 or name in skip or name in ("mask_token", "decoder_pos") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_at(step: int, total: int, config: PretrainConfig) -> float:
    warmup = int(total * config.warmup_fraction)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return config.lr * 0.5 * (1 + math.cos(math.pi * progress))


def _batches(sources: list[Source], plan: list[tuple[int, torch.Tensor]], split: str, spec: Backbone,
             gen: torch.Generator | None, augments: bool):
    for s, idx in plan:
        data = getattr(sources[s], split)
        x = data.images[idx].float().div_(255.0)  # (B, C, H, W) in [0, 1]
        if augments and gen is not None:
            x = augment(x, gen)
        yield Batch(preprocess(x, spec.image_size, spec.mean, spec.std), data.labels[idx], s, idx)


def _eval_batches(sources: list[Source], spec: Backbone, batch_size: int = 256) -> list[Batch]:
    plan = [(s, torch.arange(i, min(i + batch_size, len(src.val))))
            for s, src in enumerate(sources) for i in range(0, len(src.val), batch_size)]
    return list(_batches(sources, plan, "val", spec, None, False))


def _export(objective: Objective, backbone: Backbone, config: PretrainConfig, sources: list[Source],
            out_dir: Path, history: list[dict[str, float]], facts: dict[str, Any], elapsed: float,
            steps: int) -> tuple[Path, Path]:
    """Write the student's weights (heads, decoder, projection dropped) and the JSON sidecar."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().clone() for k, v in objective.student.state_dict().items()}  # (owned copies)
    weights, sidecar = out_dir / WEIGHTS, out_dir / SIDECAR
    # one metadata key: safetensors writes several in random order, and the file must be reproducible
    meta = {"promptsearch": json.dumps({"format": "promptsearch-backbone", "backbone": config.backbone, "mode": config.mode,
                                        "image_size": config.image_size, "patch_size": config.patch_size}, sort_keys=True)}
    _atomic_write(weights, lambda p: save_file(state, str(p), metadata=meta))
    import timm

    from . import __version__

    doc = {
        "format": "promptsearch-backbone", "version": SIDECAR_VERSION,
        "weights": WEIGHTS, "sha256": file_sha256(weights), "bytes": weights.stat().st_size,
        "backbone": {"name": config.backbone, "image_size": config.image_size, "patch_size": config.patch_size,
                     "num_features": backbone.num_features, "params": sum(v.numel() for v in state.values()),
                     "mean": list(backbone.mean), "std": list(backbone.std)},
        "use": use_flags(config.backbone, config.image_size, config.patch_size, weights),
        "mode": config.mode, "config": config.model_dump(mode="json"),
        "data": [s.describe() for s in sources],
        "epochs": len(history), "steps": steps, "metrics": epoch_metrics(history[-1]), "history": history,
        "wall_time_s": round(elapsed, 2), "peak_rss_mb": round(_peak_rss_mb(), 1),
        "threads": torch.get_num_threads(),
        "versions": {"promptsearch": __version__, "torch": torch.__version__, "timm": timm.__version__},
        **facts,
    }
    _atomic_write(sidecar, lambda p: p.write_text(json.dumps(doc, indent=2) + "\n"))
    return weights, sidecar


def _load_checkpoint(path: Path, config: PretrainConfig) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise PretrainError(f"cannot read checkpoint {path}: {e}; pass fresh=True (--fresh) to start over") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != "promptsearch-pretrain-checkpoint":
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
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        sources = load_sources(config, data_root, labeled=mode.needs_labels)
        torch.manual_seed(config.seed)  # student, heads, decoder: the same init for every run of a config
        try:
            backbone = build_backbone(config.spec)
        except (RuntimeError, ValueError, TypeError) as e:
            raise PretrainError(f"backbone {config.backbone!r}: {e}") from None
        objective = mode(backbone, sources, config)
        out_dir.mkdir(parents=True, exist_ok=True)
        ckpt_path = out_dir / CHECKPOINT
        if fresh:
            for name in (CHECKPOINT, WEIGHTS, SIDECAR):
                (out_dir / name).unlink(missing_ok=True)
        ckpt = _load_checkpoint(ckpt_path, config) if ckpt_path.exists() else None
        facts = objective.prepare(sources, out_dir, hooks)
        optimizer = torch.optim.AdamW(_param_groups(objective, config.weight_decay), lr=config.lr)
        history: list[dict[str, float]] = []
        elapsed, start = 0.0, 1
        if ckpt is not None:
            objective.load_state_dict(ckpt["objective"])
            optimizer.load_state_dict(ckpt["optimizer"])
            history, elapsed, start = list(ckpt["history"]), float(ckpt["elapsed_s"]), int(ckpt["epoch"]) + 1
        per_epoch = steps_per_epoch(sources, config.batch_size)
        total_steps = per_epoch * config.epochs
        eval_batches = _eval_batches(sources, backbone)
        last = config.epochs if stop_after is None else min(config.epochs, start - 1 + stop_after)
        for epoch in range(start, last + 1):
            t0 = time.perf_counter()
            torch.manual_seed(config.seed * 100_003 + epoch)  # any global-RNG use is resume-stable too
            gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
            objective.train()
            hooks.stage(f"epoch {epoch}/{config.epochs}", per_epoch)
            total, n = 0.0, 0
            step = (epoch - 1) * per_epoch
            for batch in _batches(sources, epoch_plan(sources, config.batch_size, gen), "train", backbone, gen,
                                  config.augments):
                for g in optimizer.param_groups:
                    g["lr"] = _lr_at(step, total_steps, config)
                loss, _ = objective.loss(batch, gen)
                value = loss.item()  # one device sync a step
                if not math.isfinite(value):
                    raise PretrainError(f"non-finite loss at epoch {epoch}, step {step + 1}: lower --lr "
                                        f"(now {config.lr}); the last good checkpoint is kept")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(objective.parameters(), 1.0)
                optimizer.step()
                total += value * len(batch.y)
                n += len(batch.y)
                step += 1
                hooks.advance(1, loss=total / n)
            objective.eval()
            row = {"epoch": float(epoch), "train_loss": total / n, "lr": _lr_at(step - 1, total_steps, config)}
            row.update(objective.evaluate(eval_batches))
            row["seconds"] = time.perf_counter() - t0
            elapsed += row["seconds"]
            history.append(row)
            hooks.done()
            state = {"format": "promptsearch-pretrain-checkpoint", "version": CHECKPOINT_VERSION,
                     "config": config.model_dump(mode="json"), "epoch": epoch, "history": history,
                     "elapsed_s": elapsed, "objective": objective.state_dict(), "optimizer": optimizer.state_dict()}
            _atomic_write(ckpt_path, lambda p: torch.save(state, p))
            hooks.epoch_end(epoch, row)
        done = len(history)
        result = dict(out_dir=str(out_dir), start_epoch=start, epochs_done=done, epochs=config.epochs,
                      history=history, wall_time_s=round(elapsed, 2), peak_rss_mb=round(_peak_rss_mb(), 1))
        if done < config.epochs:
            return PretrainResult(status="stopped", **result)
        weights, sidecar = _export(objective, backbone, config, sources, out_dir, history, facts, elapsed, total_steps)
        return PretrainResult(status="completed", weights=str(weights), sidecar=str(sidecar),
                              metrics=epoch_metrics(history[-1]), **result)
    finally:
        torch.set_num_threads(old_threads)


def read_sidecar(weights: str | Path) -> dict[str, Any]:
    """The sidecar of a weights file, checked: its sha256 must match the file's."""
    weights = Path(weights)
    sidecar = weights.with_suffix(".json")
    if not sidecar.exists():
        raise PretrainError(f"no sidecar {sidecar} next to {weights}")
    doc = json.loads(sidecar.read_text())
    if doc.get("sha256") != file_sha256(weights):
        raise PretrainError(f"{weights} does not match its sidecar's sha256 (file changed or replaced)")
    return doc
