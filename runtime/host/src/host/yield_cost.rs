//! What a call into a guest would cost if it could yield: wasmtime's `call_async` (the guest runs
//! on a fiber; an epoch tick may suspend it) against today's `call`, on the same instance and
//! stream, with no tick due (what every fast call would pay). A measurement, not a check of
//! behaviour: run it with
//!
//! ```sh
//! cargo test --release -p sluicegate-host --features yield-probe --lib yield_cost -- --ignored --nocapture
//! ```
//!
//! Figures and what was decided from them: docs/design.md ("Guests that yield").

use super::*;
use std::task::{Context, Poll, Waker};
use std::time::Instant;
use yielding::exports::sluicegate::interceptor::batch::Batch as YieldingBatch;

use bindings::batch_yielding as yielding;

/// `n` events of ~200 bytes of data as one batch. (Not `crate::bench`'s samples: that module
/// loads interceptors through this one.)
fn batch_of(n: usize) -> Batch {
    let data = format!("{{\"delta\":\"{}\"}}", "lorem ".repeat(31));
    (0..n).map(|i| crate::sse::Event::message(data.clone()).with_id(i.to_string())).collect()
}

/// Calls per round for a batch of `n` events: about the same time per round at any size.
fn calls_per_round(n: usize) -> usize {
    100_000 / n.clamp(1, 16)
}

#[test]
#[ignore = "a measurement: run it by hand (see the module's docs)"]
fn cost_of_a_call_that_could_yield() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let wasm = crate::examples::component("passthrough").unwrap();
    let shared = runtime.load("probe", wasm, Config::default()).unwrap().shared;
    let Pre::Batch(pre) = &shared.pre else { panic!("passthrough is a batch guest") };
    let mut store = Store::new(&runtime.engine, shared.host_state());
    store.set_epoch_deadline(u64::MAX / 2);
    let instance = pre.instance_pre().instantiate(&mut store).unwrap();
    let plain = BatchInterceptor::new(&mut store, &instance).unwrap();
    let yielding = yielding::BatchInterceptor::new(&mut store, &instance).unwrap();
    let context = bindings::StreamContext {
        stream_id: "probe",
        method: "GET",
        path: "/",
        query: "",
        request_headers: &[],
        status: 200,
        response_headers: &[],
    };
    let stream = plain.sluicegate_interceptor_batch().stream_state().call_constructor(&mut store, context).unwrap();
    let mut cx = Context::from_waker(Waker::noop());
    for n in [1usize, 64] {
        let batch = batch_of(n);
        let mut added = Vec::new();
        for _ in 0..7 {
            let started = Instant::now();
            for _ in 0..calls_per_round(n) {
                let wit = bindings::Batch { bytes: batch.bytes(), index: batch.index() };
                let state = plain.sluicegate_interceptor_batch().stream_state();
                std::hint::black_box(state.call_process_batch(&mut store, stream, wit).unwrap());
            }
            let plain_ns = started.elapsed().as_nanos() as f64 / calls_per_round(n) as f64;
            let started = Instant::now();
            for _ in 0..calls_per_round(n) {
                let wit = YieldingBatch { bytes: batch.bytes(), index: batch.index() };
                let state = yielding.sluicegate_interceptor_batch().stream_state();
                let mut call = std::pin::pin!(state.call_process_batch(&mut store, stream, wit));
                let Poll::Ready(verdict) = call.as_mut().poll(&mut cx) else {
                    panic!("no tick was due: it cannot yield")
                };
                std::hint::black_box(verdict.unwrap());
            }
            let yielding_ns = started.elapsed().as_nanos() as f64 / calls_per_round(n) as f64;
            eprintln!("batch {n}: call {plain_ns:.0} ns, call_async {yielding_ns:.0} ns");
            added.push(yielding_ns - plain_ns);
        }
        added.sort_by(f64::total_cmp);
        eprintln!("batch {n}: call_async adds {:.0} ns per call (median of 7 rounds)", added[3]);
    }
}
