//! The operations a platform performs for a tenant: fetch a mailbox, send through a queue.
//! They turn the tenant configuration into guest values, check the licence and the
//! allow-list, and drive the session.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{
    OauthMechanism, AfterFetch, AuthKind, FirstSync, Protocol, Provider, QueueConfig, Security, SendPermission, ServerConfig, TenantConfig,
};
use crate::driver::{drive, now_ms, DriveOptions};
use crate::engine::{
    BasicCredentials, ComposedMessage, Credentials, Draft, FromPlan, GuestAfterFetch, GuestPermission, GuestProvider,
    Identity, Instance, ReplyDraft, GuestFirstSync, GuestLimits, GuestMailbox, GuestProtocol,
    GuestSecurity, GuestServer,
    Oauth2Credentials, Oauth2Mechanism as GuestOauth2Mechanism, Outcome, Plugin, SendReport, SubmissionServer,
};
use crate::config::MailboxConfig;
use crate::error::HostError;
use crate::store::SyncStateStore;

pub use crate::engine::FetchSummary;

mod batch;
pub mod check;
pub mod discovery;
pub mod idle;
mod inbound;
mod outbound;
pub use batch::{delivery_name, send_batch, send_composed_batch, BatchJournal, MessageOutcome, NoJournal};
pub mod outbox;
pub use idle::{fetch_and_idle, CancellationToken, IdleHandle, IdleOutcome, Wake};
pub use inbound::{fetch, sync_binding};
pub use outbound::{Outgoing, Reply, SavedReply, Sent, SentReply, plan_from, queue_from, send, send_reply, smtp_keeps_sent_copy, submission_server};
use outbound::{compose_reply_to, queue, save_sent_copy};

fn guest_server(s: &ServerConfig) -> GuestServer {
    GuestServer {
        host: s.host.clone(),
        port: s.port,
        security: match s.security {
            Security::ImplicitTls => GuestSecurity::ImplicitTls,
            Security::Starttls => GuestSecurity::Starttls,
            Security::InsecurePlaintext => GuestSecurity::InsecurePlaintext,
        },
    }
}

fn guest_credentials(s: &ServerConfig, oauth_token: Option<&str>) -> Result<Credentials, HostError> {
    Ok(match s.auth {
        AuthKind::Basic => {
            Credentials::Basic(BasicCredentials { username: s.username.clone(), password: s.secret.expose().to_string() })
        }
        AuthKind::Oauth2 => match oauth_token {
            Some(t) => Credentials::Oauth2(Oauth2Credentials {
                username: s.username.clone(),
                access_token: t.to_string(),
                mechanism: s.sasl_mechanism.map(|m| match m {
                    OauthMechanism::Oauthbearer => GuestOauth2Mechanism::Oauthbearer,
                    OauthMechanism::Xoauth2 => GuestOauth2Mechanism::Xoauth2,
                }),
            }),
            None => {
                return Err(HostError::NotFound(format!(
                    "{}:{} uses OAuth2 but no token is stored yet; run the OAuth2 consent first",
                    s.host, s.port
                )))
            }
        },
    })
}

/// The credentials for a server: its password, or a (refreshed if needed) OAuth2 access token.
/// Gmail app passwords are used without the spaces Google displays them with.
pub async fn credentials_for(
    instance: &mut Instance,
    cfg: &TenantConfig,
    store: &dyn SyncStateStore,
    server: &ServerConfig,
    force_refresh: bool,
) -> Result<Credentials, HostError> {
    match server.auth {
        AuthKind::Basic => {
            let mut c = guest_credentials(server, None)?;
            if let Credentials::Basic(b) = &mut c {
                if is_google_host(&server.host) {
                    b.password = instance.normalise_app_password(&b.password).await?;
                }
            }
            Ok(c)
        }
        AuthKind::Oauth2 => {
            let token = crate::oauth::access_token(instance, cfg, store, server, force_refresh).await?;
            guest_credentials(server, Some(&token))
        }
    }
}

/// Google's own mail servers (imap.gmail.com, smtp.gmail.com, pop.gmail.com, ...).
fn is_google_host(host: &str) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    h == "gmail.com" || h.ends_with(".gmail.com") || h.ends_with(".googlemail.com")
}

/// An OAuth2 login the server rejected: refresh the token once and try once more.
fn retry_with_fresh_token(server: &ServerConfig, e: &HostError, attempt: u32) -> bool {
    attempt == 0 && server.auth == AuthKind::Oauth2 && e.kind() == Some(crate::error::Kind::AuthRejected)
}

fn guest_limits(cfg: &TenantConfig) -> GuestLimits {
    let l = &cfg.limits;
    GuestLimits {
        max_line_bytes: l.max_line_bytes,
        max_message_bytes: l.max_message_bytes,
        max_batch_messages: l.max_batch_messages,
        max_batch_bytes: l.max_batch_bytes,
        reply_timeout_ms: l.reply_timeout_secs.saturating_mul(1000),
    }
}

