"""Prompted models: learnable prompts on a frozen, stock timm or torchvision backbone.

    python -c "from promptsearch.prompts import *; from promptsearch.space import load_space; \
m = build_prompted_model(load_space('medical').sample(1).arch, BackboneSpec('vit_tiny_patch16_224', image_size=28, patch_size=4), 2); print(m.cost())"

Prompt modules (``PROMPT_MODULES``), made of *components* (one learnable block each) and a *fusion*:

* ``token``: VPT-style prompt tokens inside a timm ``VisionTransformer``. The model is not
  forked: we call its own ``patch_embed -> _pos_embed -> norm_pre -> blocks -> norm`` and insert
  prompts after ``_pos_embed`` at ``num_prefix_tokens`` (or elsewhere, by placement), overwrite
  them before each prompted block for deep prompts, and strip them before ``forward_head``.
* ``pixel``: input-level prompts for any backbone (CNNs too): a learnable frame of width w
  around the image (padding prompt) or a learnable overlay on the whole image, added to the
  normalised input.
* ``none``: no input-side prompt; what trains is inserted into the backbone (below), or the head alone.

*Inserts* (``INSERTS``, filled by :mod:`promptsearch.adapters`) go inside the frozen backbone and
compose with any prompt module: bottleneck adapters in ViT blocks, LoRA on attention projections,
residual 1x1-conv adapters after CNN stages. They are forward hooks on the stock modules, attached
for the length of one forward pass, so the backbone object (and its ``state_dict``) is never
changed and can be shared by several prompted models.

The backbone is frozen with ``requires_grad_(False)`` and kept in eval mode; what trains is the
prompt (components + fusion), the inserts and a new linear head.

*Library blocks* (:mod:`promptsearch.library`): a component may start from a block learned on
data that shows its anatomy, modality or pathology instead of a fresh initialisation. The builder
takes ``library={component: block}``; library components come first in the stack (in the
architecture's order), then the scratch ones, so a model depends only on *which* library blocks it
holds and *how many* scratch blocks (``SearchSpace.canonical`` relies on this). ``arch.tuning ==
"frozen"`` keeps the library blocks fixed (``requires_grad=False``: not in the optimizer, not in
``prompt_params``, counted as ``library_params``, still saved with the prompt). How a block is used:

* token: a library block is (L0, T0, D); the candidate's (L, T) takes its first min(L, L0) layers and
  min(T, T0) tokens, the rest keeps its fresh initialisation. Every fusion then sees it as any block.
* pixel: a library block is a full-image pattern (3, S, S) at the library's image size (the trial's
  working size must equal it). A component's pattern is the block read at the pixels the component
  covers: a frame prompt reads the block on the frame of width w, an overlay on the whole image;
  with ``concat`` each component owns one contiguous segment of that region and reads the block
  there; ``gate`` and ``attention`` mix whole-region patterns, so each block is read on the full region.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping

import torch
from torch import nn

from . import adapters as _adapters  # noqa: F401 - fills INSERTS with "adapter" and "lora"
from .backbones import Backbone, BackboneSpec, build_backbone, preprocess
from .prompt_parts import INITS, INSERTS, IncompatibleCandidate  # shared with adapters (re-exported here)
from .registry import Registry
from .space import Architecture


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


def component_order(arch: Architecture, library: Mapping[str, object] | None = None) -> list[str]:
    """The order of component blocks in a prompt: library-backed ones first (in the architecture's
    order), then the scratch ones. Without a library: the architecture's order."""
    lib = library or {}
    names = arch.component_names
    return [n for n in names if n in lib] + [n for n in names if n not in lib]


LibraryBlocks = Mapping[str, "torch.Tensor | None"]  # component -> its library block (None: values come from a loaded state)


