"""Shared fixtures: the real MedMNIST data and the real MobileNetV2 weights from ../shared.

    PROMPTSEARCH_DATA_ROOT=../shared/data/medmnist python -m pytest
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
torch.set_num_threads(min(2, os.cpu_count() or 1))


def _data_root() -> Path:
    return Path(os.environ.get("PROMPTSEARCH_DATA_ROOT", REPO.parent / "shared" / "data" / "medmnist")).resolve()


def _weights() -> Path:
    return Path(os.environ.get("PROMPTSEARCH_BACKBONE_WEIGHTS",
                               REPO.parent / "shared" / "weights" / "mobilenet_v2-b0353104.pth")).resolve()


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = _data_root()
    if not (root / "breastmnist.npz").exists():
        pytest.fail(f"real MedMNIST data not found at {root}: set PROMPTSEARCH_DATA_ROOT")
    os.environ["PROMPTSEARCH_DATA_ROOT"] = str(root)
    return root


@pytest.fixture(scope="session")
def mobilenet_weights() -> Path:
    w = _weights()
    if not w.exists():
        pytest.fail(f"MobileNetV2 weights not found at {w}: set PROMPTSEARCH_BACKBONE_WEIGHTS")
    return w


@pytest.fixture(scope="session")
def breast(data_root):
    from promptsearch.data import load_dataset

    return load_dataset("breastmnist", root=data_root)


def write_job_defaults(folder: Path, data_root: Path, weights: Path, max_train_samples: int = 96,
                       trials: int = 3) -> Path:
    """A server's job defaults file (``--job-defaults``): local data and weights, tiny budgets
    (MobileNetV2 at 32 px, one epoch: a trial trains ~1 s)."""
    import yaml

    path = folder / "job-defaults.yaml"
    path.write_text(yaml.safe_dump({
        "space": "pixel", "dataset": "breastmnist", "data_root": str(data_root),
        "backbone": {"name": "torchvision:mobilenet_v2", "image_size": 32, "weights": str(weights)},
        "budget": {"epochs": 1, "batch_size": 32, "max_train_samples": max_train_samples, "latency_repeats": 2},
        "strategy": "random", "trials": trials, "concurrency": 1, "resources": {"cpu": 1}, "seed": 0,
    }))
    return path


OLD_WORKSPACE = REPO / "tests" / "fixtures" / "old_workspace"  # written before the package split: tests/test_migration.py
OLD_ROOT = "/tmp/psold"  # where that fixture was written (inside its MLflow store)


def copy_old_workspace(tmp_path: Path, data_root: Path, weights: Path) -> tuple[Path, str]:
    """A copy of :data:`OLD_WORKSPACE` at ``tmp_path / "ws"`` with its path placeholders filled in and
    its MLflow store moved with it; returns the copy's root and its one job's id."""
    import sqlite3

    root = tmp_path / "ws"
    shutil.copytree(OLD_WORKSPACE, root)
    for p in list(root.glob("jobs/*/*.json")) + list(root.glob("jobs/*/*.yaml")):
        p.write_text(p.read_text().replace("@WORKSPACE@", str(root)).replace("@DATA_ROOT@", str(data_root))
                     .replace("@BACKBONE_WEIGHTS@", str(weights)))
    with sqlite3.connect(root / "mlflow" / "mlflow.db") as db:
        db.execute("UPDATE experiments SET artifact_location = replace(artifact_location, ?, ?)", (OLD_ROOT, str(root)))
        db.execute("UPDATE runs SET artifact_uri = replace(artifact_uri, ?, ?)", (OLD_ROOT, str(root)))
    return root, next(p.name for p in (root / "jobs").iterdir())


# --- the browser tests: Debian's chromium driven by playwright (never `playwright install`) --------------
ARTIFACTS = REPO / "test-artifacts"  # screenshots and downloads of the browser tests
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]


@pytest.fixture(scope="module")
def one_torch_thread():
    """A module's tensor tests on one torch thread (``pytestmark = pytest.mark.usefixtures(...)``)."""
    from promptsearch.threads import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def vit():
    """A ViT-tiny at 28 px, patch 4, randomly initialised with seed 0 (no pretrained ViT exists offline)."""
    from promptsearch.backbones import BackboneSpec, build_backbone

    torch.manual_seed(0)
    return build_backbone(BackboneSpec("vit_tiny_patch16_224", image_size=28, patch_size=4))


def launch_chromium(playwright):
    """Debian's chromium, headless, with :data:`CHROMIUM_ARGS`, from a running ``sync_playwright()``."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


@pytest.fixture(scope="module")
def browser():
    """One headless chromium per test module (skips where it is not installed)."""
    if CHROMIUM is None:
        pytest.skip("chromium missing")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A fresh page of :func:`browser` (1400 x 1000, downloads accepted) that fails its test on any
    page error or failed request."""
    errors: list[str] = []
    pg = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    yield pg
    pg.close()
    assert not errors, errors


def open_job(page, server, job_id: str) -> None:
    """The dashboard's page of ``job_id`` on ``server`` (a :class:`live_server.Server`), once drawn whole."""
    page.goto(f"{server.url}/#/jobs/{job_id}")
    page.wait_for_selector("#view-job[data-ready='1'][data-complete='1']", timeout=60_000)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: the mark must be on the item by then
def pytest_collection_modifyitems(items):
    """A test module's ``LONG_OFF_SPACE = {name: space}``: its tests parametrized with that ``name``
    on any other ``space`` are marked ``long`` (tests/test_strategies.py: mobo's GP off the pixel space)."""
    for item in items:
        rule = getattr(item.module, "LONG_OFF_SPACE", {})
        params = getattr(getattr(item, "callspec", None), "params", {})
        home = rule.get(params.get("name"))
        if home is not None and "space" in params and params["space"] != home:
            item.add_marker(pytest.mark.long)
