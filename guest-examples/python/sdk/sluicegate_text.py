"""Guardrails over streamed text, in Python: the streaming-text layer of the Rust SDK
(`sluicegate_guest::text`, guest-examples/sdk/src/text.rs), ported rule for rule so that an
interceptor built on it gives byte for byte the output of its Rust twin.

A model's answer arrives one token per event; `TextStream` finds the text of OpenAI Chat
(`choices[].delta.content`), OpenAI Responses (`response.output_text.delta`) and Anthropic
(`content_block_delta` with a `text_delta`) events by their content, feeds each channel's text to
a `TextTransform` as it arrives, and rewrites each delta with what the transform releases. The
transform may hold back a bounded tail (what may still become a match); held text goes out in an
event inserted before the channel's closing event, or in `finish`. Events that repeat the whole
text (`response.output_text.done` and the like) get the transform applied to that text. Every
other part of an event goes through the transform as a text of its own. See the Rust module's
documentation for the full rules.

Texts are UTF-8 `bytes` throughout, as the batch holds them, so offsets agree with Rust's.
"""

import json
import re

# --- A JSON scanner that records where each value lies (guest-examples/sdk/src/json.rs) ---

MAX_DEPTH = 64
OBJECT, ARRAY, STRING, NUMBER, LITERAL = range(5)
_WS = re.compile(rb"[ \t\n\r]*")
_STRING_BODY = re.compile(rb'(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"')
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_LITERALS = {0x74: b"true", 0x66: b"false", 0x6E: b"null"}
_SURROGATE = re.compile("[\ud800-\udfff]")


class Doc:
    """A parsed document: nodes [kind, start, end, next] in text order (an object's children
    alternate key, value). For a string, start..end is the text between the quotes."""

    def __init__(self):
        self.nodes = []

    def parse(self, text):
        """Parses `text` (bytes: one JSON value, whitespace around it allowed); False if it is
        not JSON."""
        self.nodes = []
        ok = self._parse(text)
        if not ok:
            self.nodes = []
        return ok

    def _push(self, kind, start, end):
        self.nodes.append([kind, start, end, len(self.nodes) + 1])
        return len(self.nodes) - 1

    def _string(self, b, i):
        m = _STRING_BODY.match(b, i)
        if m is None:
            return None
        end = m.end() - 1
        self._push(STRING, i, end)
        return end + 1

    def _key(self, b, i):
        if i >= len(b) or b[i] != 0x22:
            return None
        after = self._string(b, i + 1)
        if after is None:
            return None
        colon = _WS.match(b, after).end()
        if colon >= len(b) or b[colon] != 0x3A:
            return None
        return _WS.match(b, colon + 1).end()

    def _close(self, open_, bracket):
        at = open_.pop()
        self.nodes[at][2] = bracket + 1
        self.nodes[at][3] = len(self.nodes)

    def _parse(self, b):
        n = len(b)
        open_ = []
        i = _WS.match(b, 0).end()
        want_value = True
        while True:
            if want_value:
                if i >= n:
                    return False
                c = b[i]
                if c == 0x7B or c == 0x5B:
                    if len(open_) == MAX_DEPTH:
                        return False
                    at = self._push(OBJECT if c == 0x7B else ARRAY, i, i)
                    open_.append(at)
                    i = _WS.match(b, i + 1).end()
                    close = 0x7D if c == 0x7B else 0x5D
                    if i < n and b[i] == close:
                        self._close(open_, i)
                        i += 1
                        want_value = False
                    elif c == 0x7B:
                        i = self._key(b, i)
                        if i is None:
                            return False
                    continue
                if c == 0x22:
                    i = self._string(b, i + 1)
                    if i is None:
                        return False
                elif c in _LITERALS:
                    word = _LITERALS[c]
                    if not b.startswith(word, i):
                        return False
                    self._push(LITERAL, i, i + len(word))
                    i += len(word)
                else:
                    m = _NUMBER.match(b, i)
                    if m is None:
                        return False
                    self._push(NUMBER, i, m.end())
                    i = m.end()
                want_value = False
                continue
            i = _WS.match(b, i).end()
            if not open_:
                return i == n
            in_object = self.nodes[open_[-1]][0] == OBJECT
            c = b[i] if i < n else None
            if c == 0x2C:
                i = _WS.match(b, i + 1).end()
                if in_object:
                    i = self._key(b, i)
                    if i is None:
                        return False
                want_value = True
            elif (c == 0x7D and in_object) or (c == 0x5D and not in_object):
                self._close(open_, i)
                i += 1
            else:
                return False

    def kind(self, at):
        return None if at is None else self.nodes[at][0]

    def get(self, text, at, key):
        """The value of `key` (str) in object `at` (the last one if the key repeats), or None."""
        if at is None or self.nodes[at][0] != OBJECT:
            return None
        found = None
        child = at + 1
        end = self.nodes[at][3]
        while child < end:
            k = self.nodes[child]
            if string_equals(text[k[1] : k[2]], key):
                found = child + 1
            child = self.nodes[child + 1][3]
        return found

    def items(self, at):
        if at is None or self.nodes[at][0] != ARRAY:
            return
        child = at + 1
        end = self.nodes[at][3]
        while child < end:
            yield child
            child = self.nodes[child][3]

    def raw_str(self, text, at):
        if at is None or self.nodes[at][0] != STRING:
            return None
        return text[self.nodes[at][1] : self.nodes[at][2]]

    def index(self, text, at):
        """The value of node `at` if it is an integer from 0 to 2^53 without fraction or exponent."""
        if at is None or self.nodes[at][0] != NUMBER:
            return None
        digits = text[self.nodes[at][1] : self.nodes[at][2]]
        if len(digits) > 16 or not digits.isdigit():
            return None
        value = int(digits)
        return value if value <= 1 << 53 else None


