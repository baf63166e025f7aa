//! The host's half of OAuth2: it runs the HTTP requests the guest builds, receives the
//! browser's redirect, and keeps the tokens. Every decision (URLs, PKCE, state, parsing,
//! when to refresh) is the guest's.

use std::time::Duration;

use crate::config::{OauthClientConfig, OauthProvider, ServerConfig, TenantConfig};
use crate::driver::now_ms;
use crate::engine::{
    AuthorizationRequest, ClientRegistration, HttpRequest, HttpResponse, Instance, OauthEndpoints, OauthFailure,
    OauthFailureKind, Tokens,
};
use crate::error::HostError;
use crate::store::SyncStateStore;

pub use super::redirect::LoopbackReceiver;

/// Refresh this long before the access token expires.
pub const REFRESH_MARGIN_MS: u64 = 5 * 60 * 1000;

/// Which configured server an OAuth2 login is for.
#[derive(Debug, Clone)]
pub enum Target {
    Mailbox(String),
    Queue(String),
}

/// The server and its OAuth2 client for a target.
pub fn resolve<'a>(cfg: &'a TenantConfig, target: &Target) -> Result<(&'a ServerConfig, &'a OauthClientConfig), HostError> {
    let server = match target {
        Target::Mailbox(n) => &cfg.mailbox(n).ok_or_else(|| HostError::NotFound(format!("no mailbox named \"{n}\"")))?.server,
        Target::Queue(n) => &cfg.queue(n).ok_or_else(|| HostError::NotFound(format!("no queue named \"{n}\"")))?.smtp,
    };
    client_of(cfg, server).map(|c| (server, c))
}

/// The OAuth2 client of a server configured with `auth = "oauth2"`.
pub fn client_of<'a>(cfg: &'a TenantConfig, server: &ServerConfig) -> Result<&'a OauthClientConfig, HostError> {
    let name = server.oauth.as_deref().ok_or_else(|| {
        HostError::NotFound(format!("{}:{} does not use OAuth2 (auth = \"oauth2\" with oauth = \"NAME\")", server.host, server.port))
    })?;
    cfg.oauth_client(name).ok_or_else(|| HostError::NotFound(format!("no [oauth.{name}] client in the configuration")))
}

fn failure(f: OauthFailure) -> HostError {
    let kind = match f.kind {
        OauthFailureKind::StateMismatch => "StateMismatch",
        OauthFailureKind::AccessDenied => "AccessDenied",
        OauthFailureKind::AuthorizationFailed => "AuthorizationFailed",
        OauthFailureKind::NeedsReauthorization => "NeedsReauthorization",
        OauthFailureKind::Transient => "Transient",
        OauthFailureKind::Invalid => "Invalid",
    };
    let needs_reauthorization =
        matches!(f.kind, OauthFailureKind::NeedsReauthorization | OauthFailureKind::AccessDenied);
    HostError::OAuth { needs_reauthorization, kind: kind.to_string(), message: f.message }
}

pub async fn endpoints(instance: &mut Instance, c: &OauthClientConfig) -> Result<OauthEndpoints, HostError> {
    match &c.provider {
        OauthProvider::Google => instance.oauth_google().await,
        OauthProvider::Microsoft { tenant } => instance.oauth_microsoft(tenant).await?.map_err(failure),
        OauthProvider::Custom { authorization_endpoint, token_endpoint, scopes } => Ok(OauthEndpoints {
            authorization_endpoint: authorization_endpoint.clone(),
            token_endpoint: token_endpoint.clone(),
            scopes: scopes.clone(),
            extra_authorization_params: Vec::new(),
        }),
    }
}

pub fn registration(c: &OauthClientConfig) -> ClientRegistration {
    registration_to(c, None)
}

/// The registration with another redirect URI than the configured one (the admin page's own
/// callback route), or the configured one.
fn registration_to(c: &OauthClientConfig, redirect_uri: Option<&str>) -> ClientRegistration {
    ClientRegistration {
        client_id: c.client_id.clone(),
        client_secret: c.client_secret.as_ref().map(|s| s.expose().to_string()),
        redirect_uri: redirect_uri.map_or_else(|| c.redirect_uri.clone(), str::to_string),
    }
}

async fn execute(cfg: &TenantConfig, req: &HttpRequest) -> Result<HttpResponse, HostError> {
    let tls = crate::net::tls_config(cfg.extra_ca_file.as_deref())?;
    let r = crate::http::execute(
        &crate::http::Request { method: &req.method, url: &req.url, headers: &req.headers, body: &req.body },
        tls,
        Duration::from_secs(30),
    )
    .await?;
    Ok(HttpResponse { status: r.status, headers: r.headers, body: r.body })
}

/// Starts a login: the URL for the admin's browser, plus the state and verifier to keep.
pub async fn begin_login(instance: &mut Instance, cfg: &TenantConfig, target: &Target) -> Result<AuthorizationRequest, HostError> {
    begin_login_to(instance, cfg, target, None).await
}

