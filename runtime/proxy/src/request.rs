//! One request's life, phase by phase, in the order they run:
//!
//! 1. **admit**: the proxy is serving; `Host` and `Origin` pass the rebinding checks;
//! 2. **route**: the path in its canonical spelling picks the route and its upstream;
//! 3. **upstream head**: the request head as the upstream gets it (hop-by-hop fields gone,
//!    `Host`, `Accept-Encoding`, the route's header changes), and a stream slot if the client
//!    asks for an event stream;
//! 4. **request body**: on a guarded route, judged by its content and through the request chain;
//! 5. **upstream request**: sent; the upstream's failure is answered 502 or 504;
//! 6. **response body**: on a guarded route, by its content: an event stream or JSON lines
//!    through the chain event by event, text and JSON through it whole, binary content passed
//!    only by the route's rule;
//! 7. **log**: the enforcement records the phases filled, written once.
//!
//! Each phase is a short function over the request's [`RequestCtx`]; a phase that refuses returns
//! a [`ProxyError`], which the proxy turns into the client's answer in one place.

use super::accounting::{BodyRecord, Direction, EnforcementRecord, Outcome, Reason};
use super::admission::StreamSlot;
use super::body::{AnyBody, Holding, ProxyBody};
use super::coding::Coding;
use super::content::{Label, Shape, sniff};
use super::error::{ErrorKind, ProxyError};
use super::events::{EventStream, Resume};
use super::inspect::{self, WholeBody};
use super::route::Route;
use super::upstream::Upstream;
use super::{BoxError, Phase, Proxy, charset, headers, path, telemetry};
use crate::chain::Judging;
use crate::engine::Framing;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use sluicegate_guest::StreamContext;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument as _;

/// What the phases of one request know about it.
pub(super) struct RequestCtx<'p> {
    pub stream_id: String,
    /// The route, if the path matched one.
    pub route: Option<&'p Route>,
    pub upstream: Option<&'p Arc<Upstream>>,
    pub upstream_uri: Uri,
    /// What the chains are told about the request (and, later, the response).
    pub context: StreamContext,
    /// The slot of an event stream, held while its body lasts.
    pub slot: Option<StreamSlot>,
    pub started: Instant,
    /// What happened to the request's body and the response's (guarded routes only).
    pub request_record: Option<BodyRecord>,
    pub response_record: Option<BodyRecord>,
    /// The request's span for export (disabled while export is off).
    pub span: tracing::Span,
}

impl<'p> RequestCtx<'p> {
    fn new(stream_id: String, span: tracing::Span) -> Self {
        RequestCtx {
            span,
            stream_id,
            route: None,
            upstream: None,
            upstream_uri: Uri::default(),
            context: StreamContext::default(),
            slot: None,
            started: Instant::now(),
            request_record: None,
            response_record: None,
        }
    }

    /// The route, if it has a chain in either direction.
    fn guarded(&self) -> Option<&'p Route> {
        self.route.filter(|r| r.guarded())
    }
}

impl Proxy {
    /// Handles one client request: its phases, then its answer and its records.
    pub async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<ProxyBody> {
        let span = telemetry::server_span(request.method(), request.uri().path(), request.headers());
        let mut ctx = RequestCtx::new(self.lifecycle.next_stream_id().to_string(), span.clone());
        let response = match self.phases(&mut ctx, request).instrument(span).await {
            Ok(response) => response,
            Err(error) => {
                error.log(&ctx.stream_id);
                error.into_response(&self.client_side.retry_after)
            }
        };
        telemetry::record_status(&ctx.span, response.status(), true);
        self.log(&ctx);
        response
    }

