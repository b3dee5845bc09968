"""Preflight: a job's dataset and backbone weights checked once, before Ray, MLflow or any trial
starts, so that a bad file fails the submission naming it instead of failing trial after trial.

    PROMPTSEARCH_DATA_ROOT=../shared/data/medmnist python -c "from promptsearch.jobs import JobSpec; from promptsearch.preflight import preflight; print(preflight(JobSpec(dataset='breastmnist')))"

:func:`preflight` is called by :func:`promptsearch.service.jobs.submit` (the CLI and the REST API
share it). It loads the dataset exactly as a trial does (once: MedMNIST arrays are small; an
image folder decodes into the pixel cache the trials then read), requires at least two classes in
every split, builds the backbone once on the CPU with strict weight loading (never from a hub),
and runs one image through it at the working size. It raises :class:`PreflightError` (a
:class:`~promptsearch.jobs.JobError`) whose message starts with the job field and names the file.

The dataset and backbone checks run in a short-lived child process (:func:`check_files`: the job's
fields on stdin, the verdict on stdout): torch, the dataset and
the backbone (~1 GiB) go away with it instead of staying in the coordinator or the server for as
long as they run. Its errors come back as the same :class:`PreflightError` messages.

Warnings (a randomly initialised backbone) go to the innermost :func:`collect_warnings` block of
the calling thread, or else to Python's ``warnings`` as :class:`PreflightWarning`.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .jobs import JobError, JobSpec

log = logging.getLogger("promptsearch.preflight")

RANDOM_BACKBONE = "random-initialised backbone: results measure the prompt alone"
MEDMNIST_KEYS = tuple(f"{split}_{part}" for split in ("train", "val", "test") for part in ("images", "labels"))


class PreflightError(JobError):
    """A job whose files cannot run: the message names the job field and the file."""


class WorkspaceUnusable(PreflightError):
    """The workspace cannot take a job (read-only, or too little free space): the server's
    trouble (HTTP 507), not the request's."""


class PreflightWarning(UserWarning):
    """A job that runs but probably not as meant (a randomly initialised backbone)."""


_sink: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("promptsearch_preflight_warnings", default=None)


@contextlib.contextmanager
def collect_warnings() -> Iterator[list[str]]:
    """Collect the preflight warnings raised inside the block (in this thread/context) into a list."""
    found: list[str] = []
    token = _sink.set(found)
    try:
        yield found
    finally:
        _sink.reset(token)


def _warn(message: str) -> None:
    sink = _sink.get()
    if sink is not None:
        sink.append(message)
    else:
        warnings.warn(message, PreflightWarning, stacklevel=3)


def preflight(spec: JobSpec, workspace: Any = None) -> list[str]:
    """Check the workspace (when given: a folder or a :class:`~promptsearch.search.workspace.Workspace`),
    the job's dataset and its backbone (see the module docstring); returns the warnings.
    ``spec``'s paths must be resolved (:func:`~promptsearch.jobs.resolve_paths`)."""
    if workspace is not None:
        check_workspace(Path(getattr(workspace, "root", workspace)))
    notes = []
    for field, backbone in used_backbones(spec):
        check_files(spec.model_copy(update={"backbone": backbone}))
        if not backbone.weights and not backbone.pretrained:
            notes.append(f"{RANDOM_BACKBONE} ({backbone.name} has no {field}.weights and pretrained is false; "
                         f"point {field}.weights at a local file for a meaningful search)")
    for note in notes:
        _warn(note)
    return notes


def used_backbones(spec: JobSpec) -> list[tuple[str, Any]]:
    """``(job field, BackboneSpec)`` of every backbone the job's trials can run on: the ones its
    space's ``backbone`` decision chooses (``backbones.NAME``), else its ``backbone``."""
    from .space import SpaceError, load_space

    try:
        space = load_space(spec.space)
        choices = (space.fix(**spec.fix) if spec.fix else space).choices().get("backbone", ("",))
    except (SpaceError, ValueError):  # the job's own checks report a bad space
        choices = ("",)
    return [(f"backbones.{c}" if c else "backbone", spec.backbone_for(c)) for c in dict.fromkeys(choices)]


# --- the child process -----------------------------------------------------------------------------------
# Its lifetime: a Python start, torch and the backbone's library imported, the dataset read, one image
# through the backbone (seconds). Longer means a hung file system or a huge backbone: say so.
CHILD_TIMEOUT_S = 600.0


