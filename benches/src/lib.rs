//! Inputs shared by the benchmarks.

use sluicegate::batch::Batch;

pub use sluicegate::bench::sample_events as events;

/// `n` events of about `size` bytes of data as one batch.
pub fn batch(n: usize, size: usize) -> Batch {
    events(n, size).into_iter().collect()
}
