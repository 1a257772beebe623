// The dashboard in real headless Chromium (Debian's, driven by playwright-core), against a
// running pool that tests/e2e/dashboard_test.py started. Usage:
//   node web/tests/dashboard.mjs BASE_URL ADMIN_TOKEN SCREENSHOT.png NODE [NODE...]
// Checks: the login form without a session; a wrong token refused; the token link exchanged
// for an HttpOnly cookie; every node and its GPUs shown; a submitted job appearing, running
// and finishing without a reload; its page with the log tail; a job that cannot fit shown
// with the reason it waits. Exits non-zero on the first failure.
import { check, finish, launch, openPage } from "./harness.mjs";

const [base, token, shot, ...nodes] = process.argv.slice(2);

async function submit(body) {
  const r = await fetch(`${base}/v1/jobs`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  return (await r.json()).id;
}

const browser = await launch();
try {
  const { context, page, errors } = await openPage(browser);

  await page.goto(`${base}/`);
  check(await page.locator("form input#token").count() === 1, "without a session, / shows the login form");
  await page.goto(`${base}/?token=not-the-token`);
  check((await page.content()).includes("not this server's admin token"), "a wrong token is refused");

  await page.goto(`${base}/?token=${token}`);
  check(page.url() === `${base}/`, `the token link redirects to / (${page.url()})`);
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "gpupool_token");
  check(session && session.httpOnly && session.sameSite === "Strict", "the session is an HttpOnly, SameSite=Strict cookie");
  check(!(await page.evaluate(() => document.cookie)).includes(token), "scripts cannot read the token");

  for (const n of nodes) {
    await page.locator(`.node[data-node="${n}"]`).waitFor({ timeout: 15000 });
  }
  check(true, `the fleet shows nodes ${nodes.join(", ")}`);
  const gpuCells = await page.locator(".node .gpu").count();
  check(gpuCells >= 2 * nodes.length, `every GPU is drawn (${gpuCells})`);
  const groups = await page.locator(".group h3").allTextContents();
  check(groups.length >= 2, `nodes grouped by provider and site (${groups.join(" | ")})`);

  const id = await submit({ command: ["sh", "-c", "echo hello-dashboard; sleep 2"], gpus: 1, name: "from-the-test" });
  const row = page.locator(`tr.job[data-job="${id}"]`);
  await row.waitFor({ timeout: 10000 });
  check(true, `the submitted job ${id} appears without a reload`);
  await page.locator(`tr.job[data-job="${id}"].state-running`).waitFor({ timeout: 10000 });
  check(true, `job ${id} shows as running`);
  await page.locator(`tr.job[data-job="${id}"].state-succeeded`).waitFor({ timeout: 20000 });
  check(true, `job ${id} shows as succeeded`);
  check(await page.locator(".events li").count() > 0, "the event feed lists events");
  // The job's GPU time shows in the cost table (read every 10 s), under its node's provider.
  await page.locator(`.usage-row[data-kind="job"]`).waitFor({ timeout: 15000 });
  const providers = await page.locator(`.usage-row[data-kind="job"]`).evaluateAll((rows) => rows.map((r) => r.dataset.provider));
  check(providers.some((p) => p === "dc" || p === "cloud"), `the cost table has the job's GPU time by provider (${providers.join(", ")})`);

  const big = await submit({ command: ["true"], gpus: 16, name: "too-big", tenant: "vision" });
  const bigRow = page.locator(`tr.job[data-job="${big}"]`);
  await bigRow.waitFor({ timeout: 10000 });
  await page.waitForFunction((b) => {
    const r = document.querySelector(`tr.job[data-job="${b}"] td.why`);
    return r && r.textContent.length > 0;
  }, big, { timeout: 10000 });
  const why = await page.locator(`tr.job[data-job="${big}"] td.why`).textContent();
  check(/cannot run|waiting/.test(why), `a job that cannot fit says why (${why})`);
  await page.screenshot({ path: shot, fullPage: true });

  await page.locator(`tr.job[data-job="${id}"] a`).click();
  await page.locator("#log").waitFor({ timeout: 5000 });
  await page.waitForFunction(() => document.querySelector("#log").textContent.includes("hello-dashboard"), null, { timeout: 10000 });
  check(true, "the job's page shows its log tail");
  check((await page.locator("#job-state").textContent()) === "succeeded", "the job's page shows its state");
  check(errors.length === 0, `no script errors (${errors.join("; ")})`);
} catch (e) {
  check(false, `${e.message.split("\n")[0]}`);
} finally {
  await finish(browser);
}
