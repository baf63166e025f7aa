//! After-fetch actions on stored messages: mark seen, delete (UID EXPUNGE with UIDPLUS), move or copy.
//! A move target the server does not have yet (`NO [TRYCREATE]`) is created and subscribed,
//! and the move tried once more.
//!
//! The UIDs are pending in the sync state from their delivery (committed with it at `stored`)
//! until the tagged OK of the action's last command; a run that ends before that (cut, killed,
//! refused) leaves them pending, and the next run applies the action to them right after
//! SELECT, before listing new mail, without fetching them again.

use super::*;

impl ImapSession {
    /// The server went away while the host was still storing: the after-fetch action cannot
    /// run, and nothing on the server was changed.
    pub(super) fn lost_before_after_fetch(&self) -> Error {
        Error::network(
            Stage::FetchMessage,
            format!(
                "the server closed the connection before the host had stored the messages from folder {:?}, so the after-fetch action was not applied and nothing on the server changed; they will be fetched again next run (the host skips duplicates). If this repeats, raise the server's idle timeout",
                self.folder()
            ),
        )
    }

    pub(super) fn has_uidplus(&self) -> bool {
        self.has_cap("UIDPLUS") || self.has_cap("IMAP4rev2")
    }

    /// Whether the configured after-fetch action changes anything on the server.
    pub(super) fn acts(&self) -> bool {
        self.mailbox.after_fetch != AfterFetch::Keep { mark_seen: false }
    }

    pub(super) fn target(&self) -> String {
        match &self.mailbox.after_fetch {
            AfterFetch::MoveTo(t) => self.wire_name(t),
            _ => String::new(),
        }
    }

    /// Queues one after-fetch command (several go out in one write: pipelined).
    pub(super) fn queue(&mut self, pending: &mut VecDeque<(String, Op)>, op: Op, out: &mut Vec<Action>) {
        let set = sequence_set(&self.run.action_uids);
        let tag = match op {
            Op::MarkSeen => self.conn.send_simple(out, &format!("UID STORE {set} +FLAGS.SILENT (\\Seen)")),
            Op::MarkDeleted => self.conn.send_simple(out, &format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)")),
            // Only our UIDs: a plain EXPUNGE would also remove other clients' \Deleted mail.
            Op::Expunge => self.conn.send_simple(out, &format!("UID EXPUNGE {set}")),
            Op::Move | Op::Copy | Op::Create | Op::Subscribe => {
                let verb = match op {
                    Op::Move => format!("UID MOVE {set}"),
                    Op::Copy => format!("UID COPY {set}"),
                    Op::Subscribe => "SUBSCRIBE".to_string(),
                    _ => "CREATE".to_string(),
                };
                let target = self.target();
                self.conn.send_with_folder(out, &verb, &target)
            }
        };
        pending.push_back((tag, op));
    }

    pub(super) fn queue_delete(&mut self, pending: &mut VecDeque<(String, Op)>, out: &mut Vec<Action>) {
        self.queue(pending, Op::MarkDeleted, out);
        // Without UIDPLUS the messages stay flagged \Deleted: a plain EXPUNGE could remove
        // other clients' mail, so the server's own expunge policy removes them.
        if self.has_uidplus() {
            self.queue(pending, Op::Expunge, out);
        }
    }

    pub(super) fn start_after_fetch(&mut self, out: &mut Vec<Action>) -> Result<()> {
        let uids = self.delivered_uids();
        self.start_action(uids, out)
    }

    /// Sends the configured action's commands for `uids` (ascending, not empty).
    pub(super) fn start_action(&mut self, uids: Vec<u32>, out: &mut Vec<Action>) -> Result<()> {
        self.run.action_uids = uids;
        let mut pending = VecDeque::new();
        match &self.mailbox.after_fetch {
            AfterFetch::Keep { mark_seen: false } => {}
            AfterFetch::Keep { mark_seen: true } => self.queue(&mut pending, Op::MarkSeen, out),
            AfterFetch::Delete => self.queue_delete(&mut pending, out),
            AfterFetch::MoveTo(_) => {
                let op = if self.has_cap("MOVE") || self.has_cap("IMAP4rev2") { Op::Move } else { Op::Copy };
                self.queue(&mut pending, op, out);
            }
        }
        self.after_fetch_next(pending, out)
    }

