//! The mailbox actors: one task per mailbox, under the service's and the tenant's concurrency
//! caps, each fetching, then waiting (a poll interval with jitter, a back-off, or a fix), until
//! its tenant's token is cancelled (the file changed or was removed, or the service stops).
//!
//! The token is looked at between guest calls only: at each delivery (`StopSink`), so a fetch
//! in progress ends after the commit it is in, and while waiting. What was stored stays stored;
//! the sync state covers exactly the committed messages, so the next run resumes there.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::metrics::{ErrorLabels, MailboxLabels, TrapLabels};
use super::state::{now_ms, LastError, Phase};
use super::Shared;
use crate::config::TenantConfig;
use crate::driver::MessageSink;
use crate::store::postgres::Fence;
use crate::store::StoreSink;
use crate::engine::{FetchSummary, FetchedMessage, SkippedMessage, StepReport};
use crate::ops::{IdleHandle, IdleOutcome, Wake};
use crate::error::{HostError, Retry};

/// Exponential back-off for errors the guest advises to retry later: `base`, doubled per
/// failed attempt in a row, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    /// 30 s doubling, capped at 30 minutes.
    fn default() -> Self {
        Backoff { base: Duration::from_secs(30), max: Duration::from_secs(30 * 60) }
    }
}

impl Backoff {
    /// The wait after `attempt` failures in a row (the first failure is attempt 0).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.checked_mul(factor).unwrap_or(self.max).min(self.max)
    }
}

/// `d` moved by up to ±10%, `r` a random number: mailboxes polled at the same interval spread
/// out instead of all connecting at once.
pub fn jitter(d: Duration, r: u32) -> Duration {
    // 0.9 + 0.2 * r / u32::MAX
    let permille = 900 + (u64::from(r) * 200 / u64::from(u32::MAX));
    Duration::from_millis((d.as_millis() as u64).saturating_mul(permille) / 1000)
}

/// A random number from the system's generator (for jitter only).
pub fn random_u32() -> u32 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 4];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    u32::from_le_bytes(b)
}

/// The kind of a mailbox's last error: the WIT's kind, "trap" for a guest trap, or "host".
pub fn error_kind(e: &HostError) -> &'static str {
    match (e, e.kind()) {
        (HostError::Trap(_), _) => "trap",
        (_, Some(k)) => k.as_str(),
        (_, None) => "host",
    }
}

/// The guest's retry advice, except for the host's own passing shortage: every instance of the
/// pool in use is worth another try later, not an admin's fix.
pub fn advice(e: &HostError) -> Retry {
    match e {
        HostError::PoolFull(_) => Retry::Later,
        other => other.retry(),
    }
}

/// What the actor does after one step.
pub(super) enum Flow {
    Continue,
    Stop,
}

/// One guest run of a mailbox actor.
pub(super) enum Op {
    /// `ops::fetch`: poll once.
    Fetch,
    /// `ops::fetch_and_idle`: fetch, then leave the connection idling if the server can.
    FetchAndIdle,
    /// `IdleHandle::resume` with what ended the wait.
    Resume(IdleHandle, Wake),
}

/// What a guest run left.
pub(super) enum Ran {
    /// The session ended.
    Done(FetchSummary),
    /// The server idles on the connection (no instance, no slot held).
    Idling(IdleHandle),
}

/// One mailbox's actor.
pub struct MailboxActor {
    pub shared: Arc<Shared>,
    pub cfg: Arc<TenantConfig>,
    pub mailbox: String,
    pub cancel: CancellationToken,
    pub tenant_slots: Arc<Semaphore>,
    /// With leases: the mailbox's lease, which every write carries (`Store::fenced`); its
    /// loss (a write refused) cancels `cancel` at once.
    pub fence: Option<Fence>,
}

impl MailboxActor {
    /// Runs until the token is cancelled.
    pub async fn run(self) {
        let tenant = self.cfg.tenant.clone();
        let span = tracing::info_span!("mailbox", tenant = %tenant, mailbox = %self.mailbox);
        tracing::Instrument::instrument(self.run_inner(), span).await;
    }

