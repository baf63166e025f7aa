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
use crate::net::tls_config;
use crate::store::SyncStateStore;

pub use crate::engine::FetchSummary;

mod batch;
pub mod check;
pub mod discovery;
pub mod idle;
mod inbound;
pub use batch::{delivery_name, send_batch, send_composed_batch, BatchJournal, MessageOutcome, NoJournal};
pub mod outbox;
pub use idle::{fetch_and_idle, CancellationToken, IdleHandle, IdleOutcome, Wake};
pub use inbound::{fetch, sync_binding};

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

pub fn options<'a>(cfg: &TenantConfig, allowed: &'a [crate::driver::AllowedServer]) -> Result<DriveOptions<'a>, HostError> {
    Ok(options_with_tls(cfg, allowed, tls_config(cfg.extra_ca_file.as_deref())?))
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

/// The queue's SMTP server as the component takes it.
pub fn submission_server(cfg: &TenantConfig, q: &QueueConfig, credentials: Credentials) -> SubmissionServer {
    SubmissionServer { server: guest_server(&q.smtp), credentials, helo_name: q.helo_name.clone(), limits: guest_limits(cfg) }
}

/// A message to send through a queue.
pub struct Outgoing {
    pub to: Vec<String>,
    pub subject: String,
    pub text_body: String,
}

/// The result of a send: the Message-ID and the server's report.
#[derive(Debug)]
pub struct Sent {
    pub message_id: String,
    /// The message exactly as composed (before dot-stuffing).
    pub raw: Vec<u8>,
    pub report: SendReport,
}

/// The From address of a queue's mail: the SMTP account when it is an address, otherwise
/// the first inbound mailbox the queue serves. (From/Sender planning comes later.)
pub fn queue_from(cfg: &TenantConfig, queue: &crate::config::QueueConfig) -> Result<String, HostError> {
    if queue.smtp.username.contains('@') {
        return Ok(queue.smtp.username.clone());
    }
    queue
        .mailboxes
        .first()
        .and_then(|n| cfg.mailbox(n))
        .map(|m| m.address.clone())
        .ok_or_else(|| HostError::NotFound(format!("queue \"{}\" has no sender address: its SMTP username is not an address and it serves no mailbox", queue.name)))
}

/// Composes and sends one message through the queue's SMTP server.
pub async fn send(
    plugin: &Plugin,
    cfg: &TenantConfig,
    queue: &str,
    msg: &Outgoing,
    store: &dyn SyncStateStore,
) -> Result<Sent, HostError> {
    check_licence(cfg)?;
    let q = cfg
        .queue(queue)
        .ok_or_else(|| HostError::NotFound(format!("no queue named \"{queue}\" in the configuration")))?;
    let mut instance = plugin.instantiate(memory_cap(cfg), cfg.limits.guest_cpu_ms_per_call).await?;
    let composed = instance.compose(&Draft {
        from: queue_from(cfg, q)?,
        to: msg.to.clone(),
        subject: msg.subject.clone(),
        text_body: msg.text_body.clone(),
        date: now_ms(),
    }).await?;
    submit(&mut instance, cfg, store, q, composed).await
}

/// The identity the planner needs for replies from `queue` to mail that arrived in `mailbox`.
fn identity(cfg: &TenantConfig, q: &QueueConfig, mailbox: &str) -> Result<Identity, HostError> {
    let m = cfg
        .mailbox(mailbox)
        .ok_or_else(|| HostError::NotFound(format!("no mailbox named \"{mailbox}\" in the configuration")))?;
    if !q.mailboxes.iter().any(|n| n == mailbox) {
        return Err(HostError::NotFound(format!(
            "queue \"{}\" does not serve mailbox \"{mailbox}\"; add it to the queue's `mailboxes`",
            q.name
        )));
    }
    if !q.smtp.username.contains('@') {
        return Err(HostError::NotFound(format!(
            "queue \"{}\": the SMTP username \"{}\" is not an address, so the sender cannot be planned",
            q.name, q.smtp.username
        )));
    }
    Ok(Identity {
        mailbox_address: m.address.clone(),
        mailbox_name: m.display_name.clone(),
        smtp_account: q.smtp.username.clone(),
        provider: match q.provider {
            Provider::Gmail => GuestProvider::Gmail,
            Provider::Microsoft => GuestProvider::Microsoft,
            Provider::Generic => GuestProvider::Generic,
        },
        permission: match q.send_permission {
            SendPermission::None => GuestPermission::None,
            SendPermission::SendOnBehalf => GuestPermission::SendOnBehalf,
            SendPermission::SendAs => GuestPermission::SendAs,
        },
        gmail_alias_verified: q.gmail_aliases.iter().any(|a| a.eq_ignore_ascii_case(&m.address)),
    })
}

fn queue<'a>(cfg: &'a TenantConfig, name: &str) -> Result<&'a QueueConfig, HostError> {
    cfg.queue(name).ok_or_else(|| HostError::NotFound(format!("no queue named \"{name}\" in the configuration")))
}

