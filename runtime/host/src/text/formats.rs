//! Where the text is in each streaming format, and what closes it: the format knowledge of the
//! whole project, in one place.
//!
//! | format | channels (kind) | closes |
//! |---|---|---|
//! | OpenAI Chat | `choices[i].delta.content` and `.audio.transcript` (content), `.refusal` (refusal), `.reasoning_content` / `.reasoning` (reasoning), `.tool_calls[j].function.arguments` and `.function_call.arguments` (tool arguments); `logprobs.content[].token` and `top_logprobs[].token` follow the content | the choice's `finish_reason`; `[DONE]` closes all |
//! | OpenAI Responses | every `response.*.delta` but `response.audio.delta`: `output_text` and `audio.transcript` (content), `refusal`, `function_call_arguments`, `custom_tool_call_input`, `mcp_call_arguments` and `code_interpreter_call_code` (tool arguments), `reasoning_summary_text`, `reasoning_text` (reasoning), any other (other) | their `.done`, `content_part.done`, `output_item.done` (the item), `response.completed` / `.incomplete` / `.failed` (all) |
//! | Anthropic Messages | `content_block_delta` with `text_delta` (content), `input_json_delta` (tool arguments), `thinking_delta` (reasoning), a delta type not known yet with one string (other) | `content_block_stop`; `message_delta`, `message_stop` close all |
//! | Gemini (`alt=sse`) | `candidates[i].content.parts[].text` (content; reasoning when `thought`) | the candidate's `finishReason` |
//! | Ollama (JSON lines) | `message.content` or `response` (content), `message.thinking` or `thinking` (reasoning) | `"done": true` |
//!
//! Everything else of an event that is a string value (not a number, not the value of one of the
//! structural keys below) is a whole text, and so is every key outside the formats' schemas
//! ([`SCHEMA_KEYS`]; in JSON of no recognised format, every key). What a model or a client fills
//! (tool-call arguments given as objects: Gemini's `functionCall.args`, Ollama's
//! `tool_calls[].function.arguments`, Anthropic's `tool_use.input`; Responses' `metadata`) is
//! judged whole, every key and string of it, whatever the keys are called. An event whose data is
//! not JSON is one raw whole text. Keys and values are compared decoded, so `"t\u0065xt_delta"`
//! is `text_delta`.

use super::ChannelKind;
use sluicegate_guest::json::{self, Doc, Kind};
use std::sync::Arc;

/// Keys whose values are structure, not text a model wrote, in the formats recognised here: not
/// handed to a guard there. In any other JSON (MCP messages, bodies) every string value is.
const STRUCTURAL: &[&str] = &[
    "type",
    "object",
    "id",
    "item_id",
    "model",
    "role",
    "finish_reason",
    "stop_reason",
    "finishReason",
    "done_reason",
    "status",
    "system_fingerprint",
    "jsonrpc",
    "signature",
    "created_at",
    "modelVersion",
    "responseId",
    "call_id",
    "service_tier",
];

