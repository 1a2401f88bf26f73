// The operators' dashboard. Plain JavaScript, no libraries: every byte is served by the
// aggregator. Data comes from the HTTP API with the session cookie set at login; text from
// events is always inserted as text, never as markup. Every word shown comes from the
// catalogue in i18n.js (t, name); every time is shown in the configured time zone.
"use strict";

const $ = (id) => document.getElementById(id);
const me = { user: null, role: null, county: null };
let checkpoints = [];
let alertSource = null;
let healthTimer = null;
let cameraTimer = null;
let vehiclesTimer = null;
// The key vehicle whose track the map draws (a click on its row).
let trackedPlate = null;
// The signalised crossings the user sees (timing charts).
let crossings = [];
let cameraShown = null;
let searchCursor = null;
let searchQuery = "";
// The search's results shown, to draw again in another language.
let searchEvents = [];
// The aggregator's display settings (/dashboard/settings.json): language and time zone.
const settings = { language: "zh-CN", time_zone: "Asia/Shanghai" };
// The live alerts shown, newest first, to draw again in another language.
let alertEvents = [];

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
    throw new Error(t("error.login_first"));
  }
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw apiError(res.status, body.error || res.statusText);
  return body;
}

// An error to show: the API's own words in English; in Chinese the catalogue's, with the
// API's words kept in `detail` (shown as the element's title).
function apiError(status, text) {
  let key = null;
  if (status === 403) key = "error.forbidden";
  else if (status === 404) key = "error.not_found";
  else if (status >= 500) key = "error.server";
  else if (status >= 400) key = "error.bad_request";
  const e = new Error(lang === "en" || !key ? text : t(key));
  e.detail = text;
  return e;
}

function showError(target, err) {
  target.textContent = err.message;
  target.title = err.detail || "";
}

// --- one clock: every time in the configured zone -------------------------------------

let zoneFormat = null;
function zoneParts(ms) {
  if (!zoneFormat || zoneFormat.resolvedOptions().timeZone !== zoneFormat.zone) {
    zoneFormat = new Intl.DateTimeFormat("en-US", { timeZone: settings.time_zone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" });
    zoneFormat.zone = zoneFormat.resolvedOptions().timeZone;
  }
  const p = {};
  for (const { type, value } of zoneFormat.formatToParts(new Date(ms))) p[type] = value;
  return p;
}

// Minutes the zone is ahead of UTC at `ms`.
function zoneOffsetMin(ms) {
  const p = zoneParts(ms);
  const local = Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour, +p.minute, +p.second);
  return Math.round((local - Math.floor(ms / 1000) * 1000) / 60000);
}

function offsetLabel(min) {
  const sign = min < 0 ? "-" : "+", a = Math.abs(min);
  return `UTC${sign}${Math.floor(a / 60)}${a % 60 ? ":" + String(a % 60).padStart(2, "0") : ""}`;
}

// `2026-11-29 16:00:00` in the configured zone.
function fmtTime(ms) {
  if (ms == null) return "";
  const p = zoneParts(ms);
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second}`;
}

// A time typed by the operator: `2026-11-29 08:00[:00]` in the configured zone, or RFC 3339
// with its own offset. UTC ms, or NaN.
function parseTime(text) {
  const s = text.trim();
  if (/[zZ]$|[+-]\d{2}:\d{2}$/.test(s)) return Date.parse(s);
  const m = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2})(?::(\d{2}))?$/.exec(s);
  if (!m) return NaN;
  const guess = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +(m[6] || 0));
  // The offset at the guess, then at the time it gives (right across a change of offset).
  const first = guess - zoneOffsetMin(guess) * 60000;
  return guess - zoneOffsetMin(first) * 60000;
}

// The operator's time as the API takes it (RFC 3339, UTC).
function apiTime(text) {
  const ms = parseTime(text);
  if (Number.isNaN(ms)) { const e = new Error(t("error.time", { value: text })); throw e; }
  return new Date(ms).toISOString();
}

const checkpointName = (id) => (checkpoints.find((c) => c.id === id) || {}).name || id;

function plateOf(ev) {
  return (ev.body && ev.body.plate) || "";
}

// t(key, params) as nodes, the `data` params (user names, zone names: not words of ours)
// each in a span marked translate="no".
function tNodes(key, params, data) {
  const marked = {};
  for (const [k, v] of Object.entries(params)) marked[k] = data.includes(k) ? `\u0000${k}\u0000` : v;
  return t(key, marked).split("\u0000").map((part, i) => (i % 2 ? el("span", { translate: "no" }, params[part]) : part));
}

const listSep = () => (lang === "en" ? ", " : "，");

// Watch-list states named in an anomaly's detail (`watch list: wanted, scrapped (...)`).
function statusesIn(detail) {
  const m = /watch list: ([a-z_, ]+)/.exec(detail || "");
  return m ? m[1].split(",").map((x) => x.trim()).filter(Boolean) : [];
}

function detailOf(ev) {
  const b = ev.body || {};
  switch (ev.kind) {
    case "plate_anomaly": {
      // The node's free-text detail is English: shown as it is in English, in Chinese made
      // from the anomaly's fields.
      if (lang === "en") return `${name("anomaly", b.anomaly)}${b.detail ? ": " + b.detail : ""}`;
      const parts = [name("anomaly", b.anomaly)];
      const st = statusesIn(b.detail).map((x) => name("status", x));
      if (st.length) parts.push(st.join("、"));
      if (b.distance_km != null && b.interval_secs != null && b.implied_speed_kmh != null) {
        const key = b.anomaly === "section_speeding" ? "detail.section" : "detail.cloned";
        parts.push(t(key, { km: b.distance_km.toFixed(1), min: (b.interval_secs / 60).toFixed(1), kmh: b.implied_speed_kmh.toFixed(0) }));
      }
      return parts.join(listSep());
    }
    case "pedestrian_red_light": return t("detail.red_light", { secs: ((b.red_for_ms || 0) / 1000).toFixed(1) });
    case "vehicle_pass": return [name("class", b.vehicle_class), name("colour", b.plate_colour), name("direction", b.direction), ev.lane != null ? t("detail.lane", { lane: ev.lane }) : null, b.plate_unsure ? t("detail.unsure") : null].filter(Boolean).join(listSep());
    case "object_track": return t("detail.track", { class: name("class", b.class), track: b.track_id || "" });
    case "vehicle_position": return t("detail.position", { kmh: (b.speed_kmh || 0).toFixed(0) });
    case "vehicle_alert":
      // The gateway's detail is English: as it is in English, in Chinese the alert's name.
      if (lang === "en") return `${name("valert", b.alert)}: ${b.detail || ""}`;
      return [name("valert", b.alert), (b.statuses || []).map((x) => name("status", x)).join("、") || null, t("detail.valert_fixes", { n: (b.fixes || []).length })].filter(Boolean).join(listSep());
    default: return "";
  }
}

// --- login ------------------------------------------------------------------------------

function showLogin() {
  for (const v of document.querySelectorAll(".view")) v.hidden = true;
  $("nav").hidden = true;
  $("who").textContent = "";
  $("login").hidden = false;
  me.user = null;
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
    if (err.detail === "wrong user or password") err.message = t("login.wrong");
    showError($("login-error"), err);
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
  drawWho();
  const cks = await api("/api/v1/checkpoints");
  checkpoints = cks.checkpoints;
  crossings = cks.crossings || [];
  $("timing-crossing").replaceChildren(...crossings.map((c) => el("option", { value: c, translate: "no" }, c)));
  const sel = $("search-checkpoint");
  sel.replaceChildren(el("option", { value: "", "data-i18n": "any" }, t("any")), ...checkpoints.map((c) => el("option", { value: c.id }, `${c.name} (${c.id})`)));
  connectAlerts();
  route();
}

function drawWho() {
  if (!me.user) return;
  $("who").replaceChildren(
    el("span", {}, ...tNodes("who.line", { user: me.user, role: name("role", me.role), county: me.county ? t("who.county", { county: me.county }) : "" }, ["user"]), " "),
    el("button", { id: "logout", onclick: logout }, t("logout")),
  );
}

function drawClock() {
  const zone = name("zone", settings.time_zone);
  const now = Date.now();
  $("clock").replaceChildren(...tNodes("clock.zone", { zone, now: fmtTime(now).slice(0, 16), offset: offsetLabel(zoneOffsetMin(now)) }, zone === settings.time_zone ? ["zone", "offset"] : ["offset"]));
}

// --- language -----------------------------------------------------------------------------

// Draws the page again in `l`: static text, then what the scripts drew.
function switchLang(l) {
  setLang(l);
  try { localStorage.setItem("lang", lang); } catch (e) { /* private mode: this page only */ }
  applyI18n(document);
  drawClock();
  drawWho();
  drawLiveState();
  $("alerts").replaceChildren(...alertEvents.map((ev) => eventRow(ev, false)));
  $("results").replaceChildren(...searchEvents.map((ev) => eventRow(ev, true)));
  if (searchEvents.length) $("search-count").textContent = t(searchCursor ? "search.count_more" : "search.count", { n: searchEvents.length });
  if (me.user) route();
}
$("lang-switch").addEventListener("click", () => switchLang(lang === "en" ? "zh-CN" : "en"));

// --- views ------------------------------------------------------------------------------

function show(name) {
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== `view-${name}`;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.getAttribute("href") === `#/${name}`);
  if (healthTimer && name !== "health") { clearInterval(healthTimer); healthTimer = null; }
  if (cameraTimer && name !== "camera") { clearTimeout(cameraTimer); cameraTimer = null; cameraShown = null; }
  if (vehiclesTimer && name !== "vehicles") { clearInterval(vehiclesTimer); vehiclesTimer = null; }
}

