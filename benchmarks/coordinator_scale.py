"""Coordinator scale: what one event costs the coordinator, what it writes, how big the state
gets, how fast ``promptsearch jobs`` / ``pareto`` answer and how long a resume takes — for a
SYNTHETIC job of 100, 1,000 and 10,000 trials.

    nice -n 10 python benchmarks/coordinator_scale.py synthetic --trials 100 1000 10000
    nice -n 10 python benchmarks/coordinator_scale.py synthetic --trials 100 1000 --before /tmp/ps-a9c8274
    python benchmarks/coordinator_scale.py realjob --checkout /tmp/ps-a9c8274 --label before
    nice -n 10 python benchmarks/coordinator_scale.py reads --workspace /tmp/ps-scale-after-10000-XXXX/ws \
        --checkout /tmp/ps-before . --label before after

SYNTHETIC (the only fake in the project, and it says so in its output): no Ray and no training.
A fake trainable — made-up metrics, two epochs per trial, about one trial in twenty failing —
drives the *real* ``SearchLoop`` (random strategy, ``concurrency`` trials in flight) and its real
persistence, exactly as the Tune adapter does (ask, epoch, epoch, tell). MLflow is off (its SQLite
store is a separate record with its own cost per trial). Each job's coordinator is killed (SIGKILL)
with trials in flight a few trials before its end; then the read paths are timed (the real CLI in
a subprocess, and the job API functions in this process), and a fresh process resumes the job to
its end (the time to restore, then to the first new ask). ``--before DIR`` runs the same driver
against an older checkout (format 1: state.json rewritten after every event) for comparison.

``reads``: the read paths alone, on a workspace a ``synthetic --keep`` run left (its one job), for
one or more ``--checkout``s: the ``jobs`` and ``pareto`` CLI (wall and CPU, each call in its own
process, the checkouts' calls interleaved), the heavy modules ``jobs`` imports, the whole log
(``job_trials``) and a 100-trial page of the REST API (the first request, then a poll that finds
nothing new).

``realjob``: the real default job (MobileNetV2 pixel prompts at 64 px, BreastMNIST, 2 concurrent,
real Ray, real MLflow) run from ``--checkout`` with every process's peak RSS and PSS sampled
(the CLI's whole process tree: coordinator, Ray's daemons, trial workers), and the torch threads
each trial used (from the trial records, where the code records them).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
DATA = os.environ.get("PROMPTSEARCH_DATA_ROOT", str(SHARED / "data" / "medmnist"))
WEIGHTS = os.environ.get("PROMPTSEARCH_BACKBONE_WEIGHTS", str(SHARED / "weights" / "mobilenet_v2-b0353104.pth"))
SYNTHETIC = "SYNTHETIC job: fake trainable (made-up metrics, no training, no Ray), real SearchLoop and persistence"


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f} (1/5 min) on {os.cpu_count()} CPUs"


# --- the child: one synthetic coordinator run ---------------------------------------------------------
def _spec(n: int, concurrency: int):
    from promptsearch.jobs import job_from_dict

    return job_from_dict(dict(
        name=f"scale{n}", space="pixel", dataset="breastmnist", data_root=DATA,
        backbone={"name": "torchvision:mobilenet_v2", "image_size": 32, "weights": WEIGHTS},
        budget={"epochs": 2}, strategy="random", trials=n, concurrency=concurrency, seed=0, max_failures=n))


class FakeTrainable:
    """Made-up results for the loop's trials, in Tune's call order. CPU is the process's, around
    whole stretches of calls (a timer around every call costs more than some calls here): it
    includes the fake's own work, a TrialResult and a few random numbers per trial."""

    def __init__(self, seed: int):
        self.r = random.Random(seed)
        self.calls = 0

    @property
    def cpu(self) -> float:
        return time.process_time()

    def timed(self, fn, *args, **kw):
        self.calls += 1
        return fn(*args, **kw)

    def result(self, candidate: dict, rows: list[dict]):
        from promptsearch.results import TrialResult

        r = self.r
        if r.random() < 0.05:
            return TrialResult.failed(candidate, "TrialFailed: synthetic failure", history=rows)
        metrics = {"auc": 0.5 + 0.45 * r.random(), "accuracy": r.random(), "worst_class_recall": r.random(),
                   "prompt_params": 10 ** (1 + 5 * r.random()), "latency_ms": 0.5 + 20 * r.random()}
        return TrialResult(candidate=candidate, status="completed", metrics=metrics,
                           test_metrics={"auc": r.random(), "accuracy": r.random()}, history=rows, epochs=2,
                           wall_time_s=1.0 + r.random())

    def drive(self, loop, concurrency: int, stop_at: int | None = None, marks=None) -> None:
        inflight: collections.deque = collections.deque()
        k = 0
        while True:
            while len(inflight) < concurrency:
                c = self.timed(loop.ask, f"tune{k:06d}")
                k += 1
                if c is None:
                    break
                inflight.append(c)
            if not inflight:
                return
            c = inflight.popleft()
            tid = c["trial_id"]
            cand = loop.view.trials[tid]["candidate"] if hasattr(loop, "view") else loop.by_id[tid].candidate
            rows = []
            for e in (1, 2):
                row = {"epoch": float(e), "train_loss": self.r.random(), "val_auc": self.r.random(),
                       "val_accuracy": self.r.random(), "val_worst_class_recall": self.r.random()}
                rows.append(row)
                self.timed(loop.epoch, tid, row, {"node_id": "synthetic-node", "node_ip": "127.0.0.1", "pid": 1})
            self.timed(loop.tell, tid, self.result(cand, rows), node={"cpu_time_s": 1.0})
            if marks is not None:
                marks(loop)
            if stop_at is not None and loop.finished >= stop_at:
                return


