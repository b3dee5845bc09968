"""The dataset catalogue: each dataset's anatomy, modality, per-class pathology tags, source,
channels and split, validated from YAML (``datasets.yaml`` here, plus users' files).

    PROMPTSEARCH_FOLDERS_ROOT=../shared/data/folders python -c "from promptsearch.catalog import load_entry; print(load_entry('busi_breast_us'))"

An entry is named by its key; ``load_dataset(name, root=...)`` loads it, with ``root`` the folders
root for a folder entry (the folder holding ``busi_breast_us/``) and the MedMNIST root for a
MedMNIST entry. Catalogue files, later ones adding entries (a name defined twice is an error):
the shipped ``datasets.yaml``; ``$PROMPTSEARCH_CATALOG`` (files, ``os.pathsep``-separated);
``catalog.yaml`` in the folders root (``root`` and ``$PROMPTSEARCH_FOLDERS_ROOT``), i.e. beside the
image folders it describes; and ``catalog=`` files passed in (``--catalog FILE``).

A folder entry's ``folder`` (and ``groups`` file) is relative to the folders root, never an absolute
path: the first of ``root``, ``$PROMPTSEARCH_FOLDERS_ROOT`` and (for a user's file) the catalogue
file's own directory that holds it.

:func:`same_source` / :func:`check_no_leak` say whether two entries are the same data (one
``source``, one folder, or byte-identical images), so a component library learned from one is
never evaluated on the other.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from ..data import (DATASETS, DataError, Dataset, FolderPlan, NotInCatalog, default_root, file_hashes,
                    folder_dataset, folder_layout, load_medmnist, medmnist_2d, medmnist_meta, plan_folder)
from ..yamlio import parse_document, where

CATALOG_ENV = "PROMPTSEARCH_CATALOG"
FOLDERS_ROOT_ENV = "PROMPTSEARCH_FOLDERS_ROOT"
SHIPPED = Path(__file__).resolve().parent / "datasets.yaml"
USER_FILE = "catalog.yaml"  # beside the image folders, in a folders root

# --- the vocabularies: the search spaces' component names are drawn from these ----------------------
ANATOMY = ("abdomen", "adrenal", "blood", "bone", "brain", "breast", "colon", "eye", "heart", "kidney",
           "liver", "lung", "skin", "vessel")
MODALITY = ("ct", "dermoscopy", "fundus", "histology", "microscopy", "mri", "oct", "ultrasound", "xray")
PATHOLOGY = {  # tag -> what a class with it shows
    "normal": "no finding",
    "tumor": "a neoplasm, benign or malignant (glioma, carcinoma, melanoma, nevus, breast mass)",
    "inflammation": "infection or inflammation (pneumonia)",
    "atrophy": "loss of tissue",
    "cyst": "a fluid-filled sac",
    "calculus": "a stone",
    "vascular": "disease of vessels (diabetic retinopathy, angioma)",
    "degeneration": "degenerative change (cataract, glaucomatous optic neuropathy)",
    "dysplasia": "a precancerous change (actinic keratosis)",
}
Files = str | Path | Iterable[str | Path] | None  # extra catalogue files
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
SOURCE_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


class CatalogError(DataError):
    """A catalogue entry that is not valid, or that does not match its data; the message names the
    file, line and field."""


class LeakError(DataError):
    """Two datasets of one source used as if they were different data; the message names both."""


def _known(kind: str, value: str, vocab: Iterable[str]) -> str:
    if value not in vocab:
        raise ValueError(f"unknown {kind} {value!r}; known: {', '.join(vocab)}")
    return value


class SplitSpec(BaseModel):
    """How an entry splits: MedMNIST's ``official`` splits; ``folders`` (``train/`` and ``test/``
    folders: test as is, validation out of train); ``stratified`` (a seeded per-class split of a
    ``<class>/`` folder). Unset: what the data gives."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["official", "folders", "stratified"] | None = None
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)  # of each class (of train, for kind folders)
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)  # of each class; kind stratified only
    seed: int = 0  # fixed per entry: every trial sees the same split

    @model_validator(mode="after")
    def _fractions(self) -> SplitSpec:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("@val_fraction: val_fraction + test_fraction must leave images to train on")
        return self


