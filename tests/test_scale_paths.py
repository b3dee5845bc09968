"""The light paths of #12: a CLI that imports only the command it runs, a corrupt job through the
REST API and ``resume``, paged trials that read only what the log gained, a preflight in a child
process, MedMNIST read without the ``medmnist`` package, and a Ray without prestarted workers.

    PROMPTSEARCH_DATA_ROOT=../shared/data/medmnist python -m pytest tests/test_scale_paths.py -q

The job here is the real search loop driven by hand (ask, epoch, tell), as in tests/test_state.py,
with results made up for the purpose; the REST API is the real app (FastAPI's TestClient).
"""

from __future__ import annotations

import json
import logging
import os
import pkgutil
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from promptsearch import commands
from promptsearch.cli import COMMANDS, app
from promptsearch.jobs import job_from_dict, resolve_paths
from promptsearch.results import TrialResult
from promptsearch.search.loop import SearchLoop
from promptsearch.search.workspace import Workspace
from promptsearch.service import jobs
from promptsearch.service.app import create_app
from promptsearch.service.settings import Settings
from promptsearch.service.views import trial_views

REPO = Path(__file__).resolve().parent.parent


def _spec(data_root, weights, **kw):
    d = dict(name="sc", space="pixel", dataset="breastmnist", data_root=str(data_root),
             backbone={"name": "torchvision:mobilenet_v2", "image_size": 32, "weights": str(weights)},
             budget={"epochs": 2}, strategy="random", trials=60, concurrency=2, seed=0)
    d.update(kw)
    return job_from_dict(d)


def _drive(loop: SearchLoop, n: int, r: random.Random) -> None:
    """``n`` trials through ask, two epochs and tell (every 7th fails), made-up metrics."""
    for i in range(n):
        tid = loop.ask(f"tune-{r.random()}")["trial_id"]
        for e in (1, 2):
            loop.epoch(tid, {"epoch": float(e), "train_loss": 1.0 / e, "val_auc": 0.5 + 0.1 * e}, {"node_id": "n1", "pid": 7})
        cand = loop.view.trials[tid]["candidate"]
        if i % 7 == 3:
            loop.tell(tid, TrialResult.failed(cand, "TrialFailed: made-up failure"))
        else:
            metrics = {"auc": round(r.random(), 2), "worst_class_recall": round(r.random(), 2),
                       "prompt_params": float(10 ** r.randint(1, 5)), "latency_ms": round(0.2 + 5 * r.random(), 1)}
            loop.tell(tid, TrialResult(candidate=cand, status="completed", metrics=metrics, test_metrics={"auc": 0.6}))


@pytest.fixture(scope="module")
def template(tmp_path_factory, data_root, mobilenet_weights) -> tuple[Path, str]:
    """A workspace with one job: 30 trials told (some failed), one in flight, its coordinator gone."""
    root = tmp_path_factory.mktemp("template")
    ws = Workspace(root)
    job_id = jobs.submit(ws, _spec(data_root, mobilenet_weights))
    loop = SearchLoop(ws, job_id, tracking=False)
    _drive(loop, 30, random.Random(0))
    loop.ask("tune-running")
    loop.writer.close()
    return root, job_id


@pytest.fixture
def job(template, tmp_path) -> tuple[Workspace, str]:
    root, job_id = template
    shutil.copytree(root, tmp_path / "ws")
    return Workspace(tmp_path / "ws"), job_id


def _client(ws: Workspace) -> tuple[TestClient, object]:
    fastapi_app = create_app(Settings(workspace=ws.root), start_runner=False)
    return TestClient(fastapi_app, raise_server_exceptions=False), fastapi_app.state.runner


def _loaded(code: str, *args: str, modules=("torch", "ray", "mlflow", "fastapi", "medmnist")) -> tuple[list[str], str]:
    """Run ``code`` in a fresh interpreter; (the ``modules`` it imported, its stdout)."""
    probe = code + f"\nimport sys\nprint(__import__('json').dumps([m for m in {list(modules)!r} if m in sys.modules]))"
    res = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, cwd=REPO, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr[-3000:]
    *out, last = res.stdout.strip().splitlines()
    return json.loads(last), "\n".join(out)


# --- the CLI: one command's module, nothing heavy -----------------------------------------------------------
CLI = ("import runpy, sys\nsys.argv = ['promptsearch', *sys.argv[1:]]\n"
       "try:\n    runpy.run_module('promptsearch.cli', run_name='__main__')\nexcept SystemExit as e:\n"
       "    assert not e.code, e.code\n")