function route() {
  if (!me.user) return;
  const [, view, arg] = location.hash.split("/");
  const a = arg ? decodeURIComponent(arg) : "";
  switch (view) {
    case "search": show("search"); break;
    case "event": show("event"); loadEvent(a); break;
    case "notice": show("notice"); loadNotice(a); break;
    case "camera": show("camera"); watchCamera(a); break;
    case "trajectory": show("trajectory"); if (a) { $("trajectory-plate").value = a; loadTrajectory(a); } else drawMap([]); break;
    case "health": show("health"); loadHealth(); if (!healthTimer) healthTimer = setInterval(loadHealth, 5000); break;
    case "charts": show("charts"); loadCharts(); break;
    case "vehicles": show("vehicles"); loadVehicles(); if (!vehiclesTimer) vehiclesTimer = setInterval(loadVehicles, 5000); break;
    case "accidents": show("accidents"); loadAccidents(); break;
    default: show("live");
  }
}
window.addEventListener("hashchange", route);

// --- live alerts ------------------------------------------------------------------------

function connectAlerts() {
  if (alertSource) alertSource.close();
  alertSource = new EventSource("/api/v1/alerts/stream");
  setLiveState("connecting");
  alertSource.onopen = () => setLiveState("live");
  alertSource.onerror = () => setLiveState("reconnecting");
  alertSource.addEventListener("alert", (m) => {
    const ev = JSON.parse(m.data);
    if (alertEvents.some((a) => a.event_id === ev.event_id)) return;
    alertEvents.unshift(ev);
    if (alertEvents.length > 200) alertEvents.length = 200;
    const row = eventRow(ev, false);
    row.classList.add("new");
    $("alerts").prepend(row);
    while ($("alerts").children.length > 200) $("alerts").lastChild.remove();
  });
  alertSource.addEventListener("lagged", (m) => {
    $("alerts").prepend(el("tr", {}, el("td", { colspan: 6, class: "warn" }, t("live.lagged", { n: m.data }))));
  });
}

function setLiveState(state) {
  $("live-state").dataset.state = state;
  drawLiveState();
}

function drawLiveState() {
  const state = $("live-state").dataset.state;
  $("live-state").textContent = t(`live.${state}`);
  $("live-state").className = `pill ${state === "live" ? "ok" : state === "reconnecting" ? "warn" : ""}`;
}

function eventRow(ev, withCamera) {
  const cells = [
    el("td", {}, fmtTime(ev.frame_time_ms)),
    el("td", {}, name("kind", ev.kind)),
    el("td", {}, checkpointName(ev.checkpoint_id)),
  ];
  if (withCamera) cells.push(el("td", { translate: "no" }, ev.camera_id));
  const untrusted = ev.clock && !ev.clock.trusted;
  cells.push(el("td", { class: "plate", translate: "no" }, plateOf(ev)), el("td", {}, detailOf(ev), untrusted ? el("span", { class: "clock-untrusted", title: t("detail.clock_untrusted") }, " ⚠ " + t("detail.clock_untrusted")) : ""), el("td", { class: `review ${ev.review}`, "data-state": ev.review }, name("review", ev.review)));
  const tr = el("tr", { "data-id": ev.event_id, class: "link", tabindex: "0" }, ...cells);
  tr.addEventListener("click", () => { location.hash = `#/event/${ev.event_id}`; });
  return tr;
}

// --- search -----------------------------------------------------------------------------

$("search-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const p = new URLSearchParams();
  try {
    for (const [k, v] of new FormData(e.target)) if (v) p.set(k, k === "from" || k === "to" ? apiTime(v) : v);
  } catch (err) {
    showError($("search-count"), err);
    return;
  }
  p.set("limit", "50");
  searchQuery = p.toString();
  searchCursor = null;
  searchEvents = [];
  $("results").replaceChildren();
  runSearch();
});
$("search-more").addEventListener("click", runSearch);

async function runSearch() {
  const q = searchQuery + (searchCursor ? `&cursor=${encodeURIComponent(searchCursor)}` : "");
  try {
    const page = await api(`/api/v1/events?${q}`);
    for (const ev of page.events) { searchEvents.push(ev); $("results").append(eventRow(ev, true)); }
    searchCursor = page.next_cursor || null;
    $("search-more").hidden = !searchCursor;
    $("search-count").textContent = t(searchCursor ? "search.count_more" : "search.count", { n: $("results").children.length });
    $("search-count").title = "";
  } catch (err) {
    showError($("search-count"), err);
  }
}

// --- one event --------------------------------------------------------------------------

