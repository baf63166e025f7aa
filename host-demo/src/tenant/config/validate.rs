//! Checks each part of the configuration and builds the validated values; every error names
//! the entry and the field to fix.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use super::raw::{
    RawAfterFetch, RawFirstSync, RawMailbox, RawOauthClient, RawOauthProvider, RawQueue, RawSecret, RawServer, RawWebhook,
};
use super::{
    AfterFetch, AuthKind, ConfigError, FirstSync, MailboxConfig, OauthClientConfig, OauthProvider, Protocol, QueueConfig,
    Security, ServerConfig, TenantConfig, WebhookConfig, WebhookUrlError, DEFAULT_WEBHOOK_TIMEOUT_SECS,
};
use crate::secret::Secret;

/// Turns a message into the error for this file.
pub(super) type MakeError<'a> = &'a dyn Fn(String) -> ConfigError;
/// Makes a path in the file absolute (relative to the file's folder).
pub(super) type Resolve<'a> = &'a dyn Fn(&Path) -> PathBuf;
/// Looks up an environment variable.
pub(super) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// `[oauth.NAME]` tables: the OAuth2 client registrations.
pub(super) fn oauth_clients(
    raw: BTreeMap<String, RawOauthClient>,
    resolve: Resolve<'_>,
    env: Env<'_>,
    err: MakeError<'_>,
) -> Result<Vec<OauthClientConfig>, ConfigError> {
    let mut oauth_clients = Vec::new();
    for (name, c) in raw {
        let at = format!("oauth.{name}");
        let provider = match (c.provider, c.tenant, c.authorization_endpoint, c.token_endpoint) {
            (RawOauthProvider::Google, None, None, None) => OauthProvider::Google,
            (RawOauthProvider::Microsoft, tenant, None, None) => {
                OauthProvider::Microsoft { tenant: tenant.unwrap_or_else(|| "organizations".into()) }
            }
            (RawOauthProvider::Custom, None, Some(a), Some(t)) => {
                if c.scopes.is_empty() {
                    return Err(err(format!("{at}: a custom provider needs `scopes`")));
                }
                OauthProvider::Custom { authorization_endpoint: a, token_endpoint: t, scopes: c.scopes.clone() }
            }
            (RawOauthProvider::Custom, ..) => {
                return Err(err(format!("{at}: a custom provider needs `authorization_endpoint` and `token_endpoint`")))
            }
            _ => {
                return Err(err(format!(
                    "{at}: `tenant` only applies to microsoft, `authorization_endpoint` / `token_endpoint` only to custom"
                )))
            }
        };
        if c.client_id.trim().is_empty() {
            return Err(err(format!("{at}: field `client_id` must not be empty")));
        }
        let client_secret = read_secret(&at, &RawSecret::new("client_secret", &c.client_secret_env, &c.client_secret_file, false), resolve, env).map_err(err)?.map(Secret::new);
        let redirect_uri = c.redirect_uri.unwrap_or_else(|| "http://127.0.0.1:8765/callback".into());
        if !redirect_uri.starts_with("http://127.0.0.1:") && !redirect_uri.starts_with("http://localhost:") && !redirect_uri.starts_with("https://") {
            return Err(err(format!("{at}: field `redirect_uri` must be a loopback http URL (for the CLI) or https")));
        }
        oauth_clients.push(OauthClientConfig { name, provider, client_id: c.client_id, client_secret, redirect_uri });
    }
    Ok(oauth_clients)
}

