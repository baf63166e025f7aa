//! Host errors: everything an operation can fail with, worded for the admin.

use std::fmt;

use crate::engine::{ErrorDetail, GuestError, RecipientResult, RetryAdvice, Stage};

/// The details of an ordinary refusal (the WIT `refusal`, `refusal-cause`, `message-size`).
pub use crate::engine::exports::mailplug::connector::types::{MessageSize, Refusal, RefusalCause};

/// The kind of a guest-reported error, mirroring the WIT `error` variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Network,
    Tls,
    AuthRejected,
    Protocol,
    /// An ordinary refusal (SMTP: recipients refused, the message over the server's size limit).
    Refused,
    Policy,
    Limit,
    Timeout,
    InvalidInput,
}

impl Kind {
    /// The name the WIT gives this kind ("auth-rejected", "refused", ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Network => "network",
            Kind::Tls => "tls",
            Kind::AuthRejected => "auth-rejected",
            Kind::Protocol => "protocol",
            Kind::Refused => "refused",
            Kind::Policy => "policy",
            Kind::Limit => "limit",
            Kind::Timeout => "timeout",
            Kind::InvalidInput => "invalid-input",
        }
    }
}

impl Retry {
    /// The name the WIT gives this advice: "fix-first", "later", "uncertain".
    pub fn as_str(self) -> &'static str {
        match self {
            Retry::FixFirst => "fix-first",
            Retry::Later => "later",
            Retry::Uncertain => "uncertain",
        }
    }
}

impl From<RetryAdvice> for Retry {
    fn from(r: RetryAdvice) -> Self {
        match r {
            RetryAdvice::FixFirst => Retry::FixFirst,
            RetryAdvice::Later => Retry::Later,
            RetryAdvice::Uncertain => Retry::Uncertain,
        }
    }
}

impl From<Retry> for RetryAdvice {
    fn from(r: Retry) -> Self {
        match r {
            Retry::FixFirst => RetryAdvice::FixFirst,
            Retry::Later => RetryAdvice::Later,
            Retry::Uncertain => RetryAdvice::Uncertain,
        }
    }
}

/// An error from the mail component or the host, for the admin.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("tenant \"{0}\" is not licensed for the e-mail channel; the e-mail channel is a licensed feature: ask your account manager to enable it, then set `licensed = true`")]
    Unlicensed(String),
    #[error("{0}")]
    NotFound(String),
    #[error("refusing to connect to {0}: it is not one of the tenant's configured servers")]
    NotAllowed(String),
    /// The session asked for weaker security than the tenant configured for that server.
    #[error("refusing to connect to {server} with {asked}: the tenant configured {configured} for this server; nothing was sent")]
    WeakerSecurity { server: String, configured: &'static str, asked: &'static str },
    /// The whole session took longer than `limits.max_session_secs` and was ended.
    #[error("the session with {server} took longer than limits.max_session_secs ({limit_secs} s) and was ended; messages stored before that stay stored and the next run continues after them. A server that keeps a session busy without finishing it is cut off this way; if the mailbox is just large or the link slow, raise limits.max_session_secs or lower limits.max_batch_messages")]
    SessionLimit { server: String, limit_secs: u64 },
    /// Failed before or outside the protocol: resolve, connect, read, write.
    #[error("network error with {server}: {message}")]
    Network { server: String, message: String },
    #[error("TLS error with {server}: {message}")]
    Tls { server: String, message: String },
    /// TLS from the first byte was configured, but the server answered the handshake in clear
    /// text: the TLS switch is on for a port without TLS from the first byte. `detail` keeps
    /// what the TLS library said, for whoever digs deeper; the headline says what to change.
    #[error("TLS error with {server}: {}", not_tls_headline(*port))]
    NotTls { server: String, port: u16, detail: String },
    #[error("timeout with {server}: {message}")]
    Timeout { server: String, message: String },
    /// The server sent no first line within `limits.greeting_timeout_secs` after the
    /// connection (with implicit TLS: after the handshake) was up.
    #[error("timeout with {server}: {}", no_greeting_headline(*port, *secs, *implicit_tls))]
    NoGreeting { server: String, port: u16, secs: u64, implicit_tls: bool },
    /// The component reported a typed error.
    #[error("{0}")]
    Guest(GuestFailure),
    /// The component could not be loaded or started.
    #[error("{0}")]
    Plugin(String),
    /// The component stopped in the middle of a call: a limit of the tenant, or a bug.
    #[error("{0}")]
    Trap(Trap),
    /// Every component instance the host allows at once (this many) is in use: a passing
    /// shortage of the host, not the tenant's fault.
    #[error("all {0} component instances this host allows at once are in use (each running operation takes one, \
             and one more while it parses fetched mail); try again when one has finished, or start the host with room for more (RuntimeOptions::max_instances)")]
    PoolFull(u32),
    #[error("storage error: {0}")]
    Storage(String),
    /// A write made under a lease (the PostgreSQL store, `store::postgres::lease`) was refused:
    /// the writer's lease on `resource` expired or another node took it over (`holder`, with a
    /// newer fencing token). Nothing was written; whoever holds the lease now continues from the
    /// last committed state. The writer must stop working on the resource.
    #[error("{}", lease_lost_text(resource, *token, holder.as_deref()))]
    LeaseLost { resource: String, token: i64, holder: Option<String> },
    /// OAuth2 failed; with `needs_reauthorization` an admin must consent again (never retried).
    #[error("OAuth2: {message}")]
    OAuth { kind: String, message: String, needs_reauthorization: bool },
    /// An outbox change refused because the row is in another state (the API's 409).
    #[error(transparent)]
    Refused(#[from] crate::store::outbox::RefusedTransition),
}

