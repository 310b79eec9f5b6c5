//! Component guests against their native twins, the legacy shim, world detection, per-stream
//! state, and guests that misbehave.

use sluicegate::batch::Batch;
use sluicegate::chain::Chain;
use sluicegate::examples;
use sluicegate::interceptor::{Fault, Interceptor, TrapKind, World};
use sluicegate::spec::Spec;
use sluicegate::sse::Event;
use sluicegate::verdict::VerdictError;
use sluicegate::{Config, EndReason};
use sluicegate_guest::Problem;
use sluicegate_tests::*;
use std::sync::Arc;

/// Loads `spec` with `config` and a store of its own, empty (so that two loads start alike).
fn load(spec: &str, config: &[(&str, &str)]) -> Arc<dyn Interceptor> {
    let store = sluicegate::store::SharedStore::memory().scoped(spec);
    let config = config_of(config).with_store(sluicegate_guest::Store::new(Arc::new(store)));
    spec.parse::<Spec>().unwrap().load(runtime(), config).unwrap()
}

fn chain(specs: &[&str], config: &[(&str, &str)]) -> Chain {
    Chain::new(specs.iter().map(|s| load(s, config)).collect())
}

/// Configurations each example is checked with (beyond the default).
fn configs_for(name: &str) -> Vec<Vec<(&'static str, &'static str)>> {
    match name {
        "drop" => vec![vec![], vec![("types", "ping,message, content_block_delta")]],
        "redact" => vec![vec![], vec![("replacement", "<email>")]],
        "summary" => vec![vec![], vec![("event", "stats")]],
        // No default: a phrase blocker without phrases is refused.
        "deny-phrases" => vec![vec![("phrases", "second bob")], vec![("phrases", "nothing matches this, progress")]],
        // No default either: `allow` or `deny` is required.
        "tool-guard" => vec![vec![("allow", "count")], vec![("deny", "lookup")]],
        // `tokens` is required: one budget the sample stream overruns, one it does not.
        "token-budget" => vec![vec![("tokens", "12")], vec![("tokens", "100000"), ("window_seconds", "60")]],
        // Every built-in detector; then a few, dropping, with an operator's pattern that stops.
        "patterns" => vec![
            vec![],
            vec![
                ("detect", "email, phone"),
                ("action", "drop"),
                ("pattern.ticket", "TCK-[0-9]{6}"),
                ("action.ticket", "stop"),
            ],
        ],
        _ => vec![vec![]],
    }
}

