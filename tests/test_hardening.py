"""Hardening for a hospital deployment: hostile requests, limits, checked files, closed ports,
private files and secrets — tried as a hospital IT team would.

    PROMPTSEARCH_DATA_ROOT=../shared/data/medmnist python -m pytest tests/test_hardening.py -q -m "not slow"

The hostile-request suite drives the real app in-process (FastAPI's TestClient over
``create_app(Settings(...), start_runner=False)``): every request must get a 4xx with its reason
(never a 5xx, never a traceback) and leave the workspace exactly as it was. The preflight cases
submit jobs whose data or weights are broken in the ways hospital files break. The slow tests run a
real ``promptsearch serve`` with a real job (Ray, MLflow) and look at its sockets, environments, file
modes and access log, and run the CLI on read-only and full file systems (tmpfs mounts in a private
mount namespace: as root, chmod does not stop a write).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient

from promptsearch.preflight import RANDOM_BACKBONE
from promptsearch.service.app import create_app
from promptsearch.service.settings import Limits, Settings, load_server_file

REPO = Path(__file__).resolve().parent.parent


# --- fixtures -------------------------------------------------------------------------------------------
def _defaults(data_root: Path, weights: Path, **over) -> dict:  # over: fields replaced (data_root too)
    """A server's job defaults: local data and weights, tiny budgets."""
    d = {"space": "pixel", "dataset": "breastmnist", "data_root": str(data_root),
         "backbone": {"name": "torchvision:mobilenet_v2", "image_size": 32, "weights": str(weights)},
         "budget": {"epochs": 1, "batch_size": 32, "max_train_samples": 96, "latency_repeats": 2},
         "strategy": "random", "trials": 2, "concurrency": 1, "resources": {"cpu": 1}, "seed": 0}
    d.update(over)
    return d


def _app(tmp: Path, defaults: dict, token: str | None = None, raw: bool = False, **limits) -> tuple[TestClient, Path]:
    """The app over ``defaults`` loaded as ``promptsearch serve --job-defaults`` loads them (``raw``:
    used as they are, as if a file went missing or bad after the server started)."""
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "job-defaults.yaml"
    path.write_text(yaml.safe_dump(defaults))
    job_defaults, lim = load_server_file(None if raw else path, limits)
    if raw:
        job_defaults = defaults
    ws = tmp / "ws"
    ws.mkdir(exist_ok=True)
    settings = Settings(workspace=ws, job_defaults=job_defaults, limits=lim, token=token, defaults_source=str(path))
    client = TestClient(create_app(settings, start_runner=False), raise_server_exceptions=False)
    return client, ws


