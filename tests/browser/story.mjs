// The 2 AM story in the browser, from gap to closed gap, with the screenshots for docs/:
// find the outage on the chart, select it, preview the replay, run it live with a reason,
// watch the counts climb (pushed by the server) and a mid-batch drop appear as late receipts
// arrive, re-attach from another tab through the replays page and pause and resume it there,
// see the gap closed on the overview; a viewer previews but cannot run.
// Env: GATEWAY_URL, OPERATOR_TOKEN, VIEWER_TOKEN, EXPECT_UNKNOWN, EXPECT_FAILED,
// LATE_RECEIPTS (signed receipts to post mid-run), SCREENSHOTS (a directory).
import assert from "node:assert/strict";
import path from "node:path";
import { checkLabels, context, env, gateway, noErrors, run, signIn, tabTo } from "./lib.mjs";

const shots = env("SCREENSHOTS");
const unknown = Number(env("EXPECT_UNKNOWN"));
const number = async (page, selector) => Number((await page.textContent(selector)).trim());

await run("story", async (browser) => {
  const { ctx, errors } = await context(browser);
  const page = await ctx.newPage();
  await signIn(page, env("OPERATOR_TOKEN"), "/ui/?window=1h");

  // 1. The gap on the chart: a block of unknown columns between confirmed ones.
  const columns = await page.$$eval("svg#chart a.col", (cols) =>
    cols.map((c) => ({ start: c.getAttribute("data-start"), unknown: c.querySelector("rect.unknown") !== null })));
  const gap = columns.filter((c) => c.unknown);
  assert.ok(gap.length >= 10, `the outage shows as unknown columns (${gap.length})`);
  const row = await page.$$eval("table.counts tbody tr td", (tds) => tds.map((td) => td.textContent.trim()));
  assert.equal(row[1], String(unknown), `the unknown count: ${row}`);
  await page.screenshot({ path: path.join(shots, "console-overview.png"), fullPage: false });

  // 2. Select it by keyboard: its first column, then its last (which widens the selection).
  for (const column of [gap[0], gap[gap.length - 1]]) {
    const selector = `svg#chart a.col[data-start='${column.start}']`;
    const href = await page.getAttribute(selector, "href");
    await tabTo(page, selector);
    await Promise.all([page.waitForURL(`${gateway}${href}`), page.keyboard.press("Enter")]);
  }
  assert.match(await page.textContent(".selection"), new RegExp(`${unknown} unknown`));

  // 3. Replay this span: the form has its scope; preview (the dry run) first.
  await Promise.all([page.waitForURL(/\/ui\/replay\?/), page.click("#sel-replay")]);
  await checkLabels(page);
  assert.notEqual(await page.inputValue("#since"), "");
  await page.fill("#rate", "4");
  await Promise.all([page.waitForLoadState("load"), page.click("text=Preview (dry run)")]);
  const counts = await page.$$eval("#plan-counts tbody td", (tds) => tds.map((td) => td.textContent.trim()));
  assert.deepEqual(counts.slice(0, 3), ["0", String(unknown), env("EXPECT_FAILED")], "confirmed, unknown, failed");
  assert.equal(await number(page, "#eligible"), unknown);
  assert.match(await page.textContent("#risk"), /low/);
  assert.ok((await page.$$(".preview tbody tr td code")).length >= 2, "sample with destination and idempotency key");
  await checkLabels(page);
  await page.screenshot({ path: path.join(shots, "console-preview.png"), fullPage: true });

  // 4. Run live: a reason is required.
  await tabTo(page, "#reason");
  await page.keyboard.type("INC-4711 orders handler down, replaying the outage window");
  await Promise.all([page.waitForURL(/\/ui\/replays\/rpl_/), page.click("form.run button[type=submit]")]);
  await checkLabels(page);

  // 5. The counts climb, pushed from the server (no reload); receipts arriving mid-run drop
  //    their items from it.
  await page.waitForFunction(() => Number(document.getElementById("count-sent").textContent) >= 3);
  for (const receipt of JSON.parse(env("LATE_RECEIPTS"))) {
    const answer = await fetch(`${gateway}/v1/receipts`, {
      method: "POST",
      headers: { ...receipt.headers, "content-type": "application/json" },
      body: receipt.body,
    });
    assert.equal(answer.status, 200, await answer.text());
  }
  await page.waitForFunction(() => Number(document.getElementById("count-skipped_receipt").textContent) >= 1);
  const midway = await number(page, "#count-sent");
  assert.ok(midway < unknown - 3, "still running when the drop showed");
  await page.screenshot({ path: path.join(shots, "console-replay.png"), fullPage: false });

  // 6. Re-attach from another tab, by keyboard: the replays page lists the run as live, its
  //    page follows it; pause it there (the first tab sees it paused, pushed, and nothing
  //    more is sent), then resume it.
  const jobId = new URL(page.url()).pathname.split("/").pop();
  const other = await ctx.newPage();
  await other.goto(`${gateway}/ui/replays`);
  await checkLabels(other);
  await other.screenshot({ path: path.join(shots, "console-replays.png"), fullPage: false });
  const link = `a[href='/ui/replays/${jobId}']`;
  assert.match(await other.textContent(`tr.live:has(${link})`), /running/);
  await tabTo(other, link);
  await Promise.all([other.waitForURL(`${gateway}/ui/replays/${jobId}`), other.keyboard.press("Enter")]);
  await checkLabels(other);
  await tabTo(other, "#pause");
  await Promise.all([other.waitForURL(/done=paused/), other.keyboard.press("Enter")]);
  await page.waitForFunction(() => document.getElementById("state").textContent === "paused");
  assert.equal(await page.isVisible("#resume"), true, "the first tab offers resume, pushed");
  assert.equal(await page.isVisible("#pause"), false);
  assert.match(await page.textContent("#paused"), /Paused by oncall-ann/);
  // A send in flight at the pause still lands and is counted: let it, then nothing more.
  await page.waitForTimeout(1000);
  const held = await number(page, "#count-sent");
  await page.waitForTimeout(1500);
  assert.equal(await number(page, "#count-sent"), held, "nothing is sent while paused");
  await tabTo(other, "#resume");
  await Promise.all([other.waitForURL(/done=resumed/), other.keyboard.press("Enter")]);
  await page.waitForFunction(() => document.getElementById("state").textContent === "running");
  await other.close();
  await page.waitForFunction(() => document.getElementById("state").textContent === "completed", null, { timeout: 60000 });
  assert.equal(await number(page, "#count-sent"), unknown - 3);
  assert.equal(await number(page, "#count-succeeded"), unknown - 3);
  assert.equal(await number(page, "#count-skipped_receipt"), 3);
  assert.equal(page.url().includes("?"), false, "progress came without a reload");

  // 7. The gap is closed: the window shows no unknown left.
  await Promise.all([page.waitForLoadState("load"), page.click("text=The window on the overview")]);
  assert.match(await page.textContent(".selection"), /\b0 unknown/);
  // The run is on the replays page, completed, with its counts.
  await page.goto(`${gateway}/ui/replays?state=completed`);
  assert.match(await page.textContent(`tr:has(a[href='/ui/replays/${jobId}'])`), /completed/);
  noErrors(errors);

  // A viewer sees the replay form, but its buttons are disabled and say why (the API takes
  // replays, dry runs too, from operators only).
  const watched = await context(browser);
  const viewer = await watched.ctx.newPage();
  await signIn(viewer, env("VIEWER_TOKEN"), "/ui/replay?source=orders&since=2000-01-01T00:00:00Z");
  assert.equal(await viewer.isDisabled("text=Preview (dry run)"), true);
  assert.match(await viewer.textContent("#preview-why"), /operator role; you are signed in as viewer/);
  await checkLabels(viewer);
  noErrors(watched.errors);
});
