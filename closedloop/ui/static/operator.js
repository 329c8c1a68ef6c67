// closedloop operator page: traces, amplitude and gate, phase, the rose plot of the true phase at
// each trigger, spectrum, signal quality, counters, the protocol in force, and control (pause,
// resume, stop) with the token printed by `closedloop ui`. All drawing is on canvas; the page
// redraws at most 30 times a second and only when something new arrived.
// window.closedloopOperator exposes what is drawn, for tests.
"use strict";

const TRACE_S = 10, AMP_S = 20, PHASE_S = 1, FEEDBACK_S = 30, KEEP_S = 35;
const COLOURS = ["#7fb3ff", "#9be39b", "#f2c46d", "#d9a0f0", "#7fe0e0", "#f09b9b", "#c0c0c0", "#b8e986"];
const $ = (id) => document.getElementById(id);

const data = {
  status: null, hello: null, display: null, kind: null,
  eegInfo: null, eeg: { times: [], rows: [], band: [] },
  state: { push: [], ts: [], phase: [], amp: [], fb: [], gate: [] },
  markers: [], controls: [], truths: [], quality: null, spectrum: null,
};
const hook = {
  frames: 0, stateRows: 0, eegBatches: 0, newestEegTime: null, newestStateTs: null,
  tracesDrawnTo: null, triggersShown: 0, roseN: 0, markers: 0, controls: [], latencies: new LatencyRecord(20000),
  truths: data.truths, status: () => data.status,
};
window.closedloopOperator = hook;
let dirty = true, lastDraw = 0, pendingPush = [];

// ------------------------------------------------------------------ messages
function trimSeries(series, keyTimes, horizon) {
  let k = 0;
  while (k < keyTimes.length && keyTimes[k] < horizon) k++;
  if (k > 0) for (const name in series) if (Array.isArray(series[name])) series[name].splice(0, k);
}

function onMessage(msg) {
  dirty = true;
  switch (msg.t) {
    case "hello": data.hello = msg; setViewOnly(msg.view_only, msg.control_note); break;
    case "display": data.display = msg.display; data.kind = msg.kind; break;
    case "status": data.status = msg; showStatus(msg); break;
    case "eeg_info": data.eegInfo = msg; data.eeg = { times: [], rows: msg.names.map(() => []), band: [] }; fillChannels(msg); break;
    case "eeg": {
      const e = data.eeg;
      if (!data.eegInfo) break;
      for (const t of msg.times) e.times.push(t);
      msg.rows.forEach((r, i) => { if (!e.rows[i]) e.rows[i] = []; for (const v of r) e.rows[i].push(v); });
      if (msg.band) for (const v of msg.band) e.band.push(v);
      else if (e.band.length) e.band = [];
      const horizon = e.times.length ? e.times[e.times.length - 1] - KEEP_S : 0;
      let k = 0; while (k < e.times.length && e.times[k] < horizon) k++;
      if (k) { e.times.splice(0, k); e.rows.forEach((r) => r.splice(0, k)); if (e.band.length) e.band.splice(0, k); }
      hook.eegBatches += 1; hook.newestEegTime = e.times.length ? e.times[e.times.length - 1] : null;
      break;
    }
    case "state": {
      const s = data.state;
      for (const r of msg.rows) {
        s.push.push(r[0]); s.ts.push(r[1]); s.phase.push(r[2]); s.amp.push(r[3]); s.fb.push(r[4]); s.gate.push(r[5]);
      }
      if (msg.rows.length) pendingPush.push(msg.rows[msg.rows.length - 1][0]);
      trimSeries(s, s.ts, s.ts[s.ts.length - 1] - KEEP_S);
      hook.stateRows += msg.rows.length; hook.newestStateTs = s.ts[s.ts.length - 1];
      showNow();
      break;
    }
    case "marker":
      if (["pause", "resume", "stop"].includes(msg.event)) { data.controls.push(msg); hook.controls.push(msg.event); logLine(`${msg.event} (from ${msg.source || "?"})`); }
      else { data.markers.push(msg); if (data.markers.length > 3000) data.markers.splice(0, 1000); hook.markers += 1; }
      if (!data.status) $("triggers-delivered").textContent = String(data.markers.length);
      break;
    case "truth": for (const item of msg.items) data.truths.push(item); break;
    case "quality": data.quality = msg; showQuality(msg); break;
    case "spectrum": data.spectrum = msg; break;
  }
}

