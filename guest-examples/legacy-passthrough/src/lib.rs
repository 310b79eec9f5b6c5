//! `legacy-passthrough`: a component of the legacy per-event world that keeps every event.
//! Written against the raw bindings, as a pre-batch interceptor would be.

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ path: "../../wit", world: "event-interceptor" });

    use exports::sluicegate::interceptor::event::{Action, Event, Guest};

    struct LegacyPassthrough;

    impl Guest for LegacyPassthrough {
        fn process_event(_event: Event) -> Action {
            Action::Keep
        }
    }

    export!(LegacyPassthrough);
}
