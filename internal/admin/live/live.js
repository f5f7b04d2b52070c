// The live page: it draws every pipeline's graph (SVG from /api/graph)
// and fills its nodes with counters from /api/pipelines, every second.
// No library and nothing from elsewhere: it works offline.
"use strict";

const $ = (id) => document.getElementById(id);
let history = [];      // recent /api/pipelines snapshots, oldest first: rates span them
let shapes = "";        // the graphs drawn, as shapeOf compares them
let fetchingGraphs = null;

// shapeOf is a pipeline's stages and inputs, like admin.GraphShape, plus
// its last reload: a change means the graph must be fetched again.
function shapeOf(p) {
  const stages = (p.stages || []).map((s) =>
    s.id + "<" + s.kind + (s.inputs && s.inputs.length ? "<" + s.inputs.join(",") : "")).join("|");
  return p.name + ":" + stages + ":" + (p.last_reload ? p.last_reload.time : "");
}

function fmtNum(n) {
  if (n >= 1e9) return (n / 1e9).toFixed(1) + "G";
  if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (n >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return String(Math.round(n));
}

function fmtRate(n) { return fmtNum(n) + "/s"; }

function fmtTime(t) {
  if (!t) return "";
  const d = new Date(t);
  return isNaN(d) ? t : d.toLocaleTimeString();
}

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) throw new Error(url + ": HTTP " + r.status);
  return r.json();
}

// drawGraphs builds one section per pipeline with its SVG graph.
async function drawGraphs(snap) {
  const graphs = await getJSON("/api/graph");
  const main = $("pipelines");
  main.textContent = "";
  for (const g of graphs) {
    const sec = el("section", { class: "pipeline", "data-pipeline": g.pipeline });
    const h = el("h2");
    h.append(el("span", { class: "name" }, g.pipeline), el("span", { class: "badge state" }, ""),
      el("span", { class: "file" }, ""), el("span", { class: "reload" }, ""));
    sec.append(h, el("div", { class: "perror", hidden: "" }));
    const box = el("div", { class: "graph-box" });
    box.innerHTML = g.svg; // drawn by etld itself (config.WriteSVG), names escaped
    sec.append(box, el("div", { class: "merges" }));
    main.append(sec);
  }
  shapes = snap.pipelines.map(shapeOf).join("\n");
}

function stageNode(sec, id) {
  for (const g of sec.querySelectorAll("g.node")) {
    if (g.getAttribute("data-stage") === id) return g;
  }
  return null;
}

// fillNode writes a stage's counters into its node.
function fillNode(g, s, ps, dt) {
  const rate = (now, before) => (ps && dt > 0 ? Math.max(0, now - before) / dt : 0);
  const inRate = rate(s.records_in, ps ? ps.records_in : 0);
  const outRate = rate(s.records_out, ps ? ps.records_out : 0);
  const lines = g.querySelectorAll("text.stat");
  const cap = s.queue_capacity || 0;
  let first = "out " + fmtNum(s.records_out) + " · " + fmtRate(outRate);
  if (s.kind !== "source") first = "in " + fmtRate(inRate) + " · " + first;
  let second = "";
  if (s.kind !== "source") second += "queue " + s.queue_length + "/" + cap + " · ";
  second += "err " + fmtNum(s.errors) + " · dl " + fmtNum(s.records_dead_lettered) + " · drop " + fmtNum(s.records_dropped);
  if (lines[0]) lines[0].textContent = first;
  if (lines[1]) {
    lines[1].textContent = second;
    lines[1].classList.toggle("alert", s.errors > 0 || s.records_dead_lettered > 0);
  }
  g.classList.toggle("unhealthy", !s.healthy);
  g.setAttribute("data-in", s.records_in);
  g.setAttribute("data-out", s.records_out);
  g.setAttribute("data-errors", s.errors);
  g.setAttribute("data-dead-lettered", s.records_dead_lettered);
  g.setAttribute("data-queue", s.queue_length);
  let title = g.querySelector("title");
  if (!title) {
    title = document.createElementNS("http://www.w3.org/2000/svg", "title");
    g.prepend(title);
  }
  title.textContent = s.id + (s.problem ? ": " + s.problem : s.healthy ? "" : ": failing, retrying (see the log)");
  // The queue's fill, as a bar along the node's bottom edge.
  const rect = g.querySelector("rect");
  let bar = g.querySelector("rect.fill");
  if (!bar && rect && cap > 0) {
    bar = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    bar.setAttribute("class", "fill");
    bar.setAttribute("x", "1");
    bar.setAttribute("height", "4");
    bar.setAttribute("y", String(Number(rect.getAttribute("height")) - 5));
    g.append(bar);
  }
  if (bar && rect) {
    const frac = cap > 0 ? Math.min(1, s.queue_length / cap) : 0;
    bar.setAttribute("width", String(Math.round((Number(rect.getAttribute("width")) - 2) * frac)));
    bar.classList.toggle("high", frac >= 0.75);
  }
}

