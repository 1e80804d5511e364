// Type-checked against clients/js/switchboard.d.ts by `npm run typecheck`.
// It mirrors the examples in clients/js/README.md; if the types drift from
// what the README shows, this stops compiling.
import {
  PeerMesh,
  SwitchboardClient,
  SwitchboardError,
  backoffDelay,
  isPolite,
  signalingUrl,
  type JoinedEvent,
  type MeshPeer,
  type PeerInfo,
  type RelayMessage,
} from "../../../clients/js/switchboard.js";

export async function minimal(videos: HTMLElement): Promise<void> {
  const client = new SwitchboardClient(); // ws(s)://<this host>/ws
  const local = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
  const mesh = new PeerMesh(client, { room: "demo", stream: local, dataChannels: ["chat"] });

  mesh.on("track", ({ peer, stream }) => {
    let video = videos.querySelector<HTMLVideoElement>(`video[data-peer="${peer.id}"]`);
    if (!video) {
      video = document.createElement("video");
      video.dataset.peer = peer.id;
      video.autoplay = true;
      video.playsInline = true;
      videos.append(video);
    }
    video.srcObject = stream;
  });
  mesh.on("peer-removed", ({ peer }) => videos.querySelector(`video[data-peer="${peer.id}"]`)?.remove());
  mesh.on("channel-message", ({ peer, data }) => console.log(peer.meta?.name, "says", data));
  mesh.on("state", ({ peer, state }) => console.log(peer.id, state));

  await client.connect();
  const joined: JoinedEvent = await client.join("demo", { meta: { name: "Ada" } });
  const already: PeerInfo[] = joined.peers;
  console.log(`${already.length} already here`);
  mesh.send("chat", "hello everyone");
}

export async function requests(client: SwitchboardClient): Promise<void> {
  client.on("state", ({ state, previous, attempt, delay }) => console.log(previous, "->", state, attempt, delay));
  client.on("welcome", ({ id, iceServers, reconnected }) => console.log(id, iceServers?.length, reconnected));
  client.on("peer-joined", ({ id, room, meta }) => console.log(id, room, meta));
  client.on("peer-left", ({ id, reason }) => console.log(id, reason));
  client.on("broadcast", ({ from, data }) => console.log(from, data));
  const off = client.on("relay", (msg: RelayMessage) => console.log(msg.type, msg.from));
  off();
  client.on("error", (err) => console.warn(err.code, err.message));

  try {
    await client.join("call-7", { meta: { name: "Bo" }, capacity: 2 });
  } catch (err) {
    if (err instanceof SwitchboardError && err.code === "room-full") console.log("full");
  }
  await client.broadcast({ hello: "world" }, "call-7");
  const target = client.peers("call-7")[0]?.id;
  if (target) await client.sendTo(target, { type: "signal", data: { any: "thing" } });
  const rtt: number = await client.ping();
  const left = await client.leave("call-7");
  console.log(rtt, left.rooms, client.id, client.state, client.rooms.get("x")?.peers.size);
  const next = await client.once("peer-joined", (e) => e.room === "lobby", 5000);
  console.log(next.id);
  client.close();
}

export function helpers(peer: MeshPeer): void {
  const delay: number = backoffDelay(3, { initialDelay: 250, maxDelay: 5000, jitter: 0.3 });
  const url: string = signalingUrl("/ws");
  const polite: boolean = isPolite("a", "b");
  const pc: RTCPeerConnection = peer.pc;
  console.log(delay, url, polite, pc.connectionState, peer.polite, peer.stats.rollbacks);
  const custom = new SwitchboardClient({
    url: "wss://example.test/ws",
    reconnect: true,
    initialDelay: 250,
    maxDelay: 8000,
    requestTimeout: 5000,
    heartbeatInterval: 15000,
  });
  const mesh = new PeerMesh(custom, {
    room: "r",
    iceServers: [{ urls: "stun:stun.example.test:3478" }],
    iceRestartDelay: 3000,
  });
  mesh.setStream(null);
  mesh.close();
}
