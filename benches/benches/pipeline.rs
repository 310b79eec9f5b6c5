//! The whole pipeline per event, as the proxy runs it for one read from the upstream: parse the
//! bytes, fill a batch of 64, pass it through a chain, encode the output.
//!
//! `cargo bench -p sluicegate-benches --bench pipeline` (`-- pipeline-tokens` for the LLM token
//! stream alone).

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

/// The same per event on an LLM token stream (one chunk per token, ~290 bytes each), where the
/// streaming-text layer does its work: batches of 1 (a slow model, one event per read) and 64.
fn token_stream(c: &mut Criterion) {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let chunks = sluicegate_benches::chat_token_chunks();
    let mut group = c.benchmark_group("pipeline-tokens");
    for size in [1, BATCH] {
        // `size` consecutive chunks per read, going round the answer as one endless stream.
        let reads: Vec<bytes::Bytes> = (0..chunks.len())
            .map(|start| {
                let mut bytes = Vec::new();
                for i in 0..size {
                    encode_event(&mut bytes, &chunks[(start * size + i) % chunks.len()]);
                }
                bytes::Bytes::from(bytes)
            })
            .collect();
        let limits = BatchLimits { max_events: size, ..BatchLimits::default() };
        group.throughput(Throughput::Elements(size as u64));
        for (label, spec) in [
            ("passthrough", "example:passthrough"),
            ("redact", "example:redact"),
            ("native-passthrough", "native:passthrough"),
            ("native-redact", "native:redact"),
        ] {
            let link = spec.parse::<Spec>().unwrap().load(&runtime, Config::default()).unwrap();
            let mut stream = Chain::new(vec![link]).open(&StreamContext::default()).unwrap();
            let mut parser = Parser::new();
            let mut batch = Batch::new();
            let mut out = Vec::new();
            let mut next = 0;
            group.bench_function(BenchmarkId::new(label, size), |b| {
                b.iter(|| {
                    parser.feed_bytes(reads[next].clone());
                    next = (next + 1) % reads.len();
                    batch.clear();
                    assert_eq!(fill_batch(&mut parser, &mut batch, limits), size);
                    stream.process(&mut batch).unwrap();
                    out.clear();
                    encode_batch(&mut out, batch.view());
                    black_box(out.len())
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(30);
    targets = pipeline, token_stream
}
criterion_main!(benches);
