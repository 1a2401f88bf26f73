// The operators' dashboard. Plain JavaScript, no libraries: every byte is served by the
// aggregator. Data comes from the HTTP API with the session cookie set at login; text from
// events is always inserted as text, never as markup.
"use strict";

const $ = (id) => document.getElementById(id);
const me = { user: null, role: null, county: null };
let checkpoints = [];
let alertSource = null;
let healthTimer = null;
let searchCursor = null;
let searchQuery = "";

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text != null) e.textContent = String(text);
  return e;
}

async function api(path, options) {
  const res = await fetch(path, Object.assign({ credentials: "same-origin", headers: { "Content-Type": "application/json" } }, options || {}));
  if (res.status === 401 && path !== "/api/v1/login") {
    showLogin();
    throw new Error("not logged in");
  }
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
}

const fmtTime = (ms) => (ms == null ? "" : new Date(ms).toISOString().replace("T", " ").replace("Z", " UTC"));
const checkpointName = (id) => (checkpoints.find((c) => c.id === id) || {}).name || id;

function plateOf(ev) {
  return (ev.body && ev.body.plate) || "";
}

function detailOf(ev) {
  const b = ev.body || {};
  switch (ev.kind) {
    case "plate_anomaly": return `${b.anomaly}: ${b.detail || ""}`;
    case "pedestrian_red_light": return `crossed on red (${(ev.rule && ev.rule.id) || "rule"})`;
    case "vehicle_pass": return [b.vehicle_class, b.plate_colour, b.direction, ev.lane != null ? `lane ${ev.lane}` : null].filter(Boolean).join(", ");
    case "object_track": return `${b.class || ""} track ${b.track_id || ""}`;
    default: return "";
  }
}

// --- login ------------------------------------------------------------------------------

function showLogin() {
  for (const v of document.querySelectorAll(".view")) v.hidden = true;
  $("nav").hidden = true;
  $("who").textContent = "";
  $("login").hidden = false;
  if (alertSource) { alertSource.close(); alertSource = null; }
}

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("login-error").textContent = "";
  try {
    await api("/api/v1/login", { method: "POST", body: JSON.stringify({ user: $("login-user").value, password: $("login-password").value }) });
    $("login-password").value = "";
    await start();
  } catch (err) {
    $("login-error").textContent = err.message;
  }
});

async function logout() {
  await api("/api/v1/logout", { method: "POST" }).catch(() => {});
  showLogin();
}

async function start() {
  const who = await api("/api/v1/whoami");
  Object.assign(me, who);
  $("login").hidden = true;
  $("nav").hidden = false;
  $("who").replaceChildren(
    el("span", {}, `${who.user} (${who.role.replace("_", " ")}${who.county ? ", county " + who.county : ""}) `),
    el("button", { id: "logout", onclick: logout }, "Log out"),
  );
  checkpoints = (await api("/api/v1/checkpoints")).checkpoints;
  const sel = $("search-checkpoint");
  sel.replaceChildren(el("option", { value: "" }, "any"), ...checkpoints.map((c) => el("option", { value: c.id }, `${c.name} (${c.id})`)));
  connectAlerts();
  route();
}

// --- views ------------------------------------------------------------------------------

function show(name) {
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== `view-${name}`;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.getAttribute("href") === `#/${name}`);
  if (healthTimer && name !== "health") { clearInterval(healthTimer); healthTimer = null; }
}

function route() {
  if (!me.user) return;
  const [, view, arg] = location.hash.split("/");
  const a = arg ? decodeURIComponent(arg) : "";
  switch (view) {
    case "search": show("search"); break;
    case "event": show("event"); loadEvent(a); break;
    case "trajectory": show("trajectory"); if (a) { $("trajectory-plate").value = a; loadTrajectory(a); } else drawMap([]); break;
    case "health": show("health"); loadHealth(); if (!healthTimer) healthTimer = setInterval(loadHealth, 5000); break;
    case "charts": show("charts"); loadCharts(); break;
    default: show("live");
  }
}
window.addEventListener("hashchange", route);

