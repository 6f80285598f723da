// Upstash's own `@upstash/qstash` Client, pointed at workflow-dlq: every DLQ method it has —
// listMessages (every filter, dlqIds, paging), delete (one, many, dlqIds, filter, all),
// deleteMany, retry (one, many, dlqIds, filter, all, with the cursor loop its docs show).
// Driven by tests/it/sdk_compat.rs, which seeds the DLQ and then checks the executions topic
// against the report this prints: every message id a retry returned, and nothing else, was
// republished once.
//
// env: DLQ_BASE_URL, DLQ_TOKEN, DLQ_SEEDED (JSON array, by event number n: {dlqId, messageId,
//      url, urlGroup, queueName, scheduleId, responseStatus, callerIp, label, flowControlKey})
import assert from "node:assert/strict";
import { Client } from "@upstash/qstash";

const client = new Client({
  baseUrl: process.env.DLQ_BASE_URL,
  token: process.env.DLQ_TOKEN,
  retry: false,
  enableTelemetry: false,
});
const seeded = JSON.parse(process.env.DLQ_SEEDED);
const live = new Map(seeded.map((e) => [e.dlqId, e]));
const report = { retried: [], deleted: 0, calls: 0 };

const matching = (pred) => [...live.values()].filter(pred).map((e) => e.dlqId).sort();
const sorted = (xs) => [...xs].sort();

async function listAll(filter, count) {
  const seen = [];
  let cursor;
  let pages = 0;
  do {
    const page = await client.dlq.listMessages({ cursor, count, filter });
    seen.push(...page.messages);
    cursor = page.cursor;
    pages += 1;
    assert.ok(pages < 100, "the cursor never ends");
  } while (cursor);
  return seen;
}

/** A bulk call looped on its cursor, as the SDK's docs say to. */
async function loop(fn) {
  const pages = [];
  let cursor;
  do {
    const page = await fn(cursor);
    report.calls += 1;
    pages.push(page);
    cursor = page.cursor;
    assert.ok(pages.length < 100, "the cursor never ends");
  } while (cursor);
  return pages;
}

function retried(call, responses, expected) {
  assert.equal(responses.length, expected.length, `${call}: ${JSON.stringify(responses)}`);
  for (const r of responses) {
    assert.ok(r.messageId, `${call}: a response without messageId`);
    report.retried.push(r.messageId);
  }
  for (const id of expected) live.delete(id);
}

function deleted(call, n, expected) {
  assert.equal(n, expected.length, call);
  report.deleted += n;
  for (const id of expected) live.delete(id);
}

// ---- listMessages: everything, then every filter the SDK has ----
const all = await client.dlq.listMessages();
assert.equal(all.messages.length, seeded.length);
assert.equal(all.cursor, undefined);
const m0 = all.messages.find((m) => m.dlqId === seeded[0].dlqId);
assert.equal(m0.messageId, seeded[0].messageId);
assert.equal(m0.url, seeded[0].url);
assert.equal(m0.urlGroup, seeded[0].urlGroup, "topicName is read as urlGroup");
assert.equal(m0.queueName, seeded[0].queueName);
assert.equal(m0.scheduleId, seeded[0].scheduleId);
assert.equal(m0.responseStatus, seeded[0].responseStatus);
assert.equal(m0.method, "POST");
assert.ok(m0.body.length > 0 && m0.header, "request body and headers listed");

