// End-to-end tests of the web console in headless chromium, against the real
// daemon and the real test SMTP server that run.sh started. Each test drives
// the page the way a user does and checks what the page shows against the
// daemon's own answers (files on disk, `mailplug validate`, the SMTP server).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHmac, randomUUID } from "node:crypto";
import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync, readdirSync, writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run tests/console/run.sh`);
  return v;
};
const URL_ = env("CONSOLE_URL");
const PUBLIC = env("CONSOLE_PUBLIC");
const CONFIG = env("CONSOLE_CONFIG");
const BIN = env("CONSOLE_BIN");
const TOKEN = env("CONSOLE_TOKEN");
const SECRET = env("CONSOLE_WEBHOOK_SECRET");
const OUT = env("CONSOLE_OUT");
const TMP = env("CONSOLE_TMP");
const WAIT = { timeout: 20_000 };

let browser;
let context;
let page;

async function shot(name, p = page) {
  await p.screenshot({ path: join(OUT, `${name}.png`), fullPage: true });
}

// How far the page scrolls sideways, and what sticks out past the viewport's
// right edge: the deepest elements, and text that overflows its box (named
// in the failure message).
async function sideways(p) {
  return p.evaluate(() => {
    const width = document.documentElement.clientWidth;
    const overflow = document.documentElement.scrollWidth - width;
    const past = (r) => r.width > 0 && r.right > width + 0.5;
    const name = (el) => el.tagName.toLowerCase() + (el.id ? `#${el.id}` : "") + (typeof el.className === "string" && el.className.trim() ? `.${el.className.trim().split(/\s+/).join(".")}` : "");
    const out = [];
    for (const el of document.querySelectorAll("body *")) {
      if (past(el.getBoundingClientRect()) && ![...el.children].some((c) => past(c.getBoundingClientRect()))) {
        out.push(`${name(el)} ends at ${Math.round(el.getBoundingClientRect().right)}px`);
      }
    }
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let t = walker.nextNode(); t; t = walker.nextNode()) {
      const range = document.createRange();
      range.selectNodeContents(t);
      const r = range.getBoundingClientRect();
      let clipped = false;
      for (let a = t.parentElement; a && a !== document.body; a = a.parentElement) {
        if (getComputedStyle(a).overflowX !== "visible") clipped = true;
      }
      if (past(r) && !clipped) out.push(`text "${t.textContent.trim().slice(0, 40)}" in ${name(t.parentElement)} ends at ${Math.round(r.right)}px`);
    }
    return { overflow, culprits: out.slice(0, 8) };
  });
}

// Text whose colour fails WCAG 2 AA contrast against what is behind it:
// 4.5:1, or 3:1 for large text (24 px, or 18.66 px bold). The background is
// the stack of ancestors' background colours composited over white; an
// ancestor's opacity fades the text towards that background. Disabled
// controls and hidden text are exempt, as in WCAG.
async function lowContrast(p) {
  return p.evaluate(() => {
    const rgba = (c) => {
      const m = c.match(/rgba?\(([^)]+)\)/);
      if (!m) return [0, 0, 0, 0];
      const v = m[1].split(/[\s,/]+/).filter(Boolean).map(Number);
      return [v[0], v[1], v[2], v.length > 3 ? v[3] : 1];
    };
    const over = (top, under) => {
      const a = top[3];
      return [0, 1, 2].map((i) => top[i] * a + under[i] * (1 - a)).concat(1);
    };
    const lum = (c) => {
      const ch = c.slice(0, 3).map((v) => {
        const s = v / 255;
        return s <= 0.04045 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
      });
      return 0.2126 * ch[0] + 0.7152 * ch[1] + 0.0722 * ch[2];
    };
    const ratio = (a, b) => {
      const [hi, lo] = [lum(a), lum(b)].sort((x, y) => y - x);
      return (hi + 0.05) / (lo + 0.05);
    };
    const out = [];
    const seen = new Set();
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let t = walker.nextNode(); t; t = walker.nextNode()) {
      const el = t.parentElement;
      if (!t.textContent.trim() || !el || seen.has(el)) continue;
      seen.add(el);
      if (!el.checkVisibility({ checkOpacity: true, checkVisibilityCSS: true })) continue;
      if (el.closest(":disabled, [aria-hidden='true'], option")) continue;
      const range = document.createRange();
      range.selectNodeContents(t);
      const r = range.getBoundingClientRect();
      if (r.width === 0 || r.height === 0) continue;
      const chain = [];
      let opacity = 1;
      for (let a = el; a; a = a.parentElement) {
        chain.push(a);
        opacity *= Number(getComputedStyle(a).opacity);
      }
      let bg = [255, 255, 255, 1];
      for (const a of chain.reverse()) bg = over(rgba(getComputedStyle(a).backgroundColor), bg);
      const style = getComputedStyle(el);
      const fg = rgba(style.color);
      const ink = over([fg[0], fg[1], fg[2], fg[3] * opacity], bg);
      const size = parseFloat(style.fontSize);
      const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
      const need = large ? 3 : 4.5;
      const got = ratio(ink, bg);
      if (got < need) {
        const name = el.tagName.toLowerCase() + (el.id ? `#${el.id}` : "") + (typeof el.className === "string" && el.className.trim() ? `.${el.className.trim().split(/\s+/).join(".")}` : "");
        out.push(`${name} "${t.textContent.trim().slice(0, 30)}" ${got.toFixed(2)}:1 (needs ${need}:1)`);
      }
    }
    return out;
  });
}

