"""Using a library: a space bound to it, the blocks a trial starts from, what a trial writes back,
and what a bundle records.

    python -c "from promptsearch.library import bind_library; from promptsearch.space import load_space; print(bind_library(load_space('medical'), 'artifacts/library/try').spec.library)"

Which components come from the library (:func:`library_components`): with ``source: library``,
every chosen component except the space's ``scratch`` ones; with ``source: scratch``, none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..backbones import Backbone, BackboneSpec
from ..files import file_sha256
from ..prompts import IncompatibleCandidate, PixelPrompt, PromptedModel, TokenPrompt
from ..space import Architecture, Candidate, LibraryRef, SearchSpace, SpaceFile
from .manifest import LibraryError
from .store import Library, LibraryVersions, open_library


# a library component's kind -> the component group a space lists it in (medical.yaml's names)
GROUPS = {"anatomy": "anatomical", "pathology": "pathological", "modality": "modality", "generic": "generic"}


def library_components(space: SearchSpace, arch: Architecture) -> list[str]:
    """The chosen components that start from a library block, in the architecture's order."""
    if arch.source != "library":
        return []
    scratch = set(space.spec.scratch)
    return [c for c in arch.component_names if c not in scratch]


def resolve_library_path(space: SearchSpace, path: str | Path | None = None) -> Path:
    """``path`` (a job's) or the space's ``library:``; a relative one is taken against the space
    file's folder when the space came from a file, else the current directory."""
    given = path if path is not None else (space.spec.library.path if space.spec.library else None)
    if given is None:
        raise LibraryError(f"space {space.name!r} names no library: give the job one (library: PATH) or the space "
                           f"a 'library:' key")
    p = Path(given).expanduser()
    if not p.is_absolute():
        src = Path(space.source)
        p = (src.parent / p) if src.is_file() and (src.parent / p).exists() else p
    return p.resolve()


def bind_library(space: SearchSpace, path: str | Path | None = None) -> SearchSpace:
    """The space with its library bound: path made absolute, version, sha256 and component names
    recorded (so a trial worker loads exactly that file). Every component that may come from the
    library must have a trained block, unless the space lists it under ``scratch``. A space that
    lists no components takes the library's, grouped by kind (:data:`GROUPS`)."""
    folder = resolve_library_path(space, path)
    lib = open_library(folder)
    data = space.spec.model_dump(mode="json")
    if not space.spec.components:  # a space that lists none takes every block of the library, grouped by kind
        data["components"] = {group: sorted(c for c, r in lib.manifest.components.items() if r.kind == kind)
                              for kind, group in GROUPS.items()}
        data["components"] = {g: v for g, v in data["components"].items() if v}
    scratch = set(space.spec.scratch)
    names = [c for group in data["components"].values() for c in group]
    missing = [c for c in names if c not in lib.blocks and c not in scratch]
    if missing:
        raise LibraryError(f"library {folder} (version {lib.version}) has no trained block for component(s) "
                           f"{', '.join(missing)} of space {space.name!r}: list them under 'scratch:' in the space "
                           f"(they then start fresh), or grow the library (promptsearch library add); it holds "
                           f"{', '.join(lib.components)}")
    ref = LibraryRef(path=str(folder), version=lib.version, sha256=lib.sha256, components=tuple(lib.components))
    data["library"] = ref.model_dump(mode="json")
    return SearchSpace(SpaceFile.model_validate(data), space.source)


@dataclass
class TrialLibrary:
    """The library blocks one trial starts from, and where its trained blocks go back (weight sharing)."""

    library: Library
    blocks: dict[str, torch.Tensor]  # component -> the exact stored block
    frozen: bool
    versions: LibraryVersions | None = None  # a job's versions: write-back target
    started_from: str | None = None  # the version the trial started from

    def record(self) -> dict[str, Any]:
        return {"path": str(self.library.path), "version": self.library.version, "sha256": self.library.sha256,
                "components": list(self.blocks), "tuning": "frozen" if self.frozen else "finetuned",
                **({"started_from": self.started_from} if self.versions is not None else {})}


def _check_backbone(lib: Library, backbone: BackboneSpec | Backbone | None, image_size: int | None) -> None:
    ref = lib.manifest.backbone
    if isinstance(backbone, BackboneSpec):
        if backbone.name != ref.name:
            raise IncompatibleCandidate(f"library {lib.path} was learned on {ref.name}, not {backbone.name}")
        if backbone.weights and ref.weights_sha256 and file_sha256(backbone.weights) != ref.weights_sha256:
            raise IncompatibleCandidate(f"library {lib.path} was learned on other {ref.name} weights "
                                        f"({ref.weights_file}, sha256 {ref.weights_sha256[:16]}...) than {backbone.weights}")
    geo = lib.manifest.geometry
    if geo.module == "pixel" and image_size is not None and image_size != geo.image_size:
        raise IncompatibleCandidate(f"library {lib.path} holds {geo.image_size} px pixel blocks; this trial works at "
                                    f"{image_size} px (use --image-size {geo.image_size})")