/// The keys of the recognised formats' schemas (their union, sorted): not handed to a guard in an
/// event of one of them. Any other key is, as any key is in JSON of no recognised format: closed by
/// default, so a key a provider adds later costs a guard call, and a key an upstream puts data in
/// is judged. The objects a model or a client fills (tool-call arguments, metadata) are judged
/// whole, keys and all, whatever their keys' names (see [`Event::free_form`]).
const SCHEMA_KEYS: &[&str] = &[
    "accepted_prediction_tokens",
    "action",
    "annotation",
    "annotation_index",
    "annotations",
    "args",
    "arguments",
    "audio",
    "audio_tokens",
    "avgLogprobs",
    "background",
    "blockReason",
    "blocked",
    "bytes",
    "cache_creation",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "cachedContentTokenCount",
    "cached_tokens",
    "call_id",
    "candidates",
    "candidatesTokenCount",
    "candidatesTokensDetails",
    "category",
    "choices",
    "citationMetadata",
    "citationSources",
    "citations",
    "cited_text",
    "code",
    "codeExecutionResult",
    "completed_at",
    "completion_tokens",
    "completion_tokens_details",
    "container",
    "content",
    "content_block",
    "content_index",
    "context",
    "conversation",
    "created",
    "created_at",
    "data",
    "delta",
    "description",
    "done",
    "done_reason",
    "effort",
    "encrypted_content",
    "endIndex",
    "end_index",
    "ephemeral_1h_input_tokens",
    "ephemeral_5m_input_tokens",
    "error",
    "eval_count",
    "eval_duration",
    "executableCode",
    "expires_at",
    "file_id",
    "filename",
    "finishMessage",
    "finishReason",
    "finish_reason",
    "format",
    "function",
    "functionCall",
    "function_call",
    "groundingMetadata",
    "id",
    "images",
    "incomplete_details",
    "index",
    "inlineData",
    "input",
    "input_tokens",
    "input_tokens_details",
    "instructions",
    "item",
    "item_id",
    "language",
    "license",
    "load_duration",
    "logprob",
    "logprobs",
    "logprobsResult",
    "max_output_tokens",
    "max_tool_calls",
    "message",
    "metadata",
    "mimeType",
    "modality",
    "model",
    "modelVersion",
    "name",
    "obfuscation",
    "object",
    "outcome",
    "output",
    "output_index",
    "output_tokens",
    "output_tokens_details",
    "parallel_tool_calls",
    "param",
    "parameters",
    "part",
    "partial_json",
    "parts",
    "previous_response_id",
    "probability",
    "prompt",
    "promptFeedback",
    "promptTokenCount",
    "promptTokensDetails",
    "prompt_cache_key",
    "prompt_eval_count",
    "prompt_eval_duration",
    "prompt_tokens",
    "prompt_tokens_details",
    "reason",
    "reasoning",
    "reasoning_content",
    "reasoning_tokens",
    "refusal",
    "rejected_prediction_tokens",
    "response",
    "responseId",
    "role",
    "safetyRatings",
    "safety_identifier",
    "sequence_number",
    "server_tool_use",
    "service_tier",
    "signature",
    "startIndex",
    "start_index",
    "status",
    "stop_reason",
    "stop_sequence",
    "store",
    "strict",
    "summary",
    "summary_index",
    "system_fingerprint",
    "temperature",
    "text",
    "thinking",
    "thought",
    "thoughtSignature",
    "thoughtsTokenCount",
    "title",
    "token",
    "tokenCount",
    "toolUsePromptTokenCount",
    "tool_calls",
    "tool_choice",
    "tools",
    "top_logprobs",
    "top_p",
    "totalTokenCount",
    "total_duration",
    "total_tokens",
    "transcript",
    "truncation",
    "type",
    "uri",
    "url",
    "usage",
    "usageMetadata",
    "user",
    "verbosity",
    "web_search_requests",
];

/// True if `name` (decoded) is one of the [`SCHEMA_KEYS`].
fn is_schema_key(name: &str) -> bool {
    static SET: std::sync::LazyLock<rustc_hash::FxHashSet<&str>> =
        std::sync::LazyLock::new(|| SCHEMA_KEYS.iter().copied().collect());
    SET.contains(name)
}

/// True if an object at or under node `at` has a key twice.
fn repeats_under(doc: &Doc, data: &str, at: usize) -> bool {
    match doc.node(at).kind {
        Kind::Object => {
            // A set, not a list: an object may have many thousands of keys.
            let mut names = std::collections::HashSet::new();
            for (name, value) in doc.members(data, at) {
                let mut decoded = String::new();
                json::decode(name, &mut decoded);
                if !names.insert(decoded) || repeats_under(doc, data, value) {
                    return true;
                }
            }
            false
        }
        Kind::Array => doc.items(at).any(|item| repeats_under(doc, data, item)),
        _ => false,
    }
}

thread_local! {
    static EMPTY_KEY: Arc<str> = Arc::from("");
}

/// The key of a part that belongs to no channel: one shared `Arc` per thread, not an allocation
/// per part (a large JSON body has thousands).
fn empty_key() -> Arc<str> {
    EMPTY_KEY.with(Arc::clone)
}

/// The formats recognised.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum Format {
    /// No text-bearing event seen yet.
    #[default]
    Unknown,
    Chat,
    Responses,
    Anthropic,
    Gemini,
    Ollama,
}

/// True if `key` is one of the [`STRUCTURAL`] keys.
fn is_structural(key: Option<&str>) -> bool {
    key.is_some_and(|k| STRUCTURAL.contains(&k))
}

