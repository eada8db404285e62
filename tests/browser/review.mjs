// Reviewing a gap in the browser: the events list (a bad filter's column-exact error shown
// inline, keyset paging), an event's page (payload, headers, attempts, receipts), resolving
// with a note (then in the audit entries), the gap review's groups by error code with a
// selection resolved by keyboard; a viewer sees the same with disabled buttons that say why.
// Env: GATEWAY_URL, OPERATOR_TOKEN, VIEWER_TOKEN, FAILED_CODE (2 events failed with it),
// EVENTS (how many events in all).
import assert from "node:assert/strict";
import { checkLabels, context, env, gateway, noErrors, run, signIn, tabTo } from "./lib.mjs";

const refused = /Failed to load resource: the server responded with a status of 400/;
const code = env("FAILED_CODE");

await run("review", async (browser) => {
  const { ctx, errors } = await context(browser, { expected: [refused] });
  const page = await ctx.newPage();
  await signIn(page, env("OPERATOR_TOKEN"), "/ui/events");
  assert.equal(await page.textContent("h1"), "Events");
  await checkLabels(page);
  assert.equal(await page.$$eval("table.events tbody tr", (rows) => rows.length), Number(env("EVENTS")));

  // A filter that does not parse: the API's message, with its column, under the input.
  await page.fill("#filter", "outcome = failed AND attempts >> 2");
  await Promise.all([page.waitForLoadState("load"), page.press("#filter", "Enter")]);
  assert.equal(await page.getAttribute("#filter", "aria-invalid"), "true");
  const problem = await page.textContent("#filter-error");
  assert.match(problem, /filter: at column \d+:/);
  assert.match(problem, /\^/);

  // The filter language selects the failed ones with the code.
  await page.fill("#filter", `error_code = ${code}`);
  await Promise.all([page.waitForLoadState("load"), page.press("#filter", "Enter")]);
  const failed = await page.$$eval("table.events tbody tr td:nth-child(2) a", (as) => as.map((a) => a.textContent));
  assert.equal(failed.length, 2);

  // Keyset paging: two at a time, every event once, newest first.
  await page.goto(`${gateway}/ui/events?limit=2`);
  const seen = [];
  for (;;) {
    seen.push(...(await page.$$eval("table.events tbody tr td:nth-child(2) a", (as) => as.map((a) => a.textContent))));
    const next = await page.$("a[rel=next]");
    if (!next) break;
    await Promise.all([page.waitForLoadState("load"), next.click()]);
  }
  assert.equal(seen.length, Number(env("EVENTS")));
  assert.equal(new Set(seen).size, seen.length, "no event on two pages");
  assert.deepEqual([...seen].sort().reverse(), seen, "newest first");

  // One failed event's page: the payload as formatted JSON, headers, attempts, the receipt.
  await page.goto(`${gateway}/ui/events/${failed[0]}`);
  await checkLabels(page);
  assert.match(await page.textContent("pre.payload"), /\n\s+"id": /);
  assert.match(await page.textContent("main"), /content-type/);
  assert.ok((await page.$$("h2:text('Attempts') + table tbody tr")).length >= 1, "attempts listed");
  assert.match(await page.textContent("h2:text('Receipts') + table"), new RegExp(code));

  // Resolve it with a note, by keyboard; the note and the audit entry show on its page.
  await tabTo(page, "#note");
  await page.keyboard.type("fixed the constraint by hand, INC-4711");
  await tabTo(page, "form.resolve button[type=submit]");
  await Promise.all([page.waitForURL(/done=resolved/), page.keyboard.press("Enter")]);
  assert.match(await page.textContent(".notice"), /Resolved/);
  assert.match(await page.textContent("main"), /fixed the constraint by hand, INC-4711/);
  assert.match(await page.textContent("h2:text('Audit entries') + table"), /event\.resolved/);

  // Gap review: the other one is left in its code's group; select it by keyboard and resolve.
  await page.goto(`${gateway}/ui/gaps`);
  await checkLabels(page);
  // No source here has a status_url: the Reconcile button is disabled and says so.
  assert.equal(await page.isDisabled("#reconcile"), true);
  assert.match(await page.textContent("#reconcile-why"), /status_url/);
  const group = await page.textContent("section.group h3");
  assert.match(group, new RegExp(`${code}.*1 failed`));
  await tabTo(page, `input[name=event][value='${failed[1]}']`);
  await page.keyboard.press("Space");
  await tabTo(page, "#note");
  await page.keyboard.type("duplicate order, nothing to apply");
  await tabTo(page, "#selection button[type=submit]");
  await Promise.all([page.waitForURL(/done=resolved-1/), page.keyboard.press("Enter")]);
  assert.match(await page.textContent(".notice"), /Resolved 1 events/);
  assert.match(await page.textContent("main"), /No failed events/);

  // A viewer sees the same pages, and the buttons that would change something are disabled
  // and say why.
  const watched = await context(browser);
  const viewer = await watched.ctx.newPage();
  await signIn(viewer, env("VIEWER_TOKEN"), `/ui/events/${failed[0]}`);
  assert.equal(await viewer.isDisabled("form.resolve button[type=submit]"), true);
  assert.match(await viewer.textContent("#resolve-why"), /operator role; you are signed in as viewer/);
  await viewer.goto(`${gateway}/ui/gaps`);
  assert.equal(await viewer.isDisabled("#selection button[type=submit]"), true);
  assert.match(await viewer.textContent("#act-why"), /viewer/);
  await checkLabels(viewer);
  noErrors(errors);
  noErrors(watched.errors);
});
