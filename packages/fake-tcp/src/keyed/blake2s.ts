/**
 * BLAKE2s (RFC 7693), written from the RFC for keyed mode's handshake tokens: a keyed hash
 * with a 256-bit key whose arithmetic is all 32-bit, so it runs allocation-free on plain
 * JavaScript integers. It is used only on handshakes (a few per connection), never per data
 * segment.
 *
 * Two entry points: `blake2s` (any message, any key up to 32 bytes; allocates its result, for
 * key derivation and tests) and `macBlock` (the hot one: a message of at most 64 bytes under
 * a key whose first block was absorbed once, see `keyState`).
 */

const IV = Int32Array.from([
  0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
]);

/** The message word schedule of each of the 10 rounds (RFC 7693, section 2.7). */
const SIGMA = Uint8Array.from([
  0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11,
  7, 5, 3, 11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4, 7, 9, 3, 1, 13, 12, 11, 14, 2, 6,
  5, 10, 4, 0, 15, 8, 9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13, 2, 12, 6, 10, 0, 11, 8,
  3, 4, 13, 7, 5, 15, 14, 1, 9, 12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11, 13, 11, 7, 14,
  12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10, 6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5, 10,
  2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0,
]);

/** Block size in bytes. */
export const BLAKE2S_BLOCK = 64;
/** Largest digest and key, in bytes. */
export const BLAKE2S_MAX = 32;

// Working state, shared: one compression at a time (single-threaded callers finish each).
const v = new Int32Array(16);
const m = new Int32Array(16);

function g(a: number, b: number, c: number, d: number, x: number, y: number): void {
  let va = v[a];
  let vb = v[b];
  let vc = v[c];
  let vd = v[d];
  va = (va + vb + x) | 0;
  vd ^= va;
  vd = (vd >>> 16) | (vd << 16);
  vc = (vc + vd) | 0;
  vb ^= vc;
  vb = (vb >>> 12) | (vb << 20);
  va = (va + vb + y) | 0;
  vd ^= va;
  vd = (vd >>> 8) | (vd << 24);
  vc = (vc + vd) | 0;
  vb ^= vc;
  vb = (vb >>> 7) | (vb << 25);
  v[a] = va;
  v[b] = vb;
  v[c] = vc;
  v[d] = vd;
}

/**
 * The compression function F: absorbs the 64-byte block `block[at, at + 64)` into `h`,
 * `t` bytes having been hashed so far including this block, `last` on the final block.
 */
function compress(h: Int32Array, block: Uint8Array, at: number, t: number, last: boolean): void {
  for (let i = 0; i < 16; i++) {
    const o = at + 4 * i;
    m[i] = block[o] | (block[o + 1] << 8) | (block[o + 2] << 16) | (block[o + 3] << 24);
  }
  for (let i = 0; i < 8; i++) {
    v[i] = h[i];
    v[i + 8] = IV[i];
  }
  v[12] ^= t | 0;
  v[13] ^= Math.floor(t / 2 ** 32) | 0;
  if (last) v[14] = ~v[14];
  for (let r = 0; r < 10; r++) {
    const s = r * 16;
    g(0, 4, 8, 12, m[SIGMA[s]], m[SIGMA[s + 1]]);
    g(1, 5, 9, 13, m[SIGMA[s + 2]], m[SIGMA[s + 3]]);
    g(2, 6, 10, 14, m[SIGMA[s + 4]], m[SIGMA[s + 5]]);
    g(3, 7, 11, 15, m[SIGMA[s + 6]], m[SIGMA[s + 7]]);
    g(0, 5, 10, 15, m[SIGMA[s + 8]], m[SIGMA[s + 9]]);
    g(1, 6, 11, 12, m[SIGMA[s + 10]], m[SIGMA[s + 11]]);
    g(2, 7, 8, 13, m[SIGMA[s + 12]], m[SIGMA[s + 13]]);
    g(3, 4, 9, 14, m[SIGMA[s + 14]], m[SIGMA[s + 15]]);
  }
  for (let i = 0; i < 8; i++) h[i] ^= v[i] ^ v[i + 8];
}

/** The state before any block: IV with the parameter block (digest and key lengths) mixed in. */
function initState(h: Int32Array, outLength: number, keyLength: number): void {
  h.set(IV);
  h[0] ^= 0x01010000 ^ (keyLength << 8) ^ outLength;
}

function checkLengths(outLength: number, keyLength: number): void {
  if (!Number.isInteger(outLength) || outLength < 1 || outLength > BLAKE2S_MAX)
    throw new RangeError(`BLAKE2s digest length must be 1..32 bytes, got ${outLength}`);
  if (keyLength > BLAKE2S_MAX)
    throw new RangeError(`BLAKE2s key must be at most 32 bytes, got ${keyLength}`);
}

/** BLAKE2s of `message` under `key` (may be empty), `outLength` bytes (default 32). Allocates. */
export function blake2s(
  message: Uint8Array,
  key: Uint8Array = new Uint8Array(0),
  outLength = BLAKE2S_MAX,
): Uint8Array {
  checkLengths(outLength, key.length);
  const h = new Int32Array(8);
  initState(h, outLength, key.length);
  const block = new Uint8Array(BLAKE2S_BLOCK);
  let t = 0;
  const input = key.length > 0 ? [padded(key), message] : [message];
  // Every block but the last goes in as soon as more input follows it.
  const total = (key.length > 0 ? BLAKE2S_BLOCK : 0) + message.length;
  let pending = 0;
  for (const part of input) {
    for (let i = 0; i < part.length; i++) {
      if (pending === BLAKE2S_BLOCK) {
        t += BLAKE2S_BLOCK;
        compress(h, block, 0, t, false);
        pending = 0;
      }
      block[pending++] = part[i];
    }
  }
  block.fill(0, pending);
  compress(h, block, 0, total, true);
  return digestBytes(h, outLength);
}

function padded(key: Uint8Array): Uint8Array {
  const b = new Uint8Array(BLAKE2S_BLOCK);
  b.set(key);
  return b;
}

function digestBytes(h: Int32Array, outLength: number): Uint8Array {
  const out = new Uint8Array(outLength);
  for (let i = 0; i < outLength; i++) out[i] = h[i >>> 2] >>> (8 * (i & 3));
  return out;
}

/**
 * The state of BLAKE2s-256 keyed with `key` (1-32 bytes) once the key block is absorbed:
 * what `macBlock` starts from, so that a MAC of a short message costs one compression.
 */
export function keyState(key: Uint8Array): Int32Array {
  if (key.length < 1) throw new RangeError("BLAKE2s MAC key must not be empty");
  checkLengths(BLAKE2S_MAX, key.length);
  const h = new Int32Array(8);
  initState(h, BLAKE2S_MAX, key.length);
  compress(h, padded(key), 0, BLAKE2S_BLOCK, false);
  return h;
}

const work = new Int32Array(8);

/**
 * The first four bytes, read big-endian, of BLAKE2s-256 under the key whose `keyState` is
 * `state`, of the message `block[0, length)`: `block` is 64 bytes, zero from `length` on
 * (1 <= length <= 64). Allocates nothing; `state` is left unchanged.
 */
export function macBlock(state: Int32Array, block: Uint8Array, length: number): number {
  work.set(state);
  compress(work, block, 0, BLAKE2S_BLOCK + length, true);
  const w = work[0];
  return (
    (((w & 0xff) << 24) | (((w >>> 8) & 0xff) << 16) | (((w >>> 16) & 0xff) << 8) | (w >>> 24)) >>>
    0
  );
}
