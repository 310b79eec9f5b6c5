//! What a body on a guarded route is, judged by its content: an event stream, JSON lines, text
//! (JSON included) or binary. The `Content-Type` label is a hint the content can overrule, never
//! a way around the chain: an upstream may label its event stream `text/plain`, a client may send
//! `application/json, text/plain` (which its server still parses as JSON), or no label at all.
//!
//! A label that is one well-formed media type decides when it names a shape the proxy parses:
//! `text/event-stream` (the event path; content that is not an event stream yields no events,
//! exactly as for a client), a JSON-lines type (the line path), JSON (`application/json`, any
//! `+json`: the whole body through the chain). Anything else, a list, a malformed value or no
//! label, is read from the first bytes ([`sniff`]): event-stream fields, a first line that is a
//! whole JSON value, text, or binary. Only binary content may pass a guarded route uninspected,
//! and only by an operator's `pass_media_types` rule for its label.

use super::charset::TextEncoding;
use http::HeaderMap;
use http::header::CONTENT_TYPE;

/// How a body goes through a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// An event stream: parsed, batched, through the chain event by event.
    EventStream,
    /// Line-delimited JSON (NDJSON, JSON Lines): each line an event, streamed.
    Lines,
    /// Text or JSON: read whole and through the chain as one event.
    Whole,
    /// Neither text nor JSON: refused, or passed by an operator's rule.
    Binary,
}

impl Shape {
    pub(super) fn name(self) -> &'static str {
        match self {
            Shape::EventStream => "event stream",
            Shape::Lines => "JSON lines",
            Shape::Whole => "text",
            Shape::Binary => "binary",
        }
    }
}

/// The media types of line-delimited JSON streams.
const LINE_TYPES: &[&str] = &[
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "application/x-jsonl",
    "application/jsonlines",
    "application/x-jsonlines",
    "application/jsonlines+json",
];

/// A `Content-Type` as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Label {
    /// No `Content-Type`.
    Absent,
    /// Several values, a list, or a value that is not `type/subtype *(; param)`.
    Malformed,
    /// One media type: its essence (`type/subtype`, lower case) and its `charset`, if any.
    One { essence: String, charset: Option<String> },
}

impl Label {
    /// The label of `headers`.
    pub(super) fn of(headers: &HeaderMap) -> Label {
        let mut values = headers.get_all(CONTENT_TYPE).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return if headers.contains_key(CONTENT_TYPE) { Label::Malformed } else { Label::Absent };
        };
        value.to_str().ok().and_then(parse).unwrap_or(Label::Malformed)
    }

    /// The essence, if the label is one media type.
    pub(super) fn essence(&self) -> Option<&str> {
        match self {
            Label::One { essence, .. } => Some(essence),
            _ => None,
        }
    }

    /// The `charset` parameter, if the label is one media type with one.
    pub(super) fn charset(&self) -> Option<&str> {
        match self {
            Label::One { charset, .. } => charset.as_deref(),
            _ => None,
        }
    }

    /// The shape this label decides, if it decides one (see the module's rules).
    pub(super) fn shape(&self) -> Option<Shape> {
        let essence = self.essence()?;
        if essence == "text/event-stream" {
            Some(Shape::EventStream)
        } else if LINE_TYPES.contains(&essence) {
            Some(Shape::Lines)
        } else if essence == "application/json" || essence.ends_with("+json") {
            Some(Shape::Whole)
        } else {
            None
        }
    }

    /// True if an operator's pattern (`image/png`, `image/*`, `*/*`) names this label.
    pub(super) fn matches(&self, pattern: &str) -> bool {
        let Some(essence) = self.essence() else { return false };
        let pattern = pattern.trim().to_ascii_lowercase();
        match pattern.strip_suffix("/*") {
            Some("*") => true,
            Some(kind) => essence.split('/').next() == Some(kind),
            None => essence == pattern,
        }
    }
}

/// `type/subtype *(OWS ; OWS name=value)` (RFC 9110, section 8.3.1), or `None`.
fn parse(value: &str) -> Option<Label> {
    let mut parts = value.split(';');
    let essence = parts.next()?.trim().to_ascii_lowercase();
    let (kind, subtype) = essence.split_once('/')?;
    if !is_token(kind) || !is_token(subtype) {
        return None;
    }
    let mut charset = None;
    for param in parts {
        let param = param.trim();
        if param.is_empty() {
            continue;
        }
        let (name, value) = param.split_once('=')?;
        let value = value.trim_matches('"');
        if !is_token(name.trim()) {
            return None;
        }
        if name.trim().eq_ignore_ascii_case("charset") {
            if charset.is_some() {
                return None;
            }
            charset = Some(value.to_string());
        }
    }
    Some(Label::One { essence, charset })
}

