// Two unmodified matchbox_socket 0.14 peers (native Rust, webrtc-rs) against
// $MATCHBOX_URL: both reach PeerState::Connected and exchange a packet each
// way over a reliable data channel. Runs inside scripts/netns-run (via run.sh).

import { test } from "node:test";
import assert from "node:assert/strict";
import { rid, serverUrl } from "./lib/common.mjs";
import { runNative } from "./lib/matchbox-native.mjs";

const BASE = serverUrl("MATCHBOX_URL");

test("two matchbox_socket peers reach Connected and exchange a packet", async () => {
  const room = `${BASE}/${rid("native")}`;
  const r = await runNative([room]);
  assert.equal(r.code, 0, `matchbox-native failed:\n${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /^ok /m);
});

test("the same in a ?next=2 room", async () => {
  const room = `${BASE}/${rid("native")}?next=2`;
  const r = await runNative([room]);
  assert.equal(r.code, 0, `matchbox-native failed:\n${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /^ok /m);
});
