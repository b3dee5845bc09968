"""The pretraining modes (registry ``PRETRAIN_MODES``): supervised heads, masked autoencoding, distillation.

    python -c "from promptsearch.pretrain import PRETRAIN_MODES; print(sorted(PRETRAIN_MODES))"

Each mode is a :class:`PretrainMode`: a module that owns the student and whatever else trains with
it, and maps a batch to a loss. Only the student is exported.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import Backbone, BackboneSpec, build_backbone, preprocess
from ..files import atomic_write, file_sha256
from ..losses import loss_fn
from ..metrics import classification_metrics
from ..registry import Registry
from .batches import Batch
from .config import TEACHER_CACHE, PretrainConfig, PretrainError, shared_mode
from .hooks import PretrainHooks
from .sources import Source, images_hash

PRETRAIN_MODES: Registry[type[PretrainMode]] = Registry("pretraining mode")


class PretrainMode(nn.Module):
    """A student backbone plus whatever trains with it (heads, decoder, projection); maps a batch to a loss."""

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
class SupervisedMode(PretrainMode):
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
class MAEMode(PretrainMode):
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
class DistillMode(PretrainMode):
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
            "data": [images_hash(s.train, s.val) for s in sources]}).encode()).hexdigest()
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
            atomic_write(cache, lambda p: save_file(raw, str(p), metadata={"key": key}), mode=shared_mode())
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
