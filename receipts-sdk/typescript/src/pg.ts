/**
 * The receipt outbox and the "already processed?" inbox on node-postgres
 * (`hookwarden-receipts/pg`).
 *
 * A transaction in node-postgres lives on one client checked out of the pool; the calls a
 * handler makes inside it take that client:
 *
 * ```ts
 * const outbox = new PgOutbox(pool);
 * await outbox.ensureSchema();
 * await outbox.transaction(async (tx) => {
 *   if (await outbox.alreadyProcessed(tx, eventId)) return;   // a retry or a replay
 *   await tx.query("INSERT INTO orders …", […]);
 *   await outbox.enqueue(tx, Receipt.applied(eventId));
 * });
 * flusher.wake();
 * ```
 *
 * Two transactions marking the same event at once take turns: the second waits for the first
 * and sees "already processed" only if the first committed. This module takes the pool and
 * never imports `pg` itself.
 */

import {
  type EventRecords,
  OUTBOX_SCHEMA,
  type OutboxStats,
  type OutboxStore,
  type StoredReceipt,
  receiptRow,
} from "./outbox.js";
import { type Receipt, newReceiptId } from "./receipt.js";

/** A node-postgres `Client`, `PoolClient` or `Pool`: something that runs a query. */
export interface PgQueryable {
  query(text: string, values?: unknown[]): Promise<{ rows: unknown[]; rowCount: number | null }>;
}

/** A client checked out of the pool. */
export interface PgPoolClient extends PgQueryable {
  release(error?: Error | boolean): void;
}

/** A node-postgres `Pool`. */
export interface PgPool extends PgQueryable {
  connect(): Promise<PgPoolClient>;
}

/**
 * Two processes creating the same tables at once may collide; this transaction-scoped lock
 * (the Rust SDK's) makes them take turns.
 */
const SCHEMA_LOCK = "SELECT pg_advisory_xact_lock(7261937401)";

interface OutboxRow {
  receipt_id: string;
  event_id: string;
  body: string;
  created_at: string | number;
}

/** The outbox and inbox tables in one PostgreSQL database. */
export class PgOutbox implements OutboxStore {
  constructor(readonly pool: PgPool) {}

  /** Creates the tables if they are missing; safe to call on every start, from many processes. */
  async ensureSchema(): Promise<void> {
    await this.transaction(async (tx) => {
      await tx.query(SCHEMA_LOCK);
      for (const statement of OUTBOX_SCHEMA) {
        await tx.query(statement);
      }
    });
  }

  /**
   * Runs `work` in a transaction on a client of its own: COMMIT when it resolves, ROLLBACK
   * when it throws (and the error goes on to the caller).
   */
  async transaction<T>(work: (tx: PgQueryable) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    let broken: Error | undefined;
    try {
      await client.query("BEGIN");
      const result = await work(client);
      await client.query("COMMIT");
      return result;
    } catch (error) {
      try {
        await client.query("ROLLBACK");
      } catch (rollback) {
        broken = rollback as Error; // a client that cannot roll back is not given back to the pool
      }
      throw error;
    } finally {
      client.release(broken);
    }
  }

  /**
   * Marks `eventId` processed in the transaction on `tx` and tells whether it ALREADY was
   * (`true`: a retry or a replay; skip the business write). A rolled-back transaction takes the
   * mark with it.
   */
  async alreadyProcessed(tx: PgQueryable, eventId: string): Promise<boolean> {
    const marked = await tx.query(
      `INSERT INTO hookwarden_processed_events (event_id, processed_at) VALUES ($1, $2)
       ON CONFLICT (event_id) DO NOTHING`,
      [eventId, Date.now()],
    );
    return marked.rowCount === 0;
  }

  /**
   * Queues `receipt` in the transaction on `tx` and returns its receipt id. It is posted only
   * once that transaction commits (wake the flusher then).
   */
  async enqueue(tx: PgQueryable, receipt: Receipt): Promise<string> {
    const body = receiptRow(receipt);
    const receiptId = newReceiptId();
    await tx.query(
      `INSERT INTO hookwarden_receipt_outbox (receipt_id, event_id, body, created_at, attempts)
       VALUES ($1, $2, $3, $4, 0)`,
      [receiptId, receipt.eventId, body, Date.now()],
    );
    return receiptId;
  }

  async unsent(limit: number): Promise<StoredReceipt[]> {
    const { rows } = await this.pool.query(
      `SELECT receipt_id, event_id, body, created_at FROM hookwarden_receipt_outbox WHERE sent_at IS NULL
       ORDER BY created_at, receipt_id LIMIT $1`,
      [limit],
    );
    return (rows as OutboxRow[]).map(storedReceipt);
  }

  async recordTry(receiptId: string, sentAt: number | null, error: string | null): Promise<void> {
    await this.pool.query(
      `UPDATE hookwarden_receipt_outbox SET attempts = attempts + 1, sent_at = $2, last_error = $3
       WHERE receipt_id = $1 AND sent_at IS NULL`,
      [receiptId, sentAt, error],
    );
  }

  async stats(): Promise<OutboxStats> {
    const { rows } = await this.pool.query(
      `SELECT COUNT(CASE WHEN sent_at IS NULL THEN 1 END) AS unsent,
              COUNT(CASE WHEN sent_at IS NOT NULL AND last_error IS NULL THEN 1 END) AS sent,
              COUNT(CASE WHEN sent_at IS NOT NULL AND last_error IS NOT NULL THEN 1 END) AS rejected
       FROM hookwarden_receipt_outbox`,
    );
    const row = rows[0] as { unsent: string; sent: string; rejected: string };
    return { unsent: Number(row.unsent), sent: Number(row.sent), rejected: Number(row.rejected) };
  }

  async records(eventIds: readonly string[]): Promise<EventRecords> {
    if (eventIds.length === 0) {
      return { receipts: [], processed: new Set() };
    }
    const ids = [...eventIds];
    const receipts = await this.pool.query(
      `SELECT receipt_id, event_id, body, created_at FROM hookwarden_receipt_outbox
       WHERE event_id = ANY($1::text[]) ORDER BY created_at, receipt_id`,
      [ids],
    );
    const processed = await this.pool.query(
      "SELECT event_id FROM hookwarden_processed_events WHERE event_id = ANY($1::text[])",
      [ids],
    );
    return {
      receipts: (receipts.rows as OutboxRow[]).map(storedReceipt),
      processed: new Set((processed.rows as { event_id: string }[]).map((r) => r.event_id)),
    };
  }
}

function storedReceipt(row: OutboxRow): StoredReceipt {
  return { receiptId: row.receipt_id, eventId: row.event_id, body: row.body, createdAt: Number(row.created_at) };
}
