//! The host store: one call through the in-memory backend (as an interceptor's handle makes it:
//! scoped key, timing, counters), and a token budget's cost per event on an LLM token stream,
//! charged once per batch, on the memory store and (when `redis-server` is on the PATH) on a
//! Redis server on loopback that the bench starts.
//!
//! `cargo bench -p sluicegate-benches --bench store`
#![allow(missing_docs)] // criterion's macros generate public items without docs

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluicegate::chain::Chain;
use sluicegate::engine::{BatchLimits, StreamEngine};
use sluicegate::host::{Limits, Runtime};
use sluicegate::spec::Spec;
use sluicegate::sse::encode_event;
use sluicegate::store::{Backend, RedisStore, SharedStore};
use sluicegate::{Config, StreamContext};
use sluicegate_guest::Store;
use std::hint::black_box;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn store_call(c: &mut Criterion) {
    let store = SharedStore::memory().scoped("example:token-budget");
    let mut group = c.benchmark_group("store");
    group.bench_function("memory/increment", |b| b.iter(|| black_box(store.increment("key:tenant", 3, 3600).unwrap())));
    group.bench_function("memory/get", |b| b.iter(|| black_box(store.get("key:tenant").unwrap())));
    if let Some(redis) = RedisServer::start() {
        let backend = RedisStore::new(&redis.url(), Duration::from_millis(200)).unwrap();
        let store = SharedStore::over(Arc::new(backend), "redis").scoped("example:token-budget");
        group.bench_function("redis/increment", |b| {
            b.iter(|| black_box(store.increment("key:tenant", 3, 3600).unwrap()))
        });
    }
    group.finish();
}

/// The LLM token stream through a chain of `spec`, `size` chunks per read and per batch.
fn budget(c: &mut Criterion) {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let chunks = sluicegate_benches::chat_token_chunks();
    let redis = RedisServer::start();
    let mut group = c.benchmark_group("budget-tokens");
    for size in [1, 64] {
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
        let mut stores = vec![("memory", SharedStore::memory())];
        if let Some(redis) = &redis {
            let backend = RedisStore::new(&redis.url(), Duration::from_millis(200)).unwrap();
            stores.push(("redis", SharedStore::over(Arc::new(backend), "redis")));
        }
        let mut cells = vec![("passthrough", "example:passthrough", SharedStore::memory())];
        for (name, store) in stores {
            cells.push((
                if name == "memory" { "budget-memory" } else { "budget-redis" },
                "example:token-budget",
                store,
            ));
        }
        for (label, spec, store) in cells {
            // A budget no stream here reaches: every batch is charged, none is cut.
            let config = Config::new([("tokens".to_string(), (1u64 << 50).to_string())])
                .with_store(Store::new(Arc::new(store.scoped("bench"))));
            let link = spec.parse::<Spec>().unwrap().load(&runtime, config).unwrap();
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

/// Debian's redis-server on a free loopback port, for the bench's length; none if it is not
/// installed.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let server = RedisServer { child, port };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(30);
    targets = store_call, budget
}
criterion_main!(benches);
