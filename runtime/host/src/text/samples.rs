//! Streams as the providers send them, built from any split of a text into deltas, and the text a
//! client reassembles from them: what `sluicegate check` runs a text guard over (random splits,
//! every format), what `sluicegate bench --events` measures by default, and what the tests use.
//! (`shared/reference/llm-stream-formats.md` describes each format.)

use serde_json::{Value, json};
use sluicegate_contract::event::Event;

/// The streaming formats with text deltas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenAI Chat Completions.
    Chat,
    /// OpenAI Responses.
    Responses,
    /// Anthropic Messages.
    Anthropic,
    /// Gemini `streamGenerateContent?alt=sse`.
    Gemini,
    /// Ollama's JSON lines (`/api/chat`), a line per event.
    Ollama,
}

impl Format {
    /// Every format.
    pub const ALL: [Format; 5] = [Format::Chat, Format::Responses, Format::Anthropic, Format::Gemini, Format::Ollama];

    /// Its name, as `bench --events` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Chat => "openai-chat",
            Format::Responses => "openai-responses",
            Format::Anthropic => "anthropic",
            Format::Gemini => "gemini",
            Format::Ollama => "ollama",
        }
    }
}

fn event(name: Option<&str>, data: Value) -> Event {
    let event = Event::message(data.to_string());
    match name {
        Some(name) => event.with_type(name.to_string()),
        None => event,
    }
}

/// The events of a whole answer streamed as `deltas`.
pub fn stream(format: Format, deltas: &[String]) -> Vec<Event> {
    match format {
        Format::Chat => chat(deltas),
        Format::Responses => responses(deltas),
        Format::Anthropic => anthropic(deltas),
        Format::Gemini => {
            let chunk = |text: &str, finish: Option<&str>| {
                let mut candidate = json!({"content": {"parts": [{"text": text}], "role": "model"}, "index": 0});
                if let Some(finish) = finish {
                    candidate["finishReason"] = json!(finish);
                }
                json!({"candidates": [candidate], "modelVersion": "gemini-test", "responseId": "r1"})
            };
            let mut events: Vec<Event> = deltas.iter().map(|d| event(None, chunk(d, None))).collect();
            let mut last = chunk("", Some("STOP"));
            last["usageMetadata"] = json!({"promptTokenCount": 9, "candidatesTokenCount": deltas.len()});
            events.push(event(None, last));
            events
        }
        Format::Ollama => {
            let line = |text: &str, done: bool| {
                json!({"model": "llama-test", "created_at": "2026-01-01T00:00:00Z",
                       "message": {"role": "assistant", "content": text}, "done": done})
            };
            let mut events: Vec<Event> = deltas.iter().map(|d| event(None, line(d, false))).collect();
            let mut last = line("", true);
            last["done_reason"] = json!("stop");
            last["eval_count"] = json!(deltas.len());
            events.push(event(None, last));
            events
        }
    }
}

fn chat(deltas: &[String]) -> Vec<Event> {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000,
               "model": "gpt-test", "system_fingerprint": null,
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    };
    let mut events = vec![event(None, chunk(json!({"role": "assistant", "content": ""}), Value::Null))];
    events.extend(deltas.iter().map(|d| event(None, chunk(json!({"content": d}), Value::Null))));
    events.push(event(None, chunk(json!({}), json!("stop"))));
    events.push(Event::message("[DONE]"));
    events
}

