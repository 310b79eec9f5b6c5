//! Guardrails over streamed text with the providers' real Python SDKs (openai, anthropic)
//! through the proxy: a local upstream streams a token-split answer in each format, one write per
//! event, and the SDKs read it through `example:redact` and `example:deny-phrases`.
//!
//! The SDKs are installed, pinned, into a virtual environment under the target directory on
//! first use (see `sluicegate_tests::python`).

use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use sluicegate_tests::llm::{Format, stream, tokens};
use sluicegate_tests::net::*;
use sluicegate_tests::parse_all;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SDKS: [&str; 2] = ["openai==3.57.0", "anthropic==2.15.0"];
pub(crate) const ANSWER: &str =
    "Hello! Write to alice.smith@example.com or ops+1@mail.example.org about the secret plan, then wait for bob@x.io";

pub(crate) fn python() -> PathBuf {
    sluicegate_tests::python::venv(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "llm-sdks-openai-3.57.0-anthropic-2.15.0",
        &SDKS,
        &["openai", "anthropic"],
    )
}

/// An upstream that answers the three APIs with `ANSWER`, token by token, one event per write
/// and a short pause between writes, as a model would.
pub(crate) async fn start_llm_upstream() -> SocketAddr {
    start_upstream(answer_llm).await
}

/// The same over HTTPS with `tls`, answering only requests that carry `key` (a header and its
/// value, as the provider checks it) with 401 otherwise, and recording every value of that
/// header it was sent.
pub(crate) async fn start_llm_upstream_tls(
    tls: rustls::ServerConfig,
    key: (&'static str, String),
    seen_keys: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) -> SocketAddr {
    let key = std::sync::Arc::new(key);
    let handler = move |request: http::Request<hyper::body::Incoming>| {
        let (key, seen_keys) = (key.clone(), seen_keys.clone());
        async move {
            let given = request.headers().get(key.0).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            seen_keys.lock().unwrap().push(given.clone());
            if given != key.1 {
                return full(
                    401,
                    "application/json",
                    r#"{"error":{"type":"authentication_error","message":"bad key"}}"#,
                );
            }
            answer_llm(request).await
        }
    };
    start_tls_upstream(handler, tls).await
}

async fn answer_llm(request: http::Request<hyper::body::Incoming>) -> http::Response<TestBody> {
    {
        let path = request.uri().path().to_string();
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let streaming = serde_json::from_slice::<Value>(&body).is_ok_and(|b| b["stream"] == true);
        let format = if path.ends_with("/chat/completions") {
            Format::Chat
        } else if path.ends_with("/responses") {
            Format::Responses
        } else if path.ends_with("/messages") {
            Format::Anthropic
        } else {
            return full(404, "text/plain", "no such API");
        };
        // Routes under `/pii/` get an answer with a value of every detector of `patterns`.
        let (answer, reasoning, arguments) = match path.contains("/pii/") {
            true => (crate::patterns::ANSWER, crate::patterns::REASONING, crate::patterns::ARGUMENTS),
            false => (ANSWER, REASONING, ARGUMENTS),
        };
        if !streaming {
            return full(200, "application/json", whole_answer(format, answer));
        }
        let tools = serde_json::from_slice::<Value>(&body).is_ok_and(|b| b["model"] == "tools-test");
        let events = match tools {
            true => tool_stream(format, reasoning, arguments),
            false => parse_all(stream(format, &tokens(answer), false).as_bytes()),
        };
        let (tx, response) = streamed("text/event-stream");
        tokio::spawn(async move {
            for event in events {
                let mut bytes = Vec::new();
                sluicegate::sse::encode_event(&mut bytes, &event);
                if tx.send(Ok(bytes.into())).await.is_err() {
                    return;
                }
                // Pacing, as a model's tokens arrive; what the test checks holds for any timing.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        response
    }
}

/// What the tool-call stream reasons, and the arguments of its call (a JSON text), both with
/// addresses that arrive split over deltas.
pub(crate) const REASONING: &str = "The user wants to reach alice.smith@example.com, so I will call send_mail";
pub(crate) const ARGUMENTS: &str = r#"{"to":"ops+1@mail.example.org","cc":"bob@x.io","subject":"the plan"}"#;

/// A streamed answer with `reasoning`, a tool call with `arguments` and a little text, in
/// `format`, each value split the way a model's tokens split it.
fn tool_stream(format: Format, reasoning_text: &str, arguments_text: &str) -> Vec<sluicegate::sse::Event> {
    let event = |name: Option<&str>, data: Value| {
        let event = sluicegate::sse::Event::message(data.to_string());
        match name {
            Some(name) => event.with_type(name.to_string()),
            None => event,
        }
    };
    let (reasoning, arguments, text) = (tokens(reasoning_text), tokens(arguments_text), tokens("Sending it now."));
    let mut events = Vec::new();
    match format {
        Format::Chat => {
            let chunk = |delta: Value, finish: Value| {
                json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "tools-test",
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            };
            events.push(event(None, chunk(json!({"role": "assistant"}), Value::Null)));
            events.extend(reasoning.iter().map(|r| event(None, chunk(json!({"reasoning_content": r}), Value::Null))));
            events.extend(text.iter().map(|t| event(None, chunk(json!({"content": t}), Value::Null))));
            let first = json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                                "function": {"name": "send_mail", "arguments": ""}}]});
            events.push(event(None, chunk(first, Value::Null)));
            for a in &arguments {
                let delta = json!({"tool_calls": [{"index": 0, "function": {"arguments": a}}]});
                events.push(event(None, chunk(delta, Value::Null)));
            }
            events.push(event(None, chunk(json!({}), json!("tool_calls"))));
            events.push(sluicegate::sse::Event::message("[DONE]"));
        }
        Format::Responses => {
            let mut seq = 0;
            let mut push = |name: &str, mut data: Value| {
                data["type"] = json!(name);
                data["sequence_number"] = json!(seq);
                seq += 1;
                events.push(event(Some(name), data));
            };
            let response = |status: &str, output: Value| {
                json!({"id": "resp_1", "object": "response", "created_at": 1, "status": status, "model": "tools-test",
                       "output": output, "parallel_tool_calls": true, "tool_choice": "auto", "tools": []})
            };
            let reasoning_item = |summary: &str| {
                json!({"id": "rs_1", "type": "reasoning",
                "summary": [{"type": "summary_text", "text": summary}]})
            };
            let call_item = |status: &str, args: &str| {
                json!({"id": "fc_1", "type": "function_call", "status": status,
                "call_id": "call_1", "name": "send_mail", "arguments": args})
            };
            push("response.created", json!({"response": response("in_progress", json!([]))}));
            push("response.output_item.added", json!({"output_index": 0, "item": reasoning_item("")}));
            for r in &reasoning {
                push(
                    "response.reasoning_summary_text.delta",
                    json!({"item_id": "rs_1", "output_index": 0, "summary_index": 0, "delta": r}),
                );
            }
            push(
                "response.reasoning_summary_text.done",
                json!({"item_id": "rs_1", "output_index": 0, "summary_index": 0, "text": reasoning_text}),
            );
            push("response.output_item.done", json!({"output_index": 0, "item": reasoning_item(reasoning_text)}));
            push("response.output_item.added", json!({"output_index": 1, "item": call_item("in_progress", "")}));
            for a in &arguments {
                push(
                    "response.function_call_arguments.delta",
                    json!({"item_id": "fc_1", "output_index": 1, "delta": a}),
                );
            }
            push(
                "response.function_call_arguments.done",
                json!({"item_id": "fc_1", "output_index": 1, "arguments": arguments_text}),
            );
            push(
                "response.output_item.done",
                json!({"output_index": 1, "item": call_item("completed", arguments_text)}),
            );
            let output = json!([reasoning_item(reasoning_text), call_item("completed", arguments_text)]);
            push("response.completed", json!({"response": response("completed", output)}));
        }
        Format::Anthropic => {
            let mut push = |name: &str, mut data: Value| {
                data["type"] = json!(name);
                events.push(event(Some(name), data));
            };
            push(
                "message_start",
                json!({"message": {"id": "msg_1", "type": "message", "role": "assistant",
                "model": "tools-test", "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 10, "output_tokens": 1}}}),
            );
            push(
                "content_block_start",
                json!({"index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
            );
            for r in &reasoning {
                push("content_block_delta", json!({"index": 0, "delta": {"type": "thinking_delta", "thinking": r}}));
            }
            push("content_block_delta", json!({"index": 0, "delta": {"type": "signature_delta", "signature": "c2ln"}}));
            push("content_block_stop", json!({"index": 0}));
            push("content_block_start", json!({"index": 1, "content_block": {"type": "text", "text": ""}}));
            for t in &text {
                push("content_block_delta", json!({"index": 1, "delta": {"type": "text_delta", "text": t}}));
            }
            push("content_block_stop", json!({"index": 1}));
            push(
                "content_block_start",
                json!({"index": 2, "content_block": {"type": "tool_use", "id": "toolu_1",
                "name": "send_mail", "input": {}}}),
            );
            for a in &arguments {
                push(
                    "content_block_delta",
                    json!({"index": 2, "delta": {"type": "input_json_delta", "partial_json": a}}),
                );
            }
            push("content_block_stop", json!({"index": 2}));
            push(
                "message_delta",
                json!({"delta": {"stop_reason": "tool_use", "stop_sequence": null},
                "usage": {"output_tokens": 40}}),
            );
            push("message_stop", json!({}));
        }
    }
    events
}

/// The answer as one JSON body, as each API returns it without `stream`.
fn whole_answer(format: Format, text: &str) -> String {
    let text = Value::String(text.into());
    let body = match format {
        Format::Chat => json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-test",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        }),
        Format::Responses => json!({
            "id": "resp_1", "object": "response", "created_at": 1, "status": "completed", "model": "gpt-test",
            "output": [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                        "content": [{"type": "output_text", "text": text, "annotations": []}]}],
        }),
        _ => json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 5, "output_tokens": 20},
        }),
    };
    body.to_string()
}

async fn sdk(python: &Path, base_url: String, api: &'static str) -> Value {
    sdk_in(python, base_url, api, "stream").await
}

/// The SDK's view of one call, `stream`ed or `whole`.
pub(crate) async fn sdk_in(python: &Path, base_url: String, api: &'static str, mode: &'static str) -> Value {
    sdk_with(python, base_url, api, mode, &[]).await
}

/// [`sdk_in`] with extra environment for the client script (`SLUICEGATE_NO_KEY=1`: the SDK is
/// given no key at all).
pub(crate) async fn sdk_with(
    python: &Path,
    base_url: String,
    api: &'static str,
    mode: &'static str,
    env: &[(&str, &str)],
) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("llm/client.py");
    let python = python.to_path_buf();
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python).arg(script).arg(&base_url).arg(api).arg(mode).envs(env).output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{api} SDK failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

