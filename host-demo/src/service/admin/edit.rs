//! Changes of a tenant's file from the mail-server form: the server's keys set with toml_edit,
//! so comments, order and every other key survive; a new password written to its own secret
//! file (mode 0600, in `<file stem>.secrets/` beside the tenant file, folder mode 0700) and
//! referenced with `password_file`; the file replaced atomically (written beside, synced,
//! renamed), so the service's rescan never reads half a file.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use toml_edit::{value, Array, ArrayOfTables, DocumentMut, Item, Table, TableLike, Value};

/// Which entry of the file the form edits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A `[[mailbox]]` (POP3 or IMAP) by name.
    Mailbox(String),
    /// The `[queue.smtp]` of a `[[queue]]` by name.
    Queue(String),
}

impl Target {
    pub fn name(&self) -> &str {
        match self {
            Target::Mailbox(n) | Target::Queue(n) => n,
        }
    }
}

/// The server settings the form gives.
#[derive(Debug, Clone, Default)]
pub struct ServerEdit {
    /// "pop3" or "imap" (mailboxes only).
    pub protocol: Option<String>,
    /// Mailboxes only.
    pub address: Option<String>,
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub oauth2: bool,
    /// The `[oauth.NAME]` client, with OAuth2.
    pub oauth: Option<String>,
    pub username: String,
    /// A new password's file, relative to the tenant file's folder (None: keep the stored one).
    pub password_file: Option<String>,
}

fn tables<'a>(doc: &'a mut DocumentMut, key: &str) -> Result<&'a mut ArrayOfTables, String> {
    if !doc.contains_key(key) {
        doc.insert(key, Item::ArrayOfTables(ArrayOfTables::new()));
    }
    doc[key]
        .as_array_of_tables_mut()
        .ok_or_else(|| format!("`{key}` in the file is not written as [[{key}]] tables; edit this entry by hand"))
}

fn find<'a>(list: &'a mut ArrayOfTables, name: &str) -> Option<&'a mut Table> {
    list.iter_mut().find(|t| t.get("name").and_then(|v| v.as_str()) == Some(name))
}

/// The secret keys a server may have.
const SECRET_KEYS: [&str; 3] = ["password", "password_env", "password_file"];

/// Sets a key, keeping the comment and spacing around a value it replaces.
fn set(t: &mut dyn TableLike, key: &str, v: impl Into<Value>) {
    let mut v: Value = v.into();
    if let Some(old) = t.get(key).and_then(|i| i.as_value()) {
        *v.decor_mut() = old.decor().clone();
    }
    t.insert(key, Item::Value(v));
}

fn set_server(t: &mut dyn TableLike, e: &ServerEdit) {
    set(t, "host", e.host.as_str());
    set(t, "port", i64::from(e.port));
    set(t, "tls", e.tls);
    if e.tls {
        // TLS from the first byte and plain text contradict each other.
        t.remove("insecure_plaintext");
    }
    set(t, "auth", if e.oauth2 { "oauth2" } else { "basic" });
    set(t, "username", e.username.as_str());
    if e.oauth2 {
        for k in SECRET_KEYS {
            t.remove(k);
        }
        if let Some(c) = &e.oauth {
            set(t, "oauth", c.as_str());
        }
    } else {
        t.remove("oauth");
        t.remove("sasl_mechanism");
        if let Some(f) = &e.password_file {
            for k in SECRET_KEYS {
                t.remove(k);
            }
            set(t, "password_file", f.as_str());
        }
    }
}

