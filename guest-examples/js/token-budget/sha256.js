// SHA-256 (FIPS 180-4), for the budget's store keys. The guest's engines (SpiderMonkey, QuickJS)
// have no synchronous digest (WebCrypto's is a promise, and absent in QuickJS), and the build
// bundles no packages, so it is written here; the tests compare its keys with the Rust example's.

// The round constants and initial hash: the first 32 bits of the fractional parts of the cube
// roots of the first 64 primes and of the square roots of the first 8 (doubles carry ~50 such
// bits for these roots, so the first 32 are exact).
const PRIMES = [];
for (let n = 2; PRIMES.length < 64; n++) if (PRIMES.every((p) => n % p !== 0)) PRIMES.push(n);
const fraction = (x) => (x - Math.floor(x)) * 2 ** 32;
const K = Uint32Array.from(PRIMES, (p) => fraction(Math.cbrt(p)));
const H0 = Uint32Array.from(PRIMES.slice(0, 8), (p) => fraction(Math.sqrt(p)));

const rotr = (x, n) => (x >>> n) | (x << (32 - n));

/** The SHA-256 digest of `bytes` (a Uint8Array) in lower-case hex. */
export function sha256Hex(bytes) {
  const h = Uint32Array.from(H0);
  // The message, a 1 bit, zeros, and its length in bits (64-bit big-endian), in 64-byte blocks.
  const padded = new Uint8Array(Math.ceil((bytes.length + 9) / 64) * 64);
  padded.set(bytes);
  padded[bytes.length] = 0x80;
  const view = new DataView(padded.buffer);
  view.setUint32(padded.length - 8, Math.floor(bytes.length / 2 ** 29));
  view.setUint32(padded.length - 4, (bytes.length * 8) >>> 0);
  const w = new Uint32Array(64);
  for (let block = 0; block < padded.length; block += 64) {
    for (let i = 0; i < 16; i++) w[i] = view.getUint32(block + 4 * i);
    for (let i = 16; i < 64; i++) {
      const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
      const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    let [a, b, c, d, e, f, g, k] = h;
    for (let i = 0; i < 64; i++) {
      const t1 = (k + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) >>> 0;
      const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) >>> 0;
      [k, g, f, e, d, c, b, a] = [g, f, e, (d + t1) >>> 0, c, b, a, (t1 + t2) >>> 0];
    }
    // A Uint32Array stores the sums modulo 2^32.
    [a, b, c, d, e, f, g, k].forEach((word, i) => (h[i] += word));
  }
  return Array.from(h, (word) => word.toString(16).padStart(8, "0")).join("");
}