const filters = [
  [{ messageId: seeded[3].messageId }, (e) => e.messageId === seeded[3].messageId],
  [{ url: seeded[1].url }, (e) => e.url === seeded[1].url],
  [{ urlGroup: "group-1" }, (e) => e.urlGroup === "group-1"],
  [{ urlGroup: ["group-0", "group-1"] }, (e) => e.urlGroup !== undefined],
  [{ scheduleId: "scd_5" }, (e) => e.scheduleId === "scd_5"],
  [{ queueName: "queue-2" }, (e) => e.queueName === "queue-2"],
  [{ queueName: ["queue-0", "queue-1"] }, (e) => ["queue-0", "queue-1"].includes(e.queueName)],
  [{ responseStatus: 404 }, (e) => e.responseStatus === 404],
  [{ responseStatus: [500, 502] }, (e) => [500, 502].includes(e.responseStatus)],
  [{ callerIp: "10.0.0.1" }, (e) => e.callerIp === "10.0.0.1"],
  [{ label: "label-0" }, (e) => e.label === "label-0"],
  [{ flowControlKey: "fc-1" }, (e) => e.flowControlKey === "fc-1"],
  [{ fromDate: Date.now() + 3_600_000 }, () => false],
  [{ toDate: Date.now() + 3_600_000, queueName: "queue-1", responseStatus: 503 },
    (e) => e.queueName === "queue-1" && e.responseStatus === 503],
];
for (const [filter, pred] of filters) {
  const seen = await listAll(filter, 3);
  assert.deepEqual(sorted(seen.map((m) => m.dlqId)), matching(pred), JSON.stringify(filter));
}
const named = await client.dlq.listMessages({ dlqIds: [seeded[0].dlqId, seeded[1].dlqId, "dlq-nope"] });
assert.deepEqual(sorted(named.messages.map((m) => m.dlqId)), sorted([seeded[0].dlqId, seeded[1].dlqId]));

// ---- delete: one, an array, {dlqIds}, deleteMany, a filter (looped), ----
deleted("delete(id)", (await client.dlq.delete(seeded[0].dlqId)).deleted, [seeded[0].dlqId]);
deleted("delete([ids])", (await client.dlq.delete([seeded[1].dlqId, seeded[2].dlqId])).deleted,
  [seeded[1].dlqId, seeded[2].dlqId]);
deleted("delete({dlqIds})", (await client.dlq.delete({ dlqIds: [seeded[3].dlqId] })).deleted,
  [seeded[3].dlqId]);
deleted("deleteMany", (await client.dlq.deleteMany({ dlqIds: [seeded[4].dlqId] })).deleted,
  [seeded[4].dlqId]);
{
  const expected = matching((e) => e.queueName === "queue-2");
  const pages = await loop((cursor) => client.dlq.delete({ filter: { queueName: "queue-2" }, count: 3, cursor }));
  deleted("delete({filter})", pages.reduce((n, p) => n + p.deleted, 0), expected);
}

// ---- retry: one, an array, {dlqIds}, a filter (looped), all (looped) ----
retried("retry(id)", (await client.dlq.retry(seeded[6].dlqId)).responses, [seeded[6].dlqId]);
retried("retry([ids])", (await client.dlq.retry([seeded[7].dlqId, seeded[9].dlqId])).responses,
  [seeded[7].dlqId, seeded[9].dlqId]);
retried("retry({dlqIds})", (await client.dlq.retry({ dlqIds: [seeded[10].dlqId] })).responses,
  [seeded[10].dlqId]);
{
  const expected = matching((e) => e.urlGroup === "group-1" && e.responseStatus === 404);
  const pages = await loop((cursor) =>
    client.dlq.retry({ filter: { urlGroup: "group-1", responseStatus: 404 }, count: 2, cursor }));
  retried("retry({filter})", pages.flatMap((p) => p.responses), expected);
}
{
  const expected = matching(() => true);
  assert.ok(expected.length > 5, "enough left for several pages of `all`");
  const pages = await loop((cursor) => client.dlq.retry({ all: true, count: 4, cursor }));
  assert.ok(pages.length >= 2, "all: paged");
  retried("retry({all})", pages.flatMap((p) => p.responses), expected);
}
// Nothing left: delete({all}) and listMessages agree.
const rest = await loop((cursor) => client.dlq.delete({ all: true, cursor }));
deleted("delete({all})", rest.reduce((n, p) => n + p.deleted, 0), []);
assert.equal((await client.dlq.listMessages()).messages.length, 0);

console.log(JSON.stringify(report));
