/**
 * A PostgreSQL database of its own per test, on 127.0.0.1:5432 (override the admin URL with
 * HOOKWARDEN_TEST_PG), dropped afterwards. PostgreSQL is required: the tests fail, never skip,
 * without it.
 */

import { randomBytes } from "node:crypto";

import pg from "pg";

const ADMIN_URL = process.env["HOOKWARDEN_TEST_PG"] ?? "postgres://postgres@127.0.0.1:5432/test";

export class TestPg {
  private constructor(
    readonly name: string,
    readonly url: string,
  ) {}

  static async create(): Promise<TestPg> {
    const name = `hw_ts_${randomBytes(8).toString("hex")}`;
    const admin = new pg.Client({ connectionString: ADMIN_URL });
    try {
      await admin.connect();
    } catch (e) {
      throw new Error(`PostgreSQL at ${ADMIN_URL} is required for this test: ${(e as Error).message}`);
    }
    try {
      await admin.query(`CREATE DATABASE ${name}`);
    } finally {
      await admin.end();
    }
    return new TestPg(name, `${ADMIN_URL.slice(0, ADMIN_URL.lastIndexOf("/"))}/${name}`);
  }

  async drop(): Promise<void> {
    const admin = new pg.Client({ connectionString: ADMIN_URL });
    await admin.connect();
    try {
      await admin.query(`DROP DATABASE IF EXISTS ${this.name} WITH (FORCE)`);
    } finally {
      await admin.end();
    }
  }
}
