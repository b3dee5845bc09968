"""Adapters and LoRA: learnable modules inside a frozen, stock timm or torchvision backbone.

    python -c "from promptsearch.prompts import build_prompted_model; from promptsearch.backbones import BackboneSpec; from promptsearch.space import Architecture; \
m = build_prompted_model(Architecture(module='token', tokens=4, lora_rank=4), BackboneSpec('vit_tiny_patch16_224', image_size=28, patch_size=4), 2); print(m.cost())"

Two *inserts* (:data:`promptsearch.prompt_parts.INSERTS`), each off by default and composable with any
prompt module (token prompts + LoRA, as NOAH searches):

* ``adapter`` (``Architecture.adapter``), one of :data:`ADAPTER_KINDS`:
  ``bottleneck``: down-project, GELU, up-project, residual, in parallel with the MLP of chosen ViT
  blocks (AdaptFormer: ``mlp(h) + up(gelu(down(h)))``, ``h = norm2(x)``);
  ``conv``: a residual 1x1-conv bottleneck after chosen CNN stages (``y + up(relu(down(y)))``) of
  torchvision ``features[i]``, timm ``blocks[i]`` (EfficientNet, MobileNet), ``layer1..4`` (ResNets)
  or ``stages[i]``, so adapters are not ViT-only. Hidden width = width // ``adapter_reduction``.
* ``lora`` (``Architecture.lora_rank`` > 0): ``W x + B A x`` on the attention projections of chosen
  ViT blocks. timm's ``Attention.qkv`` is one Linear, so q, k and v are slices of its output
  (:data:`LORA_TARGETS`); ``proj`` is the output projection.

Nothing of timm is copied or forked: every insert is a forward hook on a stock submodule (``mlp``,
``attn.qkv``, ``attn.proj``, a stage), attached only while :class:`~promptsearch.prompts.PromptedModel`
runs its forward pass. The backbone stays frozen (``requires_grad_(False)``) with its own
``state_dict``; the trainable tensors live on the prompted model under ``inserts.``.

Initialisation: the ``init`` decision initialises the input-side factor (adapter down-projection,
LoRA ``A``); the output-side factor (up-projection, ``B``) starts at zero, so a new insert is the
identity and training starts from the frozen model's own output (as in LoRA and AdaptFormer). With
``init: zero`` the roles swap (down/A zero, up/B xavier): both zero would never receive a gradient.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import Backbone
from .prompt_parts import INITS, INSERTS, IncompatibleCandidate
from .registry import Registry
from .space import Architecture

# --- which blocks: Architecture.adapter_blocks / lora_blocks -> indices ----------------------------
# "all", or <name>_<k> with name in first, last, every (space.BLOCKS_RE); (n, k) -> indices
BLOCK_SETS: Registry = Registry("block set")
BLOCK_SETS.register("all")(lambda n, k: list(range(n)))
BLOCK_SETS.register("first")(lambda n, k: list(range(k)))
BLOCK_SETS.register("last")(lambda n, k: list(range(n - k, n)))
BLOCK_SETS.register("every")(lambda n, k: list(range(0, n, k)))


def select_blocks(spec: str, n: int) -> list[int]:
    """``"last_4"`` of 12 blocks -> [8, 9, 10, 11]; asking for more blocks than there are is an
    :class:`IncompatibleCandidate` (as ``depth: first_20`` is on a 12-block ViT)."""
    name, _, k = spec.partition("_")
    k = int(k) if k else 0
    if k > n:
        raise IncompatibleCandidate(f"blocks {spec} needs {k} blocks or stages; the backbone has {n}")
    return BLOCK_SETS.get_or_raise(name)(n, k)


# --- initialisation of a factor pair -----------------------------------------------------------------
def init_factors(down: torch.Tensor, up: torch.Tensor, init: str) -> None:
    """``down`` (h, in) by ``init`` and ``up`` (out, h) zero, or swapped for ``init="zero"``."""
    if init == "zero":
        down, up, init = up, down, "xavier"
    nn.init.zeros_(up)
    INITS.get_or_raise(init)(down, down.shape[0])  # fan = the factor's output width


# --- insert modules ------------------------------------------------------------------------------------
class Bottleneck(nn.Module):
    """Token-wise down-project, GELU, up-project; its hook adds it in parallel to the hooked module
    (a ViT block's MLP): ``mlp(h) + adapter(h)``."""

    def __init__(self, width: int, hidden: int, init: str):
        super().__init__()
        self.down = nn.Linear(width, hidden)  # (h, D)
        self.up = nn.Linear(hidden, width)  # (D, h)
        nn.init.zeros_(self.down.bias), nn.init.zeros_(self.up.bias)
        init_factors(self.down.weight.data, self.up.weight.data, init)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.up(F.gelu(self.down(h)))  # (B, T, D)

    def hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output + self(args[0])  # (B, T, D)


class ConvAdapter(nn.Module):
    """A residual 1x1-conv bottleneck after a CNN stage: ``y + up(relu(down(y)))``."""

    def __init__(self, width: int, hidden: int, init: str):
        super().__init__()
        self.down = nn.Conv2d(width, hidden, 1)  # (h, C, 1, 1)
        self.up = nn.Conv2d(hidden, width, 1)  # (C, h, 1, 1)
        nn.init.zeros_(self.down.bias), nn.init.zeros_(self.up.bias)
        init_factors(self.down.weight.data.view(hidden, width), self.up.weight.data.view(width, hidden), init)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.up(F.relu(self.down(y)))  # (B, C, H, W)

    def hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output + self(output)  # (B, C, H, W)


class LoRA(nn.Module):
    """Low-rank updates ``B_t A_t x`` on output slices of one frozen Linear (t = q, k, v of timm's
    fused ``qkv``, or all of ``proj``); its hook adds them to the Linear's output."""

    def __init__(self, linear: nn.Linear, slices: dict[str, slice], rank: int, init: str):
        super().__init__()
        self.out_features = linear.out_features
        self.slices = dict(sorted(slices.items(), key=lambda kv: kv[1].start))  # plain data, not state
        self.A = nn.ParameterDict({t: nn.Parameter(torch.empty(rank, linear.in_features)) for t in self.slices})  # (r, in)
        self.B = nn.ParameterDict({t: nn.Parameter(torch.empty(s.stop - s.start, rank)) for t, s in self.slices.items()})  # (out_t, r)
        for t in self.slices:
            init_factors(self.A[t].data, self.B[t].data, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pieces, at = [], 0
        for t, s in self.slices.items():
            if s.start > at:
                pieces.append(x.new_zeros(*x.shape[:-1], s.start - at))  # an untargeted slice
            pieces.append(F.linear(F.linear(x, self.A[t]), self.B[t]))  # (B, N, out_t)
            at = s.stop
        if at < self.out_features:
            pieces.append(x.new_zeros(*x.shape[:-1], self.out_features - at))
        return torch.cat(pieces, dim=-1)  # (B, N, out)

    def hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output + self(args[0])  # (B, N, out)


class Insert(nn.Module):
    """Insert modules by the backbone submodule they hook (``"blocks.3.mlp"`` -> its adapter)."""

    def __init__(self, sites: dict[str, nn.Module]):
        super().__init__()
        self.paths = list(sites)
        self.sites = nn.ModuleDict({p.replace(".", "_"): m for p, m in sites.items()})

    @contextlib.contextmanager
    def attached(self, backbone: nn.Module) -> Iterator[None]:
        """Each site's hook on its stock submodule, removed on exit. ``prepend``: the hook runs
        before any other forward hook there (e.g. Grad-CAM's), so those see the adapted output."""
        with contextlib.ExitStack() as stack:
            for path, module in zip(self.paths, self.sites.values()):
                stack.enter_context(backbone.get_submodule(path).register_forward_hook(module.hook, prepend=True))
            yield


# --- where inserts go ---------------------------------------------------------------------------------
def vit_blocks(backbone: Backbone, what: str) -> list[nn.Module]:
    if not backbone.is_vit:
        raise IncompatibleCandidate(f"{what} needs a timm VisionTransformer backbone; on a CNN use "
                                    "adapter: conv or pixel prompts")
    return list(backbone.model.blocks)


# CNN stage lists: name -> (model -> submodule paths, or None when the model has no such list);
# the first that matches wins, so a torchvision MobileNetV2's stages are features.0..18
CNN_STAGES: Registry = Registry("CNN stage list")


def _children(attr: str) -> Callable[[nn.Module], list[str] | None]:
    def find(model: nn.Module) -> list[str] | None:
        seq = getattr(model, attr, None)
        return [f"{attr}.{i}" for i in range(len(seq))] if isinstance(seq, nn.Sequential) else None
    return find


CNN_STAGES.register("features")(_children("features"))  # torchvision MobileNet, EfficientNet, ConvNeXt, VGG
CNN_STAGES.register("blocks")(_children("blocks"))  # timm EfficientNet, MobileNetV3
CNN_STAGES.register("stages")(_children("stages"))  # timm ConvNeXt, RegNet
CNN_STAGES.register("layers")(
    lambda m: [f"layer{i}" for i in range(1, 5)] if all(hasattr(m, f"layer{i}") for i in range(1, 5)) else None)  # ResNets


def find_stages(model: nn.Module) -> list[str]:
    """Paths of a CNN's stages (feature maps out), in order (also Grad-CAM's target, the last)."""
    for find in CNN_STAGES.values():
        paths = find(model)
        if paths:
            return paths
    raise IncompatibleCandidate(f"no stage list found in {type(model).__name__} (looked for {', '.join(CNN_STAGES)})")


def cnn_stages(backbone: Backbone) -> list[str]:
    if backbone.is_vit:
        raise IncompatibleCandidate("conv adapters go after CNN stages; on a ViT use adapter: bottleneck or LoRA")
    return find_stages(backbone.model)


@dataclass(frozen=True)
class AdapterKind:
    sites: Callable[[Backbone], list[str]]  # candidate submodule paths, in order (blocks or stages)
    module: Callable[[int, int, str], nn.Module]  # (width, hidden, init) -> the adapter at one site
    ndim: int  # what a site outputs: 3 = tokens (B, T, D), 4 = feature maps (B, C, H, W)


ADAPTER_KINDS: Registry = Registry("adapter kind")
ADAPTER_KINDS.register("bottleneck")(AdapterKind(
    lambda bb: [f"blocks.{i}.mlp" for i in range(len(vit_blocks(bb, "adapter: bottleneck")))], Bottleneck, 3))
ADAPTER_KINDS.register("conv")(AdapterKind(cnn_stages, ConvAdapter, 4))


@torch.no_grad()
def site_widths(backbone: Backbone, paths: list[str], ndim: int) -> list[int]:
    """Channel width of each site's output, read from one forward pass of a blank image."""
    model, shapes = backbone.model, {}
    p = next(model.parameters())
    with contextlib.ExitStack() as stack:
        for path in paths:
            hook = (lambda path: lambda m, a, out: shapes.__setitem__(path, tuple(out.shape)))(path)
            stack.enter_context(model.get_submodule(path).register_forward_hook(hook))
        was = model.training
        model.eval()
        model(torch.zeros(1, 3, backbone.image_size, backbone.image_size, device=p.device, dtype=p.dtype))
        model.train(was)
    bad = [p for p in paths if len(shapes[p]) != ndim]
    if bad:
        raise IncompatibleCandidate(f"adapter sites {bad[:3]} output {len(shapes[bad[0]])}-D tensors, not {ndim}-D")
    return [shapes[p][1] if ndim == 4 else shapes[p][-1] for p in paths]


# --- LoRA targets: name -> (attention module -> (Linear's name in it, output slice)) ---------------
LORA_TARGETS: Registry = Registry("LoRA target")


def _qkv_slice(i: int) -> Callable[[nn.Module], tuple[str, slice]]:
    def target(attn: nn.Module) -> tuple[str, slice]:
        qkv = getattr(attn, "qkv", None)
        if not isinstance(qkv, nn.Linear) or qkv.out_features % 3:
            raise IncompatibleCandidate(f"LoRA on q/k/v needs timm's fused Attention.qkv Linear; "
                                        f"{type(attn).__name__} has none")
        a = qkv.out_features // 3
        return "qkv", slice(i * a, (i + 1) * a)
    return target


LORA_TARGETS.register("q")(_qkv_slice(0))
LORA_TARGETS.register("k")(_qkv_slice(1))
LORA_TARGETS.register("v")(_qkv_slice(2))
LORA_TARGETS.register("proj")(lambda attn: ("proj", slice(0, attn.proj.out_features)))


# --- the inserts -----------------------------------------------------------------------------------
@INSERTS.register("adapter")
def build_adapters(arch: Architecture, backbone: Backbone) -> Insert | None:
    if arch.adapter == "none":
        return None
    kind = ADAPTER_KINDS.get_or_raise(arch.adapter)
    paths = kind.sites(backbone)
    chosen = [paths[i] for i in select_blocks(arch.adapter_blocks, len(paths))]
    widths = site_widths(backbone, chosen, kind.ndim)
    return Insert({p: kind.module(w, max(1, w // arch.adapter_reduction), arch.init) for p, w in zip(chosen, widths)})


@INSERTS.register("lora")
def build_lora(arch: Architecture, backbone: Backbone) -> Insert | None:
    if arch.lora_rank == 0:
        return None
    blocks = vit_blocks(backbone, "LoRA")
    sites: dict[str, nn.Module] = {}
    for i in select_blocks(arch.lora_blocks, len(blocks)):
        attn = blocks[i].attn
        by_linear: dict[str, dict[str, slice]] = {}
        for t in arch.lora_targets.split("+"):
            name, s = LORA_TARGETS.get_or_raise(t)(attn)
            by_linear.setdefault(name, {})[t] = s
        for name, slices in by_linear.items():
            sites[f"blocks.{i}.attn.{name}"] = LoRA(attn.get_submodule(name), slices, arch.lora_rank, arch.init)
    return Insert(sites)