// ------------------------------------------------------------------ text panels
function badge(id, text, cls) { const e = $(id); e.textContent = text; e.className = "badge " + (cls || ""); }

function showStatus(st) {
  $("protocol-name").textContent = st.protocol || "closedloop";
  badge("kind", st.kind === "feedback" ? "neurofeedback" : "phase-locked", "info");
  $("input-name").textContent = st.input ? `${st.input.name}: ${st.input.n_channels} ch, ${st.input.sfreq} Hz` : "";
  if (st.ended) badge("conn", `ended: ${st.end_reason || ""}`, "warn");
  else if (st.stalled) badge("conn", "input stalled", "bad");
  else badge("conn", st.connected ? "connected" : "waiting for data", st.connected ? "ok" : "warn");
  $("elapsed").textContent = `${fmt(st.elapsed_s, 0)} s`;
  $("triggers-delivered").textContent = String(st.triggers_delivered);
  $("triggers-dropped").textContent = String(st.triggers_dropped);
  const reasons = Object.entries(st.dropped_by_reason || {}).map(([k, v]) => `${k}: ${v}`).join(", ");
  $("dropped-reasons").textContent = reasons;
  $("latency").textContent = `${fmt(st.latency_p50_ms, 2)} / ${fmt(st.latency_p99_ms, 2)} ms`;
  $("latency-session").textContent = `p50 ${fmt(st.latency_session_p50_ms, 3)} ms, p99 ${fmt(st.latency_session_p99_ms, 3)} ms`;
  const b = st.baseline || {};
  if (b.done) { $("baseline").textContent = "done"; $("baseline-bar").style.width = "100%"; $("baseline-bar").style.background = "#1f6f43"; }
  else { $("baseline").textContent = `${fmt(b.remaining_s, 1)} s left`; $("baseline-bar").style.width = `${Math.min(100, 100 * b.collected_s / Math.max(b.s, 1e-9)).toFixed(1)}%`; }
  const hold = st.hold || {};
  const reason = hold.reason || "";
  $("hold-reason").textContent = reason ? `${reason}${hold.remaining_s > 0 ? ` (${fmt(hold.remaining_s, 1)} s more)` : ""}` : "none";
  const holdBadge = $("hold");
  holdBadge.hidden = !reason || reason === "paused";
  holdBadge.textContent = `hold: ${reason}`; holdBadge.className = "badge " + (reason === "baseline" || reason === "fit" ? "info" : "warn");
  $("paused").hidden = !st.paused;
  if (st.kind === "feedback") badge("gate", "feedback (no triggers)", "info");
  else badge("gate", st.gate ? "gate open" : "gate closed", st.gate ? "ok" : "");
  $("gate-threshold").textContent = st.kind === "feedback" ? "n/a (feedback)" : fmt(st.gate_threshold_uv, 2, " µV");
  $("band").textContent = st.band_hz ? `${st.band_hz[0].toFixed(2)}-${st.band_hz[1].toFixed(2)} Hz${st.individual_peak_hz ? ` (individual peak ${st.individual_peak_hz.toFixed(2)} Hz)` : ""}` : "n/a";
  $("estimator").textContent = st.estimator || (st.kind === "feedback" ? "n/a (feedback)" : "training…");
  $("samples").textContent = String(st.samples);
  $("samples-dropped").textContent = `${st.samples_dropped} in ${st.gaps} gap(s)`;
  $("stalls").textContent = `${st.stalls} / ${st.bad_samples}`;
  const rec = st.recording || {};
  if (!rec.path) { badge("recording", "recording: off", ""); $("recording-detail").textContent = "off (no --record)"; }
  else if (rec.error) { badge("recording", "recording: STOPPED", "bad"); $("recording-detail").textContent = `${rec.path}: ${rec.error}`; }
  else { badge("recording", "recording", "ok"); $("recording-detail").textContent = `${rec.path} (${(rec.bytes / 1e6).toFixed(1)} MB written)`; }
  const errs = Object.entries(st.stimulator_errors || {});
  $("stim-errors").textContent = errs.length ? errs.map(([k, v]) => `${k}: ${v}`).join(", ") : "none";
  if (st.protocol_toml && $("protocol").textContent !== st.protocol_toml) $("protocol").textContent = st.protocol_toml;
  $("notes").textContent = (st.notes || []).join(" ");
  $("phase-title").textContent = st.kind === "feedback" ? "Feedback value" : "Estimated phase";
  $("rose-section").hidden = st.kind === "feedback";  // no triggers: no empty rose plot
}

