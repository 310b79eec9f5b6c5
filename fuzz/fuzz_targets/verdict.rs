//! Decoding a guest's verdict: arbitrary op words and bytes against a fixed batch. `apply` never
//! panics, and whatever it accepts keeps the batch layout's guarantees.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluicegate::batch::Batch;
use sluicegate::sse::Event;
use sluicegate::verdict::apply;
use sluicegate_guest::BatchView;

fuzz_target!(|input: (Vec<u32>, Vec<u8>)| {
    let (ops, bytes) = input;
    let batch: Batch = [
        Event::message("one").with_type("t").with_id("1"),
        Event::comment(" keep-alive"),
        Event::message("two\nlines").with_retry(5),
        Event { id: Some("9".into()), ..Event::default() },
    ]
    .into_iter()
    .collect();
    let mut out = Batch::new();
    if let Ok(applied) = apply(batch.view(), &ops, &bytes, &mut out, 1 << 16) {
        let result = if applied.unchanged { &batch } else { &out };
        assert!(BatchView::new(result.bytes(), result.index()).is_ok(), "accepted output breaks the layout");
    }
});
