//! Content codings (RFC 9110, section 8.4.1) of the bodies and event streams a chain inspects.
//!
//! A guarded route asks its upstream for `identity`, but an upstream may compress anyway; such
//! a body is decoded here as it streams, inspected, and sent on as identity: a compressed body
//! is never forwarded uninspected. Decoding is incremental, so what a decoder may produce is
//! bounded by the limits applied to its output (`max_body_bytes` for a body, `max_event_bytes`
//! per event of a stream), not by the size of the compressed input: a compression bomb is cut
//! off at the limit, never expanded in memory.

use super::BoxError;
use super::body::AnyBody;
use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZlibDecoder, ZstdDecoder};
use bytes::Bytes;
use futures_util::StreamExt as _;
use http::HeaderMap;
use http::header::CONTENT_ENCODING;
use http_body_util::{BodyDataStream, BodyExt as _, StreamBody};
use tokio::io::{AsyncBufRead, AsyncRead};
use tokio_util::io::{ReaderStream, StreamReader};

/// The largest zstd window accepted, as a power of two: 8 MiB, the bound RFC 9659 sets for
/// zstd in HTTP (a frame that asks for more is a decoding error, not a large allocation).
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// A body's content coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Coding {
    Identity,
    Gzip,
    /// `deflate` in HTTP is the zlib format (RFC 1950).
    Deflate,
    Brotli,
    Zstd,
}

impl Coding {
    /// The coding named by `Content-Encoding`, or the value that is not one this proxy decodes
    /// (an unknown coding, or several stacked).
    pub(super) fn of(headers: &HeaderMap) -> Result<Coding, String> {
        let mut codings = headers
            .get_all(CONTENT_ENCODING)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("\u{fffd}").split(','))
            .map(str::trim)
            .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"));
        let Some(first) = codings.next() else { return Ok(Coding::Identity) };
        if codings.next().is_some() {
            return Err(format!("{:?}", headers.get_all(CONTENT_ENCODING).iter().collect::<Vec<_>>()));
        }
        Ok(match first.to_ascii_lowercase().as_str() {
            "gzip" | "x-gzip" => Coding::Gzip,
            "deflate" => Coding::Deflate,
            "br" => Coding::Brotli,
            "zstd" => Coding::Zstd,
            _ => return Err(first.to_string()),
        })
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Coding::Identity => "identity",
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
        }
    }

    /// `body` decoded, as it streams. A corrupt input becomes an error frame of the body.
    pub(super) fn decode(self, body: AnyBody) -> AnyBody {
        match self {
            Coding::Identity => body,
            Coding::Gzip => {
                let mut decoder = GzipDecoder::new(reader(body));
                decoder.multiple_members(true);
                reader_body(decoder)
            }
            Coding::Deflate => reader_body(ZlibDecoder::new(reader(body))),
            Coding::Brotli => reader_body(BrotliDecoder::new(reader(body))),
            Coding::Zstd => reader_body(ZstdDecoder::with_params(
                reader(body),
                &[async_compression::zstd::DParameter::window_log_max(ZSTD_WINDOW_LOG_MAX)],
            )),
        }
    }
}

fn reader(body: AnyBody) -> impl AsyncBufRead + Send + 'static {
    StreamReader::new(BodyDataStream::new(body).map(|chunk| chunk.map_err(std::io::Error::other)))
}

fn reader_body(reader: impl AsyncRead + Send + 'static) -> AnyBody {
    let frames = ReaderStream::new(reader)
        .map(|chunk: std::io::Result<Bytes>| chunk.map(http_body::Frame::data).map_err(BoxError::from));
    StreamBody::new(frames).boxed_unsync()
}