/// Why the component stopped in the middle of a call (a wasmtime trap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trap {
    /// The tenant's memory cap (this many bytes) refused a growth.
    Memory { limit_bytes: usize },
    /// The CPU budget of one call ran out.
    Cpu,
    /// Anything else (a bug): the trap's first line, never guest data.
    Crash(String),
}

impl Trap {
    /// The trap's kind as `mailplug serve` counts it: "memory", "cpu" or "crash".
    pub fn as_str(&self) -> &'static str {
        match self {
            Trap::Memory { .. } => "memory",
            Trap::Cpu => "cpu",
            Trap::Crash(_) => "crash",
        }
    }
}

impl Trap {
    /// What stopped the component and what to change, for the admin in English and German
    /// (the English is the `Display` text).
    pub fn explanation(&self) -> crate::store::Explanation {
        let de = match self {
            Trap::Memory { limit_bytes } => format!(
                "die Mail-Komponente hat die Speichergrenze dieses Mandanten von {} MB erreicht; erhöhen Sie limits.guest_memory_mb oder senken Sie limits.max_message_bytes",
                limit_bytes >> 20
            ),
            Trap::Cpu => "die Mail-Komponente hat in einem Schritt mehr Rechenzeit gebraucht, als die Grenze dieses Mandanten erlaubt; erhöhen Sie limits.guest_cpu_ms_per_call".into(),
            Trap::Crash(text) => format!("die Mail-Komponente ist unerwartet angehalten: {text}"),
        };
        crate::store::Explanation { en: self.to_string(), de }
    }
}

impl fmt::Display for Trap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trap::Memory { limit_bytes } => write!(
                f,
                "the mail component hit the tenant's memory limit of {} MB; raise limits.guest_memory_mb or lower limits.max_message_bytes",
                limit_bytes >> 20
            ),
            Trap::Cpu => f.write_str(
                "the mail component used more CPU time in one step than the tenant's limit allows; raise limits.guest_cpu_ms_per_call",
            ),
            Trap::Crash(text) => write!(f, "the mail component stopped unexpectedly: {text}"),
        }
    }
}

