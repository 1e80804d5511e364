// The video room demo (web/room.html) in headless Chromium: real WebRTC
// between pages, through a real server. Steps run in order and build on each
// other: two peers, media and data both ways, a third peer (mesh), a page
// closing, and a server restart the pages must survive on their own.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { Server, Browser, waitFor, artifactPath } from "./harness.mjs";

const ROOM = `e2e-${randomBytes(4).toString("hex")}`;
const CONNECT_TIMEOUT = 20000;

/** @type {Server} */
let server;
/** @type {Browser} */
let browser;
/** @type {Record<string, import("playwright-core").Page>} */
const pages = {};

before(async () => {
  server = await new Server().start();
  browser = await new Browser().launch();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Print what the pages and the server said, to explain a failure. */
async function diagnostics() {
  const lines = [];
  for (const [name, page] of Object.entries(pages)) {
    if (page.isClosed()) continue;
    try {
      lines.push(`${name}: ${JSON.stringify(await info(page))}`);
      lines.push(await histories(page));
    } catch (err) {
      lines.push(`${name}: ${err.message}`);
    }
  }
  return `\n--- pages ---\n${lines.join("\n")}\n--- browser console ---\n${browser.tail(40)}\n--- server ---\n${server.tail(15)}`;
}

/** @param {import("playwright-core").Page} page */
function info(page) {
  return page.evaluate(() => {
    const room = /** @type {any} */ (window).switchboardRoom;
    return { id: room.id, signaling: room.signalingState, peers: room.peers() };
  });
}

/** @param {import("playwright-core").Page} page */
function histories(page) {
  return page.evaluate(() =>
    [.../** @type {any} */ (window).switchboardRoom.mesh.peers.values()]
      .map((/** @type {any} */ p) => `  with ${p.id} (${p.state}, ${p.polite ? "polite" : "impolite"}):\n${p.history.map((/** @type {any} */ h) => `    ${h.t} ${h.step}`).join("\n")}`)
      .join("\n"),
  );
}

/** Open the room as `name` and wait until it has joined. */
async function join(name) {
  const page = await browser.open(`${server.origin}/room.html?room=${ROOM}&name=${encodeURIComponent(name)}`, name);
  pages[name] = page;
  await page.waitForFunction(() => /** @type {any} */ (window).switchboardRoom?.ready, null, { timeout: 10000 });
  await page.evaluate(() => /** @type {any} */ (window).switchboardRoom.ready);
  return page;
}

/** Wait until every named page sees every other one as "connected", by the ids they have now. */
async function allConnected(names, timeout = CONNECT_TIMEOUT) {
  return waitFor(
    async () => {
      const infos = await Promise.all(names.map((n) => info(pages[n])));
      const ids = infos.map((i) => i.id);
      for (const [k, i] of infos.entries()) {
        if (i.signaling !== "open") return false;
        const others = ids.filter((_, j) => j !== k);
        if (i.peers.length !== others.length) return false;
        for (const id of others) {
          const p = i.peers.find((x) => x.id === id);
          if (!p || p.state !== "connected" || !p.chatOpen) return false;
        }
      }
      return Object.fromEntries(names.map((n, k) => [n, infos[k]]));
    },
    { timeout, interval: 200, message: async () => `${names.join(", ")} all connected${await diagnostics()}` },
  );
}

/** framesDecoded of the inbound video from `peerId`, from getStats(). */
function framesDecoded(page, peerId) {
  return page.evaluate(async (id) => {
    const peer = /** @type {any} */ (window).switchboardRoom.mesh.peers.get(id);
    if (!peer) return -1;
    const report = await peer.pc.getStats();
    let frames = 0;
    report.forEach((/** @type {any} */ s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") frames += s.framesDecoded ?? 0;
    });
    return frames;
  }, peerId);
}

async function videoFlows(from, to, ids) {
  await waitFor(async () => (await framesDecoded(pages[to], ids[from])) > 0, {
    timeout: CONNECT_TIMEOUT,
    message: async () => `${to} to decode video frames from ${from}${await diagnostics()}`,
  });
}

async function chatGoesThrough(from, to, ids, text) {
  const sent = await pages[from].evaluate((t) => /** @type {any} */ (window).switchboardRoom.sendChat(t), text);
  assert.ok(sent >= 1, `${from} sent on ${sent} channels`);
  await waitFor(
    () =>
      pages[to].evaluate(
        ([t, fromId]) =>
          /** @type {any} */ (window).switchboardRoom.chatLog.some(
            (/** @type {any} */ e) => e.direction === "in" && e.text === t && e.from === fromId,
          ),
        [text, ids[from]],
      ),
    { timeout: 10000, message: async () => `${to} to receive "${text}" from ${from}${await diagnostics()}` },
  );
  // And a person sees it too.
  await pages[to].locator("#chat li", { hasText: text }).waitFor({ timeout: 5000 });
}

const ids = {};

test("two pages join the same room and reach `connected`", async () => {
  await join("Ada");
  await join("Bo");
  const infos = await allConnected(["Ada", "Bo"]);
  ids.Ada = infos.Ada.id;
  ids.Bo = infos.Bo.id;
  assert.notEqual(ids.Ada, ids.Bo);
  // Display names come from join meta.
  assert.equal(infos.Ada.peers[0].name, "Bo");
  assert.equal(infos.Bo.peers[0].name, "Ada");
  // Perfect negotiation roles: exactly one polite side, the smaller id.
  assert.equal(infos.Ada.peers[0].polite, ids.Ada < ids.Bo);
  assert.equal(infos.Bo.peers[0].polite, ids.Bo < ids.Ada);
  // The page shows it to people: a tile per peer with its state, and the people list.
  for (const [me, other] of [
    ["Ada", "Bo"],
    ["Bo", "Ada"],
  ]) {
    const tile = pages[me].locator(`.tile[data-peer="${ids[other]}"]`);
    await tile.locator(".badge[data-state=connected]").waitFor({ timeout: 5000 });
    assert.equal(await tile.locator(".name").textContent(), other);
    assert.equal(await pages[me].locator("#peers li").count(), 2);
  }
});

test("each page decodes the other's video (getStats framesDecoded > 0)", async () => {
  await videoFlows("Ada", "Bo", ids);
  await videoFlows("Bo", "Ada", ids);
});

test("a data-channel chat message goes each way", async () => {
  await chatGoesThrough("Ada", "Bo", ids, "Hello Bo, this is Ada");
  await chatGoesThrough("Bo", "Ada", ids, "Hi Ada! Bo here");
});

test("screenshot of the room with two peers", async () => {
  for (const page of [pages.Ada, pages.Bo]) {
    // Both tiles show live video, not the avatar placeholder.
    await page.waitForFunction(() => document.querySelectorAll(".tile.has-video").length === 2, null, { timeout: 10000 });
  }
  const file = artifactPath("video-room-two-peers.png");
  await pages.Ada.screenshot({ path: file });
  await pages.Bo.screenshot({ path: artifactPath("video-room-two-peers-bo.png") });
  console.log(`screenshot: ${file}`);
});

test("a third page joins and all three connect (mesh)", async () => {
  await join("Cy");
  const infos = await allConnected(["Ada", "Bo", "Cy"]);
  ids.Cy = infos.Cy.id;
  await videoFlows("Ada", "Cy", ids);
  await videoFlows("Bo", "Cy", ids);
  await videoFlows("Cy", "Ada", ids);
  await videoFlows("Cy", "Bo", ids);
  await chatGoesThrough("Cy", "Ada", ids, "Cy says hi to everyone");
  await pages.Bo.locator("#chat li", { hasText: "Cy says hi to everyone" }).waitFor({ timeout: 5000 });
  await pages.Ada.waitForFunction(() => document.querySelectorAll(".tile.has-video").length === 3, null, { timeout: 10000 });
  await pages.Ada.screenshot({ path: artifactPath("video-room-three-peers.png") });
});

test("a page closes: the others see peer-left and clean up", async () => {
  // Keep a handle on the connection each of them has to Cy.
  for (const name of ["Ada", "Bo"]) {
    await pages[name].evaluate((id) => {
      /** @type {any} */ (window).__cy = /** @type {any} */ (window).switchboardRoom.mesh.peers.get(id);
    }, ids.Cy);
  }
  await pages.Cy.close();
  for (const name of ["Ada", "Bo"]) {
    const page = pages[name];
    await waitFor(
      () =>
        page.evaluate((id) => {
          const room = /** @type {any} */ (window).switchboardRoom;
          return (
            room.events.some((/** @type {any} */ e) => e.type === "peer-left" && e.id === id) &&
            room.events.some((/** @type {any} */ e) => e.type === "peer-removed" && e.id === id) &&
            !room.mesh.peers.has(id)
          );
        }, ids.Cy),
      { timeout: 10000, message: async () => `${name} to see Cy leave${await diagnostics()}` },
    );
    const cleaned = await page.evaluate((id) => {
      const peer = /** @type {any} */ (window).__cy;
      return {
        pc: peer.pc.connectionState,
        signaling: peer.pc.signalingState,
        state: peer.state,
        channel: peer.channels.get("chat").readyState,
        tile: document.querySelectorAll(`.tile[data-peer="${id}"]`).length,
        tiles: document.querySelectorAll(".tile").length,
        listed: document.querySelectorAll(`#peers li[data-peer="${id}"]`).length,
        peers: /** @type {any} */ (window).switchboardRoom.peers().length,
      };
    }, ids.Cy);
    assert.deepEqual(cleaned, {
      pc: "closed",
      signaling: "closed",
      state: "closed",
      channel: "closed",
      tile: 0,
      tiles: 2,
      listed: 0,
      peers: 1,
    });
    await page.locator("#chat li.system", { hasText: "Cy left" }).waitFor({ timeout: 5000 });
  }
  delete pages.Cy;
  // The two that stayed are still connected.
  await allConnected(["Ada", "Bo"]);
});

test("the server restarts: the pages reconnect on their own, rejoin and connect again", async () => {
  const before = { ...ids };
  await server.restart(); // SIGKILL, then the same port again
  assert.equal(server.starts, 2);
  const infos = await allConnected(["Ada", "Bo"], 30000);
  ids.Ada = infos.Ada.id;
  ids.Bo = infos.Bo.id;
  assert.notEqual(ids.Ada, before.Ada, "a new connection gets a new id");
  assert.notEqual(ids.Bo, before.Bo);
  for (const name of ["Ada", "Bo"]) {
    const seen = await pages[name].evaluate(() =>
      /** @type {any} */ (window).switchboardRoom.events.map((/** @type {any} */ e) => (e.type === "signaling" ? `signaling:${e.state}` : e.type)),
    );
    assert.ok(seen.includes("signaling:reconnecting"), `${name} went through reconnecting: ${seen}`);
    assert.ok(seen.includes("rejoined"), `${name} rejoined: ${seen}`);
    // Only the current peer connection is left; the old one was torn down.
    const tiles = await pages[name].locator(".tile").count();
    assert.equal(tiles, 2, `${name} shows two tiles`);
    await pages[name].locator(".badge#signaling[data-state=open]").waitFor({ timeout: 5000 });
  }
  await videoFlows("Ada", "Bo", ids);
  await videoFlows("Bo", "Ada", ids);
  await chatGoesThrough("Ada", "Bo", ids, "Still here after the restart?");
  await chatGoesThrough("Bo", "Ada", ids, "Yes, reconnected!");
});

test("mute buttons: the others see it; on a phone-sized screen the layout stacks", async () => {
  await pages.Bo.click("#mute-mic");
  await pages.Bo.click("#mute-cam");
  const local = await pages.Bo.evaluate(() =>
    /** @type {any} */ (window).switchboardRoom.localStream.getTracks().map((/** @type {MediaStreamTrack} */ t) => [t.kind, t.enabled]),
  );
  assert.deepEqual(local.sort(), [
    ["audio", false],
    ["video", false],
  ]);
  assert.equal(await pages.Bo.getAttribute("#mute-mic", "aria-pressed"), "true");
  const boTile = pages.Ada.locator(`.tile[data-peer="${ids.Bo}"]`);
  await boTile.locator(".muted-icons span", { hasText: "mic off" }).waitFor({ timeout: 10000 });
  await boTile.locator(".muted-icons span", { hasText: "video off" }).waitFor();
  await pages.Ada.setViewportSize({ width: 390, height: 844 });
  // Let the new layout paint before capturing it.
  await pages.Ada.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
  await pages.Ada.screenshot({ path: artifactPath("video-room-phone.png"), fullPage: true });
  await pages.Ada.setViewportSize({ width: 1280, height: 800 });
  await pages.Bo.click("#mute-mic");
  await pages.Bo.click("#mute-cam");
  await waitFor(() => boTile.locator(".muted-icons span").count().then((n) => n === 0), { timeout: 10000, message: "unmuted" });
});

test("the leave button: the page stops its media, the other sees peer-left", async () => {
  await pages.Bo.click("#leave");
  await pages.Bo.locator("#left-view").waitFor({ state: "visible", timeout: 10000 });
  const bo = await pages.Bo.evaluate(() => {
    const room = /** @type {any} */ (window).switchboardRoom;
    return {
      tracks: room.localStream.getTracks().map((/** @type {MediaStreamTrack} */ t) => t.readyState),
      signaling: room.signalingState,
      peers: room.mesh.peers.size,
    };
  });
  assert.deepEqual(bo, { tracks: ["ended", "ended"], signaling: "closed", peers: 0 });
  await waitFor(
    () => pages.Ada.evaluate(() => /** @type {any} */ (window).switchboardRoom.mesh.peers.size === 0),
    { timeout: 10000, message: "Ada to see Bo leave" },
  );
  await pages.Ada.locator("#peers li").count().then((n) => assert.equal(n, 1));
});

test("no uncaught errors in any page", () => {
  assert.deepEqual(browser.pageErrors, []);
});
