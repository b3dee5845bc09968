"""The one thin adapter between Ray Tune and a search job's loop (:class:`~promptsearch.search.loop.SearchLoop`).

    python -c "from promptsearch.dispatch.tune_adapter import StrategySearcher; help(StrategySearcher)"

Like Ray's ``OptunaSearch``: ``suggest`` -> ``loop.ask`` (-> ``strategy.ask()``), ``on_trial_complete``
-> ``loop.tell`` (-> ``strategy.tell()``; an errored trial is told with Ray's error text: failed when
the trial raised, preempted and re-run when its worker process died). Every epoch's report goes
through the TrialScheduler hook (:class:`RungScheduler`) -> ``loop.epoch``, which records it and, at
a rung of the job's scheduler, decides whether the trial goes on (MO-ASHA, :mod:`promptsearch.rungs`):
the decision is the loop's — logged in the job's event log, so it survives a kill -9 and every
strategy gets the same rule — and the scheduler only tells Tune to STOP. A stopped trial's last
report carries its result at the rung, which ``on_trial_complete`` tells. Two more hooks: a
Stopper that stops every trial when the job is cancelled or fails too often, and a Callback that
hands Ray's error text of an errored trial over. Strategies and the loop never see Ray: this
package is where Ray lives.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from ray.tune import Callback, Stopper
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from ..results import TrialResult
from ..search.loop import FINISHED, WORKER_DEATH, SearchLoop


class StrategySearcher(Searcher):
    """``suggest`` -> ask, ``on_trial_result`` -> epoch, ``on_trial_complete`` -> tell.

    An errored trial is told once Ray's error text arrives (:class:`ErrorReasons`, called right
    after ``on_trial_complete``): the loop needs it to tell a worker process that died (preempted,
    re-run) from a trial that raised (failed)."""

    def __init__(self, loop: SearchLoop):
        super().__init__()
        self.loop = loop
        self.trials: dict[str, str] = {}  # Tune trial id -> the job's trial id
        self.nodes: dict[str, dict[str, Any]] = {}  # Tune trial id -> where its last result came from
        self.errored: list[str] = []  # Tune trial ids that errored, waiting for their error text

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # objectives come from the job, not from Tune's metric/mode

    def suggest(self, trial_id: str) -> dict | str | None:
        self.flush_errors()
        config = self.loop.ask(trial_id)
        if config is FINISHED:  # None: ask again later (a trial in flight may need a re-run)
            return None if self.loop.waiting() else Searcher.FINISHED
        self.trials[trial_id] = config["trial_id"]
        return config

    def epoch(self, trial_id: str, result: dict) -> bool:
        """One report of a running trial (from :class:`RungScheduler`): whether it goes on."""
        if "history_row" not in result or trial_id not in self.trials:
            return True
        self.nodes[trial_id] = node_info(result)
        rung = TrialResult.model_validate(json.loads(result["rung_result"])) if result.get("rung_result") else None
        return self.loop.epoch(self.trials[trial_id], json.loads(result["history_row"]), self.nodes[trial_id], rung)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ours = self.trials.get(trial_id)
        if ours is None:
            return
        if error:
            self.errored.append(trial_id)  # told by trial_error (or flush_errors)
            return
        result = result or {}
        text = result.get("trial_result") or result.get("rung_result")  # the end, or the rung it was stopped at
        res = TrialResult.model_validate(json.loads(text)) if text else None
        self.loop.tell(ours, res, node=node_info(result), weights=result.get("weights") or None)

    def trial_error(self, trial_id: str, text: str) -> None:
        """Tell an errored trial with Ray's error text (an exception, or how its worker died)."""
        if trial_id in self.errored:
            self.errored.remove(trial_id)
            self.loop.tell(self.trials[trial_id], None, error=text, node=self.nodes.get(trial_id))

    def flush_errors(self) -> None:
        for trial_id in list(self.errored):
            self.trial_error(trial_id, "the trial errored in Ray")

    def __getstate__(self) -> dict:  # Tune pickles its searcher; the live loop stays here
        return {**self.__dict__, "loop": None}

    def save(self, checkpoint_path: str) -> None:  # the job's event log is the real checkpoint
        Path(checkpoint_path).write_text(json.dumps({"log": str(self.loop.dir / "events.jsonl")}))

    def restore(self, checkpoint_path: str) -> None:
        return None


def trial_dirname(trial: Any) -> str:
    """Tune's per-trial folder: the job's trial id and Tune's (not the whole config)."""
    return f"{trial.config.get('trial_id', 'trial')}_{trial.trial_id}"


def node_info(result: dict) -> dict[str, Any]:
    """Where a trial ran (the trainable reports ``node_id``, ``threads`` and ``cpu_time_s``; Tune
    adds ``node_ip``, ``pid``)."""
    return {k: result.get(k) for k in ("node_id", "node_ip", "pid", "cpu_time_s", "threads")}


class RungScheduler(FIFOScheduler):
    """Tune's TrialScheduler hook, first to see every report: hands it to the loop (via the
    searcher), which records the epoch and, at a rung, says whether the trial goes on. FIFO
    otherwise: no trial is paused or reordered."""

    def __init__(self, searcher: StrategySearcher):
        super().__init__()
        self.searcher = searcher

    def __getstate__(self) -> dict:
        return {**self.__dict__, "searcher": None}

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        go = self.searcher.epoch(trial.trial_id, result)
        return TrialScheduler.CONTINUE if go else TrialScheduler.STOP


class JobStopper(Stopper):
    """Stops every trial when the job is cancelled, interrupted or has failed too often."""

    def __init__(self, loop: SearchLoop):
        self.loop = loop

    def __getstate__(self) -> dict:
        return {"loop": None}

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.loop.should_stop()


class ErrorReasons(Callback):
    """Hands Ray's error text of an errored trial (an exception, or a dead worker) to the searcher."""

    def __init__(self, searcher: StrategySearcher):
        self.searcher = searcher

    def __getstate__(self) -> dict:
        return {"searcher": None}

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.searcher.trial_error(trial.trial_id, error_text(trial))


# Ray's words for a trial whose process went away under it (not the trial's own exception)
DEATH_MARKERS = ("actor died", "worker process has died", "worker died", "ActorDiedError", "RayActorError",
                 "running low on memory", "OutOfMemoryError", "NodeDiedError", "node died", "ActorUnavailableError")


def error_text(trial: Any) -> str:
    """The useful line of Ray's error file: the exception, or how the worker process died."""
    text = ""
    with contextlib.suppress(Exception):
        text = Path(trial.error_file).read_text() if trial.error_file else ""
    text = text or str(getattr(trial, "error_msg", "") or "")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("Failure #")]
    if any(m in ln for ln in lines for m in DEATH_MARKERS):  # the loop preempts these (WORKER_DEATH)
        detail = next((ln for ln in lines if "exit detail" in ln.lower()), "")
        return f"{WORKER_DEATH}: {detail or lines[0]}"[:2000]
    exc = [ln for ln in lines if not ln.startswith(("File ", "^", "\x1b", "ray::")) and ": " in ln]
    return (exc[-1] if exc else (lines[-1] if lines else "the trial errored in Ray"))[:2000]
