"""A trial's training budget, apart from :mod:`promptsearch.trial` so that job files validate
without importing torch.

    python -c "from promptsearch.budget import Budget; print(Budget(epochs=3).model_dump())"

The bounds here hold for every job (a job file, a request); a server sets tighter, configurable
ones (``limits:`` in ``promptsearch serve --job-defaults FILE``).
"""

from __future__ import annotations

import numbers
import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

DEVICE_RE = re.compile(r"^(cpu|cuda(:[0-9]{1,2})?)$")


def _count(v: Any) -> Any:
    """Counts are whole numbers: ``true`` is not 1, ``"3"`` and ``3.0`` are not 3."""
    if v is None:
        return v
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:40] + "..."
        raise ValueError(f"must be a whole number, got {type(v).__name__} {shown}")
    return int(v)


Count = Annotated[int, BeforeValidator(_count)]  # an int that is not a bool, a float or a string


class Budget(BaseModel):
    """How much training one trial gets. Defaults suit a laptop CPU and MedMNIST at 28 px."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: Count = Field(5, ge=1, le=1000)
    batch_size: Count = Field(32, ge=1, le=4096)
    max_train_samples: Count | None = Field(None, ge=1, le=10**9)  # a seeded subset, for quick searches
    max_eval_samples: Count | None = Field(None, ge=1, le=10**9)
    eval_batch_size: Count = Field(256, ge=1, le=65536)
    threads: Count | None = Field(None, ge=1, le=1024)  # torch intra-op threads (None: leave as is)
    latency_repeats: Count = Field(10, ge=1, le=100_000)  # batch-1 forward passes timed for latency_ms
    diverge_loss: float = Field(1e4, gt=0, allow_inf_nan=False)  # a loss above this ends the trial as diverged
    device: str | None = None  # "cpu", "cuda", "cuda:1"; None: cuda when visible (a Ray GPU worker), else cpu
    # how exports store the prompts, and so what the prompt_bytes metric measures (svd:RANK, int8, svd:R+int8)
    compress: str = Field("none", pattern=r"^(none|(svd:[1-9][0-9]*)(\+int8(:(channel|tensor))?)?|int8(:(channel|tensor))?)$")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str | None) -> str | None:
        if v is not None and not DEVICE_RE.match(v):
            shown = repr(v) if len(v) <= 40 else repr(v[:40]) + "..."
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {shown}")
        return v
