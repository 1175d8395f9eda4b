// Parley's web client: the client protocol of PROTOCOL.md §2 over one
// WebSocket to the server that served this page, in plain JavaScript.
//
// Per conversation it holds a contiguous range of events, seqs lo..hi
// (empty when lo = hi + 1: then it only marks a position). A pushed event
// at hi + 1 is appended; one further ahead reveals a gap, filled from
// history (after hi); older events are paged in with history before lo.
// After every (re)connect it syncs (unread counts, read cursors, last
// seqs), then fills each conversation it holds events of up to the last
// seq the server reported, so nothing missed while away is skipped and
// nothing is shown twice.

const PAGE = 50; // events per page of older history
const FILL_PAGE = 200; // events per page when catching up
const MIN_BACKOFF = 500; // ms, first reconnect delay
const MAX_BACKOFF = 10000; // ms, longest reconnect delay
const REQUEST_TIMEOUT = 15000; // ms without a reply: the request is retried
const PING_AFTER = 20000; // ms with nothing sent: a ping keeps the connection
const PONG_WAIT = 8000; // ms a ping may go unanswered before the connection counts as dead
const TYPING_EVERY = 3000; // ms between typing signals while typing
const TYPING_SHOWN = 6000; // ms a typing signal is shown
const CATCH_UP_AGAIN = [1000, 4000]; // ms after a (re)connect, catch up again
const OFFLINE_PONG_WAIT = 3000; // ms a ping may take once the browser reports the network gone
const USER_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const SESSION_KEY = 'parley.session';
const PAIRS_KEY = 'parley.pairs';

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function randomHex(bytes) {
  const b = crypto.getRandomValues(new Uint8Array(bytes));
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

// ksuid returns a new KSUID (27 base62 characters): a group's id, chosen
// here so that a retried create makes the same group.
function ksuid() {
  const alphabet = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
  const b = new Uint8Array(20);
  new DataView(b.buffer).setUint32(0, Math.floor(Date.now() / 1000) - 1400000000);
  crypto.getRandomValues(b.subarray(4));
  let n = 0n;
  for (const x of b) n = (n << 8n) | BigInt(x);
  let s = '';
  while (n > 0n) {
    s = alphabet[Number(n % 62n)] + s;
    n /= 62n;
  }
  return s.padStart(27, '0');
}

function backoffDelay(attempt) {
  const d = Math.min(MAX_BACKOFF, MIN_BACKOFF * 2 ** attempt);
  return d / 2 + Math.random() * d / 2;
}

function bodyText(body) {
  if (typeof body === 'string') return body;
  if (body && typeof body === 'object' && typeof body.text === 'string') return body.text;
  if (body === undefined || body === null) return '';
  return JSON.stringify(body);
}

function listNames(names) {
  if (names.length <= 1) return names.join('');
  return names.slice(0, -1).join(', ') + ' and ' + names[names.length - 1];
}

// ProtocolError is an error reply of the server: {code, message}.
class ProtocolError extends Error {
  constructor(code, message) {
    super(message || code);
    this.code = code;
  }
}

// --- The connection ---------------------------------------------------------

// Connection keeps one authenticated WebSocket open: it reconnects with a
// jittered exponential backoff, paces frames under the rate the server
// announces, matches replies to requests, and retries idempotent requests
// across reconnects (call).
class Connection {
  constructor(handlers) {
    this.h = handlers; // onState, onConnected, onPush, onTokenRefused
    this.ws = null;
    this.authed = false;
    this.stopped = true;
    this.attempt = 0;
    this.timer = null;
    this.nextId = 1;
    this.pending = new Map(); // id -> {resolve, reject, timer}
    this.waiters = []; // callers waiting for a connection
    this.queue = []; // frames waiting for the pace
    this.rate = 10;
    this.burst = 10;
    this.tokens = 10;
    this.lastFill = 0;
    this.pumpTimer = null;
    this.readSlots = 2; // history and sync requests at once (the server allows 2)
    this.readWaiters = [];
    this.lastSent = 0;
    this.ping = null; // {id, at} of the ping awaiting its pong
    this.epoch = 0; // counts authenticated connections
    this.keepalive = setInterval(() => this.tick(), 1000);
  }

  start(token, device) {
    this.token = token;
    this.device = device;
    this.stopped = false;
    this.attempt = 0;
    this.open();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) {
      const ws = this.ws;
      this.detach();
      ws.close(1000, 'signed out');
    }
    for (const w of this.waiters.splice(0)) w.reject(new Error('signed out'));
    this.h.onState('signed-out');
  }

  setToken(token) {
    this.token = token;
  }

  url() {
    return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/v1/ws';
  }

  open() {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.stopped || this.ws) return;
    const ws = new WebSocket(this.url());
    this.ws = ws;
    this.authed = false;
    this.h.onState('connecting', { again: this.epoch > 0 });
    ws.onopen = () => {
      ws.send(JSON.stringify({ op: 'auth', id: 'auth', token: this.token, device: this.device }));
    };
    ws.onmessage = (e) => this.onMessage(ws, e.data);
    ws.onclose = (e) => this.onClose(ws, e.code, e.reason);
    ws.onerror = () => {}; // a close event follows
    this.authTimer = setTimeout(() => {
      if (this.ws === ws && !this.authed) this.lost('no answer to auth');
    }, REQUEST_TIMEOUT);
  }

  // retryNow skips the backoff wait (the network came back, or the user asked).
  retryNow() {
    if (this.stopped || this.ws) return;
    this.attempt = 0;
    this.open();
  }

  onMessage(ws, data) {
    if (ws !== this.ws) return;
    let f;
    try {
      f = JSON.parse(data);
    } catch {
      return;
    }
    if (!this.authed) {
      if (f.op === 'auth_ok') {
        clearTimeout(this.authTimer);
        this.authed = true;
        this.attempt = 0;
        this.epoch++;
        this.ping = null;
        if (f.limits && f.limits.rate > 0 && f.limits.burst > 0) {
          // A margin below the server's limit: frames may bunch up on the way.
          this.rate = f.limits.rate * 0.9;
          this.burst = Math.max(1, Math.floor(f.limits.burst / 2));
        }
        this.tokens = this.burst;
        this.lastFill = performance.now();
        this.user = f.user;
        this.h.onState('online');
        this.h.onConnected(f, this.epoch);
        for (const w of this.waiters.splice(0)) w.resolve();
        this.pump();
      }
      return;
    }
    if (f.id && this.pending.has(f.id)) {
      const p = this.pending.get(f.id);
      this.pending.delete(f.id);
      clearTimeout(p.timer);
      p.resolve(f);
      return;
    }
    if (f.op === 'pong') return;
    this.h.onPush(f);
  }

  detach() {
    const ws = this.ws;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    clearTimeout(this.authTimer);
    this.ws = null;
    this.authed = false;
    this.queue.length = 0;
    this.ping = null;
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new Error('disconnected'));
    }
    this.pending.clear();
  }

  // lost gives up on the current connection at once (it went silent) and
  // reconnects.
  lost(why) {
    const ws = this.ws;
    if (!ws) return;
    this.detach();
    try {
      ws.close(4000, why.slice(0, 100));
    } catch {
      // already closing
    }
    this.reconnect(1006);
  }

  onClose(ws, code, reason) {
    if (ws !== this.ws) return;
    const wasAuthed = this.authed;
    this.detach();
    if (this.stopped) return;
    if (code === 4001) {
      this.h.onTokenRefused(reason, wasAuthed);
      return;
    }
    this.reconnect(code);
  }

  reconnect(code) {
    if (this.stopped) return;
    let delay;
    if (code === 4009) {
      delay = Math.random() * 1000; // the node drains: another one takes us at once
    } else {
      delay = backoffDelay(this.attempt++);
    }
    this.retryAt = Date.now() + delay;
    this.h.onState('waiting', { at: this.retryAt, code });
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.open(), delay);
  }

  tick() {
    if (!this.authed) return;
    const now = Date.now();
    if (this.ping && now - this.ping.at > this.ping.wait) {
      this.lost('no pong');
      return;
    }
    if (!this.ping && now - this.lastSent > PING_AFTER) this.probe();
  }

  // probe sends a ping; a connection that does not answer within wait is
  // dropped and replaced.
  probe(wait = PONG_WAIT) {
    if (!this.authed || (this.ping && this.ping.wait <= wait)) return;
    const id = 'p' + this.nextId++;
    this.ping = { id, at: Date.now(), wait };
    this.request({ op: 'ping', id }, PONG_WAIT * 2).then(
      () => {
        if (this.ping && this.ping.id === id) this.ping = null;
      },
      () => {},
    );
  }

  // send queues a frame for the paced writer (only while authenticated).
  send(frame) {
    if (!this.authed) return false;
    this.queue.push(JSON.stringify(frame));
    this.pump();
    return true;
  }

  pump() {
    clearTimeout(this.pumpTimer);
    if (!this.authed) return;
    if (this.ws.readyState !== WebSocket.OPEN) {
      this.lost('the connection is closing'); // its close event may be seconds away
      return;
    }
    const now = performance.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.lastFill) / 1000) * this.rate);
    this.lastFill = now;
    while (this.queue.length && this.tokens >= 1) {
      this.ws.send(this.queue.shift());
      this.tokens -= 1;
      this.lastSent = Date.now();
    }
    if (this.queue.length) {
      this.pumpTimer = setTimeout(() => this.pump(), Math.ceil(((1 - this.tokens) / this.rate) * 1000));
    }
  }

  // request sends one request on the current connection and resolves with
  // its reply (an error reply included); it rejects when the connection
  // drops or no reply comes in time.
  async request(frame, timeout = REQUEST_TIMEOUT) {
    const reads = frame.op === 'history' || frame.op === 'sync';
    if (reads) await this.readSlot();
    try {
      return await new Promise((resolve, reject) => {
        if (!this.authed) {
          reject(new Error('disconnected'));
          return;
        }
        const id = frame.id || String(this.nextId++);
        const timer = setTimeout(() => {
          if (this.pending.get(id)) {
            this.pending.delete(id);
            reject(new Error('timeout'));
          }
        }, timeout);
        this.pending.set(id, { resolve, reject, timer });
        this.send({ ...frame, id });
      });
    } finally {
      if (reads) this.releaseReadSlot();
    }
  }

  readSlot() {
    if (this.readSlots > 0) {
      this.readSlots--;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.readWaiters.push(resolve));
  }

  releaseReadSlot() {
    const next = this.readWaiters.shift();
    if (next) next();
    else this.readSlots++;
  }

  ready() {
    if (this.authed) return Promise.resolve();
    if (this.stopped) return Promise.reject(new Error('signed out'));
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  // call sends a request that is safe to repeat and returns its reply: it
  // waits for a connection, and retries (the same frame, so the same cmid)
  // when the connection drops, no reply comes, or the server answers
  // unavailable or rate_limited. Other error replies throw ProtocolError.
  async call(frame) {
    let attempt = 0;
    for (;;) {
      await this.ready();
      let r;
      try {
        r = await this.request(frame);
      } catch {
        if (this.stopped) throw new Error('signed out');
        continue; // the connection dropped or the reply is late: again
      }
      if (r.op !== 'error') return r;
      if (r.code === 'unavailable' || r.code === 'rate_limited') {
        await sleep(backoffDelay(attempt++));
        continue;
      }
      throw new ProtocolError(r.code, r.message);
    }
  }
}

