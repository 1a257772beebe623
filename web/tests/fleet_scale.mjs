// The dashboard with a big fleet, in real headless Chromium (tests/e2e/dashboard_test.py starts
// the pool and `gpupool hollow` with thousands of nodes). Usage:
//   node web/tests/fleet_scale.mjs BASE_URL ADMIN_TOKEN NODES GROUP
// Checks: every group is summarised (its node count adds up to NODES) and closed, so the page
// holds no card of a big group's node and never asks for the whole node list; opening GROUP
// ("provider / site") shows its nodes, read with a filter on the server; closing it hides them.
import { check, finish, launch } from "./harness.mjs";

const [base, token, total, group] = process.argv.slice(2);

const browser = await launch();
try {
  const page = await (await browser.newContext({ viewport: { width: 1400, height: 900 } })).newPage();
  const errors = [];
  const unfiltered = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("request", (r) => {
    const u = new URL(r.url());
    if (u.pathname === "/v1/nodes" && !u.searchParams.get("site")) unfiltered.push(r.url());
  });
  await page.goto(`${base}/?token=${token}`);
  await page.locator(".group-sum").first().waitFor({ timeout: 20000 });
  const sums = await page.locator(".group-sum").allTextContents();
  const counted = sums.reduce((s, t) => s + Number((t.match(/(\d+) nodes/) || [0, 0])[1]), 0);
  check(counted === Number(total), `the groups' summaries count every node (${counted} of ${total}, ${sums.length} groups)`);
  const cards = await page.locator(".node").count();
  check(cards === 0, `with ${total} nodes every group starts closed (${cards} node cards drawn)`);
  const head = page.locator(`.group[data-group="${group}"] h3`);
  await head.click();
  await page.locator(`.group[data-group="${group}"] .node`).first().waitFor({ timeout: 15000 });
  const shown = await page.locator(`.group[data-group="${group}"] .node`).count();
  const want = Number((await page.locator(`.group[data-group="${group}"] .group-sum`).textContent()).match(/(\d+) nodes/)[1]);
  check(shown === Math.min(want, 1000), `opening ${group} shows its ${want} nodes (${shown})`);
  check(await page.locator(".node").count() === shown, "only that group's nodes are drawn");
  await page.locator(`.group[data-group="${group}"] h3`).click();
  await page.waitForFunction((g) => !document.querySelector(`.group[data-group="${g}"] .node`), group, { timeout: 10000 });
  check(true, `closing ${group} hides them again`);
  check(unfiltered.length === 0, `no request for the whole node list (${unfiltered.slice(0, 2).join(", ")})`);
  check(errors.length === 0, `no script errors (${errors.join("; ")})`);
} catch (e) {
  check(false, `${e.message.split("\n")[0]}`);
} finally {
  await finish(browser);
}
