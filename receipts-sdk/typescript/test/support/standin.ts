/**
 * A stand-in for the gateway's `POST /v1/receipts` on real HTTP: answers a script of statuses
 * (then 200), records every post and checks its signature, as the Rust SDK's test_support does.
 */

import { type Server, createServer } from "node:http";

import { type Receipt, ReceiptKey, verifyReceipt } from "hookwarden-receipts";

export interface Post {
  receiptId: string;
  receipt: Receipt | undefined;
  signatureOk: boolean;
  contentType: string | undefined;
}

/**
 * One scripted answer: a status (with an optional `Retry-After` or a body of its own), or
 * `"drop"` to cut the connection.
 */
export type Answer = number | { status: number; retryAfter?: string; body?: string } | "drop";

export class StandIn {
  readonly key = ReceiptKey.generate("stand-in-key");
  readonly posts: Post[] = [];
  private script: Answer[];

  private constructor(
    private readonly server: Server,
    script: Answer[],
  ) {
    this.script = [...script];
  }

  static async start(script: Answer[] = []): Promise<StandIn> {
    let standIn: StandIn | undefined;
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => standIn?.answer(req.headers, Buffer.concat(chunks), req.socket, res));
    });
    standIn = new StandIn(server, script);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return standIn;
  }

  get baseUrl(): string {
    const address = this.server.address();
    if (typeof address !== "object" || address === null) {
      throw new Error("not listening");
    }
    return `http://127.0.0.1:${address.port}`;
  }

  /** Answers the next posts with these, then 200 again. */
  setScript(script: Answer[]): void {
    this.script = [...script];
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }

  private answer(
    headers: Record<string, string | string[] | undefined>,
    body: Buffer,
    socket: { destroy(): void },
    res: import("node:http").ServerResponse,
  ): void {
    let receipt: Receipt | undefined;
    let signatureOk = false;
    try {
      receipt = verifyReceipt(headers, body, this.key.publicKeyBase64());
      signatureOk = true;
    } catch {
      signatureOk = false;
    }
    this.posts.push({
      receiptId: String(headers["receipt-id"]),
      receipt,
      signatureOk,
      contentType: headers["content-type"] as string | undefined,
    });
    const next = this.script.shift() ?? 200;
    if (next === "drop") {
      socket.destroy();
      return;
    }
    const scripted = typeof next === "number" ? { status: next } : next;
    const extra: Record<string, string> = scripted.retryAfter === undefined ? {} : { "retry-after": scripted.retryAfter };
    const answer =
      scripted.status === 200
        ? { event_id: receipt?.eventId, receipt_id: headers["receipt-id"], outcome: "confirmed", duplicate: false }
        : { error: { code: `stand_in_${scripted.status}`, message: "scripted answer" } };
    res.writeHead(scripted.status, { "content-type": "application/json", ...extra });
    res.end(scripted.body ?? JSON.stringify(answer));
  }
}
