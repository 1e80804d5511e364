// Video room: camera and microphone to everyone in the room over WebRTC
// (a full mesh, perfect negotiation in the SDK), chat over a data channel.
// URL: /room.html?room=NAME&name=DISPLAYNAME
import { SwitchboardClient, PeerMesh } from "/sdk/switchboard.js";
import { byId, el, setBadge, initials, colorFor, clock } from "/common.js";

/** @typedef {import("/sdk/switchboard.js").MeshPeer} MeshPeer */
/** @typedef {{ from: string, name: string, text: string, direction: "in" | "out", time: number }} ChatEntry */
/** @typedef {{ kind: "chat", text: string } | { kind: "media", mic: boolean, cam: boolean }} ChannelMessage */

const CHAT = "chat";
const params = new URLSearchParams(location.search);
const roomName = (params.get("room") || "").trim();
const myName = (params.get("name") || "").trim();

if (!roomName || !myName) {
  showJoinForm();
} else {
  enterRoom(roomName, myName);
}

function showJoinForm() {
  byId("join-view").classList.remove("hidden");
  const roomInput = /** @type {HTMLInputElement} */ (byId("join-room"));
  const nameInput = /** @type {HTMLInputElement} */ (byId("join-name"));
  roomInput.value = roomName || "demo";
  nameInput.value = myName || localStorage.getItem("switchboard.name") || "";
  (nameInput.value ? roomInput : nameInput).focus();
  byId("join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = nameInput.value.trim();
    const room = roomInput.value.trim();
    if (!name || !room) return;
    localStorage.setItem("switchboard.name", name);
    location.search = new URLSearchParams({ room, name }).toString();
  });
}

/**
 * @param {string} room
 * @param {string} name
 */
