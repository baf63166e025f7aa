//! Discovery for custom domains: runs the DNS (MX, SRV) and HTTPS (Thunderbird autoconfig)
//! lookups the guest asks for, in parallel and within time limits, and hands the answers to
//! the guest, which ranks them. The host judges nothing in the answers; it only refuses to
//! fetch from addresses that a discovery must not reach (private networks, plain http).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use rustls::ClientConfig;

pub use crate::engine::exports::mailplug::connector::discover::{
    Candidate, Discovery, FetchedDocument, Lookup, MxRecord, SourceProblem, SrvRecord,
};
use crate::engine::{AuthSupport, GuestError, GuestProvider, Instance, Preset, ProtocolKind};
use crate::error::HostError;
use crate::http;

mod ranges;
use ranges::reachable;

/// How discovery looks things up.
#[derive(Clone, Debug)]
pub struct DiscoveryOptions {
    /// The DNS server to ask (a test rig, a private resolver); None = the system's resolver
    /// configuration (/etc/resolv.conf).
    pub nameserver: Option<SocketAddr>,
    /// Longest wait for one DNS answer or one HTTPS fetch.
    pub lookup_timeout: Duration,
    /// Longest wait for all lookups together; what has not answered by then is reported as
    /// timed out and the rest is ranked.
    pub total_timeout: Duration,
    /// Extra CA certificates (PEM) trusted for the autoconfig fetches besides the system roots.
    pub extra_ca: Option<PathBuf>,
    /// Test rigs only: allow autoconfig hosts on loopback addresses (and plain http to a
    /// loopback IP). Other private and local addresses are always refused.
    pub allow_loopback: bool,
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        DiscoveryOptions {
            nameserver: None,
            lookup_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(15),
            extra_ca: None,
            allow_loopback: false,
        }
    }
}

/// What happened to one lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Records found (for http: 1, the document).
    Found(usize),
    /// No such name, no such records, HTTP 404/410.
    NotFound,
    /// Timeout, refusal, TLS failure, unexpected HTTP status, a refused address: why.
    Failed(String),
}

/// One lookup the guest asked for and what came of it.
#[derive(Clone, Debug)]
pub struct LookupReport {
    /// "MX example.org", "SRV _imaps._tcp.example.org", "GET https://...".
    pub lookup: String,
    pub outcome: Outcome,
}

/// The result of a discovery: the guest's ranking and the host's lookups.
#[derive(Clone, Debug)]
pub struct Report {
    pub address: String,
    pub discovery: Discovery,
    pub lookups: Vec<LookupReport>,
}

enum Answer {
    Mx(Vec<MxRecord>),
    Srv(Vec<SrvRecord>),
    Document(FetchedDocument),
    NotFound,
    Failed(String),
}

/// Looks up everything the guest asks for `address` and returns its ranking. Fails only for a
/// malformed address, a broken resolver configuration or a component failure; lookups that
/// fail are in `Report::lookups`.
pub async fn discover(instance: &mut Instance, address: &str, opts: &DiscoveryOptions) -> Result<Report, HostError> {
    let lookups = instance.discovery_lookups(address).await?;
    let resolver = resolver(opts)?;
    let tls = crate::net::tls_config(opts.extra_ca.as_deref())?;

    let mut tasks = tokio::task::JoinSet::new();
    for (i, lookup) in lookups.iter().enumerate() {
        let (resolver, tls, opts, lookup) = (resolver.clone(), tls.clone(), opts.clone(), lookup.clone());
        tasks.spawn(async move {
            let answer = match lookup {
                Lookup::Mx(domain) => bounded(opts.lookup_timeout, mx(&resolver, &domain)).await,
                Lookup::Srv(name) => bounded(opts.lookup_timeout, srv(&resolver, &name)).await,
                Lookup::Http(url) => fetch(&resolver, &url, tls, &opts).await,
            };
            (i, answer)
        });
    }
    let mut answers: Vec<Option<Answer>> = lookups.iter().map(|_| None).collect();
    let deadline = tokio::time::Instant::now() + opts.total_timeout;
    loop {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(Ok((i, answer)))) => {
                if let Some(slot) = answers.get_mut(i) {
                    *slot = Some(answer);
                }
            }
            Ok(Some(Err(e))) => return Err(HostError::Plugin(format!("a discovery lookup task failed: {e}"))),
            Ok(None) => break,
            Err(_) => {
                tasks.abort_all();
                break;
            }
        }
    }

    let (mut mx_records, mut srv_records, mut documents, mut reports) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (lookup, answer) in lookups.iter().zip(answers) {
        let what = match lookup {
            Lookup::Mx(d) => format!("MX {d}"),
            Lookup::Srv(n) => format!("SRV {n}"),
            Lookup::Http(u) => format!("GET {u}"),
        };
        let outcome = match answer {
            None => Outcome::Failed(format!("no answer within the total time of {} s", opts.total_timeout.as_secs())),
            Some(Answer::Mx(v)) if v.is_empty() => Outcome::NotFound,
            Some(Answer::Srv(v)) if v.is_empty() => Outcome::NotFound,
            Some(Answer::Mx(v)) => {
                let n = v.len();
                mx_records.extend(v);
                Outcome::Found(n)
            }
            Some(Answer::Srv(v)) => {
                let n = v.len();
                srv_records.extend(v);
                Outcome::Found(n)
            }
            Some(Answer::Document(d)) => {
                documents.push(d);
                Outcome::Found(1)
            }
            Some(Answer::NotFound) => Outcome::NotFound,
            Some(Answer::Failed(why)) => Outcome::Failed(why),
        };
        reports.push(LookupReport { lookup: what, outcome });
    }
    let discovery = instance.discovery_rank(address, &mx_records, &srv_records, &documents).await?;
    Ok(Report { address: address.trim().to_string(), discovery, lookups: reports })
}

