//! Which folder is opened next and how: the configured names (INBOX when none), their names
//! on the server (`Connection::wire_name`: delimiter, namespace, modified UTF-7), SELECT or
//! EXAMINE, and a check's count of each folder.

use super::*;

impl ImapSession {
    /// A configured name ("/" separates levels) as the server spells it, modified UTF-7.
    pub(super) fn wire_name(&self, name: &str) -> String {
        self.conn.wire_name(name)
    }

    pub(super) fn start_folder(&mut self, index: usize, out: &mut Vec<Action>) -> Result<()> {
        self.run = FolderRun { index, ..FolderRun::default() };
        // A run started by IDLE fetches only the watched (first) folder.
        let Some(name) = self.folders.get(index).filter(|_| !(self.idle.watch_only && index > 0)) else {
            if self.check {
                self.logout(out);
                return Ok(());
            }
            return self.done_fetching(out);
        };
        let wire = self.wire_name(name);
        // A check only counts, and `keep` only reads: EXAMINE opens read-only, so not even
        // \Recent changes and other clients still see new mail as recent. Marking seen,
        // deleting and moving need SELECT's write access.
        let verb = if self.check || !self.acts() { "EXAMINE" } else { "SELECT" };
        let tag = self.conn.send_with_folder(out, verb, &wire);
        self.state = State::Select { tag };
        Ok(())
    }

    pub(super) fn uidvalidity(&self) -> Result<u32> {
        self.run.uidvalidity.ok_or_else(|| {
            Error::protocol(
                Stage::SelectMailbox,
                format!(
                    "the server did not report UIDVALIDITY for the folder {:?}, so messages cannot be tracked",
                    self.folder()
                ),
            )
        })
    }

    /// Check only: the folder opened; count it and go on with the next one.
    pub(super) fn folder_checked(&mut self, out: &mut Vec<Action>) -> Result<()> {
        // A fetch would fail without it, so the check does too.
        self.uidvalidity()?;
        let folder = self.folder().to_string();
        let messages = self.run.exists.unwrap_or(0);
        self.conn.progress(out, Step::Folder, || match self.run.exists {
            Some(1) => format!("{folder}: 1 message"),
            Some(n) => format!("{folder}: {n} messages"),
            None => format!("{folder}: opened (the server did not report how many messages it holds)"),
        });
        self.checked.push(FolderCount { folder, messages });
        self.start_folder(self.run.index + 1, out)
    }
}

/// The configured folder names without duplicates (INBOX when none); an empty name is invalid.
pub(super) fn configured_folders(mailbox: &Mailbox) -> Result<Vec<String>> {
    if mailbox.protocol != InboundProtocol::Imap {
        return Err(Error::invalid(Stage::Connect, "an IMAP session was requested for a mailbox configured as POP3"));
    }
    let mut folders: Vec<String> = Vec::new();
    for f in &mailbox.folders {
        if f.is_empty() {
            return Err(Error::invalid(
                Stage::Connect,
                "a folder name is empty; remove it or name the folder (INBOX for the inbox)",
            ));
        }
        if !folders.contains(f) {
            folders.push(f.clone());
        }
    }
    if folders.is_empty() {
        folders.push("INBOX".to_string());
    }
    Ok(folders)
}
