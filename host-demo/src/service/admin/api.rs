//! The JSON the form's script calls: the preset catalogue (`GET api/presets`), the findings of
//! the settings as typed (`POST api/findings`, the same check as `presets --config`) and
//! discovery from an e-mail address (`POST api/discover`). Signed-in session required; POSTs
//! carry `X-CSRF-Token`.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::mailbox::{findings_for, ServerForm};
use super::{Admin, Ctx, Lang};
use crate::engine::{AuthSupport, Preset, ProtocolKind, ServerPreset, UsernameForm};

/// A server of a preset.
#[derive(Debug, Clone, Serialize)]
pub struct PresetServer {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

/// A preset as the page uses it.
#[derive(Debug, Clone, Serialize)]
pub struct PresetInfo {
    pub id: String,
    pub name: String,
    pub domains: Vec<String>,
    pub imap: Option<PresetServer>,
    pub pop3: Option<PresetServer>,
    pub smtp: Option<PresetServer>,
    /// The recommended sign-in: "basic" or "oauth2".
    pub auth: &'static str,
    /// Basic needs an app password there.
    pub app_password: bool,
    /// "full-address" or "local-part".
    pub username: &'static str,
    pub notes_en: Vec<String>,
    pub notes_de: Vec<String>,
}

fn server(s: &Option<ServerPreset>) -> Option<PresetServer> {
    s.as_ref().map(|s| PresetServer { host: s.host.clone(), port: s.port, tls: s.tls })
}

fn info(p: &Preset) -> PresetInfo {
    PresetInfo {
        id: p.id.clone(),
        name: p.name.clone(),
        domains: p.domains.clone(),
        imap: server(&p.imap),
        pop3: server(&p.pop3),
        smtp: server(&p.smtp),
        auth: match p.auth.first() {
            Some(AuthSupport::Oauth2(_)) => "oauth2",
            _ => "basic",
        },
        app_password: p.auth.iter().any(|a| matches!(a, AuthSupport::AppPasswordRequired)),
        username: match p.username {
            UsernameForm::FullAddress => "full-address",
            UsernameForm::LocalPart => "local-part",
        },
        notes_en: p.notes.iter().map(|n| n.en.clone()).collect(),
        notes_de: p.notes.iter().map(|n| n.de.clone()).collect(),
    }
}

/// The component's preset catalogue (read once; the component's, with the errata applied).
pub async fn preset_list(a: &Admin, ctx: &Ctx) -> Vec<PresetInfo> {
    let cfg = ctx.state.config.clone();
    let shared = a.shared.clone();
    a.presets
        .get_or_try_init(|| async move {
            shared
                .run_local(move |shared| {
                    Box::pin(async move {
                        let mut instance = crate::ops::instance_for(&shared.plugin, &cfg).await?;
                        instance.presets().await
                    })
                })
                .await
                .and_then(|r| r)
                .map(|list| list.iter().map(info).collect::<Vec<_>>())
        })
        .await
        .cloned()
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the preset catalogue could not be read");
            Vec::new()
        })
}

/// GET api/presets
pub async fn presets(State(a): State<Arc<Admin>>, Path(t): Path<String>, uri: Uri, headers: HeaderMap) -> Response {
    let ctx = match a.api(&headers, &uri, &t, false) {
        Ok(c) => c,
        Err(r) => return r,
    };
    Json(json!({"presets": preset_list(&a, &ctx).await})).into_response()
}

/// The findings request: the form's fields as typed, and which entry (for its stored password).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct FindingsRequest {
    pub protocol: String,
    pub host: String,
    /// A number, or the port field's text as typed.
    pub port: serde_json::Value,
    pub tls: bool,
    pub auth: String,
    pub username: String,
    pub password: String,
    /// The entry edited (empty for a new one) and whether it is a queue's SMTP server.
    pub id: String,
    pub smtp: bool,
}

