"""The Ray Tune trainable: one trial of a search job, on whichever node Ray places it.

    python -c "from promptsearch.dispatch.trainable import TrialJob; print(TrialJob.model_json_schema()['required'])"

The coordinator sends the job once (``tune.with_parameters``: space, dataset, backbone, budget,
where weights go) and each trial's config (``trial_id``, ``genome``, ``seed``). The trainable
rebuilds the candidate, calls :func:`promptsearch.trial.run_trial`, reports every epoch with
``tune.report`` and finally the whole ``TrialResult`` as JSON. It never talks to MLflow; the
coordinator records everything. With ``reuse_actors`` one worker process runs many trials, so the
dataset and the frozen backbone are loaded once per process (``_CACHE``).

Paths in the job (data root, backbone weights, weights directory) must exist on every node: one
machine, a shared file system, or the same mounts in every container (workers/README.md).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# Test-only fault injection (set by the coordinator from $PROMPTSEARCH_FAULTS): "raise" makes the
# trainable raise before training, "exit" kills the worker process after its first epoch. Faults a
# real trial cannot be made to produce on demand; everything else in the tests is real.
FAULTS = ("raise", "exit")

_CACHE: dict[tuple, Any] = {}


def parse_faults(text: str | None = None) -> dict[str, str]:
    """Test-only fault injection from ``$PROMPTSEARCH_FAULTS`` (``"t0002=raise,t0004=exit"``)."""
    from ..jobs import JobError

    text = os.environ.get("PROMPTSEARCH_FAULTS", "") if text is None else text
    out = {}
    for item in filter(None, text.split(",")):
        trial, _, fault = item.partition("=")
        if fault not in FAULTS:
            raise JobError(f"PROMPTSEARCH_FAULTS: {item!r}: fault must be one of {FAULTS}")
        out[trial.strip()] = fault
    return out


class TrialJob(BaseModel):
    """What every trial of a job shares (sent once per job through Ray's object store)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    job_id: str
    space: dict[str, Any]  # the validated SpaceFile (with the job's pins), not a path
    dataset: str
    data_root: str | None = None
    backbone: dict[str, Any]  # BackboneSpec fields
    backbones: dict[str, dict[str, Any]] = Field(default_factory=dict)  # the space's backbone decision -> fields
    budget: dict[str, Any]  # Budget fields
    weights_dir: str  # <workspace>/jobs/<job>/weights
    faults: dict[str, str] = Field(default_factory=dict)  # trial_id -> "raise" | "exit" (tests only)
    rungs: list[int] = Field(default_factory=list)  # epochs at which the job's scheduler may stop a trial


def _cached(key: tuple, make):
    if key not in _CACHE:
        _CACHE[key] = make()
    return _CACHE[key]


def _node() -> dict[str, Any]:
    import ray

    return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}


def _release() -> None:
    """Hand a finished trial's memory back: its model, optimizer and activations are garbage now
    (cycles through hooks need the collector), and glibc keeps freed heap unless asked to return it."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def train_trial(config: dict[str, Any], job: dict[str, Any]) -> None:
    """Run one trial (Ray Tune function trainable; ``job`` comes from ``tune.with_parameters``)."""
    import torch
    from ray import tune

    from ..backbones import BackboneSpec, build_backbone
    from ..budget import Budget
    from ..data import load_dataset
    from ..space import SearchSpace, SpaceFile
    from ..trial import run_trial

    spec = TrialJob.model_validate(job)
    trial_id = config["trial_id"]
    fault = spec.faults.get(trial_id)
    if fault == "raise":
        raise RuntimeError(f"injected fault: trial {trial_id} raises (PROMPTSEARCH_FAULTS)")
    space = _cached(("space", json.dumps(spec.space, sort_keys=True)),
                    lambda: SearchSpace(SpaceFile.model_validate(spec.space), f"job {spec.job_id}"))
    candidate = space.candidate(config["genome"])
    data = _cached(("data", spec.dataset, spec.data_root), lambda: load_dataset(spec.dataset, root=spec.data_root))
    alias = candidate.arch.backbone  # the space's backbone decision ("": the job's one backbone)
    backbone_spec = BackboneSpec(**(spec.backbones[alias] if alias else spec.backbone))
    # a random-init backbone is the trial seed's, as run_trial and load_exported build it (seeded,
    # then built): one cached per seed; trained weights are the same in every trial
    init_seed = None if (backbone_spec.weights or backbone_spec.pretrained) else int(config["seed"])

    def make_backbone():
        if init_seed is not None:
            torch.manual_seed(init_seed)
        return build_backbone(backbone_spec)

    backbone = _cached(("backbone", json.dumps(backbone_spec.to_json(), sort_keys=True), init_seed), make_backbone)
    node = _node()

    def on_epoch(epoch: int, row: dict[str, float], **extra: Any) -> None:
        node["threads"] = torch.get_num_threads()  # inside run_trial's thread scope: what the trial runs with
        tune.report({**row, "history_row": json.dumps(row), **extra, **node})
        if fault == "exit":
            os._exit(13)  # the worker process dies mid-trial, as an OOM kill or a segfault would

    weights = os.path.join(spec.weights_dir, f"{trial_id}.safetensors")
    budget = Budget(**spec.budget)
    cpu0 = time.process_time()

    def on_rung(epoch: int, row: dict[str, float], result) -> None:
        # the trial as if it ended here (weights written): if the scheduler stops it, Tune hands this
        # last report to the searcher's on_trial_complete, and the loop records it stopped
        on_epoch(epoch, row, rung_result=json.dumps(result.model_dump()), weights=weights,
                 cpu_time_s=time.process_time() - cpu0)

    result = run_trial(candidate, data, backbone, budget, seed=int(config["seed"]), on_epoch=on_epoch,
                       weights_out=weights, rungs=spec.rungs, on_rung=on_rung)
    saved = weights if result.status == "completed" and os.path.exists(weights) else ""
    tune.report({"trial_result": json.dumps(result.model_dump()),  # json keeps NaN; pydantic would null it
                 "weights": saved, "cpu_time_s": time.process_time() - cpu0, **node})
    del result
    _release()  # the next trial in this process starts from the cached data and backbone only
