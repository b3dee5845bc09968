"""Shared fixtures: the real MedMNIST data and the real MobileNetV2 weights from ../shared.

    PROMPTSEARCH_DATA_ROOT=../shared/data/medmnist python -m pytest
"""

from __future__ import annotations

import os
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
