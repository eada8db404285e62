/**
 * The receipt format, byte for byte as the Rust `receipts_sdk::receipt` writes it.
 *
 * A receipt is a small JSON document signed with the handler's ed25519 key, the way
 * Standard Webhooks signs `v1a` messages: the signature covers
 * `{receipt-id}.{receipt-timestamp}.{body}` and travels in four headers, `receipt-id`,
 * `receipt-timestamp`, `receipt-key` and `receipt-signature: v1a,<base64>`. Inline (on a
 * handler's 2xx, or in a status-probe answer) a fifth header, `receipt-body`, carries the
 * JSON as base64.
 *
 * The JSON is written exactly as serde writes the Rust struct (fields in declaration order,
 * absent options left out), so a receipt queued by a TypeScript handler and posted by a Rust
 * one, or the other way round, has the same bytes under the same receipt id.
 */

import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  sign as ed25519Sign,
  verify as ed25519Verify,
  type KeyObject,
} from "node:crypto";

import {
  decodeBase64Strict,
  parseUnixSeconds,
  signedContent,
  toBytes,
  unixNow,
  withinTolerance,
} from "./encoding.js";
import { type HeaderSource, headerGetter } from "./headers.js";

export const HEADER_ID = "receipt-id";
export const HEADER_TIMESTAMP = "receipt-timestamp";
export const HEADER_KEY = "receipt-key";
export const HEADER_SIGNATURE = "receipt-signature";
export const HEADER_BODY = "receipt-body";

/** How far a receipt's timestamp may be from the gateway's clock. */
export const TOLERANCE_SECS = 5 * 60;

/** Longest `event_id`, `error_code` and `target_record_id`, in UTF-8 bytes. */
const MAX_CODE = 200;
/** Longest `detail`, in UTF-8 bytes. */
const MAX_DETAIL = 2000;

const FIELDS = ["event_id", "status", "target_record_id", "error_code", "detail"] as const;

/** `applied`: the handler committed the event's effects; `failed`: it could not. */
export type ReceiptStatus = "applied" | "failed";

/** The receipt JSON as it goes over the wire. */
export interface ReceiptJson {
  event_id: string;
  status: ReceiptStatus;
  target_record_id?: string;
  error_code?: string;
  detail?: string;
}

/** Why a receipt was refused; `code` is the gateway's stable error code for the same refusal. */
export type ReceiptErrorKind =
  | "missing_header"
  | "invalid_timestamp"
  | "stale_timestamp"
  | "bad_signature"
  | "malformed"
  | "bad_inline_body"
  | "invalid_key";

const CODES: Record<ReceiptErrorKind, string> = {
  missing_header: "receipt_header_missing",
  invalid_timestamp: "receipt_timestamp_invalid",
  stale_timestamp: "receipt_timestamp_stale",
  bad_signature: "receipt_signature_invalid",
  malformed: "receipt_malformed",
  bad_inline_body: "receipt_malformed",
  invalid_key: "receipt_key_invalid",
};

export class ReceiptError extends Error {
  override readonly name = "ReceiptError";
  constructor(
    readonly kind: ReceiptErrorKind,
    message: string,
  ) {
    super(message);
  }

  /** The gateway's error code for this refusal, e.g. `receipt_malformed`. */
  get code(): string {
    return CODES[this.kind];
  }
}

function malformed(message: string): ReceiptError {
  return new ReceiptError("malformed", `the receipt body is malformed: ${message}`);
}

/**
 * What a handler states about one event. Always valid: the constructors and {@link Receipt.parse}
 * refuse what the gateway would refuse (`receipt_malformed`).
 */
export class Receipt {
  readonly eventId: string;
  readonly status: ReceiptStatus;
  readonly targetRecordId: string | undefined;
  readonly errorCode: string | undefined;
  readonly detail: string | undefined;

  private constructor(fields: {
    eventId: string;
    status: ReceiptStatus;
    targetRecordId?: string | undefined;
    errorCode?: string | undefined;
    detail?: string | undefined;
  }) {
    this.eventId = fields.eventId;
    this.status = fields.status;
    this.targetRecordId = fields.targetRecordId;
    this.errorCode = fields.errorCode;
    this.detail = fields.detail;
    this.check();
    Object.freeze(this);
  }

  /** The handler committed the event's effects (optionally: the row it wrote). */
  static applied(eventId: string, options: { targetRecordId?: string } = {}): Receipt {
    return new Receipt({ eventId, status: "applied", targetRecordId: options.targetRecordId });
  }

