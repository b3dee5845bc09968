// promptsearch dashboard: a job list with a submit form; a job page for choosing a trial (Pareto front,
// constraint box, parallel coordinates with brushing, decision importance, component frequency, learning
// curves, trial table with CSV/JSON download); a compare page for jobs on the same space.
// Plain JS + Plotly (served by the API from the installed plotly package); talks only to the REST API.
"use strict";

const TOKEN_KEY = "promptsearch.token";
const POLL_MS = 2000;
const ACTIVE = new Set(["queued", "running"]);
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#d62728"];
const INACTIVE = "n/a";  // a decision a trial does not use (its `when` is not met), as the API names it
const $ = (sel) => document.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));

// ---------------------------------------------------------------------------------------------
// API access, with the bearer token asked once and kept in localStorage
let tokenPrompt = null;
const heard = {at: null, failedSince: null, live: false};  // when the server last answered; whether we poll

function askToken(message) {
  if (tokenPrompt) return tokenPrompt;
  const dlg = $("#token-dialog");
  $("#token-error").textContent = message || "";
  $("#token-input").value = "";
  tokenPrompt = new Promise((resolve) => {
    $("#token-form").onsubmit = (ev) => {
      ev.preventDefault();
      const t = $("#token-input").value.trim();
      if (!t) return;
      localStorage.setItem(TOKEN_KEY, t);
      dlg.close();
      tokenPrompt = null;
      resolve(t);
    };
  });
  if (!dlg.open) dlg.showModal();
  return tokenPrompt;
}

async function api(path, opts = {}, retried = false) {
  const headers = Object.assign({}, opts.headers || {});
  const token = localStorage.getItem(TOKEN_KEY);
  if (token) headers["Authorization"] = "Bearer " + token;
  let res;
  try {
    res = await fetch(path, Object.assign({}, opts, {headers}));
  } catch (e) {  // no answer at all: the live indicator says since when
    heard.failedSince = heard.failedSince || Date.now();
    renderHeard();
    const err = new Error("no answer from the server (" + e.message + ")");
    err.status = 0;
    throw err;
  }
  heard.at = Date.now();
  heard.failedSince = null;
  if (res.status === 401 && !retried) {
    if (token) localStorage.removeItem(TOKEN_KEY);
    await askToken(token ? "That token was not accepted; try again." : "");
    updateTokenButton();
    return api(path, opts, true);
  }
  if (!res.ok) {
    let detail = res.statusText;
    try {
      const body = await res.json();
      detail = typeof body.detail === "string" ? body.detail
        : Array.isArray(body.detail) ? body.detail.map((d) => (d.loc || []).slice(1).join(".") + ": " + d.msg).join("; ")
        : JSON.stringify(body.detail ?? body);
    } catch (e) { /* not JSON */ }
    const err = new Error(detail);
    err.status = res.status;
    throw err;
  }
  return res;
}
const getJSON = async (path) => (await api(path)).json();

function renderHeard() {
  const el = $("#last-heard");
  if (!heard.at && !heard.failedSince) { el.textContent = ""; return; }
  const ago = (t) => {
    const s = Math.max(0, Math.round((Date.now() - t) / 1000));
    return s < 60 ? `${s} s` : s < 3600 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${Math.floor(s / 3600)} h`;
  };
  if (heard.failedSince) {
    el.className = "small stale";
    el.textContent = `no answer from the server since ${new Date(heard.failedSince).toLocaleTimeString()}` +
      (heard.at ? ` \u00b7 last heard ${ago(heard.at)} ago` : "");
  } else {
    el.className = "small";
    el.textContent = `last heard from the server ${ago(heard.at)} ago` + (heard.live ? " \u00b7 live" : " \u00b7 not polling (nothing running)");
  }
  el.dataset.at = String(heard.at || "");
  el.title = heard.at ? new Date(heard.at).toLocaleString() : "";
}

function flash(message, kind = "info") {
  const el = $("#flash");
  el.className = kind;
  el.innerHTML = message;
  if (kind !== "error") setTimeout(() => { if (el.innerHTML === message) el.innerHTML = ""; }, 12000);
}

function updateTokenButton() {
  const b = $("#forget-token");
  b.hidden = !localStorage.getItem(TOKEN_KEY);
  b.onclick = () => { localStorage.removeItem(TOKEN_KEY); b.hidden = true; flash("Token forgotten."); };
}

async function download(path, fallbackName) {  // through api(): the token goes with it
  const res = await api(path);
  const blob = await res.blob();
  const cd = res.headers.get("Content-Disposition") || "";
  const m = cd.match(/filename="?([^";]+)"?/);
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = m ? m[1] : fallbackName;
  document.body.appendChild(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  return {name: a.download, size: blob.size, res};
}

// every plot: Plotly's own modebar downloads it as PNG (camera) or SVG (disk), named after the job and view
function plotConfig(what) {
  const filename = `${(state.jobId || "promptsearch").slice(0, 80)}-${what}`;
  return {displaylogo: false, responsive: true, toImageButtonOptions: {format: "png", filename, scale: 2},
    modeBarButtonsToAdd: [{name: "download-svg", title: "Download plot as an SVG", icon: Plotly.Icons.disk,
      click: (gd) => Plotly.downloadImage(gd, {format: "svg", filename})}]};
}

// ---------------------------------------------------------------------------------------------
// formatting
function fmt(v) {
  if (v === null || v === undefined || v === "") return "";
  if (typeof v !== "number") return String(v);
  if (!isFinite(v)) return String(v);
  if (Number.isInteger(v)) return v.toLocaleString("en");
  return Math.abs(v) >= 1000 ? v.toFixed(0) : v.toPrecision(4);
}
const arrow = (o) => (o.direction === "max" ? "\u2191" : "\u2193");
function archSummary(a) {
  if (!a) return "";
  const comps = a.components ? Object.values(a.components).flat() : [];
  const parts = [a.module, a.pixel_prompt, a.frame_width ? "w" + a.frame_width : null, a.tokens ? a.tokens + " tok" : null,
    a.depth, a.placement, a.fusion, comps.length ? comps.length + " comp" : null].filter((x) => x !== undefined && x !== null);
  return parts.join(" \u00b7 ");
}
function badge(status) { return `<span class="badge ${esc(status)}">${esc(status)}</span>`; }
const statusWord = {failed: "failed", preempted: "stopped", running: "running", completed: "completed"};

// ---------------------------------------------------------------------------------------------
// routing
let timer = null;
let meta = null;

function route(ev) {
  clearTimeout(timer);
  heard.live = false;
  if (ev && $("#flash").className !== "info") $("#flash").innerHTML = "";  // errors belong to the page they came from
  const m = location.hash.match(/^#\/jobs\/([A-Za-z0-9_.\-]+)$/);
  const c = location.hash.match(/^#\/compare\/?([A-Za-z0-9_.\-,]*)$/);
  $("#view-jobs").hidden = !!(m || c);
  $("#view-job").hidden = !m;
  $("#view-compare").hidden = !c;
  if (m) showJob(m[1]);
  else if (c) showCompare(c[1] ? c[1].split(",").filter(Boolean) : []);
  else showJobs();
}

// ---------------------------------------------------------------------------------------------
// job list + submit form
async function loadMeta() {
  if (meta) return meta;
  meta = await getJSON("/meta");
  const form = $("#submit-form");
  form.space.innerHTML = meta.spaces.map((s) => `<option${s === meta.defaults.space ? " selected" : ""}>${esc(s)}</option>`).join("");
  form.strategy.innerHTML = meta.strategies.map((s) => `<option${s === meta.defaults.strategy ? " selected" : ""}>${esc(s)}</option>`).join("");
  $("#datasets").innerHTML = meta.datasets.map((d) => `<option value="${esc(d)}">`).join("");
  const d = meta.defaults;
  if (d.dataset) form.dataset.value = d.dataset;
  if (d.trials) form.trials.value = d.trials;
  if (d.budget && d.budget.epochs) form.epochs.value = d.budget.epochs;
  if (d.budget && d.budget.max_train_samples) form.max_train_samples.value = d.budget.max_train_samples;
  $("#defaults-hint").textContent = meta.defaults_source
    ? `Fields not set here come from the server's job defaults (${meta.defaults_source}).` : "";
  return meta;
}

function formJob(form) {
  const job = {space: form.space.value, dataset: form.dataset.value.trim(), strategy: form.strategy.value,
    trials: Number(form.trials.value), budget: {epochs: Number(form.epochs.value)}};
  if (form.name.value.trim()) job.name = form.name.value.trim();
  if (form.concurrency.value) job.concurrency = Number(form.concurrency.value);
  if (form.batch_size.value) job.budget.batch_size = Number(form.batch_size.value);
  if (form.max_train_samples.value) job.budget.max_train_samples = Number(form.max_train_samples.value);
  const extra = form.extra.value.trim();
  if (extra) {
    let more;
    try { more = JSON.parse(extra); } catch (e) { throw new Error("More job fields: not valid JSON (" + e.message + ")"); }
    for (const [k, v] of Object.entries(more)) {
      job[k] = (k === "budget" && typeof v === "object") ? Object.assign(job.budget, v) : v;
    }
  }
  return job;
}

async function submitJob(ev) {
  ev.preventDefault();
  const form = ev.target;
  const button = $("#submit-job");
  button.disabled = true;
  try {
    const job = formJob(form);
    const res = await api("/jobs", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(job)});
    const body = await res.json();
    flash(`Job <a href="#/jobs/${esc(body.id)}">${esc(body.id)}</a> submitted.`);
    location.hash = "#/jobs/" + body.id;
  } catch (e) {
    flash("Could not submit: " + esc(e.message), "error");
  } finally {
    button.disabled = false;
  }
}

