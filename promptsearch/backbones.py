"""Frozen backbones: a :class:`~promptsearch.backbone_spec.BackboneSpec` -> a stock timm or
torchvision model that returns pooled features, with its input normalisation.

    python -c "from promptsearch.backbones import BackboneSpec, build_backbone; b = build_backbone(BackboneSpec('torchvision:mobilenet_v2', image_size=32)); print(b.num_features, b.image_size)"

Sources are a registry (``timm``, ``torchvision``); weights load from a local file
(``weights_only``: no code runs) with strict keys, so another architecture's file is an error that
names it, never a silent partial load.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .backbone_spec import BackboneSpec
from .registry import Registry

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Backbone", "BackboneSpec", "BACKBONE_SOURCES", "WeightsError",
           "build_backbone", "load_state_file", "preprocess"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsError(ValueError):
    """A weights file that is missing, unreadable or does not fit the backbone (names the file)."""


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


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors or torch file (``weights_only``: no code is run).
    A file that is not one raises :class:`WeightsError` naming the file and what it is instead."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"backbone weights {path} not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch/safetensors raise many kinds for a bad file
        raise WeightsError(f"backbone weights {path}: {_why_unreadable(path, e)}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"backbone weights {path}: not a state dict of tensors")
    return state


_PICKLE_CODE_OPS = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "BUILD"}


def _why_unreadable(path: Path, error: Exception) -> str:
    """What a file that torch/safetensors refused is, from its bytes (read, never unpickled)."""
    import pickletools
    import zipfile

    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    refused = "refused: loading it could run code"
    if not head:
        return "the file is empty"
    if "GLOBAL" in str(error) or "Unsupported global" in str(error):  # torch's weights_only unpickler refused it
        return f"it holds pickled code or objects, not plain tensors ({refused})"
    if zipfile.is_zipfile(path):  # torch's own format: a zip holding data.pkl
        return f"a zip torch cannot read as weights (corrupt, truncated or not a torch checkpoint: {_first_line(error)})"
    if head[:1] == b"\x80" and 2 <= head[1] <= 5:  # a pickle stream (torch's legacy format is one too)
        try:
            with open(path, "rb") as f:
                ops = {op.name for op, _, _ in pickletools.genops(f)}
        except Exception:  # noqa: BLE001 - a truncated or corrupt stream
            ops = set()
        if ops & _PICKLE_CODE_OPS:
            return f"a pickle payload that builds objects or calls code, not plain tensors ({refused})"
        return "a pickle stream torch cannot read as a checkpoint (corrupt or truncated)"
    try:
        head.decode("utf-8")
        if all(c.isprintable() or c.isspace() for c in head.decode("utf-8")):
            return "a text file, not weights (expected a .pth/.pt torch checkpoint or a .safetensors file)"
    except UnicodeDecodeError:
        pass
    if path.suffix == ".safetensors":
        return f"not a safetensors file ({_first_line(error)})"
    return "not a weights file torch or safetensors can read (corrupt, truncated or another format)"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], skip_prefixes: tuple[str, ...], source: str) -> None:
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(skip_prefixes)}
    bad = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if bad:
        raise WeightsError(f"backbone weights {source}: shapes differ for {bad[:5]} (wrong architecture or image/patch size?)")
    missing = [k for k in own if k not in state and not k.startswith(skip_prefixes)]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise WeightsError(f"backbone weights {source}: does not match the backbone (another architecture's weights?): "
                           f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.load_state_dict(state, strict=False)


@BACKBONE_SOURCES.register("timm")
def _timm_backbone(spec: BackboneSpec, name: str) -> Backbone:
    import timm
    from timm.layers import resample_abs_pos_embed

    kwargs = dict(spec.kwargs)
    geometry = spec.geometry()  # explicit sizes win; the sidecar fills the gaps
    image_size, patch_size = geometry.get("image_size"), geometry.get("patch_size")
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
