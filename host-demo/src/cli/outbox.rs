//! `mailplug outbox list|drain|resend|mark-delivered|cancel`: the durable outbox from the
//! command line (`drain` is one pass of the sender the service runs continuously).

use std::process::ExitCode;

use mailplug_host::store::Store;
use mailplug_host::driver::now_ms;
use mailplug_host::ops::outbox::{self, DrainedRow};
use mailplug_host::store::{Outbox, OutboxRow, OutboxState};
use mailplug_host::{Plugin, TenantConfig};
use serde_json::{json, Value};

use super::args::OutboxCommand;
use super::output::fail;

fn row_line(r: &OutboxRow) -> String {
    let mut line = format!("{} {} {} <{}> to {} attempts {}", r.id, r.state, r.queue, r.message_id, r.envelope.to.join(","), r.attempts);
    if let Some(reply) = &r.last_reply {
        line.push_str(&format!(": {}", reply.replace('\n', " ")));
    }
    line
}

fn drained_json(queue: &str, d: &DrainedRow) -> Value {
    json!({
        "queue": queue,
        "id": d.id,
        "message_id": d.message_id,
        "state": d.state.as_str(),
        "attempts": d.attempts,
        "next_attempt_at_ms": d.next_attempt_at_ms,
        "last_reply": d.last_reply,
        "error": d.error,
        "explanation": d.explanation,
        "sent_copy": d.sent_copy,
        "record_error": d.record_error,
    })
}

pub async fn run_outbox(plugin: &Plugin, cfg: &TenantConfig, command: OutboxCommand) -> ExitCode {
    let db = match super::store::open(cfg) {
        Ok(db) => db,
        Err(e) => return fail(e, 1),
    };
    let now = now_ms() as i64;
    let (result, json) = match command {
        OutboxCommand::List { queue, state, limit, json, .. } => {
            let state = match state.as_deref().map(|s| OutboxState::parse(s).ok_or(s)).transpose() {
                Ok(s) => s,
                Err(s) => return fail(format!("--state {s}: give queued, in-flight, delivered, failed, held or cancelled"), 2),
            };
            return match db.list(&cfg.tenant, queue.as_deref(), state, limit) {
                Ok(rows) => {
                    for r in &rows {
                        if json {
                            println!("{}", r.to_json());
                        } else {
                            println!("{}", row_line(r));
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e, 1),
            };
        }
        OutboxCommand::Drain { queue, json, .. } => return drain(plugin, cfg, &db, queue, now, json).await,
        OutboxCommand::Resend { id, json, .. } => (db.resend(&cfg.tenant, &id, now), json),
        OutboxCommand::MarkDelivered { id, json, .. } => (db.mark_delivered(&cfg.tenant, &id, now), json),
        OutboxCommand::Cancel { id, json, .. } => (db.cancel(&cfg.tenant, &id, now), json),
    };
    match result {
        Ok(r) => {
            if json {
                println!("{}", r.to_json());
            } else {
                println!("{}", row_line(&r));
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e, 1),
    }
}

/// One pass over each queue (or the one named): a line (or JSON object) per row sent or
/// recovered; exit 1 when a queue could not be drained or an outcome could not be recorded.
async fn drain(plugin: &Plugin, cfg: &TenantConfig, db: &Store, queue: Option<String>, now: i64, json: bool) -> ExitCode {
    let queues: Vec<String> = match queue {
        Some(q) => vec![q],
        None => cfg.queues.iter().map(|q| q.name.clone()).collect(),
    };
    let mut ok = true;
    for q in &queues {
        let report = match outbox::drain(plugin, cfg, db, q, now).await {
            Ok(r) => r,
            Err(e) => {
                ok = false;
                fail(format!("queue \"{q}\": {e}"), 1);
                continue;
            }
        };
        for id in &report.recovered {
            if json {
                println!("{}", json!({"queue": q, "id": id, "state": "held", "recovered": true}));
            } else {
                println!("{id} held (left in flight by a sender that stopped: check, then resend or mark-delivered)");
            }
        }
        for d in &report.rows {
            ok &= d.record_error.is_none();
            if json {
                println!("{}", drained_json(q, d));
                continue;
            }
            let mut line = format!("{} {} <{}>", d.id, d.state, d.message_id);
            if let Some(r) = &d.last_reply {
                line.push_str(&format!(": {}", r.replace('\n', " ")));
            }
            if let Some(at) = d.next_attempt_at_ms {
                line.push_str(&format!(" (next attempt in {} s)", (at - now_ms() as i64).max(0) / 1000));
            }
            println!("{line}");
            if let Some(e) = &d.explanation {
                eprintln!("mailplug:   {}", e.en);
                eprintln!("mailplug:   {}", e.de);
            }
            if let Some(e) = &d.record_error {
                eprintln!("mailplug: could not record the outcome: {e}");
            }
        }
        if !json {
            let delivered = report.rows.iter().filter(|d| d.state == OutboxState::Delivered).count();
            eprintln!(
                "mailplug: queue \"{q}\": {} attempted this pass, {delivered} delivered; {} left in flight earlier, now held",
                report.rows.len(),
                report.recovered.len()
            );
        }
    }
    if ok { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
