//! The wit-bindgen glue: converts WIT values to the plain-Rust cores and back. No protocol
//! logic lives here.

use std::cell::RefCell;

use crate::{compose, config, diagnose, error, headers, imap, oauth, parse, plan, pop3, presets, sasl, session as core, smtp};

wit_bindgen::generate!({
    path: "../wit",
    world: "connector",
});

use exports::mailplug::connector::inbound::{self, AfterFetch, FirstSync, Mailbox as WitMailbox, Protocol};
use exports::mailplug::connector::outbound::{
    self, BatchEnvelope, ComposedMessage, Draft, FromPlan, Identity, Permission, Provider, ReplyDraft, SubmissionServer as WitSubmission,
    Text,
};
use exports::mailplug::connector::oauth::{
    self as oauth_wit, AuthorizationRequest, ClientRegistration, Endpoints, HttpRequest, HttpResponse, OauthFailure,
    OauthFailureKind, Tokens,
};
use exports::mailplug::connector::presets::{
    self as presets_wit, AuthSupport, Finding, Preset, ProtocolKind, ServerPreset, ServerSettings, Severity, UsernameForm,
};
use exports::mailplug::connector::check::{self, Diagnosis};
use exports::mailplug::connector::session::{
    self, Action, BatchReport, CheckSummary, Delivery, Event, FetchSummary, FetchedMessage, FolderCount, GuestSession,
    MessageResult, Outcome, RecipientResult, SendReport, SkippedMessage, Step, StepReport, Stepped,
};
use exports::mailplug::connector::parse::{self as parse_wit, Address, Attachment, Classification, ParsedMessage};
use exports::mailplug::connector::types::{
    Credentials, Error, ErrorDetail, Limits, MessageSize, Oauth2Mechanism, Refusal, RefusalCause, RetryAdvice, Security, Server,
    ServerReply, Stage,
};

pub(crate) struct Component;

/// A running session: any protocol core behind the one resource type.
pub(crate) struct SessionResource {
    inner: RefCell<Box<dyn core::Session>>,
}

impl GuestSession for SessionResource {
    fn server(&self) -> Server {
        server_to_wit(self.inner.borrow().server())
    }

    fn step(&self, event: Event, now: u64) -> Result<Stepped, Error> {
        let actions = self.handle(event, now)?;
        Ok(Stepped { actions, deadline: self.inner.borrow().deadline() })
    }

    fn handle(&self, event: Event, now: u64) -> Result<Vec<Action>, Error> {
        if let Event::MessageData(list) = event {
            // Batch submissions: the bytes move into the session (no copy), in order; clean
            // ones stay with the host.
            let mut inner = self.inner.borrow_mut();
            let mut actions = Vec::new();
            for d in list {
                let bytes = match d.bytes {
                    session::MessageBytes::Raw(raw) => core::MessageBytes::Raw(raw),
                    session::MessageBytes::Clean(c) => core::MessageBytes::Clean { size: c.size, eight_bit: c.eight_bit },
                };
                let more = inner.message_data(d.index, bytes, now).map_err(|mut e| {
                    e.redact(&inner.secret_forms());
                    e.quoted.clear();
                    error_to_wit(e)
                })?;
                actions.extend(more.into_iter().map(action_to_wit));
            }
            return Ok(actions);
        }
        if let Event::ReceivedArmed(bytes) = &event {
            // Cleaned like `received` (handle_checked).
            let actions = core::received_armed_checked(&mut **self.inner.borrow_mut(), bytes, now).map_err(error_to_wit)?;
            return Ok(actions.into_iter().map(action_to_wit).collect());
        }
        let ev = match &event {
            Event::Connected => core::Event::Connected,
            Event::Received(bytes) => core::Event::Received(bytes),
            Event::TlsEstablished => core::Event::TlsEstablished,
            Event::TlsFailed(why) => core::Event::TlsFailed(why),
            Event::Closed => core::Event::Closed,
            Event::Timer => core::Event::Timer,
            Event::Stored => core::Event::Stored,
            // Handled above; never reached.
            Event::MessageData(_) | Event::ReceivedArmed(_) => {
                return Err(error_to_wit(error::Error::protocol(error::Stage::Data, "message data out of place")))
            }
            Event::Stop => {
                let actions = core::stop_checked(&mut **self.inner.borrow_mut(), now).map_err(error_to_wit)?;
                return Ok(actions.into_iter().map(action_to_wit).collect());
            }
        };
        // handle_checked drops server text received before TLS from errors.
        let actions = core::handle_checked(&mut **self.inner.borrow_mut(), ev, now).map_err(error_to_wit)?;
        Ok(actions.into_iter().map(action_to_wit).collect())
    }

