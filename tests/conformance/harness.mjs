// Test harness for the Switchboard conformance suite.
//
// - startServer(): spawns `switchboard serve --listen 127.0.0.1:0 --log-format json
//   [flags]`, waits for the `listening` log line, and keeps draining stderr.
// - Client: a `ws` socket whose every incoming frame is queued, with next(),
//   expectNothing(), welcome() and friends.
// - httpGet()/openSse(): plain node:http helpers (a fresh TCP connection each).
// - test(): node:test's test() that appends the tail of every live server's
//   stderr to the failure message.
//
// The binary comes from $SWITCHBOARD_BIN, default ../../target/debug/switchboard
// relative to this directory.

import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { test as nodeTest } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';

export { WebSocket };

const HERE = path.dirname(fileURLToPath(import.meta.url));

export const BIN = process.env.SWITCHBOARD_BIN
  ? path.resolve(process.env.SWITCHBOARD_BIN)
  : path.resolve(HERE, '../../target/debug/switchboard');

/** Default time to wait for one expected message. */
export const NEXT_TIMEOUT_MS = 3000;
/** Default quiet window for expectNothing(). */
export const QUIET_MS = 300;

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------
// Server process
// ---------------------------------------------------------------------------

const LOG_TAIL_LINES = 60;
const liveServers = new Set();
/** Callbacks of running tests, told about every server started while they run. */
const trackers = new Set();

function registerServer(server) {
  liveServers.add(server);
  for (const track of trackers) track(server);
}

export class Server {
  constructor(child, args) {
    this.child = child;
    this.args = args;
    this.lines = [];
    this.addr = null;
    this.port = null;
    this.exitCode = undefined;
    this.exitSignal = undefined;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exitCode = code;
        this.exitSignal = signal;
        liveServers.delete(this);
        resolve({ code, signal });
      });
    });
  }

  /** ws://127.0.0.1:PORT + pathname */
  wsUrl(pathname = '/ws') {
    return `ws://${this.addr}${pathname}`;
  }

  /** http://127.0.0.1:PORT + pathname */
  httpUrl(pathname = '/') {
    return `http://${this.addr}${pathname}`;
  }

  /** The last stderr lines, for failure messages. */
  tail(n = LOG_TAIL_LINES) {
    return this.lines.slice(-n).join('\n');
  }

  /** Connects a client to `pathname` (default /ws). */
  connect(pathname = '/ws', options = {}) {
    return Client.connect(this.wsUrl(pathname), options);
  }

  /** Connects to /ws and reads the welcome: resolves with the client, whose `.id` is set. */
  async peer(options = {}) {
    const c = await this.connect('/ws', options);
    await c.welcome();
    return c;
  }

  /** Sends a signal to the process. */
  signal(sig) {
    if (this.exitCode === undefined) this.child.kill(sig);
  }

  /** Kills the process (SIGKILL) and waits for it to exit. */
  async stop() {
    closeAllClients();
    if (this.exitCode === undefined && this.exitSignal === undefined) {
      this.child.kill('SIGKILL');
    }
    await this.exited;
  }
}

/**
 * Spawns the server with `extraArgs` and resolves once it logged `listening`.
 * Rejects (with the server's stderr) if it exits first or takes over 20 s.
 */
