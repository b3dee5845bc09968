// promptsearch dashboard: a job list with a submit form; a job page for choosing a trial (Pareto front,
// constraint box, parallel coordinates with brushing, decision importance, component frequency, learning
// curves, trial table with CSV/JSON download); a compare page for jobs on the same space.
// Plain JS + Plotly (served by the API from the installed plotly package); talks only to the REST API.
// The pure part of the drawing (statuses, points, error bars, map names) is marks.js (`PSMarks`, tested alone).
"use strict";

const M = PSMarks;
const TOKEN_KEY = "promptsearch.token";
const POLL_MS = 2000;
const ACTIVE = M.ACTIVE_JOB;  // queued, running, cancelling: poll
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
// a trial's status badge ("stopped at epoch 3" for a trial stopped early); its title says what the status means
function badge(status, t) {
  const text = t ? M.trialStatusText(t) : status;
  const title = M.TRIAL_STATUS[status] || M.JOB_STATUS[status] || "";
  return `<span class="badge ${esc(status)}"${title ? ` title="${esc(title)}"` : ""}>${esc(text)}</span>`;
}
// a job's status badge: cancelling and corrupt say why in the title; corrupt also names its file below it
function jobBadge(job) {
  const b = M.jobBadge(job);
  const described = b.detail ? ` aria-describedby="why-${esc(job.id)}"` : "";
  return `<span class="badge ${esc(b.cls)}" title="${esc(b.title)}" data-status="${esc(b.status)}"${described}>${esc(b.status)}</span>` +
    (b.detail ? `<div class="small badge-detail" id="why-${esc(job.id)}" title="${esc(b.title)}">${esc(b.detail)}</div>` : "");
}

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
      const corrupt = j.status === "corrupt";  // its files cannot be read: nothing but its id and why
      const stopped = j.stopped ? `, ${j.stopped} stopped` : "";
      return `<tr data-job="${esc(j.id)}" data-status="${esc(j.status)}">
        <td><input type="checkbox" class="cmp" data-job="${esc(j.id)}"${compareTicked.has(j.id) ? " checked" : ""} aria-label="compare ${esc(j.id)}"${corrupt ? " disabled" : ""}></td>
        <td><a href="#/jobs/${esc(j.id)}">${esc(j.name || j.id)}</a><div class="muted small">${esc(j.id)}</div></td>
        <td>${jobBadge(j)}</td>
        <td>${corrupt ? "\u2014" : `<progress max="${j.trials}" value="${j.done}"></progress> <span class="small">${j.done}/${j.trials}${j.failed ? `, ${j.failed} failed` : ""}${stopped}${j.running ? `, ${j.running} running` : ""}</span>`}</td>
        <td>${corrupt ? "\u2014" : `${esc(j.space)} / ${esc(j.dataset)}`}</td><td>${esc(j.strategy ?? "")}</td>
        <td>${corrupt ? "" : fmt(j.hypervolume)}</td><td class="small">${bestText(j)}</td></tr>`;
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
  brush: {}, brushSet: null, where: "", whereSet: null, revealTest: false, heavyAt: 0,
  explain: new Map(), explainBusy: new Set()};  // explanation maps: answers by "trial|n"; requests in flight