    pub(super) fn after_fetch_next(&mut self, pending: VecDeque<(String, Op)>, out: &mut Vec<Action>) -> Result<()> {
        if !pending.is_empty() {
            self.state = State::AfterFetch { pending };
            return Ok(());
        }
        // Every command of the action answered.
        let uids = std::mem::take(&mut self.run.action_uids);
        if !self.run.retry_refused {
            if let Some(e) = self.entry() {
                e.clear_pending(&uids);
            }
            self.commit_baseline();
        }
        if std::mem::take(&mut self.run.retrying) {
            return self.list_new(None, out);
        }
        self.start_folder(self.run.index + 1, out)
    }
    pub(super) fn on_after_fetch_reply(
        &mut self,
        op: Op,
        mut pending: VecDeque<(String, Op)>,
        status: Status,
        code: Option<Code>,
        text: String,
        out: &mut Vec<Action>,
    ) -> Result<()> {
        if op == Op::Subscribe {
            // A folder not subscribed still holds the mail; the move's answer follows.
            return self.after_fetch_next(pending, out);
        }
        if status == Status::Ok {
            if op == Op::Copy {
                // Only once the copy exists may the originals be flagged and expunged.
                self.queue_delete(&mut pending, out);
            }
            return self.after_fetch_next(pending, out);
        }
        let trycreate = matches!(&code, Some(Code::Other(c)) if c.eq_ignore_ascii_case("TRYCREATE"));
        if trycreate && matches!(op, Op::Move | Op::Copy) && !self.run.created && pending.is_empty() {
            self.run.created = true;
            // Subscribed too, like a Sent folder the append session creates: mail programs
            // that show only subscribed folders would hide the moved mail.
            self.queue(&mut pending, Op::Create, out);
            self.queue(&mut pending, Op::Subscribe, out);
            self.queue(&mut pending, op, out);
            return self.after_fetch_next(pending, out);
        }
        let target = match &self.mailbox.after_fetch {
            AfterFetch::MoveTo(t) => t.clone(),
            _ => String::new(),
        };
        let what = match op {
            Op::MarkSeen => "mark the fetched messages \\Seen".to_string(),
            Op::MarkDeleted => "flag the fetched messages \\Deleted".to_string(),
            Op::Expunge => "expunge (UID EXPUNGE) the fetched messages".to_string(),
            Op::Move => format!("move the fetched messages to {target:?}"),
            Op::Copy => format!("copy the fetched messages to {target:?}"),
            Op::Create => format!("create the folder {target:?} for fetched messages"),
            Op::Subscribe => format!("subscribe the folder {target:?}"),
        };
        let n = self.run.action_uids.len();
        let e = Error::protocol(
            Stage::FetchMessage,
            format!(
                "the server refused to {what} in folder {:?}; the {n} messages are stored and will not be fetched again, and the action is tried again at the next run: check the folder permissions and quota, or apply the after-fetch action by hand",
                self.folder()
            ),
        )
        .with_reply(ServerReply::new(status.as_str(), text));
        let e = if matches!(op, Op::Move | Op::Copy | Op::Create) { self.conn.folder_refused(e, &target) } else { e };
        if self.run.retrying {
            // Left over from an earlier run: they stay pending, the new mail is fetched, and
            // the run then fails with this error. Replies still in flight are read first.
            self.run.retry_refused = true;
            self.deferred.get_or_insert(e);
            return self.after_fetch_next(pending, out);
        }
        Err(e)
    }
}