fn resolver(opts: &DiscoveryOptions) -> Result<TokioResolver, HostError> {
    let dns_err = |e: NetError| HostError::Network { server: "DNS".into(), message: format!("cannot set up the resolver: {e}") };
    let mut builder = match opts.nameserver {
        Some(addr) => {
            let (mut udp, mut tcp) = (ConnectionConfig::udp(), ConnectionConfig::tcp());
            udp.port = addr.port();
            tcp.port = addr.port();
            let server = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
            TokioResolver::builder_with_config(ResolverConfig::from_name_servers(vec![server]), TokioRuntimeProvider::default())
        }
        None => TokioResolver::builder_tokio().map_err(dns_err)?,
    };
    let o = builder.options_mut();
    o.timeout = opts.lookup_timeout;
    o.attempts = 2;
    builder.build().map_err(dns_err)
}

async fn bounded(limit: Duration, f: impl std::future::Future<Output = Answer>) -> Answer {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| Answer::Failed(format!("no answer within {} s", limit.as_secs())))
}

/// Absolute names, so that no search domain of the system's configuration is appended.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

fn dns_failure(e: NetError) -> Answer {
    if e.is_nx_domain() || e.is_no_records_found() {
        Answer::NotFound
    } else {
        Answer::Failed(e.to_string())
    }
}

async fn mx(resolver: &TokioResolver, domain: &str) -> Answer {
    match resolver.mx_lookup(fqdn(domain)).await {
        Ok(l) => Answer::Mx(
            l.answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(mx) => Some(MxRecord { preference: mx.preference, exchange: mx.exchange.to_ascii() }),
                    _ => None,
                })
                .collect(),
        ),
        Err(e) => dns_failure(e),
    }
}

async fn srv(resolver: &TokioResolver, name: &str) -> Answer {
    match resolver.srv_lookup(fqdn(name)).await {
        Ok(l) => Answer::Srv(
            l.answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SRV(s) => Some(SrvRecord {
                        name: name.to_string(),
                        priority: s.priority,
                        weight: s.weight,
                        port: s.port,
                        target: s.target.to_ascii(),
                    }),
                    _ => None,
                })
                .collect(),
        ),
        Err(e) => dns_failure(e),
    }
}

/// (https, host, port) of an absolute http(s) URL.
fn url_host(url: &str) -> Option<(bool, String, u16)> {
    let (https, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(r), _) => (true, r),
        (None, Some(r)) => (false, r),
        _ => return None,
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => (h, p.parse().ok()?),
        _ => (authority, if https { 443 } else { 80 }),
    };
    Some((https, host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase(), port))
}