// --- State ------------------------------------------------------------------

const state = {
  session: null, // {token, device, devUser}
  me: null,
  convs: new Map(), // conv id -> conversation
  open: null, // the open conversation's id
  devLogin: false,
  devCode: '', // the dev sign-in code, where the browser keeps no storage
  pairs: loadPairs(), // direct conversation id -> its two members
  syncing: false,
};

function loadPairs() {
  try {
    return JSON.parse(localStorage.getItem(PAIRS_KEY)) || {};
  } catch {
    return {};
  }
}

// savePair remembers who a direct conversation is between (its id is a
// hash of the pair), so that the list can name it without fetching it.
function savePair(c, members) {
  if (members.length !== 2) return;
  c.pair = [...members].sort();
  if (String(state.pairs[c.id]) === String(c.pair)) return;
  state.pairs[c.id] = c.pair;
  try {
    localStorage.setItem(PAIRS_KEY, JSON.stringify(state.pairs));
  } catch {
    // storage full or off: pairs are fetched again
  }
}

// newConv makes a conversation positioned after seq at (nothing held yet).
function newConv(id, at) {
  const c = {
    id,
    kind: '',
    title: '',
    pair: state.pairs[id] || null, // a direct conversation's two members
    named: false, // its created event was asked for
    members: null, // Set, known from creating it here (membersOf has the held events' view)
    membersAt: -1,
    lo: at + 1,
    hi: at, // events lo..hi are held (none when lo > hi)
    events: new Map(), // seq -> event
    buffered: new Map(), // pushed events beyond a gap
    want: 0, // fill up to this seq
    filling: null,
    older: at > 0, // events before lo may exist
    loadingOlder: null,
    // The last sync's view: last seq L, read cursor R and unread count U.
    L: 0,
    R: 0,
    U: 0,
    readSeq: 0, // the user's read cursor as known now
    readSent: 0,
    readBy: new Map(), // user -> highest read target
    edits: new Map(), // target seq -> {seq, body}
    revoked: new Set(),
    typing: new Map(), // user -> until (ms)
    outbox: [], // {cmid, text, status, error}
    lastTs: 0,
    preview: '',
    left: false,
  };
  state.convs.set(id, c);
  return c;
}

