"""What a pretraining run is asked for (``PretrainConfig``), its error, and its output folder's files.

    python -c "from promptsearch.pretrain import PretrainConfig; print(PretrainConfig.make(mode='mae').spec)"
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..backbones import BackboneSpec

# the output folder
CHECKPOINT = "checkpoint.pt"
WEIGHTS = "backbone.safetensors"
SIDECAR = "backbone.json"
TEACHER_CACHE = "teacher_cache.safetensors"


class PretrainError(ValueError):
    """A bad pretraining request (config, resume state, teacher): the message says what to change."""


def shared_mode() -> int:
    """Permission bits for the files written to the output folder: ``0o666 & ~umask`` (safetensors
    alone writes 0600; a made backbone is meant to be shared)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


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
        from .modes import PRETRAIN_MODES  # here, not at the top: the modes module imports this one

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
