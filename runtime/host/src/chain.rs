//! An ordered chain of interceptors, and one stream's pass through it, with each interceptor's
//! fault policy and circuit breaker.

use crate::batch::Batch;
pub use crate::config::FaultPolicy;
use crate::config::LimitsConfig;
use crate::interceptor::{Fault, Interceptor, InterceptorStream, TrapKind};
use prometheus::{Histogram, HistogramOpts};
use serde::Serialize;
use sluicegate_guest::{EndReason, StreamContext};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// When to take an interceptor out of service: `faults` faults within `window` open the circuit
/// for `backoff` (doubling, up to 5 minutes, while trial batches keep failing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Faults within `window` that open the circuit.
    pub faults: u32,
    /// The window faults are counted over.
    pub window: Duration,
    /// How long the circuit stays open at first (doubling while trial batches fail).
    pub backoff: Duration,
}

/// `[limits]`'s defaults.
impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig::from(&LimitsConfig::default())
    }
}

impl From<&LimitsConfig> for BreakerConfig {
    fn from(limits: &LimitsConfig) -> Self {
        BreakerConfig {
            faults: limits.breaker_faults,
            window: limits.breaker_window_ms,
            backoff: limits.breaker_backoff_ms,
        }
    }
}

/// Counters of one interceptor, shared by all its streams.
#[derive(Debug)]
pub struct LinkStats {
    /// Batches the interceptor processed successfully.
    pub batches: AtomicU64,
    /// Faults by kind: traps by why, indexed by [`TrapKind::index`] (their sum is
    /// [`LinkStats::traps`]).
    pub traps_by_kind: [AtomicU64; TrapKind::ALL.len()],
    /// Verdicts refused by the host's checks.
    pub invalid_verdicts: AtomicU64,
    /// Calls that found the host's store unavailable.
    pub store_faults: AtomicU64,
    /// Streams its verdicts ended (a guardrail's cut-offs).
    pub streams_ended: AtomicU64,
    /// Calls that found no usable instance (or an open circuit).
    pub unavailable: AtomicU64,
    /// Batches passed unmodified after a fault (fail-open).
    pub failed_open: AtomicU64,
    /// Batches that skipped the interceptor (or streams that failed) while its circuit was open.
    pub bypassed: AtomicU64,
    /// Times the circuit opened.
    pub circuit_opened: AtomicU64,
    /// Events into and out of the interceptor (batches that succeeded), and what its verdicts did.
    pub events_in: AtomicU64,
    /// Events out of the interceptor.
    pub events_out: AtomicU64,
    /// Input events its verdicts dropped.
    pub dropped: AtomicU64,
    /// Input events its verdicts replaced.
    pub modified: AtomicU64,
    /// Events its verdicts inserted.
    pub injected: AtomicU64,
    /// Events per batch (`sluicegate_interceptor_batch_events`).
    pub batch_size: Histogram,
    /// Seconds per call, successful or not (`sluicegate_interceptor_call_seconds`).
    pub call_seconds: Histogram,
    /// How long its calls take lately, in nanoseconds: the last call's time if longer, else a
    /// decaying average, so one slow call marks it slow at once (see [`ChainStream::is_slow`]).
    /// It starts out slow (twice [`SLOW_CALL`]) until calls show otherwise.
    pub recent_call_nanos: AtomicU64,
    /// Until when (microseconds on [`hold_clock`]; 0: no hold) it stays marked slow after its
    /// last slow call, however fast its calls since.
    slow_until: AtomicU64,
    /// What it counted, by name (`sluicegate_interceptor_counted_total`).
    pub counted: crate::counts::Counted,
}

fn any_slow(links: &[Link]) -> bool {
    links.iter().any(|link| link.stats.is_slow())
}

/// A call this long, lately, makes an interceptor slow: its calls then leave the I/O threads.
pub const SLOW_CALL: std::time::Duration = std::time::Duration::from_micros(500);

/// After a slow call its interceptor stays marked slow for this many times the call's length
/// (at most [`MAX_SLOW_HOLD`]), however many fast calls follow. The decaying mark alone fell back
/// under [`SLOW_CALL`] some fifty calls after a 100 ms one, a few milliseconds under load, so a
/// guest made slow now and then by what it is given held an I/O thread for one call in every
/// fifty; with the hold, a slow call on an I/O thread is followed by a hundred times its length
/// in which the interceptor's calls run elsewhere.
const SLOW_HOLD_FACTOR: u32 = 100;