function row(name) {
  return page.locator(`tr[data-connection="${name}"]`);
}

// Closes the action dialog with its × button (Escape is tested on its own:
// in a search field it first clears the field).
async function closeDialog() {
  await page.click("#action-dialog [data-close]");
  await page.locator("#action-dialog").waitFor({ state: "hidden", ...WAIT });
}

before(async () => {
  mkdirSync(OUT, { recursive: true });
  browser = await chromium.launch({
    executablePath: env("CONSOLE_CHROMIUM"),
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: URL_ });
  page = await context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
});

after(async () => {
  await browser?.close();
});

test("asks for the admin token once, refuses a wrong one, then lists every connection of the config", async () => {
  await page.goto(URL_);
  const dialog = page.locator("#token-dialog");
  await dialog.waitFor({ state: "visible", ...WAIT });
  await shot("desktop-token");
  await page.fill("#token-input", "wrong-token");
  await page.press("#token-input", "Enter");
  await page.locator("#token-error", { hasText: "refused" }).waitFor(WAIT);
  assert.match(await page.textContent("#token-error"), /token was refused \(401\)/);
  await page.fill("#token-input", TOKEN);
  await page.press("#token-input", "Enter");
  await dialog.waitFor({ state: "hidden", ...WAIT });
  await page.locator("tr[data-connection]").first().waitFor(WAIT);
  assert.equal(await page.evaluate(() => sessionStorage.getItem("mailplug.adminToken")), TOKEN);

  // Every connection file of the config is one row, with its fields.
  const names = await page.locator("tr[data-connection]").evaluateAll((rows) => rows.map((r) => r.dataset.connection));
  const expected = readdirSync(CONFIG, { recursive: true })
    .filter((f) => String(f).endsWith(".yaml"))
    .map((f) => readFileSync(join(CONFIG, String(f)), "utf8"))
    .filter((text) => /^kind: Connection$/m.test(text))
    .map((text) => text.match(/^name: (\S+)$/m)[1]);
  assert.ok(expected.length >= 4, `the examples are in the config: ${expected}`);
  assert.deepEqual(names.sort(), expected.sort());
  const corp = row("corp-relay");
  assert.equal(await corp.locator(".display").textContent(), "Corporate SMTP Relay");
  assert.equal(await corp.locator(".server").textContent(), "smtp.example.com:587");
  assert.match(await corp.locator(".source").textContent(), /examples\/corp-relay\.yaml:\d+$/);
  assert.match(await row("sendgrid-marketing").locator(".provider").textContent(), /^sendgrid \d+\.\d+\.\d+/);
  const good = row("good");
  assert.equal(await good.locator(".display").textContent(), "Good Relay");
  assert.match(await good.locator(".provider").textContent(), /^custom-smtp \d+\.\d+\.\d+/);
  const port = readFileSync(join(CONFIG, "good.yaml"), "utf8").match(/port: (\d+)/)[1];
  assert.equal(await good.locator(".server").textContent(), `localhost:${port}`);
  assert.equal(await good.locator(".security").textContent(), "starttls");
  assert.match(await good.locator(".from").textContent(), /Console Tests.*sender@example\.test/);
  assert.deepEqual(await good.locator(".workspaces .chip").allTextContents(), ["marketing", "product"]);
  assert.equal(await good.locator(".source").textContent(), `${join(CONFIG, "good.yaml")}:3`);
  assert.equal(await good.locator(".live-status").textContent(), "not checked yet");
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `the list scrolls sideways by ${overflow}px at 1280 px`);

  // A reload keeps the token: it is asked once per tab.
  await page.reload();
  await page.locator("tr[data-connection]").first().waitFor(WAIT);
  assert.equal(await page.locator("#token-dialog").isVisible(), false);
  await shot("desktop-connections");
});

