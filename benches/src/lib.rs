//! Inputs shared by the benchmarks.

use sluicegate::batch::Batch;
use sluicegate::sse::Event;

/// `n` events of about `size` bytes of data each, like an LLM token stream with an address in
/// every fourth event (so `redact` has real work), ids on every other one.
pub fn events(n: usize, size: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let mut data = format!("{{\"i\":{i},\"delta\":\"");
            if i % 4 == 0 {
                data.push_str("mail ada@example.com ");
            }
            while data.len() + 2 < size {
                data.push_str("lorem ");
            }
            data.truncate(size.saturating_sub(2).max(data.find("\"delta\"").unwrap() + 10));
            data.push_str("\"}");
            let e = Event::message(data);
            if i % 2 == 0 { e.with_id(format!("{i}")) } else { e.with_type("content_block_delta") }
        })
        .collect()
}

/// The same events as one batch.
pub fn batch(n: usize, size: usize) -> Batch {
    events(n, size).into_iter().collect()
}
