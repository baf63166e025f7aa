//! Batch send: compose several messages and submit them over one SMTP session
//! (`outbound.open-batch`), with one outcome per message.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{QueueConfig, TenantConfig};
use crate::driver::{drive, now_ms, MessageSink};
use crate::engine::{BatchEnvelope, ComposedMessage, Delivery, Draft, FetchedMessage, Instance, MessageResult, RecipientResult, ServerReply, Stage};
use crate::error::{stage_name, GuestFailure, HostError, Kind, Retry};
use crate::store::SyncStateStore;

use super::{
    allowed_servers, check_licence, credentials_for, instance_for, options, queue_from, retry_with_fresh_token, submission_server,
    Outgoing, Plugin,
};

/// What happened to one message of a batch.
#[derive(Debug)]
pub struct MessageOutcome {
    /// Its position in the batch (0-based).
    pub index: usize,
    /// Its Message-ID; None when it could not be composed.
    pub message_id: Option<String>,
    pub delivery: Delivery,
    /// The server's reply to its data, when there was one.
    pub final_reply: Option<ServerReply>,
    /// Each recipient's answer to RCPT TO (empty when the transaction stopped before).
    pub recipients: Vec<RecipientResult>,
    /// Why it was not delivered.
    pub error: Option<HostError>,
}

impl MessageOutcome {
    pub fn delivered(&self) -> bool {
        matches!(self.delivery, Delivery::Delivered)
    }
}

/// The name of a delivery, as `mailplug send --json` prints it.
pub fn delivery_name(d: Delivery) -> &'static str {
    match d {
        Delivery::Delivered => "delivered",
        Delivery::Transient => "transient",
        Delivery::Permanent => "permanent",
        Delivery::Uncertain => "uncertain",
        Delivery::NotSent => "not-sent",
    }
}

/// Told about each message as soon as its fate is known, and about each commit point before
/// its final dot is written. A durable outbox records both (the commit point durably, before
/// returning); an error from `commit_point` stops the batch before that dot.
pub trait BatchJournal {
    fn commit_point(&mut self, _index: usize, _message_id: &str) -> Result<(), HostError> {
        Ok(())
    }
    fn message_done(&mut self, _outcome: &MessageOutcome) {}
    /// The message at `index` of the batch went out as its replies arrived, without a call into
    /// the component first (`arm-write`); after its `commit_point`. For counting only.
    fn armed_write(&mut self, _index: usize) {}
}

/// A journal that records nothing.
pub struct NoJournal;

impl BatchJournal for NoJournal {}

/// Composes every message of `messages` and sends the ones that could be composed through
/// `queue` over one SMTP session. Returns one outcome per message, in order; Err only when
/// nothing could be attempted (configuration, licence, the component).
pub async fn send_batch(
    plugin: &Plugin,
    cfg: &TenantConfig,
    queue: &str,
    messages: &[Outgoing],
    store: &dyn SyncStateStore,
    journal: &mut dyn BatchJournal,
) -> Result<Vec<MessageOutcome>, HostError> {
    check_licence(cfg)?;
    let q = cfg.queue(queue).ok_or_else(|| HostError::NotFound(format!("no queue named \"{queue}\" in the configuration")))?;
    let from = queue_from(cfg, q)?;
    let mut instance = instance_for(plugin, cfg).await?;
    let mut outcomes: Vec<Option<MessageOutcome>> = Vec::with_capacity(messages.len());
    let mut composed = Vec::new();
    // Position in the batch of each composed message.
    let mut positions = Vec::new();
    for (index, m) in messages.iter().enumerate() {
        let draft = Draft { from: from.clone(), to: m.to.clone(), subject: m.subject.clone(), text_body: m.text_body.clone(), date: now_ms() };
        match instance.compose(&draft).await {
            Ok(c) => {
                positions.push(index);
                composed.push(c);
                outcomes.push(None);
            }
            Err(HostError::Guest(g)) => {
                let o = MessageOutcome {
                    index,
                    message_id: None,
                    delivery: Delivery::Permanent,
                    final_reply: None,
                    recipients: Vec::new(),
                    error: Some(HostError::Guest(g)),
                };
                journal.message_done(&o);
                outcomes.push(Some(o));
            }
            Err(e) => return Err(e),
        }
    }
    if !composed.is_empty() {
        for o in send_composed(&mut instance, cfg, store, q, &composed, &positions, journal).await {
            let index = o.index;
            outcomes[index] = Some(o);
        }
    }
    Ok(outcomes.into_iter().flatten().collect())
}

