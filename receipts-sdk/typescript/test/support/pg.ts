/**
 * PostgreSQL for the tests, on 127.0.0.1:5432 (override the admin URL with HOOKWARDEN_TEST_PG):
 * a database of its own per test run (per test file: node --test runs each in a process),
 * dropped when the run ends, and in it a schema of its own per test, which is what a test's
 * connection URL points at. PostgreSQL is required: the tests fail, never skip, without it.
 *
 * A schema instead of a database per test: creating a database costs a second or more on a
 * busy machine, a schema a few milliseconds, and the outbox's tables land in the schema the
 * connection's `search_path` names just the same.
 */

import { randomBytes } from "node:crypto";
import { after } from "node:test";

import pg from "pg";

const ADMIN_URL = process.env["HOOKWARDEN_TEST_PG"] ?? "postgres://postgres@127.0.0.1:5432/test";

let runDatabase: Promise<string> | undefined;

/** This run's database (created on first use): its URL. */
function database(): Promise<string> {
  runDatabase ??= (async () => {
    const name = `hw_ts_${randomBytes(8).toString("hex")}`;
    await admin(ADMIN_URL, `CREATE DATABASE ${name}`);
    return `${ADMIN_URL.slice(0, ADMIN_URL.lastIndexOf("/"))}/${name}`;
  })();
  return runDatabase;
}

after(async () => {
  if (runDatabase !== undefined) {
    const url = await runDatabase;
    await admin(ADMIN_URL, `DROP DATABASE IF EXISTS ${url.slice(url.lastIndexOf("/") + 1)} WITH (FORCE)`);
  }
});

async function admin(url: string, sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  try {
    await client.connect();
  } catch (e) {
    throw new Error(`PostgreSQL at ${url} is required for this test: ${(e as Error).message}`);
  }
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

/** A schema of its own for one test. */
export class TestPg {
  private constructor(
    private readonly schema: string,
    private readonly databaseUrl: string,
  ) {}

  static async create(): Promise<TestPg> {
    const databaseUrl = await database();
    const schema = `t_${randomBytes(6).toString("hex")}`;
    await admin(databaseUrl, `CREATE SCHEMA ${schema}`);
    return new TestPg(schema, databaseUrl);
  }

  /** A connection URL whose tables live in this test's schema. */
  get url(): string {
    return `${this.databaseUrl}?options=${encodeURIComponent(`-c search_path=${this.schema}`)}`;
  }

  async drop(): Promise<void> {
    await admin(this.databaseUrl, `DROP SCHEMA IF EXISTS ${this.schema} CASCADE`);
  }
}
