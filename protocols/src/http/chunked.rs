//! [`ChunkedDecoder`]: the `chunked` transfer coding (RFC 9112 §7.1),
//! sans-IO, shared by the response parser and the request parser.
//!
//! Chunk data is handed out as slices of the caller's input, never copied;
//! the decoder buffers only a chunk-size line (at most
//! [`ChunkedLimits::max_chunk_line`]), the two bytes of a chunk's CRLF, and
//! the trailer section (at most [`ChunkedLimits::max_trailer_bytes`] plus
//! one byte). The decoded size is checked against
//! [`ChunkedLimits::max_body`] as soon as a chunk-size line announces it,
//! before any of the chunk arrives.

use super::error::{excerpt, HttpError};
use super::parser::Header;
use super::wire::{collect_section, take};

/// What a [`ChunkedDecoder`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkedLimits {
    /// Bytes of one chunk-size line (size, extensions, CRLF).
    pub max_chunk_line: usize,
    /// Bytes of the trailer section.
    pub max_trailer_bytes: usize,
    /// Trailer fields.
    pub max_trailers: usize,
    /// Decoded body bytes.
    pub max_body: u64,
}

/// What [`ChunkedDecoder::decode`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Chunk<'a> {
    /// A piece of chunk data (never empty).
    Data(&'a [u8]),
    /// The trailer fields (only when there are some); `End` follows.
    Trailers(Vec<Header>),
    /// The last chunk and the trailer section have been read.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Collecting a chunk-size line in `buf`.
    Size,
    /// Inside a chunk.
    Data { remaining: u64 },
    /// The CRLF after a chunk's data; `buf` holds what arrived of it.
    DataEnd,
    /// Collecting the trailer section in `buf`.
    Trailers,
    /// The trailers were returned; `End` is next.
    TrailersGiven,
    /// `End` was returned.
    Done,
}

/// A sans-IO decoder of one chunked body: see the [module docs](self).
#[derive(Debug)]
pub(crate) struct ChunkedDecoder {
    limits: ChunkedLimits,
    state: ChunkState,
    buf: Vec<u8>,
    received: u64,
}

impl ChunkedDecoder {
    /// A decoder at the start of a chunked body.
    pub fn new(limits: ChunkedLimits) -> ChunkedDecoder {
        ChunkedDecoder {
            limits,
            state: ChunkState::Size,
            buf: Vec::new(),
            received: 0,
        }
    }

    /// Bytes held (part of a chunk-size line, a CRLF, the trailers).
    pub fn buffered_len(&self) -> usize {
        self.buf.len()
    }

