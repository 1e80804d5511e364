// The matchbox signaling protocol at the wire, as matchbox_server 0.14 speaks
// it (and matchbox_socket 0.14 relies on): node `ws` against
// $MATCHBOX_URL/{room}[?next=N] ($MATCHBOX_URL is ws://HOST:PORT/matchbox for
// Switchboard, ws://HOST:PORT for the original).

import { test } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { Client, closeAll, expectRefused, mintToken, rid, serverUrl, startSwitchboard, switchboardOnly } from "./lib/common.mjs";

const BASE = serverUrl("MATCHBOX_URL");
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** Joins `room` (a path plus optional query) and reads IdAssigned. */
async function join(room) {
  const c = await Client.open(`${BASE}/${room}`);
  const first = await c.next();
  assert.deepEqual(Object.keys(first ?? {}), ["IdAssigned"], `first frame is IdAssigned, got ${JSON.stringify(first)}`);
  assert.match(first.IdAssigned, UUID);
  return Object.assign(c, { id: /** @type {string} */ (first.IdAssigned) });
}

test("the first frame is {IdAssigned: uuid}, a fresh one per connection", async () => {
  const room = rid("r");
  const a = await join(room);
  const b = await join(room);
  assert.notEqual(a.id, b.id);
  await closeAll(a, b);
});

test("NewPeer goes only to the peers already in the room, never to the newcomer", async () => {
  const room = rid("r");
  const a = await join(room);
  const b = await join(room);
  assert.deepEqual(await a.next(), { NewPeer: b.id });
  const c = await join(room);
  assert.deepEqual(await a.next(), { NewPeer: c.id });
  assert.deepEqual(await b.next(), { NewPeer: c.id });
  await c.expectNothing(400);
  await a.expectNothing(0);
  await b.expectNothing(0);
  await closeAll(a, b, c);
});

test("PeerLeft goes to the peers that remain", async () => {
  const room = rid("r");
  const a = await join(room);
  const b = await join(room);
  const c = await join(room);
  assert.deepEqual(await a.next(), { NewPeer: b.id });
  assert.deepEqual(await a.next(), { NewPeer: c.id });
  assert.deepEqual(await b.next(), { NewPeer: c.id });
  await b.close();
  assert.deepEqual(await a.next(), { PeerLeft: b.id });
  assert.deepEqual(await c.next(), { PeerLeft: b.id });
  c.terminate(); // an abrupt drop is a leave too
  assert.deepEqual(await a.next(), { PeerLeft: c.id });
  await a.expectNothing(300);
  await closeAll(a);
});

test("Signal {receiver, data} arrives as Signal {sender, data}, data untouched", async () => {
  const room = rid("r");
  const a = await join(room);
  const b = await join(room);
  assert.deepEqual(await a.next(), { NewPeer: b.id });
  // What matchbox_socket sends: PeerSignal::Offer / Answer / IceCandidate.
  const offer = { Offer: "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n" };
  a.send({ Signal: { receiver: b.id, data: offer } });
  assert.deepEqual(await b.next(), { Signal: { sender: a.id, data: offer } });
  b.send({ Signal: { receiver: a.id, data: { Answer: "v=0\r\n" } } });
  assert.deepEqual(await a.next(), { Signal: { sender: b.id, data: { Answer: "v=0\r\n" } } });
  // Any JSON value as data.
  a.send({ Signal: { receiver: b.id, data: [1, "two", { three: null }] } });
  assert.deepEqual(await b.next(), { Signal: { sender: a.id, data: [1, "two", { three: null }] } });
  await a.expectNothing(200);
  await closeAll(a, b);
});

test('"KeepAlive" is accepted and ignored', async () => {
  const room = rid("r");
  const a = await join(room);
  const b = await join(room);
  assert.deepEqual(await a.next(), { NewPeer: b.id });
  a.send('"KeepAlive"');
  a.send('"KeepAlive"');
  await a.expectNothing(300);
  await b.expectNothing(0);
  a.send({ Signal: { receiver: b.id, data: { IceCandidate: "{}" } } });
  assert.deepEqual(await b.next(), { Signal: { sender: a.id, data: { IceCandidate: "{}" } } });
  await closeAll(a, b);
});

test("bad JSON, unknown shapes and binary frames are ignored and the connection kept", async () => {
  const room = rid("r");
  const a = await join(room);
  const b = await join(room);
  assert.deepEqual(await a.next(), { NewPeer: b.id });
  a.send("{not json");
  a.send('{"Nope":1}');
  a.send('{"Signal":{"receiver":"not-a-uuid","data":1}}');
  a.send(Buffer.from([1, 2, 3, 4]));
  await a.expectNothing(300);
  assert.ok(a.isOpen);
  a.send({ Signal: { receiver: b.id, data: "still here" } });
  assert.deepEqual(await b.next(), { Signal: { sender: a.id, data: "still here" } });
  await closeAll(a, b);
});

test("a Signal to an unknown peer id is dropped and the connection kept", async () => {
  const a = await join(rid("r"));
  a.send({ Signal: { receiver: "6f1c1d5e-8a40-4d5b-9c66-0c0ffee00000", data: 1 } });
  await a.expectNothing(300);
  assert.ok(a.isOpen);
  await closeAll(a);
});

