/**
 * The handler's side of the status probe (docs/status-probe.md): the gateway asks "which of
 * these events have you applied or failed?" and the handler answers with signed receipts.
 *
 * The request is signed like a forward (Standard Webhooks `v1`, the source's secret) but its
 * `webhook-id` is a `prb_…` id and its body's `type` is `hookwarden.status_probe`, so a probe
 * is never taken for a forward nor a forward for a probe. The answer comes from the outbox and
 * the inbox:
 * - an event with a receipt in the outbox (sent or not) is answered with that receipt, under
 *   its stored id, signed afresh (the gateway then has that id with that body at most once);
 * - an event only marked processed is answered `applied` under the probe receipt id
 *   ({@link probeReceiptId}), so asking twice records one receipt;
 * - an event the handler has no record of is left out: absence means "I do not know".
 *
 * {@link handleStatusProbe} is framework-neutral (raw body and headers in, status and JSON
 * out); `statusProbeHandler` in `./http.js` mounts it on Express or node:http.
 */

import { unixNow } from "./encoding.js";
import { HEADER_SOURCE, HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP } from "./forwarded.js";
import { type HeaderSource, headerGetter } from "./headers.js";
import type { EventRecords, StoredReceipt } from "./outbox.js";
import { type InlineReceiptHeaders, Receipt, type ReceiptKey, probeReceiptId } from "./receipt.js";
import { DEFAULT_TOLERANCE_SECS, WebhookError, WebhookSecret, verifyWebhook } from "./webhook.js";

export const PROBE_TYPE = "hookwarden.status_probe";
export const PROBE_VERSION = 1;
export const PROBE_ID_PREFIX = "prb_";
/** The most event ids one probe asks about. */
export const MAX_PROBE_EVENTS = 100;

/** A verified probe: which events of which source the gateway asks about. */
export interface ProbeRequest {
  /** `prb_…`, new for every probe request. */
  probeId: string;
  source: string;
  /** The gateway's `evt_…` ids, each once, in the order asked. */
  eventIds: string[];
}

/** One answer entry: a receipt in the inline form (four `receipt-*` headers plus `receipt-body`). */
export type ProbeEntry = InlineReceiptHeaders;

/** The answer's JSON. */
export interface ProbeAnswer {
  receipts: ProbeEntry[];
}

