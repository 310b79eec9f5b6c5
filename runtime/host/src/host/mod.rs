//! The WebAssembly host: loads interceptor components, finds which world each implements, and
//! runs streams on a small pool of shared instances.
//!
//! # Instance model
//!
//! An interceptor has a few instances (by default one per core), created lazily through one
//! `InstancePre` with the pooling allocator. Each stream is pinned to one instance and owns a
//! `stream` resource inside it, which holds the stream's state. So 10,000 streams cost 10,000
//! small guest objects, not 10,000 linear memories, and opening a stream costs one guest call,
//! not an instantiation. A stream's calls take its instance's lock; calls are short, bounded by
//! the interceptor's limits.
//!
//! A trap poisons an instance: it is discarded, and every stream pinned to it loses its state
//! (its next call reports [`Fault::Unavailable`]). The next stream to open on that slot gets a
//! fresh instance.

pub mod cache;
mod inert_io;
mod text_guest;
mod ticker;
mod traps;
mod wasi;
#[cfg(all(test, feature = "yield-probe"))]
mod yield_cost;

use crate::batch::Batch;
use crate::bindings;
use crate::config::{InterceptorConfig, LimitsConfig};
use crate::interceptor::{Fault, Interceptor, InterceptorStream, World};
use crate::legacy;
use crate::verdict::{Applied, apply_batch, apply_finish};
use anyhow::bail;
use bindings::batch::{BatchInterceptor, BatchInterceptorPre};
use bindings::event::{EventInterceptor, EventInterceptorPre};
use bindings::text::{TextInterceptor as TextGuest, TextInterceptorPre};
use sluicegate_guest::{Config, EndReason, StreamContext, VerdictBuilder};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
pub use ticker::EPOCH_TICK;
use ticker::Ticker;
use wasmtime::component::{Component, HasSelf, Linker, ResourceAny, ResourceTable};
use wasmtime::error::Context as _;
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Limits for one interceptor's instances (the `Runtime`'s are the defaults).
#[derive(Debug, Clone)]
pub struct Limits {
    /// The longest one call into the guest may run (a batch, a stream's start or end). A guest
    /// still running then is stopped (a trap) within one more epoch tick.
    pub call_deadline: Duration,
    /// Give the guest the real wall and monotonic clocks. Without, both read zero.
    pub grant_clocks: bool,
    /// Lines per second a guest may write to stdout and stderr (together) before lines are dropped
    /// from the log (and counted); bursts of up to ten times this are allowed.
    pub log_lines_per_second: u32,
    /// The largest linear memory a guest instance may grow to, in bytes.
    pub max_memory_bytes: usize,
    /// The largest table a guest instance may grow to, in elements.
    pub max_table_elements: usize,
    /// The most field bytes one verdict may produce.
    pub max_output_bytes: usize,
    /// Instances per interceptor (streams are spread over them).
    pub instances_per_interceptor: usize,
}

/// `[limits]`'s defaults.
impl Default for Limits {
    fn default() -> Self {
        Limits::from(&LimitsConfig::default())
    }
}

impl From<&LimitsConfig> for Limits {
    fn from(limits: &LimitsConfig) -> Self {
        let instances = match limits.instances_per_interceptor {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        Limits {
            call_deadline: limits.call_deadline_ms,
            grant_clocks: false,
            log_lines_per_second: limits.guest_log_lines_per_second,
            max_memory_bytes: limits.max_memory_bytes,
            max_table_elements: limits.max_table_elements,
            max_output_bytes: limits.max_output_bytes,
            instances_per_interceptor: instances,
        }
    }
}

impl Limits {
    /// The limits of one interceptor: `[limits]` with the interceptor's own overrides.
    pub fn for_interceptor(limits: &LimitsConfig, interceptor: &InterceptorConfig) -> Self {
        let defaults = Limits::from(limits);
        Limits {
            call_deadline: interceptor.call_deadline_ms.unwrap_or(defaults.call_deadline),
            grant_clocks: interceptor.grant_clocks,
            max_memory_bytes: interceptor.max_memory_bytes.unwrap_or(defaults.max_memory_bytes),
            max_output_bytes: interceptor.max_output_bytes.unwrap_or(defaults.max_output_bytes),
            instances_per_interceptor: interceptor
                .instances
                .filter(|&n| n > 0)
                .unwrap_or(defaults.instances_per_interceptor),
            ..defaults
        }
    }
}

/// Compiles and instantiates interceptor components. One per process.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    limits: Limits,
    /// Compiled components by a hash of their bytes: loading the same component again (another
    /// chain position, another route) skips compilation.
    compiled: Mutex<HashMap<u64, Component>>,
    /// Compiled components on disk, if configured.
    disk_cache: Option<cache::ComponentCache>,
    /// Started with the first guest: a proxy without one (no interceptors, or native ones) has
    /// no deadline to keep and no thread waking 200 times a second.
    ticker: Arc<Ticker>,
}

