//! IMAP IDLE in the mailbox actor: an IMAP mailbox (with `idle`, the default) is fetched with
//! `ops::fetch_and_idle`. When the server idles, the actor holds only the `IdleHandle` (the
//! connection and a few hundred bytes of state): no instance and no concurrency slot, since the
//! caps bound guest work, not idle connections. It waits with `IdleHandle::wait` (the server's
//! bytes, the re-IDLE timer, or the tenant's token), then takes its slots and `resume`s: the
//! guest fetches what the server announced and idles again. The state is `idling` while the
//! connection idles and `mailplug_idle_connections` counts those connections.
//!
//! - No IDLE on the server (`IdleOutcome::Done`): polling at the mailbox's interval, as for
//!   POP3; the next run asks to idle again.
//! - Other folders than the first: when the mailbox has more than one folder, the idle session
//!   is ended (DONE, LOGOUT) once per poll interval and the whole mailbox fetched again (every
//!   folder), after which the first folder idles again. With one folder the connection idles
//!   until the re-IDLE timer, which renews IDLE on the same connection.
//! - Errors while idling (BYE, a dropped connection: `network`, retry later; a full pool on
//!   resume, which closes the connection) back off and reconnect as other errors do.
//! - Stopping (SIGTERM, the tenant file changed or was removed): the wait ends with
//!   `Wake::Stop`; the resumed session stores what the server had announced, ends IDLE and logs
//!   out, within the service's grace period.

use prometheus_client::metrics::gauge::Gauge;
use tokio::time::Instant;

use super::scheduler::{jitter, random_u32, Flow, MailboxActor, Op, Ran};
use super::state::{now_ms, Phase};
use crate::config::Protocol;
use crate::ops::Wake;

/// One idling connection counted in `mailplug_idle_connections` while it lives.
struct Counted(Gauge);

impl Counted {
    fn new(g: &Gauge) -> Counted {
        g.inc();
        Counted(g.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl MailboxActor {
    /// Whether this mailbox idles between fetches: IMAP, `idle` not turned off.
    pub(super) fn idles(&self) -> bool {
        self.cfg.mailbox(&self.mailbox).is_some_and(|m| m.protocol == Protocol::Imap && m.idle)
    }

    /// A fetch that idles, then as long as the server idles: wait, resume, idle again. Returns
    /// when the session ended (to poll or back off), or when the token was cancelled.
    pub(super) async fn fetch_then_idle(&self, failures: &mut u32) -> Flow {
        let several_folders = self.cfg.mailbox(&self.mailbox).is_some_and(|m| m.folders.len() > 1);
        let poll_at = Instant::now() + jitter(self.poll_interval(), random_u32());
        let mut counted: Option<Counted> = None;
        let mut since = None;
        let mut op = Op::FetchAndIdle;
        loop {
            let stopping = matches!(op, Op::Resume(_, Wake::Stop));
            let ran = self.fetch_once(op).await;
            if !matches!(ran, Ok(Ran::Idling(_))) {
                counted = None;
            }
            match ran {
                Ok(Ran::Idling(mut handle)) => {
                    *failures = 0;
                    counted.get_or_insert_with(|| Counted::new(&self.shared.metrics.idle_connections));
                    let since_ms = *since.get_or_insert_with(now_ms);
                    self.set_phase(Phase::Idling { since_ms });
                    let wake = if several_folders {
                        tokio::select! {
                            w = handle.wait(&self.cancel) => w,
                            // Time to fetch the other folders: end this session, fetch again.
                            _ = tokio::time::sleep_until(poll_at) => Wake::Stop,
                        }
                    } else {
                        handle.wait(&self.cancel).await
                    };
                    op = Op::Resume(handle, wake);
                }
                Ok(Ran::Done(summary)) => {
                    *failures = 0;
                    drop(counted);
                    if self.cancel.is_cancelled() {
                        return Flow::Stop;
                    }
                    // Ended for the poll timer (the other folders), or with mail left over
                    // after a batch limit: fetch again now.
                    if stopping || summary.remaining > 0 {
                        return Flow::Continue;
                    }
                    // The server has no IDLE: poll.
                    return self.wait_poll_interval().await;
                }
                Err(_) if self.cancel.is_cancelled() => return Flow::Stop,
                Err(e) => {
                    drop(counted);
                    return self.after_error(e, failures).await;
                }
            }
        }
    }
}
