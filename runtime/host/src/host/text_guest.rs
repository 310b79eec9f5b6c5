//! Text-world guests: the host's streaming-text engine runs the stream, and the guest judges its
//! texts, one `process` call per batch, through the stream's `stream-state` resource.

use super::{ComponentStream, Guest};
use crate::bindings::text::exports::sluicegate::interceptor::text as wit;
use crate::interceptor::{Fault, InterceptorStream};
use crate::text::{Answer, ChannelKind, Item, Judge, Refusal, StopReason, TextStreamState};
use sluicegate_guest::{EndReason, StreamContext};

/// What a guard declared when its instance started.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    max_held: usize,
    prefilter: Vec<u8>,
}

impl From<wit::Settings> for Settings {
    fn from(s: wit::Settings) -> Self {
        Settings { max_held: s.max_held as usize, prefilter: s.prefilter.into_bytes() }
    }
}

/// A stream of a text guard: the engine, judged by the guest.
pub(super) fn open(
    stream: ComponentStream,
    settings: Settings,
    context: &StreamContext,
    max_output: usize,
) -> Box<dyn InterceptorStream> {
    Box::new(TextStreamState::new(GuestJudge { stream, settings }, context, max_output))
}

struct GuestJudge {
    stream: ComponentStream,
    settings: Settings,
}

fn kind(kind: ChannelKind) -> wit::Kind {
    match kind {
        ChannelKind::Content => wit::Kind::Content,
        ChannelKind::ToolArguments => wit::Kind::ToolArguments,
        ChannelKind::Reasoning => wit::Kind::Reasoning,
        ChannelKind::Refusal => wit::Kind::Refusal,
        ChannelKind::Other => wit::Kind::Other,
    }
}

fn answer(answer: wit::Answer) -> Answer {
    match answer {
        wit::Answer::Release(r) => Answer::Release { count: r.count as usize, text: r.text },
        wit::Answer::Keep(count) => Answer::Keep { count: count as usize },
        wit::Answer::Stop(s) => Answer::Stop {
            text: s.text,
            reason: match s.reason {
                wit::StopReason::ContentFilter => StopReason::ContentFilter,
                wit::StopReason::Length => StopReason::Length,
            },
        },
    }
}

impl Judge for GuestJudge {
    fn judge(&mut self, items: &[Item], answers: &mut Vec<Answer>) -> Result<(), Fault> {
        let lowered: Vec<wit::Item<'_>> = items
            .iter()
            .map(|i| wit::Item {
                channel: i.channel,
                kind: kind(i.kind),
                text: &i.text,
                last: i.last,
                pieces: i.pieces,
            })
            .collect();
        let got = self.stream.with_live(|live, resource, _| match (&live.guest, resource) {
            (Guest::Text(guest, _), Some(resource)) => {
                guest.sluicegate_interceptor_text().stream_state().call_process(&mut live.store, resource, &lowered)
            }
            _ => Ok(Vec::new()),
        })?;
        answers.extend(got.into_iter().map(answer));
        Ok(())
    }

    fn max_held(&self) -> usize {
        self.settings.max_held
    }

    fn prefilter(&self) -> &[u8] {
        &self.settings.prefilter
    }

    fn admit(&mut self) -> Result<Option<Refusal>, Fault> {
        let refusal = self.stream.with_live(|live, resource, _| match (&live.guest, resource) {
            (Guest::Text(guest, _), Some(resource)) => {
                guest.sluicegate_interceptor_text().stream_state().call_admit(&mut live.store, resource)
            }
            _ => Ok(None),
        })?;
        Ok(refusal.map(|r| Refusal {
            status: r.status,
            error_type: r.error_type,
            message: r.message,
            retry_after_seconds: r.retry_after_seconds,
        }))
    }

    fn finish(&mut self, reason: EndReason, output_tokens: Option<u64>) -> Result<(), Fault> {
        let tokens = output_tokens.map(|n| u32::try_from(n).unwrap_or(i32::MAX as u32).min(i32::MAX as u32));
        self.stream.with_live(|live, resource, _| match (&live.guest, resource) {
            (Guest::Text(guest, _), Some(resource)) => {
                let state = guest.sluicegate_interceptor_text().stream_state();
                state.call_finish(&mut live.store, resource, super::to_wit_reason(reason), tokens)?;
                resource.resource_drop(&mut live.store)
            }
            _ => Ok(()),
        })?;
        self.stream.resource = None;
        Ok(())
    }

    fn close(&mut self) -> Result<(), Fault> {
        self.stream.close()
    }
}
