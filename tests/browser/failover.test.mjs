// A rolling restart under a live call: two pages, each with the SDK
// (resume on, the default), call each other over WebRTC (PeerMesh, a data
// channel) through a small TCP load balancer in front of three nodes that
// share one redis-server. Every node in turn is stopped gracefully (SIGTERM,
// close code 1012) and started again on its port. The pages on it reconnect
// through the balancer, land on another node and resume their sessions: same
// peer ids, same room, nobody leaves. Meanwhile both pages keep sending
// numbered messages on the data channel and numbered relays through the
// server, and every one must arrive exactly once, in order.
//
// Run it inside the network namespace like the rest of the suite
// (scripts/netns-run npm test). FAILOVER_RESUME_GRACE overrides the nodes'
// --resume-grace (default 15s); with 0s the test must fail.
//
// A relay the moving page sends in the few ms between the node's Close 1012
// and the page's own close event must not be lost either: the node handles
// frames that arrive after its close frame (their replies go with the parked
// session), and the SDK sends nothing on a socket that is already CLOSING (the
// browser would discard it) but on the resumed connection.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import net from "node:net";
import { Server, Browser, waitFor, freePort } from "./harness.mjs";

const ROOM = "r";
const NODES = 3;
const RESUME_GRACE = process.env.FAILOVER_RESUME_GRACE ?? "15s";
const STEP_TIMEOUT = 30000;

/** redis-server on 127.0.0.1, a free port, nothing on disk. */
class Redis {
  /** @type {import("node:child_process").ChildProcess | null} */
  child = null;
  /** @type {string[]} */
  logs = [];
  port = 0;

