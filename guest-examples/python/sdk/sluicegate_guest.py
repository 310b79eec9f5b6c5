"""Write sluicegate interceptors in Python.

Subclass `Interceptor`, then call `export(YourClass)` at the top level of your module. Build
with componentize-py, targeting the `batch-interceptor` world of `wit/interceptor.wit`, with this
directory on the Python path (it also holds `batch.py`, the glue componentize-py looks for):

    componentize-py -d wit -w batch-interceptor componentize app -p . -p SDK_DIR -o app.wasm

The batch and verdict layouts are those documented in `wit/interceptor.wit`; this module gives
them names. Field values are `bytes` (valid UTF-8, as the host guarantees): decode only what you
need, since decoding costs time per event.
"""

# The wire layout (wit/interceptor.wit, `batch` and `verdict`).
STRIDE = 8
HAS_TYPE, HAS_DATA, HAS_ID, HAS_RETRY, COMMENT = 1, 2, 4, 8, 16
INHERIT_TYPE, INHERIT_DATA, INHERIT_ID, INHERIT_RETRY = 256, 512, 1024, 2048
OP_KEEP, OP_DROP, OP_REPLACE, OP_INSERT, OP_END = 0, 1, 2, 3, 4


class Event:
    """One event of a batch, read in place from the batch's buffer."""

    __slots__ = ("_bytes", "_index", "_at")

    def __init__(self, data, index, at):
        self._bytes = data
        self._index = index
        self._at = at

    @property
    def fields(self):
        """The `fields` bits (HAS_TYPE, HAS_DATA, HAS_ID, HAS_RETRY, COMMENT)."""
        return self._index[self._at]

    def _span(self, bit, word):
        if not self._index[self._at] & bit:
            return None
        start = self._index[self._at + word]
        return self._bytes[start : start + self._index[self._at + word + 1]]

    @property
    def is_comment(self):
        return bool(self.fields & COMMENT)

    @property
    def is_message(self):
        """True for an event a client fires: it has data and is not a comment."""
        return self.fields & (HAS_DATA | COMMENT) == HAS_DATA

    @property
    def comment(self):
        return self._span(HAS_DATA, 3) if self.is_comment else None

    @property
    def event_type(self):
        """The `event:` field as bytes, or None."""
        return self._span(HAS_TYPE, 1)

    @property
    def effective_type(self):
        """The type a client dispatches: the `event:` field, or b"message" when absent or empty."""
        return self._span(HAS_TYPE, 1) or b"message"

    @property
    def data(self):
        """The data (`data:` lines joined with LF) as bytes, or None. None for comments."""
        return None if self.is_comment else self._span(HAS_DATA, 3)

    @property
    def id(self):
        return self._span(HAS_ID, 5)

    @property
    def retry(self):
        return self._index[self._at + 7] if self.fields & HAS_RETRY else None


def events(batch):
    """The events of a batch (the `batch` record the host passes), in stream order."""
    data, index = batch.bytes, batch.index
    return [Event(data, index, at) for at in range(0, len(index), STRIDE)]


class _Inherit:
    def __repr__(self):
        return "INHERIT"


INHERIT = _Inherit()
"""For `VerdictBuilder.replace`: keep the original event's value of this field."""


def _utf8(value):
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


class VerdictBuilder:
    """Collects the ops of a verdict. Runs of keep and of drop are merged; a verdict that keeps
    everything is sent as the empty verdict, which costs nothing to apply."""

    def __init__(self):
        self.ops = []
        self.bytes = bytearray()
        self._run = -1  # position in ops of the last keep/drop op, while it is the last op
        self.consumed = 0
        self.ended = False

    def _add_run(self, op, count):
        if count <= 0:
            return
        self.consumed += count
        if self._run >= 0 and self.ops[self._run] == op:
            self.ops[self._run + 1] += count
        else:
            self._run = len(self.ops)
            self.ops += (op, count)

    def keep(self, count=1):
        """Forwards the next `count` input events unchanged."""
        self._add_run(OP_KEEP, count)

    def drop(self, count=1):
        """Drops the next `count` input events (an id or retry they carry is still forwarded)."""
        self._add_run(OP_DROP, count)

    def _span(self, value):
        if value is None:
            return 0, 0
        raw = _utf8(value)
        start = len(self.bytes)
        self.bytes += raw
        return start, len(raw)

    def _describe(self, op, fields, event_type, data, id, retry):
        self._run = -1
        fields |= (
            (HAS_TYPE if event_type is not None else 0)
            | (HAS_DATA if data is not None else 0)
            | (HAS_ID if id is not None else 0)
            | (HAS_RETRY if retry is not None else 0)
        )
        ts, tl = self._span(event_type)
        ds, dl = self._span(data)
        is_, il = self._span(id)
        self.ops += (op, fields, ts, tl, ds, dl, is_, il, retry or 0)

    def replace(self, data=INHERIT, event_type=INHERIT, id=INHERIT, retry=INHERIT):
        """Consumes the next input event and emits it rewritten: each field is INHERIT (keep the
        original), None (remove it) or a new value (str or bytes; int for retry)."""
        self.consumed += 1
        inherit = 0
        values = []
        for value, bit in ((event_type, INHERIT_TYPE), (data, INHERIT_DATA), (id, INHERIT_ID), (retry, INHERIT_RETRY)):
            if value is INHERIT:
                inherit |= bit
                value = None
            values.append(value)
        self._describe(OP_REPLACE, inherit, *values)

    def insert(self, data=None, event_type=None, id=None, retry=None, comment=False):
        """Emits a new event here, consuming no input event. A comment carries its text as data."""
        self._describe(OP_INSERT, COMMENT if comment else 0, event_type, data, id, retry)

    def end(self):
        """Ends the stream after this verdict's output; input events not yet consumed are dropped."""
        self.ended = True

    def ops_for(self, batch_len):
        """The ops to send for a batch of `batch_len` events: events not mentioned are kept (or
        dropped after `end`, which then closes the ops), and keeping everything becomes the empty
        verdict."""
        if self.ended:
            self.drop(batch_len - self.consumed)
            return self.ops + [OP_END]
        if self.consumed < batch_len:
            self.keep(batch_len - self.consumed)
        if len(self.ops) == 2 and self.ops[0] == OP_KEEP:
            return []
        return self.ops


