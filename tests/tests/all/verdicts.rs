//! What each verdict op does, and how the host checks a verdict, through `apply` directly.

use sluicegate::batch::Batch;
use sluicegate::sse::Event;
use sluicegate::verdict::{Applied, VerdictError, apply, apply_finish};
use sluicegate_guest::abi::*;
use sluicegate_guest::{Field, NewEvent, Problem, Replacement, VerdictBuilder};

const MAX: usize = 1 << 20;

fn input() -> Batch {
    [
        Event::message("one").with_type("greeting").with_id("1"),
        Event::comment(" keep-alive"),
        Event::message("two").with_id("2").with_retry(500),
        Event::message("three"),
    ]
    .into_iter()
    .collect()
}

fn run(build: impl FnOnce(&mut VerdictBuilder)) -> Result<(Applied, Vec<Event>), VerdictError> {
    let input = input();
    let mut verdict = VerdictBuilder::new();
    build(&mut verdict);
    verdict.complete(input.len());
    let mut out = Batch::new();
    let applied = apply(input.view(), verdict.ops(), verdict.bytes(), &mut out, MAX)?;
    Ok((applied, if applied.unchanged { input.to_events() } else { out.to_events() }))
}

#[test]
fn keeping_everything_is_free_and_unchanged() {
    let (applied, out) = run(|_| {}).unwrap();
    assert_eq!(applied, Applied { unchanged: true, ..Applied::default() });
    assert_eq!(out, input().to_events());
    let mut v = VerdictBuilder::new();
    v.keep();
    v.keep_n(3);
    assert_eq!(v.ops(), [OP_KEEP, 4], "runs of keep merge into one op");
    v.complete(4);
    assert_eq!(v.ops(), [] as [u32; 0], "keeping everything is the empty verdict");
    assert!(apply(input().view(), &[], &[], &mut Batch::new(), MAX).unwrap().unchanged);
}

#[test]
fn applied_counts_what_the_verdict_did() {
    let (applied, out) = run(|v| {
        v.drop();
        v.replace(&Replacement::data("new"));
        v.insert(&NewEvent::message("extra"));
        v.insert(&NewEvent::message("more"));
        v.drop();
    })
    .unwrap();
    assert_eq!(applied, Applied { dropped: 2, replaced: 1, inserted: 2, ..Applied::default() });
    // The two dropped events carried ids, which stay as id-only entries; one replaced, two
    // inserted, the last kept.
    assert_eq!(out.len(), 6, "{out:?}");
}

#[test]
fn drop_keeps_the_id_and_retry_of_what_it_drops() {
    let (_, out) = run(|v| v.drop_n(4)).unwrap();
    assert_eq!(
        out,
        vec![
            Event { id: Some("1".into()), ..Event::default() },
            Event { id: Some("2".into()), retry: Some(500), ..Event::default() }
        ]
    );
}

#[test]
fn replace_inherits_sets_and_removes_fields() {
    let (_, out) = run(|v| {
        v.replace(&Replacement::data("ONE"));
        v.keep();
        v.replace(&Replacement { id: Field::Remove, event_type: Field::Set("renamed"), ..Replacement::data("TWO") });
    })
    .unwrap();
    assert_eq!(
        out,
        vec![
            Event::message("ONE").with_type("greeting").with_id("1"),
            Event::comment(" keep-alive"),
            Event::message("TWO").with_type("renamed").with_retry(500),
            Event::message("three"),
        ]
    );
}

#[test]
fn insert_before_and_after() {
    let (_, out) = run(|v| {
        v.insert(&NewEvent::message("before").with_type("note"));
        v.keep();
        v.insert(&NewEvent::comment("after"));
        v.drop_n(3);
    })
    .unwrap();
    assert_eq!(
        out,
        vec![
            Event::message("before").with_type("note"),
            Event::message("one").with_type("greeting").with_id("1"),
            Event::comment("after"),
            Event { id: Some("2".into()), retry: Some(500), ..Event::default() },
        ]
    );
}

#[test]
fn end_with_a_final_event_drops_the_rest() {
    let (applied, out) = run(|v| {
        v.keep();
        v.insert(&NewEvent::message("bye").with_type("error"));
        v.end();
    })
    .unwrap();
    assert!(applied.ended);
    // The rest is dropped by `complete`, which keeps only ids and retries.
    assert_eq!(
        out[..2],
        [Event::message("one").with_type("greeting").with_id("1"), Event::message("bye").with_type("error")]
    );
}

#[test]
fn finish_verdicts_may_only_insert() {
    let mut out = Batch::new();
    let mut v = VerdictBuilder::new();
    v.insert(&NewEvent::message("last"));
    v.complete(0);
    assert!(apply_finish(v.ops(), v.bytes(), &mut out, MAX).unwrap().ended);
    assert_eq!(out.to_events(), vec![Event::message("last")]);
    assert_eq!(apply_finish(&[OP_KEEP, 1], &[], &mut out, MAX), Err(VerdictError::NotInsertOnly { at: 0 }));
}

fn raw(ops: &[u32], bytes: &[u8]) -> Result<Applied, VerdictError> {
    apply(input().view(), ops, bytes, &mut Batch::new(), MAX)
}

