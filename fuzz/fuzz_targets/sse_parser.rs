//! The SSE parser on arbitrary bytes split at arbitrary points: it never panics, the split never
//! changes the events, and re-encoding what it parsed parses back to the same events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluicegate::sse::{Event, Parser, encode_event};

fn parse(chunks: &[&[u8]]) -> Vec<Event> {
    let mut parser = Parser::with_limit(4096);
    let mut events = Vec::new();
    for chunk in chunks {
        parser.feed(chunk);
        events.extend(std::iter::from_fn(|| parser.next()));
    }
    events.extend(parser.finish());
    events
}

fuzz_target!(|input: (Vec<u8>, Vec<u16>)| {
    let (bytes, cuts) = input;
    let whole = parse(&[&bytes]);
    let mut points: Vec<usize> = cuts.iter().map(|&c| c as usize % (bytes.len() + 1)).collect();
    points.sort();
    let mut chunks = Vec::new();
    let mut from = 0;
    for p in points {
        chunks.push(&bytes[from..p]);
        from = p;
    }
    chunks.push(&bytes[from..]);
    assert_eq!(parse(&chunks), whole, "the split changed the events");
    let mut encoded = Vec::new();
    for event in &whole {
        encode_event(&mut encoded, event);
    }
    assert_eq!(parse(&[&encoded]), whole, "re-encoding changed the events");
});
