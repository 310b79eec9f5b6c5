//! The whole pipeline per event, as the proxy runs it for one read from the upstream: parse the
//! bytes, fill a batch of 64, pass it through a chain, encode the output.
//!
//! `cargo bench -p sluicegate-benches --bench pipeline`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluicegate::batch::Batch;
use sluicegate::chain::Chain;
use sluicegate::host::{Limits, Runtime};
use sluicegate::pipeline::{BatchLimits, fill_batch};
use sluicegate::spec::Spec;
use sluicegate::sse::{Parser, encode_batch, encode_event};
use sluicegate::{Config, StreamContext};
use sluicegate_benches::events;
use std::hint::black_box;
use std::time::Duration;

const BATCH: usize = 64;

fn pipeline(c: &mut Criterion) {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let mut bytes = Vec::new();
    for event in events(BATCH, 200) {
        encode_event(&mut bytes, &event);
    }
    // A read from hyper arrives as `Bytes`.
    let bytes = bytes::Bytes::from(bytes);
    let limits = BatchLimits { max_events: BATCH, ..BatchLimits::default() };
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(BATCH as u64));
    let chains: [(&str, &[&str]); 5] = [
        ("empty", &[]),
        ("native-passthrough", &["native:passthrough"]),
        ("passthrough", &["example:passthrough"]),
        ("native-redact", &["native:redact"]),
        ("redact", &["example:redact"]),
    ];
    for (label, specs) in chains {
        let links =
            specs.iter().map(|s| s.parse::<Spec>().unwrap().load(&runtime, Config::default()).unwrap()).collect();
        let mut stream = Chain::new(links).open(&StreamContext::default()).unwrap();
        let mut parser = Parser::new();
        let mut batch = Batch::new();
        let mut out = Vec::with_capacity(bytes.len() * 2);
        group.bench_function(BenchmarkId::new(label, BATCH), |b| {
            b.iter(|| {
                parser.feed_bytes(bytes.clone());
                batch.clear();
                assert_eq!(fill_batch(&mut parser, &mut batch, limits), BATCH);
                stream.process(&mut batch).unwrap();
                out.clear();
                encode_batch(&mut out, batch.view());
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(30);
    targets = pipeline
}
criterion_main!(benches);
