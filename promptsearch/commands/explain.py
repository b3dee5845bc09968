"""``promptsearch explain``: where an exported model looks on images, as PNG overlays.

    promptsearch explain exported/ scan1.png scan2.jpg --out maps/ [--backbone-weights mobilenet_v2-b0353104.pth]

Per image: the prediction (class probabilities, as ``promptsearch predict`` gives them) and PNG
overlays of its maps at the image's own size: Grad-CAM on any backbone; on a ViT also the attention
of the CLS and of the prompt tokens at the chosen blocks (``--layer``); the learned pixel prompt as an
image for pixel prompts. ``--arrays`` also writes each image's maps as float arrays (``.npz``).
``OUT/explanations.json`` lists every record; ``--json`` prints it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .common import fail, print_json
from .common import out as stdout


def explain(bundle: Path = typer.Argument(..., help="Bundle folder or zip written by `promptsearch export`."),
            images: list[Path] = typer.Argument(..., help="Image files (PNG, JPEG, ...)."),
            out: Path = typer.Option(..., "--out", help="Folder for the overlays and explanations.json."),
            backbone_weights: Optional[Path] = typer.Option(
                None, "--backbone-weights", help="Local backbone weights, if the bundle's recorded path is not here."),
            layer: list[int] = typer.Option([-1], "--layer", help="ViT block(s) whose attention to map (negative: from the end)."),
            arrays: bool = typer.Option(False, "--arrays", help="Also write each image's maps as float32 arrays (.npz)."),
            as_json: bool = typer.Option(False, "--json", help="Print the records as JSON.")) -> None:
    """Explain an exported model's predictions on images: Grad-CAM (and ViT attention) overlays."""
    from ..data import DataError
    from ..explain import explain_images
    from ..export import ExportError, load_exported

    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        fail(f"cannot read image {missing[0]}: no such file")
    try:
        model = load_exported(bundle, backbone_weights=backbone_weights)
        records = explain_images(model, images, out, layers=tuple(layer), save_arrays=arrays)
    except (ExportError, DataError, FileNotFoundError, ValueError, IndexError) as e:
        fail(str(e))
    for rec, path in zip(records, images):
        rec["file"] = str(path)
    (out / "explanations.json").write_text(json.dumps(records, indent=2) + "\n")
    if as_json:
        print_json(records)
        return
    from rich.table import Table

    t = Table(title=f"{model.bundle.dataset.get('name', '')}: explanations in {out}")
    for c in ("image", "predicted", "probability", "maps"):
        t.add_column(c)
    for r in records:
        t.add_row(r["file"], str(r.get("label", r["prediction"])), f"{max(r['probabilities']):.4f}", ", ".join(r["maps"]))
    stdout.print(t)  # stdout: the answer, not a log line


def register(app: typer.Typer) -> None:
    app.command("explain")(explain)
