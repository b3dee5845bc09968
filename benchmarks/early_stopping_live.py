"""Early stopping on live jobs (#15): the same comparison as ``early_stopping.py``, at a smaller
scale, with real trials through the product (submit, Ray Tune, MLflow), not replayed curves.

    nice -n 15 python benchmarks/early_stopping_live.py run        # ~30-60 min on 2 shared cores; resumable
    python benchmarks/early_stopping_live.py table                  # rebuild the .md from the finished jobs

Three jobs on PneumoniaMNIST (validation 524 images), pixel prompts on MobileNetV2 at 32 px, 512
training images, 9 epochs a full trial, random search with one seed (so every arm proposes the
same candidates in the same order), one trial at a time (the replay's sequential ASHA):

* (a) ``full``: every trial trains 9 epochs, ``--full-trials`` trials;
* (b) ``scalar``: ``scheduler: {rungs: R, eta: E, ranking: scalar}`` — Ray Tune's ASHA on a
  weighted sum of the normalised objectives (the peer baseline), ``--asha-trials`` trials;
* (c) ``mo-asha``: the same rungs with ``ranking: nds`` (MO-ASHA), ``--asha-trials`` trials.

R and E are the settings ``early_stopping.py`` chose on the replayed tables. Each job's record
gives, trial by trial, the image passes it used and the hypervolume of its front (completed
trials; objectives AUC, worst-class recall, prompt parameters); the table reads every arm's
hypervolume at the image passes (a) had spent after 1/3 and all of its trials. A killed run
resumes: ``run`` skips finished jobs and resumes an unfinished one.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import typer

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"
RESULTS = HERE / "results"
MD = RESULTS / "early_stopping_live.md"
WS = REPO / "artifacts" / "early_stopping_live"
OBJECTIVES = ["auc", "worst_class_recall", "prompt_params"]
RUNGS, ETA = [1], 2.0  # early_stopping.py's choice on pneumoniamnist (results/early_stopping.md)

app = typer.Typer(add_completion=False, help=__doc__.split("\n")[0])


def spec(arm: str, trials: int) -> dict:
    s = dict(name=f"live-{arm}", space="pixel", dataset="pneumoniamnist", data_root=str(SHARED / "data" / "medmnist"),
             backbone={"name": "torchvision:mobilenet_v2", "image_size": 32,
                       "weights": str(SHARED / "weights" / "mobilenet_v2-b0353104.pth")},
             budget={"epochs": 9, "max_train_samples": 512, "latency_repeats": 3, "threads": 1},
             strategy="random", trials=trials, concurrency=1, seed=7, objectives=OBJECTIVES)
    if arm != "full":
        s["scheduler"] = {"rungs": RUNGS, "eta": ETA, "ranking": "scalar" if arm == "scalar" else "nds"}
    return s


def _job(ws, arm: str) -> str | None:
    from promptsearch.service.jobs import list_jobs

    return next((j["job_id"] for j in list_jobs(ws) if j["name"] == f"live-{arm}"), None)


@app.command()
def run(full_trials: int = typer.Option(20, help="Trials of the full-budget arm (a)."),
        asha_trials: int = typer.Option(36, help="Trials of each ASHA arm (about (a)'s image passes at eta 2)."),
        arms: str = typer.Option("full,scalar,mo-asha", help="Arms to run, in this order.")) -> None:
    """Run (or resume) the three jobs, then write the table."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from promptsearch.jobs import job_from_dict
    from promptsearch.service.jobs import Workspace, job_status, run_job, submit

    ws = Workspace(WS)
    for arm in arms.split(","):
        job_id = _job(ws, arm)
        if job_id is None:
            job_id = submit(ws, job_from_dict(spec(arm, full_trials if arm == "full" else asha_trials)))
        if job_status(ws, job_id)["status"] != "completed":
            t0 = time.time()
            st = run_job(ws, job_id)
            print(f"{arm}: {st['status']} in {time.time() - t0:.0f} s", flush=True)
    table()


def curve(ws, job_id: str) -> tuple[list[tuple[int, float]], dict]:
    """[(cumulative image passes, hypervolume)] after each finished trial, and the job's status."""
    import numpy as np

    from promptsearch.objectives import hypervolume, parse_objectives
    from promptsearch.service.jobs import job_status, job_trials

    objectives = parse_objectives(OBJECTIVES)
    trials = sorted((t for t in job_trials(ws, job_id) if t["status"] in ("completed", "stopped", "failed")),
                    key=lambda t: t["finished_at"])
    out, used, done = [], 0, []
    for t in trials:
        used += t.get("image_passes") or 0
        if t["status"] == "completed":
            done.append([t["metrics"][o] for o in OBJECTIVES])
        out.append((used, hypervolume(np.array(done), objectives) if done else 0.0))
    return out, job_status(ws, job_id)


def hv_at(points: list[tuple[int, float]], passes: float) -> float:
    """The hypervolume after the last trial that ended within ``passes`` image passes."""
    hv = 0.0
    for used, h in points:
        if used > passes:
            break
        hv = h
    return hv