function bestText(job) {
  const best = job.best || {};
  return Object.entries(best).map(([k, v]) => `${esc(k)} ${fmt(v)}`).join(", ");
}

const compareTicked = new Set();  // job ids ticked in the list, kept across its refreshes

async function showJobs() {
  try {
    await loadMeta();
    const jobs = (await getJSON("/jobs")).jobs.reverse();  // newest first
    const body = $("#jobs-table tbody");
    body.innerHTML = jobs.map((j) => {
      return `<tr data-job="${esc(j.id)}">
        <td><input type="checkbox" class="cmp" data-job="${esc(j.id)}"${compareTicked.has(j.id) ? " checked" : ""} aria-label="compare ${esc(j.id)}"></td>
        <td><a href="#/jobs/${esc(j.id)}">${esc(j.name || j.id)}</a><div class="muted small">${esc(j.id)}</div></td>
        <td>${badge(j.status)}</td>
        <td><progress max="${j.trials}" value="${j.done}"></progress> <span class="small">${j.done}/${j.trials}${j.failed ? `, ${j.failed} failed` : ""}${j.running ? `, ${j.running} running` : ""}</span></td>
        <td>${esc(j.space)} / ${esc(j.dataset)}</td><td>${esc(j.strategy)}</td>
        <td>${fmt(j.hypervolume)}</td><td class="small">${bestText(j)}</td></tr>`;
    }).join("");
    body.onchange = (ev) => {
      const box = ev.target.closest("input.cmp");
      if (!box) return;
      if (box.checked) compareTicked.add(box.dataset.job); else compareTicked.delete(box.dataset.job);
      $("#compare-selected").disabled = compareTicked.size < 2;
    };
    $("#compare-selected").disabled = compareTicked.size < 2;
    $("#jobs-empty").hidden = jobs.length > 0;
    $("#jobs-updated").textContent = "updated " + new Date().toLocaleTimeString();
    heard.live = true;
  } catch (e) {
    flash("Could not load jobs: " + esc(e.message), "error");
  }
  if (location.hash === "" || location.hash === "#/" || location.hash === "#") timer = setTimeout(showJobs, POLL_MS);
}

// ---------------------------------------------------------------------------------------------
// one job
const state = {jobId: null, job: null, trials: [], pareto: null, selected: null, sort: {key: "number", dir: 1}, sig: "",
  decisions: null, importance: null, importanceKey: "", pinned: new Set(), curves: [], curvesKey: "",
  brush: {}, brushSet: null, where: "", whereSet: null, revealTest: false, heavyAt: 0};

function resetJobState(id) {
  Object.assign(state, {jobId: id, job: null, trials: [], pareto: null, selected: null, sig: "",
    decisions: null, importance: null, importanceKey: "", pinned: new Set(), curves: [], curvesKey: "",
    brush: {}, brushSet: null, where: "", whereSet: null, heavyAt: 0, heavyAll: false});
  clearTimeout(heavyTimer);
  $("#view-job").dataset.complete = "";
  ["pareto", "hv-plot", "time-plot", "parcoords", "curves-plot", "importance-plot", "components-plot"].forEach((p) => Plotly.purge(p));
  $("#axis-x").innerHTML = "";
  $("#curve-metric").innerHTML = "";
  $("#where").value = "";
  $("#where-note").textContent = "";
  $("#where-error").textContent = "";
  $("#view-job").dataset.ready = "";
  $("#importance-plot").dataset.ready = "";
  $("#importance-table tbody").innerHTML = "";
}

async function showJob(id) {
  if (state.jobId !== id) resetJobState(id);
  try {
    const [job, page, pareto] = await Promise.all([
      getJSON(`/jobs/${id}`), getJSON(`/jobs/${id}/trials?limit=10000`), getJSON(`/jobs/${id}/pareto`)]);
    if (state.jobId !== id) return;  // the user moved on while we waited
    const sig = JSON.stringify([job.status, job.done, job.failed, job.running, page.total, pareto.front, page.trials.map((t) => t.status)]);
    state.job = job;
    renderJobHead(job);
    state.trials = page.trials;
    if (sig !== state.sig) {
      state.sig = sig;
      state.pareto = pareto;
      state.decisions = await getJSON(`/jobs/${id}/decisions`);  // component counts move with the front
      if (state.where) await applyWhere(state.where, true);  // new trials: ask the server again
      setupAxes(job);
      recomputeBrush();
      renderPareto();
      renderHypervolume();
      renderTable();
      renderSelected();
      renderHeavy();  // the timeline, parallel coordinates, components and importance: after the front and table
    } else if (ACTIVE.has(job.status)) {
      renderTable();  // epochs move on: refresh what shows progress
      renderHeavy(true);
    }
    await loadCurves();  // refetched only when a shown trial's status or epoch count moved
    if (!$("#view-job").dataset.ready) $("#view-job").dataset.readyMs = String(Math.round(performance.now()));
    $("#view-job").dataset.ready = "1";
    heard.live = ACTIVE.has(job.status);
    renderHeard();
    if (ACTIVE.has(job.status) && location.hash === "#/jobs/" + id) timer = setTimeout(() => showJob(id), POLL_MS);
  } catch (e) {
    flash(`Job ${esc(id)}: ${esc(e.message)}`, "error");
    if (e.status !== 404 && location.hash === "#/jobs/" + id) timer = setTimeout(() => showJob(id), POLL_MS * 2);
  }
}

