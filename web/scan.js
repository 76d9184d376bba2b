// The door scanner (#/scan): a door token entered once, an event and a gate chosen, then
// ticket codes scanned with the camera or typed, each answered in large green or red.
//
// Online, the server decides every scan (POST /events/{id}/checkins) under a fresh nonce; a
// scan whose answer was lost is sent again with the same nonce, so the server repeats its
// first answer. Offline (the browser says so, or the server cannot be reached) the page
// decides alone from the event's export (GET /events/{id}/checkin/export: the public keys,
// revoked and admitted admissions), checking each code's Ed25519 signature with WebCrypto,
// and queues the scans in localStorage; back online it uploads them
// (POST /events/{id}/checkins/batch) and lists the conflicts: scans it admitted that another
// device had admitted first. The code format and the protocol: docs/admission.md.

/** Bytes of a ticket code: version, key id, event id, admission id, signature. */
const CODE_BYTES = 101;
/** The signed part: version (1), key id (4), event id (16), admission id (16). */
const SIGNED_BYTES = 37;
const CODE_VERSION = 1;
/** The server takes at most this many scans in one batch. */
const BATCH_LIMIT = 1000;
/** A code that stays in view is scanned once; seen again after this long out of view, again. */
const OUT_OF_VIEW_MS = 1500;
const FRAME_INTERVAL_MS = 200;
const REQUEST_TIMEOUT_MS = 5000;
/** Attempts of one online scan before it is decided offline, all under one nonce. */
const SCAN_ATTEMPTS = 3;
const EXPORT_REFRESH_MS = 30_000;
const STATS_REFRESH_MS = 10_000;
const PROBE_MS = 5000;
const LOG_LENGTH = 12;

const TOKEN_KEY = 'boxoffice.door.token';
const SETUP_KEY = 'boxoffice.door.setup';
const eventKey = (eventId) => `boxoffice.door.event.${eventId}`;

// ---------------------------------------------------------------------------------------
// Ticket codes
// ---------------------------------------------------------------------------------------

function base64urlToBytes(text) {
  const base64 = text.replace(/-/g, '+').replace(/_/g, '/');
  const binary = atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, '='));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

