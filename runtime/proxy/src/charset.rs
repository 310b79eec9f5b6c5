//! Character encodings of the text a chain inspects: everything reaches the chain, and leaves the
//! proxy, as UTF-8.
//!
//! A receiver may read bytes in another encoding than the proxy would: Python's `json.loads` on
//! bytes (MCP SDK servers) detects UTF-16 and UTF-32 from the pattern of NUL bytes that JSON's
//! ASCII start makes (RFC 4627, section 3), and text clients honour a `charset` label. Were the
//! proxy to read such a body as UTF-8 (which UTF-16 text without a byte-order mark often is, byte
//! for byte), its chain would judge other text than the receiver reads. So:
//!
//! - a byte-order mark, then the NUL pattern, decide UTF-16 or UTF-32 (whatever the label says: a
//!   receiver that detects reads it so);
//! - otherwise a `charset` label other than UTF-8 is honoured for a whole body, unless the bytes
//!   are also UTF-8 and read differently that way: then the two readings disagree and the body is
//!   refused, since the proxy cannot know which one its receiver uses;
//! - event streams and JSON lines are UTF-8 unless a byte-order mark or the NUL pattern says
//!   otherwise (the WHATWG rule for event streams; RFC 8259 for JSON);
//! - what was decoded is sent on as UTF-8, labelled so.
//!
//! UTF-16 is decoded by `encoding_rs`; UTF-32 (which the WHATWG Encoding Standard, and so
//! `encoding_rs`, leaves out) by hand below: four bytes to a scalar value.

use bytes::{Bytes, BytesMut};
use std::borrow::Cow;

/// The encoding a text's bytes are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TextEncoding {
    Utf8,
    Utf16Le,
    Utf16Be,
    Utf32Le,
    Utf32Be,
    /// Another encoding a `charset` label names (windows-1252, Shift_JIS, ...).
    Labelled(&'static encoding_rs::Encoding),
}

/// Why a text cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum CharsetError {
    /// The label names no encoding this proxy knows.
    #[error("the charset `{0}` is not known")]
    Unknown(String),
    /// The bytes are not valid in their encoding.
    #[error("the body is not valid {0}")]
    Malformed(&'static str),
    /// The bytes read one way as UTF-8 and another way in the labelled charset.
    #[error("the body reads differently as UTF-8 and as its label's charset `{0}`")]
    Ambiguous(String),
}

impl TextEncoding {
    pub(super) fn name(self) -> &'static str {
        match self {
            TextEncoding::Utf8 => "UTF-8",
            TextEncoding::Utf16Le => "UTF-16LE",
            TextEncoding::Utf16Be => "UTF-16BE",
            TextEncoding::Utf32Le => "UTF-32LE",
            TextEncoding::Utf32Be => "UTF-32BE",
            TextEncoding::Labelled(encoding) => encoding.name(),
        }
    }

    /// The encoding the first bytes of a text show, by byte-order mark or by the NUL pattern of
    /// RFC 4627 (a text that starts with two ASCII characters), and the length of the mark.
    /// `None` while too few bytes have arrived to tell (`complete`: no more will).
    pub(super) fn detect(prefix: &[u8], complete: bool) -> Option<(TextEncoding, usize)> {
        use TextEncoding::*;
        if prefix.len() < 4 && !complete {
            // Wait only if these bytes could begin a mark or a NUL pattern.
            let maybe = prefix.len() < 2 || [0x00, 0xEF, 0xFE, 0xFF].contains(&prefix[0]) || prefix[1] == 0;
            return if maybe { None } else { Some((Utf8, 0)) };
        }
        Some(match prefix {
            [0xEF, 0xBB, 0xBF, ..] => (Utf8, 3),
            [0x00, 0x00, 0xFE, 0xFF, ..] => (Utf32Be, 4),
            [0xFF, 0xFE, 0x00, 0x00, ..] => (Utf32Le, 4),
            [0xFE, 0xFF, ..] => (Utf16Be, 2),
            [0xFF, 0xFE, ..] => (Utf16Le, 2),
            [0x00, 0x00, 0x00, _, ..] => (Utf32Be, 0),
            [_, 0x00, 0x00, 0x00, ..] => (Utf32Le, 0),
            [0x00, _, ..] => (Utf16Be, 0),
            [_, 0x00, ..] => (Utf16Le, 0),
            _ => (Utf8, 0),
        })
    }

    /// The encoding a `charset` label names (`None` for UTF-8 or no label).
    pub(super) fn from_label(label: Option<&str>) -> Result<Option<TextEncoding>, CharsetError> {
        let Some(label) = label else { return Ok(None) };
        let encoding = encoding_rs::Encoding::for_label(label.trim().as_bytes())
            .ok_or_else(|| CharsetError::Unknown(label.chars().take(40).collect()))?;
        Ok(Some(if encoding == encoding_rs::UTF_8 {
            return Ok(None);
        } else if encoding == encoding_rs::UTF_16LE {
            TextEncoding::Utf16Le
        } else if encoding == encoding_rs::UTF_16BE {
            TextEncoding::Utf16Be
        } else {
            TextEncoding::Labelled(encoding)
        }))
    }
}

