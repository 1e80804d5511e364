// Extended signaling protocol on /ws: rooms, meta, capacity, relay types,
// broadcast, leave, multi-room peers, request ids, ordering, isolation.

import assert from 'node:assert/strict';
import { after, before } from 'node:test';
import { PEER_ID_RE, assertErrorShape, serverSupportsFlag, startServer, test, uniqueRoom } from './harness.mjs';

let server;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server?.stop();
});

const FAKE_ID = 'AAAAAAAAAAAAAAAAAAAAAA';

/** Asserts a `joined` reply, allowing `capacity` to be absent or a positive integer when none was expected. */
function assertJoined(reply, expected) {
  const { capacity, ...rest } = reply;
  const { capacity: expectedCapacity, ...expectedRest } = expected;
  assert.deepEqual(rest, expectedRest, `joined: ${JSON.stringify(reply)}`);
  if (expectedCapacity !== undefined) {
    assert.equal(capacity, expectedCapacity, `joined.capacity: ${JSON.stringify(reply)}`);
  } else if (capacity !== undefined) {
    assert.ok(Number.isInteger(capacity) && capacity > 0, `joined.capacity must be a positive integer: ${JSON.stringify(reply)}`);
  }
}

/** n peers joined to `room` in order; earlier peers' peer-joined notifications are consumed. */
async function peersIn(room, n, metas = []) {
  const peers = [];
  for (let i = 0; i < n; i++) {
    const p = await server.peer();
    await p.join(room, metas[i] === undefined ? {} : { meta: metas[i] });
    for (const earlier of peers) {
      const pj = await earlier.next();
      assert.equal(pj.type, 'peer-joined', `expected peer-joined, got ${JSON.stringify(pj)}`);
      assert.equal(pj.data, p.id);
    }
    peers.push(p);
  }
  return peers;
}

test('welcome: every connection gets a distinct 22-character URL-safe id', async () => {
  const ids = new Set();
  for (let i = 0; i < 20; i++) {
    const c = await server.connect('/ws');
    const msg = await c.next();
    assert.equal(msg.type, 'welcome');
    assert.deepEqual(Object.keys(msg).sort(), ['id', 'type']);
    assert.match(msg.id, PEER_ID_RE, `peer id ${JSON.stringify(msg.id)}`);
    assert.ok(!ids.has(msg.id), `duplicate peer id ${msg.id}`);
    ids.add(msg.id);
    await c.expectNothing(20); // nothing but the welcome before the client speaks
    c.terminate();
  }
  assert.equal(ids.size, 20);
});

test('welcome carries the configured STUN/TURN servers as iceServers (--ice-server)', async () => {
  const withTurnCredentials = serverSupportsFlag('--turn-username') && serverSupportsFlag('--turn-credential');
  const args = ['--ice-server', 'stun:stun.example.org:3478', '--ice-server', 'turn:turn.example.org:3478'];
  if (withTurnCredentials) args.push('--turn-username', 'u', '--turn-credential', 'p');
  const ice = await startServer(args);
  try {
    const c = await ice.connect('/ws');
    const msg = await c.next();
    assert.equal(msg.type, 'welcome');
    assert.match(msg.id, PEER_ID_RE);
    // The example of docs/protocol.md, exactly.
    assert.deepEqual(msg, {
      type: 'welcome',
      id: msg.id,
      iceServers: [
        { urls: ['stun:stun.example.org:3478'] },
        withTurnCredentials
          ? { urls: ['turn:turn.example.org:3478'], username: 'u', credential: 'p' }
          : { urls: ['turn:turn.example.org:3478'] },
      ],
    });
    // the seed flow is unaffected by the extra field
    await c.join(undefined);
  } finally {
    await ice.stop();
  }
});

