//! The connection check ("test connection"): each server of a mailbox or queue step by step,
//! with the time each step took, stopping at the first failure with its cause and the admin's
//! action in English and German. Resolving, connecting and implicit TLS are the host's steps;
//! the component reports the protocol steps (`progress`) of a check session, which fetches,
//! sends and changes nothing.
//!
//! `check_mailbox_live` / `check_queue_live` also tell an observer each step as it starts (the
//! host's steps) and as it passes (every step), for the admin page's "Test connection".

use std::time::Instant as Clock;

use crate::config::{AuthKind, Protocol, Security, ServerConfig, TenantConfig};
use crate::driver::{drive_on, now_ms, MessageSink};
use crate::engine::{Diagnosis, FetchedMessage, GuestMailbox, Instance, Outcome, Plugin, Stage, Step, StepReport, SubmissionServer};
use crate::error::HostError;
use crate::net::{resolve, Conn};
use crate::ops::{self, ConfigFinding};
use crate::store::SyncStateStore;

/// A sentence in English and German.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bilingual {
    pub en: String,
    pub de: String,
}

/// One step that passed.
#[derive(Clone, Debug)]
pub struct StepResult {
    /// "settings", "token", "resolve", "connect", "tls", then the component's steps:
    /// "greeting", "capabilities", "starttls", "mechanisms", "login", "folder", "envelope",
    /// "reset", "logout".
    pub step: &'static str,
    /// Milliseconds since the previous step ended.
    pub ms: u64,
    pub detail: String,
}

/// The step that failed, what the error said, and what it means for the admin.
#[derive(Clone, Debug)]
pub struct StepFailure {
    pub step: &'static str,
    pub ms: u64,
    /// The error as reported (never with secrets).
    pub error: String,
    /// More than the headline, when there is more (`HostError::detail`: the TLS library's words).
    pub detail: Option<String>,
    pub cause: Bilingual,
    pub action: Bilingual,
}

/// The check of one server.
#[derive(Clone, Debug)]
pub struct CheckReport {
    /// `mailbox "support"` or `queue "support"`.
    pub target: String,
    /// "imap", "pop3" or "smtp".
    pub protocol: &'static str,
    /// host:port.
    pub server: String,
    /// "tls", "starttls" or "plaintext".
    pub security: &'static str,
    pub steps: Vec<StepResult>,
    pub failure: Option<StepFailure>,
    /// Inbound: the folders and their message counts.
    pub folders: Vec<(String, u32)>,
}

impl CheckReport {
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }
}

fn step_name(s: Step) -> &'static str {
    match s {
        Step::Greeting => "greeting",
        Step::Capabilities => "capabilities",
        Step::Starttls => "starttls",
        Step::Mechanisms => "mechanisms",
        Step::Login => "login",
        Step::Folder => "folder",
        Step::Envelope => "envelope",
        Step::Reset => "reset",
        Step::Logout => "logout",
    }
}

/// Where a component error happened, as a check step.
fn stage_step(s: Stage) -> &'static str {
    match s {
        Stage::Connect => "connect",
        Stage::Greeting => "greeting",
        Stage::Capabilities => "capabilities",
        Stage::Starttls => "starttls",
        Stage::Authenticate => "login",
        Stage::SelectMailbox | Stage::ListMessages | Stage::FetchMessage => "folder",
        Stage::Envelope | Stage::Data => "envelope",
        Stage::Logout => "logout",
    }
}

/// What a live check tells its observer as it goes.
#[derive(Debug)]
pub enum LiveStep<'a> {
    /// A host step ("settings", "token", "resolve", "connect", "tls") is starting, or the
    /// component's session is ("greeting": its first step).
    Running(&'static str),
    /// A step passed.
    Passed(&'a StepResult),
}

/// The observer of a live check.
pub type Observer<'o> = &'o mut dyn FnMut(LiveStep<'_>);

/// Collects the component's step reports with their timings; a check delivers no messages.
struct Steps<'o> {
    mark: Clock,
    steps: Vec<StepResult>,
    observer: Observer<'o>,
}

impl<'o> Steps<'o> {
    fn new(observer: Observer<'o>) -> Self {
        Steps { mark: Clock::now(), steps: Vec::new(), observer }
    }
    fn running(&mut self, step: &'static str) {
        (self.observer)(LiveStep::Running(step));
    }
    /// Milliseconds since the last step ended, restarting the clock.
    fn lap(&mut self) -> u64 {
        let ms = self.mark.elapsed().as_millis() as u64;
        self.mark = Clock::now();
        ms
    }
    fn pass(&mut self, step: &'static str, detail: impl Into<String>) {
        let ms = self.lap();
        self.steps.push(StepResult { step, ms, detail: detail.into() });
        if let Some(last) = self.steps.last() {
            (self.observer)(LiveStep::Passed(last));
        }
    }
}

impl MessageSink for Steps<'_> {
    fn deliver(&mut self, _message: FetchedMessage) -> Result<(), HostError> {
        Err(HostError::Plugin("the component delivered a message during a check".into()))
    }
    fn commit(&mut self) -> Result<(), HostError> {
        Ok(())
    }
    fn progress(&mut self, report: StepReport) {
        self.pass(step_name(report.step), report.detail);
    }
}

