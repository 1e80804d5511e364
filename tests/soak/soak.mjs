#!/usr/bin/env node
// Switchboard soak test.
//
// Starts the real `switchboard` binary, then keeps N signaling peers (one
// process, one WebSocket each) churning for a while: connect, join a room,
// relay offers/answers/candidates to room mates, leave (or vanish abruptly),
// disconnect, reconnect. Every few seconds it samples the server's RSS and open
// fds (/proc/PID/status, /proc/PID/fd) and the `switchboard_tasks_alive`,
// `switchboard_peers` and `switchboard_connections` gauges from GET /metrics
// into a CSV. When the time is up every peer leaves and disconnects, and the
// server must come back to its baseline: open fds and live tasks exactly, RSS
// within a tolerance. It also checks correctness all along (see `Checks` below):
// every relayed message arrives exactly once, in order per sender, at the right
// peer, and no error or close happens that the protocol does not explain.
//
// Exit status: 0 when every check passed, 1 otherwise, 2 on bad usage.
// Outputs (in --out, default test-artifacts/soak): samples.csv, chart.svg,
// summary.json; --svg PATH also writes the chart there.
//
//   node soak.mjs                              # 5,000 peers for 30 minutes
//   node soak.mjs --duration 30s --peers 500   # the short run CI uses
//
// Every flag also reads an environment variable: --peers ⇔ SOAK_PEERS, etc.
// The binary: $SWITCHBOARD_BIN, or target/release/switchboard. More in docs/soak.md.

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../..');

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

const OPTIONS = {
  duration: ['30m', 'how long the churn runs (e.g. 30s, 5m, 1h)'],
  peers: ['5000', 'concurrent peers (one WebSocket each)'],
  'room-size': ['6', 'average peers per room (rooms = peers / room-size)'],
  'lifetime-min': ['10s', 'shortest time a peer stays in its room'],
  'lifetime-max': ['40s', 'longest time a peer stays in its room'],
  'msg-interval': ['2s', 'mean time between two relays of one peer'],
  abrupt: ['0.2', 'fraction of sessions that end by dropping the socket (no leave, no close frame)'],
  'reconnect-max': ['1s', 'longest pause before a peer reconnects'],
  ramp: ['', 'time over which the peers first connect (default: peers / 500 seconds, at least 1s)'],
  'sample-interval': ['5s', 'time between two samples of the server'],
  'settle-timeout': ['60s', 'how long the server has to return to its baseline after the last client left'],
  'rss-tolerance-mib': ['16', 'final RSS may exceed the baseline by this many MiB ...'],
  'rss-tolerance-pct': ['10', '... or by this percentage of the peak growth, whichever is larger'],
  'drift-tolerance-mib': ['16', 'during the churn, RSS may grow by at most this much after the warm-up (a leak grows with time)'],
  'local-addrs': ['8', 'spread client sockets over 127.0.0.1..127.0.0.N (more ephemeral ports)'],
  out: ['test-artifacts/soak', 'directory for samples.csv, chart.svg, summary.json (relative to the repo root)'],
  svg: ['', 'also write the chart to this path (relative to the repo root)'],
  'max-errors': ['50', 'stop early after this many failed checks'],
};

function usage() {
  const lines = Object.entries(OPTIONS).map(
    ([name, [def, help]]) => `  --${name.padEnd(18)} ${help}${def ? ` [${def}]` : ''}  (env SOAK_${envName(name)})`,
  );
  return `usage: node soak.mjs [--flag value ...]\n${lines.join('\n')}\n`;
}

function envName(name) {
  return name.toUpperCase().replaceAll('-', '_');
}

function parseOptions(argv) {
  const values = {};
  for (const [name, [def]] of Object.entries(OPTIONS)) {
    values[name] = process.env[`SOAK_${envName(name)}`] ?? def;
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '-h' || arg === '--help') {
      process.stdout.write(usage());
      process.exit(0);
    }
    const match = /^--([a-z-]+)(?:=(.*))?$/.exec(arg);
    if (!match || !(match[1] in OPTIONS)) {
      process.stderr.write(`unknown argument ${arg}\n${usage()}`);
      process.exit(2);
    }
    values[match[1]] = match[2] ?? argv[++i];
    if (values[match[1]] === undefined) {
      process.stderr.write(`--${match[1]} needs a value\n`);
      process.exit(2);
    }
  }
  const o = {
    durationMs: ms(values.duration),
    peers: int(values.peers, 'peers'),
    roomSize: int(values['room-size'], 'room-size'),
    lifetimeMinMs: ms(values['lifetime-min']),
    lifetimeMaxMs: ms(values['lifetime-max']),
    msgIntervalMs: ms(values['msg-interval']),
    abrupt: Number(values.abrupt),
    reconnectMaxMs: ms(values['reconnect-max']),
    sampleIntervalMs: ms(values['sample-interval']),
    settleTimeoutMs: ms(values['settle-timeout']),
    rssToleranceMiB: Number(values['rss-tolerance-mib']),
    rssTolerancePct: Number(values['rss-tolerance-pct']),
    driftToleranceMiB: Number(values['drift-tolerance-mib']),
    localAddrs: int(values['local-addrs'], 'local-addrs'),
    out: path.resolve(ROOT, values.out),
    svg: values.svg ? path.resolve(ROOT, values.svg) : null,
    maxErrors: int(values['max-errors'], 'max-errors'),
  };
  o.rampMs = values.ramp ? ms(values.ramp) : Math.max(1000, (o.peers / 500) * 1000);
  if (o.lifetimeMaxMs < o.lifetimeMinMs || !(o.abrupt >= 0 && o.abrupt <= 1) || o.localAddrs < 1) {
    process.stderr.write(`inconsistent options\n${usage()}`);
    process.exit(2);
  }
  return o;
}

