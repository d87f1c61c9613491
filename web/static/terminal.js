/* A printer's serial terminal: the log, the command line and its history.
 *
 * The log follows new lines only while the reader is at its bottom. Someone who
 * scrolled up to read stays where they are: new lines wait (the newest 500) until
 * they come back down, and a "new lines" button counts them and offers the way back.
 */

import { el, setHidden, setText } from "./dom.js";
import { fmt } from "./format.js";

export const COMMAND_TIMEOUT_MS = 700000; // G28, M109... may take minutes (long_command_timeout)
const TERMINAL_LINES = 500;
const HISTORY_KEPT = 50;
/** Pixels from the bottom that still count as "at the bottom". */
const BOTTOM_SLACK = 2;
const ARROWS = { send: "→", recv: "←", info: "•", error: "!" };
const SPOKEN = { send: "sent: ", recv: "received: ", error: "error: " };

export function isTemperatureLine(direction, line) {
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

export class Terminal {
  /**
   * @param {HTMLDetailsElement} details the card's `.terminal`
   * @param {{printer: string, idPrefix: string, client: object, canControl: () => boolean}} options
   */
  constructor(details, { printer, idPrefix, client, canControl }) {
    this.details = details;
    this.printer = printer;
    this.client = client;
    this.log = details.querySelector(".term-log");
    this.more = details.querySelector(".term-more");
    this.input = details.querySelector(".term-input");
    this.hideTemps = details.querySelector(".term-hide-temps");
    this.topic = `printer/${printer}/serial`;
    this.history = loadHistory(printer);
    this.historyIndex = this.history.length;
    this.draft = "";
    this.queue = [];
    this.flushing = 0;
    this.follow = true;
    this.unseen = 0;

    const inputId = `${idPrefix}-command`;
    this.input.id = inputId;
    const label = details.querySelector(".term-label");
    label.htmlFor = inputId;
    label.textContent = "G-code";
    this.input.setAttribute("aria-describedby", `${idPrefix}-term-help`);
    const help = el("span", "visually-hidden", "Up and down arrows recall earlier commands.");
    help.id = `${idPrefix}-term-help`;
    details.querySelector(".term-form").append(help);
    this.log.setAttribute("aria-label", `Serial console of ${printer}`);

    details.addEventListener("toggle", () => {
      if (details.open) {
        client.subscribe(this.topic);
        this.toBottom();
        if (canControl()) this.input.focus();
      } else {
        client.unsubscribe(this.topic);
      }
    });
    details.querySelector(".term-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.send(this.input.value);
    });
    this.input.addEventListener("keydown", (event) => this.recall(event));
    this.watchScrolling();
    this.more.addEventListener("click", () => {
      this.toBottom();
      this.log.focus({ preventScroll: true });
    });
  }

  get open() { return this.details.open; }

  /** Who moves the log: the reader (stop following) or us (keep following). */
  watchScrolling() {
    const log = this.log;
    // Stop at once when the reader starts to go up, before the scroll event says so.
    const away = () => {
      if (log.scrollTop > 0) this.follow = false;
    };
    log.addEventListener("wheel", (event) => { if (event.deltaY < 0) away(); }, { passive: true });
    log.addEventListener("touchstart", away, { passive: true });
    log.addEventListener("keydown", (event) => {
      if (["ArrowUp", "PageUp", "Home"].includes(event.key)) away();
    });
    log.addEventListener("scroll", () => {
      const follow = this.distanceFromBottom() <= BOTTOM_SLACK;
      if (follow === this.follow) return;
      this.follow = follow;
      if (follow) this.schedule(); // back at the bottom: what waited comes in
    }, { passive: true });
  }

  distanceFromBottom() {
    return this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight;
  }

  /** Follow again: show what waited and scroll to the newest line. */
  toBottom() {
    this.follow = true;
    this.unseen = 0;
    setHidden(this.more, true);
    if (this.queue.length) {
      this.flush(); // calls back here with an empty queue
      return;
    }
    this.log.scrollTop = this.log.scrollHeight;
  }

  recall(event) {
    const input = this.input;
    if (event.key === "ArrowUp") {
      if (this.historyIndex === this.history.length) this.draft = input.value;
      if (this.historyIndex > 0) {
        this.historyIndex -= 1;
        input.value = this.history[this.historyIndex];
      }
      event.preventDefault();
    } else if (event.key === "ArrowDown") {
      if (this.historyIndex < this.history.length) {
        this.historyIndex += 1;
        input.value = this.historyIndex === this.history.length ? this.draft : this.history[this.historyIndex];
      }
      event.preventDefault();
    }
  }

  /**
   * Queue a line. Lines reach the page once per animation frame however fast they
   * come, and only while the reader follows: someone reading further up sees
   * nothing move, and a button counts what is waiting below.
   */
  line(kind, text) {
    this.queue.push([kind, String(text)]);
    if (this.queue.length > TERMINAL_LINES) this.queue.splice(0, this.queue.length - TERMINAL_LINES);
    if (!this.follow) this.unseen += 1;
    this.schedule();
  }

  schedule() {
    if (!this.flushing) this.flushing = requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.flushing = 0;
    if (!this.follow) {
      if (this.unseen) {
        setText(this.more, `↓ ${fmt.count(this.unseen)} new line${this.unseen === 1 ? "" : "s"}`);
        setHidden(this.more, false);
      }
      return;
    }
    const lines = this.queue;
    this.queue = [];
    if (!lines.length) return;
    const log = this.log;
    log.append(...lines.map(([kind, text]) => {
      const row = el("div", `term-line ${kind}`);
      const dir = el("span", "term-dir", ARROWS[kind] || "•");
      dir.setAttribute("aria-hidden", "true");
      row.append(dir, el("span", "visually-hidden", SPOKEN[kind] || ""), el("span", "term-text", text));
      return row;
    }));
    for (let excess = log.childElementCount - TERMINAL_LINES; excess > 0; excess -= 1) {
      log.firstElementChild.remove();
    }
    this.toBottom();
  }

  note(text) {
    if (this.open) this.line("info", text);
  }

  serial(frame) {
    if (!this.open) return;
    const line = String(frame.line == null ? "" : frame.line);
    if (this.hideTemps.checked && isTemperatureLine(frame.direction, line)) return;
    this.line(frame.direction === "send" ? "send" : "recv", line);
  }

  async send(raw) {
    const gcode = raw.trim();
    if (!gcode) return;
    if (this.history[this.history.length - 1] !== gcode) {
      this.history.push(gcode);
      if (this.history.length > HISTORY_KEPT) this.history.splice(0, this.history.length - HISTORY_KEPT);
      saveHistory(this.printer, this.history);
    }
    this.historyIndex = this.history.length;
    this.draft = "";
    this.input.value = "";
    this.toBottom(); // whoever sends a command wants to see its answer
    const echoed = this.client.topics.has(this.topic);
    const first = gcode.split("\n")[0];
    try {
      const reply = await this.client.request({ type: "command", printer: this.printer, gcode }, COMMAND_TIMEOUT_MS);
      if (!echoed) {
        this.line("send", gcode);
        for (const line of reply.response || []) this.line("recv", String(line));
      }
      const ms = Math.round((reply.duration_seconds || 0) * 1000);
      this.line("info", `${first}: done in ${ms >= 1000 ? fmt.duration(ms / 1000) : `${ms} ms`}`);
    } catch (err) {
      this.line("error", `${first}: ${err.message}`);
    }
  }
}
