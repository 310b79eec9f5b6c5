//! One event stream through the proxy: read the upstream, feed the [`StreamEngine`] (parse,
//! batch, chain, encode), send each batch as one chunk; resume the upstream if it fails; end the
//! chain however the stream ends. The same runs JSON-lines streams, a line per event
//! ([`Framing::Lines`]), which have no ids and so are never resumed.
//!
//! An upstream that fails and cannot be resumed does not look like an end to the client: the
//! client gets a well-formed error (an `event: error`, or an `{"error":...}` line), then its
//! body ends with an error (HTTP/1.1: no last chunk; HTTP/2: the stream is reset), so a cut-off
//! answer is never taken for a whole one.
//!
//! Resumption is bounded: reconnects after which no new event arrived count as one failure that
//! keeps backing off, an upstream's `retry` has a floor (`reconnect.min_delay_ms`), and a stream
//! reconnects at most `reconnect.max_per_minute` times in any minute.
//!
//! The stream has no task of its own: it runs inside the client's body ([`EventBody`]), polled
//! by the client connection's task whenever that connection can take another chunk. So a batch
//! costs one wake-up (the upstream's data wakes the connection, which reads, runs the chain and
//! writes) instead of two tasks and a channel between them. Measured, that is neutral at 1,000
//! slow streams and slightly cheaper in a flood (README, Performance); it stays for what it
//! removes (a task, a channel, a buffer setting).
//!
//! Backpressure follows: while the client's connection cannot take more (its write buffer is
//! full, or HTTP/2 flow control says wait), nobody polls the body, so the upstream is not read: a
//! slow client slows the upstream read instead of growing memory. When the client goes away hyper
//! drops the body, which drops the stream where it waited (cancelling the upstream request) and
//! ends its chain with `client-gone` (see `Drop for EventStream`).

use super::accounting::{Outcome, Reason};
use super::body::AnyBody;
use super::coding::Coding;
use super::isolation::{Placement, SharedEngine};
use super::report::{self, StreamFigures};
use super::route::RouteStats;
use super::upstream::Upstream;
use super::{BoxError, Lifecycle, UpstreamBody, charset, empty_body, headers, telemetry};
use crate::chain::ChainFault;
use crate::chain::ChainStream;
use crate::config::ReconnectConfig;
use crate::engine::{BatchLimits, Framing, Output, StreamEngine};
use crate::sse::{self, Event};
use bytes::Bytes;
use futures_util::FutureExt as _;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::BodyExt as _;
use sluicegate_guest::EndReason;
use std::collections::VecDeque;
use std::future::Future;
use std::hash::BuildHasher as _;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// What an event stream takes from the proxy's configuration (and the lifecycle it runs in).
#[derive(Clone)]
pub(super) struct StreamSettings {
    pub batch: BatchLimits,
    pub linger: Duration,
    pub max_event_bytes: usize,
    pub lifecycle: Arc<Lifecycle>,
}

/// How long a cut-off stream's error event has to reach the client before its body fails.
const ABORT_GRACE: Duration = Duration::from_millis(50);

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
        // Copies, not clones: a clone shares the bytes the client's request was read into, which
        // would keep the connection's first read buffer (8 KiB) alive for as long as the stream.
        let mut headers = HeaderMap::with_capacity(request.headers.len());
        for (name, value) in &request.headers {
            if [header::CONTENT_TYPE, header::CONTENT_LENGTH, header::CONTENT_ENCODING, header::EXPECT].contains(name) {
                continue;
            }
            let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
            copy.set_sensitive(value.is_sensitive());
            headers.append(name.clone(), copy);
        }
        let uri = Uri::try_from(uri.to_string()).unwrap_or(uri);
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
    EndedByInterceptor,
    /// The proxy is shutting down and the drain time is over.
    Shutdown,
    /// An interceptor faulted; the error event has been sent.
    Faulted,
}

