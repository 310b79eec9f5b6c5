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
        if !streaming {
            return full(200, "application/json", whole_answer(format, ANSWER));
        }
        let events = parse_all(stream(format, &tokens(ANSWER), false).as_bytes());
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
async fn sdk_in(python: &Path, base_url: String, api: &'static str, mode: &'static str) -> Value {
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

fn base_url(proxy: SocketAddr, prefix: &str, api: &str) -> String {
    // The OpenAI SDK appends `/chat/completions` or `/responses` to its base URL, Anthropic's
    // appends `/v1/messages`.
    if api == "anthropic" { format!("http://{proxy}{prefix}") } else { format!("http://{proxy}{prefix}/v1") }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_llm_sdks_see_redacted_and_refused_token_streams() {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let upstream = start_llm_upstream().await;
    let config = format!(
        "upstream = \"http://{upstream}\"\n\
         [[route]]\nprefix = \"/redact\"\n[[route.interceptor]]\nspec = \"example:redact\"\n\
         [[route]]\nprefix = \"/native-redact\"\n[[route.interceptor]]\nspec = \"native:redact\"\n\
         [[route]]\nprefix = \"/deny\"\n[[route.interceptor]]\nspec = \"example:deny-phrases\"\n\
         config = {{ phrases = \"Secret Plan, never said\" }}\n\
         [[route]]\nprefix = \"/\"\n"
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
    let config = format!(
        "upstream = \"http://{upstream}\"\n\
         [[route]]\nprefix = \"/redact\"\n[[route.interceptor]]\nspec = \"example:redact\"\n\
         [[route]]\nprefix = \"/native-redact\"\n[[route.interceptor]]\nspec = \"native:redact\"\n"
    );
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
