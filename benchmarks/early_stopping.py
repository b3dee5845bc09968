"""Early stopping (#15): MO-ASHA against scalarized ASHA and the full budget, replayed on the
per-epoch curves recorded in the exact search-quality tables.

    python benchmarks/early_stopping.py                           # rung grid + arms -> results/early_stopping.md (2 min)
    python benchmarks/early_stopping.py --tune brain_tumor_mri --report pneumoniamnist --out benchmarks/results/early_stopping_swapped.md
    python benchmarks/early_stopping.py --report brain_tumor_mri_4c --out benchmarks/results/early_stopping_4c.md
    python benchmarks/early_stopping.py --tune brain_tumor_mri --report brain_tumor_mri_4c --out benchmarks/results/early_stopping_4c_from_brain.md
    python benchmarks/early_stopping.py --report eye_fundus --out benchmarks/results/early_stopping_eye.md
    python benchmarks/early_stopping.py --tune brain_tumor_mri --report eye_fundus --out benchmarks/results/early_stopping_eye_from_brain.md
    python benchmarks/early_stopping.py --report chest_xray --best handover --out benchmarks/results/early_stopping_chest.md   # 16 min on 1 process
    python benchmarks/early_stopping.py --tune brain_tumor_mri --report chest_xray --best handover --out benchmarks/results/early_stopping_chest_from_brain.md
    python benchmarks/early_stopping.py --rows 268                # on the tables' first 268 rows (as a partial table)
    python -m pytest tests/test_early_stopping_bench.py -q

No training happens here: every trial is a recorded row of ``benchmarks/data/search_quality_<bench>.csv``
(``benchmarks/search_quality.py`` records them: each candidate of a bench space, 2 seeds, 9 epochs,
the validation curve of every epoch), answered exactly by its ``ExactOracle`` with a seed drawn
per lookup. The rung rule is the product's own (``promptsearch.rungs.promote``), not a copy.

Protocol, per arm and replay seed (the strategy's seed and the seed draws' seed are the same):

* a trial of a candidate draws one seed's row; its vector at rung ``r`` is ``(curve[r-1].val_auc,
  curve[r-1].val_worst_class_recall, prompt_params)`` normalised with ``BENCH_OBJECTIVES`` (1 =
  best), its cost at rung ``r`` is ``r / epochs x image_passes`` (a full trial costs the row's
  ``image_passes``: training images seen);
* sequential asynchronous ASHA, one worker: each trial goes through its rungs before the next
  starts. At each rung of ``scheduler.active(epochs)`` the trial's vector is ranked against the
  vectors recorded at that rung so far (``promote``) and recorded there either way; a trial not
  promoted stops there and the strategy is told ``status: stopped`` with the rung's metrics; a
  trial that reaches the last epoch is told its final metrics;
* the job's front, and so its hypervolume, counts completed (full-budget) trials only;
* every arm spends the same axis: until its cumulative image passes would pass those of arm (a)
  at ``--trials`` (100) full trials (a trial the budget ends in is not counted), or until every
  candidate has been tried (the bench spaces are small: 216 or 472 candidates), whichever comes first;
  the hypervolume is read every 1/90 of the axis (1/9, 1/3, 2/3 and every 1/30 are on the grid).

Arms: (a) random search, full budget; (b) random + scalarized ASHA (``ranking: scalar``, equal
weights over the normalised objectives, every objective at every rung: Ray Tune's ASHA on one
weighted-sum metric, the peer baseline); (c) random + MO-ASHA (``ranking: nds``); (d) ``--best``
(default ``evolution``, the search-quality benchmark's best at 50 trials) + MO-ASHA. (b) and (c)
share the rungs and eta.
Random proposes uniformly over the bench space; a proposal the table cannot answer is skipped,
which keeps random uniform over the recorded candidates. A strategy that learns cannot be
restricted that way (its next proposals would depend on the skips), so (d) runs only on a
complete table.

Rung settings are chosen on the ``--tune`` bench from ``RUNG_GRID`` (rungs [1, 3], [1], [3];
eta 3, 2; tie-break hv, crowding; every objective at every rung, or only those the rung foretells:
``informative_rho`` 0.3, from the arm's own completed trials, as a job does): among the settings whose (c) reaches 98 % of (a)'s final
hypervolume at 1/3 of the axis (target 1, in mean), the one with the largest mean hypervolume
over the whole axis (``ranked``); the ``--report`` bench then tests the choice out of sample.
Both directions are run (the two benches as the two folds of a cross-check):
``results/early_stopping.md`` chooses on pneumoniamnist and reports brain_tumor_mri,
``results/early_stopping_swapped.md`` the other way round; both choices are also tested on the
larger brain_tumor_mri_4c bench (472 candidates, recorded after they were made):
``results/early_stopping_4c.md`` and ``results/early_stopping_4c_from_brain.md`` (chosen on the
216-candidate brain bench: the same target, so in-domain, but other candidates, another library
build and other trials); the eye fundus and chest X-ray benches, recorded later still, from both
(``results/early_stopping_{eye,chest}{,_from_brain}.md``; (d) on chest X-ray is ``handover``, the
search-quality benchmark's best at 50 trials there). A report section's heading says where a report
bench's images share a source with the tune bench's (chest X-ray and PneumoniaMNIST: Kermany's;
the two brain benches), so that it is not independent of the choice. Each bench's section also shows how
well a rung's values foretell the last epoch's (Spearman ρ per objective): the reason a rung
does or does not transfer. A partial table is replayed on its fully recorded candidates (every
seed present), and the output says how many.

Targets: (c) reaches >= 98 % of (a)'s final hypervolume at <= 1/3 of (a)'s image passes, and
has more hypervolume than (b) at every budget of the grid (one-sided Mann-Whitney U per budget:
the replays are independent runs; arms with one seed share its proposals and seed draws).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import typer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import search_quality as sq  # noqa: E402  (the exact tables, their oracle; it puts the repository on sys.path)

from promptsearch.objectives import hypervolume, normalised_values  # noqa: E402
from promptsearch.rungs import Scheduler, informative, promote  # noqa: E402
from promptsearch.space import SearchSpace  # noqa: E402
from promptsearch.strategies import make_strategy  # noqa: E402

app = typer.Typer(add_completion=False, help=__doc__.split("\n")[0])

OBJECTIVES = sq.BENCH_OBJECTIVES
TRIALS = 100  # arm (a)'s full-budget trials: the budget axis every arm shares
GRID = 90  # hypervolume read every 1/GRID of the axis: 1/9, 1/3, 2/3 and every 1/30 lie on it
MARKS = (1 / 9, 1 / 3, 2 / 3, 1.0)  # the budgets the arms table shows
TARGET_AT, TARGET_FRACTION = 1 / 3, 0.98  # (c) at 1/3 of (a)'s passes: >= 98 % of (a)'s final HV
FORETOLD_RHO = 0.3  # ``informative_rho`` of the grid's foretold-objectives settings and of arm (c')
FORETOLD = "(c')"
RUNG_GRID = [Scheduler(rungs=r, eta=e, tie_break=t, informative_rho=rho)
             for r in ([1, 3], [1], [3]) for e in (3.0, 2.0) for t in ("hv", "crowding") for rho in (None, FORETOLD_RHO)]
RUNGS_SEEN = sorted({r for s in RUNG_GRID for r in s.rungs})
TUNE, REPORT, BEST = "pneumoniamnist", "brain_tumor_mri", "evolution"  # the defaults of ``main``
OUT = sq.RESULTS / "early_stopping.md"


# --- the table ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Table:
    """The fully recorded part of one bench's table (every seed present), as the replay sees it."""

    bench: sq.Bench
    space: SearchSpace
    oracle: sq.ExactOracle  # fully recorded candidates only
    rows_used: int  # rows read (the table's first ones: it is append-only)
    recorded: int  # candidates with at least one row
    total: int  # distinct candidates of the bench space
    digest: str  # sha256 of the rows used, so a run can be matched to its data

    @property
    def complete(self) -> bool:
        return len(self.oracle.rows) == self.total

    @property
    def epochs(self) -> int:
        return self.bench.epochs

    @property
    def passes(self) -> float:
        """Image passes of one full-budget trial (the mean over the rows used: one value per bench)."""
        rows = [r for rs in self.oracle.rows.values() for r in rs]
        return sum(float(r["image_passes"]) for r in rows) / len(rows)

    def describe(self) -> str:
        state = "complete" if self.complete else "PARTIAL"
        return (f"table {state}: {self.rows_used} rows; {len(self.oracle.rows)} of {self.total} candidates have every "
                f"seed recorded ({self.recorded} have at least one); rows sha256 {self.digest[:12]}")


