//! Record codec: a value is binary protobuf by default, or the canonical proto3 JSON mapping when
//! the record says `content-type: application/json` or, with no such header, starts with `{`.

use crate::events::RejectReason;
use crate::wire::strict::{self, StrictError};
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
    #[error("invalid JSON: {}", tidy_json_error(.0))]
    Json(#[from] serde_json::Error),
    /// Well-formed, but naming a field or enum value the schema does not have (commands only).
    #[error("{0}")]
    Strict(StrictError, Encoding),
}

/// serde_json's message for a value pbjson refuses reads "expected expected one of …": pbjson's
/// `expecting` text already starts with "expected", and serde adds its own.
fn tidy_json_error(e: &serde_json::Error) -> String {
    e.to_string().replace("expected expected", "expected")
}

impl DecodeError {
    /// The bounded reason, as counted and written to the rejected topic.
    pub fn reject_reason(&self) -> RejectReason {
        match self {
            DecodeError::Empty => RejectReason::Empty,
            DecodeError::UnsupportedContentType(_) => RejectReason::ContentType,
            DecodeError::Protobuf(_) => RejectReason::Protobuf,
            DecodeError::Json(_) => RejectReason::Json,
            DecodeError::Strict(_, Encoding::Json) => RejectReason::Json,
            DecodeError::Strict(_, Encoding::Protobuf) => RejectReason::Protobuf,
        }
    }

    /// The code a rejected command's result detail starts with (`"<code>: <message>"`).
    pub fn result_code(&self) -> &'static str {
        match self {
            DecodeError::Strict(e, _) => e.code(),
            _ => "undecodable",
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
            // The usual header, read in place: every record of ingest and of the store reader
            // comes through here, and the general way below allocated twice per record (15%
            // of the store reader's thread under ingest).
            let mime = raw.split(|&b| b == b';').next().unwrap_or_default();
            if let Some(encoding) = encoding_of_mime(mime.trim_ascii()) {
                return Ok(encoding);
            }
            // Anything else: Unicode whitespace trimmed too, and the text in the error.
            let text = String::from_utf8_lossy(raw);
            let mime = text.split(';').next().unwrap_or_default().trim();
            encoding_of_mime(mime.as_bytes()).ok_or_else(|| {
                DecodeError::UnsupportedContentType(text.chars().take(100).collect())
            })
        }
        None if payload.first() == Some(&b'{') => Ok(Encoding::Json),
        None => Ok(Encoding::Protobuf),
    }
}

/// The encoding of a media type with nothing around it, in any ASCII case.
fn encoding_of_mime(mime: &[u8]) -> Option<Encoding> {
    const JSON: &[u8] = b"application/json";
    const PROTOBUF: [&[u8]; 4] = [
        b"application/x-protobuf",
        b"application/protobuf",
        b"application/vnd.google.protobuf",
        b"application/octet-stream",
    ];
    if mime.eq_ignore_ascii_case(JSON) {
        Some(Encoding::Json)
    } else if PROTOBUF.iter().any(|p| mime.eq_ignore_ascii_case(p)) {
        Some(Encoding::Protobuf)
    } else {
        None
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

/// Decodes a record value as message `T` (full name `name`), strictly: a field or enum value
/// the schema does not know is an error, in JSON (by name) and in protobuf (by number). For
/// commands, whose meaning must not change silently (docs/design.md §3 *Strictness*).
pub fn decode_strict<T>(
    name: &str,
    content_type: Option<&[u8]>,
    payload: Option<&[u8]>,
) -> Result<T, DecodeError>
where
    T: Message + Default + DeserializeOwned,
{
    let payload = payload.ok_or(DecodeError::Empty)?;
    match detect(content_type, payload)? {
        Encoding::Protobuf => {
            let msg = T::decode(payload)?;
            strict::check_protobuf(name, payload)
                .map_err(|e| DecodeError::Strict(e, Encoding::Protobuf))?;
            Ok(msg)
        }
        Encoding::Json => {
            let value: serde_json::Value = serde_json::from_slice(payload)?;
            strict::check_json(name, &value).map_err(|e| DecodeError::Strict(e, Encoding::Json))?;
            Ok(serde_json::from_value(value)?)
        }
    }
}

/// The `command_id` (field 1) of a command that may not decode as a whole, read leniently so an
/// undecodable command can still be answered under its id: from JSON, the top-level
/// `commandId` / `command_id` string if it comes before whatever breaks; from protobuf, the last
/// field 1 read before the input stops making sense.
pub fn command_id_hint(content_type: Option<&[u8]>, payload: Option<&[u8]>) -> Option<String> {
    let payload = payload?;
    let id = match detect(content_type, payload).ok()? {
        Encoding::Json => json_command_id(payload),
        Encoding::Protobuf => protobuf_field_1(payload),
    }?;
    (!id.trim().is_empty()).then_some(id)
}

fn json_command_id(payload: &[u8]) -> Option<String> {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

    /// Visits the top-level object and keeps the id as soon as it is read: a syntax error
    /// further on ends the visit but not what was already found.
    struct Seek<'a>(&'a mut Option<String>);
    impl<'de> DeserializeSeed<'de> for Seek<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Seek<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<String>()? {
                if self.0.is_none() && (key == "commandId" || key == "command_id") {
                    // A non-string id is no id.
                    if let Ok(id) = map.next_value::<String>() {
                        *self.0 = Some(id);
                    }
                    // Nothing after the id can change it.
                    return Ok(());
                }
                map.next_value::<IgnoredAny>()?;
            }
            Ok(())
        }
    }

    let mut found = None;
    let mut de = serde_json::Deserializer::from_slice(payload);
    let _ = Seek(&mut found).deserialize(&mut de);
    found
}

