/**
 * Strict base64 and unix time, as the Rust SDK reads them.
 *
 * Node's `Buffer.from(s, "base64")` skips characters it does not know, so a mistyped seed or
 * signature would decode to other bytes instead of failing; the gateway and the Rust SDK use a
 * strict decoder, and so does this one.
 */

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Decodes standard, padded base64; `undefined` when `text` is not exactly that. */
export function decodeBase64Strict(text: string): Buffer | undefined {
  if (!BASE64.test(text)) {
    return undefined;
  }
  const bytes = Buffer.from(text, "base64");
  // Non-zero bits in the last character's padding are not canonical base64.
  return bytes.toString("base64") === text ? bytes : undefined;
}

/** The current unix time in seconds: the clock receipts and forwards are signed with. */
export function unixNow(): number {
  return Math.floor(Date.now() / 1000);
}

const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;

/**
 * Parses unix seconds as Rust's `i64::from_str` does (an optional sign, digits, nothing
 * else); `undefined` when it is not one.
 */
export function parseUnixSeconds(text: string): bigint | undefined {
  if (!/^[+-]?[0-9]+$/.test(text)) {
    return undefined;
  }
  const value = BigInt(text);
  return value >= I64_MIN && value <= I64_MAX ? value : undefined;
}

/** Whether `timestamp` is within `toleranceSecs` of `nowSecs`, either way. */
export function withinTolerance(timestamp: bigint, nowSecs: number, toleranceSecs: number): boolean {
  const distance = BigInt(Math.trunc(nowSecs)) - timestamp;
  return (distance < 0n ? -distance : distance) <= BigInt(toleranceSecs);
}

/** The bytes of `body`: a string is taken as UTF-8. */
export function toBytes(body: Uint8Array | string): Buffer {
  return typeof body === "string" ? Buffer.from(body, "utf8") : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
}

/** `{id}.{timestamp}.{body}`: the bytes every Standard Webhooks signature covers. */
export function signedContent(id: string, timestamp: string, body: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from(`${id}.${timestamp}.`, "utf8"), body]);
}