/// What a part of an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Streamed text of the channel `key`.
    Delta(ChannelKind),
    /// A text seen whole (a JSON string value), of this kind.
    Whole(ChannelKind),
    /// A key of an object, seen whole, of this kind: any key in JSON of no recognised format (an
    /// MCP message, a body: a map keyed by address, account or file name), a key outside the
    /// format's schema in one, every key of an object a model or a client fills.
    Key(ChannelKind),
    /// A whole event that is not JSON: its data, raw.
    Raw,
    /// A repeat of the content channel `key`'s tokens (logprobs): it follows that text's fate.
    Echo,
}

/// A text-bearing part of an event: the contents of a JSON string (or, for `Raw`, all the data).
#[derive(Debug, Clone)]
pub(super) struct Part {
    pub start: usize,
    pub end: usize,
    pub role: Role,
    /// The channel it belongs to or repeats (empty for other whole texts); shared (an `Arc`), since a
    /// token stream names the same channel in every event.
    pub key: Arc<str>,
}

/// What closes channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Close {
    All,
    /// Every channel whose key starts with this (keys end in `/` where they are prefixes).
    Prefix(String),
    /// The channel with this key.
    Key(String),
}

impl Close {
    pub(super) fn covers(&self, key: &str) -> bool {
        match self {
            Close::All => true,
            Close::Prefix(prefix) => key.starts_with(prefix.as_str()),
            Close::Key(exact) => key == exact,
        }
    }
}

/// What one event holds: its parts in order, and the channels it closes (those that have a
/// delta in the same event close after it).
#[derive(Debug, Default)]
pub(super) struct Found {
    pub parts: Vec<Part>,
    pub closes: Vec<Close>,
}

/// A delta event's bytes around its text. An event with the same bytes around a plain string (no
/// quote, backslash or control character in it) parses to the same document with another string
/// there, so it is the same channel's delta: a token stream's chunks are recognised by two
/// comparisons instead of a parse (the bytes around a chunk's text stay the same in OpenAI Chat
/// and Anthropic streams).
#[derive(Debug)]
struct Shape {
    prefix: String,
    suffix: String,
    format: Format,
    kind: ChannelKind,
    key: Arc<str>,
}

impl Shape {
    /// Where the text is in `data`, if `data` has this shape.
    fn text_in(&self, data: &str) -> Option<(usize, usize)> {
        let (start, end) = (self.prefix.len(), data.len().checked_sub(self.suffix.len())?);
        let plain = start <= end
            && data.starts_with(&self.prefix)
            && data.ends_with(&self.suffix)
            && !data.as_bytes()[start..end].iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20);
        plain.then_some((start, end))
    }
}

/// Recognises formats event by event and keeps what their endings need.
#[derive(Debug, Default)]
pub(super) struct Classifier {
    pub format: Format,
    /// Chat: `"id":…,"object":…,"created":…,"model":…,` of the first chunk.
    pub chat_meta: Option<String>,
    /// Responses: the `response` object of `response.created`.
    pub response: Option<String>,
    pub sequence: u64,
    /// Anthropic: blocks started and not stopped; deltas seen.
    pub open_blocks: Vec<u64>,
    pub deltas: u64,
    /// Ollama: `"model":…,` of the first line.
    pub ollama_meta: Option<String>,
    /// The most output tokens the provider reported in its usage figures so far.
    pub output_tokens: Option<u64>,
    /// The last event that was one delta and nothing else, as the bytes around its string.
    shape: Option<Shape>,
    /// A client's request body: no format is recognised in it, so every key and string of it is
    /// judged. (A request is the client's, whatever it looks like: a body given `"choices":[]`
    /// or `"done":true` would otherwise pass what it put under `model` or `id`, or in a key.)
    pub requests: bool,
    doc: Doc,
    scratch: String,
}

impl Classifier {
    /// The parts and closes of one event's data.
    /// The parts and closes of one event's data, into `found` (emptied first).
    pub(super) fn classify(&mut self, data: &str, found: &mut Found) {
        found.parts.clear();
        found.closes.clear();
        if let Some(shape) = &self.shape
            && let Some((start, end)) = shape.text_in(data)
        {
            self.format = shape.format;
            if shape.format == Format::Anthropic {
                self.deltas += 1;
            }
            found.parts.push(Part { start, end, role: Role::Delta(shape.kind), key: shape.key.clone() });
            return;
        }
        self.parse(data, found);
        if let [Part { start, end, role: Role::Delta(kind), key }] = found.parts.as_slice()
            && found.closes.is_empty()
        {
            let (prefix, suffix) = (&data[..*start], &data[*end..]);
            self.shape = Some(Shape {
                prefix: prefix.into(),
                suffix: suffix.into(),
                format: self.format,
                kind: *kind,
                key: key.clone(),
            });
        }
    }