fn lease_lost_text(resource: &str, token: i64, holder: Option<&str>) -> String {
    let by = holder.map(|h| format!(" and node \"{h}\" holds it now")).unwrap_or_default();
    let von = holder.map(|h| format!(", jetzt hält ihn Knoten \"{h}\"")).unwrap_or_default();
    format!(
        "refused: this node's lease on {resource} (fencing token {token}) has expired{by}; nothing was written, and the \
         lease holder continues from the last committed state. If this repeats, the node is paused or cut off from the \
         database longer than the lease lasts / abgelehnt: der Lease dieses Knotens auf {resource} (Fencing-Token {token}) \
         ist abgelaufen{von}; nichts wurde geschrieben, der Lease-Inhaber macht beim zuletzt gespeicherten Stand weiter"
    )
}

/// The ports that take TLS from the first byte (RFC 8314, RFC 2595) and their STARTTLS
/// counterparts: (TLS port, STARTTLS port, protocol).
const WELL_KNOWN_PORTS: [(u16, u16, &str); 3] = [(993, 143, "IMAP"), (995, 110, "POP3"), (465, 587, "SMTP submission")];

/// The headline of `HostError::NotTls`: the server did not speak TLS, and what to change.
fn not_tls_headline(port: u16) -> String {
    let lead = format!("the server did not speak TLS on port {port}: it answered in clear text, so this port does not use TLS from the first byte");
    match WELL_KNOWN_PORTS.iter().find(|(_, plain, _)| *plain == port) {
        Some((tls, plain, protocol)) => format!(
            "{lead} (it is the {protocol} port for STARTTLS); turn TLS off for port {plain}, or keep TLS on and use port {tls}"
        ),
        None => format!(
            "{lead}; turn TLS off for this port (STARTTLS), or keep TLS on and use the port for TLS from the first byte (IMAP 993, POP3 995, SMTP 465)"
        ),
    }
}

/// The headline of `HostError::NoGreeting`. With TLS off the usual cause is a port that waits
/// for a TLS handshake, so raising a timeout is never the advice then.
fn no_greeting_headline(port: u16, secs: u64, implicit_tls: bool) -> String {
    if implicit_tls {
        return format!(
            "the server sent no greeting within {secs} s after the TLS handshake (limits.greeting_timeout_secs); check that port {port} belongs to this protocol (IMAP 993, POP3 995, SMTP 465); if the server is known to greet slowly, raise limits.greeting_timeout_secs"
        );
    }
    let lead = format!("the server sent no greeting within {secs} s (limits.greeting_timeout_secs) with TLS off");
    match WELL_KNOWN_PORTS.iter().find(|(tls, _, _)| *tls == port) {
        Some((tls, plain, protocol)) => format!(
            "{lead}: port {tls} is the {protocol} port for TLS from the first byte, where the server waits for a TLS handshake; turn TLS on for port {tls}, or keep TLS off and use port {plain} (STARTTLS)"
        ),
        None => format!(
            "{lead}: a port that expects TLS from the first byte stays silent like this, waiting for a TLS handshake; turn TLS on if this is such a port (IMAP 993, POP3 995, SMTP 465), or use the STARTTLS port (IMAP 143, POP3 110, SMTP 587) with TLS off"
        ),
    }
}

/// Whether retrying can help, as the component judged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    FixFirst,
    Later,
    /// The message may have been delivered: do not resend blindly.
    Uncertain,
}

/// A typed error reported by the mail component.
#[derive(Debug, Clone)]
pub struct GuestFailure {
    pub kind: Kind,
    pub stage: String,
    /// The stage as the contract names it, to hand the error back to the component (`explain`).
    pub stage_id: Stage,
    pub message: String,
    pub reply: Option<(String, String)>,
    pub retry: Retry,
    /// For `Kind::Refused`: what was refused, and every recipient's answer with its own advice.
    pub refused: Option<Refused>,
    /// The Message-ID of the message a failed send was about, when it was composed.
    pub message_id: Option<String>,
}

/// What an ordinary refusal was about (`Kind::Refused`).
#[derive(Debug, Clone)]
pub struct Refused {
    pub cause: RefusalCause,
    /// Every recipient with the server's answer (recipient refusals; empty for a size refusal).
    pub recipients: Vec<RecipientResult>,
}