async fn fetch(resolver: &TokioResolver, url: &str, tls: Arc<ClientConfig>, opts: &DiscoveryOptions) -> Answer {
    // http::execute_at connects to the URL's port at `ip`.
    let Some((https, host, _port)) = url_host(url) else {
        return Answer::Failed("not an absolute http(s) URL; not fetched".into());
    };
    let literal = host.parse::<IpAddr>().ok();
    let loopback_test_http = opts.allow_loopback && literal.is_some_and(|ip| ip.is_loopback());
    if !https && !loopback_test_http {
        return Answer::Failed("autoconfig is only fetched over https; not fetched".into());
    }
    let ip = match literal {
        Some(ip) => ip,
        None => {
            let found = tokio::time::timeout(opts.lookup_timeout, resolver.lookup_ip(fqdn(&host))).await;
            match found {
                Err(_) => return Answer::Failed(format!("resolving {host}: no answer within {} s", opts.lookup_timeout.as_secs())),
                Ok(Err(e)) => return dns_failure(e),
                Ok(Ok(ips)) => match ips.iter().next() {
                    Some(ip) => ip,
                    None => return Answer::NotFound,
                },
            }
        }
    };
    if !reachable(ip, opts.allow_loopback) {
        return Answer::Failed(format!(
            "{host} resolves to {ip}, a private or local address; autoconfig is only fetched from public addresses"
        ));
    }
    let headers = [("Accept".to_string(), "application/xml, text/xml".to_string())];
    let request = http::Request { method: "GET", url, headers: &headers, body: &[] };
    match http::execute_at(&request, ip, tls, opts.lookup_timeout).await {
        Ok(r) if r.status == 200 => {
            Answer::Document(FetchedDocument { url: url.to_string(), body: String::from_utf8_lossy(&r.body).into_owned() })
        }
        Ok(r) if r.status == 404 || r.status == 410 => Answer::NotFound,
        Ok(r) if (300..400).contains(&r.status) => {
            let to = r.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("location")).map(|(_, v)| v.as_str()).unwrap_or("?");
            Answer::Failed(format!("HTTP {} redirect to {}; redirects are not followed", r.status, to.escape_debug()))
        }
        Ok(r) => Answer::Failed(format!("HTTP status {}", r.status)),
        Err(e) => Answer::Failed(e.to_string()),
    }
}

// ---- presentation -----------------------------------------------------------------------------

fn protocol_name(p: ProtocolKind) -> &'static str {
    match p {
        ProtocolKind::Imap => "imap",
        ProtocolKind::Pop3 => "pop3",
        ProtocolKind::Smtp => "smtp",
    }
}

/// The kind and message of a guest error, for listing a refused source.
pub fn error_parts(e: &GuestError) -> (&'static str, &str) {
    match e {
        GuestError::Network(d) => ("network", &d.message),
        GuestError::Tls(d) => ("tls", &d.message),
        GuestError::AuthRejected(d) => ("auth-rejected", &d.message),
        GuestError::Protocol(d) => ("protocol", &d.message),
        GuestError::Refused(r) => ("refused", &r.detail.message),
        GuestError::Policy(d) => ("policy", &d.message),
        GuestError::Limit(d) => ("limit", &d.message),
        GuestError::Timeout(d) => ("timeout", &d.message),
        GuestError::InvalidInput(d) => ("invalid-input", &d.message),
    }
}

/// Text from DNS, HTTP or the guest on one comment line: control characters escaped, so that
/// nothing can end the comment and add configuration lines.
fn one_line(s: &str) -> String {
    s.chars().flat_map(|c| if c.is_control() { c.escape_debug().collect::<Vec<_>>() } else { vec![c] }).collect()
}