test('join with room, meta and capacity: joined lists the peers already there; the others get peer-joined with room and meta', async () => {
  const room = uniqueRoom('call');
  const a = await server.peer();
  a.send({ type: 'join', room, meta: { name: 'Ada' }, capacity: 3, rid: 1 });
  assert.deepEqual(await a.next(), { type: 'joined', room, capacity: 3, peers: [], rid: 1 });

  const b = await server.peer();
  b.send({ type: 'join', room, meta: { name: 'Bo', tags: ['x', { y: 1 }] } });
  assert.deepEqual(await b.next(), {
    type: 'joined',
    room,
    capacity: 3,
    peers: [{ id: a.id, meta: { name: 'Ada' } }],
  });
  assert.deepEqual(await a.next(), {
    type: 'peer-joined',
    data: b.id,
    room,
    meta: { name: 'Bo', tags: ['x', { y: 1 }] },
  });

  // A peer without meta: listed without a meta key, announced without one.
  const c = await server.peer();
  c.send({ type: 'join', room, rid: 'c-join' });
  assert.deepEqual(await c.next(), {
    type: 'joined',
    room,
    capacity: 3,
    peers: [
      { id: a.id, meta: { name: 'Ada' } },
      { id: b.id, meta: { name: 'Bo', tags: ['x', { y: 1 }] } },
    ],
    rid: 'c-join',
  });
  assert.deepEqual(await a.next(), { type: 'peer-joined', data: c.id, room });
  assert.deepEqual(await b.next(), { type: 'peer-joined', data: c.id, room });
  await a.expectNothing();
});

test('joined.peers is in join order, including peers without meta', async () => {
  const room = uniqueRoom('order');
  const [p1, p2, p3] = await peersIn(room, 3, [undefined, { n: 2 }, undefined]);
  const p4 = await server.peer();
  const reply = await p4.join(room);
  assertJoined(reply, { type: 'joined', room, peers: [{ id: p1.id }, { id: p2.id, meta: { n: 2 } }, { id: p3.id }] });
});

test('join without room joins "default"; unknown fields on a join are allowed', async () => {
  const a = await server.peer();
  a.send({ type: 'join', rid: 9, 'x-client': 'seed/1.0', extra: { nested: true } });
  const reply = await a.next();
  assert.equal(reply.type, 'joined', JSON.stringify(reply));
  assert.equal(reply.room, 'default');
  assert.equal(reply.rid, 9);
  assert.ok(Array.isArray(reply.peers));
  a.send({ type: 'leave', room: 'default', rid: 10 });
  assert.deepEqual(await a.next(), { type: 'left', rooms: ['default'], rid: 10 });
});

test('room names may be any UTF-8 without control characters', async () => {
  for (const room of ['Café ☕', 'a', 'with spaces and/slashes?&=#', '日本語の部屋']) {
    const a = await server.peer();
    const reply = await a.join(room);
    assert.equal(reply.room, room);
    a.terminate();
  }
});

test('a later join\'s capacity is ignored; joined reports the capacity in force', async () => {
  const room = uniqueRoom('cap');
  const a = await server.peer();
  assertJoined(await a.join(room, { capacity: 2 }), { type: 'joined', room, capacity: 2, peers: [] });
  const b = await server.peer();
  assertJoined(await b.join(room, { capacity: 10 }), { type: 'joined', room, capacity: 2, peers: [{ id: a.id }] });
  await a.next(); // peer-joined b
  const c = await server.peer();
  c.send({ type: 'join', room, capacity: 10, rid: 'c' });
  const err = await c.next();
  assertErrorShape(err, 'room-full', 'c');
  await a.expectNothing();
  await b.expectNothing();
});

test('capacity 2: the third peer gets room-full and nothing else happens; a freed seat can be taken', async () => {
  const room = uniqueRoom('full');
  const a = await server.peer();
  await a.join(room, { capacity: 2 });
  const b = await server.peer();
  await b.join(room);
  await a.next(); // peer-joined b
  const c = await server.peer();
  c.send({ type: 'join', room, rid: 3 });
  assertErrorShape(await c.next(), 'room-full', 3);
  await a.expectNothing();
  await b.expectNothing();
  // c is not in the room: relaying to a is refused
  c.send({ type: 'offer', target: a.id, sdp: 'x', rid: 4 });
  const e2 = await c.next();
  assert.equal(e2.type, 'error', JSON.stringify(e2));
  assert.ok(['not-in-room', 'no-shared-room'].includes(e2.code), `relay after a refused join: ${JSON.stringify(e2)}`);
  await a.expectNothing();
  // b leaves; c can now join, and learns the capacity in force
  b.send({ type: 'leave', room });
  assert.deepEqual(await b.next(), { type: 'left', rooms: [room] });
  assert.deepEqual(await a.next(), { type: 'peer-left', data: b.id, room });
  assertJoined(await c.join(room), { type: 'joined', room, capacity: 2, peers: [{ id: a.id }] });
  assert.deepEqual(await a.next(), { type: 'peer-joined', data: c.id, room });
});

