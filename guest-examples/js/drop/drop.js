// `drop` in JavaScript: drops events whose type is listed in the `types` config key
// (comma-separated, default `ping`). An unnamed event has the type `message`. Comments and
// id/retry-only entries are never dropped. Behaves exactly as the Rust `example:drop`.

import { Interceptor, exportInterceptor, sameBytes, utf8 } from "../sdk/sluicegate-guest.js";

class Drop extends Interceptor {
  constructor(config) {
    super(config);
    const listed = (config.get("types") ?? "ping").split(",").map((t) => t.trim());
    this.types = listed.filter((t) => t.length > 0).map(utf8);
  }
  processBatch(state, batch, out) {
    for (const event of batch) {
      const type = event.effectiveType;
      if (event.isMessage && this.types.some((t) => sameBytes(t, type))) out.drop();
      else out.keep();
    }
  }
}

export const batch = exportInterceptor(Drop);