    async fn phases<'p>(
        self: &'p Arc<Self>,
        ctx: &mut RequestCtx<'p>,
        request: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        self.admit(&request)?;
        let (parts, body) = request.into_parts();
        self.route(ctx, &parts)?;
        let head = self.upstream_head(ctx, parts)?;
        let body = body.map_err(BoxError::from).boxed_unsync();
        let (head, body) = self.request_body(ctx, head, body).await?;
        let response = self.upstream_request(ctx, head.clone(), body).await?;
        self.response_body(ctx, &head, response).await
    }

    /// Phase 1: the proxy is serving, and the client's `Host` and `Origin` pass.
    fn admit(&self, request: &Request<Incoming>) -> Result<(), ProxyError> {
        if self.lifecycle.phase() != Phase::Running {
            return Err(ErrorKind::ShuttingDown.into());
        }
        let authority = request.uri().authority().map(|a| a.as_str());
        headers::check_host_and_origin(request.headers(), authority, &self.allowed_hosts, &self.allowed_origins)
            .map_err(|refusal| ErrorKind::HostOrOrigin(refusal).into())
    }

    /// Phase 2: the canonical path picks the route and the upstream; the chains' context is set.
    fn route<'p>(&'p self, ctx: &mut RequestCtx<'p>, parts: &http::request::Parts) -> Result<(), ProxyError> {
        let normal = path::normalise(parts.uri.path()).map_err(ErrorKind::Path)?;
        let route = self.routes.route_for(&normal)?;
        let upstream = route.map(|r| &r.upstream).or(self.default_upstream.as_ref()).ok_or(ErrorKind::NoRoute)?;
        let mut path_and_query = route.map_or_else(|| normal.path.clone(), |r| r.upstream_path(&normal.path));
        if let Some(query) = parts.uri.query() {
            path_and_query.push('?');
            path_and_query.push_str(query);
        }
        ctx.upstream_uri = upstream.base().uri_for(&path_and_query).map_err(|e| {
            ErrorKind::Internal(format!("the canonical path does not make an upstream URI ({path_and_query}): {e}"))
        })?;
        if let Some(route) = route {
            telemetry::record_route(&ctx.span, &parts.method, &route.prefix);
        }
        ctx.route = route;
        ctx.upstream = Some(upstream);
        ctx.context = StreamContext {
            stream_id: ctx.stream_id.clone(),
            method: parts.method.to_string(),
            path: normal.path,
            query: parts.uri.query().unwrap_or("").to_string(),
            request_headers: headers::context_pairs(&parts.headers),
            status: 0,
            response_headers: Vec::new(),
        };
        Ok(())
    }

    /// Phase 3: the head the upstream gets; a request that asks for an event stream takes its
    /// slot now, before anything is sent.
    fn upstream_head(
        &self,
        ctx: &mut RequestCtx<'_>,
        mut head: http::request::Parts,
    ) -> Result<http::request::Parts, ProxyError> {
        let upstream = ctx.upstream.ok_or(ErrorKind::NoRoute)?;
        headers::strip_hop_by_hop(&mut head.headers);
        if !self.preserve_host {
            let authority = HeaderValue::from_str(upstream.base().authority().as_str())
                .map_err(|e| ErrorKind::Internal(format!("the upstream's authority is not a Host value: {e}")))?;
            head.headers.insert(header::HOST, authority);
        }
        let wants_stream = headers::accepts_event_stream(&head.headers);
        if ctx.guarded().is_some() || wants_stream {
            // What a guarded route inspects it must read: ask for it uncompressed (and decode it
            // anyway if the upstream compresses regardless).
            head.headers.insert(header::ACCEPT_ENCODING, headers::identity());
        }
        head.headers.append(header::VIA, HeaderValue::from_static("1.1 sluicegate"));
        if wants_stream {
            ctx.slot = Some(self.stream_slot(ctx.route)?);
        }
        upstream.settings().headers.apply(&mut head.headers);
        if let Some(route) = ctx.route {
            route.headers.apply(&mut head.headers);
        }
        head.uri = ctx.upstream_uri.clone();
        head.version = http::Version::HTTP_11;
        Ok(head)
    }

    /// Phase 4: a request body on a guarded route, judged by its content: text and JSON through
    /// the request chain whole (a refusal never reaches the upstream), binary content only by the
    /// route's rule.
    async fn request_body(
        &self,
        ctx: &mut RequestCtx<'_>,
        mut head: http::request::Parts,
        body: AnyBody,
    ) -> Result<(http::request::Parts, AnyBody), ProxyError> {
        let Some(route) = ctx.guarded() else { return Ok((head, body)) };
        let record = |outcome, reason| Some(BodyRecord::new(outcome, reason));
        if inspect::is_empty(&body, &head.headers) {
            ctx.request_record = record(Outcome::Passed, Reason::Empty);
            return Ok((head, body));
        }
        if route.request_chain.is_empty() {
            ctx.request_record = record(Outcome::Passed, Reason::NoChain);
            return Ok((head, body));
        }
        let (coding, body) = decoded(Direction::Request, &head.headers, body).inspect_err(|_| {
            ctx.request_record = record(Outcome::Refused, Reason::UnsupportedEncoding);
        })?;
        let label = Label::of(&head.headers);
        let (shape, body) = self.shape(Direction::Request, &label, body, route.rules.max_line).await;
        if shape == Shape::Binary {
            ctx.request_record = Some(pass_binary(Direction::Request, route, &label).inspect_err(|_| {
                ctx.request_record = record(Outcome::Refused, Reason::Binary);
            })?);
            return Ok((head, body));
        }
        let whole = WholeBody {
            chain: &route.request_chain,
            direction: Direction::Request,
            rules: &route.rules,
            context: &ctx.context,
            label: &label,
            span: &ctx.span,
            slow_calls: self.lifecycle.slow_calls(),
        };
        let reservation = self.lifecycle.admission.buffer(self.max_buffered_bytes);
        let (result, record) = whole.inspect(&mut head.headers, body, coding != Coding::Identity, reservation).await;
        ctx.request_record = Some(record);
        Ok((head, result?))
    }

    /// Phase 5: the request goes upstream.
    async fn upstream_request(
        &self,
        ctx: &mut RequestCtx<'_>,
        mut head: http::request::Parts,
        body: AnyBody,
    ) -> Result<Response<AnyBody>, ProxyError> {
        let upstream = ctx.upstream.ok_or(ErrorKind::NoRoute)?;
        let span = telemetry::client_span(&head.method, &head.uri, &mut head.headers);
        let response = upstream.send(Request::from_parts(head, body)).instrument(span.clone()).await;
        telemetry::record_upstream(&span, &response);
        let response = response.map_err(|e| ProxyError::response(ErrorKind::Upstream(e)))?;
        let (mut head, body) = response.into_parts();
        headers::strip_hop_by_hop(&mut head.headers);
        Ok(Response::from_parts(head, body.map_err(BoxError::from).boxed_unsync()))
    }

    /// Phase 6: the upstream's response, through the route's chain if it has one. A response
    /// that is an event stream holds a slot while it lasts (taken now if the request did not ask
    /// for a stream, as LLM APIs do not); any other gives the request's slot back.
    async fn response_body(
        self: &Arc<Self>,
        ctx: &mut RequestCtx<'_>,
        request: &http::request::Parts,
        response: Response<AnyBody>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (mut head, body) = response.into_parts();
        let no_body = request.method == http::Method::HEAD
            || head.status.is_informational()
            || head.status == StatusCode::NO_CONTENT
            || head.status == StatusCode::NOT_MODIFIED
            || inspect::is_empty(&body, &head.headers);
        let Some(route) = ctx.guarded().filter(|r| !r.chain.is_empty() && !no_body) else {
            return self.pass_response(ctx, head, body, no_body);
        };
        ctx.context.status = head.status.as_u16();
        ctx.context.response_headers = headers::context_pairs(&head.headers);
        let (coding, body) = decoded(Direction::Response, &head.headers, body).inspect_err(|_| {
            ctx.response_record = Some(BodyRecord::new(Outcome::Refused, Reason::UnsupportedEncoding));
        })?;
        let label = Label::of(&head.headers);
        let (shape, body) = self.shape(Direction::Response, &label, body, route.rules.max_line).await;
        let framing = match shape {
            Shape::EventStream => Framing::EventStream,
            Shape::Lines => Framing::Lines,
            Shape::Binary => {
                ctx.slot = None;
                ctx.response_record = Some(pass_binary(Direction::Response, route, &label).inspect_err(|_| {
                    ctx.response_record = Some(BodyRecord::new(Outcome::Refused, Reason::Binary));
                })?);
                return Ok(Response::from_parts(head, route.counted(body)));
            }
            Shape::Whole => {
                ctx.slot = None;
                let whole = WholeBody {
                    chain: &route.chain,
                    direction: Direction::Response,
                    rules: &route.rules,
                    context: &ctx.context,
                    label: &label,
                    span: &ctx.span,
                    slow_calls: self.lifecycle.slow_calls(),
                };
                let reservation = self.lifecycle.admission.buffer(self.max_buffered_bytes);
                let compressed = coding != Coding::Identity;
                let (result, record) = whole.inspect(&mut head.headers, body, compressed, reservation).await;
                ctx.response_record = Some(record);
                return Ok(Response::from_parts(head, route.counted(result?)));
            }
        };
        self.hold_slot(ctx)?;
        let body = self.event_stream(ctx, route, request, &mut head.headers, body, framing)?;
        Ok(Response::from_parts(head, self.with_slot(ctx, body)))
    }

    /// A response that meets no chain (no route, no response chain, or no body): passed as it
    /// is, counted on a guarded route; an event stream by its label holds a slot.
    fn pass_response(
        &self,
        ctx: &mut RequestCtx<'_>,
        head: http::response::Parts,
        body: AnyBody,
        no_body: bool,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        match headers::is_event_stream(&head.headers) {
            true => self.hold_slot(ctx)?,
            false => ctx.slot = None,
        }
        if ctx.guarded().is_some() {
            let reason = if no_body { Reason::Empty } else { Reason::NoChain };
            ctx.response_record = Some(BodyRecord::new(Outcome::Passed, reason));
        }
        let body = match ctx.route {
            Some(route) if !no_body => route.counted(body),
            _ => body,
        };
        Ok(Response::from_parts(head, self.with_slot(ctx, body)))
    }

    /// The event path: the stream runs inside the client's body from here on, and writes its own
    /// enforcement record when it ends.
    fn event_stream(
        self: &Arc<Self>,
        ctx: &mut RequestCtx<'_>,
        route: &Route,
        request: &http::request::Parts,
        headers: &mut HeaderMap,
        body: AnyBody,
        framing: Framing,
    ) -> Result<AnyBody, ProxyError> {
        headers.remove(header::CONTENT_ENCODING);
        headers.remove(header::CONTENT_LENGTH);
        inspect::label_utf8(headers);
        headers.entry("x-accel-buffering").or_insert(HeaderValue::from_static("no"));
        let chain = route.chain.open_for(&ctx.context, Judging::Upstream).map_err(|fault| {
            ctx.response_record = Some(BodyRecord::new(Outcome::Refused, Reason::Fault));
            ProxyError::response(ErrorKind::StartFailed(fault.to_string()))
        })?;
        let reason = if framing == Framing::Lines { Reason::Lines } else { Reason::EventStream };
        ctx.response_record = Some(BodyRecord { streamed: true, ..BodyRecord::new(Outcome::Inspected, reason) });
        let upstream = ctx.upstream.ok_or(ErrorKind::NoRoute)?.clone();
        let kind = if framing == Framing::Lines { "lines" } else { "event_stream" };
        let spans =
            ctx.span.in_scope(|| telemetry::StreamSpans::open(&ctx.stream_id, &route.prefix, kind, chain.records()));
        let resume = Resume::new(request, upstream, ctx.upstream_uri.clone(), &self.reconnect);
        let stream = EventStream::new(
            self.stream_settings(),
            route.stats.clone(),
            chain,
            framing,
            resume,
            ctx.stream_id.clone(),
            route.prefix.clone(),
        )
        .observed(ctx.started, spans);
        // Every log line about this stream, the guests' own included, carries its id.
        let span = tracing::info_span!("stream", stream_id = %ctx.context.stream_id, path = %ctx.context.path);
        Ok(stream.into_body(body, span).boxed_unsync())
    }

    /// What the first bytes of a body make it: its label decides when it names a shape the proxy
    /// parses; otherwise its content does (see `content`). Returns the body whole again.
    async fn shape(&self, direction: Direction, label: &Label, body: AnyBody, max_line: usize) -> (Shape, AnyBody) {
        let decided = label.shape();
        let shape = match (direction, decided) {
            (Direction::Response, Some(shape)) => return (shape, body),
            (Direction::Request, Some(_)) => return (Shape::Whole, body),
            _ => None,
        };
        let labelled = charset::TextEncoding::from_label(label.charset()).ok().flatten();
        let (prefix, body) = peek(body, |prefix, complete| sniff(prefix, complete, max_line, labelled)).await;
        let shape = shape.or(prefix).unwrap_or(Shape::Whole);
        tracing::debug!(shape = shape.name(), label = ?label, direction = direction.name(), "a body judged by its content");
        // A request body is read whole whatever its text is.
        let shape = match (direction, shape) {
            (Direction::Request, Shape::EventStream | Shape::Lines) => Shape::Whole,
            (_, shape) => shape,
        };
        (shape, body)
    }

    /// Phase 7: the enforcement records of the request's bodies, written once and counted.
    fn log(&self, ctx: &RequestCtx<'_>) {
        let Some(route) = ctx.guarded() else { return };
        for (direction, record) in
            [(Direction::Request, &ctx.request_record), (Direction::Response, &ctx.response_record)]
        {
            let Some(record) = record else { continue };
            route.stats.bodies.count(direction, record.outcome, record.reason);
            if record.reason == Reason::BufferFull {
                self.lifecycle.admission.count_buffer_refusal();
            }
            if record.streamed {
                continue;
            }
            let (outcome, reason) = (record.outcome.name(), record.reason.name());
            telemetry::record_body(&ctx.span, direction.name(), outcome, reason, &record.interceptors);
            EnforcementRecord {
                stream_id: &ctx.stream_id,
                route: &route.prefix,
                direction,
                kind: "body",
                outcome: record.outcome,
                reason: record.reason,
                end: None,
                bytes_in: record.bytes_in,
                bytes_out: record.bytes_out,
                duration: ctx.started.elapsed(),
                interceptors: &record.interceptors,
            }
            .log();
        }
    }

    /// A slot for an event stream on `route` (None: a request that matches no route), or the
    /// limit that refuses it.
    fn stream_slot(&self, route: Option<&Route>) -> Result<StreamSlot, ProxyError> {
        let (counter, max, prefix) = match route {
            Some(r) => (&r.stream_slots, r.max_streams, r.prefix.as_str()),
            None => (&self.unrouted_slots, 0, ""),
        };
        self.lifecycle
            .admission
            .stream_slot(self.max_streams, counter, max, prefix)
            .map_err(|limit| ProxyError::response(ErrorKind::StreamLimit(limit)))
    }

    /// The response is a stream: it holds a slot (taken now if the request did not ask for one).
    fn hold_slot(&self, ctx: &mut RequestCtx<'_>) -> Result<(), ProxyError> {
        if ctx.slot.is_none() {
            // The request did not say it wanted a stream (LLM APIs): the slot is taken now.
            ctx.slot = Some(self.stream_slot(ctx.route)?);
        }
        Ok(())
    }

    /// `body`, holding the request's stream slot if it has one until it ends.
    fn with_slot(&self, ctx: &mut RequestCtx<'_>, body: AnyBody) -> AnyBody {
        match ctx.slot.take() {
            Some(slot) => Holding::wrap(body, slot),
            None => body,
        }
    }
}

