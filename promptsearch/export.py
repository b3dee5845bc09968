"""Export bundles: one trained prompt configuration as a small, self-describing folder (or zip).

    promptsearch export JOB --pick knee --out exported/ && promptsearch predict exported/ scan.png

A bundle holds

* ``config.json``: the space (name, hash and full spec), the genome and architecture, the backbone
  and how to obtain its weights (never the weights themselves), the input the model expects, the
  training recipe (budget, seed), the objectives on validation and test, the dataset, the origin
  (job and trial ids);
* ``prompts.safetensors``: the prompt, fusion and head weights only (``PromptedModel.trainable_state_dict()``);
* ``MODEL_CARD.md``: what it was trained for, its metrics, intended use and limits.

:func:`load_exported` rebuilds the :class:`~promptsearch.prompts.PromptedModel` from a bundle
(the backbone from the recorded spec, or from local weights you pass) and loads the prompt weights.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from . import __version__
from .backbones import BackboneSpec, build_backbone
from .files import file_sha256
from .prompts import PromptedModel, build_prompted_model
from .space import SearchSpace, SpaceFile

BUNDLE_FORMAT = "promptsearch-bundle/1"
CONFIG_FILE, WEIGHTS_FILE, CARD_FILE = "config.json", "prompts.safetensors", "MODEL_CARD.md"
BUNDLE_FILES = (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)


class ExportError(ValueError):
    """A bundle that cannot be written or loaded; the message says what is missing and what to do."""


class NothingToExport(ExportError):
    """The job (or the trial asked for) has no completed trial with weights yet."""


class UnknownTrial(ExportError):
    """No such trial in the job."""


# --- the config schema ---------------------------------------------------------------------------
class BackboneRecord(BackboneSpec):
    """The frozen backbone: enough to rebuild it and to find its weights again (they are not bundled).
    ``weights`` is the local file the trial used, as recorded (it may not exist elsewhere)."""

    weights_file: str | None = None  # its file name
    weights_sha256: str | None = None  # checked by load_exported when the file is available
    obtain: str = ""  # how to get the weights: a human-readable line with the upstream source

    def spec(self, weights: str | None = None) -> BackboneSpec:
        fields = self.model_dump(include=set(BackboneSpec.model_fields))
        return BackboneSpec(**{**fields, "weights": weights if weights is not None else self.weights})


class InputRecord(BaseModel):
    """What the model was fed in training: images of ``size`` x ``size`` with ``channels`` channels,
    scaled to [0, 1] (the model resizes to the backbone's working size and normalises itself)."""

    model_config = ConfigDict(extra="forbid")

    channels: int = Field(ge=1, le=4)
    size: int | None = Field(None, ge=1)


class BundleConfig(BaseModel):
    """``config.json`` of an export bundle."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["promptsearch-bundle/1"] = BUNDLE_FORMAT
    promptsearch_version: str = __version__
    created: str = ""
    space: dict[str, Any]  # {name, hash, spec}
    genome: list[int]
    architecture: dict[str, Any]
    candidate_key: str = ""
    backbone: BackboneRecord
    task: str
    classes: list[str]
    input: InputRecord
    dataset: dict[str, Any]  # {name, source, splits}
    recipe: dict[str, Any]  # {budget, seed, optimizer}
    objectives: list[dict[str, Any]] = Field(default_factory=list)
    metrics: dict[str, dict[str, float]]  # {"validation": {...}, "test": {...}}
    origin: dict[str, Any] = Field(default_factory=dict)  # {job_id, trial_id, status, epochs, ...}
    prompts: dict[str, Any] = Field(default_factory=dict)  # {file, tensors, params, sha256}

    @property
    def num_outputs(self) -> int:
        return len(self.classes)

    def search_space(self) -> SearchSpace:
        space = SearchSpace(SpaceFile.model_validate(self.space["spec"]), source=f"bundle:{self.space['name']}")
        if space.hash != self.space["hash"]:
            raise ExportError(f"bundle space spec hashes to {space.hash}, config says {self.space['hash']}")
        return space


# --- writing ------------------------------------------------------------------------------------
def _upstream_torchvision(name: str, filename: str | None) -> str:
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(name)
    except ValueError:
        return ""
    entries = list(enum)
    for w in entries:
        if filename and w.url.rsplit("/", 1)[-1] == filename:
            return f"torchvision {enum.__name__}.{w.name}: {w.url}"
    return "torchvision published weights: " + ", ".join(f"{enum.__name__}.{w.name} ({w.url})" for w in entries)


def _upstream_timm(name: str) -> str:
    try:
        import timm

        cfg = timm.models.get_pretrained_cfg(name) or timm.models.get_pretrained_cfg(timm.models.get_arch_name(name))
    except Exception:
        return ""
    if cfg is None:
        return ""
    hub = getattr(cfg, "hf_hub_id", None)
    return f"timm pretrained weights: hf-hub:{hub}" if hub else (f"timm pretrained weights: {cfg.url}" if cfg.url else "")


def backbone_record(spec: BackboneSpec, hash_weights: bool = True) -> BackboneRecord:
    """A :class:`BackboneRecord` for a spec: file name, sha256 and where the weights come from upstream."""
    source, _, name = spec.name.rpartition(":")
    filename = Path(spec.weights).name if spec.weights else None
    upstream = _upstream_torchvision(name, filename) if source == "torchvision" else _upstream_timm(name)
    if spec.weights:
        obtain = f"local file {filename}" + (f"; upstream: {upstream}" if upstream else "")
    elif spec.pretrained:
        obtain = f"downloaded by {source or 'timm'} (pretrained=True)" + (f"; {upstream}" if upstream else "")
    else:
        obtain = "random initialisation (no pretrained weights): rebuilt from the trial seed"
    sha = file_sha256(spec.weights) if spec.weights and hash_weights and Path(spec.weights).exists() else None
    return BackboneRecord(name=spec.name, image_size=spec.image_size, patch_size=spec.patch_size,
                          weights=str(spec.weights) if spec.weights else None, weights_file=filename,
                          weights_sha256=sha, pretrained=spec.pretrained, kwargs=dict(spec.kwargs), obtain=obtain)


def _fmt(v: Any) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def model_card(cfg: BundleConfig) -> str:
    """``MODEL_CARD.md``: purpose, metrics, intended use and limits, in plain words."""
    val, test = cfg.metrics.get("validation", {}), cfg.metrics.get("test", {})
    keys = [k for k in ("auc", "accuracy", "balanced_accuracy", "worst_class_recall") if k in val or k in test]
    costs = [k for k in ("prompt_params", "head_params", "trainable_params", "backbone_params", "latency_ms",
                         "prompt_pixels", "prompt_tokens", "prompted_layers") if k in val]
    rows = "\n".join(f"| {k} | {_fmt(val.get(k, ''))} | {_fmt(test.get(k, ''))} |" for k in keys)
    cost_rows = "\n".join(f"| {k} | {_fmt(val[k])} |" for k in costs)
    objectives = ", ".join(f"{o['name']} ({o.get('direction', '?')})" for o in cfg.objectives) or "not recorded"
    budget = cfg.recipe.get("budget", {})
    origin = ", ".join(f"{k} {v}" for k, v in cfg.origin.items() if v not in (None, "")) or "a single trial"
    return f"""# {cfg.dataset.get('name', 'dataset')}: prompt configuration `{cfg.candidate_key or 'exported'}`

A visual prompt ({cfg.architecture.get('module', '?')} prompt) and a linear head, learned on a **frozen**
`{cfg.backbone.name}` backbone for **{cfg.task}** classification of {cfg.dataset.get('name', 'the dataset')}
into {len(cfg.classes)} classes: {'; '.join(f'`{c}`' for c in cfg.classes)}.
Found by promptsearch {cfg.promptsearch_version} ({origin}) in search space `{cfg.space['name']}`
(hash {cfg.space['hash']}), selected on validation objectives: {objectives}.

    promptsearch predict THIS_FOLDER image.png

## Architecture

```json
{json.dumps(cfg.architecture, indent=2)}
```

## Metrics

Selection used the validation split only; the test split was evaluated once, after training,
and never used to choose this configuration.

| metric | validation | test |
|---|---|---|
{rows}

| cost | value |
|---|---|
{cost_rows}

## Training recipe

Seed {cfg.recipe.get('seed')}; {budget.get('epochs')} epoch(s), batch {budget.get('batch_size')},
{'all' if not budget.get('max_train_samples') else budget.get('max_train_samples')} training images;
{cfg.recipe.get('optimizer', '')}. Inputs: {cfg.input.channels}-channel images of
{cfg.input.size or 'any'} px, scaled to [0, 1]; the model resizes them to {cfg.backbone.image_size or 'the backbone default'} px.

## Backbone weights (not included)

`{cfg.backbone.name}`: {cfg.backbone.obtain}.
{f"Expected sha256: `{cfg.backbone.weights_sha256}`." if cfg.backbone.weights_sha256 else ""}
Load with `promptsearch.load_exported(THIS_FOLDER, backbone_weights=PATH)` if the recorded path
(`{cfg.backbone.weights}`) does not exist on your machine.

## Intended use and limits

- Research and method development on {cfg.dataset.get('name', 'this dataset')}-like images; **not a
  medical device** and not validated for clinical decisions.
- Metrics come from small public benchmark splits (validation {cfg.dataset.get('splits', {}).get('val', '?')} images,
  test {cfg.dataset.get('splits', {}).get('test', '?')} images) and carry wide uncertainty; re-validate on data from
  your own site, scanners and population before any use.
- Expect degraded performance on other modalities, resolutions, acquisition protocols or label
  definitions than the training data; the worst-class recall above is the figure to watch for
  missed findings.
"""


def write_bundle(out: str | Path, *, space: SearchSpace, genome: Sequence[int], weights: str | Path | Mapping[str, torch.Tensor],
                 backbone: BackboneSpec, task: str, classes: Sequence[str], input_channels: int,
                 input_size: int | None, metrics: Mapping[str, float], test_metrics: Mapping[str, float] | None = None,
                 dataset: Mapping[str, Any] | None = None, budget: Mapping[str, Any] | None = None, seed: int = 0,
                 objectives: Sequence[Mapping[str, Any]] = (), origin: Mapping[str, Any] | None = None,
                 zip_path: str | Path | None = None) -> Path:
    """Write a bundle folder ``out`` (and a zip of it at ``zip_path``); return the folder.

    ``weights``: the trial's saved prompt+head safetensors file, or the ``trainable_state_dict()``.
    """
    from safetensors.torch import load_file, save_file

    out = Path(out)
    state = load_file(str(weights)) if isinstance(weights, str | Path) else {k: v.contiguous() for k, v in weights.items()}
    genome = [int(g) for g in genome]
    cand = space.candidate(genome)
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


def zip_bundle(folder: str | Path, zip_path: str | Path) -> Path:
    """Zip a bundle folder (its three files at the zip's top level)."""
    zip_path = Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name in BUNDLE_FILES:
            z.write(Path(folder) / name, arcname=name)
    return zip_path


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
    arch = cfg.search_space().architecture(cfg.genome)
    spec = _backbone_spec(cfg, backbone_weights)
    if not spec.weights and not spec.pretrained:
        torch.manual_seed(int(cfg.recipe.get("seed", 0)))  # a random backbone: the trial seeded it so
    model = build_prompted_model(arch, build_backbone(spec), cfg.num_outputs)
    model.load_trainable_state_dict(state)
    model.eval()
    if device is not None:
        model.to(device)
    model.bundle = cfg
    return model


# --- inference on image files -------------------------------------------------------------------
def read_images(paths: Sequence[str | Path], channels: int, size: int | None) -> torch.Tensor:
    """Image files (PNG, JPEG, ...) -> (N, C, S, S) floats in [0, 1], as the model was trained on."""
    from .data import DataError, read_image

    out = []
    for p in paths:
        try:
            out.append(torch.from_numpy(read_image(p, "L" if channels == 1 else "RGB", size)))  # (C, S, S)
        except DataError as e:  # "unreadable image PATH: why"
            raise ExportError(f"cannot read image {p}: {str(e).partition(': ')[2]}") from None
    return torch.stack(out).float().div_(255.0)  # (N, C, S, S)


@torch.no_grad()
def predict_files(model: PromptedModel, paths: Sequence[str | Path]) -> list[dict[str, float]]:
    """Class probabilities for image files, one ``{class: probability}`` per file."""
    cfg: BundleConfig = model.bundle
    x = read_images(paths, cfg.input.channels, cfg.input.size).to(next(model.parameters()).device)
    logits = model(x)  # (N, K)
    probs = torch.sigmoid(logits) if cfg.task == "multi-label" else torch.softmax(logits, -1)
    return [dict(zip(cfg.classes, map(float, row))) for row in probs]


def bundle_bytes(folder: str | Path) -> bytes:
    """A bundle folder as zip bytes (for HTTP responses)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name in BUNDLE_FILES:
            z.write(Path(folder) / name, arcname=name)
    return buf.getvalue()


def dataset_record(data: Any) -> dict[str, Any]:
    """The dataset fields a bundle records, from a loaded :class:`~promptsearch.data.Dataset`."""
    return {"name": data.name, "source": Path(data.source).name if data.source else "", "task": data.task,
            "splits": {"train": len(data.train), "val": len(data.val), "test": len(data.test)}, **data.extra}


def write_trial_bundle(out: str | Path, *, candidate: Any, result: Any, data: Any, backbone: BackboneSpec,
                       weights: str | Path | Mapping[str, torch.Tensor], budget: Any = None,
                       objectives: Sequence[Any] = (), origin: Mapping[str, Any] | None = None,
                       zip_path: str | Path | None = None) -> Path:
    """:func:`write_bundle` from a ``Candidate``, its ``TrialResult`` and the loaded ``Dataset``."""
    if result.status != "completed":
        raise ExportError(f"trial {result.status}, not completed: nothing to export ({result.reason})")
    budget_d = budget.model_dump() if hasattr(budget, "model_dump") else dict(budget or {})
    objs = [o.model_dump() if hasattr(o, "model_dump") else ({"name": o} if isinstance(o, str) else dict(o))
            for o in objectives]
    return write_bundle(out, space=candidate.space, genome=candidate.genome, weights=weights, backbone=backbone,
                        task=data.task, classes=data.classes, input_channels=data.channels,
                        input_size=int(data.train.images.shape[-1]), metrics=result.metrics,
                        test_metrics=result.test_metrics, dataset=dataset_record(data), budget=budget_d,
                        seed=result.seed, objectives=objs,
                        origin={"status": result.status, "epochs": result.epochs, "steps": result.steps,
                                "wall_time_s": round(result.wall_time_s, 3), **(origin or {})},
                        zip_path=zip_path)


# --- a job's trial -> a bundle ------------------------------------------------------------------
def _dataset_meta(dataset: str, data_root: str | None) -> dict[str, Any]:
    """Task, classes, channels and stored size of a job's dataset: MedMNIST's catalogue when it is
    a MedMNIST name (no arrays loaded), else the dataset itself."""
    from .data import medmnist_meta

    meta = medmnist_meta(dataset)
    if meta is not None:
        return {"task": meta["task"], "classes": meta["classes"], "channels": meta["channels"], "size": meta["size"],
                "record": {"name": meta["name"], "source": f"{meta['name']}.npz (MedMNIST v2, 28 px)",
                           "task": meta["task"], "splits": meta["splits"]}}
    from .data import load_dataset

    data = load_dataset(dataset, root=data_root)
    return {"task": data.task, "classes": data.classes, "channels": data.channels,
            "size": int(data.train.images.shape[-1]), "record": dataset_record(data)}


def export_job(workspace: Any, job_id: str, pick: str = "knee", out: str | Path = "exported",
               zip_path: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Bundle one completed trial of a job: ``pick`` is ``knee``, ``best:<objective>[ where ...]``
    (:func:`promptsearch.objectives.pick`) or ``trial=<trial id>``. Returns (folder, info)."""
    from .jobs import JobError, JobSpec
    from .objectives import ObjectiveError
    from .objectives import pick as pick_trial
    from .search.workspace import as_workspace

    ws = as_workspace(workspace)
    try:
        job_id = ws.resolve(job_id)
    except JobError as e:
        raise ExportError(str(e)) from None
    job = ws.read_job(job_id)
    spec = JobSpec.model_validate(job["spec"])
    objectives = spec.objective_list
    trials = [t.model_dump(mode="json") for t in ws.read_state(job_id).trials]
    if not any(t["status"] == "completed" for t in trials):
        raise NothingToExport(f"job {job_id} has no finished trial to export yet "
                          f"({len(trials)} trial(s): {', '.join(sorted({t['status'] for t in trials})) or 'none started'})")
    if pick.startswith("trial="):
        wanted = pick.removeprefix("trial=").strip()
        hits = [t for t in trials if t["trial_id"] == wanted]
        if not hits:
            raise UnknownTrial(f"job {job_id} has no trial {wanted!r}")
        trial = hits[0]
        if trial["status"] != "completed":
            raise NothingToExport(f"trial {wanted} of job {job_id} is {trial['status']}, not completed: nothing to export")
    else:
        try:
            trial = trials[pick_trial(trials, objectives, pick)]
        except ObjectiveError as e:
            raise ExportError(f"job {job_id}: {e}") from None
    weights = trial.get("weights")
    if not weights or not Path(weights).exists():
        raise NothingToExport(f"trial {trial['trial_id']} of job {job_id} has no saved prompt weights")
    space = SearchSpace(SpaceFile.model_validate(job["space"]), f"job {job_id}")
    meta = _dataset_meta(spec.dataset, spec.data_root)
    clean = lambda m: {k: v for k, v in (m or {}).items() if v is not None}  # noqa: E731
    origin = {"job_id": job_id, "trial_id": trial["trial_id"], "pick": pick, "strategy": spec.strategy,
              "status": trial["status"], "epochs": len(trial.get("history") or []),
              "wall_time_s": trial.get("wall_time_s"), "mlflow_run_id": trial.get("mlflow_run_id")}
    folder = write_bundle(out, space=space, genome=trial["candidate"]["genome"], weights=weights,
                          backbone=spec.backbone, task=meta["task"], classes=meta["classes"],
                          input_channels=meta["channels"], input_size=meta["size"], metrics=clean(trial["metrics"]),
                          test_metrics=clean(trial.get("test_metrics")), dataset=meta["record"],
                          budget=spec.budget.model_dump(mode="json"), seed=int(trial.get("seed", spec.seed)),
                          objectives=[o.model_dump(mode="json") for o in objectives], origin=origin, zip_path=zip_path)
    return folder, {"trial_id": trial["trial_id"], "job_id": job_id, "pick": pick, "folder": str(folder),
                    "zip": str(zip_path) if zip_path else None, "architecture": trial["candidate"]["architecture"],
                    "metrics": clean(trial["metrics"])}