def table_from_rows(bench: sq.Bench, rows: list[dict[str, str]]) -> Table:
    seeds = set(bench.seeds)
    space = bench.load_space()
    by_arch = sq.candidate_rows(space, rows)
    full = [r for rs in by_arch.values() if {int(x["seed"]) for x in rs} >= seeds for r in rs]
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    return Table(bench, space, sq.ExactOracle(full), len(rows), sum(1 for rs in by_arch.values() if rs), len(by_arch),
                 digest)


def load_table(name: str, rows: int | None = None) -> Table:
    bench = sq.BENCHES[name]
    return table_from_rows(bench, sq.read_rows(bench.table)[:rows])


# --- one replay -----------------------------------------------------------------------------------
@dataclass
class Run:
    """What one arm did in one replay."""

    axis: float  # the image passes it could spend
    events: list[tuple[float, float]] = field(default_factory=list)  # (passes spent, HV) after each completion
    started: int = 0
    stopped: dict[int, int] = field(default_factory=dict)  # rung -> trials stopped there
    completed: int = 0
    failed: int = 0
    cut: int = 0  # trials the budget ended part-trained (started, neither stopped nor completed)
    spent: float = 0.0
    exhausted_at: float | None = None  # passes spent when every candidate had been tried

    def hv_at(self, passes: float) -> float:
        """The hypervolume of the trials completed within ``passes`` image passes."""
        hv = 0.0
        for spent, value in self.events:
            if spent > passes * (1 + 1e-9):
                break
            hv = value
        return hv

    def curve(self) -> np.ndarray:
        """(GRID,) the hypervolume at every 1/GRID of the axis."""
        return np.array([self.hv_at(self.axis * k / GRID) for k in range(1, GRID + 1)])


