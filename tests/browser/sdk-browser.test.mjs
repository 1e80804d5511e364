// The SDK as shipped (/sdk/switchboard.js, imported by a page from the
// server) against the real server, in Chromium: promise results matched by
// rid, typed events, error codes, ICE servers from `welcome`, and rejoining
// several rooms after a server restart.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import net from "node:net";
import { Server, Browser, waitFor, freePort } from "./harness.mjs";

/**
 * A TCP relay in front of a server whose connections can be cut without a
 * WebSocket close frame, the way a network change cuts them.
 */
class CuttableProxy {
  /** @param {number} target */
  constructor(target) {
    this.target = target;
    /** @type {Set<import("node:net").Socket>} */
    this.sockets = new Set();
    this.server = net.createServer((client) => {
      const upstream = net.connect(this.target, "127.0.0.1");
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on("close", () => this.sockets.delete(s));
        s.on("error", () => {});
      }
      client.pipe(upstream);
      upstream.pipe(client);
    });
  }

  async listen() {
    this.port = await freePort();
    await new Promise((resolve) => this.server.listen(this.port, "127.0.0.1", () => resolve(undefined)));
    return this;
  }

  /** Drops every connection through the proxy at once. */
  cut() {
    for (const s of this.sockets) s.destroy();
  }

  close() {
    this.cut();
    this.server.close();
  }
}

/** @type {Server} */
let plain;
/** @type {Server} */
let withIce;
/** @type {Browser} */
let browser;

const STUN = "stun:127.0.0.1:3478";
const TURN = "turn:127.0.0.1:3478";

before(async () => {
  plain = await new Server().start();
  withIce = await new Server({
    args: ["--ice-server", STUN, "--ice-server", TURN, "--turn-username", "user", "--turn-credential", "secret"],
  }).start();
  browser = await new Browser().launch();
});

after(async () => {
  await browser?.close();
  await plain?.stop();
  await withIce?.stop();
});

const room = () => `sdk-${randomBytes(4).toString("hex")}`;

test("join, broadcast, relay, ping and leave resolve; refusals reject with the server's code", async () => {
  const page = await browser.open(`${plain.origin}/`, "sdk");
  const result = await page.evaluate(async (r) => {
    const { SwitchboardClient, SwitchboardError } = await import("/sdk/switchboard.js");
    const a = new SwitchboardClient();
    const b = new SwitchboardClient();
    const c = new SwitchboardClient();
    const out = /** @type {Record<string, any>} */ ({});
    const [wa, wb] = await Promise.all([a.connect(), b.connect(), c.connect()]);
    out.welcome = { a: wa.id, b: wb.id, iceServers: a.iceServers, reconnected: wa.reconnected };
    out.joinedA = await a.join(r, { meta: { name: "Ada" }, capacity: 2 });
    const peerJoined = a.once("peer-joined");
    out.joinedB = await b.join(r, { meta: { name: "Bo" } });
    out.peerJoined = await peerJoined;

    const gotBroadcast = a.once("broadcast");
    out.broadcastResult = await b.broadcast({ hello: "room" });
    out.broadcast = await gotBroadcast;

    const gotRelay = b.once("relay");
    out.relayResult = await a.sendTo(b.id, { type: "offer", sdp: "v=0 test" });
    out.relay = await gotRelay;

    /** @param {Promise<unknown>} p */
    const refusal = (p) =>
      p.then(
        () => "resolved",
        (e) => ({ isSwitchboardError: e instanceof SwitchboardError, code: e.code, message: e.message }),
      );
    out.full = await refusal(c.join(r));
    out.unknownTarget = await refusal(a.sendTo("AAAAAAAAAAAAAAAAAAAAAA", { type: "signal", data: 1 }));
    out.noSharedRoom = await refusal(a.sendTo(c.id, { type: "signal", data: 1 }));
    out.alreadyJoined = await refusal(a.join(r));
    out.notInRoom = await refusal(c.broadcast("x", "nowhere"));
    out.rtt = await a.ping();
    out.peersOfA = a.peers(r);

    const peerLeft = a.once("peer-left");
    out.left = await b.leave(r);
    out.peerLeft = await peerLeft;
    out.peersAfter = a.peers(r);
    for (const x of [a, b, c]) x.close();
    out.states = [a.state, b.state, c.state];
    return out;
  }, room());

  const { welcome } = result;
  assert.notEqual(welcome.a, welcome.b);
  assert.match(welcome.a, /^[A-Za-z0-9_-]{22}$/);
  assert.equal(welcome.iceServers, undefined, "no iceServers when the server has none");
  assert.equal(welcome.reconnected, false);
  assert.deepEqual(result.joinedA.peers, []);
  assert.equal(result.joinedA.capacity, 2);
  assert.deepEqual(result.joinedB.peers, [{ id: welcome.a, meta: { name: "Ada" } }]);
  assert.deepEqual(result.peerJoined.id, welcome.b);
  assert.deepEqual(result.peerJoined.meta, { name: "Bo" });
  assert.equal(result.broadcastResult, undefined);
  assert.deepEqual(result.broadcast.data, { hello: "room" });
  assert.equal(result.broadcast.from, welcome.b);
  assert.equal(result.relay.from, welcome.a);
  assert.equal(result.relay.type, "offer");
  assert.equal(result.relay.sdp, "v=0 test");
  for (const [key, code] of [
    ["full", "room-full"],
    ["unknownTarget", "unknown-target"],
    ["noSharedRoom", "no-shared-room"],
    ["alreadyJoined", "already-joined"],
    ["notInRoom", "not-in-room"],
  ]) {
    assert.equal(result[key].isSwitchboardError, true, key);
    assert.equal(result[key].code, code, key);
  }
  assert.equal(typeof result.rtt, "number");
  assert.deepEqual(result.peersOfA, [{ id: welcome.b, meta: { name: "Bo" } }]);
  assert.equal(result.left.rooms.length, 1);
  assert.equal(result.peerLeft.id, welcome.b);
  assert.deepEqual(result.peersAfter, []);
  assert.deepEqual(result.states, ["closed", "closed", "closed"]);
  await page.close();
});

