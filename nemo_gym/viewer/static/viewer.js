// The rollout viewer page. Talks only to this server's /api; draws its charts as inline SVG.
// Every piece of row data reaches the page through textContent, never innerHTML: rows hold
// model-written text, which must show as text and never run as markup.
"use strict";

const PAGE_SIZE = 50;
const SVG_NS = "http://www.w3.org/2000/svg";
const state = {
  sort: "row", desc: false, offset: 0, total: 0, selected: null,
  status: null, metricsLoaded: false, compareLoaded: false, failuresLoaded: false,
};

// ---- small DOM helpers -----------------------------------------------------------------------
function $(selector) { return document.querySelector(selector); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key === "onclick") node.addEventListener("click", value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svgEl(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  return node;
}

function fmt(value, digits = 3) {
  if (value === null || value === undefined) return "-";
  if (typeof value === "number") return Number.isInteger(value) ? value.toLocaleString() : value.toFixed(digits);
  return String(value);
}

// Rewards, means and pass@k are fractions: always three decimals, so 1 and 0.5 line up as 1.000 and 0.500.
function fmtReward(reward) {
  return reward === null || reward === undefined ? "-" : Number(reward).toFixed(3);
}
const COUNT_METRICS = new Set(["rollouts", "failed", "tasks"]);

function rewardClass(reward) {
  if (reward === null || reward === undefined) return "";
  return reward >= 1 ? "reward-good" : reward <= 0 ? "reward-bad" : "";
}

async function api(path) {
  const response = await fetch(path);
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status} ${await response.text()}`);
  return response.json();
}

// Loads the page starts by itself (clicks, typing, polling, a finished index) go through here, so a
// stopped server or a refused request is said in the status line instead of escaping as an unhandled
// "Failed to fetch".
function reported(promise) {
  return promise.catch(error => {
    const reason = error instanceof TypeError ? "cannot reach the viewer server" : "a request failed";
    $("#status").textContent = `${reason} (${error.message})`;
  });
}

function pretty(text) {
  // Tool arguments and outputs are usually JSON inside a string; show them indented when they are.
  if (typeof text !== "string") return JSON.stringify(text, null, 2);
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch (_) { return text; }
}

// ---- tabs ------------------------------------------------------------------------------------
function showTab(name) {
  document.querySelectorAll("#tabs button").forEach(b => b.classList.toggle("active", b.dataset.tab === name));
  document.querySelectorAll(".tab").forEach(s => s.classList.toggle("active", s.id === `tab-${name}`));
  if (name === "metrics") reported(loadMetrics());
  if (name === "failures") reported(loadFailures());
  if (name === "compare") reported(loadCompare());
}

// ---- status ----------------------------------------------------------------------------------
async function pollStatus() {
  // Keeps polling through a lost server (stopped, restarting) and says so, instead of dying with an
  // unhandled "Failed to fetch".
  let delay = 3000;
  try {
    delay = await refreshStatus();
  } catch (error) {
    $("#status").textContent = `cannot reach the viewer server (${error.message}); retrying`;
  }
  setTimeout(pollStatus, delay);
}

async function refreshStatus() {
  const status = await api("/api/status");
  const wasComplete = state.status && state.status.a.complete && (!state.status.b || state.status.b.complete);
  state.status = status;
  $("#title").textContent = status.title;
  document.title = `${status.title} - rollout viewer`;
  const a = status.a;
  let text = a.complete ? `${a.rows.toLocaleString()} rows` :
    `indexing: ${a.rows.toLocaleString()} rows (${Math.round(100 * a.bytes_read / Math.max(1, a.file_size))}%)`;
  if (a.pending_bytes) text += " (+ a row still being written)";
  if (a.corrupt_lines) text += `, ${a.corrupt_lines} unreadable line(s) skipped (first: line ${a.first_corrupt_line})`;
  if (status.b) text += ` | compared with ${status.b.path}` + (status.b.complete ? "" : " (indexing)");
  $("#status").textContent = text;
  $("#compare-tab").hidden = !status.b;
  updateEndings(a.endings);
  const complete = a.complete && (!status.b || status.b.complete);
  if (complete && !wasComplete) {
    reported(loadRows());
    reported(loadFailureCount());
    if ($("#tab-metrics").classList.contains("active")) reported(loadMetrics());
    if ($("#tab-compare").classList.contains("active")) reported(loadCompare());
  }
  if (!complete && !state.total) reported(loadRows());
  // While indexing, poll often; afterwards now and then, to pick up rows a running collection appends.
  return complete ? 3000 : 500;
}

function updateEndings(endings) {
  const select = $("#ending");
  const known = new Set([...select.options].map(o => o.value));
  for (const ending of endings) {
    if (!known.has(ending)) select.append(el("option", { value: ending }, ending));
  }
}

// ---- the table -------------------------------------------------------------------------------
function rowQuery() {
  const params = new URLSearchParams({ offset: state.offset, limit: PAGE_SIZE, sort: state.sort, desc: state.desc });
  const fields = { q: "#q", task: "#task", reward_min: "#reward-min", reward_max: "#reward-max", ending: "#ending" };
  for (const [name, selector] of Object.entries(fields)) {
    const value = $(selector).value.trim();
    if (value !== "") params.set(name, value);
  }
  return params;
}

let rowsRequest = 0;

async function loadRows() {
  const request = ++rowsRequest;
  const data = await api(`/api/rows?${rowQuery()}`);
  if (request !== rowsRequest) return;  // a newer query went out meanwhile (typing, clearing): its answer wins
  state.total = data.total;
  const body = $("#rows tbody");
  body.replaceChildren();
  for (const row of data.rows) {
    const tr = el("tr", { "data-row": row.row },
      el("td", {}, row.row), el("td", {}, fmt(row.task)), el("td", {}, fmt(row.rollout)),
      el("td", { class: rewardClass(row.reward) }, fmtReward(row.reward)), el("td", {}, row.turns),
      el("td", {}, fmt(row.tokens)), el("td", {}, row.ending));
    if (row.row === state.selected) tr.classList.add("selected");
    tr.addEventListener("click", () => reported(selectRow(row.row, tr)));
    body.append(tr);
  }
  const last = Math.min(data.offset + data.rows.length, data.total);
  $("#page-info").textContent = data.total ?
    `${(data.offset + 1).toLocaleString()}-${last.toLocaleString()} of ${data.total.toLocaleString()}` +
    (data.complete ? "" : " (so far)") : "no rows match";
  $("#prev").disabled = data.offset === 0;
  $("#next").disabled = last >= data.total;
  document.querySelectorAll("#rows th[data-sort]").forEach(th => {
    th.classList.toggle("sorted-asc", th.dataset.sort === state.sort && !state.desc);
    th.classList.toggle("sorted-desc", th.dataset.sort === state.sort && state.desc);
  });
}

async function selectRow(rowNumber, tr) {
  state.selected = rowNumber;
  document.querySelectorAll("#rows tbody tr").forEach(r => r.classList.remove("selected"));
  if (tr) tr.classList.add("selected");
  const row = await api(`/api/rows/${rowNumber}`);
  const detail = $("#detail");
  detail.replaceChildren(renderConversation(row, rowNumber));
  detail.scrollTop = 0;
}

// ---- one conversation ------------------------------------------------------------------------
const ROW_CORE_FIELDS = new Set(["responses_create_params", "response", "reward"]);

function textOfContent(content) {
  if (content === null || content === undefined) return "";
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content.map(part => {
      if (typeof part === "string") return part;
      if (part && typeof part.text === "string") return part.text;
      if (part && typeof part.refusal === "string") return `[refusal] ${part.refusal}`;
      return JSON.stringify(part);
    }).join("\n");
  }
  return JSON.stringify(content);
}

function renderItem(item) {
  if (typeof item === "string") return el("div", { class: "item user" }, el("div", { class: "role" }, "user"), el("div", { class: "text" }, item));
  const type = item.type || "message";
  if (type === "function_call") {
    return el("div", { class: "item function_call" },
      el("div", { class: "role" }, "tool call"),
      el("div", {}, el("strong", { class: "tool-name" }, item.name || "?"), el("span", { class: "muted" }, ` ${item.call_id || ""}`)),
      el("pre", { class: "arguments" }, pretty(item.arguments)));
  }
  if (type === "function_call_output") {
    return el("div", { class: "item function_call_output" },
      el("div", { class: "role" }, "tool output"), el("pre", {}, pretty(item.output)));
  }
  if (type === "reasoning") {
    const parts = [...(item.summary || []), ...(item.content || [])];
    return el("details", { class: "item reasoning", open: "" },
      el("summary", {}, "reasoning"), el("div", { class: "text" }, textOfContent(parts)));
  }
  if (type === "message") {
    const role = item.role || "assistant";
    return el("div", { class: `item ${role}` }, el("div", { class: "role" }, role),
      el("div", { class: "text" }, textOfContent(item.content)));
  }
  return el("div", { class: "item" }, el("div", { class: "role" }, type), el("pre", {}, JSON.stringify(item, null, 2)));
}

function kvTable(entries) {
  return el("table", { class: "kv compact" }, el("tbody", {}, ...entries.map(([key, value]) =>
    el("tr", {}, el("td", {}, key),
      el("td", {}, typeof value === "object" && value !== null ? el("pre", {}, JSON.stringify(value, null, 2)) : fmt(value))))));
}

function flatten(object, prefix = "") {
  const out = [];
  for (const [key, value] of Object.entries(object || {})) {
    if (value && typeof value === "object" && !Array.isArray(value)) out.push(...flatten(value, `${prefix}${key}.`));
    else out.push([`${prefix}${key}`, value]);
  }
  return out;
}

function renderConversation(row, rowNumber) {
  const params = row.responses_create_params || {};
  const response = row.response || {};
  const root = el("div", { class: "conversation" });
  root.append(el("div", { class: "meta" },
    el("span", {}, `row ${rowNumber}`),
    el("span", {}, `task ${fmt(row._ng_task_index)}`),
    el("span", {}, `rollout ${fmt(row._ng_rollout_index)}`),
    el("span", { class: rewardClass(row.reward) }, `reward ${fmtReward(row.reward)}`),
    el("span", {}, `ended: ${row.episode_end || "-"}`)));

  root.append(el("h3", {}, "Input"));
  if (params.instructions) root.append(renderItem({ type: "message", role: "system", content: params.instructions }));
  const input = typeof params.input === "string" ? [params.input] : (params.input || []);
  input.forEach(item => root.append(renderItem(item)));
  const tools = params.tools || [];
  if (tools.length) {
    root.append(el("details", { class: "tools" }, el("summary", {}, `${tools.length} tool(s) offered: ${tools.map(t => t.name || (t.function && t.function.name) || t.type).join(", ")}`),
      el("pre", {}, JSON.stringify(tools, null, 2))));
  }

  root.append(el("h3", {}, "Response"));
  const output = response.output || [];
  if (!output.length) root.append(el("p", { class: "muted" }, "(no output items)"));
  output.forEach(item => root.append(renderItem(item)));
  if (response.incomplete_details) root.append(el("p", { class: "reward-bad" }, `incomplete: ${JSON.stringify(response.incomplete_details)}`));

  const extras = Object.entries(row).filter(([key]) => !ROW_CORE_FIELDS.has(key) && !key.startsWith("_ng_"));
  root.append(el("h3", {}, "Verify extras"));
  root.append(extras.length ? kvTable(extras) : el("p", { class: "muted" }, "(none)"));
  root.append(el("h3", {}, "Usage"));
  root.append(response.usage ? kvTable(flatten(response.usage)) : el("p", { class: "muted" }, "(not recorded)"));
  root.append(el("details", {}, el("summary", {}, "raw row JSON"), el("pre", {}, JSON.stringify(row, null, 2))));
  return root;
}

// ---- metrics ---------------------------------------------------------------------------------
async function loadMetrics() {
  const data = await api("/api/metrics");
  if (!data.complete) { $("#metrics-message").textContent = `Indexing (${data.indexed.toLocaleString()} rows so far)...`; return; }
  state.metricsLoaded = true;
  const metrics = data.metrics;
  $("#metrics-message").textContent = data.error ? `Metrics unavailable: ${data.error}` : "";
  const cards = $("#key-metrics");
  cards.replaceChildren();
  if (metrics) {
    const key = metrics.key_metrics || {};
    const shown = { ...key, tasks: metrics.counts.tasks };
    delete shown.rollouts_per_s;
    for (const [name, value] of Object.entries(shown)) {
      cards.append(el("div", { class: "card" }, el("div", { class: "label" }, name), el("div", { class: "value" }, COUNT_METRICS.has(name) ? fmt(value) : fmtReward(value))));
    }
    const groups = data.groups;  // GRPO groups: a task's rollouts (its own size), complete when none is missing
    if (groups) {
      const sizes = groups.group_size != null ? `${groups.group_size}` : groups.group_sizes.length ? `${groups.group_sizes[0]} to ${groups.group_sizes[groups.group_sizes.length - 1]}` : "?";
      const listed = groups.incomplete_tasks.length ? ` (tasks ${groups.incomplete_tasks.join(", ")}${groups.incomplete > groups.incomplete_tasks.length ? ", ..." : ""})` : "";
      cards.append(el("div", { class: "card", title: `incomplete${listed}` }, el("div", { class: "label" }, `complete groups of ${sizes}`),
        el("div", { class: "value" }, `${fmt(groups.complete)} / ${fmt(groups.num_groups)}`)));
    }
    const passk = $("#passk tbody");
    passk.replaceChildren();
    for (const [name, value] of Object.entries(metrics.pass_at_k || {})) {
      const k = name.split("@")[1];
      passk.append(el("tr", {}, el("td", {}, k), el("td", {}, fmtReward(value)), el("td", {}, fmtReward(metrics.mean_at_k[`mean@${k}`])),
        el("td", {}, fmtReward(metrics.max_at_k[`max@${k}`])), el("td", {}, fmt(metrics.num_tasks_at_k[k]))));
    }
    const fields = $("#fields tbody");
    fields.replaceChildren();
    for (const [name, stats] of Object.entries(metrics.fields || {})) {
      fields.append(el("tr", {}, el("td", {}, name), ...["mean", "std", "min", "max", "count"].map(s => el("td", {}, fmt(stats[s])))));
    }
    const usage = $("#usage tbody");
    usage.replaceChildren(...Object.entries(metrics.usage || {}).map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, fmt(v)))));
  }
  drawHistogram($("#histogram"), data.histogram);
  drawBars($("#per-task"), data.per_task.map(t => ({ label: `task ${t._ng_task_index}`, value: t.mean_reward })), "mean reward");
}

function drawHistogram(svg, histogram) {
  const width = 420, height = 220, pad = { left: 36, right: 10, top: 10, bottom: 30 };
  svg.setAttribute("width", width); svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  const counts = histogram.counts;
  if (!counts.length) { svg.append(Object.assign(svgEl("text", { x: 20, y: 30 }), { textContent: "no rewards" })); return; }
  const max = Math.max(...counts);
  const plotW = width - pad.left - pad.right, plotH = height - pad.top - pad.bottom;
  const barW = plotW / counts.length;
  counts.forEach((count, i) => {
    if (!count) return;  // an empty bin is the absence of a bar
    const h = plotH * count / max;
    const bar = svgEl("rect", { class: "bar", x: pad.left + i * barW + 1, y: pad.top + plotH - h, width: Math.max(1, barW - 2), height: h });
    const title = svgEl("title");
    title.textContent = `[${histogram.edges[i].toFixed(2)}, ${histogram.edges[i + 1].toFixed(2)}${i === counts.length - 1 ? "]" : ")"}: ${count} rollouts`;
    bar.append(title);
    svg.append(bar);
    const label = svgEl("text", { x: pad.left + i * barW + barW / 2, y: pad.top + plotH - h - 2, "text-anchor": "middle" });
    label.textContent = count;
    svg.append(label);
  });
  svg.append(svgEl("line", { class: "axis", x1: pad.left, y1: pad.top + plotH, x2: width - pad.right, y2: pad.top + plotH }));
  const edges = histogram.edges;
  [0, Math.floor(counts.length / 2), counts.length].forEach(i => {
    const label = svgEl("text", { x: pad.left + i * barW, y: height - 12, "text-anchor": "middle" });
    label.textContent = edges[i].toFixed(2);
    svg.append(label);
  });
  const axisLabel = svgEl("text", { x: width / 2, y: height - 1, "text-anchor": "middle" });
  axisLabel.textContent = "reward";
  svg.append(axisLabel);
}

function drawBars(svg, points, what, signed = false) {
  // Many tasks: average neighbours into at most MAX_BARS columns so the chart stays readable.
  const MAX_BARS = 300;
  const width = 520, height = 220, pad = { left: 36, right: 10, top: 10, bottom: 24 };
  svg.setAttribute("width", width); svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  if (!points.length) { const t = svgEl("text", { x: 20, y: 30 }); t.textContent = "no tasks"; svg.append(t); return; }
  let bars = points;
  if (points.length > MAX_BARS) {
    const group = Math.ceil(points.length / MAX_BARS);
    bars = [];
    for (let i = 0; i < points.length; i += group) {
      const chunk = points.slice(i, i + group);
      bars.push({ label: `${chunk[0].label} .. ${chunk[chunk.length - 1].label} (mean of ${chunk.length})`,
        value: chunk.reduce((s, p) => s + p.value, 0) / chunk.length });
    }
  }
  const values = bars.map(b => b.value);
  const low = Math.min(0, ...values), high = Math.max(signed ? 0 : 1, ...values);
  const span = high - low || 1;
  const plotW = width - pad.left - pad.right, plotH = height - pad.top - pad.bottom;
  const y = v => pad.top + plotH * (high - v) / span;
  const barW = plotW / bars.length;
  bars.forEach((b, i) => {
    const top = Math.min(y(b.value), y(0)), h = Math.abs(y(b.value) - y(0));
    const cls = signed ? (b.value < 0 ? "bar negative" : "bar positive") : "bar";
    const rect = svgEl("rect", { class: cls, x: pad.left + i * barW, y: top, width: Math.max(1, barW - (barW > 4 ? 1 : 0)), height: Math.max(h, 0.5) });
    const title = svgEl("title");
    title.textContent = `${b.label}: ${what} ${b.value.toFixed(3)}`;
    rect.append(title);
    svg.append(rect);
  });
  svg.append(svgEl("line", { class: "axis", x1: pad.left, y1: y(0), x2: width - pad.right, y2: y(0) }));
  for (const v of [low, high]) {
    const label = svgEl("text", { x: pad.left - 4, y: y(v) + 3, "text-anchor": "end" });
    label.textContent = v.toFixed(2);
    svg.append(label);
  }
  const caption = svgEl("text", { x: width / 2, y: height - 6, "text-anchor": "middle" });
  caption.textContent = `${points.length.toLocaleString()} tasks, in task order`;
  svg.append(caption);
}

// ---- failures --------------------------------------------------------------------------------
async function loadFailureCount() {
  const data = await api("/api/failures?limit=1");
  $("#failure-count").textContent = data.exists ? `(${data.total})` : "";
}

async function loadFailures() {
  const data = await api("/api/failures?limit=200");
  $("#failures-path").textContent = data.exists ? `${data.path}: ${data.total} failed rollouts (showing up to 200)` :
    `No failures file (${data.path}): every rollout produced a row.`;
  $("#failure-types tbody").replaceChildren(...data.by_type.map(t =>
    el("tr", {}, el("td", {}, t.error_type), el("td", {}, t.count), el("td", { class: "text" }, t.example))));
  $("#failure-rows tbody").replaceChildren(...data.rows.map(r =>
    el("tr", {}, el("td", {}, fmt(r._ng_task_index)), el("td", {}, fmt(r._ng_rollout_index)), el("td", {}, r.error_type || "-"),
      el("td", {}, fmt(r.status_code)), el("td", {}, fmt(r.attempts)), el("td", { class: "text" }, r.message || ""))));
}

// ---- compare ---------------------------------------------------------------------------------
async function loadCompare() {
  const data = await api("/api/compare");
  const s = data.summary;
  $("#compare-summary").textContent = `A: ${data.a}  B: ${data.b}. ${s.shared_tasks} shared tasks: mean reward ` +
    `${fmtReward(s.a_mean)} -> ${fmtReward(s.b_mean)}; ${s.improved} better, ${s.worse} worse, ${s.unchanged} unchanged` +
    (s.only_in_a || s.only_in_b ? `; ${s.only_in_a} only in A, ${s.only_in_b} only in B` : "") + (data.complete ? "" : " (still indexing)");
  const shared = data.tasks.filter(t => t.delta !== null);
  drawBars($("#delta-chart"), shared.map(t => ({ label: `task ${t.task}`, value: t.delta })), "delta", true);
  // Biggest regressions first: that is what a person comparing two runs looks for.
  const ordered = [...data.tasks].sort((x, y) => (x.delta ?? Infinity) - (y.delta ?? Infinity) || x.task - y.task);
  $("#compare-rows tbody").replaceChildren(...ordered.map(t => {
    const tr = el("tr", { "data-task": t.task }, el("td", {}, t.task), el("td", {}, fmtReward(t.a_mean)), el("td", {}, fmtReward(t.b_mean)),
      el("td", { class: t.delta > 0 ? "reward-good" : t.delta < 0 ? "reward-bad" : "" }, t.delta === null ? "-" : (t.delta > 0 ? "+" : "") + fmtReward(t.delta)),
      el("td", {}, t.a_rollouts), el("td", {}, t.b_rollouts));
    tr.addEventListener("click", () => reported(openCompareTask(t.task, tr)));
    return tr;
  }));
}

async function openCompareTask(task, tr) {
  document.querySelectorAll("#compare-rows tbody tr").forEach(r => r.classList.remove("selected"));
  tr.classList.add("selected");
  const data = await api(`/api/compare/task/${task}`);
  for (const side of ["a", "b"]) {
    const select = $(`#compare-${side}-select`);
    const target = $(`#compare-${side}`);
    const rows = data[side];
    select.replaceChildren(...rows.map(r => el("option", { value: r.row }, `rollout ${fmt(r.rollout)}: reward ${fmtReward(r.reward)}`)));
    const show = async () => {
      const row = await api(`/api/rows/${select.value}?run=${side}`);
      target.replaceChildren(renderConversation(row, Number(select.value)));
    };
    select.onchange = () => reported(show());
    if (rows.length) await show(); else target.replaceChildren(el("p", { class: "muted" }, "(task not in this run)"));
  }
}

// ---- wiring ----------------------------------------------------------------------------------
function wire() {
  document.querySelectorAll("#tabs button").forEach(b => b.addEventListener("click", () => showTab(b.dataset.tab)));
  document.querySelectorAll("#rows th[data-sort]").forEach(th => th.addEventListener("click", () => {
    if (state.sort === th.dataset.sort) state.desc = !state.desc; else { state.sort = th.dataset.sort; state.desc = false; }
    state.offset = 0;
    reported(loadRows());
  }));
  let typing = null;
  const refilter = () => { state.offset = 0; reported(loadRows()); };
  $("#filters").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(refilter, 250); });
  $("#filters").addEventListener("submit", event => { event.preventDefault(); refilter(); });
  $("#filters").addEventListener("reset", () => setTimeout(refilter, 0));
  $("#prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE_SIZE); reported(loadRows()); });
  $("#next").addEventListener("click", () => { state.offset += PAGE_SIZE; reported(loadRows()); });
}

wire();
pollStatus().catch(error => { $("#status").textContent = String(error); });