pub(crate) struct EventStream {
    settings: StreamSettings,
    route: Arc<RouteStats>,
    /// Parse, batch, chain, ids, encode: everything but the I/O.
    engine: SharedEngine,
    /// Where each encoded batch waits for the client's body to take it.
    outbox: Outbox,
    resume: Resume,
    /// The upstream body's text as UTF-8 (decoded if it is UTF-16 or UTF-32).
    text: charset::StreamDecoder,
    /// Where resumption stands: the bounds on reconnects.
    reconnects: Reconnects,
    /// Resolves when live streams are being ended (shutdown).
    ending: super::lifecycle::Ending,
    /// What its record and spans report, gathered as it runs.
    figures: StreamFigures,
    /// The chain has been finished and the record logged; otherwise dropping the stream does it.
    done: bool,
    /// When its request arrived, when the input of the batch being made arrived, and when events
    /// were last written: for the route's latency histograms.
    requested: Instant,
    batch_arrived: Instant,
    last_write: Option<Instant>,
}

impl EventStream {
    pub(crate) fn new(
        settings: StreamSettings,
        route: Arc<RouteStats>,
        chain: ChainStream,
        framing: Framing,
        resume: Resume,
        stream_id: String,
        route_prefix: String,
    ) -> Self {
        let engine = StreamEngine::with_framing(chain, settings.batch, settings.max_event_bytes, framing);
        let ending = settings.lifecycle.ending();
        let engine = SharedEngine::new(engine, settings.lifecycle.slow_calls().clone());
        EventStream {
            settings,
            route,
            engine,
            outbox: Outbox::default(),
            resume,
            text: charset::StreamDecoder::default(),
            reconnects: Reconnects::default(),
            ending,
            figures: StreamFigures::new(stream_id, route_prefix),
            done: false,
            requested: Instant::now(),
            batch_arrived: Instant::now(),
            last_write: None,
        }
    }

    /// The stream of a request that arrived at `requested`, with `spans` to export what it does.
    pub(crate) fn observed(mut self, requested: Instant, spans: Option<Box<telemetry::StreamSpans>>) -> Self {
        self.requested = requested;
        if spans.is_some() {
            self.engine.get().read_facts();
        }
        self.figures.spans = spans;
        self
    }

    /// The client's body: polling it runs this stream over the upstream's `body` (decoded from
    /// its content coding), in `span`.
    pub(crate) fn into_body(self, body: AnyBody, span: tracing::Span) -> EventBody {
        let outbox = self.outbox.clone();
        EventBody { run: Some(Box::pin(tracing::Instrument::instrument(self.run(body), span))), outbox }
    }

    /// Not an `async fn`: that would move `self` and `body` from the future's captures into
    /// locals of their own, and the future (boxed for the stream's whole life) would hold both
    /// copies, ~780 bytes per stream. An `async move` block uses its captures in place.
    #[allow(clippy::manual_async_fn)] // on purpose, as said above
    fn run(mut self, mut body: AnyBody) -> impl Future<Output = ()> + Send {
        async move {
            let _active = self.settings.lifecycle.stream_started();
            let _on_route = RouteStats::stream_started(&self.route);
            tracing::debug!("event stream started");
            let end = loop {
                match self.pump(&mut body).await {
                    End::Failed(why) => {
                        tracing::warn!("upstream event stream failed: {why}");
                        // Boxed, as the end below: rare steps, whose room the stream's future
                        // would otherwise keep for its whole life.
                        match Box::pin(self.reconnect()).await {
                            Reconnect::Resumed(next) => {
                                body = next;
                                self.text = charset::StreamDecoder::default();
                            }
                            Reconnect::Stop(reason) => break reason,
                            Reconnect::Shutdown => break EndReason::Shutdown,
                        }
                    }
                    End::Closed => break EndReason::UpstreamClosed,
                    End::EndedByInterceptor => break EndReason::EndedByInterceptor,
                    End::Shutdown => break EndReason::Shutdown,
                    End::Faulted => {
                        self.done = true;
                        self.log_record("faulted", Outcome::Refused, Reason::Fault);
                        return;
                    }
                }
            };
            drop(body); // cancels the upstream request if it is still open
            let tail = Box::pin(self.end(end)).await;
            self.send(tail).await;
            if end == EndReason::UpstreamFailed {
                // Cut off and not resumed: say so, then end the client's body abnormally.
                let error =
                    self.error_bytes("upstream_error", "the upstream's stream broke off and could not be resumed");
                self.send(error).await;
                // Let the connection write the error out before the body fails: on a body error
                // hyper closes an HTTP/1.1 connection without flushing what it buffered, and h2
                // drops a reset stream's queued frames.
                tokio::time::sleep(ABORT_GRACE).await;
                self.outbox.abort();
            }
        }
    }