test("the page and its files are served without the token, with their types; the console's API is not", async () => {
  for (const [path, type] of [["/", "text/html"], ["/console/app.js", "text/javascript"], ["/console/style.css", "text/css"]]) {
    const r = await fetch(`${URL_}${path}`);
    assert.equal(r.status, 200, path);
    assert.ok(r.headers.get("content-type").startsWith(type), `${path}: ${r.headers.get("content-type")}`);
    assert.match(r.headers.get("content-security-policy"), /default-src 'self'/);
  }
  for (const path of ["/v1/console/state", "/v1/connections"]) {
    assert.equal((await fetch(`${URL_}${path}`)).status, 401, path);
    assert.equal((await fetch(`${URL_}${path}`, { headers: { Authorization: "Bearer wrong" } })).status, 401, path);
  }
  const auth = { Authorization: `Bearer ${TOKEN}`, "Content-Type": "application/json" };
  // The validator reads only the posted text: a kind: Plugin document (which
  // names a file to read) is refused, and nothing is written.
  const plugin = await fetch(`${URL_}/v1/console/validate`, {
    method: "POST", headers: auth,
    body: JSON.stringify({ path: "x.yaml", text: "api_version: mailplug/v1\nkind: Plugin\nid: x\npath: /etc/passwd\nsha256: '00'\n" }),
  });
  assert.equal(plugin.status, 422);
  assert.match((await plugin.json()).error, /kind: Connection/);
  // A foreign Origin may not use it either.
  const foreign = await fetch(`${URL_}/v1/console/validate`, {
    method: "POST", headers: { ...auth, Origin: "https://evil.example" }, body: JSON.stringify({ path: "x.yaml", text: "" }),
  });
  assert.equal(foreign.status, 403);
});

test("Send Test Email is accepted for the good connection, with a queue id, and the row shows it live", async () => {
  await row("good").locator('[data-action="test"]').click();
  await page.fill("#test-to", "someone@example.test");
  await page.click('#action-body button[type="submit"]');
  const outcome = page.locator("#action-body .outcome");
  await outcome.waitFor(WAIT);
  assert.equal(await outcome.getAttribute("data-class"), "accepted");
  assert.equal(await outcome.locator('[data-field="stage"]').textContent(), "DATA");
  assert.equal(await outcome.locator('[data-field="reply_code"]').textContent(), "250");
  const queueId = (await outcome.locator('[data-field="queue_id"]').textContent()).trim();
  assert.notEqual(queueId, "–");
  // The SMTP server really spooled it under that id.
  const spooled = JSON.parse(readFileSync(join(TMP, "spool", `${queueId}.json`), "utf8"));
  assert.deepEqual(spooled.rcpt_tos, ["someone@example.test"]);
  await shot("desktop-test-accepted");
  await closeDialog();
  await row("good").locator(".live-status .class", { hasText: "accepted" }).waitFor(WAIT);
  assert.match(await row("good").locator(".live-status").textContent(), /accepted.*test · \d+ s ago/);
});

test("Send Test Email with the wrong password shows auth_failed at AUTH with its hint", async () => {
  await row("wrong-password").locator('[data-action="test"]').click();
  await page.fill("#test-to", "someone@example.test");
  await page.press("#test-to", "Enter");
  const outcome = page.locator("#action-body .outcome");
  await outcome.waitFor(WAIT);
  assert.equal(await outcome.getAttribute("data-class"), "auth_failed");
  assert.equal(await outcome.locator('[data-field="stage"]').textContent(), "AUTH");
  assert.equal(await outcome.locator('[data-field="reply_code"]').textContent(), "535");
  assert.equal(await outcome.locator('[data-field="enhanced_status"]').textContent(), "5.7.8");
  assert.match(await outcome.locator('[data-field="hint"]').textContent(), /check smtp\.username and the password secret/);
  assert.doesNotMatch(await page.content(), /not-the-password/);
  await shot("desktop-test-auth-failed");
  await closeDialog();
  await row("wrong-password").locator(".live-status .class", { hasText: "auth_failed" }).waitFor(WAIT);
  assert.match(await row("wrong-password").locator(".live-status .hint").textContent(), /check smtp\.username/);
});

test("Check shows every stage with ✓/✗ and timings", async () => {
  await row("wrong-password").locator('[data-action="check"]').click();
  await page.click('#action-body button[type="submit"]');
  await page.locator("#action-body .stages").waitFor(WAIT);
  const stages = await page.locator("#action-body tr.stage").evaluateAll((rows) =>
    rows.map((r) => [r.dataset.stage, r.dataset.status, r.querySelector(".mark").textContent, r.querySelector(".num").textContent]));
  const byStage = Object.fromEntries(stages.map(([s, st, mark]) => [s, [st, mark]]));
  assert.deepEqual(byStage.dns, ["ok", "✓"]);
  assert.deepEqual(byStage.tls, ["ok", "✓"]);
  assert.deepEqual(byStage.auth, ["failed", "✗"]);
  for (const [, , , ms] of stages) assert.match(ms, /^\d+\.\d ms$/);
  assert.equal(await page.locator("#action-body .outcome").getAttribute("data-class"), "auth_failed");
  await shot("desktop-check");
  await closeDialog();
});

test("the Webhooks dialog shows the connection's endpoint URL and copies it", async () => {
  await row("good").locator('[data-action="webhooks"]').click();
  const url = page.locator("#webhook-url");
  await url.waitFor(WAIT);
  assert.equal(await url.inputValue(), "https://hooks.example.test/webhooks/good");
  await page.click("#copy-url");
  await page.locator(".copied", { hasText: "Copied" }).waitFor(WAIT);
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), "https://hooks.example.test/webhooks/good");
  assert.match(await page.textContent("#action-body"), /webhook\.secret configured/);
  assert.match(await page.textContent("#action-body"), /whsec_/);
  await page.locator("#webhook-refusals .state.empty", { hasText: "No refused requests" }).waitFor(WAIT);
  await shot("desktop-webhooks");
  await closeDialog();
});