function renderJobHead(job) {
  $("#job-title").innerHTML = `${esc(job.name || job.id)} ${badge(job.status)}`;
  $("#job-meta").textContent = `${job.id} \u00b7 space ${job.space} \u00b7 ${job.dataset} \u00b7 strategy ${job.strategy}` +
    (job.message ? ` \u00b7 ${job.message}` : "");
  $("#job-stats").innerHTML = `
    <div><b>${job.done}<small>/${job.trials}</small></b><span>finished</span></div>
    <div><b>${job.running}</b><span>running</span></div>
    <div><b>${job.failed}</b><span>failed</span></div>
    <div><b>${fmt(job.hypervolume)}</b><span>hypervolume</span></div>`;
  $("#cancel-job").disabled = !ACTIVE.has(job.status);
  $("#export-knee").disabled = !(job.completed > 0);
  $("#resume-job").disabled = !["failed", "cancelled", "interrupted"].includes(job.status);
  $("#compare-link").href = `#/compare/${job.id}`;
}

function metricNames() {
  const names = new Set();
  state.trials.forEach((t) => Object.keys(t.metrics || {}).forEach((k) => names.add(k)));
  return [...names];
}

function setupAxes(job) {
  const objs = job.objectives;
  const x = $("#axis-x"), y = $("#axis-y"), c = $("#axis-c");
  if (x.options.length) {  // keep the user's choice; only refresh the colour list
    const keep = c.value;
    c.innerHTML = `<option value="">none</option>` + [...new Set([...objs.map((o) => o.name), ...metricNames()])]
      .map((n) => `<option${n === keep ? " selected" : ""}>${esc(n)}</option>`).join("");
    return;
  }
  const opts = objs.map((o) => `<option value="${esc(o.name)}">${esc(o.name)} ${arrow(o)}</option>`).join("");
  x.innerHTML = opts;
  y.innerHTML = opts;
  const acc = objs.find((o) => o.direction === "max") || objs[0];
  const cost = objs.find((o) => o !== acc && o.direction === "min") || objs.find((o) => o !== acc) || objs[0];
  x.value = cost.name;
  y.value = acc.name;
  const third = objs.find((o) => o !== acc && o !== cost);
  c.innerHTML = `<option value="">none</option>` + [...new Set([...objs.map((o) => o.name), ...metricNames()])]
    .map((n) => `<option${third && n === third.name ? " selected" : ""}>${esc(n)}</option>`).join("");
  [x, y, c].forEach((s) => (s.onchange = renderPareto));
}

const objective = (name) => (state.job.objectives.find((o) => o.name === name) || {name, direction: "max", scale: "linear"});
const usable = (t) => t.status === "completed" && state.job.objectives.every((o) => isFinite(t.metrics?.[o.name]));
const finished = () => state.trials.filter(usable);

// The panels that cost most on a big job (1,000 trials: seconds in a software-rendered WebGL, and fANOVA on
// the server) are drawn once the front and the table are up, and while a job runs at most every HEAVY_MS
// per 100 trials (10 s at 1,000), so polling never keeps the page busy.
const HEAVY_MS = 1000;
let heavyTimer = null;

function renderHeavy(timelineOnly = false) {  // timelineOnly: no trial changed status, running ones moved on
  clearTimeout(heavyTimer);
  state.heavyAll = state.heavyAll || !timelineOnly;  // a full redraw still pending stays pending
  const gap = Math.min(10 * HEAVY_MS, HEAVY_MS * state.trials.length / 100);
  const id = state.jobId;
  const pause = () => new Promise((resolve) => setTimeout(resolve, 0));  // let the page paint and take input between panels
  heavyTimer = setTimeout(async () => {
    const gone = () => state.jobId !== id || $("#view-job").hidden;
    if (gone()) return;
    state.heavyAt = Date.now();
    renderTimeline();
    if (state.heavyAll) {
      state.heavyAll = false;
      await pause();
      if (gone()) return;
      renderParcoords();
      await pause();
      if (gone()) return;
      renderComponents();
      loadImportance();  // not awaited: the rest of the page is usable while fANOVA runs
    }
    const v = $("#view-job");
    if (!v.dataset.complete) v.dataset.completeMs = String(Math.round(performance.now()));
    v.dataset.complete = "1";
  }, Math.max(0, state.heavyAt + gap - Date.now()));
}

// --- filters: the constraint box (server-checked) and the parallel-coordinates brushes ----------------------
const filterActive = () => state.brushSet !== null || state.whereSet !== null;
const passes = (t) => (state.brushSet === null || state.brushSet.has(t.trial_id)) && (state.whereSet === null || state.whereSet.has(t.trial_id));

function renderFilters() {
  const n = finished().length;
  const k = finished().filter(passes).length;
  const el = $("#filter-note");
  el.className = "small" + (filterActive() ? " active" : "");
  const what = [state.whereSet !== null ? "constraint" : null, state.brushSet !== null ? `${Object.keys(state.brush).length} brushed axis(es)` : null].filter(Boolean);
  el.textContent = filterActive() ? `${k} of ${n} finished trial(s) inside ${what.join(" + ")}; the rest are greyed out` : "";
  el.dataset.count = String(k);
  $("#brush-clear").hidden = state.brushSet === null;
  renderPareto();
  renderTable();
}

async function applyWhere(text, quiet = false) {
  const input = $("#where");
  text = (text || "").trim();
  $("#where-error").textContent = "";
  input.classList.remove("invalid");
  if (!text) {
    state.where = "";
    state.whereSet = null;
    $("#where-note").textContent = "";
    if (!quiet) renderFilters();
    return;
  }
  try {
    const m = await getJSON(`/jobs/${state.jobId}/match?where=${encodeURIComponent(text)}`);
    state.where = text;
    state.whereSet = new Set(m.trial_ids);
    $("#where-note").textContent = `${m.where}: ${m.matched} of ${m.usable} finished trial(s)`;
    if (m.matched && !quiet) $("#where-note").textContent += `; export the best of them with --pick "best:auc where ${m.where}"`;
  } catch (e) {
    if (e.status === 0) throw e;
    state.where = "";
    state.whereSet = null;
    input.classList.add("invalid");
    $("#where-error").textContent = e.message;
    $("#where-note").textContent = "";
  }
  if (!quiet) renderFilters();
}