// unreadOf counts the messages by others after the user's read cursor:
// the last sync's count adjusted by what was received and read since.
function unreadOf(c) {
  const me = state.me;
  const held = (from, to) => {
    let n = 0;
    for (let s = Math.max(from + 1, c.lo); s <= Math.min(to, c.hi); s++) {
      const ev = c.events.get(s);
      if (ev && ev.type === 'message' && ev.from !== me) n++;
    }
    return n;
  };
  const r = c.readSeq;
  let n = 0;
  if (r < c.L) {
    if (c.lo <= r + 1 && c.hi >= c.L) n = held(r, c.L);
    else n = Math.max(0, c.U - held(c.R, r));
  }
  return n + held(Math.max(c.L, r), c.hi);
}

// membersOf returns the members as the held events tell (when they reach
// back to the created event), else what is known from creating it, or null.
function membersOf(c) {
  if (c.lo > 1 || !c.events.has(1)) return c.members;
  if (c.membersAt === c.hi) return c.members;
  const m = new Set();
  for (let s = 1; s <= c.hi; s++) {
    const ev = c.events.get(s);
    if (!ev) continue;
    if (ev.type === 'created' || ev.type === 'member_added') for (const u of ev.members || []) m.add(u);
    if (ev.type === 'member_removed') for (const u of ev.members || []) m.delete(u);
  }
  c.members = m;
  c.membersAt = c.hi;
  return m;
}

function convName(c) {
  if (c.kind === 'direct') return (c.pair && (c.pair.find((u) => u !== state.me) || c.pair[0])) || 'Direct conversation';
  if (c.title) return c.title;
  const m = membersOf(c);
  if (m) return listNames([...m].filter((u) => u !== state.me)) || 'Group';
  return 'Group';
}

// --- Events -----------------------------------------------------------------

// append applies the event at hi + 1.
function append(c, ev) {
  c.events.set(ev.seq, ev);
  c.hi = ev.seq;
  if (c.lo > ev.seq) c.lo = ev.seq;
  absorb(c, ev);
  if (ev.ts) c.lastTs = Math.max(c.lastTs, ev.ts);
  if (ev.type === 'message') {
    c.preview = (ev.from === state.me ? 'You' : ev.from) + ': ' + bodyText(ev.body);
    c.typing.delete(ev.from);
    if (ev.from === state.me && ev.cmid) {
      const i = c.outbox.findIndex((o) => o.cmid === ev.cmid);
      if (i >= 0) c.outbox.splice(i, 1);
    }
  }
  noteMembership(c, ev);
}

// noteMembership marks a conversation the user was removed from (or added
// back to).
function noteMembership(c, ev) {
  if (!(ev.members || []).includes(state.me)) return;
  if (ev.type === 'member_removed') c.left = true;
  if (ev.type === 'member_added' || ev.type === 'created') c.left = false;
}

// absorb records what an event (of any age) tells: kind, names, read
// cursors, edits and revokes.
function absorb(c, ev) {
  const me = state.me;
  switch (ev.type) {
    case 'created':
      c.kind = ev.kind || c.kind;
      if (ev.title) c.title = ev.title;
      if (c.kind === 'direct') savePair(c, ev.members || []);
      if ((ev.members || []).includes(me)) c.readSeq = Math.max(c.readSeq, ev.seq);
      break;
    case 'member_added':
      if ((ev.members || []).includes(me)) c.readSeq = Math.max(c.readSeq, ev.seq);
      break;
    case 'read':
      c.readBy.set(ev.from, Math.max(c.readBy.get(ev.from) || 0, ev.target));
      if (ev.from === me) c.readSeq = Math.max(c.readSeq, ev.target);
      break;
    case 'edit': {
      const e = c.edits.get(ev.target);
      if (!e || e.seq < ev.seq) c.edits.set(ev.target, { seq: ev.seq, body: ev.body });
      break;
    }
    case 'revoke':
      c.revoked.add(ev.target);
      break;
  }
}