async function loadEvent(id) {
  $("event-id").textContent = id;
  $("event-facts").replaceChildren();
  $("event-evidence").replaceChildren();
  $("event-audit").replaceChildren();
  $("review-result").textContent = "";
  $("review-reason").value = "";
  $("reopen-reason").value = "";
  $("event-review").hidden = true;
  $("event-reopen").hidden = true;
  $("event-notice").hidden = true;
  let ev;
  try {
    ev = await api(`/api/v1/events/${encodeURIComponent(id)}`);
  } catch (err) {
    const dd = el("dd", { class: "error" });
    showError(dd, err);
    $("event-facts").append(dd);
    return;
  }
  const facts = [
    ["kind", name("kind", ev.kind)],
    ["frame_time", fmtTime(ev.frame_time_ms)],
    ["checkpoint", `${checkpointName(ev.checkpoint_id)} (${ev.checkpoint_id})`],
    ["camera", ev.camera_id],
    ["plate", plateOf(ev)],
    ["detail", detailOf(ev)],
    ["review", name("review", ev.review)],
  ];
  // Codes and plates are data: marked so that neither a translator nor the test of the
  // catalogue takes them for words.
  const data = new Set(["camera", "plate"]);
  for (const [k, v] of facts) if (v) $("event-facts").append(el("dt", {}, t(`event.${k}`)), el("dd", Object.assign({ "data-fact": k }, data.has(k) ? { translate: "no" } : {}), v));
  for (const r of inOrder(ev.evidence)) {
    const role = name("picture", r.role) || r.image_id;
    const title = `${role} ${t("event.sha256", { sha: r.sha256 })}`;
    if (r.role === "clip") {
      // The violation's video: played in place, or enlarged (a click on it plays it).
      const video = el("video", { src: evidenceUrl(r), controls: "", preload: "metadata", muted: "", title });
      const big = el("button", { type: "button", class: "enlarge" }, t("zoom.enlarge"));
      big.addEventListener("click", () => zoom(video.src, role, true));
      $("event-evidence").append(el("figure", { "data-role": r.role }, video, el("figcaption", {}, role, " ", big)));
      continue;
    }
    const img = el("img", { src: evidenceUrl(r), alt: role, title, tabindex: "0", class: "zoomable" });
    img.addEventListener("click", () => zoom(img.src, role));
    img.addEventListener("keydown", (e) => { if (e.key === "Enter") zoom(img.src, role); });
    $("event-evidence").append(el("figure", { "data-role": r.role }, img, el("figcaption", {}, role)));
  }
  const mayReview = me.role === "reviewer" || me.role === "admin";
  $("event-review").hidden = !(mayReview && ev.review === "pending");
  // A decision is final; an administrator may reopen it.
  $("event-reopen").hidden = !(me.role === "admin" && (ev.review === "confirmed" || ev.review === "rejected"));
  $("event-notice").hidden = ev.review === "not_required";
  $("event-notice").setAttribute("href", `#/notice/${encodeURIComponent(id)}`);
  const link = $("event-trajectory");
  link.hidden = !plateOf(ev);
  if (plateOf(ev)) link.setAttribute("href", `#/trajectory/${encodeURIComponent(plateOf(ev))}`);
  loadAudit(id);
}

// The pictures of an event in the order they were taken: the three stages, then the
// close-up; a vehicle, then its plate.
const PICTURE_ORDER = ["stage1", "stage2", "stage3", "closeup", "scene", "vehicle", "plate", "clip"];
function inOrder(evidence) {
  const rank = (r) => { const i = PICTURE_ORDER.indexOf(r.role); return i < 0 ? PICTURE_ORDER.length : i; };
  return [...(evidence || [])].sort((a, b) => rank(a) - rank(b));
}

const evidenceUrl = (r) => `/api/v1/evidence/${encodeURIComponent(r.image_id)}`;

// A picture at full size over the page.
function zoom(src, caption, video = false) {
  $("zoom-img").hidden = video;
  $("zoom-video").hidden = !video;
  if (video) $("zoom-video").src = src;
  else $("zoom-img").src = src;
  $("zoom-img").alt = caption;
  $("zoom-caption").textContent = caption;
  if (!$("zoom").open) $("zoom").showModal();
}
$("zoom-close").addEventListener("click", () => $("zoom").close());
$("zoom").addEventListener("close", () => { $("zoom-video").pause(); $("zoom-video").removeAttribute("src"); });
$("zoom").addEventListener("click", (e) => { if (e.target === $("zoom") || e.target === $("zoom-img")) $("zoom").close(); });

async function loadAudit(id) {
  const trail = await api(`/api/v1/events/${encodeURIComponent(id)}/audit`).catch(() => ({ audit: [] }));
  $("event-audit").replaceChildren(...trail.audit.map((a) => el("li", { "data-action": a.action }, ...tNodes("event.audit_line", { at: fmtTime(a.at_ms), actor: a.actor, action: name("action", a.action), detail: auditDetail(a.detail) }, ["actor"]))));
  if (!trail.audit.length) $("event-audit").append(el("li", {}, t("event.audit_none")));
}

// `confirmed: reason` with the decision named in the current language.
function auditDetail(d) {
  const m = /^(confirmed|rejected|pending): ([\s\S]*)$/.exec(d || "");
  return m ? `${name("review", m[1])}${lang === "en" ? ": " : "："}${m[2]}` : d;
}

// Sends a decision (`review`) or a reopening (`reopen`), its reason typed into `input`, and
// shows the event's new state wherever the page draws it.
async function decide(action, body, input) {
  const id = $("event-id").textContent;
  if (!input.value.trim()) {
    $("review-result").textContent = t("event.reason_needed");
    input.focus();
    return;
  }
  try {
    const ev = await api(`/api/v1/events/${encodeURIComponent(id)}/${action}`, { method: "POST", body: JSON.stringify(Object.assign({ reason: input.value }, body)) });
    $("review-result").textContent = t("event.recorded", { state: name("review", ev.review) });
    $("review-result").dataset.state = ev.review;
    const shown = alertEvents.find((a) => a.event_id === id);
    if (shown) shown.review = ev.review;
    const row = document.querySelector(`#alerts tr[data-id="${id}"] td.review`);
    if (row) { row.textContent = name("review", ev.review); row.className = `review ${ev.review}`; row.dataset.state = ev.review; }
    if (action === "reopen") { loadEvent(id); return; }
    $("event-review").hidden = true;
    const dd = document.querySelector('#event-facts dd[data-fact="review"]');
    if (dd) dd.textContent = name("review", ev.review);
    loadAudit(id);
  } catch (err) {
    showError($("review-result"), err);
  }
}
$("review-reopen").addEventListener("click", () => decide("reopen", {}, $("reopen-reason")));
$("review-confirm").addEventListener("click", () => decide("review", { decision: "confirmed" }, $("review-reason")));
$("review-reject").addEventListener("click", () => decide("review", { decision: "rejected" }, $("review-reason")));

// --- printable notice -------------------------------------------------------------------

async function loadNotice(id) {
  $("notice-facts").replaceChildren();
  $("notice-pictures").replaceChildren();
  $("notice-footer").textContent = "";
  $("notice-back").setAttribute("href", `#/event/${encodeURIComponent(id)}`);
  let ev, trail;
  try {
    ev = await api(`/api/v1/events/${encodeURIComponent(id)}`);
    trail = (await api(`/api/v1/events/${encodeURIComponent(id)}/audit`)).audit;
  } catch (err) {
    const dd = el("dd", { class: "error" });
    showError(dd, err);
    $("notice-facts").append(dd);
    return;
  }
  const b = ev.body || {};
  const decided = [...trail].reverse().find((a) => a.action === "review");
  const facts = [
    ["number", ev.event_id, true],
    ["time", tNodes("notice.time_value", { time: fmtTime(ev.frame_time_ms), offset: offsetLabel(zoneOffsetMin(ev.frame_time_ms)) }, ["offset"]), false],
    ["place", `${checkpointName(ev.checkpoint_id)} (${ev.checkpoint_id})`, false],
    ["device", ev.camera_id, true],
    ["offence", b.offence ? t("notice.offence_code", { name: b.offence.name, code: b.offence.code }) : name("kind", ev.kind), false],
    ["plate", plateOf(ev), true],
    ["review", decided ? tNodes("notice.review_by", { state: name("review", ev.review), reviewer: decided.actor, at: fmtTime(decided.at_ms) }, ["reviewer"]) : name("review", ev.review), false],
  ];
  for (const [k, v, data] of facts) if (v) $("notice-facts").append(el("dt", {}, t(`notice.${k}`)), el("dd", Object.assign({ "data-fact": k }, data ? { translate: "no" } : {}), ...[v].flat()));
  for (const r of inOrder(ev.evidence)) {
    const role = name("picture", r.role) || r.image_id;
    // Paper shows no video: the clip is named with its digest.
    if (r.role === "clip") {
      $("notice-pictures").append(el("p", { class: "clip-ref" }, ...tNodes("notice.clip", { id: r.image_id, sha: r.sha256 }, ["id", "sha"])));
      continue;
    }
    $("notice-pictures").append(el("figure", {}, el("img", { src: evidenceUrl(r), alt: role }), el("figcaption", {}, ...tNodes("notice.picture", { role, sha: r.sha256 }, ["sha"]))));
  }
  $("notice-footer").textContent = t("notice.footer", { at: fmtTime(Date.now()) });
}
$("notice-print").addEventListener("click", () => window.print());

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
  // Names go left or right of their dots (placeLabels): a margin on both sides.
  const s = Math.min(600 / w, 400 / h);
  const ox = 400 - ((x0 + x1) / 2 - x0) * k * s, oy = 250 + ((y0 + y1) / 2 - y0) * s;
  return (lon, lat) => [ox + (lon - x0) * k * s, oy - (lat - y0) * s];
}

