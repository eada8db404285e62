/**
 * The receipt outbox and the "already processed?" inbox on better-sqlite3
 * (`hookwarden-receipts/sqlite`).
 *
 * better-sqlite3 is synchronous, and so are the calls a handler makes inside its transaction:
 *
 * ```ts
 * const outbox = new SqliteOutbox(db);
 * outbox.ensureSchema();
 * db.transaction(() => {
 *   if (outbox.alreadyProcessed(eventId)) return;   // a retry or a replay
 *   db.prepare("INSERT INTO orders …").run(…);
 *   outbox.enqueue(Receipt.applied(eventId));
 * })();
 * flusher.wake();
 * ```
 *
 * A synchronous transaction cannot interleave with another request's statements on the same
 * connection, which an `async` one could. The flusher's statements run between transactions.
 * This module takes the database object and never imports better-sqlite3 itself.
 */

import { type EventRecords, OUTBOX_SCHEMA, OutboxError, type OutboxStats, type OutboxStore, type StoredReceipt, receiptRow } from "./outbox.js";
import { type Receipt, newReceiptId } from "./receipt.js";

/** The part of a better-sqlite3 statement the outbox uses. */
export interface SqliteStatement {
  run(...params: unknown[]): { changes: number };
  all(...params: unknown[]): unknown[];
  get(...params: unknown[]): unknown;
}

/** The part of a better-sqlite3 `Database` the outbox uses. */
export interface SqliteDatabase {
  prepare(sql: string): SqliteStatement;
  exec(sql: string): unknown;
  readonly inTransaction: boolean;
}

interface OutboxRow {
  receipt_id: string;
  event_id: string;
  body: string;
  created_at: number | bigint;
}

/** The outbox and inbox tables in one better-sqlite3 database. */
export class SqliteOutbox implements OutboxStore {
  constructor(readonly db: SqliteDatabase) {}

  /** Creates the tables if they are missing; safe to call on every start. */
  ensureSchema(): void {
    for (const statement of OUTBOX_SCHEMA) {
      this.db.exec(statement);
    }
  }

  /**
   * Marks `eventId` processed in the caller's transaction and tells whether it ALREADY was
   * (`true`: a retry or a replay; skip the business write). A rolled-back transaction takes the
   * mark with it.
   */
  alreadyProcessed(eventId: string): boolean {
    this.requireTransaction("alreadyProcessed");
    const marked = this.db
      .prepare(
        `INSERT INTO hookwarden_processed_events (event_id, processed_at) VALUES (?, ?)
         ON CONFLICT (event_id) DO NOTHING`,
      )
      .run(eventId, Date.now());
    return marked.changes === 0;
  }

  /**
   * Queues `receipt` in the caller's transaction and returns its receipt id. It is posted only
   * once that transaction commits (wake the flusher then).
   */
  enqueue(receipt: Receipt): string {
    this.requireTransaction("enqueue");
    const body = receiptRow(receipt);
    const receiptId = newReceiptId();
    this.db
      .prepare(
        `INSERT INTO hookwarden_receipt_outbox (receipt_id, event_id, body, created_at, attempts)
         VALUES (?, ?, ?, ?, 0)`,
      )
      .run(receiptId, receipt.eventId, body, Date.now());
    return receiptId;
  }

  async unsent(limit: number): Promise<StoredReceipt[]> {
    const rows = this.db
      .prepare(
        `SELECT receipt_id, event_id, body, created_at FROM hookwarden_receipt_outbox WHERE sent_at IS NULL
         ORDER BY created_at, receipt_id LIMIT ?`,
      )
      .all(limit) as OutboxRow[];
    return rows.map(storedReceipt);
  }

  async recordTry(receiptId: string, sentAt: number | null, error: string | null): Promise<void> {
    this.db
      .prepare(
        `UPDATE hookwarden_receipt_outbox SET attempts = attempts + 1, sent_at = ?, last_error = ?
         WHERE receipt_id = ? AND sent_at IS NULL`,
      )
      .run(sentAt, error, receiptId);
  }

  async stats(): Promise<OutboxStats> {
    const row = this.db
      .prepare(
        `SELECT COUNT(CASE WHEN sent_at IS NULL THEN 1 END) AS unsent,
                COUNT(CASE WHEN sent_at IS NOT NULL AND last_error IS NULL THEN 1 END) AS sent,
                COUNT(CASE WHEN sent_at IS NOT NULL AND last_error IS NOT NULL THEN 1 END) AS rejected
         FROM hookwarden_receipt_outbox`,
      )
      .get() as { unsent: number; sent: number; rejected: number };
    return { unsent: Number(row.unsent), sent: Number(row.sent), rejected: Number(row.rejected) };
  }

  async records(eventIds: readonly string[]): Promise<EventRecords> {
    if (eventIds.length === 0) {
      return { receipts: [], processed: new Set() };
    }
    const marks = eventIds.map(() => "?").join(", ");
    const receipts = this.db
      .prepare(
        `SELECT receipt_id, event_id, body, created_at FROM hookwarden_receipt_outbox
         WHERE event_id IN (${marks}) ORDER BY created_at, receipt_id`,
      )
      .all(...eventIds) as OutboxRow[];
    const processed = this.db
      .prepare(`SELECT event_id FROM hookwarden_processed_events WHERE event_id IN (${marks})`)
      .all(...eventIds) as { event_id: string }[];
    return { receipts: receipts.map(storedReceipt), processed: new Set(processed.map((r) => r.event_id)) };
  }

  private requireTransaction(call: string): void {
    if (!this.db.inTransaction) {
      throw new OutboxError(
        `${call} must run inside the transaction of the business write (db.transaction(() => { … })())`,
      );
    }
  }
}

function storedReceipt(row: OutboxRow): StoredReceipt {
  return { receiptId: row.receipt_id, eventId: row.event_id, body: row.body, createdAt: Number(row.created_at) };
}
