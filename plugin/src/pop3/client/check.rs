//! The connection check: its step reports, bounded and cleaned server text, and its end.

use super::*;

impl Pop3Session {
    /// Check mode: STAT gives the folder report, then QUIT.
    pub(super) fn on_check_stat(&mut self, line: &[u8]) -> Result<()> {
        let stage = Stage::ListMessages;
        match response::status(line, stage)? {
            Status::Ok(text) => {
                let mut words = text.split(|&b| b == b' ');
                let count = words.next().and_then(response::parse_u64).and_then(|c| u32::try_from(c).ok());
                let Some(count) = count else {
                    return Err(Error::protocol_quoting(stage, text, |t| {
                        format!("the server's STAT reply {t} has no message count")
                    }));
                };
                // Fetching only needs the count, so a missing size is not an error here either.
                let size = words.next().and_then(response::parse_u64);
                self.listing.count = count;
                let messages = if count == 1 { "1 message".to_string() } else { format!("{count} messages") };
                let detail = match size {
                    Some(bytes) => format!("{INBOX}: {messages}, {bytes} bytes"),
                    None => format!("{INBOX}: {messages}"),
                };
                self.report(Step::Folder, |_| detail);
                self.send_quit();
                Ok(())
            }
            Status::Err(text) => Err(Error::protocol(stage, "the server refused to report the mailbox size (STAT)")
                .with_reply(response::reply("-ERR", text))),
            Status::Continue(_) => Err(unexpected(line, stage)),
        }
    }

    /// Check mode: nothing was changed, so any answer to QUIT ends the check well.
    pub(super) fn on_check_quit_reply(&mut self, line: &[u8]) -> Result<()> {
        let detail = match response::status(line, Stage::Logout) {
            Ok(Status::Ok(_)) => "logged out",
            Ok(Status::Err(_)) => "logged out (the server answered QUIT with an error, which is harmless: nothing was changed)",
            _ => "logged out (the server's answer to QUIT was not understood, which is harmless: nothing was changed)",
        };
        self.finish_check(detail)
    }

    pub(super) fn finish_check(&mut self, logout: &str) -> Result<()> {
        self.report(Step::Logout, |_| logout.to_string());
        self.emit(Action::Close);
        self.emit(Action::Finished(Outcome::Checked(CheckSummary {
            folders: vec![FolderCount { folder: INBOX.into(), messages: self.listing.count }],
        })));
        self.phase = Phase::Done;
        self.link.clear_deadline();
        Ok(())
    }

    /// Check mode only: reports a completed step; `detail` is only built for a check.
    pub(super) fn report(&mut self, step: Step, detail: impl FnOnce(&Self) -> String) {
        if self.check.is_some() {
            let detail = detail(self);
            self.emit(Action::Progress(StepReport::new(step, detail)));
        }
    }

    /// What the CAPA reply told us. Before TLS on a STARTTLS connection only what we derived
    /// from it: the text itself could have been forged.
    pub(super) fn capabilities_detail(&self) -> String {
        let Some(caps) = self.caps.as_ref() else {
            return "the server does not support CAPA; USER/PASS login is assumed".into();
        };
        if self.link.unverified() {
            let stls = if caps.stls { "STLS offered" } else { "STLS not offered" };
            return format!("{stls} (the full list arrived before encryption and is not shown)");
        }
        match self.check.as_ref().map(|c| c.capabilities.as_str()) {
            Some(list) if !list.is_empty() => format!("offered: {}", shown(list.as_bytes())),
            _ => "the server lists no capabilities".into(),
        }
    }

    /// The mechanisms offered and the one we use (`None`: USER/PASS).
    pub(super) fn mechanisms_detail(&self, chosen: Option<Mechanism>) -> String {
        let mut offered: Vec<&str> = Vec::new();
        if let Some(check) = self.check.as_ref() {
            offered.extend(check.mechanisms.iter().map(String::as_str));
            if check.user || self.caps.is_none() {
                offered.push("USER/PASS");
            }
        }
        let offered = if offered.is_empty() {
            "none advertised".to_string()
        } else {
            shown(offered.join(" ").as_bytes())
        };
        let using = match chosen {
            Some(mechanism) => format!("AUTH {}", mechanism.name()),
            None => "USER/PASS".into(),
        };
        format!("offered: {offered}; using {using}")
    }
}

impl Check {
    /// Remembers one capability line for the report, bounded whatever the server sends.
    pub(super) fn note(&mut self, line: &[u8]) {
        let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
        let Some(name) = words.next() else { return };
        if name.eq_ignore_ascii_case(b"USER") {
            self.user = true;
        } else if name.eq_ignore_ascii_case(b"SASL") {
            for word in words {
                let word = shown(word);
                let room = self.mechanisms.len() < MAX_SHOWN_MECHANISMS;
                if room && !word.is_empty() && !self.mechanisms.contains(&word) {
                    self.mechanisms.push(word);
                }
            }
        }
        // A little more than is shown, so the report can tell it was cut.
        if self.capabilities.len() <= MAX_SHOWN_CHARS * 4 {
            let cleaned = shown(line);
            if !cleaned.is_empty() {
                if !self.capabilities.is_empty() {
                    self.capabilities.push_str(", ");
                }
                self.capabilities.push_str(&cleaned);
            }
        }
    }
}

/// Server text for a check report: control characters removed, at most `MAX_SHOWN_CHARS`.
pub(super) fn shown(text: &[u8]) -> String {
    let cleaned: String = String::from_utf8_lossy(text).chars().filter(|c| !c.is_control()).collect();
    let cleaned = cleaned.trim();
    if cleaned.chars().count() <= MAX_SHOWN_CHARS {
        return cleaned.to_string();
    }
    let mut cut: String = cleaned.chars().take(MAX_SHOWN_CHARS - 3).collect();
    cut.push_str("...");
    cut
}