export async function startServer(extraArgs = [], { startTimeoutMs = 20000 } = {}) {
  if (!existsSync(BIN)) {
    throw new Error(
      `switchboard binary not found at ${BIN}; build it with \`cargo build -p switchboard-server\` ` +
        'or set SWITCHBOARD_BIN',
    );
  }
  const args = ['serve', '--listen', '127.0.0.1:0', '--log-format', 'json', ...extraArgs];
  // Only the flags define the server: drop SWITCHBOARD_* settings from the environment.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SWITCHBOARD_')));
  const child = spawn(BIN, args, {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...env, RUST_BACKTRACE: '1' },
  });
  const server = new Server(child, args);
  registerServer(server);

  const rl = readline.createInterface({ input: child.stderr, crlfDelay: Infinity });
  let onListening;
  const listening = new Promise((resolve) => {
    onListening = resolve;
  });
  rl.on('line', (line) => {
    server.lines.push(line);
    if (server.lines.length > 2000) server.lines.splice(0, server.lines.length - LOG_TAIL_LINES);
    if (server.addr) return;
    let entry;
    try {
      entry = JSON.parse(line);
    } catch {
      return;
    }
    const fields = entry && typeof entry === 'object' ? entry.fields : undefined;
    if (fields && fields.message === 'listening' && typeof fields.addr === 'string') {
      onListening(fields.addr);
    }
  });

  const failed = new Promise((_, reject) => {
    child.once('error', (err) => reject(new Error(`cannot spawn ${BIN}: ${err.message}`)));
    server.exited.then(({ code, signal }) =>
      reject(
        new Error(
          `switchboard exited (code ${code}, signal ${signal}) before logging "listening"; ` +
            `args: ${args.join(' ')}\n--- stderr ---\n${server.tail()}`,
        ),
      ),
    );
  });
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new Error(
            `switchboard did not log a JSON line with fields.message == "listening" within ` +
              `${startTimeoutMs} ms; args: ${args.join(' ')}\n--- stderr ---\n${server.tail()}`,
          ),
        ),
      startTimeoutMs,
    );
  });
  try {
    const addr = await Promise.race([listening, failed, timeout]);
    server.addr = addr;
    server.port = Number(addr.split(':').pop());
    assert.match(addr, /^127\.0\.0\.1:\d+$/, 'listening addr');
    assert.ok(server.port > 0, 'listening port');
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  } finally {
    clearTimeout(timer);
  }
  return server;
}

let helpText;
/** Whether `switchboard serve --help` lists `flag` (for flags docs/protocol.md does not name). */
export function serverSupportsFlag(flag) {
  if (helpText === undefined) {
    const r = spawnSync(BIN, ['serve', '--help'], { encoding: 'utf8', timeout: 10000 });
    helpText = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  }
  return new RegExp(`(^|\\s)${flag.replace(/[-]/g, '\\-')}(\\s|=|$)`, 'm').test(helpText);
}

/** Stops every server still running in this process. */
export async function stopAllServers() {
  await Promise.all([...liveServers].map((s) => s.stop()));
}

