// Server-Sent Events (/sse, /sse/rooms/{room}) and the HTTP endpoints
// (/healthz, /readyz, /metrics).

import assert from 'node:assert/strict';
import { after, before } from 'node:test';
import { SseStream, httpGet, metricSum, metricValue, parseLabels, parseMetrics, poll, startServer, test, uniqueRoom } from './harness.mjs';

// The series table of docs/protocol.md ("HTTP").
const SSE_STREAMS = 'switchboard_sse_streams';
const CONNECTIONS = 'switchboard_connections';
const ROOMS = 'switchboard_rooms';
const PEERS = 'switchboard_peers';
const MESSAGES_IN = 'switchboard_messages_in_total';
const MESSAGES_OUT = 'switchboard_messages_out_total';
const ERRORS = 'switchboard_errors_total';
const SLOW_CONSUMERS = 'switchboard_slow_consumers_total';
const PING_TIMEOUTS = 'switchboard_ping_timeouts_total';
const REFUSED = 'switchboard_refused_total';
const RATE_LIMITED = 'switchboard_rate_limited_total';
const RATE_LIMIT_CLOSES = 'switchboard_rate_limit_closes_total';
const DIALECT_DROPPED = 'switchboard_dialect_dropped_total';

const RELAY_TYPES = ['sdp', 'ice-candidate', 'offer', 'answer', 'candidate', 'signal'];
const ERROR_CODES = [
  'malformed-json', 'unknown-type', 'missing-field', 'invalid-field', 'unknown-target', 'no-shared-room',
  'not-in-room', 'already-joined', 'room-full', 'too-many-rooms', 'message-too-large', 'binary-not-supported',
  'delivery-failed', 'unauthorized', 'forbidden', 'rate-limited', 'unexpected-message', 'unavailable',
  'unknown-room',
];
/** series → [type, label name or null, allowed label values or null] */
const DOCUMENTED_SERIES = {
  [CONNECTIONS]: ['gauge', 'endpoint', ['signaling', 'echo', 'broadcast', 'peerjs', 'y-webrtc', 'matchbox']],
  [SSE_STREAMS]: ['gauge', 'endpoint', ['sse', 'room']],
  [ROOMS]: ['gauge', null, null],
  [PEERS]: ['gauge', null, null],
  [MESSAGES_IN]: ['counter', 'type', ['join', 'leave', 'broadcast', 'ping', 'auth', ...RELAY_TYPES, 'invalid']],
  [MESSAGES_OUT]: [
    'counter',
    'type',
    [
      'welcome', 'room-closed', 'server-message', 'joined', 'peer-joined', 'peer-left', 'left', 'broadcast', 'ack',
      'pong', 'error', ...RELAY_TYPES,
    ],
  ],
  [ERRORS]: ['counter', 'code', ERROR_CODES],
  [SLOW_CONSUMERS]: ['counter', null, null],
  [PING_TIMEOUTS]: ['counter', null, null],
  [REFUSED]: ['counter', 'reason', ['origin', 'max-connections', 'max-connections-per-ip', 'unauthorized', 'forbidden']],
  [RATE_LIMITED]: ['counter', 'limit', ['messages', 'bytes']],
  [RATE_LIMIT_CLOSES]: ['counter', null, null],
  [DIALECT_DROPPED]: ['counter', 'reason', ['malformed', 'binary', 'limit', 'unknown-target']],
};

let server;
before(async () => {
  server = await startServer(['--sse-interval', '100ms']);
});
after(async () => {
  await server?.stop();
});

const sseUrl = (p) => server.httpUrl(p);

async function metricsText() {
  const res = await httpGet(server.httpUrl('/metrics'));
  assert.equal(res.status, 200);
  return res.body;
}

