// Every error code of docs/protocol.md, the size limits and the close codes.
// Each error must be exactly {"type":"error","code","message"(non-empty),"rid"?};
// afterwards the same connection still works and nothing else has happened
// (other peers in the room see nothing).

import assert from 'node:assert/strict';
import { after, before } from 'node:test';
import { assertErrorShape, expectError, startServer, test } from './harness.mjs';

const MAX_MESSAGE = 1024;
const MAX_NAME = 8;
const MAX_META = 64;

let server;
before(async () => {
  server = await startServer([
    '--max-message-size', String(MAX_MESSAGE),
    '--max-room-name-len', String(MAX_NAME),
    '--max-meta-size', String(MAX_META),
    '--max-rooms-per-peer', '2',
  ]);
});
after(async () => {
  await server?.stop();
});

let n = 0;
/** Short room names: the server here allows only 8 bytes. */
const room = () => `e${++n}`;

const FAKE_ID = 'AAAAAAAAAAAAAAAAAAAAAA';
const NO_DEFLATE = { perMessageDeflate: false };

/** x (the offender) and o (an observer) in one room. */
async function pair() {
  const r = room();
  const o = await server.peer(NO_DEFLATE);
  await o.join(r);
  const x = await server.peer(NO_DEFLATE);
  await x.join(r);
  assert.deepEqual(await o.next(), { type: 'peer-joined', data: x.id, room: r });
  return { r, x, o };
}

/** The observer saw nothing, and relay between the two still works. */
async function unaffected({ r, x, o }) {
  await o.expectNothing();
  await o.assertAlive();
  x.send({ type: 'signal', target: o.id, probe: true });
  assert.deepEqual(await o.next(), { type: 'signal', target: o.id, probe: true, from: x.id });
  o.send({ type: 'broadcast', room: r, data: 'still here' });
  assert.deepEqual(await x.next(), { type: 'broadcast', from: o.id, room: r, data: 'still here' });
}

test('malformed-json: frames that are not valid JSON', async () => {
  const p = await pair();
  for (const text of ['{not json', '{"type":"ping"', '', ' ', 'ping', '{"type":"ping",}', "{'type':'ping'}"]) {
    await expectError(p.x, text, 'malformed-json');
  }
  await unaffected(p);
});

test('malformed-json: valid JSON that is not an object', async () => {
  const p = await pair();
  for (const text of ['[1,2]', '[{"type":"ping"}]', '"ping"', '42', 'null', 'true']) {
    await expectError(p.x, text, 'malformed-json');
  }
  await unaffected(p);
});

test('unknown-type: type names no message the server knows (rid echoed)', async () => {
  const p = await pair();
  await expectError(p.x, { type: 'frobnicate' }, 'unknown-type');
  await expectError(p.x, { type: 'frobnicate', rid: 'u1' }, 'unknown-type', { rid: 'u1' });
  await expectError(p.x, { type: 'PING', rid: 2 }, 'unknown-type', { rid: 2 });
  await expectError(p.x, { type: '', rid: 3 }, 'unknown-type', { rid: 3 });
  await unaffected(p);
});

test('missing-field: type absent or null (rid echoed)', async () => {
  const p = await pair();
  await expectError(p.x, {}, 'missing-field');
  await expectError(p.x, { rid: 5 }, 'missing-field', { rid: 5 });
  await expectError(p.x, { type: null, rid: 'n' }, 'missing-field', { rid: 'n' });
  await expectError(p.x, { room: p.r, target: p.o.id }, 'missing-field');
  await unaffected(p);
});

test('missing-field: relay without target, or target null', async () => {
  const p = await pair();
  for (const type of ['sdp', 'ice-candidate', 'offer', 'answer', 'candidate', 'signal']) {
    await expectError(p.x, { type, sdp: 'v=0', rid: type }, 'missing-field', { rid: type });
  }
  await expectError(p.x, { type: 'offer', target: null, sdp: 'v=0' }, 'missing-field');
  await unaffected(p);
});

