#!/usr/bin/env node
// End-to-end test of the web page in Debian's headless Chromium, driven by playwright-core.
//
// Starts its own `boxoffice serve` on a free port with a fresh embedded PostgreSQL under
// /tmp, then, through the page: creates an event, holds two tickets and pays with the card
// that succeeds, reads the confirmation code; in a second browser context holds tickets for
// the same event and checks that the first page's count drops live, without a reload; sees a
// declined card's message, the per-buyer limit and a cancelled hold; in a third context
// (language en-US) buys two priced ticket types in one order and checks the total before
// buying, on the ticket and in "My tickets", each type's count dropping live, types sold
// out or not yet on sale, a short order's refusal naming its type, and prices
// typed in the new-event form (JPY without decimals, 0.29 EUR as exactly 29 cents); then
// restarts the server with an admin token (same data, same port) and sees a partial and a
// full refund on the ticket and in "My tickets"; an organiser's page creates an event
// through the form, refused without a token (401) and with a wrong one (403), each said so,
// then with an organiser token from `boxoffice tokens create`, kept for the tab (a second
// event needs no typing), sent as `Authorization` with POST /events and nothing else, in no
// URL and no console line, and forgotten on request (before that restart, a token typed for
// the server without an admin token is neither kept nor said to be); on that event's page the "last change"
// line names a sale, a refund, the organiser's change and the waiting list. Before the
// restart, an organiser's changes through the API (rename, new price, a type added, one off
// sale) show on an open event page without a reload, the quantities kept, while an old
// change sent again with a check-in reads nothing. The waiting list: on a sold-out event the
// second buyer joins (number 1 in line; joining again is refused), another buyer's hold is
// cancelled through the API, "My tickets" shows the offer within seconds without a reload,
// with a ticking countdown and Pay, and paying it makes the entry accepted and the ticket
// purchased (read back through the API as that buyer); joining again, the buyer leaves
// the line from "My tickets". At the door: the scanner's offline check
// decides codes signed in the test with its own Ed25519 keys; a paid order shows a QR code
// per admission that reads back as its code; a door token comes from `boxoffice tokens
// create`; a second Chromium, whose fake camera plays a Y4M video of a real ticket's QR code
// (camera.mjs), scans it green and then red with the first gate, scans offline (queued,
// a local duplicate, a forged code, a conflict with another gate), and uploads when back
// online, counts checked against the stats route. Fails
// on any uncaught or console error, any 5xx, and any 4xx but the refusals those flows
// provoke on purpose (EXPECTED_REFUSALS; on the door page only "already checked in").
// Saves a screenshot of the confirmation page to target/browser-confirmation.png. Stops the
// server with SIGTERM.
//
//   (cd tests/browser && npm ci) && node tests/browser/run.mjs
//
// Environment: BOXOFFICE_BIN (default target/debug/boxoffice), CHROMIUM (default
// /usr/bin/chromium; never downloaded), BOXOFFICE_START_TIMEOUT seconds (default 90).
// Exits non-zero, saying what failed, on any failure.

import { spawn } from 'node:child_process';
import { createHash, generateKeyPairSync, randomUUID, sign } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { decodeLuma, qrFrame, writeY4m } from './camera.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = path.resolve(ROOT, process.env.BOXOFFICE_BIN || 'target/debug/boxoffice');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SCREENSHOT = path.join(ROOT, 'target', 'browser-confirmation.png');
const START_TIMEOUT_MS = Number(process.env.BOXOFFICE_START_TIMEOUT || 90) * 1000;
// The organiser's token of the restarted server, for refunds.
const ADMIN_TOKEN = 'browser-test-admin-token';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
];

// When set, a screenshot of each page at each step goes to this directory, for a person.
const SHOTS = process.env.BOXOFFICE_SCREENSHOTS ? path.resolve(process.env.BOXOFFICE_SCREENSHOTS) : null;
let shotNumber = 0;

async function shot(page, name) {
  if (!SHOTS) return;
  fs.mkdirSync(SHOTS, { recursive: true });
  shotNumber++;
  await page.screenshot({ path: path.join(SHOTS, `${String(shotNumber).padStart(2, '0')}-${name}.png`), fullPage: true });
}

const started = Date.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const seconds = (ms) => `${(ms / 1000).toFixed(1)}s`;

// ---------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------

let server = null; // { child, url, log, exited: Promise<{code, signal}> }
let workDir = null;

function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.unref();
    probe.on('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/**
 * Starts the server with `extraArgs`, on `fixedPort` when given (a restart keeps the page's
 * origin, so its device id and fingerprint) and on the data of an earlier start if any.
 */
async function startServer(extraArgs = [], fixedPort = null) {
  if (!fs.existsSync(BIN)) throw new Error(`no boxoffice binary at ${BIN}: run \`cargo build --workspace\` first or set BOXOFFICE_BIN`);
  if (!workDir) {
    // Under /tmp and traversable: as root, the embedded PostgreSQL runs as `postgres`.
    workDir = fs.mkdtempSync('/tmp/boxoffice-browser-');
    fs.chmodSync(workDir, 0o755);
  }
  const dataDir = path.join(workDir, 'data');
  const logPath = path.join(workDir, 'server.log');
  const env = { ...process.env, NO_COLOR: '1' };
  // The embedded PostgreSQL, and nothing from the caller's configuration.
  for (const name of Object.keys(env)) {
    if (name === 'DATABASE_URL' || name.startsWith('BOXOFFICE_')) delete env[name];
  }

  for (let attempt = 1; attempt <= 5; attempt++) {
    const port = fixedPort ?? (await freePort());
    const log = fs.openSync(logPath, 'a');
    const child = spawn(BIN, ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, ...extraArgs], {
      env,
      stdio: ['ignore', log, log],
    });
    fs.closeSync(log);
    const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    server = { child, url: `http://127.0.0.1:${port}`, logPath, exited, done: false };
    exited.then(() => {
      server.done = true;
    });
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      if (server.done) {
        const text = readLog();
        server = null;
        if (/address already in use/i.test(text) && fixedPort === null) {
          console.log(`port ${port} was taken; retrying (attempt ${attempt})`);
          break;
        }
        throw new Error(`the server exited before it was healthy; its log:\n${text}`);
      }
      try {
        const response = await fetch(`${server.url}/health`, { signal: AbortSignal.timeout(2000) });
        if (response.ok) return server;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) {
        throw new Error(`the server was not healthy within ${seconds(START_TIMEOUT_MS)}; its log:\n${readLog()}`);
      }
      await sleep(100);
    }
  }
  throw new Error('could not find a free port for the server');
}

function readLog() {
  try {
    return fs.readFileSync(server?.logPath ?? path.join(workDir, 'server.log'), 'utf8');
  } catch {
    return '(no log)';
  }
}

/** SIGTERM, then wait; SIGKILL after 30 s. Resolves to an error message, or null. */
async function stopServer() {
  if (!server) return null;
  const current = server;
  if (current.done) {
    server = null;
    return 'the server had exited by itself before the end of the test';
  }
  current.child.kill('SIGTERM');
  let timer;
  const outcome = await Promise.race([
    current.exited,
    new Promise((resolve) => {
      timer = setTimeout(() => resolve(null), 30_000);
    }),
  ]);
  clearTimeout(timer);
  server = null;
  if (!outcome) {
    current.child.kill('SIGKILL');
    await current.exited;
    return 'the server did not exit within 30 s of SIGTERM';
  }
  if (outcome.code !== 0) return `the server exited with ${outcome.code ?? outcome.signal} on SIGTERM`;
  return null;
}

/**
 * Runs `boxoffice tokens create ARGS` on the running server's data directory (it connects to
 * the server's embedded PostgreSQL) and answers the token, which is all it prints on stdout.
 */
async function createToken(args) {
  const env = { ...process.env, NO_COLOR: '1' };
  for (const name of Object.keys(env)) {
    if (name === 'DATABASE_URL' || name.startsWith('BOXOFFICE_')) delete env[name];
  }
  const child = spawn(BIN, ['tokens', 'create', ...args, '--data-dir', path.join(workDir, 'data')], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk) => {
    stdout += chunk;
  });
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  const code = await new Promise((resolve) => child.on('exit', resolve));
  assert(code === 0, `boxoffice tokens create exited with ${code}:\n${stdout}${stderr}`);
  const token = stdout.trim();
  assert(/^bo_[A-Za-z0-9_-]{43}$/.test(token), `boxoffice tokens create printed ${JSON.stringify(stdout)}, not a token`);
  return token;
}

// Last resort if the script dies some other way: never leave the server running.
process.on('exit', () => {
  if (server && !server.done) server.child.kill('SIGKILL');
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, async () => {
    console.error(`\ninterrupted by ${signal}; stopping the server`);
    await stopServer();
    process.exit(130);
  });
}

// ---------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------

let passed = 0;
let failed = 0;

async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    passed++;
    console.log(`ok   ${name} (${seconds(Date.now() - t0)})`);
  } catch (error) {
    failed++;
    console.log(`FAIL ${name} (${seconds(Date.now() - t0)})\n     ${String(error?.message ?? error).split('\n').join('\n     ')}`);
    throw new StepFailed(name);
  }
}

class StepFailed extends Error {}

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

