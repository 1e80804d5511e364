// Unit tests of the SDK (../switchboard.js, the file the server ships)
// in Node, with a fake WebSocket and a fake RTCPeerConnection. The browser
// tests are the proof; these pin down the corner cases that are hard to
// produce on demand in a browser: glare, early candidates, reconnect timing.

import { test } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import {
  SwitchboardClient,
  SwitchboardError,
  PeerMesh,
  SERVER_SENDER,
  backoffDelay,
  isPolite,
  signalingUrl,
} from "../switchboard.js";

// ---------------------------------------------------------------------------
// Fakes

class FakeSocket {
  /** @type {FakeSocket[]} */
  static all = [];
  constructor(url) {
    this.url = url;
    this.sent = [];
    this.closed = false;
    this.onmessage = this.onclose = this.onerror = null;
    FakeSocket.all.push(this);
  }
  /** 1 (OPEN) until the server begins to close it (2, CLOSING) or it is closed (3). */
  get readyState() {
    return this.closed ? 3 : this.closing ? 2 : 1;
  }
  send(data) {
    if (this.closed) throw new Error("closed");
    // A browser discards what is sent on a CLOSING socket, silently.
    if (this.closing) return;
    this.sent.push(JSON.parse(data));
  }
  // The server's close frame arrived; the close event comes later.
  closeFrame() {
    this.closing = true;
  }
  close() {
    this.closed = true;
  }
  // server side
  push(msg) {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }
  drop(code = 1006, reason = "") {
    this.closed = true;
    this.onclose?.({ code, reason });
  }
  last(type) {
    return [...this.sent].reverse().find((m) => m.type === type);
  }
}

function newSocket() {
  return FakeSocket.all[FakeSocket.all.length - 1];
}

