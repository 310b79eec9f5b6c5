//! The request path, in one spelling that the router and the upstream both see.
//!
//! A route is a guard only if the path it is matched on is the path the upstream serves. Servers
//! decode percent-encodings, drop dot segments and (many of them) merge repeated slashes before
//! they route, so `/%6dcp`, `/./mcp` and `//mcp` all reach a server's `/mcp`. The proxy therefore
//! brings every path into one canonical spelling, matches routes on it and forwards it:
//!
//! - percent-encodings of characters that servers read as themselves (the unreserved characters
//!   and `: @ ! $ & ' ( ) * + , =`) are decoded; every other byte outside those (a space, `"`,
//!   non-ASCII) is percent-encoded, with upper-case hex;
//! - `.` segments are removed and `..` segments remove the segment before them (RFC 3986,
//!   section 5.2.4); repeated slashes are one;
//! - what cannot be brought into one spelling without changing what some server would read is
//!   refused: an encoded `/` (`%2F`: one segment to some servers, two to others), a `\` raw or
//!   encoded (a separator to some), NUL or another control character, a malformed `%`, and a `..`
//!   that climbs above the root.
//!
//! `;` is kept as it was sent, raw or encoded (Java servers read a raw one as the start of path
//! parameters), and so are `%2F`-free encodings of `?`, `#` and `%`.

use std::fmt::Write as _;

/// Why a path cannot be brought into one spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum PathError {
    /// Not `/...` (an authority-form or asterisk-form target, or an empty path).
    #[error("the path does not start with `/`")]
    NotAbsolute,
    /// `%2F`: a separator to some servers, part of a segment to others.
    #[error("the path has an encoded `/` (%2F)")]
    EncodedSlash,
    /// `\` or `%5C`: a separator to some servers.
    #[error("the path has a backslash")]
    Backslash,
    /// NUL or another control character, raw or encoded (`%00`).
    #[error("the path has a NUL or control character")]
    Control,
    /// `%` not followed by two hex digits.
    #[error("the path has a malformed percent-encoding")]
    BadPercent,
    /// A `..` segment with nothing left to remove.
    #[error("a `..` segment climbs above the root")]
    AboveRoot,
}

/// A path in its canonical spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NormalPath {
    /// The canonical path: what routes are matched on and what goes upstream.
    pub path: String,
    /// When `..` segments removed something: the path with them kept as plain segments, so that
    /// the router can tell whether they climbed out of the route the path was written under.
    pub before_dot_segments: Option<String>,
}

/// Bytes that a percent-encoding is decoded into: what servers read the same whether it came
/// encoded or not (RFC 3986 unreserved characters, and the sub-delimiters other than `;` with
/// `:` and `@`).
fn decodes(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~:@!$&'()*+,=".contains(&byte)
}

/// Brings `raw` (the path of a request target, without the query) into its canonical spelling.
pub(super) fn normalise(raw: &str) -> Result<NormalPath, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // Pass 1: one spelling per byte, segment by segment.
    let mut segments: Vec<String> = Vec::new();
    let mut segment = String::new();
    let mut i = 1;
    while i <= bytes.len() {
        let Some(&byte) = bytes.get(i) else {
            segments.push(std::mem::take(&mut segment));
            break;
        };
        i += 1;
        match byte {
            b'/' => segments.push(std::mem::take(&mut segment)),
            b'%' => {
                let hex = bytes.get(i..i + 2).and_then(|h| std::str::from_utf8(h).ok());
                let decoded = hex.and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or(PathError::BadPercent)?;
                i += 2;
                push_byte(&mut segment, decoded, true)?;
            }
            byte => push_byte(&mut segment, byte, false)?,
        }
    }
    // Pass 2: dot segments and empty segments (repeated slashes). A path that ends in `/`, `/.`
    // or `/..` names a directory: it keeps its trailing slash.
    let trailing = matches!(segments.last().map(String::as_str), Some("" | "." | ".."));
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    let mut climbed = false;
    for segment in &segments {
        match segment.as_str() {
            "" | "." => {}
            ".." => {
                out.pop().ok_or(PathError::AboveRoot)?;
                climbed = true;
            }
            s => out.push(s),
        }
    }
    let join = |parts: &mut dyn Iterator<Item = &str>| {
        let mut path = String::with_capacity(raw.len());
        for part in parts {
            path.push('/');
            path.push_str(part);
        }
        if path.is_empty() || trailing {
            path.push('/');
        }
        path
    };
    let path = join(&mut out.iter().copied());
    let before_dot_segments = climbed.then(|| join(&mut segments.iter().map(String::as_str).filter(|s| !s.is_empty())));
    Ok(NormalPath { path, before_dot_segments })
}