test("?next=2 groups arrivals in pairs: the first two together, the next two together", async () => {
  const room = `${rid("g")}?next=2`;
  const a = await join(room);
  const b = await join(room);
  const c = await join(room);
  const d = await join(room);
  assert.deepEqual(await a.next(), { NewPeer: b.id });
  assert.deepEqual(await c.next(), { NewPeer: d.id });
  for (const x of [a, b, c, d]) await x.expectNothing(x === a ? 400 : 0);
  // Signals stay possible within a group; a leave is told to the group only.
  a.send({ Signal: { receiver: b.id, data: "in group" } });
  assert.deepEqual(await b.next(), { Signal: { sender: a.id, data: "in group" } });
  await b.close();
  assert.deepEqual(await a.next(), { PeerLeft: b.id });
  await c.expectNothing(300);
  await d.expectNothing(0);
  // A fifth arrival starts a new group: nobody is told.
  const e = await join(room);
  for (const x of [a, c, d, e]) await x.expectNothing(x === a ? 300 : 0);
  await closeAll(a, c, d, e);
});

test("?next=3 groups arrivals in threes", async () => {
  const room = `${rid("g")}?next=3`;
  const a = await join(room);
  const b = await join(room);
  assert.deepEqual(await a.next(), { NewPeer: b.id });
  const c = await join(room);
  assert.deepEqual(await a.next(), { NewPeer: c.id });
  assert.deepEqual(await b.next(), { NewPeer: c.id });
  const d = await join(room);
  const e = await join(room);
  assert.deepEqual(await d.next(), { NewPeer: e.id });
  for (const x of [a, b, c, e]) await x.expectNothing(x === a ? 300 : 0);
  await closeAll(a, b, c, d, e);
});

test("/r, /r?next=2 and /r?next=3 never meet, nor do /r and /s", async () => {
  const r = rid("r");
  const s = rid("s");
  const plain = await join(r);
  const two = await join(`${r}?next=2`);
  const three = await join(`${r}?next=3`);
  const other = await join(s);
  for (const x of [plain, two, three, other]) await x.expectNothing(x === plain ? 300 : 0);
  const plain2 = await join(r);
  assert.deepEqual(await plain.next(), { NewPeer: plain2.id });
  const two2 = await join(`${r}?next=2`);
  assert.deepEqual(await two.next(), { NewPeer: two2.id });
  const three2 = await join(`${r}?next=3`);
  assert.deepEqual(await three.next(), { NewPeer: three2.id });
  const other2 = await join(s);
  assert.deepEqual(await other.next(), { NewPeer: other2.id });
  const all = [plain, two, three, other, plain2, two2, three2, other2];
  for (const x of all) await x.expectNothing(x === plain ? 400 : 0);
  await closeAll(all);
});

test(
  "a Signal to a peer in another room is not delivered",
  switchboardOnly("the original relays a Signal to any peer id on the server, whatever its room"),
  async () => {
    const a = await join(rid("r"));
    const b = await join(rid("s"));
    a.send({ Signal: { receiver: b.id, data: "cross-room" } });
    await b.expectNothing(500);
    assert.ok(a.isOpen);
    await closeAll(a, b);
  },
);

test("peers arriving at the same time all get their ids and meet", async () => {
  const room = rid("burst");
  const peers = await Promise.all(Array.from({ length: 6 }, () => join(room)));
  // Every pair is announced exactly once, to the earlier of the two.
  await sleep(300);
  const told = peers.map((p) => p.queue.map((m) => m.json?.NewPeer).filter(Boolean));
  const total = told.reduce((n, t) => n + t.length, 0);
  assert.equal(total, (6 * 5) / 2);
  await closeAll(peers);
});

test(
  "with --auth required: no token or a bad one is refused; ?token=JWT works and is not part of the room (nor of next=N)",
  switchboardOnly("the original has no authentication"),
  async () => {
    const secret = "compat-secret-for-tests-only-0123456789";
    const server = await startSwitchboard(["--auth", "required", "--auth-secret", secret]);
    try {
      const base = `ws://127.0.0.1:${server.port}/matchbox`;
      const room = rid("r");
      await expectRefused(`${base}/${room}`, '"KeepAlive"');
      await expectRefused(`${base}/${room}?token=not.a.jwt`, '"KeepAlive"');
      const ta = await mintToken(secret, "alice");
      const tb = await mintToken(secret, "bob");
      // Different tokens, same room.
      const a = await Client.open(`${base}/${room}?token=${ta}`);
      const aId = (await a.next()).IdAssigned;
      const b = await Client.open(`${base}/${room}?token=${tb}`);
      const bId = (await b.next()).IdAssigned;
      assert.deepEqual(await a.next(), { NewPeer: bId });
      b.send({ Signal: { receiver: aId, data: "authed" } });
      assert.deepEqual(await a.next(), { Signal: { sender: bId, data: "authed" } });
      // next=2 with the token before or after it: one group.
      const g = rid("g");
      const c = await Client.open(`${base}/${g}?next=2&token=${ta}`);
      await c.next();
      const d = await Client.open(`${base}/${g}?token=${tb}&next=2`);
      const dId = (await d.next()).IdAssigned;
      assert.deepEqual(await c.next(), { NewPeer: dId });
      await closeAll(a, b, c, d);
    } finally {
      await server.stop();
    }
  },
);
