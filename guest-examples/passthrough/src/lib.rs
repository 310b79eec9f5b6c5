//! `passthrough`: keeps every event. The baseline for what the boundary costs.

use sluicegate_guest::{BatchView, Config, Interceptor, StreamContext, VerdictBuilder};

pub struct Passthrough;

impl Interceptor for Passthrough {
    type Stream = ();

    fn new(_config: &Config) -> Result<Self, String> {
        Ok(Passthrough)
    }

    fn open(&self, _context: &StreamContext) {}

    fn process_batch(&self, _stream: &mut (), batch: BatchView<'_>, out: &mut VerdictBuilder) {
        out.keep_n(batch.len());
    }
}

#[cfg(target_arch = "wasm32")]
sluicegate_guest::export!(Passthrough);
