//! The SDK example from the README (compiled from the README itself), run natively through a
//! chain: it must do what the README says.

use sluicegate::chain::Chain;
use sluicegate::native::Native;
use sluicegate::sse::Event;
use sluicegate_guest::{BatchView, Config, Interceptor, StreamContext, VerdictBuilder};
use sluicegate_tests::run_chain;
use std::sync::Arc;

/// The README's example, taken from the README by `tests/build.rs`: what it shows is what is
/// compiled and tested here.
#[allow(unreachable_pub)] // the README's crate exports it
mod readme {
    include!(concat!(env!("OUT_DIR"), "/readme_example.rs"));
}
use readme::Shout;

#[test]
fn readme_example_uppercases_messages_only() {
    let shout = Native::<Shout>::new("native:shout", &Config::default(), 1 << 20).unwrap();
    let chain = Chain::new(vec![Arc::new(shout)]);
    let input = vec![Event::message("hi").with_id("1"), Event::message("x").with_type("ping"), Event::comment("c")];
    assert_eq!(
        run_chain(&chain, &[input]),
        vec![Event::message("HI").with_id("1"), Event::message("x").with_type("ping"), Event::comment("c")]
    );
}

#[test]
fn native_panics_are_faults_not_crashes() {
    struct Panics;
    impl Interceptor for Panics {
        type Stream = ();
        fn new(_: &Config) -> Result<Self, String> {
            Ok(Panics)
        }
        fn open(&self, _: &StreamContext) {}
        fn process_batch(&self, _: &mut (), _: BatchView<'_>, _: &mut VerdictBuilder) {
            panic!("boom");
        }
    }
    let chain =
        Chain::new(vec![Arc::new(Native::<Panics>::new("native:panics", &Config::default(), 1 << 20).unwrap())]);
    let mut stream = chain.open(&sluicegate_tests::context()).unwrap();
    let mut batch = [Event::message("a")].into_iter().collect();
    let err = stream.process(&mut batch).unwrap_err();
    assert!(err.to_string().contains("native interceptor panicked: boom"), "{err}");
}
