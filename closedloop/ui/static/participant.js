// closedloop participant page: a bar or a circle that follows the z-scored feedback, an optional
// tone whose pitch or loudness follows it; a fixation cross for phase protocols. No operator
// information is shown here. window.closedloopParticipant exposes what is drawn (for tests and the
// display-latency benchmark): level 0-1, the value shown, and per State sample the time from its
// push to the end of the frame that drew it (ms, on the LSL clock).
"use strict";

const view = {
  kind: null, display: null, value: null, shown: null, level: 0, colour: null, frames: 0, samples: 0,
  latencies: new LatencyRecord(50000), tone: { on: false, frequency: null, gain: null },
};
window.closedloopParticipant = view;

const el = (id) => document.getElementById(id);
let pending = [];        // push times (LSL s) of samples received since the last frame
let lastFrameMs = null;
let audio = null;

function hexToRgb(hex) { const n = parseInt(hex.slice(1), 16); return [(n >> 16) & 255, (n >> 8) & 255, n & 255]; }
function blend(a, b, t) {
  const x = hexToRgb(a), y = hexToRgb(b);
  return `rgb(${x.map((v, i) => Math.round(v + (y[i] - v) * t)).join(",")})`;
}

function applyDisplay(msg) {
  view.kind = msg.kind; view.display = msg.display;
  const feedback = msg.kind === "feedback" && msg.display;
  el("feedback").hidden = !feedback;
  el("fixation").hidden = msg.kind !== "phase";
  if (feedback) {
    const circle = msg.display.shape === "circle";
    el("frame").hidden = circle; el("circle-frame").hidden = !circle;
    el("tone-prompt").hidden = !msg.display.tone || view.tone.on;
  } else {
    el("tone-prompt").hidden = true;
    stopTone();
  }
}

function startTone() {
  const d = view.display;
  if (!d || !d.tone || view.kind !== "feedback" || view.tone.on) return;
  const ctx = new (window.AudioContext || window.webkitAudioContext)();
  const osc = ctx.createOscillator();
  const gain = ctx.createGain();
  osc.type = "sine";
  osc.frequency.value = d.pitch_hz[0];
  gain.gain.value = d.tone_maps === "loudness" ? d.loudness[0] : 0.3;
  osc.connect(gain).connect(ctx.destination);
  osc.start();
  audio = { ctx, osc, gain };
  view.tone.on = true;
  el("tone-prompt").hidden = true;
}
function stopTone() {
  if (!audio) return;
  try { audio.osc.stop(); audio.ctx.close(); } catch (e) { /* already stopped */ }
  audio = null; view.tone.on = false;
}
document.addEventListener("click", startTone);
document.addEventListener("dblclick", () => {
  if (!document.fullscreenElement) document.documentElement.requestFullscreen().catch(() => {});
  else document.exitFullscreen();
});

function onMessage(msg) {
  if (msg.t === "display") { applyDisplay(msg); return; }
  if (msg.t === "fb") {
    view.value = msg.v;
    view.samples += 1;
    if (msg.push !== null && msg.push !== undefined) pending.push(msg.push);
  }
}

function frame(ts) {
  requestAnimationFrame(frame);
  const d = view.display;
  const dt = lastFrameMs === null ? 0 : (ts - lastFrameMs) / 1000;
  lastFrameMs = ts;
  if (view.kind === "feedback" && d) {
    const v = view.value;
    if (v === null || !Number.isFinite(v)) {
      view.shown = null;
    } else if (view.shown === null || d.smoothing_s <= 0) {
      view.shown = v;
    } else {
      view.shown += (1 - Math.exp(-dt / d.smoothing_s)) * (v - view.shown);
    }
    let level = 0;
    if (view.shown !== null) {
      level = (view.shown - d.range[0]) / (d.range[1] - d.range[0]);
      level = Math.min(1, Math.max(0, level));
      if (d.direction === "down") level = 1 - level;
    }
    view.level = level;
    const colour = d.color_low ? blend(d.color_low, d.color, level) : d.color;
    view.colour = colour;
    if (d.shape === "circle") {
      const c = el("circle");
      c.style.width = c.style.height = `${(level * 100).toFixed(2)}%`;
      c.style.background = colour;
      c.style.visibility = view.shown === null ? "hidden" : "visible";
    } else {
      const b = el("bar");
      b.style.height = `${(level * 100).toFixed(2)}%`;
      b.style.background = colour;
      b.style.visibility = view.shown === null ? "hidden" : "visible";
    }
    if (audio && view.shown !== null) {
      const t = audio.ctx.currentTime;
      if (d.tone_maps === "pitch") {
        const f = d.pitch_hz[0] * Math.pow(d.pitch_hz[1] / d.pitch_hz[0], level);  // equal steps in pitch
        audio.osc.frequency.setTargetAtTime(f, t, 0.02);
        view.tone.frequency = f; view.tone.gain = audio.gain.gain.value;
      } else {
        const g = d.loudness[0] + (d.loudness[1] - d.loudness[0]) * level;
        audio.gain.gain.setTargetAtTime(g, t, 0.02);
        view.tone.gain = g; view.tone.frequency = audio.osc.frequency.value;
      }
    }
  }
  view.frames += 1;
  if (pending.length) {
    const drawn = feed.clock.toLsl(performance.now());
    if (drawn !== null) for (const push of pending) view.latencies.add((drawn - push) * 1000);
    pending = [];
  }
}

const feed = new Feed("participant", onMessage, (up) => { view.connected = up; });
requestAnimationFrame(frame);
