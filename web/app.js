// Boxoffice's web page: events, live availability, buying, paying and "My tickets".
// Plain ES modules, no build step; hash routes:
//   #/            events, paginated (#/?page=2)
//   #/new         create an event, with the organiser's token when the server asks for one
//   #/events/ID   one event with live availability, and the form to buy
//   #/tickets     the buyer's tickets (#/tickets?page=2) and waiting-list entries, the
//                 latter read again every 2 s while one waits or is offered
//   #/tickets/ID  one hold: countdown, pay, cancel; the confirmation once paid, with a QR
//                 code per admission
//   #/scan        the door scanner (scan.js)
// The page is served with a CSP that forbids inline script and style, so everything is built
// with DOM calls and styled through classes in style.css.

import { deviceFingerprint } from './fingerprint.js';
import { showScan } from './scan.js';

const PAGE_SIZE = 10;
const UUID = '([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})';

const app = document.getElementById('app');
const fingerprint = deviceFingerprint();

// ---------------------------------------------------------------------------------------
// API
// ---------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error || `request failed with status ${status}`);
    this.status = status;
    this.code = body?.code || (status === 0 ? 'NETWORK' : `HTTP_${status}`);
    this.body = body || {};
  }
}

// Server time minus this browser's time, from the `Date` header, so that countdowns to a
// hold's expiry hold even when the device clock is off. Ignored below two seconds.
let clockSkewMs = 0;

function noteServerClock(response) {
  const header = response.headers.get('Date');
  const server = header ? Date.parse(header) : NaN;
  if (Number.isNaN(server)) return;
  // The header has whole seconds: the server's clock is on average half a second later.
  const skew = server + 500 - Date.now();
  clockSkewMs = Math.abs(skew) > 2000 ? skew : 0;
}

const serverNow = () => Date.now() + clockSkewMs;

/**
 * One call to the API. `token`, on organiser requests only, goes as
 * `Authorization: Bearer <token>`; buyer requests never carry one.
 */
async function api(method, path, body, { token } = {}) {
  const headers = {
    Accept: 'application/json',
    'X-Device-Fingerprint': await fingerprint,
  };
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method, headers, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, { code: 'NETWORK', error: 'the server could not be reached' });
  }
  noteServerClock(response);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// ---------------------------------------------------------------------------------------
// The organiser's token
// ---------------------------------------------------------------------------------------

// A server started with --admin-token asks organiser requests (here: creating an event) for
// `Authorization: Bearer <token>`: its admin token or an organiser token from `boxoffice
// tokens create`. The token the organiser gives is kept in sessionStorage once the server
// checked it: for this tab only, gone when the tab closes or the organiser forgets it. It is
// sent only with organiser requests, never in a URL, and never logged.
//
// A server without --admin-token takes any token on those routes without reading it, and
// nothing public says which kind a server is. So a typed token is tried only after the same
// request without it was refused (401): a server that took the request without it never
// checked the token, and the page neither keeps it nor says it does.
const ORGANISER_TOKEN_KEY = 'boxoffice.organiser.token';

/** Set when the server created an event without the token typed for it: it checks none. */
let organiserTokenUnneeded = false;

function keptOrganiserToken() {
  try {
    return sessionStorage.getItem(ORGANISER_TOKEN_KEY);
  } catch {
    return null;
  }
}

/** Whether it was kept: a blocked storage keeps nothing, and the token is asked again. */
function keepOrganiserToken(token) {
  try {
    sessionStorage.setItem(ORGANISER_TOKEN_KEY, token);
    return true;
  } catch {
    return false;
  }
}

function forgetOrganiserToken() {
  try {
    sessionStorage.removeItem(ORGANISER_TOKEN_KEY);
  } catch {
    // Nothing was kept.
  }
}

/**
 * Why a token cannot go in a header, or null. The server reads the header as printable ASCII
 * (anything else reads as no token at all), and the browser refuses other characters there.
 */
function tokenProblem(token) {
  return /^[\x20-\x7E]+$/.test(token) ? null : 'The token can hold only printable ASCII characters (letters, digits, signs and spaces).';
}

const FIELD_LABELS = {
  name: 'Name',
  date: 'Date',
  totalTickets: 'Tickets',
  maxTicketsPerFingerprint: 'Limit per buyer',
  currency: 'Currency',
  price: 'Price',
  quantity: 'Quantity',
  lines: 'Tickets',
  ticketTypeId: 'Ticket type',
  paymentToken: 'Card',
};

/** A field error as a sentence, in the page's words rather than the API's. */
function fieldMessage({ field, message }) {
  const text = String(message)
    .replace(/\btotalTickets\b/g, 'the number of tickets')
    .replace(/\bor null for no cap\b/g, 'or empty for no limit');
  return `${FIELD_LABELS[field] ?? field} ${text}.`;
}

const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

// ---------------------------------------------------------------------------------------
// Money
// ---------------------------------------------------------------------------------------

// Amounts arrive as integers in the currency's minor unit (cents for EUR, yen for JPY). They
// are added as integers (the server bounds prices so that every total stays inside the
// integers a number holds exactly) and turned into a decimal string only to be shown.
//
// How many digits a minor unit has is the server's word, from `GET /currencies` (ISO 4217),
// read once at start: the browser's Intl (CLDR) disagrees for about twenty currencies (HUF,
// IDR, IQD…), and with its digits the page would show 100 or 1000 times the amount.

/** The server's currencies by code: {code, digits, name}; empty if it could not be read. */
const currencies = new Map();

/** Reads the server's currency table once; the page starts either way. */
async function loadCurrencies() {
  try {
    for (const currency of await api('GET', '/currencies')) currencies.set(currency.code, currency);
  } catch (error) {
    console.warn('currencies: falling back to the browser\'s digits', error);
  }
}

const moneyFormats = new Map();

/**
 * Digits of a currency's minor unit as the server counts them: 2 for EUR and HUF, 0 for JPY,
 * 3 for KWD and IQD. Only a code the server did not list falls back to Intl's.
 */
function minorDigits(currency) {
  const known = currencies.get(currency);
  if (known) return known.digits;
  try {
    return new Intl.NumberFormat('en', { style: 'currency', currency }).resolvedOptions().maximumFractionDigits;
  } catch {
    return 2;
  }
}

/** An integer number of minor units as an exact decimal string: 1250, 2 digits → "12.50". */
function minorToDecimal(amount, digits) {
  const sign = amount < 0 ? '-' : '';
  const text = String(Math.abs(Math.trunc(amount))).padStart(digits + 1, '0');
  return digits === 0 ? `${sign}${text}` : `${sign}${text.slice(0, -digits)}.${text.slice(-digits)}`;
}

/** An amount in minor units, formatted for its currency and this browser's language. */
function money(amount, currency) {
  if (typeof amount !== 'number' || !currency) return '—';
  const digits = minorDigits(currency);
  let format = moneyFormats.get(currency);
  if (!format) {
    try {
      // Exactly the minor unit's digits: Intl's own would round 1500.50 HUF to 1,501.
      format = new Intl.NumberFormat(undefined, { style: 'currency', currency, minimumFractionDigits: digits, maximumFractionDigits: digits });
    } catch {
      return `${minorToDecimal(amount, digits)} ${currency}`;
    }
    moneyFormats.set(currency, format);
  }
  // A decimal string is formatted exactly; the number it stands for is never computed.
  return format.format(minorToDecimal(amount, digits));
}

/**
 * A price a person typed in major units ("12.50", "12,5", "1500") as integer minor units,
 * by string arithmetic so that no binary fraction creeps in: { amount } or { error }.
 */
function parseMajorAmount(text, digits) {
  const match = /^(\d+)(?:[.,](\d*))?$/.exec(text.trim());
  if (!match) return { error: 'must be an amount such as 12.50' };
  const fraction = match[2] ?? '';
  if (fraction.length > digits) {
    return { error: digits === 0 ? 'takes no decimals in this currency' : `takes at most ${plural(digits, 'decimal')} in this currency` };
  }
  const amount = Number(`${match[1]}${fraction.padEnd(digits, '0')}`);
  if (!Number.isSafeInteger(amount)) return { error: 'is too large' };
  return { amount };
}

/** A date and time as text, for sentences. */
const dateText = (iso) => {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : dateFormat.format(date);
};

/**
 * What went wrong, in a sentence a buyer can act on. `types`, when given, maps the event's
 * ticket type ids to their names, so that refusals about one type can name it.
 */
function explain(error, types) {
  if (!(error instanceof ApiError)) return `Something went wrong: ${error?.message ?? error}`;
  const b = error.body;
  // Refusals name a type only when the event has several; one type is the event itself.
  const typeName = (id) => (types && types.size > 1 ? types.get(id) : undefined);
  switch (error.code) {
    case 'SALES_CLOSED': {
      const subject = typeName(b.ticketTypeId) ? `${typeName(b.ticketTypeId)} tickets` : 'this event';
      if (b.salesStartAt && Date.parse(b.salesStartAt) > serverNow()) {
        return `Not on sale yet: sales for ${subject} open ${dateText(b.salesStartAt)}.`;
      }
      if (b.salesEndAt && Date.parse(b.salesEndAt) <= serverNow()) {
        return `Sales have ended: sales for ${subject} closed ${dateText(b.salesEndAt)}.`;
      }
      return `Not on sale: ${subject} cannot be bought right now.`;
    }
    case 'TICKETS_SOLD_OUT':
      return typeName(b.ticketTypeId)
        ? `Sold out: there are no ${typeName(b.ticketTypeId)} tickets left. Choose another type.`
        : 'Sold out: there are no tickets left for this event.';
    case 'INSUFFICIENT_TICKETS': {
      const short = Array.isArray(b.lines) ? b.lines.filter((l) => typeName(l.ticketTypeId) !== undefined) : [];
      if (short.length > 0) {
        const left = short.map((l) => `${typeName(l.ticketTypeId)}: ${l.available} left`).join(', ');
        return `Not enough tickets left for this order (${left}). Choose fewer.`;
      }
      return typeof b.availableTickets === 'number'
        ? `Not enough tickets left: only ${plural(b.availableTickets, 'ticket')} remaining. Choose fewer.`
        : 'Not enough tickets left for that many. Choose fewer.';
    }
    case 'FINGERPRINT_LIMIT':
      return typeof b.limit === 'number'
        ? `Limit per buyer reached: you may have at most ${plural(b.limit, 'ticket')} for this event` +
            (b.held ? ` and already have ${b.held}.` : '.')
        : 'Limit per buyer reached for this event.';
    case 'RESERVATION_EXPIRED':
      return 'Your hold expired and its tickets went back on sale. Please start again.';
    case 'PAYMENT_DECLINED':
      return 'Payment declined: the card was refused. Your tickets are still held, so you can try another card.';
    case 'FINGERPRINT_MISMATCH':
      return 'This hold was made on another device or browser, so it cannot be changed from here.';
    case 'INVALID_STATUS':
      return b.status
        ? `This hold is ${STATUS_LABELS[b.status]?.toLowerCase() ?? b.status} and can no longer be changed.`
        : 'This hold can no longer be changed.';
    case 'EVENT_EXISTS':
      return 'An event with this name and date already exists.';
    case 'TICKETS_AVAILABLE':
      return typeof b.available === 'number' && b.available > 0
        ? `No need to wait: ${plural(b.available, 'ticket')} can be bought now. Hold them above instead.`
        : 'No need to wait: these tickets can be bought now. Hold them above instead.';
    case 'ALREADY_WAITING':
      return 'You are already on the waiting list for these tickets. "My tickets" shows your place in line.';
    case 'VALIDATION_ERROR':
      if (Array.isArray(b.details) && b.details.length > 0) {
        return b.details.map(fieldMessage).join(' ');
      }
      return 'Please check the form.';
    case 'UNAUTHORIZED':
      return 'This needs an organiser token, and none was given.';
    case 'FORBIDDEN':
      return 'The token given was refused for this.';
    case 'NOT_FOUND':
      return 'Not found: it may have been removed, or the link is wrong.';
    case 'SERVICE_UNAVAILABLE':
      return 'The service is busy right now. Please try again in a moment.';
    case 'NETWORK':
      return 'The server could not be reached. Check your connection and try again.';
    default:
      return b.error ? `${b.error[0].toUpperCase()}${b.error.slice(1)}.` : error.message;
  }
}

