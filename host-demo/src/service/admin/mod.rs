//! The admin web page of `mailplug serve` (issue 15, docs/ADMIN.md), nested under `/admin` on
//! the API's HTTP server: server-rendered pages (askama templates in host-demo/templates/admin,
//! every value HTML-escaped), a little JavaScript and CSS compiled into the binary
//! (`assets`), English and German (`i18n`).
//!
//! Security: sign-in per tenant with its API token or admin page password (`session`),
//! server-side sessions, a CSRF token on every POST (`csrf`), a failed sign-in limit per tenant,
//! and on every response a Content-Security-Policy without inline script or style plus the
//! other protective headers (`security_headers`). A session belongs to one tenant: every page
//! of another tenant answers 404, as if it did not exist.
//!
//! Pages: `overview` (mailboxes and queues with their state), `mailbox` (the mail-server form
//! and its JSON helpers); helper F's check, connect and queue pages use `Admin::page`,
//! `Admin::post` and `Admin::api` the same way.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;

use super::state::TenantState;
use super::Shared;

pub mod api;
pub mod assets;
pub mod check;
pub mod connect;
pub mod csrf;
pub mod edit;
pub mod i18n;
pub mod mailbox;
pub mod overview;
pub mod queue;
pub mod queue_file;
pub mod session;

pub use i18n::Lang;
pub use session::Session;

/// The Content-Security-Policy of every admin response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What the admin pages share.
pub struct Admin {
    pub shared: Arc<Shared>,
    pub sessions: session::Sessions,
    pub limiter: session::Limiter,
    /// One change of a tenant file at a time (read, edit, write).
    pub write_lock: tokio::sync::Mutex<()>,
    /// The component's preset catalogue, read once.
    pub presets: tokio::sync::OnceCell<Vec<api::PresetInfo>>,
}

/// A signed-in request to one tenant's pages.
#[derive(Clone)]
pub struct Ctx {
    pub tenant: String,
    pub state: TenantState,
    pub session: Session,
    pub lang: Lang,
}

impl Ctx {
    /// The layout's data for a page of this tenant.
    pub fn page(&self, title_key: &'static str) -> Page {
        Page {
            lang: self.lang,
            tenant: self.tenant.clone(),
            csrf: self.session.csrf.clone(),
            signed_in: true,
            title_key,
            base: format!("/admin/t/{}", self.tenant),
        }
    }
}

/// What the layout template needs.
pub struct Page {
    pub lang: Lang,
    pub tenant: String,
    /// The session's CSRF token (empty when signed out).
    pub csrf: String,
    pub signed_in: bool,
    pub title_key: &'static str,
    /// "/admin/t/{tenant}".
    pub base: String,
}

impl Page {
    pub fn t(&self, key: &str) -> &'static str {
        self.lang.t(key)
    }
    pub fn title(&self) -> &'static str {
        self.lang.t(self.title_key)
    }
    pub fn lang_code(&self) -> &'static str {
        self.lang.code()
    }
    pub fn css(&self) -> &'static str {
        assets::CSS.url()
    }
    pub fn js(&self) -> &'static str {
        assets::JS.url()
    }
}

/// The language of a request from its URI's `?lang=` and its headers.
pub fn lang_of(uri: &Uri, headers: &HeaderMap) -> Lang {
    Lang::of_request(query_param(uri, "lang").as_deref(), headers).0
}