    /// True if `data` is JSON in which an object has a key twice (keys compared decoded).
    pub(super) fn repeats_a_key(&mut self, data: &str) -> bool {
        let mut doc = std::mem::take(&mut self.doc);
        let repeats = doc.parse(data) && repeats_under(&doc, data, 0);
        self.doc = doc;
        repeats
    }

    /// [`Classifier::classify`] by parsing the event.
    fn parse(&mut self, data: &str, found: &mut Found) {
        if data == "[DONE]" && !self.requests {
            self.format = Format::Chat;
            found.closes.push(Close::All);
            return;
        }
        let mut doc = std::mem::take(&mut self.doc);
        let mut scratch = std::mem::take(&mut self.scratch);
        if doc.parse(data) {
            let mut event = Event { data, doc: &doc, found, claimed: Vec::new(), scratch: &mut scratch };
            // Whether this event is of a format whose structural keys are known.
            let mut known = false;
            // A request is the client's: nothing in it is a provider's structure.
            if !self.requests && doc.node(0).kind == Kind::Object {
                let format = self.recognise(&mut event);
                if format != Format::Unknown {
                    self.format = format;
                    known = true;
                }
            } else if !self.requests && doc.node(0).kind == Kind::Array {
                // Gemini without `alt=sse`: one JSON array of the same objects, read in order.
                for element in doc.items(0).collect::<Vec<_>>() {
                    if let Some(candidates) = doc.get(data, element, "candidates") {
                        self.format = Format::Gemini;
                        known = true;
                        gemini(&mut event, candidates);
                        self.usage(&doc, data, doc.get(data, element, "usageMetadata"), "candidatesTokenCount");
                    }
                }
            }
            event.rest_as_wholes(0, None, known);
        } else if !data.is_empty() {
            found.parts.push(Part { start: 0, end: data.len(), role: Role::Raw, key: empty_key() });
        }
        self.doc = doc;
        self.scratch = scratch;
        found.parts.sort_by_key(|p| p.start);
    }

    /// The format of a JSON object event, its channels marked in `event`.
    fn recognise(&mut self, event: &mut Event<'_, '_>) -> Format {
        let (doc, data) = (event.doc, event.data);
        if let Some(choices) = doc.get(data, 0, "choices").filter(|&c| doc.node(c).kind == Kind::Array) {
            self.chat(event, choices);
            self.usage(doc, data, doc.get(data, 0, "usage"), "completion_tokens");
            return Format::Chat;
        }
        if let Some(candidates) = doc.get(data, 0, "candidates").filter(|&c| doc.node(c).kind == Kind::Array) {
            gemini(event, candidates);
            self.usage(doc, data, doc.get(data, 0, "usageMetadata"), "candidatesTokenCount");
            return Format::Gemini;
        }
        if doc.is(doc.get(data, 0, "done"), Kind::Literal) {
            self.ollama(event);
            self.usage(doc, data, Some(0), "eval_count");
            return Format::Ollama;
        }
        let Some(kind) = event.value(doc.get(data, 0, "type")) else { return Format::Unknown };
        if kind.starts_with("response.") {
            self.responses(event, &kind);
            Format::Responses
        } else if kind.starts_with("message_") || kind.starts_with("content_block_") || kind == "ping" {
            self.anthropic(event, &kind);
            Format::Anthropic
        } else {
            Format::Unknown
        }
    }

    /// Notes the number under `field` of usage object `usage` (if both are there).
    fn usage(&mut self, doc: &Doc, data: &str, usage: Option<usize>, field: &str) {
        let Some(usage) = usage.filter(|&u| doc.node(u).kind == Kind::Object) else { return };
        if let Some(n) = doc.index(data, doc.get(data, usage, field)) {
            self.output_tokens = Some(self.output_tokens.map_or(n, |m| m.max(n)));
        }
    }

