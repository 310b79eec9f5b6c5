//! The cost of the WebAssembly boundary: batch against per-event calls, and guest against
//! native for each example, per event.
//!
//! `cargo bench -p sluicegate-benches --bench boundary`
#![allow(missing_docs)] // criterion's macros generate public items without docs

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluicegate::batch::Batch;
use sluicegate::host::{Limits, Runtime};
use sluicegate::spec::Spec;
use sluicegate::{Config, StreamContext};
use sluicegate_benches::batch;
use std::hint::black_box;
use std::time::Duration;

fn stream(runtime: &Runtime, spec: &str) -> Box<dyn sluicegate::interceptor::InterceptorStream> {
    let interceptor = spec.parse::<Spec>().unwrap().load(runtime, Config::default()).unwrap();
    interceptor.open(&StreamContext { status: 200, ..StreamContext::default() }).unwrap()
}

/// Batch against per-event at several batch sizes; native passthrough as the floor.
fn batch_vs_per_event(c: &mut Criterion) {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let mut group = c.benchmark_group("boundary");
    for size in [1usize, 8, 64, 256] {
        let input = batch(size, 200);
        group.throughput(Throughput::Elements(size as u64));
        for spec in ["native:passthrough", "example:passthrough", "example:legacy-passthrough"] {
            let mut s = stream(&runtime, spec);
            let mut out = Batch::new();
            group.bench_with_input(BenchmarkId::new(spec, size), &input, |b, input| {
                b.iter(|| black_box(s.process(input, &mut out).unwrap()))
            });
        }
    }
    group.finish();
}

/// Each example as a guest and as its native twin, batch 64, ~200-byte events.
fn guest_vs_native(c: &mut Criterion) {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let mut group = c.benchmark_group("guest-vs-native");
    let input = batch(64, 200);
    group.throughput(Throughput::Elements(64));
    for name in ["passthrough", "redact", "drop", "summary"] {
        for kind in ["native", "example"] {
            let mut s = stream(&runtime, &format!("{kind}:{name}"));
            let mut out = Batch::new();
            group.bench_function(BenchmarkId::new(name, kind), |b| {
                b.iter(|| black_box(s.process(&input, &mut out).unwrap()))
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(30);
    targets = batch_vs_per_event, guest_vs_native
}
criterion_main!(benches);
