//! `mailplug fetch`: stores each new message and prints a line (or JSON object) per message.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use mailplug_host::db::Delivered;
use mailplug_host::store::{Store, StoreSink};
use mailplug_host::driver::MessageSink;
use mailplug_host::engine::{FetchedMessage, SkippedMessage, Stage};
use mailplug_host::ops;
use mailplug_host::store::EmlDir;
use mailplug_host::{HostError, Plugin, TenantConfig};

use super::output::{explain_error, fail, print_detail, print_explanation};

/// `mailplug fetch`: every selected mailbox in turn; exit 1 when one failed.
///
/// Every stored message is reported as new once: messages an earlier run stored but did not
/// report (it failed or was killed) are reported first, then this run's, and a delivery of a
/// message already stored is reported as a duplicate only when that message was reported.
pub async fn run_fetch(plugin: &Plugin, cfg: &TenantConfig, mailbox: Option<String>, out: Option<PathBuf>, json: bool) -> ExitCode {
    let names: Vec<String> = match mailbox {
        Some(n) => vec![n],
        None => cfg.mailboxes.iter().map(|m| m.name.clone()).collect(),
    };
    if names.is_empty() {
        return fail("the configuration has no [[mailbox]] entries", 2);
    }
    let db = match super::store::open(cfg) {
        Ok(db) => db,
        Err(e) => return fail(e, 1),
    };
    let progress = std::io::stderr().is_terminal();
    let mut failed = None;
    for name in names {
        let mut eml = match &out {
            Some(dir) => match EmlDir::new(dir.join(mailplug_host::store::safe_name(&name))) {
                Ok(e) => Some(e),
                Err(e) => return fail(e, 1),
            },
            None => None,
        };
        let earlier = match report_unreported(&db, &cfg.tenant, &name, eml.as_mut(), json) {
            Ok(n) => n,
            Err(e) => return fail(e, 1),
        };
        let mut sink =
            CliSink { mailbox: name.clone(), database: &db, db: db.sink(&cfg.tenant, &name), eml, json, progress, pending: Vec::new() };
        let result = ops::fetch(plugin, cfg, &name, &mut sink, &db).await;
        if progress {
            eprint!("\r\x1b[K");
        }
        let st = sink.db.stats();
        let mut eml = sink.eml.take();
        // Commits what was delivered after the last commit (complete messages only).
        drop(sink);
        // Stored by this run but not printed: it failed before its next commit.
        let late = match report_unreported(&db, &cfg.tenant, &name, eml.as_mut(), json) {
            Ok(n) => n,
            Err(e) => return fail(e, 1),
        };
        let stored = st.stored as usize + late;
        match result {
            Ok(s) => eprintln!(
                "mailplug: {name}: {stored} new message(s) stored{}{}{}{}",
                if earlier > 0 { format!(", {earlier} stored by an earlier run reported now") } else { String::new() },
                if st.duplicates > 0 { format!(", {} already stored", st.duplicates) } else { String::new() },
                if s.skipped > 0 { format!(", {} skipped (over a limit)", s.skipped) } else { String::new() },
                if s.remaining > 0 { format!(", {} more waiting (batch limit): run again", s.remaining) } else { String::new() }
            ),
            Err(e) => {
                eprintln!("mailplug: mailbox \"{name}\": {}", e.to_string().replace('\n', " "));
                if lost_during_fetch(&e) {
                    explain_lost_connection(plugin, cfg, &e, stored).await;
                } else {
                    explain_error(plugin, cfg, &e).await;
                }
                failed = Some(1);
            }
        }
    }
    failed.map(ExitCode::from).unwrap_or(ExitCode::SUCCESS)
}

/// A network error or timeout after the connection had worked: reading or writing failed, or
/// the component lost the server past the greeting.
fn lost_during_fetch(e: &HostError) -> bool {
    use mailplug_host::error::Kind;
    match e {
        HostError::Network { message, .. } | HostError::Timeout { message, .. } => {
            message.starts_with("read failed") || message.starts_with("write failed") || message.starts_with("nothing happened")
        }
        HostError::Guest(g) => {
            matches!(g.kind, Kind::Network | Kind::Timeout) && !matches!(g.stage_id, Stage::Connect | Stage::Greeting | Stage::Starttls)
        }
        _ => false,
    }
}

/// A connection lost during a fetch, explained in the words every command uses for a broken
/// connection (the component's explanation of a network error or timeout while fetching, not
/// of one while connecting), then what it means for this fetch: the stored messages are safe.
async fn explain_lost_connection(plugin: &Plugin, cfg: &TenantConfig, e: &HostError, stored: usize) {
    print_detail(e);
    let diagnosis = match e.to_guest_error(Stage::FetchMessage) {
        Some(guest) => match ops::instance_for(plugin, cfg).await {
            Ok(mut instance) => instance.explain(&guest).await.ok(),
            Err(_) => None,
        },
        None => None,
    };
    print_explanation(diagnosis.as_ref());
    eprintln!("mailplug:   stored:   {stored} message(s) were stored before that and are safe; the next run continues where this one stopped");
    eprintln!("mailplug:   gespeichert: {stored} Nachricht(en) wurden vorher gespeichert und sind sicher; der nächste Lauf setzt dort fort, wo dieser aufgehört hat");
}