// accept takes an event from a push or a page going forward.
function accept(c, ev) {
  if (ev.seq <= c.hi) return false; // held already
  if (ev.seq === c.hi + 1) {
    append(c, ev);
    drain(c);
    return true;
  }
  c.buffered.set(ev.seq, ev);
  want(c, ev.seq);
  return false;
}

function drain(c) {
  for (;;) {
    const next = c.buffered.get(c.hi + 1);
    if (!next) break;
    c.buffered.delete(next.seq);
    append(c, next);
  }
  for (const s of c.buffered.keys()) if (s <= c.hi) c.buffered.delete(s);
}

// want makes sure the events up to seq get fetched.
function want(c, seq) {
  if (seq <= c.hi) return;
  c.want = Math.max(c.want, seq);
  if (!c.filling) {
    c.filling = fill(c).finally(() => {
      c.filling = null;
    });
  }
}

// fill fetches history after hi until hi reaches want. A store that has
// not caught up with the log yet answers short: then it waits and asks
// again, with backoff, a bounded number of times (the next push or
// catch-up asks again).
async function fill(c) {
  let idle = 0;
  while (c.hi < c.want) {
    const before = c.hi;
    let r;
    try {
      r = await conn.call({ op: 'history', conv: c.id, after: c.hi, limit: FILL_PAGE });
    } catch (e) {
      if (e instanceof ProtocolError) c.want = c.hi; // not a member (any more)
      break;
    }
    for (const ev of r.events || []) {
      if (ev.seq <= c.hi) continue;
      if (ev.seq !== c.hi + 1) break;
      append(c, ev);
    }
    drain(c);
    if (c.hi > before) {
      idle = 0;
      changed(c);
      if (r.more) continue;
    }
    if (c.hi >= c.want) break;
    if (c.hi === before) {
      if (++idle > 10) break;
      await sleep(Math.min(2000, 100 * 2 ** idle));
    }
  }
}

// loadOlder pages in the events before lo.
function loadOlder(c) {
  if (c.loadingOlder) return c.loadingOlder;
  if (c.lo <= 1 || !c.older) return Promise.resolve();
  const lo = c.lo;
  c.loadingOlder = (async () => {
    try {
      const r = await conn.call({ op: 'history', conv: c.id, before: lo, limit: PAGE });
      if (c.lo !== lo) return; // the range was reset meanwhile
      const evs = (r.events || []).filter((ev) => ev.seq < c.lo);
      if (evs.length && evs[evs.length - 1].seq === c.lo - 1) {
        for (const ev of evs) {
          c.events.set(ev.seq, ev);
          absorb(c, ev);
        }
        if (c.hi < c.lo) {
          // The range was empty: these are its newest events too.
          const last = evs[evs.length - 1];
          c.hi = last.seq;
          c.lastTs = Math.max(c.lastTs, last.ts || 0);
          for (let i = evs.length - 1; i >= 0; i--) {
            if (evs[i].type === 'message') {
              c.preview = (evs[i].from === state.me ? 'You' : evs[i].from) + ': ' + bodyText(evs[i].body);
              break;
            }
          }
          for (const ev of evs) noteMembership(c, ev);
        }
        c.lo = evs[0].seq;
        c.older = r.more && c.lo > 1;
        drain(c);
        changed(c);
      } else {
        c.older = false;
        changed(c);
      }
    } catch {
      // signed out, or not a member: nothing older to show
    } finally {
      c.loadingOlder = null;
    }
  })();
  return c.loadingOlder;
}

function onEvent(ev) {
  let c = state.convs.get(ev.conv);
  if (!c) {
    // A conversation this client did not know: held from this event on;
    // a sync fills in its unread count and title.
    c = newConv(ev.conv, ev.seq - 1);
    c.older = ev.seq > 1;
    scheduleSync();
  }
  if (accept(c, ev)) changed(c);
}

function onTyping(f) {
  const c = state.convs.get(f.conv);
  if (!c || f.from === state.me) return;
  c.typing.set(f.from, Date.now() + TYPING_SHOWN);
  renderTyping(c);
  renderConvList();
}

// --- Sync and catch-up ------------------------------------------------------

let syncTimer = null;
function scheduleSync() {
  clearTimeout(syncTimer);
  syncTimer = setTimeout(() => syncNow(), 300);
}

async function syncNow() {
  let r;
  try {
    r = await conn.call({ op: 'sync' });
  } catch {
    return;
  }
  // A conversation missing from the list is kept: one just created may not
  // be in the store yet, and one the user left says so in its events.
  for (const s of r.convs || []) {
    let c = state.convs.get(s.conv);
    if (!c) c = newConv(s.conv, s.last_seq);
    c.kind = s.kind || c.kind;
    if (s.title) c.title = s.title;
    c.L = s.last_seq;
    c.R = s.read_seq;
    c.U = s.unread;
    c.readSeq = Math.max(c.readSeq, s.read_seq);
    if (c.hi < c.lo) {
      // Nothing held: move the position instead of fetching what nobody
      // looks at (opening the conversation pages it in).
      if (s.last_seq > c.hi) {
        c.lo = s.last_seq + 1;
        c.hi = s.last_seq;
        c.older = s.last_seq > 0;
        drain(c);
      }
    } else if (s.last_seq - c.hi > 1000) {
      resetHeld(c, s.last_seq); // a long absence: start again from the end
    } else {
      want(c, s.last_seq);
    }
  }
  renderConvList();
  const open = state.convs.get(state.open);
  if (open) {
    renderConv();
    if (open.hi < open.lo || countShown(open) < PAGE) loadOlder(open);
  }
  nameDirectConvs();
}