function hoverText(t) {
  const a = t.architecture || {};
  const lines = [`<b>trial ${esc(t.trial_id)}</b> (${esc(t.status)})${t.on_front ? " \u2605 front" : ""}`];
  for (const [k, v] of Object.entries(a)) {
    if (k === "components") {
      for (const [g, names] of Object.entries(v || {})) if (names.length) lines.push(`${esc(g)}: ${esc(names.join(", "))}`);
    } else lines.push(`${esc(k)}: ${esc(v)}`);
  }
  lines.push("\u2014");
  for (const o of state.job.objectives) lines.push(`${esc(o.name)} ${arrow(o)}: ${fmt(t.metrics[o.name])}`);
  if (filterActive() && !passes(t)) lines.push("<i>outside the filter</i>");
  return lines.join("<br>");  // validation metrics only: the test split does not guide the choice
}

// the 2-D non-dominated staircase over the two chosen axes (the server's front uses every objective)
function front2d(points, ox, oy) {
  const sx = ox.direction === "max" ? -1 : 1, sy = oy.direction === "max" ? -1 : 1;
  const sorted = [...points].sort((p, q) => sx * (p.x - q.x) || sy * (p.y - q.y));
  const out = [];
  let best = Infinity;
  for (const p of sorted) if (sy * p.y < best) { best = sy * p.y; out.push(p); }
  return out;
}

function renderPareto() {
  if (!state.job) return;
  const xName = $("#axis-x").value, yName = $("#axis-y").value, cName = $("#axis-c").value;
  const ox = objective(xName), oy = objective(yName);
  const pts = finished();
  const front = pts.filter((t) => t.on_front), dominated = pts.filter((t) => !t.on_front);
  const cvals = front.map((t) => (cName ? t.metrics[cName] : null));
  const call = pts.map((t) => t.metrics[cName]).filter((v) => isFinite(v));  // colour range over every finished trial
  const [cmin, cmax] = call.length ? [Math.min(...call), Math.max(...call)] : [0, 1];
  const dim = (rows, on) => rows.map((t) => (!filterActive() || passes(t) ? on : 0.12));  // outside the filter: greyed
  const traces = [
    {name: "Pareto front (all objectives)", type: "scatter", mode: "markers", meta: "trials",
      x: front.map((t) => t.metrics[xName]), y: front.map((t) => t.metrics[yName]),
      customdata: front.map((t) => t.trial_id), text: front.map(hoverText), hovertemplate: "%{text}<extra></extra>",
      marker: Object.assign({size: 12, opacity: dim(front, 1), line: {width: 1, color: "#1b2a3a"}},
        cName ? {color: cvals, colorscale: "Viridis", cmin, cmax: cmax > cmin ? cmax : cmin + 1e-9, showscale: true,
          colorbar: {title: {text: cName}, thickness: 12}} : {color: "#1f77b4"})},
    {name: "dominated", type: "scatter", mode: "markers", meta: "trials",
      x: dominated.map((t) => t.metrics[xName]), y: dominated.map((t) => t.metrics[yName]),
      customdata: dominated.map((t) => t.trial_id), text: dominated.map(hoverText), hovertemplate: "%{text}<extra></extra>",
      marker: {size: 9, opacity: dim(dominated, 0.9), color: "rgba(150,150,150,0.6)", line: {width: 1, color: "rgba(110,110,110,0.8)"}}},
  ];
  const stair = front2d(pts.map((t) => ({x: t.metrics[xName], y: t.metrics[yName]})), ox, oy);
  traces.push({name: `front of ${xName} vs ${yName}`, type: "scatter", mode: "lines", hoverinfo: "skip",
    x: stair.map((p) => p.x), y: stair.map((p) => p.y), line: {shape: "hv", dash: "dot", color: "#1f77b4", width: 1}});
  const sel = pts.find((t) => t.trial_id === state.selected);
  if (sel) {
    traces.push({name: "selected", type: "scatter", mode: "markers", hoverinfo: "skip",
      x: [sel.metrics[xName]], y: [sel.metrics[yName]],
      marker: {size: 22, color: "rgba(0,0,0,0)", line: {width: 3, color: "#d62728"}}});
  }
  const layout = {
    uirevision: `${state.jobId}:${xName}:${yName}`, margin: {l: 60, r: 20, t: 10, b: 50}, hovermode: "closest",
    xaxis: {title: {text: `${xName} ${arrow(ox)}`}, type: ox.scale === "log" ? "log" : "linear", zeroline: false},
    yaxis: {title: {text: `${yName} ${arrow(oy)}`}, type: oy.scale === "log" ? "log" : "linear", zeroline: false},
    legend: {orientation: "h", y: -0.2}, clickmode: "event",
    annotations: pts.length ? [] : [{text: "no finished trial yet", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5, font: {size: 16, color: "#888"}}],
  };
  const div = $("#pareto");
  div.dataset.points = String(pts.length);
  div.dataset.x = xName;
  div.dataset.y = yName;
  Plotly.react(div, traces, layout, plotConfig("pareto"));
  if (!div.dataset.bound) {
    div.dataset.bound = "1";
    div.on("plotly_click", (ev) => {
      const p = ev.points.find((q) => q.customdata !== undefined);
      if (!p) return;
      if (ev.event && ev.event.shiftKey) togglePin(p.customdata); else select(p.customdata);
    });
  }
  $("#pareto-note").textContent = `${pts.length} finished trial(s), ${front.length} on the front; grey = dominated`;
}

function renderHypervolume() {
  const curve = (state.pareto && state.pareto.hypervolume_curve) || [];
  Plotly.react("hv-plot", [{type: "scatter", mode: "lines+markers", x: curve.map((p) => p.n), y: curve.map((p) => p.hypervolume),
    customdata: curve.map((p) => p.trial_id), hovertemplate: "after %{x} trial(s): %{y:.4f}<br>trial %{customdata}<extra></extra>",
    line: {shape: "hv", color: "#2ca02c"}}],
  {margin: {l: 55, r: 10, t: 10, b: 40}, xaxis: {title: {text: "finished trials"}, rangemode: "tozero"},
    yaxis: {title: {text: "hypervolume"}, rangemode: "tozero"},
    annotations: curve.length ? [] : [{text: "no finished trial yet", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5, font: {color: "#888"}}]},
  plotConfig("hypervolume"));
}

function renderTimeline() {
  // one segment per trial, from its start to its end (running trials: to now), at y = its number
  const now = new Date().toISOString();
  const colors = {completed: "#1f77b4", failed: "#d62728", preempted: "#ff7f0e", running: "#2ca02c"};
  const traces = Object.entries(colors).map(([s, color]) => {
    const rows = state.trials.filter((t) => t.status === s && t.started);
    const x = [], y = [], text = [];
    for (const t of rows) {
      const tip = `trial ${t.trial_id} (${s})` + (t.wall_time_s ? `<br>${t.wall_time_s.toFixed(1)} s` : "");
      x.push(t.started, t.finished || now, null);
      y.push(t.number, t.number, null);
      text.push(tip, tip, null);
    }
    return {name: s, type: "scatter", mode: "lines+markers", x, y, text, hovertemplate: "%{text}<extra></extra>",
      line: {color, width: 5}, marker: {size: 5, color}, connectgaps: false};
  }).filter((t) => t.x.length);
  Plotly.react("time-plot", traces, {margin: {l: 55, r: 10, t: 10, b: 40}, legend: {orientation: "h", y: -0.3},
    xaxis: {type: "date", title: {text: "time"}}, yaxis: {title: {text: "trial #"}, rangemode: "tozero", dtick: state.trials.length > 20 ? undefined : 1}},
  plotConfig("timeline"));
}

