/**
 * The transactional outbox and the inbox, on better-sqlite3 and on PostgreSQL: the Rust
 * outbox's contract scenario, its tables column for column, and the flusher loop. The gateway
 * is a stand-in on real HTTP.
 */

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";

import Database from "better-sqlite3";
import {
  FLUSH_BATCH,
  OutboxError,
  Receipt,
  ReceiptClient,
  flushOnce,
  startFlusher,
} from "hookwarden-receipts";
import { PgOutbox } from "hookwarden-receipts/pg";
import { SqliteOutbox } from "hookwarden-receipts/sqlite";
import pg from "pg";

import { BACKENDS, type Backend } from "./support/backends.js";
import { TestPg } from "./support/pg.js";
import { StandIn } from "./support/standin.js";
import { eventually, sleep } from "./support/util.js";

const standIns: StandIn[] = [];
after(() => Promise.all(standIns.map((s) => s.stop())));

async function gatewayAndClient() {
  const gateway = await StandIn.start();
  standIns.push(gateway);
  const client = new ReceiptClient(gateway.baseUrl, gateway.key, { retry: { maxAttempts: 2, baseDelayMs: 1 } });
  return { gateway, client };
}

/** The Rust outbox's contract, step by step, against one database. */
async function scenario(backend: Backend): Promise<void> {
  const { outbox } = backend;
  await backend.ensureSchema();
  await backend.ensureSchema(); // idempotent
  const { gateway, client } = await gatewayAndClient();
  const report = (sent: number, rejected: number) => ({ sent, rejected });

  // Rolled back: the receipt and the processed mark go with the transaction.
  await backend.transaction(false, async (tx) => {
    assert.equal(await tx.alreadyProcessed("evt_a"), false);
    await tx.enqueue(Receipt.applied("evt_a"));
  });
  assert.deepEqual(await flushOnce(outbox, client), report(0, 0));
  assert.equal(gateway.posts.length, 0);

  // Committed: sent exactly once, under the id `enqueue` returned.
  const receipt = Receipt.applied("evt_a").withTargetRecord("ord_a");
  const id = await backend.transaction(true, async (tx) => {
    assert.equal(await tx.alreadyProcessed("evt_a"), false, "the rollback un-marked evt_a");
    return tx.enqueue(receipt);
  });
  assert.match(id, /^rcp_[0-9a-f]{32}$/);
  assert.deepEqual(await flushOnce(outbox, client), report(1, 0));
  assert.deepEqual(await flushOnce(outbox, client), report(0, 0));
  assert.equal(gateway.posts.length, 1);
  assert.deepEqual(
    [gateway.posts[0]?.receiptId, gateway.posts[0]?.receipt, gateway.posts[0]?.signatureOk],
    [id, receipt, true],
  );
  assert.deepEqual(await outbox.stats(), { unsent: 0, sent: 1, rejected: 0 });

  // A replay of a committed event is a duplicate, in every later transaction.
  for (let i = 0; i < 2; i++) {
    assert.equal(await backend.transaction(true, (tx) => tx.alreadyProcessed("evt_a")), true);
  }

  // Gateway down (503 on both client tries): queued, then sent under the same id.
  gateway.setScript([503, 503]);
  const idB = await backend.transaction(true, (tx) => tx.enqueue(Receipt.failed("evt_b", "E_DB", "deadlock")));
  const down = await flushOnce(outbox, client);
  assert.equal(down.sent, 0);
  assert.match(down.error ?? "", /503/);
  assert.equal((await outbox.stats()).unsent, 1);
  assert.equal((await flushOnce(outbox, client)).sent, 1);
  const retried = gateway.posts.slice(1);
  assert.equal(retried.length, 3);
  assert.ok(retried.every((p) => p.receiptId === idB && p.receipt?.status === "failed"));

  // A 401 (the key is not accepted) is not the receipt's fault: it stays queued.
  gateway.setScript([401]);
  await backend.transaction(true, (tx) => tx.enqueue(Receipt.applied("evt_k")));
  const refusedKey = await flushOnce(outbox, client);
  assert.deepEqual([refusedKey.sent, refusedKey.rejected], [0, 0]);
  assert.match(refusedKey.error ?? "", /401/);
  assert.equal((await flushOnce(outbox, client)).sent, 1);
  assert.equal(gateway.posts.length, 6);

  // A receipt refused for good is put aside; the next one still goes, oldest first.
  gateway.setScript([403]);
  for (const event of ["evt_poison_1", "evt_c"]) {
    await backend.transaction(true, (tx) => tx.enqueue(Receipt.applied(event)));
    await sleep(3);
  }
  assert.deepEqual(await flushOnce(outbox, client), report(1, 1));
  assert.deepEqual(
    gateway.posts.slice(6).map((p) => p.receipt?.eventId),
    ["evt_poison_1", "evt_c"],
  );
  assert.deepEqual(await outbox.stats(), { unsent: 0, sent: 4, rejected: 1 });
  assert.deepEqual(await flushOnce(outbox, client), report(0, 0));

  // Something that is not a receipt fails the caller's transaction at once, and it rolls back.
  await assert.rejects(
    backend.transaction(true, async (tx) => {
      assert.equal(await tx.alreadyProcessed("evt_d"), false);
      await tx.enqueue({ eventId: "evt_d" } as unknown as Receipt);
    }),
    OutboxError,
  );
  assert.equal(await backend.transaction(false, (tx) => tx.alreadyProcessed("evt_d")), false);

  // A stored body that is not a receipt (written by hand) is put aside, not posted.
  await backend.execute(
    "INSERT INTO hookwarden_receipt_outbox (receipt_id, event_id, body, created_at, attempts) VALUES (?, ?, ?, ?, 0)",
    ["rcp_by_hand", "evt_e", '{"event_id":"evt_e","status":"maybe"}', Date.now()],
  );
  const posted = gateway.posts.length;
  assert.deepEqual(await flushOnce(outbox, client), report(0, 1));
  assert.equal(gateway.posts.length, posted);

  // More than one batch: every receipt goes in one pass.
  await backend.transaction(true, async (tx) => {
    for (let i = 0; i < FLUSH_BATCH + 20; i++) {
      await tx.enqueue(Receipt.applied(`evt_many_${i}`));
    }
  });
  assert.deepEqual(await flushOnce(outbox, client), report(FLUSH_BATCH + 20, 0));
  assert.deepEqual(await outbox.stats(), { unsent: 0, sent: 4 + FLUSH_BATCH + 20, rejected: 2 });

  // The status probe's view: receipts of the asked events, and their processed marks.
  const records = await outbox.records(["evt_a", "evt_b", "evt_zz"]);
  assert.deepEqual(
    records.receipts.map((r) => [r.receiptId, r.eventId]),
    [
      [id, "evt_a"],
      [idB, "evt_b"],
    ],
  );
  assert.deepEqual([...records.processed], ["evt_a"]);
}

