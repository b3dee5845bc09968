"""Inference on image files: read them as the model was trained on, return class probabilities.

    promptsearch predict exported/ scan1.png scan2.jpg
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ..prompts import PromptedModel
from .schema import BundleConfig, ExportError


def read_images(paths: Sequence[str | Path], channels: int, size: int | None) -> torch.Tensor:
    """Image files (PNG, JPEG, ...) -> (N, C, S, S) floats in [0, 1], as the model was trained on."""
    from ..data import DataError, read_image

    out = []
    for p in paths:
        try:
            out.append(torch.from_numpy(read_image(p, "L" if channels == 1 else "RGB", size)))  # (C, S, S)
        except DataError as e:  # "unreadable image PATH: why"
            raise ExportError(f"cannot read image {p}: {str(e).partition(': ')[2]}") from None
    return torch.stack(out).float().div_(255.0)  # (N, C, S, S)


@torch.no_grad()
def predict_files(model: PromptedModel, paths: Sequence[str | Path]) -> list[dict[str, float]]:
    """Class probabilities for image files, one ``{class: probability}`` per file."""
    cfg: BundleConfig = model.bundle
    x = read_images(paths, cfg.input.channels, cfg.input.size).to(next(model.parameters()).device)
    logits = model(x)  # (N, K)
    probs = torch.sigmoid(logits) if cfg.task == "multi-label" else torch.softmax(logits, -1)
    return [dict(zip(cfg.classes, map(float, row))) for row in probs]
