"""Orchestration overhead: N trials run as a search job (Ray Tune workers + MLflow + state files)
against the same N trials back to back in one process.

    nice python benchmarks/orchestration_overhead.py --trials 4 --image-size 64 --epochs 12

Both sides run the same candidates (the random strategy's first N proposals for seed 0, which is
what the job asks) with the same budget and threads: one torch thread per CPU a trial reserves
(``--cpus``, default 1 as in the default job; ``--threads`` overrides), the job one trial at a time. Ray is started first and timed apart, so the ratio is "once Ray has
started". Printed: wall times, the ratio, and where the job's extra time goes (MLflow start,
worker start-up before the first trial, per-trial dispatch gaps, shutdown).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # progress shows in logs as it happens
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--image-size", type=int, default=64)  # MobileNetV2 at 64 px, 12 epochs: ~30 s a trial on 2 idle cores
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--cpus", type=float, default=1.0, help="CPUs a trial reserves (the job's resources.cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: one per reserved CPU)")
    p.add_argument("--data-root", default=os.environ.get("PROMPTSEARCH_DATA_ROOT", str(REPO.parent / "shared/data/medmnist")))
    p.add_argument("--weights", default=os.environ.get("PROMPTSEARCH_BACKBONE_WEIGHTS",
                                                       str(REPO.parent / "shared/weights/mobilenet_v2-b0353104.pth")))
    p.add_argument("--workspace", default=None, help="default: a fresh temporary folder")
    a = p.parse_args()
    a.threads = a.threads or max(1, int(a.cpus))  # what dispatch.fit.trial_payload gives a trial
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    import torch

    from promptsearch.dispatch.ray_session import _init_ray
    from promptsearch.service.jobs import Workspace, job_trials, run_job, submit
    from promptsearch.data import load_dataset
    from promptsearch.jobs import check_job, job_from_dict
    from promptsearch.backbones import build_backbone
    from promptsearch.strategies import make_strategy
    from promptsearch.trial import run_trial

    spec = job_from_dict(dict(
        name="overhead", space="pixel", dataset="breastmnist", data_root=a.data_root,
        backbone={"name": "torchvision:mobilenet_v2", "image_size": a.image_size, "weights": a.weights},
        budget={"epochs": a.epochs, "threads": a.threads}, strategy="random", trials=a.trials, concurrency=1,
        resources={"cpu": a.cpus}, seed=0))
    space = check_job(spec)  # the job's space, pins applied
    strategy = make_strategy("random", space, spec.objective_list, seed=spec.seed)
    candidates = [strategy.ask() for _ in range(a.trials)]
    print(f"{a.trials} trials: MobileNetV2 {a.image_size} px, {a.epochs} epochs, {a.cpus:g} CPU reserved, "
          f"{a.threads} threads, BreastMNIST")

    # --- back to back in this process (dataset and backbone loaded once, like a worker's cache) ---
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    data = load_dataset(spec.dataset, root=spec.data_root)
    backbone = build_backbone(spec.backbone)
    seq, seq_cpu = [], []
    for c in candidates:
        c0 = time.process_time()
        seq.append(run_trial(c, data, backbone, spec.budget, seed=spec.seed))
        seq_cpu.append(time.process_time() - c0)
    seq_wall = time.perf_counter() - t0
    seq_trials = [r.wall_time_s for r in seq]
    print(f"in-process: {seq_wall:7.1f} s  (trials {', '.join(f'{x:.1f}' for x in seq_trials)} s; "
          f"CPU {', '.join(f'{x:.0f}' for x in seq_cpu)} s)")

    # --- the same trials as a search job ---
    ws = Workspace(a.workspace or tempfile.mkdtemp(prefix="ps-overhead-"))
    t0 = time.perf_counter()
    _init_ray(ws, None)
    ray_start = time.perf_counter() - t0
    job_id = submit(ws, spec)
    t0 = time.perf_counter()
    start = time.time()
    status = run_job(ws, job_id)
    job_wall = time.perf_counter() - t0
    import ray

    ray.shutdown()
    records = job_trials(ws, job_id)
    assert status["status"] == "completed", status["message"]
    assert [r["candidate"]["genome"] for r in records] == [list(c.genome) for c in candidates]
    in_worker = [r["wall_time_s"] for r in records]
    first_start = records[0]["started_at"] - start  # MLflow + Tune set-up before the first ask
    first_gap = (records[0]["finished_at"] - records[0]["started_at"]) - in_worker[0]  # worker start-up
    gaps = [(r["started_at"] - prev["finished_at"]) + ((r["finished_at"] - r["started_at"]) - r["wall_time_s"])
            for prev, r in zip(records, records[1:])]
    tail = (start + job_wall) - records[-1]["finished_at"]
    job_cpu = [r["cpu_time_s"] or 0.0 for r in records]
    print(f"job:        {job_wall:7.1f} s  (trials {', '.join(f'{x:.1f}' for x in in_worker)} s in the workers; "
          f"CPU {', '.join(f'{x:.0f}' for x in job_cpu)} s)   [Ray start {ray_start:.1f} s, not counted]")
    orchestration = job_wall - sum(in_worker)
    print(f"ratio job / in-process (wall): {job_wall / seq_wall:.3f}")
    print(f"  trials alone, worker / in-process: wall {sum(in_worker) / sum(seq_trials):.3f}, "
          f"CPU {sum(job_cpu) / sum(seq_cpu):.3f}  (wall differences at equal CPU are other load on the machine)")
    print(f"  orchestration (job wall - trial time): {orchestration:.1f} s -> ratio at equal trial speed "
          f"{(seq_wall + orchestration) / seq_wall:.3f}")
    print("where the job's extra time goes:")
    print(f"  before the first trial (MLflow store + experiment, Tune set-up): {first_start:6.1f} s")
    print(f"  first trial's worker start-up (imports, data, backbone):        {first_gap:6.1f} s")
    if gaps:
        print(f"  per later trial (dispatch, report, state + MLflow writes):      {statistics.mean(gaps):6.2f} s "
              f"(max {max(gaps):.2f})")
    print(f"  end (front, MLflow artifacts, Tune shutdown):                   {tail:6.1f} s")
    print(f"  trials themselves vs in-process:                                {sum(in_worker) - sum(seq_trials):+6.1f} s")
    print(f"workspace: {ws.root}")


if __name__ == "__main__":
    main()