def rung_metrics(row: dict[str, str], rung: int) -> dict[str, float]:
    """A trial's objectives after ``rung`` epochs: the curve's validation values where it has them
    (``val_<name>``), else the row's (prompt parameters do not change with epochs)."""
    at = json.loads(row["curve"])[rung - 1]
    return {o.name: float(at.get(f"val_{o.name}", row[o.name])) for o in OBJECTIVES}


def rung_informativeness(table: Table, rungs: list[int]) -> list[str]:
    """How well a rung foretells the end: per objective that changes with training, the Spearman
    rank correlation between every recorded trial's value at the rung and at its last epoch (a
    rung ranks trials on these values; near 0, its stop decisions for that objective are noise)."""
    from scipy.stats import spearmanr

    rows = [r for rs in table.oracle.rows.values() for r in rs if r["status"] == "completed"]
    final = [rung_metrics(r, table.epochs) for r in rows]
    curve = json.loads(rows[0]["curve"])[0]
    names = [o.name for o in OBJECTIVES if f"val_{o.name}" in curve]  # as rung_metrics reads them
    lines = [f"Rung informativeness on `{table.bench.name}` ({len(rows)} recorded trials): Spearman ρ between a "
             "trial's value at the rung and at its last epoch.", "",
             "| rung (epoch) | " + " | ".join(f"ρ {n}" for n in names) + " |", "|---|" + "---|" * len(names)]
    for r in rungs:
        at_r = [rung_metrics(row, r) for row in rows]
        lines.append(f"| {r} | " + " | ".join(f"{spearmanr([a[n] for a in at_r], [f[n] for f in final])[0]:.2f}"
                                             for n in names) + " |")
    return lines


def _understands_stopped(strategy) -> bool:
    """Whether the strategy counts a stopped trial's rung metrics as a (low-fidelity) result."""
    probe = {"status": "stopped", "metrics": {o.name: 1.0 for o in OBJECTIVES}}
    try:
        return strategy.observation(strategy.space.sample(random.Random(0)).genome, probe).ok
    except Exception:  # noqa: BLE001 - a strategy that rejects the status does not understand it
        return False


