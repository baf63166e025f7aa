//! `mailplug send`: a new message or a reply to a stored one, through a queue's SMTP server.

use std::process::ExitCode;

use mailplug_host::engine::{Diagnosis, RecipientResult};
use mailplug_host::error::{RefusalCause, Retry};
use mailplug_host::ops::outbox::Compose;
use mailplug_host::ops::{self, Outgoing};
use mailplug_host::{HostError, Plugin, TenantConfig};
use serde_json::{json, Value};

use super::args::ReplyOptions;
use super::output::{explanation, fail, print_detail, print_explanation};

/// A message as the command line gives it to `send` and `enqueue`: recipients, subject and
/// body text, or a reply to a stored message.
pub struct Message {
    pub to: Vec<String>,
    pub subject: Option<String>,
    pub body: Option<String>,
    pub reply: ReplyOptions,
}

impl Message {
    /// The message with its files read (--body-file, --html-file); the exit code 2 after saying
    /// which file could not be read.
    pub fn read(self) -> Result<Compose, ExitCode> {
        let Message { to, subject, body, reply } = self;
        let text_body = match (body, reply.body_file) {
            (Some(b), _) => b,
            (None, Some(f)) => std::fs::read_to_string(&f).map_err(|e| fail(format!("cannot read --body-file {}: {e}", f.display()), 2))?,
            (None, None) => return Err(fail("give --body or --body-file", 2)),
        };
        let Some(message) = reply.reply_to_message else {
            return Ok(Compose::Draft(Outgoing { to, subject: subject.unwrap_or_default(), text_body }));
        };
        let html_body = reply.html_file.map(std::fs::read_to_string).transpose().map_err(|e| fail(format!("cannot read --html-file: {e}"), 2))?;
        Ok(Compose::Reply { message, reply: ops::Reply { text_body, html_body, force: reply.force } })
    }
}

/// What `mailplug send` was asked to send.
pub struct SendArgs {
    pub queue: String,
    pub message: Message,
    pub json: bool,
}

/// `mailplug send`: prints the server's final reply (or a JSON object); exit 1 on failure,
/// with `--json` after printing the failure as a JSON object too (see `failure_json`).
pub async fn run_send(plugin: &Plugin, cfg: &TenantConfig, args: SendArgs) -> ExitCode {
    let SendArgs { queue, message, json } = args;
    let what = match message.read() {
        Ok(what) => what,
        Err(code) => return code,
    };
    let db = match super::store::open(cfg) {
        Ok(db) => db,
        Err(e) => return failed(plugin, cfg, e, json).await,
    };
    // For --json: what happened to the copy in the Sent folder (replies only).
    let mut saved: Option<serde_json::Value> = None;
    let result = match what {
        Compose::Reply { message: reference, reply } => {
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
        Compose::Draft(msg) => ops::send(plugin, cfg, &queue, &msg, &db).await,
    };
    match result {
        Ok(sent) => {
            let r = &sent.report;
            if json {
                let rcpts: Vec<_> = r.recipients.iter().map(recipient_json).collect();
                let mut v = json!({
                    "sent": true,
                    "message_id": sent.message_id,
                    "reply": format!("{} {}", r.final_reply.code, r.final_reply.text),
                    "recipients": rcpts,
                });
                if let Some(copy) = saved.filter(|c| !c.is_null()) {
                    v["sent_copy"] = copy;
                }
                println!("{v}");
            } else {
                println!("{} {}", r.final_reply.code, r.final_reply.text);
                for x in r.recipients.iter().filter(|x| !x.accepted) {
                    let advice = match x.retry.map(Retry::from) {
                        Some(Retry::Later) => "temporary: send to it again later",
                        _ => "permanent: correct or remove the address",
                    };
                    eprintln!("mailplug: recipient {} refused ({advice}): {} {}", x.address, x.reply.code, x.reply.text);
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => failed(plugin, cfg, e, json).await,
    }
}

/// A send that failed once the configuration was loaded: the error line, its explanation and
/// retry advice on stderr, and with `--json` the failure as a JSON object on stdout; exit 1.
async fn failed(plugin: &Plugin, cfg: &TenantConfig, e: HostError, json: bool) -> ExitCode {
    let code = fail(&e, 1);
    print_detail(&e);
    let d = explanation(plugin, cfg, &e).await;
    print_explanation(d.as_ref());
    eprintln!("mailplug:   retry:    {}", retry_line(e.retry()));
    if json {
        println!("{}", failure_json(&e, d.as_ref()));
    }
    code
}

/// What the retry advice means for the admin.
pub(super) fn retry_line(r: Retry) -> &'static str {
    match r {
        Retry::Later => "later (temporary: a later attempt can succeed; fix first what the action names as permanent)",
        Retry::FixFirst => "fix-first (permanent: change what the message names before sending again)",
        Retry::Uncertain => "uncertain (the message may have been delivered: do not resend blindly)",
    }
}

/// One recipient as the server answered RCPT TO: `address`, `accepted`, `code`, `reply`
/// ("code text"), `retry` (null when accepted, else "later" or "fix-first").
pub(super) fn recipient_json(x: &RecipientResult) -> Value {
    json!({
        "address": x.address,
        "accepted": x.accepted,
        "code": x.reply.code,
        "reply": format!("{} {}", x.reply.code, x.reply.text),
        "retry": x.retry.map(|r| Retry::from(r).as_str()),
    })
}

/// A failed send for scripts (the shape is documented in docs/CONTRACT.md): `sent` false, the
/// `message_id` when the message was composed, the overall `retry` advice, the `error` (kind,
/// stage, message, the server's reply), each recipient's answer when recipients were refused,
/// what a refusal was about, and the cause and action in English and German.
pub(super) fn failure_json(e: &HostError, d: Option<&Diagnosis>) -> Value {
    let (kind, stage, reply, message_id, refused) = match e {
        HostError::Guest(g) => (
            g.kind.as_str(),
            Some(mailplug_host::error::stage_id(g.stage_id)),
            g.reply.as_ref().map(|(code, text)| json!({"code": code, "text": text})),
            g.message_id.clone(),
            g.refused.as_ref(),
        ),
        other => (other.kind().map_or("host", |k| k.as_str()), None, None, None, None),
    };
    let message = match e {
        HostError::Guest(g) => g.message.clone(),
        other => other.to_string(),
    };
    let recipients: Vec<Value> = refused.map(|r| r.recipients.iter().map(recipient_json).collect()).unwrap_or_default();
    let refusal = refused.map(|r| match r.cause {
        RefusalCause::Recipients => json!({"cause": "recipients"}),
        RefusalCause::MessageTooBig(m) => json!({"cause": "message-too-big", "size": m.size, "server_limit": m.server_limit}),
    });
    let explanation = d.map(|d| json!({"cause": {"en": d.cause.en, "de": d.cause.de}, "action": {"en": d.action.en, "de": d.action.de}}));
    json!({
        "sent": false,
        "message_id": message_id,
        "retry": e.retry().as_str(),
        "error": {"kind": kind, "stage": stage, "message": message, "reply": reply, "detail": e.detail()},
        "refusal": refusal,
        "recipients": recipients,
        "explanation": explanation,
    })
}
