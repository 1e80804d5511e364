// Connection lifecycle: ping timeout, send-queue overflow (delivery-failed,
// close 1008) and graceful shutdown (SIGTERM → readyz 503 → close 1001 → exit 0).
// Each test starts its own server with the flags it needs.

import assert from 'node:assert/strict';
import { after } from 'node:test';
import { assertErrorShape, httpGet, metricValue, poll, serverSupportsFlag, sleep, startServer, stopAllServers, test } from './harness.mjs';

/** Polls the server's /metrics until `name` equals `want` (2 s); asserts it. */
async function expectMetric(server, name, want) {
  let last;
  await poll(async () => {
    const res = await httpGet(server.httpUrl('/metrics'));
    last = metricValue(res.body, name);
    return last === want;
  });
  assert.equal(last, want, `${name} on /metrics`);
}

/** Error codes of docs/protocol.md's table. */
const DOCUMENTED_CODES = [
  'malformed-json', 'unknown-type', 'missing-field', 'invalid-field', 'unknown-target', 'no-shared-room',
  'not-in-room', 'already-joined', 'room-full', 'too-many-rooms', 'message-too-large', 'binary-not-supported',
  'delivery-failed', 'unauthorized', 'forbidden', 'rate-limited', 'unexpected-message', 'unavailable',
  'unknown-room',
];

/**
 * Flags that switch the documented rate limits off, for the tests that flood on
 * purpose to measure something else (the send queue, ordering).
 */
function noRateLimit() {
  const flags = [];
  if (serverSupportsFlag('--rate-limit-messages')) flags.push('--rate-limit-messages', '0');
  if (serverSupportsFlag('--rate-limit-bytes')) flags.push('--rate-limit-bytes', '0');
  return flags;
}

after(async () => {
  await stopAllServers();
});

test('ping timeout: a client that never answers pings is dropped and its rooms get peer-left; a normal client stays', async () => {
  const server = await startServer(['--ping-interval', '300ms', '--ping-timeout', '300ms']);
  try {
    const room = 'pings';
    const watcher = await server.peer();
    await watcher.join(room);
    const lazy = await server.peer({ autoPong: false });
    // ws >= 8.17 honours autoPong: false (it then leaves _autoPong unset).
    assert.notEqual(lazy.ws._autoPong, true, 'the installed ws must support autoPong: false');
    await lazy.join(room);
    const normal = await server.peer();
    await normal.join(room);
    assert.deepEqual(await watcher.next(), { type: 'peer-joined', data: lazy.id, room });
    assert.deepEqual(await watcher.next(), { type: 'peer-joined', data: normal.id, room });

    const lazyId = lazy.id;
    const closeInfo = await lazy.waitClose(10000);
    assert.ok(lazy.pings > 0, 'the server should have pinged the lazy client before dropping it');
    assert.notEqual(closeInfo.code, 1000, `dropped, not closed normally: ${JSON.stringify(closeInfo)}`);
    assert.deepEqual(await watcher.next(5000), { type: 'peer-left', data: lazyId, room });
    assert.deepEqual(await normal.next(5000), { type: 'peer-left', data: lazyId, room });

    // The normal client, which answers pings, is still connected well after several timeouts.
    await sleep(1500);
    assert.equal(normal.isOpen, true, 'a client that answers pings must stay connected');
    assert.ok(normal.pings >= 2, `the normal client should have been pinged repeatedly (got ${normal.pings})`);
    await normal.assertAlive();
    await watcher.assertAlive();
    await watcher.expectNothing();
    await expectMetric(server, 'switchboard_ping_timeouts_total', 1);
  } finally {
    await server.stop();
  }
});

