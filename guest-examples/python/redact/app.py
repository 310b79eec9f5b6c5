"""`redact` in Python: replaces every e-mail address in event data with `[redacted]` (or the
`replacement` config value), including addresses a model streams one token per event. The same
scanner and hold rule, byte for byte, as the Rust `example:redact`
(guest-examples/redact/src/scan.rs and lib.rs), on the same streaming-text layer, so both give
identical output."""

import sluicegate_guest as sg
import sluicegate_text as st

_ALNUM = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
LOCAL = frozenset(_ALNUM + b"._%+-")
DOMAIN = frozenset(_ALNUM + b".-")
HEX = frozenset(b"0123456789abcdefABCDEF")
AT, DOT, DASH, BACKSLASH, U = 0x40, 0x2E, 0x2D, 0x5C, 0x75


def skip_json_escape(text, floor, start, at):
    """If the local part starting at `start` is preceded by an unescaped backslash, its first
    characters belong to a JSON escape (`\\n`, `\\u00e9`): returns where the address really starts."""
    k = start
    while k > floor and text[k - 1] == BACKSLASH:
        k -= 1
    if (start - k) % 2 == 0:
        return start
    hex4 = text[start + 1 : start + 5]
    skip = 5 if text[start] == U and len(hex4) == 4 and all(b in HEX for b in hex4) else 1
    return min(start + skip, at)


def find_emails(text):
    """Yields (start, end) of each e-mail address in `text` (bytes), in order, without overlaps."""
    floor = 0
    frm = 0
    n = len(text)
    while True:
        at = text.find(b"@", frm)
        if at < 0:
            return
        frm = at + 1
        start = at
        while start > floor and text[start - 1] in LOCAL:
            start -= 1
        start = skip_json_escape(text, floor, start, at)
        while start < at and text[start] == DOT:
            start += 1
        if start == at:
            continue
        end = at + 1
        while end < n and text[end] in DOMAIN:
            end += 1
        while end > at + 1 and text[end - 1] in (DOT, DASH):
            end -= 1
        domain = text[at + 1 : end]
        dot = domain.rfind(b".")
        if dot < 0:
            continue
        top = domain[dot + 1 :]
        if dot == 0 or len(top) < 2 or not top.isalpha() or b".." in domain:
            continue
        yield start, end
        floor = end
        frm = end


def redact(text, replacement):
    """`text` (bytes) with every address replaced."""
    parts = []
    copied = 0
    for start, end in find_emails(text):
        parts += (text[copied:start], replacement)
        copied = end
    if not parts:
        return text
    parts.append(text[copied:])
    return b"".join(parts)


# At most 64 bytes before the `@` and 255 after it (RFC 5321).
MAX_HELD = 64 + 1 + 255
_MAY_CONTINUE = LOCAL | {AT, BACKSLASH}  # LOCAL covers every DOMAIN byte


def hold_point(text):
    """Where streamed text may be cut now: before the trailing run of bytes that could still be
    part of an address (at most MAX_HELD of them)."""
    start = len(text)
    while start > 0 and text[start - 1] in _MAY_CONTINUE:
        start -= 1
    return len(text) - min(len(text) - start, MAX_HELD)


class RedactText(st.TextTransform):
    max_held = MAX_HELD

    def __init__(self, replacement):
        self.replacement = replacement

    def passes(self, text):
        return b"@" not in text

    def step(self, channel, pending, last):
        cut = len(pending) if last else hold_point(pending)
        return cut, redact(pending[:cut], self.replacement)


class Redact(sg.Interceptor):
    def __init__(self, config):
        replacement = config.get("replacement", "[redacted]")
        if "\r" in replacement:
            raise ValueError("`replacement` must not contain CR")
        self.text = RedactText(replacement.encode())

    def open(self, context):
        return st.TextStream()

    def process_batch(self, stream, batch, out):
        stream.process_batch(self.text, batch, out)

    def finish(self, stream, reason, out):
        stream.finish(self.text, out)


sg.export(Redact)