function ms(text) {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(String(text).trim());
  if (!match) {
    process.stderr.write(`bad duration ${text}\n`);
    process.exit(2);
  }
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[match[2] ?? 's'];
  return Number(match[1]) * unit;
}

function int(text, name) {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) {
    process.stderr.write(`--${name} must be a positive integer\n`);
    process.exit(2);
  }
  return n;
}

const opts = parseOptions(process.argv.slice(2));
const COMMIT = gitDescribe();
const BIN = process.env.SWITCHBOARD_BIN
  ? path.resolve(process.env.SWITCHBOARD_BIN)
  : path.resolve(ROOT, 'target/release/switchboard');

const sleep = (t) => new Promise((resolve) => setTimeout(resolve, t));
const rand = (lo, hi) => lo + Math.random() * (hi - lo);
const log = (...args) => console.log(`[soak ${((Date.now() - T0) / 1000).toFixed(1).padStart(7)}s]`, ...args);
const T0 = Date.now();

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

const SERVER_ARGS = [
  'serve',
  '--listen', '127.0.0.1:0',
  '--log-format', 'json',
  // One machine's worth of clients comes from a handful of loopback addresses.
  '--max-connections-per-ip', '100000',
  '--max-connections', '100000',
  // Loose enough for the churn, not switched off: the limiter stays on the path.
  '--rate-limit-messages', '1000',
  '--rate-limit-bytes', '8388608',
];

async function startServer() {
  if (!fs.existsSync(BIN)) {
    throw new Error(`no server binary at ${BIN}: run \`cargo build --release --bin switchboard\` or set SWITCHBOARD_BIN`);
  }
  const child = spawn(BIN, SERVER_ARGS, { stdio: ['ignore', 'ignore', 'pipe'] });
  const server = { child, addr: null, tail: [], errorLines: [], exited: false, exit: null };
  child.on('exit', (code, signal) => {
    server.exited = true;
    server.exit = { code, signal };
  });
  const lines = readline.createInterface({ input: child.stderr });
  const listening = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('server did not start within 20s')), 20_000);
    child.on('exit', () => reject(new Error(`server exited at start: ${server.tail.join('\n')}`)));
    lines.on('line', (line) => {
      server.tail.push(line);
      if (server.tail.length > 200) server.tail.shift();
      let entry;
      try {
        entry = JSON.parse(line);
      } catch {
        return;
      }
      if (entry.fields?.message === 'listening' && !server.addr) {
        server.addr = entry.fields.addr;
        clearTimeout(timer);
        resolve();
      }
      if (entry.level === 'ERROR' || /panic/i.test(line)) server.errorLines.push(line);
    });
  });
  await listening;
  return server;
}

function httpGet(addr, pathname) {
  const [host, port] = splitAddr(addr);
  return new Promise((resolve, reject) => {
    const req = http.get(
      { host, port, path: pathname, agent: false, headers: { Connection: 'close' }, timeout: 10_000 },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode, body }));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`GET ${pathname} timed out`)));
    req.on('error', reject);
  });
}

function splitAddr(addr) {
  const i = addr.lastIndexOf(':');
  return [addr.slice(0, i), Number(addr.slice(i + 1))];
}

function metricValue(body, name) {
  for (const line of body.split('\n')) {
    if (line.startsWith(`${name} `)) return Number(line.slice(name.length + 1));
  }
  return NaN;
}