// ---------------------------------------------------------------------------------------
// DOM helpers
// ---------------------------------------------------------------------------------------

const PROPERTIES = new Set(['value', 'checked', 'disabled', 'hidden', 'required', 'selected']);

/** Creates an element. props: class, testid, on<event> handlers, properties, attributes. */
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'testid') el.dataset.testid = value;
    else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (PROPERTIES.has(key)) el[key] = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces an element's content. */
function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/** A message box; role=alert makes screen readers announce errors. */
function notice(kind, text, testid) {
  return h('p', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status', testid }, text);
}

/** Replays a short highlight on an element whose value changed. */
function flash(el) {
  el.classList.remove('flash');
  void el.offsetWidth;
  el.classList.add('flash');
}

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const timeFormat = new Intl.DateTimeFormat(undefined, { timeStyle: 'medium' });

function when(iso) {
  const date = new Date(iso);
  return h('time', { datetime: iso }, Number.isNaN(date.getTime()) ? iso : dateFormat.format(date));
}

/** m:ss (or h:mm:ss) of a number of milliseconds, never negative. */
function clock(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = String(total % 60).padStart(2, '0');
  return hours > 0 ? `${hours}:${String(minutes).padStart(2, '0')}:${seconds}` : `${minutes}:${seconds}`;
}

function availabilityMeter(available, total) {
  return h('meter', {
    class: 'availability',
    min: 0,
    max: Math.max(total, 1),
    value: available,
    low: total * 0.2,
    high: total * 0.5,
    optimum: total,
    'aria-label': 'Tickets left',
  });
}

const STATUS_LABELS = {
  reserved: 'Held',
  payment_pending: 'Paying',
  purchased: 'Purchased',
  cancelled: 'Cancelled',
  expired: 'Expired',
  refund_pending: 'Refunding',
  refunded: 'Refunded',
};

/** A reserved hold whose time is up counts as expired even before the server marks it. */
function effectiveStatus(allocation) {
  if (allocation.status === 'reserved' && Date.parse(allocation.expiresAt) <= serverNow()) {
    return 'expired';
  }
  return allocation.status;
}

function statusBadge(status, testid) {
  return h('span', { class: `badge status-${status}`, testid, 'data-status': status }, STATUS_LABELS[status] ?? status);
}

function pager(meta, hrefFor, noun) {
  if (!meta || meta.pages <= 1) {
    return meta?.total ? h('p', { class: 'muted pager-total' }, plural(meta.total, noun)) : null;
  }
  const link = (page, label, testid, rel) =>
    page >= 1 && page <= meta.pages
      ? h('a', { class: 'button secondary', href: hrefFor(page), testid, rel }, label)
      : h('span', { class: 'button secondary', 'aria-disabled': 'true', testid }, label);
  return h(
    'nav',
    { class: 'pager', 'aria-label': 'Pages' },
    link(meta.page - 1, '← Previous', 'pager-prev', 'prev'),
    h('span', { class: 'muted', testid: 'pager-status' }, `Page ${meta.page} of ${meta.pages} · ${plural(meta.total, noun)}`),
    link(meta.page + 1, 'Next →', 'pager-next', 'next'),
  );
}

// ---------------------------------------------------------------------------------------
// Views and routing
// ---------------------------------------------------------------------------------------

// The view on screen. Leaving it runs its cleanups (timers, the live stream) and makes any
// of its requests still in flight harmless.
let view = null;

class View {
  constructor() {
    this.cleanups = [];
    this.left = false;
  }
  get active() {
    return !this.left && view === this;
  }
  onLeave(fn) {
    this.cleanups.push(fn);
  }
  every(ms, fn) {
    const timer = setInterval(fn, ms);
    this.onLeave(() => clearInterval(timer));
  }
  after(ms, fn) {
    const timer = setTimeout(fn, ms);
    this.onLeave(() => clearTimeout(timer));
  }
  leave() {
    this.left = true;
    for (const fn of this.cleanups.splice(0)) {
      try {
        fn();
      } catch (err) {
        console.error(err);
      }
    }
  }
}

function mount(title, ...children) {
  document.title = title ? `${title} · Boxoffice` : 'Boxoffice';
  fill(app, children);
}

const routes = [
  [/^\/?$/, 'events', showEvents],
  [/^\/new$/, 'new', showCreateEvent],
  [new RegExp(`^/events/${UUID}$`), 'events', showEvent],
  [/^\/tickets$/, 'tickets', showMyTickets],
  [new RegExp(`^/tickets/${UUID}$`), 'tickets', showTicket],
  [/^\/scan$/, 'scan', (v, query) => showScan(v, query, { h, fill, notice, mount, plural })],
];

function route() {
  let raw = location.hash.replace(/^#/, '') || '/';
  try {
    raw = decodeURI(raw);
  } catch {
    // Keep the raw text: it matches no route and shows "Page not found".
  }
  const [path, queryText = ''] = raw.split('?');
  const query = new URLSearchParams(queryText);
  view?.leave();
  view = new View();
  const match = routes.find(([pattern]) => pattern.test(path));
  for (const link of document.querySelectorAll('[data-nav]')) {
    if (match && link.dataset.nav === match[1]) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  window.scrollTo(0, 0);
  if (!match) {
    mount('Not found', h('h1', null, 'Page not found'), h('p', null, h('a', { href: '#/' }, 'See all events')));
    return;
  }
  const [pattern, , show] = match;
  const params = path.match(pattern).slice(1);
  show(view, query, ...params).catch((error) => {
    console.error(error);
    if (view.active) mount('Error', h('h1', null, 'Something went wrong'), notice('error', explain(error), 'page-error'));
  });
}

const pageNumber = (query) => Math.max(1, Number.parseInt(query.get('page') ?? '1', 10) || 1);

// --- #/ : the event list ----------------------------------------------------------------

async function showEvents(v, query) {
  const page = pageNumber(query);
  mount('Events', h('div', { class: 'heading' }, h('h1', null, 'Events'), h('a', { class: 'button', href: '#/new' }, 'New event')), h('p', { class: 'muted' }, 'Loading events…'));
  const result = await api('GET', `/events?page=${page}&limit=${PAGE_SIZE}`);
  if (!v.active) return;
  const { data: events, meta } = result;
  const list = h('ul', { class: 'cards', testid: 'event-list' }, events.map(eventCard));
  mount(
    'Events',
    h('div', { class: 'heading' }, h('h1', null, 'Events'), h('a', { class: 'button', href: '#/new', testid: 'new-event-link' }, 'New event')),
    events.length > 0
      ? list
      : h('div', { class: 'empty', testid: 'event-list-empty' }, meta.total > 0 ? 'No events on this page.' : 'No events yet.', ' ', h('a', { href: meta.total > 0 ? '#/' : '#/new' }, meta.total > 0 ? 'Go to the first page' : 'Create the first one')),
    pager(meta, (p) => `#/?page=${p}`, 'event'),
  );
}

function eventCard(event) {
  const soldOut = event.availableTickets === 0;
  return h(
    'li',
    { class: 'card event-card', testid: 'event-card', 'data-event-id': event.id },
    h('h2', null, h('a', { href: `#/events/${event.id}`, class: 'card-link', testid: 'event-link' }, event.name)),
    h('p', { class: 'muted' }, when(event.date)),
    h(
      'div',
      { class: 'availability-row' },
      availabilityMeter(event.availableTickets, event.totalTickets),
      soldOut
        ? h('span', { class: 'badge sold-out', testid: 'event-available' }, 'Sold out')
        : h('span', { testid: 'event-available' }, h('strong', null, event.availableTickets), ` of ${event.totalTickets} left`),
    ),
  );
}

// --- #/new : create an event ------------------------------------------------------------

function defaultEventDate() {
  const date = new Date();
  date.setDate(date.getDate() + 7);
  date.setHours(19, 0, 0, 0);
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

function field(label, name, input, hint) {
  const id = `field-${name}`;
  input.id = id;
  input.name = name;
  const error = h('p', { class: 'field-error', id: `${id}-error`, testid: `error-${name}`, hidden: true });
  input.setAttribute('aria-describedby', `${id}-error${hint ? ` ${id}-hint` : ''}`);
  return h('div', { class: 'field', 'data-field': name }, h('label', { for: id }, label), input, hint ? h('p', { class: 'hint', id: `${id}-hint` }, hint) : null, error);
}

async function showCreateEvent(v) {
  const name = h('input', { type: 'text', required: true, maxlength: 200, autocomplete: 'off', testid: 'create-name' });
  const date = h('input', { type: 'datetime-local', required: true, value: defaultEventDate(), testid: 'create-date' });
  const total = h('input', { type: 'number', required: true, min: 1, max: 1000000, step: 1, inputmode: 'numeric', value: '100', testid: 'create-total' });
  const cap = h('input', { type: 'number', min: 1, step: 1, inputmode: 'numeric', placeholder: 'No limit', testid: 'create-cap' });
  const currency = h('input', { type: 'text', maxlength: 3, autocomplete: 'off', autocapitalize: 'characters', spellcheck: 'false', placeholder: 'Default', class: 'code-input', list: 'currency-codes', testid: 'create-currency' });
  // The server's codes, offered as the code is typed.
  const currencyCodes = h('datalist', { id: 'currency-codes' }, [...currencies.values()].map((c) => h('option', { value: c.code, label: c.name })));
  const price = h('input', { type: 'text', inputmode: 'decimal', autocomplete: 'off', placeholder: '0.00', testid: 'create-price' });
  const submit = h('button', { type: 'submit', testid: 'create-submit' }, 'Create event');
  const status = h('div', { class: 'form-status' });

  // The organiser's token: a field while none is kept, else a line that says so and forgets it.
  const tokenInput = h('input', { type: 'password', autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false', testid: 'organiser-token' });
  const tokenField = field('Organiser token', 'organiserToken', tokenInput,
    'Only if this box office asks for one: its admin token, or an organiser token from "boxoffice tokens create --scope organiser". Once the box office has checked it, kept for this browser tab until you forget it or close the tab.');
  const forget = h('button', { type: 'button', class: 'secondary small', testid: 'organiser-token-forget' }, 'Forget token');
  const keptLine = h('p', { class: 'muted small', testid: 'organiser-token-kept' }, 'An organiser token is kept for this tab and sent when you create an event. ', forget);
  const tokenStatus = h('p', { class: 'muted small', role: 'status', testid: 'organiser-token-status' },
    organiserTokenUnneeded ? 'This box office lets anyone create events: the token given last time was not needed, so it was not kept.' : null);
  const showToken = () => {
    const kept = keptOrganiserToken() !== null;
    keptLine.hidden = !kept;
    tokenField.hidden = kept;
  };
  showToken();
  forget.addEventListener('click', () => {
    forgetOrganiserToken();
    tokenInput.value = '';
    showToken();
    tokenStatus.textContent = 'Forgotten. Events are now created without a token unless you enter one.';
    tokenInput.focus();
  });

  const form = h(
    'form',
    { class: 'card form', testid: 'create-form' },
    field('Name', 'name', name),
    field('Date and time', 'date', date, 'In your time zone.'),
    h('div', { class: 'field-row' }, field('Tickets', 'totalTickets', total), field('Limit per buyer', 'maxTicketsPerFingerprint', cap, 'Optional.')),
    h('div', { class: 'field-row' },
      field('Currency', 'currency', currency, 'A code such as EUR or JPY; empty for the server\'s default.'),
      currencyCodes,
      field('Ticket price', 'price', price, 'Of a "General admission" ticket, e.g. 12.50; empty for free.')),
    h('div', { class: 'organiser-token' }, keptLine, tokenField, tokenStatus),
    status,
    h('div', { class: 'actions' }, submit, h('a', { class: 'button secondary', href: '#/' }, 'Cancel')),
  );

  const clearErrors = () => {
    for (const el of form.querySelectorAll('.field-error')) {
      el.hidden = true;
      el.textContent = '';
    }
    for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
    fill(status);
    tokenStatus.textContent = '';
  };
  const showFieldError = (fieldName, message) => {
    const wrapper = form.querySelector(`[data-field="${fieldName}"]`);
    if (!wrapper) return false;
    const el = wrapper.querySelector('.field-error');
    el.textContent = message;
    el.hidden = false;
    wrapper.querySelector('input')?.setAttribute('aria-invalid', 'true');
    return true;
  };

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearErrors();
    const when = new Date(date.value);
    if (Number.isNaN(when.getTime())) {
      showFieldError('date', 'Choose a date and time.');
      return;
    }
    const body = {
      name: name.value,
      date: when.toISOString(),
      totalTickets: Number(total.value),
    };
    if (cap.value.trim() !== '') body.maxTicketsPerFingerprint = Number(cap.value);
    const code = currency.value.trim().toUpperCase();
    if (code !== '') {
      if (!/^[A-Z]{3}$/.test(code)) {
        showFieldError('currency', 'Currency must be a three-letter code such as EUR.');
        return;
      }
      body.currency = code;
    }
    const priceText = price.value.trim();
    if (priceText !== '') {
      // Minor units depend on the currency: "12" is 1200 cents but 12 yen. Without a code
      // the server's default currency decides, which the page does not know: only 0 is sure.
      const free = /^0+(?:[.,]0*)?$/.test(priceText);
      if (code === '' && !free) {
        showFieldError('currency', 'Give the currency of a price that is not free.');
        return;
      }
      const parsed = free ? { amount: 0 } : parseMajorAmount(priceText, minorDigits(code));
      if (parsed.error) {
        showFieldError('price', `Price ${parsed.error}.`);
        return;
      }
      body.price = parsed.amount;
    }
    // A token typed now, else the one kept for this tab; none at all on an open server.
    const typed = tokenField.hidden ? '' : tokenInput.value.trim();
    const problem = typed === '' ? null : tokenProblem(typed);
    if (problem) {
      showFieldError('organiserToken', problem);
      tokenInput.focus();
      return;
    }
    const token = typed || keptOrganiserToken() || undefined;
    submit.disabled = true;
    submit.textContent = 'Creating…';
    try {
      let event;
      if (typed) {
        // First without it: only a server that refuses that (401) checks tokens at all.
        try {
          event = await api('POST', '/events', body);
          organiserTokenUnneeded = true;
        } catch (error) {
          if (error.code !== 'UNAUTHORIZED') throw error;
          event = await api('POST', '/events', body, { token: typed });
          // The server checked it and took it: kept for the next event made from this tab.
          keepOrganiserToken(typed);
          organiserTokenUnneeded = false;
        }
      } else {
        event = await api('POST', '/events', body, { token });
      }
      if (v.active) location.hash = `#/events/${event.id}`;
    } catch (error) {
      if (!v.active) return;
      submit.disabled = false;
      submit.textContent = 'Create event';
      if (error.code === 'UNAUTHORIZED' || error.code === 'FORBIDDEN') {
        // A kept token that is refused (revoked since, say) is forgotten, and asked for again.
        const keptRefused = !typed && token !== undefined;
        if (keptRefused) forgetOrganiserToken();
        showToken();
        const text = error.code === 'UNAUTHORIZED'
          ? 'This box office needs an organiser token to create events. Enter it under "Organiser token" and try again.'
          : `The organiser token was refused: this box office does not take it to create events (mistyped, revoked, or a door token). ${keptRefused ? 'It is no longer kept; enter a valid one.' : 'Check it and try again.'}`;
        showFieldError('organiserToken', error.code === 'UNAUTHORIZED' ? 'Needed to create events here.' : 'Refused by the server.');
        fill(status, notice('error', text, 'create-error'));
      } else if (error.code === 'VALIDATION_ERROR' && Array.isArray(error.body.details)) {
        const unplaced = error.body.details.filter((d) => !showFieldError(d.field, fieldMessage(d)));
        fill(status, notice('error', unplaced.length ? explain(new ApiError(422, { ...error.body, details: unplaced })) : 'Please correct the fields marked below.', 'create-error'));
      } else if (error.code === 'EVENT_EXISTS') {
        showFieldError('name', explain(error));
        fill(status, notice('error', explain(error), 'create-error'));
      } else {
        fill(status, notice('error', explain(error), 'create-error'));
      }
      form.querySelector('[aria-invalid]')?.focus();
    }
  });

  mount('New event', h('h1', null, 'New event'), form);
  name.focus();
}

// --- #/events/ID : one event, live ------------------------------------------------------

/** Why a ticket type cannot be bought now (inactive, before or after its sales), or null. */
function offSaleReason(type, event) {
  if (type.active === false) return 'Not on sale';
  const now = serverNow();
  const starts = [type.salesStartAt, event.salesStartAt].filter(Boolean);
  const ends = [type.salesEndAt, event.salesEndAt].filter(Boolean);
  const opens = starts.filter((at) => Date.parse(at) > now).sort((x, y) => Date.parse(y) - Date.parse(x))[0];
  if (opens) return `On sale from ${dateText(opens)}`;
  if (ends.some((at) => Date.parse(at) <= now)) return 'Sales ended';
  return null;
}

/** The − and + buttons beside a quantity field, kept between `min` and the field's max. */
function steppersFor(input, min, changed) {
  const stepper = (delta, label) =>
    h('button', {
      type: 'button',
      class: 'secondary step',
      'aria-label': label,
      onclick: () => {
        const next = Math.max(min, (Number.parseInt(input.value, 10) || 0) + delta);
        input.value = String(Math.min(next, Number(input.max) || next));
        changed();
      },
    }, delta > 0 ? '+' : '−');
  return [stepper(-1, 'One fewer'), stepper(1, 'One more')];
}

/**
 * One ticket type on the event page: name, price, what is left, and how many to buy. With a
 * single type the row is the whole order (quantity from 1, the form's `buy-quantity`).
 */
function typeRow(type, event, single, initial) {
  const min = single ? 1 : 0;
  // A quantity carried over from before the organiser's change, when it still fits the row.
  const kept = initial !== undefined && (initial === '' ? !single : Number(initial) >= min);
  const input = h('input', {
    type: 'number',
    min,
    step: 1,
    value: kept ? initial : String(min),
    inputmode: 'numeric',
    id: single ? 'buy-quantity' : null,
    testid: single ? 'buy-quantity' : 'type-quantity',
    'aria-label': single ? null : `${type.name}: how many tickets?`,
  });
  const listeners = [];
  const changed = () => listeners.forEach((fn) => fn());
  input.addEventListener('input', changed);
  const steppers = steppersFor(input, min, changed);
  const availableEl = h('span', { class: 'type-available', testid: 'type-available' });
  const price = type.price === null || type.price === undefined
    ? null
    : h('span', { class: 'type-price', testid: 'type-price' }, type.price === 0 ? 'Free' : money(type.price, event.currency ?? type.currency));
  const el = h(
    'li',
    { class: 'type-row', testid: 'ticket-type', 'data-type-id': type.id },
    h('div', { class: 'type-info' },
      type.name ? h('span', { class: 'type-name', testid: 'type-name' }, type.name) : null,
      price,
      type.description ? h('p', { class: 'muted small type-description' }, type.description) : null,
      type.maxPerOrder ? h('p', { class: 'muted small' }, `At most ${type.maxPerOrder} per order.`) : null),
    h('div', { class: 'type-side' }, availableEl, h('div', { class: 'quantity' }, steppers[0], input, steppers[1])),
  );

  let available = type.available;
  const parsed = () => Number(input.value);
  return {
    el,
    type,
    onChange: (fn) => listeners.push(fn),
    /** The field's text as the buyer left it, carried to the row that replaces this one. */
    value: () => input.value,
    /** How many of this type the order takes now: 0 when off sale or left empty. */
    quantity: () => (input.disabled || !Number.isInteger(parsed()) || parsed() < 0 ? 0 : parsed()),
    /** Whether the field holds a count the order can take (empty counts as 0 beside others). */
    valid: () => input.disabled || (single ? Number.isInteger(parsed()) && parsed() >= 1 : input.value === '' || (Number.isInteger(parsed()) && parsed() >= 0)),
    setAvailable: (n) => {
      if (typeof n === 'number') available = n;
    },
    /** Shows what is left given the event's own count; answers on-sale, sold-out or closed. */
    render: (eventAvailable, cap) => {
      const left = Math.min(available ?? eventAvailable, eventAvailable);
      const reason = offSaleReason(type, event);
      const state = reason ? 'closed' : left === 0 ? 'sold-out' : 'on-sale';
      el.dataset.sale = state;
      availableEl.textContent = reason ?? (left === 0 ? 'Sold out' : `${left} left`);
      for (const control of [input, ...steppers]) control.disabled = state !== 'on-sale';
      input.max = String(Math.max(min, Math.min(left, type.maxPerOrder ?? Infinity, cap)));
      return state;
    },
  };
}

/**
 * Joining the waiting list of one ticket type: how many, and the button. Shown while the type
 * is sold out to the public (nothing left, or others already wait for it). `onAvailable`
 * takes what a TICKETS_AVAILABLE refusal says the type has left.
 */
function waitRow(v, type, event, single, typeNames, onAvailable) {
  const input = h('input', {
    type: 'number',
    min: 1,
    step: 1,
    value: '1',
    inputmode: 'numeric',
    testid: 'wait-quantity',
    'aria-label': single || !type.name ? 'How many tickets to wait for?' : `${type.name}: how many tickets to wait for?`,
  });
  const steppers = steppersFor(input, 1, () => {});
  const join = h('button', { type: 'button', class: 'secondary', testid: 'wait-join' }, 'Join the waiting list');
  const status = h('div', { class: 'form-status' });
  const el = h(
    'li',
    { class: 'type-row wait-row', testid: 'wait-type', 'data-type-id': type.id, hidden: true },
    h('div', { class: 'type-info' },
      !single && type.name ? h('span', { class: 'type-name' }, type.name) : null,
      h('span', { class: 'muted small' }, 'How many tickets?')),
    h('div', { class: 'type-side' }, h('div', { class: 'quantity' }, steppers[0], input, steppers[1]), join),
    status,
  );

  join.addEventListener('click', async () => {
    fill(status);
    const quantity = Number(input.value);
    if (!Number.isInteger(quantity) || quantity < 1) {
      fill(status, notice('error', 'Choose how many tickets: at least 1.', 'wait-error'));
      return;
    }
    join.disabled = true;
    join.textContent = 'Joining…';
    try {
      const body = type.id === null ? { quantity } : { quantity, ticketTypeId: type.id };
      const entry = await api('POST', `/events/${event.id}/waiting-list`, body);
      if (!v.active) return;
      const place = typeof entry.position === 'number'
        ? ['You are number ', h('strong', { testid: 'wait-position' }, String(entry.position)), ` in line for ${plural(entry.quantity, 'ticket')}. `]
        : 'You are on the waiting list. ';
      fill(status, h('p', { class: 'notice info', role: 'status', testid: 'wait-joined' },
        place,
        'When tickets come back they are held for you in turn; ',
        h('a', { href: '#/tickets', testid: 'wait-to-my-tickets' }, 'My tickets'),
        ' shows your place and, then, the offer to pay.'));
    } catch (error) {
      if (!v.active) return;
      if (error.code === 'TICKETS_AVAILABLE') onAvailable(error.body.available);
      if (error.code === 'ALREADY_WAITING') {
        fill(status, h('p', { class: 'notice info', role: 'status', testid: 'wait-error' },
          'You are already on the waiting list for these tickets. ',
          h('a', { href: '#/tickets', testid: 'wait-to-my-tickets' }, 'My tickets'),
          ' shows your place in line.'));
      } else fill(status, notice('error', explain(error, typeNames), 'wait-error'));
    } finally {
      if (v.active) {
        join.disabled = false;
        join.textContent = 'Join the waiting list';
      }
    }
  });

  return {
    el,
    /** Shown only while the type's row reads sold out; at most what one order may take. */
    render: (state, cap) => {
      el.hidden = state !== 'sold-out';
      const max = Math.min(type.maxPerOrder ?? Infinity, cap);
      if (Number.isFinite(max)) input.max = String(Math.max(1, max));
      else input.removeAttribute('max');
    },
  };
}

async function showEvent(v, _query, id) {
  mount('Event', h('p', { class: 'muted' }, 'Loading event…'));
  let event;
  try {
    event = await api('GET', `/events/${id}`);
  } catch (error) {
    if (!v.active) return;
    mount('Event', h('p', null, h('a', { href: '#/' }, '← All events')), notice('error', explain(error), 'page-error'));
    return;
  }
  if (!v.active) return;

  const stats = {
    total: event.totalTickets,
    available: event.availableTickets,
    held: event.reservedTickets,
    sold: event.purchasedTickets,
  };
  const availableEl = h('span', { class: 'big-number', testid: 'stat-available' });
  const availableLabel = h('span', { class: 'big-label' }, ' tickets left');
  const heldEl = h('dd', { testid: 'stat-held' });
  const soldEl = h('dd', { testid: 'stat-sold' });
  const statTotalEl = h('dd', { testid: 'stat-total' });
  const meterSlot = h('div', { class: 'meter-slot' });
  const liveEl = h('span', { class: 'live connecting', testid: 'live-status' }, 'Connecting…');
  const lastChangeEl = h('p', { class: 'muted last-change', testid: 'last-change' });

  // What the organiser decides (name, date, types, prices, windows, the limit per buyer) is
  // shown from `event`, and read again when the organiser changes it (`setEvent`).
  const nameEl = h('h1', { testid: 'event-name' });
  const dateEl = h('p', { class: 'muted', testid: 'event-date' });
  const capNote = h('span');
  const changedSlot = h('div', { class: 'changed-slot' });
  const typeList = h('ul', { class: 'type-list', testid: 'ticket-types' });
  const waitList = h('ul', { class: 'type-list' });
  const singleLabel = h('label', { for: 'buy-quantity' }, 'How many tickets?');

  const buy = h('button', { type: 'submit', testid: 'buy-submit' }, 'Hold tickets');
  const buyStatus = h('div', { class: 'form-status' });
  const totalEl = h('strong', { testid: 'order-total' });
  const countEl = h('span', { class: 'muted', testid: 'order-count' });
  const totalRow = h('p', { class: 'order-total' }, h('span', null, 'Total ', countEl), totalEl);
  const buyForm = h(
    'form',
    { class: 'buy-form', testid: 'buy-form', novalidate: true },
    singleLabel,
    typeList,
    totalRow,
    buy,
  );
  const soldOutNote = h('p', { class: 'notice info', testid: 'sold-out-note', hidden: true });
  const waitSection = h(
    'div',
    { class: 'wait-section', testid: 'wait-section', hidden: true },
    h('h3', null, 'Join the waiting list'),
    h('p', { class: 'muted small' }, 'When tickets come back, they are held for the people waiting, in the order they joined, for a limited time to pay.'),
    waitList,
  );

  // The types on sale, each a row with its own quantity, and the waiting list of each type
  // sold out to the public. A server without ticket types answers no `ticketTypes`: its one
  // pool is then shown as one unpriced row.
  let types;
  let typeNames;
  let single;
  let rows = [];
  let waits = [];
  let ticking = false;
  // Each type's availability as the stream last said it. A read of the event made for an
  // organiser's change may have been answered before the stream's last message: the rows it
  // rebuilds take these, since the stream always ends on the latest state and the read may
  // never be followed by another message. A type the stream has not listed yet (one just
  // added) takes the read's.
  const streamAvailable = new Map();
  /** Shows `next` as the event; `quantities` (type id → field text) are kept where they fit. */
  const setEvent = (next, quantities = new Map()) => {
    event = next;
    types = Array.isArray(event.ticketTypes)
      ? event.ticketTypes
      : [{ id: null, name: null, price: null, active: true }];
    typeNames = new Map(types.map((t) => [t.id, t.name]));
    single = types.length === 1;
    rows = types.map((type) => typeRow(type, event, single, quantities.get(type.id)));
    for (const r of rows) {
      if (streamAvailable.has(r.type.id)) r.setAvailable(streamAvailable.get(r.type.id));
      r.onChange(renderTotal);
    }
    waits = types.map((type) =>
      waitRow(v, type, event, single, typeNames, (available) => {
        rows.find((r) => r.type.id === type.id)?.setAvailable(available);
        render();
      }));
    fill(typeList, rows.map((r) => r.el));
    fill(waitList, waits.map((w) => w.el));
    singleLabel.hidden = !single;
    totalRow.hidden = event.currency === undefined;
    nameEl.textContent = event.name;
    fill(dateEl, when(event.date));
    capNote.textContent = event.maxTicketsPerFingerprint ? ` At most ${plural(event.maxTicketsPerFingerprint, 'ticket')} per buyer.` : '';
    document.title = `${event.name} · Boxoffice`;
    // Sales windows open and close with the clock, not only with the stream.
    if (!ticking && (types.some((t) => t.salesStartAt || t.salesEndAt) || event.salesStartAt || event.salesEndAt)) {
      ticking = true;
      v.every(1000, render);
    }
  };

  /** Quantities chosen now, and the order's total: integers added, formatted at the end. */
  const order = () => {
    let count = 0;
    let total = 0;
    for (const r of rows) {
      count += r.quantity();
      total += r.quantity() * (r.type.price ?? 0);
    }
    return { count, total };
  };
  const renderTotal = () => {
    const { count, total } = order();
    countEl.textContent = `(${plural(count, 'ticket')})`;
    // "Free" only for what costs nothing: nothing chosen of a priced event is €0.00.
    const free = total === 0 && (count > 0 || rows.every((r) => !(r.type.price > 0)));
    totalEl.textContent = free ? 'Free' : money(total, event.currency);
  };

  // While an order is on its way, live updates redraw the page but leave the button alone.
  let holding = false;
  const render = () => {
    availableEl.textContent = String(stats.available);
    availableLabel.textContent = stats.available === 1 ? ' ticket left' : ' tickets left';
    heldEl.textContent = String(stats.held);
    soldEl.textContent = String(stats.sold);
    statTotalEl.textContent = String(stats.total);
    fill(meterSlot, availabilityMeter(stats.available, stats.total));
    const cap = event.maxTicketsPerFingerprint ?? Infinity;
    const sale = rows.map((r) => r.render(stats.available, cap));
    waits.forEach((w, i) => w.render(sale[i], cap));
    waitSection.hidden = !sale.includes('sold-out');
    const soldOut = stats.available === 0 || sale.every((state) => state === 'sold-out');
    const closed = !soldOut && sale.every((state) => state !== 'on-sale');
    buy.disabled = holding || soldOut || closed;
    soldOutNote.hidden = !soldOut;
    soldOutNote.textContent = stats.held > 0
      ? 'Sold out for now. Held tickets that are not paid for go back on sale; this page updates by itself.'
      : 'Sold out.';
    buy.textContent = holding ? 'Holding…' : soldOut ? 'Sold out' : closed ? 'Not on sale' : 'Hold tickets';
    renderTotal();
  };
  setEvent(event);
  render();

  buyForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    fill(buyStatus);
    const chosen = rows.filter((r) => r.quantity() > 0);
    if (chosen.length === 0 || rows.some((r) => !r.valid())) {
      fill(buyStatus, notice('error', 'Choose how many tickets: at least 1.', 'buy-error'));
      return;
    }
    // One order for every line: the server holds all of them or none.
    const body = types[0].id === null
      ? { quantity: chosen[0].quantity() }
      : { lines: chosen.map((r) => ({ ticketTypeId: r.type.id, quantity: r.quantity() })) };
    holding = true;
    render();
    try {
      const allocation = await api('POST', `/events/${id}/tickets`, body);
      remember(allocation, event);
      if (v.active) location.hash = `#/tickets/${allocation.id}`;
    } catch (error) {
      holding = false;
      if (!v.active) return;
      // What the refusal says about each type is newer than what the page knew.
      const b = error.body ?? {};
      if (error.code === 'TICKETS_SOLD_OUT' && b.ticketTypeId) rows.find((r) => r.type.id === b.ticketTypeId)?.setAvailable(0);
      if (error.code === 'INSUFFICIENT_TICKETS' && Array.isArray(b.lines)) {
        for (const line of b.lines) rows.find((r) => r.type.id === line.ticketTypeId)?.setAvailable(line.available);
      }
      render();
      fill(buyStatus, notice('error', explain(error, typeNames), 'buy-error'));
    }
  });

  mount(
    event.name,
    h('p', { class: 'crumbs' }, h('a', { href: '#/' }, '← All events')),
    nameEl,
    dateEl,
    h(
      'section',
      { class: 'card stats', 'aria-label': 'Availability', testid: 'event-stats' },
      h('div', { class: 'stats-head' }, h('div', null, availableEl, availableLabel), liveEl),
      meterSlot,
      h('dl', { class: 'counts' },
        h('div', null, h('dt', null, 'Held'), heldEl),
        h('div', null, h('dt', null, 'Sold'), soldEl),
        h('div', null, h('dt', null, 'Total'), statTotalEl)),
      lastChangeEl,
    ),
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'buy-heading' },
      h('h2', { id: 'buy-heading' }, 'Buy tickets'),
      h('p', { class: 'muted' }, 'Tickets are held for you for a few minutes while you pay.', capNote),
      changedSlot,
      soldOutNote,
      buyForm,
      buyStatus,
      waitSection,
    ),
  );

  // The organiser's changes: the event read again and shown in place, the buyer's quantities
  // kept for the types still offered, and what changed said above the order. Counts stay
  // the stream's; the read's are no newer. One read at a time; a change heard meanwhile
  // reads again after it.
  let reading = false;
  let readAgain = false;
  // Declared here, set from the first read below: every read moves it (`applyChange`).
  let heardOrganiserSeq = null;
  // A read that failed is tried again by itself, 1 s later, then 2, 4… up to 30 s: later
  // messages carry the same `organiserChangeSeq`, so none of them would ask for it again.
  let retryDelay = 1000;
  let retryPending = false;
  // The notice says what changed since the buyer last dismissed it (or since the page was
  // read): the event and the order's total then. Two changes read one after the other (a
  // rename, then a new price 100 ms later) are both listed, not only the last read's.
  let noticeBase = null;
  const dismissNotice = () => {
    noticeBase = null;
    fill(changedSlot);
  };
  const applyChange = (next) => {
    const seq = organiserSeqOf(next);
    if (seq !== null && (heardOrganiserSeq === null || seq > heardOrganiserSeq)) heardOrganiserSeq = seq;
    const before = event;
    const totalBefore = order().total;
    const focused = typeList.contains(document.activeElement) ? document.activeElement.closest('[data-type-id]')?.dataset.typeId : null;
    setEvent(next, new Map(rows.map((r) => [r.type.id, r.value()])));
    render();
    if (focused) typeList.querySelector(`[data-type-id="${focused}"] input`)?.focus();
    const base = noticeBase ?? { event: before, total: totalBefore };
    const what = eventChanges(base.event, next);
    if (what.length === 0) {
      // Nothing differs from what the buyer saw before the notice (a change undone), or a read
      // that failed said so and this one found nothing new: no notice is left saying otherwise.
      if (noticeBase !== null || changedSlot.querySelector('[data-testid="event-changed-retry"]')) dismissNotice();
      return;
    }
    noticeBase = base;
    const { count, total } = order();
    const totalNote = count > 0 && total !== base.total ? ` Your order's total is now ${priceText(total, event.currency)}.` : '';
    const dismiss = h('button', { type: 'button', class: 'secondary small', testid: 'event-changed-dismiss', onclick: dismissNotice }, 'Dismiss');
    fill(changedSlot, h('p', { class: 'notice info', role: 'status', testid: 'event-changed' },
      `The organiser changed this event: ${what.join('; ')}.${totalNote} `, dismiss));
  };
  const readEvent = async () => {
    if (reading) {
      readAgain = true;
      return;
    }
    reading = true;
    try {
      do {
        readAgain = false;
        let next;
        try {
          next = await api('GET', `/events/${id}`);
        } catch (error) {
          if (!v.active) return;
          console.warn('reading the changed event', error);
          const retry = h('button', { type: 'button', class: 'secondary small', testid: 'event-changed-retry', onclick: () => readEvent() }, 'Show the changes');
          fill(changedSlot, h('p', { class: 'notice info', role: 'status', testid: 'event-changed' },
            'The organiser changed this event, and it could not be read again. ', retry));
          if (!retryPending) {
            retryPending = true;
            v.after(retryDelay, () => {
              retryPending = false;
              readEvent();
            });
            retryDelay = Math.min(retryDelay * 2, 30_000);
          }
          return;
        }
        if (!v.active) return;
        retryDelay = 1000;
        applyChange(next);
      } while (readAgain);
    } finally {
      reading = false;
    }
  };

  // Live statistics (`openStream` below).
  // The sequence of the latest organiser change the page knows of (`organiserChangeSeq`,
  // docs/api.md): the event as read carries it, and so does every stream message, whichever
  // change it names, since messages are coalesced and an organiser's change may be folded
  // into a later sale's message. A higher one in any message (the first snapshot and one
  // after a reconnection included) means the event changed since the page read it, and it
  // is read again. A check-in sends the last change again: same value.
  heardOrganiserSeq = organiserSeqOf(event);
  // A server that sends no `organiserChangeSeq` (an older instance behind the same address):
  // the change sequence heard up to, a message's `id` less its `checkedIn`; a newer
  // `event_updated`, or a reconnection's snapshot that moved it, reads the event again.
  let heardSeq = null;
  let snapshotNext = true;
  const setLive = (state, text) => {
    liveEl.className = `live ${state}`;
    liveEl.textContent = text;
  };
  // One text per `lastEvent.type` (ChangeKind in src/domain/stats.rs). A type this page does
  // not know still replaces the line, so that it never shows an older change after a newer one.
  const CHANGE_TEXT = {
    ticket_allocated: 'Tickets were held',
    ticket_purchased: 'Tickets were sold',
    ticket_cancelled: 'A hold was cancelled',
    ticket_expired: 'A hold expired',
    ticket_refunded: 'Tickets were refunded',
    event_updated: 'The organiser changed the event',
    waiting_list_changed: 'The waiting list changed',
  };
  const onStats = (message) => {
    let data;
    try {
      data = JSON.parse(message.data);
    } catch {
      return;
    }
    const s = data.statistics;
    if (!s) return;
    setLive('on', 'Live');
    const seq = Number(message.lastEventId) - (Number(s.checkedIn) || 0);
    const newer = Number.isSafeInteger(seq) && seq >= 0 && (heardSeq === null || seq > heardSeq);
    const snapshot = snapshotNext;
    snapshotNext = false;
    let changed = false;
    const organiserSeq = data.organiserChangeSeq;
    if (Number.isSafeInteger(organiserSeq)) {
      if (heardOrganiserSeq === null || organiserSeq > heardOrganiserSeq) {
        changed = heardOrganiserSeq !== null;
        heardOrganiserSeq = organiserSeq;
        // A snapshot names no change: the last-change line would keep an older one.
        if (changed && !data.lastEvent) lastChangeEl.textContent = 'The organiser changed the event.';
      }
    } else if (newer) {
      changed = snapshot ? heardSeq !== null : data.lastEvent?.type === 'event_updated';
    }
    if (newer) heardSeq = seq;
    // A type the page does not list was added, even if a later change's message named none.
    if (!reading && types[0].id !== null && (data.ticketTypes ?? []).some((t) => !rows.some((r) => r.type.id === t.id))) changed = true;
    if (changed) readEvent();
    const before = stats.available;
    stats.total = s.totalTickets;
    stats.available = s.remainingTickets;
    stats.held = s.allocatedTickets;
    stats.sold = s.confirmedTickets;
    // Each type's availability, beside the statistics (or inside them); types past the
    // stream's bound are not listed and keep what the page last knew.
    for (const t of data.ticketTypes ?? s.ticketTypes ?? []) {
      streamAvailable.set(t.id, t.available);
      rows.find((r) => r.type.id === t.id)?.setAvailable(t.available);
    }
    render();
    if (before !== stats.available) flash(availableEl);
    if (data.lastEvent) {
      const change = CHANGE_TEXT[data.lastEvent.type] ?? 'The event changed';
      // When the change was made: a check-in sends the last change again with a later
      // `timestamp` but its own `changedAt` (null only from an older instance).
      const iso = data.changedAt ?? data.timestamp;
      const at = new Date(iso);
      lastChangeEl.textContent = `${change} at ${Number.isNaN(at.getTime()) ? iso : timeFormat.format(at)}.`;
    }
  };
  // EventSource reconnects by itself after a dropped connection, but closes for good on an
  // answer other than 200 (a 429 while the address holds too many connections, a 503 while
  // the database is away): the page then opens a new one, 1 s later, then 2, 4… up to 30 s.
  // Each connection starts with a snapshot of the current state.
  let source = null;
  let reopenDelay = 1000;
  const openStream = () => {
    const stream = new EventSource(`/events/${id}/stream`);
    source = stream;
    stream.addEventListener('open', () => {
      reopenDelay = 1000;
      snapshotNext = true;
      setLive('on', 'Live');
    });
    stream.addEventListener('error', () => {
      setLive('connecting', 'Reconnecting…');
      if (stream.readyState !== EventSource.CLOSED) return;
      v.after(reopenDelay, () => {
        if (v.active) openStream();
      });
      reopenDelay = Math.min(reopenDelay * 2, 30_000);
    });
    stream.addEventListener('stats', onStats);
  };
  v.onLeave(() => source?.close());
  openStream();
}

