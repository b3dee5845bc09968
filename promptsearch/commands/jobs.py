"""``promptsearch search | jobs | cancel | pareto | resume | repair``: run and manage search jobs.

    promptsearch search jobs/breast_pixel.yaml --workspace ./promptsearch-runs
    promptsearch jobs
    promptsearch pareto <JOB> --json
    promptsearch repair <JOB>

``jobs`` and ``pareto`` read each job's small summary and front files (no torch, no numpy), so
they answer as fast at 10,000 trials as at 10.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from .common import WorkspaceOpt, console, fail, loud_preflight_warnings, out, print_json, resolved

# tables stay readable in logs and CI (a non-terminal console would default to 80 columns)
wide = out if out.is_terminal else Console(width=160)  # tables to stdout (pipe-able), wide when piped

RayAddress = typer.Option(None, "--ray-address", help="Join an existing Ray cluster ('auto' or host:port) instead of starting Ray.")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != v:
            return "nan"
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    return str(v)


def _arch(candidate: dict[str, Any]) -> str:
    """A compact architecture: decision values (``lr`` and ``tokens`` named) and the components on."""
    arch = dict(candidate.get("architecture", {}))
    comps = arch.pop("components", {})
    if arch.get("module") == "pixel" and "tokens" not in arch:
        arch.pop("module")
    parts = [f"{k} {v}" if k in ("lr", "tokens", "frame_width", "dropout", "weight_decay") else str(v) for k, v in arch.items()]
    on = [c for names in comps.values() for c in names]
    return " ".join(parts) + (f" [{','.join(on)}]" if on else "")


def render_status(s: dict[str, Any]) -> Group:
    """The live view: counts, hypervolume, best values so far, trials in flight."""
    t = s["trials"]
    head = Text.assemble((f"{s['job_id']}", "bold"), f"  {s['strategy']} on {s['space']}  ·  {s['dataset']}  ·  ",
                         (s["status"], "bold green" if s["status"] == "completed" else "bold yellow"))
    width = 30
    done = int(width * t["finished"] / max(t["requested"], 1))
    bar = Text.assemble(("█" * done, "green"), ("░" * (width - done), "dim"),
                        f"  {t['finished']}/{t['requested']} finished · {t['running']} running · "
                        f"{t['failed']} failed · {t['preempted']} preempted"
                        + (f" · {t['stopped']} stopped early ({100 * s['image_passes']['saved']:.0f} % of image passes saved)"
                           if t.get("stopped") else "") + f" · hypervolume {s['hypervolume']:.4f}")
    best = Text("best so far: " + ("  ".join(f"{k} {_fmt(v)}" for k, v in s["best"].items()) or "-"))
    running = Table(box=None, show_header=False, padding=(0, 1))
    for r in s["running_trials"]:
        node = (r["node_id"] or "")[:8]
        running.add_row(r["trial_id"], f"epoch {r['epoch']}/{r['epochs']}", f"node {node}" if node else "")
    return Group(head, bar, best, running)


def front_text(job_id: str, front: list[dict[str, Any]], objectives: list[dict[str, Any]], width: int) -> str:
    """The front's validation objectives and architectures, as plain aligned text ``width`` wide (the
    architecture folds onto indented lines). No test-split column: test metrics are for the one
    trial a user picks (the export bundle reports them), never for choosing. Plain text, not a rich
    table: a front can hold hundreds of trials, and rich measures every cell (~0.5 ms a row, half of
    ``promptsearch pareto``'s time at 200 rows)."""
    import textwrap

    head = ["trial", *(f"{o['name']} ({o['direction']})" for o in objectives)]
    rows = [[r["trial_id"], *(_fmt(r["metrics"].get(o["name"])) for o in objectives), _arch(r["candidate"])]
            for r in front]
    widths = [max(len(x) for x in col) for col in zip(head, *(r[:-1] for r in rows))]
    columns = sum(widths) + 2 * len(widths)  # each fixed column and its two-space gap
    below = width - columns < 30  # a narrow terminal: the architecture goes under its row
    indent = 4 if below else columns  # where the architecture's lines start
    fold = width - indent

    def line(cells: list[str], arch: str) -> list[str]:
        first = "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        parts = textwrap.wrap(arch, fold, break_on_hyphens=False) or [""]
        if below:
            return [first, *(" " * indent + p for p in parts)]
        return [f"{first}  {parts[0]}".rstrip(), *(" " * indent + p for p in parts[1:])]

    out = [f"Pareto front of {job_id} ({len(front)} trial(s))", *line(head, "architecture"),
           "  ".join("-" * w for w in widths) + ("" if below else "  " + "-" * 12)]
    for r in rows:
        out += line(r[:-1], r[-1])
    return "\n".join(out) + "\n"


def print_front(job_id: str, front: list[dict[str, Any]], objectives: list[dict[str, Any]]) -> None:
    sys.stdout.write(front_text(job_id, front, objectives, wide.width))
    sys.stdout.flush()


def _run(ws, job_id: str, ray_address: str | None, resume_cancelled: bool, as_json: bool) -> None:
    from ..yamlio import JobError
    from ..service.jobs import job_front, job_status, run_job

    from rich.live import Live

    last = [0.0]
    if as_json:
        progress = None
        ctx = None
    else:
        ctx = Live(render_status(job_status(ws, job_id)), console=console, refresh_per_second=4, transient=False)

        def progress(s: dict[str, Any]) -> None:
            now = time.monotonic()
            if now - last[0] > 0.25 or s["status"] != "running":
                last[0] = now
                ctx.update(render_status(s))
    try:
        if ctx is not None:
            with ctx:
                status = run_job(ws, job_id, progress, ray_address=ray_address, resume_cancelled=resume_cancelled)
                ctx.update(render_status(status))
        else:
            status = run_job(ws, job_id, None, ray_address=ray_address, resume_cancelled=resume_cancelled)
    except JobError as e:
        fail(str(e))
    except KeyboardInterrupt:
        console.print(f"[yellow]aborted[/]; `promptsearch resume {job_id}` continues it")
        raise typer.Exit(130) from None
    front = job_front(ws, job_id)
    if as_json:
        print_json({"status": status, "front": front})
    else:
        if status["message"]:
            console.print(f"[bold]{status['status']}[/]: {status['message']}")
        print_front(job_id, front, status["objectives"])
        console.print(f"record: MLflow {status['mlflow'].get('tracking_uri', '')} "
                      f"(experiment {status['mlflow'].get('experiment_name', '')}, run {job_id})")
    raise typer.Exit(0 if status["status"] == "completed" else 1)


def search(
    job_file: str = typer.Argument(..., help="The job file (YAML or JSON), or a bundled job's name (breast_pixel)."),
    workspace: Optional[Path] = WorkspaceOpt,
    trials: Optional[int] = typer.Option(None, "--trials", help="Override the number of trials."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", help="Override how many trials run at once."),
    strategy: Optional[str] = typer.Option(None, "--strategy", help="Override the strategy (random, evolution, ...)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Override the seed."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Override the data root."),
    backbone_weights: Optional[str] = typer.Option(None, "--backbone-weights", help="Override the backbone weights file."),
    ray_address: Optional[str] = RayAddress,
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (default: SQLite in the workspace)."),
    set_: list[str] = typer.Option([], "--set", help="Override any field: --set budget.epochs=2 (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="No live view; print the final status and front as JSON."),
    check: bool = typer.Option(False, "--check", help="Only validate the job (fields, space, paths, strategy) and print it."),
) -> None:
    """Run a search job in the foreground: live progress, then its Pareto front."""
    from ..jobs import JobError, load_job, parse_override, resolve_job_path, with_overrides
    from ..search.workspace import as_workspace
    from ..service.jobs import submit

    try:
        overrides = dict(parse_override(s) for s in set_)
        overrides.update({k: v for k, v in {
            "trials": trials, "concurrency": concurrency, "strategy": strategy, "seed": seed, "data_root": data_root,
            "backbone.weights": backbone_weights, "ray_address": ray_address, "tracking_uri": tracking_uri}.items()
            if v is not None})
        path = resolve_job_path(job_file)
        spec = load_job(path, check=not overrides)  # checked once: here (file:line) or after the overrides
        if overrides:
            spec = with_overrides(spec, overrides, source=f"{job_file} (overrides)")
        if check:
            print_json(spec.model_dump(mode="json"))
            console.print(f"{path}: valid job ({spec.trials} trials of {spec.space!r} with {spec.strategy})")
            raise typer.Exit(0)
        ws = as_workspace(workspace)
        loud_preflight_warnings()
        job_id = submit(ws, spec, job_file=path.read_text(), checked=True)
    except JobError as e:
        fail(str(e))
    if not as_json:
        console.print(f"job [bold]{job_id}[/] in {ws.root}")
    _run(ws, job_id, None, False, as_json)


def jobs(workspace: Optional[Path] = WorkspaceOpt,
         as_json: bool = typer.Option(False, "--json", help="Print the jobs as JSON.")) -> None:
    """List the workspace's jobs with status and progress."""
    from ..search.workspace import as_workspace
    from ..service.jobs import list_jobs

    ws = as_workspace(workspace)
    rows = list_jobs(ws)
    if as_json:
        print_json(rows)
        return
    t = Table(title=f"jobs in {ws.root}")
    t.add_column("job", no_wrap=True)
    for c in ("status", "strategy", "space", "done", "stopped", "failed", "running", "HV", "created"):
        t.add_column(c, justify="right" if c in ("done", "stopped", "failed", "running", "HV") else "left")
    corrupt = []
    for s in rows:
        if s["status"] == "corrupt":
            corrupt.append(s)
            t.add_row(s["job_id"], "[red]corrupt[/]", "-", "-", "-", "-", "-", "-", "-",
                      time.strftime("%m-%d %H:%M", time.localtime(s["created_at"])))
            continue
        status = s["status"] + (" (interrupted: resume)" if s["interrupted"] else "")
        tr = s["trials"]
        t.add_row(s["job_id"], status, s["strategy"], s["space"], f"{tr['finished']}/{tr['requested']}",
                  str(tr.get("stopped", 0)), str(tr["failed"]), str(tr["running"]), f"{s['hypervolume']:.4f}",
                  time.strftime("%m-%d %H:%M", time.localtime(s["created_at"])))
    wide.print(t)
    for s in corrupt:  # which file, why, and what to do
        console.print(f"[red]corrupt[/] {s['job_id']}: {s['message']}", highlight=False, soft_wrap=True)


def cancel(job: str = typer.Argument(..., help="Job id (or a unique prefix)."), workspace: Optional[Path] = WorkspaceOpt,
           wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait until the job has stopped.")) -> None:
    """Stop a running job cleanly (its unfinished trials are recorded as preempted)."""
    from ..yamlio import JobError
    from ..service.jobs import cancel as cancel_job
    from ..service.jobs import job_status

    ws, job_id = resolved(workspace, job)
    try:
        status = cancel_job(ws, job_id)
        deadline = time.monotonic() + 120
        while (wait and status["status"] in ("running", "queued", "cancelling") and not status["interrupted"]
               and time.monotonic() < deadline):
            time.sleep(0.5)
            status = job_status(ws, job_id)
    except JobError as e:
        fail(str(e))
    console.print(f"{job_id}: {status['status']}" + (f" ({status['message']})" if status["message"] else ""))


def pareto(job: str = typer.Argument(..., help="Job id (or a unique prefix)."), workspace: Optional[Path] = WorkspaceOpt,
           as_json: bool = typer.Option(False, "--json", help="Print the front's trial records as JSON.")) -> None:
    """Print a job's Pareto front (so far, if it is still running): validation objectives only —
    test metrics belong to the trial you pick (``promptsearch export``)."""
    from ..yamlio import JobError
    from ..service.jobs import front_records

    ws, job_id = resolved(workspace, job)
    try:
        front, _, static = front_records(ws.store(job_id))
    except JobError as e:
        fail(str(e))
    if as_json:
        print_json([{k: v for k, v in r.items() if k != "test_metrics"} for r in front])
        return
    print_front(job_id, front, static["objectives"])


def resume(job: str = typer.Argument(..., help="Job id (or a unique prefix)."), workspace: Optional[Path] = WorkspaceOpt,
           ray_address: Optional[str] = RayAddress,
           as_json: bool = typer.Option(False, "--json", help="No live view; print the final status and front as JSON.")) -> None:
    """Continue an interrupted or cancelled job: finished trials are kept, unfinished ones re-run."""
    from ..service.jobs import job_status

    ws, job_id = resolved(workspace, job)
    status = job_status(ws, job_id)  # damage its summary read shows is refused before the live view starts
    if status["status"] == "corrupt":
        fail(f"job {job_id} is corrupt: {status['message']}")  # the file, the reason, `promptsearch repair JOB`
    _run(ws, job_id, ray_address, True, as_json)  # damage deeper in the log: run_job raises the same CorruptJob


def repair(job: str = typer.Argument(..., help="Job id (or a unique prefix)."), workspace: Optional[Path] = WorkspaceOpt
           ) -> None:
    """Restore a corrupt job from its second copies and rebuild its derived files; says what it did."""
    from ..yamlio import JobError
    from ..service.jobs import repair as repair_job

    ws, job_id = resolved(workspace, job)
    try:
        done = repair_job(ws, job_id)
    except JobError as e:
        fail(str(e))
    for line in done:
        console.print(f"{job_id}: {line}", highlight=False, soft_wrap=True)
    console.print(f"{job_id}: readable again; `promptsearch resume {job_id}` continues it if it was not finished")


def register(app: typer.Typer) -> None:
    app.command("search")(search)
    app.command("jobs")(jobs)
    app.command("cancel")(cancel)
    app.command("pareto")(pareto)
    app.command("resume")(resume)
    app.command("repair")(repair)
