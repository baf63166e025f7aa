//! The tenant configuration file (TOML): mailboxes, queues, licence, limits.
//!
//! Passwords are never accepted inline: they come from an environment variable or a file, so a
//! configuration can be shared, logged or committed without leaking a secret.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::secret::Secret;

/// A configuration problem, naming the field to fix.
#[derive(Debug, thiserror::Error)]
#[error("configuration {file}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Pop3,
    Imap,
}

/// What happens on the server after a message is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterFetch {
    Keep,
    MarkSeen,
    Delete,
    MoveTo(String),
}

/// What the first fetch of a mailbox delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstSync {
    All,
    NewOnly,
    Newest(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
enum RawAfterFetch {
    #[default]
    Keep,
    MarkSeen,
    Delete,
    Move,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
enum RawFirstSync {
    All,
    #[default]
    NewOnly,
    Newest,
}

/// Who runs a queue's SMTP server: decides what customers see as sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Gmail,
    Microsoft,
    #[default]
    Generic,
}

/// What the queue's SMTP account may do for the mailboxes it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SendPermission {
    #[default]
    None,
    SendOnBehalf,
    SendAs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthKind {
    #[default]
    Basic,
    Oauth2,
}

/// With OAuth2: the one SASL mechanism to use, when a server must not get the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OauthMechanism {
    Oauthbearer,
    Xoauth2,
}

/// How a connection is secured, derived from `tls` and `insecure_plaintext`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    ImplicitTls,
    Starttls,
    InsecurePlaintext,
}

/// The fields common to every server entry, as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    host: String,
    port: u16,
    /// The portal's "TLS" switch: true = TLS from the first byte, false = STARTTLS.
    tls: bool,
    /// Explicit opt-in for test servers: no TLS at all, credentials in clear text.
    #[serde(default)]
    insecure_plaintext: bool,
    #[serde(default)]
    auth: AuthKind,
    username: String,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    /// Only to give a clear error: inline passwords are refused.
    password: Option<toml::Value>,
    #[serde(default)]
    helo_name: Option<String>,
    /// Only for a queue's SMTP server.
    #[serde(default)]
    provider: Option<Provider>,
    /// With `auth = "oauth2"`: the name of an `[oauth.NAME]` client.
    oauth: Option<String>,
    /// With `auth = "oauth2"`: pin the SASL mechanism ("xoauth2" or "oauthbearer").
    sasl_mechanism: Option<OauthMechanism>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMailbox {
    name: String,
    address: String,
    display_name: Option<String>,
    protocol: Protocol,
    #[serde(default)]
    folders: Vec<String>,
    #[serde(default)]
    after_fetch: RawAfterFetch,
    move_to: Option<String>,
    #[serde(default)]
    first_sync: RawFirstSync,
    newest: Option<u32>,
    /// IMAP only: the folder replies to this mailbox's mail are saved in after sending.
    save_sent: Option<String>,
    host: String,
    port: u16,
    tls: bool,
    #[serde(default)]
    insecure_plaintext: bool,
    #[serde(default)]
    auth: AuthKind,
    username: String,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    password: Option<toml::Value>,
    oauth: Option<String>,
    sasl_mechanism: Option<OauthMechanism>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    name: String,
    #[serde(default)]
    mailboxes: Vec<String>,
    /// What the SMTP account may do for the queue's mailboxes.
    #[serde(default)]
    send_permission: SendPermission,
    /// Gmail: mailbox addresses verified as "Send mail as" aliases of the SMTP account.
    #[serde(default)]
    gmail_aliases: Vec<String>,
    smtp: RawServer,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_line_bytes: Option<u32>,
    max_message_bytes: Option<u64>,
    max_batch_messages: Option<u32>,
    max_batch_bytes: Option<u64>,
    reply_timeout_secs: Option<u32>,
    connect_timeout_secs: Option<u32>,
    guest_memory_mb: Option<u32>,
    guest_cpu_ms_per_call: Option<u32>,
    parse_memory_mb: Option<u32>,
    parse_cpu_ms: Option<u32>,
    max_session_secs: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    tenant: String,
    licensed: bool,
    /// Extra CA certificates (PEM) trusted besides the system roots.
    extra_ca_file: Option<PathBuf>,
    /// The SQLite file that stores messages and sync state.
    database: Option<PathBuf>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default, rename = "mailbox")]
    mailboxes: Vec<RawMailbox>,
    #[serde(default, rename = "queue")]
    queues: Vec<RawQueue>,
    /// OAuth2 client registrations by name.
    #[serde(default)]
    oauth: BTreeMap<String, RawOauthClient>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawOauthProvider {
    Google,
    Microsoft,
    Custom,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOauthClient {
    provider: RawOauthProvider,
    /// Microsoft: "common", "organizations", a tenant id or domain.
    tenant: Option<String>,
    client_id: String,
    client_secret_env: Option<String>,
    client_secret_file: Option<PathBuf>,
    redirect_uri: Option<String>,
    /// Custom authorization servers.
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
}

/// Which authorization server an OAuth2 client talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OauthProvider {
    Google,
    Microsoft { tenant: String },
    Custom { authorization_endpoint: String, token_endpoint: String, scopes: Vec<String> },
}

