/* A printer's temperature chart: samples in a sliding window, drawn with uPlot. */

import { setAttr, setHidden, setText } from "./dom.js";
import { fmt, toSeconds } from "./format.js";
import { heaterColor, heaterLabel, isTool, sortHeaters } from "./heaters.js";

export class TemperatureChart {
  /** @param {HTMLElement} wrap the card's `.chart-wrap` @param {string} printer */
  constructor(wrap, printer) {
    this.wrap = wrap;
    this.node = wrap.querySelector(".chart");
    this.empty = wrap.querySelector(".chart-empty");
    this.printer = printer;
    this.times = [];
    this.values = new Map(); // heater -> {actual: [], target: []}
    this.heaters = [];
    this.windowSeconds = 1200;
    this.plot = null;
    this.hovering = false;
    if (typeof ResizeObserver !== "undefined") {
      this.resizeObserver = new ResizeObserver(() => {
        if (!this.plot) return;
        const width = Math.floor(wrap.clientWidth);
        if (width > 0 && width !== this.plot.width) this.plot.setSize({ width, height: this.height() });
      });
      this.resizeObserver.observe(wrap);
    }
  }

  destroy() {
    if (this.plot) this.plot.destroy();
    if (this.resizeObserver) this.resizeObserver.disconnect();
  }

  height() { return window.innerWidth < 560 ? 170 : 210; }

  /** Replace everything with a `temperature_history` frame. */
  seed(frame) {
    if (typeof frame.seconds === "number" && frame.seconds > 0) this.windowSeconds = frame.seconds;
    this.times = [];
    this.values = new Map();
    for (const sample of frame.samples || []) this.addSample(sample.time, sample.heaters || {});
    this.redraw();
  }

  /** Add one `temperature` frame's reading (older or repeated times are ignored). */
  add(time, heaters) {
    const t = toSeconds(time);
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
    for (const name of Object.keys(heaters)) {
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

  data() {
    const data = [this.times];
    for (const name of this.heaters) {
      const series = this.values.get(name);
      data.push(series.actual, series.target);
    }
    return data;
  }

  redraw() {
    if (typeof uPlot === "undefined") {
      setText(this.empty, "The chart library did not load.");
      return;
    }
    setHidden(this.empty, this.times.length > 0);
    const heaters = sortHeaters(this.values.keys());
    if (!this.plot || heaters.join() !== this.heaters.join()) {
      this.heaters = heaters;
      this.build();
    } else {
      this.plot.setData(this.data());
      this.showLatestInLegend();
    }
    const tools = heaters.filter(isTool).length;
    const summary = heaters
      .map((h) => `${heaterLabel(h, tools)} ${fmt.temp(this.values.get(h).actual.at(-1))}`)
      .join(", ");
    setAttr(this.node, "aria-label", `Temperatures of ${this.printer} over time: now ${summary}`);
  }

  build() {
    if (this.plot) this.plot.destroy();
    const tools = this.heaters.filter(isTool).length;
    const degrees = (u, v) => (v == null ? "—" : fmt.temp(v));
    const series = [{ label: "Time", value: (u, v) => (v == null ? "—" : fmt.time(v)) }];
    for (const name of this.heaters) {
      const color = heaterColor(name);
      const label = heaterLabel(name, tools);
      series.push({ label, stroke: color, width: 2, value: degrees, points: { show: false } });
      series.push({
        label: `${label} target`, stroke: color, width: 1.5, dash: [6, 5], value: degrees, points: { show: false },
      });
    }
    const axis = { stroke: "#4d5763", grid: { stroke: "#e3e8ee", width: 1 }, ticks: { stroke: "#c9d1db", width: 1 } };
    const options = {
      width: Math.max(200, Math.floor(this.wrap.clientWidth || 600)),
      height: this.height(),
      series,
      scales: {
        x: { time: true, range: (u, min, max) => this.timeRange(min, max) },
        y: { range: (u, low, high) => [0, Math.max(50, Math.ceil(((high || 0) + 15) / 10) * 10)] },
      },
      axes: [axis, { ...axis, size: 56, values: (u, values) => values.map((v) => `${v}°`) }],
      cursor: { drag: { x: false, y: false } },
      // On a phone the legend names the lines; on a desktop it also shows values.
      legend: { live: window.innerWidth >= 560 },
    };
    this.plot = new uPlot(options, this.data(), this.node);
    this.hovering = false;
    this.plot.over.addEventListener("mouseenter", () => { this.hovering = true; });
    this.plot.over.addEventListener("mouseleave", () => {
      this.hovering = false;
      this.showLatestInLegend();
    });
    this.showLatestInLegend();
  }

  /** The time axis: the samples' span; with none yet or one, the ten minutes up to it
   * (uPlot stretches a one-sample time axis to a thousand days ahead). */
  timeRange(min, max) {
    if (this.times.length > 1 && min != null && max != null && max > min) return [min, max];
    const end = this.times.length ? this.times[this.times.length - 1] : Date.now() / 1000;
    return [end - Math.min(this.windowSeconds, 600), end];
  }

  /** Without a pointer over the chart, the legend shows the newest values. */
  showLatestInLegend() {
    if (this.plot && !this.hovering && this.times.length && this.plot.legend.live !== false) {
      this.plot.setLegend({ idx: this.times.length - 1 });
    }
  }
}