/// A TOML basic string on one line: quotes, backslashes and control characters escaped.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Report {
    /// The best candidate for mail in (IMAP before POP3) and for SMTP.
    pub fn best(&self) -> (Option<&Candidate>, Option<&Candidate>) {
        let c = &self.discovery.candidates;
        let inbound = c.iter().find(|c| c.protocol == ProtocolKind::Imap).or_else(|| c.iter().find(|c| c.protocol == ProtocolKind::Pop3));
        (inbound, c.iter().find(|c| c.protocol == ProtocolKind::Smtp))
    }

    /// True when every server of the snippet is a catalogue server.
    pub fn trusted(&self) -> bool {
        let (i, o) = self.best();
        (i.is_some() || o.is_some()) && i.is_none_or(|c| c.trusted) && o.is_none_or(|c| c.trusted)
    }

    /// A tenant-configuration snippet for the best candidates; `preset` is the catalogue entry
    /// of `discovery.preset`, for its sign-in method and From handling. None without candidates.
    pub fn snippet(&self, preset: Option<&Preset>) -> Option<String> {
        let (inbound, outbound) = self.best();
        if inbound.is_none() && outbound.is_none() {
            return None;
        }
        let local = self.address.rsplit_once('@').map(|(l, _)| l).unwrap_or(&self.address);
        let oauth = preset.and_then(|p| match p.auth.first() {
            Some(AuthSupport::Oauth2(provider)) => Some(provider.clone()),
            _ => None,
        });
        let auth = match &oauth {
            Some(p) => format!("auth = \"oauth2\"\noauth = {}", quoted(p)),
            None if preset.and_then(|p| p.auth.first()).is_some_and(|a| matches!(a, AuthSupport::AppPasswordRequired)) => {
                "password_env = \"MAILBOX_PASSWORD\"   # an app password".to_string()
            }
            None => "password_env = \"MAILBOX_PASSWORD\"".to_string(),
        };
        let mut out = String::new();
        if self.trusted() {
            let name = preset.map(|p| p.name.as_str()).unwrap_or("the provider");
            out.push_str(&format!("# {name}: catalogue servers, found for {}.\n", one_line(&self.address)));
        } else {
            out.push_str(&format!(
                "# SUGGESTION TO CONFIRM: found by DNS/HTTP for {}, not from the preset catalogue.\n# Check every value with the mail provider before use.\n",
                one_line(&self.address)
            ));
        }
        let server = |c: &Candidate| {
            format!(
                "host = {}\nport = {}\ntls = {}\nusername = {}\n{auth}\n",
                quoted(&c.host),
                c.port,
                c.tls,
                quoted(&c.username)
            )
        };
        let name = quoted(local);
        if let Some(c) = inbound {
            out.push_str(&format!("# from {}\n", one_line(&c.source)));
            out.push_str(&format!(
                "[[mailbox]]\nname = {name}\naddress = {}\nprotocol = \"{}\"\n{}\n",
                quoted(&self.address),
                protocol_name(c.protocol),
                server(c)
            ));
        }
        if let Some(c) = outbound {
            let provider = match preset.map(|p| p.smtp_provider) {
                Some(GuestProvider::Gmail) => "gmail",
                Some(GuestProvider::Microsoft) => "microsoft",
                _ => "generic",
            };
            let mailboxes = if inbound.is_some() { format!("[{name}]") } else { "[]".to_string() };
            out.push_str(&format!("# from {}\n", one_line(&c.source)));
            out.push_str(&format!("[[queue]]\nname = {name}\nmailboxes = {mailboxes}\n[queue.smtp]\nprovider = \"{provider}\"\n{}\n", server(c)));
        }
        if let Some(p) = &oauth {
            out.push_str(&format!(
                "# Register an OAuth2 app with the provider and put its client id here.\n[oauth.{p}]\nprovider = {}\nclient_id = \"YOUR-CLIENT-ID\"\n",
                quoted(p)
            ));
            if p == "microsoft" {
                out.push_str("tenant = \"organizations\"\n");
            }
        }
        if let Some(p) = preset {
            for n in &p.notes {
                out.push_str(&format!("# note: {}\n", one_line(&n.en)));
            }
        }
        Some(out)
    }

    /// The report as one JSON object (`trusted: false` marks suggestions to confirm).
    pub fn to_json(&self, snippet: Option<&str>) -> serde_json::Value {
        let candidates: Vec<_> = self
            .discovery
            .candidates
            .iter()
            .map(|c| {
                serde_json::json!({"protocol": protocol_name(c.protocol), "host": c.host, "port": c.port, "tls": c.tls,
                    "username": c.username, "source": c.source, "trusted": c.trusted})
            })
            .collect();
        let problems: Vec<_> = self
            .discovery
            .problems
            .iter()
            .map(|p| {
                let (kind, message) = error_parts(&p.error);
                serde_json::json!({"source": p.source, "kind": kind, "message": message})
            })
            .collect();
        let lookups: Vec<_> = self
            .lookups
            .iter()
            .map(|l| {
                let (outcome, detail) = match &l.outcome {
                    Outcome::Found(n) => ("found", n.to_string()),
                    Outcome::NotFound => ("not-found", String::new()),
                    Outcome::Failed(why) => ("failed", why.clone()),
                };
                serde_json::json!({"lookup": l.lookup, "outcome": outcome, "detail": detail})
            })
            .collect();
        serde_json::json!({
            "address": self.address,
            "preset": self.discovery.preset,
            "source": "dns",
            "trusted": self.trusted(),
            "candidates": candidates,
            "problems": problems,
            "lookups": lookups,
            "snippet": snippet,
        })
    }

    /// The candidates, refused sources and failed lookups as TOML comment lines, so that the
    /// whole text output (these lines and the snippet) still loads as a configuration.
    pub fn comments(&self) -> String {
        let mut out = String::new();
        let d = &self.discovery;
        if d.candidates.is_empty() {
            out.push_str(&format!("# No servers found for {} by MX, SRV or autoconfig.\n", one_line(&self.address)));
        } else {
            out.push_str(&format!("# Candidates for {}, best first:\n", one_line(&self.address)));
        }
        for c in &d.candidates {
            out.push_str(&format!(
                "#   {:<4} {}:{} {:<8} user {}  {}  ({})\n",
                protocol_name(c.protocol).to_uppercase(),
                one_line(&c.host),
                c.port,
                if c.tls { "TLS" } else { "STARTTLS" },
                one_line(&c.username),
                if c.trusted { "catalogue server" } else { "SUGGESTION" },
                one_line(&c.source)
            ));
        }
        for p in &d.problems {
            let (kind, message) = error_parts(&p.error);
            out.push_str(&format!("# problem ({kind}) in {}: {}\n", one_line(&p.source), one_line(message)));
        }
        for l in &self.lookups {
            if let Outcome::Failed(why) = &l.outcome {
                out.push_str(&format!("# lookup failed: {}: {}\n", one_line(&l.lookup), one_line(why)));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(url_host("https://autoconfig.example.org/mail/config-v1.1.xml?a=b"), Some((true, "autoconfig.example.org".into(), 443)));
        assert_eq!(url_host("https://Example.org:8443/x"), Some((true, "example.org".into(), 8443)));
        assert_eq!(url_host("http://127.0.0.1:8080"), Some((false, "127.0.0.1".into(), 8080)));
        assert_eq!(url_host("https://[::1]:8443/"), Some((true, "::1".into(), 8443)));
        assert_eq!(url_host("https://user@evil.example/"), None);
        assert_eq!(url_host("ftp://x/"), None);
    }

    #[test]
    fn comments_cannot_add_configuration_lines() {
        use crate::engine::{ErrorDetail, RetryAdvice, Stage};
        let hostile = "x\n[[mailbox]]\nname = \"evil\"";
        let detail = ErrorDetail { stage: Stage::Connect, message: hostile.into(), reply: None, retry: RetryAdvice::FixFirst };
        let report = Report {
            address: "jo@example.org".into(),
            discovery: Discovery {
                preset: None,
                candidates: vec![Candidate {
                    protocol: ProtocolKind::Imap,
                    host: "imap.example.org".into(),
                    port: 993,
                    tls: true,
                    username: hostile.into(),
                    source: hostile.into(),
                    trusted: false,
                }],
                problems: vec![SourceProblem { source: hostile.into(), error: GuestError::InvalidInput(detail) }],
            },
            lookups: vec![LookupReport { lookup: hostile.into(), outcome: Outcome::Failed(hostile.into()) }],
        };
        let text = format!("{}{}", report.comments(), report.snippet(None).unwrap());
        assert!(text.contains("SUGGESTION TO CONFIRM"));
        let config: toml::Table = text.parse().unwrap_or_else(|e| panic!("{e}\n{text}"));
        let mailboxes = config["mailbox"].as_array().unwrap();
        assert_eq!(mailboxes.len(), 1, "{text}");
        assert_eq!(mailboxes[0]["username"].as_str(), Some(hostile));
        assert_eq!(mailboxes[0]["name"].as_str(), Some("jo"));
    }

    #[test]
    fn toml_strings_are_escaped() {
        // Autoconfig user names end up in the snippet: no quote or line break may escape.
        for s in ["plain", "a\"b\\c", "it's", "two\nlines\r\n[[mailbox]]", "'\"'''"] {
            let line = format!("v = {}", quoted(s));
            assert!(!line.contains('\n'), "{line}");
            let parsed: toml::Table = line.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(parsed["v"].as_str(), Some(s), "{line}");
        }
    }
}
