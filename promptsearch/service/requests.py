"""A job submitted over HTTP -> a validated :class:`~promptsearch.jobs.JobSpec`, over the server's
job defaults, through the same loader as a job file (:func:`promptsearch.jobs.job_from_dict`),
within the server's :class:`~promptsearch.service.settings.Limits`.

    python -c "from promptsearch.service.requests import JobRequest; print(sorted(JobRequest.model_fields))"

A request cannot name files: ``data_root``, ``tracking_uri``, ``ray_address`` and backbone
weights come from the server's job defaults; spaces are bundled names or inline documents
(stored in the workspace); no ``${VAR}`` expansion (a request must never read the server's
environment). A request names its ``dataset`` unless the server's job defaults name one.
Everything is checked before anything is written: a refused request changes nothing.
"""

from __future__ import annotations

import contextlib
import math
import re
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..budget import Count
from ..jobs import ID_RE, NAME_MAX, check_id, check_name
from .settings import SERVER_FIELDS, Limits, Settings

__all__ = ["ID_RE", "JobRequest", "job_spec", "limit_problems", "meta", "valid_id"]


def valid_id(value: str, what: str = "job id") -> str:
    """A job or trial id that follows the one id rule (:func:`promptsearch.jobs.check_id`), else 422."""
    try:
        return check_id(value, what)
    except ValueError as e:
        raise HTTPException(422, str(e)) from None


