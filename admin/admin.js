// The admin dashboard: a live view of the server API (/api/v1, issue #13).
//
// The operator enters an API key once; it is kept in this tab's sessionStorage
// (never localStorage, never a URL) and sent only as `Authorization: Bearer`.
// Every 2 s the page reads GET /api/v1/nodes, every page of GET /api/v1/rooms
// and, for the rooms the operator expanded, GET /api/v1/rooms/{room}. A 401
// forgets the key and asks again. Everything the API returns is untrusted text:
// it only ever reaches the page through textContent, attributes and canvas
// drawing, never as markup.

const KEY_STORAGE = "switchboard-admin-key";
const POLL_MS = 2000;
/** How much history the per-node sparklines show. */
const HISTORY_MS = 5 * 60 * 1000;
/** Rooms per GET /api/v1/rooms page (the API's maximum). */
const PAGE_LIMIT = 1000;
/** A guard against a server that never stops handing out cursors. */
const MAX_PAGES = 1000;
/** A request that takes longer fails (and the next poll tries again). */
const REQUEST_TIMEOUT_MS = 10000;
/** Longest compact `meta` JSON shown in a cell (the whole of it is in the tooltip). */
const META_CHARS = 120;

/** @typedef {{ name: string, members: number, capacity: number | null, created: string }} RoomSummary */
/** @typedef {{ id: string, user: string | null, meta: string | null, node: string, joined: string }} Member */
/** @typedef {{ name: string, capacity: number | null, created: string, members: Member[] }} RoomDetail */
/**
 * @typedef {{ id: string, address: string, version: string, started: string, uptime: number | null,
 *             connections: number | null, rooms: number | null, messagesIn: number | null }} NodeInfo
 */
/** @typedef {{ t: number, messages: number | null, connections: number | null, rate: number | null }} Sample */
/**
 * @typedef {{ tbody: HTMLTableSectionElement, row: HTMLTableRowElement, toggle: HTMLButtonElement,
 *             members: HTMLTableCellElement, capacity: HTMLTableCellElement, created: HTMLTableCellElement,
 *             close: HTMLButtonElement, detailRow: HTMLTableRowElement, detailCell: HTMLTableCellElement,
 *             memberBody: HTMLTableSectionElement, memberEmpty: HTMLParagraphElement,
 *             memberViews: Map<string, MemberView>, summary: RoomSummary }} RoomView
 */
/**
 * @typedef {{ row: HTMLTableRowElement, id: HTMLTableCellElement, user: HTMLTableCellElement,
 *             meta: HTMLTableCellElement, node: HTMLTableCellElement, joined: HTMLTableCellElement,
 *             remove: HTMLButtonElement, member: Member }} MemberView
 */
/**
 * @typedef {{ row: HTMLTableRowElement, address: HTMLTableCellElement, version: HTMLTableCellElement,
 *             uptime: HTMLTableCellElement, connections: HTMLTableCellElement, rooms: HTMLTableCellElement,
 *             rate: HTMLTableCellElement, canvas: HTMLCanvasElement, started: string }} NodeView
 */

/** An API failure: the HTTP status (0: no answer) and the body's `{code, message}`. */
class ApiError extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} message
   */
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// ---- DOM helpers --------------------------------------------------------

/**
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {{ className?: string, testid?: string, text?: string, title?: string }} [props]
 * @param {...Node} children
 * @returns {HTMLElementTagNameMap[K]}
 */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  if (props.className) node.className = props.className;
  if (props.testid) node.dataset.testid = props.testid;
  if (props.text !== undefined) node.textContent = props.text;
  if (props.title !== undefined) node.title = props.title;
  node.append(...children);
  return node;
}

/**
 * @template {HTMLElement} T
 * @param {string} id
 * @param {new () => T} type
 * @returns {T}
 */
function byId(id, type) {
  const node = document.getElementById(id);
  if (!(node instanceof type)) throw new Error(`#${id} is missing`);
  return node;
}

/**
 * Set text only when it changed (keeps selections and avoids layout churn).
 * @param {HTMLElement} node
 * @param {string} text
 */
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

/**
 * @param {HTMLElement} node
 * @param {string} title
 */