function showNow() {
  const s = data.state, n = s.ts.length;
  if (!n) return;
  $("amplitude-now").textContent = fmt(s.amp[n - 1], 2, " µV");
  $("phase-now").textContent = fmt(s.phase[n - 1], 0, "°");
  $("feedback-now").textContent = fmt(s.fb[n - 1], 3);
  if (!data.status) badge("gate", s.gate[n - 1] > 0.5 ? "gate open" : "gate closed", s.gate[n - 1] > 0.5 ? "ok" : "");
}

function showQuality(msg) {
  const body = $("quality").querySelector("tbody");
  const rows = msg.channels.map((c) => {
    const flags = c.flags.map((f) => `<span class="flag${f === "line noise" ? " line" : ""}">${f}</span>`).join("");
    return `<tr data-channel="${escapeHtml(c.name)}"><td>${escapeHtml(c.name)}</td><td class="num">${fmt(c.std_uv, 1)}</td><td class="num">${fmt(c.ptp_uv, 1)}</td><td class="num">${c.line_db === null ? "n/a" : fmt(c.line_db, 0)}</td><td>${flags}</td></tr>`;
  });
  body.innerHTML = rows.join("");
}

function escapeHtml(s) { return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c])); }

function fillChannels(info) {
  const sel = $("channel-select");
  sel.innerHTML = info.all.map((n) => `<option ${info.names.includes(n) ? "selected" : ""}>${escapeHtml(n)}</option>`).join("");
  $("trace-note").textContent = `${info.names.join(", ")}${info.derived ? " and the derived band signal" : ""}, ${info.rate.toFixed(0)} Hz display`;
}
$("apply-channels").addEventListener("click", () => {
  const names = Array.from($("channel-select").selectedOptions).map((o) => o.value).slice(0, 8);
  feed.send({ t: "traces", names });
});

function logLine(text) {
  const div = document.createElement("div");
  div.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
  $("log").prepend(div);
}

// ------------------------------------------------------------------ control
function setViewOnly(viewOnly, note) {
  for (const id of ["pause", "resume", "stop"]) $(id).disabled = !!viewOnly;
  $("token").disabled = !!viewOnly;
  $("control-msg").textContent = viewOnly ? `View only: ${note}` : "";
}

async function control(action) {
  const token = $("token").value.trim();
  sessionStorage.setItem("closedloop-token", token);
  if (action === "stop" && !window.confirm("Stop the session?")) return;
  let reply;
  try {
    const res = await fetch("/api/control", { method: "POST", headers: { "Content-Type": "application/json", "X-Closedloop-Token": token }, body: JSON.stringify({ action }) });
    reply = await res.json();
    reply.status = res.status;
  } catch (e) { reply = { ok: false, error: String(e) }; }
  $("control-msg").textContent = reply.ok ? `${action}: done` : `${action} refused: ${reply.error}`;
  logLine(reply.ok ? `${action} sent` : `${action} refused (${reply.status || ""}): ${reply.error}`);
}
for (const id of ["pause", "resume", "stop"]) $(id).addEventListener("click", () => control(id));
(() => {
  const m = /token=([^&]+)/.exec(location.hash);
  const token = m ? decodeURIComponent(m[1]) : sessionStorage.getItem("closedloop-token");
  if (token) { $("token").value = token; sessionStorage.setItem("closedloop-token", token); }
  if (m) history.replaceState(null, "", location.pathname);  // the token off the address bar
})();

// ------------------------------------------------------------------ drawing
function prepare(canvas) {
  const dpr = window.devicePixelRatio || 1;
  if (!canvas.dataset.h) { canvas.dataset.h = canvas.getAttribute("height"); canvas.style.height = `${canvas.dataset.h}px`; }
  const w = canvas.clientWidth, h = Number(canvas.dataset.h);
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  ctx.font = "11px system-ui, sans-serif";
  return { ctx, w, h };
}