function bytesToBase64url(bytes) {
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');

function uuid(bytes) {
  const h = hex(bytes);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * The parts of a ticket code, or null when the text is not one: base64url without padding
 * of exactly 101 bytes (the one encoding of them), version 1. The signature is not checked.
 */
export function decodeTicketCode(text) {
  if (typeof text !== 'string' || !/^[A-Za-z0-9_-]+$/.test(text)) return null;
  let bytes;
  try {
    bytes = base64urlToBytes(text);
  } catch {
    return null;
  }
  if (bytes.length !== CODE_BYTES || bytes[0] !== CODE_VERSION || bytesToBase64url(bytes) !== text) return null;
  return {
    keyId: hex(bytes.subarray(1, 5)),
    eventId: uuid(bytes.subarray(5, 21)),
    admissionId: uuid(bytes.subarray(21, SIGNED_BYTES)),
    signed: bytes.slice(0, SIGNED_BYTES),
    signature: bytes.slice(SIGNED_BYTES),
  };
}

/** The export's public keys, imported for WebCrypto: key id → Promise<CryptoKey>. */
export function importKeys(keys) {
  return new Map((keys ?? []).map((k) => [
    k.id,
    crypto.subtle.importKey('raw', base64urlToBytes(k.publicKey), { name: 'Ed25519' }, false, ['verify']),
  ]));
}

/**
 * What the server would answer to a scan, decided from what this device knows: `keys` from
 * importKeys, `revoked` a Set of admission ids, `admitted` a Map of admission id →
 * {checkedInAt, gate}. The checks run in the server's order: a bad code, then another event,
 * then a revoked admission, then one already admitted.
 * Returns {result, admissionId?, firstCheckedInAt?, firstGate?}.
 */
export async function decideOffline(text, eventId, { keys, revoked, admitted }) {
  const code = decodeTicketCode(text);
  const key = code && keys.get(code.keyId);
  if (!key) return { result: 'invalid' };
  const genuine = await crypto.subtle.verify({ name: 'Ed25519' }, await key, code.signature, code.signed);
  if (!genuine) return { result: 'invalid' };
  const { admissionId } = code;
  if (code.eventId !== eventId) return { result: 'wrong_event', admissionId };
  if (revoked.has(admissionId)) return { result: 'revoked', admissionId };
  const first = admitted.get(admissionId);
  if (first) return { result: 'duplicate', admissionId, firstCheckedInAt: first.checkedInAt, firstGate: first.gate };
  return { result: 'admitted', admissionId };
}

// ---------------------------------------------------------------------------------------
// What this device keeps
// ---------------------------------------------------------------------------------------

function load(key, fallback) {
  try {
    const text = localStorage.getItem(key);
    return text === null ? fallback : JSON.parse(text);
  } catch {
    return fallback;
  }
}

/** Whether it was kept: a full or blocked storage keeps nothing, and the page says so. */
function save(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
    return true;
  } catch {
    return false;
  }
}

function forget(key) {
  try {
    localStorage.removeItem(key);
  } catch {
    // Nothing was kept.
  }
}

/**
 * One event at this device: the last export, the admissions it learnt were admitted
 * (`seen`: id → {checkedInAt, gate}), those it admitted itself (`mine`), the scans waiting
 * for upload (`queue`) and the conflicts the uploads found.
 */
function loadDoor(eventId) {
  const stored = load(eventKey(eventId), {});
  return {
    name: stored.name ?? null,
    export: stored.export ?? null,
    seen: stored.seen ?? {},
    mine: stored.mine ?? [],
    queue: stored.queue ?? [],
    conflicts: stored.conflicts ?? [],
  };
}

// ---------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------

/**
 * One call with the door token: {status, body}, status 0 when the server could not be
 * reached (or did not answer within REQUEST_TIMEOUT_MS). Never throws.
 */
async function call(token, method, path, body) {
  const headers = { Accept: 'application/json', Authorization: `Bearer ${token}` };
  const init = { method, headers, cache: 'no-store', signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  try {
    const response = await fetch(path, init);
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    return { status: response.status, body: data };
  } catch {
    return { status: 0, body: null };
  }
}

const unreachable = (answer) => answer.status === 0 || answer.status >= 500;
const tokenRefused = (answer) => answer.status === 401 || answer.status === 403;

/** The scan's fields besides the code, as door staff know them. */
const SETUP_FIELDS = { gate: 'The gate name', nonce: 'The scan\'s nonce' };

/**
 * A check-in answer as an outcome: {result, …}; `error` for what is not about the ticket. A
 * field error is a verdict on the ticket only when it names the code: one on the gate (or the
 * nonce, or anything else) would be the same for every ticket at this door, so it is a
 * problem of the setup, never "Not a valid ticket".
 */
function outcomeOf(answer) {
  const b = answer.body ?? {};
  if (answer.status === 200) {
    return { result: 'admitted', admissionId: b.admission?.id, ticketTypeName: b.admission?.ticketTypeName, checkedInAt: b.checkedInAt, gate: b.gate };
  }
  switch (b.code) {
    case 'ALREADY_CHECKED_IN':
      return { result: 'duplicate', firstCheckedInAt: b.checkedInAt, firstGate: b.gate };
    case 'WRONG_EVENT':
      return { result: 'wrong_event' };
    case 'TICKET_REVOKED':
      return { result: 'revoked' };
    case 'INVALID_TICKET_CODE':
      return { result: 'invalid' };
    case 'VALIDATION_ERROR': {
      const details = Array.isArray(b.details) ? b.details : [];
      const other = details.find((d) => d?.field !== 'code');
      if (details.length > 0 && !other) return { result: 'invalid' };
      const what = other ? SETUP_FIELDS[other.field] ?? `The field ${other.field}` : 'The scan';
      const why = other?.message ?? b.error ?? `the server answered ${answer.status}`;
      return { result: 'error', message: `${what} is refused: ${why}. The ticket was not checked; change the setup.` };
    }
    default:
      return { result: 'error', message: tokenRefused(answer) ? 'The door token was refused. Enter a door token for this event.' : b.error ?? `The server answered ${answer.status}.` };
  }
}

// jsQR is a classic script (it defines window.jsQR), loaded once, on the first camera start.
let jsQRLoading = null;

function loadJsQR() {
  jsQRLoading ??= new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = '/assets/vendor/jsQR.js';
    script.onload = () => (typeof window.jsQR === 'function' ? resolve(window.jsQR) : reject(new Error('jsQR did not load')));
    script.onerror = () => {
      jsQRLoading = null;
      reject(new Error('the QR decoder could not be loaded'));
    };
    document.head.append(script);
  });
  return jsQRLoading;
}

