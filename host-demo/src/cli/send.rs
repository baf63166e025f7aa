//! `mailplug send`: a new message or a reply to a stored one, through a queue's SMTP server.

use std::path::PathBuf;
use std::process::ExitCode;

use mailplug_host::db::Database;
use mailplug_host::ops::{self, Outgoing};
use mailplug_host::{Plugin, TenantConfig};

use super::output::{explain_error, fail};

/// What `mailplug send` was asked to send.
pub struct SendArgs {
    pub queue: String,
    pub to: Vec<String>,
    pub subject: Option<String>,
    pub body: Option<String>,
    pub body_file: Option<PathBuf>,
    pub reply_to_message: Option<String>,
    pub html_file: Option<PathBuf>,
    pub force: bool,
    pub json: bool,
}

/// `mailplug send`: prints the server's final reply (or a JSON object); exit 1 on failure.
pub async fn run_send(plugin: &Plugin, cfg: &TenantConfig, args: SendArgs) -> ExitCode {
    let SendArgs { queue, to, subject, body, body_file, reply_to_message, html_file, force, json } = args;
    let text_body = match (body, body_file) {
        (Some(b), _) => b,
        (None, Some(f)) => match std::fs::read_to_string(&f) {
            Ok(b) => b,
            Err(e) => return fail(format!("cannot read --body-file {}: {e}", f.display()), 2),
        },
        (None, None) => return fail("give --body or --body-file", 2),
    };
    // For --json: what happened to the copy in the Sent folder (replies only).
    let mut saved: Option<serde_json::Value> = None;
    let result = match reply_to_message {
        Some(reference) => {
            let html_body = match html_file.map(std::fs::read_to_string).transpose() {
                Ok(h) => h,
                Err(e) => return fail(format!("cannot read --html-file: {e}"), 2),
            };
            let db = match Database::open(&cfg.database) {
                Ok(db) => db,
                Err(e) => return fail(e, 1),
            };
            let reply = ops::Reply { text_body, html_body, force };
            ops::send_reply(plugin, cfg, &queue, &db, &reference, &reply).await.map(|r| {
                eprintln!("mailplug: {}", r.plan.customer_sees.en);
                for w in &r.plan.warnings {
                    eprintln!("mailplug: warning: {}", w.en);
                }
                match &r.saved {
                    ops::SavedReply::Saved { folder, .. } => eprintln!("mailplug: saved a copy in \"{folder}\""),
                    ops::SavedReply::Skipped(why) => eprintln!("mailplug: {why}"),
                    ops::SavedReply::Failed { en, de } => {
                        eprintln!("mailplug: warning: {en}");
                        eprintln!("mailplug: Warnung: {de}");
                    }
                    ops::SavedReply::NotConfigured => {}
                }
                saved = Some(match &r.saved {
                    ops::SavedReply::Saved { folder, uid, created_folder } => serde_json::json!({
                        "saved": true, "folder": folder, "uid": uid, "created_folder": created_folder,
                    }),
                    ops::SavedReply::Skipped(why) => serde_json::json!({"saved": false, "skipped": why}),
                    ops::SavedReply::Failed { en, de } => serde_json::json!({"saved": false, "warning": en, "warning_de": de}),
                    ops::SavedReply::NotConfigured => serde_json::Value::Null,
                });
                r.sent
            })
        }
        None => {
            let db = match Database::open(&cfg.database) {
                Ok(db) => db,
                Err(e) => return fail(e, 1),
            };
            let msg = Outgoing { to, subject: subject.unwrap_or_default(), text_body };
            ops::send(plugin, cfg, &queue, &msg, &db).await
        }
    };
    match result {
        Ok(sent) => {
            let r = &sent.report;
            if json {
                let rcpts: Vec<_> = r
                    .recipients
                    .iter()
                    .map(|x| serde_json::json!({"address": x.address, "accepted": x.accepted, "reply": format!("{} {}", x.reply.code, x.reply.text)}))
                    .collect();
                let mut v = serde_json::json!({"message_id": sent.message_id, "reply": format!("{} {}", r.final_reply.code, r.final_reply.text), "recipients": rcpts});
                if let Some(copy) = saved.filter(|c| !c.is_null()) {
                    v["sent_copy"] = copy;
                }
                println!("{v}");
            } else {
                println!("{} {}", r.final_reply.code, r.final_reply.text);
                for x in r.recipients.iter().filter(|x| !x.accepted) {
                    eprintln!("mailplug: recipient {} refused: {} {}", x.address, x.reply.code, x.reply.text);
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let code = fail(&e, 1);
            explain_error(plugin, cfg, &e).await;
            code
        }
    }
}
