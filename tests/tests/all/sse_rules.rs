//! One test (or more) per rule of `shared/reference/sse-rules.md`, numbered as there, plus what a
//! proxy needs on top: comments, retry and id-only blocks kept, frame-safe encoding.

use bytes::Bytes;
use sluicegate::sse::{Event, Parser, encode_event};

/// Parses `chunks` fed one after another, then ends the stream.
fn parse(chunks: &[&[u8]]) -> Vec<Event> {
    let mut parser = Parser::new();
    let mut out = Vec::new();
    for chunk in chunks {
        parser.feed(chunk);
        out.extend(std::iter::from_fn(|| parser.next()));
    }
    out.extend(parser.finish());
    out
}

fn one(input: &str) -> Vec<Event> {
    parse(&[input.as_bytes()])
}

fn msg(data: &str) -> Event {
    Event::message(Bytes::copy_from_slice(data.as_bytes()))
}

fn datas(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter(|e| !e.comment)
        .filter_map(|e| e.data.as_ref())
        .map(|d| String::from_utf8(d.to_vec()).unwrap())
        .collect()
}

#[test]
fn rule_1_invalid_utf8_becomes_replacement_character() {
    assert_eq!(parse(&[b"data: a\xFFb\n\n"]), vec![msg("a\u{FFFD}b")]);
}

#[test]
fn rule_1_multibyte_character_split_across_reads() {
    let bytes = "data: caf\u{e9}\n\n".as_bytes();
    let split = bytes.len() - 3; // between the two bytes of é
    assert_eq!(parse(&[&bytes[..split], &bytes[split..]]), vec![msg("caf\u{e9}")]);
}

#[test]
fn rule_2_bom_stripped_only_at_start_even_when_split() {
    assert_eq!(parse(&[b"\xEF", b"\xBB", b"\xBFdata: 1\n\n"]), vec![msg("1")]);
    // A second BOM is part of the field name, which is then unknown.
    assert_eq!(one("\u{FEFF}\u{FEFF}data: 1\n\ndata: 2\n\n"), vec![msg("2")]);
    assert_eq!(one("data: 1\n\n\u{FEFF}data: 2\n\n"), vec![msg("1")]);
}

#[test]
fn rule_3_crlf_lf_and_cr_line_ends_mixed() {
    assert_eq!(one("data: a\r\ndata: b\rdata: c\n\r\n"), vec![msg("a\nb\nc")]);
    assert_eq!(one("data: 1\r\rdata: 2\n\n"), vec![msg("1"), msg("2")]);
}

#[test]
fn rule_3_cr_at_end_of_a_read_then_lf() {
    // If the CRLF were taken as two line ends, the LF would be a blank line and fire "a" early,
    // and "b" would be a second event.
    assert_eq!(parse(&[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]), vec![msg("a\nb")]);
}

#[test]
fn rule_3_cr_at_end_of_a_read_alone_is_a_line_end() {
    // The event is available as soon as the CR that ends it has arrived.
    let mut parser = Parser::new();
    parser.feed(b"data: a\r\r");
    assert_eq!(parser.next(), Some(msg("a")));
    parser.feed(b"data: b\n\n");
    assert_eq!(parser.next(), Some(msg("b")));
}

#[test]
fn rule_4_blank_line_dispatches() {
    let mut parser = Parser::new();
    parser.feed(b"data: a\n");
    assert_eq!(parser.next(), None);
    parser.feed(b"\n");
    assert_eq!(parser.next(), Some(msg("a")));
}

#[test]
fn rule_5_comments_are_kept_for_forwarding() {
    assert_eq!(
        one(": keep-alive\n\ndata: x\n:mid\n\n"),
        vec![Event::comment(" keep-alive"), Event::comment("mid"), msg("x")]
    );
}

#[test]
fn rule_6_one_leading_space_removed_tab_kept() {
    assert_eq!(datas(&one("data:  2\n\ndata:\t3\n\ndata:4\n\n")), vec![" 2", "\t3", "4"]);
    assert_eq!(datas(&one("data: a:b: c\n\n")), vec!["a:b: c"]);
}

#[test]
fn rule_7_line_without_colon_is_field_with_empty_value() {
    assert_eq!(one("data\n\n"), vec![msg("")]);
    assert_eq!(one("data\ndata\n\n"), vec![msg("\n")]);
}

#[test]
fn rule_8_field_names_exact_and_unknown_ignored() {
    assert_eq!(one("Data: 1\ndata : 2\n data: 3\ndata\0: 4\nfoo: 5\n\n"), vec![]);
    assert_eq!(one("Data: 1\nfoo: 5\ndata: 6\n\n"), vec![msg("6")]);
}

#[test]
fn rule_9_event_type_and_empty_type() {
    assert_eq!(one("event: update\ndata: 1\n\n"), vec![msg("1").with_type("update")]);
    assert_eq!(one("event\ndata: 1\n\n"), vec![msg("1").with_type("")]);
    // The last event field wins.
    assert_eq!(one("event: a\nevent: b\ndata: 1\n\n"), vec![msg("1").with_type("b")]);
}

#[test]
fn rule_10_data_lines_join_with_lf() {
    assert_eq!(one("data: a\ndata: b\ndata: c\n\n"), vec![msg("a\nb\nc")]);
}

