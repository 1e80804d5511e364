// The other demo pages in headless Chromium: the index, the echo tester
// (/ws/echo), the broadcast chat (/ws/broadcast) and the SSE viewer (/sse,
// /sse/rooms/{room}). Driven through the DOM, as a person would use them.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { Server, Browser, waitFor, artifactPath } from "./harness.mjs";

/** @type {Server} */
let server;
/** @type {Browser} */
let browser;

before(async () => {
  server = await new Server().start();
  browser = await new Browser().launch();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test("the index links every demo, and every page and the SDK are served", async () => {
  const page = await browser.open(`${server.origin}/`, "index");
  assert.equal(await page.title(), "Switchboard demos");
  const links = await page.locator(".demo-card").evaluateAll((as) => as.map((a) => a.getAttribute("href")));
  assert.deepEqual(links, ["/echo.html", "/chat.html", "/sse.html", "/room.html"]);
  await page.screenshot({ path: artifactPath("index.png") });
  for (const path of [...links, "/style.css", "/sdk/switchboard.js", "/sdk/switchboard.d.ts"]) {
    const res = await page.request.get(`${server.origin}${path}`);
    assert.equal(res.status(), 200, path);
  }
  const sdk = await page.request.get(`${server.origin}/sdk/switchboard.js`);
  assert.match(sdk.headers()["content-type"], /javascript/);
  // Following a link works like a person clicking it.
  await page.click("#demo-echo");
  await page.waitForURL(`${server.origin}/echo.html`);
  await page.close();
});

test("echo: a message comes back as `Server received: ...`, and sending needs an open socket", async () => {
  const page = await browser.open(`${server.origin}/echo.html`, "echo");
  await page.locator("#status[data-state=open]").waitFor({ timeout: 10000 });
  await page.fill("#message", "Hello from the browser test");
  await page.click("#send");
  await page.locator("#log li.in", { hasText: "Server received: Hello from the browser test" }).waitFor({ timeout: 10000 });
  await page.locator("#log li.out", { hasText: "Hello from the browser test" }).waitFor();
  await page.screenshot({ path: artifactPath("echo.png") });

  await page.click("#disconnect");
  await page.locator("#status[data-state=closed]").waitFor({ timeout: 10000 });
  assert.equal(await page.isDisabled("#send"), true, "no sending while closed");
  await page.click("#connect");
  await page.locator("#status[data-state=open]").waitFor({ timeout: 10000 });
  assert.equal(await page.isDisabled("#send"), false);
  await page.fill("#message", "second");
  await page.press("#message", "Enter");
  await page.locator("#log li.in", { hasText: "Server received: second" }).waitFor({ timeout: 10000 });
  await page.close();
});

test("chat: messages reach the other page on the same channel, and only that channel", async () => {
  const channel = `chat-${randomBytes(3).toString("hex")}`;
  const ann = await browser.open(`${server.origin}/chat.html?channel=${channel}&name=Ann`, "Ann");
  const ben = await browser.open(`${server.origin}/chat.html?channel=${channel}&name=Ben`, "Ben");
  const eve = await browser.open(`${server.origin}/chat.html?channel=${channel}-other&name=Eve`, "Eve");
  for (const page of [ann, ben, eve]) await page.locator("#status[data-state=open]").waitFor({ timeout: 10000 });

  await ann.fill("#text", "Hi Ben, it's Ann");
  await ann.click("#send");
  await ben.locator("#messages li", { hasText: "Hi Ben, it's Ann" }).waitFor({ timeout: 10000 });
  assert.match((await ben.locator("#messages li", { hasText: "Hi Ben, it's Ann" }).textContent()) ?? "", /Ann/);
  await ann.locator("#messages li.self", { hasText: "Hi Ben, it's Ann" }).waitFor();

  await ben.fill("#text", "Hello Ann");
  await ben.press("#text", "Enter");
  await ann.locator("#messages li", { hasText: "Hello Ann" }).waitFor({ timeout: 10000 });
  await ann.screenshot({ path: artifactPath("chat.png") });

  // Eve is on another channel and saw nothing.
  assert.equal(await eve.locator("#messages li", { hasText: "Ann" }).count(), 0);
  for (const page of [ann, ben, eve]) await page.close();
});

test("SSE: the viewer receives events in sequence", async () => {
  const page = await browser.open(`${server.origin}/sse.html`, "sse");
  await page.locator("#status[data-state=open]").waitFor({ timeout: 10000 });
  const events = await waitFor(
    async () => {
      const seen = await page.evaluate(() => /** @type {any} */ (window).sseDemo.events);
      return seen.length >= 3 ? seen : null;
    },
    { timeout: 15000, message: "three SSE events" },
  );
  for (let i = 1; i < events.length; i++) assert.equal(events[i].seq, events[i - 1].seq + 1, "consecutive seq");
  assert.equal(events[0].message, "Hello from server!");
  assert.ok(Number(await page.textContent("#count")) >= 3);
  assert.ok((await page.locator("#log li.in").count()) >= 3);
  await page.screenshot({ path: artifactPath("sse.png") });

  // Pause stops the stream; resume starts it again.
  await page.click("#toggle");
  await page.locator("#status[data-state=closed]").waitFor();
  await page.click("#toggle");
  await page.locator("#status[data-state=open]").waitFor({ timeout: 10000 });
  await page.close();
});

test("SSE: the room watcher shows who is in a signaling room, live", async () => {
  const room = `watch-${randomBytes(3).toString("hex")}`;
  const viewer = await browser.open(`${server.origin}/sse.html?room=${room}`, "watcher");
  await viewer.locator("#room-status[data-state=open]").waitFor({ timeout: 10000 });
  await viewer.locator("#room-summary", { hasText: "Nobody" }).waitFor({ timeout: 10000 });

  // A signaling peer, through the SDK, in another page.
  const peer = await browser.open(`${server.origin}/`, "sdk-peer");
  await peer.evaluate(async (r) => {
    const { SwitchboardClient } = await import("/sdk/switchboard.js");
    const client = new SwitchboardClient();
    /** @type {any} */ (window).client = client;
    await client.connect();
    await client.join(r, { meta: { name: "Watched Walter" } });
  }, room);
  await viewer.locator("#members li", { hasText: "Watched Walter" }).waitFor({ timeout: 10000 });
  await viewer.screenshot({ path: artifactPath("sse-room.png") });

  await peer.evaluate(() => /** @type {any} */ (window).client.leave());
  await viewer.locator("#room-summary", { hasText: "Nobody" }).waitFor({ timeout: 10000 });
  assert.equal(await viewer.locator("#members li").count(), 0);
  await peer.close();
  await viewer.close();
});

test("video room without ?room=&name= asks for them, then joins", async () => {
  const page = await browser.open(`${server.origin}/room.html`, "room-form");
  await page.locator("#join-view").waitFor({ state: "visible" });
  assert.equal(await page.isVisible("#room-view"), false);
  await page.fill("#join-room", "form-room");
  await page.fill("#join-name", "Formal Fay");
  await page.screenshot({ path: artifactPath("video-room-form.png") });
  await page.click("#join-form button[type=submit]");
  await page.waitForURL(/room\.html\?room=form-room&name=Formal\+Fay$/);
  await page.waitForFunction(() => /** @type {any} */ (window).switchboardRoom?.ready, null, { timeout: 10000 });
  await page.evaluate(() => /** @type {any} */ (window).switchboardRoom.ready);
  assert.equal(await page.textContent("#my-name"), "Formal Fay");
  await page.locator("#signaling[data-state=open]").waitFor({ timeout: 10000 });
  await page.close();
});

test("no uncaught errors in any page", () => {
  assert.deepEqual(browser.pageErrors, []);
});
