"""Datasets: MedMNIST by name from a local root, a folder of class sub-folders, or a name in the
dataset catalogue (:mod:`promptsearch.catalog`).

    PROMPTSEARCH_DATA_ROOT=../shared/data/medmnist python -c "from promptsearch.data import load_dataset; print(load_dataset('breastmnist'))"

Images are kept as uint8 tensors (N, C, H, W) at their stored size; the prompted model resizes
and normalises per batch, so one copy serves every backbone and working size. torch is imported
where tensors are made: the catalogue's facts (``medmnist_meta``, ``plan_folder``) need only numpy,
so a process that only names datasets (the API server's ``/meta``) stays without torch.

Image folders are ``<class>/`` or ``train|test[|val]/<class>/``. :func:`plan_folder` decides which
file goes where without decoding a pixel (a seeded per-class split; official test folders kept;
near-duplicate groups never straddle two splits); :func:`read_images` decodes, and caches the
pixels under ``$PROMPTSEARCH_CACHE`` (default ``~/.cache/promptsearch``) keyed by the files' bytes.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .registry import Registry

if TYPE_CHECKING:
    import torch

DATA_ROOT_ENV = "PROMPTSEARCH_DATA_ROOT"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
TASKS = ("binary-class", "multi-class", "multi-label")


class DataError(ValueError):
    """Missing or unreadable data: the message says where we looked and how to point elsewhere."""


class NotInCatalog(DataError):
    """A dataset name that no catalogue file defines (the message lists the names that are)."""


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
        import torch

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
# The MedMNIST v2 2D datasets (as medmnist 3.0's ``INFO`` gives them): the facts a load needs, carried
# here so that naming or reading a dataset never imports the ``medmnist`` package, which imports
# scikit-learn, scipy and pandas (+156 MiB RSS and ~1 s in a process that has none of them: the API
# server, a preflight). ``python_class`` is only for ``download=True``, which uses medmnist's
# downloader. tests/test_scale_paths.py checks this table against ``medmnist.INFO``.
MEDMNIST_2D: dict[str, dict[str, Any]] = {
    "pathmnist": {"task": "multi-class", "channels": 3, "python_class": "PathMNIST",
        "splits": {"train": 89996, "val": 10004, "test": 7180},
        "classes": ["adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                    "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma epithelium"]},
    "chestmnist": {"task": "multi-label, binary-class", "channels": 1, "python_class": "ChestMNIST",
        "splits": {"train": 78468, "val": 11219, "test": 22433},
        "classes": ["atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
                    "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia"]},
    "dermamnist": {"task": "multi-class", "channels": 3, "python_class": "DermaMNIST",
        "splits": {"train": 7007, "val": 1003, "test": 2005},
        "classes": ["actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                    "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
                    "vascular lesions"]},
    "octmnist": {"task": "multi-class", "channels": 1, "python_class": "OCTMNIST",
        "splits": {"train": 97477, "val": 10832, "test": 1000},
        "classes": ["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"]},
    "pneumoniamnist": {"task": "binary-class", "channels": 1, "python_class": "PneumoniaMNIST",
        "splits": {"train": 4708, "val": 524, "test": 624},
        "classes": ["normal", "pneumonia"]},
    "retinamnist": {"task": "ordinal-regression", "channels": 3, "python_class": "RetinaMNIST",
        "splits": {"train": 1080, "val": 120, "test": 400},
        "classes": ["0", "1", "2", "3", "4"]},
    "breastmnist": {"task": "binary-class", "channels": 1, "python_class": "BreastMNIST",
        "splits": {"train": 546, "val": 78, "test": 156},
        "classes": ["malignant", "normal, benign"]},
    "bloodmnist": {"task": "multi-class", "channels": 3, "python_class": "BloodMNIST",
        "splits": {"train": 11959, "val": 1712, "test": 3421},
        "classes": ["basophil", "eosinophil", "erythroblast",
                    "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte", "monocyte",
                    "neutrophil", "platelet"]},
    "tissuemnist": {"task": "multi-class", "channels": 1, "python_class": "TissueMNIST",
        "splits": {"train": 165466, "val": 23640, "test": 47280},
        "classes": ["Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule", "Glomerular endothelial cells",
                    "Interstitial endothelial cells", "Leukocytes", "Podocytes", "Proximal Tubule Segments",
                    "Thick Ascending Limb"]},
    "organamnist": {"task": "multi-class", "channels": 1, "python_class": "OrganAMNIST",
        "splits": {"train": 34561, "val": 6491, "test": 17778},
        "classes": ["bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
                    "lung-left", "lung-right", "pancreas", "spleen"]},
    "organcmnist": {"task": "multi-class", "channels": 1, "python_class": "OrganCMNIST",
        "splits": {"train": 12975, "val": 2392, "test": 8216},
        "classes": ["bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
                    "lung-left", "lung-right", "pancreas", "spleen"]},
    "organsmnist": {"task": "multi-class", "channels": 1, "python_class": "OrganSMNIST",
        "splits": {"train": 13932, "val": 2452, "test": 8827},
        "classes": ["bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
                    "lung-left", "lung-right", "pancreas", "spleen"]},
}


def medmnist_2d() -> list[str]:
    """The MedMNIST 2D dataset names this package reads."""
    return sorted(MEDMNIST_2D)


def medmnist_meta(name: str) -> dict | None:
    """Task, classes, channels, stored size and split sizes of a MedMNIST 2D name (no arrays
    loaded); ``None`` for a name that is not one."""
    flag = name.lower()
    info = MEDMNIST_2D.get(flag)
    if info is None:
        return None
    task = "multi-label" if info["task"].startswith("multi-label") else info["task"]
    return {"name": flag, "task": task, "classes": list(info["classes"]), "channels": info["channels"], "size": 28,
            "python_class": info["python_class"], "splits": dict(info["splits"])}


def default_root(root: str | Path | None) -> Path | None:
    root = root or os.environ.get(DATA_ROOT_ENV)
    return Path(root).expanduser() if root else None


@DATASETS.register("medmnist")
def load_medmnist(name: str, root: str | Path | None = None, download: bool = False, size: int = 28) -> Dataset:
    """A MedMNIST v2 2D dataset from ``root`` (no network unless ``download=True``): the official
    train/val/test arrays of ``<root>/<name>[_<size>].npz``, read with numpy (the ``medmnist``
    package is imported only to download)."""
    meta = medmnist_meta(name)
    if meta is None:
        raise DataError(f"unknown MedMNIST dataset {name!r}; 2D datasets: {', '.join(medmnist_2d())}")
    flag = meta["name"]
    root = default_root(root)
    suffix = "" if size == 28 else f"_{size}"
    if root is None:
        raise DataError(f"no data root for {flag}: pass --data-root DIR or set {DATA_ROOT_ENV} "
                        f"(a folder holding {flag}{suffix}.npz)")
    path = root / f"{flag}{suffix}.npz"
    if download and not path.exists():
        _download_medmnist(meta, root, size)
    if not path.exists():
        raise DataError(f"{path} not found: point --data-root / {DATA_ROOT_ENV} at the folder holding "
                        f"{flag}{suffix}.npz, or pass --download to fetch it (needs network)")
    splits = {}
    try:
        with np.load(path, allow_pickle=False) as npz:  # what medmnist reads: <split>_images, <split>_labels
            arrays = {split: (npz[f"{split}_images"], npz[f"{split}_labels"]) for split in ("train", "val", "test")}
    except Exception as e:  # numpy raises ValueError / zip errors / KeyError for bad files
        raise DataError(f"could not read {path}: {_npz_problem(path, e)}") from None
    import torch

    for split, (imgs, labels) in arrays.items():
        imgs = imgs[:, None] if imgs.ndim == 3 else imgs.transpose(0, 3, 1, 2)  # (N, C, H, W)
        labels = torch.as_tensor(labels)
        labels = labels.float() if meta["task"] == "multi-label" else labels.long().view(-1)
        splits[split] = Split(torch.as_tensor(imgs, dtype=torch.uint8).contiguous(), labels)
    return Dataset(flag, meta["task"], meta["classes"], splits["train"], splits["val"], splits["test"], source=str(path))


def _download_medmnist(meta: dict, root: Path, size: int) -> None:
    """Fetch ``<name>[_<size>].npz`` into ``root`` with medmnist's own downloader (url, md5)."""
    import medmnist

    root.mkdir(parents=True, exist_ok=True)
    try:
        getattr(medmnist, meta["python_class"])(split="train", root=str(root), download=True,
                                                size=None if size == 28 else size)
    except Exception as e:  # noqa: BLE001 - network, checksum, disk
        raise DataError(f"could not download {meta['name']} ({size} px) into {root}: {type(e).__name__}: {e}") from None


