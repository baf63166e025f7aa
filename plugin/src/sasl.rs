//! SASL mechanisms and their selection. Encoders return the base64 text to put on the wire;
//! the secret inside never leaves through any other path.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::config::Credentials;
use crate::error::{Error, Result, Stage};

/// A SASL mechanism we can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
    XOAuth2,
    OAuthBearer,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::XOAuth2 => "XOAUTH2",
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }
}

/// Picks the mechanism for these credentials from the ones the server advertises
/// (names compared case-insensitively). Basic prefers PLAIN (one round trip) over LOGIN;
/// OAuth2 prefers OAUTHBEARER (the standard) over XOAUTH2, unless the tenant pinned one.
pub fn select(creds: &Credentials, offered: &[String]) -> Option<Mechanism> {
    let has = |m: Mechanism| offered.iter().any(|o| o.eq_ignore_ascii_case(m.name()));
    let pinned;
    let prefs: &[Mechanism] = match creds {
        Credentials::Basic { .. } => &[Mechanism::Plain, Mechanism::Login],
        Credentials::OAuth2 { mechanism: Some(m), .. } => {
            pinned = [*m];
            &pinned
        }
        Credentials::OAuth2 { mechanism: None, .. } => &[Mechanism::OAuthBearer, Mechanism::XOAuth2],
    };
    prefs.iter().copied().find(|&m| has(m))
}

/// The OAuth2 mechanisms these credentials may use, for error messages:
/// "OAUTHBEARER or XOAUTH2", or the pinned one.
pub fn oauth_wanted(creds: &Credentials) -> &'static str {
    match creds {
        Credentials::OAuth2 { mechanism: Some(Mechanism::XOAuth2), .. } => "XOAUTH2 (as configured)",
        Credentials::OAuth2 { mechanism: Some(Mechanism::OAuthBearer), .. } => "OAUTHBEARER (as configured)",
        _ => "OAUTHBEARER or XOAUTH2",
    }
}

/// RFC 4616 PLAIN initial response: base64("" NUL user NUL password).
pub fn plain(username: &str, password: &str) -> String {
    let mut raw = Vec::with_capacity(username.len() + password.len() + 2);
    raw.push(0);
    raw.extend_from_slice(username.as_bytes());
    raw.push(0);
    raw.extend_from_slice(password.as_bytes());
    STANDARD.encode(raw)
}

/// LOGIN answers: base64 of the user name, then of the password.
pub fn login_step(value: &str) -> String {
    STANDARD.encode(value.as_bytes())
}

/// XOAUTH2 initial response: base64("user=" user ^A "auth=Bearer " token ^A ^A).
pub fn xoauth2(username: &str, token: &str) -> String {
    STANDARD.encode(format!("user={username}\x01auth=Bearer {token}\x01\x01"))
}

/// RFC 7628 OAUTHBEARER initial response: base64("n,a=" user "," ^A "auth=Bearer " token ^A ^A).
pub fn oauthbearer(username: &str, token: &str) -> String {
    let user = username.replace('=', "=3D").replace(',', "=2C");
    STANDARD.encode(format!("n,a={user},\x01auth=Bearer {token}\x01\x01"))
}

/// The initial response for a mechanism that has one (all but LOGIN).
pub fn initial_response(mech: Mechanism, creds: &Credentials) -> Option<String> {
    match (mech, creds) {
        (Mechanism::Plain, Credentials::Basic { username, password }) => Some(plain(username, password)),
        (Mechanism::XOAuth2, Credentials::OAuth2 { username, access_token, .. }) => Some(xoauth2(username, access_token)),
        (Mechanism::OAuthBearer, Credentials::OAuth2 { username, access_token, .. }) => {
            Some(oauthbearer(username, access_token))
        }
        _ => None,
    }
}

/// RFC 6750 section 2.1 b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
pub fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty() && body.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/'))
}

/// Refuses credentials that could not be carried faithfully by the SASL fields built from
/// them, before anything reaches the wire: an access token outside RFC 6750's b64token
/// grammar (a control character would end XOAUTH2's or OAUTHBEARER's "auth=" field and
/// inject fields of the token's choosing), and a NUL in a user name or password (PLAIN
/// separates its fields with NUL). The error never quotes the secret.
pub fn check_credentials(creds: &Credentials) -> Result<()> {
    match creds {
        Credentials::Basic { username, password } => {
            if username.contains('\0') || password.contains('\0') {
                return Err(Error::invalid(
                    Stage::Authenticate,
                    "the user name or password contains a NUL character, which no login method can carry (PLAIN separates its fields with NUL); correct the credentials. Nothing was sent",
                ));
            }
        }
        Credentials::OAuth2 { username, access_token, .. } => {
            if !is_b64token(access_token) {
                return Err(Error::invalid(
                    Stage::Authenticate,
                    "the OAuth2 access token is not a valid bearer token (RFC 6750: letters, digits and -._~+/ with '=' only at the end), so it was not sent: a token with spaces or control characters could inject fields into the login. Sign in again to get a new token, and check the token endpoint",
                ));
            }
            if username.chars().any(|c| c.is_control()) {
                return Err(Error::invalid(
                    Stage::Authenticate,
                    "the user name contains a control character, which the OAuth2 login (XOAUTH2, OAUTHBEARER) cannot carry; correct the user name. Nothing was sent",
                ));
            }
        }
    }
    Ok(())
}

