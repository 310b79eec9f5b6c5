//! A JSON scanner that records where every value lies in the text, for rewrites that change one
//! string and leave every other byte as it was.
//!
//! Written by hand rather than taken from a JSON crate because the host's streaming-text engine
//! (and tool-guard, inside the sandbox) needs byte spans of values (a parser that builds values
//! throws them away) and runs it once per event, with no allocation once warm. It is the one JSON
//! scanner: guests in other languages see decoded text and never parse. It accepts exactly RFC 8259
//! JSON (no trailing commas, no comments, no leading zeros) nested at most [`MAX_DEPTH`] deep.
//! Where a key repeats, [`Doc::get`] answers with its last value, as the clients' parsers do.

/// How deep arrays and objects may nest before a text is not treated as JSON.
pub const MAX_DEPTH: usize = 64;

/// What a node of the tape is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `{...}`; its members follow as key, value, key, value.
    Object,
    /// `[...]`; its elements follow.
    Array,
    /// A string; `start..end` is the text between the quotes, escapes undecoded.
    String,
    /// A number.
    Number,
    /// `true`, `false` or `null`.
    Literal,
}

/// One value of the document. For a string, `start..end` is the text between the quotes; for
/// anything else the whole value. A container's children follow it on the tape up to `next`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    /// What the value is.
    pub kind: Kind,
    /// Where it starts in the text (for a string, after the opening quote).
    pub start: usize,
    /// Where it ends (for a string, at the closing quote).
    pub end: usize,
    /// The tape position after this value and everything inside it.
    next: usize,
}

/// A parsed document: its nodes in text order (an object's children alternate key, value).
/// Reuse one `Doc` across texts; parsing then allocates nothing.
#[derive(Debug, Default, Clone)]
pub struct Doc {
    nodes: Vec<Node>,
    open: Vec<usize>,
}

impl Doc {
    /// Parses `text` (one JSON value, whitespace around it allowed). False if it is not JSON.
    pub fn parse(&mut self, text: &str) -> bool {
        self.nodes.clear();
        self.open.clear();
        let ok = self.parse_value_tree(text.as_bytes());
        if !ok {
            self.nodes.clear();
        }
        ok
    }

    /// The top-level value, if the last parse succeeded.
    pub fn root(&self) -> Option<usize> {
        (!self.nodes.is_empty()).then_some(0)
    }

    /// The node at tape position `at`.
    pub fn node(&self, at: usize) -> Node {
        self.nodes[at]
    }

    /// The value of `key` in object `at` (the last one if the key repeats), or none.
    pub fn get(&self, text: &str, at: usize, key: &str) -> Option<usize> {
        if self.nodes[at].kind != Kind::Object {
            return None;
        }
        let mut found = None;
        let mut child = at + 1;
        while child < self.nodes[at].next {
            let value = child + 1;
            if string_equals(&text[self.nodes[child].start..self.nodes[child].end], key) {
                found = Some(value);
            }
            child = self.nodes[value].next;
        }
        found
    }

    /// True if `at` is a node of this kind.
    pub fn is(&self, at: Option<usize>, kind: Kind) -> bool {
        at.is_some_and(|a| self.nodes[a].kind == kind)
    }