    fn deadline(&self) -> Option<u64> {
        self.inner.borrow().deadline()
    }

    fn sync_state(&self) -> Option<Vec<u8>> {
        self.inner.borrow().sync_state()
    }
}

impl session::Guest for Component {
    type Session = SessionResource;
}

impl parse_wit::Guest for Component {
    fn parse_message(raw: Vec<u8>) -> Result<ParsedMessage, String> {
        parse::parse_message(&raw).map(parsed_to_wit)
    }
}

impl inbound::Guest for Component {
    fn open(mailbox: WitMailbox, sync_state: Option<Vec<u8>>, _now: u64) -> Result<session::Session, Error> {
        let idle = mailbox.idle;
        let mailbox = mailbox_from_wit(mailbox);
        let state = sync_state.as_deref();
        let inner: Box<dyn core::Session> = match mailbox.protocol {
            config::InboundProtocol::Pop3 => Box::new(pop3::Pop3Session::new(mailbox, state).map_err(error_to_wit)?),
            config::InboundProtocol::Imap => {
                Box::new(imap::ImapSession::new(mailbox, state).map_err(error_to_wit)?.with_idle(idle))
            }
        };
        Ok(session::Session::new(SessionResource { inner: RefCell::new(inner) }))
    }

    fn resume(
        mailbox: WitMailbox,
        sync_state: Vec<u8>,
        idle_state: Vec<u8>,
        _now: u64,
    ) -> Result<session::Session, Error> {
        let mailbox = mailbox_from_wit(mailbox);
        let s = imap::ImapSession::resume(mailbox, &sync_state, &idle_state).map_err(error_to_wit)?;
        Ok(session::Session::new(SessionResource { inner: RefCell::new(Box::new(s)) }))
    }
}

fn mailbox_from_wit(mailbox: WitMailbox) -> config::Mailbox {
    config::Mailbox {
        protocol: match mailbox.protocol {
            Protocol::Pop3 => config::InboundProtocol::Pop3,
            Protocol::Imap => config::InboundProtocol::Imap,
        },
        server: server_from_wit(&mailbox.server),
        credentials: credentials_from_wit(mailbox.credentials),
        folders: mailbox.folders,
        limits: limits_from_wit(&mailbox.limits),
        after_fetch: match mailbox.after_fetch {
            AfterFetch::Keep => config::AfterFetch::Keep { mark_seen: false },
            AfterFetch::MarkSeen => config::AfterFetch::Keep { mark_seen: true },
            AfterFetch::Delete => config::AfterFetch::Delete,
            AfterFetch::MoveTo(folder) => config::AfterFetch::MoveTo(folder),
        },
        first_sync: match mailbox.first_sync {
            FirstSync::All => config::FirstSync::All,
            FirstSync::NewOnly => config::FirstSync::NewOnly,
            FirstSync::Newest(n) => config::FirstSync::Newest(n),
        },
    }
}

impl check::Guest for Component {
    fn check_mailbox(mailbox: WitMailbox, _now: u64) -> Result<session::Session, Error> {
        let mailbox = mailbox_from_wit(mailbox);
        let inner: Box<dyn core::Session> = match mailbox.protocol {
            config::InboundProtocol::Pop3 => Box::new(pop3::Pop3Session::check(mailbox).map_err(error_to_wit)?),
            config::InboundProtocol::Imap => Box::new(imap::ImapSession::check(mailbox).map_err(error_to_wit)?),
        };
        Ok(session::Session::new(SessionResource { inner: RefCell::new(inner) }))
    }

    fn check_submission(
        submission: WitSubmission,
        envelope_from: String,
        envelope_to: Vec<String>,
        _now: u64,
    ) -> Result<session::Session, Error> {
        let s = smtp::SmtpSession::check(submission_from_wit(submission), envelope_from, envelope_to)
            .map_err(error_to_wit)?;
        Ok(session::Session::new(SessionResource { inner: RefCell::new(Box::new(s)) }))
    }