/// Every server the tenant configured, with its configured security: the allow-list for its sessions.
pub fn allowed_servers(cfg: &TenantConfig) -> Vec<crate::driver::AllowedServer> {
    let entry = |s: &ServerConfig| (s.host.clone(), s.port, guest_server(s).security);
    let mut v: Vec<_> = cfg.mailboxes.iter().map(|m| entry(&m.server)).collect();
    v.extend(cfg.queues.iter().map(|q| entry(&q.smtp)));
    v
}

fn check_licence(cfg: &TenantConfig) -> Result<(), HostError> {
    if cfg.licensed {
        Ok(())
    } else {
        Err(HostError::Unlicensed(cfg.tenant.clone()))
    }
}

/// Guest memory in bytes for this tenant's limits: the configured cap, and never less than
/// two messages' worth plus a margin, so a message at the limit can be assembled.
fn memory_cap(cfg: &TenantConfig) -> usize {
    (cfg.limits.guest_memory_mb as usize).saturating_mul(1024 * 1024)
}

/// The session's options, with the process's TLS configuration for the tenant's extra CA
/// (`idle::shared_tls`): a poll does not load and parse the system's root certificates again
/// (hundreds of them; a profile of `serve` with 200 polled mailboxes showed it).
pub fn options<'a>(cfg: &TenantConfig, allowed: &'a [crate::driver::AllowedServer]) -> Result<DriveOptions<'a>, HostError> {
    Ok(options_with_tls(cfg, allowed, idle::shared_tls(cfg)?))
}

/// `options` with a TLS configuration the caller already has (a shared one: see `idle`).
pub fn options_with_tls<'a>(
    cfg: &TenantConfig,
    allowed: &'a [crate::driver::AllowedServer],
    tls: std::sync::Arc<rustls::ClientConfig>,
) -> DriveOptions<'a> {
    DriveOptions {
        allowed,
        tls,
        connect_timeout: Duration::from_secs(cfg.limits.connect_timeout_secs.into()),
        idle_timeout: Duration::from_secs(u64::from(cfg.limits.reply_timeout_secs) * 2),
        reply_timeout: Duration::from_secs(cfg.limits.reply_timeout_secs.into()),
        // Never longer than the reply timeout (the config validates it; a config changed in
        // code may not be).
        greeting_timeout: Duration::from_secs(cfg.limits.greeting_timeout_secs.min(cfg.limits.reply_timeout_secs).into()),
        max_session: Duration::from_secs(cfg.limits.max_session_secs.into()),
    }
}

/// A fresh component instance with the tenant's memory and CPU limits, and its parse budget.
pub async fn instance_for(plugin: &Plugin, cfg: &TenantConfig) -> Result<Instance, HostError> {
    let mut instance = plugin.instantiate(memory_cap(cfg), cfg.limits.guest_cpu_ms_per_call).await?;
    instance.set_parse_budget(crate::engine::ParseBudget {
        memory_bytes: (cfg.limits.parse_memory_mb as usize).saturating_mul(1024 * 1024),
        cpu_ms: cfg.limits.parse_cpu_ms,
    });
    Ok(instance)
}

/// The mailbox as the component takes it.
pub fn guest_mailbox(cfg: &TenantConfig, m: &crate::config::MailboxConfig, credentials: Credentials) -> GuestMailbox {
    GuestMailbox {
        protocol: match m.protocol {
            Protocol::Pop3 => GuestProtocol::Pop3,
            Protocol::Imap => GuestProtocol::Imap,
        },
        server: guest_server(&m.server),
        credentials,
        folders: m.folders.clone(),
        limits: guest_limits(cfg),
        after_fetch: match &m.after_fetch {
            AfterFetch::Keep => GuestAfterFetch::Keep,
            AfterFetch::MarkSeen => GuestAfterFetch::MarkSeen,
            AfterFetch::Delete => GuestAfterFetch::Delete,
            AfterFetch::MoveTo(f) => GuestAfterFetch::MoveTo(f.clone()),
        },
        first_sync: match m.first_sync {
            FirstSync::All => GuestFirstSync::All,
            FirstSync::NewOnly => GuestFirstSync::NewOnly,
            FirstSync::Newest(n) => GuestFirstSync::Newest(n),
        },
        // Only `idle::fetch_and_idle` asks the session to idle.
        idle: false,
    }
}

/// One finding about a configured server.
#[derive(Debug, Clone)]
pub struct ConfigFinding {
    /// Which server: `mailbox "support"` or `queue "support" smtp`.
    pub server: String,
    pub error: bool,
    pub field: String,
    pub en: String,
    pub de: String,
}

