//! The listing: STAT, UIDL and LIST, and which messages this run fetches or skips.

use super::*;

impl Pop3Session {
    pub(super) fn start_listing(&mut self) {
        if self.check.is_some() {
            // A check only counts: no UIDL, no LIST.
            self.write(b"STAT\r\n");
            self.phase = Phase::Stat;
            return;
        }
        let pipelined = self.caps.as_ref().is_some_and(|c| c.pipelining);
        self.listing.pipelined = pipelined;
        self.write(if pipelined { b"STAT\r\nUIDL\r\nLIST\r\n" } else { b"STAT\r\n" });
        self.phase = Phase::Stat;
    }

    pub(super) fn on_stat(&mut self, line: &[u8]) -> Result<()> {
        let stage = Stage::ListMessages;
        match response::status(line, stage)? {
            Status::Ok(text) => {
                let count = text.split(|&b| b == b' ').next().and_then(response::parse_u64);
                let Some(count) = count.and_then(|c| u32::try_from(c).ok()) else {
                    return Err(Error::protocol_quoting(stage, text, |t| {
                        format!("the server's STAT reply {t} has no message count")
                    }));
                };
                self.listing.count = count;
                if count == 0 && !self.listing.pipelined {
                    return self.finish_listing();
                }
                if !self.listing.pipelined {
                    self.write(b"UIDL\r\n");
                }
                self.phase = Phase::Uidl { body: false };
                Ok(())
            }
            Status::Err(text) => Err(Error::protocol(stage, "the server refused to report the mailbox size (STAT)")
                .with_reply(response::reply("-ERR", text))),
            Status::Continue(_) => Err(unexpected(line, stage)),
        }
    }

    pub(super) fn on_uidl_entry(&mut self, line: &[u8]) -> Result<()> {
        let stage = Stage::ListMessages;
        let Some((number, uid)) = response::listing_entry(line).filter(|(_, uid)| response::valid_uid(uid)) else {
            return Err(Error::protocol_quoting(stage, line, |t| format!("the server sent a malformed UIDL line {t}")));
        };
        if uid.len() > MAX_UID_CHARS {
            return Err(Error::limit(
                stage,
                format!(
                    "the server sent a unique-id of {} characters for message {number}; RFC 1939 allows at most {MAX_UID_CHARS}, so it cannot be tracked reliably. The server does not follow POP3: check it with its administrator",
                    uid.len()
                ),
            ));
        }
        self.listing.uid_bytes += uid.len();
        if self.listing.uid_bytes > MAX_UIDL_LISTING_BYTES {
            return Err(Error::limit(
                stage,
                format!(
                    "the server's UIDL listing holds more than {} MiB of unique-ids; the session was stopped. Empty the mailbox on the server (or fetch it with IMAP)",
                    MAX_UIDL_LISTING_BYTES >> 20
                ),
            ));
        }
        // The listing can only be as long as STAT said; this also bounds the memory it takes.
        if self.listing.entries.len() >= self.listing.count as usize {
            return Err(Error::protocol(
                stage,
                format!("the server listed more unique ids than the {} messages STAT reported", self.listing.count),
            ));
        }
        let uid = String::from_utf8_lossy(uid).into_owned();
        self.listing.entries.push(Entry { number, uid, size: None });
        Ok(())
    }

    pub(super) fn on_list_entry(&mut self, line: &[u8]) -> Result<()> {
        let stage = Stage::ListMessages;
        let parsed = response::listing_entry(line).and_then(|(n, size)| Some((n, response::parse_u64(size)?)));
        let Some((number, size)) = parsed else {
            return Err(Error::protocol_quoting(stage, line, |t| format!("the server sent a malformed LIST line {t}")));
        };
        let entries = &mut self.listing.entries;
        match entries.binary_search_by_key(&number, |e| e.number) {
            Ok(i) => {
                if let Some(entry) = entries.get_mut(i) {
                    entry.size = Some(size);
                }
                Ok(())
            }
            Err(_) => Err(Error::protocol(
                stage,
                format!("the server's LIST shows message {number}, which its UIDL did not list"),
            )),
        }
    }

