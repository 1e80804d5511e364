// Starts the server(s) under test, points the tests at them through the
// environment, runs the selected dialects' tests with node's test runner, and
// stops everything. Run it through ./run.sh (which enters the network
// namespace and installs the npm packages); see README.md.
//
//   node run.mjs [--target switchboard|original] [DIALECT...]
//
// DIALECT: peerjs y-webrtc matchbox cluster (default: all; or $COMPAT_DIALECTS,
// comma or space separated). matchbox includes the native matchbox_socket test
// (tests/compat/matchbox-native), built here first.
//
// Servers: a URL already in the environment is used as it is (PEERJS_URL,
// YWEBRTC_URL, MATCHBOX_URL); otherwise, for --target switchboard, one
// Switchboard ($SWITCHBOARD_BIN, default target/debug/switchboard) serves all
// three dialects; for --target original: peerjs-server (the npm `peer`
// package's `peerjs` CLI), y-webrtc's bin/server.js, and $MATCHBOX_SERVER_BIN
// (matchbox_server, not installed by anything here: see README.md).

import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { BINARY, COMPAT_DIR, ROOT, freePort, spawnLogged, waitForPort } from "./lib/common.mjs";

const DIALECTS = ["peerjs", "y-webrtc", "matchbox", "cluster"];
const FILES = {
  peerjs: ["peerjs-raw.test.mjs", "peerjs-client.test.mjs"],
  "y-webrtc": ["ywebrtc-raw.test.mjs", "ywebrtc-client.test.mjs"],
  matchbox: ["matchbox-raw.test.mjs", "matchbox-native.test.mjs"],
  cluster: ["cluster.test.mjs"],
};

let target = process.env.COMPAT_TARGET ?? "switchboard";
/** @type {string[]} */
let selected = [];
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const arg = argv[i];
  if (arg === "--target") target = argv[++i];
  else if (arg.startsWith("--target=")) target = arg.slice("--target=".length);
  else if (arg === "-h" || arg === "--help") {
    console.log("usage: run.sh [--target switchboard|original] [peerjs] [y-webrtc] [matchbox] [cluster]");
    process.exit(0);
  } else selected.push(arg);
}
if (!selected.length && process.env.COMPAT_DIALECTS) selected = process.env.COMPAT_DIALECTS.split(/[\s,]+/).filter(Boolean);
if (!selected.length) selected = target === "original" ? DIALECTS.filter((d) => d !== "cluster") : [...DIALECTS];
for (const d of selected) {
  if (!DIALECTS.includes(d)) {
    console.error(`run.mjs: unknown dialect ${JSON.stringify(d)} (known: ${DIALECTS.join(", ")})`);
    process.exit(2);
  }
}
if (target !== "switchboard" && target !== "original") {
  console.error(`run.mjs: --target must be switchboard or original, not ${JSON.stringify(target)}`);
  process.exit(2);
}
if (target === "original" && selected.includes("cluster")) {
  console.error("run.mjs: the cluster tests need Switchboard (the originals have no scale-out)");
  process.exit(2);
}

/** @type {ReturnType<typeof spawnLogged>[]} */
const servers = [];
const env = { ...process.env, COMPAT_TARGET: target, SWITCHBOARD_BIN: BINARY };
// The origin of the PeerJS app page the Chromium tests serve (lib/browser.mjs).
env.COMPAT_APP_PORT ??= String(await freePort());
const APP_ORIGIN = `http://127.0.0.1:${env.COMPAT_APP_PORT}`;

async function startSwitchboard() {
  if (!existsSync(BINARY)) {
    console.error(`run.mjs: ${BINARY} is missing: run \`cargo build --bins\` in ${ROOT} (or set SWITCHBOARD_BIN)`);
    process.exit(1);
  }
  const port = await freePort();
  const child = spawnLogged(BINARY, ["serve", "--listen", `127.0.0.1:${port}`, "--log-format", "json", "--allowed-origin", APP_ORIGIN], { cwd: ROOT });
  servers.push(child);
  await waitForPort(port, { what: "switchboard", child });
  return port;
}

