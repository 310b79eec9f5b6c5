//! sluicegate's bottom layer: the data every other layer passes around, with no I/O and no
//! sandbox. It imports nothing of the crates above it, and the compiler keeps it so.
//!
//! - [`event`]: one event-stream block, owned;
//! - [`batch`]: events in the wire layout of the WIT contract, one buffer per batch;
//! - [`sse`]: the spec-exact codec (an incremental parser and an encoder);
//! - [`lines`]: the same for line-delimited JSON streams (a line per event);
//! - [`verdict`]: applying an interceptor's answer, with every check of the contract;
//! - [`config`]: the configuration as plain data, every default written once.

pub mod batch;
pub mod config;
pub mod event;
pub mod lines;
pub mod sse;
pub mod verdict;
