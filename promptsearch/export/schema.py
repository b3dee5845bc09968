"""The bundle's ``config.json`` as typed data, the backbone record, and the errors export raises.

    python -c "from promptsearch.export.schema import BundleConfig; print(sorted(BundleConfig.model_fields))"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..version import BUNDLE_FORMAT, __version__
from ..backbones import BackboneSpec
from ..files import file_sha256
from ..space import SearchSpace, SpaceFile

CONFIG_FILE, WEIGHTS_FILE, CARD_FILE = "config.json", "prompts.safetensors", "MODEL_CARD.md"
BUNDLE_FILES = (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)  # always there; example maps (EXAMPLES_DIR) when written
EXAMPLES_DIR = "examples"


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
    # the component library the prompt started from: {path, version, sha256, components, tuning,
    # started_from, wrote}; None when no component came from one. Its blocks are in prompts.safetensors.
    library: dict[str, Any] | None = None
    # deployment compression (export --compress SPEC): {spec, file_bytes, payload_bytes,
    # uncompressed_file_bytes, uncompressed_payload_bytes, metrics: {validation, test} of the model as
    # loaded from this bundle, reference: {validation, test} of the uncompressed weights on the same
    # splits, on the same machine}; None = the weights are stored as trained
    compression: dict[str, Any] | None = None
    # example explanations of a few validation images (files under examples/): one record each,
    # {split, index, true_label, prediction, label, probabilities, input, maps: {name: file}[, pixel_prompt]}
    examples: list[dict[str, Any]] = Field(default_factory=list)
    # the front's re-evaluation (job front_repeats): {n, seeds, trials, mean: {...}, sd: {...}} of the
    # validation metrics over every seed; the bundle's weights are those of seeds[0]. None: one seed.
    repeats: dict[str, Any] | None = None

    @property
    def num_outputs(self) -> int:
        return len(self.classes)

    def search_space(self) -> SearchSpace:
        space = SearchSpace(SpaceFile.model_validate(self.space["spec"]), source=f"bundle:{self.space['name']}")
        if space.hash != self.space["hash"]:
            raise ExportError(f"bundle space spec hashes to {space.hash}, config says {self.space['hash']}")
        return space


# --- the backbone record: where its weights come from ----------------------------------------
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
