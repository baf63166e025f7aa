//! The durable outbox's two ends: `enqueue` composes a message in the guest and commits it
//! (accepted means committed), `drain` is one pass of a queue's sender.
//!
//! A drain holds the queue's sender lock (an exclusive `flock` on a file beside the database,
//! released by the kernel when the process dies), so two senders never take the same rows. It
//! first turns rows left `in-flight` by a sender that stopped into `held` (`Outbox::recover`:
//! never resent silently), then takes the due rows in order and submits them over one batch
//! session (`ops::send_composed_batch`) with the bytes fixed at enqueue. Its `BatchJournal` records
//! each commit point durably before the write that carries that message's final dot, and each
//! outcome as soon as the guest knows it:
//! - delivered -> `delivered` (then the copy in the Sent folder, as `send` does for replies);
//! - transient or not sent -> `queued` again after 1, 2, 4 ... minutes (capped), until the
//!   row's max age, then `failed`;
//! - permanent -> `failed`;
//! - uncertain -> `held`.
//!
//! Every row not delivered gets the guest's explanation (`check.explain`, English and German).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::config::TenantConfig;
use crate::driver::now_ms;
use crate::engine::{ComposedMessage, Delivery, Draft, Plugin, Stage};
use crate::error::HostError;
use crate::store::{Explanation, NewOutbound, Outbox, OutboxRow, OutboxState, RecordedOutcome, SyncStateStore};

use super::{check_licence, compose_reply_to, memory_cap, queue, queue_from, save_sent_copy, BatchJournal, MessageOutcome, Outgoing, Reply, SavedReply};

/// How long a message may keep failing transiently before it is `failed`: 5 days, as
/// Postfix's `maximal_queue_lifetime`.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(5 * 24 * 3600);

/// What to enqueue.
pub enum Compose {
    /// A new message (`mailplug send --to ... --subject ... --body ...`).
    Draft(Outgoing),
    /// A reply to a stored message (`db:17`, `mid:<...>`, `imap:...`; see `Database::find`),
    /// planned for the mailbox it arrived in; copied to that mailbox's `save_sent` folder once
    /// delivered.
    Reply { message: String, reply: Reply },
}

/// A committed outbox row and, for a reply, the sender plan it follows.
#[derive(Debug)]
pub struct Enqueued {
    pub row: OutboxRow,
    pub plan: Option<crate::engine::FromPlan>,
}

/// Composes `what` in the guest and commits it to the outbox of `queue_name` as `queued`, due
/// now. Nothing is sent here.
pub async fn enqueue<S: crate::store::MessageQuery + Outbox>(
    plugin: &Plugin,
    cfg: &TenantConfig,
    queue_name: &str,
    db: &S,
    what: &Compose,
    max_age: Duration,
) -> Result<Enqueued, HostError> {
    check_licence(cfg)?;
    let q = queue(cfg, queue_name)?;
    let mut instance = plugin.instantiate(memory_cap(cfg), cfg.limits.guest_cpu_ms_per_call).await?;
    let (composed, plan, save_copy) = match what {
        Compose::Draft(m) => {
            let draft = Draft { from: queue_from(cfg, q)?, to: m.to.clone(), subject: m.subject.clone(), text_body: m.text_body.clone(), date: now_ms() };
            (instance.compose(&draft).await?, None, None)
        }
        Compose::Reply { message, reply } => {
            let (mailbox, plan, composed) = compose_reply_to(&mut instance, cfg, q, db, message, reply).await?;
            let copy = cfg.mailbox(&mailbox).filter(|m| m.save_sent.is_some()).map(|m| m.name.clone());
            (composed, Some(plan), copy)
        }
    };
    let new = NewOutbound {
        tenant: cfg.tenant.clone(),
        queue: q.name.clone(),
        message_id: composed.message_id,
        envelope: crate::store::Envelope { from: composed.envelope_from, to: composed.envelope_to },
        raw: composed.raw,
        max_age_ms: u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX),
        save_copy,
    };
    let row = db.enqueue(&new, now_ms() as i64)?;
    Ok(Enqueued { row, plan })
}