async function until(fn, what = "condition", timeout = 2000) {
  const deadline = Date.now() + timeout;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

function makeClient(options = {}) {
  FakeSocket.all = [];
  return new SwitchboardClient({
    url: "ws://127.0.0.1:1/ws",
    WebSocket: FakeSocket,
    initialDelay: 5,
    maxDelay: 20,
    heartbeatInterval: 0,
    requestTimeout: 500,
    ...options,
  });
}

async function connected(client, id = "me", extra = {}) {
  const p = client.connect();
  await until(() => FakeSocket.all.length > 0, "socket");
  newSocket().push({ type: "welcome", id, ...extra });
  await p;
  return newSocket();
}

// ---------------------------------------------------------------------------
// Helpers

test("backoffDelay grows exponentially, is capped, and jitters downward", () => {
  const opts = { initialDelay: 100, maxDelay: 1000, factor: 2, jitter: 0.5 };
  assert.equal(backoffDelay(0, opts, () => 0), 100);
  assert.equal(backoffDelay(1, opts, () => 0), 200);
  assert.equal(backoffDelay(3, opts, () => 0), 800);
  assert.equal(backoffDelay(4, opts, () => 0), 1000);
  assert.equal(backoffDelay(40, opts, () => 0), 1000);
  assert.equal(backoffDelay(3, opts, () => 1), 400);
  for (let i = 0; i < 100; i++) {
    const d = backoffDelay(2, opts);
    assert.ok(d >= 200 && d <= 400, `${d} within [200, 400]`);
  }
});

test("isPolite: the lexicographically smaller id is polite", () => {
  assert.equal(isPolite("A1", "B1"), true);
  assert.equal(isPolite("B1", "A1"), false);
  assert.equal(isPolite("Vb2Qe7pWkS0yJtqg3nXh9A", "Vb2Qe7pWkS0yJtqg3nXh9B"), true);
});

test("signalingUrl maps http(s) to ws(s)", () => {
  assert.equal(signalingUrl("http://127.0.0.1:8080/ws"), "ws://127.0.0.1:8080/ws");
  assert.equal(signalingUrl("https://example.test/ws"), "wss://example.test/ws");
  assert.equal(signalingUrl("ws://127.0.0.1:1/ws"), "ws://127.0.0.1:1/ws");
});

// ---------------------------------------------------------------------------
// The client

test("connect resolves on welcome; iceServers only when the server sends them", async () => {
  const client = makeClient();
  const states = [];
  client.on("state", (e) => states.push(e.state));
  await connected(client, "p1");
  assert.equal(client.id, "p1");
  assert.equal(client.state, "open");
  assert.equal(client.iceServers, undefined);
  assert.deepEqual(states, ["connecting", "open"]);
  client.close();

  const other = makeClient();
  const ice = [{ urls: ["stun:127.0.0.1:3478"] }];
  await connected(other, "p2", { iceServers: ice });
  assert.deepEqual(other.iceServers, ice);
  other.close();
});

test("replies are matched to requests by rid, in any order", async () => {
  const client = makeClient();
  const ws = await connected(client);
  const a = client.join("a", { meta: { name: "Ada" }, capacity: 2 });
  const b = client.join("b");
  const [ja, jb] = ws.sent.filter((m) => m.type === "join");
  assert.deepEqual({ ...ja, rid: 0 }, { type: "join", room: "a", meta: { name: "Ada" }, capacity: 2, rid: 0 });
  assert.notEqual(ja.rid, jb.rid);
  ws.push({ type: "joined", room: "b", peers: [], rid: jb.rid });
  ws.push({ type: "joined", room: "a", peers: [{ id: "x", meta: { name: "X" } }], capacity: 2, rid: ja.rid });
  const ra = await a;
  const rb = await b;
  assert.equal(ra.room, "a");
  assert.deepEqual(ra.peers, [{ id: "x", meta: { name: "X" } }]);
  assert.equal(ra.capacity, 2);
  assert.equal(ra.rejoin, false);
  assert.equal(rb.room, "b");
  assert.deepEqual(client.peers("a"), [{ id: "x", meta: { name: "X" } }]);

  const sent = client.sendTo("x", { type: "offer", sdp: "v=0", rid: "mine" });
  const relay = ws.last("offer");
  assert.equal(relay.target, "x");
  assert.equal(relay.sdp, "v=0");
  assert.equal(typeof relay.rid, "number", "the client's rid replaces the caller's");
  const bc = client.broadcast({ hi: 1 }, "a");
  const bmsg = ws.last("broadcast");
  assert.deepEqual(bmsg.data, { hi: 1 });
  ws.push({ type: "ack", rid: bmsg.rid });
  ws.push({ type: "ack", rid: relay.rid });
  await Promise.all([sent, bc]);

  const ping = client.ping();
  ws.push({ type: "pong", rid: ws.last("ping").rid });
  assert.ok((await ping) >= 0);

  const left = client.leave("b");
  assert.ok(!client.rooms.has("b"));
  ws.push({ type: "left", rooms: ["b"], rid: ws.last("leave").rid });
  assert.deepEqual((await left).rooms, ["b"]);
  client.close();
});

test("errors reject the matching request; unmatched errors are events", async () => {
  const client = makeClient();
  const ws = await connected(client);
  const p = client.join("full");
  ws.push({ type: "error", code: "room-full", message: "room `full` is full (capacity 2)", rid: ws.last("join").rid });
  await assert.rejects(p, (err) => err instanceof SwitchboardError && err.code === "room-full");
  assert.ok(!client.rooms.has("full"));

  const events = [];
  client.on("error", (e) => events.push(e));
  ws.push({ type: "error", code: "malformed-json", message: "bad" });
  assert.equal(events.length, 1);
  assert.equal(events[0].code, "malformed-json");
  client.close();
});

test("a relayed message carrying the sender's rid is a relay, not a reply", async () => {
  const client = makeClient();
  const ws = await connected(client);
  const join = client.join("r");
  const rid = ws.last("join").rid;
  const relays = [];
  client.on("relay", (m) => relays.push(m));
  ws.push({ type: "signal", from: "peer", target: "me", rid, data: 1 });
  assert.equal(relays.length, 1);
  ws.push({ type: "joined", room: "r", peers: [], rid });
  await join;
  client.close();
});

test("requests time out", async () => {
  const client = makeClient({ requestTimeout: 30 });
  await connected(client);
  await assert.rejects(client.broadcast("x", "r"), (err) => err.code === "timeout");
  client.close();
});

test("reconnects with backoff and rejoins rooms with their meta; stale peers leave", async () => {
  const client = makeClient();
  const ws1 = await connected(client, "old");
  const join = client.join("call", { meta: { name: "Ada" }, capacity: 4 });
  ws1.push({ type: "joined", room: "call", peers: [{ id: "b" }, { id: "c" }], capacity: 4, rid: ws1.last("join").rid });
  await join;

  const states = [];
  const peerLeft = [];
  const joined = [];
  client.on("state", (e) => states.push(e));
  client.on("peer-left", (e) => peerLeft.push(e));
  client.on("joined", (e) => joined.push(e));
  ws1.drop();
  assert.equal(client.state, "reconnecting");
  assert.equal(states[0].attempt, 1);
  assert.ok(states[0].delay <= 5);
  // Asked for while reconnecting: sent once open, after the rejoin.
  const queued = client.broadcast("hello", "call");
  await until(() => FakeSocket.all.length === 2, "second socket");
  const ws2 = newSocket();
  assert.equal(ws2.sent.length, 0, "nothing sent before welcome");
  ws2.push({ type: "welcome", id: "new" });
  assert.equal(client.id, "new");
  const [rejoin, bc] = ws2.sent;
  assert.deepEqual({ ...rejoin, rid: 0 }, { type: "join", room: "call", meta: { name: "Ada" }, capacity: 4, rid: 0 });
  assert.equal(bc.type, "broadcast");
  ws2.push({ type: "joined", room: "call", peers: [{ id: "c" }], capacity: 4, rid: rejoin.rid });
  ws2.push({ type: "ack", rid: bc.rid });
  await queued;
  assert.deepEqual(
    peerLeft.map((e) => [e.id, e.reason]),
    [["b", "reconnect"]],
  );
  assert.equal(joined.length, 1);
  assert.equal(joined[0].rejoin, true);
  assert.deepEqual(client.peers("call"), [{ id: "c", meta: undefined }]);
  assert.equal(client.state, "open");
  client.close();
});

test("keeps retrying while the server is down; the attempt counter resets once open", async () => {
  const client = makeClient();
  const ws1 = await connected(client);
  const delays = [];
  client.on("retry", (e) => delays.push(e.attempt));
  ws1.drop();
  for (let i = 0; i < 3; i++) {
    await until(() => FakeSocket.all.length === 2 + i, `attempt ${i + 2}`);
    newSocket().drop(); // connection refused
  }
  await until(() => FakeSocket.all.length === 5, "fifth socket");
  newSocket().push({ type: "welcome", id: "back" });
  assert.deepEqual(delays, [1, 2, 3, 4]);
  newSocket().drop();
  assert.deepEqual(delays, [1, 2, 3, 4, 1]);
  client.close();
});

test("a join in flight when the connection drops is retried on the next connection", async () => {
  const client = makeClient();
  const ws1 = await connected(client);
  const join = client.join("r", { meta: { name: "Z" } });
  assert.ok(ws1.last("join"));
  ws1.drop();
  await until(() => FakeSocket.all.length === 2, "second socket");
  const ws2 = newSocket();
  ws2.push({ type: "welcome", id: "n" });
  const again = ws2.last("join");
  assert.equal(again.room, "r");
  ws2.push({ type: "joined", room: "r", peers: [], rid: again.rid });
  const result = await join;
  assert.equal(result.rejoin, false);
  client.close();
});

test("a request made while the server is closing the socket (1012) goes out on the resumed session", async () => {
  const client = makeClient();
  const ws1 = await connected(client, "me", { resume: "t1" });
  ws1.closeFrame();
  const sent = client.sendTo("peer", { n: 1 });
  assert.equal(ws1.last("signal"), undefined, "nothing is sent on a closing socket");
  ws1.drop(1012, "server restarting: reconnect");
  await until(() => FakeSocket.all.length === 2, "second socket");
  const ws2 = newSocket();
  assert.match(ws2.url, /[?&]resume=t1$/);
  ws2.push({ type: "welcome", id: "me", resume: "t2", resumed: true, rooms: [] });
  const again = ws2.last("signal");
  assert.ok(again, "sent on the resumed connection");
  assert.equal(again.n, 1);
  ws2.push({ type: "ack", rid: again.rid });
  await sent;
  client.close();
});

test("a refused rejoin drops the room", async () => {
  const client = makeClient();
  const ws1 = await connected(client);
  const join = client.join("small", { capacity: 1 });
  ws1.push({ type: "joined", room: "small", peers: [], capacity: 1, rid: ws1.last("join").rid });
  await join;
  const left = client.once("left");
  const errors = [];
  client.on("error", (e) => errors.push(e));
  ws1.drop();
  await until(() => FakeSocket.all.length === 2, "second socket");
  const ws2 = newSocket();
  ws2.push({ type: "welcome", id: "n" });
  ws2.push({ type: "error", code: "room-full", message: "full", rid: ws2.last("join").rid });
  const e = await left;
  assert.deepEqual(e.rooms, ["small"]);
  assert.equal(e.reason, "rejoin-failed");
  assert.equal(errors[0].room, "small");
  assert.ok(!client.rooms.has("small"));
  client.close();
});

test("close() rejects pending requests and stops reconnecting", async () => {
  const client = makeClient();
  await connected(client);
  const p = client.broadcast("x", "r");
  client.close();
  await assert.rejects(p, (err) => err.code === "closed");
  assert.equal(client.state, "closed");
  await sleep(30);
  assert.equal(FakeSocket.all.length, 1, "no reconnect after close()");
  await assert.rejects(client.join("r"), (err) => err.code === "not-connected");
});

test("reconnect: false closes for good and fails what was pending", async () => {
  const client = makeClient({ reconnect: false });
  const ws = await connected(client);
  const p = client.broadcast("x", "r");
  ws.drop();
  await assert.rejects(p, (err) => err.code === "disconnected");
  assert.equal(client.state, "closed");
});

test("a missing pong drops the connection and reconnects", async () => {
  const client = makeClient({ heartbeatInterval: 10, heartbeatTimeout: 20 });
  const ws = await connected(client);
  await until(() => ws.sent.some((m) => m.type === "ping"), "ping");
  await until(() => FakeSocket.all.length === 2, "reconnect after heartbeat timeout", 1000);
  assert.ok(ws.closed);
  client.close();
});

// ---------------------------------------------------------------------------
// Frames from the app's backend (the server API): room-closed, server-message,
// broadcasts from "server", and removal (close 4003)

/** Joins `room` on `ws` with `peers` already there. */
async function joinRoom(client, ws, room, peers = []) {
  const p = client.join(room);
  ws.push({ type: "joined", room, peers: peers.map((id) => ({ id })), rid: ws.last("join").rid });
  return p;
}

/** Records every client event of these types, in order, as [type, event]. */
function record(client, types) {
  const events = [];
  for (const type of types) client.on(type, (e) => events.push([type, e]));
  return events;
}

test("room-closed drops the room and its peers without a peer-left each; joining again works", async (t) => {
  FakePC.all = [];
  const client = makeClient();
  t.after(() => client.close());
  const ws = await connected(client, "me", { resume: "t1" });
  await joinRoom(client, ws, "call", ["b", "c"]);
  await joinRoom(client, ws, "lobby", ["b"]);
  const mesh = new PeerMesh(client, { room: "call", RTCPeerConnection: FakePC, dataChannels: [] });
  const removed = [];
  mesh.on("peer-removed", (e) => removed.push([e.peer.id, e.reason]));
  assert.deepEqual([...mesh.peers.keys()], ["b", "c"]);
  const events = record(client, ["room-closed", "left", "peer-left", "relay", "error"]);

  ws.push({ type: "room-closed", room: "call" });
  assert.deepEqual(events, [
    ["room-closed", { room: "call" }],
    ["left", { rooms: ["call"], reason: "room-closed" }],
  ]);
  assert.ok(!client.rooms.has("call"));
  assert.deepEqual(client.peers("call"), []);
  assert.deepEqual(client.peers("lobby"), [{ id: "b", meta: undefined }], "other rooms are untouched");
  assert.equal(client.state, "open");
  assert.deepEqual(removed.sort(), [["b", "leave"], ["c", "leave"]], "the mesh closed its connections");
  assert.ok(FakePC.all.every((pc) => pc.closed));

  // A second one for the same room (or one for a room we left) says nothing.
  ws.push({ type: "room-closed", room: "call" });
  assert.equal(events.length, 2);

  // Joining the room again is a fresh join, and the mesh follows it.
  const again = client.join("call");
  const join = ws.last("join");
  assert.equal(join.room, "call");
  ws.push({ type: "joined", room: "call", peers: [{ id: "d" }], rid: join.rid });
  const result = await again;
  assert.equal(result.rejoin, false);
  assert.deepEqual(client.peers("call"), [{ id: "d", meta: undefined }]);
  assert.deepEqual([...mesh.peers.keys()], ["d"]);
  mesh.close();
  client.close();
});

test("a closed room is not rejoined after a reconnect", async (t) => {
  const client = makeClient();
  t.after(() => client.close());
  const ws1 = await connected(client, "old");
  await joinRoom(client, ws1, "a");
  await joinRoom(client, ws1, "b");
  ws1.push({ type: "room-closed", room: "a" });
  ws1.drop();
  await until(() => FakeSocket.all.length === 2, "second socket");
  const ws2 = newSocket();
  ws2.push({ type: "welcome", id: "new" });
  assert.deepEqual(
    ws2.sent.filter((m) => m.type === "join").map((m) => m.room),
    ["b"],
  );
  client.close();
});

test("a leave that crosses the server's room-closed still resolves", async (t) => {
  const client = makeClient();
  t.after(() => client.close());
  const ws = await connected(client);
  await joinRoom(client, ws, "r");
  const events = record(client, ["room-closed", "left"]);
  const leave = client.leave("r");
  const rid = ws.last("leave").rid;
  // The server closed the room before our leave reached it.
  ws.push({ type: "room-closed", room: "r" });
  ws.push({ type: "error", code: "not-in-room", message: "not in room `r`", rid });
  assert.deepEqual((await leave).rooms, ["r"]);
  assert.deepEqual(events, [["left", { rooms: ["r"], reason: "leave" }]], "we had left already: no room-closed");
  // Leaving a room we are not in is still refused.
  const other = client.leave("nowhere");
  ws.push({ type: "error", code: "not-in-room", message: "no", rid: ws.last("leave").rid });
  await assert.rejects(other, (err) => err.code === "not-in-room");
  client.close();
});

test("server-message is its own event, not a relay", async (t) => {
  const client = makeClient();
  t.after(() => client.close());
  const ws = await connected(client);
  const events = record(client, ["server-message", "relay", "broadcast", "error"]);
  ws.push({ type: "server-message", data: { notice: "maintenance at 18:00", n: [1, 2] } });
  ws.push({ type: "server-message", data: "plain" });
  ws.push({ type: "server-message", data: null });
  assert.deepEqual(events, [
    ["server-message", { data: { notice: "maintenance at 18:00", n: [1, 2] } }],
    ["server-message", { data: "plain" }],
    ["server-message", { data: null }],
  ]);
  client.close();
});

test('a broadcast from the app\'s backend arrives as a broadcast from "server"', async (t) => {
  assert.equal(SERVER_SENDER, "server");
  const client = makeClient();
  t.after(() => client.close());
  const ws = await connected(client);
  await joinRoom(client, ws, "demo", ["b"]);
  const events = record(client, ["broadcast", "relay", "server-message"]);
  ws.push({ type: "broadcast", from: "server", room: "demo", data: { announcement: "hi" } });
  ws.push({ type: "broadcast", from: "b", room: "demo", data: 1 });
  assert.deepEqual(events, [
    ["broadcast", { from: SERVER_SENDER, room: "demo", data: { announcement: "hi" } }],
    ["broadcast", { from: "b", room: "demo", data: 1 }],
  ]);
  client.close();
});

test("close 4003 (removed by the server) is final: no resume, no reconnect, code and reason reported", async (t) => {
  const client = makeClient();
  t.after(() => client.close());
  const ws = await connected(client, "me", { resume: "token-1" });
  assert.match(ws.url, /[?&]resume=$/);
  await joinRoom(client, ws, "call", ["b"]);
  const events = record(client, ["state", "retry", "left", "peer-left", "welcome"]);
  const pending = client.broadcast("x", "call");
  ws.drop(4003, "removed by the server");
  assert.equal(client.state, "closed");
  await assert.rejects(pending, (err) => err instanceof SwitchboardError && err.code === "disconnected");
  assert.deepEqual(events, [
    ["left", { rooms: ["call"], reason: "removed" }],
    ["state", { state: "closed", previous: "open", code: 4003, reason: "removed by the server", removed: true }],
  ]);
  assert.equal(client.rooms.size, 0);
  await sleep(50);
  assert.equal(FakeSocket.all.length, 1, "no reconnect after 4003");
  await assert.rejects(client.join("call"), (err) => err.code === "not-connected");

  // The app may connect again on purpose: a new session, without the old token.
  const p = client.connect();
  await until(() => FakeSocket.all.length === 2, "second socket");
  assert.match(newSocket().url, /[?&]resume=$/, "the removed session's token is not presented");
  newSocket().push({ type: "welcome", id: "fresh" });
  assert.equal((await p).reconnected, false);
  assert.equal(client.rooms.size, 0, "no room is rejoined");
  client.close();
});

test("another 4000-4999 code from the server removes too; 4001, 1006 and 1008 still reconnect", async (t) => {
  const custom = makeClient();
  t.after(() => custom.close());
  const ws = await connected(custom, "me", { resume: "t" });
  const states = record(custom, ["state", "retry"]);
  ws.drop(4010, "banned for spam");
  assert.equal(custom.state, "closed");
  assert.deepEqual(states, [
    ["state", { state: "closed", previous: "open", code: 4010, reason: "banned for spam", removed: true }],
  ]);
  await sleep(30);
  assert.equal(FakeSocket.all.length, 1);

  for (const code of [4001, 1006, 1008]) {
    const client = makeClient();
    t.after(() => client.close());
    const first = await connected(client, "me", { resume: "t" });
    first.drop(code);
    assert.equal(client.state, "reconnecting", `after ${code}`);
    await until(() => FakeSocket.all.length === 2, `reconnect after ${code}`);
    assert.match(newSocket().url, /[?&]resume=t$/, `resumes after ${code}`);
    client.close();
  }
});

test("close 4003 before welcome rejects connect() and does not retry", async (t) => {
  const client = makeClient();
  t.after(() => client.close());
  const p = client.connect();
  await until(() => FakeSocket.all.length === 1, "socket");
  newSocket().drop(4003, "removed by the server");
  const outcome = await Promise.race([p.then(() => "resolved", (err) => err), sleep(200).then(() => "still pending")]);
  assert.ok(outcome instanceof SwitchboardError, `connect() rejected (got: ${outcome})`);
  assert.equal(outcome.code, "disconnected");
  assert.match(outcome.message, /4003/);
  assert.equal(client.state, "closed");
  await sleep(30);
  assert.equal(FakeSocket.all.length, 1);
});

// ---------------------------------------------------------------------------
// The mesh and perfect negotiation

class Emitter {
  handlers = new Map();
  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(fn);
    return () => this.handlers.get(type).delete(fn);
  }
  emit(type, event) {
    for (const fn of this.handlers.get(type) ?? []) fn(event);
  }
}

