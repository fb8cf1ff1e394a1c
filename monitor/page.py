"""The status page: one HTML document with a small script, no library, nothing from the internet (the LAN may be
offline). The script renders the run from the JSON the server embeds in the page (so the first view needs no
request) and then from `/api/status` every few seconds. Every value a board sent is written with `textContent`,
never parsed as HTML: a board's warning text is peer input."""
from __future__ import annotations

import json
from typing import Any

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>FedIoT status</title>
<style>
body{font:14px system-ui,sans-serif;margin:16px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:18px 0 6px}
table{border-collapse:collapse;background:#fff;font-size:13px} td,th{border:1px solid #ddd;padding:3px 6px;text-align:right}
th{background:#f0f0f0} td.t{text-align:left} tr.dropped td{color:#a00} tr.connected td.state{color:#070}
.muted{color:#777} .plots{display:flex;gap:16px;flex-wrap:wrap} svg{background:#fff;border:1px solid #ddd}
pre{background:#fff;border:1px solid #ddd;padding:6px;max-height:300px;overflow:auto;font-size:12px}
.warn{color:#a60}
</style></head><body>
<h1>FedIoT <span id="kind"></span></h1>
<div><span id="state" data-field="state"></span> · run directory <code id="run_dir"></code> ·
updated <span id="updated"></span></div>
<h2>Boards</h2>
<table id="boards"><thead><tr><th>rank</th><th>client(s)</th><th>state</th><th>address</th><th>identity</th>
<th>last seen</th><th>RSS MB</th><th>CPU %</th><th>disk free MB</th><th>uptime s</th><th>version</th>
<th>last round</th><th>detect pkt/s</th><th>window alerts</th><th>warnings</th><th>dropped</th><th>rejoined</th>
</tr></thead><tbody></tbody></table>
<h2>Devices</h2>
<p class="muted">each device's own threshold and its detection on its held-out rows at the latest evaluation (rows,
and N-BaIoT's majority-vote windows)</p>
<table id="devices"><thead><tr><th>device</th><th>after round</th><th>threshold</th><th>TPR</th><th>FPR</th>
<th>window TPR</th><th>window FPR</th><th>benign / attack rows</th></tr></thead><tbody></tbody></table>
<h2>Alerts on the boards</h2>
<p class="muted">each board's latest alert messages (what syslog and MQTT carried), newest first; why: the feature
groups that deviate most, against the device's own normal</p>
<table id="alerts"><thead><tr><th>time</th><th>rank</th><th>device</th><th>remote</th><th>score / threshold</th>
<th>state</th><th>why</th></tr></thead><tbody></tbody></table>
<h2>Rounds</h2>
<div class="plots"><svg id="loss_plot" width="420" height="180"></svg><svg id="eval_plot" width="420" height="180"></svg></div>
<table id="rounds"><thead><tr><th>round</th><th>mean loss</th><th>seconds</th><th>clients</th><th>dropped</th>
<th>screened out</th><th>thresholds left out</th><th>rejected</th><th>TPR</th><th>FPR</th></tr></thead><tbody></tbody></table>
<h2>Rejected messages</h2><table id="rejected_by"><thead><tr><th>from</th><th>kind</th><th>count (whole run)</th>
</tr></thead><tbody></tbody></table>
<p class="muted">the latest, one by one:</p><table id="rejections"><thead><tr><th>time</th><th>from</th><th>count</th><th>reason</th>
</tr></thead><tbody></tbody></table>
<h2>Outputs</h2><div id="outputs" class="muted">when the run is done</div>
<h2>Config</h2><pre id="config"></pre>
<script id="initial" type="application/json">__INITIAL__</script>
<script>
"use strict";
const token = new URLSearchParams(location.search).get("token");
function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined && text !== null) e.textContent = String(text); if (cls) e.className = cls; return e; }
function fmt(v, d) { return (v === null || v === undefined) ? "" : (typeof v === "number" ? (d === undefined ? String(v) : v.toFixed(d)) : String(v)); }
function ago(t, now) { return t ? (now - t).toFixed(0) + " s ago" : ""; }
function meanLoss(r) { const v = Object.values(r.client_losses || {}); return v.length ? v.reduce((a, b) => a + b, 0) / v.length : null; }
function row(cells, attrs) { const tr = el("tr"); for (const [k, v] of Object.entries(attrs || {})) tr.setAttribute(k, v);
  for (const [field, text, cls] of cells) { const td = el("td", text, cls); td.dataset.field = field; tr.appendChild(td); } return tr; }
function fill(id, rows) { const body = document.querySelector("#" + id + " tbody"); body.replaceChildren(...rows); }
function plot(id, series, yLabel) {
  const svg = document.getElementById(id), W = +svg.getAttribute("width"), H = +svg.getAttribute("height"), P = 34;
  svg.replaceChildren();
  const pts = series.flatMap(s => s.points); const ns = "http://www.w3.org/2000/svg";
  const t = document.createElementNS(ns, "text"); t.setAttribute("x", 4); t.setAttribute("y", 12); t.textContent = yLabel; svg.appendChild(t);
  if (!pts.length) return;
  const xs = pts.map(p => p[0]), ys = pts.map(p => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), y0 = Math.min(0, ...ys), y1 = Math.max(...ys, y0 + 1e-9);
  const X = x => P + (x - x0) / (x1 - x0) * (W - 2 * P), Y = y => H - P + 10 - (y - y0) / (y1 - y0) * (H - 2 * P);
  for (const [v, y] of [[y1, Y(y1)], [y0, Y(y0)]]) { const l = document.createElementNS(ns, "text"); l.setAttribute("x", 2); l.setAttribute("y", y + 4); l.setAttribute("font-size", "10"); l.textContent = v.toPrecision(2); svg.appendChild(l); }
  series.forEach((s, i) => {
    if (!s.points.length) return;
    const p = document.createElementNS(ns, "polyline");
    p.setAttribute("points", s.points.map(q => X(q[0]) + "," + Y(q[1])).join(" "));
    p.setAttribute("fill", "none"); p.setAttribute("stroke", s.color); p.setAttribute("stroke-width", "2"); svg.appendChild(p);
    const k = document.createElementNS(ns, "text"); k.setAttribute("x", W - 130); k.setAttribute("y", 14 + 12 * i); k.setAttribute("fill", s.color); k.setAttribute("font-size", "11"); k.textContent = s.name; svg.appendChild(k);
  });
}
function render(s) {
  document.getElementById("kind").textContent = s.run.kind + " · " + s.run.rounds + " rounds";
  document.getElementById("state").textContent = s.run.state;
  document.getElementById("run_dir").textContent = s.run.run_dir;
  document.getElementById("updated").textContent = new Date(s.now * 1000).toLocaleTimeString();
  fill("boards", s.boards.map(b => { const h = b.health || {}, d = h.detect || {}; const w = (h.warnings || []);
    return row([["rank", b.rank], ["clients", b.clients.join(", "), "t"], ["state", b.state, "t state"], ["address", b.address, "t"],
      ["identity", b.identity, "t"], ["last_seen", ago(b.last_seen, s.now)], ["rss_mb", fmt(h.rss_mb, 1)], ["cpu_percent", fmt(h.cpu_percent, 1)],
      ["disk_free_mb", fmt(h.disk_free_mb, 0)], ["uptime_s", fmt(h.uptime_s, 0)], ["version", h.version, "t"], ["last_round", fmt(h.last_round)],
      ["detect_packets_per_s", fmt(d.packets_per_s, 1)], ["detect_window_alerts", fmt(d.window_alerts)],
      ["warnings", h.warnings_total ? h.warnings_total + ": " + (w.length ? w[w.length - 1].message : "") : (h.version ? "0" : ""), "t warn"],
      ["dropped", b.dropped], ["rejoined", b.rejoined]], {"data-rank": b.rank, "class": b.state}); }));
  fill("devices", Object.entries(s.devices || {}).sort().map(([d, v]) => row([["device", d, "t"], ["round", v.round],
      ["threshold", fmt(v.threshold, 4)], ["tpr", fmt(v.tpr, 4)], ["fpr", fmt(v.fpr, 4)], ["window_tpr", fmt(v.window_tpr, 4)],
      ["window_fpr", fmt(v.window_fpr, 4)], ["rows", fmt(v.n_benign_test) + " / " + fmt(v.n_attack_test)]], {"data-device": d})));
  const alerts = s.boards.flatMap(b => (((b.health || {}).detect || {}).alerts || []).map(a => [b.rank, a]))
    .sort((x, y) => y[1].time - x[1].time);
  fill("alerts", alerts.map(([rank, a], i) => row([["time", new Date(a.time * 1000).toLocaleString()], ["rank", rank],
      ["device", a.device, "t"], ["host", a.host, "t"], ["score", fmt(a.score, 3) + " / " + fmt(a.threshold, 3)],
      ["state", a.state, "t"], ["why", a.why, "t"]], {"data-alert": i})));
  const rounds = s.rounds.slice().reverse();
  fill("rounds", rounds.map(r => { const e = r.eval ? r.eval.device_threshold : null;
    return row([["round", r.round], ["mean_loss", fmt(meanLoss(r), 5)], ["wall_time_s", fmt(r.wall_time_s, 2)], ["clients", (r.clients || []).length],
      ["dropped", (r.dropped || []).join(", "), "t"], ["screened_out", Object.keys(r.screened_out || {}).join(", "), "t"],
      ["threshold_excluded", Object.keys(r.threshold_excluded || {}).join(", "), "t"],
      ["rejected", r.rejected ? r.rejected + " (" + (r.rejections || []).map(x => x.from + ": " + x.reason).slice(0, 3).join("; ") + ")" : "0", "t"],
      ["tpr", e ? fmt(e.tpr, 4) : ""], ["fpr", e ? fmt(e.fpr, 4) : ""]], {"data-round": r.round}); }));
  plot("loss_plot", [{name: "mean training loss", color: "#06c", points: s.rounds.filter(r => meanLoss(r) !== null).map(r => [r.round, meanLoss(r)])}], "loss");
  const ev = s.rounds.filter(r => r.eval);
  plot("eval_plot", [{name: "TPR (own thresholds)", color: "#080", points: ev.map(r => [r.round, r.eval.device_threshold.tpr])},
                     {name: "FPR (own thresholds)", color: "#c00", points: ev.map(r => [r.round, r.eval.device_threshold.fpr])},
                     {name: "FPR (global)", color: "#e90", points: ev.map(r => [r.round, r.eval.global_threshold.fpr])}], "evaluation");
  fill("rejected_by", Object.entries(s.rejected_by || {}).flatMap(([from, kinds]) => Object.entries(kinds).map(([kind, n]) => [from, kind, n])).sort((a, b) => b[2] - a[2]).map(([from, kind, n], i) => row([["from", from, "t"], ["kind", kind, "t"], ["count", n]], {"data-rejected-by": i})));
  fill("rejections", s.rejections.slice().reverse().map((x, i) => row([["time", new Date(x.time * 1000).toLocaleTimeString()], ["from", x.from, "t"], ["count", x.count], ["reason", x.reason, "t"]], {"data-rejection": i})));
  const out = document.getElementById("outputs");
  if (s.finished) { out.replaceChildren(el("span", s.finished.error ? "failed: " + s.finished.error + " · " : "finished · "));
    for (const f of s.finished.files) { const a = el("a", f); a.href = "files/" + f + (token ? "?token=" + encodeURIComponent(token) : ""); out.appendChild(a); out.appendChild(el("span", " ")); } }
  document.getElementById("config").textContent = JSON.stringify(s.run.config, null, 1);
}
render(JSON.parse(document.getElementById("initial").textContent));
async function refresh() {
  try { const r = await fetch("api/status", {headers: token ? {"Authorization": "Bearer " + token} : {}}); if (r.ok) render(await r.json()); }
  catch (e) { document.getElementById("updated").textContent = "server unreachable"; }
}
setInterval(refresh, __REFRESH_MS__);
</script></body></html>
"""


def render_page(snapshot: dict[str, Any], refresh_s: float) -> str:
    """The page with `snapshot` embedded (as JSON inside a script element: '<' escaped, so no value can close it)."""
    data = json.dumps(snapshot).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return PAGE.replace("__REFRESH_MS__", str(int(refresh_s * 1000))).replace("__INITIAL__", data)