/// How a drain sends and retries.
#[derive(Debug, Clone)]
pub struct DrainConfig {
    /// Rows per batch session (also bounded by the tenant's `max_batch_messages` and
    /// `max_batch_bytes`).
    pub batch_max: usize,
    /// The first retry's delay; each further one doubles it, up to `backoff_cap`.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// The drain runs under the queue's lease (`serve` on PostgreSQL, `Store::fenced`): the
    /// lease already excludes every other sender of the queue, and each outbox transition is
    /// refused once it is lost, so the local sender lock is not taken. Nodes on one machine
    /// (or sharing the tenant files) would otherwise wait for each other's lock file, and a
    /// stopped node's lock would keep the queue's new holder from recovering its rows.
    pub leased: bool,
}

impl Default for DrainConfig {
    fn default() -> Self {
        DrainConfig { batch_max: 100, backoff_base: Duration::from_secs(60), backoff_cap: Duration::from_secs(3600), leased: false }
    }
}

/// What became of one row in a drain.
#[derive(Debug, Clone)]
pub struct DrainedRow {
    pub id: String,
    pub message_id: String,
    /// The state recorded (the row's state before, when recording failed: see `error`).
    pub state: OutboxState,
    pub attempts: u32,
    /// When it is due again (queued).
    pub next_attempt_at_ms: Option<i64>,
    pub last_reply: Option<String>,
    /// What went wrong (English), when not delivered.
    pub error: Option<String>,
    pub explanation: Option<Explanation>,
    /// What became of the copy in the Sent folder (delivered replies).
    pub sent_copy: Option<serde_json::Value>,
    /// Recording the outcome failed: the row keeps its previous state (a row left in-flight
    /// is held by the next drain).
    pub record_error: Option<String>,
}

/// One pass of a queue's sender.
#[derive(Debug, Default)]
pub struct DrainReport {
    /// Rows left in-flight by a sender that stopped, now held.
    pub recovered: Vec<String>,
    /// The rows sent in this pass, in order.
    pub rows: Vec<DrainedRow>,
}

/// Why a row left in-flight is held.
fn stopped_sender() -> Explanation {
    Explanation {
        en: "A sender stopped (crash, kill or power cut) after handing this message's whole text to the server and before the server's answer was recorded, so it may have been delivered. Check whether the recipients got it (by its Message-ID), then resend it (same bytes, same Message-ID) or mark it delivered.".into(),
        de: "Ein Sendevorgang brach ab (Absturz, kill oder Stromausfall), nachdem der vollständige Text dieser Nachricht an den Server übergeben war und bevor dessen Antwort gespeichert wurde; sie wurde also möglicherweise zugestellt. Prüfen Sie anhand der Message-ID, ob die Empfänger sie erhalten haben, und senden Sie sie dann erneut (gleiche Bytes, gleiche Message-ID) oder markieren Sie sie als zugestellt.".into(),
    }
}

/// An error's text without its trailing line ends, spaces and full stop, to end a sentence of ours.
fn sentence_end(error: &str) -> &str {
    error.trim_end().trim_end_matches('.').trim_end()
}

/// What a row not delivered says from its outcome until the guest's explanation replaces it
/// (the guest explains after the batch). It stays if the guest cannot explain. The error text
/// is the server's, the host's or the component's, in English; the German sentence says so,
/// and both say what happens next: a queued row is retried by itself, a failed one waits for
/// the admin.
fn provisional(error: &str, state: OutboxState) -> Explanation {
    let error = sentence_end(error);
    let (next_en, next_de) = if state == OutboxState::Queued {
        ("Sending is retried automatically.", "Der Versand wird automatisch wiederholt.")
    } else {
        (
            "Check the queue's SMTP server and this message's recipients, then resend the message.",
            "Prüfen Sie den SMTP-Server der Warteschlange und die Empfänger dieser Nachricht und senden Sie die Nachricht dann erneut.",
        )
    };
    Explanation {
        en: format!("Sending failed: {error}. {next_en}"),
        de: format!("Das Senden ist fehlgeschlagen. Die Fehlermeldung (auf Englisch): {error}. {next_de}"),
    }
}

