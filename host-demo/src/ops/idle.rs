//! IMAP IDLE without a live instance: an idling mailbox costs its connection (the TLS stream)
//! and a few hundred bytes of saved state, not a guest instance.
//!
//! `fetch_and_idle` fetches like `fetch`, asking the session to idle: when the server offers
//! IDLE (RFC 2177) the guest hands over an idle state (`action::idle`), the sync state is
//! saved, the instance is dropped (its pool slot returns) and an `IdleHandle` keeps the
//! connection. `IdleHandle::wait` waits for bytes from the server, the re-IDLE timer
//! (`limits.idle_renew_secs`) or a stop request, whichever comes first: the renew timer bounds
//! it. `IdleHandle::resume` then takes a fresh instance, continues the session with
//! `inbound.resume` and feeds what ended the wait; the guest ends IDLE, fetches what the server
//! announced (stored before anything changes on the server, the sync state saved after each
//! `stored`, as in `fetch`) and idles again (`IdleOutcome::Idling`) or ends
//! (`IdleOutcome::Done`). `max_session_secs` bounds each resumed run, not the wait.
//!
//! No protocol verb here: the host only reads bytes, and waits for a timer.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rustls::ClientConfig;
/// The stop request `IdleHandle::wait` listens for (tokio-util's; a service's tokens are
/// children of its shutdown token).
pub use tokio_util::sync::CancellationToken;

use super::inbound::{run, Ran, SavingSink};
use super::{allowed_servers, instance_for, options_with_tls};
use crate::config::TenantConfig;
use crate::driver::{drive_resumed, now_ms, MessageSink, Parked};
use crate::engine::{Event, FetchSummary, GuestMailbox, Idling, Outcome, Plugin};
use crate::error::HostError;
use crate::net::{tls_config, Conn};
use crate::store::SyncStateStore;

/// Bytes read from an idling connection at once; more stays in the socket (or rustls) for the
/// resumed session.
const WAIT_READ: usize = 512;

/// What a fetch (or a resumed run) left behind.
pub enum IdleOutcome {
    /// The server idles: the connection and the states wait in the handle, no instance lives.
    Idling(IdleHandle),
    /// The session ended (no IDLE on the server, a batch limit left mail for the next run, a
    /// stop, or a POP3 mailbox): what it did.
    Done(FetchSummary),
}

/// What ended an idle wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The server sent something (or closed the connection).
    Readable,
    /// The re-IDLE timer fired (`limits.idle_renew_secs`).
    Renew,
    /// The caller cancelled the wait: the resumed session ends IDLE and logs out.
    Stop,
}

/// An idling mailbox: its open connection, the guest's idle and sync state, the re-IDLE
/// deadline. Holds no instance. Dropping it closes the connection without a LOGOUT: to end
/// politely, `resume` with `Wake::Stop`. Only the first folder is watched; the mailbox's other
/// folders are fetched by `fetch_and_idle` (a caller polls them by stopping and running it
/// again, or with `fetch` on another connection).
pub struct IdleHandle {
    mailbox: String,
    binding: String,
    conn: Conn,
    /// The mailbox as the session was opened with it (`inbound.resume` takes the same one).
    guest: GuestMailbox,
    idle_state: Vec<u8>,
    sync_state: Vec<u8>,
    summary: FetchSummary,
    renew_at: tokio::time::Instant,
    /// Bytes `wait` read, handed to the resumed session first.
    pending: Vec<u8>,
    /// The server closed the connection (or reading failed) while idling.
    closed: bool,
}

/// Fetches new mail of one mailbox like `fetch` and, when the server offers IDLE, leaves the
/// mailbox idling: `IdleOutcome::Idling` with no instance alive. A POP3 mailbox, or IMAP
/// without IDLE, ends as `fetch` does (`IdleOutcome::Done`).
pub async fn fetch_and_idle(
    plugin: &Plugin,
    cfg: &TenantConfig,
    mailbox: &str,
    sink: &mut dyn MessageSink,
    sync: &dyn SyncStateStore,
) -> Result<IdleOutcome, HostError> {
    match run(plugin, cfg, mailbox, sink, sync, true).await? {
        Ran::Done(summary) => Ok(IdleOutcome::Done(summary)),
        Ran::Idle { conn, idling, mailbox: guest, binding } => {
            Ok(IdleOutcome::Idling(IdleHandle::new(cfg, mailbox, binding, conn, guest, idling)))
        }
    }
}

impl IdleHandle {
    fn new(cfg: &TenantConfig, mailbox: &str, binding: String, conn: Conn, guest: GuestMailbox, idling: Idling) -> Self {
        IdleHandle {
            mailbox: mailbox.to_string(),
            binding,
            conn,
            guest,
            idle_state: idling.idle_state,
            sync_state: idling.sync_state,
            summary: idling.summary,
            renew_at: tokio::time::Instant::now() + Duration::from_secs(cfg.limits.idle_renew_secs.into()),
            pending: Vec::new(),
            closed: false,
        }
    }

    /// The mailbox's name in the tenant configuration.
    pub fn mailbox(&self) -> &str {
        &self.mailbox
    }