function domError(name) {
  const err = new Error(name);
  err.name = name;
  return err;
}

/** Enough of RTCPeerConnection's signaling state machine to exercise perfect negotiation. */
class FakePC {
  static all = [];
  constructor(config) {
    this.config = config;
    this.signalingState = "stable";
    this.connectionState = "new";
    this.iceConnectionState = "new";
    this.localDescription = null;
    this.remoteDescription = null;
    this.added = [];
    this.channels = [];
    this.tracks = [];
    this.closed = false;
    this.wants = 0; // local changes (tracks, channels, ICE restarts)
    this.offered = null; // `wants` covered by the outstanding local offer
    this.done = 0; // `wants` negotiated
    this.n = 0;
    this.log = [];
    this.ops = Promise.resolve();
    this.pending = 0; // operations chained and not yet done
    FakePC.all.push(this);
  }
  // The operations chain: like a real peer connection, one at a time.
  chain(fn) {
    this.pending++;
    const p = this.ops.then(async () => {
      await sleep(1);
      if (this.closed) throw domError("InvalidStateError");
      return fn();
    });
    this.ops = p.catch(() => {}).then(() => {
      if (--this.pending === 0) this.checkNegotiation();
    });
    return p;
  }
  change() {
    this.wants++;
    this.checkNegotiation();
  }
  // As the spec has it: only in "stable", and only once the operations chain is empty.
  checkNegotiation() {
    setTimeout(() => {
      if (this.closed || this.pending > 0) return;
      if (this.signalingState === "stable" && this.done < this.wants && this.offered === null) {
        this.onnegotiationneeded?.();
      }
    }, 0);
  }
  addTrack(track, stream) {
    this.tracks.push(track);
    this.change();
    return { track, replaceTrack: async (t) => void (this.tracks = [...this.tracks, t]) };
  }
  createDataChannel(label, options) {
    const channel = { label, options, readyState: "connecting", close() {}, send() {} };
    this.channels.push(channel);
    this.change();
    return channel;
  }
  restartIce() {
    this.iceRestarts = (this.iceRestarts ?? 0) + 1;
    this.change();
  }
  setLocalDescription(desc) {
    return this.chain(() => {
      if (desc?.type === "rollback") {
        if (this.signalingState === "stable") throw domError("InvalidStateError");
        this.log.push("rollback");
        this.signalingState = "stable";
        this.offered = null;
        this.checkNegotiation();
        return;
      }
      if (this.signalingState === "have-remote-offer") {
        this.localDescription = { type: "answer", sdp: `answer-${++this.n}` };
        this.signalingState = "stable";
        this.done = this.wants;
        this.log.push("answer");
        this.checkNegotiation();
      } else {
        this.localDescription = { type: "offer", sdp: `offer-${++this.n}` };
        this.signalingState = "have-local-offer";
        this.offered = this.wants;
        this.log.push("offer");
      }
      setTimeout(() => this.onicecandidate?.({ candidate: { candidate: `candidate:${this.n}`, sdpMid: "0" } }), 0);
    });
  }
  setRemoteDescription(desc) {
    return this.chain(() => {
      if (desc.type === "offer") {
        if (this.signalingState === "have-local-offer") {
          this.log.push("implicit-rollback");
          this.offered = null;
        }
        this.signalingState = "have-remote-offer";
        this.remoteDescription = desc;
      } else {
        if (this.signalingState !== "have-local-offer") throw domError("InvalidStateError");
        this.remoteDescription = desc;
        this.signalingState = "stable";
        this.done = Math.max(this.done, this.offered ?? 0);
        this.offered = null;
        this.checkNegotiation();
      }
    });
  }
  addIceCandidate(candidate) {
    return this.chain(() => {
      if (!this.remoteDescription) throw domError("InvalidStateError");
      this.added.push(candidate);
    });
  }
  close() {
    this.closed = true;
    this.signalingState = "closed";
  }
  fire(state) {
    this.connectionState = state;
    this.onconnectionstatechange?.();
  }
}