    /// A well-formed error in this stream's framing: an `event: error` whose data is the error
    /// object the interceptor errors use, or, in JSON lines, an `{"error":...}` line.
    fn error_bytes(&self, kind: &str, message: &str) -> Vec<u8> {
        let mut bytes = Vec::new();
        match self.engine.get().framing() {
            Framing::EventStream => {
                let data = serde_json::json!({"type": "error", "error": {"type": kind, "message": message}});
                sse::encode_event(&mut bytes, &Event::message(data.to_string()).with_type("error"));
            }
            Framing::Lines => {
                bytes.extend_from_slice(serde_json::json!({"error": message, "type": kind}).to_string().as_bytes());
                bytes.push(b'\n');
            }
        }
        bytes
    }

    /// Finishes the chain (its tail, to send, is returned) and logs the stream's record.
    async fn end(&mut self, end: EndReason) -> Vec<u8> {
        let stream_id = self.figures.stream_id.clone();
        let tail = self.engine.call(move |engine| finished(engine.finish(end), &stream_id)).await;
        self.ended(end, tail)
    }

    /// Logs the end of the stream, once the chain has been finished with `tail` (`None`: the
    /// finish faulted); returns the tail's bytes, to send.
    fn ended(&mut self, end: EndReason, tail: Option<Output>) -> Vec<u8> {
        self.done = true;
        let engine = self.engine.get();
        self.figures.ended(&self.route, self.settings.max_event_bytes, &engine, end, tail)
    }

    fn log_record(&self, end: &'static str, outcome: Outcome, reason: Reason) {
        self.figures.record(&self.engine.get(), end, outcome, reason);
    }