/// The file's text with the entry changed (or added, with `new`). Errors name what stops it.
pub fn apply(text: &str, target: &Target, new: bool, e: &ServerEdit) -> Result<String, String> {
    let mut doc: DocumentMut = text.parse().map_err(|err: toml_edit::TomlError| format!("the file is not valid TOML: {}", err.message()))?;
    match target {
        Target::Mailbox(name) => {
            let list = tables(&mut doc, "mailbox")?;
            if new {
                if find(list, name).is_some() {
                    return Err(format!("a mailbox named \"{name}\" exists already"));
                }
                let mut t = Table::new();
                t.insert("name", value(name.as_str()));
                list.push(t);
            }
            let t = find(list, name).ok_or_else(|| format!("the file has no mailbox named \"{name}\" (any more)"))?;
            if let Some(a) = &e.address {
                set(t, "address", a.as_str());
            }
            if let Some(p) = &e.protocol {
                set(t, "protocol", p.as_str());
            }
            set_server(t, e);
        }
        Target::Queue(name) => {
            let list = tables(&mut doc, "queue")?;
            if new {
                if find(list, name).is_some() {
                    return Err(format!("a queue named \"{name}\" exists already"));
                }
                let mut t = Table::new();
                t.insert("name", value(name.as_str()));
                t.insert("mailboxes", value(Array::new()));
                t.insert("smtp", Item::Table(Table::new()));
                list.push(t);
            }
            let t = find(list, name).ok_or_else(|| format!("the file has no queue named \"{name}\" (any more)"))?;
            let smtp = t
                .get_mut("smtp")
                .and_then(|i| i.as_table_like_mut())
                .ok_or_else(|| format!("queue \"{name}\" has no [queue.smtp] table; edit it by hand"))?;
            set_server(smtp, e);
        }
    }
    Ok(doc.to_string())
}

/// The `password_file` value of the entry, as written, if any.
pub fn password_file_of(text: &str, target: &Target) -> Option<String> {
    let doc: DocumentMut = text.parse().ok()?;
    let (key, name) = match target {
        Target::Mailbox(n) => ("mailbox", n),
        Target::Queue(n) => ("queue", n),
    };
    let t = doc.get(key)?.as_array_of_tables()?.iter().find(|t| t.get("name").and_then(|v| v.as_str()) == Some(name.as_str()))?;
    let t: &dyn TableLike = if key == "queue" { t.get("smtp")?.as_table_like()? } else { t };
    t.get("password_file")?.as_str().map(str::to_string)
}

/// The folder of the secrets the admin page writes for a tenant file, and its name relative
/// to the tenant file's folder.
pub fn secrets_dir(tenant_file: &Path) -> (PathBuf, String) {
    let stem = tenant_file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "tenant".into());
    let rel = format!("{stem}.secrets");
    (tenant_file.parent().unwrap_or(Path::new(".")).join(&rel), rel)
}

/// A file-name-safe form of an entry name.
fn safe(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).take(48).collect()
}

/// Writes a new password into a file of its own (mode 0600, a random part in its name so a
/// rejected change leaves the stored one alone); returns its absolute path and the value for
/// `password_file`.
pub fn write_secret(tenant_file: &Path, target: &Target, password: &str) -> std::io::Result<(PathBuf, String)> {
    let (dir, rel) = secrets_dir(tenant_file);
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let kind = if matches!(target, Target::Queue(_)) { "smtp" } else { "mailbox" };
    let file = format!("{kind}-{}-{}.password", safe(target.name()), super::session::random_hex(4));
    let path = dir.join(&file);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
    f.write_all(password.as_bytes())?;
    f.sync_all()?;
    Ok((path, format!("{rel}/{file}")))
}

/// Removes a secret file the admin page wrote before (only inside its secrets folder).
pub fn remove_old_secret(tenant_file: &Path, written: &str) {
    let (dir, rel) = secrets_dir(tenant_file);
    if let Some(file) = written.strip_prefix(&format!("{rel}/")).filter(|f| !f.contains('/')) {
        let _ = std::fs::remove_file(dir.join(file));
    }
}

/// Replaces the file atomically: written beside under a name the scan skips, synced, renamed.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.admin-{}.tmp", super::session::random_hex(4)));
    let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0o600);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"# acme's mail
tenant = "acme"   # the id
licensed = true

[[mailbox]]
name = "support"
address = "support@example.com"
protocol = "imap"
host = "imap.example.com"  # keep me
port = 993
tls = true
username = "support@example.com"
password_env = "SUPPORT_PW"
poll_interval_secs = 30

