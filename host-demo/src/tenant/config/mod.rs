//! The tenant configuration file (TOML): mailboxes, queues, licence, limits.
//!
//! Passwords are never accepted inline: they come from an environment variable or a file, so a
//! configuration can be shared, logged or committed without leaking a secret.
//!
//! `raw` is the file as written, `limits` the `[limits]` table, `validate` the checks of
//! every other entry.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::secret::Secret;

mod limits;
mod raw;
#[cfg(test)]
mod tests;
mod validate;
mod webhook_url;

pub use limits::{Limits, DEFAULT_GREETING_TIMEOUT_SECS};
pub use webhook_url::{webhook_url, WebhookUrlError};
use raw::RawTenant;

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
    /// `mailplug serve`: seconds between two polls of this mailbox (± 10% jitter).
    pub poll_interval_secs: u32,
    /// `mailplug serve`, IMAP only: leave the connection idling (IMAP IDLE) between fetches so
    /// new mail of the first folder arrives at once; false: poll only. Default true.
    pub idle: bool,
    pub server: ServerConfig,
}

/// The poll interval when the file sets none.
pub const DEFAULT_POLL_INTERVAL_SECS: u32 = 60;

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

/// `[webhook]`: where `mailplug serve` posts the tenant's events (docs/WEBHOOKS.md).
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    /// https, or plain http to a loopback address (or anywhere with `insecure_plaintext`).
    pub url: String,
    /// The HMAC-SHA256 key of the `Mailplug-Signature` header.
    pub secret: Secret,
    /// The whole request, from connecting to the end of the answer.
    pub timeout: std::time::Duration,
    /// Test receivers only: plain http to a host that is not loopback.
    pub insecure_plaintext: bool,
}

/// The whole-request timeout of a webhook delivery unless `timeout_secs` says otherwise.
pub const DEFAULT_WEBHOOK_TIMEOUT_SECS: u32 = 10;

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
    pub webhook: Option<WebhookConfig>,
    /// `mailplug serve`: the bearer token that reaches this tenant's API routes (from
    /// `api_token_file`); None: only the service's admin token does.
    pub api_token: Option<Secret>,
    /// `mailplug serve`: the password of this tenant's admin page (from `admin_password_file`);
    /// the page also accepts `api_token`. None: only the API token signs in.
    pub admin_password: Option<Secret>,
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

        let limits = limits::limits(&raw.limits).map_err(err)?;
        let oauth_clients = validate::oauth_clients(raw.oauth, &resolve, env, &err)?;
        let (mailboxes, names) = validate::mailboxes(raw.mailboxes, &resolve, env, &err)?;
        let queues = validate::queues(raw.queues, &names, &resolve, env, &err)?;
        let webhook = raw.webhook.map(|w| validate::webhook(w, &resolve, env, &err)).transpose()?;
        let config = TenantConfig {
            tenant: raw.tenant,
            licensed: raw.licensed,
            extra_ca_file: raw.extra_ca_file.map(|p| resolve(&p)),
            database: raw.database.map(|p| resolve(&p)).unwrap_or_else(|| base.join("mailplug.sqlite3")),
            limits,
            mailboxes,
            queues,
            oauth_clients,
            webhook,
            api_token: raw.api_token_file.map(|p| validate::api_token(&resolve(&p), "api_token_file")).transpose().map_err(err)?,
            admin_password: raw
                .admin_password_file
                .map(|p| validate::api_token(&resolve(&p), "admin_password_file"))
                .transpose()
                .map_err(err)?,
        };
        validate::oauth_references(&config, &err)?;
        Ok(config)
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
