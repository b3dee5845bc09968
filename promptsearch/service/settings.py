"""How one server runs: its settings, and the job defaults that fill what a request leaves out.

    promptsearch serve --help
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

TOKEN_ENV = "PROMPTSEARCH_API_TOKEN"
# request fields that would name files or remote services: only the server's defaults set them
SERVER_FIELDS = ("data_root", "tracking_uri", "ray_address")


class Settings(BaseModel):
    """How one server runs. ``promptsearch serve --help`` sets these."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    workspace: Path
    max_jobs: int = Field(1, ge=1, le=64)  # jobs running at once; each is its own subprocess
    token: str | None = None  # PROMPTSEARCH_API_TOKEN
    job_defaults: dict[str, Any] = Field(default_factory=dict)  # --job-defaults FILE
    defaults_source: str | None = None
    python: str = sys.executable
    poll_s: float = 0.5  # how often the runner looks at its queue


def load_job_defaults(path: str | Path | None) -> dict[str, Any]:
    """The fields a job file sets (validated like any job file, ``${VAR}`` expanded), relative
    paths made absolute against the current directory; ``{}`` without a file."""
    if path is None:
        return {}
    from ..jobs import load_job, resolve_paths

    spec = load_job(path)  # JobError names the file, line and field
    set_fields = spec.model_dump(mode="json", exclude_unset=True)
    resolved = resolve_paths(spec).model_dump(mode="json")
    for key in ("data_root", "space", "dataset"):
        if key in set_fields or (key == "data_root" and resolved.get("data_root")):
            set_fields[key] = resolved[key]
    if "backbone" in set_fields and set_fields["backbone"].get("weights"):
        set_fields["backbone"]["weights"] = resolved["backbone"]["weights"]
    return set_fields
