//! Server discovery from an e-mail address, without I/O: this module says what the host
//! should look up (MX, RFC 6186/8314 SRV, Thunderbird autoconfig) and turns the answers into
//! ranked candidates. Everything except a catalogue match is only a suggestion for the admin.

use crate::error::{Error, Result, Stage};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    Mx(String),
    Srv(String),
    Http(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MxRecord {
    pub preference: u16,
    pub exchange: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvRecord {
    pub service: String,
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    Pop3,
    Imap,
    Smtp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub proto: Proto,
    pub host: String,
    pub port: u16,
    /// true = TLS from the first byte; false = STARTTLS (plaintext servers are never suggested).
    pub tls: bool,
    pub username: String,
    /// "catalogue: gmail" | "MX -> Microsoft 365" | "SRV _imaps._tcp" | "autoconfig https://..."
    pub source: String,
    /// From a catalogue match; false = a suggestion the admin must confirm.
    pub trusted: bool,
}

/// Largest autoconfig document we parse; real ones are a few KB.
pub const MAX_AUTOCONFIG_BYTES: usize = 256 * 1024;

/// RFC 6186 / RFC 8314 services, with the protocol and whether TLS starts at the first byte.
const SRV_SERVICES: [(&str, Proto, bool); 6] = [
    ("_imaps._tcp", Proto::Imap, true),
    ("_imap._tcp", Proto::Imap, false),
    ("_pop3s._tcp", Proto::Pop3, true),
    ("_pop3._tcp", Proto::Pop3, false),
    ("_submissions._tcp", Proto::Smtp, true),
    ("_submission._tcp", Proto::Smtp, false),
];

fn bad_input(m: impl Into<String>) -> Error {
    Error::invalid(Stage::Connect, m)
}

/// Splits and checks an address; returns (local part, lower-case domain).
fn split_address(address: &str) -> Result<(&str, String)> {
    let address = address.trim();
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Err(bad_input(format!("'{address}' is not an e-mail address: it has no '@'. Enter the full address, e.g. support@example.com.")));
    };
    if local.is_empty() || local.len() > 64 || local.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '@' | '"' | '\\')) {
        return Err(bad_input(format!("The part before '@' in '{address}' is empty, too long or contains spaces or special characters. Enter the full address, e.g. support@example.com.")));
    }
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if !is_host_name(&domain) || !domain.contains('.') {
        return Err(bad_input(format!("The domain of '{address}' is not a valid internet domain name. Check the part after '@'.")));
    }
    Ok((local, domain))
}

/// An ASCII DNS name: labels of letters, digits, '-' and '_' (1..=63 bytes, no '-' at the ends).
fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// What the host should look up for an address, in order: MX of the domain; SRV records of
/// RFC 6186 / RFC 8314 at the domain; the Thunderbird autoconfig URLs.
pub fn lookups(address: &str) -> Result<Vec<Lookup>> {
    let (local, domain) = split_address(address)?;
    let addr = format!("{local}@{domain}");
    let mut v = Vec::with_capacity(1 + SRV_SERVICES.len() + 2);
    v.push(Lookup::Mx(domain.clone()));
    for (service, _, _) in SRV_SERVICES {
        v.push(Lookup::Srv(format!("{service}.{domain}")));
    }
    v.push(Lookup::Http(format!("https://autoconfig.{domain}/mail/config-v1.1.xml?emailaddress={}", crate::oauth::percent_encode(&addr))));
    v.push(Lookup::Http(format!("https://{domain}/.well-known/autoconfig/mail/config-v1.1.xml")));
    Ok(v)
}

fn normalise_host(h: &str) -> String {
    h.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The provider a custom domain's MX points to (the most preferred MX that is recognised).
pub fn provider_from_mx(mx: &[MxRecord]) -> Option<&'static str> {
    recognise_mx(mx).map(|(id, _)| id)
}

/// The preset id and the (normalised) exchange of the most preferred recognised MX.
fn recognise_mx(mx: &[MxRecord]) -> Option<(&'static str, String)> {
    let mut sorted: Vec<&MxRecord> = mx.iter().collect();
    sorted.sort_by_key(|r| r.preference);
    sorted.iter().find_map(|r| {
        let host = normalise_host(&r.exchange);
        let under = |suffix: &str| host.ends_with(suffix);
        let id = if under(".google.com") || under(".googlemail.com") {
            "gmail"
        } else if under(".mail.protection.outlook.com") {
            "microsoft365"
        } else if under(".olc.protection.outlook.com") {
            "outlook"
        } else {
            return None;
        };
        Some((id, host))
    })
}

/// Orders MX records by preference (lowest first), then by name for a stable order.
#[allow(clippy::ptr_arg)] // signature shared with order_srv, which needs Vec::retain
pub fn order_mx(v: &mut Vec<MxRecord>) {
    v.sort_by(|a, b| a.preference.cmp(&b.preference).then_with(|| a.exchange.cmp(&b.exchange)));
}

/// Orders SRV records by priority, then by weight (higher first), and drops target "."
/// (RFC 2782: service decidedly not available). RFC 2782 asks clients to pick randomly by
/// weight to spread load; these are suggestions shown to an admin, who configures one fixed
/// host, so a reproducible order matters more than load spreading.
pub fn order_srv(v: &mut Vec<SrvRecord>) {
    v.retain(|r| !normalise_host(&r.target).is_empty());
    v.sort_by(|a, b| {
        a.priority
            .cmp(&b.priority)
            .then_with(|| b.weight.cmp(&a.weight))
            .then_with(|| a.target.cmp(&b.target))
            .then_with(|| a.port.cmp(&b.port))
    });
}

