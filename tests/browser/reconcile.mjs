// Reconciling from the console: the overview shows the source's unknown events; an operator
// presses Reconcile, the gateway asks the handler (its status_url) and the page after says
// what the signed answers settled; back on the overview the counts moved, and the events
// list behind "the unknown ones left" holds exactly those. A viewer sees the button disabled,
// saying why. Env: GATEWAY_URL, OPERATOR_TOKEN, VIEWER_TOKEN, UNKNOWN (events unknown before),
// APPLIED and FAILED (how many the handler answers for), LEFT (the ids it says nothing of,
// comma-separated).
import assert from "node:assert/strict";
import { checkLabels, context, env, gateway, noErrors, run, signIn, tabTo } from "./lib.mjs";

const unknown = Number(env("UNKNOWN"));
const applied = Number(env("APPLIED"));
const failed = Number(env("FAILED"));
const left = env("LEFT").split(",");

// The overview's row for `orders`: [confirmed, unknown, overdue, failed, resolved, total].
async function counts(page) {
  const cells = await page.$eval("#gap table.counts", (table) =>
    Array.from(table.querySelectorAll("tbody tr td"), (td) => Number(td.textContent)),
  );
  assert.equal(cells.length, 6, "one source, six counts");
  return { confirmed: cells[0], unknown: cells[1], failed: cells[3], total: cells[5] };
}

await run("reconcile", async (browser) => {
  const { ctx, errors } = await context(browser);
  const page = await ctx.newPage();
  await signIn(page, env("OPERATOR_TOKEN"), "/ui/");
  assert.deepEqual(await counts(page), { confirmed: 0, unknown, failed: 0, total: unknown });
  await checkLabels(page);

  // The button is enabled for an operator, with the source that has a status_url chosen.
  assert.equal(await page.isDisabled("#reconcile"), false);
  assert.equal(await page.inputValue("#reconcile-source"), "orders");
  await tabTo(page, "#reconcile");
  await Promise.all([page.waitForURL(/\/ui\/reconcile$/), page.keyboard.press("Enter")]);

  // What the answers did, counted, and that nothing was replayed.
  assert.equal(await page.textContent("h1"), "Reconciled orders");
  const cell = async (name) => Number(await page.textContent(`#r-${name}`));
  assert.equal(await cell("unknown_in_window"), unknown);
  assert.equal(await cell("asked"), unknown);
  assert.equal(await cell("confirmed"), applied);
  assert.equal(await cell("failed"), failed);
  assert.equal(await cell("still_unknown"), unknown - applied - failed);
  assert.equal(await cell("probes_failed"), 0);
  assert.equal(await cell("entries_refused"), 0);
  assert.match(await page.textContent(".notice"), /Nothing was replayed\./);
  assert.equal(await page.$(".why[role=alert]"), null, "a complete run says nothing is missing");
  await checkLabels(page);

  // The unknown ones left in the span: exactly those the handler said nothing of.
  await Promise.all([page.waitForLoadState("load"), page.click("text=The unknown ones left in the span")]);
  const listed = await page.$$eval("table.events tbody tr td:nth-child(2) a", (as) => as.map((a) => a.textContent));
  assert.deepEqual([...listed].sort(), [...left].sort());

  // Back on the overview, the counts moved by what was settled.
  await page.goto(`${gateway}/ui/`);
  assert.deepEqual(await counts(page), {
    confirmed: applied,
    unknown: unknown - applied - failed,
    failed,
    total: unknown,
  });

  // A viewer sees the button disabled, and why.
  const watched = await context(browser);
  const viewer = await watched.ctx.newPage();
  await signIn(viewer, env("VIEWER_TOKEN"), "/ui/");
  assert.equal(await viewer.isDisabled("#reconcile"), true);
  assert.match(await viewer.textContent("#reconcile-why"), /operator role; you are signed in as viewer/);
  noErrors(errors);
  noErrors(watched.errors);
});