def replay(table: Table, strategy: str, scheduler: Scheduler | None, seed: int, trials: int = TRIALS,
           options: dict[str, Any] | None = None) -> Run:
    """One arm, one replay seed: ``strategy`` (+ ``scheduler``'s rungs; ``None``: every trial runs
    its full budget) until the axis of ``trials`` full trials is spent or the candidates run out."""
    if not table.complete and strategy != "random":
        raise ValueError(f"{strategy}: a partial table can only replay random search (its skips stay uniform)")
    s = make_strategy(strategy, table.space, OBJECTIVES, seed=seed, **(options or {}))
    rng = random.Random(10_000 + seed)  # the seed draws, as search_quality.replay_one
    # a stopped trial is told "stopped" with its rung metrics (a low-fidelity result, as the search loop
    # tells it); a strategy from before that status would count it a failure, so it gets "completed"
    told_stopped = "stopped" if _understands_stopped(s) else "completed"
    full, epochs = table.passes, table.epochs
    run = Run(axis=trials * full)
    rungs = scheduler.active(epochs) if scheduler else []
    at_rung: dict[int, list[np.ndarray]] = {r: [] for r in rungs}
    foretold: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {r: ([], []) for r in rungs}  # completed trials
    done: list[dict[str, Any]] = []
    tried: set[str] = set()

    def spend(cost: float, started: bool) -> bool:
        """Charge ``cost`` passes if the axis has them; else the run ends (a trial cut by the
        budget counts as started only if it had trained)."""
        if run.spent + cost <= run.axis * (1 + 1e-9):
            run.spent += cost
            return True
        if started:
            run.cut += 1
        else:
            run.started -= 1
        return False

    while len(tried) < len(table.oracle.rows):
        cand = s.ask()
        key = sq.arch_key(cand)
        if key not in table.oracle.rows:
            continue  # not recorded (partial table, random only): skipped, so random stays uniform over the rest
        if key in tried:
            break  # the strategy repeats itself: its space is exhausted
        tried.add(key)
        row = table.oracle.row(cand, rng)
        run.started += 1
        if row["status"] != "completed":  # a recorded failure costs what it trained
            if not spend(float(row["image_passes"] or 0), started=False):
                return run
            run.failed += 1
            s.tell(cand.key, sq.as_result(row))
            continue
        trial_passes = float(row["image_passes"])
        epoch, stopped_at, mine = 0, None, {}
        for r in rungs:
            if not spend((r - epoch) / epochs * trial_passes, started=epoch > 0):
                return run
            epoch = r
            metrics = rung_metrics(row, r)
            v = normalised_values(np.array([[metrics[o.name] for o in OBJECTIVES]]), OBJECTIVES)[0]  # (m,)
            columns = informative(*foretold[r], scheduler)  # as the search loop: from the completed trials
            keep = bool(np.isfinite(v).all()) and promote(at_rung[r], v, scheduler, columns=columns)
            at_rung[r].append(v)
            mine[r] = v
            if not keep:
                stopped_at = r
                s.tell(cand.key, {"candidate": cand.architecture, "status": told_stopped, "rung": r, "metrics": metrics})
                break
        if stopped_at is not None:
            run.stopped[stopped_at] = run.stopped.get(stopped_at, 0) + 1
            continue
        if not spend((epochs - epoch) / epochs * trial_passes, started=epoch > 0):
            return run
        res = sq.as_result(row)
        s.tell(cand.key, res)
        done.append(res)
        end = rung_metrics(row, epochs)
        final = normalised_values(np.array([[end[o.name] for o in OBJECTIVES]]), OBJECTIVES)[0]  # (m,)
        for r, v in mine.items():
            foretold[r][0].append(v)
            foretold[r][1].append(final)
        run.completed += 1
        run.events.append((run.spent, hypervolume(done, OBJECTIVES)))
    run.exhausted_at = run.spent
    return run


# --- arms and jobs --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Arm:
    name: str
    strategy: str
    scheduler: Scheduler | None

    @property
    def setting(self) -> str:
        return describe(self.scheduler)


def describe(s: Scheduler | None) -> str:
    if s is None:
        return "full budget"
    tie = f" {s.tie_break}" if s.ranking == "nds" else ""
    rho = "" if s.informative_rho is None else f" ρ≥{s.informative_rho:g}"
    return f"{s.ranking} rungs {s.rungs} eta {s.eta:g}{tie}{rho}"


_TABLES: dict[tuple[str, int | None], Table] = {}


def _job(args: tuple) -> tuple[int, int, Run, float]:
    """One (arm, seed) in a worker process: ``(arm index, seed, run, CPU s)``."""
    index, bench, rows, strategy, scheduler, seed, trials = args
    if (bench, rows) not in _TABLES:
        _TABLES[(bench, rows)] = load_table(bench, rows)
    t0 = time.process_time()
    run = replay(_TABLES[(bench, rows)], strategy, None if scheduler is None else Scheduler(**scheduler), seed, trials)
    return index, seed, run, time.process_time() - t0


def run_arms(bench: str, rows: int | None, arms: list[Arm], seeds: int, trials: int, workers: int
             ) -> tuple[list[list[Run]], float]:
    """Every arm's ``seeds`` replays (in ``workers`` processes), and the CPU seconds they took."""
    jobs = [(i, bench, rows, a.strategy, None if a.scheduler is None else a.scheduler.model_dump(), seed, trials)
            for i, a in enumerate(arms) for seed in range(seeds)]
    if workers > 1:
        with sq.worker_pool(workers) as pool:  # its workers go with it on SIGTERM
            results = pool.map(_job, jobs, chunksize=4)
    else:
        results = [_job(j) for j in jobs]
    out: list[list[Run]] = [[] for _ in arms]
    for index, _, run, _ in sorted(results, key=lambda x: (x[0], x[1])):
        out[index].append(run)
    return out, sum(x[3] for x in results)


# --- statistics and the report --------------------------------------------------------------------
def curves(runs: list[Run]) -> np.ndarray:
    return np.array([r.curve() for r in runs])  # (seeds, GRID)


def at(runs: list[Run], fraction: float) -> np.ndarray:
    return np.array([r.hv_at(r.axis * fraction) for r in runs])  # (seeds,)


def ms(v: np.ndarray) -> str:
    return f"{v.mean():.4f} ± {v.std(ddof=1):.4f}" if len(v) > 1 else f"{v.mean():.4f}"


def greater_p(x: np.ndarray, y: np.ndarray) -> float:
    """One-sided Mann-Whitney U p-value of x > y (NaN when the two samples are the same values)."""
    from scipy.stats import mannwhitneyu

    if np.array_equal(np.sort(x), np.sort(y)):
        return math.nan
    return float(mannwhitneyu(x, y, alternative="greater").pvalue)


