"""The MLflow record of search jobs: the one thin adapter over MLflow.

    mlflow ui --backend-store-uri sqlite:///promptsearch-runs/mlflow/mlflow.db --workers 1

Layout (why: see README "MLflow layout"):

* **one experiment per search space** — ``promptsearch/<space name>@<space hash[:8]>``. Every run in
  it shares the same parameter columns (the space's genes), so the MLflow UI compares trials
  across jobs, strategies and seeds on that space directly; a changed space file gets a new hash
  and so a new experiment, and columns never mix;
* **a parent run per job** (run name = job id): the job file, the final Pareto front, the
  hypervolume curve (metric ``hypervolume`` by finished-trial count, plus JSON and PNG);
* **a nested child run per trial** (run name = trial id): params = the decoded architecture
  (``arch.*``) and the genome; metrics = per-epoch curves (step = epoch) and the final values
  (objectives, costs, ``test_*``); tags = ``job_id``, ``strategy``, ``space_hash``, ``status``
  (completed | failed | preempted), ``failure_reason``, ``node_id``; artifacts = ``trial.json``
  (its config) and, for trials on the final front, ``weights/<trial>.safetensors``.

Only the coordinator writes (workers never talk to MLflow), so SQLite sees one writer per job.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from .metrics import clean_metrics  # noqa: E402

TERMINAL = {"completed": "FINISHED", "stopped": "FINISHED", "failed": "FAILED", "preempted": "KILLED", "cancelled": "KILLED"}


def experiment_name(space_name: str, space_hash: str) -> str:
    return f"promptsearch/{space_name}@{space_hash[:8]}"


def _flat(prefix: str, data: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flat(f"{key}.", v))
        elif isinstance(v, list | tuple):
            out[key] = ",".join(map(str, v))
        else:
            out[key] = str(v)
    return out


def _finite(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numeric values (MLflow takes no NaN)."""
    return {k: v for k, v in clean_metrics(metrics).items() if v is not None}