/// What to check, once its credentials are known.
enum Target<'a> {
    Mailbox { mailbox: GuestMailbox },
    Queue { submission: SubmissionServer, from: String, to: &'a [String] },
}

fn security_name(s: Security) -> &'static str {
    match s {
        Security::ImplicitTls => "tls",
        Security::Starttls => "starttls",
        Security::InsecurePlaintext => "plaintext",
    }
}

/// Checks one mailbox. `findings` are the configuration's validation findings: an error among
/// them for this mailbox stops the check at the "settings" step, before anything connects.
pub async fn check_mailbox(
    plugin: &Plugin,
    cfg: &TenantConfig,
    store: &dyn SyncStateStore,
    name: &str,
    findings: &[ConfigFinding],
) -> Result<CheckReport, HostError> {
    check_mailbox_live(plugin, cfg, store, name, findings, &mut |_| {}).await
}

/// `check_mailbox`, telling `observer` each step as it starts and passes.
pub async fn check_mailbox_live(
    plugin: &Plugin,
    cfg: &TenantConfig,
    store: &dyn SyncStateStore,
    name: &str,
    findings: &[ConfigFinding],
    observer: Observer<'_>,
) -> Result<CheckReport, HostError> {
    let m = cfg
        .mailbox(name)
        .ok_or_else(|| HostError::NotFound(format!("no mailbox named \"{name}\" in the configuration")))?;
    let protocol = if m.protocol == Protocol::Pop3 { "pop3" } else { "imap" };
    let label = format!("mailbox \"{name}\"");
    let mut instance = ops::instance_for(plugin, cfg).await?;
    let mut report = new_report(label.clone(), protocol, &m.server);
    let mut steps = Steps::new(observer);
    if !settings_step(&mut report, &mut steps, &label, findings) {
        return Ok(report);
    }
    let credentials = match credentials_step(&mut instance, cfg, store, &m.server, &mut steps).await {
        Ok(c) => c,
        Err(e) => return Ok(fail(&mut instance, report, steps, "token", Stage::Authenticate, e).await),
    };
    let mailbox = ops::guest_mailbox(cfg, m, credentials);
    run(&mut instance, cfg, &m.server, Target::Mailbox { mailbox }, report, steps).await
}

/// Checks one queue's SMTP server with a MAIL FROM / RCPT TO probe that is reset: nothing is
/// sent. The probe goes from the queue's sender address to `probe_to`, by default to that
/// same address.
pub async fn check_queue(
    plugin: &Plugin,
    cfg: &TenantConfig,
    store: &dyn SyncStateStore,
    name: &str,
    probe_to: Option<&str>,
    findings: &[ConfigFinding],
) -> Result<CheckReport, HostError> {
    check_queue_live(plugin, cfg, store, name, probe_to, findings, &mut |_| {}).await
}

/// `check_queue`, telling `observer` each step as it starts and passes.
pub async fn check_queue_live(
    plugin: &Plugin,
    cfg: &TenantConfig,
    store: &dyn SyncStateStore,
    name: &str,
    probe_to: Option<&str>,
    findings: &[ConfigFinding],
    observer: Observer<'_>,
) -> Result<CheckReport, HostError> {
    let q = cfg.queue(name).ok_or_else(|| HostError::NotFound(format!("no queue named \"{name}\" in the configuration")))?;
    let label = format!("queue \"{name}\"");
    let mut instance = ops::instance_for(plugin, cfg).await?;
    let mut report = new_report(label.clone(), "smtp", &q.smtp);
    let mut steps = Steps::new(observer);
    if !settings_step(&mut report, &mut steps, &format!("{label} smtp"), findings) {
        return Ok(report);
    }
    let from = ops::queue_from(cfg, q)?;
    let to = vec![probe_to.map_or_else(|| from.clone(), str::to_string)];
    let credentials = match credentials_step(&mut instance, cfg, store, &q.smtp, &mut steps).await {
        Ok(c) => c,
        Err(e) => return Ok(fail(&mut instance, report, steps, "token", Stage::Authenticate, e).await),
    };
    let submission = ops::submission_server(cfg, q, credentials);
    run(&mut instance, cfg, &q.smtp, Target::Queue { submission, from, to: &to }, report, steps).await
}