fn protobuf_field_1(mut buf: &[u8]) -> Option<String> {
    fn varint(buf: &mut &[u8]) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = buf.split_first()?;
            *buf = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
    let mut found = None;
    while !buf.is_empty() {
        let Some(key) = varint(&mut buf) else { break };
        let skip = match key & 7 {
            0 => {
                if varint(&mut buf).is_none() {
                    break;
                }
                0
            }
            1 => 8,
            5 => 4,
            2 => {
                let Some(len) = varint(&mut buf).and_then(|l| usize::try_from(l).ok()) else {
                    break;
                };
                if len > buf.len() {
                    break;
                }
                if key >> 3 == 1 {
                    match std::str::from_utf8(&buf[..len]) {
                        Ok(id) => found = Some(id.to_string()),
                        Err(_) => break,
                    }
                }
                len
            }
            _ => break,
        };
        if skip > buf.len() {
            break;
        }
        buf = &buf[skip..];
    }
    found
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::pb::RecoveryCommand;

    const JSON_CT: Option<&[u8]> = Some(b"application/json");

    #[test]
    fn a_command_id_is_read_from_input_that_does_not_decode() {
        let hint = |raw: &str| command_id_hint(JSON_CT, Some(raw.as_bytes()));
        assert_eq!(
            hint(r#"{"commandId":"c1","action":"#).as_deref(),
            Some("c1")
        );
        assert_eq!(
            hint(r#"{"action":"EXPLODE","command_id":"c2"}"#).as_deref(),
            Some("c2")
        );
        assert_eq!(hint(r#"{"commandId":"c3", oops}"#).as_deref(), Some("c3"));
        assert_eq!(hint(r#"{"commandId":7}"#), None);
        assert_eq!(hint(r#"{"commandId":"  "}"#), None);
        assert_eq!(hint(r#"{"a": [1, }"commandId":"c4"}"#), None);
        assert_eq!(hint("not json"), None);
        let pb = prost::Message::encode_to_vec(&RecoveryCommand {
            command_id: "c5".into(),
            action: 99,
            ..Default::default()
        });
        let mut broken = pb.clone();
        broken.extend([0x0a, 0x50]); // field 1, length 80, cut short
        assert_eq!(command_id_hint(None, Some(&pb)).as_deref(), Some("c5"));
        assert_eq!(command_id_hint(None, Some(&broken)).as_deref(), Some("c5"));
        assert_eq!(command_id_hint(None, Some(&[0xff; 8])), None);
    }

    #[test]
    fn strict_decoding_refuses_what_lenient_decoding_ignores() {
        let raw = br#"{"commandId":"c","action":"RESTART","all":true,"dryrun":true}"#;
        assert!(decode::<RecoveryCommand>(JSON_CT, Some(raw)).is_ok());
        let e = decode_strict::<RecoveryCommand>(strict::RECOVERY_COMMAND, JSON_CT, Some(raw))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"unknown field "dryrun" in RecoveryCommand"#
        );
        assert_eq!(e.result_code(), "unknown_field");
        let ok = br#"{"commandId":"c","action":"RESTART","all":true,"dryRun":true}"#;
        let cmd =
            decode_strict::<RecoveryCommand>(strict::RECOVERY_COMMAND, JSON_CT, Some(ok)).unwrap();
        assert!(cmd.dry_run);
    }

    /// The in-place reading of the header answers as the general one: parameters, ASCII case
    /// and whitespace, Unicode whitespace (general way only), unknown types, bad UTF-8.
    #[test]
    fn content_types_are_read_alike_in_place_and_the_general_way() {
        let by_header = |ct: &[u8]| detect(Some(ct), b"{").map_err(|e| e.to_string());
        for ct in [
            &b"application/json"[..],
            b"Application/JSON; charset=utf-8",
            b"  application/x-protobuf\t;v=1",
            b"application/PROTOBUF",
            b"application/vnd.google.protobuf",
            b"application/octet-stream ",
        ] {
            assert!(
                encoding_of_mime(
                    ct.split(|&b| b == b';')
                        .next()
                        .unwrap_or_default()
                        .trim_ascii()
                )
                .is_some(),
                "{ct:?}"
            );
        }
        assert_eq!(by_header(b"application/json"), Ok(Encoding::Json));
        assert_eq!(
            by_header(b" Application/JSON ; charset=utf-8"),
            Ok(Encoding::Json)
        );
        assert_eq!(
            by_header(b"application/octet-stream"),
            Ok(Encoding::Protobuf)
        );
        // Not ASCII whitespace: the general way trims it, as before.
        assert_eq!(
            by_header("\u{a0}application/json".as_bytes()),
            Ok(Encoding::Json)
        );
        assert_eq!(
            by_header(b"text/plain"),
            Err(
                "unsupported content-type `text/plain` (expected application/json or \
                 application/x-protobuf)"
                    .to_string()
            )
        );
        assert!(by_header(b"application/json\xff").is_err());
        assert!(by_header(b"").is_err() && by_header(b" ; json").is_err());
        assert_eq!(detect(None, b"{}").ok(), Some(Encoding::Json));
        assert_eq!(detect(None, b"\x0a").ok(), Some(Encoding::Protobuf));
    }

    #[test]
    fn a_refused_enum_number_says_expected_once() {
        let e = decode::<crate::wire::pb::FailureCallbackInfo>(JSON_CT, Some(br#"{"state":99}"#))
            .map(|_| ())
            .unwrap_err();
        assert!(!e.to_string().contains("expected expected"), "{e}");
    }
}
