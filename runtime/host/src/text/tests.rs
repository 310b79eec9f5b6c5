//! The engine on every format, with the example transforms (`redact`, `deny-phrases`) as judges.

use super::TextInterceptor;
use crate::batch::Batch;
use crate::interceptor::Interceptor;
use proptest::prelude::*;
use serde_json::{Value, json};
use sluicegate_contract::event::Event;
use sluicegate_guest::text::PerChannel;
use sluicegate_guest::{EndReason, StreamContext};

/// `events` through `interceptor` in batches of the given sizes (cycled), then its end: a
/// response's events.
fn run(interceptor: &dyn Interceptor, events: &[Event], sizes: &[usize]) -> Vec<Event> {
    run_with(interceptor, events, sizes, &StreamContext { status: 200, ..StreamContext::default() })
}

/// [`run`] in `context` (status 0: a request body).
fn run_with(interceptor: &dyn Interceptor, events: &[Event], sizes: &[usize], context: &StreamContext) -> Vec<Event> {
    let mut stream = interceptor.open(context).expect("open");
    let mut out = Vec::new();
    let mut rest = events;
    let mut size = sizes.iter().copied().cycle();
    while !rest.is_empty() {
        let n = size.next().unwrap_or(1).clamp(1, rest.len());
        let input: Batch = rest[..n].iter().cloned().collect();
        rest = &rest[n..];
        let mut output = Batch::new();
        let applied = stream.process(&input, &mut output).expect("process");
        out.extend(if applied.unchanged { input.to_events() } else { output.to_events() });
        if applied.ended {
            return out;
        }
    }
    let mut tail = Batch::new();
    stream.finish(EndReason::UpstreamClosed, &mut tail).expect("finish");
    out.extend(tail.to_events());
    out
}

fn redact() -> TextInterceptor<redact::Redact> {
    TextInterceptor::new("native:redact", PerChannel(redact::RedactText::new("[redacted]")), 1 << 20)
}

fn data(event: &Event) -> Option<&str> {
    event.data.as_deref().map(|d| std::str::from_utf8(d).unwrap())
}

fn json_of(event: &Event) -> Option<Value> {
    serde_json::from_str(data(event)?).ok()
}

fn message(value: Value) -> Event {
    Event::message(value.to_string())
}

fn named(name: &str, value: Value) -> Event {
    Event::message(value.to_string()).with_type(name.to_string())
}