/// Sends messages composed beforehand (`outbound.compose`, or stored by an outbox) through
/// `queue` over one SMTP session: the second half of `send_batch`. The session asks for each
/// message's bytes when its turn comes, so the component's memory holds one or two messages,
/// not the batch. A message with a NUL byte or over `limits.max_message_bytes` gets its own
/// `permanent` outcome and the others are sent. One outcome per message, in order.
pub async fn send_composed_batch(
    plugin: &Plugin,
    cfg: &TenantConfig,
    queue: &str,
    composed: &[ComposedMessage],
    store: &dyn SyncStateStore,
    journal: &mut dyn BatchJournal,
) -> Result<Vec<MessageOutcome>, HostError> {
    check_licence(cfg)?;
    let q = cfg.queue(queue).ok_or_else(|| HostError::NotFound(format!("no queue named \"{queue}\" in the configuration")))?;
    if composed.is_empty() {
        return Ok(Vec::new());
    }
    let mut instance = instance_for(plugin, cfg).await?;
    let positions: Vec<usize> = (0..composed.len()).collect();
    Ok(send_composed(&mut instance, cfg, store, q, composed, &positions, journal).await)
}

/// Drives one batch session for `composed` (message k is at position `positions[k]` of the
/// caller's batch); every message gets an outcome, also when the session failed.
async fn send_composed(
    instance: &mut Instance,
    cfg: &TenantConfig,
    store: &dyn SyncStateStore,
    q: &QueueConfig,
    composed: &[ComposedMessage],
    positions: &[usize],
    journal: &mut dyn BatchJournal,
) -> Vec<MessageOutcome> {
    let mut sink = BatchSink { positions, composed, journal, committed: BTreeSet::new(), done: BTreeMap::new() };
    let result = submit_batch(instance, cfg, store, q, composed, &mut sink).await;
    sink.outcomes(result.err().as_ref())
}

/// Opens the batch session (again with a fresh token when an OAuth2 login was refused before
/// anything was sent) and drives it.
async fn submit_batch(
    instance: &mut Instance,
    cfg: &TenantConfig,
    store: &dyn SyncStateStore,
    q: &QueueConfig,
    composed: &[ComposedMessage],
    sink: &mut BatchSink<'_>,
) -> Result<(), HostError> {
    let allowed = allowed_servers(cfg);
    let opts = options(cfg, &allowed)?;
    let envelopes: Vec<BatchEnvelope> = composed
        .iter()
        .map(|c| BatchEnvelope {
            message_id: c.message_id.clone(),
            envelope_from: c.envelope_from.clone(),
            envelope_to: c.envelope_to.clone(),
            size: c.raw.len() as u64,
        })
        .collect();
    let mut attempt = 0;
    loop {
        let credentials = credentials_for(instance, cfg, store, &q.smtp, attempt > 0).await?;
        let sub = submission_server(cfg, q, credentials);
        let session = instance.open_batch(&sub, &envelopes, now_ms()).await?;
        match drive(instance, session, &opts, sink).await {
            Err(e) if sink.done.is_empty() && sink.committed.is_empty() && retry_with_fresh_token(&q.smtp, &e, attempt) => attempt += 1,
            Err(e) => return Err(e),
            Ok(_) => return Ok(()),
        }
    }
}

/// A message the session ended without an outcome for (the host lost the connection, hit a
/// limit, or the login failed): uncertain when its final dot was committed, else not sent.
fn unfinished(index: usize, c: &ComposedMessage, uncertain: bool, failure: Option<&HostError>) -> MessageOutcome {
    let why = failure.map_or_else(|| "the session ended without an outcome for it".to_string(), |e| e.to_string());
    let (delivery, retry, stage, message) = if uncertain {
        (
            Delivery::Uncertain,
            Retry::Uncertain,
            Stage::Data,
            format!(
                "the session ended after the whole message was handed over, before the server confirmed it ({why}). The message may have been delivered: first check whether the recipients got it (Message-ID <{}>), and send it again only if not",
                c.message_id
            ),
        )
    } else {
        let retry = match failure.map(HostError::retry) {
            Some(Retry::FixFirst) => Retry::FixFirst,
            _ => Retry::Later,
        };
        (Delivery::NotSent, retry, Stage::Envelope, format!("the message was not sent: {why}"))
    };
    let kind = failure.and_then(HostError::kind).unwrap_or(Kind::Network);
    MessageOutcome {
        index,
        message_id: Some(c.message_id.clone()),
        delivery,
        final_reply: None,
        recipients: Vec::new(),
        error: Some(HostError::Guest(GuestFailure {
            kind,
            stage: stage_name(stage).to_string(),
            stage_id: stage,
            message,
            reply: None,
            retry,
            refused: None,
            message_id: Some(c.message_id.clone()),
        })),
    }
}

