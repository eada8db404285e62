/**
 * The example handler (examples/typescript, built) as a process: started on a fixed address
 * with its own database, killed with SIGKILL, restarted on the same address and database.
 */

import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import Database from "better-sqlite3";
import pg from "pg";

import { SIGNING_SECRET } from "./gateway.js";
import { REPO_ROOT, eventually } from "./util.js";

const EXAMPLE = path.join(REPO_ROOT, "examples/typescript");
const SERVER = path.join(EXAMPLE, "dist/server.js");

/** One row of the handler's receipt outbox. */
export interface OutboxRow {
  receiptId: string;
  eventId: string;
  status: string;
  sent: boolean;
  error: string | null;
}

export class HandlerProcess {
  private child: ChildProcess | undefined;
  private exit: Promise<NodeJS.Signals | number | null> | undefined;
  private readonly dir = mkdtempSync(path.join(tmpdir(), "hw-handler-"));

  constructor(
    readonly port: number,
    /** `sqlite://…` or `postgres://…`. */
    readonly databaseUrl: string,
    private readonly env: Record<string, string>,
  ) {}

  /** A handler for the gateway at `gatewayUrl`, signing with the key `keyId`/`seed`. */
  static create(port: number, databaseUrl: string, gatewayUrl: string, keyId: string, seed: string): HandlerProcess {
    if (!existsSync(SERVER)) {
      throw new Error(
        `the example handler is not built (${SERVER}): npm ci --prefix examples/typescript && npm run build --prefix examples/typescript`,
      );
    }
    return new HandlerProcess(port, databaseUrl, {
      HANDLER_LISTEN: `127.0.0.1:${port}`,
      HANDLER_DATABASE_URL: databaseUrl,
      HOOKWARDEN_URL: gatewayUrl,
      SIGNING_SECRET,
      RECEIPT_KEY_ID: keyId,
      RECEIPT_KEY_SEED: seed,
      FLUSH_INTERVAL_MS: "100",
    });
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Starts the process with `extra` environment and waits until `GET /orders` answers. */
  async start(extra: Record<string, string> = {}): Promise<void> {
    if (this.child !== undefined) {
      throw new Error("the handler is running already");
    }
    const log = openSync(path.join(this.dir, "handler.log"), "a");
    const env: NodeJS.ProcessEnv = { ...process.env, ...this.env, ...extra };
    for (const name of Object.keys(env)) {
      if (name.startsWith("SIGNING_SECRET_") || (name === "HANDLER_CRASH_AFTER_COMMIT" && !("HANDLER_CRASH_AFTER_COMMIT" in extra))) {
        delete env[name];
      }
    }
    const child = spawn(process.execPath, [SERVER], { cwd: EXAMPLE, env, stdio: ["ignore", log, log] });
    this.child = child;
    this.exit = new Promise((resolve) => child.once("exit", (code, signal) => resolve(signal ?? code)));
    let exited = false;
    void this.exit.then(() => {
      exited = true;
    });
    await eventually("the handler ready", 20_000, async () => {
      if (exited) {
        throw new Error(`the handler exited before it was ready:\n${this.log()}`);
      }
      return fetch(`${this.url}/orders`).then((r) => (r.ok ? true : undefined), () => undefined);
    });
  }

  /** Waits for the process to end by itself; its signal or exit code. */
  async exited(timeoutMs = 15_000): Promise<NodeJS.Signals | number | null> {
    const exit = this.exit;
    if (exit === undefined) {
      throw new Error("the handler is not running");
    }
    const result = await Promise.race([
      exit,
      new Promise<"timeout">((resolve) => setTimeout(() => resolve("timeout"), timeoutMs).unref()),
    ]);
    if (result === "timeout") {
      throw new Error(`the handler did not exit within ${timeoutMs} ms:\n${this.log()}`);
    }
    this.child = undefined;
    return result;
  }

  /** SIGKILL: no shutdown code runs. */
  async kill9(): Promise<void> {
    const child = this.child;
    if (child !== undefined) {
      child.kill("SIGKILL");
      await this.exit;
      this.child = undefined;
    }
  }

  async stop(): Promise<void> {
    await this.kill9();
    rmSync(this.dir, { recursive: true, force: true });
  }

  log(): string {
    try {
      return readFileSync(path.join(this.dir, "handler.log"), "utf8");
    } catch {
      return "";
    }
  }

  /** `GET /orders`. */
  async orders(): Promise<{ event_id: string; order_id: string; source: string; amount: number | null }[]> {
    const response = await fetch(`${this.url}/orders`);
    if (response.status !== 200) {
      throw new Error(`GET /orders answered ${response.status}`);
    }
    return (await response.json()) as { event_id: string; order_id: string; source: string; amount: number | null }[];
  }

  /** The handler's outbox, read straight from its database, oldest first. */
  async outbox(): Promise<OutboxRow[]> {
    const sql = "SELECT receipt_id, event_id, body, sent_at, last_error FROM hookwarden_receipt_outbox ORDER BY created_at, receipt_id";
    let rows: { receipt_id: string; event_id: string; body: string; sent_at: unknown; last_error: string | null }[];
    if (this.databaseUrl.startsWith("sqlite://")) {
      const db = new Database(this.databaseUrl.slice("sqlite://".length), { readonly: true });
      try {
        rows = db.prepare(sql).all() as typeof rows;
      } finally {
        db.close();
      }
    } else {
      const client = new pg.Client({ connectionString: this.databaseUrl });
      await client.connect();
      try {
        rows = (await client.query(sql)).rows as typeof rows;
      } finally {
        await client.end();
      }
    }
    return rows.map((r) => ({
      receiptId: r.receipt_id,
      eventId: r.event_id,
      status: (JSON.parse(r.body) as { status: string }).status,
      sent: r.sent_at !== null,
      error: r.last_error,
    }));
  }
}
