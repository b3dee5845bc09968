"""A job's state on disk: an append-only event log (and its mirror), snapshots of the strategy,
and the small files the read paths use. Every event costs O(1) to persist, whatever the job's size.

    python -c "from promptsearch.search.state import JobStore; print(JobStore('promptsearch-runs/jobs/JOB', 'JOB').read_view()[0].counts)"

Files (``<workspace>/jobs/<job id>/``)::

    events.jsonl        the record: one JSON event per line, appended with one write() each, never rewritten
    events.bak.jsonl    its mirror, appended right after it: either one, damaged, is restored from the other
    snapshot.json       the strategy's state at event ``seq`` (without its history: the log has that),
                        every SNAPSHOT_EVENTS events or SNAPSHOT_S seconds and at every status change
    snapshot.prev.json  the one before it
    summary.json        status, counts, best values, hypervolume and running trials at event ``seq``, with
                        the log's byte offset there: a reader applies the few events after it
    front.json          the Pareto front's trial records and the hypervolume (replaced when the front changes)
    hypervolume.jsonl   ``[finished, hypervolume, trial id]`` per finished trial (appended)

Events (``{"seq": n, "t": unix time, "e": kind, ...}``, ``seq`` counting from 0 without gaps):
``log`` (the first line: format, job id and the job record itself, so a damaged job.json can be
restored), ``job`` (set top-level fields: status, message, attempts, coordinator, mlflow, times),
``ask`` (a trial's whole initial record), ``epoch`` (one history row + where it runs), ``tell``
(the fields a finished trial sets, and the hypervolume after it), ``preempt`` (an unfinished trial,
re-queued), ``reason`` (a failure's text arriving late), ``rung`` (a running trial ranked at a rung
of the job's scheduler: its normalised objective vector and whether it goes on — the decision
recorded before Tune acts on it, so a resume ranks later trials against the same vectors),
``repeats`` (a front trial's re-evaluation over extra seeds: mean, sd, seeds), ``base`` (a format-1
``state.json``, imported whole when an old job is resumed).

Why a log of JSON lines and not SQLite (which the workspace has for MLflow): readers are other
processes (the API server, ``promptsearch jobs``, the dashboard) that must never block or be
blocked by the coordinator — an append-only file needs no lock, and SQLite's WAL needs a shared-memory
file that network file systems (a workspace shared by a Ray cluster) and read-only mounts do not
give; a line is the unit of a write, so a torn write has one obvious meaning (an incomplete last
line); the record stays greppable (``jq``) and diffable; and one ``write()`` per event is as cheap
as persistence gets. The cost of a log — rebuilding state means reading it — is bounded by the
summary (readers) and by the snapshots (the strategy: only events after one are replayed).

Crash safety (kill -9 anywhere): the log is written before anything is derived from it, so the
derived files can only lag, and whoever opens the job to write (a resume, a cancel, ``repair``)
rebuilds them from the log. A trial is finished once its ``tell`` line is complete: a coordinator
killed before that leaves it ``running`` in the log, and the resume records it ``preempted`` and
re-queues it — nothing finished is lost and nothing is run twice. A torn last line (a write cut
short: no newline) is dropped by readers and cut off (kept aside in ``events.jsonl.torn``) by the
next writer, never an error. Anything else unreadable in the log or ``job.json`` makes the job
*corrupt* (:class:`CorruptJob`: the file and the reason); :func:`repair` restores it from the
mirror and the log's first line. Events are not ``fsync``-ed: they survive the process, not a
power cut (the OS writes them out within seconds).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..files import atomic_write
from ..yamlio import JobError
from .records import JobState, JobStatus, TrialRecord, effective_metrics, front_status

log = logging.getLogger("promptsearch.search")

FORMAT = 2  # 1: state.json rewritten whole after every event
LOG, MIRROR = "events.jsonl", "events.bak.jsonl"
SNAPSHOT, SNAPSHOT_PREV = "snapshot.json", "snapshot.prev.json"
SUMMARY, FRONT, CURVE = "summary.json", "front.json", "hypervolume.jsonl"
LEGACY = "state.json"  # format 1

SNAPSHOT_EVENTS = 1000  # events between strategy snapshots: a resume replays at most this many
SNAPSHOT_S = 60.0  # ... or this long (a slow strategy, e.g. TPE late in a job, replays <= a minute of asks)
SUMMARY_EVENTS = 200  # events between summary writes: a reader applies at most this many
SUMMARY_S = 1.0  # ... or this long

STATUSES = frozenset(typing.get_args(JobStatus))
JOB_FIELDS = frozenset({"status", "message", "created_at", "started_at", "finished_at", "attempts", "coordinator",
                        "mlflow", "repeats"})  # repeats: the front re-evaluation's plan and outcome
TRIAL_FIELDS = frozenset(TrialRecord.model_fields) - {"trial_id", "index", "candidate"}
# A record's defaults (TrialRecord's, in its field order): an ask event leaves out the fields that
# hold them, and the replay puts them back (fresh containers for each record).
_KEEP = ("trial_id", "index", "candidate", "started_at")  # required, or a default made at the time


def _maker(field: Any):
    if field.default_factory in (dict, list):
        return field.default_factory
    return (lambda d=field.default: d) if field.default_factory is None and not field.is_required() else (lambda: None)


_MAKERS = {k: _maker(f) for k, f in TrialRecord.model_fields.items()}


def compact_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A new trial's record without the fields that hold their default (what an ask event stores)."""
    return {k: v for k, v in record.items() if k in _KEEP or k not in _MAKERS or v != _MAKERS[k]()}


