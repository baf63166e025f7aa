//! The browser half of the flow: the authorization URL with PKCE, and the redirect it comes back with.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

use super::http::{form_encode, parse_form};
use super::{sanitize, ClientRegistration, Endpoints, OAuthError, Redacted, MAX_REDIRECT_BYTES, RANDOM_PART};
use crate::error::{Error, Stage};

/// A started authorization: open `url` in the admin's browser, keep `state` and the secret
/// `code_verifier` until the redirect comes back.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthorizationRequest {
    pub url: String,
    pub state: String,
    pub code_verifier: String,
}

impl fmt::Debug for AuthorizationRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL carries only the challenge (a hash), which is public by design.
        f.debug_struct("AuthorizationRequest")
            .field("url", &self.url)
            .field("state", &self.state)
            .field("code_verifier", &Redacted)
            .finish()
    }
}

/// Builds the authorization URL with PKCE S256. `random` must hold at least 64 bytes from a
/// secure source: the first 32 make the verifier, the next 32 the state.
pub fn authorization_request(
    e: &Endpoints,
    c: &ClientRegistration,
    login_hint: Option<&str>,
    random: &[u8],
) -> crate::error::Result<AuthorizationRequest> {
    let bad = |m: String| Err(Error::invalid(Stage::Authenticate, m));
    let (Some(verifier_bytes), Some(state_bytes)) =
        (random.get(..RANDOM_PART), random.get(RANDOM_PART..2 * RANDOM_PART))
    else {
        return bad(format!(
            "internal error: OAuth2 authorization needs {} random bytes, got {}",
            2 * RANDOM_PART,
            random.len()
        ));
    };
    check_endpoint("authorization endpoint", &e.authorization_endpoint)?;
    check_endpoint("token endpoint", &e.token_endpoint)?;
    if c.client_id.trim().is_empty() {
        return bad("the OAuth2 client id is empty: enter the application (client) id of the app registered at the provider".into());
    }
    if c.redirect_uri.trim().is_empty() || c.redirect_uri.contains('#') {
        return bad("the OAuth2 redirect URI must be set and must not contain a fragment ('#'): use the redirect URI registered for the app at the provider".into());
    }
    const OURS: [&str; 8] = [
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "code_challenge",
        "code_challenge_method",
        "login_hint",
    ];
    if let Some((name, _)) = e.extra_authorization_params.iter().find(|(k, _)| OURS.contains(&k.as_str())) {
        // Letting a configured extra override state or the challenge would defeat them.
        return bad(format!(
            "the extra authorization parameter {:?} is set by mailplug itself: remove it from the endpoint configuration",
            sanitize(name, &[])
        ));
    }

    let code_verifier = URL_SAFE_NO_PAD.encode(verifier_bytes);
    let state = URL_SAFE_NO_PAD.encode(state_bytes);
    let challenge = pkce_challenge(&code_verifier);
    let scope = e.scopes.join(" ");

    let mut params: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", &c.client_id),
        ("redirect_uri", &c.redirect_uri),
        ("scope", &scope),
        ("state", &state),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ];
    if let Some(hint) = login_hint.filter(|h| !h.trim().is_empty()) {
        params.push(("login_hint", hint));
    }
    params.extend(e.extra_authorization_params.iter().map(|(k, v)| (k.as_str(), v.as_str())));

    let mut url = e.authorization_endpoint.clone();
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str(&form_encode(&params));
    Ok(AuthorizationRequest { url, state, code_verifier })
}

/// RFC 7636 S256: base64url(sha256(ASCII verifier)).
pub fn pkce_challenge(code_verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(code_verifier.as_bytes()))
}

/// Endpoints must be HTTPS; plain HTTP only to a loopback test server.
pub(super) fn check_endpoint(what: &str, url: &str) -> crate::error::Result<()> {
    use url::Host;
    let ok = match url::Url::parse(url) {
        Ok(u) => match (u.scheme(), u.host()) {
            ("https", Some(_)) => true,
            ("http", Some(Host::Domain(d))) => d == "localhost",
            ("http", Some(Host::Ipv4(ip))) => ip == std::net::Ipv4Addr::LOCALHOST,
            ("http", Some(Host::Ipv6(ip))) => ip == std::net::Ipv6Addr::LOCALHOST,
            _ => false,
        },
        Err(_) => false,
    };
    // `url` would quietly drop tabs and line breaks and keep a fragment; refuse them instead.
    let ok = ok && !url.contains('#') && !url.chars().any(|ch| ch.is_whitespace() || ch.is_control());
    if ok {
        Ok(())
    } else {
        Err(Error::policy(
            Stage::Authenticate,
            format!(
                "the OAuth2 {what} {:?} is not an https:// URL without a fragment; tokens must only travel over TLS (plain http is allowed for localhost test servers only)",
                sanitize(url, &[])
            ),
        ))
    }
}

/// Checks the redirect the browser came back with (a full URL or just its query) against the
/// expected state and returns the authorization code.
pub fn parse_redirect(redirect: &str, expected_state: &str) -> Result<String, OAuthError> {
    let redirect = redirect.trim();
    if redirect.len() > MAX_REDIRECT_BYTES {
        return Err(OAuthError::Invalid {
            reason: format!(
                "the redirect is {} bytes long (more than {MAX_REDIRECT_BYTES}); paste only the URL the browser was sent back to",
                redirect.len()
            ),
        });
    }
    let parsed;
    let query = if redirect.contains("://") {
        // A full URL (`url` drops the fragment); one without a query carries nothing.
        parsed = url::Url::parse(redirect).map_err(|e| OAuthError::Invalid {
            reason: format!("the redirect is not a valid URL ({e}); paste the whole URL the browser was sent back to"),
        })?;
        parsed.query().unwrap_or("")
    } else {
        // Anything else is taken as the query itself, with or without its '?'.
        let without_fragment = redirect.split('#').next().unwrap_or("");
        without_fragment.split_once('?').map_or(without_fragment, |(_, q)| q)
    };
    let params = parse_form(query).map_err(|reason| OAuthError::Invalid { reason })?;
    let single = |name: &str| -> Result<Option<&str>, OAuthError> {
        let mut found = params.iter().filter(|(k, _)| k == name);
        let first = found.next().map(|(_, v)| v.as_str());
        if found.next().is_some() {
            // RFC 6749 3.1: parameters must not repeat; a repeat suggests tampering.
            return Err(OAuthError::Invalid {
                reason: format!("the redirect carries the parameter {name:?} more than once"),
            });
        }
        Ok(first)
    };
    let state = single("state")?;
    let code = single("code")?;
    let error = single("error")?;
    let description = single("error_description")?.unwrap_or("");

    // The state is checked first, also for error redirects: an unverified redirect tells us nothing.
    match state {
        Some(s) if !expected_state.is_empty() && constant_time_eq(s.as_bytes(), expected_state.as_bytes()) => {}
        _ => return Err(OAuthError::StateMismatch),
    }
    let secrets = [code.unwrap_or("")];
    if let Some(error) = error {
        let description = sanitize(description, &secrets);
        return Err(if error == "access_denied" {
            OAuthError::AccessDenied { description }
        } else {
            OAuthError::AuthorizationFailed { error: sanitize(error, &secrets), description }
        });
    }
    match code {
        Some(code) if !code.is_empty() => Ok(code.to_string()),
        _ => Err(OAuthError::Invalid {
            reason: "the redirect carries no authorization code; complete the consent in the browser and use the URL the provider redirected to".into(),
        }),
    }
}

/// Compares without an early exit so that timing does not reveal how much of a guess matched.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
