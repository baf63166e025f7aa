//! Downloading (RETR in a window), the host's `stored`, and deletion (DELE) after it.

use super::*;

impl Pop3Session {
    pub(super) fn request_more(&mut self) {
        while self.fetch.in_flight.len() < self.fetch.window {
            let Some(target) = self.fetch.queued.pop_front() else { break };
            let command = format!("RETR {}\r\n", target.number);
            self.out.extend_from_slice(command.as_bytes());
            self.fetch.in_flight.push_back(target);
        }
    }

    pub(super) fn retr_step(&mut self) -> Result<bool> {
        let stage = Stage::FetchMessage;
        if self.fetch.body.is_none() {
            let Some(line) = self.link.next_line(stage)? else {
                return Ok(false);
            };
            let line = line.0.to_vec();
            self.on_retr_status(&line)?;
            return Ok(true);
        }
        // A body line is bounded by the message limit, not the protocol line limit.
        let max_message = usize::try_from(self.mailbox.limits.max_message_bytes).unwrap_or(usize::MAX);
        let Some(line) = self.link.next_line_max(max_message, stage)? else {
            return Ok(false);
        };
        let Some(content) = response::unstuff(line.0) else {
            self.finish_message()?;
            return Ok(true);
        };
        if let Some(body) = self.fetch.body.as_mut() {
            let line_bytes = u64::try_from(content.len()).unwrap_or(u64::MAX).saturating_add(2);
            body.received = body.received.saturating_add(line_bytes);
            if !body.oversized {
                if body.received > self.mailbox.limits.max_message_bytes {
                    body.oversized = true;
                    body.raw = Vec::new();
                } else {
                    body.raw.extend_from_slice(content);
                    body.raw.extend_from_slice(b"\r\n");
                }
            }
        }
        Ok(true)
    }

    pub(super) fn on_retr_status(&mut self, line: &[u8]) -> Result<()> {
        let stage = Stage::FetchMessage;
        let Some(target) = self.fetch.in_flight.front() else {
            return Err(unexpected(line, stage));
        };
        match response::status(line, stage)? {
            Status::Ok(_) => {
                let max_message = usize::try_from(self.mailbox.limits.max_message_bytes).unwrap_or(usize::MAX);
                let expected = usize::try_from(target.size).unwrap_or(usize::MAX).min(max_message);
                self.fetch.body = Some(Body { raw: Vec::with_capacity(expected), received: 0, oversized: false });
                Ok(())
            }
            Status::Err(text) => Err(Error::protocol(
                stage,
                format!(
                    "the server refused to send message {} (unique id {}); it may have been deleted by another client, retry later",
                    target.number, target.uid
                ),
            )
            .with_reply(response::reply("-ERR", text))),
            Status::Continue(_) => Err(unexpected(line, stage)),
        }
    }

    pub(super) fn finish_message(&mut self) -> Result<()> {
        let (Some(target), Some(body)) = (self.fetch.in_flight.pop_front(), self.fetch.body.take()) else {
            return Err(Error::protocol(Stage::FetchMessage, "a message ended that was never requested"));
        };
        if body.oversized {
            // LIST understated its size; it is reported with the size actually received.
            self.skip(target.uid, body.received);
        } else {
            self.fetch.delivered += 1;
            self.emit(Action::Deliver(FetchedMessage {
                id: format!("pop3:{}", target.uid),
                folder: INBOX.into(),
                raw: body.raw,
            }));
            self.fetch.unconfirmed.push(MessageRef { number: target.number, uid: target.uid });
        }
        if self.fetch.in_flight.len() <= self.fetch.window / 2 {
            self.request_more();
        }
        if self.fetch.in_flight.is_empty() {
            if self.fetch.unconfirmed.is_empty() {
                self.start_deletions();
            } else {
                self.phase = Phase::AwaitStored;
            }
        }
        Ok(())
    }

    /// The host stored everything delivered so far: only now do those messages count as
    /// stored, and only now may they be deleted.
    pub(super) fn on_stored(&mut self) -> Result<()> {
        let delete = self.mailbox.after_fetch == AfterFetch::Delete;
        for message in self.fetch.unconfirmed.drain(..) {
            self.sync.record_stored(message.uid.clone());
            if delete {
                self.deletion.queued.push(message);
            }
        }
        if self.phase == Phase::AwaitStored {
            if self.server_closed {
                // Nothing can be deleted now; the next run deletes them (they are stored).
                return self.finish();
            }
            self.start_deletions();
        }
        Ok(())
    }

    /// The batch is over and stored: DELE what is queued for deletion, then QUIT.
    pub(super) fn start_deletions(&mut self) {
        if self.deletion.queued.is_empty() {
            self.send_quit();
            return;
        }
        // Popped from the back, so highest number last: commands go out in ascending order.
        self.deletion.queued.sort_unstable_by_key(|m| std::cmp::Reverse(m.number));
        self.deletion.window = if self.listing.pipelined { DELE_WINDOW } else { 1 };
        self.phase = Phase::Dele;
        self.request_deletions();
    }

    pub(super) fn request_deletions(&mut self) {
        while self.deletion.in_flight.len() < self.deletion.window {
            let Some(message) = self.deletion.queued.pop() else { break };
            let command = format!("DELE {}\r\n", message.number);
            self.out.extend_from_slice(command.as_bytes());
            self.deletion.in_flight.push_back(message);
        }
        // With PIPELINING the QUIT follows the last DELE in the same write.
        if self.listing.pipelined && self.deletion.queued.is_empty() && !self.deletion.quit_sent {
            self.write(b"QUIT\r\n");
            self.deletion.quit_sent = true;
        }
    }

    pub(super) fn on_dele_reply(&mut self, line: &[u8]) -> Result<()> {
        let stage = Stage::Logout;
        let Some(message) = self.deletion.in_flight.pop_front() else {
            return Err(unexpected(line, stage));
        };
        match response::status(line, stage)? {
            Status::Ok(_) => self.deletion.marked.push(message.uid),
            Status::Err(text) => {
                return Err(Error::protocol(
                    stage,
                    format!(
                        "the server refused to delete message {} (unique id {}); it is already stored, so nothing is lost, and the next run tries again. If this repeats, check the mailbox with the provider or set the after-fetch action to keep",
                        message.number, message.uid
                    ),
                )
                .with_reply(response::reply("-ERR", text)));
            }
            Status::Continue(_) => return Err(unexpected(line, stage)),
        }
        if self.deletion.in_flight.len() <= self.deletion.window / 2 {
            self.request_deletions();
        }
        if self.deletion.in_flight.is_empty() {
            if self.deletion.quit_sent {
                self.phase = Phase::Quit;
            } else {
                self.send_quit();
            }
        }
        Ok(())
    }
}