/// Receives the batch session's commit points and outcomes.
struct BatchSink<'a> {
    positions: &'a [usize],
    composed: &'a [ComposedMessage],
    journal: &'a mut dyn BatchJournal,
    /// Messages committed (their final dot handed over) without an outcome yet (indexes into
    /// `composed`). Usually one; two when the session reports an outcome in the step after the
    /// next commit point (`message-done` with the answer to `need-message`). Each is uncertain
    /// if the session ends without its outcome.
    committed: BTreeSet<usize>,
    done: BTreeMap<usize, MessageOutcome>,
}

impl BatchSink<'_> {
    /// Every message's outcome once the session is over: the one reported, else uncertain
    /// when its final dot was committed and not sent otherwise (told to the journal now).
    fn outcomes(self, failure: Option<&HostError>) -> Vec<MessageOutcome> {
        let BatchSink { committed, mut done, journal, composed, positions } = self;
        let mut outcomes = Vec::with_capacity(composed.len());
        for (k, c) in composed.iter().enumerate() {
            let outcome = match done.remove(&k) {
                Some(o) => o,
                None => {
                    let o = unfinished(positions[k], c, committed.contains(&k), failure);
                    journal.message_done(&o);
                    o
                }
            };
            outcomes.push(outcome);
        }
        outcomes
    }
}

