// What the dashboard's browser tests share: Debian's chromium, headless, launched through
// playwright-core, and checks that print "ok"/"FAIL" and set the exit code.
import { chromium } from "playwright-core";

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
}

// A page in a fresh context (its own cookies) at the dashboard's test size, and the script
// errors it raises.
export async function openPage(browser) {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  return { context, page, errors };
}

let failures = 0;
export function check(ok, what) {
  console.log(`${ok ? "ok" : "FAIL"} ${what}`);
  if (!ok) failures++;
}

// Closes the browser, prints the verdict and exits with it.
export async function finish(browser) {
  await browser.close();
  console.log(`${failures === 0 ? "all checks passed" : `${failures} failed`}`);
  process.exit(failures === 0 ? 0 : 1);
}