    /// The elements of array `at` (nothing if it is not an array).
    pub fn items(&self, at: usize) -> impl Iterator<Item = usize> + '_ {
        let end = if self.nodes[at].kind == Kind::Array { self.nodes[at].next } else { at + 1 };
        let mut child = at + 1;
        core::iter::from_fn(move || {
            if child >= end {
                return None;
            }
            let this = child;
            child = self.nodes[child].next;
            Some(this)
        })
    }

    /// The members of object `at` (nothing if it is not an object): each key's raw text (escapes
    /// not decoded) and its value's node, in text order.
    pub fn members<'d, 't: 'd>(&'d self, text: &'t str, at: usize) -> impl Iterator<Item = (&'t str, usize)> + 'd {
        let end = if self.nodes[at].kind == Kind::Object { self.nodes[at].next } else { at + 1 };
        let mut child = at + 1;
        core::iter::from_fn(move || {
            if child >= end {
                return None;
            }
            let (key, value) = (self.nodes[child], child + 1);
            child = self.nodes[value].next;
            Some((&text[key.start..key.end], value))
        })
    }

    /// True if node `at` is the literal `true`.
    pub fn is_true(&self, text: &str, at: Option<usize>) -> bool {
        at.is_some_and(|a| {
            self.nodes[a].kind == Kind::Literal && &text[self.nodes[a].start..self.nodes[a].end] == "true"
        })
    }

    /// The raw text of string node `at` (escapes not decoded), if it is a string.
    pub fn raw_str<'t>(&self, text: &'t str, at: Option<usize>) -> Option<&'t str> {
        let node = self.nodes[at?];
        (node.kind == Kind::String).then(|| &text[node.start..node.end])
    }

    /// The value of node `at` if it is an integer from 0 to 2^53 written without fraction or
    /// exponent.
    pub fn index(&self, text: &str, at: Option<usize>) -> Option<u64> {
        let node = self.nodes[at?];
        let digits = &text[node.start..node.end];
        if node.kind != Kind::Number || digits.len() > 16 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().filter(|&n: &u64| n <= 1 << 53)
    }

    fn push(&mut self, kind: Kind, start: usize, end: usize) -> usize {
        self.nodes.push(Node { kind, start, end, next: self.nodes.len() + 1 });
        self.nodes.len() - 1
    }

    /// An iterative parser: containers stay on `open` until their closing bracket.
    fn parse_value_tree(&mut self, b: &[u8]) -> bool {
        let mut i = skip_ws(b, 0);
        // Expecting a value (true) or what may follow one (false).
        let mut want_value = true;
        loop {
            if want_value {
                let Some(&c) = b.get(i) else { return false };
                match c {
                    b'{' | b'[' => {
                        if self.open.len() == MAX_DEPTH {
                            return false;
                        }
                        let kind = if c == b'{' { Kind::Object } else { Kind::Array };
                        let at = self.push(kind, i, i);
                        self.open.push(at);
                        i = skip_ws(b, i + 1);
                        let close = if c == b'{' { b'}' } else { b']' };
                        if b.get(i) == Some(&close) {
                            self.close(i);
                            i += 1;
                            want_value = false;
                        } else if c == b'{' {
                            let Some(next) = self.key(b, i) else { return false };
                            i = next;
                        }
                        continue;
                    }
                    b'"' => {
                        let Some(end) = string_end(b, i + 1) else { return false };
                        self.push(Kind::String, i + 1, end);
                        i = end + 1;
                    }
                    b't' | b'f' | b'n' => {
                        let word: &[u8] = match c {
                            b't' => b"true",
                            b'f' => b"false",
                            _ => b"null",
                        };
                        if !b[i..].starts_with(word) {
                            return false;
                        }
                        self.push(Kind::Literal, i, i + word.len());
                        i += word.len();
                    }
                    _ => {
                        let Some(end) = number_end(b, i) else { return false };
                        self.push(Kind::Number, i, end);
                        i = end;
                    }
                }
                want_value = false;
                continue;
            }
            i = skip_ws(b, i);
            let Some(&parent) = self.open.last() else {
                return i == b.len();
            };
            let in_object = self.nodes[parent].kind == Kind::Object;
            match b.get(i) {
                Some(b',') => {
                    i = skip_ws(b, i + 1);
                    if in_object {
                        let Some(next) = self.key(b, i) else { return false };
                        i = next;
                    }
                    want_value = true;
                }
                Some(b'}') if in_object => {
                    self.close(i);
                    i += 1;
                }
                Some(b']') if !in_object => {
                    self.close(i);
                    i += 1;
                }
                _ => return false,
            }
        }
    }

    /// Parses `"key" :` at `i`; returns where the value starts.
    fn key(&mut self, b: &[u8], i: usize) -> Option<usize> {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let end = string_end(b, i + 1)?;
        self.push(Kind::String, i + 1, end);
        let colon = skip_ws(b, end + 1);
        (b.get(colon) == Some(&b':')).then(|| skip_ws(b, colon + 1))
    }

    fn close(&mut self, bracket: usize) {
        let at = self.open.pop().expect("a container is open");
        let next = self.nodes.len();
        let node = &mut self.nodes[at];
        node.end = bracket + 1;
        node.next = next;
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// A mask whose lowest set bit marks the first of the 8 bytes of `x` (little-endian) that is `"`,
/// `\\` or below 0x20 (the classic SWAR tests: a byte is zero after XOR with the one sought, a
/// byte is below n when subtracting n borrows; bits above the lowest may be false alarms).
#[inline]
fn special_mask(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    zero(x ^ (ONES * b'"' as u64)) | zero(x ^ (ONES * b'\\' as u64)) | (x.wrapping_sub(ONES * 0x20) & !x & HIGH)
}

/// The position of the closing quote of the string whose text starts at `i`, checking escapes.
/// Plain runs are skipped eight bytes at a time: most of an LLM event's bytes are inside strings.
pub(crate) fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        while let Some(word) = b.get(i..i + 8) {
            let mask = special_mask(u64::from_le_bytes(word.try_into().expect("eight bytes")));
            if mask != 0 {
                i += mask.trailing_zeros() as usize / 8;
                break;
            }
            i += 8;
        }
        match *b.get(i)? {
            b'"' => return Some(i),
            b'\\' => match *b.get(i + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                b'u' if b.get(i + 2..i + 6)?.iter().all(u8::is_ascii_hexdigit) => i += 6,
                _ => return None,
            },
            0..0x20 => return None,
            _ => i += 1,
        }
    }
}