  /** The handler could not apply the event, with a stable error code (and a detail for people). */
  static failed(eventId: string, errorCode: string, detail?: string): Receipt {
    return new Receipt({ eventId, status: "failed", errorCode, detail });
  }

  /** The same receipt naming the record the handler wrote. */
  withTargetRecord(targetRecordId: string): Receipt {
    return new Receipt({ ...this.fields(), targetRecordId });
  }

  /**
   * Parses and checks a receipt body as the gateway does: JSON (UTF-8), known fields only,
   * `failed` carries an `error_code` and `applied` none, lengths within bounds.
   */
  static parse(body: Uint8Array | string): Receipt {
    let text: string;
    try {
      text = typeof body === "string" ? body : new TextDecoder("utf-8", { fatal: true }).decode(body);
    } catch {
      throw malformed("not UTF-8");
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (e) {
      throw malformed((e as Error).message);
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      throw malformed("expected a JSON object");
    }
    const object = value as Record<string, unknown>;
    const duplicate = duplicateTopLevelKey(text);
    if (duplicate !== undefined) {
      throw malformed(`duplicate field \`${duplicate}\``);
    }
    for (const name of Object.keys(object)) {
      if (!(FIELDS as readonly string[]).includes(name)) {
        throw malformed(`unknown field \`${name}\`, expected one of ${FIELDS.map((f) => `\`${f}\``).join(", ")}`);
      }
    }
    const eventId = object["event_id"];
    if (eventId === undefined) {
      throw malformed("missing field `event_id`");
    }
    if (typeof eventId !== "string") {
      throw malformed("`event_id` must be a string");
    }
    const status = object["status"];
    if (status === undefined) {
      throw malformed("missing field `status`");
    }
    if (status !== "applied" && status !== "failed") {
      throw malformed("`status` must be `applied` or `failed`");
    }
    return new Receipt({
      eventId,
      status,
      targetRecordId: optionalString(object, "target_record_id"),
      errorCode: optionalString(object, "error_code"),
      detail: optionalString(object, "detail"),
    });
  }

  /** The wire JSON object, fields in the Rust struct's order, absent ones left out. */
  toJSON(): ReceiptJson {
    const json: ReceiptJson = { event_id: this.eventId, status: this.status };
    if (this.targetRecordId !== undefined) json.target_record_id = this.targetRecordId;
    if (this.errorCode !== undefined) json.error_code = this.errorCode;
    if (this.detail !== undefined) json.detail = this.detail;
    return json;
  }

  /** The exact body bytes to sign and send. */
  bytes(): Buffer {
    return Buffer.from(JSON.stringify(this), "utf8");
  }

  private fields() {
    return {
      eventId: this.eventId,
      status: this.status,
      targetRecordId: this.targetRecordId,
      errorCode: this.errorCode,
      detail: this.detail,
    };
  }

  private check(): void {
    const bytes = (s: string) => Buffer.byteLength(s, "utf8");
    // Rust strings are UTF-8: a lone surrogate has no bytes to send.
    for (const value of [this.eventId, this.targetRecordId, this.errorCode, this.detail]) {
      if (value !== undefined && LONE_SURROGATE.test(value)) {
        throw malformed("a field is not valid Unicode (a lone surrogate)");
      }
    }
    if (this.eventId.length === 0 || bytes(this.eventId) > MAX_CODE) {
      throw malformed("`event_id` must be a non-empty id");
    }
    if (this.status === "failed" && this.errorCode === undefined) {
      throw malformed("a `failed` receipt needs an `error_code`");
    }
    if (this.status === "applied" && this.errorCode !== undefined) {
      throw malformed("an `applied` receipt carries no `error_code`");
    }
    if (
      (this.errorCode !== undefined && (this.errorCode.length === 0 || bytes(this.errorCode) > MAX_CODE)) ||
      (this.targetRecordId !== undefined && bytes(this.targetRecordId) > MAX_CODE) ||
      (this.detail !== undefined && bytes(this.detail) > MAX_DETAIL)
    ) {
      throw malformed("a field is empty or too long");
    }
  }
}

const LONE_SURROGATE = /\p{Cs}/u;

/**
 * The first key the top-level object of `text` (valid JSON) repeats: `JSON.parse` keeps the
 * last, serde refuses the document, and so does this SDK.
 */
function duplicateTopLevelKey(text: string): string | undefined {
  const seen = new Set<string>();
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let end = i + 1;
      while (text[end] !== '"') {
        end += text[end] === "\\" ? 2 : 1;
      }
      if (depth === 1 && expectKey) {
        const key = JSON.parse(text.slice(i, end + 1)) as string;
        if (seen.has(key)) {
          return key;
        }
        seen.add(key);
        expectKey = false;
      }
      i = end;
    } else if (c === "{" || c === "[") {
      depth += 1;
      expectKey = depth === 1;
    } else if (c === "}" || c === "]") {
      depth -= 1;
    } else if (c === "," && depth === 1) {
      expectKey = true;
    }
  }
  return undefined;
}

/** An optional string field: absent and `null` are both "not given", as serde reads them. */
function optionalString(object: Record<string, unknown>, name: string): string | undefined {
  const value = object[name];
  if (value === undefined || value === null) {
    return undefined;
  }
  if (typeof value !== "string") {
    throw malformed(`\`${name}\` must be a string`);
  }
  return value;
}

/** `rcp_` + 32 random hex digits: a fresh receipt id. */
export function newReceiptId(): string {
  return `rcp_${randomBytes(16).toString("hex")}`;
}

/**
 * The receipt id of a status-probe answer for an event the handler only knows as processed:
 * `rcp_` + the first 32 hex digits of sha256("hookwarden-probe:" + event id), so asking twice
 * records one receipt (docs/status-probe.md).
 */
export function probeReceiptId(eventId: string): string {
  const digest = createHash("sha256").update(`hookwarden-probe:${eventId}`, "utf8").digest("hex");
  return `rcp_${digest.slice(0, 32)}`;
}

/** The four headers of `POST /v1/receipts`. */
export type ReceiptHeaders = {
  "receipt-id": string;
  "receipt-timestamp": string;
  "receipt-key": string;
  "receipt-signature": string;
};

/** The five headers of an inline receipt (a handler's 2xx, a status-probe answer entry). */
export type InlineReceiptHeaders = ReceiptHeaders & {
  "receipt-body": string;
};

/** A receipt ready to send: its headers and its exact body bytes. */
export class SignedReceipt {
  constructor(
    readonly receiptId: string,
    /** Unix seconds, as sent. */
    readonly timestamp: string,
    readonly keyId: string,
    /** `v1a,<base64>`. */
    readonly signature: string,
    readonly body: Buffer,
  ) {}

