//! The component's exported functions as methods of `Instance`: each arms the CPU budget,
//! calls, and turns a trap into an admin-readable error.

use super::*;

impl Instance {
    pub async fn open_inbound(
        &mut self,
        mailbox: &GuestMailbox,
        sync_state: Option<&[u8]>,
        now: u64,
    ) -> Result<SessionHandle, HostError> {
        self.arm();
        let r = self
            .bindings
            .mailplug_connector_inbound()
            .call_open(&mut self.store, mailbox, sync_state, now).await
            .map_err(|e| self.trap(e))?;
        r.map(SessionHandle).map_err(HostError::from)
    }

    /// Continues an idling IMAP session in this (fresh) instance (see `inbound.resume`).
    pub async fn resume_inbound(
        &mut self,
        mailbox: &GuestMailbox,
        sync_state: &[u8],
        idle_state: &[u8],
        now: u64,
    ) -> Result<SessionHandle, HostError> {
        self.arm();
        let r = self
            .bindings
            .mailplug_connector_inbound()
            .call_resume(&mut self.store, mailbox, sync_state, idle_state, now)
            .await
            .map_err(|e| self.trap(e))?;
        r.map(SessionHandle).map_err(HostError::from)
    }

    pub async fn compose(&mut self, draft: &Draft) -> Result<ComposedMessage, HostError> {
        self.arm();
        let r = self.bindings.mailplug_connector_outbound().call_compose(&mut self.store, draft).await.map_err(|e| self.trap(e))?;
        r.map_err(HostError::from)
    }

    pub async fn plan_from(&mut self, identity: &Identity) -> Result<FromPlan, HostError> {
        self.arm();
        let r = self.bindings.mailplug_connector_outbound().call_plan_from(&mut self.store, identity).await.map_err(|e| self.trap(e))?;
        r.map_err(HostError::from)
    }

    pub async fn compose_reply(&mut self, draft: &ReplyDraft) -> Result<ComposedMessage, HostError> {
        self.arm();
        let r = self.bindings.mailplug_connector_outbound().call_compose_reply(&mut self.store, draft).await.map_err(|e| self.trap(e))?;
        r.map_err(HostError::from)
    }

    pub async fn presets(&mut self) -> Result<Vec<Preset>, HostError> {
        self.arm();
        self.bindings.mailplug_connector_presets().call_catalogue(&mut self.store).await.map_err(|e| self.trap(e))
    }

    pub async fn preset_by_domain(&mut self, domain: &str) -> Result<Option<Preset>, HostError> {
        self.arm();
        self.bindings.mailplug_connector_presets().call_by_domain(&mut self.store, domain).await.map_err(|e| self.trap(e))
    }

    pub async fn validate(&mut self, settings: &ServerSettings) -> Result<Vec<Finding>, HostError> {
        self.arm();
        self.bindings.mailplug_connector_presets().call_validate(&mut self.store, settings).await.map_err(|e| self.trap(e))
    }

    pub async fn oauth_google(&mut self) -> Result<OauthEndpoints, HostError> {
        self.arm();
        self.bindings.mailplug_connector_oauth().call_google(&mut self.store).await.map_err(|e| self.trap(e))
    }

    pub async fn oauth_microsoft(&mut self, tenant: &str) -> Result<Result<OauthEndpoints, OauthFailure>, HostError> {
        self.arm();
        self.bindings.mailplug_connector_oauth().call_microsoft(&mut self.store, tenant).await.map_err(|e| self.trap(e))
    }

    pub async fn oauth_begin(
        &mut self,
        e: &OauthEndpoints,
        c: &ClientRegistration,
        login_hint: Option<&str>,
    ) -> Result<Result<AuthorizationRequest, OauthFailure>, HostError> {
        self.arm();
        self.bindings.mailplug_connector_oauth().call_begin(&mut self.store, e, c, login_hint).await.map_err(|e| self.trap(e))
    }

    pub async fn oauth_parse_redirect(&mut self, redirect: &str, state: &str) -> Result<Result<String, OauthFailure>, HostError> {
        self.arm();
        self.bindings.mailplug_connector_oauth().call_parse_redirect(&mut self.store, redirect, state).await.map_err(|e| self.trap(e))
    }

    pub async fn oauth_token_request(
        &mut self,
        e: &OauthEndpoints,
        c: &ClientRegistration,
        code: &str,
        verifier: &str,
    ) -> Result<HttpRequest, HostError> {
        self.arm();
        self.bindings.mailplug_connector_oauth().call_token_request(&mut self.store, e, c, code, verifier).await.map_err(|e| self.trap(e))
    }

    pub async fn oauth_refresh_request(
        &mut self,
        e: &OauthEndpoints,
        c: &ClientRegistration,
        refresh: &str,
    ) -> Result<HttpRequest, HostError> {
        self.arm();
        self.bindings.mailplug_connector_oauth().call_refresh_request(&mut self.store, e, c, refresh).await.map_err(|e| self.trap(e))
    }

    pub async fn oauth_parse_token_response(
        &mut self,
        r: &HttpResponse,
        now: u64,
        previous_refresh: Option<&str>,
    ) -> Result<Result<Tokens, OauthFailure>, HostError> {
        self.arm();
        self.bindings
            .mailplug_connector_oauth()
            .call_parse_token_response(&mut self.store, r, now, previous_refresh)
            .await
            .map_err(|e| self.trap(e))
    }

    pub async fn oauth_needs_refresh(&mut self, t: &Tokens, now: u64, margin_ms: u64) -> Result<bool, HostError> {
        self.arm();
        self.bindings.mailplug_connector_oauth().call_needs_refresh(&mut self.store, t, now, margin_ms).await.map_err(|e| self.trap(e))
    }

