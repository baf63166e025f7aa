//! The queue page: which SMTP server a queue sends with (select#smtp-server: the SMTP server
//! of any of the tenant's queues), the mailboxes it serves (ul#queue-mailboxes), the SMTP
//! account's send permission, the Gmail aliases, and div#preview: for each mailbox served,
//! the From / Sender / Reply-To / MAIL FROM of a reply and what the customer will see, in the
//! admin's language (the guest's `plan-from`, as `mailplug plan-from` and the API show it).
//!
//! The preview is rendered with the page (readable without JavaScript) and again, as the admin
//! changes the form, by `POST .../queues/{id}/preview` (CSRF header) from the values typed,
//! before anything is saved. Saving (`POST .../queues/{id}`, CSRF field) edits the queue's
//! table in the tenant's file through the mail-server form's writer; the service's rescan picks
//! it up without a restart.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::{error_page, html, query_param, urlencode, Admin, Ctx, Lang, Page};
use crate::config::{SendPermission, TenantConfig};

/// The most Gmail aliases a queue may list.
pub const MAX_ALIASES: usize = 100;

/// The routes of the queue page (merged into the admin router).
pub fn routes() -> Router<Arc<Admin>> {
    Router::new()
        .route("/t/{t}/queues/{id}", get(page).post(save))
        .route("/t/{t}/queues/{id}/preview", post(preview))
}

/// What the queue form sends (form-urlencoded; `mailboxes` repeats).
#[derive(Debug, Default, Clone)]
pub struct QueueForm {
    pub csrf: String,
    /// The queue whose SMTP server this queue uses.
    pub smtp_server: String,
    pub mailboxes: Vec<String>,
    pub send_permission: String,
    pub aliases: String,
}

impl QueueForm {
    /// Reads a form body; unknown fields are ignored.
    pub fn parse(body: &[u8]) -> QueueForm {
        let mut f = QueueForm::default();
        for (k, v) in url::form_urlencoded::parse(body) {
            match &*k {
                "csrf" => f.csrf = v.into_owned(),
                "smtp_server" => f.smtp_server = v.into_owned(),
                "mailboxes" => f.mailboxes.push(v.into_owned()),
                "send_permission" => f.send_permission = v.into_owned(),
                "aliases" => f.aliases = v.into_owned(),
                _ => {}
            }
        }
        f
    }

    /// The aliases, one per line (or separated by commas or spaces), without empties.
    pub fn alias_list(&self) -> Vec<String> {
        self.aliases.split(|c: char| c == ',' || c.is_whitespace()).filter(|a| !a.is_empty()).map(str::to_string).collect()
    }
}

pub fn permission_name(p: SendPermission) -> &'static str {
    match p {
        SendPermission::None => "none",
        SendPermission::SendOnBehalf => "send-on-behalf",
        SendPermission::SendAs => "send-as",
    }
}

fn parse_permission(s: &str) -> Option<SendPermission> {
    match s {
        "none" | "" => Some(SendPermission::None),
        "send-on-behalf" => Some(SendPermission::SendOnBehalf),
        "send-as" => Some(SendPermission::SendAs),
        _ => None,
    }
}

/// Why a form cannot be used: a catalogue key and the value it is about.
#[derive(Debug, PartialEq, Eq)]
pub struct FormError {
    pub key: &'static str,
    pub value: String,
}

