//! The HTTP API (axum on hyper), documented in docs/API.md. Bearer tokens: the service's admin
//! token reaches everything; a tenant's token reaches only `/v1/tenants/{its id}/...`, and
//! another tenant's routes answer 404 to it, as if that tenant did not exist. Tokens are
//! compared in constant time. Errors are JSON `{error, explanation_en, explanation_de}`.
//!
//! `router` is the seam for the parts that come next (outbox, events): they add routes to it.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::state::TenantState;
use super::Shared;
use crate::error::HostError;
use crate::secret::Secret;
use crate::store::MessageQuery;

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// The most messages one listing returns.
pub const MAX_LIMIT: u32 = 500;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: String,
    pub en: Option<String>,
    pub de: Option<String>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, error: impl Into<String>) -> ApiError {
        ApiError { status, error: error.into(), en: None, de: None }
    }
    fn unauthorized() -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            error: "a valid bearer token is needed (Authorization: Bearer <token>)".into(),
            en: Some("Send the service's admin token or the tenant's API token (api_token_file in the tenant's file).".into()),
            de: Some("Senden Sie das Admin-Token des Dienstes oder das API-Token des Mandanten (api_token_file in seiner Datei).".into()),
        }
    }
    fn no_tenant(t: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, format!("no tenant \"{t}\""))
    }
    pub(super) fn stopping() -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the service is stopping and takes no new work")
    }
    pub(super) fn host(e: HostError) -> ApiError {
        let status = match &e {
            HostError::NotFound(_) => StatusCode::NOT_FOUND,
            // A row in another state: the request conflicts with where the row is.
            HostError::Refused(_) => StatusCode::CONFLICT,
            HostError::Config(_) | HostError::Unlicensed(_) => StatusCode::UNPROCESSABLE_ENTITY,
            HostError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_GATEWAY,
        };
        ApiError::new(status, e.to_string().replace('\n', " "))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": self.error, "explanation_en": self.en, "explanation_de": self.de}));
        let mut r = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        r
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Who a bearer token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Tenant(String),
}

fn same(a: &str, b: &Secret) -> bool {
    a.as_bytes().ct_eq(b.expose().as_bytes()).into()
}

/// The caller a token names: the admin, a tenant, or nobody (None). Every token is compared
/// with each candidate in constant time, whatever matched before.
pub fn identify<'a>(
    bearer: Option<&str>,
    admin: Option<&Secret>,
    tenants: impl Iterator<Item = (&'a str, Option<&'a Secret>)>,
) -> Option<Caller> {
    let bearer = bearer?;
    let mut found = admin.is_some_and(|a| same(bearer, a)).then_some(Caller::Admin);
    for (name, token) in tenants {
        if token.is_some_and(|t| same(bearer, t)) && found.is_none() {
            found = Some(Caller::Tenant(name.to_string()));
        }
    }
    found
}