/// `[[mailbox]]` entries; also returns their names, which queues refer to.
pub(super) fn mailboxes(
    raw: Vec<RawMailbox>,
    resolve: Resolve<'_>,
    env: Env<'_>,
    err: MakeError<'_>,
) -> Result<(Vec<MailboxConfig>, HashSet<String>), ConfigError> {
    let mut names = HashSet::new();
    let mut mailboxes = Vec::new();
    for (i, m) in raw.into_iter().enumerate() {
        let at = format!("mailbox[{i}] \"{}\"", m.name);
        if m.name.trim().is_empty() {
            return Err(err(format!("mailbox[{i}]: field `name` must not be empty")));
        }
        if !names.insert(m.name.clone()) {
            return Err(err(format!("{at}: field `name`: another mailbox has the same name")));
        }
        if !m.address.contains('@') {
            return Err(err(format!("{at}: field `address` must be an e-mail address, got \"{}\"", m.address)));
        }
        let server = validate_server(
            &at,
            RawServer {
                host: m.host,
                port: m.port,
                tls: m.tls,
                insecure_plaintext: m.insecure_plaintext,
                auth: m.auth,
                username: m.username,
                password_env: m.password_env,
                password_file: m.password_file,
                password: m.password,
                helo_name: None,
                provider: None,
                oauth: m.oauth,
                sasl_mechanism: m.sasl_mechanism,
            },
            resolve,
            env,
        )
        .map_err(err)?;
        for f in &m.folders {
            if f.is_empty() || f.chars().any(|c| c.is_control()) {
                return Err(err(format!("{at}: field `folders` has an empty name or a control character")));
            }
        }
        let after_fetch = match (m.after_fetch, m.move_to) {
            (RawAfterFetch::Move | RawAfterFetch::MarkSeen, _) if m.protocol == Protocol::Pop3 => {
                return Err(err(format!(
                    "{at}: field `after_fetch`: POP3 can only keep or delete messages; use IMAP to move them or mark them seen"
                )))
            }
            (RawAfterFetch::Move, None) => {
                return Err(err(format!("{at}: `after_fetch = \"move\"` needs `move_to = \"<folder>\"`")))
            }
            (RawAfterFetch::Move, Some(f)) => {
                if f.is_empty() || f.chars().any(|c| c.is_control()) {
                    return Err(err(format!("{at}: field `move_to` must be a folder name without control characters")));
                }
                if m.folders.iter().any(|x| x == &f) || (m.folders.is_empty() && f.eq_ignore_ascii_case("INBOX")) {
                    return Err(err(format!("{at}: field `move_to` names a folder that is fetched; choose another folder, e.g. \"Archive\"")));
                }
                AfterFetch::MoveTo(f)
            }
            (_, Some(_)) => {
                return Err(err(format!("{at}: field `move_to` only applies with `after_fetch = \"move\"`")))
            }
            (RawAfterFetch::Keep, None) => AfterFetch::Keep,
            (RawAfterFetch::MarkSeen, None) => AfterFetch::MarkSeen,
            (RawAfterFetch::Delete, None) => AfterFetch::Delete,
        };
        let first_sync = match (m.first_sync, m.newest) {
            (RawFirstSync::Newest, Some(n)) if n > 0 => FirstSync::Newest(n),
            (RawFirstSync::Newest, _) => {
                return Err(err(format!("{at}: `first_sync = \"newest\"` needs `newest = N` with N at least 1")))
            }
            (_, Some(_)) => {
                return Err(err(format!("{at}: field `newest` only applies with `first_sync = \"newest\"`")))
            }
            (RawFirstSync::All, None) => FirstSync::All,
            (RawFirstSync::NewOnly, None) => FirstSync::NewOnly,
        };
        if let Some(f) = &m.save_sent {
            if m.protocol != Protocol::Imap {
                return Err(err(format!(
                    "{at}: field `save_sent` needs an IMAP mailbox (POP3 has no folders to save sent replies in); remove it or use `protocol = \"imap\"`"
                )));
            }
            if f.trim().is_empty() || f.chars().any(|c| c.is_control()) {
                return Err(err(format!("{at}: field `save_sent` must be a folder name without control characters, e.g. \"Sent\"")));
            }
            let fetched = |x: &str| x == f || (x.eq_ignore_ascii_case("INBOX") && f.eq_ignore_ascii_case("INBOX"));
            if m.folders.iter().any(|x| fetched(x)) || (m.folders.is_empty() && fetched("INBOX")) {
                return Err(err(format!(
                    "{at}: field `save_sent` names a folder that is fetched, so every saved reply would come back as new mail; choose another folder, e.g. \"Sent\""
                )));
            }
        }
        if m.display_name.as_deref().is_some_and(|n| n.chars().any(|c| c.is_control())) {
            return Err(err(format!("{at}: field `display_name` must not contain control characters")));
        }
        mailboxes.push(MailboxConfig {
            name: m.name,
            address: m.address,
            display_name: m.display_name,
            protocol: m.protocol,
            folders: m.folders,
            after_fetch,
            first_sync,
            save_sent: m.save_sent,
            poll_interval_secs: match m.poll_interval_secs {
                Some(n) if n < 1 => return Err(err(format!("{at}: field `poll_interval_secs` is {n}; it must be at least 1"))),
                Some(n) => n,
                None => super::DEFAULT_POLL_INTERVAL_SECS,
            },
            idle: m.idle.unwrap_or(true),
            server,
        });
    }
    Ok((mailboxes, names))
}