def _job_bytes(d: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in d.iterdir() if p.is_file()}


def child_run(a) -> None:
    """Submit a job and run it with the fake trainable until ``--kill-at`` finished trials, then
    SIGKILL this process (trials in flight), leaving the figures in ``--report``."""
    from promptsearch.search.workspace import Workspace
    from promptsearch.service.jobs import submit

    ws = Workspace(a.workspace)
    job_id = submit(ws, _spec(a.trials, a.concurrency))
    fake = FakeTrainable(seed=1)
    report: dict = {"job_id": job_id, "windows": []}
    old = not hasattr(__import__("promptsearch.search.loop", fromlist=["SearchLoop"]).SearchLoop, "set_nodes")
    d = ws.job_dir(job_id)

    if old:  # format 1: drive ask/epoch/tell directly (its run() would start MLflow); count state.json writes
        from promptsearch.search.loop import SearchLoop

        loop = SearchLoop(ws, job_id)
        written = [0]
        save = ws.write_state

        def counted(state):
            save(state)
            written[0] += (d / "state.json").stat().st_size

        ws.write_state = counted
        bytes_now = lambda: written[0]  # noqa: E731
        events_now = lambda: fake.calls  # noqa: E731
    else:
        from promptsearch.search.loop import SearchLoop

        loop = SearchLoop(ws, job_id, tracking=False)
        bytes_now = lambda: loop.writer.bytes_written  # noqa: E731
        events_now = lambda: loop.view.seq  # noqa: E731

    window = max(10, a.trials // 10)
    last = {"finished": 0, "cpu": fake.cpu, "events": events_now(), "bytes": bytes_now(), "wall": time.perf_counter()}

    def marks(lp) -> None:
        if lp.finished % window == 0 and lp.finished != last["finished"]:
            ev, by = events_now(), bytes_now()
            report["windows"].append({"finished": lp.finished, "events": ev - last["events"],
                                      "cpu_per_event_us": 1e6 * (fake.cpu - last["cpu"]) / max(1, ev - last["events"]),
                                      "bytes_per_event": (by - last["bytes"]) / max(1, ev - last["events"])})
            last.update(finished=lp.finished, cpu=fake.cpu, events=ev, bytes=by)

    t0 = time.perf_counter()

    def fit(lp, address) -> None:
        last.update(cpu=fake.cpu, events=events_now(), bytes=bytes_now())
        c0, e0, b0 = fake.cpu, events_now(), bytes_now()  # from the first ask (after run()'s start)
        fake.drive(lp, a.concurrency, stop_at=a.kill_at, marks=marks)
        events = events_now() - e0
        report.update(events=events, wall_s=time.perf_counter() - t0, loop_cpu_s=fake.cpu - c0,
                      cpu_per_event_us=1e6 * (fake.cpu - c0) / max(1, events),
                      bytes_per_event=(bytes_now() - b0) / max(1, events), files=_job_bytes(d))
        Path(a.report).write_text(json.dumps(report))
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9 of the coordinator, trials in flight

    if old:
        fit(loop, None)
    else:
        loop.run(fit)  # the real run: start events, snapshots; killed inside fit


def child_resume(a) -> None:
    """Resume a killed synthetic job in this fresh process and run it to its end."""
    t_start = time.perf_counter()
    from promptsearch.search.loop import SearchLoop
    from promptsearch.search.workspace import Workspace
    from promptsearch.service.jobs import job_trials

    imported = time.perf_counter() - t_start
    ws = Workspace(a.workspace)
    (job_id,) = ws.job_ids()
    t0 = time.perf_counter()
    loop = SearchLoop(ws, job_id, tracking=False)
    restore = time.perf_counter() - t0
    fake = FakeTrainable(seed=2)
    first_ask: list[float] = []

    def fit(lp, address):
        t = time.perf_counter()
        c = lp.ask("first")
        first_ask.append(time.perf_counter() - t0)
        assert c is not None
        lp.tell(c["trial_id"], fake.result(lp.view.trials[c["trial_id"]]["candidate"], []))
        fake.drive(lp, a.concurrency)
        first_ask.append(time.perf_counter() - t)

    loop.run(fit)
    trials = job_trials(ws, job_id)
    finished = [t for t in trials if t["status"] in ("completed", "failed")]
    report = {"import_s": imported, "restore_s": restore, "to_first_ask_s": first_ask[0],
              "degraded": loop.degraded, "finished": len(finished),
              "unique_finished": len({t["candidate"]["key"] for t in finished}),
              "preempted": sum(t["status"] == "preempted" for t in trials),
              "requeued": sum(bool(t["requeued_from"]) for t in trials), "status": loop.view.job["status"]}
    Path(a.report).write_text(json.dumps(report))


# --- the parent ------------------------------------------------------------------------------------------
def _timed_cli(args: list[str], env: dict, cwd: Path, repeats: int) -> tuple[float, float]:
    """Median wall and median CPU (user + sys) of a CLI command, in its own process."""
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "promptsearch.cli", *args], capture_output=True, text=True,
                             env=env, cwd=cwd, timeout=300)
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        assert out.returncode == 0, out.stderr[-2000:]
    return statistics.median(walls), statistics.median(cpus)


