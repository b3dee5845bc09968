"""Workspaces written by earlier releases still list, resume and export.

    PROMPTSEARCH_DATA_ROOT=../shared/data/medmnist python -m pytest tests/test_migration.py -q

``tests/fixtures/old_workspace`` was written by the code before the package split (commit
ef4822d): a 3-trial job (MobileNetV2 pixel prompts, 32 px, 1 epoch) cancelled after its first
trial, with its MLflow store. Absolute paths in it are placeholders this test fills in.
"""

from __future__ import annotations

import pytest
from conftest import copy_old_workspace

from promptsearch.service.jobs import Workspace, job_trials, list_jobs, run_job


def test_old_workspace_lists_and_reads(tmp_path, data_root, mobilenet_weights):
    ws = Workspace(copy_old_workspace(tmp_path, data_root, mobilenet_weights)[0])
    (job,) = list_jobs(ws)
    assert job["status"] == "cancelled" and job["trials"]["completed"] == 1 and job["trials"]["preempted"] == 1
    assert job["space"] == "pixel" and job["best"]["auc"] == job_trials(ws, job["job_id"])[0]["metrics"]["auc"]


@pytest.mark.slow
def test_old_workspace_resumes_to_the_exact_count_and_exports(tmp_path, data_root, mobilenet_weights):
    from promptsearch.export import export_job, load_exported

    ws = Workspace(copy_old_workspace(tmp_path, data_root, mobilenet_weights)[0])
    (job,) = list_jobs(ws)
    job_id = job["job_id"]
    parent = job["mlflow"]["parent_run_id"]
    before = {t["trial_id"]: t for t in job_trials(ws, job_id)}
    status = run_job(ws, job_id, resume_cancelled=True)
    assert status["status"] == "completed", status["message"]
    assert status["trials"]["finished"] == 3 and status["attempts"] == 2
    assert status["mlflow"]["parent_run_id"] == parent and not status["mlflow"].get("errors")  # same MLflow record
    after = {t["trial_id"]: t for t in job_trials(ws, job_id)}
    assert after["t0001"] == before["t0001"]  # the finished trial is kept as it was
    assert [t["requeued_from"] for t in after.values() if t["requeued_from"]] == ["t0002"]
    finished = [t for t in after.values() if t["status"] in ("completed", "failed")]
    assert len(finished) == 3 and len({t["candidate"]["key"] for t in finished}) == 3
    folder, info = export_job(ws, job_id, "trial=t0001", tmp_path / "bundle")
    model = load_exported(folder)
    assert model.bundle.origin["trial_id"] == "t0001" and info["job_id"] == job_id