function resetJobState(id) {
  Object.assign(state, {jobId: id, job: null, trials: [], pareto: null, selected: null, sig: "",
    decisions: null, importance: null, importanceKey: "", pinned: new Set(), curves: [], curvesKey: "",
    brush: {}, brushSet: null, where: "", whereSet: null, heavyAt: 0, heavyAll: false,
    explain: new Map(), explainBusy: new Set()});
  clearTimeout(heavyTimer);
  $("#view-job").dataset.complete = "";
  $("#view-job").dataset.corrupt = "";
  $("#job-corrupt").hidden = true;
  renderExplain();
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
    const job = await getJSON(`/jobs/${id}`);
    if (state.jobId !== id) return;  // the user moved on while we waited
    if (job.status === "corrupt") {  // its log cannot be read: say which file and why, ask for nothing else
      showCorrupt(job);
      return;
    }
    const [page, pareto] = await Promise.all([getJSON(`/jobs/${id}/trials?limit=10000`), getJSON(`/jobs/${id}/pareto`)]);
    if (state.jobId !== id) return;
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

function showCorrupt(job) {
  state.job = null;
  renderJobHead(job);
  const b = M.jobBadge(job);
  const v = $("#view-job");
  v.dataset.corrupt = "1";
  $("#job-corrupt").hidden = false;
  $("#job-corrupt-file").textContent = (job.corrupt && job.corrupt.file) || "?";
  $("#job-corrupt-reason").textContent = (job.corrupt && job.corrupt.reason) || job.message || "";
  $("#job-corrupt-hint").textContent = (job.corrupt && job.corrupt.hint) || job.message || "";
  $("#job-corrupt").title = b.title;
  v.dataset.ready = "1";
  v.dataset.complete = "1";
  heard.live = false;
  renderHeard();
}

function renderJobHead(job) {
  $("#job-title").innerHTML = `${esc(job.name || job.id)} ${jobBadge(job)}`;
  $("#job-meta").textContent = `${job.id} \u00b7 space ${job.space} \u00b7 ${job.dataset} \u00b7 strategy ${job.strategy}` +
    (job.message ? ` \u00b7 ${job.message}` : "");
  $("#job-stats").innerHTML = `
    <div><b>${job.done}<small>/${job.trials}</small></b><span>finished</span></div>
    <div><b>${job.running}</b><span>running</span></div>
    <div><b>${job.failed}</b><span>failed</span></div>
    ${M.jobExtras(job).map((x) => `<div data-key="${esc(x.key)}" title="${esc(x.title)}"><b>${esc(x.value)}</b><span>${esc(x.label)}</span></div>`).join("")}
    <div><b>${fmt(job.hypervolume)}</b><span>hypervolume</span></div>`;
  $("#cancel-job").disabled = !M.CANCELLABLE_JOB.has(job.status);
  $("#cancel-job").title = job.status === "cancelling" ? "a cancel was asked; the coordinator is stopping the trials" : "";
  $("#export-knee").disabled = !(job.completed > 0);
  $("#resume-job").disabled = !["failed", "cancelled", "interrupted"].includes(job.status);
  $("#compare-link").href = `#/compare/${job.id}`;
}

function metricNames() {
  const names = new Set();
  state.trials.forEach((t) => Object.keys(t.metrics || {}).forEach((k) => names.add(k)));
  return [...names];
}

// the x/y selects of a front plot (job page and compare page): every objective, the defaults chosen
function fillAxisSelects(x, y, objs) {
  const opts = objs.map((o) => `<option value="${esc(o.name)}">${esc(o.name)} ${arrow(o)}</option>`).join("");
  x.innerHTML = opts;
  y.innerHTML = opts;
  const d = M.axisDefaults(objs);
  x.value = d.x;
  y.value = d.y;
  return d;
}

function colourOptions(objs, chosen) {
  return `<option value="">none</option>` + [...new Set([...objs.map((o) => o.name), ...metricNames()])]
    .map((n) => `<option${n === chosen ? " selected" : ""}>${esc(n)}</option>`).join("");
}

function setupAxes(job) {
  const objs = job.objectives;
  const x = $("#axis-x"), y = $("#axis-y"), c = $("#axis-c");
  if (x.options.length) {  // keep the user's choice; only refresh the colour list
    c.innerHTML = colourOptions(objs, c.value);
    return;
  }
  c.innerHTML = colourOptions(objs, fillAxisSelects(x, y, objs).c);
  [x, y, c].forEach((s) => (s.onchange = renderPareto));
}

const objective = (name) => (state.job.objectives.find((o) => o.name === name) || {name, direction: "max", scale: "linear"});
const usable = (t) => M.usable(t, state.job.objectives);
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
  const lines = [`<b>trial ${esc(t.trial_id)}</b> (${esc(M.trialStatusText(t))})${t.on_front ? " \u2605 front" : ""}`];
  for (const [k, v] of Object.entries(a)) {
    if (k === "components") {
      for (const [g, names] of Object.entries(v || {})) if (names.length) lines.push(`${esc(g)}: ${esc(names.join(", "))}`);
    } else lines.push(`${esc(k)}: ${esc(v)}`);
  }
  lines.push("\u2014");
  for (const o of state.job.objectives) lines.push(`${esc(o.name)} ${arrow(o)}: ${esc(M.metricText(t, o.name, fmt))}`);
  for (const line of M.extraLines(t, fmt)) lines.push(esc(line));  // stopped early, image-passes, seeds: when recorded
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

// error bars (+- sd over seeds) on the points of a trace that were re-run with extra seeds; none otherwise
function withBars(trace, rows, xName, yName, color) {
  const ex = M.errorBar(rows, xName, color), ey = M.errorBar(rows, yName, color);
  if (ex) trace.error_x = ex;
  if (ey) trace.error_y = ey;
  return trace;
}

function renderPareto() {
  if (!state.job) return;
  const xName = $("#axis-x").value, yName = $("#axis-y").value, cName = $("#axis-c").value;
  const ox = objective(xName), oy = objective(yName);
  const v = M.value;  // a re-run trial is drawn at its mean over seeds
  const pts = finished();
  const stopped = M.stoppedPoints(state.trials, state.job.objectives);  // early, at a rung: hollow, never the front
  const front = pts.filter((t) => t.on_front), dominated = pts.filter((t) => !t.on_front);
  const cvals = front.map((t) => (cName ? v(t, cName) : null));
  const call = pts.map((t) => v(t, cName)).filter((c) => isFinite(c));  // colour range over every finished trial
  let [cmin, cmax] = call.length ? [Math.min(...call), Math.max(...call)] : [0, 1];
  if (cmax <= cmin) {  // one value: a range around it (not a nano-wide colour bar), inside the objective's bounds
    const pad = Math.max(Math.abs(cmin) * 0.05, 0.05);
    const [lo, hi] = objective(cName).bounds || [-Infinity, Infinity];
    cmin = Math.max(lo, cmin - pad);
    cmax = Math.min(hi, cmin + 2 * pad);
  }
  const dim = (rows, on) => rows.map((t) => (!filterActive() || passes(t) ? on : 0.12));  // outside the filter: greyed
  const traces = [
    withBars({name: "Pareto front (all objectives)", type: "scatter", mode: "markers", meta: "trials",
      x: front.map((t) => v(t, xName)), y: front.map((t) => v(t, yName)),
      customdata: front.map((t) => t.trial_id), text: front.map(hoverText), hovertemplate: "%{text}<extra></extra>",
      marker: Object.assign({size: 12, opacity: dim(front, 1), line: {width: 1, color: "#1b2a3a"}},
        cName ? {color: cvals, colorscale: "Viridis", cmin, cmax, showscale: true,
          colorbar: {title: {text: cName}, thickness: 12}} : {color: "#1f77b4"})}, front, xName, yName, "#1b2a3a"),
    withBars({name: "dominated", type: "scatter", mode: "markers", meta: "trials",
      x: dominated.map((t) => v(t, xName)), y: dominated.map((t) => v(t, yName)),
      customdata: dominated.map((t) => t.trial_id), text: dominated.map(hoverText), hovertemplate: "%{text}<extra></extra>",
      marker: {size: 9, opacity: dim(dominated, 0.9), color: "rgba(150,150,150,0.6)", line: {width: 1, color: "rgba(110,110,110,0.8)"}}},
    dominated, xName, yName, "rgba(110,110,110,0.8)"),
  ];
  if (stopped.length) {
    traces.push({name: "stopped early (its rung's metrics)", type: "scatter", mode: "markers", meta: "stopped",
      x: stopped.map((t) => v(t, xName)), y: stopped.map((t) => v(t, yName)),
      customdata: stopped.map((t) => t.trial_id), text: stopped.map(hoverText), hovertemplate: "%{text}<extra></extra>",
      marker: {size: stopped.map((t) => (t.on_front ? 13 : 10)), symbol: "diamond-open", opacity: dim(stopped, 0.9),
        color: M.STATUS_COLOR.stopped, line: {width: stopped.map((t) => (t.on_front ? 3 : 2))}}});
  }
  const stair = front2d(pts.concat(stopped.filter((t) => t.on_front)).map((t) => ({x: v(t, xName), y: v(t, yName)})), ox, oy);
  traces.push({name: `front of ${xName} vs ${yName}`, type: "scatter", mode: "lines", hoverinfo: "skip",
    x: stair.map((p) => p.x), y: stair.map((p) => p.y), line: {shape: "hv", dash: "dot", color: "#1f77b4", width: 1}});
  const sel = pts.concat(stopped).find((t) => t.trial_id === state.selected);
  if (sel) {
    traces.push({name: "selected", type: "scatter", mode: "markers", hoverinfo: "skip",
      x: [v(sel, xName)], y: [v(sel, yName)],
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
  const repeated = front.filter((t) => M.sdOf(t, xName) !== null || M.sdOf(t, yName) !== null).length;
  $("#pareto-note").textContent = `${pts.length} finished trial(s), ${front.length} on the front; grey = dominated` +
    (stopped.length ? `; ${stopped.length} stopped early (hollow diamonds: the metrics of their rung)` : "") +
    (repeated ? `; bars: \u00b1 sd over seeds (${repeated} re-run front trial(s))` : "");
  const reruns = state.trials.filter((t) => t.repeat_of).length;
  if (reruns) $("#pareto-note").textContent += `; ${reruns} re-run(s) with other seeds folded into their trial's mean`;
  div.dataset.stopped = String(stopped.length);
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
  const traces = Object.entries(M.STATUS_COLOR).map(([s, color]) => {
    const rows = state.trials.filter((t) => t.status === s && t.started);
    const x = [], y = [], text = [];
    for (const t of rows) {
      const tip = `trial ${esc(t.trial_id)} (${esc(M.trialStatusText(t))})` + (t.wall_time_s ? `<br>${t.wall_time_s.toFixed(1)} s` : "");
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
  const objs = state.job.objectives.map((o) => ({key: "m:" + o.name, label: `${o.name} ${arrow(o)}`, get: (t) => M.value(t, o.name),
    show: (t) => M.metricText(t, o.name, fmt)}));  // mean +- sd for a trial re-run with extra seeds
  const test = state.revealTest ? testNames().map((n) => ({key: "t:" + n, label: `test ${n}`, cls: "test", get: (t) => t.test_metrics?.[n]})) : [];
  const passCol = state.trials.some((t) => typeof t.image_passes === "number")  // early stopping's cost accounting, when recorded
    ? [{key: "image_passes", label: "image passes", get: (t) => t.image_passes}] : [];
  return [
    {key: "number", label: "#", get: (t) => t.number},
    {key: "trial_id", label: "trial", get: (t) => t.trial_id},
    {key: "status", label: "status", get: (t) => t.status},
    {key: "on_front", label: "front", get: (t) => (t.on_front ? 1 : 0)},
    ...objs,
    {key: "arch", label: "architecture", get: (t) => archSummary(t.architecture)},
    {key: "wall", label: "time (s)", get: (t) => t.wall_time_s},
    ...passCol,
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
  const focused = document.activeElement && document.activeElement.closest ? document.activeElement.closest("#trials-table tbody tr") : null;
  $("#trials-table tbody").innerHTML = rows.map((t) => {
    const cls = [t.trial_id === state.selected ? "selected" : "", active ? (passes(t) && usable(t) ? "hl" : "out") : ""].join(" ").trim();
    // a row is a keyboard stop: Enter or Space selects it (its maps, curves and details)
    return `<tr data-trial="${esc(t.trial_id)}" class="${cls}" tabindex="0"${t.trial_id === state.selected ? ' aria-current="true"' : ""}>` + cols.map((c) => {
      const v = c.get(t);
      if (c.key === "status") {
        return `<td>${badge(v, t)}${v === "running" ? ` <span class="muted small epochs">epoch ${t.epochs_done}/${epochs}</span>` : ""}` +
          (t.repeat_of ? ` <span class="muted small">repeat of ${esc(t.repeat_of)}</span>` : "") +
          `${t.reason ? ` <span class="muted small" title="${esc(t.reason)}">${esc(t.reason.split("\n")[0].slice(0, 60))}</span>` : ""}</td>`;
      }
      if (c.key === "on_front") return `<td>${v ? "\u2605" : ""}</td>`;
      if (c.key === "pin") return `<td><input type="checkbox" class="pin" data-trial="${esc(t.trial_id)}"${v ? " checked" : ""} aria-label="overlay the curve of ${esc(t.trial_id)}"></td>`;
      return `<td class="${c.cls || ""}">${esc(c.show ? c.show(t) : fmt(v))}</td>`;
    }).join("") + "</tr>";
  }).join("");
  if (focused) {  // the rows were redrawn: keep the keyboard where it was
    const again = [...$("#trials-table tbody").rows].find((r) => r.dataset.trial === focused.dataset.trial);
    if (again) again.focus();
  }
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
  $("#trials-table tbody").onkeydown = (ev) => {
    if (ev.key !== "Enter" && ev.key !== " ") return;
    const tr = ev.target.closest("tr");
    if (!tr || ev.target !== tr) return;  // a tick box handles its own keys
    ev.preventDefault();
    select(tr.dataset.trial);
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
  renderExplain();
  if (!t) {
    $("#selected-body").innerHTML = "Click a point in the plot or a row in the table.";
    return;
  }
  const test = state.revealTest;
  const metricRows = Object.keys(t.metrics || {}).map((k) =>
    `<tr><td>${esc(k)}</td><td>${esc(M.metricText(t, k, fmt))}</td>${test ? `<td class="test">${esc(fmt(t.test_metrics?.[k]))}</td>` : ""}</tr>`).join("");
  const extra = M.extraLines(t, fmt);  // stopped early at epoch N, image-passes, seeds: when recorded
  $("#selected-body").innerHTML = `
    <p><b>trial ${esc(t.trial_id)}</b> ${badge(t.status, t)} ${t.on_front ? "\u2605 on the Pareto front" : ""}</p>
    ${extra.length ? `<ul class="small selected-extra">${extra.map((l) => `<li>${esc(l)}</li>`).join("")}</ul>` : ""}
    <pre class="arch">${esc(JSON.stringify(t.architecture, null, 1))}</pre>
    <table class="data compact"><thead><tr><th>metric</th><th>validation</th>${test ? '<th class="test">test</th>' : ""}</tr></thead><tbody>${metricRows}</tbody></table>
    ${test ? "" : '<p class="hint small">Test-split metrics appear once you export this trial, or with \u201cshow test-split metrics\u201d below the table.</p>'}`;
  $("#selected-body").dataset.trial = t.trial_id;
}

// --- explanation maps of the selected trial (GET /jobs/{id}/trials/{trial}/explanations) ----------------------
// Built on the server from the trial's export bundle the first time (seconds of CPU), cached there after; asked
// for with the "Show maps" button so that clicking through trials never queues builds. Answers kept per
// (trial, number of images) while the page shows the job; a refusal is kept only while the trial's status holds.
const explainKey = (trialId, n) => `${trialId}|${n}`;
const explainN = () => Number($("#explain-n").value) || 4;

let explainShown = "";  // what the panel shows now: a poll that changes nothing redraws nothing (no image flicker)
function setExplain(kind, html) {
  const body = $("#explain-body");
  if (explainShown === kind + html && body.dataset.state === kind) return;
  explainShown = kind + html;
  body.dataset.state = kind;
  body.setAttribute("aria-busy", String(kind === "loading"));
  body.innerHTML = html;
}

function renderExplain() {
  const t = state.trials.find((x) => x.trial_id === state.selected);
  const button = $("#explain-load");
  $("#explain-trial").textContent = t ? `trial ${t.trial_id}` : "";
  if (!t) {
    button.disabled = true;
    setExplain("idle", `<p class="muted">Select a trial (a point of the plot, or a row of the table: Tab to it and press Enter)
      to see where its prompt makes the model look.</p>`);
    return;
  }
  const n = explainN();
  const key = explainKey(t.trial_id, n);
  const got = state.explain.get(key);
  const busy = state.explainBusy.has(key);
  button.disabled = busy || !!(got && got.data);
  if (busy) {
    setExplain("loading", `<p class="loading">Building the maps of trial ${esc(t.trial_id)} on the server: its export bundle,
      then Grad-CAM${t.architecture?.module === "token" ? " and attention" : ""} on ${n} validation image(s). A few seconds the first time;
      cached after.</p>`);
    return;
  }
  if (got && got.data) { renderMaps(got.data); return; }
  if (got && got.problem && got.status === t.status) { setExplain(got.problem.kind, problemHtml(got.problem)); return; }
  const note = t.status === "completed" ? "" : ` It is ${esc(M.trialStatusText(t))}: only a completed trial with saved weights has maps.`;
  setExplain("ready", `<p class="muted">Maps of ${n} validation image(s) for trial ${esc(t.trial_id)}: not loaded yet.${note}
    <b>Show maps</b> builds them from the trial's export bundle on the server (a few seconds of CPU the first time; cached after).</p>`);
}

function problemHtml(p) {
  return `<div class="explain-problem ${esc(p.kind)}">
    <p><b>${esc(p.title)}</b></p>
    <p class="reason">The server says: <span class="why">${esc(p.reason)}</span></p>
    ${p.how ? `<p class="small">${esc(p.how)}</p><pre class="cli"><code>${esc(p.cli)}</code></pre>` : ""}
    ${p.retry ? '<p class="small">Show maps asks again.</p>' : ""}</div>`;
}

function renderMaps(d) {
  const examples = d.examples || [];
  if (!examples.length) {
    setExplain("empty", `<p>The export bundle of trial ${esc(d.trial_id)} has no example maps: the server could not read the
      job's validation images (its dataset is not where the job says). <code>promptsearch explain BUNDLE IMAGE&hellip;</code>
      makes them for images of your own.</p>`);
    return;
  }
  const names = M.mapOrder(d.map_names || []);
  const fig = (png, alt, caption, cls) =>
    `<figure class="${cls}"><img src="${M.pngSrc(png)}" alt="${esc(alt)}" title="${esc(alt)}"><figcaption>${esc(caption)}</figcaption></figure>`;
  const prompt = d.pixel_prompt
    ? fig(d.pixel_prompt, `the learned pixel prompt of trial ${d.trial_id} (grey: unchanged; scaled to its largest change)`, "learned pixel prompt", "prompt") : "";
  const rows = examples.map((e) => `<li class="explain-example" data-image="${esc(e.image)}">
      <p class="small caption">${esc(M.exampleCaption(e, fmt))}</p>
      <div class="explain-row">${e.input ? fig(e.input, `${e.image}: the validation image`, "image", "input") : ""}` +
      names.filter((k) => e.maps && e.maps[k]).map((k) => fig(e.maps[k], `${e.image}: ${M.mapLabel(k)} over the image`, M.mapLabel(k), "map")).join("") +
      "</div></li>").join("");
  setExplain("maps", `<p class="small muted">${esc(d.module)} prompt on ${esc(d.backbone)} &middot; classes ${esc((d.classes || []).join(", "))}
      &middot; overlays: warm colours mark what the prediction rests on most. Validation images only (never the test split).</p>
    <div class="explain-grid">${prompt ? `<div class="explain-prompt">${prompt}</div>` : ""}<ol class="explain-examples">${rows}</ol></div>`);
}

async function loadExplain() {
  const t = state.trials.find((x) => x.trial_id === state.selected);
  if (!t) return;
  const jobId = state.jobId, n = explainN(), key = explainKey(t.trial_id, n);
  if (state.explainBusy.has(key)) return;
  const busy = state.explainBusy, cache = state.explain;  // this job's: a new job page gets new ones
  busy.add(key);
  renderExplain();
  try {
    const data = await getJSON(`/jobs/${jobId}/trials/${encodeURIComponent(t.trial_id)}/explanations?examples=${n}`);
    cache.set(key, {data});
  } catch (e) {
    cache.set(key, {problem: M.explainProblem(e, jobId, t.trial_id), status: t.status});
  } finally {
    busy.delete(key);
  }
  if (state.jobId === jobId) renderExplain();
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
  // the trial's record (rung, epochs) with the curve's own, fresher status
  const rec = (c) => Object.assign({}, state.trials.find((x) => x.trial_id === c.trial_id), {status: c.status});
  const traces = state.curves.map((c, i) => {
    const color = c.status === "failed" ? "#d62728" : PALETTE[i % PALETTE.length];
    const hist = c.history.filter((h) => h[metric] !== null && h[metric] !== undefined);
    const label = `${c.trial_id} (${M.trialStatusText(rec(c))}${c.status === "running" ? `, epoch ${c.epochs_done}/${epochs ?? "?"}` : ""})`;
    return {name: label, type: "scatter", mode: "lines+markers", meta: c.status, x: hist.map((h) => h.epoch), y: hist.map((h) => h[metric]),
      line: {color, dash: M.CURVE_DASH[c.status] || "solid", width: c.trial_id === state.selected ? 3 : 2},
      marker: {color, size: hist.map((_, k) => (k === hist.length - 1 ? 10 : 5)),
        symbol: hist.map((_, k) => (k === hist.length - 1 ? M.CURVE_END[c.status] || "circle" : "circle"))},
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
      <span class="swatch" style="border-color:${color}"></span>${esc(c.trial_id)} ${badge(c.status, rec(c))}
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
    const values = pts.map((t) => (log ? Math.log10(Math.max(M.value(t, o.name), 1e-12)) : M.value(t, o.name)));
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
        ${esc(j.name || j.id)} <span class="muted small">${esc(j.id)} \u00b7 ${esc(j.strategy)} \u00b7 ${j.done} done</span> ${jobBadge(j)}</label>`;
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
    fillAxisSelects(x, y, objs);
  }
  x.onchange = y.onchange = renderCompare;
  const ox = objs.find((o) => o.name === x.value), oy = objs.find((o) => o.name === y.value);
  const traces = [];
  d.jobs.forEach((j, i) => {
    const color = PALETTE[i % PALETTE.length];
    const shown = j.trials.filter((t) => !t.repeat_of);  // a re-run seed is inside its trial's mean +- sd
    const front = shown.filter((t) => t.on_front), rest = shown.filter((t) => !t.on_front);
    const tip = (t) => `<b>${esc(j.name || j.id)}</b> ${esc(t.trial_id)}${t.on_front ? " \u2605" : ""}<br>` +
      objs.map((o) => `${esc(o.name)}: ${esc(M.metricText(t, o.name, fmt))}`).join("<br>");
    traces.push(withBars({name: `${j.name || j.id}: front (${front.length})`, legendgroup: j.id, type: "scatter", mode: "markers", meta: j.id,
      x: front.map((t) => M.value(t, ox.name)), y: front.map((t) => M.value(t, oy.name)), text: front.map(tip),
      hovertemplate: "%{text}<extra></extra>", marker: {size: 12, color, line: {width: 1, color: "#1b2a3a"}}}, front, ox.name, oy.name, color));
    traces.push({name: `${j.name || j.id}: other trials`, legendgroup: j.id, type: "scatter", mode: "markers", showlegend: false,
      x: rest.map((t) => M.value(t, ox.name)), y: rest.map((t) => M.value(t, oy.name)), text: rest.map(tip),
      hovertemplate: "%{text}<extra></extra>", marker: {size: 7, color, opacity: 0.35}});
    const stair = front2d(shown.map((t) => ({x: M.value(t, ox.name), y: M.value(t, oy.name)})), ox, oy);
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
      <a href="#/jobs/${esc(j.id)}">${esc(j.name || j.id)}</a></td><td>${esc(j.strategy)}</td><td>${jobBadge(j)}</td>
    <td>${j.trials.length}</td><td>${j.front.length}</td><td>${fmt(j.hypervolume)}</td></tr>`).join("");
}

// ---------------------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("#submit-form").addEventListener("submit", submitJob);
  $("#export-selected").onclick = () => state.selected && exportBundle("trial=" + state.selected);
  $("#export-knee").onclick = () => exportBundle("knee");
  $("#explain-load").onclick = loadExplain;
  $("#explain-n").onchange = renderExplain;
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