/** Fake signaling clients wired together, delivering relays in order. */
class Network {
  clients = new Map();
  add(id, rooms = {}) {
    const net = this;
    const client = new (class extends Emitter {
      id = id;
      state = "open";
      iceServers = undefined;
      rooms = new Map();
      sent = [];
      async sendTo(target, message) {
        this.sent.push({ target, ...message });
        const to = net.clients.get(target);
        if (!to) throw new SwitchboardError("unknown-target", target);
        const msg = { ...message, target, from: this.id };
        setTimeout(() => to.emit("relay", msg), 0);
      }
    })();
    for (const [room, peers] of Object.entries(rooms)) {
      client.rooms.set(room, { name: room, peers: new Map(peers.map((p) => [p, { id: p, meta: { name: p } }])) });
    }
    this.clients.set(id, client);
    return client;
  }
}

function stable(pc) {
  return pc.signalingState === "stable" && pc.localDescription && pc.remoteDescription;
}

test("glare: both sides offer at once; the polite one rolls back, the impolite one ignores", async () => {
  FakePC.all = [];
  const net = new Network();
  const a = net.add("A", { r: ["B"] }); // "A" < "B": A is polite
  const b = net.add("B", { r: ["A"] });
  const errors = [];
  // politeDelay 0: the polite side offers at once too, so the offers cross.
  const opts = { room: "r", RTCPeerConnection: FakePC, dataChannels: ["chat"], politeDelay: 0 };
  const ma = new PeerMesh(a, opts);
  const mb = new PeerMesh(b, opts);
  ma.on("error", (e) => errors.push(e.error));
  mb.on("error", (e) => errors.push(e.error));
  const pa = ma.peers.get("B");
  const pb = mb.peers.get("A");
  assert.equal(pa.polite, true);
  assert.equal(pb.polite, false);
  await until(() => stable(pa.pc) && stable(pb.pc) && pa.pc.added.length && pb.pc.added.length, "both stable");
  await sleep(20);
  assert.deepEqual(errors, []);
  assert.ok(pa.stats.rollbacks >= 1, "the polite side rolled back");
  assert.ok(pb.stats.offersIgnored >= 1, "the impolite side ignored the colliding offer");
  assert.equal(pa.stats.offersIgnored, 0, "the polite side never ignores");
  assert.equal(pa.pc.remoteDescription.type, "offer", "polite answered the impolite offer");
  assert.equal(pb.pc.remoteDescription.type, "answer");
  // Every message went to the right peer, tagged with the room.
  assert.ok(a.sent.every((m) => m.target === "B" && m.room === "r"));
  assert.deepEqual(pa.pc.channels[0].options, { negotiated: true, id: 0 });
  ma.close();
  mb.close();
});

