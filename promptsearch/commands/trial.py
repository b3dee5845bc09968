"""``promptsearch trial`` and ``promptsearch space``: run one candidate; inspect a space file.

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

space_app = typer.Typer(help="Inspect and validate search space files.", no_args_is_help=True)


@space_app.command("show")
def space_show(space: str = typer.Argument(..., help="A space file, or a name in search_spaces/."),
               as_json: bool = typer.Option(False, "--json", help="Print the validated space as JSON.")) -> None:
    """Validate a space and list its decisions, choices and size."""
    from ..space import SpaceError, load_space

    try:
        s = load_space(space)
    except SpaceError as e:
        fail(str(e))
    if as_json:
        print_json({"name": s.name, "hash": s.hash, "size": s.size(), "spec": s.to_dict(),
                    "genes": [{"name": g.name, "group": g.group, "choices": list(g.choices)} for g in s.genes]})
        return
    t = Table(title=f"{s.name} (hash {s.hash}, {s.size():,} architectures)")
    t.add_column("gene"), t.add_column("group"), t.add_column("choices"), t.add_column("when")
    for g in s.genes:
        when = s.spec.decisions[g.name].when if g.name in s.spec.decisions else {}
        t.add_row(g.name, g.group or "decision", ", ".join(map(str, g.choices)),
                  ", ".join(f"{k} in {list(v)}" for k, v in when.items()))
    out.print(t)


@space_app.command("validate")
def space_validate(files: list[Path] = typer.Argument(..., help="Space files to validate.")) -> None:
    """Validate space files; exit 2 with file:line: field: reason on the first bad one."""
    from ..space import SpaceError, load_space

    for f in files:
        try:
            s = load_space(f)
        except SpaceError as e:
            fail(str(e))
        out.print(f"{f}: ok ({s.name}, {s.size():,} architectures, hash {s.hash})")


@space_app.command("sample")
def space_sample(space: str = typer.Argument(...), n: int = typer.Option(5, "-n"), seed: int = typer.Option(0, "--seed")) -> None:
    """Print n seeded uniform samples as candidate JSON lines."""
    import random

    from ..space import SpaceError, load_space

    try:
        s = load_space(space)
    except SpaceError as e:
        fail(str(e))
    rng = random.Random(seed)
    for _ in range(n):
        print(json.dumps(s.sample(rng).to_json()))


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
        out = {**result.metrics, "status": result.status, "reason": result.reason,
               "test": result.test_metrics, "candidate": result.candidate, "epochs": result.epochs,
               "steps": result.steps, "wall_time_s": result.wall_time_s, "seed": result.seed}
        print_json(out)
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
    app.add_typer(space_app, name="space")
    app.command("trial")(trial)
