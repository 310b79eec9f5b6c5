//! What holding text back costs a reader: on a realistic answer streamed one token per event,
//! how many events go out with text held, and how many tokens later each byte of the answer
//! reaches the client than it would without the guardrail (p50, p99, max). Counted in tokens, so
//! the figures do not depend on the machine; at a model's 50 tokens/s one token is 20 ms.
//!
//! `cargo run --release -p sluicegate-benches --bin holdback`

use deny_phrases::PhraseFilter;
use patterns::Patterns;
use redact::RedactText;
use sluicegate::batch::Batch;
use sluicegate::text::{GuardJudge, TextEngine};
use sluicegate_guest::text::{FromConfig, PerChannel, TextTransform};
use sluicegate_guest::{Config, StreamContext, VerdictBuilder};
use std::sync::Arc;

const WITH_ADDRESSES: &str = "Thanks for reaching out! You can contact our support team at support@example.com, \
    or write to jane.doe@corp.example.org for billing questions. Our office hours are 9am to 5pm, Monday \
    through Friday, and we usually answer within one business day. If the matter is urgent, call the front \
    desk and ask for the duty manager; for security reports, security@example.com is read around the clock. ";
const WITHOUT_AT: &str = "The weather in Paris will stay mild this week, with light rain on Tuesday and \
    sunny spells from Thursday onwards. Temperatures range from 9 to 16 degrees, and the wind stays light. \
    Pack a light jacket and an umbrella, and check the forecast again before the weekend. ";

const WITH_VALUES: &str = "Here is what I found. Reach Ann at ann.lee@example.com or +44 20 7946 0958; her card \
    4111 1111 1111 1111 and IBAN GB82 WEST 1234 5698 7654 32 are on file, SSN 123-45-6789. The build host is \
    10.0.0.12 (fe80::1ff:fe23:4567:890a), the deploy key sk-proj-abcdefghijklmnopqrstuvwx1234 and the AWS id \
    AKIAABCDEFGHIJKLMNOP. Rotate them today, and tell the team once it is done. ";

fn report<T>(label: &str, transform: &Arc<PerChannel<T>>, answer: &str)
where
    T: TextTransform + FromConfig + Send + Sync + 'static,
    T::Channel: Send,
{
    let chunks: Vec<sluicegate::sse::Event> = sluicegate_benches::token_chunks(answer);
    let mut judge = GuardJudge::new(transform.clone(), &StreamContext::default());
    let mut stream = TextEngine::new();
    let mut verdict = VerdictBuilder::new();
    // (input bytes that have arrived, input bytes released) after each event.
    let mut arrived = 0;
    let mut timeline = Vec::new();
    for chunk in &chunks {
        let input: Batch = std::iter::once(chunk.clone()).collect();
        verdict.clear();
        stream.process(&mut judge, input.view(), &mut verdict).expect("the examples keep their contract");
        arrived += sluicegate_benches::chunk_text(chunk).len();
        timeline.push((arrived, arrived - stream.held_bytes()));
    }
    // Each byte's delay: from the event that brought it to the first event after which it is
    // released (a byte still held at the end goes out when the channel closes, one event later).
    let mut delays = Vec::new();
    for (byte, _) in answer.char_indices().flat_map(|(i, c)| (i..i + c.len_utf8()).map(move |b| (b, c))) {
        let came = timeline.iter().position(|&(a, _)| a > byte).unwrap();
        let left = timeline.iter().position(|&(_, r)| r > byte).unwrap_or(timeline.len());
        delays.push(left - came);
    }
    delays.sort_unstable();
    let at = |q: f64| delays[((delays.len() - 1) as f64 * q).round() as usize];
    let stats = stream.stats();
    println!(
        "{label:<40} {:>4} events, {:>3} with text held ({:>4.1}%), delay in tokens p50 {} p99 {} max {}, most held {} bytes",
        chunks.len(),
        stats.held_batches,
        100.0 * stats.held_batches as f64 / chunks.len() as f64,
        at(0.5),
        at(0.99),
        delays.last().unwrap(),
        stats.max_held_bytes
    );
}

fn main() {
    let redact = Arc::new(PerChannel(RedactText::new("[redacted]")));
    report("redact, answer with addresses", &redact, WITH_ADDRESSES);
    report("redact, answer without `@`", &redact, WITHOUT_AT);
    let phrases = Arc::new(PerChannel(PhraseFilter::new(["secret plan", "internal use only"]).unwrap()));
    report("deny-phrases, answer with addresses", &phrases, WITH_ADDRESSES);
    report("deny-phrases, answer without `@`", &phrases, WITHOUT_AT);
    // Every built-in detector.
    let patterns = Arc::new(PerChannel(Patterns::from_config(&Config::default()).expect("the built-ins compile")));
    report("patterns, answer with addresses", &patterns, WITH_ADDRESSES);
    report("patterns, answer without `@`", &patterns, WITHOUT_AT);
    report("patterns, answer with every detector's values", &patterns, WITH_VALUES);
    // Without `email`, a word is no longer a possible start of a match.
    let others = "private-key, jwt, api-key, iban, card, ssn, phone, ipv6, ipv4";
    let config = Config::new([("detect".to_string(), others.to_string())]);
    let patterns = Arc::new(PerChannel(Patterns::from_config(&config).expect("the built-ins compile")));
    report("patterns without email, answer without `@`", &patterns, WITHOUT_AT);
    report("patterns without email, with values", &patterns, WITH_VALUES);
}
