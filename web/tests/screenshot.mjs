// Saves a picture of the dashboard for the docs: node web/tests/screenshot.mjs URL_WITH_TOKEN OUT.png
import { launch } from "./harness.mjs";

const [url, out] = process.argv.slice(2);
const browser = await launch();
const page = await browser.newPage({ viewport: { width: 1400, height: 860 } });
await page.goto(url);
await page.locator(".node").first().waitFor({ timeout: 15000 });
await page.waitForTimeout(2500); // a load refresh or two
await page.screenshot({ path: out, fullPage: true });
await browser.close();
