//! Server discovery from an e-mail address, without I/O: this module says what the host
//! should look up (MX, RFC 6186/8314 SRV, Thunderbird autoconfig) and turns the answers into
//! ranked candidates. Everything except a catalogue match is only a suggestion for the admin.

use crate::error::{Error, Result, Stage};

mod autoconfig;
mod lookups;
mod rank;
#[cfg(test)]
mod tests;

pub use autoconfig::parse_autoconfig;
pub use lookups::{from_srv, lookups, order_mx, order_srv, provider_from_mx};
pub use rank::{rank, Discovery, Document, SourceProblem, MAX_DOCUMENTS, MAX_RECORDS};

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

fn normalise_host(h: &str) -> String {
    h.trim().trim_end_matches('.').to_ascii_lowercase()
}
