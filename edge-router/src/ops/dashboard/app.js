// v6iot edge dashboard. Everything the edge sends that a device or a peer supplied (ids,
// addresses, values, causes) is put into the page with textContent only, never parsed as
// HTML. The token comes from the URL fragment (#token=...) and goes as the feed's first
// message.
"use strict";

const ROW_H = 28;
const OVERSCAN = 10;
const state = {
  ws: null, total: 0, offset: 0, rows: [], sort: "id", desc: false, filter: "",
  selected: null, rowsShown: 0, refused: false,
};

function $(id) { return document.getElementById(id); }

function tokenFromHash() {
  const m = /(?:^|[#&])token=([^&]*)/.exec(location.hash);
  return m ? decodeURIComponent(m[1]) : "";
}

function setStatus(text, bad) {
  const s = $("status");
  s.textContent = text;
  s.className = bad ? "status bad" : "status";
}

function connect() {
  const token = tokenFromHash();
  if (!token) { $("login").hidden = false; setStatus("token needed", true); return; }
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(proto + "//" + location.host + "/ws");
  state.ws = ws;
  ws.onopen = () => { ws.send(JSON.stringify({ type: "auth", token })); sendQuery(); };
  ws.onmessage = (e) => {
    let m;
    try { m = JSON.parse(e.data); } catch (_) { return; }
    if (m.type === "refused") { state.refused = true; setStatus("access refused: wrong token", true); $("main").hidden = true; return; }
    if (m.type === "update") { $("main").hidden = false; setStatus("live", false); render(m); }
  };
  ws.onclose = () => {
    if (state.refused) return;
    setStatus("disconnected, retrying…", true);
    setTimeout(connect, 2000);
  };
}

function sendQuery() {
  const ws = state.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  const vp = $("viewport");
  const first = Math.max(0, Math.floor(vp.scrollTop / ROW_H) - OVERSCAN);
  const count = Math.ceil(vp.clientHeight / ROW_H) + 2 * OVERSCAN;
  ws.send(JSON.stringify({ type: "query", filter: state.filter, sort: state.sort, desc: state.desc, offset: first, limit: count }));
}

function fmtTime(ms) {
  if (!ms) return "-";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 60 ? s + " s ago" : s < 3600 ? Math.round(s / 60) + " min ago" : new Date(ms).toLocaleTimeString();
}

function render(m) {
  const sum = m.summary;
  $("devices").textContent = String(sum.devices);
  $("rate").textContent = sum.publish_rate.toFixed(1);
  const meter = $("outbox-meter");
  meter.max = Math.max(1, sum.outbox_max_bytes);
  meter.value = sum.outbox_bytes;
  $("outbox").textContent = sum.outbox_records + " records, " + Math.round(sum.outbox_bytes / 1024) + " KiB";
  $("mqtt").textContent = sum.stopping ? "stopping" : (sum.mqtt_connected ? "connected" : "down");
  renderRows(m.page);
  renderEvents(m.events);
  if (m.spark) drawSpark(m.spark.points);
}

function cell(text) {
  const s = document.createElement("span");
  s.textContent = text;
  s.title = text;
  return s;
}

function renderRows(page) {
  state.total = page.total;
  $("spacer").style.height = (page.total * ROW_H) + "px";
  $("count").textContent = page.total + " devices";
  const vp = $("viewport");
  for (const old of vp.querySelectorAll(".row")) old.remove();
  page.rows.forEach((r, i) => {
    const row = document.createElement("div");
    row.className = "row" + (r.id === state.selected ? " sel" : "");
    row.style.top = ((page.offset + i) * ROW_H) + "px";
    row.dataset.device = r.id;
    row.append(cell(r.id), cell(r.address || "-"), cell(r.transport), cell(r.state), cell(fmtTime(r.last_seen_ms)), cell(r.last_value || "-"));
    row.addEventListener("click", () => select(r.id));
    vp.appendChild(row);
  });
}

function renderEvents(events) {
  const list = $("events");
  for (const e of events) {
    const li = document.createElement("li");
    li.className = "event";
    li.textContent = new Date(e.at_ms).toLocaleTimeString() + "  " + e.cause + "  from " + e.peer + (e.device ? "  (" + e.device + ")" : "");
    list.prepend(li);
  }
  while (list.children.length > 200) list.lastElementChild.remove();
}

function select(id) {
  state.selected = id;
  $("selected").textContent = id;
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify({ type: "select", device: id }));
  sendQuery();
}

function drawSpark(points) {
  const c = $("spark");
  const g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  if (points.length < 1) return;
  const vs = points.map((p) => p[1]);
  const lo = Math.min(...vs), hi = Math.max(...vs);
  const span = hi - lo || 1;
  g.strokeStyle = "#3b6ef5";
  g.lineWidth = 2;
  g.beginPath();
  points.forEach((p, i) => {
    const x = points.length === 1 ? c.width / 2 : (i / (points.length - 1)) * (c.width - 8) + 4;
    const y = c.height - 6 - ((p[1] - lo) / span) * (c.height - 12);
    if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
  });
  g.stroke();
  g.fillStyle = "#1d2330";
  g.font = "11px sans-serif";
  g.fillText(String(vs[vs.length - 1]), 4, 12);
}

function init() {
  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    location.hash = "token=" + encodeURIComponent($("token").value);
  });
  let debounce = 0;
  $("filter").addEventListener("input", (e) => {
    state.filter = e.target.value;
    clearTimeout(debounce);
    debounce = setTimeout(() => { $("viewport").scrollTop = 0; sendQuery(); }, 150);
  });
  $("viewport").addEventListener("scroll", () => { clearTimeout(debounce); debounce = setTimeout(sendQuery, 50); });
  for (const h of $("thead").querySelectorAll("span[data-sort]")) {
    h.addEventListener("click", () => {
      const key = h.dataset.sort;
      state.desc = state.sort === key ? !state.desc : false;
      state.sort = key;
      for (const o of $("thead").querySelectorAll("span")) o.className = "";
      h.className = "sorted" + (state.desc ? " desc" : "");
      sendQuery();
    });
  }
  // a new token in the fragment: start over with it
  window.addEventListener("hashchange", () => location.reload());
  connect();
}

document.addEventListener("DOMContentLoaded", init);
