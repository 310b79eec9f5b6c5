//! `redact`: replaces every e-mail address in event data with `[redacted]` (or the
//! `replacement` config value), including addresses that a model streams one token per event.
//!
//! Addresses are found with a small byte scanner, not a regex: local part
//! `[A-Za-z0-9._%+-]+`, then `@`, then dot-separated labels of `[A-Za-z0-9-]` ending in an
//! alphabetic top-level label of two or more letters.
//!
//! A guard of the text world: the host's streaming-text engine hands it decoded text (every
//! channel a model streams, in every format the host knows, and every other string value), so
//! an address written with JSON escapes (`\u0040`) or split over deltas is found all the same.
//! Of a channel's pending text, the trailing run of characters that could still become part of
//! an address is held back (at most [`scan::MAX_HELD`] bytes) and released, redacted or not,
//! with a later delta or before the channel closes.

use sluicegate_guest::Config;
use sluicegate_guest::text::{Flow, FromConfig, PerChannel, TextTransform};

mod scan;

pub use scan::{MAX_HELD, find_emails, find_emails_in_json, hold_point, redact_append, redact_into, redact_json_into};

/// The interceptor: [`RedactText`] over every stream's text.
pub type Redact = PerChannel<RedactText>;

/// The redactor as a streaming text transform.
#[derive(Debug, Clone)]
pub struct RedactText {
    replacement: String,
}

impl RedactText {
    pub fn new(replacement: impl Into<String>) -> Self {
        RedactText { replacement: replacement.into() }
    }
}

impl FromConfig for RedactText {
    fn from_config(config: &Config) -> Result<Self, String> {
        let replacement = config.get("replacement").unwrap_or("[redacted]");
        if replacement.contains('\r') {
            return Err("`replacement` must not contain CR".into());
        }
        Ok(RedactText::new(replacement))
    }
}

impl TextTransform for RedactText {
    type Channel = ();

    fn max_held(&self) -> usize {
        MAX_HELD
    }

    fn prefilter(&self) -> &[u8] {
        b"@"
    }

    fn step(&self, _: &mut (), pending: &str, last: bool, out: &mut String) -> Flow {
        let cut = if last { pending.len() } else { hold_point(pending) };
        redact_append(&pending[..cut], &self.replacement, out);
        Flow::Continue(cut)
    }
}

#[cfg(target_arch = "wasm32")]
sluicegate_guest::export_text!(Redact);