process.on('exit', () => {
  for (const s of liveServers) {
    try {
      s.child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

// ---------------------------------------------------------------------------
// test() wrapper: append server logs on failure
// ---------------------------------------------------------------------------

const DEFAULT_TEST_TIMEOUT_MS = 30000;

/**
 * Like node:test's test(name, [options], fn), with a default timeout, every
 * client closed afterwards, and the stderr tail of the live servers appended
 * to a failure's message.
 */
export function test(name, options, fn) {
  if (typeof options === 'function') {
    fn = options;
    options = {};
  }
  return nodeTest(name, { timeout: DEFAULT_TEST_TIMEOUT_MS, ...options }, async (t) => {
    const servers = new Set(liveServers);
    const track = (s) => servers.add(s);
    trackers.add(track);
    try {
      await fn(t);
    } catch (err) {
      const tails = [...servers]
        .filter((s) => s.lines.length > 0)
        .map((s) => `--- switchboard ${s.args.join(' ')} (last stderr lines) ---\n${s.tail(30)}`)
        .join('\n');
      if (tails && err && typeof err === 'object') {
        try {
          err.message = `${err.message}\n${tails}`;
        } catch {
          // non-writable message: leave it
        }
      }
      throw err;
    } finally {
      trackers.delete(track);
      closeAllClients();
      closeAllSse();
    }
  });
}


// ---------------------------------------------------------------------------
// WebSocket client
// ---------------------------------------------------------------------------

const openClients = new Set();

/** Terminates every open client (used between tests). */
export function closeAllClients() {
  for (const c of openClients) c.terminate();
  openClients.clear();
}

function describeFrame(f) {
  if (f.isBinary) return `<binary ${f.data.length} bytes>`;
  const text = f.data.toString('utf8');
  return text.length > 300 ? `${text.slice(0, 300)}...` : text;
}

export class Client {
  /**
   * Opens a ws connection; resolves once open. Every frame received from then
   * on is queued.
   */
  static connect(url, options = {}) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, options);
      const client = new Client(ws, url);
      const onError = (err) => reject(new Error(`cannot connect to ${url}: ${err.message}`));
      ws.once('unexpected-response', (req, res) => {
        ws.removeListener('error', onError);
        ws.on('error', () => {});
        reject(Object.assign(new Error(`HTTP ${res.statusCode} instead of an upgrade at ${url}`), { statusCode: res.statusCode }));
        res.resume();
        req.destroy();
      });
      ws.once('error', onError);
      ws.once('open', () => {
        ws.removeListener('error', onError);
        ws.on('error', (err) => {
          client.lastError = err;
        });
        openClients.add(client);
        resolve(client);
      });
    });
  }

  constructor(ws, url) {
    this.ws = ws;
    this.url = url;
    this.id = undefined;
    this.frames = [];
    this.waiters = [];
    this.closeInfo = null;
    this.lastError = null;
    this.pings = 0;
    this.closed = new Promise((resolve) => {
      ws.once('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString('utf8') };
        openClients.delete(this);
        const waiters = this.waiters.splice(0);
        for (const w of waiters) w.onClose(this.closeInfo);
        resolve(this.closeInfo);
      });
    });
    ws.on('ping', () => {
      this.pings += 1;
    });
    ws.on('message', (data, isBinary) => {
      const buf = Buffer.isBuffer(data) ? data : Buffer.concat(Array.isArray(data) ? data : [Buffer.from(data)]);
      const frame = { data: buf, isBinary };
      const w = this.waiters.shift();
      if (w) w.onFrame(frame);
      else this.frames.push(frame);
    });
  }

  get isOpen() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  /** Sends an object as JSON text, or a string / Buffer as is (a Buffer goes as a binary frame). */
  send(msg, options) {
    if (typeof msg === 'string' || Buffer.isBuffer(msg) || msg instanceof Uint8Array) {
      this.ws.send(msg, options);
    } else {
      this.ws.send(JSON.stringify(msg), options);
    }
  }

  /** Resolves with the next raw frame {data: Buffer, isBinary}. */
  nextFrame(timeoutMs = NEXT_TIMEOUT_MS, what = 'a frame') {
    if (this.frames.length > 0) return Promise.resolve(this.frames.shift());
    if (this.closeInfo) {
      return Promise.reject(
        new Error(
          `${this.label()}: waiting for ${what}, but the socket is closed (code ${this.closeInfo.code}${
            this.closeInfo.reason ? `, reason ${JSON.stringify(this.closeInfo.reason)}` : ''
          })`,
        ),
      );
    }
    return new Promise((resolve, reject) => {
      const waiter = {
        onFrame: (f) => {
          clearTimeout(timer);
          resolve(f);
        },
        onClose: (info) => {
          clearTimeout(timer);
          reject(new Error(`${this.label()}: socket closed (code ${info.code}) while waiting for ${what}`));
        },
      };
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new Error(`${this.label()}: timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  /** Resolves with the next message, parsed as JSON (fails on a binary frame or bad JSON). */
  async next(timeoutMs = NEXT_TIMEOUT_MS, what = 'a message') {
    const f = await this.nextFrame(timeoutMs, what);
    assert.equal(f.isBinary, false, `${this.label()}: expected a JSON text frame, got ${describeFrame(f)}`);
    const text = f.data.toString('utf8');
    try {
      return JSON.parse(text);
    } catch {
      assert.fail(`${this.label()}: server sent a text frame that is not JSON: ${text}`);
    }
  }

  /** Resolves with the next message and asserts its `type`. */
  async nextOfType(type, timeoutMs = NEXT_TIMEOUT_MS) {
    const msg = await this.next(timeoutMs, `a "${type}" message`);
    assert.equal(msg.type, type, `${this.label()}: expected a "${type}" message, got ${JSON.stringify(msg)}`);
    return msg;
  }

  /**
   * Asserts that no frame arrives within `ms` (and none is already queued), and
   * that the socket is still open: silence from a closed socket proves nothing.
   */
  async expectNothing(ms = QUIET_MS) {
    if (this.frames.length === 0) await sleep(ms);
    if (this.frames.length > 0) {
      assert.fail(
        `${this.label()}: expected no message, got ${this.frames.length}: ` +
          this.frames.map(describeFrame).join(' | '),
      );
    }
    if (this.closeInfo) {
      assert.fail(`${this.label()}: expected no message on an open socket, but it closed (code ${this.closeInfo.code})`);
    }
  }

  /** Reads the first message, which must be exactly {"type":"welcome","id":<string>}; sets this.id. */
  async welcome() {
    const msg = await this.next(NEXT_TIMEOUT_MS, 'the welcome message');
    assert.equal(msg.type, 'welcome', `first message must be welcome, got ${JSON.stringify(msg)}`);
    assert.deepEqual(Object.keys(msg).sort(), ['id', 'type'], `welcome shape: ${JSON.stringify(msg)}`);
    assert.equal(typeof msg.id, 'string');
    this.id = msg.id;
    return msg.id;
  }

  /** Sends `msg` and resolves with the next message. */
  async request(msg, timeoutMs = NEXT_TIMEOUT_MS) {
    this.send(msg);
    return this.next(timeoutMs, `the reply to ${JSON.stringify(msg).slice(0, 200)}`);
  }

  /** Sends a join and asserts the reply is `joined` for that room; resolves with it. */
  async join(room, extra = {}) {
    const msg = room === undefined ? { type: 'join', ...extra } : { type: 'join', room, ...extra };
    const reply = await this.request(msg);
    assert.equal(reply.type, 'joined', `join ${JSON.stringify(msg)} answered ${JSON.stringify(reply)}`);
    assert.equal(reply.room, room === undefined ? 'default' : room);
    return reply;
  }

  /** ping → pong round trip proves the connection still works. */
  async assertAlive(rid = 'alive-check') {
    const reply = await this.request({ type: 'ping', rid });
    assert.deepEqual(reply, { type: 'pong', rid }, `${this.label()}: connection should still answer ping`);
  }

  /** Waits for the socket to close; resolves with {code, reason}. */
  async waitClose(timeoutMs = 5000) {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`${this.label()}: socket not closed within ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    try {
      return await Promise.race([this.closed, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Closes with a close handshake and waits for it. */
  async close(code = 1000) {
    if (!this.closeInfo) {
      this.ws.close(code);
      await this.waitClose(5000).catch(() => this.terminate());
    }
  }

  terminate() {
    openClients.delete(this);
    if (this.ws.readyState !== WebSocket.CLOSED) this.ws.terminate();
  }

  label() {
    return `client ${this.id ?? this.url}`;
  }
}

/**
 * Asserts that `msg` is exactly an error with `code`, a non-empty message and
 * (if given) `rid`.
 */
export function assertErrorShape(msg, code, rid) {
  assert.equal(msg.type, 'error', `expected an error "${code}", got ${JSON.stringify(msg)}`);
  assert.equal(msg.code, code, `expected error code "${code}", got ${JSON.stringify(msg)}`);
  assert.equal(typeof msg.message, 'string', `error.message must be a string: ${JSON.stringify(msg)}`);
  assert.ok(msg.message.length > 0, `error.message must be non-empty: ${JSON.stringify(msg)}`);
  const keys = ['code', 'message', 'type'];
  if (rid !== undefined) {
    keys.push('rid');
    assert.deepEqual(msg.rid, rid, `error must echo rid ${JSON.stringify(rid)}: ${JSON.stringify(msg)}`);
  }
  assert.deepEqual(Object.keys(msg).sort(), keys.sort(), `error shape: ${JSON.stringify(msg)}`);
}

/**
 * Sends `msg` (object, string or Buffer) and asserts the reply is error `code`
 * (echoing `rid` when given), then that the connection still answers ping.
 */
export async function expectError(client, msg, code, { rid, options } = {}) {
  client.send(msg, options);
  const what = typeof msg === 'string' ? msg : Buffer.isBuffer(msg) ? `<binary ${msg.length}>` : JSON.stringify(msg);
  const reply = await client.next(NEXT_TIMEOUT_MS, `error "${code}" for ${what.slice(0, 200)}`);
  assertErrorShape(reply, code, rid);
  await client.assertAlive();
  return reply;
}

let roomCounter = 0;
/** A room name unique within this process. */
export function uniqueRoom(prefix = 'room') {
  roomCounter += 1;
  return `${prefix}-${process.pid}-${roomCounter}`;
}

// ---------------------------------------------------------------------------
// HTTP and SSE
// ---------------------------------------------------------------------------

/** GET with a fresh connection; resolves with {status, headers, body}. */
export function httpGet(url, { headers = {}, timeoutMs = 5000 } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') });
      });
      res.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
    const timer = setTimeout(() => {
      req.destroy(new Error(`GET ${url}: no complete answer within ${timeoutMs} ms`));
    }, timeoutMs);
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/**
 * An open SSE stream. `next()` resolves with the next event
 * {id, event, data, comments}; comment-only blocks are recorded, not returned.
 */
const openStreams = new Set();

/** Closes every SSE stream still open (used between tests). */
export function closeAllSse() {
  for (const s of openStreams) s.close();
  openStreams.clear();
}

export class SseStream {
  static open(url, { headers = {}, timeoutMs = 5000 } = {}) {
    return new Promise((resolve, reject) => {
      const req = http.get(url, { headers: { Accept: 'text/event-stream', ...headers }, agent: false }, (res) => {
        clearTimeout(timer);
        resolve(new SseStream(req, res));
      });
      const timer = setTimeout(() => req.destroy(new Error(`GET ${url}: no response headers within ${timeoutMs} ms`)), timeoutMs);
      req.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  constructor(req, res) {
    this.req = req;
    this.res = res;
    this.status = res.statusCode;
    this.headers = res.headers;
    this.events = [];
    this.waiters = [];
    this.comments = [];
    this.ended = false;
    this.buffer = '';
    openStreams.add(this);
    res.setEncoding('utf8');
    res.on('data', (chunk) => this.onData(chunk));
    const onEnd = () => {
      this.ended = true;
      for (const w of this.waiters.splice(0)) w.onEnd();
    };
    res.on('end', onEnd);
    res.on('close', onEnd);
    res.on('error', () => {});
    req.on('error', () => {});
  }

  onData(chunk) {
    this.buffer += chunk.replace(/\r\n?/g, '\n');
    let idx;
    while ((idx = this.buffer.indexOf('\n\n')) >= 0) {
      const block = this.buffer.slice(0, idx);
      this.buffer = this.buffer.slice(idx + 2);
      this.onBlock(block);
    }
  }

  onBlock(block) {
    const ev = { id: undefined, event: undefined, data: undefined, raw: block };
    const dataLines = [];
    let any = false;
    for (const line of block.split('\n')) {
      if (line === '') continue;
      if (line.startsWith(':')) {
        this.comments.push(line);
        continue;
      }
      const colon = line.indexOf(':');
      const field = colon >= 0 ? line.slice(0, colon) : line;
      let value = colon >= 0 ? line.slice(colon + 1) : '';
      if (value.startsWith(' ')) value = value.slice(1);
      any = true;
      if (field === 'data') dataLines.push(value);
      else if (field === 'id') ev.id = value;
      else if (field === 'event') ev.event = value;
      else ev[field] = value;
    }
    if (!any) return;
    if (dataLines.length > 0) ev.data = dataLines.join('\n');
    const w = this.waiters.shift();
    if (w) w.onEvent(ev);
    else this.events.push(ev);
  }

  /** Resolves with the next event (one that has at least one field line). */
  next(timeoutMs = NEXT_TIMEOUT_MS) {
    if (this.events.length > 0) return Promise.resolve(this.events.shift());
    if (this.ended) return Promise.reject(new Error('SSE stream ended while waiting for an event'));
    return new Promise((resolve, reject) => {
      const waiter = {
        onEvent: (ev) => {
          clearTimeout(timer);
          resolve(ev);
        },
        onEnd: () => {
          clearTimeout(timer);
          reject(new Error('SSE stream ended while waiting for an event'));
        },
      };
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for an SSE event`));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  /** The next event's data parsed as JSON. */
  async nextJson(timeoutMs = NEXT_TIMEOUT_MS) {
    const ev = await this.next(timeoutMs);
    assert.notEqual(ev.data, undefined, `SSE event without data: ${JSON.stringify(ev.raw)}`);
    try {
      return { ...ev, json: JSON.parse(ev.data) };
    } catch {
      assert.fail(`SSE data is not JSON: ${ev.data}`);
    }
  }

  /** Asserts no event arrives within `ms`. */
  async expectNothing(ms = QUIET_MS) {
    if (this.events.length === 0) await sleep(ms);
    assert.equal(this.events.length, 0, `expected no SSE event, got ${this.events.map((e) => e.raw).join(' | ')}`);
  }

  /** Closes the TCP connection. */
  close() {
    openStreams.delete(this);
    this.req.destroy();
    this.res.destroy();
  }
}

// ---------------------------------------------------------------------------
// Prometheus text
// ---------------------------------------------------------------------------

/**
 * Parses Prometheus text into [{name, labels, value}] samples plus the set of
 * TYPE declarations.
 */
export function parseMetrics(text) {
  const samples = [];
  const types = new Map();
  for (const line of text.split('\n')) {
    if (line.startsWith('# TYPE ')) {
      const [, , name, type] = line.split(/\s+/);
      types.set(name, type);
      continue;
    }
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    samples.push({ name: m[1], labels: m[2] ?? '', value: Number(m[3]) });
  }
  return { samples, types };
}

/** Parses a Prometheus label block `{a="x",b="y"}` into an object. */
export function parseLabels(block) {
  const labels = {};
  const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
  let m;
  while ((m = re.exec(block ?? '')) !== null) labels[m[1]] = m[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
  return labels;
}

/**
 * Value of the sample named `name` whose labels include every entry of
 * `labels` (summed when several match); undefined if none.
 */
export function metricValue(text, name, labels = {}) {
  const { samples } = parseMetrics(text);
  const matching = samples.filter((s) => {
    if (s.name !== name) return false;
    const have = parseLabels(s.labels);
    return Object.entries(labels).every(([k, v]) => have[k] === v);
  });
  if (matching.length === 0) return undefined;
  return matching.reduce((acc, s) => acc + s.value, 0);
}

/** Sum of every sample named exactly `name` (over all label sets); undefined if none. */
export function metricSum(text, name) {
  const { samples } = parseMetrics(text);
  const matching = samples.filter((s) => s.name === name);
  if (matching.length === 0) return undefined;
  return matching.reduce((acc, s) => acc + s.value, 0);
}

/** Polls `fn` until it returns a truthy value or `timeoutMs` passes; resolves with the last value. */
export async function poll(fn, { timeoutMs = 2000, intervalMs = 50 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let value = await fn();
  while (!value && Date.now() < deadline) {
    await sleep(intervalMs);
    value = await fn();
  }
  return value;
}

/** URL-safe peer id: 22 characters of base64url (128 bits). */
export const PEER_ID_RE = /^[A-Za-z0-9_-]{22}$/;
