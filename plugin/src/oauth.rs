//! The OAuth2 authorization-code flow with PKCE (RFC 6749, RFC 7636) as pure functions.
//!
//! The guest builds every URL and request and reads every response; the host only moves HTTP
//! with its own HTTPS client, opens the browser, receives the redirect and stores the tokens.
//! Randomness and the current time come in as arguments. Tokens, codes, client secrets and
//! PKCE verifiers only ever appear in the returned request bytes and in `Tokens`: never in an
//! error, never in `Debug` output.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::{Error, Stage};

/// Token endpoint bodies larger than this are refused (real ones are a few KB).
pub const MAX_TOKEN_RESPONSE_BYTES: usize = 1024 * 1024;
/// An id_token larger than this is not decoded (real ones are 1-3 KB).
const MAX_ID_TOKEN_BYTES: usize = 16 * 1024;
/// Redirects longer than this are refused (Microsoft codes are ~1-2 KB).
const MAX_REDIRECT_BYTES: usize = 16 * 1024;
/// Server-provided text kept in errors is cut to this many characters.
const MAX_SERVER_TEXT_CHARS: usize = 300;
/// An account name longer than this is not an e-mail address or UPN.
const MAX_ACCOUNT_CHARS: usize = 320;
/// Bytes of randomness per PKCE verifier and per state value.
const RANDOM_PART: usize = 32;

/// An authorization server's endpoints and what to ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub scopes: Vec<String>,
    pub extra_authorization_params: Vec<(String, String)>,
}

/// Google: full IMAP/POP/SMTP access via `https://mail.google.com/`, plus `openid email` so
/// the id_token names the account, and `access_type=offline` + `prompt=consent` so a refresh
/// token is issued on every consent (Google omits it on re-consent otherwise).
pub fn google() -> Endpoints {
    Endpoints {
        authorization_endpoint: "https://accounts.google.com/o/oauth2/v2/auth".into(),
        token_endpoint: "https://oauth2.googleapis.com/token".into(),
        scopes: vec!["https://mail.google.com/".into(), "openid".into(), "email".into()],
        extra_authorization_params: vec![
            ("access_type".into(), "offline".into()),
            ("prompt".into(), "consent".into()),
        ],
    }
}

/// Microsoft identity platform v2 for a tenant ("common", "organizations", a tenant id or a
/// domain): IMAP, POP and SMTP scopes, `offline_access` for a refresh token, and
/// `openid email profile` so the id_token carries `email` or `preferred_username`.
pub fn microsoft(tenant: &str) -> crate::error::Result<Endpoints> {
    // The tenant becomes a path segment: allow only what GUIDs and domain names use.
    let valid = !tenant.is_empty()
        && tenant.len() <= 253
        && tenant.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        && !tenant.starts_with('.');
    if !valid {
        return Err(Error::invalid(
            Stage::Authenticate,
            format!(
                "the Microsoft tenant {:?} is not valid: use \"common\", \"organizations\", the \
                 tenant id (a GUID) or the tenant's domain (e.g. contoso.onmicrosoft.com)",
                sanitize(tenant, &[])
            ),
        ));
    }
    let base = format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0");
    Ok(Endpoints {
        authorization_endpoint: format!("{base}/authorize"),
        token_endpoint: format!("{base}/token"),
        scopes: [
            "https://outlook.office.com/IMAP.AccessAsUser.All",
            "https://outlook.office.com/POP.AccessAsUser.All",
            "https://outlook.office.com/SMTP.Send",
            "offline_access",
            "openid",
            "email",
            "profile",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        extra_authorization_params: Vec::new(),
    })
}

/// The contact center's application as registered at the provider.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientRegistration {
    pub client_id: String,
    pub client_secret: Option<String>,
    pub redirect_uri: String,
}

impl fmt::Debug for ClientRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientRegistration")
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| Redacted))
            .field("redirect_uri", &self.redirect_uri)
            .finish()
    }
}

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
fn check_endpoint(what: &str, url: &str) -> crate::error::Result<()> {
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
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An HTTP request for the host to execute.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The body holds codes, verifiers, refresh tokens and client secrets.
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &RedactedHeaders(&self.headers))
            .field("body", &RedactedBytes(self.body.len()))
            .finish()
    }
}

/// The host's answer to an `HttpRequest`.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl fmt::Debug for HttpResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The body of a successful answer holds the tokens.
        f.debug_struct("HttpResponse")
            .field("status", &self.status)
            .field("headers", &RedactedHeaders(&self.headers))
            .field("body", &RedactedBytes(self.body.len()))
            .finish()
    }
}

fn form_post(url: &str, params: &[(&str, &str)]) -> HttpRequest {
    HttpRequest {
        method: "POST".into(),
        url: url.to_string(),
        headers: vec![
            ("Content-Type".into(), "application/x-www-form-urlencoded".into()),
            ("Accept".into(), "application/json".into()),
        ],
        body: form_encode(params).into_bytes(),
    }
}

/// Exchanges an authorization code (with its PKCE verifier) for tokens. A client secret goes in
/// the body (RFC 6749 2.3.1 allows it; Google and Microsoft accept it).
pub fn token_request(e: &Endpoints, c: &ClientRegistration, code: &str, code_verifier: &str) -> HttpRequest {
    let mut params = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", c.redirect_uri.as_str()),
        ("client_id", c.client_id.as_str()),
        ("code_verifier", code_verifier),
    ];
    if let Some(secret) = &c.client_secret {
        params.push(("client_secret", secret));
    }
    form_post(&e.token_endpoint, &params)
}

