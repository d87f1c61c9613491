/* Apps asking for a key: "Home Assistant on 192.168.1.20 asks for access to mk3".
 *
 * Home Assistant, Cura and phone apps ask through OctoPrint's application-key
 * workflow (docs/octoprint.md); a person who may control that printer approves or
 * denies it here. The list comes from `appkey_requests` when the page connects, and
 * changes with the `appkey_request` frames of the `printer/+/appkey` topic (a new
 * request, or one approved, denied or expired anywhere). Approving makes a control
 * key for that one printer, which the app collects by itself: no one copies a key.
 * The app's and user's names are the asker's words: they only ever go in as text.
 */

import { $, el, setHidden, setText } from "./dom.js";
import { fmt, toDate } from "./format.js";
import { toast } from "./notifications.js";

export const APPKEY_TOPIC = "printer/+/appkey";

export class AppKeyRequests {
  constructor(client) {
    this.client = client;
    this.panel = $("appkeys-panel");
    this.list = $("appkeys-list");
    this.items = new Map(); // handle -> { node, expiry }
  }

  /** On every (re)connection: what waits now replaces what the page had. */
  async load() {
    let reply;
    try {
      reply = await this.client.request({ type: "appkey_requests" });
    } catch (err) {
      return; // a monitor, or the gateway has no OctoPrint API: nothing to decide here
    }
    const waiting = Array.isArray(reply.requests) ? reply.requests : [];
    const handles = new Set(waiting.map((r) => r && r.appkey));
    for (const handle of [...this.items.keys()]) if (!handles.has(handle)) this.remove(handle);
    for (const request of waiting) this.show(request);
  }

  /** An `appkey_request` frame. */
  frame(frame) {
    if (typeof frame.appkey !== "string") return;
    if (frame.state === "waiting") {
      this.show(frame);
      return;
    }
    const shown = this.items.has(frame.appkey);
    this.remove(frame.appkey);
    if (!shown) return;
    const by = typeof frame.by === "string" && frame.by ? ` by ${frame.by}` : "";
    if (frame.state === "approved") toast(`${frame.app} may now use ${frame.printer}${by}`, "info");
    else if (frame.state === "denied") toast(`${frame.app}'s request was denied${by}`, "info");
  }

  show(request) {
    if (!request || typeof request.appkey !== "string" || this.items.has(request.appkey)) return;
    const node = el("li", "appkey-request");
    node.id = `appkey-${request.appkey.replace(/[^A-Za-z0-9_-]/g, "_")}`;
    const text = el("p", "appkey-text");
    text.append(
      el("strong", "appkey-app", request.app),
      ` on ${request.remote} asks for access to `,
      el("strong", "appkey-printer", request.printer),
    );
    const detail = el("p", "small muted");
    const when = fmt.time(request.asked_at);
    setText(detail, [request.user ? `as “${request.user}”` : "", when ? `asked at ${when}` : ""]
      .filter(Boolean).join(" · "));
    const approve = el("button", "primary appkey-approve", "Approve");
    approve.type = "button";
    approve.setAttribute("aria-label", `Approve ${request.app} for ${request.printer}`);
    const deny = el("button", "appkey-deny", "Deny");
    deny.type = "button";
    deny.setAttribute("aria-label", `Deny ${request.app}`);
    const actions = el("div", "appkey-actions");
    actions.append(approve, deny);
    node.append(text, detail, actions);
    approve.addEventListener("click", () => this.decide(request, true, [approve, deny]));
    deny.addEventListener("click", () => this.decide(request, false, [approve, deny]));
    this.list.append(node);
    const expires = toDate(request.expires_at);
    const expiry = expires
      ? setTimeout(() => this.remove(request.appkey), Math.max(0, expires.getTime() - Date.now()))
      : null;
    this.items.set(request.appkey, { node, expiry });
    setHidden(this.panel, false);
    if (location.hash === `#${node.id}`) {
      node.scrollIntoView({ block: "center" });
      approve.focus();
    }
  }

  remove(handle) {
    const item = this.items.get(handle);
    if (!item) return;
    clearTimeout(item.expiry);
    item.node.remove();
    this.items.delete(handle);
    setHidden(this.panel, this.items.size === 0);
  }

  async decide(request, approve, buttons) {
    for (const b of buttons) b.disabled = true;
    try {
      const reply = await this.client.request({ type: "appkey_decide", appkey: request.appkey, approve });
      this.remove(request.appkey);
      toast(approve
        ? `${request.app} may now use ${request.printer} (key ${reply.key})`
        : `${request.app}'s request was denied`, "info");
    } catch (err) {
      for (const b of buttons) b.disabled = false;
      const message = err && err.message ? err.message : String(err);
      toast(`Could not ${approve ? "approve" : "deny"} ${request.app}: ${message}`, "warning");
      if (err && err.code === "not_found") this.remove(request.appkey);
    }
  }
}