/** The event's `organiserChangeSeq` as read, or null from a server that sends none. */
const organiserSeqOf = (event) => (Number.isSafeInteger(event?.organiserChangeSeq) ? event.organiserChangeSeq : null);

/** What an organiser changed between two reads of an event that a buyer sees, in words. */
function eventChanges(before, after) {
  const changes = [];
  const same = (x, y) => (x ?? null) === (y ?? null);
  const sameTime = (x, y) => (x && y ? Date.parse(x) === Date.parse(y) : same(x, y));
  if (before.name !== after.name) changes.push('its name');
  if (!sameTime(before.date, after.date)) changes.push(`its date, now ${dateText(after.date)}`);
  if (!same(before.maxTicketsPerFingerprint, after.maxTicketsPerFingerprint)) changes.push('the limit per buyer');
  if (!sameTime(before.salesStartAt, after.salesStartAt) || !sameTime(before.salesEndAt, after.salesEndAt)) changes.push('its sales dates');
  const old = new Map((before.ticketTypes ?? []).map((t) => [t.id, t]));
  for (const t of after.ticketTypes ?? []) {
    const was = old.get(t.id);
    old.delete(t.id);
    if (!was) {
      changes.push(`${t.name} added`);
      continue;
    }
    if (was.name !== t.name) changes.push(`${was.name} is now ${t.name}`);
    if (was.price !== t.price) changes.push(`${t.name} now ${priceText(t.price, after.currency)}`);
    if (was.active !== t.active) changes.push(`${t.name} ${t.active ? 'back on sale' : 'off sale'}`);
    if (!sameTime(was.salesStartAt, t.salesStartAt) || !sameTime(was.salesEndAt, t.salesEndAt)) changes.push(`${t.name}'s sales dates`);
    if (!same(was.maxPerOrder, t.maxPerOrder)) changes.push(`${t.name}'s limit per order`);
    if (!same(was.description, t.description)) changes.push(`${t.name}'s description`);
  }
  for (const t of old.values()) changes.push(`${t.name} no longer offered`);
  return changes;
}

