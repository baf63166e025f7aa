//! Token endpoint responses (RFC 6749 5.1 and 5.2) and the account named by the id_token.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

use super::http::HttpResponse;
use super::{sanitize, OAuthError, Redacted, MAX_ACCOUNT_CHARS, MAX_ID_TOKEN_BYTES, MAX_TOKEN_RESPONSE_BYTES};

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
