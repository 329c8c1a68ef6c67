// closedloop browser views: what both pages share (WebSocket with reconnection, clock offset).
"use strict";

// The page's clock against the server's LSL clock (seconds): offset = lsl - performance.now()/1000,
// from ping round trips; the round trip with the smallest delay gives the best estimate.
class LslClock {
  constructor() { this.samples = []; this.offset = null; this.rtt = null; }
  add(sentMs, receivedMs, serverS) {
    const rtt = receivedMs - sentMs;
    const offset = serverS - (sentMs + receivedMs) / 2000;
    this.samples.push({ rtt, offset });
    if (this.samples.length > 40) this.samples.shift();
    let best = this.samples[0];
    for (const s of this.samples) if (s.rtt < best.rtt) best = s;
    this.offset = best.offset; this.rtt = best.rtt;
  }
  now() { return this.offset === null ? null : performance.now() / 1000 + this.offset; }
  toLsl(ms) { return this.offset === null ? null : ms / 1000 + this.offset; }
}

// A WebSocket to /ws for one role that reconnects, keeps the clock in step and hands messages on.
class Feed {
  constructor(role, onMessage, onState) {
    this.role = role; this.onMessage = onMessage; this.onState = onState || (() => {});
    this.clock = new LslClock(); this.pings = new Map(); this.nextId = 1;
    this.connected = false; this.retryMs = 250; this.open();
  }
  open() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}/ws?role=${this.role}`);
    this.ws = ws;
    ws.onopen = () => {
      this.connected = true; this.retryMs = 250; this.onState(true);
      for (let i = 0; i < 12; i++) setTimeout(() => this.ping(), 40 * i);
      clearInterval(this.pingTimer);
      this.pingTimer = setInterval(() => this.ping(), 2000);
    };
    ws.onmessage = (ev) => {
      const received = performance.now();
      let msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      if (msg.t === "pong") {
        const sent = this.pings.get(msg.id);
        this.pings.delete(msg.id);
        if (sent !== undefined) this.clock.add(sent, received, msg.server);
        return;
      }
      this.onMessage(msg, received);
    };
    ws.onclose = () => {
      this.connected = false; this.onState(false); clearInterval(this.pingTimer);
      setTimeout(() => this.open(), this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, 4000);
    };
  }
  ping() {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    const id = this.nextId++;
    this.pings.set(id, performance.now());
    if (this.pings.size > 50) this.pings.delete(this.pings.keys().next().value);
    this.ws.send(JSON.stringify({ t: "ping", id }));
  }
  send(obj) { if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(obj)); }
}

// A bounded record of display latencies (ms): newest last.
class LatencyRecord {
  constructor(max) { this.max = max || 20000; this.values = []; }
  add(ms) { this.values.push(ms); if (this.values.length > this.max * 1.25) this.values.splice(0, this.values.length - this.max); }
  percentile(q) {
    if (!this.values.length) return null;
    const s = this.values.slice().sort((a, b) => a - b);
    return s[Math.min(s.length - 1, Math.floor(q / 100 * s.length))];
  }
}

function fmt(value, digits, unit) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "n/a";
  return value.toFixed(digits) + (unit || "");
}
