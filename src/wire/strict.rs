//! Strict decoding for commands (docs/design.md §3 *Strictness*). pbjson is generated with
//! `ignore_unknown_fields` for every message, because failure events must stay readable when
//! their producers are newer than us. A command is different: a misspelt field (`"dryrun"`,
//! `"ids"` for `"dlqIds"`) silently ignored turns a dry run into a real bulk action. So before a
//! command is decoded, its input is checked against the schema `build.rs` extracts from
//! `proto/`: every field name (JSON) or number (protobuf) must be known, at any depth, and every
//! enum value must be one the enum defines.

/// What a field holds, as far as strictness cares.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Scalar,
    /// A message, by full name (no leading dot).
    Message(&'static str),
    /// An enum, by full name.
    Enum(&'static str),
    /// A map: its (generated) entry message, whose field 2 is the value.
    Map(&'static str),
}

#[derive(Debug)]
pub struct Field {
    pub number: u32,
    pub name: &'static str,
    pub json: &'static str,
    pub kind: Kind,
    pub repeated: bool,
}

#[derive(Debug)]
pub struct MessageSchema {
    pub name: &'static str,
    pub fields: &'static [Field],
}

#[derive(Debug)]
pub struct EnumSchema {
    pub name: &'static str,
    pub values: &'static [(&'static str, i32)],
}

include!(concat!(env!("OUT_DIR"), "/schema.rs"));

/// The full name of the command message.
pub const RECOVERY_COMMAND: &str = "workflow.dlq.v1.RecoveryCommand";

/// Longest piece of the input quoted back in an error (a field name can be anything).
const QUOTE_MAX: usize = 100;

/// Why a command's input is refused although its syntax may be fine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrictError {
    #[error("unknown field {name} in {path}")]
    UnknownField { name: String, path: String },
    #[error("unknown field number {number} in {path}")]
    UnknownFieldNumber { number: u64, path: String },
    #[error("unknown value {value} for {path} (enum {enum_name}: {known})")]
    UnknownEnumValue {
        value: String,
        path: String,
        enum_name: &'static str,
        known: String,
    },
}

impl StrictError {
    /// The bounded code a rejected command's result starts with.
    pub fn code(&self) -> &'static str {
        match self {
            StrictError::UnknownField { .. } | StrictError::UnknownFieldNumber { .. } => {
                "unknown_field"
            }
            StrictError::UnknownEnumValue { .. } => "unknown_enum_value",
        }
    }
}

fn message(name: &str) -> Option<&'static MessageSchema> {
    MESSAGES.iter().find(|m| m.name == name)
}

fn enumeration(name: &str) -> Option<&'static EnumSchema> {
    ENUMS.iter().find(|e| e.name == name)
}

