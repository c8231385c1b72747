// The allinone dashboard: one page, hash routes, short polling (every 2 s) of the API.
// No framework, no build step, no CDN: the curves are uPlot's (vendored in the package,
// see vendor/uplot/README.md); the workflow graphs are SVG drawn here. Everything shown
// is read from the public API (the same one the CLI uses); text from the server is
// always inserted as text (textContent), never as HTML: names and logs are untrusted.
"use strict";

const POLL_MS = 2000;
const $ = (sel, root = document) => root.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// -- API ------------------------------------------------------------------------------

function token() { return sessionStorage.getItem("allinone-token") || ""; }

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (token()) headers["Authorization"] = "Bearer " + token();
  const resp = await fetch(path, Object.assign({}, opts, {headers}));
  if (resp.status === 401 && path.startsWith("/api/")) {
    const t = prompt("This server's API needs its token (STATE_DIR/token on the server):");
    if (t) { sessionStorage.setItem("allinone-token", t.trim()); return api(path, opts); }
  }
  return resp;
}

async function getJSON(path) {
  const resp = await api(path);
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const msg = (body.error && body.error.message) || ("HTTP " + resp.status);
    const err = new Error(msg); err.status = resp.status; throw err;
  }
  return body;
}

// -- formatting -----------------------------------------------------------------------