/// The longest hold (a deadline raised to seconds would otherwise hold for minutes).
const MAX_SLOW_HOLD: std::time::Duration = std::time::Duration::from_secs(60);

/// Microseconds since the first reading, never 0: the clock of [`LinkStats`]'s slow hold.
fn hold_clock() -> u64 {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_micros() as u64 + 1
}

/// Where an interceptor's mark starts (twice [`SLOW_CALL`]): slow until its first calls show it
/// is not (six fast calls, as the mark decays by an eighth per call), so that one slow from the
/// start never holds an I/O thread, not even for its first call after a start or a reload.
const UNPROVEN_CALL_NANOS: u64 = 2 * SLOW_CALL.as_nanos() as u64;

impl LinkStats {
    fn note_call(&self, took: std::time::Duration) {
        if took >= SLOW_CALL {
            let hold = took.saturating_mul(SLOW_HOLD_FACTOR).min(MAX_SLOW_HOLD);
            self.slow_until.fetch_max(hold_clock() + hold.as_micros() as u64, Ordering::Relaxed);
        }
        let took = took.as_nanos().min(u128::from(u64::MAX)) as u64;
        let before = self.recent_call_nanos.load(Ordering::Relaxed);
        self.recent_call_nanos.store(took.max(before - before / 8), Ordering::Relaxed);
    }

    /// Slow lately, or held slow since a slow call. Reads the clock only while a hold lasts.
    fn is_slow(&self) -> bool {
        if self.recent_call_nanos.load(Ordering::Relaxed) >= SLOW_CALL.as_nanos() as u64 {
            return true;
        }
        let until = self.slow_until.load(Ordering::Relaxed);
        if until == 0 {
            return false;
        }
        if hold_clock() < until {
            return true;
        }
        // Over: the next checks need no clock, unless a slow call has set a new hold meanwhile.
        let _ = self.slow_until.compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed);
        false
    }
}

impl Default for LinkStats {
    fn default() -> Self {
        LinkStats {
            batches: AtomicU64::default(),
            traps_by_kind: Default::default(),
            invalid_verdicts: AtomicU64::default(),
            unavailable: AtomicU64::default(),
            store_faults: AtomicU64::default(),
            streams_ended: AtomicU64::default(),
            failed_open: AtomicU64::default(),
            bypassed: AtomicU64::default(),
            circuit_opened: AtomicU64::default(),
            events_in: AtomicU64::default(),
            events_out: AtomicU64::default(),
            dropped: AtomicU64::default(),
            modified: AtomicU64::default(),
            injected: AtomicU64::default(),
            batch_size: histogram(
                "sluicegate_interceptor_batch_events",
                "Events per batch into an interceptor.",
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
            ),
            call_seconds: histogram(
                "sluicegate_interceptor_call_seconds",
                "Time of one call into an interceptor.",
                &[1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 1e-2, 0.1],
            ),
            recent_call_nanos: AtomicU64::new(UNPROVEN_CALL_NANOS),
            slow_until: AtomicU64::default(),
            counted: Default::default(),
        }
    }
}

/// A histogram with its metric name and help (the admin listener labels it per link). Observing
/// is a few atomic additions, cheap enough for once per batch.
fn histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect("a valid name and ascending buckets")
}