function setTitle(node, title) {
  if (node.title !== title) node.title = title;
}

const ui = {
  keyView: byId("key-view", HTMLElement),
  keyForm: byId("key-form", HTMLFormElement),
  keyInput: byId("key-input", HTMLInputElement),
  keySubmit: byId("key-submit", HTMLButtonElement),
  keyError: byId("key-error", HTMLElement),
  dashView: byId("dash-view", HTMLElement),
  forget: byId("forget-key", HTMLButtonElement),
  badge: byId("poll-badge", HTMLElement),
  status: byId("status", HTMLElement),
  updated: byId("updated", HTMLElement),
  totalNodes: byId("total-nodes", HTMLElement),
  totalRooms: byId("total-rooms", HTMLElement),
  totalPeers: byId("total-peers", HTMLElement),
  nodes: byId("nodes", HTMLTableSectionElement),
  nodesEmpty: byId("nodes-empty", HTMLElement),
  roomsTable: /** @type {HTMLTableElement} */ (document.querySelector("table.rooms")),
  roomsEmpty: byId("rooms-empty", HTMLElement),
  search: byId("search", HTMLInputElement),
  reason: byId("reason", HTMLInputElement),
};

// ---- the key ------------------------------------------------------------

/** Used only if sessionStorage is unavailable (then the key lives as long as the page). */
let memoryKey = /** @type {string | null} */ (null);

function getKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE);
  } catch {
    return memoryKey;
  }
}

/** @param {string} key */
function storeKey(key) {
  try {
    sessionStorage.setItem(KEY_STORAGE, key);
  } catch {
    memoryKey = key;
  }
}

function clearKey() {
  memoryKey = null;
  try {
    sessionStorage.removeItem(KEY_STORAGE);
  } catch {
    // nothing stored
  }
}

// ---- the API ------------------------------------------------------------

/**
 * One API call. Resolves to the parsed JSON body (null for 204), rejects with ApiError.
 * @param {"GET" | "DELETE"} method
 * @param {string} path
 * @returns {Promise<any>}
 */