function axisTimes(ctx, x0, x1, t0, t1, y, h) {
  ctx.fillStyle = "#7d8794"; ctx.strokeStyle = "#262b33"; ctx.lineWidth = 1;
  const span = t1 - t0, step = span > 15 ? 5 : span > 4 ? 1 : 0.5;
  for (let s = 0; s <= span + 1e-9; s += step) {
    const x = x1 - (s / span) * (x1 - x0);
    ctx.beginPath(); ctx.moveTo(x, 0); ctx.lineTo(x, h); ctx.stroke();
    ctx.fillText(s === 0 ? "now" : `-${s} s`, x - 12, y);
  }
}

function triggerLines(ctx, t0, t1, x0, x1, h) {
  let shown = 0;
  for (const m of data.markers) {
    if (m.time < t0 || m.time > t1) continue;
    const x = x0 + (m.time - t0) / (t1 - t0) * (x1 - x0);
    ctx.strokeStyle = "rgba(255,80,80,0.9)"; ctx.lineWidth = 1.5;
    ctx.beginPath(); ctx.moveTo(x, 0); ctx.lineTo(x, h); ctx.stroke();
    shown += 1;
  }
  for (const m of data.controls) {
    if (m.time < t0 || m.time > t1) continue;
    const x = x0 + (m.time - t0) / (t1 - t0) * (x1 - x0);
    ctx.strokeStyle = "#f2c46d"; ctx.setLineDash([4, 3]);
    ctx.beginPath(); ctx.moveTo(x, 0); ctx.lineTo(x, h); ctx.stroke(); ctx.setLineDash([]);
    ctx.fillStyle = "#f2c46d"; ctx.fillText(m.event, x + 3, 12);
  }
  return shown;
}

function drawTraces() {
  const { ctx, w, h } = prepare($("traces"));
  const e = data.eeg, info = data.eegInfo;
  if (!info || !e.times.length) { ctx.fillStyle = "#7d8794"; ctx.fillText("no input EEG yet", 10, 20); return; }
  const t1 = e.times[e.times.length - 1], t0 = t1 - TRACE_S;
  const left = 70, right = w - 6, bottom = h - 16;
  const labels = info.names.slice();
  const rows = e.rows.slice(0, labels.length);
  if (e.band.length === e.times.length) { rows.push(e.band); labels.push("band signal"); }
  const rowH = bottom / Math.max(rows.length, 1);
  let first = 0; while (first < e.times.length && e.times[first] < t0) first++;
  axisTimes(ctx, left, right, t0, t1, h - 3, bottom);
  rows.forEach((r, i) => {
    let mean = 0, n = 0;
    for (let k = first; k < r.length; k++) { mean += r[k]; n++; }
    mean = n ? mean / n : 0;
    let peak = 1e-6;
    for (let k = first; k < r.length; k++) peak = Math.max(peak, Math.abs(r[k] - mean));
    const mid = rowH * (i + 0.5), scale = 0.45 * rowH / peak;
    ctx.strokeStyle = i === labels.length - 1 && labels[i] === "band signal" ? "#ffffff" : COLOURS[i % COLOURS.length];
    ctx.lineWidth = 1; ctx.beginPath();
    for (let k = first; k < r.length; k++) {
      const x = left + (e.times[k] - t0) / TRACE_S * (right - left), y = mid - (r[k] - mean) * scale;
      if (k === first) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    }
    ctx.stroke();
    ctx.fillStyle = "#c9d1d9"; ctx.fillText(labels[i], 4, mid - 2);
    ctx.fillStyle = "#7d8794"; ctx.fillText(`±${peak.toFixed(peak < 10 ? 1 : 0)} µV`, 4, mid + 11);
  });
  hook.triggersShown = triggerLines(ctx, t0, t1, left, right, bottom);
  hook.tracesDrawnTo = t1;
}

function lastIndexBefore(arr, t) { let k = 0; while (k < arr.length && arr[k] < t) k++; return k; }

