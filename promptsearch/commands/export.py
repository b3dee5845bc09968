"""``promptsearch export`` and ``promptsearch predict``: bundle a trial of a job; run a bundle on images.

    promptsearch export JOB --pick knee --out exported/ --workspace promptsearch-runs [--compress svd:4+int8]
    promptsearch predict exported/ scan1.png scan2.jpg
    (promptsearch explain exported/ scan1.png --out maps/: promptsearch/commands/explain.py)
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import WorkspaceOpt, console, fail, print_json


def export(job: str = typer.Argument(..., help="Job id."),
           pick: str = typer.Option("knee", "--pick", help="'knee', 'best:<objective>[ where <metric> <= v]' or 'trial=<id>'."),
           out: Path = typer.Option(..., "--out", help="Bundle folder to write."),
           zip_: bool = typer.Option(False, "--zip", help="Also write OUT.zip."),
           compress: str = typer.Option("none", "--compress", metavar="SPEC",
                                        help="Store the weights compressed: svd:RANK, int8, int8:tensor or svd:RANK+int8; "
                                             "the compressed model is evaluated on the job's validation and test splits."),
           examples: int = typer.Option(4, "--examples", min=0, max=64,
                                        help="Explanation maps of this many validation images in OUT/examples/ (0: none)."),
           workspace: Optional[Path] = WorkspaceOpt) -> None:
    """Export one trial of a job (the knee of its Pareto front by default) as a loadable bundle."""
    from ..export import ExportError, export_job

    try:
        folder, info = export_job(workspace, job, pick, out, zip_path=out.with_suffix(".zip") if zip_ else None,
                                  compress=compress, examples=examples)
    except (ExportError, KeyError, ValueError) as e:
        fail(str(e).strip("'\""))
    if info.get("examples_skipped"):
        console.print(f"[yellow]warning:[/] {info['examples_skipped']}", highlight=False, soft_wrap=True)
    console.print(f"exported trial {info['trial_id']} of job {job} ({pick}) to {folder}")
    print_json(info)


def predict(bundle: Path = typer.Argument(..., help="Bundle folder or zip written by `promptsearch export`."),
            images: list[Path] = typer.Argument(..., help="Image files (PNG, JPEG, ...)."),
            backbone_weights: Optional[Path] = typer.Option(
                None, "--backbone-weights", help="Local backbone weights, if the bundle's recorded path is not here."),
            as_json: bool = typer.Option(False, "--json", help="One JSON object: {image: {class: probability}}.")) -> None:
    """Print class probabilities of an exported model for each image."""
    from rich.console import Console
    from rich.table import Table

    from ..export import ExportError, load_exported, predict_files

    try:
        model = load_exported(bundle, backbone_weights=backbone_weights)
        probs = predict_files(model, images)
    except (ExportError, FileNotFoundError, ValueError) as e:
        fail(str(e))
    if as_json:
        print_json({str(p): row for p, row in zip(images, probs)})
        return
    classes = model.bundle.classes
    t = Table(title=f"{model.bundle.dataset.get('name', '')} ({model.bundle.task})")
    t.add_column("image")
    for c in classes:
        t.add_column(c, justify="right")
    t.add_column("predicted")
    for p, row in zip(images, probs):
        t.add_row(str(p), *(f"{row[c]:.4f}" for c in classes), max(row, key=row.get))
    Console().print(t)  # stdout: the answer, not a log line


def register(app: typer.Typer) -> None:
    app.command("export")(export)
    app.command("predict")(predict)
