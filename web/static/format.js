/* Numbers, sizes, durations and times for people. */

export const NBSP = "\u00a0";

/** Seconds since the epoch (temperature frames) or an ISO string: a Date, or null. */
export function toDate(t) {
  if (t == null) return null;
  const date = typeof t === "number" ? new Date(t * 1000) : new Date(t);
  return isNaN(date.getTime()) ? null : date;
}

export function toSeconds(t) {
  const date = toDate(t);
  return date ? date.getTime() / 1000 : null;
}

export const fmt = {
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