function drawAmplitude() {
  const { ctx, w, h } = prepare($("amplitude"));
  const s = data.state, n = s.ts.length;
  if (!n) return;
  const t1 = s.ts[n - 1], t0 = t1 - AMP_S, first = lastIndexBefore(s.ts, t0);
  const thr = data.status ? data.status.gate_threshold_uv : null;
  let top = thr && Number.isFinite(thr) ? thr : 0;
  for (let k = first; k < n; k++) if (Number.isFinite(s.amp[k])) top = Math.max(top, s.amp[k]);
  top = top * 1.15 || 1;
  const left = 40, right = w - 6, bottom = h - 16;
  const X = (t) => left + (t - t0) / AMP_S * (right - left), Y = (v) => bottom - v / top * bottom;
  axisTimes(ctx, left, right, t0, t1, h - 3, bottom);
  ctx.fillStyle = "rgba(60,179,113,0.35)";
  for (let k = first; k < n; k++) if (s.gate[k] > 0.5) ctx.fillRect(X(s.ts[k]), bottom - 6, Math.max(1, X(s.ts[Math.min(k + 1, n - 1)]) - X(s.ts[k])), 6);
  ctx.strokeStyle = "#7fb3ff"; ctx.lineWidth = 1.2; ctx.beginPath();
  let started = false;
  for (let k = first; k < n; k++) { if (!Number.isFinite(s.amp[k])) { started = false; continue; } const x = X(s.ts[k]), y = Y(s.amp[k]); if (!started) { ctx.moveTo(x, y); started = true; } else ctx.lineTo(x, y); }
  ctx.stroke();
  if (thr !== null && Number.isFinite(thr) && data.kind !== "feedback") {
    ctx.strokeStyle = "#f2c46d"; ctx.setLineDash([6, 4]); ctx.beginPath(); ctx.moveTo(left, Y(thr)); ctx.lineTo(right, Y(thr)); ctx.stroke(); ctx.setLineDash([]);
    ctx.fillStyle = "#f2c46d"; ctx.fillText(`threshold ${thr.toFixed(1)} µV`, left + 4, Math.max(10, Y(thr) - 3));
  }
  ctx.fillStyle = "#7d8794"; ctx.fillText(`${top.toFixed(0)} µV`, 2, 10); ctx.fillText("0", 2, bottom);
  ctx.fillStyle = "rgba(60,179,113,0.9)"; ctx.fillText("gate open", right - 60, bottom - 8);
  triggerLines(ctx, t0, t1, left, right, bottom);
}

function drawPhase() {
  const { ctx, w, h } = prepare($("phase"));
  const s = data.state, n = s.ts.length;
  if (!n) return;
  const left = 40, right = w - 6, bottom = h - 16;
  if (data.kind === "feedback") {
    const t1 = s.ts[n - 1], t0 = t1 - FEEDBACK_S, first = lastIndexBefore(s.ts, t0);
    const d = data.display;
    let lo = d ? d.range[0] : -2, hi = d ? d.range[1] : 2;
    for (let k = first; k < n; k++) if (Number.isFinite(s.fb[k])) { lo = Math.min(lo, s.fb[k]); hi = Math.max(hi, s.fb[k]); }
    const X = (t) => left + (t - t0) / FEEDBACK_S * (right - left), Y = (v) => bottom - (v - lo) / (hi - lo) * bottom;
    axisTimes(ctx, left, right, t0, t1, h - 3, bottom);
    if (d) { ctx.fillStyle = "rgba(60,179,113,0.12)"; ctx.fillRect(left, Y(d.range[1]), right - left, Y(d.range[0]) - Y(d.range[1])); }
    ctx.strokeStyle = "#d9a0f0"; ctx.lineWidth = 1.5; ctx.beginPath();
    let started = false;
    for (let k = first; k < n; k++) { if (!Number.isFinite(s.fb[k])) { started = false; continue; } const x = X(s.ts[k]), y = Y(s.fb[k]); if (!started) { ctx.moveTo(x, y); started = true; } else ctx.lineTo(x, y); }
    ctx.stroke();
    ctx.fillStyle = "#7d8794"; ctx.fillText(hi.toFixed(1), 2, 10); ctx.fillText(lo.toFixed(1), 2, bottom);
    ctx.fillText("shaded: the participant's display range", left + 4, 12);
    return;
  }
  const t1 = s.ts[n - 1], t0 = t1 - PHASE_S, first = lastIndexBefore(s.ts, t0);
  const dial = Math.min(h, 170), plotRight = right - dial - 10;
  const X = (t) => left + (t - t0) / PHASE_S * (plotRight - left), Y = (p) => bottom / 2 - p / 180 * (bottom / 2 - 4);
  axisTimes(ctx, left, plotRight, t0, t1, h - 3, bottom);
  const target = targetPhase();
  if (target !== null) { ctx.strokeStyle = "#f05050"; ctx.setLineDash([5, 4]); ctx.beginPath(); ctx.moveTo(left, Y(target)); ctx.lineTo(plotRight, Y(target)); ctx.stroke(); ctx.setLineDash([]); }
  ctx.fillStyle = "#9be39b";
  for (let k = first; k < n; k++) if (Number.isFinite(s.phase[k])) ctx.fillRect(X(s.ts[k]) - 1, Y(s.phase[k]) - 1, 2, 2);
  ctx.fillStyle = "#7d8794"; ctx.fillText("180", 2, 10); ctx.fillText("0", 2, bottom / 2 + 4); ctx.fillText("-180", 2, bottom);
  // dial: the current phase (0 = peak at the right, counter-clockwise)
  const cx = right - dial / 2, cy = h / 2, r = dial / 2 - 14;
  ctx.strokeStyle = "#3a424e"; ctx.beginPath(); ctx.arc(cx, cy, r, 0, 2 * Math.PI); ctx.stroke();
  ctx.fillStyle = "#7d8794"; ctx.fillText("0 peak", cx + r - 30, cy - 4); ctx.fillText("180 trough", cx - r, cy - 4);
  if (target !== null) { const a = target * Math.PI / 180; ctx.strokeStyle = "#f05050"; ctx.beginPath(); ctx.moveTo(cx, cy); ctx.lineTo(cx + r * Math.cos(a), cy - r * Math.sin(a)); ctx.stroke(); }
  const p = s.phase[n - 1];
  if (Number.isFinite(p)) { const a = p * Math.PI / 180; ctx.strokeStyle = "#9be39b"; ctx.lineWidth = 3; ctx.beginPath(); ctx.moveTo(cx, cy); ctx.lineTo(cx + r * Math.cos(a), cy - r * Math.sin(a)); ctx.stroke(); ctx.lineWidth = 1; }
}

