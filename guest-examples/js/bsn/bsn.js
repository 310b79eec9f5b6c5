// `bsn` in JavaScript: masks Dutch citizen service numbers (BSN) in every text a stream carries,
// also when a model streams one digit group per token. A BSN is nine digits that pass the "eleven
// test" (9*d1 + 8*d2 + ... + 2*d8 - d9 is a multiple of 11): a check no regular expression can
// express, so `example:patterns` cannot do it. A text-world guard: the host finds and decodes the
// text; this file is only the rule. Each number masked is counted as `bsn` (the stream's
// enforcement record, `/metrics`). Config: `replacement` (default `[bsn]`).

import { TextTransform, count, exportTransform } from "../sdk/sluicegate-text.js";

const isDigit = (c) => c >= "0" && c <= "9";

/** True if the nine digits of `number` pass the eleven test (and are not all zero). */
export function elevenTest(number) {
  let total = -Number(number[8]);
  for (let i = 0; i < 8; i++) total += (9 - i) * Number(number[i]);
  return total % 11 === 0 && number !== "000000000";
}

class Bsn extends TextTransform {
  constructor(config) {
    super(config);
    this.replacement = config.get("replacement") ?? "[bsn]";
    if (this.replacement.includes("\r")) throw new Error("`replacement` must not contain CR");
  }
  get maxHeld() {
    return 9;
  }
  get prefilter() {
    return "0123456789";
  }
  // Whether the text released so far ends in a digit: then a run that starts the pending text
  // continues it, and is no BSN.
  newChannel() {
    return { afterDigit: false };
  }
  step(channel, pending, last) {
    // Hold a trailing run of at most nine digits that no digit precedes: it may still be a BSN.
    // Anything else cannot become one and goes out now.
    let run = 0;
    while (run < pending.length && isDigit(pending[pending.length - 1 - run])) run++;
    let cut = pending.length;
    if (!last && run <= 9 && (run < pending.length || !channel.afterDigit)) cut -= run;
    const released = pending.slice(0, cut);
    let out = "";
    let copied = 0;
    for (let i = 0; i < released.length; ) {
      if (!isDigit(released[i])) {
        i++;
        continue;
      }
      let j = i;
      while (j < released.length && isDigit(released[j])) j++;
      const bounded = (i > 0 || !channel.afterDigit) && (j < released.length || last);
      if (bounded && j - i === 9 && elevenTest(released.slice(i, j))) {
        out += released.slice(copied, i) + this.replacement;
        count("bsn");
        copied = j;
      }
      i = j;
    }
    out += released.slice(copied);
    if (released.length > 0) channel.afterDigit = isDigit(released[released.length - 1]);
    return [cut, out];
  }
}

export const text = exportTransform(Bsn);