/// A whole body decoded to UTF-8.
#[derive(Debug)]
pub(super) struct Decoded<'a> {
    pub text: Cow<'a, str>,
    /// The text is not the body's bytes (another encoding, or a byte-order mark removed): what is
    /// sent on must be the text, labelled UTF-8.
    pub transcoded: bool,
}

/// `body` as UTF-8 text: decoded by its byte-order mark, its NUL pattern or its `charset` label.
pub(super) fn decode_whole<'a>(body: &'a [u8], label: Option<&str>) -> Result<Decoded<'a>, CharsetError> {
    let (detected, mark) = TextEncoding::detect(body, true).unwrap_or((TextEncoding::Utf8, 0));
    let encoding = match (detected, mark) {
        (TextEncoding::Utf8, 0) => match TextEncoding::from_label(label)? {
            None => TextEncoding::Utf8,
            Some(labelled) => {
                // The bytes may also be UTF-8; if they read differently that way, whoever reads
                // them may read either.
                if let Ok(as_utf8) = std::str::from_utf8(body) {
                    if decode(labelled, body).ok().as_deref() != Some(as_utf8) {
                        return Err(CharsetError::Ambiguous(label.unwrap_or_default().chars().take(40).collect()));
                    }
                    return Ok(Decoded { text: Cow::Borrowed(as_utf8), transcoded: false });
                }
                labelled
            }
        },
        (detected, _) => detected,
    };
    let rest = &body[mark..];
    if encoding == TextEncoding::Utf8 {
        let text = std::str::from_utf8(rest).map_err(|_| CharsetError::Malformed("UTF-8"))?;
        return Ok(Decoded { text: Cow::Borrowed(text), transcoded: mark > 0 });
    }
    Ok(Decoded { text: Cow::Owned(decode(encoding, rest)?), transcoded: true })
}

/// `bytes` (no byte-order mark) decoded strictly from `encoding`.
pub(super) fn decode(encoding: TextEncoding, bytes: &[u8]) -> Result<String, CharsetError> {
    let malformed = CharsetError::Malformed(encoding.name());
    let with = |encoding: &'static encoding_rs::Encoding| {
        encoding
            .decode_without_bom_handling_and_without_replacement(bytes)
            .map(Cow::into_owned)
            .ok_or(malformed.clone())
    };
    match encoding {
        TextEncoding::Utf8 => std::str::from_utf8(bytes).map(str::to_string).map_err(|_| malformed.clone()),
        TextEncoding::Utf16Le => with(encoding_rs::UTF_16LE),
        TextEncoding::Utf16Be => with(encoding_rs::UTF_16BE),
        TextEncoding::Labelled(encoding) => with(encoding),
        TextEncoding::Utf32Le | TextEncoding::Utf32Be => {
            if !bytes.len().is_multiple_of(4) {
                return Err(malformed);
            }
            let mut text = String::with_capacity(bytes.len() / 4);
            for unit in bytes.chunks_exact(4) {
                text.push(utf32_char(encoding == TextEncoding::Utf32Le, unit).ok_or(malformed.clone())?);
            }
            Ok(text)
        }
    }
}

/// One UTF-32 code unit as a character (`None`: a surrogate or beyond U+10FFFF).
fn utf32_char(little_endian: bool, unit: &[u8]) -> Option<char> {
    let unit: [u8; 4] = unit.try_into().ok()?;
    char::from_u32(if little_endian { u32::from_le_bytes(unit) } else { u32::from_be_bytes(unit) })
}

