//! sluicegate: stream Server-Sent Events through sandboxed WebAssembly interceptors, in batches.
//!
//! This crate gathers three crates, one per layer, each of which can only use the ones below it:
//! `sluicegate-contract` (the data: events, batches, codecs, verdicts, configuration),
//! `sluicegate-host` (interceptors: the wasmtime host, native twins, the store, chains, the engine)
//! and `sluicegate-proxy` (the reverse proxy); and the `sluicegate` binary.
//!
//! The pieces, in the order an event meets them:
//! - [`event`]: one event-stream block, owned;
//! - [`sse`]: the spec-exact codec (an incremental parser and an encoder);
//! - [`lines`]: the same for line-delimited JSON streams (a line per event);
//! - [`batch`]: events in the wire layout of the WIT contract, one buffer per batch;
//! - [`chain`]: an ordered list of [`interceptor::Interceptor`]s that a stream passes through;
//! - [`bindings`]: the WIT contract's types and calls, generated for the host;
//! - [`host`]: the wasmtime host that runs component interceptors (all three worlds);
//! - [`text`]: the streaming-text engine: every text a model streams, found and decoded for guards;
//! - [`native`] and [`legacy`]: native interceptors, and the per-event contract with its shim;
//! - [`verdict`]: applying an interceptor's answer, with every check of the contract;
//! - [`engine`]: one event stream without I/O: parse, batch, chain, remember ids, encode;
//! - [`check`]: what `sluicegate check` finds wrong with a component;
//! - [`proxy`]: the reverse proxy that runs all of it on the network.

pub use sluicegate_contract::{batch, config, event, lines, sse, verdict};
pub use sluicegate_host::{
    bench, bindings, chain, check, engine, examples, host, interceptor, legacy, native, spec, store, text,
};
pub use sluicegate_proxy as proxy;

pub use sluicegate_guest::{Config, EndReason, StreamContext};

/// The allocator the `sluicegate` binary (and the load test's proxy role, which stands for it)
/// declares as its global allocator: jemalloc. With glibc's, an idle stream's 8 KiB connection
/// buffers (hyper's, of which a few hundred bytes are written) cost their pages anyway, since
/// each allocation's header shares them; jemalloc keeps its headers apart, so the pages never
/// written stay unmapped. Declared by binaries only: a library that picked the allocator would
/// pick it for every program that links it, tests and benchmarks included.
#[cfg(feature = "jemalloc")]
pub use tikv_jemallocator::Jemalloc;