impl Runtime {
    /// An engine tuned for short synchronous calls: no async or concurrency support (an empty
    /// call costs ~100 ns instead of ~400 ns with it), the pooling allocator for quick
    /// instantiation.
    pub fn new(limits: Limits) -> anyhow::Result<Self> {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        config.concurrency_support(false);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        // CPU deadlines: a ticker thread advances the epoch; each call gets a deadline in ticks.
        config.epoch_interruption(true);
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_component_instances(1000);
        pool.total_core_instances(4000);
        pool.total_memories(1000);
        pool.total_tables(2000);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).context("creating the WebAssembly engine")?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        // Streams and polling that never wait (see `inert_io`) replace wasmtime-wasi's.
        linker.allow_shadowing(true);
        wasmtime_wasi::p2::bindings::sync::io::poll::add_to_linker::<_, inert_io::HasInertIo>(
            &mut linker,
            inert_io_of,
        )?;
        wasmtime_wasi::p2::bindings::sync::io::streams::add_to_linker::<_, inert_io::HasInertIo>(
            &mut linker,
            inert_io_of,
        )?;
        linker.allow_shadowing(false);
        bindings::batch::sluicegate::interceptor::host::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)?;
        bindings::batch::sluicegate::interceptor::store::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)?;
        Ok(Runtime { engine, linker, limits, compiled: Mutex::default(), disk_cache: None, ticker: Arc::default() })
    }

    /// Keeps compiled components in `dir` across restarts (see [`cache`]).
    pub fn with_disk_cache(mut self, dir: &std::path::Path) -> anyhow::Result<Self> {
        self.disk_cache = Some(cache::ComponentCache::open(dir)?);
        Ok(self)
    }

    /// The default limits of interceptors loaded by this runtime.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// True while the epoch ticker sleeps: no guest has been called for longer than the longest
    /// deadline (the next call wakes it). False before the first guest is loaded.
    pub fn epoch_ticker_asleep(&self) -> bool {
        self.ticker.is_asleep()
    }

    /// Compiles `wasm` (a component) and prepares it as interceptor `name` with `config`, under
    /// the runtime's default limits.
    ///
    /// Fails, naming the problem, if the bytes are not a component, if it imports something the
    /// host does not provide, or if it implements neither interceptor world.
    pub fn load(&self, name: &str, wasm: &[u8], config: Config) -> anyhow::Result<ComponentInterceptor> {
        self.load_with_limits(name, wasm, config, self.limits.clone())
    }

    /// [`Runtime::load`] with limits of its own.
    pub fn load_with_limits(
        &self,
        name: &str,
        wasm: &[u8],
        config: Config,
        limits: Limits,
    ) -> anyhow::Result<ComponentInterceptor> {
        let component = self.compile(wasm).with_context(|| format!("{name}: not a valid WebAssembly component"))?;
        self.ticker.start(&self.engine);
        let pre = self
            .linker
            .instantiate_pre(&component)
            .with_context(|| format!("{name}: the component imports something sluicegate does not provide"))?;
        let pre = if let Ok(pre) = BatchInterceptorPre::new(pre.clone()) {
            Pre::Batch(pre)
        } else if let Ok(pre) = TextInterceptorPre::new(pre.clone()) {
            Pre::Text(pre)
        } else if let Ok(pre) = EventInterceptorPre::new(pre) {
            Pre::Event(pre)
        } else {
            let exports: Vec<String> =
                component.component_type().exports(&self.engine).map(|(n, _)| n.to_string()).collect();
            bail!(
                "{name}: the component implements no interceptor world: it should export \
                 `sluicegate:interceptor/batch@0.1.x` ({}), `sluicegate:interceptor/text@0.1.x` ({}) \
                 or `sluicegate:interceptor/event@0.1.x` ({}), but it exports [{}]",
                World::Batch,
                World::Text,
                World::Event,
                exports.join(", ")
            );
        };
        let slots = (0..limits.instances_per_interceptor.max(1)).map(|_| Mutex::new(Slot::default())).collect();
        let shared = Arc::new(Shared {
            name: name.into(),
            pre,
            config: Arc::new(config),
            log_budget: Arc::new(wasi::LogBudget::new(limits.log_lines_per_second)),
            limits,
            slots,
            next_slot: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            ticker: self.ticker.clone(),
        });
        self.ticker.covers(shared.deadline_ticks());
        if let Pre::Text(_) = shared.pre {
            // A text guard builds itself from its configuration when it declares its settings:
            // start its first instance now, so that a bad configuration stops the start (or the
            // reload), not the first stream.
            let live = shared.instantiate().map_err(|e| e.context(format!("{name}: the guard did not start")))?;
            shared.lock(0).live = Some(live);
        }
        Ok(ComponentInterceptor { shared })
    }
}

