//! One event stream through the proxy: read the upstream, feed the [`StreamEngine`] (parse,
//! batch, chain, encode), send each batch as one chunk; resume the upstream if it fails; end the
//! chain however the stream ends.
//!
//! Backpressure: the client's body is a bounded channel of encoded batches. When it is full,
//! sending waits, so the upstream is not read: a slow client slows the upstream read instead of
//! growing memory. When the client goes away the channel closes and the task ends at once,
//! dropping the upstream response (which cancels the upstream request).

use super::accounting::{Direction, EnforcementRecord, Outcome, Reason};
use super::body::AnyBody;
use super::coding::Coding;
use super::upstream::Upstream;
use super::{BoxError, Phase, Proxy, RouteStats, UpstreamBody, empty_body, headers};
use crate::chain::ChainStream;
use crate::config::ReconnectConfig;
use crate::engine::StreamEngine;
use crate::sse::{self, Event};
use bytes::Bytes;
use futures_util::FutureExt as _;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::BodyExt as _;
use sluicegate_guest::EndReason;
use std::hash::BuildHasher as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// How to resume this stream's upstream request.
pub(crate) struct Resume {
    /// Resumption is configured on and possible for this request's method.
    allowed: bool,
    upstream: Arc<Upstream>,
    uri: Uri,
    /// The forwarded request's end-to-end headers (without body headers).
    headers: HeaderMap,
    config: ReconnectConfig,
}

impl Resume {
    pub(crate) fn new(
        request: &http::request::Parts,
        upstream: Arc<Upstream>,
        uri: Uri,
        config: &ReconnectConfig,
    ) -> Self {
        let method_ok =
            request.method == Method::GET || (request.method == Method::POST && config.resume_post_with_get);
        let mut headers = request.headers.clone();
        for name in [header::CONTENT_TYPE, header::CONTENT_LENGTH, header::CONTENT_ENCODING, header::EXPECT] {
            headers.remove(name);
        }
        Resume { allowed: config.enabled && method_ok, upstream, uri, headers, config: config.clone() }
    }

    fn request(&self, last_id: &[u8]) -> Option<Request<UpstreamBody>> {
        let mut request = Request::get(self.uri.clone()).body(empty_body()).ok()?;
        *request.headers_mut() = self.headers.clone();
        request.headers_mut().insert("last-event-id", HeaderValue::from_bytes(last_id).ok()?);
        request.headers_mut().insert(header::ACCEPT, HeaderValue::from_static("text/event-stream"));
        request.headers_mut().insert(header::ACCEPT_ENCODING, headers::identity());
        Some(request)
    }
}

/// How a stretch of upstream reading ended.
enum End {
    /// The upstream closed the stream normally.
    Closed,
    /// The upstream failed; it may be resumed.
    Failed(String),
    ClientGone,
    EndedByInterceptor,
    /// The proxy is shutting down and the drain time is over.
    Shutdown,
    /// An interceptor faulted; the error event has been sent.
    Faulted,
}

pub(crate) struct EventStream {
    proxy: Arc<Proxy>,
    route: Arc<RouteStats>,
    /// Parse, batch, chain, ids, encode: everything but the I/O.
    engine: StreamEngine,
    tx: mpsc::Sender<Bytes>,
    resume: Resume,
    /// Reaches `Ending` when the stream must end for shutdown.
    phase: watch::Receiver<Phase>,
    /// For the enforcement record.
    stream_id: String,
    route_prefix: String,
    started: Instant,
    bytes_in: u64,
    bytes_out: u64,
}