[[queue]]
name = "support"
mailboxes = ["support"]
[queue.smtp]
host = "smtp.example.com"
port = 465
tls = true
username = "support@example.com"
password_file = "acme.secrets/smtp-support-0011.password"
provider = "generic"
"#;

    fn edit() -> ServerEdit {
        ServerEdit {
            protocol: Some("imap".into()),
            address: None,
            host: "imap.gmail.com".into(),
            port: 993,
            tls: true,
            oauth2: false,
            oauth: None,
            username: "support@example.com".into(),
            password_file: None,
        }
    }

    #[test]
    fn an_edit_keeps_comments_and_other_keys() {
        let out = apply(FILE, &Target::Mailbox("support".into()), false, &edit()).unwrap();
        assert!(out.contains("# acme's mail") && out.contains("# the id") && out.contains("# keep me"), "{out}");
        assert!(out.contains("host = \"imap.gmail.com\""), "{out}");
        assert!(out.contains("poll_interval_secs = 30") && out.contains("password_env = \"SUPPORT_PW\""), "kept: {out}");
        assert!(out.contains("host = \"smtp.example.com\""), "the queue is untouched: {out}");
    }

    #[test]
    fn a_new_password_replaces_the_old_source_and_oauth2_removes_it() {
        let e = ServerEdit { password_file: Some("acme.secrets/x.password".into()), ..edit() };
        let out = apply(FILE, &Target::Mailbox("support".into()), false, &e).unwrap();
        assert!(out.contains("password_file = \"acme.secrets/x.password\"") && !out.contains("SUPPORT_PW"), "{out}");
        let e = ServerEdit { oauth2: true, oauth: Some("google".into()), ..edit() };
        let out = apply(FILE, &Target::Queue("support".into()), false, &e).unwrap();
        let smtp = &out[out.find("[queue.smtp]").unwrap()..];
        assert!(smtp.contains("auth = \"oauth2\"") && smtp.contains("oauth = \"google\"") && !smtp.contains("password_file"), "{out}");
        assert!(smtp.contains("provider = \"generic\""));
        assert_eq!(password_file_of(FILE, &Target::Queue("support".into())).as_deref(), Some("acme.secrets/smtp-support-0011.password"));
        assert_eq!(password_file_of(FILE, &Target::Mailbox("support".into())), None);
    }

    #[test]
    fn new_entries_are_added_and_duplicates_refused() {
        let e = ServerEdit { address: Some("sales@example.com".into()), ..edit() };
        let out = apply(FILE, &Target::Mailbox("sales".into()), true, &e).unwrap();
        assert_eq!(out.matches("[[mailbox]]").count(), 2);
        assert!(out.contains("name = \"sales\"") && out.contains("address = \"sales@example.com\""), "{out}");
        assert!(apply(FILE, &Target::Mailbox("support".into()), true, &e).unwrap_err().contains("exists already"));
        let out = apply(FILE, &Target::Queue("out".into()), true, &ServerEdit { protocol: None, port: 587, tls: false, ..edit() }).unwrap();
        assert_eq!(out.matches("[[queue]]").count(), 2, "{out}");
        let parsed: toml::Value = toml::from_str(&out).unwrap();
        assert_eq!(parsed["queue"][1]["smtp"]["port"].as_integer(), Some(587));
        assert!(apply(FILE, &Target::Mailbox("nobody".into()), false, &edit()).unwrap_err().contains("no mailbox"));
        assert!(apply("tenant = ", &Target::Mailbox("x".into()), true, &edit()).unwrap_err().contains("not valid TOML"));
    }

    #[test]
    fn secrets_are_private_and_the_write_is_atomic() {
        let dir = std::env::temp_dir().join(format!("mailplug-admin-edit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("acme.toml");
        std::fs::write(&file, FILE).unwrap();
        let (path, rel) = write_secret(&file, &Target::Mailbox("sup port/..".into()), "s3cret-pw").unwrap();
        assert!(rel.starts_with("acme.secrets/mailbox-sup_port___-"), "{rel}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "s3cret-pw");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(dir.join("acme.secrets")).unwrap().permissions().mode() & 0o777, 0o700);
        write_atomic(&file, "tenant = \"acme\"\n").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "tenant = \"acme\"\n");
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".tmp")).collect();
        assert!(leftovers.is_empty());
        remove_old_secret(&file, &rel);
        assert!(!path.exists());
        remove_old_secret(&file, "../acme.toml");
        assert!(file.exists(), "only files inside the secrets folder are removed");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