#[test]
fn rule_11_id_with_nul_ignored_empty_id_kept() {
    assert_eq!(one("id: 1\nid: 2\x003\ndata: x\n\n"), vec![msg("x").with_id("1")]);
    assert_eq!(one("id\ndata: x\n\n"), vec![msg("x").with_id("")]);
    assert_eq!(one("id: a b\ndata: x\n\n"), vec![msg("x").with_id("a b")]);
}

#[test]
fn rule_12_retry_digits_only() {
    for bad in ["+1", "-1", "1_000", "1000x", "\u{FF11}", "", "  1", "1.5"] {
        assert_eq!(one(&format!("retry:{bad}\ndata: x\n\n")), vec![msg("x")], "retry:{bad:?} must be ignored");
    }
    assert_eq!(one("retry: 0042\ndata: x\n\n"), vec![msg("x").with_retry(42)]);
    // Too large for the contract: clamped below 2^31.
    assert_eq!(
        one("retry: 99999999999999999999\n\n"),
        vec![Event { retry: Some(i32::MAX as u32), ..Event::default() }]
    );
}

#[test]
fn rule_13_dispatch_semantics() {
    // Empty data fires an event; data:\n\n is the MCP priming event.
    assert_eq!(one("id: 1-1\ndata:\nretry: 500\n\n"), vec![msg("").with_id("1-1").with_retry(500)]);
    // An id alone fires nothing but must reach the client (it moves the last event id).
    assert_eq!(one("id: 5\n\n"), vec![Event { id: Some("5".into()), ..Event::default() }]);
    // A type alone fires nothing and changes nothing: dropped.
    assert_eq!(one("event: x\n\n"), vec![]);
    // Consecutive blank lines fire nothing.
    assert_eq!(one("\n\n\n"), vec![]);
}

#[test]
fn rule_14_unterminated_tail_discarded_with_its_id() {
    let mut parser = Parser::new();
    parser.feed(b"data: 1\n\nid: 9\ndata: 2\n");
    assert_eq!(parser.next(), Some(msg("1")));
    assert_eq!(parser.next(), None);
    assert_eq!(parser.finish(), None);
    assert_eq!(parser.discarded(), 1 + 1); // the "9" and "2" values, not yet dispatched
    assert_eq!(parse(&[b"data: 1\n\ndata: 2"]), vec![msg("1")]);
}

#[test]
fn retry_in_unterminated_tail_still_forwarded() {
    // A client applies retry when it reads the line, dispatch or not.
    assert_eq!(
        parse(&[b"data: 1\n\nretry: 250\ndata: 2\n"]),
        vec![msg("1"), Event { retry: Some(250), ..Event::default() }]
    );
}

#[test]
fn oversized_event_skipped_stream_continues() {
    let mut parser = Parser::with_limit(16);
    parser.feed(b"data: small\n\ndata: 0123456789\ndata: 0123456789\n\ndata: after\n\n");
    let events: Vec<_> = std::iter::from_fn(|| parser.next()).collect();
    assert_eq!(events, vec![msg("small"), msg("after")]);
    assert_eq!(parser.oversized(), 1);
}

#[test]
fn line_that_never_ends_is_bounded() {
    let mut parser = Parser::with_limit(64);
    parser.feed(b"data: ok\n\n");
    assert_eq!(parser.next(), Some(msg("ok")));
    for _ in 0..100 {
        parser.feed(&[b'x'; 50]);
        assert_eq!(parser.next(), None);
        assert!(parser.buffered() <= 64 + 50, "the buffer must not grow without bound");
    }
    parser.feed(b"\n\ndata: next\n\n");
    assert_eq!(parser.next(), Some(msg("next")));
    assert_eq!(parser.oversized(), 1);
}

#[test]
fn a_chunk_parsed_in_place_is_let_go_when_its_lines_run_out() {
    // An idle stream must not pin the read buffer its last chunk was a slice of.
    let mut parser = Parser::new();
    let chunk = Bytes::from(b"data: 1\n\nid: 7\ndata: half".to_vec());
    parser.feed_bytes(chunk.clone());
    assert_eq!(parser.next(), Some(msg("1")));
    assert!(!chunk.is_unique(), "parsed in place, not copied");
    assert_eq!(parser.next(), None);
    assert!(chunk.is_unique(), "the parser still holds the chunk");
    // What was left (a half-read block: its id, a partial line) was kept.
    parser.feed_bytes(Bytes::from_static(b" done\n\n"));
    assert_eq!(parser.next(), Some(msg("half done").with_id("7")));
}

#[test]
fn encoder_cannot_create_frame_boundaries() {
    let mut out = Vec::new();
    encode_event(&mut out, &msg("a\r\nb\rc\n\nd").with_type("t"));
    assert_eq!(out, b"event: t\ndata: a\ndata: b\ndata: c\ndata:\ndata: d\n\n");
    // A type or id that would break the frame is not written.
    out.clear();
    encode_event(&mut out, &msg("x").with_type("a\n\ndata: evil").with_id("1\r\n2"));
    assert_eq!(out, b"data: x\n\n");
    out.clear();
    encode_event(&mut out, &Event::comment("one\ntwo"));
    assert_eq!(out, b":one\n:two\n\n");
}

#[test]
fn encoder_preserves_leading_spaces_and_empty_values() {
    let mut out = Vec::new();
    encode_event(&mut out, &msg(" lead").with_id(""));
    assert_eq!(parse(&[&out]), vec![msg(" lead").with_id("")]);
}