def string_equals(raw, plain):
    if b"\\" not in raw:
        return raw == plain.encode()
    return decode(raw) == plain.encode()


def decode(raw):
    """The decoded UTF-8 text of a raw JSON string (as `Doc` accepted it); an unpaired surrogate
    escape becomes U+FFFD."""
    if b"\\" not in raw:
        return bytes(raw)
    text = json.loads(b'"' + raw + b'"')
    return _SURROGATE.sub("\ufffd", text).encode()


def encode(text):
    """`text` (UTF-8 bytes) as the inside of a JSON string, escaped as serde_json,
    `json.dumps(ensure_ascii=False)` and `JSON.stringify` escape it."""
    return json.dumps(text.decode(), ensure_ascii=False)[1:-1].encode()


# --- The layer ---

CONTENT_FILTER, LENGTH = "content_filter", "length"
_NAMES = {
    CONTENT_FILTER: ("content_filter", "refusal", "content_filter"),
    LENGTH: ("length", "max_tokens", "max_output_tokens"),
}
UNKNOWN, CHAT, RESPONSES, ANTHROPIC = "unknown", "chat", "responses", "anthropic"


def _may_have_text(data):
    """False when `data` cannot be a text-bearing event (every one has a "choices" or "type" key,
    which only a backslash escape could hide), so the parse can be skipped; the result is the same."""
    return b'"type"' in data or b'"choices"' in data or b"\\" in data


class Stop:
    """What `TextTransform.step` returns to end the stream: `out` (bytes) is released first."""

    __slots__ = ("out", "reason")

    def __init__(self, out, reason=CONTENT_FILTER):
        self.out = out
        self.reason = reason


class TextTransform:
    """A streaming transform over the text of one channel. For any split of a text into pieces,
    feeding the pieces and then closing must release exactly what one call with the whole text
    and `last=True` releases; and the held text must never exceed `max_held` bytes."""

    max_held = 0

    def new_channel(self):
        """State kept per channel between calls (any object)."""
        return None

    def passes(self, text):
        """True if `text`, taken whole, certainly goes through unchanged (for `redact`: it has no
        `@`): events outside the streamed text are then kept as they are. False is always correct."""
        return False

    def step(self, channel, pending, last):
        """Looks at `pending` (bytes: the held text followed by the new text) and returns
        `(n, out)`: the first `n` bytes are released, transformed into `out`; the rest is held.
        With `last` everything must be released. Or returns `Stop(out)` to end the stream."""
        raise NotImplementedError

    def whole(self, text):
        """A text seen whole rather than streamed: an event that repeats a channel's whole text,
        or the raw bytes of an event (or of a delta's other fields) outside the streamed text.
        Returns what `step` returns. The default treats it as a channel of its own that closes at
        once, which is what a filter wants; a transform that meters the streamed text (a token
        budget) passes it on instead, so that nothing is counted twice."""
        return self.step(self.new_channel(), text, True)


