"""How one server runs: its settings, its limits, and the job defaults that fill what a request
leaves out.

    promptsearch serve --help

The ``--job-defaults`` file is a job file that may also hold a ``limits:`` section (the fields of
:class:`Limits`); ``promptsearch serve --limit NAME=VALUE`` overrides one. Each default below says
why it is what it is; a site with bigger machines raises them.
"""

from __future__ import annotations

import errno
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

TOKEN_ENV = "PROMPTSEARCH_API_TOKEN"
# request fields that would name files or remote services: only the server's defaults set them
SERVER_FIELDS = ("data_root", "tracking_uri", "ray_address")
LIMITS_SECTION = "limits"


class Limits(BaseModel):
    """What one request may ask of this server. A request over a limit gets a 4xx naming it
    (``limits.max_trials``); the job-defaults file's own values must fit too."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # a job: 25-200 trials is the README's range; 1000 trials of ~30 s is most of a day on one GPU
    max_trials: StrictInt = Field(1000, ge=1, le=100_000)
    # front_repeats re-runs every front trial this many more times (a front of 30 at 3: 90 trials)
    max_front_repeats: StrictInt = Field(3, ge=0, le=20)
    # trials in flight: each is a worker process with the dataset and a backbone (~1-2 GB); 4 per GPU
    # (deploy/job-defaults.yaml) on 8 GPUs
    max_concurrency: StrictInt = Field(32, ge=1, le=4096)
    # prompt tuning on MedMNIST converges in tens of epochs; the bundled jobs use 1-5
    max_epochs: StrictInt = Field(100, ge=1, le=1000)
    # MedMNIST+ ships 28-224 px; a ViT's tokens grow with the square of the size (2048 px: 16k tokens)
    max_image_size: StrictInt = Field(512, ge=8, le=2048)
    # training batch: 32 is the default; 1024 at 224 px already needs a large GPU
    max_batch_size: StrictInt = Field(1024, ge=1, le=4096)
    # evaluation batch (no gradients): the default is 256
    max_eval_batch_size: StrictInt = Field(4096, ge=1, le=65536)
    # MedMNIST's largest 2D train split has 165k images (TissueMNIST)
    max_train_samples: StrictInt = Field(1_000_000, ge=1, le=10**9)
    max_eval_samples: StrictInt = Field(1_000_000, ge=1, le=10**9)
    # batch-1 forward passes timed per trial for latency_ms (default 10)
    max_latency_repeats: StrictInt = Field(1000, ge=1, le=100_000)
    # torch intra-op threads of one trial: more than a node's cores only spin
    max_threads: StrictInt = Field(64, ge=1, le=1024)
    # jobs waiting for a runner slot (not counting running ones): with --max-jobs 1-2, days of work
    max_queued_jobs: StrictInt = Field(20, ge=0, le=10_000)
    # a request body: bundled spaces are 1-3 KB as JSON; 1 MiB leaves room for large inline spaces
    max_body_bytes: StrictInt = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    # an inline space: choices over all decisions and 'when' lists (bundled spaces: 13-56)
    max_space_choices: StrictInt = Field(1000, ge=1, le=1_000_000)
    # an inline space's genome: decisions + components (bundled spaces: 6-22 genes)
    max_genome_size: StrictInt = Field(256, ge=1, le=100_000)
    # strategy options: population_size / tournament_size / n_startup_trials (defaults 16 / 2 / 10)
    max_population_size: StrictInt = Field(1000, ge=1, le=1_000_000)
    # strategy option max_retries: each retry is a sampler call (TPE ~0.1 s); defaults 10-50
    max_retries: StrictInt = Field(200, ge=0, le=1_000_000)
    # rl strategy option hidden: LSTM width of the controller (default 64; ENAS used 64-100)
    max_controller_hidden: StrictInt = Field(1024, ge=1, le=65536)
    # description of a job: a paragraph, not a document
    max_description_chars: StrictInt = Field(4000, ge=0, le=10_000)


class Settings(BaseModel):
    """How one server runs. ``promptsearch serve --help`` sets these."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    workspace: Path
    max_jobs: int = Field(1, ge=1, le=64)  # jobs running at once; each is its own subprocess
    token: str | None = None  # PROMPTSEARCH_API_TOKEN
    job_defaults: dict[str, Any] = Field(default_factory=dict)  # --job-defaults FILE
    defaults_source: str | None = None
    limits: Limits = Field(default_factory=Limits)  # limits: in the job-defaults file, --limit NAME=VALUE
    python: str = sys.executable
    poll_s: float = 0.5  # how often the runner looks at its queue