test('a room lives while it has members: once empty, the next join creates it afresh with its own capacity', async () => {
  const room = uniqueRoom('life');
  const a = await server.peer();
  await a.join(room, { capacity: 1 });
  a.send({ type: 'leave', room });
  assert.deepEqual(await a.next(), { type: 'left', rooms: [room] });
  const b = await server.peer();
  assertJoined(await b.join(room, { capacity: 5 }), { type: 'joined', room, capacity: 5, peers: [] });
});

for (const type of ['offer', 'answer', 'candidate', 'signal', 'sdp', 'ice-candidate']) {
  test(`relay "${type}": delivered to target with every field kept and from set; no ack without rid`, async () => {
    const room = uniqueRoom(type);
    const [a, b, c] = await peersIn(room, 3);
    const msg = {
      type,
      target: b.id,
      sdp: 'v=0\r\n...',
      candidate: { candidate: 'candidate:1 1 udp 2113937151 192.0.2.7 54321 typ host', sdpMid: '0', sdpMLineIndex: 0 },
      payload: { nested: { arr: [1, 'two', null, false, { three: 3 }] }, unicode: 'ü☃' },
      from: 'forged',
    };
    a.send(msg);
    assert.deepEqual(await b.next(), { ...msg, from: a.id });
    await a.expectNothing();
    await c.expectNothing();
  });
}

test('relay with rid: the sender gets exactly {"type":"ack","rid":...}; the target gets every field, rid included', async () => {
  const room = uniqueRoom('ack');
  const [a, b] = await peersIn(room, 2);
  a.send({ type: 'offer', target: b.id, sdp: 'o', rid: 'r-1' });
  assert.deepEqual(await a.next(), { type: 'ack', rid: 'r-1' });
  assert.deepEqual(await b.next(), { type: 'offer', target: b.id, sdp: 'o', rid: 'r-1', from: a.id });
  b.send({ type: 'answer', target: a.id, sdp: 'a', rid: 77 });
  assert.deepEqual(await b.next(), { type: 'ack', rid: 77 });
  assert.deepEqual(await a.next(), { type: 'answer', target: a.id, sdp: 'a', rid: 77, from: b.id });
});

test('relay works when the peers share one of several rooms', async () => {
  const r1 = uniqueRoom('m1');
  const r2 = uniqueRoom('m2');
  const a = await server.peer();
  await a.join(r1);
  await a.join(r2);
  const b = await server.peer();
  await b.join(r2);
  assert.deepEqual(await a.next(), { type: 'peer-joined', data: b.id, room: r2 });
  b.send({ type: 'signal', target: a.id, data: { hello: 1 } });
  assert.deepEqual(await a.next(), { type: 'signal', target: a.id, data: { hello: 1 }, from: b.id });
});

test('broadcast reaches every other peer in the room, never the sender, with from, room and data', async () => {
  const room = uniqueRoom('bc');
  const [a, b, c, d] = await peersIn(room, 4);
  const outsider = await server.peer();
  await outsider.join(uniqueRoom('bc-other'));
  const payloads = [{ text: 'hi', nested: { list: [1, { two: 2 }] } }, [1, 2, 3], 'plain string', 42, 0, false, true, {}, []];
  for (const data of payloads) {
    a.send({ type: 'broadcast', data });
    for (const p of [b, c, d]) {
      assert.deepEqual(await p.next(), { type: 'broadcast', from: a.id, room, data });
    }
  }
  // with an explicit room too
  c.send({ type: 'broadcast', room, data: { from: 'c' } });
  for (const p of [a, b, d]) {
    assert.deepEqual(await p.next(), { type: 'broadcast', from: c.id, room, data: { from: 'c' } });
  }
  await a.expectNothing();
  await c.expectNothing();
  await outsider.expectNothing();
});