/// A component's imports and exports by name, and whether the host can link it.
#[derive(Debug, Clone)]
pub struct ComponentShape {
    /// The interfaces it imports, by name.
    pub imports: Vec<String>,
    /// The interfaces it exports, by name.
    pub exports: Vec<String>,
    /// Why the host cannot provide the component's imports, if it cannot.
    pub link_error: Option<String>,
}

impl Runtime {
    /// Compiles `wasm` and lists what it imports and exports, without instantiating it.
    pub fn inspect(&self, wasm: &[u8]) -> anyhow::Result<ComponentShape> {
        let component = self.compile(wasm)?;
        let ty = component.component_type();
        Ok(ComponentShape {
            imports: ty.imports(&self.engine).map(|(n, _)| n.to_string()).collect(),
            exports: ty.exports(&self.engine).map(|(n, _)| n.to_string()).collect(),
            link_error: self.linker.instantiate_pre(&component).err().map(|e| format!("{e:#}")),
        })
    }
}

impl Runtime {
    fn compile(&self, wasm: &[u8]) -> wasmtime::Result<Component> {
        let key = {
            let mut hasher = std::hash::DefaultHasher::new();
            wasm.hash(&mut hasher);
            hasher.finish()
        };
        if let Some(component) = self.compiled.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(component.clone());
        }
        let component = match &self.disk_cache {
            Some(cache) => cache.get_or_compile(&self.engine, wasm)?,
            None => Component::new(&self.engine, wasm)?,
        };
        self.compiled.lock().unwrap_or_else(|p| p.into_inner()).insert(key, component.clone());
        Ok(component)
    }
}

fn inert_io_of(state: &mut HostState) -> inert_io::InertIo<'_> {
    inert_io::InertIo(&mut state.table)
}

/// What every store of an interceptor holds.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    config: Arc<Config>,
    name: Arc<str>,
    limits: traps::GuestLimits,
    /// The guest's last error line: what it said before failing to start (its configuration's
    /// fault, in the SDKs), put in the load error.
    last_error: Option<String>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl bindings::batch::sluicegate::interceptor::host::Host for HostState {
    fn log(&mut self, level: bindings::Level, message: String) {
        use bindings::Level;
        let name = &*self.name;
        match level {
            Level::Trace => tracing::trace!(interceptor = name, "{message}"),
            Level::Debug => tracing::debug!(interceptor = name, "{message}"),
            Level::Info => tracing::info!(interceptor = name, "{message}"),
            Level::Warn => tracing::warn!(interceptor = name, "{message}"),
            Level::Error => {
                tracing::error!(interceptor = name, "{message}");
                self.last_error = Some(message);
            }
        }
    }

    fn config_get(&mut self, key: String) -> Option<String> {
        self.config.get(&key).map(String::from)
    }

    fn config_entries(&mut self) -> Vec<(String, String)> {
        self.config.entries().to_vec()
    }

    /// Into the same per-thread tally as a native interceptor's counts; the chain takes it
    /// after the call (see [`crate::counts`]).
    fn count(&mut self, name: String, n: u32) {
        sluicegate_guest::count(&name, n);
    }
}

