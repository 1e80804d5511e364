// The unmodified peerjs 1.5.5 client in headless Chromium against
// $PEERJS_URL: data connections by id, the offline queue, peer-unavailable,
// unavailable-id. Runs inside scripts/netns-run (via run.sh).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { Browser, peerOptions } from "./lib/browser.mjs";
import { rid, serverUrl, waitFor } from "./lib/common.mjs";

const HTTP = serverUrl("PEERJS_URL");
const browser = new Browser();

before(async () => {
  await browser.launch();
});
after(async () => {
  await browser.close();
});

/** @param {import("playwright-core").Page} page @param {string} from @param {string} data */
async function waitReceived(page, from, data, label) {
  await waitFor(() => page.evaluate(({ from, data }) => window.received.some((r) => r.from === from && r.data === data), { from, data }), {
    timeout: 20000,
    message: async () => `${label} to receive ${JSON.stringify(data)} from ${from}\n${browser.tail()}`,
  });
}

test("two clients connect by id and exchange data-channel messages both ways (one id from GET /peerjs/id)", async () => {
  const a = await browser.app("a");
  const b = await browser.app("b");
  try {
    const aId = rid("alice");
    assert.equal(await a.evaluate(([id, o]) => window.makePeer(id, o), [aId, peerOptions(HTTP)]), aId);
    // No id: the client asks the server (GET /peerjs/id, cross-origin).
    const bId = await b.evaluate((o) => window.makePeer(undefined, o), peerOptions(HTTP));
    assert.match(bId, /^[A-Za-z0-9]+(?:[ _-][A-Za-z0-9]+)*$/);
    assert.equal(await b.evaluate(([id]) => window.connectTo(id, 20000), [aId]), true);
    await b.evaluate(() => window.sendAll("ping:from-b"));
    await waitReceived(a, bId, "ping:from-b", "a");
    await waitReceived(b, aId, "pong:from-b", "b");
    // And from the answering side on its own initiative.
    await waitFor(() => a.evaluate(() => window.sendAll("hello-from-a") === 1), { message: "a's connection to be open" });
    await waitReceived(b, aId, "hello-from-a", "b");
  } finally {
    await a.close();
    await b.close();
  }
});

test("a connect to a peer that appears a second later succeeds (the server's offline queue)", async () => {
  const a = await browser.app("a-early");
  const b = await browser.app("b-late");
  try {
    const aId = await a.evaluate(([id, o]) => window.makePeer(id, o), [rid("early"), peerOptions(HTTP)]);
    const lateId = rid("late");
    const opened = a.evaluate(([id]) => window.connectTo(id, 25000), [lateId]);
    await sleep(1000);
    assert.equal(await b.evaluate(([id, o]) => window.makePeer(id, o), [lateId, peerOptions(HTTP)]), lateId);
    assert.equal(await opened, true);
    await a.evaluate(() => window.sendAll("ping:queued"));
    await waitReceived(b, aId, "ping:queued", "late peer");
    await waitReceived(a, lateId, "pong:queued", "early peer");
  } finally {
    await a.close();
    await b.close();
  }
});

test("a connect to an id that never comes gives the client's peer-unavailable error", async () => {
  const a = await browser.app("a-lonely");
  try {
    await a.evaluate(([id, o]) => window.makePeer(id, o), [rid("lonely"), peerOptions(HTTP)]);
    const ghost = rid("ghost");
    const started = Date.now();
    a.evaluate(([id]) => void window.connectTo(id, 60000).catch(() => {}), [ghost]).catch(() => {});
    const event = await waitFor(() => a.evaluate(() => window.events.find((e) => e.event === "error")), {
      timeout: 12000,
      message: async () => `a peer-unavailable error\n${browser.tail()}`,
    });
    assert.equal(event.type, "peer-unavailable");
    assert.match(event.message, new RegExp(ghost));
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 4000, `peer-unavailable after ${elapsed} ms: expire_timeout is 5 s`);
    // The peer itself is still connected to the server.
    assert.equal(await a.evaluate(() => window.peer.disconnected), false);
  } finally {
    await a.close();
  }
});

test("a second client with a live id gets unavailable-id", async () => {
  const a = await browser.app("a-holder");
  const b = await browser.app("b-dup");
  try {
    const id = rid("taken");
    await a.evaluate(([id, o]) => window.makePeer(id, o), [id, peerOptions(HTTP)]);
    const err = await b.evaluate(([id, o]) => window.makePeer(id, o).then(() => "opened", (e) => e.message), [id, peerOptions(HTTP)]);
    assert.match(err, /^unavailable-id: /);
    const events = await b.evaluate(() => window.events);
    assert.deepEqual(events.map((e) => e.type), ["unavailable-id"]);
    // The holder is unaffected.
    assert.equal(await a.evaluate(() => window.peer.open && !window.peer.disconnected), true);
  } finally {
    await a.close();
    await b.close();
  }
});
