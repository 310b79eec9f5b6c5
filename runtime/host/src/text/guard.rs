//! Guards written in Rust (the SDK's [`TextGuard`], or a `TextTransform` in `PerChannel`) on the
//! engine: [`GuardJudge`] answers the engine's items with one, and [`TextInterceptor`] serves one
//! to the proxy natively: the native twins of the text world's guests, on the same engine.
//! [`TextStreamState`] is one stream through the engine, whoever judges it (a guest too).

use super::{Answer, Item, Judge, Refusal, TextEngine};
use crate::batch::Batch;
use crate::interceptor::{Fault, Interceptor, InterceptorStream, TrapKind, World};
use crate::verdict::{Applied, apply_batch, apply_finish};
use sluicegate_guest::text::TextGuard;
use sluicegate_guest::{Config, EndReason, NewEvent, StreamContext, VerdictBuilder};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

/// Answers the engine's items with a [`TextGuard`]'s stream.
pub struct GuardJudge<G: TextGuard> {
    guard: Arc<G>,
    stream: G::Stream,
}

impl<G: TextGuard> GuardJudge<G> {
    /// A judge of one stream.
    pub fn new(guard: Arc<G>, context: &StreamContext) -> Self {
        let stream = guard.open(context);
        GuardJudge { guard, stream }
    }
}

/// A store the guard found unavailable makes its call a fault, as for a guest.
fn store_fault() -> Result<(), Fault> {
    crate::store::take_unavailable().map_or(Ok(()), |why| Err(Fault::Store(why)))
}

impl<G: TextGuard> Judge for GuardJudge<G> {
    fn judge(&mut self, items: &[Item], answers: &mut Vec<Answer>) -> Result<(), Fault> {
        crate::store::clear_unavailable();
        self.guard.process(&mut self.stream, items, answers);
        store_fault()
    }

    fn max_held(&self) -> usize {
        self.guard.max_held()
    }

    fn prefilter(&self) -> &[u8] {
        self.guard.prefilter()
    }

    fn admit(&mut self) -> Result<Option<Refusal>, Fault> {
        crate::store::clear_unavailable();
        let refusal = self.guard.admit(&mut self.stream);
        store_fault().map(|()| refusal)
    }

    fn finish(&mut self, reason: EndReason, output_tokens: Option<u64>) -> Result<(), Fault> {
        crate::store::clear_unavailable();
        self.guard.finish(&mut self.stream, reason, output_tokens);
        store_fault()
    }
}

/// A text guard served to the proxy natively.
pub struct TextInterceptor<G> {
    name: String,
    guard: Arc<G>,
    max_output: usize,
}

impl<G: TextGuard> TextInterceptor<G> {
    /// `guard`, shown as `name`, whose verdicts may carry `max_output` bytes.
    pub fn new(name: impl Into<String>, guard: G, max_output: usize) -> Self {
        TextInterceptor { name: name.into(), guard: Arc::new(guard), max_output }
    }

    /// `G` built from `config`.
    pub fn from_config(name: impl Into<String>, config: &Config, max_output: usize) -> Result<Self, String> {
        let name = name.into();
        let guard = G::new(config).map_err(|e| format!("{name}: invalid configuration: {e}"))?;
        Ok(Self::new(name, guard, max_output))
    }
}

impl<G: TextGuard> Interceptor for TextInterceptor<G> {
    fn name(&self) -> &str {
        &self.name
    }

    fn world(&self) -> World {
        World::Text
    }

    fn open(&self, context: &StreamContext) -> Result<Box<dyn InterceptorStream>, Fault> {
        crate::store::clear_unavailable();
        let guard = self.guard.clone();
        let judge = catch_unwind(AssertUnwindSafe(|| GuardJudge::new(guard, context))).map_err(panicked)?;
        store_fault()?;
        Ok(Box::new(TextStreamState::new(judge, context, self.max_output)))
    }
}

/// One stream through the engine, judged by `J`: what a text interceptor's stream is, native or a
/// guest's.
pub(crate) struct TextStreamState<J: Judge> {
    engine: TextEngine,
    judge: J,
    verdict: VerdictBuilder,
    max_output: usize,
    /// A request not yet admitted.
    admitting: bool,
}

impl<J: Judge> TextStreamState<J> {
    pub(crate) fn new(judge: J, context: &StreamContext, max_output: usize) -> Self {
        TextStreamState {
            // Status 0: a request chain's stream (no response yet).
            engine: if context.status == 0 { TextEngine::for_requests() } else { TextEngine::new() },
            judge,
            verdict: VerdictBuilder::new(),
            max_output,
            admitting: context.status == 0,
        }
    }

    /// The refusal of a request: its status as the event type and the error as its data (the
    /// request chain's convention), in place of the body, and the end.
    fn refuse(&mut self, refusal: &Refusal) {
        let status = refusal.status.clamp(400, 599).to_string();
        let mut data = String::from("{\"error\":{\"type\":\"");
        sluicegate_guest::json::encode(&refusal.error_type, &mut data);
        data.push_str("\",\"message\":\"");
        sluicegate_guest::json::encode(&refusal.message, &mut data);
        data.push('"');
        if refusal.retry_after_seconds > 0 {
            data.push_str(&format!(",\"retry_after_seconds\":{}", refusal.retry_after_seconds));
        }
        data.push_str("}}");
        self.verdict.replace_with(&NewEvent::message(&data).with_type(&status));
        self.verdict.end();
    }
}

impl<J: Judge> InterceptorStream for TextStreamState<J> {
    fn process(&mut self, input: &Batch, output: &mut Batch) -> Result<Applied, Fault> {
        self.verdict.clear();
        let refusal = match std::mem::take(&mut self.admitting) {
            true => catch_unwind(AssertUnwindSafe(|| self.judge.admit())).map_err(panicked)??,
            false => None,
        };
        if let Some(refusal) = refusal {
            self.refuse(&refusal);
        } else {
            let (engine, judge, verdict) = (&mut self.engine, &mut self.judge, &mut self.verdict);
            catch_unwind(AssertUnwindSafe(|| engine.process(judge, input.view(), verdict))).map_err(panicked)??;
        }
        self.verdict.complete(input.len());
        Ok(apply_batch(input, self.verdict.ops(), self.verdict.bytes(), output, self.max_output)?)
    }

    fn finish(&mut self, reason: EndReason, output: &mut Batch) -> Result<Applied, Fault> {
        self.verdict.clear();
        let (engine, judge, verdict) = (&mut self.engine, &mut self.judge, &mut self.verdict);
        catch_unwind(AssertUnwindSafe(|| -> Result<(), Fault> {
            if reason != EndReason::ClientGone {
                engine.finish(judge, verdict)?;
            }
            judge.finish(reason, engine.output_tokens())
        }))
        .map_err(panicked)??;
        self.verdict.complete(0);
        Ok(apply_finish(self.verdict.ops(), self.verdict.bytes(), output, self.max_output)?)
    }

    fn released_hold(&mut self) -> Option<std::time::Duration> {
        self.engine.take_released_hold()
    }

    fn close(&mut self) -> Result<(), Fault> {
        self.judge.close()
    }
}

fn panicked(_: Box<dyn std::any::Any + Send>) -> Fault {
    Fault::Trap { kind: TrapKind::Panic, message: "the streaming-text engine or a native guard panicked".into() }
}
