// The web client's end-to-end scenario, in a real Chromium driven by
// playwright-core: two users in two browser contexts against one Parley
// server. browser_test.go runs it against an all-in-one node; by hand:
//
//   PARLEY_URL=http://127.0.0.1:8080/ node webtest/scenario.mjs
//
// Environment: PARLEY_URL (required), PARLEY_ARTIFACTS (where screenshots
// go; default the current directory), PARLEY_CHROMIUM (default
// /usr/bin/chromium). Exits 0 when every step passed; otherwise prints the
// failing step and exits 1 (screenshots of both pages at the failure are
// saved too).

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import path from 'node:path';

const base = process.env.PARLEY_URL;
const artifacts = process.env.PARLEY_ARTIFACTS || '.';
const executablePath = process.env.PARLEY_CHROMIUM || '/usr/bin/chromium';
const WAIT = 15000; // ms, the bound of every wait
const started = Date.now();

if (!base) {
  console.error('PARLEY_URL is not set (the web client, e.g. http://127.0.0.1:8080/)');
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });

let step = 'launch';
let shots = 0;
const pages = {};

function log(msg) {
  console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);
}

function begin(name) {
  step = name;
  log(name);
}

async function shot(page, name) {
  const file = path.join(artifacts, `${String(++shots).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file });
  log(`screenshot ${file}`);
}

// waitFor waits (in the page, polling) until fn(arg) is true; on timeout it
// fails with what describe(arg) returns then.
async function waitFor(page, what, fn, arg, describe) {
  try {
    await page.waitForFunction(fn, arg, { timeout: WAIT, polling: 50 });
  } catch (err) {
    const now = describe ? await page.evaluate(describe, arg).catch(() => '?') : '';
    throw new Error(`timed out after ${WAIT} ms waiting for ${what}${now ? `; now: ${now}` : ''}`);
  }
}

function bubbles(sel = '#msg-list li.msg .bubble') {
  return [...document.querySelectorAll(sel)].map((e) => e.textContent);
}

// waitMessages waits until the open conversation shows exactly want, in
// this order.
async function waitMessages(page, want, what) {
  await waitFor(
    page,
    what,
    (w) => JSON.stringify([...document.querySelectorAll('#msg-list li.msg .bubble')].map((e) => e.textContent)) === JSON.stringify(w),
    want,
    () => JSON.stringify([...document.querySelectorAll('#msg-list li.msg .bubble')].map((e) => e.textContent)),
  );
}

function convItem(page, name) {
  return page.locator('#convs .conv-item').filter({ has: page.locator('.conv-name').getByText(name, { exact: true }) });
}

// waitBadge waits until the conversation named name shows n unread (0: no badge).
async function waitBadge(page, name, n) {
  await waitFor(
    page,
    `${n} unread on "${name}"`,
    ([name, n]) => {
      for (const b of document.querySelectorAll('#convs .conv-item')) {
        if (b.querySelector('.conv-name').textContent !== name) continue;
        const badge = b.querySelector('.badge');
        return n === 0 ? badge.hidden : !badge.hidden && badge.textContent === String(n);
      }
      return false;
    },
    [name, n],
    () => JSON.stringify([...document.querySelectorAll('#convs .conv-item')].map((b) => [b.querySelector('.conv-name').textContent, b.querySelector('.badge').hidden ? 0 : b.querySelector('.badge').textContent])),
  );
}

async function waitText(page, selector, text, what) {
  await waitFor(
    page,
    what || `${selector} to read "${text}"`,
    ([s, t]) => {
      const e = document.querySelector(s);
      return !!e && e.textContent === t;
    },
    [selector, text],
    ([s]) => JSON.stringify(document.querySelector(s)?.textContent),
  );
}

async function waitConn(page, want) {
  await waitFor(page, `connection state ${want.join(' or ')}`, (w) => w.includes(document.getElementById('conn').dataset.state), want, () =>
    document.getElementById('conn').dataset.state,
  );
}

// receiptOn waits until the message with text shows "Read by <who>".
async function waitReceipt(page, text, who) {
  await waitFor(
    page,
    `"Read by ${who}" under "${text}"`,
    ([t, w]) => [...document.querySelectorAll('#msg-list li.msg')].some((li) => li.querySelector('.bubble').textContent === t && li.querySelector('.receipt').textContent === `Read by ${w}`),
    [text, who],
    () => JSON.stringify([...document.querySelectorAll('#msg-list li.msg')].filter((li) => li.querySelector('.receipt').textContent).map((li) => [li.querySelector('.bubble').textContent, li.querySelector('.receipt').textContent])),
  );
}

async function signIn(page, user) {
  await page.goto(base);
  await page.getByLabel('User name', { exact: true }).waitFor({ timeout: WAIT });
  await page.getByLabel('User name', { exact: true }).fill(user);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await waitConn(page, ['online']);
  await waitText(page, '#me-name', user);
}

async function send(page, text) {
  await page.getByLabel('Message', { exact: true }).fill(text);
  await page.getByLabel('Message', { exact: true }).press('Enter');
}

async function createConv(page, members, title = '') {
  await page.getByText('New conversation').click();
  await page.getByLabel('With (user names, separated by commas)').fill(members);
  await page.getByLabel('Group title (optional)').fill(title);
  await page.getByRole('button', { name: 'Start conversation' }).click();
}

async function main() {
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  try {
    await scenario(browser);
  } catch (err) {
    for (const [name, page] of Object.entries(pages)) {
      await page.screenshot({ path: path.join(artifacts, `failure-${name}.png`) }).catch(() => {});
    }
    throw err;
  } finally {
    await browser.close();
  }
}

async function scenario(browser) {
  const viewport = { width: 1000, height: 620 };
  const ctxA = await browser.newContext({ viewport });
  const ctxB = await browser.newContext({ viewport });
  // Bob's WebSockets are recorded, so that the test can cut his connection
  // and then see that the client opened a new one itself.
  await ctxB.addInitScript(() => {
    const Native = window.WebSocket;
    window.__sockets = [];
    window.WebSocket = class extends Native {
      constructor(...args) {
        super(...args);
        window.__sockets.push(this);
      }
    };
  });
  const alice = (pages.alice = await ctxA.newPage());
  const bob = (pages.bob = await ctxB.newPage());
  for (const [name, page] of Object.entries(pages)) {
    page.on('pageerror', (err) => log(`${name}: page error: ${err.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error') log(`${name}: console error: ${m.text()}`);
    });
  }

  begin('sign in as alice and bob (dev sign-in)');
  await alice.goto(base);
  await alice.getByLabel('User name', { exact: true }).waitFor({ timeout: WAIT });
  await shot(alice, 'sign-in');
  await signIn(alice, 'alice');
  await signIn(bob, 'bob');

  begin('without the sign-in code from parley dev\'s address, no sign-in by name');
  const ctxM = await browser.newContext({ viewport });
  const mallory = await ctxM.newPage();
  await mallory.goto(new URL('/', base).href);
  await mallory.getByText('sign-in code', { exact: false }).first().waitFor({ timeout: WAIT });
  await mallory.getByLabel('User name', { exact: true }).fill('alice');
  await mallory.getByRole('button', { name: 'Sign in', exact: true }).click();
  await waitText(mallory, '#signin-error', 'Sign-in failed: the sign-in code is missing or wrong: open the web client\'s address as parley dev printed it');
  await ctxM.close();

  begin('carol signs in with a pasted token and stays signed in across a reload');
  const code = new URLSearchParams(new URL(base).hash.slice(1)).get('code');
  const res = await fetch(new URL('/dev/token', base), { method: 'POST', body: JSON.stringify({ user: 'carol', code }) });
  if (!res.ok) throw new Error(`POST /dev/token answered ${res.status}`);
  const { token } = await res.json();
  const ctxC = await browser.newContext({ viewport });
  const carol = (pages.carol = await ctxC.newPage());
  await carol.goto(base);
  await carol.getByLabel('Token', { exact: true }).fill(token);
  await carol.getByRole('button', { name: 'Sign in with token' }).click();
  await waitConn(carol, ['online']);
  await waitText(carol, '#me-name', 'carol');
  await carol.reload();
  await waitConn(carol, ['online']);
  await waitText(carol, '#me-name', 'carol');
  await ctxC.close();
  delete pages.carol;

  begin('alice starts a direct conversation with bob and sends');
  await createConv(alice, 'bob');
  await waitText(alice, '#conv-title', 'bob');
  await send(alice, 'Hello Bob!');
  await waitMessages(alice, ['Hello Bob!'], 'alice to see her message sequenced');

  begin('bob sees it live, with its unread badge');
  await waitBadge(bob, 'alice', 1);
  await convItem(bob, 'alice').locator('.conv-preview', { hasText: 'alice: Hello Bob!' }).waitFor({ timeout: WAIT });
  await shot(bob, 'bob-unread');

  begin('bob opens it; alice sees the read receipt');
  await convItem(bob, 'alice').click();
  await waitMessages(bob, ['Hello Bob!'], 'bob to see the message');
  await waitBadge(bob, 'alice', 0);
  await waitReceipt(alice, 'Hello Bob!', 'bob');

  begin('typing indicators on both sides');
  await alice.getByLabel('Message', { exact: true }).fill('Are you');
  await waitText(bob, '#typing', 'alice is typing…');
  await alice.getByLabel('Message', { exact: true }).fill('Are you there?');
  await alice.getByLabel('Message', { exact: true }).press('Enter');
  await waitMessages(bob, ['Hello Bob!', 'Are you there?'], 'bob to get the second message');
  await waitText(bob, '#typing', '', 'bob\'s typing line to clear when alice\'s message arrives');
  await bob.getByLabel('Message', { exact: true }).fill('Yes, here.');
  await waitText(alice, '#typing', 'bob is typing…');
  await shot(alice, 'alice-typing-and-receipt');
  await bob.getByLabel('Message', { exact: true }).press('Enter');
  await waitMessages(alice, ['Hello Bob!', 'Are you there?', 'Yes, here.'], 'alice to get bob\'s reply');
  await waitReceipt(bob, 'Yes, here.', 'alice');
  await waitReceipt(alice, 'Are you there?', 'bob');

  begin('alice creates a group; bob opens it');
  await createConv(alice, 'bob, carol', 'Team');
  await waitText(alice, '#conv-title', 'Team');
  await send(alice, 'Welcome to the team');
  await waitMessages(alice, ['Welcome to the team'], 'alice to see the group message');
  await waitBadge(bob, 'Team', 1);
  await convItem(bob, 'Team').click();
  await waitMessages(bob, ['Welcome to the team'], 'bob to see the group message');
  await waitText(bob, '#conv-sub', 'Group: alice, bob and carol');
  await convItem(alice, 'bob').click();
  await waitMessages(alice, ['Hello Bob!', 'Are you there?', 'Yes, here.'], 'alice back in the direct conversation');

  begin('bob goes offline');
  const socketsBefore = await bob.evaluate(() => {
    window.__sameDocument = true; // a reload would lose it
    return window.__sockets.length;
  });
  await ctxB.setOffline(true);
  await bob.evaluate(() => window.__sockets[window.__sockets.length - 1].close());
  await waitConn(bob, ['waiting', 'offline', 'connecting']);
  await shot(bob, 'bob-offline');

  begin('alice sends while bob is away');
  const missed = ['Missed 1', 'Missed 2', 'Missed 3'];
  for (const m of missed) await send(alice, m);
  await waitMessages(alice, ['Hello Bob!', 'Are you there?', 'Yes, here.', ...missed], 'alice to see the messages bob misses');
  await waitBadge(bob, 'alice', 0); // nothing reached him
  // The client keeps trying on its own, and fails while the network is off.
  await waitFor(
    bob,
    'a reconnect attempt that fails while offline',
    (n) => window.__sockets.slice(n).some((ws) => ws.readyState === WebSocket.CLOSED),
    socketsBefore,
    () => `${window.__sockets.length} sockets, states ${window.__sockets.map((ws) => ws.readyState)}`,
  );
  if ((await bob.evaluate(() => document.getElementById('conn').dataset.state)) === 'online') {
    throw new Error('bob is online while his network is off');
  }

  begin('bob comes back and catches up');
  await ctxB.setOffline(false);
  await waitConn(bob, ['online']);
  const after = await bob.evaluate(() => ({ same: window.__sameDocument === true, sockets: window.__sockets.length }));
  if (!after.same) throw new Error('bob\'s page was reloaded: the client must reconnect by itself');
  if (after.sockets < socketsBefore + 2) throw new Error(`bob's client did not open a new WebSocket after the network came back (${after.sockets} in all)`);
  log(`bob reconnected on his own: ${after.sockets - socketsBefore} new WebSocket(s)`);
  await waitBadge(bob, 'alice', 3);
  await shot(bob, 'bob-caught-up');
  await convItem(bob, 'alice').click();
  await waitMessages(bob, ['Hello Bob!', 'Are you there?', 'Yes, here.', ...missed], 'bob to see every message in order');
  await waitBadge(bob, 'alice', 0);
  await waitReceipt(alice, 'Missed 3', 'bob');
  await bob.getByLabel('Message', { exact: true }).fill('Sorry, I was offline');
  await waitText(alice, '#typing', 'bob is typing…');
  await shot(alice, 'web-client');
  await bob.getByLabel('Message', { exact: true }).press('Enter');
  const all0 = ['Hello Bob!', 'Are you there?', 'Yes, here.', ...missed, 'Sorry, I was offline'];
  await waitMessages(alice, all0, 'alice to get bob\'s message');

  begin('alice sends more than a page of messages');
  const bulk = [];
  for (let i = 1; i <= 60; i++) bulk.push(`Bulk ${String(i).padStart(2, '0')}`);
  for (const m of bulk) await send(alice, m);
  const all = [...all0, ...bulk];
  await waitMessages(alice, all, 'alice to see all her messages sequenced');
  await waitMessages(bob, all, 'bob to get them all live');
  await waitReceipt(alice, 'Bulk 60', 'bob');

  begin('bob on a second device scrolls back through history');
  const bob2 = (pages.bob2 = await ctxB.newPage());
  await signIn(bob2, 'bob');
  await convItem(bob2, 'alice').click();
  await waitFor(
    bob2,
    'the latest page of messages, up to "Bulk 60"',
    () => [...document.querySelectorAll('#msg-list li.msg .bubble')].pop()?.textContent === 'Bulk 60',
    undefined,
    () => JSON.stringify([...document.querySelectorAll('#msg-list li.msg .bubble')].map((e) => e.textContent).slice(-3)),
  );
  const firstPage = await bob2.evaluate(bubbles);
  if (firstPage.length >= all.length) {
    throw new Error(`the first page should hold only part of the ${all.length} messages: ${JSON.stringify(firstPage)}`);
  }
  if (!(await bob2.locator('#load-older').isVisible())) throw new Error('no way to load older messages is shown');
  log(`first page: ${firstPage.length} of ${all.length} messages`);
  await bob2.locator('#messages').hover();
  for (let i = 0; i < 20 && !(await bob2.locator('#beginning').isVisible()); i++) {
    const shown = await bob2.evaluate(() => document.querySelectorAll('#msg-list li').length);
    await bob2.mouse.wheel(0, -5000);
    await waitFor(
      bob2,
      'scrolling up to load older messages',
      (n) => !document.getElementById('beginning').hidden || document.querySelectorAll('#msg-list li').length > n,
      shown,
      () => `scrollTop ${document.getElementById('messages').scrollTop}, ${document.querySelectorAll('#msg-list li').length} shown`,
    );
  }
  await bob2.locator('#beginning').waitFor({ timeout: WAIT });
  await waitMessages(bob2, all, 'every message, oldest first, after scrolling back');
  await bob2.locator('#messages').evaluate((e) => {
    e.scrollTop = 0;
  });
  await shot(bob2, 'history-scrolled-back');

  await ctxA.close();
  await ctxB.close();
}

main().then(
  () => {
    log('PASS');
  },
  (err) => {
    console.error(`FAIL at step "${step}": ${err && err.stack ? err.stack : err}`);
    process.exit(1);
  },
);
