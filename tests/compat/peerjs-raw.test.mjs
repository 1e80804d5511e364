// The PeerJS protocol at the wire, as peerjs-server (npm `peer` 1.0.2) speaks
// it and the peerjs 1.5.x client relies on: node `ws` + fetch against
// $PEERJS_URL (http://HOST:PORT, path "/", key "peerjs").

import { test } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { Client, closeAll, rid, serverUrl, switchboardOnly } from "./lib/common.mjs";

const HTTP = serverUrl("PEERJS_URL");
const WS = HTTP.replace(/^http/, "ws");
const KEY = process.env.PEERJS_KEY ?? "peerjs";
// The client's own id pattern (peerjs 1.5.5 util.validateId).
const CLIENT_ID_PATTERN = /^[A-Za-z0-9]+(?:[ _-][A-Za-z0-9]+)*$/;

// The original's texts (peerjs-server src/enums.ts and webSocketServer).
const MSG_ID_TAKEN = "ID is taken";
const MSG_INVALID_KEY = "Invalid key provided";
const MSG_INVALID_WS_PARAMETERS = "No id, token, or key supplied to websocket server";

/** The URL the peerjs 1.5.5 client opens (it adds &version=). */
function wsUrl({ id, token = "tok", key = KEY, version = "1.5.5" }) {
  const params = [`key=${key}`];
  if (id !== undefined) params.push(`id=${id}`);
  if (token !== undefined) params.push(`token=${token}`);
  if (version) params.push(`version=${version}`);
  return `${WS}/peerjs?${params.join("&")}`;
}

/** Connects a peer and waits for OPEN. */
async function openPeer(id = rid("p"), token = rid("k")) {
  const c = await Client.open(wsUrl({ id, token }));
  assert.deepEqual(await c.next(), { type: "OPEN" }, "first frame for a new id is OPEN");
  return Object.assign(c, { id, token });
}

test("a new id gets {type:OPEN} first", async () => {
  const a = await openPeer();
  await a.expectNothing(300);
  assert.ok(a.isOpen);
  await closeAll(a);
});

test("a live id with another token gets ID-TAKEN, then the socket is closed; the holder keeps it", async () => {
  const a = await openPeer();
  const b = await Client.open(wsUrl({ id: a.id, token: "other" + a.token }));
  assert.deepEqual(await b.next(), { type: "ID-TAKEN", payload: { msg: MSG_ID_TAKEN } });
  await b.expectClose();
  // The holder is untouched and still reachable.
  const c = await openPeer();
  c.send({ type: "OFFER", dst: a.id, payload: { n: 1 } });
  assert.deepEqual(await a.next(), { type: "OFFER", src: c.id, dst: a.id, payload: { n: 1 } });
  await closeAll(a, c);
});

test("a wrong key gets ERROR 'Invalid key provided', then close", async () => {
  const c = await Client.open(wsUrl({ id: rid("p"), key: "not" + KEY }));
  assert.deepEqual(await c.next(), { type: "ERROR", payload: { msg: MSG_INVALID_KEY } });
  await c.expectClose();
});

for (const missing of ["id", "token", "key"]) {
  test(`a missing ${missing} gets ERROR '${MSG_INVALID_WS_PARAMETERS}', then close`, async () => {
    const params = { id: rid("p"), token: "tok", key: KEY };
    const query = Object.entries(params)
      .filter(([name]) => name !== missing)
      .map(([name, value]) => `${name}=${value}`)
      .join("&");
    const c = await Client.open(`${WS}/peerjs?${query}`);
    assert.deepEqual(await c.next(), { type: "ERROR", payload: { msg: MSG_INVALID_WS_PARAMETERS } });
    await c.expectClose();
  });
}