// --- live alerts ------------------------------------------------------------------------

function connectAlerts() {
  if (alertSource) alertSource.close();
  alertSource = new EventSource("/api/v1/alerts/stream");
  alertSource.onopen = () => { $("live-state").textContent = "live"; $("live-state").className = "pill ok"; };
  alertSource.onerror = () => { $("live-state").textContent = "reconnecting"; $("live-state").className = "pill warn"; };
  alertSource.addEventListener("alert", (m) => {
    const ev = JSON.parse(m.data);
    if (document.querySelector(`#alerts tr[data-id="${ev.event_id}"]`)) return;
    const row = eventRow(ev, false);
    row.classList.add("new");
    $("alerts").prepend(row);
    while ($("alerts").children.length > 200) $("alerts").lastChild.remove();
  });
  alertSource.addEventListener("lagged", (m) => {
    $("alerts").prepend(el("tr", {}, el("td", { colspan: 6, class: "warn" }, `${m.data} alerts missed while this page lagged behind; search to see them`)));
  });
}

function eventRow(ev, withCamera) {
  const cells = [
    el("td", {}, fmtTime(ev.frame_time_ms)),
    el("td", {}, ev.kind.replaceAll("_", " ")),
    el("td", {}, checkpointName(ev.checkpoint_id)),
  ];
  if (withCamera) cells.push(el("td", {}, ev.camera_id));
  cells.push(el("td", { class: "plate" }, plateOf(ev)), el("td", {}, detailOf(ev)), el("td", { class: `review ${ev.review}` }, ev.review.replace("_", " ")));
  const tr = el("tr", { "data-id": ev.event_id, class: "link", tabindex: "0" }, ...cells);
  tr.addEventListener("click", () => { location.hash = `#/event/${ev.event_id}`; });
  return tr;
}

// --- search -----------------------------------------------------------------------------

$("search-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const p = new URLSearchParams();
  for (const [k, v] of new FormData(e.target)) if (v) p.set(k, v);
  p.set("limit", "50");
  searchQuery = p.toString();
  searchCursor = null;
  $("results").replaceChildren();
  runSearch();
});
$("search-more").addEventListener("click", runSearch);

async function runSearch() {
  const q = searchQuery + (searchCursor ? `&cursor=${encodeURIComponent(searchCursor)}` : "");
  try {
    const page = await api(`/api/v1/events?${q}`);
    for (const ev of page.events) $("results").append(eventRow(ev, true));
    searchCursor = page.next_cursor || null;
    $("search-more").hidden = !searchCursor;
    $("search-count").textContent = `${$("results").children.length} event(s)${searchCursor ? ", more available" : ""}`;
  } catch (err) {
    $("search-count").textContent = err.message;
  }
}

// --- one event --------------------------------------------------------------------------

async function loadEvent(id) {
  $("event-id").textContent = id;
  $("event-facts").replaceChildren();
  $("event-evidence").replaceChildren();
  $("event-audit").replaceChildren();
  $("review-result").textContent = "";
  $("event-review").hidden = true;
  let ev;
  try {
    ev = await api(`/api/v1/events/${encodeURIComponent(id)}`);
  } catch (err) {
    $("event-facts").append(el("dd", { class: "error" }, err.message));
    return;
  }
  const facts = [
    ["Kind", ev.kind.replaceAll("_", " ")],
    ["Frame time", fmtTime(ev.frame_time_ms)],
    ["Checkpoint", `${checkpointName(ev.checkpoint_id)} (${ev.checkpoint_id})`],
    ["Camera", ev.camera_id],
    ["Plate", plateOf(ev)],
    ["Detail", detailOf(ev)],
    ["Review", ev.review.replace("_", " ")],
  ];
  for (const [k, v] of facts) if (v) $("event-facts").append(el("dt", {}, k), el("dd", { "data-fact": k.toLowerCase().replace(" ", "_") }, v));
  for (const r of ev.evidence || []) {
    const img = el("img", { src: `/api/v1/evidence/${encodeURIComponent(r.image_id)}`, alt: r.role || r.image_id, title: `${r.role || ""} sha256 ${r.sha256}` });
    $("event-evidence").append(el("figure", {}, img, el("figcaption", {}, r.role || r.image_id)));
  }
  const mayReview = me.role === "reviewer" || me.role === "admin";
  $("event-review").hidden = !(mayReview && ev.review === "pending");
  const link = $("event-trajectory");
  link.hidden = !plateOf(ev);
  if (plateOf(ev)) link.setAttribute("href", `#/trajectory/${encodeURIComponent(plateOf(ev))}`);
  loadAudit(id);
}

