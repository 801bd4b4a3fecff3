// One WebSocket to /v1/ws that reconnects by itself.
//
// The browser cannot set an Authorization header on a WebSocket, so the first frame is
// {"type": "auth", "token"}. The server answers "ready"; only then is the connection
// "connected", and the owner resubscribes to its threads (with `after` = the last seq it
// has seen, so nothing is lost or repeated). Every close but a bad token (4401) is followed
// by a reconnect with exponential backoff and jitter. An application-level ping every
// PING_EVERY_MS notices a half-open socket that the browser would otherwise keep forever.

const BACKOFF_MIN_MS = 250;
const BACKOFF_MAX_MS = 10_000;
const PING_EVERY_MS = 20_000;
const SILENCE_LIMIT_MS = 45_000;

export const CLOSE_UNAUTHORIZED = 4401;
export const CLOSE_TOO_MANY = 4429;

export class Connection {
  /**
   * @param {string} url  ws:// or wss:// URL of /v1/ws
   * @param {string} token
   * @param {{onFrame(frame), onReady(frame), onState(state, detail), onUnauthorized()}} handlers
   */
  constructor(url, token, handlers) {
    this.url = url;
    this.token = token;
    this.handlers = handlers;
    this.ws = null;
    this.state = "offline";
    this.attempt = 0;
    this.stopped = true;
    this.retryTimer = null;
    this.pingTimer = null;
    this.lastHeard = 0;
    this.nextRef = 1;
    this._onOnline = () => this._reconnectNow();
  }

  start() {
    this.stopped = false;
    window.addEventListener("online", this._onOnline);
    this._open();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this._onOnline);
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(1000, "signed out");
      } catch {
        // already closed
      }
    }
    this._setState("offline");
  }

  get connected() {
    return this.state === "connected";
  }

  /** A fresh `ref` for a frame, echoed by the server in its answer. */
  ref() {
    return `r${this.nextRef++}`;
  }

  /** Send a frame if connected; returns whether it was handed to the socket. */
  send(frame) {
    if (!this.connected || !this.ws) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  _setState(state, detail = "") {
    this.state = state;
    this.handlers.onState?.(state, detail);
  }

  _open() {
    if (this.stopped) return;
    this._setState(this.attempt === 0 ? "connecting" : "reconnecting");
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this._scheduleReconnect("could not open a socket");
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: "auth", token: this.token }));
    };
    ws.onmessage = (message) => {
      if (ws !== this.ws) return;
      this.lastHeard = Date.now();
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch {
        return;
      }
      if (!frame || typeof frame !== "object") return;
      if (frame.type === "ready") {
        this.attempt = 0;
        this._startPings();
        this._setState("connected");
        this.handlers.onReady?.(frame);
        return;
      }
      this.handlers.onFrame?.(frame);
    };
    ws.onclose = (event) => {
      if (ws !== this.ws) return;
      this.ws = null;
      clearInterval(this.pingTimer);
      if (this.stopped) return;
      if (event.code === CLOSE_UNAUTHORIZED) {
        this.stopped = true;
        this._setState("offline", "token not accepted");
        this.handlers.onUnauthorized?.();
        return;
      }
      const why =
        event.code === CLOSE_TOO_MANY ? "too many open connections for this user" : "";
      this._scheduleReconnect(why);
    };
    ws.onerror = () => {
      // A close event always follows; reconnecting is handled there.
    };
  }

  _scheduleReconnect(detail) {
    clearTimeout(this.retryTimer);
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    const delay = Math.round(base / 2 + Math.random() * (base / 2));
    this.attempt += 1;
    this._setState("reconnecting", detail);
    this.retryTimer = setTimeout(() => this._open(), delay);
  }

  _reconnectNow() {
    if (this.stopped || this.ws) return;
    clearTimeout(this.retryTimer);
    this._open();
  }

  _startPings() {
    clearInterval(this.pingTimer);
    this.lastHeard = Date.now();
    this.pingTimer = setInterval(() => {
      const ws = this.ws;
      if (!ws) return;
      if (Date.now() - this.lastHeard > SILENCE_LIMIT_MS) {
        // Half-open: don't wait for a closing handshake that may never come.
        this.ws = null;
        ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
        ws.close();
        clearInterval(this.pingTimer);
        this._scheduleReconnect("the server stopped answering");
        return;
      }
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "ping" }));
    }, PING_EVERY_MS);
  }
}
