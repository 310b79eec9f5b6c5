//! `token-budget`: a budget of output tokens per API key and time window, kept in the host's
//! store (shared by every replica when the store is Redis), charged as a stream passes and
//! enforced in the middle of a stream.
//!
//! Config: `tokens` (the budget, required), `window_seconds` (default 3600: the window starts at
//! a key's first charge and the count starts again when it ends), `key_header` (default
//! `authorization`: the request header that names the tenant; several, comma-separated, are
//! tried in order, e.g. `authorization, x-api-key` for OpenAI-style and Anthropic-style
//! clients on one route). The key is stored as the
//! SHA-256 of the header's value (the proxy gives credentials to interceptors as digests only,
//! and those are hashed again); requests without the header share the key `anonymous`.
//!
//! On a response stream (through the SDK's streaming-text layer: OpenAI Chat and Responses,
//! Anthropic Messages) it counts the streamed text's tokens as they pass, an estimate of one
//! token per four bytes of text, at least one per delta (a delta is usually one token), and
//! charges each batch's count with one store increment. Once the key's total reaches the
//! budget, the next text ends the stream the way its format ends an answer cut for length:
//! OpenAI Chat `finish_reason: "length"` then `[DONE]`, Anthropic `message_delta` with
//! `stop_reason: "max_tokens"` then `message_stop`, Responses `response.incomplete` with
//! `incomplete_details.reason: "max_output_tokens"`. When the provider reports the output
//! tokens (Anthropic's `message_delta` usage, Responses' `response.completed`, OpenAI Chat's
//! usage chunk), the stream's charge is corrected to that figure at its end.
//!
//! A stream learns of other streams' charges with each of its own increments, so with many
//! streams of one key the total can pass the budget by at most about one batch per live stream.
//!
//! On a request (the request chain: stream status 0) it refuses a key whose budget is used up
//! with 429 and `retry_after_seconds` (the window's remaining time), which the proxy sends as
//! `Retry-After`; other requests pass unchanged.

use sha2::{Digest, Sha256};
use sluicegate_guest::text::{Flow, StopReason, TextStream, TextTransform};
use sluicegate_guest::{
    BatchView, Config, EndReason, Interceptor, NewEvent, Store, StoreError, StreamContext, VerdictBuilder,
};
use std::cell::Cell;

/// The interceptor.
pub struct TokenBudget {
    tokens: i64,
    window_seconds: u32,
    /// The headers that name the tenant, in the order they are tried (lower case).
    key_headers: Vec<String>,
    store: Store,
}

/// One stream's account.
pub struct Account {
    text: TextStream<()>,
    key: String,
    /// A request (status 0), not a response.
    request: bool,
    /// The key's total as last read or returned by an increment; `None` until the first batch.
    used: Option<i64>,
    /// What this stream has charged.
    charged: i64,
    /// The output tokens the provider reported, if it did.
    reported: Option<i64>,
}

impl TokenBudget {
    fn remaining(&self, used: i64) -> i64 {
        self.tokens - used
    }
}

/// The store key of a header value.
pub fn key_of(value: Option<&str>) -> String {
    match value {
        None => "anonymous".into(),
        Some(value) => {
            let digest = Sha256::digest(value.as_bytes());
            let mut key = String::with_capacity(4 + 64);
            key.push_str("key:");
            for byte in digest {
                key.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
                key.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
            }
            key
        }
    }
}

/// The estimate of a piece of streamed text's tokens: one per four bytes, at least one.
pub fn estimate(text: &str) -> i64 {
    (text.len() as u64).div_ceil(4).max(1) as i64
}

