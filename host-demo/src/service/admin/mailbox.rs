//! The mail-server form: add (GET/POST `/mailboxes/new`) and edit (GET/POST
//! `/mailboxes/{id}`) a POP3/IMAP mailbox or a queue's SMTP server (`?smtp=1` when a mailbox
//! and a queue share the name). Saving checks the fields, writes the password to its own
//! secret file, edits the tenant's file (`edit`), validates the result as the service will
//! (parsing, then the component's findings for this server: errors refuse the save) and
//! replaces the file atomically; the service's rescan starts the new settings within seconds.
//! The password is write-only: never rendered, an empty field keeps the stored one.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use askama::Template;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use super::edit::{self, ServerEdit, Target};
use super::{html, query_param, urlencode, Admin, Ctx, Page};
use crate::config::{AuthKind, Protocol, Security, ServerConfig, TenantConfig};
use crate::engine::{ProtocolKind, ServerSettings};

pub fn routes() -> Router<Arc<Admin>> {
    Router::new()
        .route("/t/{t}/mailboxes/new", get(new_page).post(save_new))
        .route("/t/{t}/mailboxes/{id}", get(edit_page).post(save_edit))
        .route("/t/{t}/api/presets", get(super::api::presets))
        .route("/t/{t}/api/findings", post(super::api::findings))
        .route("/t/{t}/api/discover", post(super::api::discover))
}

/// The form's fields as posted (and as shown again after an error, except the password).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ServerForm {
    pub csrf: String,
    pub name: String,
    pub address: String,
    pub protocol: String,
    pub host: String,
    pub port: String,
    /// The checkbox: present ("on") when checked.
    pub tls: Option<String>,
    pub auth: String,
    pub oauth: String,
    pub username: String,
    pub password: String,
}

impl ServerForm {
    pub fn tls_on(&self) -> bool {
        self.tls.is_some()
    }
    pub fn oauth2(&self) -> bool {
        self.auth == "oauth2"
    }
    pub fn is_smtp(&self) -> bool {
        self.protocol == "smtp"
    }
}

/// One finding as the page shows it.
pub struct FindingView {
    /// The setting it is about ("port", "tls", "auth", ...), `data-code`.
    pub code: String,
    /// "error" or "warning".
    pub severity: &'static str,
    pub text: String,
}

#[derive(Template)]
#[template(path = "admin/mailbox.html")]
struct FormPage {
    page: Page,
    is_new: bool,
    /// The form's action URL.
    action: String,
    /// The entry's name (empty for a new one).
    id: String,
    v: ServerForm,
    presets: Vec<(String, String)>,
    oauth_clients: Vec<String>,
    errors: Vec<String>,
    findings: Vec<FindingView>,
    saved: bool,
    /// A password is stored (edit): the help says an empty field keeps it.
    stored_password: bool,
    /// Helper F's "Test connection" and "Connect account" (mailbox_f.html), for a saved mailbox.
    live: Option<super::check::MailboxLive>,
}

impl FormPage {
    fn sel(&self, field: &str, option: &str) -> &'static str {
        let v = match field {
            "protocol" => &self.v.protocol,
            "auth" => &self.v.auth,
            "oauth" => &self.v.oauth,
            _ => return "",
        };
        if v == option {
            "selected"
        } else {
            ""
        }
    }
}

/// The values of an entry in the tenant's configuration.
fn form_of(cfg: &TenantConfig, target: &Target) -> Option<(ServerForm, bool)> {
    let (protocol, address, s): (&str, &str, &ServerConfig) = match target {
        Target::Mailbox(n) => {
            let m = cfg.mailbox(n)?;
            (if m.protocol == Protocol::Pop3 { "pop3" } else { "imap" }, &m.address, &m.server)
        }
        Target::Queue(n) => ("smtp", "", &cfg.queue(n)?.smtp),
    };
    let form = ServerForm {
        csrf: String::new(),
        name: target.name().to_string(),
        address: address.to_string(),
        protocol: protocol.into(),
        host: s.host.clone(),
        port: s.port.to_string(),
        tls: (s.security == Security::ImplicitTls).then(|| "on".into()),
        auth: if s.auth == AuthKind::Oauth2 { "oauth2" } else { "basic" }.into(),
        oauth: s.oauth.clone().unwrap_or_default(),
        username: s.username.clone(),
        password: String::new(),
    };
    Some((form, s.auth == AuthKind::Basic && !s.secret.expose().is_empty()))
}

/// The saved file's configuration (what the service will run next), else the running one.
fn current_config(ctx: &Ctx) -> Arc<TenantConfig> {
    TenantConfig::load(FsPath::new(&ctx.state.file)).map(Arc::new).unwrap_or_else(|_| ctx.state.config.clone())
}