test("at setup the polite side waits for the impolite offer instead of colliding with it", async () => {
  FakePC.all = [];
  const net = new Network();
  const a = net.add("A", { r: ["B"] }); // polite
  const b = net.add("B", { r: ["A"] });
  const ma = new PeerMesh(a, { room: "r", RTCPeerConnection: FakePC, dataChannels: ["chat"], politeDelay: 1000 });
  const mb = new PeerMesh(b, { room: "r", RTCPeerConnection: FakePC, dataChannels: ["chat"], politeDelay: 1000 });
  const pa = ma.peers.get("B");
  const pb = mb.peers.get("A");
  const started = Date.now();
  await until(() => stable(pa.pc) && stable(pb.pc), "both stable");
  assert.ok(Date.now() - started < 900, "answered their offer without waiting out the delay");
  await sleep(20);
  assert.equal(pa.stats.offersSent, 0);
  assert.equal(pa.stats.answersSent, 1);
  assert.equal(pa.stats.rollbacks, 0);
  assert.equal(pb.stats.offersIgnored, 0);
  ma.close();
  mb.close();
});

test("the polite side offers after the delay when no offer comes", async () => {
  FakePC.all = [];
  const net = new Network();
  const a = net.add("A", { r: ["B"] }); // polite; B never creates a mesh
  const ma = new PeerMesh(a, { room: "r", RTCPeerConnection: FakePC, dataChannels: ["chat"], politeDelay: 30 });
  const pa = ma.peers.get("B");
  await sleep(10);
  assert.equal(pa.stats.offersSent, 0);
  await until(() => pa.stats.offersSent === 1, "offer after the delay");
  ma.close();
});