/// SRV results to candidates (_imaps -> TLS, _imap -> STARTTLS, ...), ordered as `order_srv`.
/// Records of unknown services, with port 0 or an invalid target are left out.
pub fn from_srv(records: &[SrvRecord], address: &str) -> Vec<Candidate> {
    let mut sorted = records.to_vec();
    order_srv(&mut sorted);
    let username = address.trim().to_string();
    sorted
        .iter()
        .filter_map(|r| {
            let service = r.service.trim().to_ascii_lowercase();
            let (name, proto, tls) = SRV_SERVICES
                .iter()
                .find(|(name, _, _)| service == *name || service.starts_with(&format!("{name}.")))?;
            let host = normalise_host(&r.target);
            if r.port == 0 || !is_host_name(&host) {
                return None;
            }
            Some(Candidate {
                proto: *proto,
                host,
                port: r.port,
                tls: *tls,
                username: username.clone(),
                source: format!("SRV {name}"),
                trusted: false,
            })
        })
        .collect()
}

/// One incomingServer / outgoingServer element being read.
#[derive(Default)]
struct ServerElement {
    outgoing: bool,
    kind: String,
    hostname: Option<String>,
    port: Option<String>,
    socket_type: Option<String>,
    username: Option<String>,
}

/// Elements nested deeper than this are refused (real documents nest 4 levels).
const MAX_AUTOCONFIG_DEPTH: usize = 32;

/// The text of a server's field element being read: literal text and resolved references.
/// Whitespace around the value is dropped, but only literal whitespace: `&#13;&#10;` written
/// as references stays in the value (and makes a host name invalid).
#[derive(Default)]
struct FieldText {
    value: String,
    /// Bytes at the end of `value` that are literal whitespace.
    trailing_literal_ws: usize,
}

impl FieldText {
    fn push_literal(&mut self, text: &str) {
        let text = if self.value.is_empty() { text.trim_start() } else { text };
        self.value.push_str(text);
        let ws = text.len() - text.trim_end().len();
        self.trailing_literal_ws = if ws == text.len() { self.trailing_literal_ws + ws } else { ws };
    }
    fn push_reference(&mut self, resolved: &str) {
        self.value.push_str(resolved);
        self.trailing_literal_ws = 0;
    }
    fn finish(mut self) -> Option<String> {
        self.value.truncate(self.value.len() - self.trailing_literal_ws);
        (!self.value.is_empty()).then_some(self.value)
    }
}

/// Parses a Thunderbird autoconfig document (clientConfig 1.1) into candidates, substituting
/// %EMAILADDRESS%, %EMAILLOCALPART% and %EMAILDOMAIN%. Servers with socketType "plain" are
/// left out (we never suggest unencrypted servers); a document that offers only such servers is
/// an error that says so. `source` is "autoconfig"; the host, which knows the URL, may
/// append it. Server types other than imap/pop3/smtp (e.g. exchange) are ignored.
///
/// The XML is read with quick-xml (a pull parser: no tree is built, entities declared in a DTD
/// are never expanded); this function keeps the limits: document size, nesting depth, one
/// server element at a time, only the five predefined entities and character references.
pub fn parse_autoconfig(xml: &str, address: &str) -> Result<Vec<Candidate>> {
    use quick_xml::events::Event;

    if xml.len() > MAX_AUTOCONFIG_BYTES {
        return Err(Error::limit(
            Stage::Connect,
            format!("The autoconfig document is {} bytes; documents over {} bytes are refused. Configure the servers by hand.", xml.len(), MAX_AUTOCONFIG_BYTES),
        ));
    }
    let (local, domain) = split_address(address)?;
    let full_address = format!("{local}@{domain}");
    let substitute = |s: &str| {
        s.replace("%EMAILADDRESS%", &full_address).replace("%EMAILLOCALPART%", local).replace("%EMAILDOMAIN%", &domain)
    };
    let malformed = |what: &str| bad_input(format!("The autoconfig document is malformed ({what}); configure the servers by hand."));

    let mut reader = quick_xml::Reader::from_str(xml);
    // Start and end tags must match; an end tag without a start tag is an error.
    reader.config_mut().check_end_names = true;
    reader.config_mut().allow_unmatched_ends = false;
    let mut stack: Vec<String> = Vec::new();
    let mut server: Option<ServerElement> = None;
    // The field element of `server` being read (hostname, port, ...), and its text.
    let mut field: Option<FieldText> = None;
    let mut saw_root = false;
    let mut skipped_plain = 0usize;
    let mut out = Vec::new();
    loop {
        let event = reader.read_event().map_err(|e| malformed(&xml_error(&e)))?;
        match event {
            Event::Start(ref tag) | Event::Empty(ref tag) => {
                let self_closing = matches!(event, Event::Empty(_));
                let name: &str = tag.name().into_inner();
                if name.is_empty() {
                    return Err(malformed("a tag without a name"));
                }
                if stack.is_empty() {
                    if saw_root || name != "clientConfig" {
                        return Err(malformed(&format!("the root element is <{name}>, expected <clientConfig>")));
                    }
                    saw_root = true;
                }
                if (name == "incomingServer" || name == "outgoingServer") && !self_closing {
                    if server.is_some() {
                        return Err(malformed("a server element inside another"));
                    }
                    let kind = match tag.try_get_attribute("type") {
                        Ok(Some(a)) => a.normalized_value(quick_xml::XmlVersion::Implicit1_0).map_err(|_| malformed("an unknown character reference in an attribute"))?.into_owned(),
                        Ok(None) => String::new(),
                        Err(e) => return Err(malformed(&xml_error(&e.into()))),
                    };
                    server = Some(ServerElement { outgoing: name == "outgoingServer", kind, ..Default::default() });
                }
                if !self_closing {
                    if stack.len() >= MAX_AUTOCONFIG_DEPTH {
                        return Err(malformed("elements nested too deeply"));
                    }
                    // A field is an element directly inside a server element.
                    let in_server = matches!(stack.last().map(String::as_str), Some("incomingServer" | "outgoingServer"));
                    field = (server.is_some() && in_server).then(FieldText::default);
                    stack.push(name.to_string());
                }
            }
            Event::End(tag) => {
                let name = tag.name().into_inner().to_string();
                stack.pop();
                if let (Some(f), Some(s)) = (field.take(), server.as_mut()) {
                    let slot = match name.as_str() {
                        "hostname" => Some(&mut s.hostname),
                        "port" => Some(&mut s.port),
                        "socketType" => Some(&mut s.socket_type),
                        "username" => Some(&mut s.username),
                        _ => None,
                    };
                    if let (Some(slot), Some(value)) = (slot, f.finish()) {
                        *slot = Some(value);
                    }
                } else if name == "incomingServer" || name == "outgoingServer" {
                    if let Some(s) = server.take() {
                        match server_candidate(s, &substitute)? {
                            Some(c) => out.push(c),
                            None => skipped_plain += 1,
                        }
                    }
                }
            }
            Event::Text(text) => {
                if let Some(f) = field.as_mut() {
                    f.push_literal(&text);
                }
            }
            Event::GeneralRef(reference) => {
                if let Some(f) = field.as_mut() {
                    let unknown = || malformed("unknown character reference");
                    match reference.resolve_char_ref().map_err(|_| unknown())? {
                        Some(c) => f.push_reference(c.encode_utf8(&mut [0; 4])),
                        None => {
                            f.push_reference(quick_xml::escape::resolve_predefined_entity(&reference).ok_or_else(unknown)?);
                        }
                    }
                }
            }
            Event::CData(_) => return Err(malformed("CDATA sections are not expected in autoconfig")),
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
            Event::Eof => break,
        }
    }
    if !saw_root {
        return Err(malformed("no <clientConfig> element"));
    }
    if let Some(open) = stack.last() {
        return Err(malformed(&format!("<{open}> is never closed")));
    }
    if out.is_empty() && skipped_plain > 0 {
        return Err(Error::policy(
            Stage::Connect,
            "The autoconfig document offers only unencrypted (plain) servers, which are not suggested. Ask the provider for the TLS or STARTTLS settings.",
        ));
    }
    Ok(out)
}

