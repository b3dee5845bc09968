"""A trial's result, or a job's picked trial, as a bundle.

    promptsearch export JOB --pick knee --out exported/ --workspace promptsearch-runs

:func:`export_job` reads the job only through :func:`promptsearch.search.workspace.as_workspace`
(``resolve``, ``read_job``, ``store(job).read_trials()``): never the coordinator or the API.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..backbones import BackboneSpec
from ..space import SearchSpace, SpaceFile
from .bundle import write_bundle
from .schema import ExportError, NothingToExport, UnknownTrial


def dataset_record(data: Any) -> dict[str, Any]:
    """The dataset fields a bundle records, from a loaded :class:`~promptsearch.data.Dataset`."""
    return {"name": data.name, "source": Path(data.source).name if data.source else "", "task": data.task,
            "splits": {"train": len(data.train), "val": len(data.val), "test": len(data.test)}, **data.extra}


def write_trial_bundle(out: str | Path, *, candidate: Any, result: Any, data: Any, backbone: BackboneSpec,
                       weights: str | Path | Mapping[str, torch.Tensor], budget: Any = None,
                       objectives: Sequence[Any] = (), origin: Mapping[str, Any] | None = None,
                       zip_path: str | Path | None = None, compress: str = "none", examples: int = 0) -> Path:
    """:func:`write_bundle` from a ``Candidate``, its ``TrialResult`` and the loaded ``Dataset``
    (``compress``, ``examples``: as :func:`write_bundle`, evaluated and explained on ``data``)."""
    if result.status != "completed":
        raise ExportError(f"trial {result.status}, not completed: nothing to export ({result.reason})")
    budget_d = budget.model_dump() if hasattr(budget, "model_dump") else dict(budget or {})
    objs = [o.model_dump() if hasattr(o, "model_dump") else ({"name": o} if isinstance(o, str) else dict(o))
            for o in objectives]
    return write_bundle(out, space=candidate.space, genome=candidate.genome, weights=weights, backbone=backbone,
                        task=data.task, classes=data.classes, input_channels=data.channels,
                        input_size=int(data.train.images.shape[-1]), metrics=result.metrics,
                        test_metrics=result.test_metrics, dataset=dataset_record(data), budget=budget_d,
                        seed=result.seed, objectives=objs,
                        origin={"status": result.status, "epochs": result.epochs, "steps": result.steps,
                                "wall_time_s": round(result.wall_time_s, 3), **(origin or {})},
                        zip_path=zip_path, compress=compress, data=data, examples=examples)


# --- a job's trial -> a bundle ------------------------------------------------------------------
def _dataset_meta(dataset: str, data_root: str | None, load: bool = False) -> dict[str, Any]:
    """Task, classes, channels and stored size of a job's dataset: MedMNIST's catalogue when it is
    a MedMNIST name (no arrays loaded), else the dataset itself (also with ``load``: then ``data``
    is the loaded :class:`~promptsearch.data.Dataset`)."""
    from ..data import medmnist_meta

    meta = medmnist_meta(dataset)
    if meta is not None and not load:
        return {"task": meta["task"], "classes": meta["classes"], "channels": meta["channels"], "size": meta["size"],
                "record": {"name": meta["name"], "source": f"{meta['name']}.npz (MedMNIST v2, 28 px)",
                           "task": meta["task"], "splits": meta["splits"]}}
    from ..data import load_dataset

    data = load_dataset(dataset, root=data_root)
    record = dataset_record(data)
    if meta is not None:  # MedMNIST: the catalogue's own record, as an export without data writes it
        record = {"name": meta["name"], "source": f"{meta['name']}.npz (MedMNIST v2, 28 px)", "task": meta["task"],
                  "splits": meta["splits"]}
    return {"task": data.task, "classes": data.classes, "channels": data.channels,
            "size": int(data.train.images.shape[-1]), "record": record, "data": data}


def export_job(workspace: Any, job_id: str, pick: str = "knee", out: str | Path = "exported",
               zip_path: str | Path | None = None, compress: str = "none",
               examples: int = 0) -> tuple[Path, dict[str, Any]]:
    """Bundle one completed trial of a job: ``pick`` is ``knee``, ``best:<objective>[ where ...]``
    (:func:`promptsearch.objectives.pick`) or ``trial=<trial id>``. Returns (folder, info).
    ``compress`` (a :mod:`promptsearch.compress` spec) and ``examples`` (explained validation
    images) load the job's dataset: the compressed model is evaluated on the validation and test
    splits the trial used (CPU, one thread), see :func:`write_bundle`."""
    from ..compress import CompressError, parse_spec
    from ..data import DataError
    from ..jobs import JobError, JobSpec
    from ..objectives import ObjectiveError
    from ..objectives import pick as pick_trial
    from ..search.records import ranked
    from ..search.workspace import as_workspace

    try:
        compressed = bool(parse_spec(compress))
    except CompressError as e:
        raise ExportError(f"--compress {compress}: {e}") from None
    ws = as_workspace(workspace)
    try:
        job_id = ws.resolve(job_id)
    except JobError as e:
        raise ExportError(str(e)) from None
    job = ws.read_job(job_id)
    spec = JobSpec.model_validate(job["spec"])
    objectives = spec.objective_list
    trials = ws.store(job_id).read_trials()  # the job's records (its event log, or an old state.json)
    if not any(t["status"] == "completed" for t in trials):
        raise NothingToExport(f"job {job_id} has no finished trial to export yet "
                          f"({len(trials)} trial(s): {', '.join(sorted({t['status'] for t in trials})) or 'none started'})")
    if pick.startswith("trial="):
        wanted = pick.removeprefix("trial=").strip()
        hits = [t for t in trials if t["trial_id"] == wanted]
        if not hits:
            raise UnknownTrial(f"job {job_id} has no trial {wanted!r}")
        trial = hits[0]
        if trial["status"] not in ("completed", "stopped"):  # a stopped trial: its weights at its rung
            raise NothingToExport(f"trial {wanted} of job {job_id} is {trial['status']}, not completed: nothing to export")
    else:
        try:  # over the trials that may be on the front, ranked by their seeds' mean where re-evaluated
            trial = trials[pick_trial(ranked(trials, spec.front_stopped), objectives, pick)]
        except ObjectiveError as e:
            raise ExportError(f"job {job_id}: {e}") from None
    weights = trial.get("weights")
    if not weights or not Path(weights).exists():
        raise NothingToExport(f"trial {trial['trial_id']} of job {job_id} has no saved prompt weights")
    space = SearchSpace(SpaceFile.model_validate(job["space"]), f"job {job_id}")
    skipped = None
    try:
        meta = _dataset_meta(spec.dataset, spec.data_root, load=compressed or examples > 0)
    except DataError as e:
        if compressed:  # the compressed model must be evaluated: no data, no compressed export
            raise ExportError(f"--compress needs the job's dataset to evaluate the compressed model: {e}") from None
        skipped = f"no example maps: {e}"  # examples are a bonus: the bundle is written without them
        meta, examples = _dataset_meta(spec.dataset, spec.data_root), 0
    clean = lambda m: {k: v for k, v in (m or {}).items() if v is not None}  # noqa: E731
    origin = {"job_id": job_id, "trial_id": trial["trial_id"], "pick": pick, "strategy": spec.strategy,
              "status": trial["status"], "epochs": len(trial.get("history") or []), "rung": trial.get("rung"),
              "wall_time_s": trial.get("wall_time_s"), "mlflow_run_id": trial.get("mlflow_run_id")}
    folder = write_bundle(out, space=space, genome=trial["candidate"]["genome"], weights=weights,
                          backbone=spec.backbone_for(trial["candidate"]["architecture"].get("backbone")),
                          task=meta["task"], classes=meta["classes"],
                          input_channels=meta["channels"], input_size=meta["size"], metrics=clean(trial["metrics"]),
                          test_metrics=clean(trial.get("test_metrics")), dataset=meta["record"],
                          budget=spec.budget.model_dump(mode="json"), seed=int(trial.get("seed", spec.seed)),
                          objectives=[o.model_dump(mode="json") for o in objectives], origin=origin, zip_path=zip_path,
                          compress=compress, data=meta.get("data"), examples=examples, repeats=trial.get("repeats"))
    info = {"trial_id": trial["trial_id"], "job_id": job_id, "pick": pick, "folder": str(folder),
            "zip": str(zip_path) if zip_path else None, "architecture": trial["candidate"]["architecture"],
            "metrics": clean(trial["metrics"])}
    if skipped:
        info["examples_skipped"] = skipped
    if compressed or examples > 0:
        from .bundle import load_config

        cfg = load_config(folder)
        if cfg.compression:
            info["compression"] = cfg.compression
        info["examples"] = len(cfg.examples)
    return folder, info
