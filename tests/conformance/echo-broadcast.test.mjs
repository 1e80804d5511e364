// The seeds' echo server (/ws/echo) and broadcast server (/ws/broadcast).

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before } from 'node:test';
import { Client, WebSocket, sleep, startServer, test } from './harness.mjs';

let server;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server?.stop();
});

// /ws/broadcast has no handshake message that would tell a client it is
// subscribed; give the server a moment after the upgrade before sending.
const settle = () => sleep(150);

async function nextText(c) {
  const f = await c.nextFrame();
  assert.equal(f.isBinary, false, 'expected a text frame');
  return f.data.toString('utf8');
}

// ---------------------------------------------------------------- echo

test('echo: the seed client (browser-style handlers) gets "Server received: Hello from client!"', async () => {
  const got = await new Promise((resolve, reject) => {
    const ws = new WebSocket(server.wsUrl('/ws/echo'));
    ws.onopen = () => ws.send('Hello from client!');
    ws.onmessage = (message) => {
      resolve(message.data);
      ws.close();
    };
    ws.onerror = reject;
    setTimeout(() => reject(new Error('no echo within 3 s')), 3000);
  });
  assert.equal(got, 'Server received: Hello from client!');
});

test('echo: sends nothing on connect; every text frame comes back prefixed, in order', async () => {
  const c = await server.connect('/ws/echo');
  await c.expectNothing();
  const texts = ['hello', '', '{"type":"join"}', 'ünïcödé ☃ 日本', 'multi\nline', 'x'.repeat(10000)];
  for (const t of texts) c.send(t);
  for (const t of texts) assert.equal(await nextText(c), `Server received: ${t}`);
  await c.expectNothing();
});

test('echo: a binary frame comes back byte-identical, as binary', async () => {
  const c = await server.connect('/ws/echo');
  for (const payload of [randomBytes(1000), Buffer.from([0, 0, 0]), Buffer.from('Server received: not text'), randomBytes(60000)]) {
    c.send(payload);
    const f = await c.nextFrame();
    assert.equal(f.isBinary, true, 'binary echo must be a binary frame');
    assert.ok(f.data.equals(payload), `binary echo differs (${f.data.length} vs ${payload.length} bytes)`);
  }
  await c.expectNothing();
});

test('echo: clients are independent', async () => {
  const a = await server.connect('/ws/echo');
  const b = await server.connect('/ws/echo');
  a.send('from a');
  assert.equal(await nextText(a), 'Server received: from a');
  await b.expectNothing();
});

test('echo: a frame over --max-message-size closes the connection with 1009', async () => {
  const small = await startServer(['--max-message-size', '1024']);
  try {
    const c = await small.connect('/ws/echo', { perMessageDeflate: false });
    c.send('y'.repeat(1024));
    assert.equal(await nextText(c), `Server received: ${'y'.repeat(1024)}`);
    c.send('x'.repeat(2000));
    const { code } = await c.waitClose(5000);
    assert.equal(code, 1009);
  } finally {
    await small.stop();
  }
});

// ---------------------------------------------------------------- broadcast

test('broadcast: seed-style browser clients: one sends "Hello, WebSocket!", the other\'s onmessage gets it', async () => {
  const url = server.wsUrl('/ws/broadcast?channel=seed');
  const open = (ws) => new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = reject;
  });
  const listener = new WebSocket(url);
  const sender = new WebSocket(url);
  await Promise.all([open(listener), open(sender)]);
  await settle();
  const senderGot = [];
  sender.onmessage = (event) => senderGot.push(event.data);
  const got = new Promise((resolve) => {
    listener.onmessage = (event) => resolve(event.data);
  });
  if (sender.readyState === WebSocket.OPEN) sender.send('Hello, WebSocket!');
  const data = await Promise.race([got, sleep(3000).then(() => assert.fail('no broadcast within 3 s'))]);
  assert.equal(data, 'Hello, WebSocket!'); // a string: the text frame stayed text
  await sleep(200);
  assert.deepEqual(senderGot, [], 'the sender must not get its own message');
  listener.close();
  sender.close();
});

test('broadcast: text reaches every other client on the default channel, never the sender', async () => {
  const [a, b, c] = await Promise.all([1, 2, 3].map(() => server.connect('/ws/broadcast')));
  await a.expectNothing(); // nothing on connect
  await settle();
  a.send('hello everyone');
  assert.equal(await nextText(b), 'hello everyone');
  assert.equal(await nextText(c), 'hello everyone');
  b.send('{"type":"join"}');
  assert.equal(await nextText(a), '{"type":"join"}');
  assert.equal(await nextText(c), '{"type":"join"}');
  await a.expectNothing();
  await b.expectNothing();
  await c.expectNothing();
});

test('broadcast: binary reaches every other client byte-identical, as binary, never the sender', async () => {
  const [a, b, c] = await Promise.all([1, 2, 3].map(() => server.connect('/ws/broadcast')));
  const payload = randomBytes(4096);
  await settle();
  c.send(payload);
  for (const r of [a, b]) {
    const f = await r.nextFrame();
    assert.equal(f.isBinary, true);
    assert.ok(f.data.equals(payload));
  }
  await c.expectNothing();
});

test('broadcast: per-sender order is kept', async () => {
  const [a, b] = await Promise.all([1, 2].map(() => server.connect('/ws/broadcast?channel=order')));
  await settle();
  for (let i = 0; i < 100; i++) a.send(`m${i}`);
  for (let i = 0; i < 100; i++) assert.equal(await nextText(b), `m${i}`);
});

test('broadcast: ?channel=x clients do not see default-channel traffic and vice versa', async () => {
  const d1 = await server.connect('/ws/broadcast');
  const d2 = await server.connect('/ws/broadcast');
  const x1 = await server.connect('/ws/broadcast?channel=x');
  const x2 = await server.connect('/ws/broadcast?channel=x');
  const y1 = await server.connect('/ws/broadcast?channel=y');
  await settle();
  d1.send('default traffic');
  assert.equal(await nextText(d2), 'default traffic');
  x1.send('x traffic');
  assert.equal(await nextText(x2), 'x traffic');
  x2.send(Buffer.from([1, 2, 3]));
  const f = await x1.nextFrame();
  assert.ok(f.isBinary && f.data.equals(Buffer.from([1, 2, 3])));
  await d1.expectNothing();
  await d2.expectNothing();
  await y1.expectNothing();
  await x1.expectNothing();
  await x2.expectNothing();
});

test('broadcast: a bad channel name is refused with HTTP 400 before the upgrade', async () => {
  for (const channel of ['a'.repeat(65), '%01bad', 'a%0Ab']) {
    await assert.rejects(
      Client.connect(server.wsUrl(`/ws/broadcast?channel=${channel}`)),
      (err) => {
        assert.equal(err.statusCode, 400, `channel ${channel}: ${err.message}`);
        return true;
      },
    );
  }
  // a name of exactly 64 bytes is fine
  const ok = await server.connect(`/ws/broadcast?channel=${'a'.repeat(64)}`);
  assert.equal(ok.isOpen, true);
});

test('broadcast: a client that leaves stops receiving; the others keep going', async () => {
  const [a, b, c] = await Promise.all([1, 2, 3].map(() => server.connect('/ws/broadcast?channel=leave')));
  await settle();
  await b.close();
  a.send('after b left');
  assert.equal(await nextText(c), 'after b left');
  await a.expectNothing();
});
