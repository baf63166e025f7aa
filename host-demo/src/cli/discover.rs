//! `mailplug discover` and `mailplug presets`: configuration snippets for an address, the catalogue.

use std::process::ExitCode;

use mailplug_host::Plugin;

use super::output::fail;

/// Prints a configuration snippet for an address: from the catalogue when its domain is in
/// it, else from DNS and autoconfig (`custom_domain`).
pub async fn discover(plugin: &Plugin, address: &str, json: bool, opts: &mailplug_host::discovery::DiscoveryOptions) -> ExitCode {
    let Some((local, domain)) = address.rsplit_once('@').filter(|(l, d)| !l.is_empty() && d.contains('.')) else {
        return fail(format!("\"{address}\" is not an e-mail address"), 2);
    };
    let mut instance = match plugin.instantiate(64 << 20, 2000).await {
        Ok(i) => i,
        Err(e) => return fail(e, 1),
    };
    let preset = match instance.preset_by_domain(domain).await {
        Ok(Some(p)) => p,
        Ok(None) => return custom_domain(&mut instance, address, json, opts).await,
        Err(e) => return fail(e, 1),
    };
    let username = match preset.username {
        mailplug_host::engine::UsernameForm::FullAddress => address.to_string(),
        mailplug_host::engine::UsernameForm::LocalPart => local.to_string(),
    };
    let oauth = preset.auth.iter().find_map(|a| match a {
        mailplug_host::engine::AuthSupport::Oauth2(p) => Some(p.clone()),
        _ => None,
    });
    let basic_first = matches!(
        preset.auth.first(),
        Some(mailplug_host::engine::AuthSupport::Basic | mailplug_host::engine::AuthSupport::AppPasswordRequired)
    );
    if json {
        let server = |s: &Option<mailplug_host::engine::ServerPreset>| s.as_ref().map(|s| serde_json::json!({"host": s.host, "port": s.port, "tls": s.tls}));
        println!(
            "{}",
            serde_json::json!({"address": address, "preset": preset.id, "source": "catalogue", "trusted": true,
                "imap": server(&preset.imap), "pop3": server(&preset.pop3), "smtp": server(&preset.smtp), "username": username})
        );
        return ExitCode::SUCCESS;
    }
    let auth = if basic_first {
        "password_env = \"MAILBOX_PASSWORD\"   # the app password".to_string()
    } else {
        format!("auth = \"oauth2\"\noauth = \"{}\"   # define [oauth.{}] with your client id", oauth.clone().unwrap_or_default(), oauth.unwrap_or_default())
    };
    println!("# {} ({}), from the preset catalogue", preset.name, preset.source);
    let inbound = preset.imap.as_ref().map(|s| ("imap", s)).or(preset.pop3.as_ref().map(|s| ("pop3", s)));
    if let Some((proto, s)) = inbound {
        println!("[[mailbox]]\nname = \"{local}\"\naddress = \"{address}\"\nprotocol = \"{proto}\"\nhost = \"{}\"\nport = {}\ntls = {}\nusername = \"{username}\"\n{auth}\n", s.host, s.port, s.tls);
    }
    if let Some(s) = &preset.smtp {
        let provider = match preset.smtp_provider {
            mailplug_host::engine::GuestProvider::Gmail => "gmail",
            mailplug_host::engine::GuestProvider::Microsoft => "microsoft",
            mailplug_host::engine::GuestProvider::Generic => "generic",
        };
        println!("[[queue]]\nname = \"{local}\"\nmailboxes = [\"{local}\"]\n[queue.smtp]\nprovider = \"{provider}\"\nhost = \"{}\"\nport = {}\ntls = {}\nusername = \"{username}\"\n{auth}", s.host, s.port, s.tls);
    }
    for n in &preset.notes {
        println!("# note: {}", n.en);
    }
    ExitCode::SUCCESS
}

/// Discovery by MX, SRV and autoconfig for a domain outside the catalogue. The whole text
/// output is a configuration: the findings as comments, then the snippet.
async fn custom_domain(
    instance: &mut mailplug_host::engine::Instance,
    address: &str,
    json: bool,
    opts: &mailplug_host::discovery::DiscoveryOptions,
) -> ExitCode {
    let report = match mailplug_host::discovery::discover(instance, address, opts).await {
        Ok(r) => r,
        Err(e) => return fail(e, 1),
    };
    let preset = match &report.discovery.preset {
        Some(id) => match instance.presets().await {
            Ok(all) => all.into_iter().find(|p| &p.id == id),
            Err(e) => return fail(e, 1),
        },
        None => None,
    };
    let snippet = report.snippet(preset.as_ref());
    if json {
        println!("{}", report.to_json(snippet.as_deref()));
    } else {
        print!("{}", report.comments());
        if let Some(s) = &snippet {
            println!("{s}");
        }
    }
    if snippet.is_some() {
        return ExitCode::SUCCESS;
    }
    fail(
        format!("nothing found for {address}: its domain is not in the preset catalogue and neither MX, SRV nor autoconfig name its servers; enter the provider's settings by hand (see `mailplug presets`)"),
        1,
    )
}

pub async fn print_presets(plugin: &Plugin, json: bool) -> ExitCode {
    let mut instance = match plugin.instantiate(64 << 20, 2000).await {
        Ok(i) => i,
        Err(e) => return fail(e, 1),
    };
    let presets = match instance.presets().await {
        Ok(p) => p,
        Err(e) => return fail(e, 1),
    };
    let server = |s: &Option<mailplug_host::engine::ServerPreset>| match s {
        Some(s) => format!("{}:{} {}", s.host, s.port, if s.tls { "TLS" } else { "STARTTLS" }),
        None => "-".into(),
    };
    for p in &presets {
        let auth: Vec<String> = p
            .auth
            .iter()
            .map(|a| match a {
                mailplug_host::engine::AuthSupport::Basic => "password".to_string(),
                mailplug_host::engine::AuthSupport::AppPasswordRequired => "app password".to_string(),
                mailplug_host::engine::AuthSupport::Oauth2(p) => format!("OAuth2 ({p})"),
            })
            .collect();
        if json {
            println!(
                "{}",
                serde_json::json!({"id": p.id, "name": p.name, "domains": p.domains, "pop3": server(&p.pop3), "imap": server(&p.imap),
                    "smtp": server(&p.smtp), "auth": auth, "source": p.source,
                    "notes": p.notes.iter().map(|n| serde_json::json!({"en": n.en, "de": n.de})).collect::<Vec<_>>()})
            );
        } else {
            println!("{} ({})\n  POP3 {}\n  IMAP {}\n  SMTP {}\n  sign-in: {}", p.name, p.id, server(&p.pop3), server(&p.imap), server(&p.smtp), auth.join(", "));
            for n in &p.notes {
                println!("  note: {}", n.en);
            }
        }
    }
    ExitCode::SUCCESS
}
