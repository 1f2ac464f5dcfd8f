// Drives the web console in headless Chromium for node/tests/console.rs.
//
//   node console.mjs <chromium> <console url> <screenshot path> <nodes>
//
// 0. Opens the url without its #token=... fragment, checks that the page
//    asks for the token, types it into the form and waits for data.
// 1. Opens the url (it carries #token=...) afresh, waits until the nodes
//    table shows <nodes> rows, every one healthy, and the change feed is
//    live, and prints {"phase": "ready", "dom": ..., "form": ...} on stdout.
// 2. Reads one JSON line on stdin, {"node": id, "grades": [...],
//    "calls": ["room/session", ...]}, then waits (the page is not reloaded:
//    it must update by itself) until that node's row shows one of those
//    grades and the failover timeline lists every call; takes a screenshot
//    and prints {"phase": "done", "dom": ...} (or "timeout" and exits 1).
//
// The DOM is read as the page shows it: text and data attributes.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const [executablePath, url, screenshot, nodesText] = process.argv.slice(2);
const nodes = Number(nodesText);
const WAIT_MS = 30000;

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const say = (value) => process.stdout.write(JSON.stringify(value) + '\n');

// A fresh profile: nothing from an earlier run (storage, cache) counts.
const profile = mkdtempSync(join(tmpdir(), 'chorus-console-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
  viewport: { width: 1400, height: 1000 },
});
let failed = false;
try {
  const page = context.pages()[0] ?? (await context.newPage());
  // Script errors and CSP violations land here: the test wants none.
  const problems = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console: ${m.text()} (${m.location().url})`);
  });

  const dom = () => page.evaluate(() => {
    const text = (e) => (e ? e.textContent.trim() : null);
    let stored = null;
    try {
      stored = sessionStorage.getItem('chorus.console.token');
    } catch (_) {
      stored = null;
    }
    return {
      url: location.href,
      token_stored: stored,
      name: text(document.getElementById('node-name')),
      feed: document.getElementById('feed').dataset.state,
      nodes: [...document.querySelectorAll('#nodes tbody tr')].map((tr) => ({
        node: tr.dataset.node,
        grade: tr.dataset.grade,
        cells: [...tr.cells].map((td) => td.textContent.trim()),
      })),
      failover: text(document.getElementById('failover-summary')),
      failover_node: document.getElementById('failover-summary').dataset.node ?? null,
      chart: [...document.querySelectorAll('#failover-chart svg text')].map((t) => t.textContent),
      moved: [...document.querySelectorAll('#failover-moves li')].map((li) => ({
        call: li.dataset.call,
        to: li.dataset.to,
        text: li.textContent.trim(),
      })),
      calls: [...document.querySelectorAll('#rooms tr[data-call]')].map((tr) => tr.dataset.call),
      incidents: [...document.querySelectorAll('#incidents li')].map((li) => li.dataset.kind),
      error: text(document.getElementById('error')),
    };
  });

  const until = async (check) => {
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      const seen = await dom();
      if (check(seen)) return [true, seen];
      if (Date.now() > deadline) return [false, seen];
      await page.waitForTimeout(200);
    }
  };

  // Without the fragment, the page asks for the token (its API calls get
  // 401), and works once it is typed in.
  const [bare, fragment] = url.split('#');
  const token = new URLSearchParams(fragment).get('token');
  await page.goto(bare);
  await page.waitForSelector('#token-form:not([hidden])', { timeout: WAIT_MS });
  const asked = (await page.textContent('#token-error')).trim();
  await page.fill('#token-input', token);
  await page.click('#token-form button');
  await page.waitForSelector('#nodes tbody tr', { timeout: WAIT_MS });
  const typedIn = await page.evaluate(() => document.getElementById('token-form').hidden);
  // Forgotten again, so that the fragment is what gives it below.
  await page.evaluate(() => sessionStorage.clear());
  await page.goto('about:blank');
  problems.length = 0; // the 401s before the token was typed in

  await page.goto(url);
  // The feed must be live too: the calls moved by peers show only from it.
  let [ok, seen] = await until((d) =>
    d.feed === 'live' && d.nodes.length === nodes && d.nodes.every((n) => n.grade === 'healthy'));
  say({ phase: ok ? 'ready' : 'timeout', dom: seen, problems, form: { asked, typed_in: typedIn } });
  if (!ok) {
    failed = true;
  } else {
    const { value, done } = await lines.next();
    const want = done ? null : JSON.parse(value);
    if (want) {
      [ok, seen] = await until((d) =>
        d.nodes.some((n) => n.node === want.node && want.grades.includes(n.grade)) &&
        want.calls.every((c) => d.moved.some((m) => m.call === c)));
      await page.screenshot({ path: screenshot, fullPage: true });
      say({ phase: ok ? 'done' : 'timeout', dom: seen, problems });
      failed = !ok;
    }
  }
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
