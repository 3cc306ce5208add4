/**
 * HalfSipHash-2-4 with a 32-bit result: a keyed pseudorandom function on 32-bit words, made
 * for exactly this job (short inputs, attacker-chosen, result must be unpredictable without
 * the 64-bit key) and cheap in JavaScript, whose fast integers are 32-bit (SipHash proper
 * needs 64-bit arithmetic). Used for SYN cookies; see `syn-cookies.ts` for why its strength
 * is enough there.
 *
 * Streaming over whole words without allocating: `begin`, then `word` per 32-bit word (each
 * the little-endian reading of four message bytes), then `end` with the message length in
 * bytes. The state is module-level: one hash at a time, which single-threaded callers that
 * finish each hash before starting the next satisfy trivially.
 */

let v0 = 0;
let v1 = 0;
let v2 = 0;
let v3 = 0;

function rotl(x: number, b: number): number {
  return (x << b) | (x >>> (32 - b));
}

function sipRound(): void {
  v0 = (v0 + v1) | 0;
  v1 = rotl(v1, 5) ^ v0;
  v0 = rotl(v0, 16);
  v2 = (v2 + v3) | 0;
  v3 = rotl(v3, 8) ^ v2;
  v0 = (v0 + v3) | 0;
  v3 = rotl(v3, 7) ^ v0;
  v2 = (v2 + v1) | 0;
  v1 = rotl(v1, 13) ^ v2;
  v2 = rotl(v2, 16);
}

/** Starts a hash under the key (k0, k1): the key's bytes 0-3 and 4-7, read little-endian. */
export function hashBegin(k0: number, k1: number): void {
  v0 = k0 | 0;
  v1 = k1 | 0;
  v2 = (0x6c796765 ^ k0) | 0;
  v3 = (0x74656462 ^ k1) | 0;
}

/** Absorbs one 32-bit word of the message. */
export function hashWord(m: number): void {
  v3 ^= m;
  sipRound();
  sipRound();
  v0 ^= m;
}

/** Finishes a message of `length` bytes (all absorbed as whole words) and returns the hash. */
export function hashEnd(length: number): number {
  const b = (length & 0xff) << 24;
  v3 ^= b;
  sipRound();
  sipRound();
  v0 ^= b;
  v2 ^= 0xff;
  sipRound();
  sipRound();
  sipRound();
  sipRound();
  return v1 ^ v3;
}
