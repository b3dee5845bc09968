"""Where pretraining images come from: MedMNIST names, labeled class folders, or any folder of images.

    python -c "from promptsearch.pretrain import PretrainConfig, load_sources; print(load_sources(PretrainConfig.make(mode='mae'), '../shared/data/medmnist', labeled=False)[0].describe()['train_images'])"
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import IMAGE_SUFFIXES, DataError, Split, image_mode, load_dataset, read_image
from .config import PretrainConfig


@dataclass
class Source:
    """One dataset as the pretrainer sees it: train/val images, labels only when a mode uses them."""

    name: str
    train: Split
    val: Split
    task: str | None  # None: unlabeled
    classes: list[str]
    origin: str

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.origin, "train_images": len(self.train),
                "val_images": len(self.val), "channels": int(self.train.images.shape[1]),
                "stored_size": list(self.train.images.shape[2:]), "labeled": self.task is not None,
                "task": self.task, "classes": self.classes,
                "sha256": images_hash(self.train, self.val)}


def images_hash(*splits: Split) -> str:
    """The sha256 of the splits' image bytes: names the data a run saw (and keys the teacher cache)."""
    h = hashlib.sha256()
    for s in splits:
        h.update(s.images.numpy().tobytes())
    return h.hexdigest()


def load_image_folder(path: str | Path, size: int, seed: int = 0, val_fraction: float = 0.1) -> tuple[Split, Split]:
    """Every image under ``path`` (flat, or in any sub-folders), resized to size x size, split
    train/val by a seed; labels are all zero. For self-supervised modes on unlabeled folders."""
    base = Path(path).expanduser()
    if not base.is_dir():
        raise DataError(f"image folder {base} not found")
    files = sorted(f for f in base.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                   and not any(p.startswith(".") for p in f.relative_to(base).parts))
    if not files:
        raise DataError(f"no images in {base} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}, in sub-folders too)")
    mode = "L" if all(image_mode(f) == "L" for f in files) else "RGB"  # one grey image among colour ones: RGB
    imgs = torch.as_tensor(np.stack([read_image(f, mode, size) for f in files]), dtype=torch.uint8)  # (N, C, S, S)
    order = torch.randperm(len(imgs), generator=torch.Generator().manual_seed(seed))
    n_val = min(len(imgs) - 1, max(1, round(len(imgs) * val_fraction))) if len(imgs) > 1 else 0
    zeros = torch.zeros(len(imgs), dtype=torch.long)
    val, train = order[:n_val].sort().values, order[n_val:].sort().values
    if not n_val:  # one image: it serves as its own validation
        val = train
    return Split(imgs[train].contiguous(), zeros[train]), Split(imgs[val].contiguous(), zeros[val])


def load_sources(config: PretrainConfig, data_root: str | Path | None, labeled: bool) -> list[Source]:
    """The config's datasets as ``Source``s: labeled (MedMNIST / class folders) or images only."""
    sources = []
    for name in config.datasets:
        kind, _, rest = name.partition(":")
        if kind == "folder" and not labeled:
            train, val = load_image_folder(rest, config.image_size, seed=config.seed)
            src = Source(Path(rest).name, train, val, None, [], rest)
        else:
            kwargs = {"size": config.image_size} if kind == "folder" else {}
            data = load_dataset(name, root=data_root, **kwargs)
            src = Source(data.name, data.train, data.val, data.task if labeled else None,
                         data.classes if labeled else [], data.source)
        src.train = src.train.subset(config.max_train_samples, config.seed)
        src.val = src.val.subset(config.max_eval_samples, 0)
        if not len(src.train):
            raise DataError(f"{name}: no training images")
        if src.train.images.shape[1] not in (1, 3):
            raise DataError(f"{name}: images have {src.train.images.shape[1]} channels; expected 1 or 3")
        sources.append(src)
    return sources
