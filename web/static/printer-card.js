/* One printer's card: state badge, heaters, chart, job and terminal, updated in place. */

import { fromTemplate, safeId, setAttr, setData, setHidden, setText } from "./dom.js";
import { fmt } from "./format.js";
import { HeaterRows } from "./heaters.js";
import { JOB_LABELS, JobPanel } from "./job-panel.js";
import { TemperatureChart } from "./temperature-chart.js";
import { COMMAND_TIMEOUT_MS, Terminal } from "./terminal.js";

const STATE_LABELS = {
  disconnected: "Disconnected", connecting: "Connecting", ready: "Ready", busy: "Busy", error: "Error",
};
/** A job in one of these states names the printer's badge... */
const JOB_BADGES = ["printing", "paused"];
/** ...unless the link itself is down: that matters more than the job. */
const LINK_DOWN = ["error", "disconnected"];

export class PrinterCard {
  /**
   * @param {string} name
   * @param {{client: object, canControl: () => boolean, confirm: Function, emergencyStop: (names: string[]) => void}} ctx
   */
  constructor(name, ctx) {
    this.name = name;
    this.ctx = ctx;
    this.id = `printer-${safeId(name)}`;
    this.root = fromTemplate("printer-template");
    this.root.id = this.id;
    this.root.dataset.printer = name;
    const title = this.q(".printer-name");
    title.id = `${this.id}-name`;
    title.textContent = name;
    this.root.setAttribute("aria-labelledby", title.id);
    this.state = null;
    this.summary = null;

    const status = (text, isError) => this.status(text, isError);
    this.heaters = new HeaterRows(this.q(".heaters"), {
      idPrefix: this.id, printer: name, status, setTarget: (heater, value, input) => this.setTarget(heater, value, input),
    });
    this.chart = new TemperatureChart(this.q(".chart-wrap"), name);
    this.terminal = new Terminal(this.q(".terminal"), {
      printer: name, idPrefix: this.id, client: ctx.client, canControl: ctx.canControl,
    });
    this.jobPanel = new JobPanel(this.q(".job"), {
      printer: name, client: ctx.client, confirm: ctx.confirm, status, onJob: (frame) => this.job(frame),
    });

    const estop = this.q(".printer-estop");
    estop.setAttribute("aria-label", `Emergency stop ${name}`);
    estop.addEventListener("click", () => ctx.emergencyStop([this.name]));
    this.q(".printer-reconnect").addEventListener("click", () => this.reconnectPrinter());
  }

  q(selector) { return this.root.querySelector(selector); }

  // For people debugging in the console, and for the browser tests.
  get times() { return this.chart.times; }
  get values() { return this.chart.values; }
  get chartHeaters() { return this.chart.heaters; }
  get plot() { return this.chart.plot; }
  get lastJob() { return this.jobPanel.frame; }

  status(text, isError = false) {
    const node = this.q(".card-status");
    setText(node, text);
    node.classList.toggle("error", Boolean(isError));
  }

  destroy() {
    this.chart.destroy();
    this.root.remove();
  }

  /** A printer summary (`printer_state` frame or a member of `status.printers`). */
  updateSummary(summary) {
    this.summary = summary;
    const state = String(summary.state || "unknown");
    this.state = state;
    this.renderBadge();
    const firmware = summary.firmware && summary.firmware.name;
    setText(this.q(".firmware"), firmware ? `Firmware: ${firmware}` : "Firmware: not known yet");
    setHidden(this.q(".printer-reconnect"), !LINK_DOWN.includes(state));
    if (summary.temperatures && typeof summary.temperatures === "object" && !this.chart.times.length) {
      this.heaters.show(summary.temperatures);
    }
  }

  /**
   * The badge says what the printer is doing for its person: "printing" or "paused"
   * while its job is, otherwise the link's state (ready, busy, error, ...).
   */
  renderBadge() {
    const badge = this.q(".state-badge");
    const reason = this.q(".state-reason");
    const state = this.state || "unknown";
    const job = this.jobPanel.state;
    const fromJob = JOB_BADGES.includes(job) && !LINK_DOWN.includes(state);
    const shown = fromJob ? job : state;
    setData(badge, "state", shown);
    setText(badge, fromJob ? JOB_LABELS[job] : STATE_LABELS[state] || state);
    const why = this.summary && this.summary.reason;
    setAttr(badge, "title", `Printer link: ${STATE_LABELS[state] || state}${why ? ` (${why})` : ""}`);
    // While printing, "running G28" and the like are the job's business, not news.
    const text = fromJob ? "" : why || "";
    setText(reason, text);
    setHidden(reason, !text);
  }

  temperature(frame) {
    const heaters = frame.heaters || {};
    this.heaters.show(heaters);
    this.chart.add(frame.time, heaters);
  }

  seedHistory(frame) {
    this.chart.seed(frame);
    const last = (frame.samples || []).at(-1);
    if (last) this.heaters.show(last.heaters || {});
  }

  serial(frame) { this.terminal.serial(frame); }

  termNote(text) { this.terminal.note(text); }

  job(frame) {
    this.jobPanel.show(frame);
    this.renderBadge();
  }

  async setTarget(heater, value, input) {
    const gcode = this.heaters.gcodeForTarget(heater, value);
    const label = this.heaters.label(heater);
    const typed = input ? input.value : null;
    this.status(`Sending ${gcode}…`);
    try {
      await this.ctx.client.request({ type: "command", printer: this.name, gcode }, COMMAND_TIMEOUT_MS);
      // Clear the field only if it still holds what was sent (not something typed since).
      if (input && input.value === typed) input.value = "";
      this.status(value > 0 ? `${label} target set to ${fmt.temp(value)}.` : `${label} turned off.`);
    } catch (err) {
      this.status(`${label}: ${err.message}`, true);
    }
  }

  async reconnectPrinter() {
    try {
      await this.ctx.client.request({ type: "printer_reconnect", printer: this.name });
      this.status("Reconnecting to the printer…");
    } catch (err) {
      this.status(`Reconnect: ${err.message}`, true);
    }
  }
}
