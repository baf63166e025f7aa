//! The one check of a webhook URL, used by the configuration (`[webhook] url`) and again by the
//! deliverer for a target built without it: parsed by the `url` crate (WHATWG URL, as reqwest
//! reads it when it posts), https only, plain http only to a loopback host or with
//! `insecure_plaintext`, and no user name or password in it.

use url::{Host, Url};

/// Why a webhook URL is refused. Each caller words it for its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookUrlError {
    /// Not an http(s) URL at all (another scheme, or no scheme).
    NotHttp,
    /// Not a valid URL: white space or control characters, a bad host or port, ...
    Invalid,
    /// A user name or password in the URL.
    UserInfo,
    /// Plain http to a host that is not loopback, without `insecure_plaintext`.
    Plaintext,
}

/// Checks `text` as a webhook URL and returns it parsed.
pub fn webhook_url(text: &str, insecure_plaintext: bool) -> Result<Url, WebhookUrlError> {
    // The URL standard drops tabs and line breaks and trims spaces; a configured URL with
    // any of them is a mistake to report, not to repair.
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(WebhookUrlError::Invalid);
    }
    let url = match Url::parse(text) {
        Ok(url) => url,
        Err(url::ParseError::RelativeUrlWithoutBase) => return Err(WebhookUrlError::NotHttp),
        Err(_) => return Err(WebhookUrlError::Invalid),
    };
    let plain = match url.scheme() {
        "https" => false,
        "http" => true,
        _ => return Err(WebhookUrlError::NotHttp),
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(WebhookUrlError::UserInfo);
    }
    if plain && !insecure_plaintext && !is_loopback(url.host()) {
        return Err(WebhookUrlError::Plaintext);
    }
    Ok(url)
}

/// `localhost`, 127.0.0.0/8 or ::1 (the `url` crate has already lowercased domains and read
/// IPv4 in all its spellings).
fn is_loopback(host: Option<Host<&str>>) -> bool {
    match host {
        Some(Host::Domain(d)) => d == "localhost",
        Some(Host::Ipv4(a)) => a.is_loopback(),
        Some(Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::WebhookUrlError::*;
    use super::*;

    #[test]
    fn https_anywhere_plain_http_only_to_loopback_or_with_the_opt_in() {
        for ok in [
            "https://hooks.example.com/mailplug?x=1",
            "https://hooks.example.com:8443/h",
            "http://127.0.0.1:9/h",
            "http://[::1]:9/h",
            "http://localhost/h",
            "http://LOCALHOST:8080/h",
            // The hand parser refused these though they are what they say.
            "HTTPS://hooks.example.com/h",
            "http://127.1:9/h",
        ] {
            assert!(webhook_url(ok, false).is_ok(), "{ok}");
        }
        assert_eq!(webhook_url("http://hooks.example.com/h", false), Err(Plaintext));
        assert!(webhook_url("http://hooks.example.com/h", true).is_ok());
        assert_eq!(webhook_url("http://127.0.0.1.hooks.example.com/h", false), Err(Plaintext));
        assert_eq!(webhook_url("http://localhost.example.com/h", false), Err(Plaintext));
        assert_eq!(webhook_url("http://[::2]/h", false), Err(Plaintext));
    }

    #[test]
    fn refusals_are_typed() {
        for (url, want) in [
            ("ftp://hooks.example.com/h", NotHttp),
            ("hooks.example.com/h", NotHttp),
            ("mailto:ops@example.com", NotHttp),
            ("https://user:pw@hooks.example.com/h", UserInfo),
            ("https://user@hooks.example.com/h", UserInfo),
            ("http://localhost@hooks.example.com/h", UserInfo),
            ("https://", Invalid),
            ("https://hooks .example.com/h", Invalid),
            ("https://hooks.example.com/h\n", Invalid),
            ("https://hooks.example.com/a\tb", Invalid),
            // The hand parser let these through to fail only when the deliverer started.
            ("https://hooks.example.com:99999/h", Invalid),
            ("https://[::1/h", Invalid),
            ("https://hooks<example>.com/h", Invalid),
        ] {
            assert_eq!(webhook_url(url, false), Err(want), "{url}");
            assert_eq!(webhook_url(url, true), Err(want), "{url} with insecure_plaintext");
        }
    }
}