def out_of_sample(tune: str, report: str) -> str:
    """How far the report bench is from the tune bench: other candidates' trials always; other
    images only where the catalogue says their targets are not the same data (``Bench.shares_images_with``)."""
    same = tune in sq.BENCHES and report in sq.BENCHES and sq.BENCHES[report].shares_images_with(sq.BENCHES[tune])
    return f"out of sample, but not independent: its images share a source with `{tune}`'s" if same else "out of sample"


def fmt_p(p: float) -> str:
    return "— (identical)" if math.isnan(p) else f"{p:.3g}"


def frac(f: float) -> str:
    return {1 / 9: "1/9", 1 / 3: "1/3", 2 / 3: "2/3", 1.0: "1×"}.get(f, f"{f:.3f}")


def ranked(results: list[list[Run]], final_a: float) -> list[int]:
    """Grid indices best first: settings whose mean HV at 1/3 of the axis reaches 98 % of (a)'s
    final HV (target 1) before those that do not, then by the mean HV over the whole axis (the
    anytime measure: target 2 asks for every budget)."""
    return sorted(range(len(results)), key=lambda i: (at(results[i], TARGET_AT).mean() >= TARGET_FRACTION * final_a,
                                                      curves(results[i]).mean()), reverse=True)


def grid_facts(c_runs: list[list[Run]]) -> list[str]:
    """What the grid says about each knob, by (c)'s mean HV over the axis (pairs that differ in that knob only)."""
    area = {i: curves(r).mean() for i, r in enumerate(c_runs)}
    key = {i: (tuple(s.rungs), s.eta, s.tie_break, s.informative_rho) for i, s in enumerate(RUNG_GRID)}
    index = {v: i for i, v in key.items()}

    def wins(pos: int, a: Any, b: Any) -> tuple[int, int]:
        pairs = [(i, index[k[:pos] + (b,) + k[pos + 1:]]) for i, k in key.items() if k[pos] == a]
        return sum(area[i] > area[j] for i, j in pairs), len(pairs)

    lines = []
    for pos, a, b, what in ((2, "hv", "crowding", "tie-break hv beats crowding"), (1, 2.0, 3.0, "eta 2 beats eta 3"),
                            (3, FORETOLD_RHO, None,
                             f"ranking on the objectives a rung foretells (ρ ≥ {FORETOLD_RHO:g}) beats ranking on all")):
        w, n = wins(pos, a, b)
        lines.append(f"- {what} in {w} of {n} otherwise-equal pairs;")
    best = {}
    for i, k in key.items():
        best[k[0]] = max(best.get(k[0], 0.0), area[i])
    lines.append("- best mean HV over the axis by rungs: " + ", ".join(f"{list(r)} {v:.4f}" for r, v in best.items())
                 + ".")
    return lines


def arms_table(arms: list[Arm], results: list[list[Run]], full: float) -> list[str]:
    lines = ["| arm | setting | " + " | ".join(f"HV @{frac(f)}" for f in MARKS)
             + " | trials started | stopped (by rung) | completed | passes used (full trials) "
               "| all candidates tried at (full trials) |",
             "|---|---|" + "---|" * (len(MARKS) + 5)]
    for arm, runs in zip(arms, results):
        stops = sorted({r for run in runs for r in run.stopped})
        stopped = ", ".join(f"{np.mean([run.stopped.get(r, 0) for run in runs]):.1f} @{r}" for r in stops) or "0"
        ex = [run.exhausted_at / full for run in runs if run.exhausted_at is not None]
        exhausted = f"{np.mean(ex):.1f} ({len(ex)}/{len(runs)} runs)" if ex else f"never (0/{len(runs)})"
        lines.append(f"| {arm.name} | {arm.setting} | " + " | ".join(ms(at(runs, f)) for f in MARKS)
                     + f" | {np.mean([r.started for r in runs]):.1f} | {stopped} "
                       f"| {np.mean([r.completed for r in runs]):.1f} | {np.mean([r.spent for r in runs]) / full:.1f} "
                       f"| {exhausted} |")
    return lines