function targetPhase() {
  if (data.truths.length) return data.truths[data.truths.length - 1].target_phase_deg;
  if (data.markers.length) return data.markers[data.markers.length - 1].target_phase_deg;
  const m = data.status && data.status.protocol_toml ? /target_phase_deg = ([-\d.]+)/.exec(data.status.protocol_toml) : null;
  return m ? parseFloat(m[1]) : null;
}

function drawRose() {
  const { ctx, w, h } = prepare($("rose"));
  const values = data.truths.filter((t) => t.true_phase_deg !== null && t.true_phase_deg !== undefined);
  hook.roseN = values.length;
  $("rose-n").textContent = String(values.length);
  const unscored = data.truths.length - values.length;
  const cx = w / 2, cy = h / 2, R = Math.min(w, h) / 2 - 22, bin = 20, counts = new Array(360 / bin).fill(0);
  let sx = 0, sy = 0, se = 0;
  for (const t of values) {
    const a = ((t.true_phase_deg + 180) % 360 + 360) % 360;
    counts[Math.min(counts.length - 1, Math.floor(a / bin))] += 1;
    sx += Math.cos(t.true_phase_deg * Math.PI / 180); sy += Math.sin(t.true_phase_deg * Math.PI / 180);
    const err = ((t.true_phase_deg - t.target_phase_deg + 540) % 360) - 180; se += err;
  }
  const top = Math.max(1, ...counts);
  ctx.strokeStyle = "#2c323c";
  for (const f of [0.33, 0.66, 1]) { ctx.beginPath(); ctx.arc(cx, cy, R * f, 0, 2 * Math.PI); ctx.stroke(); }
  ctx.fillStyle = "#7d8794";
  ctx.fillText("0 peak", cx + R + 2 - 34, cy - 4); ctx.fillText("180 trough", cx - R - 2, cy - 4); ctx.fillText("90", cx - 6, cy - R - 6); ctx.fillText("-90", cx - 8, cy + R + 14);
  counts.forEach((c, i) => {
    if (!c) return;
    const a0 = (-180 + i * bin) * Math.PI / 180, a1 = a0 + bin * Math.PI / 180, r = R * Math.sqrt(c / top);
    ctx.fillStyle = "rgba(127,179,255,0.75)"; ctx.beginPath(); ctx.moveTo(cx, cy); ctx.arc(cx, cy, r, -a1, -a0); ctx.closePath(); ctx.fill();
  });
  const target = targetPhase();
  if (target !== null) { const a = target * Math.PI / 180; ctx.strokeStyle = "#f05050"; ctx.lineWidth = 2; ctx.beginPath(); ctx.moveTo(cx, cy); ctx.lineTo(cx + R * Math.cos(a), cy - R * Math.sin(a)); ctx.stroke(); ctx.lineWidth = 1; }
  if (values.length) {
    const mx = sx / values.length, my = sy / values.length, plv = Math.hypot(mx, my);
    ctx.strokeStyle = "#ffffff"; ctx.lineWidth = 2.5; ctx.beginPath(); ctx.moveTo(cx, cy); ctx.lineTo(cx + R * mx, cy - R * my); ctx.stroke(); ctx.lineWidth = 1;
    const mean = Math.atan2(my, mx) * 180 / Math.PI;
    const sd = plv > 0 ? Math.sqrt(-2 * Math.log(plv)) * 180 / Math.PI : Infinity;
    $("rose-stats").textContent = `circular mean ${mean.toFixed(1)}°, SD ${sd.toFixed(1)}°, PLV ${plv.toFixed(2)}${unscored ? `; ${unscored} not scored` : ""}`;
  } else {
    $("rose-stats").textContent = unscored ? `${unscored} not scored` : "no trigger scored yet";
  }
}

