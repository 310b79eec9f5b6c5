//! `sluicegate demo`: an embedded upstream that sends realistic event streams, and a proxy with
//! example interceptors in front of it.
//!
//! The upstream serves:
//! - `/llm`: an LLM token stream in the shape of Anthropic's messages API (every event named, data
//!   repeats the name), with e-mail addresses in the text and `ping` events;
//! - `/mcp`: an MCP Streamable HTTP server-to-client stream (GET): a priming event (an id and empty
//!   data) with `retry`, progress notifications with ids, keep-alive comments. It honours
//!   `Last-Event-ID`;
//! - anything else: a small JSON document, to show that other responses pass untouched.

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::time::Duration;
use tokio::net::TcpListener;

type DemoBody = UnsyncBoxBody<Bytes, Infallible>;

/// The events of the `/llm` stream: one token per event, as a model sends them, so each address
/// spans several events.
pub(crate) fn llm_events() -> Vec<String> {
    let words = [
        "Sure", "!", " Send", " the", " report", " to", " ada", ".", "lovelace", "@", "example", ".com", " and",
        " copy", " ops", "+", "alerts", "@", "mail", ".example", ".org", ".", " I", " will", " ask", " grace", "@",
        "example", ".net", " to", " review", " it", ".",
    ];
    let mut events =
        vec![sse("message_start", r#"{"type":"message_start","message":{"id":"msg_demo","role":"assistant"}}"#)];
    for (i, word) in words.iter().enumerate() {
        if i % 6 == 5 {
            events.push(sse("ping", r#"{"type":"ping"}"#));
        }
        let text = serde_escape(word);
        events.push(sse(
            "content_block_delta",
            &format!(r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"{text}"}}}}"#),
        ));
    }
    events.push(sse("message_stop", r#"{"type":"message_stop"}"#));
    events
}

/// The events of the `/mcp` stream, from `after` (the `Last-Event-ID`, if any) on.
pub(crate) fn mcp_events(after: Option<u32>) -> Vec<String> {
    let mut events = Vec::new();
    if after.is_none() {
        events.push("id: 0\ndata:\nretry: 1000\n\n".to_string());
    }
    for n in after.map_or(1, |a| a + 1)..=8 {
        if n % 3 == 0 {
            events.push(": keep-alive\n\n".to_string());
        }
        events.push(format!(
            "id: {n}\nevent: message\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{{\"progressToken\":\"t1\",\"progress\":{n},\"total\":8,\"message\":\"step {n} (owner: dev@example.com)\"}}}}\n\n"
        ));
    }
    events
}

fn sse(event: &str, data: &str) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

fn serde_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Serves the demo upstream on `listener` until the task is dropped. `pause` is the time between
/// events.
pub(crate) async fn serve_upstream(listener: TcpListener, pause: Duration) {
    loop {
        let Ok((socket, _)) = listener.accept().await else { continue };
        let _ = socket.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| async move {
                Ok::<_, Infallible>(respond(&request, pause))
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}

fn respond(request: &Request<Incoming>, pause: Duration) -> Response<DemoBody> {
    let events = match request.uri().path() {
        "/llm" => llm_events(),
        "/mcp" => {
            let after = request.headers().get("last-event-id").and_then(|v| v.to_str().ok()?.parse().ok());
            mcp_events(after)
        }
        _ => {
            return Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(
                    Full::new(Bytes::from_static(
                        b"{\"service\":\"sluicegate demo upstream\",\"streams\":[\"/llm\",\"/mcp\"]}\n",
                    ))
                    .boxed_unsync(),
                )
                .unwrap();
        }
    };
    let stream = futures_util::stream::unfold(events.into_iter(), move |mut events| async move {
        let event = events.next()?;
        tokio::time::sleep(pause).await;
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(event))), events))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(StreamBody::new(stream).boxed_unsync())
        .unwrap()
}

/// GETs `url` and returns the whole body as text (for showing a stream before and after).
pub(crate) async fn fetch(url: &str) -> anyhow::Result<String> {
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<Bytes>> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let response = client.get(url.parse()?).await?;
    let body = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}
