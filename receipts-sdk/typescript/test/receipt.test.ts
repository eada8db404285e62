/**
 * The receipt type refuses what the Rust `Receipt::parse` refuses (the gateway's
 * `receipt_malformed`), writes what serde writes, and verification refuses in the gateway's order.
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  Receipt,
  ReceiptError,
  ReceiptKey,
  decodeInlineBody,
  newReceiptId,
  probeReceiptId,
  sign,
  verifyReceipt,
} from "hookwarden-receipts";

/** `undefined` when `body` parses; else the error's message. */
function check(body: string): string | undefined {
  try {
    Receipt.parse(body);
    return undefined;
  } catch (e) {
    assert.ok(e instanceof ReceiptError, String(e));
    assert.equal(e.code, "receipt_malformed");
    return e.message;
  }
}

test("body rules: the Rust SDK's, one by one", () => {
  const refused: [string, RegExp][] = [
    ['{"event_id":"e","status":"failed"}', /needs an `error_code`/],
    ['{"event_id":"e","status":"done"}', /`status` must be/],
    ['{"event_id":"e","status":"applied","extra":1}', /unknown field `extra`/],
    ['{"event_id":"e","status":"applied","error_code":"E"}', /carries no `error_code`/],
    ['{"event_id":"","status":"applied"}', /non-empty id/],
    [`{"event_id":"${"e".repeat(201)}","status":"applied"}`, /non-empty id/],
    ['{"event_id":"e","status":"failed","error_code":""}', /empty or too long/],
    [`{"event_id":"e","status":"failed","error_code":"${"E".repeat(201)}"}`, /empty or too long/],
    [`{"event_id":"e","status":"applied","target_record_id":"${"t".repeat(201)}"}`, /empty or too long/],
    [`{"event_id":"e","status":"applied","detail":"${"d".repeat(2001)}"}`, /empty or too long/],
    // Lengths are UTF-8 bytes, as in Rust: 101 two-byte characters are 202 bytes.
    [`{"event_id":"${"é".repeat(101)}","status":"applied"}`, /non-empty id/],
    ['{"status":"applied"}', /missing field `event_id`/],
    ['{"event_id":"e"}', /missing field `status`/],
    ['{"event_id":1,"status":"applied"}', /`event_id` must be a string/],
    ['{"event_id":"e","status":"applied","detail":5}', /`detail` must be a string/],
    ['{"event_id":"e","status":"applied","event_id":"f"}', /duplicate field `event_id`/],
    ['{"event_id":"e","status":"applied","detail":"\\ud800"}', /lone surrogate/],
    ['["e","applied"]', /JSON object/],
    ["null", /JSON object/],
    ["{", /malformed/],
    ['{"event_id":"e","status":"applied"} x', /malformed/],
  ];
  for (const [body, reason] of refused) {
    const message = check(body);
    assert.ok(message !== undefined, `accepted: ${body}`);
    assert.match(message, reason, body);
  }
  for (const body of [
    '{"event_id":"e","status":"failed","error_code":"E_DB"}',
    '{"event_id":"e","status":"applied","target_record_id":""}',
    '{"event_id":"e","status":"applied","error_code":null,"detail":null}',
    `{"event_id":"${"e".repeat(200)}","status":"applied","detail":"${"d".repeat(2000)}"}`,
    ' {"detail":"nested {\\"event_id\\":1}, [\\"x\\"]","event_id":"e","status":"applied"} ',
  ]) {
    assert.equal(check(body), undefined, body);
  }
  assert.throws(() => Receipt.parse(Buffer.from([0x7b, 0xff, 0x7d])), /not UTF-8/);
});

test("constructors refuse what parse refuses, and the JSON is serde's", () => {
  assert.throws(() => Receipt.failed("evt_1", ""), ReceiptError);
  assert.throws(() => Receipt.applied(""), ReceiptError);
  assert.throws(() => Receipt.applied("evt_1").withTargetRecord("t".repeat(201)), ReceiptError);
  const failed = Receipt.failed("evt_1", "E_DB", 'deadlock "quoted"\n\u0001 / é').withTargetRecord("ord_1");
  // Field order of the Rust struct; serde's escapes (control characters as \u00XX, `/` and
  // non-ASCII as they are).
  assert.equal(
    failed.bytes().toString("utf8"),
    '{"event_id":"evt_1","status":"failed","target_record_id":"ord_1","error_code":"E_DB","detail":"deadlock \\"quoted\\"\\n\\u0001 / é"}',
  );
  assert.deepEqual(Receipt.parse(failed.bytes()), failed);
  assert.equal(Receipt.applied("evt_1").bytes().toString(), '{"event_id":"evt_1","status":"applied"}');
  assert.ok(Object.isFrozen(failed));
});