/// `[[queue]]` entries; `names` are the configured mailboxes.
pub(super) fn queues(
    raw: Vec<RawQueue>,
    names: &HashSet<String>,
    resolve: Resolve<'_>,
    env: Env<'_>,
    err: MakeError<'_>,
) -> Result<Vec<QueueConfig>, ConfigError> {
    let mut qnames = HashSet::new();
    let mut queues = Vec::new();
    for (i, q) in raw.into_iter().enumerate() {
        let at = format!("queue[{i}] \"{}\"", q.name);
        if q.name.trim().is_empty() {
            return Err(err(format!("queue[{i}]: field `name` must not be empty")));
        }
        if !qnames.insert(q.name.clone()) {
            return Err(err(format!("{at}: field `name`: another queue has the same name")));
        }
        for mb in &q.mailboxes {
            if !names.contains(mb) {
                return Err(err(format!("{at}: field `mailboxes` names \"{mb}\", which is not a configured mailbox")));
            }
        }
        let helo_name = q.smtp.helo_name.clone().unwrap_or_else(|| "localhost".to_string());
        if helo_name.is_empty() || !helo_name.chars().all(|c| c.is_ascii_alphanumeric() || ".-[]:".contains(c)) {
            return Err(err(format!("{at}: field `smtp.helo_name` must be a host name")));
        }
        for a in &q.gmail_aliases {
            if !a.contains('@') || a.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(err(format!("{at}: field `gmail_aliases` has \"{}\", which is not an address", a.escape_debug())));
            }
        }
        let provider = q.smtp.provider.unwrap_or_default();
        let smtp = validate_server(&format!("{at} smtp"), q.smtp, resolve, env).map_err(err)?;
        queues.push(QueueConfig {
            name: q.name,
            mailboxes: q.mailboxes,
            smtp,
            helo_name,
            provider,
            send_permission: q.send_permission,
            gmail_aliases: q.gmail_aliases,
        });
    }
    Ok(queues)
}

/// Every server's `auth` / `oauth` pair refers to a configured OAuth2 client when it should.
pub(super) fn oauth_references(c: &TenantConfig, err: MakeError<'_>) -> Result<(), ConfigError> {
    for (at, s) in c
        .mailboxes
        .iter()
        .map(|m| (format!("mailbox \"{}\"", m.name), &m.server))
        .chain(c.queues.iter().map(|q| (format!("queue \"{}\" smtp", q.name), &q.smtp)))
    {
        match (&s.auth, &s.oauth) {
            (AuthKind::Oauth2, None) => {
                return Err(err(format!("{at}: `auth = \"oauth2\"` needs `oauth = \"<name of an [oauth.NAME] client>\"`")))
            }
            (AuthKind::Oauth2, Some(n)) if c.oauth_client(n).is_none() => {
                return Err(err(format!("{at}: field `oauth` names \"{n}\", but there is no [oauth.{n}] table")))
            }
            (AuthKind::Basic, Some(_)) => {
                return Err(err(format!("{at}: field `oauth` only applies with `auth = \"oauth2\"`")))
            }
            _ => {}
        }
    }
    Ok(())
}

pub(super) fn validate_server(
    at: &str,
    s: RawServer,
    resolve: Resolve<'_>,
    env: Env<'_>,
) -> Result<ServerConfig, String> {
    if s.host.trim().is_empty() || s.host.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') {
        return Err(format!("{at}: field `host` must be a host name, got \"{}\"", s.host.escape_debug()));
    }
    if s.port == 0 {
        return Err(format!("{at}: field `port` must be between 1 and 65535"));
    }
    let security = match (s.tls, s.insecure_plaintext) {
        (true, false) => Security::ImplicitTls,
        (false, false) => Security::Starttls,
        (false, true) => Security::InsecurePlaintext,
        (true, true) => {
            return Err(format!(
                "{at}: fields `tls` and `insecure_plaintext` contradict each other; `insecure_plaintext` is only for test servers without TLS"
            ))
        }
    };
    if s.username.is_empty() || s.username.chars().any(|c| c.is_control()) {
        return Err(format!("{at}: field `username` must not be empty or contain control characters"));
    }
    let password = s.password();
    refuse_inline(at, &password)?;
    let secret = match s.auth {
        AuthKind::Oauth2 if password.is_set() => {
            return Err(format!(
                "{at}: OAuth2 takes no password; remove `password_env` / `password_file` (the token comes from the OAuth2 consent)"
            ))
        }
        AuthKind::Oauth2 => Secret::new(String::new()),
        AuthKind::Basic => Secret::new(read_secret(at, &password, resolve, env)?.ok_or_else(|| {
            format!("{at}: Basic authentication needs a password: set `password_env` (an environment variable) or `password_file`")
        })?),
    };
    if s.sasl_mechanism.is_some() && s.auth != AuthKind::Oauth2 {
        return Err(format!("{at}: field `sasl_mechanism` only applies with `auth = \"oauth2\"`"));
    }
    Ok(ServerConfig {
        host: s.host,
        port: s.port,
        security,
        auth: s.auth,
        username: s.username,
        secret,
        oauth: s.oauth,
        sasl_mechanism: s.sasl_mechanism,
    })
}