test("OFFER, ANSWER, CANDIDATE and LEAVE are relayed with src set by the server", async () => {
  const a = await openPeer();
  const b = await openPeer();
  const offer = { type: "offer", sdp: "v=0\r\n" };
  a.send({ type: "OFFER", dst: b.id, payload: { sdp: offer, type: "data", connectionId: "dc_1" } });
  assert.deepEqual(await b.next(), { type: "OFFER", src: a.id, dst: b.id, payload: { sdp: offer, type: "data", connectionId: "dc_1" } });
  b.send({ type: "ANSWER", dst: a.id, payload: { sdp: { type: "answer", sdp: "v=0\r\n" }, connectionId: "dc_1" } });
  assert.deepEqual(await a.next(), { type: "ANSWER", src: b.id, dst: a.id, payload: { sdp: { type: "answer", sdp: "v=0\r\n" }, connectionId: "dc_1" } });
  // A forged src is replaced by the real sender's id.
  a.send({ type: "CANDIDATE", src: b.id, dst: b.id, payload: { candidate: { candidate: "c1" }, connectionId: "dc_1" } });
  assert.deepEqual(await b.next(), { type: "CANDIDATE", src: a.id, dst: b.id, payload: { candidate: { candidate: "c1" }, connectionId: "dc_1" } });
  a.send({ type: "LEAVE", dst: b.id });
  assert.deepEqual(await b.next(), { type: "LEAVE", src: a.id, dst: b.id });
  await a.expectNothing(200);
  await closeAll(a, b);
});

test("HEARTBEAT is accepted silently and the connection stays usable", async () => {
  const a = await openPeer();
  const b = await openPeer();
  for (let i = 0; i < 3; i++) a.send({ type: "HEARTBEAT" });
  await a.expectNothing(300);
  assert.ok(a.isOpen);
  a.send({ type: "OFFER", dst: b.id, payload: { n: 2 } });
  assert.deepEqual(await b.next(), { type: "OFFER", src: a.id, dst: b.id, payload: { n: 2 } });
  await closeAll(a, b);
});

test("messages to an id not connected yet are queued and delivered right after its OPEN, in order", async () => {
  const a = await openPeer();
  const lateId = rid("late");
  const sent = [
    { type: "OFFER", dst: lateId, payload: { seq: 1, connectionId: "dc_q" } },
    { type: "CANDIDATE", dst: lateId, payload: { seq: 2, connectionId: "dc_q" } },
    { type: "CANDIDATE", dst: lateId, payload: { seq: 3, connectionId: "dc_q" } },
  ];
  for (const m of sent) a.send(m);
  await sleep(1000);
  const late = await Client.open(wsUrl({ id: lateId, token: "tok" }));
  assert.deepEqual(await late.next(), { type: "OPEN" }, "OPEN comes before the queued messages");
  for (const m of sent) assert.deepEqual(await late.next(), { ...m, src: a.id, dst: lateId });
  await late.expectNothing(300);
  // Nothing expires for A afterwards: the queue was delivered.
  await a.expectNothing(300);
  await closeAll(a, late);
});

test("an id that never connects: each sender gets one EXPIRE per pair after expire_timeout (5 s; 5-6 s with the 1 s sweep)", async () => {
  const a = await openPeer();
  const b = await openPeer();
  const ghost = rid("ghost");
  const started = Date.now();
  a.send({ type: "OFFER", dst: ghost, payload: { n: 1, connectionId: "dc_x" } });
  a.send({ type: "CANDIDATE", dst: ghost, payload: { n: 2, connectionId: "dc_x" } });
  b.send({ type: "OFFER", dst: ghost, payload: { n: 3, connectionId: "dc_y" } });
  const [ea, eb] = await Promise.all([a.next(9000), b.next(9000)]);
  const elapsed = Date.now() - started;
  assert.deepEqual(ea, { type: "EXPIRE", src: ghost, dst: a.id });
  assert.deepEqual(eb, { type: "EXPIRE", src: ghost, dst: b.id });
  assert.ok(elapsed >= 4500 && elapsed <= 7500, `EXPIRE after ${elapsed} ms, expected 5000-6000 (+jitter)`);
  await a.expectNothing(1500); // one per pair, not one per message
  await b.expectNothing(0);
  // The queue is gone: the ghost connecting now gets only OPEN.
  const late = await Client.open(wsUrl({ id: ghost, token: "tok" }));
  assert.deepEqual(await late.next(), { type: "OPEN" });
  await late.expectNothing(300);
  await closeAll(a, b, late);
});

test("a reconnect with the same id and token after a clean close gets OPEN", async () => {
  const a = await openPeer();
  await a.close();
  await sleep(200);
  const again = await Client.open(wsUrl({ id: a.id, token: a.token }));
  assert.deepEqual(await again.next(), { type: "OPEN" });
  await closeAll(again);
});

