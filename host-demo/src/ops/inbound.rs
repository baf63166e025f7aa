//! `fetch`: one mailbox's new mail into a sink, with the sync state kept on every outcome.

use super::{
    allowed_servers, check_licence, credentials_for, guest_mailbox, instance_for, options,
    retry_with_fresh_token,
};
use crate::config::{FirstSync, MailboxConfig, Protocol, TenantConfig};
use crate::driver::{now_ms, MessageSink, Parked};
use crate::engine::{FetchSummary, GuestMailbox, Idling, Outcome, Plugin};
use crate::net::Conn;
use crate::error::HostError;
use crate::store::SyncStateStore;

/// Fetches new messages of one mailbox into `sink` and keeps the mailbox's sync state: after
/// each `stored` (so a run cut, killed or trapped later resumes there) and at the end, whatever
/// the outcome. The state is bound to the server (protocol, host, port, user): after any of
/// them changed it is not used, and the mailbox starts afresh per its `first_sync`, with a
/// warning through `MessageSink::warning`.
pub async fn fetch(
    plugin: &Plugin,
    cfg: &TenantConfig,
    mailbox: &str,
    sink: &mut dyn MessageSink,
    sync: &dyn SyncStateStore,
) -> Result<FetchSummary, HostError> {
    match run(plugin, cfg, mailbox, sink, sync, false).await? {
        Ran::Done(summary) => Ok(summary),
        Ran::Idle { mut conn, .. } => {
            conn.close().await;
            Err(HostError::Plugin("the mail component went idle though this fetch did not ask it to".into()))
        }
    }
}

/// How a fetch run ended (see `run`).
pub(super) enum Ran {
    Done(FetchSummary),
    /// The server idles on the connection (`idle` was asked): the sync state is saved.
    Idle { conn: Conn, idling: Idling, mailbox: GuestMailbox, binding: String },
}

/// A fetch run: with `idle`, an IMAP session idles once it has nothing more to do (when the
/// server offers IDLE) and the run returns the open connection with what the guest handed over.
pub(super) async fn run(
    plugin: &Plugin,
    cfg: &TenantConfig,
    mailbox: &str,
    sink: &mut dyn MessageSink,
    sync: &dyn SyncStateStore,
    idle: bool,
) -> Result<Ran, HostError> {
    check_licence(cfg)?;
    let m = cfg
        .mailbox(mailbox)
        .ok_or_else(|| HostError::NotFound(format!("no mailbox named \"{mailbox}\" in the configuration")))?;
    let bound_to = sync_binding(m);
    let mut state = saved_state(m, &bound_to, cfg, sink, sync)?;
    let mut instance = instance_for(plugin, cfg).await?;
    let allowed = allowed_servers(cfg);
    let opts = options(cfg, &allowed)?;
    sink.source(&bound_to);
    let mut attempt = 0;
    let outcome = loop {
        let credentials = credentials_for(&mut instance, cfg, sync, &m.server, attempt > 0).await?;
        let mut gm = guest_mailbox(cfg, m, credentials);
        gm.idle = idle;
        let session = instance.open_inbound(&gm, state.as_deref(), now_ms()).await?;
        let mut saving = SavingSink { inner: &mut *sink, sync, tenant: &cfg.tenant, mailbox: &m.name, binding: &bound_to, saved: None };
        let outcome = crate::driver::drive_to_idle(&mut instance, session, &opts, &mut saving).await;
        let saved_during = saving.saved.take();
        if let Ok(Parked::Idle { conn, idling, .. }) = outcome {
            let saved = sync.save(&cfg.tenant, &m.name, &bound_to, &idling.sync_state);
            instance.drop_session(session).await;
            if let Err(e) = saved {
                let mut conn = conn;
                conn.close().await;
                return Err(e);
            }
            return Ok(Ran::Idle { conn, idling, mailbox: gm, binding: bound_to });
        }
        // On every outcome, the state the guest committed: it only covers what the host
        // confirmed stored. After a trap the instance cannot answer; what was saved after the
        // last `stored` stands.
        let last = match instance.sync_state(session).await {
            Ok(Some(st)) => sync.save(&cfg.tenant, &m.name, &bound_to, &st).map(|()| Some(st)),
            Ok(None) => Ok(saved_during),
            Err(_) if outcome.is_err() => Ok(saved_during),
            Err(e) => Err(e),
        };
        instance.drop_session(session).await;
        match outcome {
            Err(e) if retry_with_fresh_token(&m.server, &e, attempt) => {
                attempt += 1;
                if let Ok(Some(st)) = last {
                    state = Some(st);
                }
            }
            Err(e) => return Err(e),
            Ok(Parked::Finished(o)) => {
                last?;
                break o;
            }
            Ok(Parked::Idle { .. }) => unreachable!("handled above"),
        }
    };
    match outcome {
        Outcome::Fetched(s) => Ok(Ran::Done(s)),
        _ => Err(HostError::Plugin("the component reported another outcome than a fetch".into())),
    }
}

