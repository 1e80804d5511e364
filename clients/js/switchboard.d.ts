// Type definitions for the Switchboard browser SDK (switchboard.js).
// Hand-maintained, and held against switchboard.js itself: `npm run typecheck`
// (package.json next to this file) emits the declarations tsc infers from the
// SDK's code and JSDoc and fails when an export, a class member or a parameter
// count differs from this file, or when the code's lists of relay types and
// error codes differ from the unions here. tests/browser also type-checks an
// example and the demo pages against this file.

/** The SDK's version (the same as the server's). */
export declare const VERSION: string;

/** Relay message types the server forwards to a target peer. */
export declare const RELAY_TYPES: readonly RelayType[];

export type RelayType = "sdp" | "ice-candidate" | "offer" | "answer" | "candidate" | "signal";

/** Error codes the server sends (docs/protocol.md). */
export declare const ERROR_CODES: readonly ServerErrorCode[];

/**
 * The reserved sender of broadcasts from the app's backend (the server API's
 * `POST /api/v1/rooms/{room}/broadcast`): a {@link BroadcastEvent} with this
 * `from` came from the server, not a peer. No peer id is ever "server".
 */
export declare const SERVER_SENDER: "server";

/** Error codes the client itself rejects requests with. */
export declare const CLIENT_ERROR_CODES: readonly ClientErrorCode[];

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A peer's join metadata (a JSON object, at most `max-meta-size` bytes). */
export type Meta = { [key: string]: Json };

/** Protocol error codes (docs/protocol.md). */
export type ServerErrorCode =
  | "malformed-json"
  | "unknown-type"
  | "missing-field"
  | "invalid-field"
  | "unknown-target"
  | "no-shared-room"
  | "not-in-room"
  | "already-joined"
  | "room-full"
  | "too-many-rooms"
  | "message-too-large"
  | "binary-not-supported"
  | "delivery-failed"
  | "unauthorized"
  | "forbidden"
  | "rate-limited"
  | "unexpected-message"
  | "unavailable"
  | "unknown-room";

/** The client's own error codes. */
export type ClientErrorCode = "timeout" | "disconnected" | "closed" | "not-connected" | "cancelled";

/** Protocol error codes, plus the client's own. */
export type ErrorCode = ServerErrorCode | ClientErrorCode;

/** An error from the server (`code` as in the protocol) or from the client. */
export declare class SwitchboardError extends Error {
  constructor(code: string, message?: string, extra?: object);
  readonly name: "SwitchboardError";
  /** A stable code: see {@link ErrorCode}; unknown server codes pass through. */
  code: ErrorCode | (string & {});
  /** The request id the server echoed, if any. */
  rid?: string | number;
  /** For a failed rejoin: the room that could not be rejoined. */
  room?: string;
}

/** Delay in ms before reconnect attempt `attempt` (0-based): exponential backoff with jitter. */
export declare function backoffDelay(attempt: number, options?: BackoffOptions, random?: () => number): number;

/** `ws(s)://<this page's host><path>`; absolute ws(s)/http(s) URLs are accepted as well. */
export declare function signalingUrl(path?: string): string;

/** Perfect-negotiation role: true when `localId` sorts before `remoteId`. */
export declare function isPolite(localId: string, remoteId: string): boolean;

// ---------------------------------------------------------------------------
// Events

export type Unsubscribe = () => void;

declare class Emitter<EventMap> {
  /** Subscribe to an event; returns a function that unsubscribes. */
  on<K extends keyof EventMap>(type: K, handler: (event: EventMap[K]) => void): Unsubscribe;
  off<K extends keyof EventMap>(type: K, handler: (event: EventMap[K]) => void): void;
  /** The next event of `type` accepted by `filter`; rejects with code "timeout" after `timeoutMs`. */
  once<K extends keyof EventMap>(
    type: K,
    filter?: ((event: EventMap[K]) => boolean) | null,
    timeoutMs?: number,
  ): Promise<EventMap[K]>;
  emit<K extends keyof EventMap>(type: K, event: EventMap[K]): void;
}

// ---------------------------------------------------------------------------
// Signaling client

export type ConnectionState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

