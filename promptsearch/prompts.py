"""Prompted models: learnable prompts on a frozen, stock timm or torchvision backbone.

    python -c "from promptsearch.prompts import *; from promptsearch.space import load_space; \
m = build_prompted_model(load_space('medical').sample(1).arch, BackboneSpec('vit_tiny_patch16_224', image_size=28, patch_size=4), 2); print(m.cost())"

Two prompt modules, both made of *components* (one learnable block each) and a *fusion*:

* ``token``: VPT-style prompt tokens inside a timm ``VisionTransformer``. The model is not
  forked: we call its own ``patch_embed -> _pos_embed -> norm_pre -> blocks -> norm`` and insert
  prompts after ``_pos_embed`` at ``num_prefix_tokens`` (or elsewhere, by placement), overwrite
  them before each prompted block for deep prompts, and strip them before ``forward_head``.
* ``pixel``: input-level prompts for any backbone (CNNs too): a learnable frame of width w
  around the image (padding prompt) or a learnable overlay on the whole image, added to the
  normalised input.

The backbone is frozen with ``requires_grad_(False)`` and kept in eval mode; what trains is the
prompt (components + fusion) and a new linear head.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .registry import Registry
from .space import Architecture

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class IncompatibleCandidate(ValueError):
    """A candidate the backbone cannot run (e.g. token prompts on a CNN)."""


# --- initialisation ------------------------------------------------------------------------------
INITS: Registry = Registry("init")


@INITS.register("normal")
def _init_normal(t: torch.Tensor, fan: int) -> None:
    nn.init.normal_(t, std=0.02)


@INITS.register("xavier")
def _init_xavier(t: torch.Tensor, fan: int) -> None:
    # VPT: uniform(-v, v) with v = sqrt(6 / (fan_in + fan_out)), fan_in = the patch's pixel count
    v = math.sqrt(6.0 / (fan + t.shape[-1]))
    nn.init.uniform_(t, -v, v)


@INITS.register("uniform")
def _init_uniform(t: torch.Tensor, fan: int) -> None:
    nn.init.uniform_(t, -0.1, 0.1)


@INITS.register("zero")
def _init_zero(t: torch.Tensor, fan: int) -> None:
    nn.init.zeros_(t)


# --- fusion of component blocks -------------------------------------------------------------------
# A fusion maps stacked blocks (L, n, T, D) -> prompts (L, P, D), where L = prompted layers (or 1),
# n = components, T = tokens (or pixels) per block, D = width (embed dim, or 3 colour channels).
FUSIONS: Registry = Registry("fusion")


class Fusion(nn.Module):
    def out_tokens(self, n: int, t: int) -> int:
        raise NotImplementedError


@FUSIONS.register("concat")
class ConcatFusion(Fusion):
    """Blocks side by side: P = n * T tokens (for pixels: each block owns a segment)."""

    def __init__(self, layers: int, n: int, t: int, d: int):
        super().__init__()

    def forward(self, blocks: torch.Tensor) -> torch.Tensor:
        L, n, T, D = blocks.shape
        return blocks.reshape(L, n * T, D)  # (L, n*T, D)

    def out_tokens(self, n: int, t: int) -> int:
        return n * t


@FUSIONS.register("attention")
class AttentionFusion(Fusion):
    """T learned queries per layer attend over all n*T component tokens: P = T."""

    def __init__(self, layers: int, n: int, t: int, d: int):
        super().__init__()
        self.queries = nn.Parameter(torch.empty(layers, t, d))  # (L, T, D)
        nn.init.normal_(self.queries, std=0.02)

    def forward(self, blocks: torch.Tensor) -> torch.Tensor:
        L, n, T, D = blocks.shape
        kv = blocks.reshape(L, n * T, D)  # (L, n*T, D)
        attn = torch.softmax(self.queries @ kv.transpose(1, 2) / math.sqrt(D), dim=-1)  # (L, T, n*T)
        return attn @ kv  # (L, T, D)

    def out_tokens(self, n: int, t: int) -> int:
        return t


@FUSIONS.register("gate")
class GateFusion(Fusion):
    """Learned sigmoid gates weigh the blocks, summed into one block: P = T."""

    def __init__(self, layers: int, n: int, t: int, d: int):
        super().__init__()
        self.gates = nn.Parameter(torch.zeros(layers, n))  # (L, n); sigmoid(0) = .5 at start

    def forward(self, blocks: torch.Tensor) -> torch.Tensor:
        w = torch.sigmoid(self.gates)[:, :, None, None]  # (L, n, 1, 1)
        return (w * blocks).sum(1)  # (L, T, D)

    def out_tokens(self, n: int, t: int) -> int:
        return t


# --- token prompts -------------------------------------------------------------------------------
PLACEMENTS: Registry = Registry("placement")
# placement -> start index of the prompt slice, given (prefix tokens, patch tokens)
PLACEMENTS.register("prepend")(lambda prefix, n_patches: prefix)
PLACEMENTS.register("append")(lambda prefix, n_patches: prefix + n_patches)
PLACEMENTS.register("insert")(lambda prefix, n_patches: prefix + n_patches // 2)
PLACEMENTS.register("replace")(lambda prefix, n_patches: prefix)  # overwrites the first P patches


def prompted_layers(depth: str, n_blocks: int) -> int:
    """How many transformer blocks get fresh prompts: shallow = 1, deep = all, first_k = k."""
    if depth == "shallow":
        return 1
    if depth == "deep":
        return n_blocks
    k = int(depth.removeprefix("first_"))
    if k > n_blocks:
        raise IncompatibleCandidate(f"depth {depth} needs {k} blocks; the backbone has {n_blocks}")
    return k


class TokenPrompt(nn.Module):
    """Component blocks of prompt tokens for L layers, fused to P tokens per layer."""

    def __init__(self, arch: Architecture, dim: int, n_blocks: int, patch_pixels: int):
        super().__init__()
        self.layers = prompted_layers(arch.depth, n_blocks)
        n = max(1, len(arch.component_names))  # a space without components = one plain VPT block
        self.blocks = nn.Parameter(torch.empty(self.layers, n, arch.tokens, dim))  # (L, n, T, D)
        INITS.get_or_raise(arch.init)(self.blocks.data, patch_pixels)
        fusion = arch.fusion if n > 1 else "concat"
        self.fusion = FUSIONS.get_or_raise(fusion)(self.layers, n, arch.tokens, dim)
        self.n_tokens = self.fusion.out_tokens(n, arch.tokens)
        self.dropout = nn.Dropout(arch.dropout)

    def forward(self) -> torch.Tensor:
        return self.dropout(self.fusion(self.blocks))  # (L, P, D)


class PixelPrompt(nn.Module):
    """Component pixel patterns on a region of the input (a frame of width w, or all of it)."""

    def __init__(self, arch: Architecture, image_size: int):
        super().__init__()
        S = image_size
        mask = torch.zeros(S, S, dtype=torch.bool)
        if arch.pixel_prompt == "frame":
            w = arch.frame_width
            if 2 * w >= S:
                raise IncompatibleCandidate(f"frame width {w} leaves nothing of a {S}px image")
            mask[:w], mask[-w:], mask[:, :w], mask[:, -w:] = True, True, True, True
        else:
            mask[:] = True
        self.register_buffer("region", mask.flatten().nonzero().squeeze(1), persistent=False)  # (R,)
        self.image_size = S
        R = self.region.numel()
        n = max(1, len(arch.component_names))
        self.fusion_name = arch.fusion if n > 1 else "concat"
        if self.fusion_name == "concat":
            # each component owns one contiguous segment of the region: R pixels in all
            sizes = [R // n + (i < R % n) for i in range(n)]
            self.patterns = nn.ParameterList([nn.Parameter(torch.empty(3, s)) for s in sizes])  # (3, R_i)
        else:
            self.patterns = nn.ParameterList([nn.Parameter(torch.empty(3, R)) for _ in range(n)])  # (3, R)
        for p in self.patterns:
            INITS.get_or_raise(arch.init)(p.data, 3)
        if self.fusion_name == "gate":
            self.gates = nn.Parameter(torch.zeros(n))  # (n,)
        elif self.fusion_name == "attention":
            # input-conditioned: the image's mean colour queries the components
            self.query = nn.Linear(3, n)  # (3 -> n) logits per sample
        self.n_pixels = R

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        if self.fusion_name == "concat":
            pattern = torch.cat(list(self.patterns), dim=1).expand(B, -1, -1)  # (B, 3, R)
        else:
            stacked = torch.stack(list(self.patterns))  # (n, 3, R)
            if self.fusion_name == "gate":
                pattern = torch.einsum("n,ncr->cr", torch.sigmoid(self.gates), stacked).expand(B, -1, -1)
            else:
                w = torch.softmax(self.query(x.mean(dim=(2, 3))), dim=-1)  # (B, n)
                pattern = torch.einsum("bn,ncr->bcr", w, stacked)  # (B, 3, R)
        canvas = x.new_zeros(B, 3, self.image_size * self.image_size)  # (B, 3, S*S)
        canvas = canvas.index_copy(2, self.region, pattern)
        return x + canvas.view_as(x)  # (B, 3, S, S)


# --- backbones ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackboneSpec:
    """Which frozen model to prompt, at what working size, with which weights.

    ``name``: a timm model name, or ``torchvision:<name>`` for torchvision's classification models.
    ``weights``: a local file (offline first); ``pretrained=True`` lets timm/torchvision fetch hub
    weights; neither = random init (tests). ``image_size=None`` follows the backbone's default.
    """

    name: str = "vit_tiny_patch16_224"
    image_size: int | None = None
    patch_size: int | None = None  # ViTs only: override the patch size (e.g. 4 for 28 px input)
    weights: str | None = None
    pretrained: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict, hash=False)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "image_size": self.image_size, "patch_size": self.patch_size,
                "weights": self.weights, "pretrained": self.pretrained, "kwargs": dict(self.kwargs)}


@dataclass
class Backbone:
    model: nn.Module  # returns (B, num_features) pooled features
    num_features: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    is_vit: bool


BACKBONE_SOURCES: Registry = Registry("backbone source")


def preprocess(x: torch.Tensor, size: int, mean: Sequence[float] | torch.Tensor,
               std: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) floats in [0, 1] -> (B, 3, size, size) normalised with the backbone's mean/std."""
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)  # (B, 3, h, w)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std  # (B, 3, S, S)


