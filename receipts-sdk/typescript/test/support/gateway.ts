/**
 * A real `hookwarden serve` process (the binary at $HOOKWARDEN_BIN) with a config written for
 * the test, as the Rust end-to-end tests start one (tests/support/gateway.rs).
 */

import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { eventually, freePort } from "./util.js";

export const ADMIN_TOKEN = "test-admin-token";
export const SIGNING_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/** The gateway binary; the suite fails (never skips) without it. */
export function gatewayBinary(): string {
  const bin = process.env["HOOKWARDEN_BIN"];
  if (!bin) {
    throw new Error(
      "HOOKWARDEN_BIN must name the hookwarden binary (cargo build -p hookwarden; HOOKWARDEN_BIN=target/debug/hookwarden)",
    );
  }
  return bin;
}

export interface SourceSpec {
  name: string;
  forwardTo: string;
  /** The source's `receipt_keys`. */
  receiptKeys: { id: string; publicKey: string }[];
  /** Default: 30s, so a refused forward is not retried during a test. */
  retryLadder?: string[];
  maxAttempts?: number;
  /** More TOML lines for the source. */
  extra?: string[];
}

export interface Event {
  id: string;
  outcome: string;
  delivery_state: string;
  error_code: string | null;
  attempts: number;
  next_attempt_at: string | null;
  receipts: {
    receipt_id: string;
    key_id: string;
    status: string;
    target_record_id: string | null;
    error_code: string | null;
    via: string;
  }[];
  attempt_log: { status_code: number | null; error: string | null }[];
}

export class Gateway {
  private child: ChildProcess | undefined;

  private constructor(
    readonly url: string,
    private readonly dir: string,
  ) {}

  /** Writes the config, starts the process and waits until `/readyz` answers. */
  static async start(databaseUrl: string, sources: SourceSpec[]): Promise<Gateway> {
    const dir = mkdtempSync(path.join(tmpdir(), "hw-gateway-"));
    const port = await freePort();
    const lines = [
      "[server]",
      `listen = "127.0.0.1:${port}"`,
      "",
      "[database]",
      `url = "${databaseUrl}"`,
      "",
      "[delivery]",
      'poll_interval = "100ms"',
      'timeout = "10s"',
      "",
      "[admin]",
      `token = "${ADMIN_TOKEN}"`,
    ];
    for (const s of sources) {
      const keys = s.receiptKeys.map((k) => `{ id = "${k.id}", public_key = "${k.publicKey}" }`).join(", ");
      const ladder = (s.retryLadder ?? ["30s"]).map((r) => `"${r}"`).join(", ");
      lines.push(
        "",
        "[[sources]]",
        `name = "${s.name}"`,
        'verify = { kind = "none" }',
        `forward_to = "${s.forwardTo}"`,
        `signing_secret = "${SIGNING_SECRET}"`,
        `receipt_keys = [${keys}]`,
        `retry_ladder = [${ladder}]`,
        `max_attempts = ${s.maxAttempts ?? 3}`,
        ...(s.extra ?? []),
      );
    }
    writeFileSync(path.join(dir, "hookwarden.toml"), `${lines.join("\n")}\n`);
    const gateway = new Gateway(`http://127.0.0.1:${port}`, dir);
    await gateway.spawn();
    return gateway;
  }

  private async spawn(): Promise<void> {
    const log = openSync(path.join(this.dir, "gateway.log"), "a");
    const env: NodeJS.ProcessEnv = { ...process.env, RUST_LOG: process.env["TEST_LOG"] ?? "info,sqlx=warn" };
    delete env["HOOKWARDEN_ADMIN_TOKEN"];
    const child = spawn(gatewayBinary(), ["serve", "--config", path.join(this.dir, "hookwarden.toml")], {
      stdio: ["ignore", "ignore", log],
      env,
    });
    this.child = child;
    let exited: string | undefined;
    child.on("exit", (code, signal) => {
      exited = `${code ?? signal}`;
    });
    await eventually("the gateway ready", 20_000, async () => {
      if (exited !== undefined) {
        throw new Error(`the gateway exited (${exited}) before it was ready:\n${this.log()}`);
      }
      const ok = await fetch(`${this.url}/readyz`).then((r) => r.ok, () => false);
      return ok ? true : undefined;
    });
  }

  log(): string {
    try {
      return readFileSync(path.join(this.dir, "gateway.log"), "utf8");
    } catch {
      return "";
    }
  }

  /** SIGKILL, and removes the config and log. */
  async stop(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (child !== undefined && child.exitCode === null && child.signalCode === null) {
      const gone = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGKILL");
      await gone;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** `POST /ingest/{source}`: the gateway's event id. */
  async ingest(source: string, body: unknown): Promise<string> {
    const response = await fetch(`${this.url}/ingest/${source}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = (await response.json()) as { event_id: string; duplicate: boolean };
    if (response.status !== 200 || answer.duplicate) {
      throw new Error(`ingest answered ${response.status}: ${JSON.stringify(answer)}`);
    }
    return answer.event_id;
  }

  /** The event, with its attempt log and receipts, or `undefined` when unknown. */
  async event(id: string): Promise<Event | undefined> {
    const response = await fetch(`${this.url}/v1/events/${id}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    return response.status === 200 ? ((await response.json()) as Event) : undefined;
  }

  /** Waits until the event's outcome is `outcome`. */
  async waitForOutcome(id: string, outcome: string, timeoutMs = 15_000): Promise<Event> {
    return eventually(`${id} ${outcome}`, timeoutMs, async () => {
      const event = await this.event(id);
      return event?.outcome === outcome ? event : undefined;
    });
  }

  /** `POST /v1/receipts` with the given headers and body: status and JSON answer. */
  async postReceipt(headers: Record<string, string>, body: Uint8Array): Promise<{ status: number; answer: unknown }> {
    const response = await fetch(`${this.url}/v1/receipts`, {
      method: "POST",
      headers: { ...headers, "content-type": "application/json" },
      body,
    });
    return { status: response.status, answer: await response.json() };
  }
}
