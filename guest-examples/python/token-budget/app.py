"""`token-budget` in Python: a budget of output tokens per API key and time window, kept in the
host's store and enforced in the middle of a stream. A guard of the text world with the rules of
the Rust `example:token-budget` (guest-examples/token-budget/src/lib.rs, which documents them), on
the same store, so both give identical output and charges.

Config: `tokens` (required), `window_seconds` (3600), `key_header` (`authorization`; several,
comma-separated, are tried in order)."""

import hashlib

import sluicegate_guest as sg
import sluicegate_text as st
from wit_world.imports.types import EndReason

I64_MAX = (1 << 63) - 1


def key_of(value):
    """The store key of a header value (str or None)."""
    if value is None:
        return "anonymous"
    return "key:" + hashlib.sha256(value.encode()).hexdigest()


def estimate(size, deltas):
    """The tokens of a stream's text so far: one per four bytes, at least one per delta."""
    return max((size + 3) // 4, deltas)


def _integer(text):
    """`text` as an integer in Rust's syntax for one within the range of i64, or None."""
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


def _read(key):
    """(the key's total, seconds left); a value that is not a count counts as spent; a failed
    read gives None (it is a fault the host applies the policy to)."""
    try:
        entry = sg.store.get(key)
    except sg.StoreError:
        return None, 0
    if entry is None:
        return 0, 0
    number = _integer(entry[0])
    return (I64_MAX if number is None else number), entry[1]


class Account:
    def __init__(self, key):
        self.key = key
        self.used = None
        self.charged = 0
        self.size = 0
        self.deltas = 0


class TokenBudget(st.TextGuard):
    max_held = 0
    prefilter = "\0"  # whole texts are never metered

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
        return Account(key_of(value))

    def admit(self, account):
        used, expires_in = _read(account.key)
        if used is not None and used < self.tokens:
            return None
        return st.Refusal(429, "budget_exhausted", "the token budget of this key is used up", max(expires_in, 1))

    def process(self, account, items):
        if account.used is None:
            account.used = _read(account.key)[0]  # a failed read: read again next batch
        before = estimate(account.size, account.deltas)
        left = self.tokens - (I64_MAX if account.used is None else account.used)
        answers = []
        for item in items:
            text = item.text
            if item.channel == 0 or not text:
                answers.append((len(text), text))
            elif left <= 0:
                answers.append(st.Stop("", st.LENGTH))
            else:
                was = estimate(account.size, account.deltas)
                account.size += len(text.encode())
                account.deltas += item.pieces
                left -= estimate(account.size, account.deltas) - was
                answers.append((len(text), text))
        self._charge(account, estimate(account.size, account.deltas) - before)
        return answers

    def finish(self, account, reason, output_tokens):
        # The provider's own count, when it gave one, settles the stream's charge.
        if output_tokens is not None and reason == EndReason.UPSTREAM_CLOSED:
            self._charge(account, output_tokens - account.charged)

    def _charge(self, account, tokens):
        if tokens == 0:
            return
        try:
            account.used = sg.store.increment(account.key, tokens, self.window_seconds)
            account.charged += tokens
        except sg.StoreError:
            pass  # unavailable: the host applies the fault policy


st.export_guard(TokenBudget)
