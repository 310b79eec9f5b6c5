//! What the proxy reads of untrusted bytes before any interceptor does: the sniffer that tells an
//! event stream, JSON lines, text and binary apart, the character decoders, and the canonical
//! path. No panic on any input; a complete body always gets a shape; a stream decodes, however it
//! is split, to what the whole body decodes to when that is valid; a canonical path is its own
//! canonical path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluicegate::proxy::fuzzing;

fuzz_target!(|input: (Vec<u8>, u8, Option<String>)| {
    let (bytes, cut, charset) = input;
    assert!(fuzzing::sniff(&bytes, true).is_some());
    let _ = fuzzing::sniff(&bytes[..(cut as usize).min(bytes.len())], false);
    let _ = fuzzing::decode(&bytes, charset.as_deref());
    if let Some(whole) = fuzzing::decode(&bytes, None) {
        let split = (cut as usize).max(1);
        let chunks: Vec<&[u8]> = bytes.chunks(split).collect();
        let streamed = String::from_utf8_lossy(&fuzzing::decode_stream(&chunks)).into_owned();
        // A UTF-8 mark stays in a stream, for its parser to drop.
        assert!(streamed == whole || streamed == format!("\u{feff}{whole}"), "{streamed:?} against {whole:?}");
    }
    if let Ok(path) = std::str::from_utf8(&bytes)
        && let Some(canonical) = fuzzing::normalise(path)
    {
        assert_eq!(fuzzing::normalise(&canonical).as_deref(), Some(canonical.as_str()), "{path:?}");
    }
});