// ---------------------------------------------------------------------------------------
// The page
// ---------------------------------------------------------------------------------------

const VERDICTS = {
  admitted: ['ok', 'Admitted'],
  duplicate: ['bad', 'Already checked in'],
  revoked: ['bad', 'Ticket revoked'],
  invalid: ['bad', 'Not a valid ticket'],
  wrong_event: ['bad', 'Wrong event'],
  error: ['bad', 'Not checked'],
};

const timeFormat = new Intl.DateTimeFormat(undefined, { timeStyle: 'medium' });
const dayFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

/** A time of today as a time, of another day with its date. */
function timeText(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso ?? '?');
  return date.toDateString() === new Date().toDateString() ? timeFormat.format(date) : dayFormat.format(date);
}

/** The sentence under a verdict. */
function detailOf(outcome) {
  switch (outcome.result) {
    case 'admitted':
      if (outcome.offline) return 'Checked on this device while offline; it is uploaded when the network is back.';
      return outcome.ticketTypeName ? `${outcome.ticketTypeName}.` : '';
    case 'duplicate':
      return `First admitted at ${timeText(outcome.firstCheckedInAt)}${outcome.firstGate ? ` at ${outcome.firstGate}` : ''}.`;
    case 'revoked':
      return 'This ticket was refunded: it no longer admits.';
    case 'invalid':
      return 'The code is damaged, forged or not a ticket of this box office.';
    case 'wrong_event':
      return 'This ticket is for another event.';
    default:
      return outcome.message ?? '';
  }
}

/** The server's longest gate name, in characters after normalization (MAX_GATE_CHARS). */
const MAX_GATE_CHARS = 64;

/** Never shown in a name, so dropped wherever they are (the server's normalize_name). */
const DROPPED = /[\u00ad\u200b\u2060\ufeff]/gu;
/** Kept at a name's end, where they choose how the character before them looks. */
const VARIATION_SELECTOR = /^[\ufe00-\ufe0f\u{e0100}-\u{e01ef}]$/u;

/** Shows nothing around a name: whitespace, format (Cf), the blank Braille pattern, or default-ignorable. */
const invisibleAround = (c) =>
  /^[\p{White_Space}\p{Cf}\u2800]$/u.test(c) || (/^\p{Default_Ignorable_Code_Point}$/u.test(c) && !VARIATION_SELECTOR.test(c));

/** Shows something by itself: a letter, number, punctuation, symbol or private-use character. */
const visible = (c) => /^[\p{L}\p{N}\p{P}\p{S}\p{Co}]$/u.test(c) && !/^\p{Default_Ignorable_Code_Point}$/u.test(c) && c !== '\u2800';

/**
 * A gate name as the server stores it, by the server's rule (src/domain/event_name.rs
 * `normalize_name`, src/domain/checkin.rs `Gate::parse`): invisible characters dropped,
 * whitespace runs made one space, whitespace and invisible characters around it trimmed, NFC.
 * Answers {gate} or {error}, the error in the server's words, so that the setup form refuses
 * what the server would refuse.
 */
