//! `drop`: drops events whose type is listed in the `types` config key (comma-separated,
//! default `ping`). An unnamed event has the type `message`. Comments and id/retry-only entries
//! are never dropped.

use sluicegate_guest::{BatchView, Config, Interceptor, StreamContext, VerdictBuilder};

pub struct Drop {
    types: Vec<String>,
}

impl Interceptor for Drop {
    type Stream = ();

    fn new(config: &Config) -> Result<Self, String> {
        let list = config.get("types").unwrap_or("ping");
        let types: Vec<String> = list.split(',').map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect();
        Ok(Drop { types })
    }

    fn open(&self, _context: &StreamContext) {}

    fn process_batch(&self, _stream: &mut (), batch: BatchView<'_>, out: &mut VerdictBuilder) {
        for event in batch.iter() {
            if event.is_message() && self.types.iter().any(|t| t == event.effective_type()) {
                out.drop();
            } else {
                out.keep();
            }
        }
    }
}

#[cfg(target_arch = "wasm32")]
sluicegate_guest::export!(Drop);
