//! Transforms written in Rust (the SDK's [`TextTransform`]: one channel's pending text at a time)
//! against the engine: [`TransformJudge`] answers the engine's items with one, and
//! [`TextInterceptor`] serves one to the proxy as an interceptor: the native twins of the text
//! examples, on the same engine as their guests.

use super::{Answer, Item, Judge, StopReason, TextEngine};
use crate::batch::Batch;
use crate::interceptor::{Fault, Interceptor, InterceptorStream, TrapKind, World};
use crate::verdict::{Applied, apply, apply_finish};
pub use sluicegate_guest::text::{Flow, TextTransform};
use sluicegate_guest::{EndReason, StreamContext, VerdictBuilder};
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

/// Answers the engine's items with a [`TextTransform`], one channel state per channel.
pub struct TransformJudge<T: TextTransform> {
    transform: Arc<T>,
    channels: HashMap<u32, T::Channel>,
}

impl<T: TextTransform> TransformJudge<T>
where
    T::Channel: Send,
{
    /// A judge of one stream.
    pub fn new(transform: Arc<T>) -> Self {
        TransformJudge { transform, channels: HashMap::new() }
    }
}

impl<T: TextTransform + Send + Sync> Judge for TransformJudge<T>
where
    T::Channel: Send,
{
    fn judge(&mut self, items: &[Item], answers: &mut Vec<Answer>) -> Result<(), Fault> {
        for item in items {
            let mut text = String::new();
            let flow = if item.whole {
                self.transform.whole(&item.text, &mut text)
            } else {
                let channel = self.channels.entry(item.channel).or_default();
                let flow = self.transform.step(channel, &item.text, item.last, &mut text);
                if item.last {
                    self.channels.remove(&item.channel);
                }
                flow
            };
            answers.push(match flow {
                Flow::Continue(count) => Answer::Release { count, text },
                Flow::Stop(sluicegate_guest::text::StopReason::ContentFilter) => {
                    Answer::Stop { text, reason: StopReason::ContentFilter }
                }
                Flow::Stop(sluicegate_guest::text::StopReason::Length) => {
                    Answer::Stop { text, reason: StopReason::Length }
                }
            });
        }
        Ok(())
    }

    fn max_held(&self) -> usize {
        self.transform.max_held()
    }

    fn prefilter(&self) -> &[u8] {
        self.transform.prefilter()
    }
}

/// A transform served to the proxy: the engine and the transform, natively.
pub struct TextInterceptor<T> {
    name: String,
    transform: Arc<T>,
    max_output: usize,
}

impl<T: TextTransform + Send + Sync + 'static> TextInterceptor<T>
where
    T::Channel: Send,
{
    /// `transform`, shown as `name`, whose verdicts may carry `max_output` bytes.
    pub fn new(name: impl Into<String>, transform: T, max_output: usize) -> Self {
        TextInterceptor { name: name.into(), transform: Arc::new(transform), max_output }
    }
}

impl<T: TextTransform + Send + Sync + 'static> Interceptor for TextInterceptor<T>
where
    T::Channel: Send,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn world(&self) -> World {
        World::Text
    }

    fn open(&self, _context: &StreamContext) -> Result<Box<dyn InterceptorStream>, Fault> {
        Ok(Box::new(TextStreamState {
            engine: TextEngine::new(),
            judge: TransformJudge::new(self.transform.clone()),
            verdict: VerdictBuilder::new(),
            max_output: self.max_output,
        }))
    }
}

/// One stream through the engine, judged by `J`: what a text interceptor's stream is, native or a
/// guest's.
pub(crate) struct TextStreamState<J: Judge> {
    pub(crate) engine: TextEngine,
    pub(crate) judge: J,
    pub(crate) verdict: VerdictBuilder,
    pub(crate) max_output: usize,
}

impl<J: Judge> InterceptorStream for TextStreamState<J> {
    fn process(&mut self, input: &Batch, output: &mut Batch) -> Result<Applied, Fault> {
        self.verdict.clear();
        let (engine, judge, verdict) = (&mut self.engine, &mut self.judge, &mut self.verdict);
        catch_unwind(AssertUnwindSafe(|| engine.process(judge, input.view(), verdict))).map_err(panicked)??;
        self.verdict.complete(input.len());
        Ok(apply(input.view(), self.verdict.ops(), self.verdict.bytes(), output, self.max_output)?)
    }

    fn finish(&mut self, reason: EndReason, output: &mut Batch) -> Result<Applied, Fault> {
        self.verdict.clear();
        if reason != EndReason::ClientGone {
            let (engine, judge, verdict) = (&mut self.engine, &mut self.judge, &mut self.verdict);
            catch_unwind(AssertUnwindSafe(|| engine.finish(judge, verdict))).map_err(panicked)??;
        }
        self.verdict.complete(0);
        Ok(apply_finish(self.verdict.ops(), self.verdict.bytes(), output, self.max_output)?)
    }
}

fn panicked(_: Box<dyn std::any::Any + Send>) -> Fault {
    Fault::Trap { kind: TrapKind::Panic, message: "the streaming-text engine or a native transform panicked".into() }
}
