/**
 * The transactional outbox for receipts, whatever the database: the flusher and the rules it
 * follows, written once for `hookwarden-receipts/sqlite` (better-sqlite3) and
 * `hookwarden-receipts/pg` (node-postgres).
 *
 * The handler writes its receipt into `hookwarden_receipt_outbox` in the SAME transaction as
 * its business write; a flusher posts it after the commit. So a receipt is sent if and only if
 * the commit happened, also across a crash: a rolled-back transaction takes its receipt with
 * it, and a receipt committed just before a crash is posted by the next flusher. Posts are at
 * least once, under the receipt's stored id, which the gateway treats as one receipt.
 *
 * The tables and columns are the Rust `receipts_sdk::outbox`'s, so a handler can move between
 * languages with its database (times are unix milliseconds):
 *
 * ```sql
 * hookwarden_receipt_outbox(receipt_id TEXT PRIMARY KEY, event_id TEXT, body TEXT,
 *     created_at BIGINT, sent_at BIGINT NULL, attempts BIGINT, last_error TEXT NULL)
 * hookwarden_processed_events(event_id TEXT PRIMARY KEY, processed_at BIGINT)
 * ```
 *
 * A row with `sent_at` set and `last_error` NULL was accepted; with both set the gateway
 * refused it for good (a final 4xx other than 401), and it was put aside so it does not block
 * the queue.
 */

import type { ReceiptPoster } from "./client.js";
import { ReceiptClientError } from "./client.js";
import { Receipt } from "./receipt.js";

/** The outbox's tables, exactly as the Rust SDK creates them (both backends take this SQL). */
export const OUTBOX_SCHEMA: readonly string[] = [
  `CREATE TABLE IF NOT EXISTS hookwarden_receipt_outbox (
        receipt_id TEXT PRIMARY KEY,
        event_id TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        sent_at BIGINT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        last_error TEXT NULL
    )`,
  `CREATE INDEX IF NOT EXISTS hookwarden_receipt_outbox_unsent
        ON hookwarden_receipt_outbox (created_at) WHERE sent_at IS NULL`,
  `CREATE TABLE IF NOT EXISTS hookwarden_processed_events (
        event_id TEXT PRIMARY KEY,
        processed_at BIGINT NOT NULL
    )`,
];

/** How many unsent receipts one query picks up. */
export const FLUSH_BATCH = 100;

/** One row of the outbox. */
export interface StoredReceipt {
  receiptId: string;
  eventId: string;
  /** The receipt JSON as stored. */
  body: string;
  /** Unix milliseconds. */
  createdAt: number;
}

/** Counts of the outbox's rows. */
export interface OutboxStats {
  unsent: number;
  sent: number;
  rejected: number;
}

/** What the outbox and the inbox know about some events (for the status probe). */
export interface EventRecords {
  /** Every outbox receipt of those events, sent or not, oldest first. */
  receipts: StoredReceipt[];
  /** The events marked processed. */
  processed: Set<string>;
}

/**
 * The outbox's storage, as the flusher and the status probe use it. `SqliteOutbox` and
 * `PgOutbox` implement it; the transactional calls (`alreadyProcessed`, `enqueue`) are theirs,
 * because how a transaction is held differs between the drivers.
 */
export interface OutboxStore {
  /** The oldest unsent receipts (`ORDER BY created_at, receipt_id`). */
  unsent(limit: number): Promise<StoredReceipt[]>;
  /**
   * Counts a try; `sentAt` set ends the receipt's life in the queue. A receipt another flusher
   * already marked sent stays sent.
   */
  recordTry(receiptId: string, sentAt: number | null, error: string | null): Promise<void>;
  stats(): Promise<OutboxStats>;
  /** The outbox receipts and processed marks of `eventIds`. */
  records(eventIds: readonly string[]): Promise<EventRecords>;
}

/** What one {@link flushOnce} pass did. */
export interface FlushReport {
  /** Receipts the gateway accepted. */
  sent: number;
  /** Receipts refused for good (final 4xx, or a stored body that is not a receipt), put aside. */
  rejected: number;
  /**
   * Set when the pass stopped early because the gateway was unreachable, answered 5xx (after
   * the client's own retries) or 401; the receipts stay queued for the next pass.
   */
  error?: string;
}