impl LinkStats {
    fn record(&self, fault: &Fault) {
        let counter = match fault {
            Fault::Trap { kind, .. } => &self.traps_by_kind[kind.index()],
            Fault::InvalidVerdict(_) => &self.invalid_verdicts,
            Fault::Unavailable(_) | Fault::CircuitOpen => &self.unavailable,
            Fault::Store(_) => &self.store_faults,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Traps of every kind counted.
    pub fn traps(&self) -> u64 {
        TrapKind::ALL.iter().map(|kind| self.traps_of(*kind)).sum()
    }

    /// Traps of `kind` counted.
    pub fn traps_of(&self, kind: TrapKind) -> u64 {
        self.traps_by_kind[kind.index()].load(Ordering::Relaxed)
    }

    /// Every fault counted.
    pub fn faults(&self) -> u64 {
        self.traps()
            + self.invalid_verdicts.load(Ordering::Relaxed)
            + self.unavailable.load(Ordering::Relaxed)
            + self.store_faults.load(Ordering::Relaxed)
    }
}

/// The circuit breaker of one interceptor.
#[derive(Debug)]
struct Breaker {
    config: BreakerConfig,
    /// Fast path: false while the circuit is closed and no fault is recent.
    tripped: AtomicBool,
    state: Mutex<BreakerState>,
}

#[derive(Debug)]
struct BreakerState {
    recent: VecDeque<Instant>,
    open_until: Option<Instant>,
    backoff: Duration,
}

impl Breaker {
    fn new(config: BreakerConfig) -> Self {
        Breaker {
            config,
            tripped: AtomicBool::new(false),
            state: Mutex::new(BreakerState { recent: VecDeque::new(), open_until: None, backoff: config.backoff }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// False while the circuit is open; once the backoff has passed, lets trial batches through.
    fn allows(&self) -> bool {
        if !self.tripped.load(Ordering::Relaxed) {
            return true;
        }
        self.lock().open_until.is_none_or(|until| Instant::now() >= until)
    }

    /// True while the circuit is open (batches skip the interceptor or fail).
    fn is_open(&self) -> bool {
        self.tripped.load(Ordering::Relaxed) && self.lock().open_until.is_some_and(|until| Instant::now() < until)
    }

    fn success(&self) {
        if !self.tripped.load(Ordering::Relaxed) {
            return;
        }
        let mut state = self.lock();
        if state.open_until.is_some_and(|until| Instant::now() >= until) {
            // A trial batch went through: close the circuit.
            state.open_until = None;
            state.backoff = self.config.backoff;
            state.recent.clear();
            self.tripped.store(false, Ordering::Relaxed);
        }
    }

    /// Records a fault; true if it opened the circuit.
    fn failure(&self) -> bool {
        let now = Instant::now();
        let mut state = self.lock();
        self.tripped.store(true, Ordering::Relaxed);
        if state.open_until.is_some_and(|until| now >= until) {
            // The trial failed: open again, for longer.
            state.backoff = (state.backoff * 2).min(Duration::from_secs(300));
            state.open_until = Some(now + state.backoff);
            return true;
        }
        state.recent.push_back(now);
        while state.recent.front().is_some_and(|&t| now.duration_since(t) > self.config.window) {
            state.recent.pop_front();
        }
        if state.open_until.is_none() && state.recent.len() >= self.config.faults.max(1) as usize {
            state.open_until = Some(now + state.backoff);
            return true;
        }
        false
    }
}

/// One interceptor of a chain with its policy, breaker and counters.
#[derive(Clone)]
pub struct Link {
    interceptor: Arc<dyn Interceptor>,
    policy: FaultPolicy,
    breaker: Arc<Breaker>,
    stats: Arc<LinkStats>,
}

impl Link {
    /// A link: `interceptor` under `policy`, with a breaker configured by `breaker`.
    pub fn new(interceptor: Arc<dyn Interceptor>, policy: FaultPolicy, breaker: BreakerConfig) -> Self {
        Link { interceptor, policy, breaker: Arc::new(Breaker::new(breaker)), stats: Arc::default() }
    }

    /// True while the interceptor's circuit breaker is open.
    pub fn circuit_open(&self) -> bool {
        self.breaker.is_open()
    }

    /// The interceptor.
    pub fn interceptor(&self) -> &Arc<dyn Interceptor> {
        &self.interceptor
    }

    /// Its counters, shared by every stream of this link.
    pub fn stats(&self) -> &Arc<LinkStats> {
        &self.stats
    }
}

impl From<Arc<dyn Interceptor>> for Link {
    fn from(interceptor: Arc<dyn Interceptor>) -> Self {
        Link::new(interceptor, FaultPolicy::default(), BreakerConfig::default())
    }
}

/// Whose content a stream carries, which decides what a fault on it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Judging {
    /// An upstream's event stream or body: a fault is the interceptor's; it feeds the
    /// interceptor's circuit breaker, and its fault policy applies.
    #[default]
    Upstream,
    /// A client's request body. A fault that content can cause (a trap: memory, deadline, a
    /// panic; an invalid verdict) refuses that request only: it does not feed the breaker that
    /// protects every other client, and `fail-open` does not let the body through, since a client
    /// could otherwise pad a refused call until the interceptor fails on it.
    ClientBody,
}

/// The interceptors that a route's event streams pass through, in order.
#[derive(Clone, Default)]
pub struct Chain {
    links: Vec<Link>,
}

impl Chain {
    /// True if one of its interceptors has been slow lately (see [`ChainStream::is_slow`]).
    pub fn is_slow(&self) -> bool {
        any_slow(&self.links)
    }

    /// A chain of interceptors with the default policy (fail-closed) and breaker.
    pub fn new(interceptors: Vec<Arc<dyn Interceptor>>) -> Self {
        Chain { links: interceptors.into_iter().map(Link::from).collect() }
    }

    /// A chain of links, in order.
    pub fn from_links(links: Vec<Link>) -> Self {
        Chain { links }
    }

    /// True if the chain has no interceptor.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Opens a stream of an upstream's content on every interceptor, in order. A fail-open
    /// interceptor that cannot open is tried again on the stream's first batch.
    pub fn open(&self, context: &StreamContext) -> Result<ChainStream, ChainFault> {
        self.open_for(context, Judging::Upstream)
    }

    /// [`Chain::open`] for content of `judging`'s kind.
    pub fn open_for(&self, context: &StreamContext, judging: Judging) -> Result<ChainStream, ChainFault> {
        let mut stream = ChainStream {
            judging,
            links: self.links.clone(),
            streams: Vec::with_capacity(self.links.len()),
            context: context.clone(),
            spare: Batch::new(),
            ended: false,
            records: self
                .links
                .iter()
                .enumerate()
                .map(|(link, l)| LinkRecord {
                    link,
                    name: l.interceptor.name().to_string(),
                    policy: l.policy,
                    ..LinkRecord::default()
                })
                .collect(),
            released_hold: None,
        };
        for (i, link) in self.links.iter().enumerate() {
            let opened = if link.breaker.allows() { link.interceptor.open(context) } else { Err(Fault::CircuitOpen) };
            match opened {
                Ok(s) => stream.streams.push(Some(s)),
                Err(fault) => {
                    stream.streams.push(None);
                    stream.fault(i, fault)?;
                }
            }
        }
        Ok(stream)
    }
}

/// A fault of one interceptor of a chain.
#[derive(Debug, Clone)]
pub struct ChainFault {
    /// Its position in the chain.
    pub link: usize,
    /// Its name.
    pub name: String,
    /// What it did wrong.
    pub fault: Fault,
}

impl fmt::Display for ChainFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "interceptor {} ({}) {}", self.link, self.name, self.fault)
    }
}

impl std::error::Error for ChainFault {}

impl ChainFault {
    /// True for a fault the content an interceptor was given can cause: a trap or an invalid
    /// verdict (not an open circuit, a missing instance or an unreachable store).
    pub fn content_can_cause(&self) -> bool {
        matches!(self.fault, Fault::Trap { .. } | Fault::InvalidVerdict(_))
    }
}

/// What one interceptor did to one stream or body: its line in the enforcement record.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LinkRecord {
    /// Its position in the chain, and its name.
    pub link: usize,
    /// Its name.
    pub name: String,
    /// Its fault policy.
    pub policy: FaultPolicy,
    /// Batches it processed successfully, and the events in and out of them.
    pub batches: u64,
    /// Events into it.
    pub events_in: u64,
    /// Events out of it.
    pub events_out: u64,
    /// Input events it dropped.
    pub dropped: u64,
    /// Input events it replaced.
    pub modified: u64,
    /// Events it inserted.
    pub injected: u64,
    /// Its faults; of those, the batches that then passed it unmodified (fail-open).
    pub faults: u64,
    /// Faulted batches passed unmodified (fail-open).
    pub failed_open: u64,
    /// Batches that skipped it because its circuit was open.
    pub bypassed: u64,
    /// It ended the stream (or refused the body).
    pub ended: bool,
    /// What it counted, by name (a detector's matches); left out when empty.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, u64>,
    /// The time its calls took, in all (for telemetry; not in the enforcement record).
    #[serde(skip)]
    pub busy: Duration,
}