// --- the trial table ---------------------------------------------------------------------------------
function testNames() {  // objectives the test split reports, shown only behind the explicit reveal
  const have = new Set();
  state.trials.forEach((t) => Object.keys(t.test_metrics || {}).forEach((k) => have.add(k)));
  return state.job.objectives.map((o) => o.name).filter((n) => have.has(n));
}

function columns() {
  const objs = state.job.objectives.map((o) => ({key: "m:" + o.name, label: `${o.name} ${arrow(o)}`, get: (t) => t.metrics?.[o.name]}));
  const test = state.revealTest ? testNames().map((n) => ({key: "t:" + n, label: `test ${n}`, cls: "test", get: (t) => t.test_metrics?.[n]})) : [];
  return [
    {key: "number", label: "#", get: (t) => t.number},
    {key: "trial_id", label: "trial", get: (t) => t.trial_id},
    {key: "status", label: "status", get: (t) => t.status},
    {key: "on_front", label: "front", get: (t) => (t.on_front ? 1 : 0)},
    ...objs,
    {key: "arch", label: "architecture", get: (t) => archSummary(t.architecture)},
    {key: "wall", label: "time (s)", get: (t) => t.wall_time_s},
    ...test,
    {key: "pin", label: "curve", get: (t) => (state.pinned.has(t.trial_id) ? 1 : 0)},
  ];
}

function renderTable() {
  if (!state.job) return;
  const cols = columns();
  const {key, dir} = state.sort;
  const col = cols.find((c) => c.key === key) || cols[0];
  const rows = [...state.trials].sort((a, b) => {
    const va = col.get(a), vb = col.get(b);
    if (va === undefined || va === null) return 1;
    if (vb === undefined || vb === null) return -1;
    return (typeof va === "number" && typeof vb === "number" ? va - vb : String(va).localeCompare(String(vb))) * dir;
  });
  const active = filterActive();
  const epochs = state.job.spec?.budget?.epochs ?? "?";
  $("#trials-table thead").innerHTML = "<tr>" + cols.map((c) =>
    `<th data-key="${esc(c.key)}" class="${c.cls || ""}" aria-sort="${c.key === key ? (dir > 0 ? "ascending" : "descending") : "none"}">${esc(c.label)}</th>`).join("") + "</tr>";
  $("#trials-table tbody").innerHTML = rows.map((t) => {
    const cls = [t.trial_id === state.selected ? "selected" : "", active ? (passes(t) && usable(t) ? "hl" : "out") : ""].join(" ").trim();
    return `<tr data-trial="${esc(t.trial_id)}" class="${cls}">` + cols.map((c) => {
      const v = c.get(t);
      if (c.key === "status") return `<td>${badge(v)}${v === "running" ? ` <span class="muted small epochs">epoch ${t.epochs_done}/${epochs}</span>` : ""}${t.reason ? ` <span class="muted small" title="${esc(t.reason)}">${esc(t.reason.split("\n")[0].slice(0, 60))}</span>` : ""}</td>`;
      if (c.key === "on_front") return `<td>${v ? "\u2605" : ""}</td>`;
      if (c.key === "pin") return `<td><input type="checkbox" class="pin" data-trial="${esc(t.trial_id)}"${v ? " checked" : ""} aria-label="overlay the curve of ${esc(t.trial_id)}"></td>`;
      return `<td class="${c.cls || ""}">${esc(fmt(v))}</td>`;
    }).join("") + "</tr>";
  }).join("");
  const hl = active ? rows.filter((t) => passes(t) && usable(t)).length : 0;
  $("#trials-count").textContent = `${state.trials.length} trial(s)` + (active ? `, ${hl} inside the filter` : "");
  $("#trials-table").dataset.highlighted = String(hl);
  $("#trials-table thead").onclick = (ev) => {
    const th = ev.target.closest("th");
    if (!th) return;
    state.sort = {key: th.dataset.key, dir: state.sort.key === th.dataset.key ? -state.sort.dir : 1};
    renderTable();
  };
  $("#trials-table tbody").onclick = (ev) => {
    const pin = ev.target.closest("input.pin");
    if (pin) { togglePin(pin.dataset.trial, pin.checked); return; }
    const tr = ev.target.closest("tr");
    if (tr) select(tr.dataset.trial);
  };
}

function select(trialId) {
  state.selected = trialId;
  renderPareto();
  renderTable();
  renderSelected();
  loadCurves();
}

function togglePin(trialId, on) {
  if (on === undefined) on = !state.pinned.has(trialId);
  if (on) state.pinned.add(trialId); else state.pinned.delete(trialId);
  renderTable();
  loadCurves();
}

function renderSelected() {
  const t = state.trials.find((x) => x.trial_id === state.selected);
  $("#export-selected").disabled = !(t && t.status === "completed");
  if (!t) {
    $("#selected-body").innerHTML = "Click a point in the plot or a row in the table.";
    return;
  }
  const test = state.revealTest;
  const metricRows = Object.entries(t.metrics || {}).map(([k, v]) =>
    `<tr><td>${esc(k)}</td><td>${esc(fmt(v))}</td>${test ? `<td class="test">${esc(fmt(t.test_metrics?.[k]))}</td>` : ""}</tr>`).join("");
  $("#selected-body").innerHTML = `
    <p><b>trial ${esc(t.trial_id)}</b> ${badge(t.status)} ${t.on_front ? "\u2605 on the Pareto front" : ""}</p>
    <pre class="arch">${esc(JSON.stringify(t.architecture, null, 1))}</pre>
    <table class="data compact"><thead><tr><th>metric</th><th>validation</th>${test ? '<th class="test">test</th>' : ""}</tr></thead><tbody>${metricRows}</tbody></table>
    ${test ? "" : '<p class="hint small">Test-split metrics appear once you export this trial, or with \u201cshow test-split metrics\u201d below the table.</p>'}`;
  $("#selected-body").dataset.trial = t.trial_id;
}

// --- learning curves ---------------------------------------------------------------------------------
function curveIds() {
  const ids = [...state.pinned];
  if (state.selected && !state.pinned.has(state.selected)) ids.unshift(state.selected);
  return ids.slice(0, 50);
}

async function loadCurves() {
  const ids = curveIds();
  const key = ids.join(",") + "|" + ids.map((id) => { const t = state.trials.find((x) => x.trial_id === id); return t ? t.status + t.epochs_done : ""; }).join(",");
  if (key === state.curvesKey && $("#curves-plot").data) return;  // nothing new since the last drawing
  try {
    state.curves = ids.length ? (await getJSON(`/jobs/${state.jobId}/curves?` + ids.map((i) => "trial=" + encodeURIComponent(i)).join("&"))).trials : [];
    state.curvesKey = key;
  } catch (e) {
    flash("Learning curves: " + esc(e.message), "error");
  }
  renderCurves();
}