  async start() {
    this.port = await freePort();
    const child = spawn(
      "redis-server",
      ["--port", String(this.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    this.child = child;
    for (const s of [child.stdout, child.stderr]) s?.on("data", (d) => this.logs.push(String(d)));
    await waitFor(() => this.ping(), { timeout: 10000, message: () => `redis-server to answer PING:\n${this.logs.join("")}` });
    return this;
  }

  /** @returns {Promise<boolean>} */
  ping() {
    return new Promise((resolve) => {
      const s = net.connect(this.port, "127.0.0.1");
      let got = "";
      s.on("connect", () => s.write("PING\r\n"));
      s.on("data", (d) => {
        got += d;
        if (got.includes("\r\n")) {
          s.destroy();
          resolve(got.startsWith("+PONG"));
        }
      });
      s.on("error", () => resolve(false));
    });
  }

  get url() {
    return `redis://127.0.0.1:${this.port}`;
  }

  async stop() {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    await exited;
  }
}

/**
 * A TCP load balancer: each new connection goes to the next node that is
 * enabled and accepts it. WebSocket connections of the test's pages carry
 * `page=<label>` in their URL; the balancer reads it from the request line
 * to know which node each page is on, and spreads those round-robin.
 */
class Balancer {
  /** @param {number[]} ports */
  constructor(ports) {
    this.ports = ports;
    this.enabled = ports.map(() => true);
    this.next = 0;
    /** @type {{ page: string, node: number, line: string }[]} */
    this.connections = [];
    /** @type {Map<string, number>} the node of each page's latest WebSocket */
    this.nodeOf = new Map();
    /** @type {Set<import("node:net").Socket>} */
    this.sockets = new Set();
    this.server = net.createServer((client) => this.#accept(client));
  }

  async listen() {
    this.port = await freePort();
    await new Promise((resolve) => this.server.listen(this.port, "127.0.0.1", () => resolve(undefined)));
    return this;
  }

  get origin() {
    return `http://127.0.0.1:${this.port}`;
  }

  /** @param {import("node:net").Socket} client */
  #accept(client) {
    this.sockets.add(client);
    client.on("close", () => this.sockets.delete(client));
    client.on("error", () => client.destroy());
    client.once("data", (first) => {
      client.pause();
      const line = first.toString("latin1").split("\r\n", 1)[0];
      const page = /[?&]page=(\w+)/.exec(line)?.[1];
      /** @type {number[]} */
      const order = [];
      const start = page ? this.next++ : 0;
      for (let k = 0; k < this.ports.length; k++) order.push((start + k) % this.ports.length);
      this.#connect(client, first, order.filter((i) => this.enabled[i]), page, line);
    });
  }

  /**
   * @param {import("node:net").Socket} client
   * @param {Buffer} first
   * @param {number[]} order
   * @param {string | undefined} page
   * @param {string} line
   */
  #connect(client, first, order, page, line) {
    const node = order.shift();
    if (node === undefined || client.destroyed) {
      client.destroy();
      return;
    }
    const upstream = net.connect(this.ports[node], "127.0.0.1");
    let connected = false;
    upstream.once("connect", () => {
      connected = true;
      this.sockets.add(upstream);
      upstream.on("close", () => {
        this.sockets.delete(upstream);
        client.end();
      });
      client.on("close", () => upstream.destroy());
      if (page) {
        this.connections.push({ page, node, line });
        this.nodeOf.set(page, node);
      }
      upstream.write(first);
      client.pipe(upstream);
      upstream.pipe(client);
    });
    upstream.on("error", () => {
      if (!connected) this.#connect(client, first, order, page, line);
      else upstream.destroy();
    });
  }

  close() {
    for (const s of this.sockets) s.destroy();
    this.server.close();
  }
}

/** @type {Redis} */
let redis;
/** @type {Server[]} */
const nodes = [];
/** @type {Balancer} */
let balancer;
/** @type {Browser} */
let browser;
/** @type {Record<string, import("playwright-core").Page>} */
const pages = {};

before(async () => {
  redis = await new Redis().start();
  const args = [
    "--redis",
    redis.url,
    "--node-ttl",
    "1s",
    "--redis-timeout",
    "500ms",
    "--resume-grace",
    RESUME_GRACE,
    "--shutdown-close-code",
    "1012",
    "--shutdown-delay",
    "0s",
    "--rate-limit-messages",
    "0",
  ];
  for (let i = 0; i < NODES; i++) nodes.push(await new Server({ args }).start());
  balancer = await new Balancer(nodes.map((n) => n.port)).listen();
  browser = await new Browser().launch();
});

after(async () => {
  await browser?.close();
  balancer?.close();
  for (const n of nodes) await n.stop();
  await redis?.stop();
});

/** What the pages, the balancer and the nodes saw, to explain a failure. */
async function diagnostics() {
  const lines = [];
  for (const [label, page] of Object.entries(pages)) {
    try {
      lines.push(`${label}: ${JSON.stringify(await summary(page))}`);
    } catch (err) {
      lines.push(`${label}: ${err.message}`);
    }
  }
  lines.push(`balancer: ${JSON.stringify(balancer.connections.map((c) => `${c.page}->${c.node}`))}`);
  lines.push(`--- browser console ---\n${browser.tail(30)}`);
  nodes.forEach((n, i) => lines.push(`--- node ${i} ---\n${n.tail(12)}`));
  return `\n${lines.join("\n")}`;
}

/** @param {import("playwright-core").Page} page */
function summary(page) {
  return page.evaluate(() => {
    const t = /** @type {any} */ (window).t;
    const peer = t.mesh.peers.get(t.other);
    return {
      id: t.client.id,
      state: t.client.state,
      welcomes: t.welcomes.length,
      resumed: t.welcomes.filter((/** @type {any} */ w) => w.resumed).length,
      states: t.states,
      channel: peer?.channels.get("data")?.readyState,
      pc: peer?.pc.connectionState,
      dataSent: t.dataSent,
      dataIn: t.dataIn.length,
      dataSendFailures: t.dataSendFailures,
      relaySent: t.relaySent,
      relayAcked: t.relayAcked,
      relayErrors: t.relayErrors.slice(0, 5),
      relaysIn: t.relays.length,
      peerLeft: t.peerLeft,
      left: t.left,
      meshEvents: t.meshEvents,
      errors: t.errors.slice(0, 5),
    };
  });
}

/** Open a page through the balancer, connect with the SDK and join the room with a PeerMesh. */
async function openPage(label) {
  const page = await browser.open(`${balancer.origin}/`, label);
  pages[label] = page;
  return page.evaluate(
    async ([label, room]) => {
      const { SwitchboardClient, PeerMesh } = await import("/sdk/switchboard.js");
      const client = new SwitchboardClient({ url: `/ws?page=${label}`, initialDelay: 200 });
      const t = {
        client,
        other: /** @type {string | null} */ (null),
        welcomes: /** @type {any[]} */ ([]),
        states: /** @type {any[]} */ ([]),
        peerLeft: /** @type {any[]} */ ([]),
        left: /** @type {any[]} */ ([]),
        errors: /** @type {string[]} */ ([]),
        meshEvents: /** @type {string[]} */ ([]),
        relays: /** @type {{ from: string, seq: number }[]} */ ([]),
        dataIn: /** @type {number[]} */ ([]),
        dataSent: 0,
        dataSendFailures: 0,
        relaySent: 0,
        relayAcked: 0,
        relayErrors: /** @type {any[]} */ ([]),
        timers: /** @type {any[]} */ ([]),
        mesh: /** @type {any} */ (null),
      };
      /** @type {any} */ (window).t = t;
      client.on("welcome", (e) => t.welcomes.push(e));
      client.on("state", (e) => t.states.push({ state: e.state, code: e.code }));
      client.on("peer-left", (e) => t.peerLeft.push(e));
      client.on("left", (e) => t.left.push(e));
      client.on("error", (e) => t.errors.push(`client: ${e?.message ?? e}`));
      client.on("relay", (m) => {
        if (m.type === "signal" && typeof m.seq === "number") t.relays.push({ from: m.from, seq: m.seq });
      });
      const mesh = new PeerMesh(client, { room, dataChannels: ["data"] });
      t.mesh = mesh;
      mesh.on("peer", ({ peer }) => t.meshEvents.push(`peer ${peer.id}`));
      mesh.on("peer-removed", ({ peer, reason }) => t.meshEvents.push(`peer-removed ${peer.id} ${reason}`));
      mesh.on("ice-restart", ({ peer }) => t.meshEvents.push(`ice-restart ${peer.id}`));
      mesh.on("state", ({ peer, state }) => t.meshEvents.push(`state ${peer.id} ${state}`));
      mesh.on("channel-open", ({ label }) => t.meshEvents.push(`channel-open ${label}`));
      mesh.on("channel-close", ({ label }) => t.meshEvents.push(`channel-close ${label}`));
      mesh.on("channel-message", ({ data }) => t.dataIn.push(JSON.parse(data).n));
      mesh.on("error", ({ error }) => t.errors.push(`mesh: ${error?.message ?? error}`));
      await client.connect();
      await client.join(room);
      return client.id;
    },
    [label, ROOM],
  );
}

/** Start the page's pumps: a numbered data-channel message every 20 ms, a numbered relay every 25 ms. */
function startPumps(page, other) {
  return page.evaluate((other) => {
    const t = /** @type {any} */ (window).t;
    t.other = other;
    t.timers.push(
      setInterval(() => {
        if (t.mesh.send("data", JSON.stringify({ n: t.dataSent }), other) === 1) t.dataSent++;
        else t.dataSendFailures++;
      }, 20),
      setInterval(() => {
        const seq = t.relaySent++;
        t.client.sendTo(other, { type: "signal", seq }).then(
          () => t.relayAcked++,
          (/** @type {any} */ e) => t.relayErrors.push({ seq, code: e.code, message: e.message }),
        );
      }, 25),
    );
  }, other);
}

/** @param {import("playwright-core").Page} page */
function stopPumps(page) {
  return page.evaluate(() => {
    const t = /** @type {any} */ (window).t;
    for (const timer of t.timers) clearInterval(timer);
    t.timers = [];
  });
}

/** @param {import("playwright-core").Page} page */
function counts(page) {
  return page.evaluate(() => {
    const t = /** @type {any} */ (window).t;
    return {
      state: t.client.state,
      welcomes: t.welcomes.length,
      dataSent: t.dataSent,
      dataIn: t.dataIn.length,
      relaySent: t.relaySent,
      relaysIn: t.relays.length,
      maxRelayIn: t.relays.length ? t.relays[t.relays.length - 1].seq : -1,
      maxDataIn: t.dataIn.length ? t.dataIn[t.dataIn.length - 1] : -1,
    };
  });
}

/** Wait until each page has received, on both paths, what the other had sent by now (and something more). */
async function bothFlow(what) {
  const [a, b] = await Promise.all([counts(pages.A), counts(pages.B)]);
  await waitFor(
    async () => {
      const [a2, b2] = await Promise.all([counts(pages.A), counts(pages.B)]);
      return (
        a2.maxRelayIn > b.relaySent &&
        b2.maxRelayIn > a.relaySent &&
        a2.maxDataIn > b.dataSent &&
        b2.maxDataIn > a.dataSent
      );
    },
    { timeout: STEP_TIMEOUT, interval: 200, message: async () => `data and relays flowing both ways ${what}${await diagnostics()}` },
  );
}

/** SIGTERM a node and wait for it to exit; SIGKILL after 20 s (then the exit says so). */
async function sigterm(server) {
  const child = server.child;
  assert.ok(child, "node running");
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 20000);
  const result = await exited;
  clearTimeout(timer);
  server.child = null;
  return result;
}

test("a call survives a rolling restart of every node: data channel and signaling, exactly once, in order", async (t) => {
  const idA = await openPage("A");
  const idB = await openPage("B");
  assert.notEqual(idA, idB);
  // Both pages see each other and the data channel opens on both sides.
  await waitFor(
    async () => {
      const [a, b] = await Promise.all(
        [pages.A, pages.B].map((p, k) =>
          p.evaluate((other) => {
            const t = /** @type {any} */ (window).t;
            return t.mesh.peers.get(other)?.channels.get("data")?.readyState === "open";
          }, k === 0 ? idB : idA),
        ),
      );
      return a && b;
    },
    { timeout: STEP_TIMEOUT, message: async () => `the data channel open on both pages${await diagnostics()}` },
  );
  await startPumps(pages.A, idB);
  await startPumps(pages.B, idA);
  await bothFlow("before any restart");

  const moves = [];
  for (let i = 0; i < NODES; i++) {
    const before = { A: await counts(pages.A), B: await counts(pages.B) };
    const onIt = ["A", "B"].filter((label) => balancer.nodeOf.get(label) === i);
    const connectionsBefore = balancer.connections.length;
    balancer.enabled[i] = false; // the load balancer takes the node out first
    const exit = await sigterm(nodes[i]);
    assert.deepEqual(exit, { code: 0, signal: null }, `node ${i} stops gracefully on SIGTERM`);
    // The pages that were on it come back, through the balancer, on another node, resumed.
    await waitFor(
      async () => {
        for (const label of onIt) {
          const c = await counts(pages[label]);
          if (c.state !== "open" || c.welcomes <= before[label].welcomes) return false;
          const node = balancer.nodeOf.get(label);
          if (node === i || balancer.connections.length === connectionsBefore) return false;
        }
        return true;
      },
      { timeout: STEP_TIMEOUT, message: async () => `${onIt.join(", ")} back after node ${i} stopped${await diagnostics()}` },
    );
    for (const label of onIt) {
      const last = await pages[label].evaluate(() => /** @type {any} */ (window).t.welcomes.at(-1));
      assert.deepEqual(
        { id: last.id, resumed: last.resumed },
        { id: label === "A" ? idA : idB, resumed: true },
        `${label} resumed its session (same id) after node ${i} stopped${await diagnostics()}`,
      );
    }
    for (const label of ["A", "B"]) {
      const left = await pages[label].evaluate(() => /** @type {any} */ (window).t.peerLeft);
      assert.deepEqual(left, [], `${label} saw no peer-left when node ${i} stopped`);
    }
    moves.push({ node: i, pages: onIt, to: onIt.map((l) => balancer.nodeOf.get(l)) });
    await bothFlow(`after node ${i} stopped`);
    await nodes[i].start();
    balancer.enabled[i] = true;
    await bothFlow(`after node ${i} restarted`);
  }
  // Every page was on some node, and every node was restarted.
  assert.ok(moves.some((m) => m.pages.includes("A")) && moves.some((m) => m.pages.includes("B")), `both pages moved: ${JSON.stringify(moves)}`);

  await stopPumps(pages.A);
  await stopPumps(pages.B);
  // Everything sent arrives (the relays' acks too), then compare exactly.
  await waitFor(
    async () => {
      const [a, b] = await Promise.all([summary(pages.A), summary(pages.B)]);
      return (
        a.dataIn === b.dataSent &&
        b.dataIn === a.dataSent &&
        a.relaysIn >= b.relaySent &&
        b.relaysIn >= a.relaySent &&
        a.relayAcked + a.relayErrors.length === a.relaySent &&
        b.relayAcked + b.relayErrors.length === b.relaySent
      );
    },
    { timeout: STEP_TIMEOUT, message: async () => `everything sent to arrive${await diagnostics()}` },
  );

  const full = await Promise.all(
    [pages.A, pages.B].map((p) =>
      p.evaluate(() => {
        const t = /** @type {any} */ (window).t;
        const peer = t.mesh.peers.get(t.other);
        return {
          id: t.client.id,
          state: t.client.state,
          welcomes: t.welcomes,
          states: t.states,
          rooms: [...t.client.rooms.keys()],
          peers: t.client.peers("r").map((/** @type {any} */ p) => p.id),
          peerLeft: t.peerLeft,
          left: t.left,
          meshEvents: t.meshEvents,
          errors: t.errors,
          relays: t.relays,
          relaySent: t.relaySent,
          relayAcked: t.relayAcked,
          relayErrors: t.relayErrors,
          dataIn: t.dataIn,
          dataSent: t.dataSent,
          dataSendFailures: t.dataSendFailures,
          channel: peer?.channels.get("data")?.readyState,
          pc: peer?.pc.connectionState,
        };
      }),
    ),
  );
  const [A, B] = full;
  t.diagnostic(`moves: ${JSON.stringify(moves)}`);
  t.diagnostic(`A: ${A.welcomes.length} welcomes, sent ${A.dataSent} data / ${A.relaySent} relays; B: ${B.welcomes.length} welcomes, sent ${B.dataSent} data / ${B.relaySent} relays`);
  t.diagnostic(`balancer: ${balancer.connections.map((c) => `${c.page}->${c.node}`).join(" ")}`);
  const seq = (/** @type {number} */ n) => Array.from({ length: n }, (_, k) => k);
  for (const [label, me, other, myId, otherId] of /** @type {const} */ ([
    ["A", A, B, idA, idB],
    ["B", B, A, idB, idA],
  ])) {
    // Signaling: same session all along.
    assert.equal(me.id, myId, `${label}'s peer id never changed`);
    assert.equal(me.state, "open");
    assert.deepEqual(me.rooms, [ROOM]);
    assert.deepEqual(me.peers, [otherId], `${label} still sees the other in the room`);
    assert.deepEqual(me.peerLeft, [], `${label} saw no peer-left`);
    assert.deepEqual(me.left, [], `${label} left no room`);
    assert.ok(me.welcomes.length >= 2, `${label} reconnected at least once`);
    assert.equal(me.welcomes[0].resumed, undefined);
    for (const w of me.welcomes.slice(1)) {
      assert.equal(w.resumed, true, `${label}: every reconnection resumed`);
      assert.equal(w.reconnected, true);
      assert.equal(w.id, myId, `${label}: resumed with the same id`);
    }
    const expectedStates = [{ state: "connecting" }, { state: "open" }];
    for (let k = 1; k < me.welcomes.length; k++) expectedStates.push({ state: "reconnecting", code: 1012 }, { state: "open" });
    assert.deepEqual(
      me.states.map((/** @type {any} */ s) => (s.code === undefined ? { state: s.state } : s)),
      expectedStates,
      `${label}: each drop was a 1012 followed by a resume`,
    );
    // Relays: each one acked, and received by the other exactly once, in order.
    assert.deepEqual(me.relayErrors, [], `${label}'s relays were all accepted`);
    assert.equal(me.relayAcked, me.relaySent);
    assert.ok(me.relaySent > 0);
    assert.deepEqual(other.relays.map((/** @type {any} */ r) => r.seq), seq(me.relaySent), `${label}'s relays arrive exactly once, in order`);
    assert.ok(other.relays.every((/** @type {any} */ r) => r.from === myId));
    // Data channel: never closed, nothing lost or doubled, in order.
    assert.equal(me.dataSendFailures, 0, `${label}'s data channel was always open`);
    assert.equal(me.channel, "open");
    assert.equal(me.pc, "connected");
    assert.ok(me.dataSent > 0);
    assert.deepEqual(other.dataIn, seq(me.dataSent), `${label}'s data-channel messages arrive exactly once, in order`);
    // The mesh kept its one connection to the other page.
    assert.deepEqual(
      me.meshEvents.filter((/** @type {string} */ e) => /^peer|channel-close|ice-restart|state .* (failed|closed|disconnected)/.test(e)),
      [`peer ${otherId}`],
      `${label}: one peer connection, never closed or restarted`,
    );
    assert.deepEqual(me.errors, [], `${label}: no errors`);
  }
});

test("no uncaught errors in any page", () => {
  assert.deepEqual(browser.pageErrors, []);
});
