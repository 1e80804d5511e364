// Shared pieces of the compat tests: where the servers are, WebSocket helpers,
// processes, polling. Every address used is loopback (or the namespace's own
// veth addresses, which exist only inside scripts/netns-run).

import { spawn } from "node:child_process";
import { createServer, connect as tcpConnect } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { after } from "node:test";
import WebSocket from "ws";

export const COMPAT_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const ROOT = path.resolve(COMPAT_DIR, "../..");
export const BINARY = process.env.SWITCHBOARD_BIN ?? path.join(ROOT, "target/debug/switchboard");

/** "switchboard" (the default) or "original": which server the URLs point at. */
export const TARGET = process.env.COMPAT_TARGET ?? "switchboard";
if (TARGET !== "switchboard" && TARGET !== "original") {
  throw new Error(`COMPAT_TARGET must be "switchboard" or "original", not ${JSON.stringify(TARGET)}`);
}

/**
 * Options for a test that encodes a documented Switchboard difference from the
 * original server: run against Switchboard, reported as skipped (with the
 * reason) against the original.
 * @param {string} why
 */
export function switchboardOnly(why) {
  return TARGET === "switchboard" ? {} : { skip: `Switchboard-only: ${why}` };
}

/** The server URL a dialect's tests use, from the environment (run.mjs sets them). */
export function serverUrl(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the tests through tests/compat/run.sh (or set ${name})`);
  return value.replace(/\/+$/, "");
}

/** A free TCP port on 127.0.0.1. */
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

/** Resolves once something accepts TCP connections on host:port. */
export async function waitForPort(port, { host = "127.0.0.1", timeout = 30000, what = `port ${port}`, child } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    if (child && (child.exitCode !== null || child.signalCode !== null)) {
      throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}) before listening:\n${child.tail?.() ?? ""}`);
    }
    const ok = await new Promise((resolve) => {
      const sock = tcpConnect({ host, port }, () => {
        sock.destroy();
        resolve(true);
      });
      sock.on("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} to listen on ${host}:${port}`);
    await sleep(100);
  }
}

/** Poll `fn` until it returns a truthy value or `timeout` ms pass. */
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
      throw new Error(`timed out after ${timeout} ms waiting for ${text}${lastError ? `: ${lastError.message}` : ""}`);
    }
    await sleep(interval);
  }
}

/** Child processes started by this process (killed after the file, if still running). */
export const children = new Set();

/**
 * A child process whose output is kept (last lines) for failure reports.
 * @param {string} cmd @param {string[]} args @param {import("node:child_process").SpawnOptions} [options]
 */
export function spawnLogged(cmd, args, options = {}) {
  const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], ...options });
  children.add(child);
  /** @type {string[]} */
  const lines = [];
  const keep = (/** @type {Buffer} */ chunk) => {
    for (const line of chunk.toString().split("\n")) {
      if (!line) continue;
      lines.push(line);
      if (lines.length > 400) lines.shift();
    }
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  return Object.assign(child, {
    lines,
    tail: (n = 40) => lines.slice(-n).join("\n"),
    async stop(signal = "SIGTERM") {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill(signal);
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    },
  });
}

/**
 * A WebSocket client that queues what it receives, for protocol tests.
 * Text frames are parsed as JSON when they are JSON (`.json`), kept raw in `.raw`.
 */
export class Client {
  /** Every client made in this process: a failed test's leftovers are terminated after the file. */
  static all = new Set();

  /** @param {string} url @param {import("ws").ClientOptions} [options] */
  static async open(url, options = {}) {
    const client = new Client(url, options);
    await client.opened;
    return client;
  }

  /** @param {string} url @param {import("ws").ClientOptions} [options] */
  constructor(url, options = {}) {
    Client.all.add(this);
    this.url = url;
    this.ws = new WebSocket(url, options);
    /** @type {{ raw: string, json: any }[]} */
    this.queue = [];
    /** @type {((m: { raw: string, json: any }) => void)[]} */
    this.waiters = [];
    /** @type {{ code: number, reason: string } | null} */
    this.closeInfo = null;
    this.opened = new Promise((resolve, reject) => {
      this.ws.once("open", resolve);
      this.ws.once("error", reject);
      this.ws.once("unexpected-response", (req, res) => {
        // With this listener ws leaves the request open: end it here.
        res.resume();
        req.destroy();
        this.ws.terminate();
        reject(Object.assign(new Error(`${url}: HTTP ${res.statusCode} instead of a WebSocket upgrade`), { status: res.statusCode }));
      });
    });
    this.closed = new Promise((resolve) => {
      this.ws.once("close", (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        resolve(this.closeInfo);
      });
    });
    this.ws.on("error", () => {}); // reported through `opened` / `closed`
    this.ws.on("message", (data, isBinary) => {
      const raw = isBinary ? data : data.toString();
      let json;
      try {
        json = JSON.parse(raw.toString());
      } catch {
        json = undefined;
      }
      const message = { raw: raw.toString(), json };
      const waiter = this.waiters.shift();
      if (waiter) waiter(message);
      else this.queue.push(message);
    });
  }