function assertTickEvent(ev, expectedId) {
  assert.equal(ev.id, String(expectedId), `event id: ${JSON.stringify(ev.raw)}`);
  assert.equal(ev.event, undefined, `tick events are default (message) events: ${JSON.stringify(ev.raw)}`);
  let data;
  try {
    data = JSON.parse(ev.data);
  } catch {
    assert.fail(`data is not JSON: ${JSON.stringify(ev.raw)}`);
  }
  assert.equal(data.message, 'Hello from server!');
  assert.equal(data.seq, expectedId, `data.seq: ${ev.data}`);
  assert.equal(typeof data.time, 'string');
  assert.match(data.time, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/, `data.time: ${data.time}`);
  assert.ok(!Number.isNaN(Date.parse(data.time)), `data.time parses: ${data.time}`);
  return data;
}

// ---------------------------------------------------------------- /sse

test('GET /sse: text/event-stream with ids 1, 2, 3... and JSON data "Hello from server!"', async () => {
  const s = await SseStream.open(sseUrl('/sse'));
  assert.equal(s.status, 200);
  assert.match(s.headers['content-type'] ?? '', /^text\/event-stream\b/);
  let prevTime = 0;
  for (let i = 1; i <= 4; i++) {
    const data = assertTickEvent(await s.next(3000), i);
    const t = Date.parse(data.time);
    assert.ok(t >= prevTime, 'time does not go backwards');
    prevTime = t;
  }
  s.close();
});

test('GET /sse: a seed EventSource-style consumer reads data lines as JSON with message', async () => {
  // The seed client only looks at event.data.
  const s = await SseStream.open(sseUrl('/sse'));
  const ev = await s.next(3000);
  assert.deepEqual(JSON.parse(ev.data).message, 'Hello from server!');
  s.close();
});

test('GET /sse with Last-Event-ID: 41 continues at id 42', async () => {
  const s = await SseStream.open(sseUrl('/sse'), { headers: { 'Last-Event-ID': '41' } });
  assert.equal(s.status, 200);
  assertTickEvent(await s.next(3000), 42);
  assertTickEvent(await s.next(3000), 43);
  s.close();
});

test('GET /sse: two streams are independent sequences', async () => {
  const a = await SseStream.open(sseUrl('/sse'));
  assertTickEvent(await a.next(3000), 1);
  assertTickEvent(await a.next(3000), 2);
  const b = await SseStream.open(sseUrl('/sse'));
  assertTickEvent(await b.next(3000), 1);
  assertTickEvent(await a.next(3000), 3);
  a.close();
  b.close();
});

test('GET /sse: when the client goes away its stream ends (the SSE gauge goes back)', async () => {
  // Streams closed by earlier tests may still be winding down: this file's
  // server has no other SSE client, so let the gauge settle to 0 first.
  let before;
  await poll(async () => {
    before = metricSum(await metricsText(), SSE_STREAMS);
    return before === 0 || before === undefined;
  });
  assert.notEqual(before, undefined, `/metrics has no ${SSE_STREAMS} series`);
  const streams = [];
  for (let i = 0; i < 3; i++) {
    const s = await SseStream.open(sseUrl('/sse'));
    await s.next(3000);
    streams.push(s);
  }
  const during = await poll(async () => {
    const v = metricSum(await metricsText(), SSE_STREAMS);
    return v === before + 3 ? v : 0;
  });
  assert.equal(during, before + 3, `${SSE_STREAMS} while 3 streams are open`);
  for (const s of streams) s.close();
  let last;
  const back = await poll(async () => {
    last = metricSum(await metricsText(), SSE_STREAMS);
    return last === before;
  });
  assert.ok(back, `${SSE_STREAMS} should return to ${before} after the clients left, is ${last}`);
});

// ---------------------------------------------------------------- /sse/rooms/{room}