test("a colliding offer waits for our in-flight offer before the rollback", async () => {
  FakePC.all = [];
  const net = new Network();
  const a = net.add("A", { r: ["Z"] }); // polite towards Z
  const mesh = new PeerMesh(a, { room: "r", RTCPeerConnection: FakePC, dataChannels: ["d"], politeDelay: 0 });
  const peer = mesh.peers.get("Z");
  const pc = peer.pc;
  // Slow down setLocalDescription so the remote offer lands while ours is in flight.
  const sld = pc.setLocalDescription.bind(pc);
  pc.setLocalDescription = async (d) => {
    if (!d) await sleep(30);
    return sld(d);
  };
  await until(() => pc.log.length === 0 && peer.history.some((h) => h.step.startsWith("negotiationneeded")), "making an offer");
  a.emit("relay", { type: "offer", from: "Z", target: "A", room: "r", sdp: "offer-z" });
  await until(() => a.sent.some((m) => m.type === "answer"), "answer");
  assert.deepEqual(pc.log.slice(0, 3), ["offer", "rollback", "answer"]);
  assert.equal(peer.stats.rollbacks, 1);
  assert.equal(pc.signalingState, "stable");
  mesh.close();
});

test("negotiationneeded outside `stable` is ignored", async () => {
  FakePC.all = [];
  const net = new Network();
  const a = net.add("B", { r: ["A"] }); // impolite
  const mesh = new PeerMesh(a, { room: "r", RTCPeerConnection: FakePC, dataChannels: ["d"] });
  const peer = mesh.peers.get("A");
  await until(() => peer.pc.signalingState === "have-local-offer", "offer made");
  const offers = peer.pc.log.filter((x) => x === "offer").length;
  peer.pc.onnegotiationneeded();
  await sleep(20);
  assert.equal(peer.pc.log.filter((x) => x === "offer").length, offers);
  assert.ok(peer.history.some((h) => h.step.startsWith("negotiationneeded ignored")));
  mesh.close();
});

