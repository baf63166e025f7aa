//! Downloading the batch: FETCH responses delivered in UID order.

use super::*;

impl ImapSession {
    /// Moves `last_uid` up to the highest UID below which every batch item is handled; a
    /// message the server left out stays pending, so the next run asks for it again.
    pub(super) fn advance(&mut self) {
        let run = &mut self.run;
        while run.items.get(run.prefix).is_some_and(|i| i.state != ItemState::Pending) {
            run.prefix += 1;
        }
        let Some(last) = run.prefix.checked_sub(1).and_then(|i| run.items.get(i)).map(|i| i.uid) else { return };
        if self.entry().is_some_and(|e| e.last_uid < last) {
            self.set_last_uid(last);
        }
    }

    pub(super) fn on_fetch(&mut self, f: Fetch, out: &mut Vec<Action>) -> Result<()> {
        match self.state {
            State::Sizes { .. } => {
                if let (Some(uid), Some(size)) = (f.uid, f.size) {
                    self.run.max_seq = self.run.max_seq.max(f.seq);
                    self.on_listed(uid, size);
                }
                Ok(())
            }
            State::MaxUid { .. } => {
                if let Some(uid) = f.uid {
                    self.run.max_uid = Some(self.run.max_uid.map_or(uid, |m| m.max(uid)));
                }
                Ok(())
            }
            State::Fetch { .. } => {
                let Some(raw) = f.body else { return Ok(()) }; // flag updates and the like
                let Some(uid) = f.uid else {
                    return Err(Error::protocol(
                        Stage::FetchMessage,
                        format!("the server sent message {} without its UID, so it cannot be tracked", f.seq),
                    ));
                };
                if raw.len() as u64 > self.mailbox.limits.max_message_bytes {
                    return Err(Error::limit(
                        Stage::FetchMessage,
                        format!(
                            "message UID {uid} is larger than the limit of {} bytes",
                            self.mailbox.limits.max_message_bytes
                        ),
                    ));
                }
                let Ok(i) = self.run.items.binary_search_by_key(&uid, |i| i.uid) else { return Ok(()) };
                match self.run.items.get_mut(i) {
                    Some(item) if item.state == ItemState::Pending => item.state = ItemState::Delivered,
                    _ => return Ok(()),
                }
                self.advance();
                if self.acts() {
                    // Committed with the delivery at the next `stored`; cleared once the
                    // server confirms the after-fetch action.
                    if let Some(e) = self.entry() {
                        e.add_pending(&[uid]);
                    }
                }
                let folder = self.folder().to_string();
                let uidvalidity = self.run.uidvalidity.unwrap_or(0);
                self.delivered += 1;
                self.unstored += 1;
                out.push(Action::Deliver(FetchedMessage {
                    id: format!("imap:{folder}:{uidvalidity}:{uid}"),
                    folder,
                    raw,
                }));
                Ok(())
            }
            // Unsolicited FETCH (flag changes) elsewhere: nothing to do.
            _ => Ok(()),
        }
    }

    pub(super) fn delivered_uids(&self) -> Vec<u32> {
        self.run.items.iter().filter(|i| i.state == ItemState::Delivered).map(|i| i.uid).collect()
    }

    /// The folder's batch is complete: its after-fetch action (once stored), then the next folder.
    pub(super) fn folder_fetched(&mut self, out: &mut Vec<Action>) -> Result<()> {
        if !self.acts() || self.delivered_uids().is_empty() {
            return self.start_folder(self.run.index + 1, out);
        }
        if self.unstored > 0 {
            self.state = State::AwaitFolderStored;
            return Ok(());
        }
        self.start_after_fetch(out)
    }
}
