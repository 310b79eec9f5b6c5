// `token-budget` in JavaScript: a budget of output tokens per API key and time window, kept in the
// host's store and enforced in the middle of a stream. The same rules, byte for byte, as the Rust
// `example:token-budget` (guest-examples/token-budget/src/lib.rs, which documents them), as a
// guard of the text world on the same store, so both give identical output and charges.
//
// Config: `tokens` (required), `window_seconds` (3600), `key_header` (`authorization`; several,
// comma-separated, are tried in order).

import { StoreError, store, utf8 } from "../sdk/sluicegate-guest.js";
import { LENGTH, Refusal, Stop, TextGuard, exportGuard, utf8Length } from "../sdk/sluicegate-text.js";
import { sha256Hex } from "./sha256.js";

const I64_MAX = 2n ** 63n - 1n;

/** The store key of a header value (a string, or undefined). */
export function keyOf(value) {
  return value === undefined ? "anonymous" : `key:${sha256Hex(utf8(value))}`;
}

/** The tokens of a stream's text so far: one per four bytes, at least one per delta. */
export const estimate = (bytes, deltas) => Math.max(Math.ceil(bytes / 4), deltas);

/** `text` as an integer in Rust's syntax for one (an optional sign, then ASCII digits), or undefined. */
function integer(text) {
  return /^[+-]?[0-9]+$/.test(text) ? BigInt(text) : undefined;
}

function positive(config, name, fallback, bound) {
  const value = config.get(name);
  if (value === undefined) return fallback;
  const n = integer(value);
  if (n === undefined || n <= 0n || n > bound) throw new Error(`\`${name}\` must be a positive integer`);
  return Number(n);
}

/** A stored total; a value that is not one counts as spent, as in the Rust example. */
function count(value) {
  const n = integer(value);
  return n === undefined || n > I64_MAX || n < -I64_MAX - 1n ? Number.MAX_SAFE_INTEGER : Number(n);
}

/** (the key's total, seconds left); a value that is not a count counts as spent; a failed read gives undefined. */
function read(key) {
  let entry;
  try {
    entry = store.get(key);
  } catch (e) {
    if (!(e instanceof StoreError)) throw e;
    return [undefined, 0]; // unavailable: a fault the host applies the policy to; read again later
  }
  return entry === undefined ? [0, 0] : [count(entry.value), entry.expiresIn];
}

class TokenBudget extends TextGuard {
  constructor(config) {
    super(config);
    if (config.get("tokens") === undefined) throw new Error("`tokens` (the budget) is required");
    this.tokens = positive(config, "tokens", undefined, I64_MAX);
    this.windowSeconds = positive(config, "window_seconds", 3600, 2n ** 32n - 1n);
    const names = (config.get("key_header") ?? "authorization").split(",").map((name) => name.trim().toLowerCase());
    this.keyHeaders = names.filter((name) => name !== "");
    if (this.keyHeaders.length === 0) throw new Error("`key_header` must name at least one header");
  }
  get prefilter() {
    return "\0"; // whole texts are never metered
  }
  open(context) {
    const header = this.keyHeaders
      .map((wanted) => context.requestHeaders.find(([name]) => name === wanted))
      .find((found) => found !== undefined);
    return { key: keyOf(header?.[1]), used: undefined, charged: 0, bytes: 0, deltas: 0 };
  }
  admit(account) {
    const [used, expiresIn] = read(account.key);
    if (used !== undefined && used < this.tokens) return undefined;
    return new Refusal(429, "budget_exhausted", "the token budget of this key is used up", Math.max(expiresIn, 1));
  }
  process(account, items) {
    if (account.used === undefined) account.used = read(account.key)[0]; // a failed read: again next batch
    const before = estimate(account.bytes, account.deltas);
    let left = this.tokens - (account.used ?? Number.MAX_SAFE_INTEGER);
    const answers = items.map((item) => {
      const text = item.text;
      if (item.channel === 0 || text.length === 0) return [text.length, text];
      if (left <= 0) return new Stop("", LENGTH);
      const was = estimate(account.bytes, account.deltas);
      account.bytes += utf8Length(text);
      account.deltas += item.pieces;
      left -= estimate(account.bytes, account.deltas) - was;
      return [text.length, text];
    });
    this.charge(account, estimate(account.bytes, account.deltas) - before);
    return answers;
  }
  finish(account, reason, outputTokens) {
    // The provider's own count, when it gave one, settles the stream's charge.
    if (outputTokens !== undefined && reason === "upstream-closed") {
      this.charge(account, outputTokens - account.charged);
    }
  }
  charge(account, tokens) {
    if (tokens === 0) return;
    try {
      account.used = store.increment(account.key, tokens, this.windowSeconds);
      account.charged += tokens;
    } catch (e) {
      if (!(e instanceof StoreError)) throw e; // unavailable: the host applies the fault policy
    }
  }
}

export const text = exportGuard(TokenBudget);
