/**
 * The status probe's handler side (docs/status-probe.md): which probes are refused and how,
 * what the answer holds for each kind of record (on better-sqlite3 and PostgreSQL), and the
 * node:http / Express handler.
 */

import assert from "node:assert/strict";
import { type Server, createServer } from "node:http";
import { after, describe, test } from "node:test";

import {
  type ProbeRequest,
  Receipt,
  ReceiptKey,
  WebhookSecret,
  answerProbe,
  handleStatusProbe,
  probeReceiptId,
  statusProbeHandler,
  verifyProbe,
  verifyReceipt,
} from "hookwarden-receipts";
import { Webhook } from "standardwebhooks";

import { BACKENDS } from "./support/backends.js";
import { sleep } from "./support/util.js";

const SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NOW = 1_767_225_600;
const KEY = ReceiptKey.generate("orders-1");

/** A probe as the gateway sends it, signed by the reference Standard Webhooks library. */
function probe(
  eventIds: unknown[],
  options: { id?: string; timestamp?: number; secret?: string; body?: Record<string, unknown>; source?: string } = {},
) {
  const id = options.id ?? "prb_01KDVDNA00M2GT58X4MPKAFA5A";
  const timestamp = options.timestamp ?? NOW;
  const body = JSON.stringify({
    type: "hookwarden.status_probe",
    version: 1,
    source: "orders",
    event_ids: eventIds,
    ...options.body,
  });
  const signature = new Webhook(options.secret ?? SECRET).sign(id, new Date(timestamp * 1000), body);
  const headers: Record<string, string> = {
    "webhook-id": id,
    "webhook-timestamp": String(timestamp),
    "webhook-signature": signature,
    "hookwarden-source": options.source ?? "orders",
    "content-type": "application/json",
  };
  return { headers, body: Buffer.from(body) };
}

/** `status code` of the refusal, or `ok`. */
function refusal(request: { headers: Record<string, string>; body: Buffer }, now = NOW, secret: Parameters<typeof verifyProbe>[0] = SECRET) {
  try {
    verifyProbe(secret, request.headers, request.body, { now });
    return "ok";
  } catch (e) {
    const error = e as { status: number; code: string };
    return `${error.status} ${error.code}`;
  }
}

test("a probe is refused unless the gateway signed it, recently, as a probe, in a version it knows", () => {
  const good = probe(["evt_1"]);
  assert.equal(refusal(good), "ok");
  assert.equal(refusal(good, NOW + 300), "ok");
  assert.equal(refusal(good, NOW + 301), "401 probe_timestamp_stale");
  assert.equal(refusal(good, NOW - 301), "401 probe_timestamp_stale");
  for (const name of ["webhook-id", "webhook-timestamp", "webhook-signature"]) {
    const headers = { ...good.headers };
    delete headers[name];
    assert.equal(refusal({ ...good, headers }), "401 probe_signature_invalid", name);
  }
  assert.equal(refusal(probe(["evt_1"], { secret: WebhookSecret.generate().toWhsec() })), "401 probe_signature_invalid");
  assert.equal(refusal({ ...good, body: Buffer.from(good.body.toString().replace("evt_1", "evt_2")) }), "401 probe_signature_invalid");
  // A forward's id (or anything but prb_), even signed with the right secret.
  assert.equal(refusal(probe(["evt_1"], { id: "evt_01KDVDNA00M2GT58X4MPKAFA59" })), "401 probe_id_invalid");
  assert.equal(refusal(probe(["evt_1"], { body: { type: "order.created" } })), "400 probe_type_invalid");
  assert.equal(refusal(probe(["evt_1"], { body: { version: 2 } })), "400 probe_version_unsupported");
  assert.equal(refusal(probe(["evt_1"], { body: { version: "1" } })), "400 probe_version_unsupported");
  assert.equal(refusal(probe([])), "400 probe_malformed");
  assert.equal(refusal(probe(Array.from({ length: 101 }, (_, i) => `evt_${i}`))), "400 probe_malformed");
  assert.equal(refusal(probe(Array.from({ length: 100 }, (_, i) => `evt_${i}`))), "ok");
  assert.equal(refusal(probe([1, "evt_2"])), "400 probe_malformed");
  assert.equal(refusal(probe([""])), "400 probe_malformed");
  assert.equal(refusal(probe(["evt_1"], { body: { source: "billing" } })), "400 probe_malformed");
  // Per-source secrets: the source's own one verifies; an unknown source is not the gateway's.
  const perSource = (source: string) => (source === "orders" ? SECRET : undefined);
  assert.equal(refusal(good, NOW, perSource), "ok");
  assert.equal(refusal(probe(["evt_1"], { source: "billing", body: { source: "billing" } }), NOW, perSource), "401 probe_signature_invalid");
  const notJson = { ...good, body: Buffer.from("not json") };
  notJson.headers = { ...good.headers, "webhook-signature": WebhookSecret.parse(SECRET).sign(good.headers["webhook-id"] ?? "", NOW, notJson.body) };
  assert.equal(refusal(notJson), "400 probe_malformed");
  // Event ids asked twice are answered once, in the order asked.
  const request = verifyProbe(SECRET, probe(["evt_2", "evt_1", "evt_2"]).headers, probe(["evt_2", "evt_1", "evt_2"]).body, { now: NOW });
  assert.deepEqual(request.eventIds, ["evt_2", "evt_1"]);
});

