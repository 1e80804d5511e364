// Echo tester: the seed's WebSocket client, against /ws/echo.
import { byId, logLine, setBadge, wsUrl } from "/common.js";

const status = byId("status");
const connectBtn = /** @type {HTMLButtonElement} */ (byId("connect"));
const disconnectBtn = /** @type {HTMLButtonElement} */ (byId("disconnect"));
const sendBtn = /** @type {HTMLButtonElement} */ (byId("send"));
const input = /** @type {HTMLInputElement} */ (byId("message"));
const form = /** @type {HTMLFormElement} */ (byId("form"));
const log = byId("log");

/** @type {WebSocket | null} */
let ws = null;

function render() {
  const state = !ws ? "closed" : ["connecting", "open", "closing", "closed"][ws.readyState];
  setBadge(status, state);
  connectBtn.disabled = !!ws && ws.readyState !== WebSocket.CLOSED;
  disconnectBtn.disabled = !ws || ws.readyState !== WebSocket.OPEN;
  sendBtn.disabled = !ws || ws.readyState !== WebSocket.OPEN;
}

function connect() {
  const socket = new WebSocket(wsUrl("/ws/echo"));
  ws = socket;
  socket.onopen = () => {
    logLine(log, "sys", "connected to /ws/echo");
    render();
    input.focus();
  };
  socket.onmessage = (event) => {
    logLine(log, "in", typeof event.data === "string" ? event.data : "[binary]", "recv");
  };
  socket.onclose = (event) => {
    if (ws === socket) ws = null;
    logLine(log, "sys", `disconnected (code ${event.code})`);
    render();
  };
  socket.onerror = () => {
    logLine(log, "sys", "connection error");
  };
  render();
}

connectBtn.addEventListener("click", connect);
disconnectBtn.addEventListener("click", () => ws?.close(1000, "bye"));
byId("clear").addEventListener("click", () => log.replaceChildren());

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = input.value;
  // Send only when the socket is open (the button is disabled otherwise).
  if (!ws || ws.readyState !== WebSocket.OPEN || text === "") return;
  ws.send(text);
  logLine(log, "out", text, "sent");
  input.select();
});

connect();