def snapshot(ws: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under the workspace with its size and mtime (what a change would change)."""
    out = {}
    for p in sorted(ws.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(ws))] = (st.st_size if p.is_file() else 0, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def api(tmp_path_factory, data_root, mobilenet_weights):
    """One app for the hostile suite: a queued job ("victim") to aim id-based requests at."""
    client, ws = _app(tmp_path_factory.mktemp("hostile"), _defaults(data_root, mobilenet_weights))
    r = client.post("/jobs", json={"name": "victim", "trials": 2})
    assert r.status_code == 201, r.text
    client.victim = r.json()["id"]
    client.ws = ws
    return client


def assert_refused(r, status: int | tuple[int, ...], reason: str | None) -> None:
    statuses = status if isinstance(status, tuple) else (status,)
    assert r.status_code in statuses, (r.status_code, r.text[:500])
    assert 400 <= r.status_code < 500
    assert "Traceback" not in r.text and 'File "' not in r.text, r.text[:500]
    detail = r.json()["detail"]
    assert detail, r.text
    if reason is not None:
        assert reason in json.dumps(detail), (reason, r.text[:500])


# --- hostile POST /jobs ---------------------------------------------------------------------------------
def _space(name: str = "tiny", **over) -> dict:
    s = {"name": name, "decisions": {"module": {"choices": ["pixel"]}, "fusion": {"choices": ["concat", "gate"]}},
         "components": {"modality": ["ct", "xray"]}, "min_components": 1}
    s.update(over)
    return s


BIG = 5 * 1024 * 1024  # the IT team's 5 MB description

HOSTILE_BODIES = [
    # names: the one rule job ids follow
    ({"name": "a..b"}, 422, "invalid job name"),
    ({"name": ".hidden"}, 422, "invalid job name"),
    ({"name": "../escape"}, 422, "invalid job name"),
    ({"name": "a/b"}, 422, "invalid job name"),
    ({"name": "-lead"}, 422, "invalid job name"),
    ({"name": "x" * 65}, 422, "invalid job name"),
    ({"name": ""}, 422, "invalid job name"),
    ({"name": "naïve"}, 422, "invalid job name"),
    ({"name": "a\x00b"}, 422, "invalid job name"),
    ({"name": 5}, 422, "name"),
    # counts are whole numbers, within the server's limits
    ({"trials": True}, 422, "whole number"),
    ({"trials": 1.5}, 422, "whole number"),
    ({"trials": "3"}, 422, "whole number"),
    ({"trials": None}, 422, "trials"),
    ({"trials": 0}, 422, "trials"),
    ({"trials": -1}, 422, "trials"),
    ({"trials": 100000, "concurrency": 4096}, 422, "limits.max_trials"),
    ({"trials": 100000, "concurrency": 4096}, 422, "limits.max_concurrency"),
    ({"concurrency": True}, 422, "whole number"),
    ({"seed": -1}, 422, "seed"),
    ({"seed": 2**40}, 422, "seed"),
    ({"max_failures": 0}, 422, "max_failures"),
    # the training budget of one trial
    ({"budget": {"latency_repeats": 1e9}}, 422, "latency_repeats"),
    ({"budget": {"latency_repeats": 10**9}}, 422, "latency_repeats"),
    ({"budget": {"latency_repeats": 5000}}, 422, "limits.max_latency_repeats"),
    ({"budget": {"threads": 10**6}}, 422, "threads"),
    ({"budget": {"threads": 100}}, 422, "limits.max_threads"),
    ({"budget": {"eval_batch_size": 10**9}}, 422, "eval_batch_size"),
    ({"budget": {"eval_batch_size": 10000}}, 422, "limits.max_eval_batch_size"),
    ({"budget": {"max_train_samples": 10**15}}, 422, "max_train_samples"),
    ({"budget": {"max_train_samples": 2_000_000}}, 422, "limits.max_train_samples"),
    ({"budget": {"max_eval_samples": 2_000_000}}, 422, "limits.max_eval_samples"),
    ({"budget": {"epochs": 101}}, 422, "limits.max_epochs"),
    ({"budget": {"epochs": "many"}}, 422, "budget.epochs"),
    ({"budget": {"batch_size": 2048}}, 422, "limits.max_batch_size"),
    ({"budget": {"device": "../../../../etc/passwd"}}, 422, "device must be"),
    ({"budget": {"device": "tpu:99"}}, 422, "device must be"),
    ({"budget": {"device": "cuda:1; rm -rf /"}}, 422, "device must be"),
    ({"budget": {"diverge_loss": -1}}, 422, "diverge_loss"),
    ({"budget": {"unknown": 1}}, 422, "unknown key"),
    ({"budget": "fast"}, 422, "budget"),
    # the backbone: sizes within limits; files and hub access are the server's
    ({"backbone": {"image_size": 2048}}, 422, "limits.max_image_size"),
    ({"backbone": {"image_size": 4}}, 422, "image_size"),
    ({"backbone": {"image_size": True}}, 422, "image_size"),
    ({"backbone": {"patch_size": 0}}, 422, "patch_size"),
    ({"backbone": {"weights": "/etc/shadow"}}, 422, "set by the server"),
    ({"backbone": {"pretrained": True}}, 422, "set by the server"),
    ({"backbone": {"kwargs": {"drop_rate": 0.5}}}, 422, "set by the server"),
    ({"backbone": {"name": "resnet18"}}, 422, "has weights for"),
    ({"backbones": {"b": {"name": "resnet18", "weights": "/etc/shadow"}}}, 422, "backbones: set by the server"),
    ({"library": {"path": "/etc"}}, 422, "library: set by the server"),
    # early stopping and the front's re-evaluation
    ({"front_repeats": 50}, 422, "less than or equal to 20"),
    ({"front_repeats": 10}, 422, "limits.max_front_repeats"),
    ({"scheduler": {"rungs": [9]}}, 422, "scheduler.rungs"),
    ({"scheduler": {"rungs": [1], "ranking": "weighted"}}, 422, "scheduler.ranking"),
    # strategy options that size work
    ({"strategy": "evolution", "strategy_options": {"population_size": 1e9}}, 422, "population_size"),
    ({"strategy": "evolution", "strategy_options": {"population_size": 10**9}}, 422, "limits.max_population_size"),
    ({"strategy": "evolution", "strategy_options": {"max_retries": 10**9}}, 422, "limits.max_retries"),
    ({"strategy": "rl", "strategy_options": {"hidden": 10**6}}, 422, "limits.max_controller_hidden"),
    ({"strategy": "evolution", "strategy_options": {"population_size": True}}, 422, "whole number"),
    ({"strategy": "handover", "strategy_options": {"first": "random", "then_options": {"population_size": 10**9}}},
     422, "strategy_options.then_options.population_size: 1000000000 is over"),
    ({"strategy": "handover", "strategy_options": {"first": "optuna-tpe", "first_options": {"n_startup_trials": 10**9}}},
     422, "limits.max_population_size"),
    ({"strategy": "handover", "strategy_options": {"then": "optuna-tpe"}}, 422, "cannot follow"),
    ({"strategy": "magic"}, 422, "unknown strategy"),
    ({"strategy": "evolution", "strategy_options": {"bogus": 1}}, 422, "rejects its options"),
    ({"strategy_options": "x"}, 422, "strategy_options"),
    # files, addresses, the server's environment
    ({"data_root": "/etc"}, 422, "set by the server"),
    ({"tracking_uri": "sqlite:////tmp/x.db"}, 422, "set by the server"),
    ({"ray_address": "10.0.0.1:6379"}, 422, "set by the server"),
    ({"description": "${PROMPTSEARCH_API_TOKEN}"}, 422, "not allowed"),
    ({"fix": {"module": "${HOME}"}}, 422, "not allowed"),
    ({"dataset": "folder:/etc"}, 422, "dataset"),
    ({"dataset": ".."}, 422, "dataset"),
    ({"dataset": "tests"}, 422, "not a MedMNIST"),
    ({"dataset": "x" * 100}, 422, "dataset"),
    # spaces: bundled names, or inline documents of bounded size
    ({"space": "nonexistent"}, 422, "unknown space"),
    ({"space": "../../etc/passwd"}, 422, "unknown space"),
    ({"space": "x" * 300}, 422, "unknown space"),
    ({"space": _space("x" * 300)}, 422, "invalid space name"),
    ({"space": _space("../up")}, 422, "invalid space name"),
    ({"space": _space("big", decisions={"lr": {"choices": [round(1e-4 * (i + 1), 6) for i in range(2000)]}})},
     422, "limits.max_space_choices"),
    ({"space": _space("wide", components={"modality": [f"c{i}" for i in range(300)]})}, 422, "limits.max_genome_size"),
    ({"space": _space("bad", decisions={"fusion": {"choices": ["nope"]}})}, 422, "not valid"),
    ({"space": 5}, 422, "space"),
    ({"space": {"decisions": {}}}, 422, "name"),
    ({"fix": {"nope": 1}}, 422, "has no decision"),
    # objectives, scalarization, resources, unknown fields, sizes
    ({"objectives": ["nope"]}, 422, "objectives"),
    ({"objectives": "auc"}, 422, "objectives"),
    ({"scalarization": {"bogus": 1}}, 422, "scalarization"),
    ({"resources": {"cpu": 0}}, 422, "resources.cpu"),
    ({"resources": {"gpu": 1.5}}, 422, "gpu"),
    ({"resources": {"cpu": 1e9}}, 422, "resources.cpu"),
    ({"colour": "blue"}, 422, "colour"),
    ({"description": "x" * 5000}, 422, "limits.max_description_chars"),
    ({"description": "x" * BIG}, 413, "limits.max_body_bytes"),
]


@pytest.mark.parametrize("body,status,reason", HOSTILE_BODIES,
                         ids=[f"{i:02d}-{next(iter(b))}" for i, (b, _, _) in enumerate(HOSTILE_BODIES)])
def test_hostile_submission_is_refused_with_its_reason_and_changes_nothing(api, body, status, reason):
    before = snapshot(api.ws)
    r = api.post("/jobs", json=body)
    assert_refused(r, status, reason)
    assert snapshot(api.ws) == before


RAW_BODIES = [
    (b'{"trials": NaN}', 422, "trials"),  # was a 500: the 422 echoed the NaN, which JSON cannot carry
    (b'{"trials": Infinity}', 422, "trials"),
    (b'{"budget": {"diverge_loss": -Infinity}}', 422, "finite"),
    (b'{"strategy": "evolution", "strategy_options": {"crossover_prob": NaN}}', 422, "finite"),
    (b'{"scalarization": {"groups": {"accuracy": NaN}}}', 422, "finite"),
    (b"not json", 422, "JSON"),
    (b"[]", 422, None),
    (b'"x"', 422, None),
    (b"", 422, None),
    (b'{"a": ', 422, "JSON"),
    (b'{"name": "dup", "name": "a..b"}', 422, "invalid job name"),  # the last duplicate key is the one checked
]


@pytest.mark.parametrize("raw,status,reason", RAW_BODIES, ids=[f"raw{i}" for i in range(len(RAW_BODIES))])
def test_malformed_bodies_are_4xx(api, raw, status, reason):
    before = snapshot(api.ws)
    r = api.post("/jobs", content=raw, headers={"content-type": "application/json"})
    assert_refused(r, status, reason)
    assert snapshot(api.ws) == before


def test_a_streamed_body_over_the_limit_is_413(tmp_path, data_root, mobilenet_weights):
    client, ws = _app(tmp_path, _defaults(data_root, mobilenet_weights), max_body_bytes=4096)

    def chunks():  # no Content-Length: the limit holds while the body streams
        yield b'{"description": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    before = snapshot(ws)
    r = client.post("/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert_refused(r, 413, "limits.max_body_bytes = 4096")
    r = client.post("/jobs", content=b"{" + b" " * 5000 + b"}", headers={"content-type": "application/json"})
    assert_refused(r, 413, "request body of 5002 bytes")
    assert snapshot(ws) == before


def test_a_text_body_is_4xx(api):
    r = api.post("/jobs", content=b"trials=3", headers={"content-type": "text/plain"})
    assert_refused(r, 422, None)


def test_a_large_inline_space_is_refused_before_any_parsing(tmp_path, data_root, mobilenet_weights):
    """The IT team's 200,000-choice space took 47.5 s of server CPU; counted on the raw document it
    is refused at once (the body limit raised so that the space limit is what answers)."""
    client, ws = _app(tmp_path, _defaults(data_root, mobilenet_weights), max_body_bytes=16 * 1024 * 1024)
    space = _space("huge", decisions={"lr": {"choices": [1e-6 * (i + 1) for i in range(200_000)]}})
    t = time.monotonic()
    r = client.post("/jobs", json={"space": space})
    assert_refused(r, 422, "200000 choices is over this server's limit (limits.max_space_choices = 1000)")
    assert time.monotonic() - t < 5.0
    assert not (ws / "spaces").exists()


# --- hostile ids, paths and queries ------------------------------------------------------------------------
BAD_IDS = ["a..b", ".hidden", "%2E%2E", "x" * 200, "a%2Fb", "%00", "%C3%B8", "-x", "nope"]
ID_ENDPOINTS = [("GET", "/jobs/{}"), ("GET", "/jobs/{}/trials"), ("GET", "/jobs/{}/pareto"),
                ("GET", "/jobs/{}/export"), ("POST", "/jobs/{}/cancel"), ("POST", "/jobs/{}/resume")]


@pytest.mark.parametrize("method,path", ID_ENDPOINTS, ids=[p.split("{}")[-1] or "job" for _, p in ID_ENDPOINTS])
@pytest.mark.parametrize("job_id", BAD_IDS)
def test_bad_or_unknown_job_ids_are_4xx(api, method, path, job_id):
    before = snapshot(api.ws)
    r = api.request(method, path.format(job_id))
    assert_refused(r, (404, 422), None)
    reason = r.json()["detail"]
    assert any(x in reason for x in ("unknown job", "invalid job id", "Not Found")), reason  # a/b: no such route
    assert snapshot(api.ws) == before


@pytest.mark.parametrize("query,status", [
    ({"limit": 0}, 422), ({"limit": -1}, 422), ({"limit": 10**9}, 422), ({"offset": -5}, 422),
    ({"status": "bogus"}, 422), ({"limit": "abc"}, 422),
])
def test_bad_trial_queries_are_422(api, query, status):
    assert_refused(api.get(f"/jobs/{api.victim}/trials", params=query), status, None)


@pytest.mark.parametrize("pick,status,reason", [
    ("trial=../x", 422, "invalid trial id"), ("trial=a..b", 422, "invalid trial id"), ("x" * 201, 422, None),
    ("best:nothing", (409, 422), None), ("knee", 409, "no finished trial"), ("trial=t9999", (404, 409), None),
])
def test_bad_export_picks_are_4xx_and_write_nothing(api, pick, status, reason):
    before = snapshot(api.ws)
    assert_refused(api.get(f"/jobs/{api.victim}/export", params={"pick": pick}), status, reason)
    after = snapshot(api.ws)
    assert {k: v for k, v in after.items() if not k.startswith("tmp")} == \
        {k: v for k, v in before.items() if not k.startswith("tmp")}
    assert [k for k in after if k.startswith("tmp/")] == []  # no bundle left behind in the export scratch


def test_a_name_that_is_accepted_makes_a_reachable_id(api):
    """Was: POST {"name": "a..b"} -> 201 with id a..b-..., then every request on that id -> 422."""
    r = api.post("/jobs", json={"name": "a.b-c_d.", "trials": 1})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    assert api.get(f"/jobs/{job_id}").status_code == 200
    assert api.get(f"/jobs/{job_id}/trials").status_code == 200
    assert api.get(f"/jobs/{job_id}/pareto").status_code == 200
    assert api.get(f"/jobs/{job_id}/export").status_code == 409  # reachable: nothing finished to export
    assert api.post(f"/jobs/{job_id}/cancel").status_code == 202
    assert api.post(f"/jobs/{job_id}/resume").status_code == 202


def test_job_files_follow_the_same_name_rule():
    from promptsearch.jobs import JobError, check_id, parse_job

    for bad in ("a..b", ".x", "_x", "x" * 65):
        with pytest.raises(JobError, match="name"):
            parse_job(f"name: {json.dumps(bad)}\n", "j.yaml", check=False)
    job_id = f"{parse_job('name: a.b_c-d', 'j.yaml', check=False).name}-20260101-000000-abcd"
    assert check_id(job_id) == job_id


def test_every_guarded_endpoint_needs_the_bearer_token(tmp_path, data_root, mobilenet_weights):
    token = "s3cret-" + "x" * 20
    client, ws = _app(tmp_path, _defaults(data_root, mobilenet_weights), token=token)
    paths = [("GET", "/jobs"), ("POST", "/jobs"), ("GET", "/jobs/x"), ("GET", "/jobs/x/trials"), ("GET", "/jobs/x/pareto"),
             ("GET", "/jobs/x/export"), ("POST", "/jobs/x/cancel"), ("POST", "/jobs/x/resume"), ("GET", "/meta")]
    tries = [{}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {token}"}, {"Authorization": token},
             {"Authorization": f"Bearer {token}x"}]
    before = snapshot(ws)
    for method, path in paths:
        for headers in tries:
            r = client.request(method, path, headers=headers, json={"name": "x"} if method == "POST" else None)
            assert_refused(r, 401, "bearer token")
        r = client.request(method, path, params={"token": token}, json={"name": "x"} if method == "POST" else None)
        assert_refused(r, 401, "bearer token")  # a token in the query string is no token
    assert snapshot(ws) == before
    assert client.get("/health").status_code == 200
    assert client.get("/jobs", headers={"Authorization": f"Bearer {token}"}).json() == {"jobs": []}


# --- quotas -------------------------------------------------------------------------------------------------
def test_the_queue_is_bounded(tmp_path, data_root, mobilenet_weights):
    client, ws = _app(tmp_path, _defaults(data_root, mobilenet_weights), max_queued_jobs=2)
    for i in range(2):
        assert client.post("/jobs", json={"name": f"q{i}"}).status_code == 201
    before = snapshot(ws)
    r = client.post("/jobs", json={"name": "q2"})
    assert_refused(r, 429, "limits.max_queued_jobs = 2")
    assert snapshot(ws) == before
    queued = client.get("/jobs").json()["jobs"]
    assert client.post(f"/jobs/{queued[0]['id']}/cancel").status_code == 202  # a slot frees up
    assert client.post("/jobs", json={"name": "q2"}).status_code == 201


def test_limits_come_from_the_job_defaults_file_and_the_options(tmp_path, data_root, mobilenet_weights):
    path = tmp_path / "defaults.yaml"
    path.write_text(yaml.safe_dump({**_defaults(data_root, mobilenet_weights), "limits": {"max_trials": 50, "max_epochs": 3}}))
    _, limits = load_server_file(path)
    assert (limits.max_trials, limits.max_epochs, limits.max_concurrency) == (50, 3, Limits().max_concurrency)
    assert load_server_file(path, {"max_trials": 7})[1].max_trials == 7
    from promptsearch.jobs import JobError

    path.write_text(yaml.safe_dump({**_defaults(data_root, mobilenet_weights), "limits": {"max_bogus": 1}}))
    with pytest.raises(JobError, match=r"defaults.yaml:\d+: limits.max_bogus: unknown key"):
        load_server_file(path)
    path.write_text(yaml.safe_dump({**_defaults(data_root, mobilenet_weights), "limits": {"max_trials": "lots"}}))
    with pytest.raises(JobError, match=r"defaults.yaml:\d+: limits.max_trials"):
        load_server_file(path)
    client, _ = _app(tmp_path / "x", _defaults(data_root, mobilenet_weights), max_trials=5)
    assert_refused(client.post("/jobs", json={"trials": 6}), 422, "trials: 6 is over this server's limit (limits.max_trials = 5)")
    assert client.get("/meta").json()["limits"]["max_trials"] == 5  # the submit form can say so up front


def test_serve_refuses_defaults_over_its_limits_or_a_bad_limit(tmp_path, data_root, mobilenet_weights):
    path = tmp_path / "defaults.yaml"
    path.write_text(yaml.safe_dump({**_defaults(data_root, mobilenet_weights), "trials": 500, "limits": {"max_trials": 100}}))
    for args, reason in [([], "trials: 500 is over this server's limit (limits.max_trials = 100)"),
                         (["--limit", "max_trials=abc"], "--limit 'max_trials=abc'"),
                         (["--limit", "max_nothing=3"], "max_nothing: unknown key")]:
        res = _cli(["serve", "--job-defaults", str(path), "--workspace", str(tmp_path / "ws"), "--port", "1", *args])
        assert res.returncode == 2, res.stderr
        assert reason in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_an_empty_request_needs_a_dataset_somewhere(tmp_path, data_root, mobilenet_weights):
    """``{}``: a server whose job defaults name a dataset runs its default job (documented in
    /meta); one whose defaults name none asks for it instead of running JobSpec's built-in defaults."""
    d = _defaults(data_root, mobilenet_weights)
    del d["dataset"]
    client, ws = _app(tmp_path, d)
    assert_refused(client.post("/jobs", json={}), 422, "dataset: required")
    assert client.post("/jobs", json={"dataset": "breastmnist"}).status_code == 201


# --- preflight: bad data and weights found before any trial ------------------------------------------------
def _npz(path: Path, **arrays) -> Path:
    np.savez_compressed(path, **arrays)
    return path


def _broken_files(tmp: Path, data_root: Path, weights: Path) -> tuple[dict[str, tuple[dict, str]], Path]:
    """({case: (job-defaults overrides, what the 422 must say)}, the file a pickle payload would create)."""
    real = dict(np.load(data_root / "breastmnist.npz"))
    roots = {k: tmp / k for k in ("random", "keys", "missing", "oneclass", "empty", "truncated")}
    for r in roots.values():
        r.mkdir()
    (roots["random"] / "breastmnist.npz").write_bytes(os.urandom(4096))
    _npz(roots["keys"] / "breastmnist.npz", images=real["train_images"], labels=real["train_labels"])
    one = dict(real)
    one["val_labels"] = np.zeros_like(real["val_labels"])
    _npz(roots["oneclass"] / "breastmnist.npz", **one)
    empty = dict(real)
    empty["test_images"], empty["test_labels"] = real["test_images"][:0], real["test_labels"][:0]
    _npz(roots["empty"] / "breastmnist.npz", **empty)
    good = (data_root / "breastmnist.npz").read_bytes()
    (roots["truncated"] / "breastmnist.npz").write_bytes(good[: len(good) // 2])
    text = tmp / "weights.pth"
    text.write_text("these are not weights\nlayer1 0.3\n")
    marker = tmp / "PWNED"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    payload = tmp / "payload.pth"
    payload.write_bytes(pickle.dumps({"features.0.0.weight": Payload()}))
    other = weights.parent / "tf_efficientnet_lite0_imagenet_timm.pth"  # a timm EfficientNet's, not MobileNetV2's
    folders = tmp / "folders"
    (folders / "oneclass" / "benign").mkdir(parents=True)
    (folders / "emptyclass" / "benign").mkdir(parents=True)
    (folders / "emptyclass" / "malignant").mkdir(parents=True)
    (folders / "corrupt" / "benign").mkdir(parents=True)
    (folders / "corrupt" / "malignant").mkdir(parents=True)
    from PIL import Image

    for i in range(12):
        for cls in ("benign", "malignant"):
            Image.fromarray(np.full((16, 16), 40 * (cls == "benign") + i, np.uint8)).save(folders / "corrupt" / cls / f"{i}.png")
        Image.fromarray(np.full((16, 16), i, np.uint8)).save(folders / "oneclass" / "benign" / f"{i}.png")
        Image.fromarray(np.full((16, 16), i, np.uint8)).save(folders / "emptyclass" / "benign" / f"{i}.png")
    (folders / "corrupt" / "malignant" / "5.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    cases = {
        "missing data_root": ({"data_root": str(tmp / "nowhere")}, "nowhere"),
        "random bytes as npz": ({"data_root": str(roots["random"])}, "corrupt or not an npz"),
        "wrong-keyed npz": ({"data_root": str(roots["keys"])}, "missing train_images"),
        "truncated npz": ({"data_root": str(roots["truncated"])}, "corrupt or not an npz"),
        "missing dataset file": ({"data_root": str(roots["missing"])}, "breastmnist.npz not found"),
        "one class in val": ({"data_root": str(roots["oneclass"])}, "the val split has 1 class"),
        "empty test split": ({"data_root": str(roots["empty"])}, "the test split is empty"),
        "text file as weights": ({"backbone": {"name": "torchvision:mobilenet_v2", "image_size": 32, "weights": str(text)}},
                                 f"{text}: a text file, not weights"),
        "pickle payload as weights": ({"backbone": {"name": "torchvision:mobilenet_v2", "image_size": 32,
                                                    "weights": str(payload)}}, f"{payload}: a pickle payload"),
        "another architecture's weights": ({"backbone": {"name": "torchvision:mobilenet_v2", "image_size": 32,
                                                         "weights": str(other)}}, f"{other}: does not match the backbone"),
        "missing weights": ({"backbone": {"name": "torchvision:mobilenet_v2", "weights": str(tmp / "no.pth")}}, "no.pth"),
        "one-class image folder": ({"dataset": f"folder:{folders / 'oneclass'}"}, "at least two class sub-folders"),
        "empty class folder": ({"dataset": f"folder:{folders / 'emptyclass'}"}, "holds no images"),
        "corrupt image": ({"dataset": f"folder:{folders / 'corrupt'}"}, str(folders / "corrupt" / "malignant" / "5.png")),
        "unknown backbone": ({"backbone": {"name": "no_such_model_xyz"}}, "no_such_model_xyz"),
    }
    return cases, marker


@pytest.fixture(scope="module")
def broken(tmp_path_factory, data_root, mobilenet_weights):
    tmp = tmp_path_factory.mktemp("broken")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROMPTSEARCH_CACHE", "off")  # a corrupt image must be decoded, not found in a cache
        yield (tmp, *_broken_files(tmp, data_root, mobilenet_weights))


PREFLIGHT_CASES = ["missing data_root", "random bytes as npz", "wrong-keyed npz", "truncated npz", "missing dataset file",
                   "one class in val", "empty test split", "text file as weights", "pickle payload as weights",
                   "another architecture's weights", "missing weights", "one-class image folder", "empty class folder",
                   "corrupt image", "unknown backbone"]


@pytest.mark.parametrize("case", PREFLIGHT_CASES)
def test_a_bad_file_fails_the_submission_naming_it(broken, data_root, mobilenet_weights, case):
    tmp, cases, marker = broken
    over, reason = cases[case]
    client, ws = _app(tmp / f"srv-{case.replace(' ', '_').replace(chr(39), '')}", {**_defaults(data_root, mobilenet_weights), **over},
                      raw=True)
    before = snapshot(ws)
    t = time.monotonic()
    r = client.post("/jobs", json={"name": "pre"})
    assert_refused(r, 422, reason)
    assert time.monotonic() - t < 30  # no Ray, no MLflow, no trial: seconds, not 25-40 s per failing trial
    assert snapshot(ws) == before and not (ws / "jobs").exists()
    assert not marker.exists()  # the pickle payload never ran


def test_the_cli_checks_files_before_ray_starts(broken, tmp_path, data_root, mobilenet_weights):
    tmp, cases, _ = broken
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({**_defaults(data_root, mobilenet_weights), **cases["random bytes as npz"][0]}))
    t = time.monotonic()
    res = _cli(["search", str(job), "--workspace", str(tmp_path / "ws"), "--json"])
    assert res.returncode == 2 and "corrupt or not an npz" in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert time.monotonic() - t < 60
    assert not (tmp_path / "ws" / "ray").exists() and not (tmp_path / "ws" / "jobs").exists()


def test_a_random_initialised_backbone_is_warned_about_and_runs_at_the_data_resolution(tmp_path, data_root):
    d = _defaults(data_root, Path("unused"))
    d["backbone"] = {"name": "vit_tiny_patch16_224"}  # no weights, no hub, no sizes: the newcomer's job
    client, ws = _app(tmp_path, d)
    r = client.post("/jobs", json={"name": "newcomer"})
    assert r.status_code == 201, r.text
    assert any(RANDOM_BACKBONE in w for w in r.json()["warnings"])
    spec = client.get(f"/jobs/{r.json()['id']}").json()["spec"]
    assert (spec["backbone"]["image_size"], spec["backbone"]["patch_size"]) == (28, 4)
    ok = client.post("/jobs", json={"name": "weighted"})
    assert ok.status_code == 201


def test_preflight_passes_good_files_without_ray_mlflow_or_torch_in_the_caller(data_root, mobilenet_weights):
    """Good files pass with nothing to say; the dataset and backbone checks run in a short-lived
    child, so the asking process (a coordinator, the API server) stays free of torch, Ray and MLflow."""
    code = (
        "import json, sys\n"
        "from promptsearch.jobs import job_from_dict, resolve_paths\n"
        "from promptsearch.preflight import preflight\n"
        f"spec = resolve_paths(job_from_dict(json.loads({json.dumps(json.dumps(_defaults(data_root, mobilenet_weights)))}),"
        " check=False))\n"
        "print(json.dumps([preflight(spec), sorted(m for m in ('torch', 'ray', 'mlflow') if m in sys.modules)]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr
    warnings, heavy = json.loads(out.stdout.strip().splitlines()[-1])
    assert warnings == [] and heavy == []


# --- the CLI and the server on bad disks ------------------------------------------------------------------
def _cli(args: list[str], env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "promptsearch.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=REPO)


def _mounts_work() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k,ro tmpfs /mnt && touch /mnt/x"],
                       capture_output=True, text=True)
    return "Read-only" in r.stderr


MOUNTS = _mounts_work()
needs_mounts = pytest.mark.skipif(not MOUNTS, reason="needs root and unshare/mount (tmpfs) to make a read-only or full disk")


def _in_namespace(mount: str, where: Path, command: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    """``command`` in a private mount namespace where ``where`` is a tmpfs mounted with ``mount``
    options (gone when the command ends)."""
    where.mkdir(parents=True, exist_ok=True)
    script = f"mount -t tmpfs -o {mount} tmpfs {where} && exec \"$@\""
    return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *command], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def _one_line(res: subprocess.CompletedProcess, *needles: str) -> None:
    err = res.stderr.strip()
    assert "Traceback" not in err and "CREATE TABLE" not in err, err[-3000:]
    assert len(err.splitlines()) == 1, err[-3000:]
    for n in needles:
        assert n in err, (n, err)


@needs_mounts
def test_a_read_only_workspace_is_one_line(tmp_path, data_root, mobilenet_weights):
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(_defaults(data_root, mobilenet_weights)))
    mnt = tmp_path / "ro"
    res = _in_namespace("ro,size=1m", mnt, [sys.executable, "-m", "promptsearch.cli", "search", str(job),
                                            "--workspace", str(mnt / "ws"), "--json"])
    assert res.returncode == 2, res.stderr
    _one_line(res, str(mnt), "read-only")
    res = _in_namespace("ro,size=1m", mnt, [sys.executable, "-m", "promptsearch.cli", "serve", "--workspace",
                                            str(mnt / "ws"), "--port", "1"])
    assert res.returncode == 2, res.stderr
    _one_line(res, f"workspace {mnt / 'ws'} is not writable", "Read-only file system (errno 30 EROFS)")


@needs_mounts
def test_a_full_disk_at_start_is_one_line(tmp_path, data_root, mobilenet_weights):
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(_defaults(data_root, mobilenet_weights)))
    mnt = tmp_path / "full"
    for size in ("8k", "200k"):  # job.json cannot be written / MLflow's schema would not fit
        res = _in_namespace(f"size={size}", mnt, [sys.executable, "-m", "promptsearch.cli", "search", str(job),
                                                  "--workspace", str(mnt / "ws"), "--json"])
        assert res.returncode == 2, res.stderr
        _one_line(res, "MiB free", str(mnt))
    res = _in_namespace("size=32k", mnt, [sys.executable, "-m", "promptsearch.cli", "serve", "--workspace",
                                          str(mnt / "ws"), "--port", "1"])
    assert res.returncode == 2, res.stderr
    _one_line(res, "is not writable", "No space left on device (errno 28 ENOSPC)")


@needs_mounts
def test_a_full_workspace_is_a_507_that_leaves_nothing_behind(tmp_path, data_root, mobilenet_weights):
    """The server's disk fills while it runs: a submission is a 507 naming the trouble, writes
    nothing (no job, no inline space, no temp file), and the server keeps answering."""
    from live_server import Server

    disk = tmp_path / "disk"
    disk.mkdir()
    defaults = tmp_path / "defaults.yaml"
    defaults.write_text(yaml.safe_dump(_defaults(data_root, mobilenet_weights)))
    prefix = ("unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {disk} && exec \"$@\"", "sh")
    srv = Server(disk / "ws", defaults, prefix=prefix).start()
    try:
        inside = ["nsenter", "-t", str(srv.proc.pid), "-m"]
        subprocess.run([*inside, "dd", "if=/dev/zero", f"of={disk}/filler", "bs=64k", "count=64"], capture_output=True)
        r = srv.client.post("/jobs", json={"name": "full"})
        assert r.status_code == 507 and "MiB free" in r.json()["detail"], r.text
        r = srv.client.post("/jobs", json={"name": "full", "space": _space("inline", description="x" * 600)})
        assert r.status_code == 507 and "No space left on device, errno 28" in r.json()["detail"], r.text
        assert "Traceback" not in r.text
        left = subprocess.run([*inside, "find", str(disk / "ws"), "-mindepth", "1"], capture_output=True, text=True).stdout
        assert left.split() == [], left  # no jobs/, no spaces/ file, no temp file
        assert srv.client.get("/health").status_code == 200 and srv.client.get("/jobs").json() == {"jobs": []}
    finally:
        srv.stop()


def test_an_unhandled_os_error_is_one_line_naming_the_path(tmp_path):
    """The code path of a failed write, without a special disk: the workspace is a file."""
    ws = tmp_path / "ws"
    ws.write_text("not a folder")
    res = _cli(["serve", "--workspace", str(ws), "--port", "1"])
    assert res.returncode == 2
    _one_line(res, str(ws), "errno")
    res = subprocess.run([sys.executable, "-c", "from promptsearch.cli import app; import errno, os\n"
                          "@app.command('boom')\ndef boom():\n    path = '/x/state.json'\n"
                          "    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\napp(['boom'])"],
                         capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 1
    _one_line(res, "error: /x/state.json: No space left on device (errno 28 ENOSPC)")
    # wrapped, as Ray Tune wraps a callback's error in a TuneError: the disk is still the news
    res = subprocess.run([sys.executable, "-c", "from promptsearch.cli import app; import errno, os\n"
                          "@app.command('boom')\ndef boom():\n    try:\n"
                          "        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), '/ws/jobs/j/events.jsonl')\n"
                          "    except OSError:\n        raise RuntimeError('Traceback (most recent call last): ...')\n"
                          "app(['boom'])"], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 1
    _one_line(res, "error: /ws/jobs/j/events.jsonl: No space left on device (errno 28 ENOSPC)")


def test_the_cli_starts_with_a_private_umask(tmp_path):
    res = subprocess.run([sys.executable, "-c", "import os; os.umask(0o022)\nfrom promptsearch.cli import app\n"
                          "try:\n    app(['space', 'list'])\nexcept SystemExit:\n    pass\n"
                          "print(oct(os.umask(0)))"], capture_output=True, text=True, cwd=REPO)
    assert res.stdout.strip().splitlines()[-1] == "0o77", res.stdout + res.stderr


# --- a real server: ports, environments, file modes, access log --------------------------------------------
def _psutil():
    """psutil, as Ray ships it (ray/thirdparty_files is put on sys.path when ray is imported)."""
    import ray  # noqa: F401

    import psutil

    return psutil


def _tree(pid: int):
    psutil = _psutil()
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _loopback(ip: str) -> bool:
    return ip in ("127.0.0.1", "::1", "::ffff:127.0.0.1") or ip.startswith("127.")


@pytest.mark.slow
@pytest.mark.long
def test_a_served_job_listens_on_loopback_only_keeps_the_token_and_its_files_private(tmp_path, data_root, mobilenet_weights):
    from live_server import Server, wait_for
    from test_service import _job_process

    psutil = _psutil()

    defaults = tmp_path / "defaults.yaml"
    defaults.write_text(yaml.safe_dump(_defaults(data_root, mobilenet_weights,
                                                 budget={"epochs": 3, "batch_size": 32, "max_train_samples": 256,
                                                         "latency_repeats": 2})))
    token = "hospital-" + os.urandom(8).hex()
    srv = Server(tmp_path / "ws", defaults, token=token, log_level="info").start()
    try:
        r = srv.client.post("/jobs", json={"name": "ports", "trials": 3})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        pid = wait_for(lambda: _job_process(job_id), 120, 0.5, "the job's process")

        def ray_listening():  # the GCS, the raylet, the agents and a trial worker are up
            procs = _tree(pid)
            names = " ".join(p.name() for p in procs if p.is_running())
            return procs if "raylet" in names and "gcs_server" in names and srv.job(job_id)["running"] else None

        procs = wait_for(ray_listening, 240, 1.0, "Ray and a running trial")
        pids = {p.pid: p for p in procs}
        listening = [(c.laddr.ip, c.laddr.port, pids[c.pid].name()) for c in psutil.net_connections(kind="tcp")
                     if c.status == psutil.CONN_LISTEN and c.pid in pids]
        print(f"\n{len(listening)} listening sockets of the job's {len(procs)} processes: {sorted(listening)}")
        assert len(listening) >= 3, listening  # GCS, raylet, worker (at least)
        assert all(_loopback(ip) for ip, _, _ in listening), listening
        server_sockets = [c.laddr.ip for c in psutil.net_connections(kind="tcp")
                          if c.status == psutil.CONN_LISTEN and c.pid == srv.proc.pid]
        assert server_sockets and all(_loopback(ip) for ip in server_sockets), server_sockets
        for p in procs:  # the token reaches no job process, Ray daemon or trial worker
            try:
                environ = Path(f"/proc/{p.pid}/environ").read_bytes()
            except (FileNotFoundError, ProcessLookupError):
                continue
            assert b"PROMPTSEARCH_API_TOKEN" not in environ and token.encode() not in environ, p.name()
        # a token sent as ?token= does not reach the access log
        assert srv.client.get("/jobs", params={"token": token, "limit": 5}).status_code == 200
        srv.wait_job(job_id, ("completed",), 400)
    finally:
        srv.stop()
    log = srv.log.read_text()
    assert "token=<redacted>" in log and "limit=5" in log, log[-2000:]
    assert token not in log
    ws = srv.workspace
    assert stat.S_IMODE(ws.stat().st_mode) == 0o700
    shared = []
    for p in [ws, *ws.rglob("*")]:
        if p.is_symlink():
            continue
        mode = stat.S_IMODE(p.lstat().st_mode)
        if mode & 0o077:
            shared.append(f"{oct(mode)} {p.relative_to(ws)}")
    print(f"{len([ws, *ws.rglob('*')])} workspace paths checked: none readable or writable by group or others")
    assert not shared, shared[:20]
    job_dir = ws / "jobs" / job_id
    for name in ("job.json", "service.log"):
        assert stat.S_IMODE((job_dir / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE((ws / "mlflow" / "mlflow.db").stat().st_mode) == 0o600
    assert (ws / "ray").is_dir() and stat.S_IMODE((ws / "ray").stat().st_mode) == 0o700



MID_JOB_DRILL = r"""
set -u
ws="$1/ws"; job="$2"; py="$3"; out="$4"
"$py" -m promptsearch.cli search "$job" --workspace "$ws" --json > "$out/run1.out" 2> "$out/run1.err" &
pid=$!
i=0  # wait for the first finished trial (its weights file), then fill the disk
until ls "$ws"/jobs/*/weights/*.safetensors > /dev/null 2>&1 || [ $i -ge 600 ]; do sleep 0.5; i=$((i + 1)); done
dd if=/dev/zero of="$1/filler" bs=1M count=4096 > /dev/null 2>&1
wait $pid; echo "rc1=$?"
find "$ws/jobs" -name '*.tmp' | sed 's/^/tmp: /'
rm -f "$1/filler"
job_id=$(ls "$ws/jobs")
"$py" -m promptsearch.cli resume "$job_id" --workspace "$ws" --json > "$out/run2.out" 2> "$out/run2.err"; echo "rc2=$?"
"""


@needs_mounts
@pytest.mark.slow
@pytest.mark.long
def test_a_disk_that_fills_mid_job_is_one_line_leaves_no_temp_file_and_the_job_resumes(tmp_path, data_root,
                                                                                        mobilenet_weights):
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(_defaults(data_root, mobilenet_weights, trials=4)))
    mnt, logs = tmp_path / "disk", tmp_path / "logs"
    mnt.mkdir()
    logs.mkdir()
    script = tmp_path / "drill.sh"
    script.write_text(MID_JOB_DRILL)
    res = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=96m tmpfs {mnt} && "
                          f"exec sh {script} {mnt} {job} {sys.executable} {logs}"], capture_output=True, text=True,
                         timeout=1200, cwd=REPO)
    out = res.stdout
    err1 = (logs / "run1.err").read_text()
    print(out, err1[-3000:])
    assert "rc1=0" not in out and "tmp:" not in out, out + res.stderr  # stopped by the full disk; no temp file left
    assert "Traceback" not in err1 and "[SQL:" not in err1, err1[-3000:]
    last = err1.strip().splitlines()[-1]
    assert last.startswith("error: ") and "No space left on device (errno 28 ENOSPC)" in last, last
    assert "rc2=0" in out, out + res.stderr + (logs / "run2.err").read_text()[-3000:]
    status = json.loads((logs / "run2.out").read_text())["status"]
    assert status["status"] == "completed" and status["trials"]["finished"] == 4, status


# --- the pieces, one by one -------------------------------------------------------------------------------
@pytest.mark.parametrize("path,logged", [
    ("/jobs?token=s3cret&limit=5", "/jobs?token=<redacted>&limit=5"),
    ("/jobs/x/export?pick=knee&access_token=abc", "/jobs/x/export?pick=knee&access_token=<redacted>"),
    ("/jobs?s3cret", "/jobs?<redacted>"),
    ("/jobs?s3cret=&limit=2", "/jobs?<redacted>&limit=2"),
    ("/jobs?", "/jobs?<redacted>"),
    ("/health", "/health"),
])
def test_the_access_log_shows_only_the_apis_own_query_values(path, logged):
    import logging

    from promptsearch.commands.serve import RedactQuery

    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", path, "1.1", 200), None)
    assert RedactQuery().filter(record) and record.args[2] == logged
    assert "s3cret" not in record.getMessage() and "abc" not in record.getMessage()


def test_private_tree_takes_group_and_other_bits_away(tmp_path):
    from promptsearch.dispatch.ray_session import private_tree

    root = tmp_path / "ray"
    (root / "session" / "logs").mkdir(parents=True)
    (root / "session" / "logs" / "raylet.out").write_text("x")
    (root / "latest").symlink_to(root / "session")
    for p in (root, root / "session", root / "session" / "logs"):
        os.chmod(p, 0o777)  # as Ray's try_make_directory_shared leaves them
    os.chmod(root / "session" / "logs" / "raylet.out", 0o644)
    private_tree(root)
    modes = {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode) for p in [root, *root.rglob("*")] if not p.is_symlink()}
    assert modes == {".": 0o700, "session": 0o700, "session/logs": 0o700, "session/logs/raylet.out": 0o600}


def test_job_files_get_the_same_device_and_count_checks(tmp_path):
    from promptsearch.jobs import JobError, parse_job

    for text, reason in [("budget:\n  device: tpu:99\n", r"j.yaml:2: budget.device: device must be"),
                         ("budget:\n  device: ../../etc/passwd\n", r"j.yaml:2: budget.device"),
                         ("trials: true\n", r"j.yaml:1: trials: must be a whole number"),
                         ("budget:\n  epochs: 2.5\n", r"j.yaml:2: budget.epochs: must be a whole number"),
                         ("backbone:\n  image_size: yes\n", r"j.yaml:2: backbone.image_size")]:
        with pytest.raises(JobError, match=reason):
            parse_job(text, "j.yaml", check=False)
    assert parse_job("budget:\n  device: cuda:1\n", "j.yaml", check=False).budget.device == "cuda:1"


def test_weights_that_are_not_weights_say_what_they_are(tmp_path, mobilenet_weights):
    import torch

    from promptsearch.backbones import WeightsError, load_state_file

    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    files = {"text.pth": ("write_text", "these are not weights\n"), "empty.pth": ("write_bytes", b""),
             "random.pth": ("write_bytes", bytes(range(7, 256)) * 16),
             "payload.pth": ("write_bytes", pickle.dumps({"w": Payload()})),
             "truncated.pth": ("write_bytes", mobilenet_weights.read_bytes()[:100_000]),
             "bad.safetensors": ("write_bytes", os.urandom(64))}
    for name, (how, data) in files.items():
        getattr(tmp_path / name, how)(data)
    torch.save({"w": Payload()}, tmp_path / "objects.pth")  # a torch zip holding a pickled object
    expected = {"text.pth": "a text file, not weights", "empty.pth": "the file is empty",
                "random.pth": "not a weights file torch or safetensors can read",
                "payload.pth": "a pickle payload that builds objects or calls code",
                "truncated.pth": "corrupt or truncated", "bad.safetensors": "not a safetensors file",
                "objects.pth": "pickled code or objects"}
    for name, reason in expected.items():
        with pytest.raises(WeightsError) as e:
            load_state_file(tmp_path / name)
        assert str(tmp_path / name) in str(e.value) and reason in str(e.value), str(e.value)
        assert "Please file an issue" not in str(e.value) and "pop from empty list" not in str(e.value)
    assert not marker.exists()


def test_a_corrupt_npz_says_so_when_a_trial_loads_it(tmp_path):
    from promptsearch.data import DataError, load_dataset

    (tmp_path / "breastmnist.npz").write_bytes(os.urandom(4096))
    with pytest.raises(DataError, match="breastmnist.npz.*corrupt or not an npz file"):
        load_dataset("breastmnist", root=tmp_path)
    np.savez(tmp_path / "breastmnist.npz", x=np.zeros(3))
    with pytest.raises(DataError, match="not a MedMNIST archive: train_images .* \\(it holds x\\)"):
        load_dataset("breastmnist", root=tmp_path)