const fmt = {
  num: (v, d = 1) => (v === null || v === undefined || Number.isNaN(v)) ? "-" : Number(v).toFixed(d),
  ms: (v) => (v === null || v === undefined) ? "-" : Number(v).toFixed(1) + " ms",
  mib: (b) => (b === null || b === undefined) ? "-" : (b / 1048576).toFixed(1) + " MiB",
  age: (ts) => {
    if (!ts) return "-";
    const s = Math.max(0, Math.round((Date.now() - Date.parse(ts)) / 1000));
    return s < 120 ? s + "s" : s < 7200 ? Math.round(s / 60) + "m" : Math.round(s / 3600) + "h";
  },
  image: (img) => img ? img.replace(/^[^/]+\//, "").replace(/@sha256:(.{12}).*/, "@$1") : "-",
};

// Per-function CPU and memory: the sum of its pods' status.usage, when pods report it.
function usageByFunction(pods) {
  const out = {};
  for (const p of pods) {
    const u = p.status && p.status.usage;
    const fn = p.spec && p.spec.function;
    if (!u || !fn) continue;
    const o = out[fn] || (out[fn] = {cpuPercent: 0, memoryBytes: 0});
    o.cpuPercent += u.cpuPercent; o.memoryBytes += u.memoryBytes;
  }
  return out;
}

// -- charts ---------------------------------------------------------------------------

// The function page's curves are uPlot charts (vendor/uplot, loaded before this script).
// A chart is made once per page visit and fed new data on every poll (setData), so the
// curves move without a reload. window.allinoneCharts maps a chart's id to its uPlot
// instance: the browser tests read the curves from there (u.data, u.series).
const COLORS = ["#2f6fde", "#e07b00", "#1a7f37"];
const CHART_HEIGHT = 160;
const charts = window.allinoneCharts = {};

// A chart of series [{label, values}] over times ts (unix seconds), unit appended to
// the y axis' numbers and the legend's values. Returns {node, update(ts, series)}; the
// node must be in the document before update is first called (uPlot sizes to it).
function chart(id, title, unit = "") {
  const body = el("div", {id, class: "plot"});
  const node = el("div", {class: "chart"}, el("div", {}, el("b", {}, title)), body);
  const show = v => (v === null || v === undefined) ? "-" : fmt.num(v, v < 10 ? 2 : 0) + unit;
  let u = null, resize = null, gone = false;
  const width = () => Math.max(200, body.clientWidth);
  const update = (ts, series) => {
    if (gone) return;  // a poll that was under way when the page was left
    const data = [ts, ...series.map(s => s.values.map(v => v === undefined ? null : v))];
    if (u) { u.setData(data); return; }
    u = new uPlot({
      width: width(), height: CHART_HEIGHT,
      scales: {x: {time: true}, y: {range: (self, lo, hi) => [0, Math.max(1, hi || 0) * 1.1]}},
      // the y axis is as wide as its longest label needs ("12000 ms" at 12 px)
      axes: [{}, {size: unit ? 80 : 50, values: (self, ticks) => ticks.map(t => +t.toFixed(3) + unit)}],
      series: [{}, ...series.map((s, i) => ({label: s.label, stroke: COLORS[i % COLORS.length],
                                             width: 2, value: (self, v) => show(v)}))],
      cursor: {drag: {x: false, y: false}},
    }, data, body);
    charts[id] = u;
    resize = new ResizeObserver(() => u.setSize({width: width(), height: CHART_HEIGHT}));
    resize.observe(body);
  };
  const destroy = () => {
    gone = true;
    if (resize) resize.disconnect();
    if (u) u.destroy();
    delete charts[id];
  };
  return {node, update, destroy};
}

// Charts of the page being left: their observers and instances go with it.
function destroyCharts(list) { list.forEach(c => c.destroy()); list.length = 0; }
let pageCharts = [];

// -- views ----------------------------------------------------------------------------

let timer = null;
let current = null;  // the view's refresh function

async function renderFunctions(view) {
  const [fns, stats, pods] = await Promise.all([
    getJSON("/api/v1/functions"), getJSON("/api/v1/stats"),
    getJSON("/api/v1/namespaces/serverless/pods").catch(() => ({items: []})),
  ]);
  const usage = usageByFunction(pods.items);
  const head = ["Name", "Phase", "Image", "Desired", "Ready", "Stable conc.", "Panic conc.",
                "Panic", "Req/s", "p50", "p95", "Cold starts", "CPU %", "Memory"];
  const numeric = new Set([3, 4, 5, 6, 8, 9, 10, 11, 12, 13]);
  const rows = fns.items.map(fn => {
    const name = fn.metadata.name, st = fn.status || {}, a = st.autoscaler || {};
    const p = stats.functions[name] || {}, u = usage[name];
    const cells = [
      el("a", {href: "#/f/" + encodeURIComponent(name)}, name),
      el("span", {class: "phase-" + (st.phase || "")}, st.phase || "?"),
      fmt.image(st.image), st.desiredReplicas ?? "-", st.readyReplicas ?? 0,
      fmt.num(a.stableConcurrency, 2), fmt.num(a.panicConcurrency, 2), a.panic ? "yes" : "no",
      fmt.num(p.rps, 1), fmt.ms(p.p50), fmt.ms(p.p95), p.coldStarts ?? 0,
      u ? fmt.num(u.cpuPercent, 1) : "-", u ? fmt.mib(u.memoryBytes) : "-",
    ];
    return el("tr", {"data-fn": name}, cells.map((c, i) =>
      el("td", {class: numeric.has(i) ? "num" : "", "data-col": head[i]}, c)));
  });
  view.replaceChildren(
    el("h2", {}, `Functions (${fns.items.length})`),
    fns.items.length ? el("table", {id: "functions"},
      el("thead", {}, el("tr", {}, head.map((h, i) => el("th", {class: numeric.has(i) ? "num" : ""}, h)))),
      el("tbody", {}, rows))
      : el("p", {class: "muted"}, "No functions yet: `allinone function deploy NAME --file F.py`."));
}

function functionPage(name) {
  let built = false;
  const parts = {};
  return async (view) => {
    if (!built) {
      parts.curves = {
        replicas: chart("chart-replicas", "Pods"),
        concurrency: chart("chart-concurrency", "Concurrency"),
        latency: chart("chart-latency", "Latency (last 10 s)", " ms"),
        rps: chart("chart-rps", "Requests per second"),
      };
      pageCharts = Object.values(parts.curves);
      parts.charts = el("div", {class: "charts"}, pageCharts.map(c => c.node));
      parts.summary = el("p", {id: "summary"});
      parts.pods = el("div");
      parts.logs = el("pre", {id: "logs"}, "");
      parts.result = el("pre", {id: "invoke-result"}, "");
      const input = el("textarea", {id: "invoke-body", rows: 4}, "{}");
      const form = el("form", {id: "invoke-form", onsubmit: async (ev) => {
        ev.preventDefault();
        parts.result.textContent = "...";
        const t0 = performance.now();
        try {
          const resp = await fetch("/function/" + encodeURIComponent(name), {
            method: "POST", headers: {"Content-Type": "application/json"}, body: input.value});
          const text = await resp.text();
          parts.result.textContent = `HTTP ${resp.status} in ${(performance.now() - t0).toFixed(0)} ms\n${text}`;
          parts.result.setAttribute("data-status", resp.status);
        } catch (e) { parts.result.textContent = "error: " + e.message; }
      }}, input, el("button", {type: "submit"}, "Invoke"));
      view.replaceChildren(
        el("h2", {}, el("a", {href: "#/"}, "Functions"), " / ", name), parts.summary, parts.charts,
        el("div", {class: "cols"},
          el("div", {}, el("h3", {}, "Pods"), parts.pods, el("h3", {}, "Invoke"), form, parts.result),
          el("div", {}, el("h3", {}, "Logs (tail)"), parts.logs)));
      built = true;
    }
    const [fn, series, pods] = await Promise.all([
      getJSON("/api/v1/functions/" + encodeURIComponent(name)),
      getJSON("/api/v1/stats/functions/" + encodeURIComponent(name)).catch(() => ({points: []})),
      getJSON("/api/v1/namespaces/serverless/pods?function=" + encodeURIComponent(name)),
    ]);
    const st = fn.status || {}, a = st.autoscaler || {};
    parts.summary.replaceChildren(
      el("span", {class: "phase-" + (st.phase || "")}, st.phase || "?"), "  ",
      `image ${fmt.image(st.image)} · desired ${st.desiredReplicas ?? "-"} · ready ${st.readyReplicas ?? 0}` +
      ` · panic ${a.panic ? "yes" : "no"}` + (st.message ? ` · ${st.message}` : ""));
    const pts = series.points, ts = pts.map(p => p.t);
    const values = key => pts.map(p => p[key]);
    parts.curves.replicas.update(ts, [
      {label: "desired", values: values("desired")}, {label: "ready", values: values("ready")}]);
    parts.curves.concurrency.update(ts, [
      {label: "stable", values: values("stable")}, {label: "panic", values: values("panic")}]);
    parts.curves.latency.update(ts, [
      {label: "p50", values: values("p50")}, {label: "p95", values: values("p95")}]);
    parts.curves.rps.update(ts, [{label: "req/s", values: values("rps")}]);
    const head = ["Pod", "Phase", "Age", "In-flight", "CPU %", "Memory", "Restarts"];
    parts.pods.replaceChildren(pods.items.length ? el("table", {id: "pods"},
      el("thead", {}, el("tr", {}, head.map(h => el("th", {}, h)))),
      el("tbody", {}, pods.items.map(p => {
        const st = p.status || {}, u = st.usage;
        return el("tr", {"data-pod": p.metadata.name}, [
          p.metadata.name, st.phase || "?", fmt.age(p.metadata.creationTimestamp),
          st.inFlight ?? "-", u ? fmt.num(u.cpuPercent, 1) : "-", u ? fmt.mib(u.memoryBytes) : "-",
          st.restartCount ?? "-",
        ].map((c, i) => el("td", {class: i >= 3 ? "num" : "", "data-col": head[i]}, c)));
      }))) : el("p", {class: "muted"}, "no pods (scaled to zero)"));
    const logs = await api("/api/v1/functions/" + encodeURIComponent(name) + "/logs");
    if (logs.ok) {
      const lines = (await logs.text()).split("\n");
      const pre = parts.logs, atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.textContent = lines.slice(-200).join("\n");
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    }
  };
}

async function renderTriggers(view) {
  const data = await getJSON("/api/v1/triggers");
  const head = ["Name", "Source", "Target", "Next fire", "Fires", "Failures", "Missed", "Last deliveries"];
  const rows = await Promise.all(data.items.map(async t => {
    const spec = t.spec, st = t.status || {};
    const source = spec.schedule ? `schedule ${spec.schedule}` : `watch ${(spec.watch || {}).path || "?"}`;
    const [kind, target] = Object.entries(spec.target || {})[0] || ["?", "?"];
    const ev = await getJSON(`/api/v1/triggers/${encodeURIComponent(t.metadata.name)}/events?limit=3`)
      .catch(() => ({items: []}));
    const last = ev.items.map(e => `${fmt.age(e.time)} ago ${e.status || "?"}` +
      (e.httpStatus ? ` (${e.httpStatus})` : "")).join("; ") || "-";
    return el("tr", {"data-trigger": t.metadata.name}, [t.metadata.name, source, `${kind}/${target}`,
      st.nextFireTime || "-", st.fires || 0, st.failures || 0, st.missed || 0, last].map(c => el("td", {}, c)));
  }));
  view.replaceChildren(el("h2", {}, `Triggers (${data.items.length})`),
    data.items.length ? el("table", {id: "triggers"},
      el("thead", {}, el("tr", {}, head.map(h => el("th", {}, h)))), el("tbody", {}, rows))
      : el("p", {class: "muted"}, "No triggers: `allinone trigger create ...`."));
}

// A state machine drawn as layers (breadth-first from StartAt); visited states filled.
function workflowGraph(def, visited = new Set()) {
  const states = def.States || {};
  const nexts = s => {
    const out = [];
    if (s.Next) out.push(s.Next);
    if (s.Default) out.push(s.Default);
    (s.Choices || []).forEach(c => c.Next && out.push(c.Next));
    (s.Catch || []).forEach(c => c.Next && out.push(c.Next));
    return out;
  };
  const layer = {}, order = [];
  const queue = def.StartAt ? [[def.StartAt, 0]] : [];
  while (queue.length) {
    const [n, d] = queue.shift();
    if (n in layer || !(n in states)) continue;
    layer[n] = d; order.push(n);
    nexts(states[n]).forEach(m => queue.push([m, d + 1]));
  }
  Object.keys(states).forEach(n => { if (!(n in layer)) { layer[n] = 0; order.push(n); } });
  const byLayer = {};
  order.forEach(n => (byLayer[layer[n]] = byLayer[layer[n]] || []).push(n));
  const pos = {}, BW = 140, BH = 30, GX = 30, GY = 40;
  let width = 0;
  Object.entries(byLayer).forEach(([d, names]) => names.forEach((n, i) => {
    pos[n] = {x: 10 + i * (BW + GX), y: 10 + Number(d) * (BH + GY)};
    width = Math.max(width, pos[n].x + BW + 10);
  }));
  const height = 20 + Object.keys(byLayer).length * (BH + GY);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", width); svg.setAttribute("height", height);
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    Object.entries(attrs).forEach(([k, v]) => e.setAttribute(k, v));
    if (text !== undefined) e.textContent = text;
    svg.append(e); return e;
  };
  order.forEach(n => nexts(states[n]).forEach(m => {
    if (!pos[m]) return;
    add("line", {x1: pos[n].x + BW / 2, y1: pos[n].y + BH, x2: pos[m].x + BW / 2, y2: pos[m].y,
      stroke: "#999"});
  }));
  order.forEach(n => {
    add("rect", {x: pos[n].x, y: pos[n].y, width: BW, height: BH, rx: 4,
      fill: visited.has(n) ? "#d7e6ff" : "#fff", stroke: visited.has(n) ? "#2f6fde" : "#999",
      "data-state": n});
    add("text", {x: pos[n].x + 6, y: pos[n].y + 19, "font-size": 11}, `${n} (${states[n].Type})`);
  });
  return el("div", {class: "graph"}, svg);
}