impl bindings::batch::sluicegate::interceptor::types::Host for HostState {}

/// The store, for guests: the interceptor's handle (see [`crate::store`]), carried by its config.
impl bindings::batch::sluicegate::interceptor::store::Host for HostState {
    fn get(&mut self, key: String) -> Result<Option<wit_store::Entry>, wit_store::Error> {
        let entry = self.config.store().get(&key).map_err(to_wit_error)?;
        Ok(entry.map(|e| wit_store::Entry { value: e.value, expires_in: e.expires_in }))
    }

    fn increment(&mut self, key: String, by: i64, ttl_seconds: u32) -> Result<i64, wit_store::Error> {
        self.config.store().increment(&key, by, ttl_seconds).map_err(to_wit_error)
    }

    fn compare_and_set(
        &mut self,
        key: String,
        expected: Option<String>,
        value: String,
        ttl_seconds: u32,
    ) -> Result<bool, wit_store::Error> {
        self.config.store().compare_and_set(&key, expected.as_deref(), &value, ttl_seconds).map_err(to_wit_error)
    }
}

use bindings::batch::sluicegate::interceptor::store as wit_store;

fn to_wit_error(e: crate::store::StoreError) -> wit_store::Error {
    use crate::store::StoreError;
    match e {
        StoreError::Unavailable(why) => wit_store::Error::Unavailable(why),
        StoreError::NotACounter => wit_store::Error::NotACounter,
        StoreError::TooLarge => wit_store::Error::TooLarge,
    }
}

enum Pre {
    Batch(BatchInterceptorPre<HostState>),
    Text(TextInterceptorPre<HostState>),
    Event(EventInterceptorPre<HostState>),
}

enum Guest {
    Batch(BatchInterceptor),
    /// A text guard, and what it declared when instantiated.
    Text(TextGuest, text_guest::Settings),
    Event(EventInterceptor),
}

struct Live {
    store: Store<HostState>,
    guest: Guest,
}

/// One instance of the pool, or none yet (or none since its last fault).
#[derive(Default)]
struct Slot {
    live: Option<Live>,
    /// Bumped whenever the instance is discarded, so that streams opened on the old one can tell.
    generation: u64,
}

impl Slot {
    fn discard(&mut self) {
        self.live = None;
        self.generation += 1;
    }
}

struct Shared {
    name: Arc<str>,
    pre: Pre,
    config: Arc<Config>,
    limits: Limits,
    slots: Vec<Mutex<Slot>>,
    next_slot: AtomicUsize,
    log_budget: Arc<wasi::LogBudget>,
    /// Streams opened and not yet dropped.
    live: AtomicUsize,
    ticker: Arc<Ticker>,
}

impl Shared {
    fn lock(&self, slot: usize) -> MutexGuard<'_, Slot> {
        // A panic while holding the lock leaves the slot as consistent as a trap would.
        self.slots[slot].lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A new store's state for an instance of this interceptor.
    fn host_state(&self) -> HostState {
        HostState {
            wasi: wasi::inert_ctx(&self.name, self.limits.grant_clocks, &self.log_budget),
            table: ResourceTable::new(),
            config: self.config.clone(),
            name: self.name.clone(),
            limits: traps::GuestLimits {
                memory_bytes: self.limits.max_memory_bytes,
                table_elements: self.limits.max_table_elements,
                instances: 64,
            },
            last_error: None,
        }
    }

