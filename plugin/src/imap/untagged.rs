//! Caps on what one command may bring untagged: a server that keeps talking without ever
//! finishing the command (a drip of `* OK x`, endless FETCH lines) ends the session with a
//! `limit` error naming the cap, however short each line is.

use super::response::Frame;
use crate::error::{Error, Result, Stage};

/// Untagged responses this client has no use for (untagged OK/NO/BAD without a response code
/// it acts on, EXPUNGE, RECENT, unknown kinds) that one command may bring. A real server sends
/// a handful; a server that keeps sending `* OK` never finishes the command.
pub(super) const MAX_IGNORED_UNTAGGED: u32 = 10_000;

/// Untagged responses of any kind one command may bring: more than the messages of any real
/// folder (one FETCH line each in a listing).
pub(super) const MAX_UNTAGGED: u32 = 4_000_000;

/// Bytes of untagged responses (text and literals) one command may bring beyond the batch's
/// message bytes (`max_batch_bytes`).
pub(super) const MAX_UNTAGGED_EXTRA_BYTES: u64 = 256 << 20;

/// What the command in progress has received so far, untagged.
#[derive(Debug, Default)]
pub(super) struct UntaggedBudget {
    count: u32,
    ignored: u32,
    bytes: u64,
    max_bytes: u64,
}

impl UntaggedBudget {
    pub(super) fn with_max_bytes(max_bytes: u64) -> Self {
        UntaggedBudget { max_bytes, ..UntaggedBudget::default() }
    }

    /// Counts one complete response; a tagged one ends the command and starts afresh.
    pub(super) fn count(&mut self, frame: &Frame, stage: Stage) -> Result<()> {
        match frame.text.first() {
            Some(b'*') => {}
            Some(b'+') => return Ok(()),
            _ => {
                let max_bytes = self.max_bytes;
                *self = UntaggedBudget { max_bytes, ..UntaggedBudget::default() };
                return Ok(());
            }
        }
        self.count += 1;
        let literals: u64 = frame.literals.iter().map(|(_, l)| l.len() as u64).sum();
        self.bytes = self.bytes.saturating_add(frame.text.len() as u64 + literals);
        if self.count > MAX_UNTAGGED {
            return Err(too_many_untagged(stage, format!("more than {MAX_UNTAGGED} untagged responses")));
        }
        if self.bytes > self.max_bytes {
            return Err(too_many_untagged(stage, format!("more than {} bytes of untagged responses", self.max_bytes)));
        }
        Ok(())
    }

    /// Counts a response the client ignores.
    pub(super) fn ignored(&mut self, stage: Stage) -> Result<()> {
        self.ignored += 1;
        if self.ignored > MAX_IGNORED_UNTAGGED {
            return Err(too_many_untagged(
                stage,
                format!("more than {MAX_IGNORED_UNTAGGED} untagged responses that carry nothing this client uses (such as \"* OK\")"),
            ));
        }
        Ok(())
    }
}

fn too_many_untagged(stage: Stage, what: String) -> Error {
    Error::limit(
        stage,
        format!(
            "the server sent {what} in answer to one command during {} without finishing it; the session was stopped. The server may be faulty or hostile: check it with its administrator",
            stage.as_str()
        ),
    )
}