async function renderWorkflows(view) {
  const resp = await api("/api/v1/workflows");
  if (resp.status === 404) {
    view.replaceChildren(el("h2", {}, "Workflows"), el("p", {class: "muted"}, "This server has no workflows API."));
    return;
  }
  const data = await resp.json();
  const sections = await Promise.all(data.items.map(async wf => {
    const name = wf.metadata.name;
    const ex = await getJSON(`/api/v1/workflows/${encodeURIComponent(name)}/executions?limit=10`)
      .catch(() => ({items: []}));
    let visited = new Set();
    if (ex.items.length) {
      const last = await getJSON(`/api/v1/workflows/${encodeURIComponent(name)}/executions/${encodeURIComponent(ex.items[0].executionId)}`)
        .catch(() => ({}));
      (last.history || last.events || []).forEach(e => {
        const s = /StateEntered$/.test(e.type || "") ? e.name : null;
        if (s) visited.add(s);
      });
    }
    return el("section", {"data-workflow": name}, el("h3", {}, name),
      workflowGraph(wf.spec.definition || {}, visited),
      el("table", {}, el("thead", {}, el("tr", {}, ["Execution", "Status", "Started"].map(h => el("th", {}, h)))),
        el("tbody", {}, ex.items.map(e => el("tr", {}, el("td", {}, e.executionId), el("td", {}, e.status),
          el("td", {}, e.startDate || e.startTime || "-"))))));
  }));
  view.replaceChildren(el("h2", {}, `Workflows (${data.items.length})`), ...sections);
}