/** A price or total as shown: "Free" for nothing. */
const priceText = (amount, currency) => (amount === 0 ? 'Free' : money(amount, currency));

/** What an order pays, once a server that prices tickets answered it; else null. */
const payable = (a) => (typeof a.total === 'number' && a.currency ? a.total : null);

/** The label of the pay button: the amount when it is known. */
function payLabel(a) {
  const total = payable(a);
  if (total === null) return `Pay for ${plural(a.quantity, 'ticket')}`;
  return total === 0 ? `Get ${plural(a.quantity, 'free ticket')}` : `Pay ${money(total, a.currency)}`;
}

/** The order's lines, its total, and its refunds, for the ticket page. */
function orderDetails(a) {
  if (!Array.isArray(a.lines)) return null;
  const line = (l) =>
    h('tr', { testid: 'order-line', 'data-type-id': l.ticketTypeId },
      h('th', { scope: 'row' }, `${l.quantity} × ${l.ticketTypeName}`,
        l.refundedQuantity > 0 ? h('span', { class: 'muted small', testid: 'line-refunded' }, ` · ${l.refundedQuantity} refunded`) : null),
      h('td', { class: 'muted small' }, l.unitPrice === 0 ? 'Free' : `${money(l.unitPrice, a.currency)} each`),
      h('td', { class: 'amount', testid: 'line-amount' }, priceText(l.amount, a.currency)));
  const refunded = a.refundedAmount > 0
    ? h('tr', { class: 'refunded' }, h('th', { scope: 'row', colspan: 2 }, 'Refunded'), h('td', { class: 'amount', testid: 'ticket-refunded' }, `−${money(a.refundedAmount, a.currency)}`))
    : null;
  return [
    h('table', { class: 'order-lines', testid: 'order-lines' },
      h('caption', { class: 'visually-hidden' }, 'Tickets in this order'),
      h('tbody', null, a.lines.map(line)),
      h('tfoot', null,
        h('tr', null, h('th', { scope: 'row', colspan: 2 }, 'Total'), h('td', { class: 'amount', testid: 'ticket-total' }, priceText(a.total, a.currency))),
        refunded)),
    refundList(a),
  ];
}