// fillMerges shows the watermarks of a pipeline's ordered merges.
function fillMerges(box, p) {
  box.textContent = "";
  for (const s of p.stages || []) {
    if (!s.merge) continue;
    const m = s.merge;
    box.append(el("div", { class: "merge-title" }, "merge " + s.id + " by " + m.order_by + ": newest written " +
      (m.newest_written || "–") + ", " + m.buffered_records + " buffered, " + m.late_records + " late"));
    const t = el("table", { class: "merge", "data-stage": s.id });
    const head = el("tr");
    for (const c of ["feed", "watermark", "buffered", "late"]) head.append(el("th", {}, c));
    t.append(head);
    for (const f of m.feeds || []) {
      const tr = el("tr");
      tr.append(el("td", {}, f.feed), el("td", { class: "watermark" }, f.watermark || "–"),
        el("td", {}, String(f.buffered_records)), el("td", {}, String(f.late_records)));
      t.append(tr);
    }
    box.append(t);
  }
}

function fillPage(snap) {
  $("version").textContent = snap.version;
  const ready = $("ready");
  ready.textContent = snap.ready ? "ready" : "not ready: " + (snap.not_ready || "");
  ready.className = "badge " + (snap.ready ? "ok" : "bad");
  const lr = snap.last_reload;
  $("reload").textContent = lr ? "last reload " + fmtTime(lr.time) + ": " + lr.result + (lr.error ? " – " + lr.error : "") : "";
  $("updated").textContent = "updated " + fmtTime(snap.time) + (snap.config_watch ? " · config watch: " + snap.config_watch : "");
  // Rates over the last few seconds: steadier than from one second to
  // the next, when records come in batches.
  const now = new Date(snap.time);
  history = history.filter((h) => now - new Date(h.time) <= 5000);
  const prev = history.length ? history[0] : null;
  const dt = prev ? (now - new Date(prev.time)) / 1000 : 0;
  for (const p of snap.pipelines) {
    const sec = document.querySelector('section.pipeline[data-pipeline="' + CSS.escape(p.name) + '"]');
    if (!sec) continue;
    const state = sec.querySelector(".state");
    state.textContent = p.state;
    state.className = "badge state " + p.state;
    sec.querySelector(".file").textContent = p.file;
    const r = p.last_reload;
    sec.querySelector(".reload").textContent = r ? "reload " + fmtTime(r.time) + ": " + (r.action ? r.action + ", " : "") + r.result + (r.error ? " – " + r.error : "") : "";
    const perr = sec.querySelector(".perror");
    perr.hidden = !p.error;
    perr.textContent = p.error || "";
    const pp = prev && prev.pipelines.find((x) => x.name === p.name);
    for (const s of p.stages || []) {
      const g = stageNode(sec, s.id);
      if (g) fillNode(g, s, pp && (pp.stages || []).find((x) => x.id === s.id), dt);
    }
    fillMerges(sec.querySelector(".merges"), p);
  }
}

async function tick() {
  try {
    const snap = await getJSON("/api/pipelines");
    if (snap.pipelines.map(shapeOf).join("\n") !== shapes) {
      fetchingGraphs = fetchingGraphs || drawGraphs(snap).finally(() => { fetchingGraphs = null; });
      await fetchingGraphs;
    }
    fillPage(snap);
    history.push(snap);
    $("error").hidden = true;
  } catch (e) {
    $("error").hidden = false;
    $("error").textContent = "cannot reach etld: " + e.message + " (retrying every second)";
  }
}

tick();
setInterval(tick, 1000);
