"""`{{name}}`, a guard over the text a model streams (the text world). It masks a word (`word`,
default `report`) as `mask` (default `******`) in every text the host finds: answers, tool-call
arguments, reasoning, MCP results, in every format, also when the word is split over deltas.
Change `step` to make it yours; `sluicegate check` tries it on random splits."""

import sluicegate_text as st


class Masker(st.TextTransform):
    def __init__(self, config):
        self.word = config.get("word", "report")
        self.mask = config.get("mask", "******")
        if not self.word:
            raise ValueError("`word` must not be empty")
        self.max_held = len(self.word.encode()) - 1

    def step(self, channel, pending, last):
        # Hold back the longest end of the text that could still grow into the word (never part
        # of a whole word already there), release the rest with every word masked.
        found = pending.rfind(self.word)
        free = len(pending) - (found + len(self.word) if found >= 0 else 0)
        held = 0
        if not last:
            held = next((n for n in range(min(len(self.word) - 1, free), 0, -1) if pending.endswith(self.word[:n])), 0)
        cut = len(pending) - held
        return cut, pending[:cut].replace(self.word, self.mask)


st.export_transform(Masker)
