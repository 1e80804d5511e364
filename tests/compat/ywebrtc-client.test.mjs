// The unmodified y-webrtc 10.3 provider (with yjs 13, WebRTC from
// @roamhq/wrtc) in two Node processes against $YWEBRTC_URL: a Y.Map syncs
// both ways over the data channel the signaling set up, with and without a
// password (encrypted signaling). Runs inside scripts/netns-run (via run.sh).

import { test } from "node:test";
import assert from "node:assert/strict";
import { rid, serverUrl } from "./lib/common.mjs";
import { syncPair } from "./lib/ywebrtc.mjs";

const URL_ = serverUrl("YWEBRTC_URL");
const BOTH = { a: "hello from a", b: "hello from b" };

test("two providers in separate processes sync a Y.Map both ways", async () => {
  const maps = await syncPair(URL_, URL_, rid("compat-room-"));
  assert.deepEqual(maps, { a: BOTH, b: BOTH });
});

test("the same with a password (signaling encrypted end to end, opaque to the server)", async () => {
  const maps = await syncPair(URL_, URL_, rid("compat-secret-"), "correct horse battery staple");
  assert.deepEqual(maps, { a: BOTH, b: BOTH });
});
