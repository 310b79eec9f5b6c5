// `redact` in JavaScript: replaces every e-mail address in the text a stream carries with
// `[redacted]` (or the `replacement` config value), including addresses a model streams one token
// per event. A guard of the text world: the host finds and decodes the text; this file is only the
// scanner and the hold rule of the Rust `example:redact` (guest-examples/redact/src/scan.rs), rule
// for rule, so both give identical output.

import { TextTransform, exportTransform } from "../sdk/sluicegate-text.js";

const AT = 0x40, DOT = 0x2e, DASH = 0x2d;
const isAlnum = (c) => (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
const isAlpha = (c) => (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
// local part: [A-Za-z0-9._%+-]
const isLocal = (c) => isAlnum(c) || c === DOT || c === 0x5f || c === 0x25 || c === 0x2b || c === DASH;
const isDomain = (c) => isAlnum(c) || c === DOT || c === DASH;

// Calls found(start, end) for each e-mail address in `text`, in order, without overlaps.
export function findEmails(text, found) {
  let floor = 0;
  let from = 0;
  for (;;) {
    const at = text.indexOf("@", from);
    if (at < 0) return;
    from = at + 1;
    let start = at;
    while (start > floor && isLocal(text.charCodeAt(start - 1))) start--;
    while (start < at && text.charCodeAt(start) === DOT) start++;
    if (start === at) continue;
    let end = at + 1;
    while (end < text.length && isDomain(text.charCodeAt(end))) end++;
    while (end > at + 1 && (text.charCodeAt(end - 1) === DOT || text.charCodeAt(end - 1) === DASH)) end--;
    const domain = text.slice(at + 1, end);
    const dot = domain.lastIndexOf(".");
    if (dot < 0) continue;
    const top = domain.slice(dot + 1);
    let alpha = top.length >= 2;
    for (let i = 0; alpha && i < top.length; i++) alpha = isAlpha(top.charCodeAt(i));
    if (dot === 0 || !alpha || domain.includes("..")) continue;
    found(start, end);
    floor = end;
    from = end;
  }
}

// `text` with every address replaced.
export function redact(text, replacement) {
  let out = "";
  let copied = 0;
  findEmails(text, (start, end) => {
    out += text.slice(copied, start) + replacement;
    copied = end;
  });
  return copied === 0 ? text : out + text.slice(copied);
}

// At most 64 bytes before the `@` and 255 after it (RFC 5321).
export const MAX_HELD = 64 + 1 + 255;

// Where streamed text may be cut now: before the trailing run of characters that could still be
// part of an address (at most MAX_HELD of them, all ASCII).
export function holdPoint(text) {
  let start = text.length;
  while (start > 0) {
    const c = text.charCodeAt(start - 1);
    if (!(isLocal(c) || c === AT)) break; // local covers every domain character
    start--;
  }
  return text.length - Math.min(text.length - start, MAX_HELD);
}

class Redact extends TextTransform {
  constructor(config) {
    super(config);
    this.replacement = config.get("replacement") ?? "[redacted]";
    if (this.replacement.includes("\r")) throw new Error("`replacement` must not contain CR");
  }
  get maxHeld() {
    return MAX_HELD;
  }
  get prefilter() {
    return "@";
  }
  step(channel, pending, last) {
    const cut = last ? pending.length : holdPoint(pending);
    return [cut, redact(pending.slice(0, cut), this.replacement)];
  }
}

export const text = exportTransform(Redact);