def _timed(fn, repeats: int) -> float:
    fn()  # warm: the first call imports what it needs
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def synthetic(a) -> None:
    rows, before_rows = [], []
    print(f"# {SYNTHETIC}")
    print(f"# {load()}; python {platform.python_version()}; {platform.processor() or platform.machine()}")
    for n in a.trials:
        rows.append(one_size(n, a, REPO, "after"))
    for n in a.before_trials if a.before else []:
        before_rows.append(one_size(n, a, Path(a.before), "before"))
    table = render(rows, before_rows, a)
    print(table)
    if a.out:
        Path(a.out).write_text(table)
        Path(a.out).with_suffix(".json").write_text(json.dumps({"after": rows, "before": before_rows}, indent=1))


def one_size(n: int, a, code: Path, label: str) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"ps-scale-{label}-{n}-"))
    ws_dir, report = tmp / "ws", tmp / "run.json"
    env = {**os.environ, "PYTHONPATH": str(code), "MLFLOW_DISABLE_TELEMETRY": "true"}
    kill_at = n - 2 * a.concurrency
    load0 = load()
    t0 = time.perf_counter()
    subprocess.run([sys.executable, __file__, "child-run", "--workspace", str(ws_dir), "--trials", str(n),
                    "--concurrency", str(a.concurrency), "--kill-at", str(kill_at), "--report", str(report)],
                   env=env, cwd=code, timeout=36000)
    run = json.loads(report.read_text())
    job_id = run["job_id"]
    print(f"[{label} {n}] ran {kill_at} trials in {time.perf_counter() - t0:.0f} s, killed -9; {load0}", flush=True)
    state_bytes = sum(run["files"].values())
    jobs_wall, jobs_cpu = _timed_cli(["jobs", "--workspace", str(ws_dir)], env, code, a.repeats)
    pareto_wall, pareto_cpu = _timed_cli(["pareto", job_id, "--workspace", str(ws_dir)], env, code, a.repeats)
    inproc = subprocess.run([sys.executable, __file__, "child-reads", "--workspace", str(ws_dir), "--report",
                             str(tmp / "reads.json")], env=env, cwd=code, timeout=3600)
    assert inproc.returncode == 0
    reads = json.loads((tmp / "reads.json").read_text())
    out = {"label": label, "trials": n, "killed_at": kill_at, "events": run["events"],
           "cpu_per_event_us": run["cpu_per_event_us"], "bytes_per_event": run["bytes_per_event"],
           "last_window": run["windows"][-1] if run["windows"] else None, "first_window": run["windows"][0] if run["windows"] else None,
           "state_bytes": state_bytes, "files": run["files"], "jobs_cli_s": jobs_wall, "jobs_cli_cpu_s": jobs_cpu,
           "pareto_cli_s": pareto_wall, "pareto_cli_cpu_s": pareto_cpu, **reads, "load": load0,
           "run_wall_s": run["wall_s"]}
    if label == "after":
        subprocess.run([sys.executable, __file__, "child-resume", "--workspace", str(ws_dir), "--concurrency",
                        str(a.concurrency), "--report", str(tmp / "resume.json")], env=env, cwd=code, timeout=36000,
                       check=True)
        out["resume"] = json.loads((tmp / "resume.json").read_text())
    print(f"[{label} {n}] {json.dumps({k: v for k, v in out.items() if k != 'files'})}", flush=True)
    if not a.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def child_reads(a) -> None:
    """The job API's read functions, in a process that already imported them."""
    from promptsearch.service import jobs

    ws = jobs.Workspace(a.workspace)
    (job_id,) = ws.job_ids()
    r = {"list_jobs_s": _timed(lambda: jobs.list_jobs(ws), 20),
         "job_status_s": _timed(lambda: jobs.job_status(ws, job_id), 20),
         "job_front_s": _timed(lambda: jobs.job_front(ws, job_id), 20),
         "job_trials_s": _timed(lambda: jobs.job_trials(ws, job_id), 3)}
    try:
        from promptsearch.service.views import pareto_view

        r["api_pareto_s"] = _timed(lambda: pareto_view(ws.root, job_id), 10)
    except Exception as e:  # noqa: BLE001 - an older checkout's view
        r["api_pareto_error"] = str(e)[:200]
    Path(a.report).write_text(json.dumps(r))