/// `[webhook]`: an https URL (plain http only to loopback, or with `insecure_plaintext`), the
/// signing secret from an environment variable or a file, and an optional timeout.
pub(super) fn webhook(w: RawWebhook, resolve: Resolve<'_>, env: Env<'_>, err: MakeError<'_>) -> Result<WebhookConfig, ConfigError> {
    let at = "webhook";
    let url = w.url.trim();
    match super::webhook_url(url, w.insecure_plaintext) {
        Ok(_) => {}
        Err(WebhookUrlError::NotHttp) => return Err(err(format!("{at}: field `url` must be an https:// URL"))),
        Err(WebhookUrlError::Invalid) => return Err(err(format!("{at}: field `url` is not a valid URL"))),
        Err(WebhookUrlError::UserInfo) => {
            return Err(err(format!(
                "{at}: field `url` must not carry a user name or password; the receiver checks the `Mailplug-Signature` header instead"
            )))
        }
        Err(WebhookUrlError::Plaintext) => {
            return Err(err(format!(
                "{at}: field `url` must use https (plain http only to a loopback address, or with `insecure_plaintext = true` for a test receiver)"
            )))
        }
    }
    let secret = read_secret(at, &w.secret(), resolve, env).map_err(err)?.ok_or_else(|| {
        err(format!("{at}: a webhook needs a signing secret: set `secret_env` (an environment variable) or `secret_file`"))
    })?;
    if secret.len() < 16 {
        return Err(err(format!("{at}: the signing secret is shorter than 16 characters; use a long random value")));
    }
    let timeout_secs = w.timeout_secs.unwrap_or(DEFAULT_WEBHOOK_TIMEOUT_SECS);
    if !(1..=300).contains(&timeout_secs) {
        return Err(err(format!("{at}: field `timeout_secs` must be between 1 and 300")));
    }
    Ok(WebhookConfig {
        url: url.to_string(),
        secret: Secret::new(secret),
        timeout: std::time::Duration::from_secs(u64::from(timeout_secs)),
        insecure_plaintext: w.insecure_plaintext,
    })
}

/// An inline secret is refused, naming where to put it instead.
fn refuse_inline(at: &str, s: &RawSecret<'_>) -> Result<(), String> {
    if s.inline {
        let n = s.name;
        return Err(format!(
            "{at}: field `{n}` is not accepted inline; put the {what} in an environment variable named by `{n}_env` or a file named by `{n}_file`",
            what = n.replace('_', " ")
        ));
    }
    Ok(())
}

/// The secret `s` names: from its environment variable, or from its file without the line
/// end; refused inline, from both, or empty. None when the table names no source.
fn read_secret(at: &str, s: &RawSecret<'_>, resolve: Resolve<'_>, env: Env<'_>) -> Result<Option<String>, String> {
    refuse_inline(at, s)?;
    let n = s.name;
    match (s.env, s.file) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(format!("{at}: set either `{n}_env` or `{n}_file`, not both")),
        (Some(var), None) => match env(var) {
            Some(v) if !v.is_empty() => Ok(Some(v)),
            _ => Err(format!("{at}: field `{n}_env` names the environment variable {var}, which is not set or empty")),
        },
        (None, Some(path)) => {
            let p = resolve(path);
            let v = std::fs::read_to_string(&p).map_err(|e| format!("{at}: field `{n}_file`: cannot read {}: {e}", p.display()))?;
            let v = v.trim_end_matches(['\r', '\n']).to_string();
            if v.is_empty() {
                return Err(format!("{at}: field `{n}_file`: {} is empty", p.display()));
            }
            Ok(Some(v))
        }
    }
}

/// The tenant's API token from `api_token_file`, or its admin page password from
/// `admin_password_file` (`field` names which): read like a password file, and long enough not
/// to be guessed (at least 16 characters).
pub(super) fn api_token(p: &Path, field: &str) -> Result<Secret, String> {
    let v = std::fs::read_to_string(p).map_err(|e| format!("field `{field}`: cannot read {}: {e}", p.display()))?;
    let v = v.trim_end_matches(['\r', '\n']).to_string();
    if v.chars().count() < 16 {
        return Err(format!("field `{field}`: the secret in {} must be at least 16 characters long", p.display()));
    }
    if v.chars().any(|c| c.is_control() || c == ' ') {
        return Err(format!("field `{field}`: the secret in {} must be one line without spaces", p.display()));
    }
    Ok(Secret::new(v))
}