/// What is wrong with the document, in words for the admin (never the document's text).
fn xml_error(e: &quick_xml::Error) -> String {
    use quick_xml::errors::{IllFormedError, SyntaxError};
    match e {
        quick_xml::Error::Syntax(s) => match s {
            SyntaxError::UnclosedComment => "unterminated comment".into(),
            SyntaxError::UnclosedPI | SyntaxError::UnclosedXmlDecl => "unterminated processing instruction".into(),
            SyntaxError::UnclosedDoctype | SyntaxError::InvalidBangMarkup => "unterminated declaration".into(),
            SyntaxError::UnclosedCData => "CDATA sections are not expected in autoconfig".into(),
            _ => "unterminated start tag".into(),
        },
        quick_xml::Error::IllFormed(i) => match i {
            IllFormedError::MismatchedEndTag { expected, found } => format!("</{}> closes <{}>", clip(found), clip(expected)),
            IllFormedError::UnmatchedEndTag(name) => format!("</{}> without a start tag", clip(name)),
            other => format!("{}", clip(&other.to_string())),
        },
        quick_xml::Error::InvalidAttr(_) => "a malformed attribute".into(),
        quick_xml::Error::Escape(_) => "unknown character reference".into(),
        _ => "unreadable XML".into(),
    }
}

/// A name from the document, bounded and without control characters, for an error message.
fn clip(s: &str) -> String {
    s.chars().take(64).flat_map(char::escape_debug).collect()
}

/// Checks one server element; Ok(None) for a plain (unencrypted) or unsupported server.
fn server_candidate(s: ServerElement, substitute: &dyn Fn(&str) -> String) -> Result<Option<Candidate>> {
    let proto = match (s.outgoing, s.kind.as_str()) {
        (false, "imap") => Proto::Imap,
        (false, "pop3") => Proto::Pop3,
        (true, "smtp") => Proto::Smtp,
        // Exchange/ActiveSync/JMAP entries are not protocols this plugin speaks.
        _ => return Ok(None),
    };
    let label = format!("{} server", s.kind);
    let refuse = |m: String| Err(bad_input(format!("The autoconfig document has an unusable {label}: {m}. Configure the servers by hand.")));
    let Some(raw_host) = s.hostname else { return refuse("no hostname".into()) };
    let host = substitute(&raw_host);
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return refuse(format!("the hostname {host:?} contains spaces or line breaks"));
    }
    let host = normalise_host(&host);
    if !is_host_name(&host) {
        return refuse(format!("'{host}' is not a valid host name"));
    }
    let Some(raw_port) = s.port else { return refuse("no port".into()) };
    let port = match raw_port.trim().parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => p as u16,
        _ => return refuse(format!("port '{}' is not a number from 1 to 65535", raw_port.escape_debug())),
    };
    let tls = match s.socket_type.as_deref().map(str::trim) {
        Some("SSL") => true,
        Some("STARTTLS") => false,
        Some("plain") => return Ok(None),
        Some(other) => return refuse(format!("socketType '{}' is unknown (expected SSL, STARTTLS or plain)", other.escape_debug())),
        None => return refuse("no socketType".into()),
    };
    let username = substitute(s.username.as_deref().unwrap_or("%EMAILADDRESS%").trim());
    if username.chars().any(|c| c.is_control()) {
        return refuse("the username contains control characters".into());
    }
    Ok(Some(Candidate { proto, host, port, tls, username, source: "autoconfig".to_string(), trusted: false }))
}

/// A document the host fetched from one of the `Lookup::Http` URLs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    pub url: String,
    pub body: String,
}

/// An answer that was refused; discovery goes on with the other sources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceProblem {
    /// "autoconfig https://...", "SRV _imaps._tcp.example.org", "MX".
    pub source: String,
    pub error: Error,
}

/// Ranked candidates for an address, and the sources that were refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovery {
    /// The catalogue preset of the domain, found by its domain or its MX.
    pub preset: Option<&'static str>,
    /// Best first; see `rank`.
    pub candidates: Vec<Candidate>,
    pub problems: Vec<SourceProblem>,
}