test('missing-field: broadcast without data, or data null', async () => {
  const p = await pair();
  await expectError(p.x, { type: 'broadcast', rid: 1 }, 'missing-field', { rid: 1 });
  await expectError(p.x, { type: 'broadcast', room: p.r }, 'missing-field');
  await expectError(p.x, { type: 'broadcast', room: p.r, data: null, rid: 'dn' }, 'missing-field', { rid: 'dn' });
  await unaffected(p);
});

test('missing-field: broadcast without room while in two rooms', async () => {
  const p = await pair();
  const r2 = room();
  await p.x.join(r2);
  await expectError(p.x, { type: 'broadcast', data: 'which room?', rid: 'amb' }, 'missing-field', { rid: 'amb' });
  await unaffected(p);
});

test('invalid-field: room name too long (bytes, not characters), empty, or not a string', async () => {
  const p = await pair();
  const ok = 'x'.repeat(MAX_NAME);
  const reply = await p.x.join(ok);
  assert.equal(reply.room, ok);
  p.x.send({ type: 'leave', room: ok });
  assert.deepEqual(await p.x.next(), { type: 'left', rooms: [ok] });
  for (const bad of ['y'.repeat(MAX_NAME + 1), 'é'.repeat(5) /* 10 bytes */, '']) {
    await expectError(p.x, { type: 'join', room: bad, rid: 'n' }, 'invalid-field', { rid: 'n' });
  }
  for (const bad of [5, {}, ['a'], true]) {
    await expectError(p.x, { type: 'join', room: bad }, 'invalid-field');
  }
  await unaffected(p);
});

test('invalid-field: room names with control characters', async () => {
  const p = await pair();
  for (const bad of ['a\u0000b', 'a\nb', 'tab\there', '\u001b[31m', 'del\u007f', 'c1\u0085']) {
    await expectError(p.x, { type: 'join', room: bad, rid: 'cc' }, 'invalid-field', { rid: 'cc' });
  }
  await unaffected(p);
});

test('invalid-field: meta not an object', async () => {
  const p = await pair();
  for (const meta of ['name', 5, ['a'], true]) {
    await expectError(p.x, { type: 'join', room: room(), meta, rid: 'm' }, 'invalid-field', { rid: 'm' });
  }
  await unaffected(p);
});

test('invalid-field: meta larger than --max-meta-size; a meta that fits is accepted', async () => {
  const p = await pair();
  const big = { name: 'z'.repeat(MAX_META) };
  await expectError(p.x, { type: 'join', room: room(), meta: big, rid: 'big' }, 'invalid-field', { rid: 'big' });
  const fits = { name: 'z'.repeat(MAX_META - 20) }; // 54 bytes of JSON
  assert.ok(JSON.stringify(fits).length <= MAX_META);
  const r = room();
  const reply = await p.x.join(r, { meta: fits });
  assert.equal(reply.type, 'joined');
  await unaffected(p);
});

test('invalid-field: capacity 0, negative, fractional, string or boolean', async () => {
  const p = await pair();
  for (const capacity of [0, -1, 1.5, '2', true]) {
    await expectError(p.x, { type: 'join', room: room(), capacity, rid: 'c' }, 'invalid-field', { rid: 'c' });
  }
  await unaffected(p);
});

test('invalid-field: rid that is not a string or integer, or a string over 64 bytes', async () => {
  const p = await pair();
  for (const rid of [{ a: 1 }, [1], 1.5, true, 'r'.repeat(100)]) {
    p.x.send({ type: 'ping', rid });
    const reply = await p.x.next();
    assert.equal(reply.type, 'error', `ping with rid ${JSON.stringify(rid)}: ${JSON.stringify(reply)}`);
    assert.equal(reply.code, 'invalid-field', JSON.stringify(reply));
    assert.ok(typeof reply.message === 'string' && reply.message.length > 0);
    await p.x.assertAlive();
  }
  await unaffected(p);
});