test(
  "a reconnect with the same id and token while the old socket is live takes the id over (OPEN, old socket closed)",
  switchboardOnly("the original registers the new socket silently and never sends OPEN, so the client waits forever"),
  async () => {
    const a = await openPeer();
    const b = await openPeer();
    const again = await Client.open(wsUrl({ id: a.id, token: a.token }));
    assert.deepEqual(await again.next(), { type: "OPEN" });
    await a.expectClose();
    b.send({ type: "OFFER", dst: a.id, payload: { to: "new socket" } });
    assert.deepEqual(await again.next(), { type: "OFFER", src: b.id, dst: a.id, payload: { to: "new socket" } });
    await closeAll(again, b);
  },
);

test("an id with a single space (percent-encoded, as the WebSocket constructor sends it) is accepted", async () => {
  const id = `${rid("sp")} ${rid("ace")}`;
  assert.match(id, CLIENT_ID_PATTERN);
  const a = await Client.open(wsUrl({ id: encodeURIComponent(id), token: "tok" }));
  assert.deepEqual(await a.next(), { type: "OPEN" });
  const b = await openPeer();
  b.send({ type: "OFFER", dst: id, payload: { n: 1 } });
  assert.deepEqual(await a.next(), { type: "OFFER", src: b.id, dst: id, payload: { n: 1 } });
  await closeAll(a, b);
});

for (const bad of ["bad!id", "-lead", "trail_", "two  spaces", "a..b", "<script>"]) {
  test(
    `an id outside the client's pattern (${JSON.stringify(bad)}) is refused with ERROR, then close`,
    switchboardOnly("the original accepts any id"),
    async () => {
      const c = await Client.open(wsUrl({ id: encodeURIComponent(bad), token: "tok" }));
      const m = await c.next();
      assert.equal(m.type, "ERROR");
      assert.equal(typeof m.payload?.msg, "string");
      await c.expectClose();
    },
  );
}

test("unknown message types are ignored and the connection stays", async () => {
  const a = await openPeer();
  const b = await openPeer();
  a.send({ type: "NOT-A-TYPE", dst: b.id, payload: {} });
  a.send({ type: "OPEN" });
  await b.expectNothing(300);
  assert.ok(a.isOpen);
  a.send({ type: "OFFER", dst: b.id, payload: { n: 1 } });
  assert.deepEqual(await b.next(), { type: "OFFER", src: a.id, dst: b.id, payload: { n: 1 } });
  await closeAll(a, b);
});

test("GET /peerjs/id gives a fresh id as plain text, usable as the client's id, with CORS for any page", async () => {
  const origin = "http://app.compat.test";
  const ids = [];
  for (let i = 0; i < 2; i++) {
    const res = await fetch(`${HTTP}/${KEY}/id?ts=${Date.now()}${Math.random()}&version=1.5.5`, { headers: { origin } });
    assert.equal(res.status, 200);
    const allow = res.headers.get("access-control-allow-origin");
    assert.ok(allow === origin || allow === "*", `access-control-allow-origin: ${allow}`);
    const id = await res.text();
    assert.match(id, CLIENT_ID_PATTERN);
    ids.push(id);
  }
  assert.notEqual(ids[0], ids[1]);
  const a = await openPeer(ids[0]);
  await closeAll(a);
});

test("GET /peerjs/peers is 401 when discovery is off (the default)", async () => {
  const a = await openPeer();
  const res = await fetch(`${HTTP}/${KEY}/peers?ts=${Date.now()}&version=1.5.5`);
  assert.equal(res.status, 401);
  await res.arrayBuffer();
  await closeAll(a);
});

test(
  "a malformed frame does not break the connection: later messages are still relayed",
  switchboardOnly("in the original the JSON error escapes ws's receiver: the socket stays open but nothing it sends afterwards is handled"),
  async () => {
    const a = await openPeer();
    const b = await openPeer();
    a.send("this is not json{");
    a.send(Buffer.from([0xff, 0x00, 0x01]));
    a.send({ type: "OFFER", dst: b.id, payload: { after: "garbage" } });
    assert.deepEqual(await b.next(), { type: "OFFER", src: a.id, dst: b.id, payload: { after: "garbage" } });
    await closeAll(a, b);
  },
);
