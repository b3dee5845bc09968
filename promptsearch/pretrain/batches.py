"""Batches for pretraining: each epoch's seeded plan, augmentation, and the held-out batches.

    python -c "import torch; from promptsearch.pretrain.batches import augment; print(augment(torch.rand(2, 1, 28, 28), torch.Generator()).shape)"
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..backbones import Backbone, preprocess
from .sources import Source


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
    """One dataset's images, ready for the student."""

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


def iter_batches(sources: list[Source], plan: list[tuple[int, torch.Tensor]], split: str, spec: Backbone,
                 gen: torch.Generator | None, augments: bool) -> Iterator[Batch]:
    """The plan's batches of ``split``, scaled, augmented (with ``gen``, if ``augments``) and normalised."""
    for s, idx in plan:
        data = getattr(sources[s], split)
        x = data.images[idx].float().div_(255.0)  # (B, C, H, W) in [0, 1]
        if augments and gen is not None:
            x = augment(x, gen)
        yield Batch(preprocess(x, spec.image_size, spec.mean, spec.std), data.labels[idx], s, idx)


def eval_batches(sources: list[Source], spec: Backbone, batch_size: int = 256) -> list[Batch]:
    """Every validation image once, in order, un-augmented: the same batches after every epoch."""
    plan = [(s, torch.arange(i, min(i + batch_size, len(src.val))))
            for s, src in enumerate(sources) for i in range(0, len(src.val), batch_size)]
    return list(iter_batches(sources, plan, "val", spec, None, False))