/// Refreshes an access token. The scopes are repeated because Microsoft issues a token for
/// the requested resource only.
pub fn refresh_request(e: &Endpoints, c: &ClientRegistration, refresh_token: &str) -> HttpRequest {
    let scope = e.scopes.join(" ");
    let mut params = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", c.client_id.as_str()),
    ];
    if let Some(secret) = &c.client_secret {
        params.push(("client_secret", secret));
    }
    if !scope.is_empty() {
        params.push(("scope", &scope));
    }
    form_post(&e.token_endpoint, &params)
}

/// Tokens for one account. Secret: hosts store them like passwords.
#[derive(Clone, PartialEq, Eq)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_at_ms: Option<u64>,
    /// The granted scopes; empty when the provider did not say (then they equal the requested ones).
    pub scopes: Vec<String>,
    pub account: Option<String>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("access_token", &Redacted)
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| Redacted))
            .field("expires_at_ms", &self.expires_at_ms)
            .field("scopes", &self.scopes)
            .field("account", &self.account)
            .finish()
    }
}

/// Microsoft Entra codes (found in `error_description`) meaning the grant is gone or needs a
/// person: password changed or expired, consent missing or revoked, MFA or another interactive
/// step required, code or refresh token expired or already used, account disabled.
const AADSTS_NEEDS_REAUTHORIZATION: [&str; 17] = [
    "50055",  // password expired
    "50057",  // account disabled
    "50076",  // MFA required
    "50078",  // MFA expired
    "50079",  // MFA enrolment required
    "50132",  // session revoked (password change / expiry)
    "50133",  // session invalid after password change
    "50173",  // grant expired: password changed or reset
    "54005",  // authorization code already redeemed
    "65001",  // consent not granted
    "65004",  // consent declined
    "70000",  // grant invalid or malformed
    "70008",  // code or refresh token expired
    "700082", // refresh token expired from inactivity
    "700084", // single-page-app refresh token expired
    "500133", // assertion not within its valid time range
    "530003", // conditional access: device must be managed
];

/// Reads a token endpoint response (RFC 6749 5.1 success, 5.2 error).
pub fn parse_token_response(r: &HttpResponse, now_ms: u64, previous_refresh: Option<&str>) -> Result<Tokens, OAuthError> {
    let secrets = [previous_refresh.unwrap_or("")];
    if r.body.len() > MAX_TOKEN_RESPONSE_BYTES {
        return Err(OAuthError::Invalid {
            reason: format!(
                "the token endpoint answered HTTP {} with {} bytes, more than the {MAX_TOKEN_RESPONSE_BYTES} allowed; check that the token endpoint URL is right",
                r.status,
                r.body.len()
            ),
        });
    }
    if r.status == 429 || (500..=599).contains(&r.status) {
        let mut reason = match parse_json_object(&r.body) {
            Some(obj) => error_summary(&obj, &secrets).unwrap_or_else(|| status_text(r.status)),
            None => status_text(r.status),
        };
        if let Some(after) = retry_after(&r.headers) {
            reason.push_str(&format!("; the provider asks to wait {after} s"));
        }
        return Err(OAuthError::Transient { status: r.status, reason });
    }
    let Some(obj) = parse_json_object(&r.body) else {
        return Err(OAuthError::Invalid {
            reason: format!(
                "the token endpoint answered HTTP {} with a body that is not a JSON object; check that the token endpoint URL is right",
                r.status
            ),
        });
    };
    // Some providers report errors with 200: an `error` member always means failure.
    if obj.contains_key("error") || !(200..=299).contains(&r.status) {
        return Err(classify_error(r.status, &obj, &secrets));
    }

    let access_token = match obj.get("access_token") {
        Some(Value::String(t)) if !t.is_empty() => t.clone(),
        _ => {
            return Err(OAuthError::Invalid {
                reason: "the token endpoint's answer has no access_token".into(),
            })
        }
    };
    if let Some(tt) = obj.get("token_type") {
        if !tt.as_str().is_some_and(|t| t.eq_ignore_ascii_case("bearer")) {
            return Err(OAuthError::Invalid {
                reason: "the token endpoint issued a token that is not a Bearer token; IMAP/POP/SMTP need Bearer tokens".into(),
            });
        }
    }
    let expires_at_ms = match obj.get("expires_in") {
        None | Some(Value::Null) => None,
        Some(v) => {
            // Some providers send the number as a string.
            let secs = v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse::<u64>().ok()));
            match secs {
                Some(s) => Some(now_ms.saturating_add(s.saturating_mul(1000))),
                None => {
                    return Err(OAuthError::Invalid {
                        reason: "the token endpoint's expires_in is not a whole number of seconds".into(),
                    })
                }
            }
        }
    };
    let refresh_token = match obj.get("refresh_token") {
        Some(Value::String(t)) if !t.is_empty() => Some(t.clone()),
        _ => previous_refresh.map(str::to_string),
    };
    let scopes = obj
        .get("scope")
        .and_then(Value::as_str)
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    // A broken id_token must not cost the admin a fresh grant (the code is single-use), so it
    // only leaves the account unknown.
    let account = obj.get("id_token").and_then(Value::as_str).and_then(account_from_id_token);
    Ok(Tokens { access_token, refresh_token, expires_at_ms, scopes, account })
}