export interface BackoffOptions {
  /** First reconnect delay in ms (default 500). */
  initialDelay?: number;
  /** Longest delay in ms (default 10000). */
  maxDelay?: number;
  /** Growth per attempt (default 2). */
  factor?: number;
  /** 0..1: the delay is uniform in [d·(1−jitter), d] (default 0.5). */
  jitter?: number;
}

export interface ClientOptions extends BackoffOptions {
  /** Signaling URL; default `/ws` on this page's host (ws: or wss: to match the page). */
  url?: string;
  /** Reconnect after the connection drops (default true). */
  reconnect?: boolean;
  /** Ask for a resumable session and resume it after a drop: same id, rooms and missed messages (default true). */
  resume?: boolean;
  /** How long a request waits for its reply, in ms (default 10000). */
  requestTimeout?: number;
  /** How long to wait for `welcome` after opening the socket, in ms (default 10000). */
  connectTimeout?: number;
  /** Application-level ping interval in ms to detect dead connections; 0 disables (default 20000). */
  heartbeatInterval?: number;
  /** A ping without a pong for this long drops the connection, in ms (default 10000). */
  heartbeatTimeout?: number;
  /** A WebSocket implementation (default `globalThis.WebSocket`). */
  WebSocket?: { new (url: string): WebSocket };
}

export interface PeerInfo {
  id: string;
  meta?: Meta;
}

export interface RoomState {
  readonly name: string;
  /** The `meta` this client joined with. */
  readonly meta?: Meta;
  /** The capacity in force, as reported by `joined`. */
  readonly capacity?: number;
  /** The other peers, by id, in join order. */
  readonly peers: ReadonlyMap<string, PeerInfo>;
}

export interface StateEvent {
  state: ConnectionState;
  previous: ConnectionState;
  /**
   * WebSocket close code that caused the change, when there was one. A
   * "closed" state with code 4003 (or another 4000-4999 code but 4001, as the
   * app's backend chose) means the server removed this peer: final, no resume
   * and no reconnect; `reason` is the server's text for the user.
   */
  code?: number;
  reason?: string;
  /** True on the "closed" state when the server removed this peer (see `code`). */
  removed?: boolean;
  /** Reconnect attempt number (1-based) and the delay before it, for "reconnecting". */
  attempt?: number;
  delay?: number;
}

export interface RetryEvent {
  code?: number;
  reason?: string;
  attempt: number;
  delay: number;
}

export interface WelcomeEvent {
  type: "welcome";
  /** Our peer id on this connection. */
  id: string;
  /** The server's ICE servers; absent when it has none configured. */
  iceServers?: RTCIceServer[];
  /** True for every welcome after the first. */
  reconnected: boolean;
  /** True when a reconnection resumed the session: same id, same rooms, nothing rejoined. */
  resumed?: boolean;
}

export interface JoinedEvent {
  type: "joined";
  room: string;
  /** Who was already there, in join order. */
  peers: PeerInfo[];
  capacity?: number;
  /** True when this is the automatic rejoin after a reconnect. */
  rejoin: boolean;
}

export interface LeftEvent {
  rooms: string[];
  /**
   * Why: `leave()`, `close()`, the connection dropped without reconnect, a
   * rejoin was refused, the server closed the room (after `room-closed`), or
   * the server removed this peer (close code 4003).
   */
  reason: "leave" | "closed" | "disconnected" | "rejoin-failed" | "room-closed" | "removed";
  error?: SwitchboardError;
}

export interface LeftReply {
  type: "left";
  rooms: string[];
}

export interface PeerJoinedEvent {
  id: string;
  room: string;
  meta?: Meta;
}

export interface PeerLeftEvent {
  id: string;
  room: string;
  meta?: Meta;
  /** "left": the server said so; "reconnect": gone from the room when we rejoined. */
  reason: "left" | "reconnect";
}

export interface BroadcastEvent {
  /** The sender's peer id, or {@link SERVER_SENDER} ("server") for a broadcast from the app's backend. */
  from: string;
  room: string;
  data: Json;
}

/** The server closed a room we were in: we are no longer in it (no `peer-left` for its members). */
export interface RoomClosedEvent {
  room: string;
}

