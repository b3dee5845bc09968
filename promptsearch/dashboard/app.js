// promptsearch dashboard: a job list with a submit form, and a job page with the Pareto front.
// Plain JS + Plotly (served by the API from the installed plotly package); talks only to the REST API.
"use strict";

const TOKEN_KEY = "promptsearch.token";
const POLL_MS = 2000;
const ACTIVE = new Set(["queued", "running"]);
const $ = (sel) => document.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));

// ---------------------------------------------------------------------------------------------
// API access, with the bearer token asked once and kept in localStorage
let tokenPrompt = null;

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
  const res = await fetch(path, Object.assign({}, opts, {headers}));
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

function flash(message, kind = "info") {
  const el = $("#flash");
  el.className = kind;
  el.innerHTML = message;
  if (kind !== "error") setTimeout(() => { if (el.innerHTML === message) el.innerHTML = ""; }, 8000);
}

function updateTokenButton() {
  const b = $("#forget-token");
  b.hidden = !localStorage.getItem(TOKEN_KEY);
  b.onclick = () => { localStorage.removeItem(TOKEN_KEY); b.hidden = true; flash("Token forgotten."); };
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

// ---------------------------------------------------------------------------------------------
// routing
let timer = null;
let meta = null;

function route(ev) {
  clearTimeout(timer);
  if (ev && $("#flash").className !== "info") $("#flash").innerHTML = "";  // errors belong to the page they came from
  const m = location.hash.match(/^#\/jobs\/([A-Za-z0-9_.\-]+)$/);
  $("#view-jobs").hidden = !!m;
  $("#view-job").hidden = !m;
  if (m) showJob(m[1]); else showJobs();
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

async function showJobs() {
  try {
    await loadMeta();
    const jobs = (await getJSON("/jobs")).jobs.reverse();  // newest first
    const body = $("#jobs-table tbody");
    body.innerHTML = jobs.map((j) => {
      const pct = j.trials ? Math.round(100 * j.done / j.trials) : 0;
      return `<tr data-job="${esc(j.id)}">
        <td><a href="#/jobs/${esc(j.id)}">${esc(j.name || j.id)}</a><div class="muted small">${esc(j.id)}</div></td>
        <td>${badge(j.status)}</td>
        <td><progress max="${j.trials}" value="${j.done}"></progress> <span class="small">${j.done}/${j.trials}${j.failed ? `, ${j.failed} failed` : ""}${j.running ? `, ${j.running} running` : ""}</span></td>
        <td>${esc(j.space)} / ${esc(j.dataset)}</td><td>${esc(j.strategy)}</td>
        <td>${fmt(j.hypervolume)}</td><td class="small">${bestText(j)}</td></tr>`;
    }).join("");
    $("#jobs-empty").hidden = jobs.length > 0;
    $("#jobs-updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    flash("Could not load jobs: " + esc(e.message), "error");
  }
  if (location.hash === "" || location.hash === "#/" || location.hash === "#") timer = setTimeout(showJobs, POLL_MS);
}

// ---------------------------------------------------------------------------------------------
// one job
const state = {jobId: null, job: null, trials: [], pareto: null, selected: null, sort: {key: "number", dir: 1}, sig: ""};

async function showJob(id) {
  if (state.jobId !== id) {
    Object.assign(state, {jobId: id, job: null, trials: [], pareto: null, selected: null, sig: ""});
    ["pareto", "hv-plot", "time-plot"].forEach((p) => Plotly.purge(p));
    $("#axis-x").innerHTML = "";
  }
  try {
    const [job, page, pareto] = await Promise.all([
      getJSON(`/jobs/${id}`), getJSON(`/jobs/${id}/trials?limit=10000`), getJSON(`/jobs/${id}/pareto`)]);
    const sig = JSON.stringify([job.status, job.done, job.failed, job.running, page.total, pareto.front, page.trials.map((t) => t.status)]);
    state.job = job;
    renderJobHead(job);
    if (sig !== state.sig) {
      state.sig = sig;
      state.trials = page.trials;
      state.pareto = pareto;
      setupAxes(job);
      renderPareto();
      renderHypervolume();
      renderTimeline();
      renderTable();
      renderSelected();
    } else if (ACTIVE.has(job.status)) {
      state.trials = page.trials;  // epochs move on: refresh what shows progress
      renderTimeline();
      renderTable();
    }
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
const finished = () => state.trials.filter((t) => t.status === "completed" && state.job.objectives.every((o) => isFinite(t.metrics?.[o.name])));

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
  if (t.test_metrics && t.test_metrics.auc !== undefined) lines.push(`test auc: ${fmt(t.test_metrics.auc)}`);
  return lines.join("<br>");
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
  const xName = $("#axis-x").value, yName = $("#axis-y").value, cName = $("#axis-c").value;
  const ox = objective(xName), oy = objective(yName);
  const pts = finished();
  const front = pts.filter((t) => t.on_front), dominated = pts.filter((t) => !t.on_front);
  const cvals = front.map((t) => (cName ? t.metrics[cName] : null));
  const call = pts.map((t) => t.metrics[cName]).filter((v) => isFinite(v));  // colour range over every finished trial
  const [cmin, cmax] = call.length ? [Math.min(...call), Math.max(...call)] : [0, 1];
  const traces = [
    {name: "Pareto front (all objectives)", type: "scatter", mode: "markers", meta: "trials",
      x: front.map((t) => t.metrics[xName]), y: front.map((t) => t.metrics[yName]),
      customdata: front.map((t) => t.trial_id), text: front.map(hoverText), hovertemplate: "%{text}<extra></extra>",
      marker: Object.assign({size: 12, line: {width: 1, color: "#1b2a3a"}},
        cName ? {color: cvals, colorscale: "Viridis", cmin, cmax: cmax > cmin ? cmax : cmin + 1e-9, showscale: true,
          colorbar: {title: {text: cName}, thickness: 12}} : {color: "#1f77b4"})},
    {name: "dominated", type: "scatter", mode: "markers", meta: "trials",
      x: dominated.map((t) => t.metrics[xName]), y: dominated.map((t) => t.metrics[yName]),
      customdata: dominated.map((t) => t.trial_id), text: dominated.map(hoverText), hovertemplate: "%{text}<extra></extra>",
      marker: {size: 9, color: "rgba(150,150,150,0.55)", line: {width: 1, color: "rgba(110,110,110,0.8)"}}},
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
  Plotly.react(div, traces, layout, {displaylogo: false, responsive: true});
  if (!div.dataset.bound) {
    div.dataset.bound = "1";
    div.on("plotly_click", (ev) => {
      const p = ev.points.find((q) => q.customdata !== undefined);
      if (p) select(p.customdata);
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
  {displaylogo: false, responsive: true});
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
  {displaylogo: false, responsive: true});
}

function columns() {
  const objs = state.job.objectives.map((o) => ({key: "m:" + o.name, label: `${o.name} ${arrow(o)}`, get: (t) => t.metrics?.[o.name]}));
  return [
    {key: "number", label: "#", get: (t) => t.number},
    {key: "trial_id", label: "trial", get: (t) => t.trial_id},
    {key: "status", label: "status", get: (t) => t.status},
    {key: "on_front", label: "front", get: (t) => (t.on_front ? 1 : 0)},
    ...objs,
    {key: "t:auc", label: "test auc", get: (t) => t.test_metrics?.auc},
    {key: "arch", label: "architecture", get: (t) => archSummary(t.architecture)},
    {key: "wall", label: "time (s)", get: (t) => t.wall_time_s},
  ];
}

function renderTable() {
  const cols = columns();
  const {key, dir} = state.sort;
  const col = cols.find((c) => c.key === key) || cols[0];
  const rows = [...state.trials].sort((a, b) => {
    const va = col.get(a), vb = col.get(b);
    if (va === undefined || va === null) return 1;
    if (vb === undefined || vb === null) return -1;
    return (typeof va === "number" && typeof vb === "number" ? va - vb : String(va).localeCompare(String(vb))) * dir;
  });
  $("#trials-table thead").innerHTML = "<tr>" + cols.map((c) =>
    `<th data-key="${esc(c.key)}" aria-sort="${c.key === key ? (dir > 0 ? "ascending" : "descending") : "none"}">${esc(c.label)}</th>`).join("") + "</tr>";
  $("#trials-table tbody").innerHTML = rows.map((t) => `<tr data-trial="${esc(t.trial_id)}" class="${t.trial_id === state.selected ? "selected" : ""}">` +
    cols.map((c) => {
      const v = c.get(t);
      if (c.key === "status") return `<td>${badge(v)}${v === "running" ? ` <span class="muted small">epoch ${t.epochs_done}/${state.job.spec?.budget?.epochs ?? "?"}</span>` : ""}${t.reason ? ` <span class="muted small" title="${esc(t.reason)}">${esc(t.reason.split("\n")[0].slice(0, 60))}</span>` : ""}</td>`;
      if (c.key === "on_front") return `<td>${v ? "\u2605" : ""}</td>`;
      return `<td>${esc(fmt(v))}</td>`;
    }).join("") + "</tr>").join("");
  $("#trials-count").textContent = `${state.trials.length} trial(s)`;
  $("#trials-table thead").onclick = (ev) => {
    const th = ev.target.closest("th");
    if (!th) return;
    state.sort = {key: th.dataset.key, dir: state.sort.key === th.dataset.key ? -state.sort.dir : 1};
    renderTable();
  };
  $("#trials-table tbody").onclick = (ev) => {
    const tr = ev.target.closest("tr");
    if (tr) select(tr.dataset.trial);
  };
}

function select(trialId) {
  state.selected = trialId;
  renderPareto();
  renderTable();
  renderSelected();
}

function renderSelected() {
  const t = state.trials.find((x) => x.trial_id === state.selected);
  $("#export-selected").disabled = !(t && t.status === "completed");
  if (!t) {
    $("#selected-body").innerHTML = "Click a point in the plot or a row in the table.";
    return;
  }
  const metricRows = Object.entries(t.metrics || {}).map(([k, v]) =>
    `<tr><td>${esc(k)}</td><td>${esc(fmt(v))}</td><td>${esc(fmt(t.test_metrics?.[k]))}</td></tr>`).join("");
  $("#selected-body").innerHTML = `
    <p><b>trial ${esc(t.trial_id)}</b> ${badge(t.status)} ${t.on_front ? "\u2605 on the Pareto front" : ""}</p>
    <pre class="arch">${esc(JSON.stringify(t.architecture, null, 1))}</pre>
    <table class="data compact"><thead><tr><th>metric</th><th>validation</th><th>test</th></tr></thead><tbody>${metricRows}</tbody></table>`;
  $("#selected-body").dataset.trial = t.trial_id;
}

async function exportBundle(pick) {
  try {
    const res = await api(`/jobs/${state.jobId}/export?pick=${encodeURIComponent(pick)}`);
    const blob = await res.blob();
    const cd = res.headers.get("Content-Disposition") || "";
    const m = cd.match(/filename="?([^";]+)"?/);
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = m ? m[1] : `${state.jobId}.zip`;
    document.body.appendChild(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
    flash(`Exported ${esc(a.download)} (${(blob.size / 1024).toFixed(1)} KiB): load it with promptsearch.load_exported().`);
  } catch (e) {
    flash("Export failed: " + esc(e.message), "error");
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
document.addEventListener("DOMContentLoaded", () => {
  $("#submit-form").addEventListener("submit", submitJob);
  $("#export-selected").onclick = () => state.selected && exportBundle("trial=" + state.selected);
  $("#export-knee").onclick = () => exportBundle("knee");
  $("#cancel-job").onclick = () => jobAction("cancel");
  $("#resume-job").onclick = () => jobAction("resume");
  window.addEventListener("hashchange", route);
  updateTokenButton();
  route();
});