/// More answers than this per kind are not looked at (a real domain has a handful).
pub const MAX_RECORDS: usize = 64;
/// More autoconfig documents than this are not parsed (`lookups` asks for two).
pub const MAX_DOCUMENTS: usize = 8;

/// Source labels end up in admin output: no control characters, bounded length.
fn label(kind: &str, what: &str) -> String {
    let mut clean: String = what.chars().take(200).flat_map(char::escape_debug).collect();
    if what.chars().count() > 200 {
        clean.push_str("...");
    }
    format!("{kind} {clean}")
}

fn to_preset_proto(p: Proto) -> crate::presets::Proto {
    match p {
        Proto::Pop3 => crate::presets::Proto::Pop3,
        Proto::Imap => crate::presets::Proto::Imap,
        Proto::Smtp => crate::presets::Proto::Smtp,
    }
}

/// The id of a catalogue preset whose server for the protocol is exactly this host, port and
/// TLS mode: credentials sent there can only reach that provider.
fn catalogue_server(catalogue: &[crate::presets::Preset], c: &Candidate) -> Option<&'static str> {
    catalogue.iter().find_map(|p| {
        p.server(to_preset_proto(c.proto))
            .filter(|s| s.host == c.host && s.port == c.port && s.tls == c.tls)
            .map(|_| p.id)
    })
}

/// The candidates of a catalogue preset (all trusted).
fn preset_candidates(p: &crate::presets::Preset, local: &str, full: &str, source: &str) -> Vec<Candidate> {
    let username = match p.username {
        crate::presets::UsernameForm::FullAddress => full,
        crate::presets::UsernameForm::LocalPart => local,
    };
    [(Proto::Imap, &p.imap), (Proto::Pop3, &p.pop3), (Proto::Smtp, &p.smtp)]
        .into_iter()
        .filter_map(|(proto, s)| {
            s.as_ref().map(|s| Candidate {
                proto,
                host: s.host.clone(),
                port: s.port,
                tls: s.tls,
                username: username.to_string(),
                source: source.to_string(),
                trusted: true,
            })
        })
        .collect()
}

