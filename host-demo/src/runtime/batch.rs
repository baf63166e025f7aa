//! The `outbound.open-batch` call (a child module of `runtime`: it needs the store and bindings).

use super::{ComposedMessage, HostError, Instance, SessionHandle, SubmissionServer};

impl Instance {
    /// A session that submits `messages` in order over one SMTP connection (see `open-batch`
    /// in wit/outbound.wit): `commit-point` and `message-done` actions, then `sent-batch`.
    pub async fn open_batch(
        &mut self,
        submission: &SubmissionServer,
        messages: &[ComposedMessage],
        now: u64,
    ) -> Result<SessionHandle, HostError> {
        self.arm();
        let r = self
            .bindings
            .mailplug_connector_outbound()
            .call_open_batch(&mut self.store, submission, messages, now)
            .await
            .map_err(|e| self.trap(e))?;
        r.map(SessionHandle).map_err(HostError::from)
    }
}
