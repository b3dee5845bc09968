"""Datasets: MedMNIST by name from a local root, or a folder of class sub-folders.

    PROMPTSEARCH_DATA_ROOT=../shared/data/medmnist python -c "from promptsearch.data import load_dataset; print(load_dataset('breastmnist'))"

Images are kept as uint8 tensors (N, C, H, W) at their stored size; the prompted model resizes
and normalises per batch, so one copy serves every backbone and working size.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .registry import Registry

DATA_ROOT_ENV = "PROMPTSEARCH_DATA_ROOT"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
TASKS = ("binary-class", "multi-class", "multi-label")


class DataError(ValueError):
    """Missing or unreadable data: the message says where we looked and how to point elsewhere."""


@dataclass
class Split:
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64, or (N, L) float for multi-label

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int | None, seed: int) -> Split:
        """A seeded random subset of at most n items (n=None: all)."""
        if n is None or n >= len(self):
            return self
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        return Split(self.images[idx], self.labels[idx])


@dataclass
class Dataset:
    name: str
    task: str  # binary-class | multi-class | multi-label
    classes: list[str]
    train: Split
    val: Split
    test: Split
    source: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def num_outputs(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return self.train.images.shape[1]

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, task={self.task}, classes={len(self.classes)}, "
                f"train/val/test={len(self.train)}/{len(self.val)}/{len(self.test)}, "
                f"size={tuple(self.train.images.shape[2:])})")


DATASETS: Registry = Registry("dataset source")


# --- the one image reader ---------------------------------------------------------------------------
def read_image(path: str | Path, mode: str | None = None, size: int | None = None) -> np.ndarray:
    """An image file -> (C, H, W) uint8. ``mode``: ``"L"`` (1 channel), ``"RGB"`` (3), or ``None``
    (keep grey as grey, anything else as RGB); ``size``: resize to size x size (bilinear).
    A file that is not an image raises :class:`DataError` naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if mode is None:
                mode = "L" if im.mode in ("L", "I;16", "I", "1", "LA") else "RGB"
            im = im.convert(mode)
            if size and im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"unreadable image {path}: {e}") from None
    return a[None].copy() if a.ndim == 2 else a.transpose(2, 0, 1).copy()  # (C, H, W)


