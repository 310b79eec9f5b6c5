//! `sluicegate check FILE`: everything the proxy would find wrong with a component, before it
//! serves a stream, in plain words.
//!
//! The check compiles the component, lists its imports and exports, detects its world, opens a
//! stream (instantiating it and running its constructor with the given configuration), sends it
//! one batch of sample events and ends the stream, timing each step. A guard of the text world is
//! also run over random splits of sample texts in every format: a split that changes what the
//! client gets breaks its contract, and the smallest such split is reported.

use crate::batch::Batch;
use crate::bench::sample_events;
use crate::host::{ComponentShape, Runtime};
use crate::interceptor::{Interceptor, World};
use sluicegate_guest::{Config, EndReason, StreamContext};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// What `check` found.
#[derive(Debug, Default)]
pub struct Report {
    /// The component's size in bytes.
    pub size: usize,
    /// How long compiling it took (none if it did not compile).
    pub compile_time: Option<Duration>,
    /// What it imports and exports (none if it did not compile).
    pub shape: Option<ComponentShape>,
    /// The world it implements, if one.
    pub world: Option<World>,
    /// Instantiating and opening the first stream.
    pub open_time: Option<Duration>,
    /// The sample batch: events in, events out, how long the call took.
    pub sample: Option<(usize, usize, Duration)>,
    /// A text guard kept its contract over this many random splits of each sample text, in
    /// every format.
    pub text_contract: Option<usize>,
    /// Everything wrong, each a sentence. Empty: the component is ready to serve.
    pub problems: Vec<String>,
}

impl Report {
    /// True if nothing was found wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The preamble of every WebAssembly binary, and the version words of the two kinds.
const MAGIC: &[u8] = b"\0asm";
const CORE_MODULE: [u8; 4] = [1, 0, 0, 0];

/// Checks `wasm` with `config` as the interceptor's configuration.
pub fn check(runtime: &Runtime, wasm: &[u8], config: Config) -> Report {
    let mut report = Report { size: wasm.len(), ..Report::default() };
    if !wasm.starts_with(MAGIC) {
        report.problems.push("this is not a WebAssembly file (it does not start with `\\0asm`)".into());
        return report;
    }
    if wasm.get(4..8) == Some(&CORE_MODULE[..]) {
        report.problems.push(
            "this is a core WebAssembly module, not a component: build for `wasm32-wasip2`, or wrap \
             the module with `wasm-tools component new`"
                .into(),
        );
        return report;
    }
    let started = Instant::now();
    let shape = match runtime.inspect(wasm) {
        Ok(shape) => shape,
        Err(e) => {
            report.problems.push(format!("the component does not compile: {e:#}"));
            return report;
        }
    };
    report.compile_time = Some(started.elapsed());
    if let Some(error) = &shape.link_error {
        report.problems.push(format!("it imports something sluicegate does not provide: {error}"));
    }
    report.shape = Some(shape);
    if !report.problems.is_empty() {
        return report;
    }
    let config_values: Vec<String> = config.entries().iter().map(|(_, v)| v.clone()).collect();
    let interceptor = match runtime.load("check", wasm, config) {
        Ok(interceptor) => interceptor,
        Err(e) => {
            report.problems.push(format!("{e:#}"));
            return report;
        }
    };
    report.world = Some(interceptor.world());
    try_a_stream(&interceptor, &mut report);
    if report.is_ok() && interceptor.world() == World::Text {
        match crate::text::contract::find_break(&interceptor, SPLITS, &config_values) {
            Some(broken) => report.problems.push(format!("the text contract breaks: {broken}")),
            None => report.text_contract = Some(SPLITS),
        }
    }
    report
}

/// Random splits of each sample text `check` tries a text guard on, per format.
const SPLITS: usize = 12;

/// Opens a stream on `interceptor`, runs a batch of sample events through it and ends it,
/// timing each step into `report` (or noting what failed).
fn try_a_stream(interceptor: &dyn Interceptor, report: &mut Report) {
    let context = StreamContext {
        stream_id: "check".into(),
        method: "GET".into(),
        path: "/".into(),
        status: 200,
        response_headers: vec![("content-type".into(), "text/event-stream".into())],
        ..StreamContext::default()
    };
    let started = Instant::now();
    let mut stream = match interceptor.open(&context) {
        Ok(stream) => stream,
        Err(fault) => {
            report.problems.push(format!("opening a stream failed (is the configuration right?): {fault}"));
            return;
        }
    };
    report.open_time = Some(started.elapsed());
    let input: Batch = sample_events(16, 200).into_iter().collect();
    let mut output = Batch::default();
    let started = Instant::now();
    match stream.process(&input, &mut output) {
        Ok(applied) => {
            let out = if applied.unchanged { input.len() } else { output.len() };
            report.sample = Some((input.len(), out, started.elapsed()));
        }
        Err(fault) => report.problems.push(format!("a batch of {} sample events failed: {fault}", input.len())),
    }
    if let Err(fault) = stream.finish(EndReason::UpstreamClosed, &mut Batch::default()) {
        report.problems.push(format!("ending the stream failed: {fault}"));
    }
}

/// What the host gives for an import, in a few words.
fn describe_import(name: &str) -> &'static str {
    let interface = name.split('@').next().unwrap_or(name);
    match interface {
        "sluicegate:interceptor/host" => "log lines and configuration",
        "sluicegate:interceptor/types" => "the contract's types",
        "sluicegate:interceptor/store" => {
            "counters and values shared across streams (and replicas, with `[store] url`)"
        }
        "wasi:cli/stdout" | "wasi:cli/stderr" => "to the proxy's log, line by line, rate-limited",
        "wasi:cli/stdin" => "empty",
        "wasi:cli/environment" => "no variables, no arguments",
        "wasi:clocks/wall-clock" | "wasi:clocks/monotonic-clock" => "stopped (reads zero) unless `grant_clocks`",
        "wasi:filesystem/types" | "wasi:filesystem/preopens" => "no files: nothing is preopened",
        i if i.starts_with("wasi:sockets/") => "no network: every address denied",
        i if i.starts_with("wasi:io/") => "streams and polling that never wait",
        i if i.starts_with("wasi:cli/terminal-") => "not a terminal",
        "wasi:cli/exit" => "exiting ends the call as a fault",
        i if i.starts_with("wasi:random/") => "random numbers",
        i if i.starts_with("wasi:") => "provided",
        _ => "?",
    }
}

