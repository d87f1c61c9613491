/* Keys and audit: an admin's page. Lists the keys (never a secret), creates one and
 * shows its secret once with a copy button, revokes and rotates; browses the audit
 * log with filters and shows new records as they happen.
 *
 * The same protocol client as the dashboard, over the same session cookie: `keys`,
 * `key_add`, `key_revoke`, `key_rotate`, `audit_query` and the `audit` topic
 * (docs/protocol.md §12.5, §13). Whatever a record or a key name holds goes in as text.
 */

import { confirmAction } from "./confirm-dialog.js";
import { $, el, setHidden, setText } from "./dom.js";
import { fmt, toDate } from "./format.js";
import { HydrogenClient } from "./hydrogen-client.js";
import { toast } from "./notifications.js";

const page = {
  role: document.body.dataset.role || "monitor",
  name: "",
  printers: [],
  filters: {},
  nextBefore: null,
  seqs: new Set(),
  names: new Set(),
};

const client = new HydrogenClient({ topics: ["audit"], onFrame, onState });

function status(text, error = false) {
  const node = $("admin-status");
  setText(node, text);
  node.classList.toggle("form-error", error);
}

function onState(state) {
  if (state === "connecting") setText($("conn-text"), "Connecting…");
  if (state === "offline") setText($("conn-text"), "Offline, retrying…");
}

function onFrame(frame) {
  switch (frame.type) {
    case "welcome": onWelcome(frame); break;
    case "status": if (Array.isArray(frame.printers)) setPrinters(frame.printers.map((p) => p && p.printer)); break;
    case "audit": liveRecord(frame); break;
    default: break;
  }
}

function onWelcome(frame) {
  setText($("conn-text"), "Connected");
  page.role = ["monitor", "control", "admin"].includes(frame.role) ? frame.role : "monitor";
  document.body.dataset.role = page.role;
  setText($("role-badge"), page.role === "monitor" ? "read-only" : page.role);
  page.name = typeof frame.name === "string" ? frame.name : "";
  setText($("who"), page.name);
  const admin = page.role === "admin";
  setHidden($("not-admin"), admin);
  setText($("not-admin-role"), page.role);
  if (!admin) return;
  loadKeys();
  search();
}

// -- printers (the scope choices and the audit filter) -------------------------------------

function setPrinters(names) {
  const wanted = names.filter((n) => typeof n === "string");
  if (wanted.join("/") === page.printers.join("/")) return;
  page.printers = wanted;
  const box = $("scope-printers");
  const checked = new Set([...box.querySelectorAll("input:checked")].map((i) => i.value));
  box.replaceChildren(
    ...wanted.map((name) => {
      const label = el("label", "scope-printer");
      const input = document.createElement("input");
      input.type = "checkbox";
      input.name = "printer";
      input.value = name;
      input.checked = checked.has(name);
      input.addEventListener("change", () => { $("key-form").scope.value = "some"; });
      label.append(input, ` ${name}`);
      return label;
    }),
  );
  const select = $("audit-printer");
  const current = select.value;
  select.replaceChildren(new Option("any", ""), ...wanted.map((name) => new Option(name, name)));
  select.value = wanted.includes(current) ? current : "";
}

// -- keys ---------------------------------------------------------------------------------

async function loadKeys() {
  let reply;
  try {
    reply = await client.request({ type: "keys" });
  } catch (err) {
    status(`Keys: ${err.message}`, true);
    return;
  }
  const keys = Array.isArray(reply.keys) ? reply.keys : [];
  $("keys-body").replaceChildren(...keys.map(keyRow));
  for (const key of keys) page.names.add(String(key.name));
  $("audit-names").replaceChildren(...[...page.names].sort().map((n) => new Option(n)));
}

function keyRow(key) {
  const row = el("tr", "key-row");
  row.dataset.key = String(key.name);
  const printers = Array.isArray(key.printers) ? key.printers.join(", ") || "none" : "all";
  const created = key.created_at ? fmt.ago(key.created_at) : "—";
  const rotated = key.rotated_at ? ` (rotated ${fmt.ago(key.rotated_at)})` : "";
  row.append(
    el("td", "key-name", key.name),
    el("td", "key-role", key.role),
    el("td", "key-printers", printers),
    el("td", "key-source", key.source === "config" ? "configuration" : "stored"),
    el("td", "key-created small", `${created}${rotated}`),
  );
  const actions = el("td", "key-actions");
  if (key.source !== "config") {
    const rotate = el("button", "key-rotate", "Rotate");
    rotate.type = "button";
    rotate.addEventListener("click", () => rotateKey(String(key.name)));
    const revoke = el("button", "key-revoke danger", "Revoke");
    revoke.type = "button";
    revoke.addEventListener("click", () => revokeKey(String(key.name)));
    actions.append(rotate, " ", revoke);
  }
  row.append(actions);
  return row;
}

function showSecret(title, secret) {
  setText($("secret-title"), title);
  setText($("secret-value"), secret);
  setText($("secret-copied"), "");
  setHidden($("secret-box"), false);
  $("secret-copy").focus();
}

function hideSecret() {
  setText($("secret-value"), ""); // gone from the page, not only hidden
  setHidden($("secret-box"), true);
}

