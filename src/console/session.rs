//! Console sessions without server-side state.
//!
//! The service runs as several instances and keeps no state outside Kafka, so a session is a
//! signed value in the cookie itself: `base64url(payload) "." base64url(mac)`, where the
//! payload is `v1\n<token name>\n<scope>\n<expiry unix s>` and the MAC is HMAC-SHA256 keyed
//! by the secret of the token that signed in. Every instance shares the token configuration,
//! so any of them can check it; removing (rotating out) the token ends its sessions at once,
//! because no remaining token produces the MAC.
//!
//! CSRF: every state-changing form carries `HMAC(token secret, "csrf\n" payload)`, which only a
//! page rendered for this session knows; POSTs are also refused when `Origin` (or
//! `Sec-Fetch-Site`) says another site sent them. The cookie is `SameSite=Strict` on top.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::tokens::{ApiToken, Scope};

type HmacSha256 = Hmac<Sha256>;

/// The cookie's name.
pub const COOKIE: &str = "dlq_console";
/// How long a sign-in lasts.
pub const LIFETIME_SECS: i64 = 8 * 3600;

/// A checked session: who signed in, with which scope, until when.
#[derive(Debug, Clone)]
pub struct Session {
    pub name: String,
    pub scope: Scope,
    pub expires_at: i64,
    /// The CSRF token for this session's forms.
    pub csrf: String,
}

/// Why a cookie was not accepted. Only logged at debug level: the answer is always "sign in".
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    #[error("the session cookie is malformed")]
    Malformed,
    #[error("the session has expired")]
    Expired,
    #[error("no configured token signs this session (signed out by rotation, or forged)")]
    BadSignature,
}

fn mac(token: &ApiToken, domain: &str, payload: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for HMAC.
    let mut m = HmacSha256::new_from_slice(token.token.expose_secret().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    m.update(domain.as_bytes());
    m.update(b"\n");
    m.update(payload);
    m
}

fn payload(name: &str, scope: Scope, expires_at: i64) -> String {
    format!("v1\n{name}\n{}\n{expires_at}", scope.as_str())
}

fn csrf_for(token: &ApiToken, payload: &str) -> String {
    URL_SAFE_NO_PAD.encode(
        mac(token, "csrf", payload.as_bytes())
            .finalize()
            .into_bytes(),
    )
}

/// The cookie value for `token`, valid until `now + LIFETIME_SECS`.
pub fn issue(token: &ApiToken, now_secs: i64) -> String {
    let p = payload(&token.name, token.scope, now_secs + LIFETIME_SECS);
    let sig = mac(token, "session", p.as_bytes()).finalize().into_bytes();
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(p.as_bytes()),
        URL_SAFE_NO_PAD.encode(sig)
    )
}

/// Checks a cookie value against the configured tokens.
pub fn verify(tokens: &[ApiToken], cookie: &str, now_secs: i64) -> Result<Session, SessionError> {
    let (p64, sig64) = cookie.split_once('.').ok_or(SessionError::Malformed)?;
    let p = URL_SAFE_NO_PAD
        .decode(p64)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or(SessionError::Malformed)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig64)
        .map_err(|_| SessionError::Malformed)?;
    let mut parts = p.split('\n');
    let (Some("v1"), Some(name), Some(scope), Some(exp), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(SessionError::Malformed);
    };
    let scope = Scope::parse(scope).ok_or(SessionError::Malformed)?;
    let expires_at: i64 = exp.parse().map_err(|_| SessionError::Malformed)?;
    // Several tokens may share a name (rotation): any of them with this scope may have signed.
    let signer = tokens
        .iter()
        .filter(|t| t.name == name && t.scope == scope)
        .find(|t| mac(t, "session", p.as_bytes()).verify_slice(&sig).is_ok())
        .ok_or(SessionError::BadSignature)?;
    if expires_at <= now_secs {
        return Err(SessionError::Expired);
    }
    Ok(Session {
        name: name.to_string(),
        scope,
        expires_at,
        csrf: csrf_for(signer, &p),
    })
}

impl Session {
    /// True when `presented` is this session's CSRF token (constant time).
    pub fn csrf_ok(&self, presented: &str) -> bool {
        self.csrf.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

/// The `Set-Cookie` value that signs in. `secure` when the request came over HTTPS (directly
/// or as a proxy says with `X-Forwarded-Proto`): a plain-HTTP development server must still
/// work, and browsers drop `Secure` cookies there.
pub fn set_cookie(value: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={LIFETIME_SECS}{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that signs out.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The session cookie's value among a request's `Cookie` headers.
pub fn cookie_value<'a>(headers: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    headers
        .flat_map(|h| h.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(name: &str, scope: Scope, secret: &str) -> ApiToken {
        ApiToken {
            name: name.into(),
            scope,
            token: secret.to_string().into(),
        }
    }

    #[test]
    fn a_session_verifies_until_it_expires_and_carries_its_scope() {
        let t = tok("ops", Scope::Operate, "secret-secret-secret-1");
        let c = issue(&t, 1000);
        let s = verify(std::slice::from_ref(&t), &c, 1001).unwrap();
        assert_eq!((s.name.as_str(), s.scope), ("ops", Scope::Operate));
        assert!(s.csrf_ok(&s.csrf));
        assert!(!s.csrf_ok("nope"));
        assert_eq!(
            verify(&[t], &c, 1000 + LIFETIME_SECS).unwrap_err(),
            SessionError::Expired
        );
    }

    #[test]
    fn removing_the_token_or_tampering_ends_the_session() {
        let t = tok("ops", Scope::Read, "secret-secret-secret-1");
        let other = tok("ops", Scope::Read, "secret-secret-secret-2");
        let c = issue(&t, 0);
        // Rotated out: the same name with another secret does not sign it.
        assert_eq!(
            verify(std::slice::from_ref(&other), &c, 1).unwrap_err(),
            SessionError::BadSignature
        );
        // Rotation in progress: both configured, the old session still holds.
        assert!(verify(&[other, t.clone()], &c, 1).is_ok());
        // Claiming a higher scope in the payload breaks the MAC.
        let (_, sig) = c.split_once('.').unwrap();
        let forged = format!(
            "{}.{sig}",
            URL_SAFE_NO_PAD.encode(payload("ops", Scope::Admin, LIFETIME_SECS))
        );
        assert!(verify(std::slice::from_ref(&t), &forged, 1).is_err());
        for bad in ["", ".", "x.y", "a.b.c"] {
            assert_eq!(
                verify(std::slice::from_ref(&t), bad, 1).unwrap_err(),
                SessionError::Malformed,
                "{bad}"
            );
        }
    }

    #[test]
    fn the_cookie_is_found_among_others_and_set_with_its_attributes() {
        let hs = ["a=1; dlq_console=abc.def", "b=2"];
        assert_eq!(cookie_value(hs.into_iter()), Some("abc.def"));
        let set = set_cookie("v", false);
        for part in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
            assert!(set.contains(part), "{set}");
        }
        assert!(!set.contains("Secure"));
        assert!(set_cookie("v", true).ends_with("; Secure"));
    }
}
