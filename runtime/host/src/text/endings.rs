//! How each format ends an answer cut short, so that a client's SDK finishes cleanly and says why:
//!
//! | format | ending |
//! |---|---|
//! | OpenAI Chat | a chunk per open choice with `finish_reason` (`content_filter` / `length`), then `[DONE]` |
//! | OpenAI Responses | `response.incomplete` with `incomplete_details.reason` (`content_filter` / `max_output_tokens`), from `response.created`'s object, the key added where that object lacks it |
//! | Anthropic Messages | `content_block_stop` for each open block, `message_delta` with `stop_reason` (`refusal` / `max_tokens`), `message_stop` |
//! | Gemini | a chunk with `finishReason` (`SAFETY` / `MAX_TOKENS`) |
//! | Ollama | a last line with `"done": true` and `done_reason` (`content_filter` / `length`) |
//! | anything else | `event: error` |

use super::StopReason;
use super::formats::{Classifier, Format};
use sluicegate_guest::{NewEvent, VerdictBuilder};

/// The reason's name in each format: [Chat and others, Anthropic, Responses, Gemini].
fn names(reason: StopReason) -> [&'static str; 4] {
    match reason {
        StopReason::ContentFilter => ["content_filter", "refusal", "content_filter", "SAFETY"],
        StopReason::Length => ["length", "max_tokens", "max_output_tokens", "MAX_TOKENS"],
    }
}

/// Inserts the events that end a stream in `format` for `reason`; `open` are the keys of the
/// channels still open.
pub(super) fn write(stream: &Classifier, reason: StopReason, open: &[&str], out: &mut VerdictBuilder) {
    let [plain, anthropic, responses, gemini] = names(reason);
    match stream.format {
        Format::Chat => {
            let meta = stream.chat_meta.as_deref().unwrap_or("");
            let mut choices: Vec<&str> =
                open.iter().filter_map(|key| key.strip_prefix("chat/")?.split('/').next()).collect();
            choices.dedup();
            if choices.is_empty() {
                choices.push("0");
            }
            for index in choices {
                let data = format!(
                    "{{{meta}\"choices\":[{{\"index\":{index},\"delta\":{{}},\"finish_reason\":\"{plain}\"}}]}}"
                );
                out.insert(&NewEvent::message(&data));
            }
            out.insert(&NewEvent::message("[DONE]"));
        }
        Format::Anthropic => {
            for index in &stream.open_blocks {
                let data = format!("{{\"type\":\"content_block_stop\",\"index\":{index}}}");
                out.insert(&NewEvent::message(&data).with_type("content_block_stop"));
            }
            let data = format!(
                "{{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"{anthropic}\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{}}}}}",
                stream.deltas
            );
            out.insert(&NewEvent::message(&data).with_type("message_delta"));
            out.insert(&NewEvent::message("{\"type\":\"message_stop\"}").with_type("message_stop"));
        }
        Format::Responses => {
            let response = incomplete_response(stream.response.as_deref(), responses);
            let data = format!(
                "{{\"type\":\"response.incomplete\",\"sequence_number\":{},\"response\":{response}}}",
                stream.sequence + 1
            );
            out.insert(&NewEvent::message(&data).with_type("response.incomplete"));
        }
        Format::Gemini => {
            let data = format!(
                "{{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"\"}}],\"role\":\"model\"}},\"finishReason\":\"{gemini}\",\"index\":0}}]}}"
            );
            out.insert(&NewEvent::message(&data));
        }
        Format::Ollama => {
            let meta = stream.ollama_meta.as_deref().unwrap_or("");
            let data = format!(
                "{{{meta}\"message\":{{\"role\":\"assistant\",\"content\":\"\"}},\"done\":true,\"done_reason\":\"{plain}\"}}"
            );
            out.insert(&NewEvent::message(&data));
        }
        Format::Unknown => {
            let data = format!(
                "{{\"type\":\"error\",\"error\":{{\"type\":\"{plain}\",\"message\":\"the stream was ended by an interceptor\"}}}}"
            );
            out.insert(&NewEvent::message(&data).with_type("error"));
        }
    }
}

/// `response.created`'s response object with `status` `incomplete` and `incomplete_details` set
/// (the keys replaced where present, added where not), or a minimal one.
fn incomplete_response(created: Option<&str>, reason: &str) -> String {
    let details = format!("{{\"reason\":\"{reason}\"}}");
    let Some(created) = created else {
        return format!(
            "{{\"object\":\"response\",\"status\":\"incomplete\",\"incomplete_details\":{details},\"output\":[]}}"
        );
    };
    let mut doc = sluicegate_guest::json::Doc::default();
    if !doc.parse(created) {
        return format!(
            "{{\"object\":\"response\",\"status\":\"incomplete\",\"incomplete_details\":{details},\"output\":[]}}"
        );
    }
    // The members as written, but for the two replaced; the two appended at the end.
    let mut members: Vec<String> = Vec::new();
    for (key, value) in doc.members(created, 0) {
        let mut name = String::new();
        sluicegate_guest::json::decode(key, &mut name);
        if name == "status" || name == "incomplete_details" {
            continue;
        }
        let node = doc.node(value);
        let quoted = usize::from(node.kind == sluicegate_guest::json::Kind::String);
        members.push(format!("\"{key}\":{}", &created[node.start - quoted..node.end + quoted]));
    }
    members.push("\"status\":\"incomplete\"".into());
    members.push(format!("\"incomplete_details\":{details}"));
    format!("{{{}}}", members.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_without_incomplete_details_gets_the_key() {
        let created = r#"{"id":"resp_1","object":"response","status":"in_progress","output":[]}"#;
        let value: serde_json::Value =
            serde_json::from_str(&incomplete_response(Some(created), "content_filter")).unwrap();
        assert_eq!(value["incomplete_details"]["reason"], "content_filter");
        assert_eq!((value["status"].as_str(), value["id"].as_str()), (Some("incomplete"), Some("resp_1")));
        let with = r#"{"id":"r","status":"in_progress","incomplete_details":null}"#;
        let value: serde_json::Value =
            serde_json::from_str(&incomplete_response(Some(with), "max_output_tokens")).unwrap();
        assert_eq!(value["incomplete_details"]["reason"], "max_output_tokens");
    }
}