def test_jobs_and_pareto_import_no_torch_ray_mlflow_or_other_commands(job):
    ws, job_id = job
    loaded, out = _loaded(CLI, "jobs", "--workspace", str(ws.root),
                          modules=("torch", "ray", "mlflow", "fastapi", "medmnist", "promptsearch.commands.serve",
                                   "promptsearch.commands.trial", "promptsearch.preflight", "promptsearch.data"))
    assert loaded == [] and job_id in out and "30/60" in out
    loaded, out = _loaded(CLI, "pareto", job_id, "--workspace", str(ws.root))
    assert loaded == [] and f"Pareto front of {job_id}" in out


def test_every_command_is_listed_with_its_help_and_the_table_matches_the_modules():
    registered = {}
    for mod in pkgutil.iter_modules(commands.__path__):
        sub = typer.Typer()
        __import__(f"promptsearch.commands.{mod.name}", fromlist=["register"]).register(sub)
        names = [c.name for c in sub.registered_commands] + [g.name for g in sub.registered_groups]
        registered.update({name: mod.name for name in names})
    assert COMMANDS == registered  # every command's module named, none that does not register it
    r = CliRunner().invoke(app, ["--help"])
    assert r.exit_code == 0, r.output
    for name in COMMANDS:
        assert f" {name} " in r.output, name
    assert "List the workspace's jobs with status and progress." in r.output  # help text from the module itself
    r = CliRunner().invoke(app, ["space", "--help"])
    assert r.exit_code == 0 and "validate" in r.output


# --- a corrupt job through the REST API and resume --------------------------------------------------------------
def _damage_line(ws: Workspace, job_id: str, n: int = 6) -> None:
    """Line ``n`` of the log an unknown status, same length: only a reader of the whole log sees it."""
    d = ws.job_dir(job_id)
    lines = (d / "events.jsonl").read_text().splitlines(keepends=True)
    bad = json.dumps({"seq": json.loads(lines[n - 1])["seq"], "t": 0, "e": "job", "set": {"status": "exploded"}})
    lines[n - 1] = bad + " " * (len(lines[n - 1]) - len(bad) - 1) + "\n"
    (d / "events.jsonl").write_text("".join(lines))


@pytest.mark.parametrize("damage", ["a line inside the log", "the log overwritten"])
def test_a_corrupt_job_is_a_409_naming_the_file_and_resume_refuses_it(job, damage):
    ws, job_id = job
    client, runner = _client(ws)
    if damage == "a line inside the log":
        _damage_line(ws, job_id)
        reason = "line 6: unknown job status 'exploded'"
    else:
        log = ws.job_dir(job_id) / "events.jsonl"  # longer than its mirror: garbage, not a cut
        log.write_bytes(os.urandom((ws.job_dir(job_id) / "events.bak.jsonl").stat().st_size + 4096))
        reason = "line 1"
    for path, params in ((f"/jobs/{job_id}/trials", {}), (f"/jobs/{job_id}/trials", {"format": "csv"}),
                         (f"/jobs/{job_id}/export", {}), (f"/jobs/{job_id}/resume", None)):
        r = client.post(path) if params is None else client.get(path, params=params)
        assert r.status_code == 409, (path, params, r.status_code, r.text)
        body = r.json()
        assert body["corrupt"]["file"] == "events.jsonl" and reason in body["corrupt"]["reason"], body
        assert "events.jsonl" in body["detail"] and reason in body["detail"] and f"promptsearch repair {job_id}" in body["detail"]
    assert runner.queued() == []  # resume refused: nothing queued
    r = CliRunner().invoke(app, ["resume", job_id, "--workspace", str(ws.root)])
    assert r.exit_code == 2 and "events.jsonl" in r.output and f"promptsearch repair {job_id}" in r.output, r.output
    assert "Traceback" not in r.output
    assert CliRunner().invoke(app, ["repair", job_id, "--workspace", str(ws.root)]).exit_code == 0
    r = client.get(f"/jobs/{job_id}/trials")
    assert r.status_code == 200 and r.json()["total"] == 31


# --- paged trials --------------------------------------------------------------------------------------------
def _all_views(ws: Workspace, job_id: str) -> list[dict]:
    from promptsearch.service.views import job_objectives

    return [v.model_dump(mode="json") for v in trial_views(jobs.job_trials(ws, job_id), job_objectives(ws.root, job_id))]