test("a connection still `new` after negotiation restarts ICE", async () => {
  FakePC.all = [];
  const net = new Network();
  const a = net.add("A", { r: ["B"] });
  const b = net.add("B", { r: ["A"] });
  const opts = { room: "r", RTCPeerConnection: FakePC, dataChannels: ["d"], stallTimeout: 40, politeDelay: 0 };
  const ma = new PeerMesh(a, opts);
  const mb = new PeerMesh(b, opts);
  const pb = mb.peers.get("A"); // impolite: restarts first
  await until(() => pb.pc.iceRestarts === 1, "ICE restart of the stalled connection", 3000);
  assert.ok(pb.history.some((h) => h.step.startsWith("stalled in new")));
  ma.close();
  mb.close();
});

test("candidates that arrive before the remote description are queued, then added", async () => {
  FakePC.all = [];
  const net = new Network();
  const a = net.add("A", { r: ["Z"] });
  const mesh = new PeerMesh(a, { room: "r", RTCPeerConnection: FakePC, dataChannels: [] });
  const peer = mesh.peers.get("Z");
  a.emit("relay", { type: "candidate", from: "Z", target: "A", room: "r", candidate: { candidate: "candidate:early", sdpMid: "0" } });
  // The seeds' shapes work too.
  a.emit("relay", { type: "ice-candidate", from: "Z", target: "A", candidate: { candidate: "candidate:seed", sdpMid: "0" } });
  await sleep(10);
  assert.equal(peer.stats.candidatesQueued, 2);
  assert.deepEqual(peer.pc.added, []);
  a.emit("relay", { type: "sdp", from: "Z", target: "A", sdp: { type: "offer", sdp: "offer-z" } });
  await until(() => peer.pc.added.length === 2, "queued candidates added");
  assert.deepEqual(
    peer.pc.added.map((c) => c.candidate),
    ["candidate:early", "candidate:seed"],
  );
  await until(() => a.sent.some((m) => m.type === "answer"), "answer sent");
  // After the description, candidates go straight in.
  a.emit("relay", { type: "candidate", from: "Z", target: "A", room: "r", candidate: { candidate: "candidate:late" } });
  await until(() => peer.pc.added.length === 3, "late candidate");
  assert.equal(peer.stats.candidatesQueued, 2);
  mesh.close();
});

