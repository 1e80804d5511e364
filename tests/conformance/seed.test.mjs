// Seed flows: a client written for the seeds' Node signaling server
// (join / peer-joined / sdp / ice-candidate / peer-left, room "default")
// must work unchanged against /ws.
//
// Every test gets its own server, because the seed protocol has one room
// ("default") and a leftover peer from an earlier test would show up in it.

import assert from 'node:assert/strict';
import { after, afterEach, beforeEach } from 'node:test';
import { WebSocket, startServer, test, sleep } from './harness.mjs';

let server;
beforeEach(async () => {
  server = await startServer();
});
afterEach(async () => {
  await server?.stop();
  server = undefined;
});
after(async () => {
  await server?.stop();
});

/** Connects, reads the welcome, sends the seed's bare {"type":"join"}. */
async function seedPeer() {
  const c = await server.peer();
  c.send({ type: 'join' });
  const joined = await c.next();
  // The seed client ignores this reply; it must still be the documented one.
  assert.equal(joined.type, 'joined', `reply to {"type":"join"}: ${JSON.stringify(joined)}`);
  assert.equal(joined.room, 'default');
  return c;
}

test('seed: {"type":"join"} announces exactly {"type":"peer-joined","data":<id>,"room":"default"} to the others', async () => {
  const a = await seedPeer();
  const b = await seedPeer();
  assert.deepEqual(await a.next(), { type: 'peer-joined', data: b.id, room: 'default' });
  await b.expectNothing();
  const c = await seedPeer();
  assert.deepEqual(await a.next(), { type: 'peer-joined', data: c.id, room: 'default' });
  assert.deepEqual(await b.next(), { type: 'peer-joined', data: c.id, room: 'default' });
  await c.expectNothing();
});

test('seed: the joiner is listed to later joiners in "joined"', async () => {
  const a = await seedPeer();
  const b = await server.peer();
  b.send({ type: 'join' });
  const joined = await b.next();
  assert.equal(joined.type, 'joined');
  assert.equal(joined.room, 'default');
  assert.deepEqual(joined.peers, [{ id: a.id }]);
});

test('seed: sdp with target reaches the target with every field (nested too) and from = sender', async () => {
  const a = await seedPeer();
  const b = await seedPeer();
  await a.next(); // peer-joined b
  const offer = {
    type: 'sdp',
    target: b.id,
    sdp: { type: 'offer', sdp: 'v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n' },
    extra: { nested: { deep: [1, 2, { x: null, y: true }] }, n: 1.5 },
  };
  a.send(offer);
  assert.deepEqual(await b.next(), { ...offer, from: a.id });
  await a.expectNothing(); // no ack without rid, no echo
});

test('seed: ice-candidate with target reaches the target with every field and from = sender', async () => {
  const a = await seedPeer();
  const b = await seedPeer();
  await a.next(); // peer-joined b
  const cand = {
    type: 'ice-candidate',
    target: a.id,
    candidate: {
      candidate: 'candidate:842163049 1 udp 1677729535 192.0.2.1 3478 typ srflx raddr 0.0.0.0 rport 0 generation 0',
      sdpMid: '0',
      sdpMLineIndex: 0,
      usernameFragment: 'EsRm',
    },
  };
  b.send(cand);
  assert.deepEqual(await a.next(), { ...cand, from: b.id });
  await b.expectNothing();
});

test('seed: a client-supplied "from" is overwritten with the real sender id', async () => {
  const a = await seedPeer();
  const b = await seedPeer();
  const c = await seedPeer();
  await a.next(); // peer-joined b
  await a.next(); // peer-joined c
  await b.next(); // peer-joined c
  const forged = { type: 'sdp', target: b.id, from: c.id, sdp: { type: 'offer', sdp: 'v=0' } };
  a.send(forged);
  const got = await b.next();
  assert.equal(got.from, a.id, `from must be the real sender, got ${JSON.stringify(got)}`);
  assert.deepEqual(got, { ...forged, from: a.id });
  const forged2 = { type: 'ice-candidate', target: b.id, from: 'nobody-at-all', candidate: {} };
  a.send(forged2);
  assert.deepEqual(await b.next(), { ...forged2, from: a.id });
  await c.expectNothing();
});

