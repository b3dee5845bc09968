"""Search jobs: a YAML (or JSON) file validated into a frozen, typed :class:`JobSpec`.

    python -c "from promptsearch.jobs import load_job; print(load_job('jobs/breast_pixel.yaml').model_dump_json(indent=2))"

A job names everything one search needs: the space (a file, or a name in ``search_spaces/``),
decisions to pin (``fix``), the dataset and its root, the frozen backbone, the training budget
of each trial, the strategy and its options, the objectives and scalarization weights, how many
trials, how many run at once, the resources of one trial, a seed, how many failed trials stop the
job, and optionally a Ray cluster and an MLflow tracking URI.

Errors name the file, line and field, like the space loader's (the same YAML helpers). String
values may read the environment: ``${VAR}`` or ``${VAR:-default}``. Relative paths are resolved
against the current directory when the job is submitted (:func:`resolve_paths`), so a stored job
holds absolute paths and resumes from anywhere.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .backbone_spec import BackboneSpec
from .budget import Budget, Count
from .files import bundled, find_named
from .registry import Registry
from .rungs import Scheduler
from .space import Scalar, SearchSpace, SpaceError, load_space
from .yamlio import JobError, YamlError, compose_yaml, error_line, first_error, format_validation, where

DEFAULT_JOBS_DIR = bundled("default_jobs")  # breast_pixel.yaml: the README's main job


# --- the one rule for job names and ids --------------------------------------------------------------
# A job id is ``<name>-<YYYYmmdd-HHMMSS>-<4 hex>``: a name that passes the rule makes an id that
# passes it too, so every id the API hands out is one it accepts back (GET, cancel, resume, export).
# It is also a folder name under <workspace>/jobs/: no '/', no leading '.', no '..'.
ID_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_-]|\.(?!\.))*$")
NAME_MAX = 64  # name + the 21-character suffix stays within ID_MAX
ID_MAX = 128
ID_RULE = "letters, digits, '-', '_' or '.', starting with a letter or digit, no '..'"


def check_id(value: object, what: str = "job id", max_len: int = ID_MAX) -> str:
    """``value`` if it follows the job name/id rule, else a ``ValueError`` saying the rule."""
    if not isinstance(value, str) or not 1 <= len(value) <= max_len or not ID_RE.match(value):
        shown = repr(value) if not isinstance(value, str) or len(value) <= 80 else repr(value[:80]) + "..."
        raise ValueError(f"invalid {what} {shown}: use 1-{max_len} {ID_RULE}")
    return value


def check_name(value: object) -> str:
    """A job name (the prefix of its ids): the id rule, at most ``NAME_MAX`` characters."""
    return check_id(value, "job name", NAME_MAX)


class JobLibrary(BaseModel):
    """The job's component library (``library: PATH`` or ``library: {path: PATH, share: true}``):
    its blocks feed the space's components and the leakage guard checks the dataset against it.
    ``share``: weight sharing inside the job (trials write fine-tuned blocks back to job-level
    library versions that later trials start from; promptsearch.library.LibraryVersions)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field(min_length=1)  # a library folder (library.json + library.safetensors)
    share: bool = False

    @model_validator(mode="before")
    @classmethod
    def _path(cls, v: Any) -> Any:
        return {"path": v} if isinstance(v, str) else v


# checks that need more than core: registered lazily, so a job without them validates without
# importing torch (the library check reads the dataset catalogue for its leakage guard)
JOB_CHECKS: Registry = Registry("job check")
JOB_CHECKS.register_lazy("library", "promptsearch.library.guard")