/// Ranks what the host found for `address`: MX records, SRV records (with the queried name in
/// `service`) and fetched autoconfig documents. Only a malformed address is an error;
/// malformed or hostile answers are left out and listed in `problems`.
///
/// Order: by protocol (IMAP, POP3, SMTP); within one, trusted candidates first (a catalogue
/// preset found by domain or MX, or any server that is exactly a catalogue server), then
/// autoconfig in document order (the provider's own preference, with its username form), then
/// SRV by priority, implicit TLS before STARTTLS at equal priority (RFC 8314 prefers it), then
/// higher weight. Duplicates (same protocol, host, port, TLS) keep the first, best-ranked entry.
pub fn rank(address: &str, mx: &[MxRecord], srv: &[SrvRecord], documents: &[Document]) -> Result<Discovery> {
    let (local, domain) = split_address(address)?;
    let full = format!("{local}@{domain}");
    let catalogue = crate::presets::catalogue();
    let mut problems = Vec::new();
    let too_many = |source: &str, what: &str, n: usize, max: usize| SourceProblem {
        source: source.to_string(),
        error: Error::limit(Stage::Connect, format!("The host passed {n} {what}; only the first {max} are considered.")),
    };

    // Trusted: the catalogue by domain, else a recognised MX.
    let mut preset = None;
    let mut candidates: Vec<Candidate> = Vec::new();
    if let Some(p) = crate::presets::by_domain(&domain) {
        candidates = preset_candidates(&p, local, &full, &format!("catalogue: {}", p.id));
        preset = Some(p.id);
    } else {
        if mx.len() > MAX_RECORDS {
            problems.push(too_many("MX", "MX records", mx.len(), MAX_RECORDS));
        }
        let mut usable = Vec::with_capacity(mx.len().min(MAX_RECORDS));
        for r in mx.iter().take(MAX_RECORDS) {
            let host = normalise_host(&r.exchange);
            // "." (RFC 7505 null MX: no mail at all) is not an error, just nothing to recognise.
            if host.is_empty() {
                continue;
            }
            if is_host_name(&host) {
                usable.push(r.clone());
            } else {
                problems.push(SourceProblem {
                    source: label("MX", &r.exchange),
                    error: bad_input("The MX record's exchange is not a valid host name; it was ignored. Check the domain's DNS."),
                });
            }
        }
        if let Some((id, exchange)) = recognise_mx(&usable) {
            if let Some(p) = crate::presets::by_id(id) {
                candidates = preset_candidates(&p, local, &full, &format!("MX {exchange} -> {}", p.name));
                preset = Some(p.id);
            }
        }
    }

    // Autoconfig, in the order the documents came.
    if documents.len() > MAX_DOCUMENTS {
        problems.push(too_many("autoconfig", "autoconfig documents", documents.len(), MAX_DOCUMENTS));
    }
    for doc in documents.iter().take(MAX_DOCUMENTS) {
        let source = label("autoconfig", &doc.url);
        match parse_autoconfig(&doc.body, &full) {
            Ok(found) => candidates.extend(found.into_iter().map(|c| Candidate { source: source.clone(), ..c })),
            Err(error) => problems.push(SourceProblem { source, error }),
        }
    }

    // SRV: (priority, implicit TLS first, higher weight first) within a protocol.
    if srv.len() > MAX_RECORDS {
        problems.push(too_many("SRV", "SRV records", srv.len(), MAX_RECORDS));
    }
    let mut from_dns: Vec<(u16, u16, Candidate)> = Vec::new();
    for r in srv.iter().take(MAX_RECORDS) {
        let name = normalise_host(&r.service);
        let source = label("SRV", &name);
        let refuse = |m: String| SourceProblem { source: source.clone(), error: bad_input(format!("{m}; the record was ignored. Check the domain's DNS.")) };
        let Some((_, proto, tls)) = SRV_SERVICES
            .iter()
            .find(|(service, _, _)| name == *service || name.strip_prefix(service).and_then(|d| d.strip_prefix('.')) == Some(domain.as_str()))
        else {
            problems.push(refuse(format!("'{}' is not a mail service name of {domain}", r.service.escape_debug())));
            continue;
        };
        let target = normalise_host(&r.target);
        if target.is_empty() {
            continue; // "." = decidedly not offered (RFC 2782)
        }
        if !is_host_name(&target) {
            problems.push(refuse(format!("the target '{}' is not a valid host name", r.target.escape_debug())));
            continue;
        }
        if r.port == 0 {
            problems.push(refuse("port 0 is not a usable port".to_string()));
            continue;
        }
        let c = Candidate { proto: *proto, host: target, port: r.port, tls: *tls, username: full.clone(), source, trusted: false };
        from_dns.push((r.priority, r.weight, c));
    }
    from_dns.sort_by(|(pa, wa, a), (pb, wb, b)| {
        pa.cmp(pb).then(b.tls.cmp(&a.tls)).then(wb.cmp(wa)).then_with(|| a.host.cmp(&b.host)).then(a.port.cmp(&b.port))
    });
    candidates.extend(from_dns.into_iter().map(|(_, _, c)| c));

    // A suggestion that is exactly a catalogue server is as safe as the catalogue.
    for c in candidates.iter_mut().filter(|c| !c.trusted) {
        if let Some(id) = catalogue_server(&catalogue, c) {
            c.trusted = true;
            c.source = format!("{} (catalogue server of {id})", c.source);
        }
    }
    let proto_order = |p: Proto| match p {
        Proto::Imap => 0,
        Proto::Pop3 => 1,
        Proto::Smtp => 2,
    };
    candidates.sort_by_key(|c| (proto_order(c.proto), !c.trusted));
    let mut seen = std::collections::HashSet::new();
    candidates.retain(|c| seen.insert((c.proto, c.host.clone(), c.port, c.tls)));
    Ok(Discovery { preset, candidates, problems })
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn mx(preference: u16, exchange: &str) -> MxRecord {
        MxRecord { preference, exchange: exchange.into() }
    }
    fn srv(service: &str, priority: u16, weight: u16, port: u16, target: &str) -> SrvRecord {
        SrvRecord { service: service.into(), priority, weight, port, target: target.into() }
    }

    /// Modelled on an ISPDB entry: IMAP and POP3 over SSL, STARTTLS submission, a plain POP3
    /// fallback, and a placeholder in every username form.
    const AUTOCONFIG: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- served by autoconfig.example.org -->
<clientConfig version="1.1">
  <emailProvider id="example.org">
    <domain>example.org</domain>
    <displayName>Example Mail &amp; Hosting</displayName>
    <displayShortName>Example</displayShortName>
    <incomingServer type="imap">
      <hostname>imap.%EMAILDOMAIN%</hostname>
      <port>993</port>
      <socketType>SSL</socketType>
      <authentication>password-cleartext</authentication>
      <username>%EMAILADDRESS%</username>
    </incomingServer>
    <incomingServer type="pop3">
      <hostname>pop.example.org</hostname>
      <port>995</port>
      <socketType>SSL</socketType>
      <authentication>password-cleartext</authentication>
      <username>%EMAILLOCALPART%</username>
    </incomingServer>
    <incomingServer type="pop3">
      <hostname>pop.example.org</hostname>
      <port>110</port>
      <socketType>plain</socketType>
      <username>%EMAILLOCALPART%</username>
    </incomingServer>
    <outgoingServer type="smtp">
      <hostname>smtp.example.org</hostname>
      <port>587</port>
      <socketType>STARTTLS</socketType>
      <authentication>password-cleartext</authentication>
      <username>%EMAILLOCALPART%@%EMAILDOMAIN%</username>
    </outgoingServer>
    <documentation url="https://example.org/help/mail">
      <descr lang="en">Generic settings page</descr>
    </documentation>
  </emailProvider>
</clientConfig>
"#;

    #[test]
    fn lookups_for_an_address() {
        let v = lookups("Jo+Sales@Example.ORG").unwrap();
        assert_eq!(v[0], Lookup::Mx("example.org".into()));
        assert_eq!(v[1], Lookup::Srv("_imaps._tcp.example.org".into()));
        assert_eq!(v[6], Lookup::Srv("_submission._tcp.example.org".into()));
        assert_eq!(v[7], Lookup::Http("https://autoconfig.example.org/mail/config-v1.1.xml?emailaddress=Jo%2BSales%40example.org".into()));
        assert_eq!(v[8], Lookup::Http("https://example.org/.well-known/autoconfig/mail/config-v1.1.xml".into()));
        assert_eq!(v.len(), 9);
    }

    #[test]
    fn malformed_addresses_refused() {
        for bad in ["", "no-at-sign", "@example.org", "a@", "a@localhost", "a b@example.org", "a@exa mple.org", "a@-x.org", "a@x..org", "a@example.org/path"] {
            let e = lookups(bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidInput, "{bad:?}");
        }
    }

    #[test]
    fn provider_recognised_by_mx() {
        // Recorded answers for custom domains.
        let workspace = [mx(10, "alt3.aspmx.l.google.com."), mx(1, "ASPMX.L.GOOGLE.COM."), mx(5, "alt1.aspmx.l.google.com.")];
        assert_eq!(provider_from_mx(&workspace), Some("gmail"));
        assert_eq!(provider_from_mx(&[mx(1, "smtp.google.com.")]), Some("gmail"));
        assert_eq!(provider_from_mx(&[mx(10, "aspmx2.googlemail.com.")]), Some("gmail"));
        let m365 = [mx(0, "contoso-com.mail.protection.outlook.com.")];
        assert_eq!(provider_from_mx(&m365), Some("microsoft365"));
        assert_eq!(provider_from_mx(&[mx(10, "example-com.olc.protection.outlook.com.")]), Some("outlook"));
        // The most preferred recognised exchange wins.
        assert_eq!(provider_from_mx(&[mx(20, "aspmx.l.google.com"), mx(10, "contoso-com.mail.protection.outlook.com")]), Some("microsoft365"));
        assert_eq!(provider_from_mx(&[mx(10, "mx.example.org."), mx(20, "google.com.evil.example.")]), None);
        assert_eq!(provider_from_mx(&[]), None);
    }

    #[test]
    fn mx_ordering() {
        let mut v = vec![mx(30, "c.example."), mx(10, "b.example."), mx(10, "a.example.")];
        order_mx(&mut v);
        let names: Vec<_> = v.iter().map(|r| r.exchange.as_str()).collect();
        assert_eq!(names, ["a.example.", "b.example.", "c.example."]);
    }

    #[test]
    fn srv_ordering_and_unavailable_target() {
        let mut v = vec![
            srv("_imaps._tcp", 10, 5, 993, "low-weight.example.org."),
            srv("_imaps._tcp", 0, 0, 993, "."),
            srv("_imaps._tcp", 10, 60, 993, "high-weight.example.org."),
            srv("_imaps._tcp", 5, 0, 993, "first.example.org."),
        ];
        order_srv(&mut v);
        let names: Vec<_> = v.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(names, ["first.example.org.", "high-weight.example.org.", "low-weight.example.org."]);
    }

    #[test]
    fn srv_to_candidates() {
        let records = [
            srv("_submission._tcp.example.org", 0, 1, 587, "smtp.example.org."),
            srv("_imap._tcp.example.org", 0, 1, 143, "imap.example.org."),
            srv("_imaps._tcp.example.org", 0, 1, 993, "imap.example.org."),
            srv("_pop3s._tcp.example.org", 0, 1, 995, "."),
            srv("_caldav._tcp.example.org", 0, 1, 443, "dav.example.org."),
        ];
        let c = from_srv(&records, "jo@example.org");
        assert_eq!(c.len(), 3);
        let imaps = c.iter().find(|c| c.source == "SRV _imaps._tcp").unwrap();
        assert_eq!((imaps.proto, imaps.host.as_str(), imaps.port, imaps.tls), (Proto::Imap, "imap.example.org", 993, true));
        let imap = c.iter().find(|c| c.source == "SRV _imap._tcp").unwrap();
        assert!(!imap.tls);
        let sub = c.iter().find(|c| c.proto == Proto::Smtp).unwrap();
        assert_eq!((sub.port, sub.tls, sub.username.as_str(), sub.trusted), (587, false, "jo@example.org", false));
    }

    #[test]
    fn autoconfig_with_placeholders() {
        let c = parse_autoconfig(AUTOCONFIG, "jo@example.org").unwrap();
        // The plain POP3 server is left out.
        assert_eq!(c.len(), 3);
        assert_eq!(
            c[0],
            Candidate {
                proto: Proto::Imap,
                host: "imap.example.org".into(),
                port: 993,
                tls: true,
                username: "jo@example.org".into(),
                source: "autoconfig".into(),
                trusted: false,
            }
        );
        assert_eq!((c[1].proto, c[1].port, c[1].tls, c[1].username.as_str()), (Proto::Pop3, 995, true, "jo"));
        assert_eq!((c[2].proto, c[2].host.as_str(), c[2].port, c[2].tls, c[2].username.as_str()), (Proto::Smtp, "smtp.example.org", 587, false, "jo@example.org"));
    }

    #[track_caller]
    fn refused(xml: &str, phrase: &str) {
        let e = parse_autoconfig(xml, "jo@example.org").unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidInput, "{e}");
        assert!(e.message.contains(phrase), "{phrase:?} missing in: {}", e.message);
    }

    fn one_server(host: &str, port: &str, socket: &str) -> String {
        format!(
            "<clientConfig version=\"1.1\"><emailProvider id=\"x\"><incomingServer type=\"imap\"><hostname>{host}</hostname><port>{port}</port><socketType>{socket}</socketType></incomingServer></emailProvider></clientConfig>"
        )
    }

    #[test]
    fn hostile_values_refused() {
        assert!(parse_autoconfig(&one_server("imap.example.org", "993", "SSL"), "jo@example.org").is_ok());
        refused(&one_server("imap.example.org\r\nX-Injected: 1", "993", "SSL"), "spaces or line breaks");
        refused(&one_server("imap.example.org&#13;&#10;", "993", "SSL"), "spaces or line breaks");
        refused(&one_server("imap example.org", "993", "SSL"), "spaces or line breaks");
        refused(&one_server("imap.example.org", "70000", "SSL"), "port '70000'");
        refused(&one_server("imap.example.org", "0", "SSL"), "port '0'");
        refused(&one_server("imap.example.org", "imaps", "SSL"), "port 'imaps'");
        refused(&one_server("imap.example.org", "993", "weird"), "socketType 'weird' is unknown");
        refused(&one_server("imap.example.org/x", "993", "SSL"), "not a valid host name");
    }

    #[test]
    fn malformed_documents_refused() {
        refused("<clientConfig><emailProvider></clientConfig>", "malformed");
        refused("<clientConfig><emailProvider>", "never closed");
        refused("<html><body>Not found</body></html>", "expected <clientConfig>");
        refused("", "no <clientConfig>");
        refused("<clientConfig><incomingServer type=\"imap\"", "unterminated start tag");
        refused("<clientConfig><!-- never ends", "unterminated comment");
    }

    #[test]
    fn hostile_xml_refused_without_expanding_anything() {
        // Entities declared in a DTD are never expanded (no "billion laughs").
        let laughs = "<!DOCTYPE c [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;\">]>\
            <clientConfig><emailProvider><incomingServer type=\"imap\"><hostname>&b;</hostname>\
            <port>993</port><socketType>SSL</socketType></incomingServer></emailProvider></clientConfig>";
        refused(laughs, "unknown character reference");
        refused("<clientConfig><emailProvider></clientConfig>", "</clientConfig> closes <emailProvider>");
        refused("<clientConfig></emailProvider>", "</emailProvider> closes <clientConfig>");
        refused("<clientConfig><![CDATA[x]]></clientConfig>", "CDATA");
        refused(&format!("<clientConfig>{}", "<a>".repeat(40)), "nested too deeply");
        refused("<clientConfig/><clientConfig/>", "expected <clientConfig>");
        let mixed = one_server("imap.&#x65;xample.org", "99&#51;", "SSL");
        let c = parse_autoconfig(&mixed, "jo@example.org").unwrap();
        assert_eq!((c[0].host.as_str(), c[0].port), ("imap.example.org", 993));
        refused(&one_server("imap.&#10;example.org", "993", "SSL"), "spaces or line breaks");
    }

    #[test]
    fn only_plain_servers_is_a_policy_error() {
        let e = parse_autoconfig(&one_server("mail.example.org", "110", "plain"), "jo@example.org").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Policy);
        assert!(e.message.contains("unencrypted"));
    }

    #[test]
    fn oversized_document_refused() {
        let mut xml = String::from("<clientConfig version=\"1.1\"><!--");
        xml.push_str(&"x".repeat(MAX_AUTOCONFIG_BYTES));
        xml.push_str("--></clientConfig>");
        let e = parse_autoconfig(&xml, "jo@example.org").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Limit);
        assert!(e.message.contains("refused"));
    }

    #[test]
    fn every_provider_from_mx_is_a_catalogue_preset() {
        for host in ["aspmx.l.google.com", "contoso-com.mail.protection.outlook.com", "eur.olc.protection.outlook.com"] {
            let key = provider_from_mx(&[MxRecord { preference: 10, exchange: host.into() }]).expect(host);
            assert!(crate::presets::by_id(key).is_some(), "{key} is not a preset id");
        }
    }

    fn doc(url: &str, body: &str) -> Document {
        Document { url: url.into(), body: body.into() }
    }

    fn summary(d: &Discovery) -> Vec<(Proto, String, u16, bool, bool)> {
        d.candidates.iter().map(|c| (c.proto, c.host.clone(), c.port, c.tls, c.trusted)).collect()
    }

    #[test]
    fn rank_catalogue_domain_is_trusted() {
        let d = rank("Jo@GMAIL.com", &[], &[], &[]).unwrap();
        assert_eq!(d.preset, Some("gmail"));
        assert!(d.candidates.iter().all(|c| c.trusted && c.source == "catalogue: gmail" && c.username == "Jo@gmail.com"));
        assert_eq!(d.candidates[0].host, "imap.gmail.com");
    }

    #[test]
    fn rank_workspace_and_m365_by_mx() {
        let workspace = [mx(10, "alt2.aspmx.l.google.com."), mx(1, "ASPMX.L.GOOGLE.COM."), mx(5, "alt1.aspmx.l.google.com.")];
        let d = rank("sales@acme-workspace.example", &workspace, &[], &[]).unwrap();
        assert_eq!(d.preset, Some("gmail"));
        assert_eq!(
            summary(&d),
            [
                (Proto::Imap, "imap.gmail.com".to_string(), 993, true, true),
                (Proto::Pop3, "pop.gmail.com".to_string(), 995, true, true),
                (Proto::Smtp, "smtp.gmail.com".to_string(), 587, false, true),
            ]
        );
        assert!(d.candidates[0].source.starts_with("MX aspmx.l.google.com -> "), "{}", d.candidates[0].source);
        assert_eq!(d.candidates[0].username, "sales@acme-workspace.example");

        let d = rank("info@contoso.example", &[mx(0, "contoso-example.mail.protection.outlook.com.")], &[], &[]).unwrap();
        assert_eq!(d.preset, Some("microsoft365"));
        assert_eq!(d.candidates[0].host, "outlook.office365.com");
        assert!(d.problems.is_empty());
    }

    #[test]
    fn rank_unknown_mx_gives_nothing_trusted() {
        let d = rank("jo@example.org", &[mx(10, "mx1.example.org.")], &[], &[]).unwrap();
        assert_eq!((d.preset, d.candidates.len(), d.problems.len()), (None, 0, 0));
        // A null MX (RFC 7505) is no error either.
        assert!(rank("jo@example.org", &[mx(0, ".")], &[], &[]).unwrap().problems.is_empty());
    }

    #[test]
    fn rank_hostile_mx_is_reported_not_used() {
        // A name that would match a suffix but is not a host name must not pick a provider.
        let d = rank("jo@example.org", &[mx(1, "x\r\nInjected: 1.aspmx.l.google.com.")], &[], &[]).unwrap();
        assert_eq!(d.preset, None);
        assert_eq!(d.problems.len(), 1);
        assert!(!d.problems[0].source.contains('\r') && d.problems[0].source.contains("\\r\\n"), "{}", d.problems[0].source);
        assert_eq!(d.problems[0].error.kind, ErrorKind::InvalidInput);
    }

    #[test]
    fn rank_srv_order_priority_tls_weight() {
        let records = [
            srv("_imap._tcp.example.org", 0, 100, 143, "imap-starttls.example.org."),
            srv("_imaps._tcp.example.org", 10, 5, 993, "light.example.org."),
            srv("_imaps._tcp.example.org", 0, 1, 993, "primary.example.org."),
            srv("_imaps._tcp.example.org", 10, 60, 993, "heavy.example.org."),
            srv("_submission._tcp.example.org", 0, 1, 587, "smtp.example.org."),
            srv("_submissions._tcp.example.org", 5, 1, 465, "smtp.example.org."),
            srv("_pop3s._tcp.example.org", 0, 0, 0, "."),
        ];
        let d = rank("jo@example.org", &[], &records, &[]).unwrap();
        let order: Vec<_> = d.candidates.iter().map(|c| (c.host.as_str(), c.port)).collect();
        assert_eq!(
            order,
            [
                // Priority 0: implicit TLS before STARTTLS although STARTTLS has more weight.
                ("primary.example.org", 993),
                ("imap-starttls.example.org", 143),
                // Priority 10: higher weight first.
                ("heavy.example.org", 993),
                ("light.example.org", 993),
                // SMTP: the lower priority wins over implicit TLS.
                ("smtp.example.org", 587),
                ("smtp.example.org", 465),
            ]
        );
        assert!(d.candidates.iter().all(|c| !c.trusted && c.username == "jo@example.org"));
        assert_eq!(d.candidates[0].source, "SRV _imaps._tcp.example.org");
        assert!(d.problems.is_empty(), "{:?}", d.problems);
    }

    #[test]
    fn rank_srv_hostile_records_reported() {
        let records = [
            srv("_imaps._tcp.example.org", 0, 1, 993, "imap example.org."),
            srv("_imaps._tcp.example.org", 0, 1, 0, "imap.example.org."),
            srv("_imaps._tcp.evil.example", 0, 1, 993, "imap.evil.example."),
            srv("_caldav._tcp.example.org", 0, 1, 443, "dav.example.org."),
            srv("_imaps._tcp.example.org", 5, 1, 993, "good.example.org."),
        ];
        let d = rank("jo@example.org", &[], &records, &[]).unwrap();
        assert_eq!(summary(&d), [(Proto::Imap, "good.example.org".to_string(), 993, true, false)]);
        assert_eq!(d.problems.len(), 4, "{:?}", d.problems);
        assert!(d.problems[0].error.message.contains("not a valid host name"));
        assert!(d.problems[1].error.message.contains("port 0"));
        assert!(d.problems[2].error.message.contains("not a mail service name of example.org"));
        assert!(d.problems.iter().all(|p| p.error.kind == ErrorKind::InvalidInput && p.source.starts_with("SRV ")));
    }

    #[test]
    fn rank_autoconfig_with_problems_per_document() {
        let docs = [
            doc("https://autoconfig.example.org/mail/config-v1.1.xml?emailaddress=jo%40example.org", AUTOCONFIG),
            doc("https://example.org/.well-known/autoconfig/mail/config-v1.1.xml", "<html>404</html>"),
        ];
        let d = rank("jo@example.org", &[], &[], &docs).unwrap();
        assert_eq!(d.preset, None);
        assert_eq!(d.candidates.len(), 3);
        assert!(d.candidates.iter().all(|c| !c.trusted && c.source.starts_with("autoconfig https://autoconfig.example.org/")));
        assert_eq!((d.candidates[1].proto, d.candidates[1].username.as_str()), (Proto::Pop3, "jo"));
        assert_eq!(d.problems.len(), 1);
        assert_eq!(d.problems[0].source, "autoconfig https://example.org/.well-known/autoconfig/mail/config-v1.1.xml");
        assert!(d.problems[0].error.message.contains("malformed"));

        let hostile = doc("https://autoconfig.example.org/x", &one_server("imap.example.org\r\nX: 1", "993", "SSL"));
        let d = rank("jo@example.org", &[], &[], &[hostile]).unwrap();
        assert!(d.candidates.is_empty());
        assert!(d.problems[0].error.message.contains("line breaks"));
    }

    #[test]
    fn rank_merges_sources_dedupes_and_trusts_catalogue_servers() {
        let records = [
            srv("_imaps._tcp.example.org", 0, 1, 993, "imap.example.org."),
            srv("_imaps._tcp.example.org", 1, 1, 993, "imap.gmail.com."),
            srv("_submission._tcp.example.org", 0, 1, 587, "smtp.example.org."),
        ];
        let docs = [doc("https://autoconfig.example.org/a", AUTOCONFIG)];
        let d = rank("jo@example.org", &[], &records, &docs).unwrap();
        assert_eq!(
            summary(&d),
            [
                // Exactly Gmail's server: trusted, so it ranks first.
                (Proto::Imap, "imap.gmail.com".to_string(), 993, true, true),
                (Proto::Imap, "imap.example.org".to_string(), 993, true, false),
                (Proto::Pop3, "pop.example.org".to_string(), 995, true, false),
                (Proto::Smtp, "smtp.example.org".to_string(), 587, false, false),
            ]
        );
        assert!(d.candidates[0].source.ends_with("(catalogue server of gmail)"));
        // The duplicate kept the autoconfig entry (ranked above SRV).
        assert!(d.candidates[1].source.starts_with("autoconfig "));
        assert!(d.candidates[3].source.starts_with("autoconfig "));
    }

    #[test]
    fn rank_bounds_its_input() {
        let many: Vec<SrvRecord> = (0..MAX_RECORDS as u16 + 10).map(|i| srv("_imaps._tcp.example.org", i, 0, 993, &format!("h{i}.example.org"))).collect();
        let d = rank("jo@example.org", &[], &many, &[]).unwrap();
        assert_eq!(d.candidates.len(), MAX_RECORDS);
        assert_eq!(d.problems.len(), 1);
        assert_eq!(d.problems[0].error.kind, ErrorKind::Limit);
        let docs: Vec<Document> = (0..MAX_DOCUMENTS + 1).map(|i| doc(&format!("https://a/{i}"), "<x/>")).collect();
        let d = rank("jo@example.org", &[], &[], &docs).unwrap();
        assert_eq!(d.problems.len(), MAX_DOCUMENTS + 1);
        assert_eq!(d.problems[0].error.kind, ErrorKind::Limit);
    }

    #[test]
    fn rank_refuses_a_malformed_address() {
        assert_eq!(rank("not an address", &[], &[], &[]).unwrap_err().kind, ErrorKind::InvalidInput);
    }
}
