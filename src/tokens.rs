//! Who may call the HTTP API: named bearer tokens, each with a scope.
//!
//! A token is configured as `name:scope:token` (`--api-tokens`, or a file for a mounted secret,
//! `--api-tokens-file`); several entries may share a name, so a token is rotated by adding the
//! new one, moving clients, then removing the old one — no restart of clients in lockstep. The
//! name (never the token) is what commands and results record as who asked.

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// What a token may do. Ordered: a scope allows what the scopes below it allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// List, get, groups, jobs, status, the OpenAPI document.
    Read,
    /// Also the actions: restart, resume, retry, callbacks, delete.
    Operate,
    /// Everything.
    Admin,
}

impl Scope {
    pub fn parse(text: &str) -> Option<Scope> {
        match text {
            "read" => Some(Scope::Read),
            "operate" => Some(Scope::Operate),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Operate => "operate",
            Scope::Admin => "admin",
        }
    }
}

/// One configured token. `Debug` never shows the token.
#[derive(Debug, Clone)]
pub struct ApiToken {
    pub name: String,
    pub scope: Scope,
    pub token: SecretString,
}

/// The name of the single `--api-token` (and of a generated one): an admin.
pub const DEFAULT_NAME: &str = "default";

/// Shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// Parses `name:scope:token` entries separated by commas or newlines (blank lines and `#`
/// comments skipped). The error names the entry by position, never by its token.
pub fn parse(text: &str) -> Result<Vec<ApiToken>, String> {
    let mut out = Vec::new();
    let entries = text
        .split(['\n', ','])
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.starts_with('#'));
    for (i, entry) in entries.enumerate() {
        let n = i + 1;
        let mut parts = entry.splitn(3, ':');
        let (Some(name), Some(scope), Some(token)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("entry {n} is not `name:scope:token`"));
        };
        let legal_name = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !legal_name {
            return Err(format!(
                "entry {n}: name `{}` must be 1–64 of A–Z a–z 0–9 . _ -",
                name.chars().take(64).collect::<String>()
            ));
        }
        let scope = Scope::parse(scope)
            .ok_or_else(|| format!("entry {n} (`{name}`): scope must be read, operate or admin"))?;
        if token.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "entry {n} (`{name}`): the token must be at least {MIN_TOKEN_LEN} characters"
            ));
        }
        out.push(ApiToken {
            name: name.to_string(),
            scope,
            token: token.to_string().into(),
        });
    }
    Ok(out)
}

/// The token `presented` matches, if any. Every configured token is compared, in constant time
/// each, so the answer's timing says nothing about which one (or how much of one) matched.
pub fn verify<'a>(tokens: &'a [ApiToken], presented: &str) -> Option<&'a ApiToken> {
    let mut found = None;
    for t in tokens {
        let same: bool = presented
            .as_bytes()
            .ct_eq(t.token.expose_secret().as_bytes())
            .into();
        if same && found.is_none() {
            found = Some(t);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_with_commas_newlines_and_comments_and_names_may_repeat() {
        let t = parse(
            "# readers\nci:read:aaaaaaaaaaaaaaaa, ops:operate:bbbbbbbbbbbbbbbb\n\nops:operate:cccccccccccccccc:with:colons",
        )
        .unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!((t[0].name.as_str(), t[0].scope), ("ci", Scope::Read));
        assert_eq!(t[2].token.expose_secret(), "cccccccccccccccc:with:colons");
        assert_eq!(
            verify(&t, "bbbbbbbbbbbbbbbb").map(|t| t.scope),
            Some(Scope::Operate)
        );
        assert!(verify(&t, "bbbbbbbbbbbbbbb").is_none());
        assert!(
            !format!("{t:?}").contains("aaaaaaaa"),
            "Debug shows no token"
        );
    }

    #[test]
    fn bad_entries_are_named_without_their_token() {
        for (text, wanted) in [
            ("ci:read", "entry 1 is not `name:scope:token`"),
            ("a b:read:aaaaaaaaaaaaaaaa", "name `a b`"),
            (
                "ci:write:aaaaaaaaaaaaaaaa",
                "scope must be read, operate or admin",
            ),
            (
                "x:read:aaaaaaaaaaaaaaaa,ci:read:short",
                "entry 2 (`ci`): the token must be",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(wanted), "{text}: {e}");
            assert!(!e.contains("aaaaaaaa") && !e.contains("short"), "{e}");
        }
    }
}
