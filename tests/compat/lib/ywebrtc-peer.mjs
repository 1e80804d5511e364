// One y-webrtc peer in its own Node process (peers in one process would find
// each other through BroadcastChannel and bypass the server):
//
//   node lib/ywebrtc-peer.mjs SIGNALING_URL ROOM NAME [PASSWORD]
//
// The unmodified y-webrtc 10.3 provider with yjs, WebRTC from @roamhq/wrtc
// (simple-peer's `wrtc` option through the provider's peerOpts), no STUN/TURN.
// Prints "subscribed" once its signaling connection is up and the subscribe is
// sent, sets map[NAME] = "hello from NAME", prints "synced {map}" once the map
// holds every name given on stdin ("expect a,b"), then stays until stdin ends.

import wrtc from "@roamhq/wrtc";
import WebSocket from "ws";
import * as Y from "yjs";
import { WebrtcProvider } from "y-webrtc";

const [url, room, name, password] = process.argv.slice(2);
if (!url || !room || !name) {
  console.error("usage: ywebrtc-peer.mjs SIGNALING_URL ROOM NAME [PASSWORD]");
  process.exit(2);
}

// lib0/websocket uses the global WebSocket; Node 20 has none. An `error`
// event with no listener must not throw (lib0 only sets onerror-style handlers).
class QuietWebSocket extends WebSocket {
  constructor(...args) {
    super(...args);
    this.on("error", () => {});
  }
}
globalThis.WebSocket = /** @type {any} */ (QuietWebSocket);

const doc = new Y.Doc();
const provider = new WebrtcProvider(room, doc, {
  signaling: [url],
  password: password || null,
  peerOpts: { wrtc, config: { iceServers: [] } },
});
const map = doc.getMap("state");

let expected = /** @type {string[] | null} */ (null);
let reported = false;
const check = () => {
  if (reported || !expected) return;
  if (expected.every((k) => map.get(k) === `hello from ${k}`)) {
    reported = true;
    console.log(`synced ${JSON.stringify(map.toJSON())}`);
  }
};
map.observe(check);

const waitSubscribed = setInterval(() => {
  if (provider.signalingConns.length && provider.signalingConns.every((c) => c.connected)) {
    clearInterval(waitSubscribed);
    console.log("subscribed");
    map.set(name, `hello from ${name}`);
    check();
  }
}, 50);

provider.on("peers", (e) => console.error(`[${name}] peers ${JSON.stringify(e)}`));

process.stdin.setEncoding("utf8");
let input = "";
process.stdin.on("data", (chunk) => {
  input += chunk;
  let nl;
  while ((nl = input.indexOf("\n")) >= 0) {
    const line = input.slice(0, nl).trim();
    input = input.slice(nl + 1);
    if (line.startsWith("expect ")) {
      expected = line.slice("expect ".length).split(",");
      check();
    }
  }
});
process.stdin.on("end", () => {
  provider.destroy();
  doc.destroy();
  setTimeout(() => process.exit(0), 200);
});
