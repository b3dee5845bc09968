"""Options and helpers shared by CLI commands (not itself a command module).

    promptsearch trial --help
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console

console = Console(stderr=True)  # progress and errors
out = Console()  # tables a user may pipe

DataRoot = typer.Option(None, "--data-root", envvar="PROMPTSEARCH_DATA_ROOT",
                        help="Folder holding the MedMNIST .npz files (or env PROMPTSEARCH_DATA_ROOT).")
BackboneOpt = typer.Option("vit_tiny_patch16_224", "--backbone",
                        help="timm model name, or torchvision:<name> (e.g. torchvision:mobilenet_v2).")
BackboneWeights = typer.Option(None, "--backbone-weights", help="Local weights file for the backbone (offline).")
Pretrained = typer.Option(False, "--pretrained", help="Fetch the backbone's pretrained weights from the hub.")
ImageSize = typer.Option(None, "--image-size", help="Backbone working size in pixels (default: the backbone's).")
WorkspaceOpt = typer.Option(None, "--workspace", envvar="PROMPTSEARCH_WORKSPACE",
                         help="Folder holding jobs, Ray Tune storage and the MLflow store (default ./promptsearch-runs).")
PatchSize = typer.Option(None, "--patch-size", help="ViT patch size override (e.g. 4 for 28 px input).")


class RichProgress:
    """Training progress as rich progress bars on stderr, one per stage (an epoch, a cache); a
    command subclasses it with its own ``epoch_end``. Hooks for ``pretrain`` and ``library build``."""

    def __init__(self) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=console)
        self.task = None

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def stage(self, description: str, total: int) -> None:
        self.task = self.progress.add_task(description, total=total, info="")

    def advance(self, n: int, **info: float) -> None:
        self.progress.update(self.task, advance=n, info="  ".join(f"{k} {v:.4f}" for k, v in info.items()))

    def done(self) -> None:
        pass


def fail(message: str, code: int = 2) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)  # grep-able, unwrapped
    raise typer.Exit(code)


def resolved(workspace: Any, job: str) -> tuple[Any, str]:
    """(Workspace, the job's full id) from a workspace option and a job id or unique prefix, or a
    clean exit naming what is wrong."""
    from ..yamlio import JobError
    from ..search.workspace import as_workspace

    ws = as_workspace(workspace)
    try:
        return ws, ws.resolve(job)
    except JobError as e:
        fail(str(e))


def loud_preflight_warnings() -> None:
    """Show every preflight warning (a randomly initialised backbone) on stderr as one loud line
    without a source line; other warnings as Python shows them. Called by the commands that submit
    a job (where a preflight runs), before they do."""
    import warnings

    from ..preflight import PreflightWarning

    default = warnings.showwarning
    if getattr(default, "preflight", False):
        return

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 - warnings' signature
        if issubclass(category, PreflightWarning):
            sys.stderr.write(f"\033[1;33mwarning:\033[0m {message}\n" if sys.stderr.isatty() else f"warning: {message}\n")
        else:
            default(message, category, filename, lineno, file, line)

    show.preflight = True
    warnings.showwarning = show
    warnings.simplefilter("always", PreflightWarning)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def reported_briefly(result: Any, as_json: bool) -> bool:
    """A resumable training run's result (a library build, a pretraining) as JSON, or a stopped
    run's one line; True when that is all there is to show."""
    if as_json:
        print_json(result.model_dump())
        return True
    if result.status == "stopped":
        console.print(f"stopped after epoch {result.epochs_done}/{result.epochs}; rerun the same command to resume")
        return True
    return False


def register(app: typer.Typer) -> None:  # shared helpers only
    return None