fn parse_json_object(body: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

fn status_text(status: u16) -> String {
    format!("HTTP {status}")
}

/// "error: description" from an RFC 6749 5.2 body, sanitized.
fn error_summary(obj: &Map<String, Value>, secrets: &[&str]) -> Option<String> {
    let error = obj.get("error").and_then(Value::as_str)?;
    let description = obj.get("error_description").and_then(Value::as_str).unwrap_or("");
    Some(if description.is_empty() {
        sanitize(error, secrets)
    } else {
        format!("{}: {}", sanitize(error, secrets), sanitize(description, secrets))
    })
}

fn classify_error(status: u16, obj: &Map<String, Value>, secrets: &[&str]) -> OAuthError {
    let error = obj.get("error").and_then(Value::as_str).unwrap_or("");
    let description = obj.get("error_description").and_then(Value::as_str).unwrap_or("");
    let summary = error_summary(obj, secrets).unwrap_or_else(|| status_text(status));
    let aadsts_reauth = aadsts_codes(description).any(|c| AADSTS_NEEDS_REAUTHORIZATION.contains(&c));
    match error {
        _ if aadsts_reauth => OAuthError::NeedsReauthorization { reason: summary },
        "invalid_grant" | "interaction_required" | "consent_required" | "login_required" => {
            OAuthError::NeedsReauthorization { reason: summary }
        }
        "temporarily_unavailable" | "server_error" => OAuthError::Transient { status, reason: summary },
        "invalid_client" | "unauthorized_client" => OAuthError::Invalid {
            reason: format!(
                "the provider refused the app ({summary}); check the client id, the client secret (it may have expired) and the app registration"
            ),
        },
        "invalid_scope" => OAuthError::Invalid {
            reason: format!(
                "the provider refused the requested scopes ({summary}); check that the app registration allows the mail scopes"
            ),
        },
        _ => OAuthError::Invalid {
            reason: format!("the token endpoint refused the request (HTTP {status}, {summary})"),
        },
    }
}

/// The digit runs after each "AADSTS" in a Microsoft error description.
fn aadsts_codes(description: &str) -> impl Iterator<Item = &str> {
    description.match_indices("AADSTS").filter_map(move |(i, m)| {
        let rest = description.get(i + m.len()..)?;
        let len = rest.bytes().take_while(u8::is_ascii_digit).count();
        rest.get(..len).filter(|d| !d.is_empty())
    })
}

fn retry_after(headers: &[(String, String)]) -> Option<u64> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
        .and_then(|(_, v)| v.trim().parse::<u64>().ok())
}

/// The account named by an id_token's payload: `email` (unless marked unverified), else
/// Microsoft's `preferred_username` or `upn`. The token came straight from the token endpoint
/// over TLS (OpenID Connect Core 3.1.3.7), so the signature is not checked.
fn account_from_id_token(id_token: &str) -> Option<String> {
    if id_token.len() > MAX_ID_TOKEN_BYTES {
        return None;
    }
    let mut parts = id_token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let json = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims = parse_json_object(&json)?;
    let unverified = claims.get("email_verified").is_some_and(|v| v == &Value::Bool(false) || v == "false");
    let claim = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.chars().count() <= MAX_ACCOUNT_CHARS && !s.chars().any(char::is_control))
            .map(str::to_string)
    };
    (if unverified { None } else { claim("email") })
        .or_else(|| claim("preferred_username"))
        .or_else(|| claim("upn"))
}

/// True when the access token must be refreshed before use: unknown expiry -> false (use it
/// until the server refuses it), else `now + margin >= expires_at`.
pub fn needs_refresh(t: &Tokens, now_ms: u64, margin_ms: u64) -> bool {
    match t.expires_at_ms {
        None => false,
        Some(at) => now_ms.saturating_add(margin_ms) >= at,
    }
}

/// What went wrong in the OAuth2 flow. Fields hold only provider text, never our secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OAuthError {
    /// Possible CSRF: the redirect does not belong to our request.
    StateMismatch,
    /// The admin declined consent (error=access_denied).
    AccessDenied { description: String },
    /// Another `error=` on the redirect.
    AuthorizationFailed { error: String, description: String },
    /// The grant is gone: an admin must consent again; never retry.
    NeedsReauthorization { reason: String },
    /// Try again later (the host schedules it; no spinning).
    Transient { status: u16, reason: String },
    /// Malformed response or redirect, or a configuration the provider refuses.
    Invalid { reason: String },
}

impl OAuthError {
    /// A sentence for the admin: what happened and what to do.
    pub fn message(&self) -> String {
        let paren = |s: &str| if s.is_empty() { String::new() } else { format!(" ({s})") };
        match self {
            OAuthError::StateMismatch => "The OAuth2 redirect does not belong to the authorization started here (its state parameter does not match), so it was rejected as a possible forgery. Start the authorization again and finish it in the browser tab it opens.".into(),
            OAuthError::AccessDenied { description } => format!(
                "Consent was declined at the provider{}. Start the authorization again and accept the requested access; if your organization requires it, ask a tenant administrator to grant admin consent for the app.",
                paren(description)
            ),
            OAuthError::AuthorizationFailed { error, description } => {
                let detail = if description.is_empty() { error.clone() } else { format!("{error}: {description}") };
                format!(
                    "The provider refused the authorization ({detail}). Check the app registration (client id, redirect URI, allowed scopes) and start the authorization again."
                )
            }
            OAuthError::NeedsReauthorization { reason } => format!(
                "The mailbox's OAuth2 authorization is no longer valid{}. An administrator must authorize the mailbox again (sign in and consent); retrying will not help.",
                paren(reason)
            ),
            OAuthError::Transient { status, reason } => format!(
                "The provider's token endpoint is temporarily unavailable (HTTP {status}: {reason}). It will be tried again later; act only if this persists."
            ),
            OAuthError::Invalid { reason } => format!("The OAuth2 exchange failed: {reason}."),
        }
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for OAuthError {}

/// Provider text made fit for an error: control characters replaced, length capped, and any
/// of our secrets that a server echoed back removed.
fn sanitize(text: &str, secrets: &[&str]) -> String {
    let mut out: String = text
        .chars()
        .map(|ch| if ch.is_control() { ' ' } else { ch })
        .take(MAX_SERVER_TEXT_CHARS)
        .collect();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(secret, "[redacted]");
    }
    if text.chars().count() > MAX_SERVER_TEXT_CHARS {
        out.push_str("...");
    }
    out.trim().to_string()
}

/// RFC 3986's unreserved characters (ALPHA / DIGIT / "-" / "." / "_" / "~"): everything else is
/// percent-encoded, in URLs and form bodies alike (so a space is "%20", never "+").
const UNRESERVED: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// RFC 3986 percent-encoding: everything except the unreserved set.
pub fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}

