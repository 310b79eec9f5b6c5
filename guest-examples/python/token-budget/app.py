"""`token-budget` in Python: a budget of output tokens per API key and time window, kept in the
host's store and enforced in the middle of a stream. The same rules, byte for byte, as the Rust
`example:token-budget` (guest-examples/token-budget/src/lib.rs, which documents them), on the same
streaming-text layer and the same store, so both give identical output and charges.

Config: `tokens` (required), `window_seconds` (3600), `key_header` (`authorization`; several,
comma-separated, are tried in order)."""

import hashlib

import sluicegate_guest as sg
import sluicegate_text as st
from wit_world.imports.types import EndReason

I64_MAX = (1 << 63) - 1
_WHITESPACE = b" \t\r\n"
_REFUSAL = (
    '{"error":{"type":"budget_exhausted","message":"the token budget of this key is used up",'
    '"retry_after_seconds":%d}}'
)
_UNAVAILABLE = '{"error":{"type":"budget_unavailable","message":"the token budget could not be read"}}'


def key_of(value):
    """The store key of a header value (str or None)."""
    if value is None:
        return "anonymous"
    return "key:" + hashlib.sha256(value.encode()).hexdigest()


def estimate(text):
    """One token per four bytes of streamed text, at least one."""
    return max(1, (len(text) + 3) // 4)


def reported_tokens(raw):
    """The output-token count in a usage object of `raw` JSON (bytes), if there is one."""
    for field in (b'"output_tokens":', b'"completion_tokens":'):
        at = raw.find(field)
        if at < 0:
            continue
        at += len(field)
        while at < len(raw) and raw[at] in _WHITESPACE:
            at += 1
        end = at
        while end < len(raw) and 0x30 <= raw[end] <= 0x39:
            end += 1
        if end > at and (n := int(raw[at:end])) <= I64_MAX:
            return n
    return None


class Meter(st.TextTransform):
    """The text transform of one batch: it meters the streamed text against what is left."""

    max_held = 0

    def __init__(self, left):
        self.left = left
        self.counted = 0
        self.reported = None

    def passes(self, text):
        return b'_tokens"' not in text

    def step(self, channel, pending, last):
        if not pending:
            return 0, b""
        if self.left <= 0:
            return st.Stop(b"", st.LENGTH)
        tokens = estimate(pending)
        self.counted += tokens
        self.left -= tokens
        return len(pending), pending

    def whole(self, text):
        n = reported_tokens(text)
        if n is not None:
            self.reported = n if self.reported is None else max(self.reported, n)
        return len(text), text


class Account:
    """One stream's account."""

    def __init__(self, key, request):
        self.text = st.TextStream()
        self.key = key
        self.request = request
        self.used = None  # the key's total as last read or returned; None until the first batch
        self.charged = 0
        self.reported = None


def _integer(text):
    """`text` as an integer in Rust's syntax for one (an optional sign, then ASCII digits) within
    the range of i64, or None."""
    body = text[1:] if text[:1] in ("+", "-") else text
    if not body.isascii() or not body.isdigit():
        return None
    number = int(text)
    return number if -I64_MAX - 1 <= number <= I64_MAX else None


def _positive(config, name, default, bound):
    value = config.get(name)
    if value is None:
        return default
    number = _integer(value)
    if number is None or not 0 < number <= bound:
        raise ValueError(f"`{name}` must be a positive integer")
    return number


class TokenBudget(sg.Interceptor):
    def __init__(self, config):
        self.tokens = _positive(config, "tokens", None, I64_MAX)
        if self.tokens is None:
            raise ValueError("`tokens` (the budget) is required")
        self.window_seconds = _positive(config, "window_seconds", 3600, (1 << 32) - 1)
        names = (name.strip().lower() for name in config.get("key_header", "authorization").split(","))
        self.key_headers = [name for name in names if name]
        if not self.key_headers:
            raise ValueError("`key_header` must name at least one header")

    def open(self, context):
        headers = context.request_headers
        value = next((v for header in self.key_headers for name, v in headers if name == header), None)
        return Account(key_of(value), context.status == 0)

    def process_batch(self, account, batch, out):
        used = account.used
        if used is None:
            try:
                entry = sg.store.get(account.key)
            except sg.StoreError:
                return _fail(out)  # unavailable is a fault the host applies the policy for
            used, expires_in = (0, 0) if entry is None else (_count(entry[0]), entry[1])
            if account.request:
                return self._admit(used, expires_in, out)
        if account.request:
            return  # admitted at its first (only) batch
        meter = Meter(self.tokens - used)
        account.text.process_batch(meter, batch, out)
        if meter.reported is not None:
            account.reported = meter.reported
        account.used = used
        self._charge(account, meter.counted)

    def finish(self, account, reason, out):
        if account.request:
            return
        meter = Meter(self.tokens - (account.used or 0))
        account.text.finish(meter, out)
        self._charge(account, meter.counted)
        # The provider's own count, when it gave one, settles the stream's charge.
        if account.reported is not None and reason == EndReason.UPSTREAM_CLOSED:
            self._charge(account, account.reported - account.charged)

    def _charge(self, account, tokens):
        if tokens == 0:
            return
        try:
            account.used = sg.store.increment(account.key, tokens, self.window_seconds)
            account.charged += tokens
        except sg.StoreError:
            pass  # unavailable: the host applies the fault policy; the next read finds the rest

    def _admit(self, used, expires_in, out):
        if self.tokens - used > 0:
            return
        # The refusal: its event type is the status, its data the body; the rest is dropped.
        out.replace(data=_REFUSAL % max(expires_in, 1), event_type="429", id=None, retry=None)
        out.end()


def _count(value):
    """A stored total; a value that is not one counts as spent, as in the Rust example."""
    number = _integer(value)
    return I64_MAX if number is None else number


def _fail(out):
    out.insert(data=_UNAVAILABLE, event_type="error")
    out.end()


sg.export(TokenBudget)
