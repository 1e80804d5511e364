// The server under test (target/debug/switchboard, or $SWITCHBOARD_BIN) on a
// free 127.0.0.1 port, and Debian's Chromium (never a downloaded browser).

import { spawn } from "node:child_process";
import { createServer } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const BINARY = process.env.SWITCHBOARD_BIN ?? path.join(ROOT, "target/debug/switchboard");
export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = /** @type {import("node:net").AddressInfo} */ (srv.address());
      srv.close(() => resolve(port));
    });
  });
}

/** Polls `fn` until it returns something truthy. */
export async function waitFor(fn, what, timeout = 15000) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const value = await fn();
      if (value) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ""}`);
    await sleep(100);
  }
}

/** `switchboard serve --listen 127.0.0.1:PORT ...args`, ready once /healthz answers. */
export async function startServer(args = []) {
  const port = await freePort();
  const child = spawn(BINARY, ["serve", "--listen", `127.0.0.1:${port}`, ...args], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, SWITCHBOARD_LOG: "warn" },
  });
  let stderr = "";
  child.stderr.on("data", (chunk) => (stderr = (stderr + chunk).slice(-4000)));
  const origin = `http://127.0.0.1:${port}`;
  await waitFor(async () => {
    if (child.exitCode !== null) throw new Error(`server exited ${child.exitCode}: ${stderr}`);
    return (await fetch(`${origin}/healthz`)).ok;
  }, "/healthz");
  return {
    port,
    origin,
    ws: `ws://127.0.0.1:${port}/ws`,
    async stop() {
      if (child.exitCode !== null) return;
      child.kill("SIGTERM");
      await new Promise((resolve) => child.once("exit", resolve));
    },
  };
}
