"""The dashboard for choosing, in Chromium, against a real ``promptsearch serve`` with real jobs
(MobileNetV2 at 32 px + pixel prompts on BreastMNIST, 96 training images): which decisions matter
(fANOVA), parallel coordinates with brushing, the constraint box, learning curves (live, and with
failed/preempted trials), comparing two jobs, CSV/JSON out (API, button, CLI), PNG/SVG from Plotly's
modebar, the test split kept out of selection; and the analysis endpoints' 4xx answers.

    MLFLOW_DISABLE_TELEMETRY=true PROMPTSEARCH_DATA_ROOT=../shared/data/medmnist python -m pytest -q tests/test_dashboard.py

One server and two real jobs for the whole module ("choose": 4 trials x 2 epochs; "other": 2 trials x
5 epochs, on the same space, for the live view and the compare view). One more job is SYNTHETIC:
the "choose" job's real records copied with some trials marked failed, preempted and running (a
format-1 job folder, which the workspace reads like any job), to show those statuses on the curves.
Screenshots go to test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import time
from pathlib import Path

import pytest
from conftest import ARTIFACTS, CHROMIUM, open_job, write_job_defaults  # the browser and page fixtures are conftest's
from live_server import Server, wait_for

REPO = Path(__file__).resolve().parent.parent
MAIN = {"name": "choose", "trials": 4, "strategy": "random", "seed": 0, "budget": {"epochs": 2}}
OTHER = {"name": "other", "trials": 2, "strategy": "random", "seed": 1, "budget": {"epochs": 5}}

pytestmark = pytest.mark.slow
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def defaults(tmp_path_factory, data_root, mobilenet_weights) -> Path:
    return write_job_defaults(tmp_path_factory.mktemp("defaults"), data_root, mobilenet_weights)


@pytest.fixture(scope="module")
def server(tmp_path_factory, defaults):
    srv = Server(tmp_path_factory.mktemp("dash") / "ws", defaults).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def submitted(server) -> dict[str, str]:
    """Both real jobs submitted at once: "other" queues behind "choose" (one job at a time)."""
    ids = {}
    for body in (MAIN, OTHER):
        r = server.client.post("/jobs", json=body)
        assert r.status_code == 201, r.text
        ids[body["name"]] = r.json()["id"]
    return ids


@pytest.fixture(scope="module")
def done(server, submitted) -> dict[str, str]:
    for job_id in submitted.values():
        server.wait_job(job_id)
    return submitted


def usable(trials: list[dict], objectives=("auc", "worst_class_recall", "prompt_params", "latency_ms")) -> list[dict]:
    return [t for t in trials if t["status"] == "completed" and all(o in t["metrics"] for o in objectives)]


# --- live: a running job's epochs arrive without a reload -----------------------------------------------------
@needs_chromium
@pytest.mark.long
def test_live_epochs_and_last_heard(server, submitted, page):
    """The page of the queued "other" job follows it through running to completed: a running trial's
    epochs count up in the table and on its learning curve, and the page says when it last heard
    from the server — all without a reload."""
    from playwright.sync_api import expect

    job_id = submitted["other"]
    open_job(page, server, job_id)
    page.evaluate("window.__sameDocument = true")
    heard0 = float(page.get_attribute("#last-heard", "data-at"))
    expect(page.locator("#last-heard")).to_contain_text("last heard from the server")
    expect(page.locator("#last-heard")).to_contain_text("live")
    row = page.locator("#trials-table tbody tr", has=page.locator(".badge.running")).first
    watched: set[str] = set()

    def running() -> bool:  # "choose" runs first; then this job's trials start, one at a time
        for j in submitted.values():
            status = server.job(j)["status"]
            assert status not in ("failed", "cancelled", "interrupted"), (j, status, server.log.read_text()[-3000:])
        return row.count() > 0 and row.get_attribute("data-trial") not in watched

    shot = False
    for _attempt in range(OTHER["trials"]):  # a trial that ends before we look at it: watch the next one
        wait_for(running, 400, 0.2, "a running trial of the second job on its page")
        trial_id = row.get_attribute("data-trial")
        watched.add(trial_id)
        row.click()  # select it: its learning curve, live
        seen: list[tuple[str, int]] = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            li = page.locator(f"#curves-list li[data-trial='{trial_id}']")
            if li.count():
                status, epochs = li.get_attribute("data-status"), int(li.get_attribute("data-epochs"))
                if not seen or seen[-1] != (status, epochs):
                    seen.append((status, epochs))
                if status == "running" and epochs >= 1 and not shot:
                    page.screenshot(path=str(ARTIFACTS / "dashboard-live.png"), full_page=True)
                    shot = True
                if status != "running":
                    break
            time.sleep(0.2)
        if seen and seen[0][0] == "running":
            break
    assert seen and seen[-1] == ("completed", OTHER["budget"]["epochs"]), seen
    assert seen[0][0] == "running" and len({e for _, e in seen}) >= 2, seen  # it moved while we watched
    n = page.evaluate("document.getElementById('curves-plot').data[0].x.length")
    assert n == OTHER["budget"]["epochs"]
    expect(page.locator("#job-title .badge")).to_have_text("completed", timeout=300_000)
    assert page.evaluate("window.__sameDocument") is True  # never reloaded
    assert float(page.get_attribute("#last-heard", "data-at")) > heard0
    expect(page.locator("#last-heard")).to_contain_text("not polling")
    print(f"\nlive: {trial_id} seen as {seen}")


# --- which decisions matter -----------------------------------------------------------------------------------
@needs_chromium
def test_importance_lists_every_decision(server, done, page):
    from promptsearch.space import load_space

    job_id = done["choose"]
    open_job(page, server, job_id)
    page.wait_for_selector("#importance-plot[data-ready='1']", timeout=120_000)
    decisions = list(load_space("pixel").spec.decisions)
    rows = page.locator("#importance-table tr[data-kind='decision']")
    assert [r.get_attribute("data-param") for r in rows.all()] and \
        sorted(r.get_attribute("data-param") for r in rows.all()) == sorted(decisions)
    values = [float(v) for v in page.locator("#importance-table td[data-value]").evaluate_all(
        "cells => cells.map(c => c.dataset.value)")]
    objectives = [o["name"] for o in server.job(job_id)["objectives"]]
    comps = page.locator("#importance-table tr[data-kind='component']").count()
    assert len(values) == (len(decisions) + comps) * len(objectives)
    assert all(math.isfinite(v) and 0 <= v <= 1 for v in values), values
    # per objective, in the plot: one bar series per objective, every decision on its axis
    traces = page.evaluate("document.getElementById('importance-plot').data.map(t => [t.name, t.y])")
    assert [t[0] for t in traces] == objectives and all(set(decisions) <= set(t[1]) for t in traces)
    api = server.client.get(f"/jobs/{job_id}/importance").json()
    assert api["n_trials"] == len(usable(server.trials(job_id))) and "fANOVA" in api["method"]
    assert sum(api["importance"]["prompt_params"].values()) > 0  # the architecture sets the prompt's size
    # components: how often each is on, on the front vs among all finished trials
    comp = page.evaluate("document.getElementById('components-plot').data.map(t => [t.name, t.x.length, t.y])")
    space = load_space("pixel")
    n_comp = sum(len(v) for v in space.spec.components.values())
    assert len(comp) == 2 and all(c[1] == n_comp for c in comp)
    assert all(0 <= y <= 100 for c in comp for y in c[2] if y is not None)
    page.click("#importance-details summary")
    page.locator("#importance-plot").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "dashboard-importance.png"), full_page=True)


# --- parallel coordinates: brushing an axis filters the front and the table --------------------------------------
def _axis_box(page, label_start: str) -> dict:
    return page.evaluate("""(start) => {
        const titles = [...document.querySelectorAll('#parcoords .axis-title')].map(e => e.textContent);
        const k = titles.findIndex(t => t.startsWith(start));
        const r = document.querySelectorAll('#parcoords .axis-brush')[k].querySelector('rect.background').getBoundingClientRect();
        return {k, x: r.x + r.width / 2, y: r.y, h: r.height};
    }""", label_start)


@needs_chromium
def test_brushing_an_axis_highlights_rows(server, done, page):
    job_id = done["choose"]
    trials = usable(server.trials(job_id))
    # the linear objective with the most distinct values (its axis spans min..max)
    name = max(("auc", "worst_class_recall"), key=lambda n: len({round(t["metrics"][n], 9) for t in trials}))
    values = sorted(t["metrics"][name] for t in trials)
    assert values[0] < values[-1], f"every trial has the same {name}: nothing to brush"
    open_job(page, server, job_id)
    assert page.get_attribute("#trials-table", "data-highlighted") == "0"
    assert page.locator("#trials-table tbody tr.hl").count() == 0
    page.locator("#parcoords").scroll_into_view_if_needed()
    box = _axis_box(page, name)
    assert box["k"] >= 0
    page.mouse.move(box["x"], box["y"] + 2)
    page.mouse.down()
    page.mouse.move(box["x"], box["y"] + box["h"] * 0.6, steps=10)  # the top 60 %: the highest values, not the lowest
    page.mouse.up()
    page.wait_for_function("document.getElementById('trials-table').dataset.highlighted !== '0'")
    k = int(page.get_attribute("#trials-table", "data-highlighted"))
    assert 1 <= k < len(trials), (k, values)
    assert page.locator("#trials-table tbody tr.hl").count() == k
    rng = page.evaluate(f"document.getElementById('parcoords').data[0].dimensions[{box['k']}].constraintrange")
    lo, hi = min(rng), max(rng)
    inside = {t["trial_id"] for t in trials if lo <= t["metrics"][name] <= hi}
    assert {r.get_attribute("data-trial") for r in page.locator("#trials-table tbody tr.hl").all()} == inside
    # the front greys out what is outside: full opacity only for the brushed trials
    opacities = page.evaluate("[0, 1].flatMap(i => document.getElementById('pareto').data[i].marker.opacity)")
    assert sum(1 for o in opacities if o > 0.5) == k
    page.screenshot(path=str(ARTIFACTS / "dashboard-parcoords.png"), full_page=True)
    page.click("#brush-clear")
    page.wait_for_function("document.getElementById('trials-table').dataset.highlighted === '0'")


# --- the constraint box: --pick's where, one parser on the server --------------------------------------------
@needs_chromium
def test_constraint_box_greys_out_and_agrees_with_pick(server, done, page):
    from promptsearch.jobs import JobSpec
    from promptsearch.objectives import pick
    from promptsearch.service.jobs import job_trials

    job_id = done["choose"]
    records = job_trials(server.workspace, job_id)
    objectives = JobSpec.model_validate(json.loads((server.workspace / "jobs" / job_id / "job.json").read_text())["spec"]).objective_list
    good = usable(server.trials(job_id))
    cut = sorted(t["metrics"]["prompt_params"] for t in good)[len(good) // 2]
    where = f"prompt_params <= {cut:g} and worst_class_recall >= 0"
    api = server.client.get(f"/jobs/{job_id}/match", params={"where": where}).json()
    expected = {t["trial_id"] for t in good if t["metrics"]["prompt_params"] <= cut}
    assert set(api["trial_ids"]) == expected and api["usable"] == len(good)
    # the same syntax --pick reads: its choice is one of the matches, and the best auc among them
    chosen = records[pick(records, objectives, f"best:auc where {where}")]
    assert chosen["trial_id"] in expected
    assert chosen["metrics"]["auc"] == max(t["metrics"]["auc"] for t in good if t["trial_id"] in expected)
    open_job(page, server, job_id)
    page.fill("#where", where)
    page.click("#where-apply")
    page.wait_for_function(f"document.getElementById('trials-table').dataset.highlighted === '{len(expected)}'")
    assert {r.get_attribute("data-trial") for r in page.locator("#trials-table tbody tr.hl").all()} == expected
    greyed = page.evaluate("[0, 1].flatMap(i => document.getElementById('pareto').data[i].marker.opacity)")
    assert sum(1 for o in greyed if o < 0.5) == len(good) - len(expected)
    assert f"{len(expected)} of {len(good)}" in page.text_content("#where-note")
    page.screenshot(path=str(ARTIFACTS / "dashboard-constraint.png"), full_page=True)
    page.fill("#where", "prompt_params <=")
    page.click("#where-apply")
    page.wait_for_function("document.getElementById('where-error').textContent.length > 0")
    assert "cannot read condition" in page.text_content("#where-error")
    assert page.get_attribute("#trials-table", "data-highlighted") == "0"  # a bad constraint filters nothing
    page.fill("#where", "prompt_parms < 3")
    page.click("#where-apply")
    page.wait_for_function("document.getElementById('where-error').textContent.includes('unknown metric')")


# --- data out -------------------------------------------------------------------------------------------------
@needs_chromium
def test_csv_and_json_downloads(server, done, page):
    from promptsearch.space import load_space

    job_id = done["choose"]
    trials = server.trials(job_id)
    space = load_space("pixel")
    open_job(page, server, job_id)
    with page.expect_download() as dl:
        page.click("#download-csv")
    path = ARTIFACTS / dl.value.suggested_filename
    dl.value.save_as(path)
    assert path.name == f"{job_id}-trials.csv"
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert len(rows) == len(trials)
    cols = set(rows[0])
    assert set(space.spec.decisions) <= cols and {f"components.{g}" for g in space.spec.components} <= cols
    assert not any(c.startswith("test_") for c in cols)  # the test split stays out unless revealed
    by_id = {t["trial_id"]: t for t in trials}
    for r in rows:
        arch = by_id[r["trial_id"]]["architecture"]
        for d in space.spec.decisions:
            assert r[d] == ("" if d not in arch else str(arch[d])), (d, r[d], arch)
        for g in space.spec.components:
            cell = r[f"components.{g}"]
            assert (cell.split(";") if cell else []) == arch["components"][g]
        if by_id[r["trial_id"]]["status"] == "completed":
            assert float(r["auc"]) == pytest.approx(by_id[r["trial_id"]]["metrics"]["auc"])
    with page.expect_download() as dl:
        page.click("#download-json")
    data = json.loads(Path(dl.value.path()).read_text())
    assert [d["trial_id"] for d in data] == [t["trial_id"] for t in trials]
    assert all(d["components.anatomical"] == by_id[d["trial_id"]]["architecture"]["components"]["anatomical"] for d in data)
    page.check("#reveal-test")
    with page.expect_download() as dl:
        page.click("#download-csv")
    assert any(c.startswith("test_") for c in next(csv.reader(io.StringIO(Path(dl.value.path()).read_text()))))


def test_trials_cli_csv_and_json(server, done):
    from typer.testing import CliRunner

    from promptsearch.cli import app

    job_id = done["choose"]
    res = CliRunner().invoke(app, ["trials", job_id, "--csv", "--workspace", str(server.workspace)])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(rows) == len(server.trials(job_id)) and {"pixel_prompt", "fusion", "components.modality"} <= set(rows[0])
    api = server.client.get(f"/jobs/{job_id}/trials", params={"format": "csv"}).text
    assert res.stdout == api  # one table, wherever it is read
    res = CliRunner().invoke(app, ["trials", job_id[:10], "--json", "--test", "--status", "completed",
                                   "--workspace", str(server.workspace)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data and all(d["status"] == "completed" and "test_auc" in d for d in data)
    res = CliRunner().invoke(app, ["trials", "no-such-job", "--csv", "--workspace", str(server.workspace)])
    assert res.exit_code == 2 and "no job" in res.output


@needs_chromium
def test_every_plot_downloads_png_and_svg(server, done, page):
    job_id = done["choose"]
    open_job(page, server, job_id)
    page.wait_for_selector("#importance-plot[data-ready='1']", timeout=120_000)
    page.click("#trials-table tbody tr:first-child")  # the curves plot gets data
    for plot in ("pareto", "hv-plot", "time-plot", "curves-plot", "parcoords", "importance-plot", "components-plot"):
        titles = page.locator(f"#{plot} .modebar-btn").evaluate_all("bs => bs.map(b => b.dataset.title)")
        assert "Download plot as a PNG" in titles and "Download plot as an SVG" in titles, (plot, titles)
    page.hover("#pareto")
    with page.expect_download() as dl:
        page.click("#pareto .modebar-btn[data-title='Download plot as an SVG']")
    assert dl.value.suggested_filename == f"{job_id}-pareto.svg"
    assert Path(dl.value.path()).read_text()[:200].lstrip().startswith("<svg")
    page.hover("#hv-plot")
    with page.expect_download() as dl:
        page.click("#hv-plot .modebar-btn[data-title='Download plot as a PNG']")
    assert dl.value.suggested_filename == f"{job_id}-hypervolume.png"
    assert Path(dl.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- the test split stays out of selection ----------------------------------------------------------------------
@needs_chromium
def test_test_split_only_once_chosen_or_revealed(server, done, page):
    from playwright.sync_api import expect

    job_id = done["choose"]
    open_job(page, server, job_id)
    headers = page.locator("#trials-table thead th").all_inner_texts()
    assert not any("test" in h for h in headers), headers
    first = usable(server.trials(job_id))[0]["trial_id"]
    page.click(f"#trials-table tbody tr[data-trial='{first}']")
    assert "test" not in page.locator("#selected-body table thead").inner_text()
    hover = page.evaluate("document.getElementById('pareto').data.slice(0, 2).flatMap(t => t.text).join(' ')")
    assert "test" not in hover
    expect(page.locator("#test-warning")).to_be_hidden()
    # a choice made: the exported trial's view reports its test split
    with page.expect_download():
        page.click("#export-selected")
    expect(page.locator("#exported-test")).to_have_attribute("data-trial", first)
    expect(page.locator("#exported-test")).to_contain_text("auc")
    # or an explicit reveal, which says it must not guide the choice
    page.check("#reveal-test")
    expect(page.locator("#test-warning")).to_be_visible()
    expect(page.locator("#test-warning")).to_contain_text("do not choose by them")
    assert any(h.startswith("test ") for h in page.locator("#trials-table thead th").all_inner_texts())
    assert "test" in page.locator("#selected-body table thead").inner_text()


# --- learning curves: several trials, failed and preempted ones shown as such ---------------------------------
@pytest.fixture(scope="module")
def status_job(server, done) -> tuple[str, dict[str, str]]:
    """SYNTHETIC: the "choose" job's real records in a new job folder (format 1: job.json + state.json,
    the records the search writes), trials 2, 3 and 4 marked failed (one epoch), stopped and running."""
    from promptsearch.search.records import JobState, TrialRecord
    from promptsearch.service.jobs import job_trials

    src = done["choose"]
    record = json.loads((server.workspace / "jobs" / src / "job.json").read_text())
    job_id = f"synthetic-status-{time.strftime('%Y%m%d-%H%M%S')}-0001"
    records = job_trials(server.workspace, src)
    marks = {records[1]["trial_id"]: ("failed", "diverged: loss 2.3e+04 at epoch 2, step 5 (synthetic)"),
             records[2]["trial_id"]: ("preempted", "job cancelled (synthetic)"),
             records[3]["trial_id"]: ("running", None)}
    trials = []
    for r in records:
        r = dict(r)
        if r["trial_id"] in marks:
            r["status"], r["reason"] = marks[r["trial_id"]]
            r["history"] = r["history"][:1]
            if r["status"] != "completed":
                r["metrics"], r["test_metrics"], r["weights"] = {}, {}, None
            if r["status"] == "running":
                r["finished_at"] = r["wall_time_s"] = None
        trials.append(TrialRecord.model_validate(r))
    d = server.workspace / "jobs" / job_id
    (d / "weights").mkdir(parents=True)
    spec = {**record["spec"], "name": "synthetic-status", "description": "SYNTHETIC: real records, statuses changed"}
    (d / "job.json").write_text(json.dumps({**record, "job_id": job_id, "spec": spec}, indent=1))
    state = JobState(job_id=job_id, status="cancelled", message="synthetic job for the curves' status styles",
                     attempts=1, trials=trials, next_index=len(trials) + 1, finished_at=time.time())
    (d / "state.json").write_text(state.model_dump_json(indent=1))
    return job_id, {t: s for t, (s, _) in marks.items()}


@needs_chromium
def test_curves_overlay_and_status_styles(server, status_job, page):
    job_id, marks = status_job
    open_job(page, server, job_id)
    completed = next(t["trial_id"] for t in server.trials(job_id) if t["status"] == "completed")
    page.click(f"#trials-table tbody tr[data-trial='{completed}']")
    for trial_id in marks:
        page.check(f"#trials-table input.pin[data-trial='{trial_id}']")
    page.wait_for_function("document.querySelectorAll('#curves-list li').length === 4")
    items = {li.get_attribute("data-trial"): li for li in page.locator("#curves-list li").all()}
    assert items[completed].get_attribute("data-status") == "completed"
    for trial_id, status in marks.items():
        assert items[trial_id].get_attribute("data-status") == status
        assert items[trial_id].get_attribute("data-epochs") == "1"
    # preempted (re-run) is not "stopped" (early, at a rung: tests/test_dashboard_explain.py)
    assert "preempted" in items[next(t for t, s in marks.items() if s == "preempted")].inner_text()
    assert "diverged" in items[next(t for t, s in marks.items() if s == "failed")].inner_text()
    traces = page.evaluate("document.getElementById('curves-plot').data.map(t => [t.meta, t.line.dash, t.name, t.x.length])")
    dash = {m: d for m, d, _, _ in traces}
    assert dash == {"completed": "solid", "failed": "dash", "preempted": "dashdot", "running": "dot"}
    assert all(n >= 1 for *_, n in traces)
    assert any("(preempted)" in name for _, _, name, _ in traces) and any("(failed)" in name for _, _, name, _ in traces)
    page.select_option("#curve-metric", "train_loss")
    assert page.evaluate("document.getElementById('curves-plot').layout.yaxis.title.text") == "train_loss"
    page.locator("#curves-plot").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "dashboard-curves.png"), full_page=True)


# --- compare two jobs on the same space -----------------------------------------------------------------------
@needs_chromium
def test_compare_overlays_two_jobs(server, done, page):
    from playwright.sync_api import expect

    a, b = done["choose"], done["other"]
    page.goto(f"{server.url}/#/")
    for job_id in (a, b):
        page.check(f"#jobs-table input.cmp[data-job='{job_id}']")
    expect(page.locator("#compare-selected")).to_be_enabled()
    page.screenshot(path=str(ARTIFACTS / "dashboard-compare-pick.png"), full_page=True)
    page.click("#compare-selected")
    page.wait_for_function("document.getElementById('compare-hv').data && document.getElementById('compare-hv').data.length === 2")
    fronts = page.evaluate("document.getElementById('compare-front').data.filter(t => t.name.includes(': front')).map(t => [t.meta, t.x.length])")
    assert {m for m, _ in fronts} == {a, b}
    for job_id, n in fronts:
        assert n == len(server.client.get(f"/jobs/{job_id}/pareto").json()["front"])
    hv = page.evaluate("document.getElementById('compare-hv').data.map(t => [t.meta, t.y])")
    for job_id, ys in hv:
        curve = server.client.get(f"/jobs/{job_id}/pareto").json()["hypervolume_curve"]
        assert ys == pytest.approx([p["hypervolume"] for p in curve])
    expect(page.locator("#compare-table tbody tr")).to_have_count(2)
    page.select_option("#cmp-x", "latency_ms")
    expect(page.locator("#compare-front .xtitle")).to_contain_text("latency_ms")
    page.screenshot(path=str(ARTIFACTS / "dashboard-compare.png"), full_page=True)


# --- the analysis API's answers to bad requests ---------------------------------------------------------------
def test_analysis_api_4xx_with_reasons(server, done, tmp_path):
    c, job_id = server.client, done["choose"]
    for path in ("/jobs/nope/importance", "/jobs/nope/decisions", "/jobs/nope/curves?trial=t0001",
                 "/jobs/nope/match?where=auc>0", "/jobs/nope/trials?format=csv", f"/compare?jobs={job_id}&jobs=nope"):
        r = c.get(path)
        assert r.status_code == 404 and "unknown job" in r.json()["detail"], (path, r.text)
    assert c.get("/jobs/%2E%2E/importance").status_code in (404, 422)
    r = c.get(f"/jobs/{job_id}/trials", params={"format": "xlsx"})
    assert r.status_code == 422 and "csv" in json.dumps(r.json()["detail"])
    for where, reason in [("prompt_params <=", "cannot read condition"), ("prompt_parms < 3", "unknown metric"),
                          ("auc >= 1.2.3", "not a number"), ("", "empty constraint"), ("  ", "empty constraint")]:
        r = c.get(f"/jobs/{job_id}/match", params={"where": where})
        assert r.status_code == 422 and reason in r.json()["detail"], (where, r.text)
    assert c.get(f"/jobs/{job_id}/match", params={"where": "x" * 600}).status_code == 422
    r = c.get(f"/jobs/{job_id}/curves", params={"trial": "t9999"})
    assert r.status_code == 404 and "t9999" in r.json()["detail"]
    assert c.get(f"/jobs/{job_id}/curves").status_code == 422
    assert c.get(f"/jobs/{job_id}/curves", params={"trial": "../x"}).status_code == 422
    r = c.get("/compare", params={"jobs": [job_id]})
    assert r.status_code == 422
    r = c.get("/compare", params={"jobs": [job_id, job_id]})
    assert r.status_code == 422 and "twice" in r.json()["detail"]
    # a job on another space cannot share the plot
    record = json.loads((server.workspace / "jobs" / job_id / "job.json").read_text())
    other = f"vpt-space-{time.strftime('%Y%m%d-%H%M%S')}-0002"
    d = server.workspace / "jobs" / other
    d.mkdir(parents=True)
    (d / "job.json").write_text(json.dumps({**record, "job_id": other, "space_hash": "0123456789abcdef", "space_name": "vpt"}))
    from promptsearch.search.records import JobState

    (d / "state.json").write_text(JobState(job_id=other, status="cancelled").model_dump_json())
    r = c.get("/compare", params={"jobs": [job_id, other]})
    assert r.status_code == 409 and "different spaces" in r.json()["detail"], r.text
    listed = {j["id"]: j for j in c.get("/compare/jobs").json()["jobs"]}
    assert listed[other]["space_hash"] != listed[job_id]["space_hash"] == listed[done["other"]]["space_hash"]
    shutil.rmtree(d)
    # formats: every trial, one column per decision, test columns only when asked
    csv_text = c.get(f"/jobs/{job_id}/trials", params={"format": "csv"})
    assert csv_text.headers["content-type"].startswith("text/csv")
    assert csv_text.headers["content-disposition"] == f'attachment; filename="{job_id}-trials.csv"'
    assert len(list(csv.DictReader(io.StringIO(csv_text.text)))) == len(server.trials(job_id))
    with_test = c.get(f"/jobs/{job_id}/trials", params={"format": "json", "test": "true", "status": "completed"}).json()
    assert with_test and all("test_auc" in r and r["status"] == "completed" for r in with_test)
    page = c.get(f"/jobs/{job_id}/trials").json()  # without format: the paged view, as before
    assert page["limit"] == 100 and page["total"] == len(page["trials"])


def test_analysis_endpoints_use_the_token(server, done):
    """The router shares the app's auth dependency: with a token set, no analysis answer without it."""
    from fastapi.testclient import TestClient

    from promptsearch.service.app import create_app
    from promptsearch.service.settings import Settings

    job_id = done["choose"]
    app = create_app(Settings(workspace=server.workspace, token="t0ken"), start_runner=False)
    paths = [f"/jobs/{job_id}/importance", f"/jobs/{job_id}/decisions", f"/jobs/{job_id}/curves?trial=t0001",
             f"/jobs/{job_id}/match?where=auc>0", f"/jobs/{job_id}/trials?format=csv", "/compare/jobs",
             f"/compare?jobs={job_id}&jobs={done['other']}"]
    with TestClient(app) as anon:
        for path in paths:
            assert anon.get(path).status_code == 401, path
        for path in paths:
            r = anon.get(path, headers={"Authorization": "Bearer t0ken"})
            assert r.status_code == 200, (path, r.text)


