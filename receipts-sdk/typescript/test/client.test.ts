/**
 * The client's retry rules, against a stand-in gateway on real HTTP: network errors, 5xx, 408
 * and 429 are retried under the same receipt id (a `Retry-After` honoured up to the cap); any
 * other 4xx is final. Waits are recorded, not slept.
 */

import assert from "node:assert/strict";
import { after, test } from "node:test";

import {
  Receipt,
  ReceiptClient,
  ReceiptClientError,
  ReceiptKey,
  type RetryPolicy,
  retryAfterMs,
  retryDelayMs,
} from "hookwarden-receipts";

import { type Answer, StandIn } from "./support/standin.js";
import { freePort } from "./support/util.js";

const standIns: StandIn[] = [];
after(() => Promise.all(standIns.map((s) => s.stop())));

/** A stand-in answering `script`, and a client for it whose waits are recorded. */
async function setup(script: Answer[], retry: Partial<RetryPolicy> = {}) {
  const gateway = await StandIn.start(script);
  standIns.push(gateway);
  const waits: number[] = [];
  const client = new ReceiptClient(`${gateway.baseUrl}/`, gateway.key, {
    retry: { maxAttempts: 5, baseDelayMs: 1, maxDelayMs: 5_000, ...retry },
    sleep: async (ms) => {
      waits.push(ms);
    },
  });
  return { gateway, client, waits };
}

async function failure(promise: Promise<unknown>): Promise<ReceiptClientError> {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof ReceiptClientError, String(e));
    return e;
  }
  assert.fail("the post succeeded");
}

test("retries 5xx, 408 and 429 under the same receipt id, then succeeds", async () => {
  const { gateway, client } = await setup([503, 500, 408, 429, 200]);
  const receipt = Receipt.applied("evt_1").withTargetRecord("ord_1");
  const answer = await client.post(receipt);
  assert.equal(answer.outcome, "confirmed");
  assert.equal(gateway.posts.length, 5);
  const first = gateway.posts[0]?.receiptId ?? "";
  assert.match(first, /^rcp_[0-9a-f]{32}$/);
  for (const post of gateway.posts) {
    assert.equal(post.receiptId, first);
    assert.ok(post.signatureOk);
    assert.deepEqual(post.receipt, receipt);
    assert.equal(post.contentType, "application/json");
  }
  assert.equal(client.url, `${gateway.baseUrl}/v1/receipts`);
});

test("a 4xx is final and carries the gateway's error code", async () => {
  for (const status of [400, 401, 403, 404, 409, 413]) {
    const { gateway, client } = await setup([status, 200]);
    const error = await failure(client.postWithId(Receipt.applied("evt_1"), "rcp_fixed"));
    assert.equal(error.kind, "rejected");
    assert.equal(error.isRejected, true);
    assert.equal(error.status, status);
    assert.equal(error.code, `stand_in_${status}`);
    assert.match(error.message, /scripted answer/);
    assert.deepEqual(gateway.posts.map((p) => p.receiptId), ["rcp_fixed"]);
  }
});

test("gives up after maxAttempts with the last answer", async () => {
  const { gateway, client, waits } = await setup([500, 502, 503, 200], { maxAttempts: 3 });
  const error = await failure(client.post(Receipt.applied("evt_1")));
  assert.equal(error.kind, "unavailable");
  assert.equal(error.status, 503);
  assert.equal(error.attempts, 3);
  assert.equal(gateway.posts.length, 3);
  assert.equal(waits.length, 2);
});

test("retries network errors: a refused connection and one cut mid-answer", async () => {
  const port = await freePort();
  const waits: number[] = [];
  const offline = new ReceiptClient(`http://127.0.0.1:${port}`, ReceiptKey.generate("k"), {
    retry: { maxAttempts: 3, baseDelayMs: 1 },
    sleep: async (ms) => {
      waits.push(ms);
    },
  });
  const error = await failure(offline.post(Receipt.applied("evt_1")));
  assert.equal(error.kind, "network");
  assert.equal(error.attempts, 3);
  assert.match(error.message, /ECONNREFUSED/);
  assert.equal(waits.length, 2);

  const { gateway, client } = await setup(["drop", 200]);
  assert.equal((await client.postWithId(Receipt.applied("evt_2"), "rcp_cut")).outcome, "confirmed");
  assert.deepEqual(gateway.posts.map((p) => p.receiptId), ["rcp_cut", "rcp_cut"]);
});

test("honours Retry-After, capped at maxDelayMs", async () => {
  const { client, waits } = await setup(
    [
      { status: 429, retryAfter: "2" },
      { status: 503, retryAfter: "3600" },
      { status: 503, retryAfter: new Date(Date.now() + 3_000).toUTCString() },
      200,
    ],
    { maxDelayMs: 5_000 },
  );
  await client.post(Receipt.applied("evt_1"));
  assert.equal(waits.length, 3);
  assert.equal(waits[0], 2_000, "Retry-After: 2 is waited in full");
  assert.equal(waits[1], 5_000, "an hour is capped");
  assert.ok((waits[2] ?? 0) >= 1_000 && (waits[2] ?? 0) <= 4_000, `an HTTP date: ${waits[2]}`);
  assert.equal(retryAfterMs(null), undefined);
  assert.equal(retryAfterMs("soon"), undefined);
  assert.equal(retryAfterMs(" 7 "), 7_000);
});

test("a 2xx whose answer is not the expected JSON counts as accepted", async () => {
  const { gateway, client } = await setup([{ status: 200, body: "ok" }, 200]);
  const error = await failure(client.post(Receipt.applied("evt_1")));
  assert.equal(gateway.posts.length, 1);
  assert.equal(error.kind, "bad_answer");
  assert.equal(error.wasAccepted, true);
  assert.equal(error.isRejected, false);
});

test("backoff doubles, is capped, and is jittered into [half, full]", () => {
  const policy: RetryPolicy = { maxAttempts: 10, baseDelayMs: 100, maxDelayMs: 1_000 };
  for (const [attempt, full] of [
    [1, 100],
    [2, 200],
    [3, 400],
    [4, 800],
    [5, 1_000],
    [40, 1_000],
  ] as const) {
    assert.equal(retryDelayMs(policy, attempt, () => 1), full);
    assert.equal(retryDelayMs(policy, attempt, () => 0), full / 2);
    const d = retryDelayMs(policy, attempt);
    assert.ok(d >= full / 2 && d <= full, `attempt ${attempt}: ${d} ms`);
  }
  const client = new ReceiptClient("http://x", ReceiptKey.generate("k"), { retry: { maxAttempts: 0 } });
  assert.equal(client.retry.maxAttempts, 1, "at least one try");
});