test('GET /sse/rooms/{room}: room-state snapshot, then peer-joined and peer-left as they happen', async () => {
  const room = uniqueRoom('dash');
  const a = await server.peer();
  await a.join(room, { meta: { name: 'Ada' } });
  const b = await server.peer();
  await b.join(room);
  await a.next(); // peer-joined b

  const s = await SseStream.open(sseUrl(`/sse/rooms/${encodeURIComponent(room)}`));
  assert.equal(s.status, 200);
  assert.match(s.headers['content-type'] ?? '', /^text\/event-stream\b/);
  const first = await s.nextJson(3000);
  assert.equal(first.event, undefined, 'room events are default (message) events');
  assert.deepEqual(first.json, { type: 'room-state', room, peers: [{ id: a.id, meta: { name: 'Ada' } }, { id: b.id }] });

  const c = await server.peer();
  await c.join(room, { meta: { name: 'Cy' } });
  const joined = await s.nextJson(3000);
  assert.deepEqual(joined.json, { type: 'peer-joined', data: c.id, room, meta: { name: 'Cy' } });

  c.send({ type: 'leave', room });
  await c.next();
  const left = await s.nextJson(3000);
  assert.deepEqual(left.json, { type: 'peer-left', data: c.id, room });

  const bId = b.id;
  b.terminate();
  const gone = await s.nextJson(3000);
  assert.deepEqual(gone.json, { type: 'peer-left', data: bId, room });

  // traffic that is not membership is not streamed; neither is another room
  a.send({ type: 'ping' });
  await a.next();
  const other = await server.peer();
  await other.join(uniqueRoom('not-dash'));
  await s.expectNothing(300);
  s.close();
});

test('GET /sse/rooms/{room} for a room nobody is in: room-state with no peers, then its first join', async () => {
  const room = uniqueRoom('empty');
  const s = await SseStream.open(sseUrl(`/sse/rooms/${room}`));
  assert.equal(s.status, 200);
  assert.deepEqual((await s.nextJson(3000)).json, { type: 'room-state', room, peers: [] });
  const a = await server.peer();
  await a.join(room);
  assert.deepEqual((await s.nextJson(3000)).json, { type: 'peer-joined', data: a.id, room });
  s.close();
});

test('GET /sse/rooms/{room}: a percent-encoded room name is the decoded room', async () => {
  const room = `Café ☕ ${uniqueRoom('enc')}`;
  const a = await server.peer();
  await a.join(room, { meta: { n: 1 } });
  const s = await SseStream.open(sseUrl(`/sse/rooms/${encodeURIComponent(room)}`));
  assert.equal(s.status, 200);
  assert.deepEqual((await s.nextJson(3000)).json, { type: 'room-state', room, peers: [{ id: a.id, meta: { n: 1 } }] });
  const aId = a.id;
  a.terminate();
  assert.deepEqual((await s.nextJson(3000)).json, { type: 'peer-left', data: aId, room });
  s.close();
});

// ---------------------------------------------------------------- HTTP

/** GET `path` → 200 with an ETag and Cache-Control no-cache; If-None-Match with it → 304. */
async function assertCachedAsset(path, typeRe) {
  const res = await httpGet(server.httpUrl(path));
  assert.equal(res.status, 200, `GET ${path}`);
  assert.match(res.headers['content-type'] ?? '', typeRe, `content-type of ${path}`);
  assert.ok(res.headers.etag, `GET ${path} has no ETag`);
  assert.match(res.headers['cache-control'] ?? '', /no-cache/, `cache-control of ${path}`);
  assert.ok(res.body.length > 0, `GET ${path} is empty`);
  const again = await httpGet(server.httpUrl(path), { headers: { 'If-None-Match': res.headers.etag } });
  assert.equal(again.status, 304, `conditional GET ${path} with its ETag`);
  assert.equal(again.body, '');
  return res;
}

test('GET / serves the embedded demo page (ETag, no-cache, 304 on If-None-Match)', async () => {
  const res = await assertCachedAsset('/', /^text\/html\b/);
  assert.match(res.body, /<html/i);
});

test('GET /sdk/switchboard.js serves the browser SDK as JavaScript (ETag, no-cache)', async () => {
  await assertCachedAsset('/sdk/switchboard.js', /^(text|application)\/javascript\b/);
});

