/**
 * orders handler in TypeScript: an example hookwarden handler (Express + hookwarden-receipts),
 * written to be copied.
 *
 * For every event the gateway forwards to `POST /webhooks/:source` it:
 * 1. checks the gateway's signature (Standard Webhooks, the source's `whsec_` secret) over the
 *    exact body bytes;
 * 2. in ONE database transaction: skips the event if it was already processed, records an
 *    order, and queues an `applied` receipt in the outbox table;
 * 3. commits, then wakes the outbox flusher, which posts the receipt to the gateway.
 *
 * The receipt is written in the same transaction as the order, so the gateway hears "applied"
 * if and only if the order was committed, even if the handler crashes between the commit and
 * the post (the flusher sends it on the next start). Retries and replays of an event are
 * answered `{"status":"duplicate"}` and change nothing. `POST /hookwarden/status` answers the
 * gateway's status probe from the same outbox and processed-events tables.
 *
 * Configuration (environment), as the Rust example's:
 * - HANDLER_LISTEN (default 127.0.0.1:3000)
 * - HANDLER_DATABASE_URL (default sqlite://orders-ts.db; a postgres:// URL works too)
 * - HOOKWARDEN_URL: the gateway, where receipts go (default http://127.0.0.1:8080)
 * - SIGNING_SECRET: the source's signing_secret from the gateway config;
 *   SIGNING_SECRET_<SOURCE> (e.g. SIGNING_SECRET_GITHUB) overrides it for one source
 * - RECEIPT_KEY_ID, RECEIPT_KEY_SEED (required): the handler's receipt key, as printed by
 *   `hookwarden keys generate`; its public half goes into the source's receipt_keys
 * - FLUSH_INTERVAL_MS (default 500): how often the outbox is flushed besides after commits
 *
 * Test hooks:
 * - an event whose body has `"fail": true` is refused by the business logic after its order
 *   and receipt were written: the transaction rolls back (no order, no `applied` receipt), a
 *   `failed` receipt with error code E_REJECTED is queued on its own, the answer is 422;
 * - `"fail": "rollback"`: the transaction fails before its commit: no order, no receipt at
 *   all, the answer is 500 and the gateway retries;
 * - HANDLER_CRASH_AFTER_COMMIT=1: the process kills itself (SIGKILL) right after a commit that
 *   queued a receipt, before the flusher could post it and before it answers the gateway: the
 *   crash between commit and post, on demand. The next start's flusher posts the receipt.
 */

import express, { type NextFunction, type Request, type Response } from "express";
import {
  ForwardedError,
  ReceiptClient,
  ReceiptKey,
  WebhookSecret,
  startFlusher,
  statusProbeHandler,
  verifyForwarded,
} from "hookwarden-receipts";

import { Rejected, openOrdersDb } from "./orders.js";

const env = (name: string, fallback?: string): string => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) {
    throw new Error(`${name} must be set`);
  }
  return value;
};

const log = (message: string, fields: Record<string, unknown> = {}) =>
  console.error(JSON.stringify({ at: new Date().toISOString(), message, ...fields }));