impl MessageSink for BatchSink<'_> {
    fn deliver(&mut self, _: FetchedMessage) -> Result<(), HostError> {
        Err(HostError::Plugin("the component delivered a message in a send session".into()))
    }
    fn commit(&mut self) -> Result<(), HostError> {
        Ok(())
    }
    fn batch_message(&mut self, index: u32, slack: usize) -> Result<Vec<u8>, HostError> {
        let k = index as usize;
        let c = self.composed.get(k).ok_or_else(|| HostError::Plugin(format!("the component asked for message {k}, which the batch does not have")))?;
        // One copy, with the room the driver appends the final dot and next commands in.
        let mut raw = Vec::with_capacity(c.raw.len() + slack);
        raw.extend_from_slice(&c.raw);
        Ok(raw)
    }
    fn commit_point(&mut self, index: u32) -> Result<(), HostError> {
        let k = index as usize;
        let c = self.composed.get(k).ok_or_else(|| HostError::Plugin(format!("the component committed message {k}, which the batch does not have")))?;
        self.journal.commit_point(self.positions[k], &c.message_id)?;
        self.committed.insert(k);
        Ok(())
    }
    fn armed_write(&mut self, index: u32) {
        if let Some(p) = self.positions.get(index as usize) {
            self.journal.armed_write(*p);
        }
    }
    fn message_done(&mut self, r: MessageResult) -> Result<(), HostError> {
        let k = r.index as usize;
        let Some(c) = self.composed.get(k) else {
            return Err(HostError::Plugin(format!("the component reported message {k}, which the batch does not have")));
        };
        if self.done.contains_key(&k) {
            return Err(HostError::Plugin(format!("the component reported message {k} twice")));
        }
        let error = r.error.map(|e| match HostError::from(e) {
            HostError::Guest(mut g) => {
                g.message_id = Some(c.message_id.clone());
                HostError::Guest(g)
            }
            other => other,
        });
        let outcome = MessageOutcome {
            index: self.positions[k],
            message_id: Some(c.message_id.clone()),
            delivery: r.delivery,
            final_reply: r.final_reply,
            recipients: r.recipients,
            error,
        };
        self.committed.remove(&k);
        self.journal.message_done(&outcome);
        self.done.insert(k, outcome);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn composed(id: &str) -> ComposedMessage {
        ComposedMessage { message_id: id.into(), envelope_from: "a@example.test".into(), envelope_to: vec!["b@example.test".into()], raw: b"x\r\n".to_vec() }
    }

    /// A journal that keeps what it was told.
    #[derive(Default)]
    struct Told(Vec<(usize, Delivery)>);

    impl BatchJournal for Told {
        fn message_done(&mut self, o: &MessageOutcome) {
            self.0.push((o.index, o.delivery));
        }
    }

    #[test]
    fn every_message_committed_without_its_outcome_is_uncertain_when_the_host_loses_the_session() {
        // Message 0's outcome was still held back for the message-data step when message 1's
        // commit point came, and the host's write failed in between: both may have arrived.
        let composed: Vec<_> = (0..4).map(|k| composed(&format!("m{k}@example.test"))).collect();
        let positions = [10, 11, 12, 13];
        let mut told = Told::default();
        let mut sink = BatchSink { positions: &positions, composed: &composed, journal: &mut told, committed: BTreeSet::new(), done: BTreeMap::new() };
        sink.commit_point(0).unwrap();
        sink.commit_point(1).unwrap();
        let lost = HostError::Network { server: "smtp.example.test:587".into(), message: "write failed: broken pipe".into() };
        let outcomes = sink.outcomes(Some(&lost));
        let got: Vec<_> = outcomes.iter().map(|o| (o.index, o.delivery)).collect();
        let want = [(10, Delivery::Uncertain), (11, Delivery::Uncertain), (12, Delivery::NotSent), (13, Delivery::NotSent)];
        assert_eq!(got, want);
        assert_eq!(told.0, want, "the journal is told each one");
        // A reported outcome settles its commit point: only the other one is uncertain.
        let mut told = Told::default();
        let mut sink = BatchSink { positions: &positions, composed: &composed, journal: &mut told, committed: BTreeSet::new(), done: BTreeMap::new() };
        sink.commit_point(0).unwrap();
        sink.commit_point(1).unwrap();
        let delivered = MessageResult {
            index: 0,
            message_id: "m0@example.test".into(),
            delivery: Delivery::Delivered,
            final_reply: Some(ServerReply { code: "250".into(), text: "Ok".into() }),
            recipients: Vec::new(),
            error: None,
        };
        sink.message_done(delivered).unwrap();
        let got: Vec<_> = sink.outcomes(Some(&lost)).iter().map(|o| (o.index, o.delivery)).collect();
        assert_eq!(got, [(10, Delivery::Delivered), (11, Delivery::Uncertain), (12, Delivery::NotSent), (13, Delivery::NotSent)]);
    }

    #[test]
    fn a_session_lost_by_the_host_leaves_the_committed_message_uncertain_and_the_rest_not_sent() {
        let lost = HostError::Network { server: "smtp.example.test:587".into(), message: "write failed: broken pipe".into() };
        let o = unfinished(3, &composed("m3@example.test"), true, Some(&lost));
        assert!(matches!(o.delivery, Delivery::Uncertain));
        let e = o.error.expect("error");
        assert_eq!(e.retry(), Retry::Uncertain);
        assert!(e.to_string().contains("m3@example.test") && e.to_string().contains("broken pipe"), "{e}");
        let o = unfinished(4, &composed("m4@example.test"), false, Some(&lost));
        assert!(matches!(o.delivery, Delivery::NotSent));
        let e = o.error.expect("error");
        assert_eq!((e.retry(), e.kind()), (Retry::Later, Some(Kind::Network)));
        assert!(e.to_string().contains("not sent"), "{e}");
    }

    #[test]
    fn a_refused_login_leaves_every_message_not_sent_with_fix_first() {
        let auth = HostError::Guest(GuestFailure {
            kind: Kind::AuthRejected,
            stage: "authenticate".into(),
            stage_id: Stage::Authenticate,
            message: "the server rejected the PLAIN login".into(),
            reply: None,
            retry: Retry::FixFirst,
            refused: None,
            message_id: None,
        });
        let o = unfinished(0, &composed("m0@example.test"), false, Some(&auth));
        assert!(matches!(o.delivery, Delivery::NotSent));
        assert_eq!(o.error.expect("error").retry(), Retry::FixFirst);
    }
}
