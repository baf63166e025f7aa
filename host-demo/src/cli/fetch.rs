//! `mailplug fetch`: stores each new message and prints a line (or JSON object) per message.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use mailplug_host::db::{Database, DbSink};
use mailplug_host::driver::MessageSink;
use mailplug_host::engine::{FetchedMessage, SkippedMessage};
use mailplug_host::ops;
use mailplug_host::store::EmlDir;
use mailplug_host::{HostError, Plugin, TenantConfig};

use super::output::{explain_error, fail};

/// `mailplug fetch`: every selected mailbox in turn; exit 1 when one failed.
pub async fn run_fetch(plugin: &Plugin, cfg: &TenantConfig, mailbox: Option<String>, out: Option<PathBuf>, json: bool) -> ExitCode {
    let names: Vec<String> = match mailbox {
        Some(n) => vec![n],
        None => cfg.mailboxes.iter().map(|m| m.name.clone()).collect(),
    };
    if names.is_empty() {
        return fail("the configuration has no [[mailbox]] entries", 2);
    }
    let db = match Database::open(&cfg.database) {
        Ok(db) => db,
        Err(e) => return fail(e, 1),
    };
    let progress = std::io::stderr().is_terminal();
    let mut failed = None;
    for name in names {
        let eml = match &out {
            Some(dir) => match EmlDir::new(dir.join(mailplug_host::store::safe_name(&name))) {
                Ok(e) => Some(e),
                Err(e) => return fail(e, 1),
            },
            None => None,
        };
        let mut sink = CliSink { mailbox: name.clone(), db: db.sink(&cfg.tenant, &name), eml, json, progress, pending: Vec::new() };
        let result = ops::fetch(plugin, cfg, &name, &mut sink, &db).await;
        if progress {
            eprint!("\r\x1b[K");
        }
        let st = sink.db.stats;
        match result {
            Ok(s) => eprintln!(
                "mailplug: {name}: {} new message(s) stored{}{}{}",
                st.stored,
                if st.duplicates > 0 { format!(", {} already stored", st.duplicates) } else { String::new() },
                if s.skipped > 0 { format!(", {} skipped (over a limit)", s.skipped) } else { String::new() },
                if s.remaining > 0 { format!(", {} more waiting (batch limit): run again", s.remaining) } else { String::new() }
            ),
            Err(e) => {
                eprintln!("mailplug: mailbox \"{name}\": {}", e.to_string().replace('\n', " "));
                explain_error(plugin, cfg, &e).await;
                failed = Some(1);
            }
        }
    }
    failed.map(ExitCode::from).unwrap_or(ExitCode::SUCCESS)
}

/// Stores each delivered message in the database (and as .eml with --out), prints a line per
/// message, and shows progress on a terminal.
struct CliSink<'a> {
    mailbox: String,
    db: DbSink<'a>,
    eml: Option<EmlDir>,
    json: bool,
    progress: bool,
    /// What to print for each delivery, once its commit says whether it was new.
    pending: Vec<Line>,
}

/// The summary of one delivered message.
struct Line {
    id: String,
    bytes: usize,
    from: String,
    subject: String,
    kind: String,
    parse_error: Option<String>,
    file: Option<String>,
}

/// The value of a header in the raw message, unfolded, for the summary line only.
fn header(raw: &[u8], name: &str) -> String {
    let text = String::from_utf8_lossy(&raw[..raw.len().min(64 * 1024)]);
    let mut value: Option<String> = None;
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            break;
        }
        match &mut value {
            Some(v) if line.starts_with([' ', '\t']) => {
                v.push(' ');
                v.push_str(line.trim());
            }
            Some(_) => break,
            None => {
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case(name) {
                        value = Some(v.trim().to_string());
                    }
                }
            }
        }
    }
    value.unwrap_or_default()
}

impl MessageSink for CliSink<'_> {
    fn deliver(&mut self, m: FetchedMessage) -> Result<(), HostError> {
        let (kind, parse_error) = match &m.parsed {
            Ok(p) => (mailplug_host::db::classification_name(p.classification).to_string(), None),
            Err(e) => ("unparsed".to_string(), Some(e.clone())),
        };
        let file = match &mut self.eml {
            Some(eml) => {
                eml.deliver(m.clone())?;
                eml.written.last().map(|p| p.display().to_string())
            }
            None => None,
        };
        self.pending.push(Line {
            id: m.id.clone(),
            bytes: m.raw.len(),
            from: header(&m.raw, "From"),
            subject: header(&m.raw, "Subject"),
            kind,
            parse_error,
            file,
        });
        self.db.deliver(m)?;
        if self.progress {
            eprint!("\r\x1b[K{}: {} received, {:.1} MB", self.mailbox, self.pending.len() as u32 + self.db.stats.stored + self.db.stats.duplicates, self.db.stats.bytes as f64 / 1e6);
        }
        Ok(())
    }
    fn skipped(&mut self, n: SkippedMessage) -> Result<(), HostError> {
        if self.progress {
            eprint!("\r\x1b[K");
        }
        eprintln!("mailplug: {}: skipped {} ({} bytes): {}", self.mailbox, n.id, n.size, n.reason);
        self.db.skipped(n)
    }
    fn commit(&mut self) -> Result<(), HostError> {
        if let Some(eml) = &mut self.eml {
            eml.commit()?;
        }
        self.db.commit()?;
        if self.progress {
            eprint!("\r\x1b[K");
        }
        let new: std::collections::HashMap<&str, bool> = self.db.results.iter().map(|(id, n)| (id.as_str(), *n)).collect();
        for l in self.pending.drain(..) {
            let duplicate = !new.get(l.id.as_str()).copied().unwrap_or(false);
            if self.json {
                let v = serde_json::json!({
                    "mailbox": self.mailbox, "id": l.id, "bytes": l.bytes, "from": l.from, "subject": l.subject,
                    "classification": l.kind, "parse_error": l.parse_error, "duplicate": duplicate, "file": l.file,
                });
                println!("{v}");
            } else {
                let dup = if duplicate { "\t(already stored)" } else { "" };
                println!("{}\t{}\t{} bytes\t{}\tFrom: {}\tSubject: {}{dup}", self.mailbox, l.id, l.bytes, l.kind, l.from, l.subject);
            }
        }
        Ok(())
    }
}