/// Plans From, Sender, Reply-To and MAIL FROM for replies from `queue` to mail that arrived
/// in `mailbox`, and what the customer will see, without sending anything.
pub async fn plan_from(plugin: &Plugin, cfg: &TenantConfig, queue_name: &str, mailbox: &str) -> Result<FromPlan, HostError> {
    check_licence(cfg)?;
    let q = queue(cfg, queue_name)?;
    let id = identity(cfg, q, mailbox)?;
    let mut instance = plugin.instantiate(memory_cap(cfg), cfg.limits.guest_cpu_ms_per_call).await?;
    instance.plan_from(&id).await
}

/// An agent's reply to a stored message.
pub struct Reply {
    pub text_body: String,
    pub html_body: Option<String>,
    /// Answer even an auto-reply, bulk mail or bounce.
    pub force: bool,
}

/// A sent reply: the plan it followed, the send result, and what became of its copy.
#[derive(Debug)]
pub struct SentReply {
    pub plan: FromPlan,
    pub sent: Sent,
    /// The copy in the mailbox's `save_sent` folder. Saving it never fails the send.
    pub saved: SavedReply,
}

/// What became of the copy of a sent reply in the mailbox's `save_sent` folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SavedReply {
    /// The mailbox has no `save_sent` folder.
    NotConfigured,
    /// Saved, flagged \Seen; the UID when the server reported one (UIDPLUS).
    Saved { folder: String, uid: Option<u32>, created_folder: bool },
    /// Not saved on purpose: why, for the admin.
    Skipped(String),
    /// Saving failed after the reply was sent: a warning for the admin, in English and German.
    Failed { en: String, de: String },
}

impl SavedReply {
    /// The sentence to show the admin as a warning, if any.
    pub fn warning(&self) -> Option<&str> {
        match self {
            SavedReply::Failed { en, .. } => Some(en),
            _ => None,
        }
    }
    /// The same warning in German.
    pub fn warning_de(&self) -> Option<&str> {
        match self {
            SavedReply::Failed { de, .. } => Some(de),
            _ => None,
        }
    }
}

/// Gmail's SMTP server files everything the account sends in that account's "Sent Mail", so
/// a reply sent by the mailbox's own account already has its copy: another would be a double.
pub fn smtp_keeps_sent_copy(q: &QueueConfig, m: &MailboxConfig) -> bool {
    q.provider == Provider::Gmail && q.smtp.username.eq_ignore_ascii_case(&m.server.username)
}

/// Saves `raw` (the reply exactly as submitted) into the mailbox's `save_sent` folder over
/// IMAP APPEND. Never an error: the reply is already sent, so trouble is reported as
/// `SavedReply::Failed` and nothing is retried (one token refresh aside).
async fn save_sent_copy(
    instance: &mut Instance,
    cfg: &TenantConfig,
    store: &dyn SyncStateStore,
    q: &QueueConfig,
    m: &MailboxConfig,
    raw: &[u8],
) -> SavedReply {
    let Some(folder) = &m.save_sent else { return SavedReply::NotConfigured };
    if smtp_keeps_sent_copy(q, m) {
        return SavedReply::Skipped(format!(
            "not saved in \"{folder}\": Gmail already keeps a copy of mail sent through {} in the account's \"Sent Mail\"; remove `save_sent` from mailbox \"{}\" to silence this",
            q.smtp.host, m.name
        ));
    }
    let failed = |en: &dyn std::fmt::Display, de: &dyn std::fmt::Display| SavedReply::Failed {
        en: format!("the reply was sent, but no copy was saved in folder \"{folder}\" of mailbox \"{}\": {en}", m.name),
        de: format!("Die Antwort wurde gesendet, aber keine Kopie im Ordner \"{folder}\" des Postfachs \"{}\" gespeichert: {de}", m.name),
    };
    let allowed = allowed_servers(cfg);
    let opts = match options(cfg, &allowed) {
        Ok(o) => o,
        Err(e) => return failed(&e, &e),
    };
    let mut attempt = 0;
    let result = loop {
        let credentials = match credentials_for(instance, cfg, store, &m.server, attempt > 0).await {
            Ok(c) => c,
            Err(e) => break Err(e),
        };
        let gm = guest_mailbox(cfg, m, credentials);
        let session = match instance.open_save_copy(&gm, folder, raw, now_ms()).await {
            Ok(s) => s,
            Err(e) => break Err(e),
        };
        match drive(instance, session, &opts, &mut crate::store::NoMessages).await {
            Err(e) if retry_with_fresh_token(&m.server, &e, attempt) => attempt += 1,
            other => break other,
        }
    };
    match result {
        Ok(Outcome::Appended(c)) => SavedReply::Saved { folder: c.folder, uid: c.uid, created_folder: c.created_folder },
        Ok(_) => {
            let what = "the component reported another outcome than a saved copy";
            failed(&what, &what)
        }
        Err(e) => {
            let en = copy_failure_en(&e);
            let de = match crate::check::explain(instance, &e, crate::engine::Stage::Data).await {
                Some(d) => format!("{} {}", d.cause.de, d.action.de),
                None => en.clone(),
            };
            failed(&en, &de)
        }
    }
}

