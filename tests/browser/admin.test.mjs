// The admin dashboard (/admin, issue #13) in headless Chromium against the real
// server started with --api-key: the key form (a wrong key, a 401 mid-session,
// "forget key"; the key never in a URL, only in sessionStorage), the live view
// of rooms, members and nodes, the filter, and the two actions: "remove" closes
// the peer's WebSocket with 4003 and its room gets peer-left; "close room" sends
// room-closed. API errors land in the status line.
//
// The signaling peers are plain WebSockets to /ws, each in its own page of the
// same Chromium (Node 20 has no global WebSocket and this suite has no `ws`
// dependency). No WebRTC, so it runs the same inside or outside scripts/netns-run.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { Server, Browser, waitFor, artifactPath } from "./harness.mjs";

/** @typedef {import("playwright-core").Page} Page */
/** @typedef {Record<string, any>} Frame */

const API_KEY = `sb-${randomBytes(18).toString("base64url")}`;
const KEY_STORAGE = "switchboard-admin-key"; // admin/admin.js
/** Room names go into API paths percent-encoded: this one needs it (a slash, a space, `#`, `?`, `&`, `%`, non-ASCII). */
const ROOM = `ops/${randomBytes(3).toString("hex")} #1?&%é`;
/** The dashboard polls every 2 s. */
const UI_TIMEOUT = 15000;

/** @type {Server} */
let server;
/** @type {Browser} */
let browser;
/** @type {Peer} */
let alice;
/** @type {Peer} */
let bob;

/**
 * A signaling peer: a WebSocket to /ws living in its own Chromium page. The
 * page records every frame it receives and how the socket closed.
 */
class Peer {
  /**
   * @param {Page} page
   * @param {string} id
   * @param {string} label
   */
  constructor(page, id, label) {
    this.page = page;
    this.id = id;
    this.label = label;
  }

  /** @param {string} label */
  static async connect(label) {
    const page = await browser.open(`${server.origin}/`, label);
    const id = await page.evaluate(
      () =>
        new Promise((resolve, reject) => {
          const ws = new WebSocket(`ws://${location.host}/ws`);
          const peer = { ws, frames: /** @type {any[]} */ ([]), closed: /** @type {{ code: number, reason: string } | null} */ (null) };
          /** @type {any} */ (window).peer = peer;
          ws.onmessage = (event) => {
            const frame = JSON.parse(String(event.data));
            peer.frames.push(frame);
            if (frame.type === "welcome") resolve(frame.id);
          };
          ws.onclose = (event) => {
            peer.closed = { code: event.code, reason: event.reason };
            reject(new Error(`closed before welcome: ${event.code}`));
          };
        }),
    );
    return new Peer(page, String(id), label);
  }

  /** @param {Frame} frame */
  async send(frame) {
    await this.page.evaluate((f) => /** @type {any} */ (window).peer.ws.send(JSON.stringify(f)), frame);
  }

  /** @returns {Promise<Frame[]>} */
  async frames() {
    return this.page.evaluate(() => /** @type {any} */ (window).peer.frames);
  }

  /** @returns {Promise<{ code: number, reason: string } | null>} */
  async closed() {
    return this.page.evaluate(() => /** @type {any} */ (window).peer.closed);
  }

  /**
   * The first frame with every field of `match`.
   * @param {Frame} match
   * @param {number} [timeout]
   * @returns {Promise<Frame>}
   */
  async waitFrame(match, timeout = 10000) {
    const frame = await waitFor(async () => (await this.frames()).find((f) => matches(f, match)), {
      timeout,
      message: async () => `${this.label}: a frame like ${JSON.stringify(match)}; got ${JSON.stringify(await this.frames())}`,
    });
    return /** @type {Frame} */ (frame);
  }

  /**
   * @param {string} room
   * @param {Record<string, unknown>} [meta]
   */
  async join(room, meta) {
    const rid = `join-${randomBytes(4).toString("hex")}`;
    await this.send({ type: "join", room, ...(meta ? { meta } : {}), rid });
    const reply = await this.waitFrame({ rid });
    assert.equal(reply.type, "joined", `${this.label}: join ${room}: ${JSON.stringify(reply)}`);
  }

  /** @returns {Promise<{ code: number, reason: string }>} */
  async waitClosed(timeout = 10000) {
    const closed = await waitFor(() => this.closed(), { timeout, message: `${this.label}'s WebSocket to close` });
    return /** @type {{ code: number, reason: string }} */ (closed);
  }

  async close() {
    await this.page.close();
  }
}

/**
 * @param {Frame} frame
 * @param {Frame} match
 */
