// End-to-end test of the tradebox web console in a real browser: headless
// Debian chromium driven by playwright-core, against a real `tradebox serve`
// (real pipeline, sandbox and SQLite) on the fixture data, whose facts come
// from its expected.json.
//
//   TRADEBOX_URL=http://127.0.0.1:PORT/?token=T \
//   TRADEBOX_EXPECTED=tests/fixtures/cex-reporter/expected.json \
//   SCREENSHOT_DIR=target/e2e-screenshots node tests/e2e/console.test.mjs
//
// crates/cli/tests/console_e2e.rs starts the server and runs this. Steps run
// in order (they share one server and build on each other); the last line
// is "N passed, N failed" and the exit code is 1 when anything failed.

import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import path from "node:path";

const url = process.env.TRADEBOX_URL;
const shots = path.resolve(process.env.SCREENSHOT_DIR || "e2e-screenshots");
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";

function fail(message) {
  console.error(`E2E SETUP FAILED: ${message}`);
  console.log("0 passed, 1 failed");
  process.exit(1);
}

if (!url || !url.includes("?token=")) fail("set TRADEBOX_URL to the console address with ?token=");
if (!process.env.TRADEBOX_EXPECTED) fail("set TRADEBOX_EXPECTED to the fixture's expected.json");
const expected = JSON.parse(readFileSync(process.env.TRADEBOX_EXPECTED, "utf8"));
const trades = expected.trades.count;
// A count as the data page shows it: 1234567 -> "1,234,567".
const grouped = (n) => String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
if (!existsSync(chromiumPath)) {
  fail(`no browser at ${chromiumPath}: install Debian's chromium (apt-get install -y chromium), or set CHROMIUM`);
}
let chromium;
try {
  ({ chromium } = await import("playwright-core"));
} catch (e) {
  fail(`playwright-core is not installed (run \`npm ci\` in tests/e2e): ${e.message}`);
}
mkdirSync(shots, { recursive: true });

const origin = new URL(url).origin;
const browser = await chromium.launch({
  executablePath: chromiumPath,
  headless: true,
  args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const context = await browser.newContext({ viewport: { width: 1366, height: 900 }, deviceScaleFactor: 1 });
const page = await context.newPage();
page.setDefaultTimeout(60_000);

// Any script error or CSP violation on any page fails the run.
const problems = [];
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
page.on("console", (m) => {
  if (m.type() === "error" && /Content Security Policy|Uncaught|TypeError|ReferenceError/.test(m.text())) {
    problems.push(`console: ${m.text()}`);
  }
});

async function shot(name) {
  const file = path.join(shots, `${name}.png`);
  await page.screenshot({ path: file, fullPage: false });
  return file;
}

// --------------------------------------------------------------- helpers

const editor = () => page.locator("#editor .cm-content");

async function clearEditor() {
  await editor().click();
  await page.keyboard.press("Control+A");
  await page.keyboard.press("Backspace");
}

// Puts the command in the editor as a paste would, then runs it the way a
// person does: Enter for one line, Ctrl+Enter for several.
async function typeCommand(lines) {
  await clearEditor();
  await page.keyboard.insertText(lines.join("\n"));
  assert.equal(await editorText(), lines.join("\n"));
  await page.keyboard.press("Enter"); // sends, one line or several (as Slack does)
  await page.waitForFunction(() => window.tradebox.editor.getValue() === "");
}

const editorText = () => page.evaluate(() => window.tradebox.editor.getValue());

const botMessages = () => page.locator(".msg-bot .msg-content");

// The final reply of the n-th bot message (0 = the welcome message).
async function finalReply(index) {
  const reply = botMessages().nth(index).locator('.reply[data-kind="reply"]');
  await reply.waitFor();
  return reply;
}

// --------------------------------------------------------------- steps

const steps = [];
const step = (name, fn) => steps.push({ name, fn });

step("without the token the console answers 401 and a hint", async () => {
  const stranger = await browser.newContext();
  const p = await stranger.newPage();
  const response = await p.goto(`${origin}/`);
  assert.equal(response.status(), 401);
  assert.match(await p.textContent("body"), /needs its token/);
  const api = await p.request.get(`${origin}/api/v1/functions`);
  assert.equal(api.status(), 401);
  await stranger.close();
});

step("?token= logs in, sets the cookie and drops the token from the address", async () => {
  await page.goto(url);
  assert.equal(new URL(page.url()).search, "", "token removed from the address");
  await page.locator(".topbar h1", { hasText: "# console" }).waitFor();
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name.startsWith("tradebox_token"));
  assert.ok(session, "session cookie set");
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, "Strict");
  await editor().waitFor();
  await shot("01-console");
});