async function loadAudit(id) {
  const trail = await api(`/api/v1/events/${encodeURIComponent(id)}/audit`).catch(() => ({ audit: [] }));
  $("event-audit").replaceChildren(...trail.audit.map((a) => el("li", {}, `${fmtTime(a.at_ms)}: ${a.actor} ${a.action} (${a.detail})`)));
  if (!trail.audit.length) $("event-audit").append(el("li", {}, "none"));
}

async function review(decision) {
  const id = $("event-id").textContent;
  try {
    const ev = await api(`/api/v1/events/${encodeURIComponent(id)}/review`, { method: "POST", body: JSON.stringify({ decision, reason: $("review-reason").value }) });
    $("review-result").textContent = `Recorded: ${ev.review}`;
    $("event-review").hidden = true;
    const dd = document.querySelector('#event-facts dd[data-fact="review"]');
    if (dd) dd.textContent = ev.review;
    const row = document.querySelector(`#alerts tr[data-id="${id}"] td.review`);
    if (row) { row.textContent = ev.review; row.className = `review ${ev.review}`; }
    loadAudit(id);
  } catch (err) {
    $("review-result").textContent = err.message;
  }
}
$("review-confirm").addEventListener("click", () => review("confirmed"));
$("review-reject").addEventListener("click", () => review("rejected"));

// --- trajectory on the schematic map ----------------------------------------------------

$("trajectory-form").addEventListener("submit", (e) => {
  e.preventDefault();
  location.hash = `#/trajectory/${encodeURIComponent($("trajectory-plate").value.trim())}`;
});

function projector(points) {
  const lons = points.map((p) => p.lon), lats = points.map((p) => p.lat);
  const [x0, x1, y0, y1] = [Math.min(...lons), Math.max(...lons), Math.min(...lats), Math.max(...lats)];
  const k = Math.cos(((y0 + y1) / 2) * Math.PI / 180);
  const w = Math.max((x1 - x0) * k, 1e-4), h = Math.max(y1 - y0, 1e-4);
  // Room on the right for the names.
  const s = Math.min(560 / w, 380 / h);
  const ox = 360 - ((x0 + x1) / 2 - x0) * k * s, oy = 250 + ((y0 + y1) / 2 - y0) * s;
  return (lon, lat) => [ox + (lon - x0) * k * s, oy - (lat - y0) * s];
}