/** One sample of the server process and its gauges. */
async function sample(server) {
  const pid = server.child.pid;
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const rssKiB = Number(/VmRSS:\s+(\d+)/.exec(status)[1]);
  const fds = fs.readdirSync(`/proc/${pid}/fd`).length;
  const { body } = await httpGet(server.addr, '/metrics');
  return {
    t: (Date.now() - T0) / 1000,
    rssMiB: rssKiB / 1024,
    fds,
    tasks: metricValue(body, 'switchboard_tasks_alive'),
    peers: metricValue(body, 'switchboard_peers'),
    connections: metricValue(body, 'switchboard_connections{endpoint="signaling"}'),
    rooms: metricValue(body, 'switchboard_rooms'),
    clients: live.size,
    sent: stats.sent,
    delivered: stats.delivered,
    failures: failures.length,
  };
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------
//
// Ordering the checks rely on (docs/protocol.md, ARCHITECTURE.md):
//  - a peer's own replies (`joined`, `ack`, `error`, `left`) come through its
//    outbox in order with everything else it is sent;
//  - a room's events are queued under the room's lock, so a relay accepted
//    (acked) for T was queued before T's `left`, and a relay refused because T
//    left comes after the `peer-left` of T;
//  - relays from one sender arrive in the order they were sent.
// A logical clock (`tick`) orders the events this one process sees.

let clock = 0;
const tick = () => ++clock;
const failures = [];
const stats = { sent: 0, acked: 0, refused: 0, delivered: 0, sessions: 0, graceful: 0, abrupt: 0, joins: 0 };

function fail(what) {
  failures.push(what);
  if (failures.length <= 20) log(`CHECK FAILED: ${what}`);
  if (failures.length >= opts.maxErrors && !stopping) {
    log(`${failures.length} failed checks: stopping early`);
    stopChurn();
  }
}

/** Relays from one session to another: counts checked when both have ended. */
class Pair {
  constructor(sender, target) {
    this.sender = sender;
    this.target = target;
    this.sent = 0;
    this.acked = 0;
    this.refused = 0;
    this.firstRefused = 0;
    this.delivered = 0;
    this.openEnds = 2;
  }

  endOne() {
    if (--this.openEnds > 0) return;
    const { sender: s, target: t } = this;
    const name = `${s.id}→${t.id}`;
    if (s.graceful && this.acked + this.refused !== this.sent) {
      fail(`${name}: ${this.sent} sent but ${this.acked} acked + ${this.refused} refused`);
    }
    if (t.graceful) {
      // T read everything queued for it before its `left`.
      if (this.delivered < this.acked) fail(`${name}: ${this.acked} acked but only ${this.delivered} delivered`);
      if (s.graceful && this.delivered !== this.acked) {
        fail(`${name}: ${this.delivered} delivered but ${this.acked} acked`);
      }
    }
    if (this.delivered > this.sent - this.refused) {
      fail(`${name}: ${this.delivered} delivered, more than ${this.sent} sent less ${this.refused} refused`);
    }
  }
}

const sessionsById = new Map(); // peer id → Session, kept a while after it ends
const rooms = new Map(); // room name → Set<Session> that sent a join and have not ended
const live = new Set(); // sessions with an open socket
const KINDS = ['offer', 'answer', 'candidate', 'ice-candidate'];
const SDP = 'v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n';
let stopping = false;
let stopChurn = () => {};

const checkToken = (from, to, seq) => `${from.slice(0, 6)}${to.slice(0, 6)}${seq}`;

class Session {
  constructor(slot) {
    this.slot = slot;
    this.id = null;
    this.room = `room-${Math.floor(Math.random() * Math.max(1, Math.floor(opts.peers / opts.roomSize)))}`;
    this.state = 'connecting';
    this.mates = new Set();
    this.rid = 0;
    this.pending = new Map(); // rid → { pair, seq }
    this.outPairs = new Map(); // target id → Pair
    this.inPairs = new Map(); // sender id → Pair
    this.ended = false;
    this.graceful = false;
    this.joinSentAt = undefined;
    this.joinedAt = undefined;
    this.leaveSentAt = undefined;
    this.leftAt = undefined;
    this.droppedAt = undefined;
    this.timers = new Set();
    this.deadline = null;
    stats.sessions++;

    const localAddress = `127.0.0.${1 + (slot % opts.localAddrs)}`;
    this.ws = new WebSocket(`ws://${server.addr}/ws`, { localAddress, perMessageDeflate: false, handshakeTimeout: 30_000 });
    live.add(this);
    this.expect('welcome', 30_000);
    this.ws.on('message', (data, isBinary) => this.onMessage(data, isBinary));
    this.ws.on('close', (code, reason) => this.onClose(code, reason.toString()));
    this.ws.on('error', (err) => {
      if (this.state !== 'dropped') fail(`session ${this.slot}/${this.id}: socket error in state ${this.state}: ${err.message}`);
    });
  }

  later(ms, fn) {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      fn();
    }, ms);
    this.timers.add(timer);
  }

  /** Fails the run if the session is still waiting for `what` after `ms`. */
  expect(what, ms) {
    clearTimeout(this.deadline);
    this.deadline = setTimeout(() => {
      fail(`session ${this.slot}/${this.id}: no ${what} within ${ms} ms (state ${this.state})`);
      this.drop();
    }, ms);
  }

  send(message) {
    this.ws.send(JSON.stringify(message));
  }

  onMessage(data, isBinary) {
    if (isBinary) return fail(`${this.id}: binary frame from the server`);
    let m;
    try {
      m = JSON.parse(data.toString());
    } catch {
      return fail(`${this.id}: invalid JSON from the server: ${data.toString().slice(0, 100)}`);
    }
    if (this.state === 'dropped' || this.ended) return;
    const now = tick();
    switch (m.type) {
      case 'welcome':
        return this.onWelcome(m);
      case 'joined':
        return this.onJoined(m, now);
      case 'peer-joined':
        return this.onPeerJoined(m);
      case 'peer-left':
        return this.onPeerLeft(m);
      case 'ack':
        return this.onReply(m, null);
      case 'error':
        return this.onReply(m, m.code);
      case 'left':
        return this.onLeft(m, now);
      case 'offer':
      case 'answer':
      case 'candidate':
      case 'ice-candidate':
        return this.onRelay(m);
      default:
        return fail(`${this.id}: unexpected message ${JSON.stringify(m).slice(0, 200)}`);
    }
  }

  onWelcome(m) {
    if (this.state !== 'connecting') return fail(`${this.id}: welcome in state ${this.state}`);
    this.id = m.id;
    sessionsById.set(this.id, this);
    if (stopping) return this.leaveAndClose();
    this.state = 'joining';
    let members = rooms.get(this.room);
    if (!members) rooms.set(this.room, (members = new Set()));
    members.add(this);
    this.joinSentAt = tick();
    this.send({ type: 'join', room: this.room, meta: { slot: this.slot }, rid: 'join' });
    this.expect('joined', 30_000);
  }

  onJoined(m, now) {
    if (this.state !== 'joining' || m.rid !== 'join' || m.room !== this.room) {
      return fail(`${this.id}: unexpected joined ${JSON.stringify(m).slice(0, 200)} in state ${this.state}`);
    }
    clearTimeout(this.deadline);
    this.state = 'joined';
    this.joinedAt = now;
    stats.joins++;
    const listed = new Set();
    for (const peer of m.peers) {
      const other = sessionsById.get(peer.id);
      if (!other) {
        fail(`${this.id}: joined lists ${peer.id}, which no client of this run has (or it ended long ago)`);
        continue;
      }
      if (other.room !== this.room || other.joinSentAt === undefined) {
        fail(`${this.id}: joined lists ${peer.id}, which never asked to join ${this.room}`);
      }
      if (other.leftAt !== undefined && other.leftAt < this.joinSentAt) {
        fail(`${this.id}: joined lists ${peer.id}, which had left ${this.room} before this join was sent`);
      }
      if (peer.meta?.slot !== other.slot) fail(`${this.id}: joined shows the wrong meta for ${peer.id}`);
      listed.add(peer.id);
      this.mates.add(peer.id);
    }
    for (const other of rooms.get(this.room) ?? []) {
      const settledBefore = other.joinedAt !== undefined && other.joinedAt < this.joinSentAt;
      const stillThere = other.leaveSentAt === undefined && other.droppedAt === undefined;
      if (other !== this && settledBefore && stillThere && !listed.has(other.id)) {
        fail(`${this.id}: joined ${this.room} without ${other.id}, which was in it before and never left`);
      }
    }
    if (stopping) return this.leaveAndClose();
    this.later(rand(opts.lifetimeMinMs, opts.lifetimeMaxMs), () => this.finish());
    this.scheduleRelay();
  }

  onPeerJoined(m) {
    if (m.room !== this.room || this.joinedAt === undefined) {
      return fail(`${this.id}: peer-joined ${JSON.stringify(m)} before joining or for another room`);
    }
    const other = sessionsById.get(m.data);
    if (!other || other.room !== this.room || other.joinSentAt === undefined) {
      return fail(`${this.id}: peer-joined for ${m.data}, which never asked to join ${this.room}`);
    }
    if (this.mates.has(m.data)) return fail(`${this.id}: peer-joined twice for ${m.data}`);
    if (m.meta?.slot !== other.slot) fail(`${this.id}: peer-joined shows the wrong meta for ${m.data}`);
    this.mates.add(m.data);
  }

  onPeerLeft(m) {
    if (m.room !== this.room) return fail(`${this.id}: peer-left for another room: ${JSON.stringify(m)}`);
    if (!this.mates.delete(m.data)) return fail(`${this.id}: peer-left for ${m.data}, not a known member`);
    const other = sessionsById.get(m.data);
    if (other && other.leaveSentAt === undefined && other.droppedAt === undefined) {
      fail(`${this.id}: peer-left for ${m.data}, which neither left nor disconnected`);
    }
  }

  scheduleRelay() {
    this.later(rand(0.5, 1.5) * opts.msgIntervalMs, () => {
      if (this.state !== 'joined') return;
      if (this.mates.size > 0) this.relay();
      this.scheduleRelay();
    });
  }

  relay() {
    const mates = [...this.mates];
    const targetId = mates[Math.floor(Math.random() * mates.length)];
    let pair = this.outPairs.get(targetId);
    if (!pair) {
      const target = sessionsById.get(targetId);
      if (!target) return fail(`${this.id}: room mate ${targetId} is unknown to this run`);
      pair = new Pair(this, target);
      this.outPairs.set(targetId, pair);
      if (target.ended) pair.endOne();
      else target.inPairs.set(this.id, pair);
    }
    const seq = ++pair.sent;
    const kind = KINDS[seq % KINDS.length];
    const rid = ++this.rid;
    this.pending.set(rid, { pair, seq });
    const body = kind === 'offer' || kind === 'answer' ? { sdp: { type: kind, sdp: SDP } } : { candidate: { candidate: `candidate:${seq} 1 udp 2122260223 127.0.0.1 ${5000 + (seq % 1000)} typ host`, sdpMid: '0', sdpMLineIndex: 0 } };
    this.send({ type: kind, target: targetId, seq, check: checkToken(this.id, targetId, seq), rid, ...body });
    stats.sent++;
  }

  onReply(m, code) {
    const entry = this.pending.get(m.rid);
    if (!entry) return fail(`${this.id}: ${m.type} ${code ?? ''} with no request: ${JSON.stringify(m).slice(0, 200)}`);
    this.pending.delete(m.rid);
    const { pair, seq } = entry;
    if (code === null) {
      if (pair.refused > 0) fail(`${this.id}: relay ${seq} to ${pair.target.id} acked after an earlier one was refused`);
      pair.acked++;
      stats.acked++;
      return;
    }
    // The one legitimate refusal: the target left (or vanished) while this was
    // on its way. Its `peer-left` is queued before the refusal.
    const target = pair.target;
    if (code !== 'unknown-target' && code !== 'no-shared-room') {
      fail(`${this.id}: relay ${seq} to ${target.id} refused with ${code}: ${m.message}`);
    } else if (this.mates.has(target.id)) {
      fail(`${this.id}: relay to ${target.id} refused (${code}) before its peer-left`);
    } else if (target.leaveSentAt === undefined && target.droppedAt === undefined) {
      fail(`${this.id}: relay to ${target.id} refused (${code}) though it never left`);
    }
    pair.refused++;
    stats.refused++;
    if (pair.firstRefused === 0) pair.firstRefused = seq;
  }

  onRelay(m) {
    if (m.target !== this.id) return fail(`${this.id}: got a relay addressed to ${m.target}`);
    const pair = this.inPairs.get(m.from);
    if (!pair) return fail(`${this.id}: relay from ${m.from}, which never sent this peer anything`);
    if (!this.mates.has(m.from)) fail(`${this.id}: relay from ${m.from}, not (or no longer) a room mate`);
    if (m.seq !== pair.delivered + 1) {
      fail(`${this.id}: from ${m.from} got seq ${m.seq} after ${pair.delivered} (duplicate, loss or reorder)`);
    }
    if (m.seq > pair.sent || m.check !== checkToken(m.from, this.id, m.seq) || m.type !== KINDS[m.seq % KINDS.length]) {
      fail(`${this.id}: relay from ${m.from} does not match what was sent: ${JSON.stringify(m).slice(0, 200)}`);
    }
    pair.delivered = Math.max(pair.delivered, m.seq);
    stats.delivered++;
  }

  /** The session's time is up: leave gracefully, or vanish. */
  finish() {
    if (this.state !== 'joined') return;
    if (!stopping && Math.random() < opts.abrupt) return this.drop();
    this.leaveAndClose();
  }

  leaveAndClose() {
    if (this.state === 'joined') {
      this.state = 'leaving';
      this.leaveSentAt = tick();
      this.send({ type: 'leave', rid: 'leave' });
      this.expect('left', 30_000);
    } else {
      // Stopping before the join: just close.
      this.state = 'closing';
      this.graceful = true;
      this.leaveSentAt = tick();
      this.ws.close(1000);
      this.expect('close', 30_000);
    }
  }

  onLeft(m, now) {
    if (this.state !== 'leaving' || m.rid !== 'leave') return fail(`${this.id}: unexpected left in state ${this.state}`);
    if (m.rooms.length !== 1 || m.rooms[0] !== this.room) fail(`${this.id}: left ${JSON.stringify(m.rooms)}, expected [${this.room}]`);
    this.leftAt = now;
    if (this.pending.size > 0) fail(`${this.id}: ${this.pending.size} relays unanswered at its left`);
    for (const mate of this.mates) {
      const other = sessionsById.get(mate);
      if (other?.leftAt !== undefined && other.leftAt < this.leaveSentAt) {
        fail(`${this.id}: ${mate} left before this peer did, yet no peer-left came`);
      }
    }
    this.state = 'closing';
    this.graceful = true;
    this.ws.close(1000);
    this.expect('close', 30_000);
  }

  /** Vanishes: the socket is destroyed, with no leave and no close frame. */
  drop() {
    this.state = 'dropped';
    this.droppedAt = tick();
    this.ws.terminate();
    stats.abrupt++;
    this.end();
  }

  onClose(code, reason) {
    if (this.state === 'dropped') return;
    if (this.state !== 'closing') {
      fail(`session ${this.slot}/${this.id}: the server closed it (${code} ${reason}) in state ${this.state}`);
    } else if (code !== 1000) {
      fail(`${this.id}: closed with ${code} ${reason}, expected 1000`);
    }
    if (this.state === 'closing') stats.graceful++;
    this.end();
  }

  end() {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.deadline);
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    live.delete(this);
    rooms.get(this.room)?.delete(this);
    if (rooms.get(this.room)?.size === 0) rooms.delete(this.room);
    for (const pair of this.outPairs.values()) pair.endOne();
    for (const pair of this.inPairs.values()) pair.endOne();
    this.outPairs.clear();
    this.inPairs.clear();
    // Others may still name this id (a late `joined` list); forget it later.
    if (this.id) setTimeout(() => sessionsById.delete(this.id), 120_000).unref();
    if (!stopping) {
      setTimeout(() => {
        if (!stopping) slots[this.slot] = new Session(this.slot);
      }, rand(0, opts.reconnectMaxMs));
    }
  }
}

