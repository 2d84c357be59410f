// The geoscim dashboard: plain JavaScript over the admin API (the session cookie signs every
// request; the page never sees a token). Views are chosen by ?view=…, and every filter lives in
// the URL, so a link shows the same thing to whoever opens it.
"use strict";

const VIEWS = ["cluster", "conflicts", "offboardings", "resource", "charts"];
const timers = {};
let feed = null;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// A time in UTC, with the reader's local time on hover.
function utc(t) {
  if (t === null || t === undefined || t === "") return el("span", { text: "—" });
  const d = typeof t === "number" ? new Date(t) : new Date(t);
  if (isNaN(d)) return el("span", { text: String(t) });
  const text = d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  return el("time", { datetime: d.toISOString(), title: "local: " + d.toLocaleString() }, text);
}

function secs(s) {
  if (s === null || s === undefined) return "—";
  if (s < 1) return (s * 1000).toFixed(0) + " ms";
  if (s < 120) return s.toFixed(1) + " s";
  if (s < 7200) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function status(text) {
  document.getElementById("status").textContent = text;
}

async function getJson(url) {
  const r = await fetch(url, { credentials: "same-origin", headers: { accept: "application/json" } });
  if (r.status === 401) {
    status("Your session ended; reload to sign in again.");
    throw new Error("signed out");
  }
  const body = await r.json().catch(() => null);
  if (!r.ok) throw new Error((body && body.detail) || ("HTTP " + r.status));
  return body;
}

function params() {
  return new URLSearchParams(location.search);
}

function currentView() {
  const v = params().get("view");
  return VIEWS.includes(v) ? v : "cluster";
}

function navigate(search) {
  history.pushState(null, "", "?" + search.toString());
  show();
}

// ---- Cluster -------------------------------------------------------------------------------
const HEALTH_MARK = { healthy: "✔ healthy", unhealthy: "✖ unhealthy", unreachable: "✖ unreachable", unknown: "? unknown" };

async function loadCluster() {
  const v = await getJson("/admin/v1/cluster");
  const body = document.querySelector("#cluster-table tbody");
  body.replaceChildren(...v.regions.map((r) => {
    const rep = r.replication;
    const row = el("tr", { "data-region": r.name, "data-health": r.health, class: "health-" + r.health },
      el("th", { scope: "row" }, r.name, r.self ? el("span", { class: "pill" }, "this region") : null),
      el("td", { title: r.reason }, el("span", { class: "health" }, HEALTH_MARK[r.health] || r.health),
        el("div", { class: "reason" }, r.reason)),
      el("td", {}, r.dns ? (r.dns.answered ? "answered" : "withdrawn") : "—"),
      el("td", {}, r.self ? "—" : rep ? (rep.connected ? "● connected" : "○ disconnected") : "—"),
      el("td", { class: "num" }, rep ? String(rep.behindChanges) : "—"),
      el("td", { class: "num" }, rep ? secs(rep.oldestUnackedSecs) : "—"),
      el("td", { class: "num" }, rep ? (rep.lastContactSecs === null ? "never" : secs(rep.lastContactSecs) + " ago") : "—"),
      el("td", {}, rep ? rep.digest : "—"),
      el("td", {}, r.version || "—"),
      el("td", { class: "num" }, r.uptimeSecs === null || r.uptimeSecs === undefined ? "—" : secs(r.uptimeSecs)));
    return row;
  }));
}

// ---- Conflicts -----------------------------------------------------------------------------
const FILTERS = ["tenant", "rule", "resource", "since", "until"];

function filterQuery() {
  const p = params();
  const q = new URLSearchParams();
  for (const f of FILTERS) if (p.get(f)) q.set(f, p.get(f));
  return q;
}

function valueText(v) {
  return v === null ? "(deleted / removed)" : JSON.stringify(v);
}

function conflictEntry(c) {
  const values = el("table", { class: "values" },
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Region"), el("th", { scope: "col" }, "Written at"),
      el("th", { scope: "col" }, "Value"))),
    el("tbody", {}, ...c.values.map((v) => el("tr", { class: "candidate" },
      el("td", {}, v.region), el("td", {}, utc(v.at)), el("td", { class: "value" }, valueText(v.value))))));
  const open = el("button", { type: "button", class: "open-resource" }, "Open resource");
  open.addEventListener("click", () => {
    const s = new URLSearchParams({ view: "resource", tenant: c.tenant, type: c.resourceType + "s", q: c.resourceId });
    navigate(s);
  });
  return el("li", { "data-id": c.id, "data-rule": c.rule },
    el("details", { class: "conflict" },
      el("summary", {}, utc(c.at), " ", el("span", { class: "rule" }, c.rule), " ",
        el("span", {}, c.tenant + " / " + c.resourceType + " " + c.resourceId), " ",
        el("code", {}, c.attribute), " → ", el("code", { class: "outcome" }, valueText(c.outcome))),
      el("dl", {},
        el("dt", {}, "Rule"), el("dd", { class: "rule-detail" }, c.rule),
        el("dt", {}, "Attribute"), el("dd", {}, c.attribute),
        el("dt", {}, "Outcome"), el("dd", {}, valueText(c.outcome)),
        el("dt", {}, "Record id"), el("dd", {}, el("code", {}, c.id))),
      values, open));
}