/// The end of the number at `i` (RFC 8259 grammar), or none.
fn number_end(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |b: &[u8], mut i: usize| {
        let from = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i > from).then_some(i)
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    if b.get(i) == Some(&b'0') {
        i += 1;
    } else {
        i = digits(b, i)?;
    }
    if b.get(i) == Some(&b'.') {
        i = digits(b, i + 1)?;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        i = digits(b, i)?;
    }
    Some(i)
}

/// True if the raw string text `raw` decodes to `plain` (a key without backslashes, as every key
/// the layer looks up is: then equal bytes mean equal text, and a raw text can only decode to
/// `plain` with escapes if it is longer).
fn string_equals(raw: &str, plain: &str) -> bool {
    if raw.len() <= plain.len() || !raw.contains('\\') {
        return raw == plain;
    }
    let mut decoded = String::new();
    decode(raw, &mut decoded);
    decoded == plain
}

/// Appends the decoded text of a raw JSON string (as [`Doc`] accepted it) to `out`. A `\u`
/// escape of an unpaired surrogate becomes U+FFFD.
pub fn decode(raw: &str, out: &mut String) {
    let b = raw.as_bytes();
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        out.push_str(&raw[copied..i]);
        let c = b[i + 1];
        i += 2;
        let plain = match c {
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = hex4(&raw[i..i + 4]);
                i += 4;
                let low = (0xD800..0xDC00).contains(&unit) && raw[i..].starts_with("\\u");
                let low = low.then(|| hex4(&raw[i + 2..i + 6])).filter(|l| (0xDC00..0xE000).contains(l));
                match low {
                    Some(low) => {
                        i += 6;
                        char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)).unwrap_or('\u{FFFD}')
                    }
                    None => char::from_u32(unit).unwrap_or('\u{FFFD}'),
                }
            }
            other => other as char,
        };
        out.push(plain);
        copied = i;
    }
    out.push_str(&raw[copied..]);
}

fn hex4(digits: &str) -> u32 {
    u32::from_str_radix(digits, 16).unwrap_or(0xFFFD)
}

/// Appends `text` as the inside of a JSON string: `"` and `\` escaped, control characters as
/// `\b \f \n \r \t` or `\u00XX` (lower-case hex), everything else as it is. This is what
/// serde_json, Python's `json.dumps(ensure_ascii=False)` and JavaScript's `JSON.stringify` write.
pub fn encode(text: &str, out: &mut String) {
    let mut copied = 0;
    for (i, b) in text.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..0x20 => "",
            _ => continue,
        };
        out.push_str(&text[copied..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        } else {
            out.push_str(escape);
        }
        copied = i + 1;
    }
    out.push_str(&text[copied..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parses(text: &str) -> bool {
        Doc::default().parse(text)
    }

    #[test]
    fn accepts_json_and_nothing_else() {
        for good in ["{}", " [ ] ", "0", "-0.5e+3", "\"a\\u00e9\\n\"", "{\"a\":[1,{\"b\":null}],\"c\":true}"] {
            assert!(parses(good), "{good}");
        }
        for bad in ["", "{", "[1,]", "{\"a\":1,}", "01", "1.", "tru", "\"\\x\"", "\"a\nb\"", "{} {}", "{'a':1}"] {
            assert!(!parses(bad), "{bad}");
        }
        assert!(parses(&("[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH))));
        assert!(!parses(&("[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1))));
    }

    #[test]
    fn finds_values_by_key_last_one_winning() {
        let text = r#"{"choices":[{"index":1,"delta":{"content":"hi \"x\""}}],"k":1,"k":"two","\u0061":3}"#;
        let mut doc = Doc::default();
        assert!(doc.parse(text));
        let root = doc.root().unwrap();
        let choice = doc.items(doc.get(text, root, "choices").unwrap()).next().unwrap();
        assert_eq!(doc.index(text, doc.get(text, choice, "index")), Some(1));
        let delta = doc.get(text, choice, "delta").unwrap();
        assert_eq!(doc.raw_str(text, doc.get(text, delta, "content")), Some(r#"hi \"x\""#));
        assert_eq!(doc.raw_str(text, doc.get(text, root, "k")), Some("two"));
        assert_eq!(doc.index(text, doc.get(text, root, "a")), Some(3));
        assert_eq!(doc.get(text, root, "missing"), None);
    }

    #[test]
    fn decodes_and_encodes_strings() {
        let mut out = String::new();
        decode(r#"a\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00\ud800x"#, &mut out);
        assert_eq!(out, "a\"\\/\u{8}\u{c}\n\r\t\u{e9}\u{1f600}\u{fffd}x");
        let mut encoded = String::new();
        encode("a\"\\/\u{8}\u{c}\n\r\t\u{1}\u{1f}\u{7f}\u{e9}\u{2028}", &mut encoded);
        assert_eq!(encoded, r#"a\"\\/\b\f\n\r\t\u0001\u001f"#.to_string() + "\u{7f}\u{e9}\u{2028}");
    }
}