/// `body` decoded from its content coding, and the coding; refused if the proxy cannot decode it.
fn decoded(direction: Direction, headers: &HeaderMap, body: AnyBody) -> Result<(Coding, AnyBody), ProxyError> {
    let coding = Coding::of(headers).map_err(|coding| ProxyError::new(ErrorKind::Coding(coding), direction))?;
    if coding != Coding::Identity {
        tracing::debug!(
            coding = coding.name(),
            direction = direction.name(),
            "decoding a compressed body to inspect it"
        );
    }
    Ok((coding, coding.decode(body)))
}

/// Binary content passes only by the route's `pass_media_types`: the record of that pass, or the
/// refusal.
fn pass_binary(direction: Direction, route: &Route, label: &Label) -> Result<BodyRecord, ProxyError> {
    if route.rules.passes(label) {
        return Ok(BodyRecord::new(Outcome::Passed, Reason::MediaType));
    }
    let label = label.essence().unwrap_or("(no valid Content-Type)").to_string();
    Err(ProxyError::new(ErrorKind::Binary(label), direction))
}

/// Reads frames of `body` until `decide` (given the bytes so far and whether the body has ended)
/// answers; returns its answer (none if the body failed first) and the body with those bytes
/// put back in front.
async fn peek<T>(mut body: AnyBody, decide: impl Fn(&[u8], bool) -> Option<T>) -> (Option<T>, AnyBody) {
    let mut read: Vec<Bytes> = Vec::new();
    let mut prefix = BytesMut::new();
    let answer = loop {
        let frame = body.frame().await;
        let complete = match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    // `decide` answers before the prefix passes its own bounds (a line limit).
                    prefix.extend_from_slice(&data);
                    read.push(data);
                    false
                }
                Err(_) => continue,
            },
            Some(Err(e)) => {
                // The error goes on with the body, for the path that reads it to report.
                let failed = futures_util::stream::once(async move { Err::<http_body::Frame<Bytes>, _>(e) });
                body = http_body_util::StreamBody::new(failed).boxed_unsync();
                break None;
            }
            None => true,
        };
        if let Some(answer) = decide(&prefix, complete) {
            break Some(answer);
        }
        if complete {
            break None;
        }
    };
    (answer, inspect::rejoin(read, body))
}
