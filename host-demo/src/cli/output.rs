//! Output helpers shared by the commands: failure lines, explained errors, the sender plan.

use std::process::ExitCode;

use mailplug_host::ops;
use mailplug_host::{HostError, Plugin, TenantConfig};

pub fn fail(e: impl std::fmt::Display, code: u8) -> ExitCode {
    let line = e.to_string().replace('\n', " ");
    eprintln!("mailplug: {line}");
    ExitCode::from(code)
}

/// Prints the cause and the admin's action for an error about a server, in English and German,
/// after the error's detail when it has one beyond the headline (see `HostError::detail`).
pub async fn explain_error(plugin: &Plugin, cfg: &TenantConfig, e: &HostError) {
    print_detail(e);
    if let HostError::Trap(t) = e {
        // The headline says it in English; the component is not asked (it just stopped).
        eprintln!("mailplug:   Ursache:  {}", t.explanation().de);
        return;
    }
    print_explanation(explanation(plugin, cfg, e).await.as_ref());
}

/// The error's detail beyond its headline, when it has one (see `HostError::detail`).
pub fn print_detail(e: &HostError) {
    if let Some(d) = e.detail() {
        eprintln!("mailplug:   detail:   {}", d.replace('\n', " "));
    }
}

/// The cause and the admin's action for an error about a server (None for other errors).
pub async fn explanation(plugin: &Plugin, cfg: &TenantConfig, e: &HostError) -> Option<mailplug_host::engine::Diagnosis> {
    let mut instance = ops::instance_for(plugin, cfg).await.ok()?;
    mailplug_host::check::explain(&mut instance, e, mailplug_host::engine::Stage::Connect).await
}

pub fn print_explanation(d: Option<&mailplug_host::engine::Diagnosis>) {
    if let Some(d) = d {
        eprintln!("mailplug:   cause:    {}", d.cause.en);
        eprintln!("mailplug:   action:   {}", d.action.en);
        eprintln!("mailplug:   Ursache:  {}", d.cause.de);
        eprintln!("mailplug:   Maßnahme: {}", d.action.de);
    }
}

pub fn print_plan(p: &mailplug_host::engine::FromPlan, json: bool) {
    if json {
        let warnings: Vec<_> = p.warnings.iter().map(|w| serde_json::json!({"en": w.en, "de": w.de})).collect();
        let v = serde_json::json!({
            "from": p.from, "sender": p.sender, "reply_to": p.reply_to, "envelope_from": p.envelope_from,
            "customer_sees": {"en": p.customer_sees.en, "de": p.customer_sees.de}, "warnings": warnings,
        });
        println!("{v}");
        return;
    }
    println!("From:       {}", p.from);
    println!("Sender:     {}", p.sender.as_deref().unwrap_or("(none)"));
    println!("Reply-To:   {}", p.reply_to.as_deref().unwrap_or("(none)"));
    println!("MAIL FROM:  <{}>", p.envelope_from);
    println!();
    println!("{}", p.customer_sees.en);
    println!("{}", p.customer_sees.de);
    for w in &p.warnings {
        println!();
        println!("warning: {}", w.en);
        println!("Warnung: {}", w.de);
    }
}