    fn explain(error: Error) -> Diagnosis {
        let d = diagnose::explain(&error_from_wit(error));
        Diagnosis { cause: Text { en: d.cause_en, de: d.cause_de }, action: Text { en: d.action_en, de: d.action_de } }
    }
}

fn submission_from_wit(submission: WitSubmission) -> config::SubmissionServer {
    config::SubmissionServer {
        server: server_from_wit(&submission.server),
        credentials: credentials_from_wit(submission.credentials),
        helo_name: submission.helo_name,
        limits: limits_from_wit(&submission.limits),
    }
}

impl outbound::Guest for Component {
    fn plan_from(identity: Identity) -> Result<FromPlan, Error> {
        let input = plan::PlanInput {
            mailbox_address: identity.mailbox_address,
            mailbox_name: identity.mailbox_name,
            smtp_account: identity.smtp_account,
            provider: match identity.provider {
                Provider::Gmail => plan::Provider::Gmail,
                Provider::Microsoft => plan::Provider::Microsoft,
                Provider::Generic => plan::Provider::Generic,
            },
            permission: match identity.permission {
                Permission::None => plan::Permission::None,
                Permission::SendOnBehalf => plan::Permission::SendOnBehalf,
                Permission::SendAs => plan::Permission::SendAs,
            },
            gmail_alias_verified: identity.gmail_alias_verified,
        };
        let p = plan::plan(&input).map_err(error_to_wit)?;
        let text = |t: plan::Text| Text { en: t.en, de: t.de };
        Ok(FromPlan {
            from: headers::format_mailbox(&p.from),
            sender: p.sender.as_ref().map(headers::format_mailbox),
            reply_to: p.reply_to.as_ref().map(headers::format_mailbox),
            envelope_from: p.envelope_from,
            customer_sees: text(p.customer_sees),
            warnings: p.warnings.into_iter().map(text).collect(),
        })
    }

    fn compose_reply(draft: ReplyDraft) -> Result<ComposedMessage, Error> {
        // The plan comes back from the host as text: parse and validate it again.
        let fp = draft.plan;
        let parse = |field: &str, v: &str| headers::parse_mailbox(field, v).map_err(error_to_wit);
        let text = |t: Text| plan::Text { en: t.en, de: t.de };
        let p = plan::Plan {
            from: parse("From", &fp.from)?,
            sender: fp.sender.as_deref().map(|v| parse("Sender", v)).transpose()?,
            reply_to: fp.reply_to.as_deref().map(|v| parse("Reply-To", v)).transpose()?,
            envelope_from: fp.envelope_from,
            customer_sees: text(fp.customer_sees),
            warnings: fp.warnings.into_iter().map(text).collect(),
        };
        let d = compose::ReplyDraft {
            original: &draft.original,
            plan: &p,
            text_body: draft.text_body,
            html_body: draft.html_body,
            attachments: draft
                .attachments
                .into_iter()
                .map(|a| compose::OutgoingAttachment { name: a.name, media_type: a.media_type, bytes: a.bytes })
                .collect(),
            date_ms: draft.date,
            force: draft.force,
        };
        let c = compose::compose_reply(&d, nonce()?).map_err(error_to_wit)?;
        Ok(ComposedMessage {
            message_id: c.message_id,
            envelope_from: c.envelope_from,
            envelope_to: c.envelope_to,
            raw: c.raw,
        })
    }

    fn compose(draft: Draft) -> Result<ComposedMessage, Error> {
        let d = compose::Draft {
            from: draft.from,
            to: draft.to,
            subject: draft.subject,
            text_body: draft.text_body,
            date_ms: draft.date,
        };
        let c = compose::compose(&d, nonce()?).map_err(error_to_wit)?;
        Ok(ComposedMessage {
            message_id: c.message_id,
            envelope_from: c.envelope_from,
            envelope_to: c.envelope_to,
            raw: c.raw,
        })
    }

    fn open(
        submission: WitSubmission,
        envelope_from: String,
        envelope_to: Vec<String>,
        message: Vec<u8>,
        _now: u64,
    ) -> Result<session::Session, Error> {
        let s = smtp::SmtpSession::new(submission_from_wit(submission), envelope_from, envelope_to, message).map_err(error_to_wit)?;
        Ok(session::Session::new(SessionResource { inner: RefCell::new(Box::new(s)) }))
    }