function enterRoom(room, name) {
  document.title = `${room} · Video room · Switchboard`;
  byId("room-view").classList.remove("hidden");
  byId("room-name").textContent = room;
  byId("my-name").textContent = name;
  const signalingBadge = byId("signaling");
  signalingBadge.classList.remove("hidden");
  const notice = byId("notice");
  const videos = byId("videos");
  const peerList = byId("peers");
  const chat = byId("chat");
  const chatInput = /** @type {HTMLInputElement} */ (byId("chat-text"));
  const micBtn = /** @type {HTMLButtonElement} */ (byId("mute-mic"));
  const camBtn = /** @type {HTMLButtonElement} */ (byId("mute-cam"));
  /** Video tiles by peer id ("self" for ours). @type {Map<string, HTMLElement>} */
  const tiles = new Map();

  const client = new SwitchboardClient();
  const mesh = new PeerMesh(client, { room, dataChannels: [CHAT] });

  /** @type {MediaStream | null} */
  let localStream = null;
  let micOn = true;
  let camOn = true;
  let left = false;
  /** Remote peers' media state, from their data-channel messages. @type {Map<string, { mic: boolean, cam: boolean }>} */
  const remoteMedia = new Map();
  /** @type {ChatEntry[]} */
  const chatLog = [];
  /** Notable events, for tests and debugging. @type {{ type: string, id?: string, state?: string, time: number }[]} */
  const events = [];
  /** @param {string} type @param {Record<string, any>} [extra] */
  const note = (type, extra = {}) => events.push({ type, time: Date.now(), ...extra });

  /** @type {(value: void) => void} */
  let markJoined = () => {};
  const ready = new Promise((resolve) => (markJoined = resolve));

  // ---- test hooks ---------------------------------------------------------
  const hooks = {
    client,
    mesh,
    room,
    name,
    ready,
    chatLog,
    events,
    get id() {
      return client.id;
    },
    get signalingState() {
      return client.state;
    },
    get localStream() {
      return localStream;
    },
    /** Remote peers as plain data. */
    peers() {
      return [...mesh.peers.values()].map((p) => ({
        id: p.id,
        name: peerName(p),
        state: p.state,
        polite: p.polite,
        chatOpen: p.channels.get(CHAT)?.readyState === "open",
        hasVideo: !!p.stream && p.stream.getVideoTracks().length > 0,
      }));
    },
    /** @param {string} id */
    peerState(id) {
      return mesh.peers.get(id)?.state;
    },
    /** @param {string} text */
    sendChat(text) {
      return sendChat(text);
    },
  };
  Object.assign(window, { switchboardRoom: hooks });

  // ---- signaling state ----------------------------------------------------
  /** @param {string | null} text @param {boolean} [error] */
  function showNotice(text, error = false) {
    notice.textContent = text ?? "";
    notice.classList.toggle("hidden", !text);
    notice.classList.toggle("error", error);
  }

  client.on("state", ({ state }) => {
    note("signaling", { state });
    setBadge(signalingBadge, state, `server ${state === "open" ? "online" : state}`);
    if (left) return;
    if (state === "reconnecting") showNotice("Lost the connection to the server. Reconnecting… (calls in progress keep going)");
    else if (state === "open") showNotice(null);
  });
  client.on("welcome", ({ id, reconnected }) => {
    note("welcome", { id, reconnected });
    const self = tiles.get("self");
    if (self) self.dataset.peer = id;
    renderPeers();
  });
  client.on("joined", ({ rejoin }) => {
    note(rejoin ? "rejoined" : "joined");
    renderPeers();
  });
  client.on("peer-joined", ({ id, meta, room: r }) => {
    if (r !== room) return;
    note("peer-joined", { id });
    system(`${metaName(meta) ?? "Someone"} joined`);
  });
  client.on("peer-left", ({ id, meta, room: r, reason }) => {
    if (r !== room) return;
    note("peer-left", { id, reason });
    if (reason === "left") system(`${metaName(meta) ?? "Someone"} left`);
  });
  client.on("error", (error) => {
    console.warn("switchboard:", error.code, error.message);
    if (error.room === room) showNotice(`Could not rejoin the room: ${error.message}`, true);
  });

  // ---- the mesh -----------------------------------------------------------
  mesh.on("peer", ({ peer }) => {
    note("peer", { id: peer.id });
    addTile(peer);
    renderPeers();
  });
  mesh.on("peer-removed", ({ peer, reason }) => {
    note("peer-removed", { id: peer.id, reason });
    removeTile(peer.id);
    remoteMedia.delete(peer.id);
    renderPeers();
  });
  mesh.on("state", ({ peer, state }) => {
    note("peer-state", { id: peer.id, state });
    const tile = tiles.get(peer.id);
    if (tile) setBadge(/** @type {HTMLElement} */ (tile.querySelector(".badge")), state);
    renderPeers();
  });
  mesh.on("track", ({ peer, stream }) => {
    const tile = tiles.get(peer.id);
    if (!tile || !stream) return;
    const video = /** @type {HTMLVideoElement} */ (tile.querySelector("video"));
    if (video.srcObject !== stream) {
      video.srcObject = stream;
      play(video);
    }
  });
  mesh.on("channel-open", ({ peer, label }) => {
    if (label !== CHAT) return;
    note("chat-open", { id: peer.id });
    peer.send(CHAT, JSON.stringify({ kind: "media", mic: micOn, cam: camOn }));
    renderPeers();
  });
  mesh.on("channel-message", ({ peer, label, data }) => {
    if (label !== CHAT || typeof data !== "string") return;
    /** @type {ChannelMessage} */
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (msg.kind === "chat" && typeof msg.text === "string") {
      const entry = { from: peer.id, name: peerName(peer), text: msg.text, direction: /** @type {const} */ ("in"), time: Date.now() };
      chatLog.push(entry);
      showChat(entry);
    } else if (msg.kind === "media") {
      remoteMedia.set(peer.id, { mic: !!msg.mic, cam: !!msg.cam });
      updateMediaIcons(peer.id);
    }
  });
  mesh.on("error", ({ peer, error }) => console.debug("peer", peer.id, error));

  // ---- local media, then join ---------------------------------------------
  addSelfTile();
  (async () => {
    localStream = await getMedia();
    if (localStream) {
      const video = /** @type {HTMLVideoElement} */ (tiles.get("self")?.querySelector("video"));
      video.srcObject = localStream;
      video.muted = true;
      play(video);
      mesh.setStream(localStream);
    }
    micOn = !!localStream?.getAudioTracks().length;
    camOn = !!localStream?.getVideoTracks().length;
    renderControls();
    try {
      await client.connect();
      await client.join(room, { meta: { name } });
      markJoined();
    } catch (error) {
      const err = /** @type {any} */ (error);
      showNotice(
        err.code === "room-full" ? `Room “${room}” is full.` : `Could not join “${room}”: ${err.message ?? err}`,
        true,
      );
    }
  })();

  async function getMedia() {
    const video = { width: { ideal: 640 }, height: { ideal: 480 } };
    for (const constraints of [{ video, audio: true }, { video, audio: false }, { video: false, audio: true }]) {
      try {
        return await navigator.mediaDevices.getUserMedia(constraints);
      } catch (error) {
        console.warn("getUserMedia", constraints, error);
      }
    }
    showNotice("No camera or microphone available: you can still watch, listen and chat.");
    return null;
  }

  // ---- video tiles --------------------------------------------------------

  /**
   * @param {string} key
   * @param {string} label
   * @param {string} colorKey
   * @param {boolean} self
   */
  function makeTile(key, label, colorKey, self) {
    const video = /** @type {HTMLVideoElement} */ (el("video", { autoplay: true, playsInline: true }));
    const tile = el(
      "div",
      { className: `tile${self ? " self" : ""}`, dataset: { peer: key } },
      video,
      el("div", { className: "placeholder" }, el("span", { className: "avatar", style: `background:${colorFor(colorKey)}` }, initials(label))),
      el("div", { className: "muted-icons" }),
      el(
        "div",
        { className: "caption" },
        el("span", { className: "name" }, label),
        self ? null : el("span", { className: "badge", dataset: { state: "new" } }, "new"),
      ),
    );
    // Show the video once it has frames; the avatar until then.
    video.addEventListener("loadeddata", () => tile.classList.add("has-video"));
    video.addEventListener("emptied", () => tile.classList.remove("has-video"));
    return tile;
  }

  function addSelfTile() {
    const tile = makeTile("self", `${name} (you)`, name, true);
    tiles.set("self", tile);
    videos.prepend(tile);
  }

  /** @param {MeshPeer} peer */
  function addTile(peer) {
    removeTile(peer.id);
    const tile = makeTile(peer.id, peerName(peer), peer.id, false);
    setBadge(/** @type {HTMLElement} */ (tile.querySelector(".badge")), peer.state);
    tiles.set(peer.id, tile);
    videos.append(tile);
    updateMediaIcons(peer.id);
  }

  /** @param {string} id */
  function removeTile(id) {
    const tile = tiles.get(id);
    if (!tile) return;
    const video = tile.querySelector("video");
    if (video) video.srcObject = null;
    tile.remove();
    tiles.delete(id);
  }

  /** @param {string} id */
  function updateMediaIcons(id) {
    const tile = tiles.get(id);
    if (!tile) return;
    const media = id === "self" ? { mic: micOn, cam: camOn } : remoteMedia.get(id);
    const icons = /** @type {HTMLElement} */ (tile.querySelector(".muted-icons"));
    icons.replaceChildren(
      ...(media && !media.mic ? [el("span", {}, "mic off")] : []),
      ...(media && !media.cam ? [el("span", {}, "video off")] : []),
    );
    tile.classList.toggle("cam-off", !!media && !media.cam);
    if (media && !media.cam) tile.classList.remove("has-video");
    else if (media?.cam && /** @type {HTMLVideoElement} */ (tile.querySelector("video")).readyState >= 2) tile.classList.add("has-video");
  }

  /** @param {HTMLVideoElement} video */
  function play(video) {
    video.play().catch(() => {
      // Autoplay with sound refused: play muted and unmute on the first click.
      if (video.muted) return;
      video.muted = true;
      video.play().catch(() => {});
      showNotice("Click anywhere on the page to turn on sound.");
      document.addEventListener(
        "click",
        () => {
          for (const v of videos.querySelectorAll("video")) if (v.closest(".tile:not(.self)")) v.muted = false;
          showNotice(null);
        },
        { once: true },
      );
    });
  }

  // ---- people -------------------------------------------------------------

  /** @param {any} meta */
  function metaName(meta) {
    return meta && typeof meta.name === "string" && meta.name.trim() ? meta.name.trim() : null;
  }

  /** @param {MeshPeer} peer */
  function peerName(peer) {
    return metaName(peer.meta) ?? `Guest ${peer.id.slice(0, 4)}`;
  }

  function renderPeers() {
    const rows = [
      el(
        "li",
        { dataset: { peer: client.id ?? "self" } },
        el("span", { className: "avatar", style: `background:${colorFor(name)}` }, initials(name)),
        el("span", { className: "who" }, el("strong", {}, `${name} (you)`), el("small", {}, client.id ?? "…")),
        el("span", { className: "badge", dataset: { state: client.state } }, client.state === "open" ? "online" : client.state),
      ),
    ];
    for (const peer of mesh.peers.values()) {
      const label = peerName(peer);
      rows.push(
        el(
          "li",
          { dataset: { peer: peer.id } },
          el("span", { className: "avatar", style: `background:${colorFor(peer.id)}` }, initials(label)),
          el("span", { className: "who" }, el("strong", {}, label), el("small", {}, peer.id)),
          el("span", { className: "badge", dataset: { state: peer.state } }, peer.state),
        ),
      );
    }
    peerList.replaceChildren(...rows);
    const n = mesh.peers.size + 1;
    byId("peer-count").textContent = `${n} ${n === 1 ? "person" : "people"}`;
  }

  // ---- chat ---------------------------------------------------------------

  /** @param {ChatEntry} entry */
  function showChat(entry) {
    chat.querySelector(".empty")?.remove();
    const self = entry.direction === "out";
    chat.append(
      el(
        "li",
        { className: self ? "self" : "" },
        el("span", { className: "who" }, `${self ? "You" : entry.name} · ${clock(new Date(entry.time))}`),
        entry.text,
      ),
    );
    chat.scrollTop = chat.scrollHeight;
  }

  /** @param {string} text */
  function system(text) {
    chat.querySelector(".empty")?.remove();
    chat.append(el("li", { className: "system" }, text));
    chat.scrollTop = chat.scrollHeight;
  }

  /** @param {string} text */
  function sendChat(text) {
    const sent = mesh.send(CHAT, JSON.stringify({ kind: "chat", text }));
    const entry = { from: client.id ?? "", name, text, direction: /** @type {const} */ ("out"), time: Date.now() };
    chatLog.push(entry);
    showChat(entry);
    if (sent === 0) system("Nobody is connected to receive that yet.");
    return sent;
  }

  byId("chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = chatInput.value.trim();
    if (!text) return;
    sendChat(text);
    chatInput.value = "";
    chatInput.focus();
  });

  // ---- controls -----------------------------------------------------------

  function renderControls() {
    const hasMic = !!localStream?.getAudioTracks().length;
    const hasCam = !!localStream?.getVideoTracks().length;
    micBtn.disabled = !hasMic;
    camBtn.disabled = !hasCam;
    micBtn.setAttribute("aria-pressed", String(hasMic && !micOn));
    camBtn.setAttribute("aria-pressed", String(hasCam && !camOn));
    label(micBtn).textContent = micOn ? "Mute" : "Unmute";
    label(camBtn).textContent = camOn ? "Stop video" : "Start video";
    updateMediaIcons("self");
  }

  /** @param {HTMLElement} button */
  function label(button) {
    return /** @type {HTMLElement} */ (button.querySelector(".label"));
  }

  function announceMedia() {
    mesh.send(CHAT, JSON.stringify({ kind: "media", mic: micOn, cam: camOn }));
  }

  micBtn.addEventListener("click", () => {
    micOn = !micOn;
    for (const track of localStream?.getAudioTracks() ?? []) track.enabled = micOn;
    renderControls();
    announceMedia();
  });
  camBtn.addEventListener("click", () => {
    camOn = !camOn;
    for (const track of localStream?.getVideoTracks() ?? []) track.enabled = camOn;
    renderControls();
    announceMedia();
  });

  byId("leave").addEventListener("click", async () => {
    left = true;
    mesh.close();
    try {
      await client.leave(room);
    } catch {
      // not connected: nothing to leave
    }
    client.close();
    for (const track of localStream?.getTracks() ?? []) track.stop();
    for (const id of [...tiles.keys()]) removeTile(id);
    byId("room-view").classList.add("hidden");
    signalingBadge.classList.add("hidden");
    const rejoin = /** @type {HTMLAnchorElement} */ (byId("rejoin"));
    rejoin.href = location.href;
    byId("left-view").classList.remove("hidden");
    note("left");
  });

  renderPeers();
  renderControls();
}
