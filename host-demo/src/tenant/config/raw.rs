//! The configuration file as written: serde structures, checked by `validate` and `limits`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{AuthKind, OauthMechanism, Protocol, Provider, SendPermission};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub(super) enum RawAfterFetch {
    #[default]
    Keep,
    MarkSeen,
    Delete,
    Move,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub(super) enum RawFirstSync {
    All,
    #[default]
    NewOnly,
    Newest,
}

/// The fields common to every server entry, as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) host: String,
    pub(super) port: u16,
    /// The portal's "TLS" switch: true = TLS from the first byte, false = STARTTLS.
    pub(super) tls: bool,
    /// Explicit opt-in for test servers: no TLS at all, credentials in clear text.
    #[serde(default)]
    pub(super) insecure_plaintext: bool,
    #[serde(default)]
    pub(super) auth: AuthKind,
    pub(super) username: String,
    pub(super) password_env: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    /// Only to give a clear error: inline passwords are refused.
    pub(super) password: Option<toml::Value>,
    #[serde(default)]
    pub(super) helo_name: Option<String>,
    /// Only for a queue's SMTP server.
    #[serde(default)]
    pub(super) provider: Option<Provider>,
    /// With `auth = "oauth2"`: the name of an `[oauth.NAME]` client.
    pub(super) oauth: Option<String>,
    /// With `auth = "oauth2"`: pin the SASL mechanism ("xoauth2" or "oauthbearer").
    pub(super) sasl_mechanism: Option<OauthMechanism>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMailbox {
    pub(super) name: String,
    pub(super) address: String,
    pub(super) display_name: Option<String>,
    pub(super) protocol: Protocol,
    #[serde(default)]
    pub(super) folders: Vec<String>,
    #[serde(default)]
    pub(super) after_fetch: RawAfterFetch,
    pub(super) move_to: Option<String>,
    #[serde(default)]
    pub(super) first_sync: RawFirstSync,
    pub(super) newest: Option<u32>,
    /// IMAP only: the folder replies to this mailbox's mail are saved in after sending.
    pub(super) save_sent: Option<String>,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) tls: bool,
    #[serde(default)]
    pub(super) insecure_plaintext: bool,
    #[serde(default)]
    pub(super) auth: AuthKind,
    pub(super) username: String,
    pub(super) password_env: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) password: Option<toml::Value>,
    pub(super) oauth: Option<String>,
    pub(super) sasl_mechanism: Option<OauthMechanism>,
    /// `mailplug serve`: seconds between polls of this mailbox.
    pub(super) poll_interval_secs: Option<u32>,
    /// `mailplug serve`, IMAP: idle between fetches (default true).
    pub(super) idle: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQueue {
    pub(super) name: String,
    #[serde(default)]
    pub(super) mailboxes: Vec<String>,
    /// What the SMTP account may do for the queue's mailboxes.
    #[serde(default)]
    pub(super) send_permission: SendPermission,
    /// Gmail: mailbox addresses verified as "Send mail as" aliases of the SMTP account.
    #[serde(default)]
    pub(super) gmail_aliases: Vec<String>,
    pub(super) smtp: RawServer,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_line_bytes: Option<u32>,
    pub(super) max_message_bytes: Option<u64>,
    pub(super) max_batch_messages: Option<u32>,
    pub(super) max_batch_bytes: Option<u64>,
    pub(super) reply_timeout_secs: Option<u32>,
    pub(super) greeting_timeout_secs: Option<u32>,
    pub(super) connect_timeout_secs: Option<u32>,
    pub(super) guest_memory_mb: Option<u32>,
    pub(super) guest_cpu_ms_per_call: Option<u32>,
    pub(super) parse_memory_mb: Option<u32>,
    pub(super) parse_cpu_ms: Option<u32>,
    pub(super) max_session_secs: Option<u32>,
    pub(super) idle_renew_secs: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTenant {
    pub(super) tenant: String,
    pub(super) licensed: bool,
    /// Extra CA certificates (PEM) trusted besides the system roots.
    pub(super) extra_ca_file: Option<PathBuf>,
    /// The SQLite file that stores messages and sync state.
    pub(super) database: Option<PathBuf>,
    /// `mailplug serve`: a file holding this tenant's API bearer token.
    pub(super) api_token_file: Option<PathBuf>,
    /// `mailplug serve`: a file holding the password of this tenant's admin page.
    pub(super) admin_password_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default, rename = "mailbox")]
    pub(super) mailboxes: Vec<RawMailbox>,
    #[serde(default, rename = "queue")]
    pub(super) queues: Vec<RawQueue>,
    /// OAuth2 client registrations by name.
    #[serde(default)]
    pub(super) oauth: BTreeMap<String, RawOauthClient>,
    /// Where `mailplug serve` posts this tenant's events.
    pub(super) webhook: Option<RawWebhook>,
}

/// `[webhook]`: the tenant's event receiver.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    pub(super) url: String,
    pub(super) secret_env: Option<String>,
    pub(super) secret_file: Option<PathBuf>,
    /// Only to give a clear error: inline secrets are refused.
    pub(super) secret: Option<toml::Value>,
    /// The whole request (connect, send, answer), in seconds.
    pub(super) timeout_secs: Option<u32>,
    /// Explicit opt-in for test receivers: plain http to a host that is not loopback.
    #[serde(default)]
    pub(super) insecure_plaintext: bool,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawOauthProvider {
    Google,
    Microsoft,
    Custom,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOauthClient {
    pub(super) provider: RawOauthProvider,
    /// Microsoft: "common", "organizations", a tenant id or domain.
    pub(super) tenant: Option<String>,
    pub(super) client_id: String,
    pub(super) client_secret_env: Option<String>,
    pub(super) client_secret_file: Option<PathBuf>,
    pub(super) redirect_uri: Option<String>,
    /// Custom authorization servers.
    pub(super) authorization_endpoint: Option<String>,
    pub(super) token_endpoint: Option<String>,
    #[serde(default)]
    pub(super) scopes: Vec<String>,
}
/// A secret as a table writes it, the same for every table that has one: `<name>_env` names an
/// environment variable, `<name>_file` a file, and an inline `<name>` is read only to refuse it
/// clearly. Servers call it `password`, `[webhook]` `secret`, `[oauth.NAME]` `client_secret`
/// (which has no inline field). The fields stay in each table's serde struct because their
/// names differ and serde's `flatten` cannot be combined with `deny_unknown_fields`.
pub(super) struct RawSecret<'a> {
    pub(super) name: &'static str,
    pub(super) env: Option<&'a str>,
    pub(super) file: Option<&'a Path>,
    pub(super) inline: bool,
}

impl<'a> RawSecret<'a> {
    pub(super) fn new(name: &'static str, env: &'a Option<String>, file: &'a Option<PathBuf>, inline: bool) -> Self {
        RawSecret { name, env: env.as_deref(), file: file.as_deref(), inline }
    }

    /// Whether the table names a source (a variable or a file).
    pub(super) fn is_set(&self) -> bool {
        self.env.is_some() || self.file.is_some()
    }
}

impl RawServer {
    pub(super) fn password(&self) -> RawSecret<'_> {
        RawSecret::new("password", &self.password_env, &self.password_file, self.password.is_some())
    }
}

impl RawWebhook {
    pub(super) fn secret(&self) -> RawSecret<'_> {
        RawSecret::new("secret", &self.secret_env, &self.secret_file, self.secret.is_some())
    }
}
