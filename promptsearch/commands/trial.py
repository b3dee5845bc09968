"""``promptsearch trial``: train and evaluate one candidate.

    promptsearch trial --space pixel --dataset breastmnist --backbone torchvision:mobilenet_v2 \
        --backbone-weights ../shared/weights/mobilenet_v2-b0353104.pth --image-size 64 --seed 0 --json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .common import (BackboneOpt, BackboneWeights, DataRoot, ImageSize, PatchSize, Pretrained, console, fail, out,
                     print_json)


def trial(
    space: str = typer.Option("medical", "--space", help="Space file or name in search_spaces/."),
    dataset: str = typer.Option("breastmnist", "--dataset", help="MedMNIST name, or folder:PATH of class sub-folders."),
    data_root: Optional[str] = DataRoot,
    download: bool = typer.Option(False, "--download", help="Let MedMNIST download missing files (needs network)."),
    backbone: str = BackboneOpt,
    backbone_weights: Optional[str] = BackboneWeights,
    pretrained: bool = Pretrained,
    image_size: Optional[int] = ImageSize,
    patch_size: Optional[int] = PatchSize,
    candidate: Optional[str] = typer.Option(None, "--candidate", help="Candidate JSON ({'genome': [...]} or an architecture), or @FILE."),
    seed: int = typer.Option(0, "--seed", help="Seeds the sampled candidate (without --candidate) and training."),
    epochs: int = typer.Option(5, "--epochs"),
    batch_size: int = typer.Option(32, "--batch-size"),
    max_train_samples: Optional[int] = typer.Option(None, "--max-train-samples"),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads."),
    weights_out: Optional[Path] = typer.Option(None, "--weights-out", help="Save the trained prompt+head weights (safetensors)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (objectives under their names)."),
) -> None:
    """Train and evaluate one prompt configuration on a dataset; print its metrics."""
    from ..data import DataError, load_dataset
    from ..backbones import BackboneSpec
    from ..space import Candidate, SpaceError, load_space
    from ..trial import Budget, run_trial

    try:
        s = load_space(space)
        if candidate:
            text = Path(candidate[1:]).read_text() if candidate.startswith("@") else candidate
            cand = Candidate.from_json(s, json.loads(text))
        else:
            cand = s.sample(seed)
        data = load_dataset(dataset, root=data_root, download=download)
    except (SpaceError, DataError, json.JSONDecodeError, FileNotFoundError) as e:
        fail(str(e))
    spec = BackboneSpec(backbone, image_size=image_size, patch_size=patch_size, weights=backbone_weights,
                        pretrained=pretrained)
    budget = Budget(epochs=epochs, batch_size=batch_size, max_train_samples=max_train_samples, threads=threads)
    if not as_json:
        console.print(f"[bold]candidate[/] {json.dumps(cand.architecture)}")
        console.print(f"[bold]data[/] {data!r}")
    cb = None if as_json else (lambda e, m: console.print(
        f"epoch {e}: loss {m['train_loss']:.4f}  val auc {m['val_auc']:.4f}  acc {m['val_accuracy']:.4f}"))
    result = run_trial(cand, data, spec, budget, seed=seed, on_epoch=cb, weights_out=weights_out)
    if as_json:
        record = {**result.metrics, "status": result.status, "reason": result.reason,
                  "test": result.test_metrics, "candidate": result.candidate, "epochs": result.epochs,
                  "steps": result.steps, "wall_time_s": result.wall_time_s, "seed": result.seed}
        print_json(record)
    else:
        t = Table(title=f"trial {result.status}" + (f": {result.reason}" if result.reason else ""))
        t.add_column("metric"), t.add_column("validation", justify="right"), t.add_column("test", justify="right")
        for k, v in result.metrics.items():
            tv = result.test_metrics.get(k)
            t.add_row(k, f"{v:.4g}", "" if tv is None else f"{tv:.4g}")
        out.print(t)
    if result.status != "completed":
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("trial")(trial)