test('invalid-field / rid: at most 64 bytes of JSON (a 62-character string fits, 63 does not)', async () => {
  const p = await pair();
  const fits = 'r'.repeat(62); // "rrr…" is 64 bytes of JSON
  p.x.send({ type: 'ping', rid: fits });
  assert.deepEqual(await p.x.next(), { type: 'pong', rid: fits });
  p.x.send({ type: 'ping', rid: 'r'.repeat(63) });
  const reply = await p.x.next();
  assert.equal(reply.type, 'error', JSON.stringify(reply));
  assert.equal(reply.code, 'invalid-field', JSON.stringify(reply));
  await p.x.assertAlive();
  await unaffected(p);
});

test('invalid-field: a type that is not a string', async () => {
  const p = await pair();
  for (const type of [5, true, {}, ['ping']]) {
    await expectError(p.x, { type }, 'invalid-field');
  }
  await unaffected(p);
});

test('already-joined: join for a room the sender is in; membership unchanged', async () => {
  const p = await pair();
  await expectError(p.x, { type: 'join', room: p.r, rid: 'again' }, 'already-joined', { rid: 'again' });
  await unaffected(p);
});

test('too-many-rooms: a third room with --max-rooms-per-peer 2; after leaving one it works', async () => {
  const p = await pair();
  const r2 = room();
  await p.x.join(r2);
  const r3 = room();
  await expectError(p.x, { type: 'join', room: r3, rid: 3 }, 'too-many-rooms', { rid: 3 });
  await unaffected(p);
  p.x.send({ type: 'leave', room: r2 });
  assert.deepEqual(await p.x.next(), { type: 'left', rooms: [r2] });
  await p.x.join(r3);
});

test('room-full: join beyond the capacity', async () => {
  const p = await pair();
  const r = room();
  const a = await server.peer();
  await a.join(r, { capacity: 1 });
  await expectError(p.x, { type: 'join', room: r, rid: 'rf' }, 'room-full', { rid: 'rf' });
  await a.expectNothing();
  await unaffected(p);
});

test('unknown-target: relay to an id that is not connected', async () => {
  const p = await pair();
  await expectError(p.x, { type: 'offer', target: FAKE_ID, sdp: 'x', rid: 'ut' }, 'unknown-target', { rid: 'ut' });
  // a peer that disconnected is no longer a target
  const gone = await server.peer();
  await gone.join(p.r);
  await p.x.next(); // peer-joined
  await p.o.next();
  const goneId = gone.id;
  await gone.close();
  assert.deepEqual(await p.x.next(), { type: 'peer-left', data: goneId, room: p.r });
  assert.deepEqual(await p.o.next(), { type: 'peer-left', data: goneId, room: p.r });
  await expectError(p.x, { type: 'sdp', target: goneId, sdp: {} }, 'unknown-target');
  await unaffected(p);
});

test('no-shared-room: relay to a connected peer in another room', async () => {
  const p = await pair();
  const other = await server.peer();
  await other.join(room());
  await expectError(p.x, { type: 'candidate', target: other.id, candidate: {}, rid: 'ns' }, 'no-shared-room', { rid: 'ns' });
  // a connected peer in no room at all
  const lobby = await server.peer();
  await expectError(p.x, { type: 'candidate', target: lobby.id, candidate: {} }, 'no-shared-room');
  await other.expectNothing();
  await lobby.expectNothing();
  await unaffected(p);
});

test('not-in-room: relay before joining any room; leave or broadcast for a room not joined', async () => {
  const p = await pair();
  const loner = await server.peer(NO_DEFLATE);
  await expectError(loner, { type: 'offer', target: p.o.id, sdp: 'x', rid: 1 }, 'not-in-room', { rid: 1 });
  await expectError(loner, { type: 'broadcast', data: 'x', rid: 2 }, 'not-in-room', { rid: 2 });
  await expectError(loner, { type: 'broadcast', room: p.r, data: 'x' }, 'not-in-room');
  await expectError(loner, { type: 'leave', room: p.r, rid: 3 }, 'not-in-room', { rid: 3 });
  await expectError(p.x, { type: 'leave', room: room(), rid: 4 }, 'not-in-room', { rid: 4 });
  await expectError(p.x, { type: 'broadcast', room: room(), data: 1 }, 'not-in-room');
  await unaffected(p);
});