/// A text stream (an event stream, JSON lines) as UTF-8: UTF-16 and UTF-32, told by a
/// byte-order mark or the NUL pattern of the first bytes, are decoded as they arrive (invalid
/// sequences become U+FFFD, as the event stream rules say); anything else passes untouched, chunk
/// for chunk, without a copy. One per upstream body.
#[derive(Default)]
pub(super) struct StreamDecoder {
    /// Bytes held until the encoding can be told (at most three).
    pending: BytesMut,
    mode: Option<Mode>,
}

enum Mode {
    Utf8,
    Utf16(encoding_rs::Decoder),
    Utf32 { little_endian: bool, carry: Vec<u8> },
}

impl StreamDecoder {
    /// Takes `data` (`last`: the stream has ended, `data` is empty); returns what is ready to go
    /// on, if anything.
    pub(super) fn feed(&mut self, data: Bytes, last: bool) -> Option<Bytes> {
        let data = if self.mode.is_none() {
            self.pending.extend_from_slice(&data);
            let (encoding, mark) = TextEncoding::detect(&self.pending, last)?;
            self.mode = Some(match encoding {
                TextEncoding::Utf16Le => Mode::Utf16(encoding_rs::UTF_16LE.new_decoder_without_bom_handling()),
                TextEncoding::Utf16Be => Mode::Utf16(encoding_rs::UTF_16BE.new_decoder_without_bom_handling()),
                TextEncoding::Utf32Le => Mode::Utf32 { little_endian: true, carry: Vec::new() },
                TextEncoding::Utf32Be => Mode::Utf32 { little_endian: false, carry: Vec::new() },
                // A UTF-8 mark stays for the event-stream and line parsers, which drop it.
                TextEncoding::Utf8 | TextEncoding::Labelled(_) => Mode::Utf8,
            });
            let mut held = std::mem::take(&mut self.pending).freeze();
            if !matches!(self.mode, Some(Mode::Utf8)) {
                let _ = held.split_to(mark);
            }
            held
        } else {
            data
        };
        let out = match self.mode.as_mut()? {
            Mode::Utf8 => data,
            Mode::Utf16(decoder) => {
                let mut text = String::with_capacity(decoder.max_utf8_buffer_length(data.len()).unwrap_or(0));
                let _ = decoder.decode_to_string(&data, &mut text, last);
                Bytes::from(text)
            }
            Mode::Utf32 { little_endian, carry } => {
                carry.extend_from_slice(&data);
                let whole = carry.len() - carry.len() % 4;
                let mut text = String::with_capacity(whole);
                for unit in carry[..whole].chunks_exact(4) {
                    text.push(utf32_char(*little_endian, unit).unwrap_or(char::REPLACEMENT_CHARACTER));
                }
                carry.drain(..whole);
                if last && !carry.is_empty() {
                    text.push(char::REPLACEMENT_CHARACTER);
                }
                Bytes::from(text)
            }
        };
        (!out.is_empty() || last).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16le(text: &str) -> Vec<u8> {
        text.encode_utf16().flat_map(u16::to_le_bytes).collect()
    }

    fn utf16be(text: &str) -> Vec<u8> {
        text.encode_utf16().flat_map(u16::to_be_bytes).collect()
    }

    fn utf32(text: &str, le: bool) -> Vec<u8> {
        text.chars().flat_map(|c| if le { (c as u32).to_le_bytes() } else { (c as u32).to_be_bytes() }).collect()
    }

    const JSON: &str = r#"{"method":"tools/call","params":{"name":"sécret"}}"#;

    #[test]
    fn json_in_utf16_and_utf32_is_read_whatever_the_label() {
        for (bytes, label) in [
            (utf16le(JSON), None),
            (utf16be(JSON), None),
            (utf32(JSON, true), None),
            (utf32(JSON, false), None),
            (utf16le(JSON), Some("utf-8")),
            ([&[0xFF, 0xFE][..], &utf16le(JSON)].concat(), None),
            ([&[0xFE, 0xFF][..], &utf16be(JSON)].concat(), Some("utf-8")),
            ([&[0, 0, 0xFE, 0xFF][..], &utf32(JSON, false)].concat(), None),
            ([&b"\xEF\xBB\xBF"[..], JSON.as_bytes()].concat(), None),
        ] {
            let decoded = decode_whole(&bytes, label).unwrap();
            assert_eq!(decoded.text, JSON, "{label:?} {:?}", &bytes[..4]);
            assert!(decoded.transcoded);
        }
        let plain = decode_whole(JSON.as_bytes(), None).unwrap();
        assert!(!plain.transcoded && plain.text == JSON);
    }

    #[test]
    fn labels_are_honoured_unless_the_bytes_read_otherwise_as_utf8() {
        let latin1 = b"caf\xe9 bob@example.com";
        let decoded = decode_whole(latin1, Some("ISO-8859-1")).unwrap();
        assert_eq!((decoded.text.as_ref(), decoded.transcoded), ("café bob@example.com", true));
        assert_eq!(decode_whole(b"ascii only", Some("windows-1252")).unwrap().text, "ascii only");
        assert!(matches!(decode_whole("café".as_bytes(), Some("iso-8859-1")), Err(CharsetError::Ambiguous(_))));
        assert!(matches!(decode_whole(b"{\"a\":1}", Some("utf-16")), Err(CharsetError::Ambiguous(_))));
        assert!(matches!(decode_whole(b"x", Some("klingon")), Err(CharsetError::Unknown(_))));
        assert!(matches!(decode_whole(b"\xff\xfe\x00\xd8", None), Err(CharsetError::Malformed(_))));
        assert!(matches!(decode_whole(b"caf\xe9", None), Err(CharsetError::Malformed("UTF-8"))));
    }

    #[test]
    fn detection_waits_only_while_it_must() {
        assert_eq!(TextEncoding::detect(b"da", false), Some((TextEncoding::Utf8, 0)));
        assert_eq!(TextEncoding::detect(b"d", false), None, "`d\\0` would be UTF-16");
        assert_eq!(TextEncoding::detect(b"d\0", false), None);
        assert_eq!(TextEncoding::detect(b"d\0a\0", false), Some((TextEncoding::Utf16Le, 0)));
        assert_eq!(TextEncoding::detect(b"\xEF", false), None);
        assert_eq!(TextEncoding::detect(b"\xEF", true), Some((TextEncoding::Utf8, 0)));
    }

    proptest::proptest! {
        /// Any bytes, any split: no panic, and a stream decodes to what the whole body decodes to
        /// when that is valid (a stream replaces what is invalid; a body is refused).
        #[test]
        fn any_bytes_decode_the_same_streamed_or_whole(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            split in 1usize..9,
        ) {
            let whole = decode_whole(&bytes, None);
            let mut decoder = StreamDecoder::default();
            let mut out = Vec::new();
            for chunk in bytes.chunks(split) {
                out.extend_from_slice(&decoder.feed(Bytes::copy_from_slice(chunk), false).unwrap_or_default());
            }
            out.extend_from_slice(&decoder.feed(Bytes::new(), true).unwrap_or_default());
            if let Ok(decoded) = whole {
                // A UTF-8 mark stays in a stream for its parser to drop.
                let streamed = String::from_utf8_lossy(&out);
                let whole = decoded.text.as_ref();
                proptest::prop_assert!(streamed == whole || streamed == format!("\u{feff}{whole}"), "{:?} {:?}", streamed, whole);
            }
        }
    }

    #[test]
    fn streams_are_decoded_across_any_split() {
        let text = "data: {\"t\":\"bob@example.com \u{1F600}\"}\n\n";
        for encoded in [utf16le(text), utf16be(text), utf32(text, true), utf32(text, false), text.as_bytes().to_vec()] {
            for split in 1..9 {
                let mut decoder = StreamDecoder::default();
                let mut out = Vec::new();
                for chunk in encoded.chunks(split) {
                    out.extend_from_slice(&decoder.feed(Bytes::copy_from_slice(chunk), false).unwrap_or_default());
                }
                out.extend_from_slice(&decoder.feed(Bytes::new(), true).unwrap_or_default());
                assert_eq!(String::from_utf8(out).unwrap(), text, "split {split}");
            }
        }
    }
}