@app.command()
def table() -> None:
    """Write results/early_stopping_live.md from the jobs in the workspace."""
    from promptsearch.service.jobs import Workspace

    ws = Workspace(WS)
    arms = {a: _job(ws, a) for a in ("full", "scalar", "mo-asha")}
    got = {a: curve(ws, j) for a, j in arms.items() if j}
    if "full" not in got:
        print("no full-budget job yet")
        return
    full_points = got["full"][0]
    total = full_points[-1][0] if full_points else 0
    n_full = len(full_points)
    third = full_points[max(0, n_full // 3 - 1)][0] if full_points else 0
    final_a = full_points[-1][1] if full_points else 0.0
    lines = ["# Early stopping, live jobs (PneumoniaMNIST, pixel prompts, MobileNetV2, 32 px)", "",
             "Made by `benchmarks/early_stopping_live.py` (protocol in its docstring): real trials through the",
             "product, one at a time, random search with one seed (the same candidates in the same order in",
             f"every arm), 9 epochs a full trial, 512 training images, rungs {RUNGS}, eta {ETA:g}.",
             "HV: the front of completed trials over (AUC, worst-class recall, prompt parameters), normalised as",
             "the project does. One job per arm: a single run, so no spread or test is given (the replayed",
             "benchmark, `early_stopping.md`, has 20 seeds).", "",
             f"Budget axis: (a)'s image passes after {n_full // 3} of its {n_full} trials ({third:,}) and after all "
             f"({total:,}).", "",
             "| arm | status | trials | stopped | completed | image passes used | HV at (a)'s 1/3 | HV at (a)'s total | "
             "vs (a)'s final HV at 1/3 | wall s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for arm, (points, st) in got.items():
        tr = st["trials"]
        wall = (st["finished_at"] or time.time()) - (st["started_at"] or time.time())
        h3, hall = hv_at(points, third), hv_at(points, total)
        lines.append(f"| {arm} | {st['status']} | {tr['finished']} | {tr.get('stopped', 0)} | {tr['completed']} | "
                     f"{st['image_passes']['used']:,} | {h3:.4f} | {hall:.4f} | "
                     f"{100 * h3 / final_a if final_a else 0:.1f} % | {wall:.0f} |")
    lines += ["", "Targets (the issue's, on the replayed benchmark; here at a smaller scale): MO-ASHA reaches >= 98 % "
              "of (a)'s final HV at <= 1/3 of its image passes, and more HV than scalarized ASHA at equal passes.", ""]
    MD.write_text("\n".join(lines) + "\n")
    (RESULTS / "early_stopping_live.json").write_text(json.dumps(
        {a: {"job_id": arms[a], "curve": p} for a, (p, _) in got.items()}, indent=1))
    print("\n".join(lines))


REPEATS_MD = RESULTS / "front_repeats_live.md"


@app.command()
def repeats(trials: int = typer.Option(16, help="Search trials before the front is re-evaluated."),
            k: int = typer.Option(2, help="front_repeats: extra seeds per front trial.")) -> None:
    """One live job on BreastMNIST (validation 78 images: the noisy case) with ``front_repeats``:
    which front trials keep their place once ranked by their seeds' mean."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from promptsearch.jobs import job_from_dict
    from promptsearch.service.jobs import Workspace, job_front, job_status, job_trials, run_job, submit

    ws = Workspace(WS)
    s = spec("full", trials)
    s.update(name="live-repeats", dataset="breastmnist", front_repeats=k,
             budget={"epochs": 3, "latency_repeats": 3, "threads": 1})
    job_id = _job(ws, "repeats") or submit(ws, job_from_dict(s))
    if job_status(ws, job_id)["status"] != "completed":
        run_job(ws, job_id)
    st = job_status(ws, job_id)
    rep = st["repeats"]
    trials_by_id = {t["trial_id"]: t for t in job_trials(ws, job_id)}
    lines = ["# The front re-evaluated with more seeds (live job)", "",
             "Made by `benchmarks/early_stopping_live.py repeats`: BreastMNIST (validation 78 images), pixel prompts on",
             f"MobileNetV2 at 32 px, 3 epochs, random search, {trials} trials, then every front trial re-run with",
             f"{k} more seeds (`front_repeats: {k}`); objectives AUC, worst-class recall, prompt parameters.", "",
             f"Front before: {len(rep['front_before'])} trials; after (ranked by the mean): {len(rep['front_after'])}; "
             f"moved off: {len(rep['moved_off'])} ({', '.join(rep['moved_off']) or 'none'}); rounds: {rep['round']}; "
             f"re-evaluation trials: {rep['planned']}.", "",
             "| trial | on the front after | seed-0 val AUC | mean ± sd val AUC | seed-0 worst-class recall | "
             "mean ± sd worst-class recall | prompt params |", "|---|---|---|---|---|---|---|"]
    after = set(rep["front_after"] or [])
    for tid in dict.fromkeys([*rep["front_before"], *after]):
        t = trials_by_id[tid]
        r = t.get("repeats") or {"mean": {}, "sd": {}}
        cell = (lambda m: f"{r['mean'][m]:.3f} ± {r['sd'][m]:.3f}" if m in r["mean"] else "-")
        lines.append(f"| {tid} | {'yes' if tid in after else 'no'} | {t['metrics']['auc']:.3f} | {cell('auc')} | "
                     f"{t['metrics']['worst_class_recall']:.3f} | {cell('worst_class_recall')} | "
                     f"{t['metrics']['prompt_params']:.0f} |")
    lines += ["", f"Hypervolume of the final front (on the means): {st['hypervolume']:.4f}; "
              f"front now: {', '.join(t['trial_id'] for t in job_front(ws, job_id))}.", ""]
    REPEATS_MD.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    app()