function signedWebhook(body) {
  const id = `msg_${randomUUID()}`;
  const ts = Math.floor(Date.now() / 1000).toString();
  const key = Buffer.from(SECRET.replace(/^whsec_/, ""), "base64");
  const sig = createHmac("sha256", key).update(`${id}.${ts}.${body}`).digest("base64");
  return { "content-type": "application/json", "webhook-id": id, "webhook-timestamp": ts, "webhook-signature": `v1,${sig}` };
}

test("a webhook posted to the daemon appears in the Events view without a reload, and the filters apply", async () => {
  await page.evaluate(() => { window.__noReload = true; });
  await row("good").locator('[data-action="events"]').click();
  await page.locator("#action-body .event-list").waitFor(WAIT);
  await page.locator("#action-body .event-list .state.empty").waitFor(WAIT);
  const recipient = `bounce-${Date.now()}@example.org`;
  const body = JSON.stringify({ kind: "bounced", bounce_class: "hard", recipient, occurred_at: new Date().toISOString().replace(/\.\d+Z$/, "Z") });
  const response = await fetch(`${PUBLIC}/webhooks/good`, { method: "POST", headers: signedWebhook(body), body });
  assert.equal(response.status, 200, await response.text());
  const eventRow = page.locator("#action-body tr[data-event]", { hasText: recipient });
  await eventRow.waitFor(WAIT);
  assert.equal(await eventRow.getAttribute("data-kind"), "bounced");
  assert.equal(await page.evaluate(() => window.__noReload), true);
  // A second, different kind; then the kind filter hides the bounce.
  const other = `ok-${Date.now()}@example.org`;
  const body2 = JSON.stringify({ kind: "delivered", recipient: other, occurred_at: new Date().toISOString().replace(/\.\d+Z$/, "Z") });
  assert.equal((await fetch(`${PUBLIC}/webhooks/good`, { method: "POST", headers: signedWebhook(body2), body: body2 })).status, 200);
  await page.locator("#action-body tr[data-event]", { hasText: other }).waitFor(WAIT);
  await page.selectOption("#ev-kind", "delivered");
  await page.locator("#action-body tr[data-event]", { hasText: recipient }).waitFor({ state: "detached", ...WAIT });
  assert.equal(await page.locator("#action-body tr[data-event]").count(), 1);
  await page.selectOption("#ev-kind", "");
  await page.fill("#ev-rcpt", recipient);
  await page.locator("#action-body tr[data-event]", { hasText: other }).waitFor({ state: "detached", ...WAIT });
  assert.equal(await page.locator("#action-body tr[data-event]").count(), 1);
  await shot("desktop-events");
  await closeDialog();
  // The Webhooks dialog lists it too, as verified and stored.
  await row("good").locator('[data-action="webhooks"]').click();
  await page.locator("#action-body .recent tr[data-event]", { hasText: recipient }).waitFor(WAIT);
  await closeDialog();
});