step("/analyze shows the placeholder, then the aligned table", async () => {
  await typeCommand([
    "/analyze import datetime",
    "end = datetime.datetime.now() + datetime.timedelta(seconds=1.5)",
    "while datetime.datetime.now() < end: pass",
    "result = load_trades(days=None).groupby('exchange')['amount'].sum()",
  ]);
  const message = botMessages().nth(1);
  await message.locator('.reply[data-kind="placeholder"]', { hasText: "Analyzing" }).waitFor();
  assert.match(await message.locator(".reply").innerText(), /⏳/, "hourglass emoji shown");
  const reply = await finalReply(1);
  assert.equal(await reply.locator(".b-header").innerText(), "Analysis Result");
  const table = await reply.locator("pre.b-result").innerText();
  for (const exchange of expected.trades.exchanges) assert.match(table, new RegExp(exchange));
  // Monospace and aligned: every row of the table has its number column at the same place.
  const font = await reply.locator("pre.b-result").evaluate((e) => getComputedStyle(e).fontFamily);
  assert.match(font, /mono|Menlo|Consolas/i);
  assert.equal(await message.locator('.reply[data-kind="placeholder"]').count(), 0, "placeholder replaced");
  assert.match(await reply.locator(".b-context").innerText(), /Executed in \d+ms by/);
  // Every answer says what data it is based on.
  assert.match(await reply.locator(".b-context").innerText(),
    /data to \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC \(snapshot v\d+\)/);
  await shot("02-analyze-table");
});

step("the welcome example's chart: one symbol's price as a line", async () => {
  await page.locator(".welcome-examples button.example").nth(1).click();
  assert.match(await editorText(), /asset='ALKIMI'/);
  await page.keyboard.press("Enter");
  const reply = await finalReply(2);
  const img = reply.locator(".b-image img");
  await img.waitFor();
  const [width, height, line] = await img.evaluate(async (i) => {
    if (!i.complete) await new Promise((r) => i.addEventListener("load", r, { once: true }));
    const canvas = document.createElement("canvas");
    [canvas.width, canvas.height] = [i.naturalWidth, i.naturalHeight];
    const g = canvas.getContext("2d");
    g.drawImage(i, 0, 0);
    const px = g.getImageData(0, 0, canvas.width, canvas.height).data;
    let blue = 0; // matplotlib's first line colour, #1f77b4
    for (let k = 0; k < px.length; k += 4) {
      if (px[k + 2] > 140 && px[k] < 110 && px[k + 1] < 170 && px[k + 1] > 60) blue += 1;
    }
    return [i.naturalWidth, i.naturalHeight, blue / (px.length / 4)];
  });
  assert.ok(width > 200 && height > 100, `image decoded (${width}x${height})`);
  // A line, not a block of colour: every symbol's prices together filled most of the plot.
  assert.ok(line > 0.002 && line < 0.12, `the line covers ${(line * 100).toFixed(1)}% of the image`);
  assert.match(await reply.locator("pre.b-result").innerText(), /^'?\d+ ALKIMI trades'?$/);
  await reply.scrollIntoViewIfNeeded();
  await shot("03-chart");
});

