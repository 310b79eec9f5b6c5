//! `sluicegate run`: one event stream from a reader to a writer through the
//! [`StreamEngine`](sluicegate::engine::StreamEngine), the same steps the proxy drives from sockets.

use sluicegate::chain::{ChainFault, ChainStream};
use sluicegate::engine::{Output, StreamEngine};
use sluicegate_guest::EndReason;
use std::io::{self, Read, Write};

pub(crate) use sluicegate::engine::BatchLimits;

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Fault(#[from] ChainFault),
}

/// Totals of one run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunStats {
    pub events_in: u64,
    pub events_out: u64,
    pub batches: u64,
    /// Bytes of an unterminated last event, discarded as the spec requires.
    pub discarded_tail: usize,
}

/// Streams `input` through `chain` to `output`, one write (and flush) per batch, reading in
/// chunks of `chunk` bytes.
pub(crate) fn run(
    mut input: impl Read,
    mut output: impl Write,
    chain: ChainStream,
    limits: BatchLimits,
    chunk: usize,
) -> Result<RunStats, RunError> {
    let mut engine = StreamEngine::new(chain, limits, sluicegate::sse::DEFAULT_MAX_EVENT_BYTES);
    let mut buf = vec![0u8; chunk.max(1)];
    let mut stats = RunStats::default();
    let mut write = |out: &Output| output.write_all(&out.bytes).and_then(|_| output.flush());
    let reason = 'input: loop {
        let n = match input.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(RunError::Io(e)),
        };
        if n == 0 {
            stats.discarded_tail = engine.end_input();
        } else {
            engine.feed_slice(&buf[..n]);
        }
        while let Some(out) = engine.next_batch()? {
            write(&out)?;
            if out.ended {
                break 'input EndReason::EndedByInterceptor;
            }
        }
        if n == 0 {
            break EndReason::UpstreamClosed;
        }
    };
    write(&engine.finish(reason)?)?;
    let totals = engine.stats();
    stats.events_in = totals.events_in;
    stats.events_out = totals.events_out;
    stats.batches = totals.batches;
    Ok(stats)
}
