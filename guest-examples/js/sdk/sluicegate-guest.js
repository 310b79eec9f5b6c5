// Write sluicegate interceptors in JavaScript.
//
// Extend `Interceptor`, then export the component's `batch` interface from your module:
//
//     export const batch = exportInterceptor(MyInterceptor);
//
// and build it for the `batch-interceptor` world of `wit/interceptor.wit`, with ComponentizeJS
// or componentize-qjs (see docs/tutorial-javascript.md). The batch and verdict layouts are those
// documented in the WIT file; this module gives them names. Field values are Uint8Array views
// into the batch (valid UTF-8, as the host guarantees): decode only what you need.

import { configEntries, log as hostLog } from "sluicegate:interceptor/host@0.1.3";
import * as wit from "sluicegate:interceptor/store@0.1.3";

// The wire layout (wit/interceptor.wit, `batch` and `verdict`).
export const STRIDE = 8;
export const HAS_TYPE = 1, HAS_DATA = 2, HAS_ID = 4, HAS_RETRY = 8, COMMENT = 16;
export const INHERIT_TYPE = 256, INHERIT_DATA = 512, INHERIT_ID = 1024, INHERIT_RETRY = 2048;
export const OP_KEEP = 0, OP_DROP = 1, OP_REPLACE = 2, OP_INSERT = 3, OP_END = 4;

/** UTF-8 bytes of a string (works where TextEncoder is missing, as in QuickJS). */
export function utf8(text) {
  if (text instanceof Uint8Array) return text;
  // Byte views from the host glue are not always this realm's Uint8Array (a `.slice()` of an
  // event's field under ComponentizeJS is not): bytes, never their string form.
  if (ArrayBuffer.isView(text)) return new Uint8Array(text.buffer, text.byteOffset, text.byteLength);
  const out = [];
  for (const ch of String(text)) {
    let c = ch.codePointAt(0);
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return Uint8Array.from(out);
}

/** The string of valid UTF-8 bytes. */
export function text(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; ) {
    const b = bytes[i];
    let c, n;
    if (b < 0x80) (c = b), (n = 1);
    else if (b < 0xe0) (c = b & 31), (n = 2);
    else if (b < 0xf0) (c = b & 15), (n = 3);
    else (c = b & 7), (n = 4);
    for (let k = 1; k < n; k++) c = (c << 6) | (bytes[i + k] & 63);
    s += String.fromCodePoint(c);
    i += n;
  }
  return s;
}

