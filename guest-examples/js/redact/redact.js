// `redact` in JavaScript: replaces every e-mail address in event data with `[redacted]` (or the
// `replacement` config value), including addresses a model streams one token per event. The same
// scanner and hold rule, byte for byte, as the Rust `example:redact`
// (guest-examples/redact/src/scan.rs and lib.rs), on the same streaming-text layer, so both give
// identical output.

import { Interceptor, exportInterceptor, utf8 } from "../sdk/sluicegate-guest.js";
import { TextStream, TextTransform } from "../sdk/sluicegate-text.js";

const AT = 0x40, DOT = 0x2e, DASH = 0x2d, BACKSLASH = 0x5c, U = 0x75;
const isAlnum = (b) => (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a);
const isAlpha = (b) => (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a);
const isHex = (b) => (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);
// local part: [A-Za-z0-9._%+-]
const isLocal = (b) => isAlnum(b) || b === DOT || b === 0x5f || b === 0x25 || b === 0x2b || b === DASH;
const isDomain = (b) => isAlnum(b) || b === DOT || b === DASH;

// If the local part starting at `start` is preceded by an unescaped backslash, its first
// characters belong to a JSON escape (`\n`, `\u00e9`): returns where the address really starts.
function skipJsonEscape(text, floor, start, at) {
  let k = start;
  while (k > floor && text[k - 1] === BACKSLASH) k--;
  if ((start - k) % 2 === 0) return start;
  const hex4 = start + 5 <= text.length && [1, 2, 3, 4].every((i) => isHex(text[start + i]));
  const skip = text[start] === U && hex4 ? 5 : 1;
  return Math.min(start + skip, at);
}

// Calls found(start, end) for each e-mail address in `text` (bytes), in order, without overlaps.
export function findEmails(text, found) {
  let floor = 0;
  let from = 0;
  for (;;) {
    const at = text.indexOf(AT, from);
    if (at < 0) return;
    from = at + 1;
    let start = at;
    while (start > floor && isLocal(text[start - 1])) start--;
    start = skipJsonEscape(text, floor, start, at);
    while (start < at && text[start] === DOT) start++;
    if (start === at) continue;
    let end = at + 1;
    while (end < text.length && isDomain(text[end])) end++;
    while (end > at + 1 && (text[end - 1] === DOT || text[end - 1] === DASH)) end--;
    const domain = text.subarray(at + 1, end);
    const dot = domain.lastIndexOf(DOT);
    if (dot < 0) continue;
    const top = domain.subarray(dot + 1);
    let doubled = false;
    for (let i = 1; i < domain.length; i++) if (domain[i] === DOT && domain[i - 1] === DOT) doubled = true;
    if (dot === 0 || top.length < 2 || !top.every(isAlpha) || doubled) continue;
    found(start, end);
    floor = end;
    from = end;
  }
}

// `text` with every address replaced.
export function redact(text, replacement) {
  const parts = [];
  let copied = 0;
  let length = 0;
  findEmails(text, (start, end) => {
    parts.push(text.subarray(copied, start), replacement);
    length += start - copied + replacement.length;
    copied = end;
  });
  if (parts.length === 0) return text;
  parts.push(text.subarray(copied));
  length += text.length - copied;
  const out = new Uint8Array(length);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

// At most 64 bytes before the `@` and 255 after it (RFC 5321).
export const MAX_HELD = 64 + 1 + 255;

// Where streamed text may be cut now: before the trailing run of bytes that could still be part
// of an address (at most MAX_HELD of them).
export function holdPoint(text) {
  let start = text.length;
  while (start > 0) {
    const b = text[start - 1];
    if (!(isLocal(b) || b === AT || b === BACKSLASH)) break; // local covers every domain byte
    start--;
  }
  return text.length - Math.min(text.length - start, MAX_HELD);
}

class RedactText extends TextTransform {
  constructor(replacement) {
    super();
    this.replacement = replacement;
  }
  get maxHeld() {
    return MAX_HELD;
  }
  passes(text) {
    return !text.includes(AT);
  }
  step(channel, pending, last) {
    const cut = last ? pending.length : holdPoint(pending);
    return [cut, redact(pending.subarray(0, cut), this.replacement)];
  }
}

class Redact extends Interceptor {
  constructor(config) {
    super(config);
    const replacement = config.get("replacement") ?? "[redacted]";
    if (replacement.includes("\r")) throw new Error("`replacement` must not contain CR");
    this.text = new RedactText(utf8(replacement));
  }
  open(context) {
    return new TextStream();
  }
  processBatch(stream, batch, out) {
    stream.processBatch(this.text, batch, out);
  }
  finish(stream, reason, out) {
    stream.finish(this.text, out);
  }
}

export const batch = exportInterceptor(Redact);
