//! A batch-world guest built against `wit/interceptor.wit` as it was at 0.1.1 (frozen in `wit/`
//! here): it counts its batches in the store (`store@0.1.1`) and writes that count before each
//! event's data. The host speaks 0.1.2 (which added the text world); this guest must load and
//! work unchanged, store included.

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ path: "wit", world: "batch-interceptor" });

    use exports::sluicegate::interceptor::batch::{Batch, EndReason, Guest, GuestStreamState, StreamContext, Verdict};
    use sluicegate::interceptor::store;

    struct Counted;

    struct State;

    impl Guest for Counted {
        type StreamState = State;
    }

    impl GuestStreamState for State {
        fn new(_context: StreamContext) -> Self {
            State
        }

        fn process_batch(&self, batch: Batch) -> Verdict {
            let count = store::increment("batches", 1, 0).unwrap_or(-1);
            let mut ops = Vec::new();
            let mut bytes = Vec::new();
            for words in batch.index.chunks_exact(8) {
                let (fields, start, len) = (words[0], words[3] as usize, words[4] as usize);
                if fields & 2 == 0 {
                    ops.extend([0, 1]);
                    continue;
                }
                let at = bytes.len() as u32;
                bytes.extend_from_slice(format!("{count}: ").as_bytes());
                bytes.extend_from_slice(&batch.bytes[start..start + len]);
                // Keep the type, id and retry (inherit bits); set the data.
                ops.extend([2, 256 | 1024 | 2048 | 2, 0, 0, at, bytes.len() as u32 - at, 0, 0, 0]);
            }
            Verdict { ops, bytes }
        }

        fn finish(&self, _reason: EndReason) -> Verdict {
            Verdict { ops: Vec::new(), bytes: Vec::new() }
        }
    }

    export!(Counted);
}
