//! The SSE parser on arbitrary bytes split at arbitrary points: it never panics, the split never
//! changes the events, re-encoding what it parsed parses back to the same events, and events
//! written from their wire form are the encoder's bytes.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluicegate::batch::Batch;
use sluicegate::sse::{Event, Parser, encode_batch, encode_event, write_batch};

/// Small, so that inputs reach it.
const LIMIT: usize = 4096;

fn parse(chunks: &[&[u8]], limit: usize) -> Vec<Event> {
    let mut parser = Parser::with_limit(limit);
    let mut events = Vec::new();
    // Every other chunk as `Bytes`, parsed in place; the rest copied in.
    for (i, chunk) in chunks.iter().enumerate() {
        if i % 2 == 0 {
            parser.feed_bytes(Bytes::copy_from_slice(chunk));
        } else {
            parser.feed(chunk);
        }
        events.extend(std::iter::from_fn(|| parser.next()));
    }
    events.extend(parser.finish());
    events
}

fuzz_target!(|input: (Vec<u8>, Vec<u16>)| {
    let (bytes, cuts) = input;
    let whole = parse(&[&bytes], LIMIT);
    let mut points: Vec<usize> = cuts.iter().map(|&c| c as usize % (bytes.len() + 1)).collect();
    points.sort();
    let mut chunks = Vec::new();
    let mut from = 0;
    for p in points {
        chunks.push(&bytes[from..p]);
        from = p;
    }
    chunks.push(&bytes[from..]);
    assert_eq!(parse(&chunks, LIMIT), whole, "the split changed the events");
    let mut encoded = Vec::new();
    for event in &whole {
        encode_event(&mut encoded, event);
    }
    // The limit counts bytes as received; each invalid UTF-8 byte comes out as U+FFFD (three
    // bytes), so a client reading the output must not be held to the same limit.
    assert_eq!(parse(&[&encoded], 4 * LIMIT), whole, "re-encoding changed the events");
    let mut parser = Parser::with_limit(LIMIT);
    let mut batch = Batch::new();
    for chunk in &chunks {
        parser.feed_bytes(Bytes::copy_from_slice(chunk));
        while parser.next_into(&mut batch) {}
    }
    let (mut written, mut encoded) = (Vec::new(), Vec::new());
    write_batch(&mut written, &batch);
    encode_batch(&mut encoded, batch.view());
    assert_eq!(written, encoded, "a wire form differs from the encoder's bytes");
});