/// The mailbox's saved sync state, unless it belongs to another server or account (then the
/// mailbox starts afresh, with a warning through the sink).
fn saved_state(
    m: &MailboxConfig,
    bound_to: &str,
    cfg: &TenantConfig,
    sink: &mut dyn MessageSink,
    sync: &dyn SyncStateStore,
) -> Result<Option<Vec<u8>>, HostError> {
    Ok(match sync.load(&cfg.tenant, &m.name)? {
        Some(saved) => match saved.binding {
            Some(was) if was != bound_to => {
                let policy = match m.first_sync {
                    FirstSync::All => "all messages on the server are fetched (the store skips those it already holds)",
                    FirstSync::NewOnly => "only mail arriving from now on is fetched",
                    FirstSync::Newest(_) => "the newest messages are fetched as configured by first_sync",
                };
                let richtlinie = match m.first_sync {
                    FirstSync::All => "alle Nachrichten auf dem Server werden abgerufen (bereits gespeicherte werden übersprungen)",
                    FirstSync::NewOnly => "nur ab jetzt eintreffende Mail wird abgerufen",
                    FirstSync::Newest(_) => "die neuesten Nachrichten werden gemäß first_sync abgerufen",
                };
                sink.warning(
                    &format!(
                        "the mailbox's server or account changed (was {was}, now {bound_to}), so what was fetched from the old one says nothing about the new one: this mailbox starts afresh and {policy}"
                    ),
                    &format!(
                        "Server oder Konto des Postfachs wurden geändert (vorher {was}, jetzt {bound_to}); der Abrufstand des alten Servers gilt nicht für den neuen: das Postfach beginnt neu, {richtlinie}"
                    ),
                );
                None
            }
            _ => Some(saved.state),
        },
        None => None,
    })
}

/// The server a mailbox's sync state belongs to.
pub fn sync_binding(m: &MailboxConfig) -> String {
    let protocol = match m.protocol {
        Protocol::Pop3 => "pop3",
        Protocol::Imap => "imap",
    };
    crate::store::binding(protocol, &m.server.host, m.server.port, &m.server.username)
}

/// Passes everything to the caller's sink and saves the guest's state after each `stored`.
pub(super) struct SavingSink<'a, 'b> {
    pub(super) inner: &'a mut dyn MessageSink,
    pub(super) sync: &'b dyn SyncStateStore,
    pub(super) tenant: &'b str,
    pub(super) mailbox: &'b str,
    pub(super) binding: &'b str,
    pub(super) saved: Option<Vec<u8>>,
}

impl MessageSink for SavingSink<'_, '_> {
    fn deliver(&mut self, message: crate::engine::FetchedMessage) -> Result<(), HostError> {
        self.inner.deliver(message)
    }
    fn skipped(&mut self, notice: crate::engine::SkippedMessage) -> Result<(), HostError> {
        self.inner.skipped(notice)
    }
    fn commit(&mut self) -> Result<(), HostError> {
        self.inner.commit()
    }
    fn progress(&mut self, report: crate::engine::StepReport) {
        self.inner.progress(report)
    }
    fn source(&mut self, server: &str) {
        self.inner.source(server)
    }
    fn warning(&mut self, en: &str, de: &str) {
        self.inner.warning(en, de)
    }
    fn wants_stored_state(&self) -> bool {
        true
    }
    /// Called after the messages it covers were committed by `commit`: never before them.
    fn stored_state(&mut self, state: Option<Vec<u8>>) -> Result<(), HostError> {
        if let Some(st) = state {
            self.sync.save(self.tenant, self.mailbox, self.binding, &st)?;
            self.saved = Some(st);
        }
        Ok(())
    }
}
