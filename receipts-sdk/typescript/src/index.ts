/**
 * hookwarden-receipts: the handler side of hookwarden in TypeScript.
 *
 * - receipts: {@link sign} (the low-level primitive every SDK shares), {@link Receipt},
 *   {@link ReceiptKey}, inline receipts, receipt ids;
 * - {@link verifyForwarded}: a handler's check of a forward (Standard Webhooks `v1`);
 * - {@link ReceiptClient}: posts receipts, retrying under one receipt id;
 * - the transactional outbox: {@link flushOnce}, {@link startFlusher} here, the tables in
 *   `hookwarden-receipts/sqlite` (better-sqlite3) and `hookwarden-receipts/pg` (node-postgres);
 * - the status probe: {@link handleStatusProbe} (framework-neutral), {@link statusProbeHandler}
 *   (Express, node:http).
 *
 * The wire formats are the Rust `receipts-sdk`'s, byte for byte: `receipts-sdk/test-vectors.json`
 * is checked by the tests of every SDK.
 */

export {
  HEADER_BODY,
  HEADER_ID,
  HEADER_KEY,
  HEADER_SIGNATURE,
  HEADER_TIMESTAMP,
  type InlineReceiptHeaders,
  Receipt,
  ReceiptError,
  type ReceiptErrorKind,
  type ReceiptHeaders,
  type ReceiptJson,
  ReceiptKey,
  type ReceiptStatus,
  type SignArgs,
  SignedReceipt,
  TOLERANCE_SECS,
  decodeInlineBody,
  inlineReceiptHeaders,
  newReceiptId,
  probeReceiptId,
  sign,
  verifyReceipt,
} from "./receipt.js";
export {
  DEFAULT_TOLERANCE_SECS,
  WebhookError,
  type WebhookErrorKind,
  type WebhookHeaders,
  WebhookSecret,
  verifyWebhook,
  verifyWebhookIgnoringTimestamp,
} from "./webhook.js";
export {
  type Forwarded,
  ForwardedError,
  type ForwardedErrorKind,
  HEADER_ATTEMPT,
  HEADER_IDEMPOTENCY_KEY,
  HEADER_REPLAY_ID,
  HEADER_SOURCE,
  HEADER_WEBHOOK_ID,
  HEADER_WEBHOOK_SIGNATURE,
  HEADER_WEBHOOK_TIMESTAMP,
  type VerifyOptions,
  verifyForwarded,
} from "./forwarded.js";
export {
  DEFAULT_RETRY,
  type PostAnswer,
  ReceiptClient,
  ReceiptClientError,
  type ReceiptClientErrorKind,
  type ReceiptClientOptions,
  type ReceiptPoster,
  type RetryPolicy,
  retryAfterMs,
  retryDelayMs,
} from "./client.js";
export {
  type EventRecords,
  FLUSH_BATCH,
  type FlushReport,
  type Flusher,
  type FlusherOptions,
  OUTBOX_SCHEMA,
  OutboxError,
  type OutboxStats,
  type OutboxStore,
  type StoredReceipt,
  flushOnce,
  startFlusher,
} from "./outbox.js";
export {
  MAX_PROBE_EVENTS,
  PROBE_ID_PREFIX,
  PROBE_TYPE,
  PROBE_VERSION,
  type ProbeAnswer,
  type ProbeEntry,
  ProbeError,
  type ProbeOptions,
  type ProbeRecords,
  type ProbeRequest,
  type ProbeSecrets,
  type StatusProbeOptions,
  type StatusProbeResponse,
  answerProbe,
  handleStatusProbe,
  verifyProbe,
} from "./probe.js";
export { MAX_PROBE_BODY_BYTES, statusProbeHandler } from "./http.js";
export type { HeaderSource } from "./headers.js";
export { unixNow } from "./encoding.js";