step("keyboard: Enter sends several lines, Shift+Enter adds one, arrows walk the history", async () => {
  await clearEditor();
  await page.keyboard.type("/analyze x = 1");
  await page.keyboard.press("Shift+Enter");
  await page.keyboard.type("result = x");
  assert.equal(await editorText(), "/analyze x = 1\nresult = x");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => window.tradebox.editor.getValue() === "");
  assert.equal(await (await finalReply(3)).locator("pre.b-result").innerText(), "1");
  // The history, newest first; the cursor lands at the end of a command.
  await page.keyboard.press("ArrowUp");
  assert.equal(await editorText(), "/analyze x = 1\nresult = x");
  await page.keyboard.press("Control+Home");
  await page.keyboard.press("ArrowUp");
  assert.match(await editorText(), /^\/analyze df = load_trades\(days=None, asset='ALKIMI'\)/);
  await page.keyboard.press("Control+Home");
  await page.keyboard.press("ArrowUp");
  assert.match(await editorText(), /^\/analyze import datetime/);
  for (const want of [/asset='ALKIMI'/, /^\/analyze x = 1\nresult = x$/, /^$/]) {
    await page.keyboard.press("Control+End");
    await page.keyboard.press("ArrowDown");
    assert.match(await editorText(), want);
  }
});

step("output with HTML is shown as text, never run", async () => {
  await typeCommand([
    "/analyze print('<img src=x onerror=\"window.__xss=1\">')",
    "result = '<script>window.__xss=2</script><b>not bold</b> *bold* <@U1>'",
  ]);
  const reply = await finalReply(4);
  const output = await reply.locator("pre.b-code").innerText();
  assert.match(output, /<img src=x onerror="window.__xss=1">/);
  assert.match(await reply.locator("pre.b-result").innerText(), /<script>window.__xss=2<\/script><b>not bold<\/b>/);
  assert.equal(await page.evaluate(() => window.__xss), undefined);
  assert.equal(await page.locator(".messages img[src='x']").count(), 0);
  assert.equal(await page.locator(".messages script").count(), 0);
  // mrkdwn from the server is rendered, and escaped.
  const rendered = await page.evaluate(() => {
    const div = document.createElement("div");
    div.append(window.tradebox.mrkdwn("*bold* `code` <@U123> :x: <javascript:alert(1)|click> <img src=x>"));
    return { html: div.innerHTML, text: div.textContent };
  });
  assert.match(rendered.html, /<b>bold<\/b>/);
  assert.match(rendered.html, /<code class="md-code">code<\/code>/);
  assert.match(rendered.html, /<span class="mention">@U123<\/span>/);
  assert.match(rendered.text, /❌/);
  assert.doesNotMatch(rendered.html, /<a |<img/);
  assert.match(rendered.text, /<img src=x>/);
});

step("state-changing fetches need the CSRF token", async () => {
  const status = await page.evaluate(async () => {
    const r = await fetch("/console/command", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text: "/tradebox help" }),
    });
    return [r.status, (await r.json()).csrf];
  });
  assert.deepEqual(status, [403, true]);
});

step("save, list and run a function with its Run button", async () => {
  await typeCommand([
    "/savefunc e2e_volume | Traded volume by exchange | result = load_trades(days=None).groupby('exchange')['amount'].sum().round(2)",
  ]);
  let reply = await finalReply(5);
  const saved = await reply.innerText();
  assert.match(saved, /✅/);
  assert.match(saved, /Saved Function/);
  assert.match(saved, /e2e_volume/);
  await typeCommand(["/listfuncs"]);
  reply = await finalReply(6);
  assert.match(await reply.locator(".b-header").innerText(), /All Saved Functions/);
  const run = reply.locator('button[data-action="run_func_e2e_volume"]');
  await run.waitFor();
  await shot("04-listfuncs");
  await run.click();
  reply = await finalReply(7);
  assert.equal(await reply.locator(".b-header").innerText(), "e2e_volume");
  assert.match(await reply.locator("pre.b-result").innerText(), /gateio/);
  assert.match(await reply.locator(".b-context").innerText(), /Used 1x/);
  await reply.scrollIntoViewIfNeeded();
  await shot("05-run-button");
  // A parameter the function's code never reads is said to change nothing.
  await typeCommand(["/runfunc e2e_volume days=14"]);
  reply = await finalReply(8);
  assert.match(await reply.innerText(), /does not read `?days`? from `?params`?: it was ignored/);
  assert.match(await reply.locator(".b-context").innerText(), /Parameters: days=14/);
  await reply.scrollIntoViewIfNeeded();
  await shot("05b-ignored-parameter");
});

