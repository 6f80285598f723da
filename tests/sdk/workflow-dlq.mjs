// Upstash's own `@upstash/workflow` Client, pointed at workflow-dlq. Driven by
// tests/sdk_compat.rs, which seeds the DLQ and then checks the executions topic against the
// report this prints: every run an SDK call returned, and nothing else, was republished once.
//
// env: DLQ_BASE_URL, DLQ_TOKEN, DLQ_IDS (JSON array: the seeded entries' ids, event order),
//      DLQ_URLS (JSON array: workflow URLs by index)
import assert from "node:assert/strict";
import { Client } from "@upstash/workflow";

const client = new Client({ baseUrl: process.env.DLQ_BASE_URL, token: process.env.DLQ_TOKEN });
const ids = JSON.parse(process.env.DLQ_IDS);
const urls = JSON.parse(process.env.DLQ_URLS);
const report = { calls: [] };
const record = (call, kind, runs) => {
  for (const r of runs) {
    assert.ok(r.workflowRunId, `${call}: a run without workflowRunId`);
    assert.ok(r.workflowCreatedAt > 0, `${call}: a run without workflowCreatedAt`);
  }
  report.calls.push({ call, kind, runs: runs.map((r) => r.workflowRunId) });
};

async function listAll(filter, count) {
  const seen = [];
  let cursor;
  let pages = 0;
  do {
    const page = await client.dlq.list({ cursor, count, filter });
    seen.push(...page.messages);
    cursor = page.cursor;
    pages += 1;
    assert.ok(pages < 100, "the cursor never ends");
  } while (cursor);
  return { seen, pages };
}

/** A bulk call looped on its cursor, as the SDK's docs say to. */
async function loop(fn) {
  const out = [];
  let cursor;
  let calls = 0;
  do {
    const page = await fn(cursor);
    out.push(page);
    cursor = page.cursor;
    calls += 1;
    assert.ok(calls < 100, "the cursor never ends");
  } while (cursor);
  return out;
}

// ---- list: all, filtered, paged ----
const all = await client.dlq.list();
assert.equal(all.messages.length, ids.length);
assert.equal(all.cursor, undefined);
const first = all.messages[0];
for (const field of ["dlqId", "workflowRunId", "workflowUrl", "workflowCreatedAt", "createdAt",
  "header", "body", "maxRetries", "callerIP", "responseStatus", "failureCallback", "labels"]) {
  assert.ok(field in first, `listed message lacks ${field}`);
}
const odd = await listAll({ label: "label-1" }, 4);
assert.equal(odd.seen.length, ids.length / 2);
assert.equal(odd.pages, Math.ceil(ids.length / 2 / 4));
const twoUrls = await listAll({ workflowUrl: [urls[0], urls[1]] }, 100);
assert.equal(twoUrls.seen.length, ids.length / 2);
const andFilter = await listAll({ workflowUrl: urls[1], label: "label-0" }, 100);
assert.equal(andFilter.seen.length, 0, "filters AND across fields");
report.listed = { all: all.messages.length, label1: odd.seen.length, pages: odd.pages };

// ---- one id, a list of ids, the failure callback ----
record("restart({dlqId})", "RESTART", [await client.dlq.restart({ dlqId: ids[0], retries: 2 })]);
const resumedOne = await client.dlq.resume(ids[1]);
record("resume(id)", "RESUME", resumedOne.workflowRuns);
assert.equal(resumedOne.workflowRuns.length, 1);
const restartedTwo = await client.dlq.restart([ids[2], ids[3]]);
assert.equal(restartedTwo.workflowRuns.length, 2);
record("restart([ids])", "RESTART", restartedTwo.workflowRuns);
const callback = await client.dlq.retryFailureFunction({ dlqId: ids[4] });
record("retryFailureFunction", "FAILURE_CALLBACK", [callback]);

// ---- delete: one, a list, a filter looped on the cursor ----
const d1 = await client.dlq.delete(ids[5]);
assert.equal(d1.deleted, 1);
const d2 = await client.dlq.delete([ids[6], ids[7]]);
assert.equal(d2.deleted, 2);
const byLabel = await loop((cursor) => client.dlq.delete({ filter: { label: "label-1" }, count: 3, cursor }));
const oddLeft = ids.filter((_, i) => i % 2 === 1 && i > 7).length;
assert.equal(byLabel.reduce((n, p) => n + p.deleted, 0), oddLeft);
report.deleted = 1 + 2 + oddLeft;

// ---- restart by filter, then resume all, looped on the cursor ----
const url0 = await loop((cursor) =>
  client.dlq.restart({ filter: { workflowUrl: urls[0] }, count: 2, cursor }),
);
const url0Runs = url0.flatMap((p) => p.workflowRuns);
// Index 4 had its callback re-run: it stays in the DLQ and matches too.
assert.equal(url0Runs.length, ids.filter((_, i) => i % 4 === 0 && i > 0).length);
record("restart({filter})", "RESTART", url0Runs);
const rest = await loop((cursor) => client.dlq.resume({ all: true, count: 4, cursor }));
const restRuns = rest.flatMap((p) => p.workflowRuns);
assert.equal(restRuns.length, ids.filter((_, i) => i % 4 === 2 && i > 7).length);
record("resume({all})", "RESUME", restRuns);

// ---- the DLQ is empty now; an unknown id is the SDK's error ----
assert.equal((await client.dlq.list()).messages.length, 0);
await assert.rejects(client.dlq.restart({ dlqId: "dlq-missing" }), (e) => {
  assert.equal(e.status, 404);
  assert.match(e.message, /dlq-missing/);
  return true;
});
await assert.rejects(client.dlq.delete({ all: true, count: 1000 }), (e) => e.status === 400);
console.log(JSON.stringify(report));