/// The output-token count in a usage object of `raw` JSON, if there is one: Anthropic's and
/// Responses' `output_tokens`, OpenAI Chat's `completion_tokens`.
pub fn reported_tokens(raw: &str) -> Option<i64> {
    ["\"output_tokens\":", "\"completion_tokens\":"].iter().find_map(|field| {
        let at = raw.find(field)? + field.len();
        let digits: String = raw[at..].trim_start().chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

/// The text transform of one batch: it meters the streamed text against what is left.
struct Meter {
    left: Cell<i64>,
    counted: Cell<i64>,
    reported: Cell<Option<i64>>,
}

impl TextTransform for Meter {
    type Channel = ();

    fn max_held(&self) -> usize {
        0
    }

    fn passes(&self, text: &str) -> bool {
        !text.contains("_tokens\"")
    }

    fn step(&self, _: &mut (), pending: &str, _last: bool, out: &mut String) -> Flow {
        if pending.is_empty() {
            return Flow::Continue(0);
        }
        if self.left.get() <= 0 {
            return Flow::Stop(StopReason::Length);
        }
        let tokens = estimate(pending);
        self.counted.set(self.counted.get() + tokens);
        self.left.set(self.left.get() - tokens);
        out.push_str(pending);
        Flow::Continue(pending.len())
    }

    fn whole(&self, text: &str, out: &mut String) -> Flow {
        if let Some(n) = reported_tokens(text) {
            self.reported.set(Some(self.reported.get().map_or(n, |r| r.max(n))));
        }
        out.push_str(text);
        Flow::Continue(text.len())
    }
}

impl Interceptor for TokenBudget {
    type Stream = Account;

    fn new(config: &Config) -> Result<Self, String> {
        let tokens = config
            .get("tokens")
            .ok_or("`tokens` (the budget) is required")?
            .parse::<i64>()
            .ok()
            .filter(|&t| t > 0)
            .ok_or("`tokens` must be a positive integer")?;
        let window_seconds = match config.get("window_seconds") {
            None => 3600,
            Some(w) => w.parse::<u32>().ok().filter(|&w| w > 0).ok_or("`window_seconds` must be a positive integer")?,
        };
        let key_headers: Vec<String> = config
            .get("key_header")
            .unwrap_or("authorization")
            .split(',')
            .map(|name| name.trim().to_ascii_lowercase())
            .filter(|name| !name.is_empty())
            .collect();
        if key_headers.is_empty() {
            return Err("`key_header` must name at least one header".into());
        }
        Ok(TokenBudget { tokens, window_seconds, key_headers, store: config.store().clone() })
    }

    fn open(&self, context: &StreamContext) -> Account {
        let value = self.key_headers.iter().find_map(|header| {
            context.request_headers.iter().find(|(name, _)| name == header).map(|(_, value)| value.as_str())
        });
        Account {
            text: TextStream::new(),
            key: key_of(value),
            request: context.status == 0,
            used: None,
            charged: 0,
            reported: None,
        }
    }

    fn process_batch(&self, account: &mut Account, batch: BatchView<'_>, out: &mut VerdictBuilder) {
        let used = match account.used {
            Some(used) => used,
            None => match self.store.get(&account.key) {
                Ok(entry) => {
                    let (used, expires_in) =
                        entry.map_or((0, 0), |e| (e.value.parse().unwrap_or(i64::MAX), e.expires_in));
                    if account.request {
                        return self.admit(used, expires_in, batch, out);
                    }
                    used
                }
                // Unavailable is a fault the host applies the policy for; anything else, too.
                Err(e) => return fail(e, out),
            },
        };
        if account.request {
            return; // admitted at its first (only) batch; an empty verdict keeps everything
        }
        let meter = Meter { left: Cell::new(self.remaining(used)), counted: Cell::new(0), reported: Cell::new(None) };
        account.text.process_batch(&meter, batch, out);
        account.reported = meter.reported.get().or(account.reported);
        account.used = Some(used);
        self.charge(account, meter.counted.get());
    }

    fn finish(&self, account: &mut Account, reason: EndReason, out: &mut VerdictBuilder) {
        if account.request {
            return;
        }
        let meter = Meter {
            left: Cell::new(self.remaining(account.used.unwrap_or(0))),
            counted: Cell::new(0),
            reported: Cell::new(None),
        };
        account.text.finish(&meter, out);
        self.charge(account, meter.counted.get());
        // The provider's own count, when it gave one, settles the stream's charge.
        if let Some(reported) = account.reported.filter(|_| reason == EndReason::UpstreamClosed) {
            self.charge(account, reported - account.charged);
        }
    }
}

impl TokenBudget {
    /// Adds `tokens` to the key's total (one store call for the whole batch).
    fn charge(&self, account: &mut Account, tokens: i64) {
        if tokens == 0 {
            return;
        }
        // An unavailable store: the host applies the fault policy. Any other error cannot happen
        // once the key was read as a count; the next read will find it.
        if let Ok(total) = self.store.increment(&account.key, tokens, self.window_seconds) {
            account.used = Some(total);
            account.charged += tokens;
        }
    }

    /// A request: refused with 429 if the key's budget is used up.
    fn admit(&self, used: i64, expires_in: u32, batch: BatchView<'_>, out: &mut VerdictBuilder) {
        if self.remaining(used) > 0 {
            return;
        }
        let data = format!(
            "{{\"error\":{{\"type\":\"budget_exhausted\",\"message\":\"the token budget of this key is used up\",\"retry_after_seconds\":{}}}}}",
            expires_in.max(1)
        );
        // The refusal: its event type is the status, its data the body (see the proxy's docs on
        // request chains); the rest of the batch is dropped by the end.
        let _ = batch;
        out.replace_with(&NewEvent::message(&data).with_type("429"));
        out.end();
    }
}

/// A store call failed: the host treats an unavailable store as this interceptor's fault. Any
/// other error (the key holds something that is not a count) fails closed: the stream ends.
fn fail(e: StoreError, out: &mut VerdictBuilder) {
    let _ = e;
    out.insert(
        &NewEvent::message(
            "{\"error\":{\"type\":\"budget_unavailable\",\"message\":\"the token budget could not be read\"}}",
        )
        .with_type("error"),
    );
    out.end();
}

#[cfg(target_arch = "wasm32")]
sluicegate_guest::export!(TokenBudget);