def _pages(client, job_id: str, size: int, status: str | None = None) -> tuple[int, list[dict]]:
    got, offset, total = [], 0, None
    while total is None or offset < total:
        params = {"offset": offset, "limit": size, **({"status": status} if status else {})}
        page = client.get(f"/jobs/{job_id}/trials", params=params).json()
        assert page["offset"] == offset and page["limit"] == size and len(page["trials"]) <= size
        total = page["total"]
        got += page["trials"]
        offset += size
    return total, got


def test_pages_are_the_whole_listing_and_follow_the_log(job, data_root, mobilenet_weights):
    ws, job_id = job
    client, _ = _client(ws)
    default = client.get(f"/jobs/{job_id}/trials").json()  # the shape the dashboard reads: unchanged
    assert set(default) == {"total", "offset", "limit", "trials"} and default["limit"] == 100
    assert default["trials"] == _all_views(ws, job_id) and default["total"] == 31
    total, got = _pages(client, job_id, 7)
    assert total == 31 and got == _all_views(ws, job_id)  # ranks are among all the job's trials, not the page's
    assert any(t["on_front"] for t in got) and any(t["rank"] and t["rank"] > 0 for t in got)
    total, failed = _pages(client, job_id, 2, "failed")
    assert total == 4 and failed == [t for t in _all_views(ws, job_id) if t["status"] == "failed"]
    # the job goes on (a coordinator appends): the next pages read what was appended
    loop = SearchLoop(ws, job_id, tracking=False)
    _drive(loop, 12, random.Random(1))
    loop.writer.close()
    total, got = _pages(client, job_id, 10)
    assert total == 43 and got == _all_views(ws, job_id)
    # repair writes a new log (a new file): read again from its start
    _damage_line(ws, job_id)
    assert client.get(f"/jobs/{job_id}/trials").status_code == 409
    jobs.repair(ws, job_id)
    assert _pages(client, job_id, 50)[1] == _all_views(ws, job_id)
    # an appended line that is not an event: the job is corrupt, whatever the reader kept
    with open(ws.job_dir(job_id) / "events.jsonl", "ab") as f:
        f.write(b"not an event\n")
    r = client.get(f"/jobs/{job_id}/trials", params={"offset": 40})
    assert r.status_code == 409 and "not a JSON event" in r.json()["corrupt"]["reason"], r.text


def test_a_page_without_rows_is_copies_of_the_records(job):
    ws, job_id = job
    page = jobs.trial_page(ws, job_id, 3, 5)
    assert page.total == 31 and page.items == jobs.job_trials(ws, job_id)[3:8]
    page.items[0]["metrics"]["auc"] = -1.0
    page.items[0]["history"].clear()
    assert jobs.trial_page(ws, job_id, 3, 1).items == jobs.job_trials(ws, job_id)[3:4]


# --- preflight in a child process ---------------------------------------------------------------------------
def test_preflight_runs_in_a_child_and_its_errors_come_back(data_root, mobilenet_weights, tmp_path, caplog):
    from promptsearch.preflight import PreflightError, preflight

    spec = resolve_paths(_spec(data_root, mobilenet_weights))
    with caplog.at_level(logging.DEBUG, logger="promptsearch.preflight"):
        assert preflight(spec) == []
    (pid,) = [int(r.getMessage().split(" ran in process ")[1].split(";")[0]) for r in caplog.records
              if " ran in process " in r.getMessage()]
    assert pid != os.getpid() and not Path(f"/proc/{pid}").exists()  # a child, gone again
    with pytest.raises(PreflightError, match=r"dataset: .*nowhere/breastmnist.npz not found"):
        preflight(spec.model_copy(update={"data_root": str(tmp_path / "nowhere")}))
    (tmp_path / "text.pth").write_text("not weights")
    bad = spec.model_copy(update={"backbone": spec.backbone.model_copy(update={"weights": str(tmp_path / "text.pth")})})
    with pytest.raises(PreflightError, match=r"backbone.weights: .*text.pth: a text file, not weights"):
        preflight(bad)
    # the process that asked holds none of it: no torch, no dataset, no backbone
    code = ("import sys\nfrom promptsearch.jobs import job_from_dict, resolve_paths\n"
            "from promptsearch.preflight import preflight\n"
            f"assert preflight(resolve_paths(job_from_dict({_spec(data_root, mobilenet_weights).model_dump(mode='json')!r},"
            " check=False))) == []")
    loaded, _ = _loaded(code, modules=("torch", "torchvision", "promptsearch.data", "promptsearch.backbones"))
    assert loaded == []