/// Reports the mailbox's stored messages not yet reported as new, then marks them reported.
fn report_unreported(db: &Store, tenant: &str, mailbox: &str, mut eml: Option<&mut EmlDir>, json: bool) -> Result<usize, HostError> {
    let rows = db.unreported(tenant, mailbox, eml.is_some())?;
    let mut marked = Vec::with_capacity(rows.len());
    for r in &rows {
        let file = match eml.as_deref_mut() {
            Some(dir) => Some(dir.write(&r.server_id, &r.raw)?.display().to_string()),
            None => None,
        };
        let line = Line {
            id: r.server_id.clone(),
            bytes: r.size as usize,
            from: r.from.clone().unwrap_or_default(),
            // The store keeps only From and Subject (decoded when the message was parsed).
            to: None,
            subject: r.subject.clone().unwrap_or_default(),
            kind: if r.parse_error.is_some() { "unparsed".into() } else { r.classification.clone() },
            parse_error: r.parse_error.clone(),
            file,
        };
        print_line(mailbox, &line, false, r.collision, json);
        marked.push(r.row);
    }
    finish_reports(db, &marked)?;
    Ok(rows.len())
}

/// Makes the printed lines visible, then records them as reported: a crash in between reports
/// them again rather than never.
fn finish_reports(db: &Store, rows: &[i64]) -> Result<(), HostError> {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    db.mark_reported(rows)
}

/// One message's line (text) or object (`--json`).
fn print_line(mailbox: &str, l: &Line, duplicate: bool, collision: bool, json: bool) {
    if json {
        let v = serde_json::json!({
            "mailbox": mailbox, "id": l.id, "bytes": l.bytes, "from": l.from, "to": l.to, "subject": l.subject,
            "classification": l.kind, "parse_error": l.parse_error, "duplicate": duplicate,
            "message_id_collision": collision, "file": l.file,
        });
        println!("{v}");
    } else {
        let dup = if duplicate { "\t(already stored)" } else { "" };
        let col = if collision { "\t(its Message-ID is also used by another stored message)" } else { "" };
        println!(
            "{mailbox}\t{}\t{} bytes\t{}\tFrom: {}\tSubject: {}{dup}{col}",
            l.id,
            l.bytes,
            l.kind,
            one_line(&l.from),
            one_line(&l.subject)
        );
    }
}

/// Stores each delivered message in the database (and as .eml with --out), prints a line per
/// message, and shows progress on a terminal.
struct CliSink<'a> {
    mailbox: String,
    database: &'a Store,
    db: StoreSink<'a>,
    eml: Option<EmlDir>,
    json: bool,
    progress: bool,
    /// What to print for each delivery, once its commit says whether it was new.
    pending: Vec<Line>,
}

/// A decoded header value on one line of text output: a decoded subject or name may hold line
/// breaks, tabs or terminal escapes (RFC 2047 can encode any byte), which would forge lines.
fn one_line(value: &str) -> std::borrow::Cow<'_, str> {
    if value.chars().any(char::is_control) {
        value.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>().into()
    } else {
        value.into()
    }
}

/// An address as the store keeps it: "Name <address>" with the display name decoded, or the
/// bare address.
fn display(a: &mailplug_host::engine::Address) -> String {
    match &a.name {
        Some(n) => format!("{n} <{}>", a.address),
        None => a.address.clone(),
    }
}

/// The summary of one delivered message. From, To and Subject are decoded (RFC 2047) as the
/// component parsed them; a message that could not be parsed shows its raw header values.
struct Line {
    id: String,
    bytes: usize,
    from: String,
    /// None when not known (messages reported late: the store keeps no To).
    to: Option<Vec<String>>,
    subject: String,
    kind: String,
    parse_error: Option<String>,
    file: Option<String>,
}

/// The value of a header in the raw message, unfolded, for the summary line of a message that
/// could not be parsed.
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
        let (from, to, subject) = match &m.parsed {
            Ok(p) => (
                p.from.first().map(display).unwrap_or_default(),
                Some(p.to.iter().map(display).collect()),
                p.subject.clone().unwrap_or_default(),
            ),
            Err(_) => (header(&m.raw, "From"), None, header(&m.raw, "Subject")),
        };
        self.pending.push(Line {
            id: m.id.clone(),
            bytes: m.raw.len(),
            from,
            to,
            subject,
            kind,
            parse_error,
            file,
        });
        self.db.deliver(m)?;
        if self.progress {
            eprint!("\r\x1b[K{}: {} received, {:.1} MB", self.mailbox, self.pending.len() as u32 + self.db.stats().stored + self.db.stats().duplicates, self.db.stats().bytes as f64 / 1e6);
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
        let results: std::collections::HashMap<&str, &Delivered> = self.db.results().iter().map(|d| (d.id.as_str(), d)).collect();
        let mut marked: Vec<i64> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for l in self.pending.drain(..) {
            let Some(d) = results.get(l.id.as_str()) else { continue };
            // New to whoever reads the output unless that message was reported already.
            let duplicate = d.reported || !seen.insert(d.row);
            if !duplicate {
                marked.push(d.row);
            }
            print_line(&self.mailbox, &l, duplicate, d.collision, self.json);
        }
        finish_reports(self.database, &marked)
    }
    fn source(&mut self, server: &str) {
        self.db.source(server);
    }
    fn warning(&mut self, en: &str, de: &str) {
        if self.progress {
            eprint!("\r\x1b[K");
        }
        eprintln!("mailplug: {}: warning: {en}", self.mailbox);
        eprintln!("mailplug: {}: Warnung: {de}", self.mailbox);
        if self.json {
            println!("{}", serde_json::json!({"mailbox": self.mailbox, "warning": {"en": en, "de": de}}));
        }
    }
}