impl HostError {
    /// Whether retrying can help: the component's advice, or the host's for its own errors.
    pub fn retry(&self) -> Retry {
        match self {
            HostError::Guest(g) => g.retry,
            HostError::Network { .. } | HostError::Timeout { .. } | HostError::SessionLimit { .. } | HostError::Storage(_) => {
                Retry::Later
            }
            HostError::NoGreeting { implicit_tls: true, .. } => Retry::Later,
            _ => Retry::FixFirst,
        }
    }

    /// The kind as the WIT defines it, for guest errors and host-side equivalents.
    pub fn kind(&self) -> Option<Kind> {
        match self {
            HostError::Guest(g) => Some(g.kind),
            HostError::Network { .. } => Some(Kind::Network),
            HostError::Tls { .. } | HostError::NotTls { .. } => Some(Kind::Tls),
            HostError::Timeout { .. } | HostError::SessionLimit { .. } | HostError::NoGreeting { .. } => Some(Kind::Timeout),
            HostError::WeakerSecurity { .. } => Some(Kind::Policy),
            _ => None,
        }
    }

    /// More about the error than its headline, for whoever digs deeper (the TLS library's own
    /// words); the CLI prints it on a line of its own and in `--json`.
    pub fn detail(&self) -> Option<&str> {
        match self {
            HostError::NotTls { detail, .. } => Some(detail),
            _ => None,
        }
    }
}

impl HostError {
    /// The error in the contract's form, for `check.explain`: guest errors as they came, the
    /// host's own network, TLS and timeout errors at `stage` (where the host was when they
    /// happened). None for errors that are not about a server (configuration, storage, ...).
    pub fn to_guest_error(&self, stage: Stage) -> Option<GuestError> {
        let detail = |stage, message: String, reply: Option<(String, String)>, retry| ErrorDetail {
            stage,
            message,
            reply: reply.map(|(code, text)| crate::engine::ServerReply { code, text }),
            retry,
        };
        Some(match self {
            HostError::Guest(g) => {
                let d = detail(g.stage_id, g.message.clone(), g.reply.clone(), g.retry.into());
                match g.kind {
                    Kind::Network => GuestError::Network(d),
                    Kind::Tls => GuestError::Tls(d),
                    Kind::AuthRejected => GuestError::AuthRejected(d),
                    Kind::Protocol => GuestError::Protocol(d),
                    Kind::Refused => {
                        let (cause, recipients) = match &g.refused {
                            Some(r) => (r.cause, r.recipients.clone()),
                            None => (RefusalCause::Recipients, Vec::new()),
                        };
                        GuestError::Refused(Refusal { detail: d, cause, recipients })
                    }
                    Kind::Policy => GuestError::Policy(d),
                    Kind::Limit => GuestError::Limit(d),
                    Kind::Timeout => GuestError::Timeout(d),
                    Kind::InvalidInput => GuestError::InvalidInput(d),
                }
            }
            HostError::Network { message, .. } => GuestError::Network(detail(stage, message.clone(), None, RetryAdvice::Later)),
            HostError::Tls { message, .. } => GuestError::Tls(detail(stage, message.clone(), None, RetryAdvice::FixFirst)),
            HostError::NotTls { port, .. } => GuestError::Tls(detail(stage, not_tls_headline(*port), None, RetryAdvice::FixFirst)),
            // Always the greeting stage, wherever the caller was.
            HostError::NoGreeting { port, secs, implicit_tls, .. } => GuestError::Timeout(detail(
                Stage::Greeting,
                no_greeting_headline(*port, *secs, *implicit_tls),
                None,
                if *implicit_tls { RetryAdvice::Later } else { RetryAdvice::FixFirst },
            )),
            HostError::Timeout { message, .. } => GuestError::Timeout(detail(stage, message.clone(), None, RetryAdvice::Later)),
            e @ HostError::SessionLimit { .. } => GuestError::Timeout(detail(stage, e.to_string(), None, RetryAdvice::Later)),
            e @ HostError::WeakerSecurity { .. } => GuestError::Policy(detail(stage, e.to_string(), None, RetryAdvice::FixFirst)),
            _ => return None,
        })
    }
}

