//! Properties of the codec over generated streams:
//! - any split of the same bytes into reads gives the same events;
//! - parsing what the encoder wrote gives back the same events;
//! - a spec-conformant client (an independent, whole-stream reference implementation below)
//!   sees the same thing from the re-encoded stream as from the original;
//! - an event written from the bytes it arrived in (its wire form) is written exactly as the
//!   encoder would write it, kept by a verdict or not.

use bytes::Bytes;
use proptest::prelude::*;
use sluicegate::batch::Batch;
use sluicegate::sse::{Event, Parser, encode_batch, encode_event, write_batch};
use sluicegate::verdict::apply_batch;
use sluicegate_tests::parse_all;

/// What a client observes: every fired event with the last event id and retry in force at that
/// moment, then the last event id and retry at the end.
#[derive(Debug, PartialEq, Eq)]
struct ClientView {
    fired: Vec<(String, String, String, Option<u64>)>,
    last_id: String,
    retry: Option<u64>,
}

/// A direct transcription of the WHATWG "event stream interpretation", on the whole stream.
fn reference_client(input: &[u8]) -> ClientView {
    let text = String::from_utf8_lossy(input);
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(&text);
    let (mut data, mut kind, mut id_buf) = (String::new(), String::new(), String::new());
    let mut view = ClientView { fired: vec![], last_id: String::new(), retry: None };
    let mut rest = text;
    // An unterminated last line is discarded.
    while let Some(end) = rest.find(['\r', '\n']) {
        let line = &rest[..end];
        let skip = if rest[end..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[end + skip..];
        if line.is_empty() {
            view.last_id = id_buf.clone();
            if data.is_empty() {
                kind.clear();
                continue;
            }
            data.pop();
            let t = if kind.is_empty() { "message".to_string() } else { kind.clone() };
            view.fired.push((t, std::mem::take(&mut data), view.last_id.clone(), view.retry));
            kind.clear();
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (name, value) = match line.find(':') {
            Some(c) => (&line[..c], line[c + 1..].strip_prefix(' ').unwrap_or(&line[c + 1..])),
            None => (line, ""),
        };
        match name {
            "event" => kind = value.to_string(),
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "id" if !value.contains('\0') => id_buf = value.to_string(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                view.retry = Some(value.parse::<u64>().unwrap_or(u64::MAX).min(i32::MAX as u64))
            }
            _ => {}
        }
    }
    view
}

fn encode_all(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        encode_event(&mut out, e);
    }
    out
}

/// Streams built from the pieces that matter: every field name (and near misses), values with
/// colons, spaces, NUL, non-ASCII, BOMs and invalid bytes, and all three line ends.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let name =
        prop::sample::select(vec!["data", "data", "data", "event", "id", "retry", "", ":", "Data", "data ", "x"]);
    let value = prop::collection::vec(
        prop::sample::select(vec![
            &b"a"[..],
            b" ",
            b":",
            b"0",
            b"7",
            b"\0",
            "\u{e9}".as_bytes(),
            "\u{FEFF}".as_bytes(),
            b"\xFF",
            b"+",
            b"\xC3",
        ]),
        0..6,
    )
    .prop_map(|parts| parts.concat());
    let colon = prop::sample::select(vec![&b":"[..], b": ", b""]);
    let end = prop::sample::select(vec![&b"\n"[..], b"\r", b"\r\n", b"\n\n", b"\r\n\r\n"]);
    let line = (name, colon, value, end).prop_map(|(n, c, v, e)| [n.as_bytes(), c, &v, e].concat());
    (any::<bool>(), prop::collection::vec(line, 0..40)).prop_map(|(bom, lines)| {
        let mut out = if bom { b"\xEF\xBB\xBF".to_vec() } else { vec![] };
        out.extend(lines.concat());
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Also over both ways of feeding (a copied slice, or `Bytes` parsed in place) and with
    /// events taken after some chunks only, so that a block is left half read when the input
    /// under it is replaced.
    #[test]
    fn any_chunking_gives_the_same_events(
        input in stream(),
        cuts in prop::collection::vec((any::<prop::sample::Index>(), any::<bool>(), any::<bool>()), 0..12),
    ) {
        let whole = parse_all(&input);
        let mut points: Vec<(usize, bool, bool)> =
            cuts.iter().map(|(c, shared, take)| (c.index(input.len() + 1), *shared, *take)).collect();
        points.sort();
        points.push((input.len(), true, true));
        let input = Bytes::from(input);
        let mut parser = Parser::new();
        let mut chunked = Vec::new();
        let mut from = 0;
        for (p, shared, take) in points {
            if shared {
                parser.feed_bytes(input.slice(from..p));
            } else {
                parser.feed(&input[from..p]);
            }
            from = p;
            if take {
                chunked.extend(std::iter::from_fn(|| parser.next()));
            }
        }
        chunked.extend(parser.finish());
        prop_assert_eq!(chunked, whole);
    }

    #[test]
    fn wire_forms_are_the_encoders_bytes(
        input in stream(),
        cuts in prop::collection::vec((any::<prop::sample::Index>(), any::<bool>()), 0..12),
        keep in prop::collection::vec(any::<bool>(), 0..40),
    ) {
        let mut points: Vec<(usize, bool)> = cuts.iter().map(|(c, shared)| (c.index(input.len() + 1), *shared)).collect();
        points.sort();
        points.push((input.len(), true));
        let input = Bytes::from(input);
        let (mut parser, mut batch, mut from) = (Parser::new(), Batch::new(), 0);
        for (p, shared) in points {
            if shared {
                parser.feed_bytes(input.slice(from..p));
            } else {
                parser.feed(&input[from..p]);
            }
            from = p;
            while parser.next_into(&mut batch) {}
        }
        let (mut written, mut encoded) = (Vec::new(), Vec::new());
        write_batch(&mut written, &batch);
        encode_batch(&mut encoded, batch.view());
        prop_assert_eq!(&written, &encoded);
        // A verdict that keeps some events and drops the others keeps the wire forms it keeps.
        let ops: Vec<u32> = (0..batch.len())
            .flat_map(|i| [if keep.get(i).copied().unwrap_or(true) { sluicegate_guest::abi::OP_KEEP } else { sluicegate_guest::abi::OP_DROP }, 1])
            .collect();
        let mut kept = Batch::new();
        apply_batch(&batch, &ops, &[], &mut kept, usize::MAX).unwrap();
        let (mut written, mut encoded) = (Vec::new(), Vec::new());
        write_batch(&mut written, &kept);
        encode_batch(&mut encoded, kept.view());
        prop_assert_eq!(written, encoded);
    }

    #[test]
    fn encoding_round_trips(input in stream()) {
        let events = parse_all(&input);
        prop_assert_eq!(parse_all(&encode_all(&events)), events);
    }

    #[test]
    fn parser_agrees_with_reference_client(input in stream()) {
        let original = reference_client(&input);
        let reencoded = reference_client(&encode_all(&parse_all(&input)));
        prop_assert_eq!(reencoded, original);
    }
}

#[test]
fn events_in_the_encoders_form_carry_their_wire_form_and_others_do_not() {
    let mut parser = Parser::new();
    let mut batch = Batch::new();
    parser.feed(
        b"event: delta\ndata: {\"a\":1}\nid: 7\n\ndata:x\n\ndata: a\r\n\r\nid: 1\ndata: b\n\n\
          data: a\ndata: b\n\nretry: 007\n\nevent: e\nid: 2\n\nretry: 50\n\n:ping\n\ndata:\n\ndata: \xff\n\n",
    );
    while parser.next_into(&mut batch) {}
    let wires: Vec<bool> = (0..batch.len()).map(|i| batch.wire(i).is_some()).collect();
    // the encoder's form; `data:x` (no space); CRLF; id before data; two data lines; a retry
    // with leading zeros; a type without data; a retry alone; a comment; empty data; invalid
    // UTF-8 (after which a chunk's values are checked one by one, and none has its wire form)
    assert_eq!(wires, [true, false, true, true, false, false, false, true, false, true, false]);
    assert_eq!(batch.wire(0), Some(&b"event: delta\ndata: {\"a\":1}\nid: 7\n\n"[..]));
    assert_eq!(batch.view().get(0).unwrap().data(), Some("{\"a\":1}"), "the fields are spans of the wire form");
    // Lines the encoder writes, in another order or with other line ends: the wire form is the
    // encoder's bytes, put together from them.
    assert_eq!(batch.wire(2), Some(&b"data: a\n\n"[..]));
    assert_eq!(batch.wire(3), Some(&b"data: b\nid: 1\n\n"[..]));
    let reordered = batch.view().get(3).unwrap();
    assert_eq!((reordered.data(), reordered.id()), (Some("b"), Some("1")), "and the fields are spans of it");
}

#[test]
fn reference_client_checks_itself_on_known_cases() {
    let view =
        reference_client(b"\xEF\xBB\xBFid: 1\ndata: a\ndata: b\n\nretry: 7\nevent: x\ndata\n\nid: 2\n\ndata: tail");
    assert_eq!(
        view,
        ClientView {
            fired: vec![
                ("message".into(), "a\nb".into(), "1".into(), None),
                ("x".into(), "".into(), "1".into(), Some(7))
            ],
            last_id: "2".into(),
            retry: Some(7),
        }
    );
}