/// An OAuth2 client registration (`[oauth.NAME]`).
#[derive(Debug, Clone)]
pub struct OauthClientConfig {
    pub name: String,
    pub provider: OauthProvider,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub redirect_uri: String,
}

/// One server, validated, with its secret loaded.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub auth: AuthKind,
    pub username: String,
    pub secret: Secret,
    /// With OAuth2: the `[oauth.NAME]` client to use.
    pub oauth: Option<String>,
    /// With OAuth2: the only SASL mechanism to use (None: OAUTHBEARER when offered, else XOAUTH2).
    pub sasl_mechanism: Option<OauthMechanism>,
}

#[derive(Debug, Clone)]
pub struct MailboxConfig {
    pub name: String,
    pub address: String,
    pub display_name: Option<String>,
    pub protocol: Protocol,
    pub folders: Vec<String>,
    pub after_fetch: AfterFetch,
    pub first_sync: FirstSync,
    /// IMAP only: the folder ("Sent", "Sent Items", "/" between levels) that replies to mail
    /// from this mailbox are saved in (IMAP APPEND, flagged \Seen) once sent. None: no copy.
    pub save_sent: Option<String>,
    pub server: ServerConfig,
}

#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub name: String,
    pub mailboxes: Vec<String>,
    pub smtp: ServerConfig,
    pub helo_name: String,
    pub provider: Provider,
    pub send_permission: SendPermission,
    pub gmail_aliases: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_line_bytes: u32,
    pub max_message_bytes: u64,
    pub max_batch_messages: u32,
    pub max_batch_bytes: u64,
    pub reply_timeout_secs: u32,
    pub connect_timeout_secs: u32,
    pub guest_memory_mb: u32,
    pub guest_cpu_ms_per_call: u32,
    /// Memory of the instance that parses delivered messages, in MB. A message that needs
    /// more is stored unparsed and flagged; the session goes on.
    pub parse_memory_mb: u32,
    /// CPU time to parse one message, in ms; past it the message is stored unparsed and flagged.
    pub parse_cpu_ms: u32,
    /// The longest a session (fetch, send, check, saving a copy) may take, connecting
    /// included; the host ends it after that. What was stored before stays stored.
    pub max_session_secs: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_bytes: 64 * 1024,
            max_message_bytes: 50 * 1024 * 1024,
            max_batch_messages: 500,
            max_batch_bytes: 200 * 1024 * 1024,
            reply_timeout_secs: 60,
            connect_timeout_secs: 20,
            guest_memory_mb: 256,
            guest_cpu_ms_per_call: 2000,
            parse_memory_mb: 256,
            parse_cpu_ms: 10_000,
            max_session_secs: 15 * 60,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TenantConfig {
    pub tenant: String,
    pub licensed: bool,
    pub extra_ca_file: Option<PathBuf>,
    pub database: PathBuf,
    pub limits: Limits,
    pub mailboxes: Vec<MailboxConfig>,
    pub queues: Vec<QueueConfig>,
    pub oauth_clients: Vec<OauthClientConfig>,
}