async function startOriginal(dialect) {
  const port = await freePort();
  let child;
  if (dialect === "peerjs") {
    // The `peerjs` CLI of npm `peer`: key "peerjs", path "/", expire_timeout 5000, alive_timeout 60000.
    child = spawnLogged(process.execPath, [path.join(COMPAT_DIR, "node_modules/peer/dist/bin/peerjs.js"), "--port", String(port), "--host", "127.0.0.1"]);
  } else if (dialect === "y-webrtc") {
    child = spawnLogged(process.execPath, [path.join(COMPAT_DIR, "node_modules/y-webrtc/bin/server.js")], { env: { ...process.env, PORT: String(port) } });
  } else if (dialect === "matchbox") {
    const bin = process.env.MATCHBOX_SERVER_BIN;
    if (!bin || !existsSync(bin)) {
      console.error("run.mjs: --target original with matchbox needs MATCHBOX_SERVER_BIN (a matchbox_server binary; see README.md)");
      process.exit(1);
    }
    child = spawnLogged(bin, [`127.0.0.1:${port}`]);
  } else throw new Error(dialect);
  servers.push(child);
  await waitForPort(port, { what: `original ${dialect} server`, child });
  return port;
}

async function main() {
  const need = (name) => selected.includes(name) && !process.env[urlVar(name)];
  const wanted = ["peerjs", "y-webrtc", "matchbox"].filter(need);
  if (target === "switchboard" && wanted.length) {
    const port = await startSwitchboard();
    if (need("peerjs")) env.PEERJS_URL = `http://127.0.0.1:${port}`;
    if (need("y-webrtc")) env.YWEBRTC_URL = `ws://127.0.0.1:${port}/y-webrtc`;
    if (need("matchbox")) env.MATCHBOX_URL = `ws://127.0.0.1:${port}/matchbox`;
  } else if (target === "original") {
    for (const d of wanted) {
      const port = await startOriginal(d);
      if (d === "peerjs") env.PEERJS_URL = `http://127.0.0.1:${port}`;
      if (d === "y-webrtc") env.YWEBRTC_URL = `ws://127.0.0.1:${port}/y-webrtc`;
      if (d === "matchbox") env.MATCHBOX_URL = `ws://127.0.0.1:${port}`;
    }
  }

  if (selected.includes("matchbox") || selected.includes("cluster")) {
    console.log("== building tests/compat/matchbox-native (matchbox_socket 0.14)");
    const started = Date.now();
    const built = spawnSync("cargo", ["build", "--locked", "--release", "--manifest-path", path.join(COMPAT_DIR, "matchbox-native/Cargo.toml")], { stdio: "inherit" });
    if (built.status !== 0) {
      console.error("run.mjs: building matchbox-native failed");
      return 1;
    }
    console.log(`== matchbox-native built in ${((Date.now() - started) / 1000).toFixed(0)} s`);
  }

  const files = selected.flatMap((d) => FILES[d]).filter((f) => existsSync(path.join(COMPAT_DIR, f)));
  const missing = selected.flatMap((d) => FILES[d]).filter((f) => !files.includes(f));
  if (missing.length) {
    console.error(`run.mjs: test files missing: ${missing.join(", ")}`);
    return 1;
  }
  console.log(`== compat tests against ${target}: ${selected.join(", ")}`);
  for (const name of ["PEERJS_URL", "YWEBRTC_URL", "MATCHBOX_URL"]) if (env[name]) console.log(`   ${name}=${env[name]}`);
  const child = spawn(process.execPath, ["--test", "--test-concurrency=1", "--test-reporter=spec", ...files], { cwd: COMPAT_DIR, env, stdio: "inherit" });
  const code = await new Promise((resolve) => child.on("exit", (c, s) => resolve(c ?? (s ? 1 : 0))));
  for (const s of servers) {
    if (s.exitCode !== null || s.signalCode !== null) {
      console.error(`run.mjs: a server exited during the tests (${s.exitCode ?? s.signalCode}); its last lines:\n${s.tail()}`);
    }
  }
  return code;
}

function urlVar(name) {
  return { peerjs: "PEERJS_URL", "y-webrtc": "YWEBRTC_URL", matchbox: "MATCHBOX_URL" }[name] ?? "-";
}

let code = 1;
try {
  code = await main();
} finally {
  await Promise.all(servers.map((s) => s.stop()));
}
process.exit(code);