function resetHeld(c, at) {
  c.events.clear();
  c.buffered.clear();
  c.lo = at + 1;
  c.hi = at;
  c.want = 0;
  c.older = at > 0;
  c.readBy.clear();
  if (state.open === c.id) resetConvView();
}

// onConnected runs after every authentication: sync, then fetch what was
// missed; then sync twice more, a little later, for events sequenced before
// the connection that the store did not hold yet at the first sync.
async function onConnected(f, epoch) {
  state.me = f.user;
  $('me-name').textContent = f.user;
  $('me').hidden = false;
  state.syncing = true;
  setConnState('syncing');
  await syncNow();
  await Promise.all([...state.convs.values()].map((c) => c.filling));
  state.syncing = false;
  if (conn.authed && conn.epoch === epoch) setConnState('online');
  for (const ms of CATCH_UP_AGAIN) {
    setTimeout(() => {
      if (conn.authed && conn.epoch === epoch) syncNow();
    }, ms);
  }
}

// nameDirectConvs fetches the created event of direct conversations whose
// other member is not known yet.
let naming = false;
async function nameDirectConvs() {
  if (naming) return;
  naming = true;
  try {
    for (const c of [...state.convs.values()]) {
      if (c.kind !== 'direct' || c.pair || c.named) continue;
      c.named = true;
      try {
        const r = await conn.call({ op: 'history', conv: c.id, after: 0, limit: 1 });
        const created = (r.events || []).find((ev) => ev.type === 'created');
        if (created) absorb(c, created);
      } catch {
        // not readable: keep the generic name
      }
      renderConvList();
      if (state.open === c.id) renderHead(c);
    }
  } finally {
    naming = false;
  }
}

// --- Reading, sending, typing, creating -----------------------------------

let readTimer = null;
function maybeMarkRead() {
  clearTimeout(readTimer);
  readTimer = setTimeout(markRead, 150);
}

async function markRead() {
  const c = state.convs.get(state.open);
  if (!c || document.visibilityState !== 'visible' || c.hi < c.lo || !conn.authed) return;
  // Only a message by someone else moves the cursor: reads alone never
  // call for another read (two open clients would answer each other).
  let last = 0;
  for (let s = c.hi; s >= c.lo && s > c.readSeq; s--) {
    const ev = c.events.get(s);
    if (ev && ev.type === 'message' && ev.from !== state.me) {
      last = s;
      break;
    }
  }
  if (!last || c.readSent >= c.hi) return;
  const target = c.hi;
  c.readSent = target;
  // Shown read at once (the user is looking at it); the read event and
  // the next sync confirm it.
  const before = c.readSeq;
  c.readSeq = Math.max(c.readSeq, target);
  renderConvList();
  try {
    await conn.call({ op: 'read', conv: c.id, seq: target });
  } catch {
    c.readSent = 0;
    if (c.readSeq === target) c.readSeq = before;
    renderConvList();
  }
}

function sendMessage(c, text) {
  const item = { cmid: 'w' + randomHex(12), text, status: 'sending', error: '' };
  c.outbox.push(item);
  deliver(c, item);
}

async function deliver(c, item) {
  item.status = 'sending';
  renderOutbox(c);
  try {
    const ack = await conn.call({ op: 'send', conv: c.id, cmid: item.cmid, kind: 'text', body: { text: item.text } });
    // The pushed event normally follows at once; if it does not, history
    // has it.
    setTimeout(() => {
      if (ack.seq > c.hi) want(c, ack.seq);
    }, 1000);
  } catch (e) {
    item.status = 'failed';
    item.error = e instanceof ProtocolError ? e.message || e.code : 'not sent';
  }
  renderOutbox(c);
}

const typingSent = new Map(); // conv -> ms
function sendTyping(c) {
  const now = Date.now();
  if (now - (typingSent.get(c.id) || 0) < TYPING_EVERY) return;
  if (conn.send({ op: 'typing', conv: c.id })) typingSent.set(c.id, now);
}

async function createConv(members, title) {
  const frame = { op: 'create', members };
  if (members.length === 1 && !title) {
    frame.kind = 'direct';
  } else {
    frame.kind = 'group';
    frame.conv = ksuid();
    frame.cmid = 'c' + randomHex(12);
    if (title) frame.title = title;
  }
  const r = await conn.call(frame);
  let c = state.convs.get(r.conv);
  if (!c) {
    c = newConv(r.conv, 0);
    c.older = false;
    c.kind = frame.kind;
    c.title = title || '';
    c.members = new Set([state.me, ...members]);
    if (frame.kind === 'direct') savePair(c, [state.me, members[0]]);
    scheduleSync();
  }
  openConv(c.id);
}

// --- Rendering ----------------------------------------------------------

const STATE_TEXT = {
  starting: 'Starting…',
  'signed-out': 'Signed out',
  connecting: 'Connecting…',
  syncing: 'Catching up…',
  online: 'Connected',
};

let connState = 'starting';
let connInfo = {};
function setConnState(s, info = {}) {
  connState = s;
  connInfo = info;
  const p = $('conn');
  let text = STATE_TEXT[s] || s;
  if (s === 'connecting' && info.again) text = 'Reconnecting…';
  if (s === 'online' && state.syncing) {
    s = 'syncing';
    text = STATE_TEXT.syncing;
  }
  if (s === 'waiting' && navigator.onLine === false) s = 'offline';
  if (s === 'waiting' || s === 'offline') {
    const secs = Math.max(0, Math.ceil(((info.at || Date.now()) - Date.now()) / 1000));
    text = (s === 'offline' ? 'Offline' : 'Disconnected') + (secs > 0 ? ` — retrying in ${secs} s` : ' — retrying…');
  }
  if (p.dataset.state !== s) p.dataset.state = s;
  if (p.textContent !== text) p.textContent = text;
  $('retry').hidden = !(s === 'waiting' || s === 'offline');
}

