"""Explanations of a prompted model: where it looks, and what its prompt learned.

    python -c "import torch; from promptsearch.explain import explain_images; from promptsearch.prompts import build_prompted_model; from promptsearch.space import Architecture; from promptsearch.backbones import BackboneSpec; \
m = build_prompted_model(Architecture(module='token', tokens=4), BackboneSpec('vit_tiny_patch16_224', image_size=28, patch_size=4), 2); print(explain_images(m, [torch.rand(1, 28, 28)], '/tmp/explain'))"

Every map is (B, H, W) at the image's own size, finite, non-negative and sums to 1 per image (a map
with no mass at all, e.g. a Grad-CAM that the ReLU zeroes everywhere, is uniform):

* :func:`attention_maps` (timm ViTs): attention from the CLS token, and (averaged) from the prompt
  tokens, to the image patches at chosen blocks. timm runs fused attention
  (``F.scaled_dot_product_attention``), which never forms the matrix; a forward hook on
  ``block.attn`` recomputes it from q and k (:func:`explicit_attention`) and leaves the output as is.
* :func:`gradcam_maps` (any backbone, any prompt or insert): ``pytorch_grad_cam.GradCAM`` (PyPI
  ``grad-cam``) on the last block's ``norm1`` of a ViT, its tokens reshaped to the patch grid with
  prefix and prompt tokens dropped, or on a CNN's last stage with at least a 4x4 grid.
* :func:`pixel_prompt_image`: the learned pixel prompt itself as an image.

:func:`explain_images` writes a PNG overlay per image and map (and the pixel prompt) and returns a
JSON-able record per image; it is what ``promptsearch explain BUNDLE IMAGE... --out DIR`` calls.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .adapters import find_stages
from .prompts import PixelPrompt, PromptedModel

ImageLike = str | Path | torch.Tensor | np.ndarray


# --- attention of a timm ViT ----------------------------------------------------------------------------
def explicit_attention(attn: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """timm ``Attention`` on its input x (B, N, D): the probabilities (B, H, N, N) from q and k,
    and the module's output (B, N, D) recomputed from them (equal to the fused kernel's)."""
    B, N, _ = x.shape
    dim = attn.num_heads * attn.head_dim
    qkv = attn.qkv(x).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, H, N, hd)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    probs = torch.softmax((q * attn.scale) @ k.transpose(-2, -1), dim=-1)  # (B, H, N, N)
    out = getattr(attn, "norm", nn.Identity())((probs @ v).transpose(1, 2).reshape(B, N, dim))  # (B, N, D)
    if getattr(attn, "gate", None) is not None:
        out = out * attn.gate(x).sigmoid()
    return probs, attn.proj_drop(attn.proj(out))  # (B, H, N, N), (B, N, D)


@contextlib.contextmanager
def record_attention(model: PromptedModel, layers: Sequence[int] = (-1,)) -> Iterator[dict[int, torch.Tensor]]:
    """Inside this block, each forward pass of ``model`` fills {block index: head-mean attention
    (B, T, T)} for the chosen blocks (negative indices count from the end); outputs are unchanged."""
    if not model.is_vit:
        raise ValueError("attention maps need a timm VisionTransformer backbone")
    blocks = model.backbone.blocks
    chosen = sorted({i % len(blocks) for i in layers})
    seen: dict[int, torch.Tensor] = {}

    def hook(i: int):
        def record(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            with torch.no_grad():
                seen[i] = explicit_attention(module, args[0])[0].mean(1)  # (B, T, T)
        return record

    with contextlib.ExitStack() as stack:
        for i in chosen:
            stack.enter_context(blocks[i].attn.register_forward_hook(hook(i)))
        yield seen


def token_layout(model: PromptedModel) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positions in a ViT's block sequence: the CLS token (empty without one), the prompt tokens
    (empty without token prompts), and patch i's token (-1 where a ``replace`` prompt sits)."""
    vit = model.backbone
    prefix, n = vit.num_prefix_tokens, vit.patch_embed.num_patches
    if hasattr(model.prompt, "layout"):
        prompts, patches = model.prompt.layout()
    else:
        prompts, patches = torch.zeros(0, dtype=torch.long), torch.arange(prefix, prefix + n)
    cls = torch.zeros(1 if getattr(vit, "cls_token", None) is not None else 0, dtype=torch.long)
    return cls, prompts, patches


