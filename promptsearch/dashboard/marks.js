// promptsearch dashboard: the pure part of the drawing (no DOM, no Plotly calls, no fetch), so that it can
// be tested on its own (`node`, see tests/test_dashboard_marks.py) and app.js stays about the page.
// Loaded by index.html before app.js as the global `PSMarks`; under node, `require("./marks.js")`.
//
// Fields that only some records carry are used only when present, so a job without them draws as before:
//   trial.status "stopped" + trial.rung (epoch it was stopped at) + trial.epochs + trial.image_passes
//     (early stopping at rungs, issue #15): hollow markers, "stopped at epoch N"; trial.ranked_by (the
//     objectives its rung ranked on, under the job's informative_rho): one more hover line;
//   trial.repeats = {seeds: [..], mean: {metric: v}, sd: {metric: v}} (front trials re-run with extra
//     seeds): the point at the mean, with +- sd error bars; trial.repeat_of (one such re-run): folded into
//     its original's mean, never a point of its own;
//   job.stopped, job.image_passes = {used, full_budget, saved}, job.repeats = {k, done, moved_off}: the job's head;
//   job.status "cancelling" (asked, not yet acted on) and "corrupt" (job.corrupt = {file, reason, hint}).
(function (root, factory) {
  if (typeof module === "object" && module.exports) module.exports = factory();
  else root.PSMarks = factory();
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";

  const num = (v) => typeof v === "number" && isFinite(v);

  // --- statuses ----------------------------------------------------------------------------------------
  // What each trial status means, for badges' titles and the plots' legends (one list, every place).
  const TRIAL_STATUS = {
    completed: "trained its full budget",
    running: "training now",
    failed: "raised an error or gave a non-finite result (its reason says which)",
    preempted: "its worker or job stopped before it finished (infrastructure or a cancel): it is re-run",
    stopped: "stopped early at a rung: its metrics are those of that epoch",
  };
  const JOB_STATUS = {
    queued: "waiting for a free slot on the server",
    running: "its coordinator is running trials",
    cancelling: "a cancel was asked; the coordinator has not stopped the trials yet",
    completed: "ran every requested trial",
    failed: "stopped after too many failed trials",
    cancelled: "cancelled by a user; resume continues it",
    interrupted: "its coordinator is gone (crash, kill or server restart); resume continues it",
    corrupt: "its files cannot be read; the job's other files and every other job are untouched",
  };
  const ACTIVE_JOB = new Set(["queued", "running", "cancelling"]);  // still moving: poll it
  const CANCELLABLE_JOB = new Set(["queued", "running"]);

  function trialStatusText(t) {  // what a table row / curve legend says of a trial's status
    if (t.status === "stopped") return num(t.rung) ? `stopped at epoch ${t.rung}` : "stopped early";
    return t.status;
  }

  // A job's status badge: the status word, a class, and a title (the tooltip) that says why; a corrupt job's
  // title names the file and the reason, and `detail` is the short visible line under the badge.
  function jobBadge(job) {
    const status = String(job.status || "unknown");
    let title = JOB_STATUS[status] || status;
    let detail = "";
    if (status === "corrupt") {
      const c = job.corrupt || {};
      const file = c.file && c.file !== "?" ? c.file : "a job file";
      detail = `${file}: ${c.reason || job.message || "cannot be read"}`;
      title = `${detail}` + (c.hint ? `\n${c.hint}` : job.message ? `\n${job.message}` : "");
    } else if (status === "cancelling" && job.message) {
      title = job.message;
    } else if (job.message && (status === "interrupted" || status === "failed")) {
      title = `${title}: ${job.message}`;
    }
    return {status, cls: status.replace(/[^a-z_-]/gi, ""), title, detail};
  }

  // --- the choice of axes ------------------------------------------------------------------------------
  // x: a cost (the first minimised objective that is not the accuracy), y: the accuracy (the first
  // maximised), colour: a third objective if there is one. The job page and the compare page share it.
  function axisDefaults(objectives) {
    const objs = objectives || [];
    const acc = objs.find((o) => o.direction === "max") || objs[0];
    const cost = objs.find((o) => o !== acc && o.direction === "min") || objs.find((o) => o !== acc) || objs[0];
    const third = objs.find((o) => o !== acc && o !== cost);
    return {x: cost && cost.name, y: acc && acc.name, c: third ? third.name : ""};
  }

  // --- points: where a trial is drawn ---------------------------------------------------------------------
  function repeatsOf(t) {
    const r = t && t.repeats;
    return r && typeof r === "object" && r.mean && typeof r.mean === "object" ? r : null;
  }

  // A trial's value of one metric: the mean over its seeds when it was re-run (the front is computed on
  // the means), else its own.
  function value(t, name) {
    const r = repeatsOf(t);
    if (r && num(r.mean[name])) return r.mean[name];
    return t.metrics ? t.metrics[name] : undefined;
  }

  function sdOf(t, name) {
    const r = repeatsOf(t);
    return r && r.sd && num(r.sd[name]) ? r.sd[name] : null;
  }

  // Plotly's error_x / error_y for these points on metric `name`: +- sd where a point has repeats, 0
  // elsewhere; undefined (no bars at all, the trace exactly as before) when no point has repeats.
  function errorBar(points, name, color) {
    const sds = points.map((t) => sdOf(t, name));
    if (!sds.some((s) => s !== null)) return undefined;
    return {type: "data", symmetric: true, array: sds.map((s) => s ?? 0), visible: true,
      thickness: 1.5, width: 4, color: color || "#1b2a3a"};
  }

  // drawn on the front plot: completed, every objective finite; a re-run with another seed is its original's
  function usable(t, objectives) {
    return t.status === "completed" && !t.repeat_of && objectives.every((o) => num(value(t, o.name)));
  }

  // Stopped trials with finite metrics at their rung: drawn apart (hollow); on the front only when the job
  // lets stopped trials on it (the server says so with on_front).
  function stoppedPoints(trials, objectives) {
    return trials.filter((t) => t.status === "stopped" && !t.repeat_of &&
      objectives.every((o) => num(t.metrics && t.metrics[o.name])));
  }

  // The hover lines a trial adds for the optional fields (none for today's records).
  function extraLines(t, fmt) {
    const f = fmt || String;
    const lines = [];
    if (t.status === "stopped") {
      const trained = num(t.epochs) ? t.epochs : t.epochs_done;
      lines.push(`stopped at epoch ${num(t.rung) ? t.rung : "?"}` + (num(trained) ? ` (${trained} epoch(s) trained)` : "") +
        ": its metrics are that epoch's");
      if (Array.isArray(t.ranked_by) && t.ranked_by.length) {  // informative_rho: the rung ranked on these alone
        lines.push(`ranked at its rung on ${t.ranked_by.join(", ")} only (the objectives that epoch foretold)`);
      }
    }
    if (t.repeat_of) lines.push(`a re-run of ${t.repeat_of} with another seed: counted in its mean \u00b1 sd`);
    if (num(t.image_passes)) lines.push(`training image-passes: ${f(t.image_passes)}`);
    const r = repeatsOf(t);
    if (r) {
      const n = Array.isArray(r.seeds) ? r.seeds.length : r.n;
      lines.push(`mean \u00b1 sd over ${n ?? "?"} seed(s)` + (Array.isArray(r.seeds) ? ` (${r.seeds.join(", ")})` : ""));
    }
    return lines;
  }

  // A metric as "mean +- sd" when the trial was re-run, else its value.
  function metricText(t, name, fmt) {
    const f = fmt || String;
    const sd = sdOf(t, name);
    return sd === null ? f(value(t, name)) : `${f(value(t, name))} \u00b1 ${f(sd)}`;
  }

  // The job head's extra figures, each only when the job records it: trials stopped early, the image-passes
  // early stopping saved, the front's re-evaluation with extra seeds. [{key, value, label, title}]
  function jobExtras(job) {
    const out = [];
    if (num(job.stopped) && job.stopped > 0) {
      out.push({key: "stopped", value: String(job.stopped), label: "stopped early", title: TRIAL_STATUS.stopped});
    }
    const ip = job.image_passes;
    if (ip && typeof ip === "object" && num(ip.full_budget) && ip.full_budget > 0 && num(ip.saved) && ip.saved > 0) {
      out.push({key: "image_passes", value: `${Math.round(100 * ip.saved)}%`, label: "image passes saved",
        title: `${ip.used} training image-passes, against ${ip.full_budget} at every trial's full budget`});
    }
    const r = job.repeats;
    if (r && typeof r === "object" && num(r.k) && r.k > 0) {
      const moved = Array.isArray(r.moved_off) ? r.moved_off.length : num(r.moved_off) ? r.moved_off : null;
      out.push({key: "repeats", value: `+${r.k}`, label: r.done ? "seeds per front trial" : "seeds per front trial (running)",
        title: r.done ? `the front re-run with ${r.k} extra seed(s)` + (moved !== null ? `: ${moved} trial(s) moved off it` +
          (Array.isArray(r.moved_off) && moved ? ` (${r.moved_off.join(", ")})` : "") : "")
          : `re-running ${r.planned ?? "the"} front trial(s) with ${r.k} extra seed(s)`});
    }
    return out;
  }

  // --- learning curves ------------------------------------------------------------------------------------
  const CURVE_DASH = {completed: "solid", running: "dot", failed: "dash", preempted: "dashdot", stopped: "longdash"};
  const CURVE_END = {completed: "circle", running: "circle-open", failed: "x", preempted: "square-open", stopped: "diamond-open"};
  const STATUS_COLOR = {completed: "#1f77b4", failed: "#d62728", preempted: "#ff7f0e", running: "#2ca02c", stopped: "#9467bd"};

  // --- explanation maps -------------------------------------------------------------------------------------
  function mapLabel(name) {  // the endpoint's map names, as a clinician reads them
    if (name === "gradcam") return "Grad-CAM";
    const m = /^attention_(cls|prompts)_block(\d+)$/.exec(name);
    if (m) return `attention of the ${m[1] === "cls" ? "CLS token" : "prompt tokens"}, block ${m[2]}`;
    return String(name).replace(/_/g, " ");
  }

  function mapOrder(names) {  // Grad-CAM first, then attention by block, CLS before prompts
    const key = (n) => {
      if (n === "gradcam") return [0, 0, 0];
      const m = /^attention_(cls|prompts)_block(\d+)$/.exec(n);
      return m ? [1, Number(m[2]), m[1] === "cls" ? 0 : 1] : [2, 0, 0];
    };
    return [...names].sort((a, b) => {
      const ka = key(a), kb = key(b);
      return ka[0] - kb[0] || ka[1] - kb[1] || ka[2] - kb[2] || String(a).localeCompare(String(b));
    });
  }

  // What the panel says for an answer that is not 200: `kind` picks the panel's state.
  //   409: the trial cannot be exported (not completed, or no saved weights): say why and how;
  //   404: no such trial (any more); 422: the export itself failed; 0: no answer; else: an error.
  function explainProblem(err, jobId, trialId) {
    const status = err && typeof err.status === "number" ? err.status : -1;
    const reason = (err && err.message) || "no reason given";
    const cli = `promptsearch export ${jobId} --pick trial=${trialId} --examples 4 --out exported/${trialId}`;
    if (status === 409) {
      return {kind: "not-exported", title: "Not exported yet: no maps for this trial", reason, cli,
        how: "Maps come from the trial's export bundle, and only a completed trial with saved prompt weights " +
             "can be exported: wait for a running trial to finish, resume a job whose trial was preempted, " +
             "or pick a completed trial. Once it can be exported, Show maps builds its bundle here; " +
             "from a shell, this writes the same maps into the bundle's examples/ folder:"};
    }
    if (status === 404) return {kind: "error", title: "No such trial", reason};
    if (status === 422) return {kind: "error", title: "The export failed", reason};
    if (status === 0) return {kind: "error", title: "No answer from the server", reason, retry: true};
    return {kind: "error", title: `The server answered ${status > 0 ? status : "with an error"}`, reason, retry: true};
  }

  // "val12: true malignant, predicted benign (p 0.73)"
  function exampleCaption(e, fmt) {
    const f = fmt || String;
    const probs = Array.isArray(e.probabilities) ? e.probabilities : [];
    const p = num(e.prediction) && num(probs[e.prediction]) ? ` (p ${f(probs[e.prediction])})` : "";
    const truth = Array.isArray(e.true_label) ? e.true_label.join(", ") || "none" : e.true_label;
    const predicted = e.label ?? (num(e.prediction) ? `class ${e.prediction}` : "?");
    const right = typeof truth === "string" && e.label !== undefined ? (truth === e.label ? ": right" : ": wrong") : "";
    return `${e.image ?? "image"}: true ${truth ?? "?"}, predicted ${predicted}${p}${right}`;
  }

  const pngSrc = (png) => (png && png.png_base64 ? "data:image/png;base64," + png.png_base64 : "");

  return {TRIAL_STATUS, JOB_STATUS, ACTIVE_JOB, CANCELLABLE_JOB, CURVE_DASH, CURVE_END, STATUS_COLOR,
    trialStatusText, jobBadge, jobExtras, axisDefaults, value, sdOf, errorBar, usable, stoppedPoints, extraLines, metricText,
    mapLabel, mapOrder, explainProblem, exampleCaption, pngSrc};
});
