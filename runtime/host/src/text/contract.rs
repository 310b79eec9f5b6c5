//! The text world's contract, checked from outside: for any split of a text into deltas, a guard
//! must send the client what it sends for the text in one delta. `sluicegate check` runs a text
//! guard over random splits of sample texts in every format and, when one breaks the contract,
//! reports the smallest split that shows it (fewest cuts), so a hold-back rule that is subtly
//! wrong is found before it serves.

use super::samples::{self, Format};
use crate::batch::Batch;
use crate::interceptor::{Fault, Interceptor};
use sluicegate_contract::event::Event;
use sluicegate_guest::{EndReason, StreamContext};

/// A split that breaks the contract: where, and what came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// The format of the stream.
    pub format: Format,
    /// The deltas.
    pub pieces: Vec<String>,
    /// What the client reassembles from the split stream (or the fault it met).
    pub got: String,
    /// What it reassembles when the text comes in one delta.
    pub whole: String,
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: the text in one delta gives {:?}, but split as {:?} it gives {:?}: a hold-back rule \
             releases text it should hold, or holds what it should release",
            self.format.name(),
            self.whole,
            self.pieces,
            self.got
        )
    }
}

/// Texts a guard is tried on: the sample answer, words that each hold a typical value, and a
/// sentence with the values of the guard's configuration (each comma-separated part), so what it
/// was configured to find is in the texts.
fn texts(config_values: &[String]) -> Vec<String> {
    let mut texts = vec![
        samples::ANSWER.to_string(),
        "mail bob@example.com, task-abc-123 or sk-ant-REDACTME now".to_string(),
        "caf\u{e9} \u{1f600} a.b+c@mail.example.org.".to_string(),
    ];
    let parts: Vec<&str> =
        config_values.iter().flat_map(|v| v.split(',')).map(str::trim).filter(|p| !p.is_empty()).collect();
    if !parts.is_empty() {
        texts.push(format!("as noted: {} and more", parts.join(", then ")));
    }
    texts
}

/// The client's text from `pieces` in `format`, each event its own batch; a fault is the text.
fn run(interceptor: &dyn Interceptor, format: Format, pieces: &[String]) -> String {
    let context = StreamContext { stream_id: "check".into(), status: 200, ..StreamContext::default() };
    let outcome = (|| -> Result<Vec<Event>, Fault> {
        let mut stream = interceptor.open(&context)?;
        let mut out = Vec::new();
        for event in samples::stream(format, pieces) {
            let input: Batch = std::iter::once(event.clone()).collect();
            let mut output = Batch::new();
            let applied = stream.process(&input, &mut output)?;
            out.extend(if applied.unchanged { vec![event] } else { output.to_events() });
            if applied.ended {
                return Ok(out);
            }
        }
        let mut tail = Batch::new();
        stream.finish(EndReason::UpstreamClosed, &mut tail)?;
        out.extend(tail.to_events());
        Ok(out)
    })();
    match outcome {
        Ok(events) => samples::text_of(format, &events),
        Err(fault) => format!("(a fault: {fault})"),
    }
}

/// A small deterministic generator: the same splits on every run.
struct Splits(u64);

impl Splits {
    fn next(&mut self, below: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % below.max(1) as u64) as usize
    }
}

/// `text` cut at the character positions `cuts` (sorted, distinct, inside the text).
fn cut(text: &str, cuts: &[usize]) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut pieces = Vec::with_capacity(cuts.len() + 1);
    let mut from = 0;
    for &at in cuts.iter().chain(std::iter::once(&chars.len())) {
        pieces.push(chars[from..at].iter().collect());
        from = at;
    }
    pieces
}

/// The first break found over `tries` random splits of each text in each format, shrunk to the
/// fewest cuts that still break; `None` when the guard keeps the contract on all of them.
pub fn find_break(interceptor: &dyn Interceptor, tries: usize, config_values: &[String]) -> Option<Break> {
    let mut splits = Splits(0x9e37_79b9_7f4a_7c15);
    for format in Format::ALL {
        for text in texts(config_values) {
            let whole = run(interceptor, format, std::slice::from_ref(&text));
            let length = text.chars().count();
            for _ in 0..tries {
                let mut cuts: Vec<usize> = (0..1 + splits.next(12)).map(|_| 1 + splits.next(length - 1)).collect();
                cuts.sort_unstable();
                cuts.dedup();
                if run(interceptor, format, &cut(&text, &cuts)) == whole {
                    continue;
                }
                // Fewer cuts while it still breaks.
                let mut at = 0;
                while at < cuts.len() {
                    let mut fewer = cuts.clone();
                    fewer.remove(at);
                    if run(interceptor, format, &cut(&text, &fewer)) != whole {
                        cuts = fewer;
                    } else {
                        at += 1;
                    }
                }
                let pieces = cut(&text, &cuts);
                let got = run(interceptor, format, &pieces);
                return Some(Break { format, pieces, got, whole });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::TextInterceptor;
    use sluicegate_guest::Config;
    use sluicegate_guest::text::{Flow, FromConfig, PerChannel, TextTransform};

    /// The mistake a user made: holding back a fixed number of bytes instead of what may still
    /// become a match, so a value split across the cut is masked only in part.
    struct Careless;

    impl TextTransform for Careless {
        type Channel = ();
        fn max_held(&self) -> usize {
            8
        }
        fn step(&self, _: &mut (), pending: &str, last: bool, out: &mut String) -> Flow {
            // The last two characters: not what could still become `task-abc`.
            let cut = if last { pending.len() } else { pending.char_indices().rev().nth(1).map_or(0, |(at, _)| at) };
            out.push_str(&pending[..cut].replace("task-abc", "[id]"));
            Flow::Continue(cut)
        }
    }

    impl FromConfig for Careless {
        fn from_config(_: &Config) -> Result<Self, String> {
            Ok(Careless)
        }
    }

    #[test]
    fn a_careless_hold_back_is_found_with_its_smallest_split() {
        let careless = TextInterceptor::new("careless", PerChannel(Careless), 1 << 20);
        let found = find_break(&careless, 20, &[]).expect("the careless rule breaks");
        assert_eq!(found.pieces.len(), 2, "one cut shows it: {found}");
        assert!(found.whole.contains("[id]") && !found.got.contains("[id]-"), "{found}");
    }

    #[test]
    fn the_examples_keep_the_contract() {
        let redact = TextInterceptor::new("redact", PerChannel(redact::RedactText::new("[r]")), 1 << 20);
        assert_eq!(find_break(&redact, 10, &[]), None);
        let phrases = deny_phrases::PhraseFilter::new(["secret plan", "task-abc"]).unwrap();
        let deny = TextInterceptor::new("deny", PerChannel(phrases), 1 << 20);
        assert_eq!(find_break(&deny, 10, &["secret plan, task-abc".to_string()]), None);
    }
}