    fn chat(&mut self, event: &mut Event<'_, '_>, choices: usize) {
        let (doc, data) = (event.doc, event.data);
        if self.chat_meta.is_none() {
            self.chat_meta = Some(raw_members(doc, data, 0, &["id", "object", "created", "model"]));
        }
        for (position, choice) in doc.items(choices).enumerate() {
            if doc.node(choice).kind != Kind::Object {
                continue;
            }
            let index = doc.index(data, doc.get(data, choice, "index")).unwrap_or(position as u64);
            let key = format!("chat/{index}/");
            if let Some(delta) = doc.get(data, choice, "delta") {
                event.delta(doc.get(data, delta, "content"), || format!("{key}content"), ChannelKind::Content);
                event.delta(doc.get(data, delta, "refusal"), || format!("{key}refusal"), ChannelKind::Refusal);
                for field in ["reasoning_content", "reasoning"] {
                    event.delta(doc.get(data, delta, field), || format!("{key}reasoning"), ChannelKind::Reasoning);
                }
                // The spoken answer's transcript (audio output), and a call of the deprecated
                // `functions` API: both streamed in pieces.
                let transcript = doc.get(data, delta, "audio").and_then(|a| doc.get(data, a, "transcript"));
                event.delta(transcript, || format!("{key}audio"), ChannelKind::Content);
                let call = doc.get(data, delta, "function_call").and_then(|f| doc.get(data, f, "arguments"));
                event.delta(call, || format!("{key}function_call"), ChannelKind::ToolArguments);
                for (position, call) in
                    doc.get(data, delta, "tool_calls").into_iter().flat_map(|t| doc.items(t)).enumerate()
                {
                    let tool = doc.index(data, doc.get(data, call, "index")).unwrap_or(position as u64);
                    let arguments = doc.get(data, call, "function").and_then(|f| doc.get(data, f, "arguments"));
                    event.delta(arguments, || format!("{key}tool/{tool}"), ChannelKind::ToolArguments);
                }
            }
            // A whole completion (a JSON body): its tool calls' arguments.
            let calls = doc.get(data, choice, "message").and_then(|m| doc.get(data, m, "tool_calls"));
            for call in calls.into_iter().flat_map(|t| doc.items(t)) {
                let arguments = doc.get(data, call, "function").and_then(|f| doc.get(data, f, "arguments"));
                event.free_form(arguments, ChannelKind::ToolArguments);
            }
            let logprobs = doc.get(data, choice, "logprobs").and_then(|l| doc.get(data, l, "content"));
            for token in logprobs.into_iter().flat_map(|c| doc.items(c)) {
                event.echo(doc.get(data, token, "token"), || format!("{key}content"));
                for top in doc.get(data, token, "top_logprobs").into_iter().flat_map(|t| doc.items(t)) {
                    event.echo(doc.get(data, top, "token"), || format!("{key}content"));
                }
            }
            if doc.is(doc.get(data, choice, "finish_reason"), Kind::String) {
                event.found.closes.push(Close::Prefix(key));
            }
        }
    }

    fn responses(&mut self, event: &mut Event<'_, '_>, kind: &str) {
        let (doc, data) = (event.doc, event.data);
        if let Some(n) = doc.index(data, doc.get(data, 0, "sequence_number")) {
            self.sequence = n;
        }
        let item = event.value(doc.get(data, 0, "item_id")).unwrap_or_default();
        let content = doc.index(data, doc.get(data, 0, "content_index")).unwrap_or(0);
        let summary = doc.index(data, doc.get(data, 0, "summary_index")).unwrap_or(0);
        let delta = doc.get(data, 0, "delta");
        let channel = kind.strip_suffix(".delta").and_then(|name| {
            let (part, kind) = responses_channel(name)?;
            let index = if part == "summary" { summary } else { content };
            Some((format!("resp/{item}/{part}/{index}"), kind))
        });
        if let Some((key, kind)) = channel {
            event.delta(delta, || key, kind);
            return;
        }
        responses_free_forms(event);
        let close = |key: String| vec![Close::Key(key)];
        let closes = match kind {
            "response.created" => {
                if let Some(response) = doc.get(data, 0, "response").filter(|&r| doc.node(r).kind == Kind::Object) {
                    let node = doc.node(response);
                    self.response = Some(data[node.start..node.end].to_string());
                }
                vec![]
            }
            "response.content_part.done" => {
                [close(format!("resp/{item}/text/{content}")), close(format!("resp/{item}/refusal/{content}"))].concat()
            }
            "response.output_item.done" => {
                let id = doc.get(data, 0, "item").and_then(|i| event.value(doc.get(data, i, "id")));
                id.map(|id| vec![Close::Prefix(format!("resp/{id}/"))]).unwrap_or_default()
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                let response = doc.get(data, 0, "response");
                self.usage(doc, data, response.and_then(|r| doc.get(data, r, "usage")), "output_tokens");
                vec![Close::All]
            }
            other => match other.strip_suffix(".done").and_then(responses_channel) {
                Some(("summary", _)) => close(format!("resp/{item}/summary/{summary}")),
                Some((part, _)) => close(format!("resp/{item}/{part}/{content}")),
                None => vec![],
            },
        };
        event.found.closes.extend(closes);
    }

