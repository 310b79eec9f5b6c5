// Guardrails over streamed text, in JavaScript: the streaming-text layer of the Rust SDK
// (`sluicegate_guest::text`, guest-examples/sdk/src/text.rs), ported rule for rule so that an
// interceptor built on it gives byte for byte the output of its Rust twin.
//
// A model's answer arrives one token per event; `TextStream` finds the text of OpenAI Chat
// (`choices[].delta.content`), OpenAI Responses (`response.output_text.delta`) and Anthropic
// (`content_block_delta` with a `text_delta`) events by their content, feeds each channel's text
// to a transform as it arrives, and rewrites each delta with what the transform releases. The
// transform may hold back a bounded tail (what may still become a match); held text goes out in
// an event inserted before the channel's closing event, or in `finish`. Events that repeat the
// whole text get the transform applied to that text; every other part of an event goes through
// the transform as a text of its own. See the Rust module's documentation for the full rules.
//
// Texts are UTF-8 Uint8Arrays throughout, as the batch holds them, so offsets agree with Rust's.

import { utf8 } from "./sluicegate-guest.js";

// --- A JSON scanner that records where each value lies (guest-examples/sdk/src/json.rs) ---

export const MAX_DEPTH = 64;
export const OBJECT = 0, ARRAY = 1, STRING = 2, NUMBER = 3, LITERAL = 4;
const QUOTE = 0x22, BACKSLASH = 0x5c;
const isDigit = (b) => b >= 0x30 && b <= 0x39;
const isHex = (b) => isDigit(b) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);

function skipWs(b, i) {
  while (i < b.length && (b[i] === 0x20 || b[i] === 0x09 || b[i] === 0x0a || b[i] === 0x0d)) i++;
  return i;
}

// The position of the closing quote of the string whose text starts at `i`, or -1.
function stringEnd(b, i) {
  for (;;) {
    if (i >= b.length) return -1;
    const c = b[i];
    if (c === QUOTE) return i;
    if (c === BACKSLASH) {
      const e = b[i + 1];
      if (e === QUOTE || e === BACKSLASH || e === 0x2f || e === 0x62 || e === 0x66 || e === 0x6e || e === 0x72 || e === 0x74) {
        i += 2;
      } else if (e === 0x75 && i + 6 <= b.length && [2, 3, 4, 5].every((k) => isHex(b[i + k]))) {
        i += 6;
      } else return -1;
    } else if (c < 0x20) return -1;
    else i++;
  }
}

function digits(b, i) {
  const from = i;
  while (i < b.length && isDigit(b[i])) i++;
  return i > from ? i : -1;
}

// The end of the number at `i` (RFC 8259 grammar), or -1.
function numberEnd(b, i) {
  if (b[i] === 0x2d) i++;
  if (b[i] === 0x30) i++;
  else if ((i = digits(b, i)) < 0) return -1;
  if (b[i] === 0x2e && (i = digits(b, i + 1)) < 0) return -1;
  if (b[i] === 0x65 || b[i] === 0x45) {
    i++;
    if (b[i] === 0x2b || b[i] === 0x2d) i++;
    if ((i = digits(b, i)) < 0) return -1;
  }
  return i;
}

const LITERALS = { 0x74: utf8("true"), 0x66: utf8("false"), 0x6e: utf8("null") };

