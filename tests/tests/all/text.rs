//! The host's streaming-text engine (`sluicegate::text`) and the guardrails built on it
//! (`redact`, `deny-phrases`), on token-split streams of every format: for any split of a text
//! into deltas and any batching, the client reassembles exactly the transform of the whole text,
//! the layer never holds more than the transform's bound, and events keep their order, names,
//! ids and valid JSON.

use deny_phrases::PhraseFilter;
use proptest::prelude::*;
use redact::{MAX_HELD, RedactText, redact_into};
use serde_json::Value;
use sluicegate::batch::Batch;
use sluicegate::sse::Event;
use sluicegate::text::{GuardJudge, TextEngine};
use sluicegate::verdict::{apply, apply_finish};
use sluicegate_guest::text::{FromConfig, PerChannel, TextTransform};
use sluicegate_guest::{StreamContext, VerdictBuilder};
use sluicegate_tests::llm::{FORMATS, Format, repeated_texts, stream, text_of, tokens};
use sluicegate_tests::parse_all;
use std::sync::Arc;

/// What a run of the layer produced.
struct Run {
    events: Vec<Event>,
    /// The text held after each batch.
    held: Vec<usize>,
    held_events: u64,
    max_held: usize,
}

/// Runs `batches` through the engine with `transform` as the judge, applying each verdict with
/// the runtime's own verdict code. A fault (a transform that breaks its contract) is an error.
fn try_run<T>(transform: T, batches: &[Vec<Event>]) -> Result<Run, sluicegate::interceptor::Fault>
where
    T: TextTransform + FromConfig + Send + Sync + 'static,
    T::Channel: Send,
{
    let mut engine = TextEngine::new();
    let mut judge = GuardJudge::new(Arc::new(PerChannel(transform)), &StreamContext::default());
    let mut verdict = VerdictBuilder::new();
    let mut run = Run { events: Vec::new(), held: Vec::new(), held_events: 0, max_held: 0 };
    let mut output = Batch::new();
    for events in batches {
        let input: Batch = events.iter().cloned().collect();
        verdict.clear();
        engine.process(&mut judge, input.view(), &mut verdict)?;
        verdict.complete(input.len());
        let applied = apply(input.view(), verdict.ops(), verdict.bytes(), &mut output, usize::MAX);
        if applied.expect("a valid verdict").unchanged {
            run.events.extend_from_slice(events);
        } else {
            run.events.extend(output.to_events());
        }
        run.held.push(engine.held_bytes());
        if engine.is_stopped() {
            break;
        }
    }
    verdict.clear();
    engine.finish(&mut judge, &mut verdict)?;
    verdict.complete(0);
    apply_finish(verdict.ops(), verdict.bytes(), &mut output, usize::MAX).expect("a valid finish verdict");
    run.events.extend(output.to_events());
    let stats = engine.stats();
    (run.held_events, run.max_held) = (stats.held_batches, stats.max_held_bytes);
    Ok(run)
}

fn run<T>(transform: &T, batches: &[Vec<Event>]) -> Run
where
    T: TextTransform + FromConfig + Clone + Send + Sync + 'static,
    T::Channel: Send,
{
    try_run(transform.clone(), batches).expect("no fault")
}

fn redacted(text: &str) -> String {
    let mut out = String::new();
    if redact_into(text, "[redacted]", &mut out) { out } else { text.to_string() }
}

/// Splits `text` at the character positions `cuts` (any order, repeats ignored).
fn split_at_chars(text: &str, cuts: &[usize]) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (chars.len() + 1)).collect();
    cuts.push(chars.len());
    cuts.sort_unstable();
    cuts.dedup();
    let mut from = 0;
    let mut pieces = Vec::new();
    for cut in cuts {
        pieces.push(chars[from..cut].iter().collect());
        from = cut;
    }
    pieces
}

fn batches(events: &[Event], size: usize) -> Vec<Vec<Event>> {
    events.chunks(size.max(1)).map(<[Event]>::to_vec).collect()
}

