//! The whole pipeline per event, as the proxy runs it for one read from the upstream: the
//! proxy's own [`StreamEngine`] parses the bytes, fills a batch of 64, passes it through a chain
//! and encodes the output into the buffer that would go to the client.
//!
//! `cargo bench -p sluicegate-benches --bench pipeline` (`-- pipeline-tokens` for the LLM token
//! stream alone, `-- pipeline-streams` for batches of one over 1,000 streams taken in turn,
//! `-- json-body` for one large JSON body, `-- formats` for whole answers in each provider's
//! format).
#![allow(missing_docs)] // criterion's macros generate public items without docs

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluicegate::batch::Batch;
use sluicegate::chain::Chain;
use sluicegate::engine::{BatchLimits, StreamEngine};
use sluicegate::host::{Limits, Runtime};
use sluicegate::spec::Spec;
use sluicegate::sse::encode_event;
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
        let stream = Chain::new(links).open(&StreamContext { status: 200, ..StreamContext::default() }).unwrap();
        let mut engine = StreamEngine::new(stream, limits, 1 << 20);
        group.bench_function(BenchmarkId::new(label, BATCH), |b| {
            b.iter(|| {
                engine.feed(bytes.clone());
                let out = engine.next_batch().unwrap().unwrap();
                assert_eq!(out.events_in, BATCH);
                black_box(out.bytes.len())
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
            // Every built-in detector of the patterns guard (issue 25's goal: at most 2x
            // passthrough as a guest, 1.5x native).
            ("patterns", "example:patterns"),
            ("native-patterns", "native:patterns"),
        ] {
            let link = spec.parse::<Spec>().unwrap().load(&runtime, Config::default()).unwrap();
            let stream =
                Chain::new(vec![link]).open(&StreamContext { status: 200, ..StreamContext::default() }).unwrap();
            let mut engine = StreamEngine::new(stream, limits, 1 << 20);
            let mut next = 0;
            group.bench_function(BenchmarkId::new(label, size), |b| {
                b.iter(|| {
                    engine.feed(reads[next].clone());
                    next = (next + 1) % reads.len();
                    let out = engine.next_batch().unwrap().unwrap();
                    assert_eq!(out.events_in, size);
                    black_box(out.bytes.len())
                })
            });
        }
    }
    group.finish();
}

/// Per event at batch 1 when many streams take turns (the LLM-gateway shape, without sockets):
/// 1 stream, and 1,000 streams each fed one token chunk in turn, so each event finds its stream's
/// state (the engine's, the chain's, the guest's) gone cold, as a proxy with 1,000 slow streams
/// does. What the gap between the two costs is what many streams add to the event path itself.
fn many_streams(c: &mut Criterion) {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let chunks = sluicegate_benches::chat_token_chunks();
    let reads: Vec<bytes::Bytes> = chunks
        .iter()
        .map(|chunk| {
            let mut bytes = Vec::new();
            encode_event(&mut bytes, chunk);
            bytes::Bytes::from(bytes)
        })
        .collect();
    let limits = BatchLimits { max_events: 1, ..BatchLimits::default() };
    let mut group = c.benchmark_group("pipeline-streams");
    group.throughput(Throughput::Elements(1));
    for (label, spec) in [
        ("native-passthrough", "native:passthrough"),
        ("passthrough", "example:passthrough"),
        ("redact", "example:redact"),
    ] {
        let link = spec.parse::<Spec>().unwrap().load(&runtime, Config::default()).unwrap();
        for streams in [1, 1000] {
            let mut engines: Vec<StreamEngine> = (0..streams)
                .map(|_| {
                    StreamEngine::new(
                        Chain::new(vec![link.clone()])
                            .open(&StreamContext { status: 200, ..StreamContext::default() })
                            .unwrap(),
                        limits,
                        1 << 20,
                    )
                })
                .collect();
            let (mut next, mut read) = (0, 0);
            let reads = &reads;
            let mut one_event = move || {
                let engine = &mut engines[next];
                next = (next + 1) % streams;
                engine.feed(reads[read].clone());
                read = (read + 1) % reads.len();
                let out = engine.next_batch().unwrap().unwrap();
                black_box(out.bytes.len());
            };
            group.bench_function(BenchmarkId::new(label, streams), |b| b.iter(&mut one_event));
            if streams > 1 {
                // Each event timed after 1 MiB has been written, twice this machine's L2: as in
                // the proxy, where the kernel's work on the sockets between two events (and the
                // other streams' work) leaves little of the event path in the core's caches.
                let mut flush = vec![0u8; 1 << 20];
                group.bench_function(BenchmarkId::new(format!("{label}-cold"), streams), |b| {
                    b.iter_custom(|iters| {
                        let mut timed = Duration::ZERO;
                        for i in 0..iters {
                            flush.iter_mut().step_by(64).for_each(|byte| *byte = byte.wrapping_add(i as u8));
                            let start = std::time::Instant::now();
                            one_event();
                            timed += start.elapsed();
                        }
                        black_box(&flush);
                        timed
                    })
                });
            }
        }
    }
    group.finish();
}

/// One large JSON body (an event whose data is an object of `n` members, each key and value a
/// text the guard is handed whole) through `native:patterns`, which is handed every text: the
/// cost per member should not grow with `n` (it did, as the square of the texts, before
/// 2026-12-07).
fn json_body(c: &mut Criterion) {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let mut group = c.benchmark_group("json-body");
    let patterns = "native:patterns".parse::<Spec>().unwrap().load(&runtime, Config::default()).unwrap();
    let chain = Chain::new(vec![patterns]);
    for n in [1_000usize, 10_000, 40_000] {
        let members: Vec<String> = (0..n).map(|i| format!("\"field{i}\":\"value number {i}\"")).collect();
        let mut bytes = Vec::new();
        encode_event(&mut bytes, &sluicegate::sse::Event::message(format!("{{{}}}", members.join(","))));
        let bytes = bytes::Bytes::from(bytes);
        let limits = BatchLimits { max_events: 1, ..BatchLimits::default() };
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("patterns", n), |b| {
            b.iter(|| {
                let mut engine = StreamEngine::new(
                    chain.open(&StreamContext { status: 200, ..StreamContext::default() }).unwrap(),
                    limits,
                    1 << 24,
                );
                engine.feed(bytes.clone());
                black_box(engine.next_batch().unwrap().unwrap().bytes.len())
            })
        });
    }
    group.finish();
}

