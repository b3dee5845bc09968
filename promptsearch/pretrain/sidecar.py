"""The made backbone: its weights file and the JSON sidecar beside it, written and read back.

    python -c "from promptsearch.pretrain import read_sidecar; print(read_sidecar('artifacts/pretrained/try/backbone.safetensors')['use'])"

The sidecar (``backbone.json``) records the architecture and sizes, the data the run saw, its
epochs and final metrics, and the sha256 of the weights file; :mod:`promptsearch.backbone_spec`
holds the one reader of it (this module's :func:`read_sidecar` turns its errors into ``PretrainError``).
"""

from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import backbone_spec
from ..backbones import Backbone
from ..files import atomic_write, file_sha256
from .config import SIDECAR, WEIGHTS, PretrainConfig, PretrainError, shared_mode
from .sources import Source

SIDECAR_VERSION = 1


def epoch_metrics(row: dict[str, float]) -> dict[str, float]:
    """An epoch's metrics without its bookkeeping (epoch number, learning rate, seconds)."""
    return {k: v for k, v in row.items() if k not in ("epoch", "lr", "seconds")}


def use_flags(backbone: str, image_size: int, patch_size: int | None, weights: str | Path) -> str:
    """The flags that use a made backbone (``promptsearch trial``/``search``)."""
    return (f"--backbone {backbone} --image-size {image_size}"
            + (f" --patch-size {patch_size}" if patch_size else "") + f" --backbone-weights {weights}")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def write_backbone(student: nn.Module, backbone: Backbone, config: PretrainConfig, sources: list[Source],
                   out_dir: Path, history: list[dict[str, float]], facts: dict[str, Any], elapsed: float,
                   steps: int) -> tuple[Path, Path]:
    """Write the student's weights (the mode's heads, decoder, projection are not in it) and the JSON sidecar."""
    import timm
    from safetensors.torch import save_file

    from ..version import __version__

    state = {k: v.detach().contiguous().clone() for k, v in student.state_dict().items()}  # (owned copies)
    weights, sidecar = out_dir / WEIGHTS, out_dir / SIDECAR
    # one metadata key: safetensors writes several in random order, and the file must be reproducible
    meta = {"promptsearch": json.dumps({"format": backbone_spec.SIDECAR_FORMAT, "backbone": config.backbone,
                                        "mode": config.mode, "image_size": config.image_size,
                                        "patch_size": config.patch_size}, sort_keys=True)}
    atomic_write(weights, lambda p: save_file(state, str(p), metadata=meta), mode=shared_mode())
    doc = {
        "format": backbone_spec.SIDECAR_FORMAT, "version": SIDECAR_VERSION,
        "weights": WEIGHTS, "sha256": file_sha256(weights), "bytes": weights.stat().st_size,
        "backbone": {"name": config.backbone, "image_size": config.image_size, "patch_size": config.patch_size,
                     "num_features": backbone.num_features, "params": sum(v.numel() for v in state.values()),
                     "mean": list(backbone.mean), "std": list(backbone.std)},
        "use": use_flags(config.backbone, config.image_size, config.patch_size, weights),
        "mode": config.mode, "config": config.model_dump(mode="json"),
        "data": [s.describe() for s in sources],
        "epochs": len(history), "steps": steps, "metrics": epoch_metrics(history[-1]), "history": history,
        "wall_time_s": round(elapsed, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
        "threads": torch.get_num_threads(),
        "versions": {"promptsearch": __version__, "torch": torch.__version__, "timm": timm.__version__},
        **facts,
    }
    atomic_write(sidecar, json.dumps(doc, indent=2) + "\n", mode=shared_mode())
    return weights, sidecar


def read_sidecar(weights: str | Path) -> dict[str, Any]:
    """The sidecar of a weights file, checked: its sha256 must match the file's."""
    try:
        return backbone_spec.read_sidecar(weights, check=True)
    except backbone_spec.SidecarError as e:
        raise PretrainError(str(e)) from None