test('seed: on close the others get exactly {"type":"peer-left","data":<id>,"room":"default"}', async () => {
  const a = await seedPeer();
  const b = await seedPeer();
  const c = await seedPeer();
  await a.next(); // peer-joined b
  await a.next(); // peer-joined c
  await b.next(); // peer-joined c
  const bId = b.id;
  await b.close();
  assert.deepEqual(await a.next(), { type: 'peer-left', data: bId, room: 'default' });
  assert.deepEqual(await c.next(), { type: 'peer-left', data: bId, room: 'default' });
  // An abrupt disconnect (no close frame) counts too.
  const cId = c.id;
  c.terminate();
  assert.deepEqual(await a.next(), { type: 'peer-left', data: cId, room: 'default' });
  await a.expectNothing();
});

// A literal seed-style client: browser-style event handlers, JSON.stringify on
// send, JSON.parse on receive, and it ignores every message type it does not
// know (welcome, joined, ...). Two of them run a full offer/answer/ICE exchange.
function seedStyleClient(url, name, log) {
  const ws = new WebSocket(url);
  const state = { name, ws, remote: null, done: null };
  state.done = new Promise((resolve, reject) => {
    state.finish = resolve;
    state.fail = reject;
  });
  ws.onopen = () => {
    ws.send(JSON.stringify({ type: 'join' }));
  };
  ws.onmessage = (message) => {
    const data = JSON.parse(message.data);
    log.push(`${name} <- ${data.type}`);
    if (data.type === 'peer-joined') {
      // The established peer calls the newcomer.
      state.remote = data.data;
      ws.send(JSON.stringify({ type: 'sdp', target: data.data, sdp: { type: 'offer', sdp: `offer from ${name}` } }));
    } else if (data.type === 'sdp' && data.sdp.type === 'offer') {
      state.remote = data.from;
      ws.send(JSON.stringify({ type: 'sdp', target: data.from, sdp: { type: 'answer', sdp: `answer from ${name}` } }));
      ws.send(JSON.stringify({ type: 'ice-candidate', target: data.from, candidate: { candidate: `cand-${name}`, sdpMid: '0' } }));
    } else if (data.type === 'sdp' && data.sdp.type === 'answer') {
      ws.send(JSON.stringify({ type: 'ice-candidate', target: data.from, candidate: { candidate: `cand-${name}`, sdpMid: '0' } }));
    } else if (data.type === 'ice-candidate') {
      state.finish({ candidate: data.candidate, from: data.from });
    } else if (data.type === 'peer-left') {
      state.left = data.data;
      state.onLeft?.(data);
    }
    // anything else (welcome, joined, ...) is ignored, as the seed client would
  };
  ws.onerror = (err) => state.fail(err);
  return state;
}

test('seed: a seed-style client (unknown types ignored) completes offer/answer/ICE and sees peer-left', async () => {
  const log = [];
  const url = server.wsUrl('/ws');
  const alice = seedStyleClient(url, 'alice', log);
  await new Promise((resolve) => alice.ws.once('open', resolve));
  // Let alice's join land before bob's, as two browsers opened one after the other.
  await sleep(200);
  const bob = seedStyleClient(url, 'bob', log);
  const timeout = (p, what) =>
    Promise.race([p, sleep(5000).then(() => assert.fail(`seed exchange stalled (${what}); log: ${log.join(', ')}`))]);
  const [aliceGot, bobGot] = await timeout(Promise.all([alice.done, bob.done]), 'ICE');
  assert.deepEqual(aliceGot.candidate, { candidate: 'cand-bob', sdpMid: '0' });
  assert.deepEqual(bobGot.candidate, { candidate: 'cand-alice', sdpMid: '0' });
  // alice learned bob's id from peer-joined; bob learned alice's from `from`.
  assert.equal(aliceGot.from, alice.remote, 'alice hears ICE from the peer she called');
  assert.equal(bobGot.from, bob.remote, 'bob hears ICE from the peer that called him');
  const left = new Promise((resolve) => {
    alice.onLeft = resolve;
  });
  bob.ws.close();
  const msg = await timeout(left, 'peer-left');
  assert.deepEqual(msg, { type: 'peer-left', data: alice.remote, room: 'default' });
  alice.ws.close();
});