/// One stream's state in every interceptor of a chain.
pub struct ChainStream {
    judging: Judging,
    links: Vec<Link>,
    /// `None`: not open (a fault discarded it, or opening failed); reopened on the next batch.
    streams: Vec<Option<Box<dyn InterceptorStream>>>,
    context: StreamContext,
    /// The other buffer of the double-buffered pass.
    spare: Batch,
    ended: bool,
    /// What each interceptor did to this stream.
    records: Vec<LinkRecord>,
    /// The longest any link's released text had been held, since it was last taken.
    released_hold: Option<Duration>,
}

impl ChainStream {
    /// True if a link of this chain has been slow lately (a call of [`SLOW_CALL`] or more):
    /// the proxy then makes its calls where they cannot hold the threads that serve sockets.
    pub fn is_slow(&self) -> bool {
        any_slow(&self.links)
    }

    /// What each interceptor has done to this stream so far, in chain order.
    pub fn records(&self) -> &[LinkRecord] {
        &self.records
    }

    /// How long the longest-held text released since the last call had been held back by a
    /// link (from the batch it arrived in to the one that released it).
    pub fn take_released_hold(&mut self) -> Option<Duration> {
        self.released_hold.take()
    }

    /// The name of the interceptor that ended the stream, if one did.
    pub fn ended_by(&self) -> Option<&str> {
        self.records.iter().find(|r| r.ended).map(|r| r.name.as_str())
    }