/// Why a row whose session ended between its final dot and the server's answer is held.
fn uncertain(message_id: &str) -> Explanation {
    Explanation {
        en: format!("The connection ended after the whole message was handed to the server and before the server confirmed it, so it may have been delivered. Check whether the recipients got it (Message-ID <{message_id}>), then resend it (same bytes, same Message-ID) or mark it delivered."),
        de: format!("Die Verbindung endete, nachdem die vollständige Nachricht an den Server übergeben war und bevor er sie bestätigte; sie wurde also möglicherweise zugestellt. Prüfen Sie, ob die Empfänger sie erhalten haben (Message-ID <{message_id}>), und senden Sie sie dann erneut (gleiche Bytes, gleiche Message-ID) oder markieren Sie sie als zugestellt."),
    }
}

/// The queue's sender lock: an exclusive `flock` on `<database>.outbox-<tenant>-<queue>.lock`,
/// held while the value lives and released by the kernel if the process dies.
pub struct SenderLock {
    _file: File,
    pub path: PathBuf,
}

impl SenderLock {
    /// Takes the lock, or says that another sender holds it.
    pub fn acquire(database: &Path, tenant: &str, queue: &str) -> Result<SenderLock, HostError> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let name = format!(
            "{}.outbox-{}-{}.lock",
            database.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "mailplug".into()),
            crate::store::safe_name(tenant),
            crate::store::safe_name(queue)
        );
        let path = database.with_file_name(name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| HostError::Storage(format!("cannot open the sender lock {}: {e}", path.display())))?;
        // SAFETY: a valid open descriptor; flock only takes an advisory lock on it.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(HostError::Storage(format!(
                "another sender is draining queue \"{queue}\" of tenant \"{tenant}\" right now (it holds {}); wait until it is done",
                path.display()
            )));
        }
        Ok(SenderLock { _file: file, path })
    }

    /// Takes the lock, trying again for up to `within` while another holder has it. A lock
    /// just released can stay held for a moment after its holder dropped it: a process that
    /// forks (to start any child) holds a copy of every descriptor until its child execs, and
    /// an flock belongs to the open file, not to the process that took it.
    pub async fn acquire_within(database: &Path, tenant: &str, queue: &str, within: std::time::Duration) -> Result<SenderLock, HostError> {
        let deadline = std::time::Instant::now() + within;
        loop {
            match SenderLock::acquire(database, tenant, queue) {
                Err(HostError::Storage(_)) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                other => return other,
            }
        }
    }
}

/// How long a drain waits for its queue's sender lock before it says another sender holds it.
pub const SENDER_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// One pass of the sender of `queue_name` with the default `DrainConfig`.
pub async fn drain<S: Outbox + SyncStateStore>(
    plugin: &Plugin,
    cfg: &TenantConfig,
    store: &S,
    queue_name: &str,
    now: i64,
) -> Result<DrainReport, HostError> {
    drain_with(plugin, cfg, store, queue_name, now, &DrainConfig::default()).await
}