/// One query parameter.
pub fn query_param(uri: &Uri, name: &str) -> Option<String> {
    url::form_urlencoded::parse(uri.query()?.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

impl Admin {
    /// The request's live session: its cookie names one, and its tenant's sign-in secrets are
    /// still those it signed in with (else it is ended). Use this, not `sessions.get`, wherever
    /// a handler needs the session without `page`, `post` or `api`.
    pub fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let session = self.sessions.get(headers)?;
        let same = self.shared.board.read(|b| {
            b.tenants
                .get(&session.tenant)
                .is_some_and(|s| session::credentials_id(s.api_token.as_ref(), s.config.admin_password.as_ref()) == session.credentials)
        });
        if !same {
            // The token or password it signed in with was changed (or the tenant is gone).
            self.sessions.remove(headers);
            return None;
        }
        Some(session)
    }

    fn ctx(&self, headers: &HeaderMap, uri: &Uri, t: &str) -> Result<Ctx, Denied> {
        let lang = lang_of(uri, headers);
        let session = self.session(headers).ok_or(Denied::SignIn)?;
        if session.tenant != t {
            return Err(Denied::NotFound(lang));
        }
        let state = self.shared.board.read(|b| b.tenants.get(t).cloned()).ok_or(Denied::NotFound(lang))?;
        Ok(Ctx { tenant: t.to_string(), state, session, lang })
    }

    /// A page (GET): the signed-in context, else a redirect to the sign-in page (no session) or
    /// 404 (a session of another tenant, or the tenant is gone).
    pub fn page(&self, headers: &HeaderMap, uri: &Uri, t: &str) -> Result<Ctx, Response> {
        self.ctx(headers, uri, t).map_err(|d| d.page(t))
    }

    /// A form POST: as `page`, and the CSRF token in the form field `csrf` or the header,
    /// else 403 (nothing may be done then).
    pub fn post(&self, headers: &HeaderMap, uri: &Uri, t: &str, csrf_field: Option<&str>) -> Result<Ctx, Response> {
        let ctx = self.page(headers, uri, t)?;
        if !csrf::valid(headers, csrf_field, &ctx.session.csrf) {
            return Err(error_page(StatusCode::FORBIDDEN, ctx.lang, "error.csrf"));
        }
        Ok(ctx)
    }

    /// A JSON call of the page's script: as `page` but 401/404 as JSON; with `is_post`, the
    /// `X-CSRF-Token` header is required (403 otherwise).
    pub fn api(&self, headers: &HeaderMap, uri: &Uri, t: &str, is_post: bool) -> Result<Ctx, Response> {
        let ctx = self.ctx(headers, uri, t).map_err(|d| match d {
            Denied::SignIn => (StatusCode::UNAUTHORIZED, Json(serde_json::json!({"error": "sign in first"}))).into_response(),
            Denied::NotFound(_) => (StatusCode::NOT_FOUND, Json(serde_json::json!({"error": "not found"}))).into_response(),
        })?;
        if is_post && !csrf::valid(headers, None, &ctx.session.csrf) {
            return Err((StatusCode::FORBIDDEN, Json(serde_json::json!({"error": "the X-CSRF-Token header is missing or wrong"}))).into_response());
        }
        Ok(ctx)
    }
}

enum Denied {
    SignIn,
    NotFound(Lang),
}

impl Denied {
    fn page(self, t: &str) -> Response {
        match self {
            Denied::SignIn => Redirect::to(&format!("/admin/t/{}/login", urlencode(t))).into_response(),
            Denied::NotFound(lang) => error_page(StatusCode::NOT_FOUND, lang, "error.not-found"),
        }
    }
}

/// A path segment, percent-encoded.
pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A rendered template as an HTML response; a rendering failure is a 500 without details.
pub fn html(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(body) => (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "an admin page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page failed to render").into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "admin/error.html")]
struct ErrorPage {
    page: Page,
    message: &'static str,
}

/// An error page (404, 403) in the admin's language; it names no tenant.
pub fn error_page(status: StatusCode, lang: Lang, key: &'static str) -> Response {
    let page = Page { lang, tenant: String::new(), csrf: String::new(), signed_in: false, title_key: "error.title", base: String::new() };
    html(status, &ErrorPage { page, message: lang.t(key) })
}

/// The admin routes, to be nested under `/admin`.
pub fn router<S: Clone + Send + Sync + 'static>(shared: Arc<Shared>) -> Router<S> {
    let admin = Arc::new(Admin {
        shared,
        sessions: session::Sessions::default(),
        limiter: session::Limiter::default(),
        write_lock: tokio::sync::Mutex::new(()),
        presets: tokio::sync::OnceCell::new(),
    });
    Router::new()
        .route("/static/{file}", get(assets::serve))
        .route("/t/{t}/login", get(login_page).post(login))
        .route("/t/{t}/logout", post(logout))
        .route("/t/{t}", get(|Path(t): Path<String>| async move { Redirect::permanent(&format!("/admin/t/{}/", urlencode(&t))) }))
        .route("/t/{t}/", get(overview::page))
        .merge(mailbox::routes())
        .merge(check::routes())
        .merge(connect::routes())
        .merge(queue::routes())
        .fallback(|uri: Uri, headers: HeaderMap| async move { error_page(StatusCode::NOT_FOUND, lang_of(&uri, &headers), "error.not-found") })
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(admin)
}