/// Decodes a form / query component: `+` is a space, `%XX` a byte; the result must be UTF-8.
/// Unlike a browser, a malformed escape ("%zz", a trailing "%") is refused, not kept as text.
pub fn percent_decode(s: &str) -> Result<String, String> {
    check_escapes(s)?;
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| "the redirect contains text that is not UTF-8".into())
}

/// Every '%' must start a two-digit hex escape.
fn check_escapes(s: &str) -> Result<(), String> {
    let well_formed = s.split('%').skip(1).all(|after| after.as_bytes().get(..2).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)));
    if well_formed {
        Ok(())
    } else {
        Err("the redirect contains a malformed percent-escape".into())
    }
}

/// `k=v&k=v` with every name and value percent-encoded (RFC 3986 unreserved kept).
fn form_encode(params: &[(&str, &str)]) -> String {
    params.iter().map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v))).collect::<Vec<_>>().join("&")
}

/// The name/value pairs of a query or form body (`form_urlencoded`), refusing malformed
/// escapes and text that is not UTF-8 instead of replacing them.
fn parse_form(query: &str) -> Result<Vec<(String, String)>, String> {
    // Splitting happens on ASCII '&' and '=', so the whole query decodes as UTF-8 exactly
    // when every name and value does.
    percent_decode(query)?;
    Ok(form_urlencoded::parse(query.as_bytes()).into_owned().collect())
}

struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

struct RedactedBytes(usize);

impl fmt::Debug for RedactedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes redacted>", self.0)
    }
}

/// Header names with values, except those that carry credentials or session state.
struct RedactedHeaders<'a>(&'a [(String, String)]);

