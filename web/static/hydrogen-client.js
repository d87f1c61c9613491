/* hydrogen-protocol client: one WebSocket, requests with ids, subscriptions, reconnects.
 *
 * No DOM and no dashboard in here: a third-party page can use it as it is.
 *
 *   import { HydrogenClient } from "/static/hydrogen-client.js";
 *   const client = new HydrogenClient({ topics: ["status"], onFrame: (f) => console.log(f) });
 *   client.connect();
 *   const reply = await client.request({ type: "command", printer: "sim", gcode: "M105" });
 *
 * The page's session cookie authenticates the upgrade on its own origin; another page
 * passes `url: "wss://gateway:5001/?key=..."`. See docs/protocol.md.
 */

export const SUBPROTOCOL = "hydrogen-protocol";
export const REQUEST_TIMEOUT_MS = 30000;
const RECONNECT_MIN_MS = 1000;
const RECONNECT_MAX_MS = 20000;
const STABLE_MS = 5000; // a connection open this long resets the backoff

/** The gateway answered a request with an `error` frame; `code` is its error code. */
export class RequestError extends Error {
  constructor(message, code, details) {
    super(message);
    this.name = "RequestError";
    this.code = code;
    this.details = details;
  }
}

function defaultUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/`;
}

export class HydrogenClient {
  /**
   * @param {object} options
   * @param {string} [options.url] WebSocket URL (default: this page's origin, path /)
   * @param {string[]} [options.topics] topics to subscribe to on every (re)connect
   * @param {(frame: object) => void} [options.onFrame] every frame, replies included
   * @param {(state: string, detail: object) => void} [options.onState]
   *   "connecting" | "open" | "offline" ({retryAt, attempt, opened})
   * @param {boolean} [options.reconnect] reconnect with backoff (default true)
   */
  constructor(options = {}) {
    this.url = options.url || null;
    this.onFrame = options.onFrame || (() => {});
    this.onState = options.onState || (() => {});
    this.autoReconnect = options.reconnect !== false;
    this.topics = new Set(options.topics || []);
    this.ws = null;
    this.seq = 0;
    this.pending = new Map();
    this.attempt = 0;
    this.timer = null;
    this.openedAt = 0;
    /** Frames received by type since the page loaded (for people debugging, and tests). */
    this.received = Object.create(null);
  }

  get open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  connect() {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) return;
    this.onState("connecting", { attempt: this.attempt });
    let ws;
    try {
      ws = new WebSocket(this.url || defaultUrl(), SUBPROTOCOL);
    } catch (err) {
      this.retry(false);
      return;
    }
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.openedAt = Date.now();
      // Subscriptions belong to the connection: ask again after every reconnect.
      if (this.topics.size) this.send({ type: "subscribe", topics: [...this.topics] });
      this.onState("open", { attempt: this.attempt });
    };
    ws.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (err) {
        return;
      }
      if (frame && typeof frame === "object" && !Array.isArray(frame)) this.dispatch(frame);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.failPending(new Error("the connection to the gateway was lost"));
      if (opened && Date.now() - this.openedAt >= STABLE_MS) this.attempt = 0;
      this.retry(opened);
    };
    ws.onerror = () => { /* a close event follows */ };
  }

  /** Reconnect with capped exponential backoff and jitter (half fixed, half random). */
  retry(opened) {
    const base = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** this.attempt);
    const delay = base / 2 + Math.random() * (base / 2);
    this.attempt += 1;
    const retryAt = this.autoReconnect ? Date.now() + delay : null;
    this.onState("offline", { retryAt, attempt: this.attempt, opened });
    if (this.autoReconnect) this.timer = setTimeout(() => this.connect(), delay);
  }

  /** Connect now instead of waiting for the backoff (a button, the network came back). */
  reconnectNow() {
    if (this.ws) return;
    this.connect();
  }

  close() {
    this.autoReconnect = false;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
  }

  send(frame) {
    if (!this.open) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /** Send a request; resolves with its reply frame, rejects with a RequestError or Error. */
  request(frame, timeoutMs = REQUEST_TIMEOUT_MS) {
    return new Promise((resolve, reject) => {
      if (!this.open) {
        reject(new Error("not connected to the gateway"));
        return;
      }
      this.seq += 1;
      const id = `c${this.seq}`;
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error("the gateway did not answer in time"));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.ws.send(JSON.stringify({ ...frame, id }));
    });
  }

  failPending(error) {
    for (const { reject, timer } of this.pending.values()) {
      clearTimeout(timer);
      reject(error);
    }
    this.pending.clear();
  }

  subscribe(topic) {
    if (this.topics.has(topic)) return;
    this.topics.add(topic);
    this.send({ type: "subscribe", topics: [topic] });
  }

  unsubscribe(topic) {
    if (!this.topics.delete(topic)) return;
    this.send({ type: "unsubscribe", topics: [topic] });
  }

  dispatch(frame) {
    const type = String(frame.type);
    this.received[type] = (this.received[type] || 0) + 1;
    if (frame.id !== undefined && this.pending.has(frame.id)) {
      const { resolve, reject, timer } = this.pending.get(frame.id);
      this.pending.delete(frame.id);
      clearTimeout(timer);
      if (frame.type === "error") {
        const error = frame.error || {};
        reject(new RequestError(error.message || "the request failed", error.code, error.details));
        return;
      }
      resolve(frame);
    }
    try {
      this.onFrame(frame);
    } catch (err) {
      console.error("hydrogen-client: a frame handler failed", frame.type, err);
    }
  }
}