fn is_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The most bytes [`sniff`] reads to tell text from binary.
pub(super) const SNIFF_BYTES: usize = 512;

/// What the first bytes of a body show; `None` while more are needed (`complete`: the body has
/// ended). `labelled` is the encoding its `charset` names, used unless a byte-order mark or the
/// NUL pattern says otherwise. A first line that may be a JSON value is read to its end, up to
/// `max_line` bytes.
pub(super) fn sniff(prefix: &[u8], complete: bool, max_line: usize, labelled: Option<TextEncoding>) -> Option<Shape> {
    let (encoding, mark) = match TextEncoding::detect(prefix, complete)? {
        (TextEncoding::Utf8, 0) => (labelled.unwrap_or(TextEncoding::Utf8), 0),
        found => found,
    };
    let text = decoded_prefix(encoding, &prefix[mark..]);
    // A decoding that stops early (a character cut by the end of the prefix) is all right while
    // more may come; one that failed in the middle is binary.
    let Some(text) = text else { return Some(Shape::Binary) };
    if text.chars().any(is_binary_char) {
        return Some(Shape::Binary);
    }
    let content = text.trim_start_matches(['\n', '\r']);
    let first_line = content.split(['\n', '\r']).next().unwrap_or("");
    let line_ended = content.len() > first_line.len();
    if is_event_stream_line(first_line, line_ended) {
        return Some(Shape::EventStream);
    }
    let json_start = first_line.trim_start().starts_with(['{', '[', '"']);
    if json_start && !line_ended && !complete && prefix.len() <= max_line {
        return None; // wait for the line: one JSON value per line is JSON lines
    }
    if json_start && line_ended && is_json(first_line) {
        // One JSON value on the first line: JSON lines if another follows, a JSON body if the
        // body ends; wait to see which.
        let more = !content[first_line.len()..].trim().is_empty();
        if more {
            return Some(Shape::Lines);
        }
        if !complete && prefix.len() <= max_line {
            return None;
        }
    }
    if !complete && prefix.len() < SNIFF_BYTES && !line_ended && !json_start {
        return None;
    }
    Some(Shape::Whole)
}

/// The prefix as text, up to a character cut by its end; `None` if it is not text in `encoding`.
fn decoded_prefix(encoding: TextEncoding, bytes: &[u8]) -> Option<String> {
    let unit = match encoding {
        TextEncoding::Utf8 => {
            return match std::str::from_utf8(bytes) {
                Ok(text) => Some(text.to_string()),
                Err(e) if e.error_len().is_none() => Some(String::from_utf8_lossy(&bytes[..e.valid_up_to()]).into()),
                Err(_) => None,
            };
        }
        // A character of a multi-byte charset may be cut by the end of the prefix.
        TextEncoding::Labelled(_) => 1,
        TextEncoding::Utf16Le | TextEncoding::Utf16Be => 2,
        TextEncoding::Utf32Le | TextEncoding::Utf32Be => 4,
    };
    // Whole code units only, and maybe a character fewer: one cut in two by the prefix's end.
    let whole = bytes.len() - bytes.len() % unit;
    let decode = |cut: usize| super::charset::decode(encoding, &bytes[..whole.checked_sub(cut)?]).ok();
    (0..4).step_by(unit).find_map(decode)
}

/// Characters that do not occur in text (the binary bytes of the WHATWG MIME sniffing standard:
/// C0 controls other than tab, line ends and form feed), or a non-character.
fn is_binary_char(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{e}'..='\u{1a}' | '\u{1c}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}')
}

/// True if `line` is an event-stream line: a comment, or the field `data`, `event`, `id` or
/// `retry` (with a value after `:`, or alone on a line that has ended).
fn is_event_stream_line(line: &str, ended: bool) -> bool {
    if line.starts_with(':') {
        return true;
    }
    match line.split_once(':') {
        Some((name, _)) => matches!(name, "data" | "event" | "id" | "retry"),
        None => ended && matches!(line, "data" | "event" | "id" | "retry"),
    }
}