test("welcome carries the server's iceServers; the mesh uses them unless the app overrides", async () => {
  const page = await browser.open(`${withIce.origin}/`, "ice");
  const result = await page.evaluate(async (r) => {
    const { SwitchboardClient, PeerMesh } = await import("/sdk/switchboard.js");
    const a = new SwitchboardClient();
    const b = new SwitchboardClient();
    const welcome = await a.connect();
    await b.connect();
    // No media and no data channels: connections exist but never negotiate.
    const fromServer = new PeerMesh(a, { room: r, dataChannels: [] });
    const overridden = new PeerMesh(a, { room: r, dataChannels: [], iceServers: [] });
    await a.join(r);
    await b.join(r);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const config = (/** @type {any} */ mesh) => mesh.peers.get(b.id)?.pc.getConfiguration().iceServers;
    const out = { welcome: welcome.iceServers, server: config(fromServer), override: config(overridden) };
    fromServer.close();
    overridden.close();
    a.close();
    b.close();
    return out;
  }, room());
  const expected = [{ urls: [STUN] }, { urls: [TURN], username: "user", credential: "secret" }];
  assert.deepEqual(result.welcome, expected);
  // getConfiguration() reports absent username/credential as "".
  const normalize = (/** @type {any} */ s) =>
    Object.fromEntries(Object.entries({ ...s, urls: [s.urls].flat() }).filter(([, v]) => v !== ""));
  assert.deepEqual(result.server.map(normalize), expected);
  assert.deepEqual(result.override, []);
  await page.close();
});

test("after a server restart the client reconnects with a new id and rejoins every room with its meta", async () => {
  const page = await browser.open(`${plain.origin}/`, "rejoin");
  const [r1, r2] = [room(), room()];
  const first = await page.evaluate(
    async ([r1, r2]) => {
      const { SwitchboardClient } = await import("/sdk/switchboard.js");
      const a = new SwitchboardClient({ initialDelay: 200 });
      const b = new SwitchboardClient({ initialDelay: 200 });
      /** @type {any} */ (window).sb = { a, b, states: /** @type {string[]} */ ([]) };
      a.on("state", (e) => /** @type {any} */ (window).sb.states.push(e.state));
      await a.connect();
      await b.connect();
      await a.join(r1, { meta: { name: "Ada" } });
      await a.join(r2, { meta: { name: "Ada in r2" } });
      await b.join(r1, { meta: { name: "Bo" } });
      return { a: a.id, b: b.id };
    },
    [r1, r2],
  );
  await plain.restart();
  const after = await waitFor(
    () =>
      page.evaluate(
        ([r1, r2]) => {
          const { a, b, states } = /** @type {any} */ (window).sb;
          const ok =
            a.state === "open" &&
            b.state === "open" &&
            a.peers(r1).some((/** @type {any} */ p) => p.id === b.id) &&
            b.peers(r1).some((/** @type {any} */ p) => p.id === a.id);
          return ok && { a: a.id, b: b.id, rooms: [...a.rooms.keys()].sort(), bSeesA: b.peers(r1), states, r2: a.rooms.get(r2).peers.size };
        },
        [r1, r2],
      ),
    { timeout: 20000, message: "both clients back in the room" },
  );
  assert.notEqual(after.a, first.a);
  assert.notEqual(after.b, first.b);
  assert.deepEqual(after.rooms, [r1, r2].sort());
  assert.deepEqual(after.bSeesA, [{ id: after.a, meta: { name: "Ada" } }]);
  assert.deepEqual(after.states, ["connecting", "open", "reconnecting", "open"]);
  await page.evaluate(() => {
    /** @type {any} */ (window).sb.a.close();
    /** @type {any} */ (window).sb.b.close();
  });
  await page.close();
});

