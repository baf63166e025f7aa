//! "Connect account" on the mailbox page: the OAuth2 authorization-code flow with PKCE (the
//! guest's `oauth` functions, tenant/oauth.rs) run from the admin page, and the token's health.
//!
//! `POST .../mailboxes/{id}/connect` (form, CSRF field) begins a login whose redirect URI is
//! this admin page's own callback route, `/admin/t/{t}/oauth/callback` on the host the admin's
//! browser used (http for a loopback host, else https), and sends the browser to the
//! provider. The login's state, PKCE verifier and redirect URI are kept here, bound to the
//! session that began it, for `LOGIN_TTL`; the callback takes them once, only for that
//! session, exchanges the code, checks the consenting account is the configured one and
//! stores the tokens encrypted (as `mailplug oauth login` does), then returns to the mailbox
//! page. The POST answers a page that moves on to the provider (meta refresh) rather than a
//! redirect: the admin pages' CSP has `form-action 'self'`, which stops a form's redirect to
//! another site. The session cookie is SameSite=Strict, so a browser coming back from a provider on
//! another site does not send it: the callback then answers a page that reloads the same URL
//! from this site (`hop=1`), which does send it.
//!
//! After the tokens are stored, a mailbox that was waiting for them (waiting for a fix, or
//! backing off) is started again: the tenant is restarted at the next scan of the tenants
//! folder (`Shared::restarts`), as a change of its file would.
//!
//! `token_health` is what div#token-health shows: valid until, scopes, whether a refresh
//! token is present, the consenting account; never a token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use serde::Deserialize;

use super::{error_page, html, query_param, urlencode, Admin, Ctx, Lang, Page};
use crate::config::AuthKind;
use crate::engine::AuthorizationRequest;
use crate::oauth::{self, Target};

/// How long a begun login waits for the browser to come back.
pub const LOGIN_TTL: Duration = Duration::from_secs(10 * 60);
/// Logins waiting at once, over all sessions.
pub const MAX_PENDING: usize = 256;

struct Pending {
    /// The session's CSRF token: the login belongs to that session.
    session: String,
    tenant: String,
    mailbox: String,
    started: AuthorizationRequest,
    redirect_uri: String,
    created: Instant,
}

/// The outcome of the last login of a session for a mailbox, shown once on the mailbox page.
#[derive(Clone)]
pub struct Outcome {
    pub ok: bool,
    /// The error, in English and German when it has both (`HostError::OAuth` messages do).
    pub message: Option<String>,
}

/// Logins begun and not finished, and outcomes not shown yet.
#[derive(Default)]
pub struct Logins {
    pending: Mutex<HashMap<String, Pending>>,
    outcomes: Mutex<HashMap<(String, String), (Outcome, Instant)>>,
}

impl Logins {
    fn begin(&self, p: Pending) -> bool {
        let mut map = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, p| p.created.elapsed() < LOGIN_TTL);
        if map.len() >= MAX_PENDING {
            return false;
        }
        map.insert(p.started.state.clone(), p);
        true
    }

    /// Takes the login with this state if it belongs to this session and tenant.
    fn take(&self, state: &str, session: &str, tenant: &str) -> Option<Pending> {
        let mut map = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(state) {
            Some(p) if super::csrf::same(session, &p.session) && p.tenant == tenant => {
                map.remove(state).filter(|p| p.created.elapsed() < LOGIN_TTL)
            }
            _ => None,
        }
    }

    fn record(&self, session: &str, mailbox: &str, outcome: Outcome) {
        let mut map = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (_, at)| at.elapsed() < LOGIN_TTL);
        if map.len() < MAX_PENDING {
            map.insert((session.to_string(), mailbox.to_string()), (outcome, Instant::now()));
        }
    }

    /// The outcome to show once on the mailbox page.
    pub fn take_outcome(&self, session: &str, mailbox: &str) -> Option<Outcome> {
        let mut map = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&(session.to_string(), mailbox.to_string())).map(|(o, _)| o)
    }
}

