// The newcomer's path through `hookwarden demo`, in the browser, against the demo's real
// gateway and the example handler (which commits each order to its database and sends a
// signed receipt): sign in with the token the demo printed, find the outage's unknown events
// on the overview's chart, select them, preview, run live with a reason, watch the job end,
// and see the gap closed on the overview.
// Env: GATEWAY_URL (the URL the demo printed, without /ui/), TOKEN (the token it printed),
// EXPECT_UNKNOWN (the unknown events the API counts before).
import assert from "node:assert/strict";
import { checkLabels, context, env, gateway, noErrors, run, signIn } from "./lib.mjs";

const unknown = Number(env("EXPECT_UNKNOWN"));
const number = async (page, selector) => Number((await page.textContent(selector)).trim());

// The overview's first table, the row of the demo's one source: [confirmed, unknown, …].
async function row(page) {
  return page.$eval("#gap table.counts", (table) =>
    Array.from(table.querySelectorAll("tbody tr td"), (td) => Number(td.textContent)),
  );
}

await run("demo", async (browser) => {
  const { ctx, errors } = await context(browser);
  const page = await ctx.newPage();
  await signIn(page, env("TOKEN"), "/ui/?window=1h");
  const before = await row(page);
  assert.equal(before[1], unknown, `the overview counts the outage's unknown events: ${before}`);
  assert.ok(before[0] > 0, "events before and after the outage are confirmed");

  // The outage on the chart: select from its first unknown column to its last.
  const gap = await page.$$eval("svg#chart a.col", (cols) =>
    cols.filter((c) => c.querySelector("rect.unknown")).map((c) => c.getAttribute("data-start")),
  );
  assert.ok(gap.length >= 1, "the outage shows as unknown on the chart");
  for (const start of new Set([gap[0], gap[gap.length - 1]])) {
    await Promise.all([page.waitForLoadState("load"), page.click(`svg#chart a.col[data-start='${start}']`)]);
  }
  assert.match(await page.textContent(".selection"), new RegExp(`${unknown} unknown`));

  // Preview first: the dry run counts the span and sends nothing.
  await Promise.all([page.waitForURL(/\/ui\/replay\?/), page.click("#sel-replay")]);
  await checkLabels(page);
  await page.fill("#rate", "20");
  await Promise.all([page.waitForLoadState("load"), page.click("text=Preview (dry run)")]);
  assert.equal(await number(page, "#eligible"), unknown);
  assert.match(await page.textContent("#risk"), /low/);

  // Run it live with a reason, and follow it to its end on its page (pushed, no reload).
  await page.fill("#reason", "demo: the handler is back, replaying its outage");
  await Promise.all([page.waitForURL(/\/ui\/replays\/rpl_/), page.click("form.run button[type=submit]")]);
  await page.waitForFunction(() => document.getElementById("state").textContent === "completed", null, {
    timeout: 60000,
  });
  assert.equal(await number(page, "#count-failed"), 0);
  const settled =
    (await number(page, "#count-succeeded")) +
    (await number(page, "#count-skipped_receipt")) +
    (await number(page, "#count-skipped_probe"));
  assert.equal(settled, unknown, "every item sent and answered, or settled meanwhile");

  // The gap is closed: the example handler's receipts confirmed every one of them.
  // (The overview is rendered by the server: load it again until the receipts are in.)
  let after = [];
  for (let tries = 0; tries < 40; tries++) {
    await page.goto(`${gateway}/ui/?window=1h`);
    after = await row(page);
    if (after[1] === 0) break;
    await page.waitForTimeout(500);
  }
  assert.equal(after[1], 0, `no unknown left: ${after}`);
  assert.equal(after[0], before[0] + unknown, "each replayed event confirmed by its receipt");
  noErrors(errors);
});
