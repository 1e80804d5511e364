// The y-webrtc signaling protocol at the wire, as y-webrtc 10.3.0's
// bin/server.js speaks it: node `ws` against $YWEBRTC_URL
// (ws://HOST:PORT/y-webrtc).

import { test } from "node:test";
import assert from "node:assert/strict";
import { Client, closeAll, expectRefused, mintToken, rid, serverUrl, startSwitchboard, switchboardOnly } from "./lib/common.mjs";

const URL_ = serverUrl("YWEBRTC_URL");
const open = () => Client.open(URL_);

/** Subscribes and proves the server has processed it (ping → pong after it, in order). */
async function subscribe(c, ...topics) {
  c.send({ type: "subscribe", topics });
  c.send({ type: "ping" });
  assert.deepEqual(await c.next(), { type: "pong" });
}

test("ping is answered with exactly {type:pong}", async () => {
  const a = await open();
  a.send({ type: "ping" });
  const m = await a.nextRaw();
  assert.deepEqual(JSON.parse(m.raw), { type: "pong" });
  await a.expectNothing(200);
  await closeAll(a);
});

test("publish goes to every subscriber of the topic, the sender included, with clients = subscriber count", async () => {
  const topic = rid("doc-");
  const a = await open();
  const b = await open();
  const outsider = await open();
  await subscribe(a, topic);
  await subscribe(b, topic);
  await subscribe(outsider, rid("other-"));
  const data = { type: "announce", from: "3f1c9e0a-peer" };
  a.send({ type: "publish", topic, data });
  assert.deepEqual(await a.next(), { type: "publish", topic, data, clients: 2 });
  assert.deepEqual(await b.next(), { type: "publish", topic, data, clients: 2 });
  await outsider.expectNothing(300);
  // Published data is opaque: an encrypted room sends a base64 string.
  b.send({ type: "publish", topic, data: "c2VjcmV0IGJ5dGVz" });
  assert.deepEqual(await a.next(), { type: "publish", topic, data: "c2VjcmV0IGJ5dGVz", clients: 2 });
  assert.deepEqual(await b.next(), { type: "publish", topic, data: "c2VjcmV0IGJ5dGVz", clients: 2 });
  await closeAll(a, b, outsider);
});

test("one subscribe can carry several topics; each topic counts its own subscribers", async () => {
  const [t1, t2] = [rid("doc-"), rid("doc-")];
  const a = await open();
  const b = await open();
  await subscribe(a, t1, t2);
  await subscribe(b, t2);
  a.send({ type: "publish", topic: t1, data: { n: 1 } });
  assert.deepEqual(await a.next(), { type: "publish", topic: t1, data: { n: 1 }, clients: 1 });
  a.send({ type: "publish", topic: t2, data: { n: 2 } });
  assert.deepEqual(await a.next(), { type: "publish", topic: t2, data: { n: 2 }, clients: 2 });
  assert.deepEqual(await b.next(), { type: "publish", topic: t2, data: { n: 2 }, clients: 2 });
  await b.expectNothing(200);
  await closeAll(a, b);
});

test("unsubscribe stops delivery and lowers the count", async () => {
  const topic = rid("doc-");
  const a = await open();
  const b = await open();
  await subscribe(a, topic);
  await subscribe(b, topic);
  b.send({ type: "unsubscribe", topics: [topic] });
  b.send({ type: "ping" });
  assert.deepEqual(await b.next(), { type: "pong" });
  a.send({ type: "publish", topic, data: { after: "unsubscribe" } });
  assert.deepEqual(await a.next(), { type: "publish", topic, data: { after: "unsubscribe" }, clients: 1 });
  await b.expectNothing(300);
  await closeAll(a, b);
});