def load_job_defaults(path: str | Path | None) -> dict[str, Any]:
    """The fields a job file sets (validated like any job file, ``${VAR}`` expanded), relative
    paths made absolute against the current directory; ``{}`` without a file."""
    return load_server_file(path)[0]


def load_server_file(path: str | Path | None, overrides: dict[str, Any] | None = None) -> tuple[dict[str, Any], Limits]:
    """(job defaults, limits) from a ``--job-defaults`` file: its job fields (see
    :func:`load_job_defaults`) and its ``limits:`` section, with ``overrides`` (``--limit``) over
    that. Errors (:class:`~promptsearch.jobs.JobError`) name the file, line and field."""
    from ..jobs import JobError, load_job_sections, resolve_paths
    from ..yamlio import format_validation

    limits_data: dict[str, Any] = {}
    lines: dict[tuple, int] = {}
    set_fields: dict[str, Any] = {}
    if path is not None:
        spec, sections, lines = load_job_sections(path, (LIMITS_SECTION,))  # JobError names the file, line and field
        limits_data = sections.get(LIMITS_SECTION) or {}
        if not isinstance(limits_data, dict):
            raise JobError(f"{path}:{lines.get((LIMITS_SECTION,), 1)}: {LIMITS_SECTION}: a mapping of limits "
                           f"({', '.join(Limits.model_fields)})")
        set_fields = spec.model_dump(mode="json", exclude_unset=True)
        resolved = resolve_paths(spec).model_dump(mode="json")
        for key in ("data_root", "space", "dataset"):
            if key in set_fields or (key == "data_root" and resolved.get("data_root")):
                set_fields[key] = resolved[key]
        if "backbone" in set_fields and set_fields["backbone"].get("weights"):
            set_fields["backbone"]["weights"] = resolved["backbone"]["weights"]
    try:
        limits = _LimitsSection.model_validate({LIMITS_SECTION: limits_data}).limits
    except ValidationError as e:
        raise JobError(format_validation(e, str(path), lines)) from None
    if overrides:
        try:
            limits = Limits.model_validate({**limits.model_dump(), **overrides})
        except ValidationError as e:
            raise JobError(format_validation(e, "--limit", {})) from None
    return set_fields, limits


class _LimitsSection(BaseModel):
    """The ``limits:`` section as a field, so errors read ``file:line: limits.max_trials: ...``."""

    model_config = ConfigDict(extra="forbid")

    limits: Limits = Field(default_factory=Limits)


def os_error_line(e: OSError) -> str:
    """``PATH: reason (errno N ENAME)`` for an OSError (``reason (errno N ENAME)`` without a path):
    the one line the CLI and the server print for a read-only or full workspace."""
    name = errno.errorcode.get(e.errno or 0, "")
    filename = e.filename or _path_in_traceback(e)
    where = f"{filename}: " if filename else ""
    if e.filename2:
        where = f"{e.filename} -> {e.filename2}: "
    code = f" (errno {e.errno} {name})" if e.errno else ""
    return f"{where}{e.strerror or e}{code}"


def _path_in_traceback(e: BaseException) -> str | None:
    """The file a failed write was writing, when the OSError does not say (``write()`` on a full
    disk names none): the ``path`` (or ``tmp``) local of the innermost frame that has one."""
    import os

    found, tb = None, e.__traceback__
    while tb is not None:
        local = tb.tb_frame.f_locals
        for key in ("path", "tmp", "filename", "file"):
            value = local.get(key)
            if isinstance(value, str | os.PathLike) and str(value):
                found = str(value)
                break
        tb = tb.tb_next
    return found


# a disk that is full, read-only, over quota, refused or failing: whatever raised it, the disk is the news
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG})


def storage_error(e: BaseException) -> OSError | None:
    """The storage OSError behind ``e`` (Ray Tune re-raises a callback's error as a TuneError whose
    cause is the OSError): the first in its cause/context chain with a file name, else the first."""
    found: list[OSError] = []
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in STORAGE_ERRNOS:
            found.append(e)
        e = e.__cause__ or e.__context__
    return next((x for x in found if x.filename), found[0] if found else None)
