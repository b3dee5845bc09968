"""Classification metrics as MedMNIST defines them, plus worst-class recall (clinical safety).

    python -c "import numpy as np; from promptsearch.metrics import classification_metrics as m; print(m('binary-class', np.array([0,1,1]), np.array([[.9,.1],[.2,.8],[.6,.4]])))"
"""

from __future__ import annotations

import math

from collections.abc import Mapping
from typing import Any

import numpy as np


def clean_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float | None]:
    """Numeric values as floats, non-finite ones as ``None`` (plain JSON); other values dropped."""
    out: dict[str, float | None] = {}
    for k, v in (metrics or {}).items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        out[k] = f if math.isfinite(f) else None
    return out


def classification_metrics(task: str, y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """``scores``: (N, K) softmax probabilities (binary/multi-class) or sigmoid (multi-label).

    auc: binary = AUC of the positive class; multi-class = mean one-vs-rest AUC; multi-label =
    mean per-label AUC (MedMNIST's ``getAUC``). worst_class_recall: the lowest per-class recall
    (per-label recall at 0.5 for multi-label) — the class the model misses most.
    """
    from sklearn.metrics import roc_auc_score  # here: sklearn takes ~1.5 s to import

    if task == "multi-label":
        pred = scores > 0.5
        aucs = [roc_auc_score(y_true[:, k], scores[:, k]) for k in range(y_true.shape[1])
                if 0 < y_true[:, k].sum() < len(y_true)]
        recalls = [(pred[:, k] & (y_true[:, k] > 0)).sum() / max(1, (y_true[:, k] > 0).sum())
                   for k in range(y_true.shape[1]) if y_true[:, k].sum() > 0]
        acc = float((pred == (y_true > 0)).all(1).mean())
        return {"auc": float(np.mean(aucs)) if aucs else float("nan"), "accuracy": acc,
                "balanced_accuracy": float(np.mean(recalls)) if recalls else float("nan"),
                "worst_class_recall": float(np.min(recalls)) if recalls else float("nan")}
    y_true = y_true.reshape(-1).astype(int)
    pred = scores.argmax(1)
    present = np.unique(y_true)
    if scores.shape[1] == 2:
        auc = roc_auc_score(y_true, scores[:, 1]) if len(present) == 2 else float("nan")
    else:
        aucs = [roc_auc_score(y_true == k, scores[:, k]) for k in present if 0 < (y_true == k).sum() < len(y_true)]
        auc = float(np.mean(aucs)) if aucs else float("nan")
    recalls = np.array([(pred[y_true == k] == k).mean() for k in present])
    return {"auc": float(auc), "accuracy": float((pred == y_true).mean()),
            "balanced_accuracy": float(recalls.mean()), "worst_class_recall": float(recalls.min())}