impl fmt::Display for GuestFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Network => "network error",
            Kind::Tls => "TLS error",
            Kind::AuthRejected => "login rejected",
            Kind::Protocol => "protocol error",
            Kind::Refused => "refused by the server",
            Kind::Policy => "refused by security policy",
            Kind::Limit => "limit exceeded",
            Kind::Timeout => "timeout",
            Kind::InvalidInput => "invalid input",
        };
        write!(f, "{kind} during {}: {}", self.stage, self.message)?;
        if let Some((code, text)) = &self.reply {
            write!(f, " (server replied: {code} {text})")?;
        }
        Ok(())
    }
}

/// The stage as the WIT names it: "envelope", "data", "select-mailbox", ...
pub fn stage_id(s: Stage) -> &'static str {
    match s {
        Stage::Connect => "connect",
        Stage::Greeting => "greeting",
        Stage::Capabilities => "capabilities",
        Stage::Starttls => "starttls",
        Stage::Authenticate => "authenticate",
        Stage::SelectMailbox => "select-mailbox",
        Stage::ListMessages => "list-messages",
        Stage::FetchMessage => "fetch-message",
        Stage::Envelope => "envelope",
        Stage::Data => "data",
        Stage::Logout => "logout",
    }
}

pub fn stage_name(s: Stage) -> &'static str {
    match s {
        Stage::Connect => "connect",
        Stage::Greeting => "greeting",
        Stage::Capabilities => "capabilities",
        Stage::Starttls => "STARTTLS",
        Stage::Authenticate => "authentication",
        Stage::SelectMailbox => "mailbox selection",
        Stage::ListMessages => "message listing",
        Stage::FetchMessage => "message download",
        Stage::Envelope => "envelope",
        Stage::Data => "message data",
        Stage::Logout => "logout",
    }
}

