//! LLM token streams as the providers send them (OpenAI Chat Completions, OpenAI Responses,
//! Anthropic Messages), built from any split of a text into deltas, and the text a client
//! reassembles from such a stream: the runtime's own samples (`sluicegate::text::samples`, which
//! also has Gemini and Ollama), as the encoded streams and the three formats these tests run.

use serde_json::Value;
use sluicegate::sse::Event;
use sluicegate::text::samples;

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

impl From<Format> for samples::Format {
    fn from(format: Format) -> Self {
        match format {
            Format::Chat => samples::Format::Chat,
            Format::Responses => samples::Format::Responses,
            Format::Anthropic => samples::Format::Anthropic,
        }
    }
}

/// A whole stream whose answer is `deltas` concatenated (the runtime's samples, encoded). With
/// `ids`, every event has an id (`id: N`), which providers do not send but a proxy must keep.
pub fn stream(format: Format, deltas: &[String], ids: bool) -> String {
    let mut bytes = Vec::new();
    for (i, event) in samples::stream(format.into(), deltas).into_iter().enumerate() {
        let event = if ids { event.with_id(i.to_string()) } else { event };
        sluicegate::sse::encode_event(&mut bytes, &event);
    }
    String::from_utf8(bytes).expect("the samples are text")
}

fn json_of(event: &Event) -> Option<Value> {
    serde_json::from_slice(event.data.as_ref()?).ok()
}

/// The answer a client reassembles from the deltas of `events`.
pub fn text_of(format: Format, events: &[Event]) -> String {
    samples::text_of(format.into(), events)
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