for (const [name, open] of BACKENDS) {
  describe(`probe answers on ${name}`, () => {
    test("outbox receipts under their stored ids, processed-only under the probe id, unknown left out", async () => {
      const backend = await open();
      try {
        await backend.ensureSchema();
        // A: applied, with its receipt. B: failed, then applied by a retry. C: failed only.
        // D: marked processed, no receipt (a handler from before receipts). E: never seen.
        const a = await backend.transaction(true, async (tx) => {
          await tx.alreadyProcessed("evt_A");
          return tx.enqueue(Receipt.applied("evt_A").withTargetRecord("ord_A"));
        });
        await backend.transaction(true, (tx) => tx.enqueue(Receipt.failed("evt_B", "E_DB", "deadlock")));
        await sleep(3);
        const b = await backend.transaction(true, async (tx) => {
          await tx.alreadyProcessed("evt_B");
          return tx.enqueue(Receipt.applied("evt_B"));
        });
        await backend.transaction(true, (tx) => tx.enqueue(Receipt.failed("evt_C", "E_OLD")));
        await sleep(3); // created_at is in milliseconds: "latest" needs a later one
        const c = await backend.transaction(true, (tx) => tx.enqueue(Receipt.failed("evt_C", "E_REJECTED", "no such product")));
        await backend.transaction(true, (tx) => tx.alreadyProcessed("evt_D"));
        const request: ProbeRequest = { probeId: "prb_1", source: "orders", eventIds: ["evt_E", "evt_D", "evt_C", "evt_B", "evt_A"] };

        const answer = await answerProbe(backend.outbox, KEY, request, { now: NOW });
        const entries = answer.receipts.map((entry) => {
          const body = Buffer.from(entry["receipt-body"], "base64");
          assert.equal(entry["receipt-key"], "orders-1");
          assert.equal(entry["receipt-timestamp"], String(NOW));
          return [entry["receipt-id"], verifyReceipt(entry, body, KEY.publicKeyBase64(), { now: NOW }).toJSON()];
        });
        assert.deepEqual(entries, [
          [probeReceiptId("evt_D"), { event_id: "evt_D", status: "applied" }],
          [c, { event_id: "evt_C", status: "failed", error_code: "E_REJECTED", detail: "no such product" }],
          [b, { event_id: "evt_B", status: "applied" }],
          [a, { event_id: "evt_A", status: "applied", target_record_id: "ord_A" }],
        ]);

        // Asked again later: the same ids and bodies, signed afresh.
        const again = await answerProbe(backend.outbox, KEY, request, { now: NOW + 60 });
        assert.deepEqual(
          again.receipts.map((e) => [e["receipt-id"], e["receipt-body"], e["receipt-timestamp"]]),
          answer.receipts.map((e) => [e["receipt-id"], e["receipt-body"], String(NOW + 60)]),
        );
        // The stored receipt's bytes, exactly as the flusher posts them.
        const stored = (await backend.outbox.records(["evt_A"])).receipts[0];
        assert.equal(Buffer.from(answer.receipts[3]?.["receipt-body"] ?? "", "base64").toString(), stored?.body);
        // Nothing known: an empty answer, never an invented failure.
        assert.deepEqual(await answerProbe(backend.outbox, KEY, { ...request, eventIds: ["evt_X"] }, { now: NOW }), { receipts: [] });
      } finally {
        await backend.close();
      }
    });
  });
}