    async fn run_inner(&self) {
        info!(idle = self.idles(), "mailbox actor started");
        let mut failures = 0u32;
        loop {
            if self.cancel.is_cancelled() {
                break;
            }
            let flow = if self.idles() { self.fetch_then_idle(&mut failures).await } else { self.fetch_then_wait(&mut failures).await };
            if let Flow::Stop = flow {
                break;
            }
        }
        info!("mailbox actor stopped");
    }

    /// The mailbox's poll interval.
    pub(super) fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.cfg.mailbox(&self.mailbox).map(|m| m.poll_interval_secs).unwrap_or(60).into())
    }

    /// One fetch, then the wait that follows it: the poll interval with jitter after a success,
    /// the back-off or the wait for a fix after an error. (IMAP mailboxes that idle use
    /// `fetch_then_idle` instead: service/idle.rs.)
    async fn fetch_then_wait(&self, failures: &mut u32) -> Flow {
        // Not raced with the token: a fetch ends at its next delivery once the token is
        // cancelled (`StopSink`), after the commit it is in.
        match self.fetch_once(Op::Fetch).await {
            Ok(_) => {
                *failures = 0;
                self.wait_poll_interval().await
            }
            Err(_) if self.cancel.is_cancelled() => Flow::Stop,
            Err(e) => self.after_error(e, failures).await,
        }
    }

    /// The poll interval with jitter, in the state `waiting`.
    pub(super) async fn wait_poll_interval(&self) -> Flow {
        let wait = jitter(self.poll_interval(), random_u32());
        self.set_phase(Phase::Waiting { next_poll_ms: now_ms() + wait.as_millis() as i64 });
        self.sleep(wait).await
    }

    /// After a failed run (already recorded): the back-off, or the wait for a fix.
    pub(super) async fn after_error(&self, e: HostError, failures: &mut u32) -> Flow {
        match advice(&e) {
            Retry::FixFirst => {
                warn!(error = %one_line(&e), "fetch failed; waiting for the tenant's configuration to change");
                self.set_phase(Phase::WaitingForFix);
                self.cancel.cancelled().await;
                Flow::Stop
            }
            Retry::Later | Retry::Uncertain => {
                let wait = self.shared.options.backoff.delay(*failures);
                warn!(error = %one_line(&e), retry_in_secs = wait.as_secs(), "fetch failed; backing off");
                self.set_phase(Phase::BackingOff { until_ms: now_ms() + wait.as_millis() as i64, attempt: *failures });
                *failures = failures.saturating_add(1);
                self.sleep(wait).await
            }
        }
    }

    async fn sleep(&self, d: Duration) -> Flow {
        tokio::select! {
            _ = tokio::time::sleep(d) => Flow::Continue,
            _ = self.cancel.cancelled() => Flow::Stop,
        }
    }

    pub(super) fn set_phase(&self, phase: Phase) {
        self.shared.board.mailbox(&self.cfg.tenant, &self.mailbox, |m| m.phase = phase);
    }

    /// One guest run under both concurrency caps, recorded on the board and in the metrics.
    /// An error is returned after it was recorded (with the guest's explanation).
    ///
    /// A resumed idle session waits for its slots even when the token is cancelled meanwhile,
    /// and is then resumed with `Wake::Stop`: the server gets DONE and LOGOUT, not a dropped
    /// connection.
    pub(super) async fn fetch_once(&self, op: Op) -> Result<Ran, HostError> {
        let closed = || HostError::Plugin("the service is stopping".into());
        let slots = async {
            // The tenant's first: a mailbox waiting for its tenant holds no global slot.
            let tenant = self.tenant_slots.clone().acquire_owned().await.ok()?;
            let global = self.shared.slots.clone().acquire_owned().await.ok()?;
            Some((tenant, global))
        };
        let _slots = if let Op::Resume(..) = op {
            slots.await.ok_or_else(closed)?
        } else {
            tokio::select! {
                s = slots => s.ok_or_else(closed)?,
                _ = self.cancel.cancelled() => return Err(closed()),
            }
        };
        let op = match op {
            Op::Resume(h, _) if self.cancel.is_cancelled() => Op::Resume(h, Wake::Stop),
            other => other,
        };
        let first = self.shared.board.read(|b| {
            b.tenants.get(&self.cfg.tenant).and_then(|t| t.mailboxes.get(&self.mailbox)).is_none_or(|m| m.last_success_ms.is_none())
        });
        self.set_phase(if first { Phase::Connecting } else { Phase::Polling });
        let result = self.fetch_into_store(op).await;
        if let (Err((e, _)), Some(leases)) = (&result, &self.shared.leases) {
            // A refused commit: the lease is gone, the session ended before `stored`, so the
            // guest changed nothing on the server; the new owner fetches it again.
            if leases.lost_by(e) {
                warn!(error = %one_line(e), "the mailbox's lease was lost; another node serves it now");
            }
        }
        let (Ok((_, (stored, _))) | Err((_, (stored, _)))) = &result;
        if *stored > 0 {
            // Their events are committed: the tenant's SSE streams look now (an error only says
            // that no stream is open).
            let _ = self.shared.events_written.send(self.cfg.tenant.clone());
        }
        let labels = MailboxLabels { tenant: self.cfg.tenant.clone(), mailbox: self.mailbox.clone() };
        match result {
            Ok((ran, (stored, bytes))) => {
                let now = now_ms();
                self.shared.metrics.fetched.get_or_create(&labels).inc_by(stored);
                self.shared.metrics.bytes.get_or_create(&labels).inc_by(bytes);
                self.shared.metrics.last_success.get_or_create(&labels).set(now / 1000);
                if stored > 0 {
                    info!(stored, bytes, "new messages stored");
                }
                self.shared.board.mailbox(&self.cfg.tenant, &self.mailbox, |m| {
                    m.runs += 1;
                    m.fetched += stored;
                    m.bytes += bytes;
                    m.last_success_ms = Some(now);
                    m.last_error = None;
                });
                Ok(ran)
            }
            Err((e, _)) if self.cancel.is_cancelled() => Err(e),
            Err((e, (stored, bytes))) => {
                let kind = error_kind(&e).to_string();
                if let HostError::Trap(t) = &e {
                    let labels = TrapLabels { tenant: self.cfg.tenant.clone(), kind: t.as_str().into() };
                    self.shared.metrics.traps.get_or_create(&labels).inc();
                }
                self.shared
                    .metrics
                    .errors
                    .get_or_create(&ErrorLabels { tenant: self.cfg.tenant.clone(), mailbox: self.mailbox.clone(), kind: kind.clone() })
                    .inc();
                self.shared.metrics.fetched.get_or_create(&labels).inc_by(stored);
                self.shared.metrics.bytes.get_or_create(&labels).inc_by(bytes);
                let (en, de) = self.shared.explain(&self.cfg, &e).await;
                let last = LastError {
                    error: one_line(&e),
                    kind,
                    retry: advice(&e).as_str().to_string(),
                    explanation_en: en,
                    explanation_de: de,
                    at_ms: now_ms(),
                };
                self.shared.board.mailbox(&self.cfg.tenant, &self.mailbox, |m| {
                    m.runs += 1;
                    m.errors += 1;
                    m.fetched += stored;
                    m.bytes += bytes;
                    m.last_error = Some(last);
                });
                Err(e)
            }
        }
    }

    /// The run into the service's store; (messages newly stored, their bytes), also when it
    /// failed after storing some.
    #[allow(clippy::type_complexity)]
    async fn fetch_into_store(&self, op: Op) -> Result<(Ran, (u64, u64)), (HostError, (u64, u64))> {
        let db = self.shared.store.open().map_err(|e| (e, (0, 0)))?;
        let db = match &self.fence {
            Some(f) => db.fenced(f.clone()),
            None => db,
        };
        // A stopping session (DONE, LOGOUT) stores what the server announced before it: its
        // sink is not stopped by the token.
        let token = if let Op::Resume(_, Wake::Stop) = op { CancellationToken::new() } else { self.cancel.clone() };
        let mut sink = StopSink { inner: db.sink(&self.cfg.tenant, &self.mailbox), cancel: token };
        let (plugin, cfg, mailbox) = (&self.shared.plugin, &*self.cfg, self.mailbox.as_str());
        let idled = |o: IdleOutcome| match o {
            IdleOutcome::Idling(h) => Ran::Idling(h),
            IdleOutcome::Done(s) => Ran::Done(s),
        };
        let result = match op {
            Op::Fetch => crate::ops::fetch(plugin, cfg, mailbox, &mut sink, &db).await.map(Ran::Done),
            Op::FetchAndIdle => crate::ops::fetch_and_idle(plugin, cfg, mailbox, &mut sink, &db).await.map(idled),
            Op::Resume(h, wake) => h.resume(plugin, cfg, wake, &mut sink, &db).await.map(idled),
        };
        let st = sink.inner.stats();
        // Dropping an SQLite sink commits complete deliveries after the last commit (a
        // PostgreSQL sink drops them: never acknowledged, they are fetched again).
        drop(sink);
        let counts = (u64::from(st.stored), st.bytes);
        result.map(|r| (r, counts)).map_err(|e| (e, counts))
    }
}