/** Why an outbox call failed. */
export class OutboxError extends Error {
  override readonly name = "OutboxError";
}

/**
 * Checks a receipt before it is queued and gives its stored JSON: a malformed receipt fails the
 * caller's transaction, not the flusher later.
 */
export function receiptRow(receipt: Receipt): string {
  if (!(receipt instanceof Receipt)) {
    throw new OutboxError("enqueue takes a Receipt (Receipt.applied(…) or Receipt.failed(…))");
  }
  const body = JSON.stringify(receipt);
  Receipt.parse(body);
  return body;
}

/**
 * Posts every unsent receipt, oldest first, each under its stored receipt id. An accepted
 * receipt is marked sent; one refused with a final 4xx (400, 403, 404, 409, …) is put aside
 * with its error, so it does not block the queue; on a network error, a 5xx or a 401 (the
 * handler's key is not accepted: every receipt would fail alike) the pass stops and the
 * receipts stay queued.
 */
export async function flushOnce(store: OutboxStore, client: ReceiptPoster): Promise<FlushReport> {
  const report: FlushReport = { sent: 0, rejected: 0 };
  for (;;) {
    const batch = await store.unsent(FLUSH_BATCH);
    for (const row of batch) {
      let receipt: Receipt;
      try {
        receipt = Receipt.parse(row.body);
      } catch (e) {
        await store.recordTry(row.receiptId, Date.now(), errorText(e));
        report.rejected += 1;
        continue;
      }
      try {
        await client.postWithId(receipt, row.receiptId);
        await store.recordTry(row.receiptId, Date.now(), null);
        report.sent += 1;
      } catch (e) {
        if (e instanceof ReceiptClientError && e.wasAccepted) {
          await store.recordTry(row.receiptId, Date.now(), null);
          report.sent += 1;
        } else if (e instanceof ReceiptClientError && e.isRejected && e.status !== 401) {
          await store.recordTry(row.receiptId, Date.now(), e.message);
          report.rejected += 1;
        } else {
          await store.recordTry(row.receiptId, null, errorText(e));
          report.error = errorText(e);
          return report;
        }
      }
    }
    if (batch.length < FLUSH_BATCH) {
      return report;
    }
  }
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export interface FlusherOptions {
  /** How often to flush besides when woken (default 500 ms). */
  intervalMs?: number;
  /** Called after a pass that sent or put aside something, or stopped on an error. */
  onReport?: (report: FlushReport) => void;
  /** Called when a pass failed on the database (default: `console.warn`). */
  onError?: (error: unknown) => void;
}

/** A background loop running {@link flushOnce} every interval and whenever woken. */
export interface Flusher {
  /** Call after a commit that queued a receipt. Wakes during a pass cause one more pass. */
  wake(): void;
  /** Stops after the pass under way, if any; resolves when the loop has ended. */
  stop(): Promise<void>;
}

/**
 * Starts a {@link Flusher}; its first pass runs at once, so receipts committed before a crash
 * go out on the next start. Its timer does not keep the process alive by itself.
 */
export function startFlusher(store: OutboxStore, client: ReceiptPoster, options: FlusherOptions = {}): Flusher {
  const intervalMs = options.intervalMs ?? 500;
  const onError = options.onError ?? ((error: unknown) => console.warn("receipt outbox flush failed; will retry:", error));
  let stopped = false;
  let woken = false;
  let interrupt: (() => void) | undefined;

  const idle = () =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, intervalMs);
      timer.unref();
      interrupt = () => {
        clearTimeout(timer);
        resolve();
      };
    });

  const loop = (async () => {
    while (!stopped) {
      woken = false;
      try {
        const report = await flushOnce(store, client);
        if (report.sent + report.rejected > 0 || report.error !== undefined) {
          options.onReport?.(report);
        }
      } catch (error) {
        onError(error);
      }
      if (!stopped && !woken) {
        await idle();
        interrupt = undefined;
      }
    }
  })();

  return {
    wake() {
      woken = true;
      interrupt?.();
    },
    async stop() {
      stopped = true;
      interrupt?.();
      await loop;
    },
  };
}
