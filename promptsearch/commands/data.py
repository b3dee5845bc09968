"""``promptsearch data list | show | validate``: the dataset catalogue, with class counts.

    promptsearch data list --folders-root ../shared/data/folders --data-root ../shared/data/medmnist
    promptsearch data show busi_breast_us --folders-root ../shared/data/folders --json
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from .common import DataRoot, fail, out, print_json

data_app = typer.Typer(help="The dataset catalogue: anatomy, modality, pathology tags, source and split of each dataset.",
                       no_args_is_help=True)
wide = out if out.is_terminal else Console(width=160)  # tables readable when piped

CatalogFiles = typer.Option(None, "--catalog", help="A catalogue YAML file of your own entries (repeatable; "
                                                    "also env PROMPTSEARCH_CATALOG, or catalog.yaml in the folders root).")
FoldersRoot = typer.Option(None, "--folders-root", envvar="PROMPTSEARCH_FOLDERS_ROOT",
                           help="Folder holding the image folders that entries name (or env PROMPTSEARCH_FOLDERS_ROOT).")


def _root(entry: Any, data_root: Optional[str], folders_root: Optional[str]) -> Optional[str]:
    return data_root if entry.kind == "medmnist" else folders_root


def _counts(entry: Any, root: Optional[str]) -> tuple[dict | None, str | None]:
    from ..catalog import class_counts
    from ..data import DataError

    try:
        return class_counts(entry, root), None
    except DataError as e:
        return None, str(e)


def _split_text(entry: Any) -> str:
    s = entry.split
    kind = s.kind or ("official" if entry.kind == "medmnist" else "auto")
    if kind == "official":
        return "official"
    fr = f"val {s.val_fraction:g}" + (f", test {s.test_fraction:g}" if kind != "folders" else "")
    return f"{kind} ({fr}, seed {s.seed}{', grouped' if entry.groups else ''})"


@data_app.command("list")
def data_list(catalog: Optional[list[Path]] = CatalogFiles, folders_root: Optional[str] = FoldersRoot,
              data_root: Optional[str] = DataRoot,
              as_json: bool = typer.Option(False, "--json", help="Print the entries and their counts as JSON.")) -> None:
    """Every catalogue entry: anatomy, modality, source, split and images per class (tag)."""
    from ..catalog import CatalogError
    from ..catalog import catalog as load_catalog

    try:
        entries = load_catalog(folders_root, catalog or ())
    except CatalogError as e:
        fail(str(e))
    rows = []
    for e in entries.values():
        counts, err = _counts(e, _root(e, data_root, folders_root))
        rows.append((e, counts, err))
    if as_json:
        print_json([{**e.to_json(), "counts": counts, "error": err} for e, counts, err in rows])
        return
    t = Table(title=f"dataset catalogue ({len(rows)} entries)")
    for col in ("name", "anatomy", "modality", "ch", "source", "split", "images per class (tag)"):
        t.add_column(col, justify="right" if col == "ch" else "left")
    for e, counts, err in rows:
        if counts is None:
            per = f"[dim]{err}[/]"
        else:
            tot = {c: sum(counts[k][c] for k in counts) for c in counts["train"]}
            per = ", ".join(f"{c} {n} ({'/'.join(e.classes[c])})" for c, n in tot.items())
        t.add_row(e.name, e.anatomy, e.modality, str(e.channels or "auto"), e.source, _split_text(e), per)
    wide.print(t)


@data_app.command("show")
def data_show(name: str = typer.Argument(..., help="A catalogue entry name (promptsearch data list)."),
              catalog: Optional[list[Path]] = CatalogFiles, folders_root: Optional[str] = FoldersRoot,
              data_root: Optional[str] = DataRoot,
              as_json: bool = typer.Option(False, "--json", help="Print the entry and its counts as JSON.")) -> None:
    """One entry: where it is defined, its tags, and train/val/test images per class."""
    from ..catalog import get_entry, same_source
    from ..data import DataError
    from ..catalog import catalog as load_catalog

    root = None
    try:
        entry = get_entry(name, folders_root, catalog or ())
        root = _root(entry, data_root, folders_root)
        others = [o.name for o in load_catalog(folders_root, catalog or ()).values()
                  if o.name != entry.name and same_source(o, entry, folders_root, images=False)]
    except DataError as e:  # a bad catalogue file, an unknown name
        fail(str(e))
    counts, err = _counts(entry, root)
    if as_json:
        print_json({**entry.to_json(), "counts": counts, "error": err, "same_source_as": others})
        if err:
            raise typer.Exit(1)
        return
    head = [f"[bold]{entry.name}[/]  {entry.title}", f"{entry.kind}: {entry.medmnist or entry.folder}  ·  "
            f"{entry.anatomy} · {entry.modality} · {entry.channels or 'auto'} channel(s) · {entry.stored_size} px",
            f"source {entry.source}" + (f" (same data as {', '.join(others)})" if others else ""),
            f"split {_split_text(entry)}" + (f" · groups {entry.groups}" if entry.groups else ""),
            f"defined at {entry.where()}"]
    if entry.notes:
        head.append(f"note: {entry.notes}")
    wide.print("\n".join(head), highlight=False, soft_wrap=True)
    if counts is None:
        fail(err or "no counts", code=1)
    t = Table()
    for col in ("class", "tags", "train", "val", "test", "total"):
        t.add_column(col, justify="left" if col in ("class", "tags") else "right")
    for c in counts["train"]:
        n = [counts[k][c] for k in ("train", "val", "test")]
        t.add_row(c, ", ".join(entry.classes[c]), *map(str, n), str(sum(n)))
    tot = [sum(counts[k].values()) for k in ("train", "val", "test")]
    t.add_row("[bold]all[/]", "", *map(str, tot), str(sum(tot)))
    wide.print(t)


@data_app.command("validate")
def data_validate(files: list[Path] = typer.Argument(..., help="Catalogue YAML files to check."),
                  folders_root: Optional[str] = FoldersRoot, data_root: Optional[str] = DataRoot) -> None:
    """Check catalogue files and each entry against its data (folder, classes, groups file, MedMNIST
    file); exit 2 with file:line: field: reason on the first bad one."""
    from ..catalog import class_counts, read_catalog
    from ..data import DataError

    for f in files:
        try:
            entries = read_catalog(f)
            counts = {e.name: class_counts(e, _root(e, data_root, folders_root)) for e in entries.values()}
        except DataError as e:  # CatalogError included
            fail(str(e))
        sizes = ", ".join(f"{n} {sum(sum(c.values()) for c in cs.values())}" for n, cs in counts.items())
        out.print(f"{f}: ok ({len(entries)} entries, images: {sizes})", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