/** Polls fn until it returns a truthy value; the error names what was awaited. */
async function eventually(what, fn, timeout = 10_000) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const value = await fn();
      if (value) return value;
      last = null;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${seconds(timeout)} waiting for ${what}${last ? ` (${last.message.split('\n')[0]})` : ''}`);
    }
    await sleep(100);
  }
}

async function textOf(page, testid) {
  const text = await page.getByTestId(testid).first().textContent({ timeout: 1000 });
  return text?.trim() ?? '';
}

/** Waits until the element's text matches (a string is an exact match). */
async function expectText(page, testid, expected, timeout = 10_000) {
  let seen = '(not found)';
  const matches = (text) => (expected instanceof RegExp ? expected.test(text) : text === String(expected));
  try {
    return await eventually(`[data-testid=${testid}]`, async () => {
      seen = await textOf(page, testid);
      return matches(seen) ? seen : null;
    }, timeout);
  } catch {
    throw new Error(`[data-testid=${testid}] should read ${expected} but reads ${JSON.stringify(seen)} (after ${seconds(timeout)})`);
  }
}

/** A JSON call to the server outside the browser; throws unless it answers 2xx. */
async function apiCall(method, route, body, headers = {}) {
  const response = await fetch(`${server.url}${route}`, {
    method,
    headers: body === undefined ? headers : { ...headers, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  assert(response.ok, `${method} ${route} answered ${response.status}: ${text}`);
  return text ? JSON.parse(text) : null;
}

/** The row of one ticket type on an event page. */
const typeRowOf = (page, typeId) => page.locator(`[data-testid=ticket-type][data-type-id="${typeId}"]`);

// ---------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------

/**
 * The API answers of 400 and more that the flows below provoke on purpose, as
 * `METHOD /path status` with ids replaced by `{id}`, each as many times as it happens. Any
 * other such answer, any 5xx, and any console error but the browser's own report of one of
 * these answers fails the run.
 */
const EXPECTED_REFUSALS = [
  'POST /events 422', // the form error: limit per buyer above the total
  'POST /tickets/{id}/payment 402', // the declined card
  'POST /events/{id}/tickets 409', // the limit per buyer
  'POST /events/{id}/tickets 409', // more than are left
  'POST /events/{id}/tickets 409', // more General admission tickets than are left
  'POST /events/{id}/waiting-list 409', // joining the waiting list twice
  'POST /events 401', // the new-event form without an organiser token
  'POST /events 403', // the new-event form with a wrong organiser token
  'POST /events 401', // the form's try without the wrong token typed, first
  'POST /events 401', // the form's try without the organiser token typed, first
];

/** `METHOD /path status` of a response, with ids replaced by `{id}`. */
function answerKey(method, url, status) {
  const route = new URL(url).pathname.replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g, '{id}');
  return `${method} ${route} ${status}`;
}

async function newPage(browser, name, options) {
  const context = await browser.newContext(options);
  context.setDefaultTimeout(15_000);
  const page = await context.newPage();
  page.problems = [];
  page.apiRequests = [];
  // Every answer of 400 or more from the server, and every console error with the URL it
  // is about: judged together at the end, when both are in.
  page.refusals = [];
  page.consoleErrors = [];
  page.on('pageerror', (error) => page.problems.push(`${name}: uncaught ${error.message}`));
  // Every URL the page asked for and every console line, to show that a token is in none.
  page.urls = [];
  page.consoleTexts = [];
  page.on('console', (message) => {
    page.consoleTexts.push(message.text());
    if (message.type() === 'error') {
      page.consoleErrors.push({ text: message.text(), url: message.location()?.url ?? '' });
    }
  });
  page.on('response', (response) => {
    const status = response.status();
    if (status >= 400) {
      const key = answerKey(response.request().method(), response.url(), status);
      page.refusals.push({ key, url: response.url(), status });
      if (status >= 500) page.problems.push(`${name}: the server answered ${key}`);
    }
  });
  page.on('request', (request) => {
    const url = new URL(request.url());
    page.urls.push(request.url());
    if (['fetch', 'xhr'].includes(request.resourceType())) {
      const headers = request.headers();
      page.apiRequests.push({ method: request.method(), path: url.pathname, fingerprint: headers['x-device-fingerprint'], authorization: headers.authorization });
    }
  });
  return page;
}

async function run() {
  const eventName = `Browser test ${new Date().toISOString().replace(/\D/g, '').slice(0, 14)}-${process.pid}`;
  let base;
  let browser;
  let eventId;
  let a;
  let b;
  let c;
  let scanner;
  let d;
  let g;
  let o;

  try {
    await step('start boxoffice serve with an embedded PostgreSQL', async () => {
      const { url } = await startServer();
      base = url;
    });

    await step(`launch ${CHROMIUM} headless`, async () => {
      assert(fs.existsSync(CHROMIUM), `no browser at ${CHROMIUM} (Debian: apt-get install chromium)`);
      // launch() gives the browser a fresh temporary profile (--user-data-dir) and removes it
      // on close; nothing is downloaded: the executable is Debian's.
      browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 60_000 });
      // The buyer on a phone-sized screen, the second buyer on a laptop.
      a = await newPage(browser, 'buyer A', { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
      b = await newPage(browser, 'buyer B', { viewport: { width: 1280, height: 800 } });
      // The buyer of several ticket types, in a language fixed so that prices read "€12.50".
      c = await newPage(browser, 'buyer C', { viewport: { width: 1024, height: 900 }, locale: 'en-US' });
    });

    await step('the page loads and computes a SHA-256 device fingerprint', async () => {
      await a.goto(`${base}/`);
      await expectText(a, 'device', /^[0-9a-f]{8}$/);
      await a.getByTestId('event-list-empty').or(a.getByTestId('event-list')).first().waitFor();
      const { signals, subtle, fallback } = await a.evaluate(async () => {
        const m = await import('/assets/fingerprint.js');
        const bytes = new TextEncoder().encode('boxoffice '.repeat(50));
        return { signals: m.signals(), subtle: await m.sha256Hex(bytes), fallback: m.sha256Fallback(bytes) };
      });
      const expected = createHash('sha256').update('boxoffice '.repeat(50)).digest('hex');
      assert(subtle === expected && fallback === expected, `SHA-256 in the page is wrong: subtle ${subtle}, fallback ${fallback}, expected ${expected}`);
      assert(signals.length === 5 && /^[0-9a-f]{32}$/.test(signals[1]), `unexpected fingerprint signals ${JSON.stringify(signals)}`);
      a.fingerprint = createHash('sha256').update(signals.join('\n')).digest('hex');
      const sent = a.apiRequests.find((r) => r.path === '/events');
      assert(sent, 'the event list was not fetched');
      assert(sent.fingerprint === a.fingerprint, `X-Device-Fingerprint is ${sent.fingerprint}, expected ${a.fingerprint}`);
      const stored = await a.evaluate(() => localStorage.getItem('boxoffice.deviceId'));
      assert(stored === signals[1], 'the device id is not kept in localStorage');
    });

    await step('the scanner\'s offline check accepts only codes signed by a listed key, for this event', async () => {
      // Codes made here by the contract of docs/admission.md, with keys of this test.
      const keyOf = () => {
        const { publicKey, privateKey } = generateKeyPairSync('ed25519');
        const raw = Buffer.from(publicKey.export({ format: 'jwk' }).x, 'base64url');
        return { privateKey, raw, id: createHash('sha256').update(raw).digest().subarray(0, 4).toString('hex') };
      };
      const listed = keyOf();
      const unlisted = keyOf();
      const uuidBytes = (id) => Buffer.from(id.replace(/-/g, ''), 'hex');
      const codeOf = (key, eventId, admissionId, version = 1) => {
        const signed = Buffer.concat([Buffer.from([version]), Buffer.from(key.id, 'hex'), uuidBytes(eventId), uuidBytes(admissionId)]);
        return Buffer.concat([signed, sign(null, signed, key.privateKey)]).toString('base64url');
      };
      const [event, other, fresh, used, refunded] = Array.from({ length: 5 }, () => randomUUID());
      const good = codeOf(listed, event, fresh);
      const tampered = Buffer.from(good, 'base64url');
      tampered[60] ^= 1;
      const cases = {
        admitted: good,
        duplicate: codeOf(listed, event, used),
        revoked: codeOf(listed, event, refunded),
        wrongEvent: codeOf(listed, other, fresh),
        tampered: tampered.toString('base64url'),
        unlistedKey: codeOf(unlisted, event, fresh),
        version2: codeOf(listed, event, fresh, 2),
        truncated: good.slice(0, -1),
        // The last character carries two bits beyond the 101 bytes: only 0s is the code.
        nonCanonical: good.slice(0, -1) + String.fromCharCode(good.charCodeAt(good.length - 1) + 1),
      };
      const decided = await a.evaluate(async ({ cases, keys, event, used, refunded }) => {
        const m = await import('/assets/scan.js');
        const book = {
          keys: m.importKeys(keys),
          revoked: new Set([refunded]),
          admitted: new Map([[used, { checkedInAt: '2031-05-01T19:00:00Z', gate: 'East' }]]),
        };
        const out = {};
        for (const [name, code] of Object.entries(cases)) out[name] = await m.decideOffline(code, event, book);
        out.parts = m.decodeTicketCode(cases.admitted);
        return out;
      }, { cases, keys: [{ id: listed.id, algorithm: 'Ed25519', publicKey: listed.raw.toString('base64url') }], event, used, refunded });
      const expected = {
        admitted: { result: 'admitted', admissionId: fresh },
        duplicate: { result: 'duplicate', admissionId: used, firstCheckedInAt: '2031-05-01T19:00:00Z', firstGate: 'East' },
        revoked: { result: 'revoked', admissionId: refunded },
        wrongEvent: { result: 'wrong_event', admissionId: fresh },
        tampered: { result: 'invalid' },
        unlistedKey: { result: 'invalid' },
        version2: { result: 'invalid' },
        truncated: { result: 'invalid' },
        nonCanonical: { result: 'invalid' },
      };
      for (const [name, want] of Object.entries(expected)) {
        assert(JSON.stringify(decided[name]) === JSON.stringify(want), `${name}: decided ${JSON.stringify(decided[name])}, expected ${JSON.stringify(want)}`);
      }
      assert(good.length === 135, `a code has ${good.length} characters`);
      const parts = decided.parts;
      assert(parts.keyId === listed.id && parts.eventId === event && parts.admissionId === fresh, `the code's parts read ${JSON.stringify(parts)}`);
    });

    await step('a form error reads plainly (limit per buyer above the total)', async () => {
      await a.getByTestId('nav-new').click();
      await a.getByTestId('create-name').fill(eventName);
      await a.getByTestId('create-total').fill('20');
      await a.getByTestId('create-cap').fill('30');
      await a.getByTestId('create-submit').click();
      await expectText(a, 'error-maxTicketsPerFingerprint', /^Limit per buyer must be between 1 and the number of tickets, or empty for no limit\.$/);
      assert(/#\/new$/.test(a.url()), `stayed on the form, but the page is ${a.url()}`);
      await shot(a, 'a-create-form-error');
    });

    await step('create an event through the page (20 tickets at 5.00 EUR, at most 6 per buyer)', async () => {
      await a.getByTestId('create-cap').fill('6');
      // Priced, so that paying calls the provider: a free order is confirmed without a card.
      await a.getByTestId('create-currency').fill('EUR');
      await a.getByTestId('create-price').fill('5.00');
      await a.getByTestId('create-submit').click();
      await a.waitForURL(/#\/events\/[0-9a-f-]{36}$/);
      eventId = a.url().split('/').pop();
      await expectText(a, 'event-name', eventName);
      await expectText(a, 'stat-available', '20');
      await expectText(a, 'live-status', 'Live');
      await shot(a, 'a-event-new');
    });

    await step('the event list pages through events', async () => {
      // Ten more events, later than the first, through the API: eleven make two pages.
      for (let i = 1; i <= 10; i++) {
        const response = await fetch(`${base}/events`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ name: `${eventName} extra ${i}`, date: `2031-01-${String(i).padStart(2, '0')}T20:00:00Z`, totalTickets: 5 }),
        });
        assert(response.status === 201, `POST /events answered ${response.status}`);
      }
      await a.getByTestId('nav-events').click();
      await expectText(a, 'pager-status', 'Page 1 of 2 · 11 events');
      await a.getByTestId('pager-next').click();
      await expectText(a, 'pager-status', 'Page 2 of 2 · 11 events');
      await eventually('one card on page 2', async () => (await a.getByTestId('event-card').count()) === 1);
      await expectText(a, 'event-link', `${eventName} extra 10`);
      await a.getByTestId('pager-prev').click();
      await expectText(a, 'pager-status', 'Page 1 of 2 · 11 events');
    });

    await step('the event list shows the event and its availability', async () => {
      const card = a.locator(`[data-testid=event-card][data-event-id="${eventId}"]`);
      await card.waitFor();
      await shot(a, 'a-event-list');
      const available = (await card.getByTestId('event-available').textContent()).trim();
      assert(available === '20 of 20 left', `the card says ${JSON.stringify(available)}`);
      await card.getByTestId('event-link').click();
      await expectText(a, 'event-name', eventName);
    });

    let firstHold;
    await step('hold two tickets: the hold shows a countdown', async () => {
      await a.getByTestId('buy-quantity').fill('2');
      await a.getByTestId('buy-submit').click();
      await a.waitForURL(/#\/tickets\/[0-9a-f-]{36}$/);
      firstHold = a.url().split('/').pop();
      await expectText(a, 'ticket-summary', /^2 tickets for /);
      const first = await expectText(a, 'hold-countdown', /^\d+:\d\d$/);
      const [m, s] = first.split(':').map(Number);
      assert(m * 60 + s > 60 && m * 60 + s <= 600, `countdown ${first} should be under the 10 minutes a hold lasts`);
      await eventually('the countdown to tick', async () => (await textOf(a, 'hold-countdown')) !== first, 3000);
      await shot(a, 'a-hold');
    });

    let code;
    await step('pay with the card that succeeds: a BX- confirmation code', async () => {
      await a.getByTestId('card-visa').check();
      await a.getByTestId('pay-submit').click();
      code = await expectText(a, 'confirmation-code', /^BX-/);
      await a.screenshot({ path: SCREENSHOT, fullPage: true });
      const header = a.apiRequests.filter((r) => r.path.startsWith('/tickets/') || r.path.endsWith('/tickets'));
      assert(header.length >= 2 && header.every((r) => r.fingerprint === a.fingerprint), 'ticket calls did not all carry the fingerprint');
    });

    await step('"My tickets" lists the purchase with its code', async () => {
      await a.getByTestId('to-my-tickets').click();
      const row = a.locator(`[data-testid=ticket-row][data-ticket-id="${firstHold}"]`);
      await row.waitFor();
      const status = (await row.getByTestId('ticket-status').textContent()).trim();
      const shown = (await row.getByTestId('ticket-code').textContent()).trim();
      await shot(a, 'a-my-tickets');
      assert(status === 'Purchased' && shown === code, `the row says ${status} ${shown}, expected Purchased ${code}`);
    });

    await step('the event page shows the sale', async () => {
      await a.evaluate((id) => {
        window.__sameDocument = true;
        location.hash = `#/events/${id}`;
      }, eventId);
      await expectText(a, 'stat-available', '18');
      await expectText(a, 'stat-sold', '2');
      await expectText(a, 'live-status', 'Live');
    });

    let secondHold;
    await step("a second buyer holds 3 tickets: the first page's count drops live", async () => {
      await b.goto(`${base}/#/events/${eventId}`);
      await expectText(b, 'stat-available', '18');
      await b.getByTestId('buy-quantity').fill('3');
      await b.getByTestId('buy-submit').click();
      await b.waitForURL(/#\/tickets\/[0-9a-f-]{36}$/);
      secondHold = b.url().split('/').pop();
      await expectText(b, 'hold-countdown', /^\d+:\d\d$/);
      await expectText(a, 'stat-available', '15', 5000);
      await expectText(a, 'stat-held', '3');
      await expectText(a, 'last-change', /^Tickets were held at /);
      assert(await a.evaluate(() => window.__sameDocument === true), 'the first page was reloaded');
      await shot(a, 'a-event-live');
      await shot(b, 'b-hold');
      const fingerprints = new Set(b.apiRequests.map((r) => r.fingerprint));
      assert(fingerprints.size === 1 && !fingerprints.has(a.fingerprint), 'the second context should be a different buyer');
    });

    await step('a declined card shows its message and keeps the hold', async () => {
      await b.getByTestId('card-declined').check();
      await b.getByTestId('pay-submit').click();
      await expectText(b, 'pay-error', /^Payment declined: the card was refused\./);
      await b.getByTestId('hold-countdown').waitFor();
      assert(await b.getByTestId('pay-submit').isEnabled(), 'the pay button should work again after a decline');
      await shot(b, 'b-declined');
    });

    await step('the limit per buyer reads plainly', async () => {
      await b.getByTestId('back-to-event').click();
      await b.getByTestId('buy-quantity').fill('4');
      await b.getByTestId('buy-submit').click();
      await expectText(b, 'buy-error', /^Limit per buyer reached: you may have at most 6 tickets for this event and already have 3\./);
      await shot(b, 'b-limit');
    });

    await step('cancel the hold from "My tickets": the first page\'s count returns live', async () => {
      await b.getByTestId('nav-tickets').click();
      const row = b.locator(`[data-testid=ticket-row][data-ticket-id="${secondHold}"]`);
      await row.waitFor();
      assert((await row.getByTestId('ticket-status').textContent()).trim() === 'Held', 'the hold should be listed as Held');
      await row.getByTestId('ticket-cancel').click();
      await eventually('the row to read Cancelled', async () => (await row.getByTestId('ticket-status').textContent()).trim() === 'Cancelled');
      await expectText(a, 'stat-available', '18', 5000);
      await expectText(a, 'stat-held', '0');
      await shot(b, 'b-my-tickets');
      assert(await a.evaluate(() => window.__sameDocument === true), 'the first page was reloaded');
    });

    await step('asking for more than are left reads plainly, and a sold-out event says so', async () => {
      const response = await fetch(`${base}/events`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ name: `${eventName} small`, date: '2031-02-01T20:00:00Z', totalTickets: 3 }),
      });
      const small = await response.json();
      await a.evaluate((id) => {
        location.hash = `#/events/${id}`;
      }, small.id);
      await expectText(a, 'stat-available', '3');
      await a.getByTestId('buy-quantity').fill('5');
      await a.getByTestId('buy-submit').click();
      await expectText(a, 'buy-error', 'Not enough tickets left: only 3 tickets remaining. Choose fewer.');
      await a.getByTestId('buy-quantity').fill('3');
      await a.getByTestId('buy-submit').click();
      await expectText(a, 'hold-countdown', /^\d+:\d\d$/);
      // The event is free: the hold is confirmed without a charge, so no card is offered.
      await expectText(a, 'pay-submit', 'Get 3 free tickets');
      assert(!(await a.getByTestId('card-visa').isVisible()), 'a free order should offer no card');
      await a.getByTestId('back-to-event').click();
      await expectText(a, 'stat-available', '0');
      await expectText(a, 'buy-submit', 'Sold out');
      await expectText(a, 'sold-out-note', /^Sold out for now\. Held tickets that are not paid for go back on sale/);
      assert(await a.getByTestId('buy-submit').isDisabled(), 'the buy button should be disabled when sold out');
      await shot(a, 'a-sold-out');
    });

    // Ticket types, prices and multi-line orders, in a third browser whose language is
    // fixed, so that prices read the same on every machine.
    let priced;
    let typeIds;
    await step('an event with two priced types lists them with prices in its currency', async () => {
      priced = await apiCall('POST', '/events', { name: `${eventName} priced`, date: '2031-03-01T20:00:00Z', totalTickets: 50, currency: 'EUR', price: 1250 });
      assert(priced.currency === 'EUR', `the event's currency is ${priced.currency}`);
      const student = await apiCall('POST', `/events/${priced.id}/ticket-types`, { name: 'Student', price: 800 });
      // A quota of its own, so that the Student type has less left than the event.
      await apiCall('POST', `/events/${priced.id}/quotas`, { name: 'Students', size: 10, ticketTypeIds: [student.id] });
      const general = (await apiCall('GET', `/events/${priced.id}`)).ticketTypes.find((t) => t.name === 'General admission');
      typeIds = { general: general.id, student: student.id };
      await c.goto(`${base}/#/events/${priced.id}`);
      await eventually('two ticket types on the page', async () => (await c.getByTestId('ticket-type').count()) === 2);
      for (const [type, name, price, left] of [['general', 'General admission', '€12.50', '50 left'], ['student', 'Student', '€8.00', '10 left']]) {
        const row = typeRowOf(c, typeIds[type]);
        const shown = [await row.getByTestId('type-name').textContent(), await row.getByTestId('type-price').textContent(), await row.getByTestId('type-available').textContent()];
        assert(JSON.stringify(shown) === JSON.stringify([name, price, left]), `the ${type} row reads ${JSON.stringify(shown)}, expected ${JSON.stringify([name, price, left])}`);
      }
      // Nothing chosen yet of priced types: nothing to pay, which is not "Free".
      await expectText(c, 'order-total', '€0.00');
      await expectText(c, 'live-status', 'Live');
    });

    let pricedHold;
    await step('buy two types in one order: the total before buying and on the ticket is the sum of the lines', async () => {
      // A second buyer watches the event: each type's count drops live, from the stream.
      await b.goto(`${base}/#/events/${priced.id}`);
      await expectText(b, 'live-status', 'Live');
      await typeRowOf(c, typeIds.general).getByTestId('type-quantity').fill('2');
      await typeRowOf(c, typeIds.student).getByRole('button', { name: 'One more' }).click();
      await expectText(c, 'order-count', '(3 tickets)');
      await expectText(c, 'order-total', '€33.00');
      await shot(c, 'c-two-types');
      const [response] = await Promise.all([
        c.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === `/events/${priced.id}/tickets`),
        c.getByTestId('buy-submit').click(),
      ]);
      const sent = response.request().postDataJSON();
      const expectedLines = [{ ticketTypeId: typeIds.general, quantity: 2 }, { ticketTypeId: typeIds.student, quantity: 1 }];
      assert(JSON.stringify(sent) === JSON.stringify({ lines: expectedLines }), `the page sent ${JSON.stringify(sent)}, expected one order of both lines`);
      assert(response.status() === 201, `the order was answered ${response.status()}`);
      const order = await response.json();
      pricedHold = order.id;
      const sum = order.lines.reduce((total, line) => total + line.amount, 0);
      assert(order.total === 3300 && sum === 3300 && order.currency === 'EUR' && order.quantity === 3, `the order is ${JSON.stringify(order)}`);
      await c.waitForURL(/#\/tickets\/[0-9a-f-]{36}$/);
      await expectText(c, 'ticket-total', '€33.00');
      const amounts = await c.getByTestId('line-amount').allTextContents();
      assert(JSON.stringify(amounts) === JSON.stringify(['€25.00', '€8.00']), `the lines read ${JSON.stringify(amounts)}`);
      await expectText(c, 'pay-submit', 'Pay €33.00');
      await expectText(b, 'stat-available', '47', 5000);
      await eventually('the Student count to drop live', async () => (await typeRowOf(b, typeIds.student).getByTestId('type-available').textContent()) === '9 left', 5000);
      assert((await typeRowOf(b, typeIds.general).getByTestId('type-available').textContent()) === '47 left', 'General admission should show the event\'s 47 left');
      await c.getByTestId('card-visa').check();
      await c.getByTestId('pay-submit').click();
      await expectText(c, 'confirmation-code', /^BX-/);
      await expectText(c, 'ticket-total', '€33.00');
      await shot(c, 'c-two-types-paid');
    });

    await step('"My tickets" shows the order\'s lines and total', async () => {
      await c.getByTestId('to-my-tickets').click();
      const row = c.locator(`[data-testid=ticket-row][data-ticket-id="${pricedHold}"]`);
      await row.waitFor();
      const lines = (await row.getByTestId('ticket-lines').textContent()).trim();
      assert(lines === '2 × General admission, 1 × Student · €33.00', `the row reads ${JSON.stringify(lines)}`);
      assert((await row.getByTestId('ticket-total').textContent()).trim() === '€33.00', 'the row\'s total is wrong');
      await shot(c, 'c-my-tickets');
    });

    await step('types off sale or sold out say so, and a short order names the type', async () => {
      const event = await apiCall('POST', '/events', { name: `${eventName} types`, date: '2031-04-01T20:00:00Z', totalTickets: 10, currency: 'EUR', price: 1000 });
      const vip = await apiCall('POST', `/events/${event.id}/ticket-types`, { name: 'VIP', price: 5000 });
      await apiCall('POST', `/events/${event.id}/quotas`, { name: 'VIP seats', size: 1, ticketTypeIds: [vip.id] });
      const late = await apiCall('POST', `/events/${event.id}/ticket-types`, { name: 'Late', price: 900, salesStartAt: '2030-01-01T00:00:00Z' });
      // Another buyer holds the one VIP seat.
      await apiCall('POST', `/events/${event.id}/tickets`, { lines: [{ ticketTypeId: vip.id, quantity: 1 }] }, { 'X-Device-Fingerprint': 'another buyer of the browser test' });
      await c.evaluate((id) => {
        location.hash = `#/events/${id}`;
      }, event.id);
      await eventually('three ticket types on the page', async () => (await c.getByTestId('ticket-type').count()) === 3);
      const general = (await apiCall('GET', `/events/${event.id}`)).ticketTypes.find((t) => t.name === 'General admission');
      const state = async (id) => [await typeRowOf(c, id).getAttribute('data-sale'), (await typeRowOf(c, id).getByTestId('type-available').textContent()).trim()];
      const vipState = await state(vip.id);
      assert(JSON.stringify(vipState) === JSON.stringify(['sold-out', 'Sold out']), `the VIP row reads ${JSON.stringify(vipState)}`);
      assert(await typeRowOf(c, vip.id).getByTestId('type-quantity').isDisabled(), 'a sold-out type should take no quantity');
      const lateState = await state(late.id);
      assert(lateState[0] === 'closed' && /^On sale from /.test(lateState[1]), `the Late row reads ${JSON.stringify(lateState)}`);
      assert(await typeRowOf(c, late.id).getByTestId('type-quantity').isDisabled(), 'a type not on sale yet should take no quantity');
      // More than is left: the refusal names the type and how many it has.
      await typeRowOf(c, general.id).getByTestId('type-quantity').fill('10');
      await c.getByTestId('buy-submit').click();
      await expectText(c, 'buy-error', 'Not enough tickets left for this order (General admission: 9 left). Choose fewer.');
      await expectText(c, 'ticket-types', /9 left/);
      await shot(c, 'c-types-refused');
    });

    await step('prices typed in the form become exact minor units; a JPY price shows no decimals', async () => {
      const create = async (name, currency, price) => {
        await c.getByTestId('nav-new').click();
        await c.getByTestId('create-name').fill(name);
        await c.getByTestId('create-total').fill('10');
        await c.getByTestId('create-currency').fill(currency);
        await c.getByTestId('create-price').fill(price);
        await c.getByTestId('create-submit').click();
      };
      // More decimals than the currency has are refused before any request.
      await create(`${eventName} yen`, 'jpy', '1500.5');
      await expectText(c, 'error-price', 'Price takes no decimals in this currency.');
      await c.getByTestId('create-price').fill('1500');
      await c.getByTestId('create-submit').click();
      await c.waitForURL(/#\/events\/[0-9a-f-]{36}$/);
      const yen = await apiCall('GET', `/events/${c.url().split('/').pop()}`);
      assert(yen.currency === 'JPY' && yen.ticketTypes.length === 1 && yen.ticketTypes[0].price === 1500, `the yen event is ${JSON.stringify(yen)}`);
      await expectText(c, 'type-price', '¥1,500');
      await c.getByTestId('buy-quantity').fill('3');
      await expectText(c, 'order-total', '¥4,500');
      await shot(c, 'c-yen');
      // 0.29 × 100 is 28.999999999999996 in floating point: the form must not multiply.
      await create(`${eventName} cents`, 'EUR', '12.345');
      await expectText(c, 'error-price', 'Price takes at most 2 decimals in this currency.');
      await c.getByTestId('create-price').fill('0.29');
      await c.getByTestId('create-submit').click();
      await c.waitForURL(/#\/events\/[0-9a-f-]{36}$/);
      const cents = await apiCall('GET', `/events/${c.url().split('/').pop()}`);
      assert(cents.currency === 'EUR' && cents.ticketTypes[0].price === 29, `the cents event is ${JSON.stringify(cents)}`);
      await expectText(c, 'type-price', '€0.29');
    });

    await step('amounts follow the server\'s minor units where the browser\'s differ (HUF 2 digits, IQD 3)', async () => {
      // The page reads GET /currencies once at start; Intl (CLDR) says 0 digits for both.
      const table = await apiCall('GET', '/currencies');
      const digitsOf = (code) => table.find((entry) => entry.code === code)?.digits;
      assert(digitsOf('HUF') === 2 && digitsOf('IQD') === 3, `the server's table says HUF ${digitsOf('HUF')}, IQD ${digitsOf('IQD')}`);
      const create = async (name, currency, price) => {
        await c.getByTestId('nav-new').click();
        await c.getByTestId('create-name').fill(name);
        await c.getByTestId('create-total').fill('10');
        await c.getByTestId('create-currency').fill(currency);
        await c.getByTestId('create-price').fill(price);
        await c.getByTestId('create-submit').click();
        await c.waitForURL(/#\/events\/[0-9a-f-]{36}$/);
        return apiCall('GET', `/events/${c.url().split('/').pop()}`);
      };
      // "1500" forints are 150000 minor units (fillér), not 1500 (15.00 HUF).
      const forint = await create(`${eventName} forint`, 'HUF', '1500');
      assert(forint.currency === 'HUF' && forint.ticketTypes[0].price === 150000, `the forint event is ${JSON.stringify(forint)}`);
      await expectText(c, 'type-price', /^HUF\s1,500\.00$/);
      await c.getByTestId('buy-quantity').fill('3');
      await expectText(c, 'order-total', /^HUF\s4,500\.00$/);
      // Decimals the browser's digits would refuse (or round away) are the server's to allow.
      const dinar = await create(`${eventName} dinar`, 'IQD', '2.505');
      assert(dinar.currency === 'IQD' && dinar.ticketTypes[0].price === 2505, `the dinar event is ${JSON.stringify(dinar)}`);
      await expectText(c, 'type-price', /^IQD\s2\.505$/);
      await shot(c, 'c-forint-dinar');
    });

    // A server without --admin-token creates events for anyone and reads no token: one typed
    // there was never checked, so the page must neither keep it nor say it does.
    await step('on a server without an admin token, a typed organiser token is not kept', async () => {
      const typed = 'typed-on-an-open-server';
      await c.goto(`${base}/#/new`);
      await c.getByTestId('create-name').fill(`${eventName} open`);
      await c.getByTestId('create-total').fill('5');
      await c.getByTestId('organiser-token').fill(typed);
      await c.getByTestId('create-submit').click();
      await c.waitForURL(/#\/events\/[0-9a-f-]{36}$/);
      await expectText(c, 'event-name', `${eventName} open`);
      const kept = await c.evaluate((token) => Object.values(sessionStorage).some((value) => value.includes(token)), typed);
      assert(!kept, 'a token the server never checked should not be kept');
      await c.getByTestId('nav-new').click();
      await c.getByTestId('create-form').waitFor();
      assert(!(await c.getByTestId('organiser-token-kept').isVisible()), 'the form should not say a token is kept');
      assert(await c.getByTestId('organiser-token').isVisible(), 'the token field should be offered again');
      await expectText(c, 'organiser-token-status', /^This box office lets anyone create events: the token given last time was not needed, so it was not kept\.$/);
      const sent = c.apiRequests.filter((r) => r.authorization !== undefined).map((r) => `${r.method} ${r.path}`);
      assert(sent.length === 0, `Authorization was sent with ${JSON.stringify(sent)}`);
      await shot(c, 'c-open-server-token');
    });

    // An organiser's change reaches an open event page without a reload: its name, prices and
    // types are read again, the buyer's quantities kept. A change made before the page was
    // read, heard again with a later check-in, reads nothing.
    await step('an organiser\'s change shows on an open event page without a reload; an old one heard again reads nothing', async () => {
      const live = await apiCall('POST', '/events', { name: `${eventName} changing`, date: '2031-06-01T20:00:00Z', totalTickets: 30, currency: 'EUR', price: 1000 });
      const student = await apiCall('POST', `/events/${live.id}/ticket-types`, { name: 'Student', price: 500 });
      const general = (await apiCall('GET', `/events/${live.id}`)).ticketTypes.find((t) => t.name === 'General admission');
      const buyer = { 'X-Device-Fingerprint': 'the organiser-change test\'s buyer' };
      const hold = await apiCall('POST', `/events/${live.id}/tickets`, { quantity: 1 }, buyer);
      const paid = await apiCall('POST', `/tickets/${hold.id}/payment`, { paymentToken: 'tok_visa' }, buyer);
      // B watches while the organiser moves the date: the server then holds that change as
      // the event's last, and sends it again with the next check-in.
      await b.goto(`${base}/#/events/${live.id}`);
      await expectText(b, 'live-status', 'Live');
      await apiCall('PATCH', `/events/${live.id}`, { date: '2031-06-02T20:00:00Z' });
      await expectText(b, 'last-change', /^The organiser changed the event at .+\.$/);
      const reads = (page) => page.apiRequests.filter((r) => r.method === 'GET' && r.path === `/events/${live.id}`).length;
      const readsBefore = reads(c);
      await c.goto(`${base}/#/events/${live.id}`);
      await expectText(c, 'live-status', 'Live');
      await expectText(c, 'event-name', `${eventName} changing`);
      const doorToken = await createToken(['--scope', 'door', '--event', live.id, '--name', 'browser test organiser change']);
      await apiCall('POST', `/events/${live.id}/checkins`, { code: paid.admissions[0].code, gate: 'Main' }, { Authorization: `Bearer ${doorToken}` });
      await expectText(c, 'last-change', /^The organiser changed the event at .+\.$/);
      await sleep(1500);
      assert(reads(c) === readsBefore + 1, `the page read the event ${reads(c) - readsBefore} times for an old change heard again`);
      assert((await c.getByTestId('event-changed').count()) === 0, 'no change should be announced for an old change');
      // The buyer chooses; the page is marked, so that a reload would show.
      await c.evaluate(() => {
        window.notReloaded = true;
      });
      await typeRowOf(c, general.id).getByTestId('type-quantity').fill('2');
      await typeRowOf(c, student.id).getByTestId('type-quantity').fill('1');
      await expectText(c, 'order-total', '€25.00');
      // Renamed, then repriced: each shown in place, the quantities kept, the total new; the
      // notice lists both changes since the page's read, not only the last one.
      await apiCall('PATCH', `/events/${live.id}`, { name: `${eventName} renamed` });
      await expectText(c, 'event-name', `${eventName} renamed`);
      await expectText(c, 'event-changed', /^The organiser changed this event: its name\. Dismiss$/);
      await apiCall('PATCH', `/events/${live.id}/ticket-types/${general.id}`, { price: 1200 });
      await expectText(c, 'order-total', '€29.00');
      await expectText(c, 'event-changed', /^The organiser changed this event: its name; General admission now €12\.00\. Your order's total is now €29\.00\. Dismiss$/);
      // Dismissed, the notice goes; the next change starts a new one.
      await c.getByTestId('event-changed-dismiss').click();
      assert((await c.getByTestId('event-changed').count()) === 0, 'the dismissed notice is still shown');
      const price = (await typeRowOf(c, general.id).getByTestId('type-price').textContent()).trim();
      assert(price === '€12.00', `General admission's price reads ${JSON.stringify(price)}`);
      // An organiser's change followed at once by a sale reaches the page as the sale's
      // message (messages are coalesced, 100 ms apart at least, and name their last change):
      // the page still reads the event again. A first sale makes the stream send a message
      // now, so that the change and the next sale fall within its gap and are folded.
      const sale = (n) => apiCall('POST', `/events/${live.id}/tickets`, { quantity: 1 }, { 'X-Device-Fingerprint': `the folded change's buyer ${n}` });
      await sale(1);
      await apiCall('PATCH', `/events/${live.id}`, { name: `${eventName} folded` });
      await sale(2);
      await expectText(c, 'event-name', `${eventName} folded`);
      await expectText(c, 'event-changed', /^The organiser changed this event: its name\./);
      // A type added appears; one taken off sale leaves the order.
      const late = await apiCall('POST', `/events/${live.id}/ticket-types`, { name: 'Late', price: 700 });
      await eventually('the added type on the page', async () => (await typeRowOf(c, late.id).count()) === 1);
      await apiCall('PATCH', `/events/${live.id}/ticket-types/${student.id}`, { active: false });
      await expectText(c, 'order-total', '€24.00');
      const studentState = await typeRowOf(c, student.id).getAttribute('data-sale');
      assert(studentState === 'closed', `the Student row is ${studentState}, not closed`);
      const quantities = [await typeRowOf(c, general.id).getByTestId('type-quantity').inputValue(), await typeRowOf(c, late.id).getByTestId('type-quantity').inputValue()];
      assert(JSON.stringify(quantities) === JSON.stringify(['2', '0']), `the quantities read ${JSON.stringify(quantities)}`);
      assert(await c.evaluate(() => window.notReloaded === true), 'the page was reloaded');
      await shot(c, 'c-organiser-changed');
      // What the page shows is what the server sells: the hold is priced as the page said.
      await c.getByTestId('buy-submit').click();
      await c.waitForURL(/#\/tickets\/[0-9a-f-]{36}$/);
      await expectText(c, 'ticket-total', '€24.00');
    });

    // What an open page shows settles on what the server says, whatever comes late or fails:
    // a read of the changed event answered before the last sale's message, a read that fails,
    // a stream refused. On its own page, whose refusals are made here and judged here.
    await step('an event page settles on the server\'s state: a change just after its read is read, a late read keeps the stream\'s counts, a failed read and a refused stream are tried again', async () => {
      const w = await newPage(browser, 'watcher', { viewport: { width: 1024, height: 900 }, locale: 'en-US' });
      const settled = await apiCall('POST', '/events', { name: `${eventName} settling`, date: '2031-07-01T20:00:00Z', totalTickets: 3, currency: 'EUR', price: 1000 });
      const only = (await apiCall('GET', `/events/${settled.id}`)).ticketTypes[0];
      const eventPath = `/events/${settled.id}`;
      // The organiser renames the event after the page read it and before its stream's
      // snapshot: the snapshot's organiserChangeSeq is above the read's, so the page reads
      // again. And that first stream is refused (503): EventSource closes for good on it;
      // the page must open another. Until then, the page reads "Reconnecting…".
      let refusedStreams = 0;
      await w.route(`**${eventPath}/stream`, async (route) => {
        if (refusedStreams++ > 0) return route.continue();
        await apiCall('PATCH', eventPath, { name: `${eventName} settled` });
        return route.fulfill({ status: 503, contentType: 'application/json', body: '{"error":"the service is temporarily unavailable","code":"SERVICE_UNAVAILABLE"}' });
      });
      await w.goto(`${base}/#/events/${settled.id}`);
      await expectText(w, 'live-status', 'Live', 10_000);
      assert(refusedStreams >= 2, `the stream was asked for ${refusedStreams} times`);
      await expectText(w, 'event-name', `${eventName} settled`);
      await expectText(w, 'event-changed', /^The organiser changed this event: its name\. Dismiss$/);
      await expectText(w, 'last-change', 'The organiser changed the event.');
      // Sold out: a buyer holds all three.
      const holder = { 'X-Device-Fingerprint': 'the settling test\'s holder' };
      const hold = await apiCall('POST', `/events/${settled.id}/tickets`, { quantity: 3 }, holder);
      await expectText(w, 'buy-submit', 'Sold out');
      // The organiser moves the date; the page's read of it is answered at once by the
      // server but reaches the page 1.5 s late, after the holder's cancel and its message.
      let delayed = 0;
      await w.route(`**${eventPath}`, async (route) => {
        if (route.request().method() !== 'GET') return route.continue();
        const response = await route.fetch();
        delayed += 1;
        await sleep(1500);
        await route.fulfill({ response });
      });
      await apiCall('PATCH', eventPath, { date: '2031-07-02T20:00:00Z' });
      await eventually('the page reading the changed event', async () => delayed === 1);
      await apiCall('DELETE', `/tickets/${hold.id}/payment`, undefined, holder);
      // The rename was not dismissed: the notice lists it and the date.
      await expectText(w, 'event-changed', /^The organiser changed this event: its name; its date/);
      await sleep(300);
      await expectText(w, 'stat-available', '3');
      const state = await typeRowOf(w, only.id).getAttribute('data-sale');
      assert(state === 'on-sale', `the type reads ${state} after the late read, though the stream said 3 left`);
      await expectText(w, 'buy-submit', 'Hold tickets');
      await w.unroute(`**${eventPath}`);
      // A read that fails once is tried again by itself: the new price shows with no click
      // and no further message.
      let failed = 0;
      await w.route(`**${eventPath}`, (route) => {
        if (route.request().method() !== 'GET' || failed++ > 0) return route.continue();
        return route.fulfill({ status: 503, contentType: 'application/json', body: '{"error":"the service is temporarily unavailable","code":"SERVICE_UNAVAILABLE"}' });
      });
      await apiCall('PATCH', `${eventPath}/ticket-types/${only.id}`, { price: 1500 });
      await expectText(w, 'event-changed', /could not be read again/);
      await expectText(w, 'event-changed', /now €15\.00/, 10_000);
      const price = (await typeRowOf(w, only.id).getByTestId('type-price').textContent()).trim();
      assert(price === '€15.00', `the price reads ${JSON.stringify(price)}`);
      const unexpected = w.refusals.filter((r) => r.status !== 503 || !r.url.includes(eventPath));
      assert(unexpected.length === 0, `unexpected refusals: ${JSON.stringify(unexpected)}`);
      const problems = w.problems.filter((p) => !p.includes('answered') || !p.includes('503'));
      assert(problems.length === 0, problems.join('; '));
      await w.context().close();
    });

    // Refunds need the admin token, which would also lock the new-event form: so they come
    // last, after a restart of the server with a token, on the same data and port.
    await step('refunds show on the ticket and in "My tickets" (the server restarted with an admin token)', async () => {
      for (const page of [a, b, c]) await page.goto('about:blank');
      const problem = await stopServer();
      assert(problem === null, problem);
      await startServer(['--admin-token', ADMIN_TOKEN], Number(new URL(base).port));
      const admin = { Authorization: `Bearer ${ADMIN_TOKEN}` };
      await apiCall('POST', `/tickets/${pricedHold}/refund`, { lines: [{ ticketTypeId: typeIds.student, quantity: 1 }], reason: 'Not a student' }, admin);
      await c.goto(`${base}/#/tickets/${pricedHold}`);
      await c.getByTestId('confirmation').waitFor();
      await expectText(c, 'ticket-total', '€33.00');
      await expectText(c, 'ticket-refunded', '−€8.00');
      await expectText(c, 'line-refunded', '· 1 refunded');
      await expectText(c, 'refund', /^€8\.00 for 1 × Student · .+ · Not a student$/);
      await shot(c, 'c-partly-refunded');
      // The rest of the order: nothing is left, so the order reads refunded.
      await apiCall('POST', `/tickets/${pricedHold}/refund`, {}, admin);
      await c.reload();
      await c.getByTestId('hold-refunded').waitFor();
      const heading = await c.getByTestId('hold-refunded').locator('h1').textContent();
      assert(heading === 'Tickets refunded', `the refunded order's page is headed ${JSON.stringify(heading)}`);
      await expectText(c, 'ticket-refunded', '−€33.00');
      assert((await c.getByTestId('refund').count()) === 2, 'both refunds should be listed');
      await shot(c, 'c-refunded');
      await c.getByTestId('nav-tickets').click();
      const row = c.locator(`[data-testid=ticket-row][data-ticket-id="${pricedHold}"]`);
      await row.waitFor();
      const shown = [await row.getByTestId('ticket-status').textContent(), await row.getByTestId('ticket-refunded').textContent()];
      assert(JSON.stringify(shown) === JSON.stringify(['Refunded', ' · €33.00 refunded']), `the row reads ${JSON.stringify(shown)}`);
    });

    // The organiser on the page: the new-event form with a token (the server now asks for one).
    const organised = {};
    await step('the new-event form takes an organiser token: refused without one and with a wrong one, then kept for the tab and sent only to create events', async () => {
      o = await newPage(browser, 'organiser', { viewport: { width: 1024, height: 900 }, locale: 'en-US' });
      organised.token = await createToken(['--scope', 'organiser', '--name', 'browser test organiser']);
      organised.name = `${eventName} organised`;
      await o.goto(`${base}/#/new`);
      await o.getByTestId('create-name').fill(organised.name);
      await o.getByTestId('create-total').fill('4');
      await o.getByTestId('create-currency').fill('EUR');
      await o.getByTestId('create-price').fill('10.00');
      // No token: 401, and the page says a token is needed, at the token's field.
      await o.getByTestId('create-submit').click();
      await expectText(o, 'create-error', /^This box office needs an organiser token to create events\./);
      assert((await o.getByTestId('organiser-token').getAttribute('aria-invalid')) === 'true', 'the token field should be marked');
      assert(/#\/new$/.test(o.url()), `stayed on the form, but the page is ${o.url()}`);
      await shot(o, 'o-token-needed');
      // A wrong token: 403, said so, and not kept.
      await o.getByTestId('organiser-token').fill('not-the-organiser-token');
      await o.getByTestId('create-submit').click();
      await expectText(o, 'create-error', /^The organiser token was refused/);
      assert(/#\/new$/.test(o.url()), `stayed on the form, but the page is ${o.url()}`);
      const keptWrong = await o.evaluate(() => Object.values(sessionStorage).some((value) => value.includes('not-the-organiser-token')));
      assert(!keptWrong, 'a refused token should not be kept');
      await shot(o, 'o-token-refused');
      // The organiser token from `boxoffice tokens create`: the event is made.
      await o.getByTestId('organiser-token').fill(organised.token);
      await o.getByTestId('create-submit').click();
      await o.waitForURL(/#\/events\/[0-9a-f-]{36}$/);
      organised.id = o.url().split('/').pop();
      await expectText(o, 'event-name', organised.name);
      // Kept for this tab: the form says so, and a second event needs no typing.
      await o.getByTestId('nav-new').click();
      await o.getByTestId('organiser-token-kept').waitFor();
      await o.getByTestId('create-name').fill(`${organised.name} again`);
      await o.getByTestId('create-submit').click();
      await o.waitForURL(/#\/events\/[0-9a-f-]{36}$/);
      await expectText(o, 'event-name', `${organised.name} again`);
      // The token went with the three attempts to create an event, and with nothing else.
      const sent = o.apiRequests.filter((r) => r.authorization !== undefined).map((r) => `${r.method} ${r.path} ${r.authorization}`);
      const expected = ['not-the-organiser-token', organised.token, organised.token].map((token) => `POST /events Bearer ${token}`);
      assert(JSON.stringify(sent) === JSON.stringify(expected), `Authorization was sent as ${JSON.stringify(sent)}, expected ${JSON.stringify(expected)}`);
      const leaks = [...o.urls, ...o.consoleTexts].filter((text) => text.includes(organised.token));
      assert(leaks.length === 0, `the token shows in ${JSON.stringify(leaks)}`);
      // Forgotten on request.
      await o.getByTestId('nav-new').click();
      await o.getByTestId('organiser-token-forget').click();
      await expectText(o, 'organiser-token-status', /^Forgotten\./);
      assert((await o.getByTestId('organiser-token').inputValue()) === '', 'the token field should be empty');
      const kept = await o.evaluate((token) => Object.values(sessionStorage).some((value) => value.includes(token)), organised.token);
      assert(!kept, 'the token should be gone from sessionStorage');
      await shot(o, 'o-token-forgotten');
    });

    await step('the event page\'s last change names every kind of change: a sale, a refund, an organiser\'s change, the waiting list', async () => {
      const admin = { Authorization: `Bearer ${ADMIN_TOKEN}` };
      await o.goto(`${base}/#/events/${organised.id}`);
      await expectText(o, 'live-status', 'Live');
      // Every kind is tried even when one fails, so that a run names all that are missing.
      const missing = [];
      const expectChange = async (kind, pattern) => {
        try {
          await expectText(o, 'last-change', pattern, 5000);
        } catch (error) {
          missing.push(`${kind}: ${error.message}`);
        }
      };
      const buyer = { 'X-Device-Fingerprint': 'the last-change test\'s buyer' };
      const hold = await apiCall('POST', `/events/${organised.id}/tickets`, { quantity: 4 }, buyer);
      await expectChange('ticket_allocated', /^Tickets were held at .+\.$/);
      await apiCall('POST', `/tickets/${hold.id}/payment`, { paymentToken: 'tok_visa' }, buyer);
      await expectChange('ticket_purchased', /^Tickets were sold at .+\.$/);
      await apiCall('POST', `/tickets/${hold.id}/refund`, { lines: [{ ticketTypeId: hold.lines[0].ticketTypeId, quantity: 1 }] }, admin);
      await expectChange('ticket_refunded', /^Tickets were refunded at .+\.$/);
      await apiCall('PATCH', `/events/${organised.id}`, { totalTickets: 5 }, admin);
      await expectText(o, 'stat-total', '5');
      await expectChange('event_updated', /^The organiser changed the event at .+\.$/);
      // Two left, three wanted: the buyer joins the line.
      await apiCall('POST', `/events/${organised.id}/waiting-list`, { quantity: 3 }, { 'X-Device-Fingerprint': 'the last-change test\'s waiter' });
      await expectChange('waiting_list_changed', /^The waiting list changed at .+\.$/);
      await shot(o, 'o-last-change');
      assert(missing.length === 0, missing.join('\n'));
    });

    // The waiting list: a sold-out event's page offers to join it; a hold given back becomes
    // the offer of the buyer in line, shown in "My tickets" within seconds and paid from there.
    const wait = { holder: { 'X-Device-Fingerprint': 'the waiting-list test\'s holder' } };
    const waitingRowOf = (page) => page.locator(`[data-testid=waiting-row][data-entry-id="${wait.entry.id}"]`);
    await step('a sold-out event offers its waiting list: buyer B joins and reads number 1 in line', async () => {
      wait.event = await apiCall('POST', '/events', { name: `${eventName} waiting`, date: '2031-06-01T20:00:00Z', totalTickets: 1, currency: 'EUR', price: 2000 }, { Authorization: `Bearer ${ADMIN_TOKEN}` });
      // Another buyer holds the one ticket, unpaid.
      wait.hold = await apiCall('POST', `/events/${wait.event.id}/tickets`, { quantity: 1 }, wait.holder);
      await b.goto(`${base}/#/events/${wait.event.id}`);
      await expectText(b, 'stat-available', '0');
      await expectText(b, 'buy-submit', 'Sold out');
      await b.getByTestId('wait-section').waitFor();
      await b.getByTestId('wait-join').click();
      await expectText(b, 'wait-position', '1');
      await expectText(b, 'wait-joined', /^You are number 1 in line for 1 ticket\. /);
      await shot(b, 'b-waiting-joined');
      // Joining twice is refused, and said so.
      await b.getByTestId('wait-join').click();
      await expectText(b, 'wait-error', /^You are already on the waiting list for these tickets\./);
      // The API, as the page's buyer: the fingerprint the page sends.
      const sent = b.apiRequests.filter((r) => r.path === `/events/${wait.event.id}/waiting-list`);
      assert(sent.length === 2 && sent[0].fingerprint, `the page sent ${JSON.stringify(sent)}`);
      wait.buyer = { 'X-Device-Fingerprint': sent[0].fingerprint };
      const { data } = await apiCall('GET', '/waiting-list', undefined, wait.buyer);
      wait.entry = data.find((e) => e.eventId === wait.event.id);
      assert(wait.entry?.status === 'waiting' && wait.entry.position === 1 && wait.entry.quantity === 1, `B's entries are ${JSON.stringify(data)}`);
    });

    await step('the holder cancels: "My tickets" shows B the offer with a live countdown and Pay within seconds', async () => {
      await b.getByTestId('wait-to-my-tickets').click();
      const row = waitingRowOf(b);
      await row.waitFor();
      const before = [await row.getByTestId('waiting-status').textContent(), await row.getByTestId('waiting-position').textContent(), await row.getByTestId('waiting-event').textContent()];
      assert(JSON.stringify(before) === JSON.stringify(['Waiting', '1', `${eventName} waiting`]), `the entry reads ${JSON.stringify(before)}`);
      assert(!(await row.getByTestId('waiting-pay').count()), 'a waiting entry should offer no Pay');
      await apiCall('DELETE', `/tickets/${wait.hold.id}/payment`, undefined, wait.holder);
      await eventually('the offer in "My tickets" without a reload', async () => (await row.getAttribute('data-status')) === 'offered' && (await row.getByTestId('waiting-pay').isVisible()), 10_000);
      await expectText(b, 'waiting-status', 'Offered');
      const first = await expectText(b, 'waiting-countdown', /^\d+:\d\d$/);
      const [m, s] = first.split(':').map(Number);
      assert(m * 60 + s > 25 * 60 && m * 60 + s <= 30 * 60, `the countdown ${first} should be under the 30 minutes an offer lasts`);
      await eventually('the offer\'s countdown to tick', async () => (await textOf(b, 'waiting-countdown')) !== first, 3000);
      await row.getByTestId('waiting-decline').waitFor();
      wait.entry = await apiCall('GET', `/waiting-list/${wait.entry.id}`, undefined, wait.buyer);
      assert(wait.entry.status === 'offered' && wait.entry.offer?.allocationId, `the entry is ${JSON.stringify(wait.entry)}`);
      // The offer is a hold of B's, listed with the others once the offer came.
      await b.locator(`[data-testid=ticket-row][data-ticket-id="${wait.entry.offer.allocationId}"]`).waitFor();
      await shot(b, 'b-waiting-offered');
    });

    await step('B pays the offer: the entry reads accepted and the ticket is B\'s, purchased', async () => {
      await waitingRowOf(b).getByTestId('waiting-pay').click();
      await b.waitForURL(new RegExp(`#/tickets/${wait.entry.offer.allocationId}$`));
      await expectText(b, 'pay-submit', /^Pay .*20\.00/);
      await b.getByTestId('card-visa').check();
      await b.getByTestId('pay-submit').click();
      await expectText(b, 'confirmation-code', /^BX-/);
      await b.getByTestId('to-my-tickets').click();
      const row = waitingRowOf(b);
      await eventually('the entry to read accepted', async () => (await row.getAttribute('data-status')) === 'accepted');
      assert((await row.getByTestId('waiting-status').textContent()) === 'Accepted', 'the entry\'s badge should read Accepted');
      assert(!(await row.getByTestId('waiting-pay').count()), 'an accepted entry should offer no Pay');
      const ticket = b.locator(`[data-testid=ticket-row][data-ticket-id="${wait.entry.offer.allocationId}"]`);
      await eventually('the offer\'s hold to be listed as Purchased', async () => (await ticket.getByTestId('ticket-status').textContent()).trim() === 'Purchased');
      await shot(b, 'b-waiting-accepted');
      const entry = await apiCall('GET', `/waiting-list/${wait.entry.id}`, undefined, wait.buyer);
      const paid = await apiCall('GET', `/tickets/${wait.entry.offer.allocationId}`, undefined, wait.buyer);
      const event = await apiCall('GET', `/events/${wait.event.id}`);
      assert(entry.status === 'accepted' && entry.position === null, `the entry is ${JSON.stringify(entry)}`);
      assert(paid.status === 'purchased' && paid.quantity === 1 && /^BX-/.test(paid.confirmationCode), `the offer's hold is ${JSON.stringify(paid)}`);
      assert(event.purchasedTickets === 1 && event.waitingListLength === 0 && event.availableTickets === 0, `the event reads ${JSON.stringify(event)}`);
    });

    await step('B joins again and leaves the line from "My tickets"', async () => {
      await b.goto(`${base}/#/events/${wait.event.id}`);
      const [response] = await Promise.all([
        b.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === `/events/${wait.event.id}/waiting-list`),
        b.getByTestId('wait-join').click(),
      ]);
      assert(response.status() === 201, `joining again answered ${response.status()}`);
      const again = await response.json();
      await expectText(b, 'wait-position', '1');
      await b.getByTestId('wait-to-my-tickets').click();
      const row = b.locator(`[data-testid=waiting-row][data-entry-id="${again.id}"]`);
      await row.getByTestId('waiting-leave').click();
      await eventually('the entry to read Left', async () => (await row.getByTestId('waiting-status').textContent()) === 'Left');
      assert(!(await row.getByTestId('waiting-leave').count()), 'an entry that left should offer no Leave');
      const entry = await apiCall('GET', `/waiting-list/${again.id}`, undefined, wait.buyer);
      assert(entry.status === 'left', `the entry is ${JSON.stringify(entry)}`);
    });

    // The door: a paid order's QR codes, then the scanner page in a browser whose camera
    // films a real ticket's QR code, online and offline.
    const door = { event: null, tickets: {}, token: null };
    await step('a paid order shows one QR code per admission, and it reads back as the admission\'s code', async () => {
      door.event = await apiCall('POST', '/events', { name: `${eventName} door`, date: '2031-05-01T20:00:00Z', totalTickets: 10 }, { Authorization: `Bearer ${ADMIN_TOKEN}` });
      await c.goto(`${base}/#/events/${door.event.id}`);
      await c.getByTestId('buy-quantity').fill('1');
      await c.getByTestId('buy-submit').click();
      await c.waitForURL(/#\/tickets\/[0-9a-f-]{36}$/);
      const [response] = await Promise.all([
        c.waitForResponse((r) => r.request().method() === 'POST' && /\/payment$/.test(new URL(r.url()).pathname)),
        c.getByTestId('pay-submit').click(),
      ]);
      const paid = await response.json();
      assert(paid.status === 'purchased' && paid.admissions?.length === 1, `the payment answered ${JSON.stringify(paid)}`);
      const [admission] = paid.admissions;
      assert(admission.status === 'valid' && admission.code.length <= 160, `the admission is ${JSON.stringify(admission)}`);
      door.tickets.south = admission.code;
      door.southAdmission = admission.id;
      const qr = c.locator(`[data-testid=admission][data-admission-id="${admission.id}"] [data-testid=admission-qr]`);
      await eventually('the QR code to load', () => qr.evaluate((img) => img.complete && img.naturalWidth > 0));
      // The picture the buyer shows, read by the same decoder as the door's camera.
      const read = await qr.evaluate(async (img) => {
        if (typeof window.jsQR !== 'function') {
          await new Promise((resolve, reject) => {
            const script = document.createElement('script');
            script.src = '/assets/vendor/jsQR.js';
            script.onload = resolve;
            script.onerror = reject;
            document.head.append(script);
          });
        }
        const canvas = document.createElement('canvas');
        canvas.width = 400;
        canvas.height = 400;
        const context = canvas.getContext('2d');
        context.fillStyle = '#fff';
        context.fillRect(0, 0, 400, 400);
        context.drawImage(img, 20, 20, 360, 360);
        return window.jsQR(context.getImageData(0, 0, 400, 400).data, 400, 400)?.data ?? null;
      });
      assert(read === admission.code, `the QR code on the page reads ${JSON.stringify(read)}, expected ${admission.code}`);
      await shot(c, 'c-admission-qr');
      await c.getByTestId('to-my-tickets').click();
      const row = c.locator(`[data-testid=ticket-row][data-ticket-id="${paid.id}"]`);
      await eventually('the QR code in "My tickets"', () => row.getByTestId('admission-qr').evaluate((img) => img.complete && img.naturalWidth > 0));
    });

    await step('a door token for the event from `boxoffice tokens create`, beside the running server', async () => {
      const buyer = { 'X-Device-Fingerprint': 'the door test\'s buyer' };
      const hold = await apiCall('POST', `/events/${door.event.id}/tickets`, { quantity: 2 }, buyer);
      const paid = await apiCall('POST', `/tickets/${hold.id}/payment`, { paymentToken: 'tok_visa' }, buyer);
      assert(paid.admissions?.length === 2, `the payment answered ${JSON.stringify(paid)}`);
      [door.tickets.camera, door.tickets.typed] = paid.admissions.map((ad) => ad.code);
      door.token = await createToken(['--scope', 'door', '--event', door.event.id, '--name', 'browser test door']);
    });

    await step('the fake camera films the ticket\'s QR code, and the page\'s jsQR reads it back', async () => {
      const [width, height, fps] = [640, 480, 10];
      const frame = qrFrame(door.tickets.camera, width, height);
      const read = decodeLuma(frame, width, height);
      assert(read === door.tickets.camera, `the frame reads ${JSON.stringify(read)}`);
      // Two seconds of the code, two of nothing, looped by Chromium: the code comes into
      // view, leaves, and comes back, as a ticket shown twice.
      const video = path.join(workDir, 'camera.y4m');
      writeY4m(video, { width, height, fps }, [{ luma: frame, frames: 2 * fps }, { luma: qrFrame(null, width, height), frames: 2 * fps }]);
      scanner = await chromium.launch({
        executablePath: CHROMIUM,
        headless: true,
        args: [...CHROMIUM_ARGS, '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', `--use-file-for-fake-video-capture=${video}`],
        timeout: 60_000,
      });
      d = await newPage(scanner, 'door', { viewport: { width: 800, height: 1000 } });
      await d.context().grantPermissions(['camera'], { origin: base });
    });

    await step('scan with the camera: green, then the same code again: red with the first gate', async () => {
      await d.goto(`${base}/#/scan`);
      await d.getByTestId('door-token').fill(door.token);
      await d.getByTestId('door-token-save').click();
      await d.getByTestId('scan-event').selectOption(door.event.id);
      await d.getByTestId('scan-gate').fill('North');
      await d.getByTestId('scan-start').click();
      await expectText(d, 'scan-network', 'online');
      await d.getByTestId('scan-camera').click();
      await eventually('a green answer from the camera', async () => (await d.getByTestId('scan-result').getAttribute('data-result')) === 'admitted', 15_000);
      await expectText(d, 'scan-verdict', 'Admitted');
      await expectText(d, 'scan-count', '1');
      await shot(d, 'd-admitted');
      await eventually('a red answer when the code is shown again', async () => (await d.getByTestId('scan-result').getAttribute('data-result')) === 'duplicate', 15_000);
      await expectText(d, 'scan-verdict', 'Already checked in');
      await expectText(d, 'scan-detail', /^First admitted at .+ at North\.$/);
      await shot(d, 'd-duplicate');
      await d.getByTestId('scan-camera').click();
      await expectText(d, 'scan-count', '1');
      const stats = await apiCall('GET', `/events/${door.event.id}/checkins/stats`, undefined, { Authorization: `Bearer ${door.token}` });
      assert(stats.admitted === 1 && stats.valid === 2, `the stats read ${JSON.stringify(stats)}`);
    });

    await step('offline: scans decided on the device and queued, uploaded when back online, the conflict shown', async () => {
      const typeCode = async (code) => {
        await d.getByTestId('scan-code').fill(code);
        await d.getByTestId('scan-submit').click();
      };
      const result = async () => [await d.getByTestId('scan-result').getAttribute('data-result'), await d.getByTestId('scan-result').getAttribute('data-offline')];
      await d.context().setOffline(true);
      await expectText(d, 'scan-network', 'offline, 0 queued');
      await typeCode(door.tickets.typed);
      await eventually('an offline green answer', async () => JSON.stringify(await result()) === '["admitted","true"]');
      await expectText(d, 'scan-network', 'offline, 1 queued');
      await expectText(d, 'scan-count', '2');
      await shot(d, 'd-offline');
      // Meanwhile another gate, online, admits the buyer of the page's ticket.
      await apiCall('POST', `/events/${door.event.id}/checkins`, { code: door.tickets.south, gate: 'South', nonce: 'browser-test-south' }, { Authorization: `Bearer ${door.token}` });
      // This device does not know it: it admits the same ticket, a conflict for later.
      await typeCode(door.tickets.south);
      await expectText(d, 'scan-network', 'offline, 2 queued');
      assert(JSON.stringify(await result()) === '["admitted","true"]', `the second offline scan answered ${JSON.stringify(await result())}`);
      // The camera's ticket was admitted here before: red without the network.
      await typeCode(door.tickets.camera);
      await expectText(d, 'scan-network', 'offline, 3 queued');
      assert(JSON.stringify(await result()) === '["duplicate","true"]', `the third offline scan answered ${JSON.stringify(await result())}`);
      await expectText(d, 'scan-detail', /at North\.$/);
      // A forged code: the right shape, another key's signature.
      const forged = Buffer.from(door.tickets.typed, 'base64url');
      forged[100] ^= 0xff;
      await typeCode(forged.toString('base64url'));
      await eventually('a red answer to a forged code', async () => (await result())[0] === 'invalid');
      await expectText(d, 'scan-network', 'offline, 4 queued');
      await d.context().setOffline(false);
      await expectText(d, 'scan-network', 'online', 15_000);
      await expectText(d, 'scan-upload', 'Uploaded 4 queued scans: 1 admitted, 3 not, 1 conflict.');
      await expectText(d, 'scan-conflict', /^Ticket [0-9a-f]{8} scanned here at .+; first admitted at .+ at South\.$/);
      await expectText(d, 'scan-count', '2');
      await shot(d, 'd-uploaded');
      const stats = await apiCall('GET', `/events/${door.event.id}/checkins/stats`, undefined, { Authorization: `Bearer ${door.token}` });
      const gates = Object.fromEntries(stats.byGate.map((g) => [g.gate, g.admitted]));
      assert(stats.admitted === 3 && stats.valid === 0 && gates.North === 2 && gates.South === 1, `the stats read ${JSON.stringify(stats)}`);
      await expectText(d, 'scan-event-count', 'Event: 3 admitted · 0 to come');
      // The organiser sees the conflict the page showed: South's check-in stands, North's scan is the other.
      const { conflicts } = await apiCall('GET', `/events/${door.event.id}/checkins/conflicts`, undefined, { Authorization: `Bearer ${ADMIN_TOKEN}` });
      const south = conflicts.find((conflict) => conflict.admissionId === door.southAdmission);
      assert(south?.admitted.gate === 'South' && south.conflicting.gate === 'North', `the conflicts read ${JSON.stringify(conflicts)}`);
    });

    await step('a gate the server refuses is a setup problem, never "Not a valid ticket"; the form refuses such gates first', async () => {
      g = await newPage(browser, 'gate', { viewport: { width: 800, height: 1000 } });
      const doorAuth = { Authorization: `Bearer ${door.token}` };
      // A paid ticket no one has scanned yet.
      const buyer = { 'X-Device-Fingerprint': 'the gate test\'s buyer' };
      const hold = await apiCall('POST', `/events/${door.event.id}/tickets`, { quantity: 1 }, buyer);
      const paid = await apiCall('POST', `/tickets/${hold.id}/payment`, { paymentToken: 'tok_visa' }, buyer);
      const ticket = paid.admissions[0];
      await g.goto(`${base}/#/scan`);
      await g.getByTestId('door-token').fill(door.token);
      await g.getByTestId('door-token-save').click();
      await g.getByTestId('scan-event').selectOption(door.event.id);
      // The server's rule may refuse a gate this page lets through (a newer Unicode, say): the
      // gate of every check-in is swapped in flight for one the server refuses, U+200B alone.
      await g.route('**/events/*/checkins', (route) => route.continue({ postData: JSON.stringify({ ...route.request().postDataJSON(), gate: '\u200b' }) }));
      await g.getByTestId('scan-gate').fill('West');
      await g.getByTestId('scan-start').click();
      await expectText(g, 'scan-network', 'online');
      await g.getByTestId('scan-code').fill(ticket.code);
      await g.getByTestId('scan-submit').click();
      await eventually('an answer to the scan', async () => (await g.getByTestId('scan-result').getAttribute('data-result')) !== null);
      const result = await g.getByTestId('scan-result').getAttribute('data-result');
      assert(result === 'error', `the scan at a refused gate reads ${JSON.stringify(result)}: ${await textOf(g, 'scan-verdict')} / ${await textOf(g, 'scan-detail')}`);
      await expectText(g, 'scan-verdict', 'Not checked');
      await expectText(g, 'scan-detail', /^The gate name is refused: must contain a visible character\. The ticket was not checked/);
      await shot(g, 'g-gate-refused');
      const before = await apiCall('GET', `/events/${door.event.id}/checkins/stats`, undefined, doorAuth);
      assert(before.valid === 1, `the ticket should still be valid: the stats read ${JSON.stringify(before)}`);
      // The ticket itself was fine: with the gate as typed it is admitted.
      await g.unroute('**/events/*/checkins');
      await g.getByTestId('scan-code').fill(ticket.code);
      await g.getByTestId('scan-submit').click();
      await eventually('the ticket admitted at a gate the server takes', async () => (await g.getByTestId('scan-result').getAttribute('data-result')) === 'admitted');
      const after = await apiCall('GET', `/events/${door.event.id}/checkins/stats`, undefined, doorAuth);
      assert(after.valid === 0 && after.byGate.some((row) => row.gate === 'West' && row.admitted === 1), `the stats read ${JSON.stringify(after)}`);

      // The setup form refuses what the server would: each gate checked by the page and sent
      // to the server (with a code that is not one, so nothing is admitted) gets one verdict.
      const gates = ['North 1', '  North \u00a0 1\u200b', 'Cafe\u0301', '\u202eNorth\u200b', '\u2764\ufe0f', 'é'.repeat(64), '😀'.repeat(64),
        '\ufb2c'.repeat(21), '', '   ', '\u200b', '\u2060', '\u00ad', '\u200e', '\u2800', '\u00a0\u3000', 'a\nb', 'g'.repeat(65), '\ufb2c'.repeat(22)];
      const pageSays = await g.evaluate(async (list) => {
        const m = await import('/assets/scan.js');
        return list.map((gate) => m.parseGate(gate));
      }, gates);
      for (const [i, gate] of gates.entries()) {
        const response = await fetch(`${base}/events/${door.event.id}/checkins`, {
          method: 'POST',
          headers: { ...doorAuth, 'Content-Type': 'application/json' },
          body: JSON.stringify({ code: 'not-a-ticket-code', gate, nonce: `gate-rule-${i}` }),
        });
        const answer = await response.json();
        const serverRefusal = answer.code === 'VALIDATION_ERROR' ? answer.details.find((d) => d.field === 'gate')?.message : undefined;
        assert(answer.code === 'INVALID_TICKET_CODE' || serverRefusal, `the server answered ${JSON.stringify(answer)} for the gate ${JSON.stringify(gate)}`);
        assert(pageSays[i].error === serverRefusal, `the gate ${JSON.stringify(gate)}: the page says ${JSON.stringify(pageSays[i])}, the server ${serverRefusal ?? 'takes it'}`);
      }
      await g.getByTestId('scan-change').click();
      for (const [gate, message] of [['\u200b', 'The gate name must contain a visible character.'], ['\ufb2c'.repeat(22), 'The gate name must be 1 to 64 characters.']]) {
        await g.getByTestId('scan-gate').fill(gate);
        await g.getByTestId('scan-start').click();
        await expectText(g, 'scan-setup-error', message);
      }
      await shot(g, 'g-gate-form');
      // Nothing else went wrong on this page: the one refusal is the swapped gate's.
      const problems = [...g.problems];
      for (const { text, url } of g.consoleErrors) {
        const failed = /^Failed to load resource: the server responded with a status of (\d{3})/.exec(text);
        const known = failed && g.refusals.some((r) => r.url === url && r.status === Number(failed[1]));
        if (!known) problems.push(`gate: console error ${text}${url ? ` (${url})` : ''}`);
      }
      const refusals = g.refusals.map((r) => r.key);
      if (JSON.stringify(refusals) !== JSON.stringify(['POST /events/{id}/checkins 422'])) problems.push(`gate: answers of 400 or more: ${JSON.stringify(refusals)}`);
      assert(problems.length === 0, problems.join('\n'));
    });

    await step('the door page: no uncaught or console errors, no 5xx, only "already checked in" refusals', async () => {
      const problems = [...d.problems];
      for (const { text, url } of d.consoleErrors) {
        const failed = /^Failed to load resource: the server responded with a status of (\d{3})/.exec(text);
        const known = failed && d.refusals.some((r) => r.url === url && r.status === Number(failed[1]));
        if (!known) problems.push(`door: console error ${text}${url ? ` (${url})` : ''}`);
      }
      const unexpected = d.refusals.map((r) => r.key).filter((key) => key !== 'POST /events/{id}/checkins 409');
      if (unexpected.length > 0) problems.push(`door: answers of 400 or more: ${JSON.stringify(unexpected)}`);
      assert(d.refusals.length > 0, 'the camera\'s second sight of the code should have been refused');
      assert(problems.length === 0, problems.join('\n'));
    });

    await step('no uncaught or console errors, no 5xx, and only the refusals the flows provoke', async () => {
      const problems = [...a.problems, ...b.problems, ...c.problems, ...o.problems];
      for (const [name, page] of [['buyer A', a], ['buyer B', b], ['buyer C', c], ['organiser', o]]) {
        for (const { text, url } of page.consoleErrors) {
          // Chromium logs every answer of 400 or more as "Failed to load resource"; such a
          // line is the refusal itself, judged below, when the page got that answer there.
          const failed = /^Failed to load resource: the server responded with a status of (\d{3})/.exec(text);
          const known = failed && page.refusals.some((r) => r.url === url && r.status === Number(failed[1]));
          if (!known) problems.push(`${name}: console error ${text}${url ? ` (${url})` : ''}`);
        }
      }
      const seen = [...a.refusals, ...b.refusals, ...c.refusals, ...o.refusals].map((r) => r.key).sort();
      const expected = [...EXPECTED_REFUSALS].sort();
      if (JSON.stringify(seen) !== JSON.stringify(expected)) {
        problems.push(`answers of 400 or more: ${JSON.stringify(seen)}, expected exactly ${JSON.stringify(expected)}`);
      }
      assert(problems.length === 0, problems.join('\n'));
    });
  } catch (error) {
    if (!(error instanceof StepFailed)) {
      failed++;
      console.log(`FAIL ${error?.stack ?? error}`);
    }
    for (const [name, page] of [['a', a], ['b', b], ['c', c], ['d', d], ['g', g], ['o', o]]) {
      if (!page) continue;
      const file = path.join(ROOT, 'target', `browser-failure-${name}.png`);
      await page.screenshot({ path: file, fullPage: true }).then(
        () => console.log(`     screenshot of buyer ${name.toUpperCase()}'s page: ${path.relative(ROOT, file)}`),
        () => {},
      );
    }
    if (server) console.log(`     server log (last 40 lines):\n${readLog().split('\n').slice(-40).join('\n')}`);
  } finally {
    await browser?.close().catch(() => {});
    await scanner?.close().catch(() => {});
    const stopProblem = await stopServer();
    if (stopProblem) {
      failed++;
      console.log(`FAIL stop the server: ${stopProblem}\n${readLog().split('\n').slice(-40).join('\n')}`);
    } else if (base) {
      passed++;
      console.log('ok   the server stops cleanly on SIGTERM');
    }
    if (workDir && !stopProblem) fs.rmSync(workDir, { recursive: true, force: true });
  }
  console.log(`\nbrowser test took ${seconds(Date.now() - started)}; confirmation screenshot: ${path.relative(ROOT, SCREENSHOT)}`);
  console.log(`browser: ${passed} passed, ${failed} failed`);
  return failed === 0 ? 0 : 1;
}

process.exitCode = await run();