fn responses(deltas: &[String]) -> Vec<Event> {
    let text: String = deltas.concat();
    let response = |status: &str, output: Value| {
        json!({"id": "resp_1", "object": "response", "created_at": 1_700_000_000, "status": status,
               "model": "gpt-test", "output": output, "incomplete_details": null, "error": null,
               "parallel_tool_calls": true, "tool_choice": "auto", "tools": [], "text": {"format": {"type": "text"}}})
    };
    let part = |text: &str| json!({"type": "output_text", "text": text, "annotations": []});
    let item = |status: &str, content: Value| json!({"id": "msg_1", "type": "message", "status": status, "role": "assistant", "content": content});
    let with = |mut base: Value, key: &str, value: Value| {
        base[key] = value;
        base
    };
    let mut events = Vec::new();
    let mut push = |name: &str, mut data: Value| {
        data["type"] = json!(name);
        data["sequence_number"] = json!(events.len());
        events.push(event(Some(name), data));
    };
    push("response.created", json!({"response": response("in_progress", json!([]))}));
    push("response.in_progress", json!({"response": response("in_progress", json!([]))}));
    push("response.output_item.added", json!({"output_index": 0, "item": item("in_progress", json!([]))}));
    let at = json!({"item_id": "msg_1", "output_index": 0, "content_index": 0});
    push("response.content_part.added", with(at.clone(), "part", part("")));
    for d in deltas {
        push("response.output_text.delta", with(with(at.clone(), "delta", json!(d)), "logprobs", json!([])));
    }
    push("response.output_text.done", with(with(at.clone(), "text", json!(text)), "logprobs", json!([])));
    push("response.content_part.done", with(at.clone(), "part", part(&text)));
    let done = item("completed", json!([part(&text)]));
    push("response.output_item.done", json!({"output_index": 0, "item": done.clone()}));
    push("response.completed", json!({"response": response("completed", json!([done]))}));
    events
}

fn anthropic(deltas: &[String]) -> Vec<Event> {
    let mut events = Vec::new();
    let mut push = |name: &str, mut data: Value| {
        data["type"] = json!(name);
        events.push(event(Some(name), data));
    };
    push(
        "message_start",
        json!({"message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
                           "content": [], "stop_reason": null, "stop_sequence": null,
                           "usage": {"input_tokens": 10, "output_tokens": 1}}}),
    );
    push("content_block_start", json!({"index": 0, "content_block": {"type": "text", "text": ""}}));
    push("ping", json!({}));
    for d in deltas {
        push("content_block_delta", json!({"index": 0, "delta": {"type": "text_delta", "text": d}}));
    }
    push("content_block_stop", json!({"index": 0}));
    push(
        "message_delta",
        json!({"delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": deltas.len()}}),
    );
    push("message_stop", json!({}));
    events
}

fn json_of(event: &Event) -> Option<Value> {
    serde_json::from_slice(event.data.as_ref()?).ok()
}

/// The answer a client reassembles from the content deltas of `events`.
pub fn text_of(format: Format, events: &[Event]) -> String {
    let mut text = String::new();
    for value in events.iter().filter_map(json_of) {
        let piece = match format {
            Format::Chat => value["choices"][0]["delta"]["content"].as_str(),
            Format::Responses if value["type"] == "response.output_text.delta" => value["delta"].as_str(),
            Format::Anthropic if value["delta"]["type"] == "text_delta" => value["delta"]["text"].as_str(),
            Format::Gemini => value["candidates"][0]["content"]["parts"][0]["text"].as_str(),
            Format::Ollama => value["message"]["content"].as_str(),
            _ => None,
        };
        text.push_str(piece.unwrap_or(""));
    }
    text
}

/// `text` split the way a model's tokens split it: before every space, around `.`, `@`, `,`, `!`
/// and `;`, and into pieces of at most six characters.
pub fn tokens(text: &str) -> Vec<String> {
    const PUNCTUATION: &str = ".@,!;";
    let mut tokens: Vec<String> = Vec::new();
    for c in text.chars() {
        let cut = tokens.last().is_none_or(|t| {
            c == ' ' || PUNCTUATION.contains(c) || t.ends_with(|p| PUNCTUATION.contains(p)) || t.chars().count() >= 6
        });
        if cut {
            tokens.push(String::new());
        }
        tokens.last_mut().expect("a token was just pushed").push(c);
    }
    tokens
}

/// A realistic answer for samples: addresses, phrases, keys, punctuation and non-ASCII text.
pub const ANSWER: &str = "Thanks for reaching out! Write to support@example.com or jane.doe@corp.example.org, \
    and quote ticket TCK-204811 (caf\u{e9}, \u{1f600}). Our office hours are 9am to 5pm, Monday through Friday; \
    for urgent matters call +1 415 555 0100, and never share the internal roadmap or a key such as sk-test-1234.";