function renderCurves() {
  const sel = $("#curve-metric");
  const keys = new Set();
  state.curves.forEach((c) => c.history.forEach((h) => Object.keys(h).forEach((k) => k !== "epoch" && keys.add(k))));
  const want = sel.value || "val_auc";
  const opts = [...keys].sort((a, b) => (a === "val_auc" ? -1 : b === "val_auc" ? 1 : a.localeCompare(b)));
  if (opts.join() !== [...sel.options].map((o) => o.value).join()) {
    sel.innerHTML = opts.map((k) => `<option${k === want ? " selected" : ""}>${esc(k)}</option>`).join("");
  }
  sel.onchange = renderCurves;
  const metric = sel.value || want;
  const epochs = state.job?.spec?.budget?.epochs;
  const dash = {completed: "solid", running: "dot", failed: "dash", preempted: "dashdot"};
  const endSymbol = {completed: "circle", running: "circle-open", failed: "x", preempted: "square-open"};
  const traces = state.curves.map((c, i) => {
    const color = c.status === "failed" ? "#d62728" : PALETTE[i % PALETTE.length];
    const hist = c.history.filter((h) => h[metric] !== null && h[metric] !== undefined);
    const label = `${c.trial_id} (${statusWord[c.status] || c.status}${c.status === "running" ? `, epoch ${c.epochs_done}/${epochs ?? "?"}` : ""})`;
    return {name: label, type: "scatter", mode: "lines+markers", meta: c.status, x: hist.map((h) => h.epoch), y: hist.map((h) => h[metric]),
      line: {color, dash: dash[c.status] || "solid", width: c.trial_id === state.selected ? 3 : 2},
      marker: {color, size: hist.map((_, k) => (k === hist.length - 1 ? 10 : 5)),
        symbol: hist.map((_, k) => (k === hist.length - 1 ? endSymbol[c.status] || "circle" : "circle"))},
      hovertemplate: `${esc(c.trial_id)} ${esc(c.status)}<br>epoch %{x}: ${esc(metric)} %{y:.4g}<extra></extra>`};
  });
  const empty = state.curves.filter((c) => !c.history.length);
  Plotly.react("curves-plot", traces, {
    margin: {l: 55, r: 10, t: 10, b: 40}, legend: {orientation: "h", y: -0.3}, showlegend: true,
    xaxis: {title: {text: "epoch"}, dtick: 1, rangemode: "tozero"}, yaxis: {title: {text: metric}},
    annotations: !state.curves.length
      ? [{text: "select a trial (or tick rows) to see its curves", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5, font: {color: "#888"}}]
      : empty.length ? [{text: `${empty.map((c) => c.trial_id).join(", ")}: no finished epoch`, showarrow: false, xref: "paper", yref: "paper", x: 0.02, y: 1, xanchor: "left", font: {color: "#a33", size: 11}}] : [],
  }, plotConfig("curves"));
  $("#curves-list").innerHTML = state.curves.map((c, i) => {
    const color = c.status === "failed" ? "#d62728" : PALETTE[i % PALETTE.length];
    const why = c.reason ? ` <span class="muted" title="${esc(c.reason)}">${esc(c.reason.split("\n")[0].slice(0, 70))}</span>` : "";
    return `<li data-trial="${esc(c.trial_id)}" data-status="${esc(c.status)}" data-epochs="${c.epochs_done}">
      <span class="swatch" style="border-color:${color}"></span>${esc(c.trial_id)} ${badge(statusWord[c.status] || c.status)}
      ${c.epochs_done}${epochs ? "/" + epochs : ""} epoch(s)${why}</li>`;
  }).join("");
  $("#curves-clear").onclick = () => { state.pinned.clear(); renderTable(); loadCurves(); };
}

// --- parallel coordinates: decisions -> objectives, brushed ------------------------------------------------
function parcoordsDims(pts) {
  const dims = [];
  const d = state.decisions;
  for (const dec of d.decisions) {
    if (dec.choices.length < 2) continue;  // one choice: nothing to see (the importance panel lists it, at 0)
    const choices = [...dec.choices, ...(Object.keys(dec.when).length ? [INACTIVE] : [])];
    const index = new Map(choices.map((c, i) => [String(c), i]));
    dims.push({label: dec.name, values: pts.map((t) => index.get(String(t.architecture?.[dec.name] ?? INACTIVE)) ?? 0),
      tickvals: choices.map((_, i) => i), ticktext: choices.map(String), range: [0, choices.length - 1]});
  }
  for (const [group, names] of Object.entries(d.component_groups || {})) {
    dims.push({label: `${group} (# on)`, values: pts.map((t) => (t.architecture?.components?.[group] || []).length),
      range: [0, names.length], tickvals: [...Array(names.length + 1).keys()]});
  }
  for (const o of state.job.objectives) {
    const log = o.scale === "log";
    const values = pts.map((t) => (log ? Math.log10(Math.max(t.metrics[o.name], 1e-12)) : t.metrics[o.name]));
    const dim = {label: `${o.name} ${arrow(o)}${log ? " (log10)" : ""}`, values};
    if (log && values.length) {
      const lo = Math.floor(Math.min(...values)), hi = Math.ceil(Math.max(...values));
      dim.range = [lo, Math.max(hi, lo + 1)];
      dim.tickvals = [...Array(dim.range[1] - lo + 1).keys()].map((k) => lo + k);
      dim.ticktext = dim.tickvals.map((v) => (v >= 3 ? `1e${v}` : String(10 ** v)));
    }
    dims.push(dim);
  }
  for (const dim of dims) if (state.brush[dim.label]) dim.constraintrange = state.brush[dim.label];
  return dims;
}

const inRange = (v, r) => (Array.isArray(r[0]) ? r.some((q) => inRange(v, q)) : v >= Math.min(r[0], r[1]) && v <= Math.max(r[0], r[1]));

function recomputeBrush() {
  const pts = finished();
  const labels = Object.keys(state.brush);
  if (!labels.length || !state.decisions) { state.brushSet = null; return; }
  const dims = parcoordsDims(pts);
  state.brushSet = new Set(pts.filter((t, i) => dims.every((d) => !d.constraintrange || inRange(d.values[i], d.constraintrange))).map((t) => t.trial_id));
}

function renderParcoords() {
  if (!state.decisions || !state.job) return;
  const pts = finished();
  const div = $("#parcoords");
  div.dataset.trials = String(pts.length);
  if (!pts.length) {
    Plotly.react(div, [], {annotations: [{text: "no finished trial yet", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5, font: {color: "#888"}}],
      xaxis: {visible: false}, yaxis: {visible: false}, margin: {l: 10, r: 10, t: 10, b: 10}}, plotConfig("parallel-coordinates"));
    return;
  }
  const trace = {type: "parcoords", dimensions: parcoordsDims(pts), labelangle: -12, labelside: "top",
    line: {color: pts.map((t) => (t.on_front ? 1 : 0)), colorscale: [[0, "#b9c1cb"], [1, "#1f77b4"]], cmin: 0, cmax: 1}};
  Plotly.react(div, [trace], {margin: {l: 70, r: 60, t: 70, b: 30}, uirevision: state.jobId}, plotConfig("parallel-coordinates"));
  if (!div.dataset.bound) {
    div.dataset.bound = "1";
    div.on("plotly_restyle", () => {  // a brush moved: read every axis's constraint range back
      const brush = {};
      for (const d of div.data[0]?.dimensions || []) {
        const r = d.constraintrange;
        if (r && r.length) brush[d.label] = r;
      }
      state.brush = brush;
      recomputeBrush();
      renderFilters();
    });
  }
}