    fn open_batch(submission: WitSubmission, messages: Vec<BatchEnvelope>, _now: u64) -> Result<session::Session, Error> {
        let messages = messages
            .into_iter()
            .map(|m| smtp::BatchEnvelope { message_id: m.message_id, envelope_from: m.envelope_from, envelope_to: m.envelope_to, size: m.size })
            .collect();
        let s = smtp::SmtpSession::new_batch(submission_from_wit(submission), messages).map_err(error_to_wit)?;
        Ok(session::Session::new(SessionResource { inner: RefCell::new(Box::new(s)) }))
    }

    fn save_copy(mailbox: WitMailbox, folder: String, message: Vec<u8>, _now: u64) -> Result<session::Session, Error> {
        let s = imap::AppendSession::new(mailbox_from_wit(mailbox), folder, message).map_err(error_to_wit)?;
        Ok(session::Session::new(SessionResource { inner: RefCell::new(Box::new(s)) }))
    }
}

/// A random nonce for Message-IDs and MIME boundaries, from WASI's random source.
fn nonce() -> Result<u64, Error> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|_| {
        error_to_wit(error::Error::invalid(error::Stage::Data, "no entropy available to make a Message-ID"))
    })?;
    Ok(u64::from_le_bytes(bytes))
}

impl oauth_wit::Guest for Component {
    fn google() -> Endpoints {
        endpoints_to_wit(oauth::google())
    }

    fn microsoft(tenant: String) -> Result<Endpoints, OauthFailure> {
        oauth::microsoft(&tenant)
            .map(endpoints_to_wit)
            .map_err(|e| OauthFailure { kind: OauthFailureKind::Invalid, message: e.message })
    }

    fn begin(endpoints: Endpoints, client: ClientRegistration, login_hint: Option<String>) -> Result<AuthorizationRequest, OauthFailure> {
        let mut random = [0u8; 64];
        getrandom::fill(&mut random).map_err(|_| OauthFailure {
            kind: OauthFailureKind::Invalid,
            message: "no secure random source is available to start the authorization".into(),
        })?;
        let r = oauth::authorization_request(&endpoints_from_wit(endpoints), &client_from_wit(client), login_hint.as_deref(), &random)
            .map_err(|e| OauthFailure { kind: OauthFailureKind::Invalid, message: e.message })?;
        Ok(AuthorizationRequest { url: r.url, state: r.state, code_verifier: r.code_verifier })
    }

    fn parse_redirect(redirect: String, expected_state: String) -> Result<String, OauthFailure> {
        oauth::parse_redirect(&redirect, &expected_state).map_err(failure_to_wit)
    }

    fn token_request(endpoints: Endpoints, client: ClientRegistration, code: String, code_verifier: String) -> HttpRequest {
        request_to_wit(oauth::token_request(&endpoints_from_wit(endpoints), &client_from_wit(client), &code, &code_verifier))
    }

    fn refresh_request(endpoints: Endpoints, client: ClientRegistration, refresh_token: String) -> HttpRequest {
        request_to_wit(oauth::refresh_request(&endpoints_from_wit(endpoints), &client_from_wit(client), &refresh_token))
    }

    fn parse_token_response(response: HttpResponse, now: u64, previous_refresh: Option<String>) -> Result<Tokens, OauthFailure> {
        let r = oauth::HttpResponse { status: response.status, headers: response.headers, body: response.body };
        oauth::parse_token_response(&r, now, previous_refresh.as_deref()).map(tokens_to_wit).map_err(failure_to_wit)
    }

    fn needs_refresh(tokens: Tokens, now: u64, margin_ms: u64) -> bool {
        oauth::needs_refresh(&tokens_from_wit(tokens), now, margin_ms)
    }
}

impl presets_wit::Guest for Component {
    fn catalogue() -> Vec<Preset> {
        presets::catalogue().into_iter().map(preset_to_wit).collect()
    }

    fn by_domain(domain: String) -> Option<Preset> {
        presets::by_domain(&domain).map(preset_to_wit)
    }