/// The text a client reassembles from the values at `path` (a JSON pointer) of every event.
fn text_at(events: &[Event], path: &str) -> String {
    events
        .iter()
        .filter_map(json_of)
        .filter_map(|v| v.pointer(path).and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// No event's data holds any piece of the address beyond what the replacement shows.
fn assert_no_address(events: &[Event]) {
    for event in events {
        let text = data(event).unwrap_or("");
        for piece in ["lovelace", "example.com"] {
            assert!(!text.contains(piece), "`{piece}` leaked in {text}");
        }
    }
}

const TOKENS: &[&str] = &["Mail", " ada", ".", "love", "lace", "@", "example", ".", "com", " now"];

fn chat(field: impl Fn(&str) -> Value) -> Vec<Event> {
    let mut events: Vec<Event> = TOKENS
        .iter()
        .map(|t| message(json!({"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":field(t),"finish_reason":null}]})))
        .collect();
    events.push(message(json!({"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})));
    events.push(Event::message("[DONE]"));
    events
}

#[test]
fn chat_content_tool_arguments_reasoning_and_refusals_are_each_a_channel() {
    type Delta = fn(&str) -> Value;
    let cases: [(&str, Delta, &str); 6] = [
        ("content", |t| json!({"content": t}), "/choices/0/delta/content"),
        ("audio transcript", |t| json!({"audio": {"transcript": t}}), "/choices/0/delta/audio/transcript"),
        (
            "a call of the deprecated functions API",
            |t| json!({"function_call": {"arguments": t}}),
            "/choices/0/delta/function_call/arguments",
        ),
        (
            "tool arguments",
            |t| json!({"tool_calls":[{"index":0,"function":{"arguments":t}}]}),
            "/choices/0/delta/tool_calls/0/function/arguments",
        ),
        ("reasoning", |t| json!({"reasoning_content": t}), "/choices/0/delta/reasoning_content"),
        ("refusal", |t| json!({"refusal": t}), "/choices/0/delta/refusal"),
    ];
    for (what, field, path) in cases {
        for sizes in [&[1][..], &[3, 1, 4], &[100]] {
            let out = run(&redact(), &chat(field), sizes);
            assert_eq!(text_at(&out, path), "Mail [redacted] now", "{what} in batches {sizes:?}");
            assert_no_address(&out);
            assert_eq!(out.last().and_then(data), Some("[DONE]"));
        }
    }
}

/// Every Responses event streamed in pieces is a channel: the kinds the engine names (tool
/// inputs of custom and MCP tools, code for the code interpreter, the audio transcript) and any
/// kind it does not know yet. Judged piece by piece, each of these let a split address through.
#[test]
fn every_responses_delta_is_a_channel_including_kinds_not_known() {
    let parts =
        ["custom_tool_call_input", "mcp_call_arguments", "code_interpreter_call_code", "audio.transcript", "new_kind"];
    for part in parts {
        let (delta, done) = (format!("response.{part}.delta"), format!("response.{part}.done"));
        let mut events: Vec<Event> = TOKENS
            .iter()
            .enumerate()
            .map(|(i, t)| named(&delta, json!({"type": delta, "sequence_number": i, "item_id": "it", "delta": t})))
            .collect();
        events.push(named(&done, json!({"type": done, "item_id": "it"})));
        for sizes in [&[1][..], &[3, 1, 4]] {
            let out = run(&redact(), &events, sizes);
            assert_no_address(&out);
            assert_eq!(text_at(&out, "/delta"), "Mail [redacted] now", "{part} in batches {sizes:?}");
        }
    }
}

#[test]
fn logprob_tokens_never_spell_what_the_content_hid() {
    let events = chat(|t| json!({"content": t}));
    let events: Vec<Event> = events
        .iter()
        .map(|e| match json_of(e) {
            Some(mut v) if v["choices"][0]["delta"]["content"].is_string() => {
                let token = v["choices"][0]["delta"]["content"].clone();
                v["choices"][0]["logprobs"] = json!({"content":[{"token": token, "top_logprobs":[{"token": token}]}]});
                message(v)
            }
            _ => e.clone(),
        })
        .collect();
    let out = run(&redact(), &events, &[1]);
    assert_no_address(&out);
    assert_eq!(text_at(&out, "/choices/0/delta/content"), "Mail [redacted] now");
}

#[test]
fn anthropic_text_tool_input_and_thinking_with_escaped_names() {
    let kinds = [("text_delta", "text"), ("input_json_delta", "partial_json"), ("thinking_delta", "thinking")];
    for (kind, field) in kinds {
        // The type written with an escape is still that type.
        let escaped = kind.replacen('e', "\\u0065", 1);
        let mut events = vec![named(
            "content_block_start",
            json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        )];
        for t in TOKENS {
            let delta = format!(
                r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"{escaped}","{field}":{}}}}}"#,
                json!(t)
            );
            events.push(Event::message(delta).with_type("content_block_delta"));
        }
        events.push(named("content_block_stop", json!({"type":"content_block_stop","index":0})));
        events.push(named("message_stop", json!({"type":"message_stop"})));
        let out = run(&redact(), &events, &[2]);
        assert_eq!(text_at(&out, &format!("/delta/{field}")), "Mail [redacted] now", "{kind}");
        assert_no_address(&out);
    }
}

#[test]
fn responses_deltas_arguments_and_the_texts_they_repeat() {
    let mut events = vec![named(
        "response.created",
        json!({"type":"response.created","sequence_number":0,"response":{"id":"r","status":"in_progress","output":[]}}),
    )];
    for (n, t) in TOKENS.iter().enumerate() {
        events.push(named("response.function_call_arguments.delta", json!({"type":"response.function_call_arguments.delta","item_id":"fc_1","output_index":0,"delta":t,"sequence_number":n+1})));
    }
    let whole: String = TOKENS.concat();
    events.push(named(
        "response.function_call_arguments.done",
        json!({"type":"response.function_call_arguments.done","item_id":"fc_1","arguments":whole,"sequence_number":20}),
    ));
    events.push(named("response.completed", json!({"type":"response.completed","response":{"output":[{"type":"function_call","arguments":whole}]},"sequence_number":21})));
    let out = run(&redact(), &events, &[3]);
    assert_eq!(text_at(&out, "/delta"), "Mail [redacted] now");
    assert_eq!(text_at(&out, "/arguments"), "Mail [redacted] now");
    assert_no_address(&out);
}

#[test]
fn gemini_parts_and_ollama_lines() {
    let gemini: Vec<Event> = TOKENS
        .iter()
        .map(|t| message(json!({"candidates":[{"content":{"parts":[{"text":t}],"role":"model"},"index":0}]})))
        .chain([message(json!({"candidates":[{"content":{"parts":[{"text":""}]},"finishReason":"STOP","index":0}]}))])
        .collect();
    let out = run(&redact(), &gemini, &[1]);
    assert_eq!(text_at(&out, "/candidates/0/content/parts/0/text"), "Mail [redacted] now");
    assert_no_address(&out);

    let ollama: Vec<Event> = TOKENS
        .iter()
        .map(|t| message(json!({"model":"m","message":{"role":"assistant","content":t},"done":false})))
        .chain([message(json!({"model":"m","message":{"role":"assistant","content":""},"done":true}))])
        .collect();
    let out = run(&redact(), &ollama, &[2]);
    assert_eq!(text_at(&out, "/message/content"), "Mail [redacted] now");
    assert_no_address(&out);
}

