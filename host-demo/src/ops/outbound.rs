//! Outbound operations: one submission (`send`), a reply to a stored message (`send_reply`) with
//! its copy in Sent, and what the customer will see (`plan_from`).

use super::*;

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

pub(super) fn queue<'a>(cfg: &'a TenantConfig, name: &str) -> Result<&'a QueueConfig, HostError> {
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
pub(super) async fn save_sent_copy(
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
/// `MessageQuery::find`, which refuses ambiguous references) through `queue`, with
/// the identity planned for the mailbox the message arrived in.
pub async fn send_reply<S: crate::store::MessageQuery + SyncStateStore>(
    plugin: &Plugin,
    cfg: &TenantConfig,
    queue_name: &str,
    db: &S,
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
pub(super) async fn compose_reply_to(
    instance: &mut Instance,
    cfg: &TenantConfig,
    q: &QueueConfig,
    db: &dyn crate::store::MessageQuery,
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
