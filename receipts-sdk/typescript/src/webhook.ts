/**
 * Standard Webhooks `v1` signatures (HMAC-SHA256 with a shared `whsec_` secret), as the
 * gateway signs its forwards and status probes.
 *
 * The signed content is `{id}.{timestamp}.{body}` over the exact body bytes; the
 * `webhook-signature` header holds space-separated `version,base64` entries and a message is
 * valid when any `v1` entry matches. Written on `node:crypto` rather than the `standardwebhooks`
 * package because that one takes the body as a string (a body that is not UTF-8 would be
 * verified as other bytes) and reads the clock itself; the tests check both agree.
 */

import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";

import { decodeBase64Strict, parseUnixSeconds, signedContent, toBytes, withinTolerance } from "./encoding.js";

/** How far a timestamp may be from now, either way, before a message is refused as stale. */
export const DEFAULT_TOLERANCE_SECS = 5 * 60;

export type WebhookErrorKind =
  | "invalid_secret"
  | "missing_header"
  | "invalid_timestamp"
  | "stale_timestamp"
  | "no_matching_signature";

const MESSAGES: Record<WebhookErrorKind, string> = {
  invalid_secret: "the secret is not a valid `whsec_` base64 secret",
  missing_header: "a Standard Webhooks header is missing",
  invalid_timestamp: "the timestamp is not a unix time in seconds",
  stale_timestamp: "the timestamp is outside the tolerance",
  no_matching_signature: "no signature in the header matches",
};

/** Why a webhook signature was refused. */
export class WebhookError extends Error {
  override readonly name = "WebhookError";
  constructor(readonly kind: WebhookErrorKind) {
    super(MESSAGES[kind]);
  }
}

/** A shared Standard Webhooks secret: raw key bytes, written as `whsec_<base64>`. */
export class WebhookSecret {
  private constructor(private readonly key: Buffer) {}

  /** Parses `whsec_<base64>`; a bare base64 string is accepted too, as other libraries do. */
  static parse(text: string): WebhookSecret {
    const encoded = text.startsWith("whsec_") ? text.slice("whsec_".length) : text;
    const key = decodeBase64Strict(encoded.trim());
    if (key === undefined || key.length === 0) {
      throw new WebhookError("invalid_secret");
    }
    return new WebhookSecret(key);
  }

  /** A fresh random 24-byte secret. */
  static generate(): WebhookSecret {
    return new WebhookSecret(randomBytes(24));
  }

  /** The `whsec_…` form, for config files. */
  toWhsec(): string {
    return `whsec_${this.key.toString("base64")}`;
  }

  /** The `v1,<base64>` signature entry for one message. */
  sign(id: string, timestamp: number | bigint, body: Uint8Array | string): string {
    return `v1,${this.mac(id, String(timestamp), toBytes(body)).toString("base64")}`;
  }

  /** Whether one base64 `v1` signature matches, compared in constant time. */
  matchesV1(id: string, timestamp: string, body: Uint8Array, signatureBase64: string): boolean {
    const given = decodeBase64Strict(signatureBase64);
    const expected = this.mac(id, timestamp, body);
    return given !== undefined && given.length === expected.length && timingSafeEqual(given, expected);
  }

  private mac(id: string, timestamp: string, body: Uint8Array): Buffer {
    return createHmac("sha256", this.key).update(signedContent(id, timestamp, body)).digest();
  }

  /** Never prints the key. */
  toString(): string {
    return "WebhookSecret(<redacted>)";
  }

  toJSON(): string {
    return this.toString();
  }
}

/** The three Standard Webhooks headers of one message, as received. */
export interface WebhookHeaders {
  id: string;
  timestamp: string;
  signature: string;
}

/** Checks the timestamp against `nowSecs` (within `toleranceSecs`), then the signatures. */
export function verifyWebhook(
  secret: WebhookSecret,
  headers: WebhookHeaders,
  body: Uint8Array,
  nowSecs: number,
  toleranceSecs: number = DEFAULT_TOLERANCE_SECS,
): void {
  const timestamp = parseUnixSeconds(headers.timestamp.trim());
  if (timestamp === undefined) {
    throw new WebhookError("invalid_timestamp");
  }
  if (!withinTolerance(timestamp, nowSecs, toleranceSecs)) {
    throw new WebhookError("stale_timestamp");
  }
  verifyWebhookIgnoringTimestamp(secret, headers, body);
}

/** Checks only the signatures: for messages whose timestamp has long passed. */
export function verifyWebhookIgnoringTimestamp(secret: WebhookSecret, headers: WebhookHeaders, body: Uint8Array): void {
  const timestamp = parseUnixSeconds(headers.timestamp.trim());
  if (timestamp === undefined) {
    throw new WebhookError("invalid_timestamp");
  }
  // The signed content has the timestamp as a number prints (`+0042` is signed as `42`).
  const signedTimestamp = timestamp.toString();
  for (const entry of headers.signature.split(/\s+/)) {
    const comma = entry.indexOf(",");
    if (comma < 0) {
      continue;
    }
    if (entry.slice(0, comma) === "v1" && secret.matchesV1(headers.id, signedTimestamp, body, entry.slice(comma + 1))) {
      return;
    }
  }
  throw new WebhookError("no_matching_signature");
}
