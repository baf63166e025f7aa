//! CSRF protection: every POST of a signed-in admin carries the session's token, as the hidden
//! form field `csrf` or the header `X-CSRF-Token` (the page's script); a missing or wrong
//! token gets 403 and nothing is done. The sign-in form, which has no session yet, uses a
//! double-submitted token: a random value in the cookie `mailplug_login` and the same value
//! in its hidden field. The cookies are SameSite=Strict besides.

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

/// The header of the page's script's POSTs.
pub const HEADER: &str = "x-csrf-token";
/// The sign-in form's cookie.
pub const LOGIN_COOKIE: &str = "mailplug_login";

/// Whether `given` is `expected` (constant time; an empty one never is).
pub fn same(given: &str, expected: &str) -> bool {
    !expected.is_empty() && given.len() == expected.len() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// Whether a POST carries the session's token, in the form field or the header.
pub fn valid(headers: &HeaderMap, form_field: Option<&str>, expected: &str) -> bool {
    let header = headers.get(HEADER).and_then(|v| v.to_str().ok());
    form_field.or(header).is_some_and(|g| same(g, expected))
}

/// The sign-in form's Set-Cookie for its token.
pub fn login_cookie(token: &str) -> String {
    format!("{LOGIN_COOKIE}={token}; Path=/admin; HttpOnly; Secure; SameSite=Strict; Max-Age=3600")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_must_be_there_and_equal() {
        let t = "a".repeat(64);
        let mut h = HeaderMap::new();
        assert!(valid(&h, Some(&t), &t));
        assert!(!valid(&h, None, &t), "missing");
        assert!(!valid(&h, Some(""), &t), "empty");
        assert!(!valid(&h, Some(&"b".repeat(64)), &t), "wrong");
        assert!(!valid(&h, Some(&t[..63]), &t), "a prefix");
        h.insert(HEADER, t.parse().unwrap());
        assert!(valid(&h, None, &t), "the header");
        assert!(!valid(&h, Some("wrong"), &t), "a wrong field is not saved by a right header");
        assert!(!same("", ""), "an empty expectation matches nothing");
    }
}