/// The tenant's configuration as it would be with the form's values for queue `id`: the
/// preview's input and what saving checks before it writes.
pub fn apply(cfg: &TenantConfig, id: &str, f: &QueueForm) -> Result<TenantConfig, Vec<FormError>> {
    let (out, errors) = apply_partly(cfg, id, f);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// `apply`, keeping what is valid and the aliases as typed (the form shown again after an
/// error), with the errors.
pub fn apply_partly(cfg: &TenantConfig, id: &str, f: &QueueForm) -> (TenantConfig, Vec<FormError>) {
    let mut errors = Vec::new();
    let mut out = cfg.clone();
    let Some(i) = cfg.queues.iter().position(|q| q.name == id) else {
        return (out, vec![FormError { key: "error.not-found", value: id.to_string() }]);
    };
    let server = if f.smtp_server.is_empty() { Some(&cfg.queues[i]) } else { cfg.queue(&f.smtp_server) };
    match server {
        Some(s) => {
            out.queues[i].smtp = s.smtp.clone();
            out.queues[i].provider = s.provider;
            out.queues[i].helo_name = s.helo_name.clone();
        }
        None => errors.push(FormError { key: "queue.err-server", value: f.smtp_server.clone() }),
    }
    let mut served = Vec::new();
    for m in &f.mailboxes {
        if cfg.mailbox(m).is_none() {
            errors.push(FormError { key: "queue.err-mailbox", value: m.clone() });
        } else if !served.contains(m) {
            served.push(m.clone());
        }
    }
    out.queues[i].mailboxes = served;
    match parse_permission(&f.send_permission) {
        Some(p) => out.queues[i].send_permission = p,
        None => errors.push(FormError { key: "queue.err-permission", value: f.send_permission.clone() }),
    }
    let aliases = f.alias_list();
    if aliases.len() > MAX_ALIASES {
        errors.push(FormError { key: "queue.err-aliases-many", value: aliases.len().to_string() });
    }
    for a in &aliases {
        let ok = a.len() <= 254 && a.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.'));
        if !ok || a.chars().any(|c| c.is_control() || c == '<' || c == '>' || c == '"') {
            errors.push(FormError { key: "queue.err-alias", value: a.clone() });
        }
    }
    out.queues[i].gmail_aliases = aliases;
    (out, errors)
}

/// One mailbox's line of the preview.
pub struct PlanRow {
    pub mailbox: String,
    pub address: String,
    pub from: String,
    pub sender: Option<String>,
    pub reply_to: Option<String>,
    pub envelope_from: String,
    pub customer_sees: String,
    pub warnings: Vec<String>,
    /// When no plan could be made (the SMTP user name is not an address, ...).
    pub error: Option<String>,
}

/// The preview: a plan for each mailbox the queue (as in `cfg`) serves.
pub async fn plans(a: &Admin, cfg: TenantConfig, id: &str, lang: Lang) -> Vec<PlanRow> {
    let Some(q) = cfg.queue(id) else { return Vec::new() };
    let served: Vec<(String, String)> =
        q.mailboxes.iter().map(|m| (m.clone(), cfg.mailbox(m).map(|c| c.address.clone()).unwrap_or_default())).collect();
    if served.is_empty() {
        return Vec::new();
    }
    let queue = id.to_string();
    let names: Vec<String> = served.iter().map(|(m, _)| m.clone()).collect();
    let planned = a
        .shared
        .run_local(move |shared| {
            Box::pin(async move {
                let mut out = Vec::new();
                for m in &names {
                    out.push(crate::ops::plan_from(&shared.plugin, &cfg, &queue, m).await);
                }
                out
            })
        })
        .await;
    let planned = match planned {
        Ok(p) => p,
        Err(e) => return served.into_iter().map(|(m, addr)| failed_row(m, addr, e.to_string())).collect(),
    };
    served
        .into_iter()
        .zip(planned)
        .map(|((mailbox, address), p)| match p {
            Ok(p) => PlanRow {
                mailbox,
                address,
                from: p.from,
                sender: p.sender,
                reply_to: p.reply_to,
                envelope_from: p.envelope_from,
                customer_sees: lang.pick(&p.customer_sees.en, &p.customer_sees.de).to_string(),
                warnings: p.warnings.iter().map(|w| lang.pick(&w.en, &w.de).to_string()).collect(),
                error: None,
            },
            Err(e) => failed_row(mailbox, address, e.to_string().replace('\n', " ")),
        })
        .collect()
}

fn failed_row(mailbox: String, address: String, error: String) -> PlanRow {
    PlanRow { mailbox, address, from: String::new(), sender: None, reply_to: None, envelope_from: String::new(), customer_sees: String::new(), warnings: Vec::new(), error: Some(error) }
}

/// An option of select#smtp-server.
pub struct ServerOption {
    pub queue: String,
    pub label: String,
    pub selected: bool,
}

/// A line of ul#queue-mailboxes.
pub struct MailboxOption {
    pub name: String,
    pub address: String,
    pub checked: bool,
}

#[derive(Template)]
#[template(path = "admin/queue.html")]
struct QueuePage {
    page: Page,
    queue: String,
    href_name: String,
    servers: Vec<ServerOption>,
    mailboxes: Vec<MailboxOption>,
    permission: &'static str,
    aliases: String,
    plans: Vec<PlanRow>,
    errors: Vec<String>,
    saved: bool,
    /// live.js (the preview as the form changes) and live.css.
    script: &'static str,
    style: &'static str,
}

#[derive(Template)]
#[template(path = "admin/queue_preview.html")]
struct Preview {
    page: Page,
    plans: Vec<PlanRow>,
}

fn server_label(cfg: &TenantConfig, q: &str) -> String {
    let Some(q) = cfg.queue(q) else { return String::new() };
    let s = &q.smtp;
    let mode = match s.security {
        crate::config::Security::ImplicitTls => "TLS",
        crate::config::Security::Starttls => "STARTTLS",
        crate::config::Security::InsecurePlaintext => "plain",
    };
    format!("{} — {} @ {}:{} ({mode})", q.name, s.username, s.host, s.port)
}

/// The page's data for the queue as `cfg` has it (the saved one, or the form's values).
async fn render(a: &Admin, ctx: &Ctx, cfg: TenantConfig, id: &str, chosen_server: &str, errors: Vec<String>, saved: bool) -> Response {
    let Some(q) = cfg.queue(id) else {
        return error_page(StatusCode::NOT_FOUND, ctx.lang, "error.not-found");
    };
    let servers = ctx
        .state
        .config
        .queues
        .iter()
        .map(|o| ServerOption { queue: o.name.clone(), label: server_label(&ctx.state.config, &o.name), selected: o.name == chosen_server })
        .collect();
    let mailboxes = cfg
        .mailboxes
        .iter()
        .map(|m| MailboxOption { name: m.name.clone(), address: m.address.clone(), checked: q.mailboxes.contains(&m.name) })
        .collect();
    let permission = permission_name(q.send_permission);
    let aliases = q.gmail_aliases.join("\n");
    let plans = plans(a, cfg.clone(), id, ctx.lang).await;
    let view = QueuePage {
        page: ctx.page("queue.title"),
        queue: id.to_string(),
        href_name: urlencode(id),
        servers,
        mailboxes,
        permission,
        aliases,
        plans,
        errors,
        saved,
        script: super::assets::LIVE_JS.url(),
        style: super::assets::LIVE_CSS.url(),
    };
    html(if view.errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY }, &view)
}