/// Appends one byte of a segment in its canonical spelling; `encoded` says it came as `%XX`.
fn push_byte(segment: &mut String, byte: u8, encoded: bool) -> Result<(), PathError> {
    match byte {
        b'/' => return Err(PathError::EncodedSlash),
        b'\\' => return Err(PathError::Backslash),
        0..=0x1f | 0x7f => return Err(PathError::Control),
        _ => {}
    }
    if decodes(byte) || (byte == b';' && !encoded) {
        segment.push(byte as char);
    } else {
        let _ = write!(segment, "%{byte:02X}");
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn canonical(raw: &str) -> String {
        normalise(raw).unwrap_or_else(|e| panic!("{raw}: {e}")).path
    }

    #[test]
    fn spellings_of_one_path_become_one() {
        for raw in ["/mcp", "/%6dcp", "/mc%70", "/%6D%63%70", "//mcp", "/./mcp", "/x/../mcp", "/mcp/.", "/mcp/x/.."] {
            let expected = if raw.ends_with('.') { "/mcp/" } else { "/mcp" };
            assert_eq!(canonical(raw), expected, "{raw}");
        }
        assert_eq!(canonical("/"), "/");
        assert_eq!(canonical("//"), "/");
        assert_eq!(canonical("/a//b/"), "/a/b/");
        assert_eq!(canonical("/v1/models/gemini%3AstreamGenerateContent"), "/v1/models/gemini:streamGenerateContent");
        assert_eq!(canonical("/a%20b/caf\u{e9}/%c3%a9"), "/a%20b/caf%C3%A9/%C3%A9");
        assert_eq!(canonical("/a;b/%3b"), "/a;b/%3B", "`;` keeps the spelling it came in");
        assert_eq!(canonical("/a/%2e%2E/x"), "/x", "encoded dots are dots");
    }

    #[test]
    fn what_cannot_be_one_spelling_is_refused() {
        for (raw, error) in [
            ("/a%2Fb", PathError::EncodedSlash),
            ("/a%2fb", PathError::EncodedSlash),
            ("/a\\b", PathError::Backslash),
            ("/a%5Cb", PathError::Backslash),
            ("/a%00b", PathError::Control),
            ("/a%0Ab", PathError::Control),
            ("/a%zzb", PathError::BadPercent),
            ("/a%2", PathError::BadPercent),
            ("/..", PathError::AboveRoot),
            ("/a/../../b", PathError::AboveRoot),
            ("/%2e%2e/b", PathError::AboveRoot),
            ("*", PathError::NotAbsolute),
        ] {
            assert_eq!(normalise(raw), Err(error), "{raw}");
        }
    }

    #[test]
    fn climbing_is_reported_with_the_path_as_written() {
        let normal = normalise("/api/../admin/x").unwrap();
        assert_eq!(normal.path, "/admin/x");
        assert_eq!(normal.before_dot_segments.as_deref(), Some("/api/../admin/x"));
        assert_eq!(normalise("/api/./x").unwrap().before_dot_segments, None, "`.` climbs nowhere");
    }

    /// A segment of characters that have one canonical spelling (raw), never `.` or `..`.
    pub(crate) fn segment() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9._~:@!$&'()*+,=-]{1,6}".prop_filter("not a dot segment", |s| s != "." && s != "..")
    }

    /// `segments` spelled another way: some characters percent-encoded (either hex case), `.`
    /// segments, `x/..` pairs and repeated slashes put in.
    pub(crate) fn respell(segments: &[String], choices: &[u8]) -> String {
        let mut choice = choices.iter().copied().cycle();
        let mut out = String::new();
        for segment in segments {
            match choice.next().unwrap_or(0) % 5 {
                0 => out.push_str("/."),
                1 => out.push_str("/zz/.."),
                2 => out.push('/'),
                _ => {}
            }
            out.push('/');
            for byte in segment.bytes() {
                match choice.next().unwrap_or(0) % 3 {
                    0 => out.push_str(&format!("%{byte:02X}")),
                    1 => out.push_str(&format!("%{byte:02x}")),
                    _ => out.push(byte as char),
                }
            }
        }
        if out.is_empty() {
            out.push('/');
        }
        out
    }

    proptest! {
        #[test]
        fn every_spelling_of_a_path_is_its_canonical_path(
            segments in proptest::collection::vec(segment(), 0..5),
            choices in proptest::collection::vec(any::<u8>(), 1..64),
        ) {
            let canonical = if segments.is_empty() { "/".to_string() } else { format!("/{}", segments.join("/")) };
            let spelled = respell(&segments, &choices);
            prop_assert_eq!(normalise(&spelled).map(|n| n.path), Ok(canonical), "{}", spelled);
        }

        #[test]
        fn an_encoded_separator_anywhere_is_refused(
            segments in proptest::collection::vec(segment(), 1..4),
            at in 0usize..4,
            slash in prop::sample::select(vec!["%2F", "%2f", "%5C", "%5c", "\\"]),
        ) {
            let mut path = format!("/{}", segments.join("/"));
            let at = path.char_indices().map(|(i, _)| i).nth(at + 1).unwrap_or(path.len());
            path.insert_str(at, slash);
            prop_assert!(normalise(&path).is_err(), "{}", path);
        }
    }
}
