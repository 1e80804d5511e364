// The SDK's copies of the protocol's fixed lists equal the Rust ones
// (RelayKind::ALL, ErrorCode::ALL in crates/switchboard-protocol), printed by
// the protocol crate's `wire-names` example. test/types.check.ts holds the
// same lists against the unions in switchboard.d.ts, so all three agree.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { RELAY_TYPES, ERROR_CODES, CLIENT_ERROR_CODES } from "../switchboard.js";

const root = fileURLToPath(new URL("../../..", import.meta.url));

function rustLists() {
  const out = execFileSync(
    "cargo",
    ["run", "--quiet", "--locked", "-p", "switchboard-protocol", "--example", "wire-names"],
    { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] },
  );
  return JSON.parse(out);
}

const rust = rustLists();

test("relay types equal RelayKind::ALL, in order", () => {
  assert.deepEqual([...RELAY_TYPES], rust.relayTypes);
});

test("server error codes equal ErrorCode::ALL, in order", () => {
  assert.deepEqual([...ERROR_CODES], rust.errorCodes);
});

test("the client's own codes never collide with the server's", () => {
  for (const code of CLIENT_ERROR_CODES) assert.ok(!rust.errorCodes.includes(code), code);
});
