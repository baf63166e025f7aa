//! The overview page: the tenant's mailboxes with their state (connected, idle, backing off,
//! error with the component's explanation and the action, next attempt) and its queues. Plain
//! HTML with a refresh link; the script only refreshes it in place.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;

use super::{html, urlencode, Admin, Lang, Page};
use crate::config::{AuthKind, Security};
use crate::service::state::{now_ms, MailboxState, Phase, TenantState};

/// One mailbox row.
pub struct MailboxRow {
    pub name: String,
    /// Percent-encoded, for links.
    pub href_name: String,
    pub protocol: &'static str,
    pub server: String,
    /// The phase's name ("idling", "backing-off", ...), for `data-state` and the style.
    pub state: &'static str,
    pub state_text: String,
    pub error: Option<String>,
    pub explanation: Option<String>,
    pub next: String,
    pub last_success: String,
    pub fetched: u64,
}

/// One queue row.
pub struct QueueRow {
    pub name: String,
    pub href_name: String,
    pub server: String,
    pub mailboxes: String,
}

#[derive(Template)]
#[template(path = "admin/overview.html")]
struct Overview {
    page: Page,
    mailboxes: Vec<MailboxRow>,
    queues: Vec<QueueRow>,
    config_error: Option<String>,
    as_of: String,
}

/// A time as "2026-12-07 06:43:42 UTC".
pub fn time(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string().replace('T', " ").replace('Z', " UTC")
}

fn server(s: &crate::config::ServerConfig) -> String {
    let mode = match s.security {
        Security::ImplicitTls => "TLS",
        Security::Starttls => "STARTTLS",
        Security::InsecurePlaintext => "plain",
    };
    let auth = if s.auth == AuthKind::Oauth2 { ", OAuth2" } else { "" };
    format!("{}:{} ({mode}{auth})", s.host, s.port)
}

/// The rows of the tenant's mailboxes in `lang`.
pub fn mailbox_rows(state: &TenantState, lang: Lang) -> Vec<MailboxRow> {
    let now = now_ms();
    state
        .mailboxes
        .values()
        .map(|m: &MailboxState| {
            let (state_text, next) = match &m.phase {
                Phase::BackingOff { until_ms, attempt } => (
                    format!("{} ({} {attempt})", lang.t("state.backing-off"), lang.t("state.attempt")),
                    if *until_ms <= now { lang.t("next.now").to_string() } else { time(*until_ms) },
                ),
                Phase::Waiting { next_poll_ms } => (lang.t("state.waiting").to_string(), time(*next_poll_ms)),
                Phase::Idling { .. } => (lang.t("state.idling").to_string(), lang.t("next.on-mail").to_string()),
                Phase::WaitingForFix => (lang.t("state.waiting-for-fix").to_string(), lang.t("next.after-fix").to_string()),
                other => (lang.t(&format!("state.{}", other.name())).to_string(), "-".to_string()),
            };
            let explanation = m.last_error.as_ref().and_then(|e| match lang {
                Lang::En => e.explanation_en.clone(),
                Lang::De => e.explanation_de.clone().or(e.explanation_en.clone()),
            });
            MailboxRow {
                name: m.name.clone(),
                href_name: urlencode(&m.name),
                protocol: m.protocol,
                server: state.config.mailbox(&m.name).map(|c| server(&c.server)).unwrap_or_default(),
                state: m.phase.name(),
                state_text,
                error: m.last_error.as_ref().map(|e| e.error.clone()),
                explanation,
                next,
                last_success: m.last_success_ms.map(time).unwrap_or_else(|| lang.t("never").to_string()),
                fetched: m.fetched,
            }
        })
        .collect()
}

/// The rows of the tenant's queues.
pub fn queue_rows(state: &TenantState, lang: Lang) -> Vec<QueueRow> {
    state
        .queues
        .iter()
        .map(|q| QueueRow {
            name: q.name.clone(),
            href_name: urlencode(&q.name),
            server: state.config.queue(&q.name).map(|c| server(&c.smtp)).unwrap_or_default(),
            mailboxes: if q.mailboxes.is_empty() { lang.t("none").to_string() } else { q.mailboxes.join(", ") },
        })
        .collect()
}

/// GET /admin/t/{t}/
pub async fn page(State(a): State<Arc<Admin>>, Path(t): Path<String>, uri: Uri, headers: HeaderMap) -> Response {
    let ctx = match a.page(&headers, &uri, &t) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let view = Overview {
        mailboxes: mailbox_rows(&ctx.state, ctx.lang),
        queues: queue_rows(&ctx.state, ctx.lang),
        config_error: ctx.state.config_error.clone(),
        as_of: time(now_ms()),
        page: ctx.page("overview.title"),
    };
    html(StatusCode::OK, &view)
}
