"""A library on disk: ``library.safetensors`` (one tensor per component) + ``library.json``, read
back exactly, and a job's chain of library versions (weight sharing between trials).

    python -c "from promptsearch.library import open_library; lib = open_library('artifacts/library/pixel-mnv2-32'); print(lib.version, {k: tuple(v.shape) for k, v in lib.blocks.items()})"

Files are written to a temporary name and renamed (a reader never sees half a library), with one
safetensors metadata key (several are written in random order; the file must be reproducible).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..files import atomic_write, file_sha256
from .manifest import LIBRARY_FORMAT, MANIFEST, WEIGHTS, LibraryError, Manifest, read_manifest


def tensor_sha256(t: torch.Tensor) -> str:
    """sha256 of a block's float32 bytes in C order: equal iff the block is bit-identical."""
    return hashlib.sha256(t.detach().to(torch.float32).contiguous().cpu().numpy().tobytes()).hexdigest()


@dataclass
class Library:
    """A library read from disk: its manifest, its folder and its blocks (component -> tensor)."""

    path: Path
    manifest: Manifest
    blocks: dict[str, torch.Tensor]

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def sha256(self) -> str:
        return self.manifest.sha256

    @property
    def components(self) -> list[str]:
        return sorted(self.manifest.components)

    def ref(self) -> dict[str, Any]:
        """What a space (and a bundle) records to load exactly this library again."""
        return {"path": str(self.path), "version": self.version, "sha256": self.sha256,
                "components": tuple(self.components)}


def open_library(path: str | Path, sha256: str | None = None, version: str | None = None) -> Library:
    """Read a library folder; with ``sha256``/``version`` (a bound space's record) the file must be
    exactly that one. Every block is checked against the manifest (names, shapes, bytes)."""
    from safetensors.torch import load_file

    folder = Path(path).expanduser()
    manifest = read_manifest(folder)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise LibraryError(f"{weights}: missing (the manifest {folder / MANIFEST} names it)")
    actual = file_sha256(weights)
    if actual != manifest.sha256:
        raise LibraryError(f"{weights}: sha256 {actual[:16]}... differs from {MANIFEST}'s weights.sha256 "
                           f"{manifest.sha256[:16]}... (the file was changed or replaced)")
    if sha256 is not None and actual != sha256:
        raise LibraryError(f"{weights}: sha256 {actual[:16]}... is not the library this space was bound to "
                           f"({sha256[:16]}..., version {version}); the folder was rebuilt: bind it again")
    if version is not None and manifest.version != version:
        raise LibraryError(f"{folder / MANIFEST}: version {manifest.version}, but version {version} was asked")
    blocks = load_file(str(weights))
    names, want = set(blocks), set(manifest.components)
    if names != want:
        raise LibraryError(f"{weights}: tensors {sorted(names ^ want)} do not match {MANIFEST}'s components")
    shape = tuple(manifest.geometry.shape)
    for name, t in blocks.items():
        if tuple(t.shape) != shape:
            raise LibraryError(f"{weights}: block {name!r} has shape {tuple(t.shape)}, the manifest's geometry {shape}")
        if tensor_sha256(t) != manifest.components[name].sha256:
            raise LibraryError(f"{weights}: block {name!r} differs from {MANIFEST}'s components.{name}.sha256")
    return Library(folder, manifest, blocks)


def _metadata() -> dict[str, str]:
    return {"promptsearch": json.dumps({"format": LIBRARY_FORMAT}, sort_keys=True)}