def target_lines(arms: list[Arm], results: list[list[Run]]) -> list[str]:
    """The two targets: (c) at 1/3 against (a)'s final HV, and (c) against (b) at every budget."""
    a, b, c = results[0], results[1], results[2]
    final_a = at(a, 1.0)
    own = at(a, TARGET_AT).mean() / final_a.mean()
    lines = [f"**Target 1: ≥ {TARGET_FRACTION:.0%} of (a)'s final HV at ≤ 1/3 of its image passes.** "
             f"(a)'s final HV {ms(final_a)}; (a) itself reaches {own:.1%} of it at 1/3"
             + (" — so on this table the target does not tell early stopping from none: the candidate set is too "
                "small for the last 2/3 of the budget to add much." if own >= TARGET_FRACTION else ".")]
    for arm, runs in zip(arms[1:], results[1:]):
        v = at(runs, TARGET_AT)
        f = v.mean() / final_a.mean()
        per_seed = int((v >= TARGET_FRACTION * final_a - 1e-12).sum())
        verdict = "PASS" if f >= TARGET_FRACTION else "MISS"
        lines.append(f"- {arm.name}: HV @1/3 {ms(v)} = **{f:.1%}** of (a)'s final: {verdict} "
                     f"(margin {100 * (f - TARGET_FRACTION):+.2f} points); {per_seed}/{len(v)} seeds reach 98 % of "
                     f"(a)'s final HV with the same seed")
    bb = curves(b)

    def against_b(runs: list[Run], name: str) -> tuple[str, np.ndarray, np.ndarray, list[float]]:
        cb = curves(runs)
        diff = cb.mean(0) - bb.mean(0)
        more, less = int((diff > 1e-12).sum()), int((diff < -1e-12).sum())
        pvals = [greater_p(cb[:, k], bb[:, k]) for k in range(GRID)]
        worst = int(np.argmin(diff))
        text = (f"{'PASS' if more == GRID else 'MISS'}: {name} > (b) in mean at {more}, equal at {GRID - more - less}, "
                f"below at {less}"
                + (f" (largest shortfall {-diff[worst]:.4f} at {(worst + 1) / GRID:.3f} of the axis"
                   f"{'' if less == 1 else f'; the last at {np.flatnonzero(diff < -1e-12)[-1] + 1:d}/{GRID}'})"
                   if less else "")
                + f"; one-sided Mann-Whitney p < 0.05 at {sum(1 for p in pvals if p < 0.05)} of {GRID}")
        return text, cb, diff, pvals

    text, cb, diff, pvals = against_b(c, "(c)")
    lines += ["", f"**Target 2: more HV than (b) at every equal budget** (the {GRID} budgets of the grid): {text}."]
    for arm, runs in zip(arms[3:], results[3:]):
        if arm.name.startswith(FORETOLD):
            lines.append(f"- {arm.name} (not the chosen setting; shown): {against_b(runs, FORETOLD)[0]}.")
    lines += ["", "| budget (of (a)'s passes) | full trials | (c) HV | (b) HV | (c) − (b) | p (c > b) |",
              "|---|---|---|---|---|---|"]
    for k in range(GRID // 30 - 1, GRID, GRID // 30):  # every 1/30
        lines.append(f"| {(k + 1) / GRID:.3f} | {TRIALS * (k + 1) / GRID:.1f} | {ms(cb[:, k])} | {ms(bb[:, k])} "
                     f"| {diff[k]:+.4f} | {fmt_p(pvals[k])} |")
    return lines


def write_curves(path: Path, blocks: list[tuple[str, list[Arm], list[list[Run]]]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["bench", "arm", "strategy", "setting", "budget_fraction", "image_passes", "hv_mean", "hv_sd", "seeds"])
        for bench, arms, results in blocks:
            for arm, runs in zip(arms, results):
                cv = curves(runs)
                for k in range(GRID):
                    w.writerow([bench, arm.name, arm.strategy, arm.setting, f"{(k + 1) / GRID:.4f}",
                                f"{runs[0].axis * (k + 1) / GRID:.0f}", f"{cv[:, k].mean():.5f}",
                                f"{cv[:, k].std(ddof=1):.5f}", len(runs)])


def plot(path: Path, blocks: list[tuple[str, list[Arm], list[list[Run]]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(blocks), figsize=(7 * len(blocks), 4.5), squeeze=False)
    x = np.arange(1, GRID + 1) / GRID
    for ax, (bench, arms, results) in zip(axes[0], blocks):
        for arm, runs in zip(arms, results):
            cv = curves(runs)
            m, se = cv.mean(0), cv.std(0, ddof=1) / math.sqrt(len(cv))
            ax.plot(x, m, label=f"{arm.name}: {arm.setting}")
            ax.fill_between(x, m - se, m + se, alpha=0.15)
        final_a = curves(results[0])[:, -1].mean()
        ax.axhline(TARGET_FRACTION * final_a, color="grey", ls="--", lw=0.8, label="98 % of (a)'s final HV")
        ax.axvline(TARGET_AT, color="grey", ls=":", lw=0.8)
        ax.set_xlabel(f"cumulative training image passes (fraction of (a)'s {TRIALS} full trials)")
        ax.set_ylabel("hypervolume of completed trials (mean ± s.e.)")
        ax.set_title(bench), ax.grid(alpha=0.3), ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bench_arms(table: Table, chosen: Scheduler, best: str) -> tuple[list[Arm], str | None]:
    """Arms (a)-(d) with the chosen rungs, and the line that says why (d) is left out (or None)."""
    scalar = Scheduler(rungs=chosen.rungs, eta=chosen.eta, ranking="scalar")
    arms = [Arm("(a) random", "random", None), Arm("(b) random + scalarized ASHA", "random", scalar),
            Arm("(c) random + MO-ASHA", "random", chosen)]
    if chosen.informative_rho is None:  # the chosen rungs ranked on what they foretell: shown, not chosen
        arms.append(Arm(f"{FORETOLD} random + MO-ASHA, foretold objectives", "random",
                        chosen.model_copy(update={"informative_rho": FORETOLD_RHO})))
    if table.complete:
        return arms + [Arm(f"(d) {best} + MO-ASHA", best, chosen)], None
    return arms, f"(d) {best} + MO-ASHA: skipped. Table partial: (d) runs once every candidate is recorded."


def _shown(path: Path) -> str:
    """A path as a rerun from the repository root would give it."""
    try:
        return str(path.resolve().relative_to(sq.REPO))
    except ValueError:
        return str(path)


@app.command()
def main(tune: str = typer.Option(TUNE, help="The bench the rung settings are chosen on."),
         report: str = typer.Option(REPORT, help="The bench the choice is reported on."),
         best: str = typer.Option(BEST, help="Arm (d)'s strategy (the search-quality benchmark's best at 50 trials)."),
         seeds: int = typer.Option(20), trials: int = typer.Option(TRIALS, help="(a)'s full trials: the budget axis."),
         rows: int | None = typer.Option(None, help="Use each table's first ROWS rows (they are append-only)."),
         workers: int = typer.Option(1, help="Processes."),
         out: Path = typer.Option(OUT)) -> None:
    """The rung grid on the tune bench, then arms (a)-(d) with the chosen setting; writes the .md, .csv and .png."""
    t0 = time.perf_counter()
    table = load_table(tune, rows)
    if not table.oracle.rows:
        raise typer.BadParameter(f"{tune}: no candidate has every seed recorded yet")
    cmd = "python benchmarks/early_stopping.py" + \
        (f" --tune {tune} --report {report}" if (tune, report) != (TUNE, REPORT) else "") + \
        (f" --best {best}" if best != BEST else "") + (f" --rows {rows}" if rows else "") + \
        (f" --seeds {seeds}" if seeds != 20 else "") + (f" --trials {trials}" if trials != TRIALS else "") + \
        f" --workers {workers}" + (f" --out {_shown(out)}" if out.resolve() != OUT.resolve() else "")
    # the grid: (a) once, (c) for every setting, (b) for every rungs x eta (it has no tie-break)
    grid = [Arm("(c)", "random", s) for s in RUNG_GRID]
    scalars = {(tuple(s.rungs), s.eta): Scheduler(rungs=s.rungs, eta=s.eta, ranking="scalar") for s in RUNG_GRID}
    arms = [Arm("(a) random", "random", None), *grid, *(Arm("(b)", "random", s) for s in scalars.values())]
    results, cpu = run_arms(tune, rows, arms, seeds, trials, workers)
    a_runs, c_runs, b_runs = results[0], results[1:1 + len(grid)], results[1 + len(grid):]
    final_a = at(a_runs, 1.0).mean()
    order = ranked(c_runs, final_a)
    pick, second = order[0], order[1]
    chosen = RUNG_GRID[pick]

    md = ["# Early stopping: MO-ASHA vs scalarized ASHA vs the full budget (replayed recorded curves)", "",
          f"    {cmd}", "", f"Protocol: see the docstring of `benchmarks/early_stopping.py` (issue #15). {seeds} replay "
          f"seeds per arm; budget axis = (a)'s image passes at {trials} full trials ({trials * table.passes:,.0f} "
          f"passes, {table.passes:,.0f} per full trial of {table.epochs} epochs); one worker (sequential ASHA). A stopped "
          f"trial is told `status: {'stopped' if _understands_stopped(make_strategy('random', table.space, OBJECTIVES)) else 'completed'}` "
          "with its rung metrics (`completed` until the strategy base class takes `stopped`; random ignores both).", "",
          f"## Rung settings (tune bench `{tune}`)", "", table.describe() + ".", "",
          *rung_informativeness(table, RUNGS_SEEN), ""]
    if not table.complete:
        md += [f"**The table is partial**: every arm samples among the {len(table.oracle.rows)} fully recorded "
               f"candidates of {table.total}: random at full budget tries {min(1.0, trials / len(table.oracle.rows)):.0%} "
               "of them within the axis, and the early-stopping arms try them all early and then have nothing left "
               "to try (their curves go flat). The figures will move as the table fills.", ""]
    md += [f"(c) = random + MO-ASHA, (b) = random + scalarized ASHA with the same rungs and eta. (a) random at full "
           f"budget: final HV {ms(at(a_runs, 1.0))}. Choice (`ranked`): among the settings whose (c) "
           "reaches 98 % of (a)'s final HV at 1/3 of the axis (target 1, in mean), the largest mean HV over the whole "
           "axis (the anytime measure; target 2 asks for every budget).", "",
           "| arm | setting | HV @1/3 | of (a)'s final | HV @1× | mean HV over the axis | trials started "
           "| stopped | completed |", "|---|---|---|---|---|---|---|---|---|"]
    for arm, runs in [(a, r) for a, r in zip(grid, c_runs)] + [(a, r) for a, r in zip(arms[1 + len(grid):], b_runs)]:
        v = at(runs, TARGET_AT)
        mark = " **(chosen)**" if arm.scheduler == chosen else ""
        md.append(f"| {arm.name} | {arm.setting}{mark} | {ms(v)} | {v.mean() / final_a:.1%} | {ms(at(runs, 1.0))} "
                  f"| {curves(runs).mean():.4f} | {np.mean([r.started for r in runs]):.1f} "
                  f"| {np.mean([sum(r.stopped.values()) for r in runs]):.1f} | {np.mean([r.completed for r in runs]):.1f} |")
    area = {i: np.array([r.curve().mean() for r in c_runs[i]]) for i in (pick, second)}  # (seeds,) per setting
    b_area = [np.mean([r.curve().mean() for r in runs]) for runs in b_runs]
    b_best = int(np.argmax(b_area))
    met = sum(at(c_runs[i], TARGET_AT).mean() >= TARGET_FRACTION * final_a for i in range(len(grid)))
    md += ["", f"**Chosen: {describe(chosen)}**: {met} of {len(grid)} settings meet target 1 here; this one has the "
           f"largest mean HV over the axis ({area[pick].mean():.4f}), {area[pick].mean() - area[second].mean():.4f} "
           f"above the runner-up ({describe(RUNG_GRID[second])}; one-sided Mann-Whitney p "
           f"{fmt_p(greater_p(area[pick], area[second]))} over the seeds' means, so "
           + ("a clear lead" if greater_p(area[pick], area[second]) < 0.05 else "within noise of it") + "). "
           f"The scalar baseline's own best setting by the same measure is {describe(arms[1 + len(grid) + b_best].scheduler)} "
           f"({b_area[b_best]:.4f}); (b) below uses the chosen rungs and eta, so the two rules differ only in the "
           f"ranking. The choice is made and shown on `{tune}` (in sample); `{report}` is where it is tested.", "",
           *grid_facts(c_runs), ""]

    blocks = []
    b_index = list(scalars).index((tuple(chosen.rungs), chosen.eta))
    tune_arms, skip = bench_arms(table, chosen, best)
    tune_results = [a_runs, b_runs[b_index], c_runs[pick]]
    if skip is None:
        extra, c2 = run_arms(tune, rows, tune_arms[3:], seeds, trials, workers)
        tune_results += extra
        cpu += c2
    blocks.append((tune, tune_arms, tune_results))
    md += [f"## `{tune}` (in sample: the bench the setting was chosen on)", "", table.describe() + ".", "",
           *arms_table(tune_arms, tune_results, table.passes), "", *([skip, ""] if skip else []),
           *target_lines(tune_arms, tune_results), ""]

    md += [f"## `{report}` ({out_of_sample(tune, report)})", ""]
    report_table = load_table(report, rows) if report in sq.BENCHES else None
    if report_table is None or not report_table.oracle.rows:
        md += [f"Pending: `{report}`'s table ({sq.BENCHES[report].table.relative_to(sq.REPO) if report in sq.BENCHES else report}) "
               "has no fully recorded candidate yet. Rerun this command once it is recorded.", ""]
    else:
        rep_arms, skip = bench_arms(report_table, chosen, best)
        rep_results, c2 = run_arms(report, rows, rep_arms, seeds, trials, workers)
        cpu += c2
        blocks.append((report, rep_arms, rep_results))
        md += [report_table.describe() + ".", "", *rung_informativeness(report_table, RUNGS_SEEN), "",
               *arms_table(rep_arms, rep_results, report_table.passes), "",
               *([skip, ""] if skip else []), *target_lines(rep_arms, rep_results), ""]

    stem = out.with_suffix("")
    write_curves(stem.with_suffix(".csv"), blocks + [(f"{tune} (rung grid)", arms[1:], results[1:])])
    plot(stem.with_suffix(".png"), blocks)
    md += [f"Curves: `{stem.with_suffix('.csv').name}` (every 1/{GRID} of the axis, every arm of the grid too); "
           f"plot: `{stem.with_suffix('.png').name}`. Replay: {cpu:.0f} CPU s, {time.perf_counter() - t0:.0f} s wall "
           f"({workers} process{'es' if workers > 1 else ''})."]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(md) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    app()