    pub async fn open_outbound(
        &mut self,
        submission: &SubmissionServer,
        envelope_from: &str,
        envelope_to: &[String],
        message: &[u8],
        now: u64,
    ) -> Result<SessionHandle, HostError> {
        self.arm();
        let r = self
            .bindings
            .mailplug_connector_outbound()
            .call_open(&mut self.store, submission, envelope_from, envelope_to, message, now).await
            .map_err(|e| self.trap(e))?;
        r.map(SessionHandle).map_err(HostError::from)
    }

    /// A session that submits the messages of `envelopes` in order over one SMTP connection
    /// (see `open-batch` in wit/outbound.wit): it asks for each message's bytes with
    /// `need-message` (the driver answers from `MessageSink::batch_message`), reports
    /// `commit-point` and `message-done`, then `sent-batch`.
    pub async fn open_batch(
        &mut self,
        submission: &SubmissionServer,
        envelopes: &[BatchEnvelope],
        now: u64,
    ) -> Result<SessionHandle, HostError> {
        self.arm();
        let r = self
            .bindings
            .mailplug_connector_outbound()
            .call_open_batch(&mut self.store, submission, envelopes, now)
            .await
            .map_err(|e| self.trap(e))?;
        r.map(SessionHandle).map_err(HostError::from)
    }

    /// A session that saves a copy of `message` into `folder` of an IMAP mailbox (IMAP APPEND).
    pub async fn open_save_copy(
        &mut self,
        mailbox: &GuestMailbox,
        folder: &str,
        message: &[u8],
        now: u64,
    ) -> Result<SessionHandle, HostError> {
        self.arm();
        let r = self
            .bindings
            .mailplug_connector_outbound()
            .call_save_copy(&mut self.store, mailbox, folder, message, now)
            .await
            .map_err(|e| self.trap(e))?;
        r.map(SessionHandle).map_err(HostError::from)
    }

    /// A session that checks a mailbox step by step without fetching or changing anything.
    pub async fn open_check_mailbox(&mut self, mailbox: &GuestMailbox, now: u64) -> Result<SessionHandle, HostError> {
        self.arm();
        let r = self
            .bindings
            .mailplug_connector_check()
            .call_check_mailbox(&mut self.store, mailbox, now)
            .await
            .map_err(|e| self.trap(e))?;
        r.map(SessionHandle).map_err(HostError::from)
    }

    /// A session that checks an SMTP server up to MAIL FROM / RCPT TO, then resets: nothing is sent.
    pub async fn open_check_submission(
        &mut self,
        submission: &SubmissionServer,
        envelope_from: &str,
        envelope_to: &[String],
        now: u64,
    ) -> Result<SessionHandle, HostError> {
        self.arm();
        let r = self
            .bindings
            .mailplug_connector_check()
            .call_check_submission(&mut self.store, submission, envelope_from, envelope_to, now)
            .await
            .map_err(|e| self.trap(e))?;
        r.map(SessionHandle).map_err(HostError::from)
    }

    /// The cause and the admin's action for an error, in English and German.
    pub async fn explain(&mut self, error: &GuestError) -> Result<Diagnosis, HostError> {
        self.arm();
        self.bindings.mailplug_connector_check().call_explain(&mut self.store, error).await.map_err(|e| self.trap(e))
    }

    /// Gmail app passwords without the spaces Google shows them with; other passwords unchanged.
    pub async fn normalise_app_password(&mut self, password: &str) -> Result<String, HostError> {
        self.arm();
        self.bindings
            .mailplug_connector_presets()
            .call_normalise_app_password(&mut self.store, password)
            .await
            .map_err(|e| self.trap(e))
    }

    pub async fn server(&mut self, s: SessionHandle) -> Result<GuestServer, HostError> {
        self.arm();
        self.bindings.mailplug_connector_session().session().call_server(&mut self.store, s.0).await.map_err(|e| self.trap(e))
    }

    pub async fn handle(&mut self, s: SessionHandle, event: &Event, now: u64) -> Result<Vec<Action>, HostError> {
        self.arm();
        let r = self
            .bindings
            .mailplug_connector_session()
            .session()
            .call_handle(&mut self.store, s.0, event, now).await
            .map_err(|e| self.trap(e))?;
        r.map_err(HostError::from)
    }

    /// `handle` and `deadline` in one call (the session's `step`): the actions, and when to
    /// send `timer`.
    pub async fn step(&mut self, s: SessionHandle, event: &Event, now: u64) -> Result<(Vec<Action>, Option<u64>), HostError> {
        self.arm();
        let r = self
            .bindings
            .mailplug_connector_session()
            .session()
            .call_step(&mut self.store, s.0, event, now)
            .await
            .map_err(|e| self.trap(e))?;
        r.map(|x| (x.actions, x.deadline)).map_err(HostError::from)
    }

    pub async fn deadline(&mut self, s: SessionHandle) -> Result<Option<u64>, HostError> {
        self.arm();
        self.bindings.mailplug_connector_session().session().call_deadline(&mut self.store, s.0).await.map_err(|e| self.trap(e))
    }

    pub async fn sync_state(&mut self, s: SessionHandle) -> Result<Option<Vec<u8>>, HostError> {
        self.arm();
        self.bindings.mailplug_connector_session().session().call_sync_state(&mut self.store, s.0).await.map_err(|e| self.trap(e))
    }

    pub async fn drop_session(&mut self, s: SessionHandle) {
        // Dropping runs the guest's destructor: it gets a fresh budget like any other call,
        // or a host-side wait longer than the budget (a greeting or session timeout) would
        // make it trap and poison the instance for the explanation that follows.
        self.arm();
        let _ = s.0.resource_drop_async(&mut self.store).await;
    }
}