// The console page, once it has shown the kept conversation again.
async function openConsole(how = () => page.goto(`${origin}/`)) {
  await how();
  await page.locator("#messages[data-restored]").waitFor({ state: "attached" });
  return botMessages().count();
}

step("the conversation survives a page switch and a reload; Clear forgets it", async () => {
  const count = await botMessages().count();
  const last = await botMessages().last().innerText();
  const typedBefore = await page.locator(".msg-user").nth(0).innerText();
  await page.goto(`${origin}/audit`);
  assert.equal(await openConsole(), count, "every reply is back after a page switch");
  assert.equal(await botMessages().last().innerText(), last);
  assert.equal(await page.locator(".msg-user").nth(0).innerText(), typedBefore);
  assert.equal(await openConsole(() => page.reload()), count, "and after a reload");
  assert.ok(await page.locator(".msg-bot .b-image img").count() >= 1, "figures are kept");
  await shot("05c-conversation-kept");
  await page.click("#clear-conversation");
  await page.waitForFunction(() => document.querySelectorAll(".msg-bot .msg-content").length === 1);
  assert.equal(await openConsole(() => page.reload()), 1, "only the welcome after Clear");
});

step("functions page: search, code, versions, run and delete", async () => {
  await page.goto(`${origin}/functions`);
  await page.fill("#fn-search", "volume");
  const item = page.locator('.fn-item[data-name="e2e_volume"]');
  await item.waitFor();
  await item.click();
  const detail = page.locator("#fn-detail");
  await detail.locator("h2", { hasText: "e2e_volume" }).waitFor();
  assert.match(await detail.locator("pre.fn-code").innerText(), /groupby\('exchange'\)/);
  assert.ok(await detail.locator("pre.fn-code .tok-string").count() > 0, "code is highlighted");
  assert.equal(await detail.locator("table tbody tr").count(), 1, "one version");
  await page.click("#fn-run");
  const output = page.locator('#fn-output .reply[data-kind="reply"]');
  await output.waitFor();
  assert.match(await output.innerText(), /Used 3x/); // the Run button, /runfunc, and this
  await detail.locator(".b-context", { hasText: "Used 3×" }).first().waitFor();
  await shot("06-functions");
  await page.click("#fn-delete");
  assert.match(await page.locator("#fn-delete").innerText(), /again/);
  await page.click("#fn-delete");
  await page.locator("#fn-output .reply", { hasText: "Deleted function" }).waitFor();
  await page.locator('.fn-item[data-name="e2e_volume"]').waitFor({ state: "detached" });
});