/// GET /admin/t/{t}/queues/{id}
async fn page(State(a): State<Arc<Admin>>, Path((t, id)): Path<(String, String)>, uri: Uri, headers: HeaderMap) -> Response {
    let ctx = match a.page(&headers, &uri, &t) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let saved = query_param(&uri, "saved").is_some();
    let cfg = (*ctx.state.config).clone();
    render(&a, &ctx, cfg, &id, &id, Vec::new(), saved).await
}

fn error_texts(lang: Lang, errors: &[FormError]) -> Vec<String> {
    errors.iter().map(|e| format!("{} ({})", lang.t(e.key), e.value)).collect()
}

/// POST /admin/t/{t}/queues/{id}/preview (X-CSRF-Token): `{"html": the preview}`.
async fn preview(State(a): State<Arc<Admin>>, Path((t, id)): Path<(String, String)>, uri: Uri, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let ctx = match a.api(&headers, &uri, &t, true) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let form = QueueForm::parse(&body);
    let cfg = match apply(&ctx.state.config, &id, &form) {
        Ok(c) => c,
        Err(errors) => {
            if errors.iter().any(|e| e.key == "error.not-found") {
                return (StatusCode::NOT_FOUND, Json(json!({"error": "not found"}))).into_response();
            }
            return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"errors": error_texts(ctx.lang, &errors)}))).into_response();
        }
    };
    let plans = plans(&a, cfg, &id, ctx.lang).await;
    match (Preview { page: ctx.page("queue.title"), plans }).render() {
        Ok(h) => Json(json!({"html": h})).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": "the preview failed to render"}))).into_response(),
    }
}