def _outcome(result):
    """(output, stop reason or None) of what `step` or `whole` returned."""
    if isinstance(result, Stop):
        return result.out, result.reason
    return result[1], None


def apply_whole(transform, text):
    """(output, stop reason or None) of `transform` over a whole text."""
    return _outcome(transform.whole(text))


def _step_channel(t, channel, last):
    """Feeds a channel's pending text to the transform: (released text, stop reason or None);
    what it holds stays pending. A transform that breaks its contract (holds more than it
    declared, or anything when `last`) has its whole pending text released through it as a whole
    text instead, so nothing is held without bound."""
    result = t.step(channel.state, channel.pending, last)
    if isinstance(result, Stop):
        channel.pending = b""
        return result.out, result.reason
    n, released = result
    if n == len(channel.pending) or (not last and len(channel.pending) - n <= t.max_held):
        channel.pending = channel.pending[n:]
        return released, None
    # Streamed text still: through `step`, as a channel that closes at once.
    result = t.step(t.new_channel(), channel.pending, True)
    channel.pending = b""
    return _outcome(result)


class _Channel:
    __slots__ = ("key", "pending", "state", "template", "closed")

    def __init__(self, key, state):
        self.key = key
        self.pending = b""
        self.state = state
        self.template = (None, b"", b"")  # event type, data before and after the text
        self.closed = False


def _covers(close, key):
    if close == "all":
        return True
    if close[0] == "key":
        return close[1] == key
    return key[0] == "item" and key[1] == close[1]