test("refused webhook requests appear in the Webhooks dialog, newest first, without a reload", async () => {
  await page.evaluate(() => { window.__noReload = true; });
  await row("good").locator('[data-action="webhooks"]').click();
  await page.locator("#webhook-refusals .state.empty").waitFor(WAIT);
  // A forged signature: 401, nothing stored.
  const body = JSON.stringify({ kind: "bounced", recipient: "forged@example.org", occurred_at: new Date().toISOString() });
  const forged = { ...signedWebhook(body), "webhook-signature": "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" };
  assert.equal((await fetch(`${PUBLIC}/webhooks/good`, { method: "POST", headers: forged, body })).status, 401);
  const unauthorized = page.locator('#webhook-refusals tr[data-reason="unauthorized"]');
  await unauthorized.waitFor(WAIT);
  assert.equal(await unauthorized.getAttribute("data-status"), "401");
  // Correctly signed but not a JSON document: 400 malformed, listed above the 401.
  const bad = "{not json";
  assert.equal((await fetch(`${PUBLIC}/webhooks/good`, { method: "POST", headers: signedWebhook(bad), body: bad })).status, 400);
  await page.locator('#webhook-refusals tr[data-reason="malformed"]').waitFor(WAIT);
  const reasons = await page.locator("#webhook-refusals tbody tr").evaluateAll((rows) => rows.map((r) => [r.dataset.reason, r.dataset.status]));
  assert.deepEqual(reasons, [["malformed", "400"], ["unauthorized", "401"]]);
  const cells = await page.locator('#webhook-refusals tr[data-reason="malformed"] td').allTextContents();
  assert.match(cells[0], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.match(cells[3], /malformed payload/);
  assert.match(await page.textContent("#action-body"), /unauthorized: [1-9]/);
  assert.equal(await page.evaluate(() => window.__noReload), true);
  // Neither request stored an event.
  const stored = await (await fetch(`${URL_}/v1/events?connection=good&recipient=forged%40example.org`, { headers: { Authorization: `Bearer ${TOKEN}` } })).json();
  assert.equal(stored.events.length, 0);
  await shot("desktop-webhooks-refused");
  await closeDialog();
});

test("editing a connection file on disk updates its row without a page reload", async () => {
  await page.evaluate(() => { window.__noReload = true; });
  const file = join(CONFIG, "good.yaml");
  const original = readFileSync(file, "utf8");
  writeFileSync(file, original.replace("display_name: Good Relay", "display_name: Good Relay (edited)").replace("workspaces: [marketing, product]", "workspaces: [marketing, product, billing]"));
  await row("good").locator(".display", { hasText: "Good Relay (edited)" }).waitFor(WAIT);
  assert.deepEqual(await row("good").locator(".workspaces .chip").allTextContents(), ["marketing", "product", "billing"]);
  assert.equal(await page.evaluate(() => window.__noReload), true);
});

test("a broken file shows its file:line error in Config health exactly as validate prints it, and its row keeps the last good version", async () => {
  const file = join(CONFIG, "good.yaml");
  const before = readFileSync(file, "utf8");
  const genBefore = Number(await page.evaluate(() => fetch("/v1/status", { headers: { Authorization: `Bearer ${sessionStorage.getItem("mailplug.adminToken")}` } }).then((r) => r.json()).then((s) => s.generation)));
  writeFileSync(file, before.replace("display_name: Good Relay (edited)", "display_name: Broken Now").replace("security: starttls", "security: starttsl"));
  await page.click('nav a[data-view="health"]');
  await page.locator("#health .diag.error").first().waitFor(WAIT);
  const validate = spawnSync(BIN, ["validate", CONFIG], { encoding: "utf8" });
  assert.equal(validate.status, 78, validate.stdout + validate.stderr);
  const expected = validate.stdout.trim().split("\n").filter((l) => /: (error|warning): /.test(l));
  assert.ok(expected.some((l) => l.startsWith(`${file}:`) && l.includes("/smtp/security")), validate.stdout);
  const shown = await page.locator("#health .diag .line").allTextContents();
  assert.deepEqual(shown, expected);
  assert.match(await page.locator("#health .diag.error .loc").first().textContent(), new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:\\d+:\\d+$`));
  assert.match(await page.textContent("#health"), /did you mean `starttls`/);
  assert.equal(await page.locator(`#health tr[data-file="${file}"] td`).nth(1).textContent(), "last good version");
  assert.equal(await page.textContent("#reload-result"), "partial");
  const errorCount = expected.filter((l) => l.includes(": error: ")).length;
  assert.equal(await page.textContent("#health-badge"), `${errorCount} error${errorCount === 1 ? "" : "s"}`);
  await shot("desktop-health-broken");
  // The connection keeps running on its last good version.
  await page.click('nav a[data-view="connections"]');
  assert.equal(await row("good").locator(".display").textContent(), "Good Relay (edited)");
  await row("good").locator('[data-action="test"]').click();
  await page.fill("#test-to", "still-works@example.test");
  await page.press("#test-to", "Enter");
  await page.locator('#action-body .outcome[data-class="accepted"]').waitFor(WAIT);
  await closeDialog();
  // Fixed again: health is green, the row takes the new version.
  writeFileSync(file, before);
  await page.click('nav a[data-view="health"]');
  await page.locator("#health .summary.good").waitFor(WAIT);
  // The live configuration never changed (the broken version never ran, the
  // fixed one equals the last good one), so neither did the generation.
  assert.equal(Number(await page.textContent("#generation")), genBefore);
  assert.equal(await page.locator(`#health tr[data-file="${file}"] td`).nth(1).textContent(), "current");
  assert.equal(await page.textContent("#reload-result"), "ok");
  await shot("desktop-health-ok");
  await page.click('nav a[data-view="connections"]');
});

test("the new-connection form reports a bad port and produces YAML that mailplug validate accepts", async () => {
  await page.click('nav a[data-view="new"]');
  await page.locator("#validation [data-valid]").waitFor(WAIT);
  await page.fill("#f-name", "console-made");
  await page.fill("#f-port", "70000");
  await page.locator("#port-error", { hasText: "error" }).waitFor(WAIT);
  assert.equal(await page.getAttribute("#f-port", "aria-invalid"), "true");
  await page.locator('#validation [data-valid="false"]').waitFor(WAIT);
  assert.match(await page.textContent("#validation .validate-lines"), /^connections\/console-made\.yaml:\d+:\d+: error: \/smtp\/port: /m);
  await shot("desktop-new-bad-port");
  await page.fill("#f-port", "587");
  await page.selectOption("#f-security", "tls");
  await page.locator('#validation [data-valid="false"]').waitFor(WAIT);
  assert.match(await page.textContent("#validation"), /\/smtp\/port|\/smtp\/security/);
  await page.selectOption("#f-security", "starttls");
  await page.fill("#f-workspaces", "marketing, billing");
  await page.locator('#validation [data-valid="true"]').waitFor(WAIT);
  assert.equal(await page.locator("#port-error").textContent(), "");
  const yaml = await page.textContent("#yaml-out");
  await page.click("#copy-yaml");
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), yaml);
  const [download] = await Promise.all([page.waitForEvent("download", WAIT), page.click("#download-yaml")]);
  assert.equal(download.suggestedFilename(), "console-made.yaml");
  assert.equal(readFileSync(await download.path(), "utf8"), yaml);
  // What the user commits is what `mailplug validate` accepts.
  const dir = join(TMP, "made");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "console-made.yaml"), yaml);
  const out = execFileSync(BIN, ["validate", dir], { encoding: "utf8" });
  assert.match(out, /1 valid connection, 0 errors/);
  await shot("desktop-new-valid");
});