test('broadcast with rid: the sender gets ack; receivers get exactly type/from/room/data', async () => {
  const room = uniqueRoom('bcack');
  const [a, b] = await peersIn(room, 2);
  a.send({ type: 'broadcast', data: { x: 1 }, rid: 5 });
  assert.deepEqual(await a.next(), { type: 'ack', rid: 5 });
  assert.deepEqual(await b.next(), { type: 'broadcast', from: a.id, room, data: { x: 1 } });
  a.send({ type: 'broadcast', room, data: 'y', rid: 'bc-2' });
  assert.deepEqual(await a.next(), { type: 'ack', rid: 'bc-2' });
  assert.deepEqual(await b.next(), { type: 'broadcast', from: a.id, room, data: 'y' });
});

test('broadcast from a peer in two rooms with room given goes to that room only', async () => {
  const r1 = uniqueRoom('two-a');
  const r2 = uniqueRoom('two-b');
  const x = await server.peer();
  await x.join(r1);
  await x.join(r2);
  const p1 = await server.peer();
  await p1.join(r1);
  const p2 = await server.peer();
  await p2.join(r2);
  assert.deepEqual(await x.next(), { type: 'peer-joined', data: p1.id, room: r1 });
  assert.deepEqual(await x.next(), { type: 'peer-joined', data: p2.id, room: r2 });
  x.send({ type: 'broadcast', room: r2, data: 'to-r2' });
  assert.deepEqual(await p2.next(), { type: 'broadcast', from: x.id, room: r2, data: 'to-r2' });
  await p1.expectNothing();
  x.send({ type: 'broadcast', room: r1, data: 'to-r1' });
  assert.deepEqual(await p1.next(), { type: 'broadcast', from: x.id, room: r1, data: 'to-r1' });
  await p2.expectNothing();
});

test('leave one room: reply left with that room (rid echoed); the others get peer-left; the leaver hears no more of it', async () => {
  const room = uniqueRoom('leave');
  const [a, b, c] = await peersIn(room, 3);
  b.send({ type: 'leave', room, rid: 'bye' });
  assert.deepEqual(await b.next(), { type: 'left', rooms: [room], rid: 'bye' });
  assert.deepEqual(await a.next(), { type: 'peer-left', data: b.id, room });
  assert.deepEqual(await c.next(), { type: 'peer-left', data: b.id, room });
  a.send({ type: 'broadcast', room, data: 'after' });
  assert.deepEqual(await c.next(), { type: 'broadcast', from: a.id, room, data: 'after' });
  await b.expectNothing();
  // b can rejoin; joined lists a and c in join order
  assertJoined(await b.join(room), { type: 'joined', room, peers: [{ id: a.id }, { id: c.id }] });
});

test('leave without room leaves every room; the others in each room get peer-left', async () => {
  const r1 = uniqueRoom('all-1');
  const r2 = uniqueRoom('all-2');
  const x = await server.peer();
  await x.join(r1);
  await x.join(r2);
  const p1 = await server.peer();
  await p1.join(r1);
  const p2 = await server.peer();
  await p2.join(r2);
  await x.next(); // peer-joined p1
  await x.next(); // peer-joined p2
  x.send({ type: 'leave', rid: 2 });
  const left = await x.next();
  assert.equal(left.type, 'left', JSON.stringify(left));
  assert.equal(left.rid, 2);
  assert.deepEqual(Object.keys(left).sort(), ['rid', 'rooms', 'type']);
  assert.deepEqual([...left.rooms].sort(), [r1, r2].sort());
  assert.deepEqual(await p1.next(), { type: 'peer-left', data: x.id, room: r1 });
  assert.deepEqual(await p2.next(), { type: 'peer-left', data: x.id, room: r2 });
  // x is in no room now
  x.send({ type: 'broadcast', data: 1, rid: 'nr' });
  assertErrorShape(await x.next(), 'not-in-room', 'nr');
});

