// `token-budget` in JavaScript: a budget of output tokens per API key and time window, kept in the
// host's store and enforced in the middle of a stream. The same rules, byte for byte, as the Rust
// `example:token-budget` (guest-examples/token-budget/src/lib.rs, which documents them), on the
// same streaming-text layer and the same store, so both give identical output and charges.
//
// Config: `tokens` (required), `window_seconds` (3600), `key_header` (`authorization`; several,
// comma-separated, are tried in order).

import { Interceptor, StoreError, exportInterceptor, store, utf8 } from "../sdk/sluicegate-guest.js";
import { LENGTH, Stop, TextStream, TextTransform, find, includes } from "../sdk/sluicegate-text.js";
import { sha256Hex } from "./sha256.js";

const TOKENS_FIELD = utf8('_tokens"');
const REPORTED = [utf8('"output_tokens":'), utf8('"completion_tokens":')];
const I64_MAX = 2n ** 63n - 1n;
const isSpace = (b) => b === 0x20 || b === 0x09 || b === 0x0d || b === 0x0a;
const isDigit = (b) => b >= 0x30 && b <= 0x39;

/** The store key of a header value (a string, or undefined). */
export function keyOf(value) {
  return value === undefined ? "anonymous" : `key:${sha256Hex(utf8(value))}`;
}

/** One token per four bytes of streamed text, at least one. */
export const estimate = (text) => Math.max(1, Math.ceil(text.length / 4));

/** The output-token count in a usage object of `raw` JSON (bytes), if there is one. */
export function reportedTokens(raw) {
  for (const field of REPORTED) {
    let at = find(raw, field);
    if (at < 0) continue;
    at += field.length;
    while (at < raw.length && isSpace(raw[at])) at++;
    let end = at;
    while (end < raw.length && isDigit(raw[end])) end++;
    if (end > at) {
      let n = 0n;
      for (let i = at; i < end; i++) n = n * 10n + BigInt(raw[i] - 0x30);
      if (n <= I64_MAX) return Number(n);
    }
  }
  return undefined;
}

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

// The text transform of one batch: it meters the streamed text against what is left.
class Meter extends TextTransform {
  constructor(left) {
    super();
    this.left = left;
    this.counted = 0;
    this.reported = undefined;
  }
  passes(text) {
    return !includes(text, TOKENS_FIELD);
  }
  step(channel, pending, last) {
    if (pending.length === 0) return [0, pending];
    if (this.left <= 0) return new Stop(new Uint8Array(0), LENGTH);
    const tokens = estimate(pending);
    this.counted += tokens;
    this.left -= tokens;
    return [pending.length, pending];
  }
  whole(text) {
    const n = reportedTokens(text);
    if (n !== undefined) this.reported = this.reported === undefined ? n : Math.max(this.reported, n);
    return [text.length, text];
  }
}

const refusal = (seconds) =>
  `{"error":{"type":"budget_exhausted","message":"the token budget of this key is used up","retry_after_seconds":${seconds}}}`;
const UNAVAILABLE = '{"error":{"type":"budget_unavailable","message":"the token budget could not be read"}}';

class TokenBudget extends Interceptor {
  constructor(config) {
    super(config);
    if (config.get("tokens") === undefined) throw new Error("`tokens` (the budget) is required");
    this.tokens = positive(config, "tokens", undefined, I64_MAX);
    this.windowSeconds = positive(config, "window_seconds", 3600, 2n ** 32n - 1n);
    const names = (config.get("key_header") ?? "authorization").split(",").map((name) => name.trim().toLowerCase());
    this.keyHeaders = names.filter((name) => name !== "");
    if (this.keyHeaders.length === 0) throw new Error("`key_header` must name at least one header");
  }
  open(context) {
    const header = this.keyHeaders
      .map((wanted) => context.requestHeaders.find(([name]) => name === wanted))
      .find((found) => found !== undefined);
    return {
      text: new TextStream(),
      key: keyOf(header?.[1]),
      request: context.status === 0,
      used: undefined, // the key's total as last read or returned; undefined until the first batch
      charged: 0,
      reported: undefined,
    };
  }
  processBatch(account, batch, out) {
    let used = account.used;
    if (used === undefined) {
      let entry;
      try {
        entry = store.get(account.key);
      } catch (e) {
        if (!(e instanceof StoreError)) throw e;
        return fail(out); // unavailable is a fault the host applies the policy for
      }
      used = entry === undefined ? 0 : count(entry.value);
      if (account.request) return this.admit(used, entry?.expiresIn ?? 0, out);
    }
    if (account.request) return; // admitted at its first (only) batch
    const meter = new Meter(this.tokens - used);
    account.text.processBatch(meter, batch, out);
    if (meter.reported !== undefined) account.reported = meter.reported;
    account.used = used;
    this.charge(account, meter.counted);
  }
  finish(account, reason, out) {
    if (account.request) return;
    const meter = new Meter(this.tokens - (account.used ?? 0));
    account.text.finish(meter, out);
    this.charge(account, meter.counted);
    // The provider's own count, when it gave one, settles the stream's charge.
    if (account.reported !== undefined && reason === "upstream-closed") {
      this.charge(account, account.reported - account.charged);
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
  admit(used, expiresIn, out) {
    if (this.tokens - used > 0) return;
    // The refusal: its event type is the status, its data the body; the rest is dropped.
    out.replace({ type: "429", data: refusal(Math.max(expiresIn, 1)), id: null, retry: null });
    out.end();
  }
}

function fail(out) {
  out.insert({ type: "error", data: UNAVAILABLE });
  out.end();
}

export const batch = exportInterceptor(TokenBudget);