fn target_of(cfg: &TenantConfig, id: &str, uri: &Uri) -> Option<Target> {
    let smtp = query_param(uri, "smtp").is_some_and(|v| v == "1");
    if !smtp && cfg.mailbox(id).is_some() {
        Some(Target::Mailbox(id.to_string()))
    } else if cfg.queue(id).is_some() {
        Some(Target::Queue(id.to_string()))
    } else {
        None
    }
}

fn edit_url(t: &str, target: &Target) -> String {
    let q = if matches!(target, Target::Queue(_)) { "?smtp=1" } else { "" };
    format!("/admin/t/{}/mailboxes/{}{q}", urlencode(t), urlencode(target.name()))
}

/// The component's findings about the form's server (the same check as `presets --config`).
pub async fn findings_for(a: &Admin, ctx: &Ctx, v: &ServerForm, stored: Option<String>) -> Vec<FindingView> {
    let Ok(port) = v.port.trim().parse::<u16>() else {
        return vec![FindingView { code: "port".into(), severity: "error", text: ctx.lang.t("err.port").into() }];
    };
    let protocol = match v.protocol.as_str() {
        "pop3" => ProtocolKind::Pop3,
        "smtp" => ProtocolKind::Smtp,
        _ => ProtocolKind::Imap,
    };
    let oauth2 = v.oauth2();
    let password = if oauth2 { None } else if !v.password.is_empty() { Some(v.password.clone()) } else { stored };
    let settings = ServerSettings {
        protocol,
        host: v.host.trim().to_string(),
        port,
        tls: v.tls_on(),
        oauth2,
        has_password: password.is_some(),
        username: v.username.trim().to_string(),
        password,
    };
    let cfg = ctx.state.config.clone();
    let lang = ctx.lang;
    let found = a
        .shared
        .run_local(move |shared| {
            Box::pin(async move {
                let mut instance = crate::ops::instance_for(&shared.plugin, &cfg).await?;
                crate::ops::server_findings(&mut instance, "form", &settings).await
            })
        })
        .await;
    match found {
        Ok(Ok(list)) => list
            .into_iter()
            .map(|f| FindingView { code: f.field, severity: if f.error { "error" } else { "warning" }, text: lang.pick(&f.en, &f.de).to_string() })
            .collect(),
        Ok(Err(e)) | Err(e) => {
            tracing::warn!(error = %e, "the admin form's findings failed");
            Vec::new()
        }
    }
}

async fn render(a: &Admin, ctx: &Ctx, status: StatusCode, target: Option<&Target>, v: ServerForm, errors: Vec<String>, saved: bool, stored: Option<String>) -> Response {
    let cfg = ctx.state.config.clone();
    let findings = if v.host.trim().is_empty() { Vec::new() } else { findings_for(a, ctx, &v, stored.clone()).await };
    let presets = super::api::preset_list(a, ctx).await.iter().map(|p| (p.id.clone(), p.name.clone())).collect();
    let view = FormPage {
        page: ctx.page(if target.is_none() { "form.title-new" } else { "form.title-edit" }),
        is_new: target.is_none(),
        action: match target {
            Some(t) => edit_url(&ctx.tenant, t),
            None => format!("/admin/t/{}/mailboxes/new", urlencode(&ctx.tenant)),
        },
        id: target.map(|t| t.name().to_string()).unwrap_or_default(),
        v: ServerForm { password: String::new(), ..v },
        presets,
        oauth_clients: cfg.oauth_clients.iter().map(|c| c.name.clone()).collect(),
        errors,
        findings,
        saved,
        stored_password: stored.is_some(),
        live: match target {
            Some(Target::Mailbox(n)) => super::check::mailbox_live(a, ctx, n).await,
            Some(Target::Queue(n)) => super::check::queue_live(ctx, n).await,
            None => None,
        },
    };
    html(status, &view)
}

async fn new_page(State(a): State<Arc<Admin>>, Path(t): Path<String>, uri: Uri, headers: HeaderMap) -> Response {
    let ctx = match a.page(&headers, &uri, &t) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let v = ServerForm { protocol: "imap".into(), port: "993".into(), tls: Some("on".into()), auth: "basic".into(), ..Default::default() };
    render(&a, &ctx, StatusCode::OK, None, v, Vec::new(), false, None).await
}

async fn edit_page(State(a): State<Arc<Admin>>, Path((t, id)): Path<(String, String)>, uri: Uri, headers: HeaderMap) -> Response {
    let ctx = match a.page(&headers, &uri, &t) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let cfg = current_config(&ctx);
    let Some(target) = target_of(&cfg, &id, &uri) else { return super::error_page(StatusCode::NOT_FOUND, ctx.lang, "error.not-found") };
    let Some((v, has_pw)) = form_of(&cfg, &target) else { return super::error_page(StatusCode::NOT_FOUND, ctx.lang, "error.not-found") };
    let stored = has_pw.then(|| stored_secret(&cfg, &target)).flatten();
    let saved = query_param(&uri, "saved").is_some_and(|v| v == "1");
    render(&a, &ctx, StatusCode::OK, Some(&target), v, Vec::new(), saved, stored).await
}