    fn validate(s: ServerSettings) -> Vec<Finding> {
        let settings = presets::ServerSettings {
            proto: match s.protocol {
                ProtocolKind::Pop3 => presets::Proto::Pop3,
                ProtocolKind::Imap => presets::Proto::Imap,
                ProtocolKind::Smtp => presets::Proto::Smtp,
            },
            host: &s.host,
            port: s.port,
            tls: s.tls,
            oauth2: s.oauth2,
            has_password: s.has_password,
            username: &s.username,
            password: s.password.as_deref(),
        };
        presets::validate(&settings)
            .into_iter()
            .map(|f| Finding {
                severity: match f.severity {
                    presets::Severity::Error => Severity::Error,
                    presets::Severity::Warning => Severity::Warning,
                },
                field: f.field,
                text: Text { en: f.en, de: f.de },
            })
            .collect()
    }

    fn normalise_app_password(password: String) -> String {
        presets::normalise_app_password(&password)
    }
}

fn preset_to_wit(p: presets::Preset) -> Preset {
    let server = |s: Option<presets::ServerPreset>| s.map(|s| ServerPreset { host: s.host, port: s.port, tls: s.tls });
    Preset {
        id: p.id.to_string(),
        name: p.name.to_string(),
        domains: p.domains.iter().map(|d| d.to_string()).collect(),
        pop3: server(p.pop3),
        imap: server(p.imap),
        smtp: server(p.smtp),
        username: match p.username {
            presets::UsernameForm::FullAddress => UsernameForm::FullAddress,
            presets::UsernameForm::LocalPart => UsernameForm::LocalPart,
        },
        auth: p
            .auth
            .into_iter()
            .map(|a| match a {
                presets::AuthSupport::Basic => AuthSupport::Basic,
                presets::AuthSupport::AppPasswordRequired => AuthSupport::AppPasswordRequired,
                presets::AuthSupport::OAuth2 { provider } => AuthSupport::Oauth2(provider.to_string()),
            })
            .collect(),
        smtp_provider: match p.smtp_provider {
            plan::Provider::Gmail => Provider::Gmail,
            plan::Provider::Microsoft => Provider::Microsoft,
            plan::Provider::Generic => Provider::Generic,
        },
        notes: p.notes.into_iter().map(|n| Text { en: n.en, de: n.de }).collect(),
        source: p.source.to_string(),
    }
}

fn endpoints_to_wit(e: oauth::Endpoints) -> Endpoints {
    Endpoints {
        authorization_endpoint: e.authorization_endpoint,
        token_endpoint: e.token_endpoint,
        scopes: e.scopes,
        extra_authorization_params: e.extra_authorization_params,
    }
}

fn endpoints_from_wit(e: Endpoints) -> oauth::Endpoints {
    oauth::Endpoints {
        authorization_endpoint: e.authorization_endpoint,
        token_endpoint: e.token_endpoint,
        scopes: e.scopes,
        extra_authorization_params: e.extra_authorization_params,
    }
}

fn client_from_wit(c: ClientRegistration) -> oauth::ClientRegistration {
    oauth::ClientRegistration { client_id: c.client_id, client_secret: c.client_secret, redirect_uri: c.redirect_uri }
}

fn request_to_wit(r: oauth::HttpRequest) -> HttpRequest {
    HttpRequest { method: r.method, url: r.url, headers: r.headers, body: r.body }
}

fn tokens_to_wit(t: oauth::Tokens) -> Tokens {
    Tokens {
        access_token: t.access_token,
        refresh_token: t.refresh_token,
        expires_at: t.expires_at_ms,
        scopes: t.scopes,
        account: t.account,
    }
}

fn tokens_from_wit(t: Tokens) -> oauth::Tokens {
    oauth::Tokens {
        access_token: t.access_token,
        refresh_token: t.refresh_token,
        expires_at_ms: t.expires_at,
        scopes: t.scopes,
        account: t.account,
    }
}

fn failure_to_wit(e: oauth::OAuthError) -> OauthFailure {
    let kind = match &e {
        oauth::OAuthError::StateMismatch => OauthFailureKind::StateMismatch,
        oauth::OAuthError::AccessDenied { .. } => OauthFailureKind::AccessDenied,
        oauth::OAuthError::AuthorizationFailed { .. } => OauthFailureKind::AuthorizationFailed,
        oauth::OAuthError::NeedsReauthorization { .. } => OauthFailureKind::NeedsReauthorization,
        oauth::OAuthError::Transient { .. } => OauthFailureKind::Transient,
        oauth::OAuthError::Invalid { .. } => OauthFailureKind::Invalid,
    };
    OauthFailure { kind, message: e.message() }
}


