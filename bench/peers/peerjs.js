// peerjs-server (npm `peer`), started as its `peerjs` command would be, on
// loopback, with two settings changed for a benchmark:
// - concurrent_limit (default 5,000 clients) raised so that 15,000 can connect;
// - alive_timeout (default 90 s without a HEARTBEAT closes a client) raised, since
//   the load generator does not send PeerJS heartbeats.
// Clients connect to ws://HOST:PORT/peerjs?key=peerjs&id=ID&token=TOKEN.
"use strict";

const { PeerServer } = require("peer");
const { options } = require("./common");

const { host, port } = options();
PeerServer({ host, port, path: "/", key: "peerjs", concurrent_limit: 1_000_000, alive_timeout: 3_600_000 }, (server) => {
  const address = server.address();
  console.log(`listening ${address.address}:${address.port}`);
});
process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => process.exit(0));
