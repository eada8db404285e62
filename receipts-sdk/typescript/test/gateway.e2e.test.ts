/**
 * The SDK against a REAL gateway process ($HOOKWARDEN_BIN): its forwards verify, the client's
 * receipts confirm events (a second post under the same id is a duplicate), the outbox flusher
 * confirms through `POST /v1/receipts` and puts aside what the gateway refuses for good, and a
 * status-probe answer is made of receipts the gateway accepts, once.
 */

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { type Server, createServer } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";

import Database from "better-sqlite3";
import {
  type Forwarded,
  Receipt,
  ReceiptClient,
  ReceiptClientError,
  ReceiptKey,
  answerProbe,
  flushOnce,
  probeReceiptId,
  startFlusher,
  verifyForwarded,
} from "hookwarden-receipts";
import { SqliteOutbox } from "hookwarden-receipts/sqlite";

import { Gateway, SIGNING_SECRET } from "./support/gateway.js";
import { eventually } from "./support/util.js";

const KEY = ReceiptKey.generate("orders-ts-1");
const UNREGISTERED = ReceiptKey.generate("orders-ts-1");

let gateway: Gateway;
let receiver: Server;
const forwards: (Forwarded | string)[] = [];
const dir = mkdtempSync(path.join(tmpdir(), "hw-sdk-e2e-"));

before(async () => {
  // The handler stand-in: verifies each forward with the SDK and answers 200.
  receiver = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      try {
        forwards.push(verifyForwarded(SIGNING_SECRET, req.headers, Buffer.concat(chunks)));
        res.writeHead(200).end();
      } catch (e) {
        forwards.push(String(e));
        res.writeHead(401).end();
      }
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, "127.0.0.1", resolve));
  const address = receiver.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;
  gateway = await Gateway.start(`sqlite://${path.join(dir, "gateway.db")}`, [
    {
      name: "orders",
      forwardTo: `http://127.0.0.1:${port}/webhooks/orders`,
      receiptKeys: [{ id: KEY.id, publicKey: KEY.publicKeyBase64() }],
    },
  ]);
});

after(async () => {
  await gateway?.stop();
  receiver.closeAllConnections();
  await new Promise((resolve) => receiver.close(resolve));
  rmSync(dir, { recursive: true, force: true });
});

/** Ingests an event and waits until the receiver verified its forward. */
async function delivered(order: string): Promise<string> {
  const id = await gateway.ingest("orders", { id: order });
  const forward = await eventually(`the forward of ${id}`, 10_000, async () =>
    forwards.find((f) => typeof f !== "string" && f.eventId === id),
  );
  assert.equal(typeof forward, "object");
  return id;
}

test("the gateway's forwards verify with verifyForwarded", async () => {
  const id = await delivered("ord_fwd");
  const forward = forwards.find((f) => typeof f !== "string" && f.eventId === id) as Forwarded;
  assert.equal(forward.source, "orders");
  assert.equal(forward.attempt, 1);
  assert.match(forward.idempotencyKey, /^idk_/);
  assert.equal(forward.isReplay, false);
  assert.deepEqual(forwards.filter((f) => typeof f === "string"), [], "every forward verified");
});

test("the client confirms an event; the same receipt id again is a duplicate; refusals are final", async () => {
  const id = await delivered("ord_client");
  const client = new ReceiptClient(gateway.url, KEY);
  const receipt = Receipt.applied(id).withTargetRecord("ord_client");
  const first = await client.postWithId(receipt, "rcp_0123456789abcdef0123456789abcdef");
  assert.deepEqual(
    [first.outcome, first.duplicate, first.receipt_id],
    ["confirmed", false, "rcp_0123456789abcdef0123456789abcdef"],
  );
  const again = await client.postWithId(receipt, "rcp_0123456789abcdef0123456789abcdef");
  assert.equal(again.duplicate, true);
  const event = await gateway.waitForOutcome(id, "confirmed");
  assert.deepEqual(
    event.receipts.map((r) => [r.receipt_id, r.key_id, r.status, r.target_record_id, r.via]),
    [["rcp_0123456789abcdef0123456789abcdef", KEY.id, "applied", "ord_client", "post"]],
  );

  const refused = async (c: ReceiptClient, r: Receipt) => {
    try {
      await c.post(r);
    } catch (e) {
      assert.ok(e instanceof ReceiptClientError && e.isRejected, String(e));
      return [e.status, e.code];
    }
    assert.fail("accepted");
  };
  assert.deepEqual(await refused(client, Receipt.applied("evt_01KDVDNA00M2GT58X4MPKAFA59")), [404, "event_unknown"]);
  assert.deepEqual(await refused(new ReceiptClient(gateway.url, UNREGISTERED), Receipt.applied(id)), [
    401,
    "receipt_signature_invalid",
  ]);
});

