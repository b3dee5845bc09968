"""``promptsearch library build | add | show``: component libraries (prompt blocks learned on data
that shows each anatomy, modality and pathology).

    promptsearch library build --datasets brain_tumor_mri kidney_ct eye_fundus --folders-root ../shared/data/folders \
        --data-root ../shared/data/medmnist --backbone torchvision:mobilenet_v2 \
        --backbone-weights ../shared/weights/mobilenet_v2-b0353104.pth --image-size 32 --epochs 3 --out artifacts/library/v1
    promptsearch library add --dataset skin_isic --library artifacts/library/v1 --out artifacts/library/v2 \
        --folders-root ../shared/data/folders --data-root ../shared/data/medmnist
    promptsearch library show artifacts/library/v2

Rerun the same build command after an interruption (Ctrl-C, kill -9): it resumes from the output
folder's checkpoint (the last finished epoch) and ends with the same library, bit for bit.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .common import (RichProgress, BackboneWeights, DataRoot, ImageSize, PatchSize, Pretrained, console, fail, out, print_json, reported_briefly)
from .data import CatalogFiles, FoldersRoot

library_app = typer.Typer(help="Component libraries: prompt blocks learned per anatomy, modality and pathology.",
                          no_args_is_help=True)


class RichHooks(RichProgress):
    """Build progress: one bar per epoch."""

    def epoch_end(self, epoch: int, row: dict[str, float]) -> None:
        aucs = {k.removesuffix("/val_auc"): v for k, v in row.items() if k.endswith("/val_auc")}
        shown = "  ".join(f"{k} {v:.3f}" for k, v in aucs.items())
        self.progress.console.print(f"epoch {epoch}: loss {row['train_loss']:.4f}  val auc: {shown}  "
                                    f"({row['seconds']:.0f} s, checkpoint saved)", highlight=False)


def _datasets(first: Optional[list[str]], rest: Optional[list[str]]) -> tuple[str, ...]:
    """``--datasets A B C`` (the names after the first arrive as arguments), ``--datasets A --datasets B``
    or ``--datasets A,B``: one tuple of names."""
    names = [n for part in (first or []) + (rest or []) for n in part.replace(",", " ").split()]
    if not names:
        fail("give the source datasets: --datasets A B C (catalogue names: promptsearch data list)")
    return tuple(names)


def _report(result, as_json: bool, out_dir: Path) -> None:
    from ..library import read_manifest

    if reported_briefly(result, as_json):
        return
    _show(read_manifest(out_dir), out_dir)
    console.print(f"{result.wall_time_s:.0f} s of training, peak RSS {result.peak_rss_mb:.0f} MB; use it: a job's "
                  f"`library: {out_dir}` (or a space's `library:` key) and a space whose source decision offers library",
                  highlight=False, markup=False)


def _show(m, path: Path) -> None:
    t = Table(title=f"library {path} · version {m.version}" + (f" (parent {m.parent})" if m.parent else "")
              + f" · {m.geometry.module} blocks {tuple(m.geometry.shape)} · {m.backbone.name}")
    for col in ("component", "kind", "datasets", "train images", "val AUC (mean)", "added in"):
        t.add_column(col, justify="right" if col in ("train images", "val AUC (mean)", "added in") else "left")
    for name, c in sorted(m.components.items(), key=lambda kv: (kv[1].kind, kv[0])):
        auc = c.metrics.get("val_auc_mean")
        t.add_row(name, c.kind, ", ".join(c.datasets), str(c.train_images), "" if auc is None else f"{auc:.3f}",
                  str(c.added_in))
    out.print(t)
    if m.old_tasks:
        o = Table(title="old tasks, validation AUC before and after growth")
        for col in ("dataset", "before", "after"):
            o.add_column(col)
        for name, f in m.old_tasks.items():
            o.add_row(name, f"{f['before']['auc']:.4f}", f"{f['after']['auc']:.4f}")
        out.print(o)


@library_app.command("build")
def build(
    datasets: Optional[list[str]] = typer.Option(None, "--datasets", help="Source datasets (catalogue names): --datasets A B C."),
    more: Optional[list[str]] = typer.Argument(None, hidden=True),
    catalog: Optional[list[Path]] = CatalogFiles,
    data_root: Optional[str] = DataRoot,
    folders_root: Optional[str] = FoldersRoot,
    backbone: str = typer.Option("torchvision:mobilenet_v2", "--backbone", help="timm model name, or torchvision:<name>."),
    backbone_weights: Optional[str] = BackboneWeights,
    pretrained: bool = Pretrained,
    image_size: Optional[int] = ImageSize,
    patch_size: Optional[int] = PatchSize,
    module: str = typer.Option("pixel", "--module", help="pixel (full-image patterns, any backbone) or token (a timm ViT)."),
    tokens: int = typer.Option(8, "--tokens", help="token blocks: tokens per block."),
    depth: str = typer.Option("shallow", "--depth", help="token blocks: shallow, deep or first_<k>."),
    fusion: str = typer.Option("gate", "--fusion", help="How a dataset composes its blocks: gate or attention (token: also concat)."),
    init: str = typer.Option("xavier", "--init", help="Block initialisation: normal, xavier, uniform, zero."),
    generic: bool = typer.Option(True, "--medical/--no-medical", help="Also learn the generic 'medical' block on every source."),
    epochs: int = typer.Option(3, "--epochs"),
    batch_size: int = typer.Option(32, "--batch-size"),
    lr: float = typer.Option(0.01, "--lr", help="AdamW learning rate (cosine over all steps)."),
    weight_decay: float = typer.Option(0.0, "--weight-decay"),
    max_train_samples: Optional[int] = typer.Option(None, "--max-train-samples", help="Seeded subset per dataset."),
    max_eval_samples: Optional[int] = typer.Option(256, "--max-eval-samples", help="Validation images per dataset."),
    seed: int = typer.Option(0, "--seed"),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads."),
    stop_after: Optional[int] = typer.Option(None, "--stop-after", help="Train at most N epochs now; rerun to resume."),
    fresh: bool = typer.Option(False, "--fresh", help="Ignore (and delete) the output folder's checkpoint."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Output folder (default artifacts/library/<module>-<backbone>-<size>)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Learn one prompt block per component of the source datasets (multi-task, frozen backbone);
    write library.safetensors + library.json."""
    from ..data import DataError
    from ..library import BuildConfig, LibraryError, build_library

    names = _datasets(datasets, more)
    try:
        config = BuildConfig.make(datasets=names, module=module, backbone=backbone, backbone_weights=backbone_weights,
                                  pretrained=pretrained, image_size=image_size or 32, patch_size=patch_size, tokens=tokens,
                                  depth=depth, fusion=fusion, init=init, generic=generic, epochs=epochs,
                                  batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                                  max_train_samples=max_train_samples, max_eval_samples=max_eval_samples, seed=seed)
    except LibraryError as e:
        fail(str(e))
    if out_dir is None:
        out_dir = Path("artifacts") / "library" / f"{module}-{backbone.rpartition(':')[2]}-{config.image_size}"
    try:
        with nullcontext() if as_json else RichHooks() as hooks:
            result = build_library(config, out_dir, data_root=data_root, folders_root=folders_root, catalog=catalog or (),
                                   threads=threads, stop_after=stop_after, fresh=fresh, hooks=hooks)
    except (LibraryError, DataError, FileNotFoundError) as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail(f"interrupted; rerun the same command to resume from {out_dir / 'checkpoint.pt'} (last finished epoch)", 130)
    _report(result, as_json, out_dir)


