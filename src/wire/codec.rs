//! Record codec: a value is binary protobuf by default, or the canonical proto3 JSON mapping when
//! the record says `content-type: application/json` or, with no such header, starts with `{`.

use crate::events::RejectReason;
use prost::Message;
use serde::{de::DeserializeOwned, Serialize};

use crate::config::OutputEncoding;

/// Header naming a record's encoding.
pub const CONTENT_TYPE: &str = "content-type";
pub const JSON: &str = "application/json";
pub const PROTOBUF: &str = "application/x-protobuf";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl From<OutputEncoding> for Encoding {
    fn from(e: OutputEncoding) -> Self {
        match e {
            OutputEncoding::Protobuf => Encoding::Protobuf,
            OutputEncoding::Json => Encoding::Json,
        }
    }
}

impl Encoding {
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => PROTOBUF,
            Encoding::Json => JSON,
        }
    }
}

/// Why a record could not be decoded. [`DecodeError::reason`] is the short, bounded code used in
/// metric labels and rejected-record headers.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("record has no value")]
    Empty,
    #[error("unsupported content-type `{0}` (expected {JSON} or {PROTOBUF})")]
    UnsupportedContentType(String),
    #[error("invalid protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl DecodeError {
    /// The bounded reason, as counted and written to the rejected topic.
    pub fn reject_reason(&self) -> RejectReason {
        match self {
            DecodeError::Empty => RejectReason::Empty,
            DecodeError::UnsupportedContentType(_) => RejectReason::ContentType,
            DecodeError::Protobuf(_) => RejectReason::Protobuf,
            DecodeError::Json(_) => RejectReason::Json,
        }
    }

    pub fn reason(&self) -> &'static str {
        self.reject_reason().as_str()
    }
}

/// The value of a record's `content-type` header, if it has one.
pub fn content_type_of<H: rdkafka::message::Headers>(headers: Option<&H>) -> Option<&[u8]> {
    headers.and_then(|h| {
        h.iter()
            .find(|hd| hd.key.eq_ignore_ascii_case(CONTENT_TYPE))
            .and_then(|hd| hd.value)
    })
}

/// Decides the encoding from the `content-type` header, or by sniffing when it is absent.
pub fn detect(content_type: Option<&[u8]>, payload: &[u8]) -> Result<Encoding, DecodeError> {
    match content_type {
        Some(raw) => {
            let text = String::from_utf8_lossy(raw);
            let mime = text
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            match mime.as_str() {
                "application/json" => Ok(Encoding::Json),
                "application/x-protobuf"
                | "application/protobuf"
                | "application/vnd.google.protobuf"
                | "application/octet-stream" => Ok(Encoding::Protobuf),
                _ => Err(DecodeError::UnsupportedContentType(
                    text.chars().take(100).collect(),
                )),
            }
        }
        None if payload.first() == Some(&b'{') => Ok(Encoding::Json),
        None => Ok(Encoding::Protobuf),
    }
}

/// Decodes a record value as message `T`.
pub fn decode<T>(content_type: Option<&[u8]>, payload: Option<&[u8]>) -> Result<T, DecodeError>
where
    T: Message + Default + DeserializeOwned,
{
    let payload = payload.ok_or(DecodeError::Empty)?;
    match detect(content_type, payload)? {
        Encoding::Protobuf => Ok(T::decode(payload)?),
        Encoding::Json => Ok(serde_json::from_slice(payload)?),
    }
}

/// Encodes a message for a record value.
pub fn encode<T>(msg: &T, encoding: Encoding) -> Vec<u8>
where
    T: Message + Serialize,
{
    match encoding {
        Encoding::Protobuf => msg.encode_to_vec(),
        // pbjson's Serialize impls write only maps, strings and numbers: cannot fail.
        Encoding::Json => serde_json::to_vec(msg).unwrap_or_default(),
    }
}