test('GET /sdk/switchboard.d.ts serves the TypeScript types as text (ETag, no-cache)', async () => {
  const res = await assertCachedAsset(
    '/sdk/switchboard.d.ts',
    /^(text\/[a-z.+-]+|application\/(typescript|x-typescript))\b/,
  );
  assert.match(res.body, /\b(declare|export|interface)\b/);
});

test('GET /healthz → 200 ok', async () => {
  const res = await httpGet(server.httpUrl('/healthz'));
  assert.equal(res.status, 200);
  assert.equal(res.body.trim(), 'ok');
});

test('GET /readyz → 200 {"status":"ready"}', async () => {
  const res = await httpGet(server.httpUrl('/readyz'));
  assert.equal(res.status, 200);
  assert.deepEqual(JSON.parse(res.body), { status: 'ready' });
});

test('GET /metrics: Prometheus text with every documented series, of its documented type', async () => {
  const res = await httpGet(server.httpUrl('/metrics'));
  assert.equal(res.status, 200);
  assert.match(res.headers['content-type'] ?? '', /^text\/plain/);
  const { samples, types } = parseMetrics(res.body);
  assert.ok(samples.length > 0, 'no samples');
  const present = [...new Set(samples.map((x) => x.name))].filter((n) => n.startsWith('switchboard_'));
  for (const [name, [type]] of Object.entries(DOCUMENTED_SERIES)) {
    assert.equal(types.get(name), type, `# TYPE ${name} should be ${type}; series present: ${present.join(', ')}`);
  }
  // the three the brief of this suite names: connections, messages, errors
  for (const name of [CONNECTIONS, MESSAGES_IN, MESSAGES_OUT, ERRORS]) {
    assert.ok(samples.some((x) => x.name === name), `no ${name} sample`);
  }
});

test('GET /metrics: label values come only from the documented fixed sets', async () => {
  // Exercise a bit of everything first, so that lazily created label values exist.
  const c = await server.peer();
  await c.join(uniqueRoom('labels'));
  c.send('{bad');
  await c.next();
  c.send({ type: 'ping' });
  await c.next();
  const e = await server.connect('/ws/echo');
  e.send('x');
  await e.nextFrame();
  const { samples } = parseMetrics(await metricsText());
  const bad = [];
  for (const x of samples) {
    const doc = DOCUMENTED_SERIES[x.name];
    if (!doc) continue;
    const [, label, allowed] = doc;
    const labels = parseLabels(x.labels);
    if (label === null) continue;
    if (!(label in labels)) bad.push(`${x.name}${x.labels} lacks label ${label}`);
    else if (!allowed.includes(labels[label])) bad.push(`${x.name}{${label}="${labels[label]}"}`);
  }
  assert.deepEqual(bad, [], `label values outside docs/protocol.md's sets: ${bad.join(', ')}`);
});

/** Polls /metrics until `check(text)` holds (2 s); returns the last text. */
async function untilMetrics(check, what) {
  let last;
  const ok = await poll(async () => {
    last = await metricsText();
    return check(last);
  });
  assert.ok(ok, `${what}\n${last.split('\n').filter((l) => l.startsWith('switchboard_')).join('\n')}`);
  return last;
}

test('/metrics: switchboard_connections{endpoint} follows connects and disconnects per endpoint', async () => {
  // Clients of earlier tests may still be disconnecting: this file's server
  // has no other client, so let the gauges settle to 0 first.
  await untilMetrics((t) => metricSum(t, CONNECTIONS) === 0, `${CONNECTIONS} should settle to 0`);
  const sig = [await server.peer(), await server.peer()];
  const echo = await server.connect('/ws/echo');
  const bc = await server.connect('/ws/broadcast');
  await untilMetrics(
    (t) =>
      metricValue(t, CONNECTIONS, { endpoint: 'signaling' }) === 2 &&
      metricValue(t, CONNECTIONS, { endpoint: 'echo' }) === 1 &&
      metricValue(t, CONNECTIONS, { endpoint: 'broadcast' }) === 1,
    `${CONNECTIONS} should be signaling 2, echo 1, broadcast 1`,
  );
  for (const c of [...sig, echo, bc]) await c.close();
  await untilMetrics((t) => metricSum(t, CONNECTIONS) === 0, `${CONNECTIONS} should return to 0`);
});