/// One pass of the sender of `queue_name`: recover, then one batch of the rows due at `now`
/// (ms since the epoch). Err only when nothing could be attempted (licence, configuration,
/// the sender lock, the store, the component); each row's fate is in the report.
pub async fn drain_with<S: Outbox + SyncStateStore>(
    plugin: &Plugin,
    cfg: &TenantConfig,
    store: &S,
    queue_name: &str,
    now: i64,
    dc: &DrainConfig,
) -> Result<DrainReport, HostError> {
    check_licence(cfg)?;
    let q = queue(cfg, queue_name)?;
    let _lock = match dc.leased {
        true => None,
        false => Some(SenderLock::acquire_within(&cfg.database, &cfg.tenant, &q.name, SENDER_LOCK_WAIT).await?),
    };
    let mut report = DrainReport { recovered: store.recover(&cfg.tenant, &q.name, &stopped_sender(), now)?, rows: Vec::new() };
    let limit = dc.batch_max.clamp(1, cfg.limits.max_batch_messages.max(1) as usize);
    let mut rows = store.take_due(&cfg.tenant, &q.name, limit, now)?;
    // Within the batch byte limit (the first row always goes: the guest judges its size).
    let mut bytes = 0u64;
    rows.retain(|r| {
        bytes += r.size;
        bytes == r.size || bytes <= cfg.limits.max_batch_bytes
    });
    if rows.is_empty() {
        return Ok(report);
    }
    let composed: Vec<ComposedMessage> = rows
        .iter_mut()
        .map(|r| ComposedMessage {
            message_id: r.message_id.clone(),
            envelope_from: r.envelope.from.clone(),
            envelope_to: r.envelope.to.clone(),
            raw: std::mem::take(&mut r.raw),
        })
        .collect();
    let mut journal = Journal { store, rows: &rows, dc, drained: vec![None; rows.len()] };
    let outcomes = match super::send_composed_batch(plugin, cfg, &q.name, &composed, store, &mut journal).await {
        Ok(o) => o,
        Err(e) => {
            // Nothing was attempted: the rows stay queued, due now.
            return Err(e);
        }
    };
    let mut drained = journal.drained;
    // The guest's explanations, and the copies of delivered replies, with one instance.
    let mut instance = super::instance_for(plugin, cfg).await?;
    for o in &outcomes {
        let Some(d) = drained.get_mut(o.index).and_then(Option::as_mut) else { continue };
        let row = &rows[o.index];
        match &o.error {
            // A held row keeps its own explanation: the guest's advice for a lost connection
            // (try again later) is not what an uncertain message needs.
            Some(e) if d.record_error.is_none() && d.state != OutboxState::Held => {
                if let Some(diag) = crate::check::explain(&mut instance, e, Stage::Data).await {
                    // A row given up on says so before the guest's explanation.
                    let prefix = d.explanation.as_ref().filter(|_| d.state == OutboxState::Failed && o.delivery != Delivery::Permanent);
                    let explanation = Explanation {
                        en: format!("{}{} {}", prefix.map_or(String::new(), |p| format!("{} ", p.en)), diag.cause.en, diag.action.en),
                        de: format!("{}{} {}", prefix.map_or(String::new(), |p| format!("{} ", p.de)), diag.cause.de, diag.action.de),
                    };
                    if let Err(e) = store.record_explanation(&d.id, &explanation) {
                        d.record_error = Some(e.to_string());
                    }
                    d.explanation = Some(explanation);
                }
            }
            None if o.delivered() && d.state == OutboxState::Delivered => {
                if let Some(m) = row.save_copy.as_deref().and_then(|name| cfg.mailbox(name)) {
                    let saved = save_sent_copy(&mut instance, cfg, store, q, m, &composed[o.index].raw).await;
                    let copy = saved_json(&saved);
                    if let Err(e) = store.record_sent_copy(&d.id, &copy, now_ms() as i64) {
                        d.record_error = Some(e.to_string());
                    }
                    d.sent_copy = Some(copy);
                }
            }
            _ => {}
        }
    }
    report.rows = drained.into_iter().flatten().collect();
    Ok(report)
}

/// What became of a copy in the Sent folder, as recorded in the row and printed.
pub fn saved_json(s: &SavedReply) -> serde_json::Value {
    match s {
        SavedReply::Saved { folder, uid, created_folder } => json!({"saved": true, "folder": folder, "uid": uid, "created_folder": created_folder}),
        SavedReply::Skipped(why) => json!({"saved": false, "skipped": why}),
        SavedReply::Failed { en, de } => json!({"saved": false, "warning": en, "warning_de": de}),
        SavedReply::NotConfigured => json!({"saved": false, "skipped": "the mailbox has no save_sent folder"}),
    }
}