    fn anthropic(&mut self, event: &mut Event<'_, '_>, kind: &str) {
        let (doc, data) = (event.doc, event.data);
        let index = doc.index(data, doc.get(data, 0, "index")).unwrap_or(0);
        let key = format!("anthropic/{index}");
        match kind {
            "content_block_delta" => {
                let Some(delta) = doc.get(data, 0, "delta") else { return };
                let field = |name| doc.get(data, delta, name);
                let (text, kind) = match event.value(doc.get(data, delta, "type")).as_deref() {
                    Some("text_delta") => (field("text"), ChannelKind::Content),
                    Some("input_json_delta") => (field("partial_json"), ChannelKind::ToolArguments),
                    Some("thinking_delta") => (field("thinking"), ChannelKind::Reasoning),
                    // The thinking block's signature is the provider's (checked on the next
                    // turn); a citation is a whole object.
                    Some("signature_delta" | "citations_delta") | None => return,
                    // A kind of delta not known yet: its one string is a channel, so that a text
                    // split across its pieces is judged whole (closed by default).
                    Some(_) => (only_string_member(doc, data, delta), ChannelKind::Other),
                };
                self.deltas += 1;
                event.delta(text, || key, kind);
            }
            "content_block_start" => {
                let block = doc.get(data, 0, "content_block");
                event.free_form(block.and_then(|b| doc.get(data, b, "input")), ChannelKind::ToolArguments);
                if !self.open_blocks.contains(&index) {
                    self.open_blocks.push(index);
                }
            }
            "message_start" => {
                let blocks = doc.get(data, 0, "message").and_then(|m| doc.get(data, m, "content"));
                for block in blocks.into_iter().flat_map(|b| doc.items(b)) {
                    event.free_form(doc.get(data, block, "input"), ChannelKind::ToolArguments);
                }
            }
            "content_block_stop" => {
                self.open_blocks.retain(|&b| b != index);
                event.found.closes.push(Close::Prefix(key));
            }
            "message_delta" | "message_stop" => {
                self.usage(doc, data, doc.get(data, 0, "usage"), "output_tokens");
                event.found.closes.push(Close::All);
            }
            _ => {}
        }
    }

    fn ollama(&mut self, event: &mut Event<'_, '_>) {
        let (doc, data) = (event.doc, event.data);
        if self.ollama_meta.is_none() {
            self.ollama_meta = Some(raw_members(doc, data, 0, &["model", "created_at"]));
        }
        let message = doc.get(data, 0, "message");
        event.delta(
            message.and_then(|m| doc.get(data, m, "content")),
            || "ollama/content".into(),
            ChannelKind::Content,
        );
        event.delta(doc.get(data, 0, "response"), || "ollama/content".into(), ChannelKind::Content);
        event.delta(
            message.and_then(|m| doc.get(data, m, "thinking")),
            || "ollama/thinking".into(),
            ChannelKind::Reasoning,
        );
        event.delta(doc.get(data, 0, "thinking"), || "ollama/thinking".into(), ChannelKind::Reasoning);
        let calls = message.and_then(|m| doc.get(data, m, "tool_calls"));
        for call in calls.into_iter().flat_map(|t| doc.items(t)) {
            let arguments = doc.get(data, call, "function").and_then(|f| doc.get(data, f, "arguments"));
            event.free_form(arguments, ChannelKind::ToolArguments);
        }
        if doc.is_true(data, doc.get(data, 0, "done")) {
            event.found.closes.push(Close::All);
        }
    }
}