/// The secret of these credentials in every form this client may put on the wire: as is
/// (IMAP LOGIN, POP3 PASS), LOGIN's base64, and the initial response of each mechanism. A
/// server that echoes one in an error text gets it replaced by `<redacted>` (`Error::redact`).
pub fn secret_forms(creds: &Credentials) -> Vec<String> {
    let mut forms = vec![creds.secret().to_string(), login_step(creds.secret())];
    for m in [Mechanism::Plain, Mechanism::XOAuth2, Mechanism::OAuthBearer] {
        forms.extend(initial_response(m, creds));
    }
    forms.retain(|f| !f.is_empty());
    forms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_oauth_mechanism_is_the_only_one_used() {
        let both: Vec<String> = vec!["OAUTHBEARER".into(), "XOAUTH2".into()];
        let pin = |m| Credentials::OAuth2 { username: "u".into(), access_token: "t".into(), mechanism: Some(m) };
        assert_eq!(select(&pin(Mechanism::XOAuth2), &both), Some(Mechanism::XOAuth2));
        assert_eq!(select(&pin(Mechanism::OAuthBearer), &both), Some(Mechanism::OAuthBearer));
        // Pinned but not offered: no fallback to the other one.
        assert_eq!(select(&pin(Mechanism::OAuthBearer), &["XOAUTH2".into()]), None);
        assert_eq!(oauth_wanted(&pin(Mechanism::XOAuth2)), "XOAUTH2 (as configured)");
        let any = Credentials::OAuth2 { username: "u".into(), access_token: "t".into(), mechanism: None };
        assert_eq!(oauth_wanted(&any), "OAUTHBEARER or XOAUTH2");
    }

    #[test]
    fn plain_matches_rfc4616_example() {
        // RFC 4616 section 4: "\0tim\0tanstaaftanstaaf"
        assert_eq!(plain("tim", "tanstaaftanstaaf"), "AHRpbQB0YW5zdGFhZnRhbnN0YWFm");
    }

    #[test]
    fn selection_prefers_plain_and_matches_case_insensitively() {
        let basic = Credentials::Basic { username: "u".into(), password: "p".into() };
        assert_eq!(select(&basic, &["login".into(), "plain".into()]), Some(Mechanism::Plain));
        assert_eq!(select(&basic, &["LOGIN".into()]), Some(Mechanism::Login));
        assert_eq!(select(&basic, &["XOAUTH2".into()]), None);
        let oauth = Credentials::OAuth2 { username: "u".into(), access_token: "t".into(), mechanism: None };
        assert_eq!(select(&oauth, &["XOAUTH2".into(), "PLAIN".into()]), Some(Mechanism::XOAuth2));
    }

    #[test]
    fn bearer_tokens_follow_rfc6750_and_nul_is_refused_in_plain_fields() {
        for ok in ["ya29.a0AfH6SMB-x_y~z+/w==", "abc", "a="] {
            assert!(is_b64token(ok), "{ok}");
        }
        for bad in ["", "=", "x\u{1}host=evil", "a b", "tok\r\n", "a=b", "tök"] {
            assert!(!is_b64token(bad), "{bad:?}");
        }
        let oauth = |t: &str| Credentials::OAuth2 { username: "u@x".into(), access_token: t.into(), mechanism: None };
        let e = check_credentials(&oauth("x\u{1}host=evil")).unwrap_err();
        assert_eq!((e.kind, e.stage), (crate::error::ErrorKind::InvalidInput, Stage::Authenticate));
        assert!(!e.to_string().contains("evil"), "{e}");
        assert!(check_credentials(&oauth("ya29.token")).is_ok());
        let basic = |u: &str, p: &str| Credentials::Basic { username: u.into(), password: p.into() };
        assert!(check_credentials(&basic("u", "p\0w")).is_err());
        assert!(check_credentials(&basic("u\0x", "pw")).is_err());
        assert!(check_credentials(&basic("u", "p w\u{1}")).is_ok(), "only NUL cannot be carried");
    }

    #[test]
    fn xoauth2_layout() {
        let decoded = STANDARD.decode(xoauth2("a@b.c", "tok")).unwrap();
        assert_eq!(decoded, b"user=a@b.c\x01auth=Bearer tok\x01\x01");
    }
}
