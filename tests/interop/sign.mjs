// Signs a webhook body as the provider's own library does, and prints the headers as JSON.
// Usage: node sign.mjs stripe|github SECRET < body
import Stripe from "stripe";
import { sign } from "@octokit/webhooks-methods";

const [kind, secret] = process.argv.slice(2);
const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const payload = Buffer.concat(chunks).toString("utf8");

let headers;
if (kind === "stripe") {
  const stripe = new Stripe("sk_test_unused");
  headers = { "stripe-signature": stripe.webhooks.generateTestHeaderString({ payload, secret }) };
} else if (kind === "github") {
  headers = { "x-hub-signature-256": await sign(secret, payload) };
} else {
  throw new Error(`unknown kind ${kind}`);
}
process.stdout.write(JSON.stringify(headers));
