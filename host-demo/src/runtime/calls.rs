//! The component's exported functions as methods of `Instance`: each goes through `call!`
//! (arm the CPU budget, call, turn a trap into the host's typed error); the ones that open a
//! session turn the guest's answer into a `SessionHandle` with `opened`.

use super::*;

/// A guest `open`-style answer as the host's session handle, or the guest's typed error.
fn opened(r: Result<ResourceAny, GuestError>) -> Result<SessionHandle, HostError> {
    r.map(SessionHandle).map_err(HostError::from)
}

impl Instance {
    pub async fn open_inbound(
        &mut self,
        mailbox: &GuestMailbox,
        sync_state: Option<&[u8]>,
        now: u64,
    ) -> Result<SessionHandle, HostError> {
        opened(call!(self, mailplug_connector_inbound, call_open(mailbox, sync_state, now))?)
    }

    /// Continues an idling IMAP session in this (fresh) instance (see `inbound.resume`).
    pub async fn resume_inbound(
        &mut self,
        mailbox: &GuestMailbox,
        sync_state: &[u8],
        idle_state: &[u8],
        now: u64,
    ) -> Result<SessionHandle, HostError> {
        opened(call!(self, mailplug_connector_inbound, call_resume(mailbox, sync_state, idle_state, now))?)
    }

    pub async fn compose(&mut self, draft: &Draft) -> Result<ComposedMessage, HostError> {
        call!(self, mailplug_connector_outbound, call_compose(draft))?.map_err(HostError::from)
    }

    pub async fn plan_from(&mut self, identity: &Identity) -> Result<FromPlan, HostError> {
        call!(self, mailplug_connector_outbound, call_plan_from(identity))?.map_err(HostError::from)
    }

    pub async fn compose_reply(&mut self, draft: &ReplyDraft) -> Result<ComposedMessage, HostError> {
        call!(self, mailplug_connector_outbound, call_compose_reply(draft))?.map_err(HostError::from)
    }

    pub async fn presets(&mut self) -> Result<Vec<Preset>, HostError> {
        call!(self, mailplug_connector_presets, call_catalogue())
    }

    pub async fn preset_by_domain(&mut self, domain: &str) -> Result<Option<Preset>, HostError> {
        call!(self, mailplug_connector_presets, call_by_domain(domain))
    }

    pub async fn validate(&mut self, settings: &ServerSettings) -> Result<Vec<Finding>, HostError> {
        call!(self, mailplug_connector_presets, call_validate(settings))
    }

    pub async fn oauth_google(&mut self) -> Result<OauthEndpoints, HostError> {
        call!(self, mailplug_connector_oauth, call_google())
    }

    pub async fn oauth_microsoft(&mut self, tenant: &str) -> Result<Result<OauthEndpoints, OauthFailure>, HostError> {
        call!(self, mailplug_connector_oauth, call_microsoft(tenant))
    }

    pub async fn oauth_begin(
        &mut self,
        e: &OauthEndpoints,
        c: &ClientRegistration,
        login_hint: Option<&str>,
    ) -> Result<Result<AuthorizationRequest, OauthFailure>, HostError> {
        call!(self, mailplug_connector_oauth, call_begin(e, c, login_hint))
    }

    pub async fn oauth_parse_redirect(&mut self, redirect: &str, state: &str) -> Result<Result<String, OauthFailure>, HostError> {
        call!(self, mailplug_connector_oauth, call_parse_redirect(redirect, state))
    }

    pub async fn oauth_token_request(
        &mut self,
        e: &OauthEndpoints,
        c: &ClientRegistration,
        code: &str,
        verifier: &str,
    ) -> Result<HttpRequest, HostError> {
        call!(self, mailplug_connector_oauth, call_token_request(e, c, code, verifier))
    }

    pub async fn oauth_refresh_request(
        &mut self,
        e: &OauthEndpoints,
        c: &ClientRegistration,
        refresh: &str,
    ) -> Result<HttpRequest, HostError> {
        call!(self, mailplug_connector_oauth, call_refresh_request(e, c, refresh))
    }

