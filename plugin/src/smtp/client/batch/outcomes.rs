//! A batch's outcomes: recorded as they become known (`known`), reported in batch order
//! (`report_known`), held back to the next step when this one asks for bytes
//! (`defer_outcomes`), redacted when reported (`seal_outcomes`), and settled for every message
//! when the batch stops (`stop_batch`).

use super::*;

impl SmtpSession {
    /// Outcomes held back by the step before (`deferred`), to go first in this step's actions.
    pub(in crate::smtp::client) fn take_deferred(&mut self) -> Vec<Action> {
        self.batch.as_mut().map(|b| std::mem::take(&mut b.deferred)).unwrap_or_default()
    }

    /// After a step that is not `message-data`: when it asks for bytes, its `message-done`
    /// actions wait for the `message-data` step that answers (the host performs that after
    /// the writes and before it reads again), so the write the server waits for goes out
    /// without the outcomes' records crossing the boundary first.
    pub(in crate::smtp::client) fn defer_outcomes(&mut self, actions: &mut Vec<Action>) {
        let Some(b) = self.batch.as_mut() else { return };
        if matches!(self.state, State::Finished | State::Failed) || !actions.iter().any(|a| matches!(a, Action::NeedMessage(_))) {
            return;
        }
        // In place: the outcomes move to `deferred`, in order; the rest keep theirs.
        actions.retain_mut(|a| match a {
            Action::MessageDone(_) => {
                b.deferred.push(std::mem::replace(a, Action::Close));
                false
            }
            _ => true,
        });
    }

    /// Records message `i`'s outcome: delivered without `error`, else by the error's retry advice.
    pub(in crate::smtp::client) fn known(
        &mut self,
        i: usize,
        final_reply: Option<ServerReply>,
        recipients: Vec<RecipientResult>,
        error: Option<Error>,
    ) {
        let delivery = match &error {
            None => Delivery::Delivered,
            Some(e) => match e.retry {
                Retry::Later => Delivery::Transient,
                Retry::Uncertain => Delivery::Uncertain,
                Retry::FixFirst => Delivery::Permanent,
            },
        };
        self.known_as(i, delivery, final_reply, recipients, error);
    }

    /// Records message `i`'s outcome as `delivery`.
    /// The server's text in it is redacted when it is reported (`seal_outcomes`).
    pub(in crate::smtp::client) fn known_as(
        &mut self,
        i: usize,
        delivery: Delivery,
        final_reply: Option<ServerReply>,
        recipients: Vec<RecipientResult>,
        error: Option<Error>,
    ) {
        let b = self.batch();
        // The item needs its Message-ID no more.
        let message_id = std::mem::take(&mut b.items[i].message_id);
        b.items[i].body = Body::Gone;
        let k = i - b.reported;
        if b.known.len() <= k {
            b.known.resize_with(k + 1, || None);
        }
        b.known[k] = Some(MessageResult { index: i as u32, message_id, delivery, final_reply, recipients, error });
    }

    /// Redacts the credentials from the server text in each outcome of `actions`, right before
    /// they are returned: in a step whose outcomes wait for the next one (`defer_outcomes`),
    /// that work waits too.
    pub(in crate::smtp::client) fn seal_outcomes(&mut self, actions: &mut [Action]) {
        let Some(b) = self.batch.as_ref() else { return };
        // The credentials' wire forms, computed once per batch rather than per reply.
        let forms = &b.forms;
        for a in actions {
            let Action::MessageDone(r) = a else { continue };
            if let Some(e) = &mut r.error {
                e.redact(forms);
                e.quoted.clear();
            }
            if let Some(reply) = &mut r.final_reply {
                reply.text = redact_owned(std::mem::take(&mut reply.text), forms);
            }
            for x in &mut r.recipients {
                x.reply.text = redact_owned(std::mem::take(&mut x.reply.text), forms);
            }
        }
    }

    /// Reports the known outcomes that are next in batch order.
    pub(in crate::smtp::client) fn report_known(&mut self, actions: &mut Vec<Action>) {
        let b = self.batch();
        while let Some(r) = b.known.front_mut().and_then(Option::take) {
            b.known.pop_front();
            b.reported += 1;
            actions.push(Action::MessageDone(r));
        }
    }

    /// The batch cannot go on (connection lost, timeout, a reply that breaks the protocol):
    /// the message whose final dot went out without a verdict is uncertain, every other
    /// message without an outcome was not sent. Ends the session.
    pub(in crate::smtp::client) fn stop_batch(&mut self, mut error: Error, actions: &mut Vec<Action>) {
        error.redact(&self.secret_forms());
        error.quoted.clear();
        // The message whose final dot went out without a verdict and, in a `received-armed`
        // step, the one the host wrote for the armed write.
        let committed = self.batch().committed.take();
        let fired = self.batch().fired.take();
        self.batch().armed = None;
        let n = self.batch().items.len();
        for i in 0..n {
            let b = self.batch();
            if i < b.reported || b.known.get(i - b.reported).is_some_and(Option::is_some) {
                continue;
            }
            if Some(i) == committed || Some(i) == fired {
                let e = uncertain(error.clone());
                let e = Error { message: format!("{} (Message-ID <{}>)", e.message, b.items[i].message_id), ..e };
                let recipients = std::mem::take(&mut self.recipients);
                self.known(i, None, recipients, Some(e));
            } else {
                let e = Error::new(
                    error.kind,
                    error.stage,
                    format!(
                        "the message was not sent: the batch stopped before its data went out ({}); it is safe to send it again",
                        error.message
                    ),
                )
                .with_retry(Retry::Later);
                self.known_as(i, Delivery::NotSent, None, Vec::new(), Some(e));
            }
        }
        self.report_known(actions);
        let b = self.batch();
        let report = BatchReport { delivered: b.delivered, not_delivered: n as u32 - b.delivered, stopped: Some(error) };
        self.state = State::Finished;
        self.link.clear_deadline();
        actions.push(Action::Close);
        actions.push(Action::Finished(Outcome::SentBatch(report)));
    }
}