function addConflict(list, c) {
  if (list.querySelector('[data-id="' + CSS.escape(c.id) + '"]')) return;
  list.prepend(conflictEntry(c));
  while (list.children.length > 500) list.lastElementChild.remove();
}

async function loadConflicts() {
  const list = document.getElementById("conflict-list");
  const q = filterQuery();
  const form = document.getElementById("conflict-filters");
  for (const f of FILTERS) form.elements[f].value = params().get(f) || "";
  // The stream first, then the log: a record indexed in between comes by the stream (held
  // until the log is shown), and one in both is shown once.
  if (feed) feed.close();
  const state = document.getElementById("feed-state");
  const held = [];
  let shown = false;
  feed = new EventSource("/admin/v1/conflicts/stream?" + q);
  feed.onopen = () => { state.textContent = "● live"; };
  feed.onerror = () => { state.textContent = "○ reconnecting…"; };
  feed.addEventListener("conflict", (e) => {
    const c = JSON.parse(e.data);
    if (shown) addConflict(list, c); else held.push(c);
  });
  feed.addEventListener("reset", () => { loadConflicts(); });
  // The newest page: the log is oldest first.
  const head = await getJson("/admin/v1/conflicts?" + q + "&count=0");
  const start = Math.max(1, head.totalResults - 99);
  const page = await getJson("/admin/v1/conflicts?" + q + "&count=100&startIndex=" + start);
  list.replaceChildren(...page.Resources.reverse().map(conflictEntry));
  shown = true;
  for (const c of held) addConflict(list, c);
}

// ---- Pending offboardings ------------------------------------------------------------------
async function loadPending() {
  const v = await getJson("/admin/v1/offboardings/pending?count=200");
  const body = document.querySelector("#pending-table tbody");
  body.replaceChildren(...v.Resources.map((p) => el("tr", { class: "pending", "data-id": p.id },
    el("td", {}, utc(p.atMillis)), el("td", { class: "num" }, secs(p.ageMs / 1000)),
    el("td", {}, p.action), el("td", {}, p.tenant), el("td", {}, p.resourceType + " " + p.id),
    el("td", {}, p.origin + " #" + p.seq), el("td", { class: "missing" }, p.missing.join(", ")))));
  document.getElementById("pending-empty").hidden = v.Resources.length > 0;
  document.getElementById("pending-table").hidden = v.Resources.length === 0;
}

// ---- Resource ------------------------------------------------------------------------------
async function loadResource() {
  const p = params();
  const form = document.getElementById("resource-search");
  form.elements.tenant.value = p.get("tenant") || "";
  form.elements.type.value = p.get("type") || "Users";
  form.elements.q.value = p.get("q") || "";
  const hits = document.getElementById("resource-hits");
  const detail = document.getElementById("resource-detail");
  if (!p.get("tenant") || !p.get("q")) { hits.replaceChildren(); detail.replaceChildren(); return; }
  const type = p.get("type") || "Users";
  const tenant = encodeURIComponent(p.get("tenant"));
  const found = await getJson("/admin/v1/resources/" + type + "?tenant=" + tenant + "&q=" + encodeURIComponent(p.get("q")));
  let id = found.Resources.length === 1 ? found.Resources[0].id : null;
  hits.replaceChildren(found.Resources.length > 1
    ? el("ul", {}, ...found.Resources.map((r) => el("li", {}, el("a", { href: "?" + new URLSearchParams({ view: "resource", tenant: p.get("tenant"), type, q: r.id }) }, r.id + " " + (r.userName || r.displayName || "")))))
    : "");
  if (!id) id = p.get("q");
  const parts = [];
  try {
    const r = await getJson("/admin/v1/resources/" + type + "/" + encodeURIComponent(id) + "?tenant=" + tenant);
    parts.push(el("h3", {}, "Current"), el("p", {}, "ETag ", el("code", { class: "etag" }, r.etag)),
      el("pre", { class: "json", tabindex: "0" }, JSON.stringify(r.resource, null, 2)));
  } catch (e) {
    parts.push(el("p", { class: "warn" }, "⚠ " + e.message));
  }
  try {
    const h = await getJson("/admin/v1/resources/" + type + "/" + encodeURIComponent(id) + "/history?tenant=" + tenant);
    parts.push(el("h3", {}, "History across regions"), el("div", { class: "table-wrap" }, el("table", { class: "history" },
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "When"), el("th", { scope: "col" }, "Region"),
        el("th", { scope: "col" }, "Action"), el("th", { scope: "col" }, "Attributes"))),
      el("tbody", {}, ...h.history.map((e) => el("tr", {}, el("td", {}, utc(e.at)), el("td", {}, e.region),
        el("td", {}, e.action), el("td", {}, e.attributes.join(", "))))))));
  } catch (e) {
    parts.push(el("p", { class: "warn" }, "⚠ history: " + e.message));
  }
  detail.replaceChildren(...parts);
}