def reads(a) -> None:
    """The read paths on an existing workspace (see the module docstring), one markdown row per
    checkout; the CLI calls of all checkouts are interleaved (the machine's load hits each alike)."""
    codes = [Path(c).resolve() for c in a.checkout]
    labels = a.label or [_git(c) for c in codes]
    ws_dir = Path(a.workspace)
    (job_id,) = sorted(p.name for p in (ws_dir / "jobs").iterdir() if not p.name.startswith("."))
    envs = [{**os.environ, "PYTHONPATH": str(c), "MLFLOW_DISABLE_TELEMETRY": "true"} for c in codes]
    load0 = load()
    cli = {"jobs": ["jobs", "--workspace", str(ws_dir)], "pareto": ["pareto", job_id, "--workspace", str(ws_dir)]}
    times: dict = {(k, i): ([], []) for k in cli for i in range(len(codes))}
    for _ in range(a.repeats):
        for k, args in cli.items():
            for i, code in enumerate(codes):
                wall, cpu = _timed_cli(args, envs[i], code, 1)
                times[k, i][0].append(wall)
                times[k, i][1].append(cpu)
    load1 = load()
    probe = ("import sys, runpy; sys.argv = ['promptsearch', 'jobs', '--workspace', sys.argv[1]]\n"
             "try:\n    runpy.run_module('promptsearch.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "heavy = ('torch', 'ray', 'mlflow', 'fastapi', 'numpy', 'medmnist', 'promptsearch.space', 'promptsearch.jobs')\n"
             "print(' '.join(m for m in heavy if m in sys.modules), file=sys.stderr)")
    print(f"`jobs` / `pareto` CLI: median of {a.repeats} interleaved calls each; {load0} at the start, {load1} at the end")
    print()
    print("| code | trials | `jobs` CLI wall (CPU) | `pareto` CLI wall (CPU) | heavy modules `jobs` imported "
          "| job_trials (whole log) | REST 100-trial page: first / poll |")
    print("|---|---|---|---|---|---|---|")
    for i, code in enumerate(codes):
        imported = subprocess.run([sys.executable, "-c", probe, str(ws_dir)], env=envs[i], cwd=code, capture_output=True,
                                  text=True, timeout=300).stderr.strip().splitlines()[-1:]
        report = ws_dir.parent / f"pages-{i}.json"
        inproc = subprocess.run([sys.executable, __file__, "child-pages", "--workspace", str(ws_dir), "--report",
                                 str(report)], env=envs[i], cwd=code, timeout=3600)
        pages = json.loads(report.read_text()) if inproc.returncode == 0 else {}
        med = {k: (statistics.median(times[k, i][0]), statistics.median(times[k, i][1])) for k in cli}
        print(f"| {labels[i]} | {pages.get('trials', 0):,} | {_ms(med['jobs'][0])} ({_ms(med['jobs'][1])}) "
              f"| {_ms(med['pareto'][0])} ({_ms(med['pareto'][1])}) | {' '.join(imported) or '-'} "
              f"| {_ms(pages.get('job_trials_s'))} | {_ms(pages.get('page_first_s'))} / {_ms(pages.get('page_poll_s'))} |")