fn gemini(event: &mut Event<'_, '_>, candidates: usize) {
    let (doc, data) = (event.doc, event.data);
    for (position, candidate) in doc.items(candidates).enumerate() {
        if doc.node(candidate).kind != Kind::Object {
            continue;
        }
        let index = doc.index(data, doc.get(data, candidate, "index")).unwrap_or(position as u64);
        let parts = doc.get(data, candidate, "content").and_then(|c| doc.get(data, c, "parts"));
        for part in parts.into_iter().flat_map(|p| doc.items(p)) {
            let thought = doc.is_true(data, doc.get(data, part, "thought"));
            let (key, kind) = match thought {
                true => (format!("gemini/{index}/thought"), ChannelKind::Reasoning),
                false => (format!("gemini/{index}/text"), ChannelKind::Content),
            };
            event.delta(doc.get(data, part, "text"), || key, kind);
            let call = doc.get(data, part, "functionCall");
            event.free_form(call.and_then(|c| doc.get(data, c, "args")), ChannelKind::ToolArguments);
        }
        if doc.is(doc.get(data, candidate, "finishReason"), Kind::String) {
            event.found.closes.push(Close::Prefix(format!("gemini/{index}/")));
        }
    }
}

/// The channel part and kind of a Responses event streamed in pieces, by its type without
/// `.delta` (or `.done`, which closes it). Types not named here that are streamed in pieces
/// (`response.*.delta`, a `delta` string) are channels too, of kind other, so that a text split
/// across them is judged whole; only audio (base64, not text) is not.
fn responses_channel(name: &str) -> Option<(&str, ChannelKind)> {
    let name = name.strip_prefix("response.")?;
    Some(match name {
        "output_text" => ("text", ChannelKind::Content),
        "refusal" => ("refusal", ChannelKind::Refusal),
        "function_call_arguments" => ("arguments", ChannelKind::ToolArguments),
        "reasoning_summary_text" => ("summary", ChannelKind::Reasoning),
        "reasoning_text" => ("reasoning", ChannelKind::Reasoning),
        "audio.transcript" => ("transcript", ChannelKind::Content),
        "custom_tool_call_input" | "mcp_call_arguments" | "code_interpreter_call_code" => {
            (name, ChannelKind::ToolArguments)
        }
        "audio" => return None,
        other => (other, ChannelKind::Other),
    })
}

/// The parts of a Responses event a model or a client fills: the arguments of function calls
/// (`arguments` of the event, of its `item`, of its response's `output` items) and the
/// response's `metadata`.
fn responses_free_forms(event: &mut Event<'_, '_>) {
    let (doc, data) = (event.doc, event.data);
    event.free_form(doc.get(data, 0, "arguments"), ChannelKind::ToolArguments);
    let response = doc.get(data, 0, "response");
    event.free_form(response.and_then(|r| doc.get(data, r, "metadata")), ChannelKind::Other);
    let output = response.and_then(|r| doc.get(data, r, "output"));
    for item in doc.get(data, 0, "item").into_iter().chain(output.into_iter().flat_map(|o| doc.items(o))) {
        event.free_form(doc.get(data, item, "arguments"), ChannelKind::ToolArguments);
    }
}

/// The value of object `at`'s one string member other than `type`, if it has exactly one.
fn only_string_member(doc: &Doc, data: &str, at: usize) -> Option<usize> {
    let kind = doc.get(data, at, "type"); // compared decoded
    let mut strings =
        doc.members(data, at).map(|(_, value)| value).filter(|&v| Some(v) != kind && doc.node(v).kind == Kind::String);
    let first = strings.next()?;
    strings.next().is_none().then_some(first)
}

/// `"key":value,` for each of `keys` present in object `at`, values as written.
fn raw_members(doc: &Doc, data: &str, at: usize, keys: &[&str]) -> String {
    let mut members = String::new();
    for key in keys {
        if let Some(value) = doc.get(data, at, key) {
            let node = doc.node(value);
            let quoted = usize::from(node.kind == Kind::String);
            members.push_str(&format!("\"{key}\":{},", &data[node.start - quoted..node.end + quoted]));
        }
    }
    members
}