function drawMap(passes) {
  const map = $("map");
  map.replaceChildren();
  const defs = svg("defs");
  const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "8", markerHeight: "8", orient: "auto-start-reverse" });
  marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }));
  defs.append(marker);
  map.append(defs);
  if (!checkpoints.length) { map.append(svg("text", { x: 20, y: 40 }, "no checkpoints with coordinates")); return; }
  const at = projector(checkpoints);
  const pos = new Map(checkpoints.map((c) => [c.id, at(c.lon, c.lat)]));
  const visited = new Set(passes.map((p) => p.checkpoint_id));
  for (let i = 1; i < passes.length; i++) {
    const a = pos.get(passes[i - 1].checkpoint_id), b = pos.get(passes[i].checkpoint_id);
    if (!a || !b || (a[0] === b[0] && a[1] === b[1])) continue;
    map.append(svg("line", { x1: a[0], y1: a[1], x2: b[0], y2: b[1], class: "leg", "marker-end": "url(#arrow)" }));
    map.append(svg("text", { x: (a[0] + b[0]) / 2 + 6, y: (a[1] + b[1]) / 2 - 6, class: "leg-label" }, i));
  }
  for (const c of checkpoints) {
    const [x, y] = pos.get(c.id);
    map.append(svg("circle", { cx: x, cy: y, r: visited.has(c.id) ? 9 : 6, class: visited.has(c.id) ? "ckpt visited" : "ckpt" }));
    map.append(svg("text", { x: x + 12, y: y + 4, class: "ckpt-label" }, c.name));
  }
}

async function loadTrajectory(plate) {
  $("trajectory-rows").replaceChildren();
  try {
    const t = await api(`/api/v1/trajectory?plate=${encodeURIComponent(plate)}`);
    drawMap(t.passes);
    t.passes.forEach((p, i) => {
      const leg = i > 0 ? t.legs[i - 1] : null;
      $("trajectory-rows").append(el("tr", {}, el("td", {}, i + 1), el("td", {}, fmtTime(p.time_ms)), el("td", {}, p.checkpoint_name || p.checkpoint_id),
        el("td", {}, p.lane ?? ""), el("td", {}, p.direction || ""), el("td", {}, leg && leg.km != null ? leg.km.toFixed(1) : ""),
        el("td", { class: leg && leg.kmh > 150 ? "warn" : "" }, leg && leg.kmh != null ? leg.kmh.toFixed(0) : "")));
    });
    if (!t.passes.length) $("trajectory-rows").append(el("tr", {}, el("td", { colspan: 7 }, `no passes of ${plate}`)));
  } catch (err) {
    $("trajectory-rows").append(el("tr", {}, el("td", { colspan: 7, class: "error" }, err.message)));
  }
}

// --- health -----------------------------------------------------------------------------

// Why frames were not processed: behind (a newer frame replaced it), budget (max_fps), ...
function dropReasons(c) {
  const r = Object.entries(c.frames_dropped_by_reason || {});
  return r.length ? ` (${r.map(([k, v]) => `${k} ${v}`).join(", ")})` : "";
}

// The execution provider each model of the node loaded on (cpu, cuda, tensorrt).
function providers(report) {
  return Object.entries(report.execution_providers || {}).map(([m, p]) => `${m}: ${p}`).join(", ");
}

async function loadHealth() {
  const { nodes } = await api("/api/v1/nodes").catch(() => ({ nodes: [] }));
  const rows = [];
  for (const n of nodes) {
    const cams = (n.report && n.report.cameras.length) ? n.report.cameras : [null];
    cams.forEach((c, i) => {
      const first = i === 0;
      rows.push(el("tr", { "data-checkpoint": n.checkpoint_id },
        el("td", {}, first ? (n.checkpoint_name || n.checkpoint_id) : ""),
        el("td", { class: first ? (n.alive ? "ok" : "bad") : "" }, first ? (n.alive ? "alive" : "silent") : ""),
        el("td", {}, first ? (n.last_report_ms ? fmtTime(n.last_report_ms) : "never") : ""),
        el("td", {}, c ? `${c.label} (${c.id})` : ""),
        el("td", {}, c ? c.fps.toFixed(1) : ""),
        el("td", { class: "dropped" }, c ? `${c.frames_decoded} / ${c.frames_dropped}${dropReasons(c)}` : ""),
        el("td", { class: "providers" }, first && n.report ? providers(n.report) : ""),
        el("td", {}, first && n.report ? `${n.report.outbox_backlog_items} (oldest ${n.report.outbox_oldest_age_secs.toFixed(0)} s)` : "")));
    });
  }
  $("health-rows").replaceChildren(...rows);
}

