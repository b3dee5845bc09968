"""The dashboard's drawing logic alone (promptsearch/dashboard/marks.js, run by node): today's records
draw exactly as before; the fields early stopping (#15) adds — ``status: "stopped"`` with ``rung``,
``epochs``, ``image_passes``, and ``repeats`` on front trials — give hollow stopped points and ±sd error
bars only where present; job badges for ``cancelling`` and ``corrupt``; the explanation panel's states.

    python -m pytest -q tests/test_dashboard_marks.py

The records here are made up for the purpose (the shapes of the API's trial views); the browser test
(tests/test_dashboard_explain.py) draws the same logic on a page.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from promptsearch.objectives import DEFAULT_OBJECTIVES

MARKS = Path(__file__).resolve().parent.parent / "promptsearch" / "dashboard" / "marks.js"
NODE = shutil.which("node") or shutil.which("nodejs")
OBJECTIVES = [o.model_dump(mode="json") for o in DEFAULT_OBJECTIVES]

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed (apt-get install nodejs)")


def js(expr: str, **values):
    """The JSON value of a JS expression over ``M`` (marks.js) and the named Python values."""
    bind = "".join(f"const {k} = {json.dumps(v)};\n" for k, v in values.items())
    script = (f"const M = require({json.dumps(str(MARKS))});\n{bind}"
              f"process.stdout.write(JSON.stringify(({expr}), (k, v) => v === undefined ? '<undefined>' : v));")
    out = subprocess.run([NODE, "-e", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def trial(tid: str, status: str = "completed", **kw) -> dict:
    metrics = {"auc": 0.7, "worst_class_recall": 0.5, "prompt_params": 1000.0, "latency_ms": 3.0} if status in (
        "completed", "stopped") else {}
    return {"trial_id": tid, "number": int(tid[1:]), "status": status, "metrics": metrics, "on_front": False, **kw}


def test_todays_records_draw_as_before():
    """No stopped trial, no repeats: no error bars at all (not even empty ones), values are the metrics."""
    rows = [trial("t0001", on_front=True), trial("t0002"), trial("t0003", "failed"), trial("t0004", "preempted"),
            trial("t0005", "running")]
    got = js("""({
        bars: O.map((o) => M.errorBar(rows, o.name)),
        values: rows.map((t) => M.value(t, "auc")),
        usable: rows.map((t) => M.usable(t, O)),
        stopped: M.stoppedPoints(rows, O).length,
        text: rows.map(M.trialStatusText),
        extra: rows.map((t) => M.extraLines(t).length),
        shown: M.metricText(rows[0], "auc"),
    })""", rows=rows, O=OBJECTIVES)
    assert got["bars"] == ["<undefined>"] * 4  # the trace gets no error_x / error_y key
    assert got["values"] == [0.7, 0.7, "<undefined>", "<undefined>", "<undefined>"]
    assert got["usable"] == [True, True, False, False, False]
    assert got["stopped"] == 0 and got["extra"] == [0] * 5
    assert got["text"] == ["completed", "completed", "failed", "preempted", "running"]
    assert got["shown"] == "0.7"


def test_repeats_draw_the_mean_with_sd_bars_where_present():
    repeated = trial("t0001", on_front=True, repeats={"seeds": [0, 1, 2], "trials": ["t0001", "t0007", "t0008"], "n": 3,
                                                      "mean": {"auc": 0.74, "worst_class_recall": 0.55},
                                                      "sd": {"auc": 0.05, "worst_class_recall": 0.1}})
    plain = trial("t0002", on_front=True)
    rerun = trial("t0007", repeat_of="t0001")  # one of t0001's seeds: in its mean, never a point of its own
    got = js("""({
        rerun: [M.usable(rerun, O), M.stoppedPoints([{...rerun, status: "stopped"}], O).length, M.extraLines(rerun)],
        auc: M.errorBar(front, "auc", "#123"),
        params: M.errorBar(front, "prompt_params") ?? null,
        values: front.map((t) => [M.value(t, "auc"), M.value(t, "prompt_params")]),
        text: front.map((t) => M.metricText(t, "auc", (v) => v.toFixed(2))),
        extra: M.extraLines(front[0]),
        usable: front.map((t) => M.usable(t, O)),
    })""", front=[repeated, plain], rerun=rerun, O=OBJECTIVES)
    assert got["rerun"] == [False, 0, ["a re-run of t0001 with another seed: counted in its mean \u00b1 sd"]]
    assert got["auc"] == {"type": "data", "symmetric": True, "array": [0.05, 0], "visible": True,
                          "thickness": 1.5, "width": 4, "color": "#123"}
    assert got["params"] is None  # no seed spread recorded for prompt_params: no bars on that axis
    assert got["values"] == [[0.74, 1000.0], [0.7, 1000.0]]  # the mean where re-run (the front is computed on it)
    assert got["text"] == ["0.74 \u00b1 0.05", "0.70"]
    assert got["extra"] == ["mean \u00b1 sd over 3 seed(s) (0, 1, 2)"]
    assert got["usable"] == [True, True]


def test_stopped_trials_are_apart_from_failed_and_from_the_front():
    rows = [trial("t0001", on_front=True), trial("t0002", "stopped", rung=1, epochs=1, image_passes=96),
            trial("t0003", "stopped", rung=3, epochs=3, image_passes=288), trial("t0004", "failed"),
            {**trial("t0005", "stopped", rung=1), "metrics": {"auc": 0.6}}, trial("t0006", "stopped"),
            trial("t0008", "stopped", rung=2, epochs_done=2),  # the API's epochs_done when epochs is not passed
            trial("t0009", "stopped", rung=1, epochs=1, ranked_by=["auc"])]  # under informative_rho
    got = js("""({
        stopped: M.stoppedPoints(rows, O).map((t) => t.trial_id),
        usable: rows.filter((t) => M.usable(t, O)).map((t) => t.trial_id),
        text: rows.map(M.trialStatusText),
        extra: M.extraLines(rows[2], String),
        trained: M.extraLines(rows[6])[0],
        ranked: M.extraLines(rows[7]),
        dash: [M.CURVE_DASH.stopped, M.CURVE_DASH.failed, M.CURVE_DASH.preempted],
        end: [M.CURVE_END.stopped, M.CURVE_END.failed],
        color: [M.STATUS_COLOR.stopped, M.STATUS_COLOR.failed],
        legend: M.TRIAL_STATUS.stopped,
    })""", rows=rows, O=OBJECTIVES)
    assert got["stopped"] == ["t0002", "t0003", "t0006", "t0008", "t0009"]  # t0005 lacks objectives at its rung: nothing to draw
    assert got["usable"] == ["t0001"]  # stopped trials never join the front's points
    assert got["text"] == ["completed", "stopped at epoch 1", "stopped at epoch 3", "failed", "stopped at epoch 1",
                           "stopped early", "stopped at epoch 2", "stopped at epoch 1"]
    assert got["extra"] == ["stopped at epoch 3 (3 epoch(s) trained): its metrics are that epoch's",
                            "training image-passes: 288"]
    assert got["trained"].startswith("stopped at epoch 2 (2 epoch(s) trained)")
    assert got["ranked"][1] == "ranked at its rung on auc only (the objectives that epoch foretold)"
    assert not any("ranked at" in line for line in got["extra"])  # no ranked_by (the rule off): no such line
    assert len(set(got["dash"])) == 3 and len(set(got["end"])) == 2 and len(set(got["color"])) == 2
    assert "rung" in got["legend"]


def test_job_badges_cancelling_and_corrupt():
    corrupt = {"id": "x-20260101-000000-abcd", "status": "corrupt", "message": "events.jsonl: bad; run repair",
               "corrupt": {"file": "events.jsonl", "reason": "line 3: not JSON",
                           "hint": "promptsearch repair x-20260101-000000-abcd restores it from events.bak.jsonl"}}
    cancelling = {"id": "y", "status": "cancelling", "message": "cancel requested: its coordinator is stopping the trials"}
    odd = {"id": "z", "status": "corrupt", "corrupt": {"file": "?", "reason": "KeyError: 'status'"}}
    got = js("""({
        badges: [corrupt, cancelling, odd, {id: "w", status: "completed"}, {id: "v", status: "<b>"}].map(M.jobBadge),
        active: ["queued", "running", "cancelling", "completed", "corrupt"].map((s) => M.ACTIVE_JOB.has(s)),
        cancellable: ["queued", "running", "cancelling"].map((s) => M.CANCELLABLE_JOB.has(s)),
    })""", corrupt=corrupt, cancelling=cancelling, odd=odd)
    c, k, o, done, weird = got["badges"]
    assert c["cls"] == "corrupt" and c["detail"] == "events.jsonl: line 3: not JSON"
    assert c["title"].startswith("events.jsonl: line 3: not JSON") and "promptsearch repair" in c["title"]
    assert k["cls"] == "cancelling" and k["title"] == cancelling["message"] and k["detail"] == ""
    assert o["detail"] == "a job file: KeyError: 'status'"
    assert done["title"] and done["detail"] == ""
    assert weird["cls"] == "b"  # a status is never markup in a class name
    assert got["active"] == [True, True, True, False, False]  # a cancelling job is still polled
    assert got["cancellable"] == [True, True, False]  # ... but not cancelled twice


def test_axis_defaults_one_rule_for_both_plots():
    got = js("[M.axisDefaults(O), M.axisDefaults([O[0]]), M.axisDefaults([O[2], O[3]]), M.axisDefaults([])]", O=OBJECTIVES)
    assert got[0] == {"x": "prompt_params", "y": "auc", "c": "worst_class_recall"}
    assert got[1] == {"x": "auc", "y": "auc", "c": ""}
    assert got[2] == {"x": "latency_ms", "y": "prompt_params", "c": ""}
    assert got[3] == {"x": "<undefined>", "y": "<undefined>", "c": ""}


def test_explanation_states_and_names():
    got = js("""({
        problems: [409, 404, 422, 0, 500].map((status) => M.explainProblem({status, message: "why " + status}, "job-1", "t0003")),
        order: M.mapOrder(["attention_prompts_block11", "gradcam", "zeta", "attention_cls_block11", "attention_cls_block0"]),
        labels: ["gradcam", "attention_cls_block0", "attention_prompts_block11", "some_map"].map(M.mapLabel),
        caption: M.exampleCaption({image: "val3", label: "benign", true_label: "malignant", prediction: 1,
                                   probabilities: [0.25, 0.75]}, String),
        multi: M.exampleCaption({image: "val0", true_label: ["a", "b"], prediction: 0, probabilities: [0.9]}, String),
        src: [M.pngSrc({png_base64: "iVBOR"}), M.pngSrc(null)],
    })""")
    p409, p404, p422, p0, p500 = got["problems"]
    assert p409["kind"] == "not-exported" and p409["reason"] == "why 409"
    assert p409["cli"] == "promptsearch export job-1 --pick trial=t0003 --examples 4 --out exported/t0003"
    assert "completed trial with saved prompt weights" in p409["how"]
    assert [p["kind"] for p in (p404, p422, p0, p500)] == ["error"] * 4
    assert p0["retry"] and p500["retry"] and "500" in p500["title"]
    assert got["order"] == ["gradcam", "attention_cls_block0", "attention_cls_block11", "attention_prompts_block11", "zeta"]
    assert got["labels"] == ["Grad-CAM", "attention of the CLS token, block 0", "attention of the prompt tokens, block 11",
                             "some map"]
    assert got["caption"] == "val3: true malignant, predicted benign (p 0.75): wrong"
    assert got["multi"] == "val0: true a, b, predicted class 0 (p 0.9)"
    assert got["src"] == ["data:image/png;base64,iVBOR", ""]


def test_job_head_figures_only_when_recorded():
    today = {"id": "a", "status": "completed", "done": 4, "trials": 4, "stopped": 0,
             "image_passes": {"used": 384, "full_budget": 384, "saved": 0.0}, "repeats": None}
    later = {"id": "b", "status": "completed", "stopped": 3, "image_passes": {"used": 960, "full_budget": 1600, "saved": 0.4},
             "repeats": {"k": 2, "planned": 4, "done": True, "front_before": ["t1", "t2"], "front_after": ["t1"],
                         "moved_off": ["t2"]}}
    running = {"id": "c", "status": "running", "repeats": {"k": 2, "planned": 3, "done": False, "moved_off": None}}
    got = js("[today, {id: 'd', status: 'queued'}, later, running].map(M.jobExtras)", today=today, later=later, running=running)
    assert got[0] == [] and got[1] == []  # nothing stopped, nothing saved, no re-runs: the head as before
    stopped, passes, repeats = got[2]
    assert (stopped["value"], stopped["label"]) == ("3", "stopped early")
    assert (passes["value"], passes["label"]) == ("40%", "image passes saved") and "960" in passes["title"]
    assert repeats["value"] == "+2" and repeats["title"] == "the front re-run with 2 extra seed(s): 1 trial(s) moved off it (t2)"
    assert got[3][0]["label"].endswith("(running)") and "3 front trial(s)" in got[3][0]["title"]