def check_files(spec: JobSpec) -> None:
    """:func:`check_dataset` and :func:`check_backbone` in a child process (see the module
    docstring): returns when both pass, raises their :class:`PreflightError` when one does not."""
    fields = {"dataset": spec.dataset, "data_root": spec.data_root,
              "backbone": spec.backbone.model_dump(mode="json")}
    # -P: no current directory on the child's path (a stray torch.py there is not imported); this very
    # promptsearch is, appended where the child's own path lacks it (a checkout run from its folder)
    package_parent = str(Path(__file__).resolve().parent.parent)
    bootstrap = (f"import sys\nif {package_parent!r} not in sys.path:\n    sys.path.append({package_parent!r})\n"
                 "from promptsearch.preflight import _child\nsys.exit(_child())")
    try:
        done = subprocess.run([sys.executable, "-P", "-c", bootstrap], input=json.dumps(fields), capture_output=True,
                              text=True, timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise PreflightError(f"dataset/backbone: the check of {spec.dataset} and {spec.backbone.name} did not end "
                             f"within {CHILD_TIMEOUT_S:.0f} s (a hung file system?)") from None
    verdict = _verdict(done.stdout)
    if verdict is None:
        why = f"signal {-done.returncode}" if done.returncode < 0 else f"exit code {done.returncode}"
        last = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise PreflightError(f"dataset/backbone: the process checking {spec.dataset} and {spec.backbone.name} died "
                             f"({why}{': out of memory?' if done.returncode == -9 else ''}; {last})")
    log.debug("preflight of %s / %s ran in process %s%s", spec.dataset, spec.backbone.name, verdict.get("pid"),
              f"; its stderr: {done.stderr[-2000:]}" if done.stderr.strip() else "")
    if "error" in verdict:
        raise PreflightError(verdict["error"])
    if "crash" in verdict:  # a bug, not a bad file: its traceback, as the check would have raised it here
        raise RuntimeError(f"preflight crashed in its child process {verdict.get('pid')}:\n{verdict['crash']}")


def _verdict(stdout: str) -> dict[str, Any] | None:
    """The child's verdict: the last line of its stdout (whatever a library printed comes before it)."""
    lines = stdout.strip().splitlines()
    with contextlib.suppress(ValueError):
        v = json.loads(lines[-1]) if lines else None
        if isinstance(v, dict) and "pid" in v:
            return v
    return None


def _child() -> int:
    """The child's side of :func:`check_files` (also ``python -m promptsearch.preflight``): the job's
    dataset and backbone fields (JSON) on stdin, one JSON line on stdout: ``{"pid": N}`` (passed), with ``"error"`` (a PreflightError's
    message) or ``"crash"`` (a traceback)."""
    import traceback
    from types import SimpleNamespace

    from .backbone_spec import BackboneSpec

    verdict: dict[str, Any] = {"pid": os.getpid()}
    try:
        fields = json.loads(sys.stdin.read())
        spec = SimpleNamespace(dataset=fields["dataset"], data_root=fields["data_root"],
                               backbone=BackboneSpec.model_validate(fields["backbone"]))
        check_dataset(spec)  # type: ignore[arg-type] - the fields the checks read
        check_backbone(spec)  # type: ignore[arg-type]
    except PreflightError as e:
        verdict["error"] = str(e)
    except Exception:  # noqa: BLE001 - reported to the parent, which raises it
        verdict["crash"] = traceback.format_exc(limit=20)
    sys.stdout.write("\n" + json.dumps(verdict) + "\n")
    sys.stdout.flush()
    return 0


# --- the workspace --------------------------------------------------------------------------------------
# What a job writes before its first trial ends: MLflow's SQLite store with its schema (~1 MB), a
# local Ray session's logs and sockets (~5-20 MB), state and weights files (KB each). Below this a
# job would fail half-started, with MLflow's SQL in the message; 64 MiB is a few such starts.
MIN_FREE_BYTES = 64 * 1024**2


def check_workspace(root: Path, min_free: int = MIN_FREE_BYTES) -> None:
    """The workspace (or the nearest folder above it that exists) is writable and has ``min_free``
    bytes free. Writes nothing."""
    import os

    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except OSError as e:
        raise WorkspaceUnusable(f"workspace: {probe}: {e.strerror or e} (errno {e.errno})") from None
    if st.f_flag & os.ST_RDONLY or not os.access(probe, os.W_OK):
        raise WorkspaceUnusable(f"workspace: {probe}: read-only (errno 30 EROFS): a job cannot write its state there")
    free = st.f_bavail * st.f_frsize
    if free < min_free:
        raise WorkspaceUnusable(f"workspace: {probe}: only {free / 1024**2:.1f} MiB free; a job needs at least "
                                f"{min_free / 1024**2:.0f} MiB (MLflow's store, Ray's session files) before it starts")


# --- the dataset ---------------------------------------------------------------------------------------
def _medmnist_file(spec: JobSpec) -> Path | None:
    """The .npz a MedMNIST dataset name reads (``None`` for folders and catalogue names)."""
    from .data import default_root, medmnist_meta

    if ":" in spec.dataset or Path(spec.dataset).expanduser().is_dir():
        return None
    meta = medmnist_meta(spec.dataset)
    root = default_root(spec.data_root)
    if meta is None or root is None:
        return None
    return root / f"{meta['name']}.npz"


def check_npz(path: Path) -> None:
    """A MedMNIST archive: a zip (``.npz``) holding every split's images and labels."""
    if not path.is_file():
        return  # load_dataset says where it looked and how to point elsewhere
    try:
        with zipfile.ZipFile(path) as z:
            names = {n.removesuffix(".npy") for n in z.namelist()}
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise PreflightError(f"dataset: {path}: corrupt or not an npz file ({type(e).__name__}: {e})") from None
    missing = [k for k in MEDMNIST_KEYS if k not in names]
    if missing:
        raise PreflightError(f"dataset: {path}: not a MedMNIST archive: missing {', '.join(missing)} "
                             f"(it holds {', '.join(sorted(names)) or 'nothing'})")


def check_dataset(spec: JobSpec) -> Any:
    """Load the dataset as a trial does; every split non-empty with at least two classes."""
    from .data import DataError, load_dataset

    npz = _medmnist_file(spec)
    if npz is not None:
        check_npz(npz)
    where = str(npz) if npz is not None and npz.is_file() else spec.dataset
    try:
        data = load_dataset(spec.dataset, root=spec.data_root)  # never downloads (download=False)
    except DataError as e:
        raise PreflightError(f"dataset: {e}") from None
    except Exception as e:  # noqa: BLE001 - numpy/zip/PIL raise many kinds for a bad file
        raise PreflightError(f"dataset: {where}: unreadable ({type(e).__name__}: {_first_line(e)})") from None
    source = data.source or where
    for split in ("train", "val", "test"):
        part = getattr(data, split)
        if len(part) == 0:
            raise PreflightError(f"dataset: {source}: the {split} split is empty")
        if part.labels.ndim == 1:
            present = sorted(int(c) for c in part.labels.unique())
            if len(present) < 2:
                names = [data.classes[c] if 0 <= c < len(data.classes) else str(c) for c in present]
                raise PreflightError(f"dataset: {source}: the {split} split has {len(present)} class "
                                     f"({', '.join(names)}); every split needs at least 2 (AUC and worst-class "
                                     "recall are undefined with one)")
        elif part.labels.shape[1] < 2:
            raise PreflightError(f"dataset: {source}: {part.labels.shape[1]} label column(s); at least 2 needed")
    return data


# --- the backbone --------------------------------------------------------------------------------------
def check_backbone(spec: JobSpec) -> None:
    """Build the backbone once on the CPU (strict weight keys; hub weights never fetched) and run
    one image through it at its working size."""
    import torch

    from .backbones import WeightsError, build_backbone
    from .threads import torch_threads

    b = spec.backbone.model_copy(update={"pretrained": False})  # offline: architecture + local weights only
    try:
        with torch_threads(1):
            backbone = build_backbone(b)
            backbone.model.eval()
            with torch.no_grad():
                out = backbone.model(torch.zeros(1, 3, backbone.image_size, backbone.image_size))  # (1, features)
    except WeightsError as e:
        raise PreflightError(f"backbone.weights: {e}") from None
    except FileNotFoundError as e:
        raise PreflightError(f"backbone.weights: {e}") from None
    except Exception as e:  # noqa: BLE001 - timm/torchvision: unknown names, bad sizes, bad kwargs
        raise PreflightError(f"backbone: {b.name} (image_size {b.image_size}, patch_size {b.patch_size}): "
                             f"cannot be built or run ({type(e).__name__}: {_first_line(e)})") from None
    if out.ndim != 2 or out.shape[1] != backbone.num_features:
        raise PreflightError(f"backbone: {b.name}: returns {tuple(out.shape)}, expected (1, {backbone.num_features}) "
                             "pooled features")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else "?"


if __name__ == "__main__":
    sys.exit(_child())