/// The last part of a full name: `workflow.dlq.v1.RecoveryCommand.Action` → `Action`.
fn short(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

/// Quotes input text back, cut so an error stays small whatever the input.
fn quote(text: &str) -> String {
    let mut cut: String = text.chars().take(QUOTE_MAX).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

fn unknown_enum(e: &'static EnumSchema, value: String, path: &str) -> StrictError {
    StrictError::UnknownEnumValue {
        value,
        path: path.to_string(),
        enum_name: short(e.name),
        known: e
            .values
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Checks a JSON value meant as message `name` (full name): every key a known field (by JSON or
/// proto name, as the proto3 JSON mapping accepts both), every enum value known. Values of the
/// wrong type are left to the decoder, which names them.
pub fn check_json(name: &str, value: &serde_json::Value) -> Result<(), StrictError> {
    check_message_json(name, value, short(name))
}

fn check_message_json(
    name: &str,
    value: &serde_json::Value,
    path: &str,
) -> Result<(), StrictError> {
    let (Some(schema), Some(object)) = (message(name), value.as_object()) else {
        return Ok(());
    };
    for (key, v) in object {
        let Some(field) = schema
            .fields
            .iter()
            .find(|f| f.json == key || f.name == key)
        else {
            return Err(StrictError::UnknownField {
                name: quote(key),
                path: path.to_string(),
            });
        };
        let path = format!("{path}.{}", field.json);
        match (field.repeated, field.kind, v) {
            (_, Kind::Map(entry), serde_json::Value::Object(map)) => {
                let value_kind = message(entry)
                    .and_then(|m| m.fields.iter().find(|f| f.number == 2))
                    .map_or(Kind::Scalar, |f| f.kind);
                for v in map.values() {
                    check_value_json(value_kind, v, &path)?;
                }
            }
            (true, kind, serde_json::Value::Array(items)) => {
                for v in items {
                    check_value_json(kind, v, &path)?;
                }
            }
            (_, kind, v) => check_value_json(kind, v, &path)?,
        }
    }
    Ok(())
}

fn check_value_json(kind: Kind, v: &serde_json::Value, path: &str) -> Result<(), StrictError> {
    match kind {
        Kind::Scalar | Kind::Map(_) => Ok(()),
        Kind::Message(m) => check_message_json(m, v, path),
        Kind::Enum(e) => {
            let Some(schema) = enumeration(e) else {
                return Ok(());
            };
            let known = match v {
                serde_json::Value::String(s) => schema.values.iter().any(|(n, _)| n == s),
                serde_json::Value::Number(n) => n
                    .as_i64()
                    .is_some_and(|n| schema.values.iter().any(|(_, v)| i64::from(*v) == n)),
                // null (the default) or a wrong type, which the decoder names.
                _ => true,
            };
            if known {
                Ok(())
            } else {
                let shown = match v {
                    serde_json::Value::String(s) => quote(s),
                    other => quote(&other.to_string()).trim_matches('"').to_string(),
                };
                Err(unknown_enum(schema, shown, path))
            }
        }
    }
}

/// A protobuf wire-format reader just deep enough to see field numbers and enum values.
struct Wire<'a> {
    buf: &'a [u8],
}

impl Wire<'_> {
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.buf.split_first()?;
            self.buf = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }
}

/// Checks binary protobuf meant as message `name`: every field number known, every enum value
/// known, at any depth. prost skips unknown fields silently; this is the only place they are
/// seen. Malformed input is left to the decoder (this runs after it succeeded).
pub fn check_protobuf(name: &str, buf: &[u8]) -> Result<(), StrictError> {
    check_message_protobuf(name, buf, short(name))
}

fn check_message_protobuf(name: &str, buf: &[u8], path: &str) -> Result<(), StrictError> {
    let Some(schema) = message(name) else {
        return Ok(());
    };
    let mut w = Wire { buf };
    while !w.buf.is_empty() {
        let Some(key) = w.varint() else {
            return Ok(());
        };
        let (number, wire_type) = (key >> 3, key & 7);
        let Some(field) = schema.fields.iter().find(|f| u64::from(f.number) == number) else {
            return Err(StrictError::UnknownFieldNumber {
                number,
                path: path.to_string(),
            });
        };
        let path = format!("{path}.{}", field.json);
        match wire_type {
            0 => {
                let Some(v) = w.varint() else { return Ok(()) };
                check_enum_number(field.kind, v, &path)?;
            }
            1 => {
                if w.take(8).is_none() {
                    return Ok(());
                }
            }
            5 => {
                if w.take(4).is_none() {
                    return Ok(());
                }
            }
            2 => {
                let Some(len) = w.varint() else { return Ok(()) };
                let Some(body) = usize::try_from(len).ok().and_then(|n| w.take(n)) else {
                    return Ok(());
                };
                match field.kind {
                    Kind::Message(m) | Kind::Map(m) => check_message_protobuf(m, body, &path)?,
                    // A packed repeated enum.
                    Kind::Enum(_) => {
                        let mut packed = Wire { buf: body };
                        while !packed.buf.is_empty() {
                            let Some(v) = packed.varint() else { break };
                            check_enum_number(field.kind, v, &path)?;
                        }
                    }
                    Kind::Scalar => {}
                }
            }
            // Groups (deprecated) and invalid wire types: prost has accepted or refused them.
            _ => return Ok(()),
        }
    }
    Ok(())
}

fn check_enum_number(kind: Kind, raw: u64, path: &str) -> Result<(), StrictError> {
    let Kind::Enum(e) = kind else { return Ok(()) };
    let Some(schema) = enumeration(e) else {
        return Ok(());
    };
    // Enums are int32 on the wire, sign-extended to 64 bits when negative.
    let value = raw as i64 as i32;
    if schema.values.iter().any(|(_, v)| *v == value) {
        Ok(())
    } else {
        Err(unknown_enum(schema, value.to_string(), path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cmd(v: serde_json::Value) -> Result<(), StrictError> {
        check_json(RECOVERY_COMMAND, &v)
    }

    #[test]
    fn known_fields_by_json_or_proto_name_pass() {
        cmd(
            json!({"commandId": "c", "action": 1, "dlqIds": {"ids": ["a"]}, "dry_run": true,
            "overrides": {"flowControl": {"key": "k"}, "retries": 2}, "newRunIds": {"a": "r"}}),
        )
        .unwrap();
    }

    #[test]
    fn an_unknown_field_is_named_with_where_it_is() {
        let e = cmd(json!({"commandId": "c", "dryrun": true})).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"unknown field "dryrun" in RecoveryCommand"#
        );
        assert_eq!(e.code(), "unknown_field");
        let e = cmd(json!({"filter": {"workflowUrls": ["u"]}})).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"unknown field "workflowUrls" in RecoveryCommand.filter"#
        );
        let e = cmd(json!({"overrides": {"flowControl": {"keys": "k"}}})).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"unknown field "keys" in RecoveryCommand.overrides.flowControl"#
        );
        let e = cmd(json!({"dlqIds": {"id": ["a"]}})).unwrap_err();
        assert!(e.to_string().contains("RecoveryCommand.dlqIds"), "{e}");
    }

    #[test]
    fn an_unknown_enum_value_by_name_or_number_is_named_once() {
        let e = cmd(json!({"action": "EXPLODE"})).unwrap_err();
        // The known values are listed, whatever the proto adds later.
        assert!(
            e.to_string().starts_with(
                r#"unknown value "EXPLODE" for RecoveryCommand.action (enum Action: ACTION_UNSPECIFIED, RESTART, RESUME, RETRY_FAILURE_CALLBACK, DELETE"#
            ),
            "{e}"
        );
        let e = cmd(json!({"action": 99})).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("unknown value 99 for RecoveryCommand.action"),
            "{e}"
        );
        assert!(!e.to_string().contains("expected expected"));
    }

    #[test]
    fn protobuf_unknown_numbers_and_enum_values_are_seen() {
        use prost::Message;
        let good = crate::wire::pb::RecoveryCommand {
            command_id: "c".into(),
            action: 1,
            ..Default::default()
        }
        .encode_to_vec();
        check_protobuf(RECOVERY_COMMAND, &good).unwrap();
        // Field 99, varint 1.
        let mut unknown = good.clone();
        unknown.extend([0x98, 0x06, 0x01]);
        assert_eq!(
            check_protobuf(RECOVERY_COMMAND, &unknown)
                .unwrap_err()
                .to_string(),
            "unknown field number 99 in RecoveryCommand"
        );
        let bad_action = crate::wire::pb::RecoveryCommand {
            command_id: "c".into(),
            action: 99,
            ..Default::default()
        }
        .encode_to_vec();
        assert!(check_protobuf(RECOVERY_COMMAND, &bad_action)
            .unwrap_err()
            .to_string()
            .starts_with("unknown value 99 for RecoveryCommand.action"));
        // Inside a nested message: Filter (4) holding field 99 (15 and 16 are Filter's
        // `signature` and `parked`).
        let nested = [0x22, 0x03, 0x98, 0x06, 0x01];
        assert_eq!(
            check_protobuf(RECOVERY_COMMAND, &nested)
                .unwrap_err()
                .to_string(),
            "unknown field number 99 in RecoveryCommand.filter"
        );
    }

    #[test]
    fn the_table_covers_the_proto() {
        assert!(message(RECOVERY_COMMAND).is_some());
        assert!(enumeration("workflow.dlq.v1.RecoveryCommand.Action").is_some());
        assert!(message("workflow.dlq.v1.FailureEnvelope").is_some());
    }
}
