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
//! A guard of the text world. On a response stream it counts the streamed text's tokens as they
//! pass (every channel the host's engine finds, in every format it knows: content, tool-call
//! arguments, reasoning), an estimate of one token per four bytes of text and at least one per
//! delta (a delta is usually one token), over the stream so far so that how the proxy batched the
//! events does not change it, and charges each batch's count with one store increment.
//! Whole texts (values repeated at a channel's end, other fields) are not metered. Once the key's
//! total reaches the budget, the next text ends the stream the way its format ends an answer cut
//! for length: OpenAI Chat `finish_reason: "length"` then `[DONE]`, Anthropic `message_delta`
//! with `stop_reason: "max_tokens"` then `message_stop`, Responses `response.incomplete` with
//! `incomplete_details.reason: "max_output_tokens"`, Gemini `MAX_TOKENS`. When the provider
//! reports the output tokens (the host reads its usage figures), the stream's charge is
//! corrected to that figure at its end. A key whose count cannot be read as a number ends the
//! stream the same way (fail closed); an unreachable store is a fault the host's policy handles.
//!
//! The budget is checked once per batch (the text world hands a batch's text over in one call):
//! the batch during which the budget runs out goes out whole, and the stream ends at its next
//! text. A stream learns of other streams' charges with each of its own increments, so with many
//! streams of one key the total can pass the budget by at most about one batch per live stream.
//! (Models stream a token per write, so a live stream's batches are a few tokens.)
//!
//! On a request (the request chain: stream status 0) it refuses a key whose budget is used up
//! with 429 and `Retry-After` (the window's remaining time); other requests pass unchanged.

use sha2::{Digest, Sha256};
use sluicegate_guest::text::{Answer, Item, Refusal, StopReason, TextGuard};
use sluicegate_guest::{Config, EndReason, Store, StreamContext};

/// The guard.
pub struct TokenBudget {
    tokens: i64,
    window_seconds: u32,
    /// The headers that name the tenant, in the order they are tried (lower case).
    key_headers: Vec<String>,
    store: Store,
}

/// One stream's account.
pub struct Account {
    key: String,
    /// The key's total as last read or returned by an increment; `None` until the first batch.
    /// `Some(i64::MAX)` when the stored count is not a number: nothing more goes out.
    used: Option<i64>,
    /// What this stream has charged.
    charged: i64,
    /// The streamed text metered so far: its bytes and its deltas.
    bytes: u64,
    deltas: u64,
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

/// The estimate of the tokens of a stream's text so far, `bytes` long, streamed in `deltas`
/// deltas: one per four bytes, and at least one per delta (a model streams about a token per
/// delta). It depends only on the text and its deltas, not on how the proxy batched them, so a
/// stream is charged the same however its events arrive.
pub fn estimate(bytes: u64, deltas: u64) -> i64 {
    i64::try_from(bytes.div_ceil(4).max(deltas)).unwrap_or(i64::MAX)
}

/// [`estimate`] of a stream streamed as `deltas`.
pub fn estimate_of<S: AsRef<str>>(deltas: &[S]) -> i64 {
    estimate(deltas.iter().map(|d| d.as_ref().len() as u64).sum(), deltas.len() as u64)
}

impl TokenBudget {
    /// The key's total now: read once per stream, then what this stream's increments return.
    fn used(&self, account: &mut Account) -> i64 {
        if let Some(used) = account.used {
            return used;
        }
        // A value that is not a count fails closed. A failed read is a fault the host applies the
        // policy to (under fail-open this batch passes); it is read again with the next batch.
        match self.store.get(&account.key) {
            Ok(entry) => *account.used.insert(entry.map_or(0, |e| e.value.parse().unwrap_or(i64::MAX))),
            Err(_) => i64::MAX,
        }
    }

    /// Adds `tokens` to the key's total (one store call for the whole batch).
    fn charge(&self, account: &mut Account, tokens: i64) {
        if tokens == 0 {
            return;
        }
        if let Ok(total) = self.store.increment(&account.key, tokens, self.window_seconds) {
            account.used = Some(total);
            account.charged += tokens;
        }
    }
}

impl TextGuard for TokenBudget {
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

    fn max_held(&self) -> usize {
        0
    }

    /// Whole texts are never metered: none needs handing over.
    fn prefilter(&self) -> &[u8] {
        &[0]
    }

    fn open(&self, context: &StreamContext) -> Account {
        let value = self.key_headers.iter().find_map(|header| {
            context.request_headers.iter().find(|(name, _)| name == header).map(|(_, value)| value.as_str())
        });
        Account { key: key_of(value), used: None, charged: 0, bytes: 0, deltas: 0 }
    }

    /// A request of a key whose budget is used up is refused with 429 until its window ends.
    fn admit(&self, account: &mut Account) -> Option<Refusal> {
        let (used, expires_in) = match self.store.get(&account.key) {
            Ok(entry) => entry.map_or((0, 0), |e| (e.value.parse().unwrap_or(i64::MAX), e.expires_in)),
            // A fault the host applies the policy to, whatever this answers.
            Err(_) => return None,
        };
        (used >= self.tokens).then(|| Refusal {
            status: 429,
            error_type: "budget_exhausted".into(),
            message: "the token budget of this key is used up".into(),
            retry_after_seconds: expires_in.max(1),
        })
    }

    fn process(&self, account: &mut Account, items: &[Item], answers: &mut Vec<Answer>) {
        let before = estimate(account.bytes, account.deltas);
        let mut left = self.tokens - self.used(account);
        for item in items {
            let text = &item.text;
            if item.is_whole() || text.is_empty() {
                answers.push(Answer::Keep { count: text.len() });
            } else if left <= 0 {
                answers.push(Answer::Stop { text: String::new(), reason: StopReason::Length });
            } else {
                let was = estimate(account.bytes, account.deltas);
                (account.bytes, account.deltas) =
                    (account.bytes + text.len() as u64, account.deltas + u64::from(item.pieces));
                left -= estimate(account.bytes, account.deltas) - was;
                answers.push(Answer::Keep { count: text.len() });
            }
        }
        let counted = estimate(account.bytes, account.deltas) - before;
        self.charge(account, counted);
    }

    fn finish(&self, account: &mut Account, reason: EndReason, output_tokens: Option<u64>) {
        // The provider's own count, when it gave one, settles the stream's charge.
        if let Some(reported) = output_tokens.filter(|_| reason == EndReason::UpstreamClosed) {
            let reported = i64::try_from(reported).unwrap_or(i64::MAX);
            self.charge(account, reported - account.charged);
        }
    }
}

#[cfg(target_arch = "wasm32")]
sluicegate_guest::export_text!(TokenBudget);
