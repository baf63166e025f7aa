//! `mailplug send --batch DIR` / `--batch-file FILE`: several drafts over one SMTP session,
//! reported per message.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use mailplug_host::engine::Delivery;
use mailplug_host::ops::{self, MessageOutcome, NoJournal, Outgoing};
use mailplug_host::{Plugin, TenantConfig};
use serde::Deserialize;
use serde_json::json;

use super::output::{explanation, fail, print_explanation};
use super::send::{failure_json, recipient_json, retry_line};

/// Largest draft file (or JSON-lines file) read.
const MAX_DRAFT_FILE_BYTES: u64 = 256 << 20;

pub struct BatchArgs {
    pub queue: String,
    /// A folder of drafts (*.toml, *.json), sent in file-name order.
    pub dir: Option<PathBuf>,
    /// A JSON-lines file of drafts, after the folder's.
    pub lines: Option<PathBuf>,
    pub json: bool,
}

/// One draft as written in a file: `to` is an address or a list of addresses.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DraftFile {
    to: Recipients,
    #[serde(default)]
    subject: String,
    body: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Recipients {
    One(String),
    Many(Vec<String>),
}

/// Where a draft came from ("drafts/01.toml", "out.jsonl:3"), for the report.
struct Source {
    label: String,
    message: Outgoing,
}

fn read_capped(path: &Path) -> Result<String, String> {
    let len = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?.len();
    if len > MAX_DRAFT_FILE_BYTES {
        return Err(format!("{} is {len} bytes, more than the {} MB a draft file may have", path.display(), MAX_DRAFT_FILE_BYTES >> 20));
    }
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn outgoing(d: DraftFile) -> Outgoing {
    let to = match d.to {
        Recipients::One(a) => vec![a],
        Recipients::Many(v) => v,
    };
    Outgoing { to, subject: d.subject, text_body: d.body }
}

/// Reads the drafts: the folder's files in name order, then the JSON lines. A draft that
/// cannot be read is a usage error naming the file (and line): nothing is sent.
fn read_drafts(dir: Option<&Path>, lines: Option<&Path>) -> Result<Vec<Source>, String> {
    let mut out = Vec::new();
    if let Some(dir) = dir {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("cannot read --batch {}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for path in files {
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
            let label = path.display().to_string();
            let draft: DraftFile = match ext.as_str() {
                "toml" => toml::from_str(&read_capped(&path)?).map_err(|e| format!("{label}: not a draft: {e}"))?,
                "json" => serde_json::from_str(&read_capped(&path)?).map_err(|e| format!("{label}: not a draft: {e}"))?,
                _ => {
                    eprintln!("mailplug: skipping {label}: drafts are *.toml or *.json files");
                    continue;
                }
            };
            out.push(Source { label, message: outgoing(draft) });
        }
    }
    if let Some(file) = lines {
        let text = read_capped(file)?;
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let label = format!("{}:{}", file.display(), n + 1);
            let draft: DraftFile = serde_json::from_str(line).map_err(|e| format!("{label}: not a draft: {e}"))?;
            out.push(Source { label, message: outgoing(draft) });
        }
    }
    if out.is_empty() {
        return Err("the batch has no draft: give *.toml or *.json files in --batch, or lines in --batch-file".into());
    }
    Ok(out)
}

/// Sends the batch and prints one line (or JSON object) per message, in batch order; exit 0
/// when every message was delivered, 1 when any was not, 2 for unreadable drafts.
pub async fn run_send_batch(plugin: &Plugin, cfg: &TenantConfig, args: BatchArgs) -> ExitCode {
    let sources = match read_drafts(args.dir.as_deref(), args.lines.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(e, 2),
    };
    let db = match super::store::open(cfg) {
        Ok(db) => db,
        Err(e) => return fail(e, 1),
    };
    let messages: Vec<Outgoing> = sources.iter().map(|s| Outgoing { to: s.message.to.clone(), subject: s.message.subject.clone(), text_body: s.message.text_body.clone() }).collect();
    let outcomes = match ops::send_batch(plugin, cfg, &args.queue, &messages, &db, &mut NoJournal).await {
        Ok(o) => o,
        Err(e) => {
            let code = fail(&e, 1);
            print_explanation(explanation(plugin, cfg, &e).await.as_ref());
            return code;
        }
    };
    let mut all = true;
    for o in &outcomes {
        all &= o.delivered();
        report(plugin, cfg, &sources[o.index].label, o, args.json).await;
    }
    let delivered = outcomes.iter().filter(|o| o.delivered()).count();
    eprintln!("mailplug: {delivered} of {} messages delivered", outcomes.len());
    if all { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

async fn report(plugin: &Plugin, cfg: &TenantConfig, source: &str, o: &MessageOutcome, json: bool) {
    let delivery = ops::delivery_name(o.delivery);
    let reply = o.final_reply.as_ref().map(|r| format!("{} {}", r.code, r.text));
    let d = match &o.error {
        Some(e) => explanation(plugin, cfg, e).await,
        None => None,
    };
    if json {
        let mut v = match &o.error {
            Some(e) => failure_json(e, d.as_ref()),
            None => json!({"sent": true, "retry": null, "error": null, "refusal": null, "explanation": null}),
        };
        v["index"] = json!(o.index);
        v["source"] = json!(source);
        v["message_id"] = json!(o.message_id);
        v["delivery"] = json!(delivery);
        v["sent"] = json!(o.delivered());
        v["reply"] = json!(reply);
        v["recipients"] = json!(o.recipients.iter().map(recipient_json).collect::<Vec<_>>());
        println!("{v}");
        return;
    }
    let id = o.message_id.as_deref().map_or_else(|| "(not composed)".to_string(), |m| format!("<{m}>"));
    match (&o.error, o.delivery) {
        (None, _) => println!("{} {delivery} {id} {}: {}", o.index, source, reply.unwrap_or_default()),
        (Some(e), _) => {
            println!("{} {delivery} {id} {}: {}", o.index, source, e.to_string().replace('\n', " "));
            print_explanation(d.as_ref());
            eprintln!("mailplug:   retry:    {}", retry_line(e.retry()));
        }
    }
    if matches!(o.delivery, Delivery::Delivered) {
        for x in o.recipients.iter().filter(|x| !x.accepted) {
            eprintln!("mailplug: message {}: recipient {} refused: {} {}", o.index, x.address, x.reply.code, x.reply.text);
        }
    }
}