/// Records the batch's commit points and outcomes in the outbox as they happen.
struct Journal<'a, S: Outbox> {
    store: &'a S,
    rows: &'a [OutboxRow],
    dc: &'a DrainConfig,
    drained: Vec<Option<DrainedRow>>,
}

impl<S: Outbox> Journal<'_, S> {
    /// The state an outcome leads to.
    fn outcome(&self, row: &OutboxRow, o: &MessageOutcome, now: i64) -> RecordedOutcome {
        let error = o.error.as_ref().map(|e| e.to_string());
        let reply = o.final_reply.as_ref().map(|r| format!("{} {}", r.code, r.text)).or_else(|| match &o.error {
            Some(HostError::Guest(g)) => g.reply.as_ref().map(|(code, text)| format!("{code} {text}")),
            _ => None,
        });
        let plain = |state| RecordedOutcome {
            state,
            next_attempt_at_ms: now,
            last_reply: reply.clone().or_else(|| error.clone()),
            explanation: error.as_deref().map(|e| provisional(e, state)),
        };
        match o.delivery {
            Delivery::Delivered => RecordedOutcome { explanation: None, ..plain(OutboxState::Delivered) },
            Delivery::Permanent => plain(OutboxState::Failed),
            Delivery::Uncertain => RecordedOutcome { explanation: Some(uncertain(&row.message_id)), ..plain(OutboxState::Held) },
            Delivery::Transient | Delivery::NotSent => {
                let attempts = row.attempts.saturating_add(1);
                let doubling = 2u64.saturating_pow(attempts.saturating_sub(1).min(40));
                let delay = (self.dc.backoff_base.as_millis() as u64).saturating_mul(doubling).min(self.dc.backoff_cap.as_millis() as u64);
                let next = now.saturating_add(delay as i64);
                let deadline = row.created_at_ms.saturating_add(i64::try_from(row.max_age_ms).unwrap_or(i64::MAX));
                if next > deadline {
                    let hours = row.max_age_ms as f64 / 3_600_000.0;
                    // The last error is named here too: the guest's explanation follows it
                    // after the batch, and if the guest cannot explain, this is all there is.
                    let (last_en, last_de) = match error.as_deref().map(sentence_end) {
                        Some(e) => (format!(" The last error: {e}."), format!(" Die letzte Fehlermeldung (auf Englisch): {e}.")),
                        None => (String::new(), String::new()),
                    };
                    let gave_up = Explanation {
                        en: format!("Given up after {attempts} attempts: the message kept failing for longer than its maximum age ({hours:.1} h).{last_en}"),
                        de: format!("Nach {attempts} Versuchen aufgegeben: die Nachricht scheiterte länger als ihr Höchstalter ({hours:.1} h).{last_de}"),
                    };
                    RecordedOutcome { explanation: Some(gave_up), ..plain(OutboxState::Failed) }
                } else {
                    RecordedOutcome { next_attempt_at_ms: next, ..plain(OutboxState::Queued) }
                }
            }
        }
    }
}

