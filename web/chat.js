// Broadcast chat over /ws/broadcast?channel=NAME. Messages are JSON
// `{"name": ..., "text": ...}`; anything else is shown as it came.
import { backoffDelay } from "/sdk/switchboard.js";
import { byId, el, clock, setBadge, wsUrl } from "/common.js";

const params = new URLSearchParams(location.search);
const nameInput = /** @type {HTMLInputElement} */ (byId("name"));
const channelInput = /** @type {HTMLInputElement} */ (byId("channel"));
const textInput = /** @type {HTMLInputElement} */ (byId("text"));
const sendBtn = /** @type {HTMLButtonElement} */ (byId("send"));
const messages = byId("messages");
const status = byId("status");

nameInput.value = params.get("name") || localStorage.getItem("switchboard.name") || `Guest ${Math.floor(Math.random() * 900 + 100)}`;
channelInput.value = params.get("channel") || "lobby";

/** @type {WebSocket | null} */
let ws = null;
let attempt = 0;
/** @type {ReturnType<typeof setTimeout> | undefined} */
let retry;
let sent = 0;
let received = 0;

/** @param {{ who?: string, text: string, self?: boolean, system?: boolean }} msg */
function show({ who, text, self = false, system = false }) {
  messages.querySelector(".empty")?.remove();
  const item = el(
    "li",
    { className: system ? "system" : self ? "self" : "" },
    who ? el("span", { className: "who" }, `${who} · ${clock()}`) : null,
    text,
  );
  messages.append(item);
  messages.scrollTop = messages.scrollHeight;
  byId("count").textContent = `${sent} sent · ${received} received`;
}

function connect() {
  clearTimeout(retry);
  const channel = channelInput.value.trim() || "lobby";
  byId("title").textContent = `#${channel}`;
  const socket = new WebSocket(wsUrl(`/ws/broadcast?channel=${encodeURIComponent(channel)}`));
  ws = socket;
  setBadge(status, "connecting");
  sendBtn.disabled = true;
  socket.onopen = () => {
    attempt = 0;
    setBadge(status, "open", "connected");
    sendBtn.disabled = false;
    show({ text: `joined #${channel}`, system: true });
  };
  socket.onmessage = async (event) => {
    const raw = typeof event.data === "string" ? event.data : await new Blob([event.data]).text();
    received++;
    try {
      const msg = JSON.parse(raw);
      if (msg && typeof msg.text === "string") {
        show({ who: String(msg.name ?? "someone"), text: msg.text });
        return;
      }
    } catch {
      // not JSON: show it as it is
    }
    show({ who: "raw", text: raw });
  };
  socket.onclose = () => {
    if (ws !== socket) return;
    ws = null;
    sendBtn.disabled = true;
    const delay = backoffDelay(attempt++);
    setBadge(status, "reconnecting");
    retry = setTimeout(connect, delay);
  };
  socket.onerror = () => {};
}

byId("settings").addEventListener("submit", (event) => {
  event.preventDefault();
  localStorage.setItem("switchboard.name", nameInput.value.trim());
  const old = ws;
  ws = null;
  old?.close();
  connect();
});

byId("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = textInput.value.trim();
  if (!text || !ws || ws.readyState !== WebSocket.OPEN) return;
  const name = nameInput.value.trim() || "anonymous";
  ws.send(JSON.stringify({ name, text }));
  sent++;
  show({ who: `${name} (you)`, text, self: true });
  textInput.value = "";
  textInput.focus();
});

connect();
