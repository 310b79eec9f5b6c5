//! Helpers shared by the integration tests in `tests/tests/`.

use sluicegate::batch::Batch;
use sluicegate::chain::Chain;
use sluicegate::host::{Limits, Runtime};
use sluicegate::interceptor::Interceptor;
use sluicegate::sse::{Event, Parser};
use sluicegate::{Config, EndReason, StreamContext};
use std::sync::{Arc, OnceLock};

pub mod debian;
pub mod llm;
pub mod net;
pub mod otlp;
pub mod process;
pub mod python;
pub mod redis;
pub mod tls;

include!(concat!(env!("OUT_DIR"), "/test_guests.rs"));

/// The component bytes of test guest `name` (see `tests/guests/`).
pub fn test_guest(name: &str) -> &'static [u8] {
    TEST_GUESTS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b).unwrap_or_else(|| panic!("no test guest {name}"))
}

/// One runtime for the whole test binary: compiling the engine's code once is what is slow.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new(Limits::default()).expect("runtime"))
}

/// Loads a test guest with `config` pairs.
pub fn load_test_guest(name: &str, config: &[(&str, &str)]) -> Arc<dyn Interceptor> {
    Arc::new(runtime().load(name, test_guest(name), config_of(config)).expect("load test guest"))
}

/// A guest configuration of these pairs.
pub fn config_of(pairs: &[(&str, &str)]) -> Config {
    Config::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

/// A stream context as a test GET of `/` gives.
pub fn context() -> StreamContext {
    StreamContext {
        stream_id: "test".into(),
        method: "GET".into(),
        path: "/events".into(),
        status: 200,
        ..Default::default()
    }
}

/// Parses a whole stream at once.
pub fn parse_all(input: &[u8]) -> Vec<Event> {
    let mut parser = Parser::new();
    parser.feed(input);
    let mut events: Vec<Event> = std::iter::from_fn(|| parser.next()).collect();
    events.extend(parser.finish());
    events
}

/// Runs `batches` through `chain` as one stream and returns everything it outputs (including
/// what the interceptors add when the stream ends normally).
pub fn run_chain(chain: &Chain, batches: &[Vec<Event>]) -> Vec<Event> {
    run_chain_in(chain, &context(), batches)
}

/// [`run_chain`] for a stream of `context` (its request headers, say).
pub fn run_chain_in(chain: &Chain, context: &StreamContext, batches: &[Vec<Event>]) -> Vec<Event> {
    let mut stream = chain.open(context).expect("open");
    let mut out = Vec::new();
    for events in batches {
        let mut batch: Batch = events.iter().cloned().collect();
        let ended = stream.process(&mut batch).expect("process");
        out.extend(batch.to_events());
        if ended {
            out.extend(stream.finish(EndReason::EndedByInterceptor).expect("finish").to_events());
            return out;
        }
    }
    out.extend(stream.finish(EndReason::UpstreamClosed).expect("finish").to_events());
    out
}

/// A realistic mixed stream: LLM-style chunks with e-mail addresses, MCP-style messages with
/// ids, keep-alive comments, pings, a priming event with empty data, retry, multi-line data.
pub fn sample_stream() -> Vec<u8> {
    let mut s = String::new();
    s.push_str("id: 0-0\ndata:\nretry: 3000\n\n");
    for i in 0..40 {
        match i % 8 {
            0 => s.push_str(": keep-alive\n\n"),
            1 => s.push_str("event: ping\ndata: {}\n\n"),
            2 => s.push_str(&format!("id: 1-{i}\nevent: message\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{{\"progress\":{i}}}}}\n\n")),
            3 => s.push_str(&format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"write to user{i}@example.com or ops.team+{i}@mail.example.org\"}}}}]}}\n\n")),
            4 => s.push_str("data: first line\ndata: second bob@example.net line\n\n"),
            5 => s.push_str("id: 1-x\n\n"),
            6 => s.push_str("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"caf\u{e9} \u{2028} no address\"}}\n\n"),
            _ => s.push_str("data: [DONE]\n\n"),
        }
    }
    s.into_bytes()
}

/// Splits `events` into batches of `size`.
pub fn batches_of(events: &[Event], size: usize) -> Vec<Vec<Event>> {
    events.chunks(size.max(1)).map(<[Event]>::to_vec).collect()
}

/// The value of the first `/metrics` line that is `line_start` followed by a number (the full
/// name and labels, e.g. `sluicegate_connections_total` or `m{a="b"}`); panics, showing the text,
/// if there is none.
pub fn metric(metrics: &str, line_start: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{line_start}` in {metrics}"))
}
