"""Writing and reading bundle folders and zips; :func:`load_exported` rebuilds the model from one.

    python -c "import promptsearch; m = promptsearch.load_exported('exported/'); print(m.bundle.classes)"
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import torch

from ..backbones import BackboneSpec, build_backbone
from ..files import file_sha256
from ..library import library_record, placeholder_blocks
from ..prompts import PromptedModel, build_prompted_model
from ..space import SearchSpace
from .card import model_card
from .schema import (BUNDLE_FILES, BUNDLE_FORMAT, CARD_FILE, CONFIG_FILE, WEIGHTS_FILE, BundleConfig, ExportError,
                     InputRecord, backbone_record)


# --- writing ------------------------------------------------------------------------------------
def write_bundle(out: str | Path, *, space: SearchSpace, genome: Sequence[int], weights: str | Path | Mapping[str, torch.Tensor],
                 backbone: BackboneSpec, task: str, classes: Sequence[str], input_channels: int,
                 input_size: int | None, metrics: Mapping[str, float], test_metrics: Mapping[str, float] | None = None,
                 dataset: Mapping[str, Any] | None = None, budget: Mapping[str, Any] | None = None, seed: int = 0,
                 objectives: Sequence[Mapping[str, Any]] = (), origin: Mapping[str, Any] | None = None,
                 zip_path: str | Path | None = None, library: Mapping[str, Any] | None = None) -> Path:
    """Write a bundle folder ``out`` (and a zip of it at ``zip_path``); return the folder.

    ``weights``: the trial's saved prompt+head safetensors file, or the ``trainable_state_dict()``.
    ``library``: the component library record (default: the one the trial wrote into the weights
    file's metadata, else the space's bound library and the candidate's library components).
    """
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    out = Path(out)
    state = load_file(str(weights)) if isinstance(weights, str | Path) else {k: v.contiguous() for k, v in weights.items()}
    genome = [int(g) for g in genome]
    cand = space.candidate(genome)
    if library is None and isinstance(weights, str | Path):
        with safe_open(str(weights), "pt") as f:
            recorded = (f.metadata() or {}).get("library")
        library = json.loads(recorded) if recorded else None
    if library is None:
        library = library_record(space, cand.genome)
    cfg = BundleConfig(
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        space={"name": space.name, "hash": space.hash, "spec": space.to_dict()},
        genome=list(cand.genome), architecture=cand.architecture, candidate_key=cand.key,
        backbone=backbone_record(backbone), task=task, classes=list(classes),
        input=InputRecord(channels=input_channels, size=input_size),
        dataset=dict(dataset or {}),
        recipe={"budget": dict(budget or {}), "seed": int(seed),
                "optimizer": "AdamW on prompt+head with a cosine schedule; lr and weight decay from the architecture"},
        objectives=[dict(o) for o in objectives],
        metrics={"validation": {k: float(v) for k, v in metrics.items()},
                 "test": {k: float(v) for k, v in (test_metrics or {}).items()}},
        origin=dict(origin or {}),
        prompts={"file": WEIGHTS_FILE, "tensors": {k: list(v.shape) for k, v in state.items()},
                 "params": int(sum(v.numel() for v in state.values()))},
        library=dict(library) if library else None,
    )
    # refuse a bundle that would not load: the weights must fit the architecture
    _check_state(cfg, state)
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / WEIGHTS_FILE), metadata={"format": BUNDLE_FORMAT, "candidate": cand.key})
    cfg.prompts["sha256"] = file_sha256(out / WEIGHTS_FILE)
    (out / CONFIG_FILE).write_text(json.dumps(cfg.model_dump(mode="json"), indent=2) + "\n")
    (out / CARD_FILE).write_text(model_card(cfg))
    if zip_path is not None:
        zip_bundle(out, zip_path)
    return out


def _zip_into(target: str | Path | IO[bytes], folder: str | Path) -> None:
    """The bundle's three files at the top level of a zip written to ``target`` (a path or a buffer)."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name in BUNDLE_FILES:
            z.write(Path(folder) / name, arcname=name)


def zip_bundle(folder: str | Path, zip_path: str | Path) -> Path:
    """Zip a bundle folder (its three files at the zip's top level)."""
    zip_path = Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    _zip_into(zip_path, folder)
    return zip_path


def bundle_bytes(folder: str | Path) -> bytes:
    """A bundle folder as zip bytes (for HTTP responses)."""
    buf = io.BytesIO()
    _zip_into(buf, folder)
    return buf.getvalue()


def _check_state(cfg: BundleConfig, state: Mapping[str, torch.Tensor]) -> None:
    """The prompt weights must match the architecture's trainable tensors exactly (names and shapes)."""
    expected = {k: list(v) for k, v in cfg.prompts.get("tensors", {}).items()}
    got = {k: list(v.shape) for k, v in state.items()}
    if expected and expected != got:
        raise ExportError(f"prompt weights do not match the config: {sorted(set(expected) ^ set(got))[:5]}")
    head = [k for k in got if k.startswith("head.")]
    if "head.weight" not in got or got["head.weight"][0] != cfg.num_outputs:
        raise ExportError(f"prompt weights hold no head for {cfg.num_outputs} classes ({head or 'no head tensors'})")


# --- reading ------------------------------------------------------------------------------------
def _read_bundle(path: str | Path) -> tuple[BundleConfig, dict[str, torch.Tensor]]:
    from pydantic import ValidationError
    from safetensors.torch import load as load_bytes

    path = Path(path)
    if path.is_dir():
        missing = [n for n in (CONFIG_FILE, WEIGHTS_FILE) if not (path / n).exists()]
        if missing:
            raise ExportError(f"{path} is not a promptsearch bundle: {', '.join(missing)} missing")
        cfg_text, blob = (path / CONFIG_FILE).read_text(), (path / WEIGHTS_FILE).read_bytes()
    elif path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            missing = [n for n in (CONFIG_FILE, WEIGHTS_FILE) if n not in names]
            if missing:
                raise ExportError(f"{path} is not a promptsearch bundle zip: {', '.join(missing)} missing")
            cfg_text, blob = z.read(CONFIG_FILE).decode(), z.read(WEIGHTS_FILE)
    else:
        raise ExportError(f"{path}: no such bundle folder or zip")
    try:
        cfg = BundleConfig.model_validate_json(cfg_text)
    except ValidationError as e:
        raise ExportError(f"{path}/{CONFIG_FILE}: {e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from None
    sha = cfg.prompts.get("sha256")
    if sha and hashlib.sha256(blob).hexdigest() != sha:
        raise ExportError(f"{path}/{WEIGHTS_FILE} does not match the sha256 in {CONFIG_FILE} (corrupt or edited)")
    return cfg, load_bytes(blob)


def load_config(path: str | Path) -> BundleConfig:
    """The validated ``config.json`` of a bundle folder or zip."""
    return _read_bundle(path)[0]


def _backbone_spec(cfg: BundleConfig, backbone_weights: str | Path | None) -> BackboneSpec:
    rec = cfg.backbone
    if backbone_weights is not None:
        path = Path(backbone_weights).expanduser()
        if not path.exists():
            raise ExportError(f"backbone weights {path} not found")
        if rec.weights_sha256 and file_sha256(path) != rec.weights_sha256:
            raise ExportError(f"backbone weights {path} differ from the ones this bundle was trained with "
                              f"(sha256 {rec.weights_sha256}; {rec.obtain})")
        return rec.spec(str(path))
    if rec.weights:
        if not Path(rec.weights).exists():
            raise ExportError(f"the bundle's backbone weights {rec.weights} are not on this machine: pass "
                              f"backbone_weights=PATH (promptsearch predict --backbone-weights PATH); {rec.obtain}")
        if rec.weights_sha256 and file_sha256(rec.weights) != rec.weights_sha256:
            raise ExportError(f"{rec.weights} changed since export (sha256 differs); pass backbone_weights=PATH")
    return rec.spec()


def load_exported(path: str | Path, backbone_weights: str | Path | None = None,
                  device: str | torch.device | None = None) -> PromptedModel:
    """Rebuild the exported model (eval mode) from a bundle folder or zip.

        python -c "import promptsearch; m = promptsearch.load_exported('exported/'); print(m.bundle.classes)"

    The backbone comes from the recorded spec (its local weights file, or the hub if it was
    ``pretrained``) unless ``backbone_weights`` names a local file (checked against the recorded
    sha256). ``device``: where to put the model (default CPU). The returned model carries the
    bundle's config as ``model.bundle``.
    """
    cfg, state = _read_bundle(path)
    _check_state(cfg, state)
    space = cfg.search_space()
    arch = space.architecture(cfg.genome)
    spec = _backbone_spec(cfg, backbone_weights)
    if not spec.weights and not spec.pretrained:
        torch.manual_seed(int(cfg.recipe.get("seed", 0)))  # a random backbone: the trial seeded it so
    # library components: their blocks (trained or frozen) are in the bundle's weights; the library
    # itself is not needed to load it (its path, version and sha256 are recorded in config.json)
    model = build_prompted_model(arch, build_backbone(spec), cfg.num_outputs, library=placeholder_blocks(space, arch))
    model.load_trainable_state_dict(state)
    model.eval()
    if device is not None:
        model.to(device)
    model.bundle = cfg
    return model