test("relays for another room, or from strangers, are ignored", async () => {
  FakePC.all = [];
  const net = new Network();
  const a = net.add("A", { r: ["Z"] });
  const mesh = new PeerMesh(a, { room: "r", RTCPeerConnection: FakePC, dataChannels: [] });
  a.emit("relay", { type: "offer", from: "Z", target: "A", room: "other", sdp: "x" });
  a.emit("relay", { type: "offer", from: "Q", target: "A", room: "r", sdp: "x" });
  await sleep(10);
  assert.equal(mesh.peers.get("Z").pc.remoteDescription, null);
  assert.equal(mesh.peers.size, 1);
  mesh.close();
});

test("a failed connection restarts ICE with a new offer", async () => {
  FakePC.all = [];
  const net = new Network();
  const a = net.add("A", { r: ["B"] });
  const b = net.add("B", { r: ["A"] });
  const ma = new PeerMesh(a, { room: "r", RTCPeerConnection: FakePC, dataChannels: ["d"] });
  const mb = new PeerMesh(b, { room: "r", RTCPeerConnection: FakePC, dataChannels: ["d"] });
  const pa = ma.peers.get("B");
  const pb = mb.peers.get("A");
  await until(() => stable(pa.pc) && stable(pb.pc), "stable");
  await sleep(10);
  const offersBefore = pb.stats.offersSent;
  const restarts = [];
  mb.on("ice-restart", (e) => restarts.push(e.peer.id));
  pb.pc.fire("failed");
  assert.equal(pb.pc.iceRestarts, 1);
  assert.deepEqual(restarts, ["A"]);
  await until(() => pb.stats.offersSent > offersBefore && stable(pa.pc) && stable(pb.pc), "renegotiated");
  mb.close();
  ma.close();
});

test("ICE servers: the server's by default, the app's when given", () => {
  FakePC.all = [];
  const net = new Network();
  const a = net.add("A", { r: ["B", "C"] });
  a.iceServers = [{ urls: "stun:127.0.0.1:3478" }];
  const m1 = new PeerMesh(a, { room: "r", RTCPeerConnection: FakePC, dataChannels: [] });
  assert.deepEqual(m1.peers.get("B").pc.config.iceServers, [{ urls: "stun:127.0.0.1:3478" }]);
  m1.close();
  const mine = [{ urls: "turn:127.0.0.1:3478", username: "u", credential: "c" }];
  const m2 = new PeerMesh(a, { room: "r", RTCPeerConnection: FakePC, dataChannels: [], iceServers: mine });
  assert.deepEqual(m2.peers.get("C").pc.config.iceServers, mine);
  m2.close();
  a.iceServers = undefined;
  const m3 = new PeerMesh(a, { room: "r", RTCPeerConnection: FakePC, dataChannels: [] });
  assert.deepEqual(m3.peers.get("B").pc.config.iceServers, []);
  m3.close();
});

test("peers come and go with the room; a new local id rebuilds every connection", async () => {
  FakePC.all = [];
  const net = new Network();
  const a = net.add("A", { r: ["B"] });
  const mesh = new PeerMesh(a, { room: "r", RTCPeerConnection: FakePC, dataChannels: [] });
  const removed = [];
  mesh.on("peer-removed", (e) => removed.push([e.peer.id, e.reason]));
  const first = mesh.peers.get("B");

  a.rooms.get("r").peers.set("C", { id: "C" });
  a.emit("peer-joined", { id: "C", room: "r" });
  assert.deepEqual([...mesh.peers.keys()], ["B", "C"]);
  a.emit("peer-joined", { id: "D", room: "elsewhere" });
  assert.equal(mesh.peers.size, 2);

  a.rooms.get("r").peers.delete("C");
  const c = mesh.peers.get("C");
  a.emit("peer-left", { id: "C", room: "r", reason: "left" });
  assert.ok(c.pc.closed);
  assert.equal(c.state, "closed");
  assert.deepEqual(removed, [["C", "left"]]);

  // Reconnect: new id, the rejoin's `joined` lists B (same id) and E.
  a.id = "A2";
  a.rooms.get("r").peers = new Map([
    ["B", { id: "B" }],
    ["E", { id: "E" }],
  ]);
  a.emit("joined", { room: "r", peers: [{ id: "B" }, { id: "E" }], rejoin: true });
  assert.ok(first.pc.closed, "the connection made under the old id is replaced");
  assert.notEqual(mesh.peers.get("B"), first);
  assert.equal(mesh.peers.get("B").localId, "A2");
  assert.deepEqual([...mesh.peers.keys()].sort(), ["B", "E"]);

  a.emit("left", { rooms: ["r"], reason: "leave" });
  assert.equal(mesh.peers.size, 0);
  mesh.close();
});