class TokenPrompt(nn.Module):
    """Component blocks of prompt tokens for L layers, fused to P tokens per layer, placed in a
    sequence of ``prefix`` + ``n_patches`` tokens (needed for :meth:`features`). ``library``: blocks
    (L0, T0, D) for some components; ``frozen``: those stay fixed (held in ``library_blocks``)."""

    def __init__(self, arch: Architecture, dim: int, n_blocks: int, patch_pixels: int, prefix: int = 1,
                 n_patches: int | None = None, library: LibraryBlocks | None = None, frozen: bool = False):
        super().__init__()
        self.layers = prompted_layers(arch.depth, n_blocks)
        n = max(1, len(arch.component_names))  # a space without components = one plain VPT block
        blocks = torch.empty(self.layers, n, arch.tokens, dim)  # (L, n, T, D)
        INITS.get_or_raise(arch.init)(blocks, patch_pixels)
        lib = {k: v for k, v in (library or {}).items() if k in arch.component_names}
        self.components = component_order(arch, lib)  # block i of the stack is component i
        self.n_library = len(lib)
        for i, name in enumerate(self.components[: self.n_library]):
            block = lib[name]
            if block is None:
                continue
            if block.dim() != 3 or block.shape[-1] != dim:
                raise IncompatibleCandidate(f"library block {name!r} has shape {tuple(block.shape)}; token prompts "
                                            f"on this backbone need (layers, tokens, {dim})")
            L, T = min(self.layers, block.shape[0]), min(arch.tokens, block.shape[1])
            blocks[:L, i, :T] = block[:L, :T].to(blocks.dtype)  # the overlap; the rest stays freshly initialised
        if frozen and self.n_library:
            self.library_blocks = nn.Parameter(blocks[:, : self.n_library].clone(), requires_grad=False)  # (L, n_lib, T, D)
            self.blocks = nn.Parameter(blocks[:, self.n_library:].clone())  # (L, n - n_lib, T, D)
        else:
            self.library_blocks = None
            self.blocks = nn.Parameter(blocks)  # (L, n, T, D)
        fusion = arch.fusion if n > 1 else "concat"
        self.fusion = FUSIONS.get_or_raise(fusion)(self.layers, n, arch.tokens, dim)
        self.n_tokens = self.fusion.out_tokens(n, arch.tokens)
        self.dropout = nn.Dropout(arch.dropout)
        if n_patches is not None:
            self.place(arch.placement, prefix, n_patches)

    def place(self, placement: str, prefix: int, n_patches: int) -> None:
        """Where the P prompt tokens sit in a sequence of ``prefix`` + ``n_patches`` tokens."""
        if placement == "replace" and self.n_tokens > n_patches:
            raise IncompatibleCandidate(f"replace placement needs {self.n_tokens} prompt tokens "
                                        f"<= {n_patches} patch tokens")
        self.start = PLACEMENTS.get_or_raise(placement)(prefix, n_patches)
        self.replace = placement == "replace"
        self.prefix, self.n_patches = prefix, n_patches

    def stacked(self) -> torch.Tensor:
        """Every component's block, in :attr:`components` order: (L, n, T, D)."""
        if self.library_blocks is None:
            return self.blocks
        return torch.cat([self.library_blocks, self.blocks], dim=1)  # (L, n, T, D)

    def forward(self) -> torch.Tensor:
        return self.dropout(self.fusion(self.stacked()))  # (L, P, D)

    def layout(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Sequence positions inside the blocks: the P prompt tokens, and patch i's token (-1 for a
        patch that a ``replace`` prompt overwrote). Prefix tokens stay at 0..prefix-1."""
        P, s, N = self.n_tokens, self.start, self.n_patches
        prompts = torch.arange(s, s + P)  # (P,)
        tokens = torch.arange(self.prefix, self.prefix + N)  # (N,): patch i's position without prompts
        if self.replace:
            patches = torch.where((tokens >= s) & (tokens < s + P), -1, tokens)
        else:
            patches = torch.where(tokens < s, tokens, tokens + P)
        return prompts, patches  # (P,), (N,)

    def features(self, vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        prompts = self()  # (L, P, D)
        P, s = prompts.shape[1], self.start
        x = vit.patch_embed(x)
        x = vit._pos_embed(x)  # (B, prefix + N, D)
        x = vit.patch_drop(x)
        x = vit.norm_pre(x)
        for i, block in enumerate(vit.blocks):
            if i < prompts.shape[0]:
                p = prompts[i].unsqueeze(0).expand(B, -1, -1)  # (B, P, D)
                if i == 0 and not self.replace:
                    x = torch.cat([x[:, :s], p, x[:, s:]], dim=1)  # (B, prefix + P + N, D)
                else:
                    x = torch.cat([x[:, :s], p, x[:, s + P:]], dim=1)  # overwrite the prompt slice
            x = block(x)
        x = vit.norm(x)
        if not self.replace:
            x = torch.cat([x[:, :s], x[:, s + P:]], dim=1)  # (B, prefix + N, D): prompts stripped
        return vit.forward_head(x, pre_logits=True)  # (B, F)

    def cost(self) -> dict[str, int]:
        return {"prompt_tokens": self.n_tokens, "prompted_layers": self.layers}


class PixelPrompt(nn.Module):
    """Component pixel patterns on a region of the input (a frame of width w, or all of it).
    ``library``: full-image blocks (3, S, S) for some components, read at the pixels each component
    covers (:meth:`positions`); ``frozen``: those patterns stay fixed (``requires_grad=False``)."""

    def __init__(self, arch: Architecture, image_size: int, library: LibraryBlocks | None = None,
                 frozen: bool = False):
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
        lib = {k: v for k, v in (library or {}).items() if k in arch.component_names}
        self.components = component_order(arch, lib)  # pattern i is component i
        self.n_library = len(lib)
        for i, name in enumerate(self.components[: self.n_library]):
            block = lib[name]
            if block is not None:
                if tuple(block.shape) != (3, S, S):
                    raise IncompatibleCandidate(f"library block {name!r} is {tuple(block.shape)}; pixel prompts at "
                                                f"{S} px need (3, {S}, {S}): use the library's image size")
                self.patterns[i].data.copy_(block.reshape(3, S * S)[:, self.positions(i)])
            if frozen:
                self.patterns[i].requires_grad_(False)
        if self.fusion_name == "gate":
            self.gates = nn.Parameter(torch.zeros(n))  # (n,)
        elif self.fusion_name == "attention":
            # input-conditioned: the image's mean colour queries the components
            self.query = nn.Linear(3, n)  # (3 -> n) logits per sample
        self.n_pixels = R

    def positions(self, i: int) -> torch.Tensor:
        """Flat pixel indices (into S*S) that pattern ``i`` covers: its segment of the region for
        ``concat``, the whole region otherwise."""
        if self.fusion_name != "concat":
            return self.region
        start = sum(p.shape[1] for p in list(self.patterns)[:i])
        return self.region[start: start + self.patterns[i].shape[1]]  # (R_i,)

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

    def features(self, backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return backbone(self(x))  # (B, F)

    def cost(self) -> dict[str, int]:
        return {"prompt_pixels": self.n_pixels}


class NoPrompt(nn.Module):
    """No input-side prompt: the backbone sees the image as it is (inserts and head still train)."""

    def features(self, backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return backbone(x)  # (B, F)

    def cost(self) -> dict[str, int]:
        return {}


# --- prompt modules: Architecture.module -> the prompt for a backbone ------------------------------
PROMPT_MODULES: Registry = Registry("prompt module")


@PROMPT_MODULES.register("token")
def _token_module(arch: Architecture, backbone: Backbone, library: LibraryBlocks | None = None) -> TokenPrompt:
    if not backbone.is_vit:
        raise IncompatibleCandidate(
            "token prompts need a timm VisionTransformer backbone; this backbone takes pixel "
            "prompts only (use a space with module: [pixel], e.g. search_spaces/pixel.yaml)")
    vit = backbone.model
    patch = vit.patch_embed.patch_size
    return TokenPrompt(arch, vit.embed_dim, len(vit.blocks), 3 * patch[0] * patch[1], vit.num_prefix_tokens,
                       vit.patch_embed.num_patches, library, arch.tuning == "frozen")


PROMPT_MODULES.register("pixel")(lambda arch, backbone, library=None: PixelPrompt(arch, backbone.image_size, library,
                                                                                   arch.tuning == "frozen"))
PROMPT_MODULES.register("none")(lambda arch, backbone, library=None: NoPrompt())

# --- inserts: learnable modules hooked into the frozen backbone (promptsearch.prompt_parts.INSERTS,
# filled by promptsearch.adapters: "adapter", "lora")


# --- the prompted model --------------------------------------------------------------------------
class PromptedModel(nn.Module):
    """Frozen backbone + learnable prompt + inserts + linear head. Input: (B, C, h, w) floats in
    [0, 1] at any size; it is resized to the working size, grey is repeated to 3 channels, then
    normalised."""

    def __init__(self, backbone: Backbone, arch: Architecture, num_outputs: int, library: LibraryBlocks | None = None):
        super().__init__()
        self.arch = arch
        self.backbone = backbone.model.requires_grad_(False).eval()
        self.image_size = backbone.image_size
        self.is_vit = backbone.is_vit
        self.register_buffer("mean", torch.tensor(backbone.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(backbone.std).view(1, 3, 1, 1), persistent=False)
        self.prompt = PROMPT_MODULES.get_or_raise(arch.module)(arch, backbone, library)
        inserts = {name: build(arch, backbone) for name, build in INSERTS.items()}
        self.inserts = nn.ModuleDict({k: v for k, v in inserts.items() if v is not None})
        self.head = nn.Linear(backbone.num_features, num_outputs)

    @property
    def start(self) -> int:
        """Where token prompts start in the sequence (after all ``num_prefix_tokens``)."""
        return self.prompt.start

    @property
    def n_patches(self) -> int:
        return self.prompt.n_patches

    def train(self, mode: bool = True) -> PromptedModel:
        super().train(mode)
        self.backbone.eval()  # frozen: dropout off, norm statistics fixed
        return self

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return preprocess(x, self.image_size, self.mean, self.std)  # (B, 3, S, S)

    @contextlib.contextmanager
    def attached(self) -> Iterator[None]:
        """The inserts hooked into the backbone (only inside this block, so a shared backbone object
        stays the stock model for everyone else)."""
        with contextlib.ExitStack() as stack:
            for insert in self.inserts.values():
                stack.enter_context(insert.attached(self.backbone))
            yield

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(x)  # (B, 3, S, S)
        with self.attached():
            return self.prompt.features(self.backbone, x)  # (B, F)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, num_outputs)

    # what trains, exactly
    def prompt_parameters(self) -> list[nn.Parameter]:
        """The prompt's and every insert's parameters (all that trains except the head)."""
        return list(self.prompt.parameters()) + list(self.inserts.parameters())

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def frozen_prompt_parameters(self) -> list[nn.Parameter]:
        """Frozen library blocks: part of the prompt, never trained."""
        return [p for p in self.prompt.parameters() if not p.requires_grad]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything but the backbone: what trains, and the frozen library blocks the prompt holds."""
        names = {id(p) for p in self.trainable_parameters() + self.frozen_prompt_parameters()}
        return {k: v.detach().clone().contiguous() for k, v in self.named_parameters() if id(v) in names}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        own = set(self.trainable_state_dict())
        if set(state) != own:
            raise ValueError(f"prompt weights do not match this candidate: missing {sorted(own - set(state))[:5]}, "
                             f"unexpected {sorted(set(state) - own)[:5]}")
        self.load_state_dict(state, strict=False)

    def cost(self) -> dict[str, int]:
        """Exact trainable counts (``prompt_params`` includes the inserts, each also counted as
        ``<insert>_params``) and the added input cost (tokens per block, or prompted pixels)."""
        prompt = sum(p.numel() for p in self.prompt_parameters() if p.requires_grad)
        head = sum(p.numel() for p in self.head.parameters())
        out = {"prompt_params": prompt, "head_params": head, "trainable_params": prompt + head,
               "backbone_params": sum(p.numel() for p in self.backbone.parameters())}
        out.update(self.prompt.cost())
        if frozen := sum(p.numel() for p in self.frozen_prompt_parameters()):
            out["library_params"] = frozen  # shared across tasks: a library block, not this task's
        out.update({f"{name}_params": sum(p.numel() for p in m.parameters()) for name, m in self.inserts.items()})
        return out


def build_prompted_model(arch: Architecture, spec: BackboneSpec | Backbone, num_outputs: int,
                         library: LibraryBlocks | None = None) -> PromptedModel:
    """Architecture + backbone -> a PromptedModel whose only trainable parts are prompt, inserts and head
    (``library``: components that start from a library block, see the module docstring)."""
    backbone = spec if isinstance(spec, Backbone) else build_backbone(spec)
    return PromptedModel(backbone, arch, num_outputs, library)

