/* Hydrogen dashboard: wires the page's parts to one hydrogen-protocol connection.
 *
 * Everything live comes over ONE WebSocket to this page's own origin, authenticated
 * by the session cookie (docs/protocol.md); files go over HTTP (/api/files) with the
 * same cookie. Frames update the page in place, keyed by printer, heater and file,
 * so a frame never takes away focus, a selection, a scroll position or an open
 * dialog. Text from printers and other clients only ever goes in as text.
 *
 *   hydrogen-client.js  the protocol client (no DOM; third-party pages use it too)
 *   printer-card.js     a printer's card: heaters.js, temperature-chart.js, job-panel.js, terminal.js
 *   host-panel.js  files-panel.js  history-panel.js  notifications.js  confirm-dialog.js
 *   emergency-stop.js  appkey-requests.js (apps asking for a key)
 *   dom.js  format.js   in-place rendering helpers, formatting for people
 */

import { APPKEY_TOPIC, AppKeyRequests } from "./appkey-requests.js";
import { confirmAction } from "./confirm-dialog.js";
import { $, placeInOrder, setHidden, setText } from "./dom.js";
import { emergencyStop } from "./emergency-stop.js";
import { FilesPanel } from "./files-panel.js";
import { HistoryPanel } from "./history-panel.js";
import { NBSP, fmt } from "./format.js";
import { HostPanel } from "./host-panel.js";
import { HydrogenClient } from "./hydrogen-client.js";
import { Notifications, toast } from "./notifications.js";
import { PrinterCard } from "./printer-card.js";

const BASE_TOPICS = [
  "notifications", "printer/+/state", "printer/+/temperature", "printer/+/job", APPKEY_TOPIC,
];

const app = {
  role: document.body.dataset.role || "monitor",
  features: new Set(),
  cards: new Map(),
  printerOrder: [],
  connected: false,
};
const ROLES = ["monitor", "control", "admin"];
const canControl = () => app.role === "control" || app.role === "admin";
const printerNames = () => (app.printerOrder.length ? app.printerOrder : [...app.cards.keys()]);

function setRole(role) {
  app.role = ROLES.includes(role) ? role : "monitor";
  if (document.body.dataset.role !== app.role) document.body.dataset.role = app.role;
  setText($("role-badge"), app.role === "monitor" ? "read-only" : app.role);
}

/** Who this page acts as: the key's name, and the printers it is limited to, if any. */
function setWho(name, printers) {
  const scope = Array.isArray(printers) ? ` (${printers.join(", ") || "no printers"})` : "";
  setText($("who"), name ? `${name}${scope}` : "");
  $("who").title = Array.isArray(printers)
    ? `Signed in as ${name}, limited to: ${printers.join(", ") || "no printers"}`
    : `Signed in as ${name}`;
}

function setConn(state, text) {
  const button = $("conn");
  if (button.dataset.state !== state) button.dataset.state = state;
  setText($("conn-text"), text);
  button.disabled = state === "connected";
}

/** A refused handshake looks like a network error: ask HTTP whether the session ended. */
async function checkSession() {
  try {
    const response = await fetch("/api/system/info", { cache: "no-store" });
    if (response.status === 401) location.assign("/login");
  } catch (err) {
    /* the gateway is unreachable: keep retrying */
  }
}

let countdown = null;
function onConnectionState(state, detail) {
  clearInterval(countdown);
  if (state === "connecting") {
    setConn("connecting", detail.attempt ? "Reconnecting…" : "Connecting…");
  } else if (state === "offline") {
    app.connected = false;
    const tick = () => {
      const seconds = Math.max(1, Math.ceil((detail.retryAt - Date.now()) / 1000));
      setConn("offline", `Offline · retry in ${seconds}${NBSP}s`);
    };
    tick();
    countdown = setInterval(tick, 1000);
    if (!detail.opened) checkSession();
  }
}

const client = new HydrogenClient({ topics: BASE_TOPICS, onFrame, onState: onConnectionState });
const ctx = {
  client,
  canControl,
  confirm: confirmAction,
  emergencyStop: (names) => emergencyStop(client, names),
};
const host = new HostPanel();
const notifications = new Notifications();
const files = new FilesPanel({ ...ctx, printers: printerNames, onUnauthorized: checkSession });
const history = new HistoryPanel(client);
const appkeys = new AppKeyRequests(client);

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
    case "job":
      if (frame.printer) card(frame.printer, true)?.job(frame);
      history.job(frame);
      break;
    case "jobs":
      for (const job of frame.jobs || []) if (job && job.printer) card(job.printer, true)?.job(job);
      break;
    case "notification": notifications.add(frame); break;
    case "appkey_request": if (canControl()) appkeys.frame(frame); break;
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
  setWho(typeof frame.name === "string" ? frame.name : "", frame.printers);
  app.features = new Set(Array.isArray(frame.features) ? frame.features : []);
  setConn("connected", "Connected");
  if (app.features.has("jobs")) client.request({ type: "jobs" }).catch(() => {});
  files.load();
  history.load();
  if (canControl() && app.features.has("appkey_requests")) appkeys.load();
}

function card(name, create = false) {
  if (typeof name !== "string") return null;
  let c = app.cards.get(name);
  if (!c && create) {
    c = new PrinterCard(name, ctx);
    app.cards.set(name, c);
    $("printer-list").append(c.root);
    setHidden($("no-printers"), true);
    files.refreshPrinters();
  }
  return c || null;
}

/** Cards follow the status frame's printers: new ones added, gone ones removed, none moved needlessly. */
function syncPrinters(summaries) {
  const names = summaries.map((s) => s && s.printer).filter((n) => typeof n === "string");
  for (const summary of summaries) {
    if (summary && typeof summary.printer === "string") card(summary.printer, true).updateSummary(summary);
  }
  let changed = false;
  for (const [name, c] of app.cards) {
    if (!names.includes(name)) {
      c.destroy();
      app.cards.delete(name);
      changed = true;
    }
  }
  placeInOrder($("printer-list"), names.map((name) => app.cards.get(name).root)); // configuration order
  if (changed || names.join("/") !== app.printerOrder.join("/")) {
    app.printerOrder = names;
    files.refreshPrinters();
  }
  setHidden($("no-printers"), names.length > 0);
  setHidden($("estop-all"), names.length === 0); // nothing to stop
}

function start() {
  setRole(app.role);
  $("estop-all").addEventListener("click", () => ctx.emergencyStop(printerNames()));
  $("conn").addEventListener("click", () => client.reconnectNow());
  window.addEventListener("online", () => client.reconnectNow());
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") client.reconnectNow();
  });
  client.connect();
  // For people debugging in the console, and for the browser tests.
  window.hydrogenDashboard = { app, conn: client, fmt, history, appkeys };
}

start(); // a module runs after the document is parsed