/** A message to this peer from the app's backend (the server API's `POST /api/v1/peers/{id}/send`). */
export interface ServerMessageEvent {
  data: Json;
}

/** A relayed message as the server delivered it: every field the sender wrote, plus `from`. */
export interface RelayMessage {
  type: RelayType | (string & {});
  from: string;
  target: string;
  [field: string]: unknown;
}

/** A message to relay: `type` defaults to "signal"; `target` and `rid` are set by the client. */
export interface OutgoingRelay {
  type?: RelayType;
  [field: string]: unknown;
}

/** Any server frame, as parsed JSON. */
export interface ServerMessage {
  type: string;
  [field: string]: unknown;
}

export interface ClientEventMap {
  state: StateEvent;
  retry: RetryEvent;
  welcome: WelcomeEvent;
  joined: JoinedEvent;
  left: LeftEvent;
  "peer-joined": PeerJoinedEvent;
  "peer-left": PeerLeftEvent;
  relay: RelayMessage;
  broadcast: BroadcastEvent;
  /** The server closed a room we were in; a `left` event with reason "room-closed" follows. */
  "room-closed": RoomClosedEvent;
  /** A message from the app's backend. */
  "server-message": ServerMessageEvent;
  /** Server errors not tied to a pending request, and refused rejoins. */
  error: SwitchboardError;
  /** Every frame from the server. */
  message: ServerMessage;
}

export interface JoinOptions {
  meta?: Meta;
  /** Capacity for a room this join creates. */
  capacity?: number;
}

export declare class SwitchboardClient extends Emitter<ClientEventMap> {
  constructor(options?: ClientOptions | string);
  /** Our peer id on the current connection; null before the first welcome. Changes on reconnect. */
  readonly id: string | null;
  readonly state: ConnectionState;
  /** ICE servers from the last welcome (undefined when the server has none). */
  readonly iceServers: RTCIceServer[] | undefined;
  readonly url: string;
  /** Rooms we are in; rejoined automatically after a reconnect. */
  readonly rooms: ReadonlyMap<string, RoomState>;
  /** The other peers of `room`. */
  peers(room: string): PeerInfo[];
  /** Connect; resolves on the first welcome (retrying with backoff when `reconnect` is on). */
  connect(): Promise<WelcomeEvent>;
  /** Close for good; pending requests reject with code "closed". */
  close(code?: number, reason?: string): void;
  /** Join a room (default "default"). Requests made while (re)connecting are sent once open. */
  join(room?: string, options?: JoinOptions): Promise<JoinedEvent>;
  /** Leave `room`, or every room. */
  leave(room?: string): Promise<LeftReply>;
  /** Send `data` to every other peer of `room` (optional when in exactly one room). */
  broadcast(data: Json, room?: string): Promise<void>;
  /** Relay a message to one peer; resolves when the server acknowledged it. */
  sendTo(target: string, message?: OutgoingRelay): Promise<void>;
  /** Round trip to the server, in ms. */
  ping(): Promise<number>;
}

// ---------------------------------------------------------------------------
// WebRTC mesh

export interface MeshOptions {
  /** The room whose peers to connect to. */
  room: string;
  /** Local media to send to every peer (can be set later with `setStream`). */
  stream?: MediaStream | null;
  /** Labels of negotiated data channels opened to every peer (default ["data"]). */
  dataChannels?: string[];
  /** ICE servers; overrides the server's (`welcome.iceServers`). */
  iceServers?: RTCIceServer[];
  /** Extra RTCConfiguration; its `iceServers` is used when `iceServers` is not given. */
  rtcConfig?: RTCConfiguration;
  /** Restart ICE after the connection stays "disconnected" this long, in ms (default 2000). "failed" restarts at once. */
  iceRestartDelay?: number;
  /**
   * Restart ICE when a connection is still "new" this long after negotiation
   * completed (the polite side waits twice as long), in ms; 0 disables (default 4000).
   */
  stallTimeout?: number;
  /**
   * At setup the polite side waits up to this long for the impolite side's
   * offer before making its own, which avoids glare at setup, in ms (default 1500).
   */
  politeDelay?: number;
  /** Implementations to use (default the globals). */
  RTCPeerConnection?: { new (config?: RTCConfiguration): RTCPeerConnection };
  MediaStream?: { new (tracks?: MediaStreamTrack[]): MediaStream };
}