fn server_from_wit(s: &Server) -> config::Server {
    config::Server {
        host: s.host.clone(),
        port: s.port,
        security: match s.security {
            Security::ImplicitTls => config::Security::ImplicitTls,
            Security::Starttls => config::Security::Starttls,
            Security::InsecurePlaintext => config::Security::InsecurePlaintext,
        },
    }
}

fn server_to_wit(s: &config::Server) -> Server {
    Server {
        host: s.host.clone(),
        port: s.port,
        security: match s.security {
            config::Security::ImplicitTls => Security::ImplicitTls,
            config::Security::Starttls => Security::Starttls,
            config::Security::InsecurePlaintext => Security::InsecurePlaintext,
        },
    }
}

fn credentials_from_wit(c: Credentials) -> config::Credentials {
    match c {
        Credentials::Basic(b) => config::Credentials::Basic { username: b.username, password: b.password },
        Credentials::Oauth2(o) => config::Credentials::OAuth2 {
            username: o.username,
            access_token: o.access_token,
            mechanism: o.mechanism.map(|m| match m {
                Oauth2Mechanism::Oauthbearer => sasl::Mechanism::OAuthBearer,
                Oauth2Mechanism::Xoauth2 => sasl::Mechanism::XOAuth2,
            }),
        },
    }
}

fn limits_from_wit(l: &Limits) -> config::Limits {
    config::Limits {
        max_line_bytes: l.max_line_bytes,
        max_message_bytes: l.max_message_bytes,
        max_batch_messages: l.max_batch_messages,
        max_batch_bytes: l.max_batch_bytes,
        reply_timeout_ms: l.reply_timeout_ms,
    }
}

fn reply_to_wit(r: error::ServerReply) -> ServerReply {
    ServerReply { code: r.code, text: r.text }
}

fn retry_to_wit(r: error::Retry) -> RetryAdvice {
    match r {
        error::Retry::FixFirst => RetryAdvice::FixFirst,
        error::Retry::Later => RetryAdvice::Later,
        error::Retry::Uncertain => RetryAdvice::Uncertain,
    }
}

fn retry_from_wit(r: RetryAdvice) -> error::Retry {
    match r {
        RetryAdvice::FixFirst => error::Retry::FixFirst,
        RetryAdvice::Later => error::Retry::Later,
        RetryAdvice::Uncertain => error::Retry::Uncertain,
    }
}

fn recipient_to_wit(x: core::RecipientResult) -> RecipientResult {
    RecipientResult { address: x.address, accepted: x.accepted, reply: reply_to_wit(x.reply), retry: x.retry.map(retry_to_wit) }
}

fn recipient_from_wit(x: RecipientResult) -> core::RecipientResult {
    core::RecipientResult {
        address: x.address,
        accepted: x.accepted,
        reply: error::ServerReply::new(x.reply.code, x.reply.text),
        retry: x.retry.map(retry_from_wit),
    }
}

fn refusal_to_wit(d: ErrorDetail, r: Option<error::Refusal>) -> Refusal {
    let r = r.unwrap_or(error::Refusal { cause: error::RefusalCause::Recipients, recipients: Vec::new() });
    let cause = match r.cause {
        error::RefusalCause::Recipients => RefusalCause::Recipients,
        error::RefusalCause::MessageTooBig { size, server_limit } => RefusalCause::MessageTooBig(MessageSize { size, server_limit }),
    };
    Refusal { detail: d, cause, recipients: r.recipients.into_iter().map(recipient_to_wit).collect() }
}

fn refusal_from_wit(r: Refusal) -> (ErrorDetail, error::Refusal) {
    let cause = match r.cause {
        RefusalCause::Recipients => error::RefusalCause::Recipients,
        RefusalCause::MessageTooBig(m) => error::RefusalCause::MessageTooBig { size: m.size, server_limit: m.server_limit },
    };
    (r.detail, error::Refusal { cause, recipients: r.recipients.into_iter().map(recipient_from_wit).collect() })
}