test("the sqlite outbox's flusher confirms through the gateway and puts aside a final refusal", async () => {
  const id = await delivered("ord_outbox");
  const db = new Database(path.join(dir, "handler.db"));
  try {
    const outbox = new SqliteOutbox(db);
    outbox.ensureSchema();
    const enqueue = db.transaction((eventId: string, receipt: Receipt) => {
      assert.equal(outbox.alreadyProcessed(eventId), false);
      return outbox.enqueue(receipt);
    });
    const receiptId = enqueue(id, Receipt.applied(id).withTargetRecord("ord_outbox"));
    // A receipt for an event the gateway does not have: refused for good (404), put aside.
    enqueue("evt_01KDVDNA00M2GT58X4MPKAFA59", Receipt.applied("evt_01KDVDNA00M2GT58X4MPKAFA59"));
    const flusher = startFlusher(outbox, new ReceiptClient(gateway.url, KEY), { intervalMs: 100 });
    try {
      const event = await gateway.waitForOutcome(id, "confirmed");
      assert.deepEqual(event.receipts.map((r) => [r.receipt_id, r.via]), [[receiptId, "post"]]);
      await eventually("the outbox drained", 5_000, async () => ((await outbox.stats()).unsent === 0 ? true : undefined));
      assert.deepEqual(await outbox.stats(), { unsent: 0, sent: 1, rejected: 1 });
      const aside = db.prepare("SELECT last_error FROM hookwarden_receipt_outbox WHERE last_error IS NOT NULL").all() as {
        last_error: string;
      }[];
      assert.match(aside[0]?.last_error ?? "", /404 event_unknown/);
    } finally {
      await flusher.stop();
    }
  } finally {
    db.close();
  }
});

test("a status-probe answer is made of receipts the gateway takes, once", async () => {
  const processedOnly = await delivered("ord_probe_1");
  const withReceipt = await delivered("ord_probe_2");
  const db = new Database(path.join(dir, "probe.db"));
  try {
    const outbox = new SqliteOutbox(db);
    outbox.ensureSchema();
    db.transaction(() => {
      outbox.alreadyProcessed(processedOnly);
      outbox.alreadyProcessed(withReceipt);
      outbox.enqueue(Receipt.applied(withReceipt).withTargetRecord("ord_probe_2"));
    })();
    const client = new ReceiptClient(gateway.url, KEY);
    assert.deepEqual(await flushOnce(outbox, client), { sent: 1, rejected: 0 });
    const request = { probeId: "prb_1", source: "orders", eventIds: [processedOnly, withReceipt, "evt_01KDVDNA01ZZZZZZZZZZZZZZZZ"] };
    const post = async () => {
      const answer = await answerProbe(outbox, KEY, request);
      const results = [];
      for (const entry of answer.receipts) {
        const { "receipt-body": body, ...headers } = entry;
        results.push(await gateway.postReceipt(headers, Buffer.from(body, "base64")));
      }
      return results.map(({ status, answer: a }) => {
        const { receipt_id, duplicate, outcome } = a as { receipt_id: string; duplicate: boolean; outcome: string };
        return [status, receipt_id, duplicate, outcome];
      });
    };
    const stored = (await outbox.records([withReceipt])).receipts[0]?.receiptId;
    // The processed-only event is settled under its probe id; the other's receipt, re-signed
    // under its stored id, is the one the gateway already has.
    assert.deepEqual(await post(), [
      [200, probeReceiptId(processedOnly), false, "confirmed"],
      [200, stored, true, "confirmed"],
    ]);
    // Asking twice records one receipt.
    assert.deepEqual(await post(), [
      [200, probeReceiptId(processedOnly), true, "confirmed"],
      [200, stored, true, "confirmed"],
    ]);
    const event = await gateway.waitForOutcome(processedOnly, "confirmed");
    assert.equal(event.receipts.length, 1);
  } finally {
    db.close();
  }
});
