//! The patterns guard (every built-in detector and an operator's pattern) on arbitrary text cut
//! into arbitrary pieces: it never panics, never holds more than its cap, and the pieces give
//! exactly what the whole text gives (the contract that makes it exact across token deltas).
#![no_main]

use libfuzzer_sys::fuzz_target;
use patterns::Patterns;
use sluicegate_guest::Config;
use sluicegate_guest::text::{Flow, FromConfig, TextTransform};
use std::sync::OnceLock;

fn guard() -> &'static Patterns {
    static GUARD: OnceLock<Patterns> = OnceLock::new();
    GUARD.get_or_init(|| {
        let config = Config::new([("pattern.ticket".to_string(), r"TCK-[0-9]{6}\b".to_string())]);
        Patterns::from_config(&config).expect("the built-in detectors compile")
    })
}

/// `pieces` fed to `p` as one channel, then closed: what goes out, or `None` after a stop.
fn streamed(p: &Patterns, pieces: &[&str]) -> Option<String> {
    let (mut pending, mut out, mut before) = (String::new(), String::new(), None);
    for (i, piece) in pieces.iter().enumerate() {
        pending.push_str(piece);
        let last = i + 1 == pieces.len();
        match p.step(&mut before, &pending, last, &mut out) {
            Flow::Continue(n) => {
                assert!(pending.is_char_boundary(n) && (!last || n == pending.len()), "a bad release");
                pending.drain(..n);
                assert!(pending.len() <= p.cap(), "held {} bytes over the cap {}", pending.len(), p.cap());
            }
            Flow::Stop(_) => return None,
        }
    }
    Some(out)
}

fuzz_target!(|input: (String, Vec<u8>)| {
    let (text, cuts) = input;
    let p = guard();
    let whole = streamed(p, &[&text]);
    let mut pieces = Vec::new();
    let mut at = 0;
    for cut in cuts.iter().map(|c| usize::from(*c % 16) + 1).chain(std::iter::repeat(7)) {
        if at >= text.len() {
            break;
        }
        let mut end = (at + cut).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        pieces.push(&text[at..end]);
        at = end;
    }
    if pieces.is_empty() {
        pieces.push("");
    }
    assert_eq!(streamed(p, &pieces), whole, "a split changed the answer");
});