/** The Rust SDK's tables (receipts-sdk/src/outbox.rs), as each database reports them. */
const RUST_TABLES = {
  sqlite: {
    hookwarden_receipt_outbox: [
      "receipt_id TEXT NULL PK",
      "event_id TEXT NOT NULL",
      "body TEXT NOT NULL",
      "created_at BIGINT NOT NULL",
      "sent_at BIGINT NULL",
      "attempts BIGINT NOT NULL DEFAULT 0",
      "last_error TEXT NULL",
    ],
    hookwarden_processed_events: ["event_id TEXT NULL PK", "processed_at BIGINT NOT NULL"],
  },
  postgres: {
    hookwarden_receipt_outbox: [
      "receipt_id text NOT NULL PK",
      "event_id text NOT NULL",
      "body text NOT NULL",
      "created_at bigint NOT NULL",
      "sent_at bigint NULL",
      "attempts bigint NOT NULL DEFAULT 0",
      "last_error text NULL",
    ],
    hookwarden_processed_events: ["event_id text NOT NULL PK", "processed_at bigint NOT NULL"],
  },
};

for (const [name, open] of BACKENDS) {
  describe(`outbox on ${name}`, () => {
    test("the Rust outbox's contract: rollback, commit, retries, 401, poison, batches", async () => {
      const backend = await open();
      try {
        await scenario(backend);
      } finally {
        await backend.close();
      }
    });

    test("the tables are the Rust SDK's, column for column", async () => {
      const backend = await open();
      try {
        await backend.ensureSchema();
        for (const [table, columns] of Object.entries(RUST_TABLES[name])) {
          assert.deepEqual(await backend.columns(table), columns, table);
        }
      } finally {
        await backend.close();
      }
    });

    test("the flusher: a first pass at start, a pass when woken, nothing after stop", async () => {
      const backend = await open();
      const { gateway, client } = await gatewayAndClient();
      try {
        await backend.ensureSchema();
        const before = await backend.transaction(true, (tx) => tx.enqueue(Receipt.applied("evt_before_start")));
        const reports: number[] = [];
        const flusher = startFlusher(backend.outbox, client, {
          intervalMs: 60_000,
          onReport: (r) => reports.push(r.sent),
        });
        await eventually("the receipt committed before the start posted", 5_000, async () =>
          gateway.posts.length === 1 ? true : undefined,
        );
        assert.equal(gateway.posts[0]?.receiptId, before);
        const woken = await backend.transaction(true, (tx) => tx.enqueue(Receipt.applied("evt_woken")));
        flusher.wake();
        await eventually("the woken pass posted", 5_000, async () => (gateway.posts.length === 2 ? true : undefined));
        assert.equal(gateway.posts[1]?.receiptId, woken);
        assert.deepEqual(reports, [1, 1]);
        await flusher.stop();
        await backend.transaction(true, (tx) => tx.enqueue(Receipt.applied("evt_after_stop")));
        flusher.wake();
        await sleep(200);
        assert.equal(gateway.posts.length, 2);
        assert.equal((await backend.outbox.stats()).unsent, 1);
      } finally {
        await backend.close();
      }
    });
  });
}