class Resources(BaseModel):
    """What one trial reserves on a Ray node. Fractions share a device (``gpu: 0.25``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cpu: float = Field(1.0, gt=0, le=1024)
    gpu: float = Field(0.0, ge=0, le=64)

    @model_validator(mode="after")
    def _whole(self) -> Resources:
        for name in ("cpu", "gpu"):
            v = getattr(self, name)
            if v > 1 and v != int(v):
                raise ValueError(f"@{name}: Ray takes a fraction below 1 or a whole number, got {v}")
        return self

    def ray(self) -> dict[str, float]:
        return {"cpu": self.cpu, "gpu": self.gpu}


class JobSpec(BaseModel):
    """One search job. Every field has a default except what makes a job yours (space, dataset)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "search"  # prefix of the job id: check_name (the same rule as job ids)
    description: str = Field("", max_length=10_000)
    space: str = "medical"  # a space file, or a name in search_spaces/
    fix: dict[str, Scalar] = Field(default_factory=dict)  # pin decisions, e.g. {module: pixel} on a CNN
    dataset: str = "breastmnist"  # MedMNIST name, or folder:PATH
    data_root: str | None = None  # None: $PROMPTSEARCH_DATA_ROOT
    backbone: BackboneSpec = Field(default_factory=BackboneSpec)
    # named backbones a space's `backbone` decision chooses among (its choices are these names;
    # "" or no such decision: `backbone` above)
    backbones: dict[str, BackboneSpec] = Field(default_factory=dict)
    budget: Budget = Field(default_factory=Budget)  # training of one trial
    strategy: str = "random"  # a name in promptsearch.strategies.STRATEGIES
    strategy_options: dict[str, Any] = Field(default_factory=dict)
    objectives: list[str | dict[str, Any]] = Field(default_factory=list)  # empty: DEFAULT_OBJECTIVES
    scalarization: dict[str, Any] | None = None  # Scalarization fields (weights for one reward)
    trials: Count = Field(20, ge=1, le=100_000)  # finished trials (completed, stopped or failed) to run
    concurrency: Count = Field(2, ge=1, le=4096)  # trials in flight at once
    resources: Resources = Field(default_factory=Resources)  # per trial
    seed: Count = Field(0, ge=0, le=2**32 - 1)  # seeds the strategy and every trial's training (numpy's seed range)
    max_failures: Count | None = Field(None, ge=1, le=100_000)  # None: half the trials, at least 3
    ray_address: str | None = None  # None: start Ray locally; "auto" or host:port joins a cluster
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else SQLite in the workspace
    library: JobLibrary | None = None  # a component library (overrides the space's library: key)
    scheduler: Scheduler | None = None  # early stopping at rungs (promptsearch.rungs); None: every trial trains fully
    front_repeats: Count = Field(0, ge=0, le=20)  # extra seeds each final front trial is re-run with (mean ± sd)

    @model_validator(mode="after")
    def _rungs_in_budget(self) -> JobSpec:
        if self.scheduler is not None and not self.scheduler.active(self.budget.epochs):
            raise ValueError(f"@scheduler.rungs: {self.scheduler.rungs} has no rung below budget.epochs="
                             f"{self.budget.epochs}, so no trial could stop early: set rungs below it, or drop scheduler")
        return self

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v)

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, v: str) -> str:
        from .strategies import STRATEGIES

        if v not in STRATEGIES:
            raise ValueError(f"unknown strategy {v!r}; known: {', '.join(sorted(STRATEGIES))}")
        return v

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: list) -> list:
        from .objectives import parse_objectives

        parse_objectives(v)  # ObjectiveError is a ValueError: pydantic reports it at 'objectives'
        return v

    @field_validator("scalarization")
    @classmethod
    def _scalarization(cls, v: dict | None) -> dict | None:
        from .objectives import Scalarization

        if v is not None:
            try:
                Scalarization(**v)
            except ValidationError as e:
                raise ValueError(first_error(e)) from None
        return v

    @property
    def objective_list(self):
        """The typed objectives (:func:`promptsearch.objectives.parse_objectives`)."""
        from .objectives import parse_objectives

        return parse_objectives(self.objectives)

    @property
    def strategy_kwargs(self) -> dict[str, Any]:
        """The strategy's options, with the job's ``scalarization`` (used by strategies that need one
        number, as ``rl``) unless the options set their own."""
        options = dict(self.strategy_options)
        if self.scalarization is not None:
            options.setdefault("scalarization", self.scalarization)
        return options

    @property
    def front_stopped(self) -> bool:
        """Whether stopped trials may be on the front (``scheduler.front_includes_stopped``)."""
        return bool(self.scheduler and self.scheduler.front_includes_stopped)

    def backbone_for(self, alias: str | None) -> BackboneSpec:
        """The frozen backbone of a candidate whose ``backbone`` decision is ``alias`` ("" or None:
        the job's ``backbone``)."""
        if not alias:
            return self.backbone
        try:
            return self.backbones[alias]
        except KeyError:
            raise JobError(f"backbones: the space chooses backbone {alias!r}, which the job does not define "
                           f"(backbones: {', '.join(sorted(self.backbones)) or 'none'})") from None

    @property
    def failure_limit(self) -> int:
        """Failed trials that stop the job as failed."""
        return self.max_failures or max(3, math.ceil(self.trials / 2))


