//! The listing of a selected folder: which UIDs are new (SEARCH, ESEARCH or FETCH windows), their sizes, and the batch to fetch.

use super::*;

impl ImapSession {
    pub(super) fn after_select(&mut self, out: &mut Vec<Action>) -> Result<()> {
        let name = self.folder().to_string();
        let uidvalidity = self.uidvalidity()?;
        let (last_uid, policy) = match self.working.folders.get(&name) {
            Some(k) if k.uidvalidity == uidvalidity => (k.last_uid, None),
            // Renumbered: everything is new again; the host deduplicates what it already has.
            Some(_) => (0, Some(FirstSync::All)),
            None => (0, Some(self.mailbox.first_sync)),
        };
        if policy.is_some() {
            // A new folder, or renumbered: pending UIDs of the old numbering mean nothing now.
            self.working.folders.insert(name.clone(), FolderSync::new(uidvalidity));
        }
        self.run.after_uid = last_uid;
        let acts = self.acts();
        let pending = match self.entry() {
            // `keep` has nothing to apply (the setting changed since): nothing stays pending.
            Some(e) if !acts => {
                e.pending.clear();
                Vec::new()
            }
            Some(e) => e.pending.clone(),
            None => Vec::new(),
        };
        if !pending.is_empty() {
            // Stored by an earlier run that ended before the server confirmed their action:
            // that action first, then the new messages.
            self.run.retrying = true;
            return self.start_action(pending, out);
        }
        self.list_new(policy, out)
    }

    /// Lists the messages above `run.after_uid` (or sets the first-sync starting point).
    pub(super) fn list_new(&mut self, policy: Option<FirstSync>, out: &mut Vec<Action>) -> Result<()> {
        let last_uid = self.run.after_uid;
        self.run.capacity = (self.batch_messages_left as usize).max(1);
        let exists = self.run.exists;
        match policy {
            Some(FirstSync::NewOnly | FirstSync::Newest(0)) => {
                match (self.run.uidnext, exists) {
                    (Some(next), _) => self.set_last_uid(next.saturating_sub(1)),
                    (None, Some(0)) => {}
                    (None, _) => {
                        let tag = self.conn.send_simple(out, "UID FETCH * (UID)");
                        self.state = State::MaxUid { tag };
                        return Ok(());
                    }
                }
                self.commit_baseline();
                return self.start_folder(self.run.index + 1, out);
            }
            Some(FirstSync::Newest(n)) if exists != Some(0) => {
                // Sequence numbers are dense: the last n of them are the newest n messages.
                let first = exists.map_or(1, |e| e.saturating_sub(n).saturating_add(1)).max(1);
                self.run.newest = true;
                let tag = self.conn.send_simple(out, &format!("FETCH {first}:* (UID RFC822.SIZE)"));
                self.state = State::Sizes { tag };
                return Ok(());
            }
            _ => {}
        }
        // Nothing new when the folder is empty or the next UID to be assigned is the one after
        // our last: the usual poll then costs no SEARCH round trip.
        let nothing_new = exists == Some(0)
            || last_uid == u32::MAX
            || (last_uid > 0 && self.run.uidnext.is_some_and(|n| n <= last_uid + 1));
        if nothing_new {
            self.note_listing_complete();
            return self.start_folder(self.run.index + 1, out);
        }
        // A SEARCH answer lists up to EXISTS UIDs of up to 11 bytes each. When that could pass
        // the line limit, list UIDs and sizes as one FETCH line per message instead: no line
        // grows with the folder, and only the lowest `capacity` are kept.
        let worst_search_line = u64::from(exists.unwrap_or(0)) * 11 + 64;
        if worst_search_line > u64::from(self.mailbox.limits.max_line_bytes) {
            // In UID windows sized to the batch, so a run reads about one batch of listing
            // lines, not the whole folder.
            self.run.top = self.run.uidnext.map(|n| n.saturating_sub(1));
            self.run.window_span = (self.run.capacity as u32).max(1);
            self.send_window(last_uid.saturating_add(1), out);
            return Ok(());
        }
        let criteria = if last_uid == 0 { "ALL".to_string() } else { format!("UID {}:*", last_uid + 1) };
        // ESEARCH (RFC 4731) answers with a compact set instead of every UID.
        let ret = if self.has_cap("ESEARCH") || self.has_cap("IMAP4rev2") { "RETURN (ALL) " } else { "" };
        let tag = self.conn.send_simple(out, &format!("UID SEARCH {ret}{criteria}"));
        self.state = State::Search { tag };
        Ok(())
    }

    /// The listing of UIDs above `after_uid` was complete: previously skipped UIDs not seen
    /// in it are gone from the server.
    pub(super) fn note_listing_complete(&mut self) {
        if self.run.listing_partial {
            return;
        }
        let seen = std::mem::take(&mut self.run.seen_skipped);
        if let Some(e) = self.entry() {
            e.skipped.retain(|u| seen.contains(u));
        }
    }

    pub(super) fn is_known_skipped(&self, uid: u32) -> bool {
        self.folders
            .get(self.run.index)
            .and_then(|n| self.working.folders.get(n))
            .is_some_and(|e| e.skipped.binary_search(&uid).is_ok())
    }

