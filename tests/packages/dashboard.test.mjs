// deploy/grafana/switchboard.json against the metrics a real server exports:
// every query must name metrics, labels and label values that a scrape of
// /metrics shows, and every exported series must be on the dashboard.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import WebSocket from "ws";
import { ROOT, startServer } from "./harness.mjs";
import { SwitchboardClient, SwitchboardError } from "../../clients/js/switchboard.js";

const DASHBOARD = path.join(ROOT, "deploy/grafana/switchboard.json");
/** Labels Prometheus adds at scrape time; the server never writes them. */
const TARGET_LABELS = new Set(["instance", "job"]);

let server;
/** @type {Map<string, Map<string, Set<string>>>} metric name -> label -> values */
let scraped;

/** Parses the Prometheus text format. */
function parseMetrics(text) {
  const metrics = new Map();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+\S+/);
    assert.ok(match, `unparsable /metrics line: ${line}`);
    const [, name, labels = ""] = match;
    if (!metrics.has(name)) metrics.set(name, new Map());
    for (const [, label, value] of labels.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      const values = metrics.get(name).get(label) ?? new Set();
      values.add(value);
      metrics.get(name).set(label, values);
    }
  }
  return metrics;
}

/** Every PromQL expression of the dashboard: panel targets and template queries. */
function queries(dashboard) {
  const found = [];
  for (const panel of dashboard.panels) {
    for (const target of panel.targets ?? []) found.push({ where: `panel "${panel.title}" ${target.refId}`, expr: target.expr });
  }
  for (const variable of dashboard.templating.list) {
    const query = typeof variable.query === "string" ? variable.query : variable.query?.query;
    if (variable.type === "query") found.push({ where: `variable $${variable.name}`, expr: query });
  }
  return found;
}

before(async () => {
  server = await startServer();
  // A little traffic first: joins, a relay, a broadcast, an error.
  const a = new SwitchboardClient({ url: server.ws, WebSocket, reconnect: false });
  const b = new SwitchboardClient({ url: server.ws, WebSocket, reconnect: false });
  await a.connect();
  await b.connect();
  await a.join("metrics");
  await b.join("metrics");
  const relayed = b.once("relay", null, 5000);
  await a.sendTo(b.id, { type: "offer", sdp: "v=0" });
  await relayed;
  await a.broadcast({ hello: "room" });
  await assert.rejects(a.join("metrics"), (err) => err instanceof SwitchboardError && err.code === "already-joined");
  scraped = parseMetrics(await (await fetch(`${server.origin}/metrics`)).text());
  a.close();
  b.close();
});

after(async () => {
  await server?.stop();
});

test("the scrape is live: the traffic above was counted", () => {
  assert.ok(scraped.get("switchboard_messages_in_total")?.get("type")?.has("join"), "no join counted");
  assert.ok(scraped.get("switchboard_errors_total")?.get("code")?.has("already-joined"));
});

test("every query names metrics, labels and label values the server exports", () => {
  const dashboard = JSON.parse(readFileSync(DASHBOARD, "utf8"));
  const problems = [];
  for (const { where, expr } of queries(dashboard)) {
    assert.equal(typeof expr, "string", `${where}: no expression`);
    const names = [...expr.matchAll(/\b(switchboard_[a-zA-Z0-9_:]*)/g)].map((m) => m[1]);
    if (names.length === 0) problems.push(`${where}: names no switchboard_ metric: ${expr}`);
    for (const name of names) {
      if (!scraped.has(name)) problems.push(`${where}: metric ${name} is not exported`);
    }
    const known = (label) => TARGET_LABELS.has(label) || names.some((n) => scraped.get(n)?.has(label));
    // Selectors: metric{label op "value", ...}
    for (const [, name, body] of expr.matchAll(/\b(switchboard_[a-zA-Z0-9_:]*)\{([^}]*)\}/g)) {
      for (const [, label, op, value] of body.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"/g)) {
        if (TARGET_LABELS.has(label)) continue;
        const values = scraped.get(name)?.get(label);
        if (!values) problems.push(`${where}: ${name} has no label ${label}`);
        else if (op === "=" && !values.has(value)) problems.push(`${where}: ${name}{${label}="${value}"} is never exported`);
      }
    }
    // Grouping: by (...) / without (...); label_values(metric, label).
    for (const [, labels] of expr.matchAll(/\b(?:by|without)\s*\(([^)]*)\)/g)) {
      for (const label of labels.split(",").map((l) => l.trim()).filter(Boolean)) {
        if (!known(label)) problems.push(`${where}: groups by ${label}, which ${names.join(", ")} lacks`);
      }
    }
    for (const [, label] of expr.matchAll(/label_values\([^,]+,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)/g)) {
      if (!known(label)) problems.push(`${where}: label_values of unknown label ${label}`);
    }
  }
  assert.deepEqual(problems, []);
});

test("every exported series is on the dashboard", () => {
  const text = readFileSync(DASHBOARD, "utf8");
  const missing = [...scraped.keys()].filter((name) => name.startsWith("switchboard_") && !new RegExp(`\\b${name}\\b`).test(text));
  assert.deepEqual(missing, [], "metrics no panel shows");
});

test("the dashboard is well formed: ids, layout, data source variable", () => {
  const dashboard = JSON.parse(readFileSync(DASHBOARD, "utf8"));
  assert.equal(dashboard.uid, "switchboard");
  const ids = dashboard.panels.map((p) => p.id);
  assert.equal(new Set(ids).size, ids.length, "panel ids are unique");
  assert.ok(dashboard.templating.list.some((v) => v.name === "datasource" && v.type === "datasource"));
  for (const panel of dashboard.panels) {
    const { x, y, w, h } = panel.gridPos;
    assert.ok(x >= 0 && w > 0 && x + w <= 24 && y >= 0 && h > 0, `panel "${panel.title}" fits the 24-column grid`);
    if (panel.type === "row") continue;
    assert.equal(panel.datasource.uid, "${datasource}", `panel "${panel.title}" uses the data source variable`);
    assert.ok(panel.targets.length > 0, `panel "${panel.title}" has queries`);
  }
});