class Entry(BaseModel):
    """One dataset of the catalogue (its name is its key in the file)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    title: str = ""
    medmnist: str | None = None  # a MedMNIST 2D name, read from the MedMNIST root
    folder: str | None = None  # an image folder, relative to the folders root
    anatomy: str
    modality: str
    classes: dict[str, tuple[str, ...]]  # class (folder name / MedMNIST label) -> pathology tags
    source: str  # the data's origin: entries with one source are the same data
    channels: Literal[1, 3] | None = None  # None: 1 if every image is single-channel
    size: int | None = Field(None, gt=0, le=1024)  # stored size; None: 64 for folders, 28 for MedMNIST
    split: SplitSpec = SplitSpec()
    groups: str | None = None  # near-duplicate groups file, relative to the folders root
    notes: str = ""

    _name: str = PrivateAttr("")
    _origin: str = PrivateAttr("")  # the catalogue file
    _lines: dict = PrivateAttr(default_factory=dict)

    @field_validator("anatomy")
    @classmethod
    def _anatomy(cls, v: str) -> str:
        return _known("anatomy", v, ANATOMY)

    @field_validator("modality")
    @classmethod
    def _modality(cls, v: str) -> str:
        return _known("modality", v, MODALITY)

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if not SOURCE_RE.match(v):
            raise ValueError(f"source {v!r}: lower-case letters, digits, '_', '.', '-' (e.g. busi, kermany2018_chest_xray)")
        return v

    @field_validator("classes", mode="before")
    @classmethod
    def _classes(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v  # pydantic says what it wanted
        out = {}
        for name, tags in v.items():
            tags = [tags] if isinstance(tags, str) else tags
            if not isinstance(tags, list) or not tags:
                raise ValueError(f"@{name}: give a pathology tag or a list of them ({', '.join(PATHOLOGY)})")
            for t in tags:
                if t not in PATHOLOGY:
                    raise ValueError(f"@{name}: unknown pathology tag {t!r}; known: {', '.join(PATHOLOGY)}")
            out[str(name)] = tuple(tags)
        if len(out) < 2:
            raise ValueError(f"a dataset needs at least two classes, got {list(out)}")
        return out

    @model_validator(mode="after")
    def _kind(self) -> Entry:
        if (self.medmnist is None) == (self.folder is None):
            raise ValueError("@folder: give exactly one of medmnist: NAME or folder: PATH")
        if self.medmnist is not None:
            meta = medmnist_meta(self.medmnist)
            if meta is None:
                raise ValueError(f"@medmnist: unknown MedMNIST 2D dataset {self.medmnist!r}; "
                                 f"known: {', '.join(medmnist_2d())}")
            for c in self.classes:
                if c not in meta["classes"]:
                    raise ValueError(f"@classes.{c}: not a class of {meta['name']} "
                                     f"(its classes: {', '.join(map(repr, meta['classes']))})")
            missing = [c for c in meta["classes"] if c not in self.classes]
            if missing:
                raise ValueError(f"@classes: {meta['name']} class{'es' if len(missing) > 1 else ''} "
                                 f"{', '.join(map(repr, missing))} need a pathology tag")
            if self.split.kind not in (None, "official"):
                raise ValueError(f"@split.kind: a MedMNIST entry keeps its official splits, not {self.split.kind!r}")
            if self.channels is not None and self.channels != meta["channels"]:
                raise ValueError(f"@channels: {meta['name']} has {meta['channels']} channel(s)")
            if self.groups is not None:
                raise ValueError("@groups: only a folder entry has a groups file")
        else:
            for fld in ("folder", "groups"):
                p = getattr(self, fld)
                if p is not None and (Path(p).expanduser().is_absolute() or p.startswith("~") or not p.strip()):
                    raise ValueError(f"@{fld}: {p!r}: a path relative to the folders root, not an absolute one")
            if self.split.kind == "official":
                raise ValueError("@split.kind: 'official' is MedMNIST's; a folder splits by 'folders' or 'stratified'")
        return self

    # --- identity and where it was written ----------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def kind(self) -> str:
        return "medmnist" if self.medmnist is not None else "folder"

    @property
    def origin(self) -> str:
        """The catalogue file this entry came from."""
        return self._origin

    @property
    def shipped(self) -> bool:
        return self._origin == str(SHIPPED)

    @property
    def stored_size(self) -> int:
        return self.size or (28 if self.kind == "medmnist" else 64)

    def where(self, *field: Any) -> str:
        """``file:line: datasets.<name>.<field>`` for an error about this entry."""
        return where(self._origin, self._lines, "datasets", self._name, *field)

    def tags(self) -> list[str]:
        """Every pathology tag of the entry's classes, in vocabulary order."""
        on = {t for ts in self.classes.values() for t in ts}
        return [t for t in PATHOLOGY if t in on]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, **self.model_dump(mode="json", exclude_none=True),
                "catalog": "shipped" if self.shipped else self.origin}


class CatalogFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    datasets: dict[str, Entry] = Field(min_length=1)

    @field_validator("datasets", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        if isinstance(v, dict):
            for name, body in v.items():
                if not NAME_RE.match(str(name)):
                    raise ValueError(f"@{name}: a dataset name is lower-case letters, digits, '_', '.', '-'")
                flag = isinstance(body, dict) and body.get("medmnist")
                if medmnist_meta(str(name)) is not None and flag != name:
                    raise ValueError(f"@{name}: a MedMNIST name; only the entry with medmnist: {name} may use it")
        return v


# --- reading catalogue files --------------------------------------------------------------------------
def parse_catalog(text: str, source: str) -> dict[str, Entry]:
    """A catalogue file's text -> its entries; every error is ``source:line: field: reason``."""
    parsed, lines = parse_document(text, source, CatalogFile, CatalogError,
                                   "a catalogue is a mapping with a 'datasets:' mapping of entries")
    for name, entry in parsed.datasets.items():
        entry._name, entry._origin, entry._lines = name, source, lines
    return dict(parsed.datasets)


@functools.lru_cache(maxsize=64)
def _read_cached(path: str, mtime_ns: int, size: int) -> dict[str, Entry]:
    return parse_catalog(Path(path).read_text(), path)


def read_catalog(path: str | Path) -> dict[str, Entry]:
    """One catalogue file's entries (parsed once per version of the file)."""
    p = Path(path).expanduser()
    try:
        st = p.stat()
    except OSError:
        raise CatalogError(f"catalogue file {p} not found") from None
    return _read_cached(str(p), st.st_mtime_ns, st.st_size)


def _as_files(files: Files) -> list[Path]:
    if files is None:
        return []
    if isinstance(files, (str, Path)):
        return [Path(files)]
    return [Path(f) for f in files]


def catalog_files(root: str | Path | None = None, files: Files = ()) -> list[Path]:
    """The catalogue files in force, in order (see the module docstring)."""
    out = [SHIPPED]
    out += [Path(f) for f in os.environ.get(CATALOG_ENV, "").split(os.pathsep) if f.strip()]
    for r in (root, os.environ.get(FOLDERS_ROOT_ENV)):
        if r and (Path(r).expanduser() / USER_FILE).is_file():
            out.append(Path(r).expanduser() / USER_FILE)
    out += _as_files(files)
    seen, unique = set(), []
    for f in out:
        key = f.expanduser().resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def catalog(root: str | Path | None = None, files: Files = ()) -> dict[str, Entry]:
    """Every entry of every catalogue file in force; a name in two files is an error naming both."""
    entries: dict[str, Entry] = {}
    for f in catalog_files(root, files):
        for name, e in read_catalog(f).items():
            if name in entries:
                raise CatalogError(f"{e.where()}: dataset {name!r} is already defined at {entries[name].where()}")
            entries[name] = e
    return entries


def find_entry(name: str, root: str | Path | None = None, files: Files = ()) -> Entry | None:
    """The entry called ``name``, or ``None``."""
    return catalog(root, files).get(name)


def get_entry(name: str | Entry, root: str | Path | None = None, files: Files = ()) -> Entry:
    """The entry called ``name`` (an ``Entry`` is returned as is); unknown names list the known ones."""
    if isinstance(name, Entry):
        return name
    entries = catalog(root, files)
    if name not in entries:
        raise NotInCatalog(f"unknown dataset {name!r}; the catalogue has {', '.join(sorted(entries))}")
    return entries[name]


# --- an entry against its data ------------------------------------------------------------------------
def folders_roots(entry: Entry, root: str | Path | None = None) -> list[Path]:
    """Where ``entry.folder`` may be, in order: ``root``, ``$PROMPTSEARCH_FOLDERS_ROOT``, and the
    directory of a user's catalogue file."""
    cands = [root, os.environ.get(FOLDERS_ROOT_ENV)] + ([] if entry.shipped else [Path(entry.origin).parent])
    out: list[Path] = []
    for c in cands:
        if c and Path(c).expanduser() not in out:
            out.append(Path(c).expanduser())
    return out


def resolve_folder(entry: Entry, root: str | Path | None = None) -> tuple[Path, Path | None]:
    """A folder entry's folder and groups file, found under the first folders root that holds it."""
    roots = folders_roots(entry, root)
    if not roots:
        raise CatalogError(f"{entry.where('folder')}: no folders root for {entry.folder!r}: pass --folders-root DIR "
                           f"(root=DIR) or set {FOLDERS_ROOT_ENV} (the folder holding {entry.folder}/)")
    found = next((r for r in roots if (r / entry.folder).is_dir()), None)
    if found is None:
        raise CatalogError(f"{entry.where('folder')}: folder {entry.folder!r} not found under "
                           f"{', '.join(map(str, roots))}; pass --folders-root DIR or set {FOLDERS_ROOT_ENV}")
    groups = None
    if entry.groups is not None:
        groups = found / entry.groups
        if not groups.is_file():
            raise CatalogError(f"{entry.where('groups')}: groups file {entry.groups!r} not found in {found}")
    return found / entry.folder, groups


def plan_entry(entry: Entry, root: str | Path | None = None, **overrides: Any) -> FolderPlan:
    """A folder entry's split plan (no pixels decoded), after checking the entry against the
    folder: layout against ``split.kind``, every class tagged and present."""
    base, groups = resolve_folder(entry, root)
    layout, by_split = folder_layout(base)
    kind = entry.split.kind
    if kind is not None and (kind == "folders") != (layout == "split"):
        has = "train/ and test/ folders" if layout == "split" else "no train/ and test/ folders"
        raise CatalogError(f"{entry.where('split', 'kind')}: {kind!r} does not fit {base}: it has {has} "
                           f"(use kind: {'folders' if layout == 'split' else 'stratified'})")
    found = sorted({c for per in by_split.values() for c in per})
    for c in entry.classes:
        if c not in found:
            raise CatalogError(f"{entry.where('classes', c)}: class {c!r} is not a folder in {base} "
                               f"(its classes: {', '.join(found)})")
    untagged = [c for c in found if c not in entry.classes]
    if untagged:
        raise CatalogError(f"{entry.where('classes')}: {base} has class folder{'s' if len(untagged) > 1 else ''} "
                           f"{', '.join(map(repr, untagged))} with no pathology tag")
    s = entry.split
    args = {"split_seed": s.seed, "val_fraction": s.val_fraction, "test_fraction": s.test_fraction, **overrides}
    return plan_folder(base, groups=groups, split=kind, **args)


def load_entry(name: str | Entry, root: str | Path | None = None, download: bool = False,
               catalog: Files = (), size: int | None = None, split_seed: int | None = None, val_fraction: float | None = None, test_fraction: float | None = None,
               grayscale: bool | None = None, cache: bool = True) -> Dataset:
    """A catalogue entry as a ``Dataset`` (named as the entry). ``root``: the MedMNIST root for a
    MedMNIST entry, the folders root for a folder entry. Keyword arguments override the entry's
    stored size and split (a MedMNIST entry takes ``size`` only)."""
    entry = get_entry(name, root, catalog)
    if entry.kind == "medmnist":
        given = [k for k, v in (("split_seed", split_seed), ("val_fraction", val_fraction),
                                ("test_fraction", test_fraction), ("grayscale", grayscale)) if v is not None]
        if given:
            raise CatalogError(f"{entry.where('medmnist')}: a MedMNIST entry keeps its official splits and "
                               f"channels; {', '.join(given)} cannot change them")
        return load_medmnist(entry.medmnist, root=root, download=download,
                             **({"size": size or entry.size} if (size or entry.size) else {}))
    overrides = {k: v for k, v in (("split_seed", split_seed), ("val_fraction", val_fraction),
                                   ("test_fraction", test_fraction)) if v is not None}
    plan = plan_entry(entry, root, **overrides)
    if grayscale is None and entry.channels is not None:
        grayscale = entry.channels == 1
    extra = {"catalog": entry.name, "anatomy": entry.anatomy, "modality": entry.modality, "source": entry.source,
             "tags": {c: list(entry.classes[c]) for c in plan.classes}}
    return folder_dataset(plan, size or entry.stored_size, grayscale, cache=cache, name=entry.name, extra=extra)


DATASETS.register("catalog")(load_entry)


def class_counts(name: str | Entry, root: str | Path | None = None) -> dict[str, dict[str, int]]:
    """split -> class -> images of an entry, from file listings and labels only (no pixels)."""
    entry = get_entry(name, root)
    if entry.kind == "folder":
        return plan_entry(entry, root).counts()
    meta = medmnist_meta(entry.medmnist)
    data_root = default_root(root)
    suffix = "" if entry.stored_size == 28 else f"_{entry.stored_size}"
    path = (data_root / f"{meta['name']}{suffix}.npz") if data_root else None
    if path is None or not path.is_file():
        raise DataError(f"{path or meta['name'] + suffix + '.npz'} not found: point --data-root / "
                        f"PROMPTSEARCH_DATA_ROOT at the folder holding it")
    n = len(meta["classes"])
    with np.load(path) as z:
        labels = {k: z[f"{k}_labels"].astype(np.int64) for k in ("train", "val", "test")}
    per = {k: y.sum(0) if meta["task"] == "multi-label" else np.bincount(y.reshape(-1), minlength=n)
           for k, y in labels.items()}  # multi-label: images with each label
    return {k: {c: int(v) for c, v in zip(meta["classes"], per[k])} for k in per}


# --- the leakage guard ----------------------------------------------------------------------------------
def _folder_or_none(entry: Entry, root: str | Path | None) -> Path | None:
    try:
        return resolve_folder(entry, root)[0].resolve()
    except CatalogError:
        return None


def shared_images(a: str | Entry, b: str | Entry, root: str | Path | None = None, catalog: Files = ()) -> int:
    """How many byte-identical image files two folder entries hold (0 where either folder is not
    found or an entry is MedMNIST's: its 28 px arrays are never byte-equal to a folder's files)."""
    ea, eb = get_entry(a, root, catalog), get_entry(b, root, catalog)
    fa, fb = (_folder_or_none(e, root) if e.kind == "folder" else None for e in (ea, eb))
    if fa is None or fb is None:
        return 0
    ha, hb = (set(file_hashes(plan_folder(f).files)) for f in (fa, fb))
    return len(ha & hb)


def same_source(a: str | Entry, b: str | Entry, root: str | Path | None = None, images: bool = True,
                catalog: Files = ()) -> bool:
    """Whether two entries are the same data: one ``source``, one folder (or one inside the other),
    or (``images``) any byte-identical image file between two folder entries whose folders are
    found (under ``root``, ``$PROMPTSEARCH_FOLDERS_ROOT`` or a user entry's catalogue directory)."""
    ea, eb = get_entry(a, root, catalog), get_entry(b, root, catalog)
    if ea.name == eb.name or ea.source == eb.source:
        return True
    if ea.kind == eb.kind == "folder":
        fa, fb = _folder_or_none(ea, root), _folder_or_none(eb, root)
        if fa is not None and fb is not None and (fa == fb or fa in fb.parents or fb in fa.parents):
            return True
        return images and shared_images(ea, eb, root) > 0
    return False


def check_no_leak(library_sources: Sequence[str | Entry], target: str | Entry, root: str | Path | None = None,
                  images: bool = True, catalog: Files = ()) -> None:
    """Raise :class:`LeakError` naming every library dataset that is the same data as ``target``
    (:func:`same_source`): a component learned from it must not be evaluated on ``target``."""
    t = get_entry(target, root, catalog)
    bad = [get_entry(s, root, catalog) for s in library_sources if same_source(s, t, root, images, catalog)]
    if bad:
        pairs = "; ".join(f"{e.name!r} (source {e.source}, {e.where()}) and {t.name!r} (source {t.source}, {t.where()})"
                          for e in bad)
        raise LeakError(f"library and target are the same data: {pairs}. Leave "
                        f"{', '.join(repr(e.name) for e in bad)} out of the library, or pick another target")


__all__ = ["ANATOMY", "MODALITY", "PATHOLOGY", "CatalogError", "Entry", "LeakError", "NotInCatalog", "SplitSpec",
           "catalog", "catalog_files", "check_no_leak", "class_counts", "find_entry", "get_entry", "load_entry",
           "parse_catalog", "plan_entry", "read_catalog", "resolve_folder", "same_source", "shared_images"]
