"""A job's Pareto front, kept as trials arrive: the non-dominated set and its hypervolume.

    python -c "from promptsearch.search.front import Front; f = Front(); print(f.add({'trial_id': 't1', 'index': 1, 'status': 'completed', 'metrics': {'auc': .8, 'worst_class_recall': .5, 'prompt_params': 100, 'latency_ms': 2}}), f.hypervolume)"

A finished trial is compared with the current front only (``k`` members, ``m`` objectives:
O(k·m)); a dominated trial is never looked at again. The hypervolume
(:func:`promptsearch.objectives.hypervolume`, moocore's exact algorithm on the normalised cube)
is recomputed only when the front changed, and only over the front — the points a dominated
trial would add are inside it already, so the value equals the hypervolume of every trial.

A trial re-evaluated over several seeds (``front_repeats``) is ranked by its mean; a stopped trial
takes part only when the job asks (``scheduler.front_includes_stopped``).

Dominance is the one :func:`promptsearch.objectives.pareto_front` uses (raw values, each
objective's direction; equal points are both on the front), so ``Front`` and a from-scratch
``pareto_front`` always agree (``tests/test_state.py`` checks it on random data with ties).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import moocore
import numpy as np

from ..objectives import DEFAULT_OBJECTIVES, Objective, hypervolume, metrics_row
from .records import effective_metrics, front_status


class Front:
    """The non-dominated usable trials of a job (records as ``job_trials`` returns them)."""

    def __init__(self, objectives: Sequence[Objective] = DEFAULT_OBJECTIVES, include_stopped: bool = False):
        self.objectives = tuple(objectives)
        self.include_stopped = include_stopped  # the job's scheduler.front_includes_stopped
        self._sign = np.array([1.0 if o.maximise else -1.0 for o in self.objectives])  # max-form
        self._ids: list[str] = []
        self._rows = np.zeros((0, len(self.objectives)))  # (k, m) raw values
        self._records: dict[str, Mapping[str, Any]] = {}
        self._pending: list[tuple[Mapping[str, Any], np.ndarray]] = []  # offered, not sorted in yet
        self.hypervolume = 0.0
        self.recomputes = 0  # hypervolume computations so far (the benchmark reports it)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, trial_id: object) -> bool:
        return trial_id in self._records

    def add(self, record: Mapping[str, Any], recompute: bool = True) -> bool:
        """Offer one finished trial; True when it joined the front (which then changed).
        ``recompute=False`` defers the hypervolume to :meth:`refresh` (a batch of adds)."""
        self._flush()
        row = self.row(record)  # (m,) raw, None: failed or unusable
        if row is None:
            return False
        p = row * self._sign
        if len(self._ids):
            f = self._rows * self._sign  # (k, m), larger is better
            if ((f >= p).all(axis=1) & (f > p).any(axis=1)).any():
                return False  # dominated: never part of the front again
            keep = ~((p >= f).all(axis=1) & (p > f).any(axis=1))  # members the newcomer dominates go
            if not keep.all():
                for i in np.flatnonzero(~keep):
                    del self._records[self._ids[i]]
                self._ids = [t for t, k in zip(self._ids, keep) if k]
                self._rows = self._rows[keep]
        self._ids.append(record["trial_id"])
        self._rows = np.vstack([self._rows, row[None, :]])
        self._records[record["trial_id"]] = record
        if recompute:
            self.refresh()
        return True

    def extend(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Offer many trials, then compute the hypervolume once."""
        for r in records:
            self.offer(r)
        self.refresh()

    def offer(self, record: Mapping[str, Any]) -> None:
        """Offer a trial to be sorted in later, in a batch (a resume replaying thousands): one
        vectorised non-dominance pass (moocore) per ``BATCH`` offers instead of one per trial."""
        row = self.row(record)
        if row is not None:
            self._pending.append((record, row))
            if len(self._pending) >= self.BATCH:
                self._flush()

    BATCH = 2048

    def row(self, record: Mapping[str, Any]) -> np.ndarray | None:
        """A trial's raw objective values ``(m,)`` as the front ranks them (its seeds' mean once
        re-evaluated), or None when it may not be on the front (failed, unusable, stopped unless
        the job asks, a re-evaluation trial)."""
        if not front_status(record, self.include_stopped):
            return None
        return metrics_row(effective_metrics(record), self.objectives)

    def _flush(self) -> None:
        if not self._pending:
            return
        records = [self._records[t] for t in self._ids] + [r for r, _ in self._pending]
        rows = np.vstack([self._rows, np.array([row for _, row in self._pending])])
        self._pending = []
        keep = moocore.is_nondominated(rows * self._sign, maximise=True, keep_weakly=True)  # ties stay, as in pareto_rank
        self._ids = [r["trial_id"] for r, k in zip(records, keep) if k]
        self._rows = rows[keep]
        self._records = {r["trial_id"]: r for r, k in zip(records, keep) if k}

    def refresh(self) -> float:
        self._flush()
        self.hypervolume = hypervolume(self._rows, self.objectives) if len(self._ids) else 0.0
        self.recomputes += 1
        return self.hypervolume

    def records(self) -> list[Mapping[str, Any]]:
        """The front's trial records in start order (``index``), as ``job_front`` returns them."""
        return sorted(self._records.values(), key=lambda r: r.get("index", 0))
