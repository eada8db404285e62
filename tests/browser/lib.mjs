// What every console scenario shares: Debian's chromium driven by playwright-core (which
// downloads no browser), a record of every script error and console error, and the
// accessibility checks (every control labelled, keyboard reachable).
import { chromium } from "playwright-core";
import assert from "node:assert/strict";

export const gateway = process.env.GATEWAY_URL;
assert.ok(gateway, "GATEWAY_URL is not set (tests/browser.rs sets it)");

export function env(name) {
  const value = process.env[name];
  assert.ok(value !== undefined, `${name} is not set`);
  return value;
}

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    // As root (CI runs so) chromium needs its sandbox off; nothing but our own pages is loaded.
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
}

// A browser context whose pages record every console error and uncaught script error.
// `expected` lists patterns of console errors a scenario provokes on purpose (a refused
// request's 401/403 status shows as "Failed to load resource").
export async function context(browser, { expected = [] } = {}) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  ctx.on("page", (page) => watch(page, errors, expected));
  return { ctx, errors, expected };
}

function watch(page, errors, expected) {
  page.on("console", (msg) => {
    if (msg.type() !== "error") return;
    const text = msg.text();
    if (expected.some((re) => re.test(text))) return;
    errors.push(`console error on ${page.url()}: ${text}`);
  });
  page.on("pageerror", (err) => errors.push(`script error on ${page.url()}: ${err.message}`));
}

export function noErrors(errors) {
  assert.deepEqual(errors, [], "the browser reported errors");
}

// Every visible form control has an accessible name (a <label>, aria-label or
// aria-labelledby; a button its text), and every link in the page has one too.
export async function checkLabels(page) {
  const unlabelled = await page.evaluate(() => {
    const missing = [];
    const named = (el) => {
      if (el.getAttribute("aria-label")?.trim()) return true;
      const by = el.getAttribute("aria-labelledby");
      if (by && by.split(/\s+/).every((id) => document.getElementById(id)?.textContent.trim())) return true;
      if (el.labels && Array.from(el.labels).some((l) => l.textContent.trim())) return true;
      if (el.tagName === "BUTTON" || el.tagName === "A" || el.tagName === "SUMMARY") return el.textContent.trim().length > 0;
      return false;
    };
    for (const el of document.querySelectorAll("input, select, textarea, button, a[href], summary")) {
      if (el.type === "hidden") continue;
      if (!named(el)) missing.push(el.outerHTML.slice(0, 160));
    }
    return missing;
  });
  assert.deepEqual(unlabelled, [], `controls without an accessible name on ${page.url()}`);
}

// Pressing Tab from the top reaches `selector` (a control usable by keyboard), within `limit` presses.
export async function tabTo(page, selector, limit = 200) {
  await page.evaluate(() => document.activeElement?.blur());
  const target = await page.$(selector);
  assert.ok(target, `${selector} is not on ${page.url()}`);
  for (let i = 0; i < limit; i++) {
    await page.keyboard.press("Tab");
    if (await target.evaluate((el) => el === document.activeElement)) return;
  }
  assert.fail(`Tab never reached ${selector} on ${page.url()}`);
}

// Signs in through the form with the keyboard only: type the token, press Enter.
export async function signIn(page, token, next = "/ui/") {
  await page.goto(`${gateway}${next}`);
  assert.match(new URL(page.url()).pathname, /^\/ui\/signin/);
  await tabTo(page, "#token");
  await page.keyboard.type(token);
  await Promise.all([page.waitForLoadState("load"), page.keyboard.press("Enter")]);
  await page.waitForURL((url) => !url.pathname.startsWith("/ui/signin"));
}

export async function run(name, scenario) {
  const browser = await launch();
  try {
    await scenario(browser);
    console.log(`scenario ${name}: passed`);
  } catch (err) {
    console.error(`scenario ${name}: FAILED`);
    console.error(err);
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}