/// `begin_login` with the browser sent back to `redirect_uri` instead of the configured one
/// (`finish_login_to` must then be given the same).
pub async fn begin_login_to(
    instance: &mut Instance,
    cfg: &TenantConfig,
    target: &Target,
    redirect_uri: Option<&str>,
) -> Result<AuthorizationRequest, HostError> {
    let (server, client) = resolve(cfg, target)?;
    let e = endpoints(instance, client).await?;
    instance.oauth_begin(&e, &registration_to(client, redirect_uri), Some(&server.username)).await?.map_err(failure)
}

/// Finishes a login with the redirect the browser came back with; stores and returns the tokens.
pub async fn finish_login(
    instance: &mut Instance,
    cfg: &TenantConfig,
    store: &dyn SyncStateStore,
    target: &Target,
    started: &AuthorizationRequest,
    redirect: &str,
) -> Result<Tokens, HostError> {
    finish_login_to(instance, cfg, store, target, started, redirect, None).await
}

/// `finish_login` for a login begun with `begin_login_to` and the same `redirect_uri`.
pub async fn finish_login_to(
    instance: &mut Instance,
    cfg: &TenantConfig,
    store: &dyn SyncStateStore,
    target: &Target,
    started: &AuthorizationRequest,
    redirect: &str,
    redirect_uri: Option<&str>,
) -> Result<Tokens, HostError> {
    let (server, client) = resolve(cfg, target)?;
    store.token_storage_ready()?;
    let code = instance.oauth_parse_redirect(redirect, &started.state).await?.map_err(failure)?;
    let e = endpoints(instance, client).await?;
    let req = instance.oauth_token_request(&e, &registration_to(client, redirect_uri), &code, &started.code_verifier).await?;
    let resp = execute(cfg, &req).await?;
    let tokens = instance.oauth_parse_token_response(&resp, now_ms(), None).await?.map_err(failure)?;
    same_account(tokens.account.as_deref(), &server.username)?;
    store.save_tokens(&cfg.tenant, &client.name, &server.username, &tokens)?;
    Ok(tokens)
}

/// The account that consented (the id_token's) must be the configured username: a consent
/// given in a browser signed in to another account is refused and its tokens are not stored.
/// Without an id_token there is nothing to compare, and the login is accepted.
pub fn same_account(consented: Option<&str>, username: &str) -> Result<(), HostError> {
    match consented {
        Some(a) if !a.trim().eq_ignore_ascii_case(username.trim()) => Err(HostError::OAuth {
            kind: "AccountMismatch".into(),
            needs_reauthorization: true,
            message: format!(
                "the browser consented as {a}, but this server is configured for {username}; nothing was stored. \
                 Sign in to the provider as {username} (or use a private browser window) and run `mailplug oauth login` again, \
                 or correct `username` in the configuration if {a} is the right account \
                 / im Browser hat {a} zugestimmt, konfiguriert ist aber {username}; es wurde nichts gespeichert. \
                 Beim Anbieter als {username} anmelden (oder ein privates Browserfenster nutzen) und `mailplug oauth login` \
                 wiederholen, oder `username` in der Konfiguration korrigieren, falls {a} das richtige Konto ist"
            ),
        }),
        _ => Ok(()),
    }
}

/// A usable access token for a server: the stored one, refreshed (and the rotated refresh
/// token stored) when it is close to expiry or when `force_refresh`.
pub async fn access_token(
    instance: &mut Instance,
    cfg: &TenantConfig,
    store: &dyn SyncStateStore,
    server: &ServerConfig,
    force_refresh: bool,
) -> Result<String, HostError> {
    let client = client_of(cfg, server)?;
    let tokens = store.load_tokens(&cfg.tenant, &client.name, &server.username)?.ok_or_else(|| HostError::OAuth {
        needs_reauthorization: true,
        kind: "NoTokens".into(),
        message: format!(
            "no OAuth2 tokens for {} yet: an admin must consent once with `mailplug oauth login`",
            server.username
        ),
    })?;
    if !force_refresh && !instance.oauth_needs_refresh(&tokens, now_ms(), REFRESH_MARGIN_MS).await? {
        return Ok(tokens.access_token);
    }
    // A refresh rotates the refresh token: it must be storable before it is asked for.
    store.token_storage_ready()?;
    let Some(refresh) = tokens.refresh_token.clone() else {
        return Err(HostError::OAuth {
            needs_reauthorization: true,
            kind: "NoRefreshToken".into(),
            message: format!("the access token for {} expired and there is no refresh token: consent again with `mailplug oauth login`", server.username),
        });
    };
    let e = endpoints(instance, client).await?;
    let req = instance.oauth_refresh_request(&e, &registration(client), &refresh).await?;
    let resp = execute(cfg, &req).await?;
    let fresh = instance.oauth_parse_token_response(&resp, now_ms(), Some(&refresh)).await?.map_err(failure)?;
    store.save_tokens(&cfg.tenant, &client.name, &server.username, &fresh)?;
    Ok(fresh.access_token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_account_is_accepted() {
        assert!(same_account(Some("Sales@Example.com"), "sales@example.com").is_ok());
        assert!(same_account(None, "sales@example.com").is_ok());
        let e = same_account(Some("other@example.com"), "sales@example.com").unwrap_err().to_string();
        assert!(e.contains("other@example.com") && e.contains("sales@example.com") && e.contains("zugestimmt"), "{e}");
    }
}