fn stored_secret(cfg: &TenantConfig, target: &Target) -> Option<String> {
    let s = match target {
        Target::Mailbox(n) => &cfg.mailbox(n)?.server,
        Target::Queue(n) => &cfg.queue(n)?.smtp,
    };
    (s.auth == AuthKind::Basic && !s.secret.expose().is_empty()).then(|| s.secret.expose().to_string())
}

async fn save_new(State(a): State<Arc<Admin>>, Path(t): Path<String>, uri: Uri, headers: HeaderMap, form: Result<Form<ServerForm>, FormRejection>) -> Response {
    let v = form.map(|f| f.0).unwrap_or_default();
    let ctx = match a.post(&headers, &uri, &t, Some(&v.csrf)) {
        Ok(c) => c,
        Err(r) => return r,
    };
    save(&a, &ctx, None, v).await
}

async fn save_edit(
    State(a): State<Arc<Admin>>,
    Path((t, id)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    form: Result<Form<ServerForm>, FormRejection>,
) -> Response {
    let v = form.map(|f| f.0).unwrap_or_default();
    let ctx = match a.post(&headers, &uri, &t, Some(&v.csrf)) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let cfg = current_config(&ctx);
    let Some(target) = target_of(&cfg, &id, &uri) else { return super::error_page(StatusCode::NOT_FOUND, ctx.lang, "error.not-found") };
    save(&a, &ctx, Some(target), v).await
}

/// A name for a new entry: letters, digits, '-', '_', '.', at most 64.
fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 64 && n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// The form's own checks, as catalogue keys.
fn check_fields(v: &ServerForm, new: bool, existing: Option<&Target>, stored: bool, oauth_clients: &[String]) -> Vec<&'static str> {
    let mut errors = Vec::new();
    if !["pop3", "imap", "smtp"].contains(&v.protocol.as_str()) {
        errors.push("err.protocol");
    }
    if let Some(t) = existing {
        if matches!(t, Target::Queue(_)) != v.is_smtp() {
            errors.push("err.protocol-change");
        }
    }
    if new && !valid_name(v.name.trim()) {
        errors.push("err.name");
    }
    if !v.is_smtp() && (new || existing.is_some()) {
        let a = v.address.trim();
        if !a.contains('@') || a.chars().any(|c| c.is_whitespace() || c.is_control()) {
            errors.push("err.address");
        }
    }
    let h = v.host.trim();
    if h.is_empty() || h.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') {
        errors.push("err.host");
    }
    if !v.port.trim().parse::<u16>().is_ok_and(|p| p > 0) {
        errors.push("err.port");
    }
    if v.username.trim().is_empty() || v.username.chars().any(|c| c.is_control()) {
        errors.push("err.username");
    }
    if v.oauth2() {
        if !oauth_clients.contains(&v.oauth) {
            errors.push(if oauth_clients.is_empty() { "form.oauth-client-none" } else { "err.oauth-client" });
        }
    } else if v.password.is_empty() && !stored {
        errors.push("err.password");
    }
    errors
}

