//! What a connection check reports about the login phase: the greeting, the capabilities and
//! the mechanisms, with the server's own words only when they cannot have been forged (never
//! before TLS on a STARTTLS connection), cleaned of control characters and bounded.

use super::Connection;

impl Connection {
    /// `what` happened; the server's own words only when they cannot have been forged.
    pub(super) fn greeting_detail(&self, what: &str, text: &str) -> String {
        if self.link.unverified() {
            return format!("{what} (its text arrived before encryption and is not shown)");
        }
        match shown(without_code(text)) {
            t if t.is_empty() => what.to_string(),
            t => format!("{what}: {t}"),
        }
    }

    pub(super) fn capabilities_detail(&self) -> String {
        if self.link.unverified() {
            // Only what we concluded; the list itself could have been forged.
            let starttls = if self.has_cap("STARTTLS") { "STARTTLS offered" } else { "STARTTLS not offered" };
            return format!("{starttls} (the other capabilities arrived before encryption and are not shown)");
        }
        match shown(&self.caps().join(" ")) {
            c if c.is_empty() => "the server listed no capabilities".to_string(),
            c => format!("capabilities: {c}"),
        }
    }

    /// "offered: PLAIN XOAUTH2, LOGIN command; using AUTHENTICATE PLAIN".
    pub(super) fn mechanisms_detail(&self, offered: &[String], method: &str) -> String {
        let mut list = offered.join(" ");
        if !self.has_cap("LOGINDISABLED") {
            if !list.is_empty() {
                list.push_str(", ");
            }
            list.push_str("LOGIN command");
        }
        let list = shown(&list);
        let list = if list.is_empty() { "no login method" } else { list.as_str() };
        format!("offered: {list}; using {method}")
    }
}

/// Longest server text quoted in a check step, in characters.
const MAX_SHOWN_CHARS: usize = 200;

/// Server text fit for a check step: control characters (terminal escapes, line breaks)
/// removed, at most `MAX_SHOWN_CHARS` characters.
fn shown(text: &str) -> String {
    let mut clean = text.chars().filter(|c| !c.is_control());
    let mut out: String = clean.by_ref().take(MAX_SHOWN_CHARS).collect();
    if clean.next().is_some() {
        out.pop();
        out.push('…');
    }
    out.trim().to_string()
}

/// Status text without its leading response code ("[CAPABILITY ...] Dovecot ready." ->
/// "Dovecot ready.").
fn without_code(text: &str) -> &str {
    let t = text.trim_start();
    match t.strip_prefix('[').and_then(|rest| rest.split_once(']')) {
        Some((_, after)) => after.trim_start(),
        None => t,
    }
}