test("the new-connection form builds a provider connection from the plugin's options schema", async () => {
  await page.click('nav a[data-view="new"]');
  await page.locator('#f-provider[data-loaded="true"]').waitFor({ state: "attached", ...WAIT });
  // Every installed plugin is offered, with the daemon's own list.
  const listed = await fetch(`${URL_}/v1/console/providers`, { headers: { Authorization: `Bearer ${TOKEN}` } }).then((r) => r.json());
  const ids = listed.providers.map((p) => p.id);
  for (const id of ["postmark", "mailgun", "sendgrid", "amazon-ses"]) assert.ok(ids.includes(id), ids.join(","));
  const offered = await page.locator("#f-provider option").evaluateAll((os) => os.map((o) => o.value));
  assert.deepEqual(offered.slice(1).sort(), ids.filter((id) => id !== "custom-smtp").sort());
  assert.equal(offered[0], "custom-smtp");

  await page.selectOption("#f-provider", "postmark");
  // The option fields come from the schema: message_stream, labelled, with its description.
  const stream = page.locator("#f-opt-message_stream");
  await stream.waitFor(WAIT);
  assert.equal(await page.locator('label[for="f-opt-message_stream"]').textContent(), "message_stream");
  assert.match(await page.textContent("#opt-message_stream-hint"), /X-PM-Message-Stream/);
  assert.ok(await page.locator("#f-host").isHidden());
  await page.fill("#f-name", "console-postmark");
  await page.fill("#f-username", "server-token-0000");
  await page.fill("#f-password_ref", "POSTMARK_TOKEN");
  // A value against the schema's pattern is reported at that field.
  await stream.fill("has spaces");
  await page.locator("#opt-message_stream-error", { hasText: "error" }).waitFor(WAIT);
  assert.equal(await stream.getAttribute("aria-invalid"), "true");
  await page.locator('#validation [data-valid="false"]').waitFor(WAIT);
  assert.match(await page.textContent("#validation .validate-lines"), /^connections\/console-postmark\.yaml:\d+:\d+: error: \/options\/message_stream/m);
  await shot("desktop-new-provider-bad-option");
  await stream.fill("broadcast");
  await page.locator('#validation [data-valid="true"]').waitFor(WAIT);
  assert.equal(await page.locator("#opt-message_stream-error").textContent(), "");
  const yaml = await page.textContent("#yaml-out");
  assert.match(yaml, /^provider: "postmark"$/m);
  assert.match(yaml, /^options:\n {2}"message_stream": "broadcast"$/m);
  assert.doesNotMatch(yaml, /host:/);
  const dir = join(TMP, "made-provider");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "console-postmark.yaml"), yaml);
  const out = execFileSync(BIN, ["validate", dir], { encoding: "utf8" });
  assert.match(out, /1 valid connection, 0 errors/);
  await shot("desktop-new-provider");

  // An enum option is a select of its values; a list option is comma-separated text.
  await page.selectOption("#f-provider", "mailgun");
  const region = page.locator("#f-opt-region");
  await region.waitFor(WAIT);
  assert.equal(await region.evaluate((el) => el.tagName), "SELECT");
  assert.deepEqual(await region.locator("option").evaluateAll((os) => os.map((o) => o.value)), ["", "us", "eu"]);
  assert.equal(await page.locator("#f-opt-message_stream").count(), 0);
  await page.fill("#f-name", "console-mailgun");
  await page.fill("#f-username", "postmaster@mg.example.org");
  await region.selectOption("eu");
  await page.fill("#f-opt-tags", "news, weekly");
  await page.locator('#validation [data-valid="true"]').waitFor(WAIT);
  const mg = await page.textContent("#yaml-out");
  assert.match(mg, /^ {2}"region": "eu"$/m);
  assert.match(mg, /^ {2}"tags": \["news", "weekly"\]$/m);
  // Too many tags (maxItems 3) is flagged at the tags field.
  await page.fill("#f-opt-tags", "a, b, c, d");
  await page.locator("#opt-tags-error", { hasText: "error" }).waitFor(WAIT);
  await page.fill("#f-opt-tags", "news");
  await page.locator('#validation [data-valid="true"]').waitFor(WAIT);
  const mgDir = join(TMP, "made-mailgun");
  mkdirSync(mgDir, { recursive: true });
  writeFileSync(join(mgDir, "console-mailgun.yaml"), await page.textContent("#yaml-out"));
  assert.match(execFileSync(BIN, ["validate", mgDir], { encoding: "utf8" }), /1 valid connection, 0 errors/);
  await shot("desktop-new-provider-enum");

  // Back to Custom SMTP: its fields return.
  await page.selectOption("#f-provider", "custom-smtp");
  await page.locator("#f-host").waitFor(WAIT);
  assert.ok(await page.locator("#provider-options").isHidden());
});

