// Shared pieces of the browser tests: the server process, Chromium, polling.
//
// The server is the debug binary (build it first: `cargo build -p
// switchboard-server`), or $SWITCHBOARD_BIN. Chromium is Debian's
// /usr/bin/chromium (or $CHROMIUM_PATH), driven by playwright-core; no browser
// is ever downloaded. Everything listens on and talks to 127.0.0.1 only.

import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, existsSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { chromium } from "playwright-core";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const BINARY = process.env.SWITCHBOARD_BIN ?? path.join(ROOT, "target/debug/switchboard");
export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
export const ARTIFACTS = path.join(ROOT, "test-artifacts");

export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--allow-loopback-in-peer-connection",
  "--use-fake-device-for-media-stream",
  "--use-fake-ui-for-media-stream",
];

/** A free TCP port on 127.0.0.1 (bind port 0, read it, close). */
export async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = /** @type {import("node:net").AddressInfo} */ (srv.address());
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Poll `fn` until it returns a truthy value (returned) or `timeout` ms pass.
 * @template T
 * @param {() => T | Promise<T>} fn
 * @param {{ timeout?: number, interval?: number, message?: string | (() => string | Promise<string>) }} [options]
 * @returns {Promise<T>}
 */
export async function waitFor(fn, { timeout = 20000, interval = 100, message = "condition" } = {}) {
  const deadline = Date.now() + timeout;
  let lastError;
  for (;;) {
    try {
      const value = await fn();
      if (value) return value;
      lastError = undefined;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      const text = typeof message === "function" ? await message() : message;
      const err = new Error(`timed out after ${timeout} ms waiting for ${text}${lastError ? `: ${lastError.message}` : ""}`);
      throw err;
    }
    await sleep(interval);
  }
}

/** The switchboard server as a child process, restartable on the same port. */
export class Server {
  /** @param {{ port?: number, args?: string[] }} [options] */
  constructor({ port = 0, args = [] } = {}) {
    this.port = port;
    this.args = args;
    /** @type {import("node:child_process").ChildProcess | null} */
    this.child = null;
    /** @type {string[]} */
    this.logs = [];
    this.starts = 0;
  }

  get origin() {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Start and wait for the "listening" log line. Retries while the port is still being released. */
  async start({ timeout = 20000 } = {}) {
    if (!existsSync(BINARY)) {
      throw new Error(`server binary ${BINARY} is missing: run \`cargo build -p switchboard-server\` in ${ROOT}`);
    }
    if (!this.port) this.port = await freePort();
    const deadline = Date.now() + timeout;
    for (;;) {
      try {
        await this.#spawnOnce(deadline);
        this.starts++;
        return this;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await sleep(200);
      }
    }
  }

  /** @param {number} deadline */
  #spawnOnce(deadline) {
    const args = [
      "serve",
      "--listen",
      `127.0.0.1:${this.port}`,
      "--log-format",
      "json",
      "--ping-interval",
      "1s",
      "--ping-timeout",
      "1s",
      ...this.args,
    ];
    const child = spawn(BINARY, args, { stdio: ["ignore", "pipe", "pipe"], cwd: ROOT });
    this.child = child;
    return new Promise((resolve, reject) => {
      let buffer = "";
      let settled = false;
      const timer = setTimeout(() => finish(new Error(`server did not log "listening" in time:\n${this.tail()}`)), Math.max(1000, deadline - Date.now()));
      const finish = (/** @type {Error | null} */ err) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) {
          child.kill("SIGKILL");
          reject(err);
        } else {
          resolve(undefined);
        }
      };
      const onData = (/** @type {Buffer} */ chunk) => {
        buffer += chunk.toString();
        let nl;
        while ((nl = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, nl);
          buffer = buffer.slice(nl + 1);
          this.logs.push(line);
          if (this.logs.length > 2000) this.logs.shift();
          try {
            const entry = JSON.parse(line);
            if (entry?.fields?.message === "listening") finish(null);
          } catch {
            // not JSON
          }
        }
      };
      child.stderr?.on("data", onData);
      child.stdout?.on("data", onData);
      child.on("exit", (code, signal) => finish(new Error(`server exited (${code ?? signal}) before listening:\n${this.tail()}`)));
    });
  }

  /** Kill the process (SIGKILL: no graceful shutdown) and wait for it to exit. */
  async kill() {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGKILL");
    await exited;
    this.child = null;
  }

  /** Kill it and start it again on the same port. */
  async restart() {
    await this.kill();
    await this.start();
  }

  async stop() {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(timer);
    this.child = null;
  }

  tail(n = 30) {
    return this.logs.slice(-n).join("\n");
  }
}

/**
 * One headless Chromium with a fresh temporary profile. Pages opened with
 * `open()` record their console and page errors for failure reports.
 */
export class Browser {
  /** @type {import("playwright-core").BrowserContext | null} */
  context = null;
  /** @type {string[]} */
  logs = [];
  /** @type {string[]} */
  pageErrors = [];
  /** @type {string} */
  profile = "";

  async launch() {
    if (!existsSync(CHROMIUM)) {
      throw new Error(`${CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)`);
    }
    this.profile = mkdtempSync(path.join(tmpdir(), "switchboard-chromium-"));
    this.context = await chromium.launchPersistentContext(this.profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1280, height: 800 },
      timeout: 60000,
    });
    return this;
  }

  /**
   * Open `url` in a new page.
   * @param {string} url
   * @param {string} label a short name for logs
   */
  async open(url, label) {
    if (!this.context) throw new Error("browser not launched");
    const page = await this.context.newPage();
    page.on("console", (msg) => {
      this.logs.push(`[${label}] ${msg.type()}: ${msg.text()}`);
      if (this.logs.length > 3000) this.logs.shift();
    });
    page.on("pageerror", (err) => {
      this.pageErrors.push(`[${label}] ${err.message}`);
      this.logs.push(`[${label}] pageerror: ${err.stack ?? err.message}`);
    });
    await page.goto(url);
    return page;
  }

  async close() {
    try {
      await this.context?.close();
    } finally {
      this.context = null;
      if (this.profile) rmSync(this.profile, { recursive: true, force: true });
    }
  }

  tail(n = 60) {
    return this.logs.slice(-n).join("\n");
  }
}

export function artifactPath(name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  return path.join(ARTIFACTS, name);
}
