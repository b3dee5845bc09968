"""Which frozen backbone a trial prompts, as plain data (no torch): jobs, trials, pretraining and
export bundles all use this one type.

    python -c "from promptsearch.backbone_spec import BackboneSpec; print(BackboneSpec('torchvision:mobilenet_v2', image_size=64).to_json())"

:mod:`promptsearch.backbones` builds the model from it. A weights file made by
``promptsearch pretrain`` has a JSON *sidecar* beside it (``backbone.json``) recording the sizes
it was trained at; :func:`read_sidecar` is the one reader of it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from .files import file_sha256

SIDECAR_FORMAT = "promptsearch-backbone"
DEFAULT_NAME = "vit_tiny_patch16_224"
DEFAULT_GEOMETRY = {"image_size": 28, "patch_size": 4}  # the default ViT's, unless asked otherwise (MedMNIST's 28 px)


class SidecarError(ValueError):
    """A weights sidecar that is missing, unreadable or does not match its weights file."""


class BackboneSpec(BaseModel):
    """Which frozen model to prompt, at what working size, with which weights.

    ``name``: a timm model name, or ``torchvision:<name>`` for torchvision's classification models.
    ``weights``: a local file (offline first); ``pretrained=True`` lets timm/torchvision fetch hub
    weights; neither = random init. ``image_size=None`` follows the backbone's default (or the
    weights' sidecar); the default ViT with no sizes, weights or hub given works at 28 px, patch 4. ``BackboneSpec("resnet18", image_size=32)``: the name may come first.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = DEFAULT_NAME  # timm name, or torchvision:<name>
    image_size: StrictInt | None = Field(None, ge=8, le=2048)  # None: the backbone's own size
    patch_size: StrictInt | None = Field(None, ge=1, le=64)  # ViTs only (e.g. 4 for 28-px input)
    weights: str | None = None  # a local weights file (offline first)
    pretrained: bool = False  # fetch hub weights (needs network)
    kwargs: dict[str, Any] = Field(default_factory=dict)  # extra model-constructor arguments

    def __init__(self, name: str | None = None, /, **data: Any):
        if name is not None:
            data["name"] = name
        super().__init__(**data)

    @model_validator(mode="before")
    @classmethod
    def _data_resolution(cls, data: Any) -> Any:
        """The default ViT with nothing else said (no sizes, no weights, no hub) works at MedMNIST's
        own 28 px with 4-px patches (7x7 tokens), not at 224 px: a random-initialised ViT-tiny at
        224 px costs 64x the compute per image and learns no more from 28-px data. Only fields that
        are absent count as unsaid: a stored spec with an explicit ``image_size: null`` keeps its meaning."""
        if isinstance(data, dict) and data.get("name", DEFAULT_NAME) == DEFAULT_NAME \
                and not ({"image_size", "patch_size"} & set(data)) and not data.get("weights") \
                and not data.get("pretrained"):
            data = {**data, **DEFAULT_GEOMETRY}
        return data

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_json(), sort_keys=True))

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def geometry(self) -> dict[str, int]:
        """Image and patch size: the ones given, else those the weights' sidecar records."""
        made = sidecar_geometry(self.weights)
        out = {"image_size": self.image_size or made.get("image_size"),
               "patch_size": self.patch_size or made.get("patch_size")}
        return {k: v for k, v in out.items() if v}


def sidecar_path(weights: str | Path) -> Path:
    return Path(weights).with_suffix(".json")


def read_sidecar(weights: str | Path, check: bool = True) -> dict[str, Any]:
    """The sidecar of a weights file made by ``promptsearch pretrain``; with ``check`` its sha256
    must match the file's. Raises :class:`SidecarError` naming the file."""
    weights = Path(weights)
    sidecar = sidecar_path(weights)
    if not sidecar.is_file():
        raise SidecarError(f"no sidecar {sidecar} next to {weights}")
    try:
        doc = json.loads(sidecar.read_text())
    except (OSError, ValueError) as e:
        raise SidecarError(f"{sidecar}: unreadable sidecar ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != SIDECAR_FORMAT:
        raise SidecarError(f"{sidecar}: not a promptsearch backbone sidecar")
    if check and doc.get("sha256") != file_sha256(weights):
        raise SidecarError(f"{weights} does not match its sidecar's sha256 (file changed or replaced)")
    return doc


def sidecar_geometry(weights: str | Path | None) -> dict[str, int]:
    """Image/patch size recorded beside a weights file (``{}`` when it has no sidecar), so
    ``--backbone-weights FILE`` alone builds the ViT it was trained as."""
    if not weights:
        return {}
    try:
        doc = read_sidecar(weights, check=False)
    except SidecarError:
        return {}
    return {k: v for k, v in doc.get("backbone", {}).items() if k in ("image_size", "patch_size") and v}