function renderConvList() {
  const ul = $('convs');
  const list = [...state.convs.values()].sort((a, b) => b.lastTs - a.lastTs || (a.id < b.id ? -1 : 1));
  $('no-convs').hidden = list.length > 0;
  const now = Date.now();
  let total = 0;
  const items = [];
  for (const c of list) {
    let li = ul.querySelector(`li[data-conv="${CSS.escape(c.id)}"]`);
    if (!li) {
      li = el('li');
      li.dataset.conv = c.id;
      const b = el('button', 'conv-item');
      b.type = 'button';
      b.append(el('span', 'conv-name'), el('span', 'conv-preview'), el('span', 'badge'));
      b.addEventListener('click', () => openConv(c.id));
      li.append(b);
    }
    const b = li.firstChild;
    const [name, preview, badge] = b.children;
    name.textContent = convName(c);
    const typers = [...c.typing].filter(([, until]) => until > now).map(([u]) => u);
    preview.textContent = typers.length ? `${listNames(typers)} typing…` : c.preview;
    preview.classList.toggle('typing-now', typers.length > 0);
    const n = unreadOf(c);
    total += n;
    badge.hidden = n === 0;
    badge.textContent = n >= 1000 ? '1000+' : String(n);
    badge.setAttribute('aria-label', `${n >= 1000 ? 'over 1000' : n} unread`);
    if (state.open === c.id) b.setAttribute('aria-current', 'true');
    else b.removeAttribute('aria-current');
    items.push(li);
  }
  // Reorder only what moved.
  items.forEach((li, i) => {
    if (ul.children[i] !== li) ul.insertBefore(li, ul.children[i] || null);
  });
  while (ul.children.length > items.length) ul.lastChild.remove();
  document.title = total > 0 ? `(${total >= 1000 ? '1000+' : total}) Parley` : 'Parley';
}

function renderHead(c) {
  $('conv-title').textContent = convName(c);
  let sub = c.kind === 'group' ? 'Group' : c.kind === 'direct' ? 'Direct conversation' : '';
  const members = c.kind === 'group' && membersOf(c);
  if (members) sub = `Group: ${listNames([...members].sort())}`;
  $('conv-sub').textContent = sub;
  const composer = $('message');
  composer.disabled = c.left;
  $('send').disabled = c.left;
  composer.placeholder = c.left ? 'You are no longer a member of this conversation.' : 'Write a message…';
}

function timeOf(ts) {
  const d = new Date(ts);
  const t = el('time', '', d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }));
  t.dateTime = d.toISOString();
  t.title = d.toLocaleString();
  return t;
}

// eventElement renders an event of the timeline, or null for those that
// are not shown (reads, edits and revokes change other elements).
function eventElement(c, ev) {
  const me = state.me;
  if (ev.type === 'message') {
    const li = el('li', 'msg' + (ev.from === me ? ' mine' : '') + (continues(c, ev) ? ' cont' : ''));
    li.dataset.seq = ev.seq;
    const meta = el('div', 'meta');
    if (ev.from !== me) meta.append(el('span', 'from', ev.from), ' ');
    meta.append(timeOf(ev.ts));
    const bubble = el('div', 'bubble');
    li.append(meta, bubble, el('div', 'receipt'));
    fillBubble(c, ev, li);
    return li;
  }
  let text = '';
  const who = ev.from === me ? 'You' : ev.from;
  const names = (ev.members || []).map((m) => (m === me ? 'you' : m));
  switch (ev.type) {
    case 'created':
      text = c.kind === 'group' || ev.kind === 'group' ? `${who} created the group${ev.title ? ' “' + ev.title + '”' : ''}` : `${who} started the conversation`;
      break;
    case 'member_added':
      text = `${who} added ${listNames(names)}`;
      break;
    case 'member_removed':
      text = ev.members && ev.members.length === 1 && ev.members[0] === ev.from ? `${who} left` : `${who} removed ${listNames(names)}`;
      break;
    default:
      return null;
  }
  const li = el('li', 'system', text);
  li.dataset.seq = ev.seq;
  return li;
}

// continues reports whether ev follows a message of the same author within
// five minutes, with nothing shown between them (then its name and time
// are not repeated).
function continues(c, ev) {
  for (let s = ev.seq - 1; s >= c.lo; s--) {
    const prev = c.events.get(s);
    if (!prev) return false;
    if (prev.type === 'read' || prev.type === 'edit' || prev.type === 'revoke') continue;
    return prev.type === 'message' && prev.from === ev.from && ev.ts - prev.ts < 5 * 60 * 1000;
  }
  return false;
}

function fillBubble(c, ev, li) {
  const bubble = li.querySelector('.bubble');
  const edit = c.edits.get(ev.seq);
  bubble.replaceChildren();
  if (c.revoked.has(ev.seq)) {
    bubble.append(el('span', 'withdrawn', 'Message withdrawn'));
    return;
  }
  const body = edit ? edit.body : ev.body;
  const prefix = ev.kind && ev.kind !== 'text' ? `[${ev.kind}] ` : '';
  bubble.textContent = prefix + bodyText(body);
  if (edit) bubble.append(el('span', 'sub', ' (edited)'));
}

function countShown(c) {
  let n = 0;
  for (let s = c.lo; s <= c.hi; s++) {
    const ev = c.events.get(s);
    if (ev && ev.type === 'message') n++;
  }
  return n;
}