# --- loading ----------------------------------------------------------------------------------------
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(data: Any, path: tuple, lines: dict[tuple, int], source: str) -> Any:
    """``${VAR}`` / ``${VAR:-default}`` in every string value (as in the shell, an empty variable
    takes the default)."""
    if isinstance(data, Mapping):
        return {k: _expand_env(v, path + (k,), lines, source) for k, v in data.items()}
    if isinstance(data, list):
        return [_expand_env(v, path + (i,), lines, source) for i, v in enumerate(data)]
    if not isinstance(data, str):
        return data

    def sub(m: re.Match) -> str:
        value = os.environ.get(m.group(1))
        if value is None and m.group(2) is None:
            line = error_line(path, lines)
            raise JobError(f"{source}{f':{line}' if line else ''}: {'.'.join(map(str, path))}: "
                           f"environment variable {m.group(1)} is not set (write ${{{m.group(1)}:-default}})")
        if m.group(2) is not None and not value:
            return m.group(2)
        return value

    return _ENV.sub(sub, data)


def _validate(data: Any, source: str, lines: dict[tuple, int]) -> JobSpec:
    if not isinstance(data, Mapping):
        raise JobError(f"{source}:1: a job file is a mapping of fields (space, dataset, trials, ...)")
    try:
        return JobSpec.model_validate(data)
    except ValidationError as e:
        raise JobError(format_validation(e, source, lines)) from None


def parse_job(text: str, source: str = "<string>", check: bool = True) -> JobSpec:
    """A job from YAML (or JSON, which is YAML) text; errors name ``source:line: field``.
    ``check``: also run :func:`check_job` (space, paths, strategy options)."""
    return _parse(text, source, check, ())[0]


def _parse(text: str, source: str, check: bool, sections: tuple[str, ...]) -> tuple[JobSpec, dict[str, Any], dict[tuple, int]]:
    try:
        data, lines = compose_yaml(text, source)
    except YamlError as e:
        raise JobError(str(e)) from None
    extra: dict[str, Any] = {}
    if isinstance(data, Mapping) and sections:
        data = dict(data)
        extra = {k: data.pop(k) for k in sections if k in data}
    spec = _validate(_expand_env(data, (), lines, source), source, lines)
    if check:
        check_job(spec, source, lines)
    return spec, _expand_env(extra, (), lines, source), lines


def bundled_jobs() -> list[str]:
    """Names of the job files shipped with the package (``promptsearch search NAME`` runs one)."""
    return sorted(p.stem for p in DEFAULT_JOBS_DIR.glob("*.yaml"))


def resolve_job_path(path: str | Path) -> Path:
    """A job file path, or the name of a bundled job (``breast_pixel``)."""
    found = find_named(path, DEFAULT_JOBS_DIR)
    if found is None:
        raise JobError(f"job file {str(path)!r} not found (bundled jobs: {', '.join(bundled_jobs())})")
    return found


def load_job(path: str | Path, check: bool = True) -> JobSpec:
    """Load and validate a job file (or a bundled job by name): every field, then (``check``) that
    its space, paths and strategy resolve."""
    p = resolve_job_path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise JobError(f"job file {str(path)!r} is not readable text: {e}") from None
    return parse_job(text, str(path), check)


def load_job_sections(path: str | Path, sections: tuple[str, ...], check: bool = True
                      ) -> tuple[JobSpec, dict[str, Any], dict[tuple, int]]:
    """A job file that also carries top-level ``sections`` that are not job fields (a server's
    ``limits:``): (the job, {section: its data, ``${VAR}`` expanded}, the file's line map)."""
    p = resolve_job_path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise JobError(f"job file {str(path)!r} is not readable text: {e}") from None
    return _parse(text, str(path), check, sections)


def job_from_dict(data: Mapping[str, Any], source: str = "<job>", check: bool = True) -> JobSpec:
    """A job from already-parsed fields (the API's JSON body); the same checks as a file.

    No ``${VAR}`` expansion here: fields that come from a request must never read the server's
    environment (a token, say)."""
    spec = _validate(dict(data), source, {})
    if check:
        check_job(spec, source, {})
    return spec


def with_overrides(spec: JobSpec, overrides: Mapping[str, Any], source: str = "override", check: bool = True) -> JobSpec:
    """A copy with dotted fields replaced (``{"trials": 4, "budget.epochs": 1}``), validated again."""
    data = spec.model_dump(mode="json", exclude_unset=False)
    for key, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, last = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value
    new = _validate(data, source, {})
    if check:
        check_job(new, source, {})
    return new


