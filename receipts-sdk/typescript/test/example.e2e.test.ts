/**
 * The example handler (examples/typescript) against a REAL gateway, on SQLite and on
 * PostgreSQL: forwards received, committed and confirmed through the outbox; a refused event
 * fails with its code; a rolled-back transaction sends no receipt; a replayed forward changes
 * nothing; the status probe answers from the outbox; and a crash between commit and post
 * (SIGKILL, on demand) only delays the receipt to the next start.
 */

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, test } from "node:test";

import { ReceiptKey, WebhookSecret, verifyReceipt } from "hookwarden-receipts";

import { type Event, Gateway, SIGNING_SECRET } from "./support/gateway.js";
import { HandlerProcess } from "./support/handler.js";
import { TestPg } from "./support/pg.js";
import { eventually, freePort, sleep } from "./support/util.js";

const KEY = ReceiptKey.generate("orders-ts-handler-1");

/** A gateway and a handler on a fresh database of `kind`, torn down after `body`. */
async function withHandler(
  kind: "sqlite" | "postgres",
  body: (gateway: Gateway, handler: HandlerProcess) => Promise<void>,
): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), "hw-example-"));
  const database = kind === "postgres" ? await TestPg.create() : undefined;
  const port = await freePort();
  let gateway: Gateway | undefined;
  let handler: HandlerProcess | undefined;
  try {
    gateway = await Gateway.start(`sqlite://${path.join(dir, "gateway.db")}`, [
      {
        name: "orders",
        forwardTo: `http://127.0.0.1:${port}/webhooks/orders`,
        receiptKeys: [{ id: KEY.id, publicKey: KEY.publicKeyBase64() }],
        extra: ['dedup = { json_pointer = "/id" }'],
      },
    ]);
    const handlerDb = database?.url ?? `sqlite://${path.join(dir, "orders.db")}`;
    handler = HandlerProcess.create(port, handlerDb, gateway.url, KEY.id, KEY.seedBase64());
    await body(gateway, handler);
  } catch (e) {
    console.error(`---- gateway log ----\n${gateway?.log()}\n---- handler log ----\n${handler?.log()}`);
    throw e;
  } finally {
    await handler?.stop();
    await gateway?.stop();
    await database?.drop();
    rmSync(dir, { recursive: true, force: true });
  }
}

function receipts(event: Event) {
  return event.receipts.map((r) => {
    assert.equal(r.key_id, KEY.id);
    return [r.status, r.error_code, r.target_record_id];
  });
}

/** A forward of `eventId` as the gateway signs it (what a replay sends again). */
function forward(eventId: string, body: string, attempt: number): Record<string, string> {
  const now = Math.floor(Date.now() / 1000);
  return {
    "content-type": "application/json",
    "webhook-id": eventId,
    "webhook-timestamp": String(now),
    "webhook-signature": WebhookSecret.parse(SIGNING_SECRET).sign(eventId, now, body),
    "idempotency-key": `idk_${eventId}`,
    "hookwarden-attempt": String(attempt),
    "hookwarden-source": "orders",
    "hookwarden-replay-id": "rpl_test",
  };
}

/** A status probe for `eventIds`, signed with the source's secret as the gateway signs one. */
function probe(eventIds: string[], secret = SIGNING_SECRET) {
  const now = Math.floor(Date.now() / 1000);
  const id = "prb_01KDVDNA00M2GT58X4MPKAFA5A";
  const body = JSON.stringify({ type: "hookwarden.status_probe", version: 1, source: "orders", event_ids: eventIds });
  return {
    method: "POST",
    body,
    headers: {
      "content-type": "application/json",
      "webhook-id": id,
      "webhook-timestamp": String(now),
      "webhook-signature": WebhookSecret.parse(secret).sign(id, now, body),
      "hookwarden-source": "orders",
    },
  };
}

