//! `sluicegate bench`: ns per event for a user's interceptor, at several batch sizes, next to a
//! counterpart (a native or example interceptor) on the same events.
//!
//! By default the events are synthetic (one batch, again and again, in one stream); with
//! `--events` they are whole streams of a provider's real chunks (a built-in sample per format,
//! or a file), which is what a guard over streamed text must be measured on: synthetic events
//! carry no text the host's engine follows. Each cell is timed in short rounds (a warm-up, then
//! five rounds of ~150 ms); the median round is reported. It is a quick comparison for authors; the criterion benches in `benches/` are the
//! careful measurement.

use crate::batch::Batch;
use crate::host::Runtime;
use crate::interceptor::{Interceptor, InterceptorStream};
use crate::sse::Event;
use sluicegate_guest::StreamContext;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `n` events of about `size` bytes of data, like an LLM token stream: an e-mail address in every
/// fourth, an id on every other, a type on the rest.
pub fn sample_events(n: usize, size: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let mut data = format!("{{\"i\":{i},\"delta\":\"");
            if i % 4 == 0 {
                data.push_str("mail ada@example.com ");
            }
            while data.len() + 8 < size {
                data.push_str("lorem ");
            }
            data.push_str("\"}");
            let event = Event::message(data);
            if i % 2 == 0 { event.with_id(i.to_string()) } else { event.with_type("content_block_delta") }
        })
        .collect()
}

pub use crate::text::samples::tokens;

/// One measured cell.
#[derive(Debug, Clone)]
pub struct Cell {
    /// The interceptor measured (its spec).
    pub interceptor: String,
    /// Events per call.
    pub batch_size: usize,
    /// Nanoseconds per event (the median of the rounds).
    pub ns_per_event: f64,
}

/// What the events measured are.
#[derive(Debug, Clone, Default)]
pub enum Events {
    /// The same batch of ~200-byte synthetic events, again and again, in one stream: the cost of
    /// the boundary and of the interceptor's own work, without a format's text to follow.
    #[default]
    Synthetic,
    /// Whole streams of these events (a provider's real chunks), each opened, sent in batches and
    /// finished, again and again: what a guard over streamed text costs on what it will meet.
    Streams(Vec<Event>),
}

impl Events {
    /// `openai-chat`, `openai-responses`, `anthropic`, `gemini` or `ollama` (a built-in answer in
    /// that format, a token per event), or a file of Server-Sent Events.
    pub fn from_source(source: &str) -> anyhow::Result<Events> {
        use crate::text::samples::{self, Format};
        if let Some(format) = Format::ALL.into_iter().find(|f| f.name() == source) {
            // The sample answer five times over: ~300 token events, enough for every batch size.
            let answer = [samples::ANSWER; 5].join(" ");
            return Ok(Events::Streams(samples::stream(format, &samples::tokens(&answer))));
        }
        let bytes = std::fs::read(source).map_err(|e| {
            let names = Format::ALL.map(|f| f.name()).join(", ");
            anyhow::anyhow!("--events {source}: not a sample ({names}) and not a readable file: {e}")
        })?;
        let mut parser = crate::sse::Parser::new();
        parser.feed(&bytes);
        let mut events: Vec<Event> = std::iter::from_fn(|| parser.next()).collect();
        events.extend(parser.finish());
        anyhow::ensure!(!events.is_empty(), "--events {source}: no events in the file");
        Ok(Events::Streams(events))
    }

    /// How many bytes an event carries on average (for the JSON report).
    pub fn event_bytes(&self) -> usize {
        match self {
            Events::Synthetic => 200,
            Events::Streams(events) => {
                events.iter().map(|e| e.data.as_ref().map_or(0, |d| d.len())).sum::<usize>() / events.len().max(1)
            }
        }
    }
}

/// Times `interceptor` on whole streams of `events` in batches of `batch_size`; ns per event,
/// median of rounds.
pub fn measure_streams(interceptor: &Arc<dyn Interceptor>, events: &[Event], batch_size: usize) -> anyhow::Result<f64> {
    let batches: Vec<Batch> = events.chunks(batch_size).map(|c| c.iter().cloned().collect()).collect();
    let context = StreamContext { stream_id: "bench".into(), status: 200, ..Default::default() };
    let mut output = Batch::new();
    let mut round = |length: Duration| -> anyhow::Result<f64> {
        let start = Instant::now();
        let mut streams = 0u64;
        while start.elapsed() < length {
            let mut stream = interceptor.open(&context)?;
            for batch in &batches {
                if stream.process(batch, &mut output)?.ended {
                    break;
                }
            }
            stream.finish(sluicegate_guest::EndReason::UpstreamClosed, &mut output)?;
            streams += 1;
        }
        Ok(start.elapsed().as_nanos() as f64 / (streams as f64 * events.len() as f64))
    };
    round(Duration::from_millis(50))?;
    let mut rounds = (0..5).map(|_| round(Duration::from_millis(150))).collect::<anyhow::Result<Vec<f64>>>()?;
    rounds.sort_by(f64::total_cmp);
    Ok(rounds[2])
}

