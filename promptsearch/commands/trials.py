"""``promptsearch trials``: a job's trials as a table, CSV or JSON (one column per decision).

    promptsearch trials JOB --csv > trials.csv
    promptsearch trials JOB --json --status completed
    promptsearch trials JOB --csv --test --out trials-with-test.csv   # test split: report, don't choose
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .common import WorkspaceOpt, console, fail, out, resolved

SHOWN = ("trial_id", "status", "on_front")  # the terminal table: these, the objectives, decisions and components


def trials(job: str = typer.Argument(..., help="Job id (or a unique prefix)."),
           workspace: Optional[Path] = WorkspaceOpt,
           as_csv: bool = typer.Option(False, "--csv", help="CSV: one row per trial, one column per decision."),
           as_json: bool = typer.Option(False, "--json", help="JSON: a list of the same rows."),
           status: Optional[str] = typer.Option(None, "--status", help="Only trials with this status (completed, failed, ...)."),
           test: bool = typer.Option(False, "--test", help="Add test-split metrics (test_*): report them, don't choose by them."),
           out_file: Optional[Path] = typer.Option(None, "--out", help="Write to this file instead of stdout.")) -> None:
    """A job's trials with the decoded architecture: one column per decision, components by name."""
    from ..jobs import JobSpec
    from ..service.analysis import rows_csv, space_of, trial_rows
    from ..service.jobs import job_trials

    if as_csv and as_json:
        fail("--csv or --json, not both")
    if out_file and not (as_csv or as_json):
        fail("--out writes --csv or --json")
    ws, job_id = resolved(workspace, job)
    record = ws.read_job(job_id)
    spec = JobSpec.model_validate(record["spec"])
    objectives = spec.objective_list
    cols, rows = trial_rows(job_trials(ws, job_id), space_of(record["space"]), objectives, include_test=test,
                            front_stopped=spec.front_stopped)
    if status:
        rows = [r for r in rows if r["status"] == status]
    if as_csv or as_json:
        text = rows_csv(cols, rows) if as_csv else json.dumps(rows, indent=1, allow_nan=False, default=str) + "\n"
        if out_file:
            out_file.write_text(text)
            console.print(f"{len(rows)} trial(s) of {job_id} -> {out_file}")
        else:
            typer.echo(text, nl=False)
        return
    shown = [*SHOWN, *(c for c in ("rung", "ranked_by", "repeat_of") if c in cols), *(o.name for o in objectives), *(c for c in cols if c in record["space"].get("decisions", {})),
             *(c for c in cols if c.startswith("components.")), *(c for c in cols if c.startswith("test_"))]
    t = Table(title=f"trials of {job_id} ({len(rows)})")
    for c in shown:
        t.add_column(c.removeprefix("components."), overflow="fold")
    for r in rows:
        t.add_row(*("" if r[c] is None or r[c] is False else "*" if r[c] is True
                    else ", ".join(r[c]) if isinstance(r[c], list)
                    else f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in shown))
    (out if out.is_terminal else Console(width=200)).print(t)  # readable when piped, too


def register(app: typer.Typer) -> None:
    app.command("trials")(trials)
