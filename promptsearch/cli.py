"""The ``promptsearch`` command line (Typer). Each command group lives in ``promptsearch/commands/``.

    promptsearch --help

Every run starts with umask 077 (the workspace, job state, MLflow's store and Ray's files are the
user's alone), and a file system error that no command handled (a read-only or full disk) ends it
with one line naming the path and the errno, not a traceback.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import warnings
from typing import Any

import typer

from . import commands
from .preflight import PreflightWarning
from .service.settings import os_error_line

PRIVATE_UMASK = 0o077  # new files 0600, new folders 0700


def _show_warning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 - warnings' signature
    if issubclass(category, PreflightWarning):  # loud, and without a source line
        sys.stderr.write(f"\033[1;33mwarning:\033[0m {message}\n" if sys.stderr.isatty() else f"warning: {message}\n")
    else:
        _default_show(message, category, filename, lineno, file, line)


_default_show = warnings.showwarning


class _App(typer.Typer):
    """The Typer app, entered with a private umask, preflight warnings as one line each, and a
    one-line report of an unhandled OSError."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        os.umask(PRIVATE_UMASK)
        warnings.showwarning = _show_warning
        warnings.simplefilter("always", PreflightWarning)
        try:
            return super().__call__(*args, **kwargs)
        except OSError as e:
            sys.stderr.write(f"error: {os_error_line(e)}\n")
            sys.exit(1)


app = _App(help="Automated prompt architecture search for medical visual prompt tuning.",
           no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

# every module in promptsearch/commands/ exposes register(app): adding a command is adding a file
for _mod in sorted(m.name for m in pkgutil.iter_modules(commands.__path__)):
    importlib.import_module(f"{commands.__name__}.{_mod}").register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