// The open conversation's view: one element per shown event of seqs
// lo..hi (when drawn).
let view = { conv: null, drawn: false, lo: 0, hi: 0 };

function resetConvView() {
  $('msg-list').replaceChildren();
  view = { conv: state.open, drawn: false, lo: 0, hi: 0 };
}

function renderConv() {
  const c = state.convs.get(state.open);
  if (!c) return;
  renderHead(c);
  const box = $('messages');
  const list = $('msg-list');
  if (view.conv !== c.id) resetConvView();
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  if (c.hi >= c.lo) {
    if (!view.drawn || view.lo > c.hi || view.hi < c.lo - 1) {
      list.replaceChildren();
      view.drawn = true;
      view.lo = c.lo;
      view.hi = c.lo - 1;
    }
    // Older events, prepended keeping the scroll position.
    if (c.lo < view.lo) {
      const height = box.scrollHeight;
      const frag = document.createDocumentFragment();
      for (let s = c.lo; s < view.lo; s++) {
        const e = c.events.get(s) && eventElement(c, c.events.get(s));
        if (e) frag.append(e);
      }
      list.prepend(frag);
      view.lo = c.lo;
      box.scrollTop += box.scrollHeight - height;
    }
    // Newer events, appended.
    for (let s = view.hi + 1; s <= c.hi; s++) {
      const ev = c.events.get(s);
      const e = ev && eventElement(c, ev);
      if (e) list.append(e);
      if (ev && (ev.type === 'edit' || ev.type === 'revoke')) {
        const target = list.querySelector(`li.msg[data-seq="${ev.target}"]`);
        if (target) fillBubble(c, c.events.get(ev.target), target);
      }
    }
    view.hi = c.hi;
  }
  renderReceipts(c);
  const more = c.older && c.lo > 1;
  $('load-older').hidden = !more;
  $('beginning').hidden = more || c.hi < c.lo;
  renderOutbox(c);
  renderTyping(c);
  if (atBottom) box.scrollTop = box.scrollHeight;
}

// renderReceipts shows, under the last message each other member has read
// (and did not write), who read up to there.
function renderReceipts(c) {
  const list = $('msg-list');
  const at = new Map(); // seq -> readers
  for (const [user, target] of c.readBy) {
    if (user === state.me) continue;
    for (let s = Math.min(target, c.hi); s >= c.lo; s--) {
      const ev = c.events.get(s);
      if (ev && ev.type === 'message' && ev.from !== user) {
        if (!at.has(s)) at.set(s, []);
        at.get(s).push(user);
        break;
      }
    }
  }
  for (const r of list.querySelectorAll('.receipt')) {
    const seq = Number(r.parentElement.dataset.seq);
    const readers = at.get(seq);
    const text = readers ? `Read by ${listNames(readers.sort())}` : '';
    if (r.textContent !== text) r.textContent = text;
  }
}

function renderOutbox(c) {
  if (state.open !== c.id) return;
  const ol = $('outbox');
  ol.replaceChildren();
  for (const o of c.outbox) {
    const li = el('li', `msg mine pending${o.status === 'failed' ? ' failed' : ''}`);
    li.dataset.cmid = o.cmid;
    const status = el('div', 'status', o.status === 'failed' ? `Not sent: ${o.error} ` : 'Sending…');
    if (o.status === 'failed') {
      const retry = el('button', 'link', 'Retry');
      retry.type = 'button';
      retry.addEventListener('click', () => deliver(c, o));
      status.append(retry);
    }
    li.append(el('div', 'bubble', o.text), status);
    ol.append(li);
  }
}

function renderTyping(c) {
  if (state.open !== c.id) return;
  const now = Date.now();
  const typers = [...c.typing].filter(([, until]) => until > now).map(([u]) => u);
  const text = typers.length === 0 ? '' : `${listNames(typers)} ${typers.length === 1 ? 'is' : 'are'} typing…`;
  if ($('typing').textContent !== text) $('typing').textContent = text;
}

// changed re-renders after a conversation's events changed.
function changed(c) {
  renderConvList();
  if (state.open === c.id) {
    renderConv();
    maybeMarkRead();
  }
}

function openConv(id) {
  const c = state.convs.get(id);
  if (!c) return;
  state.open = id;
  $('conv-empty').hidden = true;
  $('conv-view').hidden = false;
  $('app').classList.add('show-conv');
  resetConvView();
  renderConv();
  renderConvList();
  const box = $('messages');
  box.scrollTop = box.scrollHeight;
  if (c.hi < c.lo || countShown(c) < PAGE) loadOlder(c);
  if (c.buffered.size) want(c, Math.max(...c.buffered.keys()));
  maybeMarkRead();
  $('message').focus();
}

function closeConv() {
  state.open = null;
  $('conv-view').hidden = true;
  $('conv-empty').hidden = false;
  $('app').classList.remove('show-conv');
  resetConvView();
  renderConvList();
}

// --- Sign-in --------------------------------------------------------------

function saveSession() {
  try {
    if (state.session) sessionStorage.setItem(SESSION_KEY, JSON.stringify(state.session));
    else sessionStorage.removeItem(SESSION_KEY);
  } catch {
    // private mode: the session lasts as long as the page
  }
}

function loadSession() {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION_KEY));
    return s && s.token && s.device ? s : null;
  } catch {
    return null;
  }
}

// The dev sign-in code: parley dev prints the web client's address with
// it in the fragment (#code=…); it is kept for this browser, and taken out
// of the address bar.
const DEV_CODE_KEY = 'parley.devCode';

function takeDevCode() {
  const code = new URLSearchParams(location.hash.slice(1)).get('code');
  if (code) {
    try {
      localStorage.setItem(DEV_CODE_KEY, code);
    } catch {
      state.devCode = code;
    }
    history.replaceState(null, '', location.pathname + location.search);
  }
}

