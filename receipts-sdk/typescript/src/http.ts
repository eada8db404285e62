/**
 * Mounting the status probe on Express or plain node:http: `app.post("/hookwarden/status",
 * statusProbeHandler({ secret, key, records: outbox }))`.
 *
 * The signature covers the exact body bytes, so the handler reads the raw body itself. Mount
 * it before (or outside) any JSON body parser; a body that `express.raw()` left as a Buffer is
 * taken as is, one that a JSON parser already turned into an object is refused with 500 and a
 * message that says so. Works with Fastify through `reply.hijack()` and the raw `req`/`res`
 * too, but there `handleStatusProbe` with `request.rawBody` is the simpler fit.
 */

import type { IncomingMessage, ServerResponse } from "node:http";

import { type StatusProbeOptions, type StatusProbeResponse, handleStatusProbe } from "./probe.js";

/** The largest probe request read: 100 event ids fit many times over. */
export const MAX_PROBE_BODY_BYTES = 64 * 1024;

type Request = IncomingMessage & { body?: unknown };

/** An Express / node:http request handler answering the status probe. */
export function statusProbeHandler(options: StatusProbeOptions): (req: Request, res: ServerResponse) => Promise<void> {
  return async (req, res) => {
    let answer: StatusProbeResponse;
    const body = await rawBody(req);
    if (body === "too_large") {
      answer = { status: 413, body: { error: { code: "payload_too_large", message: "a probe is at most 64 KiB" } } };
    } else if (body === "parsed") {
      answer = {
        status: 500,
        body: {
          error: {
            code: "probe_body_parsed",
            message: "a body parser consumed the probe before its signature could be checked: mount the status probe before express.json()",
          },
        },
      };
    } else {
      answer = await handleStatusProbe(options, { headers: req.headers, body });
    }
    const json = JSON.stringify(answer.body);
    res.writeHead(answer.status, { "content-type": "application/json", "content-length": Buffer.byteLength(json) });
    res.end(json);
  };
}

/** The request's body bytes, from a raw-body parser or from the stream. */
async function rawBody(req: Request): Promise<Buffer | "too_large" | "parsed"> {
  if (Buffer.isBuffer(req.body)) {
    return req.body.length > MAX_PROBE_BODY_BYTES ? "too_large" : req.body;
  }
  if (typeof req.body === "string") {
    return Buffer.from(req.body, "utf8");
  }
  if (req.body !== undefined && req.readableEnded) {
    return "parsed";
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const bytes = chunk as Buffer;
    size += bytes.length;
    if (size > MAX_PROBE_BODY_BYTES) {
      return "too_large";
    }
    chunks.push(bytes);
  }
  return Buffer.concat(chunks);
}