// Web Mercator at zoom z: world pixels of a longitude and latitude (256 px tiles).
function mercator(lon, lat, z) {
  const n = 256 * 2 ** z, r = (Math.max(-85, Math.min(85, lat)) * Math.PI) / 180;
  return [((lon + 180) / 360) * n, ((1 - Math.log(Math.tan(r) + 1 / Math.cos(r)) / Math.PI) / 2) * n];
}

// The configured map tiles under the map (the deepest zoom that holds every checkpoint with
// a margin), and the projection onto them.
function tiles(map, points) {
  const [W, H] = [800, 500];
  let z = 17;
  for (; z > 1; z--) {
    const xy = points.map((p) => mercator(p.lon, p.lat, z));
    const xs = xy.map((q) => q[0]), ys = xy.map((q) => q[1]);
    if (Math.max(...xs) - Math.min(...xs) <= W - 240 && Math.max(...ys) - Math.min(...ys) <= H - 120) break;
  }
  const xy = points.map((p) => mercator(p.lon, p.lat, z));
  const cx = (Math.min(...xy.map((q) => q[0])) + Math.max(...xy.map((q) => q[0]))) / 2;
  const cy = (Math.min(...xy.map((q) => q[1])) + Math.max(...xy.map((q) => q[1]))) / 2;
  const [ox, oy] = [cx - W / 2, cy - H / 2];
  const layer = svg("g", { class: "tiles" });
  const max = 2 ** z;
  for (let tx = Math.floor(ox / 256); tx * 256 < ox + W; tx++) {
    for (let ty = Math.floor(oy / 256); ty * 256 < oy + H; ty++) {
      if (ty < 0 || ty >= max) continue;
      const x = ((tx % max) + max) % max;
      const href = settings.map_tiles.replace("{z}", z).replace("{x}", x).replace("{y}", ty);
      const img = svg("image", { href, x: tx * 256 - ox, y: ty * 256 - oy, width: 256, height: 256, class: "tile" });
      img.addEventListener("load", () => img.classList.add("loaded"));
      layer.append(img);
    }
  }
  map.append(layer);
  if (settings.map_attribution) map.append(svg("text", { x: W - 6, y: H - 6, class: "attribution", "text-anchor": "end", translate: "no" }, settings.map_attribution));
  return (lon, lat) => { const [x, y] = mercator(lon, lat, z); return [x - ox, y - oy]; };
}

function drawMap(passes) {
  const map = $("map");
  map.replaceChildren();
  const defs = svg("defs");
  const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "4", markerHeight: "4", orient: "auto-start-reverse" });
  marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }));
  defs.append(marker);
  map.append(defs);
  if (!checkpoints.length) { map.append(svg("text", { x: 20, y: 40 }, t("map.no_checkpoints"))); return; }
  const at = settings.map_tiles ? tiles(map, checkpoints) : projector(checkpoints);
  const pos = new Map(checkpoints.map((c) => [c.id, at(c.lon, c.lat)]));
  const visited = new Set(passes.map((p) => p.checkpoint_id));
  // Legs between the same two checkpoints (either way) are bowed apart, each its own curve,
  // so that back-and-forth trips do not draw over each other.
  const pairKey = (x, y) => (x < y ? `${x}|${y}` : `${y}|${x}`);
  const onPair = new Map();
  const legs = [];
  for (let i = 1; i < passes.length; i++) {
    const from = passes[i - 1].checkpoint_id, to = passes[i].checkpoint_id;
    const a = pos.get(from), b = pos.get(to);
    if (!a || !b || (a[0] === b[0] && a[1] === b[1])) continue;
    const key = pairKey(from, to);
    const n = onPair.get(key) || 0;
    onPair.set(key, n + 1);
    legs.push({ i, from, to, a, b, key, n });
  }
  const labels = [];
  for (const leg of legs) {
    const total = onPair.get(leg.key);
    // The normal of the pair's line in one fixed direction, whichever way the leg goes.
    const [p, q] = leg.from < leg.to ? [leg.a, leg.b] : [leg.b, leg.a];
    const len = Math.hypot(q[0] - p[0], q[1] - p[1]);
    const nrm = [-(q[1] - p[1]) / len, (q[0] - p[0]) / len];
    const bow = total === 1 ? 0 : (leg.n - (total - 1) / 2) * 44;
    const mid = [(leg.a[0] + leg.b[0]) / 2 + nrm[0] * bow, (leg.a[1] + leg.b[1]) / 2 + nrm[1] * bow];
    const ctrl = [2 * mid[0] - (leg.a[0] + leg.b[0]) / 2, 2 * mid[1] - (leg.a[1] + leg.b[1]) / 2];
    // Start and end at the dots' rims, along the curve, so the arrowheads stay visible.
    const toward = (from, to, d) => { const l = Math.hypot(to[0] - from[0], to[1] - from[1]) || 1; return [from[0] + (to[0] - from[0]) * d / l, from[1] + (to[1] - from[1]) * d / l]; };
    const a = toward(leg.a, ctrl, 11), b = toward(leg.b, ctrl, 11);
    map.append(svg("path", { d: `M ${a[0]} ${a[1]} Q ${ctrl[0]} ${ctrl[1]} ${b[0]} ${b[1]}`, class: "leg", fill: "none", "marker-end": "url(#arrow)" }));
    labels.push({ x: mid[0] + nrm[0] * 10, y: mid[1] + nrm[1] * 10 + 4, text: String(leg.i), cls: "leg-label", anchor: "middle" });
  }
  for (const c of checkpoints) {
    const [x, y] = pos.get(c.id);
    map.append(svg("circle", { cx: x, cy: y, r: visited.has(c.id) ? 9 : 6, class: visited.has(c.id) ? "ckpt visited" : "ckpt" }));
    labels.push({ x: x + 12, y: y + 4, text: c.name, cls: "ckpt-label", anchor: "start", right: true, cx: x });
  }
  placeLabels(map, labels);
}

