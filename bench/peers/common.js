// What the three seed servers share: `--port N` (0: any free port) and
// `--host H` (loopback only), and one line on stdout once listening, which
// bench/compare.sh waits for: `listening 127.0.0.1:PORT`.
"use strict";

const { WebSocketServer } = require("ws");

function options() {
  const args = process.argv.slice(2);
  const get = (name, fallback) => {
    const at = args.indexOf(`--${name}`);
    return at >= 0 && at + 1 < args.length ? args[at + 1] : fallback;
  };
  const host = get("host", "127.0.0.1");
  if (!host.startsWith("127.")) {
    throw new Error(`--host ${host}: the bench peers listen on loopback only`);
  }
  return { host, port: Number(get("port", "0")) };
}

// Starts a ws server the way the seeds do (`new WebSocket.Server({ port })`,
// every path accepted), and announces its address.
function listen(onConnection) {
  const { host, port } = options();
  const wss = new WebSocketServer({ host, port });
  wss.on("connection", onConnection(wss));
  wss.on("listening", () => {
    const address = wss.address();
    console.log(`listening ${address.address}:${address.port}`);
  });
  wss.on("error", (error) => {
    console.error(error);
    process.exit(1);
  });
  process.on("SIGTERM", () => process.exit(0));
  process.on("SIGINT", () => process.exit(0));
  return wss;
}

module.exports = { listen, options };