/// One whole answer (~300 token events, `sluicegate bench --events`'s sample) in each provider's
/// format through `native:redact`, in batches of 1 and 64, per event: what the streaming-text
/// engine's format work costs where a format's chunks do not keep one shape (Responses numbers
/// every event, so each is parsed).
fn formats(c: &mut Criterion) {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let redact = "native:redact".parse::<Spec>().unwrap().load(&runtime, Config::default()).unwrap();
    let context = StreamContext { status: 200, ..StreamContext::default() };
    let mut group = c.benchmark_group("formats");
    for format in ["openai-chat", "openai-responses", "anthropic", "gemini", "ollama"] {
        let Ok(sluicegate::bench::Events::Streams(events)) = sluicegate::bench::Events::from_source(format) else {
            panic!("{format} is a built-in sample");
        };
        group.throughput(Throughput::Elements(events.len() as u64));
        for size in [1, BATCH] {
            let batches: Vec<Batch> = events.chunks(size).map(|c| c.iter().cloned().collect()).collect();
            let mut output = Batch::new();
            group.bench_function(BenchmarkId::new(format, size), |b| {
                b.iter(|| {
                    let mut stream = redact.open(&context).unwrap();
                    for batch in &batches {
                        stream.process(batch, &mut output).unwrap();
                    }
                    stream.finish(sluicegate::EndReason::UpstreamClosed, &mut output).unwrap();
                    black_box(output.len())
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(30);
    targets = pipeline, token_stream, many_streams, json_body, formats
}
criterion_main!(benches);
