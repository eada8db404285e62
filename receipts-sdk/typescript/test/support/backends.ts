/** The outbox on each database the SDK supports, behind one interface the tests share. */

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import Database from "better-sqlite3";
import type { OutboxStore, Receipt } from "hookwarden-receipts";
import { PgOutbox } from "hookwarden-receipts/pg";
import { SqliteOutbox } from "hookwarden-receipts/sqlite";
import pg from "pg";

import { TestPg } from "./pg.js";

/** What a transaction can do, the same for both drivers. */
export interface Tx {
  alreadyProcessed(eventId: string): Promise<boolean>;
  enqueue(receipt: Receipt): Promise<string>;
}

/** One database with the outbox on it. */
export interface Backend {
  outbox: OutboxStore;
  ensureSchema(): Promise<void>;
  /** Runs `work` in a transaction, then commits (`true`) or rolls back. */
  transaction<T>(commit: boolean, work: (tx: Tx) => Promise<T>): Promise<T>;
  /** Runs SQL beside the outbox (`?` placeholders become `$n` on PostgreSQL). */
  execute(sql: string, params?: unknown[]): Promise<void>;
  /** `name type notnull pk default`, per column, as the database reports them. */
  columns(table: string): Promise<string[]>;
  close(): Promise<void>;
}

export async function sqliteBackend(): Promise<Backend> {
  const dir = mkdtempSync(path.join(tmpdir(), "hw-outbox-"));
  const db = new Database(path.join(dir, "outbox.db"));
  db.pragma("journal_mode = WAL");
  const outbox = new SqliteOutbox(db);
  return {
    outbox,
    ensureSchema: async () => outbox.ensureSchema(),
    async transaction(commit, work) {
      db.exec("BEGIN IMMEDIATE");
      try {
        const result = await work({
          alreadyProcessed: async (id) => outbox.alreadyProcessed(id),
          enqueue: async (receipt) => outbox.enqueue(receipt),
        });
        db.exec(commit ? "COMMIT" : "ROLLBACK");
        return result;
      } catch (e) {
        db.exec("ROLLBACK");
        throw e;
      }
    },
    execute: async (sql, params = []) => {
      db.prepare(sql).run(...params);
    },
    columns: async (table) =>
      (db.pragma(`table_info(${table})`) as { name: string; type: string; notnull: number; pk: number; dflt_value: string | null }[]).map(
        (c) => `${c.name} ${c.type} ${c.notnull ? "NOT NULL" : "NULL"}${c.pk ? " PK" : ""}${c.dflt_value === null ? "" : ` DEFAULT ${c.dflt_value}`}`,
      ),
    async close() {
      db.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function pgBackend(): Promise<Backend> {
  const database = await TestPg.create();
  const pool = new pg.Pool({ connectionString: database.url, max: 4 });
  const outbox = new PgOutbox(pool);
  const numbered = (sql: string) => {
    let n = 0;
    return sql.replace(/\?/g, () => `$${++n}`);
  };
  return {
    outbox,
    ensureSchema: () => outbox.ensureSchema(),
    async transaction(commit, work) {
      const client = await pool.connect();
      try {
        await client.query("BEGIN");
        const result = await work({
          alreadyProcessed: (id) => outbox.alreadyProcessed(client, id),
          enqueue: (receipt) => outbox.enqueue(client, receipt),
        });
        await client.query(commit ? "COMMIT" : "ROLLBACK");
        return result;
      } catch (e) {
        await client.query("ROLLBACK");
        throw e;
      } finally {
        client.release();
      }
    },
    execute: async (sql, params = []) => {
      await pool.query(numbered(sql), params);
    },
    async columns(table) {
      const { rows } = await pool.query(
        `SELECT c.column_name, c.data_type, c.is_nullable, c.column_default,
                EXISTS (SELECT 1 FROM information_schema.key_column_usage k
                        WHERE k.table_schema = c.table_schema AND k.table_name = c.table_name
                          AND k.column_name = c.column_name) AS pk
         FROM information_schema.columns c
         WHERE c.table_schema = current_schema() AND c.table_name = $1 ORDER BY c.ordinal_position`,
        [table],
      );
      return (rows as { column_name: string; data_type: string; is_nullable: string; column_default: string | null; pk: boolean }[]).map(
        (c) =>
          `${c.column_name} ${c.data_type} ${c.is_nullable === "YES" ? "NULL" : "NOT NULL"}${c.pk ? " PK" : ""}${c.column_default === null ? "" : ` DEFAULT ${c.column_default}`}`,
      );
    },
    async close() {
      await pool.end();
      await database.drop();
    },
  };
}

/** Both databases, by name. */
export const BACKENDS = [
  ["sqlite", sqliteBackend],
  ["postgres", pgBackend],
] as const;