    fn instantiate(&self) -> anyhow::Result<Live> {
        let mut store = Store::new(self.pre_engine(), self.host_state());
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        self.ticker.arm(&mut store, self.deadline_ticks());
        let guest = match &self.pre {
            Pre::Batch(pre) => pre.instantiate(&mut store).map(Guest::Batch),
            Pre::Text(pre) => pre.instantiate(&mut store).and_then(|guest| {
                let settings = guest.sluicegate_interceptor_text().call_describe(&mut store)?;
                Ok(Guest::Text(guest, text_guest::Settings::from(settings)))
            }),
            Pre::Event(pre) => pre.instantiate(&mut store).map(Guest::Event),
        };
        match guest {
            Ok(guest) => Ok(Live { store, guest }),
            Err(e) => match store.data_mut().last_error.take() {
                Some(said) => Err(anyhow::Error::from(e).context(format!("the guest said: {said}"))),
                None => Err(e.into()),
            },
        }
    }

    fn deadline_ticks(&self) -> u64 {
        (self.limits.call_deadline.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64 + 1
    }

    /// Gives the next call into `live` its deadline, counted from now. Every entry into guest
    /// code needs this first: a deadline is a tick of the engine's epoch, so one set for an
    /// earlier call has passed once the instance has been idle for a deadline, and a call made
    /// under it would be stopped at its first instruction.
    fn arm(&self, live: &mut Live) {
        self.ticker.arm(&mut live.store, self.deadline_ticks());
    }

    fn pre_engine(&self) -> &Engine {
        match &self.pre {
            Pre::Batch(pre) => pre.engine(),
            Pre::Text(pre) => pre.engine(),
            Pre::Event(pre) => pre.engine(),
        }
    }
}

/// An interceptor backed by a WebAssembly component.
pub struct ComponentInterceptor {
    shared: Arc<Shared>,
}

impl Interceptor for ComponentInterceptor {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn world(&self) -> World {
        match self.shared.pre {
            Pre::Batch(_) => World::Batch,
            Pre::Text(_) => World::Text,
            Pre::Event(_) => World::Event,
        }
    }

    fn live_streams(&self) -> usize {
        self.shared.live.load(Ordering::SeqCst)
    }