// ---------------------------------------------------------------------------
// Chart
// ---------------------------------------------------------------------------

function svgChart(samples, marks, title, subtitle) {
  const series = [
    ['rssMiB', 'server RSS (MiB)', '#c0392b'],
    ['fds', 'server open fds', '#2471a3'],
    ['tasks', 'tokio tasks alive', '#7d3c98'],
    ['peers', 'signaling peers', '#1e8449'],
  ];
  const W = 960, left = 70, right = 20, panelH = 150, gap = 34, top = 64;
  const H = top + series.length * (panelH + gap) + 20;
  const t0 = samples[0]?.t ?? 0;
  const t1 = Math.max(t0 + 1, samples.at(-1)?.t ?? 1);
  const x = (t) => left + ((t - t0) / (t1 - t0)) * (W - left - right);
  const esc = (s) => String(s).replace(/[&<>]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;' })[c]);
  const fmt = (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(1));
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
    `<text x="${left}" y="24" font-size="16" font-weight="bold">${esc(title)}</text>`,
    `<text x="${left}" y="44" fill="#555">${esc(subtitle)}</text>`,
  ];
  series.forEach(([key, label, color], i) => {
    const y0 = top + i * (panelH + gap);
    const values = samples.map((s) => s[key]).filter(Number.isFinite);
    const max = Math.max(1, ...values) * 1.05;
    const y = (v) => y0 + panelH - (v / max) * panelH;
    parts.push(`<rect x="${left}" y="${y0}" width="${W - left - right}" height="${panelH}" fill="#fafafa" stroke="#ccc"/>`);
    for (const frac of [0, 0.5, 1]) {
      const v = max * frac;
      parts.push(`<line x1="${left}" x2="${W - right}" y1="${y(v)}" y2="${y(v)}" stroke="#e5e5e5"/>`);
      parts.push(`<text x="${left - 6}" y="${y(v) + 4}" text-anchor="end" fill="#555">${fmt(v)}</text>`);
    }
    marks.forEach(([t, name], k) => {
      parts.push(`<line x1="${x(t)}" x2="${x(t)}" y1="${y0}" y2="${y0 + panelH}" stroke="#999" stroke-dasharray="4 3"/>`);
      // Labels right of their line, or left of it near the right edge; one row each.
      const anchor = x(t) > W - right - 80 ? 'end' : 'start';
      const dx = anchor === 'end' ? -3 : 3;
      if (i === 0) parts.push(`<text x="${x(t) + dx}" y="${y0 + 12 + 13 * k}" text-anchor="${anchor}" fill="#777">${esc(name)}</text>`);
    });
    const points = samples.filter((s) => Number.isFinite(s[key])).map((s) => `${x(s.t).toFixed(1)},${y(s[key]).toFixed(1)}`);
    parts.push(`<polyline fill="none" stroke="${color}" stroke-width="1.5" points="${points.join(' ')}"/>`);
    parts.push(`<text x="${left + 6}" y="${y0 - 6}" font-weight="bold" fill="${color}">${esc(label)}</text>`);
    const last = values.at(-1);
    if (last !== undefined) parts.push(`<text x="${W - right}" y="${y0 - 6}" text-anchor="end" fill="#555">first ${fmt(values[0])}, peak ${fmt(Math.max(...values))}, last ${fmt(last)}</text>`);
  });
  const yAxis = H - 14;
  for (let k = 0; k <= 6; k++) {
    const t = t0 + ((t1 - t0) * k) / 6;
    const label = t1 - t0 > 600 ? `${((t - t0) / 60).toFixed(0)} min` : `${(t - t0).toFixed(0)} s`;
    parts.push(`<text x="${x(t)}" y="${yAxis}" text-anchor="middle" fill="#555">${label}</text>`);
  }
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

let server;
const slots = [];

async function main() {
  log(`peers ${opts.peers}, duration ${opts.durationMs / 1000}s, binary ${BIN}`);
  server = await startServer();
  log(`server pid ${server.child.pid} on ${server.addr}`);
  const samples = [];
  const marks = [];
  await sleep(500);
  // Baseline: a few samples with no client; the last one counts.
  let baseline;
  for (let i = 0; i < 3; i++) {
    baseline = await sample(server);
    samples.push(baseline);
    await sleep(300);
  }
  log(`baseline: RSS ${baseline.rssMiB.toFixed(1)} MiB, fds ${baseline.fds}, tasks ${baseline.tasks}`);

  const sampler = setInterval(async () => {
    if (server.exited) return;
    try {
      const s = await sample(server);
      samples.push(s);
      log(`RSS ${s.rssMiB.toFixed(1)} MiB, fds ${s.fds}, tasks ${s.tasks}, peers ${s.peers}, clients ${s.clients}, sent ${s.sent}, delivered ${s.delivered}, failed checks ${failures.length}`);
    } catch (err) {
      fail(`sampling the server: ${err.message}`);
    }
  }, opts.sampleIntervalMs);

  // Ramp up, then churn until the time is up (or too many checks failed).
  marks.push([(Date.now() - T0) / 1000, 'start']);
  const churnStart = Date.now();
  const churnStartT = (churnStart - T0) / 1000;
  let stopResolve;
  const stopped = new Promise((resolve) => (stopResolve = resolve));
  const churnTimer = setTimeout(() => stopChurn(), opts.durationMs);
  stopChurn = () => {
    if (stopping) return;
    stopping = true;
    clearTimeout(churnTimer);
    stopResolve();
  };
  for (let slot = 0; slot < opts.peers && !stopping; slot++) {
    slots[slot] = new Session(slot);
    if (slot % 50 === 49) await sleep((opts.rampMs * 50) / opts.peers);
  }
  const crashWatch = setInterval(() => {
    if (server.exited) {
      fail(`server exited during the run: ${JSON.stringify(server.exit)}`);
      stopChurn();
    }
  }, 200);
  await stopped;
  const churnSeconds = (Date.now() - churnStart) / 1000;
  const churnEndT = (Date.now() - T0) / 1000;
  marks.push([churnEndT, 'stop']);
  log(`stopping: ${live.size} clients leave and disconnect`);

  // Everyone leaves and closes; nobody reconnects.
  for (const session of [...live]) {
    if (session.state === 'joined') session.leaveAndClose();
  }
  const closeDeadline = Date.now() + 60_000;
  while (live.size > 0 && Date.now() < closeDeadline) await sleep(100);
  if (live.size > 0) {
    fail(`${live.size} clients did not finish closing within 60s`);
    for (const session of [...live]) session.drop();
  }
  marks.push([(Date.now() - T0) / 1000, 'all closed']);
  log('all clients gone; waiting for the server to settle');

  // Settle: fds and tasks back to the baseline exactly, no peers, no connections,
  // and memory handed back (the allocator returns freed pages within seconds).
  let final;
  const settleDeadline = Date.now() + opts.settleTimeoutMs;
  const peakRss = samples.reduce((max, s) => Math.max(max, s.rssMiB), 0);
  const rssLimit =
    baseline.rssMiB + Math.max(opts.rssToleranceMiB, ((peakRss - baseline.rssMiB) * opts.rssTolerancePct) / 100);
  for (;;) {
    if (server.exited) break;
    final = await sample(server);
    samples.push(final);
    const settled =
      final.fds === baseline.fds &&
      final.tasks === baseline.tasks &&
      final.peers === 0 &&
      final.connections === 0 &&
      final.rssMiB <= rssLimit;
    if (settled || Date.now() > settleDeadline) break;
    await sleep(1000);
  }
  clearInterval(sampler);
  clearInterval(crashWatch);

  const peak = samples.reduce(
    (acc, s) => ({
      rssMiB: Math.max(acc.rssMiB, s.rssMiB),
      fds: Math.max(acc.fds, s.fds),
      tasks: Math.max(acc.tasks, s.tasks),
      peers: Math.max(acc.peers, s.peers),
    }),
    { rssMiB: 0, fds: 0, tasks: 0, peers: 0 },
  );
  // Drift: RSS at the end of the churn against RSS once warmed up (all peers
  // connected and a quarter of the run gone). Memory that is merely kept by
  // the allocator stays flat; a leak keeps growing.
  const warmT = churnStartT + Math.max(opts.rampMs / 1000 + 5, churnSeconds / 4);
  const during = samples.filter((s) => s.t >= warmT && s.t <= churnEndT);
  const drift = during.length >= 2 ? { fromT: during[0].t, fromMiB: during[0].rssMiB, toMiB: during.at(-1).rssMiB, maxMiB: Math.max(...during.map((s) => s.rssMiB)) } : null;
  const rssAllowance = Math.max(opts.rssToleranceMiB, ((peak.rssMiB - baseline.rssMiB) * opts.rssTolerancePct) / 100);
  const verdicts = [];
  if (server.exited) {
    verdicts.push(`server exited during the run: ${JSON.stringify(server.exit)}`);
  } else {
    if (final.fds !== baseline.fds) verdicts.push(`open fds ${final.fds}, baseline ${baseline.fds}`);
    if (final.tasks !== baseline.tasks) verdicts.push(`tasks alive ${final.tasks}, baseline ${baseline.tasks}`);
    if (final.peers !== 0) verdicts.push(`switchboard_peers ${final.peers} with no client connected`);
    if (final.connections !== 0) verdicts.push(`switchboard_connections ${final.connections} with no client connected`);
    if (final.rssMiB > baseline.rssMiB + rssAllowance) {
      verdicts.push(`RSS ${final.rssMiB.toFixed(1)} MiB, more than baseline ${baseline.rssMiB.toFixed(1)} + ${rssAllowance.toFixed(1)} MiB`);
    }
  }
  if (drift && drift.maxMiB > drift.fromMiB + opts.driftToleranceMiB) {
    verdicts.push(`RSS grew during the churn from ${drift.fromMiB.toFixed(1)} MiB (at ${drift.fromT.toFixed(0)} s) to ${drift.maxMiB.toFixed(1)} MiB, more than ${opts.driftToleranceMiB} MiB`);
  }
  if (server.errorLines.length > 0) verdicts.push(`${server.errorLines.length} ERROR/panic lines in the server log, first: ${server.errorLines[0]}`);
  if (failures.length > 0) verdicts.push(`${failures.length} correctness checks failed, first: ${failures[0]}`);
  if (stats.joins === 0 || stats.delivered === 0) verdicts.push('nothing happened: no joins or no deliveries');

  // Stop the server.
  if (!server.exited) {
    server.child.kill('SIGTERM');
    const exited = await Promise.race([new Promise((r) => server.child.once('exit', () => r(true))), sleep(15_000).then(() => false)]);
    if (!exited && !server.exited) {
      server.child.kill('SIGKILL');
      verdicts.push('server did not exit within 15s of SIGTERM');
    }
  }

  const ok = verdicts.length === 0;
  const summary = {
    date: new Date().toISOString(),
    machine: `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, ${os.type()} ${os.release()}`,
    binary: BIN,
    commit: COMMIT,
    serverArgs: SERVER_ARGS,
    options: { ...opts, out: undefined, svg: undefined },
    churnSeconds,
    stats,
    baseline,
    peak,
    final,
    rssAllowanceMiB: rssAllowance,
    drift,
    failures: failures.slice(0, 100),
    failureCount: failures.length,
    verdicts,
    ok,
  };
  fs.mkdirSync(opts.out, { recursive: true });
  const columns = ['t', 'rssMiB', 'fds', 'tasks', 'peers', 'connections', 'rooms', 'clients', 'sent', 'delivered', 'failures'];
  const csv = [
    'elapsed_s,rss_mib,fds,tasks_alive,peers,connections,rooms,client_sockets,relays_sent,relays_delivered,failed_checks',
    ...samples.map((s) => columns.map((c) => (c === 't' || c === 'rssMiB' ? s[c].toFixed(2) : s[c])).join(',')),
  ].join('\n');
  fs.writeFileSync(path.join(opts.out, 'samples.csv'), csv + '\n');
  fs.writeFileSync(path.join(opts.out, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
  const title = `Switchboard soak: ${opts.peers} churning peers for ${formatDuration(churnSeconds)} — ${ok ? 'PASS' : 'FAIL'}`;
  const subtitle = `${stats.sessions} sessions, ${stats.sent} relays sent, ${stats.delivered} delivered; RSS baseline ${baseline.rssMiB.toFixed(1)} → peak ${peak.rssMiB.toFixed(1)} → final ${final?.rssMiB.toFixed(1)} MiB; fds ${baseline.fds} → ${peak.fds} → ${final?.fds}; tasks ${baseline.tasks} → ${peak.tasks} → ${final?.tasks}`;
  const svg = svgChart(samples, marks, title, subtitle);
  fs.writeFileSync(path.join(opts.out, 'chart.svg'), svg);
  if (opts.svg) fs.writeFileSync(opts.svg, svg);

  log(`sessions ${stats.sessions} (${stats.graceful} closed gracefully, ${stats.abrupt} dropped), joins ${stats.joins}`);
  log(`relays: ${stats.sent} sent, ${stats.acked} acked, ${stats.refused} refused (target already gone), ${stats.delivered} delivered`);
  log(`baseline: RSS ${baseline.rssMiB.toFixed(1)} MiB, fds ${baseline.fds}, tasks ${baseline.tasks}`);
  log(`peak:     RSS ${peak.rssMiB.toFixed(1)} MiB, fds ${peak.fds}, tasks ${peak.tasks}, peers ${peak.peers}`);
  if (drift) log(`drift:    RSS ${drift.fromMiB.toFixed(1)} MiB after warm-up (${drift.fromT.toFixed(0)} s), ${drift.maxMiB.toFixed(1)} MiB at most until the stop (allowed +${opts.driftToleranceMiB})`);
  if (final) log(`final:    RSS ${final.rssMiB.toFixed(1)} MiB (allowed ${(baseline.rssMiB + rssAllowance).toFixed(1)}), fds ${final.fds}, tasks ${final.tasks}, peers ${final.peers}`);
  log(`outputs in ${opts.out}`);
  if (ok) {
    log('PASS');
  } else {
    for (const verdict of verdicts) log(`FAIL: ${verdict}`);
  }
  process.exit(ok ? 0 : 1);
}

function gitDescribe() {
  const head = spawnSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' });
  const dirty = spawnSync('git', ['-C', ROOT, 'status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8' });
  if (head.status !== 0) return null;
  return `${head.stdout.trim()}${dirty.stdout.trim() ? ' (with uncommitted changes)' : ''}`;
}

function formatDuration(seconds) {
  return seconds >= 120 ? `${(seconds / 60).toFixed(0)} min` : `${seconds.toFixed(0)} s`;
}

main().catch((err) => {
  console.error(err);
  server?.child.kill('SIGKILL');
  process.exit(1);
});