/** Each refund of an order: when, how much, of which tickets, and why. */
function refundList(a) {
  if (!Array.isArray(a.refunds) || a.refunds.length === 0) return null;
  const names = new Map((a.lines ?? []).map((l) => [l.ticketTypeId, l.ticketTypeName]));
  const what = (r) => (r.lines ?? []).map((l) => `${l.quantity} × ${names.get(l.ticketTypeId) ?? 'ticket'}`).join(', ');
  return h('section', { class: 'refunds', 'aria-label': 'Refunds' },
    h('h2', null, 'Refunds'),
    h('ul', { testid: 'refunds' }, a.refunds.map((r) =>
      h('li', { testid: 'refund', 'data-refund-id': r.id },
        h('strong', null, money(r.amount, a.currency)), what(r) ? ` for ${what(r)}` : '', ' · ', when(r.createdAt),
        r.reason ? h('span', { class: 'muted' }, ` · ${r.reason}`) : null))));
}

/** One line of text for an order in a list: "2 × Standard, 1 × Student · €33.00". */
function orderLine(a) {
  if (!Array.isArray(a.lines)) return null;
  return h('p', { class: 'small', testid: 'ticket-lines' },
    a.lines.map((l) => `${l.quantity} × ${l.ticketTypeName}`).join(', '), ' · ',
    h('strong', { testid: 'ticket-total' }, priceText(a.total, a.currency)),
    a.refundedAmount > 0 ? h('span', { class: 'muted', testid: 'ticket-refunded' }, ` · ${money(a.refundedAmount, a.currency)} refunded`) : null);
}

