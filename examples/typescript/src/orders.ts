/**
 * The business write, on SQLite (better-sqlite3) or PostgreSQL (node-postgres): one order per
 * event, recorded in ONE transaction with the event's processed mark and its receipt.
 *
 * The two databases hold transactions differently (better-sqlite3 synchronously, node-postgres
 * on a checked-out client), so each has its `apply`; what an order is and the test hooks are
 * written once, here.
 */

import Database from "better-sqlite3";
import { type OutboxStore, type ProbeRecords, Receipt } from "hookwarden-receipts";
import { PgOutbox } from "hookwarden-receipts/pg";
import { SqliteOutbox } from "hookwarden-receipts/sqlite";
import pg from "pg";

/** The business table. One row per event: `alreadyProcessed` makes sure of that. */
const CREATE_ORDERS = `CREATE TABLE IF NOT EXISTS orders (
    event_id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    source TEXT NOT NULL,
    amount BIGINT NULL,
    received_at BIGINT NOT NULL
)`;

export interface Order {
  event_id: string;
  order_id: string;
  source: string;
  amount: number | null;
  received_at: number;
}

/** What applying one event came to. */
export type Applied =
  | { status: "applied"; orderId: string; receiptId: string }
  /** A retry or a replay of an event already applied: nothing written. */
  | { status: "duplicate" };

/** The business logic refused the event: a permanent failure, reported with a `failed` receipt. */
export class Rejected extends Error {
  override readonly name = "Rejected";
}

/**
 * The order an event describes. Stripe-style events carry the object under `data.object`;
 * others are the object.
 */
function orderFrom(event: Record<string, unknown>): { orderId: string; amount: number | null } {
  const data = event["data"] as { object?: Record<string, unknown> } | undefined;
  const object = data?.object ?? event;
  const field = (name: string) => object[name] ?? event[name];
  const orderId = field("id");
  if (typeof orderId !== "string" || orderId.length === 0) {
    throw new Rejected("the event has no order id");
  }
  const amount = field("amount");
  return { orderId, amount: typeof amount === "number" && Number.isInteger(amount) ? amount : null };
}

/**
 * Test hooks, run INSIDE the transaction after the order and its receipt were written, so
 * what they undo shows that a rollback takes the receipt with it:
 * - `"fail": true`: the business logic refuses the order (rolled back; a `failed` receipt
 *   `E_REJECTED` goes in a transaction of its own; the handler answers 422);
 * - `"fail": "rollback"`: an error as from the database (rolled back; no receipt at all; the
 *   handler answers 500 and the gateway retries).
 */
function testHooks(event: Record<string, unknown>): void {
  if (event["fail"] === true) {
    throw new Rejected("the order was refused (test hook `fail: true`)");
  }
  if (event["fail"] === "rollback") {
    throw new Error("the transaction failed before its commit (test hook `fail: \"rollback\"`)");
  }
}

/** The handler's database. */
export interface OrdersDb {
  /** The receipts outbox (for the flusher) and records (for the status probe). */
  readonly outbox: OutboxStore & ProbeRecords;
  /** One transaction: the processed mark, the order, its `applied` receipt. */
  apply(eventId: string, source: string, event: Record<string, unknown>): Promise<Applied>;
  /** Queues a `failed` receipt in a transaction of its own (the event is not marked processed). */
  reject(eventId: string, code: string, detail: string): Promise<string>;
  /** Every order, oldest first. */
  orders(): Promise<Order[]>;
  close(): Promise<void>;
}

/** Opens `sqlite://path` or `postgres://…` and creates the tables. */
export async function openOrdersDb(url: string): Promise<OrdersDb> {
  if (url.startsWith("postgres://") || url.startsWith("postgresql://")) {
    return PgOrders.open(url);
  }
  if (url.startsWith("sqlite://")) {
    return SqliteOrders.open(url.slice("sqlite://".length));
  }
  throw new Error(`HANDLER_DATABASE_URL must be sqlite://PATH or postgres://…, not ${url}`);
}