    /// Reads the upstream until it ends or fails, the client leaves, or the chain ends the stream.
    async fn pump(&mut self, body: &mut AnyBody) -> End {
        let idle = self.resume.config.idle_timeout();
        loop {
            let first = tokio::select! {
                biased;
                _ = &mut self.ending => return End::Shutdown,
                next = next_chunk(body, idle) => next,
            };
            self.batch_arrived = Instant::now();
            let mut last = self.take(first);
            // Take what else has already arrived, without waiting: that is the batch.
            while last.is_none() && self.engine.get().buffered() < self.settings.batch.max_bytes {
                match body.frame().now_or_never() {
                    Some(frame) => last = self.take(to_chunk(frame)),
                    None => break,
                }
            }
            if last.is_none() && !self.settings.linger.is_zero() {
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
                    let discarded = self.engine.get().end_input();
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
                    self.engine.get().abandon_partial();
                    return End::Failed(why);
                }
            }
        }
    }

    /// Feeds data to the parser; returns how the body ended if this read ended it.
    fn take(&mut self, chunk: Chunk) -> Option<Ending> {
        match chunk {
            Chunk::Data(bytes) => {
                self.figures.bytes_in += bytes.len() as u64;
                if let Some(text) = self.text.feed(bytes, false) {
                    self.engine.get().feed(text);
                }
                None
            }
            Chunk::Skip => None,
            Chunk::Eof => {
                if let Some(rest) = self.text.feed(Bytes::new(), true).filter(|rest| !rest.is_empty()) {
                    self.engine.get().feed(rest);
                }
                Some(Ending::Eof)
            }
            Chunk::Failed(why) => Some(Ending::Failed(why)),
        }
    }

    /// With a linger configured, waits up to it for more input to fill the batch; returns the end
    /// or failure of the body if it comes first.
    async fn linger(&mut self, body: &mut AnyBody) -> Option<Ending> {
        let deadline = tokio::time::Instant::now() + self.settings.linger;
        while self.engine.get().buffered() < self.settings.batch.max_bytes {
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

    /// Sends every complete event the engine holds, batch by batch, each as one chunk. (A batch
    /// that says no complete event is left ends it: no call only to hear there is nothing.)
    async fn flush(&mut self) -> Option<End> {
        loop {
            let out = match self.engine.call(StreamEngine::next_batch).await {
                Ok(Some(out)) => out,
                Ok(None) => return None,
                Err(fault) => {
                    tracing::error!("{fault}; ending the stream (fail-closed)");
                    let bytes = self.error_bytes("interceptor_error", &format!("interceptor {} failed", fault.name));
                    self.send(bytes).await;
                    return Some(End::Faulted);
                }
            };
            self.released(out.released_hold);
            if let Some(written) = self.send(out.bytes).await {
                let delay = written.saturating_duration_since(self.batch_arrived);
                self.route.latency.chain_delay.observe(delay.as_secs_f64());
                self.figures.waits.chain_max = self.figures.waits.chain_max.max(Some(delay));
            }
            if out.ended {
                return Some(End::EndedByInterceptor);
            }
            if !out.more {
                return None;
            }
        }
    }

    /// Counts how long the text a batch released had been held back, if it had been.
    fn released(&mut self, held: Option<std::time::Duration>) {
        report::note_held(&self.route, &mut self.figures.waits, held);
    }

    /// Sends one encoded batch as one chunk (nothing if it is empty), returning once the
    /// client's body has taken it, with when it was handed over (`None` if it was empty). (A
    /// client that goes away drops the stream here or wherever else it waits.)
    async fn send(&mut self, bytes: Vec<u8>) -> Option<Instant> {
        if bytes.is_empty() {
            return None;
        }
        self.route.bytes_out.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.figures.bytes_out += bytes.len() as u64;
        let now = Instant::now();
        match self.last_write.replace(now) {
            None => {
                let first = now - self.requested;
                self.route.latency.first_event.observe(first.as_secs_f64());
                self.figures.waits.first_event = Some(first);
            }
            Some(last) => self.route.latency.between_events.observe((now - last).as_secs_f64()),
        }
        self.outbox.send(Bytes::from(bytes)).await;
        Some(now)
    }

    /// Reconnects to the upstream with `Last-Event-ID`, with exponential backoff and jitter. The
    /// attempts and the backoff start over only once a new event has arrived since the last
    /// resumption: an upstream that accepts each reconnect and breaks again at once is one failure
    /// that keeps backing off, not a new one each time.
    async fn reconnect(&mut self) -> Reconnect {
        if !self.resume.allowed {
            return Reconnect::Stop(EndReason::UpstreamFailed);
        }
        let Some(last_id) = self.engine.get().last_id().map(<[u8]>::to_vec) else {
            tracing::warn!("cannot resume: the upstream sent no event id");
            return Reconnect::Stop(EndReason::UpstreamFailed);
        };
        let config = &self.resume.config;
        if self.reconnects.resumed_at.as_deref() != Some(&last_id[..]) {
            // Progress since the last resumption (or the first failure): a new failure.
            let retry =
                self.engine.get().retry_ms().map(|ms| Duration::from_millis(u64::from(ms)).max(config.min_delay_ms));
            self.reconnects.attempts = 0;
            self.reconnects.delay = retry.unwrap_or(config.initial_delay_ms);
        } else {
            tracing::debug!(attempts = self.reconnects.attempts, "the last resumption brought no new event");
        }
        while self.reconnects.attempts < self.resume.config.max_attempts {
            self.reconnects.attempts += 1;
            if !self.reconnects.within_cap(self.resume.config.max_per_minute) {
                tracing::warn!(
                    max_per_minute = self.resume.config.max_per_minute,
                    "giving up on the upstream: too many reconnects in the last minute"
                );
                self.route.reconnects_capped.fetch_add(1, Ordering::Relaxed);
                return Reconnect::Stop(EndReason::UpstreamFailed);
            }
            if let Some(done) = self.attempt(&last_id).await {
                return done;
            }
            self.route.failed_reconnects.fetch_add(1, Ordering::Relaxed);
        }
        tracing::warn!(attempts = self.resume.config.max_attempts, "giving up on the upstream");
        Reconnect::Stop(EndReason::UpstreamFailed)
    }

    /// One attempt, after its delay: how the stream goes on, or `None` if the attempt failed.
    async fn attempt(&mut self, last_id: &[u8]) -> Option<Reconnect> {
        let (attempt, config) = (self.reconnects.attempts, &self.resume.config);
        let wait = jitter(self.reconnects.delay.min(config.max_delay_ms));
        self.reconnects.delay = (self.reconnects.delay * 2).min(config.max_delay_ms);
        tokio::select! {
            biased;
            _ = &mut self.ending => return Some(Reconnect::Shutdown),
            _ = tokio::time::sleep(wait) => {}
        }
        let Some(mut request) = self.resume.request(last_id) else {
            tracing::warn!("cannot resume: the last event id is not a valid header value");
            return Some(Reconnect::Stop(EndReason::UpstreamFailed));
        };
        let span = match &self.figures.spans {
            Some(spans) => spans.stream().in_scope(|| {
                let (method, uri) = (request.method().clone(), request.uri().clone());
                telemetry::resumption_span(&method, &uri, request.headers_mut(), attempt)
            }),
            None => tracing::Span::none(),
        };
        let result = tokio::select! {
            biased;
            _ = &mut self.ending => return Some(Reconnect::Shutdown),
            result = tracing::Instrument::instrument(self.resume.upstream.send(request), span.clone()) => result,
        };
        telemetry::record_upstream(&span, &result);
        let response = match result {
            Ok(response) => response,
            Err(e) => {
                tracing::warn!(attempt, "resumption failed: {}", super::upstream::chain_text(&e));
                return None;
            }
        };
        if response.status() == StatusCode::NO_CONTENT {
            tracing::info!("the upstream answered 204 to resumption: the stream is over");
            return Some(Reconnect::Stop(EndReason::UpstreamClosed));
        }
        if response.status() != StatusCode::OK || !headers::is_event_stream(response.headers()) {
            tracing::warn!(attempt, status = %response.status(), "resumption refused");
            if let Some(after) = retry_after(response.headers()) {
                self.reconnects.delay = after.max(config.min_delay_ms).min(config.max_delay_ms);
            }
            return None;
        }
        let coding = Coding::of(response.headers())
            .inspect_err(|coding| {
                tracing::warn!(attempt, coding, "resumption answered in a content coding the proxy cannot decode")
            })
            .ok()?;
        tracing::info!(attempt, last_event_id = %String::from_utf8_lossy(last_id), "resumed the upstream event stream");
        self.engine.get().resumed();
        self.reconnects.resumed_at = Some(last_id.to_vec());
        self.route.reconnects.fetch_add(1, Ordering::Relaxed);
        let body = response.into_body().map_err(BoxError::from).boxed_unsync();
        Some(Reconnect::Resumed(coding.decode(body)))
    }
}

/// Where a stream's resumption stands.
#[derive(Default)]
struct Reconnects {
    /// The last event id when the stream was last resumed: if it is still the last id when the
    /// stream fails again, that resumption brought nothing new.
    resumed_at: Option<Vec<u8>>,
    /// Attempts in the current failure, and the next delay.
    attempts: u32,
    delay: Duration,
    /// When each attempt of the last minute was made.
    recent: VecDeque<Instant>,
}

impl Reconnects {
    /// Notes an attempt now; false if `max_per_minute` attempts were made in the last minute
    /// already (0: no cap).
    fn within_cap(&mut self, max_per_minute: u32) -> bool {
        let now = Instant::now();
        while self.recent.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60)) {
            self.recent.pop_front();
        }
        if max_per_minute > 0 && self.recent.len() >= max_per_minute as usize {
            return false;
        }
        self.recent.push_back(now);
        true
    }
}