#[test]
fn escaped_addresses_in_other_messages_are_found_decoded() {
    let mcp = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"write to bob\u0040example\u002ecom"}]}}"#;
    let out = run(&redact(), &[Event::message(mcp)], &[1]);
    let v = json_of(&out[0]).unwrap();
    assert_eq!(v["result"]["content"][0]["text"], "write to [redacted]");
    assert_eq!(v["id"], 1, "structure and numbers are kept");
}

#[test]
fn a_stop_ends_each_format_its_own_way() {
    let deny = TextInterceptor::new(
        "native:deny-phrases",
        PerChannel(deny_phrases::PhraseFilter::new(["secret plan"]).unwrap()),
        1 << 20,
    );
    let tokens = ["The", " secret", " plan", " is", " out"];
    // Responses whose response.created has no incomplete_details.
    let mut events = vec![named(
        "response.created",
        json!({"type":"response.created","sequence_number":0,"response":{"id":"r","status":"in_progress"}}),
    )];
    for (n, t) in tokens.iter().enumerate() {
        events.push(named("response.output_text.delta", json!({"type":"response.output_text.delta","item_id":"m","content_index":0,"delta":t,"sequence_number":n+1})));
    }
    let out = run(&deny, &events, &[1]);
    let last = json_of(out.last().unwrap()).unwrap();
    assert_eq!(
        (last["type"].as_str(), last["response"]["incomplete_details"]["reason"].as_str()),
        (Some("response.incomplete"), Some("content_filter"))
    );
    assert!(!text_at(&out, "/delta").contains("secret"), "no part of the phrase goes out");

    let chat: Vec<Event> =
        tokens.iter().map(|t| message(json!({"id":"c","choices":[{"index":0,"delta":{"content":t}}]}))).collect();
    let out = run(&deny, &chat, &[2]);
    assert_eq!(out.last().and_then(data), Some("[DONE]"));
    let reasons: Vec<Value> =
        out.iter().filter_map(json_of).map(|v| v["choices"][0]["finish_reason"].clone()).collect();
    assert!(reasons.contains(&json!("content_filter")), "{reasons:?}");
}