  /** The four headers of `POST /v1/receipts` (the body is {@link SignedReceipt.body}). */
  headers(): ReceiptHeaders {
    return {
      "receipt-id": this.receiptId,
      "receipt-timestamp": this.timestamp,
      "receipt-key": this.keyId,
      "receipt-signature": this.signature,
    };
  }

  /** The five headers that put this receipt on a 2xx or into a status-probe answer. */
  inlineHeaders(): InlineReceiptHeaders {
    return { ...this.headers(), "receipt-body": this.body.toString("base64") };
  }
}

/** PKCS#8 DER for an ed25519 private key, up to the 32-byte seed. */
const PKCS8_ED25519_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");

function invalidKey(): ReceiptError {
  return new ReceiptError("invalid_key", "a receipt key seed is 32 bytes of base64");
}

function privateKeyFromSeed(seedBase64: string): KeyObject {
  const seed = decodeBase64Strict(seedBase64.trim());
  if (seed === undefined || seed.length !== 32) {
    throw invalidKey();
  }
  return createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: "der", type: "pkcs8" });
}

function checkTimestampArgument(timestamp: number): string {
  if (!Number.isSafeInteger(timestamp)) {
    throw new TypeError(`a receipt timestamp is whole unix seconds, not ${timestamp}`);
  }
  return String(timestamp);
}

function signWith(
  key: KeyObject,
  keyId: string,
  receiptId: string,
  timestamp: number,
  body: Buffer,
): SignedReceipt {
  const ts = checkTimestampArgument(timestamp);
  const signature = ed25519Sign(null, signedContent(receiptId, ts, body), key);
  return new SignedReceipt(receiptId, ts, keyId, `v1a,${signature.toString("base64")}`, body);
}

/** A handler's signing key and the id it is registered under in the source's `receipt_keys`. */
export class ReceiptKey {
  private constructor(
    readonly id: string,
    private readonly privateKey: KeyObject,
  ) {}

  /** Loads a key from its 32-byte seed, base64, as `hookwarden keys generate` prints it. */
  static fromSeed(id: string, seedBase64: string): ReceiptKey {
    return new ReceiptKey(id, privateKeyFromSeed(seedBase64));
  }

  /** A new random key. */
  static generate(id: string): ReceiptKey {
    return new ReceiptKey(id, generateKeyPairSync("ed25519").privateKey);
  }