// --- Admissions: one per paid ticket, each with the QR code shown at the door -----------

const ADMISSION_LABELS = { valid: 'Valid', checked_in: 'Checked in', revoked: 'Revoked' };

/**
 * An admission's QR code as a data: URL. The route checks the buyer's fingerprint header,
 * which an <img> cannot send, and the page's CSP allows images from data: but not blob: URLs.
 */
async function qrDataUrl(ticketId, admissionId) {
  const response = await fetch(`/tickets/${ticketId}/admissions/${admissionId}/qr.svg`, {
    headers: { 'X-Device-Fingerprint': await fingerprint },
    cache: 'no-store',
  });
  if (!response.ok) throw new ApiError(response.status, null);
  const svg = new Blob([await response.arrayBuffer()], { type: 'image/svg+xml' });
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(svg);
  });
}

/** A paid order's admissions: the QR code of each valid one, and what became of the others. */
function admissionList(a, size) {
  if (!Array.isArray(a.admissions) || a.admissions.length === 0) return null;
  const item = (ad) => {
    const status = ADMISSION_LABELS[ad.status] ?? ad.status;
    const state = ad.status === 'checked_in' && ad.checkedInAt
      ? [status, ' ', when(ad.checkedInAt), ad.gate ? ` at ${ad.gate}` : '']
      : status;
    let qr = null;
    if (ad.status !== 'revoked') {
      qr = h('img', { class: `qr ${size}`, alt: `QR code of a ${ad.ticketTypeName} ticket`, testid: 'admission-qr' });
      qrDataUrl(a.id, ad.id).then(
        (url) => {
          qr.src = url;
        },
        () => {
          qr.replaceWith(h('p', { class: 'muted small', testid: 'admission-qr-error' }, 'The QR code could not be loaded; reload to try again.'));
        },
      );
    }
    return h('li', { class: `admission status-${ad.status}`, testid: 'admission', 'data-admission-id': ad.id, 'data-status': ad.status },
      qr,
      h('p', { class: 'small' }, h('strong', null, ad.ticketTypeName), ' · ', h('span', { testid: 'admission-status' }, state)));
  };
  return h('ul', { class: `admissions ${size}`, testid: 'admissions', 'aria-label': 'Tickets to show at the door' }, a.admissions.map(item));
}

// --- #/tickets/ID : one hold ------------------------------------------------------------

// The allocation just made and its event, so the hold page shows without another request.
const recent = new Map();

function remember(allocation, event) {
  recent.set(allocation.id, { allocation, event });
}