for (const kind of ["sqlite", "postgres"] as const) {
  describe(`the example handler on ${kind}`, () => {
    test("confirms through its outbox; refused and rolled-back events; replays; the status probe", async () => {
      await withHandler(kind, async (gateway, handler) => {
        await handler.start();
        const good: [string, string][] = [];
        for (const [n, amount] of [
          [1001, 1200],
          [1002, 50],
          [1003, 999],
        ] as const) {
          const order = `ord_${kind}_${n}`;
          good.push([await gateway.ingest("orders", { id: order, type: "order.created", amount }), order]);
        }
        const refused = await gateway.ingest("orders", { id: `ord_${kind}_bad`, fail: true });
        const rolledBack = await gateway.ingest("orders", { id: `ord_${kind}_rollback`, fail: "rollback" });

        for (const [id, order] of good) {
          const event = await gateway.waitForOutcome(id, "confirmed");
          assert.deepEqual(receipts(event), [["applied", null, order]]);
          assert.equal(event.receipts[0]?.via, "post", "the outbox flusher posts receipts");
          assert.equal(event.attempts, 1);
        }
        const failed = await gateway.waitForOutcome(refused, "failed");
        assert.equal(failed.error_code, "E_REJECTED");
        assert.deepEqual(receipts(failed), [["failed", "E_REJECTED", null]], "never the rolled-back `applied` one");

        // The rolled-back transaction: answered 500, and no receipt, neither queued nor sent.
        await eventually("the rolled-back event answered", 10_000, async () => {
          const event = await gateway.event(rolledBack);
          return event?.attempt_log[0]?.status_code === 500 ? event : undefined;
        });
        await sleep(500); // five flush intervals
        const unknown = await gateway.event(rolledBack);
        assert.deepEqual([unknown?.outcome, unknown?.receipts], ["unknown", []]);
        const outbox = await handler.outbox();
        assert.deepEqual(
          outbox.map((r) => [r.eventId, r.status, r.sent, r.error]).sort(),
          [...good.map(([id]) => [id, "applied", true, null]), [refused, "failed", true, null]].sort(),
        );

        // One order per event, none for the refused or rolled-back ones.
        const orders = await handler.orders();
        assert.deepEqual(
          orders.map((o) => [o.event_id, o.order_id, o.source]).sort(),
          good.map(([id, order]) => [id, order, "orders"]).sort(),
        );

        // A replay of an applied event (the gateway's forward again): a duplicate, no new order.
        const [firstId, firstOrder] = good[0] ?? ["", ""];
        const replayBody = JSON.stringify({ id: firstOrder, type: "order.created", amount: 1200 });
        const replay = await fetch(`${handler.url}/webhooks/orders`, {
          method: "POST",
          headers: forward(firstId, replayBody, 2),
          body: replayBody,
        });
        assert.deepEqual([replay.status, await replay.json()], [200, { status: "duplicate" }]);
        assert.equal((await handler.orders()).length, good.length);
        // A forward with a wrong signature is refused.
        const forged = await fetch(`${handler.url}/webhooks/orders`, {
          method: "POST",
          headers: { ...forward(firstId, replayBody, 2), "webhook-signature": "v1,AAAA" },
          body: replayBody,
        });
        assert.equal(forged.status, 401);

        // The status probe: each known event answered with the receipt the gateway has; the
        // rolled-back and never-seen events left out.
        const asked = [firstId, refused, rolledBack, "evt_01KDVDNA01ZZZZZZZZZZZZZZZZ"];
        const answer = await fetch(`${handler.url}/hookwarden/status`, probe(asked));
        assert.equal(answer.status, 200);
        const entries = ((await answer.json()) as { receipts: Record<string, string>[] }).receipts;
        const recorded = [
          (await gateway.event(firstId))?.receipts[0]?.receipt_id,
          (await gateway.event(refused))?.receipts[0]?.receipt_id,
        ];
        assert.deepEqual(
          entries.map((e) => e["receipt-id"]),
          recorded,
        );
        for (const entry of entries) {
          const { "receipt-body": body = "", ...headers } = entry;
          verifyReceipt(headers, Buffer.from(body, "base64"), KEY.publicKeyBase64());
          const posted = await gateway.postReceipt(headers, Buffer.from(body, "base64"));
          assert.deepEqual([posted.status, (posted.answer as { duplicate: boolean }).duplicate], [200, true]);
        }
        const unsigned = await fetch(`${handler.url}/hookwarden/status`, probe(asked, WebhookSecret.generate().toWhsec()));
        assert.equal(unsigned.status, 401);
      });
    });

    test("a crash between commit and post: the receipt goes out after the restart", async () => {
      await withHandler(kind, async (gateway, handler) => {
        await handler.start({ HANDLER_CRASH_AFTER_COMMIT: "1" });
        const id = await gateway.ingest("orders", { id: `ord_${kind}_crash`, amount: 300 });
        assert.equal(await handler.exited(), "SIGKILL", "the handler killed itself right after the commit");

        // Committed, queued, not posted.
        const queued = await handler.outbox();
        assert.deepEqual(queued.map((r) => [r.eventId, r.status, r.sent]), [[id, "applied", false]]);
        const before = await gateway.event(id);
        assert.deepEqual([before?.outcome, before?.receipts], ["unknown", []]);

        await handler.start();
        const event = await gateway.waitForOutcome(id, "confirmed");
        assert.deepEqual(receipts(event), [["applied", null, `ord_${kind}_crash`]]);
        assert.equal(event.receipts[0]?.receipt_id, queued[0]?.receiptId, "posted under the id stored at commit");
        assert.deepEqual(
          (await handler.orders()).map((o) => o.event_id),
          [id],
        );
        await eventually("the outbox row marked sent", 5_000, async () =>
          (await handler.outbox()).every((r) => r.sent && r.error === null) ? true : undefined,
        );
      });
    });
  });
}
