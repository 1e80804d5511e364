// The seeds' signaling server: `join` tells the others `peer-joined` (data: the
// new peer's id), `sdp` and `ice-candidate` go to the peer named by `target`,
// and a closed connection tells the others `peer-left`.
//
// The seed as published cannot be driven as written, so this version makes the
// smallest changes that let a client use it, and is charitable where the seed
// is slow (so that ratios against it are not inflated):
// - the seed parses the MessageEvent instead of its data (`JSON.parse(message)`
//   always throws); this parses the data;
// - a peer never learns its own id in the seed, so nobody can address it; this
//   sends `{"type":"welcome","id":ID}` on connect;
// - the seed relays without saying who from; this adds `from` (as Switchboard does);
// - `join` may name a `room`: `peer-joined` and `peer-left` then go to that room's
//   other members only (without `room`: to every other client, as in the seed),
//   and the joiner gets `{"type":"joined","room":ROOM}`, so joining is a round trip
//   as it is on Switchboard;
// - the seed finds the target by scanning every client per message; this looks
//   it up in a Map;
// - no logging per message.
"use strict";

const crypto = require("node:crypto");
const WebSocket = require("ws");
const { listen } = require("./common");

const byId = new Map(); // id -> socket
const rooms = new Map(); // room -> Set of ids

function othersIn(wss, room, id) {
  if (room === undefined) {
    return [...wss.clients].filter((client) => client.peerId !== id);
  }
  const members = rooms.get(room) ?? new Set();
  return [...members].filter((other) => other !== id).map((other) => byId.get(other));
}

function sendAll(sockets, text) {
  for (const socket of sockets) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(text);
  }
}

listen((wss) => (ws) => {
  const id = crypto.randomBytes(16).toString("base64url");
  ws.peerId = id;
  byId.set(id, ws);
  let room; // the room joined, if any
  ws.send(JSON.stringify({ type: "welcome", id }));

  ws.on("message", (message) => {
    let data;
    try {
      data = JSON.parse(message);
    } catch {
      return;
    }
    if (data.type === "join") {
      if (typeof data.room === "string") {
        room = data.room;
        let members = rooms.get(room);
        if (!members) {
          members = new Set();
          rooms.set(room, members);
        }
        members.add(id);
      }
      sendAll(othersIn(wss, room, id), JSON.stringify({ type: "peer-joined", data: id }));
      ws.send(JSON.stringify({ type: "joined", room: data.room }));
    } else if (data.type === "ice-candidate" || data.type === "sdp") {
      const target = byId.get(data.target);
      if (target && target.readyState === WebSocket.OPEN) {
        data.from = id;
        target.send(JSON.stringify(data));
      }
    }
  });

  ws.on("close", () => {
    byId.delete(id);
    if (room !== undefined) {
      const members = rooms.get(room);
      members.delete(id);
      if (members.size === 0) rooms.delete(room);
    }
    sendAll(othersIn(wss, room, id), JSON.stringify({ type: "peer-left", data: id }));
  });
  ws.on("error", () => {});
});
