//! Saving the queue page into the tenant's file: the queue's `mailboxes`, `send_permission`
//! and `gmail_aliases` set with toml_edit (comments, order and every other key survive), its
//! `[queue.smtp]` table copied from the queue chosen in select#smtp-server (when another one),
//! the result parsed as the service will before the file is replaced atomically with the
//! mail-server form's writer (`edit::write_atomic`), one change at a time (`Admin::write_lock`).

use std::path::{Path, PathBuf};

use toml_edit::{value, Array, DocumentMut, Item, Table};

use super::{Admin, Ctx};
use crate::config::TenantConfig;

/// The queue's settings from `cfg` (the form applied, `queue::apply`) written into the file's
/// text; `chosen` is the queue whose `[queue.smtp]` table the queue takes.
pub fn edit_text(text: &str, id: &str, cfg: &TenantConfig, chosen: &str) -> Result<String, String> {
    let q = cfg.queue(id).ok_or_else(|| format!("no queue named \"{id}\""))?;
    let mut doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| format!("the file is not valid TOML: {}", e.message()))?;
    let list = doc
        .get_mut("queue")
        .and_then(Item::as_array_of_tables_mut)
        .ok_or_else(|| "the file's queues are not written as [[queue]] tables; edit them by hand".to_string())?;
    let named = |t: &Table, n: &str| t.get("name").and_then(|v| v.as_str()) == Some(n);
    let smtp: Option<Item> = if chosen != id {
        let from = list.iter().find(|t| named(t, chosen)).ok_or_else(|| format!("the file has no queue named \"{chosen}\" (any more)"))?;
        Some(from.get("smtp").cloned().ok_or_else(|| format!("queue \"{chosen}\" has no [queue.smtp] table"))?)
    } else {
        None
    };
    let t = list.iter_mut().find(|t| named(t, id)).ok_or_else(|| format!("the file has no queue named \"{id}\" (any more)"))?;
    let mut mailboxes = Array::new();
    for m in &q.mailboxes {
        mailboxes.push(m.as_str());
    }
    t.insert("mailboxes", value(mailboxes));
    let permission = super::queue::permission_name(q.send_permission);
    if permission == "none" && !t.contains_key("send_permission") {
        // The default: the file stays as it was written.
    } else {
        t.insert("send_permission", value(permission));
    }
    if q.gmail_aliases.is_empty() {
        t.remove("gmail_aliases");
    } else {
        let mut aliases = Array::new();
        for a in &q.gmail_aliases {
            aliases.push(a.as_str());
        }
        t.insert("gmail_aliases", value(aliases));
    }
    if let Some(mut s) = smtp {
        // Written where the queue's own [queue.smtp] table was (a table keeps its place in the
        // document: the copy would otherwise be written under the other queue).
        let at = t.get("smtp").and_then(Item::as_table).and_then(Table::position);
        if let Some(tab) = s.as_table_mut() {
            tab.set_implicit(false);
            tab.decor_mut().clear();
            if let Some(at) = at {
                tab.set_position(at);
            }
        }
        t.insert("smtp", s);
    }
    Ok(doc.to_string())
}

/// Saves queue `id` as `cfg` has it; the error is shown on the page as it is.
pub async fn save_queue(a: &Admin, ctx: &Ctx, id: &str, cfg: &TenantConfig, chosen: &str) -> Result<(), String> {
    let lang = ctx.lang;
    let file = PathBuf::from(&ctx.state.file);
    let _guard = a.write_lock.lock().await;
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{} {e}", lang.t("err.file")))?;
    let new_text = edit_text(&text, id, cfg, chosen).map_err(|m| format!("{} {m}", lang.t("err.file")))?;
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    TenantConfig::parse(&new_text, &ctx.state.file, &base, &|n| std::env::var(n).ok())
        .map_err(|e| format!("{} {}", lang.t("err.config"), e.message))?;
    super::edit::write_atomic(&file, &new_text).map_err(|e| format!("{} {e}", lang.t("err.file")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SendPermission;

    const FILE: &str = r#"tenant = "t"   # the id
licensed = true
database = "/nonexistent/x.sqlite3"

[[mailbox]]
name = "a"
address = "a@example.com"
protocol = "imap"
host = "imap.example.com"
port = 993
tls = true
username = "a@example.com"
password_env = "PW"

[[queue]]
name = "q1"  # the first
mailboxes = []
[queue.smtp]
host = "smtp.example.com"  # keep me
port = 465
tls = true
username = "a@example.com"
password_env = "PW"

[[queue]]
name = "q2"
mailboxes = []
[queue.smtp]
host = "smtp.office365.com"
port = 587
tls = false
provider = "microsoft"
username = "agent@example.com"
password_env = "PW"
"#;

    fn parse(text: &str) -> TenantConfig {
        TenantConfig::parse(text, "t.toml", Path::new("/tmp"), &|_| Some("pw".into())).expect("parses")
    }

    #[test]
    fn the_queue_is_written_and_the_rest_of_the_file_survives() {
        let mut cfg = parse(FILE);
        let q = cfg.queues.iter_mut().find(|q| q.name == "q1").unwrap();
        q.mailboxes = vec!["a".into()];
        q.send_permission = SendPermission::SendOnBehalf;
        q.gmail_aliases = vec!["a@example.com".into()];
        let out = edit_text(FILE, "q1", &cfg, "q1").expect("edits");
        assert!(out.contains("# the id") && out.contains("# the first") && out.contains("# keep me"), "{out}");
        let back = parse(&out);
        let q1 = back.queue("q1").unwrap();
        assert_eq!(q1.mailboxes, ["a"]);
        assert_eq!(q1.send_permission, SendPermission::SendOnBehalf);
        assert_eq!(q1.gmail_aliases, ["a@example.com"]);
        assert_eq!(q1.smtp.host, "smtp.example.com");
        assert_eq!(back.queue("q2").unwrap().mailboxes, Vec::<String>::new());
    }

    #[test]
    fn another_queues_smtp_server_is_copied() {
        let cfg = parse(FILE);
        let out = edit_text(FILE, "q1", &cfg, "q2").expect("edits");
        let back = parse(&out);
        assert_eq!(back.queue("q1").unwrap().smtp.host, "smtp.office365.com");
        assert_eq!(back.queue("q1").unwrap().smtp.port, 587);
        assert_eq!(back.queue("q1").unwrap().provider, crate::config::Provider::Microsoft);
        assert_eq!(back.queue("q2").unwrap().smtp.host, "smtp.office365.com");
        assert!(edit_text(FILE, "q1", &cfg, "nope").is_err());
        assert!(edit_text("not [ toml", "q1", &cfg, "q1").is_err());
    }
}
