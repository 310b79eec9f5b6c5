// `{{name}}`, a sluicegate interceptor. It drops `ping` events and masks a word in the data of
// every other event: `word` (config, default `report`) becomes `mask` (default `******`).
// Change `processBatch` to make it yours; the contract is in `wit/interceptor.wit`.

import { Interceptor, exportInterceptor, sameBytes, text, utf8 } from "./sluicegate-guest.js";

const PING = utf8("ping");

class Masker extends Interceptor {
  constructor(config) {
    super(config);
    this.word = config.get("word") ?? "report";
    this.mask = config.get("mask") ?? "******";
    if (this.word === "" || this.mask.includes("\r")) {
      throw new Error("`word` must not be empty and `mask` must not contain CR");
    }
  }
  processBatch(state, batch, out) {
    for (const event of batch) {
      if (event.isMessage && sameBytes(event.effectiveType, PING)) {
        out.drop();
        continue;
      }
      const data = event.data === undefined ? undefined : text(event.data);
      if (data !== undefined && data.includes(this.word)) out.replace({ data: data.split(this.word).join(this.mask) });
      else out.keep();
    }
  }
}

export const batch = exportInterceptor(Masker);