def parse_override(text: str) -> tuple[str, Any]:
    """``key.path=value`` (the value read as a YAML scalar) -> (key, value)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise JobError(f"--set {text!r}: write FIELD=VALUE, e.g. --set budget.epochs=2")
    return key.strip(), yaml.safe_load(value) if value.strip() else None


# --- cross checks (need the file system and the registries) -----------------------------------------
def job_space(spec: JobSpec, source: str = "<job>", lines: dict[tuple, int] | None = None) -> SearchSpace:
    """The job's space with its ``fix`` pins applied (errors name the field)."""
    lines = lines or {}
    try:
        space = load_space(spec.space)
    except SpaceError as e:
        raise JobError(f"{where(source, lines, 'space')}: {e}") from None
    for name in spec.fix:
        if name not in space.spec.decisions:
            raise JobError(f"{where(source, lines, 'fix', name)}: space {space.name!r} has no decision {name!r}")
    try:
        space = space.fix(**spec.fix) if spec.fix else space
    except SpaceError as e:
        raise JobError(f"{where(source, lines, 'fix')}: {e}") from None
    if spec.library is not None or space.spec.library is not None:  # bound: the stored space names the exact file
        space = JOB_CHECKS.get_or_raise("library")(spec, space, source, lines)
    elif "library" in space.choices().get("source", ()):
        if "scratch" not in space.choices()["source"]:
            raise JobError(f"{where(source, lines, 'space')}: space {space.name!r} takes its components from a library "
                           f"(source: [library]): name one (library: PATH, made by `promptsearch library build`)")
        space = space.fix(source="scratch")  # no library named: every component starts fresh, as before libraries
    return space


def check_job(spec: JobSpec, source: str = "<job>", lines: dict[tuple, int] | None = None) -> SearchSpace:
    """Checks that need more than the fields: the space loads, ``fix`` names its decisions, the
    local paths exist and the strategy accepts its options. Returns the (fixed) space. Run once
    per submission: the loaders run it (``check=True``) or :func:`~promptsearch.service.jobs.submit` does."""
    lines = lines or {}
    space = job_space(spec, source, lines)
    if spec.data_root is not None and not Path(spec.data_root).expanduser().is_dir():
        raise JobError(f"{where(source, lines, 'data_root')}: folder {spec.data_root!r} not found")
    if spec.backbone.weights is not None and not Path(spec.backbone.weights).expanduser().is_file():
        raise JobError(f"{where(source, lines, 'backbone', 'weights')}: file {spec.backbone.weights!r} not found")
    for alias, bb in spec.backbones.items():
        if bb.weights is not None and not Path(bb.weights).expanduser().is_file():
            raise JobError(f"{where(source, lines, 'backbones', alias, 'weights')}: file {bb.weights!r} not found")
    chosen = {c for c in space.choices().get("backbone", ()) if c}
    if chosen - set(spec.backbones):
        raise JobError(f"{where(source, lines, 'backbones')}: space {space.name!r} chooses backbone(s) "
                       f"{', '.join(sorted(chosen - set(spec.backbones)))}, which the job does not define: add them "
                       f"under backbones: (name: {{name: ..., weights: ...}}), or pin one with fix: {{backbone: ...}}")
    from .strategies import make_strategy

    try:
        make_strategy(spec.strategy, space, spec.objective_list, seed=spec.seed, **spec.strategy_kwargs)
    except (TypeError, ValueError, KeyError) as e:
        raise JobError(f"{where(source, lines, 'strategy_options')}: strategy {spec.strategy!r} "
                       f"rejects its options: {e}") from None
    return space


def resolve_paths(spec: JobSpec, base: str | Path | None = None) -> JobSpec:
    """Relative paths (space file, data root, backbone weights, ``folder:`` datasets) made absolute
    against ``base`` (default: the current directory); a bundled space name stays a name. An unset
    ``data_root`` takes ``$PROMPTSEARCH_DATA_ROOT``, so the stored job does not depend on the
    environment it resumes in."""
    base = Path(base or Path.cwd())

    def absolute(p: str | None) -> str | None:
        if p is None:
            return None
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else (base / q).resolve())

    space = spec.space
    candidate = Path(space).expanduser()
    if (base / candidate).exists():
        space = str((base / candidate).resolve())
    data_root = spec.data_root
    if data_root is None and os.environ.get("PROMPTSEARCH_DATA_ROOT"):
        data_root = os.environ["PROMPTSEARCH_DATA_ROOT"]
    dataset = spec.dataset
    if dataset.startswith("folder:"):
        dataset = "folder:" + absolute(dataset.removeprefix("folder:"))
    return spec.model_copy(update={
        "space": space, "data_root": absolute(data_root), "dataset": dataset,
        "backbone": spec.backbone.model_copy(update={"weights": absolute(spec.backbone.weights)}),
        "backbones": {k: b.model_copy(update={"weights": absolute(b.weights)}) for k, b in spec.backbones.items()},
        "library": spec.library.model_copy(update={"path": absolute(spec.library.path)}) if spec.library else None,
    })
