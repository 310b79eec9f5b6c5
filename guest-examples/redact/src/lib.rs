//! `redact`: replaces every e-mail address in event data with `[redacted]` (or the
//! `replacement` config value).
//!
//! Addresses are found with a small byte scanner, not a regex: local part
//! `[A-Za-z0-9._%+-]+`, then `@`, then dot-separated labels of `[A-Za-z0-9-]` ending in an
//! alphabetic top-level label of two or more letters. Matches are ASCII and are replaced by
//! ASCII, so the data stays valid UTF-8; inside JSON strings, a backslash escape that touches
//! an address (`\n`, `\u00e9`) is left intact, so JSON data stays valid JSON with the default
//! replacement. Addresses written with JSON escapes (`\u0040` for `@`) are not recognised.

use sluicegate_guest::{BatchView, Config, Interceptor, Replacement, StreamContext, VerdictBuilder};

mod scan;

pub use scan::{find_emails, redact_into};

pub struct Redact {
    replacement: String,
}

/// Per-stream scratch space, reused so that a redaction does not allocate.
#[derive(Default)]
pub struct Scratch(String);

impl Interceptor for Redact {
    type Stream = Scratch;

    fn new(config: &Config) -> Result<Self, String> {
        let replacement = config.get("replacement").unwrap_or("[redacted]").to_string();
        if replacement.contains('\r') {
            return Err("`replacement` must not contain CR".into());
        }
        Ok(Redact { replacement })
    }

    fn open(&self, _context: &StreamContext) -> Scratch {
        Scratch::default()
    }

    fn process_batch(&self, scratch: &mut Scratch, batch: BatchView<'_>, out: &mut VerdictBuilder) {
        for event in batch.iter() {
            match event.data() {
                Some(data) if redact_into(data, &self.replacement, &mut scratch.0) => {
                    out.replace(&Replacement::data(&scratch.0));
                }
                _ => out.keep(),
            }
        }
    }
}

#[cfg(target_arch = "wasm32")]
sluicegate_guest::export!(Redact);