    /// The listing is complete: prune the sync state, apply the first-sync policy, report
    /// messages too large to fetch, plan the batch and the deletions of stored messages.
    pub(super) fn finish_listing(&mut self) -> Result<()> {
        let stage = Stage::ListMessages;
        let entries = std::mem::take(&mut self.listing.entries);
        {
            let mut present: HashSet<&str> = HashSet::with_capacity(entries.len());
            for entry in &entries {
                if entry.size.is_none() {
                    return Err(Error::protocol(
                        stage,
                        format!("the server's UIDL lists message {} but its LIST does not", entry.number),
                    ));
                }
                if !present.insert(entry.uid.as_str()) {
                    return Err(Error::protocol(
                        stage,
                        format!(
                            "the server gives two messages the same unique id \"{}\", so they cannot be told apart; the server's UIDL support is broken",
                            entry.uid
                        ),
                    ));
                }
            }
            self.sync.retain_present(&present);
        }
        // Without a sync state this is the mailbox's first sync: the policy decides how many of
        // the messages already there (the oldest, by message number) are left out for good.
        let left_out = if self.has_sync_state {
            0
        } else {
            match self.mailbox.first_sync {
                FirstSync::All => 0,
                FirstSync::NewOnly => entries.len(),
                FirstSync::Newest(n) => entries.len().saturating_sub(usize::try_from(n).unwrap_or(usize::MAX)),
            }
        };
        self.has_sync_state = true;

        let limits = self.mailbox.limits;
        let delete = self.mailbox.after_fetch == AfterFetch::Delete;
        // Deletions left over from earlier runs are bounded like a batch, so a mailbox switched
        // to Delete with years of mail is cleaned up over several runs, each one committing.
        let mut earlier_deletions = 0usize;
        // A message larger than the whole batch could never be delivered either.
        let largest = limits.max_message_bytes.min(limits.max_batch_bytes);
        let mut batch_bytes = 0u64;
        let mut batch_full = false;
        for (index, entry) in entries.into_iter().enumerate() {
            let Some(size) = entry.size else { continue };
            if index < left_out {
                self.sync.record_ignored(entry.uid);
                continue;
            }
            if self.sync.is_stored(&entry.uid) {
                // Stored in an earlier run but still here: that run's QUIT did not commit.
                if delete && earlier_deletions < limits.max_batch_messages as usize {
                    earlier_deletions += 1;
                    self.deletion.queued.push(MessageRef { number: entry.number, uid: entry.uid });
                }
                continue;
            }
            if self.sync.is_ignored(&entry.uid) {
                continue;
            }
            match self.sync.skipped_size(&entry.uid) {
                // Reported in an earlier run; fetched once the limits were raised enough.
                Some(known) if known.max(size) > largest => continue,
                Some(_) => {}
                None if size > largest => {
                    self.skip(entry.uid, size);
                    continue;
                }
                None => {}
            }
            // Oldest first, and no overtaking: a later run continues where this one stopped.
            let fits = self.fetch.queued.len() < limits.max_batch_messages as usize
                && batch_bytes.saturating_add(size) <= limits.max_batch_bytes;
            if batch_full || !fits {
                batch_full = true;
                self.fetch.remaining += 1;
                continue;
            }
            batch_bytes += size;
            self.fetch.queued.push_back(Target { number: entry.number, uid: entry.uid, size });
        }

        if self.fetch.queued.is_empty() {
            self.start_deletions();
        } else {
            self.fetch.window = if self.listing.pipelined { RETR_WINDOW } else { 1 };
            self.request_more();
            self.phase = Phase::Retr;
        }
        Ok(())
    }

    /// Reports a message too large for the limits, once: the sync state remembers it.
    pub(super) fn skip(&mut self, uid: String, size: u64) {
        let reason = too_large_reason(size, &self.mailbox.limits);
        self.fetch.skipped += 1;
        self.emit(Action::Skipped(SkippedMessage { id: format!("pop3:{uid}"), folder: INBOX.into(), size, reason }));
        self.sync.record_skipped(uid, size);
    }
}

/// The sentence for the admin about a message too large to fetch.
pub(super) fn too_large_reason(size: u64, limits: &Limits) -> String {
    if size > limits.max_message_bytes {
        let (size, limit) = human_sizes(size, limits.max_message_bytes);
        format!("message of {size} exceeds max_message_bytes ({limit}); it stays on the server, raise the limit to import it")
    } else {
        let (size, limit) = human_sizes(size, limits.max_batch_bytes);
        format!(
            "message of {size} exceeds max_batch_bytes ({limit}), so it never fits in a batch; it stays on the server, raise max_batch_bytes to import it"
        )
    }
}

/// Two sizes in the same readable form; exact bytes when rounding would make them look equal.
pub(super) fn human_sizes(a: u64, b: u64) -> (String, String) {
    let (ha, hb) = (human_size(a), human_size(b));
    if ha == hb {
        (format!("{a} bytes"), format!("{b} bytes"))
    } else {
        (ha, hb)
    }
}

pub(super) fn human_size(bytes: u64) -> String {
    const KB: u64 = 1024;
    const MB: u64 = 1024 * 1024;
    const GB: u64 = 1024 * 1024 * 1024;
    let (unit, name) = match bytes {
        b if b >= GB => (GB, "GB"),
        b if b >= MB => (MB, "MB"),
        b if b >= KB => (KB, "KB"),
        b => return format!("{b} bytes"),
    };
    // One decimal, without a trailing ".0"; integer arithmetic so huge sizes stay exact.
    let tenths = (u128::from(bytes) * 10 + u128::from(unit) / 2) / u128::from(unit);
    if tenths % 10 == 0 {
        format!("{} {name}", tenths / 10)
    } else {
        format!("{}.{} {name}", tenths / 10, tenths % 10)
    }
}