test('send queue overflow: the sender gets delivery-failed, the slow target is closed with 1008 and leaves its rooms', async () => {
  const server = await startServer(['--send-queue-messages', '8', '--send-queue-bytes', '1048576', ...noRateLimit()]);
  try {
    const room = 'slow';
    const sender = await server.peer({ perMessageDeflate: false });
    await sender.join(room);
    const slow = await server.peer({ perMessageDeflate: false });
    await slow.join(room);
    const watcher = await server.peer();
    await watcher.join(room);
    await sender.next(); // peer-joined slow
    await sender.next(); // peer-joined watcher
    await slow.next(); // peer-joined watcher
    const slowId = slow.id;

    slow.ws.pause(); // stop reading: the kernel buffers fill, then the server's queue
    const blob = 'x'.repeat(60000);
    let failure = null;
    let acks = 0;
    const other = []; // anything else the sender received meanwhile (peer-left)
    for (let i = 0; i < 2000 && !failure; i++) {
      sender.send({ type: 'signal', target: slowId, rid: i, blob });
      let reply;
      for (;;) {
        reply = await sender.next(5000, `the reply to relay ${i}`);
        if ((reply.type === 'ack' || reply.type === 'error') && reply.rid === i) break;
        other.push(reply);
      }
      if (reply.type === 'ack') {
        assert.deepEqual(reply, { type: 'ack', rid: i });
        acks += 1;
      } else {
        failure = reply;
      }
    }
    assert.ok(failure, `no delivery-failed after ${acks} acknowledged 60 kB relays to a client that does not read`);
    assertErrorShape(failure, 'delivery-failed', failure.rid);
    assert.ok(acks > 0, 'relays were acknowledged until the queue filled');

    // The target is being disconnected: its rooms see peer-left.
    assert.deepEqual(await watcher.next(5000), { type: 'peer-left', data: slowId, room });
    if (other.length === 0) other.push(await sender.next(5000));
    assert.deepEqual(other, [{ type: 'peer-left', data: slowId, room }]);
    await sender.assertAlive();
    await watcher.assertAlive();

    // Once it reads again, the slow client finds the connection closed with 1008.
    slow.ws.resume();
    const info = await slow.waitClose(15000);
    assert.equal(info.code, 1008, `close code for send-queue overflow: ${JSON.stringify(info)}`);
    await expectMetric(server, 'switchboard_slow_consumers_total', 1);
  } finally {
    await server.stop();
  }
});

test('graceful shutdown: SIGTERM → /readyz 503 during --shutdown-delay, then ws close 1001, then exit 0', async () => {
  const server = await startServer(['--shutdown-delay', '500ms']);
  const client = await server.peer();
  await client.join('shutdown');
  const echo = await server.connect('/ws/echo');
  const ready = await httpGet(server.httpUrl('/readyz'));
  assert.equal(ready.status, 200);

  server.signal('SIGTERM');
  let saw503 = null;
  const deadline = Date.now() + 5000;
  while (!saw503 && Date.now() < deadline && !client.closeInfo) {
    try {
      const res = await httpGet(server.httpUrl('/readyz'), { timeoutMs: 1000 });
      if (res.status === 503) saw503 = res;
    } catch {
      break; // listener gone
    }
  }
  assert.ok(saw503, '/readyz should answer 503 once shutdown has begun (during --shutdown-delay)');
  assert.deepEqual(JSON.parse(saw503.body), { status: 'shutting-down' });

  const info = await client.waitClose(10000);
  assert.equal(info.code, 1001, `signaling client close code: ${JSON.stringify(info)}`);
  const echoInfo = await echo.waitClose(10000);
  assert.equal(echoInfo.code, 1001, `echo client close code: ${JSON.stringify(echoInfo)}`);

  const exit = await Promise.race([server.exited, sleep(15000).then(() => null)]);
  assert.ok(exit, 'the process should exit after shutdown');
  assert.equal(exit.signal, null, `exit by signal ${exit.signal}`);
  assert.equal(exit.code, 0, 'exit code');
});

test('a burst of 400 pings with the rate limit off is answered with 400 pongs, each with its rid', async () => {
  const server = await startServer(noRateLimit());
  try {
    const c = await server.peer();
    const N = 400;
    for (let i = 0; i < N; i++) c.send({ type: 'ping', rid: i });
    for (let i = 0; i < N; i++) {
      assert.deepEqual(await c.next(5000), { type: 'pong', rid: i });
    }
  } finally {
    await server.stop();
  }
});