fn new_report(target: String, protocol: &'static str, s: &ServerConfig) -> CheckReport {
    CheckReport {
        target,
        protocol,
        server: format!("{}:{}", s.host, s.port),
        security: security_name(s.security),
        steps: Vec::new(),
        failure: None,
        folders: Vec::new(),
    }
}

/// The "settings" step: the validation findings for this server. False when one is an error.
fn settings_step(report: &mut CheckReport, steps: &mut Steps<'_>, server: &str, findings: &[ConfigFinding]) -> bool {
    steps.running("settings");
    let mine: Vec<&ConfigFinding> = findings.iter().filter(|f| f.server == server).collect();
    if let Some(f) = mine.iter().find(|f| f.error) {
        let ms = steps.lap();
        report.failure = Some(StepFailure {
            step: "settings",
            ms,
            error: format!("{} ({})", f.en, f.field),
            detail: None,
            cause: Bilingual { en: f.en.clone(), de: f.de.clone() },
            action: Bilingual {
                en: format!("Change the setting \"{}\" as described, then run the check again.", f.field),
                de: format!("Ändern Sie die Einstellung \"{}\" wie beschrieben und wiederholen Sie den Test.", f.field),
            },
        });
        return false;
    }
    let detail = if mine.is_empty() {
        "no problems found".to_string()
    } else {
        mine.iter().map(|f| format!("warning: {}", f.en)).collect::<Vec<_>>().join("; ")
    };
    steps.pass("settings", detail);
    true
}

/// The credentials; for OAuth2 the "token" step (a stored token, refreshed when due).
async fn credentials_step(
    instance: &mut Instance,
    cfg: &TenantConfig,
    store: &dyn SyncStateStore,
    server: &ServerConfig,
    steps: &mut Steps<'_>,
) -> Result<crate::engine::Credentials, HostError> {
    if server.auth == AuthKind::Oauth2 {
        steps.running("token");
    }
    let c = ops::credentials_for(instance, cfg, store, server, false).await?;
    if server.auth == AuthKind::Oauth2 {
        steps.pass("token", "an OAuth2 access token is stored and valid (refreshed if it was due)");
    }
    Ok(c)
}