    pub async fn oauth_parse_token_response(
        &mut self,
        r: &HttpResponse,
        now: u64,
        previous_refresh: Option<&str>,
    ) -> Result<Result<Tokens, OauthFailure>, HostError> {
        call!(self, mailplug_connector_oauth, call_parse_token_response(r, now, previous_refresh))
    }

    pub async fn oauth_needs_refresh(&mut self, t: &Tokens, now: u64, margin_ms: u64) -> Result<bool, HostError> {
        call!(self, mailplug_connector_oauth, call_needs_refresh(t, now, margin_ms))
    }

    pub async fn open_outbound(
        &mut self,
        submission: &SubmissionServer,
        envelope_from: &str,
        envelope_to: &[String],
        message: &[u8],
        now: u64,
    ) -> Result<SessionHandle, HostError> {
        opened(call!(self, mailplug_connector_outbound, call_open(submission, envelope_from, envelope_to, message, now))?)
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
        opened(call!(self, mailplug_connector_outbound, call_open_batch(submission, envelopes, now))?)
    }

    /// A session that saves a copy of `message` into `folder` of an IMAP mailbox (IMAP APPEND).
    pub async fn open_save_copy(
        &mut self,
        mailbox: &GuestMailbox,
        folder: &str,
        message: &[u8],
        now: u64,
    ) -> Result<SessionHandle, HostError> {
        opened(call!(self, mailplug_connector_outbound, call_save_copy(mailbox, folder, message, now))?)
    }

    /// A session that checks a mailbox step by step without fetching or changing anything.
    pub async fn open_check_mailbox(&mut self, mailbox: &GuestMailbox, now: u64) -> Result<SessionHandle, HostError> {
        opened(call!(self, mailplug_connector_check, call_check_mailbox(mailbox, now))?)
    }

    /// A session that checks an SMTP server up to MAIL FROM / RCPT TO, then resets: nothing is sent.
    pub async fn open_check_submission(
        &mut self,
        submission: &SubmissionServer,
        envelope_from: &str,
        envelope_to: &[String],
        now: u64,
    ) -> Result<SessionHandle, HostError> {
        opened(call!(self, mailplug_connector_check, call_check_submission(submission, envelope_from, envelope_to, now))?)
    }

    /// The cause and the admin's action for an error, in English and German.
    pub async fn explain(&mut self, error: &GuestError) -> Result<Diagnosis, HostError> {
        call!(self, mailplug_connector_check, call_explain(error))
    }

    /// Gmail app passwords without the spaces Google shows them with; other passwords unchanged.
    pub async fn normalise_app_password(&mut self, password: &str) -> Result<String, HostError> {
        call!(self, mailplug_connector_presets, call_normalise_app_password(password))
    }

    pub async fn server(&mut self, s: SessionHandle) -> Result<GuestServer, HostError> {
        call!(self, mailplug_connector_session.session, call_server(s.0))
    }

    pub async fn handle(&mut self, s: SessionHandle, event: &Event, now: u64) -> Result<Vec<Action>, HostError> {
        call!(self, mailplug_connector_session.session, call_handle(s.0, event, now))?.map_err(HostError::from)
    }

    /// `handle` and `deadline` in one call (the session's `step`): the actions, and when to
    /// send `timer`.
    pub async fn step(&mut self, s: SessionHandle, event: &Event, now: u64) -> Result<(Vec<Action>, Option<u64>), HostError> {
        let r = call!(self, mailplug_connector_session.session, call_step(s.0, event, now))?;
        r.map(|x| (x.actions, x.deadline)).map_err(HostError::from)
    }

    pub async fn deadline(&mut self, s: SessionHandle) -> Result<Option<u64>, HostError> {
        call!(self, mailplug_connector_session.session, call_deadline(s.0))
    }

    pub async fn sync_state(&mut self, s: SessionHandle) -> Result<Option<Vec<u8>>, HostError> {
        call!(self, mailplug_connector_session.session, call_sync_state(s.0))
    }

    pub async fn drop_session(&mut self, s: SessionHandle) {
        // Dropping runs the guest's destructor: it gets a fresh budget like any other call,
        // or a host-side wait longer than the budget (a greeting or session timeout) would
        // make it trap and poison the instance for the explanation that follows.
        self.arm();
        let _ = s.0.resource_drop_async(&mut self.store).await;
    }
}