def full_record(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The record an ask event describes, every field present (``job_trials``'s shape)."""
    return {**{k: make() for k, make in _MAKERS.items()}, **fields}


NODE_FIELDS = ("node_id", "node_ip", "pid", "cpu_time_s")


class CorruptJob(JobError):
    """A job whose files cannot be read: ``file`` (relative to the job's folder) and ``reason``;
    ``hint`` says what to do (usually ``promptsearch repair JOB``)."""

    def __init__(self, job_id: str, file: str, reason: str, hint: str | None = None):
        self.job_id, self.file, self.reason = job_id, file, reason
        self.hint = hint or f"`promptsearch repair {job_id}` restores what it can and says what was lost"
        super().__init__(f"job {job_id} is corrupt: {file}: {reason}; {self.hint}")


class EventError(ValueError):
    """One event that does not fit the state it is applied to (a bug, or a damaged log)."""


# --- the state an event log describes -------------------------------------------------------------
FINISHED = ("completed", "failed", "stopped")  # a trial's ends that count toward the job's trials


def _usable(record: Mapping[str, Any], objectives: Sequence[tuple[str, bool]], front_stopped: bool = False) -> bool:
    if not front_status(record, front_stopped):
        return False
    metrics = effective_metrics(record)
    for name, _ in objectives:
        v = metrics.get(name)
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
    return True


class Replay:
    """A job's state rebuilt from its events — the one code path the coordinator (live, and when it
    resumes) and every reader use, so what a reader sees is what the coordinator had.

    ``keep_finished=False`` keeps only running trials (a coordinator needs no finished record:
    counts, best values and the front are kept as they arrive); ``front`` is offered each completed
    trial (a resume rebuilding its :class:`~.front.Front`); ``history`` collects the strategy's
    asks and tells ``(seq, "ask", genome, key)`` / ``(seq, "tell", key, result)`` for its restore.
    Pure Python on plain dicts: a reader imports no numpy for it.
    """

    def __init__(self, static: Mapping[str, Any], keep_finished: bool = True, front: Any = None,
                 history: bool = False, curve: bool = True):
        self.objectives = [(o["name"], o["direction"] == "max") for o in static["objectives"]]
        self.front_stopped = bool(static.get("front_stopped"))  # the job's scheduler.front_includes_stopped
        self.keep_finished, self.front = keep_finished, front
        self.history: list[tuple] | None = [] if history else None
        self.curve: list[list[Any]] | None = [] if curve else None  # [finished, hypervolume, trial id]
        self.job: dict[str, Any] = {"job_id": None, "status": "queued", "message": None, "created_at": None,
                                    "started_at": None, "finished_at": None, "updated_at": None, "attempts": 0,
                                    "coordinator": None, "mlflow": {}}
        self.trials: dict[str, dict[str, Any]] = {}  # start order
        self.requeue: list[dict[str, Any]] = []  # {"candidate", "from", "deaths"}
        self.deaths: dict[str, int] = {}  # running trial -> earlier runs of its candidate whose worker died
        self.next_index = 1
        self.counts = {"completed": 0, "failed": 0, "stopped": 0, "preempted": 0, "running": 0}  # re-evaluations apart
        self.image_passes = [0, 0]  # [training images seen, what every finished trial at full budget would have seen]
        self.rungs: dict[int, dict[str, list[float]]] = {}  # rung epoch -> trial -> its normalised vector there
        self.stops: dict[str, int] = {}  # trial -> the rung the scheduler stopped it at (until it is told)
        self.finals: dict[str, dict[str, Any]] = {}  # completed trial ranked at a rung -> its final metrics
        self.repeat_trials: dict[tuple[str, int], str] = {}  # (original, seed) -> re-evaluation trial's status
        self.repeat_results: dict[str, list[dict[str, Any]]] = {}  # original -> completed re-evaluations' metrics
        self.repeat_deaths: dict[tuple[str, int], int] = {}  # (original, seed) -> runs whose worker died
        self.best: dict[str, float] = {}
        self.hypervolume = 0.0
        self.last_failure: list[Any] | None = None  # [trial id, reason]
        self.front_seq: int | None = None  # the last tell that changed the Pareto front (front.json's seq)
        self.record: dict[str, Any] | None = None  # job.json as the log's first line holds it
        self.seq = -1

    @property
    def finished(self) -> int:
        return self.counts["completed"] + self.counts["failed"] + self.counts["stopped"]

    @property
    def repeats_running(self) -> int:
        return sum(1 for v in self.repeat_trials.values() if v == "running")

    def running(self) -> list[dict[str, Any]]:
        return [t for t in self.trials.values() if t["status"] == "running"]

    def apply(self, ev: Mapping[str, Any]) -> None:
        seq = ev.get("seq")
        if seq != self.seq + 1:
            raise EventError(f"event seq {seq!r} follows {self.seq}: an event is missing or repeated")
        handler = _HANDLERS.get(ev.get("e"))  # type: ignore[arg-type]
        if handler is None:
            raise EventError(f"unknown event kind {ev.get('e')!r}")
        try:
            handler(self, ev)
        except EventError:
            raise
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise EventError(f"{ev.get('e')} event is malformed ({type(e).__name__}: {e})") from None
        self.seq = seq
        self.job["updated_at"] = ev.get("t", self.job["updated_at"])

    # handlers -----------------------------------------------------------------------------------
    def _log(self, ev: Mapping[str, Any]) -> None:
        if self.seq != -1:
            raise EventError("a second log header")
        if not isinstance(ev["format"], int) or ev["format"] > FORMAT:
            raise EventError(f"written in format {ev['format']!r} by a newer promptsearch (this one reads {FORMAT})")
        self.job["job_id"] = ev["job_id"]
        self.record = ev.get("job")
        self.job["created_at"] = (self.record or {}).get("created_at", ev["t"])

    def _base(self, ev: Mapping[str, Any]) -> None:
        """A format-1 ``state.json`` (already validated as a :class:`JobState`), imported whole."""
        st = ev["state"]
        for k in JOB_FIELDS:
            if k in st:
                self.job[k] = st[k]
        self.next_index = int(st.get("next_index", 1))
        self.requeue = [dict(r) for r in st.get("requeue", [])]
        seq = ev["seq"]
        for t in st.get("trials", []):
            t = dict(t)
            if self.history is not None and not t.get("requeued_from"):
                self.history.append((seq, "ask", tuple(t["candidate"]["genome"]), t["candidate"]["key"]))
            self.trials[t["trial_id"]] = t
            self.counts[t["status"]] += 1
        ended = sorted((t for t in self.trials.values() if t["status"] in ("completed", "failed")),
                       key=lambda t: t.get("finished_at") or 0)
        for t in ended:
            self._finished(seq, t)
        curve = st.get("hypervolume", [])
        if self.curve is not None:  # format 1 kept (finished, hv); trial ids follow the finishing order
            self.curve = [[int(n), float(h), ended[k]["trial_id"] if k < len(ended) else None]
                          for k, (n, h) in enumerate(curve)]
        self.hypervolume = float(curve[-1][1]) if curve else 0.0
        if any(_usable(t, self.objectives) for t in ended):
            self.front_seq = seq
        if not self.keep_finished:
            self.trials = {k: t for k, t in self.trials.items() if t["status"] == "running"}

    def _job(self, ev: Mapping[str, Any]) -> None:
        fields = ev["set"]
        for k, v in fields.items():  # all checked before any is set
            if k not in JOB_FIELDS:
                raise EventError(f"job event sets unknown field {k!r}")
            if k == "status" and v not in STATUSES:
                raise EventError(f"unknown job status {v!r} (known: {', '.join(sorted(STATUSES))})")
        self.job.update(fields)

    def _ask(self, ev: Mapping[str, Any]) -> None:
        t = full_record(ev["trial"])
        tid = t["trial_id"]
        if tid in self.trials or t.get("status") != "running" or not isinstance(t.get("index"), int):
            raise EventError(f"ask of trial {tid!r}: repeated, or not a new running trial")
        genome, key = t["candidate"]["genome"], t["candidate"]["key"]
        rf = t.get("requeued_from")
        if rf:
            for i, item in enumerate(self.requeue):
                if item["from"] == rf:
                    self.deaths[tid] = int(self.requeue.pop(i).get("deaths", 0))
                    break
        elif t.get("repeat_of"):  # a re-evaluation: the strategy never asked it
            self.repeat_trials[(t["repeat_of"], int(t["seed"]))] = "running"
            self.deaths[tid] = self.repeat_deaths.get((t["repeat_of"], int(t["seed"])), 0)
        elif self.history is not None:
            self.history.append((ev["seq"], "ask", tuple(genome), key))
        t.setdefault("history", [])
        self.trials[tid] = t
        self.counts["running"] += 1
        self.next_index = max(self.next_index, t["index"] + 1)

    def _live(self, ev: Mapping[str, Any]) -> dict[str, Any]:
        t = self.trials.get(ev["id"])
        if t is None or t["status"] != "running":
            raise EventError(f"{ev['e']} event for trial {ev['id']!r}, which is not running")
        return t

    def _epoch(self, ev: Mapping[str, Any]) -> None:
        t = self._live(ev)
        t["history"].append(dict(ev["row"]))
        t.update(ev.get("node") or {})

    def _tell(self, ev: Mapping[str, Any]) -> None:
        t = self._live(ev)
        fields = ev["set"]
        bad = set(fields) - TRIAL_FIELDS
        if bad or fields.get("status") not in FINISHED:
            raise EventError(f"tell of {ev['id']}: status {fields.get('status')!r}, fields {sorted(bad)}")
        t.update(fields)
        self.counts["running"] -= 1
        self.deaths.pop(t["trial_id"], None)
        self.stops.pop(t["trial_id"], None)
        if t.get("repeat_of"):  # a re-evaluation: its original's, not a trial of the search
            self.repeat_trials[(t["repeat_of"], int(t["seed"]))] = t["status"]
            if t["status"] == "completed":
                self.repeat_results.setdefault(t["repeat_of"], []).append(
                    {"trial_id": t["trial_id"], "seed": t["seed"], "metrics": t["metrics"]})
            if not self.keep_finished:
                del self.trials[t["trial_id"]]
            return
        self.counts[t["status"]] += 1
        if t["status"] == "completed" and any(t["trial_id"] in r for r in self.rungs.values()):
            self.finals[t["trial_id"]] = dict(t.get("metrics") or {})  # what its rung values foretold
        if "passes" in ev:
            self.image_passes = [self.image_passes[0] + int(ev["passes"][0]), self.image_passes[1] + int(ev["passes"][1])]
        n, hv = ev["hv"]
        self.hypervolume = float(hv)
        if ev.get("front"):
            self.front_seq = ev["seq"]
        if self.curve is not None:
            self.curve.append([int(n), float(hv), t["trial_id"]])
        self._finished(ev["seq"], t)
        if not self.keep_finished:
            del self.trials[t["trial_id"]]

    def _finished(self, seq: int, t: dict[str, Any]) -> None:
        if self.history is not None:
            self.history.append((seq, "tell", t["candidate"]["key"], {"status": t["status"], "metrics": t["metrics"]}))
        if t["status"] == "failed":
            self.last_failure = [t["trial_id"], t.get("reason")]
        elif _usable(t, self.objectives, self.front_stopped):
            for name, maximise in self.objectives:
                v = t["metrics"][name]
                old = self.best.get(name)
                if old is None or (v > old if maximise else v < old):
                    self.best[name] = v
            if self.front is not None:
                self.front.offer(t)

    def _preempt(self, ev: Mapping[str, Any]) -> None:
        t = self._live(ev)
        t.update(ev.get("node") or {})
        t["status"], t["reason"], t["finished_at"] = "preempted", ev["reason"], ev["t"]
        self.counts["running"] -= 1
        self.deaths.pop(t["trial_id"], None)
        self.stops.pop(t["trial_id"], None)
        for recorded in self.rungs.values():  # an unfinished trial's rung vectors go: its re-run ranks afresh
            recorded.pop(t["trial_id"], None)
        if t.get("repeat_of"):  # a re-evaluation is asked again from the plan, not re-queued
            self.repeat_trials.pop((t["repeat_of"], int(t["seed"])), None)
            self.repeat_deaths[(t["repeat_of"], int(t["seed"]))] = int(ev.get("deaths", 0))
            t["status"] = "preempted"
            if not self.keep_finished:
                del self.trials[t["trial_id"]]
            return
        self.counts["preempted"] += 1
        if ev.get("requeue", True):
            self.requeue.append({"candidate": t["candidate"], "from": t["trial_id"], "deaths": int(ev.get("deaths", 0))})
        if not self.keep_finished:
            del self.trials[t["trial_id"]]

    def _rung(self, ev: Mapping[str, Any]) -> None:
        """A running trial ranked at a rung: its normalised vector there, and whether it goes on."""
        t = self._live(ev)
        rung = int(ev["rung"])
        self.rungs.setdefault(rung, {})[t["trial_id"]] = [float(x) for x in ev["v"]]
        if not ev["go"]:
            self.stops[t["trial_id"]] = rung
            if ev.get("by") is not None:  # ranked only on what the rung foretold (informative_rho)
                t["ranked_by"] = list(ev["by"])

    def _repeats(self, ev: Mapping[str, Any]) -> None:
        """A front trial's re-evaluation summary (mean, sd, seeds); ``front``/``hv``: the front
        recomputed on the means was written after it."""
        t = self.trials.get(ev["id"]) if ev.get("id") else None  # no id: the front recomputed on the means
        if t is not None:
            t["repeats"] = dict(ev["set"])
        if ev.get("front"):
            self.front_seq = ev["seq"]
        if "hv" in ev:
            self.hypervolume = float(ev["hv"])

    def _reason(self, ev: Mapping[str, Any]) -> None:
        t = self.trials.get(ev["id"])
        if t is not None:
            t["reason"] = ev["reason"]
        if self.last_failure and self.last_failure[0] == ev["id"]:
            self.last_failure[1] = ev["reason"]

    # the summary: this state without finished trials, history or curve --------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "job": self.job, "running": self.running(), "requeue": self.requeue,
                "deaths": self.deaths, "next_index": self.next_index, "counts": self.counts, "best": self.best,
                "hypervolume": self.hypervolume, "last_failure": self.last_failure, "front_seq": self.front_seq,
                "image_passes": self.image_passes}

    @classmethod
    def from_state(cls, d: Mapping[str, Any], static: Mapping[str, Any]) -> Replay:
        r = cls(static, keep_finished=False, curve=False)
        if not set(d["job"]) <= JOB_FIELDS | {"job_id", "updated_at"} or d["job"].get("status") not in STATUSES:
            raise EventError(f"summary has an unknown status {d['job'].get('status')!r} or field")
        r.seq, r.job = int(d["seq"]), dict(d["job"])
        r.trials = {t["trial_id"]: dict(t) for t in d["running"]}
        r.requeue, r.deaths = list(d["requeue"]), dict(d["deaths"])
        r.next_index, r.counts, r.best = int(d["next_index"]), {"stopped": 0, **d["counts"]}, dict(d["best"])
        r.hypervolume, r.last_failure, r.front_seq = float(d["hypervolume"]), d["last_failure"], d["front_seq"]
        r.image_passes = [int(x) for x in d.get("image_passes", (0, 0))]
        if set(r.counts) != {"completed", "failed", "stopped", "preempted", "running"} \
                or r.counts["running"] != len(r.trials):
            raise EventError("summary counts do not match its running trials")
        return r


_HANDLERS = {"log": Replay._log, "base": Replay._base, "job": Replay._job, "ask": Replay._ask, "epoch": Replay._epoch,
             "tell": Replay._tell, "preempt": Replay._preempt, "reason": Replay._reason, "rung": Replay._rung,
             "repeats": Replay._repeats}


# --- reading the log ----------------------------------------------------------------------------------
class LogError(ValueError):
    def __init__(self, line: int | None, reason: str):
        self.line, self.reason = line, reason
        super().__init__(f"line {line}: {reason}" if line else reason)


def parse_events(data: bytes, first_line: int = 1) -> tuple[list[dict[str, Any]], int]:
    """The events in ``data`` and the length of its complete lines; bytes after the last newline
    are a torn write (dropped). Raises :class:`LogError` (with the line) for a complete line
    that is not an event."""
    end = data.rfind(b"\n") + 1
    events = []
    for i, line in enumerate(data[:end].split(b"\n")[:-1]):
        try:
            ev = json.loads(line)
        except ValueError:
            raise LogError(first_line + i, f"not a JSON event ({line[:60]!r})") from None
        if not isinstance(ev, dict) or not isinstance(ev.get("seq"), int) or not isinstance(ev.get("e"), str):
            raise LogError(first_line + i, f"not an event ({line[:60]!r})")
        events.append(ev)
    return events, end


class JobStore:
    """One job's files: what readers call (any process, no lock) and the paths the writer uses."""

    def __init__(self, folder: str | Path, job_id: str):
        self.dir = Path(folder)
        self.job_id = job_id

    def path(self, name: str) -> Path:
        return self.dir / name

    @property
    def legacy(self) -> bool:
        """A format-1 job (``state.json``), as earlier releases wrote it."""
        return not self.path(LOG).exists() and not self.path(MIRROR).exists() and self.path(LEGACY).exists()

    def corrupt(self, file: str, reason: str) -> CorruptJob:
        hint = None
        if file in (LOG, MIRROR):
            other = MIRROR if file == LOG else LOG
            try:
                parse_events(self.path(other).read_bytes())
                hint = f"{other} is intact: `promptsearch repair {self.job_id}` restores {file} from it, nothing lost"
            except (OSError, LogError):
                hint = (f"{other} is damaged too: `promptsearch repair {self.job_id}` keeps every event either copy "
                        "still has and says what was lost")
        elif file == LEGACY:
            hint = (f"an old-format job keeps no second copy of {LEGACY}: restore the file from a backup of the "
                    "workspace, or submit the job again")
        return CorruptJob(self.job_id, file, reason, hint)

    # --- job.json ---------------------------------------------------------------------------------------
    def read_record(self) -> dict[str, Any]:
        """``job.json``: the submitted job (raises :class:`CorruptJob` when unreadable)."""
        try:
            record = json.loads(self.path("job.json").read_bytes())
        except FileNotFoundError:
            raise self.corrupt("job.json", "missing") from None
        except (ValueError, OSError) as e:
            raise self.corrupt("job.json", f"not JSON ({type(e).__name__})") from None
        if not isinstance(record, dict) or not {"job_id", "spec", "space", "space_name", "space_hash"} <= set(record):
            raise self.corrupt("job.json", "not a job record (job_id, spec, space, space_name, space_hash)")
        return record

    def static(self, record: Mapping[str, Any] | None = None) -> dict[str, Any]:
        try:
            return static_info(record or self.read_record())
        except CorruptJob:
            raise
        except Exception as e:  # noqa: BLE001 - a record that does not validate
            raise self.corrupt("job.json", f"not a valid job ({type(e).__name__}: {str(e)[:200]})") from None

    # --- the legacy file ----------------------------------------------------------------------------
    def read_legacy(self) -> JobState:
        path = self.path(LEGACY)
        for attempt in range(3):  # replaced atomically; a retry covers a file system without atomic rename
            try:
                return JobState.model_validate(json.loads(path.read_bytes()))
            except FileNotFoundError:
                raise self.corrupt(LEGACY, "missing") from None
            except ValueError as e:
                if attempt == 2:
                    raise self.corrupt(LEGACY, f"not a valid job state ({type(e).__name__}: {str(e)[:200]})") from None
                time.sleep(0.05)
        raise AssertionError("unreachable")

    def _legacy_replay(self, state: JobState, static: Mapping[str, Any], keep_finished: bool, history: bool = False,
                       front: Any = None) -> Replay:
        r = Replay(static, keep_finished=keep_finished, front=front, history=history)
        r.apply({"seq": 0, "t": state.created_at, "e": "log", "format": FORMAT, "job_id": state.job_id})
        r.apply({"seq": 1, "t": state.updated_at, "e": "base", "state": _base_state(state)})
        r.job["updated_at"] = state.updated_at
        return r

    # --- reading ---------------------------------------------------------------------------------------
    def _read_log(self, name: str = LOG) -> bytes:
        mirror = self._size(MIRROR) if name == LOG else 0  # first: both only grow, the log ahead
        try:
            data = self.path(name).read_bytes()
        except FileNotFoundError:
            raise self.corrupt(name, "missing") from None
        if len(data) < mirror:
            raise self.corrupt(LOG, f"{len(data)} bytes, shorter than its mirror's {mirror} (truncated?)")
        return data

    def _size(self, name: str) -> int:
        try:
            return self.path(name).stat().st_size
        except FileNotFoundError:
            return 0

    def _header(self) -> dict[str, Any]:
        """The log's first line (format, job id): a cheap check that the file is this job's log."""
        try:
            with open(self.path(LOG), "rb") as f:
                line = f.readline(1 << 22)
        except FileNotFoundError:
            raise self.corrupt(LOG, "missing") from None
        try:
            ev = json.loads(line)
            ok = isinstance(ev, dict) and ev.get("e") == "log" and ev.get("seq") == 0
        except ValueError:
            ok = False
        if not ok or ev.get("job_id") != self.job_id:
            raise self.corrupt(LOG, "line 1 is not this job's log header" if line else "empty")
        return ev

    def replay(self, static: Mapping[str, Any], keep_finished: bool = True, **kw: Any) -> tuple[Replay, int]:
        """The whole log replayed (torn tail dropped): (state, byte length of its complete lines)."""
        data = self._read_log(LOG)
        try:
            events, end = parse_events(data)
        except LogError as e:
            raise self.corrupt(LOG, str(e)) from None
        r = Replay(static, keep_finished=keep_finished, **kw)
        for i, ev in enumerate(events):
            try:
                r.apply(ev)
            except EventError as e:
                raise self.corrupt(LOG, f"line {i + 1}: {e}") from None
        if r.seq < 0 or r.job["job_id"] != self.job_id:
            raise self.corrupt(LOG, "empty" if r.seq < 0 else f"the log of job {r.job['job_id']!r}, not this one")
        return r, end

    def read_view(self) -> tuple[Replay, dict[str, Any]]:
        """(state without finished trials, static job fields) — from ``summary.json`` and the log
        events after it: O(events since the summary), not O(trials). Raises :class:`CorruptJob`."""
        if self.legacy:
            static = self.static()
            return self._legacy_replay(self.read_legacy(), static, keep_finished=False), static
        summary = None
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError, EventError):
            s = json.loads(self.path(SUMMARY).read_bytes())
            if s.get("format") == FORMAT and s.get("job_id") == self.job_id:
                summary = (Replay.from_state(s["state"], s["static"]), s["static"], int(s["offset"]))
        if summary is None:  # missing or damaged: it is derived, the log has everything
            static = self.static()
            return self.replay(static, keep_finished=False, curve=False)[0], static
        view, static, offset = summary
        self.read_record()  # job.json is there and is a job (a resume, an export need it)
        self._header()
        mirror = self._size(MIRROR)  # first: both only grow, the log ahead of its mirror
        try:
            with open(self.path(LOG), "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < offset:
                    raise self.corrupt(LOG, f"{size} bytes, shorter than the {offset} its summary counted (truncated?)")
                if size < mirror:
                    raise self.corrupt(LOG, f"{size} bytes, shorter than its mirror's {mirror} (truncated?)")
                f.seek(max(offset - 1, 0))
                data = f.read()
        except FileNotFoundError:
            raise self.corrupt(LOG, "missing") from None
        if offset and data[:1] != b"\n":
            raise self.corrupt(LOG, f"byte {offset} is not where an event starts (overwritten?)")
        try:
            events, _ = parse_events(data[1:] if offset else data)
            for ev in events:
                view.apply(ev)
        except (LogError, EventError) as e:
            raise self.corrupt(LOG, f"after event {view.seq}: {e}") from None
        return view, static

    def read_trials(self) -> list[dict[str, Any]]:
        """Every trial record, in start order (the whole log: O(trials))."""
        return list(self.read_full().trials.values())

    def read_full(self) -> Replay:
        static = self.static()
        if self.legacy:
            return self._legacy_replay(self.read_legacy(), static, keep_finished=True)
        return self.replay(static)[0]

    def read_front(self, seq: int) -> list[dict[str, Any]] | None:
        """The front's records from ``front.json`` if it is the one the tell at ``seq`` made
        (:attr:`Replay.front_seq`), else None."""
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            f = json.loads(self.path(FRONT).read_bytes())
            if f["job_id"] == self.job_id and f["seq"] == seq:
                return list(f["trials"])
        return None

    def read_curve(self, finished: int) -> list[list[Any]] | None:
        """``[finished, hypervolume, trial id]`` per finished trial, if the file has all ``finished``."""
        with contextlib.suppress(OSError, ValueError):
            data = self.path(CURVE).read_bytes()
            end = data.rfind(b"\n") + 1
            points = json.loads(b"[" + data[:end].rstrip(b"\n").replace(b"\n", b",") + b"]") if end else []
            if len(points) == finished:
                return points
        return None

    def snapshots(self) -> Iterator[dict[str, Any]]:
        """The strategy snapshots that read back, newest first."""
        for name in (SNAPSHOT, SNAPSHOT_PREV):
            try:
                s = json.loads(self.path(name).read_bytes())
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as e:
                log.warning("job %s: %s unreadable (%s): skipped", self.job_id, name, e)
                continue
            if isinstance(s, dict) and s.get("job_id") == self.job_id and isinstance(s.get("seq"), int) \
                    and isinstance(s.get("strategy"), dict):
                yield s
            else:
                log.warning("job %s: %s is not a snapshot of this job: skipped", self.job_id, name)


def _base_state(state: JobState) -> dict[str, Any]:
    d = state.model_dump(mode="json")
    d.pop("strategy_state", None)
    return d


def static_info(record: Mapping[str, Any]) -> dict[str, Any]:
    """What never changes in a job's summary (from job.json): readers of ``summary.json`` need no
    job.json, no pydantic validation and no objectives module."""
    from ..jobs import JobSpec

    spec = JobSpec.model_validate(record["spec"])
    return {"job_id": record["job_id"], "name": spec.name, "strategy": spec.strategy, "space": record["space_name"],
            "space_hash": record["space_hash"], "dataset": spec.dataset, "backbone": spec.backbone.name,
            "requested": spec.trials, "concurrency": spec.concurrency, "failure_limit": spec.failure_limit,
            "epochs": spec.budget.epochs, "objectives": [o.model_dump(mode="json") for o in spec.objective_list],
            "scheduler": spec.scheduler.model_dump(mode="json") if spec.scheduler else None,
            "front_stopped": spec.front_stopped,
            "front_repeats": spec.front_repeats}


# --- writing --------------------------------------------------------------------------------------------
def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class JobWriter:
    """The one writer of a job (whoever holds its lock: the coordinator, a cancel, a repair):
    opens the log (cutting off a torn tail, healing the mirror, importing a format-1 job),
    appends events and keeps the derived files current.

    ``bytes_written`` counts every byte it wrote (the scale benchmark reports it per event)."""

    def __init__(self, store: JobStore, static: Mapping[str, Any]):
        self.store, self.static = store, dict(static)
        self.job_id = store.job_id
        self.bytes_written = 0
        self._fds: list[int] = []
        self._curve_fd: int | None = None
        self.broken: OSError | None = None  # set by a failed write: nothing more is written
        self._front_json: dict[str, str] = {}  # front member -> its record, encoded
        self.offset = 0
        self.view: Replay | None = None
        self._summary_seq, self._summary_at = -1, 0.0
        self._snapshot_seq, self._snapshot_at = -1, time.monotonic()

    # --- creating and opening -------------------------------------------------------------------
    @classmethod
    def create(cls, store: JobStore, record: Mapping[str, Any]) -> None:
        """A new job's log: its header (with the job record) in both copies, and its summary."""
        static = static_info(record)
        header = (_dumps({"seq": 0, "t": time.time(), "e": "log", "format": FORMAT, "job_id": store.job_id,
                          "job": record}) + "\n").encode()
        for name in (LOG, MIRROR):  # the log first: it is never behind its mirror
            atomic_write(store.path(name), header)
        w = cls(store, static)
        w.view = Replay(static, keep_finished=False, curve=False)
        w.view.apply(json.loads(header))
        w.offset = len(header)
        w.write_summary()

    def open(self, front: Any = None, history: bool = False) -> Replay:
        """Read the whole log for writing (compact: running trials only) and heal what a killed
        writer can leave: a torn last line, a mirror that lags or is damaged, stale derived files."""
        store = self.store
        if store.legacy:
            self._import_legacy()
        data = store._read_log(LOG)
        try:
            events, end = parse_events(data)
        except LogError as e:
            raise store.corrupt(LOG, str(e)) from None
        view = Replay(self.static, keep_finished=False, front=front, history=history)
        for i, ev in enumerate(events):
            try:
                view.apply(ev)
            except EventError as e:
                raise store.corrupt(LOG, f"line {i + 1}: {e}") from None
        if view.seq < 0 or view.job["job_id"] != self.job_id:
            raise store.corrupt(LOG, "no log header for this job")
        if end < len(data):
            self._cut_torn(LOG, data, end)
        self._heal_mirror(data[:end])
        self.view, self.offset = view, end
        self._fds = [os.open(store.path(name), os.O_WRONLY | os.O_APPEND) for name in (LOG, MIRROR)]
        if front is not None:
            front.refresh()
        self._rewrite_derived(front)
        self._curve_fd = os.open(store.path(CURVE), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        view.front = None  # the caller keeps the front from here on
        return view

    def _cut_torn(self, name: str, data: bytes, end: int) -> None:
        torn = data[end:]
        log.warning("job %s: %s ended in a torn line (%d bytes, a write cut short): dropped, kept in %s.torn",
                    self.job_id, name, len(torn), name)
        with open(self.store.path(f"{name}.torn"), "ab") as f:
            f.write(torn + b"\n")
        os.truncate(self.store.path(name), end)

    def _heal_mirror(self, good: bytes) -> None:
        path = self.store.path(MIRROR)
        try:
            mirror = path.read_bytes()
        except FileNotFoundError:
            mirror = b""
        mend = mirror.rfind(b"\n") + 1
        if mirror == good:
            return
        if mend <= len(good) and mirror[:mend] == good[:mend]:  # it lags (a writer killed between the copies)
            with open(path, "r+b" if path.exists() else "wb") as f:
                f.truncate(mend)
                f.seek(mend)
                f.write(good[mend:])
            return
        if mend > len(good) and mirror[:len(good)] == good:
            raise self.store.corrupt(LOG, f"{len(good)} bytes, shorter than its mirror's {mend} (truncated?)")
        try:
            parse_events(mirror)
        except LogError:  # the mirror is damaged, the log is whole: the mirror is made again from it
            log.warning("job %s: %s is damaged: rewritten from %s", self.job_id, MIRROR, LOG)
            atomic_write(path, good)
            return
        raise self.store.corrupt(LOG, f"differs from {MIRROR}, and both read as logs")

    def _import_legacy(self) -> None:
        """A format-1 job becomes a format-2 one: its state.json imported whole as the ``base``
        event and its strategy state (with history) as the first snapshot; state.json stays, as
        ``state.v1.json``."""
        store = self.store
        state = store.read_legacy()
        record = store.read_record()
        t = time.time()
        lines = [_dumps({"seq": 0, "t": state.created_at, "e": "log", "format": FORMAT, "job_id": self.job_id,
                         "job": record, "imported_at": t}),
                 _dumps({"seq": 1, "t": t, "e": "base", "state": _base_state(state)})]
        data = ("\n".join(lines) + "\n").encode()
        if state.strategy_state is not None:
            atomic_write(store.path(SNAPSHOT), _dumps({"format": FORMAT, "job_id": self.job_id, "seq": 1, "t": t,
                                                       "strategy": state.strategy_state}))
        atomic_write(store.path(LOG), data)  # from here on the job is format 2
        atomic_write(store.path(MIRROR), data)
        os.replace(store.path(LEGACY), store.path("state.v1.json"))
        log.info("job %s: format-1 state.json imported into %s", self.job_id, LOG)

    def _rewrite_derived(self, front: Any) -> None:
        view = self.view
        if view.curve is not None and self.store.read_curve(view.finished) != view.curve:
            self._atomic(CURVE, "".join(_dumps(p) + "\n" for p in view.curve))
        view.curve = None  # appended to the file from here on, not kept
        if front is not None and view.front_seq is not None and self.store.read_front(view.front_seq) is None:
            self.write_front(front)
        self.write_summary()
        self._snapshot_seq = view.seq  # the snapshot(s) on disk cover what was there

    def close(self) -> None:
        for fd in [*self._fds, self._curve_fd]:
            with contextlib.suppress(OSError, TypeError):
                os.close(fd)
        self._fds, self._curve_fd = [], None

    # --- events --------------------------------------------------------------------------------------
    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Append one event (one write to the log, one to its mirror) and apply it.

        A write that fails (a full disk) is cut back off both copies, and the writer refuses every
        later event (:attr:`broken`): the log ends at the last whole event, which a resume
        continues from. The ``OSError`` names the file."""
        if self.broken is not None:
            raise self.broken
        view = self.view
        ev = {"seq": view.seq + 1, "t": time.time(), "e": kind, **fields}
        data = (_dumps(ev) + "\n").encode()
        view.apply(ev)  # a bad event fails here, before it is written
        try:
            for fd, name in zip(self._fds, (LOG, MIRROR)):
                _write_all(fd, data)
        except OSError as e:
            for fd in self._fds:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, self.offset)
            self._break(e, name)
        self.offset += len(data)
        self.bytes_written += 2 * len(data)
        now = time.monotonic()
        if kind == "job" or view.seq - self._summary_seq >= SUMMARY_EVENTS or now - self._summary_at >= SUMMARY_S:
            self.write_summary()
        return ev

    def _break(self, e: OSError, name: str) -> None:
        self.broken = OSError(e.errno, e.strerror, str(self.store.path(name)))
        log.error("job %s: cannot write %s (%s): the job stops here", self.job_id, name, e.strerror)
        raise self.broken from e

    def snapshot_due(self) -> bool:
        return (self.view.seq - self._snapshot_seq >= SNAPSHOT_EVENTS
                or (self.view.seq > self._snapshot_seq and time.monotonic() - self._snapshot_at >= SNAPSHOT_S))

    def write_snapshot(self, strategy_state: Mapping[str, Any]) -> None:
        """The strategy's state at the last event; the previous snapshot becomes ``snapshot.prev.json``."""
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.store.path(SNAPSHOT), self.store.path(SNAPSHOT_PREV))
        self._atomic(SNAPSHOT, _dumps({"format": FORMAT, "job_id": self.job_id, "seq": self.view.seq, "t": time.time(),
                                       "strategy": strategy_state}))
        self._snapshot_seq, self._snapshot_at = self.view.seq, time.monotonic()
        self.write_summary()

    def write_summary(self) -> None:
        self._atomic(SUMMARY, _dumps({"format": FORMAT, "job_id": self.job_id, "offset": self.offset,
                                      "static": self.static, "state": self.view.state_dict()}))
        self._summary_seq, self._summary_at = self.view.seq, time.monotonic()

    def write_front(self, front: Any, fresh: bool = False) -> None:
        """``front.json``: O(front) bytes when the front changes; a member's record is encoded
        once, when it joins (a finished trial's record no longer changes — ``fresh``: it did, the
        front's re-evaluation added its seeds' mean)."""
        records = front.records()
        if fresh:
            self._front_json = {}
        cache = {r["trial_id"]: self._front_json.get(r["trial_id"]) or _dumps(r) for r in records}
        self._front_json = cache
        head = _dumps({"job_id": self.job_id, "seq": self.view.front_seq, "finished": self.view.finished,
                       "hypervolume": front.hypervolume})
        self._atomic(FRONT, head[:-1] + ',"trials":[' + ",".join(cache[r["trial_id"]] for r in records) + "]}")

    def append_curve(self, point: Sequence[Any]) -> None:
        data = (_dumps(list(point)) + "\n").encode()
        try:
            _write_all(self._curve_fd, data)
        except OSError as e:  # a torn curve line is dropped by its readers and rebuilt by the next writer
            self._break(e, CURVE)
        self.bytes_written += len(data)

    def _atomic(self, name: str, text: str) -> None:
        if self.broken is not None:
            raise self.broken
        data = text.encode()
        try:
            atomic_write(self.store.path(name), data)
        except OSError as e:  # derived, but a full disk is full for the log too
            self._break(e, name)
        self.bytes_written += len(data)


# --- repair ---------------------------------------------------------------------------------------------
def _salvage(data: bytes) -> dict[int, tuple[bytes, dict[str, Any]]]:
    """Every line of ``data`` that parses as an event, by seq (the first of a repeated seq)."""
    out: dict[int, tuple[bytes, dict[str, Any]]] = {}
    end = data.rfind(b"\n") + 1
    for line in data[:end].split(b"\n")[:-1]:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict) and isinstance(ev.get("seq"), int) and isinstance(ev.get("e"), str):
            out.setdefault(ev["seq"], (line, ev))
    return out


