/**
 * Verifying forwards: the Rust `forwarded` tests, and the reference `standardwebhooks` library
 * agreeing with this SDK both ways.
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import { type Forwarded, ForwardedError, WebhookError, WebhookSecret, verifyForwarded } from "hookwarden-receipts";
import { Webhook } from "standardwebhooks";

const NOW = 1_700_000_000;
const BODY = Buffer.from('{"id":"ord_1"}');
const SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

type Headers = Record<string, string>;

/** The headers the gateway sends, signed with `secret` at `NOW`. */
function forward(secret: WebhookSecret = WebhookSecret.parse(SECRET)): Headers {
  return {
    "webhook-id": "evt_01",
    "webhook-timestamp": String(NOW),
    "webhook-signature": secret.sign("evt_01", NOW, BODY),
    "idempotency-key": "idk_abc",
    "hookwarden-attempt": "2",
    "hookwarden-source": "stripe",
  };
}

function verify(headers: Headers, body: Uint8Array = BODY, now = NOW): Forwarded | string {
  try {
    return verifyForwarded(SECRET, headers, body, { now });
  } catch (e) {
    assert.ok(e instanceof ForwardedError, String(e));
    return e.kind === "signature" ? `signature:${e.signatureError?.kind}` : `${e.kind}:${e.header}`;
  }
}

function without(headers: Headers, name: string): Headers {
  const copy = { ...headers };
  delete copy[name];
  return copy;
}

test("accepts a signed forward and reads its headers", () => {
  assert.deepEqual(verify(forward(), BODY, NOW + 60), {
    eventId: "evt_01",
    idempotencyKey: "idk_abc",
    attempt: 2,
    source: "stripe",
    replayId: undefined,
    isReplay: false,
  });
  const replay = verify({ ...forward(), "hookwarden-replay-id": "rpl_9" }) as Forwarded;
  assert.equal(replay.replayId, "rpl_9");
  assert.equal(replay.isReplay, true);
  // Header names in any case (a plain record), a fetch Headers, or a lookup function.
  const mixed = Object.fromEntries(Object.entries(forward()).map(([k, v]) => [k.toUpperCase(), v]));
  assert.equal((verify(mixed) as Forwarded).eventId, "evt_01");
  assert.equal(verifyForwarded(SECRET, new Headers(forward()), BODY, { now: NOW }).attempt, 2);
  assert.equal(verifyForwarded(SECRET, (n) => forward()[n], BODY, { now: NOW }).source, "stripe");
});

test("refuses bad signatures, stale or tampered forwards", () => {
  assert.equal(verify(forward(), Buffer.from('{"id":"ord_2"}')), "signature:no_matching_signature");
  assert.equal(verify(forward(WebhookSecret.generate())), "signature:no_matching_signature");
  assert.equal(verify(forward(), BODY, NOW + 301), "signature:stale_timestamp");
  assert.equal(verify(forward(), BODY, NOW - 301), "signature:stale_timestamp");
  // Another event id under the same signature.
  assert.equal(verify({ ...forward(), "webhook-id": "evt_02" }), "signature:no_matching_signature");
  assert.equal(verify({ ...forward(), "webhook-timestamp": "soon" }), "signature:invalid_timestamp");
  assert.equal(verify({ ...forward(), "webhook-signature": "v1a,AAAA v2,xyz" }), "signature:no_matching_signature");
  // Several entries: one that matches is enough.
  const sig = forward()["webhook-signature"] ?? "";
  assert.equal((verify({ ...forward(), "webhook-signature": `v1,bad  ${sig}` }) as Forwarded).eventId, "evt_01");
});

test("refuses missing or invalid headers", () => {
  for (const name of [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "idempotency-key",
    "hookwarden-attempt",
    "hookwarden-source",
  ]) {
    assert.equal(verify(without(forward(), name)), `missing_header:${name}`);
  }
  assert.equal(verify({ ...forward(), "hookwarden-source": "  " }), "missing_header:hookwarden-source");
  // A status probe, signed with the same secret, is never an event.
  const secret = WebhookSecret.parse(SECRET);
  const probe = { ...forward(), "webhook-id": "prb_01", "webhook-signature": secret.sign("prb_01", NOW, BODY) };
  assert.equal(verify(probe), "invalid_header:webhook-id");
  for (const attempt of ["0", "-1", "two", "99999999999", "1.5"]) {
    assert.equal(verify({ ...forward(), "hookwarden-attempt": attempt }), "invalid_header:hookwarden-attempt", attempt);
  }
});

test("the body is verified as bytes, also when it is not UTF-8", () => {
  const secret = WebhookSecret.parse(SECRET);
  const body = Buffer.from([0x7b, 0xff, 0xfe, 0x7d]);
  const headers = { ...forward(), "webhook-signature": secret.sign("evt_01", NOW, body) };
  assert.equal((verify(headers, body) as Forwarded).eventId, "evt_01");
  assert.equal(verify(headers, Buffer.from([0x7b, 0xef, 0xbf, 0xbd, 0x7d])), "signature:no_matching_signature");
});

test("the reference standardwebhooks library and this SDK agree both ways", () => {
  const reference = new Webhook(SECRET);
  const now = Math.floor(Date.now() / 1000);
  const body = '{"id":"ord_7","note":"é"}';
  const theirs = reference.sign("evt_7", new Date(now * 1000), body);
  const headers = {
    "webhook-id": "evt_7",
    "webhook-timestamp": String(now),
    "webhook-signature": theirs,
    "idempotency-key": "idk_7",
    "hookwarden-attempt": "1",
    "hookwarden-source": "acme",
  };
  assert.equal(verifyForwarded(SECRET, headers, Buffer.from(body)).eventId, "evt_7");
  const ours = WebhookSecret.parse(SECRET).sign("evt_7", now, body);
  assert.equal(ours, theirs);
  assert.deepEqual(reference.verify(body, { ...headers, "webhook-signature": ours }), JSON.parse(body));
});

test("secrets: whsec_ or bare base64, never printed", () => {
  const secret = WebhookSecret.parse(SECRET);
  assert.equal(WebhookSecret.parse(SECRET.slice("whsec_".length)).toWhsec(), SECRET);
  assert.equal(String(secret), "WebhookSecret(<redacted>)");
  assert.equal(JSON.stringify({ secret }), '{"secret":"WebhookSecret(<redacted>)"}');
  for (const bad of ["whsec_", "whsec_!!!", ""]) {
    assert.throws(() => WebhookSecret.parse(bad), (e: unknown) => e instanceof WebhookError && e.kind === "invalid_secret");
  }
});