export interface MeshPeerStats {
  offersSent: number;
  answersSent: number;
  offersIgnored: number;
  rollbacks: number;
  candidatesSent: number;
  candidatesAdded: number;
  candidatesQueued: number;
  iceRestarts: number;
}

export declare class MeshPeer {
  /** The remote peer id. */
  readonly id: string;
  /** The remote peer's join meta. */
  readonly meta?: Meta;
  /** Our peer id when this connection was made. */
  readonly localId: string;
  /** Whether we are the polite side of perfect negotiation. */
  readonly polite: boolean;
  readonly pc: RTCPeerConnection;
  /** The connection state ("closed" once the peer is removed). */
  readonly state: RTCPeerConnectionState;
  /** Remote media; null until the first track arrives. */
  readonly stream: MediaStream | null;
  /** Data channels by label. */
  readonly channels: ReadonlyMap<string, RTCDataChannel>;
  readonly stats: Readonly<MeshPeerStats>;
  /** The last negotiation steps, oldest first, for debugging (`t`: performance.now() ms). */
  readonly history: ReadonlyArray<{ t: number; step: string }>;
  readonly closed: boolean;
  /** Send on a data channel; false when it is not open. */
  send(label: string, data: string | ArrayBuffer | ArrayBufferView | Blob): boolean;
  /** Replace the local media sent to this peer. */
  setStream(stream: MediaStream | null): void;
  restartIce(): void;
  close(): void;
}

export interface MeshPeerEvent {
  peer: MeshPeer;
}

export interface MeshPeerRemovedEvent {
  peer: MeshPeer;
  /** "left": the peer left; "reconnect": gone after a signaling reconnect; "leave"/"closed": we left (or are out of the room: closed by the server, or removed); "replaced": a new connection superseded it. */
  reason: "left" | "reconnect" | "leave" | "closed" | "replaced";
}

export interface MeshStateEvent {
  peer: MeshPeer;
  state: RTCPeerConnectionState;
}

export interface MeshTrackEvent {
  peer: MeshPeer;
  track: MediaStreamTrack;
  stream: MediaStream | null;
}

export interface MeshChannelEvent {
  peer: MeshPeer;
  label: string;
  channel: RTCDataChannel;
}

export interface MeshChannelMessageEvent {
  peer: MeshPeer;
  label: string;
  data: string | ArrayBuffer;
}

export interface MeshErrorEvent {
  peer: MeshPeer;
  error: unknown;
}

export interface MeshEventMap {
  peer: MeshPeerEvent;
  "peer-removed": MeshPeerRemovedEvent;
  state: MeshStateEvent;
  track: MeshTrackEvent;
  "channel-open": MeshChannelEvent;
  "channel-close": MeshChannelEvent;
  "channel-message": MeshChannelMessageEvent;
  "ice-restart": MeshPeerEvent;
  error: MeshErrorEvent;
}

/** Anything with the client's surface the mesh uses (a SwitchboardClient in practice). */
export interface MeshSignaling {
  readonly id: string | null;
  readonly state: ConnectionState;
  readonly iceServers?: RTCIceServer[] | undefined;
  readonly rooms: ReadonlyMap<string, RoomState>;
  on: SwitchboardClient["on"];
  sendTo(target: string, message?: OutgoingRelay): Promise<void>;
}

export declare class PeerMesh extends Emitter<MeshEventMap> {
  constructor(client: MeshSignaling, options: MeshOptions);
  readonly room: string;
  readonly stream: MediaStream | null;
  /** Remote peers by id. */
  readonly peers: ReadonlyMap<string, MeshPeer>;
  /** Replace the local media sent to every peer. */
  setStream(stream: MediaStream | null): void;
  /** Send on data channel `label` to one peer or all; returns how many channels it went out on. */
  send(label: string, data: string | ArrayBuffer | ArrayBufferView | Blob, peerId?: string): number;
  /** Close every peer connection and stop following the room (the room is not left). */
  close(): void;
}

// Only what is exported above is exported (`Emitter` is the classes' base, not an export).
export {};
