//! "Test connection" on the mailbox page: the same check as `mailplug check` (ops/check.rs),
//! shown step by step as it runs.
//!
//! The page's script starts a run with `POST .../mailboxes/{id}/check` (CSRF header), which
//! answers the URL of its stream; `GET .../mailboxes/{id}/check/stream?run=ID` then streams the
//! steps as server-sent events: `step` events `{step, status: running|ok|failed, label, ...}`
//! and one `done` event. A run belongs to the session that started it, is used once and
//! expires after `RUN_TTL`; any other session, tenant or mailbox gets 404. A failed step carries
//! the error, its explanation and the action in the admin's language. The details are the
//! check's own (text a server sent before TLS is never among them: ops/check.rs, the guest).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{query_param, session, urlencode, Admin, Lang};
use crate::check::{CheckReport, LiveStep};

/// How long a started run waits for its stream to be opened.
pub const RUN_TTL: Duration = Duration::from_secs(60);
/// Runs waiting for their stream at once, over all sessions.
pub const MAX_PENDING: usize = 256;

struct Run {
    /// The session's CSRF token: the run belongs to that session.
    session: String,
    tenant: String,
    mailbox: String,
    created: Instant,
}

/// Runs started and not streamed yet.
#[derive(Default)]
pub struct Runs {
    map: Mutex<HashMap<String, Run>>,
}

impl Runs {
    fn start(&self, session: &str, tenant: &str, mailbox: &str) -> Option<String> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.retain(|_, r| now.duration_since(r.created) < RUN_TTL);
        if map.len() >= MAX_PENDING {
            return None;
        }
        let id = session::random_hex(16);
        map.insert(id.clone(), Run { session: session.into(), tenant: tenant.into(), mailbox: mailbox.into(), created: now });
        Some(id)
    }

    /// Takes the run `id` if it belongs to this session, tenant and mailbox and is not expired.
    fn take(&self, id: &str, session: &str, tenant: &str, mailbox: &str) -> bool {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(id) {
            Some(r) if super::csrf::same(session, &r.session) && r.tenant == tenant && r.mailbox == mailbox => {
                let fresh = r.created.elapsed() < RUN_TTL;
                map.remove(id);
                fresh
            }
            _ => false,
        }
    }
}

/// The routes of "Test connection" (merged into the admin router).
pub fn routes() -> Router<Arc<Admin>> {
    Router::new()
        .route("/t/{t}/mailboxes/{id}/check", post(|s, r, p, u, h| start(s, r, p, u, h, Kind::Mailbox)))
        .route("/t/{t}/mailboxes/{id}/check/stream", get(|s, r, p, u, h| stream(s, r, p, u, h, Kind::Mailbox)))
        .route("/t/{t}/queues/{id}/check", post(|s, r, p, u, h| start(s, r, p, u, h, Kind::Queue)))
        .route("/t/{t}/queues/{id}/check/stream", get(|s, r, p, u, h| stream(s, r, p, u, h, Kind::Queue)))
        .layer(Extension(Arc::new(Runs::default())))
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"error": "not found"}))).into_response()
}

/// What a check is of: a mailbox, or a queue's SMTP server (the mail-server form's `?smtp=1`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Mailbox,
    Queue,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Mailbox => "mailboxes",
            Kind::Queue => "queues",
        }
    }
    fn exists(self, cfg: &crate::config::TenantConfig, id: &str) -> bool {
        match self {
            Kind::Mailbox => cfg.mailbox(id).is_some(),
            Kind::Queue => cfg.queue(id).is_some(),
        }
    }
    /// The key of a run: mailboxes and queues may share a name.
    fn key(self, id: &str) -> String {
        format!("{}/{id}", self.path())
    }
}

