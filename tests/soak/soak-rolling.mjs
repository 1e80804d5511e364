#!/usr/bin/env node
// Switchboard soak test, cluster variant: N nodes (default 3) sharing rooms over
// one redis-server it starts itself, and a rolling restart: every
// --restart-every one node in turn gets SIGTERM (the nodes run with
// --shutdown-close-code 1012 --shutdown-delay 0s --resume-grace 15s
// --node-ttl 1s --redis-timeout 500ms), exits, and starts again on its port.
// Clients connect with /ws?resume; on close 1012 they reconnect to the next node
// that is up with /ws?resume=TOKEN and must get resumed:true, the same id and
// rooms, and every relay sent to them while they were away, once, in order.
// The checks of soak.mjs hold across handovers (a handed-over peer is never
// peer-left); abrupt drops are left to expire (peer-left after the grace, not
// before). Before a SIGTERM the clients of that node finish what they have in
// flight (no relay, join or leave waiting for its reply; at most --quiesce-max):
// what a client sends into a dying socket is not the server's to deliver.
// At the end every node (each against the baseline taken when it last started)
// has its fds and tasks back exactly, no peers, RSS within the tolerance.
//
//   node soak-rolling.mjs                      # 2,000 peers, 10 min, restart every minute
//   node soak-rolling.mjs --peers 300 --duration 40s --restart-every 10s   # the short run for CI
//
// Outputs (--out, default test-artifacts/soak-rolling): summary.json,
// samples.csv (one row per node and sample), chart-nodeN.svg, nodeN.log.
// Exit status: 0 when every check passed, 1 otherwise, 2 on bad usage.
// More in docs/soak.md, "Three nodes, rolling restart every minute".

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
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
  duration: ['10m', 'how long the churn runs (e.g. 30s, 5m, 1h)'],
  peers: ['2000', 'concurrent peers (one WebSocket each)'],
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
  out: ['test-artifacts/soak-rolling', 'directory for samples.csv, chart.svg, summary.json (relative to the repo root)'],
  svg: ['', 'also write the chart to this path (relative to the repo root)'],
  'max-errors': ['50', 'stop early after this many failed checks'],
  nodes: ['3', 'server nodes sharing one redis-server'],
  'restart-every': ['1m', 'SIGTERM one node (in turn) and start it again on its port this often'],
  'quiesce-max': ['5s', 'before a SIGTERM, how long its clients may take to finish what they sent'],
  'redis-server': ['/usr/bin/redis-server', 'the redis-server binary'],
};

function usage() {
  const lines = Object.entries(OPTIONS).map(
    ([name, [def, help]]) => `  --${name.padEnd(18)} ${help}${def ? ` [${def}]` : ''}  (env SOAK_${envName(name)})`,
  );
  return `usage: node soak-rolling.mjs [--flag value ...]\n${lines.join('\n')}\n`;
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
    nodes: int(values.nodes, 'nodes'),
    restartEveryMs: ms(values['restart-every']),
    quiesceMaxMs: ms(values['quiesce-max']),
    redisServer: values['redis-server'],
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
  // The rolling restart: hand sessions over and tell clients to come back.
  '--shutdown-close-code', '1012',
  '--shutdown-delay', '0s',
  '--resume-grace', '15s',
  '--node-ttl', '1s',
  '--redis-timeout', '500ms',
];
const GRACE_MS = 15_000;

