//! A text-world guard built against `wit/interceptor.wit` as it was at 0.1.2 (frozen in `wit/`
//! here): it writes every text it is given in upper case, releasing all of it at once. The host
//! speaks 0.1.3 (which added the host's `count`); this guard must load and work unchanged.

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ path: "wit", world: "text-interceptor" });

    use exports::sluicegate::interceptor::text::{
        Answer, EndReason, Guest, GuestStreamState, Item, Refusal, Release, Settings, StreamContext,
    };

    struct Upper;

    struct State;

    impl Guest for Upper {
        type StreamState = State;

        fn describe() -> Settings {
            Settings { max_held: 0, prefilter: String::new() }
        }
    }

    impl GuestStreamState for State {
        fn new(_context: StreamContext) -> Self {
            State
        }

        fn admit(&self) -> Option<Refusal> {
            None
        }

        fn process(&self, items: Vec<Item>) -> Vec<Answer> {
            items
                .into_iter()
                .map(|item| {
                    Answer::Release(Release { count: item.text.len() as u32, text: item.text.to_ascii_uppercase() })
                })
                .collect()
        }

        fn finish(&self, _reason: EndReason, _output_tokens: Option<u32>) {}
    }

    export!(Upper);
}
