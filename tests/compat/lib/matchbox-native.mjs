// Runs the matchbox-native binary (two matchbox_socket 0.14 peers); run.mjs builds it first.

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { COMPAT_DIR } from "./common.mjs";

export const NATIVE_BIN = path.join(COMPAT_DIR, "matchbox-native/target/release/matchbox-native-compat");

/** Resolves with {code, stdout, stderr}. @param {string[]} urls */
export function runNative(urls, timeout = 90000) {
  if (!existsSync(NATIVE_BIN)) {
    throw new Error(`${NATIVE_BIN} is missing: run.sh builds it (cargo build --release --locked --manifest-path matchbox-native/Cargo.toml)`);
  }
  return new Promise((resolve) => {
    const child = spawn(NATIVE_BIN, urls, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c) => (stdout += c));
    child.stderr.on("data", (c) => (stderr += c));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeout);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? signal, stdout, stderr: stderr.split("\n").slice(-40).join("\n") });
    });
  });
}