pub(crate) fn error_to_wit(e: error::Error) -> Error {
    let stage = match e.stage {
        error::Stage::Connect => Stage::Connect,
        error::Stage::Greeting => Stage::Greeting,
        error::Stage::Capabilities => Stage::Capabilities,
        error::Stage::Starttls => Stage::Starttls,
        error::Stage::Authenticate => Stage::Authenticate,
        error::Stage::SelectMailbox => Stage::SelectMailbox,
        error::Stage::ListMessages => Stage::ListMessages,
        error::Stage::FetchMessage => Stage::FetchMessage,
        error::Stage::Envelope => Stage::Envelope,
        error::Stage::Data => Stage::Data,
        error::Stage::Logout => Stage::Logout,
    };
    let d = ErrorDetail { stage, message: e.message, reply: e.reply.map(reply_to_wit), retry: retry_to_wit(e.retry) };
    match e.kind {
        error::ErrorKind::Network => Error::Network(d),
        error::ErrorKind::Tls => Error::Tls(d),
        error::ErrorKind::AuthRejected => Error::AuthRejected(d),
        error::ErrorKind::Protocol => Error::Protocol(d),
        error::ErrorKind::Refused => Error::Refused(refusal_to_wit(d, e.refusal)),
        error::ErrorKind::Policy => Error::Policy(d),
        error::ErrorKind::Limit => Error::Limit(d),
        error::ErrorKind::Timeout => Error::Timeout(d),
        error::ErrorKind::InvalidInput => Error::InvalidInput(d),
    }
}

fn error_from_wit(e: Error) -> error::Error {
    let mut refusal = None;
    let (kind, d) = match e {
        Error::Refused(r) => {
            let (d, r) = refusal_from_wit(r);
            refusal = Some(r);
            (error::ErrorKind::Refused, d)
        }
        Error::Network(d) => (error::ErrorKind::Network, d),
        Error::Tls(d) => (error::ErrorKind::Tls, d),
        Error::AuthRejected(d) => (error::ErrorKind::AuthRejected, d),
        Error::Protocol(d) => (error::ErrorKind::Protocol, d),
        Error::Policy(d) => (error::ErrorKind::Policy, d),
        Error::Limit(d) => (error::ErrorKind::Limit, d),
        Error::Timeout(d) => (error::ErrorKind::Timeout, d),
        Error::InvalidInput(d) => (error::ErrorKind::InvalidInput, d),
    };
    let stage = match d.stage {
        Stage::Connect => error::Stage::Connect,
        Stage::Greeting => error::Stage::Greeting,
        Stage::Capabilities => error::Stage::Capabilities,
        Stage::Starttls => error::Stage::Starttls,
        Stage::Authenticate => error::Stage::Authenticate,
        Stage::SelectMailbox => error::Stage::SelectMailbox,
        Stage::ListMessages => error::Stage::ListMessages,
        Stage::FetchMessage => error::Stage::FetchMessage,
        Stage::Envelope => error::Stage::Envelope,
        Stage::Data => error::Stage::Data,
        Stage::Logout => error::Stage::Logout,
    };
    let mut err = error::Error::new(kind, stage, d.message).with_retry(retry_from_wit(d.retry));
    err.reply = d.reply.map(|r| error::ServerReply::new(r.code, r.text));
    err.refusal = refusal;
    err
}

