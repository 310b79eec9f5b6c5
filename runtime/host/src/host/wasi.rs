//! WASI for guests, provided inertly.
//!
//! Guests built for `wasm32-wasip2` import WASI even when they use none of it (Rust's standard
//! library does). They get: no files or preopened directories, no environment variables, no
//! arguments, a closed stdin, no network (every address denied, no name lookup), and stdout and
//! stderr that go to the proxy's log, line by line, attributed to the interceptor.

use bytes::Bytes;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};

/// Builds the WASI context of one store of interceptor `name`. Clocks read zero unless granted.
pub(super) fn inert_ctx(name: &Arc<str>, grant_clocks: bool, budget: &Arc<LogBudget>) -> WasiCtx {
    let mut builder = WasiCtxBuilder::new();
    let log = |stream| LogStream { name: name.clone(), stream, budget: budget.clone() };
    builder.stdout(log("stdout")).stderr(log("stderr")).allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
    if !grant_clocks {
        builder.wall_clock(StoppedClock).monotonic_clock(StoppedClock);
    }
    builder.build()
}

/// A clock that always reads zero: what a guest gets unless clocks are granted, so that it cannot
/// time anything (nor leak timing through its output).
struct StoppedClock;

impl HostWallClock for StoppedClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for StoppedClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// A rate limit shared by an interceptor's instances (governor's GCRA, a token bucket in
/// effect): how many lines of guest output reach the log, with bursts of ten seconds' worth.
/// Lines over it are counted and reported when output is allowed again. A rate of 0 lets none
/// through.
pub(super) struct LogBudget {
    limiter: Option<governor::DefaultDirectRateLimiter>,
    /// Lines dropped since the last report.
    dropped: AtomicU64,
}

impl LogBudget {
    pub(super) fn new(lines_per_second: u32) -> Self {
        let limiter = NonZeroU32::new(lines_per_second).map(|rate| {
            let burst = NonZeroU32::new(lines_per_second.saturating_mul(10)).unwrap_or(rate);
            governor::RateLimiter::direct(governor::Quota::per_second(rate).allow_burst(burst))
        });
        LogBudget { limiter, dropped: AtomicU64::new(0) }
    }

    /// True if a line may be logged now; otherwise the line is counted as dropped. Returns also
    /// how many lines were dropped before this one, to report.
    fn take(&self) -> (bool, u64) {
        if self.limiter.as_ref().is_some_and(|l| l.check().is_ok()) {
            (true, self.dropped.swap(0, Ordering::Relaxed))
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            (false, 0)
        }
    }
}

/// A guest's stdout or stderr, written to the log.
#[derive(Clone)]
struct LogStream {
    name: Arc<str>,
    stream: &'static str,
    budget: Arc<LogBudget>,
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(tokio::io::sink())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogStream {
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for LogStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let text = String::from_utf8_lossy(&bytes);
        for line in text.lines().filter(|l| !l.is_empty()) {
            let (allowed, dropped) = self.budget.take();
            if dropped > 0 {
                tracing::warn!(interceptor = %self.name, lines = dropped, "guest output over its rate limit was dropped");
            }
            if allowed {
                tracing::info!(interceptor = %self.name, output = self.stream, "{line}");
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}
