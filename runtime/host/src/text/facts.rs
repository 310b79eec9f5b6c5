//! What an LLM stream says about itself, for telemetry (the OpenTelemetry GenAI conventions): the
//! provider its wire format belongs to, the model that answered, the tokens it counted and why it
//! stopped. Read here, beside the other format knowledge, from the events as they arrive.
//!
//! Cheap by design: an event is parsed only when a byte search finds a field this reader still
//! needs with a value worth reading (a model name not yet known, a usage object, a finish reason
//! that is a string); the token deltas between the first event and the last are skipped after a
//! few searches. Numbers and names only: never text a model wrote.

use memchr::memmem::Finder;
use serde_json::Value;
use std::sync::LazyLock;

/// The GenAI facts of one stream, as far as its events showed them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Facts {
    /// `gen_ai.system`: `openai` (Chat Completions and Responses wire formats), `anthropic`,
    /// `gcp.gemini` or `ollama`; by format, so an OpenAI-compatible server reads as `openai`.
    pub system: Option<&'static str>,
    /// `gen_ai.response.model`.
    pub response_model: Option<String>,
    /// `gen_ai.usage.input_tokens`.
    pub input_tokens: Option<u64>,
    /// `gen_ai.usage.output_tokens`.
    pub output_tokens: Option<u64>,
    /// `gen_ai.response.finish_reasons`, in the order seen, each once.
    pub finish_reasons: Vec<String>,
}

/// Reads [`Facts`] event by event.
#[derive(Debug, Default)]
pub struct FactReader {
    facts: Facts,
}