/// One event being classified.
struct Event<'a, 'f> {
    data: &'a str,
    doc: &'a Doc,
    found: &'f mut Found,
    /// String nodes already given a role.
    claimed: Vec<usize>,
    scratch: &'f mut String,
}

impl<'a> Event<'a, '_> {
    /// The decoded value of string node `at`, if it is one (borrowed when it has no escape).
    fn value(&mut self, at: Option<usize>) -> Option<std::borrow::Cow<'a, str>> {
        let raw = self.doc.raw_str(self.data, at)?;
        Some(self.decoded(raw))
    }

    /// String node `at` (if it is one) is streamed text of channel `key` (made only if it is).
    fn delta(&mut self, at: Option<usize>, key: impl FnOnce() -> String, kind: ChannelKind) {
        self.part(at, key, Role::Delta(kind));
    }

    /// String node `at` (if it is one) repeats the tokens of channel `key`.
    fn echo(&mut self, at: Option<usize>, key: impl FnOnce() -> String) {
        self.part(at, key, Role::Echo);
    }

    fn part(&mut self, at: Option<usize>, key: impl FnOnce() -> String, role: Role) {
        let Some(at) = at.filter(|&a| self.doc.node(a).kind == Kind::String) else { return };
        let node = self.doc.node(at);
        self.claimed.push(at);
        self.found.parts.push(Part { start: node.start, end: node.end, role, key: key().into() });
    }

    /// Every string value under node `at` not claimed and not under a structural key, as a
    /// whole text (`key`: the key it is the value of), and every key not of the format's schema.
    /// (With `known`, the event is of a recognised format: its structural keys' values are left
    /// out, and so are its [`SCHEMA_KEYS`]. In any other JSON every key is a whole text too.)
    fn rest_as_wholes(&mut self, at: usize, key: Option<&str>, known: bool) {
        let (doc, data) = (self.doc, self.data);
        let node = doc.node(at);
        if self.claimed.contains(&at) {
            return;
        }
        match node.kind {
            Kind::String if !(known && is_structural(key)) => self.whole(at, Role::Whole(ChannelKind::Other)),
            Kind::Array => {
                for item in doc.items(at) {
                    self.rest_as_wholes(item, key, known);
                }
            }
            Kind::Object => {
                for (name, value) in doc.members(data, at) {
                    let name = self.decoded(name);
                    if !(known && is_schema_key(&name)) {
                        self.whole(value - 1, Role::Key(ChannelKind::Other)); // a member's key precedes its value
                    }
                    self.rest_as_wholes(value, Some(&name), known);
                }
            }
            _ => {}
        }
    }

    /// An object (or any value) a model or a client fills, under node `at`: tool-call arguments,
    /// metadata. Its keys are whatever the writer chose, so every key and every string in it is a
    /// whole text of `kind`, none left out for its name (an argument called `id` or `status` is
    /// judged like any other).
    fn free_form(&mut self, at: Option<usize>, kind: ChannelKind) {
        let Some(at) = at.filter(|&a| !self.claimed.contains(&a)) else { return };
        self.claimed.push(at);
        self.judge_all(at, kind);
    }

    fn judge_all(&mut self, at: usize, kind: ChannelKind) {
        let doc = self.doc;
        match doc.node(at).kind {
            Kind::String => self.whole(at, Role::Whole(kind)),
            Kind::Array => doc.items(at).for_each(|item| self.judge_all(item, kind)),
            Kind::Object => {
                for (_, value) in doc.members(self.data, at) {
                    self.whole(value - 1, Role::Key(kind)); // a member's key precedes its value
                    self.judge_all(value, kind);
                }
            }
            _ => {}
        }
    }

    /// String node `at` (a value or a key) as a whole text.
    fn whole(&mut self, at: usize, role: Role) {
        let node = self.doc.node(at);
        self.found.parts.push(Part { start: node.start, end: node.end, role, key: empty_key() });
    }

    /// `name` (a key as written) decoded, borrowed when it has no escape.
    fn decoded(&mut self, name: &'a str) -> std::borrow::Cow<'a, str> {
        if !name.contains('\\') {
            return name.into();
        }
        self.scratch.clear();
        json::decode(name, self.scratch);
        self.scratch.clone().into()
    }
}
