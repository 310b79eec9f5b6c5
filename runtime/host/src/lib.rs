//! sluicegate's interceptors: what runs an event stream's chain, above the data layer
//! (`sluicegate-contract`) and below the proxy (`sluicegate-proxy`), which it cannot see.
//!
//! - [`interceptor`]: the host's trait for any interceptor, and its typed faults;
//! - [`bindings`]: the WIT contract's types and calls, generated for the host;
//! - [`host`]: the wasmtime host that runs component interceptors (both worlds);
//! - [`native`] and [`legacy`]: native interceptors, and the per-event contract with its shim;
//! - [`store`]: state shared across streams and replicas (memory, Redis);
//! - [`spec`] and [`examples`]: `example:NAME`, `native:NAME` or a component file, loaded;
//! - [`chain`]: an ordered list of interceptors that a stream passes through;
//! - [`engine`]: one event stream without I/O: parse, batch, chain, remember ids, encode;
//! - [`text`]: the streaming-text engine: every text a model streams, in every format, decoded,
//!   for guards (native, or guests of the text world);
//! - [`check`] and [`bench`](mod@bench): `sluicegate check` and `sluicegate bench` as a library.

// The layer below, under the names its modules always had here.
use sluicegate_contract::{batch, config, lines, sse, verdict};

pub mod bench;
pub mod bindings;
pub mod chain;
pub mod check;
pub mod counts;
pub mod engine;
pub mod examples;
pub mod host;
pub mod interceptor;
pub mod legacy;
pub mod native;
pub mod spec;
pub mod store;
pub mod text;