# --- the pure functions behind it (no server) -------------------------------------------------------------------
def _records(n: int = 40, seed: int = 0) -> list[dict]:
    """Trial records over the pixel space whose auc depends on fusion alone and prompt_params on the
    frame width (overlays, which have none, all alike); latency and worst-class recall: noise."""
    import random

    from promptsearch.space import load_space

    space, rng = load_space("pixel"), random.Random(seed)
    out = []
    for i in range(n):
        cand = space.sample(rng.randrange(2**31))
        a = cand.architecture
        metrics = {"auc": {"concat": 0.6, "attention": 0.7, "gate": 0.8}[a["fusion"]] + rng.gauss(0, 0.005),
                   "worst_class_recall": rng.random(), "latency_ms": 5 + rng.random(),
                   "prompt_params": 3000.0 if a["pixel_prompt"] == "overlay" else 800.0 * a["frame_width"]}
        out.append({"trial_id": f"t{i + 1:04d}", "index": i + 1, "candidate": cand.to_json(), "status": "completed",
                    "metrics": metrics, "test_metrics": {"auc": metrics["auc"]}, "history": [{"epoch": 1.0}]})
    out[3] = {**out[3], "status": "failed", "metrics": {}, "reason": "=HYPERLINK(\"http://x\")"}
    return out