function drawSpectrum() {
  const { ctx, w, h } = prepare($("spectrum"));
  const sp = data.spectrum;
  if (!sp || !sp.freqs.length) { ctx.fillStyle = "#7d8794"; ctx.fillText("no spectrum yet", 10, 20); return; }
  const left = 40, right = w - 6, bottom = h - 16, fmax = sp.freqs[sp.freqs.length - 1];
  let lo = Infinity, hi = -Infinity; for (const v of sp.db) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  hi += 3; lo -= 3;
  const X = (f) => left + f / fmax * (right - left), Y = (v) => bottom - (v - lo) / (hi - lo) * bottom;
  ctx.fillStyle = "rgba(242,196,109,0.18)"; ctx.fillRect(X(sp.band[0]), 0, X(sp.band[1]) - X(sp.band[0]), bottom);
  ctx.fillStyle = "#f2c46d"; ctx.fillText(`band ${sp.band[0].toFixed(1)}-${sp.band[1].toFixed(1)} Hz`, X(sp.band[1]) + 4, 12);
  ctx.strokeStyle = "#7fb3ff"; ctx.lineWidth = 1.3; ctx.beginPath();
  sp.freqs.forEach((f, i) => { const x = X(f), y = Y(sp.db[i]); if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y); });
  ctx.stroke();
  ctx.fillStyle = "#7d8794";
  const step = fmax > 60 ? 20 : 10;
  for (let f = 0; f <= fmax; f += step) ctx.fillText(`${f}`, X(f) - 4, h - 3);
  ctx.fillText(`${hi.toFixed(0)} dB`, 2, 10); ctx.fillText(`${lo.toFixed(0)}`, 2, bottom);
  $("spectrum-note").textContent = "Welch, last 4 s, dB re 1 µV²/Hz; Hz on the axis";
}

function frame(ts) {
  requestAnimationFrame(frame);
  if (!dirty || ts - lastDraw < 33) return;
  lastDraw = ts; dirty = false;
  drawTraces(); drawAmplitude(); drawPhase(); drawRose(); drawSpectrum();
  hook.frames += 1;
  if (pendingPush.length) {
    const drawn = feed.clock.toLsl(performance.now());
    if (drawn !== null) for (const push of pendingPush) hook.latencies.add((drawn - push) * 1000);
    pendingPush = [];
    if (hook.frames % 30 === 0) $("display-latency").textContent = `p50 ${fmt(hook.latencies.percentile(50), 1)} ms, p95 ${fmt(hook.latencies.percentile(95), 1)} ms (State push to frame)`;
  }
}

const feed = new Feed("operator", onMessage, (up) => {
  if (!up) badge("conn", "ui disconnected", "bad");
  dirty = true;
});
window.addEventListener("resize", () => { dirty = true; });
requestAnimationFrame(frame);
