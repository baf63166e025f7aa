//! `mailplug enqueue`: compose a message (or a reply) and commit it to a queue's durable
//! outbox; `mailplug outbox drain` (or the service) sends it.

use std::process::ExitCode;
use std::time::Duration;

use mailplug_host::ops::outbox;
use mailplug_host::{Plugin, TenantConfig};

use super::output::{explain_error, fail};
use super::send::Message;

pub struct EnqueueArgs {
    pub queue: String,
    pub message: Message,
    pub max_age: Option<u64>,
    pub json: bool,
}

/// Prints `<outbox id> <Message-ID>` (or a JSON object) once the row is committed; exit 1 when
/// nothing was enqueued, 2 for unreadable input.
pub async fn run_enqueue(plugin: &Plugin, cfg: &TenantConfig, args: EnqueueArgs) -> ExitCode {
    let what = match args.message.read() {
        Ok(what) => what,
        Err(code) => return code,
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
