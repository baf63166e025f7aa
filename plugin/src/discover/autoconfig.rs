//! Thunderbird autoconfig documents (clientConfig 1.1), read with quick-xml.

use super::{bad_input, is_host_name, normalise_host, split_address, Candidate, Proto, MAX_AUTOCONFIG_BYTES};
use crate::error::{Error, Result, Stage};

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
