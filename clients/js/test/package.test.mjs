// The package's metadata: one version for the SDK and the server, and the
// fields a registry and a bundler read.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { VERSION } from "../switchboard.js";

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const pkg = JSON.parse(readFileSync(here("../package.json"), "utf8"));

/** `version` of `[workspace.package]` in the repository's Cargo.toml. */
function cargoVersion() {
  const toml = readFileSync(here("../../../Cargo.toml"), "utf8");
  const section = toml.split(/^\[/m).find((s) => s.startsWith("workspace.package]"));
  assert.ok(section, "Cargo.toml has no [workspace.package]");
  const match = section.match(/^version\s*=\s*"([^"]+)"/m);
  assert.ok(match, "[workspace.package] has no version");
  return match[1];
}

test("the package, the SDK's VERSION and the server share one version", () => {
  const server = cargoVersion();
  assert.equal(pkg.version, server, "clients/js/package.json version differs from Cargo.toml's");
  assert.equal(VERSION, server, "VERSION in switchboard.js differs from Cargo.toml's");
});

test("the package is an ES module with types, and ships the served files", () => {
  assert.equal(pkg.name, "switchboard-client");
  assert.equal(pkg.type, "module");
  assert.equal(pkg.sideEffects, false);
  assert.deepEqual(pkg.exports["."], { types: "./switchboard.d.ts", import: "./switchboard.js" });
  assert.equal(Object.keys(pkg.exports["."])[0], "types", "`types` must come first in exports");
  for (const file of ["switchboard.js", "switchboard.d.ts"]) assert.ok(pkg.files.includes(file), file);
  assert.match(pkg.engines.node, /^>=\d+/);
  assert.equal(pkg.license, "MIT OR Apache-2.0");
  assert.deepEqual(Object.keys(pkg.dependencies ?? {}), [], "the SDK has no runtime dependencies");
});