test("a connection cut mid-session resumes: same id, no rejoin, the room never notices, missed messages arrive", async () => {
  // Pages on the server's origin reach it through the proxy's port: allow that origin.
  const server = await new Server({ args: ["--allowed-origin", "*", "--resume-grace", "15s"] }).start();
  const proxy = await new CuttableProxy(server.port).listen();
  const page = await browser.open(`${server.origin}/`, "resume");
  const r = room();
  try {
    const first = await page.evaluate(
      async ([r, proxied]) => {
        const { SwitchboardClient } = await import("/sdk/switchboard.js");
        const a = new SwitchboardClient({ url: proxied, initialDelay: 1500, jitter: 0 });
        const b = new SwitchboardClient({});
        const seen = { welcomes: /** @type {any[]} */ ([]), bEvents: /** @type {string[]} */ ([]), aGot: /** @type {any[]} */ ([]) };
        /** @type {any} */ (window).sb = { a, b, seen };
        a.on("welcome", (e) => seen.welcomes.push(e));
        a.on("relay", (m) => seen.aGot.push(m.n));
        b.on("peer-left", (e) => seen.bEvents.push(`left:${e.id}`));
        b.on("peer-joined", (e) => seen.bEvents.push(`joined:${e.id}`));
        await a.connect();
        await b.connect();
        await a.join(r, { meta: { name: "Ada" } });
        await b.join(r, { meta: { name: "Bo" } });
        return { a: a.id, b: b.id };
      },
      [r, `ws://127.0.0.1:${proxy.port}/ws`],
    );
    proxy.cut(); // no close frame reaches either side
    // While a is away (it waits 1.5 s before reconnecting), b keeps sending to it.
    await waitFor(() => page.evaluate(() => /** @type {any} */ (window).sb.a.state === "reconnecting"), {
      message: "a notices the cut",
    });
    await page.evaluate(async (aId) => {
      const { b } = /** @type {any} */ (window).sb;
      for (let n = 0; n < 5; n++) await b.sendTo(aId, { type: "signal", n });
    }, first.a);
    const after = await waitFor(
      () =>
        page.evaluate(() => {
          const { a, seen } = /** @type {any} */ (window).sb;
          return a.state === "open" && seen.aGot.length >= 5 && { id: a.id, ...seen, rooms: [...a.rooms.keys()] };
        }),
      { timeout: 20000, message: "a back with the messages it missed" },
    );
    assert.equal(after.id, first.a, "same peer id");
    assert.deepEqual(after.rooms, [r]);
    assert.equal(after.welcomes.length, 2);
    assert.equal(after.welcomes[1].resumed, true);
    assert.deepEqual(after.aGot, [0, 1, 2, 3, 4], "what b sent meanwhile, in order");
    assert.deepEqual(after.bEvents, [], "b saw no one leave or come back");
    // And the session works both ways after the resume.
    await page.evaluate(async (bId) => {
      await /** @type {any} */ (window).sb.a.sendTo(bId, { type: "signal", n: 99 });
    }, first.b);
    await page.evaluate(() => {
      /** @type {any} */ (window).sb.a.close();
      /** @type {any} */ (window).sb.b.close();
    });
  } finally {
    await page.close();
    proxy.close();
    await server.stop();
  }
});

test("no uncaught errors in any page", () => {
  assert.deepEqual(browser.pageErrors, []);
});