    /// Passes `batch` through every interceptor; the output replaces it. Returns true if an
    /// interceptor ended the stream (the output is still to be sent, then the stream closes).
    pub fn process(&mut self, batch: &mut Batch) -> Result<bool, ChainFault> {
        for link in 0..self.links.len() {
            if batch.is_empty() {
                break;
            }
            self.run(link, batch)?;
        }
        Ok(self.ended)
    }

    fn run(&mut self, i: usize, batch: &mut Batch) -> Result<(), ChainFault> {
        let link = &self.links[i];
        if !link.breaker.allows() {
            link.stats.bypassed.fetch_add(1, Ordering::Relaxed);
            self.records[i].bypassed += 1;
            return match link.policy {
                FaultPolicy::FailOpen => Ok(()),
                FaultPolicy::FailClosed => Err(self.chain_fault(i, Fault::CircuitOpen)),
            };
        }
        crate::counts::clear();
        if self.streams[i].is_none() {
            match link.interceptor.open(&self.context) {
                Ok(stream) => self.streams[i] = Some(stream),
                Err(fault) => return self.fault(i, fault),
            }
        }
        let stream = self.streams[i].as_mut().expect("opened above");
        let started = Instant::now();
        let result = stream.process(batch, &mut self.spare);
        self.released_hold = self.released_hold.max(stream.released_hold());
        let stats = &link.stats;
        let took = started.elapsed();
        self.records[i].busy += took;
        stats.call_seconds.observe(took.as_secs_f64());
        stats.note_call(took);
        stats.batch_size.observe(batch.len() as f64);
        match result {
            Ok(applied) => {
                link.breaker.success();
                stats.batches.fetch_add(1, Ordering::Relaxed);
                stats.events_in.fetch_add(batch.len() as u64, Ordering::Relaxed);
                let out = if applied.unchanged { batch.len() } else { self.spare.len() };
                stats.events_out.fetch_add(out as u64, Ordering::Relaxed);
                stats.dropped.fetch_add(applied.dropped.into(), Ordering::Relaxed);
                stats.modified.fetch_add(applied.replaced.into(), Ordering::Relaxed);
                stats.injected.fetch_add(applied.inserted.into(), Ordering::Relaxed);
                let record = &mut self.records[i];
                crate::counts::take(&stats.counted, &mut record.counts);
                record.batches += 1;
                record.events_in += batch.len() as u64;
                record.events_out += out as u64;
                record.dropped += u64::from(applied.dropped);
                record.modified += u64::from(applied.replaced);
                record.injected += u64::from(applied.inserted);
                if applied.ended && !self.ended {
                    record.ended = true;
                    stats.streams_ended.fetch_add(1, Ordering::Relaxed);
                }
                if !applied.unchanged {
                    std::mem::swap(batch, &mut self.spare);
                }
                self.ended |= applied.ended;
                Ok(())
            }
            Err(fault) => {
                if matches!(fault, Fault::Trap { .. } | Fault::Unavailable(_)) {
                    // Its instance is gone, and this stream's state with it.
                    self.streams[i] = None;
                }
                self.fault(i, fault)
            }
        }
    }