/// Checks every configured server against the presets and protocol rules (port and TLS
/// switch, OAuth2 with a password, Basic where the provider retired it, Gmail app passwords,
/// user name form) before anything connects.
pub async fn validate_config(plugin: &Plugin, cfg: &TenantConfig) -> Result<Vec<ConfigFinding>, HostError> {
    use crate::engine::{ProtocolKind, ServerSettings};
    let mut instance = plugin.instantiate(memory_cap(cfg), cfg.limits.guest_cpu_ms_per_call).await?;
    let servers = cfg
        .mailboxes
        .iter()
        .map(|m| {
            let kind = if m.protocol == Protocol::Pop3 { ProtocolKind::Pop3 } else { ProtocolKind::Imap };
            (format!("mailbox \"{}\"", m.name), kind, &m.server)
        })
        .chain(cfg.queues.iter().map(|q| (format!("queue \"{}\" smtp", q.name), ProtocolKind::Smtp, &q.smtp)));
    let mut out = Vec::new();
    for (what, protocol, s) in servers {
        let oauth2 = s.auth == AuthKind::Oauth2;
        let settings = ServerSettings {
            protocol,
            host: s.host.clone(),
            port: s.port,
            tls: s.security == Security::ImplicitTls,
            oauth2,
            has_password: !oauth2,
            username: s.username.clone(),
            password: (!oauth2).then(|| s.secret.expose().to_string()),
        };
        out.extend(server_findings(&mut instance, &what, &settings).await?);
    }
    Ok(out)
}

/// The findings about one server's settings (`what` names it in them): the check behind
/// `validate_config` (so `mailplug presets --config`) and the admin page's form alike.
pub async fn server_findings(
    instance: &mut Instance,
    what: &str,
    settings: &crate::engine::ServerSettings,
) -> Result<Vec<ConfigFinding>, HostError> {
    Ok(instance
        .validate(settings)
        .await?
        .into_iter()
        .map(|f| ConfigFinding {
            server: what.to_string(),
            error: f.severity == crate::engine::Severity::Error,
            field: f.field,
            en: f.text.en,
            de: f.text.de,
        })
        .collect())
}

/// The default component path: `$MAILPLUG_WASM`, else next to the binary's target folder.
pub fn default_plugin_path() -> PathBuf {
    if let Ok(p) = std::env::var("MAILPLUG_WASM") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe.parent().unwrap_or(Path::new("."));
    let target = profile_dir.parent().unwrap_or(Path::new("."));
    target.join("wasm32-wasip2").join("release").join("mailplug_plugin.wasm")
}

#[cfg(test)]
mod tests {
    use super::{is_google_host, smtp_keeps_sent_copy};
    use crate::config::{Provider, TenantConfig};

    #[test]
    fn only_gmail_sending_as_the_mailbox_itself_keeps_the_copy() {
        let text = |smtp_user: &str| {
            format!(
                "tenant = \"t\"\nlicensed = true\n[[mailbox]]\nname = \"m\"\naddress = \"support@example.com\"\nprotocol = \"imap\"\n\
                 save_sent = \"[Gmail]/Sent Mail\"\nhost = \"imap.gmail.com\"\nport = 993\ntls = true\nusername = \"Support@example.com\"\npassword_env = \"PW\"\n\
                 [[queue]]\nname = \"q\"\nmailboxes = [\"m\"]\n[queue.smtp]\nhost = \"smtp.gmail.com\"\nport = 465\ntls = true\n\
                 username = \"{smtp_user}\"\npassword_env = \"PW\"\nprovider = \"gmail\"\n"
            )
        };
        let parse = |t: &str| TenantConfig::parse(t, "t.toml", std::path::Path::new("/"), &|_| Some("pw".into())).unwrap();
        let same = parse(&text("support@example.com"));
        assert!(smtp_keeps_sent_copy(&same.queues[0], &same.mailboxes[0]), "same account, case aside");
        let other = parse(&text("agent@example.com"));
        assert!(!smtp_keeps_sent_copy(&other.queues[0], &other.mailboxes[0]), "Gmail files it in the agent's Sent Mail");
        let mut ms = same.clone();
        ms.queues[0].provider = Provider::Microsoft;
        assert!(!smtp_keeps_sent_copy(&ms.queues[0], &ms.mailboxes[0]), "Microsoft 365 SMTP keeps no copy");
    }

    #[test]
    fn google_hosts_are_recognised_for_app_password_spaces() {
        for h in ["imap.gmail.com", "smtp.gmail.com", "pop.gmail.com", "IMAP.GMAIL.COM.", "smtp.googlemail.com"] {
            assert!(is_google_host(h), "{h}");
        }
        for h in ["gmail.com.evil.example", "notgmail.com", "mail.example.com", "outlook.office365.com"] {
            assert!(!is_google_host(h), "{h}");
        }
    }
}
