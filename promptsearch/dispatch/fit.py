"""Drive a search loop's trials with Ray Tune: the ``fit`` that :meth:`SearchLoop.run` is given.

    python -c "from promptsearch.dispatch.fit import fit; help(fit)"

``Tuner.fit`` runs the trials; the one Searcher adapter (:mod:`.tune_adapter`) maps Tune's
``suggest`` onto :meth:`SearchLoop.ask` and ``on_trial_complete`` onto :meth:`SearchLoop.tell`.
Each trial reserves the job's ``resources`` and runs ``promptsearch.dispatch.trainable.train_trial``
with as many torch threads as CPUs it reserved (unless the budget says otherwise: the record's
``threads`` says what the trial ran with); with ``reuse_actors`` one worker process per
concurrent slot runs trial after trial.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..jobs import JobError
from ..search.loop import SearchLoop
from .ray_session import ray_session
from .trainable import parse_faults

log = logging.getLogger("promptsearch.dispatch")


def trial_payload(loop: SearchLoop) -> dict[str, Any]:
    """What every trial of the job shares (:class:`~.trainable.TrialJob`), sent once through Ray."""
    budget = loop.spec.budget.model_dump()
    budget["threads"] = budget["threads"] or max(1, int(loop.spec.resources.cpu))  # one thread per reserved CPU
    return {"job_id": loop.job_id, "space": loop.job["space"], "dataset": loop.spec.dataset,
            "data_root": loop.spec.data_root, "backbone": loop.spec.backbone.to_json(), "budget": budget,
            "backbones": {k: b.to_json() for k, b in loop.spec.backbones.items()},
            "weights_dir": str(loop.dir / "weights"), "faults": parse_faults(),
            "rungs": loop.spec.scheduler.active(loop.spec.budget.epochs) if loop.spec.scheduler else []}


def _check_nodes(loop: SearchLoop, nodes: list[dict[str, Any]]) -> None:
    need = loop.spec.resources
    if not any(n["Resources"].get("CPU", 0) >= need.cpu and n["Resources"].get("GPU", 0) >= need.gpu for n in nodes):
        have = ", ".join(f"{n['NodeManagerAddress']}: {n['Resources'].get('CPU', 0):g} CPU "
                         f"{n['Resources'].get('GPU', 0):g} GPU" for n in nodes)
        raise JobError(f"no Ray node can run a trial: each needs {need.cpu:g} CPU and {need.gpu:g} GPU "
                       f"(resources in the job); the cluster has {have}")


def fit(loop: SearchLoop, address: str | None) -> None:
    """Run the loop's remaining trials on Ray (local, or the cluster at ``address``) until it says
    stop. A cancel that arrives while Ray starts is acted on as soon as Ray is up (before Tune
    starts a trial), and one that arrived before it starts Ray at all."""
    import ray
    from ray import tune

    from .trainable import train_trial
    from .tune_adapter import ErrorReasons, JobStopper, RungScheduler, StrategySearcher, trial_dirname

    if loop.should_stop(now=True):
        return
    t0 = time.perf_counter()
    with ray_session(loop.ws, address):
        loop.handle_signals()  # ray.init put its own SIGTERM handler over the loop's
        log.info("ray ready in %.1f s", time.perf_counter() - t0)
        if loop.should_stop(now=True):
            return
        nodes = [n for n in ray.nodes() if n["Alive"]]
        loop.set_nodes([{"node_id": n["NodeID"], "ip": n["NodeManagerAddress"], "resources": n["Resources"]}
                        for n in nodes])
        _check_nodes(loop, nodes)
        searcher = StrategySearcher(loop)
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(train_trial, job=trial_payload(loop)), loop.spec.resources.ray()),
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=RungScheduler(searcher),
                                        num_samples=-1,  # the loop says when it has enough
                                        max_concurrent_trials=loop.spec.concurrency,
                                        reuse_actors=True,  # one worker process per slot runs many trials
                                        trial_dirname_creator=trial_dirname, trial_name_creator=trial_dirname),
            run_config=tune.RunConfig(
                name=f"attempt-{loop.attempt}", storage_path=str(loop.ws.tune_dir / loop.job_id),
                stop=JobStopper(loop), callbacks=[ErrorReasons(searcher)], verbose=0,
                failure_config=tune.FailureConfig(max_failures=0)),  # a failed trial is a result, not retried
        )
        try:
            tuner.fit()
        finally:
            searcher.flush_errors()  # an errored trial whose reason never came is still told