pub(crate) fn base_url(proxy: SocketAddr, prefix: &str, api: &str) -> String {
    // The OpenAI SDK appends `/chat/completions` or `/responses` to its base URL, Anthropic's
    // appends `/v1/messages`.
    if api == "anthropic" { format!("http://{proxy}{prefix}") } else { format!("http://{proxy}{prefix}/v1") }
}

/// A config with `upstream` and two routes: `/redact` (the guest) and `/native-redact` (its twin).
fn redact_routes(upstream: SocketAddr) -> String {
    format!(
        "upstream = \"http://{upstream}\"\n\
         [[route]]\nprefix = \"/redact\"\n[[route.interceptor]]\nspec = \"example:redact\"\n\
         [[route]]\nprefix = \"/native-redact\"\n[[route.interceptor]]\nspec = \"native:redact\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_llm_sdks_see_redacted_and_refused_token_streams() {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let upstream = start_llm_upstream().await;
    let config = format!(
        "{}[[route]]\nprefix = \"/deny\"\n[[route.interceptor]]\nspec = \"example:deny-phrases\"\n\
         config = {{ phrases = \"Secret Plan, never said\" }}\n\
         [[route]]\nprefix = \"/\"\n",
        redact_routes(upstream)
    );
    let (proxy, _) = start_proxy(&config).await;
    let redacted = "Hello! Write to [redacted] or [redacted] about the secret plan, then wait for [redacted]";
    let before_phrase = "Hello! Write to alice.smith@example.com or ops+1@mail.example.org about the ";

    for api in ["chat", "responses", "anthropic"] {
        // The control: with no interceptor the SDK sees the addresses, so the test means something.
        let plain = sdk(&python, base_url(proxy, "", api), api).await;
        assert_eq!(plain["deltas"], ANSWER, "{api}: {plain}");

        for prefix in ["/redact", "/native-redact"] {
            let seen = sdk(&python, base_url(proxy, prefix, api), api).await;
            assert_eq!(seen["deltas"], redacted, "{api} through {prefix}: {seen}");
            match api {
                "chat" => assert_eq!(seen["ended"], "stop"),
                "responses" => {
                    assert_eq!(seen["ended"], "completed");
                    assert_eq!(seen["final"], redacted, "the final object agrees with the deltas");
                    assert_eq!(seen["done"], json!([redacted]));
                }
                _ => {
                    assert_eq!(seen["ended"], "end_turn");
                    assert_eq!(seen["final"], redacted, "the final message agrees with the deltas");
                }
            }
        }

        let seen = sdk(&python, base_url(proxy, "/deny", api), api).await;
        assert_eq!(seen["deltas"], before_phrase, "{api}: the text before the phrase, no part of it: {seen}");
        let reason = match api {
            "chat" => "content_filter",
            "responses" => "content_filter",
            _ => "refusal",
        };
        assert_eq!(seen["ended"], reason, "{api}: {seen}");
        if api == "anthropic" {
            assert_eq!(seen["final"], before_phrase);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_llm_sdks_without_streaming_see_redacted_bodies() {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let upstream = start_llm_upstream().await;
    let config = redact_routes(upstream);
    let (proxy, _) = start_proxy(&config).await;
    let redacted = "Hello! Write to [redacted] or [redacted] about the secret plan, then wait for [redacted]";
    for api in ["chat", "responses", "anthropic"] {
        let plain = sdk_in(&python, base_url(upstream, "", api), api, "whole").await;
        assert_eq!(plain["final"], ANSWER, "{api}: the control, straight to the upstream: {plain}");
        for prefix in ["/redact", "/native-redact"] {
            let seen = sdk_in(&python, base_url(proxy, prefix, api), api, "whole").await;
            assert_eq!(seen["final"], redacted, "{api} through {prefix}: {seen}");
            let ended = match api {
                "chat" => "stop",
                "responses" => "completed",
                _ => "end_turn",
            };
            assert_eq!(seen["ended"], ended, "{api}: the rest of the response parses as before");
        }
    }
}

/// Tool-call arguments and reasoning, split token by token, through `example:redact` and its
/// native twin, read with the real SDKs: no address in any delta or in the SDK's final object, and
/// the arguments still parse as the JSON the SDK builds its tool call from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_llm_sdks_see_tool_arguments_and_reasoning_redacted() {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let upstream = start_llm_upstream().await;
    let config = format!("{}[[route]]\nprefix = \"/\"\n", redact_routes(upstream));
    let (proxy, _) = start_proxy(&config).await;
    let arguments = r#"{"to":"[redacted]","cc":"[redacted]","subject":"the plan"}"#;
    let reasoning = "The user wants to reach [redacted], so I will call send_mail";
    for api in ["chat", "responses", "anthropic"] {
        let plain = sdk_in(&python, base_url(proxy, "", api), api, "tools").await;
        assert_eq!(
            (&plain["arguments"], &plain["reasoning"]),
            (&json!(ARGUMENTS), &json!(REASONING)),
            "{api}: {plain}"
        );
        for prefix in ["/redact", "/native-redact"] {
            let seen = sdk_in(&python, base_url(proxy, prefix, api), api, "tools").await;
            assert_eq!(seen["arguments"], arguments, "{api} through {prefix}: {seen}");
            assert_eq!(seen["reasoning"], reasoning, "{api} through {prefix}: {seen}");
            assert!(!seen.to_string().contains('@'), "{api} through {prefix}: no address anywhere: {seen}");
            match api {
                "chat" => assert_eq!(seen["ended"], "tool_calls"),
                "responses" => {
                    assert_eq!(seen["done_arguments"], arguments, "{seen}");
                    assert_eq!(seen["final_arguments"], arguments, "the final object agrees: {seen}");
                }
                _ => {
                    let input: Value = serde_json::from_str(arguments).unwrap();
                    assert_eq!(seen["final_input"], input, "the SDK parsed the redacted arguments: {seen}");
                    assert_eq!(seen["final_reasoning"], reasoning, "{seen}");
                    assert_eq!(seen["ended"], "tool_use");
                }
            }
        }
    }
}

/// Gemini, which has no SDK among the test peers: a `streamGenerateContent?alt=sse` stream and the
/// same answer as the JSON array `streamGenerateContent` returns without `alt=sse`, with an
/// address split across chunks (and across array elements) and one written with a JSON escape,
/// through `serve` with `example:redact`: no address reaches the client in either form, and the
/// array is still the JSON a client parses. The last chunk carries a function call whose
/// arguments (an object) hold addresses under `id`, a key Gemini uses for structure, and as a
/// key: both are masked too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_streams_and_arrays_are_redacted_through_the_proxy() {
    let call = json!({"functionCall": {"name": "send", "args": {"id": "dan@example.net", "eve@example.net": 1}}});
    let chunk = |text: &str, finish: bool| {
        let mut candidate = json!({"content": {"parts": [{"text": text}], "role": "model"}, "index": 0});
        if finish {
            candidate["finishReason"] = json!("STOP");
            candidate["content"]["parts"].as_array_mut().unwrap().push(call.clone());
        }
        json!({"candidates": [candidate], "modelVersion": "gemini-test"})
    };
    let mut pieces = tokens("Write to alice.smith@example.com or bob");
    pieces.push("\u{40}x.io now".into());
    let chunks: Vec<Value> = pieces.iter().enumerate().map(|(i, p)| chunk(p, i + 1 == pieces.len())).collect();
    let upstream = start_upstream(move |request: http::Request<hyper::body::Incoming>| {
        let chunks = chunks.clone();
        async move {
            if request.uri().query() == Some("alt=sse") {
                let body: String = chunks.iter().map(|c| format!("data: {c}\r\n\r\n")).collect();
                return full(200, "text/event-stream", body);
            }
            // The array as Gemini writes it, an escaped `@` in one element.
            let array = Value::Array(chunks).to_string().replace("bob\"", "b\\u006fb\"");
            full(200, "application/json; charset=UTF-8", array)
        }
    })
    .await;
    let config = sluicegate_tests::net::config_with_chain(upstream, &["example:redact"], "");
    let (proxy, _) = start_proxy(&config).await;
    let expected = "Write to [redacted] or [redacted] now";
    let path = "/v1beta/models/gemini-test:streamGenerateContent";
    for query in ["?alt=sse", ""] {
        let response = get(&format!("http://{proxy}{path}{query}"), &[]).await;
        let body = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
        assert!(!body.contains('@') && !body.contains("alice") && !body.contains("x.io"), "{query:?}: {body}");
        let values: Vec<Value> = match query {
            "" => serde_json::from_str::<Vec<Value>>(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
            _ => parse_all(body.as_bytes())
                .iter()
                .map(|e| serde_json::from_slice(e.data.as_ref().unwrap()).unwrap())
                .collect(),
        };
        let text: String =
            values.iter().filter_map(|v| v["candidates"][0]["content"]["parts"][0]["text"].as_str()).collect();
        assert_eq!(text, expected, "{query:?}");
        let args = &values.last().unwrap()["candidates"][0]["content"]["parts"][1]["functionCall"]["args"];
        assert_eq!(args, &json!({"id": "[redacted]", "[redacted]": 1}), "{query:?}");
    }
}
