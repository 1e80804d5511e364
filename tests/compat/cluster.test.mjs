// Every dialect across two Switchboard nodes sharing a real redis-server:
// a peer on node 1 reaches a peer on node 2. This file starts its own
// redis-server (free port, no persistence) and two nodes
// (`switchboard serve --redis redis://127.0.0.1:PORT`, each on its own port).
// Runs inside scripts/netns-run (via run.sh).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { BINARY, Client, ROOT, closeAll, freePort, rid, spawnLogged, waitForPort } from "./lib/common.mjs";
import { Browser, peerOptions } from "./lib/browser.mjs";
import { syncPair } from "./lib/ywebrtc.mjs";
import { runNative } from "./lib/matchbox-native.mjs";
import { waitFor } from "./lib/common.mjs";

/** @type {ReturnType<typeof spawnLogged>[]} */
const procs = [];
/** @type {{ http: string, ws: string }[]} */
const nodes = [];
const browser = new Browser();

before(async () => {
  const redisPort = await freePort();
  const redis = spawnLogged("redis-server", ["--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
  procs.push(redis);
  await waitForPort(redisPort, { what: "redis-server", child: redis });
  await browser.launch();
  for (let i = 0; i < 2; i++) {
    const port = await freePort();
    const node = spawnLogged(
      BINARY,
      ["serve", "--listen", `127.0.0.1:${port}`, "--redis", `redis://127.0.0.1:${redisPort}`, "--log-format", "json", "--allowed-origin", browser.appOrigin],
      { cwd: ROOT },
    );
    procs.push(node);
    await waitForPort(port, { what: `switchboard node ${i + 1}`, child: node });
    // Listening comes before the node's first heartbeat registers it with Redis:
    // until /readyz says the broker is up, cross-node work is refused.
    await waitFor(
      async () => {
        const res = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => null);
        return res?.ok && (await res.json()).broker === "up";
      },
      { message: `node ${i + 1}'s broker up` },
    );
    nodes.push({ http: `http://127.0.0.1:${port}`, ws: `ws://127.0.0.1:${port}` });
  }
});

after(async () => {
  await browser.close();
  for (const p of procs.reverse()) await p.stop();
});

// ---- PeerJS: one realm across the cluster

/** @param {string} ws @param {string} id @param {string} token */
async function peerjsOpen(ws, id, token = "tok") {
  const c = await Client.open(`${ws}/peerjs?key=peerjs&id=${id}&token=${token}&version=1.5.5`);
  return Object.assign(c, { id, first: await c.next() });
}

test("PeerJS: a peer on node 1 relays OFFER to a peer on node 2, src stamped", async () => {
  const a = await peerjsOpen(nodes[0].ws, rid("n1a"));
  const b = await peerjsOpen(nodes[1].ws, rid("n2b"));
  assert.deepEqual([a.first, b.first], [{ type: "OPEN" }, { type: "OPEN" }]);
  a.send({ type: "OFFER", dst: b.id, payload: { across: "nodes" } });
  assert.deepEqual(await b.next(), { type: "OFFER", src: a.id, dst: b.id, payload: { across: "nodes" } });
  b.send({ type: "ANSWER", dst: a.id, payload: { back: true } });
  assert.deepEqual(await a.next(), { type: "ANSWER", src: b.id, dst: a.id, payload: { back: true } });
  await closeAll(a, b);
});

test("PeerJS: an id live on node 1 is taken on node 2 too (one namespace)", async () => {
  const id = rid("one");
  const a = await peerjsOpen(nodes[0].ws, id, "t1");
  assert.deepEqual(a.first, { type: "OPEN" });
  const b = await peerjsOpen(nodes[1].ws, id, "t2");
  assert.deepEqual(b.first, { type: "ID-TAKEN", payload: { msg: "ID is taken" } });
  await b.expectClose();
  await closeAll(a);
});

test("PeerJS: a message to an id that then connects on the other node is delivered after its OPEN", async () => {
  const a = await peerjsOpen(nodes[0].ws, rid("q1"));
  const lateId = rid("q2");
  a.send({ type: "OFFER", dst: lateId, payload: { queued: 1 } });
  await new Promise((r) => setTimeout(r, 500));
  const late = await peerjsOpen(nodes[1].ws, lateId);
  assert.deepEqual(late.first, { type: "OPEN" });
  assert.deepEqual(await late.next(), { type: "OFFER", src: a.id, dst: lateId, payload: { queued: 1 } });
  await closeAll(a, late);
});

test("PeerJS: two peerjs clients in Chromium, on different nodes, open a data connection", async () => {
  const pa = await browser.app("n1");
  const pb = await browser.app("n2");
  try {
    const aId = rid("cn1");
    await pa.evaluate(([id, o]) => window.makePeer(id, o), [aId, peerOptions(nodes[0].http)]);
    const bId = await pb.evaluate((o) => window.makePeer(undefined, o), peerOptions(nodes[1].http));
    assert.equal(await pb.evaluate(([id]) => window.connectTo(id, 20000), [aId]), true);
    await pb.evaluate(() => window.sendAll("ping:across"));
    await waitFor(() => pb.evaluate(([from]) => window.received.some((r) => r.from === from && r.data === "pong:across"), [aId]), {
      message: async () => `the pong across nodes\n${browser.tail()}`,
    });
    assert.ok(await pa.evaluate(([from]) => window.received.some((r) => r.from === from && r.data === "ping:across"), [bId]));
  } finally {
    await pa.close();
    await pb.close();
  }
});

// ---- y-webrtc: a topic is a cluster-wide room

test("y-webrtc: publish reaches subscribers on both nodes, clients counted cluster-wide", async () => {
  const topic = rid("doc-");
  const a = await Client.open(`${nodes[0].ws}/y-webrtc`);
  const b = await Client.open(`${nodes[1].ws}/y-webrtc`);
  for (const c of [a, b]) {
    c.send({ type: "subscribe", topics: [topic] });
    c.send({ type: "ping" });
    assert.deepEqual(await c.next(), { type: "pong" });
  }
  // The subscription on node 2 reaches node 1 asynchronously (over Redis).
  let got;
  await waitFor(async () => {
    a.send({ type: "publish", topic, data: { hello: "cluster" } });
    got = await a.next();
    if (got.clients === 2) return true;
    return false;
  }, { timeout: 5000, message: () => `clients: 2 (last ${JSON.stringify(got)})` });
  assert.deepEqual(got, { type: "publish", topic, data: { hello: "cluster" }, clients: 2 });
  // b got that one (and maybe earlier ones while the count was converging).
  let last;
  do last = await b.next(); while (b.queue.length);
  assert.deepEqual(last, { type: "publish", topic, data: { hello: "cluster" }, clients: 2 });
  await closeAll(a, b);
});

test("y-webrtc: two providers, one per node, sync a Y.Map both ways", async () => {
  const maps = await syncPair(`${nodes[0].ws}/y-webrtc`, `${nodes[1].ws}/y-webrtc`, rid("cluster-room-"));
  const both = { a: "hello from a", b: "hello from b" };
  assert.deepEqual(maps, { a: both, b: both });
});

// ---- matchbox: a room is a cluster-wide room

/** @param {string} url */
async function mbJoin(url) {
  const c = await Client.open(url);
  const first = await c.next();
  return Object.assign(c, { id: first.IdAssigned });
}

test("matchbox: NewPeer, Signal and PeerLeft between a peer on node 1 and a peer on node 2", async () => {
  const room = rid("r");
  const a = await mbJoin(`${nodes[0].ws}/matchbox/${room}`);
  const b = await mbJoin(`${nodes[1].ws}/matchbox/${room}`);
  assert.deepEqual(await a.next(), { NewPeer: b.id });
  a.send({ Signal: { receiver: b.id, data: { Offer: "v=0" } } });
  assert.deepEqual(await b.next(), { Signal: { sender: a.id, data: { Offer: "v=0" } } });
  b.send({ Signal: { receiver: a.id, data: { Answer: "v=0" } } });
  assert.deepEqual(await a.next(), { Signal: { sender: b.id, data: { Answer: "v=0" } } });
  await b.close();
  assert.deepEqual(await a.next(), { PeerLeft: b.id });
  await closeAll(a);
});

test("matchbox: ?next=2 groups arrivals across nodes", async () => {
  const room = `${rid("g")}?next=2`;
  const a = await mbJoin(`${nodes[0].ws}/matchbox/${room}`);
  const b = await mbJoin(`${nodes[1].ws}/matchbox/${room}`);
  const c = await mbJoin(`${nodes[1].ws}/matchbox/${room}`);
  const d = await mbJoin(`${nodes[0].ws}/matchbox/${room}`);
  assert.deepEqual(await a.next(), { NewPeer: b.id });
  assert.deepEqual(await c.next(), { NewPeer: d.id });
  for (const x of [a, b, c, d]) await x.expectNothing(x === a ? 400 : 0);
  await closeAll(a, b, c, d);
});

test("matchbox: two matchbox_socket peers, one per node, reach Connected and exchange a packet", async () => {
  const room = rid("native");
  const r = await runNative([`${nodes[0].ws}/matchbox/${room}`, `${nodes[1].ws}/matchbox/${room}`]);
  assert.equal(r.code, 0, `matchbox-native failed:\n${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /^ok /m);
});