// --- which decisions matter; components front vs all ----------------------------------------------------------
async function loadImportance() {
  const key = state.sig;
  if (state.importanceKey === key) return;
  state.importanceKey = key;
  $("#importance-note").textContent = "computing\u2026";
  try {
    const imp = await getJSON(`/jobs/${state.jobId}/importance`);
    if (state.importanceKey !== key) return;  // newer trials arrived meanwhile
    state.importance = imp;
    renderImportance();
  } catch (e) {
    state.importanceKey = "";
    $("#importance-note").textContent = "";
    if (e.status !== 0) flash("Importance: " + esc(e.message), "error");
  }
}

function paramLabel(p) { return p.kind === "component" ? `${p.component} (${p.group})` : p.name; }

function renderImportance() {
  const imp = state.importance;
  if (!imp) return;
  const objs = imp.objectives;
  const peak = (p) => Math.max(...objs.map((o) => imp.importance[o][p.name] || 0));
  const params = [...imp.params].sort((a, b) => (a.kind === b.kind ? peak(b) - peak(a) : a.kind === "decision" ? -1 : 1));
  const shown = params.filter((p) => p.kind === "decision" || peak(p) > 0);  // every decision; components that matter at all
  const traces = objs.map((o, j) => ({type: "bar", orientation: "h", name: o, marker: {color: PALETTE[j % PALETTE.length]},
    y: shown.map(paramLabel), x: shown.map((p) => imp.importance[o][p.name]),
    hovertemplate: `%{y}: %{x:.3f} of ${esc(o)}'s variance<extra></extra>`}));
  const div = $("#importance-plot");
  div.style.height = `${Math.max(300, 60 + shown.length * (14 + 6 * objs.length))}px`;
  Plotly.react(div, traces, {barmode: "group", margin: {l: 150, r: 10, t: 10, b: 40}, legend: {orientation: "h", y: -0.12},
    xaxis: {title: {text: "fANOVA importance (fraction of variance)"}, rangemode: "tozero"},
    yaxis: {autorange: "reversed", automargin: true}}, plotConfig("importance"));
  $("#importance-note").textContent = `${imp.n_trials} finished trial(s)` + (imp.note ? ` \u00b7 ${imp.note}` : "");
  $("#importance-method").textContent = imp.method;
  $("#importance-table thead").innerHTML = `<tr><th>decision</th>${objs.map((o) => `<th>${esc(o)}</th>`).join("")}</tr>`;
  $("#importance-table tbody").innerHTML = params.map((p) =>
    `<tr data-param="${esc(p.name)}" data-kind="${esc(p.kind)}"><td>${esc(paramLabel(p))}</td>` +
    objs.map((o) => `<td data-objective="${esc(o)}" data-value="${imp.importance[o][p.name]}">${imp.importance[o][p.name].toFixed(3)}</td>`).join("") + "</tr>").join("");
  if (!div.dataset.ready) div.dataset.readyMs = String(Math.round(performance.now()));
  div.dataset.ready = "1";
}

function renderComponents() {
  const d = state.decisions;
  const div = $("#components-plot");
  if (!d || !d.components.length) {
    Plotly.purge(div);
    $("#components-note").textContent = d ? "this space has no components" : "";
    return;
  }
  const names = d.components.map((c) => `${c.name}`);
  const pct = (v) => (v === null ? null : 100 * v);
  Plotly.react(div, [
    {type: "bar", name: `all finished trials (${d.n_trials})`, x: names, y: d.components.map((c) => pct(c.all_frac)),
      customdata: d.components.map((c) => [c.all, c.group]), marker: {color: "#b9c1cb"},
      hovertemplate: "%{x} (%{customdata[1]}): on in %{customdata[0]} trial(s), %{y:.0f}%<extra>all</extra>"},
    {type: "bar", name: `on the front (${d.n_front})`, x: names, y: d.components.map((c) => pct(c.front_frac)),
      customdata: d.components.map((c) => [c.front, c.group]), marker: {color: "#1f77b4"},
      hovertemplate: "%{x} (%{customdata[1]}): on in %{customdata[0]} front trial(s), %{y:.0f}%<extra>front</extra>"},
  ], {barmode: "group", margin: {l: 50, r: 10, t: 10, b: 80}, legend: {orientation: "h", y: 1.1},
    yaxis: {title: {text: "% of trials with it on"}, range: [0, 100]}, xaxis: {tickangle: -40}}, plotConfig("components"));
  $("#components-note").textContent = `${d.n_front} on the front of ${d.n_trials}`;
}

// --- export and data out -------------------------------------------------------------------------------
async function exportBundle(pick) {
  try {
    const {name, size, res} = await download(`/jobs/${state.jobId}/export?pick=${encodeURIComponent(pick)}`, `${state.jobId}.zip`);
    // a choice has been made: now (and only here, unless revealed) the test split reports it
    const tid = res.headers.get("X-Promptsearch-Trial");
    const t = state.trials.find((x) => x.trial_id === tid);
    const test = t ? Object.entries(t.test_metrics || {}).map(([k, v]) => `${esc(k)} ${fmt(v)}`).join(", ") : "";
    flash(`Exported ${esc(name)} (${(size / 1024).toFixed(1)} KiB): load it with promptsearch.load_exported().` +
      (test ? `<br><span class="small" id="exported-test" data-trial="${esc(tid)}">Test split of the chosen trial ${esc(tid)} (report it): ${test}</span>` : ""));
  } catch (e) {
    flash("Export failed: " + esc(e.message), "error");
  }
}

async function downloadTrials(format) {
  try {
    const {name} = await download(`/jobs/${state.jobId}/trials?format=${format}${state.revealTest ? "&test=true" : ""}`, `${state.jobId}-trials.${format}`);
    flash(`Downloaded ${esc(name)}: one row per trial, one column per decision${state.revealTest ? ", with test_* columns" : ""}.`);
  } catch (e) {
    flash("Download failed: " + esc(e.message), "error");
  }
}

async function jobAction(action) {
  try {
    await api(`/jobs/${state.jobId}/${action}`, {method: "POST"});
    flash(`Job ${esc(state.jobId)}: ${action} requested.`);
    state.sig = "";
    clearTimeout(timer);
    showJob(state.jobId);
  } catch (e) {
    flash(`${action} failed: ${esc(e.message)}`, "error");
  }
}

// ---------------------------------------------------------------------------------------------
// compare: two or more jobs on one space
const cmp = {ids: [], data: null, all: []};

async function showCompare(ids) {
  cmp.ids = ids;
  state.jobId = null;
  try {
    cmp.all = (await getJSON("/compare/jobs")).jobs;
    renderCompareChooser();
    if (ids.length >= 2) {
      cmp.data = await getJSON("/compare?" + ids.map((i) => "jobs=" + encodeURIComponent(i)).join("&"));
      renderCompare();
    } else {
      cmp.data = null;
      ["compare-front", "compare-hv"].forEach((p) => Plotly.purge(p));
      $("#compare-table tbody").innerHTML = "";
      $("#compare-space").textContent = "tick two or more jobs on the same space";
    }
    heard.live = false;
    renderHeard();
  } catch (e) {
    flash("Compare: " + esc(e.message), "error");
  }
}