test("sqlite: alreadyProcessed and enqueue refuse to run outside a transaction", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "hw-outbox-"));
  const db = new Database(path.join(dir, "outbox.db"));
  try {
    const outbox = new SqliteOutbox(db);
    outbox.ensureSchema();
    assert.throws(() => outbox.alreadyProcessed("evt_1"), /inside the transaction/);
    assert.throws(() => outbox.enqueue(Receipt.applied("evt_1")), OutboxError);
    // better-sqlite3's own transactions are what the handler uses.
    const handle = db.transaction((id: string) => [outbox.alreadyProcessed(id), outbox.enqueue(Receipt.applied(id))]);
    assert.equal(handle("evt_1")[0], false);
    assert.equal(handle("evt_1")[0], true);
    assert.equal((await outbox.stats()).unsent, 2);
  } finally {
    db.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("postgres: two transactions marking one event take turns; the second sees only a commit", async () => {
  const database = await TestPg.create();
  const pool = new pg.Pool({ connectionString: database.url, max: 4 });
  try {
    const outbox = new PgOutbox(pool);
    await outbox.ensureSchema();
    for (const commitFirst of [false, true]) {
      const event = `evt_race_${commitFirst}`;
      const first = await pool.connect();
      const second = await pool.connect();
      try {
        await first.query("BEGIN");
        await second.query("BEGIN");
        assert.equal(await outbox.alreadyProcessed(first, event), false);
        let settled = false;
        const waiting = outbox.alreadyProcessed(second, event).finally(() => {
          settled = true;
        });
        await sleep(150);
        assert.equal(settled, false, "the second transaction waits for the first");
        await first.query(commitFirst ? "COMMIT" : "ROLLBACK");
        assert.equal(await waiting, commitFirst);
        await second.query("ROLLBACK");
      } finally {
        first.release();
        second.release();
      }
    }
    // The transaction helper commits, and rolls back on a throw.
    await assert.rejects(
      outbox.transaction(async (tx) => {
        await outbox.enqueue(tx, Receipt.applied("evt_thrown"));
        throw new Error("business rule");
      }),
      /business rule/,
    );
    await outbox.transaction((tx) => outbox.enqueue(tx, Receipt.applied("evt_kept")));
    assert.deepEqual(
      (await outbox.unsent(10)).map((r) => r.eventId),
      ["evt_kept"],
    );
  } finally {
    await pool.end();
    await database.drop();
  }
});
