//! Host bindings generated from `wit/interceptor.wit`, one module per world. The text and event
//! worlds reuse the batch world's imported interfaces so that one `Host` impl serves all three.
//! (The generated items carry the WIT's own docs where it has them, not on every item.)
#![allow(missing_docs)]

pub mod batch {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "batch-interceptor",
        // Batches are lowered straight from the host's buffers, without a copy into owned types.
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}

/// The batch world's exports called with `call_async` (a guest that could yield at epoch ticks),
/// for the measurement in `host/yield_cost.rs` only.
#[cfg(feature = "yield-probe")]
pub mod batch_yielding {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "batch-interceptor",
        ownership: Borrowing { duplicate_if_necessary: true },
        exports: { default: async },
        with: {
            "sluicegate:interceptor/host": super::batch::sluicegate::interceptor::host,
            "sluicegate:interceptor/store": super::batch::sluicegate::interceptor::store,
            "sluicegate:interceptor/types": super::batch::sluicegate::interceptor::types,
        },
    });
}

pub mod text {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "text-interceptor",
        // Items are lowered straight from the engine's strings.
        ownership: Borrowing { duplicate_if_necessary: true },
        with: {
            "sluicegate:interceptor/host": super::batch::sluicegate::interceptor::host,
            "sluicegate:interceptor/store": super::batch::sluicegate::interceptor::store,
            "sluicegate:interceptor/types": super::batch::sluicegate::interceptor::types,
        },
    });
}

pub mod event {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "event-interceptor",
        with: {
            "sluicegate:interceptor/host": super::batch::sluicegate::interceptor::host,
        },
    });
}

pub use batch::exports::sluicegate::interceptor::batch::{Batch, EndReason, StreamContext, Verdict};
pub use batch::sluicegate::interceptor::host::Level;
pub use event::exports::sluicegate::interceptor::event::{Action, Event};
