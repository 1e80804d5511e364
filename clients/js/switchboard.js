// Switchboard browser SDK: a signaling client and a WebRTC mesh helper.
//
// One ES module, no dependencies, no build step. Types: switchboard.d.ts next
// to this file, checked against this file's JSDoc by `npm run typecheck`
// (package.json next to this file). API and examples: README.md next to this
// file. The wire protocol it speaks: docs/protocol.md in the Switchboard
// repository.

/** The SDK's version: the same as the server's (a test keeps them equal). */
export const VERSION = "0.1.0";

/** Relay message types the server forwards to a target peer. */
export const RELAY_TYPES = Object.freeze(
  /** @type {const} */ (["sdp", "ice-candidate", "offer", "answer", "candidate", "signal"]),
);
const RELAY = new Set(RELAY_TYPES);

/** Error codes the server sends (docs/protocol.md); the client adds its own (`CLIENT_ERROR_CODES`). */
export const ERROR_CODES = Object.freeze(
  /** @type {const} */ ([
    "malformed-json",
    "unknown-type",
    "missing-field",
    "invalid-field",
    "unknown-target",
    "no-shared-room",
    "not-in-room",
    "already-joined",
    "room-full",
    "too-many-rooms",
    "message-too-large",
    "binary-not-supported",
    "delivery-failed",
    "unauthorized",
    "forbidden",
    "rate-limited",
    "unexpected-message",
    "unavailable",
    "unknown-room",
  ]),
);

/**
 * The `from` of a broadcast sent by the app's backend through the server API
 * (`POST /api/v1/rooms/{room}/broadcast`). Reserved: no peer id is ever "server".
 */
export const SERVER_SENDER = "server";

/** Error codes the client itself rejects requests with. */
export const CLIENT_ERROR_CODES = Object.freeze(
  /** @type {const} */ (["timeout", "disconnected", "closed", "not-connected", "cancelled"]),
);

/** An error from the server (`code` is the protocol's error code) or from the client itself. */
export class SwitchboardError extends Error {
  /**
   * @param {string} code
   * @param {string} [message]
   * @param {object} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message || code);
    this.name = "SwitchboardError";
    this.code = code;
    Object.assign(this, extra);
  }
}

// ---------------------------------------------------------------------------
// A tiny typed event emitter.

class Emitter {
  #handlers = new Map();

  /**
   * Subscribe; returns a function that unsubscribes.
   * @param {string} type
   * @param {(event: any) => void} handler
   * @returns {() => void}
   */
  on(type, handler) {
    let set = this.#handlers.get(type);
    if (!set) this.#handlers.set(type, (set = new Set()));
    set.add(handler);
    return () => this.off(type, handler);
  }

  /**
   * @param {string} type
   * @param {(event: any) => void} handler
   */
  off(type, handler) {
    this.#handlers.get(type)?.delete(handler);
  }

  /**
   * The next event of `type` (for which `filter` returns true), as a promise.
   * @param {string} type
   * @param {((event: any) => boolean) | null} [filter]
   * @param {number} [timeoutMs]
   * @returns {Promise<any>}
   */
  once(type, filter, timeoutMs) {
    return new Promise((resolve, reject) => {
      let timer = null;
      const off = this.on(type, (event) => {
        if (filter && !filter(event)) return;
        off();
        if (timer) clearTimeout(timer);
        resolve(event);
      });
      if (timeoutMs != null) {
        timer = setTimeout(() => {
          off();
          reject(new SwitchboardError("timeout", `no "${type}" event within ${timeoutMs} ms`));
        }, timeoutMs);
      }
    });
  }