impl TenantConfig {
    /// Reads and validates a configuration file. Relative paths inside it are relative to
    /// the file's folder.
    pub fn load(path: &Path) -> Result<TenantConfig, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError { file: file.clone(), message: format!("cannot read the file: {e}") })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, &file, &base, &|name| std::env::var(name).ok())
    }

    /// Parses configuration text; `env` looks up environment variables (injectable for tests).
    pub fn parse(
        text: &str,
        file: &str,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<TenantConfig, ConfigError> {
        let err = |message: String| ConfigError { file: file.to_string(), message };
        let raw: RawTenant = toml::from_str(text).map_err(|e| err(e.to_string().trim_end().to_string()))?;
        let resolve = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { base.join(p) };

        let d = Limits::default();
        let l = &raw.limits;
        let limits = Limits {
            max_line_bytes: l.max_line_bytes.unwrap_or(d.max_line_bytes),
            max_message_bytes: l.max_message_bytes.unwrap_or(d.max_message_bytes),
            max_batch_messages: l.max_batch_messages.unwrap_or(d.max_batch_messages),
            max_batch_bytes: l.max_batch_bytes.unwrap_or(d.max_batch_bytes),
            reply_timeout_secs: l.reply_timeout_secs.unwrap_or(d.reply_timeout_secs),
            connect_timeout_secs: l.connect_timeout_secs.unwrap_or(d.connect_timeout_secs),
            guest_memory_mb: l.guest_memory_mb.unwrap_or(d.guest_memory_mb),
            guest_cpu_ms_per_call: l.guest_cpu_ms_per_call.unwrap_or(d.guest_cpu_ms_per_call),
            parse_memory_mb: l.parse_memory_mb.unwrap_or(d.parse_memory_mb),
            parse_cpu_ms: l.parse_cpu_ms.unwrap_or(d.parse_cpu_ms),
            max_session_secs: l.max_session_secs.unwrap_or(d.max_session_secs),
        };
        for (field, value, min) in [
            ("limits.max_line_bytes", u64::from(limits.max_line_bytes), 1000),
            ("limits.max_message_bytes", limits.max_message_bytes, 1024),
            ("limits.max_batch_messages", u64::from(limits.max_batch_messages), 1),
            ("limits.max_batch_bytes", limits.max_batch_bytes, 1024),
            ("limits.reply_timeout_secs", u64::from(limits.reply_timeout_secs), 1),
            ("limits.connect_timeout_secs", u64::from(limits.connect_timeout_secs), 1),
            ("limits.guest_memory_mb", u64::from(limits.guest_memory_mb), 16),
            ("limits.guest_cpu_ms_per_call", u64::from(limits.guest_cpu_ms_per_call), 10),
            ("limits.parse_memory_mb", u64::from(limits.parse_memory_mb), 16),
            ("limits.parse_cpu_ms", u64::from(limits.parse_cpu_ms), 10),
            ("limits.max_session_secs", u64::from(limits.max_session_secs), 1),
        ] {
            if value < min {
                return Err(err(format!("field `{field}` is {value}; it must be at least {min}")));
            }
        }

        let mut oauth_clients = Vec::new();
        for (name, c) in raw.oauth {
            let at = format!("oauth.{name}");
            let provider = match (c.provider, c.tenant, c.authorization_endpoint, c.token_endpoint) {
                (RawOauthProvider::Google, None, None, None) => OauthProvider::Google,
                (RawOauthProvider::Microsoft, tenant, None, None) => {
                    OauthProvider::Microsoft { tenant: tenant.unwrap_or_else(|| "organizations".into()) }
                }
                (RawOauthProvider::Custom, None, Some(a), Some(t)) => {
                    if c.scopes.is_empty() {
                        return Err(err(format!("{at}: a custom provider needs `scopes`")));
                    }
                    OauthProvider::Custom { authorization_endpoint: a, token_endpoint: t, scopes: c.scopes.clone() }
                }
                (RawOauthProvider::Custom, ..) => {
                    return Err(err(format!("{at}: a custom provider needs `authorization_endpoint` and `token_endpoint`")))
                }
                _ => {
                    return Err(err(format!(
                        "{at}: `tenant` only applies to microsoft, `authorization_endpoint` / `token_endpoint` only to custom"
                    )))
                }
            };
            if c.client_id.trim().is_empty() {
                return Err(err(format!("{at}: field `client_id` must not be empty")));
            }
            let client_secret = match (&c.client_secret_env, &c.client_secret_file) {
                (Some(_), Some(_)) => return Err(err(format!("{at}: set `client_secret_env` or `client_secret_file`, not both"))),
                (Some(var), None) => Some(Secret::new(env(var).filter(|v| !v.is_empty()).ok_or_else(|| {
                    err(format!("{at}: field `client_secret_env` names {var}, which is not set or empty"))
                })?)),
                (None, Some(path)) => {
                    let p = resolve(path);
                    let v = std::fs::read_to_string(&p)
                        .map_err(|e| err(format!("{at}: field `client_secret_file`: cannot read {}: {e}", p.display())))?;
                    Some(Secret::new(v.trim_end_matches(['\r', '\n']).to_string()))
                }
                (None, None) => None,
            };
            let redirect_uri = c.redirect_uri.unwrap_or_else(|| "http://127.0.0.1:8765/callback".into());
            if !redirect_uri.starts_with("http://127.0.0.1:") && !redirect_uri.starts_with("http://localhost:") && !redirect_uri.starts_with("https://") {
                return Err(err(format!("{at}: field `redirect_uri` must be a loopback http URL (for the CLI) or https")));
            }
            oauth_clients.push(OauthClientConfig { name, provider, client_id: c.client_id, client_secret, redirect_uri });
        }

        let mut names = HashSet::new();
        let mut mailboxes = Vec::new();
        for (i, m) in raw.mailboxes.into_iter().enumerate() {
            let at = format!("mailbox[{i}] \"{}\"", m.name);
            if m.name.trim().is_empty() {
                return Err(err(format!("mailbox[{i}]: field `name` must not be empty")));
            }
            if !names.insert(m.name.clone()) {
                return Err(err(format!("{at}: field `name`: another mailbox has the same name")));
            }
            if !m.address.contains('@') {
                return Err(err(format!("{at}: field `address` must be an e-mail address, got \"{}\"", m.address)));
            }
            let server = validate_server(
                &at,
                RawServer {
                    host: m.host,
                    port: m.port,
                    tls: m.tls,
                    insecure_plaintext: m.insecure_plaintext,
                    auth: m.auth,
                    username: m.username,
                    password_env: m.password_env,
                    password_file: m.password_file,
                    password: m.password,
                    helo_name: None,
                    provider: None,
                    oauth: m.oauth,
                    sasl_mechanism: m.sasl_mechanism,
                },
                &resolve,
                env,
            )
            .map_err(err)?;
            for f in &m.folders {
                if f.is_empty() || f.chars().any(|c| c.is_control()) {
                    return Err(err(format!("{at}: field `folders` has an empty name or a control character")));
                }
            }
            let after_fetch = match (m.after_fetch, m.move_to) {
                (RawAfterFetch::Move | RawAfterFetch::MarkSeen, _) if m.protocol == Protocol::Pop3 => {
                    return Err(err(format!(
                        "{at}: field `after_fetch`: POP3 can only keep or delete messages; use IMAP to move them or mark them seen"
                    )))
                }
                (RawAfterFetch::Move, None) => {
                    return Err(err(format!("{at}: `after_fetch = \"move\"` needs `move_to = \"<folder>\"`")))
                }
                (RawAfterFetch::Move, Some(f)) => {
                    if f.is_empty() || f.chars().any(|c| c.is_control()) {
                        return Err(err(format!("{at}: field `move_to` must be a folder name without control characters")));
                    }
                    if m.folders.iter().any(|x| x == &f) || (m.folders.is_empty() && f.eq_ignore_ascii_case("INBOX")) {
                        return Err(err(format!("{at}: field `move_to` names a folder that is fetched; choose another folder, e.g. \"Archive\"")));
                    }
                    AfterFetch::MoveTo(f)
                }
                (_, Some(_)) => {
                    return Err(err(format!("{at}: field `move_to` only applies with `after_fetch = \"move\"`")))
                }
                (RawAfterFetch::Keep, None) => AfterFetch::Keep,
                (RawAfterFetch::MarkSeen, None) => AfterFetch::MarkSeen,
                (RawAfterFetch::Delete, None) => AfterFetch::Delete,
            };
            let first_sync = match (m.first_sync, m.newest) {
                (RawFirstSync::Newest, Some(n)) if n > 0 => FirstSync::Newest(n),
                (RawFirstSync::Newest, _) => {
                    return Err(err(format!("{at}: `first_sync = \"newest\"` needs `newest = N` with N at least 1")))
                }
                (_, Some(_)) => {
                    return Err(err(format!("{at}: field `newest` only applies with `first_sync = \"newest\"`")))
                }
                (RawFirstSync::All, None) => FirstSync::All,
                (RawFirstSync::NewOnly, None) => FirstSync::NewOnly,
            };
            if let Some(f) = &m.save_sent {
                if m.protocol != Protocol::Imap {
                    return Err(err(format!(
                        "{at}: field `save_sent` needs an IMAP mailbox (POP3 has no folders to save sent replies in); remove it or use `protocol = \"imap\"`"
                    )));
                }
                if f.trim().is_empty() || f.chars().any(|c| c.is_control()) {
                    return Err(err(format!("{at}: field `save_sent` must be a folder name without control characters, e.g. \"Sent\"")));
                }
                let fetched = |x: &str| x == f || (x.eq_ignore_ascii_case("INBOX") && f.eq_ignore_ascii_case("INBOX"));
                if m.folders.iter().any(|x| fetched(x)) || (m.folders.is_empty() && fetched("INBOX")) {
                    return Err(err(format!(
                        "{at}: field `save_sent` names a folder that is fetched, so every saved reply would come back as new mail; choose another folder, e.g. \"Sent\""
                    )));
                }
            }
            if m.display_name.as_deref().is_some_and(|n| n.chars().any(|c| c.is_control())) {
                return Err(err(format!("{at}: field `display_name` must not contain control characters")));
            }
            mailboxes.push(MailboxConfig {
                name: m.name,
                address: m.address,
                display_name: m.display_name,
                protocol: m.protocol,
                folders: m.folders,
                after_fetch,
                first_sync,
                save_sent: m.save_sent,
                server,
            });
        }

        let mut qnames = HashSet::new();
        let mut queues = Vec::new();
        for (i, q) in raw.queues.into_iter().enumerate() {
            let at = format!("queue[{i}] \"{}\"", q.name);
            if q.name.trim().is_empty() {
                return Err(err(format!("queue[{i}]: field `name` must not be empty")));
            }
            if !qnames.insert(q.name.clone()) {
                return Err(err(format!("{at}: field `name`: another queue has the same name")));
            }
            for mb in &q.mailboxes {
                if !names.contains(mb) {
                    return Err(err(format!("{at}: field `mailboxes` names \"{mb}\", which is not a configured mailbox")));
                }
            }
            let helo_name = q.smtp.helo_name.clone().unwrap_or_else(|| "localhost".to_string());
            if helo_name.is_empty() || !helo_name.chars().all(|c| c.is_ascii_alphanumeric() || ".-[]:".contains(c)) {
                return Err(err(format!("{at}: field `smtp.helo_name` must be a host name")));
            }
            for a in &q.gmail_aliases {
                if !a.contains('@') || a.chars().any(|c| c.is_control() || c.is_whitespace()) {
                    return Err(err(format!("{at}: field `gmail_aliases` has \"{}\", which is not an address", a.escape_debug())));
                }
            }
            let provider = q.smtp.provider.unwrap_or_default();
            let smtp = validate_server(&format!("{at} smtp"), q.smtp, &resolve, env).map_err(err)?;
            queues.push(QueueConfig {
                name: q.name,
                mailboxes: q.mailboxes,
                smtp,
                helo_name,
                provider,
                send_permission: q.send_permission,
                gmail_aliases: q.gmail_aliases,
            });
        }

        Ok(TenantConfig {
            tenant: raw.tenant,
            licensed: raw.licensed,
            extra_ca_file: raw.extra_ca_file.map(|p| resolve(&p)),
            database: raw.database.map(|p| resolve(&p)).unwrap_or_else(|| base.join("mailplug.sqlite3")),
            limits,
            mailboxes,
            queues,
            oauth_clients,
        })
        .and_then(|c: TenantConfig| {
            for (at, s) in c
                .mailboxes
                .iter()
                .map(|m| (format!("mailbox \"{}\"", m.name), &m.server))
                .chain(c.queues.iter().map(|q| (format!("queue \"{}\" smtp", q.name), &q.smtp)))
            {
                match (&s.auth, &s.oauth) {
                    (AuthKind::Oauth2, None) => {
                        return Err(err(format!("{at}: `auth = \"oauth2\"` needs `oauth = \"<name of an [oauth.NAME] client>\"`")))
                    }
                    (AuthKind::Oauth2, Some(n)) if c.oauth_client(n).is_none() => {
                        return Err(err(format!("{at}: field `oauth` names \"{n}\", but there is no [oauth.{n}] table")))
                    }
                    (AuthKind::Basic, Some(_)) => {
                        return Err(err(format!("{at}: field `oauth` only applies with `auth = \"oauth2\"`")))
                    }
                    _ => {}
                }
            }
            Ok(c)
        })
    }

    pub fn oauth_client(&self, name: &str) -> Option<&OauthClientConfig> {
        self.oauth_clients.iter().find(|c| c.name == name)
    }

    pub fn mailbox(&self, name: &str) -> Option<&MailboxConfig> {
        self.mailboxes.iter().find(|m| m.name == name)
    }

    pub fn queue(&self, name: &str) -> Option<&QueueConfig> {
        self.queues.iter().find(|q| q.name == name)
    }
}