// ---- Charts --------------------------------------------------------------------------------
const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function chart(title, unit, points) {
  const w = 560, h = 150, pad = 36;
  const max = Math.max(1e-9, ...points.map((p) => p[1]));
  const t0 = points.length ? points[0][0] : 0, t1 = points.length ? points[points.length - 1][0] : 1;
  const x = (t) => pad + ((t - t0) / Math.max(1, t1 - t0)) * (w - pad - 8);
  const y = (v) => h - 20 - (v / max) * (h - 34);
  const s = svg("svg", { viewBox: `0 0 ${w} ${h}`, role: "img", "aria-label": title + ": latest " + (points.length ? points[points.length - 1][1].toFixed(2) : "no data") + " " + unit });
  s.append(svg("line", { x1: pad, y1: h - 20, x2: w - 8, y2: h - 20, class: "axis" }));
  s.append(svg("line", { x1: pad, y1: 14, x2: pad, y2: h - 20, class: "axis" }));
  const label = (text, lx, ly, anchor, hover) => {
    const t = svg("text", { x: lx, y: ly, "text-anchor": anchor || "start" });
    t.textContent = text;
    if (hover) { const tip = svg("title", {}); tip.textContent = hover; t.append(tip); }
    s.append(t);
  };
  const local = (t) => "local: " + new Date(t).toLocaleString();
  label(max.toFixed(max < 10 ? 2 : 0), pad - 4, 18, "end");
  label("0", pad - 4, h - 20, "end");
  if (points.length) {
    label(new Date(t0).toISOString().slice(11, 16) + "Z", pad, h - 4, "start", local(t0));
    label(new Date(t1).toISOString().slice(11, 16) + "Z", w - 8, h - 4, "end", local(t1));
    s.append(svg("polyline", { points: points.map((p) => x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1)).join(" "), class: "series" }));
  } else {
    label("no samples yet", w / 2, h / 2, "middle");
  }
  return el("figure", { class: "chart" }, el("figcaption", {}, title + " (" + unit + ")"), s);
}

async function loadCharts() {
  const v = await getJson("/admin/v1/samples");
  const pts = (f) => v.samples.map((s) => [s.atMillis, f(s)]);
  document.getElementById("charts").replaceChildren(
    chart("Requests", "per second", pts((s) => s.requestsPerSec)),
    chart("Errors (5xx)", "per second", pts((s) => s.errorsPerSec)),
    chart("Shed requests", "per second", pts((s) => s.shedPerSec)),
    chart("Replication lag, worst peer", "changes", pts((s) => s.lagChanges)),
    chart("Replication lag, oldest unacknowledged", "seconds", pts((s) => s.lagSeconds)),
    chart("Conflicts", "per sample", pts((s) => s.conflicts)));
}

// ---- Views ---------------------------------------------------------------------------------
const LOADERS = { cluster: [loadCluster, 2000], conflicts: [loadConflicts, 0], offboardings: [loadPending, 2000], resource: [loadResource, 0], charts: [loadCharts, 10000] };

function run(view) {
  const [load, every] = LOADERS[view];
  load().then(() => status(""), (e) => status("⚠ " + e.message));
  if (every) timers[view] = setInterval(() => load().then(() => status(""), (e) => status("⚠ " + e.message)), every);
}

function show() {
  const view = currentView();
  for (const t of Object.keys(timers)) { clearInterval(timers[t]); delete timers[t]; }
  if (view !== "conflicts" && feed) { feed.close(); feed = null; }
  for (const s of document.querySelectorAll("main section")) s.hidden = s.dataset.view !== view;
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.view === view) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  run(view);
}

function formToUrl(form, view) {
  const s = new URLSearchParams({ view });
  for (const [k, v] of new FormData(form)) if (v) s.set(k, v);
  navigate(s);
}

document.addEventListener("DOMContentLoaded", () => {
  for (const a of document.querySelectorAll("nav a")) {
    a.addEventListener("click", (e) => { e.preventDefault(); navigate(new URLSearchParams({ view: a.dataset.view })); });
  }
  document.getElementById("conflict-filters").addEventListener("submit", (e) => { e.preventDefault(); formToUrl(e.target, "conflicts"); });
  document.getElementById("resource-search").addEventListener("submit", (e) => { e.preventDefault(); formToUrl(e.target, "resource"); });
  window.addEventListener("popstate", show);
  getJson("/dashboard/session").then((s) => { document.getElementById("csrf").value = s.csrf; }, () => {});
  show();
});