    /// Counts a fault, feeds the breaker, and applies the policy: `Ok` means go on without this
    /// interceptor's output.
    fn fault(&mut self, i: usize, fault: Fault) -> Result<(), ChainFault> {
        crate::counts::clear();
        let link = &self.links[i];
        link.stats.record(&fault);
        self.records[i].faults += 1;
        let fault = self.chain_fault(i, fault);
        if self.judging == Judging::ClientBody && fault.content_can_cause() {
            tracing::info!(stream = %self.context.stream_id, "{fault} on a client's request body: refused, the breaker untouched");
            return Err(fault);
        }
        let link = &self.links[i];
        if link.breaker.failure() {
            link.stats.circuit_opened.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                interceptor = link.interceptor.name(),
                "circuit opened after repeated faults: the interceptor is out of service for a while"
            );
        }
        match link.policy {
            FaultPolicy::FailOpen => {
                link.stats.failed_open.fetch_add(1, Ordering::Relaxed);
                self.records[i].failed_open += 1;
                tracing::warn!(stream = %self.context.stream_id, "{fault}; the batch passes unmodified (fail-open)");
                Ok(())
            }
            FaultPolicy::FailClosed => Err(fault),
        }
    }

    fn chain_fault(&self, i: usize, fault: Fault) -> ChainFault {
        ChainFault { link: i, name: self.links[i].interceptor.name().to_string(), fault }
    }

    /// Ends the stream in every interceptor, in order. Events that interceptor `i` adds on
    /// finishing pass through interceptors `i+1..` before they are sent. Returns those events.
    pub fn finish(&mut self, reason: EndReason) -> Result<Batch, ChainFault> {
        let mut tail = Batch::new();
        let mut added = Batch::new();
        for i in 0..self.links.len() {
            if !tail.is_empty() {
                self.run(i, &mut tail)?;
            }
            let Some(stream) = self.streams[i].as_mut() else { continue };
            crate::counts::clear();
            let finished = stream.finish(reason, &mut added);
            self.released_hold = self.released_hold.max(stream.released_hold());
            match finished {
                Ok(applied) => {
                    crate::counts::take(&self.links[i].stats.counted, &mut self.records[i].counts);
                    self.records[i].injected += u64::from(applied.inserted);
                    tail.extend_from(added.view());
                }
                Err(fault) => self.fault(i, fault)?,
            }
        }
        Ok(tail)
    }
}

/// A stream dropped before every link finished it (its client went away before the end, or a
/// link failed it) frees each remaining link's state; a fault doing so is counted and logged
/// like one in a batch (it may cost an instance, and the streams on it their state).
impl Drop for ChainStream {
    fn drop(&mut self) {
        for (link, stream) in self.links.iter().zip(&mut self.streams) {
            let Some(stream) = stream else { continue };
            if let Err(fault) = stream.close() {
                link.stats.record(&fault);
                tracing::warn!(
                    stream = %self.context.stream_id,
                    interceptor = link.interceptor.name(),
                    "{fault} while freeing the state of a stream that ended early"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_then_a_good_trial_closes_it() {
        let breaker = Breaker::new(BreakerConfig {
            faults: 3,
            window: Duration::from_secs(60),
            backoff: Duration::from_millis(1),
        });
        assert!(!breaker.failure() && !breaker.failure());
        assert!(breaker.allows(), "two faults of three: still closed");
        assert!(breaker.failure(), "the third opens it");
        assert!(!breaker.allows());
        std::thread::sleep(Duration::from_millis(2));
        assert!(breaker.allows(), "after the backoff, a trial is let through");
        assert!(breaker.failure(), "a failed trial opens it again...");
        assert_eq!(breaker.lock().backoff, Duration::from_millis(2), "...for twice as long");
        std::thread::sleep(Duration::from_millis(3));
        assert!(breaker.allows());
        breaker.success();
        assert!(!breaker.tripped.load(Ordering::Relaxed) && breaker.allows(), "a good trial closes it");
        assert!(!breaker.failure(), "and the fault count starts over");
    }

    #[test]
    fn an_interceptor_is_slow_until_its_calls_show_it_is_fast_and_one_slow_call_marks_it_again() {
        let stats = LinkStats::default();
        for call in 0..6 {
            assert!(stats.is_slow(), "unproven after {call} fast calls");
            stats.note_call(Duration::from_micros(5));
        }
        assert!(!stats.is_slow(), "six fast calls prove it");
        stats.note_call(SLOW_CALL);
        assert!(stats.is_slow(), "one slow call marks it at once");
    }

    #[test]
    fn after_a_slow_call_fast_calls_do_not_unmark_an_interceptor_until_its_hold_is_over() {
        let stats = LinkStats::default();
        (0..6).for_each(|_| stats.note_call(Duration::from_micros(5)));
        stats.note_call(Duration::from_millis(100)); // held for 10 s
        for call in 0..200 {
            assert!(stats.is_slow(), "still held after {call} fast calls");
            stats.note_call(Duration::from_micros(5));
        }
        stats.slow_until.store(hold_clock() - 1, Ordering::Relaxed); // the hold runs out
        assert!(!stats.is_slow(), "the decayed mark and an expired hold: fast again");
        assert_eq!(stats.slow_until.load(Ordering::Relaxed), 0, "and the clock is no longer read");
    }
}