enum Reconnect {
    Resumed(AnyBody),
    Stop(EndReason),
    Shutdown,
}

impl Drop for EventStream {
    /// A stream dropped before it ended was dropped by its client's body: the client went away
    /// (or its connection ended) while the stream waited for the upstream or for the client. The
    /// chain still hears how the stream ended, and the record is still logged.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let stream_id = self.figures.stream_id.clone();
        let finish = move |engine: &mut StreamEngine| finished(engine.finish(EndReason::ClientGone), &stream_id);
        // Busy: the call the stream was waiting for still runs on a blocking thread.
        let here = self.engine.try_get().is_some_and(|engine| Placement::of(engine.is_slow()) == Placement::Here);
        if here {
            let tail = finish(&mut self.engine.get());
            self.ended(EndReason::ClientGone, tail);
        } else {
            self.end_elsewhere(finish);
        }
    }
}

impl EventStream {
    /// Finishes a slow (or busy) chain on a blocking thread, not waited for, and reports the end
    /// there: so that a slow guest's last call, or the rest of a call under way, holds no thread
    /// that serves sockets. The stream's figures go along.
    fn end_elsewhere(&mut self, finish: impl FnOnce(&mut StreamEngine) -> Option<Output> + Send + 'static) {
        self.done = true;
        let (route, max_event_bytes) = (self.route.clone(), self.settings.max_event_bytes);
        let mut figures = std::mem::replace(&mut self.figures, StreamFigures::new(String::new(), String::new()));
        self.engine.call_detached(move |engine| {
            let tail = finish(engine);
            figures.ended(&route, max_event_bytes, engine, EndReason::ClientGone, tail);
        });
    }
}

