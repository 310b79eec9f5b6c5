"""`bsn` in Python: masks Dutch citizen service numbers (BSN) in every text a stream carries,
also when a model streams one digit group per token. A BSN is nine digits that pass the "eleven
test" (9*d1 + 8*d2 + ... + 2*d8 - d9 is a multiple of 11): a check no regular expression can
express, so `example:patterns` cannot do it. A text-world guard: the host finds and decodes the
text; this file is only the rule. Each number masked is counted as `bsn` (the stream's enforcement
record, `/metrics`). Config: `replacement` (default `[bsn]`)."""

import sluicegate_text as st

DIGITS = "0123456789"


def eleven_test(number):
    """True if the nine digits of `number` pass the eleven test (and are not all zero)."""
    total = sum((9 - i) * int(d) for i, d in enumerate(number[:8])) - int(number[8])
    return total % 11 == 0 and number != "000000000"


class Bsn(st.TextTransform):
    max_held = 9
    prefilter = DIGITS

    def __init__(self, config):
        self.replacement = config.get("replacement", "[bsn]")
        if "\r" in self.replacement:
            raise ValueError("`replacement` must not contain CR")

    def new_channel(self):
        # Whether the text released so far ends in a digit: then a run that starts the pending
        # text continues it, and is no BSN.
        return {"after_digit": False}

    def step(self, channel, pending, last):
        # Hold a trailing run of at most nine digits that no digit precedes: it may still be a
        # BSN. Anything else cannot become one and goes out now.
        run = len(pending) - len(pending.rstrip(DIGITS))
        cut = len(pending)
        if not last and run <= 9 and (run < len(pending) or not channel["after_digit"]):
            cut -= run
        released = pending[:cut]
        out, copied, i, n = [], 0, 0, len(released)
        while i < n:
            if released[i] not in DIGITS:
                i += 1
                continue
            j = i
            while j < n and released[j] in DIGITS:
                j += 1
            bounded = (i > 0 or not channel["after_digit"]) and (j < n or last)
            if bounded and j - i == 9 and eleven_test(released[i:j]):
                out.append(released[copied:i])
                out.append(self.replacement)
                st.count("bsn")
                copied = j
            i = j
        out.append(released[copied:])
        if released:
            channel["after_digit"] = released[-1] in DIGITS
        return cut, "".join(out)


st.export_transform(Bsn)