/// The error on one line (the API, the logs).
pub fn one_line(e: &HostError) -> String {
    e.to_string().replace('\n', " ")
}

/// The store's sink, which ends the session at the next delivery once the token is cancelled:
/// everything committed stays, the rest is fetched again by the next run.
struct StopSink<'a> {
    inner: StoreSink<'a>,
    cancel: CancellationToken,
}

impl MessageSink for StopSink<'_> {
    fn deliver(&mut self, message: FetchedMessage) -> Result<(), HostError> {
        if self.cancel.is_cancelled() {
            return Err(HostError::Plugin("the service is stopping this mailbox; the next run fetches the rest".into()));
        }
        self.inner.deliver(message)
    }
    fn skipped(&mut self, notice: SkippedMessage) -> Result<(), HostError> {
        warn!(id = %notice.id, size = notice.size, reason = %notice.reason, "message skipped");
        self.inner.skipped(notice)
    }
    fn commit(&mut self) -> Result<(), HostError> {
        self.inner.commit()
    }
    fn progress(&mut self, report: StepReport) {
        self.inner.progress(report)
    }
    fn source(&mut self, server: &str) {
        self.inner.source(server)
    }
    fn warning(&mut self, en: &str, _de: &str) {
        warn!(warning = %en, "fetch warning");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Trap;

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap() {
        let b = Backoff::default();
        let secs: Vec<u64> = (0..8).map(|a| b.delay(a).as_secs()).collect();
        assert_eq!(secs, [30, 60, 120, 240, 480, 960, 1800, 1800]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1800), "no overflow after many failures");
        let quick = Backoff { base: Duration::from_secs(1), max: Duration::from_secs(4) };
        assert_eq!((0..4).map(|a| quick.delay(a).as_secs()).collect::<Vec<_>>(), [1, 2, 4, 4]);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let d = Duration::from_secs(60);
        assert_eq!(jitter(d, 0), Duration::from_secs(54));
        assert_eq!(jitter(d, u32::MAX), Duration::from_secs(66));
        let mid = jitter(d, u32::MAX / 2);
        assert!(mid >= Duration::from_millis(59_900) && mid <= Duration::from_secs(60), "{mid:?}");
        for _ in 0..1000 {
            let j = jitter(d, random_u32());
            assert!(j >= Duration::from_secs(54) && j <= Duration::from_secs(66), "{j:?}");
        }
        let spread: std::collections::HashSet<u128> = (0..50).map(|_| jitter(d, random_u32()).as_millis()).collect();
        assert!(spread.len() > 10, "random, not constant: {spread:?}");
    }

    #[test]
    fn traps_are_told_apart_from_other_errors() {
        let e = HostError::Trap(Trap::Memory { limit_bytes: 16 << 20 });
        assert_eq!(error_kind(&e), "trap");
        assert_eq!(error_kind(&HostError::Trap(Trap::Cpu)), "trap");
        // The wording alone no longer makes a trap.
        assert_eq!(error_kind(&HostError::Plugin(Trap::Cpu.to_string())), "host");
        assert_eq!(error_kind(&HostError::Storage("disk full".into())), "host");
        assert_eq!(error_kind(&HostError::Network { server: "s:1".into(), message: "reset".into() }), "network");
        assert_eq!(advice(&e), Retry::FixFirst, "a limit is the admin's to raise");
        assert_eq!(advice(&HostError::PoolFull(20)), Retry::Later, "a full pool frees up by itself");
        assert_eq!(advice(&HostError::Plugin(HostError::PoolFull(20).to_string())), Retry::FixFirst);
        assert_eq!(advice(&HostError::Storage("locked".into())), Retry::Later);
    }
}