def write_library(out: str | Path, manifest_fields: Mapping[str, Any], blocks: Mapping[str, torch.Tensor]) -> Library:
    """Write ``blocks`` and their manifest to the folder ``out``: the weights first, then the
    manifest naming their sha256 and version (a crash in between leaves the old manifest, which
    the weights no longer match: :func:`open_library` says so). ``manifest_fields``: every
    :class:`Manifest` field except ``version``, ``weights`` and each component's ``sha256``."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float32).contiguous().cpu().clone() for k, v in sorted(blocks.items())}
    weights = out / WEIGHTS
    atomic_write(weights, lambda p: save_file(state, str(p), metadata=_metadata()))
    sha = file_sha256(weights)
    fields = json.loads(json.dumps(dict(manifest_fields), default=str))
    for name, t in state.items():
        fields["components"][name]["sha256"] = tensor_sha256(t)
    manifest = Manifest.model_validate({**fields, "version": sha[:16],
                                        "weights": {"file": WEIGHTS, "sha256": sha, "bytes": weights.stat().st_size}})
    atomic_write(out / MANIFEST, json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n")
    return Library(out, manifest, state)


# --- a job's library versions ---------------------------------------------------------------------
class LibraryVersions:
    """Weight sharing inside a job: immutable library versions under ``root/versions/<version>/``,
    ``root/HEAD`` naming the newest, ``root/log.jsonl`` one line per write-back.

    A trial starts from a version the search loop picked and recorded (usually :meth:`head` at ask
    time) and, when it fine-tuned library blocks, :meth:`write_back` makes a child version: the
    start version's blocks with the trial's trained ones in their place. A version is named by its
    content, so a replayed trial (same start version, candidate and seed) writes the same version
    again: resume and replays are exact."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @classmethod
    def create(cls, root: str | Path, base: str | Path | Library) -> LibraryVersions:
        """A job's versions, starting from the library ``base`` (copied in as the first version);
        an existing root is opened as it is (resume)."""
        versions = cls(root)
        if (versions.root / "HEAD").is_file():
            return versions
        lib = base if isinstance(base, Library) else open_library(base)
        target = versions.root / "versions" / lib.version
        if not (target / MANIFEST).is_file():
            tmp = versions.root / "versions" / f".{lib.version}.{os.getpid()}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            for name in (MANIFEST, WEIGHTS):
                shutil.copy2(lib.path / name, tmp / name)
            with contextlib.suppress(OSError):
                os.replace(tmp, target)
            shutil.rmtree(tmp, ignore_errors=True)
        atomic_write(versions.root / "HEAD", lib.version + "\n")
        return versions

    def head(self) -> str:
        try:
            return (self.root / "HEAD").read_text().strip()
        except FileNotFoundError:
            raise LibraryError(f"{self.root}: not a job library (no HEAD): LibraryVersions.create() it first") from None

    def path(self, version: str) -> Path:
        return self.root / "versions" / version

    def open(self, version: str | None = None) -> Library:
        version = version or self.head()
        if not (self.path(version) / MANIFEST).is_file():
            raise LibraryError(f"{self.root}: no library version {version!r} "
                               f"(have {', '.join(self.versions()) or 'none'})")
        return open_library(self.path(version), version=version)

    def versions(self) -> list[str]:
        d = self.root / "versions"
        return sorted(p.name for p in d.iterdir() if not p.name.startswith(".")) if d.is_dir() else []

    def write_back(self, parent: str, trained: Mapping[str, torch.Tensor], origin: Mapping[str, Any],
                   metrics: Mapping[str, float] | None = None, advance: bool = True) -> str:
        """A child of ``parent`` with ``trained`` blocks replacing its own (others bit-identical);
        returns its version (an identical child already written is reused). ``advance``: make it HEAD."""
        base = self.open(parent)
        unknown = sorted(set(trained) - set(base.blocks))
        if unknown:
            raise LibraryError(f"write-back of {unknown}: not components of library version {parent}")
        blocks = {**base.blocks, **{k: v.detach().to(torch.float32).cpu() for k, v in trained.items()}}
        fields = base.manifest.model_dump(mode="json", exclude={"version", "weights"})
        fields.update(parent=parent, generation=base.manifest.generation + 1, old_tasks={},
                      origin={**dict(origin), "parent": parent, "trained": sorted(trained)})
        for name in trained:
            rec = fields["components"][name]
            rec["metrics"] = {**rec["metrics"], **{f"shared_{k}": float(v) for k, v in (metrics or {}).items()}}
        tmp = self.root / "versions" / f".write.{os.getpid()}.{time.monotonic_ns()}.tmp"
        lib = write_library(tmp, fields, blocks)
        target = self.path(lib.version)
        if (target / MANIFEST).is_file():
            shutil.rmtree(tmp, ignore_errors=True)  # the same content: a replay
        else:
            try:
                os.replace(tmp, target)
            except OSError:  # a concurrent writer made it first
                shutil.rmtree(tmp, ignore_errors=True)
        line = json.dumps({"version": lib.version, "parent": parent, **dict(origin)}, sort_keys=True)
        with open(self.root / "log.jsonl", "a") as f:
            f.write(line + "\n")
        if advance:
            atomic_write(self.root / "HEAD", lib.version + "\n")
        return lib.version

    def log(self) -> list[dict[str, Any]]:
        """Every write-back, in order (a replay appears again, with the same version)."""
        try:
            return [json.loads(x) for x in (self.root / "log.jsonl").read_text().splitlines() if x.strip()]
        except FileNotFoundError:
            return []
