//! An HTTP/1.1 server (placeholder while being built).

pub mod parser;
pub use parser::{
    RequestError, RequestEvent, RequestHead, RequestLimits, RequestParser, DEFAULT_MAX_BODY,
    DEFAULT_MAX_CHUNK_LINE, DEFAULT_MAX_HEADERS, DEFAULT_MAX_HEAD_BYTES, DEFAULT_MAX_URI_LEN,
    MAX_LEADING_EMPTY_BYTES,
};
