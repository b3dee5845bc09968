"""A job submitted over HTTP -> a validated :class:`~promptsearch.jobs.JobSpec`, over the server's
job defaults, through the same loader as a job file (:func:`promptsearch.jobs.job_from_dict`).

    python -c "from promptsearch.service.requests import JobRequest; print(sorted(JobRequest.model_fields))"

A request cannot name files: ``data_root``, ``tracking_uri``, ``ray_address`` and backbone
weights come from the server's job defaults; spaces are bundled names or inline documents
(stored in the workspace); no ``${VAR}`` expansion (a request must never read the server's
environment).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field

from .settings import SERVER_FIELDS, Settings

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def valid_id(value: str, what: str = "job id") -> str:
    if not isinstance(value, str) or not ID_RE.match(value) or ".." in value:
        raise HTTPException(422, f"invalid {what} {value!r}: use 1-128 letters, digits, '-', '_' or '.'")
    return value


class JobRequest(BaseModel):
    """A job submitted over HTTP: the job file's fields as JSON (``promptsearch search`` reads the
    same fields from YAML). Unset fields come from the server's job defaults. ``space``: a name in
    ``search_spaces/`` or an inline space document. Paths and addresses (``data_root``,
    ``tracking_uri``, ``ray_address``, ``backbone.weights``) are the server's to set."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"name": "breast", "space": "pixel", "dataset": "breastmnist", "strategy": "evolution", "trials": 12,
         "budget": {"epochs": 3, "max_train_samples": 256}, "objectives": ["auc", "worst_class_recall", "prompt_params"]}]})

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="prefix of the job id")
    description: str | None = None
    space: str | dict[str, Any] | None = Field(None, description="space name, or the space document inline")
    fix: dict[str, Any] | None = Field(None, description="decisions to pin, e.g. {\"module\": \"pixel\"}")
    dataset: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$", description="a MedMNIST name (2D)")
    backbone: dict[str, Any] | None = Field(None, description="name, image_size, patch_size")
    budget: dict[str, Any] | None = Field(None, description="training of one trial: epochs, batch_size, max_train_samples, ...")
    strategy: str | None = None
    strategy_options: dict[str, Any] | None = None
    objectives: list[str | dict[str, Any]] | None = None
    scalarization: dict[str, Any] | None = None
    trials: int | None = None
    concurrency: int | None = None
    resources: dict[str, Any] | None = Field(None, description="per trial: cpu, gpu (fractions share a device)")
    seed: int | None = None
    max_failures: int | None = None


def _no_env(value: Any, path: str = "") -> None:
    """Request strings must not read the server's environment (job files may: ``${VAR}``)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _no_env(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _no_env(v, f"{path}[{i}]")
    elif isinstance(value, str) and "${" in value:
        raise HTTPException(422, f"{path}: '${{' is not allowed in a request (environment variables are "
                                 "read only from the server's job defaults)")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "space" else v
    return out


def _space_field(space: str | dict[str, Any], workspace: Path) -> str:
    """A space name in search_spaces/ -> its file; an inline space document -> validated and stored
    in ``<workspace>/spaces/<name>-<hash>.yaml``. Never a path from the request."""
    import yaml

    from ..space import SPACES_DIR, SpaceError, list_spaces, parse_space

    if isinstance(space, str):
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", space) or space.removesuffix(".yaml") not in list_spaces():
            raise HTTPException(422, f"space: unknown space {space!r}; known: {', '.join(list_spaces())} "
                                     "(or send the space document inline)")
        return str(SPACES_DIR / f"{space.removesuffix('.yaml')}.yaml")
    text = yaml.safe_dump(space, sort_keys=False)
    try:
        parsed = parse_space(text, "space")
    except SpaceError as e:
        raise HTTPException(422, f"space (inline): {e}") from None
    folder = workspace / "spaces"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{parsed.name}-{parsed.hash}.yaml"  # name matches ^[A-Za-z0-9_.-]+$ (SpaceFile)
    if not path.exists():
        path.write_text(text)
    return str(path)


def job_spec(req: JobRequest, settings: Settings):
    """Request fields over the server's job defaults -> a validated ``JobSpec`` (422 naming the field).
    Fields only; :func:`~promptsearch.service.jobs.submit` runs the job's checks once."""
    from ..jobs import JobError, job_from_dict

    body = req.model_dump(mode="json", exclude_unset=True)
    _no_env(body)
    server_only = [f for f in SERVER_FIELDS if f in body]
    backbone = body.get("backbone") if isinstance(body.get("backbone"), dict) else {}
    server_only += [f"backbone.{f}" for f in ("weights", "pretrained", "kwargs") if f in backbone]
    if server_only:
        raise HTTPException(422, f"{', '.join(server_only)}: set by the server's job defaults "
                                 "(promptsearch serve --job-defaults FILE), not by a request")
    defaults = settings.job_defaults
    if "dataset" in body and body["dataset"] != defaults.get("dataset") and body["dataset"] not in _medmnist_2d():
        # a name that is not MedMNIST's would be read as a folder path by load_dataset
        raise HTTPException(422, f"dataset: {body['dataset']!r} is not a MedMNIST 2D dataset "
                                 f"({', '.join(_medmnist_2d())}) nor the server's default dataset")
    if backbone.get("name") and backbone["name"] != defaults.get("backbone", {}).get("name", backbone["name"]) \
            and defaults.get("backbone", {}).get("weights"):
        raise HTTPException(422, f"backbone.name: this server has weights for {defaults['backbone']['name']!r} only")
    merged = _merge(defaults, body)
    if "space" in body:
        merged["space"] = _space_field(body["space"], settings.workspace)
    elif "space" in merged:
        merged["space"] = _space_field(Path(merged["space"]).stem, settings.workspace) \
            if not Path(merged["space"]).is_absolute() else merged["space"]
    else:
        merged["space"] = _space_field("medical", settings.workspace)
    try:
        return job_from_dict(merged, "job", check=False)  # no ${VAR} expansion: the request is data
    except JobError as e:
        raise HTTPException(422, str(e).removeprefix("job: ")) from None


def _medmnist_2d() -> list[str]:
    from ..data import medmnist_2d

    return medmnist_2d()


def meta(settings: Settings) -> dict[str, Any]:
    """What the submit form offers: spaces, strategies, datasets, objectives and the public job defaults."""
    from ..objectives import DEFAULT_OBJECTIVES, KNOWN_OBJECTIVES
    from ..space import list_spaces
    from ..strategies import STRATEGIES

    datasets = _medmnist_2d()
    d = settings.job_defaults
    public = {k: v for k, v in d.items() if k not in SERVER_FIELDS}  # no server paths in the answer
    if "backbone" in public:
        public["backbone"] = {k: v for k, v in public["backbone"].items() if k != "weights"}
    if "space" in public:
        public["space"] = Path(public["space"]).stem
    return {"spaces": list_spaces(), "strategies": sorted(STRATEGIES), "datasets": datasets,
            "objectives": {"known": sorted(KNOWN_OBJECTIVES), "default": [o.name for o in DEFAULT_OBJECTIVES]},
            "defaults": {"space": "medical", "strategy": "random", "dataset": "breastmnist", **public},
            "defaults_source": Path(settings.defaults_source).name if settings.defaults_source else None,
            "auth": bool(settings.token)}