test('/metrics: switchboard_rooms and switchboard_peers follow joins, leaves and disconnects', async () => {
  await untilMetrics((t) => metricValue(t, PEERS) === 0 && metricValue(t, ROOMS) === 0, `${PEERS} and ${ROOMS} should settle to 0`);
  const a = await server.peer();
  const b = await server.peer();
  await untilMetrics((t) => metricValue(t, PEERS) === 2 && metricValue(t, ROOMS) === 0, `${PEERS} 2, ${ROOMS} 0`);
  const r1 = uniqueRoom('gauge');
  const r2 = uniqueRoom('gauge');
  await a.join(r1);
  await b.join(r1);
  await b.join(r2);
  await untilMetrics((t) => metricValue(t, ROOMS) === 2, `${ROOMS} should be 2`);
  b.send({ type: 'leave', room: r2 });
  await b.nextOfType('left');
  await untilMetrics((t) => metricValue(t, ROOMS) === 1, `${ROOMS} should be 1 once r2 is empty`);
  await a.close();
  await b.close();
  await untilMetrics((t) => metricValue(t, PEERS) === 0 && metricValue(t, ROOMS) === 0, `${PEERS} and ${ROOMS} back to 0`);
});

test('/metrics: switchboard_sse_streams{endpoint} counts /sse and /sse/rooms streams', async () => {
  await untilMetrics((t) => metricSum(t, SSE_STREAMS) === 0, `${SSE_STREAMS} should settle to 0`);
  const tick = await SseStream.open(sseUrl('/sse'));
  const room = await SseStream.open(sseUrl(`/sse/rooms/${uniqueRoom('gauge')}`));
  await tick.next(3000);
  await room.next(3000);
  await untilMetrics(
    (t) => metricValue(t, SSE_STREAMS, { endpoint: 'sse' }) === 1 && metricValue(t, SSE_STREAMS, { endpoint: 'room' }) === 1,
    `${SSE_STREAMS} should be sse 1, room 1`,
  );
  tick.close();
  room.close();
  await untilMetrics((t) => metricSum(t, SSE_STREAMS) === 0, `${SSE_STREAMS} back to 0`);
});

test('/metrics: messages_in{type}, messages_out{type} and errors{code} count what happened', async () => {
  const t0 = await metricsText();
  const v = (t, name, labels) => metricValue(t, name, labels) ?? 0;
  const c = await server.peer();
  for (let i = 0; i < 3; i++) {
    c.send({ type: 'ping' });
    await c.next();
  }
  c.send('{not json');
  assert.equal((await c.next()).code, 'malformed-json');
  c.send({ type: 'nope' });
  assert.equal((await c.next()).code, 'unknown-type');
  await untilMetrics(
    (t) =>
      v(t, MESSAGES_IN, { type: 'ping' }) >= v(t0, MESSAGES_IN, { type: 'ping' }) + 3 &&
      v(t, MESSAGES_OUT, { type: 'pong' }) >= v(t0, MESSAGES_OUT, { type: 'pong' }) + 3 &&
      v(t, MESSAGES_OUT, { type: 'welcome' }) >= v(t0, MESSAGES_OUT, { type: 'welcome' }) + 1 &&
      v(t, MESSAGES_IN, { type: 'invalid' }) >= v(t0, MESSAGES_IN, { type: 'invalid' }) + 1 &&
      v(t, ERRORS, { code: 'malformed-json' }) >= v(t0, ERRORS, { code: 'malformed-json' }) + 1 &&
      v(t, ERRORS, { code: 'unknown-type' }) >= v(t0, ERRORS, { code: 'unknown-type' }) + 1,
    'messages_in{ping} +3, messages_out{pong} +3, messages_out{welcome} +1, messages_in{invalid} +1, ' +
      'errors{malformed-json} +1, errors{unknown-type} +1',
  );
});
