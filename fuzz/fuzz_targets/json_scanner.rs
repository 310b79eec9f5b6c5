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
        assert!(serde_json::from_str::<serde_json::Value>(text).is_ok(), "accepted, but not JSON: {text:?}");
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
            assert!(serde_json::from_str::<serde_json::Value>(&rewritten).is_ok(), "{text:?} became {rewritten:?}");
        }
    }
});