/// Why the copy was not saved. A folder or APPEND refusal is the component's own sentence
/// (it names the refused copy, the folder, a server prefix, and quotes the server), not a
/// "protocol error during message data".
fn copy_failure_en(e: &HostError) -> String {
    use crate::engine::Stage;
    use crate::error::Kind;
    match e {
        HostError::Guest(g)
            if matches!(g.kind, Kind::Protocol | Kind::Limit) && matches!(g.stage_id, Stage::Data | Stage::SelectMailbox) =>
        {
            match &g.reply {
                // The server's words, unless the sentence already quotes them.
                Some((code, text)) if !g.message.contains(text.trim()) => format!("{} (server replied: {code} {text})", g.message),
                _ => g.message.clone(),
            }
        }
        other => other.to_string(),
    }
}

async fn submit(
    instance: &mut Instance,
    cfg: &TenantConfig,
    store: &dyn SyncStateStore,
    q: &QueueConfig,
    composed: ComposedMessage,
) -> Result<Sent, HostError> {
    let allowed = allowed_servers(cfg);
    let opts = options(cfg, &allowed)?;
    let mut attempt = 0;
    let result = loop {
        let credentials = credentials_for(instance, cfg, store, &q.smtp, attempt > 0).await?;
        let sub = submission_server(cfg, q, credentials);
        let session =
            instance.open_outbound(&sub, &composed.envelope_from, &composed.envelope_to, &composed.raw, now_ms()).await?;
        let mut no_sink = crate::store::NoMessages;
        match drive(instance, session, &opts, &mut no_sink).await {
            Err(e) if retry_with_fresh_token(&q.smtp, &e, attempt) => attempt += 1,
            other => break other,
        }
    };
    let outcome = result.map_err(|e| match e {
        HostError::Guest(mut g) => {
            // The host must be able to recognise a duplicate if it ever resends: name the message.
            if g.retry == crate::error::Retry::Uncertain {
                g.message = format!("{} (Message-ID <{}>)", g.message, composed.message_id);
            }
            g.message_id = Some(composed.message_id.clone());
            HostError::Guest(g)
        }
        other => other,
    })?;
    match outcome {
        Outcome::Sent(report) => Ok(Sent { message_id: composed.message_id, raw: composed.raw, report }),
        _ => Err(HostError::Plugin("the component reported another outcome than a send".into())),
    }
}

/// Replies to a stored message (`db:17`, `mid:<...>`, `imap:...`/`pop3:...`; see
/// `Database::find`, which refuses ambiguous references) through `queue`, with
/// the identity planned for the mailbox the message arrived in.
pub async fn send_reply(
    plugin: &Plugin,
    cfg: &TenantConfig,
    queue_name: &str,
    db: &crate::db::Database,
    message: &str,
    reply: &Reply,
) -> Result<SentReply, HostError> {
    check_licence(cfg)?;
    let q = queue(cfg, queue_name)?;
    let mut instance = plugin.instantiate(memory_cap(cfg), cfg.limits.guest_cpu_ms_per_call).await?;
    let (mailbox, plan, composed) = compose_reply_to(&mut instance, cfg, q, db, message, reply).await?;
    let sent = submit(&mut instance, cfg, db, q, composed).await?;
    let saved = match cfg.mailbox(&mailbox) {
        Some(m) => save_sent_copy(&mut instance, cfg, db, q, m, &sent.raw).await,
        None => SavedReply::NotConfigured,
    };
    Ok(SentReply { plan, sent, saved })
}

/// Composes a reply to a stored message (see `send_reply`) with the sender planned for the
/// mailbox it arrived in: (that mailbox, the plan, the composed reply).
async fn compose_reply_to(
    instance: &mut Instance,
    cfg: &TenantConfig,
    q: &QueueConfig,
    db: &crate::db::Database,
    message: &str,
    reply: &Reply,
) -> Result<(String, FromPlan, ComposedMessage), HostError> {
    let (mailbox, original) = db.find(&cfg.tenant, message)?;
    let id = identity(cfg, q, &mailbox)?;
    let plan = instance.plan_from(&id).await?;
    let composed = instance
        .compose_reply(&ReplyDraft {
            original,
            plan: plan.clone(),
            text_body: reply.text_body.clone(),
            html_body: reply.html_body.clone(),
            attachments: Vec::new(),
            date: now_ms(),
            force: reply.force,
        })
        .await?;
    Ok((mailbox, plan, composed))
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
    use crate::engine::{ProtocolKind, ServerSettings, Severity};
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
        for f in instance.validate(&settings).await? {
            out.push(ConfigFinding {
                server: what.clone(),
                error: f.severity == Severity::Error,
                field: f.field,
                en: f.text.en,
                de: f.text.de,
            });
        }
    }
    Ok(out)
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
