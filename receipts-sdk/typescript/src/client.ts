/**
 * Posts receipts to the gateway's `POST /v1/receipts` (README "Receipts: the wire format"),
 * with the global `fetch`.
 *
 * Every try is signed afresh (a new `receipt-timestamp`) under the SAME `receipt-id`, so the
 * gateway sees one idempotent receipt however many tries it took. Network errors, 5xx, 408
 * and 429 are retried with capped exponential backoff and jitter (a `Retry-After` is honoured
 * up to the cap); any other 4xx is final and comes back as a `rejected` error with the
 * gateway's error code. The same rules as the Rust `receipts_sdk::client`.
 */

import { unixNow } from "./encoding.js";
import { type Receipt, type ReceiptKey, type SignedReceipt, newReceiptId } from "./receipt.js";

/** How many tries and how long to wait between them. */
export interface RetryPolicy {
  /** Tries in all, the first included (at least 1). */
  maxAttempts: number;
  /** The wait after the first failed try; it doubles after each further one. */
  baseDelayMs: number;
  /** The longest wait between two tries (also caps a `Retry-After`). */
  maxDelayMs: number;
}

/** 5 tries, waiting about 0.25 s, 0.5 s, 1 s, 2 s. */
export const DEFAULT_RETRY: Readonly<RetryPolicy> = Object.freeze({ maxAttempts: 5, baseDelayMs: 250, maxDelayMs: 10_000 });

/**
 * The wait after failed try number `attempt` (1-based): `base * 2^(attempt-1)`, capped, then
 * scaled by a random factor in [0.5, 1] so many clients do not retry in step.
 */
export function retryDelayMs(policy: RetryPolicy, attempt: number, random: () => number = Math.random): number {
  const exp = policy.baseDelayMs * 2 ** Math.min(Math.max(attempt - 1, 0), 20);
  return Math.min(exp, policy.maxDelayMs) * (0.5 + random() / 2);
}

/** The gateway's answer to an accepted receipt: the event's new outcome and the rest it said. */
export interface PostAnswer {
  /** `confirmed`, `failed` or `unknown`. */
  outcome: string;
  event_id?: string;
  receipt_id?: string;
  /** The gateway already had this receipt id with this body. */
  duplicate?: boolean;
  [field: string]: unknown;
}

export type ReceiptClientErrorKind =
  /** A final 4xx: trying again cannot help (bad signature, unknown key or event, …). */
  | "rejected"
  /** 5xx, 408 or 429 on the last try. */
  | "unavailable"
  /** No answer on the last try (connection refused, reset, timeout). */
  | "network"
  /** The gateway accepted the receipt (2xx) but its answer is not the expected JSON. */
  | "bad_answer";

/** Why a receipt was not accepted. */
export class ReceiptClientError extends Error {
  override readonly name = "ReceiptClientError";
  constructor(
    readonly kind: ReceiptClientErrorKind,
    message: string,
    /** The HTTP status (`rejected`, `unavailable`). */
    readonly status: number | undefined = undefined,
    /** The gateway's error code, or `http_<status>` when it sent none. */
    readonly code: string | undefined = undefined,
    /** Tries made (`unavailable`, `network`). */
    readonly attempts: number | undefined = undefined,
  ) {
    super(message);
  }

  /** Whether the receipt can never be accepted as it is (a final 4xx). */
  get isRejected(): boolean {
    return this.kind === "rejected";
  }

  /** Whether the gateway stored the receipt (a 2xx with an odd body). */
  get wasAccepted(): boolean {
    return this.kind === "bad_answer";
  }
}

/** Anything that posts a receipt under a given id: what the outbox flusher needs. */
export interface ReceiptPoster {
  postWithId(receipt: Receipt, receiptId: string): Promise<PostAnswer>;
}

export interface ReceiptClientOptions {
  retry?: Partial<RetryPolicy>;
  /** Per try (default 10 s). */
  timeoutMs?: number;
  /** Default: the global `fetch`. */
  fetch?: typeof fetch;
  /** How the client waits between tries (tests record the waits instead of sleeping). */
  sleep?: (ms: number) => Promise<void>;
  /** Unix seconds each try is signed at (default: the clock). */
  now?: () => number;
}

/** What one try came to. */
type Try = { done: PostAnswer } | { again: ReceiptClientError; retryAfterMs: number | undefined };

/** Posts signed receipts to one gateway. */
export class ReceiptClient implements ReceiptPoster {
  /** The full URL receipts are posted to. */
  readonly url: string;
  readonly retry: RetryPolicy;
  private readonly timeoutMs: number;
  private readonly fetch: typeof fetch;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly now: () => number;