test('default rate limit: a burst is served, the excess gets rate-limited with its rid, a flood is closed with 1008', async () => {
  const server = await startServer();
  try {
    const c = await server.peer();
    const bystander = await server.peer();
    const N = 400;
    for (let i = 0; i < N; i++) c.send({ type: 'ping', rid: i });
    let pongs = 0;
    let limited = 0;
    for (let i = 0; i < N; i++) {
      const m = await c.next(5000).catch(() => null);
      if (m === null) break; // closed for flooding
      if (m.type === 'pong') {
        assert.deepEqual(m, { type: 'pong', rid: i });
        pongs += 1;
      } else {
        assert.equal(m.code, 'rate-limited', JSON.stringify(m));
        assert.deepEqual(m.rid, i, `the refusal echoes the rid: ${JSON.stringify(m)}`);
        assert.ok(DOCUMENTED_CODES.includes(m.code));
        limited += 1;
      }
    }
    assert.ok(pongs >= 200 && pongs < N, `a burst of twice the 100/s rate is served, not all: ${pongs}`);
    assert.ok(limited >= 1, 'the excess is refused with rate-limited');
    const info = await c.waitClose(5000);
    assert.equal(info.code, 1008, `a client that keeps flooding is closed: ${JSON.stringify(info)}`);
    bystander.send({ type: 'ping', rid: 'still-fine' });
    assert.deepEqual(await bystander.next(), { type: 'pong', rid: 'still-fine' });
  } finally {
    await server.stop();
  }
});

test('a 3 MB burst of relays to a peer that reads (rate limit off) is acknowledged and delivered in full', async () => {
  const server = await startServer(noRateLimit());
  try {
    const a = await server.peer({ perMessageDeflate: false });
    await a.join('burst');
    const b = await server.peer({ perMessageDeflate: false });
    await b.join('burst');
    await a.next(); // peer-joined b
    const blob = 'x'.repeat(60000);
    const N = 50;
    for (let i = 0; i < N; i++) a.send({ type: 'signal', target: b.id, rid: i, blob });
    for (let i = 0; i < N; i++) {
      const m = await a.next(5000);
      if (m.type === 'error') {
        assert.ok(DOCUMENTED_CODES.includes(m.code), `relay ${i} answered with an error code docs/protocol.md does not define: ${JSON.stringify(m).slice(0, 300)}`);
        assert.deepEqual(m.rid, i, `an error reply must carry the request's rid: ${JSON.stringify(m).slice(0, 300)}`);
      }
      assert.deepEqual(m, { type: 'ack', rid: i });
    }
    for (let i = 0; i < N; i++) {
      const m = await b.next(5000);
      assert.equal(m.rid, i);
      assert.equal(m.blob.length, blob.length);
    }
  } finally {
    await server.stop();
  }
});

test('documented defaults: 64 KiB messages, 64-byte room names, 1024-byte meta, 8 rooms per peer', async () => {
  const server = await startServer();
  try {
    const c = await server.peer({ perMessageDeflate: false });
    const ping = (len, rid) => {
      const base = JSON.stringify({ type: 'ping', rid, pad: '' });
      const text = JSON.stringify({ type: 'ping', rid, pad: 'x'.repeat(len - base.length) });
      assert.equal(Buffer.byteLength(text), len);
      return text;
    };
    c.send(ping(65536, 'max'));
    assert.deepEqual(await c.next(), { type: 'pong', rid: 'max' });
    c.send(ping(65536 + 100, 'over'));
    const tooLarge = await c.next();
    assert.equal(tooLarge.type, 'error', JSON.stringify(tooLarge));
    assert.equal(tooLarge.code, 'message-too-large');
    await c.assertAlive();

    assert.equal((await c.join('n'.repeat(64))).room, 'n'.repeat(64));
    c.send({ type: 'join', room: 'n'.repeat(65), rid: 'long' });
    assertErrorShape(await c.next(), 'invalid-field', 'long');

    const fits = { s: 'm'.repeat(1000) }; // 1010 bytes of JSON
    assert.equal((await c.join('meta-ok', { meta: fits })).room, 'meta-ok');
    c.send({ type: 'join', room: 'meta-big', meta: { s: 'm'.repeat(1100) }, rid: 'big' });
    assertErrorShape(await c.next(), 'invalid-field', 'big');

    for (let i = 3; i <= 8; i++) await c.join(`room-${i}`); // 8 rooms now
    c.send({ type: 'join', room: 'room-9', rid: 9 });
    assertErrorShape(await c.next(), 'too-many-rooms', 9);

    const huge = await server.peer({ perMessageDeflate: false });
    huge.send(ping(4 * 65536 + 1000, 'huge'));
    assert.equal((await huge.waitClose(5000)).code, 1009);
    await c.assertAlive();
  } finally {
    await server.stop();
  }
});
