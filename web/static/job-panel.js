/* A printer's job section: state, file, progress, times, queue; pause, resume, cancel. */

import { setData, setHidden, setText } from "./dom.js";
import { fmt } from "./format.js";

export const JOB_LABELS = {
  idle: "Idle", queued: "Queued", printing: "Printing", paused: "Paused",
  completed: "Completed", cancelled: "Cancelled", failed: "Failed",
};
const ACTIVE = ["printing", "paused", "queued"];
const ACTIONS = [
  [".job-pause", "job_pause", "Pause the print?", "Pause", "The printer finishes the moves it has and waits."],
  [".job-resume", "job_resume", "Resume the print?", "Resume", "Printing continues where it stopped."],
  [".job-cancel", "job_cancel", "Cancel the print?", "Cancel job", "The job stops for good and cannot be resumed."],
];

/** "Started by alice · cancelled by bob": who acted on a job (names only, as text). */
export function whoText(job) {
  const parts = [];
  if (job.started_by) parts.push(`Started by ${job.started_by}`);
  if (job.cancelled_by) parts.push(`${parts.length ? "cancelled" : "Cancelled"} by ${job.cancelled_by}`);
  return parts.join(" · ");
}

export class JobPanel {
  /**
   * @param {HTMLElement} section the card's `.job`
   * @param {{printer: string, client: object, confirm: Function, status: Function, onJob: (frame: object) => void}} options
   */
  constructor(section, { printer, client, confirm, status, onJob }) {
    this.section = section;
    this.printer = printer;
    this.frame = null;
    this.onJob = onJob;
    const q = (selector) => section.querySelector(selector);
    this.nodes = {
      badge: q(".job-state"), file: q(".job-file"), who: q(".job-who"), progressRow: q(".job-progress-row"),
      times: q(".job-times"), progress: q(".job-progress"), percent: q(".job-percent"),
      elapsed: q(".job-elapsed"), eta: q(".job-eta"), lines: q(".job-lines"), reason: q(".job-reason"),
      queue: q(".job-queue"), pause: q(".job-pause"), resume: q(".job-resume"), cancel: q(".job-cancel"),
      actions: q(".job-actions"),
    };
    this.nodes.progress.setAttribute("aria-label", `Job progress on ${printer}`);
    for (const [selector, type, title, confirmLabel, detail] of ACTIONS) {
      const button = q(selector);
      button.addEventListener("click", async () => {
        const file = this.frame && this.frame.file ? ` (${this.frame.file})` : "";
        if (!(await confirm(title, `${printer}${file}: ${detail}`, confirmLabel))) return;
        button.disabled = true;
        try {
          const reply = await client.request({ type, printer });
          if (reply && reply.printer) onJob(reply);
          status(`${confirmLabel}: done.`);
        } catch (err) {
          status(`${confirmLabel}: ${err.message}`, true);
        } finally {
          button.disabled = false;
        }
      });
    }
  }

  get state() {
    return this.frame ? String(this.frame.state || "idle") : null;
  }

  show(frame) {
    this.frame = frame;
    const n = this.nodes;
    setHidden(this.section, false);
    const state = String(frame.state || "idle");
    setData(n.badge, "state", state);
    setText(n.badge, JOB_LABELS[state] || state);
    setText(n.file, frame.file || "No job");
    const who = whoText(frame);
    setText(n.who, who);
    setHidden(n.who, !who);
    const idle = state === "idle" || !frame.file;
    const progress = Math.max(0, Math.min(1, Number(frame.progress) || 0));
    setHidden(n.progressRow, idle);
    setHidden(n.times, idle);
    if (n.progress.value !== progress) n.progress.value = progress;
    setText(n.percent, fmt.pct(progress * 100));
    setText(n.elapsed, fmt.duration(frame.elapsed_seconds));
    setText(n.eta, frame.eta_seconds == null ? (state === "printing" ? "estimating…" : "—") : fmt.duration(frame.eta_seconds));
    setText(n.lines, frame.total_lines ? `${fmt.count(frame.lines_sent)} of ${fmt.count(frame.total_lines)}` : fmt.count(frame.lines_sent));
    setText(n.reason, frame.reason || "");
    setHidden(n.reason, !frame.reason);
    const queue = Array.isArray(frame.queue) ? frame.queue : [];
    setText(n.queue, queue.length ? `Next: ${queue.join(", ")}` : "");
    setHidden(n.queue, !queue.length);
    // Pause and resume take turns in one place: focus goes with them.
    const focused = document.activeElement;
    setHidden(n.pause, state !== "printing");
    setHidden(n.resume, state !== "paused");
    setHidden(n.cancel, !ACTIVE.includes(state));
    setHidden(n.actions, !ACTIVE.includes(state));
    if (focused === n.pause && n.pause.hidden && !n.resume.hidden) n.resume.focus();
    else if (focused === n.resume && n.resume.hidden && !n.pause.hidden) n.pause.focus();
  }
}