    /// What the run that went idle did (fetched before idling).
    pub fn summary(&self) -> &FetchSummary {
        &self.summary
    }

    /// When the re-IDLE timer fires.
    pub fn renews_at(&self) -> tokio::time::Instant {
        self.renew_at
    }

    /// The guest's idle state (opaque; a few hundred bytes, never credentials).
    pub fn idle_state(&self) -> &[u8] {
        &self.idle_state
    }

    /// Waits until the server sends something (or closes), the re-IDLE timer fires, or
    /// `cancel` is cancelled, whichever comes first; bounded by the timer. What was read is
    /// kept for `resume`. Returns at once when something read earlier is still waiting.
    pub async fn wait(&mut self, cancel: &CancellationToken) -> Wake {
        if !self.pending.is_empty() || self.closed {
            return Wake::Readable;
        }
        let mut buf = [0u8; WAIT_READ];
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Wake::Stop,
            r = self.conn.read(&mut buf) => {
                match r {
                    Ok(0) | Err(_) => self.closed = true,
                    Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                }
                Wake::Readable
            }
            _ = tokio::time::sleep_until(self.renew_at) => Wake::Renew,
        }
    }

    /// Continues the session in a fresh instance with what ended the wait: the server's bytes
    /// (or its closing the connection), the re-IDLE timer, or a stop. Mail the server announced
    /// is fetched and stored (the sync state saved after each `stored`, as in `fetch`); then
    /// the mailbox idles again or the session ends. A BYE or a closed connection while idling
    /// is the guest's `network` error with retry advice `later`: connect again with
    /// `fetch_and_idle`. Any error closes the connection (also when no instance can be made,
    /// the pool being full): the caller connects again later. The instance is dropped before
    /// this returns.
    pub async fn resume(
        mut self,
        plugin: &Plugin,
        cfg: &TenantConfig,
        wake: Wake,
        sink: &mut dyn MessageSink,
        sync: &dyn SyncStateStore,
    ) -> Result<IdleOutcome, HostError> {
        let mut first = Vec::new();
        match wake {
            // Stop first: bytes read before it were sent before our DONE, and are read after it.
            Wake::Stop => first.push(Event::Stop),
            Wake::Renew if self.pending.is_empty() && !self.closed => first.push(Event::Timer),
            Wake::Readable | Wake::Renew => {}
        }
        if !self.pending.is_empty() {
            first.push(Event::Received(std::mem::take(&mut self.pending)));
        }
        if self.closed {
            first.push(Event::Closed);
        }
        let tls = shared_tls(cfg)?;
        let allowed = allowed_servers(cfg);
        let opts = options_with_tls(cfg, &allowed, tls);
        let mut instance = instance_for(plugin, cfg).await?;
        let session = match instance.resume_inbound(&self.guest, &self.sync_state, &self.idle_state, now_ms()).await {
            Ok(s) => s,
            Err(e) => {
                self.conn.close().await;
                return Err(e);
            }
        };
        sink.source(&self.binding);
        let mut saving = SavingSink {
            inner: &mut *sink,
            sync,
            tenant: &cfg.tenant,
            mailbox: &self.mailbox,
            binding: &self.binding,
            saved: None,
        };
        let outcome = drive_resumed(&mut instance, session, self.conn, first, &opts, &mut saving).await;
        match outcome {
            Ok(Parked::Idle { conn, idling, wrote }) => {
                let saved = sync.save(&cfg.tenant, &self.mailbox, &self.binding, &idling.sync_state);
                instance.drop_session(session).await;
                drop(instance);
                if let Err(e) = saved {
                    let mut conn = conn;
                    conn.close().await;
                    return Err(e);
                }
                let renew_at = self.renew_at;
                let mut next = IdleHandle::new(cfg, &self.mailbox, self.binding, conn, self.guest, idling);
                // Only read (noise while idling, nothing written): IDLE was not re-issued, so the
                // re-IDLE timer keeps its deadline.
                if !wrote {
                    next.renew_at = renew_at;
                }
                Ok(IdleOutcome::Idling(next))
            }
            other => {
                // As `fetch`: the committed state on every outcome; after a trap, what was saved
                // after the last `stored` stands.
                let last = match instance.sync_state(session).await {
                    Ok(Some(st)) => sync.save(&cfg.tenant, &self.mailbox, &self.binding, &st),
                    Ok(None) => Ok(()),
                    Err(_) if other.is_err() => Ok(()),
                    Err(e) => Err(e),
                };
                instance.drop_session(session).await;
                match other? {
                    Parked::Finished(Outcome::Fetched(summary)) => {
                        last?;
                        Ok(IdleOutcome::Done(summary))
                    }
                    _ => Err(HostError::Plugin("the component reported another outcome than a fetch".into())),
                }
            }
        }
    }
}

/// One TLS client configuration per extra CA file (and its content), shared by every idling
/// connection: each connection keeps its configuration alive, and the system roots alone are
/// hundreds of kilobytes, too much to hold once per idling mailbox (and to parse again at
/// every wake-up).
pub(super) fn shared_tls(cfg: &TenantConfig) -> Result<Arc<ClientConfig>, HostError> {
    shared_tls_for(cfg.extra_ca_file.as_deref())
}