def child_pages(a) -> None:
    """job_trials, and the REST API's ``GET /jobs/{id}/trials?offset=200&limit=100`` (the real app,
    FastAPI's TestClient): the first request, then polls that find nothing new."""
    from fastapi.testclient import TestClient

    from promptsearch.service import jobs
    from promptsearch.service.app import create_app
    from promptsearch.service.settings import Settings

    ws = jobs.Workspace(a.workspace)
    (job_id,) = ws.job_ids()
    r: dict = {"job_trials_s": _timed(lambda: jobs.job_trials(ws, job_id), 3)}
    r["trials"] = len(jobs.job_trials(ws, job_id))
    client = TestClient(create_app(Settings(workspace=ws.root), start_runner=False))

    def page():
        got = client.get(f"/jobs/{job_id}/trials", params={"offset": 200, "limit": 100})
        assert got.status_code == 200 and len(got.json()["trials"]) == 100, got.text[:300]

    t0 = time.perf_counter()
    page()
    r["page_first_s"] = time.perf_counter() - t0
    r["page_poll_s"] = _timed(page, 5)
    Path(a.report).write_text(json.dumps(r))


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{1000 * x:,.0f} ms" if x >= 0.01 else f"{1000 * x:.1f} ms"


def render(rows: list[dict], before: list[dict], a) -> str:
    lines = [f"{SYNTHETIC}.", "",
             f"Command: `nice -n 10 python benchmarks/coordinator_scale.py synthetic --trials "
             f"{' '.join(map(str, a.trials))}{' --before ' + a.before + ' --before-trials ' + ' '.join(map(str, a.before_trials)) if a.before else ''}`"
             f" (random strategy, {a.concurrency} in flight, 2 epochs a trial: 4 events a trial; MLflow off)", "",
             "| code | trials | coordinator CPU / event (whole run; last 10 %) | bytes written / event (whole run; last 10 %) "
             "| state on disk | `jobs` CLI wall (CPU) | `pareto` CLI wall (CPU) | list_jobs / job_status / job_front / API pareto "
             "in-process | job_trials | resume: restore / to first ask | load at the start |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in before + rows:
        lw = r["last_window"] or {}
        res = r.get("resume")
        lines.append(
            f"| {r['label']} | {r['trials']:,} | {r['cpu_per_event_us']:,.0f} µs; {lw.get('cpu_per_event_us', 0):,.0f} µs "
            f"| {r['bytes_per_event']:,.0f} B; {lw.get('bytes_per_event', 0):,.0f} B | {r['state_bytes'] / 1e6:,.2f} MB "
            f"| {_ms(r['jobs_cli_s'])} ({_ms(r['jobs_cli_cpu_s'])}) | {_ms(r['pareto_cli_s'])} ({_ms(r['pareto_cli_cpu_s'])}) "
            f"| {_ms(r['list_jobs_s'])} / {_ms(r['job_status_s'])} / {_ms(r['job_front_s'])} / {_ms(r.get('api_pareto_s'))} "
            f"| {_ms(r['job_trials_s'])} "
            f"| {(_ms(res['restore_s']) + ' / ' + _ms(res['to_first_ask_s'])) if res else '-'} | {r['load']} |")
    lines.append("")
    for r in rows:
        res = r.get("resume") or {}
        lines.append(f"- {r['trials']:,} trials: killed -9 at {r['killed_at']:,} finished with trials in flight; the "
                     f"resume ended `{res.get('status')}` with {res.get('finished'):,} finished "
                     f"({res.get('unique_finished'):,} distinct candidates), {res.get('preempted')} preempted and "
                     f"re-queued ({res.get('requeued')} re-runs){'; strategy degraded: ' + res['degraded'] if res.get('degraded') else ''}; "
                     f"files: " + ", ".join(f"{k} {v / 1e3:,.0f} kB" for k, v in sorted(r["files"].items())))
    return "\n".join(lines) + "\n"


# --- the real job: every process's memory -----------------------------------------------------------------
def _mem(pid: int) -> tuple[int, int] | None:
    try:
        rss = pss = 0
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
        return rss, pss
    except OSError:
        return None


def _native(pid: int) -> set[str]:
    """The site-packages whose native libraries a process has mapped (what it imported, roughly)."""
    out = set()
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                path = line.rstrip().split(" ")[-1]
                if "site-packages/" in path and (".so" in path):
                    out.add(path.split("site-packages/", 1)[1].split("/", 1)[0].split(".libs")[0].rstrip("_"))
    except OSError:
        pass
    return out


def _kind(cmd: list[str]) -> str:
    exe = (cmd[0] if cmd else "").rsplit("/", 1)[-1]
    if exe in ("raylet", "gcs_server"):  # their command lines name the worker command too
        return f"ray {exe}"
    text = " ".join(cmd)
    for key, name in (("ImplicitFunc", "trial worker (Tune actor)"), ("promptsearch.preflight", "preflight (short-lived child)"),
                      ("promptsearch.cli", "coordinator (promptsearch search)"),
                      ("default_worker", "ray worker (idle)"), ("ray::IDLE", "ray worker (idle)"),
                      ("dashboard/agent", "ray dashboard agent"), ("runtime_env/agent", "ray runtime_env agent"),
                      ("log_monitor", "ray log_monitor"), ("autoscaler/_private/monitor", "ray monitor"),
                      ("dashboard/dashboard.py", "ray dashboard (minimal)"), ("gcs_server", "ray gcs_server"),
                      ("raylet", "ray raylet"), ("ray::", "ray worker")):
        if key in text:
            return name
    return (cmd[0] if cmd else "?").rsplit("/", 1)[-1]


def _tree(root: int) -> list[int]:
    """``root`` and every process below it (from /proc: no psutil needed)."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(c for c, pp in parent.items() if pp == pid)
    return out


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [x.decode(errors="replace") for x in f.read().split(b"\0") if x]
    except OSError:
        return []


def _threads(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Threads:"))
    except (OSError, StopIteration):
        return 0


def realjob(a) -> None:
    code = Path(a.checkout).resolve()
    ws = Path(tempfile.mkdtemp(prefix=f"ps-realjob-{a.label}-"))
    cmd = [sys.executable, "-m", "promptsearch.cli", "search", "jobs/breast_pixel.yaml", "--workspace", str(ws),
           "--trials", str(a.trials), "--data-root", DATA, "--backbone-weights", WEIGHTS, "--json",
           "--set", f"budget.epochs={a.epochs}"]
    env = {**os.environ, "PYTHONPATH": str(code), "MLFLOW_DISABLE_TELEMETRY": "true", "PROMPTSEARCH_FAULTS": ""}
    load0 = load()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=code, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    peak: dict[int, dict] = {}
    total_rss = total_pss = 0
    while proc.poll() is None:
        s_rss = s_pss = 0
        for pid in _tree(proc.pid):
            m = _mem(pid)
            if m is None:
                continue
            pcmd = _cmdline(pid)
            info = peak.setdefault(pid, {"kind": _kind(pcmd), "rss": 0, "pss": 0, "threads": 0})
            if "ImplicitFunc" in " ".join(pcmd):  # an idle worker that became a trial's actor
                info["kind"] = "trial worker (Tune actor)"
            info["threads"] = max(info["threads"], _threads(pid))
            info["rss"], info["pss"] = max(info["rss"], m[0]), max(info["pss"], m[1])
            if info["kind"].startswith("trial worker"):
                info.setdefault("native", set()).update(_native(pid))
            s_rss += m[0]
            s_pss += m[1]
        total_rss, total_pss = max(total_rss, s_rss), max(total_pss, s_pss)
        time.sleep(0.2)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    status = json.loads(out)["status"] if out.strip().startswith("{") else {"status": "?", "message": err[-500:]}
    job_id = status.get("job_id")
    threads = []
    rec = ws / "jobs" / str(job_id)
    try:
        sys.path.insert(0, str(code))
        from promptsearch.service.jobs import job_trials

        threads = [(t["trial_id"], t.get("threads"), t["pid"]) for t in job_trials(ws, job_id)]
    except Exception as e:  # noqa: BLE001
        threads = [("?", str(e)[:100], None)]
    lines = [f"### {a.label}: `{' '.join(cmd[1:])}` from `{code}` ({_git(code)})", "",
             f"{status.get('status')} in {wall:.0f} s; {load0} at the start; sampled every 0.2 s "
             f"(Rss and Pss from /proc/PID/smaps_rollup: Pss splits shared pages between the processes sharing "
             f"them, so the Pss column adds up, the Rss one counts torch's libraries once per process)", "",
             "| process | pid | peak RSS | peak PSS | peak OS threads |", "|---|---|---|---|---|"]
    for pid, info in sorted(peak.items(), key=lambda kv: -kv[1]["rss"]):
        if info["rss"] < 20e6:
            continue
        lines.append(f"| {info['kind']} | {pid} | {info['rss'] / 2**20:,.0f} MiB | {info['pss'] / 2**20:,.0f} MiB "
                     f"| {info['threads']} |")
    native = sorted(set().union(*(i.get("native", set()) for i in peak.values())))
    lines += ["", f"native packages the trial workers mapped: {', '.join(native)}"]
    lines += ["", f"peak of the sum over all {len(peak)} processes: RSS {total_rss / 2**30:.2f} GiB, "
                  f"PSS {total_pss / 2**30:.2f} GiB", "",
              "torch threads per trial (record's `threads`; worker pid): "
              + ", ".join(f"{t} {n} (pid {p})" for t, n, p in threads), ""]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "a") as f:
            f.write(text)
    if not a.keep:
        shutil.rmtree(ws, ignore_errors=True)
    del rec


def _git(code: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(code), "log", "-1", "--format=%h"], capture_output=True,
                              text=True).stdout.strip()
    except OSError:
        return "?"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("synthetic")
    s.add_argument("--trials", type=int, nargs="+", default=[100, 1000, 10000])
    s.add_argument("--concurrency", type=int, default=4)
    s.add_argument("--repeats", type=int, default=5, help="CLI calls per figure (median)")
    s.add_argument("--before", default=None, help="an older checkout to measure the same way")
    s.add_argument("--before-trials", type=int, nargs="+", default=[100, 1000])
    s.add_argument("--out", default=None, help="markdown table to write (and .json beside it)")
    s.add_argument("--keep", action="store_true")
    d = sub.add_parser("reads")
    d.add_argument("--workspace", required=True, help="a synthetic run's workspace (--keep)")
    d.add_argument("--checkout", nargs="+", default=[str(REPO)], help="checkouts to compare (interleaved)")
    d.add_argument("--repeats", type=int, default=11, help="CLI calls per figure (median)")
    d.add_argument("--label", nargs="+", default=None, help="the code column, one per checkout (default: commits)")
    for name in ("child-run", "child-resume", "child-reads", "child-pages"):
        c = sub.add_parser(name)
        c.add_argument("--workspace", required=True)
        c.add_argument("--trials", type=int, default=0)
        c.add_argument("--concurrency", type=int, default=4)
        c.add_argument("--kill-at", type=int, default=None)
        c.add_argument("--report", required=True)
    r = sub.add_parser("realjob")
    r.add_argument("--checkout", default=str(REPO))
    r.add_argument("--label", default="after")
    r.add_argument("--trials", type=int, default=6)
    r.add_argument("--epochs", type=int, default=1)
    r.add_argument("--out", default=None, help="markdown file to append to")
    r.add_argument("--keep", action="store_true")
    a = p.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    {"synthetic": synthetic, "child-run": child_run, "child-resume": child_resume, "child-reads": child_reads,
     "reads": reads, "child-pages": child_pages, "realjob": realjob}[a.mode](a)


if __name__ == "__main__":
    main()
