"""`redact` in Python: replaces every e-mail address in the text a stream carries with
`[redacted]` (or the `replacement` config value), including addresses a model streams one token
per event. A guard of the text world: the host finds and decodes the text; this file is only the
scanner and the hold rule of the Rust `example:redact` (guest-examples/redact/src/scan.rs), rule
for rule, so both give identical output."""

import sluicegate_text as st

_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
LOCAL = frozenset(_ALNUM + "._%+-")
DOMAIN = frozenset(_ALNUM + ".-")
ALPHA = frozenset(_ALNUM[:52])


def find_emails(text):
    """Yields (start, end) of each e-mail address in `text`, in order, without overlaps."""
    floor = 0
    frm = 0
    n = len(text)
    while True:
        at = text.find("@", frm)
        if at < 0:
            return
        frm = at + 1
        start = at
        while start > floor and text[start - 1] in LOCAL:
            start -= 1
        while start < at and text[start] == ".":
            start += 1
        if start == at:
            continue
        end = at + 1
        while end < n and text[end] in DOMAIN:
            end += 1
        while end > at + 1 and text[end - 1] in ".-":
            end -= 1
        domain = text[at + 1 : end]
        dot = domain.rfind(".")
        if dot < 0:
            continue
        top = domain[dot + 1 :]
        if dot == 0 or len(top) < 2 or not all(c in ALPHA for c in top) or ".." in domain:
            continue
        yield start, end
        floor = end
        frm = end


def redact(text, replacement):
    """`text` with every address replaced."""
    parts = []
    copied = 0
    for start, end in find_emails(text):
        parts += (text[copied:start], replacement)
        copied = end
    if not parts:
        return text
    parts.append(text[copied:])
    return "".join(parts)


# At most 64 bytes before the `@` and 255 after it (RFC 5321).
MAX_HELD = 64 + 1 + 255
_MAY_CONTINUE = LOCAL | {"@"}  # LOCAL covers every DOMAIN character


def hold_point(text):
    """Where streamed text may be cut now: before the trailing run of characters that could still
    be part of an address (at most MAX_HELD of them, all ASCII)."""
    start = len(text)
    while start > 0 and text[start - 1] in _MAY_CONTINUE:
        start -= 1
    return len(text) - min(len(text) - start, MAX_HELD)


class Redact(st.TextTransform):
    max_held = MAX_HELD
    prefilter = "@"

    def __init__(self, config):
        self.replacement = config.get("replacement", "[redacted]")
        if "\r" in self.replacement:
            raise ValueError("`replacement` must not contain CR")

    def step(self, channel, pending, last):
        cut = len(pending) if last else hold_point(pending)
        return cut, redact(pending[:cut], self.replacement)


st.export_transform(Redact)