fn shared_tls_for(extra_ca: Option<&std::path::Path>) -> Result<Arc<ClientConfig>, HostError> {
    type Cache = Mutex<HashMap<Option<PathBuf>, (Vec<u8>, Arc<ClientConfig>)>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let path = extra_ca.map(PathBuf::from);
    let digest = match &path {
        Some(p) => {
            let bytes = std::fs::read(p)
                .map_err(|e| HostError::NotFound(format!("cannot read extra_ca_file {}: {e}", p.display())))?;
            ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref().to_vec()
        }
        None => Vec::new(),
    };
    let cache = CACHE.get_or_init(Default::default);
    if let Some((d, tls)) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&path) {
        if *d == digest {
            return Ok(tls.clone());
        }
    }
    let tls = tls_config(path.as_deref())?;
    cache.lock().unwrap_or_else(|p| p.into_inner()).insert(path, (digest, tls.clone()));
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{
        BasicCredentials, Credentials, GuestAfterFetch, GuestFirstSync, GuestLimits, GuestProtocol, GuestSecurity, GuestServer,
    };
    use tokio::io::AsyncWriteExt;

    /// A handle on a plain TCP connection to a listener of the test's (the server side).
    async fn handle(renew: Duration) -> (IdleHandle, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let conn = Conn::connect("127.0.0.1", port, false, shared_tls_for(None).unwrap(), Duration::from_secs(5)).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let guest = GuestMailbox {
            protocol: GuestProtocol::Imap,
            server: GuestServer { host: "127.0.0.1".into(), port, security: GuestSecurity::InsecurePlaintext },
            credentials: Credentials::Basic(BasicCredentials { username: "u".into(), password: "p".into() }),
            folders: vec![],
            limits: GuestLimits { max_line_bytes: 1000, max_message_bytes: 1 << 20, max_batch_messages: 1, max_batch_bytes: 1 << 20, reply_timeout_ms: 1000 },
            after_fetch: GuestAfterFetch::Keep,
            first_sync: GuestFirstSync::All,
            idle: true,
        };
        let h = IdleHandle {
            mailbox: "inbox".into(),
            binding: "imap:test".into(),
            conn,
            guest,
            idle_state: Vec::new(),
            sync_state: Vec::new(),
            summary: FetchSummary { delivered: 0, remaining: 0, skipped: 0 },
            renew_at: tokio::time::Instant::now() + renew,
            pending: Vec::new(),
            closed: false,
        };
        (h, server)
    }

    #[tokio::test]
    async fn the_wait_ends_with_bytes_a_close_the_renew_timer_or_a_stop() {
        let cancel = CancellationToken::new();
        let bounded = |d| Duration::from_secs(d);

        // Nothing comes: the renew timer ends the wait, not earlier.
        let (mut h, _server) = handle(Duration::from_millis(300)).await;
        let started = std::time::Instant::now();
        assert_eq!(tokio::time::timeout(bounded(5), h.wait(&cancel)).await.unwrap(), Wake::Renew);
        assert!(started.elapsed() >= Duration::from_millis(290), "{:?}", started.elapsed());

        // Bytes: kept for the resumed session; a second wait returns at once.
        let (mut h, mut server) = handle(bounded(60)).await;
        server.write_all(b"* 3 EXISTS\r\n").await.unwrap();
        assert_eq!(tokio::time::timeout(bounded(5), h.wait(&cancel)).await.unwrap(), Wake::Readable);
        assert_eq!(h.pending, b"* 3 EXISTS\r\n");
        assert_eq!(tokio::time::timeout(bounded(1), h.wait(&cancel)).await.unwrap(), Wake::Readable);

        // The server closes: readable, and the handle knows.
        let (mut h, server) = handle(bounded(60)).await;
        drop(server);
        assert_eq!(tokio::time::timeout(bounded(5), h.wait(&cancel)).await.unwrap(), Wake::Readable);
        assert!(h.closed && h.pending.is_empty());

        // A stop request ends it at once.
        let (mut h, _server) = handle(bounded(60)).await;
        let stop = CancellationToken::new();
        stop.cancel();
        assert_eq!(tokio::time::timeout(bounded(1), h.wait(&stop)).await.unwrap(), Wake::Stop);
    }

    /// A service keeps handles in tasks of their own and waits on many at once.
    #[tokio::test]
    async fn a_handle_and_its_wait_can_move_between_threads() {
        fn send<T: Send>(_: &T) {}
        let (mut h, _server) = handle(Duration::from_millis(10)).await;
        send(&h);
        let cancel = CancellationToken::new();
        let wait = h.wait(&cancel);
        send(&wait);
        assert_eq!(wait.await, Wake::Renew);
    }

    #[test]
    fn one_tls_configuration_is_shared_per_extra_ca_file() {
        let a = shared_tls_for(None).unwrap();
        let b = shared_tls_for(None).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let e = shared_tls_for(Some(std::path::Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(e.to_string().contains("extra_ca_file"), "{e}");
    }
}