fn validate_server(
    at: &str,
    s: RawServer,
    resolve: &dyn Fn(&Path) -> PathBuf,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ServerConfig, String> {
    if s.host.trim().is_empty() || s.host.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') {
        return Err(format!("{at}: field `host` must be a host name, got \"{}\"", s.host.escape_debug()));
    }
    if s.port == 0 {
        return Err(format!("{at}: field `port` must be between 1 and 65535"));
    }
    let security = match (s.tls, s.insecure_plaintext) {
        (true, false) => Security::ImplicitTls,
        (false, false) => Security::Starttls,
        (false, true) => Security::InsecurePlaintext,
        (true, true) => {
            return Err(format!(
                "{at}: fields `tls` and `insecure_plaintext` contradict each other; `insecure_plaintext` is only for test servers without TLS"
            ))
        }
    };
    if s.username.is_empty() || s.username.chars().any(|c| c.is_control()) {
        return Err(format!("{at}: field `username` must not be empty or contain control characters"));
    }
    if s.password.is_some() {
        return Err(format!(
            "{at}: field `password` is not accepted inline; put the password in an environment variable named by `password_env` or a file named by `password_file`"
        ));
    }
    let secret = match (s.auth, &s.password_env, &s.password_file) {
        (AuthKind::Oauth2, None, None) => Secret::new(String::new()),
        (AuthKind::Oauth2, _, _) => {
            return Err(format!(
                "{at}: OAuth2 takes no password; remove `password_env` / `password_file` (the token comes from the OAuth2 consent)"
            ))
        }
        (AuthKind::Basic, Some(_), Some(_)) => {
            return Err(format!("{at}: set either `password_env` or `password_file`, not both"))
        }
        (AuthKind::Basic, None, None) => {
            return Err(format!(
                "{at}: Basic authentication needs a password: set `password_env` (an environment variable) or `password_file`"
            ))
        }
        (AuthKind::Basic, Some(var), None) => match env(var) {
            Some(v) if !v.is_empty() => Secret::new(v),
            _ => return Err(format!("{at}: field `password_env` names the environment variable {var}, which is not set or empty")),
        },
        (AuthKind::Basic, None, Some(path)) => {
            let p = resolve(path);
            let v = std::fs::read_to_string(&p)
                .map_err(|e| format!("{at}: field `password_file`: cannot read {}: {e}", p.display()))?;
            let v = v.trim_end_matches(['\r', '\n']).to_string();
            if v.is_empty() {
                return Err(format!("{at}: field `password_file`: {} is empty", p.display()));
            }
            Secret::new(v)
        }
    };
    if s.sasl_mechanism.is_some() && s.auth != AuthKind::Oauth2 {
        return Err(format!("{at}: field `sasl_mechanism` only applies with `auth = \"oauth2\"`"));
    }
    Ok(ServerConfig {
        host: s.host,
        port: s.port,
        security,
        auth: s.auth,
        username: s.username,
        secret,
        oauth: s.oauth,
        sasl_mechanism: s.sasl_mechanism,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TenantConfig, ConfigError> {
        TenantConfig::parse(text, "t.toml", Path::new("/cfg"), &|v| (v == "PW").then(|| "Hunter2-secret".to_string()))
    }

    const GOOD: &str = r#"
tenant = "acme"
licensed = true
[[mailbox]]
name = "support"
address = "support@example.test"
protocol = "imap"
host = "localhost"
port = 993
tls = true
username = "support@example.test"
password_env = "PW"
[[queue]]
name = "q"
mailboxes = ["support"]
[queue.smtp]
host = "localhost"
port = 587
tls = false
username = "support@example.test"
password_env = "PW"
"#;

    #[test]
    fn good_config_loads_with_security_from_tls_switch() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.mailboxes[0].server.security, Security::ImplicitTls);
        assert_eq!(c.queues[0].smtp.security, Security::Starttls);
        assert_eq!(c.mailboxes[0].server.secret.expose(), "Hunter2-secret");
        assert_eq!(c.database, Path::new("/cfg/mailplug.sqlite3"));
        assert_eq!(c.mailboxes[0].after_fetch, AfterFetch::Keep);
        assert_eq!(c.mailboxes[0].first_sync, FirstSync::NewOnly);
        assert!(!format!("{c:?}").contains("Hunter2"), "Debug must not print secrets");
    }

    #[test]
    fn inline_password_is_refused_naming_the_field() {
        let text = GOOD.replacen("password_env = \"PW\"", "password = \"x\"", 1);
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("mailbox[0]") && e.contains("`password`"), "{e}");
    }

    #[test]
    fn unknown_field_and_bad_values_are_named() {
        let e = parse(&GOOD.replace("protocol = \"imap\"", "protocol = \"smtp\"")).unwrap_err().to_string();
        assert!(e.contains("protocol") || e.contains("smtp"), "{e}");
        let e = parse(&GOOD.replace("port = 993", "port = 0")).unwrap_err().to_string();
        assert!(e.contains("`port`"), "{e}");
        let e = parse(&GOOD.replace("mailboxes = [\"support\"]", "mailboxes = [\"nope\"]")).unwrap_err().to_string();
        assert!(e.contains("`mailboxes`") && e.contains("nope"), "{e}");
        let e = parse(&GOOD.replace("password_env = \"PW\"", "password_env = \"MISSING\"")).unwrap_err().to_string();
        assert!(e.contains("MISSING"), "{e}");
        let e = parse(&GOOD.replace("tenant = \"acme\"", "tenant = \"acme\"\nbogus = 1")).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn after_fetch_and_first_sync_are_validated() {
        let with = |extra: &str| parse(&GOOD.replacen("protocol = \"imap\"", &format!("protocol = \"imap\"\n{extra}"), 1));
        let c = with("after_fetch = \"move\"\nmove_to = \"Archive\"\nfirst_sync = \"newest\"\nnewest = 20").unwrap();
        assert_eq!(c.mailboxes[0].after_fetch, AfterFetch::MoveTo("Archive".into()));
        assert_eq!(c.mailboxes[0].first_sync, FirstSync::Newest(20));
        assert!(with("after_fetch = \"move\"").unwrap_err().to_string().contains("move_to"));
        assert!(with("after_fetch = \"move\"\nmove_to = \"INBOX\"").unwrap_err().to_string().contains("is fetched"));
        assert!(with("move_to = \"Archive\"").unwrap_err().to_string().contains("only applies"));
        assert!(with("first_sync = \"newest\"").unwrap_err().to_string().contains("newest = N"));
        assert!(with("after_fetch = \"sometimes\"").unwrap_err().to_string().contains("after_fetch"));
        let pop = GOOD.replacen("protocol = \"imap\"", "protocol = \"pop3\"\nafter_fetch = \"mark-seen\"", 1);
        assert!(parse(&pop).unwrap_err().to_string().contains("POP3 can only keep or delete"));
    }

    #[test]
    fn save_sent_needs_imap_and_a_folder_that_is_not_fetched() {
        let with = |extra: &str| parse(&GOOD.replacen("protocol = \"imap\"", &format!("protocol = \"imap\"\n{extra}"), 1));
        assert_eq!(with("save_sent = \"Sent Items\"").unwrap().mailboxes[0].save_sent.as_deref(), Some("Sent Items"));
        assert_eq!(parse(GOOD).unwrap().mailboxes[0].save_sent, None);
        for (extra, want) in [
            ("save_sent = \"INBOX\"", "is fetched"),
            ("save_sent = \"inbox\"", "is fetched"),
            ("folders = [\"Support\"]\nsave_sent = \"Support\"", "is fetched"),
            ("save_sent = \"\"", "control characters"),
            ("save_sent = \"Sent\\r\\nX\"", "control characters"),
        ] {
            let e = with(extra).unwrap_err().to_string();
            assert!(e.contains("`save_sent`") && e.contains(want), "{extra}: {e}");
        }
        let pop = GOOD.replacen("protocol = \"imap\"", "protocol = \"pop3\"\nsave_sent = \"Sent\"", 1);
        assert!(parse(&pop).unwrap_err().to_string().contains("needs an IMAP mailbox"));
    }

    #[test]
    fn oauth2_with_password_is_refused() {
        let text = GOOD.replacen("password_env = \"PW\"", "auth = \"oauth2\"\npassword_env = \"PW\"", 1);
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("OAuth2 takes no password"), "{e}");
    }

    #[test]
    fn plaintext_needs_explicit_opt_in_and_contradiction_is_refused() {
        let text = GOOD.replacen("tls = true", "tls = true\ninsecure_plaintext = true", 1);
        assert!(parse(&text).unwrap_err().to_string().contains("insecure_plaintext"));
        let text = GOOD.replacen("tls = true", "tls = false\ninsecure_plaintext = true", 1);
        assert_eq!(parse(&text).unwrap().mailboxes[0].server.security, Security::InsecurePlaintext);
    }
}