class Interceptor:
    """An interceptor: built once per instance from its configuration (a dict of strings), it
    opens one state per event stream and answers every batch of that stream.

    Lifecycle, for every stream: `open` when the event stream starts, `process_batch` for each
    batch in stream order, `finish` once when it ends. An exception is a fault of the
    interceptor: the host applies its fault policy (see the README's security model)."""

    def __init__(self, config):
        self.config = config

    def open(self, context):
        """Returns the state for one stream (any object). `context` is the stream's
        `stream-context` record: stream_id, method, path, query, headers, status."""
        return None

    def process_batch(self, state, batch, out):
        """Decides the fate of each event of `batch` (a list of `Event`) with `out`
        (a `VerdictBuilder`). Events not mentioned are kept."""
        raise NotImplementedError

    def finish(self, state, reason, out):
        """Called once when the stream ends; may insert events with `out` (and end)."""


_exported = None
_instance = None


def export(cls):
    """Makes `cls` (an `Interceptor` subclass) the component's interceptor. Call it once, at the
    top level of your module."""
    global _exported
    _exported = cls
    return cls


def log(level, message):
    """Writes a line to the proxy's log: level is "trace", "debug", "info", "warn" or "error"."""
    from wit_world.imports import host

    host.log(host.Level[level.upper()], message)


class StoreError(Exception):
    """A store call failed. `kind` is "unavailable" (the store could not be reached or did not
    answer in time; the host also counts it as a fault of this interceptor and applies its fault
    policy after the call, whatever the call returns), "not-a-counter" (`increment` of a key that
    does not hold an integer) or "too-large" (a key over 512 bytes or a value over 64 KiB)."""

    def __init__(self, kind, detail=""):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


def _store_call(operation, *args):
    from componentize_py_types import Err
    from wit_world.imports import store as wit

    try:
        return getattr(wit, operation)(*args)
    except Err as e:
        if isinstance(e.value, wit.Error_Unavailable):
            raise StoreError("unavailable", e.value.value) from None
        if isinstance(e.value, wit.Error_NotACounter):
            raise StoreError("not-a-counter") from None
        raise StoreError("too-large") from None


class Store:
    """The host's store (the WIT `store` interface, since 0.1.1): small counters and values
    shared by this interceptor's streams and, when the operator configured a shared store, by
    every replica of the proxy. Keys are this interceptor's own: the host scopes them. Each
    operation is atomic; a failed one raises `StoreError`."""

    def get(self, key):
        """`(value, expires_in)` under `key` (expires_in: seconds left, rounded up; 0 if it never
        expires), or None if the key is absent."""
        entry = _store_call("get", key)
        return None if entry is None else (entry.value, entry.expires_in)

    def increment(self, key, by, ttl_seconds=0):
        """Adds `by` to the integer under `key` (absent: 0) and returns the new value. A key this
        call creates expires `ttl_seconds` later (0: never); an existing key keeps its expiry."""
        return _store_call("increment", key, by, ttl_seconds)

    def compare_and_set(self, key, expected, value, ttl_seconds=0):
        """Sets `key` to `value` (expiring `ttl_seconds` later; 0: never) if it holds `expected`
        now (None: the key is absent). True if it was set."""
        return _store_call("compare_and_set", key, expected, value, ttl_seconds)


store = Store()
"""The store, for every interceptor of this component."""


def instance():
    """The interceptor, built on first use: its configuration is only readable at run time."""
    global _instance
    if _instance is None:
        if _exported is None:
            raise RuntimeError("no interceptor: call sluicegate_guest.export(YourClass) in your module")
        from wit_world.imports import host

        _instance = _exported(dict(host.config_entries()))
    return _instance