    /// Decodes from `input`, advancing it past what was consumed: the next
    /// [`Chunk`], or `Ok(None)` when more input is needed (then `input` is
    /// empty) or after [`Chunk::End`] (then `input` holds what followed).
    ///
    /// Errors: [`HttpError::InvalidChunkSize`] (a malformed size line, or
    /// chunk data not followed by CRLF), [`HttpError::BodyTooLarge`],
    /// [`HttpError::HeaderTooLarge`] and [`HttpError::TooManyHeaders`] for
    /// the trailers, [`HttpError::BadHeader`] for a malformed trailer. The
    /// caller keeps errors sticky.
    pub fn decode<'a>(&mut self, input: &mut &'a [u8]) -> Result<Option<Chunk<'a>>, HttpError> {
        loop {
            match self.state {
                ChunkState::Done => return Ok(None),
                ChunkState::TrailersGiven => {
                    self.state = ChunkState::Done;
                    return Ok(Some(Chunk::End));
                }
                ChunkState::Size => {
                    if !self.collect_size_line(input)? {
                        return Ok(None);
                    }
                    let size = self.chunk_size()?;
                    self.buf.clear();
                    if size > self.limits.max_body.saturating_sub(self.received) {
                        return Err(HttpError::BodyTooLarge {
                            limit: self.limits.max_body,
                        });
                    }
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data { remaining: size }
                    };
                }
                ChunkState::Data { remaining } => {
                    if input.is_empty() {
                        return Ok(None);
                    }
                    let data = take(input, remaining);
                    let left = remaining - data.len() as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data { remaining: left }
                    };
                    self.received += data.len() as u64;
                    return Ok(Some(Chunk::Data(data)));
                }
                ChunkState::DataEnd => {
                    while self.buf.len() < 2 {
                        let Some((&b, rest)) = input.split_first() else {
                            return Ok(None);
                        };
                        *input = rest;
                        self.buf.push(b);
                    }
                    if self.buf != b"\r\n" {
                        return Err(HttpError::InvalidChunkSize(format!(
                            "chunk data not followed by CRLF but {:?}",
                            excerpt(&self.buf)
                        )));
                    }
                    self.buf.clear();
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let limit = self.limits.max_trailer_bytes;
                    let Some(end) = collect_section(&mut self.buf, input, limit, true)
                        .map_err(|_| HttpError::HeaderTooLarge { limit })?
                    else {
                        return Ok(None);
                    };
                    let trailers = self.parse_trailers(end)?;
                    self.buf = Vec::new();
                    if trailers.is_empty() {
                        self.state = ChunkState::Done;
                        return Ok(Some(Chunk::End));
                    }
                    self.state = ChunkState::TrailersGiven;
                    return Ok(Some(Chunk::Trailers(trailers)));
                }
            }
        }
    }

    /// Moves bytes into `buf` until the chunk-size line's LF; whether it is
    /// complete.
    fn collect_size_line(&mut self, input: &mut &[u8]) -> Result<bool, HttpError> {
        let limit = self.limits.max_chunk_line;
        let (piece, complete) = match memchr::memchr(b'\n', input) {
            Some(i) => (&input[..=i], true),
            None => (*input, false),
        };
        if self.buf.len() + piece.len() > limit {
            return Err(HttpError::InvalidChunkSize(format!(
                "chunk-size line longer than {limit} bytes"
            )));
        }
        self.buf.extend_from_slice(piece);
        *input = &input[piece.len()..];
        Ok(complete)
    }

    /// The size on the complete chunk-size line in `buf`.
    fn chunk_size(&self) -> Result<u64, HttpError> {
        let line = &self.buf[..];
        let invalid = || HttpError::InvalidChunkSize(format!("{:?}", excerpt(line)));
        // httparse accepts an empty size as 0; a size needs a digit.
        if !line.first().is_some_and(u8::is_ascii_hexdigit) {
            return Err(invalid());
        }
        match httparse::parse_chunk_size(line) {
            Ok(httparse::Status::Complete((used, size))) if used == line.len() => Ok(size),
            // A bare LF, or bytes after the CRLF (cannot happen: the line
            // ends at its first LF).
            _ => Err(invalid()),
        }
    }

    /// Parses the trailer section in `buf[..end]`.
    fn parse_trailers(&self, end: usize) -> Result<Vec<Header>, HttpError> {
        let section = &self.buf[..end];
        if section == b"\r\n" || section == b"\n" {
            return Ok(Vec::new());
        }
        let mut fields = vec![httparse::EMPTY_HEADER; self.limits.max_trailers];
        match httparse::parse_headers(section, &mut fields) {
            Ok(httparse::Status::Complete((_, fields))) => Ok(fields
                .iter()
                .map(|h| (h.name.to_string(), h.value.to_vec()))
                .collect()),
            Ok(httparse::Status::Partial) => Err(HttpError::BadHeader(
                "malformed trailer section".to_string(),
            )),
            Err(httparse::Error::TooManyHeaders) => Err(HttpError::TooManyHeaders {
                limit: self.limits.max_trailers,
            }),
            Err(e) => Err(HttpError::BadHeader(format!("in the trailers: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ChunkedLimits = ChunkedLimits {
        max_chunk_line: 64,
        max_trailer_bytes: 64,
        max_trailers: 4,
        max_body: 32,
    };

    /// Body, trailers and the input left after the end.
    type Decoded = (Vec<u8>, Vec<Header>, Vec<u8>);

    /// Decodes `input` fed byte by byte.
    fn decode_bytewise(input: &[u8]) -> Result<Decoded, HttpError> {
        let mut d = ChunkedDecoder::new(LIMITS);
        let (mut body, mut trailers) = (Vec::new(), Vec::new());
        for (i, byte) in input.iter().enumerate() {
            let mut piece: &[u8] = std::slice::from_ref(byte);
            while let Some(chunk) = d.decode(&mut piece)? {
                match chunk {
                    Chunk::Data(data) => body.extend_from_slice(data),
                    Chunk::Trailers(t) => trailers = t,
                    Chunk::End => return Ok((body, trailers, input[i + 1..].to_vec())),
                }
            }
            assert!(d.buffered_len() <= 65);
        }
        Err(HttpError::BadHeader("unfinished".into()))
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        let (body, trailers, rest) =
            decode_bytewise(b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\nGET").unwrap();
        assert_eq!(body, b"abcde");
        assert_eq!(trailers, vec![("T".to_string(), b"1".to_vec())]);
        assert_eq!(rest, b"GET");
    }

    #[test]
    fn refuses_what_is_too_large_or_malformed() {
        assert!(matches!(
            decode_bytewise(b"21\r\n"),
            Err(HttpError::BodyTooLarge { limit: 32 })
        ));
        assert!(matches!(
            decode_bytewise(b"3\r\nabcXY"),
            Err(HttpError::InvalidChunkSize(_))
        ));
        assert!(matches!(
            decode_bytewise(b"x\r\n"),
            Err(HttpError::InvalidChunkSize(_))
        ));
        let long = format!("1;{}\r\n", "e".repeat(80));
        assert!(matches!(
            decode_bytewise(long.as_bytes()),
            Err(HttpError::InvalidChunkSize(_))
        ));
        let big_trailer = format!("0\r\nX: {}\r\n\r\n", "y".repeat(80));
        assert!(matches!(
            decode_bytewise(big_trailer.as_bytes()),
            Err(HttpError::HeaderTooLarge { limit: 64 })
        ));
    }
}
