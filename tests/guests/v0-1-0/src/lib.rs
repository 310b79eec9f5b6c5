//! A batch-world guest built against `wit/interceptor.wit` as it was at 0.1.0 (frozen in
//! `wit/` here): it upper-cases each event's data and reads its config through `host@0.1.0`.
//! The host speaks 0.1.1 (which added the store); this guest must load and work unchanged.

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ path: "wit", world: "batch-interceptor" });

    use exports::sluicegate::interceptor::batch::{Batch, EndReason, Guest, GuestStreamState, StreamContext, Verdict};
    use sluicegate::interceptor::host;

    struct Upper;

    struct State {
        prefix: String,
    }

    impl Guest for Upper {
        type StreamState = State;
    }

    impl GuestStreamState for State {
        fn new(_context: StreamContext) -> Self {
            State { prefix: host::config_get("prefix").unwrap_or_default() }
        }

        fn process_batch(&self, batch: Batch) -> Verdict {
            // Replace every event that has data with the same event, data upper-cased.
            let mut ops = Vec::new();
            let mut bytes = Vec::new();
            for words in batch.index.chunks_exact(8) {
                let (fields, start, len) = (words[0], words[3] as usize, words[4] as usize);
                if fields & 2 == 0 {
                    ops.extend([0, 1]);
                    continue;
                }
                let data = String::from_utf8_lossy(&batch.bytes[start..start + len]).to_uppercase();
                let at = bytes.len() as u32;
                bytes.extend_from_slice(self.prefix.as_bytes());
                bytes.extend_from_slice(data.as_bytes());
                // Keep the type, id and retry (inherit bits); set the data.
                ops.extend([2, 256 | 1024 | 2048 | 2, 0, 0, at, bytes.len() as u32 - at, 0, 0, 0]);
            }
            Verdict { ops, bytes }
        }

        fn finish(&self, _reason: EndReason) -> Verdict {
            Verdict { ops: Vec::new(), bytes: Vec::new() }
        }
    }

    export!(Upper);
}
