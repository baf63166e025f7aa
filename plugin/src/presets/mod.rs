//! Provider presets (server names, ports, TLS mode, sign-in methods) and a checker for the
//! server settings an admin typed in. Pure data and pure functions: no I/O.

mod catalogue;
mod validate;

pub use validate::{
    looks_like_gmail_app_password, normalise_app_password, validate, Finding, Proto, ServerSettings,
    Severity,
};

use crate::config::{Security, Server};
use crate::plan::Provider;

/// What the provider expects as the login name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsernameForm {
    /// `name@example.com`
    FullAddress,
    /// `name`
    LocalPart,
}

/// One server of a preset. `tls` = implicit TLS from the first byte; `false` = STARTTLS
/// (never plaintext: the catalogue has no plaintext-only entries).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerPreset {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl ServerPreset {
    /// The connection settings for this server.
    pub fn to_server(&self) -> Server {
        Server {
            host: self.host.clone(),
            port: self.port,
            security: if self.tls { Security::ImplicitTls } else { Security::Starttls },
        }
    }
}

/// A way of signing in that the provider accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthSupport {
    /// The account's normal password.
    Basic,
    /// Password sign-in, but only with a separate app password (the normal one is refused).
    AppPasswordRequired,
    /// OAuth2 through one of our OAuth clients: "google" or "microsoft".
    OAuth2 { provider: &'static str },
}

/// An admin note in English and German.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub en: String,
    pub de: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preset {
    pub id: &'static str,
    pub name: &'static str,
    /// Lower-case mail domains served by this provider; empty for providers that host the
    /// customer's own domain (found by MX later).
    pub domains: Vec<&'static str>,
    pub pop3: Option<ServerPreset>,
    pub imap: Option<ServerPreset>,
    pub smtp: Option<ServerPreset>,
    pub username: UsernameForm,
    /// In order of recommendation.
    pub auth: Vec<AuthSupport>,
    /// How From/Sender are planned for replies sent through this provider.
    pub smtp_provider: Provider,
    /// Things the admin must do or know, e.g. "enable IMAP in the web settings first".
    pub notes: Vec<Note>,
    /// Where the values come from.
    pub source: &'static str,
}

impl Preset {
    /// The preset's server for a protocol.
    pub fn server(&self, proto: Proto) -> Option<&ServerPreset> {
        match proto {
            Proto::Pop3 => self.pop3.as_ref(),
            Proto::Imap => self.imap.as_ref(),
            Proto::Smtp => self.smtp.as_ref(),
        }
    }

    /// Whether password sign-in (normal or app password) is accepted.
    pub fn accepts_password(&self) -> bool {
        self.auth
            .iter()
            .any(|a| matches!(a, AuthSupport::Basic | AuthSupport::AppPasswordRequired))
    }

    /// Whether OAuth2 sign-in is offered through one of our OAuth clients.
    pub fn accepts_oauth2(&self) -> bool {
        self.auth.iter().any(|a| matches!(a, AuthSupport::OAuth2 { .. }))
    }
}

/// Every preset, `generic` last.
pub fn catalogue() -> Vec<Preset> {
    catalogue::entries()
}

pub fn by_id(id: &str) -> Option<Preset> {
    catalogue::entries().into_iter().find(|p| p.id == id)
}

/// The preset serving a mail domain (`gmail.com`), case-insensitive, exact match (no
/// subdomains). A trailing root dot is ignored.
pub fn by_domain(domain: &str) -> Option<Preset> {
    let domain = normalise_name(domain);
    if domain.is_empty() {
        return None;
    }
    catalogue::entries().into_iter().find(|p| p.domains.iter().any(|d| *d == domain))
}

/// The first preset whose server for `proto` is `host` (case-insensitive).
pub(crate) fn by_host(host: &str, proto: Proto) -> Option<Preset> {
    let host = normalise_name(host);
    catalogue::entries()
        .into_iter()
        .find(|p| p.server(proto).is_some_and(|s| s.host == host))
}

/// The first preset that uses `host` for any protocol, with that protocol.
pub(crate) fn by_any_host(host: &str) -> Option<(Preset, Proto)> {
    let host = normalise_name(host);
    catalogue::entries().into_iter().find_map(|p| {
        let proto = [Proto::Pop3, Proto::Imap, Proto::Smtp]
            .into_iter()
            .find(|&proto| p.server(proto).is_some_and(|s| s.host == host))?;
        Some((p, proto))
    })
}

pub(crate) use catalogue::also_accepted;

/// Lower-case, surrounding whitespace and a trailing root dot removed.
fn normalise_name(name: &str) -> String {
    let name = name.trim();
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