async function startServer(node) {
  if (!fs.existsSync(BIN)) {
    throw new Error(`no server binary at ${BIN}: run \`cargo build --release --bin switchboard\` or set SWITCHBOARD_BIN`);
  }
  const args = [...SERVER_ARGS, '--redis', `redis://127.0.0.1:${redisPort}`];
  args[args.indexOf('--listen') + 1] = `127.0.0.1:${node.port}`;
  const child = spawn(BIN, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const server = node;
  Object.assign(node, { child, addr: null, exited: false, exit: null, state: 'starting', startedAt: Date.now() });
  node.tail ??= [];
  node.errorLines ??= [];
  node.warnLines ??= [];
  node.logFile ??= [];
  child.once('exit', (code, signal) => {
    server.exited = true;
    server.exit = { code, signal };
  });
  const lines = readline.createInterface({ input: child.stderr });
  const listening = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('server did not start within 20s')), 20_000);
    child.once('exit', () => reject(new Error(`server exited at start: ${server.tail.join('\n')}`)));
    lines.on('line', (line) => {
      server.tail.push(line);
      if (server.tail.length > 200) server.tail.shift();
      server.logFile.push(`${new Date().toISOString()} pid ${child.pid} ${line}`);
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
      if (entry.level === 'ERROR' || /panic/i.test(line)) server.errorLines.push(`node ${node.index} pid ${child.pid}: ${line}`);
      else if (entry.level === 'WARN') server.warnLines.push(`node ${node.index} pid ${child.pid}: ${line}`);
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
    node: server.index,
    clients: [...live].filter((x) => x.node === server).length,
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
const stats = { sent: 0, acked: 0, refused: 0, delivered: 0, sessions: 0, graceful: 0, abrupt: 0, joins: 0, handovers: 0, resumed: 0, expired: 0, restarts: 0, unquiet: 0 };

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
    this.lost = new Set(); // seqs acked and then refused: they may never arrive
    this.count = 0; // relays delivered (`delivered` is the highest seq delivered)
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
      if (this.count < this.acked) fail(`${name}: ${this.acked} acked but only ${this.count} delivered`);
      if (s.graceful && this.count !== this.acked) {
        fail(`${name}: ${this.count} delivered but ${this.acked} acked`);
      }
    }
    if (this.count > this.sent - this.refused) {
      fail(`${name}: ${this.count} delivered, more than ${this.sent} sent less ${this.refused} refused`);
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

    this.token = null;
    this.handovers = 0;
    this.resumeState = null;
    live.add(this);
    this.connect(pickNode(slot), '/ws?resume');
  }

  connect(node, pathname) {
    const localAddress = `127.0.0.${1 + (this.slot % opts.localAddrs)}`;
    this.node = node;
    const ws = new WebSocket(`ws://${node.addr}${pathname}`, { localAddress, perMessageDeflate: false, handshakeTimeout: 30_000 });
    this.ws = ws;
    this.expect('welcome', 30_000);
    ws.on('message', (data, isBinary) => ws === this.ws && this.onMessage(data, isBinary));
    ws.on('close', (code, reason) => ws === this.ws && this.onClose(code, reason.toString()));
    ws.on('error', (err) => {
      if (ws === this.ws && this.state !== 'dropped') fail(`session ${this.slot}/${this.id} on node ${node.index}: socket error in state ${this.state}: ${err.message}`);
    });
  }

  /** Quiet: nothing sent that still waits for its reply (before its node gets SIGTERM). */
  quiet() {
    return this.ended || (this.pending.size === 0 && (this.state === 'joined' || this.state === 'handover'));
  }

  /** Close 1012: the node is restarting; resume on the next node that is up. */
  handOver(code) {
    if (!this.quiet()) {
      stats.unquiet++;
      fail(`${this.id}: close ${code} from node ${this.node.index} in state ${this.state} with ${this.pending.size} relays unanswered`);
    }
    this.resumeState = this.state;
    this.state = 'handover';
    this.handedOverAt = tick();
    this.handedOverMs = Date.now();
    this.handovers++;
    stats.handovers++;
    const from = this.node;
    this.connect(pickNode(from.index + 1, from), `/ws?resume=${encodeURIComponent(this.token)}`);
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
    if (this.state === 'handover') {
      clearTimeout(this.deadline);
      if (m.resumed !== true || m.id !== this.id) {
        return fail(`${this.id}: resume on node ${this.node.index} gave ${JSON.stringify(m).slice(0, 200)}, expected resumed:true with the same id`);
      }
      const rooms = JSON.stringify(m.rooms ?? []);
      const want = JSON.stringify(this.joinedAt !== undefined ? [this.room] : []);
      if (rooms !== want) fail(`${this.id}: resumed with rooms ${rooms}, expected ${want}`);
      if (typeof m.resume !== 'string' || m.resume === this.token) fail(`${this.id}: resumed without a fresh token`);
      this.token = m.resume;
      stats.resumed++;
      this.resumedMs = Date.now();
      this.state = this.resumeState;
      return;
    }
    if (this.state !== 'connecting') return fail(`${this.id}: welcome in state ${this.state}`);
    if (m.resumed !== false || typeof m.resume !== 'string') fail(`${m.id}: first welcome is not a resumable fresh session: ${JSON.stringify(m).slice(0, 200)}`);
    this.token = m.resume;
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
    if (!this.mates.delete(m.data)) {
      const o = sessionsById.get(m.data);
      const seen = (this.formerMates ??= new Set()).has(m.data) ? 'a second peer-left (it had one already)' : 'never listed in joined nor announced by peer-joined';
      return fail(`${this.id} (node ${this.node.index}, joined at tick ${this.joinedAt}, join sent ${this.joinSentAt}, handed over ${this.handovers}×): peer-left for ${m.data}, not a known member: ${seen}; that peer: ${o ? `state ${o.state}, join sent ${o.joinSentAt}, joined ${o.joinedAt}, leave sent ${o.leaveSentAt}, dropped ${o.droppedAt}, node ${o.node?.index}, handed over ${o.handovers}×` : 'unknown'}; now tick ${clock}`);
    }
    (this.formerMates ??= new Set()).add(m.data);
    (this.leftSeenMs ??= new Map()).set(m.data, Date.now());
    const other = sessionsById.get(m.data);
    if (other && other.leaveSentAt === undefined && other.droppedAt === undefined) {
      fail(`${this.id}: peer-left for ${m.data}, which neither left nor disconnected (handed over ${other.handovers} times, on node ${other.node?.index}, state ${other.state})`);
    }
    // A resumable peer that vanished stays for the grace period, then expires.
    if (other?.droppedAt !== undefined && other.leaveSentAt === undefined) {
      const after = Date.now() - other.droppedMs;
      if (after < GRACE_MS - 1000) fail(`${this.id}: peer-left for ${m.data} ${after} ms after it vanished, before the ${GRACE_MS} ms grace`);
      if (!other.expiredSeen) {
        other.expiredSeen = true;
        stats.expired++;
      }
    }
  }

  scheduleRelay() {
    this.later(rand(0.5, 1.5) * opts.msgIntervalMs, () => {
      if (this.state === 'handover' || (this.state === 'joined' && this.node.state !== 'up')) return this.scheduleRelay();
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
    // Over Redis an accepted relay can still be refused later with unknown-target
    // when its target left before it got there (docs/protocol.md): allowed only
    // for a target that did leave or vanish; a handed-over target never left.
    if (code !== null && !this.pending.has(m.rid) && this.ackedRids?.has(m.rid)) {
      const { pair, seq } = this.ackedRids.get(m.rid);
      this.ackedRids.delete(m.rid);
      const t = pair.target;
      stats.lateRefused = (stats.lateRefused ?? 0) + 1;
      if (pair.delivered >= seq) {
        stats.refusedButDelivered = (stats.refusedButDelivered ?? 0) + 1;
        return fail(`${this.id} (node ${this.node.index}): relay seq ${seq} to ${t.id} acked, delivered, then refused ${code} "${m.message}" (${t.id}: state ${t.state}, node ${t.node?.index}, handed over ${t.handovers}×, last ${Date.now() - t.handedOverMs} ms ago, resumed ${Date.now() - t.resumedMs} ms ago)`);
      }
      pair.lost.add(seq);
      pair.acked--;
      pair.refused++;
      if (code !== 'unknown-target' || (t.leaveSentAt === undefined && t.droppedAt === undefined)) {
        stats.lostInHandover = (stats.lostInHandover ?? 0) + 1;
        fail(`${this.id} (node ${this.node.index}): relay seq ${seq} to ${t.id} acked, then refused ${code} "${m.message}", but ${t.id} never left (state ${t.state}, node ${t.node?.index}, handed over ${t.handovers}×, last ${Date.now() - t.handedOverMs} ms ago, resumed ${Date.now() - t.resumedMs} ms ago; its node's restarts: ${JSON.stringify(t.node?.restarts.at(-1))})`);
      }
      return;
    }
    const entry = this.pending.get(m.rid);
    if (!entry) return fail(`${this.id}: ${m.type} ${code ?? ''} with no request: ${JSON.stringify(m).slice(0, 200)}`);
    this.pending.delete(m.rid);
    const { pair, seq } = entry;
    if (code === null) {
      if (pair.firstRefused > 0) fail(`${this.id}: relay ${seq} to ${pair.target.id} acked after an earlier one was refused`);
      pair.acked++;
      stats.acked++;
      (this.ackedRids ??= new Map()).set(m.rid, entry);
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
    if (!this.mates.has(m.from)) {
      // Across nodes, room events (the room's channel) and relays (the target
      // node's channel) are not ordered with each other (docs/deploy.md): a new
      // member's first relay may come before its peer-joined. Allowed only for a sender
      // that asked to join this very room and has not been announced gone here.
      const o = sessionsById.get(m.from);
      const gone = this.formerMates?.has(m.from);
      if (o && o.room === this.room && o.joinSentAt !== undefined && !gone) {
        stats.relayBeforePeerJoined = (stats.relayBeforePeerJoined ?? 0) + 1;
      } else {
        const now = Date.now();
        const ago = (ms) => (ms === undefined ? 'never' : `${now - ms} ms ago`);
        const where = gone
          ? `; this peer: node ${this.node.index}, handed over ${this.handovers}× (last ${ago(this.handedOverMs)}, resumed ${ago(this.resumedMs)}), peer-left came ${ago(this.leftSeenMs?.get(m.from))}; sender: node ${o?.node?.index}, handed over ${o?.handovers}× (last ${ago(o?.handedOverMs)}), leave sent ${ago(o?.leaveSentMs)}, dropped ${ago(o?.droppedMs)}; at t=${(now - T0) / 1000} s, restarts: ${JSON.stringify(this.node.restarts.at(-1))} / ${JSON.stringify(o?.node?.restarts.at(-1))}`
          : '';
        fail(`${this.id}: relay from ${m.from}, not (or no longer) a room mate${gone ? ' (its peer-left came already)' : ''}${where}`);
      }
    }
    let skipped = true;
    for (let k = pair.delivered + 1; k < m.seq; k++) skipped &&= pair.lost.has(k);
    if (m.seq <= pair.delivered || !skipped) {
      fail(`${this.id}: from ${m.from} got seq ${m.seq} after ${pair.delivered} (duplicate, loss or reorder)`);
    }
    if (m.seq > pair.sent || m.check !== checkToken(m.from, this.id, m.seq) || m.type !== KINDS[m.seq % KINDS.length]) {
      fail(`${this.id}: relay from ${m.from} does not match what was sent: ${JSON.stringify(m).slice(0, 200)}`);
    }
    if (pair.lost.has(m.seq)) {
      // Refused to its sender after its ack, and delivered all the same.
      pair.lost.delete(m.seq);
      pair.acked++;
      pair.refused--;
      stats.refusedButDelivered = (stats.refusedButDelivered ?? 0) + 1;
      fail(`${this.id} (node ${this.node.index}, handed over ${this.handovers}×, last ${Date.now() - this.handedOverMs} ms ago): got seq ${m.seq} from ${m.from}, which its sender was told had not reached this peer (unknown-target)`);
    }
    pair.delivered = Math.max(pair.delivered, m.seq);
    pair.count++;
    stats.delivered++;
  }

  /** The session's time is up: leave gracefully, or vanish. */
  finish() {
    if (this.state === 'handover' || (this.state === 'joined' && this.node.state !== 'up')) return this.later(500, () => this.finish());
    if (this.state !== 'joined') return;
    if (!stopping && Math.random() < opts.abrupt) return this.drop();
    this.leaveAndClose();
  }

  leaveAndClose() {
    if (this.state === 'joined') {
      this.state = 'leaving';
      this.leaveSentAt = tick();
      this.leaveSentMs = Date.now();
      this.send({ type: 'leave', rid: 'leave' });
      this.expect('left', 30_000);
    } else {
      // Stopping before the join: just close.
      this.state = 'closing';
      this.graceful = true;
      this.leaveSentAt = tick();
      this.leaveSentMs = Date.now();
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
    this.droppedMs = Date.now();
    this.ws.terminate();
    stats.abrupt++;
    this.end();
  }

  onClose(code, reason) {
    if (this.state === 'dropped') return;
    if (code === 1012 && this.state !== 'closing') return this.handOver(code);
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

const nodes = []; // { index, port, child, addr, state: 'starting' | 'up' | 'quiescing' | 'down', baseline, samples, ... }
const slots = [];
let redis = null;
let redisPort = 0;

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** The first node that is up, starting from index `from` (round robin), never `not`. */
function pickNode(from, not = null) {
  for (let k = 0; k < nodes.length; k++) {
    const node = nodes[(from + k) % nodes.length];
    if (node.state === 'up' && node !== not) return node;
  }
  throw new Error('no node is up');
}

async function startRedis() {
  redisPort = await freePort();
  const child = spawn(opts.redisServer, ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
  redis = { child, exited: false };
  child.on('exit', (code, signal) => Object.assign(redis, { exited: true, exit: { code, signal } }));
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise((resolve) => {
      const c = net.connect(redisPort, '127.0.0.1', () => { c.end(); resolve(true); });
      c.on('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(100);
  }
  throw new Error('redis-server did not start');
}

/** Baseline of a node with no client: a few samples, the last one counts. */
async function takeBaseline(node) {
  await sleep(500);
  let b;
  for (let i = 0; i < 3; i++) {
    b = await sample(node);
    node.samples.push(b);
    await sleep(300);
  }
  node.baseline = b;
  node.baselines.push(b);
  node.state = 'up';
  log(`node ${node.index} (pid ${node.child.pid}, ${node.addr}) baseline: RSS ${b.rssMiB.toFixed(1)} MiB, fds ${b.fds}, tasks ${b.tasks}`);
}

/** SIGTERM one node once its clients are quiet, wait for its exit, start it again on its port. */
async function restart(node) {
  node.state = 'quiescing';
  const quiesceStart = Date.now();
  const mine = () => [...live].filter((x) => x.node === node);
  while (Date.now() - quiesceStart < opts.quiesceMaxMs && !mine().every((x) => x.quiet())) await sleep(20);
  const notQuiet = mine().filter((x) => !x.quiet());
  const onIt = mine().length;
  // Its last sample before it goes: fds and tasks are not checked here (it is stopping), only recorded.
  node.expectedExit = true;
  const exited = new Promise((resolve) => node.child.once('exit', (code, signal) => resolve({ code, signal })));
  const t0 = Date.now();
  node.child.kill('SIGTERM');
  const exit = await Promise.race([exited, sleep(15_000).then(() => null)]);
  if (!exit) {
    fail(`node ${node.index} (pid ${node.child.pid}) did not exit within 15 s of SIGTERM`);
    node.child.kill('SIGKILL');
    await exited;
  } else if (exit.code !== 0) {
    fail(`node ${node.index} (pid ${node.child.pid}) exited with ${JSON.stringify(exit)} after SIGTERM`);
  }
  node.state = 'down';
  const exitMs = Date.now() - t0;
  stats.restarts++;
  log(`node ${node.index} stopped in ${exitMs} ms (${onIt} clients on it, ${notQuiet.length} not quiet after ${Date.now() - quiesceStart - exitMs} ms); starting it again on port ${node.port}`);
  node.restarts.push({ t: (Date.now() - T0) / 1000, clients: onIt, notQuiet: notQuiet.length, exitMs });
  node.expectedExit = false;
  await startServer(node);
  await takeBaseline(node);
}

/** Failed checks by kind (the peer ids and numbers taken out). */
function failureKinds() {
  const kinds = {};
  for (const f of failures) {
    const k = f.replace(/[A-Za-z0-9_-]{22}/g, 'ID').replace(/\d+(\.\d+)?/g, 'N').replace(/ \([^)]*\)/g, '').replace(/"[^"]*"/g, '"…"').slice(0, 160);
    kinds[k] = (kinds[k] ?? 0) + 1;
  }
  return Object.fromEntries(Object.entries(kinds).sort((a, b) => b[1] - a[1]));
}

async function main() {
  log(`peers ${opts.peers}, nodes ${opts.nodes}, restart every ${opts.restartEveryMs / 1000}s, duration ${opts.durationMs / 1000}s, binary ${BIN}`);
  if (!fs.existsSync(BIN)) throw new Error(`no server binary at ${BIN}`);
  await startRedis();
  log(`redis-server pid ${redis.child.pid} on port ${redisPort}`);
  for (let i = 0; i < opts.nodes; i++) {
    const node = { index: i, port: await freePort(), samples: [], baselines: [], restarts: [] };
    nodes.push(node);
    await startServer(node);
  }
  await Promise.all(nodes.map((n) => takeBaseline(n)));
  const marks = [];

  const sampler = setInterval(async () => {
    for (const node of nodes) {
      if (node.state !== 'up') continue;
      try {
        const s = await sample(node);
        node.samples.push(s);
      } catch (err) {
        if (node.state === 'up') fail(`sampling node ${node.index}: ${err.message}`);
      }
    }
    const last = nodes.map((n) => n.samples.at(-1));
    log(`nodes: ${last.map((s, i) => `#${i} RSS ${s.rssMiB.toFixed(1)} fds ${s.fds} tasks ${s.tasks} peers ${s.peers} conns ${s.connections}`).join(' | ')}; clients ${live.size}, sent ${stats.sent}, delivered ${stats.delivered}, handovers ${stats.handovers}, failed checks ${failures.length}`);
  }, opts.sampleIntervalMs);

  marks.push([(Date.now() - T0) / 1000, 'start']);
  const churnStart = Date.now();
  let stopResolve;
  const stopped = new Promise((resolve) => (stopResolve = resolve));
  const churnTimer = setTimeout(() => stopChurn(), opts.durationMs);
  stopChurn = () => {
    if (stopping) return;
    stopping = true;
    clearTimeout(churnTimer);
    stopResolve();
  };
  // The rolling restart: node 0, 1, 2, 0, ... one every --restart-every.
  let restarting = Promise.resolve();
  let nextNode = 0;
  const restartTimer = setInterval(() => {
    if (stopping || Date.now() - churnStart > opts.durationMs - 1000) return;
    const node = nodes[nextNode++ % nodes.length];
    marks.push([(Date.now() - T0) / 1000, `restart #${node.index}`]);
    restarting = restarting.then(() => restart(node)).catch((err) => fail(`restarting node ${node.index}: ${err.message}`));
  }, opts.restartEveryMs);
  for (let slot = 0; slot < opts.peers && !stopping; slot++) {
    slots[slot] = new Session(slot);
    if (slot % 50 === 49) await sleep((opts.rampMs * 50) / opts.peers);
  }
  const crashWatch = setInterval(() => {
    for (const node of nodes) {
      if (node.exited && !node.expectedExit && node.state !== 'down' && !node.reported) {
        node.reported = true;
        fail(`node ${node.index} exited during the run: ${JSON.stringify(node.exit)}`);
        stopChurn();
      }
    }
    if (redis.exited) {
      fail(`redis-server exited: ${JSON.stringify(redis.exit)}`);
      stopChurn();
    }
  }, 200);
  await stopped;
  clearInterval(restartTimer);
  await restarting;
  const churnSeconds = (Date.now() - churnStart) / 1000;
  marks.push([(Date.now() - T0) / 1000, 'stop']);
  log(`stopping: ${live.size} clients leave and disconnect`);

  const closeDeadline = Date.now() + 60_000;
  while (live.size > 0 && Date.now() < closeDeadline) {
    for (const session of [...live]) {
      if (session.state === 'joined' && !session.stopRequested) {
        session.stopRequested = true;
        session.leaveAndClose();
      }
    }
    await sleep(100);
  }
  if (live.size > 0) {
    fail(`${live.size} clients did not finish closing within 60s: ${[...live].slice(0, 5).map((x) => `${x.id}:${x.state}`).join(', ')}`);
    for (const session of [...live]) session.drop();
  }
  marks.push([(Date.now() - T0) / 1000, 'all closed']);
  log('all clients gone; waiting for the nodes to settle (sessions dropped in the last grace period expire first)');

  const settleDeadline = Date.now() + opts.settleTimeoutMs;
  const limits = new Map();
  for (const node of nodes) {
    const since = node.samples.filter((s) => s.t >= node.baseline.t);
    const peak = since.reduce((m, s) => Math.max(m, s.rssMiB), 0);
    limits.set(node, node.baseline.rssMiB + Math.max(opts.rssToleranceMiB, ((peak - node.baseline.rssMiB) * opts.rssTolerancePct) / 100));
  }
  for (;;) {
    let settled = true;
    for (const node of nodes) {
      if (node.exited) continue;
      const f = await sample(node);
      node.samples.push(f);
      node.final = f;
      const b = node.baseline;
      settled &&= f.fds === b.fds && f.tasks === b.tasks && f.peers === 0 && f.connections === 0 && f.rssMiB <= limits.get(node);
    }
    if (settled || Date.now() > settleDeadline) break;
    await sleep(1000);
  }
  clearInterval(sampler);
  clearInterval(crashWatch);

  const verdicts = [];
  const perNode = [];
  for (const node of nodes) {
    const b = node.baseline;
    const f = node.final;
    const since = node.samples.filter((s) => s.t >= b.t);
    const peak = since.reduce((acc, s) => ({ rssMiB: Math.max(acc.rssMiB, s.rssMiB), fds: Math.max(acc.fds, s.fds), tasks: Math.max(acc.tasks, s.tasks), peers: Math.max(acc.peers, s.peers) }), { rssMiB: 0, fds: 0, tasks: 0, peers: 0 });
    const name = `node ${node.index} (pid ${node.child.pid}, ${node.restarts.length ? `restarted ${node.restarts.length}×, last at ${node.restarts.at(-1).t.toFixed(0)} s` : 'never restarted'})`;
    if (node.exited || !f) {
      verdicts.push(`${name} exited: ${JSON.stringify(node.exit)}`);
    } else {
      if (f.fds !== b.fds) verdicts.push(`${name}: open fds ${f.fds}, baseline ${b.fds}`);
      if (f.tasks !== b.tasks) verdicts.push(`${name}: tasks alive ${f.tasks}, baseline ${b.tasks}`);
      if (f.peers !== 0) verdicts.push(`${name}: switchboard_peers ${f.peers} with no client connected`);
      if (f.connections !== 0) verdicts.push(`${name}: switchboard_connections ${f.connections} with no client connected`);
      if (f.rssMiB > limits.get(node)) verdicts.push(`${name}: RSS ${f.rssMiB.toFixed(1)} MiB, more than ${limits.get(node).toFixed(1)} (baseline ${b.rssMiB.toFixed(1)})`);
    }
    if (node.errorLines.length > 0) verdicts.push(`${node.errorLines.length} ERROR/panic lines in node ${node.index}'s log, first: ${node.errorLines[0]}`);
    perNode.push({ index: node.index, port: node.port, pid: node.child.pid, restarts: node.restarts, baselines: node.baselines, baseline: b, peakSinceBaseline: peak, final: f, rssLimitMiB: limits.get(node), errorLines: node.errorLines.slice(0, 20), warnLines: node.warnLines.length, firstWarnLines: node.warnLines.slice(0, 10) });
  }
  if (failures.length > 0) verdicts.push(`${failures.length} correctness checks failed, first: ${failures[0]}`);
  if (stats.joins === 0 || stats.delivered === 0) verdicts.push('nothing happened: no joins or no deliveries');
  if (stats.restarts === 0 || stats.resumed === 0) verdicts.push('no restart or no resumed session: the rolling restart did not happen');
  if (stats.resumed !== stats.handovers) verdicts.push(`${stats.handovers} handovers but ${stats.resumed} resumed`);

  for (const node of nodes) {
    if (node.exited) continue;
    node.expectedExit = true;
    node.child.kill('SIGTERM');
    const exited = await Promise.race([new Promise((r) => node.child.once('exit', () => r(true))), sleep(15_000).then(() => false)]);
    if (!exited && !node.exited) {
      node.child.kill('SIGKILL');
      verdicts.push(`node ${node.index} did not exit within 15s of SIGTERM`);
    }
  }
  redis.child.kill('SIGTERM');

  const ok = verdicts.length === 0;
  const summary = {
    date: new Date().toISOString(),
    startedAt: new Date(T0).toISOString(), // the [soak N s] times in the log count from here
    machine: `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, ${os.type()} ${os.release()}`,
    binary: BIN,
    commit: COMMIT,
    serverArgs: [...SERVER_ARGS, '--redis', `redis://127.0.0.1:${redisPort}`],
    options: { ...opts, out: undefined, svg: undefined },
    churnSeconds,
    stats,
    nodes: perNode,
    failureKinds: failureKinds(),
    failures: failures.slice(0, 100),
    failureCount: failures.length,
    verdicts,
    ok,
  };
  fs.mkdirSync(opts.out, { recursive: true });
  const columns = ['node', 't', 'rssMiB', 'fds', 'tasks', 'peers', 'connections', 'rooms', 'clients', 'sent', 'delivered', 'failures'];
  const all = nodes.flatMap((n) => n.samples).sort((a, b) => a.t - b.t);
  const csv = [
    'node,elapsed_s,rss_mib,fds,tasks_alive,peers,connections,rooms,client_sockets,relays_sent,relays_delivered,failed_checks',
    ...all.map((s) => columns.map((c) => (c === 't' || c === 'rssMiB' ? s[c].toFixed(2) : s[c])).join(',')),
  ].join('\n');
  fs.writeFileSync(path.join(opts.out, 'samples.csv'), csv + '\n');
  fs.writeFileSync(path.join(opts.out, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
  for (const node of nodes) fs.writeFileSync(path.join(opts.out, `node${node.index}.log`), node.logFile.join('\n') + '\n');
  for (const node of nodes) {
    const svg = svgChart(node.samples, marks, `Switchboard rolling-restart soak, node ${node.index}: ${ok ? 'PASS' : 'FAIL'}`, `${opts.peers} peers over ${nodes.length} nodes, ${stats.restarts} restarts, ${stats.handovers} handovers, ${stats.sent} relays sent, ${stats.delivered} delivered`);
    fs.writeFileSync(path.join(opts.out, `chart-node${node.index}.svg`), svg);
  }

  log(`sessions ${stats.sessions} (${stats.graceful} closed gracefully, ${stats.abrupt} dropped, ${stats.expired} seen expiring), joins ${stats.joins}`);
  log(`restarts ${stats.restarts}, handovers ${stats.handovers}, resumed ${stats.resumed}, not quiet at SIGTERM ${stats.unquiet}`);
  log(`relays: ${stats.sent} sent, ${stats.acked} acked, ${stats.refused} refused (target already gone), ${stats.delivered} delivered`);
  for (const n of perNode) log(`node ${n.index}: baseline fds ${n.baseline.fds} tasks ${n.baseline.tasks} RSS ${n.baseline.rssMiB.toFixed(1)}; final fds ${n.final?.fds} tasks ${n.final?.tasks} RSS ${n.final?.rssMiB.toFixed(1)} (allowed ${n.rssLimitMiB.toFixed(1)}); peak RSS ${n.peakSinceBaseline.rssMiB.toFixed(1)} fds ${n.peakSinceBaseline.fds}`);
  log(`outputs in ${opts.out}`);
  if (ok) log('PASS');
  else for (const verdict of verdicts) log(`FAIL: ${verdict}`);
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
  for (const node of nodes) node.child?.kill("SIGKILL");
  redis?.child.kill("SIGKILL");
  process.exit(1);
});
