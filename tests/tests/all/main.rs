//! The integration tests, linked into one binary (as wasmtime does with its `tests/all`): each
//! test binary links all of wasmtime, so one binary instead of fourteen saves a gigabyte of disk
//! and a dozen links per clean build. Run one group with a filter, e.g.
//! `cargo test -p sluicegate-tests --test all languages::`.
//!
//! The soak (`tests/tests/soak.rs`) stays a binary of its own: it measures this process's
//! resident memory, which other tests running beside it in one process would disturb.

mod admin;
mod admission;
mod bodies;
mod bounds;
mod budget;
mod cache;
mod closed;
mod guests;
mod languages;
mod lifecycle;
mod llm_sdks;
mod mcp;
mod patterns;
mod proxy;
mod redis;
mod sandbox;
mod sdk;
mod serve;
mod sse_properties;
mod sse_rules;
mod status_page;
mod telemetry;
mod text;
mod upstreams;
mod verdicts;
mod wasi;