fn json(event: &Event) -> Option<Value> {
    serde_json::from_slice(event.data.as_deref()?).ok()
}

/// Order, names and ids are kept: the output events that carry ids are the input events, in
/// order, with their names (the layer's own events carry none); and every output event's data
/// that the input wrote as JSON is JSON.
fn assert_shape_kept(input: &[Event], output: &[Event], ended_early: bool) {
    let with_id: Vec<(&Option<bytes::Bytes>, &Option<bytes::Bytes>)> =
        output.iter().filter(|e| e.id.is_some()).map(|e| (&e.id, &e.event_type)).collect();
    let original: Vec<_> = input.iter().map(|e| (&e.id, &e.event_type)).collect();
    if ended_early {
        // Events from the one where the stream ends on are dropped, leaving only their ids.
        let named = with_id.iter().take_while(|(id, _)| output.iter().any(|e| &e.id == *id && e.data.is_some()));
        let named: Vec<_> = named.copied().collect();
        assert_eq!(&original[..named.len()], &named[..]);
        let ids =
            |v: &[(&Option<bytes::Bytes>, &Option<bytes::Bytes>)]| v.iter().map(|p| p.0.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&original[..with_id.len()]), ids(&with_id));
    } else {
        assert_eq!(original, with_id);
    }
    for event in output.iter().filter(|e| e.data.is_some()) {
        if event.data.as_deref() != Some(b"[DONE]") {
            assert!(json(event).is_some(), "not JSON: {:?}", event.data);
        }
    }
}

fn answer_text() -> impl Strategy<Value = String> {
    const PIECES: [&str; 13] = [
        " ",
        "@",
        ".",
        "-",
        "alice.smith@example.com",
        "ops+1@mail.example.org",
        "Secret Plan",
        "\u{e9}",
        "\u{1f600}",
        "\"",
        "\\",
        "\n",
        "\u{2028}",
    ];
    // A word as often as each fixed piece.
    let piece = prop_oneof![1 => "[a-zA-Z]{1,7}", 13 => prop::sample::select(&PIECES[..]).prop_map(String::from)];
    prop::collection::vec(piece, 0..24).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn redact_on_any_split_equals_redact_on_the_whole_text(
        text in answer_text(),
        cuts in prop::collection::vec(0usize..200, 0..30),
        size in 1usize..6,
    ) {
        let deltas = split_at_chars(&text, &cuts);
        for format in FORMATS {
            let input = parse_all(stream(format, &deltas, true).as_bytes());
            let out = run(&RedactText::new("[redacted]"), &batches(&input, size));
            prop_assert_eq!(text_of(format, &out.events), redacted(&text), "{:?}", format);
            prop_assert!(out.max_held <= MAX_HELD);
            assert_shape_kept(&input, &out.events, false);
            for repeated in repeated_texts(&out.events) {
                prop_assert_eq!(&repeated, &redacted(&text), "a final object agrees with the deltas");
            }
        }
    }

    #[test]
    fn deny_phrases_on_any_split_cuts_exactly_before_the_phrase(
        text in answer_text(),
        cuts in prop::collection::vec(0usize..200, 0..30),
        size in 1usize..6,
    ) {
        let filter = PhraseFilter::new(["secret plan", "smith@"]).unwrap();
        let deltas = split_at_chars(&text, &cuts);
        let lower = text.to_ascii_lowercase();
        let found = [lower.find("secret plan"), lower.find("smith@")].into_iter().flatten().min();
        let expected = &text[..found.unwrap_or(text.len())];
        for format in FORMATS {
            let input = parse_all(stream(format, &deltas, true).as_bytes());
            let out = run(&filter, &batches(&input, size));
            prop_assert_eq!(text_of(format, &out.events), expected, "{:?}", format);
            prop_assert!(out.max_held < "secret plan".len());
            assert_shape_kept(&input, &out.events, found.is_some());
            let with_data: Vec<&Event> = out.events.iter().rev().filter(|e| e.data.is_some()).collect();
            let last: Vec<Value> = with_data.iter().take(3).filter_map(|e| json(e)).collect();
            match (format, found.is_some()) {
                (Format::Chat, true) => {
                    prop_assert_eq!(with_data[0].data.as_deref(), Some(&b"[DONE]"[..]));
                    prop_assert_eq!(&last[0]["choices"][0]["finish_reason"], "content_filter");
                }
                (Format::Anthropic, true) => {
                    prop_assert_eq!(&last[0]["type"], "message_stop");
                    prop_assert_eq!(&last[1]["delta"]["stop_reason"], "refusal");
                }
                (Format::Responses, true) => {
                    prop_assert_eq!(&last[0]["type"], "response.incomplete");
                    prop_assert_eq!(&last[0]["response"]["incomplete_details"]["reason"], "content_filter");
                    prop_assert_eq!(&last[0]["response"]["status"], "incomplete");
                }
                (_, false) => prop_assert!(out.events.len() >= input.len(), "nothing is lost"),
            }
        }
    }
}

