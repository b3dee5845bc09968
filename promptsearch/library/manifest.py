"""``library.json``: what a component library holds, as typed data (no torch).

    python -c "from promptsearch.library import read_manifest; m = read_manifest('artifacts/library/pixel-mnv2-32'); print(m.version, sorted(m.components))"

One record per component (its tag kind, the datasets and training images it learned from, its
training figures, the sha256 of its tensor), one per source dataset (catalogue facts, image hash,
final validation metrics), the backbone (name + weights sha256), the prompt geometry, the build
recipe, and the version chain (``version`` = the first 16 hex digits of library.safetensors'
sha256; ``parent`` = the version it grew from, ``generation`` counts the steps).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..version import __version__

LIBRARY_FORMAT = "promptsearch-library/1"
MANIFEST, WEIGHTS = "library.json", "library.safetensors"
CHECKPOINT = "checkpoint.pt"  # the build's per-epoch state (resume after kill -9)
TASKS = "tasks.safetensors"  # per-dataset fusion + head: not part of the library; `library add` re-measures with it
KINDS = ("anatomy", "modality", "pathology", "generic")  # a component's tag kind
GENERIC = "medical"  # the component every source dataset trains


class LibraryError(ValueError):
    """A library that cannot be built, read or used as asked; the message names the file and field."""


class Geometry(BaseModel):
    """The shape of one block. pixel: a full-image pattern (3, S, S) at the library's image size;
    token: (layers, tokens, embed dim) for prompts at ``depth``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    module: Literal["pixel", "token"]
    image_size: int = Field(ge=8)
    shape: tuple[int, ...]
    patch_size: int | None = None
    tokens: int | None = None
    depth: str | None = None


class BackboneRef(BaseModel):
    """The frozen backbone the blocks were learned on (a block is meaningless on another one)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    image_size: int | None = None
    patch_size: int | None = None
    weights_file: str | None = None
    weights_sha256: str | None = None
    pretrained: bool = False


class ComponentRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["anatomy", "modality", "pathology", "generic"]
    datasets: list[str]  # every source dataset whose composition holds this block
    images: dict[str, str]  # dataset -> sha256 of the training images it learned from
    train_images: int  # images of those datasets' training splits, together
    metrics: dict[str, float] = Field(default_factory=dict)  # steps, images_seen, train_loss, val_auc_mean, ...
    sha256: str  # of the block's bytes (float32, C order): bit-identity across versions
    added_in: int  # the generation that learned it (0: the first build)


class DatasetRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str  # medmnist | folder
    source: str  # the catalogue's source: the leakage guard compares it
    anatomy: str
    modality: str
    tags: list[str]  # pathology tags of its classes
    classes: dict[str, list[str]]
    task: str
    components: list[str]  # its composition, in stack order
    images: dict[str, Any]  # {"train": n, "val": n, "sha256": of the training pixels}
    metrics: dict[str, float] = Field(default_factory=dict)  # validation, after the last epoch
    added_in: int = 0
    catalog: str = "shipped"  # where its entry was defined


class Manifest(BaseModel):
    """``library.json``."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["promptsearch-library/1"] = LIBRARY_FORMAT
    promptsearch_version: str = __version__
    version: str  # first 16 hex digits of library.safetensors' sha256
    parent: str | None = None  # the version this one grew from (library add, a job's write-back)
    generation: int = 0
    backbone: BackboneRef
    geometry: Geometry
    fusion: str  # how the build composed each dataset's blocks
    init: str
    recipe: dict[str, Any]  # the build config (epochs, batch size, lr, seed, sample caps, ...)
    components: dict[str, ComponentRecord]
    datasets: dict[str, DatasetRecord]
    weights: dict[str, Any]  # {"file", "sha256", "bytes"}
    history: list[dict[str, float]] = Field(default_factory=list)  # per epoch: loss, per-dataset val AUC
    old_tasks: dict[str, dict[str, dict[str, float]]] = Field(default_factory=dict)  # add: {dataset: {before, after}}
    origin: dict[str, Any] = Field(default_factory=dict)  # a job's write-back: parent, candidate, seed
    cost: dict[str, float] = Field(default_factory=dict)  # wall_time_s, peak_rss_mb, threads, steps

    @property
    def sha256(self) -> str:
        return str(self.weights["sha256"])

    def kind_of(self, component: str) -> str:
        return self.components[component].kind


def manifest_path(path: str | Path) -> Path:
    """``library.json`` of a library folder (or the file itself)."""
    p = Path(path).expanduser()
    return p if p.name == MANIFEST else p / MANIFEST


def read_manifest(path: str | Path) -> Manifest:
    """The validated manifest of a library folder; errors name the file and the field."""
    p = manifest_path(path)
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise LibraryError(f"{p}: no library here (expected {MANIFEST} + {WEIGHTS}, made by "
                           f"`promptsearch library build`)") from None
    except (OSError, ValueError) as e:
        raise LibraryError(f"{p}: unreadable library manifest ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != LIBRARY_FORMAT:
        raise LibraryError(f"{p}: format: not a promptsearch library manifest (want {LIBRARY_FORMAT!r}, "
                           f"got {doc.get('format') if isinstance(doc, dict) else type(doc).__name__!r})")
    try:
        return Manifest.model_validate(doc)
    except ValidationError as e:
        err = e.errors()[0]
        raise LibraryError(f"{p}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
