"""The dashboard's explanation panel, its job status badges (cancelling, corrupt) and its marks for early
stopping (stopped trials, ±sd error bars), in Chromium against a real ``promptsearch serve``.

    PROMPTSEARCH_SCREENSHOTS=benchmarks/results MLFLOW_DISABLE_TELEMETRY=true \\
      PROMPTSEARCH_DATA_ROOT=../shared/data/medmnist python -m pytest -q tests/test_dashboard_explain.py

What is real and what is not:
- one real job (MobileNetV2 at 32 px + pixel prompts on BreastMNIST, 2 trials x 1 epoch, 64 training
  images); the panel shows its completed trial's maps, which the endpoint builds by exporting the trial
  with example maps on the server (Grad-CAM overlays, the input, the learned pixel prompt);
- SYNTHETIC: that job's records copied into a new job folder with one trial marked running, for the
  panel's "not exported yet" (the endpoint's 409 and its reason);
- real jobs in the same workspace, one with its event log overwritten by random bytes (corrupt) and one
  whose coordinator lock this test holds while it asks for a cancel (cancelling, as a coordinator that
  has not yet acted on it is seen);
- SYNTHETIC API answers (``page.route``) for a job whose records carry the fields early stopping (#15)
  adds: ``status: "stopped"``, ``rung``, ``epochs``, ``image_passes`` and ``repeats``. Today's API does
  not pass them through (``service.views.trial_views`` names its fields), so they are injected at the
  browser's edge; the drawing logic itself is tested in tests/test_dashboard_marks.py.
Screenshots go to test-artifacts/ and, with ``PROMPTSEARCH_SCREENSHOTS=DIR``, to ``DIR/dashboard_*.png``.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from conftest import ARTIFACTS, CHROMIUM, open_job, write_job_defaults  # the browser and page fixtures are conftest's
from live_server import Server

pytestmark = pytest.mark.slow
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
JOB = {"name": "explain", "trials": 2, "strategy": "random", "seed": 0, "budget": {"epochs": 1}}


@pytest.fixture(scope="module")
def defaults(tmp_path_factory, data_root, mobilenet_weights) -> Path:
    return write_job_defaults(tmp_path_factory.mktemp("defaults"), data_root, mobilenet_weights, max_train_samples=64, trials=2)


@pytest.fixture(scope="module")
def server(tmp_path_factory, defaults):
    srv = Server(tmp_path_factory.mktemp("dash-explain") / "ws", defaults).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def job(server) -> str:
    r = server.client.post("/jobs", json=JOB)
    assert r.status_code == 201, r.text
    server.wait_job(r.json()["id"])
    return r.json()["id"]


def select_by_keyboard(page, trial_id: str) -> None:
    """Tab stop on the trial's row, Enter: the keyboard's way to choose a trial."""
    page.focus(f"#trials-table tbody tr[data-trial='{trial_id}']")
    page.keyboard.press("Enter")
    page.wait_for_function(f"document.getElementById('selected-body').dataset.trial === '{trial_id}'")
    assert page.evaluate("document.activeElement.dataset.trial") == trial_id  # redrawn rows keep the focus


def screenshot(page, name: str, selectors: list[str] | None = None) -> None:
    """test-artifacts/dashboard-NAME.png, and DIR/dashboard_NAME.png with PROMPTSEARCH_SCREENSHOTS=DIR;
    ``selectors``: only the page's region that holds them."""
    clip = None
    if selectors:
        clip = page.evaluate("""(sels) => {
            const rs = sels.map((s) => document.querySelector(s).getBoundingClientRect());
            const left = Math.min(...rs.map((r) => r.left)) + window.scrollX, right = Math.max(...rs.map((r) => r.right)) + window.scrollX;
            const top = Math.min(...rs.map((r) => r.top)) + window.scrollY, bottom = Math.max(...rs.map((r) => r.bottom)) + window.scrollY;
            return {x: Math.max(0, left - 8), y: Math.max(0, top - 8), width: right - left + 16, height: bottom - top + 16};
        }""", selectors)
    targets = [ARTIFACTS / f"dashboard-{name}.png"]
    if os.environ.get("PROMPTSEARCH_SCREENSHOTS"):
        out = Path(os.environ["PROMPTSEARCH_SCREENSHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        targets.append(out / f"dashboard_{name}.png")
    for path in targets:
        page.screenshot(path=str(path), full_page=True, clip=clip)


def images(page) -> list[dict]:
    page.wait_for_function("[...document.querySelectorAll('#explain-body img')].every((i) => i.complete)")
    return page.evaluate("""[...document.querySelectorAll('#explain-body img')].map((i) => ({
        src: i.getAttribute('src'), w: i.naturalWidth, h: i.naturalHeight, alt: i.alt,
        caption: i.closest('figure').querySelector('figcaption').textContent}))""")


# --- the explanation panel ---------------------------------------------------------------------------------------
@needs_chromium
def test_the_panel_shows_an_exported_trials_maps(server, job, page):
    """Select a completed trial (keyboard), ask for its maps (keyboard): loading, then every map the
    endpoint returns as an image that decoded (naturalWidth > 0), with its caption; today's job draws
    no error bars and no stopped markers."""
    trial = next(t for t in server.trials(job) if t["status"] == "completed" and t["has_weights"])
    tid = trial["trial_id"]
    open_job(page, server, job)
    assert page.get_attribute("#explain-body", "data-state") == "idle"
    assert page.is_disabled("#explain-load")
    select_by_keyboard(page, tid)
    assert page.get_attribute("#explain-body", "data-state") == "ready"
    assert "not loaded yet" in page.inner_text("#explain-body")
    page.select_option("#explain-n", "2")
    page.focus("#explain-load")
    page.keyboard.press("Enter")
    page.wait_for_selector("#explain-body[data-state='loading'][aria-busy='true']", timeout=5_000)  # the build takes seconds
    page.wait_for_selector("#explain-body[data-state='maps'][aria-busy='false']", timeout=240_000)
    api = server.client.get(f"/jobs/{job}/trials/{tid}/explanations", params={"examples": 2}).json()  # cached by now
    assert api["map_names"] == ["gradcam"] and api["pixel_prompt"] and len(api["examples"]) == 2
    shown = images(page)
    assert len(shown) == 1 + len(api["examples"]) * (1 + len(api["map_names"]))  # prompt + (image + maps) per example
    for img in shown:
        assert img["src"].startswith("data:image/png;base64,") and len(img["src"]) > 200, img["src"][:80]
        assert img["w"] > 0 and img["h"] > 0 and img["alt"], img["alt"]
    expected = [api["pixel_prompt"]["png_base64"]] + [png["png_base64"] for e in api["examples"]
                                                      for png in (e["input"], *e["maps"].values())]
    assert [i["src"].removeprefix("data:image/png;base64,") for i in shown] == expected  # the endpoint's PNGs, in order
    assert [i["caption"] for i in shown] == ["learned pixel prompt"] + ["image", "Grad-CAM"] * 2
    captions = page.locator("#explain-body li.explain-example .caption").all_inner_texts()
    for e, text in zip(api["examples"], captions):
        assert text.startswith(f"{e['image']}: true {e['true_label']}, predicted {e['label']}"), text
    assert page.is_disabled("#explain-load")  # shown: nothing more to ask
    traces = page.evaluate("document.getElementById('pareto').data.map((t) => [t.meta || '', 'error_x' in t, 'error_y' in t])")
    assert not any(ex or ey for _, ex, ey in traces) and "stopped" not in {m for m, _, _ in traces}
    assert page.get_attribute("#pareto", "data-stopped") == "0"
    page.locator("#explain-card").scroll_into_view_if_needed()
    screenshot(page, "explanations", [".grid-job", "#explain-card"])


@pytest.fixture(scope="module")
def running_copy(server, job) -> tuple[str, str, str]:
    """SYNTHETIC: the real job's records in a new job folder (format 1: job.json + state.json), its second
    trial marked running. Returns (job id, running trial, completed trial)."""
    from promptsearch.search.records import JobState, TrialRecord
    from promptsearch.service.jobs import job_trials

    record = json.loads((server.workspace / "jobs" / job / "job.json").read_text())
    records = job_trials(server.workspace, job)
    first, second = records[0]["trial_id"], records[1]["trial_id"]
    trials = []
    for r in records:
        r = dict(r)
        if r["trial_id"] == second:
            r.update(status="running", metrics={}, test_metrics={}, weights=None, finished_at=None, wall_time_s=None)
        trials.append(TrialRecord.model_validate(r))
    job_id = f"synthetic-running-{time.strftime('%Y%m%d-%H%M%S')}-0001"
    d = server.workspace / "jobs" / job_id
    (d / "weights").mkdir(parents=True)
    spec = {**record["spec"], "name": "synthetic-running", "description": "SYNTHETIC: real records, one marked running"}
    (d / "job.json").write_text(json.dumps({**record, "job_id": job_id, "spec": spec}))
    state = JobState(job_id=job_id, status="cancelled", message="synthetic job for the panel's states", attempts=1,
                     trials=trials, next_index=len(trials) + 1, finished_at=time.time())
    (d / "state.json").write_text(state.model_dump_json())
    return job_id, second, first


@needs_chromium
def test_the_panel_says_why_a_trial_has_no_maps_and_how_to_export(server, running_copy, page):
    job_id, running, completed = running_copy
    open_job(page, server, job_id)
    select_by_keyboard(page, running)
    body = page.locator("#explain-body")
    assert "only a completed trial" in body.inner_text()
    page.click("#explain-load")
    page.wait_for_selector("#explain-body[data-state='not-exported']", timeout=60_000)
    api = server.client.get(f"/jobs/{job_id}/trials/{running}/explanations")
    assert api.status_code == 409
    assert page.inner_text("#explain-body .why") == api.json()["detail"]  # the endpoint's own reason ...
    assert "running, not completed" in api.json()["detail"]
    assert page.inner_text("#explain-body pre.cli") == \
        f"promptsearch export {job_id} --pick trial={running} --examples 4 --out exported/{running}"  # ... and how to export
    assert body.locator("img").count() == 0
    screenshot(page, "explanations_not_exported", ["#explain-card"])
    # another trial: its own state; a failing server: an error that says what the server said
    page.route(re.compile(r".*/explanations\?.*"), lambda route: route.fulfill(
        status=500, json={"detail": "disk on fire (SYNTHETIC answer)"}))
    select_by_keyboard(page, completed)
    assert page.get_attribute("#explain-body", "data-state") == "ready"
    page.click("#explain-load")
    page.wait_for_selector("#explain-body[data-state='error']")
    assert "500" in body.inner_text() and "disk on fire" in body.inner_text()
    assert page.is_enabled("#explain-load")  # ask again
    page.unroute(re.compile(r".*/explanations\?.*"))
    select_by_keyboard(page, running)  # the refusal is kept while the trial's status holds
    assert page.get_attribute("#explain-body", "data-state") == "not-exported"


# --- job status badges: cancelling and corrupt ------------------------------------------------------------------
@needs_chromium
def test_cancelling_and_corrupt_badges_in_a_real_workspace(server, job, page, data_root, mobilenet_weights):
    from playwright.sync_api import expect

    from promptsearch.jobs import job_from_dict
    from promptsearch.search.state import JobWriter
    from promptsearch.search.workspace import Workspace, job_lock, request_cancel
    from promptsearch.service.jobs import submit

    ws = Workspace(server.workspace)
    spec = dict(space="pixel", dataset="breastmnist", data_root=str(data_root), strategy="random", trials=2,
                backbone={"name": "torchvision:mobilenet_v2", "image_size": 32, "weights": str(mobilenet_weights)},
                budget={"epochs": 1})
    bad = submit(ws, job_from_dict({**spec, "name": "damaged"}))  # real jobs, not run: the server never queued them
    stopping = submit(ws, job_from_dict({**spec, "name": "stopping"}))
    (ws.job_dir(bad) / "events.jsonl").write_bytes(os.urandom(2000))
    store = ws.store(stopping)
    writer = JobWriter(store, store.static())
    writer.open()
    writer.emit("job", set={"status": "running", "attempts": 1, "coordinator": {"cancel_since": time.time() - 1}})
    with job_lock(ws, stopping):  # a coordinator holds the job ...
        request_cancel(ws, stopping)  # ... and has not acted on the cancel yet
        listed = {j["id"]: j for j in server.client.get("/jobs").json()["jobs"]}
        assert listed[bad]["status"] == "corrupt" and listed[stopping]["status"] == "cancelling"
        corrupt = listed[bad]["corrupt"]
        assert corrupt["file"] == "events.jsonl" and corrupt["reason"]
        page.goto(f"{server.url}/#/")
        page.wait_for_function(f"document.querySelectorAll('#jobs-table tbody tr').length === {len(listed)}")
        badge = lambda job_id: page.locator(f"#jobs-table tr[data-job='{job_id}'] .badge")  # noqa: E731
        expect(badge(bad)).to_have_text("corrupt")
        assert "badge corrupt" in badge(bad).get_attribute("class")
        title = badge(bad).get_attribute("title")
        assert title.startswith(f"events.jsonl: {corrupt['reason']}") and corrupt["hint"] in title
        detail = page.locator(f"#jobs-table tr[data-job='{bad}'] .badge-detail")
        assert detail.inner_text() == f"events.jsonl: {corrupt['reason']}"
        assert badge(bad).get_attribute("aria-describedby") == detail.get_attribute("id")
        assert page.is_disabled(f"#jobs-table input.cmp[data-job='{bad}']")  # nothing of it to compare
        expect(badge(stopping)).to_have_text("cancelling")
        assert badge(stopping).get_attribute("title") == listed[stopping]["message"]
        expect(badge(job)).to_have_text("completed")  # the others list as before
        for other, row in listed.items():
            expect(badge(other)).to_have_text(row["status"])
        screenshot(page, "status_badges", ["#jobs-table"])
        # the corrupt job's page: which file, why, what to do; nothing else asked of the server
        page.goto(f"{server.url}/#/jobs/{bad}")
        page.wait_for_selector("#view-job[data-corrupt='1'][data-ready='1']")
        expect(page.locator("#job-corrupt")).to_be_visible()
        assert page.inner_text("#job-corrupt-file") == "events.jsonl"
        assert page.inner_text("#job-corrupt-reason") == corrupt["reason"]
        assert "promptsearch repair" in page.inner_text("#job-corrupt-hint")
        expect(page.locator("#pareto")).to_be_hidden()
        # the cancelling job's page: said so, not cancellable twice, still followed
        page.goto(f"{server.url}/#/jobs/{stopping}")
        page.wait_for_selector("#view-job[data-ready='1']")
        expect(page.locator("#job-title .badge")).to_have_text("cancelling")
        assert page.is_disabled("#cancel-job")
        expect(page.locator("#job-corrupt")).to_be_hidden()
        expect(page.locator("#last-heard")).to_contain_text("live")
        writer.emit("job", set={"status": "cancelled", "finished_at": time.time()})  # the coordinator acts on it
        writer.close()
    expect(page.locator("#job-title .badge")).to_have_text("cancelled", timeout=15_000)  # seen by polling, no reload


# --- early stopping's marks (#15): stopped trials and error bars, on SYNTHETIC answers --------------------------
@needs_chromium
def test_stopped_trials_and_error_bars_when_the_records_carry_them(server, job, page):
    real_trials = [t for t in server.trials(job) if t["status"] == "completed"]
    real_job, pareto = server.job(job), server.client.get(f"/jobs/{job}/pareto").json()
    history = server.client.get(f"/jobs/{job}/curves", params={"trial": real_trials[0]["trial_id"]}).json()["trials"][0]["history"]
    syn = "synthetic-stopping-20260101-000000-0001"
    a, b = real_trials[0], real_trials[-1]
    scaled = lambda t, f: {k: (v * f if k in ("auc", "worst_class_recall") else v) for k, v in t["metrics"].items()}  # noqa: E731
    rows = [
        {**a, "trial_id": "t0001", "number": 1, "on_front": True, "rank": 0, "image_passes": 64,
         "repeats": {"seeds": [0, 1, 2], "trials": ["t0001", "t0006", "t0007"], "n": 3,
                     "mean": {"auc": a["metrics"]["auc"], "worst_class_recall": a["metrics"]["worst_class_recall"]},
                     "sd": {"auc": 0.04, "worst_class_recall": 0.08}}},
        {**b, "trial_id": "t0002", "number": 2, "on_front": False, "rank": 1, "image_passes": 64},
        {**a, "trial_id": "t0003", "number": 3, "status": "stopped", "rung": 1, "epochs": 1, "image_passes": 32,
         "on_front": False, "rank": None, "metrics": scaled(a, 0.8), "has_weights": False},
        {**b, "trial_id": "t0004", "number": 4, "status": "stopped", "rung": 1, "epochs": 1, "image_passes": 32,
         "on_front": False, "rank": None, "metrics": scaled(b, 0.7), "has_weights": False},
        {**b, "trial_id": "t0005", "number": 5, "status": "failed", "reason": "diverged (SYNTHETIC)", "metrics": {},
         "on_front": False, "rank": None, "has_weights": False},
        {**a, "trial_id": "t0006", "number": 6, "repeat_of": "t0001", "on_front": False, "rank": None,
         "metrics": scaled(a, 1.1)},  # one of t0001's seeds: in its mean, not a point of its own
    ]
    answers = {
        f"/jobs/{syn}": {**real_job, "id": syn, "name": "synthetic-stopping", "trials": 5, "done": 5, "failed": 1, "stopped": 2,
                         "message": "SYNTHETIC answers: records with early stopping's fields",
                         "image_passes": {"used": 224, "full_budget": 320, "saved": 0.3},
                         "repeats": {"k": 2, "planned": 1, "done": True, "front_before": ["t0001", "t0002"],
                                     "front_after": ["t0001"], "moved_off": ["t0002"]}},
        f"/jobs/{syn}/trials": {"total": len(rows), "offset": 0, "limit": 10000, "trials": rows},
        f"/jobs/{syn}/pareto": {**pareto, "front": ["t0001"], "knee": "t0001", "trials": [rows[0]]},
    }

    def answer(route):
        url = urlparse(route.request.url)
        if url.path in answers:
            return route.fulfill(json=answers[url.path])
        if url.path == f"/jobs/{syn}/curves":
            by_id = {r["trial_id"]: r for r in rows}
            return route.fulfill(json={"trials": [
                {"trial_id": t, "number": by_id[t]["number"], "status": by_id[t]["status"], "reason": by_id[t].get("reason"),
                 "history": history, "epochs_done": len(history)} for t in parse_qs(url.query)["trial"]]})
        # decisions, importance: the real job's (the same space)
        return route.fulfill(response=route.fetch(url=route.request.url.replace(syn, job)))

    page.route(re.compile(rf".*/jobs/{re.escape(syn)}([/?].*)?$"), answer)
    open_job(page, server, syn)
    traces = page.evaluate("""document.getElementById('pareto').data.map((t) => ({name: t.name, meta: t.meta || '',
        n: (t.x || []).length, ids: t.customdata || [], symbol: t.marker && t.marker.symbol,
        ex: t.error_x || null, ey: t.error_y || null, text: t.text || []}))""")
    by = {t["name"]: t for t in traces}
    front, dominated = by["Pareto front (all objectives)"], by["dominated"]
    stopped = next(t for t in traces if t["meta"] == "stopped")
    assert stopped["ids"] == ["t0003", "t0004"] and stopped["symbol"] == "diamond-open"  # hollow, apart from the front
    assert "stopped early" in stopped["name"] and all("stopped at epoch 1" in s for s in stopped["text"])
    assert "t0005" not in {i for t in traces for i in t["ids"]}  # a failed trial has nothing to draw
    assert "t0006" not in {i for t in traces for i in t["ids"]}  # a re-run seed: inside t0001's bars
    assert page.evaluate("document.getElementById('pareto').layout.yaxis.title.text").startswith("auc")
    assert front["ids"] == ["t0001"] and front["ey"]["array"] == [0.04] and front["ey"]["visible"]
    assert front["ex"] is None  # x is prompt_params: no spread over seeds recorded, no bars
    assert dominated["ey"] is None and dominated["ex"] is None  # no repeats there: drawn as before
    assert "mean \u00b1 sd over 3 seed(s) (0, 1, 2)" in front["text"][0]
    assert page.get_attribute("#pareto", "data-stopped") == "2"
    assert "stopped early" in page.inner_text("#pareto-note") and "sd over seeds" in page.inner_text("#pareto-note")
    # the table: the status with its rung, image passes, the re-run trial's mean +- sd
    row = lambda t: page.locator(f"#trials-table tbody tr[data-trial='{t}']")  # noqa: E731
    assert row("t0003").locator(".badge").inner_text() == "stopped at epoch 1"
    assert "badge stopped" in row("t0003").locator(".badge").get_attribute("class")
    assert row("t0005").locator(".badge").inner_text() == "failed"
    assert "image passes" in page.locator("#trials-table thead").inner_text()
    assert "\u00b1 0.04" in row("t0001").inner_text()
    stats = {d.get_attribute("data-key"): d.inner_text() for d in page.locator("#job-stats div[data-key]").all()}
    assert stats["stopped"].split() == ["2", "stopped", "early"] and stats["image_passes"].startswith("30%")
    assert "1 trial(s) moved off it (t0002)" in page.get_attribute("#job-stats div[data-key='repeats']", "title")
    assert "repeat of t0001" in row("t0006").inner_text()
    # selected: what it was stopped at; its curve: a style of its own
    select_by_keyboard(page, "t0003")
    assert "stopped at epoch 1 (1 epoch(s) trained)" in page.inner_text("#selected-body")
    page.wait_for_selector("#curves-list li[data-trial='t0003'][data-status='stopped']")
    assert "stopped at epoch 1" in page.inner_text("#curves-list li[data-trial='t0003']")
    curve = page.evaluate("document.getElementById('curves-plot').data.map((t) => [t.meta, t.line.dash, t.name])")
    assert curve == [["stopped", "longdash", "t0003 (stopped at epoch 1)"]]
    timeline = page.evaluate("document.getElementById('time-plot').data.map((t) => t.name)")
    assert {"stopped", "failed", "completed"} <= set(timeline)
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "early_stopping_synthetic", [".job-head", ".grid-job"])
