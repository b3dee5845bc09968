"""Example explanations of a job's trial (an ``APIRouter`` that :func:`promptsearch.service.app.create_app`
includes, guarded by the same bearer-token dependency as every job endpoint).

    curl -H "Authorization: Bearer $TOKEN" 'localhost:8000/jobs/JOB/trials/t0003/explanations?examples=4'

``GET /jobs/{id}/trials/{trial_id}/explanations``: the trial exported as a bundle with example maps
(:func:`promptsearch.export.export_job` with ``examples``: Grad-CAM on any backbone, on a ViT also the
attention of the CLS and prompt tokens, of the first validation images, classes in turn), returned as
JSON with every PNG inline (``png_base64``: an ``<img src="data:image/png;base64,...">`` needs no
token of its own). The bundle is built once per (trial, examples) under
``<workspace>/explanations/<job>/<trial>/n<examples>/`` and served from there afterwards (a completed
trial's weights never change). The first request for a trial takes a few seconds of CPU (one thread).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Query

from .requests import valid_id
from .views import existing

MAX_EXAMPLES = 16


def _png(folder: Path, rel: str) -> dict[str, Any]:
    data = (folder / rel).read_bytes()
    return {"file": rel, "bytes": len(data), "png_base64": base64.b64encode(data).decode("ascii")}


def explanations_view(folder: Path, job_id: str, trial_id: str) -> dict[str, Any]:
    """A bundle folder's example records with their PNGs inline."""
    cfg = json.loads((folder / "config.json").read_text())
    examples = []
    for e in cfg.get("examples", []):
        rec = {k: v for k, v in e.items() if k not in ("maps", "input", "pixel_prompt", "arrays")}
        rec["input"] = _png(folder, e["input"]) if e.get("input") else None
        rec["maps"] = {name: _png(folder, rel) for name, rel in e.get("maps", {}).items()}
        examples.append(rec)
    pixel = next((e["pixel_prompt"] for e in cfg.get("examples", []) if e.get("pixel_prompt")), None)
    return {"job_id": job_id, "trial_id": trial_id, "candidate_key": cfg.get("candidate_key"),
            "task": cfg.get("task"), "classes": cfg.get("classes", []),
            "module": cfg.get("architecture", {}).get("module"), "backbone": cfg.get("backbone", {}).get("name"),
            "map_names": sorted({k for e in examples for k in e["maps"]}),
            "pixel_prompt": _png(folder, pixel) if pixel else None, "examples": examples}


def explain_router(ws: Path, guarded: list) -> APIRouter:
    """The explanations endpoint over the workspace ``ws``; ``guarded``: the app's auth dependencies."""
    r = APIRouter(tags=["explanations"], dependencies=guarded)
    lock = threading.Lock()  # one build at a time: each takes the CPU for seconds

    @r.get("/jobs/{job_id}/trials/{trial_id}/explanations")
    def explanations(job_id: str, trial_id: str,
                     examples: int = Query(4, ge=1, le=MAX_EXAMPLES, description="validation images to explain")) -> dict[str, Any]:
        """Example explanation maps (PNG overlays, base64) of a completed trial on a few validation
        images: prediction, probabilities, true label, and one overlay per map."""
        from ..export import ExportError, NothingToExport, UnknownTrial, export_job

        existing(ws, job_id)
        valid_id(trial_id, "trial id")
        folder = ws / "explanations" / job_id / trial_id / f"n{examples}"
        with lock:
            if not (folder / "config.json").is_file():
                scratch = ws / "tmp"
                scratch.mkdir(mode=0o700, exist_ok=True)
                with tempfile.TemporaryDirectory(prefix="explain-", dir=scratch) as tmp:
                    try:
                        built, _ = export_job(ws, job_id, f"trial={trial_id}", Path(tmp) / "bundle", examples=examples)
                    except UnknownTrial as e:
                        raise HTTPException(404, str(e)) from None
                    except NothingToExport as e:
                        raise HTTPException(409, str(e)) from None
                    except ExportError as e:
                        raise HTTPException(422, str(e)) from None
                    folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                    if folder.exists():  # a folder without config.json: not ours to trust
                        shutil.rmtree(folder)
                    os.replace(built, folder)  # one rename: the folder is complete or absent
        return explanations_view(folder, job_id, trial_id)

    return r
