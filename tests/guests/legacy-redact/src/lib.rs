//! A legacy per-event guest doing what the chain `[example:drop, example:redact]` does: drop
//! `ping` events, redact e-mail addresses in the data of the others. The shim must make the two
//! indistinguishable.

#[cfg(target_arch = "wasm32")]
#[path = "../../../../guest-examples/redact/src/scan.rs"]
mod scan;

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ path: "../../../wit", world: "event-interceptor" });

    use super::scan;
    use exports::sluicegate::interceptor::event::{Action, Event, Guest};

    struct LegacyRedact;

    impl Guest for LegacyRedact {
        fn process_event(event: Event) -> Action {
            if event.comment || event.data.is_none() {
                return Action::Keep;
            }
            let kind = event.event_type.as_deref().filter(|t| !t.is_empty()).unwrap_or("message");
            if kind == "ping" {
                return Action::Drop;
            }
            let mut out = String::new();
            match event.data.as_deref() {
                Some(data) if scan::redact_json_into(data, "[redacted]", &mut out) => {
                    Action::Replace(vec![Event { data: Some(out), ..event }])
                }
                _ => Action::Keep,
            }
        }
    }

    export!(LegacyRedact);
}
