/**
 * receipts-sdk/test-vectors.json, reproduced byte for byte: the vectors every SDK (Rust,
 * Python, TypeScript) and the gateway check.
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  Receipt,
  ReceiptKey,
  WebhookSecret,
  answerProbe,
  inlineReceiptHeaders,
  probeReceiptId,
  sign,
  verifyForwarded,
  verifyProbe,
  verifyReceipt,
} from "hookwarden-receipts";
import { Webhook } from "standardwebhooks";

import { testVectors } from "./support/util.js";

const vectors = testVectors();

test("receipt: sign() gives the vector's four headers from the seed and the exact body", () => {
  const v = vectors.receipt;
  const headers = sign({ seed: v.seed, keyId: v.key_id, receiptId: v.receipt_id, timestamp: v.timestamp, body: v.body });
  assert.deepEqual(headers, {
    "receipt-id": v.receipt_id,
    "receipt-timestamp": String(v.timestamp),
    "receipt-key": v.key_id,
    "receipt-signature": v.signature,
  });
  // The body as bytes signs the same as the body as a string.
  const fromBytes = sign({ seed: v.seed, keyId: v.key_id, receiptId: v.receipt_id, timestamp: v.timestamp, body: Buffer.from(v.body) });
  assert.equal(fromBytes["receipt-signature"], v.signature);
});

test("receipt: the Receipt type writes the vector's body, and the key its public half and inline body", () => {
  const v = vectors.receipt;
  const receipt = Receipt.parse(v.body);
  assert.equal(receipt.bytes().toString("utf8"), v.body);
  assert.equal(
    Receipt.applied("evt_01KDVDNA00M2GT58X4MPKAFA59", { targetRecordId: "order_1001" }).bytes().toString("utf8"),
    v.body,
  );
  const key = ReceiptKey.fromSeed(v.key_id, v.seed);
  assert.equal(key.publicKeyBase64(), v.public_key);
  assert.equal(key.seedBase64(), v.seed);
  const signed = key.sign(receipt, { receiptId: v.receipt_id, timestamp: v.timestamp });
  assert.equal(signed.signature, v.signature);
  assert.equal(`${signed.receiptId}.${signed.timestamp}.${signed.body.toString("utf8")}`, v.signed_content);
  assert.equal(signed.inlineHeaders()["receipt-body"], v.inline_body);
  assert.deepEqual(verifyReceipt(signed.headers(), signed.body, v.public_key, { now: v.timestamp }), receipt);
  const inline = inlineReceiptHeaders(key, receipt, v.timestamp);
  assert.equal(inline["receipt-body"], v.inline_body);
  assert.match(inline["receipt-id"], /^rcp_[0-9a-f]{32}$/);
});

test("forward: the secret signs the vector, verifyForwarded accepts it, and standardwebhooks agrees", () => {
  const v = vectors.forward;
  const secret = WebhookSecret.parse(v.secret);
  assert.equal(secret.sign(v.webhook_id, v.timestamp, v.body), v.signature);
  const headers = {
    "webhook-id": v.webhook_id,
    "webhook-timestamp": String(v.timestamp),
    "webhook-signature": v.signature,
    "idempotency-key": "idk_vector",
    "hookwarden-attempt": "1",
    "hookwarden-source": "stripe",
  };
  const forwarded = verifyForwarded(v.secret, headers, Buffer.from(v.body), { now: v.timestamp });
  assert.equal(forwarded.eventId, v.webhook_id);
  // The reference library signs the same bytes.
  assert.equal(new Webhook(v.secret).sign(v.webhook_id, new Date(v.timestamp * 1000), v.body), v.signature);
});

test("probe: the request verifies, and the answer reproduces the vector's entry", async () => {
  const v = vectors.probe;
  assert.equal(WebhookSecret.parse(v.secret).sign(v.webhook_id, v.timestamp, v.body), v.signature);
  const headers = {
    "webhook-id": v.webhook_id,
    "webhook-timestamp": String(v.timestamp),
    "webhook-signature": v.signature,
    "hookwarden-source": "stripe",
    "content-type": "application/json",
  };
  const request = verifyProbe(v.secret, headers, Buffer.from(v.body), { now: v.timestamp });
  assert.deepEqual(request, {
    probeId: v.webhook_id,
    source: "stripe",
    eventIds: ["evt_01KDVDNA00M2GT58X4MPKAFA59", "evt_01KDVDNA01ZZZZZZZZZZZZZZZZ"],
  });
  const a = v.answer;
  assert.equal(probeReceiptId(a.event_id), a.receipt_id);
  // The handler knows the first event as processed only, and nothing of the second.
  const records = {
    async records(ids: readonly string[]) {
      assert.deepEqual(ids, request.eventIds);
      return { receipts: [], processed: new Set([a.event_id]) };
    },
  };
  const answer = await answerProbe(records, ReceiptKey.fromSeed(a.key_id, a.seed), request, { now: a.timestamp });
  assert.deepEqual(answer, { receipts: [a.entry] });
  assert.equal(Buffer.from(a.entry["receipt-body"] ?? "", "base64").toString(), a.body);
  assert.equal(a.entry["receipt-signature"], a.signature);
});