class JobRequest(BaseModel):
    """A job submitted over HTTP: the job file's fields as JSON (``promptsearch search`` reads the
    same fields from YAML). Unset fields come from the server's job defaults. ``space``: a name in
    ``search_spaces/`` or an inline space document. Paths and addresses (``data_root``,
    ``tracking_uri``, ``ray_address``, ``backbone.weights``, ``backbones``, ``library``) are the
    server's to set."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"name": "breast", "space": "pixel", "dataset": "breastmnist", "strategy": "evolution", "trials": 12,
         "budget": {"epochs": 3, "max_train_samples": 256}, "objectives": ["auc", "worst_class_recall", "prompt_params"]}]})

    name: str | None = Field(None, description="prefix of the job id: letters, digits, '-', '_', '.'; no '..'")
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
    trials: Count | None = None
    concurrency: Count | None = None
    resources: dict[str, Any] | None = Field(None, description="per trial: cpu, gpu (fractions share a device)")
    seed: Count | None = None
    max_failures: Count | None = None
    scheduler: dict[str, Any] | None = Field(None, description="early stopping: rungs, eta, ranking (nds | scalar)")
    front_repeats: Count | None = Field(None, description="extra seeds each final front trial is re-run with")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return None if v is None else check_name(v)  # the rule job ids follow: the id it makes is reachable


# strategy options that size work or memory, and the limit each is held to
STRATEGY_OPTION_LIMITS = {
    "population_size": "max_population_size",
    "tournament_size": "max_population_size",
    "n_startup_trials": "max_population_size",
    "max_retries": "max_retries",
    "hidden": "max_controller_hidden",
    "batch_size": "max_trials",  # rl: results per policy update
}


def _over(field: str, value: int, limits: Limits, name: str) -> str | None:
    limit = getattr(limits, name)
    if value > limit:
        return f"{field}: {value} is over this server's limit (limits.{name} = {limit})"
    return None


def limit_problems(spec: Any, limits: Limits) -> list[str]:
    """Every field of a validated ``JobSpec`` over the server's limits, as ``field: value is over
    ... (limits.NAME = N)``; ``[]`` when it fits. The same check holds the job defaults at start-up."""
    b = spec.budget
    checks = [("trials", spec.trials, "max_trials"), ("concurrency", spec.concurrency, "max_concurrency"),
              ("front_repeats", spec.front_repeats, "max_front_repeats"),
              ("budget.epochs", b.epochs, "max_epochs"), ("budget.batch_size", b.batch_size, "max_batch_size"),
              ("budget.eval_batch_size", b.eval_batch_size, "max_eval_batch_size"),
              ("budget.max_train_samples", b.max_train_samples, "max_train_samples"),
              ("budget.max_eval_samples", b.max_eval_samples, "max_eval_samples"),
              ("budget.latency_repeats", b.latency_repeats, "max_latency_repeats"),
              ("budget.threads", b.threads, "max_threads"),
              ("backbone.image_size", spec.backbone.image_size, "max_image_size"),
              ("description", len(spec.description), "max_description_chars")]
    out = [p for field, value, name in checks if value is not None and (p := _over(field, value, limits, name))]
    options = spec.strategy_options
    # at every depth: a hand-over's two strategies take their own options (first_options, then_options)
    for prefix, opts in _option_dicts(options, "strategy_options"):
        for key, name in STRATEGY_OPTION_LIMITS.items():
            if key not in opts:
                continue
            v = opts[key]
            if isinstance(v, bool) or not isinstance(v, int):
                out.append(f"{prefix}.{key}: must be a whole number, got {type(v).__name__}")
            elif p := _over(f"{prefix}.{key}", v, limits, name):
                out.append(p)
    for path, v in _numbers(options, "strategy_options"):
        if isinstance(v, float) and not math.isfinite(v):
            out.append(f"{path}: must be a finite number, got {v}")
    return out


def _option_dicts(value: Any, path: str):
    """Every dict in ``value`` (itself first) with its path."""
    if isinstance(value, dict):
        yield path, value
        for k, v in value.items():
            yield from _option_dicts(v, f"{path}.{k}")


def _numbers(value: Any, path: str):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield path, value


def _space_size(space: dict[str, Any], limits: Limits) -> None:
    """An inline space's size, counted on the raw document before any parsing (a 200,000-choice
    space would take a minute of CPU to validate), and its name (a file name in the workspace)."""
    name = space.get("name")
    if isinstance(name, str):
        try:
            check_id(name, "space name", NAME_MAX)
        except ValueError as e:
            raise HTTPException(422, f"space (inline): name: {e}") from None
    decisions, components = space.get("decisions"), space.get("components")
    choices = genes = 0
    if isinstance(decisions, dict | list):
        genes += len(decisions)
        for d in decisions.values() if isinstance(decisions, dict) else decisions:
            if isinstance(d, dict):
                choices += len(d["choices"]) if isinstance(d.get("choices"), list) else 0
                when = d.get("when")
                if isinstance(when, dict):
                    choices += sum(len(v) for v in when.values() if isinstance(v, list))
    if isinstance(components, dict):
        genes += sum(len(v) for v in components.values() if isinstance(v, list))
    if choices > limits.max_space_choices:
        raise HTTPException(422, f"space (inline): {choices} choices is over this server's limit "
                                 f"(limits.max_space_choices = {limits.max_space_choices})")
    if genes > limits.max_genome_size:
        raise HTTPException(422, f"space (inline): a genome of {genes} genes (decisions + components) is over this "
                                 f"server's limit (limits.max_genome_size = {limits.max_genome_size})")


def _no_env(value: Any, path: str = "") -> None:
    """Request strings must not read the server's environment (job files may: ``${VAR}``), and
    numbers must be finite (Python's JSON reader takes NaN and Infinity, which no field means)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _no_env(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _no_env(v, f"{path}[{i}]")
    elif isinstance(value, str) and "${" in value:
        raise HTTPException(422, f"{path}: '${{' is not allowed in a request (environment variables are "
                                 "read only from the server's job defaults)")
    elif isinstance(value, float) and not math.isfinite(value):
        raise HTTPException(422, f"{path}: must be a finite number, got {value}")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "space" else v
    return out


def _space_field(space: str | dict[str, Any], workspace: Path, limits: Limits | None = None,
                 created: list[Path] | None = None) -> str:
    """A space name in search_spaces/ -> its file; an inline space document -> checked for size,
    validated and stored in ``<workspace>/spaces/<name>-<hash>.yaml``. Never a path from the request."""
    import yaml

    from ..files import atomic_write
    from ..space import SPACES_DIR, SpaceError, list_spaces, parse_space

    if isinstance(space, str):
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", space) or space.removesuffix(".yaml") not in list_spaces():
            shown = space if len(space) <= 64 else space[:64] + "..."
            raise HTTPException(422, f"space: unknown space {shown!r}; known: {', '.join(list_spaces())} "
                                     "(or send the space document inline)")
        return str(SPACES_DIR / f"{space.removesuffix('.yaml')}.yaml")
    _space_size(space, limits or Limits())
    text = yaml.safe_dump(space, sort_keys=False)
    try:
        parsed = parse_space(text, "space")
    except SpaceError as e:
        raise HTTPException(422, f"space (inline): {e}") from None
    folder = workspace / "spaces"
    path = folder / f"{parsed.name}-{parsed.hash}.yaml"  # the name follows the id rule (_space_size)
    if not path.exists():
        made = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        try:
            atomic_write(path, text)  # an OSError (a full disk) is the server's 507, not the request's fault
        except OSError:
            if made:
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise
        if created is not None:
            created.append(path)
    return str(path)


def job_spec(req: JobRequest, settings: Settings, created: list[Path] | None = None):
    """Request fields over the server's job defaults -> a validated ``JobSpec`` within the server's
    limits (422 naming the field, or the limit). Fields only; :func:`~promptsearch.service.jobs.submit`
    runs the job's checks once. ``created`` collects the files written (an inline space), so a
    submission refused later can remove them."""
    from ..jobs import JobError, job_from_dict

    limits = settings.limits
    body = req.model_dump(exclude_unset=True)  # python mode: a NaN stays a NaN (json mode would make it null)
    _no_env(body)
    server_only = [f for f in SERVER_FIELDS if f in body]
    backbone = body.get("backbone") if isinstance(body.get("backbone"), dict) else {}
    server_only += [f"backbone.{f}" for f in ("weights", "pretrained", "kwargs") if f in backbone]
    server_only += [f for f in ("backbones", "library") if f in body]  # they name weight files and folders
    if server_only:
        raise HTTPException(422, f"{', '.join(server_only)}: set by the server's job defaults "
                                 "(promptsearch serve --job-defaults FILE), not by a request")
    defaults = settings.job_defaults
    if "dataset" not in body and "dataset" not in defaults:
        raise HTTPException(422, "dataset: required (a MedMNIST 2D name such as breastmnist): this server's job "
                                 "defaults name none (promptsearch serve --job-defaults FILE)")
    if len(body.get("description") or "") > limits.max_description_chars:
        raise HTTPException(422, f"description: {len(body['description'])} characters is over this server's limit "
                                 f"(limits.max_description_chars = {limits.max_description_chars})")
    if "dataset" in body and body["dataset"] != defaults.get("dataset") and body["dataset"] not in _medmnist_2d():
        # a name that is not MedMNIST's would be read as a folder path by load_dataset
        raise HTTPException(422, f"dataset: {body['dataset']!r} is not a MedMNIST 2D dataset "
                                 f"({', '.join(_medmnist_2d())}) nor the server's default dataset")
    if backbone.get("name") and backbone["name"] != defaults.get("backbone", {}).get("name", backbone["name"]) \
            and defaults.get("backbone", {}).get("weights"):
        raise HTTPException(422, f"backbone.name: this server has weights for {defaults['backbone']['name']!r} only")
    merged = _merge(defaults, body)
    merged.pop("space", None)
    try:  # every field (and the limits) before the inline space is stored: a refused request writes nothing
        spec = job_from_dict(merged, "job", check=False)  # no ${VAR} expansion: the request is data
    except JobError as e:
        raise HTTPException(422, "\n".join(line.removeprefix("job: ") for line in str(e).splitlines())) from None
    problems = limit_problems(spec, limits)
    if problems:
        raise HTTPException(422, "; ".join(problems))
    if "space" in body:
        space = _space_field(body["space"], settings.workspace, limits, created)
    elif "space" in defaults:
        space = _space_field(Path(defaults["space"]).stem, settings.workspace, limits) \
            if not Path(defaults["space"]).is_absolute() else defaults["space"]
    else:
        space = _space_field("medical", settings.workspace, limits)
    return spec.model_copy(update={"space": space})


def _medmnist_2d() -> list[str]:
    from ..data import medmnist_2d

    return medmnist_2d()


def meta(settings: Settings) -> dict[str, Any]:
    """What the submit form offers: spaces, strategies, datasets, objectives, the public job defaults (what
    ``{}`` runs) and the server's limits."""
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
            "auth": bool(settings.token), "limits": settings.limits.model_dump()}
