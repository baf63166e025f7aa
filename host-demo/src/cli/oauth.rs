//! `mailplug oauth`: consent in a browser once, and show the stored tokens' health.

use std::process::ExitCode;

use mailplug_host::{Plugin, TenantConfig};

use super::args::OauthCommand;
use super::output::fail;

pub async fn oauth_command(plugin: &Plugin, cfg: &TenantConfig, command: OauthCommand) -> ExitCode {
    use mailplug_host::oauth::{self, Target};
    use mailplug_host::store::SyncStateStore;
    let db = match super::store::open(cfg) {
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
            // Before the consent: tokens that cannot be stored would be lost.
            if let Err(e) = db.token_storage_ready() {
                return fail(e, 2);
            }
            // Listening before the URL is shown: a browser that comes back at once finds it.
            let receiver = match oauth::LoopbackReceiver::bind(&redirect_uri).await {
                Ok(r) => r,
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
            let redirect = match receiver.receive(std::time::Duration::from_secs(timeout)).await {
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
