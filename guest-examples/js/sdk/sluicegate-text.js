// Guards over the text a model streams, in JavaScript: bindings to the `text-interceptor` world.
//
// The host owns the wire formats. Its streaming-text engine finds the text in every event (OpenAI
// Chat and Responses, Anthropic, Gemini, Ollama, MCP messages, JSON bodies), decodes it, and hands
// the guard, once per batch, the pending text of every channel that changed and every whole text.
// Nothing here parses a format: a guard sees strings and answers with small verdicts.
//
// Two ways to write one, as in Rust:
// - a `TextTransform` (`step` over one channel's pending text, optionally `whole`), exported with
//   `export const text = exportTransform(MyTransform);` (one state per channel is kept here);
// - a `TextGuard` (`process` over a batch's items, with per-stream state), exported with
//   `export const text = exportGuard(MyGuard);`.
// Build for the `text-interceptor` world (see docs/tutorial-javascript.md).

import { configEntries, count as hostCount } from "sluicegate:interceptor/host@0.1.3";

/**
 * Adds `n` to this guard's count `name` for the stream being answered (WIT 0.1.3): it shows in
 * the stream's enforcement record and in `/metrics` (`sluicegate_interceptor_counted_total`).
 * Name what was found (`"bsn"`), never the text that was found.
 */
export function count(name, n = 1) {
  hostCount(name, n);
}

export const CONTENT_FILTER = "content-filter";
export const LENGTH = "length";

/** What `step` or `whole` returns to end the stream: `text` goes out first. */
export class Stop {
  constructor(text, reason = CONTENT_FILTER) {
    this.text = text;
    this.reason = reason;
  }
}

/** A request refused before it is sent on (`TextGuard.admit`, request chains only). */
export class Refusal {
  constructor(status, errorType, message, retryAfterSeconds = 0) {
    Object.assign(this, { status, errorType, message, retryAfterSeconds });
  }
}

/**
 * A streaming transform over one channel's text, built once per instance from the configuration
 * (a Map of strings). `step(channel, pending, last)` returns `[released, text]` (how many
 * characters of `pending`, as JavaScript counts them, go out, and the text in their place; all of
 * them when `last`) or a `Stop`; `whole(text)` answers a text seen whole (by default a channel that
 * closes at once). `maxHeld`: the most bytes a channel may hold; `prefilter`: characters without
 * which a whole text passes unchanged.
 */
export class TextTransform {
  constructor(config) {
    this.config = config;
  }
  get maxHeld() {
    return 0;
  }
  get prefilter() {
    return "";
  }
  newChannel() {
    return undefined;
  }
  step(channel, pending, last) {
    throw new Error("step is not implemented");
  }
  whole(text) {
    return this.step(this.newChannel(), text, true);
  }
}

/**
 * A guard that sees a batch's items ({ channel, kind, text, last, pieces }; channel 0 is a whole
 * text) together and keeps per-stream state: `open(context)`, `admit(state)` (a `Refusal` for a
 * request, or undefined), `process(state, items)` (one answer per item, as `step` returns them),
 * `finish(state, reason, outputTokens)`.
 */
export class TextGuard {
  constructor(config) {
    this.config = config;
  }
  get maxHeld() {
    return 0;
  }
  get prefilter() {
    return "";
  }
  open(context) {
    return undefined;
  }
  admit(state) {
    return undefined;
  }
  process(state, items) {
    throw new Error("process is not implemented");
  }
  finish(state, reason, outputTokens) {}
}

/** A transform as a guard: one transform state per channel. */
class PerChannel extends TextGuard {
  constructor(transform) {
    super(transform.config);
    this.transform = transform;
  }
  get maxHeld() {
    return this.transform.maxHeld;
  }
  get prefilter() {
    return this.transform.prefilter;
  }
  open() {
    return new Map();
  }
  process(channels, items) {
    const t = this.transform;
    return items.map((item) => {
      if (item.channel === 0) return t.whole(item.text);
      if (!channels.has(item.channel)) channels.set(item.channel, t.newChannel());
      const answer = t.step(channels.get(item.channel), item.text, item.last);
      if (item.last) channels.delete(item.channel);
      return answer;
    });
  }
}

/** UTF-8 length of `text` (JavaScript strings count UTF-16 units; the host counts bytes). */
export function utf8Length(text) {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

function answer(itemText, a) {
  if (a instanceof Stop) return { tag: "stop", val: { text: a.text, reason: a.reason } };
  const [released, text] = a;
  const kept = released >= itemText.length ? itemText : itemText.slice(0, released);
  const count = utf8Length(kept);
  // Text that goes out as it came is not sent back.
  return text === kept ? { tag: "keep", val: count } : { tag: "release", val: { count, text } };
}

function exportWith(makeGuard) {
  let instance; // built on first use: the configuration is only readable at run time
  const guard = () => (instance ??= makeGuard(new Map(configEntries())));
  class StreamState {
    constructor(context) {
      this.guard = guard();
      this.state = this.guard.open(context);
    }
    admit() {
      return this.guard.admit(this.state) ?? undefined;
    }
    process(items) {
      const answers = this.guard.process(this.state, items);
      return items.map((item, i) => answer(item.text, answers[i]));
    }
    finish(reason, outputTokens) {
      this.guard.finish(this.state, reason, outputTokens ?? undefined);
    }
  }
  return {
    describe() {
      const g = guard();
      return { maxHeld: g.maxHeld, prefilter: g.prefilter };
    },
    StreamState,
  };
}

/** The component's `text` interface for a TextTransform subclass. */
export const exportTransform = (TransformClass) => exportWith((config) => new PerChannel(new TransformClass(config)));

/** The component's `text` interface for a TextGuard subclass. */
export const exportGuard = (GuardClass) => exportWith((config) => new GuardClass(config));
