// Drives lib/ywebrtc-peer.mjs processes: one y-webrtc provider per process.

import { spawn } from "node:child_process";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { COMPAT_DIR, children } from "./common.mjs";

/** Starts a peer process; resolves once it has printed "subscribed". */
export async function startPeer(url, room, name, password = "") {
  const child = spawn(process.execPath, [path.join(COMPAT_DIR, "lib/ywebrtc-peer.mjs"), url, room, name, ...(password ? [password] : [])], {
    cwd: COMPAT_DIR,
    stdio: ["pipe", "pipe", "pipe"],
  });
  children.add(child);
  /** @type {string[]} */
  const lines = [];
  /** @type {string[]} */
  const log = [];
  let buffer = "";
  child.stdout.on("data", (chunk) => {
    buffer += chunk.toString();
    let nl;
    while ((nl = buffer.indexOf("\n")) >= 0) {
      lines.push(buffer.slice(0, nl));
      buffer = buffer.slice(nl + 1);
    }
  });
  child.stderr.on("data", (chunk) => {
    log.push(...chunk.toString().split("\n").filter(Boolean));
    if (log.length > 200) log.splice(0, log.length - 200);
  });
  const peer = {
    name,
    child,
    lines,
    tail: () => `[${name}] stdout:\n${lines.join("\n")}\n[${name}] stderr:\n${log.slice(-40).join("\n")}`,
    /** The first stdout line starting with `prefix`, within `timeout` ms. */
    async waitLine(prefix, timeout = 30000) {
      const deadline = Date.now() + timeout;
      for (;;) {
        const line = lines.find((l) => l.startsWith(prefix));
        if (line !== undefined) return line;
        if (child.exitCode !== null) throw new Error(`${name} exited (${child.exitCode}) before "${prefix}"\n${peer.tail()}`);
        if (Date.now() > deadline) throw new Error(`${name}: no "${prefix}" within ${timeout} ms\n${peer.tail()}`);
        await sleep(50);
      }
    },
    expect(names) {
      child.stdin.write(`expect ${names.join(",")}\n`);
    },
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.stdin.end();
      const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
      await exited;
      clearTimeout(timer);
    },
  };
  try {
    await peer.waitLine("subscribed", 20000);
  } catch (err) {
    child.kill("SIGKILL");
    throw err;
  }
  return peer;
}

/**
 * Two providers in two processes sync a Y.Map both ways: the second starts
 * after the first has subscribed (y-webrtc 10.3 can deadlock in its glare
 * handling when both start at the same instant). Returns both maps.
 */
export async function syncPair(urlA, urlB, room, password = "") {
  const a = await startPeer(urlA, room, "a", password);
  /** @type {Awaited<ReturnType<typeof startPeer>> | undefined} */
  let b;
  try {
    await sleep(300);
    b = await startPeer(urlB, room, "b", password);
    a.expect(["a", "b"]);
    b.expect(["a", "b"]);
    const [la, lb] = await Promise.all([a.waitLine("synced "), b.waitLine("synced ")]);
    return { a: JSON.parse(la.slice("synced ".length)), b: JSON.parse(lb.slice("synced ".length)) };
  } finally {
    await Promise.all([a.stop(), b?.stop()]);
  }
}