/// The quoted keys whose values make an event worth parsing, each searcher built once.
struct Keys {
    models: [Finder<'static>; 2],
    finishes: [Finder<'static>; 4],
    usages: [Finder<'static>; 2],
    eval_count: Finder<'static>,
    responses: Finder<'static>,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys {
    models: [Finder::new(br#""model""#), Finder::new(br#""modelVersion""#)],
    finishes: [
        Finder::new(br#""finish_reason""#),
        Finder::new(br#""stop_reason""#),
        Finder::new(br#""finishReason""#),
        Finder::new(br#""done_reason""#),
    ],
    usages: [Finder::new(br#""usage""#), Finder::new(br#""usageMetadata""#)],
    eval_count: Finder::new(br#""eval_count""#),
    responses: Finder::new(br#""response."#),
});

impl FactReader {
    /// What has been read so far.
    pub fn facts(&self) -> &Facts {
        &self.facts
    }

    /// Reads one event's data (a JSON object, an array of them for Gemini without `alt=sse`).
    pub fn observe(&mut self, data: &str) {
        let (bytes, keys) = (data.as_bytes(), &*KEYS);
        let wanted = (self.facts.response_model.is_none() && keys.models.iter().any(|key| has_string(bytes, key)))
            || keys.finishes.iter().any(|key| has_string(bytes, key))
            || keys.usages.iter().any(|key| has_object(bytes, key))
            || keys.eval_count.find(bytes).is_some()
            || keys.responses.find(bytes).is_some();
        if !wanted {
            return;
        }
        let Ok(value) = serde_json::from_str::<Value>(data) else { return };
        match &value {
            Value::Array(items) => items.iter().for_each(|item| self.read(item)),
            item => self.read(item),
        }
    }

    fn read(&mut self, event: &Value) {
        let Some(object) = event.as_object() else { return };
        let kind = object.get("type").and_then(Value::as_str).unwrap_or("");
        if object.contains_key("choices") {
            self.chat(event);
        } else if object.contains_key("candidates") {
            self.gemini(event);
        } else if kind.starts_with("response.") {
            self.responses(event);
        } else if kind.starts_with("message_") || kind.starts_with("content_block_") {
            self.anthropic(event, kind);
        } else if object.contains_key("done") && object.contains_key("model") {
            self.ollama(event);
        }
    }

    fn chat(&mut self, event: &Value) {
        self.facts.system = Some("openai");
        self.model(event.get("model"));
        for choice in event["choices"].as_array().into_iter().flatten() {
            self.finish(choice.get("finish_reason"));
        }
        self.tokens(&event["usage"], "prompt_tokens", "completion_tokens");
    }

    fn responses(&mut self, event: &Value) {
        self.facts.system = Some("openai");
        let response = &event["response"];
        self.model(response.get("model"));
        self.tokens(&response["usage"], "input_tokens", "output_tokens");
        match event["type"].as_str() {
            Some("response.completed") => self.finish(Some(&Value::from("completed"))),
            Some("response.incomplete") => {
                let reason = response["incomplete_details"].get("reason").cloned().unwrap_or(Value::from("incomplete"));
                self.finish(Some(&reason));
            }
            Some("response.failed") => self.finish(Some(&Value::from("failed"))),
            _ => {}
        }
    }

    fn anthropic(&mut self, event: &Value, kind: &str) {
        self.facts.system = Some("anthropic");
        if kind == "message_start" {
            let message = &event["message"];
            self.model(message.get("model"));
            self.tokens(&message["usage"], "input_tokens", "output_tokens");
        } else if kind == "message_delta" {
            self.finish(event["delta"].get("stop_reason"));
            self.tokens(&event["usage"], "input_tokens", "output_tokens");
        }
    }

    fn gemini(&mut self, event: &Value) {
        self.facts.system = Some("gcp.gemini");
        self.model(event.get("modelVersion"));
        for candidate in event["candidates"].as_array().into_iter().flatten() {
            self.finish(candidate.get("finishReason"));
        }
        self.tokens(&event["usageMetadata"], "promptTokenCount", "candidatesTokenCount");
    }

    fn ollama(&mut self, event: &Value) {
        self.facts.system = Some("ollama");
        self.model(event.get("model"));
        self.finish(event.get("done_reason"));
        self.tokens(event, "prompt_eval_count", "eval_count");
    }

    fn model(&mut self, model: Option<&Value>) {
        if self.facts.response_model.is_none()
            && let Some(name) = model.and_then(Value::as_str).filter(|n| !n.is_empty())
        {
            self.facts.response_model = Some(name.chars().take(128).collect());
        }
    }

    fn finish(&mut self, reason: Option<&Value>) {
        if let Some(reason) = reason.and_then(Value::as_str).filter(|r| !r.is_empty())
            && !self.facts.finish_reasons.iter().any(|r| r == reason)
            && self.facts.finish_reasons.len() < 8
        {
            self.facts.finish_reasons.push(reason.chars().take(64).collect());
        }
    }

    /// Usage figures only grow within a stream (some formats repeat them): the largest is kept.
    fn tokens(&mut self, usage: &Value, input: &str, output: &str) {
        let most = |known: Option<u64>, key: &str| match usage.get(key).and_then(Value::as_u64) {
            Some(n) => Some(known.map_or(n, |k| k.max(n))),
            None => known,
        };
        self.facts.input_tokens = most(self.facts.input_tokens, input);
        self.facts.output_tokens = most(self.facts.output_tokens, output);
    }
}

/// What a request says about itself, for telemetry: the model an LLM API call asks for, or the
/// MCP method (and the tool or prompt it names) of a JSON-RPC message. Names only: never an
/// argument, a message or a prompt's text.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RequestFacts {
    /// `gen_ai.request.model`: the body's `model` (OpenAI, Anthropic, Ollama), else the path's
    /// `models/NAME:method` (Gemini).
    pub model: Option<String>,
    /// `mcp.method.name`: a JSON-RPC request's or notification's `method`.
    pub mcp_method: Option<String>,
    /// `gen_ai.tool.name`: the tool a `tools/call` calls.
    pub tool: Option<String>,
    /// `gen_ai.prompt.name`: the prompt a `prompts/get` gets.
    pub prompt: Option<String>,
}

/// Reads the [`RequestFacts`] of a request body judged whole (`body`, decoded text) sent to
/// `path` (the upstream's).
pub fn read_request(body: &str, path: &str) -> RequestFacts {
    let mut facts = RequestFacts { model: gemini_model(path), ..RequestFacts::default() };
    let Ok(Value::Object(message)) = serde_json::from_str::<Value>(body) else { return facts };
    let name = |value: Option<&Value>, most: usize| {
        value.and_then(Value::as_str).filter(|n| !n.is_empty()).map(|n| n.chars().take(most).collect::<String>())
    };
    if message.get("jsonrpc").and_then(Value::as_str) == Some("2.0") {
        facts.mcp_method = name(message.get("method"), 64);
        let params = message.get("params").and_then(|p| p.get("name"));
        match facts.mcp_method.as_deref() {
            Some("tools/call") => facts.tool = name(params, 128),
            Some("prompts/get") => facts.prompt = name(params, 128),
            _ => {}
        }
    } else if let Some(model) = name(message.get("model"), 128) {
        facts.model = Some(model);
    }
    facts
}

/// Gemini names the model in the path: `.../models/NAME:generateContent`.
fn gemini_model(path: &str) -> Option<String> {
    let (_, after) = path.split_once("/models/")?;
    let (model, _) = after.split_once(':')?;
    (!model.is_empty() && !model.contains('/')).then(|| model.chars().take(128).collect())
}

/// True if the quoted key `key` occurs followed (after blanks and a colon) by a string.
fn has_string(bytes: &[u8], key: &Finder<'_>) -> bool {
    value_starts(bytes, key, b'"')
}

/// True if the quoted key `key` occurs followed (after blanks and a colon) by an object (a
/// `null` is not worth a parse).
fn has_object(bytes: &[u8], key: &Finder<'_>) -> bool {
    value_starts(bytes, key, b'{')
}

fn value_starts(bytes: &[u8], key: &Finder<'_>, first: u8) -> bool {
    let length = key.needle().len();
    key.find_iter(bytes).any(|at| {
        let rest = bytes[at + length..].iter().skip_while(|b| b.is_ascii_whitespace());
        let mut rest = rest.skip_while(|&&b| b == b':').skip_while(|b| b.is_ascii_whitespace());
        rest.next() == Some(&first)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(events: &[&str]) -> Facts {
        let mut reader = FactReader::default();
        events.iter().for_each(|e| reader.observe(e));
        reader.facts().clone()
    }

    #[test]
    fn a_request_gives_its_model_or_its_mcp_method_and_tool_and_nothing_it_carries() {
        let chat = read_request(
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"my key sk-1"}]}"#,
            "/v1/chat/completions",
        );
        assert_eq!(chat, RequestFacts { model: Some("gpt-4o".into()), ..RequestFacts::default() });
        let gemini = read_request(r#"{"contents":[]}"#, "/v1beta/models/gemini-2.0-flash:streamGenerateContent");
        assert_eq!(gemini.model.as_deref(), Some("gemini-2.0-flash"));
        let call = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"delete_repo","arguments":{"token":"t"}}}"#;
        let call = read_request(call, "/mcp");
        assert_eq!((call.mcp_method.as_deref(), call.tool.as_deref()), (Some("tools/call"), Some("delete_repo")));
        assert_eq!(call.model, None);
        let prompt =
            read_request(r#"{"jsonrpc":"2.0","id":4,"method":"prompts/get","params":{"name":"review"}}"#, "/mcp");
        assert_eq!((prompt.prompt.as_deref(), prompt.tool), (Some("review"), None));
        let listed = read_request(r#"{"jsonrpc":"2.0","id":5,"method":"tools/list","params":{"name":"x"}}"#, "/mcp");
        assert_eq!((listed.mcp_method.as_deref(), listed.tool), (Some("tools/list"), None));
        // Not JSON, not an object, a model that is not a string: nothing.
        for body in ["model=gpt-4o", r#"["gpt-4o"]"#, r#"{"model":7}"#] {
            assert_eq!(read_request(body, "/v1/chat/completions"), RequestFacts::default(), "{body}");
        }
        let long = format!(r#"{{"model":"{}"}}"#, "m".repeat(500));
        assert_eq!(read_request(&long, "/").model.map(|m| m.len()), Some(128));
    }

    #[test]
    fn chat_completions_give_model_usage_and_finish_reason() {
        let facts = read(&[
            r#"{"id":"c","object":"chat.completion.chunk","model":"gpt-4o-2024","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"usage":null}"#,
            r#"{"id":"c","object":"chat.completion.chunk","model":"gpt-4o-2024","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#,
            r#"{"id":"c","object":"chat.completion.chunk","model":"gpt-4o-2024","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5}}"#,
            "[DONE]",
        ]);
        let expected = Facts {
            system: Some("openai"),
            response_model: Some("gpt-4o-2024".into()),
            input_tokens: Some(12),
            output_tokens: Some(5),
            finish_reasons: vec!["stop".into()],
        };
        assert_eq!(facts, expected);
    }

    #[test]
    fn anthropic_messages_give_model_usage_and_stop_reason() {
        let facts = read(&[
            r#"{"type":"message_start","message":{"id":"m","model":"claude-x","usage":{"input_tokens":25,"output_tokens":1}}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}"#,
        ]);
        assert_eq!(facts.system, Some("anthropic"));
        assert_eq!(facts.response_model.as_deref(), Some("claude-x"));
        assert_eq!((facts.input_tokens, facts.output_tokens), (Some(25), Some(15)));
        assert_eq!(facts.finish_reasons, ["end_turn"]);
    }

    #[test]
    fn responses_gemini_and_ollama_are_read_too() {
        let responses = read(&[
            r#"{"type":"response.created","response":{"id":"r","model":"gpt-5","status":"in_progress"}}"#,
            r#"{"type":"response.output_text.delta","delta":"Hi"}"#,
            r#"{"type":"response.incomplete","response":{"id":"r","model":"gpt-5","incomplete_details":{"reason":"max_output_tokens"},"usage":{"input_tokens":3,"output_tokens":9}}}"#,
        ]);
        assert_eq!((responses.response_model.as_deref(), responses.output_tokens), (Some("gpt-5"), Some(9)));
        assert_eq!(responses.finish_reasons, ["max_output_tokens"]);
        let gemini = read(&[
            r#"{"candidates":[{"content":{"parts":[{"text":"Hi"}]}}],"modelVersion":"gemini-2.5"}"#,
            r#"[{"candidates":[{"content":{"parts":[{"text":"!"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":2}}]"#,
        ]);
        assert_eq!((gemini.system, gemini.response_model.as_deref()), (Some("gcp.gemini"), Some("gemini-2.5")));
        assert_eq!(
            (gemini.input_tokens, gemini.output_tokens, gemini.finish_reasons.clone()),
            (Some(4), Some(2), vec!["STOP".into()])
        );
        let ollama = read(&[
            r#"{"model":"llama3","message":{"role":"assistant","content":"Hi"},"done":false}"#,
            r#"{"model":"llama3","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","prompt_eval_count":7,"eval_count":3}"#,
        ]);
        assert_eq!((ollama.system, ollama.input_tokens, ollama.output_tokens), (Some("ollama"), Some(7), Some(3)));
    }

    #[test]
    fn deltas_between_the_first_event_and_the_last_are_not_parsed() {
        let delta = r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}],"usage":null}"#;
        let mut reader = FactReader::default();
        reader.observe(delta);
        assert_eq!(reader.facts().response_model.as_deref(), Some("m"));
        // Model known, finish reason null, usage null: nothing left to want in this event.
        let bytes = delta.as_bytes();
        let keys = &*KEYS;
        assert!(!has_string(bytes, &keys.finishes[0]) && !has_object(bytes, &keys.usages[0]));
    }

    #[test]
    fn text_that_mentions_the_fields_is_not_taken_for_them() {
        // A model writing about finish reasons: inside a string the key is escaped.
        let facts = read(&[
            r#"{"model":"m","choices":[{"delta":{"content":"the \"finish_reason\":\"x\" field"},"finish_reason":null}]}"#,
        ]);
        assert!(facts.finish_reasons.is_empty(), "{facts:?}");
    }
}