def file_sha256(path: str | Path) -> str:
    """The sha256 of a (weights) file, read in 1 MiB chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors or torch file (``weights_only``: no code is run)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"backbone weights {path} not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], skip_prefixes: tuple[str, ...], source: str) -> None:
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(skip_prefixes)}
    bad = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if bad:
        raise ValueError(f"{source}: shapes differ for {bad[:5]} (wrong architecture or image/patch size?)")
    missing = [k for k in own if k not in state and not k.startswith(skip_prefixes)]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ValueError(f"{source}: does not match the backbone: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.load_state_dict(state, strict=False)


def weights_geometry(weights: str | Path | None) -> dict[str, int]:
    """Image/patch size recorded beside a weights file made by ``promptsearch pretrain`` (its
    ``.json`` sidecar), so ``--backbone-weights FILE`` alone builds the ViT it was trained as."""
    sidecar = Path(weights).with_suffix(".json") if weights else None
    if sidecar is None or not sidecar.is_file():
        return {}
    try:
        doc = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return {}
    if doc.get("format") != "promptsearch-backbone":
        return {}
    return {k: v for k, v in doc.get("backbone", {}).items() if k in ("image_size", "patch_size") and v}


@BACKBONE_SOURCES.register("timm")
def _timm_backbone(spec: BackboneSpec, name: str) -> Backbone:
    import timm
    from timm.layers import resample_abs_pos_embed

    kwargs = dict(spec.kwargs)
    made = weights_geometry(spec.weights)  # explicit sizes win; the sidecar fills the gaps
    image_size, patch_size = spec.image_size or made.get("image_size"), spec.patch_size or made.get("patch_size")
    if image_size:
        kwargs["img_size"] = image_size
    if patch_size:
        kwargs["patch_size"] = patch_size
    try:
        model = timm.create_model(name, pretrained=spec.pretrained, num_classes=0, **kwargs)
    except TypeError as e:  # a CNN given img_size/patch_size
        if "img_size" in kwargs or "patch_size" in kwargs:
            kwargs.pop("img_size", None), kwargs.pop("patch_size", None)
            model = timm.create_model(name, pretrained=spec.pretrained, num_classes=0, **kwargs)
        else:
            raise ValueError(f"timm model {name!r}: {e}") from None
    if spec.weights:
        state = load_state_file(spec.weights)
        if "pos_embed" in state and hasattr(model, "pos_embed") and state["pos_embed"].shape != model.pos_embed.shape:
            prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
            state["pos_embed"] = resample_abs_pos_embed(
                state["pos_embed"], new_size=model.patch_embed.grid_size, num_prefix_tokens=prefix)
        classifier = model.pretrained_cfg.get("classifier", "head")
        classifiers = tuple(classifier) if isinstance(classifier, (list, tuple)) else (classifier,)
        _load_into(model, state, tuple(f"{c}." for c in classifiers) + ("head.", "fc."), spec.weights)
    cfg = model.pretrained_cfg
    size = image_size or (cfg.get("input_size", (3, 224, 224))[-1])
    is_vit = all(hasattr(model, a) for a in ("patch_embed", "blocks", "_pos_embed", "num_prefix_tokens", "forward_head"))
    return Backbone(model, model.num_features, size, tuple(cfg.get("mean", IMAGENET_MEAN)),
                    tuple(cfg.get("std", IMAGENET_STD)), is_vit)


@BACKBONE_SOURCES.register("torchvision")
def _torchvision_backbone(spec: BackboneSpec, name: str) -> Backbone:
    import torchvision

    try:
        model = torchvision.models.get_model(name, weights="DEFAULT" if spec.pretrained else None, **spec.kwargs)
    except ValueError as e:
        raise ValueError(f"torchvision model {name!r}: {e}") from None
    if spec.weights:
        _load_into(model, load_state_file(spec.weights), (), spec.weights)
    # strip the final classifier layer (fc, classifier[-1], heads.head, ...): features come out
    last_name, last = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    parent = model.get_submodule(last_name.rpartition(".")[0]) if "." in last_name else model
    setattr(parent, last_name.rpartition(".")[2], nn.Identity())
    return Backbone(model, last.in_features, spec.image_size or 224, IMAGENET_MEAN, IMAGENET_STD, False)


def build_backbone(spec: BackboneSpec) -> Backbone:
    source, _, name = spec.name.rpartition(":")
    return BACKBONE_SOURCES.get_or_raise(source or "timm")(spec, name)


# --- the prompted model --------------------------------------------------------------------------
class PromptedModel(nn.Module):
    """Frozen backbone + learnable prompt + linear head. Input: (B, C, h, w) floats in [0, 1] at
    any size; it is resized to the working size, grey is repeated to 3 channels, then normalised."""

    def __init__(self, backbone: Backbone, arch: Architecture, num_outputs: int):
        super().__init__()
        self.arch = arch
        self.backbone = backbone.model.requires_grad_(False).eval()
        self.image_size = backbone.image_size
        self.register_buffer("mean", torch.tensor(backbone.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(backbone.std).view(1, 3, 1, 1), persistent=False)
        if arch.module == "token":
            if not backbone.is_vit:
                raise IncompatibleCandidate(
                    "token prompts need a timm VisionTransformer backbone; this backbone takes pixel "
                    "prompts only (use a space with module: [pixel], e.g. search_spaces/pixel.yaml)")
            vit = self.backbone
            self.n_patches = vit.patch_embed.num_patches
            patch = vit.patch_embed.patch_size
            self.prompt = TokenPrompt(arch, vit.embed_dim, len(vit.blocks), 3 * patch[0] * patch[1])
            self.start = PLACEMENTS.get_or_raise(arch.placement)(vit.num_prefix_tokens, self.n_patches)
            if arch.placement == "replace" and self.prompt.n_tokens > self.n_patches:
                raise IncompatibleCandidate(f"replace placement needs {self.prompt.n_tokens} prompt tokens "
                                            f"<= {self.n_patches} patch tokens")
        else:
            self.prompt = PixelPrompt(arch, self.image_size)
        self.head = nn.Linear(backbone.num_features, num_outputs)

    def train(self, mode: bool = True) -> PromptedModel:
        super().train(mode)
        self.backbone.eval()  # frozen: dropout off, norm statistics fixed
        return self

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return preprocess(x, self.image_size, self.mean, self.std)  # (B, 3, S, S)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(x)
        if self.arch.module == "pixel":
            return self.backbone(self.prompt(x))  # (B, F)
        return self._token_features(x)

    def _token_features(self, x: torch.Tensor) -> torch.Tensor:
        vit = self.backbone
        B = x.shape[0]
        prompts = self.prompt()  # (L, P, D)
        P, s = prompts.shape[1], self.start
        x = vit.patch_embed(x)
        x = vit._pos_embed(x)  # (B, prefix + N, D)
        x = vit.patch_drop(x)
        x = vit.norm_pre(x)
        replace = self.arch.placement == "replace"
        for i, block in enumerate(vit.blocks):
            if i < prompts.shape[0]:
                p = prompts[i].unsqueeze(0).expand(B, -1, -1)  # (B, P, D)
                if i == 0 and not replace:
                    x = torch.cat([x[:, :s], p, x[:, s:]], dim=1)  # (B, prefix + P + N, D)
                else:
                    x = torch.cat([x[:, :s], p, x[:, s + P:]], dim=1)  # overwrite the prompt slice
            x = block(x)
        x = vit.norm(x)
        if not replace:
            x = torch.cat([x[:, :s], x[:, s + P:]], dim=1)  # (B, prefix + N, D): prompts stripped
        return vit.forward_head(x, pre_logits=True)  # (B, F)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, num_outputs)

    # what trains, exactly
    def prompt_parameters(self) -> list[nn.Parameter]:
        return list(self.prompt.parameters())

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        names = {id(p) for p in self.trainable_parameters()}
        return {k: v.detach().clone().contiguous() for k, v in self.named_parameters() if id(v) in names}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        own = set(self.trainable_state_dict())
        if set(state) != own:
            raise ValueError(f"prompt weights do not match this candidate: missing {sorted(own - set(state))[:5]}, "
                             f"unexpected {sorted(set(state) - own)[:5]}")
        self.load_state_dict(state, strict=False)

    def cost(self) -> dict[str, int]:
        """Exact trainable counts and the added input cost (tokens per block, or prompted pixels)."""
        prompt = sum(p.numel() for p in self.prompt_parameters())
        head = sum(p.numel() for p in self.head.parameters())
        out = {"prompt_params": prompt, "head_params": head, "trainable_params": prompt + head,
               "backbone_params": sum(p.numel() for p in self.backbone.parameters())}
        if self.arch.module == "token":
            out["prompt_tokens"] = self.prompt.n_tokens
            out["prompted_layers"] = self.prompt.layers
        else:
            out["prompt_pixels"] = self.prompt.n_pixels
        return out


def build_prompted_model(arch: Architecture, spec: BackboneSpec | Backbone, num_outputs: int) -> PromptedModel:
    """Architecture + backbone -> a PromptedModel whose only trainable parts are prompt and head."""
    backbone = spec if isinstance(spec, Backbone) else build_backbone(spec)
    return PromptedModel(backbone, arch, num_outputs)
