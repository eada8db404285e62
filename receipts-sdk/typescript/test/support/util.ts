/** Small helpers the tests share: polling, free ports, the repository's paths. */

import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** The repository's root (this file is receipts-sdk/typescript/build-test/test/support/util.js). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../../..");

/** receipts-sdk/test-vectors.json, shared by every SDK's tests. */
export function testVectors(): TestVectors {
  return JSON.parse(readFileSync(path.join(REPO_ROOT, "receipts-sdk/test-vectors.json"), "utf8")) as TestVectors;
}

export interface TestVectors {
  receipt: {
    seed: string;
    public_key: string;
    key_id: string;
    receipt_id: string;
    timestamp: number;
    body: string;
    signed_content: string;
    signature: string;
    inline_body: string;
  };
  forward: { secret: string; webhook_id: string; timestamp: number; body: string; signed_content: string; signature: string };
  probe: {
    secret: string;
    webhook_id: string;
    timestamp: number;
    body: string;
    signature: string;
    answer: {
      seed: string;
      key_id: string;
      event_id: string;
      receipt_id: string;
      timestamp: number;
      body: string;
      signature: string;
      entry: Record<string, string>;
    };
  };
}

/** Polls `check` every 50 ms until it gives a value, or fails after `timeoutMs`. */
export async function eventually<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) {
      return value;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    }
    await sleep(50);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A port nobody listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address !== null ? resolve(address.port) : reject(new Error("no port"))));
    });
  });
}
