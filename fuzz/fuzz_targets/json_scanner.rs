//! The JSON scanner that guests parse untrusted bodies and events with (the SDK's `json::Doc`),
//! and tool-guard's judgement on top of it: no panic on any text; every value's span (the root and
//! array elements) lies inside the text on character boundaries; a text the scanner accepts is JSON to serde_json too; and a
//! rewrite tool-guard makes of a JSON text is JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluicegate_guest::json::Doc;
use sluicegate_guest::{Config, Interceptor};
use tool_guard::ToolGuard;

fuzz_target!(|text: &str| {
    let mut doc = Doc::default();
    if doc.parse(text) {
        // serde_json refuses numbers beyond f64 and lone surrogates in `\u` escapes, which JSON's
        // grammar allows (and Python's parser, which MCP servers use, accepts): not disagreements.
        if let Err(e) = serde_json::from_str::<serde_json::Value>(text) {
            let allowed = ["number out of range", "surrogate", "unexpected end of hex escape"]
                .iter()
                .any(|why| e.to_string().contains(why));
            assert!(allowed, "accepted, but not JSON ({e}): {text:?}");
        }
        let mut pending: Vec<usize> = doc.root().into_iter().collect();
        while let Some(at) = pending.pop() {
            let node = doc.node(at);
            assert!(node.start <= node.end && node.end <= text.len());
            assert!(text.is_char_boundary(node.start) && text.is_char_boundary(node.end));
            pending.extend(doc.items(at));
        }
    }
    let guard = ToolGuard::new(&Config::new([("allow".to_string(), "count".to_string())])).expect("a valid config");
    for request in [true, false] {
        if let Some(Ok(rewritten)) = guard.judge(&mut doc, text, request) {
            assert!(doc.parse(&rewritten), "{text:?} became {rewritten:?}, which is not JSON");
        }
    }
});