test("a closed connection leaves its topics", async () => {
  const topic = rid("doc-");
  const a = await open();
  const b = await open();
  await subscribe(a, topic);
  await subscribe(b, topic);
  await b.close();
  // The server sees the close asynchronously; the count drops to 1 soon after.
  let clients;
  for (let i = 0; i < 20; i++) {
    a.send({ type: "publish", topic, data: { i } });
    clients = (await a.next()).clients;
    if (clients === 1) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(clients, 1);
  await closeAll(a);
});

test("a non-subscriber may publish: subscribers get it, the publisher does not", async () => {
  const topic = rid("doc-");
  const a = await open();
  const stranger = await open();
  await subscribe(a, topic);
  stranger.send({ type: "publish", topic, data: { from: "stranger" } });
  assert.deepEqual(await a.next(), { type: "publish", topic, data: { from: "stranger" }, clients: 1 });
  await stranger.expectNothing(300);
  await closeAll(a, stranger);
});

test("publish to a topic nobody subscribed to goes nowhere and the connection stays", async () => {
  const a = await open();
  a.send({ type: "publish", topic: rid("empty-"), data: { n: 1 } });
  await a.expectNothing(300);
  a.send({ type: "ping" });
  assert.deepEqual(await a.next(), { type: "pong" });
  await closeAll(a);
});

test("topics as long as real document names (200 bytes, any characters) work", async () => {
  const topic = `workspace/${"ü".repeat(40)}/${rid()}/` + "x".repeat(100);
  const a = await open();
  const b = await open();
  await subscribe(a, topic);
  await subscribe(b, topic);
  a.send({ type: "publish", topic, data: { long: true } });
  assert.deepEqual(await b.next(), { type: "publish", topic, data: { long: true }, clients: 2 });
  await closeAll(a, b);
});

test(
  "a malformed frame does not kill the connection (nor the server)",
  switchboardOnly("one malformed frame throws in the original's message handler and kills its process"),
  async () => {
    const topic = rid("doc-");
    const a = await open();
    const b = await open();
    await subscribe(b, topic);
    a.send("this is not json{");
    a.send("[1,2,3]");
    a.send(Buffer.from([0, 1, 2, 3]));
    a.send({ type: "publish", topic, data: { still: "alive" } });
    assert.deepEqual(await b.next(), { type: "publish", topic, data: { still: "alive" }, clients: 1 });
    a.send({ type: "ping" });
    assert.deepEqual(await a.next(), { type: "pong" });
    await closeAll(a, b);
  },
);

test(
  "with --auth required: no token or a bad one is refused; ?token=JWT works",
  switchboardOnly("the original has no authentication"),
  async () => {
    const secret = "compat-secret-for-tests-only-0123456789";
    const server = await startSwitchboard(["--auth", "required", "--auth-secret", secret]);
    try {
      const base = `ws://127.0.0.1:${server.port}/y-webrtc`;
      await expectRefused(base, { type: "ping" });
      await expectRefused(`${base}?token=not.a.jwt`, { type: "ping" });
      const token = await mintToken(secret);
      const topic = rid("doc-");
      const a = await Client.open(`${base}?token=${token}`);
      const b = await Client.open(`${base}?token=${await mintToken(secret, "bob")}`);
      await subscribe(a, topic);
      await subscribe(b, topic);
      a.send({ type: "publish", topic, data: { authed: true } });
      assert.deepEqual(await b.next(), { type: "publish", topic, data: { authed: true }, clients: 2 });
      await closeAll(a, b);
    } finally {
      await server.stop();
    }
  },
);

test(
  "per-connection limits: a connection subscribing to 10,000 topics is closed, not left half-subscribed silently",
  switchboardOnly("the original has no limits; Switchboard's topics-per-connection limit is far below 10,000"),
  async () => {
    const a = await open();
    const topics = Array.from({ length: 10000 }, (_, i) => `t${i}`);
    for (let i = 0; i < topics.length && a.isOpen; i += 500) {
      a.send({ type: "subscribe", topics: topics.slice(i, i + 500) });
    }
    const closed = await a.expectClose(5000);
    assert.ok(closed.code >= 1000, `closed with ${closed.code}`);
  },
);

test(
  "per-connection limits: a topic longer than the topic limit (8 KiB) is refused, other topics unaffected",
  switchboardOnly("the original has no limits; Switchboard's topic-length limit is far below 8 KiB"),
  async () => {
    const huge = "x".repeat(8192);
    const a = await open();
    const b = await open();
    const topic = rid("doc-");
    await subscribe(b, topic);
    a.send({ type: "subscribe", topics: [huge] });
    // Refused visibly: either a is closed, or the huge topic is not subscribed.
    const outcome = await Promise.race([a.closed.then(() => "closed"), new Promise((r) => setTimeout(() => r("open"), 500))]);
    if (outcome === "open") {
      const c = await open();
      c.send({ type: "publish", topic: huge, data: 1 });
      await a.expectNothing(400);
      await closeAll(c);
    }
    b.send({ type: "publish", topic, data: { fine: true } });
    assert.deepEqual(await b.next(), { type: "publish", topic, data: { fine: true }, clients: 1 });
    await closeAll(a, b);
  },
);