test('a peer in two rooms sees each room\'s events with the right room; its disconnect produces one peer-left per room', async () => {
  const r1 = uniqueRoom('dual-1');
  const r2 = uniqueRoom('dual-2');
  const watcher = await server.peer();
  await watcher.join(r1);
  await watcher.join(r2);
  const x = await server.peer();
  await x.join(r1);
  assert.deepEqual(await watcher.next(), { type: 'peer-joined', data: x.id, room: r1 });
  await x.join(r2);
  assert.deepEqual(await watcher.next(), { type: 'peer-joined', data: x.id, room: r2 });
  const only1 = await server.peer();
  await only1.join(r1);
  assert.deepEqual(await watcher.next(), { type: 'peer-joined', data: only1.id, room: r1 });
  assert.deepEqual(await x.next(), { type: 'peer-joined', data: only1.id, room: r1 });
  const xId = x.id;
  x.terminate();
  const got = [await watcher.next(), await watcher.next()];
  got.sort((m, n) => (m.room < n.room ? -1 : 1));
  assert.deepEqual(got, [
    { type: 'peer-left', data: xId, room: r1 },
    { type: 'peer-left', data: xId, room: r2 },
  ].sort((m, n) => (m.room < n.room ? -1 : 1)));
  assert.deepEqual(await only1.next(), { type: 'peer-left', data: xId, room: r1 });
  await watcher.expectNothing();
  await only1.expectNothing();
});

test('rid is echoed on joined, left, pong, ack and error, for string and integer rids', async () => {
  for (const rid of ['req-1', 'x'.repeat(40), 0, 42, 9007199254740991]) {
    const room = uniqueRoom('rid');
    const a = await server.peer();
    const b = await server.peer();
    await b.join(room);
    a.send({ type: 'join', room, rid });
    const joined = await a.next();
    assert.equal(joined.type, 'joined');
    assert.deepEqual(joined.rid, rid, `joined rid: ${JSON.stringify(joined)}`);
    await b.next(); // peer-joined a
    a.send({ type: 'ping', rid });
    assert.deepEqual(await a.next(), { type: 'pong', rid });
    a.send({ type: 'signal', target: b.id, rid });
    assert.deepEqual(await a.next(), { type: 'ack', rid });
    await b.next(); // the signal
    a.send({ type: 'broadcast', data: 'd', room, rid });
    assert.deepEqual(await a.next(), { type: 'ack', rid });
    await b.next(); // the broadcast
    a.send({ type: 'no-such-type', rid });
    assertErrorShape(await a.next(), 'unknown-type', rid);
    a.send({ type: 'leave', room, rid });
    assert.deepEqual(await a.next(), { type: 'left', rooms: [room], rid });
    await b.next(); // peer-left a
    a.terminate();
    b.terminate();
  }
});

test('ping → exactly {"type":"pong"}; with rid → {"type":"pong","rid":...}; works outside any room', async () => {
  const a = await server.peer();
  a.send({ type: 'ping' });
  assert.deepEqual(await a.next(), { type: 'pong' });
  a.send({ type: 'ping', rid: 'p' });
  assert.deepEqual(await a.next(), { type: 'pong', rid: 'p' });
  a.send({ type: 'ping', rid: 1, extra: 'ignored' });
  assert.deepEqual(await a.next(), { type: 'pong', rid: 1 });
  await a.expectNothing();
});

test('order: everything one peer sends reaches each recipient in the order sent', async () => {
  const room = uniqueRoom('seq');
  const [a, b, c] = await peersIn(room, 3);
  const N = 150;
  for (let i = 0; i < N; i++) {
    if (i % 3 === 0) a.send({ type: 'candidate', target: b.id, seq: i });
    else a.send({ type: 'broadcast', data: { seq: i } });
  }
  for (let i = 0; i < N; i++) {
    const m = await b.next();
    const seq = m.type === 'candidate' ? m.seq : m.data?.seq;
    assert.equal(seq, i, `b: message ${i} out of order: ${JSON.stringify(m)}`);
  }
  for (let i = 0; i < N; i++) {
    if (i % 3 === 0) continue;
    const m = await c.next();
    assert.deepEqual(m, { type: 'broadcast', from: a.id, room, data: { seq: i } });
  }
});