#[test]
fn every_example_guest_matches_its_native_twin() {
    let events = parse_all(&sample_stream());
    let mut checked = 0;
    for name in examples::names() {
        assert!(sluicegate::native::NAMES.contains(&name), "example {name} has no native twin");
        for config in configs_for(name) {
            for size in [1, 7, 64, 256] {
                let batches = batches_of(&events, size);
                let guest = run_chain(&chain(&[&format!("example:{name}")], &config), &batches);
                let native = run_chain(&chain(&[&format!("native:{name}")], &config), &batches);
                assert_eq!(guest, native, "example:{name} vs native:{name}, batch size {size}, config {config:?}");
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 9, "every example is checked");
}

#[test]
fn examples_do_what_they_say() {
    let events = parse_all(&sample_stream());
    let batches = batches_of(&events, 16);
    let data = |out: &[Event]| -> String {
        out.iter()
            .filter_map(|e| e.data.as_ref())
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .collect::<Vec<_>>()
            .join("\n")
    };

    assert_eq!(run_chain(&chain(&["example:passthrough"], &[]), &batches), events);

    let redacted = run_chain(&chain(&["example:redact"], &[]), &batches);
    assert!(data(&events).contains("@example.com") && !data(&redacted).contains('@'), "{}", data(&redacted));
    assert!(data(&redacted).contains("[redacted]"));
    // The chat chunks' text ends in an address, which is held back: released in the chunk itself
    // when the `[DONE]` that closes it comes in the same batch, else in an event inserted before
    // that `[DONE]`; every other event keeps its place.
    let is_chat = |e: &Event| e.data.as_ref().is_some_and(|d| d.starts_with(b"{\"choices\""));
    let is_done = |e: &Event| e.data.as_deref() == Some(b"[DONE]");
    let closed_later = (0..events.len())
        .filter(|&i| is_chat(&events[i]))
        .filter(|&i| (i..events.len()).find(|&j| is_done(&events[j])).is_some_and(|j| j / 16 != i / 16))
        .count();
    let inserted = redacted.len() - events.len();
    assert!(closed_later > 0, "the sample has chunks closed in a later batch");
    assert_eq!(inserted, closed_later, "one release event per chat chunk closed in a later batch");
    let redacted_in_place: Vec<Event> = redacted
        .iter()
        .enumerate()
        .filter(|(i, e)| !(is_chat(e) && redacted.get(i + 1).is_some_and(|n| n.data.as_deref() == Some(b"[DONE]"))))
        .map(|(_, e)| e.clone())
        .collect();
    assert_eq!(redacted_in_place.len(), events.len());
    for (before, after) in events.iter().zip(&redacted_in_place) {
        let (Some(b), Some(a)) = (&before.data, &after.data) else { continue };
        if serde_json::from_slice::<serde_json::Value>(b).is_ok() {
            serde_json::from_slice::<serde_json::Value>(a).expect("JSON data stays valid JSON");
        }
        assert_eq!((&before.id, &before.event_type, before.retry), (&after.id, &after.event_type, after.retry));
    }

    let dropped = run_chain(&chain(&["example:drop"], &[]), &batches);
    let pings = events.iter().filter(|e| e.event_type.as_deref() == Some(b"ping")).count();
    assert!(pings > 0);
    assert_eq!(dropped.len(), events.len() - pings);
    assert!(dropped.iter().all(|e| e.event_type.as_deref() != Some(b"ping")));

    let summary = run_chain(&chain(&["example:summary"], &[]), &batches);
    let messages: Vec<_> = events.iter().filter(|e| !e.comment && e.data.is_some()).collect();
    let bytes: usize = messages.iter().map(|e| e.data.as_ref().unwrap().len()).sum();
    assert_eq!(&summary[..events.len()], &events[..]);
    assert_eq!(
        summary.last().unwrap(),
        &Event::message(format!("{{\"events\":{},\"data_bytes\":{bytes}}}", messages.len())).with_type("summary")
    );
}

#[test]
fn stateful_guest_keeps_state_per_stream_on_a_shared_instance() {
    // Many more streams than instances, interleaved: each stream's counts are its own.
    let summary = load("example:summary", &[]);
    let mut streams: Vec<_> = (0..9).map(|_| Chain::new(vec![summary.clone()]).open(&context()).unwrap()).collect();
    for round in 0..3 {
        for (i, stream) in streams.iter_mut().enumerate() {
            if round <= i % 3 {
                let mut batch: Batch = [Event::message("x".repeat(i + 1))].into_iter().collect();
                stream.process(&mut batch).unwrap();
            }
        }
    }
    for (i, stream) in streams.iter_mut().enumerate() {
        let n = i % 3 + 1;
        let tail = stream.finish(EndReason::UpstreamClosed).unwrap().to_events();
        assert_eq!(
            tail,
            vec![Event::message(format!("{{\"events\":{n},\"data_bytes\":{}}}", n * (i + 1))).with_type("summary")]
        );
    }
}

#[test]
fn finish_output_passes_through_later_interceptors() {
    // summary's closing event reaches redact, which sees it like any other.
    let out = run_chain(
        &chain(&["example:summary", "example:drop"], &[("types", "summary"), ("event", "summary")]),
        &[vec![Event::message("a")]],
    );
    assert_eq!(out, vec![Event::message("a")]);
}

#[test]
fn legacy_guest_through_the_shim_matches_batch_guests() {
    // The legacy guest scans each event alone, while `example:redact` follows the streamed text
    // of chat chunks across events: compare them on everything else.
    let events: Vec<Event> = parse_all(&sample_stream())
        .into_iter()
        .filter(|e| !e.data.as_ref().is_some_and(|d| d.starts_with(b"{\"choices\"")))
        .collect();
    for size in [1, 5, 64] {
        let batches = batches_of(&events, size);
        let legacy_pass = run_chain(&chain(&["example:legacy-passthrough"], &[]), &batches);
        assert_eq!(legacy_pass, run_chain(&chain(&["example:passthrough"], &[]), &batches));
        assert_eq!(legacy_pass, run_chain(&chain(&["native:legacy-passthrough"], &[]), &batches));

        let legacy_redact = Chain::new(vec![load_test_guest("legacy-redact", &[])]);
        let batch_pair = chain(&["example:drop", "example:redact"], &[]);
        assert_eq!(run_chain(&legacy_redact, &batches), run_chain(&batch_pair, &batches), "batch size {size}");
    }
}

#[test]
fn worlds_are_detected() {
    for name in examples::names() {
        let expected = match name {
            _ if name.starts_with("legacy") => World::Event,
            "redact" | "deny-phrases" | "token-budget" | "patterns" => World::Text,
            _ => World::Batch,
        };
        assert_eq!(load(&format!("example:{name}"), &configs_for(name)[0]).world(), expected, "{name}");
    }
    assert_eq!(load_test_guest("legacy-redact", &[]).world(), World::Event);
}

#[test]
fn a_component_that_imports_what_the_host_lacks_is_refused_and_check_says_what() {
    let wasm = test_guest("unlinkable");
    let err = format!("{:#}", runtime().load("unlinkable", wasm, Config::default()).err().expect("must fail"));
    assert!(err.contains("imports something sluicegate does not provide"), "{err}");
    assert!(err.contains("test:unlinkable/missing"), "{err}");

    let report = sluicegate::check::check(runtime(), wasm, Config::default());
    let shape = report.shape.as_ref().expect("it compiles, so its imports are listed");
    assert!(shape.imports.iter().any(|i| i == "test:unlinkable/missing"), "{:?}", shape.imports);
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(report.problems[0].contains("test:unlinkable/missing"), "{:?}", report.problems);
    assert!(report.world.is_none() && report.open_time.is_none(), "nothing is instantiated");
    let text = sluicegate::check::render("unlinkable.wasm", &report);
    assert!(text.contains("problem: it imports something sluicegate does not provide"), "{text}");
}

#[test]
fn a_component_of_neither_world_is_refused_by_name() {
    // The smallest valid component: no imports, no exports.
    let empty_component = b"\0asm\x0d\x00\x01\x00";
    let err = runtime().load("empty", empty_component, Config::default()).err().expect("must fail").to_string();
    assert!(err.contains("implements no interceptor world"), "{err}");
    assert!(err.contains("sluicegate:interceptor/text@0.1.x"), "{err}");
    assert!(err.contains("sluicegate:interceptor/batch@0.1.x"), "{err}");

    let core_module = b"\0asm\x01\x00\x00\x00";
    let err = format!("{:#}", runtime().load("core", core_module, Config::default()).err().expect("must fail"));
    assert!(err.contains("not a valid WebAssembly component"), "{err}");

    let err = format!("{:#}", runtime().load("junk", b"hello", Config::default()).err().expect("must fail"));
    assert!(err.contains("junk: not a valid WebAssembly component"), "{err}");
}

/// Runs one batch of `events` through the hostile guest in `mode`.
fn hostile(mode: &str, events: Vec<Event>) -> Result<Vec<Event>, Fault> {
    let guest = load_test_guest("hostile", &[("mode", mode)]);
    let mut stream = guest.open(&context())?;
    let input: Batch = events.into_iter().collect();
    let mut output = Batch::new();
    let applied = stream.process(&input, &mut output)?;
    Ok(if applied.unchanged { input.to_events() } else { output.to_events() })
}

fn two_events() -> Vec<Event> {
    vec![Event::message("a"), Event::message("b").with_id("2")]
}

#[test]
fn well_behaved_hostile_guest_is_a_control() {
    assert_eq!(hostile("keep", two_events()), Ok(two_events()));
}

#[test]
fn malformed_verdicts_are_errors_not_panics() {
    type Expected = fn(&Fault) -> bool;
    let cases: &[(&str, Expected)] = &[
        ("short-count", |f| {
            matches!(f, Fault::InvalidVerdict(VerdictError::CountMismatch { consumed: 1, batch_len: 2 }))
        }),
        ("long-count", |f| matches!(f, Fault::InvalidVerdict(VerdictError::Overrun { .. }))),
        ("bad-span", |f| {
            matches!(f, Fault::InvalidVerdict(VerdictError::InvalidEvent { problem: Problem::SpanOutOfRange, .. }))
        }),
        ("invalid-utf8", |f| {
            matches!(f, Fault::InvalidVerdict(VerdictError::InvalidEvent { problem: Problem::InvalidUtf8, .. }))
        }),
        ("newline-type", |f| {
            matches!(f, Fault::InvalidVerdict(VerdictError::InvalidEvent { problem: Problem::TypeLineBreak, .. }))
        }),
        ("nul-id", |f| {
            matches!(f, Fault::InvalidVerdict(VerdictError::InvalidEvent { problem: Problem::IdForbiddenChar, .. }))
        }),
        ("unknown-op", |f| matches!(f, Fault::InvalidVerdict(VerdictError::UnknownOp { op: 99, .. }))),
        ("end-not-last", |f| matches!(f, Fault::InvalidVerdict(VerdictError::EndNotLast { .. }))),
        ("huge-word", |f| {
            matches!(f, Fault::InvalidVerdict(VerdictError::InvalidEvent { problem: Problem::RetryTooLarge, .. }))
        }),
    ];
    for (mode, expected) in cases {
        let fault = hostile(mode, two_events()).expect_err(mode);
        assert!(expected(&fault), "{mode}: unexpected {fault}");
    }
}

#[test]
fn traps_are_errors_and_the_instance_is_replaced() {
    let fault = hostile("trap", two_events()).unwrap_err();
    assert!(
        matches!(&fault, Fault::Trap { kind: TrapKind::Unreachable, .. }),
        "a guest's panic ends in unreachable: {fault}"
    );

    let fault = load_test_guest("hostile", &[("mode", "trap-open")]).open(&context()).err().unwrap();
    assert!(matches!(fault, Fault::Trap { kind: TrapKind::Unreachable, .. }), "{fault}");

    // Streams are spread round-robin over the pool: streams 0 and n share instance 0.
    let guest = load_test_guest("hostile", &[("mode", "trap-every-3")]);
    let n = runtime().limits().instances_per_interceptor;
    let mut streams: Vec<_> = (0..=n).map(|_| guest.open(&context()).unwrap()).collect();
    let input: Batch = two_events().into_iter().collect();
    let mut out = Batch::new();
    assert!(streams[0].process(&input, &mut out).is_ok());
    assert!(streams[0].process(&input, &mut out).is_ok());
    assert!(matches!(streams[0].process(&input, &mut out), Err(Fault::Trap { .. }))); // its third call
    let fault = streams[n].process(&input, &mut out).unwrap_err();
    assert!(matches!(&fault, Fault::Unavailable(msg) if msg.contains("state is lost")), "{fault}");
    if n > 1 {
        assert!(streams[1].process(&input, &mut out).is_ok(), "other instances are untouched");
    }
    // New streams, on every slot, work: the discarded instance is replaced.
    for _ in 0..n {
        let mut fresh = guest.open(&context()).unwrap();
        assert!(fresh.process(&input, &mut out).is_ok());
    }
}

/// A chain dropped before it finished (its client went away, or a link failed the stream) frees
/// each link's state; a guest that traps doing so is counted like any other trap.
#[test]
fn a_trap_freeing_a_cancelled_streams_state_is_counted() {
    use sluicegate::chain::{BreakerConfig, FaultPolicy, Link};
    let link = Link::new(
        load_test_guest("hostile", &[("mode", "trap-on-drop")]),
        FaultPolicy::FailClosed,
        BreakerConfig::default(),
    );
    let stats = link.stats().clone();
    let chain = Chain::from_links(vec![link]);
    let mut stream = chain.open(&context()).unwrap();
    let mut batch: Batch = two_events().into_iter().collect();
    assert!(!stream.process(&mut batch).unwrap());
    assert_eq!(stats.traps(), 0);
    drop(stream);
    assert_eq!(stats.traps_of(TrapKind::Unreachable), 1, "the trap in its destructor is counted");
}

/// The epoch ticker sleeps while no guest is called (an idle proxy does not wake 200 times a
/// second); a guest called then wakes it, and one that loops is still stopped at its deadline.
#[test]
fn a_guest_called_while_the_epoch_ticker_sleeps_still_meets_its_deadline() {
    use sluicegate::host::{Limits, Runtime};
    use std::time::{Duration, Instant};
    let limits = Limits { call_deadline: Duration::from_millis(20), ..Limits::default() };
    let runtime = Runtime::new(limits).unwrap();
    let guest = runtime.load("hostile", test_guest("hostile"), config_of(&[("mode", "loop")])).unwrap();
    let mut stream = guest.open(&context()).unwrap();
    let waited = Instant::now();
    while !runtime.epoch_ticker_asleep() {
        assert!(waited.elapsed() < Duration::from_secs(30), "the ticker never went to sleep");
        std::thread::sleep(Duration::from_millis(1)); // polling its state
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let input: Batch = two_events().into_iter().collect();
        let _ = tx.send(stream.process(&input, &mut Batch::new()));
    });
    let result = rx.recv_timeout(Duration::from_secs(30)).expect("a looping guest was never stopped");
    assert!(matches!(result, Err(Fault::Trap { kind: TrapKind::Deadline, .. })), "{result:?}");
}