/// Whether `caller` may see tenant `t`: the admin and the tenant itself only.
pub fn may_see(caller: &Caller, t: &str) -> bool {
    match caller {
        Caller::Admin => true,
        Caller::Tenant(own) => own == t,
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn caller(s: &Shared, headers: &HeaderMap) -> ApiResult<Caller> {
    s.board
        .read(|b| identify(bearer(headers), s.admin_token.as_ref(), b.tenants.values().map(|t| (t.tenant.as_str(), t.api_token.as_ref()))))
        .ok_or_else(ApiError::unauthorized)
}

fn admin(s: &Shared, headers: &HeaderMap) -> ApiResult<()> {
    match caller(s, headers)? {
        Caller::Admin => Ok(()),
        Caller::Tenant(_) => Err(ApiError::new(StatusCode::FORBIDDEN, "this route needs the service's admin token")),
    }
}

/// The tenant's state, when the caller may see it; 404 otherwise (another tenant's token
/// learns nothing, not even whether `t` exists).
pub(super) fn tenant(s: &Shared, headers: &HeaderMap, t: &str) -> ApiResult<TenantState> {
    let c = caller(s, headers)?;
    if !may_see(&c, t) {
        return Err(ApiError::no_tenant(t));
    }
    s.board.read(|b| b.tenants.get(t).cloned()).ok_or_else(|| ApiError::no_tenant(t))
}

/// Every route; later parts add theirs with `Router::merge`.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/tenants", get(tenants))
        .route("/v1/tenants/{t}", get(tenant_state))
        .route("/v1/tenants/{t}/messages", get(messages))
        .route("/v1/tenants/{t}/messages/{id}", get(message))
        .route("/v1/tenants/{t}/messages/{id}/raw", get(message_raw))
        .route("/v1/tenants/{t}/check/{name}", post(check))
        .route("/v1/tenants/{t}/plan-from", post(plan_from))
        .merge(super::outbox::routes())
        .merge(super::events::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}

/// Serves the API until the service stops.
pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) -> std::io::Result<()> {
    let stop = shared.root.clone();
    axum::serve(listener, router(shared)).with_graceful_shutdown(stop.cancelled_owned()).await
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    // The store was opened before the API started; ready once the tenants are loaded.
    if s.board.read(|b| b.loaded) && !s.root.is_cancelled() {
        Json(json!({"status": "ready"})).into_response()
    } else {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not ready: the tenants are being loaded, or the service is stopping").into_response()
    }
}

/// Prometheus text; with an admin token configured, only for it.
async fn metrics(State(s): State<Arc<Shared>>, headers: HeaderMap) -> ApiResult<Response> {
    if s.admin_token.is_some() {
        admin(&s, &headers)?;
    }
    let text = s.metrics.render(&s.board);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

async fn tenants(State(s): State<Arc<Shared>>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    admin(&s, &headers)?;
    Ok(Json(s.board.read(|b| {
        json!({
            "loaded": b.loaded,
            "tenants": b.tenants.values().collect::<Vec<_>>(),
            "invalid": b.invalid.values().collect::<Vec<_>>(),
        })
    })))
}

async fn tenant_state(State(s): State<Arc<Shared>>, headers: HeaderMap, Path(t): Path<String>) -> ApiResult<Json<TenantState>> {
    let mut state = tenant(&s, &headers, &t)?;
    if let Some(leases) = &s.leases {
        // With several nodes: which node serves the mailboxes this one does not.
        leases.fill_holders(&mut state).await;
    }
    Ok(Json(state))
}

#[derive(Deserialize)]
struct Page {
    after: Option<i64>,
    limit: Option<u32>,
}

async fn messages(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(t): Path<String>,
    Query(page): Query<Page>,
) -> ApiResult<Json<Value>> {
    tenant(&s, &headers, &t)?;
    let limit = page.limit.unwrap_or(50).clamp(1, MAX_LIMIT);
    let after = page.after.unwrap_or(0);
    let list = s.read_store(move |db| db.list_messages(&t, after, limit)).await.map_err(ApiError::host)?;
    let next = (list.len() as u32 == limit).then(|| list.last().map(|m| m.id)).flatten();
    Ok(Json(json!({"messages": list, "next_after": next})))
}

fn message_id(id: &str) -> ApiResult<i64> {
    id.parse().map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, format!("\"{id}\" is not a message id (a number from the listing)")))
}

async fn message(State(s): State<Arc<Shared>>, headers: HeaderMap, Path((t, id)): Path<(String, String)>) -> ApiResult<Response> {
    tenant(&s, &headers, &t)?;
    let id = message_id(&id)?;
    let t2 = t.clone();
    match s.read_store(move |db| db.message_detail(&t2, id)).await.map_err(ApiError::host)? {
        Some(m) => Ok(Json(m).into_response()),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, format!("tenant \"{t}\" has no stored message {id}"))),
    }
}

async fn message_raw(State(s): State<Arc<Shared>>, headers: HeaderMap, Path((t, id)): Path<(String, String)>) -> ApiResult<Response> {
    tenant(&s, &headers, &t)?;
    let id = message_id(&id)?;
    let t2 = t.clone();
    match s.read_store(move |db| db.message_raw(&t2, id)).await.map_err(ApiError::host)? {
        Some(raw) => Ok(([(header::CONTENT_TYPE, "message/rfc822")], Body::from(raw)).into_response()),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, format!("tenant \"{t}\" has no stored message {id}"))),
    }
}

