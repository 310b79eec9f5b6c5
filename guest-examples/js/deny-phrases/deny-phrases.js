// `deny-phrases` in JavaScript: ends a stream at the first of the configured phrases (config
// `phrases`, comma-separated), matched across token deltas, ASCII letters case-insensitively. A
// guard of the text world, rule for rule the Rust `example:deny-phrases`
// (guest-examples/deny-phrases/src/lib.rs, which documents it): the host ends the stream the way
// its format ends a filtered answer.

import { CONTENT_FILTER, Stop, TextTransform, exportTransform, utf8Length } from "../sdk/sluicegate-text.js";

// Lower-cases ASCII letters only, as Rust's `eq_ignore_ascii_case` compares.
const asciiLower = (s) => s.replace(/[A-Z]/g, (c) => String.fromCharCode(c.charCodeAt(0) + 32));

class DenyPhrases extends TextTransform {
  constructor(config) {
    super(config);
    this.phrases = (config.get("phrases") ?? "")
      .split(",")
      .map((p) => p.trim())
      .filter((p) => p !== "")
      .map(asciiLower);
    if (this.phrases.length === 0) throw new Error("`phrases` must list at least one phrase (comma-separated)");
    this.held = Math.max(...this.phrases.map(utf8Length)) - 1;
  }
  get maxHeld() {
    return this.held;
  }
  // How many characters at the end of `lowered` could be the start of a phrase.
  partialTail(lowered) {
    for (let k = Math.min(lowered.length, this.held); k > 0; k--) {
      const tail = lowered.slice(lowered.length - k);
      if (this.phrases.some((p) => p.length > k && p.startsWith(tail))) return k;
    }
    return 0;
  }
  step(channel, pending, last) {
    const lowered = asciiLower(pending);
    let at = -1;
    for (const p of this.phrases) {
      const found = lowered.indexOf(p);
      if (found >= 0 && (at < 0 || found < at)) at = found;
    }
    if (at >= 0) return new Stop(pending.slice(0, at), CONTENT_FILTER);
    const cut = last ? pending.length : pending.length - this.partialTail(lowered);
    return [cut, pending.slice(0, cut)];
  }
}

export const text = exportTransform(DenyPhrases);