/// POST api/findings
pub async fn findings(
    State(a): State<Arc<Admin>>,
    Path(t): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Json<FindingsRequest>, JsonRejection>,
) -> Response {
    let ctx = match a.api(&headers, &uri, &t, true) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Ok(Json(r)) = body else { return bad_json() };
    let cfg = &ctx.state.config;
    let stored = if r.id.is_empty() {
        None
    } else if r.smtp {
        cfg.queue(&r.id).map(|q| q.smtp.secret.expose().to_string())
    } else {
        cfg.mailbox(&r.id).map(|m| m.server.secret.expose().to_string())
    }
    .filter(|s| !s.is_empty());
    let form = ServerForm {
        protocol: r.protocol,
        host: r.host,
        port: match r.port {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            _ => String::new(),
        },
        tls: r.tls.then(|| "on".into()),
        auth: r.auth,
        username: r.username,
        password: r.password,
        ..Default::default()
    };
    let list = findings_for(&a, &ctx, &form, stored).await;
    let out: Vec<_> = list.iter().map(|f| json!({"code": f.code, "severity": f.severity, "text": f.text})).collect();
    Json(json!({"findings": out, "none": ctx.lang.t("form.findings-none")})).into_response()
}

fn bad_json() -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": "the body must be a JSON object"}))).into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DiscoverRequest {
    pub email: String,
}

fn proto_name(p: ProtocolKind) -> &'static str {
    match p {
        ProtocolKind::Imap => "imap",
        ProtocolKind::Pop3 => "pop3",
        ProtocolKind::Smtp => "smtp",
    }
}

/// POST api/discover: the catalogue's servers for the address's domain, else what MX, SRV and
/// autoconfig name (as `mailplug discover`); candidates best first.
pub async fn discover(
    State(a): State<Arc<Admin>>,
    Path(t): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Json<DiscoverRequest>, JsonRejection>,
) -> Response {
    let ctx = match a.api(&headers, &uri, &t, true) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Ok(Json(r)) = body else { return bad_json() };
    let lang: Lang = ctx.lang;
    let address = r.email.trim().to_string();
    let Some((local, domain)) = address.rsplit_once('@').map(|(l, d)| (l.to_string(), d.to_string())).filter(|(l, d)| !l.is_empty() && d.contains('.'))
    else {
        return Json(json!({"found": false, "message": lang.t("err.address")})).into_response();
    };
    let cfg = ctx.state.config.clone();
    let addr2 = address.clone();
    let result = a
        .shared
        .run_local(move |shared| {
            Box::pin(async move {
                let mut instance = crate::ops::instance_for(&shared.plugin, &cfg).await?;
                if let Some(p) = instance.preset_by_domain(&domain).await? {
                    let username = match p.username {
                        UsernameForm::FullAddress => addr2.clone(),
                        UsernameForm::LocalPart => local.clone(),
                    };
                    let mut c = Vec::new();
                    for (proto, s) in [("imap", &p.imap), ("pop3", &p.pop3), ("smtp", &p.smtp)] {
                        if let Some(s) = s {
                            c.push(json!({"protocol": proto, "host": s.host, "port": s.port, "tls": s.tls, "username": username,
                                "source": format!("catalogue: {}", p.id), "trusted": true}));
                        }
                    }
                    return Ok(json!({"preset": p.id, "auth": info(&p).auth, "candidates": c}));
                }
                let opts = crate::discovery::DiscoveryOptions::default();
                let report = crate::discovery::discover(&mut instance, &addr2, &opts).await?;
                let c: Vec<_> = report
                    .discovery
                    .candidates
                    .iter()
                    .map(|c| json!({"protocol": proto_name(c.protocol), "host": c.host, "port": c.port, "tls": c.tls,
                        "username": c.username, "source": c.source, "trusted": c.trusted}))
                    .collect();
                Ok::<_, crate::HostError>(json!({"preset": report.discovery.preset, "auth": "basic", "candidates": c}))
            })
        })
        .await
        .and_then(|r| r);
    match result {
        Ok(mut v) => {
            let found = v["candidates"].as_array().is_some_and(|c| !c.is_empty());
            v["found"] = json!(found);
            v["message"] = json!(lang.t(if found { "form.discover-found" } else { "form.discover-none" }));
            Json(v).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "admin discovery failed");
            Json(json!({"found": false, "message": lang.t("form.discover-none")})).into_response()
        }
    }
}