test('message-too-large: a frame just over --max-message-size is refused, the connection stays open', async () => {
  const p = await pair();
  const base = JSON.stringify({ type: 'broadcast', room: p.r, data: '' });
  const over = JSON.stringify({ type: 'broadcast', room: p.r, data: 'x'.repeat(MAX_MESSAGE + 100 - base.length) });
  assert.equal(Buffer.byteLength(over), MAX_MESSAGE + 100);
  await expectError(p.x, over, 'message-too-large');
  assert.equal(p.x.isOpen, true);
  await unaffected(p);
});

test('message-too-large: a frame of exactly --max-message-size bytes is processed', async () => {
  const p = await pair();
  const base = JSON.stringify({ type: 'ping', rid: 'exact', pad: '' });
  const exact = JSON.stringify({ type: 'ping', rid: 'exact', pad: 'x'.repeat(MAX_MESSAGE - base.length) });
  assert.equal(Buffer.byteLength(exact), MAX_MESSAGE);
  p.x.send(exact);
  assert.deepEqual(await p.x.next(), { type: 'pong', rid: 'exact' });
  const base2 = JSON.stringify({ type: 'broadcast', room: p.r, data: '' });
  const data = 'y'.repeat(MAX_MESSAGE - base2.length);
  p.x.send(JSON.stringify({ type: 'broadcast', room: p.r, data }));
  assert.deepEqual(await p.o.next(), { type: 'broadcast', from: p.x.id, room: p.r, data });
});

test('a frame over 4 × --max-message-size closes the socket with 1009; the room sees peer-left', async () => {
  const p = await pair();
  const huge = JSON.stringify({ type: 'ping', pad: 'x'.repeat(4 * MAX_MESSAGE + 200) });
  const xId = p.x.id;
  p.x.send(huge);
  const { code } = await p.x.waitClose(5000);
  assert.equal(code, 1009, `close code for a ${huge.length}-byte frame`);
  assert.deepEqual(await p.o.next(), { type: 'peer-left', data: xId, room: p.r });
  await p.o.assertAlive();
});

test('binary-not-supported: a binary frame on /ws; the connection stays open', async () => {
  const p = await pair();
  await expectError(p.x, Buffer.from(JSON.stringify({ type: 'ping', rid: 1 })), 'binary-not-supported');
  await expectError(p.x, Buffer.from([0, 1, 2, 255]), 'binary-not-supported');
  await unaffected(p);
});

test('invalid UTF-8 in a text frame closes the socket with 1007', async () => {
  const p = await pair();
  const bytes = Buffer.concat([Buffer.from('{"type":"ping","x":"'), Buffer.from([0xc3, 0x28, 0xff]), Buffer.from('"}')]);
  const xId = p.x.id;
  p.x.send(bytes, { binary: false });
  const { code } = await p.x.waitClose(5000);
  assert.equal(code, 1007);
  assert.deepEqual(await p.o.next(), { type: 'peer-left', data: xId, room: p.r });
  await p.o.assertAlive();
});

test('after a run of every kind of error the connection still relays normally', async () => {
  const p = await pair();
  const errors = [
    ['{bad', 'malformed-json'],
    [{ type: 'nope' }, 'unknown-type'],
    [{ type: 'offer' }, 'missing-field'],
    [{ type: 'join', room: '' }, 'invalid-field'],
    [{ type: 'offer', target: FAKE_ID }, 'unknown-target'],
    [{ type: 'join', room: p.r }, 'already-joined'],
    [Buffer.from('x'), 'binary-not-supported'],
  ];
  for (const [msg, code] of errors) {
    const reply = await p.x.request(msg);
    assertErrorShape(reply, code);
  }
  await unaffected(p);
});
