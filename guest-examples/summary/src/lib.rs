//! `summary`: a stateful interceptor. It counts the messages and data bytes of each stream and,
//! when the stream ends, appends one event (type from the `event` config key, default
//! `summary`) with data `{"events":N,"data_bytes":M}`. Every event passes unchanged.

use sluicegate_guest::{BatchView, Config, EndReason, Interceptor, NewEvent, StreamContext, VerdictBuilder};

pub struct Summary {
    event_type: String,
}

/// Per-stream counters.
#[derive(Debug, Default)]
pub struct Counts {
    events: u64,
    data_bytes: u64,
}

impl Interceptor for Summary {
    type Stream = Counts;

    fn new(config: &Config) -> Result<Self, String> {
        let event_type = config.get("event").unwrap_or("summary").to_string();
        if event_type.contains(['\r', '\n']) {
            return Err("`event` must not contain CR or LF".into());
        }
        Ok(Summary { event_type })
    }

    fn open(&self, _context: &StreamContext) -> Counts {
        Counts::default()
    }

    fn process_batch(&self, counts: &mut Counts, batch: BatchView<'_>, out: &mut VerdictBuilder) {
        for event in batch.iter() {
            if let (true, Some(data)) = (event.is_message(), event.data()) {
                counts.events += 1;
                counts.data_bytes += data.len() as u64;
            }
        }
        out.keep_n(batch.len());
    }

    fn finish(&self, counts: &mut Counts, reason: EndReason, out: &mut VerdictBuilder) {
        if reason == EndReason::ClientGone {
            return;
        }
        let data = format!("{{\"events\":{},\"data_bytes\":{}}}", counts.events, counts.data_bytes);
        out.insert(&NewEvent::message(&data).with_type(&self.event_type));
    }
}

#[cfg(target_arch = "wasm32")]
sluicegate_guest::export!(Summary);
