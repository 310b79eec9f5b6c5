//! `deny-phrases`: ends a stream at the first of the configured phrases (config `phrases`,
//! comma-separated), matched across token deltas, ASCII letters case-insensitively (other
//! characters exactly).
//!
//! The text before the phrase reaches the client and no part of the phrase does; the stream then
//! ends the way its format ends a filtered answer (OpenAI Chat `finish_reason:
//! "content_filter"` then `[DONE]`, Anthropic `stop_reason: "refusal"` then `message_stop`,
//! Responses `response.incomplete` with reason `content_filter`, any other stream an
//! `event: error`). Only the longest tail of the text that could still begin a phrase is held
//! back, so text with no phrase in sight is never delayed. A phrase in an event outside the
//! streamed text drops that event whole (its data could not be cut and stay valid) and ends the
//! stream the same way.

use sluicegate_guest::Config;
use sluicegate_guest::text::{Flow, FromConfig, PerChannel, StopReason, TextTransform};

/// The interceptor: [`PhraseFilter`] over every stream's text.
pub type DenyPhrases = PerChannel<PhraseFilter>;

/// The phrase matcher as a streaming text transform.
#[derive(Debug, Clone)]
pub struct PhraseFilter {
    phrases: Vec<String>,
    longest: usize,
}

impl PhraseFilter {
    /// A filter for `phrases` (empty ones are ignored); an error if none is left.
    pub fn new<'a>(phrases: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let phrases: Vec<String> =
            phrases.into_iter().map(str::trim).filter(|p| !p.is_empty()).map(str::to_string).collect();
        if phrases.is_empty() {
            return Err("`phrases` must list at least one phrase (comma-separated)".into());
        }
        let longest = phrases.iter().map(String::len).max().unwrap_or(0);
        Ok(PhraseFilter { phrases, longest })
    }

    /// Where the first phrase starts in `text`.
    pub fn find(&self, text: &str) -> Option<usize> {
        let bytes = text.as_bytes();
        (0..bytes.len()).filter(|&at| text.is_char_boundary(at)).find(|&at| {
            self.phrases
                .iter()
                .any(|p| bytes.get(at..at + p.len()).is_some_and(|w| w.eq_ignore_ascii_case(p.as_bytes())))
        })
    }

    /// How many bytes at the end of `text` could be the start of a phrase.
    fn partial_tail(&self, text: &str) -> usize {
        let bytes = text.as_bytes();
        (1..self.longest.min(bytes.len() + 1))
            .rev()
            .filter(|&n| text.is_char_boundary(bytes.len() - n))
            .find(|&n| {
                let tail = &bytes[bytes.len() - n..];
                self.phrases.iter().any(|p| p.len() > n && p.as_bytes()[..n].eq_ignore_ascii_case(tail))
            })
            .unwrap_or(0)
    }
}

impl TextTransform for PhraseFilter {
    type Channel = ();

    fn max_held(&self) -> usize {
        self.longest - 1
    }

    fn step(&self, _: &mut (), pending: &str, last: bool, out: &mut String) -> Flow {
        if let Some(at) = self.find(pending) {
            out.push_str(&pending[..at]);
            return Flow::Stop(StopReason::ContentFilter);
        }
        let cut = if last { pending.len() } else { pending.len() - self.partial_tail(pending) };
        out.push_str(&pending[..cut]);
        Flow::Continue(cut)
    }
}

impl FromConfig for PhraseFilter {
    fn from_config(config: &Config) -> Result<Self, String> {
        PhraseFilter::new(config.get("phrases").unwrap_or("").split(','))
    }
}

#[cfg(target_arch = "wasm32")]
sluicegate_guest::export_text!(DenyPhrases);
