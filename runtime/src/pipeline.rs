//! The whole path of one event stream, without the network: parse, batch, run the chain,
//! encode. The proxy drives the same steps from sockets; `sluicegate run` drives them from
//! standard input.

use crate::batch::Batch;
use crate::chain::{ChainFault, ChainStream};
use crate::sse::{self, Parser};
use sluicegate_guest::EndReason;
use std::io::{self, Read, Write};

/// Caps on one batch. A batch is the complete events available at one moment, up to these.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_events: usize,
    pub max_bytes: usize,
}

impl BatchLimits {
    /// Whether `batch` can take another event: under the event cap, and under the byte cap
    /// unless it is empty (a single event larger than `max_bytes` still makes a batch).
    pub fn admits(&self, batch: &Batch) -> bool {
        batch.len() < self.max_events && (batch.is_empty() || batch.byte_len() < self.max_bytes)
    }
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits { max_events: 256, max_bytes: 256 * 1024 }
    }
}

/// Moves the complete events the parser holds into `batch`, up to `limits` (a single event
/// larger than `max_bytes` still makes a batch of its own). Returns how many were added.
pub fn fill_batch(parser: &mut Parser, batch: &mut Batch, limits: BatchLimits) -> usize {
    let mut added = 0;
    while limits.admits(batch) {
        if !parser.next_into(batch) {
            break;
        }
        added += 1;
    }
    added
}

/// Why a run stopped early.
#[derive(Debug)]
pub enum RunError {
    Io(io::Error),
    Fault(ChainFault),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Io(e) => write!(f, "{e}"),
            RunError::Fault(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RunError {}

/// Totals of one run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunStats {
    pub events_in: u64,
    pub events_out: u64,
    pub batches: u64,
    /// Bytes of an unterminated last event, discarded as the spec requires.
    pub discarded_tail: usize,
    pub ended_by_interceptor: bool,
}

/// Streams `input` through `chain` to `output`, one write (and flush) per batch, reading in
/// chunks of `chunk` bytes.
pub fn run(
    mut input: impl Read,
    mut output: impl Write,
    chain: &mut ChainStream,
    limits: BatchLimits,
    chunk: usize,
) -> Result<RunStats, RunError> {
    let mut parser = Parser::new();
    let mut batch = Batch::new();
    let mut encoded = Vec::new();
    let mut buf = vec![0u8; chunk.max(1)];
    let mut stats = RunStats::default();
    loop {
        let n = match input.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(RunError::Io(e)),
        };
        if n == 0 {
            break;
        }
        parser.feed(&buf[..n]);
        loop {
            batch.clear();
            let added = fill_batch(&mut parser, &mut batch, limits);
            if added == 0 {
                break;
            }
            stats.events_in += added as u64;
            stats.batches += 1;
            let ended = chain.process(&mut batch).map_err(RunError::Fault)?;
            stats.events_out += batch.len() as u64;
            encoded.clear();
            sse::encode_batch(&mut encoded, batch.view());
            output.write_all(&encoded).and_then(|_| output.flush()).map_err(RunError::Io)?;
            if ended {
                stats.ended_by_interceptor = true;
                let tail = chain.finish(EndReason::EndedByInterceptor).map_err(RunError::Fault)?;
                return write_tail(&mut output, &tail, stats, &mut encoded);
            }
        }
    }
    let last = parser.finish();
    stats.discarded_tail = parser.discarded();
    let mut tail = Batch::new();
    if let Some(retry) = last {
        tail.push_parsed(&retry);
        stats.events_in += 1;
        chain.process(&mut tail).map_err(RunError::Fault)?;
    }
    let finished = chain.finish(EndReason::UpstreamClosed).map_err(RunError::Fault)?;
    tail.extend_from(finished.view());
    write_tail(&mut output, &tail, stats, &mut encoded)
}

fn write_tail(
    output: &mut impl Write,
    tail: &Batch,
    mut stats: RunStats,
    encoded: &mut Vec<u8>,
) -> Result<RunStats, RunError> {
    stats.events_out += tail.len() as u64;
    encoded.clear();
    sse::encode_batch(encoded, tail.view());
    output.write_all(encoded).and_then(|_| output.flush()).map_err(RunError::Io)?;
    Ok(stats)
}