async function showTicket(v, _query, id) {
  let { allocation, event } = recent.get(id) ?? {};
  recent.delete(id);
  if (!allocation) {
    mount('Your tickets', h('p', { class: 'muted' }, 'Loading…'));
    try {
      allocation = await api('GET', `/tickets/${id}`);
    } catch (error) {
      if (!v.active) return;
      mount('Your tickets', h('p', null, h('a', { href: '#/tickets' }, '← My tickets')), notice('error', explain(error), 'page-error'));
      return;
    }
  }
  if (!event) event = await api('GET', `/events/${allocation.eventId}`).catch(() => null);
  if (!v.active) return;

  const body = h('div', { class: 'ticket-view' });
  mount('Your tickets', h('p', { class: 'crumbs' }, h('a', { href: `#/events/${allocation.eventId}`, testid: 'back-to-event' }, `← ${event ? event.name : 'Event'}`)), body);

  const summary = (a) =>
    h('p', { class: 'summary', testid: 'ticket-summary' }, h('strong', null, plural(a.quantity, 'ticket')), event ? [' for ', h('strong', null, event.name)] : null, event ? [' · ', when(event.date)] : null);

  let leaveState = () => {};
  const render = (a, message) => {
    leaveState();
    leaveState = () => {};
    allocation = a;
    const status = effectiveStatus(a);
    body.dataset.status = status;
    if (status === 'reserved') leaveState = renderHold(a, message);
    else if (status === 'payment_pending') {
      fill(body, h('section', { class: 'card' }, h('h1', null, 'Payment in progress…'), summary(a), orderDetails(a), h('p', { class: 'muted' }, 'This takes a moment; the page updates by itself.')));
      const timer = setTimeout(refresh, 1500);
      leaveState = () => clearTimeout(timer);
    } else if (status === 'purchased' || status === 'refund_pending') renderConfirmation(a);
    else if (status === 'refunded') renderRefunded(a);
    else renderClosed(a, status, message);
  };

  const refresh = async () => {
    try {
      const fresh = await api('GET', `/tickets/${id}`);
      if (v.active) render(fresh);
    } catch (error) {
      if (v.active) render(allocation, notice('error', explain(error), 'pay-error'));
    }
  };
  v.onLeave(() => leaveState());

  const renderHold = (a, message) => {
    const expires = Date.parse(a.expiresAt);
    const length = Math.max(1000, expires - Date.parse(a.createdAt));
    const countdown = h('span', { class: 'countdown', testid: 'hold-countdown', role: 'timer', 'aria-live': 'off' });
    const bar = h('progress', { class: 'hold-progress', max: length, 'aria-hidden': 'true' });
    const cards = [
      ['tok_visa', 'card-visa', 'Test Visa •••• 4242', 'The payment goes through.'],
      ['tok_chargeDeclined', 'card-declined', 'Test card •••• 0002', 'The bank declines it.'],
    ];
    const radios = cards.map(([token, testid, label, hint], i) =>
      h('label', { class: 'card-choice' },
        h('input', { type: 'radio', name: 'card', value: token, checked: i === 0, testid }),
        h('span', null, h('strong', null, label), h('span', { class: 'muted' }, hint))),
    );
    const pay = h('button', { type: 'submit', testid: 'pay-submit' }, payLabel(a));
    const cancel = h('button', { type: 'button', class: 'secondary danger', testid: 'cancel-hold' }, 'Cancel hold');
    const status = h('div', { class: 'form-status' }, message);
    const form = h('form', { class: 'pay-form', testid: 'pay-form' },
      // A free order is confirmed without a charge: no card to choose.
      h('fieldset', { hidden: payable(a) === 0 }, h('legend', null, 'Pay with a test card'), radios),
      status,
      h('div', { class: 'actions' }, pay, cancel));

    fill(body, h('section', { class: 'card hold', testid: 'hold' },
      h('h1', null, 'Your tickets are held'),
      summary(a),
      orderDetails(a),
      h('div', { class: 'countdown-row' }, h('span', null, 'Time left to pay'), countdown),
      bar,
      form));

    const busy = (on, label) => {
      pay.disabled = on;
      cancel.disabled = on;
      for (const r of form.querySelectorAll('input')) r.disabled = on;
      if (label) pay.textContent = label;
    };
    const tick = () => {
      const left = expires - serverNow();
      countdown.textContent = clock(left);
      bar.value = Math.max(0, left);
      countdown.classList.toggle('urgent', left < 60_000);
      if (left <= 0) {
        clearInterval(timer);
        render({ ...a, status: 'expired' });
        // The sweeper marks the hold within a moment; show what the server says then.
        setTimeout(() => v.active && body.dataset.status === 'expired' && refresh(), 3000);
      }
    };
    const timer = setInterval(tick, 250);
    tick();

    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      fill(status);
      const token = form.querySelector('input[name="card"]:checked')?.value ?? 'tok_visa';
      busy(true, 'Paying…');
      try {
        const paid = await api('POST', `/tickets/${a.id}/payment`, { paymentToken: token });
        if (v.active) render(paid);
      } catch (error) {
        if (!v.active) return;
        if (error.code === 'PAYMENT_DECLINED') {
          busy(false, payLabel(a));
          fill(status, notice('error', explain(error), 'pay-error'));
        } else if (error.code === 'RESERVATION_EXPIRED') {
          render({ ...a, status: 'expired' }, notice('error', explain(error), 'pay-error'));
        } else if (error.code === 'INVALID_STATUS') {
          refresh();
        } else {
          busy(false, payLabel(a));
          fill(status, notice('error', explain(error), 'pay-error'));
        }
      }
    });

    cancel.addEventListener('click', async () => {
      fill(status);
      busy(true);
      cancel.textContent = 'Cancelling…';
      try {
        const cancelled = await api('DELETE', `/tickets/${a.id}/payment`);
        if (v.active) render(cancelled);
      } catch (error) {
        if (!v.active) return;
        if (error.code === 'RESERVATION_EXPIRED' || error.code === 'INVALID_STATUS') {
          refresh();
          return;
        }
        busy(false);
        cancel.textContent = 'Cancel hold';
        fill(status, notice('error', explain(error), 'pay-error'));
      }
    });

    return () => clearInterval(timer);
  };

  const renderConfirmation = (a) => {
    fill(body, h('section', { class: 'card confirmation', testid: 'confirmation' },
      h('p', { class: 'eyebrow' }, 'Payment received'),
      h('h1', null, "You're going!"),
      summary(a),
      orderDetails(a),
      a.status === 'refund_pending' ? notice('info', 'A refund is being made; this page shows it once it is done.', 'refund-pending') : null,
      admissionList(a, 'large'),
      h('p', { class: 'muted' }, 'Your confirmation code:'),
      h('p', { class: 'code', testid: 'confirmation-code' }, a.confirmationCode ?? '—'),
      a.purchasedAt ? h('p', { class: 'muted small' }, 'Paid ', when(a.purchasedAt)) : null,
      h('div', { class: 'actions' },
        h('a', { class: 'button', href: '#/tickets', testid: 'to-my-tickets' }, 'My tickets'),
        h('a', { class: 'button secondary', href: `#/events/${a.eventId}` }, 'Back to the event'))));
  };

  const renderClosed = (a, status, message) => {
    const text = status === 'cancelled'
      ? 'You cancelled this hold; its tickets went back on sale.'
      : 'This hold expired before it was paid; its tickets went back on sale.';
    fill(body, h('section', { class: 'card', testid: `hold-${status}` },
      h('h1', null, status === 'cancelled' ? 'Hold cancelled' : 'Hold expired'),
      summary(a),
      orderDetails(a),
      message,
      h('p', null, text),
      h('div', { class: 'actions' }, h('a', { class: 'button', href: `#/events/${a.eventId}` }, 'Buy again'), h('a', { class: 'button secondary', href: '#/tickets' }, 'My tickets'))));
  };

  const renderRefunded = (a) => {
    fill(body, h('section', { class: 'card', testid: 'hold-refunded' },
      h('h1', null, 'Tickets refunded'),
      summary(a),
      orderDetails(a),
      h('p', null, 'Every ticket of this order was refunded; they went back on sale.'),
      h('div', { class: 'actions' }, h('a', { class: 'button', href: `#/events/${a.eventId}` }, 'Back to the event'), h('a', { class: 'button secondary', href: '#/tickets' }, 'My tickets'))));
  };

  render(allocation);
}

// --- #/tickets : the buyer's tickets ----------------------------------------------------

async function showMyTickets(v, query) {
  const page = pageNumber(query);
  const intro = h('p', { class: 'muted' }, 'Holds and purchases made from this browser.');
  mount('My tickets', h('h1', null, 'My tickets'), intro, h('p', { class: 'muted' }, 'Loading…'));
  const [result, waiting] = await Promise.all([
    api('GET', `/tickets?page=${page}&limit=${PAGE_SIZE}`),
    // The page still shows the tickets when the waiting list cannot be read.
    api('GET', `/waiting-list?limit=${WAITING_PAGE_SIZE}`).catch(() => null),
  ]);
  // Each event is read once per visit, for the rows of both lists and every refresh.
  const events = new Map();
  const loadEvents = (items) =>
    Promise.all([...new Set(items.map((x) => x.eventId))].filter((eventId) => !events.has(eventId)).map(async (eventId) => {
      events.set(eventId, await api('GET', `/events/${eventId}`).catch(() => null));
    }));
  await loadEvents([...result.data, ...(waiting?.data ?? [])]);
  if (!v.active) return;

  const list = h('ul', { class: 'cards', testid: 'tickets-list' });
  const empty = h('div', { class: 'empty', testid: 'tickets-empty' }, 'No tickets yet from this browser. ', h('a', { href: '#/' }, 'Find an event'));
  const pagerSlot = h('div');
  const countdowns = [];
  const showTickets = (tickets) => {
    countdowns.length = 0;
    fill(list, tickets.data.map((allocation) => ticketRow(v, allocation, events.get(allocation.eventId), countdowns)));
    list.hidden = tickets.data.length === 0;
    empty.hidden = tickets.data.length > 0;
    fill(pagerSlot, pager(tickets.meta, (p) => `#/tickets?page=${p}`, 'booking'));
  };
  showTickets(result);
  v.every(1000, () => countdowns.forEach((fn) => fn()));

  // An offer made, paid, declined or lapsed adds or changes a hold: the list is read again.
  let reloading = null;
  const reloadTickets = () => {
    reloading ??= api('GET', `/tickets?page=${page}&limit=${PAGE_SIZE}`)
      .then(async (fresh) => {
        await loadEvents(fresh.data);
        if (v.active) showTickets(fresh);
      })
      .catch(() => {})
      .finally(() => {
        reloading = null;
      });
  };

  mount(
    'My tickets',
    h('h1', null, 'My tickets'),
    intro,
    waitingSection(v, waiting, events, loadEvents, reloadTickets),
    list,
    empty,
    pagerSlot,
  );
}

const WAITING_PAGE_SIZE = 20;

const WAITING_LABELS = {
  waiting: 'Waiting',
  offered: 'Offered',
  accepted: 'Accepted',
  declined: 'Declined',
  expired: 'Expired',
  left: 'Left',
};

/** An offer whose time is up counts as expired even before the server marks it. */
function entryStatus(entry) {
  if (entry.status === 'offered' && entry.offer && Date.parse(entry.offer.expiresAt) <= serverNow()) return 'expired';
  return entry.status;
}