/// The routes of "Connect account" (merged into the admin router).
pub fn routes() -> Router<Arc<Admin>> {
    Router::new()
        .route("/t/{t}/mailboxes/{id}/connect", post(connect))
        .route("/t/{t}/oauth/callback", get(callback))
        .layer(Extension(logins()))
}

/// The one table of logins (the mailbox page reads the outcomes from it).
pub fn logins() -> Arc<Logins> {
    static LOGINS: std::sync::OnceLock<Arc<Logins>> = std::sync::OnceLock::new();
    LOGINS.get_or_init(|| Arc::new(Logins::default())).clone()
}

/// The admin page's own callback URL on the host the browser used: http for a loopback host,
/// https otherwise (the session cookie is Secure, so a remote admin page is served over TLS).
/// None for a Host header that is not a plain host[:port].
pub fn callback_uri(headers: &HeaderMap, tenant: &str) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?.trim();
    let plain = !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !plain {
        return None;
    }
    let name = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => host,
    };
    let scheme = if crate::http::is_loopback_host(name.trim_start_matches('[').trim_end_matches(']')) { "http" } else { "https" };
    Some(format!("{scheme}://{host}/admin/t/{}/oauth/callback", urlencode(tenant)))
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

fn back_to(t: &str, mailbox: &str) -> Response {
    Redirect::to(&format!("/admin/t/{}/mailboxes/{}#token-health", urlencode(t), urlencode(mailbox))).into_response()
}