  /** A client for the gateway at `gatewayBaseUrl` (e.g. `http://127.0.0.1:8080`), signing with `key`. */
  constructor(
    gatewayBaseUrl: string,
    readonly key: ReceiptKey,
    options: ReceiptClientOptions = {},
  ) {
    this.url = `${gatewayBaseUrl.replace(/\/+$/, "")}/v1/receipts`;
    const retry = { ...DEFAULT_RETRY, ...options.retry };
    this.retry = { ...retry, maxAttempts: Math.max(1, Math.floor(retry.maxAttempts)) };
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.fetch = options.fetch ?? globalThis.fetch;
    this.sleep = options.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
    this.now = options.now ?? unixNow;
  }

  /** Posts `receipt` under a fresh receipt id, retrying as the policy says. */
  post(receipt: Receipt): Promise<PostAnswer> {
    return this.postWithId(receipt, newReceiptId());
  }

  /**
   * Posts `receipt` under a given receipt id (e.g. one stored in an outbox): a receipt posted
   * twice under one id counts once.
   */
  async postWithId(receipt: Receipt, receiptId: string): Promise<PostAnswer> {
    for (let attempt = 1; ; attempt++) {
      const signed = this.key.sign(receipt, { receiptId, timestamp: this.now() });
      const result = await this.tryOnce(signed, attempt);
      if ("done" in result) {
        return result.done;
      }
      if (attempt >= this.retry.maxAttempts) {
        throw result.again;
      }
      const backoff = retryDelayMs(this.retry, attempt);
      await this.sleep(Math.max(backoff, Math.min(result.retryAfterMs ?? 0, this.retry.maxDelayMs)));
    }
  }

  private async tryOnce(signed: SignedReceipt, attempt: number): Promise<Try> {
    const network = (e: unknown): Try => ({
      again: new ReceiptClientError(
        "network",
        `the gateway could not be reached after ${attempt} tries: ${errorChain(e)}`,
        undefined,
        undefined,
        attempt,
      ),
      retryAfterMs: undefined,
    });
    let response: Response;
    let text: string;
    try {
      response = await this.fetch(this.url, {
        method: "POST",
        headers: { "content-type": "application/json", "user-agent": "hookwarden-receipts-ts/0.1", ...signed.headers() },
        body: signed.body,
        signal: AbortSignal.timeout(this.timeoutMs),
      });
      // The connection may break while the answer is read: the receipt may or may not be
      // stored, and posting it again under the same id is safe either way.
      text = await response.text();
    } catch (e) {
      return network(e);
    }
    const status = response.status;
    if (status >= 200 && status < 300) {
      const answer = parseJson(text);
      if (typeof answer === "object" && answer !== null && typeof (answer as PostAnswer).outcome === "string") {
        return { done: answer as PostAnswer };
      }
      throw new ReceiptClientError(
        "bad_answer",
        `the gateway accepted the receipt but answered unexpected JSON: ${excerpt(text)}`,
        status,
      );
    }
    const error = (parseJson(text) as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
    const code = typeof error?.code === "string" ? error.code : `http_${status}`;
    const message = typeof error?.message === "string" ? error.message : excerpt(text);
    if (status >= 500 || status === 408 || status === 429) {
      return {
        again: new ReceiptClientError(
          "unavailable",
          `the gateway answered ${status} (${code}: ${message}) after ${attempt} tries`,
          status,
          code,
          attempt,
        ),
        retryAfterMs: retryAfterMs(response.headers.get("retry-after"), this.now()),
      };
    }
    throw new ReceiptClientError(
      "rejected",
      `the gateway refused the receipt (${status} ${code}): ${message}`,
      status,
      code,
    );
  }
}

/** A `Retry-After` in milliseconds: delta seconds or an HTTP date; `undefined` when absent or unreadable. */
export function retryAfterMs(value: string | null, nowSecs: number = unixNow()): number | undefined {
  if (value === null) {
    return undefined;
  }
  const text = value.trim();
  if (/^[0-9]+$/.test(text)) {
    return Number(text) * 1000;
  }
  const date = Date.parse(text);
  return Number.isNaN(date) ? undefined : Math.max(0, date - nowSecs * 1000);
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** An error with its causes, e.g. "fetch failed: connect ECONNREFUSED 127.0.0.1:9". */
function errorChain(error: unknown): string {
  const parts: string[] = [];
  let current: unknown = error;
  while (current instanceof Error && parts.length < 5) {
    parts.push(current.message);
    current = current.cause;
  }
  return parts.length > 0 ? parts.join(": ") : String(error);
}

function excerpt(text: string): string {
  return [...text].slice(0, 200).join("");
}