@library_app.command("add")
def add(
    dataset: list[str] = typer.Option(..., "--dataset", help="A new source dataset (repeat for several)."),
    library: Path = typer.Option(..., "--library", help="The library folder to grow (it stays as it is)."),
    out_dir: Path = typer.Option(..., "--out", help="The grown library's folder (a new version; parent = --library)."),
    catalog: Optional[list[Path]] = CatalogFiles,
    data_root: Optional[str] = DataRoot,
    folders_root: Optional[str] = FoldersRoot,
    backbone_weights: Optional[str] = BackboneWeights,
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Default: the parent's."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    lr: Optional[float] = typer.Option(None, "--lr"),
    max_train_samples: Optional[int] = typer.Option(None, "--max-train-samples"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads."),
    stop_after: Optional[int] = typer.Option(None, "--stop-after", help="Train at most N epochs now; rerun to resume."),
    fresh: bool = typer.Option(False, "--fresh", help="Ignore (and delete) the output folder's checkpoint."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Learn blocks for the tags the library lacks from new datasets; existing blocks stay
    bit-identical; the manifest records the old tasks' figures before and after."""
    from ..data import DataError
    from ..library import LibraryError, add_to_library

    overrides = {k: v for k, v in (("epochs", epochs), ("batch_size", batch_size), ("lr", lr),
                                   ("max_train_samples", max_train_samples), ("seed", seed)) if v is not None}
    try:
        with nullcontext() if as_json else RichHooks() as hooks:
            result = add_to_library(library, dataset, out_dir, data_root=data_root, folders_root=folders_root,
                                    catalog=catalog or (), backbone_weights=backbone_weights, threads=threads,
                                    stop_after=stop_after, fresh=fresh, hooks=hooks, **overrides)
    except (LibraryError, DataError, FileNotFoundError) as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail(f"interrupted; rerun the same command to resume from {out_dir / 'checkpoint.pt'}", 130)
    _report(result, as_json, out_dir)


@library_app.command("show")
def show(library: Path = typer.Argument(..., help="A library folder."),
         as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON.")) -> None:
    """A library's components: kind, source datasets, training images, validation AUC, generation."""
    from ..library import LibraryError, open_library

    try:
        lib = open_library(library)  # checks the weights against the manifest
    except LibraryError as e:
        fail(str(e))
    if as_json:
        print_json(lib.manifest.model_dump(mode="json"))
        return
    _show(lib.manifest, library)


def register(app: typer.Typer) -> None:
    app.add_typer(library_app, name="library")
