// Server-Sent Events viewer: /sse, and a room's membership from /sse/rooms/{room}.
import { byId, el, logLine, setBadge, initials, colorFor } from "/common.js";

const status = byId("status");
const toggle = /** @type {HTMLButtonElement} */ (byId("toggle"));
const log = byId("log");
let count = 0;

/** @type {EventSource | null} */
let source = null;

/** Test hook: what this page has seen. */
const sseDemo = {
  /** @type {{ seq: number, time: string, message: string, id: string }[]} */
  events: [],
  get state() {
    return status.dataset.state;
  },
  /** @type {{ id: string, meta?: any }[]} */
  members: [],
};
Object.assign(window, { sseDemo });

function start() {
  const es = new EventSource("/sse");
  source = es;
  setBadge(status, "connecting");
  es.onopen = () => setBadge(status, "open", "streaming");
  es.onmessage = (event) => {
    /** @type {{ seq?: number, time?: string, message?: string }} */
    let data = {};
    try {
      data = JSON.parse(event.data);
    } catch {
      // keep the raw text below
    }
    count++;
    sseDemo.events.push({ seq: data.seq ?? NaN, time: data.time ?? "", message: data.message ?? "", id: event.lastEventId });
    byId("count").textContent = String(count);
    byId("seq").textContent = data.seq !== undefined ? String(data.seq) : "–";
    byId("time").textContent = data.time ? new Date(data.time).toLocaleTimeString([], { hour12: false }) : "–";
    logLine(log, "in", data.message !== undefined ? `${data.message} (seq ${data.seq})` : event.data, `#${event.lastEventId || "?"}`);
  };
  es.onerror = () => {
    // EventSource reconnects by itself while readyState is CONNECTING.
    setBadge(status, es.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
  };
  toggle.textContent = "Pause";
}

function stop() {
  source?.close();
  source = null;
  setBadge(status, "closed", "paused");
  toggle.textContent = "Resume";
}

toggle.addEventListener("click", () => (source ? stop() : start()));
start();

// ---- room watcher ---------------------------------------------------------

const roomStatus = byId("room-status");
const roomInput = /** @type {HTMLInputElement} */ (byId("room"));
const members = byId("members");
/** @type {EventSource | null} */
let roomSource = null;
/** @type {Map<string, { id: string, meta?: any }>} */
let peers = new Map();

/** @param {string} room */
function renderMembers(room) {
  sseDemo.members = [...peers.values()];
  byId("room-summary").textContent =
    peers.size === 0 ? `Nobody is in “${room}” right now.` : `${peers.size} in “${room}”:`;
  members.replaceChildren(
    ...[...peers.values()].map((p) => {
      const name = typeof p.meta?.name === "string" ? p.meta.name : "(no name)";
      return el(
        "li",
        {},
        el("span", { className: "avatar", style: `background:${colorFor(p.id)}` }, initials(name)),
        el("span", { className: "who" }, el("strong", {}, name), el("small", {}, p.id)),
      );
    }),
  );
}

/** @param {string} room */
function watch(room) {
  roomSource?.close();
  peers = new Map();
  const es = new EventSource(`/sse/rooms/${encodeURIComponent(room)}`);
  roomSource = es;
  setBadge(roomStatus, "connecting");
  es.onopen = () => setBadge(roomStatus, "open", "watching");
  es.onerror = () => setBadge(roomStatus, es.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
  es.onmessage = (event) => {
    const msg = JSON.parse(event.data);
    if (msg.type === "room-state") peers = new Map(msg.peers.map((/** @type {any} */ p) => [p.id, p]));
    else if (msg.type === "peer-joined") peers.set(msg.data, { id: msg.data, meta: msg.meta });
    else if (msg.type === "peer-left") peers.delete(msg.data);
    renderMembers(room);
  };
}

byId("room-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const room = roomInput.value.trim();
  if (room) watch(room);
});

const initialRoom = new URLSearchParams(location.search).get("room");
if (initialRoom) {
  roomInput.value = initialRoom;
  watch(initialRoom);
}