test("receipt ids: rcp_ + 32 hex, fresh each time; probe ids are sha256-derived", () => {
  const ids = new Set(Array.from({ length: 100 }, () => newReceiptId()));
  assert.equal(ids.size, 100);
  for (const id of ids) {
    assert.match(id, /^rcp_[0-9a-f]{32}$/);
  }
  assert.equal(probeReceiptId("evt_1"), probeReceiptId("evt_1"));
  assert.notEqual(probeReceiptId("evt_1"), probeReceiptId("evt_2"));
  assert.match(probeReceiptId("evt_1"), /^rcp_[0-9a-f]{32}$/);
});

test("keys: a seed is 32 bytes of strict base64", () => {
  const key = ReceiptKey.generate("k");
  assert.equal(ReceiptKey.fromSeed("k", key.seedBase64()).publicKeyBase64(), key.publicKeyBase64());
  assert.equal(ReceiptKey.fromSeed("k", ` ${key.seedBase64()}\n`).publicKeyBase64(), key.publicKeyBase64());
  for (const bad of ["", "AAAA", Buffer.alloc(33).toString("base64"), "not base64 at all!!", `${key.seedBase64().slice(0, -1)}*`]) {
    assert.throws(() => ReceiptKey.fromSeed("k", bad), (e: unknown) => e instanceof ReceiptError && e.kind === "invalid_key", bad);
  }
  assert.throws(() => sign({ seed: key.seedBase64(), keyId: "k", receiptId: "r", timestamp: 1.5, body: "{}" }), TypeError);
});

test("verifyReceipt refuses in the gateway's order", () => {
  const key = ReceiptKey.generate("orders-1");
  const signed = key.sign(Receipt.applied("evt_1"), { receiptId: "rcp_1", timestamp: 1_700_000_000 });
  const headers = signed.headers();
  const verify = (h: Record<string, string>, body: Uint8Array = signed.body, now = 1_700_000_000, k = key) => {
    try {
      verifyReceipt(h, body, k.publicKeyBase64(), { now });
      return "ok";
    } catch (e) {
      return (e as ReceiptError).code;
    }
  };
  assert.equal(verify(headers), "ok");
  assert.equal(verify(headers, signed.body, 1_700_000_000 + 300), "ok");
  assert.equal(verify(headers, signed.body, 1_700_000_000 + 301), "receipt_timestamp_stale");
  assert.equal(verify(headers, signed.body, 1_700_000_000 - 301), "receipt_timestamp_stale");
  assert.equal(verify({ ...headers, "receipt-key": " " }), "receipt_header_missing");
  assert.equal(verify({ ...headers, "receipt-timestamp": "soon" }), "receipt_timestamp_invalid");
  assert.equal(verify(headers, Buffer.from('{"event_id":"evt_2","status":"applied"}')), "receipt_signature_invalid");
  assert.equal(verify(headers, signed.body, 1_700_000_000, ReceiptKey.generate("other")), "receipt_signature_invalid");
  assert.equal(verify({ ...headers, "receipt-signature": `v1,AAAA ${headers["receipt-signature"]}` }), "ok");
  assert.equal(verify({ ...headers, "receipt-id": "rcp_2" }), "receipt_signature_invalid");
  // A valid signature over a body that is not a receipt is refused last, as malformed.
  const odd = sign({ seed: key.seedBase64(), keyId: "orders-1", receiptId: "rcp_3", timestamp: 1_700_000_000, body: "{}" });
  assert.equal(verify(odd, Buffer.from("{}")), "receipt_malformed");
  assert.throws(() => decodeInlineBody("no base64!"), (e: unknown) => (e as ReceiptError).code === "receipt_malformed");
  assert.equal(decodeInlineBody(signed.inlineHeaders()["receipt-body"]).toString(), signed.body.toString());
});
