"""The package as users install it: a wheel (not the checkout) finds its bundled spaces and default job.

    python -m pytest tests/test_packaging.py -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_wheel_installed_elsewhere_lists_bundled_spaces_and_validates_the_default_job(tmp_path, data_root,
                                                                                       mobilenet_weights):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(REPO)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("promptsearch-*.whl")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"  # no search_spaces/ or jobs/ here: only the wheel can supply them
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "PROMPTSEARCH_DATA_ROOT": str(data_root),
           "PROMPTSEARCH_BACKBONE_WEIGHTS": str(mobilenet_weights), "MLFLOW_DISABLE_TELEMETRY": "true"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "promptsearch.cli", *args], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=300)

    where = subprocess.run([sys.executable, "-c", "import promptsearch; print(promptsearch.__file__)"], cwd=elsewhere,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(site), where  # the installed copy, not the checkout
    r = cli("space", "list", "--json")
    assert r.returncode == 0, r.stderr
    spaces = {s["name"]: s for s in json.loads(r.stdout)}
    assert {"medical", "pixel", "vpt"} <= set(spaces)
    assert all(Path(s["file"]).is_relative_to(site) for s in spaces.values())
    r = cli("search", "breast_pixel", "--check")
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)
    assert job["space"] == "pixel" and job["dataset"] == "breastmnist" and job["data_root"] == str(data_root)
    r = cli("space", "show", "medical", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["name"] == "medical", r.stderr