/// POST /admin/t/{t}/queues/{id}: saves the queue's settings into the tenant's file.
async fn save(State(a): State<Arc<Admin>>, Path((t, id)): Path<(String, String)>, uri: Uri, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let form = QueueForm::parse(&body);
    let ctx = match a.post(&headers, &uri, &t, Some(&form.csrf)) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if ctx.state.config.queue(&id).is_none() {
        return error_page(StatusCode::NOT_FOUND, ctx.lang, "error.not-found");
    }
    let chosen = if form.smtp_server.is_empty() { id.clone() } else { form.smtp_server.clone() };
    let (cfg, errors) = apply_partly(&ctx.state.config, &id, &form);
    if !errors.is_empty() {
        // The form again with what was typed (the valid parts applied, the aliases as typed).
        return render(&a, &ctx, cfg, &id, &chosen, error_texts(ctx.lang, &errors), false).await;
    }
    match super::queue_file::save_queue(&a, &ctx, &id, &cfg, &chosen).await {
        Ok(()) => {
            tracing::info!(tenant = %t, queue = %id, "admin page: queue saved");
            Redirect::to(&format!("/admin/t/{}/queues/{}?saved=1", urlencode(&t), urlencode(&id))).into_response()
        }
        Err(e) => render(&a, &ctx, cfg, &id, &chosen, vec![e], false).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> TenantConfig {
        let text = r#"tenant = "t"
licensed = true
database = "/nonexistent/x.sqlite3"
[[mailbox]]
name = "a"
address = "a@example.com"
protocol = "imap"
host = "imap.example.com"
port = 993
tls = true
username = "a@example.com"
password_env = "PW"
[[mailbox]]
name = "b"
address = "b@example.com"
protocol = "imap"
host = "imap.example.com"
port = 993
tls = true
username = "b@example.com"
password_env = "PW"
[[queue]]
name = "q1"
mailboxes = ["a"]
[queue.smtp]
host = "smtp.example.com"
port = 465
tls = true
username = "a@example.com"
password_env = "PW"
[[queue]]
name = "q2"
mailboxes = []
[queue.smtp]
host = "smtp.office365.com"
port = 587
tls = false
provider = "microsoft"
username = "agent@example.com"
password_env = "PW"
"#;
        TenantConfig::parse(text, "t.toml", std::path::Path::new("/tmp"), &|_| Some("pw".into())).expect("parses")
    }

    #[test]
    fn the_forms_values_make_the_queue_to_preview() {
        let c = cfg();
        let f = QueueForm::parse(b"csrf=x&smtp_server=q2&mailboxes=a&mailboxes=b&mailboxes=a&send_permission=send-on-behalf&aliases=a%40example.com%0D%0Ab%40example.com");
        assert_eq!(f.mailboxes, ["a", "b", "a"]);
        let out = apply(&c, "q1", &f).expect("valid");
        let q = out.queue("q1").unwrap();
        assert_eq!(q.smtp.host, "smtp.office365.com", "q2's SMTP server");
        assert_eq!(q.provider, crate::config::Provider::Microsoft);
        assert_eq!(q.mailboxes, ["a", "b"], "each once");
        assert_eq!(q.send_permission, SendPermission::SendOnBehalf);
        assert_eq!(q.gmail_aliases, ["a@example.com", "b@example.com"]);
        assert_eq!(c.queue("q1").unwrap().smtp.host, "smtp.example.com", "the running configuration is not touched");
    }

    #[test]
    fn bad_values_are_named() {
        let c = cfg();
        let f = QueueForm::parse(b"smtp_server=nope&mailboxes=zz&send_permission=all&aliases=not-an-address");
        let e = apply(&c, "q1", &f).unwrap_err();
        let keys: Vec<_> = e.iter().map(|e| e.key).collect();
        assert_eq!(keys, ["queue.err-server", "queue.err-mailbox", "queue.err-permission", "queue.err-alias"]);
        assert_eq!(apply(&c, "nope", &QueueForm::default()).unwrap_err()[0].key, "error.not-found");
        let many = QueueForm { aliases: (0..=MAX_ALIASES).map(|i| format!("x{i}@example.com")).collect::<Vec<_>>().join("\n"), ..Default::default() };
        assert!(apply(&c, "q1", &many).unwrap_err().iter().any(|e| e.key == "queue.err-aliases-many"));
        // Shown again: the valid parts applied, the aliases as typed.
        let f = QueueForm::parse(b"smtp_server=q2&mailboxes=b&send_permission=send-as&aliases=bad");
        let (shown, e) = apply_partly(&c, "q1", &f);
        assert_eq!(e.len(), 1);
        let q = shown.queue("q1").unwrap();
        assert_eq!((q.smtp.host.as_str(), q.mailboxes.as_slice(), q.send_permission), ("smtp.office365.com", &["b".to_string()][..], SendPermission::SendAs));
        assert_eq!(q.gmail_aliases, ["bad"]);
    }
}