# --- MedMNIST without the medmnist package ------------------------------------------------------------------
def test_medmnist_loads_without_the_medmnist_package(data_root):
    loaded, out = _loaded("from promptsearch.data import load_dataset\n"
                          f"print(load_dataset('breastmnist', root={str(data_root)!r}))",
                          modules=("medmnist", "sklearn", "pandas", "scipy"))
    assert loaded == [] and "train/val/test=546/78/156" in out


def test_the_servers_dataset_names_need_no_torch(tmp_path):
    """The dashboard's first call (the submit form's datasets): the server stays without torch."""
    code = ("import sys\nfrom fastapi.testclient import TestClient\nfrom promptsearch.service.app import create_app\n"
            "from promptsearch.service.settings import Settings\n"
            "r = TestClient(create_app(Settings(workspace=sys.argv[1]), start_runner=False)).get('/meta')\n"
            "assert r.status_code == 200 and 'breastmnist' in r.json()['datasets'], r.text")
    loaded, _ = _loaded(code, str(tmp_path), modules=("torch", "medmnist", "sklearn", "pandas"))
    assert loaded == []


@pytest.mark.parametrize("name", ["breastmnist", "pneumoniamnist", "retinamnist", "chestmnist"])
def test_medmnist_arrays_and_facts_equal_what_medmnist_gives(name, data_root, tmp_path):
    import medmnist

    from promptsearch.data import load_dataset

    root = data_root
    if name == "chestmnist":  # multi-label; no such file in the shared data: a small one of its shape
        root = tmp_path
        r = np.random.default_rng(0)
        np.savez(root / "chestmnist.npz", **{f"{s}_{k}": (r.integers(0, 256, (n, 28, 28), dtype=np.uint8) if k == "images"
                                                          else r.integers(0, 2, (n, 14), dtype=np.uint8))
                                              for s, n in (("train", 12), ("val", 5), ("test", 6))
                                              for k in ("images", "labels")})
    info = medmnist.INFO[name]
    mine = load_dataset(name, root=root)
    for split in ("train", "val", "test"):
        theirs = getattr(medmnist, info["python_class"])(split=split, root=str(root))
        part = getattr(mine, split)
        imgs = theirs.imgs[:, None] if theirs.imgs.ndim == 3 else theirs.imgs.transpose(0, 3, 1, 2)
        assert np.array_equal(part.images.numpy(), imgs)
        labels = theirs.labels.astype(np.float32) if name == "chestmnist" else theirs.labels.reshape(-1)
        assert np.array_equal(part.labels.numpy(), labels)
    assert mine.classes == [info["label"][k] for k in sorted(info["label"], key=int)]


def test_the_medmnist_table_is_medmnists():
    import medmnist

    from promptsearch.data import medmnist_2d, medmnist_meta

    assert medmnist_2d() == sorted(k for k in medmnist.INFO if "3d" not in k)
    for name in medmnist_2d():
        info, meta = medmnist.INFO[name], medmnist_meta(name)
        task = "multi-label" if info["task"].startswith("multi-label") else info["task"]
        assert meta == {"name": name, "task": task, "classes": [info["label"][k] for k in sorted(info["label"], key=int)],
                        "channels": info["n_channels"], "size": 28, "python_class": info["python_class"],
                        "splits": dict(info["n_samples"])}
    assert medmnist_meta("organmnist3d") is None and medmnist_meta("nosuch") is None


# --- Ray without prestarted idle workers ----------------------------------------------------------------------
def _descendants(pid: int) -> list[tuple[int, str]]:
    parent, cmd = {}, {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    cmd[int(d)] = f.read().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, IndexError, ValueError):
                continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += [(c, cmd.get(c, "")) for c in kids]
        todo += kids
    return out


def _idle_workers() -> list[int]:
    """Ray worker processes below this one that run no task or actor (the raylet's own command line
    names the worker script too: only a process that runs it counts)."""
    return [p for p, c in _descendants(os.getpid())
            if c.startswith("ray::IDLE") or c.split(" --")[0].endswith("default_worker.py")]


def test_a_local_ray_prestarts_no_idle_workers(tmp_path, monkeypatch):
    from promptsearch.dispatch import ray_session

    with ray_session.ray_session(Workspace(tmp_path / "ours"), None) as started:
        assert started and _idle_workers() == []  # the driver is registered: any prestart would be up by now
    monkeypatch.setattr(ray_session, "RAY_SYSTEM_CONFIG", {})  # Ray's default, to show the check sees them
    with ray_session.ray_session(Workspace(tmp_path / "default"), None):
        assert len(_idle_workers()) >= 1