class Tracker:
    """Writes one job's record to MLflow (``tracking_uri``: SQLite file, or any MLflow server)."""

    def __init__(self, tracking_uri: str, artifact_root: str | Path | None = None):
        for name in ("mlflow.store.db.utils", "alembic"):  # schema creation on a new store is not news
            logging.getLogger(name).setLevel(logging.WARNING)
        self.uri = tracking_uri
        self.artifact_root = Path(artifact_root) if artifact_root else None
        self.client = MlflowClient(tracking_uri)

    # --- experiment and job run ----------------------------------------------------------------------
    def experiment(self, space_name: str, space_hash: str) -> str:
        """The space's experiment id (created on first use; artifacts under ``artifact_root``)."""
        name = experiment_name(space_name, space_hash)
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        location = (self.artifact_root / f"{space_name}-{space_hash[:8]}").as_uri() if self.artifact_root else None
        try:
            return self.client.create_experiment(name, artifact_location=location,
                                                 tags={"space": space_name, "space_hash": space_hash})
        except Exception:  # another coordinator created it first
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def start_job(self, experiment_id: str, job_id: str, spec: Mapping[str, Any], space_hash: str,
                  run_id: str | None = None) -> str:
        """The job's parent run: created, or (on resume) set running again."""
        if run_id:
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        tags = {"job_id": job_id, "kind": "job", "strategy": spec["strategy"], "space_hash": space_hash,
                "dataset": spec["dataset"], "backbone": spec["backbone"]["name"], "status": "running"}
        run = self.client.create_run(experiment_id, run_name=job_id, tags=tags)
        params = _flat("", {k: v for k, v in spec.items() if k not in ("description",)})
        self._params(run.info.run_id, params)
        return run.info.run_id

    def job_progress(self, run_id: str, finished: int, hypervolume: float, counts: Mapping[str, int]) -> None:
        self.client.log_metric(run_id, "hypervolume", hypervolume, step=finished)
        for k, v in counts.items():
            self.client.log_metric(run_id, f"trials_{k}", float(v), step=finished)

    def end_job(self, run_id: str, status: str, message: str | None, job_file: Path | None,
                front: Sequence[Mapping[str, Any]], hv_curve: Sequence[Sequence[float]]) -> None:
        """Job file, final front and hypervolume curve on the parent run; then its status."""
        if job_file is not None and job_file.exists():
            self.client.log_artifact(run_id, str(job_file))
        self.client.log_dict(run_id, [dict(r) for r in front], "front.json")
        curve = [{"finished": int(n), "hypervolume": float(h)} for n, h in hv_curve]
        self.client.log_dict(run_id, curve, "hypervolume.json")
        if curve:
            self._plot_curve(run_id, curve)
        self.client.set_tag(run_id, "status", status)
        if message:
            self.client.set_tag(run_id, "message", message[:5000])
        self.client.set_terminated(run_id, status=TERMINAL.get(status, "KILLED"))

    def _plot_curve(self, run_id: str, curve: list[dict]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.step([c["finished"] for c in curve], [c["hypervolume"] for c in curve], where="post")
        ax.set_xlabel("finished trials")
        ax.set_ylabel("hypervolume (normalised)")
        fig.tight_layout()
        self.client.log_figure(run_id, fig, "hypervolume.png")
        plt.close(fig)

    # --- trial runs ---------------------------------------------------------------------------------
    def start_trial(self, experiment_id: str, parent_run_id: str, job_id: str, strategy: str, space_hash: str,
                    record: Mapping[str, Any], config: Mapping[str, Any]) -> str:
        """A child run: params = decoded architecture + genome; ``trial.json`` = its config."""
        cand = record["candidate"]
        tags = {"mlflow.parentRunId": parent_run_id, "job_id": job_id, "kind": "trial", "trial_id": record["trial_id"],
                "strategy": strategy, "space_hash": space_hash, "status": "running", "candidate": cand["key"]}
        if record.get("requeued_from"):
            tags["requeued_from"] = record["requeued_from"]
        run = self.client.create_run(experiment_id, run_name=record["trial_id"], tags=tags)
        params = _flat("arch.", cand["architecture"])
        params.update({"genome": json.dumps(cand["genome"]), "seed": str(record["seed"])})
        self._params(run.info.run_id, params)
        self.client.log_dict(run.info.run_id, dict(config), "trial.json")
        return run.info.run_id

    def open_trial_runs(self, experiment_id: str, job_id: str) -> dict[str, str]:
        """trial id -> run id of the job's trial runs still RUNNING (a coordinator killed between a
        trial's end in the job's log and its run's end leaves one)."""
        runs = self.client.search_runs([experiment_id], filter_string=f"tags.job_id = '{job_id}' and "
                                       "tags.kind = 'trial' and attributes.status = 'RUNNING'", max_results=10_000)
        return {r.data.tags["trial_id"]: r.info.run_id for r in runs if "trial_id" in r.data.tags}

    def log_epoch(self, run_id: str, row: Mapping[str, Any]) -> None:
        step = int(row.get("epoch", 0))
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in _finite(row).items() if k != "epoch"]
        if metrics:
            self.client.log_batch(run_id, metrics=metrics)

    def end_trial(self, run_id: str, record: Mapping[str, Any]) -> None:
        """Final metrics and test metrics, status and failure reason; the run's end status."""
        now = int(time.time() * 1000)
        metrics = _finite(record.get("metrics") or {})
        metrics.update({f"test_{k}": v for k, v in _finite(record.get("test_metrics") or {}).items()})
        for key in ("wall_time_s", "cpu_time_s", "image_passes", "epochs"):
            if record.get(key) is not None:
                metrics[key] = float(record[key])
        tags = {"status": record["status"], "node_id": record.get("node_id") or ""}
        if record.get("rung") is not None:  # stopped early by the job's scheduler, at this epoch
            tags["rung"] = str(record["rung"])
        if record.get("ranked_by"):  # ... ranked there on these objectives alone (informative_rho)
            tags["ranked_by"] = ",".join(record["ranked_by"])
        if record.get("repeat_of"):  # a re-evaluation of a front trial with another seed
            tags["repeat_of"] = str(record["repeat_of"])
        if record.get("reason"):
            tags["failure_reason"] = str(record["reason"])[:5000]
        self.client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                              tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.set_terminated(run_id, status=TERMINAL.get(record["status"], "FINISHED"))

    def set_reason(self, run_id: str, reason: str) -> None:
        self.client.set_tag(run_id, "failure_reason", reason[:5000])

    def log_weights(self, run_id: str, path: str | Path) -> None:
        """A front trial's prompt + head weights (safetensors) as an artifact of its run."""
        self.client.log_artifact(run_id, str(path), artifact_path="weights")

    def _params(self, run_id: str, params: Mapping[str, str]) -> None:
        items = [Param(k[:250], v[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(run_id, params=items[i:i + 100])
