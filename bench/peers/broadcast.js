// The seeds' broadcast server: every message goes to every other open client.
// As in the seed, with one addition so that the load generator can run many
// rooms at once: the `channel` query parameter (like Switchboard's
// /ws/broadcast?channel=NAME) picks the group; without it, every client is in
// one group, exactly the seed. No per-message logging.
"use strict";

const WebSocket = require("ws");
const { listen } = require("./common");

const channels = new Map(); // name -> Set of sockets

listen(() => (ws, req) => {
  const name = new URL(req.url ?? "/", "http://seed").searchParams.get("channel") ?? "";
  let members = channels.get(name);
  if (!members) {
    members = new Set();
    channels.set(name, members);
  }
  members.add(ws);
  ws.on("message", (message, isBinary) => {
    for (const client of members) {
      if (client !== ws && client.readyState === WebSocket.OPEN) {
        client.send(message, { binary: isBinary });
      }
    }
  });
  ws.on("close", () => {
    members.delete(ws);
    if (members.size === 0) channels.delete(name);
  });
  ws.on("error", () => {});
});
