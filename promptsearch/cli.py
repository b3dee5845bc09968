"""The ``promptsearch`` command line (Typer). Each command group lives in ``promptsearch/commands/``.

    promptsearch --help

Start-up is lazy: :data:`COMMANDS` names the module of each command, and a module is imported only
when one of its commands runs (``--help`` imports them all, to list each with its own help text), so
``promptsearch jobs`` pays for the job API's read path and nothing else (no torch, Ray, MLflow,
FastAPI or pydantic schemas of the commands it does not run).

Every run starts with umask 077 (the workspace, job state, MLflow's store and Ray's files are the
user's alone), and a file system error that no command handled (a read-only or full disk) ends it
with one line naming the path and the errno, not a traceback (also when the OSError reaches the top
wrapped, as Ray Tune's TuneError wraps a callback's). Log records reach the terminal as one
line each (the first line of the message, no traceback; MLflow's database errors too: the job reports
each failed MLflow call itself); ``PROMPTSEARCH_DEBUG=1`` shows everything.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
from typing import Any

import typer
from typer.core import TyperGroup

from . import commands

PRIVATE_UMASK = 0o077  # new files 0600, new folders 0700
DEBUG_ENV = "PROMPTSEARCH_DEBUG"

# no MLflow usage reports from any command, nor from the job processes and Ray workers they start
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


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


class _App(typer.Typer):
    """The Typer app, entered with a private umask and a one-line report of an unhandled OSError."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        os.umask(PRIVATE_UMASK)
        argv = kwargs.get("args", args[0] if args else sys.argv[1:]) or []
        if next((a for a in argv if not a.startswith("-")), None) != "serve":  # a server's log keeps its tracebacks
            _terminal_logging()
        try:
            return super().__call__(*args, **kwargs)
        except Exception as e:
            from .service.settings import os_error_line, storage_error

            cause = e if isinstance(e, OSError) else storage_error(e)
            if cause is None or os.environ.get(DEBUG_ENV):
                raise
            sys.stderr.write(f"error: {os_error_line(cause)}\n")
            sys.exit(1)


# Every command -> the module of promptsearch/commands/ whose ``register(app)`` adds it (in the
# order ``--help`` lists them). Adding a command is adding a module and its names here;
# tests/test_scale_paths.py checks this table against what every module registers.
COMMANDS: dict[str, str] = {
    "explain": "explain", "export": "export", "predict": "export",
    "search": "jobs", "jobs": "jobs", "cancel": "jobs", "pareto": "jobs", "resume": "jobs", "repair": "jobs",
    "pretrain": "pretrain", "serve": "serve", "trial": "trial", "trials": "trials",
    "data": "data", "library": "library", "space": "space",
}


@functools.cache
def module_commands(module: str) -> dict[str, Any]:
    """The (click) commands that ``promptsearch.commands.<module>`` registers (imported once, here)."""
    mod = importlib.import_module(f"{commands.__name__}.{module}")
    sub = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    mod.register(sub)
    return dict(typer.main.get_group(sub).commands)


class LazyCommands(TyperGroup):
    """The root group: lists every name in :data:`COMMANDS` without importing anything, and imports
    a command's module when the command is looked up (to run it, or for ``--help``)."""

    def list_commands(self, ctx: typer.Context) -> list[str]:
        return [*(n for n in super().list_commands(ctx) if n not in COMMANDS), *COMMANDS]

    def get_command(self, ctx: typer.Context, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.commands.update({k: v for k, v in module_commands(COMMANDS[cmd_name]).items()
                                  if k not in self.commands})
        return super().get_command(ctx, cmd_name)


app = _App(help="Automated prompt architecture search for medical visual prompt tuning.", cls=LazyCommands,
           no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.callback()
def _root() -> None:
    # a callback makes the app a group even before any command is registered on it (all are lazy)
    return None


def main() -> None:
    app()


if __name__ == "__main__":
    main()
