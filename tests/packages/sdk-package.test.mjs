// The SDK as users get it: `npm pack` of clients/js, installed from the
// tarball into a fresh project, imported by its package name in Node.js and
// in headless Chromium (an import map, no bundler), joining a room and
// relaying through the real server. Signaling only: no RTCPeerConnection.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { pathToFileURL, fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import WebSocket from "ws";
import { ROOT, CHROMIUM, CHROMIUM_ARGS, freePort, startServer, waitFor } from "./harness.mjs";

const SDK_DIR = path.join(ROOT, "clients/js");
const WS_MODULE = pathToFileURL(fileURLToPath(import.meta.resolve("ws"))).href;
const npm = (args, cwd) => execFileSync("npm", args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });

let work; // temporary directory: the tarball and the consumer project
let project; // the consumer project
let installed; // its node_modules/switchboard-client
let tarball;
let statics; // the HTTP server for the page and the project's node_modules
let staticOrigin;
let server;

before(async () => {
  work = mkdtempSync(path.join(tmpdir(), "switchboard-npm-"));
  const [packed] = JSON.parse(npm(["pack", "--json", "--pack-destination", work], SDK_DIR));
  tarball = path.join(work, packed.filename);
  project = path.join(work, "app");
  execFileSync("mkdir", ["-p", project]);
  writeFileSync(
    path.join(project, "package.json"),
    JSON.stringify({ name: "consumer", version: "1.0.0", private: true, type: "module" }, null, 2),
  );
  // The tarball has no dependencies: this needs no registry.
  npm(["install", "--no-audit", "--no-fund", "--offline", tarball], project);
  installed = path.join(project, "node_modules/switchboard-client");

  const port = await freePort();
  staticOrigin = `http://127.0.0.1:${port}`;
  statics = createServer((req, res) => {
    const url = new URL(req.url ?? "/", staticOrigin);
    const file = path.join(project, path.normalize(decodeURIComponent(url.pathname)));
    if (!file.startsWith(project) || !existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    const type = file.endsWith(".js") ? "text/javascript" : file.endsWith(".html") ? "text/html" : "text/plain";
    res.writeHead(200, { "content-type": type }).end(readFileSync(file));
  });
  await new Promise((resolve) => statics.listen(port, "127.0.0.1", resolve));
  // The page comes from another origin than the server: allow it, as a deployment would.
  server = await startServer(["--allowed-origin", staticOrigin]);
});

after(async () => {
  await server?.stop();
  statics?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

test("the tarball holds the SDK, its types, README and package.json, nothing else", () => {
  const [listing] = JSON.parse(npm(["pack", "--dry-run", "--json"], SDK_DIR));
  const files = listing.files.map((f) => f.path).sort();
  assert.deepEqual(files, ["README.md", "package.json", "switchboard.d.ts", "switchboard.js"]);
  assert.equal(listing.name, "switchboard-client");
});

test("npm publish --dry-run accepts the package", () => {
  const out = execFileSync("npm", ["publish", "--dry-run"], { cwd: SDK_DIR, encoding: "utf8", stdio: "pipe" });
  assert.doesNotThrow(() => out);
});

test("/sdk/switchboard.js and .d.ts are byte for byte what the package ships", async () => {
  for (const file of ["switchboard.js", "switchboard.d.ts"]) {
    const served = Buffer.from(await (await fetch(`${server.origin}/sdk/${file}`)).arrayBuffer());
    const shipped = readFileSync(path.join(installed, file));
    assert.ok(served.equals(shipped), `/sdk/${file} differs from the tarball's ${file}`);
  }
});

test("Node.js imports it by name and joins and relays (ws passed in)", () => {
  const script = path.join(project, "node-check.mjs");
  writeFileSync(
    script,
    `import { SwitchboardClient, VERSION } from "switchboard-client";
import WebSocket from ${JSON.stringify(WS_MODULE)};
const url = process.argv[2];
const a = new SwitchboardClient({ url, WebSocket, reconnect: false });
const b = new SwitchboardClient({ url, WebSocket, reconnect: false });
await a.connect();
await b.connect();
await a.join("pkg-node", { meta: { name: "a" } });
const joined = await b.join("pkg-node", { meta: { name: "b" } });
const relayed = b.once("relay", null, 5000);
await a.sendTo(b.id, { type: "signal", data: { hello: "from node" } });
const msg = await relayed;
console.log(JSON.stringify({ version: VERSION, a: a.id, from: msg.from, data: msg.data, peers: joined.peers }));
a.close();
b.close();
`,
  );
  // Run from the consumer project, so "switchboard-client" resolves through its exports.
  const out = execFileSync(process.execPath, [script, server.ws], { cwd: project, encoding: "utf8", timeout: 20000 });
  const result = JSON.parse(out.trim().split("\n").pop());
  const pkg = JSON.parse(readFileSync(path.join(installed, "package.json"), "utf8"));
  assert.equal(result.version, pkg.version);
  assert.equal(result.from, result.a, "relay stamped with the sender's id");
  assert.deepEqual(result.data, { hello: "from node" });
  assert.deepEqual(result.peers, [{ id: result.a, meta: { name: "a" } }]);
});

test("TypeScript resolves the package's types through its exports", () => {
  const tsc = path.join(SDK_DIR, "node_modules/typescript/bin/tsc");
  assert.ok(existsSync(tsc), "run npm ci in clients/js first");
  writeFileSync(
    path.join(project, "check.ts"),
    `import { SwitchboardClient, type JoinedEvent, type ErrorCode } from "switchboard-client";
const client = new SwitchboardClient({ url: "ws://127.0.0.1:1/ws" });
export const joined: Promise<JoinedEvent> = client.join("room", { capacity: 2 });
export const code: ErrorCode = "room-full";
`,
  );
  writeFileSync(
    path.join(project, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: { module: "nodenext", moduleResolution: "nodenext", target: "es2022", strict: true, noEmit: true, lib: ["es2022", "dom"], types: [] },
      files: ["check.ts"],
    }),
  );
  execFileSync(process.execPath, [tsc, "-p", project], { cwd: project, encoding: "utf8", stdio: "pipe" });
});

test("Chromium imports it through an import map and joins and relays", async () => {
  writeFileSync(
    path.join(project, "index.html"),
    `<!doctype html>
<script type="importmap">
  { "imports": { "switchboard-client": "/node_modules/switchboard-client/switchboard.js" } }
</script>
<script type="module">
  import { SwitchboardClient } from "switchboard-client";
  const client = new SwitchboardClient(${JSON.stringify(server.ws)});
  window.result = { relays: [] };
  client.on("relay", (msg) => {
    window.result.relays.push(msg);
    client.sendTo(msg.from, { type: "signal", data: { echo: msg.data } });
  });
  await client.connect();
  await client.join("pkg-browser", { meta: { name: "page" } });
  window.result.id = client.id;
</script>
`,
  );
  const profile = mkdtempSync(path.join(tmpdir(), "switchboard-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 60000,
  });
  const { SwitchboardClient } = await import(pathToFileURL(path.join(installed, "switchboard.js")).href);
  const node = new SwitchboardClient({ url: server.ws, WebSocket, reconnect: false });
  try {
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (err) => errors.push(err.message));
    await page.goto(`${staticOrigin}/index.html`);
    const pageId = await waitFor(() => page.evaluate(() => window.result?.id), "the page to join", 20000).catch(
      (err) => {
        throw new Error(`${err.message}; page errors: ${errors.join("; ")}`);
      },
    );
    await node.connect();
    const joined = await node.join("pkg-browser");
    assert.deepEqual(joined.peers, [{ id: pageId, meta: { name: "page" } }]);
    const echoed = node.once("relay", (msg) => msg.from === pageId, 10000);
    await node.sendTo(pageId, { type: "signal", data: { hello: "page" } });
    const reply = await echoed;
    assert.deepEqual(reply.data, { echo: { hello: "page" } });
    const seen = await page.evaluate(() => window.result.relays);
    assert.equal(seen.length, 1);
    assert.equal(seen[0].from, node.id);
    assert.deepEqual(errors, []);
  } finally {
    node.close();
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
});
