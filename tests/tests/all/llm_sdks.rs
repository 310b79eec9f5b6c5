//! Guardrails over streamed text with the providers' real Python SDKs (openai, anthropic)
//! through the proxy: a local upstream streams a token-split answer in each format, one write per
//! event, and the SDKs read it through `example:redact` and `example:deny-phrases`.
//!
//! The SDKs are installed, pinned, into a virtual environment under the target directory on
//! first use (see `sluicegate_tests::python`).

use serde_json::{Value, json};
use sluicegate_tests::llm::{Format, stream, tokens};
use sluicegate_tests::net::*;
use sluicegate_tests::parse_all;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SDKS: [&str; 2] = ["openai==3.57.0", "anthropic==2.15.0"];
const ANSWER: &str =
    "Hello! Write to alice.smith@example.com or ops+1@mail.example.org about the secret plan, then wait for bob@x.io";

fn python() -> PathBuf {
    sluicegate_tests::python::venv(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "llm-sdks-openai-3.57.0-anthropic-2.15.0",
        &SDKS,
        &["openai", "anthropic"],
    )
}

/// An upstream that answers the three APIs with `ANSWER`, token by token, one event per write
/// and a short pause between writes, as a model would.
async fn start_llm_upstream() -> SocketAddr {
    start_upstream(|request: http::Request<hyper::body::Incoming>| async move {
        let path = request.uri().path();
        let format = if path.ends_with("/chat/completions") {
            Format::Chat
        } else if path.ends_with("/responses") {
            Format::Responses
        } else if path.ends_with("/messages") {
            Format::Anthropic
        } else {
            return full(404, "text/plain", "no such API");
        };
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
    })
    .await
}

async fn sdk(python: &Path, base_url: String, api: &'static str) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("llm/client.py");
    let python = python.to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python).arg(script).arg(&base_url).arg(api).output().unwrap()
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
