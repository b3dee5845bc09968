"""Training losses: the one task -> loss rule that trials and backbone pretraining share.

    python -c "import torch; from promptsearch.losses import loss_fn; print(loss_fn('multi-class', torch.zeros(2, 3), torch.tensor([0, 2])))"
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def loss_fn(task: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy per label for ``multi-label`` ((B, L) float labels), else cross-entropy
    over the classes ((B,) int labels); ``logits`` are (B, K)."""
    if task == "multi-label":
        return F.binary_cross_entropy_with_logits(logits, labels)
    return F.cross_entropy(logits, labels)