def _patch_grid(values: torch.Tensor, patches: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, T, ...) per token -> (B, gh, gw, ...) per patch, zero where no patch token is."""
    picked = values[:, patches.clamp(min=0)]  # (B, N, ...)
    keep = (patches >= 0).view(1, -1, *([1] * (values.ndim - 2))).to(values.dtype)
    return (picked * keep).reshape(values.shape[0], *grid, *values.shape[2:])  # (B, gh, gw, ...)


def normalise(maps: torch.Tensor) -> torch.Tensor:
    """(B, H, W) -> non-negative, finite, each summing to 1 (uniform where there is no mass)."""
    maps = torch.nan_to_num(maps.float(), nan=0.0, posinf=0.0, neginf=0.0).clamp(min=0)
    total = maps.sum(dim=(1, 2), keepdim=True)  # (B, 1, 1)
    uniform = torch.full_like(maps, 1.0 / maps[0].numel())
    return torch.where(total > 0, maps / total.clamp(min=1e-30), uniform)  # (B, H, W)


def _to_image(grid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return normalise(F.interpolate(grid[:, None], size=size, mode="bilinear", align_corners=False)[:, 0])  # (B, H, W)


@torch.no_grad()
def attention_maps(model: PromptedModel, images: torch.Tensor, layers: Sequence[int] = (-1,)) -> dict[str, torch.Tensor]:
    """``attention_cls_block{i}`` and ``attention_prompts_block{i}`` maps (B, H, W) for images
    (B, C, H, W) in [0, 1]: where the CLS token and the prompt tokens look at block i."""
    model.eval()
    with record_attention(model, layers) as seen:
        model(images)
    cls, prompts, patches = token_layout(model)
    grid = tuple(model.backbone.patch_embed.grid_size)
    out = {}
    for i, probs in sorted(seen.items()):
        for name, rows in (("cls", cls), ("prompts", prompts)):
            if rows.numel():
                a = probs[:, rows.to(probs.device)].mean(1)  # (B, T): attention from these queries
                out[f"attention_{name}_block{i}"] = _to_image(_patch_grid(a, patches.to(a.device), grid), images.shape[-2:])
    return out


# --- Grad-CAM --------------------------------------------------------------------------------------------
MIN_CAM_GRID = 4  # a CNN's last stage at 28-32 px is 1x1 (stride 32): Grad-CAM takes the last one at least 4x4


@torch.no_grad()
def _last_stage_with_a_grid(model: PromptedModel) -> nn.Module:
    stages = [model.backbone.get_submodule(p) for p in find_stages(model.backbone)]
    sizes: dict[int, int] = {}
    with contextlib.ExitStack() as stack:
        for i, m in enumerate(stages):
            stack.enter_context(m.register_forward_hook(
                (lambda i: lambda mod, a, out: sizes.__setitem__(i, min(out.shape[-2:])))(i)))
        model.backbone(torch.zeros(1, 3, model.image_size, model.image_size, device=model.mean.device))
    big = [i for i in range(len(stages)) if sizes[i] >= MIN_CAM_GRID]
    return stages[big[-1] if big else max(range(len(stages)), key=sizes.__getitem__)]


def cam_target(model: PromptedModel):
    """Grad-CAM's target layer and reshape: a ViT's last ``norm1`` (tokens -> (B, D, gh, gw), prefix
    and prompt tokens dropped), or a CNN's last stage with at least a 4x4 grid (the last stage at
    the usual 224 px)."""
    if not model.is_vit:
        return _last_stage_with_a_grid(model), None
    vit = model.backbone
    _, _, patches = token_layout(model)
    grid = tuple(vit.patch_embed.grid_size)

    def reshape(tokens: torch.Tensor) -> torch.Tensor:  # (B, T, D)
        return _patch_grid(tokens, patches.to(tokens.device), grid).permute(0, 3, 1, 2)  # (B, D, gh, gw)

    return vit.blocks[-1].norm1, reshape


def gradcam_maps(model: PromptedModel, images: torch.Tensor, targets: Sequence[int] | None = None) -> torch.Tensor:
    """Grad-CAM maps (B, H, W) for images (B, C, H, W) in [0, 1], for ``targets`` (class indices;
    default: the predicted class). Gradients left on the trainable parameters are cleared."""
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:  # pragma: no cover - a missing optional dependency
        raise ImportError("Grad-CAM needs the grad-cam package: pip install grad-cam") from None
    layer, reshape = cam_target(model)
    x = images.detach().clone().requires_grad_(True)  # a frozen model with nothing before the layer still gets gradients
    chosen = None if targets is None else [ClassifierOutputTarget(int(t)) for t in targets]
    with GradCAM(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
        maps = cam(input_tensor=x, targets=chosen)  # (B, H, W), each min-max scaled to [0, 1]
    model.zero_grad(set_to_none=True)
    return normalise(torch.from_numpy(np.asarray(maps)))


@torch.no_grad()
def pixel_prompt_image(model: PromptedModel) -> torch.Tensor:
    """The learned pixel prompt (3, S, S) in [0, 1]: grey = unchanged, brighter/darker = what it adds
    in pixel units, scaled to its largest change (an ``attention`` fusion: the prompt a mean-colour
    image gets)."""
    if not isinstance(model.prompt, PixelPrompt):
        raise ValueError("only pixel prompts are an image")
    S = model.image_size
    blank = torch.zeros(1, 3, S, S, device=model.mean.device)  # the mean colour, normalised
    delta = (model.prompt(blank) - blank)[0] * model.std[0]  # (3, S, S) in pixel units
    peak = delta.abs().max()
    return (0.5 + 0.5 * delta / peak if peak > 0 else delta + 0.5).clamp(0, 1).cpu()


# --- images in, PNGs out ---------------------------------------------------------------------------------
def _as_image(image: ImageLike, mode: str | None = None, size: int | None = None) -> torch.Tensor:
    """A path, (C, H, W) / (H, W) uint8 or float array -> (C, H, W) float in [0, 1]. A path is read
    in ``mode`` (``"L"``/``"RGB"``, None: as stored) and resized to ``size`` x ``size`` (bilinear, as
    ``promptsearch predict`` reads it); an array is resized to ``size`` bilinearly."""
    if isinstance(image, (str, Path)):
        from .data import read_image

        image = read_image(image, mode, size)
    t = torch.as_tensor(np.asarray(image)) if not isinstance(image, torch.Tensor) else image.detach().cpu()
    if t.ndim == 2:
        t = t[None]
    t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()  # (C, H, W)
    if size and tuple(t.shape[-2:]) != (size, size):
        t = F.interpolate(t[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0].clamp(0, 1)
    return t


def _bundle_input(model: PromptedModel) -> tuple[str | None, int | None]:
    """What an exported model was fed (its bundle's input record): (PIL mode, size), else (None, None)."""
    rec = getattr(getattr(model, "bundle", None), "input", None)
    if rec is None:
        return None, None
    return ("L" if rec.channels == 1 else "RGB"), rec.size


def overlay(image: torch.Tensor, heat: torch.Tensor, alpha: float = 0.5, min_side: int = 224):
    """A PIL image: (C, H, W) in [0, 1] under a jet-coloured (H, W) map, upscaled (nearest) so the
    short side is at least ``min_side`` pixels."""
    from matplotlib import colormaps
    from PIL import Image

    rgb = image.expand(3, -1, -1).permute(1, 2, 0).numpy()  # (H, W, 3)
    h = heat.numpy()
    colour = colormaps["jet"](h / h.max() if h.max() > 0 else h)[..., :3]  # (H, W, 3)
    blend = np.clip((1 - alpha) * rgb + alpha * colour, 0, 1)
    return _upscaled(Image.fromarray((blend * 255).round().astype(np.uint8)), min_side)


def _upscaled(im, min_side: int):
    from PIL import Image

    k = max(1, -(-min_side // min(im.size)))
    return im.resize((im.size[0] * k, im.size[1] * k), Image.NEAREST) if k > 1 else im


def explain_images(model: PromptedModel, images: Sequence[ImageLike], out_dir: str | Path,
                   layers: Sequence[int] = (-1,), names: Sequence[str] | None = None, min_side: int = 224,
                   save_arrays: bool = False) -> list[dict[str, Any]]:
    """Explain each image (a path, or a (C, H, W) array): predict, compute its maps (attention on
    ViTs, Grad-CAM on any backbone), write ``{i:03d}_{name}_{map}.png`` overlays into ``out_dir``
    (short side at least ``min_side`` px; and ``pixel_prompt.png`` for pixel prompts). Returns one
    JSON-able record per image: name, size, prediction, label (when the model carries an export
    bundle), probabilities, and map -> PNG file name. ``save_arrays``: the maps themselves, (H, W)
    float32 at the image's size, in ``{i:03d}_{name}_maps.npz`` (record key ``arrays``), and the
    seconds each image took (``seconds``).

    A model loaded from a bundle sees each image as ``promptsearch predict`` feeds it (its channels,
    resized to the bundle's input size): same prediction; its maps are then resized back to the
    image's own size (``size``; ``input_size`` is what the model saw) and drawn over the image."""
    import time

    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bundle = getattr(model, "bundle", None)
    classes = list(getattr(bundle, "classes", []) or [])
    multi_label = getattr(bundle, "task", "") == "multi-label"
    device = model.mean.device
    prompt_png = None
    if isinstance(model.prompt, PixelPrompt):
        prompt_png = "pixel_prompt.png"
        img = (pixel_prompt_image(model).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        _upscaled(Image.fromarray(img), min_side).save(out / prompt_png)
    records = []
    for i, image in enumerate(images):
        t0 = time.perf_counter()
        name = names[i] if names else Path(image).stem if isinstance(image, (str, Path)) else f"image{i}"
        mode, size = _bundle_input(model)
        original = _as_image(image, mode)  # (C, H, W) at its own size
        x = _as_image(image, mode, size)[None].to(device)  # (1, C, h, w): what the model is fed
        model.eval()
        with torch.no_grad():
            logits = model(x)[0]
        probs = torch.sigmoid(logits) if multi_label else torch.softmax(logits, -1)
        pred = int(probs.argmax())
        maps = attention_maps(model, x, layers) if model.is_vit else {}
        maps["gradcam"] = gradcam_maps(model, x, [pred])
        if tuple(original.shape[-2:]) != tuple(x.shape[-2:]):  # back to the image's own size
            maps = {k: _to_image(m.to(device).float(), tuple(original.shape[-2:])) for k, m in maps.items()}
        files = {}
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name))
        for kind, m in maps.items():
            files[kind] = f"{i:03d}_{stem}_{kind}.png"
            overlay(original, m[0].cpu(), min_side=min_side).save(out / files[kind])
        record = {"image": str(name), "size": list(original.shape[-2:]), "input_size": list(x.shape[-2:]), "prediction": pred,
                  "probabilities": [round(float(p), 6) for p in probs], "maps": files}
        if save_arrays:
            record["arrays"] = f"{i:03d}_{stem}_maps.npz"
            np.savez_compressed(out / record["arrays"], **{k: m[0].cpu().numpy().astype(np.float32) for k, m in maps.items()})
            record["seconds"] = round(time.perf_counter() - t0, 4)
        if classes:
            record["label"] = classes[pred]
        if prompt_png:
            record["pixel_prompt"] = prompt_png
        records.append(record)
    return records