function devCode() {
  try {
    return localStorage.getItem(DEV_CODE_KEY) || state.devCode || '';
  } catch {
    return state.devCode || '';
  }
}

async function devToken(user) {
  const res = await fetch('/dev/token', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ user, code: devCode() }),
  });
  const out = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(out.message || `the server answered ${res.status}`);
  return out.token;
}

function showSignIn(error = '') {
  $('app').hidden = true;
  $('me').hidden = true;
  $('signin').hidden = false;
  $('dev-form').hidden = !state.devLogin;
  $('dev-nocode').hidden = !state.devLogin || devCode() !== '';
  $('or').hidden = !state.devLogin;
  $('signin-error').textContent = error;
  setConnState('signed-out');
  (state.devLogin ? $('dev-user') : $('token')).focus();
}

function startSession(session) {
  state.session = session;
  saveSession();
  $('signin').hidden = true;
  $('app').hidden = false;
  $('signin-error').textContent = '';
  conn.start(session.token, session.device);
}

function signOut(error = '') {
  conn.stop();
  state.session = null;
  saveSession();
  state.convs.clear();
  state.me = null;
  closeConv();
  showSignIn(error);
}

// onTokenRefused: the server closed with 4001. A dev sign-in gets a fresh
// token (once in a row); a pasted token means signing in again.
let refusedInARow = 0;
async function onTokenRefused(reason, wasAuthed) {
  const s = state.session;
  if (s && s.devUser && (wasAuthed || refusedInARow === 0)) {
    refusedInARow++;
    try {
      s.token = await devToken(s.devUser);
      saveSession();
      conn.setToken(s.token);
      conn.reconnect(4001);
      return;
    } catch {
      // fall through
    }
  }
  signOut(`The server refused the token (${reason || 'bad or expired'}). Sign in again.`);
}

// --- Wiring ---------------------------------------------------------------

const conn = new Connection({
  onState: setConnState,
  onConnected: (f, epoch) => {
    refusedInARow = 0;
    onConnected(f, epoch);
  },
  onPush: (f) => {
    if (f.op === 'event') onEvent(f);
    else if (f.op === 'typing') onTyping(f);
  },
  onTokenRefused,
});

function wire() {
  $('dev-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const user = $('dev-user').value.trim();
    if (!USER_RE.test(user)) {
      $('signin-error').textContent = 'A user name is 1 to 64 letters, digits, “_”, “.” or “-”.';
      return;
    }
    try {
      const token = await devToken(user);
      startSession({ token, device: 'web-' + randomHex(6), devUser: user });
    } catch (err) {
      $('signin-error').textContent = `Sign-in failed: ${err.message}`;
    }
  });
  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const token = $('token').value.trim();
    if (!token) return;
    $('token').value = '';
    startSession({ token, device: 'web-' + randomHex(6) });
  });
  $('sign-out').addEventListener('click', () => signOut());
  $('retry').addEventListener('click', () => conn.retryNow());
  $('back').addEventListener('click', () => closeConv());
  $('load-older').addEventListener('click', () => {
    const c = state.convs.get(state.open);
    if (c) loadOlder(c);
  });
  $('messages').addEventListener('scroll', () => {
    const c = state.convs.get(state.open);
    if (c && $('messages').scrollTop < 80) loadOlder(c);
  });
  $('create-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const members = [...new Set($('create-members').value.split(/[\s,]+/).filter(Boolean))].filter((m) => m !== state.me);
    const title = $('create-title').value.trim();
    const bad = members.find((m) => !USER_RE.test(m));
    if (bad || members.length === 0) {
      $('create-error').textContent = bad ? `“${bad}” is not a user name.` : 'Name at least one other user.';
      return;
    }
    $('create-error').textContent = '';
    try {
      await createConv(members, title);
      $('create-members').value = '';
      $('create-title').value = '';
      $('new-conv').open = false;
    } catch (err) {
      $('create-error').textContent = `Could not create it: ${err.message}`;
    }
  });
  const composer = $('message');
  $('composer').addEventListener('submit', (e) => {
    e.preventDefault();
    const c = state.convs.get(state.open);
    const text = composer.value.trim();
    if (!c || !text || c.left) return;
    composer.value = '';
    typingSent.delete(c.id); // typing again after this is news
    sendMessage(c, text);
    const box = $('messages');
    box.scrollTop = box.scrollHeight;
  });
  composer.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $('composer').requestSubmit();
    }
  });
  composer.addEventListener('input', () => {
    const c = state.convs.get(state.open);
    if (c && composer.value.trim()) sendTyping(c);
  });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') {
      maybeMarkRead();
      conn.retryNow();
    }
  });
  // The network is back: reconnect now rather than after the backoff.
  window.addEventListener('online', () => conn.retryNow());
  // The network went away: make sure the connection still answers.
  window.addEventListener('offline', () => {
    conn.probe(OFFLINE_PONG_WAIT);
    setConnState(connState, connInfo);
  });
  // Typing signals expire; the countdown of a reconnect moves.
  setInterval(() => {
    const c = state.convs.get(state.open);
    if (c) renderTyping(c);
    if ([...state.convs.values()].some((x) => x.typing.size)) {
      const now = Date.now();
      for (const x of state.convs.values()) for (const [u, until] of x.typing) if (until <= now) x.typing.delete(u);
      renderConvList();
    }
    if (connState === 'waiting' || connState === 'offline') setConnState(connState, connInfo);
  }, 1000);
}

async function main() {
  wire();
  takeDevCode();
  try {
    const res = await fetch('/dev/token', { method: 'GET' });
    state.devLogin = res.ok;
  } catch {
    state.devLogin = false;
  }
  const s = loadSession();
  if (s) startSession(s);
  else showSignIn();
}

main();
