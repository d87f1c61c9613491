/* Hydrogen dashboard.
 *
 * Everything live comes over ONE hydrogen-protocol WebSocket to this page's own
 * origin, authenticated by the session cookie (docs/protocol.md). Files go over
 * HTTP (/api/files) with the same cookie. Text from printers and other clients is
 * only ever put into the page with textContent, never as HTML.
 */
(function () {
  "use strict";

  // -- constants -------------------------------------------------------------
  const SUBPROTOCOL = "hydrogen-protocol";
  const BASE_TOPICS = ["notifications", "printer/+/state", "printer/+/temperature", "printer/+/job"];
  const RECONNECT_MIN_MS = 1000;
  const RECONNECT_MAX_MS = 20000;
  const STABLE_MS = 5000; // a connection open this long resets the backoff
  const REQUEST_TIMEOUT_MS = 30000;
  const COMMAND_TIMEOUT_MS = 700000; // G28, M109... may take minutes (long_command_timeout)
  const TERMINAL_LINES = 500;
  const NOTIFICATIONS_KEPT = 100;
  const HISTORY_KEPT = 50;
  const HEATER_COLORS = {
    tool0: "#c5221f", tool1: "#e37400", tool2: "#8430ce", tool3: "#b0006d",
    bed: "#1a73e8", chamber: "#188038",
  };
  const OTHER_COLORS = ["#5f6368", "#00796b", "#795548", "#3949ab"];
  const CONTROLLABLE = /^(tool\d+|bed|chamber)$/;
  const JOB_LABELS = {
    idle: "Idle", queued: "Queued", printing: "Printing", paused: "Paused",
    completed: "Completed", cancelled: "Cancelled", failed: "Failed",
  };
  const STATE_LABELS = {
    disconnected: "Disconnected", connecting: "Connecting", ready: "Ready", busy: "Busy", error: "Error",
  };

  // -- formatting for people ------------------------------------------------------
  const NBSP = "\u00a0";
  const fmt = {
    temp(v) {
      return v == null || !isFinite(v) ? "—" : `${Number(v).toFixed(1)}${NBSP}°C`;
    },
    pct(v) {
      if (v == null || !isFinite(v)) return "—";
      return `${v > 0 && v < 10 ? v.toFixed(1) : Math.round(v)}${NBSP}%`;
    },
    bytes(n) {
      if (n == null || !isFinite(n)) return "—";
      const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
      let v = Number(n);
      let i = 0;
      while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
      const text = i === 0 ? String(Math.round(v)) : v >= 100 ? String(Math.round(v)) : v.toFixed(1);
      return `${text}${NBSP}${units[i]}`;
    },
    rate(n) { return n == null ? "—" : `${fmt.bytes(n)}/s`; },
    duration(s) {
      if (s == null || !isFinite(s)) return "—";
      s = Math.max(0, Math.round(s));
      const d = Math.floor(s / 86400);
      const h = Math.floor((s % 86400) / 3600);
      const m = Math.floor((s % 3600) / 60);
      const sec = s % 60;
      const two = (n) => String(n).padStart(2, "0");
      if (d) return `${d}d ${two(h)}h`;
      if (h) return `${h}h ${two(m)}m`;
      if (m) return `${m}m ${two(sec)}s`;
      return `${sec}s`;
    },
    time(t) {
      const date = toDate(t);
      return date ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" }) : "";
    },
    ago(t) {
      const date = toDate(t);
      if (!date) return "";
      const seconds = (Date.now() - date.getTime()) / 1000;
      if (seconds < 60) return "just now";
      if (seconds < 86400) return `${fmt.duration(seconds).split(" ")[0]} ago`;
      return date.toLocaleDateString();
    },
    count(n) { return n == null ? "—" : Number(n).toLocaleString(); },
  };

  /** Seconds since the epoch (temperature frames) or an ISO string: a Date, or null. */
  function toDate(t) {
    if (t == null) return null;
    const date = typeof t === "number" ? new Date(t * 1000) : new Date(t);
    return isNaN(date.getTime()) ? null : date;
  }
  function toSeconds(t) {
    const date = toDate(t);
    return date ? date.getTime() / 1000 : null;
  }

  // -- DOM helpers -------------------------------------------------------------------
  const $ = (id) => document.getElementById(id);
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = String(text);
    return node;
  }
  function fromTemplate(id) {
    return $(id).content.firstElementChild.cloneNode(true);
  }
  function safeId(text) {
    return String(text).replace(/[^A-Za-z0-9_-]/g, "_");
  }
  function setBar(bar, percent) {
    const inner = bar.firstElementChild;
    const v = percent == null || !isFinite(percent) ? 0 : Math.max(0, Math.min(100, percent));
    inner.style.width = `${v}%`;
    bar.classList.toggle("high", v >= 90);
  }
  function bar(percent) {
    const outer = el("span", "bar");
    outer.setAttribute("aria-hidden", "true");
    outer.append(el("span"));
    setBar(outer, percent);
    return outer;
  }

  // -- application state ---------------------------------------------------------------
  const app = {
    role: document.body.dataset.role || "monitor",
    features: new Set(),
    cards: new Map(),
    printerOrder: [],
    connected: false,
  };
  const canControl = () => app.role === "control";

  function setRole(role) {
    app.role = role === "control" ? "control" : "monitor";
    document.body.dataset.role = app.role;
    $("role-badge").textContent = app.role === "monitor" ? "read-only" : app.role;
  }

  // -- connection indicator ---------------------------------------------------------------
  function setConn(state, text) {
    const button = $("conn");
    button.dataset.state = state;
    $("conn-text").textContent = text;
    button.disabled = state === "connected";
  }

  // -- the WebSocket ---------------------------------------------------------------------
  class Connection {
    constructor() {
      this.ws = null;
      this.seq = 0;
      this.pending = new Map();
      this.attempt = 0;
      this.timer = null;
      this.countdown = null;
      this.topics = new Set(BASE_TOPICS);
      this.openedAt = 0;
    }

    get open() {
      return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
    }

    connect() {
      clearTimeout(this.timer);
      clearInterval(this.countdown);
      this.timer = null;
      if (this.ws && this.ws.readyState <= WebSocket.OPEN) return;
      setConn("connecting", this.attempt ? "Reconnecting…" : "Connecting…");
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      let ws;
      try {
        ws = new WebSocket(`${scheme}//${location.host}/`, SUBPROTOCOL);
      } catch (err) {
        this.retry(false);
        return;
      }
      this.ws = ws;
      let opened = false;
      ws.onopen = () => {
        opened = true;
        this.openedAt = Date.now();
        // Subscriptions belong to the connection: ask again after every reconnect.
        this.send({ type: "subscribe", topics: [...this.topics] });
      };
      ws.onmessage = (event) => {
        let frame;
        try { frame = JSON.parse(event.data); } catch (err) { return; }
        if (frame && typeof frame === "object" && !Array.isArray(frame)) this.dispatch(frame);
      };
      ws.onclose = () => {
        if (this.ws !== ws) return;
        this.ws = null;
        app.connected = false;
        this.failPending(new Error("the connection to the gateway was lost"));
        if (opened && Date.now() - this.openedAt >= STABLE_MS) this.attempt = 0;
        this.retry(opened);
      };
      ws.onerror = () => { /* a close event follows */ };
    }

    /** Reconnect with capped exponential backoff and jitter (half fixed, half random). */
    retry(opened) {
      const base = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** this.attempt);
      const delay = base / 2 + Math.random() * (base / 2);
      this.attempt += 1;
      const until = Date.now() + delay;
      const tick = () => {
        const seconds = Math.max(1, Math.ceil((until - Date.now()) / 1000));
        setConn("offline", `Offline · retry in ${seconds}${NBSP}s`);
      };
      tick();
      this.countdown = setInterval(tick, 1000);
      this.timer = setTimeout(() => this.connect(), delay);
      if (!opened) checkSession();
    }

    reconnectNow() {
      if (this.ws) return;
      this.connect();
    }

    send(frame) {
      if (!this.open) return false;
      this.ws.send(JSON.stringify(frame));
      return true;
    }

    request(frame, timeoutMs = REQUEST_TIMEOUT_MS) {
      return new Promise((resolve, reject) => {
        if (!this.open) {
          reject(new Error("not connected to the gateway"));
          return;
        }
        this.seq += 1;
        const id = `d${this.seq}`;
        const timer = setTimeout(() => {
          this.pending.delete(id);
          reject(new Error("the gateway did not answer in time"));
        }, timeoutMs);
        this.pending.set(id, { resolve, reject, timer });
        this.ws.send(JSON.stringify({ ...frame, id }));
      });
    }

    failPending(error) {
      for (const { reject, timer } of this.pending.values()) {
        clearTimeout(timer);
        reject(error);
      }
      this.pending.clear();
    }

    subscribe(topic) {
      if (this.topics.has(topic)) return;
      this.topics.add(topic);
      this.send({ type: "subscribe", topics: [topic] });
    }

    unsubscribe(topic) {
      if (!this.topics.delete(topic)) return;
      this.send({ type: "unsubscribe", topics: [topic] });
    }

    dispatch(frame) {
      if (frame.id !== undefined && this.pending.has(frame.id)) {
        const { resolve, reject, timer } = this.pending.get(frame.id);
        this.pending.delete(frame.id);
        clearTimeout(timer);
        if (frame.type === "error") {
          const error = new Error((frame.error && frame.error.message) || "the request failed");
          error.code = frame.error && frame.error.code;
          reject(error);
          return;
        }
        resolve(frame);
      }
      try {
        onFrame(frame);
      } catch (err) {
        console.error("dashboard: cannot show a frame", frame.type, err);
      }
    }
  }

  const conn = new Connection();

  /** A refused handshake looks like a network error: ask HTTP whether the session ended. */
  async function checkSession() {
    try {
      const response = await fetch("/api/system/info", { cache: "no-store" });
      if (response.status === 401) location.assign("/login");
    } catch (err) {
      /* the gateway is unreachable: keep retrying */
    }
  }

  // -- frames ---------------------------------------------------------------------------
  function onFrame(frame) {
    switch (frame.type) {
      case "welcome": onWelcome(frame); break;
      case "status":
        host.update(frame);
        if (Array.isArray(frame.printers)) syncPrinters(frame.printers);
        break;
      case "printer_state": card(frame.printer, true)?.updateSummary(frame); break;
      case "temperature": card(frame.printer)?.temperature(frame); break;
      case "temperature_history": card(frame.printer, true)?.seedHistory(frame); break;
      case "serial": card(frame.printer)?.serial(frame); break;
      case "job": if (frame.printer) card(frame.printer, true)?.job(frame); break;
      case "jobs":
        for (const job of frame.jobs || []) if (job && job.printer) card(job.printer, true)?.job(job);
        break;
      case "notification": notifications.add(frame); break;
      case "dropped":
        for (const c of app.cards.values()) c.termNote(`${frame.count} frames were dropped (the page fell behind)`);
        break;
      case "error":
        if (frame.id === undefined && frame.error) toast(`Gateway: ${frame.error.message}`, "warning");
        break;
      default: break; // unknown frame types are ignored (protocol §1)
    }
  }

  function onWelcome(frame) {
    app.connected = true;
    setRole(frame.role);
    app.features = new Set(Array.isArray(frame.features) ? frame.features : []);
    setConn("connected", "Connected");
    if (app.features.has("jobs")) {
      conn.request({ type: "jobs" }).catch(() => {});
    }
    files.load();
  }

  function card(name, create = false) {
    if (typeof name !== "string") return null;
    let c = app.cards.get(name);
    if (!c && create) {
      c = new PrinterCard(name);
      app.cards.set(name, c);
      $("printer-list").append(c.root);
      $("no-printers").hidden = true;
      files.refreshPrinters();
    }
    return c || null;
  }

  function syncPrinters(summaries) {
    const names = summaries.map((s) => s && s.printer).filter((n) => typeof n === "string");
    for (const summary of summaries) {
      if (summary && typeof summary.printer === "string") card(summary.printer, true).updateSummary(summary);
    }
    for (const [name, c] of app.cards) {
      if (!names.includes(name)) {
        c.destroy();
        app.cards.delete(name);
        files.refreshPrinters();
      }
    }
    const list = $("printer-list");
    names.forEach((name) => list.append(app.cards.get(name).root)); // configuration order
    if (names.join("/") !== app.printerOrder.join("/")) {
      app.printerOrder = names;
      files.refreshPrinters();
    }
    $("no-printers").hidden = names.length > 0;
    $("estop-all").hidden = names.length === 0; // nothing to stop
  }

  // -- host panel ---------------------------------------------------------------------------
  const host = {
    previousNetwork: null,
    rates: {},
    update(frame) {
      const h = frame.host || {};
      const system = frame.system || {};
      if (system.nodename) {
        $("hostname").textContent = system.nodename;
        $("host-name").textContent = system.nodename;
        document.title = `${system.nodename} · Hydrogen`;
      }
      const cpu = h.cpu || {};
      $("cpu-value").textContent = fmt.pct(cpu.percent);
      setBar($("cpu-bar").parentElement, cpu.percent);
      const cpuSub = [];
      if (cpu.count) cpuSub.push(`${cpu.count} core${cpu.count === 1 ? "" : "s"}`);
      if (Array.isArray(cpu.load_average)) cpuSub.push(`load ${cpu.load_average.map((v) => Number(v).toFixed(2)).join(" ")}`);
      $("cpu-sub").textContent = cpuSub.join(" · ");

      const mem = h.memory || {};
      $("mem-value").textContent = fmt.pct(mem.percent);
      setBar($("mem-bar").parentElement, mem.percent);
      const swap = h.swap || {};
      let memSub = `${fmt.bytes(mem.used_bytes)} of ${fmt.bytes(mem.total_bytes)}`;
      if (swap.total_bytes) memSub += ` · swap ${fmt.bytes(swap.used_bytes)} of ${fmt.bytes(swap.total_bytes)}`;
      $("mem-sub").textContent = memSub;

      const disks = (h.filesystems || []).map((fs) => {
        const row = el("span", "row");
        row.append(
          el("span", "value", fs.mountpoint),
          document.createTextNode(` ${fmt.bytes(fs.used_bytes)} of ${fmt.bytes(fs.total_bytes)} (${fmt.pct(fs.percent)})`),
          bar(fs.percent),
        );
        return row;
      });
      $("disks").replaceChildren(...(disks.length ? disks : [el("span", "muted", "—")]));

      const temps = [];
      for (const [chip, sensors] of Object.entries(h.temperatures || {})) {
        for (const sensor of sensors || []) {
          if (temps.length >= 8) break;
          temps.push(el("span", "row", `${sensor.label || chip}: ${fmt.temp(sensor.current_celsius)}`));
        }
      }
      $("host-temps").replaceChildren(...(temps.length ? temps : [el("span", "muted", "No sensors")]));

      this.updateNetwork(h);
      $("uptime").textContent = h.uptime_seconds == null ? "—" : fmt.duration(h.uptime_seconds);
      const started = toSeconds(frame.server_start_time);
      const now = toSeconds(h.sampled_at) || Date.now() / 1000;
      const parts = [`Gateway ${frame.server_version || ""}`.trim()];
      if (started) parts.push(`up ${fmt.duration(now - started)}`);
      if (frame.active_connections != null) {
        parts.push(`${frame.active_connections} client${frame.active_connections === 1 ? "" : "s"}`);
      }
      if (frame.status && frame.status.shutting_down) parts.push("shutting down");
      $("gateway-sub").textContent = parts.join(" · ");
    },
    updateNetwork(h) {
      const network = h.network || {};
      const at = toSeconds(h.sampled_at);
      const previous = this.previousNetwork;
      if (at && (!previous || at > previous.at)) {
        if (previous) {
          const dt = at - previous.at;
          for (const [name, counters] of Object.entries(network)) {
            const before = previous.counters[name];
            if (!before || dt <= 0) continue;
            this.rates[name] = {
              down: Math.max(0, (counters.bytes_recv - before.bytes_recv) / dt),
              up: Math.max(0, (counters.bytes_sent - before.bytes_sent) / dt),
            };
          }
        }
        this.previousNetwork = { at, counters: network };
      }
      const rows = [];
      for (const [name, counters] of Object.entries(network)) {
        // Loopback and interfaces that never carried a byte are noise.
        if (name === "lo" || rows.length >= 6 || !(counters.bytes_recv || counters.bytes_sent)) continue;
        const rate = this.rates[name];
        const text = rate
          ? `${name} ↓${NBSP}${fmt.rate(rate.down)} ↑${NBSP}${fmt.rate(rate.up)}`
          : `${name} ↓${NBSP}${fmt.bytes(counters.bytes_recv)} ↑${NBSP}${fmt.bytes(counters.bytes_sent)}`;
        rows.push(el("span", "row", text));
      }
      $("network").replaceChildren(...(rows.length ? rows : [el("span", "muted", "—")]));
    },
  };

  // -- heaters ---------------------------------------------------------------------------
  function heaterRank(name) {
    const tool = /^tool(\d+)$/.exec(name);
    if (tool) return Number(tool[1]);
    const order = ["bed", "chamber", "probe", "cooler", "board", "soc", "ambient", "redundant"];
    const index = order.indexOf(name);
    return 100 + (index < 0 ? order.length : index);
  }
  function sortHeaters(names) {
    return [...names].sort((a, b) => heaterRank(a) - heaterRank(b) || a.localeCompare(b));
  }
  function heaterLabel(name, toolCount) {
    const tool = /^tool(\d+)$/.exec(name);
    if (tool) return toolCount > 1 ? `Hotend T${tool[1]}` : "Hotend";
    return name.charAt(0).toUpperCase() + name.slice(1);
  }
  function heaterColor(name) {
    if (HEATER_COLORS[name]) return HEATER_COLORS[name];
    let hash = 0;
    for (const ch of name) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
    return OTHER_COLORS[hash % OTHER_COLORS.length];
  }

  // -- one printer -------------------------------------------------------------------------
  class PrinterCard {
    constructor(name) {
      this.name = name;
      this.id = `printer-${safeId(name)}`;
      this.root = fromTemplate("printer-template");
      this.root.id = this.id;
      this.root.dataset.printer = name;
      const title = this.q(".printer-name");
      title.id = `${this.id}-name`;
      title.textContent = name;
      this.root.setAttribute("aria-labelledby", title.id);
      this.state = null;
      this.heaters = new Map();
      this.times = [];
      this.values = new Map(); // heater -> {actual: [], target: []}
      this.chartHeaters = [];
      this.windowSeconds = 1200;
      this.plot = null;
      this.cmdHistory = loadHistory(name);
      this.historyIndex = this.cmdHistory.length;
      this.draft = "";
      this.lastJob = null;

      const estop = this.q(".printer-estop");
      estop.setAttribute("aria-label", `Emergency stop ${name}`);
      estop.addEventListener("click", () => emergencyStop([this.name]));
      this.q(".printer-reconnect").addEventListener("click", () => this.reconnectPrinter());
      this.setupTerminal();
      this.setupJob();
      this.setupChart();
    }

    q(selector) { return this.root.querySelector(selector); }

    status(text, isError = false) {
      const node = this.q(".card-status");
      node.textContent = text;
      node.classList.toggle("error", isError);
    }

    destroy() {
      if (this.plot) this.plot.destroy();
      if (this.resizeObserver) this.resizeObserver.disconnect();
      this.root.remove();
    }

    // summary: state, reason, firmware, temperature snapshot
    updateSummary(summary) {
      const badge = this.q(".state-badge");
      const state = String(summary.state || "unknown");
      this.state = state;
      badge.dataset.state = state;
      badge.textContent = STATE_LABELS[state] || state;
      const reason = this.q(".state-reason");
      reason.textContent = summary.reason || "";
      reason.hidden = !summary.reason;
      const firmware = summary.firmware && summary.firmware.name;
      this.q(".firmware").textContent = firmware ? `Firmware: ${firmware}` : "Firmware: not known yet";
      this.q(".printer-reconnect").hidden = !(state === "error" || state === "disconnected");
      if (summary.temperatures && typeof summary.temperatures === "object" && !this.times.length) {
        this.showHeaters(summary.temperatures);
      }
    }

    // heater rows
    heaterRow(name) {
      let row = this.heaters.get(name);
      if (row) return row;
      const root = fromTemplate("heater-template");
      root.dataset.heater = name;
      root.style.setProperty("--swatch", heaterColor(name));
      row = {
        root,
        name: root.querySelector(".heater-name"),
        actual: root.querySelector(".heater-actual"),
        target: root.querySelector(".heater-target"),
        power: root.querySelector(".heater-power"),
        form: root.querySelector(".heater-set"),
        input: root.querySelector(".heater-input"),
      };
      const inputId = `${this.id}-heater-${safeId(name)}`;
      row.input.id = inputId;
      root.querySelector(".heater-label").htmlFor = inputId;
      if (!CONTROLLABLE.test(name)) {
        row.form.remove();
      } else {
        row.input.max = name === "bed" ? "150" : name === "chamber" ? "90" : "450";
        row.form.addEventListener("submit", (event) => {
          event.preventDefault();
          const value = Number(row.input.value);
          if (row.input.value === "" || !isFinite(value) || value < 0 || value > Number(row.input.max)) {
            this.status(`Enter a target between 0 and ${row.input.max} °C.`, true);
            row.input.focus();
            return;
          }
          this.setTarget(name, value);
        });
        root.querySelector(".heater-off").addEventListener("click", () => this.setTarget(name, 0));
      }
      this.heaters.set(name, row);
      const container = this.q(".heaters");
      const order = sortHeaters(this.heaters.keys());
      order.forEach((heater) => container.append(this.heaters.get(heater).root));
      this.relabelHeaters();
      return row;
    }

    relabelHeaters() {
      const tools = [...this.heaters.keys()].filter((h) => /^tool\d+$/.test(h)).length;
      for (const [name, row] of this.heaters) {
        const label = heaterLabel(name, tools);
        row.name.textContent = label;
        const labelNode = row.root.querySelector(".heater-label");
        if (labelNode) labelNode.textContent = `${label} target in °C for ${this.name}`;
        const off = row.root.querySelector(".heater-off");
        if (off) off.setAttribute("aria-label", `Turn ${label.toLowerCase()} off`);
      }
    }

    showHeaters(heaters) {
      for (const [name, reading] of Object.entries(heaters)) {
        if (!reading || typeof reading !== "object") continue;
        const row = this.heaterRow(name);
        row.actual.textContent = fmt.temp(reading.actual);
        const target = reading.target;
        row.target.textContent = target == null ? "" : target > 0 ? `→ ${fmt.temp(target)}` : "off";
        row.root.dataset.target = target == null ? "" : String(target);
        row.power.textContent = reading.power == null ? "" : `power ${fmt.pct((reading.power / 127) * 100)}`;
        if (target != null && document.activeElement !== row.input) row.input.placeholder = String(Math.round(target));
      }
    }

    gcodeForTarget(heater, value) {
      const v = Math.round(value);
      if (heater === "bed") return `M140 S${v}`;
      if (heater === "chamber") return `M141 S${v}`;
      const tool = /^tool(\d+)$/.exec(heater);
      const tools = [...this.heaters.keys()].filter((h) => /^tool\d+$/.test(h));
      return tools.length > 1 ? `M104 T${tool[1]} S${v}` : `M104 S${v}`;
    }

    async setTarget(heater, value) {
      const gcode = this.gcodeForTarget(heater, value);
      const label = heaterLabel(heater, [...this.heaters.keys()].filter((h) => /^tool\d+$/.test(h)).length);
      this.status(`Sending ${gcode}…`);
      try {
        await conn.request({ type: "command", printer: this.name, gcode }, COMMAND_TIMEOUT_MS);
        const row = this.heaters.get(heater);
        if (row) row.input.value = "";
        this.status(value > 0 ? `${label} target set to ${fmt.temp(value)}.` : `${label} turned off.`);
      } catch (err) {
        this.status(`${label}: ${err.message}`, true);
      }
    }

    // temperatures and the chart
    setupChart() {
      const wrap = this.q(".chart-wrap");
      if (typeof ResizeObserver !== "undefined") {
        this.resizeObserver = new ResizeObserver(() => {
          if (this.plot) {
            const width = Math.floor(wrap.clientWidth);
            if (width > 0 && width !== this.plot.width) this.plot.setSize({ width, height: this.chartHeight() });
          }
        });
        this.resizeObserver.observe(wrap);
      }
    }

    chartHeight() { return window.innerWidth < 560 ? 170 : 210; }

    seedHistory(frame) {
      if (typeof frame.seconds === "number" && frame.seconds > 0) this.windowSeconds = frame.seconds;
      this.times = [];
      this.values = new Map();
      for (const sample of frame.samples || []) this.addSample(sample.time, sample.heaters || {});
      const last = (frame.samples || []).at(-1);
      if (last) this.showHeaters(last.heaters || {});
      this.redraw();
    }

    temperature(frame) {
      const heaters = frame.heaters || {};
      this.showHeaters(heaters);
      const t = toSeconds(frame.time);
      if (t == null || (this.times.length && t <= this.times[this.times.length - 1])) return;
      this.addSample(t, heaters);
      this.trim();
      this.redraw();
    }

    addSample(time, heaters) {
      const t = typeof time === "number" ? time : toSeconds(time);
      if (t == null) return;
      const index = this.times.length;
      this.times.push(t);
      for (const [name, reading] of Object.entries(heaters)) {
        if (!this.values.has(name)) {
          this.values.set(name, { actual: new Array(index).fill(null), target: new Array(index).fill(null) });
        }
      }
      for (const [name, series] of this.values) {
        const reading = heaters[name];
        series.actual.push(reading && isFinite(reading.actual) ? reading.actual : null);
        series.target.push(reading && reading.target != null && isFinite(reading.target) ? reading.target : null);
      }
    }

    trim() {
      const horizon = this.times[this.times.length - 1] - this.windowSeconds;
      let drop = 0;
      while (drop < this.times.length && this.times[drop] < horizon) drop += 1;
      if (!drop) return;
      this.times.splice(0, drop);
      for (const series of this.values.values()) {
        series.actual.splice(0, drop);
        series.target.splice(0, drop);
      }
    }

    chartData() {
      const data = [this.times];
      for (const name of this.chartHeaters) {
        const series = this.values.get(name);
        data.push(series.actual, series.target);
      }
      return data;
    }

    redraw() {
      const empty = this.q(".chart-empty");
      if (typeof uPlot === "undefined") {
        empty.textContent = "The chart library did not load.";
        return;
      }
      empty.hidden = this.times.length > 0;
      const heaters = sortHeaters(this.values.keys());
      if (!this.plot || heaters.join() !== this.chartHeaters.join()) {
        this.chartHeaters = heaters;
        this.buildChart();
      } else {
        this.plot.setData(this.chartData());
        this.showLatestInLegend();
      }
      const summary = heaters
        .map((h) => `${heaterLabel(h, heaters.filter((x) => /^tool/.test(x)).length)} ${fmt.temp(this.values.get(h).actual.at(-1))}`)
        .join(", ");
      this.q(".chart").setAttribute("aria-label", `Temperatures of ${this.name} over time: now ${summary}`);
    }

    buildChart() {
      if (this.plot) this.plot.destroy();
      const tools = this.chartHeaters.filter((h) => /^tool\d+$/.test(h)).length;
      const degrees = (u, v) => (v == null ? "—" : fmt.temp(v));
      const series = [{ label: "Time", value: (u, v) => (v == null ? "—" : fmt.time(v)) }];
      for (const name of this.chartHeaters) {
        const color = heaterColor(name);
        const label = heaterLabel(name, tools);
        series.push({ label, stroke: color, width: 2, value: degrees, points: { show: false } });
        series.push({
          label: `${label} target`, stroke: color, width: 1.5, dash: [6, 5], value: degrees, points: { show: false },
        });
      }
      const axis = { stroke: "#4d5763", grid: { stroke: "#e3e8ee", width: 1 }, ticks: { stroke: "#c9d1db", width: 1 } };
      const wrap = this.q(".chart-wrap");
      const options = {
        width: Math.max(200, Math.floor(wrap.clientWidth || 600)),
        height: this.chartHeight(),
        series,
        scales: {
          x: { time: true },
          y: { range: (u, low, high) => [0, Math.max(50, Math.ceil(((high || 0) + 15) / 10) * 10)] },
        },
        axes: [axis, { ...axis, size: 56, values: (u, values) => values.map((v) => `${v}°`) }],
        cursor: { drag: { x: false, y: false } },
        // On a phone the legend names the lines; on a desktop it also shows values.
        legend: { live: window.innerWidth >= 560 },
      };
      this.plot = new uPlot(options, this.chartData(), this.q(".chart"));
      this.hovering = false;
      this.plot.over.addEventListener("mouseenter", () => { this.hovering = true; });
      this.plot.over.addEventListener("mouseleave", () => {
        this.hovering = false;
        this.showLatestInLegend();
      });
      this.showLatestInLegend();
    }

    /** Without a pointer over the chart, the legend shows the newest values. */
    showLatestInLegend() {
      if (this.plot && !this.hovering && this.times.length && this.plot.legend.live !== false) {
        this.plot.setLegend({ idx: this.times.length - 1 });
      }
    }

    // terminal
    setupTerminal() {
      const details = this.q(".terminal");
      const input = this.q(".term-input");
      const inputId = `${this.id}-command`;
      input.id = inputId;
      const label = this.q(".term-label");
      label.htmlFor = inputId;
      label.textContent = "G-code";
      input.setAttribute("aria-describedby", `${this.id}-term-help`);
      const help = el("span", "visually-hidden", "Up and down arrows recall earlier commands.");
      help.id = `${this.id}-term-help`;
      this.q(".term-form").append(help);
      const log = this.q(".term-log");
      log.setAttribute("aria-label", `Serial console of ${this.name}`);
      this.serialTopic = `printer/${this.name}/serial`;
      details.addEventListener("toggle", () => {
        if (details.open) {
          conn.subscribe(this.serialTopic);
          if (canControl()) input.focus();
        } else {
          conn.unsubscribe(this.serialTopic);
        }
      });
      this.q(".term-form").addEventListener("submit", (event) => {
        event.preventDefault();
        this.sendCommand(input.value);
      });
      input.addEventListener("keydown", (event) => {
        if (event.key === "ArrowUp") {
          if (this.historyIndex === this.cmdHistory.length) this.draft = input.value;
          if (this.historyIndex > 0) {
            this.historyIndex -= 1;
            input.value = this.cmdHistory[this.historyIndex];
          }
          event.preventDefault();
        } else if (event.key === "ArrowDown") {
          if (this.historyIndex < this.cmdHistory.length) {
            this.historyIndex += 1;
            input.value = this.historyIndex === this.cmdHistory.length ? this.draft : this.cmdHistory[this.historyIndex];
          }
          event.preventDefault();
        }
      });
    }

    get terminalOpen() { return this.q(".terminal").open; }

    termLine(kind, text) {
      const log = this.q(".term-log");
      const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
      const row = el("div", `term-line ${kind}`);
      const arrow = { send: "→", recv: "←", info: "•", error: "!" }[kind] || "•";
      const dir = el("span", "term-dir", arrow);
      dir.setAttribute("aria-hidden", "true");
      const spoken = { send: "sent: ", recv: "received: ", error: "error: " }[kind] || "";
      row.append(dir, el("span", "visually-hidden", spoken), el("span", "term-text", text));
      log.append(row);
      while (log.childElementCount > TERMINAL_LINES) log.firstElementChild.remove();
      if (atBottom) log.scrollTop = log.scrollHeight;
    }

    termNote(text) {
      if (this.terminalOpen) this.termLine("info", text);
    }

    serial(frame) {
      if (!this.terminalOpen) return;
      const line = String(frame.line == null ? "" : frame.line);
      if (this.q(".term-hide-temps").checked && isTemperatureLine(frame.direction, line)) return;
      this.termLine(frame.direction === "send" ? "send" : "recv", line);
    }

    async sendCommand(raw) {
      const gcode = raw.trim();
      if (!gcode) return;
      const input = this.q(".term-input");
      if (this.cmdHistory[this.cmdHistory.length - 1] !== gcode) {
        this.cmdHistory.push(gcode);
        if (this.cmdHistory.length > HISTORY_KEPT) this.cmdHistory.splice(0, this.cmdHistory.length - HISTORY_KEPT);
        saveHistory(this.name, this.cmdHistory);
      }
      this.historyIndex = this.cmdHistory.length;
      this.draft = "";
      input.value = "";
      const echoed = conn.topics.has(this.serialTopic);
      try {
        const reply = await conn.request({ type: "command", printer: this.name, gcode }, COMMAND_TIMEOUT_MS);
        if (!echoed) {
          this.termLine("send", gcode);
          for (const line of reply.response || []) this.termLine("recv", String(line));
        }
        const ms = Math.round((reply.duration_seconds || 0) * 1000);
        this.termLine("info", `${gcode.split("\n")[0]}: done in ${ms >= 1000 ? fmt.duration(ms / 1000) : `${ms} ms`}`);
      } catch (err) {
        this.termLine("error", `${gcode.split("\n")[0]}: ${err.message}`);
      }
    }

    async reconnectPrinter() {
      try {
        await conn.request({ type: "printer_reconnect", printer: this.name });
        this.status("Reconnecting to the printer…");
      } catch (err) {
        this.status(`Reconnect: ${err.message}`, true);
      }
    }

    // job
    setupJob() {
      const actions = [
        [".job-pause", "job_pause", "Pause the print?", "Pause", "The printer finishes the moves it has and waits."],
        [".job-resume", "job_resume", "Resume the print?", "Resume", "Printing continues where it stopped."],
        [".job-cancel", "job_cancel", "Cancel the print?", "Cancel job", "The job stops for good and cannot be resumed."],
      ];
      for (const [selector, type, title, confirmLabel, detail] of actions) {
        const button = this.q(selector);
        button.addEventListener("click", async () => {
          const file = this.lastJob && this.lastJob.file ? ` (${this.lastJob.file})` : "";
          if (!(await confirmAction(title, `${this.name}${file}: ${detail}`, confirmLabel))) return;
          button.disabled = true;
          try {
            const reply = await conn.request({ type, printer: this.name });
            if (reply && reply.printer) this.job(reply);
            this.status(`${confirmLabel}: done.`);
          } catch (err) {
            this.status(`${confirmLabel}: ${err.message}`, true);
          } finally {
            button.disabled = false;
          }
        });
      }
      const progress = this.q(".job-progress");
      progress.setAttribute("aria-label", `Job progress on ${this.name}`);
    }

    job(frame) {
      this.lastJob = frame;
      const section = this.q(".job");
      section.hidden = false;
      const state = String(frame.state || "idle");
      const badge = this.q(".job-state");
      badge.dataset.state = state;
      badge.textContent = JOB_LABELS[state] || state;
      this.q(".job-file").textContent = frame.file || "No job";
      const idle = state === "idle" || !frame.file;
      const progress = Math.max(0, Math.min(1, Number(frame.progress) || 0));
      this.q(".job-progress-row").hidden = idle;
      this.q(".job-times").hidden = idle;
      this.q(".job-progress").value = progress;
      this.q(".job-percent").textContent = fmt.pct(progress * 100);
      this.q(".job-elapsed").textContent = fmt.duration(frame.elapsed_seconds);
      this.q(".job-eta").textContent =
        frame.eta_seconds == null ? (state === "printing" ? "estimating…" : "—") : fmt.duration(frame.eta_seconds);
      this.q(".job-lines").textContent =
        frame.total_lines ? `${fmt.count(frame.lines_sent)} of ${fmt.count(frame.total_lines)}` : fmt.count(frame.lines_sent);
      const reason = this.q(".job-reason");
      reason.textContent = frame.reason || "";
      reason.hidden = !frame.reason;
      const queue = Array.isArray(frame.queue) ? frame.queue : [];
      const queueNode = this.q(".job-queue");
      queueNode.textContent = queue.length ? `Next: ${queue.join(", ")}` : "";
      queueNode.hidden = !queue.length;
      this.q(".job-pause").hidden = state !== "printing";
      this.q(".job-resume").hidden = state !== "paused";
      this.q(".job-cancel").hidden = !["printing", "paused", "queued"].includes(state);
      this.q(".job-actions").hidden = !["printing", "paused", "queued"].includes(state);
    }
  }

  function isTemperatureLine(direction, line) {
    if (direction === "send") return /^M105\b/i.test(line) || /^M155\b/i.test(line);
    return /^(ok\s+)?T\d*:\s*-?[\d.]+\s*\//.test(line.trim()) || /^ok\s+T:/.test(line);
  }

  function loadHistory(name) {
    try {
      const stored = JSON.parse(localStorage.getItem(`hydrogen.history.${name}`) || "[]");
      return Array.isArray(stored) ? stored.filter((x) => typeof x === "string").slice(-HISTORY_KEPT) : [];
    } catch (err) {
      return [];
    }
  }
  function saveHistory(name, history) {
    try {
      localStorage.setItem(`hydrogen.history.${name}`, JSON.stringify(history));
    } catch (err) {
      /* private mode or full: history lasts for this page only */
    }
  }

  // -- emergency stop: no confirmation, and HTTP if the WebSocket is down ------------------
  async function emergencyStop(names) {
    if (!names.length) {
      toast("No printers to stop.", "warning");
      return;
    }
    for (const name of names) {
      const viaHttp = async () => {
        const response = await fetch(`/api/printers/${encodeURIComponent(name)}/emergency_stop`, { method: "POST" });
        if (!response.ok) {
          const body = await response.json().catch(() => ({}));
          throw new Error((body.error && body.error.message) || `HTTP ${response.status}`);
        }
      };
      try {
        if (conn.open) {
          try {
            await conn.request({ type: "emergency_stop", printer: name }, 5000);
          } catch (err) {
            if (err.code) throw err; // the gateway answered: the printer cannot be stopped
            await viaHttp();
          }
        } else {
          await viaHttp();
        }
        toast(`${name}: emergency stop sent.`, "critical");
      } catch (err) {
        toast(`${name}: emergency stop failed: ${err.message}`, "error");
      }
    }
  }

  // -- confirmation dialog -------------------------------------------------------------
  function confirmAction(title, message, confirmLabel) {
    const dialog = $("confirm-dialog");
    $("confirm-title").textContent = title;
    $("confirm-message").textContent = message;
    $("confirm-yes").textContent = confirmLabel;
    if (typeof dialog.showModal !== "function") return Promise.resolve(window.confirm(`${title}\n${message}`));
    return new Promise((resolve) => {
      dialog.returnValue = "cancel";
      const done = () => {
        dialog.removeEventListener("close", done);
        resolve(dialog.returnValue === "ok");
      };
      dialog.addEventListener("close", done);
      dialog.showModal();
      $("confirm-no").focus();
    });
  }

  // -- notifications ---------------------------------------------------------------------
  function toast(message, level = "info") {
    const container = $("toasts");
    const node = el("div", "toast");
    node.dataset.level = level;
    if (level === "error" || level === "critical") node.setAttribute("role", "alert");
    const text = el("span", "toast-text", message);
    const close = el("button", "ghost", "×");
    close.type = "button";
    close.setAttribute("aria-label", "Dismiss");
    close.addEventListener("click", () => node.remove());
    node.append(text, close);
    container.append(node);
    while (container.childElementCount > 4) container.firstElementChild.remove();
    setTimeout(() => node.remove(), level === "critical" ? 20000 : 8000);
  }

  const notifications = {
    recent: new Map(),
    add(frame) {
      const level = ["info", "warning", "error", "critical"].includes(frame.level) ? frame.level : "info";
      const message = String(frame.message || frame.event || "notification");
      const key = `${level}|${message}`;
      const now = Date.now();
      const list = $("notification-list");
      const seen = this.recent.get(key);
      if (seen && now - seen.at < 60000 && seen.item.isConnected) {
        // The same event again (a device that keeps failing to open): count, do not toast.
        seen.count += 1;
        seen.at = now;
        seen.counter.textContent = `×${seen.count}`;
        seen.time.textContent = fmt.time(frame.time) || fmt.time(now / 1000);
        list.prepend(seen.item);
        return;
      }
      const item = el("li", "notification");
      item.dataset.level = level;
      const time = el("span", "notification-time", fmt.time(frame.time) || fmt.time(now / 1000));
      const counter = el("span", "notification-count", "");
      item.append(time, el("span", "notification-text", message), counter);
      list.prepend(item);
      while (list.childElementCount > NOTIFICATIONS_KEPT) list.lastElementChild.remove();
      $("notifications-empty").hidden = true;
      this.recent.set(key, { item, counter, time, count: 1, at: now });
      if (this.recent.size > 200) this.recent.clear();
      toast(message, level);
    },
  };

  // -- files ----------------------------------------------------------------------------
  const files = {
    available: false,
    list: [],
    async load() {
      let response;
      try {
        response = await fetch("/api/files", { cache: "no-store" });
      } catch (err) {
        return;
      }
      if (response.status === 401) { checkSession(); return; }
      if (!response.ok) {
        this.available = false;
        $("files-panel").hidden = true;
        return;
      }
      const body = await response.json().catch(() => ({}));
      this.available = true;
      $("files-panel").hidden = false;
      this.list = Array.isArray(body.files) ? body.files : [];
      this.render();
    },
    render() {
      const items = this.list.map((file) => this.item(file));
      $("file-list").replaceChildren(...items);
      $("files-empty").hidden = items.length > 0;
    },
    item(file) {
      const node = fromTemplate("file-template");
      node.querySelector(".file-name").textContent = file.name;
      const meta = [fmt.bytes(file.size_bytes)];
      const uploaded = fmt.ago(file.uploaded_at);
      if (uploaded) meta.push(`uploaded ${uploaded}`);
      const m = file.metadata || {};
      if (m.estimated_seconds) meta.push(`about ${fmt.duration(m.estimated_seconds)}`);
      if (m.filament_g) meta.push(`${Number(m.filament_g).toFixed(1)}${NBSP}g`);
      else if (m.filament_mm) meta.push(`${(m.filament_mm / 1000).toFixed(2)}${NBSP}m filament`);
      if (m.layer_height_mm) meta.push(`${m.layer_height_mm}${NBSP}mm layers`);
      if (m.slicer) meta.push(String(m.slicer));
      node.querySelector(".file-meta").textContent = meta.join(" · ");
      const select = node.querySelector(".file-printer");
      const selectId = `file-${safeId(file.name)}-printer`;
      select.id = selectId;
      node.querySelector(".file-printer-label").htmlFor = selectId;
      node.querySelector(".file-printer-label").textContent = `Printer for ${file.name}`;
      this.fillPrinters(select);
      const print = node.querySelector(".file-print");
      print.setAttribute("aria-label", `Print ${file.name}`);
      print.addEventListener("click", () => this.start(file.name, select.value, print));
      const remove = node.querySelector(".file-delete");
      remove.setAttribute("aria-label", `Delete ${file.name}`);
      remove.addEventListener("click", () => this.remove(file.name));
      return node;
    },
    fillPrinters(select) {
      const previous = select.value;
      const names = app.printerOrder.length ? app.printerOrder : [...app.cards.keys()];
      select.replaceChildren(...names.map((name) => {
        const option = el("option", null, name);
        option.value = name;
        return option;
      }));
      if (names.includes(previous)) select.value = previous;
      select.hidden = names.length < 2;
    },
    refreshPrinters() {
      document.querySelectorAll(".file-printer").forEach((select) => this.fillPrinters(select));
    },
    async start(name, printer, button) {
      if (!printer) { toast("No printer to print on.", "warning"); return; }
      button.disabled = true;
      try {
        const reply = await conn.request({ type: "job_start", printer, file: name });
        if (reply && reply.printer) card(reply.printer, true)?.job(reply);
        toast(`${printer}: ${name} ${reply && reply.state === "queued" ? "queued" : "started"}.`, "info");
      } catch (err) {
        toast(`Cannot print ${name}: ${err.message}`, "error");
      } finally {
        button.disabled = false;
      }
    },
    async remove(name) {
      if (!(await confirmAction("Delete this file?", name, "Delete"))) return;
      const response = await fetch(`/api/files/${encodeURIComponent(name)}`, { method: "DELETE" }).catch(() => null);
      if (!response || !response.ok) {
        const body = response ? await response.json().catch(() => ({})) : {};
        toast(`Cannot delete ${name}: ${(body.error && body.error.message) || "the gateway is unreachable"}`, "error");
      }
      this.load();
    },
    upload(fileList) {
      const queue = [...fileList];
      const status = $("upload-status");
      const progress = $("upload-progress");
      const next = () => {
        const file = queue.shift();
        if (!file) {
          progress.hidden = true;
          this.load();
          return;
        }
        const form = new FormData();
        form.append("file", file, file.name);
        const xhr = new XMLHttpRequest();
        xhr.open("POST", "/api/files");
        progress.hidden = false;
        progress.value = 0;
        status.textContent = `Uploading ${file.name}…`;
        xhr.upload.onprogress = (event) => {
          if (event.lengthComputable) progress.value = event.loaded / event.total;
        };
        xhr.onload = () => {
          if (xhr.status >= 200 && xhr.status < 300) {
            status.textContent = `Uploaded ${file.name}.`;
          } else {
            let message = `HTTP ${xhr.status}`;
            try { message = JSON.parse(xhr.responseText).error.message || message; } catch (err) { /* not JSON */ }
            status.textContent = `${file.name}: ${message}`;
            toast(`Upload of ${file.name} failed: ${message}`, "error");
          }
          next();
        };
        xhr.onerror = () => {
          status.textContent = `${file.name}: the gateway is unreachable.`;
          next();
        };
        xhr.send(form);
      };
      next();
    },
  };

  function setupFiles() {
    const input = $("file-input");
    const zone = $("dropzone");
    $("file-choose").addEventListener("click", () => input.click());
    input.addEventListener("change", () => {
      if (input.files && input.files.length) files.upload(input.files);
      input.value = "";
    });
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      zone.classList.add("dragging");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("dragging");
      if (!canControl()) return;
      if (event.dataTransfer.files && event.dataTransfer.files.length) files.upload(event.dataTransfer.files);
    });
    // A file dropped next to the zone must not make the browser navigate away.
    window.addEventListener("dragover", (event) => event.preventDefault());
    window.addEventListener("drop", (event) => event.preventDefault());
  }

  // -- start -------------------------------------------------------------------------------
  function start() {
    setRole(app.role);
    $("estop-all").addEventListener("click", () => emergencyStop(app.printerOrder.length ? app.printerOrder : [...app.cards.keys()]));
    $("conn").addEventListener("click", () => conn.reconnectNow());
    window.addEventListener("online", () => conn.reconnectNow());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") conn.reconnectNow();
    });
    setupFiles();
    conn.connect();
    // For people debugging in the console, and for the browser tests.
    window.hydrogenDashboard = { app, conn, fmt };
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
