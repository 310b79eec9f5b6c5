"""The glue between componentize-py's bindings and `sluicegate_guest.Interceptor`.

componentize-py looks for the implementation of the exported `batch` interface in a module
named `batch`; this is it. It imports the author's module, `app`, which calls
`sluicegate_guest.export(...)`.
"""

import app  # noqa: F401  (registers the interceptor)
import sluicegate_guest as sdk
from wit_world.exports import batch as wit
from wit_world.imports import types

_EMPTY = types.Verdict(ops=[], bytes=b"")


class StreamState(wit.StreamState):
    def __init__(self, context):
        self._interceptor = sdk.instance()
        self._state = self._interceptor.open(context)

    def process_batch(self, batch):
        events = sdk.events(batch)
        out = sdk.VerdictBuilder()
        self._interceptor.process_batch(self._state, events, out)
        ops = out.ops_for(len(events))
        return types.Verdict(ops=ops, bytes=bytes(out.bytes)) if ops else _EMPTY

    def finish(self, reason):
        out = sdk.VerdictBuilder()
        self._interceptor.finish(self._state, reason, out)
        ops = out.ops_for(0)
        return types.Verdict(ops=ops, bytes=bytes(out.bytes)) if ops else _EMPTY