/// Every admin response: the CSP and the other protective headers; pages are not cached; a
/// `?lang=` sets the language cookie.
async fn security_headers(req: Request, next: Next) -> Response {
    let lang = query_param(req.uri(), "lang").and_then(|l| Lang::parse(&l));
    let is_static = req.uri().path().starts_with("/admin/static/") || req.uri().path().starts_with("/static/");
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    if !is_static {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if let Some(l) = lang {
        let c = format!("{}={}; Path=/admin; SameSite=Strict; Secure; Max-Age=31536000", i18n::LANG_COOKIE, l.code());
        if let Ok(v) = HeaderValue::from_str(&c) {
            h.append(header::SET_COOKIE, v);
        }
    }
    r
}

#[derive(Template)]
#[template(path = "admin/login.html")]
struct LoginPage {
    page: Page,
    token: String,
    /// A catalogue key: why the last try failed, or a notice.
    message: Option<&'static str>,
}

fn render_login(t: &str, lang: Lang, status: StatusCode, message: Option<&'static str>) -> Response {
    let token = session::random_hex(32);
    let page = Page {
        lang,
        tenant: t.to_string(),
        csrf: String::new(),
        signed_in: false,
        title_key: "login.title",
        base: format!("/admin/t/{}", urlencode(t)),
    };
    let mut r = html(status, &LoginPage { page, token: token.clone(), message });
    if let Ok(v) = HeaderValue::from_str(&csrf::login_cookie(&token)) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// The sign-in page. It exists for every tenant name, so it tells nothing about which exist.
async fn login_page(State(a): State<Arc<Admin>>, Path(t): Path<String>, uri: Uri, headers: HeaderMap) -> Response {
    let lang = lang_of(&uri, &headers);
    if a.session(&headers).is_some_and(|s| s.tenant == t) {
        return Redirect::to(&format!("/admin/t/{}/", urlencode(&t))).into_response();
    }
    let message = (query_param(&uri, "m").as_deref() == Some("out")).then_some("logout.done");
    render_login(&t, lang, StatusCode::OK, message)
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
}

async fn login(State(a): State<Arc<Admin>>, Path(t): Path<String>, uri: Uri, headers: HeaderMap, form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>) -> Response {
    let lang = lang_of(&uri, &headers);
    let Ok(Form(form)) = form else { return render_login(&t, lang, StatusCode::BAD_REQUEST, Some("login.failed")) };
    let expected = session::cookie(&headers, csrf::LOGIN_COOKIE).unwrap_or_default();
    if !csrf::same(&form.csrf, &expected) {
        return render_login(&t, lang, StatusCode::FORBIDDEN, Some("login.expired"));
    }
    if !a.limiter.allowed(&t) {
        tracing::warn!(tenant = %t, "admin sign-in paused after repeated failures");
        return render_login(&t, lang, StatusCode::TOO_MANY_REQUESTS, Some("login.limited"));
    }
    let signed_in = a.shared.board.read(|b| {
        b.tenants
            .get(&t)
            .filter(|s| session::credentials_match(form.token.trim(), s.api_token.as_ref(), s.config.admin_password.as_ref()))
            .map(|s| session::credentials_id(s.api_token.as_ref(), s.config.admin_password.as_ref()))
    });
    let Some(credentials) = signed_in else {
        a.limiter.failed(&t);
        tracing::warn!(tenant = %t, "admin sign-in failed");
        return render_login(&t, lang, StatusCode::UNAUTHORIZED, Some("login.failed"));
    };
    a.limiter.succeeded(&t);
    a.sessions.remove(&headers);
    let Some(id) = a.sessions.create(&t, credentials) else {
        return render_login(&t, lang, StatusCode::SERVICE_UNAVAILABLE, Some("login.busy"));
    };
    tracing::info!(tenant = %t, "admin signed in");
    let mut r = Redirect::to(&format!("/admin/t/{}/", urlencode(&t))).into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&id)) {
        h.append(header::SET_COOKIE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("{}=; Path=/admin; HttpOnly; Secure; SameSite=Strict; Max-Age=0", csrf::LOGIN_COOKIE)) {
        h.append(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(State(a): State<Arc<Admin>>, Path(t): Path<String>, uri: Uri, headers: HeaderMap, form: Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>) -> Response {
    let field = form.as_ref().ok().map(|f| f.csrf.as_str());
    if let Err(r) = a.post(&headers, &uri, &t, field) {
        return r;
    }
    a.sessions.remove(&headers);
    let mut r = Redirect::to(&format!("/admin/t/{}/login?m=out", urlencode(&t))).into_response();
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie()) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}