def test_importance_finds_the_decision_that_sets_each_objective():
    from promptsearch.objectives import DEFAULT_OBJECTIVES as O
    from promptsearch.service import analysis
    from promptsearch.space import load_space

    space, records = load_space("pixel"), _records()
    imp = analysis.importance(records, space, O)
    assert imp["n_trials"] == len(records) - 1 and imp["note"] is None
    assert {p["name"] for p in imp["params"] if p["kind"] == "decision"} == set(space.spec.decisions)
    # frame_width's own "n/a" (an overlay) carries what pixel_prompt would: it alone sets prompt_params
    for objective, decision in (("auc", "fusion"), ("prompt_params", "frame_width")):
        scores = imp["importance"][objective]
        assert max(scores, key=scores.get) == decision and scores[decision] > 0.5, scores
    assert imp["importance"]["auc"]["module"] == 0.0  # one choice: constant
    assert all(math.isfinite(v) and 0 <= v <= 1 for s in imp["importance"].values() for v in s.values())
    frame = next(p for p in imp["params"] if p["name"] == "frame_width")
    assert frame["choices"][-1] == analysis.INACTIVE  # used only with pixel_prompt: frame
    for few in (records[:1], []):
        small = analysis.importance(few, space, O)
        assert "at least 2" in small["note"] and all(v == 0.0 for s in small["importance"].values() for v in s.values())