fn action_to_wit(a: core::Action) -> Action {
    match a {
        core::Action::Write(b) => Action::Write(b),
        core::Action::StartTls => Action::StartTls,
        // Raw bytes only: the host parses each message with `parse.parse-message`, with its own
        // budget, so a message that cannot be parsed never ends the session.
        core::Action::Deliver(m) => Action::Deliver(FetchedMessage { id: m.id, folder: m.folder, raw: m.raw }),
        core::Action::Skipped(m) => {
            Action::Skipped(SkippedMessage { id: m.id, folder: m.folder, size: m.size, reason: m.reason })
        }
        core::Action::Close => Action::Close,
        core::Action::Progress(r) => Action::Progress(StepReport { step: step_to_wit(r.step), detail: r.detail }),
        core::Action::Finished(core::Outcome::Checked(c)) => Action::Finished(Outcome::Checked(CheckSummary {
            folders: c.folders.into_iter().map(|f| FolderCount { folder: f.folder, messages: f.messages }).collect(),
        })),
        core::Action::Finished(core::Outcome::Fetched(s)) => {
            Action::Finished(Outcome::Fetched(FetchSummary {
                delivered: s.delivered,
                remaining: s.remaining,
                skipped: s.skipped,
            }))
        }
        core::Action::Finished(core::Outcome::Appended(c)) => Action::Finished(Outcome::Appended(session::SavedCopy {
            folder: c.folder,
            uid_validity: c.uid_validity,
            uid: c.uid,
            created_folder: c.created_folder,
        })),
        core::Action::CommitPoint(i) => Action::CommitPoint(i),
        core::Action::NeedMessage(i) => Action::NeedMessage(i),
        core::Action::WriteMessage(i) => Action::WriteMessage(i),
        core::Action::ArmWrite(a) => Action::ArmWrite(session::ArmedWrite {
            lines: a.lines.into_iter().map(String::from).collect(),
            max_line: a.max_line,
            message: a.message,
            after: a.after,
        }),
        core::Action::Idle(i) => Action::Idle(session::Idling {
            idle_state: i.idle_state,
            sync_state: i.sync_state,
            summary: FetchSummary { delivered: i.summary.delivered, remaining: i.summary.remaining, skipped: i.summary.skipped },
        }),
        core::Action::MessageDone(r) => Action::MessageDone(MessageResult {
            index: r.index,
            message_id: r.message_id,
            delivery: match r.delivery {
                core::Delivery::Delivered => Delivery::Delivered,
                core::Delivery::Transient => Delivery::Transient,
                core::Delivery::Permanent => Delivery::Permanent,
                core::Delivery::Uncertain => Delivery::Uncertain,
                core::Delivery::NotSent => Delivery::NotSent,
            },
            final_reply: r.final_reply.map(reply_to_wit),
            recipients: r.recipients.into_iter().map(recipient_to_wit).collect(),
            error: r.error.map(error_to_wit),
        }),
        core::Action::Finished(core::Outcome::SentBatch(r)) => Action::Finished(Outcome::SentBatch(BatchReport {
            delivered: r.delivered,
            not_delivered: r.not_delivered,
            stopped: r.stopped.map(error_to_wit),
        })),
        core::Action::Finished(core::Outcome::Sent(r)) => Action::Finished(Outcome::Sent(SendReport {
            final_reply: reply_to_wit(r.final_reply),
            recipients: r
                .recipients
                .into_iter()
                .map(recipient_to_wit)
                .collect(),
        })),
    }
}

fn step_to_wit(s: core::Step) -> Step {
    match s {
        core::Step::Greeting => Step::Greeting,
        core::Step::Capabilities => Step::Capabilities,
        core::Step::Starttls => Step::Starttls,
        core::Step::Mechanisms => Step::Mechanisms,
        core::Step::Login => Step::Login,
        core::Step::Folder => Step::Folder,
        core::Step::Envelope => Step::Envelope,
        core::Step::Reset => Step::Reset,
        core::Step::Logout => Step::Logout,
    }
}

fn addresses_to_wit(v: Vec<parse::Address>) -> Vec<Address> {
    v.into_iter().map(|a| Address { name: a.name, address: a.address }).collect()
}

fn parsed_to_wit(p: parse::ParsedMessage) -> ParsedMessage {
    ParsedMessage {
        message_id: p.message_id,
        message_id_synthetic: p.message_id_synthetic,
        in_reply_to: p.in_reply_to,
        references: p.references,
        from: addresses_to_wit(p.from),
        reply_to: addresses_to_wit(p.reply_to),
        to: addresses_to_wit(p.to),
        cc: addresses_to_wit(p.cc),
        subject: p.subject,
        date_ms: p.date_ms,
        text_body: p.text_body.map(String::into_bytes),
        html_body: p.html_body.map(String::into_bytes),
        attachments: p
            .attachments
            .into_iter()
            .map(|a| Attachment {
                name: a.name,
                media_type: a.media_type,
                size: a.size,
                content_id: a.content_id,
                bytes: a.bytes,
            })
            .collect(),
        classification: match p.classification {
            parse::Classification::Normal => Classification::Normal,
            parse::Classification::AutoReply => Classification::AutoReply,
            parse::Classification::Bulk => Classification::Bulk,
            parse::Classification::Bounce => Classification::Bounce,
        },
        warnings: p.warnings,
    }
}

export!(Component);
