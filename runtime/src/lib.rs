//! sluicegate: stream Server-Sent Events through sandboxed WebAssembly interceptors, in batches.
//!
//! The pieces, in the order an event meets them:
//! - [`event`]: one event-stream block, owned;
//! - [`sse`]: the spec-exact codec (an incremental parser and an encoder);
//! - [`lines`]: the same for line-delimited JSON streams (a line per event);
//! - [`batch`]: events in the wire layout of the WIT contract, one buffer per batch;
//! - [`chain`]: an ordered list of [`interceptor::Interceptor`]s that a stream passes through;
//! - [`bindings`]: the WIT contract's types and calls, generated for the host;
//! - [`host`]: the wasmtime host that runs component interceptors (both worlds);
//! - [`native`] and [`legacy`]: native interceptors, and the per-event contract with its shim;
//! - [`verdict`]: applying an interceptor's answer, with every check of the contract;
//! - [`engine`]: one event stream without I/O: parse, batch, chain, remember ids, encode;
//! - [`check`]: what `sluicegate check` finds wrong with a component.

pub mod batch;
pub mod bench;
pub mod bindings;
pub mod chain;
pub mod check;
pub mod config;
pub mod engine;
pub mod event;
pub mod examples;
pub mod host;
pub mod interceptor;
pub mod legacy;
pub mod lines;
pub mod native;
pub mod proxy;
pub mod spec;
pub mod sse;
pub mod store;
pub mod verdict;

pub use sluicegate_guest::{Config, EndReason, StreamContext};
