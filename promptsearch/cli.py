"""The ``promptsearch`` command line (Typer). Each command group lives in ``promptsearch/commands/``.

    promptsearch --help
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

from . import commands

app = typer.Typer(help="Automated prompt architecture search for medical visual prompt tuning.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

# every module in promptsearch/commands/ exposes register(app): adding a command is adding a file
for _mod in sorted(m.name for m in pkgutil.iter_modules(commands.__path__)):
    importlib.import_module(f"{commands.__name__}.{_mod}").register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