class SqliteOrders implements OrdersDb {
  private constructor(
    private readonly db: Database.Database,
    readonly outbox: SqliteOutbox,
  ) {}

  static open(path: string): SqliteOrders {
    const db = new Database(path);
    // Readers (GET /orders, the flusher) then do not hold up the writer.
    db.pragma("journal_mode = WAL");
    db.pragma("synchronous = FULL");
    const outbox = new SqliteOutbox(db);
    outbox.ensureSchema();
    db.exec(CREATE_ORDERS);
    return new SqliteOrders(db, outbox);
  }

  async apply(eventId: string, source: string, event: Record<string, unknown>): Promise<Applied> {
    // better-sqlite3 runs the function in BEGIN … COMMIT, and rolls back if it throws.
    const apply = this.db.transaction((): Applied => {
      if (this.outbox.alreadyProcessed(eventId)) {
        return { status: "duplicate" };
      }
      const { orderId, amount } = orderFrom(event);
      this.db
        .prepare("INSERT INTO orders (event_id, order_id, source, amount, received_at) VALUES (?, ?, ?, ?, ?)")
        .run(eventId, orderId, source, amount, Date.now());
      const receiptId = this.outbox.enqueue(Receipt.applied(eventId).withTargetRecord(orderId));
      testHooks(event);
      return { status: "applied", orderId, receiptId };
    });
    return apply.immediate();
  }

  async reject(eventId: string, code: string, detail: string): Promise<string> {
    return this.db.transaction(() => this.outbox.enqueue(Receipt.failed(eventId, code, detail)))();
  }

  async orders(): Promise<Order[]> {
    return this.db
      .prepare("SELECT event_id, order_id, source, amount, received_at FROM orders ORDER BY received_at, event_id")
      .all() as Order[];
  }

  async close(): Promise<void> {
    this.db.close();
  }
}

class PgOrders implements OrdersDb {
  private constructor(
    private readonly pool: pg.Pool,
    readonly outbox: PgOutbox,
  ) {}

  static async open(url: string): Promise<PgOrders> {
    const pool = new pg.Pool({ connectionString: url, max: 8 });
    const outbox = new PgOutbox(pool);
    await outbox.ensureSchema();
    await pool.query(CREATE_ORDERS);
    return new PgOrders(pool, outbox);
  }

  async apply(eventId: string, source: string, event: Record<string, unknown>): Promise<Applied> {
    // COMMIT when the function resolves, ROLLBACK when it throws.
    return this.outbox.transaction(async (tx): Promise<Applied> => {
      if (await this.outbox.alreadyProcessed(tx, eventId)) {
        return { status: "duplicate" };
      }
      const { orderId, amount } = orderFrom(event);
      await tx.query("INSERT INTO orders (event_id, order_id, source, amount, received_at) VALUES ($1, $2, $3, $4, $5)", [
        eventId,
        orderId,
        source,
        amount,
        Date.now(),
      ]);
      const receiptId = await this.outbox.enqueue(tx, Receipt.applied(eventId).withTargetRecord(orderId));
      testHooks(event);
      return { status: "applied", orderId, receiptId };
    });
  }

  async reject(eventId: string, code: string, detail: string): Promise<string> {
    return this.outbox.transaction((tx) => this.outbox.enqueue(tx, Receipt.failed(eventId, code, detail)));
  }

  async orders(): Promise<Order[]> {
    const { rows } = await this.pool.query(
      "SELECT event_id, order_id, source, amount, received_at FROM orders ORDER BY received_at, event_id",
    );
    return (rows as Record<string, unknown>[]).map((r) => ({
      event_id: String(r["event_id"]),
      order_id: String(r["order_id"]),
      source: String(r["source"]),
      amount: r["amount"] === null ? null : Number(r["amount"]),
      received_at: Number(r["received_at"]),
    }));
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
