//! `mailplug enqueue`: compose a message (or a reply) and commit it to a queue's durable
//! outbox; `mailplug outbox drain` (or the service) sends it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use mailplug_host::ops::outbox::{self, Compose};
use mailplug_host::ops::{Outgoing, Reply};
use mailplug_host::{Plugin, TenantConfig};

use super::output::{explain_error, fail};

pub struct EnqueueArgs {
    pub queue: String,
    pub to: Vec<String>,
    pub subject: Option<String>,
    pub body: Option<String>,
    pub body_file: Option<PathBuf>,
    pub reply_to_message: Option<String>,
    pub html_file: Option<PathBuf>,
    pub force: bool,
    pub max_age: Option<u64>,
    pub json: bool,
}

/// Prints `<outbox id> <Message-ID>` (or a JSON object) once the row is committed; exit 1 when
/// nothing was enqueued, 2 for unreadable input.
pub async fn run_enqueue(plugin: &Plugin, cfg: &TenantConfig, args: EnqueueArgs) -> ExitCode {
    let text_body = match (args.body, &args.body_file) {
        (Some(b), _) => b,
        (None, Some(f)) => match std::fs::read_to_string(f) {
            Ok(b) => b,
            Err(e) => return fail(format!("cannot read --body-file {}: {e}", f.display()), 2),
        },
        (None, None) => return fail("give --body or --body-file", 2),
    };
    let what = match args.reply_to_message {
        Some(message) => {
            let html_body = match args.html_file.map(std::fs::read_to_string).transpose() {
                Ok(h) => h,
                Err(e) => return fail(format!("cannot read --html-file: {e}"), 2),
            };
            Compose::Reply { message, reply: Reply { text_body, html_body, force: args.force } }
        }
        None => Compose::Draft(Outgoing { to: args.to, subject: args.subject.unwrap_or_default(), text_body }),
    };
    let db = match super::store::open(cfg) {
        Ok(db) => db,
        Err(e) => return fail(e, 1),
    };
    let max_age = args.max_age.map(Duration::from_secs).unwrap_or(outbox::DEFAULT_MAX_AGE);
    match outbox::enqueue(plugin, cfg, &args.queue, &db, &what, max_age).await {
        Ok(e) => {
            if let Some(plan) = &e.plan {
                eprintln!("mailplug: {}", plan.customer_sees.en);
                for w in &plan.warnings {
                    eprintln!("mailplug: warning: {}", w.en);
                }
            }
            if args.json {
                println!("{}", e.row.to_json());
            } else {
                println!("{} <{}>", e.row.id, e.row.message_id);
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
