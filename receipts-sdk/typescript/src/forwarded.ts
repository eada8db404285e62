/**
 * Verifying the gateway's forwards (SPEC.md "Forwarding to the handler"), as the Rust
 * `receipts_sdk::forwarded` does.
 *
 * The gateway signs every forward with the source's `whsec_` secret the Standard Webhooks way
 * (`webhook-id`, `webhook-timestamp`, `webhook-signature`), with the hookwarden event id as
 * `webhook-id`, and adds `idempotency-key`, `hookwarden-attempt`, `hookwarden-source` and, on
 * replays, `hookwarden-replay-id`. Only the event id, the timestamp and the body are covered by
 * the signature; the other headers are informational. Key idempotency on
 * {@link Forwarded.eventId}, which is both authenticated and stable across every retry and
 * replay of an event. A status probe (`webhook-id` `prb_…`, signed with the same secret) is
 * refused here, so a captured probe cannot be passed off as an event.
 */

import { unixNow } from "./encoding.js";
import { type HeaderSource, headerGetter } from "./headers.js";
import { DEFAULT_TOLERANCE_SECS, WebhookError, WebhookSecret, verifyWebhook } from "./webhook.js";

export const HEADER_WEBHOOK_ID = "webhook-id";
export const HEADER_WEBHOOK_TIMESTAMP = "webhook-timestamp";
export const HEADER_WEBHOOK_SIGNATURE = "webhook-signature";
export const HEADER_IDEMPOTENCY_KEY = "idempotency-key";
export const HEADER_ATTEMPT = "hookwarden-attempt";
export const HEADER_SOURCE = "hookwarden-source";
export const HEADER_REPLAY_ID = "hookwarden-replay-id";

/** A verified forward: which delivery of which event it is. */
export interface Forwarded {
  /** The gateway's event id (`webhook-id`, `evt_…`): what a receipt confirms. */
  eventId: string;
  /** Stable per event, the same on every retry and replay. */
  idempotencyKey: string;
  /** 1 for the first forward, counting retries and replays. */
  attempt: number;
  /** The source's name, e.g. `stripe`. */
  source: string;
  /** Set when an operator's replay sent this forward. */
  replayId: string | undefined;
  isReplay: boolean;
}

export type ForwardedErrorKind = "missing_header" | "invalid_header" | "signature";

/** Why a forward was refused (answer 401 to all of them). */
export class ForwardedError extends Error {
  override readonly name = "ForwardedError";
  constructor(
    readonly kind: ForwardedErrorKind,
    /** The header at fault (`missing_header`, `invalid_header`). */
    readonly header: string | undefined,
    /** The signature check's reason (`signature`). */
    readonly signatureError: WebhookError | undefined,
  ) {
    super(
      kind === "signature"
        ? `the gateway's signature does not verify: ${signatureError?.message}`
        : `the \`${header}\` header is ${kind === "missing_header" ? "missing" : "not valid"}`,
    );
  }
}

const U32_MAX = 4_294_967_295;

/** Options of {@link verifyForwarded}. */
export interface VerifyOptions {
  /** Unix seconds to check the timestamp against (default: now). */
  now?: number;
  toleranceSecs?: number;
}

/**
 * Checks a forward's Standard Webhooks signature with the source's secret (5 min tolerance)
 * over the exact body bytes, and reads the hookwarden headers.
 */
export function verifyForwarded(
  secret: WebhookSecret | string,
  headers: HeaderSource,
  body: Uint8Array,
  options: VerifyOptions = {},
): Forwarded {
  const key = typeof secret === "string" ? WebhookSecret.parse(secret) : secret;
  const get = headerGetter(headers);
  const need = (name: string): string => {
    const value = get(name)?.trim();
    if (!value) {
      throw new ForwardedError("missing_header", name, undefined);
    }
    return value;
  };
  const webhook = {
    id: need(HEADER_WEBHOOK_ID),
    timestamp: need(HEADER_WEBHOOK_TIMESTAMP),
    signature: need(HEADER_WEBHOOK_SIGNATURE),
  };
  try {
    verifyWebhook(key, webhook, body, options.now ?? unixNow(), options.toleranceSecs ?? DEFAULT_TOLERANCE_SECS);
  } catch (e) {
    if (e instanceof WebhookError) {
      throw new ForwardedError("signature", undefined, e);
    }
    throw e;
  }
  // A status probe is signed with the same secret; its `prb_` id keeps it from ever being
  // taken for an event (docs/status-probe.md).
  if (webhook.id.startsWith("prb_")) {
    throw new ForwardedError("invalid_header", HEADER_WEBHOOK_ID, undefined);
  }
  const attemptText = need(HEADER_ATTEMPT);
  const attempt = /^\+?[0-9]+$/.test(attemptText) ? Number(attemptText) : NaN;
  if (!(attempt >= 1 && attempt <= U32_MAX)) {
    throw new ForwardedError("invalid_header", HEADER_ATTEMPT, undefined);
  }
  const idempotencyKey = need(HEADER_IDEMPOTENCY_KEY);
  const source = need(HEADER_SOURCE);
  const replayId = get(HEADER_REPLAY_ID)?.trim() || undefined;
  return { eventId: webhook.id, idempotencyKey, attempt, source, replayId, isReplay: replayId !== undefined };
}