  /**
   * @param {string} type
   * @param {any} event
   */
  emit(type, event) {
    const set = this.#handlers.get(type);
    if (!set) return;
    for (const handler of [...set]) {
      try {
        handler(event);
      } catch (err) {
        // A failing handler must not break the client; surface it like an
        // uncaught error without unwinding our stack.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Helpers.

/**
 * Delay before reconnect attempt number `attempt` (0-based): exponential
 * backoff, capped, with jitter. With `jitter` j the delay is uniform in
 * [d·(1−j), d] where d = min(maxDelay, initialDelay·factor^attempt).
 * @param {number} attempt
 * @param {{ initialDelay?: number, maxDelay?: number, factor?: number, jitter?: number }} [options]
 * @param {() => number} [random]
 * @returns {number}
 */
export function backoffDelay(attempt, options = {}, random = Math.random) {
  const { initialDelay = 500, maxDelay = 10000, factor = 2, jitter = 0.5 } = options;
  const base = Math.min(maxDelay, initialDelay * Math.pow(factor, Math.max(0, attempt)));
  const j = Math.min(1, Math.max(0, jitter));
  return Math.round(base * (1 - j * random()));
}

/**
 * The signaling URL for `path` on the host this page was loaded from:
 * `ws:` for `http:` pages, `wss:` for `https:` pages. Absolute `ws(s):` and
 * `http(s):` URLs are accepted as well.
 * @param {string} [path]
 * @returns {string}
 */
export function signalingUrl(path = "/ws") {
  const base = typeof location !== "undefined" ? location.href : undefined;
  const url = new URL(path, base);
  if (url.protocol === "http:") url.protocol = "ws:";
  else if (url.protocol === "https:") url.protocol = "wss:";
  return url.toString();
}

/**
 * Perfect negotiation roles: the peer with the lexicographically smaller id is polite.
 * @param {string} localId
 * @param {string} remoteId
 * @returns {boolean}
 */
export function isPolite(localId, remoteId) {
  return String(localId) < String(remoteId);
}

/** Another connection resumed this session (docs/protocol.md). */
const CLOSE_TAKEN_OVER = 4001;

/**
 * Whether a close code from the server ends the session for good: the server
 * API removed this peer (`DELETE /api/v1/peers/{id}`: 4003 by default, or the
 * 4000-4999 code the app chose). Its session cannot be resumed, and
 * reconnecting would only bring back the peer the app just removed. 4001
 * (another connection resumed this session) is not one of them.
 * @param {number} code
 */
function isRemoval(code) {
  return code >= 4000 && code <= 4999 && code !== CLOSE_TAKEN_OVER;
}

const CLIENT_DEFAULTS = {
  reconnect: true,
  resume: true,
  initialDelay: 500,
  maxDelay: 10000,
  factor: 2,
  jitter: 0.5,
  requestTimeout: 10000,
  connectTimeout: 10000,
  heartbeatInterval: 20000,
  heartbeatTimeout: 10000,
};

// ---------------------------------------------------------------------------
// The signaling client.

/**
 * A connection to a Switchboard server's `/ws` endpoint with automatic
 * reconnect, room rejoin and promise-based requests.
 */
export class SwitchboardClient extends Emitter {
  /** @type {Record<string, any>} */
  #opts;
  #url;
  #ws = null;
  /** @type {"idle" | "connecting" | "open" | "reconnecting" | "closed"} */
  #state = "idle";
  #id = null;
  #iceServers = undefined;
  #nextRid = 1;
  #pending = new Map(); // rid -> request entry (sent, awaiting reply)
  #outbox = []; // request entries waiting for an open connection
  #rooms = new Map(); // name -> { name, meta, capacity, peers: Map<id, {id, meta}> }
  #attempt = 0;
  #retryTimer = null;
  #welcomeTimer = null;
  #heartbeatTimer = null;
  #connectWaiters = [];
  #everOpened = false;
  #closing = false;
  #resumeToken = null; // from the last welcome: resumes this session after a drop
  #limbo = false; // requests in #pending await a resumed session (or its refusal)
  #onOnline = () => {
    if (this.#retryTimer && this.#state === "reconnecting") {
      clearTimeout(this.#retryTimer);
      this.#retryTimer = null;
      this.#open();
    }
  };

  /** @param {Record<string, any> | string} [options] see switchboard.d.ts (`ClientOptions`) */
  constructor(options = {}) {
    super();
    if (typeof options === "string") options = { url: options };
    this.#opts = { ...CLIENT_DEFAULTS, ...options };
    this.#url = this.#opts.url ? signalingUrl(this.#opts.url) : signalingUrl("/ws");
  }

  /** This connection's peer id (changes on every reconnect); null before the first `welcome`. */
  get id() {
    return this.#id;
  }

  /** @returns {"idle" | "connecting" | "open" | "reconnecting" | "closed"} */
  get state() {
    return this.#state;
  }

  /** The ICE servers from the last `welcome`, or undefined when the server sent none. */
  get iceServers() {
    return this.#iceServers;
  }

  /** The signaling URL in use. */
  get url() {
    return this.#url;
  }

  /** Rooms this client is in (and rejoins after a reconnect). Read-only view. */
  get rooms() {
    return this.#rooms;
  }

  /**
   * The other peers of `room`, in join order.
   * @param {string} room
   */
  peers(room) {
    const r = this.#rooms.get(room);
    return r ? [...r.peers.values()] : [];
  }

  /**
   * Open the connection. Resolves with the first `welcome`. With `reconnect`
   * on (the default) failed attempts are retried with backoff, so this waits
   * until the server is reachable; `close()` rejects it.
   */
  connect() {
    if (this.#state === "open") {
      return Promise.resolve({ type: "welcome", id: this.#id, iceServers: this.#iceServers, reconnected: false });
    }
    const promise = new Promise((resolve, reject) => this.#connectWaiters.push({ resolve, reject }));
    if (this.#state === "idle" || this.#state === "closed") {
      this.#closing = false;
      this.#attempt = 0;
      this.#everOpened = false;
      this.#setState("connecting");
      globalThis.addEventListener?.("online", this.#onOnline);
      this.#open();
    }
    return promise;
  }

  /**
   * Close for good: no reconnect, pending requests reject with code "closed", rooms are forgotten.
   * @param {number} [code]
   * @param {string} [reason]
   */
  close(code = 1000, reason = "") {
    if (this.#state === "closed" || this.#state === "idle") return;
    this.#closing = true;
    globalThis.removeEventListener?.("online", this.#onOnline);
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    const ws = this.#ws;
    this.#detach();
    try {
      ws?.close(code, reason);
    } catch {
      // already closing
    }
    this.#failAll("closed", "the client was closed");
    const rooms = [...this.#rooms.keys()];
    this.#rooms.clear();
    if (rooms.length) this.emit("left", { rooms, reason: "closed" });
    this.#setState("closed", { code, reason });
  }

  /**
   * Join `room` (default "default") with optional `meta` and `capacity`.
   * Resolves with the `joined` reply; rejects with a SwitchboardError
   * (e.g. code "room-full"). The room is rejoined automatically after a
   * reconnect.
   * @param {string} [room]
   * @param {{ meta?: object, capacity?: number }} [options]
   */
  join(room = "default", { meta, capacity } = {}) {
    /** @type {Record<string, unknown>} */
    const msg = { type: "join", room };
    if (meta !== undefined) msg.meta = meta;
    if (capacity !== undefined) msg.capacity = capacity;
    return this.#request(msg, { kind: "join", room, meta, capacity });
  }

  /**
   * Leave `room`, or every room when omitted. Resolves with `{rooms}`: the
   * rooms left. The rooms are forgotten at once (no rejoin).
   * @param {string} [room]
   */
  leave(room) {
    const rooms = room === undefined ? [...this.#rooms.keys()] : this.#rooms.has(room) ? [room] : [];
    for (const name of rooms) this.#rooms.delete(name);
    // Joins still waiting for a connection are cancelled.
    this.#outbox = this.#outbox.filter((entry) => {
      if (entry.kind === "join" && (room === undefined || entry.room === room)) {
        entry.reject(new SwitchboardError("cancelled", `left room \`${entry.room}\` before joining it`));
        return false;
      }
      return true;
    });
    if (rooms.length) this.emit("left", { rooms, reason: "leave" });
    if (this.#state !== "open") {
      // Not connected: the server holds no membership for us anyway.
      if (room !== undefined && rooms.length === 0) {
        return Promise.reject(new SwitchboardError("not-in-room", `not in room \`${room}\``));
      }
      return Promise.resolve({ type: "left", rooms });
    }
    const msg = { type: "leave" };
    if (room !== undefined) msg.room = room;
    return this.#request(msg, { kind: "leave", rooms });
  }

  /**
   * Send `data` (any JSON) to every other peer of `room` (may be omitted when in exactly one room).
   * @param {unknown} data
   * @param {string} [room]
   * @returns {Promise<void>}
   */
  broadcast(data, room) {
    /** @type {Record<string, unknown>} */
    const msg = { type: "broadcast", data };
    if (room !== undefined) msg.room = room;
    return this.#request(msg, { kind: "ack" }).then(() => undefined);
  }

  /**
   * Relay `message` to peer `target`. `message.type` is one of the relay
   * types (default "signal"); every other field is delivered as written.
   * Resolves once the server accepted it.
   * @param {string} target
   * @param {{ type?: string, [field: string]: unknown }} [message]
   * @returns {Promise<void>}
   */
  sendTo(target, message = {}) {
    /** @type {Record<string, unknown>} */
    const msg = { ...message, type: message.type ?? "signal", target };
    delete msg.rid;
    return this.#request(msg, { kind: "ack" }).then(() => undefined);
  }

  /** Application-level ping; resolves with the round-trip time in milliseconds. */
  ping() {
    const start = now();
    return this.#request({ type: "ping" }, { kind: "pong" }).then(() => now() - start);
  }

  // -- internals ------------------------------------------------------------

  /**
   * @param {"idle" | "connecting" | "open" | "reconnecting" | "closed"} state
   * @param {object} [extra]
   */
  #setState(state, extra = {}) {
    const previous = this.#state;
    if (previous === state) return;
    this.#state = state;
    this.emit("state", { state, previous, ...extra });
  }

  #open() {
    this.#retryTimer = null;
    const WS = this.#opts.WebSocket ?? globalThis.WebSocket;
    let ws;
    try {
      ws = new WS(this.#connectUrl());
    } catch (err) {
      this.#onClose(1006, String(err?.message ?? err));
      return;
    }
    this.#ws = ws;
    ws.onmessage = (event) => {
      if (this.#ws === ws) this.#onMessage(event.data);
    };
    ws.onclose = (event) => {
      if (this.#ws === ws) this.#onClose(event.code, event.reason, true);
    };
    ws.onerror = () => {
      // A close event follows; nothing to do here.
    };
    clearTimeout(this.#welcomeTimer);
    this.#welcomeTimer = setTimeout(() => {
      if (this.#ws === ws && this.#state !== "open") this.#drop(4000, "no welcome from the server");
    }, this.#opts.connectTimeout);
  }

  /** The URL of the next attempt: asks for a resumable session, or to resume one. */
  #connectUrl() {
    if (!this.#opts.resume) return this.#url;
    const url = new URL(this.#url);
    url.searchParams.set("resume", this.#resumeToken ?? "");
    return url.toString();
  }

  #detach() {
    const ws = this.#ws;
    this.#ws = null;
    clearTimeout(this.#welcomeTimer);
    clearInterval(this.#heartbeatTimer);
    this.#welcomeTimer = null;
    this.#heartbeatTimer = null;
    if (ws) {
      ws.onmessage = ws.onclose = ws.onerror = null;
    }
    return ws;
  }

  /** Give up on the current socket (e.g. heartbeat timeout) and reconnect. */
  #drop(code, reason) {
    const ws = this.#ws;
    if (!ws) return;
    this.#detach();
    // A close frame tells the server we are gone for good. With a session to
    // resume, leave the socket be: the resuming connection takes the session
    // over and the server closes this one (4001).
    if (!this.#resumeToken) {
      try {
        ws.close();
      } catch {
        // ignore
      }
    }
    this.#onClose(code, reason);
  }

  /**
   * @param {number} code
   * @param {string} reason
   * @param {boolean} [fromServer] the socket's own close event (not a drop we decided on)
   */
  #onClose(code, reason, fromServer = false) {
    this.#detach();
    const removed = fromServer && !this.#closing && isRemoval(code);
    if (removed) this.#resumeToken = null; // the server ended the session
    if (this.#resumeToken && this.#opts.reconnect && !this.#closing) {
      // The session may resume, and with it the replies to these requests:
      // hold them until the next welcome says whether it did.
      this.#limbo = true;
    } else {
      this.#settleInFlight();
    }
    if (this.#closing) return;
    if (removed || !this.#opts.reconnect) {
      // For good: no resume, no reconnect. A removal's code and reason reach
      // the app in the `state` event ("closed").
      globalThis.removeEventListener?.("online", this.#onOnline);
      const message = removed
        ? `removed by the server (${code}${reason ? `: ${reason}` : ""})`
        : "the connection closed";
      this.#failAll("disconnected", message);
      const rooms = [...this.#rooms.keys()];
      this.#rooms.clear();
      if (rooms.length) this.emit("left", { rooms, reason: removed ? "removed" : "disconnected" });
      this.#setState("closed", { code, reason, ...(removed ? { removed: true } : {}) });
      return;
    }
    const attempt = this.#attempt++;
    const delay = backoffDelay(attempt, this.#opts);
    const extra = { code, reason, attempt: attempt + 1, delay };
    if (this.#everOpened) this.#setState("reconnecting", extra);
    this.emit("retry", extra);
    this.#retryTimer = setTimeout(() => this.#open(), delay);
  }

  /** The session is gone: joins in flight are retried on the next connection,
   * leaves are done (the server dropped our memberships), the rest fail. */
  #settleInFlight() {
    this.#limbo = false;
    const retry = [];
    for (const entry of this.#pending.values()) {
      clearTimeout(entry.timer);
      if (entry.kind === "join") retry.push(entry);
      else if (entry.kind === "leave") entry.resolve({ type: "left", rooms: entry.rooms });
      else if (entry.kind !== "rejoin") {
        entry.reject(new SwitchboardError("disconnected", "the connection closed before the server replied"));
      }
    }
    this.#pending.clear();
    this.#outbox.unshift(...retry);
  }

  #failAll(code, message) {
    for (const entry of this.#pending.values()) {
      clearTimeout(entry.timer);
      if (entry.kind === "leave") entry.resolve({ type: "left", rooms: entry.rooms });
      else if (entry.kind !== "rejoin") entry.reject(new SwitchboardError(code, message));
    }
    this.#pending.clear();
    for (const entry of this.#outbox) entry.reject(new SwitchboardError(code, message));
    this.#outbox = [];
    for (const waiter of this.#connectWaiters) waiter.reject(new SwitchboardError(code, message));
    this.#connectWaiters = [];
  }

  #request(msg, entryInit) {
    if (this.#state === "idle" || this.#state === "closed") {
      return Promise.reject(new SwitchboardError("not-connected", "call connect() first"));
    }
    return new Promise((resolve, reject) => {
      const entry = { ...entryInit, msg, resolve, reject, timer: null };
      if (this.#state === "open") this.#transmit(entry);
      else this.#outbox.push(entry);
    });
  }

  #transmit(entry) {
    // A socket the server has begun to close (it is stopping: 1012) discards
    // what is sent on it; the request waits for the next connection instead,
    // which resumes the session, or retries or fails it as any queued request.
    if (this.#ws?.readyState !== 1 /* OPEN */) {
      this.#outbox.push(entry);
      return;
    }
    const rid = this.#nextRid++;
    entry.rid = rid;
    entry.msg = { ...entry.msg, rid };
    this.#pending.set(rid, entry);
    const timeout = entry.timeout ?? this.#opts.requestTimeout;
    entry.timer = setTimeout(() => {
      if (this.#pending.get(rid) !== entry) return;
      this.#pending.delete(rid);
      entry.reject(new SwitchboardError("timeout", `no reply to \`${entry.msg.type}\` within ${timeout} ms`, { rid }));
    }, timeout);
    try {
      this.#ws.send(JSON.stringify(entry.msg));
    } catch (err) {
      // The socket is closing; the close handler settles the entry.
    }
  }

  #onMessage(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (!msg || typeof msg !== "object" || typeof msg.type !== "string") return;
    this.emit("message", msg);
    switch (msg.type) {
      case "welcome":
        return this.#onWelcome(msg);
      case "joined":
        return this.#onJoined(msg);
      case "left":
        return this.#settle(msg, (entry) => entry.resolve({ type: "left", rooms: msg.rooms ?? [] }));
      case "ack":
      case "pong":
        return this.#settle(msg, (entry) => entry.resolve(msg));
      case "error":
        return this.#onError(msg);
      case "peer-joined":
        return this.#onPeerJoined(msg);
      case "peer-left":
        return this.#onPeerLeft(msg);
      case "broadcast":
        // `from` is a peer id, or SERVER_SENDER for the app's backend.
        return this.emit("broadcast", { from: msg.from, room: msg.room, data: msg.data });
      case "room-closed":
        return this.#onRoomClosed(msg);
      case "server-message":
        return this.emit("server-message", { data: msg.data });
      default:
        if (RELAY.has(msg.type) || typeof msg.from === "string") this.emit("relay", msg);
    }
  }

  #settle(msg, settle) {
    if (msg.rid === undefined) return;
    const entry = this.#pending.get(msg.rid);
    if (!entry) return;
    this.#pending.delete(msg.rid);
    clearTimeout(entry.timer);
    settle(entry);
  }

  #onWelcome(msg) {
    clearTimeout(this.#welcomeTimer);
    this.#welcomeTimer = null;
    const reconnected = this.#everOpened;
    this.#resumeToken = typeof msg.resume === "string" ? msg.resume : null;
    if (msg.resumed === true && reconnected) return this.#onResumed(msg);
    if (this.#limbo) this.#settleInFlight();
    this.#id = msg.id;
    this.#iceServers = Array.isArray(msg.iceServers) ? msg.iceServers : undefined;
    this.#attempt = 0;
    this.#everOpened = true;
    // Peers we knew are from the previous connection; the rejoin's `joined`
    // tells us who is there now.
    for (const room of this.#rooms.values()) room.stale = true;
    this.#setState("open");
    const welcome = { type: "welcome", id: msg.id, iceServers: this.#iceServers, reconnected };
    this.emit("welcome", welcome);
    for (const waiter of this.#connectWaiters) waiter.resolve(welcome);
    this.#connectWaiters = [];
    // Rejoin first, then whatever was asked for while disconnected.
    for (const room of this.#rooms.values()) {
      const join = { type: "join", room: room.name };
      if (room.meta !== undefined) join.meta = room.meta;
      if (room.requestedCapacity !== undefined) join.capacity = room.requestedCapacity;
      this.#transmit({
        kind: "rejoin",
        room: room.name,
        msg: join,
        resolve: () => {},
        reject: () => {},
      });
    }
    const queued = this.#outbox;
    this.#outbox = [];
    for (const entry of queued) this.#transmit(entry);
    this.#startHeartbeat();
  }

  /** Same session, same id, same rooms: the server replays what we missed,
   * including replies to requests in flight, so nothing is rejoined or resent. */
  #onResumed(msg) {
    this.#limbo = false;
    this.#iceServers = Array.isArray(msg.iceServers) ? msg.iceServers : this.#iceServers;
    this.#attempt = 0;
    this.#setState("open");
    const welcome = { type: "welcome", id: msg.id, iceServers: this.#iceServers, reconnected: true, resumed: true };
    this.emit("welcome", welcome);
    for (const waiter of this.#connectWaiters) waiter.resolve(welcome);
    this.#connectWaiters = [];
    const queued = this.#outbox;
    this.#outbox = [];
    for (const entry of queued) this.#transmit(entry);
    this.#startHeartbeat();
  }

  #startHeartbeat() {
    const interval = this.#opts.heartbeatInterval;
    if (!interval) return;
    const ws = this.#ws;
    this.#heartbeatTimer = setInterval(() => {
      if (this.#ws !== ws || this.#state !== "open") return;
      const entry = {
        kind: "pong",
        msg: { type: "ping" },
        timeout: this.#opts.heartbeatTimeout,
        resolve: () => {},
        reject: (err) => {
          if (err.code === "timeout" && this.#ws === ws) this.#drop(4001, "heartbeat timeout");
        },
      };
      this.#transmit(entry);
    }, interval);
  }

  #onJoined(msg) {
    const entry = msg.rid !== undefined ? this.#pending.get(msg.rid) : undefined;
    if (entry) {
      this.#pending.delete(msg.rid);
      clearTimeout(entry.timer);
    }
    const peersList = Array.isArray(msg.peers) ? msg.peers : [];
    const existing = this.#rooms.get(msg.room);
    const rejoin = !!existing && entry?.kind !== "join";
    const room = existing ?? {
      name: msg.room,
      meta: entry?.meta,
      requestedCapacity: entry?.capacity,
      capacity: undefined,
      peers: new Map(),
    };
    room.capacity = msg.capacity;
    room.stale = false;
    const previous = room.peers;
    room.peers = new Map(peersList.map((p) => [p.id, { id: p.id, meta: p.meta }]));
    this.#rooms.set(room.name, room);
    if (existing) {
      for (const old of previous.values()) {
        if (!room.peers.has(old.id)) {
          this.emit("peer-left", { id: old.id, room: room.name, meta: old.meta, reason: "reconnect" });
        }
      }
    }
    const joined = {
      type: "joined",
      room: room.name,
      peers: [...room.peers.values()],
      capacity: msg.capacity,
      rejoin,
    };
    this.emit("joined", joined);
    entry?.resolve(joined);
  }

  #onError(msg) {
    const error = new SwitchboardError(msg.code ?? "unknown", msg.message ?? "", { rid: msg.rid });
    const entry = msg.rid !== undefined ? this.#pending.get(msg.rid) : undefined;
    if (!entry) {
      this.emit("error", error);
      return;
    }
    this.#pending.delete(msg.rid);
    clearTimeout(entry.timer);
    if (entry.kind === "leave" && error.code === "not-in-room" && entry.rooms.length) {
      // The server closed the room (`room-closed`) before our leave reached it: left either way.
      entry.resolve({ type: "left", rooms: entry.rooms });
      return;
    }
    if (entry.kind === "rejoin") {
      // The room could not be rejoined (e.g. it filled up meanwhile).
      const room = this.#rooms.get(entry.room);
      if (!room) return;
      this.#rooms.delete(entry.room);
      /** @type {SwitchboardError & { room?: string }} */ (error).room = entry.room;
      this.emit("error", error);
      this.emit("left", { rooms: [entry.room], reason: "rejoin-failed", error });
      return;
    }
    entry.reject(error);
  }

  #onPeerJoined(msg) {
    const id = msg.data;
    const room = this.#rooms.get(msg.room);
    if (room) room.peers.set(id, { id, meta: msg.meta });
    this.emit("peer-joined", { id, room: msg.room, meta: msg.meta });
  }

  /** The server closed a room we are in: we are out of it, its members did not leave. */
  #onRoomClosed(msg) {
    const name = msg.room;
    if (typeof name !== "string") return;
    // Already forgotten (we left it ourselves meanwhile): nothing to tell.
    if (!this.#rooms.delete(name)) return;
    this.emit("room-closed", { room: name });
    this.emit("left", { rooms: [name], reason: "room-closed" });
  }

  #onPeerLeft(msg) {
    const id = msg.data;
    const room = this.#rooms.get(msg.room);
    const meta = room?.peers.get(id)?.meta;
    room?.peers.delete(id);
    this.emit("peer-left", { id, room: msg.room, meta, reason: "left" });
  }
}

function now() {
  return typeof performance !== "undefined" ? performance.now() : Date.now();
}

// ---------------------------------------------------------------------------
// WebRTC: one RTCPeerConnection per remote peer, perfect negotiation.

function toDescription(msg) {
  if ((msg.type === "offer" || msg.type === "answer") && typeof msg.sdp === "string") {
    return { type: msg.type, sdp: msg.sdp };
  }
  // The seeds' shape: {"type":"sdp","sdp":{"type":"offer","sdp":"v=0..."}}
  if (msg.type === "sdp" && msg.sdp && typeof msg.sdp === "object" && typeof msg.sdp.type === "string") {
    return { type: msg.sdp.type, sdp: msg.sdp.sdp };
  }
  return null;
}

function toCandidate(msg) {
  if (msg.type === "candidate" || msg.type === "ice-candidate") return msg.candidate ?? null;
  return undefined;
}

/**
 * One remote peer of a PeerMesh: its RTCPeerConnection, the perfect
 * negotiation state, its media stream and data channels.
 */
export class MeshPeer {
  /** The remote peer id. */ id;
  /** The remote peer's join `meta`. */ meta;
  /** Our peer id when this connection was made. */ localId;
  /** Whether we are the polite side (our id is the smaller). */ polite;
  /** The RTCPeerConnection. */ pc;
  /** RTCPeerConnection.connectionState, or "closed" once removed. */ state;
  /** The remote media (null until the first track arrives). */ stream = null;
  /** Data channels by label. */ channels = new Map();
  /** Counters, for diagnostics and tests. */
  stats = {
    offersSent: 0,
    answersSent: 0,
    offersIgnored: 0,
    rollbacks: 0,
    candidatesSent: 0,
    candidatesAdded: 0,
    candidatesQueued: 0,
    iceRestarts: 0,
  };
  /** The last negotiation steps, oldest first (for debugging): `{ t, step }`. */
  history = [];

  #send;
  #emit;
  #MediaStream;
  #iceRestartDelay;
  #stallTimeout;
  #politeDelay;
  #offerSeen = false;
  #offerWaiters = [];
  #stallTimer = null;
  #stallRestarts = 0;
  #makingOffer = false;
  #offering = Promise.resolve();
  #ignoreOffer = false;
  #settingAnswer = false;
  #queued = [];
  #chain = Promise.resolve();
  #restartTimer = null;
  #senders = new Map(); // kind -> RTCRtpSender
  #closed = false;

  constructor({
    id,
    meta,
    localId,
    pc,
    stream,
    dataChannels = [],
    send,
    emit,
    MediaStream,
    iceRestartDelay = 2000,
    stallTimeout = 4000,
    politeDelay = 1500,
  }) {
    this.id = id;
    this.meta = meta;
    this.localId = localId;
    this.polite = isPolite(localId, id);
    this.pc = pc;
    this.state = pc.connectionState ?? "new";
    this.#send = send;
    this.#emit = emit;
    this.#MediaStream = MediaStream;
    this.#iceRestartDelay = iceRestartDelay;
    this.#stallTimeout = stallTimeout;
    this.#politeDelay = politeDelay;

    pc.onnegotiationneeded = () => this.#negotiate();
    pc.onicecandidate = ({ candidate }) => {
      // Trickle ICE: every candidate goes out as soon as it is gathered.
      if (!candidate) return;
      if (this.stats.candidatesSent++ === 0) this.#trace("send first candidate");
      this.#send({ type: "candidate", candidate: candidate.toJSON ? candidate.toJSON() : candidate });
    };
    pc.onicegatheringstatechange = () => this.#trace(`gathering ${pc.iceGatheringState}`);
    pc.ontrack = ({ track, streams }) => this.#onTrack(track, streams);
    pc.onconnectionstatechange = () => this.#onConnectionState();
    pc.oniceconnectionstatechange = () => this.#onIceState();

    // Negotiated data channels (same id on both sides): no `datachannel`
    // event to wait for, and no glare of their own.
    dataChannels.forEach((label, index) => {
      this.#setupChannel(pc.createDataChannel(label, { negotiated: true, id: index }));
    });
    if (stream) this.setStream(stream);
  }

  /**
   * Send on data channel `label`; returns false when it is not open.
   * @param {string} label
   * @param {any} data
   * @returns {boolean}
   */
  send(label, data) {
    const channel = this.channels.get(label);
    if (!channel || channel.readyState !== "open") return false;
    channel.send(data);
    return true;
  }

  /** Send `stream`'s tracks instead of the current ones (replaceTrack; adds kinds not sent yet). */
  setStream(stream) {
    const tracks = stream ? stream.getTracks() : [];
    const kinds = new Set();
    for (const track of tracks) {
      if (kinds.has(track.kind)) continue;
      kinds.add(track.kind);
      const sender = this.#senders.get(track.kind);
      if (sender) {
        sender.replaceTrack(track).catch((error) => this.#emit("error", { peer: this, error }));
        sender.setStreams?.(stream);
      } else {
        this.#senders.set(track.kind, this.pc.addTrack(track, stream));
      }
    }
    for (const [kind, sender] of this.#senders) {
      if (!kinds.has(kind)) sender.replaceTrack(null).catch(() => {});
    }
  }

  /** Restart ICE (new credentials, new candidates) via a renegotiation. */
  restartIce() {
    if (this.#closed) return;
    this.stats.iceRestarts++;
    this.#emit("ice-restart", { peer: this });
    if (typeof this.pc.restartIce === "function") {
      this.pc.restartIce(); // fires negotiationneeded
    } else {
      this.#negotiate({ iceRestart: true });
    }
  }

  /** Handle a relay message from this peer (description or candidate), in arrival order. */
  receive(msg) {
    this.#chain = this.#chain
      .then(() => this.#handle(msg))
      .catch((error) => {
        if (!this.#closed) this.#emit("error", { peer: this, error });
      });
    return this.#chain;
  }

  close() {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#restartTimer);
    clearTimeout(this.#stallTimer);
    for (const wake of this.#offerWaiters.splice(0)) wake();
    for (const channel of this.channels.values()) {
      try {
        channel.close();
      } catch {
        // ignore
      }
    }
    this.pc.onnegotiationneeded = this.pc.onicecandidate = this.pc.ontrack = null;
    this.pc.onconnectionstatechange = this.pc.oniceconnectionstatechange = this.pc.onicegatheringstatechange = null;
    this.pc.close();
    if (this.state !== "closed") {
      this.state = "closed";
      this.#emit("state", { peer: this, state: "closed" });
    }
  }

  get closed() {
    return this.#closed;
  }

  #trace(step) {
    this.history.push({ t: Math.round(now()), step: `${step} [${this.pc.signalingState}]` });
    if (this.history.length > 100) this.history.shift();
  }

  #negotiate(offerOptions) {
    const run = this.#offer(offerOptions);
    this.#offering = run;
    return run;
  }

  async #offer(offerOptions) {
    if (this.#closed) return;
    const pc = this.pc;
    if (pc.signalingState !== "stable") {
      // Chromium can deliver the event in the middle of a negotiation. Acting
      // on it would make a second offer that the next remote offer rolls back
      // again, which can leave ICE gathering stuck. The event fires again once
      // the connection is back to "stable" if anything is still missing.
      this.#trace("negotiationneeded ignored");
      return;
    }
    if (this.polite && !this.#offerSeen && !pc.remoteDescription && this.#politeDelay > 0) {
      // The first negotiation: both sides add their media at once, so both
      // would offer and collide. The polite side gives the impolite side's
      // offer a moment to arrive and answers it instead; it offers itself
      // only if none comes. (Glare is still handled below; this just makes
      // it rare at setup.)
      this.#trace("waiting for their offer");
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, this.#politeDelay);
        this.#offerWaiters.push(() => {
          clearTimeout(timer);
          resolve(undefined);
        });
      });
      if (this.#closed || this.#offerSeen || pc.remoteDescription || pc.signalingState !== "stable") {
        this.#trace("their offer came first");
        return;
      }
    }
    try {
      this.#makingOffer = true;
      this.#trace("negotiationneeded");
      if (offerOptions) {
        await pc.setLocalDescription(await pc.createOffer(offerOptions));
      } else {
        await pc.setLocalDescription();
      }
      // A remote offer may have rolled ours back meanwhile: send only a live offer.
      if (this.#closed || pc.signalingState !== "have-local-offer" || !pc.localDescription) {
        this.#trace(`made ${pc.localDescription?.type}, not sent`);
        return;
      }
      this.#trace("send offer");
      this.stats.offersSent++;
      this.#send({ type: pc.localDescription.type, sdp: pc.localDescription.sdp });
    } catch (error) {
      if (!this.#closed) this.#emit("error", { peer: this, error });
    } finally {
      this.#makingOffer = false;
    }
  }

  async #handle(msg) {
    if (this.#closed) return;
    const pc = this.pc;
    const description = toDescription(msg);
    if (description) {
      this.#trace(`got ${description.type}${this.#makingOffer ? " while making offer" : ""}`);
      if (description.type === "offer" && !this.#offerSeen) {
        this.#offerSeen = true;
        for (const wake of this.#offerWaiters.splice(0)) wake();
      }
      const readyForOffer = !this.#makingOffer && (pc.signalingState === "stable" || this.#settingAnswer);
      const collision = description.type === "offer" && !readyForOffer;
      this.#ignoreOffer = !this.polite && collision;
      if (this.#ignoreOffer) {
        // Impolite side of a glare: our offer wins, theirs is dropped.
        this.#trace("ignored offer (glare)");
        this.stats.offersIgnored++;
        return;
      }
      if (collision) {
        // Polite side of a glare: roll our offer back and take theirs.
        // Our offer may still be being applied. Chromium starts ICE gathering
        // for it a moment after setLocalDescription resolves; rolling back
        // before that can leave the connection unable to gather candidates
        // ever again. So let the offer land and gathering begin first.
        if (this.#makingOffer) await this.#offering;
        if (pc.signalingState === "have-local-offer") await this.#gatheringStarted(250);
        if (this.#closed) return;
        this.stats.rollbacks++;
        try {
          await pc.setLocalDescription({ type: "rollback" });
          this.#trace("rolled back");
        } catch {
          // Nothing to roll back yet: setRemoteDescription handles it.
          this.#trace("rollback refused");
        }
      }
      this.#settingAnswer = description.type === "answer";
      try {
        await pc.setRemoteDescription(description);
      } finally {
        this.#settingAnswer = false;
      }
      if (this.#closed) return;
      this.#trace(`applied ${description.type}`);
      await this.#flushCandidates();
      if (description.type === "offer") {
        await pc.setLocalDescription();
        if (this.#closed || !pc.localDescription) return;
        this.#trace(`send ${pc.localDescription.type}`);
        this.stats.answersSent++;
        this.#send({ type: pc.localDescription.type, sdp: pc.localDescription.sdp });
      }
      this.#watchForStall();
      return;
    }
    const candidate = toCandidate(msg);
    if (candidate === undefined || candidate === null) return;
    if (!pc.remoteDescription) {
      // Arrived before the description it belongs to: hold it.
      this.stats.candidatesQueued++;
      this.#queued.push(candidate);
      return;
    }
    try {
      await pc.addIceCandidate(candidate);
      if (this.stats.candidatesAdded++ === 0) this.#trace("added first candidate");
    } catch (error) {
      // Candidates of an offer we ignored are expected to fail.
      this.#trace(`candidate refused: ${error?.message ?? error}`);
      if (!this.#ignoreOffer) throw error;
    }
  }

  async #flushCandidates() {
    const queued = this.#queued;
    this.#queued = [];
    let added = 0;
    for (const candidate of queued) {
      try {
        await this.pc.addIceCandidate(candidate);
        added++;
        this.stats.candidatesAdded++;
      } catch {
        // Queued candidates may belong to an offer that was ignored or replaced.
      }
    }
    if (queued.length) this.#trace(`added ${added} of ${queued.length} queued candidates`);
  }

  /** Resolves once ICE gathering has left "new" (or after `timeoutMs`). */
  #gatheringStarted(timeoutMs) {
    const pc = this.pc;
    if (pc.iceGatheringState !== "new") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        pc.removeEventListener?.("icegatheringstatechange", done);
        resolve(undefined);
      };
      const timer = setTimeout(done, timeoutMs);
      pc.addEventListener?.("icegatheringstatechange", done);
    });
  }

  /**
   * Negotiation is complete; ICE should now start checking. If the connection
   * is still "new" after a while (no candidate pair was ever tried, so ICE
   * will never report "failed"), restart ICE. The impolite side goes first;
   * the polite side waits twice as long so the two restarts do not collide.
   */
  #watchForStall() {
    clearTimeout(this.#stallTimer);
    if (!this.#stallTimeout) return;
    this.#stallTimer = setTimeout(
      () => {
        this.#stallTimer = null;
        const pc = this.pc;
        if (this.#closed || pc.connectionState !== "new" || pc.signalingState !== "stable") return;
        if (this.#stallRestarts >= 5) return;
        this.#stallRestarts++;
        this.#trace("stalled in new");
        this.restartIce();
      },
      this.#stallTimeout * (this.polite ? 2 : 1),
    );
  }

  #onTrack(track, streams) {
    const remote = streams && streams[0];
    if (remote) {
      this.stream = remote;
    } else {
      if (!this.stream && this.#MediaStream) this.stream = new this.#MediaStream();
      if (this.stream && !this.stream.getTracks().includes(track)) this.stream.addTrack(track);
    }
    this.#emit("track", { peer: this, track, stream: this.stream });
  }

  #onConnectionState() {
    const state = this.pc.connectionState;
    if (state === this.state) return;
    this.#trace(`connection ${state}`);
    this.state = state;
    if (state === "connected") this.#stallRestarts = 0;
    this.#emit("state", { peer: this, state });
    if (state === "failed") this.restartIce();
  }

  #onIceState() {
    const state = this.pc.iceConnectionState;
    this.#trace(`ice ${state}`);
    clearTimeout(this.#restartTimer);
    this.#restartTimer = null;
    if (state === "disconnected") {
      // Often recovers on its own; restart if it does not.
      this.#restartTimer = setTimeout(() => {
        if (!this.#closed && this.pc.iceConnectionState === "disconnected") this.restartIce();
      }, this.#iceRestartDelay);
    } else if (state === "failed" && this.pc.connectionState !== "failed") {
      this.restartIce();
    }
  }

  #setupChannel(channel) {
    channel.binaryType = "arraybuffer";
    this.channels.set(channel.label, channel);
    channel.onopen = () => this.#emit("channel-open", { peer: this, label: channel.label, channel });
    channel.onclose = () => this.#emit("channel-close", { peer: this, label: channel.label, channel });
    channel.onmessage = (event) =>
      this.#emit("channel-message", { peer: this, label: channel.label, data: event.data });
  }
}

/**
 * A full mesh over one room: an RTCPeerConnection to every other peer,
 * created and torn down as peers join and leave, rebuilt after a reconnect.
 */
export class PeerMesh extends Emitter {
  #client;
  #room;
  /** @type {Record<string, any>} */
  #opts;
  #stream;
  #peers = new Map();
  #unsubscribe = [];
  #closed = false;

  /**
   * @param {any} client a SwitchboardClient (see `MeshSignaling` in switchboard.d.ts)
   * @param {{ room: string, [option: string]: any }} options see switchboard.d.ts (`MeshOptions`)
   */
  constructor(client, options) {
    super();
    if (!options?.room) throw new TypeError("PeerMesh needs options.room");
    this.#client = client;
    this.#room = options.room;
    this.#opts = { dataChannels: ["data"], iceRestartDelay: 2000, stallTimeout: 4000, politeDelay: 1500, ...options };
    this.#stream = options.stream ?? null;
    const on = (type, fn) => this.#unsubscribe.push(client.on(type, fn));
    on("joined", (e) => {
      if (e.room === this.#room) this.#sync();
    });
    on("peer-joined", (e) => {
      if (e.room === this.#room) this.#add(e.id, e.meta, true);
    });
    on("peer-left", (e) => {
      if (e.room === this.#room) this.#remove(e.id, e.reason === "reconnect" ? "reconnect" : "left");
    });
    on("left", (e) => {
      if (e.rooms.includes(this.#room)) for (const id of [...this.#peers.keys()]) this.#remove(id, "leave");
    });
    on("relay", (msg) => this.#onRelay(msg));
    if (client.rooms?.get(this.#room)) this.#sync();
  }

  get room() {
    return this.#room;
  }

  /** The local stream sent to every peer. */
  get stream() {
    return this.#stream;
  }

  /** Remote peers by id. */
  get peers() {
    return this.#peers;
  }

  /** Change the local media sent to every peer (e.g. after getUserMedia resolves). */
  setStream(stream) {
    this.#stream = stream;
    for (const peer of this.#peers.values()) peer.setStream(stream);
  }

  /**
   * Send on data channel `label` to `peerId`, or to every peer; returns how many channels it went out on.
   * @param {string} label
   * @param {any} data
   * @param {string} [peerId]
   * @returns {number}
   */
  send(label, data, peerId) {
    let sent = 0;
    for (const peer of this.#peers.values()) {
      if (peerId !== undefined && peer.id !== peerId) continue;
      if (peer.send(label, data)) sent++;
    }
    return sent;
  }

  /** Close every connection and stop following the room (the room itself is not left). */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    for (const off of this.#unsubscribe) off();
    this.#unsubscribe = [];
    for (const id of [...this.#peers.keys()]) this.#remove(id, "closed");
  }

  #rtcConfig() {
    const base = this.#opts.rtcConfig ?? {};
    const iceServers = this.#opts.iceServers ?? base.iceServers ?? this.#client.iceServers ?? [];
    return { ...base, iceServers };
  }

  #sync() {
    const room = this.#client.rooms?.get(this.#room);
    const present = room ? room.peers : new Map();
    for (const id of [...this.#peers.keys()]) {
      if (!present.has(id)) this.#remove(id, "reconnect");
    }
    for (const info of present.values()) {
      const existing = this.#peers.get(info.id);
      // A connection made under our previous id is dead on the other side.
      if (existing && existing.localId === this.#client.id) continue;
      this.#add(info.id, info.meta, true);
    }
  }

  #add(id, meta, replace) {
    if (this.#closed || id === this.#client.id) return this.#peers.get(id);
    const existing = this.#peers.get(id);
    if (existing) {
      if (!replace) return existing;
      this.#remove(id, "replaced");
    }
    const PC = this.#opts.RTCPeerConnection ?? globalThis.RTCPeerConnection;
    const pc = new PC(this.#rtcConfig());
    const peer = new MeshPeer({
      id,
      meta,
      localId: this.#client.id,
      pc,
      stream: null,
      dataChannels: this.#opts.dataChannels,
      MediaStream: this.#opts.MediaStream ?? globalThis.MediaStream,
      iceRestartDelay: this.#opts.iceRestartDelay,
      stallTimeout: this.#opts.stallTimeout,
      politeDelay: this.#opts.politeDelay,
      send: (msg) => this.#signal(peer, msg),
      emit: (type, event) => {
        if (this.#peers.get(id) === peer || type === "state") this.emit(type, event);
      },
    });
    this.#peers.set(id, peer);
    this.emit("peer", { peer });
    if (this.#stream) peer.setStream(this.#stream);
    return peer;
  }

  #remove(id, reason) {
    const peer = this.#peers.get(id);
    if (!peer) return;
    this.#peers.delete(id);
    peer.close();
    this.emit("peer-removed", { peer, reason });
  }

  #signal(peer, msg) {
    if (peer.closed || this.#client.state !== "open") return;
    this.#client.sendTo(peer.id, { ...msg, room: this.#room }).catch((error) => {
      if (!peer.closed) this.emit("error", { peer, error });
    });
  }

  #onRelay(msg) {
    if (this.#closed) return;
    if (msg.room !== undefined && msg.room !== this.#room) return;
    if (!toDescription(msg) && toCandidate(msg) === undefined) return;
    let peer = this.#peers.get(msg.from);
    if (!peer) {
      // Only peers of our room may open a connection to us.
      const info = this.#client.rooms?.get(this.#room)?.peers.get(msg.from);
      if (!info) return;
      peer = this.#add(info.id, info.meta, false);
    }
    peer?.receive(msg);
  }
}