proptest! {
    /// Any split of a text into deltas and any batching: the client's text is the transform of
    /// the whole text, and no event carries a piece of an address.
    #[test]
    fn any_split_and_batching_gives_the_whole_texts_answer(
        cuts in proptest::collection::vec(1usize..6, 1..40),
        sizes in proptest::collection::vec(1usize..7, 1..5),
    ) {
        let text = "Reach ada.lovelace@example.com or grace.hopper@example.com, then stop.";
        let mut deltas = Vec::new();
        let mut rest = text;
        for cut in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let at = (*cut).min(rest.len());
            deltas.push(&rest[..at]);
            rest = &rest[at..];
        }
        let events: Vec<Event> = deltas
            .iter()
            .map(|t| message(json!({"choices":[{"index":0,"delta":{"content":t}}]})))
            .chain([message(json!({"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}))])
            .collect();
        let out = run(&redact(), &events, &sizes);
        prop_assert_eq!(text_at(&out, "/choices/0/delta/content"), "Reach [redacted] or [redacted], then stop.");
        for event in &out {
            let text = data(event).unwrap_or("");
            prop_assert!(!text.contains("lovelace") && !text.contains("hopper"), "{}", text);
        }
    }
}

/// deny-phrases on every format, its answer split token by token in batches of 1 and 3: no part
/// of the phrase reaches the client, the text before it does, and the stream ends with the
/// format's own "filtered" ending.
#[test]
fn deny_phrases_ends_every_format_with_its_own_reason() {
    use super::samples::{self, Format};
    let deny = TextInterceptor::new(
        "native:deny-phrases",
        PerChannel(deny_phrases::PhraseFilter::new(["secret plan"]).unwrap()),
        1 << 20,
    );
    let deltas = samples::tokens("Here is the secret plan for you");
    for format in Format::ALL {
        for sizes in [&[1][..], &[3]] {
            let out = run(&deny, &samples::stream(format, &deltas), sizes);
            assert_eq!(samples::text_of(format, &out), "Here is the ", "{format:?} {sizes:?}");
            let last = out.iter().rev().find_map(json_of).unwrap_or_default();
            let said =
                |path: &str| out.iter().filter_map(json_of).any(|v| v.pointer(path) == Some(&json!(reason(format))));
            let ended = match format {
                Format::Chat => said("/choices/0/finish_reason") && out.last().and_then(data) == Some("[DONE]"),
                Format::Responses => {
                    last.pointer("/response/incomplete_details/reason") == Some(&json!("content_filter"))
                }
                Format::Anthropic => said("/delta/stop_reason") && last["type"] == "message_stop",
                Format::Gemini => said("/candidates/0/finishReason"),
                Format::Ollama => last["done"] == true && last["done_reason"] == "content_filter",
            };
            assert!(ended, "{format:?} {sizes:?}: {out:?}");
        }
    }
}

fn reason(format: super::samples::Format) -> &'static str {
    use super::samples::Format;
    match format {
        Format::Anthropic => "refusal",
        Format::Gemini => "SAFETY",
        _ => "content_filter",
    }
}

/// A stream shape for the property test: its events for some deltas, and where a client reads
/// each delta's text back (a JSON pointer, and the event type that carries it, if any).
struct Shape {
    name: &'static str,
    events: fn(&[String]) -> Vec<Event>,
    read: fn(&Value) -> Option<String>,
}

fn shapes() -> Vec<Shape> {
    use super::samples::{self, Format};
    fn chat(deltas: &[String], delta: fn(&str) -> Value) -> Vec<Event> {
        let mut events: Vec<Event> =
            deltas.iter().map(|d| message(json!({"id":"c","choices":[{"index":0,"delta":delta(d)}]}))).collect();
        events.push(message(json!({"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})));
        events
    }
    /// A Responses stream of `response.{part}.delta` events for item `it`, closed by
    /// `response.{part}.done`; read back from the deltas.
    fn responses_part(deltas: &[String], part: &str) -> Vec<Event> {
        let name = format!("response.{part}.delta");
        let at = |mut v: Value| {
            v["item_id"] = json!("it");
            v["output_index"] = json!(0);
            v
        };
        let mut events: Vec<Event> =
            deltas.iter().map(|d| named(&name, at(json!({"type": name, "delta": d})))).collect();
        let done = format!("response.{part}.done");
        events.push(named(&done, at(json!({"type": done}))));
        events
    }
    fn responses_delta(v: &Value, part: &str) -> Option<String> {
        (v["type"] == format!("response.{part}.delta")).then(|| v["delta"].as_str().unwrap().into())
    }
    fn typed(deltas: &[String], name: &str, delta: fn(&str) -> Value, done: Value) -> Vec<Event> {
        let mut events: Vec<Event> = deltas.iter().map(|d| named(name, delta(d))).collect();
        let name = done["type"].as_str().unwrap().to_string();
        events.push(named(&name, done));
        events
    }
    vec![
        Shape {
            name: "openai-chat",
            events: |d| samples::stream(Format::Chat, d),
            read: |v| Some(samples::text_of(Format::Chat, &[message(v.clone())])),
        },
        Shape {
            name: "openai-responses",
            events: |d| samples::stream(Format::Responses, d),
            read: |v| (v["type"] == "response.output_text.delta").then(|| v["delta"].as_str().unwrap().into()),
        },
        Shape {
            name: "anthropic",
            events: |d| samples::stream(Format::Anthropic, d),
            read: |v| Some(samples::text_of(Format::Anthropic, &[message(v.clone())])),
        },
        Shape {
            name: "gemini",
            events: |d| samples::stream(Format::Gemini, d),
            read: |v| Some(samples::text_of(Format::Gemini, &[message(v.clone())])),
        },
        Shape {
            name: "ollama",
            events: |d| samples::stream(Format::Ollama, d),
            read: |v| Some(samples::text_of(Format::Ollama, &[message(v.clone())])),
        },
        Shape {
            name: "chat tool arguments",
            events: |d| chat(d, |t| json!({"tool_calls":[{"index":0,"function":{"arguments":t}}]})),
            read: |v| v.pointer("/choices/0/delta/tool_calls/0/function/arguments")?.as_str().map(Into::into),
        },
        Shape {
            name: "chat legacy function call",
            events: |d| chat(d, |t| json!({"function_call":{"arguments":t}})),
            read: |v| v.pointer("/choices/0/delta/function_call/arguments")?.as_str().map(Into::into),
        },
        Shape {
            name: "chat audio transcript",
            events: |d| chat(d, |t| json!({"audio":{"id":"audio_1","transcript":t}})),
            read: |v| v.pointer("/choices/0/delta/audio/transcript")?.as_str().map(Into::into),
        },
        Shape {
            name: "chat reasoning",
            events: |d| chat(d, |t| json!({"reasoning_content": t})),
            read: |v| v.pointer("/choices/0/delta/reasoning_content")?.as_str().map(Into::into),
        },
        Shape {
            name: "responses arguments",
            events: |d| {
                typed(
                    d,
                    "response.function_call_arguments.delta",
                    |t| json!({"type":"response.function_call_arguments.delta","item_id":"fc","delta":t}),
                    json!({"type":"response.output_item.done","item":{"id":"fc","type":"function_call"}}),
                )
            },
            read: |v| {
                (v["type"] == "response.function_call_arguments.delta").then(|| v["delta"].as_str().unwrap().into())
            },
        },
        Shape {
            name: "responses custom tool input",
            events: |d| responses_part(d, "custom_tool_call_input"),
            read: |v| responses_delta(v, "custom_tool_call_input"),
        },
        Shape {
            name: "responses mcp call arguments",
            events: |d| responses_part(d, "mcp_call_arguments"),
            read: |v| responses_delta(v, "mcp_call_arguments"),
        },
        Shape {
            name: "responses audio transcript",
            events: |d| responses_part(d, "audio.transcript"),
            read: |v| responses_delta(v, "audio.transcript"),
        },
        Shape {
            // A kind of delta not known today is a channel too: closed by default.
            name: "responses delta of a kind not known",
            events: |d| responses_part(d, "future_tool_call_text"),
            read: |v| responses_delta(v, "future_tool_call_text"),
        },
        Shape {
            name: "responses reasoning summary",
            events: |d| {
                typed(
                    d,
                    "response.reasoning_summary_text.delta",
                    |t| json!({"type":"response.reasoning_summary_text.delta","item_id":"rs","summary_index":0,"delta":t}),
                    json!({"type":"response.completed","response":{"id":"r"}}),
                )
            },
            read: |v| {
                (v["type"] == "response.reasoning_summary_text.delta").then(|| v["delta"].as_str().unwrap().into())
            },
        },
        Shape {
            name: "anthropic tool input",
            events: |d| {
                typed(
                    d,
                    "content_block_delta",
                    |t| json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":t}}),
                    json!({"type":"content_block_stop","index":1}),
                )
            },
            read: |v| v.pointer("/delta/partial_json")?.as_str().map(Into::into),
        },
        Shape {
            // A kind of delta not known today is a channel too: closed by default.
            name: "anthropic delta of a kind not known",
            events: |d| {
                typed(
                    d,
                    "content_block_delta",
                    |t| json!({"type":"content_block_delta","index":2,"delta":{"type":"note_delta","note":t}}),
                    json!({"type":"content_block_stop","index":2}),
                )
            },
            read: |v| v.pointer("/delta/note")?.as_str().map(Into::into),
        },
        Shape {
            name: "anthropic thinking",
            events: |d| {
                typed(
                    d,
                    "content_block_delta",
                    |t| json!({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":t}}),
                    json!({"type":"message_stop"}),
                )
            },
            read: |v| v.pointer("/delta/thinking")?.as_str().map(Into::into),
        },
    ]
}

/// `text` cut into deltas of `cuts` characters (cycled), as a model's tokens cut it.
fn deltas_of(text: &str, cuts: &[usize]) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut deltas = Vec::new();
    let mut at = 0;
    for cut in cuts.iter().cycle() {
        if at >= chars.len() {
            break;
        }
        let end = (at + cut).min(chars.len());
        deltas.push(chars[at..end].iter().collect::<String>());
        at = end;
    }
    deltas
}

fn address_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => "[a-z]{1,6}",
        1 => prop::sample::select(vec![" ", ".", "@", "-", "\"", "\\", "\u{e9}", "\u{1f600}", "\n"]).prop_map(String::from),
        2 => prop::sample::select(vec!["ann@example.com", "a.b+c@mail.example.org", "x@y", "@z.io"]).prop_map(String::from),
    ];
    prop::collection::vec(piece, 1..20).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    /// Every format and channel kind, any text, any split into deltas, any batching: what the
    /// client reassembles is the transform of the whole text; the events keep their order and ids
    /// (each input event's id comes out once, in order, and nothing else carries one); every
    /// output event that was JSON is JSON. (A guard that held past its bound would be a fault,
    /// which `run` turns into a failure.)
    #[test]
    fn every_format_and_channel_kind_gives_the_whole_texts_answer(
        shape in 0usize..shapes().len(),
        text in address_text(),
        cuts in proptest::collection::vec(1usize..5, 1..30),
        sizes in proptest::collection::vec(1usize..7, 1..4),
    ) {
        let shape = &shapes()[shape];
        let deltas = deltas_of(&text, &cuts);
        let input: Vec<Event> =
            (shape.events)(&deltas).into_iter().enumerate().map(|(i, e)| e.with_id(i.to_string())).collect();
        let out = run(&redact(), &input, &sizes);
        let mut whole = String::new();
        redact::redact_append(&text, "[redacted]", &mut whole);
        let got: String = out.iter().filter_map(json_of).filter_map(|v| (shape.read)(&v)).collect();
        prop_assert_eq!(got, whole, "{}", shape.name);
        let ids: Vec<_> = out.iter().filter_map(|e| e.id.clone()).collect();
        let expected: Vec<_> = input.iter().filter_map(|e| e.id.clone()).collect();
        prop_assert_eq!(ids, expected, "{}: ids in order, once each", shape.name);
        for event in &out {
            if let Some(d) = data(event).filter(|d| *d != "[DONE]") {
                prop_assert!(serde_json::from_str::<Value>(d).is_ok(), "{}: not JSON: {}", shape.name, d);
            }
        }
    }
}

/// Outside the formats whose structure is known, no key name hides a value: an address under
/// `id`, `type` or `model` of an MCP message or a JSON body is judged like any other text.
#[test]
fn no_key_name_hides_a_value_outside_the_known_formats() {
    let mcp = r#"{"jsonrpc":"2.0","id":"bob@example.com","result":{"type":"ann@example.com","model":"x","status":"eve@example.org"}}"#;
    let out = run(&redact(), &[Event::message(mcp)], &[1]);
    let v = json_of(&out[0]).unwrap();
    assert_eq!(
        (&v["id"], &v["result"]["type"], &v["result"]["status"], &v["jsonrpc"]),
        (&json!("[redacted]"), &json!("[redacted]"), &json!("[redacted]"), &json!("2.0"))
    );
    // In a recognised format the structural keys are the provider's: left alone.
    let chunk =
        r#"{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"hi "}}]}"#;
    assert_eq!(run(&redact(), &[Event::message(chunk)], &[1]), vec![Event::message(chunk)]);
}

/// Outside the known formats keys are data too: an MCP tool's structured result or a JSON body
/// may be a map keyed by address. The keys are judged like values (decoded, written back
/// encoded); two masked alike leave the object with a key twice, which goes out said and
/// counted. Inside a known format the keys are the provider's and are not handed over.
#[test]
fn keys_outside_the_known_formats_are_judged_and_keys_masked_alike_are_counted() {
    let mcp = r#"{"jsonrpc":"2.0","id":1,"result":{"structuredContent":{"users":{"alice@example.com":{"role":"admin"},"b\u006fb@example.com":{"role":"user"}}}}}"#;
    sluicegate_guest::count::native::clear();
    let out = run(&redact(), &[Event::message(mcp)], &[1]);
    assert_no_address(&out);
    let written = data(&out[0]).unwrap();
    assert_eq!(written.matches(r#""[redacted]":{"role":"#).count(), 2, "{written}");
    assert!(written.contains(r#"{"jsonrpc":"2.0","id":1,"result":{"structuredContent":{"users":{"#), "{written}");
    let mut counted = Vec::new();
    sluicegate_guest::count::native::drain(|name, n| counted.push((name.to_string(), n)));
    assert_eq!(counted, vec![("repeated_keys".to_string(), 1)]);
    // One address as a key: nothing repeats, nothing counted.
    let one = r#"{"params":{"arguments":{"carol@example.org":true,"note":"x"}}}"#;
    let out = run(&redact(), &[Event::message(one)], &[1]);
    assert_eq!(data(&out[0]), Some(r#"{"params":{"arguments":{"[redacted]":true,"note":"x"}}}"#));
    sluicegate_guest::count::native::drain(|name, _| panic!("counted {name}"));
}

/// A request body is the client's, whatever it looks like: given the look of a provider's
/// chunk (`"choices":[]`, `"done":true`), it still has every key and string judged, where a
/// response of that format has its structural values and keys left alone.
#[test]
fn a_request_that_looks_like_a_provider_format_is_judged_whole() {
    for disguise in [r#""choices":[]"#, r#""done":true"#, r#""type":"message_start""#] {
        let body = format!(r#"{{{disguise},"model":"ada@example.com","id":"x","grace@example.com":1}}"#);
        let request = StreamContext { status: 0, ..StreamContext::default() };
        let out = run_with(&redact(), &[Event::message(body.clone())], &[1], &request);
        assert_no_address(&out);
        let v = json_of(&out[0]).unwrap();
        assert_eq!((&v["model"], &v["[redacted]"]), (&json!("[redacted]"), &json!(1)), "{disguise}: {v}");
        // As a response, the format's structure is the provider's: left as it came.
        let out = run(&redact(), &[Event::message(body.clone())], &[1]);
        assert!(data(&out[0]).unwrap().contains(r#""model":"ada@example.com""#), "{disguise}: {out:?}");
    }
}

/// Every built-in detector and an operator's pattern (the DFA is lazy: building it is cheap).
fn patterns_config() -> sluicegate_guest::Config {
    sluicegate_guest::Config::new([("pattern.ticket".to_string(), "TCK-[0-9]{6}".to_string())])
}

fn pii_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => "[a-z0-9]{1,6}",
        2 => prop::sample::select(vec![" ", ".", ":", "-", "+", "(", "\"", "\\", "\u{e9}", "\u{1f600}", "\n"]).prop_map(String::from),
        3 => prop::sample::select(vec![
            "ann@example.com", "4111 1111 1111 1111", "4111 1111 1111 1112", "+44 20 7946 0958", "(555) 234-5678",
            "192.168.1.20", "fe80::1", "2001:db8::8a2e:370:7334", "123-45-6789", "GB82 WEST 1234 5698 7654 32",
            "sk-proj-abcdefghijklmnopqrstuvwx1234", "AKIAABCDEFGHIJKLMNOP", "eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.SflKxwRJ",
            "TCK-204811", "-----BEGIN PRIVATE KEY-----\nMIIBVQIBADAN\n-----END PRIVATE KEY-----",
        ]).prop_map(String::from),
    ];
    prop::collection::vec(piece, 1..16).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// The patterns guard (issue 25) on every format and channel kind: any text with values of
    /// every detector, any split into deltas, any batching gives the whole text's answer, and
    /// the engine's bound on held text (checked at every answer) is never broken.
    #[test]
    fn patterns_on_every_format_give_the_whole_texts_answer(
        shape in 0usize..11,
        text in pii_text(),
        cuts in proptest::collection::vec(1usize..5, 1..30),
        sizes in proptest::collection::vec(1usize..7, 1..4),
    ) {
        use sluicegate_guest::text::{Flow, TextTransform};
        let shape = &shapes()[shape];
        let deltas = deltas_of(&text, &cuts);
        use sluicegate_guest::text::FromConfig;
        let transform = patterns::Patterns::from_config(&patterns_config()).expect("it compiles");
        let mut whole = String::new();
        let flow = transform.step(&mut None, &text, true, &mut whole);
        prop_assert_eq!(flow, Flow::Continue(text.len()));
        let guard = TextInterceptor::<patterns::PatternsGuard>::from_config("native:patterns", &patterns_config(), 1 << 20)
            .expect("it compiles");
        let out = run(&guard, &(shape.events)(&deltas), &sizes);
        let got: String = out.iter().filter_map(json_of).filter_map(|v| (shape.read)(&v)).collect();
        prop_assert_eq!(got, whole, "{}", shape.name);
    }
}

/// The parts the classifier finds in `events` (one stream, in order), with their text.
fn parts_of(events: &[Event]) -> Vec<(super::formats::Role, String)> {
    let mut classifier = super::formats::Classifier::default();
    let mut found = super::formats::Found::default();
    let mut parts = Vec::new();
    for event in events {
        let data = data(event).unwrap_or("");
        classifier.classify(data, &mut found);
        parts.extend(found.parts.iter().map(|p| (p.role, data[p.start..p.end].to_string())));
    }
    parts
}

/// Events as the providers write them, with the fields the samples leave out (usage details,
/// safety ratings, a whole response object, cache figures, Ollama's timings).
fn full_provider_events() -> Vec<Event> {
    vec![
        message(json!({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",
            "service_tier":"default","system_fingerprint":"fp","obfuscation":"x","choices":[],
            "usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12,
                "prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},
                "completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,
                    "accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}})),
        named(
            "response.completed",
            json!({"type":"response.completed","sequence_number":9,"response":{
            "id":"resp_1","object":"response","created_at":1,"status":"completed","background":false,
            "error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,
            "model":"m","output":[{"id":"fc_1","type":"function_call","status":"completed",
                "arguments":"{}","call_id":"call_1","name":"f"}],"parallel_tool_calls":true,
            "previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,
            "temperature":1.0,"text":{"format":{"type":"text"},"verbosity":"medium"},"tool_choice":"auto",
            "tools":[],"top_p":1.0,"truncation":"disabled","metadata":{},"user":null,
            "usage":{"input_tokens":9,"input_tokens_details":{"cached_tokens":0},"output_tokens":3,
                "output_tokens_details":{"reasoning_tokens":0},"total_tokens":12}}}),
        ),
        named(
            "message_start",
            json!({"type":"message_start","message":{"id":"msg_1","type":"message",
            "role":"assistant","model":"m","content":[],"stop_reason":null,"stop_sequence":null,
            "usage":{"input_tokens":9,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,
                "cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},
                "output_tokens":1,"service_tier":"standard"}}}),
        ),
        named(
            "content_block_start",
            json!({"type":"content_block_start","index":1,
            "content_block":{"type":"tool_use","id":"toolu_1","name":"f","input":{}}}),
        ),
        message(json!({"candidates":[{"content":{"parts":[{"text":"hi","thoughtSignature":"c2ln"}],"role":"model"},
            "finishReason":"STOP","index":0,"safetyRatings":[{"category":"HARM_CATEGORY_HARASSMENT",
                "probability":"NEGLIGIBLE"}]}],
            "usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":3,"totalTokenCount":12,
                "thoughtsTokenCount":0,"promptTokensDetails":[{"modality":"TEXT","tokenCount":9}]},
            "modelVersion":"m","responseId":"r1"})),
        message(json!({"model":"m","created_at":"t","message":{"role":"assistant","content":""},"done":true,
            "done_reason":"stop","total_duration":1,"load_duration":1,"prompt_eval_count":9,
            "prompt_eval_duration":1,"eval_count":3,"eval_duration":1})),
    ]
}

/// In a recognised format the provider's keys cost nothing: none of them is handed to a guard,
/// in the sample streams of every format or in events with every field providers add.
#[test]
fn the_providers_own_keys_are_not_handed_over() {
    use super::samples::{self, Format};
    let deltas = samples::tokens(samples::ANSWER);
    let mut streams: Vec<Vec<Event>> = Format::ALL.iter().map(|&f| samples::stream(f, &deltas)).collect();
    streams.extend(full_provider_events().into_iter().map(|e| vec![e]));
    for events in streams {
        let keys: Vec<_> =
            parts_of(&events).into_iter().filter(|(r, _)| matches!(r, super::formats::Role::Key(_))).collect();
        assert!(keys.is_empty(), "{keys:?} in {:?}", data(&events[0]));
    }
}

/// What a model fills (tool-call arguments as objects) and what a client fills (metadata) has
/// keys of the writer's choosing: every key and string of it is judged, as tool arguments where
/// it is some, including those under a key a provider uses for structure (`id`, `status`), which
/// elsewhere in its format is not handed over. A key outside the format's schema anywhere in an
/// event is judged too.
#[test]
fn what_a_model_fills_is_judged_whatever_its_keys_are_called() {
    use super::formats::Role;
    let args = json!({"id":"ada.lovelace@example.com","status":"ok","ada.lovelace@example.com":{"type":"ada.lovelace@example.com"}});
    let events = [
        message(
            json!({"candidates":[{"content":{"parts":[{"functionCall":{"name":"send","args":args}}],"role":"model"},"index":0}]}),
        ),
        message(json!({"model":"m","created_at":"t","message":{"role":"assistant","content":"",
            "tool_calls":[{"function":{"name":"send","arguments":args}}]},"done":false})),
        named(
            "content_block_start",
            json!({"type":"content_block_start","index":0,
            "content_block":{"type":"tool_use","id":"toolu_1","name":"send","input":args}}),
        ),
        named(
            "response.completed",
            json!({"type":"response.completed","response":{"id":"r","status":"completed",
            "output":[],"metadata":args}}),
        ),
        message(json!({"id":"c","object":"chat.completion.chunk","choices":[],"ada.lovelace@example.com":1})),
    ];
    for (i, event) in events.iter().enumerate() {
        let out = run(&redact(), std::slice::from_ref(event), &[1]);
        assert_no_address(&out);
        assert!(data(&out[0]).unwrap().contains("[redacted]"), "{out:?}");
        let kind = if i < 3 { super::ChannelKind::ToolArguments } else { super::ChannelKind::Other };
        let parts = parts_of(std::slice::from_ref(event));
        let judged = |text: &str| -> Vec<Role> { parts.iter().filter(|(_, t)| t == text).map(|(r, _)| *r).collect() };
        if i == 4 {
            assert_eq!(judged("ada.lovelace@example.com"), [Role::Key(kind)], "{parts:?}");
            continue;
        }
        // The value of `id`, a key, the value of the nested `type` (in any order).
        let address = judged("ada.lovelace@example.com");
        let count = |role: Role| address.iter().filter(|&&r| r == role).count();
        assert_eq!((count(Role::Whole(kind)), count(Role::Key(kind))), (2, 1), "event {i}: {parts:?}");
        for key in ["id", "status", "type"] {
            assert_eq!(judged(key), [Role::Key(kind)], "event {i}, key {key}: {parts:?}");
        }
    }
}