/// The hold rule, event by event: after each delta the layer holds exactly the trailing run of
/// characters that could still be part of an address, so text that ends anywhere else (a space,
/// punctuation outside addresses, any non-ASCII character) is never held.
#[test]
fn redact_holds_only_the_tail_that_may_still_become_an_address() {
    let answer =
        "Sure! The report is ready; ask alice.smith@example.com (or the team) for a copy, caf\u{e9} \u{1f600}.";
    let deltas = tokens(answer);
    assert!(deltas.len() > 20, "{deltas:?}");
    for format in FORMATS {
        let input = parse_all(stream(format, &deltas, false).as_bytes());
        let out = run(&RedactText::new("[redacted]"), &batches(&input, 1));
        let mut so_far = String::new();
        let mut held = out.held.iter();
        for event in &input {
            let piece = text_of(format, std::slice::from_ref(event));
            so_far.push_str(&piece);
            let run = so_far.bytes().rev().take_while(|b| b.is_ascii_alphanumeric() || b"._%+-@\\".contains(b)).count();
            let is_delta = !piece.is_empty();
            let now = *held.next().unwrap();
            if is_delta {
                assert_eq!(now, run, "{format:?}: after {so_far:?}");
            }
        }
        assert!(text_of(format, &out.events).contains("ask [redacted] (or"), "{format:?}");
    }
}

/// Text with no phrase in sight is never held: on an answer that never starts a phrase, no event
/// goes out with text held back, and nothing is inserted.
#[test]
fn deny_phrases_never_holds_text_with_no_phrase_in_sight() {
    let filter = PhraseFilter::new(["zebra crossing", "quux"]).unwrap();
    let answer = "The weather in Paris is mild today, with light rain expected after noon.";
    for format in FORMATS {
        let input = parse_all(stream(format, &tokens(answer), false).as_bytes());
        let out = run(&filter, &batches(&input, 1));
        assert_eq!(out.held_events, 0, "{format:?}");
        assert_eq!(out.events, input, "{format:?}: the stream passes untouched");
    }
}

/// The release rule: held text goes out before the channel's closing event, never after it.
#[test]
fn held_text_is_released_before_the_channel_closes() {
    let deltas: Vec<String> = ["Write", " to", " bob", "@", "example", ".com"].map(String::from).to_vec();
    let closing = |format: Format, v: &Value| match format {
        Format::Chat => v["choices"][0]["finish_reason"].is_string(),
        Format::Responses => v["type"] == "response.output_text.done",
        Format::Anthropic => v["type"] == "content_block_stop",
    };
    for format in FORMATS {
        for size in [1, 3, 100] {
            let input = parse_all(stream(format, &deltas, false).as_bytes());
            let out = run(&RedactText::new("[redacted]"), &batches(&input, size));
            let close = out.events.iter().position(|e| json(e).is_some_and(|v| closing(format, &v))).unwrap();
            assert_eq!(text_of(format, &out.events[..close]), "Write to [redacted]", "{format:?}, batch {size}");
            assert_eq!(text_of(format, &out.events[close..]), "", "{format:?}, batch {size}");
        }
    }
}