/** True if two byte arrays hold the same bytes. */
export function sameBytes(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const MESSAGE = utf8("message");

/** One event of a batch, read in place from the batch's buffer. */
export class Event {
  constructor(bytes, index, at) {
    this.bytes = bytes;
    this.index = index;
    this.at = at;
  }
  /** The `fields` bits (HAS_TYPE, HAS_DATA, HAS_ID, HAS_RETRY, COMMENT). */
  get fields() {
    return this.index[this.at];
  }
  span(bit, word) {
    if (!(this.index[this.at] & bit)) return undefined;
    const start = this.index[this.at + word];
    return this.bytes.subarray(start, start + this.index[this.at + word + 1]);
  }
  get isComment() {
    return (this.fields & COMMENT) !== 0;
  }
  /** True for an event a client fires: it has data and is not a comment. */
  get isMessage() {
    return (this.fields & (HAS_DATA | COMMENT)) === HAS_DATA;
  }
  get comment() {
    return this.isComment ? this.span(HAS_DATA, 3) : undefined;
  }
  /** The `event:` field, or undefined. */
  get eventType() {
    return this.span(HAS_TYPE, 1);
  }
  /** The type a client dispatches: the `event:` field, or "message" when absent or empty. */
  get effectiveType() {
    const t = this.span(HAS_TYPE, 1);
    return t && t.length > 0 ? t : MESSAGE;
  }
  /** The data (`data:` lines joined with LF), or undefined; undefined for comments. */
  get data() {
    return this.isComment ? undefined : this.span(HAS_DATA, 3);
  }
  get id() {
    return this.span(HAS_ID, 5);
  }
  get retry() {
    return this.fields & HAS_RETRY ? this.index[this.at + 7] : undefined;
  }
}

/** The events of a batch (the `batch` record the host passes), in stream order. */
export function events(batch) {
  const list = [];
  for (let at = 0; at < batch.index.length; at += STRIDE) list.push(new Event(batch.bytes, batch.index, at));
  return list;
}

/** For `VerdictBuilder.replace`: keep the original event's value of this field. */
export const INHERIT = Symbol("inherit");

/**
 * Collects the ops of a verdict. Runs of keep and of drop are merged; a verdict that keeps
 * everything is sent as the empty verdict, which costs nothing to apply.
 */
export class VerdictBuilder {
  constructor() {
    this.ops = [];
    this.chunks = [];
    this.length = 0;
    this.run = -1; // position in ops of the last keep/drop op, while it is the last op
    this.consumed = 0;
    this.ended = false;
  }
  addRun(op, count) {
    if (count <= 0) return;
    this.consumed += count;
    if (this.run >= 0 && this.ops[this.run] === op) this.ops[this.run + 1] += count;
    else {
      this.run = this.ops.length;
      this.ops.push(op, count);
    }
  }
  /** Forwards the next `count` input events unchanged. */
  keep(count = 1) {
    this.addRun(OP_KEEP, count);
  }
  /** Drops the next `count` input events (an id or retry they carry is still forwarded). */
  drop(count = 1) {
    this.addRun(OP_DROP, count);
  }
  span(value) {
    if (value === undefined || value === null) return [0, 0];
    const raw = utf8(value);
    const start = this.length;
    this.chunks.push(raw);
    this.length += raw.length;
    return [start, raw.length];
  }
  describe(op, fields, type, data, id, retry) {
    const present = (v) => v !== undefined && v !== null;
    this.run = -1;
    fields |=
      (present(type) ? HAS_TYPE : 0) | (present(data) ? HAS_DATA : 0) | (present(id) ? HAS_ID : 0) |
      (present(retry) ? HAS_RETRY : 0);
    this.ops.push(op, fields, ...this.span(type), ...this.span(data), ...this.span(id), present(retry) ? retry : 0);
  }
  /**
   * Consumes the next input event and emits it rewritten. Each field of `fields`
   * ({type, data, id, retry}) is INHERIT (the default: keep the original), null (remove it) or a
   * new value (string or Uint8Array; a number for retry).
   */
  replace({ type = INHERIT, data = INHERIT, id = INHERIT, retry = INHERIT } = {}) {
    this.consumed += 1;
    let inherit = 0;
    const pick = (value, bit) => (value === INHERIT ? ((inherit |= bit), null) : value);
    const values = [pick(type, INHERIT_TYPE), pick(data, INHERIT_DATA), pick(id, INHERIT_ID), pick(retry, INHERIT_RETRY)];
    this.describe(OP_REPLACE, inherit, ...values);
  }
  /** Emits a new event here, consuming no input event. A comment carries its text as data. */
  insert({ type = null, data = null, id = null, retry = null, comment = false } = {}) {
    this.describe(OP_INSERT, comment ? COMMENT : 0, type, data, id, retry);
  }
  /** Ends the stream after this verdict's output; input events not yet consumed are dropped. */
  end() {
    this.ended = true;
  }
  /**
   * The verdict record for a batch of `count` events: events not mentioned are kept (or dropped
   * after `end`, which then closes the ops).
   */
  verdict(count) {
    if (this.ended) {
      this.drop(count - this.consumed);
      this.ops.push(OP_END);
    } else if (this.consumed < count) this.keep(count - this.consumed);
    if (this.ops.length === 2 && this.ops[0] === OP_KEEP) return EMPTY;
    const bytes = new Uint8Array(this.length);
    let at = 0;
    for (const chunk of this.chunks) {
      bytes.set(chunk, at);
      at += chunk.length;
    }
    return { ops: Uint32Array.from(this.ops), bytes };
  }
}

const EMPTY = { ops: new Uint32Array(0), bytes: new Uint8Array(0) };

/**
 * An interceptor: built once per instance from its configuration (a Map of strings), it opens
 * one state per event stream and answers every batch of that stream. Lifecycle, for every
 * stream: `open` when the event stream starts, `processBatch` for each batch in stream order,
 * `finish` once when it ends. An exception is a fault of the interceptor, handled by the host's
 * fault policy.
 */
export class Interceptor {
  constructor(config) {
    this.config = config;
  }
  /** Returns the state for one stream. `context`: streamId, method, path, query, headers, status. */
  open(context) {
    return undefined;
  }
  /** Decides the fate of each event of `batch` (an array of Event) with `out` (a VerdictBuilder). */
  processBatch(state, batch, out) {
    throw new Error("processBatch is not implemented");
  }
  /** Called once when the stream ends (`reason` is a string such as "upstream-closed"). */
  finish(state, reason, out) {}
}

/** Writes a line to the proxy's log; level is "trace", "debug", "info", "warn" or "error". */
export function log(level, message) {
  hostLog(level, message);
}

/**
 * A store call failed. `kind` is "unavailable" (the store could not be reached or did not answer
 * in time; the host also counts it as a fault of this interceptor and applies its fault policy
 * after the call, whatever the call returns), "not-a-counter" (`increment` of a key that does not
 * hold an integer) or "too-large" (a key over 512 bytes or a value over 64 KiB).
 */
export class StoreError extends Error {
  constructor(kind, detail) {
    super(detail ? `${kind}: ${detail}` : kind);
    this.kind = kind;
    this.detail = detail ?? "";
  }
}

// A WIT `result` error arrives thrown: the variant itself, or wrapped in a `payload` (as the jco
// glue of ComponentizeJS wraps it).
function storeCall(call) {
  try {
    return call();
  } catch (e) {
    const error = e?.payload ?? e;
    if (typeof error?.tag !== "string") throw e;
    throw new StoreError(error.tag, typeof error.val === "string" ? error.val : "");
  }
}

/**
 * The host's store (the WIT `store` interface, since 0.1.1): small counters and values shared by
 * this interceptor's streams and, when the operator configured a shared store, by every replica of
 * the proxy. Keys are this interceptor's own: the host scopes them. Each operation is atomic; a
 * failed one throws a StoreError. Counters are numbers (exact up to 2^53).
 */
export const store = {
  /** `{ value, expiresIn }` under `key` (expiresIn: seconds left, rounded up; 0: never), or undefined. */
  get(key) {
    const entry = storeCall(() => wit.get(key));
    return entry == null ? undefined : { value: entry.value, expiresIn: entry.expiresIn };
  },
  /**
   * Adds `by` to the integer under `key` (absent: 0) and returns the new value. A key this call
   * creates expires `ttlSeconds` later (0: never); an existing key keeps its expiry.
   */
  increment(key, by, ttlSeconds = 0) {
    if (by >= 0) return Number(storeCall(() => wit.increment(key, by, ttlSeconds)));
    // ComponentizeJS traps (uncatchably) on lowering a negative s64 (its issue 343), so a
    // decrement is a compare-and-set loop: atomic all the same; an existing key keeps its expiry
    // to the second (the remaining time, rounded up, is set again).
    for (;;) {
      const entry = store.get(key);
      if (entry !== undefined && !/^[+-]?[0-9]+$/.test(entry.value)) throw new StoreError("not-a-counter");
      const next = (entry === undefined ? 0 : Number(entry.value)) + by;
      const ttl = entry === undefined ? ttlSeconds : entry.expiresIn;
      if (store.compareAndSet(key, entry?.value, String(next), ttl)) return next;
    }
  },
  /** Sets `key` to `value` (expiring `ttlSeconds` later) if it holds `expected` (undefined: absent). */
  compareAndSet(key, expected, value, ttlSeconds = 0) {
    return storeCall(() => wit.compareAndSet(key, expected ?? undefined, value, ttlSeconds));
  },
};

/** The component's `batch` interface for an Interceptor subclass: `export const batch = exportInterceptor(X)`. */
export function exportInterceptor(InterceptorClass) {
  let instance; // built on first use: the configuration is only readable at run time
  const interceptor = () => (instance ??= new InterceptorClass(new Map(configEntries())));
  class StreamState {
    constructor(context) {
      this.interceptor = interceptor();
      this.state = this.interceptor.open(context);
    }
    processBatch(batch) {
      const list = events(batch);
      const out = new VerdictBuilder();
      this.interceptor.processBatch(this.state, list, out);
      return out.verdict(list.length);
    }
    finish(reason) {
      const out = new VerdictBuilder();
      this.interceptor.finish(this.state, reason, out);
      return out.ops.length === 0 && !out.ended ? EMPTY : out.verdict(0);
    }
  }
  return { StreamState };
}