describe("the HTTP handler", () => {
  const servers: Server[] = [];
  after(() => Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve)))));
  const records = {
    async records(ids: readonly string[]) {
      return { receipts: [], processed: new Set(ids.filter((id) => id.startsWith("evt_done"))) };
    },
  };

  async function serve(handler: ReturnType<typeof statusProbeHandler>, preparse?: "raw" | "json"): Promise<string> {
    const server = createServer(async (req, res) => {
      if (preparse !== undefined) {
        const chunks: Buffer[] = [];
        for await (const chunk of req) chunks.push(chunk as Buffer);
        const raw = Buffer.concat(chunks);
        (req as unknown as { body: unknown }).body = preparse === "raw" ? raw : JSON.parse(raw.toString());
      }
      await handler(req, res);
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    return `http://127.0.0.1:${typeof address === "object" && address !== null ? address.port : 0}/`;
  }

  async function post(url: string, request: { headers: Record<string, string>; body: Buffer }) {
    const response = await fetch(url, { method: "POST", headers: request.headers, body: request.body });
    assert.equal(response.headers.get("content-type"), "application/json");
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  }

  test("answers a signed probe and refuses the rest, with the gateway's error shape", async () => {
    const now = Math.floor(Date.now() / 1000);
    const handler = statusProbeHandler({ secret: SECRET, key: KEY, records });
    for (const url of [await serve(handler), await serve(handler, "raw")]) {
      const ok = await post(url, probe(["evt_done_1", "evt_other"], { timestamp: now }));
      assert.equal(ok.status, 200);
      const receipts = ok.body["receipts"] as Record<string, string>[];
      assert.deepEqual(receipts.map((r) => r["receipt-id"]), [probeReceiptId("evt_done_1")]);
      const stale = await post(url, probe(["evt_done_1"], { timestamp: now - 600 }));
      assert.deepEqual(stale, {
        status: 401,
        body: { error: { code: "probe_timestamp_stale", message: "the probe's timestamp is more than 5 minutes from the clock" } },
      });
      assert.equal((await post(url, probe(["evt_done_1"], { timestamp: now, id: "evt_1" }))).status, 401);
      assert.equal((await post(url, probe(["evt_done_1"], { timestamp: now, body: { version: 9 } }))).status, 400);
      const big = probe(["evt_done_1"], { timestamp: now, body: { padding: "x".repeat(70_000) } });
      assert.equal((await post(url, big)).status, 413);
    }
    // Behind a JSON body parser the exact bytes are gone: a clear 500, not a wrong answer.
    const parsed = await post(await serve(handler, "json"), probe(["evt_done_1"], { timestamp: now }));
    assert.equal(parsed.status, 500);
    assert.equal((parsed.body["error"] as { code: string }).code, "probe_body_parsed");
  });

  test("a lookup that fails is a 500 and no answer", async () => {
    const errors: unknown[] = [];
    const broken = {
      async records(): Promise<never> {
        throw new Error("database is locked");
      },
    };
    const request = probe(["evt_1"]);
    const answer = await handleStatusProbe(
      { secret: SECRET, key: KEY, records: broken, now: () => NOW, onError: (e) => errors.push(e) },
      request,
    );
    assert.deepEqual(answer, { status: 500, body: { error: { code: "probe_lookup_failed", message: "the handler could not read its records" } } });
    assert.equal(errors.length, 1);
  });
});