def trial_library(candidate: Candidate, backbone: BackboneSpec | Backbone | None = None,
                  image_size: int | None = None, versions: str | Path | LibraryVersions | None = None,
                  version: str | None = None) -> TrialLibrary | None:
    """The blocks ``candidate`` starts from (``None`` when it takes none). From the space's bound
    library (checked against its sha256), or, with ``versions`` (a job's :class:`LibraryVersions`),
    from ``version`` of them (default: HEAD now). Problems are :class:`IncompatibleCandidate`: the
    trial fails with the reason, the search goes on."""
    space, arch = candidate.space, candidate.arch
    names = library_components(space, arch)
    if arch.source != "library":
        return None
    try:
        if versions is not None:
            versions = versions if isinstance(versions, LibraryVersions) else LibraryVersions(versions)
            version = version or versions.head()
            lib = versions.open(version)
        else:
            ref = space.spec.library
            if ref is None:
                raise IncompatibleCandidate(f"source=library, but space {space.name!r} names no library: give the "
                                            f"job one (library: PATH) or the space a 'library:' key")
            lib = open_library(resolve_library_path(space), sha256=ref.sha256, version=ref.version)
    except LibraryError as e:
        raise IncompatibleCandidate(str(e)) from None
    if arch.module != lib.manifest.geometry.module and names:
        raise IncompatibleCandidate(f"library {lib.path} holds {lib.manifest.geometry.module} blocks; this candidate "
                                    f"has {arch.module} prompts")
    _check_backbone(lib, backbone, image_size)
    missing = [c for c in names if c not in lib.blocks]
    if missing:
        raise IncompatibleCandidate(f"library {lib.path} (version {lib.version}) has no block for {', '.join(missing)}: "
                                    f"mark them 'scratch' in the space")
    return TrialLibrary(lib, {c: lib.blocks[c] for c in names}, arch.tuning == "frozen",
                        versions if isinstance(versions, LibraryVersions) else None, version)


def trained_blocks(model: PromptedModel, tl: TrialLibrary) -> dict[str, torch.Tensor]:
    """The model's library components after training, in the library's geometry: the stored block
    with the part the trial covered (token layers x tokens; the pixels of the frame, segment or
    image) replaced by the trained values. Frozen blocks are not returned (they did not change)."""
    if tl.frozen:
        return {}
    prompt = model.prompt
    out = {}
    for i, name in enumerate(prompt.components[: prompt.n_library]):
        block = tl.library.blocks[name].clone()
        if isinstance(prompt, TokenPrompt):
            trained = prompt.stacked()[:, i].detach().cpu()  # (L, T, D)
            L, T = min(block.shape[0], trained.shape[0]), min(block.shape[1], trained.shape[1])
            block[:L, :T] = trained[:L, :T]
        elif isinstance(prompt, PixelPrompt):
            flat = block.reshape(3, -1)
            flat[:, prompt.positions(i).cpu()] = prompt.patterns[i].detach().cpu()
            block = flat.reshape(block.shape)
        out[name] = block
    return out


def write_back(model: PromptedModel, tl: TrialLibrary, origin: Mapping[str, Any],
               metrics: Mapping[str, float] | None = None) -> str | None:
    """Write a trial's fine-tuned library blocks back to its job's versions; the new version (or
    ``None``: nothing to write, frozen or no versions)."""
    if tl.versions is None or tl.started_from is None:
        return None
    trained = trained_blocks(model, tl)
    if not trained:
        return None
    return tl.versions.write_back(tl.started_from, trained, origin, metrics)


def library_record(space: SearchSpace, genome: Any) -> dict[str, Any] | None:
    """What a bundle records about the library (``None`` when the candidate takes no block from one)."""
    arch = space.architecture(genome)
    names = library_components(space, arch)
    ref = space.spec.library
    if not names or ref is None:
        return None
    return {"path": ref.path, "version": ref.version, "sha256": ref.sha256, "components": names,
            "tuning": arch.tuning}


def placeholder_blocks(space: SearchSpace, arch: Architecture) -> dict[str, None]:
    """The library components of ``arch`` with no values: a bundle's saved state fills them."""
    return {c: None for c in library_components(space, arch)}
