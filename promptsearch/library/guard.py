"""The job check for a job that names a component library (registered in
:data:`promptsearch.jobs.JOB_CHECKS`): bind the library into the job's space, and refuse a target
dataset that is the same data as one the library learned from (the leakage guard).

    python -c "from promptsearch.jobs import load_job; print(load_job('job_with_library.yaml').library)"

It reads the dataset catalogue (hence torch), so the jobs module registers it lazily: a job
without a library validates without importing it.
"""

from __future__ import annotations

from typing import Any

from ..catalog import LeakError, check_no_leak, find_entry
from ..data import DataError
from ..jobs import JOB_CHECKS, JobError
from ..space import SearchSpace
from ..yamlio import where
from .manifest import LibraryError
from .use import bind_library


def check_leak(manifest: Any, target: str, root: Any = None, catalog: Any = ()) -> None:
    """Raise :class:`~promptsearch.catalog.LeakError` when ``target`` is the same data as a dataset the
    library learned from: the same name or recorded source, or (:func:`~promptsearch.catalog.check_no_leak`:
    one folder, byte-identical images) by the catalogue."""
    entry = find_entry(target, root, catalog)
    if entry is None:  # not a catalogue name (a folder: path or an unlisted MedMNIST set): by name only
        bad = [n for n in manifest.datasets if n == target]
    else:
        bad = [n for n, rec in manifest.datasets.items() if n == entry.name or rec.source == entry.source]
    if bad:
        rec = manifest.datasets[bad[0]]
        raise LeakError(f"library version {manifest.version} learned from {bad[0]!r} (source {rec.source}); the "
                        f"target {target!r}{f' (source {entry.source})' if entry is not None else ''} is the same "
                        f"data. Build the library without {', '.join(map(repr, bad))}, or pick another target")
    if entry is not None:
        known = [n for n in manifest.datasets if find_entry(n, root, catalog) is not None]
        check_no_leak(known, entry, root, catalog=catalog)


@JOB_CHECKS.register("library")
def check_job_library(spec: Any, space: SearchSpace, source: str = "<job>",
                      lines: dict[tuple, int] | None = None) -> SearchSpace:
    """The job's space bound to its library (the job's ``library`` field, else the space's), after
    the leakage guard. Errors name the job file, line and field."""
    lines = lines or {}
    field = ("library", "path") if spec.library is not None else ("space",)
    path = spec.library.path if spec.library is not None else None
    try:
        bound = bind_library(space, path)
    except LibraryError as e:
        raise JobError(f"{where(source, lines, *field)}: {e}") from None
    from .manifest import read_manifest

    manifest = read_manifest(bound.spec.library.path)
    try:
        check_leak(manifest, spec.dataset, spec.data_root)
    except LeakError as e:
        raise JobError(f"{where(source, lines, 'dataset')}: {e}") from None
    except DataError as e:  # a broken catalogue file
        raise JobError(f"{where(source, lines, 'dataset')}: {e}") from None
    return bound