  /** The next message (parsed JSON), or a rejection after `timeout` ms. */
  async next(timeout = 5000) {
    return (await this.nextRaw(timeout)).json;
  }

  /** The next message as {raw, json}. */
  nextRaw(timeout = 5000) {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.closeInfo) return Promise.reject(new Error(`${this.url}: closed (${this.closeInfo.code}) while waiting for a message`));
    return new Promise((resolve, reject) => {
      const waiter = (/** @type {{ raw: string, json: any }} */ m) => {
        clearTimeout(timer);
        resolve(m);
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`${this.url}: no message within ${timeout} ms`));
      }, timeout);
      this.waiters.push(waiter);
      this.closed.then(() => {
        if (!this.waiters.includes(waiter)) return;
        this.waiters = this.waiters.filter((w) => w !== waiter);
        clearTimeout(timer);
        reject(new Error(`${this.url}: closed (${this.closeInfo?.code}) while waiting for a message`));
      });
    });
  }

  /** Asserts that nothing arrives for `ms` ms; returns what arrived otherwise (throws). */
  async expectNothing(ms = 400) {
    await sleep(ms);
    if (this.queue.length) {
      throw new Error(`${this.url}: expected no message, got ${this.queue.map((m) => m.raw).join(" | ")}`);
    }
  }

  /** Resolves with {code, reason} once closed, or rejects after `timeout` ms. */
  async expectClose(timeout = 5000) {
    let timer;
    const timedOut = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${this.url}: not closed within ${timeout} ms`)), timeout);
    });
    try {
      return await Promise.race([this.closed, timedOut]);
    } finally {
      clearTimeout(timer);
    }
  }

  get isOpen() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  /** @param {any} value sent as JSON text unless it is a string or Buffer */
  send(value) {
    this.ws.send(typeof value === "string" || Buffer.isBuffer(value) ? value : JSON.stringify(value));
  }

  close() {
    this.ws.close();
    return this.closed;
  }

  terminate() {
    this.ws.terminate();
  }
}

// A test that fails midway leaves its sockets open; they must not keep the file's process alive.
after(() => {
  for (const c of Client.all) c.terminate();
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
});

/** Closes every client given, ignoring errors. */
export async function closeAll(...clients) {
  await Promise.all(clients.flat().filter(Boolean).map((c) => (c.isOpen ? c.close().catch(() => {}) : undefined)));
}

/** A short random id made of the characters every dialect accepts. */
export function rid(prefix = "t") {
  return `${prefix}${Math.random().toString(36).slice(2, 10)}`;
}

/**
 * A Switchboard of the test's own, with extra flags (for Switchboard-only
 * tests of options such as --auth required). Resolves with its port and a stop().
 * @param {string[]} args
 */
export async function startSwitchboard(args = []) {
  const port = await freePort();
  const child = spawnLogged(BINARY, ["serve", "--listen", `127.0.0.1:${port}`, "--log-format", "json", ...args], { cwd: ROOT });
  await waitForPort(port, { what: "switchboard", child });
  return { port, child, stop: () => child.stop() };
}

/** A token from `switchboard token` (HS256 with `secret`), any room. */
export async function mintToken(secret, sub = "alice") {
  const child = spawn(BINARY, ["token", "--sub", sub, "--ttl", "1h", "--auth-secret", secret], { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  child.stdout.on("data", (c) => (out += c));
  const code = await new Promise((resolve) => child.on("exit", resolve));
  if (code !== 0) throw new Error(`switchboard token exited ${code}`);
  return out.trim();
}

/** Opening `url` is refused: the upgrade fails with 401/403, or the socket closes before answering `probe`. */
export async function expectRefused(url, probe) {
  const c = new Client(url);
  try {
    await c.opened;
  } catch (err) {
    const status = /** @type {any} */ (err).status;
    if (status !== 401 && status !== 403) throw new Error(`${url}: expected a 401/403 refusal (or a close), got ${err}`);
    return { refused: "upgrade", status };
  }
  if (probe) c.send(probe);
  const outcome = await Promise.race([c.closed.then(() => "closed"), c.nextRaw(3000).then((m) => `answered ${m.raw}`, () => "silent")]);
  c.terminate();
  if (outcome !== "closed") throw new Error(`${url} was accepted (${outcome}) instead of refused`);
  return { refused: "closed" };
}