function renderCompareChooser() {
  const first = cmp.all.find((j) => j.id === cmp.ids[0]);
  const groups = new Map();
  for (const j of cmp.all) {
    const k = `${j.space} (${j.space_hash})`;
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k).push(j);
  }
  $("#compare-jobs").innerHTML = [...groups.entries()].map(([k, jobs]) => `<div class="space-group">space ${esc(k)}</div>` +
    jobs.map((j) => {
      const other = first && j.space_hash !== first.space_hash;
      return `<label class="${other ? "other" : ""}" title="${other ? "a different search space: not comparable" : ""}">
        <input type="checkbox" data-job="${esc(j.id)}"${cmp.ids.includes(j.id) ? " checked" : ""}${other ? " disabled" : ""}>
        ${esc(j.name || j.id)} <span class="muted small">${esc(j.id)} \u00b7 ${esc(j.strategy)} \u00b7 ${j.done} done</span> ${badge(j.status)}</label>`;
    }).join("")).join("");
  $("#compare-jobs").onchange = (ev) => {
    const ids = [...document.querySelectorAll("#compare-jobs input:checked")].map((b) => b.dataset.job);
    location.hash = "#/compare/" + ids.join(",");
  };
}

function renderCompare() {
  const d = cmp.data;
  const objs = d.objectives;
  const x = $("#cmp-x"), y = $("#cmp-y");
  if (!x.options.length || [...x.options].map((o) => o.value).join() !== objs.map((o) => o.name).join()) {
    const opts = objs.map((o) => `<option value="${esc(o.name)}">${esc(o.name)} ${arrow(o)}</option>`).join("");
    x.innerHTML = opts;
    y.innerHTML = opts;
    const acc = objs.find((o) => o.direction === "max") || objs[0];
    const cost = objs.find((o) => o !== acc && o.direction === "min") || objs.find((o) => o !== acc) || objs[0];
    x.value = cost.name;
    y.value = acc.name;
  }
  x.onchange = y.onchange = renderCompare;
  const ox = objs.find((o) => o.name === x.value), oy = objs.find((o) => o.name === y.value);
  const traces = [];
  d.jobs.forEach((j, i) => {
    const color = PALETTE[i % PALETTE.length];
    const front = j.trials.filter((t) => t.on_front), rest = j.trials.filter((t) => !t.on_front);
    const tip = (t) => `<b>${esc(j.name || j.id)}</b> ${esc(t.trial_id)}${t.on_front ? " \u2605" : ""}<br>` +
      objs.map((o) => `${esc(o.name)}: ${fmt(t.metrics[o.name])}`).join("<br>");
    traces.push({name: `${j.name || j.id}: front (${front.length})`, legendgroup: j.id, type: "scatter", mode: "markers", meta: j.id,
      x: front.map((t) => t.metrics[ox.name]), y: front.map((t) => t.metrics[oy.name]), text: front.map(tip),
      hovertemplate: "%{text}<extra></extra>", marker: {size: 12, color, line: {width: 1, color: "#1b2a3a"}}});
    traces.push({name: `${j.name || j.id}: other trials`, legendgroup: j.id, type: "scatter", mode: "markers", showlegend: false,
      x: rest.map((t) => t.metrics[ox.name]), y: rest.map((t) => t.metrics[oy.name]), text: rest.map(tip),
      hovertemplate: "%{text}<extra></extra>", marker: {size: 7, color, opacity: 0.35}});
    const stair = front2d(j.trials.map((t) => ({x: t.metrics[ox.name], y: t.metrics[oy.name]})), ox, oy);
    traces.push({name: `${j.name || j.id}: 2-D front`, legendgroup: j.id, type: "scatter", mode: "lines", showlegend: false, hoverinfo: "skip",
      x: stair.map((p) => p.x), y: stair.map((p) => p.y), line: {shape: "hv", dash: "dot", color, width: 1.5}});
  });
  Plotly.react("compare-front", traces, {margin: {l: 60, r: 20, t: 10, b: 50}, hovermode: "closest", legend: {orientation: "h", y: -0.2},
    xaxis: {title: {text: `${ox.name} ${arrow(ox)}`}, type: ox.scale === "log" ? "log" : "linear", zeroline: false},
    yaxis: {title: {text: `${oy.name} ${arrow(oy)}`}, type: oy.scale === "log" ? "log" : "linear", zeroline: false}},
  plotConfig("compare-fronts"));
  Plotly.react("compare-hv", d.jobs.map((j, i) => ({name: j.name || j.id, type: "scatter", mode: "lines+markers", meta: j.id,
    x: j.hypervolume_curve.map((p) => p.n), y: j.hypervolume_curve.map((p) => p.hypervolume), line: {shape: "hv", color: PALETTE[i % PALETTE.length]},
    hovertemplate: `${esc(j.name || j.id)}<br>after %{x} trial(s): %{y:.4f}<extra></extra>`})),
  {margin: {l: 55, r: 10, t: 10, b: 40}, legend: {orientation: "h", y: -0.3}, xaxis: {title: {text: "finished trials"}, rangemode: "tozero"},
    yaxis: {title: {text: "hypervolume"}, rangemode: "tozero"}}, plotConfig("compare-hypervolume"));
  $("#compare-space").textContent = `space ${d.space} (${d.space_hash}) \u00b7 ${d.jobs.length} jobs`;
  $("#compare-table thead").innerHTML = "<tr><th>job</th><th>strategy</th><th>status</th><th>finished</th><th>front</th><th>hypervolume</th></tr>";
  $("#compare-table tbody").innerHTML = d.jobs.map((j, i) => `<tr data-job="${esc(j.id)}">
    <td><span class="swatch" style="display:inline-block;width:10px;height:10px;background:${PALETTE[i % PALETTE.length]}"></span>
      <a href="#/jobs/${esc(j.id)}">${esc(j.name || j.id)}</a></td><td>${esc(j.strategy)}</td><td>${badge(j.status)}</td>
    <td>${j.trials.length}</td><td>${j.front.length}</td><td>${fmt(j.hypervolume)}</td></tr>`).join("");
}

// ---------------------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("#submit-form").addEventListener("submit", submitJob);
  $("#export-selected").onclick = () => state.selected && exportBundle("trial=" + state.selected);
  $("#export-knee").onclick = () => exportBundle("knee");
  $("#cancel-job").onclick = () => jobAction("cancel");
  $("#resume-job").onclick = () => jobAction("resume");
  $("#download-csv").onclick = () => downloadTrials("csv");
  $("#download-json").onclick = () => downloadTrials("json");
  $("#compare-selected").onclick = () => { location.hash = "#/compare/" + [...compareTicked].join(","); };
  $("#where-form").addEventListener("submit", (ev) => { ev.preventDefault(); applyWhere($("#where").value); });
  $("#where-clear").onclick = () => { $("#where").value = ""; applyWhere(""); };
  $("#brush-clear").onclick = () => {
    state.brush = {};
    state.brushSet = null;
    renderParcoords();
    renderFilters();
  };
  $("#reveal-test").onchange = (ev) => {
    state.revealTest = ev.target.checked;
    $("#test-warning").hidden = !state.revealTest;
    renderTable();
    renderSelected();
  };
  window.addEventListener("hashchange", route);
  setInterval(renderHeard, 1000);
  updateTokenButton();
  route();
});
