//! The OAuth2 authorization-code flow with PKCE (RFC 6749, RFC 7636) as pure functions.
//!
//! The guest builds every URL and request and reads every response; the host only moves HTTP
//! with its own HTTPS client, opens the browser, receives the redirect and stores the tokens.
//! Randomness and the current time come in as arguments. Tokens, codes, client secrets and
//! PKCE verifiers only ever appear in the returned request bytes and in `Tokens`: never in an
//! error, never in `Debug` output.

use std::fmt;

use crate::error::{Error, Stage};

mod flow;
mod http;
mod token;
#[cfg(test)]
mod tests;

pub use flow::{authorization_request, parse_redirect, pkce_challenge, AuthorizationRequest};
pub use http::{percent_decode, percent_encode, refresh_request, token_request, HttpRequest, HttpResponse};
pub use token::{needs_refresh, parse_token_response, Tokens};

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
pub(crate) fn sanitize(text: &str, secrets: &[&str]) -> String {
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

pub(crate) struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

pub(crate) struct RedactedBytes(usize);

impl fmt::Debug for RedactedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes redacted>", self.0)
    }
}

/// Header names with values, except those that carry credentials or session state.
pub(crate) struct RedactedHeaders<'a>(&'a [(String, String)]);

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