// Places text labels inside the map without overlapping: a checkpoint's name goes to the
// left of its dot when it would leave the map on the right, and any label moves down (then
// up) until it clears the ones placed before it.
function placeLabels(map, labels) {
  const [W, H] = [800, 500];
  const placed = [];
  const hits = (r) => placed.some((o) => r.x < o.x + o.w && o.x < r.x + r.w && r.y < o.y + o.h && o.y < r.y + r.h);
  for (const l of labels) {
    const e = svg("text", { x: l.x, y: l.y, class: l.cls, "text-anchor": l.anchor }, l.text);
    map.append(e);
    const w = e.getComputedTextLength() || l.text.length * 8, h = 16;
    let x = l.anchor === "middle" ? l.x - w / 2 : l.x;
    if (l.right && x + w > W - 4) { x = l.cx - 12 - w; }
    x = Math.max(2, Math.min(x, W - w - 2));
    let y = l.y - 12;
    for (let k = 1; hits({ x, y, w, h }) && k < 12; k++) y = l.y - 12 + (k % 2 ? 1 : -1) * Math.ceil(k / 2) * h;
    y = Math.max(2, Math.min(y, H - h - 2));
    e.setAttribute("text-anchor", "start");
    e.setAttribute("x", x);
    e.setAttribute("y", y + 12);
    placed.push({ x, y, w, h });
  }
}

async function loadTrajectory(plate) {
  $("trajectory-rows").replaceChildren();
  try {
    const tr = await api(`/api/v1/trajectory?plate=${encodeURIComponent(plate)}`);
    drawMap(tr.passes);
    tr.passes.forEach((p, i) => {
      const leg = i > 0 ? tr.legs[i - 1] : null;
      $("trajectory-rows").append(el("tr", {}, el("td", {}, i + 1), el("td", {}, fmtTime(p.time_ms)), el("td", {}, p.checkpoint_name || p.checkpoint_id),
        el("td", {}, p.lane ?? ""), el("td", {}, name("direction", p.direction)), el("td", {}, leg && leg.km != null ? leg.km.toFixed(1) : ""),
        el("td", { class: leg && leg.kmh > 150 ? "warn" : "" }, leg && leg.kmh != null ? leg.kmh.toFixed(0) : "")));
    });
    if (!tr.passes.length) $("trajectory-rows").append(el("tr", {}, el("td", { colspan: 7 }, t("trajectory.none", { plate }))));
  } catch (err) {
    const td = el("td", { colspan: 7, class: "error" });
    showError(td, err);
    $("trajectory-rows").append(el("tr", {}, td));
  }
}

// --- health -----------------------------------------------------------------------------

// Why frames were not processed: behind (a newer frame replaced it), budget (max_fps), ...
function dropReasons(c) {
  const r = Object.entries(c.frames_dropped_by_reason || {});
  return r.length ? (lang === "en" ? " (" : "（") + r.map(([k, v]) => `${name("drop", k)} ${v}`).join(listSep()) + (lang === "en" ? ")" : "）") : "";
}

// The execution provider each model of the node loaded on (cpu, cuda, tensorrt).
function providers(report) {
  return Object.entries(report.execution_providers || {}).map(([m, p]) => `${m}: ${p}`).join(", ");
}

// The node's clock: synchronised and within its bound (evidence time trusted), or not.
function clockCell(report) {
  const c = report.clock;
  if (!c) return el("td", { class: "clock" }, t("clock.unknown"));
  return c.trusted
    ? el("td", { class: "clock ok" }, t("clock.trusted", { source: name("clocksrc", c.source), err: (c.max_error_ms || 0).toFixed(1) }))
    : el("td", { class: "clock bad", "data-untrusted": "1" }, t("clock.untrusted", { source: name("clocksrc", c.source) }));
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
        el("td", { class: first ? (n.alive ? "ok" : "bad") : "" }, first ? t(n.alive ? "health.alive" : "health.silent") : ""),
        el("td", {}, first ? (n.last_report_ms ? fmtTime(n.last_report_ms) : t("health.never")) : ""),
        el("td", {}, c ? el("a", { href: `#/camera/${encodeURIComponent(c.id)}`, class: "camera-link", "data-camera": c.id }, t("health.camera", { label: c.label, id: c.id })) : ""),
        el("td", {}, c ? c.fps.toFixed(1) : ""),
        el("td", { class: "dropped" }, c ? `${c.frames_decoded} / ${c.frames_dropped}${dropReasons(c)}` : ""),
        el("td", { class: "providers", translate: "no" }, first && n.report ? providers(n.report) : ""),
        first && n.report ? clockCell(n.report) : el("td", {}, ""),
        el("td", {}, first && n.report ? t("health.outbox", { items: n.report.outbox_backlog_items, secs: n.report.outbox_oldest_age_secs.toFixed(0) }) : "")));
    });
  }
  $("health-rows").replaceChildren(...rows);
}

// --- live view of a camera ---------------------------------------------------------------

// Shows the camera's latest frame, asked again a second after each one arrives, while this
// view is open.
function watchCamera(id) {
  if (cameraShown === id) return;
  cameraShown = id;
  $("camera-id").textContent = id;
  $("camera-error").textContent = "";
  $("camera-time").textContent = "";
  const next = async () => {
    if (cameraShown !== id) return;
    const url = `/api/v1/cameras/${encodeURIComponent(id)}/live?width=1280${$("camera-overlay").checked ? "&overlay=1" : ""}`;
    try {
      const res = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (res.status === 401) { showLogin(); return; }
      if (!res.ok) {
        const body = await res.json().catch(() => ({}));
        throw apiError(res.status, body.error || res.statusText);
      }
      const blob = await res.blob();
      const old = $("camera-frame").src;
      $("camera-frame").src = URL.createObjectURL(blob);
      if (old.startsWith("blob:")) URL.revokeObjectURL(old);
      const at = Number(res.headers.get("x-frame-time-ms"));
      $("camera-time").textContent = at ? t("camera.frame_time", { time: fmtTime(at) }) : "";
      $("camera-error").textContent = "";
    } catch (err) {
      showError($("camera-error"), err);
    }
    if (cameraShown === id) cameraTimer = setTimeout(next, 1000);
  };
  next();
  loadZones(id);
}
$("camera-overlay").addEventListener("change", () => { if (cameraShown) { const id = cameraShown; cameraShown = null; clearTimeout(cameraTimer); watchCamera(id); } });

// --- zone editor --------------------------------------------------------------------------

// The camera's zones as the node runs them (`inForce`), the draft being edited, the selected
// zone, and whether corners are being placed. Corners are relative (0..1), as the node keeps
// them; the picture's SVG is 1000 x 1000 units over the frame.
const zed = { camera: null, inForce: [], draft: [], sel: -1, drawing: false, drag: null, poll: null, h: 1000 };
const Z = 1000;
const round4 = (v) => Math.round(v * 10000) / 10000;
const sameZones = (a, b) => JSON.stringify(a.map(zoneKey)) === JSON.stringify(b.map(zoneKey));
const zoneKey = (z) => [z.name, z.kind, z.lane ?? null, z.polygon.map(([x, y]) => [round4(x), round4(y)])];

async function loadZones(id) {
  zed.camera = id;
  clearTimeout(zed.poll);
  $("zone-errors").replaceChildren();
  $("zone-state").textContent = "";
  delete $("zone-state").dataset.state;
  $("zone-tools").hidden = me.role !== "admin";
  try {
    const z = await api(`/api/v1/cameras/${encodeURIComponent(id)}/zones`);
    if (zed.camera !== id) return;
    zed.inForce = z.zones || [];
    zed.draft = structuredClone(zed.inForce);
    // The SVG keeps the frame's aspect, so that corners and names are not stretched.
    zed.h = z.width && z.height ? Math.round((Z * z.height) / z.width) : Z;
    $("zone-svg").setAttribute("viewBox", `0 0 ${Z} ${zed.h}`);
    zed.sel = -1;
    zed.drawing = false;
  } catch (err) {
    showError($("camera-error"), err);
  }
  drawZones();
  if (me.role === "admin") loadZoneAudit(id);
}