function matches(frame, match) {
  return Object.entries(match).every(([k, v]) => JSON.stringify(frame[k]) === JSON.stringify(v));
}

/**
 * An API call from Node, for setting the stage and cross-checking the page.
 * @param {string} method
 * @param {string} path
 * @param {string} [key]
 */
async function api(method, path, key = API_KEY) {
  const res = await fetch(`${server.origin}${path}`, { method, headers: key ? { Authorization: `Bearer ${key}` } : {} });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** @param {string} room */
const roomPath = (room) => `/api/v1/rooms/${encodeURIComponent(room)}`;

/** @param {string} value a CSS attribute selector's value */
const attr = (value) => JSON.stringify(value);

/** @param {Page} page @param {string} room */
const roomRow = (page, room) => page.locator(`[data-testid="room-row"][data-room=${attr(room)}]`);

/** @param {Page} page @param {string} peer */
const memberRow = (page, peer) => page.locator(`[data-testid="member-row"][data-peer=${attr(peer)}]`);

/**
 * Open /admin in a new page and enter `key`.
 * @param {string} label
 * @param {string} key
 */
async function openAdmin(label, key) {
  const page = await browser.open(`${server.origin}/admin`, label);
  await page.getByTestId("key-input").waitFor({ state: "visible", timeout: 10000 });
  await page.getByTestId("key-input").fill(key);
  await page.getByTestId("key-submit").click();
  return page;
}

/** @param {Page} page */
const storedKeys = (page) =>
  page.evaluate((name) => ({
    session: sessionStorage.getItem(name),
    local: Object.keys(localStorage).map((k) => `${k}=${localStorage.getItem(k)}`),
    cookie: document.cookie,
  }), KEY_STORAGE);

/**
 * The page's expanded member rows of `room`, as ids.
 * @param {Page} page
 * @param {string} room
 */
const visibleMembers = (page, room) =>
  page.locator(`[data-testid="member-row"][data-room=${attr(room)}]:visible`).evaluateAll((rows) => rows.map((r) => /** @type {HTMLElement} */ (r).dataset.peer).sort());

/**
 * Fail with the page's status line and the server's log tail.
 * @param {Page} page
 */
async function context(page) {
  const status = await page.getByTestId("status").textContent().catch(() => "?");
  return `status line: ${JSON.stringify(status)}\nbrowser:\n${browser.tail(20)}\nserver:\n${server.tail(20)}`;
}

before(async () => {
  server = await new Server({ args: ["--api-key", API_KEY] }).start();
  browser = await new Browser().launch();
  alice = await Peer.connect("alice");
  bob = await Peer.connect("bob");
  // Meta is untrusted text to the dashboard: markup in it must show as text.
  await alice.join(ROOM, { name: "<img src=x onerror=window.pwned=1>Alice" });
  await bob.join(ROOM, { name: "Bob" });
  await alice.waitFrame({ type: "peer-joined", data: bob.id, room: ROOM });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test("the API answers 401 {code,message} without the key, and /admin itself loads without one", async () => {
  for (const key of ["", "wrong-key"]) {
    const res = await api("GET", "/api/v1/rooms", key);
    assert.equal(res.status, 401, `key ${JSON.stringify(key)}`);
    assert.equal(res.body?.code, "unauthorized");
    assert.equal(typeof res.body?.message, "string");
  }
  const page = await fetch(`${server.origin}/admin`);
  assert.equal(page.status, 200, "GET /admin (a browser cannot send the key on a navigation)");
  assert.match(page.headers.get("content-type") ?? "", /text\/html/);
  for (const file of ["admin.js", "admin.css"]) {
    const res = await fetch(`${server.origin}/admin/${file}`);
    assert.equal(res.status, 200, `GET /admin/${file}`);
    assert.match(res.headers.get("content-type") ?? "", file.endsWith(".js") ? /javascript/ : /text\/css/, `${file}'s type`);
  }
  // The room the page will show, as the API sees it.
  const room = await api("GET", roomPath(ROOM));
  assert.equal(room.status, 200, JSON.stringify(room.body));
  assert.deepEqual(room.body.members.map((/** @type {any} */ m) => m.id).sort(), [alice.id, bob.id].sort());
});

test("a wrong key shows an error, lists nothing and is not kept", async () => {
  const wrong = `wrong-${randomBytes(6).toString("hex")}`;
  const page = await openAdmin("admin-wrong-key", wrong);
  try {
    await page.getByTestId("key-error").waitFor({ state: "visible", timeout: UI_TIMEOUT });
    assert.match((await page.getByTestId("key-error").textContent()) ?? "", /unauthorized/);
    // Give a (broken) page time to render anything it should not.
    await sleep(2500);
    assert.equal(await page.getByTestId("room-row").count(), 0, "no rooms listed");
    assert.equal(await page.getByTestId("member-row").count(), 0, "no members listed");
    assert.equal(await page.getByTestId("node-row").count(), 0, "no nodes listed");
    assert.equal(await page.getByTestId("dashboard").isVisible(), false);
    assert.equal(await page.getByTestId("key-input").isVisible(), true, "asks again");
    const stored = await storedKeys(page);
    assert.equal(stored.session, null, "a refused key is forgotten");
    assert.deepEqual(stored.local, []);
    assert.ok(!page.url().includes(wrong), `the key is not in the URL: ${page.url()}`);
    await page.screenshot({ path: artifactPath("admin-wrong-key.png") });
  } finally {
    await page.close();
  }
});

test("the right key: the room with both members, the node, msgs/s; the key only in sessionStorage", async () => {
  const page = await openAdmin("admin", API_KEY);
  try {
    const row = roomRow(page, ROOM);
    await row.waitFor({ timeout: UI_TIMEOUT }).catch(async (err) => assert.fail(`${err.message}\n${await context(page)}`));
    assert.equal(page.url(), `${server.origin}/admin`, "no query, no fragment: the key is not in the URL");
    const stored = await storedKeys(page);
    assert.equal(stored.session, API_KEY, "the key is in sessionStorage");
    assert.deepEqual(stored.local, [], "nothing in localStorage");
    assert.equal(stored.cookie, "");
    await waitFor(async () => (await row.getByTestId("room-members").textContent()) === "2", { message: "the room's member count, 2" });

    // Expanding the room lists both members, with meta as compact JSON text (never markup).
    await row.getByTestId("room-toggle").click();
    await waitFor(async () => JSON.stringify(await visibleMembers(page, ROOM)) === JSON.stringify([alice.id, bob.id].sort()), {
      timeout: UI_TIMEOUT,
      message: async () => `both members listed: ${JSON.stringify(await visibleMembers(page, ROOM))}\n${await context(page)}`,
    });
    const aliceRow = memberRow(page, alice.id);
    assert.equal(await aliceRow.getByTestId("member-meta").textContent(), JSON.stringify({ name: "<img src=x onerror=window.pwned=1>Alice" }));
    assert.equal(await aliceRow.locator("img").count(), 0, "meta is text, not markup");
    assert.equal(await page.evaluate(() => /** @type {any} */ (window).pwned), undefined);
    assert.equal(await aliceRow.getByTestId("member-id").textContent(), alice.id);
    assert.match((await aliceRow.getByTestId("member-joined").textContent()) ?? "", /\d\d:\d\d:\d\d/);

    // One node, the one both members are on, with both connections counted.
    const nodeRow = page.getByTestId("node-row");
    await nodeRow.first().waitFor();
    assert.equal(await nodeRow.count(), 1);
    const nodeId = await nodeRow.getAttribute("data-node");
    assert.ok(nodeId, "node id");
    assert.equal(await aliceRow.getByTestId("member-node").textContent(), nodeId);
    assert.ok(Number(await nodeRow.getByTestId("node-connections").textContent()) >= 2, "at least the two peers' connections");
    assert.match((await nodeRow.getByTestId("node-version").textContent()) ?? "", /^\d+\.\d+\.\d+/);
    assert.equal(await nodeRow.getByTestId("node-chart").count(), 1);

    // Messages per second come from the difference of messages_in between two polls.
    for (let i = 0; i < 5; i++) {
      for (let j = 0; j < 20; j++) await alice.send({ type: "ping" });
      await sleep(400);
    }
    await waitFor(async () => Number((await nodeRow.getByTestId("node-rate").textContent())?.replace(/,/g, "")) > 0, {
      timeout: UI_TIMEOUT,
      message: async () => `a positive msgs/s, got ${await nodeRow.getByTestId("node-rate").textContent()}`,
    });
    await page.screenshot({ path: artifactPath("admin-dashboard.png") });

    // The filter: by member id (only the matching member), by room name, and a miss.
    const search = page.getByTestId("search");
    await search.fill(bob.id);
    await waitFor(async () => JSON.stringify(await visibleMembers(page, ROOM)) === JSON.stringify([bob.id]), { message: "only Bob for his id" });
    assert.equal(await row.isVisible(), true);
    await search.fill(ROOM.slice(0, 8).toUpperCase());
    await waitFor(async () => (await visibleMembers(page, ROOM)).length === 2, { message: "the room's name shows all of it" });
    await search.fill("no-such-room-or-peer");
    await row.waitFor({ state: "hidden" });
    await page.getByTestId("rooms-empty").waitFor({ state: "visible" });
    await search.fill("");
    await row.waitFor({ state: "visible" });

    // A reload in the same tab keeps the key (sessionStorage), and asks nothing.
    await page.reload();
    await roomRow(page, ROOM).waitFor({ timeout: UI_TIMEOUT });
    assert.equal(await page.getByTestId("key-input").isVisible(), false);
  } finally {
    await page.close();
  }
});

test("remove: confirm() first, then the peer's WebSocket closes with 4003 and the room gets peer-left", async () => {
  const page = await openAdmin("admin-remove", API_KEY);
  try {
    const row = roomRow(page, ROOM);
    await row.waitFor({ timeout: UI_TIMEOUT });
    await row.getByTestId("room-toggle").click();
    const aliceRow = memberRow(page, alice.id);
    await aliceRow.waitFor({ timeout: UI_TIMEOUT });

    // Dismissing the dialog removes nobody.
    /** @type {string[]} */
    const dialogs = [];
    page.once("dialog", (d) => {
      dialogs.push(`${d.type()}: ${d.message()}`);
      void d.dismiss();
    });
    await aliceRow.getByTestId("remove-peer").click();
    await waitFor(() => dialogs.length === 1, { message: "a confirm dialog" });
    assert.match(dialogs[0], /^confirm: /);
    assert.ok(dialogs[0].includes(alice.id), dialogs[0]);
    await sleep(1000);
    assert.equal(await alice.closed(), null, "a dismissed dialog removes nobody");

    // Accepting it removes Alice, with the reason typed on the page.
    const reason = "removed by the admin test";
    await page.getByTestId("remove-reason").fill(reason);
    page.once("dialog", (d) => {
      dialogs.push(`${d.type()}: ${d.message()}`);
      void d.accept();
    });
    await aliceRow.getByTestId("remove-peer").click();
    const closed = await alice.waitClosed().catch(async (err) => assert.fail(`${err.message}\n${await context(page)}`));
    assert.deepEqual(closed, { code: 4003, reason });
    await bob.waitFrame({ type: "peer-left", data: alice.id, room: ROOM });
    await page.locator('[data-testid="status"][data-state="ok"]').waitFor({ timeout: UI_TIMEOUT });
    await aliceRow.waitFor({ state: "detached", timeout: UI_TIMEOUT });
    await waitFor(async () => JSON.stringify(await visibleMembers(page, ROOM)) === JSON.stringify([bob.id]), { message: "Bob alone" });
    await page.screenshot({ path: artifactPath("admin-removed.png") });

    // Removing someone who is already gone: the API's 404 shows as `unknown-target: ...` in the status line.
    const carol = await Peer.connect("carol");
    await carol.join(ROOM);
    const carolRow = memberRow(page, carol.id);
    await carolRow.waitFor({ timeout: UI_TIMEOUT });
    /** @type {unknown[]} */
    const stage = [];
    page.once("dialog", async (d) => {
      // While the dialog is open (the page cannot poll), the API removes Carol first.
      try {
        stage.push((await api("DELETE", `/api/v1/peers/${encodeURIComponent(carol.id)}`)).status);
      } catch (err) {
        stage.push(err);
      } finally {
        await d.accept();
      }
    });
    await carolRow.getByTestId("remove-peer").click();
    const status = page.locator('[data-testid="status"][data-state="error"][data-code="unknown-target"]');
    await status.waitFor({ timeout: UI_TIMEOUT }).catch(async (err) => assert.fail(`${err.message}\n${await context(page)}`));
    assert.match((await status.textContent()) ?? "", /unknown-target: \S/);
    assert.equal(stage[0], 204, `the API's own DELETE: ${String(stage[0])}`);
    assert.equal((await carol.waitClosed()).code, 4003);
    await bob.waitFrame({ type: "peer-left", data: carol.id, room: ROOM });
    await carol.close();
  } finally {
    await page.close();
  }
});

test("close room: the remaining member gets room-closed and stays connected; the room leaves the page", async () => {
  const page = await openAdmin("admin-close", API_KEY);
  try {
    const row = roomRow(page, ROOM);
    await row.waitFor({ timeout: UI_TIMEOUT });
    /** @type {string[]} */
    const dialogs = [];
    page.on("dialog", (d) => {
      dialogs.push(`${d.type()}: ${d.message()}`);
      void d.accept();
    });
    // A second member: closing the room must not tell members about each other leaving.
    const dave = await Peer.connect("dave");
    await dave.join(ROOM);
    await bob.waitFrame({ type: "peer-joined", data: dave.id, room: ROOM });
    await waitFor(async () => (await row.getByTestId("room-members").textContent()) === "2", { timeout: UI_TIMEOUT, message: "Bob and Dave listed" });
    const seen = { bob: (await bob.frames()).length, dave: (await dave.frames()).length };
    await row.getByTestId("close-room").click();
    await bob.waitFrame({ type: "room-closed", room: ROOM }).catch(async (err) => assert.fail(`${err.message}\n${await context(page)}`));
    await dave.waitFrame({ type: "room-closed", room: ROOM });
    assert.equal(dialogs.length, 1);
    assert.match(dialogs[0], /^confirm: /);
    assert.ok(dialogs[0].includes(ROOM), dialogs[0]);
    await row.waitFor({ state: "detached", timeout: UI_TIMEOUT });
    await page.locator('[data-testid="status"][data-state="ok"]').waitFor();
    await sleep(500); // time for a wrong peer-left to arrive
    for (const [peer, from] of /** @type {const} */ ([[bob, seen.bob], [dave, seen.dave]])) {
      assert.equal(await peer.closed(), null, `closing a room keeps ${peer.label} connected`);
      const later = (await peer.frames()).slice(from);
      assert.deepEqual(later.filter((f) => f.type === "peer-left"), [], `no peer-left among members (${peer.label})`);
    }
    await dave.close();
    assert.equal((await api("GET", roomPath(ROOM))).status, 404, "the room is gone");

    // Closing a room that is gone by the time the dialog is accepted: unknown-room in the status line.
    const other = `second room ${randomBytes(3).toString("hex")}`;
    await bob.join(other);
    const otherRow = roomRow(page, other);
    await otherRow.waitFor({ timeout: UI_TIMEOUT });
    page.removeAllListeners("dialog");
    /** @type {unknown[]} */
    const stage = [];
    page.once("dialog", async (d) => {
      try {
        stage.push((await api("DELETE", roomPath(other))).status);
      } catch (err) {
        stage.push(err);
      } finally {
        await d.accept();
      }
    });
    await otherRow.getByTestId("close-room").click();
    const status = page.locator('[data-testid="status"][data-state="error"][data-code="unknown-room"]');
    await status.waitFor({ timeout: UI_TIMEOUT }).catch(async (err) => assert.fail(`${err.message}\n${await context(page)}`));
    assert.equal(stage[0], 204, `the API's own DELETE: ${String(stage[0])}`);
    await bob.waitFrame({ type: "room-closed", room: other });
    await page.screenshot({ path: artifactPath("admin-closed.png") });
  } finally {
    await page.close();
  }
});

test("a 401 mid-session forgets the key and asks again; so does `forget key`", async () => {
  const room = `lobby-${randomBytes(3).toString("hex")}`;
  await bob.join(room);
  const page = await openAdmin("admin-401", API_KEY);
  try {
    await roomRow(page, room).waitFor({ timeout: UI_TIMEOUT });
    // The key is revoked under the page (here: the stored one changes); the next poll gets 401.
    await page.evaluate((name) => sessionStorage.setItem(name, "revoked-key"), KEY_STORAGE);
    await page.getByTestId("key-error").waitFor({ state: "visible", timeout: UI_TIMEOUT });
    assert.match((await page.getByTestId("key-error").textContent()) ?? "", /unauthorized/);
    assert.equal(await page.getByTestId("room-row").count(), 0, "nothing listed after a 401");
    assert.equal(await page.getByTestId("node-row").count(), 0);
    assert.equal((await storedKeys(page)).session, null);

    // In again, then "forget key".
    await page.getByTestId("key-input").fill(API_KEY);
    await page.getByTestId("key-submit").click();
    await roomRow(page, room).waitFor({ timeout: UI_TIMEOUT });
    await page.getByTestId("forget-key").click();
    await page.getByTestId("key-input").waitFor({ state: "visible" });
    assert.equal((await storedKeys(page)).session, null);
    assert.equal(await page.getByTestId("room-row").count(), 0);
    await sleep(2500); // no more polling: nothing comes back
    assert.equal(await page.getByTestId("room-row").count(), 0);
    assert.equal(await page.getByTestId("key-error").isVisible(), false);
  } finally {
    await page.close();
  }
  // The key travelled only in Authorization headers: nothing logged it.
  assert.deepEqual(server.logs.filter((line) => line.includes(API_KEY)), [], "the API key in the server's log");
});

test("no uncaught errors in any page", () => {
  assert.deepEqual(browser.pageErrors, []);
});
