"""Pieces that prompt modules (:mod:`promptsearch.prompts`) and inserts (:mod:`promptsearch.adapters`)
share: the error for a candidate a backbone cannot run, the ``init`` registry, and the insert registry.

    python -c "from promptsearch.prompt_parts import INITS, INSERTS; print(list(INITS), list(INSERTS))"

It sits below both, so imports point one way: ``prompts -> adapters -> prompt_parts``. ``INSERTS`` is
filled by :mod:`promptsearch.adapters` (``adapter``, ``lora``); importing :mod:`promptsearch.prompts`
imports it, so a built model always sees every insert.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .registry import Registry


class IncompatibleCandidate(ValueError):
    """A candidate the backbone cannot run (e.g. token prompts on a CNN)."""


# --- initialisation: name -> fn(tensor, fan) filling it in place -----------------------------------
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


# --- inserts: learnable modules hooked into the frozen backbone -------------------------------------
# name -> builder(arch, backbone) -> a module with ``attached(backbone)`` (a context manager), or
# None when the architecture does not use it. promptsearch.adapters registers "adapter" and "lora".
INSERTS: Registry = Registry("insert")
