//! The SSE codec: parse and encode throughput for small (~50 B), typical (~200 B) and large
//! (~10 KB) events. Each benchmark handles 256 events (parsed into batches of 64, as the proxy
//! does); criterion reports bytes/s, and the time divided by 256 is ns/event.
//!
//! `cargo bench -p sluicegate-benches --bench codec`
#![allow(missing_docs)] // criterion's macros generate public items without docs

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluicegate::batch::Batch;
use sluicegate::sse::{Parser, encode_batch, encode_event};
use sluicegate_benches::{batch, events};
use std::hint::black_box;
use std::time::Duration;

const EVENTS: usize = 256;

fn codec(c: &mut Criterion) {
    for (label, size) in [("small", 50), ("typical", 200), ("large", 10_000)] {
        let mut stream = Vec::new();
        for event in events(EVENTS, size) {
            encode_event(&mut stream, &event);
        }
        let stream = bytes::Bytes::from(stream);
        let mut group = c.benchmark_group(format!("codec-{label}"));
        group.throughput(Throughput::Bytes(stream.len() as u64));
        let mut parsed = Batch::new();
        group.bench_function(BenchmarkId::new("parse", EVENTS), |b| {
            b.iter(|| assert_eq!(parse_in_reads(&stream, &mut parsed), EVENTS))
        });
        // The same events with `id` first and CRLF line ends, as the Python MCP SDK writes them:
        // every line is one the encoder writes, so they are copied into its order, not encoded.
        let reordered: Vec<u8> = String::from_utf8_lossy(&stream)
            .split_terminator("\n\n")
            .map(|block| {
                let (id, rest): (Vec<&str>, Vec<&str>) = block.split('\n').partition(|line| line.starts_with("id:"));
                id.into_iter().chain(rest).map(|line| format!("{line}\r\n")).collect::<String>() + "\r\n"
            })
            .collect::<String>()
            .into_bytes();
        let reordered = bytes::Bytes::from(reordered);
        group.bench_function(BenchmarkId::new("parse-id-first-crlf", EVENTS), |b| {
            b.iter(|| assert_eq!(parse_in_reads(&reordered, &mut parsed), EVENTS))
        });
        let input = batch(EVENTS, size);
        let mut out = Vec::with_capacity(stream.len() * 2);
        group.bench_function(BenchmarkId::new("encode", EVENTS), |b| {
            b.iter(|| {
                out.clear();
                encode_batch(&mut out, input.view());
                black_box(out.len())
            })
        });
        group.finish();
    }
}

/// Parses `stream` fed in 16 KiB reads, as `Bytes` from a socket, into batches of 64, as the
/// proxy does; returns the events parsed.
fn parse_in_reads(stream: &bytes::Bytes, parsed: &mut Batch) -> usize {
    let mut parser = Parser::new();
    let mut n = 0;
    for from in (0..stream.len()).step_by(16 * 1024) {
        parser.feed_bytes(stream.slice(from..stream.len().min(from + 16 * 1024)));
        while parser.next_into(parsed) {
            n += 1;
            if parsed.len() == 64 {
                black_box(parsed.bytes());
                parsed.clear();
            }
        }
    }
    n
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(30);
    targets = codec
}
criterion_main!(benches);
