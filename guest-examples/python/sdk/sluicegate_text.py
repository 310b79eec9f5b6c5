"""Guards over the text a model streams, in Python: bindings to the `text-interceptor` world.

The host owns the wire formats. Its streaming-text engine finds the text in every event (OpenAI
Chat and Responses, Anthropic, Gemini, Ollama, MCP messages, JSON bodies), decodes it, and hands
the guard, once per batch, the pending text of every channel that changed and every whole text.
Nothing here parses a format: a guard sees `str` and answers with small verdicts.

Two ways to write one, as in Rust:

- a `TextTransform` (`step` over one channel's pending text, optionally `whole`), exported with
  `export_transform(cls)`: the SDK keeps one state per channel;
- a `TextGuard` (`process` over a batch's items, with per-stream state), exported with
  `export_guard(cls)`.

Build with componentize-py for the `text-interceptor` world, with this directory on the path
(`text.py` is the glue componentize-py looks for).
"""

def count(name, n=1):
    """Adds `n` to this guard's count `name` for the stream being answered (WIT 0.1.3): it shows
    in the stream's enforcement record and in `/metrics` (`sluicegate_interceptor_counted_total`).
    Name what was found ("bsn"), never the text that was found."""
    from wit_world.imports import host

    host.count(name, n)


CONTENT_FILTER = "content-filter"
LENGTH = "length"


class Stop:
    """What `step` or `whole` returns to end the stream: `text` goes out first; `reason` is
    CONTENT_FILTER (a filter refused the rest) or LENGTH (a budget ran out)."""

    __slots__ = ("text", "reason")

    def __init__(self, text, reason=CONTENT_FILTER):
        self.text = text
        self.reason = reason


class Item:
    """One text to judge: `channel` (0 for a whole text), `kind` ("content", "tool-arguments",
    "reasoning", "refusal" or "other"), `text` (str, decoded), `last` (all of it must be
    released), `pieces` (deltas with text that brought it)."""

    __slots__ = ("channel", "kind", "text", "last", "pieces")

    def __init__(self, channel, kind, text, last, pieces):
        self.channel, self.kind, self.text, self.last, self.pieces = channel, kind, text, last, pieces

    @property
    def is_whole(self):
        return self.channel == 0


class Refusal:
    """A request refused before it is sent on (`TextGuard.admit`, request chains only)."""

    def __init__(self, status, error_type, message, retry_after_seconds=0):
        self.status, self.error_type, self.message = status, error_type, message
        self.retry_after_seconds = retry_after_seconds


class TextTransform:
    """A streaming transform over one channel's text, built once per instance from the
    configuration (a dict of strings).

    `step(channel, pending, last)` gets the channel's state (from `new_channel`), its pending text
    (what it held followed by what arrived) and whether the channel closes; it returns
    `(released, text)`, the number of characters of `pending` released and the text that goes out
    in their place (all of them when `last`; at most `max_held` characters' worth of bytes stay),
    or a `Stop`. `whole(text)` answers a text seen whole; by default, a channel that closes at
    once. `prefilter`: characters without which a whole text passes unchanged."""

    max_held = 0
    prefilter = ""

    def __init__(self, config):
        self.config = config

    def new_channel(self):
        return None

    def step(self, channel, pending, last):
        raise NotImplementedError

    def whole(self, text):
        return self.step(self.new_channel(), text, True)


class TextGuard:
    """A guard that sees a batch's items together and keeps per-stream state.

    `open(context)` returns the stream's state; `admit(state)` may return a `Refusal` for a
    request; `process(state, items)` returns one answer per item, each `(released_characters,
    text)` or a `Stop`; `finish(state, reason, output_tokens)` ends the stream."""

    max_held = 0
    prefilter = ""

    def __init__(self, config):
        self.config = config

    def open(self, context):
        return None

    def admit(self, state):
        return None

    def process(self, state, items):
        raise NotImplementedError

    def finish(self, state, reason, output_tokens):
        pass


class _PerChannel(TextGuard):
    """A `TextTransform` as a guard: one transform state per channel."""

    def __init__(self, transform):
        self.transform = transform
        self.max_held = transform.max_held
        self.prefilter = transform.prefilter

    def open(self, context):
        return {}

    def process(self, channels, items):
        transform = self.transform
        answers = []
        for item in items:
            if item.channel == 0:
                answers.append(transform.whole(item.text))
                continue
            state = channels.get(item.channel)
            if state is None:
                state = channels[item.channel] = transform.new_channel()
            answers.append(transform.step(state, item.text, item.last))
            if item.last:
                del channels[item.channel]
        return answers


_factory = None
_guard = None


def export_transform(cls):
    """Makes `cls` (a `TextTransform` subclass) the component's guard. Call it once, at the top
    level of your module."""
    global _factory
    _factory = lambda config: _PerChannel(cls(config))  # noqa: E731
    return cls


def export_guard(cls):
    """Makes `cls` (a `TextGuard` subclass) the component's guard."""
    global _factory
    _factory = cls
    return cls


def guard():
    """The guard, built on first use: its configuration is only readable at run time."""
    global _guard
    if _guard is None:
        if _factory is None:
            raise RuntimeError("no guard: call export_transform(YourClass) or export_guard(YourClass)")
        from wit_world.imports import host

        _guard = _factory(dict(host.config_entries()))
    return _guard