    pub(super) fn after_search(&mut self, out: &mut Vec<Action>) -> Result<()> {
        let after = self.run.after_uid;
        let c = &mut self.run.candidates;
        c.sort_unstable();
        c.dedup();
        // "n:*" always matches the highest UID, even when it is below n.
        c.retain(|&u| u > after);
        self.run.searched = true;
        if c.is_empty() {
            self.note_listing_complete();
            return self.start_folder(self.run.index + 1, out);
        }
        let set = sequence_set(c);
        let tag = self.conn.send_simple(out, &format!("UID FETCH {set} (UID RFC822.SIZE)"));
        self.state = State::Sizes { tag };
        Ok(())
    }

    /// Lists UIDs and sizes from `from` up to the window's end (`*` when the top is unknown).
    pub(super) fn send_window(&mut self, from: u32, out: &mut Vec<Action>) {
        let range = match self.run.top.filter(|&top| top >= from) {
            Some(top) => {
                let end = from.saturating_add(self.run.window_span.saturating_sub(1)).min(top);
                self.run.window_end = Some(end);
                if end == from {
                    format!("{from}")
                } else {
                    format!("{from}:{end}")
                }
            }
            // Unknown (or inconsistent) top: one listing to the end.
            None => {
                self.run.window_end = None;
                format!("{from}:*")
            }
        };
        let tag = self.conn.send_simple(out, &format!("UID FETCH {range} (UID RFC822.SIZE)"));
        self.state = State::Sizes { tag };
    }

    /// One listed message with its size: keep the lowest `capacity` UIDs.
    pub(super) fn on_listed(&mut self, uid: u32, size: u64) {
        let run = &self.run;
        if (!run.newest && uid <= run.after_uid)
            || (run.searched && run.candidates.binary_search(&uid).is_err())
            || run.listed.contains_key(&uid)
        {
            return;
        }
        let known = self.is_known_skipped(uid);
        if known {
            self.run.seen_skipped.push(uid);
        }
        self.run.listed.insert(uid, size);
        if self.run.listed.len() > self.run.capacity {
            if let Some((evicted, _)) = self.run.listed.pop_last() {
                if !self.is_known_skipped(evicted) {
                    self.run.overflow += 1;
                }
            }
        }
    }

    pub(super) fn after_sizes(&mut self, out: &mut Vec<Action>) -> Result<()> {
        let limits = self.mailbox.limits;
        if self.run.newest {
            // Older messages than the newest n are never fetched: start just below them.
            let base = match self.run.listed.first_key_value() {
                Some((&lowest, _)) => lowest.saturating_sub(1),
                None => self.run.uidnext.map_or(0, |n| n.saturating_sub(1)),
            };
            self.run.after_uid = base;
            self.set_last_uid(base);
        } else {
            self.note_listing_complete();
        }
        let folder = self.folder().to_string();
        let uidvalidity = self.run.uidvalidity.unwrap_or(0);
        let listed = std::mem::take(&mut self.run.listed);
        let mut items = Vec::new();
        let mut full = false;
        for (uid, size) in listed {
            if self.is_known_skipped(uid) {
                if !full {
                    items.push(Item { uid, state: ItemState::Skipped });
                }
                continue;
            }
            let too_big = if size > limits.max_message_bytes {
                Some(("max_message_bytes", limits.max_message_bytes))
            } else if size > limits.max_batch_bytes {
                Some(("max_batch_bytes", limits.max_batch_bytes))
            } else {
                None
            };
            if let Some((limit_name, limit)) = too_big {
                // Never fits: report it once and keep the later messages flowing.
                out.push(Action::Skipped(SkippedMessage {
                    id: format!("imap:{folder}:{uidvalidity}:{uid}"),
                    folder: folder.clone(),
                    size,
                    reason: format!(
                        "message of {} in folder {folder:?} exceeds {limit_name} ({}); raise the limit to import it",
                        human_size(size),
                        human_size(limit)
                    ),
                }));
                self.skipped += 1;
                if let Some(e) = self.entry() {
                    if let Err(at) = e.skipped.binary_search(&uid) {
                        e.skipped.insert(at, uid);
                    }
                }
                if !full {
                    items.push(Item { uid, state: ItemState::Skipped });
                }
                continue;
            }
            // Stop at the first message that does not fit so "highest handled UID" stays exact.
            if full || self.batch_messages_left == 0 || size > self.batch_bytes_left {
                full = true;
                self.remaining += 1;
                continue;
            }
            items.push(Item { uid, state: ItemState::Pending });
            self.batch_messages_left -= 1;
            self.batch_bytes_left -= size;
        }
        self.remaining += self.run.overflow;
        self.run.items = items;
        self.advance();
        let batch: Vec<u32> = self.run.items.iter().filter(|i| i.state == ItemState::Pending).map(|i| i.uid).collect();
        if batch.is_empty() {
            return self.folder_fetched(out);
        }
        let set = sequence_set(&batch);
        let tag = self.conn.send_simple(out, &format!("UID FETCH {set} (UID BODY.PEEK[])"));
        self.state = State::Fetch { tag };
        Ok(())
    }
}

/// "73 MB", "12 KB", "900 bytes": sizes for the admin.
pub(super) fn human_size(bytes: u64) -> String {
    const KB: u64 = 1024;
    const MB: u64 = 1024 * 1024;
    if bytes >= MB {
        format!("{} MB", bytes / MB)
    } else if bytes >= KB {
        format!("{} KB", bytes / KB)
    } else {
        format!("{bytes} bytes")
    }
}