/// POST /admin/t/{t}/mailboxes/{id}/check or .../queues/{id}/check (header X-CSRF-Token):
/// `{"stream": URL}`.
async fn start(
    State(a): State<Arc<Admin>>,
    Extension(runs): Extension<Arc<Runs>>,
    Path((t, id)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    kind: Kind,
) -> Response {
    let ctx = match a.api(&headers, &uri, &t, true) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !kind.exists(&ctx.state.config, &id) {
        return not_found();
    }
    let Some(run) = runs.start(&ctx.session.csrf, &t, &kind.key(&id)) else {
        return (StatusCode::TOO_MANY_REQUESTS, Json(json!({"error": "too many checks are starting; try again in a minute"}))).into_response();
    };
    Json(json!({"stream": format!("/admin/t/{}/{}/{}/check/stream?run={run}", urlencode(&t), kind.path(), urlencode(&id))})).into_response()
}

/// What the mailbox page's F part (templates/admin/mailbox_f.html) shows for a saved mailbox
/// or queue SMTP server.
pub struct MailboxLive {
    /// The mailbox's name, percent-encoded for URLs.
    pub href_name: String,
    /// Where button#test-connection starts a check.
    pub start: String,
    /// live.js and live.css.
    pub script: &'static str,
    pub style: &'static str,
    /// The token's health, for an OAuth2 mailbox (div#token-health, button#connect-account).
    pub token: Option<super::connect::TokenHealth>,
    /// The outcome of this session's last "Connect account" for the mailbox, shown once.
    pub outcome: Option<super::connect::Outcome>,
}

/// The F part of the mailbox page for mailbox `id`; None when the tenant has no such mailbox.
pub async fn mailbox_live(a: &Admin, ctx: &super::Ctx, id: &str) -> Option<MailboxLive> {
    ctx.state.config.mailbox(id)?;
    let token = super::connect::token_health(a, ctx, id).await;
    let outcome = token.as_ref().and_then(|_| super::connect::logins().take_outcome(&ctx.session.csrf, id));
    let start = format!("{}/mailboxes/{}/check", ctx.page("").base, urlencode(id));
    Some(MailboxLive { href_name: urlencode(id), start, script: super::assets::LIVE_JS.url(), style: super::assets::LIVE_CSS.url(), token, outcome })
}

/// The F part of the mail-server form for queue `id`'s SMTP server: Test connection only (the
/// queue's OAuth2 account is connected with `mailplug oauth login`).
pub async fn queue_live(ctx: &super::Ctx, id: &str) -> Option<MailboxLive> {
    ctx.state.config.queue(id)?;
    let start = format!("{}/queues/{}/check", ctx.page("").base, urlencode(id));
    Some(MailboxLive { href_name: urlencode(id), start, script: super::assets::LIVE_JS.url(), style: super::assets::LIVE_CSS.url(), token: None, outcome: None })
}

/// What the check tells the stream, made on the actors' thread.
enum Live {
    Running(&'static str),
    Passed { step: &'static str, ms: u64, detail: String },
}

/// The label of a step in the admin's language.
pub fn step_label(lang: Lang, step: &str) -> &'static str {
    let key = match step {
        "settings" => "check.step.settings",
        "token" => "check.step.token",
        "resolve" => "check.step.resolve",
        "connect" => "check.step.connect",
        "tls" => "check.step.tls",
        "greeting" => "check.step.greeting",
        "capabilities" => "check.step.capabilities",
        "starttls" => "check.step.starttls",
        "mechanisms" => "check.step.mechanisms",
        "login" => "check.step.login",
        "folder" => "check.step.folder",
        "envelope" => "check.step.envelope",
        "reset" => "check.step.reset",
        "logout" => "check.step.logout",
        _ => "check.step.session",
    };
    lang.t(key)
}

/// The `step` event of a step that starts or passed.
fn live_event(lang: Lang, live: &Live) -> Value {
    match live {
        Live::Running(step) => json!({"step": step, "status": "running", "label": step_label(lang, step)}),
        Live::Passed { step, ms, detail } => {
            json!({"step": step, "status": "ok", "label": step_label(lang, step), "ms": ms, "detail": detail})
        }
    }
}

/// The `step` event of the failed step, and the `done` event, of a finished report.
pub fn final_events(lang: Lang, report: &CheckReport) -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    if let Some(f) = &report.failure {
        out.push((
            "step",
            json!({
                "step": f.step, "status": "failed", "label": step_label(lang, f.step), "ms": f.ms,
                "error": f.error, "detail": f.detail,
                "cause": lang.pick(&f.cause.en, &f.cause.de), "action": lang.pick(&f.action.en, &f.action.de),
                "cause_label": lang.t("check.cause"), "action_label": lang.t("check.action"),
            }),
        ));
    }
    let summary = if report.passed() { lang.t("check.passed") } else { lang.t("check.failed") };
    out.push(("done", json!({"passed": report.passed(), "summary": summary, "server": report.server, "security": report.security})));
    out
}

/// GET /admin/t/{t}/mailboxes/{id}/check/stream?run=ID (or .../queues/...): the steps as
/// server-sent events.
async fn stream(
    State(a): State<Arc<Admin>>,
    Extension(runs): Extension<Arc<Runs>>,
    Path((t, id)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    kind: Kind,
) -> Response {
    let ctx = match a.api(&headers, &uri, &t, false) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let run = query_param(&uri, "run").unwrap_or_default();
    if !runs.take(&run, &ctx.session.csrf, &t, &kind.key(&id)) || !kind.exists(&ctx.state.config, &id) {
        return not_found();
    }
    if a.shared.root.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": "the service is stopping"}))).into_response();
    }
    let lang = ctx.lang;
    let cfg = ctx.state.config.clone();
    // At most a few dozen events per check: the channel's size is bounded by the steps.
    let (tx, rx) = mpsc::unbounded_channel::<(&'static str, Value)>();
    let shared = a.shared.clone();
    tracing::info!(tenant = %t, target = %kind.key(&id), "admin page: connection check");
    tokio::spawn(async move {
        let steps = tx.clone();
        let name = id.clone();
        let report = shared
            .run_local(move |shared| {
                Box::pin(async move {
                    let store = shared.store.open()?;
                    let findings = crate::ops::validate_config(&shared.plugin, &cfg).await?;
                    let mut observer = |s: LiveStep<'_>| {
                        let live = match s {
                            LiveStep::Running(step) => Live::Running(step),
                            LiveStep::Passed(r) => Live::Passed { step: r.step, ms: r.ms, detail: r.detail.clone() },
                        };
                        let _ = steps.send(("step", live_event(lang, &live)));
                    };
                    match kind {
                        Kind::Mailbox => crate::check::check_mailbox_live(&shared.plugin, &cfg, &store, &name, &findings, &mut observer).await,
                        Kind::Queue => crate::check::check_queue_live(&shared.plugin, &cfg, &store, &name, None, &findings, &mut observer).await,
                    }
                })
            })
            .await;
        let events = match report {
            Ok(Ok(report)) => final_events(lang, &report),
            Ok(Err(e)) => vec![("done", json!({"passed": false, "summary": lang.t("check.failed"), "error": e.to_string().replace('\n', " ")}))],
            Err(_) => vec![("done", json!({"passed": false, "summary": lang.t("check.failed"), "error": "the service is stopping"}))],
        };
        for e in events {
            let _ = tx.send(e);
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let (kind, data) = rx.recv().await?;
        Some((Ok::<_, Infallible>(Event::default().event(kind).data(data.to_string())), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)).text("heartbeat")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_taken_once_by_its_own_session_tenant_and_mailbox() {
        let runs = Runs::default();
        let s = "a".repeat(64);
        let id = runs.start(&s, "t1", "inbox").expect("a run");
        assert!(!runs.take(&id, &"b".repeat(64), "t1", "inbox"), "another session");
        assert!(!runs.take(&id, &s, "t2", "inbox"), "another tenant");
        assert!(!runs.take(&id, &s, "t1", "other"), "another mailbox");
        assert!(!runs.take("nope", &s, "t1", "inbox"), "an unknown run");
        // The refused takes above did not consume it (they were not its session's).
        assert!(runs.take(&id, &s, "t1", "inbox"));
        assert!(!runs.take(&id, &s, "t1", "inbox"), "used once");
    }

    #[test]
    fn pending_runs_are_bounded() {
        let runs = Runs::default();
        for _ in 0..MAX_PENDING {
            assert!(runs.start("s", "t", "m").is_some());
        }
        assert!(runs.start("s", "t", "m").is_none());
    }

    #[test]
    fn every_step_has_a_label_in_both_languages() {
        for step in ["settings", "token", "resolve", "connect", "tls", "greeting", "capabilities", "starttls", "mechanisms", "login", "folder", "envelope", "reset", "logout", "session"] {
            for lang in [Lang::En, Lang::De] {
                assert_ne!(step_label(lang, step), "?", "{step} in {lang:?}");
            }
        }
        assert_ne!(step_label(Lang::En, "login"), step_label(Lang::De, "login"));
    }
}