/// Runs the connection check of a mailbox or a queue (nothing is fetched or sent).
async fn check(State(s): State<Arc<Shared>>, headers: HeaderMap, Path((t, name)): Path<(String, String)>) -> ApiResult<Json<Value>> {
    let state = tenant(&s, &headers, &t)?;
    if s.root.is_cancelled() {
        return Err(ApiError::stopping());
    }
    let cfg = state.config.clone();
    let is_mailbox = cfg.mailbox(&name).is_some();
    if !is_mailbox && cfg.queue(&name).is_none() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("tenant \"{t}\" has no mailbox or queue named \"{name}\"")));
    }
    let report = s
        .run_local(move |shared| {
            Box::pin(async move {
                let store = shared.store.open()?;
                let findings = crate::ops::validate_config(&shared.plugin, &cfg).await?;
                if is_mailbox {
                    crate::check::check_mailbox(&shared.plugin, &cfg, &store, &name, &findings).await
                } else {
                    crate::check::check_queue(&shared.plugin, &cfg, &store, &name, None, &findings).await
                }
            })
        })
        .await
        .map_err(|_| ApiError::stopping())?
        .map_err(ApiError::host)?;
    Ok(Json(check_json(&report)))
}

/// A check report as JSON (the same shape as `mailplug check --json`).
pub fn check_json(r: &crate::check::CheckReport) -> Value {
    let steps: Vec<_> = r
        .steps
        .iter()
        .map(|s| json!({"step": s.step, "ok": true, "ms": s.ms, "detail": s.detail}))
        .chain(r.failure.iter().map(|f| {
            json!({
                "step": f.step, "ok": false, "ms": f.ms, "error": f.error, "detail": f.detail,
                "cause": {"en": f.cause.en, "de": f.cause.de}, "action": {"en": f.action.en, "de": f.action.de},
            })
        }))
        .collect();
    let folders: Vec<_> = r.folders.iter().map(|(f, n)| json!({"folder": f, "messages": n})).collect();
    json!({
        "target": r.target, "protocol": r.protocol, "server": r.server, "security": r.security,
        "passed": r.passed(), "steps": steps, "folders": folders,
    })
}

#[derive(Deserialize)]
struct PlanFrom {
    queue: String,
    mailbox: String,
}

/// The From, Sender, Reply-To and MAIL FROM of replies from a queue to a mailbox's mail, and
/// what the customer will see.
async fn plan_from(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(t): Path<String>,
    body: Result<Json<PlanFrom>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let state = tenant(&s, &headers, &t)?;
    let Json(req) = body.map_err(|e| ApiError::new(e.status(), format!("the body must be JSON {{\"queue\": ..., \"mailbox\": ...}}: {}", e.body_text())))?;
    if s.root.is_cancelled() {
        return Err(ApiError::stopping());
    }
    let cfg = state.config.clone();
    let p = s
        .run_local(move |shared| Box::pin(async move { crate::ops::plan_from(&shared.plugin, &cfg, &req.queue, &req.mailbox).await }))
        .await
        .map_err(|_| ApiError::stopping())?
        .map_err(ApiError::host)?;
    let warnings: Vec<_> = p.warnings.iter().map(|w| json!({"en": w.en, "de": w.de})).collect();
    Ok(Json(json!({
        "from": p.from, "sender": p.sender, "reply_to": p.reply_to, "envelope_from": p.envelope_from,
        "customer_sees": {"en": p.customer_sees.en, "de": p.customer_sees.de}, "warnings": warnings,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Secret {
        Secret::new(s.into())
    }

    #[test]
    fn a_tenant_token_reaches_only_its_own_tenant() {
        let admin = secret("admin-token-0123456789");
        let (a, b) = (secret("tenant-a-token-0123456789"), secret("tenant-b-token-0123456789"));
        let list = || [("a", Some(&a)), ("b", Some(&b)), ("c", None)].into_iter();
        assert_eq!(identify(Some("admin-token-0123456789"), Some(&admin), list()), Some(Caller::Admin));
        let ca = identify(Some("tenant-a-token-0123456789"), Some(&admin), list()).expect("a's token");
        assert_eq!(ca, Caller::Tenant("a".into()));
        assert!(may_see(&ca, "a"));
        assert!(!may_see(&ca, "b"), "a's token must not reach b");
        assert!(!may_see(&ca, "c"));
        assert!(may_see(&Caller::Admin, "b"));
        assert_eq!(identify(None, Some(&admin), list()), None, "no token");
        assert_eq!(identify(Some(""), Some(&admin), list()), None, "empty token");
        assert_eq!(identify(Some("tenant-a-token-012345678"), Some(&admin), list()), None, "a prefix is not the token");
        assert_eq!(identify(Some("tenant-a-token-01234567890"), Some(&admin), list()), None, "nor a longer one");
        assert_eq!(identify(Some("admin-token-0123456789"), None, list()), None, "no admin token configured");
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
