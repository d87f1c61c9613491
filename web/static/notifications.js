/* Toasts, and the notifications list (a repeated event is counted, not listed again). */

import { $, el, setHidden, setText } from "./dom.js";
import { fmt } from "./format.js";

const NOTIFICATIONS_KEPT = 100;
const TOASTS_SHOWN = 4;
const LEVELS = ["info", "warning", "error", "critical"];

export function toast(message, level = "info") {
  const container = $("toasts");
  const node = el("div", "toast");
  node.dataset.level = level;
  if (level === "error" || level === "critical") node.setAttribute("role", "alert");
  const close = el("button", "ghost", "×");
  close.type = "button";
  close.setAttribute("aria-label", "Dismiss");
  close.addEventListener("click", () => node.remove());
  node.append(el("span", "toast-text", message), close);
  container.append(node);
  while (container.childElementCount > TOASTS_SHOWN) container.firstElementChild.remove();
  setTimeout(() => node.remove(), level === "critical" ? 20000 : 8000);
}

export class Notifications {
  constructor() {
    this.list = $("notification-list");
    this.recent = new Map();
  }

  add(frame) {
    const level = LEVELS.includes(frame.level) ? frame.level : "info";
    const message = String(frame.message || frame.event || "notification");
    const key = `${level}|${message}`;
    const now = Date.now();
    const when = fmt.time(frame.time) || fmt.time(now / 1000);
    const seen = this.recent.get(key);
    if (seen && now - seen.at < 60000 && seen.item.isConnected) {
      // The same event again (a device that keeps failing to open): count, do not toast.
      seen.count += 1;
      seen.at = now;
      setText(seen.counter, `×${seen.count}`);
      setText(seen.time, when);
      if (this.list.firstElementChild !== seen.item) this.list.prepend(seen.item);
      return;
    }
    const item = el("li", "notification");
    item.dataset.level = level;
    const time = el("span", "notification-time", when);
    const counter = el("span", "notification-count", "");
    item.append(time, el("span", "notification-text", message), counter);
    this.list.prepend(item);
    while (this.list.childElementCount > NOTIFICATIONS_KEPT) this.list.lastElementChild.remove();
    setHidden($("notifications-empty"), true);
    this.recent.set(key, { item, counter, time, count: 1, at: now });
    if (this.recent.size > 200) this.recent.clear();
    toast(message, level);
  }
}