async function main(): Promise<void> {
  const listen = env("HANDLER_LISTEN", "127.0.0.1:3000");
  const gatewayUrl = env("HOOKWARDEN_URL", "http://127.0.0.1:8080");
  const defaultSecret = WebhookSecret.parse(env("SIGNING_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
  const secrets = new Map<string, WebhookSecret>();
  for (const [name, value] of Object.entries(process.env)) {
    if (name.startsWith("SIGNING_SECRET_") && value !== undefined) {
      secrets.set(name.slice("SIGNING_SECRET_".length).toLowerCase(), WebhookSecret.parse(value));
    }
  }
  const secretFor = (source: string) => secrets.get(source) ?? defaultSecret;
  const key = ReceiptKey.fromSeed(env("RECEIPT_KEY_ID"), env("RECEIPT_KEY_SEED"));
  const crashAfterCommit = env("HANDLER_CRASH_AFTER_COMMIT", "0") === "1";

  const db = await openOrdersDb(env("HANDLER_DATABASE_URL", "sqlite://orders-ts.db"));
  // Posts committed receipts: at once when woken, else every interval. Its first pass sends
  // whatever a previous run committed but did not post.
  const flusher = startFlusher(db.outbox, new ReceiptClient(gatewayUrl, key), {
    intervalMs: Number(env("FLUSH_INTERVAL_MS", "500")),
    onReport: (report) => log("receipt outbox flushed", { ...report }),
    onError: (error) => log("receipt outbox flush failed; will retry", { error: String(error) }),
  });

  const app = express();

  // The status probe reads the raw body itself (its signature covers the exact bytes).
  app.post("/hookwarden/status", statusProbeHandler({ secret: secretFor, key, records: db.outbox }));

  app.post("/webhooks/:source", express.raw({ type: () => true, limit: "1mb" }), async (req: Request, res: Response) => {
    const source = String(req.params["source"]);
    const body: Buffer = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    // 1. Is it really the gateway? Also gives the event id, the key to be idempotent on.
    let eventId: string;
    try {
      eventId = verifyForwarded(secretFor(source), req.headers, body).eventId;
    } catch (e) {
      if (e instanceof ForwardedError) {
        log("refused a forward", { source, error: e.message });
        res.status(401).json({ error: e.message });
        return;
      }
      throw e;
    }
    let event: Record<string, unknown>;
    try {
      event = JSON.parse(body.toString("utf8")) as Record<string, unknown>;
    } catch {
      await reject(eventId, "E_MALFORMED", "the body is not JSON");
      return;
    }

    // 2. One transaction: the "already processed?" mark, the order and its receipt.
    let applied;
    try {
      applied = await db.apply(eventId, source, event);
    } catch (e) {
      if (e instanceof Rejected) {
        // Rolled back: the order, the mark and the `applied` receipt are gone.
        await reject(eventId, "E_REJECTED", e.message);
        return;
      }
      // Rolled back, no receipt; a 500 and the gateway retries.
      throw e;
    }
    if (applied.status === "duplicate") {
      log("duplicate: already processed", { event_id: eventId });
      res.json({ status: "duplicate" });
      return;
    }
    // 3. Committed: now the receipt may go.
    if (crashAfterCommit) {
      log("HANDLER_CRASH_AFTER_COMMIT: killing myself between commit and post", { event_id: eventId });
      process.kill(process.pid, "SIGKILL");
    }
    flusher.wake();
    log("order recorded", { event_id: eventId, order_id: applied.orderId, receipt_id: applied.receiptId });
    res.json({ status: "applied", order_id: applied.orderId });

    /** Answers 422 and queues a `failed` receipt in a transaction of its own. */
    async function reject(id: string, code: string, detail: string): Promise<void> {
      await db.reject(id, code, detail);
      flusher.wake();
      log("event rejected", { event_id: id, code, detail });
      res.status(422).json({ status: "rejected", error_code: code, detail });
    }
  });

  app.get("/orders", async (_req: Request, res: Response) => {
    res.json(await db.orders());
  });

  // Any unexpected error: logged, answered 500, and the gateway retries.
  app.use((error: unknown, _req: Request, res: Response, _next: NextFunction) => {
    log("request failed", { error: String(error) });
    res.status(500).json({ error: String(error) });
  });

  const [host, port] = splitListen(listen);
  const server = app.listen(port, host, () => log("orders handler listening", { listen, gateway: gatewayUrl }));
  const shutdown = () => {
    log("shutting down");
    server.close(async () => {
      await flusher.stop();
      await db.close();
    });
  };
  process.once("SIGTERM", shutdown);
  process.once("SIGINT", shutdown);
}

function splitListen(listen: string): [string, number] {
  const colon = listen.lastIndexOf(":");
  return [listen.slice(0, colon), Number(listen.slice(colon + 1))];
}

main().catch((error: unknown) => {
  log("cannot start", { error: String(error) });
  process.exit(1);
});