/** A parsed document: nodes {kind, start, end, next} in text order. */
export class Doc {
  constructor() {
    this.nodes = [];
  }
  /** Parses `text` (one JSON value, whitespace around it allowed); false if it is not JSON. */
  parse(text) {
    this.nodes = [];
    const ok = this.parseTree(text);
    if (!ok) this.nodes = [];
    return ok;
  }
  push(kind, start, end) {
    this.nodes.push({ kind, start, end, next: this.nodes.length + 1 });
    return this.nodes.length - 1;
  }
  key(b, i) {
    if (b[i] !== QUOTE) return -1;
    const end = stringEnd(b, i + 1);
    if (end < 0) return -1;
    this.push(STRING, i + 1, end);
    const colon = skipWs(b, end + 1);
    return b[colon] === 0x3a ? skipWs(b, colon + 1) : -1;
  }
  close(open, bracket) {
    const at = open.pop();
    this.nodes[at].end = bracket + 1;
    this.nodes[at].next = this.nodes.length;
  }
  parseTree(b) {
    const open = [];
    let i = skipWs(b, 0);
    let wantValue = true;
    for (;;) {
      if (wantValue) {
        if (i >= b.length) return false;
        const c = b[i];
        if (c === 0x7b || c === 0x5b) {
          if (open.length === MAX_DEPTH) return false;
          open.push(this.push(c === 0x7b ? OBJECT : ARRAY, i, i));
          i = skipWs(b, i + 1);
          if (b[i] === (c === 0x7b ? 0x7d : 0x5d)) {
            this.close(open, i);
            i++;
            wantValue = false;
          } else if (c === 0x7b && (i = this.key(b, i)) < 0) return false;
          continue;
        }
        if (c === QUOTE) {
          const end = stringEnd(b, i + 1);
          if (end < 0) return false;
          this.push(STRING, i + 1, end);
          i = end + 1;
        } else if (LITERALS[c]) {
          const word = LITERALS[c];
          for (let k = 0; k < word.length; k++) if (b[i + k] !== word[k]) return false;
          this.push(LITERAL, i, i + word.length);
          i += word.length;
        } else {
          const end = numberEnd(b, i);
          if (end < 0) return false;
          this.push(NUMBER, i, end);
          i = end;
        }
        wantValue = false;
        continue;
      }
      i = skipWs(b, i);
      if (open.length === 0) return i === b.length;
      const inObject = this.nodes[open[open.length - 1]].kind === OBJECT;
      const c = b[i];
      if (c === 0x2c) {
        i = skipWs(b, i + 1);
        if (inObject && (i = this.key(b, i)) < 0) return false;
        wantValue = true;
      } else if ((c === 0x7d && inObject) || (c === 0x5d && !inObject)) {
        this.close(open, i);
        i++;
      } else return false;
    }
  }
  kind(at) {
    return at === undefined ? undefined : this.nodes[at].kind;
  }
  /** The value of `key` in object `at` (the last one if the key repeats), or undefined. */
  get(text, at, key) {
    if (at === undefined || this.nodes[at].kind !== OBJECT) return undefined;
    const want = utf8(key);
    let found;
    for (let child = at + 1; child < this.nodes[at].next; child = this.nodes[child + 1].next) {
      const k = this.nodes[child];
      if (bytesEqual(decode(text.subarray(k.start, k.end)), want)) found = child + 1;
    }
    return found;
  }
  items(at) {
    const out = [];
    if (at === undefined || this.nodes[at].kind !== ARRAY) return out;
    for (let child = at + 1; child < this.nodes[at].next; child = this.nodes[child].next) out.push(child);
    return out;
  }
  rawStr(text, at) {
    if (at === undefined || this.nodes[at].kind !== STRING) return undefined;
    return text.subarray(this.nodes[at].start, this.nodes[at].end);
  }
  /** The value of node `at` if it is an integer from 0 to 2^53 without fraction or exponent. */
  index(text, at) {
    if (at === undefined || this.nodes[at].kind !== NUMBER) return undefined;
    const raw = text.subarray(this.nodes[at].start, this.nodes[at].end);
    if (raw.length > 16 || !raw.every(isDigit)) return undefined;
    const value = Number(latin1(raw));
    return value <= 2 ** 53 ? value : undefined;
  }
}

function latin1(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return s;
}