export function parseGate(raw) {
  if (/\p{Cc}/u.test(raw)) return { error: 'must not contain control characters' };
  const chars = [...raw.replace(DROPPED, '').replace(/\p{White_Space}+/gu, ' ')];
  let start = 0;
  let end = chars.length;
  while (start < end && invisibleAround(chars[start])) start++;
  while (end > start && invisibleAround(chars[end - 1])) end--;
  const gate = chars.slice(start, end).join('').normalize('NFC');
  if (![...gate].some(visible)) return { error: 'must contain a visible character' };
  if ([...gate].length > MAX_GATE_CHARS) return { error: `must be 1 to ${MAX_GATE_CHARS} characters` };
  return { gate };
}

/**
 * The #/scan view. `ui` is the page's DOM toolkit (h, fill, notice, mount, plural); `query`
 * may preselect `event` and `gate`.
 */
export async function showScan(v, query, ui) {
  const { h, fill, notice, mount, plural } = ui;
  let token = load(TOKEN_KEY, null);
  const setup = load(SETUP_KEY, {});
  const chosenEvent = query.get('event') ?? setup.eventId ?? null;
  const chosenGate = query.get('gate') ?? setup.gate ?? '';

  mount('Scan tickets', h('h1', null, 'Scan tickets'), h('p', { class: 'muted' }, 'Loading events…'));
  // The event list needs no token; offline, the events this device has scanned for remain.
  const listed = await fetch('/events?page=1&limit=100', { cache: 'no-store' })
    .then((r) => (r.ok ? r.json() : null))
    .catch(() => null);
  if (!v.active) return;
  const events = (listed?.data ?? []).map((e) => ({ id: e.id, name: e.name }));
  if (chosenEvent && !events.some((e) => e.id === chosenEvent)) {
    events.unshift({ id: chosenEvent, name: loadDoor(chosenEvent).name ?? chosenEvent });
  }

  const tokenInput = h('input', { type: 'password', autocomplete: 'off', required: true, testid: 'door-token', id: 'door-token' });
  const tokenForm = h('form', { class: 'field', testid: 'door-token-form' },
    h('label', { for: 'door-token' }, 'Door token'),
    h('div', { class: 'inline-form' }, tokenInput, h('button', { type: 'submit', testid: 'door-token-save' }, 'Save')),
    h('p', { class: 'hint' }, 'Given by the organiser; kept in this browser.'));
  const tokenSaved = h('p', { class: 'muted small', testid: 'door-token-saved' }, 'Door token saved in this browser. ',
    h('button', { type: 'button', class: 'secondary small', testid: 'door-token-forget', onclick: () => setToken(null) }, 'Forget it'));
  const eventSelect = h('select', { id: 'scan-event', testid: 'scan-event', required: true },
    h('option', { value: '' }, 'Choose an event'),
    events.map((e) => h('option', { value: e.id, selected: e.id === chosenEvent }, e.name)));
  const gateInput = h('input', { type: 'text', id: 'scan-gate', testid: 'scan-gate', required: true, value: chosenGate, placeholder: 'e.g. North door', autocomplete: 'off' });
  const setupStatus = h('div', { class: 'form-status' });
  const setupForm = h('form', { class: 'card form', testid: 'scan-setup' },
    h('div', { class: 'field' }, h('label', { for: 'scan-event' }, 'Event'), eventSelect),
    h('div', { class: 'field' }, h('label', { for: 'scan-gate' }, 'Gate'), gateInput, h('p', { class: 'hint' }, 'Shown with each admission, so a duplicate says where the ticket was first used.')),
    setupStatus,
    h('div', { class: 'actions' }, h('button', { type: 'submit', testid: 'scan-start' }, 'Start scanning')));
  const tokenSlot = h('section', { class: 'card' });
  const body = h('div', { class: 'scan-body' });

  function setToken(value) {
    token = value;
    if (value) save(TOKEN_KEY, value);
    else forget(TOKEN_KEY);
    fill(tokenSlot, token ? tokenSaved : tokenForm);
  }
  tokenForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const value = tokenInput.value.trim();
    if (value) setToken(value);
    tokenInput.value = '';
  });
  setupForm.addEventListener('submit', (e) => {
    e.preventDefault();
    fill(setupStatus);
    const { gate, error: gateError } = parseGate(gateInput.value);
    if (!token) fill(setupStatus, notice('error', 'Enter the door token first.', 'scan-setup-error'));
    else if (!eventSelect.value) fill(setupStatus, notice('error', 'Choose the event.', 'scan-setup-error'));
    else if (gateError) fill(setupStatus, notice('error', `The gate name ${gateError}.`, 'scan-setup-error'));
    else {
      save(SETUP_KEY, { eventId: eventSelect.value, gate });
      startDoor(eventSelect.value, eventSelect.selectedOptions[0].textContent, gate);
    }
  });

  const showSetup = () => fill(body, tokenSlot, setupForm);

  /** Scanning for one event at one gate until the view is left or the setup is shown again. */
  function startDoor(eventId, eventName, gate) {
    const door = loadDoor(eventId);
    door.name = eventName;
    let keys = importKeys(door.export?.keys);
    // Set when the server could not be reached; cleared by its next answer.
    let serverDown = false;
    let uploading = false;
    let stopped = false;
    const persist = () => {
      if (!save(eventKey(eventId), door)) fill(storageWarning, notice('error', 'This browser keeps no data: queued scans are lost on reload.', 'scan-storage'));
    };
    persist();

    const verdictEl = h('p', { class: 'scan-verdict', testid: 'scan-verdict' }, 'Ready');
    const detailEl = h('p', { class: 'scan-detail', testid: 'scan-detail' }, 'Scan a ticket or type its code.');
    const resultEl = h('section', { class: 'scan-result idle', testid: 'scan-result', 'aria-live': 'assertive' }, verdictEl, detailEl);
    const countEl = h('strong', { testid: 'scan-count' });
    const eventCountEl = h('span', { class: 'muted', testid: 'scan-event-count' });
    const networkEl = h('span', { class: 'scan-network', testid: 'scan-network' });
    const uploadEl = h('div', { testid: 'scan-upload-slot' });
    const storageWarning = h('div');
    const logEl = h('ol', { class: 'scan-log', testid: 'scan-log' });
    const codeInput = h('input', { type: 'text', id: 'scan-code', testid: 'scan-code', autocomplete: 'off', spellcheck: 'false', autocapitalize: 'off', placeholder: 'Ticket code' });
    const codeForm = h('form', { class: 'inline-form', testid: 'scan-code-form' },
      h('label', { for: 'scan-code', class: 'visually-hidden' }, 'Ticket code'),
      codeInput,
      h('button', { type: 'submit', testid: 'scan-submit' }, 'Check'));
    const video = h('video', { class: 'scan-video', muted: true, playsinline: true, hidden: true, testid: 'scan-video' });
    const cameraButton = h('button', { type: 'button', class: 'secondary', testid: 'scan-camera' }, 'Start camera');
    const cameraStatus = h('div', { class: 'form-status' });

    const renderCounts = () => {
      countEl.textContent = String(door.mine.length);
      const offline = !navigator.onLine || serverDown;
      const queued = door.queue.length;
      networkEl.dataset.state = offline ? 'offline' : 'online';
      networkEl.textContent = offline ? `offline, ${queued} queued` : queued > 0 ? `online, uploading ${queued} queued` : 'online';
    };

    const renderConflicts = () => {
      if (door.conflicts.length === 0) return null;
      return h('section', { class: 'notice error', testid: 'scan-conflicts' },
        h('strong', null, `${plural(door.conflicts.length, 'conflict')}: admitted here offline, but admitted first elsewhere`),
        h('ul', null, door.conflicts.map((c) =>
          h('li', { testid: 'scan-conflict', 'data-admission-id': c.admissionId },
            `Ticket ${c.admissionId.slice(0, 8)} scanned here at ${timeText(c.scannedAt)}; `,
            c.firstCheckedInAt ? `first admitted at ${timeText(c.firstCheckedInAt)}${c.firstGate ? ` at ${c.firstGate}` : ''}.` : `the server answered ${c.result}.`))),
        h('button', { type: 'button', class: 'secondary small', testid: 'scan-conflicts-clear', onclick: () => {
          door.conflicts = [];
          persist();
          fill(uploadEl);
        } }, 'Clear'));
    };

    const show = (outcome, code) => {
      const [tone, verdict] = VERDICTS[outcome.result] ?? VERDICTS.error;
      resultEl.className = `scan-result ${tone}`;
      resultEl.dataset.result = outcome.result;
      resultEl.dataset.offline = outcome.offline ? 'true' : 'false';
      verdictEl.textContent = outcome.offline ? `${verdict} (offline)` : verdict;
      detailEl.textContent = detailOf(outcome);
      const id = outcome.admissionId ?? decodeTicketCode(code)?.admissionId;
      logEl.prepend(h('li', { class: `scan-log-${tone}`, testid: 'scan-log-entry', 'data-result': outcome.result },
        h('time', null, timeFormat.format(new Date())), ' ', verdict, id ? ` · ${id.slice(0, 8)}` : '', outcome.offline ? ' · offline' : ''));
      while (logEl.children.length > LOG_LENGTH) logEl.lastChild.remove();
    };

    /** The export's revoked and admitted lists, with what this device learnt since. */
    const book = () => {
      const admitted = new Map((door.export?.admitted ?? []).map((a) => [a.id, { checkedInAt: a.checkedInAt, gate: a.gate }]));
      for (const [id, first] of Object.entries(door.seen)) if (!admitted.has(id)) admitted.set(id, first);
      return { keys, revoked: new Set(door.export?.revoked ?? []), admitted };
    };

    const refreshExport = async () => {
      const answer = await call(token, 'GET', `/events/${eventId}/checkin/export`);
      if (stopped) return;
      if (answer.status === 200 && answer.body) {
        door.export = answer.body;
        keys = importKeys(answer.body.keys);
        serverDown = false;
        persist();
      } else if (unreachable(answer)) serverDown = true;
      else if (tokenRefused(answer)) show({ result: 'error', message: 'The door token was refused for this event. Forget it and enter the right one.' });
      renderCounts();
    };

    const refreshStats = async () => {
      const answer = await call(token, 'GET', `/events/${eventId}/checkins/stats`);
      if (stopped || answer.status !== 200 || !answer.body) return;
      const s = answer.body;
      eventCountEl.textContent = `Event: ${s.admitted} admitted · ${s.valid} to come${s.revoked ? ` · ${s.revoked} revoked` : ''}`;
    };

    /** Sends the queue in batches; a conflict is a scan admitted here that the server did not admit. */
    const upload = async () => {
      if (uploading || stopped || door.queue.length === 0 || !navigator.onLine) return;
      uploading = true;
      renderCounts();
      const summary = { admitted: 0, other: 0, conflicts: 0 };
      try {
        while (door.queue.length > 0 && !stopped) {
          const batch = door.queue.slice(0, BATCH_LIMIT);
          const answer = await call(token, 'POST', `/events/${eventId}/checkins/batch`, {
            scans: batch.map(({ code, gate: scanGate, scannedAt, nonce }) => ({ code, gate: scanGate, scannedAt, nonce })),
          });
          if (answer.status !== 200 || !Array.isArray(answer.body?.results)) {
            serverDown = unreachable(answer);
            if (!serverDown) {
              const fields = Array.isArray(answer.body?.details) ? answer.body.details.map((d) => `${d.field} ${d.message}`).join('; ') : '';
              const why = tokenRefused(answer) ? 'the door token was refused' : fields || (answer.body?.error ?? `status ${answer.status}`);
              fill(uploadEl, notice('error', `The queued scans could not be uploaded: ${why}. They stay queued.`, 'scan-upload'));
            }
            return;
          }
          serverDown = false;
          const results = new Map(answer.body.results.map((r) => [r.nonce, r]));
          for (const scan of batch) {
            const r = results.get(scan.nonce) ?? { result: 'invalid' };
            if (r.result === 'admitted') summary.admitted++;
            else summary.other++;
            if (r.firstCheckedInAt && scan.admissionId) door.seen[scan.admissionId] = { checkedInAt: r.firstCheckedInAt, gate: r.firstGate ?? null };
            if (scan.local === 'admitted' && r.result !== 'admitted') {
              summary.conflicts++;
              door.mine = door.mine.filter((id) => id !== scan.admissionId);
              door.conflicts.push({ admissionId: scan.admissionId, scannedAt: scan.scannedAt, result: r.result, firstCheckedInAt: r.firstCheckedInAt ?? null, firstGate: r.firstGate ?? null });
            }
          }
          door.queue = door.queue.slice(batch.length);
          persist();
        }
        const total = summary.admitted + summary.other;
        fill(uploadEl,
          notice('info', `Uploaded ${plural(total, 'queued scan')}: ${summary.admitted} admitted, ${summary.other} not` +
            (summary.conflicts ? `, ${plural(summary.conflicts, 'conflict')}.` : '.'), 'scan-upload'),
          renderConflicts());
      } finally {
        uploading = false;
        renderCounts();
      }
      refreshStats();
      refreshExport();
    };

    // One scan at a time, in the order they come: the camera waits for the answer.
    let busy = false;
    const scan = async (raw) => {
      const code = raw.trim();
      if (!code || busy) return;
      busy = true;
      try {
        const nonce = crypto.randomUUID();
        let outcome = null;
        if (navigator.onLine) {
          for (let attempt = 0; attempt < SCAN_ATTEMPTS && !stopped; attempt++) {
            if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, 300 * attempt));
            const answer = await call(token, 'POST', `/events/${eventId}/checkins`, { code, gate, nonce });
            if (unreachable(answer)) continue;
            serverDown = false;
            outcome = outcomeOf(answer);
            break;
          }
          serverDown = outcome === null;
        }
        if (stopped) return;
        if (outcome === null) {
          // Undecided by the server: decide here, and queue the scan under its nonce so that
          // a request that did arrive is answered the same when the batch repeats it.
          outcome = { ...(await decideOffline(code, eventId, book())), offline: true };
          const parts = decodeTicketCode(code);
          if (parts) {
            door.queue.push({ code, gate, scannedAt: new Date().toISOString(), nonce, admissionId: parts.admissionId, local: outcome.result });
          }
        } else if (outcome.result !== 'error') {
          refreshStats();
        }
        if (outcome.result === 'admitted' && outcome.admissionId) {
          if (!door.mine.includes(outcome.admissionId)) door.mine.push(outcome.admissionId);
          door.seen[outcome.admissionId] = { checkedInAt: outcome.checkedInAt ?? new Date().toISOString(), gate };
        } else if (outcome.result === 'duplicate' && outcome.admissionId && outcome.firstCheckedInAt) {
          door.seen[outcome.admissionId] = { checkedInAt: outcome.firstCheckedInAt, gate: outcome.firstGate ?? null };
        }
        persist();
        show(outcome, code);
        renderCounts();
      } finally {
        busy = false;
      }
      // A successful online scan means the network is back: send what waits.
      if (!serverDown) upload();
    };

    codeForm.addEventListener('submit', (e) => {
      e.preventDefault();
      const code = codeInput.value;
      codeInput.value = '';
      codeInput.focus();
      scan(code);
    });

    // The camera: a few frames a second into a canvas, read by jsQR. A code is scanned when
    // it comes into view, not again while it stays there.
    let stream = null;
    let frameTimer = null;
    let lastText = null;
    let lastSeenAt = 0;
    const canvas = document.createElement('canvas');
    const context = canvas.getContext('2d', { willReadFrequently: true });
    const stopCamera = () => {
      clearInterval(frameTimer);
      frameTimer = null;
      for (const track of stream?.getTracks() ?? []) track.stop();
      stream = null;
      video.srcObject = null;
      video.hidden = true;
      cameraButton.textContent = 'Start camera';
    };
    const readFrame = (jsQR) => {
      if (video.readyState < video.HAVE_CURRENT_DATA || video.videoWidth === 0) return;
      const scale = Math.min(1, 640 / video.videoWidth);
      canvas.width = Math.round(video.videoWidth * scale);
      canvas.height = Math.round(video.videoHeight * scale);
      context.drawImage(video, 0, 0, canvas.width, canvas.height);
      const { data } = context.getImageData(0, 0, canvas.width, canvas.height);
      const found = jsQR(data, canvas.width, canvas.height, { inversionAttempts: 'dontInvert' });
      if (!found?.data) return;
      const now = performance.now();
      const again = found.data === lastText && now - lastSeenAt < OUT_OF_VIEW_MS;
      lastSeenAt = now;
      if (again || busy) return;
      lastText = found.data;
      scan(found.data);
    };
    cameraButton.addEventListener('click', async () => {
      fill(cameraStatus);
      if (stream) {
        stopCamera();
        return;
      }
      try {
        const jsQR = await loadJsQR();
        stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: 'environment' }, audio: false });
        if (stopped) {
          stopCamera();
          return;
        }
        video.srcObject = stream;
        video.hidden = false;
        await video.play();
        cameraButton.textContent = 'Stop camera';
        frameTimer = setInterval(() => readFrame(jsQR), FRAME_INTERVAL_MS);
      } catch (error) {
        stopCamera();
        const denied = error?.name === 'NotAllowedError';
        fill(cameraStatus, notice('error', denied ? 'The camera was not allowed: type the codes instead.' : `The camera could not start (${error?.message ?? error}): type the codes instead.`, 'scan-camera-error'));
      }
    });

    const onNetwork = () => {
      renderCounts();
      if (navigator.onLine) {
        refreshExport().then(upload);
      }
    };
    window.addEventListener('online', onNetwork);
    window.addEventListener('offline', onNetwork);
    const leave = () => {
      stopped = true;
      stopCamera();
      window.removeEventListener('online', onNetwork);
      window.removeEventListener('offline', onNetwork);
    };
    v.onLeave(leave);
    v.every(EXPORT_REFRESH_MS, () => navigator.onLine && !stopped && refreshExport());
    v.every(STATS_REFRESH_MS, () => navigator.onLine && !stopped && refreshStats());
    // Offline by failure rather than by the browser's word: try the server now and then.
    v.every(PROBE_MS, () => {
      if (stopped || !navigator.onLine || (!serverDown && door.queue.length === 0)) return;
      if (door.queue.length > 0) upload();
      else refreshExport();
    });

    fill(body,
      h('section', { class: 'card scan-head' },
        h('p', null, h('strong', { testid: 'scan-event-name' }, eventName), ' · gate ', h('strong', { testid: 'scan-gate-name' }, gate), ' ',
          h('button', { type: 'button', class: 'secondary small', testid: 'scan-change', onclick: () => {
            leave();
            showSetup();
          } }, 'Change')),
        h('p', { class: 'scan-counts' }, countEl, ' admitted at this device · ', networkEl),
        h('p', { class: 'small' }, eventCountEl)),
      resultEl,
      uploadEl,
      storageWarning,
      h('section', { class: 'card' },
        codeForm,
        h('div', { class: 'actions' }, cameraButton),
        cameraStatus,
        video),
      h('section', { class: 'card' }, h('h2', null, 'Last scans'), logEl));
    if (door.conflicts.length > 0) fill(uploadEl, renderConflicts());
    renderCounts();
    codeInput.focus();
    if (navigator.onLine) refreshExport().then(() => {
      refreshStats();
      upload();
    });
  }

  fill(tokenSlot, token ? tokenSaved : tokenForm);
  mount('Scan tickets', h('h1', null, 'Scan tickets'), body);
  showSetup();
}