test('a newcomer receives joined before any peer-joined of that room', async () => {
  for (let round = 0; round < 5; round++) {
    const room = uniqueRoom('newcomer');
    const a = await server.peer();
    await a.join(room);
    const b = await server.peer();
    const c = await server.peer();
    // b and c join at (almost) the same time
    b.send({ type: 'join', room });
    c.send({ type: 'join', room });
    for (const [me, other] of [[b, c], [c, b]]) {
      const first = await me.next();
      assert.equal(first.type, 'joined', `first message after join must be joined, got ${JSON.stringify(first)}`);
      const ids = first.peers.map((p) => p.id);
      assert.equal(ids[0], a.id);
      if (!ids.includes(other.id)) {
        assert.deepEqual(await me.next(), { type: 'peer-joined', data: other.id, room });
      }
      await me.expectNothing(50);
    }
    a.terminate();
    b.terminate();
    c.terminate();
  }
});

test('isolation: peers in room A receive nothing of room B\'s joins, broadcasts, relays and leaves', async () => {
  const ra = uniqueRoom('iso-a');
  const rb = uniqueRoom('iso-b');
  const [a1, a2] = await peersIn(ra, 2);
  const [b1, b2] = await peersIn(rb, 2);
  const b3 = await server.peer();
  await b3.join(rb, { meta: { secret: true } });
  await b1.next();
  await b2.next();
  b1.send({ type: 'broadcast', data: 'b-only' });
  await b2.next();
  await b3.next();
  b1.send({ type: 'offer', target: b2.id, sdp: 'x' });
  await b2.next();
  b2.send({ type: 'leave', room: rb });
  await b2.next(); // left
  await b1.next(); // peer-left
  await b3.next();
  const b1Id = b1.id;
  b1.terminate();
  assert.deepEqual(await b3.next(), { type: 'peer-left', data: b1Id, room: rb });
  await a1.expectNothing();
  await a2.expectNothing();
  // and the other way round
  a1.send({ type: 'broadcast', data: 'a-only' });
  assert.deepEqual(await a2.next(), { type: 'broadcast', from: a1.id, room: ra, data: 'a-only' });
  await b3.expectNothing();
});

test('isolation: relay to a peer in another room → no-shared-room; to an unknown id → unknown-target; before joining → not-in-room', async () => {
  const ra = uniqueRoom('iso-ra');
  const rb = uniqueRoom('iso-rb');
  const [a, a2] = await peersIn(ra, 2);
  const [b] = await peersIn(rb, 1);
  a.send({ type: 'offer', target: b.id, sdp: 'x', rid: 'ns' });
  assertErrorShape(await a.next(), 'no-shared-room', 'ns');
  a.send({ type: 'sdp', target: FAKE_ID, sdp: {} });
  assertErrorShape(await a.next(), 'unknown-target');
  const loner = await server.peer();
  loner.send({ type: 'ice-candidate', target: a.id, candidate: {}, rid: 1 });
  assertErrorShape(await loner.next(), 'not-in-room', 1);
  await b.expectNothing();
  await a.expectNothing();
  await a2.expectNothing();
  await a.assertAlive();
  await loner.assertAlive();
});

test('capacity is capped by --max-peers-per-room', async () => {
  const capped = await startServer(['--max-peers-per-room', '3']);
  try {
    const room = 'capped';
    const peers = [];
    for (let i = 0; i < 3; i++) {
      const p = await capped.peer();
      const reply = await p.join(room, i === 0 ? { capacity: 50 } : {});
      assert.equal(reply.capacity, 3, `joined must report the capacity in force: ${JSON.stringify(reply)}`);
      peers.push(p);
    }
    const p4 = await capped.peer();
    p4.send({ type: 'join', room, capacity: 50 });
    assertErrorShape(await p4.next(), 'room-full');
    // a room created without capacity is capped too
    const other = [];
    for (let i = 0; i < 3; i++) {
      const p = await capped.peer();
      await p.join('uncapped');
      other.push(p);
    }
    const last = await capped.peer();
    last.send({ type: 'join', room: 'uncapped', rid: 'x' });
    assertErrorShape(await last.next(), 'room-full', 'x');
  } finally {
    await capped.stop();
  }
});