// --- charts -----------------------------------------------------------------------------

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

function barChart(target, legend, buckets, series) {
  // series: name -> Map(bucket -> value); stacked bars per bucket.
  const chart = $(target);
  chart.replaceChildren();
  const names = [...series.keys()];
  const totals = buckets.map((b) => names.reduce((s, n) => s + (series.get(n).get(b) || 0), 0));
  const max = Math.max(1, ...totals);
  const left = 48, bottom = 230, width = 740, height = 210;
  const bw = width / Math.max(1, buckets.length);
  chart.append(svg("line", { x1: left, y1: bottom, x2: left + width, y2: bottom, class: "axis" }));
  chart.append(svg("text", { x: 4, y: bottom - height + 4, class: "tick" }, max));
  chart.append(svg("text", { x: 4, y: bottom, class: "tick" }, 0));
  buckets.forEach((b, i) => {
    let y = bottom;
    names.forEach((n, j) => {
      const v = series.get(n).get(b) || 0;
      if (!v) return;
      const h = (v / max) * height;
      y -= h;
      const r = svg("rect", { x: left + i * bw + 1, y, width: Math.max(1, bw - 2), height: h, fill: PALETTE[j % PALETTE.length] });
      r.append(svg("title", {}, `${fmtTime(b)} ${n}: ${v}`));
      chart.append(r);
    });
    if (buckets.length <= 48 && i % Math.ceil(buckets.length / 12) === 0) {
      chart.append(svg("text", { x: left + i * bw, y: bottom + 16, class: "tick" }, new Date(b).toISOString().slice(11, 16)));
    }
  });
  $(legend).replaceChildren(...names.map((n, j) => el("span", {}, el("i", { class: `swatch c${j % PALETTE.length}` }), ` ${n}`)));
  if (!buckets.length) chart.append(svg("text", { x: 300, y: 120 }, "no events in this window"));
}

function hours(from, to) {
  const out = [];
  for (let t = Math.floor(from / 3600000) * 3600000; t < to; t += 3600000) out.push(t);
  return out;
}

async function loadCharts() {
  if (!$("charts-from").value) {
    const now = Date.now();
    $("charts-from").value = new Date(now - 24 * 3600000).toISOString().slice(0, 13) + ":00:00Z";
    $("charts-to").value = new Date(now + 3600000).toISOString().slice(0, 13) + ":00:00Z";
  }
  const from = Date.parse($("charts-from").value), to = Date.parse($("charts-to").value);
  const q = `from=${encodeURIComponent($("charts-from").value)}&to=${encodeURIComponent($("charts-to").value)}`;
  const buckets = hours(from, to);
  try {
    const counts = await api(`/api/v1/counts?${q}`);
    const kinds = new Map();
    for (const r of counts.rows) {
      if (!kinds.has(r.kind)) kinds.set(r.kind, new Map());
      kinds.get(r.kind).set(r.bucket_start_ms, r.events);
    }
    barChart("chart-kinds", "legend-kinds", buckets, kinds);
    const flow = await api(`/api/v1/flow?${q}`);
    const perCheckpoint = new Map();
    for (const r of flow.rows) {
      const name = r.checkpoint_name || r.checkpoint_id;
      if (!perCheckpoint.has(name)) perCheckpoint.set(name, new Map());
      const m = perCheckpoint.get(name);
      m.set(r.bucket_start_ms, (m.get(r.bucket_start_ms) || 0) + r.vehicles);
    }
    barChart("chart-flow", "legend-flow", buckets, perCheckpoint);
  } catch (err) {
    $("chart-kinds").replaceChildren(svg("text", { x: 20, y: 40, class: "error" }, err.message));
  }
}
$("charts-form").addEventListener("submit", (e) => { e.preventDefault(); loadCharts(); });

start().catch(() => showLogin());
