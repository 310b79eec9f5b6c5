//! The e-mail address scanner behind `redact` (also included by a test guest, by path). `redact`
//! scans decoded text, which the host hands it; the `_json` variants scan raw JSON, where a
//! backslash escape before an address (`\n`, `\u00e9`) is not part of it (the legacy test
//! guest, which sees raw event data).

use memchr::memchr;

/// Writes `text` with every e-mail address replaced into `out` and returns true, or returns
/// false (leaving `out` unspecified) if `text` holds no address.
pub fn redact_into(text: &str, replacement: &str, out: &mut String) -> bool {
    out.clear();
    redact_append(text, replacement, out)
}

/// [`redact_into`] for raw JSON: escapes before an address stay intact.
pub fn redact_json_into(text: &str, replacement: &str, out: &mut String) -> bool {
    out.clear();
    replace_all(text, replacement, out, true)
}

/// Appends `text` with every e-mail address replaced to `out`; true if there was one.
pub fn redact_append(text: &str, replacement: &str, out: &mut String) -> bool {
    replace_all(text, replacement, out, false)
}

fn replace_all(text: &str, replacement: &str, out: &mut String, json: bool) -> bool {
    let mut copied = 0;
    let mut found = false;
    scan(text.as_bytes(), json, |start, end| {
        out.push_str(&text[copied..start]);
        out.push_str(replacement);
        copied = end;
        found = true;
    });
    out.push_str(&text[copied..]);
    found
}

/// The most text the streaming redactor holds back: an address has at most 64 bytes before the
/// `@` and 255 after it (RFC 5321).
pub const MAX_HELD: usize = 64 + 1 + 255;

/// Where streamed text may be cut now: before the trailing run of bytes that could still be
/// part of an address once more text arrives (local-part characters, which include every domain
/// character, and `@`), but holding at most [`MAX_HELD`] bytes. No address reaches across a
/// byte outside that set, so scanning the text on either side of the cut finds exactly what
/// scanning it whole finds.
pub fn hold_point(text: &str) -> usize {
    let run = text.bytes().rev().take_while(|&b| is_local(b) || b == b'@').count();
    // The run is ASCII, so any cut inside it is a character boundary.
    text.len() - run.min(MAX_HELD)
}

fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_domain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')
}

/// Calls `found(start, end)` for each e-mail address in `text`, in order, without overlaps.
/// Every reported range starts and ends on an ASCII byte.
pub fn find_emails(text: &[u8], found: impl FnMut(usize, usize)) {
    scan(text, false, found)
}

/// [`find_emails`] in raw JSON: a backslash escape before an address is not part of it.
pub fn find_emails_in_json(text: &[u8], found: impl FnMut(usize, usize)) {
    scan(text, true, found)
}

fn scan(text: &[u8], json: bool, mut found: impl FnMut(usize, usize)) {
    let mut floor = 0; // no address may start before the end of the previous one
    let mut from = 0;
    while let Some(offset) = memchr(b'@', &text[from..]) {
        let at = from + offset;
        from = at + 1;

        let mut start = at;
        while start > floor && is_local(text[start - 1]) {
            start -= 1;
        }
        if json {
            start = skip_json_escape(text, floor, start, at);
        }
        while start < at && text[start] == b'.' {
            start += 1;
        }
        if start == at {
            continue;
        }

        let mut end = at + 1;
        while end < text.len() && is_domain(text[end]) {
            end += 1;
        }
        while end > at + 1 && matches!(text[end - 1], b'.' | b'-') {
            end -= 1;
        }
        let domain = &text[at + 1..end];
        let Some(dot) = domain.iter().rposition(|&b| b == b'.') else {
            continue;
        };
        let top = &domain[dot + 1..];
        if dot == 0
            || top.len() < 2
            || !top.iter().all(u8::is_ascii_alphabetic)
            || domain.windows(2).any(|w| w == b"..")
        {
            continue;
        }
        found(start, end);
        floor = end;
        from = end;
    }
}

/// If the local part starting at `start` is preceded by an unescaped backslash, its first
/// characters belong to a JSON escape (`\n`, `\u00e9`): returns where the address really starts.
fn skip_json_escape(text: &[u8], floor: usize, start: usize, at: usize) -> usize {
    let backslashes = text[floor..start].iter().rev().take_while(|&&b| b == b'\\').count();
    if backslashes % 2 == 0 {
        return start;
    }
    let hex4 = text.get(start + 1..start + 5).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
    let skip = if text[start] == b'u' && hex4 { 5 } else { 1 };
    (start + skip).min(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(text: &str) -> String {
        let mut out = String::new();
        if redact_into(text, "[redacted]", &mut out) { out } else { text.to_string() }
    }

    fn redact_json(text: &str) -> String {
        let mut out = String::new();
        if redact_json_into(text, "[redacted]", &mut out) { out } else { text.to_string() }
    }

    #[test]
    fn replaces_addresses() {
        assert_eq!(redact("mail bob@example.com now"), "mail [redacted] now");
        assert_eq!(redact("a.b+c@mail.example.org, x_y@z.io."), "[redacted], [redacted].");
        assert_eq!(redact("no address @ here, a@b, a@b.c, @x.com"), "no address @ here, a@b, a@b.c, @x.com");
    }

    #[test]
    fn keeps_json_escapes_intact() {
        assert_eq!(redact_json(r#"{"t":"hi\nbob@example.com"}"#), r#"{"t":"hi\n[redacted]"}"#);
        assert_eq!(redact_json(r#"{"t":"\u00e9bob@example.com"}"#), r#"{"t":"\u00e9[redacted]"}"#);
        assert_eq!(redact_json(r#"{"t":"\\bob@example.com"}"#), r#"{"t":"\\[redacted]"}"#);
        // Decoded text has no escapes: a backslash is a character like any other.
        assert_eq!(redact("a\\bob@example.com"), "a\\[redacted]");
    }

    #[test]
    fn leaves_non_ascii_alone() {
        assert_eq!(redact("é bob@example.com ü"), "é [redacted] ü");
    }
}