impl From<GuestError> for HostError {
    fn from(e: GuestError) -> Self {
        let mut refused = None;
        let (kind, d): (Kind, ErrorDetail) = match e {
            GuestError::Refused(r) => {
                refused = Some(Refused { cause: r.cause, recipients: r.recipients });
                (Kind::Refused, r.detail)
            }
            GuestError::Network(d) => (Kind::Network, d),
            GuestError::Tls(d) => (Kind::Tls, d),
            GuestError::AuthRejected(d) => (Kind::AuthRejected, d),
            GuestError::Protocol(d) => (Kind::Protocol, d),
            GuestError::Policy(d) => (Kind::Policy, d),
            GuestError::Limit(d) => (Kind::Limit, d),
            GuestError::Timeout(d) => (Kind::Timeout, d),
            GuestError::InvalidInput(d) => (Kind::InvalidInput, d),
        };
        HostError::Guest(GuestFailure {
            kind,
            stage: stage_name(d.stage).to_string(),
            stage_id: d.stage,
            message: d.message,
            reply: d.reply.map(|r| (r.code, r.text)),
            retry: d.retry.into(),
            refused,
            message_id: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_errors_become_contract_errors_at_the_given_stage() {
        let e = HostError::Tls { server: "x:993".into(), message: "invalid peer certificate: UnknownIssuer".into() };
        match e.to_guest_error(Stage::Connect) {
            Some(GuestError::Tls(d)) => {
                assert_eq!(d.stage, Stage::Connect);
                assert!(d.message.contains("UnknownIssuer"));
            }
            other => panic!("{other:?}"),
        }
        assert!(HostError::NotFound("no such mailbox".into()).to_guest_error(Stage::Connect).is_none());
    }

    #[test]
    fn refusals_keep_every_recipient_and_the_cause_on_the_way_back() {
        let rcpt = |address: &str, code: &str, retry| RecipientResult {
            address: address.into(),
            accepted: false,
            reply: crate::engine::ServerReply { code: code.into(), text: "x".into() },
            retry: Some(retry),
        };
        let refusal = Refusal {
            detail: ErrorDetail { stage: Stage::Envelope, message: "refused".into(), reply: None, retry: RetryAdvice::Later },
            cause: RefusalCause::Recipients,
            recipients: vec![rcpt("busy@x", "451", RetryAdvice::Later), rcpt("nouser@x", "550", RetryAdvice::FixFirst)],
        };
        let host: HostError = GuestError::Refused(refusal).into();
        assert_eq!((host.kind(), host.retry()), (Some(Kind::Refused), Retry::Later));
        assert!(host.to_string().starts_with("refused by the server during envelope"), "{host}");
        match host.to_guest_error(Stage::Connect) {
            Some(GuestError::Refused(r)) => {
                assert_eq!(r.detail.stage, Stage::Envelope);
                assert!(matches!(r.cause, RefusalCause::Recipients));
                let got: Vec<_> = r.recipients.iter().map(|x| (x.address.as_str(), x.retry.map(Retry::from))).collect();
                assert_eq!(got, [("busy@x", Some(Retry::Later)), ("nouser@x", Some(Retry::FixFirst))]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_clear_text_answer_keeps_the_tls_library_text_out_of_the_headline() {
        let e = HostError::NotTls {
            server: "mail.example.test:143".into(),
            port: 143,
            detail: "received corrupt message of type InvalidContentType".into(),
        };
        let headline = e.to_string();
        assert!(headline.contains("did not speak TLS on port 143") && headline.contains("turn TLS off for port 143"), "{headline}");
        assert!(headline.contains("use port 993"), "{headline}");
        assert!(!headline.contains("InvalidContentType") && !headline.contains("corrupt"), "{headline}");
        assert_eq!(e.detail(), Some("received corrupt message of type InvalidContentType"));
        assert_eq!(e.kind(), Some(Kind::Tls));
        match e.to_guest_error(Stage::Connect) {
            Some(GuestError::Tls(d)) => assert!(!d.message.contains("InvalidContentType") && d.message.contains("clear text"), "{}", d.message),
            other => panic!("{other:?}"),
        }
        let other_port = HostError::NotTls { server: "x:10143".into(), port: 10143, detail: String::new() }.to_string();
        assert!(other_port.contains("turn TLS off for this port") && other_port.contains("IMAP 993"), "{other_port}");
    }

    #[test]
    fn no_greeting_is_a_greeting_timeout_without_the_reply_timeout_advice() {
        for port in [993, 10993] {
            let e = HostError::NoGreeting { server: format!("x:{port}"), port, secs: 10, implicit_tls: false };
            let headline = e.to_string();
            assert!(headline.contains("no greeting within 10 s") && headline.contains("turn TLS on"), "{headline}");
            assert!(!headline.contains("reply timeout") && !headline.contains("raise"), "{headline}");
            assert_eq!(e.retry(), Retry::FixFirst);
            match e.to_guest_error(Stage::Connect) {
                Some(GuestError::Timeout(d)) => assert_eq!(d.stage, Stage::Greeting),
                other => panic!("{other:?}"),
            }
        }
        let e = HostError::NoGreeting { server: "x:993".into(), port: 993, secs: 10, implicit_tls: false }.to_string();
        assert!(e.contains("turn TLS on for port 993") && e.contains("use port 143"), "{e}");
        let tls = HostError::NoGreeting { server: "x:993".into(), port: 993, secs: 10, implicit_tls: true };
        assert!(tls.to_string().contains("after the TLS handshake"), "{tls}");
        assert_eq!(tls.retry(), Retry::Later);
    }

    #[test]
    fn guest_errors_keep_their_stage_and_reply_on_the_way_back() {
        let d = ErrorDetail {
            stage: Stage::Authenticate,
            message: "the server refused the login".into(),
            reply: Some(crate::engine::ServerReply { code: "NO".into(), text: "AUTHENTICATE failed.".into() }),
            retry: RetryAdvice::FixFirst,
        };
        let host: HostError = GuestError::AuthRejected(d).into();
        match host.to_guest_error(Stage::Connect) {
            Some(GuestError::AuthRejected(d)) => {
                assert_eq!(d.stage, Stage::Authenticate);
                assert_eq!(d.reply.map(|r| r.text), Some("AUTHENTICATE failed.".to_string()));
            }
            other => panic!("{other:?}"),
        }
    }
}
