"""``promptsearch pretrain``: make a ViT backbone from local images (no hub access needed).

    promptsearch pretrain --mode distill --dataset pneumoniamnist --data-root ../shared/data/medmnist \
        --teacher-weights ../shared/weights/mobilenet_v2-b0353104.pth --epochs 2

Rerun the same command after an interruption: it resumes from the output folder's checkpoint.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .common import RichProgress, DataRoot, console, fail, reported_briefly


class RichHooks(RichProgress):
    """Pretraining progress: one bar per epoch (and the teacher cache)."""

    def epoch_end(self, epoch: int, row: dict[str, float]) -> None:
        from ..pretrain import epoch_metrics

        shown = "  ".join(f"{k} {v:.4f}" for k, v in epoch_metrics(row).items())
        self.progress.console.print(f"epoch {epoch}: {shown}  ({row['seconds']:.0f} s, checkpoint saved)")


def pretrain(
    mode: str = typer.Option(..., "--mode", help="supervised (labels) | mae (masked patches) | distill (teacher features)."),
    dataset: list[str] = typer.Option(["pneumoniamnist"], "--dataset",
                                      help="MedMNIST name or folder:PATH; repeat for several (supervised: one head each)."),
    data_root: Optional[str] = DataRoot,
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default artifacts/pretrained/<mode>-<datasets>)."),
    backbone: str = typer.Option("vit_tiny_patch16_224", "--backbone", help="timm ViT to train from scratch."),
    image_size: int = typer.Option(28, "--image-size", help="Working size in pixels."),
    patch_size: int = typer.Option(4, "--patch-size", help="ViT patch size (0: the model's own)."),
    epochs: int = typer.Option(5, "--epochs"),
    batch_size: int = typer.Option(64, "--batch-size"),
    lr: float = typer.Option(1e-3, "--lr", help="AdamW peak learning rate (warmup, then cosine)."),
    weight_decay: float = typer.Option(0.05, "--weight-decay"),
    max_train_samples: Optional[int] = typer.Option(None, "--max-train-samples", help="Seeded subset per dataset."),
    max_eval_samples: Optional[int] = typer.Option(512, "--max-eval-samples", help="Validation images per dataset."),
    augment: Optional[bool] = typer.Option(None, "--augment/--no-augment", help="Flips + shifts (default: on, off for distill)."),
    mask_ratio: float = typer.Option(0.75, "--mask-ratio", help="mae: share of patches hidden."),
    teacher: str = typer.Option("torchvision:mobilenet_v2", "--teacher", help="distill: the teacher model."),
    teacher_weights: Optional[str] = typer.Option(None, "--teacher-weights", envvar="PROMPTSEARCH_TEACHER_WEIGHTS",
                                                  help="distill: the teacher's local weights file."),
    teacher_image_size: int = typer.Option(64, "--teacher-image-size", help="distill: the teacher's input size."),
    seed: int = typer.Option(0, "--seed"),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads."),
    stop_after: Optional[int] = typer.Option(None, "--stop-after", help="Train at most N epochs now; rerun to resume."),
    fresh: bool = typer.Option(False, "--fresh", help="Ignore (and delete) the output folder's checkpoint."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Pretrain a ViT backbone on local images; write backbone.safetensors + backbone.json."""
    from ..data import DataError
    from ..pretrain import PretrainConfig, PretrainError
    from ..pretrain import pretrain as run
    from ..pretrain import use_flags

    try:
        config = PretrainConfig.make(
            mode=mode, datasets=tuple(dataset), backbone=backbone, image_size=image_size, patch_size=patch_size or None,
            epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
            max_train_samples=max_train_samples, max_eval_samples=max_eval_samples, augment=augment,
            mask_ratio=mask_ratio, teacher=teacher, teacher_weights=teacher_weights,
            teacher_image_size=teacher_image_size, seed=seed)
    except PretrainError as e:
        fail(str(e))
    if out is None:
        names = "+".join(Path(d.partition(":")[2]).name if d.startswith("folder:") else d for d in config.datasets)
        out = Path("artifacts") / "pretrained" / f"{mode}-{names}"
    try:
        with nullcontext() if as_json else RichHooks() as hooks:
            result = run(config, out, data_root=data_root, threads=threads, stop_after=stop_after, fresh=fresh,
                         hooks=hooks)
    except (PretrainError, DataError, FileNotFoundError) as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail(f"interrupted; rerun the same command to resume from {out / 'checkpoint.pt'} (last finished epoch)", 130)
    if reported_briefly(result, as_json):
        return
    t = Table(title=f"{mode} backbone: {result.weights}")
    t.add_column("metric"), t.add_column("value", justify="right")
    for k, v in result.metrics.items():
        t.add_row(k, f"{v:.4g}")
    t.add_row("epochs", f"{result.epochs_done} (this call from epoch {result.start_epoch})")
    t.add_row("wall time (s)", f"{result.wall_time_s:.0f}")
    t.add_row("peak RSS (MB)", f"{result.peak_rss_mb:.0f}")
    console.print(t)
    console.print(f"use it: {use_flags(backbone, image_size, patch_size, result.weights)}")


def register(app: typer.Typer) -> None:
    app.command("pretrain")(pretrain)
