//! `mailplug oauth`: consent in a browser once, and show the stored tokens' health.

use std::process::ExitCode;

use mailplug_host::db::Database;
use mailplug_host::{Plugin, TenantConfig};

use super::args::OauthCommand;
use super::output::fail;

/// Waits for the browser's redirect on the loopback redirect URI; returns its path and query.
async fn receive_redirect(redirect_uri: &str, timeout: std::time::Duration) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = redirect_uri.strip_prefix("http://").ok_or("the redirect URI must be a loopback http:// URL to receive it here")?;
    let authority = rest.split('/').next().unwrap_or("");
    let listener = tokio::net::TcpListener::bind(authority).await.map_err(|e| format!("cannot listen on {authority}: {e}"))?;
    let wait = async {
        loop {
            let (mut s, _) = listener.accept().await.map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; 16 * 1024];
            let mut len = 0;
            while len < buf.len() {
                let n = s.read(&mut buf[len..]).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                len += n;
                if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let head = String::from_utf8_lossy(&buf[..len]).into_owned();
            let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
            if !target.contains("state=") && !target.contains("error=") {
                // A favicon or other request: not the redirect.
                let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
                continue;
            }
            let page = "<html><body><p>mailplug received the answer. You can close this window.</p></body></html>";
            let _ = s
                .write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}", page.len()).as_bytes())
                .await;
            return Ok(target);
        }
    };
    tokio::time::timeout(timeout, wait).await.map_err(|_| "no redirect arrived in time; run the login again".to_string())?
}

pub async fn oauth_command(plugin: &Plugin, cfg: &TenantConfig, command: OauthCommand) -> ExitCode {
    use mailplug_host::oauth::{self, Target};
    use mailplug_host::store::SyncStateStore;
    let db = match Database::open(&cfg.database) {
        Ok(db) => db,
        Err(e) => return fail(e, 1),
    };
    match command {
        OauthCommand::Login { mailbox, queue, timeout, .. } => {
            let target = match (mailbox, queue) {
                (Some(m), _) => Target::Mailbox(m),
                (None, Some(q)) => Target::Queue(q),
                (None, None) => return fail("give --mailbox or --queue", 2),
            };
            let redirect_uri = match oauth::resolve(cfg, &target) {
                Ok((_, c)) => c.redirect_uri.clone(),
                Err(e) => return fail(e, 2),
            };
            let mut instance = match plugin.instantiate(64 << 20, 2000).await {
                Ok(i) => i,
                Err(e) => return fail(e, 1),
            };
            let started = match oauth::begin_login(&mut instance, cfg, &target).await {
                Ok(s) => s,
                Err(e) => return fail(e, 1),
            };
            eprintln!("mailplug: open this URL in a browser and consent (waiting on {redirect_uri}):");
            println!("{}", started.url);
            use std::io::Write;
            let _ = std::io::stdout().flush();
            let _ = std::process::Command::new("xdg-open")
                .arg(&started.url)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn();
            let redirect = match receive_redirect(&redirect_uri, std::time::Duration::from_secs(timeout)).await {
                Ok(r) => r,
                Err(e) => return fail(e, 1),
            };
            match oauth::finish_login(&mut instance, cfg, &db, &target, &started, &redirect).await {
                Ok(t) => {
                    eprintln!(
                        "mailplug: tokens stored for {} (scopes: {})",
                        t.account.as_deref().unwrap_or("the account"),
                        if t.scopes.is_empty() { "as granted".to_string() } else { t.scopes.join(" ") }
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e, 1),
            }
        }
        OauthCommand::Status { json, .. } => {
            let now = mailplug_host::driver::now_ms();
            let servers = cfg
                .mailboxes
                .iter()
                .map(|m| (format!("mailbox {}", m.name), &m.server))
                .chain(cfg.queues.iter().map(|q| (format!("queue {}", q.name), &q.smtp)));
            let mut any = false;
            for (what, server) in servers {
                let Ok(client) = oauth::client_of(cfg, server) else { continue };
                any = true;
                let tokens = match db.load_tokens(&cfg.tenant, &client.name, &server.username) {
                    Ok(t) => t,
                    Err(e) => return fail(e, 1),
                };
                let (health, account, scopes, expires) = match &tokens {
                    None => ("missing: run `mailplug oauth login`".to_string(), None, String::new(), None),
                    Some(t) => {
                        let health = match (t.expires_at, &t.refresh_token) {
                            (Some(x), _) if x > now + oauth::REFRESH_MARGIN_MS => format!("ok, expires in {} min", (x - now) / 60_000),
                            (_, Some(_)) => "access token expired or expiring: refreshed on next use".to_string(),
                            (Some(_), None) => "expired and no refresh token: run `mailplug oauth login`".to_string(),
                            (None, _) => "ok (no expiry given)".to_string(),
                        };
                        (health, t.account.clone(), t.scopes.join(" "), t.expires_at)
                    }
                };
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"server": what, "username": server.username, "client": client.name,
                            "account": account, "scopes": scopes, "expires_at_ms": expires, "health": health})
                    );
                } else {
                    println!("{what}\t{}\t{}\t{}\t{health}", server.username, account.as_deref().unwrap_or("-"), if scopes.is_empty() { "-" } else { &scopes });
                }
            }
            if !any {
                eprintln!("mailplug: no server in this configuration uses OAuth2");
            }
            ExitCode::SUCCESS
        }
    }
}