    fn open(&self, context: &StreamContext) -> Result<Box<dyn InterceptorStream>, Fault> {
        let shared = &self.shared;
        let slot_index = shared.next_slot.fetch_add(1, Ordering::Relaxed) % shared.slots.len();
        let mut slot = shared.lock(slot_index);
        if slot.live.is_none() {
            let live = shared.instantiate().map_err(|e| Fault::Unavailable(format!("instantiation failed: {e:#}")))?;
            slot.live = Some(live);
        }
        let generation = slot.generation;
        let live = slot.live.as_mut().expect("instantiated above");
        shared.arm(live);
        crate::store::clear_unavailable();
        let (constructed, settings) = construct(live, context);
        let resource = match constructed {
            Ok(resource) => resource,
            Err(trap) => {
                slot.discard();
                return Err(traps::fault_of(&trap));
            }
        };
        if let Some(why) = crate::store::take_unavailable() {
            // The stream does not start; its state is dropped in the guest (a trap there
            // discards the instance, as any trap does).
            shared.arm(live);
            if let Some(resource) = resource
                && resource.resource_drop(&mut live.store).is_err()
            {
                slot.discard();
            }
            return Err(Fault::Store(why));
        }
        drop(slot);
        shared.live.fetch_add(1, Ordering::SeqCst);
        let stream = ComponentStream {
            shared: shared.clone(),
            slot: slot_index,
            generation,
            resource,
            verdict: VerdictBuilder::new(),
        };
        Ok(match settings {
            Some(settings) => text_guest::open(stream, settings, context, shared.limits.max_output_bytes),
            None => Box::new(stream),
        })
    }
}

/// Creates the guest's state for a stream on `live` (none for a per-event guest), and what a
/// text guard declared.
fn construct(
    live: &mut Live,
    context: &StreamContext,
) -> (wasmtime::Result<Option<ResourceAny>>, Option<text_guest::Settings>) {
    let (request_headers, response_headers) =
        (borrow_pairs(&context.request_headers), borrow_pairs(&context.response_headers));
    let ctx = bindings::StreamContext {
        stream_id: &context.stream_id,
        method: &context.method,
        path: &context.path,
        query: &context.query,
        request_headers: &request_headers,
        status: context.status,
        response_headers: &response_headers,
    };
    match &live.guest {
        Guest::Batch(guest) => {
            (guest.sluicegate_interceptor_batch().stream_state().call_constructor(&mut live.store, ctx).map(Some), None)
        }
        Guest::Text(guest, declared) => (
            guest.sluicegate_interceptor_text().stream_state().call_constructor(&mut live.store, ctx).map(Some),
            Some(declared.clone()),
        ),
        Guest::Event(_) => (Ok(None), None),
    }
}

/// Header pairs borrowed as the generated bindings take them.
fn borrow_pairs(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect()
}

fn to_wit_reason(r: EndReason) -> bindings::EndReason {
    match r {
        EndReason::UpstreamClosed => bindings::EndReason::UpstreamClosed,
        EndReason::UpstreamFailed => bindings::EndReason::UpstreamFailed,
        EndReason::ClientGone => bindings::EndReason::ClientGone,
        EndReason::EndedByInterceptor => bindings::EndReason::EndedByInterceptor,
        EndReason::Shutdown => bindings::EndReason::Shutdown,
    }
}

/// A stream on one instance of a component interceptor.
struct ComponentStream {
    shared: Arc<Shared>,
    slot: usize,
    generation: u64,
    /// The guest's `stream-state` resource (batch world only); `None` once dropped.
    resource: Option<ResourceAny>,
    /// Scratch space for the legacy shim.
    verdict: VerdictBuilder,
}

impl ComponentStream {
    /// Runs `call` on this stream's live instance; a trap discards the instance.
    fn with_live<R>(
        &mut self,
        call: impl FnOnce(&mut Live, Option<ResourceAny>, &mut VerdictBuilder) -> wasmtime::Result<R>,
    ) -> Result<R, Fault> {
        let mut slot = self.shared.lock(self.slot);
        if slot.generation != self.generation || slot.live.is_none() {
            self.resource = None;
            return Err(Fault::Unavailable(
                "the instance this stream ran on was discarded after a fault; its state is lost".into(),
            ));
        }
        let live = slot.live.as_mut().expect("checked above");
        self.shared.arm(live);
        let (resource, verdict) = (self.resource, &mut self.verdict);
        crate::store::clear_unavailable();
        match call(live, resource, verdict) {
            Ok(r) => match crate::store::take_unavailable() {
                Some(why) => Err(Fault::Store(why)),
                None => Ok(r),
            },
            Err(trap) => {
                slot.discard();
                self.resource = None;
                Err(traps::fault_of(&trap))
            }
        }
    }
}

impl InterceptorStream for ComponentStream {
    fn process(&mut self, input: &Batch, output: &mut Batch) -> Result<Applied, Fault> {
        let max_output = self.shared.limits.max_output_bytes;
        let view = input.view();
        let verdict = self.with_live(|live, resource, scratch| match &live.guest {
            Guest::Text(..) => unreachable!("a text guard's streams are the engine's (text_guest)"),
            Guest::Batch(guest) => {
                let batch = bindings::Batch { bytes: input.bytes(), index: input.index() };
                let resource = resource.expect("a batch stream has a resource");
                let v = guest.sluicegate_interceptor_batch().stream_state().call_process_batch(
                    &mut live.store,
                    resource,
                    batch,
                )?;
                Ok(Some(v))
            }
            Guest::Event(guest) => {
                scratch.clear();
                legacy::shim(view, scratch, |event| {
                    guest.sluicegate_interceptor_event().call_process_event(&mut live.store, &event)
                })?;
                scratch.complete(view.len());
                Ok(None)
            }
        })?;
        let applied = match verdict {
            Some(v) => apply_batch(input, &v.ops, &v.bytes, output, max_output)?,
            None => apply_batch(input, self.verdict.ops(), self.verdict.bytes(), output, max_output)?,
        };
        Ok(applied)
    }