class TextStream:
    """The per-stream state of the layer: create one per stream in `open`, and call
    `process_batch` and `finish` from the interceptor's own."""

    def __init__(self):
        self.channels = []
        self.format = UNKNOWN
        self.chat_meta = None
        self.response_template = None
        self.sequence = 0
        self.open_blocks = []
        self.text_deltas = 0
        self.stopped = False
        self.held_events = 0
        self.max_held_bytes = 0
        self.doc = Doc()

    def held_bytes(self):
        return sum(len(c.pending) for c in self.channels)

    def process_batch(self, transform, batch, out):
        for event in batch:
            if self.stopped:
                return
            self._process_event(transform, event, out)

    def finish(self, transform, out):
        for at in range(len(self.channels)):
            if self.stopped:
                return
            reason = self._flush(transform, at, out)
            if reason is not None:
                self._write_ending(reason, out)

    def _channel(self, transform, key):
        for at, channel in enumerate(self.channels):
            if channel.key == key:
                channel.closed = False
                return at
        self.channels.append(_Channel(key, transform.new_channel()))
        return len(self.channels) - 1

    def _process_event(self, t, event, out):
        data = event.data
        if data is None:
            out.keep()
            return
        self.spans, self.closes = [], []
        if data == b"[DONE]":
            self.format = CHAT
            self.closes.append("all")
        elif _may_have_text(data) and self.doc.parse(data):
            self._classify(t, data)

        if not self.spans and not self.closes and t.passes(data):
            out.keep()
            return

        stop = None
        for close in self.closes:
            for at, channel in enumerate(self.channels):
                in_event = any(s[2] == "delta" and s[3] == at for s in self.spans)
                if not in_event and _covers(close, channel.key) and stop is None:
                    stop = self._flush(t, at, out)
        if stop is not None:
            out.drop()
            self._write_ending(stop, out)
            return

        new, stop = self._rewrite(t, data)
        self._save_templates(event, new)
        for channel in self.channels:
            if any(_covers(close, channel.key) for close in self.closes):
                channel.closed = True
                channel.state = t.new_channel()
        if stop is not None:
            reason, in_delta = stop
            if in_delta:
                out.replace(data=new)
            else:
                out.drop()
            self._write_ending(reason, out)
        elif new != data:
            out.replace(data=new)
        else:
            out.keep()

    def _classify(self, t, data):
        doc = self.doc
        root = 0
        if doc.kind(root) != OBJECT:
            return
        choices = doc.get(data, root, "choices")
        if doc.kind(choices) == ARRAY:
            self.format = CHAT
            if self.chat_meta is None:
                meta = b""
                for key in ("id", "object", "created", "model"):
                    value = doc.get(data, root, key)
                    if value is not None:
                        kind, start, end, _ = doc.nodes[value]
                        raw = data[start - 1 : end + 1] if kind == STRING else data[start:end]
                        meta += b'"' + key.encode() + b'":' + raw + b","
                self.chat_meta = meta
            for position, choice in enumerate(doc.items(choices)):
                if doc.kind(choice) != OBJECT:
                    continue
                index = doc.index(data, doc.get(data, choice, "index"))
                key = ("index", position if index is None else index)
                closes = doc.kind(doc.get(data, choice, "finish_reason")) == STRING
                content = doc.get(data, doc.get(data, choice, "delta"), "content")
                if doc.kind(content) == STRING:
                    node = doc.nodes[content]
                    self.spans.append((node[1], node[2], "delta", self._channel(t, key), closes))
                if closes:
                    self.closes.append(("key", key))
            return
        kind = doc.raw_str(data, doc.get(data, root, "type"))
        if kind is None:
            return
        if kind.startswith(b"response."):
            self.format = RESPONSES
            n = doc.index(data, doc.get(data, root, "sequence_number"))
            if n is not None:
                self.sequence = n
        elif kind.startswith(b"message_") or kind.startswith(b"content_block_") or kind == b"ping":
            self.format = ANTHROPIC
        index = doc.index(data, doc.get(data, root, "index")) or 0

        def item_key():
            item = doc.raw_str(data, doc.get(data, root, "item_id")) or b""
            return ("item", item, doc.index(data, doc.get(data, root, "content_index")) or 0)

        if kind == b"content_block_delta":
            delta = doc.get(data, root, "delta")
            if doc.raw_str(data, doc.get(data, delta, "type")) == b"text_delta":
                text = doc.get(data, delta, "text")
                if doc.kind(text) == STRING:
                    self.text_deltas += 1
                    node = doc.nodes[text]
                    self.spans.append((node[1], node[2], "delta", self._channel(t, ("index", index)), False))
        elif kind == b"content_block_start":
            if index not in self.open_blocks:
                self.open_blocks.append(index)
        elif kind == b"content_block_stop":
            self.open_blocks = [b for b in self.open_blocks if b != index]
            self.closes.append(("key", ("index", index)))
        elif kind in (b"message_delta", b"message_stop"):
            self.closes.append("all")
        elif kind == b"response.output_text.delta":
            delta = doc.get(data, root, "delta")
            if doc.kind(delta) == STRING:
                node = doc.nodes[delta]
                self.spans.append((node[1], node[2], "delta", self._channel(t, item_key()), False))
        elif kind == b"response.output_text.done":
            self.closes.append(("key", item_key()))
            self._whole_span(doc.get(data, root, "text"))
        elif kind == b"response.content_part.done":
            self.closes.append(("key", item_key()))
            self._whole_span(doc.get(data, doc.get(data, root, "part"), "text"))
        elif kind == b"response.output_item.done":
            item = doc.get(data, root, "item")
            self.closes.append(("item", doc.raw_str(data, doc.get(data, item, "id")) or b""))
            if item is not None:
                self._whole_texts(data, item)
        elif kind in (b"response.completed", b"response.incomplete", b"response.failed"):
            self.closes.append("all")
            response = doc.get(data, root, "response")
            for item in doc.items(doc.get(data, response, "output")):
                self._whole_texts(data, item)
        elif kind == b"response.created":
            response = doc.get(data, root, "response")
            if doc.kind(response) == OBJECT:
                base, end = doc.nodes[response][1], doc.nodes[response][2]

                def span(key):
                    value = doc.get(data, response, key)
                    if value is None:
                        return None
                    kind_, start, stop, _ = doc.nodes[value]
                    quoted = 1 if kind_ == STRING else 0
                    return (start - quoted - base, stop + quoted - base)

                self.response_template = (data[base:end], span("status"), span("incomplete_details"))

    def _whole_texts(self, data, item):
        for part in self.doc.items(self.doc.get(data, item, "content")):
            self._whole_span(self.doc.get(data, part, "text"))

    def _whole_span(self, at):
        if self.doc.kind(at) == STRING:
            node = self.doc.nodes[at]
            self.spans.append((node[1], node[2], "whole", None, False))

    def _rewrite(self, t, data):
        """The event's new data, and (reason, in a delta) if the transform stopped the stream."""
        parts = []
        self.placed = []
        length = 0
        stop = None
        copied = 0
        for start, end, role, at, last in self.spans:
            gap, reason = apply_whole(t, data[copied:start])
            if stop is None and reason is not None:
                stop = (reason, False)
            parts.append(gap)
            length += len(gap)
            raw = data[start:end]
            decoded = decode(raw)
            if role == "whole":
                released, reason = apply_whole(t, decoded)
                if stop is None and reason is not None:
                    stop = (reason, False)
                unchanged = released == decoded
            else:
                channel = self.channels[at]
                was_empty = not channel.pending
                channel.pending += decoded
                released, reason = _step_channel(t, channel, last)
                if stop is None and reason is not None:
                    stop = (reason, True)
                held = len(channel.pending)
                if held:
                    self.held_events += 1
                    self.max_held_bytes = max(self.max_held_bytes, held)
                unchanged = was_empty and held == 0 and released == decoded
            piece = raw if unchanged else encode(released)
            if role == "delta":
                self.placed.append((length, length + len(piece), at))
            parts.append(piece)
            length += len(piece)
            copied = end
        gap, reason = apply_whole(t, data[copied:])
        if stop is None and reason is not None:
            stop = (reason, False)
        parts.append(gap)
        return b"".join(parts), stop

    def _save_templates(self, event, new):
        for start, _, at in self.placed:
            channel = self.channels[at]
            if not channel.pending:
                continue
            before, after = [], []
            copied = 0
            for s, e, _ in self.placed:
                (before if s <= start else after).append(new[copied:s])
                copied = e
            after.append(new[copied:])
            channel.template = (event.event_type, b"".join(before), b"".join(after))

    def _flush(self, t, at, out):
        """Releases what channel `at` holds (it closes) in an inserted event; the stop reason,
        if the transform stopped the stream."""
        channel = self.channels[at]
        channel.closed = True
        if not channel.pending:
            channel.state = t.new_channel()
            return None
        released, reason = _step_channel(t, channel, True)
        channel.state = t.new_channel()
        if released:
            event_type, before, after = channel.template
            out.insert(data=before + encode(released) + after, event_type=event_type)
        return reason

    def _write_ending(self, reason, out):
        self.stopped = True
        plain, anthropic, responses = _NAMES[reason]
        if self.format == CHAT:
            meta = self.chat_meta or b""
            indexes = [c.key[1] for c in self.channels if c.key[0] == "index" and not c.closed]
            if not indexes and not any(c.key[0] == "index" for c in self.channels):
                indexes = [0]
            for index in indexes:
                out.insert(
                    data=b"{"
                    + meta
                    + b'"choices":[{"index":%d,"delta":{},"finish_reason":"%s"}]}' % (index, plain.encode())
                )
            out.insert(data=b"[DONE]")
        elif self.format == ANTHROPIC:
            for index in self.open_blocks:
                out.insert(
                    data=b'{"type":"content_block_stop","index":%d}' % index, event_type=b"content_block_stop"
                )
            self.open_blocks = []
            out.insert(
                data=b'{"type":"message_delta","delta":{"stop_reason":"%s","stop_sequence":null},'
                b'"usage":{"output_tokens":%d}}' % (anthropic.encode(), self.text_deltas),
                event_type=b"message_delta",
            )
            out.insert(data=b'{"type":"message_stop"}', event_type=b"message_stop")
        elif self.format == RESPONSES:
            details = b'{"reason":"%s"}' % responses.encode()
            if self.response_template is not None:
                template, status, incomplete = self.response_template
                edits = sorted(
                    [(s, b'"incomplete"') for s in [status] if s] + [(s, details) for s in [incomplete] if s]
                )
                text, copied = b"", 0
                for (start, end), value in edits:
                    text += template[copied:start] + value
                    copied = end
                response = text + template[copied:]
            else:
                response = (
                    b'{"object":"response","status":"incomplete","incomplete_details":' + details + b',"output":[]}'
                )
            out.insert(
                data=b'{"type":"response.incomplete","sequence_number":%d,"response":' % (self.sequence + 1)
                + response
                + b"}",
                event_type=b"response.incomplete",
            )
        else:
            out.insert(
                data=b'{"error":{"type":"%s","message":"the stream was ended by an interceptor"}}' % plain.encode(),
                event_type=b"error",
            )
        out.end()