fn event_words(op: u32, fields: u32, spans: [u32; 6], retry: u32) -> Vec<u32> {
    let mut w = vec![op, fields];
    w.extend_from_slice(&spans);
    w.push(retry);
    w
}

#[test]
fn invalid_verdicts_are_rejected_precisely() {
    assert_eq!(raw(&[OP_KEEP, 3], &[]), Err(VerdictError::CountMismatch { consumed: 3, batch_len: 4 }));
    assert_eq!(raw(&[OP_KEEP, 5], &[]), Err(VerdictError::Overrun { at: 0, batch_len: 4 }));
    assert_eq!(raw(&[OP_KEEP], &[]), Err(VerdictError::Truncated { at: 0 }));
    assert_eq!(raw(&[OP_KEEP, 4, 7], &[]), Err(VerdictError::UnknownOp { at: 2, op: 7 }));
    assert_eq!(raw(&[OP_END, OP_KEEP, 4], &[]), Err(VerdictError::EndNotLast { at: 1 }));
    assert_eq!(raw(&[OP_INSERT, HAS_DATA, 0, 0], &[]), Err(VerdictError::Truncated { at: 0 }));
    // A replacement past the last event, even by a comment, then a keep: refused, not a panic
    // (the fuzzer found this one).
    let comment_past_the_end =
        [vec![OP_KEEP, 4], event_words(OP_REPLACE, COMMENT, [0, 0, 0, 1, 0, 0], 0), vec![OP_KEEP, 1]];
    assert_eq!(raw(&comment_past_the_end.concat(), b"x"), Err(VerdictError::Overrun { at: 2, batch_len: 4 }));
    let bad = |fields, spans, bytes: &[u8]| {
        raw(&[event_words(OP_INSERT, fields, spans, 0), vec![OP_KEEP, 4]].concat(), bytes)
    };
    let problem = |p| Err(VerdictError::InvalidEvent { at: 0, problem: p });
    assert_eq!(bad(HAS_DATA, [0, 0, 0, 9, 0, 0], b"abc"), problem(Problem::SpanOutOfRange));
    assert_eq!(bad(HAS_DATA, [0, 0, 0, 2, 0, 0], b"\xC3("), problem(Problem::InvalidUtf8));
    assert_eq!(bad(HAS_DATA, [0, 0, 0, 3, 0, 0], b"a\rb"), problem(Problem::DataCarriageReturn));
    assert_eq!(bad(HAS_TYPE | HAS_DATA, [0, 2, 0, 0, 0, 0], b"a\r"), problem(Problem::TypeLineBreak));
    assert_eq!(bad(HAS_ID | HAS_DATA, [0, 0, 0, 0, 0, 2], b"a\0"), problem(Problem::IdForbiddenChar));
    assert_eq!(bad(COMMENT, [0, 0, 0, 3, 0, 0], b"a\nb"), problem(Problem::CommentLineBreak));
    assert_eq!(bad(COMMENT | HAS_ID, [0, 0, 0, 1, 0, 1], b"a"), problem(Problem::CommentWithFields));
    assert_eq!(bad(1 << 20, [0; 6], b""), problem(Problem::UnknownBits(1 << 20)));
    assert_eq!(
        bad(INHERIT_DATA, [0; 6], b""),
        problem(Problem::UnknownBits(INHERIT_DATA)),
        "inherit is for replace only"
    );
    assert_eq!(bad(HAS_DATA, [0, 0, 1 << 31, 1, 0, 0], b"x"), problem(Problem::WordTooLarge));
    // Both setting and inheriting the data.
    let both = event_words(OP_REPLACE, HAS_DATA | INHERIT_DATA, [0, 0, 0, 1, 0, 0], 0);
    assert_eq!(raw(&[both, vec![OP_KEEP, 3]].concat(), b"x"), Err(VerdictError::ConflictingFields { at: 0 }));
}

#[test]
fn output_over_the_limit_is_rejected() {
    let input = input();
    let mut v = VerdictBuilder::new();
    let big = "x".repeat(100);
    v.insert(&NewEvent::message(&big));
    v.complete(input.len());
    let err = apply(input.view(), v.ops(), v.bytes(), &mut Batch::new(), 64).unwrap_err();
    assert_eq!(err, VerdictError::OutputTooLarge { bytes: 100, limit: 64 });
}

mod arbitrary {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Whatever a guest returns, `apply` answers with a result, never a panic; and what it
        /// accepts always has the layout's guarantees (checked by re-validating the output).
        #[test]
        fn any_ops_and_bytes_are_handled(
            ops in prop::collection::vec(prop_oneof![0u32..6, 0u32..40, any::<u32>()], 0..40),
            bytes in prop::collection::vec(prop_oneof![Just(b'a'), Just(b'\n'), Just(b'\r'), Just(0u8), any::<u8>()], 0..64),
        ) {
            let input = input();
            let mut out = Batch::new();
            if let Ok(applied) = apply(input.view(), &ops, &bytes, &mut out, MAX) {
                let result = if applied.unchanged { &input } else { &out };
                prop_assert!(sluicegate_guest::BatchView::new(result.bytes(), result.index()).is_ok());
            }
        }
    }
}