def image_mode(path: str | Path) -> str:
    """``"L"`` for a single-channel image file, else ``"RGB"`` (the file header only)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return "L" if im.mode in ("L", "I;16", "I", "1", "LA") else "RGB"
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"unreadable image {path}: {e}") from None


# --- the MedMNIST catalogue -------------------------------------------------------------------------
def medmnist_2d() -> list[str]:
    """The MedMNIST 2D dataset names this package reads."""
    from medmnist import INFO

    return sorted(k for k in INFO if "3d" not in k)


def medmnist_meta(name: str) -> dict | None:
    """Task, classes, channels, stored size and split sizes of a MedMNIST 2D name (no arrays
    loaded); ``None`` for a name that is not one."""
    from medmnist import INFO

    flag = name.lower()
    if flag not in INFO or "3d" in flag:
        return None
    info = INFO[flag]
    task = "multi-label" if info["task"].startswith("multi-label") else info["task"]
    return {"name": flag, "task": task, "classes": [info["label"][k] for k in sorted(info["label"], key=int)],
            "channels": int(info["n_channels"]), "size": 28, "python_class": info["python_class"],
            "splits": dict(info["n_samples"])}


def default_root(root: str | Path | None) -> Path | None:
    root = root or os.environ.get(DATA_ROOT_ENV)
    return Path(root).expanduser() if root else None


@DATASETS.register("medmnist")
def load_medmnist(name: str, root: str | Path | None = None, download: bool = False, size: int = 28) -> Dataset:
    """A MedMNIST v2 2D dataset from ``root`` (no network unless ``download=True``)."""
    import medmnist

    meta = medmnist_meta(name)
    if meta is None:
        raise DataError(f"unknown MedMNIST dataset {name!r}; 2D datasets: {', '.join(medmnist_2d())}")
    flag = meta["name"]
    root = default_root(root)
    suffix = "" if size == 28 else f"_{size}"
    if root is None:
        raise DataError(f"no data root for {flag}: pass --data-root DIR or set {DATA_ROOT_ENV} "
                        f"(a folder holding {flag}{suffix}.npz)")
    if download:
        root.mkdir(parents=True, exist_ok=True)
    path = root / f"{flag}{suffix}.npz"
    if not download and not path.exists():
        raise DataError(f"{path} not found: point --data-root / {DATA_ROOT_ENV} at the folder holding "
                        f"{flag}{suffix}.npz, or pass --download to fetch it (needs network)")
    cls = getattr(medmnist, meta["python_class"])
    splits = {}
    for split in ("train", "val", "test"):
        try:
            ds = cls(split=split, root=str(root), download=download, size=None if size == 28 else size)
        except Exception as e:  # medmnist raises RuntimeError / zip errors for bad files
            raise DataError(f"could not read {path} ({split}): {e}") from None
        imgs = np.asarray(ds.imgs)
        imgs = imgs[:, None] if imgs.ndim == 3 else imgs.transpose(0, 3, 1, 2)  # (N, C, H, W)
        task = meta["task"]
        labels = torch.as_tensor(np.asarray(ds.labels))
        labels = labels.float() if task == "multi-label" else labels.long().view(-1)
        splits[split] = Split(torch.as_tensor(imgs, dtype=torch.uint8).contiguous(), labels)
    return Dataset(flag, meta["task"], meta["classes"], splits["train"], splits["val"], splits["test"], source=str(path))


@DATASETS.register("folder")
def load_folder(path: str | Path, root: str | Path | None = None, download: bool = False, size: int = 64,
                split_seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2,
                grayscale: bool | None = None) -> Dataset:
    """A folder of class sub-folders of images (PNG/JPEG/...), split train/val/test by a seed.

    Every image is resized to ``size`` x ``size``; ``grayscale=None`` keeps one channel only if
    every image is single-channel."""
    base = Path(path).expanduser()
    if not base.is_absolute() and root is not None and not base.exists():
        base = Path(root) / base
    if not base.is_dir():
        raise DataError(f"image folder {base} not found (expected <folder>/<class>/<image files>)")
    class_dirs = sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(class_dirs) < 2:
        raise DataError(f"{base} needs at least two class sub-folders, found {[d.name for d in class_dirs]}")
    files: list[tuple[Path, int]] = []
    for label, d in enumerate(class_dirs):
        found = sorted(f for f in d.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise DataError(f"class folder {d} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        files += [(f, label) for f in found]
    if grayscale is None:
        grayscale = all(image_mode(f) == "L" for f, _ in files)
    imgs = np.stack([read_image(f, "L" if grayscale else "RGB", size) for f, _ in files])  # (N, C, S, S)
    labels = np.array([y for _, y in files])
    # stratified split by seed: every class is represented in every split where it can be
    rng = random.Random(split_seed)
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for label in range(len(class_dirs)):
        idx = [i for i, y in enumerate(labels) if y == label]
        rng.shuffle(idx)
        n_test = round(len(idx) * test_fraction)
        n_val = round(len(idx) * val_fraction)
        parts["test"] += idx[:n_test]
        parts["val"] += idx[n_test:n_test + n_val]
        parts["train"] += idx[n_test + n_val:]
    splits = {k: Split(torch.as_tensor(imgs[sorted(v)], dtype=torch.uint8).contiguous(),
                       torch.as_tensor(labels[sorted(v)], dtype=torch.long)) for k, v in parts.items()}
    if not len(splits["val"]) or not len(splits["train"]):
        raise DataError(f"{base} has too few images to split ({len(files)})")
    task = "binary-class" if len(class_dirs) == 2 else "multi-class"
    return Dataset(base.name, task, [d.name for d in class_dirs], splits["train"], splits["val"],
                   splits["test"], source=str(base), extra={"split_seed": split_seed})


def load_dataset(name: str, root: str | Path | None = None, download: bool = False, **kwargs) -> Dataset:
    """``breastmnist`` (any MedMNIST 2D name), or ``folder:PATH`` / an existing directory path."""
    source, _, rest = name.partition(":")
    if rest and source in DATASETS:
        return DATASETS[source](rest, root=root, download=download, **kwargs)
    if Path(name).expanduser().is_dir():
        return load_folder(name, root=root, **kwargs)
    return load_medmnist(name, root=root, download=download, **kwargs)
