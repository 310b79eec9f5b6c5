// `{{name}}`, a guard over the text a model streams (the text world). It masks a word (`word`,
// default `report`) as `mask` (default `******`) in every text the host finds: answers, tool-call
// arguments, reasoning, MCP results, in every format, also when the word is split over deltas.
// Change `step` to make it yours; `sluicegate check` tries it on random splits.

import { TextTransform, exportTransform, utf8Length } from "./sluicegate-text.js";

class Masker extends TextTransform {
  constructor(config) {
    super(config);
    this.word = config.get("word") ?? "report";
    this.mask = config.get("mask") ?? "******";
    if (this.word === "") throw new Error("`word` must not be empty");
  }
  get maxHeld() {
    return utf8Length(this.word) - 1;
  }
  step(channel, pending, last) {
    // Hold back the longest end of the text that could still grow into the word (never part of
    // a whole word already there), release the rest with every word masked.
    const found = pending.lastIndexOf(this.word);
    const free = pending.length - (found >= 0 ? found + this.word.length : 0);
    let held = 0;
    for (let n = Math.min(this.word.length - 1, free); !last && n > 0; n--) {
      if (pending.endsWith(this.word.slice(0, n))) {
        held = n;
        break;
      }
    }
    const cut = pending.length - held;
    return [cut, pending.slice(0, cut).split(this.word).join(this.mask)];
  }
}

export const text = exportTransform(Masker);