  /** The seed, base64: what the handler keeps secret. */
  seedBase64(): string {
    const der = this.privateKey.export({ format: "der", type: "pkcs8" });
    return der.subarray(der.length - 32).toString("base64");
  }

  /** The public half, base64: what goes into the source's `receipt_keys`. */
  publicKeyBase64(): string {
    const der = createPublicKey(this.privateKey).export({ format: "der", type: "spki" });
    return der.subarray(der.length - 32).toString("base64");
  }

  /**
   * Signs `receipt` at `timestamp` (unix seconds, default now) under `receiptId` (default a
   * fresh one). A retried post must reuse its receipt id.
   */
  sign(receipt: Receipt, options: { receiptId?: string; timestamp?: number } = {}): SignedReceipt {
    return signWith(
      this.privateKey,
      this.id,
      options.receiptId ?? newReceiptId(),
      options.timestamp ?? unixNow(),
      receipt.bytes(),
    );
  }
}

/** The arguments of {@link sign}. */
export interface SignArgs {
  /** The base64 32-byte ed25519 seed, as `hookwarden keys generate` prints it. */
  seed: string;
  keyId: string;
  receiptId: string;
  /** Unix seconds. */
  timestamp: number;
  /** The exact body bytes that will be sent (a string is taken as UTF-8). */
  body: Uint8Array | string;
}

/**
 * The low-level primitive SPEC.md fixes for every receipts SDK: signs `body` as it is (no
 * parsing, no re-serialising) and returns the four `receipt-*` headers.
 */
export function sign({ seed, keyId, receiptId, timestamp, body }: SignArgs): ReceiptHeaders {
  return signWith(privateKeyFromSeed(seed), keyId, receiptId, timestamp, toBytes(body)).headers();
}

/** The five headers that put `receipt` on a handler's 2xx, signed now under a fresh id. */
export function inlineReceiptHeaders(key: ReceiptKey, receipt: Receipt, now: number = unixNow()): InlineReceiptHeaders {
  return key.sign(receipt, { timestamp: now }).inlineHeaders();
}

/** Decodes an inline `receipt-body` header. */
export function decodeInlineBody(value: string): Buffer {
  const bytes = decodeBase64Strict(value.trim());
  if (bytes === undefined) {
    throw new ReceiptError("bad_inline_body", "`receipt-body` is not base64");
  }
  return bytes;
}

/**
 * Checks a receipt the way the gateway does, in its order: the four headers, the timestamp
 * within 5 minutes of `now`, a `v1a` signature by `publicKeyBase64` over the body, the body.
 * For tests and for services that accept receipts themselves.
 */
export function verifyReceipt(
  headers: HeaderSource,
  body: Uint8Array,
  publicKeyBase64: string,
  options: { now?: number } = {},
): Receipt {
  const get = headerGetter(headers);
  const need = (name: string) => {
    const value = get(name)?.trim();
    if (!value) {
      throw new ReceiptError("missing_header", `the \`${name}\` header is missing`);
    }
    return value;
  };
  const id = need(HEADER_ID);
  const timestamp = need(HEADER_TIMESTAMP);
  need(HEADER_KEY);
  const signature = need(HEADER_SIGNATURE);
  const t = parseUnixSeconds(timestamp);
  if (t === undefined) {
    throw new ReceiptError("invalid_timestamp", "`receipt-timestamp` is not a unix time in seconds");
  }
  if (!withinTolerance(t, options.now ?? unixNow(), TOLERANCE_SECS)) {
    throw new ReceiptError("stale_timestamp", "`receipt-timestamp` is more than 5 minutes from the clock");
  }
  const raw = decodeBase64Strict(publicKeyBase64.trim());
  if (raw === undefined || raw.length !== 32) {
    throw new ReceiptError("invalid_key", "a receipt public key is 32 bytes of base64");
  }
  const publicKey = createPublicKey({
    key: Buffer.concat([Buffer.from("302a300506032b6570032100", "hex"), raw]),
    format: "der",
    type: "spki",
  });
  const content = signedContent(id, timestamp, body);
  const ok = signature
    .split(/\s+/)
    .filter((entry) => entry.length > 0)
    .some((entry) => {
      const comma = entry.indexOf(",");
      if (comma < 0 || entry.slice(0, comma) !== "v1a") {
        return false;
      }
      const sig = decodeBase64Strict(entry.slice(comma + 1));
      return sig !== undefined && sig.length === 64 && ed25519Verify(null, content, publicKey, sig);
    });
  if (!ok) {
    throw new ReceiptError("bad_signature", "the signature does not verify with the key `receipt-key` names");
  }
  return Receipt.parse(body);
}