impl fmt::Debug for RedactedHeaders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for (k, v) in self.0 {
            let secret = ["authorization", "cookie", "set-cookie", "proxy-authorization"]
                .iter()
                .any(|s| k.eq_ignore_ascii_case(s));
            if secret {
                list.entry(&(k, Redacted));
            } else {
                list.entry(&(k, v));
            }
        }
        list.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// RFC 7636 appendix B: the verifier's 32 octets.
    const RFC7636_OCTETS: [u8; 32] = [
        116, 24, 223, 180, 151, 153, 224, 37, 79, 250, 96, 125, 216, 173, 187, 186, 22, 212, 37, 77, 105, 214, 191,
        240, 91, 88, 5, 88, 83, 132, 141, 121,
    ];

    fn client() -> ClientRegistration {
        ClientRegistration {
            client_id: "app-123".into(),
            client_secret: Some("S3cr3t-client-VALUE".into()),
            redirect_uri: "http://127.0.0.1:8765/callback?x=1".into(),
        }
    }

    fn random() -> Vec<u8> {
        let mut r = RFC7636_OCTETS.to_vec();
        r.extend((0u8..32).map(|i| i.wrapping_mul(7).wrapping_add(3)));
        r
    }

    fn query_of(url: &str) -> Vec<(String, String)> {
        parse_form(url.split_once('?').expect("url has a query").1).expect("query decodes")
    }

    fn get<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
        let found: Vec<&str> = params.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect();
        assert!(found.len() <= 1, "{name} repeated");
        found.first().copied()
    }

    fn body_set(r: &HttpRequest) -> BTreeSet<(String, String)> {
        parse_form(std::str::from_utf8(&r.body).expect("utf-8 body")).expect("form decodes").into_iter().collect()
    }

    fn set(pairs: &[(&str, &str)]) -> BTreeSet<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn response(status: u16, body: &str) -> HttpResponse {
        HttpResponse { status, headers: vec![("Content-Type".into(), "application/json".into())], body: body.as_bytes().to_vec() }
    }

    fn jwt(claims: &str) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(claims),
            URL_SAFE_NO_PAD.encode(b"not-a-real-signature")
        )
    }

    #[test]
    fn pkce_rfc7636_appendix_b() {
        let verifier = URL_SAFE_NO_PAD.encode(RFC7636_OCTETS);
        assert_eq!(verifier, "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        assert_eq!(pkce_challenge(&verifier), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");

        let req = authorization_request(&google(), &client(), None, &random()).unwrap();
        assert_eq!(req.code_verifier, "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        let q = query_of(&req.url);
        assert_eq!(get(&q, "code_challenge"), Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
        assert_eq!(get(&q, "code_challenge_method"), Some("S256"));
    }

    #[test]
    fn authorization_url_parameters_decode_back() {
        let mut e = microsoft("contoso.onmicrosoft.com").unwrap();
        e.extra_authorization_params.push(("domain_hint".into(), "contoso.com & co/ü".into()));
        let req = authorization_request(&e, &client(), Some("agent+1@contoso.com"), &random()).unwrap();
        assert!(req.url.starts_with("https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize?"));
        // Percent-encoded: no raw spaces, '+', '@' or non-ASCII in the query.
        let raw_query = req.url.split_once('?').unwrap().1;
        assert!(!raw_query.contains(' ') && !raw_query.contains('+') && !raw_query.contains('@') && raw_query.is_ascii());
        let q = query_of(&req.url);
        assert_eq!(get(&q, "response_type"), Some("code"));
        assert_eq!(get(&q, "client_id"), Some("app-123"));
        assert_eq!(get(&q, "redirect_uri"), Some("http://127.0.0.1:8765/callback?x=1"));
        assert_eq!(get(&q, "scope"), Some(e.scopes.join(" ").as_str()));
        assert_eq!(get(&q, "state"), Some(req.state.as_str()));
        assert_eq!(get(&q, "code_challenge"), Some(pkce_challenge(&req.code_verifier).as_str()));
        assert_eq!(get(&q, "code_challenge_method"), Some("S256"));
        assert_eq!(get(&q, "login_hint"), Some("agent+1@contoso.com"));
        assert_eq!(get(&q, "domain_hint"), Some("contoso.com & co/ü"));
        assert_eq!(q.len(), 9);
        // State and verifier come from different halves of the randomness.
        assert_eq!(req.state, URL_SAFE_NO_PAD.encode(&random()[32..64]));
        assert_ne!(req.state, req.code_verifier);
        // The verifier never travels in the URL.
        assert!(!req.url.contains(&req.code_verifier));
    }

    #[test]
    fn authorization_request_without_hint_and_bad_inputs() {
        let req = authorization_request(&google(), &client(), Some("  "), &random()).unwrap();
        assert_eq!(get(&query_of(&req.url), "login_hint"), None);

        let short = authorization_request(&google(), &client(), None, &random()[..63]).unwrap_err();
        assert_eq!(short.kind, crate::error::ErrorKind::InvalidInput);

        let mut plain_http = google();
        plain_http.token_endpoint = "http://oauth2.example.com/token".into();
        let err = authorization_request(&plain_http, &client(), None, &random()).unwrap_err();
        assert_eq!(err.kind, crate::error::ErrorKind::Policy);
        let mut loopback = google();
        loopback.authorization_endpoint = "http://localhost:9000/auth".into();
        loopback.token_endpoint = "http://127.0.0.1:9000/token".into();
        assert!(authorization_request(&loopback, &client(), None, &random()).is_ok());
        let mut sneaky = google();
        sneaky.authorization_endpoint = "http://localhost.evil.com/auth".into();
        assert!(authorization_request(&sneaky, &client(), None, &random()).is_err());

        // Parsed as URLs: user info, odd schemes and empty hosts do not pass for loopback.
        for bad in ["http://localhost@evil.com/auth", "http://127.0.0.1.evil.com/auth", "https://", "ftp://localhost/auth", "https://a b/auth", "https://ok.example/au\tth"] {
            let mut e = google();
            e.authorization_endpoint = bad.into();
            assert!(check_endpoint("authorization endpoint", bad).is_err(), "{bad}");
            assert!(authorization_request(&e, &client(), None, &random()).is_err(), "{bad}");
        }
        for good in ["http://[::1]:9000/auth", "http://LOCALHOST/auth", "https://login.example.com/a?b=c"] {
            assert!(check_endpoint("authorization endpoint", good).is_ok(), "{good}");
        }

        let mut override_state = google();
        override_state.extra_authorization_params.push(("state".into(), "fixed".into()));
        assert!(authorization_request(&override_state, &client(), None, &random()).is_err());

        let mut no_id = client();
        no_id.client_id = " ".into();
        assert!(authorization_request(&google(), &no_id, None, &random()).is_err());
        let mut fragment = client();
        fragment.redirect_uri = "https://cc.example.com/cb#x".into();
        assert!(authorization_request(&google(), &fragment, None, &random()).is_err());
    }

    #[test]
    fn google_endpoints() {
        let g = google();
        assert_eq!(g.authorization_endpoint, "https://accounts.google.com/o/oauth2/v2/auth");
        assert_eq!(g.token_endpoint, "https://oauth2.googleapis.com/token");
        assert_eq!(g.scopes, vec!["https://mail.google.com/", "openid", "email"]);
        assert!(g.extra_authorization_params.contains(&("access_type".into(), "offline".into())));
        assert!(g.extra_authorization_params.contains(&("prompt".into(), "consent".into())));
    }

    #[test]
    fn microsoft_endpoints_and_bad_tenants() {
        let m = microsoft("contoso.onmicrosoft.com").unwrap();
        assert_eq!(
            m.authorization_endpoint,
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize"
        );
        assert_eq!(m.token_endpoint, "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token");
        for s in [
            "https://outlook.office.com/IMAP.AccessAsUser.All",
            "https://outlook.office.com/POP.AccessAsUser.All",
            "https://outlook.office.com/SMTP.Send",
            "offline_access",
            "openid",
            "email",
        ] {
            assert!(m.scopes.iter().any(|x| x == s), "missing scope {s}");
        }
        assert!(microsoft("common").is_ok());
        assert!(microsoft("organizations").is_ok());
        assert!(microsoft("72f988bf-86f1-41af-91ab-2d7cd011db47").is_ok());
        for bad in ["", "evil.com/x", "a?b", "a#b", "con toso", "..", "a%2Fb", "a\\b", "user@evil"] {
            let err = microsoft(bad).unwrap_err();
            assert_eq!(err.kind, crate::error::ErrorKind::InvalidInput, "{bad:?}");
            assert!(err.message.contains("tenant"));
        }
    }

    #[test]
    fn redirect_ok_as_url_and_as_query() {
        let url = "http://127.0.0.1:8765/callback?code=4%2F0AbC-d_E%2Bf&state=xyz123&scope=email+openid#frag";
        assert_eq!(parse_redirect(url, "xyz123").unwrap(), "4/0AbC-d_E+f");
        assert_eq!(parse_redirect("code=abc&state=xyz123", "xyz123").unwrap(), "abc");
        assert_eq!(parse_redirect("?state=xyz123&code=abc", "xyz123").unwrap(), "abc");
        assert_eq!(parse_redirect("  ?state=xyz123&code=abc\n", "xyz123").unwrap(), "abc");
    }

    #[test]
    fn redirect_state_mismatch() {
        assert_eq!(parse_redirect("?code=abc&state=other", "xyz123"), Err(OAuthError::StateMismatch));
        assert_eq!(parse_redirect("?code=abc&state=xyz12", "xyz123"), Err(OAuthError::StateMismatch));
        assert_eq!(parse_redirect("?code=abc", "xyz123"), Err(OAuthError::StateMismatch));
        assert_eq!(parse_redirect("?code=abc&state=", ""), Err(OAuthError::StateMismatch));
        // An error redirect with a forged state is not believed either.
        assert_eq!(parse_redirect("?error=access_denied&state=nope", "xyz123"), Err(OAuthError::StateMismatch));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn redirect_access_denied_and_other_errors() {
        let denied = parse_redirect(
            "https://cc.example.com/cb?error=access_denied&error_description=The+user+has+denied+access%21&state=s1",
            "s1",
        )
        .unwrap_err();
        assert_eq!(denied, OAuthError::AccessDenied { description: "The user has denied access!".into() });
        assert!(denied.message().contains("The user has denied access!"));
        assert!(denied.message().contains("declined"));

        let other = parse_redirect("?error=invalid_scope&error_description=AADSTS70011%3A+bad%0Ascope&state=s1", "s1")
            .unwrap_err();
        assert_eq!(
            other,
            OAuthError::AuthorizationFailed { error: "invalid_scope".into(), description: "AADSTS70011: bad scope".into() }
        );
    }

    #[test]
    fn redirect_missing_code_and_malformed() {
        assert!(matches!(parse_redirect("?state=s1", "s1"), Err(OAuthError::Invalid { .. })));
        assert!(matches!(parse_redirect("?state=s1&code=", "s1"), Err(OAuthError::Invalid { .. })));
        assert!(matches!(parse_redirect("https://cc.example.com/cb", "s1"), Err(OAuthError::StateMismatch)));
        assert!(matches!(parse_redirect("?state=s1&code=a%zz", "s1"), Err(OAuthError::Invalid { .. })));
        assert!(matches!(parse_redirect("?state=s1&code=a%", "s1"), Err(OAuthError::Invalid { .. })));
        assert!(matches!(parse_redirect("?state=s1&code=%FF", "s1"), Err(OAuthError::Invalid { .. })));
        assert!(matches!(parse_redirect("?state=s1&code=a&code=b", "s1"), Err(OAuthError::Invalid { .. })));
        // A full URL must parse as one.
        assert!(matches!(parse_redirect("http://[::1/cb?state=s1&code=x", "s1"), Err(OAuthError::Invalid { .. })));
        assert_eq!(parse_redirect("http://127.0.0.1:8765/cb?state=s1&code=a%2Bb+c#code=evil", "s1").unwrap(), "a+b c");
        let huge = format!("?state=s1&code={}", "a".repeat(MAX_REDIRECT_BYTES));
        assert!(matches!(parse_redirect(&huge, "s1"), Err(OAuthError::Invalid { .. })));
    }

    #[test]
    fn token_request_body() {
        let r = token_request(&google(), &client(), "4/0Ab code", "verifier-XYZ");
        assert_eq!(r.method, "POST");
        assert_eq!(r.url, "https://oauth2.googleapis.com/token");
        assert!(r.headers.contains(&("Content-Type".into(), "application/x-www-form-urlencoded".into())));
        assert_eq!(
            body_set(&r),
            set(&[
                ("grant_type", "authorization_code"),
                ("code", "4/0Ab code"),
                ("redirect_uri", "http://127.0.0.1:8765/callback?x=1"),
                ("client_id", "app-123"),
                ("code_verifier", "verifier-XYZ"),
                ("client_secret", "S3cr3t-client-VALUE"),
            ])
        );
        let mut public = client();
        public.client_secret = None;
        let r = token_request(&google(), &public, "c", "v");
        assert!(body_set(&r).iter().all(|(k, _)| k != "client_secret"));
    }

    #[test]
    fn refresh_request_body() {
        let e = microsoft("common").unwrap();
        let r = refresh_request(&e, &client(), "0.AR-refresh&token=");
        assert_eq!(r.url, "https://login.microsoftonline.com/common/oauth2/v2.0/token");
        let scope = e.scopes.join(" ");
        assert_eq!(
            body_set(&r),
            set(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "0.AR-refresh&token="),
                ("client_id", "app-123"),
                ("client_secret", "S3cr3t-client-VALUE"),
                ("scope", &scope),
            ])
        );
    }

    #[test]
    fn token_response_full_with_id_token() {
        let id = jwt(r#"{"iss":"https://accounts.google.com","email":"agent@example.com","email_verified":true}"#);
        let body = format!(
            r#"{{"access_token":"ya29.ACCESS","expires_in":3599,"refresh_token":"1//REFRESH-NEW","scope":"https://mail.google.com/ openid  email","token_type":"Bearer","id_token":"{id}"}}"#
        );
        let t = parse_token_response(&response(200, &body), 1_000_000, Some("1//REFRESH-OLD")).unwrap();
        assert_eq!(t.access_token, "ya29.ACCESS");
        assert_eq!(t.refresh_token.as_deref(), Some("1//REFRESH-NEW"));
        assert_eq!(t.expires_at_ms, Some(1_000_000 + 3_599_000));
        assert_eq!(t.scopes, vec!["https://mail.google.com/", "openid", "email"]);
        assert_eq!(t.account.as_deref(), Some("agent@example.com"));
    }

    #[test]
    fn token_response_keeps_previous_refresh_and_reads_microsoft_claims() {
        let id = jwt(r#"{"preferred_username":"agent@contoso.com","upn":"other@contoso.com"}"#);
        let body = format!(r#"{{"access_token":"eyJ0.AT","token_type":"bearer","expires_in":"3600","id_token":"{id}"}}"#);
        let t = parse_token_response(&response(200, &body), 5, Some("OLD-REFRESH")).unwrap();
        assert_eq!(t.refresh_token.as_deref(), Some("OLD-REFRESH"));
        assert_eq!(t.expires_at_ms, Some(5 + 3_600_000));
        assert_eq!(t.account.as_deref(), Some("agent@contoso.com"));
        assert!(t.scopes.is_empty());

        let upn_only = format!(r#"{{"access_token":"x","id_token":"{}"}}"#, jwt(r#"{"upn":"u@contoso.com"}"#));
        let t = parse_token_response(&response(200, &upn_only), 0, None).unwrap();
        assert_eq!(t.account.as_deref(), Some("u@contoso.com"));
        assert_eq!(t.refresh_token, None);
        assert_eq!(t.expires_at_ms, None);

        // An unverified email is not trusted; a broken id_token only leaves the account unknown.
        let unverified = format!(
            r#"{{"access_token":"x","id_token":"{}"}}"#,
            jwt(r#"{"email":"spoof@example.com","email_verified":false}"#)
        );
        assert_eq!(parse_token_response(&response(200, &unverified), 0, None).unwrap().account, None);
        let broken = r#"{"access_token":"x","id_token":"not.a!valid.jwt"}"#;
        let t = parse_token_response(&response(200, broken), 0, None).unwrap();
        assert_eq!(t.account, None);
        let oversized = format!(
            r#"{{"access_token":"x","id_token":"{}"}}"#,
            jwt(&format!(r#"{{"email":"a@b.c","pad":"{}"}}"#, "p".repeat(MAX_ID_TOKEN_BYTES)))
        );
        assert_eq!(parse_token_response(&response(200, &oversized), 0, None).unwrap().account, None);
    }

    #[test]
    fn token_response_invalid_grant_and_aadsts() {
        let e = parse_token_response(
            &response(400, r#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#),
            0,
            Some("OLD-REFRESH"),
        )
        .unwrap_err();
        assert!(matches!(&e, OAuthError::NeedsReauthorization { reason } if reason.contains("expired or revoked")));
        assert!(e.message().contains("authorize the mailbox again"));

        let aad = r#"{"error":"invalid_request","error_description":"AADSTS70008: The provided authorization code or refresh token has expired due to inactivity. Trace ID: 1"}"#;
        assert!(matches!(
            parse_token_response(&response(400, aad), 0, None),
            Err(OAuthError::NeedsReauthorization { .. })
        ));
        let mfa = r#"{"error":"interaction_required","error_description":"AADSTS50076: MFA required"}"#;
        assert!(matches!(parse_token_response(&response(400, mfa), 0, None), Err(OAuthError::NeedsReauthorization { .. })));
        // A longer code that merely starts with a listed one is not that code.
        let other = r#"{"error":"invalid_request","error_description":"AADSTS700081: something else"}"#;
        assert!(matches!(parse_token_response(&response(400, other), 0, None), Err(OAuthError::Invalid { .. })));
    }

    #[test]
    fn token_response_transient_invalid_and_oversized() {
        let mut busy = response(503, "<html>Service Unavailable</html>");
        busy.headers.push(("Retry-After".into(), "120".into()));
        match parse_token_response(&busy, 0, None) {
            Err(OAuthError::Transient { status: 503, reason }) => assert!(reason.contains("120")),
            other => panic!("expected Transient, got {other:?}"),
        }
        assert!(matches!(
            parse_token_response(&response(429, r#"{"error":"slow_down"}"#), 0, None),
            Err(OAuthError::Transient { status: 429, .. })
        ));
        assert!(matches!(
            parse_token_response(&response(400, r#"{"error":"temporarily_unavailable"}"#), 0, None),
            Err(OAuthError::Transient { .. })
        ));
        assert!(matches!(parse_token_response(&response(200, "garbage"), 0, None), Err(OAuthError::Invalid { .. })));
        assert!(matches!(parse_token_response(&response(200, "[1,2]"), 0, None), Err(OAuthError::Invalid { .. })));
        assert!(matches!(parse_token_response(&response(400, "garbage"), 0, None), Err(OAuthError::Invalid { .. })));
        assert!(matches!(parse_token_response(&response(302, "{}"), 0, None), Err(OAuthError::Invalid { .. })));
        assert!(matches!(parse_token_response(&response(200, "{}"), 0, None), Err(OAuthError::Invalid { .. })));
        assert!(matches!(
            parse_token_response(&response(200, r#"{"access_token":"x","token_type":"mac"}"#), 0, None),
            Err(OAuthError::Invalid { .. })
        ));
        assert!(matches!(
            parse_token_response(&response(200, r#"{"access_token":"x","expires_in":-5}"#), 0, None),
            Err(OAuthError::Invalid { .. })
        ));
        assert!(matches!(
            parse_token_response(&response(200, r#"{"error":"invalid_grant"}"#), 0, None),
            Err(OAuthError::NeedsReauthorization { .. })
        ));
        match parse_token_response(&response(401, r#"{"error":"invalid_client"}"#), 0, None) {
            Err(OAuthError::Invalid { reason }) => assert!(reason.contains("client secret")),
            other => panic!("expected Invalid, got {other:?}"),
        }

        let big = format!(r#"{{"access_token":"x","pad":"{}"}}"#, "a".repeat(MAX_TOKEN_RESPONSE_BYTES));
        match parse_token_response(&response(200, &big), 0, None) {
            Err(OAuthError::Invalid { reason }) => assert!(reason.contains("more than")),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn needs_refresh_margins() {
        let t = |at: Option<u64>| Tokens {
            access_token: "a".into(),
            refresh_token: None,
            expires_at_ms: at,
            scopes: vec![],
            account: None,
        };
        assert!(!needs_refresh(&t(None), u64::MAX, 0));
        assert!(!needs_refresh(&t(Some(10_000)), 4_999, 5_000));
        assert!(needs_refresh(&t(Some(10_000)), 5_000, 5_000));
        assert!(needs_refresh(&t(Some(10_000)), 10_000, 0));
        assert!(!needs_refresh(&t(Some(10_000)), 9_999, 0));
        assert!(needs_refresh(&t(Some(10_000)), u64::MAX, u64::MAX));
    }

    #[test]
    fn secrets_never_in_errors_or_debug() {
        const ACCESS: &str = "ya29.SECRET-ACCESS-TOKEN";
        const REFRESH: &str = "1//SECRET-REFRESH-TOKEN";
        const CODE: &str = "4/SECRET-AUTH-CODE";
        let c = client();
        let secret = c.client_secret.clone().unwrap();
        let secrets = [ACCESS, REFRESH, CODE, secret.as_str()];

        let req = authorization_request(&google(), &c, None, &random()).unwrap();
        let mut texts = vec![
            format!("{c:?}"),
            format!("{req:?}"),
            format!("{:?}", token_request(&google(), &c, CODE, &req.code_verifier)),
            format!("{:?}", refresh_request(&google(), &c, REFRESH)),
        ];
        let ok_body = format!(r#"{{"access_token":"{ACCESS}","refresh_token":"{REFRESH}","expires_in":60}}"#);
        let ok = response(200, &ok_body);
        texts.push(format!("{ok:?}"));
        texts.push(format!("{:?}", parse_token_response(&ok, 0, None).unwrap()));

        // A provider that echoes our refresh token in its error text has it removed.
        let echo = format!(r#"{{"error":"invalid_grant","error_description":"refresh token {REFRESH} revoked"}}"#);
        let errs = [
            parse_token_response(&response(400, &echo), 0, Some(REFRESH)).unwrap_err(),
            parse_token_response(&response(503, &echo), 0, Some(REFRESH)).unwrap_err(),
            parse_token_response(&response(401, r#"{"error":"invalid_client"}"#), 0, Some(REFRESH)).unwrap_err(),
            parse_redirect(&format!("?code={CODE}&state=wrong"), &req.state).unwrap_err(),
            parse_redirect(&format!("?code={CODE}&error=server_error&state={}", req.state), &req.state).unwrap_err(),
        ];
        for e in &errs {
            texts.push(format!("{e:?}"));
            texts.push(e.message());
        }
        for text in &texts {
            for s in secrets.iter().chain([&req.code_verifier.as_str()]) {
                assert!(!text.contains(s), "secret leaked into: {text}");
            }
        }
        // The Debug output is still useful.
        assert!(texts[0].contains("app-123"));
        assert!(texts[5].contains("expires_at_ms: Some(60000)"));
    }

    #[test]
    fn percent_encoding_round_trip() {
        let s = "a b+c&d=e/ü~-._%";
        let enc = percent_encode(s);
        assert_eq!(enc, "a%20b%2Bc%26d%3De%2F%C3%BC~-._%25");
        assert_eq!(percent_decode(&enc).unwrap(), s);
        assert_eq!(percent_decode("a+b").unwrap(), "a b");
    }

    #[test]
    fn error_messages_say_what_to_do() {
        assert!(OAuthError::StateMismatch.message().contains("again"));
        let t = OAuthError::Transient { status: 503, reason: "HTTP 503".into() };
        assert!(t.message().contains("later"));
        assert_eq!(t.to_string(), t.message());
        let sanitized = sanitize(&format!("line1\r\nline2{}", "x".repeat(400)), &[]);
        assert!(!sanitized.contains('\n') && sanitized.ends_with("..."));
        assert!(sanitized.chars().count() <= MAX_SERVER_TEXT_CHARS + 3);
    }
}