def repair(store: JobStore) -> list[str]:
    """Restore a damaged job from what survives (the caller holds the job's lock): job.json from
    the log's first line, the log from its mirror (or the mirror from the log), event by event; an
    event neither copy has is lost (and said so); the derived files are rebuilt. Damaged files are
    kept beside, as ``<name>.damaged-<time>``. Returns what it did, one line each."""
    done: list[str] = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if store.legacy:
        try:
            store.read_legacy()
        except CorruptJob as e:
            raise CorruptJob(store.job_id, LEGACY, e.reason, e.hint) from None
    else:
        copies = {}
        for name in (LOG, MIRROR):
            try:
                copies[name] = store.path(name).read_bytes()
            except FileNotFoundError:
                copies[name] = b""
        found = {name: _salvage(data) for name, data in copies.items()}
        events = {s: [c[s] for c in (found[LOG], found[MIRROR]) if s in c] for s in {*found[LOG], *found[MIRROR]}}
        header = next((ev for _, ev in events.get(0, []) if ev.get("e") == "log" and ev.get("job_id") == store.job_id),
                      None)
        if header is None:
            raise CorruptJob(store.job_id, LOG, "neither copy of the log has this job's header: nothing to restore "
                             "from", "restore the job's folder from a backup of the workspace")
        last = max(events)
        lost = [s for s in range(last + 1) if s not in events]
        record = header.get("job")
        try:
            store.read_record()
        except CorruptJob as e:
            if not isinstance(record, dict):
                raise
            if store.path("job.json").exists():
                os.replace(store.path("job.json"), store.path(f"job.json.damaged-{stamp}"))
            atomic_write(store.path("job.json"), json.dumps(record, indent=2))
            done.append(f"job.json ({e.reason}) restored from the log's first line")
        static = store.static()
        # replay what survived, each seq from the copy whose line fits (the log's first); events
        # that fit in neither (after a lost one they depend on) are dropped
        r = Replay(static)
        kept: list[tuple[bytes, dict[str, Any]]] = []
        dropped = 0
        for s in sorted(events):
            for line, original in events[s]:
                ev = {**original, "seq": r.seq + 1}  # renumbered past lost events
                try:
                    r.apply(ev)
                except EventError:
                    continue
                kept.append((line, ev))
                break
            else:
                dropped += 1
        renumbered = bool(lost) or dropped > 0
        if renumbered:
            good = b"".join(_dumps(ev).encode() + b"\n" for _, ev in kept)
        else:  # every event survived in one copy or the other: the original lines, byte for byte
            good = b"".join(line + b"\n" for line, _ in kept)
        for name in (LOG, MIRROR):
            data = copies[name]
            if data == good:
                continue
            intact = data[:data.rfind(b"\n") + 1] == good
            if data and not intact:
                with open(store.path(f"{name}.damaged-{stamp}"), "wb") as f:
                    f.write(data)
            atomic_write(store.path(name), good)
            done.append(f"{name}: torn last line dropped" if intact else
                        f"{name} restored ({len(kept)} events{', none lost' if not renumbered else ''})")
        if renumbered:
            done.append(f"lost: {len(lost)} event(s) neither copy had (seq {lost[:10]}{'...' if len(lost) > 10 else ''})"
                        f" and {dropped} later event(s) that depended on them; {r.counts['running']} trial(s) are "
                        "unfinished in the repaired log: a resume records them preempted and re-runs them")
            for name in (SNAPSHOT, SNAPSHOT_PREV):  # their seq no longer matches the renumbered log
                if store.path(name).exists():
                    os.replace(store.path(name), store.path(f"{name}.damaged-{stamp}"))
            done.append("strategy snapshots set aside: a resume rebuilds the strategy from the whole log")
    # derived files: rebuilt from the (now good) log by opening it as a writer would
    static = store.static()
    from .front import Front

    front = Front(_objectives(static), include_stopped=static.get("front_stopped", False))
    for name in (SUMMARY, FRONT, CURVE):
        with contextlib.suppress(FileNotFoundError):
            store.path(name).unlink()
    w = JobWriter(store, static)
    try:
        w.open(front=front)
    finally:
        w.close()
    done.append("summary, front and hypervolume curve rebuilt from the log")
    return done


def _objectives(static: Mapping[str, Any]):
    from ..objectives import Objective

    return [Objective(**o) for o in static["objectives"]]