fn is_json(line: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(line).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn label(value: &str) -> Label {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
        Label::of(&headers)
    }

    #[test]
    fn a_label_decides_only_when_it_is_one_well_formed_type() {
        assert_eq!(label("Application/JSON; charset=UTF-8").shape(), Some(Shape::Whole));
        assert_eq!(label("application/vnd.api+json").shape(), Some(Shape::Whole));
        assert_eq!(label("text/event-stream").shape(), Some(Shape::EventStream));
        assert_eq!(label("application/x-ndjson").shape(), Some(Shape::Lines));
        for undecided in ["application/json, text/plain", "application/json,", "json", "text/plain", "a b/c"] {
            assert_eq!(label(undecided).shape(), None, "{undecided}");
        }
        assert_eq!(label("application/json, text/plain"), Label::Malformed);
        assert_eq!(label("text/plain; charset=\"latin1\"").charset(), Some("latin1"));
        assert_eq!(label("text/plain; charset=a; charset=b"), Label::Malformed);
        let mut two = HeaderMap::new();
        two.append(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        two.append(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(Label::of(&two), Label::Malformed);
        assert_eq!(Label::of(&HeaderMap::new()), Label::Absent);
        assert!(label("image/png").matches("image/*") && label("image/png").matches("*/*"));
        assert!(!label("image/png").matches("text/*") && !Label::Absent.matches("*/*"));
    }

    #[test]
    fn content_decides_the_rest() {
        let full = |text: &[u8]| sniff(text, true, 1 << 20, None);
        assert_eq!(full(b"data: {\"x\":1}\n\n"), Some(Shape::EventStream));
        assert_eq!(full(b"\n\n: keep-alive\n\n"), Some(Shape::EventStream));
        assert_eq!(full(b"\xEF\xBB\xBFevent: a\ndata\n\n"), Some(Shape::EventStream));
        assert_eq!(full(b"{\"a\":1}\n{\"a\":2}\n"), Some(Shape::Lines));
        assert_eq!(full(b"{\"a\":1}\n"), Some(Shape::Whole), "one value is a JSON body");
        assert_eq!(full(b"{\n  \"a\": 1\n}\n"), Some(Shape::Whole), "pretty-printed JSON is a JSON body");
        assert_eq!(full(b"plain words for ada@example.com"), Some(Shape::Whole));
        assert_eq!(full(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), Some(Shape::Binary));
        assert_eq!(full(b"text then \0 a NUL"), Some(Shape::Binary));
        let utf16: Vec<u8> = "data: hi\n\n".encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert_eq!(full(&utf16), Some(Shape::EventStream));
        let latin1 = TextEncoding::from_label(Some("latin1")).unwrap();
        assert_eq!(sniff(b"caf\xe9 au lait\n", true, 1024, latin1), Some(Shape::Whole), "text in its labelled charset");
        assert_eq!(full(b"caf\xe9 au lait\n"), Some(Shape::Binary), "which is not UTF-8");
    }

    proptest::proptest! {
        /// Any bytes, any prefix: no panic, and a complete body always gets an answer.
        #[test]
        fn any_bytes_get_an_answer(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            cut in 0usize..600,
        ) {
            proptest::prop_assert!(sniff(&bytes, true, 1024, None).is_some());
            let _ = sniff(&bytes[..cut.min(bytes.len())], false, 1024, None);
        }

        /// Text is never taken for binary, from any prefix of it (a pass rule for binary media
        /// types can never let text through).
        #[test]
        fn text_is_never_binary(text in "\\PC{0,300}", cut in 0usize..1200) {
            let bytes = text.as_bytes();
            proptest::prop_assert_ne!(sniff(bytes, true, 1024, None), Some(Shape::Binary));
            let prefix = &bytes[..cut.min(bytes.len())];
            proptest::prop_assert_ne!(sniff(prefix, false, 1024, None), Some(Shape::Binary));
        }
    }

    #[test]
    fn sniffing_waits_for_enough_bytes_and_no_longer() {
        assert_eq!(sniff(b"da", false, 1024, None), None);
        assert_eq!(sniff(b"data:", false, 1024, None), Some(Shape::EventStream));
        assert_eq!(sniff(b"{\"a\":", false, 1024, None), None, "a JSON line waits for its end");
        assert_eq!(sniff(b"{\"a\":", false, 3, None), Some(Shape::Whole), "but not past the line limit");
        assert_eq!(sniff(b"{\"a\":1}\n{", false, 1024, None), Some(Shape::Lines));
        assert_eq!(sniff(b"{\"a\":1}\n", false, 1024, None), None, "one line: a body, or the first of many");
        assert_eq!(sniff(b"\x89PNG", false, 1024, None), Some(Shape::Binary), "binary shows at once");
        assert_eq!(sniff(&[b'a'; SNIFF_BYTES], false, 1024, None), Some(Shape::Whole));
    }
}