async fn run(
    instance: &mut Instance,
    cfg: &TenantConfig,
    server: &ServerConfig,
    target: Target<'_>,
    mut report: CheckReport,
    mut steps: Steps<'_>,
) -> Result<CheckReport, HostError> {
    let allowed = ops::allowed_servers(cfg);
    let opts = ops::options(cfg, &allowed)?;
    let timeout = opts.connect_timeout;
    steps.lap();
    steps.running("resolve");
    let addrs = match resolve(&server.host, server.port, timeout).await {
        Ok(a) => a,
        Err(e) => return Ok(fail(instance, report, steps, "resolve", Stage::Connect, e).await),
    };
    let shown: Vec<String> = addrs.iter().take(4).map(|a| a.ip().to_string()).collect();
    steps.pass("resolve", format!("{} -> {}", server.host, shown.join(", ")));
    steps.running("connect");
    let mut conn = match Conn::open_tcp(&server.host, server.port, &addrs, opts.tls.clone(), timeout).await {
        Ok(c) => c,
        Err(e) => return Ok(fail(instance, report, steps, "connect", Stage::Connect, e).await),
    };
    steps.pass("connect", format!("TCP connection to port {} open", server.port));
    if server.security == Security::ImplicitTls {
        steps.running("tls");
        if let Err(e) = conn.handshake(timeout).await {
            conn.close().await;
            return Ok(fail(instance, report, steps, "tls", Stage::Connect, e).await);
        }
        let version = conn.tls_version().unwrap_or_else(|| "TLS".into());
        steps.pass("tls", format!("{version}; the certificate is valid for {}", server.host));
    }
    let opened = match &target {
        Target::Mailbox { mailbox } => instance.open_check_mailbox(mailbox, now_ms()).await,
        Target::Queue { submission, from, to } => instance.open_check_submission(submission, from, to, now_ms()).await,
    };
    let session = match opened {
        Ok(s) => s,
        Err(e) => {
            conn.close().await;
            return Ok(fail(instance, report, steps, "settings", Stage::Connect, e).await);
        }
    };
    steps.running("greeting");
    let outcome = drive_on(instance, session, &mut conn, &opts, &mut steps).await;
    // Explained before the session is dropped (dropping renews the CPU budget like any call,
    // see `Instance::drop_session`; explaining first keeps the explanation independent of
    // whatever the guest's destructor does).
    let result = match outcome {
        Ok(Outcome::Checked(summary)) => {
            report.steps.append(&mut steps.steps);
            report.folders = summary.folders.into_iter().map(|f| (f.folder, f.messages)).collect();
            Ok(report)
        }
        Ok(_) => Err(HostError::Plugin("the component ended a check with another outcome".into())),
        Err(e) => {
            let (step, stage) = match &e {
                HostError::Guest(g) => (stage_step(g.stage_id), g.stage_id),
                HostError::NoGreeting { .. } => ("greeting", Stage::Greeting),
                // The host's read or write failed: blame the step after the last one that passed.
                _ if steps.steps.is_empty() => ("greeting", Stage::Greeting),
                _ => ("session", Stage::Logout),
            };
            Ok(fail(instance, report, steps, step, stage, e).await)
        }
    };
    instance.drop_session(session).await;
    result
}

/// Ends a report at `step` with the error and its explanation.
async fn fail(
    instance: &mut Instance,
    mut report: CheckReport,
    mut steps: Steps<'_>,
    step: &'static str,
    stage: Stage,
    e: HostError,
) -> CheckReport {
    let ms = steps.lap();
    report.steps.append(&mut steps.steps);
    let (cause, action) = match explain(instance, &e, stage).await {
        Some(d) => (Bilingual { en: d.cause.en, de: d.cause.de }, Bilingual { en: d.action.en, de: d.action.de }),
        None => host_explanation(&e),
    };
    let detail = e.detail().map(str::to_string);
    report.failure = Some(StepFailure { step, ms, error: e.to_string().replace('\n', " "), detail, cause, action });
    report
}

/// The component's explanation of an error about a server, if it is one.
pub async fn explain(instance: &mut Instance, e: &HostError, stage: Stage) -> Option<Diagnosis> {
    let guest = e.to_guest_error(stage)?;
    instance.explain(&guest).await.ok()
}

/// Errors the component cannot explain because they are about the host: OAuth2 tokens,
/// configuration, storage.
fn host_explanation(e: &HostError) -> (Bilingual, Bilingual) {
    match e {
        HostError::OAuth { needs_reauthorization: true, message, .. } => (
            Bilingual { en: format!("The OAuth2 authorization is no longer valid: {message}"), de: "Die OAuth2-Autorisierung ist nicht mehr gültig (widerrufen, abgelaufen oder Kennwort geändert).".into() },
            Bilingual {
                en: "Run `mailplug oauth login` for this mailbox or queue and consent again in the browser.".into(),
                de: "Führen Sie `mailplug oauth login` für dieses Postfach bzw. diese Queue aus und stimmen Sie im Browser erneut zu.".into(),
            },
        ),
        HostError::OAuth { message, .. } => (
            Bilingual { en: format!("The OAuth2 token could not be obtained: {message}"), de: "Das OAuth2-Token konnte nicht beschafft werden.".into() },
            Bilingual {
                en: "Check the [oauth] settings and that the provider's token endpoint is reachable, then try again; if no token is stored yet, run `mailplug oauth login`.".into(),
                de: "Prüfen Sie die [oauth]-Einstellungen und ob der Token-Endpunkt des Anbieters erreichbar ist, und versuchen Sie es erneut; ist noch kein Token gespeichert, führen Sie `mailplug oauth login` aus.".into(),
            },
        ),
        other => (
            Bilingual { en: other.to_string(), de: format!("Der Test ist fehlgeschlagen: {other}") },
            Bilingual {
                en: "Fix what the message names, then run the check again.".into(),
                de: "Beheben Sie die genannte Ursache und wiederholen Sie den Test.".into(),
            },
        ),
    }
}