def _npz_problem(path: Path, error: Exception) -> str:
    """Why numpy could not read a MedMNIST archive, in words (numpy reads any non-zip file as a
    pickle, so random bytes would say 'contains pickled data')."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return "corrupt or not an npz file (not a zip archive)"
    if isinstance(error, KeyError):
        with zipfile.ZipFile(path) as z:
            found = sorted(n.removesuffix(".npy") for n in z.namelist())
        return f"not a MedMNIST archive: {error.args[0] if error.args else error} (it holds {', '.join(found) or 'nothing'})"
    return f"corrupt npz ({type(error).__name__}: {error})"


# --- image folders: layout, near-duplicate groups, split plan, cached pixels -------------------------
SPLIT_NAMES = ("train", "val", "test")
CACHE_ENV = "PROMPTSEARCH_CACHE"
CACHE_VERSION = 1  # bump when read_image's output for the same bytes changes (resampling, modes)


@dataclass
class FolderPlan:
    """Which file goes where, before any pixel is decoded (``promptsearch data show`` reads only this)."""

    base: Path
    layout: str  # "classes": <class>/ ; "split": train|test[|val]/<class>/
    classes: list[str]
    files: list[Path]  # every image, in label order within each split folder
    labels: np.ndarray  # (N,) int64
    parts: dict[str, list[int]]  # split -> sorted indices into files
    info: dict = field(default_factory=dict)  # split kind, seed, fractions, group counts

    def counts(self) -> dict[str, dict[str, int]]:
        """split -> class -> images."""
        return {k: {c: int((self.labels[v] == i).sum()) for i, c in enumerate(self.classes)}
                for k, v in self.parts.items()}


def _visible_dirs(d: Path) -> list[Path]:
    return sorted(x for x in d.iterdir() if x.is_dir() and not x.name.startswith("."))


def _class_files(d: Path) -> dict[str, list[Path]]:
    """``d``'s class sub-folders -> their image files (sorted; sub-folders of a class count too)."""
    class_dirs = _visible_dirs(d)
    if len(class_dirs) < 2:
        raise DataError(f"{d} needs at least two class sub-folders, found {[c.name for c in class_dirs]}")
    out = {}
    for c in class_dirs:
        found = sorted(f for f in c.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise DataError(f"class folder {c} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        out[c.name] = found
    return out


def folder_layout(base: str | Path) -> tuple[str, dict[str, dict[str, list[Path]]]]:
    """``("split", {"train": {class: files}, "test": ...})`` when ``base`` holds ``train/`` and ``test/``
    (and optionally ``val/``) of class sub-folders, else ``("classes", {"all": {class: files}})``."""
    base = Path(base)
    if not base.is_dir():
        raise DataError(f"image folder {base} not found (expected <folder>/<class>/<images> "
                        f"or <folder>/train|test/<class>/<images>)")
    names = {d.name for d in _visible_dirs(base)}
    if not ({"train", "test"} <= names <= set(SPLIT_NAMES)):
        return "classes", {"all": _class_files(base)}
    by_split = {k: _class_files(base / k) for k in SPLIT_NAMES if k in names}
    for k in ("val", "test"):
        extra = sorted(set(by_split.get(k, {})) - set(by_split["train"]))
        if extra:
            raise DataError(f"{base / k} has classes that {base / 'train'} lacks: {', '.join(extra)}")
    return "split", by_split


def read_groups(path: str | Path, base: str | Path) -> dict[str, str]:
    """A near-duplicate groups file -> {file relative to ``base``: group id}.

    Tab-separated with a header naming a ``file`` (or ``path``) column and a ``cluster_id`` (or
    ``group``) column, one row per grouped file, e.g. ``_meta/kidney_ct.near_duplicate_clusters.tsv``.
    Files in no row are groups of one. A row naming a file that ``base`` lacks is an error: a stale
    groups file would silently stop guarding the split."""
    path, base = Path(path), Path(base)
    try:
        rows = path.read_text().splitlines()
    except OSError as e:
        raise DataError(f"groups file {path} unreadable: {e.strerror or e}") from None
    if not rows:
        raise DataError(f"{path}:1: empty groups file (expected a header: cluster_id<TAB>file)")
    head = [h.strip().lower() for h in rows[0].split("\t")]
    fcol = next((head.index(h) for h in ("file", "path") if h in head), None)
    gcol = next((head.index(h) for h in ("cluster_id", "group", "cluster") if h in head), None)
    if fcol is None or gcol is None:
        raise DataError(f"{path}:1: header {rows[0]!r} needs a file (or path) column and a cluster_id "
                        f"(or group) column, tab-separated")
    out: dict[str, str] = {}
    for n, row in enumerate(rows[1:], start=2):
        if not row.strip():
            continue
        cols = row.split("\t")
        if len(cols) <= max(fcol, gcol):
            raise DataError(f"{path}:{n}: expected {len(head)} tab-separated columns, got {row!r}")
        rel = cols[fcol].strip()
        if not (base / rel).is_file():
            raise DataError(f"{path}:{n}: {rel!r} is not a file in {base} (a stale groups file?)")
        if rel in out:
            raise DataError(f"{path}:{n}: {rel!r} is listed twice")
        out[rel] = cols[gcol].strip()
    return out


def _fill(groups: list[list[int]], targets: list[int]) -> list[list[int]]:
    """Deal shuffled groups into len(targets) + 1 parts: each part takes, in order, every group that
    brings it closer to its target size; the last part takes the rest. With groups of one this
    is "the first n_test, then the next n_val, then the rest"."""
    parts, queue = [], groups
    for target in targets:
        taken, rest, n = [], [], 0
        for g in queue:
            if n < target and abs(n + len(g) - target) < abs(n - target):
                taken += g
                n += len(g)
            else:
                rest.append(g)
        parts.append(taken)
        queue = rest
    return parts + [[i for g in queue for i in g]]


def _strata(idx: list[int], labels: np.ndarray, group_of: list[str | None], n_classes: int) -> list[list[list[int]]]:
    """The groups among ``idx`` (first-member order), each filed under its majority label."""
    groups: dict[object, list[int]] = {}
    for i in idx:
        groups.setdefault(group_of[i] if group_of[i] is not None else ("one", i), []).append(i)
    strata: list[list[list[int]]] = [[] for _ in range(n_classes)]
    for g in groups.values():
        strata[int(np.bincount(labels[g], minlength=n_classes).argmax())].append(g)
    return strata


def plan_folder(path: str | Path, split_seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2,
                groups: str | Path | None = None, split: str | None = None) -> FolderPlan:
    """Where each image of a class folder goes, by a seed, keeping every near-duplicate group of
    ``groups`` (see :func:`read_groups`) on one side.

    ``split``: ``"stratified"`` (a ``<class>/`` folder: test and validation fractions of every
    class), ``"folders"`` (a ``train|test/`` folder: its test set as is, validation out of train,
    or its ``val/`` folder), or ``None`` for what the layout gives. A group that reaches the official
    test (or val) folder loses its members in the folders before it: near-copies never straddle."""
    base = Path(path).expanduser()
    layout, by_split = folder_layout(base)
    split = split or ("folders" if layout == "split" else "stratified")
    if (split == "folders") != (layout == "split"):
        want = "train/ and test/ sub-folders" if split == "folders" else "class sub-folders only (no train/ test/)"
        raise DataError(f"split {split!r} needs {want}; {base} has "
                        f"{', '.join(d.name for d in _visible_dirs(base))}")
    classes = sorted({c for per in by_split.values() for c in per})
    files: list[Path] = []
    labels_l: list[int] = []
    origin: list[str] = []
    for k, per in by_split.items():
        for c, found in per.items():
            files += found
            labels_l += [classes.index(c)] * len(found)
            origin += [k] * len(found)
    labels = np.array(labels_l, dtype=np.int64)
    gmap = read_groups(groups, base) if groups is not None else {}
    group_of = [gmap.get(f.relative_to(base).as_posix()) for f in files]
    info: dict = {"split": split, "split_seed": split_seed, "val_fraction": val_fraction}
    if groups is not None:
        info.update(groups=len(set(gmap.values())), grouped_images=len(gmap))
    rng = random.Random(split_seed)
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    n_classes = len(classes)
    if split == "stratified":
        info["test_fraction"] = test_fraction
        # stratified split by seed: every class is represented in every split where it can be
        for stratum in _strata(list(range(len(files))), labels, group_of, n_classes):
            rng.shuffle(stratum)
            n = sum(map(len, stratum))
            test, val, train = _fill(stratum, [round(n * test_fraction), round(n * val_fraction)])
            parts["test"] += test
            parts["val"] += val
            parts["train"] += train
    else:
        rank = {"test": 0, "val": 1, "train": 2}
        best: dict[str, int] = {}  # group -> the most protected split it reaches
        for g, k in zip(group_of, origin):
            if g is not None:
                best[g] = min(best.get(g, 2), rank[k])
        keep = [i for i, (g, k) in enumerate(zip(group_of, origin)) if g is None or rank[k] == best[g]]
        if dropped := len(files) - len(keep):
            info["dropped_near_copies"] = dropped  # train/val near-copies of official test/val images
        for i in keep:
            if origin[i] != "train":
                parts[origin[i]].append(i)
        train_idx = [i for i in keep if origin[i] == "train"]
        if "val" in by_split:
            parts["train"] = train_idx
        else:
            for stratum in _strata(train_idx, labels, group_of, n_classes):
                rng.shuffle(stratum)
                val, train = _fill(stratum, [round(sum(map(len, stratum)) * val_fraction)])
                parts["val"] += val
                parts["train"] += train
    parts = {k: sorted(v) for k, v in parts.items()}
    return FolderPlan(base, layout, classes, files, labels, parts, info)


def cache_dir() -> Path | None:
    """Where decoded folders are cached: ``$PROMPTSEARCH_CACHE`` (``off`` / ``0`` / empty: no cache),
    else ``$XDG_CACHE_HOME/promptsearch``, else ``~/.cache/promptsearch``."""
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        return None if env.strip().lower() in ("", "0", "off", "none", "false") else Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "promptsearch"


def file_hashes(files: list[Path]) -> list[str]:
    """The sha256 of each file's bytes (the cache key's parts; the leak guard compares them)."""
    import hashlib

    out = []
    for f in files:
        try:
            out.append(hashlib.sha256(f.read_bytes()).hexdigest())
        except OSError as e:
            raise DataError(f"unreadable image {f}: {e.strerror or e}") from None
    return out


def read_images(files: list[Path], size: int, grayscale: bool | None = None, cache: bool = True) -> np.ndarray:
    """Files -> (N, C, size, size) uint8 via :func:`read_image`, one channel when ``grayscale``
    (``None``: only if every file is single-channel). With ``cache``, the pixels are kept in
    ``cache_dir()/images/<sha256>.npy``, keyed by the bytes of every file, their order, ``size``,
    ``grayscale`` and the reader's version, so the same images anywhere on the machine decode once."""
    import hashlib

    path = None
    root = cache_dir() if cache else None
    if root is not None:
        h = hashlib.sha256(f"v{CACHE_VERSION}|{size}|{grayscale}|".encode())
        for d in file_hashes(files):
            h.update(d.encode())
        path = root / "images" / f"{h.hexdigest()}.npy"
        try:
            arr = np.load(path, allow_pickle=False)
            if arr.dtype == np.uint8 and arr.ndim == 4 and len(arr) == len(files):
                return arr
        except (OSError, ValueError):
            pass  # absent or truncated: decode again
    if grayscale is None:
        grayscale = all(image_mode(f) == "L" for f in files)
    mode = "L" if grayscale else "RGB"
    arr = np.stack([read_image(f, mode, size) for f in files])  # (N, C, S, S)
    if path is not None:
        from .files import atomic_write

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.save(fh, arr, allow_pickle=False)

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, save)
        except OSError as e:  # a read-only home: work on, uncached
            import warnings

            warnings.warn(f"image cache {path.parent} not writable ({e.strerror or e}); set {CACHE_ENV}=DIR or off",
                          stacklevel=2)
    return arr


@DATASETS.register("folder")
def load_folder(path: str | Path, root: str | Path | None = None, download: bool = False, size: int = 64,
                split_seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2,
                grayscale: bool | None = None, groups: str | Path | None = None, split: str | None = None,
                cache: bool = True) -> Dataset:
    """A folder of class sub-folders of images (PNG/JPEG/...), ``<class>/`` or ``train|test/<class>/``,
    split by :func:`plan_folder` (a seed, ``groups`` of near-duplicates kept together).

    Every image is resized to ``size`` x ``size``; ``grayscale=None`` keeps one channel only if
    every image is single-channel. Decoded pixels are cached (:func:`read_images`)."""
    base = Path(path).expanduser()
    if not base.is_absolute() and root is not None and not base.exists():
        base = Path(root) / base
    plan = plan_folder(base, split_seed, val_fraction, test_fraction, groups=groups, split=split)
    return folder_dataset(plan, size, grayscale, cache=cache)


def folder_dataset(plan: FolderPlan, size: int = 64, grayscale: bool | None = None, cache: bool = True,
                   name: str | None = None, extra: dict | None = None) -> Dataset:
    """The images of a :class:`FolderPlan`, decoded (or read from the cache), as a ``Dataset``."""
    import torch

    imgs = read_images(plan.files, size, grayscale, cache=cache)  # (N, C, size, size); names a corrupt file
    if not plan.parts["val"] or not plan.parts["train"]:
        raise DataError(f"{plan.base} has too few images to split ({len(plan.files)})")
    splits = {k: Split(torch.as_tensor(imgs[v], dtype=torch.uint8).contiguous(),
                       torch.as_tensor(plan.labels[v], dtype=torch.long)) for k, v in plan.parts.items()}
    task = "binary-class" if len(plan.classes) == 2 else "multi-class"
    return Dataset(name or plan.base.name, task, plan.classes, splits["train"], splits["val"], splits["test"],
                   source=str(plan.base), extra={**plan.info, **(extra or {})})


# the dataset catalogue (promptsearch.catalog) loads a named entry; it sits above this module,
# so it registers itself when first used instead of being imported here
DATASETS.register_lazy("catalog", "promptsearch.catalog")


def load_dataset(name: str, root: str | Path | None = None, download: bool = False, **kwargs) -> Dataset:
    """``breastmnist`` (any MedMNIST 2D name), a dataset catalogue name (``busi_breast_us``, with
    ``root`` the folders root: see :mod:`promptsearch.catalog`; ``catalog=FILES`` adds catalogue
    files), ``source:REST`` of a registered source (``folder:PATH``, ``catalog:NAME``), or an
    existing directory path."""
    source, _, rest = name.partition(":")
    if rest and source in DATASETS:
        return DATASETS.get_or_raise(source)(rest, root=root, download=download, **kwargs)
    if Path(name).expanduser().is_dir():
        return load_folder(name, root=root, **kwargs)
    try:
        return DATASETS.get_or_raise("catalog")(name, root=root, download=download, **kwargs)
    except NotInCatalog:
        kwargs.pop("catalog", None)
    return load_medmnist(name, root=root, download=download, **kwargs)
