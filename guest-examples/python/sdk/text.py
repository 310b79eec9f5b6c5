"""The glue between componentize-py's bindings of the `text` interface and `sluicegate_text`:
componentize-py looks for the exported interface's implementation in a module named `text`. It
imports the author's module, `app`, which calls `export_transform` or `export_guard`.

Answers count characters of the item's text; the host counts UTF-8 bytes, so a partial release
is converted here (a whole one is the text's byte length)."""

import app  # noqa: F401  (registers the guard)
import sluicegate_text as st
from wit_world import exports
from wit_world.exports import text as wit

_KINDS = {
    wit.Kind.CONTENT: "content",
    wit.Kind.TOOL_ARGUMENTS: "tool-arguments",
    wit.Kind.REASONING: "reasoning",
    wit.Kind.REFUSAL: "refusal",
    wit.Kind.OTHER: "other",
}
_REASONS = {st.CONTENT_FILTER: wit.StopReason.CONTENT_FILTER, st.LENGTH: wit.StopReason.LENGTH}


def _utf8_len(text):
    return len(text) if text.isascii() else len(text.encode())


def _answer(item_text, answer):
    if isinstance(answer, st.Stop):
        return wit.Answer_Stop(wit.Stop(text=answer.text, reason=_REASONS[answer.reason]))
    released, text = answer
    if released >= len(item_text):
        count = _utf8_len(item_text)
        # Text that goes out as it came is not sent back.
        return wit.Answer_Keep(count) if text == item_text else wit.Answer_Release(wit.Release(count=count, text=text))
    kept = item_text[:released]
    if text == kept:
        return wit.Answer_Keep(_utf8_len(kept))
    return wit.Answer_Release(wit.Release(count=_utf8_len(kept), text=text))


class Text(exports.Text):
    def describe(self):
        guard = st.guard()
        return wit.Settings(max_held=guard.max_held, prefilter=guard.prefilter)


class StreamState(wit.StreamState):
    def __init__(self, context):
        self._guard = st.guard()
        self._state = self._guard.open(context)

    def admit(self):
        refusal = self._guard.admit(self._state)
        if refusal is None:
            return None
        return wit.Refusal(
            status=refusal.status,
            error_type=refusal.error_type,
            message=refusal.message,
            retry_after_seconds=refusal.retry_after_seconds,
        )

    def process(self, items):
        texts = [i.text for i in items]
        mine = [st.Item(i.channel, _KINDS[i.kind], i.text, i.last, i.pieces) for i in items]
        answers = self._guard.process(self._state, mine)
        return [_answer(text, answer) for text, answer in zip(texts, answers)]

    def finish(self, reason, output_tokens):
        self._guard.finish(self._state, reason, output_tokens)
