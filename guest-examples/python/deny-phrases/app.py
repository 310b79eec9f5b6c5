"""`deny-phrases` in Python: ends a stream at the first of the configured phrases (config
`phrases`, comma-separated), matched across token deltas, ASCII letters case-insensitively. A
guard of the text world, rule for rule the Rust `example:deny-phrases`
(guest-examples/deny-phrases/src/lib.rs, which documents it): the host ends the stream the way
its format ends a filtered answer."""

import sluicegate_text as st

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class DenyPhrases(st.TextTransform):
    def __init__(self, config):
        phrases = (p.strip() for p in config.get("phrases", "").split(","))
        self.phrases = [p.translate(_ASCII_LOWER) for p in phrases if p]
        if not self.phrases:
            raise ValueError("`phrases` must list at least one phrase (comma-separated)")
        self.max_held = max(len(p.encode()) for p in self.phrases) - 1

    def find(self, lowered):
        found = [at for at in (lowered.find(p) for p in self.phrases) if at >= 0]
        return min(found) if found else -1

    def partial_tail(self, lowered):
        """How many characters at the end could be the start of a phrase."""
        for k in range(min(len(lowered), self.max_held), 0, -1):
            tail = lowered[-k:]
            if any(len(p) > k and p.startswith(tail) for p in self.phrases):
                return k
        return 0

    def step(self, channel, pending, last):
        lowered = pending.translate(_ASCII_LOWER)
        at = self.find(lowered)
        if at >= 0:
            return st.Stop(pending[:at], st.CONTENT_FILTER)
        cut = len(pending) if last else len(pending) - self.partial_tail(lowered)
        return cut, pending[:cut]


st.export_transform(DenyPhrases)
