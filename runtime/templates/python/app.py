"""`{{name}}`, a sluicegate interceptor. It drops `ping` events and masks a word in the data of
every other event: `word` (config, default `report`) becomes `mask` (default `******`).
Change `process_batch` to make it yours; the contract is in `wit/interceptor.wit`."""

import sluicegate_guest as sg


class Masker(sg.Interceptor):
    def __init__(self, config):
        self.word = config.get("word", "report").encode()
        self.mask = config.get("mask", "******").encode()
        if not self.word or b"\r" in self.mask:
            raise ValueError("`word` must not be empty and `mask` must not contain CR")

    def process_batch(self, state, batch, out):
        for event in batch:
            if event.is_message and event.effective_type == b"ping":
                out.drop()
            elif event.data is not None and self.word in event.data:
                out.replace(data=event.data.replace(self.word, self.mask))
            else:
                out.keep()


sg.export(Masker)