impl EventStream {
    pub(crate) fn new(
        proxy: Arc<Proxy>,
        route: Arc<RouteStats>,
        chain: ChainStream,
        tx: mpsc::Sender<Bytes>,
        resume: Resume,
        stream_id: String,
        route_prefix: String,
    ) -> Self {
        let engine = StreamEngine::new(chain, proxy.batch, proxy.max_event_bytes);
        let phase = proxy.lifecycle().watch();
        EventStream {
            proxy,
            route,
            engine,
            tx,
            resume,
            phase,
            stream_id,
            route_prefix,
            started: Instant::now(),
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    pub(crate) async fn run(mut self, body: AnyBody) {
        let _active = self.proxy.lifecycle().stream_started();
        let _on_route = RouteStats::stream_started(&self.route);
        tracing::debug!("event stream started");
        let mut body = body;
        let end = loop {
            match self.pump(&mut body).await {
                End::Failed(why) => {
                    tracing::warn!("upstream event stream failed: {why}");
                    match self.reconnect().await {
                        Reconnect::Resumed(next) => body = next,
                        Reconnect::Stop(reason) => break reason,
                        Reconnect::ClientGone => break EndReason::ClientGone,
                        Reconnect::Shutdown => break EndReason::Shutdown,
                    }
                }
                End::Closed => break EndReason::UpstreamClosed,
                End::ClientGone => break EndReason::ClientGone,
                End::EndedByInterceptor => break EndReason::EndedByInterceptor,
                End::Shutdown => break EndReason::Shutdown,
                End::Faulted => {
                    self.log_record("faulted", Outcome::Refused, Reason::Fault);
                    return;
                }
            }
        };
        drop(body); // cancels the upstream request if it is still open
        let skipped = self.engine.oversized();
        if skipped > 0 {
            tracing::warn!(
                events = skipped,
                limit = self.proxy.max_event_bytes,
                "dropped upstream events over the size limit"
            );
        }
        let engine = &mut self.engine;
        match super::isolation::chain_call(engine.is_slow(), || engine.finish(end)) {
            Ok(tail) if end != EndReason::ClientGone => {
                let _ = self.send(tail.bytes).await;
            }
            Ok(_) => {}
            Err(fault) => tracing::error!("{fault} while finishing the stream"),
        }
        tracing::debug!(reason = ?end, "event stream ended");
        let end = match end {
            EndReason::UpstreamClosed => "upstream_closed",
            EndReason::UpstreamFailed => "upstream_failed",
            EndReason::ClientGone => "client_gone",
            EndReason::EndedByInterceptor => "ended_by_interceptor",
            EndReason::Shutdown => "shutdown",
        };
        self.log_record(end, Outcome::Inspected, Reason::EventStream);
    }

    fn log_record(&self, end: &'static str, outcome: Outcome, reason: Reason) {
        EnforcementRecord {
            stream_id: &self.stream_id,
            route: &self.route_prefix,
            direction: Direction::Response,
            kind: "event_stream",
            outcome,
            reason,
            end: Some(end),
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            duration: self.started.elapsed(),
            interceptors: self.engine.records(),
        }
        .log();
    }

    /// Reads the upstream until it ends or fails, the client leaves, or the chain ends the stream.
    async fn pump(&mut self, body: &mut AnyBody) -> End {
        let idle = self.resume.config.idle_timeout();
        loop {
            let first = tokio::select! {
                biased;
                _ = self.tx.closed() => return End::ClientGone,
                _ = self.phase.wait_for(|p| *p == Phase::Ending) => return End::Shutdown,
                next = next_chunk(body, idle) => next,
            };
            let mut last = self.take(first);
            // Take what else has already arrived, without waiting: that is the batch.
            while last.is_none() && self.engine.buffered() < self.proxy.batch.max_bytes {
                match body.frame().now_or_never() {
                    Some(frame) => last = self.take(to_chunk(frame)),
                    None => break,
                }
            }
            if last.is_none() && !self.proxy.linger.is_zero() {
                last = self.linger(body).await;
            }
            match last {
                None => {
                    if let Some(end) = self.flush().await {
                        return end;
                    }
                }
                Some(Ending::Eof) => {
                    if let Some(end) = self.flush().await {
                        return end;
                    }
                    let discarded = self.engine.end_input();
                    if discarded > 0 {
                        tracing::debug!(bytes = discarded, "discarded an unterminated event at the end of the stream");
                    }
                    return self.flush().await.unwrap_or(End::Closed);
                }
                Some(Ending::Failed(why)) => {
                    // Complete events go out; a partial one is resent by the upstream on resumption.
                    if let Some(end) = self.flush().await {
                        return end;
                    }
                    self.engine.abandon_partial();
                    return End::Failed(why);
                }
            }
        }
    }

    /// Feeds data to the parser; returns how the body ended if this read ended it.
    fn take(&mut self, chunk: Chunk) -> Option<Ending> {
        match chunk {
            Chunk::Data(bytes) => {
                self.bytes_in += bytes.len() as u64;
                self.engine.feed(bytes);
                None
            }
            Chunk::Skip => None,
            Chunk::Eof => Some(Ending::Eof),
            Chunk::Failed(why) => Some(Ending::Failed(why)),
        }
    }

    /// With a linger configured, waits up to it for more input to fill the batch; returns the end
    /// or failure of the body if it comes first.
    async fn linger(&mut self, body: &mut AnyBody) -> Option<Ending> {
        let deadline = tokio::time::Instant::now() + self.proxy.linger;
        while self.engine.buffered() < self.proxy.batch.max_bytes {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return None,
                frame = body.frame() => {
                    if let Some(end) = self.take(to_chunk(frame)) {
                        return Some(end);
                    }
                }
            }
        }
        None
    }

    /// Sends every complete event the engine holds, batch by batch, each as one chunk.
    async fn flush(&mut self) -> Option<End> {
        loop {
            let engine = &mut self.engine;
            let out = match super::isolation::chain_call(engine.is_slow(), || engine.next_batch()) {
                Ok(Some(out)) => out,
                Ok(None) => return None,
                Err(fault) => {
                    tracing::error!("{fault}; ending the stream (fail-closed)");
                    let data = format!(
                        "{{\"type\":\"error\",\"error\":{{\"type\":\"interceptor_error\",\"message\":\"interceptor {} failed\"}}}}",
                        fault.name.replace(['"', '\\'], "")
                    );
                    let mut bytes = Vec::new();
                    sse::encode_event(&mut bytes, &Event::message(data).with_type("error"));
                    let _ = self.send(bytes).await;
                    return Some(End::Faulted);
                }
            };
            if !self.send(out.bytes).await {
                return Some(End::ClientGone);
            }
            if out.ended {
                return Some(End::EndedByInterceptor);
            }
        }
    }

    /// Sends one encoded batch as one chunk (nothing if it is empty). False if the client is gone.
    async fn send(&mut self, bytes: Vec<u8>) -> bool {
        if bytes.is_empty() {
            return true;
        }
        self.route.bytes_out.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.bytes_out += bytes.len() as u64;
        self.tx.send(Bytes::from(bytes)).await.is_ok()
    }

    /// Reconnects to the upstream with `Last-Event-ID`, with exponential backoff and jitter.
    async fn reconnect(&mut self) -> Reconnect {
        if !self.resume.allowed {
            return Reconnect::Stop(EndReason::UpstreamFailed);
        }
        let Some(last_id) = self.engine.last_id().map(<[u8]>::to_vec) else {
            tracing::warn!("cannot resume: the upstream sent no event id");
            return Reconnect::Stop(EndReason::UpstreamFailed);
        };
        let config = &self.resume.config;
        let phase = &mut self.phase;
        let max = Duration::from_millis(config.max_delay_ms);
        let mut delay =
            Duration::from_millis(self.engine.retry_ms().map_or(config.initial_delay_ms, u64::from)).min(max);
        for attempt in 1..=config.max_attempts {
            let wait = jitter(delay);
            tokio::select! {
                biased;
                _ = self.tx.closed() => return Reconnect::ClientGone,
                _ = phase.wait_for(|p| *p == Phase::Ending) => return Reconnect::Shutdown,
                _ = tokio::time::sleep(wait) => {}
            }
            let Some(request) = self.resume.request(&last_id) else {
                tracing::warn!("cannot resume: the last event id is not a valid header value");
                return Reconnect::Stop(EndReason::UpstreamFailed);
            };
            let result = tokio::select! {
                biased;
                _ = self.tx.closed() => return Reconnect::ClientGone,
                _ = phase.wait_for(|p| *p == Phase::Ending) => return Reconnect::Shutdown,
                result = self.resume.upstream.send(request) => result,
            };
            match result {
                Ok(response) if response.status() == StatusCode::OK && headers::is_event_stream(response.headers()) => {
                    match Coding::of(response.headers()) {
                        Ok(coding) => {
                            tracing::info!(attempt, last_event_id = %String::from_utf8_lossy(&last_id), "resumed the upstream event stream");
                            self.engine.resumed();
                            self.route.reconnects.fetch_add(1, Ordering::Relaxed);
                            let body = response.into_body().map_err(BoxError::from).boxed_unsync();
                            return Reconnect::Resumed(coding.decode(body));
                        }
                        Err(coding) => tracing::warn!(
                            attempt,
                            coding,
                            "resumption answered in a content coding the proxy cannot decode"
                        ),
                    }
                }
                Ok(response) if response.status() == StatusCode::NO_CONTENT => {
                    tracing::info!("the upstream answered 204 to resumption: the stream is over");
                    return Reconnect::Stop(EndReason::UpstreamClosed);
                }
                Ok(response) => {
                    tracing::warn!(attempt, status = %response.status(), "resumption refused");
                    if let Some(after) = retry_after(response.headers()) {
                        delay = after.min(max);
                        continue;
                    }
                }
                Err(e) => tracing::warn!(attempt, "resumption failed: {}", super::upstream::chain_text(&e)),
            }
            self.route.failed_reconnects.fetch_add(1, Ordering::Relaxed);
            delay = (delay * 2).min(max);
        }
        tracing::warn!(attempts = config.max_attempts, "giving up on the upstream");
        Reconnect::Stop(EndReason::UpstreamFailed)
    }
}

enum Reconnect {
    Resumed(AnyBody),
    Stop(EndReason),
    ClientGone,
    Shutdown,
}

/// How the upstream body ended.
enum Ending {
    Eof,
    Failed(String),
}

/// What one read of the upstream body gave.
enum Chunk {
    Data(Bytes),
    /// A frame that is not data (trailers).
    Skip,
    Eof,
    Failed(String),
}

fn to_chunk(frame: Option<Result<hyper::body::Frame<Bytes>, BoxError>>) -> Chunk {
    match frame {
        None => Chunk::Eof,
        Some(Err(e)) => Chunk::Failed(e.to_string()),
        Some(Ok(frame)) => frame.into_data().map_or(Chunk::Skip, Chunk::Data),
    }
}

/// The next read of the body that is not trailers; an idle timeout counts as a failure.
async fn next_chunk(body: &mut AnyBody, idle: Option<Duration>) -> Chunk {
    loop {
        let frame = match idle {
            Some(limit) => match tokio::time::timeout(limit, body.frame()).await {
                Ok(frame) => frame,
                Err(_) => {
                    return Chunk::Failed(format!("nothing received for {} ms (idle timeout)", limit.as_millis()));
                }
            },
            None => body.frame().await,
        };
        match to_chunk(frame) {
            Chunk::Skip => continue,
            chunk => return chunk,
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is ignored).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds))
}

/// A random delay between half of `delay` and `delay`, so that many streams failing together do
/// not come back together.
fn jitter(delay: Duration) -> Duration {
    let random = std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now());
    delay.mul_f64(0.5 + (random % 1000) as f64 / 2000.0)
}
