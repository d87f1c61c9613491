/* Job history: the last jobs of every printer this session may see, and who started or
 * cancelled each (job_history, docs/protocol.md §5.20). Rows are keyed by job id and
 * updated in place; the list is asked again when a job ends. */

import { $, el, placeInOrder, setData, setHidden, setText } from "./dom.js";
import { fmt } from "./format.js";
import { JOB_LABELS, whoText } from "./job-panel.js";

const SHOWN = 20;
const FINISHED = ["completed", "cancelled", "failed"];

export class HistoryPanel {
  constructor(client) {
    this.client = client;
    this.list = $("history-list");
    this.rows = new Map();
    this.ended = new Map(); // printer -> job id whose end was last seen
    this.timer = null;
  }

  async load() {
    let reply;
    try {
      reply = await this.client.request({ type: "job_history", limit: SHOWN });
    } catch (err) {
      return; // offline or refused: the next reconnect asks again
    }
    const jobs = Array.isArray(reply.jobs) ? reply.jobs : [];
    const keep = new Set();
    const nodes = [];
    for (const job of jobs) {
      if (!job || typeof job.id !== "string") continue;
      keep.add(job.id);
      nodes.push(this.row(job));
    }
    for (const [id, row] of this.rows) {
      if (!keep.has(id)) {
        row.root.remove();
        this.rows.delete(id);
      }
    }
    placeInOrder(this.list, nodes);
    setHidden($("history-empty"), nodes.length > 0);
  }

  row(job) {
    let row = this.rows.get(job.id);
    if (!row) {
      const root = el("li", "history-item");
      root.dataset.job = job.id;
      row = {
        root,
        badge: el("span", "badge"),
        file: el("span", "history-file"),
        meta: el("span", "history-meta small muted"),
        who: el("span", "history-who small"),
      };
      const head = el("div", "history-head");
      head.append(row.badge, row.file);
      root.append(head, row.meta, row.who);
      this.rows.set(job.id, row);
    }
    const outcome = String(job.outcome || "");
    setData(row.badge, "state", outcome === "running" ? "printing" : outcome);
    setText(row.badge, outcome === "running" ? "Printing" : JOB_LABELS[outcome] || outcome);
    setText(row.file, job.file || "");
    const when = job.started_at ? `${fmt.ago(job.started_at)}, ${fmt.time(job.started_at)}` : "";
    const took = job.duration_seconds != null ? ` · ${fmt.duration(job.duration_seconds)}` : "";
    setText(row.meta, `${job.printer || ""} · ${when}${took}`);
    const who = whoText(job);
    setText(row.who, who);
    setHidden(row.who, !who);
    return row.root;
  }

  /** A job frame: when a job has just ended (or started), ask for the list again, once. */
  job(frame) {
    if (!frame || !frame.printer || !frame.job_id) return;
    const mark = `${frame.job_id}:${FINISHED.includes(frame.state) ? "end" : "run"}`;
    if (frame.state === "queued" || this.ended.get(frame.printer) === mark) return;
    this.ended.set(frame.printer, mark);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.load(), 300);
  }
}
