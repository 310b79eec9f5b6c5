"""`drop` in Python: drops events whose type is listed in the `types` config key
(comma-separated, default `ping`). An unnamed event has the type `message`. Comments and
id/retry-only entries are never dropped. Behaves exactly as the Rust `example:drop`."""

import sluicegate_guest as sg


class Drop(sg.Interceptor):
    def __init__(self, config):
        listed = config.get("types", "ping").split(",")
        self.types = {t.strip().encode() for t in listed if t.strip()}

    def process_batch(self, state, batch, out):
        for event in batch:
            if event.is_message and event.effective_type in self.types:
                out.drop()
            else:
                out.keep()


sg.export(Drop)