test("keyboard-only navigation reaches every action, opens a dialog and returns focus", async () => {
  await page.evaluate(() => { location.hash = "#connections"; });
  await page.reload();
  await page.locator("tr[data-connection]").first().waitFor(WAIT);
  await page.evaluate(() => document.activeElement?.blur());
  const reached = new Set();
  for (let i = 0; i < 80; i++) {
    await page.keyboard.press("Tab");
    const id = await page.evaluate(() => {
      const el = document.activeElement;
      return el?.id || (el?.dataset?.view ? `nav-${el.dataset.view}` : el?.textContent?.trim());
    });
    reached.add(id);
  }
  const rows = await page.locator("tr[data-connection]").evaluateAll((all) => all.map((r) => r.dataset.connection));
  assert.ok(rows.length >= 6);
  for (const name of rows) {
    for (const action of ["test", "check", "webhooks", "events"]) {
      assert.ok(reached.has(`act-${action}-${name}`), `${action}-${name} not reachable by Tab: ${[...reached].join(", ")}`);
    }
  }
  for (const view of ["connections", "workspaces", "health", "new"]) assert.ok(reached.has(`nav-${view}`), view);
  // The focused element is visibly outlined.
  await page.focus("#act-check-good");
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  assert.equal(outline, "solid");
  // Enter opens the dialog with focus inside; Escape closes it and focus returns.
  await page.keyboard.press("Enter");
  await page.locator("#action-dialog").waitFor({ state: "visible", ...WAIT });
  assert.equal(await page.evaluate(() => document.getElementById("action-dialog").contains(document.activeElement)), true);
  await page.keyboard.press("Escape");
  await page.locator("#action-dialog").waitFor({ state: "hidden", ...WAIT });
  assert.equal(await page.evaluate(() => document.activeElement.id), "act-check-good");
  // The close event comes after the dialog is gone: focus moved on by then
  // stays where it went instead of being pulled back to the opener.
  await page.keyboard.press("Enter");
  await page.locator("#action-dialog").waitFor({ state: "visible", ...WAIT });
  const kept = await page.evaluate(async () => {
    const dialog = document.getElementById("action-dialog");
    const closed = new Promise((resolve) => dialog.addEventListener("close", resolve, { once: true }));
    dialog.close();
    document.querySelector('nav a[data-view="health"]').focus();
    await closed;
    await new Promise((resolve) => setTimeout(resolve, 0));
    return document.activeElement.dataset.view;
  });
  assert.equal(kept, "health");
  // Views are links: Enter on one switches to it.
  await page.focus('nav a[data-view="workspaces"]');
  await page.keyboard.press("Enter");
  await page.locator("#workspaces .card").first().waitFor(WAIT);
});

test("the Workspaces view lists each workspace's connections in priority order with its suppression count", async () => {
  await page.click('nav a[data-view="workspaces"]');
  const marketing = page.locator('#workspaces [data-workspace="marketing"]');
  await marketing.waitFor(WAIT);
  // Priority 100 (the default) before 200, ties by name.
  assert.deepEqual(await marketing.locator(".priority li code").allTextContents(), ["corp-relay", "good", "sendgrid-marketing", "wrong-password"]);
  // The hard bounce posted earlier suppressed its address in good's workspaces.
  await marketing.locator(".supp-count", { hasText: /^\d+\+?$/ }).waitFor(WAIT);
  assert.ok(Number(await marketing.locator(".supp-count").textContent()) >= 1);
  await marketing.locator("button").click();
  await page.locator("#suppressions table").waitFor(WAIT);
  assert.match(await page.textContent("#suppressions"), /bounce-\d+@example\.org/);
  await shot("desktop-workspaces");
});