async fn save(a: &Admin, ctx: &Ctx, existing: Option<Target>, v: ServerForm) -> Response {
    let lang = ctx.lang;
    let file = PathBuf::from(&ctx.state.file);
    let _guard = a.write_lock.lock().await;
    let cfg = current_config(ctx);
    let stored = existing.as_ref().and_then(|t| stored_secret(&cfg, t));
    let clients: Vec<String> = cfg.oauth_clients.iter().map(|c| c.name.clone()).collect();
    let new = existing.is_none();
    let mut errors: Vec<String> = check_fields(&v, new, existing.as_ref(), stored.is_some(), &clients).into_iter().map(|k| lang.t(k).to_string()).collect();
    let target = existing.clone().unwrap_or_else(|| {
        let n = v.name.trim().to_string();
        if v.is_smtp() { Target::Queue(n) } else { Target::Mailbox(n) }
    });
    if new && errors.is_empty() && (cfg.mailbox(target.name()).is_some() && !v.is_smtp() || cfg.queue(target.name()).is_some() && v.is_smtp()) {
        errors.push(lang.t("err.name-taken").to_string());
    }
    let back = |errors: Vec<String>, v: ServerForm, stored: Option<String>| async move {
        render(a, ctx, StatusCode::UNPROCESSABLE_ENTITY, existing.as_ref(), v, errors, false, stored).await
    };
    if !errors.is_empty() {
        return back(errors, v, stored).await;
    }
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) => return back(vec![format!("{} {e}", lang.t("err.file"))], v, stored).await,
    };
    // A new password goes to a new file first; the tenant file names it only once it is valid.
    let mut written: Option<(PathBuf, String)> = None;
    if !v.oauth2() && !v.password.is_empty() {
        match edit::write_secret(&file, &target, &v.password) {
            Ok(w) => written = Some(w),
            Err(e) => return back(vec![format!("{} {e}", lang.t("err.file"))], v, stored).await,
        }
    }
    let discard = |w: &Option<(PathBuf, String)>| {
        if let Some((p, _)) = w {
            let _ = std::fs::remove_file(p);
        }
    };
    let e = ServerEdit {
        protocol: (!v.is_smtp()).then(|| v.protocol.clone()),
        address: (!v.is_smtp()).then(|| v.address.trim().to_string()),
        host: v.host.trim().to_string(),
        port: v.port.trim().parse().unwrap_or(0),
        tls: v.tls_on(),
        oauth2: v.oauth2(),
        oauth: v.oauth2().then(|| v.oauth.clone()),
        username: v.username.trim().to_string(),
        password_file: written.as_ref().map(|(_, rel)| rel.clone()),
    };
    let new_text = match edit::apply(&text, &target, new, &e) {
        Ok(t) => t,
        Err(msg) => {
            discard(&written);
            return back(vec![format!("{} {msg}", lang.t("err.file"))], v, stored).await;
        }
    };
    let base = file.parent().map(FsPath::to_path_buf).unwrap_or_default();
    let parsed = match TenantConfig::parse(&new_text, &ctx.state.file, &base, &|n| std::env::var(n).ok()) {
        Ok(c) => c,
        Err(err) => {
            discard(&written);
            return back(vec![format!("{} {}", lang.t("err.config"), err.message)], v, stored).await;
        }
    };
    // The component's findings for this server: errors refuse the save (as the service would
    // refuse the file), warnings are shown on the saved page.
    let pw = if v.oauth2() { None } else if v.password.is_empty() { stored.clone() } else { Some(v.password.clone()) };
    let found = findings_for(a, ctx, &v, pw).await;
    let refused: Vec<String> = found.iter().filter(|f| f.severity == "error").map(|f| format!("{}: {}", f.code, f.text)).collect();
    if !refused.is_empty() {
        discard(&written);
        return back(refused, v, stored).await;
    }
    drop(parsed);
    let old_file = edit::password_file_of(&text, &target);
    if let Err(err) = edit::write_atomic(&file, &new_text) {
        discard(&written);
        return back(vec![format!("{} {err}", lang.t("err.file"))], v, stored).await;
    }
    if let Some(old) = old_file.filter(|o| written.is_some() || v.oauth2() && !o.is_empty()) {
        edit::remove_old_secret(&file, &old);
    }
    tracing::info!(tenant = %ctx.tenant, entry = %target.name(), "the admin page saved a mail server");
    let url = edit_url(&ctx.tenant, &target);
    let sep = if url.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{url}{sep}saved=1")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form() -> ServerForm {
        ServerForm {
            name: "sales".into(),
            address: "sales@example.com".into(),
            protocol: "imap".into(),
            host: "imap.example.com".into(),
            port: "993".into(),
            tls: Some("on".into()),
            auth: "basic".into(),
            username: "sales@example.com".into(),
            password: "pw".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_form_checks_its_fields() {
        assert!(check_fields(&form(), true, None, false, &[]).is_empty());
        let bad = ServerForm { name: "a b".into(), host: "imaps://x".into(), port: "0".into(), username: "".into(), password: "".into(), ..form() };
        assert_eq!(check_fields(&bad, true, None, false, &[]), ["err.name", "err.host", "err.port", "err.username", "err.password"]);
        let edit = ServerForm { password: "".into(), ..form() };
        assert!(check_fields(&edit, false, Some(&Target::Mailbox("sales".into())), true, &[]).is_empty(), "an empty password keeps the stored one");
        let oauth = ServerForm { auth: "oauth2".into(), password: "".into(), oauth: "google".into(), ..form() };
        assert!(check_fields(&oauth, true, None, false, &["google".into()]).is_empty(), "no password with OAuth2");
        assert_eq!(check_fields(&oauth, true, None, false, &[]), ["form.oauth-client-none"]);
        let smtp = ServerForm { protocol: "smtp".into(), ..form() };
        assert_eq!(check_fields(&smtp, false, Some(&Target::Mailbox("sales".into())), true, &[]), ["err.protocol-change"]);
        assert!(valid_name("support.de-1_x") && !valid_name("") && !valid_name("a/b") && !valid_name(&"a".repeat(65)));
    }
}