def test_where_is_picks_where():
    """A constraint matches exactly the trials `pick("best:auc where ...")` can choose among."""
    from promptsearch.objectives import DEFAULT_OBJECTIVES as O
    from promptsearch.objectives import ObjectiveError, pick
    from promptsearch.service import analysis

    records = _records()
    for where in ("prompt_params <= 3000", "prompt_params < 3000 and auc > 0.65", "worst_class_recall >= 0.5",
                  "auc == 2", "latency_ms > 5.5 and prompt_params >= 4800"):
        idx = analysis.where_matches(records, O, analysis.parse_where(where, {"auc", "prompt_params", "latency_ms",
                                                                             "worst_class_recall"}))
        by_pick = []
        for i, r in enumerate(records):
            try:
                pick([r], O, f"best:auc where {where}")
                by_pick.append(i)
            except ObjectiveError:
                pass
        assert idx == by_pick, where
    assert analysis.parse_where("where auc>0.5") == [analysis.Condition("auc", ">", 0.5)]


def test_trial_rows_and_csv():
    from promptsearch.objectives import DEFAULT_OBJECTIVES as O
    from promptsearch.service import analysis
    from promptsearch.space import load_space

    space, records = load_space("pixel"), _records(6)
    cols, rows = analysis.trial_rows(records, space, O)
    assert cols[:5] == ["trial_id", "number", "status", "on_front", "rank"] and not any(c.startswith("test_") for c in cols)
    assert [r["trial_id"] for r in rows] == [r["trial_id"] for r in records]
    for rec, row in zip(records, rows):
        arch = rec["candidate"]["architecture"]
        assert all(row[d] == arch.get(d) for d in space.spec.decisions)
        assert all(row[f"components.{g}"] == arch["components"][g] for g in space.spec.components)
    text = analysis.rows_csv(cols, rows)
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert len(parsed) == len(records) and parsed[3]["reason"].startswith("'=")  # a formula stays text
    assert parsed[0]["components.anatomical"] == ";".join(rows[0]["components.anatomical"])
    cols, rows = analysis.trial_rows(records, space, O, include_test=True)
    assert "test_auc" in cols and rows[0]["test_auc"] == records[0]["test_metrics"]["auc"]
