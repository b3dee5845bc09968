"""A trial's training budget, apart from :mod:`promptsearch.trial` so that job files validate
without importing torch.

    python -c "from promptsearch.budget import Budget; print(Budget(epochs=3).model_dump())"
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Budget(BaseModel):
    """How much training one trial gets. Defaults suit a laptop CPU and MedMNIST at 28 px."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(5, ge=1, le=1000)
    batch_size: int = Field(32, ge=1, le=4096)
    max_train_samples: int | None = Field(None, ge=1)  # a seeded subset, for quick searches
    max_eval_samples: int | None = Field(None, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    threads: int | None = Field(None, ge=1)  # torch intra-op threads (None: leave as is)
    latency_repeats: int = Field(10, ge=1)  # batch-1 forward passes timed for latency_ms
    diverge_loss: float = Field(1e4, gt=0)  # a loss above this ends the trial as diverged
    device: str | None = None  # "cpu", "cuda", "cuda:1"; None: cuda when visible (a Ray GPU worker), else cpu