/**
 * "My tickets"' waiting list: the buyer's newest entries, read again every 2 seconds while
 * one of them waits or is offered, so that an offer shows within seconds with its countdown
 * and its Pay button. `first` is the first page (null when it could not be read);
 * `onHoldsChanged` runs when an entry's status changes, as the buyer's holds then change too.
 */
function waitingSection(v, first, events, loadEvents, onHoldsChanged) {
  const list = h('ul', { class: 'cards', testid: 'waiting-list' });
  const more = h('p', { class: 'muted small', testid: 'waiting-more' });
  const problem = h('div');
  const section = h(
    'section',
    { class: 'waiting-section', 'aria-labelledby': 'waiting-heading', testid: 'waiting-section', hidden: true },
    h('h2', { id: 'waiting-heading' }, 'Waiting list'),
    h('p', { class: 'muted' }, 'Sold-out tickets you wait for. When tickets come back they are held for you in turn: pay before the countdown ends, or they go to the next in line.'),
    problem,
    list,
    more,
  );

  const rows = new Map(); // entry id → { el, key, update }
  const countdowns = new Set();
  // What the server says of an entry; an unchanged entry keeps its row (and its countdown).
  const keyOf = (e) => JSON.stringify([e.status, e.position, e.offer, e.quantity]);
  let live = false;

  const show = (page) => {
    const ids = new Set(page.data.map((e) => e.id));
    for (const [entryId, row] of rows) {
      if (!ids.has(entryId)) {
        row.el.remove();
        rows.delete(entryId);
      }
    }
    for (const entry of page.data) {
      const row = rows.get(entry.id);
      if (!row) rows.set(entry.id, waitingRow(v, entry, events.get(entry.eventId), countdowns, keyOf, onHoldsChanged));
      else if (row.key !== keyOf(entry)) row.update(entry);
    }
    // Newest first, as the server lists them; nodes already in place are not moved.
    page.data.forEach((entry, i) => {
      const el = rows.get(entry.id).el;
      if (list.children[i] !== el) list.insertBefore(el, list.children[i] ?? null);
    });
    section.hidden = page.data.length === 0;
    more.textContent = page.meta.total > page.data.length ? `The ${page.data.length} newest of ${plural(page.meta.total, 'entry', 'entries')}.` : '';
    live = page.data.some((e) => e.status === 'waiting' || e.status === 'offered');
  };

  let polling = false;
  const poll = async () => {
    if (polling || !v.active || (first && !live)) return;
    polling = true;
    try {
      const page = await api('GET', `/waiting-list?limit=${WAITING_PAGE_SIZE}`);
      await loadEvents(page.data);
      if (!v.active) return;
      first = page;
      fill(problem);
      show(page);
    } catch (error) {
      if (v.active) fill(problem, notice('error', `The waiting list could not be refreshed: ${explain(error)}`, 'waiting-error'));
    } finally {
      polling = false;
    }
  };
  if (first) show(first);
  v.every(2000, poll);
  v.every(500, () => countdowns.forEach((fn) => fn()));
  return section;
}

/** One waiting-list entry: its event, type and quantity, its place in line or its offer. */
function waitingRow(v, entry, event, countdowns, keyOf, onHoldsChanged) {
  const el = h('li', { class: 'card ticket-row waiting-row', testid: 'waiting-row', 'data-entry-id': entry.id });
  const row = { el, key: null, status: null, update: null };
  let tick = null;

  const render = (e, message) => {
    if (tick) countdowns.delete(tick);
    tick = null;
    const status = entryStatus(e);
    Object.assign(row, { key: keyOf(e), status: e.status });
    el.dataset.status = status;
    const type = event?.ticketTypes?.find((t) => t.id === e.ticketTypeId);
    const detail = h('p', { class: 'muted small', testid: 'waiting-detail' });
    const actions = h('div', { class: 'actions' });

    // Leaving the line or declining the offer: the same DELETE.
    const giveUp = (label, testid) => {
      const button = h('button', { type: 'button', class: 'secondary danger small', testid }, label);
      button.addEventListener('click', async () => {
        button.disabled = true;
        try {
          const fresh = await api('DELETE', `/waiting-list/${e.id}`);
          if (v.active) update(fresh);
        } catch (error) {
          if (!v.active) return;
          const fresh = await api('GET', `/waiting-list/${e.id}`).catch(() => e);
          const text = error.code === 'INVALID_STATUS'
            ? 'This entry changed meanwhile (paid, lapsed or already left); it now reads as shown.'
            : explain(error);
          if (v.active) update(fresh, notice('error', text, 'waiting-row-error'));
        }
      });
      return button;
    };

    if (status === 'waiting') {
      fill(detail, 'Number ', h('strong', { testid: 'waiting-position' }, String(e.position ?? '—')), ' in line');
      append(actions, [giveUp('Leave', 'waiting-leave')]);
    } else if (status === 'offered') {
      const left = h('strong', { class: 'countdown-inline', testid: 'waiting-countdown', role: 'timer', 'aria-live': 'off' });
      tick = () => {
        left.textContent = clock(Date.parse(e.offer.expiresAt) - serverNow());
        if (entryStatus(e) !== 'offered') render(e);
      };
      countdowns.add(tick);
      fill(detail, 'Tickets are held for you: pay within ', left);
      append(actions, [
        h('a', { class: 'button small', href: `#/tickets/${e.offer.allocationId}`, testid: 'waiting-pay' }, 'Pay'),
        giveUp('Decline', 'waiting-decline'),
      ]);
    } else if (status === 'accepted') {
      fill(detail, 'Paid: ', h('a', { href: `#/tickets/${e.offer?.allocationId}`, testid: 'waiting-ticket' }, 'see your tickets'));
    } else if (status === 'declined') {
      fill(detail, 'You gave the offer back; its tickets went to the next in line.');
    } else if (status === 'expired') {
      fill(detail, e.offer
        ? 'The offer lapsed unpaid; its tickets went to the next in line.'
        : 'Passed over: you could no longer take these tickets (the limit per buyer).');
    } else {
      fill(detail, 'You left the line.');
    }
    if (tick) tick();

    fill(
      el,
      h('div', { class: 'ticket-main' },
        h('h2', null, h('a', { href: `#/events/${e.eventId}`, class: 'card-link', testid: 'waiting-event' }, event ? event.name : 'Event')),
        h('p', { class: 'muted small', testid: 'waiting-what' },
          plural(e.quantity, 'ticket'), type?.name ? ` · ${type.name}` : null, event ? [' · ', when(event.date)] : null),
        detail),
      h('div', { class: 'ticket-side' },
        h('span', { class: `badge status-${status}`, testid: 'waiting-status', 'data-status': status }, WAITING_LABELS[status] ?? status),
        actions),
      message,
    );
  };

  // A change the buyer made here changes the holds as much as one seen by polling.
  const update = (e, message) => {
    const statusChanged = row.status !== e.status;
    render(e, message);
    if (statusChanged) onHoldsChanged();
  };
  row.update = update;
  render(entry);
  return row;
}

function ticketRow(v, allocation, event, countdowns) {
  const row = h('li', { class: 'card ticket-row', testid: 'ticket-row', 'data-ticket-id': allocation.id });
  const render = (a, message) => {
    const status = effectiveStatus(a);
    row.dataset.status = status;
    const detail = h('p', { class: 'muted small' });
    const actions = h('div', { class: 'actions' });
    if (status === 'reserved') {
      const left = h('span', { testid: 'ticket-countdown' });
      const update = () => {
        left.textContent = clock(Date.parse(a.expiresAt) - serverNow());
        if (effectiveStatus(a) !== 'reserved') {
          countdowns.splice(countdowns.indexOf(update), 1);
          render(a);
        }
      };
      countdowns.push(update);
      update();
      fill(detail, 'Held for ', left, ' more');
      const cancel = h('button', { type: 'button', class: 'secondary danger small', testid: 'ticket-cancel' }, 'Cancel');
      cancel.addEventListener('click', async () => {
        cancel.disabled = true;
        try {
          const cancelled = await api('DELETE', `/tickets/${a.id}/payment`);
          if (v.active) {
            countdowns.splice(countdowns.indexOf(update), 1);
            render(cancelled);
          }
        } catch (error) {
          if (!v.active) return;
          countdowns.splice(countdowns.indexOf(update), 1);
          const fresh = await api('GET', `/tickets/${a.id}`).catch(() => a);
          if (v.active) render(fresh, notice('error', explain(error), 'ticket-error'));
        }
      });
      append(actions, [h('a', { class: 'button small', href: `#/tickets/${a.id}`, testid: 'ticket-pay' }, 'Pay'), cancel]);
    } else if (status === 'purchased' || status === 'refund_pending') {
      fill(detail, 'Code ', h('code', { class: 'inline-code', testid: 'ticket-code' }, a.confirmationCode ?? '—'));
      // The list may leave the admissions out; the order's own view has them.
      const slot = h('div');
      append(detail, [slot]);
      const admissions = Array.isArray(a.admissions) ? Promise.resolve(a) : api('GET', `/tickets/${a.id}`);
      admissions.then((full) => v.active && fill(slot, admissionList(full, 'small')), () => {});
    } else if (status === 'refunded') {
      fill(detail, 'Refunded');
    } else if (status === 'payment_pending') {
      fill(detail, 'Payment in progress');
    } else {
      fill(detail, status === 'cancelled' ? 'Cancelled ' : 'Expired ', when(a.cancelledAt ?? a.expiredAt ?? a.updatedAt));
    }
    fill(
      row,
      h('div', { class: 'ticket-main' },
        h('h2', null, h('a', { href: `#/tickets/${a.id}`, class: 'card-link' }, event ? event.name : 'Event')),
        h('p', { class: 'muted small' }, plural(a.quantity, 'ticket'), event ? [' · ', when(event.date)] : null),
        orderLine(a),
        detail),
      h('div', { class: 'ticket-side' }, statusBadge(status, 'ticket-status'), actions),
      message,
    );
  };
  render(allocation);
  return row;
}

// ---------------------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------------------

// The first view waits for the currency table, so that no amount is shown in other digits.
loadCurrencies().then(() => {
  window.addEventListener('hashchange', route);
  route();
});
fingerprint.then(
  (fp) => {
    const device = document.getElementById('device');
    if (device) {
      device.textContent = fp.slice(0, 8);
      device.title = 'A hash of a random id kept in this browser, its language, time zone and screen size.';
    }
  },
  (error) => console.error('fingerprint', error),
);
