//! LLM token streams as the providers send them (OpenAI Chat Completions, OpenAI Responses,
//! Anthropic Messages; see `shared/reference/llm-stream-formats.md`), built from any split of a
//! text into deltas, and the text a client reassembles from such a stream.

use serde_json::{Value, json};
use sluicegate::sse::Event;

pub use sluicegate::bench::tokens;

/// The streaming formats with text deltas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenAI Chat Completions.
    Chat,
    /// OpenAI Responses.
    Responses,
    /// Anthropic Messages.
    Anthropic,
}

/// Every format, for tests that run each.
pub const FORMATS: [Format; 3] = [Format::Chat, Format::Responses, Format::Anthropic];

fn event(name: Option<&str>, data: Value) -> String {
    let mut s = String::new();
    if let Some(name) = name {
        s.push_str(&format!("event: {name}\n"));
    }
    s.push_str(&format!("data: {data}\n\n"));
    s
}

/// A whole stream whose answer is `deltas` concatenated. With `ids`, every event has an id
/// (`id: N`), which providers do not send but a proxy must keep.
pub fn stream(format: Format, deltas: &[String], ids: bool) -> String {
    let text: String = deltas.concat();
    let mut events: Vec<String> = Vec::new();
    match format {
        Format::Chat => {
            let chunk = |delta: Value, finish: Value| {
                json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000,
                       "model": "gpt-test", "system_fingerprint": null,
                       "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
            };
            events.push(event(None, chunk(json!({"role": "assistant", "content": ""}), Value::Null)));
            for d in deltas {
                events.push(event(None, chunk(json!({"content": d}), Value::Null)));
            }
            events.push(event(None, chunk(json!({}), json!("stop"))));
            events.push("data: [DONE]\n\n".to_string());
        }
        Format::Responses => {
            let response = |status: &str, output: Value| {
                json!({"id": "resp_1", "object": "response", "created_at": 1_700_000_000, "status": status,
                       "model": "gpt-test", "output": output, "incomplete_details": null, "error": null,
                       "parallel_tool_calls": true, "tool_choice": "auto", "tools": [], "text": {"format": {"type": "text"}}})
            };
            let part = |text: &str| json!({"type": "output_text", "text": text, "annotations": []});
            let item = |status: &str, content: Value| json!({"id": "msg_1", "type": "message", "status": status, "role": "assistant", "content": content});
            let mut seq = 0;
            let mut push = |name: &str, mut data: Value| {
                data["type"] = json!(name);
                data["sequence_number"] = json!(seq);
                seq += 1;
                events.push(event(Some(name), data));
            };
            push("response.created", json!({"response": response("in_progress", json!([]))}));
            push("response.in_progress", json!({"response": response("in_progress", json!([]))}));
            push("response.output_item.added", json!({"output_index": 0, "item": item("in_progress", json!([]))}));
            let at = json!({"item_id": "msg_1", "output_index": 0, "content_index": 0});
            let with = |mut base: Value, key: &str, value: Value| {
                base[key] = value;
                base
            };
            push("response.content_part.added", with(at.clone(), "part", part("")));
            for d in deltas {
                push("response.output_text.delta", with(with(at.clone(), "delta", json!(d)), "logprobs", json!([])));
            }
            push("response.output_text.done", with(with(at.clone(), "text", json!(text)), "logprobs", json!([])));
            push("response.content_part.done", with(at.clone(), "part", part(&text)));
            let done = item("completed", json!([part(&text)]));
            push("response.output_item.done", json!({"output_index": 0, "item": done.clone()}));
            push("response.completed", json!({"response": response("completed", json!([done]))}));
        }
        Format::Anthropic => {
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
                json!({"delta": {"stop_reason": "end_turn", "stop_sequence": null},
                       "usage": {"output_tokens": deltas.len()}}),
            );
            push("message_stop", json!({}));
        }
    }
    if !ids {
        return events.concat();
    }
    events.iter().enumerate().map(|(i, e)| format!("id: {i}\n{e}")).collect()
}

fn json_of(event: &Event) -> Option<Value> {
    serde_json::from_slice(event.data.as_ref()?).ok()
}

/// The answer a client reassembles from the deltas of `events`.
pub fn text_of(format: Format, events: &[Event]) -> String {
    let mut text = String::new();
    for value in events.iter().filter_map(json_of) {
        let piece = match format {
            Format::Chat => value["choices"][0]["delta"]["content"].as_str(),
            Format::Responses if value["type"] == "response.output_text.delta" => value["delta"].as_str(),
            Format::Anthropic if value["delta"]["type"] == "text_delta" => value["delta"]["text"].as_str(),
            _ => None,
        };
        text.push_str(piece.unwrap_or(""));
    }
    text
}

/// The whole texts that a Responses stream repeats after its deltas (output_text.done,
/// content_part.done, output_item.done, response.completed), in order.
pub fn repeated_texts(events: &[Event]) -> Vec<String> {
    let mut out = Vec::new();
    for value in events.iter().filter_map(json_of) {
        let text = match value["type"].as_str() {
            Some("response.output_text.done") => &value["text"],
            Some("response.content_part.done") => &value["part"]["text"],
            Some("response.output_item.done") => &value["item"]["content"][0]["text"],
            Some("response.completed") => &value["response"]["output"][0]["content"][0]["text"],
            _ => continue,
        };
        out.push(text.as_str().unwrap_or_default().to_string());
    }
    out
}
