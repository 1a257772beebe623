// The dashboard signed in with a tenant's token (real headless Chromium): it says who is
// signed in, shows the tenant's quota and what it holds, and lists that tenant's jobs and
// events only. Usage: node web/tests/tenant_view.mjs BASE_URL TENANT_TOKEN TENANT MY_JOB OTHER_JOB
import { check, finish, launch, openPage } from "./harness.mjs";

const [base, token, tenant, mine, other] = process.argv.slice(2);

const browser = await launch();
try {
  const { page, errors } = await openPage(browser);
  await page.goto(`${base}/?token=${token}`);
  check(page.url() === `${base}/`, `a tenant's token link signs in too (${page.url()})`);
  await page.waitForFunction((t) => document.querySelector("#whoami").textContent.includes(t), `tenant ${tenant}`, { timeout: 10000 });
  check(true, `the header says who is signed in (${await page.locator("#whoami").textContent()})`);
  await page.locator(`tr.job[data-job="${mine}"]`).waitFor({ timeout: 10000 });
  check(true, `its own job ${mine} is listed`);
  check(await page.locator(`tr.job[data-job="${other}"]`).count() === 0, `the other tenant's job ${other} is not`);
  await page.locator("#tenant").waitFor({ timeout: 10000 });
  const inUse = await page.locator("#tenant-in-use").textContent();
  check(/H100/.test(inUse), `what its tenant holds is shown (${inUse})`);
  const quota = await page.locator('tr.quota[data-model="H100"] td').allTextContents();
  check(quota[1] === "4" && quota[2] === "1" && quota[3] === "0",
    `its quota per model: quota 4, used 1, borrowed 0 (${quota.join(" | ")})`);
  const subjects = await page.locator(".events .subj").allTextContents();
  check(subjects.length > 0 && subjects.every((s) => s === `job/${mine}`),
    `the event feed has its own job's events only (${[...new Set(subjects)].join(", ")})`);
  check(errors.length === 0, `no script errors (${errors.join("; ")})`);
} catch (e) {
  check(false, `${e.message.split("\n")[0]}`);
} finally {
  await finish(browser);
}