async function copySecret() {
  const text = $("secret-value").textContent;
  try {
    await navigator.clipboard.writeText(text);
  } catch (err) {
    // No clipboard API (plain http on a LAN address): copy the selected text instead.
    const range = document.createRange();
    range.selectNodeContents($("secret-value"));
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    if (!document.execCommand("copy")) {
      setText($("secret-copied"), "Selected: press Ctrl+C (⌘C) to copy.");
      return;
    }
  }
  setText($("secret-copied"), "Copied.");
}

async function createKey(event) {
  event.preventDefault();
  const form = $("key-form");
  const name = form.elements.name.value.trim();
  const role = form.elements.role.value;
  const frame = { type: "key_add", name, role };
  if (form.elements.scope.value === "some") {
    frame.printers = [...form.querySelectorAll('input[name="printer"]:checked')].map((i) => i.value);
  }
  const button = $("key-create");
  button.disabled = true;
  try {
    const reply = await client.request(frame);
    showSecret(`The key “${name}” was created.`, reply.secret);
    form.elements.name.value = "";
    status(`Key ${name} created (${role}).`);
    loadKeys();
  } catch (err) {
    status(`Could not create ${name}: ${err.message}`, true);
  } finally {
    button.disabled = false;
  }
}

async function rotateKey(name) {
  const sure = await confirmAction(
    `Rotate ${name}?`,
    "A new secret replaces the old one at once: everything using the old one is disconnected and must be given the new one.",
    "Rotate",
  );
  if (!sure) return;
  try {
    const reply = await client.request({ type: "key_rotate", name });
    showSecret(`The new secret of “${name}”.`, reply.secret);
    status(`Key ${name} rotated; ${reply.closed_connections || 0} connection(s) closed.`);
    loadKeys();
  } catch (err) {
    status(`Could not rotate ${name}: ${err.message}`, true);
  }
}

async function revokeKey(name) {
  const sure = await confirmAction(
    `Revoke ${name}?`,
    "The key stops working at once and everything it opened is disconnected. This cannot be undone.",
    "Revoke",
  );
  if (!sure) return;
  try {
    const reply = await client.request({ type: "key_revoke", name });
    status(`Key ${name} revoked; ${reply.closed_connections || 0} connection(s) closed.`);
    loadKeys();
  } catch (err) {
    status(`Could not revoke ${name}: ${err.message}`, true);
  }
}

// -- the audit log -----------------------------------------------------------------------

function readFilters() {
  const filters = {};
  const identity = $("audit-identity").value.trim();
  if (identity) filters.identity = identity;
  if ($("audit-printer").value) filters.printer = $("audit-printer").value;
  const since = $("audit-since").value;
  if (since) {
    const date = new Date(since); // local time, as the person typed it
    if (!isNaN(date.getTime())) filters.since = date.getTime() / 1000;
  }
  filters.limit = Number($("audit-limit").value) || 100;
  return filters;
}

async function search(event) {
  if (event) event.preventDefault();
  page.filters = readFilters();
  page.seqs.clear();
  $("audit-body").replaceChildren();
  await fetchRecords(page.filters);
}

async function fetchRecords(query) {
  let reply;
  try {
    reply = await client.request({ type: "audit_query", ...query });
  } catch (err) {
    status(`Audit log: ${err.message}`, true);
    return;
  }
  const records = Array.isArray(reply.records) ? reply.records : [];
  const rows = records.filter((r) => !page.seqs.has(r.seq)).map(auditRow);
  $("audit-body").append(...rows);
  page.nextBefore = reply.next_before ?? null;
  setHidden($("audit-older"), page.nextBefore == null);
  setHidden($("audit-empty"), $("audit-body").childElementCount > 0);
}

function auditRow(record) {
  page.seqs.add(record.seq);
  if (record.identity) page.names.add(String(record.identity));
  const row = el("tr", "audit-row");
  row.dataset.seq = String(record.seq);
  row.dataset.outcome = record.outcome === "ok" ? "ok" : "refused";
  const when = toDate(record.time);
  const time = el("td", "audit-time small", when ? `${when.toLocaleDateString()} ${fmt.time(record.time)}` : "");
  row.append(
    time,
    el("td", "audit-who", record.identity || "(nobody)"),
    el("td", "audit-role small", record.role || "—"),
    el("td", "audit-action", record.action),
    el("td", "audit-printer", record.printer || ""),
    el("td", "audit-target", record.target || ""),
    el("td", "audit-outcome", record.outcome),
    el("td", "audit-via small", record.transport),
    el("td", "audit-remote small", record.remote || ""),
  );
  return row;
}

function matches(record, filters) {
  if (filters.identity && record.identity !== filters.identity) return false;
  if (filters.printer && record.printer !== filters.printer) return false;
  if (filters.since && record.time < filters.since) return false;
  return true;
}

function liveRecord(frame) {
  if (!$("audit-live").checked || page.seqs.has(frame.seq) || !matches(frame, page.filters)) return;
  $("audit-body").prepend(auditRow(frame));
  setHidden($("audit-empty"), true);
  if (frame.action && frame.action.startsWith("key_") && frame.outcome === "ok") loadKeys();
}

function start() {
  $("key-form").addEventListener("submit", createKey);
  $("secret-copy").addEventListener("click", copySecret);
  $("secret-done").addEventListener("click", hideSecret);
  $("audit-form").addEventListener("submit", search);
  $("audit-older").addEventListener("click", () => {
    if (page.nextBefore != null) fetchRecords({ ...page.filters, before: page.nextBefore });
  });
  window.addEventListener("pagehide", hideSecret);
  client.connect();
  window.hydrogenAdmin = { page, conn: client, toast };
}

start();