async function api(method, path) {
  const key = getKey();
  if (!key) throw new ApiError(401, "unauthorized", "no API key entered");
  let res;
  try {
    res = await fetch(path, {
      method,
      headers: { Authorization: `Bearer ${key}`, Accept: "application/json" },
      cache: "no-store",
      credentials: "omit",
      redirect: "error",
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
  } catch (err) {
    throw new ApiError(0, "network", `the server did not answer (${err instanceof Error ? err.message : String(err)})`);
  }
  if (res.status === 204) return null;
  const text = await res.text().catch(() => "");
  /** @type {any} */
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!res.ok) {
    const code = body && typeof body.code === "string" ? body.code : `http-${res.status}`;
    const message = body && typeof body.message === "string" ? body.message : text.slice(0, 200) || res.statusText || `HTTP ${res.status}`;
    throw new ApiError(res.status, code, message);
  }
  if (body === null) throw new ApiError(res.status, "bad-response", `${method} ${path}: the body is not JSON`);
  return body;
}

/** @param {unknown} value */
function str(value) {
  return typeof value === "string" ? value : value === undefined || value === null ? "" : String(value);
}

/** @param {unknown} value */
function numOrNull(value) {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

/**
 * @param {any} raw
 * @returns {RoomSummary}
 */
function toRoomSummary(raw) {
  return { name: str(raw?.name), members: numOrNull(raw?.members) ?? 0, capacity: numOrNull(raw?.capacity), created: str(raw?.created) };
}

/**
 * @param {any} raw
 * @returns {Member}
 */
function toMember(raw) {
  let meta = null;
  if (raw && raw.meta !== undefined) {
    try {
      meta = JSON.stringify(raw.meta) ?? null;
    } catch {
      meta = null;
    }
  }
  return {
    id: str(raw?.id),
    user: raw && raw.user !== undefined && raw.user !== null ? str(raw.user) : null,
    meta,
    node: str(raw?.node),
    joined: str(raw?.joined),
  };
}

/**
 * @param {any} raw
 * @returns {NodeInfo}
 */
function toNode(raw) {
  return {
    id: str(raw?.id),
    address: str(raw?.address),
    version: str(raw?.version),
    started: str(raw?.started),
    uptime: numOrNull(raw?.uptime_seconds),
    connections: numOrNull(raw?.connections),
    rooms: numOrNull(raw?.rooms),
    messagesIn: numOrNull(raw?.messages_in),
  };
}

/** Every room, following `next_cursor` to the last page. */
async function fetchAllRooms() {
  /** @type {Map<string, RoomSummary>} */
  const rooms = new Map();
  const seen = new Set();
  let cursor = /** @type {string | null} */ (null);
  for (let page = 0; page < MAX_PAGES; page++) {
    let path = `/api/v1/rooms?limit=${PAGE_LIMIT}`;
    if (cursor !== null) path += `&cursor=${encodeURIComponent(cursor)}`;
    const body = await api("GET", path);
    if (!Array.isArray(body.rooms)) throw new ApiError(200, "bad-response", "GET /api/v1/rooms: no `rooms` array");
    for (const raw of body.rooms) {
      const room = toRoomSummary(raw);
      rooms.set(room.name, room); // a room that moved between pages is listed once
    }
    const next = body.next_cursor;
    if (typeof next !== "string" || next === "") return [...rooms.values()];
    if (seen.has(next)) throw new ApiError(200, "bad-response", "GET /api/v1/rooms handed out the same cursor twice");
    seen.add(next);
    cursor = next;
  }
  throw new ApiError(200, "bad-response", `GET /api/v1/rooms: more than ${MAX_PAGES} pages`);
}

/**
 * One room with its members, or null if it no longer exists.
 * @param {string} name
 * @returns {Promise<RoomDetail | null>}
 */
async function fetchRoom(name) {
  try {
    const body = await api("GET", `/api/v1/rooms/${encodeURIComponent(name)}`);
    return {
      name: str(body.name) || name,
      capacity: numOrNull(body.capacity),
      created: str(body.created),
      members: Array.isArray(body.members) ? body.members.map(toMember) : [],
    };
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return null;
    throw err;
  }
}

// ---- state and polling --------------------------------------------------

const state = {
  /** Bumped whenever the key changes or is forgotten: answers to older polls are dropped. */
  generation: 0,
  timer: /** @type {ReturnType<typeof setTimeout> | undefined} */ (undefined),
  inFlight: false,
  again: false,
  /** The key in use has been accepted by one poll. */
  verified: false,
  /** The status line shows a polling error (cleared by the next good poll). */
  pollError: false,
  /** @type {RoomSummary[]} */
  rooms: [],
  /** @type {Set<string>} rooms the operator expanded */
  expanded: new Set(),
  /** @type {Map<string, RoomDetail>} */
  details: new Map(),
  /** @type {Map<string, RoomView>} */
  roomViews: new Map(),
  /** @type {Map<string, NodeView>} */
  nodeViews: new Map(),
  /** @type {Map<string, Sample[]>} */
  history: new Map(),
};

/**
 * Poll after `delay` ms, or right after the poll in flight.
 * @param {number} delay
 */
function pollSoon(delay) {
  clearTimeout(state.timer);
  state.timer = undefined;
  if (state.inFlight) {
    if (delay === 0) state.again = true;
    return;
  }
  state.timer = setTimeout(poll, delay);
}

async function poll() {
  const generation = state.generation;
  state.inFlight = true;
  try {
    const [nodesBody, rooms] = await Promise.all([api("GET", "/api/v1/nodes"), fetchAllRooms()]);
    if (!Array.isArray(nodesBody.nodes)) throw new ApiError(200, "bad-response", "GET /api/v1/nodes: no `nodes` array");
    const names = new Set(rooms.map((r) => r.name));
    for (const name of state.expanded) if (!names.has(name)) state.expanded.delete(name);
    const wanted = [...state.expanded];
    const details = await Promise.all(wanted.map((name) => fetchRoom(name)));
    if (generation !== state.generation) return;
    state.rooms = rooms;
    state.details = new Map();
    wanted.forEach((name, i) => {
      const detail = details[i];
      if (detail) state.details.set(name, detail);
    });
    renderNodes(nodesBody.nodes.map(toNode));
    renderRooms();
    setText(ui.updated, `updated ${clock(new Date())}`);
    setBadge("open", "live");
    if (state.pollError) {
      state.pollError = false;
      showStatus("idle", "");
    }
    if (!state.verified) {
      state.verified = true;
      showDash();
    }
  } catch (err) {
    if (generation !== state.generation) return;
    const error = err instanceof ApiError ? err : new ApiError(0, "client-error", err instanceof Error ? err.message : String(err));
    if (error.status === 401) {
      unauthorized(error);
      return;
    }
    setBadge("error", "error");
    state.pollError = true;
    showStatus("error", `Polling failed: ${error.code}: ${error.message}`, error.code);
    if (!state.verified) showDash();
  } finally {
    state.inFlight = false;
    const again = state.again;
    state.again = false;
    if (getKey()) pollSoon(again ? 0 : POLL_MS);
  }
}

/**
 * Start polling with the stored key.
 * @param {{ verified: boolean }} options a key from storage was accepted before; a typed one is checked first
 */
function start({ verified }) {
  reset();
  state.verified = verified;
  ui.forget.classList.remove("hidden");
  ui.badge.classList.remove("hidden");
  setBadge("connecting", "connecting");
  if (verified) showDash();
  pollSoon(0);
}

/** Drop every piece of data shown and stop polling. */
function reset() {
  state.generation++;
  clearTimeout(state.timer);
  state.timer = undefined;
  state.verified = false;
  state.pollError = false;
  state.rooms = [];
  state.expanded.clear();
  state.details.clear();
  state.history.clear();
  for (const view of state.roomViews.values()) view.tbody.remove();
  state.roomViews.clear();
  for (const view of state.nodeViews.values()) view.row.remove();
  state.nodeViews.clear();
  setText(ui.totalNodes, "0");
  setText(ui.totalRooms, "0");
  setText(ui.totalPeers, "0");
  setText(ui.updated, "");
  ui.nodesEmpty.classList.remove("hidden");
  ui.roomsEmpty.classList.remove("hidden");
  showStatus("idle", "");
}

/**
 * The key was refused: forget it and ask again.
 * @param {ApiError} error
 */
function unauthorized(error) {
  clearKey();
  reset();
  showKeyView(`The server refused the API key (${error.code}: ${error.message}). Enter it again.`);
}

function forget() {
  clearKey();
  reset();
  showKeyView("");
}

// ---- views --------------------------------------------------------------

/** @param {string} error */
function showKeyView(error) {
  ui.dashView.classList.add("hidden");
  ui.forget.classList.add("hidden");
  ui.badge.classList.add("hidden");
  ui.keyView.classList.remove("hidden");
  ui.keySubmit.disabled = false;
  setText(ui.keySubmit, "Open dashboard");
  ui.keyInput.value = "";
  setText(ui.keyError, error);
  ui.keyError.classList.toggle("hidden", !error);
  ui.keyInput.focus();
}

function showDash() {
  ui.keyView.classList.add("hidden");
  ui.keyError.classList.add("hidden");
  ui.dashView.classList.remove("hidden");
}

/**
 * @param {string} badgeState
 * @param {string} label
 */
function setBadge(badgeState, label) {
  ui.badge.dataset.state = badgeState;
  setText(ui.badge, label);
}

/**
 * The status line: results of actions and API errors (`code: message`).
 * @param {"idle" | "ok" | "error" | "busy"} kind
 * @param {string} text
 * @param {string} [code] the API error code, as data-code
 */
function showStatus(kind, text, code) {
  ui.status.dataset.state = kind;
  if (code) ui.status.dataset.code = code;
  else delete ui.status.dataset.code;
  setText(ui.status, text);
}

/** "14:03:27" */
function clock(date = new Date()) {
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}

/**
 * An RFC 3339 time as "14:03:27 (3m ago)", or the raw text if it does not parse.
 * @param {string} iso
 */
function formatTime(iso) {
  const date = new Date(iso);
  if (!iso || Number.isNaN(date.getTime())) return iso || "—";
  const today = new Date().toDateString() === date.toDateString();
  const when = today ? clock(date) : `${date.toLocaleDateString()} ${clock(date)}`;
  return `${when} (${formatDuration((Date.now() - date.getTime()) / 1000)} ago)`;
}

/**
 * "12s", "5m 06s", "3h 04m", "2d 03h".
 * @param {number} seconds
 */
function formatDuration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const pad = (/** @type {number} */ n) => String(n).padStart(2, "0");
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${pad(Math.floor(s / 60) % 60)}m`;
  return `${Math.floor(s / 86400)}d ${pad(Math.floor(s / 3600) % 24)}h`;
}

/** @param {number | null} n */
function formatCount(n) {
  return n === null ? "—" : n.toLocaleString();
}

/** @param {number | null} rate */
function formatRate(rate) {
  if (rate === null) return "…";
  return rate < 10 ? rate.toFixed(1) : Math.round(rate).toLocaleString();
}

// ---- nodes --------------------------------------------------------------

/** @param {NodeInfo[]} nodes */
function renderNodes(nodes) {
  const now = performance.now();
  const ids = new Set(nodes.map((n) => n.id));
  for (const [id, view] of state.nodeViews) {
    if (!ids.has(id)) {
      view.row.remove();
      state.nodeViews.delete(id);
      state.history.delete(id);
    }
  }
  for (const node of nodes) {
    let view = state.nodeViews.get(node.id);
    if (!view) {
      view = createNodeView(node);
      state.nodeViews.set(node.id, view);
    }
    // A restarted node (new start time, or its counter went backwards) starts a new history.
    let samples = state.history.get(node.id) ?? [];
    const last = samples.at(-1);
    if (view.started !== node.started || (last && last.messages !== null && node.messagesIn !== null && node.messagesIn < last.messages)) {
      samples = [];
      view.started = node.started;
    }
    const prev = samples.at(-1);
    let rate = null;
    if (prev && prev.messages !== null && node.messagesIn !== null && now > prev.t) {
      rate = (node.messagesIn - prev.messages) / ((now - prev.t) / 1000);
    }
    samples.push({ t: now, messages: node.messagesIn, connections: node.connections, rate });
    while (samples.length > 0 && now - samples[0].t > HISTORY_MS) samples.shift();
    state.history.set(node.id, samples);

    setText(view.address, node.address || "—");
    setText(view.version, node.version || "—");
    setText(view.uptime, node.uptime === null ? "—" : formatDuration(node.uptime));
    setTitle(view.uptime, node.started ? `started ${node.started}` : "");
    setText(view.connections, formatCount(node.connections));
    setText(view.rooms, formatCount(node.rooms));
    setText(view.rate, formatRate(rate));
    setTitle(view.rate, node.messagesIn === null ? "" : `${node.messagesIn.toLocaleString()} client messages received in total`);
    view.canvas.setAttribute(
      "aria-label",
      `messages per second ${formatRate(rate)}, connections ${formatCount(node.connections)}, over the last ${HISTORY_MS / 60000} minutes`,
    );
    ui.nodes.append(view.row); // keeps the server's order
    drawSparkline(view.canvas, samples, now);
  }
  ui.nodesEmpty.classList.toggle("hidden", nodes.length > 0);
  setText(ui.totalNodes, String(nodes.length));
}

/**
 * @param {NodeInfo} node
 * @returns {NodeView}
 */
function createNodeView(node) {
  const td = (/** @type {string} */ testid, className = "") => el("td", { testid, className });
  const canvas = el("canvas", { className: "spark", testid: "node-chart" });
  canvas.setAttribute("role", "img");
  canvas.width = 160;
  canvas.height = 36;
  const idCell = el("td", { className: "mono", testid: "node-id", text: node.id, title: node.id });
  const view = {
    row: el("tr", { testid: "node-row" }),
    address: td("node-address", "mono"),
    version: td("node-version"),
    uptime: td("node-uptime"),
    connections: td("node-connections", "num"),
    rooms: td("node-rooms", "num"),
    rate: td("node-rate", "num"),
    canvas,
    started: node.started,
  };
  view.row.dataset.node = node.id;
  view.row.append(idCell, view.address, view.version, view.uptime, view.connections, view.rooms, view.rate, el("td", { className: "chart" }, canvas));
  return view;
}

/**
 * @param {string} name
 * @param {string} fallback
 */
function cssColor(name, fallback) {
  const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return value || fallback;
}

/**
 * Two lines over the last HISTORY_MS: messages per second and connections, each scaled to its own maximum.
 * @param {HTMLCanvasElement} canvas
 * @param {Sample[]} samples
 * @param {number} now
 */
function drawSparkline(canvas, samples, now) {
  const dpr = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 160;
  const height = canvas.clientHeight || 36;
  const pixelWidth = Math.round(width * dpr);
  const pixelHeight = Math.round(height * dpr);
  if (canvas.width !== pixelWidth) canvas.width = pixelWidth;
  if (canvas.height !== pixelHeight) canvas.height = pixelHeight;
  const ctx = canvas.getContext("2d");
  if (!ctx) return;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);

  const pad = 3;
  ctx.strokeStyle = cssColor("--border", "#e2e5ec");
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(0, height - pad + 0.5);
  ctx.lineTo(width, height - pad + 0.5);
  ctx.stroke();

  const x = (/** @type {number} */ t) => width - ((now - t) / HISTORY_MS) * width;
  /**
   * @param {(s: Sample) => number | null} value
   * @param {string} color
   */
  const line = (value, color) => {
    const points = samples.map((s) => /** @type {[number, number | null]} */ ([s.t, value(s)])).filter((p) => p[1] !== null);
    if (points.length === 0) return;
    const max = Math.max(1, ...points.map((p) => /** @type {number} */ (p[1])));
    const y = (/** @type {number} */ v) => height - pad - (v / max) * (height - 2 * pad);
    ctx.strokeStyle = color;
    ctx.fillStyle = color;
    ctx.lineWidth = 1.5;
    ctx.lineJoin = "round";
    ctx.beginPath();
    points.forEach(([t, v], i) => {
      if (i === 0) ctx.moveTo(x(t), y(/** @type {number} */ (v)));
      else ctx.lineTo(x(t), y(/** @type {number} */ (v)));
    });
    ctx.stroke();
    const [lt, lv] = points[points.length - 1];
    ctx.beginPath();
    ctx.arc(x(lt) - 1.5, y(/** @type {number} */ (lv)), 2, 0, Math.PI * 2);
    ctx.fill();
  };
  line((s) => s.connections, cssColor("--ok", "#15803d"));
  line((s) => s.rate, cssColor("--accent", "#4453e6"));
}

// ---- rooms and members --------------------------------------------------

function query() {
  return ui.search.value.trim().toLowerCase();
}

function renderRooms() {
  const q = query();
  const names = new Set(state.rooms.map((r) => r.name));
  for (const [name, view] of state.roomViews) {
    if (!names.has(name)) {
      view.tbody.remove();
      state.roomViews.delete(name);
    }
  }
  let visible = 0;
  let members = 0;
  for (const room of state.rooms) {
    members += room.members;
    let view = state.roomViews.get(room.name);
    if (!view) {
      view = createRoomView(room);
      state.roomViews.set(room.name, view);
    }
    view.summary = room;
    const detail = state.details.get(room.name) ?? null;
    const expanded = state.expanded.has(room.name);
    setText(view.members, formatCount(room.members));
    setText(view.capacity, room.capacity === null ? "—" : formatCount(room.capacity));
    setText(view.created, formatTime(room.created));
    setTitle(view.created, room.created);
    view.toggle.setAttribute("aria-expanded", String(expanded));
    view.detailRow.classList.toggle("hidden", !expanded);

    const nameMatches = !q || room.name.toLowerCase().includes(q);
    const shownMembers = renderMembers(view, expanded ? detail : null, nameMatches ? "" : q, expanded);
    const show = nameMatches || shownMembers > 0;
    view.tbody.classList.toggle("hidden", !show);
    if (show) visible++;
    ui.roomsTable.append(view.tbody); // keeps the server's order (by name)
  }
  setText(ui.totalRooms, String(state.rooms.length));
  setText(ui.totalPeers, String(members));
  ui.roomsEmpty.classList.toggle("hidden", visible > 0);
  setText(ui.roomsEmpty, state.rooms.length === 0 ? "No rooms." : "No rooms match the filter.");
}

/**
 * Update one room's member table. Returns how many members match `q` ("" shows all).
 * @param {RoomView} view
 * @param {RoomDetail | null} detail
 * @param {string} q
 * @param {boolean} expanded
 */
function renderMembers(view, detail, q, expanded) {
  const list = detail?.members ?? [];
  const ids = new Set(list.map((m) => m.id));
  for (const [id, mv] of view.memberViews) {
    if (!ids.has(id)) {
      mv.row.remove();
      view.memberViews.delete(id);
    }
  }
  let shown = 0;
  for (const member of list) {
    let mv = view.memberViews.get(member.id);
    if (!mv) {
      mv = createMemberView(view, member);
      view.memberViews.set(member.id, mv);
    }
    mv.member = member;
    setText(mv.user, member.user ?? "—");
    mv.user.classList.toggle("muted", member.user === null);
    const meta = member.meta ?? "—";
    setText(mv.meta, meta.length > META_CHARS ? `${meta.slice(0, META_CHARS - 1)}…` : meta);
    setTitle(mv.meta, member.meta ?? "");
    mv.meta.classList.toggle("muted", member.meta === null);
    setText(mv.node, member.node || "—");
    setTitle(mv.node, member.node);
    setText(mv.joined, formatTime(member.joined));
    setTitle(mv.joined, member.joined);
    const matches = !q || member.id.toLowerCase().includes(q) || (member.user ?? "").toLowerCase().includes(q);
    mv.row.classList.toggle("hidden", !matches);
    if (matches) shown++;
    view.memberBody.append(mv.row);
  }
  if (!expanded) setText(view.memberEmpty, "");
  else if (!detail) setText(view.memberEmpty, "Loading members…");
  else if (list.length === 0) setText(view.memberEmpty, "Nobody is in this room.");
  else if (shown === 0) setText(view.memberEmpty, "No member matches the filter.");
  else setText(view.memberEmpty, "");
  view.memberEmpty.classList.toggle("hidden", view.memberEmpty.textContent === "");
  return shown;
}

/**
 * @param {RoomSummary} room
 * @returns {RoomView}
 */
function createRoomView(room) {
  const name = room.name;
  const toggle = el("button", { className: "room-toggle", testid: "room-toggle", title: "Show or hide the members" }, el("span", { className: "caret" }), el("span", { className: "room-name", text: name }));
  toggle.type = "button";
  toggle.setAttribute("aria-expanded", "false");
  const close = el("button", { className: "danger small", testid: "close-room", text: "Close room" });
  close.type = "button";
  const row = el("tr", { className: "room-row", testid: "room-row" });
  row.dataset.room = name;
  const members = el("td", { className: "num", testid: "room-members" });
  const capacity = el("td", { className: "num", testid: "room-capacity" });
  const created = el("td", { testid: "room-created" });
  row.append(el("td", {}, toggle), members, capacity, created, el("td", { className: "actions" }, close));

  const memberBody = el("tbody");
  const memberTable = el(
    "table",
    { className: "grid members", testid: "members-table" },
    el("thead", {}, el("tr", {}, ...["Peer", "User", "Meta", "Node", "Joined", ""].map((h) => el("th", { text: h })))),
    memberBody,
  );
  const memberEmpty = el("p", { className: "empty hidden" });
  const detailCell = el("td", {}, el("div", { className: "table-wrap" }, memberTable), memberEmpty);
  detailCell.colSpan = 5;
  const detailRow = el("tr", { className: "members-row hidden" }, detailCell);
  const tbody = el("tbody", { className: "room" }, row, detailRow);
  tbody.dataset.room = name;

  /** @type {RoomView} */
  const view = { tbody, row, toggle, members, capacity, created, close, detailRow, detailCell, memberBody, memberEmpty, memberViews: new Map(), summary: room };
  toggle.addEventListener("click", () => toggleRoom(name));
  close.addEventListener("click", () => closeRoom(view));
  return view;
}

/**
 * @param {RoomView} roomView
 * @param {Member} member
 * @returns {MemberView}
 */
function createMemberView(roomView, member) {
  const remove = el("button", { className: "danger small", testid: "remove-peer", text: "Remove" });
  remove.type = "button";
  const row = el("tr", { className: "member-row", testid: "member-row" });
  row.dataset.peer = member.id;
  row.dataset.room = roomView.summary.name;
  /** @type {MemberView} */
  const mv = {
    row,
    id: el("td", { className: "mono", testid: "member-id", text: member.id }),
    user: el("td", { testid: "member-user" }),
    meta: el("td", { className: "mono meta", testid: "member-meta" }),
    node: el("td", { className: "mono", testid: "member-node" }),
    joined: el("td", { testid: "member-joined" }),
    remove,
    member,
  };
  row.append(mv.id, mv.user, mv.meta, mv.node, mv.joined, el("td", { className: "actions" }, remove));
  remove.addEventListener("click", () => removePeer(mv));
  return mv;
}

/** @param {string} name */
function toggleRoom(name) {
  if (state.expanded.has(name)) {
    state.expanded.delete(name);
    state.details.delete(name);
  } else {
    state.expanded.add(name);
  }
  renderRooms();
  if (state.expanded.has(name)) pollSoon(0);
}

/**
 * Report a failed action in the status line (a 401 asks for the key again).
 * @param {unknown} err
 * @param {string} what
 */
function actionFailed(err, what) {
  const error = err instanceof ApiError ? err : new ApiError(0, "client-error", err instanceof Error ? err.message : String(err));
  if (error.status === 401) {
    unauthorized(error);
    return;
  }
  state.pollError = false; // an action's error stays until the next action
  showStatus("error", `${what} failed: ${error.code}: ${error.message}`, error.code);
}

/** @param {MemberView} mv */
async function removePeer(mv) {
  const { member } = mv;
  const who = member.user ? `${member.id} (${member.user})` : member.id;
  const reason = ui.reason.value.trim();
  const question = `Remove peer ${who}?\n\nIts connection is closed (code 4003${reason ? `, reason "${reason}"` : ""}) and it cannot resume its session.`;
  if (!confirm(question)) return;
  let path = `/api/v1/peers/${encodeURIComponent(member.id)}`;
  if (reason) path += `?reason=${encodeURIComponent(reason)}`;
  const generation = state.generation;
  mv.remove.disabled = true;
  showStatus("busy", `Removing ${who}…`);
  try {
    await api("DELETE", path);
    if (generation === state.generation) showStatus("ok", `Removed peer ${who}.`);
  } catch (err) {
    if (generation === state.generation) actionFailed(err, `Removing ${who}`);
  } finally {
    mv.remove.disabled = false;
    if (generation === state.generation) pollSoon(0);
  }
}

/** @param {RoomView} view */
async function closeRoom(view) {
  const { name, members } = view.summary;
  const question = `Close room "${name}"?\n\nIts ${members} member${members === 1 ? "" : "s"} get room-closed and leave it (their connections stay open).`;
  if (!confirm(question)) return;
  const generation = state.generation;
  view.close.disabled = true;
  showStatus("busy", `Closing room ${name}…`);
  try {
    await api("DELETE", `/api/v1/rooms/${encodeURIComponent(name)}`);
    if (generation === state.generation) {
      showStatus("ok", `Closed room ${name}.`);
      state.expanded.delete(name);
      state.details.delete(name);
    }
  } catch (err) {
    if (generation === state.generation) actionFailed(err, `Closing room ${name}`);
  } finally {
    view.close.disabled = false;
    if (generation === state.generation) pollSoon(0);
  }
}

// ---- wiring -------------------------------------------------------------

ui.keyForm.addEventListener("submit", (event) => {
  event.preventDefault(); // never a navigation: the key must not reach a URL
  const key = ui.keyInput.value.trim();
  if (!key) return;
  if (!/^[\x20-\x7e]+$/.test(key)) {
    setText(ui.keyError, "An API key is printable ASCII (it is sent in an HTTP header).");
    ui.keyError.classList.remove("hidden");
    return;
  }
  ui.keyInput.value = "";
  storeKey(key);
  ui.keySubmit.disabled = true;
  setText(ui.keySubmit, "Checking…");
  start({ verified: false });
});

ui.forget.addEventListener("click", forget);
ui.search.addEventListener("input", renderRooms);

// The relative times and uptimes in the tables are refreshed by each poll; nothing else ticks.
if (getKey()) start({ verified: true });
else showKeyView("");