/// A stream that ends without closing its channel (the upstream vanished) still gets the held
/// text, redacted, when the stream finishes.
#[test]
fn held_text_is_released_when_the_stream_finishes() {
    let deltas: Vec<String> = ["mail", " ann", "@", "example", ".org"].map(String::from).to_vec();
    for format in FORMATS {
        let whole = parse_all(stream(format, &deltas, false).as_bytes());
        let cut = whole.iter().rposition(|e| !text_of(format, std::slice::from_ref(e)).is_empty()).unwrap() + 1;
        let out = run(&RedactText::new("[redacted]"), &batches(&whole[..cut], 2));
        assert_eq!(text_of(format, &out.events), "mail [redacted]", "{format:?}");
    }
}

/// Events that are not streamed text (MCP messages, plain text, unknown JSON) behave as before
/// the layer: each event's data is redacted on its own, nothing is held.
#[test]
fn other_events_are_redacted_one_by_one_as_before() {
    let stream = concat!(
        "data: {\"jsonrpc\":\"2.0\",\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"ann@example.org\"}]}}\n\n",
        "data: plain ann@example.org text\n\n",
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":\"{\\\"to\\\":\\\"ann@example.org\\\"}\"}}]}}]}\n\n",
    );
    let input = parse_all(stream.as_bytes());
    let out = run(&RedactText::new("[redacted]"), &batches(&input, 1));
    assert_eq!(out.events.len(), input.len());
    for (before, after) in input.iter().zip(&out.events) {
        let before = std::str::from_utf8(before.data.as_deref().unwrap()).unwrap();
        assert_eq!(after.data.as_deref().unwrap(), redacted(before).as_bytes());
        assert!(before.contains('@') && !redacted(before).contains('@'));
    }
    assert_eq!(out.held_events, 0);
}

/// The layer's own events for a stream of unknown format: a phrase ends it with `event: error`.
#[test]
fn deny_phrases_ends_other_streams_with_an_error_event() {
    let filter = PhraseFilter::new(["forbidden"]).unwrap();
    let input = parse_all(b"data: fine\nid: 1\n\ndata: this is Forbidden text\nid: 2\n\ndata: later\n\n");
    let out = run(&filter, &batches(&input, 3));
    assert_eq!(out.events.len(), 3, "{:?}", out.events);
    assert_eq!(out.events[0], input[0]);
    assert_eq!(out.events[1], Event { id: input[1].id.clone(), ..Event::default() }, "the dropped event's id stays");
    assert_eq!(out.events[2].event_type.as_deref(), Some(&b"error"[..]));
    assert_eq!(json(&out.events[2]).unwrap()["error"]["type"], "content_filter");
}

/// A transform that breaks its contract (declares it holds nothing, then holds everything) is
/// not trusted with the text: its answer is a fault of the guard, which the link's fault policy
/// handles (fail-closed ends the stream), and nothing it held is released unjudged.
#[test]
fn a_transform_that_holds_past_its_bound_is_a_fault() {
    struct Hoarder;
    impl TextTransform for Hoarder {
        type Channel = ();
        fn max_held(&self) -> usize {
            0
        }
        fn step(&self, _: &mut (), pending: &str, last: bool, out: &mut String) -> sluicegate_guest::text::Flow {
            if !last {
                return sluicegate_guest::text::Flow::Continue(0); // holds all of it
            }
            out.push_str(pending);
            sluicegate_guest::text::Flow::Continue(pending.len())
        }
    }
    impl FromConfig for Hoarder {
        fn from_config(_: &sluicegate_guest::Config) -> Result<Self, String> {
            Ok(Hoarder)
        }
    }
    let deltas: Vec<String> = ["mail", " ann", "@", "example", ".org"].map(String::from).to_vec();
    for format in FORMATS {
        let input = parse_all(stream(format, &deltas, false).as_bytes());
        let fault = try_run(Hoarder, &batches(&input, 2)).err().expect("a fault");
        assert!(fault.to_string().contains("over the 0 declared"), "{format:?}: {fault}");
    }
}
