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
from .schema import (BUNDLE_FILES, BUNDLE_FORMAT, CARD_FILE, CONFIG_FILE, EXAMPLES_DIR, WEIGHTS_FILE, BundleConfig,
                     ExportError, InputRecord, backbone_record)


# --- writing ------------------------------------------------------------------------------------
def write_bundle(out: str | Path, *, space: SearchSpace, genome: Sequence[int], weights: str | Path | Mapping[str, torch.Tensor],
                 backbone: BackboneSpec, task: str, classes: Sequence[str], input_channels: int,
                 input_size: int | None, metrics: Mapping[str, float], test_metrics: Mapping[str, float] | None = None,
                 dataset: Mapping[str, Any] | None = None, budget: Mapping[str, Any] | None = None, seed: int = 0,
                 objectives: Sequence[Mapping[str, Any]] = (), origin: Mapping[str, Any] | None = None,
                 zip_path: str | Path | None = None, library: Mapping[str, Any] | None = None,
                 compress: str = "none", data: Any = None, examples: int = 0,
                 repeats: Mapping[str, Any] | None = None) -> Path:
    """Write a bundle folder ``out`` (and a zip of it at ``zip_path``); return the folder.

    ``weights``: the trial's saved prompt+head safetensors file, or the ``trainable_state_dict()``.
    ``library``: the component library record (default: the one the trial wrote into the weights
    file's metadata, else the space's bound library and the candidate's library components).
    ``compress``: a :mod:`promptsearch.compress` spec (``svd:4``, ``int8``, ``svd:4+int8``): the
    weights are stored compressed, and with ``data`` (the trial's :class:`~promptsearch.data.Dataset`)
    the model as :func:`load_exported` rebuilds it is evaluated on the validation and test splits
    the trial used (CPU, one thread), next to the uncompressed weights (``config.compression``).
    ``examples``: explanation maps of that many validation images of ``data`` (``examples/``,
    ``config.examples``), from the model as loaded from the bundle.
    ``repeats``: the trial's re-evaluation over several seeds (``front_repeats``: n, seeds, trials,
    validation mean and sd), kept in ``config.repeats`` and the model card; the weights are the
    first seed's.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    from safetensors.torch import save as save_bytes

    from ..compress import parse_spec, payload_bytes, write_compressed

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
        repeats=dict(repeats) if repeats else None,
    )
    # refuse a bundle that would not load: the weights must fit the architecture
    _check_state(cfg, state)
    compressed = bool(parse_spec(compress))  # a bad spec fails before anything is written
    out.mkdir(parents=True, exist_ok=True)
    meta = {"format": BUNDLE_FORMAT, "candidate": cand.key}
    if compressed:
        write_compressed(out / WEIGHTS_FILE, state, compress, metadata=meta)
    else:
        save_file(state, str(out / WEIGHTS_FILE), metadata=meta)
    blob = (out / WEIGHTS_FILE).read_bytes()
    cfg.prompts.update(sha256=file_sha256(out / WEIGHTS_FILE), file_bytes=len(blob), payload_bytes=payload_bytes(blob))
    if compressed:
        plain = save_bytes(state, metadata=meta)
        cfg.compression = {"spec": compress, "file_bytes": len(blob), "payload_bytes": payload_bytes(blob),
                           "uncompressed_file_bytes": len(plain), "uncompressed_payload_bytes": payload_bytes(plain)}
    _write_config(out, cfg)
    if data is not None and (compressed or examples > 0):
        _measure(out, cfg, state, data, compressed, examples)
        _write_config(out, cfg)
    if zip_path is not None:
        zip_bundle(out, zip_path)
    return out


def _write_config(out: Path, cfg: BundleConfig) -> None:
    (out / CONFIG_FILE).write_text(json.dumps(cfg.model_dump(mode="json"), indent=2) + "\n")
    (out / CARD_FILE).write_text(model_card(cfg))


def _eval_splits(data: Any, budget: Mapping[str, Any]) -> dict[str, Any]:
    """The validation and test splits exactly as a trial evaluates them (same subsets)."""
    n = budget.get("max_eval_samples")
    return {"validation": data.val.subset(n, 0), "test": data.test.subset(n, 0)}


def _measure(out: Path, cfg: BundleConfig, state: Mapping[str, torch.Tensor], data: Any, compressed: bool,
             examples: int) -> None:
    """Load the bundle just written (as a user would), evaluate it and write example maps (CPU, one thread)."""
    from ..threads import torch_threads
    from ..trial import evaluate

    with torch_threads(1):
        model = load_exported(out, device="cpu")
        if compressed:
            splits = _eval_splits(data, cfg.recipe.get("budget", {}))
            after = {name: evaluate(model, split, data.task) for name, split in splits.items()}
            deployed = model.trainable_state_dict()
            model.load_trainable_state_dict({k: v.cpu() for k, v in state.items()})
            before = {name: evaluate(model, split, data.task) for name, split in splits.items()}
            model.load_trainable_state_dict(deployed)
            cfg.compression["metrics"] = after
            cfg.compression["reference"] = before
        if examples > 0:
            cfg.examples = write_examples(model, data, out, examples)


def example_indices(labels: torch.Tensor, n: int) -> list[int]:
    """``n`` validation indices, classes taken in turn (the first image of each class, then the
    second, ...), so a binary set shows both classes; multi-label: the first ``n``."""
    if labels.ndim > 1 and labels.shape[1] > 1:
        return list(range(min(n, len(labels))))
    y = labels.reshape(len(labels), -1)[:, 0].tolist()
    queues = [[i for i, c in enumerate(y) if c == k] for k in sorted(set(y))]
    picked: list[int] = []
    while len(picked) < min(n, len(y)):
        for q in queues:
            if q and len(picked) < n:
                picked.append(q.pop(0))
    return sorted(picked)


def write_examples(model: PromptedModel, data: Any, out: str | Path, n: int = 4, min_side: int = 112) -> list[dict[str, Any]]:
    """Explanation maps (:func:`promptsearch.explain.explain_images`) of ``n`` validation images into
    ``out/examples/``; returns their records, file names relative to ``out``."""
    from PIL import Image

    from ..explain import explain_images

    folder = Path(out) / EXAMPLES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    idx = example_indices(data.val.labels, n)
    images = [data.val.images[i] for i in idx]  # (C, H, W) uint8 each
    records = explain_images(model, images, folder, names=[f"val{i}" for i in idx], min_side=min_side)
    multi_label = data.task == "multi-label"
    for i, image, rec in zip(idx, images, records):
        name = f"{rec['image']}_input.png"
        arr = image.numpy().transpose(1, 2, 0)  # (H, W, C)
        Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).resize(
            (image.shape[-1] * 4, image.shape[-2] * 4), Image.NEAREST).save(folder / name)
        y = data.val.labels[i].reshape(-1)
        rec.update(split="val", index=int(i), input=f"{EXAMPLES_DIR}/{name}",
                   maps={k: f"{EXAMPLES_DIR}/{f}" for k, f in rec["maps"].items()})
        rec["true_label"] = ([c for c, v in zip(data.classes, y.tolist()) if v] if multi_label
                             else data.classes[int(y[0])])
        if "pixel_prompt" in rec:
            rec["pixel_prompt"] = f"{EXAMPLES_DIR}/{rec['pixel_prompt']}"
    return records


def bundle_files(folder: str | Path) -> list[str]:
    """The files of a bundle folder, relative to it: the three always there, then its example maps."""
    extra = sorted(p.relative_to(folder).as_posix() for p in (Path(folder) / EXAMPLES_DIR).glob("*.png"))
    return [*BUNDLE_FILES, *extra]


def _zip_into(target: str | Path | IO[bytes], folder: str | Path) -> None:
    """The bundle's files (three at the top level, example maps under examples/) in a zip written to
    ``target`` (a path or a buffer)."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name in bundle_files(folder):
            z.write(Path(folder) / name, arcname=name)


def zip_bundle(folder: str | Path, zip_path: str | Path) -> Path:
    """Zip a bundle folder (:func:`bundle_files`)."""
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

    from ..compress import CompressError, read_compressed_bytes

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
    try:
        state, _ = read_compressed_bytes(blob)  # compressed weights (export --compress) are rebuilt; plain ones read as is
    except CompressError as e:
        raise ExportError(f"{path}/{WEIGHTS_FILE}: {e}") from None
    return cfg, state


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