step("audit page: rows for every action, filters by outcome and user", async () => {
  await page.goto(`${origin}/audit`);
  const rows = page.locator("#audit-table tbody tr.entry");
  await rows.first().waitFor();
  // The time column says what it measures, and how it differs from a reply's "Executed in".
  const time = page.locator("#audit-table thead th", { hasText: "End to end" });
  assert.match(await time.getAttribute("title"), /Executed in.*code's own run time/);
  const actions = await page.locator("#audit-table tbody tr.entry td:nth-child(4)").allInnerTexts();
  for (const action of ["analyze", "savefunc", "run button", "delfunc"]) {
    assert.ok(actions.includes(action), `an audit row for ${action} (have ${[...new Set(actions)]})`);
  }
  const sources = await page.locator("#audit-table tbody tr.entry td:nth-child(3)").allInnerTexts();
  assert.ok(sources.every((s) => s === "console"), "console commands are audited with source console");
  await shot("07-audit");
  await page.selectOption('select[name="outcome"]', "ok");
  await page.waitForURL(/outcome=ok/);
  await page.waitForFunction(() => [...document.querySelectorAll("#audit-table tr.entry")]
    .every((r) => r.dataset.outcome === "ok"));
  assert.ok(await rows.count() >= 5);
  await page.fill('input[name="user"]', "nobody-at-all");
  await page.click('#audit-filters button[type="submit"]');
  await page.locator("#audit-table td.empty", { hasText: "No entries match" }).waitFor();
  // A row opens to show its code.
  await page.fill('input[name="user"]', "");
  await page.selectOption('select[name="outcome"]', "");
  await page.locator("#audit-table tr.entry").first().waitFor();
  await page.locator("#audit-table tr.entry", { hasText: "delfunc" }).first().click();
  await page.locator("#audit-table tr.expanded").waitFor();
});

step("data page: what is loaded, and an import moves the sandbox to the new snapshot", async () => {
  await page.goto(`${origin}/data`);
  const cards = page.locator("#data-cards");
  await cards.locator(".card-value", { hasText: grouped(trades) }).waitFor();
  const text = await cards.innerText();
  assert.ok(text.includes(expected.trades.first_date), `first trade date in ${text}`);
  assert.ok(text.includes(expected.trades.last_date), `last trade date in ${text}`);
  assert.match(text, new RegExp(`Balance snapshots\\s+${expected.snapshots.count}\\b`, "i"));
  assert.ok(await page.locator("#data-accounts tbody tr").count() >= 5);
  await shot("08-data");
  const csv = [
    "timestamp,exchange,account,symbol,side,amount,price,fee,trade_id",
    "2025-11-30T10:00:00Z,kraken,E2E,ALKIMI,buy,100,0.05,0.01,e2e-1",
    "2025-11-30T11:00:00Z,kraken,E2E,ALKIMI,sell,40,0.06,0.01,e2e-2",
  ].join("\n");
  await page.setInputFiles("#import-files", { name: "e2e-trades.csv", mimeType: "text/csv", buffer: Buffer.from(csv) });
  await page.click('#import-form button[type="submit"]');
  const done = page.locator("#import-results li", { hasText: "e2e-trades.csv" });
  await done.filter({ hasText: "published" }).waitFor();
  assert.match(await done.innerText(), /2 trades read, 2 new/);
  await cards.locator(".card-value", { hasText: grouped(trades + 2) }).waitFor();
  // A broken file is refused with the line and column named, and nothing changes.
  await page.setInputFiles("#import-files", {
    name: "broken.csv", mimeType: "text/csv",
    buffer: Buffer.from("timestamp,exchange,symbol,side,amount,price\nnot-a-time,kraken,ALKIMI,buy,1,1\n"),
  });
  await page.click('#import-form button[type="submit"]');
  const failed = page.locator("#import-results li.failed", { hasText: "broken.csv" });
  await failed.waitFor();
  assert.match(await failed.innerText(), /line 2/);
  await shot("09-data-import");
  const base = await openConsole();
  await typeCommand(["/analyze result = len(load_trades(days=None))"]);
  const reply = await finalReply(base);
  assert.equal((await reply.locator("pre.b-result").innerText()).trim(), String(trades + 2));
});

step("errors and refusals read as such", async () => {
  const base = await openConsole(); // the welcome and the kept conversation come first
  await typeCommand(["/analyze df = load_trades(days=None)", "result = df['no_such_column'].sum()"]);
  let reply = await finalReply(base);
  assert.match(await reply.getAttribute("class"), /is-error/);
  assert.match(await reply.innerText(), /❌ Error/);
  assert.match(await reply.locator("pre.b-code").innerText(), /KeyError/);
  await typeCommand(["/runfunc no_such_function"]);
  reply = await finalReply(base + 1);
  assert.match(await reply.innerText(), /not found/);
  assert.match(await reply.innerText(), /Only visible to you/);
  await typeCommand(["/tradebox help"]);
  reply = await finalReply(base + 2);
  assert.ok(await reply.locator("b code.md-code").count() >= 5, "command names bold and monospace");
  await shot("10-errors-and-help");
});

// --------------------------------------------------------------- run

let passed = 0;
let failed = 0;
for (const { name, fn } of steps) {
  const started = Date.now();
  try {
    await fn();
    if (problems.length) throw new Error(problems.splice(0).join("\n"));
    passed++;
    console.log(`ok - ${name} (${Date.now() - started} ms)`);
  } catch (e) {
    failed++;
    console.log(`not ok - ${name}\n  ${String(e.stack || e).split("\n").join("\n  ")}`);
    await shot(`failed-${String(passed + failed).padStart(2, "0")}`).catch(() => {});
  }
}
await browser.close();
console.log(`screenshots: ${shots}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