/// The tail a finished chain adds, or its fault, logged.
fn finished(tail: Result<Output, ChainFault>, stream_id: &str) -> Option<Output> {
    tail.inspect_err(|fault| tracing::error!(stream = %stream_id, "{fault} while finishing the stream")).ok()
}

/// One encoded batch on its way from the stream to the client's body, which share the task that
/// polls the body; so the slot is never contended, and a lock is all the sharing costs.
#[derive(Clone, Default)]
struct Outbox(Arc<Mutex<Slot>>);

#[derive(Default)]
struct Slot {
    bytes: Option<Bytes>,
    /// The stream ended abnormally: the body ends with an error, not an end.
    aborted: bool,
}

impl Outbox {
    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Leaves `bytes` for the body and waits until it has taken them. The wait needs no waker:
    /// while the slot is full, the body returns the bytes instead of waiting, and polls the stream
    /// again on its next poll.
    async fn send(&self, bytes: Bytes) {
        self.slot().bytes = Some(bytes);
        std::future::poll_fn(|_| if self.slot().bytes.is_some() { Poll::Pending } else { Poll::Ready(()) }).await;
    }

    fn take(&self) -> Option<Bytes> {
        self.slot().bytes.take()
    }

    fn abort(&self) {
        self.slot().aborted = true;
    }

    /// True once, after [`Outbox::abort`]: the body's error is reported once.
    fn take_abort(&self) -> bool {
        std::mem::take(&mut self.slot().aborted)
    }
}

/// The error an aborted client body ends with.
#[derive(Debug, thiserror::Error)]
#[error("the upstream's stream broke off and could not be resumed")]
struct Truncated;

/// The client's body of an event stream: each poll runs the stream until it has a batch to send,
/// waits for the upstream, or has ended.
pub(crate) struct EventBody {
    /// The stream, until it has ended.
    run: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    outbox: Outbox,
}

impl http_body::Body for EventBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(run) = &mut this.run
            && run.as_mut().poll(cx).is_ready()
        {
            this.run = None;
        }
        match this.outbox.take() {
            Some(bytes) => Poll::Ready(Some(Ok(http_body::Frame::data(bytes)))),
            None if this.run.is_none() && this.outbox.take_abort() => Poll::Ready(Some(Err(Truncated.into()))),
            None if this.run.is_none() => Poll::Ready(None),
            None => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        let slot = self.outbox.slot();
        self.run.is_none() && slot.bytes.is_none() && !slot.aborted
    }
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

/// `Retry-After` as seconds or as an HTTP date (RFC 9110, 10.2.3); a date in the past is now.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(std::time::SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// A random delay between half of `delay` and `delay`, so that many streams failing together do
/// not come back together.
fn jitter(delay: Duration) -> Duration {
    let random = std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now());
    delay.mul_f64(0.5 + (random % 1000) as f64 / 2000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(value: &str) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        retry_after(&headers)
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        assert_eq!(after(" 7 "), Some(Duration::from_secs(7)));
        let in_a_minute = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(60));
        let wait = after(&in_a_minute).expect("an HTTP date");
        assert!(wait > Duration::from_secs(55) && wait <= Duration::from_secs(60), "{wait:?}");
        assert_eq!(after("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO), "a date in the past is now");
        assert_eq!(after("soon"), None);
    }
}