/// POST /admin/t/{t}/mailboxes/{id}/connect: to the provider's consent page.
async fn connect(
    State(a): State<Arc<Admin>>,
    Extension(logins): Extension<Arc<Logins>>,
    Path((t, id)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let field = form.as_ref().ok().map(|f| f.csrf.as_str());
    let ctx = match a.post(&headers, &uri, &t, field) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(m) = ctx.state.config.mailbox(&id) else {
        return error_page(StatusCode::NOT_FOUND, ctx.lang, "error.not-found");
    };
    let fail = |message: String| {
        logins.record(&ctx.session.csrf, &id, Outcome { ok: false, message: Some(message) });
        back_to(&t, &id)
    };
    if m.server.auth != AuthKind::Oauth2 {
        return fail(ctx.lang.t("connect.not-oauth").to_string());
    }
    let Some(redirect_uri) = callback_uri(&headers, &t) else {
        return fail("the request's Host header is not a host name and port".into());
    };
    let cfg = ctx.state.config.clone();
    let (name, ruri) = (id.clone(), redirect_uri.clone());
    let started = a
        .shared
        .run_local(move |shared| {
            Box::pin(async move {
                let mut instance = crate::ops::instance_for(&shared.plugin, &cfg).await?;
                oauth::begin_login_to(&mut instance, &cfg, &Target::Mailbox(name), Some(&ruri)).await
            })
        })
        .await;
    let started = match started {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return fail(e.to_string().replace('\n', " ")),
        Err(e) => return fail(e.to_string()),
    };
    let url = started.url.clone();
    let pending = Pending { session: ctx.session.csrf.clone(), tenant: t.clone(), mailbox: id.clone(), started, redirect_uri, created: Instant::now() };
    if !logins.begin(pending) {
        return fail(ctx.lang.t("connect.busy").to_string());
    }
    tracing::info!(tenant = %t, mailbox = %id, "admin page: OAuth2 login begun");
    // Not a redirect: the page's CSP (form-action 'self') stops a form's redirect to another
    // site. A page that moves on to the provider (meta refresh, and a link) is not a form's.
    html(StatusCode::OK, &Hop { page: ctx.page("connect.title"), next: url, message: "connect.to-provider" })
}

#[derive(Template)]
#[template(path = "admin/oauth_hop.html")]
struct Hop {
    page: Page,
    next: String,
    /// A catalogue key: where the page goes.
    message: &'static str,
}

/// GET /admin/t/{t}/oauth/callback?code=..&state=.. (or ?error=..): finishes the login.
async fn callback(
    State(a): State<Arc<Admin>>,
    Extension(logins): Extension<Arc<Logins>>,
    Path(t): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let lang = super::lang_of(&uri, &headers);
    if a.session(&headers).is_none() {
        if query_param(&uri, "hop").is_none() {
            // Back from another site: the SameSite=Strict cookie was not sent. The same URL,
            // loaded again from this site, carries it.
            let next = match uri.query() {
                Some(q) => format!("{}?{q}&hop=1", uri.path()),
                None => format!("{}?hop=1", uri.path()),
            };
            let page = Page { lang, tenant: String::new(), csrf: String::new(), signed_in: false, title_key: "connect.title", base: String::new() };
            return html(StatusCode::OK, &Hop { page, next, message: "connect.returning" });
        }
        return error_page(StatusCode::NOT_FOUND, lang, "connect.expired");
    }
    // The session's checks as on every page (its tenant, its credentials still the same).
    let ctx = match a.page(&headers, &uri, &t) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let session = ctx.session.clone();
    let state = query_param(&uri, "state").unwrap_or_default();
    let Some(p) = logins.take(&state, &session.csrf, &t) else {
        return error_page(StatusCode::NOT_FOUND, lang, "connect.expired");
    };
    let cfg = ctx.state.config.clone();
    let redirect = uri.path_and_query().map(|pq| pq.as_str().to_string()).unwrap_or_default();
    let (name, mailbox) = (p.mailbox.clone(), p.mailbox.clone());
    let result = a
        .shared
        .run_local(move |shared| {
            Box::pin(async move {
                let store = shared.store.open()?;
                let mut instance = crate::ops::instance_for(&shared.plugin, &cfg).await?;
                oauth::finish_login_to(&mut instance, &cfg, &store, &Target::Mailbox(name), &p.started, &redirect, Some(&p.redirect_uri))
                    .await
                    .map(|_| ())
            })
        })
        .await;
    let outcome = match result {
        Ok(Ok(())) => {
            tracing::info!(tenant = %t, mailbox = %mailbox, "admin page: OAuth2 tokens stored");
            // A mailbox that stopped for want of tokens (waiting for a fix) or backs off starts
            // again now: the tenant restarts at the next scan of the tenants folder.
            let stuck = a.shared.board.read(|b| {
                b.tenants.get(&t).and_then(|s| s.mailboxes.get(&mailbox)).is_some_and(|m| {
                    matches!(m.phase, crate::service::state::Phase::WaitingForFix | crate::service::state::Phase::BackingOff { .. })
                })
            });
            if stuck {
                a.shared.restarts.lock().unwrap_or_else(|p| p.into_inner()).insert(t.clone());
            }
            Outcome { ok: true, message: None }
        }
        Ok(Err(e)) => {
            tracing::warn!(tenant = %t, mailbox = %mailbox, error = %e, "admin page: OAuth2 login failed");
            Outcome { ok: false, message: Some(e.to_string().replace('\n', " ")) }
        }
        Err(e) => Outcome { ok: false, message: Some(e.to_string()) },
    };
    logins.record(&session.csrf, &mailbox, outcome);
    back_to(&t, &mailbox)
}

/// What div#token-health shows for an OAuth2 mailbox.
pub struct TokenHealth {
    /// "valid", "expiring" (refreshed at next use), "expired", "missing", or "unreadable".
    pub state: &'static str,
    pub state_text: &'static str,
    pub valid_until: Option<String>,
    pub scopes: String,
    pub refresh: bool,
    pub account: Option<String>,
    /// Why the tokens could not be read (the key is missing, ...).
    pub problem: Option<String>,
}

/// The token's health for mailbox `id` of the signed-in tenant; None when it does not use OAuth2.
pub async fn token_health(a: &Admin, ctx: &Ctx, id: &str) -> Option<TokenHealth> {
    let cfg = &ctx.state.config;
    let m = cfg.mailbox(id)?;
    if m.server.auth != AuthKind::Oauth2 {
        return None;
    }
    let client = oauth::client_of(cfg, &m.server).ok()?.name.clone();
    let (tenant, user) = (cfg.tenant.clone(), m.server.username.clone());
    let loaded = a
        .shared
        .read_store(move |db| {
            use crate::store::SyncStateStore;
            db.load_tokens(&tenant, &client, &user)
        })
        .await;
    let lang = ctx.lang;
    let now = crate::driver::now_ms();
    Some(match loaded {
        Ok(None) => health(lang, "missing", None),
        Ok(Some(t)) => {
            let state = match (t.expires_at, &t.refresh_token) {
                (Some(x), _) if x > now + oauth::REFRESH_MARGIN_MS => "valid",
                (None, _) => "valid",
                (_, Some(_)) => "expiring",
                (Some(_), None) => "expired",
            };
            TokenHealth {
                valid_until: t.expires_at.map(|x| super::overview::time(x as i64)),
                scopes: if t.scopes.is_empty() { lang.t("token.scopes-as-granted").to_string() } else { t.scopes.join(" ") },
                refresh: t.refresh_token.is_some(),
                account: t.account.clone(),
                ..health(lang, state, None)
            }
        }
        Err(e) => health(lang, "unreadable", Some(e.to_string().replace('\n', " "))),
    })
}

fn health(lang: Lang, state: &'static str, problem: Option<String>) -> TokenHealth {
    let key = match state {
        "valid" => "token.valid",
        "expiring" => "token.expiring",
        "expired" => "token.expired",
        "missing" => "token.missing",
        _ => "token.unreadable",
    };
    TokenHealth { state, state_text: lang.t(key), valid_until: None, scopes: String::new(), refresh: false, account: None, problem }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::HOST, h.parse().unwrap());
        m
    }

    #[test]
    fn the_callback_is_the_admin_pages_own_route_on_the_browsers_host() {
        assert_eq!(callback_uri(&host("127.0.0.1:8025"), "acme").as_deref(), Some("http://127.0.0.1:8025/admin/t/acme/oauth/callback"));
        assert_eq!(callback_uri(&host("localhost:9"), "a b").as_deref(), Some("http://localhost:9/admin/t/a+b/oauth/callback"));
        assert_eq!(callback_uri(&host("[::1]:8025"), "x").as_deref(), Some("http://[::1]:8025/admin/t/x/oauth/callback"));
        assert_eq!(callback_uri(&host("mail.example.com"), "x").as_deref(), Some("https://mail.example.com/admin/t/x/oauth/callback"));
        for bad in ["evil.example/path", "a@b", "x y", ""] {
            let mut m = HeaderMap::new();
            if let Ok(v) = bad.parse() {
                m.insert(header::HOST, v);
            }
            assert_eq!(callback_uri(&m, "x"), None, "{bad:?}");
        }
    }

    fn pending(session: &str, state: &str) -> Pending {
        Pending {
            session: session.into(),
            tenant: "t".into(),
            mailbox: "m".into(),
            started: AuthorizationRequest { url: "u".into(), state: state.into(), code_verifier: "v".into() },
            redirect_uri: "r".into(),
            created: Instant::now(),
        }
    }

    #[test]
    fn a_login_is_finished_once_and_only_by_the_session_that_began_it() {
        let l = Logins::default();
        let s = "a".repeat(64);
        assert!(l.begin(pending(&s, "st1")));
        assert!(l.take("st1", &"b".repeat(64), "t").is_none(), "another session");
        assert!(l.take("st1", &s, "u").is_none(), "another tenant");
        assert!(l.take("st2", &s, "t").is_none(), "another state");
        assert!(l.take("st1", &s, "t").is_some());
        assert!(l.take("st1", &s, "t").is_none(), "used once");
    }
}