async function loadZoneAudit(id) {
  const trail = await api(`/api/v1/cameras/${encodeURIComponent(id)}/zones/audit`).catch(() => ({ audit: [] }));
  const count = (d, k) => { try { return (JSON.parse(d)[k] || []).length; } catch (e) { return "?"; } };
  $("zone-audit").replaceChildren(...trail.audit.slice().reverse().map((a) => el("li", { "data-action": a.action, title: a.detail }, ...tNodes("zones.audit_line", { at: fmtTime(a.at_ms), actor: a.actor, before: count(a.detail, "before"), after: count(a.detail, "after") }, ["actor"]))));
  if (!trail.audit.length) $("zone-audit").append(el("li", {}, t("zones.audit_none")));
}

// Draws the draft over the picture: each zone in its kind's colour, the selected one with
// its corners as handles.
function drawZones() {
  const g = $("zone-svg");
  g.replaceChildren();
  g.classList.toggle("drawing", zed.drawing);
  const admin = me.role === "admin";
  zed.draft.forEach((z, i) => {
    const pts = z.polygon.map(([x, y]) => `${x * Z},${y * zed.h}`).join(" ");
    const open = zed.drawing && i === zed.sel;
    const shape = svg(open ? "polyline" : "polygon", { points: pts, class: `zk-${z.kind}${i === zed.sel ? " selected" : ""}`, "data-zone": z.name });
    if (admin && !open) shape.addEventListener("pointerdown", (e) => startDrag(e, i, -1));
    g.append(shape);
    if (z.polygon.length) g.append(svg("text", { x: z.polygon[0][0] * Z + 6, y: z.polygon[0][1] * zed.h + 28 }, z.name));
    if (admin && i === zed.sel) {
      z.polygon.forEach(([x, y], k) => {
        const c = svg("circle", { cx: x * Z, cy: y * zed.h, r: 9, "data-corner": k });
        c.addEventListener("pointerdown", (e) => startDrag(e, i, k));
        g.append(c);
      });
    }
  });
  $("zone-list").replaceChildren(...zed.draft.map((z, i) => {
    const li = el("li", { class: i === zed.sel ? "selected" : "", "data-zone": z.name }, ...tNodes("zones.item", { kind: name("zonekind", z.kind), name: z.name, corners: z.polygon.length }, ["name"]));
    li.addEventListener("click", () => { zed.sel = i; zed.drawing = false; drawZones(); });
    return li;
  }));
  if (!zed.draft.length) $("zone-list").append(el("li", {}, t("zones.none")));
  const z = zed.draft[zed.sel];
  $("zone-kind").value = z ? z.kind : $("zone-kind").value;
  $("zone-name").value = z ? z.name : "";
  $("zone-lane").value = z && z.lane != null ? z.lane : "";
  $("zone-delete").disabled = !z;
  $("zone-finish").disabled = !zed.drawing;
  if (!$("zone-state").dataset.state || $("zone-state").dataset.state === "unsaved") {
    const dirty = !sameZones(zed.draft, zed.inForce);
    $("zone-state").textContent = dirty ? t("zones.unsaved") : "";
    if (dirty) $("zone-state").dataset.state = "unsaved"; else delete $("zone-state").dataset.state;
  }
}

// Where a pointer event falls on the frame, relative (0..1), kept inside it.
function relPoint(e) {
  const r = $("zone-svg").getBoundingClientRect();
  const clamp = (v) => Math.min(1, Math.max(0, v));
  return [clamp((e.clientX - r.left) / r.width), clamp((e.clientY - r.top) / r.height)];
}

// A corner (k >= 0) or a whole zone (k = -1) follows the pointer until it is let go.
function startDrag(e, i, k) {
  if (zed.drawing) return;
  e.preventDefault();
  e.stopPropagation();
  zed.sel = i;
  zed.drag = { i, k, from: relPoint(e), orig: structuredClone(zed.draft[i].polygon) };
  $("zone-svg").setPointerCapture(e.pointerId);
  drawZones();
}
$("zone-svg").addEventListener("pointermove", (e) => {
  const d = zed.drag;
  if (!d) return;
  const [x, y] = relPoint(e);
  const poly = zed.draft[d.i].polygon;
  if (d.k >= 0) poly[d.k] = [round4(x), round4(y)];
  else {
    // The whole zone moves, kept inside the frame.
    const xs = d.orig.map((p) => p[0]), ys = d.orig.map((p) => p[1]);
    const dx = Math.min(1 - Math.max(...xs), Math.max(-Math.min(...xs), x - d.from[0]));
    const dy = Math.min(1 - Math.max(...ys), Math.max(-Math.min(...ys), y - d.from[1]));
    d.orig.forEach(([ox, oy], n) => { poly[n] = [round4(ox + dx), round4(oy + dy)]; });
  }
  drawZones();
});
$("zone-svg").addEventListener("pointerup", () => { zed.drag = null; });
// While drawing, each click on the picture places the next corner.
$("zone-svg").addEventListener("click", (e) => {
  if (!zed.drawing || me.role !== "admin") return;
  const [x, y] = relPoint(e);
  zed.draft[zed.sel].polygon.push([round4(x), round4(y)]);
  drawZones();
});
$("zone-new").addEventListener("click", () => {
  const kind = $("zone-kind").value;
  let n = 1;
  while (zed.draft.some((z) => z.name === `${kind}_${n}`)) n++;
  const lanes = zed.draft.filter((z) => z.kind === "lane").map((z) => z.lane || 0);
  zed.draft.push(Object.assign({ name: `${kind}_${n}`, kind, polygon: [] }, kind === "lane" ? { lane: Math.max(0, ...lanes) + 1 } : {}));
  zed.sel = zed.draft.length - 1;
  zed.drawing = true;
  $("zone-errors").replaceChildren();
  drawZones();
});
$("zone-finish").addEventListener("click", () => {
  const z = zed.draft[zed.sel];
  if (z && z.polygon.length < 3) { $("zone-errors").replaceChildren(el("li", {}, t("zones.too_few"))); return; }
  zed.drawing = false;
  $("zone-errors").replaceChildren();
  drawZones();
});
$("zone-delete").addEventListener("click", () => {
  if (zed.sel < 0) return;
  zed.draft.splice(zed.sel, 1);
  zed.sel = -1;
  zed.drawing = false;
  drawZones();
});
$("zone-revert").addEventListener("click", () => {
  zed.draft = structuredClone(zed.inForce);
  zed.sel = -1;
  zed.drawing = false;
  $("zone-errors").replaceChildren();
  drawZones();
});
$("zone-kind").addEventListener("change", () => {
  const z = zed.draft[zed.sel];
  if (!z) return;
  z.kind = $("zone-kind").value;
  if (z.kind === "lane" && z.lane == null) z.lane = 1;
  if (z.kind !== "lane") delete z.lane;
  drawZones();
});
$("zone-name").addEventListener("change", () => { const z = zed.draft[zed.sel]; if (z) { z.name = $("zone-name").value.trim(); drawZones(); } });
$("zone-lane").addEventListener("change", () => {
  const z = zed.draft[zed.sel];
  if (!z) return;
  const v = $("zone-lane").value.trim();
  if (v === "") delete z.lane; else z.lane = Number(v);
  drawZones();
});