async function renderHealth() {
  try {
    const st = await getJSON("/api/v1/status");
    $("#health").replaceChildren(...st.components.map(c =>
      el("span", {class: c.state, title: c.detail || c.version || ""}, `${c.name} ${c.state}`)));
  } catch (e) { $("#health").textContent = "status: " + e.message; }
}

function route() {
  const hash = location.hash || "#/";
  const view = $("#view");
  let nav = "functions";
  if (hash.startsWith("#/f/")) current = functionPage(decodeURIComponent(hash.slice(4)));
  else if (hash === "#/triggers") { current = renderTriggers; nav = "triggers"; }
  else if (hash === "#/workflows") { current = renderWorkflows; nav = "workflows"; }
  else current = renderFunctions;
  destroyCharts(pageCharts);
  document.querySelectorAll("nav a").forEach(a => a.classList.toggle("active", a.dataset.nav === nav));
  view.replaceChildren(el("p", {class: "muted"}, "loading..."));
  refresh();
}

async function refresh() {
  clearTimeout(timer);
  const mine = current;
  try {
    await mine($("#view"));
    $("#updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    if (mine === current) $("#view").replaceChildren(el("p", {class: "error"}, e.message));
  }
  if (mine === current) timer = setTimeout(refresh, POLL_MS);
  if (!healthTimer) {  // after the first view: see below
    renderHealth();
    healthTimer = setInterval(renderHealth, 10000);
  }
}

// The header's component states start after the first view is drawn: /api/v1/status
// asks etcd, the registry and Docker, and the first paint should not wait behind it.
let healthTimer = null;
window.addEventListener("hashchange", route);
route();
