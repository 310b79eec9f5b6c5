//! The host's streaming-text engine on arbitrary events (JSON or not, any format's shape, any
//! escapes), in arbitrary batches, with `redact` as the guard: it never panics, never faults (the
//! guard keeps its contract, so a fault would be the engine's), every verdict it writes is
//! accepted, and an event whose data was JSON still carries JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluicegate::batch::Batch;
use sluicegate::interceptor::Interceptor;
use sluicegate::sse::Event;
use sluicegate::text::TextInterceptor;
use sluicegate_guest::text::PerChannel;
use sluicegate_guest::{EndReason, StreamContext};

fuzz_target!(|input: (Vec<(Option<String>, String)>, u8)| {
    let (events, size) = input;
    let events: Vec<Event> = events
        .into_iter()
        .filter(|(name, data)| !data.contains('\r') && name.as_ref().is_none_or(|n| !n.contains(['\r', '\n'])))
        .map(|(name, data)| match name {
            Some(name) => Event::message(data).with_type(name),
            None => Event::message(data),
        })
        .collect();
    let guard = TextInterceptor::new("fuzz", PerChannel(redact::RedactText::new("[r]")), 1 << 24);
    let mut stream = guard.open(&StreamContext { status: 200, ..StreamContext::default() }).unwrap();
    for chunk in events.chunks(usize::from(size.max(1))) {
        let input: Batch = chunk.iter().cloned().collect();
        let mut output = Batch::new();
        let applied =
            stream.process(&input, &mut output).expect("the engine never faults under a guard that keeps its contract");
        let out = if applied.unchanged { input.to_events() } else { output.to_events() };
        let was_json = chunk
            .iter()
            .filter_map(|e| e.data.as_deref())
            .all(|d| serde_json::from_slice::<serde_json::Value>(d).is_ok());
        if was_json && !applied.ended {
            for data in out.iter().filter_map(|e| e.data.as_deref()) {
                assert!(
                    serde_json::from_slice::<serde_json::Value>(data).is_ok(),
                    "JSON in, not JSON out: {:?}",
                    String::from_utf8_lossy(data)
                );
            }
        }
    }
    let mut tail = Batch::new();
    stream.finish(EndReason::UpstreamClosed, &mut tail).expect("finish");
});
