//! The SDK example from the README, run natively through a chain: it must do what the README says.

use sluicegate::chain::Chain;
use sluicegate::native::Native;
use sluicegate::sse::Event;
use sluicegate_guest::{BatchView, Config, Interceptor, Replacement, StreamContext, VerdictBuilder};
use sluicegate_tests::run_chain;
use std::sync::Arc;

pub(crate) struct Shout;

impl Interceptor for Shout {
    type Stream = u64;

    fn new(_config: &Config) -> Result<Self, String> {
        Ok(Shout)
    }

    fn open(&self, _context: &StreamContext) -> u64 {
        0
    }

    fn process_batch(&self, seen: &mut u64, batch: BatchView<'_>, out: &mut VerdictBuilder) {
        for event in batch.iter() {
            *seen += 1;
            match event.data() {
                Some(data) if event.effective_type() == "message" => {
                    out.replace(&Replacement::data(&data.to_uppercase()))
                }
                _ => out.keep(),
            }
        }
    }
}

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