// Sends the draft; the node checks it with its whole config (its problems are listed here,
// nothing changes), saves it and restarts the camera; the page then asks until the camera
// runs with the new zones.
$("zone-save").addEventListener("click", async () => {
  const id = zed.camera;
  if (zed.drawing) $("zone-finish").click();
  if (zed.drawing) return;
  $("zone-errors").replaceChildren();
  const state = $("zone-state");
  state.textContent = t("zones.saving");
  state.dataset.state = "saving";
  const sent = structuredClone(zed.draft);
  const res = await fetch(`/api/v1/cameras/${encodeURIComponent(id)}/zones`, { method: "PUT", credentials: "same-origin", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ zones: sent }) });
  if (res.status === 401) { showLogin(); return; }
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    state.textContent = t("zones.refused");
    state.dataset.state = "refused";
    $("zone-errors").replaceChildren(...(body.errors || [body.error || res.statusText]).map((m) => el("li", { translate: "no" }, m)));
    return;
  }
  state.textContent = t("zones.waiting");
  state.dataset.state = "waiting";
  loadZoneAudit(id);
  const until = Date.now() + 30000;
  const check = async () => {
    if (zed.camera !== id) return;
    const z = await api(`/api/v1/cameras/${encodeURIComponent(id)}/zones`).catch(() => null);
    if (z && sameZones(z.zones || [], sent)) {
      zed.inForce = z.zones;
      state.textContent = t("zones.applied");
      state.dataset.state = "applied";
      drawZones();
    } else if (Date.now() > until) {
      state.textContent = t("zones.not_applied", { secs: 30 });
      state.dataset.state = "not_applied";
    } else zed.poll = setTimeout(check, 1000);
  };
  check();
});

// --- charts -----------------------------------------------------------------------------

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

// Stacked bars per bucket (series: name -> Map(bucket -> value)); buckets are times unless
// `label` says how to name one (its total given).
function barChart(target, legend, buckets, series, label) {
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
      r.append(svg("title", {}, `${label ? b : fmtTime(b)} ${n}: ${v}`));
      chart.append(r);
    });
    if (label) {
      chart.append(svg("text", { x: left + i * bw + bw / 2, y: bottom + 16, class: "tick", "text-anchor": "middle" }, label(b, totals[i])));
    } else if (buckets.length <= 48 && i % Math.ceil(buckets.length / 12) === 0) {
      chart.append(svg("text", { x: left + i * bw, y: bottom + 16, class: "tick" }, fmtTime(b).slice(11, 16)));
    }
  });
  $(legend).replaceChildren(...names.map((n, j) => el("span", {}, el("i", { class: `swatch c${j % PALETTE.length}` }), ` ${n}`)));
  if (!buckets.length) chart.append(svg("text", { x: 300, y: 120 }, t("charts.empty")));
}

function hours(from, to) {
  const out = [];
  for (let t = Math.floor(from / 3600000) * 3600000; t < to; t += 3600000) out.push(t);
  return out;
}

