"""The multi-task model a library is learned with: one block per component, shared by every source
dataset that carries its tag, composed per dataset through the fusion, one head per dataset.

    python -c "from promptsearch.library.model import LibraryModel; help(LibraryModel)"

A dataset's prompt is the stock :class:`~promptsearch.prompts.PixelPrompt` (an overlay: the blocks
are full-image patterns) or :class:`~promptsearch.prompts.TokenPrompt` whose blocks are the shared
ones, so a library block is composed exactly as a trial composes it. The heads (and each dataset's
fusion parameters) are left out of the library: they are ``tasks.safetensors``, kept beside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..backbones import Backbone, preprocess
from ..prompts import INITS, PixelPrompt, TokenPrompt, prompted_layers
from ..space import Architecture


@dataclass(frozen=True)
class Task:
    """One source dataset as the build sees it: its name, task type, classes and composition."""

    name: str
    task: str  # binary-class | multi-class | multi-label
    num_outputs: int
    components: tuple[str, ...]  # anatomy, modality, pathology tags, generic: the stack order


class SharedTokenPrompt(TokenPrompt):
    """A TokenPrompt whose blocks are the library's shared parameters, stacked in composition order."""

    def __init__(self, arch: Architecture, shared: Sequence[nn.Parameter], *args, **kwargs):
        super().__init__(arch, *args, **kwargs)
        del self.blocks  # its own fresh blocks: replaced by the shared ones
        self.blocks = None
        self.shared = nn.ParameterList(list(shared))

    def stacked(self) -> torch.Tensor:
        return torch.stack(list(self.shared), dim=1)  # (L, n, T, D)


def task_arch(module: str, components: Sequence[str], fusion: str, init: str, tokens: int, depth: str) -> Architecture:
    """The architecture a dataset's prompt has in the build (the fusion only matters for n > 1)."""
    comps = {"library": tuple(components)}
    if module == "pixel":
        return Architecture(module="pixel", pixel_prompt="overlay", fusion=fusion, init=init, components=comps)
    return Architecture(module="token", tokens=tokens, depth=depth, fusion=fusion, init=init, components=comps)


class LibraryModel(nn.Module):
    """Frozen backbone + ``blocks`` (component -> one shared block) + per-task prompt and head.

    ``frozen``: blocks that stay fixed (a parent library's, in ``library add``). Blocks are made in
    sorted name order, then each task's prompt and head in task order: one seed, one model."""

    def __init__(self, backbone: Backbone, tasks: Sequence[Task], module: str, fusion: str, init: str,
                 tokens: int = 8, depth: str = "shallow", start: dict[str, torch.Tensor] | None = None,
                 frozen: Iterable[str] = ()):
        super().__init__()
        self.backbone = backbone.model.requires_grad_(False).eval()
        self.image_size = backbone.image_size
        self.module = module
        self.register_buffer("mean", torch.tensor(backbone.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(backbone.std).view(1, 3, 1, 1), persistent=False)
        S = backbone.image_size
        names = sorted({c for t in tasks for c in t.components} | set(start or {}))
        frozen = set(frozen)
        self.blocks = nn.ParameterDict()
        if module == "pixel":
            shape, fan = (3, S * S), 3  # a full-image pattern, flattened as PixelPrompt holds it
        else:
            if not backbone.is_vit:
                raise ValueError("token blocks need a timm VisionTransformer backbone; use module pixel on a CNN")
            vit = backbone.model
            patch = vit.patch_embed.patch_size
            shape, fan = (prompted_layers(depth, len(vit.blocks)), tokens, vit.embed_dim), 3 * patch[0] * patch[1]
        for name in names:
            t = torch.empty(shape)
            INITS.get_or_raise(init)(t, fan)
            if start and name in start:
                t.copy_(start[name].reshape(shape))
            self.blocks[name] = nn.Parameter(t, requires_grad=name not in frozen)
        self.tasks = list(tasks)
        self.prompts = nn.ModuleList()
        self.heads = nn.ModuleList()
        for task in self.tasks:
            arch = task_arch(module, task.components, fusion, init, tokens, depth)
            shared = [self.blocks[c] for c in task.components]
            if module == "pixel":
                prompt = PixelPrompt(arch, S)
                prompt.patterns = nn.ParameterList(shared)
            else:
                vit = backbone.model
                patch = vit.patch_embed.patch_size
                prompt = SharedTokenPrompt(arch, shared, vit.embed_dim, len(vit.blocks), 3 * patch[0] * patch[1],
                                           vit.num_prefix_tokens, vit.patch_embed.num_patches)
            self.prompts.append(prompt)
            self.heads.append(nn.Linear(backbone.num_features, task.num_outputs))

    def train(self, mode: bool = True) -> LibraryModel:
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor, task: int) -> torch.Tensor:
        x = preprocess(x, self.image_size, self.mean, self.std)  # (B, 3, S, S)
        return self.heads[task](self.prompts[task].features(self.backbone, x))  # (B, K)

    def block_tensors(self) -> dict[str, torch.Tensor]:
        """component -> its block in the library's geometry: (3, S, S) pixel, (L, T, D) token."""
        S = self.image_size
        return {k: (v.detach().reshape(3, S, S) if self.module == "pixel" else v.detach()).clone()
                for k, v in self.blocks.items()}

    def state(self) -> dict[str, torch.Tensor]:
        """What a checkpoint holds: blocks, task prompts (fusion parameters) and heads; no backbone."""
        return {k: v.detach().clone() for k, v in self.state_dict().items() if not k.startswith("backbone.")}

    def task_state(self) -> dict[str, torch.Tensor]:
        """Each task's fusion parameters and head, keyed by dataset name (``tasks.safetensors``)."""
        out = {}
        for task, prompt, head in zip(self.tasks, self.prompts, self.heads):
            shared = {id(p) for p in self.blocks.values()}
            for k, v in prompt.named_parameters():
                if id(v) not in shared:
                    out[f"{task.name}/prompt.{k}"] = v.detach().clone().contiguous()
            for k, v in head.named_parameters():
                out[f"{task.name}/head.{k}"] = v.detach().clone().contiguous()
        return out

    def load_task_state(self, state: dict[str, torch.Tensor], names: Iterable[str]) -> None:
        """Load the fusion parameters and heads of the tasks ``names`` from a ``task_state()``."""
        want = set(names)
        for task, prompt, head in zip(self.tasks, self.prompts, self.heads):
            if task.name not in want:
                continue
            shared = {id(p) for p in self.blocks.values()}
            for k, v in list(prompt.named_parameters()) + [(f"head.{k}", v) for k, v in head.named_parameters()]:
                if id(v) in shared:
                    continue
                key = f"{task.name}/{k if k.startswith('head.') else 'prompt.' + k}"
                if key not in state:
                    raise KeyError(key)
                v.data.copy_(state[key])
