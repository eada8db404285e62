// Sign-in, sessions and the guards around them, in a real browser: a wrong token is refused,
// the session cookie is HttpOnly and SameSite=Strict, every page carries the CSP, a forged
// POST from another origin changes nothing, sign-out ends the session, and the overview
// shows the gap on the chart. Env: GATEWAY_URL, ADMIN_TOKEN, EXPECT_UNKNOWN, EXPECT_CONFIRMED.
import assert from "node:assert/strict";
import http from "node:http";
import { checkLabels, context, env, gateway, noErrors, run, signIn, tabTo } from "./lib.mjs";

const refused = /Failed to load resource: the server responded with a status of 40[13]/;

await run("signin", async (browser) => {
  const { ctx, errors } = await context(browser, { expected: [refused] });
  const page = await ctx.newPage();

  // Not signed in: the console sends us to the sign-in form, which is labelled.
  const first = await page.goto(`${gateway}/ui/`);
  assert.match(page.url(), /\/ui\/signin\?next=%2Fui%2F|\/ui\/signin\?next=\/ui\//);
  assert.ok(first.headers()["content-security-policy"]?.includes("script-src 'self'"), "CSP on the sign-in page");
  await checkLabels(page);

  // A wrong token is refused, and says so.
  await tabTo(page, "#token");
  await page.keyboard.type("hwt_not_a_token");
  const [wrong] = await Promise.all([page.waitForResponse((r) => r.url().endsWith("/ui/signin")), page.keyboard.press("Enter")]);
  assert.equal(wrong.status(), 401);
  await page.waitForSelector("#signin-error");
  assert.match(await page.textContent("#signin-error"), /not valid/);
  assert.equal((await ctx.cookies()).filter((c) => c.name === "hookwarden_session").length, 0);

  // The right one signs in (keyboard only), onto the gap view.
  await signIn(page, env("ADMIN_TOKEN"));
  assert.equal(new URL(page.url()).pathname, "/ui/");
  assert.equal(await page.textContent("h1"), "Gap view");
  const session = (await ctx.cookies()).find((c) => c.name === "hookwarden_session");
  assert.ok(session, "a session cookie");
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, "Strict");
  assert.equal(session.path, "/ui");
  assert.ok(!session.value.startsWith("hwt_") && session.value !== env("ADMIN_TOKEN"), "the cookie is not the token");
  await checkLabels(page);

  // The chart shows the gap: columns labelled with their counts, the unknown ones drawn.
  const unknown = await page.$$eval("svg#chart rect.unknown", (rects) => rects.length);
  assert.ok(unknown > 0, "unknown events drawn on the chart");
  const row = await page.textContent("table.counts tbody tr");
  assert.match(row, new RegExp(`${env("EXPECT_CONFIRMED")}\\s*${env("EXPECT_UNKNOWN")}`));
  // A column picked by keyboard selects its span.
  await tabTo(page, "svg#chart a.col:has(rect.unknown)");
  await Promise.all([page.waitForURL(/from=/), page.keyboard.press("Enter")]);
  assert.match(await page.textContent("#sel-heading"), /Selected:/);
  assert.match(await page.textContent(".selection"), /unknown/);

  // A page on another origin posts a form to the console (the browser sends the cookie: same
  // site, other port). It is refused and the session lives on.
  const attacker = http.createServer((req, res) => {
    res.setHeader("content-type", "text/html");
    res.end(`<!doctype html><form id="f" method="post" action="${gateway}/ui/signout"><input name="csrf" value="guess"></form>
      <script>document.getElementById("f").submit()</script>`);
  });
  await new Promise((resolve) => attacker.listen(0, "127.0.0.1", resolve));
  const evil = await ctx.newPage();
  const [forged] = await Promise.all([
    evil.waitForResponse((r) => r.url().endsWith("/ui/signout")),
    evil.goto(`http://127.0.0.1:${attacker.address().port}/`),
  ]);
  assert.equal(forged.status(), 403, "a cross-site POST is refused");
  await evil.close();
  attacker.close();
  await page.goto(`${gateway}/ui/`);
  assert.equal(new URL(page.url()).pathname, "/ui/", "still signed in after the forged POST");

  // Every console response carries the policy, assets too.
  for (const path of ["/ui/", "/ui/static/console.js", "/ui/static/console.css", "/ui/nothing-here"]) {
    const r = await page.request.get(`${gateway}${path}`);
    assert.ok(r.headers()["content-security-policy"]?.startsWith("default-src 'none'"), `CSP on ${path}`);
  }

  // Sign out (by keyboard): the session is over, the console asks to sign in again.
  await tabTo(page, "form[action='/ui/signout'] button");
  await Promise.all([page.waitForURL(/\/ui\/signin/), page.keyboard.press("Enter")]);
  assert.match(await page.textContent(".notice"), /Signed out/);
  await page.goto(`${gateway}/ui/`);
  assert.match(new URL(page.url()).pathname, /^\/ui\/signin/);
  noErrors(errors);
});