async function loadCharts() {
  if (!$("charts-from").value) {
    const hour = Math.floor(Date.now() / 3600000) * 3600000;
    $("charts-from").value = fmtTime(hour - 23 * 3600000).slice(0, 16);
    $("charts-to").value = fmtTime(hour + 3600000).slice(0, 16);
  }
  try {
    const fromIso = apiTime($("charts-from").value), toIso = apiTime($("charts-to").value);
    const q = `from=${encodeURIComponent(fromIso)}&to=${encodeURIComponent(toIso)}`;
    const buckets = hours(Date.parse(fromIso), Date.parse(toIso));
    const counts = await api(`/api/v1/counts?${q}`);
    const kinds = new Map();
    for (const r of counts.rows) {
      const k = name("kind", r.kind);
      if (!kinds.has(k)) kinds.set(k, new Map());
      kinds.get(k).set(r.bucket_start_ms, r.events);
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
  await loadTiming();
}
$("charts-form").addEventListener("submit", (e) => { e.preventDefault(); loadCharts(); });

// --- signal timing ----------------------------------------------------------------------

// Webster's proposal per hour of the day beside the plan in force, for the chosen crossing
// over the charts' window.
async function loadTiming() {
  const crossing = $("timing-crossing").value;
  const rows = $("timing-rows");
  if (!crossing) { rows.replaceChildren(); $("timing-plan").textContent = t("timing.none"); $("chart-timing").replaceChildren(); return; }
  try {
    const q = `crossing=${encodeURIComponent(crossing)}&from=${encodeURIComponent(apiTime($("charts-from").value))}&to=${encodeURIComponent(apiTime($("charts-to").value))}`;
    const r = await api(`/api/v1/timing?${q}`);
    const plan = r.plan_in_force;
    $("timing-plan").textContent = plan
      ? t("timing.plan", { cycle: plan.cycle_s.toFixed(0), greens: plan.greens_s.map((g) => g.toFixed(0)).join(" / "), phases: r.phases.map((p) => p.name).join(" / ") })
      : t("timing.no_plan", { phases: r.phases.map((p) => p.name).join(" / ") });
    rows.replaceChildren(...r.hours.map((h) => el("tr", {},
      el("td", {}, `${String(h.hour).padStart(2, "0")}:00`),
      el("td", {}, h.critical_flows_vph.map((f) => f.toFixed(0)).join(" / ")),
      el("td", {}, h.proposal.y_total.toFixed(2)),
      el("td", { class: h.proposal.capped ? "warn" : "" }, h.proposal.cycle_s.toFixed(0) + (h.proposal.capped ? ` (${t(`timing.capped.${h.proposal.capped}`)})` : "")),
      el("td", {}, h.proposal.greens_s.map((g) => g.toFixed(1)).join(" / ")),
    )));
    // The proposed cycle by hour of the day, the plan's as a line.
    const series = new Map([[t("timing.proposed"), new Map(r.hours.map((h) => [h.hour, h.proposal.cycle_s]))]]);
    hourChart("chart-timing", "legend-timing", series, plan ? plan.cycle_s : null);
  } catch (err) {
    showError($("timing-plan"), err);
  }
}
$("timing-crossing").addEventListener("change", loadTiming);

// Bars over the 24 hours of the day; a dashed line at `level` (the plan in force).
function hourChart(target, legend, series, level) {
  const chart = $(target);
  chart.replaceChildren();
  const [name0] = series.keys();
  const values = series.get(name0);
  const max = Math.max(1, level || 0, ...values.values());
  const left = 48, bottom = 230, width = 740, height = 210, bw = width / 24;
  chart.append(svg("line", { x1: left, y1: bottom, x2: left + width, y2: bottom, class: "axis" }));
  chart.append(svg("text", { x: 4, y: bottom - height + 4, class: "tick" }, max.toFixed(0)));
  chart.append(svg("text", { x: 4, y: bottom, class: "tick" }, 0));
  for (let h = 0; h < 24; h++) {
    const v = values.get(h);
    if (v) {
      const r = svg("rect", { x: left + h * bw + 1, y: bottom - (v / max) * height, width: bw - 2, height: (v / max) * height, fill: PALETTE[0], class: "bar" });
      r.append(svg("title", {}, `${h}:00 ${v.toFixed(1)}`));
      chart.append(r);
    }
    if (h % 3 === 0) chart.append(svg("text", { x: left + h * bw, y: bottom + 16, class: "tick" }, `${h}:00`));
  }
  const names = [name0];
  if (level) {
    const y = bottom - (level / max) * height;
    chart.append(svg("line", { x1: left, y1: y, x2: left + width, y2: y, class: "plan-line" }));
    names.push(t("timing.plan_line"));
  }
  $(legend).replaceChildren(...names.map((n, j) => el("span", {}, el("i", { class: j ? "swatch plan" : "swatch c0" }), ` ${n}`)));
}

// --- key vehicles -----------------------------------------------------------------------

const STATE_CLASS = { driving: "driving", stopped: "stopped", stopped_abnormally: "abnormal" };

// Positions (JT/T 808) on a map with the checkpoints, their table, and the alerts their
// positions raised (events: a click opens one for review).
async function loadVehicles() {
  let v;
  try {
    v = await api("/api/v1/vehicles/positions");
  } catch (err) {
    $("vehicles-note").textContent = t("vehicles.no_gateway");
    $("vehicle-rows").replaceChildren();
    $("vehicle-map").replaceChildren();
    return;
  }
  const positions = v.positions || [];
  const counts = {};
  for (const p of positions) counts[p.state || "unknown"] = (counts[p.state || "unknown"] || 0) + 1;
  $("vehicles-note").textContent = t("vehicles.summary", { n: positions.length, driving: counts.driving || 0, stopped: counts.stopped || 0, abnormal: counts.stopped_abnormally || 0 });
  const map = $("vehicle-map");
  map.replaceChildren();
  const points = positions.map((p) => ({ lon: p.lon, lat: p.lat })).concat(checkpoints);
  if (points.length) {
    const at = settings.map_tiles ? tiles(map, points) : projector(points);
    for (const c of checkpoints) {
      const [x, y] = at(c.lon, c.lat);
      map.append(svg("circle", { cx: x, cy: y, r: 5, class: "ckpt" }));
    }
    const labels = [];
    for (const p of positions) {
      const [x, y] = at(p.lon, p.lat);
      const dot = svg("circle", { cx: x, cy: y, r: 7, class: `vehicle ${STATE_CLASS[p.state] || ""}`, "data-terminal": p.terminal });
      dot.append(svg("title", {}, `${p.plate || p.terminal} ${name("vstate", p.state)} ${p.speed_kmh.toFixed(0)} km/h`));
      map.append(dot);
      if (positions.length <= 50) labels.push({ x: x + 10, y: y + 4, text: p.plate || p.terminal, cls: "ckpt-label", anchor: "start", right: true, cx: x });
    }
    // The chosen vehicle's last 24 hours: its positions as a line, its checkpoint passes as
    // squares (those in a gap of its positions outlined).
    if (trackedPlate) {
      try {
        const tr = await api(`/api/v1/vehicles/track?plate=${encodeURIComponent(trackedPlate)}&from=${Date.now() - 86400000}`);
        const gps = tr.points.filter((x) => x.source === "gps").map((x) => at(x.lon, x.lat));
        if (gps.length > 1) map.prepend(svg("polyline", { points: gps.map((q) => q.join(",")).join(" "), class: "track", fill: "none" }));
        for (const x of tr.points.filter((q) => q.source === "checkpoint")) {
          const [px, py] = at(x.lon, x.lat);
          const r = svg("rect", { x: px - 6, y: py - 6, width: 12, height: 12, class: `track-pass${x.fills_gap ? " gap" : ""}` });
          r.append(svg("title", {}, `${fmtTime(x.time_ms)} ${x.checkpoint_name}`));
          map.append(r);
        }
        $("vehicles-note").textContent += t("vehicles.track", { plate: trackedPlate, gps: tr.positions, passes: tr.passes, filled: tr.passes_filling_gaps });
      } catch (err) {
        showError($("vehicles-note"), err);
      }
    }
    placeLabels(map, labels);
  }
  $("legend-vehicles").replaceChildren(...["driving", "stopped", "stopped_abnormally"].map((s) => el("span", {}, el("i", { class: `swatch vehicle ${STATE_CLASS[s]}` }), ` ${name("vstate", s)}`)));
  $("vehicle-rows").replaceChildren(...positions.map((p) => el("tr", { "data-terminal": p.terminal, class: `link${p.plate && p.plate === trackedPlate ? " selected" : ""}`, onclick: () => { trackedPlate = p.plate || null; loadVehicles(); } },
    el("td", { class: "plate", translate: "no" }, p.plate || ""),
    el("td", { translate: "no" }, p.terminal),
    el("td", { class: STATE_CLASS[p.state] || "" }, name("vstate", p.state)),
    el("td", {}, t("detail.position", { kmh: p.speed_kmh.toFixed(0) })),
    el("td", {}, fmtTime(p.time_ms)),
    el("td", {}, p.reports),
  )));
  try {
    const alerts = await api("/api/v1/events?kind=vehicle_alert&limit=50");
    $("vehicle-alerts").replaceChildren(...alerts.events.map((ev) => eventRow(ev, false)));
  } catch (err) {
    showError($("vehicles-note"), err);
  }
}

// --- accidents --------------------------------------------------------------------------

async function loadAccidents() {
  const p = new URLSearchParams();
  try {
    if ($("accidents-from").value) p.set("from", apiTime($("accidents-from").value));
    if ($("accidents-to").value) p.set("to", apiTime($("accidents-to").value));
  } catch (err) {
    showError($("accidents-summary"), err);
    return;
  }
  let r;
  try {
    r = (await api(`/api/v1/accidents/patterns?${p}`)).patterns;
  } catch (err) {
    showError($("accidents-summary"), err);
    return;
  }
  $("accidents-summary").textContent = r.accidents
    ? t("accidents.summary", { n: r.accidents, places: r.places, hot: r.places_ranked.filter((x) => x.hot).length, hours: r.hours_hot.length })
    : t("accidents.none");
  const sev = (m) => Object.entries(m).map(([k, n]) => `${name("severity", k)} ${n}`).join(listSep());
  $("accident-places").replaceChildren(...r.places_ranked.map((x) => el("tr", { class: x.hot ? "hot" : "" },
    el("td", { translate: "no" }, x.place),
    el("td", {}, x.count),
    el("td", {}, x.expected.toFixed(1)),
    el("td", {}, x.hot ? t("accidents.hot", { p: x.p_value.toExponential(1) }) : x.p_value.toExponential(1)),
    el("td", {}, `${String(x.worst_hour).padStart(2, "0")}:00`),
    el("td", {}, sev(x.by_severity)),
  )));
  const hours = r.hours_hot.length ? r.hours_hot : r.hours_busiest;
  $("accident-hours").replaceChildren(...hours.map((h) => el("tr", { class: h.hot ? "hot" : "" },
    el("td", {}, t("accidents.weekday_hour", { day: name("weekday", String(h.weekday)), hour: String(h.hour).padStart(2, "0") })),
    el("td", {}, h.count),
    el("td", {}, h.expected.toFixed(1)),
    el("td", {}, h.hot ? t("accidents.hot", { p: h.p_value.toExponential(1) }) : h.p_value.toExponential(1)),
  )));
  // Each year's accidents, stacked by severity.
  const years = r.years.map((y) => y.year);
  const series = new Map();
  for (const s of ["minor", "general", "major", "severe"]) series.set(name("severity", s), new Map(r.years.map((y) => [y.year, y.by_severity[s] || 0])));
  barChart("chart-years", "legend-years", years, series, (year, total) => `${year} (${total})`);
}
$("accidents-form").addEventListener("submit", (e) => { e.preventDefault(); loadAccidents(); });

// Settings first (language, time zone), then the session if there is one.
async function boot() {
  try {
    Object.assign(settings, await (await fetch("/dashboard/settings.json")).json());
  } catch (e) { /* the defaults */ }
  let saved = null;
  try { saved = localStorage.getItem("lang"); } catch (e) { /* none */ }
  setLang(saved || settings.language);
  applyI18n(document);
  drawClock();
  setInterval(drawClock, 15000);
  start().catch(() => showLogin());
}
boot();
