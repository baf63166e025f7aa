//! `mailplug check`: each server's connection step by step.

use std::process::ExitCode;

use mailplug_host::ops;
use mailplug_host::{Plugin, TenantConfig};

use super::output::fail;

/// `mailplug check`: every selected server, each step with its time; exit 1 when one failed.
pub async fn run_check(
    plugin: &Plugin,
    cfg: &TenantConfig,
    findings: &[ops::ConfigFinding],
    mailbox: Option<&str>,
    queue: Option<&str>,
    probe_to: Option<&str>,
    json: bool,
) -> ExitCode {
    use mailplug_host::check;
    let (mailboxes, queues): (Vec<String>, Vec<String>) = match (mailbox, queue) {
        (Some(m), _) => (vec![m.to_string()], vec![]),
        (_, Some(q)) => (vec![], vec![q.to_string()]),
        _ => (cfg.mailboxes.iter().map(|m| m.name.clone()).collect(), cfg.queues.iter().map(|q| q.name.clone()).collect()),
    };
    let store = match super::store::open(cfg) {
        Ok(db) => db,
        Err(e) => return fail(e, 1),
    };
    let mut reports = Vec::new();
    for name in &mailboxes {
        match check::check_mailbox(plugin, cfg, &store, name, findings).await {
            Ok(r) => reports.push(r),
            Err(e) => return fail(e, 2),
        }
        print_check(reports.last(), json);
    }
    for name in &queues {
        match check::check_queue(plugin, cfg, &store, name, probe_to, findings).await {
            Ok(r) => reports.push(r),
            Err(e) => return fail(e, 2),
        }
        print_check(reports.last(), json);
    }
    if reports.iter().all(|r| r.passed()) { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

fn print_check(report: Option<&mailplug_host::check::CheckReport>, json: bool) {
    let Some(r) = report else { return };
    if json {
        let steps: Vec<_> = r
            .steps
            .iter()
            .map(|s| serde_json::json!({"step": s.step, "ok": true, "ms": s.ms, "detail": s.detail}))
            .chain(r.failure.iter().map(|f| {
                serde_json::json!({
                    "step": f.step, "ok": false, "ms": f.ms, "error": f.error, "detail": f.detail,
                    "cause": {"en": f.cause.en, "de": f.cause.de}, "action": {"en": f.action.en, "de": f.action.de},
                })
            }))
            .collect();
        let folders: Vec<_> = r.folders.iter().map(|(f, n)| serde_json::json!({"folder": f, "messages": n})).collect();
        println!(
            "{}",
            serde_json::json!({
                "target": r.target, "protocol": r.protocol, "server": r.server, "security": r.security,
                "passed": r.passed(), "steps": steps, "folders": folders,
            })
        );
        return;
    }
    println!("{} ({} {}, {})", r.target, r.protocol, r.server, r.security);
    for s in &r.steps {
        println!("  ok    {:<13}{:>6} ms  {}", s.step, s.ms, s.detail);
    }
    match &r.failure {
        None => println!("  passed: every step succeeded; nothing was fetched, sent or changed"),
        Some(f) => {
            println!("  FAIL  {:<13}{:>6} ms  {}", f.step, f.ms, f.error);
            if let Some(d) = &f.detail {
                println!("        detail:   {d}");
            }
            println!("        cause:    {}", f.cause.en);
            println!("        action:   {}", f.action.en);
            println!("        Ursache:  {}", f.cause.de);
            println!("        Maßnahme: {}", f.action.de);
        }
    }
}
