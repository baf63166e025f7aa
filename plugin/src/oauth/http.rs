//! The HTTP requests to the token endpoint, and the percent / form encoding they use.

use std::fmt;

use super::{ClientRegistration, Endpoints, RedactedBytes, RedactedHeaders};

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
pub(super) fn form_encode(params: &[(&str, &str)]) -> String {
    params.iter().map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v))).collect::<Vec<_>>().join("&")
}

/// The name/value pairs of a query or form body (`form_urlencoded`), refusing malformed
/// escapes and text that is not UTF-8 instead of replacing them.
pub(super) fn parse_form(query: &str) -> Result<Vec<(String, String)>, String> {
    // Splitting happens on ASCII '&' and '=', so the whole query decodes as UTF-8 exactly
    // when every name and value does.
    percent_decode(query)?;
    Ok(form_urlencoded::parse(query.as_bytes()).into_owned().collect())
}