/** Why a probe was refused: 401 when it is not the gateway's, 400 when it cannot be read. */
export class ProbeError extends Error {
  override readonly name = "ProbeError";
  constructor(
    readonly status: 400 | 401,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Where the answers come from: the outbox and inbox (`SqliteOutbox`, `PgOutbox`), or your own. */
export interface ProbeRecords {
  records(eventIds: readonly string[]): Promise<EventRecords>;
}

/** The source's signing secret, or one per source name (`undefined`: the source is not known here). */
export type ProbeSecrets = WebhookSecret | string | ((source: string) => WebhookSecret | string | undefined);

export interface ProbeOptions {
  /** Unix seconds to check the probe's timestamp against and to sign the answers at (default: now). */
  now?: number;
}

/**
 * Checks a probe as docs/status-probe.md says: the Standard Webhooks signature with the
 * source's secret, the timestamp within 5 minutes, `webhook-id` starting with `prb_`; then the
 * body: `type`, `version` 1, `source`, 1 to 100 event ids.
 */
export function verifyProbe(
  secrets: ProbeSecrets,
  headers: HeaderSource,
  body: Uint8Array,
  options: ProbeOptions = {},
): ProbeRequest {
  const get = headerGetter(headers);
  const unsigned = (message: string) => new ProbeError(401, "probe_signature_invalid", message);
  const need = (name: string) => {
    const value = get(name)?.trim();
    if (!value) {
      throw unsigned(`the \`${name}\` header is missing`);
    }
    return value;
  };
  const webhook = {
    id: need(HEADER_WEBHOOK_ID),
    timestamp: need(HEADER_WEBHOOK_TIMESTAMP),
    signature: need(HEADER_WEBHOOK_SIGNATURE),
  };
  const headerSource = get(HEADER_SOURCE)?.trim() || undefined;
  const secret = secretFor(secrets, headerSource);
  if (secret === undefined) {
    throw unsigned(`no signing secret is configured for source \`${headerSource ?? ""}\``);
  }
  try {
    verifyWebhook(secret, webhook, body, options.now ?? unixNow(), DEFAULT_TOLERANCE_SECS);
  } catch (e) {
    if (e instanceof WebhookError && e.kind === "stale_timestamp") {
      throw new ProbeError(401, "probe_timestamp_stale", "the probe's timestamp is more than 5 minutes from the clock");
    }
    if (e instanceof WebhookError) {
      throw unsigned(`the probe's signature does not verify: ${e.message}`);
    }
    throw e;
  }
  if (!webhook.id.startsWith(PROBE_ID_PREFIX)) {
    throw new ProbeError(401, "probe_id_invalid", "a probe's `webhook-id` starts with `prb_` (this looks like a forward)");
  }
  const request = parseProbeBody(body);
  if (headerSource !== undefined && headerSource !== request.source) {
    throw new ProbeError(400, "probe_malformed", "the `hookwarden-source` header and the body's `source` differ");
  }
  return { probeId: webhook.id, ...request };
}

function secretFor(secrets: ProbeSecrets, source: string | undefined): WebhookSecret | undefined {
  if (typeof secrets === "function") {
    const secret = source === undefined ? undefined : secrets(source);
    return typeof secret === "string" ? WebhookSecret.parse(secret) : secret;
  }
  return typeof secrets === "string" ? WebhookSecret.parse(secrets) : secrets;
}

function parseProbeBody(body: Uint8Array): Omit<ProbeRequest, "probeId"> {
  const bad = (message: string) => new ProbeError(400, "probe_malformed", message);
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
  } catch {
    throw bad("the probe body is not JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw bad("the probe body is not a JSON object");
  }
  const probe = value as Record<string, unknown>;
  if (probe["type"] !== PROBE_TYPE) {
    throw new ProbeError(400, "probe_type_invalid", `the body's \`type\` is not \`${PROBE_TYPE}\``);
  }
  if (probe["version"] !== PROBE_VERSION) {
    throw new ProbeError(
      400,
      "probe_version_unsupported",
      `this handler answers probe version ${PROBE_VERSION}, not ${JSON.stringify(probe["version"])}`,
    );
  }
  const source = probe["source"];
  if (typeof source !== "string" || source.length === 0) {
    throw bad("the body's `source` is not a source name");
  }
  const ids = probe["event_ids"];
  if (!Array.isArray(ids) || ids.length === 0 || ids.length > MAX_PROBE_EVENTS) {
    throw bad(`\`event_ids\` is a list of 1 to ${MAX_PROBE_EVENTS} event ids`);
  }
  if (!ids.every((id): id is string => typeof id === "string" && id.length > 0)) {
    throw bad("every entry of `event_ids` is an event id");
  }
  return { source, eventIds: [...new Set(ids)] };
}

/**
 * Answers a verified probe from `records`: per event asked, the outbox receipt re-signed under
 * its stored id (an `applied` one if there is one, else the latest), else an `applied` receipt
 * under the probe receipt id when the event is only marked processed, else nothing.
 */
export async function answerProbe(
  records: ProbeRecords,
  key: ReceiptKey,
  request: ProbeRequest,
  options: ProbeOptions = {},
): Promise<ProbeAnswer> {
  const now = options.now ?? unixNow();
  const known = await records.records(request.eventIds);
  const receipts: ProbeEntry[] = [];
  for (const eventId of request.eventIds) {
    const stored = storedAnswer(known.receipts, eventId);
    if (stored !== undefined) {
      receipts.push(key.sign(stored.receipt, { receiptId: stored.receiptId, timestamp: now }).inlineHeaders());
    } else if (known.processed.has(eventId)) {
      const receipt = Receipt.applied(eventId);
      receipts.push(key.sign(receipt, { receiptId: probeReceiptId(eventId), timestamp: now }).inlineHeaders());
    }
  }
  return { receipts };
}

/**
 * The outbox receipt that answers for `eventId`: `applied` is final at the gateway, so it wins
 * over a `failed` one made before a successful retry; among equals the latest. Rows whose body
 * is not a receipt for this event are passed over.
 */
function storedAnswer(rows: readonly StoredReceipt[], eventId: string): { receiptId: string; receipt: Receipt } | undefined {
  let best: { receiptId: string; receipt: Receipt } | undefined;
  for (const row of rows) {
    let receipt: Receipt;
    try {
      receipt = Receipt.parse(row.body);
    } catch {
      continue;
    }
    if (receipt.eventId !== eventId) {
      continue;
    }
    // Rows come oldest first: a later row of the same rank replaces an earlier one.
    if (best === undefined || best.receipt.status === "failed" || receipt.status === "applied") {
      best = { receiptId: row.receiptId, receipt };
    }
  }
  return best;
}

export interface StatusProbeOptions {
  /** The source's signing secret (`signing_secret` in the gateway's config), or one per source. */
  secret: ProbeSecrets;
  /** The handler's receipt key (registered in the source's `receipt_keys`). */
  key: ReceiptKey;
  /** The outbox and inbox to answer from. */
  records: ProbeRecords;
  /** Unix seconds (default: the clock). */
  now?: () => number;
  /** Called when the lookup failed (answered 500); default `console.error`. */
  onError?: (error: unknown) => void;
}

/** A probe's HTTP answer: the status and the JSON body to send with `content-type: application/json`. */
export interface StatusProbeResponse {
  status: number;
  body: ProbeAnswer | { error: { code: string; message: string } };
}

/**
 * The whole endpoint, for any framework: the exact request body bytes and its headers in, the
 * status and JSON out. 200 with the answer; 401 for a probe that is not the gateway's
 * (unsigned, stale, not `prb_`); 400 for one it cannot read (wrong `type`, unknown `version`,
 * bad `event_ids`); 500 when the records cannot be read.
 */
export async function handleStatusProbe(
  options: StatusProbeOptions,
  request: { headers: HeaderSource; body: Uint8Array },
): Promise<StatusProbeResponse> {
  const now = options.now?.() ?? unixNow();
  let probe: ProbeRequest;
  try {
    probe = verifyProbe(options.secret, request.headers, request.body, { now });
  } catch (e) {
    if (e instanceof ProbeError) {
      return { status: e.status, body: { error: { code: e.code, message: e.message } } };
    }
    throw e;
  }
  try {
    return { status: 200, body: await answerProbe(options.records, options.key, probe, { now }) };
  } catch (e) {
    (options.onError ?? ((error: unknown) => console.error("status probe: the records could not be read:", error)))(e);
    return { status: 500, body: { error: { code: "probe_lookup_failed", message: "the handler could not read its records" } } };
  }
}