test("text meets WCAG AA contrast in every view, in a dialog and with form errors shown", async () => {
  const failures = [];
  const check = async (state) => {
    for (const f of await lowContrast(page)) failures.push(`${state}: ${f}`);
  };
  await page.click('nav a[data-view="connections"]');
  await row("good").waitFor(WAIT);
  // The check itself finds grey-on-white text (2.3:1) and passes dark grey.
  await page.evaluate(() => {
    for (const [id, color] of [["probe-low", "#aaaaaa"], ["probe-ok", "#595959"]]) {
      const p = document.createElement("p");
      p.id = id;
      p.textContent = "contrast probe";
      p.style.cssText = `color:${color};background:#ffffff`;
      document.querySelector("main").append(p);
    }
  });
  const probe = await lowContrast(page);
  await page.evaluate(() => document.querySelectorAll("#probe-low, #probe-ok").forEach((e) => e.remove()));
  assert.equal(probe.filter((f) => f.startsWith("p#probe-low")).length, 1, probe.join("; "));
  assert.equal(probe.filter((f) => f.startsWith("p#probe-ok")).length, 0, probe.join("; "));
  await check("connections");
  await row("good").locator('[data-action="webhooks"]').click();
  await page.locator("#webhook-url").waitFor(WAIT);
  await check("webhooks dialog");
  await closeDialog();
  await row("good").locator('[data-action="events"]').click();
  await page.locator("#action-dialog").waitFor(WAIT);
  await check("events dialog");
  await closeDialog();
  await page.click('nav a[data-view="health"]');
  await page.locator("#health .summary").waitFor(WAIT);
  await check("config health");
  await page.click('nav a[data-view="workspaces"]');
  await page.locator("#workspaces .card").first().waitFor(WAIT);
  await check("workspaces");
  await page.click('nav a[data-view="new"]');
  await page.locator("#validation [data-valid]").waitFor(WAIT);
  await page.fill("#f-port", "70000");
  await page.locator("#port-error", { hasText: "error" }).waitFor(WAIT);
  await page.locator('#validation [data-valid="false"]').waitFor(WAIT);
  await check("new connection with a bad port");
  await page.fill("#f-port", "587");
  await page.click('nav a[data-view="connections"]');
  assert.deepEqual(failures, []);
});

test("at phone width (390 px, and 320 px) the list and the form are usable: no horizontal scrolling, actions visible", async () => {
  const phone = await context.newPage();
  await phone.setViewportSize({ width: 390, height: 844 });
  await phone.goto(URL_);
  // A new tab has its own session storage: the token is asked again.
  await phone.locator("#token-dialog").waitFor({ state: "visible", ...WAIT });
  await shot("phone-token", phone);
  await phone.fill("#token-input", TOKEN);
  await phone.press("#token-input", "Enter");
  await phone.locator("tr[data-connection]").first().waitFor(WAIT);
  const list = await sideways(phone);
  assert.ok(list.overflow <= 0, `page scrolls sideways by ${list.overflow}px: ${list.culprits.join("; ")}`);
  const box = await phone.locator('#act-test-good').boundingBox();
  assert.ok(box && box.x >= 0 && box.x + box.width <= 390, JSON.stringify(box));
  await shot("phone-connections", phone);
  await phone.locator("#act-test-good").click();
  await phone.fill("#test-to", "phone@example.test");
  await phone.press("#test-to", "Enter");
  await phone.locator('#action-body .outcome[data-class="accepted"]').waitFor(WAIT);
  await shot("phone-test-accepted", phone);
  await phone.click("#action-dialog [data-close]");
  await phone.click('nav a[data-view="health"]');
  await phone.locator("#health .summary").waitFor(WAIT);
  await shot("phone-health", phone);
  await phone.click('nav a[data-view="new"]');
  await phone.locator("#validation [data-valid]").waitFor(WAIT);
  const form = await sideways(phone);
  assert.ok(form.overflow <= 0, `new-connection form scrolls sideways by ${form.overflow}px: ${form.culprits.join("; ")}`);
  await shot("phone-new", phone);
  await phone.locator('#f-provider[data-loaded="true"]').waitFor({ state: "attached", ...WAIT });
  await phone.selectOption("#f-provider", "amazon-ses");
  await phone.locator("#f-opt-region").waitFor(WAIT);
  await phone.locator("#validation [data-valid]").waitFor(WAIT);
  const provider = await sideways(phone);
  assert.ok(provider.overflow <= 0, `provider form scrolls sideways by ${provider.overflow}px: ${provider.culprits.join("; ")}`);
  await shot("phone-new-provider", phone);
  // The narrowest phones (320 px) leave a margin for fonts wider than this
  // machine's: the form and the list still fit.
  await phone.setViewportSize({ width: 320, height: 700 });
  const narrowForm = await sideways(phone);
  assert.ok(narrowForm.overflow <= 0, `at 320 px the provider form scrolls sideways by ${narrowForm.overflow}px: ${narrowForm.culprits.join("; ")}`);
  await phone.click('nav a[data-view="connections"]');
  await phone.locator("tr[data-connection]").first().waitFor(WAIT);
  const narrowList = await sideways(phone);
  assert.ok(narrowList.overflow <= 0, `at 320 px the list scrolls sideways by ${narrowList.overflow}px: ${narrowList.culprits.join("; ")}`);
  await phone.close();
});
