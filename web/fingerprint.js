// The browser's device fingerprint, sent as `X-Device-Fingerprint` on every API call.
//
// fingerprint = hex(SHA-256("boxoffice-device-v1\n" + deviceId + "\n" + language + "\n" +
//                           timeZone + "\n" + screen size in device pixels))
//
// deviceId is 128 random bits kept in localStorage, so it survives reloads and restarts of
// this browser profile. The other signals are stable per device and make a copied device id
// alone unlike the original. See docs/fingerprinting.md for what this can and cannot tell.

const STORAGE_KEY = 'boxoffice.deviceId';
const VERSION = 'boxoffice-device-v1';

// Used only when localStorage cannot be used (blocked storage): one id per page load.
let volatileId = null;

function randomId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return toHex(bytes);
}

/** The random device id, created on first use and kept in localStorage. */
export function deviceId() {
  try {
    const stored = localStorage.getItem(STORAGE_KEY);
    if (stored && /^[0-9a-f]{32}$/.test(stored)) return stored;
    const fresh = randomId();
    localStorage.setItem(STORAGE_KEY, fresh);
    return fresh;
  } catch {
    volatileId ??= randomId();
    return volatileId;
  }
}

/** Whether the device id is kept across page loads. */
export function deviceIdIsPersistent() {
  try {
    return localStorage.getItem(STORAGE_KEY) === deviceId();
  } catch {
    return false;
  }
}

function timeZone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || '';
  } catch {
    return '';
  }
}

// Device pixels, larger side first: the same at any page zoom and in either orientation.
function screenSize() {
  const ratio = window.devicePixelRatio || 1;
  const a = Math.round((screen.width || 0) * ratio);
  const b = Math.round((screen.height || 0) * ratio);
  return `${Math.max(a, b)}x${Math.min(a, b)}`;
}

/** The signals that are hashed, in order. */
export function signals() {
  return [VERSION, deviceId(), navigator.language || '', timeZone(), screenSize()];
}

/** The fingerprint: 64 lower-case hex characters. */
export async function deviceFingerprint() {
  return sha256Hex(new TextEncoder().encode(signals().join('\n')));
}

/** SHA-256 of bytes as hex: SubtleCrypto where the page is a secure context (https or
 *  localhost), else the small implementation below (plain http on another host). */
export async function sha256Hex(bytes) {
  if (globalThis.crypto?.subtle) {
    return toHex(new Uint8Array(await crypto.subtle.digest('SHA-256', bytes)));
  }
  return sha256Fallback(bytes);
}

function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

const rotr = (x, n) => (x >>> n) | (x << (32 - n));

/** SHA-256 (FIPS 180-4) in plain JavaScript, for pages without SubtleCrypto. */
export function sha256Fallback(bytes) {
  const length = bytes.length;
  const padded = new Uint8Array((((length + 8) >> 6) + 1) << 6);
  padded.set(bytes);
  padded[length] = 0x80;
  const view = new DataView(padded.buffer);
  view.setUint32(padded.length - 8, Math.floor(length / 0x20000000));
  view.setUint32(padded.length - 4, (length << 3) >>> 0);

  const hash = new Uint32Array([
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
  ]);
  const w = new Uint32Array(64);
  for (let block = 0; block < padded.length; block += 64) {
    for (let i = 0; i < 16; i++) w[i] = view.getUint32(block + i * 4);
    for (let i = 16; i < 64; i++) {
      const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
      const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    let [a, b, c, d, e, f, g, h] = hash;
    for (let i = 0; i < 64; i++) {
      const t1 = (h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) | 0;
      const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) | 0;
      h = g;
      g = f;
      f = e;
      e = (d + t1) | 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + t2) | 0;
    }
    hash[0] += a;
    hash[1] += b;
    hash[2] += c;
    hash[3] += d;
    hash[4] += e;
    hash[5] += f;
    hash[6] += g;
    hash[7] += h;
  }
  return Array.from(hash, (x) => x.toString(16).padStart(8, '0')).join('');
}