/// Times `interceptor` on batches of `batch_size` ~200-byte events; ns per event, median of rounds.
pub fn measure(interceptor: &Arc<dyn Interceptor>, batch_size: usize) -> anyhow::Result<f64> {
    let mut stream: Box<dyn InterceptorStream> =
        interceptor.open(&StreamContext { stream_id: "bench".into(), status: 200, ..Default::default() })?;
    let input: Batch = sample_events(batch_size, 200).into_iter().collect();
    let mut output = Batch::new();
    let mut round = |length: Duration| -> anyhow::Result<f64> {
        let start = Instant::now();
        let mut calls = 0u64;
        while start.elapsed() < length {
            for _ in 0..8 {
                stream.process(&input, &mut output)?;
            }
            calls += 8;
        }
        Ok(start.elapsed().as_nanos() as f64 / (calls as f64 * batch_size as f64))
    };
    round(Duration::from_millis(50))?;
    let mut rounds = (0..5).map(|_| round(Duration::from_millis(150))).collect::<anyhow::Result<Vec<f64>>>()?;
    rounds.sort_by(f64::total_cmp);
    Ok(rounds[2])
}

/// Measures every interceptor at every batch size, reporting progress through `progress`.
pub fn run(
    subjects: &[(String, Arc<dyn Interceptor>)],
    sizes: &[usize],
    events: &Events,
    mut progress: impl FnMut(&Cell),
) -> anyhow::Result<Vec<Cell>> {
    let mut cells = Vec::new();
    for &batch_size in sizes {
        for (name, interceptor) in subjects {
            let ns_per_event = match events {
                Events::Synthetic => measure(interceptor, batch_size)?,
                Events::Streams(events) => measure_streams(interceptor, events, batch_size)?,
            };
            let cell = Cell { interceptor: name.clone(), batch_size, ns_per_event };
            progress(&cell);
            cells.push(cell);
        }
    }
    Ok(cells)
}

/// The results as a table (ns per event; the last column compares the first subject with the
/// second).
pub fn table(subjects: &[String], sizes: &[usize], cells: &[Cell]) -> String {
    let get = |name: &str, size: usize| {
        cells.iter().find(|c| c.interceptor == name && c.batch_size == size).map(|c| c.ns_per_event)
    };
    let mut out = format!("{:>10}", "batch");
    for name in subjects {
        out.push_str(&format!("  {:>28}", truncate(name, 28)));
    }
    if subjects.len() == 2 {
        out.push_str(&format!("  {:>9}", "ratio"));
    }
    out.push('\n');
    for &size in sizes {
        out.push_str(&format!("{size:>10}"));
        for name in subjects {
            out.push_str(&format!("  {:>25.1} ns", get(name, size).unwrap_or(f64::NAN)));
        }
        if let [a, b] = subjects {
            out.push_str(&format!("  {:>8.2}x", get(a, size).unwrap_or(f64::NAN) / get(b, size).unwrap_or(f64::NAN)));
        }
        out.push('\n');
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { format!("...{}", &s[s.len() - (n - 3)..]) }
}

/// The results as JSON.
pub fn json(cells: &[Cell], event_bytes: usize) -> String {
    let rows: Vec<serde_json::Value> = cells
        .iter()
        .map(|c| {
            // Two decimals, as the table prints them.
            let ns = (c.ns_per_event * 100.0).round() / 100.0;
            serde_json::json!({ "interceptor": c.interceptor, "batch_size": c.batch_size, "ns_per_event": ns })
        })
        .collect();
    serde_json::json!({ "unit": "ns/event", "event_bytes": event_bytes, "results": rows }).to_string()
}

/// Loads the subjects: the interceptor under test, then its counterpart if any.
pub fn load_subjects(
    runtime: &Runtime,
    specs: &[crate::spec::Spec],
) -> anyhow::Result<Vec<(String, Arc<dyn Interceptor>)>> {
    // A store in memory, for interceptors that use one (a budget none of the bench's runs reaches
    // still charges every batch).
    let store = crate::store::SharedStore::memory();
    specs
        .iter()
        .map(|spec| {
            let config = sluicegate_guest::Config::default()
                .with_store(sluicegate_guest::Store::new(Arc::new(store.scoped(&spec.to_string()))));
            Ok((spec.to_string(), spec.load(runtime, config)?))
        })
        .collect()
}