export function bytesEqual(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function concat(parts) {
  let length = 0;
  for (const p of parts) length += p.length;
  const out = new Uint8Array(length);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const ascii = (s) => utf8(s);

function pushCodePoint(out, c) {
  if (c < 0x80) out.push(c);
  else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
  else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
}

function hex4(b, i) {
  return parseInt(latin1(b.subarray(i, i + 4)), 16);
}

/** The decoded UTF-8 text of a raw JSON string; an unpaired surrogate escape becomes U+FFFD. */
export function decode(raw) {
  if (!raw.includes(BACKSLASH)) return raw;
  const out = [];
  for (let i = 0; i < raw.length; ) {
    if (raw[i] !== BACKSLASH) {
      out.push(raw[i++]);
      continue;
    }
    const c = raw[i + 1];
    i += 2;
    if (c === 0x62) out.push(0x08);
    else if (c === 0x66) out.push(0x0c);
    else if (c === 0x6e) out.push(0x0a);
    else if (c === 0x72) out.push(0x0d);
    else if (c === 0x74) out.push(0x09);
    else if (c === 0x75) {
      const unit = hex4(raw, i);
      i += 4;
      let low;
      if (unit >= 0xd800 && unit < 0xdc00 && raw[i] === BACKSLASH && raw[i + 1] === 0x75) {
        const l = hex4(raw, i + 2);
        if (l >= 0xdc00 && l < 0xe000) low = l;
      }
      if (low !== undefined) {
        i += 6;
        pushCodePoint(out, 0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00));
      } else pushCodePoint(out, unit >= 0xd800 && unit < 0xe000 ? 0xfffd : unit);
    } else out.push(c);
  }
  return Uint8Array.from(out);
}

const HEX = "0123456789abcdef";

/** `text` as the inside of a JSON string, escaped as serde_json and JSON.stringify escape it. */
export function encode(text) {
  const out = [];
  for (const b of text) {
    if (b === QUOTE) out.push(BACKSLASH, QUOTE);
    else if (b === BACKSLASH) out.push(BACKSLASH, BACKSLASH);
    else if (b === 0x0a) out.push(BACKSLASH, 0x6e);
    else if (b === 0x0d) out.push(BACKSLASH, 0x72);
    else if (b === 0x09) out.push(BACKSLASH, 0x74);
    else if (b === 0x08) out.push(BACKSLASH, 0x62);
    else if (b === 0x0c) out.push(BACKSLASH, 0x66);
    else if (b < 0x20) out.push(BACKSLASH, 0x75, 0x30, 0x30, HEX.charCodeAt(b >> 4), HEX.charCodeAt(b & 15));
    else out.push(b);
  }
  return Uint8Array.from(out);
}

// --- The layer ---

export const CONTENT_FILTER = "content_filter", LENGTH = "length";
const NAMES = {
  content_filter: ["content_filter", "refusal", "content_filter"],
  length: ["length", "max_tokens", "max_output_tokens"],
};

/** What a transform's `step` returns to end the stream: `out` is released first. */
export class Stop {
  constructor(out, reason = CONTENT_FILTER) {
    this.out = out;
    this.reason = reason;
  }
}

/**
 * A streaming transform over the text of one channel. For any split of a text into pieces,
 * feeding the pieces and then closing must release exactly what one call with the whole text and
 * `last = true` releases; and the held text must never exceed `maxHeld` bytes.
 */
export class TextTransform {
  get maxHeld() {
    return 0;
  }
  /**
   * True if `text`, taken whole, certainly goes through unchanged (for `redact`: it has no `@`):
   * events outside the streamed text are then kept as they are. False is always correct.
   */
  passes(text) {
    return false;
  }
  /** State kept per channel between calls. */
  newChannel() {
    return undefined;
  }
  /**
   * Looks at `pending` (the held text followed by the new text) and returns `[n, out]`: the
   * first `n` bytes are released, transformed into `out`; the rest is held. With `last`
   * everything must be released. Or returns `new Stop(out)` to end the stream.
   */
  step(channel, pending, last) {
    throw new Error("step is not implemented");
  }
  /**
   * A text seen whole rather than streamed: an event that repeats a channel's whole text, or the
   * raw bytes of an event (or of a delta's other fields) outside the streamed text. Returns what
   * `step` returns. The default treats it as a channel of its own that closes at once, which is
   * what a filter wants; a transform that meters the streamed text (a token budget) passes it on
   * instead, so that nothing is counted twice.
   */
  whole(text) {
    return this.step(this.newChannel(), text, true);
  }
}

const outcome = (result) => (result instanceof Stop ? [result.out, result.reason] : [result[1], undefined]);

/** [output, stop reason or undefined] of `transform` over a whole text. */
export function applyWhole(transform, text) {
  return outcome(transform.whole(text));
}

/** Where the bytes `pattern` (not empty) first occur in the bytes `data`, or -1. */
export function find(data, pattern) {
  for (let at = data.indexOf(pattern[0]); at >= 0 && at + pattern.length <= data.length; at = data.indexOf(pattern[0], at + 1)) {
    let k = 1;
    while (k < pattern.length && data[at + k] === pattern[k]) k++;
    if (k === pattern.length) return at;
  }
  return -1;
}

/** True if the bytes `pattern` occur in the bytes `data`. */
export const includes = (data, pattern) => find(data, pattern) >= 0;

const TYPE_KEY = utf8('"type"'), CHOICES_KEY = utf8('"choices"');

// False when `data` cannot be a text-bearing event (every one has a "choices" or "type" key, which
// only a backslash escape could hide), so the parse can be skipped; the result is the same.
const mayHaveText = (data) => includes(data, TYPE_KEY) || includes(data, CHOICES_KEY) || data.includes(BACKSLASH);

// Feeds a channel's pending text to the transform: [released text, stop reason or undefined]; what
// it holds stays pending. A transform that breaks its contract (holds more than it declared, or
// anything when `last`) has its whole pending text released through it as a whole text instead:
// so nothing is held without bound.
function stepChannel(t, channel, last) {
  const result = t.step(channel.state, channel.pending, last);
  if (result instanceof Stop) {
    channel.pending = EMPTY;
    return [result.out, result.reason];
  }
  const [n, released] = result;
  if (n === channel.pending.length || (!last && channel.pending.length - n <= t.maxHeld)) {
    channel.pending = channel.pending.slice(n);
    return [released, undefined];
  }
  // Streamed text still: through `step`, as a channel that closes at once.
  const whole = outcome(t.step(t.newChannel(), channel.pending, true));
  channel.pending = EMPTY;
  return whole;
}

const keyEqual = (a, b) => a[0] === b[0] && a[2] === b[2] && bytesEqual(a[1], b[1]);
const EMPTY = new Uint8Array(0);
const indexKey = (i) => ["index", EMPTY, i];

function covers(close, key) {
  if (close === "all") return true;
  if (close[0] === "key") return keyEqual(close[1], key);
  return key[0] === "item" && bytesEqual(key[1], close[1]);
}

const startsWith = (b, s) => {
  const p = ascii(s);
  if (b.length < p.length) return false;
  for (let i = 0; i < p.length; i++) if (b[i] !== p[i]) return false;
  return true;
};
const is = (b, s) => b !== undefined && b.length === s.length && startsWith(b, s);

/** The per-stream state of the layer: one per stream, fed from the interceptor's own methods. */
export class TextStream {
  constructor() {
    this.channels = [];
    this.format = "unknown";
    this.chatMeta = undefined;
    this.responseTemplate = undefined;
    this.sequence = 0;
    this.openBlocks = [];
    this.textDeltas = 0;
    this.stopped = false;
    this.heldEvents = 0;
    this.maxHeldBytes = 0;
    this.doc = new Doc();
  }
  heldBytes() {
    return this.channels.reduce((n, c) => n + c.pending.length, 0);
  }
  processBatch(transform, batch, out) {
    for (const event of batch) {
      if (this.stopped) return;
      this.processEvent(transform, event, out);
    }
  }
  finish(transform, out) {
    for (let at = 0; at < this.channels.length; at++) {
      if (this.stopped) return;
      const reason = this.flush(transform, at, out);
      if (reason !== undefined) this.writeEnding(reason, out);
    }
  }
  channel(t, key) {
    for (let at = 0; at < this.channels.length; at++) {
      if (keyEqual(this.channels[at].key, key)) {
        this.channels[at].closed = false;
        return at;
      }
    }
    this.channels.push({ key, pending: EMPTY, state: t.newChannel(), template: [undefined, EMPTY, EMPTY], closed: false });
    return this.channels.length - 1;
  }
  processEvent(t, event, out) {
    const data = event.data;
    if (data === undefined) {
      out.keep();
      return;
    }
    this.spans = [];
    this.closes = [];
    if (is(data, "[DONE]")) {
      this.format = "chat";
      this.closes.push("all");
    } else if (mayHaveText(data) && this.doc.parse(data)) this.classify(t, data);

    if (this.spans.length === 0 && this.closes.length === 0 && t.passes(data)) {
      out.keep();
      return;
    }
    let stop;
    for (const close of this.closes) {
      for (let at = 0; at < this.channels.length; at++) {
        const inEvent = this.spans.some((s) => s.role === "delta" && s.at === at);
        if (!inEvent && covers(close, this.channels[at].key) && stop === undefined) stop = this.flush(t, at, out);
      }
    }
    if (stop !== undefined) {
      out.drop();
      this.writeEnding(stop, out);
      return;
    }
    const [next, stopped] = this.rewrite(t, data);
    this.saveTemplates(event, next);
    for (const channel of this.channels) {
      if (this.closes.some((close) => covers(close, channel.key))) {
        channel.closed = true;
        channel.state = t.newChannel();
      }
    }
    if (stopped !== undefined) {
      if (stopped[1]) out.replace({ data: next });
      else out.drop();
      this.writeEnding(stopped[0], out);
    } else if (!bytesEqual(next, data)) out.replace({ data: next });
    else out.keep();
  }
  classify(t, data) {
    const doc = this.doc;
    const root = 0;
    if (doc.kind(root) !== OBJECT) return;
    const choices = doc.get(data, root, "choices");
    if (doc.kind(choices) === ARRAY) {
      this.format = "chat";
      if (this.chatMeta === undefined) {
        const meta = [];
        for (const key of ["id", "object", "created", "model"]) {
          const value = doc.get(data, root, key);
          if (value === undefined) continue;
          const n = doc.nodes[value];
          const raw = n.kind === STRING ? data.subarray(n.start - 1, n.end + 1) : data.subarray(n.start, n.end);
          meta.push(ascii(`"${key}":`), raw, ascii(","));
        }
        this.chatMeta = concat(meta);
      }
      doc.items(choices).forEach((choice, position) => {
        if (doc.kind(choice) !== OBJECT) return;
        const index = doc.index(data, doc.get(data, choice, "index"));
        const key = indexKey(index === undefined ? position : index);
        const closes = doc.kind(doc.get(data, choice, "finish_reason")) === STRING;
        const content = doc.get(data, doc.get(data, choice, "delta"), "content");
        if (doc.kind(content) === STRING) {
          const n = doc.nodes[content];
          this.spans.push({ start: n.start, end: n.end, role: "delta", at: this.channel(t, key), last: closes });
        }
        if (closes) this.closes.push(["key", key]);
      });
      return;
    }
    const kind = doc.rawStr(data, doc.get(data, root, "type"));
    if (kind === undefined) return;
    if (startsWith(kind, "response.")) {
      this.format = "responses";
      const n = doc.index(data, doc.get(data, root, "sequence_number"));
      if (n !== undefined) this.sequence = n;
    } else if (startsWith(kind, "message_") || startsWith(kind, "content_block_") || is(kind, "ping")) {
      this.format = "anthropic";
    }
    const index = doc.index(data, doc.get(data, root, "index")) ?? 0;
    const itemKey = () => [
      "item",
      (doc.rawStr(data, doc.get(data, root, "item_id")) ?? EMPTY).slice(),
      doc.index(data, doc.get(data, root, "content_index")) ?? 0,
    ];
    const deltaSpan = (at, key) => {
      const n = doc.nodes[at];
      this.spans.push({ start: n.start, end: n.end, role: "delta", at: this.channel(t, key), last: false });
    };
    if (is(kind, "content_block_delta")) {
      const delta = doc.get(data, root, "delta");
      if (is(doc.rawStr(data, doc.get(data, delta, "type")), "text_delta")) {
        const text = doc.get(data, delta, "text");
        if (doc.kind(text) === STRING) {
          this.textDeltas++;
          deltaSpan(text, indexKey(index));
        }
      }
    } else if (is(kind, "content_block_start")) {
      if (!this.openBlocks.includes(index)) this.openBlocks.push(index);
    } else if (is(kind, "content_block_stop")) {
      this.openBlocks = this.openBlocks.filter((b) => b !== index);
      this.closes.push(["key", indexKey(index)]);
    } else if (is(kind, "message_delta") || is(kind, "message_stop")) {
      this.closes.push("all");
    } else if (is(kind, "response.output_text.delta")) {
      const delta = doc.get(data, root, "delta");
      if (doc.kind(delta) === STRING) deltaSpan(delta, itemKey());
    } else if (is(kind, "response.output_text.done")) {
      this.closes.push(["key", itemKey()]);
      this.wholeSpan(doc.get(data, root, "text"));
    } else if (is(kind, "response.content_part.done")) {
      this.closes.push(["key", itemKey()]);
      this.wholeSpan(doc.get(data, doc.get(data, root, "part"), "text"));
    } else if (is(kind, "response.output_item.done")) {
      const item = doc.get(data, root, "item");
      this.closes.push(["item", doc.rawStr(data, doc.get(data, item, "id")) ?? EMPTY]);
      if (item !== undefined) this.wholeTexts(data, item);
    } else if (is(kind, "response.completed") || is(kind, "response.incomplete") || is(kind, "response.failed")) {
      this.closes.push("all");
      const response = doc.get(data, root, "response");
      for (const item of doc.items(doc.get(data, response, "output"))) this.wholeTexts(data, item);
    } else if (is(kind, "response.created")) {
      const response = doc.get(data, root, "response");
      if (doc.kind(response) === OBJECT) {
        const base = doc.nodes[response].start;
        const span = (key) => {
          const value = doc.get(data, response, key);
          if (value === undefined) return undefined;
          const n = doc.nodes[value];
          const quoted = n.kind === STRING ? 1 : 0;
          return [n.start - quoted - base, n.end + quoted - base];
        };
        this.responseTemplate = [data.slice(base, doc.nodes[response].end), span("status"), span("incomplete_details")];
      }
    }
  }
  wholeTexts(data, item) {
    for (const part of this.doc.items(this.doc.get(data, item, "content"))) this.wholeSpan(this.doc.get(data, part, "text"));
  }
  wholeSpan(at) {
    if (this.doc.kind(at) === STRING) {
      const n = this.doc.nodes[at];
      this.spans.push({ start: n.start, end: n.end, role: "whole" });
    }
  }
  rewrite(t, data) {
    const parts = [];
    this.placed = [];
    let length = 0;
    let stop;
    let copied = 0;
    const add = (piece) => {
      parts.push(piece);
      length += piece.length;
    };
    const gap = (from, to) => {
      const [out, reason] = applyWhole(t, data.subarray(from, to));
      if (stop === undefined && reason !== undefined) stop = [reason, false];
      add(out);
    };
    for (const span of this.spans) {
      gap(copied, span.start);
      const raw = data.subarray(span.start, span.end);
      const decoded = decode(raw);
      let released, unchanged;
      if (span.role === "whole") {
        let reason;
        [released, reason] = applyWhole(t, decoded);
        if (stop === undefined && reason !== undefined) stop = [reason, false];
        unchanged = bytesEqual(released, decoded);
      } else {
        const channel = this.channels[span.at];
        const wasEmpty = channel.pending.length === 0;
        channel.pending = concat([channel.pending, decoded]);
        let reason;
        [released, reason] = stepChannel(t, channel, span.last);
        if (stop === undefined && reason !== undefined) stop = [reason, true];
        const held = channel.pending.length;
        if (held > 0) {
          this.heldEvents++;
          this.maxHeldBytes = Math.max(this.maxHeldBytes, held);
        }
        unchanged = wasEmpty && held === 0 && bytesEqual(released, decoded);
      }
      const piece = unchanged ? raw : encode(released);
      if (span.role === "delta") this.placed.push([length, length + piece.length, span.at]);
      add(piece);
      copied = span.end;
    }
    gap(copied, data.length);
    return [concat(parts), stop];
  }
  saveTemplates(event, next) {
    for (const [start, , at] of this.placed) {
      const channel = this.channels[at];
      if (channel.pending.length === 0) continue;
      const before = [], after = [];
      let copied = 0;
      for (const [s, e] of this.placed) {
        (s <= start ? before : after).push(next.subarray(copied, s));
        copied = e;
      }
      after.push(next.subarray(copied));
      const type = event.eventType;
      // A copy made here: the batch's own buffer (and its array type) belongs to the host glue.
      channel.template = [type === undefined ? undefined : Uint8Array.from(type), concat(before), concat(after)];
    }
  }
  flush(t, at, out) {
    const channel = this.channels[at];
    channel.closed = true;
    if (channel.pending.length === 0) {
      channel.state = t.newChannel();
      return undefined;
    }
    const [released, reason] = stepChannel(t, channel, true);
    channel.state = t.newChannel();
    if (released.length > 0) {
      const [type, before, after] = channel.template;
      out.insert({ type, data: concat([before, encode(released), after]) });
    }
    return reason;
  }
  writeEnding(reason, out) {
    this.stopped = true;
    const [plain, anthropic, responses] = NAMES[reason];
    if (this.format === "chat") {
      const meta = this.chatMeta ?? EMPTY;
      let indexes = this.channels.filter((c) => c.key[0] === "index" && !c.closed).map((c) => c.key[2]);
      if (indexes.length === 0 && !this.channels.some((c) => c.key[0] === "index")) indexes = [0];
      for (const index of indexes) {
        const tail = `"choices":[{"index":${index},"delta":{},"finish_reason":"${plain}"}]}`;
        out.insert({ data: concat([ascii("{"), meta, ascii(tail)]) });
      }
      out.insert({ data: ascii("[DONE]") });
    } else if (this.format === "anthropic") {
      for (const index of this.openBlocks) {
        out.insert({ type: "content_block_stop", data: `{"type":"content_block_stop","index":${index}}` });
      }
      this.openBlocks = [];
      out.insert({
        type: "message_delta",
        data: `{"type":"message_delta","delta":{"stop_reason":"${anthropic}","stop_sequence":null},"usage":{"output_tokens":${this.textDeltas}}}`,
      });
      out.insert({ type: "message_stop", data: `{"type":"message_stop"}` });
    } else if (this.format === "responses") {
      const details = ascii(`{"reason":"${responses}"}`);
      let response;
      if (this.responseTemplate !== undefined) {
        const [template, status, incomplete] = this.responseTemplate;
        const edits = [];
        if (status) edits.push([status, ascii(`"incomplete"`)]);
        if (incomplete) edits.push([incomplete, details]);
        edits.sort((a, b) => a[0][0] - b[0][0]);
        const parts = [];
        let copied = 0;
        for (const [[start, end], value] of edits) {
          parts.push(template.subarray(copied, start), value);
          copied = end;
        }
        parts.push(template.subarray(copied));
        response = concat(parts);
      } else {
        response = concat([ascii(`{"object":"response","status":"incomplete","incomplete_details":`), details, ascii(`,"output":[]}`)]);
      }
      const head = ascii(`{"type":"response.incomplete","sequence_number":${this.sequence + 1},"response":`);
      out.insert({ type: "response.incomplete", data: concat([head, response, ascii("}")]) });
    } else {
      out.insert({ type: "error", data: `{"error":{"type":"${plain}","message":"the stream was ended by an interceptor"}}` });
    }
    out.end();
  }
}
