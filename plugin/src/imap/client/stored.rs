//! What is committed and when: the working sync state becomes what `sync_state` reports
//! only at the host's `stored` (or for a first-sync baseline, which holds no delivery).

use super::*;

impl ImapSession {
    pub(super) fn entry(&mut self) -> Option<&mut FolderSync> {
        let name = self.folders.get(self.run.index)?;
        self.working.folders.get_mut(name)
    }

    pub(super) fn set_last_uid(&mut self, last: u32) {
        if let Some(e) = self.entry() {
            e.last_uid = last;
            e.skipped.retain(|&u| u > last);
        }
    }

    pub(super) fn done_fetching(&mut self, out: &mut Vec<Action>) -> Result<()> {
        if self.unstored > 0 {
            self.state = State::AwaitStored;
            return Ok(());
        }
        self.commit();
        if let Some(e) = self.deferred.take() {
            return Err(e);
        }
        self.end_or_idle(out)
    }

    pub(super) fn on_stored(&mut self, out: &mut Vec<Action>) -> Result<()> {
        self.unstored = 0;
        self.commit();
        if matches!(self.state, State::AwaitFolderStored) {
            return self.start_after_fetch(out);
        }
        if matches!(self.state, State::AwaitStored) {
            if let Some(e) = self.deferred.take() {
                return Err(e);
            }
            if self.server_gone {
                self.finish(out);
            } else {
                return self.end_or_idle(out);
            }
        }
        Ok(())
    }

    /// A first-sync starting point holds no delivery, so it may be kept at once (when nothing
    /// delivered is waiting for the host): a later failure in this run must not move "from now
    /// on" forward and lose mail that arrives before the next run.
    pub(super) fn commit_baseline(&mut self) {
        if self.unstored == 0 {
            self.commit();
        }
    }

    pub(super) fn commit(&mut self) {
        self.committed = Some(self.working.clone());
    }
}
