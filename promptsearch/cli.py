"""The ``promptsearch`` command line (Typer). Each command group lives in ``promptsearch/commands/``.

    promptsearch --help

Every run starts with umask 077 (the workspace, job state, MLflow's store and Ray's files are the
user's alone), and a file system error that no command handled (a read-only or full disk) ends it
with one line naming the path and the errno, not a traceback (also when the OSError reaches the top
wrapped, as Ray Tune's TuneError wraps a callback's). Log records reach the terminal as one
line each (the first line of the message, no traceback; MLflow's database errors too: the job reports
each failed MLflow call itself); ``PROMPTSEARCH_DEBUG=1`` shows everything.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import sys
import warnings
from typing import Any

import typer

from . import commands
from .preflight import PreflightWarning
from .service.settings import os_error_line, storage_error

PRIVATE_UMASK = 0o077  # new files 0600, new folders 0700
DEBUG_ENV = "PROMPTSEARCH_DEBUG"


class _OneLine(logging.Formatter):
    """``LEVEL name: first line of the message`` (a database error's SQL and every traceback left out)."""

    def format(self, record: logging.LogRecord) -> str:
        lines = record.getMessage().strip().splitlines() or [""]
        more = " [...]" if len(lines) > 1 or record.exc_info else ""
        return f"{record.levelname.lower()} {record.name}: {lines[0][:500]}{more}"


class _FirstLine(logging.Filter):
    """On a logger whose records reach a handler we do not own (MLflow's): the message's first
    line, no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        lines = record.getMessage().strip().splitlines() or [""]
        if len(lines) > 1 or record.exc_info:
            record.msg, record.args = f"{lines[0][:500]} [...]", ()
            record.exc_info = record.exc_text = record.stack_info = None
        return True


# third-party loggers that log a full traceback for an error the job reports itself: MLflow's
# database layer (every failed write on a full disk, with its SQL), Ray Tune's controller (a
# search-loop callback that raised: the loop has said why)
QUIETED_LOGGERS = ("mlflow.store.db.utils", "ray.tune.execution.tune_controller")


def _terminal_logging() -> None:
    if os.environ.get(DEBUG_ENV):
        return
    for name in QUIETED_LOGGERS:
        logging.getLogger(name).addFilter(_FirstLine())
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_OneLine())
        root.addHandler(handler)
        root.setLevel(logging.WARNING)


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
        argv = kwargs.get("args", args[0] if args else sys.argv[1:]) or []
        if next((a for a in argv if not a.startswith("-")), None) != "serve":  # a server's log keeps its tracebacks
            _terminal_logging()
        warnings.showwarning = _show_warning
        warnings.simplefilter("always", PreflightWarning)
        try:
            return super().__call__(*args, **kwargs)
        except Exception as e:
            cause = e if isinstance(e, OSError) else storage_error(e)
            if cause is None or os.environ.get(DEBUG_ENV):
                raise
            sys.stderr.write(f"error: {os_error_line(cause)}\n")
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
