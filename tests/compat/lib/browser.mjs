// Debian's Chromium, driven by playwright-core, with pages of a PeerJS app.
//
// The app page is served by a tiny HTTP server of its own on
// 127.0.0.1:$COMPAT_APP_PORT (the page and the unmodified peerjs 1.5.5 bundle,
// node_modules/peerjs/dist/peerjs.min.js), so the signaling server is
// cross-origin to it, as for a real app: run.mjs starts Switchboard with
// --allowed-origin http://127.0.0.1:$COMPAT_APP_PORT. (A page on a made-up
// public host name cannot open WebSockets to loopback in Chromium 156: Local
// Network Access.)

import { createServer } from "node:http";
import { mkdtempSync, rmSync, existsSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";
import { COMPAT_DIR, freePort } from "./common.mjs";

export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

export const CHROMIUM_ARGS = [
  "--use-fake-device-for-media-stream",
  "--use-fake-ui-for-media-stream",
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const PEERJS_BUNDLE = path.join(COMPAT_DIR, "node_modules/peerjs/dist/peerjs.min.js");

// The app: the unmodified client, plus a few hooks the tests call.
const APP_HTML = `<!doctype html>
<meta charset="utf-8">
<title>PeerJS compat app</title>
<script src="/peerjs.min.js"></script>
<script>
  window.events = [];
  window.received = [];
  window.conns = [];
  // new Peer(id?, options) exactly as an app does; resolves on "open", rejects on the first error.
  window.makePeer = (id, options) => new Promise((resolve, reject) => {
    const peer = id ? new peerjs.Peer(id, options) : new peerjs.Peer(options);
    window.peer = peer;
    let opened = false;
    peer.on("open", (id) => { opened = true; window.events.push({ event: "open", id }); resolve(id); });
    peer.on("error", (err) => {
      window.events.push({ event: "error", type: err.type, message: String(err.message) });
      if (!opened) reject(new Error(err.type + ": " + err.message));
    });
    peer.on("connection", (conn) => {
      window.conns.push(conn);
      window.events.push({ event: "connection", peer: conn.peer });
      conn.on("data", (data) => {
        window.received.push({ from: conn.peer, data });
        if (typeof data === "string" && data.startsWith("ping:")) conn.send("pong:" + data.slice(5));
      });
    });
  });
  // peer.connect(id); resolves on the DataConnection's "open".
  window.connectTo = (id, timeout) => new Promise((resolve, reject) => {
    const conn = window.peer.connect(id, { reliable: true });
    window.conns.push(conn);
    const timer = setTimeout(() => reject(new Error("data connection to " + id + " did not open")), timeout);
    conn.on("open", () => { clearTimeout(timer); resolve(true); });
    conn.on("data", (data) => window.received.push({ from: conn.peer, data }));
    conn.on("error", (err) => window.events.push({ event: "conn-error", type: err.type, message: String(err.message) }));
  });
  window.sendAll = (text) => { for (const c of window.conns) if (c.open) c.send(text); return window.conns.filter((c) => c.open).length; };
</script>`;

export class Browser {
  /** @type {import("playwright-core").BrowserContext | null} */
  context = null;
  /** @type {string[]} */
  logs = [];
  profile = "";
  /** @type {import("node:http").Server | null} */
  appServer = null;
  appOrigin = "";

  async launch() {
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium`);
    this.profile = mkdtempSync(path.join(tmpdir(), "switchboard-compat-chromium-"));
    this.context = await chromium.launchPersistentContext(this.profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      timeout: 60000,
    });
    const bundle = readFileSync(PEERJS_BUNDLE);
    this.appServer = createServer((req, res) => {
      const url = new URL(req.url ?? "/", "http://app");
      if (url.pathname === "/peerjs.min.js") res.writeHead(200, { "content-type": "text/javascript" }).end(bundle);
      else if (url.pathname === "/") res.writeHead(200, { "content-type": "text/html" }).end(APP_HTML);
      else res.writeHead(404).end("not found");
    });
    const port = Number(process.env.COMPAT_APP_PORT) || (await freePort());
    await new Promise((resolve, reject) => {
      this.appServer?.once("error", reject);
      this.appServer?.listen(port, "127.0.0.1", () => resolve(undefined));
    });
    this.appOrigin = `http://127.0.0.1:${port}`;
    return this;
  }

  /** A new page of the app. @param {string} label */
  async app(label) {
    if (!this.context) throw new Error("browser not launched");
    const page = await this.context.newPage();
    page.on("console", (msg) => {
      this.logs.push(`[${label}] ${msg.type()}: ${msg.text()}`);
      if (this.logs.length > 2000) this.logs.shift();
    });
    page.on("pageerror", (err) => this.logs.push(`[${label}] pageerror: ${err.stack ?? err.message}`));
    await page.goto(`${this.appOrigin}/`);
    return page;
  }

  async close() {
    try {
      await this.context?.close();
      await new Promise((resolve) => (this.appServer ? this.appServer.close(resolve) : resolve(undefined)));
    } finally {
      this.context = null;
      if (this.profile) rmSync(this.profile, { recursive: true, force: true });
    }
  }

  tail(n = 60) {
    return this.logs.slice(-n).join("\n");
  }
}

/** PeerJS options for a server at `httpUrl` (http://HOST:PORT): path "/", key "peerjs", no STUN/TURN. */
export function peerOptions(httpUrl, extra = {}) {
  const url = new URL(httpUrl);
  return {
    host: url.hostname,
    port: Number(url.port),
    path: "/",
    key: process.env.PEERJS_KEY ?? "peerjs",
    config: { iceServers: [] },
    debug: 2,
    ...extra,
  };
}