impl<S: Outbox> BatchJournal for Journal<'_, S> {
    fn commit_point(&mut self, index: usize, _message_id: &str) -> Result<(), HostError> {
        let row = self.rows.get(index).ok_or_else(|| HostError::Plugin(format!("commit point for message {index}, which the batch does not have")))?;
        self.store.record_commit_point(&row.id, now_ms() as i64)
    }

    fn message_done(&mut self, o: &MessageOutcome) {
        let Some(row) = self.rows.get(o.index) else { return };
        let now = now_ms() as i64;
        let rec = self.outcome(row, o, now);
        let record_error = self.store.record_outcome(&row.id, &rec, now).err().map(|e| e.to_string());
        let state = if record_error.is_some() { row.state } else { rec.state };
        self.drained[o.index] = Some(DrainedRow {
            id: row.id.clone(),
            message_id: row.message_id.clone(),
            state,
            attempts: row.attempts + u32::from(record_error.is_none()),
            next_attempt_at_ms: (state == OutboxState::Queued).then_some(rec.next_attempt_at_ms),
            last_reply: rec.last_reply,
            error: o.error.as_ref().map(|e| e.to_string()),
            explanation: rec.explanation,
            sent_copy: None,
            record_error,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(attempts: u32, created_at_ms: i64, max_age_ms: u64) -> OutboxRow {
        OutboxRow {
            id: "r".into(),
            tenant: "t".into(),
            queue: "q".into(),
            message_id: "m@x".into(),
            envelope: crate::store::Envelope { from: "a@x".into(), to: vec!["b@x".into()] },
            raw: Vec::new(),
            size: 1,
            state: OutboxState::Queued,
            attempts,
            next_attempt_at_ms: 0,
            created_at_ms,
            updated_at_ms: 0,
            last_reply: None,
            explanation: None,
            max_age_ms,
            save_copy: None,
            sent_copy: None,
        }
    }

    fn outcome(delivery: Delivery) -> MessageOutcome {
        MessageOutcome { index: 0, message_id: Some("m@x".into()), delivery, final_reply: None, recipients: Vec::new(), error: None }
    }

    /// A journal over one queued row in a fresh database, for `Journal::outcome`.
    fn with_journal(f: impl FnOnce(&Journal<'_, crate::db::Database>, &[OutboxRow])) {
        let tmp = tempfile::Builder::new().prefix("mailplug-journal-").tempdir().unwrap();
        let db = crate::db::Database::open(&tmp.path().join("db.sqlite3")).unwrap();
        let dc = DrainConfig::default();
        let rows = [row(0, 0, u64::MAX / 4)];
        f(&Journal { store: &db, rows: &rows, dc: &dc, drained: Vec::new() }, &rows);
    }

    /// Until the guest explains a row (and if it cannot), the row's explanation is the error
    /// with a German sentence of its own, saying whether the row retries by itself.
    #[test]
    fn a_row_not_delivered_is_explained_in_german_before_the_guest_explains_it() {
        with_journal(|j, rows| {
            let refused = |delivery| MessageOutcome {
                error: Some(HostError::Network { server: "smtp.example.net:587".into(), message: "connection reset.".into() }),
                ..outcome(delivery)
            };
            let failed = j.outcome(&rows[0], &refused(Delivery::Permanent), 1).explanation.expect("explained");
            assert_eq!(failed.en, "Sending failed: network error with smtp.example.net:587: connection reset. Check the queue's SMTP server and this message's recipients, then resend the message.");
            assert!(failed.de.starts_with("Das Senden ist fehlgeschlagen. ") && failed.de.contains("smtp.example.net:587: connection reset. Prüfen Sie"), "{failed:?}");
            for delivery in [Delivery::Transient, Delivery::NotSent] {
                let queued = j.outcome(&rows[0], &refused(delivery), 1).explanation.expect("explained");
                assert!(queued.en.ends_with(". Sending is retried automatically.") && queued.de.ends_with(". Der Versand wird automatisch wiederholt."), "{queued:?}");
            }
            // A multi-line reply loses its trailing line end and full stop before ours.
            let multi = MessageOutcome {
                error: Some(HostError::Network { server: "s:587".into(), message: "line one\r\nline two.\r\n".into() }),
                ..outcome(Delivery::Permanent)
            };
            assert!(j.outcome(&rows[0], &multi, 1).explanation.expect("explained").en.starts_with("Sending failed: network error with s:587: line one\r\nline two. Check"));
            // A held row and a row given up on keep their own explanations, not this one.
            let held = j.outcome(&rows[0], &refused(Delivery::Uncertain), 1).explanation.expect("explained");
            assert!(held.en.starts_with("The connection ended after the whole message") && !held.en.contains("Sending failed"), "{held:?}");
            let old = row(4, 0, 60_000);
            let gave_up = j.outcome(&old, &refused(Delivery::Transient), 3_600_000).explanation.expect("explained");
            assert!(gave_up.en.starts_with("Given up after 5 attempts") && !gave_up.en.contains("Sending failed"), "{gave_up:?}");
            // It names the last error, in case the guest cannot explain it.
            assert!(gave_up.en.ends_with(" The last error: network error with smtp.example.net:587: connection reset."), "{gave_up:?}");
            assert!(gave_up.de.ends_with(" Die letzte Fehlermeldung (auf Englisch): network error with smtp.example.net:587: connection reset."), "{gave_up:?}");
            assert_eq!(j.outcome(&rows[0], &outcome(Delivery::Delivered), 1).explanation, None);
        });
    }

    #[test]
    fn transient_failures_back_off_1_2_4_minutes_capped_until_the_max_age() {
        with_journal(|j, rows| {
            let now = 1_000_000;
            let next = |attempts: u32| {
                let r = j.outcome(&row(attempts, 0, u64::MAX / 4), &outcome(Delivery::Transient), now);
                assert_eq!(r.state, OutboxState::Queued);
                (r.next_attempt_at_ms - now) / 60_000
            };
            assert_eq!([next(0), next(1), next(2), next(3), next(6), next(7), next(60)], [1, 2, 4, 8, 60, 60, 60]);
            assert_eq!(j.outcome(&row(0, 0, u64::MAX / 4), &outcome(Delivery::NotSent), now).state, OutboxState::Queued);
            // The next attempt would fall after the max age: failed, saying why.
            let old = j.outcome(&row(4, now - 3_600_000, 3_600_000 + 60_000), &outcome(Delivery::Transient), now);
            assert_eq!(old.state, OutboxState::Failed);
            let e = old.explanation.expect("explained");
            assert!(e.en.contains("Given up after 5 attempts") && e.de.contains("Nach 5 Versuchen aufgegeben"), "{e:?}");
            assert_eq!(j.outcome(&rows[0], &outcome(Delivery::Permanent), now).state, OutboxState::Failed);
            assert_eq!(j.outcome(&rows[0], &outcome(Delivery::Uncertain), now).state, OutboxState::Held);
            assert_eq!(j.outcome(&rows[0], &outcome(Delivery::Delivered), now).state, OutboxState::Delivered);
        });
    }

    #[test]
    fn one_sender_per_queue_at_a_time() {
        let tmp = tempfile::Builder::new().prefix("mailplug-senderlock-").tempdir().unwrap();
        let db = tmp.path().join("db.sqlite3");
        let first = SenderLock::acquire(&db, "t", "q").unwrap();
        let e = SenderLock::acquire(&db, "t", "q").err().expect("the second sender is refused").to_string();
        assert!(e.contains("another sender") && e.contains("\"q\""), "{e}");
        let other = SenderLock::acquire(&db, "t", "other queue");
        assert!(other.is_ok(), "another queue has its own lock");
        drop(first);
        assert!(SenderLock::acquire(&db, "t", "q").is_ok(), "released on drop");
    }

    #[tokio::test]
    async fn a_drain_waits_a_moment_for_a_lock_being_released_but_not_for_a_held_one() {
        use std::time::{Duration, Instant};
        let tmp = tempfile::Builder::new().prefix("mailplug-senderwait-").tempdir().unwrap();
        let db = tmp.path().join("db.sqlite3");
        let held = SenderLock::acquire(&db, "t", "q").unwrap();
        let started = Instant::now();
        let e = SenderLock::acquire_within(&db, "t", "q", Duration::from_millis(150)).await.err().expect("still held").to_string();
        assert!(e.contains("another sender") && started.elapsed() >= Duration::from_millis(150), "{e}");
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(held);
        });
        assert!(SenderLock::acquire_within(&db, "t", "q", Duration::from_secs(10)).await.is_ok(), "taken once released");
        release.join().unwrap();
    }
}