    fn finish(&mut self, reason: EndReason, output: &mut Batch) -> Result<Applied, Fault> {
        let max_output = self.shared.limits.max_output_bytes;
        let verdict = self.with_live(|live, resource, _| match (&live.guest, resource) {
            (Guest::Batch(guest), Some(resource)) => {
                let v = guest.sluicegate_interceptor_batch().stream_state().call_finish(
                    &mut live.store,
                    resource,
                    to_wit_reason(reason),
                )?;
                resource.resource_drop(&mut live.store)?;
                Ok(Some(v))
            }
            _ => Ok(None),
        })?;
        self.resource = None;
        match verdict {
            Some(v) => Ok(apply_finish(&v.ops, &v.bytes, output, max_output)?),
            None => {
                output.clear();
                Ok(Applied { ended: true, ..Applied::default() })
            }
        }
    }

    fn close(&mut self) -> Result<(), Fault> {
        if self.resource.is_none() {
            return Ok(());
        }
        let freed = self.with_live(|live, resource, _| resource.map_or(Ok(()), |r| r.resource_drop(&mut live.store)));
        self.resource = None;
        match freed {
            // The instance was discarded after a fault, and the state with it.
            Err(Fault::Unavailable(_)) => Ok(()),
            other => other,
        }
    }
}

impl Drop for ComponentStream {
    fn drop(&mut self) {
        // A stream that ends without `finish` (its task was cancelled) still frees its guest
        // state. A chain closes its streams itself, counting a fault; this is for the others.
        if let Err(fault) = self.close() {
            tracing::warn!(interceptor = %self.shared.name, "{fault} while freeing a cancelled stream's state");
        }
        self.shared.live.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deadline is a tick of the engine's epoch: the call that frees a cancelled stream's
    /// state gets one of its own, so an instance idle for longer than a deadline is not stopped
    /// (and discarded, with the state of every stream on it) by its last call's, long passed.
    #[test]
    fn a_stream_cancelled_after_its_instance_was_idle_is_freed_without_a_trap() {
        let limits = Limits { instances_per_interceptor: 1, ..Limits::default() };
        let runtime = Runtime::new(limits).unwrap();
        let summary = runtime.load("summary", crate::examples::component("summary").unwrap(), Config::default());
        let summary = summary.unwrap();
        let (mut cancelled, mut neighbour) =
            (summary.open(&StreamContext::default()).unwrap(), summary.open(&StreamContext::default()).unwrap());
        let batch: Batch = ["ab", "cd", "ef"].into_iter().map(crate::sse::Event::message).collect();
        let mut out = Batch::new();
        cancelled.process(&batch, &mut out).unwrap();
        neighbour.process(&batch, &mut out).unwrap();
        // The instance idle for far longer than a deadline (the ticker's own ticks only add).
        for _ in 0..10 * summary.shared.deadline_ticks() {
            runtime.engine.increment_epoch();
        }
        drop(cancelled);
        assert_eq!(summary.live_streams(), 1);
        neighbour.process(&batch, &mut out).expect("the neighbour's instance is still there");
        neighbour.finish(EndReason::UpstreamClosed, &mut out).unwrap();
        let data = out.to_events().pop().and_then(|e| e.data).unwrap();
        assert_eq!(&data[..], br#"{"events":6,"data_bytes":12}"#, "the neighbour kept its state");
    }

    /// The ticker sleeps once no guest has been called for longer than the longest deadline,
    /// and the next call wakes it (that it then keeps the call's deadline: `guests.rs`).
    #[test]
    fn the_epoch_ticker_sleeps_while_no_guest_is_called_and_a_call_wakes_it() {
        let runtime = Runtime::new(Limits::default()).unwrap();
        assert!(!runtime.epoch_ticker_asleep(), "no guest, no ticker");
        let summary = runtime.load("summary", crate::examples::component("summary").unwrap(), Config::default());
        let mut stream = summary.unwrap().open(&StreamContext::default()).unwrap();
        let waited = std::time::Instant::now();
        while !runtime.epoch_ticker_asleep() {
            assert!(waited.elapsed() < Duration::from_secs(30), "the ticker never went to sleep");
            std::thread::sleep(Duration::from_millis(1)); // polling its state
        }
        let batch: Batch = ["ab"].into_iter().map(crate::sse::Event::message).collect();
        stream.process(&batch, &mut Batch::new()).unwrap();
        // It sleeps again only a longest deadline (100 ms) and two ticks after this call.
        assert!(!runtime.epoch_ticker_asleep(), "the call woke it");
    }
}
