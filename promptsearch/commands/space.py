"""``promptsearch space``: list, show, validate and sample search spaces.

    promptsearch space list
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from .common import fail, out, print_json

space_app = typer.Typer(help="Inspect and validate search space files.", no_args_is_help=True)


@space_app.command("list")
def space_list(as_json: bool = typer.Option(False, "--json", help="Print the spaces as JSON.")) -> None:
    """The bundled spaces (by name) with their size and hash."""
    from ..space import SPACES_DIR, list_spaces, load_space

    rows = [(n, load_space(n)) for n in list_spaces()]
    if as_json:
        print_json([{"name": n, "hash": s.hash, "size": s.size(), "file": str(SPACES_DIR / f"{n}.yaml")} for n, s in rows])
        return
    t = Table(title=f"bundled spaces ({SPACES_DIR})")
    t.add_column("name"), t.add_column("architectures", justify="right"), t.add_column("hash"), t.add_column("description")
    for n, s in rows:
        t.add_row(n, f"{s.size():,}", s.hash, s.spec.description)
    out.print(t)


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


def register(app: typer.Typer) -> None:
    app.add_typer(space_app, name="space")