/// The report as the command prints it.
pub fn render(file: &str, report: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{file}: {:.1} MB", report.size as f64 / 1e6);
    if let Some(t) = report.compile_time {
        let _ = writeln!(s, "  compiled (or loaded from the cache) in {:.2} s", t.as_secs_f64());
    }
    if let Some(world) = report.world {
        let _ = writeln!(s, "  world: {world}");
    }
    if let Some(shape) = &report.shape {
        let _ = writeln!(s, "  exports:");
        for name in &shape.exports {
            let _ = writeln!(s, "    {name}");
        }
        let _ = writeln!(s, "  imports (what sluicegate gives each):");
        let width = shape.imports.iter().map(String::len).max().unwrap_or(0);
        for name in &shape.imports {
            let _ = writeln!(s, "    {name:width$}  {}", describe_import(name));
        }
    }
    if let Some(t) = report.open_time {
        let _ = writeln!(s, "  instantiated and opened a stream in {:.2} ms", t.as_secs_f64() * 1e3);
    }
    if let Some((inp, out, t)) = report.sample {
        let _ = writeln!(
            s,
            "  sample batch: {inp} events in, {out} out, in {:.1} us ({:.0} ns/event, first call)",
            t.as_secs_f64() * 1e6,
            t.as_nanos() as f64 / inp as f64
        );
    }
    if let Some(splits) = report.text_contract {
        let _ = writeln!(
            s,
            "  text contract: kept over {splits} random splits of each sample text in each format ({})",
            crate::text::samples::Format::ALL.map(|f| f.name()).join(", ")
        );
    }
    if report.is_ok() {
        let _ = writeln!(s, "ok: ready to serve");
    } else {
        for problem in &report.problems {
            let _ = writeln!(s, "problem: {problem}");
        }
    }
    s
}
