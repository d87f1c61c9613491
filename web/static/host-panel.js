/* The host panel: CPU, memory, disks, sensors, network and uptime from status frames. */

import { $, KeyedList, bar, el, setBar, setText } from "./dom.js";
import { NBSP, fmt, toSeconds } from "./format.js";

const MAX_SENSORS = 8;
const MAX_INTERFACES = 6;

/** A list of `.row` spans keyed by name; `[]` shows one muted placeholder. */
function rowList(container, { withBar = false } = {}) {
  return new KeyedList(container, {
    key: (row) => row.key,
    create: (row) => {
      const node = el("span", row.placeholder ? "muted" : "row");
      if (withBar && !row.placeholder) {
        node.append(el("span", "value"), el("span", "row-text"), bar(0));
      }
      return node;
    },
    update: (node, row) => {
      if (withBar && !row.placeholder) {
        setText(node.children[0], row.name);
        setText(node.children[1], row.text);
        setBar(node.children[2], row.percent);
      } else {
        setText(node, row.text);
      }
    },
  });
}

function withPlaceholder(rows, text) {
  return rows.length ? rows : [{ key: "\u0000none", placeholder: true, text }];
}

export class HostPanel {
  constructor() {
    this.previousNetwork = null;
    this.rates = {};
    this.disks = rowList($("disks"), { withBar: true });
    this.temps = rowList($("host-temps"));
    this.network = rowList($("network"));
  }

  update(frame) {
    const h = frame.host || {};
    const system = frame.system || {};
    if (system.nodename) {
      setText($("hostname"), system.nodename);
      setText($("host-name"), system.nodename);
      const title = `${system.nodename} · Hydrogen`;
      if (document.title !== title) document.title = title;
    }
    const cpu = h.cpu || {};
    setText($("cpu-value"), fmt.pct(cpu.percent));
    setBar($("cpu-bar").parentElement, cpu.percent);
    const cpuSub = [];
    if (cpu.count) cpuSub.push(`${cpu.count} core${cpu.count === 1 ? "" : "s"}`);
    if (Array.isArray(cpu.load_average)) cpuSub.push(`load ${cpu.load_average.map((v) => Number(v).toFixed(2)).join(" ")}`);
    setText($("cpu-sub"), cpuSub.join(" · "));

    const mem = h.memory || {};
    setText($("mem-value"), fmt.pct(mem.percent));
    setBar($("mem-bar").parentElement, mem.percent);
    const swap = h.swap || {};
    let memSub = `${fmt.bytes(mem.used_bytes)} of ${fmt.bytes(mem.total_bytes)}`;
    if (swap.total_bytes) memSub += ` · swap ${fmt.bytes(swap.used_bytes)} of ${fmt.bytes(swap.total_bytes)}`;
    setText($("mem-sub"), memSub);

    const disks = (h.filesystems || []).map((fs) => ({
      key: String(fs.mountpoint),
      name: fs.mountpoint,
      text: ` ${fmt.bytes(fs.used_bytes)} of ${fmt.bytes(fs.total_bytes)} (${fmt.pct(fs.percent)})`,
      percent: fs.percent,
    }));
    this.disks.render(withPlaceholder(disks, "—"));

    const temps = [];
    for (const [chip, sensors] of Object.entries(h.temperatures || {})) {
      (sensors || []).forEach((sensor, index) => {
        if (temps.length >= MAX_SENSORS) return;
        temps.push({
          key: `${chip}/${index}`,
          text: `${sensor.label || chip}: ${fmt.temp(sensor.current_celsius)}`,
        });
      });
    }
    this.temps.render(withPlaceholder(temps, "No sensors"));

    this.updateNetwork(h);
    setText($("uptime"), h.uptime_seconds == null ? "—" : fmt.duration(h.uptime_seconds));
    const started = toSeconds(frame.server_start_time);
    const now = toSeconds(h.sampled_at) || Date.now() / 1000;
    const parts = [`Gateway ${frame.server_version || ""}`.trim()];
    if (started) parts.push(`up ${fmt.duration(now - started)}`);
    if (frame.active_connections != null) {
      parts.push(`${frame.active_connections} client${frame.active_connections === 1 ? "" : "s"}`);
    }
    if (frame.status && frame.status.shutting_down) parts.push("shutting down");
    setText($("gateway-sub"), parts.join(" · "));
  }

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
      if (name === "lo" || rows.length >= MAX_INTERFACES || !(counters.bytes_recv || counters.bytes_sent)) continue;
      const rate = this.rates[name];
      const text = rate
        ? `${name} ↓${NBSP}${fmt.rate(rate.down)} ↑${NBSP}${fmt.rate(rate.up)}`
        : `${name} ↓${NBSP}${fmt.bytes(counters.bytes_recv)} ↑${NBSP}${fmt.bytes(counters.bytes_sent)}`;
      rows.push({ key: name, text });
    }
    this.network.render(withPlaceholder(rows, "—"));
  }
}
