//! Unit tests of the OAuth2 flow: endpoints, authorization URL, redirect, token requests and responses.

use super::flow::{check_endpoint, constant_time_eq};
use super::http::parse_form;
use super::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
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
