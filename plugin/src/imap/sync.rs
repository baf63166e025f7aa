//! What an IMAP mailbox remembers between runs: per folder, the UIDVALIDITY, the highest UID
//! below which everything was delivered and stored (or skipped), and the skipped (oversized)
//! UIDs above it, and the stored UIDs whose after-fetch action the server has not confirmed
//! yet. Versioned JSON: version 2 added `skipped`, version 3 `pending`; versions 1 and 2 are
//! still read (the missing sets decode as empty).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, Stage};

const VERSION: u32 = 3;
/// Versions `decode` reads (1 lacks `skipped`, 1 and 2 lack `pending`: empty then).
const READABLE: [u32; 3] = [1, 2, 3];
/// At most this many pending UIDs are kept per folder; past it the oldest (lowest) are
/// dropped. A server that refuses the action for good (a read-only folder, a full target)
/// would otherwise grow the state with every run; the dropped messages are stored and stay
/// in the folder (mis-filed, never lost), and the error of the refused action tells the admin.
pub const MAX_PENDING: usize = 100_000;
const PROTOCOL: &str = "imap";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderSync {
    pub uidvalidity: u32,
    pub last_uid: u32,
    /// Oversized UIDs above `last_uid` already reported as skipped, ascending. Entries at or
    /// below `last_uid` or gone from the server are pruned, so this stays small.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<u32>,
    /// Stored UIDs whose after-fetch action (mark seen, delete, move) the server has not
    /// confirmed yet, ascending, at most `MAX_PENDING`; the next run applies the action to
    /// them before fetching. Written as inclusive ranges `[[first,last],...]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "ranges")]
    pub pending: Vec<u32>,
}

impl FolderSync {
    pub fn new(uidvalidity: u32) -> Self {
        FolderSync { uidvalidity, ..FolderSync::default() }
    }

    /// Adds UIDs to `pending`, keeping it sorted, unique and bounded (oldest dropped).
    pub fn add_pending(&mut self, uids: &[u32]) {
        let ascending = uids.first().is_none_or(|&f| self.pending.last().is_none_or(|&l| l < f))
            && uids.windows(2).all(|w| w[0] < w[1]);
        self.pending.extend_from_slice(uids);
        if !ascending {
            self.pending.sort_unstable();
            self.pending.dedup();
        }
        let over = self.pending.len().saturating_sub(MAX_PENDING);
        self.pending.drain(..over);
    }

    /// The server confirmed the action for these UIDs.
    pub fn clear_pending(&mut self, uids: &[u32]) {
        self.pending.retain(|u| uids.binary_search(u).is_err());
    }
}

/// `pending` as inclusive UID ranges: compact for the usual runs of consecutive UIDs.
mod ranges {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(uids: &[u32], s: S) -> Result<S::Ok, S::Error> {
        let mut out: Vec<[u32; 2]> = Vec::new();
        for &u in uids {
            match out.last_mut() {
                Some(r) if r[1].checked_add(1) == Some(u) => r[1] = u,
                _ => out.push([u, u]),
            }
        }
        out.serialize(s)
    }

    /// Expands at most `MAX_PENDING` UIDs, the highest kept (a hostile "1:4294967295" costs
    /// no more memory than a full set).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
        let mut list: Vec<[u32; 2]> = Vec::deserialize(d)?;
        for r in &mut list {
            if r[0] > r[1] {
                r.swap(0, 1);
            }
        }
        // Highest end first; each range continues below what is already taken, so
        // overlapping or repeated ranges add nothing twice.
        list.sort_unstable_by(|a, b| b[1].cmp(&a[1]));
        let mut out: Vec<u32> = Vec::new();
        'ranges: for r in &list {
            let top = match out.last() {
                Some(0) => break,
                Some(&l) => r[1].min(l - 1),
                None => r[1],
            };
            if top < r[0] {
                continue;
            }
            for u in (r[0]..=top).rev() {
                if out.len() >= super::MAX_PENDING {
                    break 'ranges;
                }
                out.push(u);
            }
        }
        out.reverse();
        Ok(out)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncState {
    /// Keyed by the UTF-8 folder name as configured.
    pub folders: BTreeMap<String, FolderSync>,
}

#[derive(Deserialize)]
struct Header {
    v: u32,
    protocol: String,
}

#[derive(Serialize, Deserialize)]
struct Body {
    v: u32,
    protocol: String,
    folders: BTreeMap<String, FolderSync>,
}

impl SyncState {
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let unreadable = |e: serde_json::Error| {
            Error::invalid(
                Stage::Connect,
                format!("the stored IMAP sync state is unreadable ({e}); clear it to fetch the mailbox from the start"),
            )
        };
        let header: Header = serde_json::from_slice(bytes).map_err(unreadable)?;
        if header.protocol != PROTOCOL {
            return Err(Error::invalid(
                Stage::Connect,
                format!(
                    "the stored sync state belongs to a {:?} mailbox, not IMAP; clear it after changing the protocol",
                    header.protocol
                ),
            ));
        }
        if !READABLE.contains(&header.v) {
            return Err(Error::invalid(
                Stage::Connect,
                format!("the stored IMAP sync state has version {}, this plugin reads versions 1 to {VERSION}; use a matching plugin version or clear it", header.v),
            ));
        }
        let mut body: Body = serde_json::from_slice(bytes).map_err(unreadable)?;
        // Lookups binary-search `skipped`.
        for f in body.folders.values_mut() {
            f.skipped.sort_unstable();
            f.skipped.dedup();
        }
        Ok(SyncState { folders: body.folders })
    }

    pub fn encode(&self) -> Vec<u8> {
        let body = Body { v: VERSION, protocol: PROTOCOL.into(), folders: self.folders.clone() };
        // Serialising plain maps of numbers cannot fail.
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn round_trip_and_documented_layout() {
        let text = br#"{"v":3,"protocol":"imap","folders":{"A":{"uidvalidity":1,"last_uid":7,"skipped":[9,12]},"INBOX":{"uidvalidity":1,"last_uid":7}}}"#;
        let s = SyncState::decode(text).unwrap();
        assert_eq!(s.folders["INBOX"], FolderSync { uidvalidity: 1, last_uid: 7, ..FolderSync::default() });
        assert_eq!(s.folders["A"].skipped, vec![9, 12]);
        assert_eq!(s.encode(), text.to_vec());
    }

    #[test]
    fn version_1_is_migrated() {
        let s = SyncState::decode(br#"{"v":1,"protocol":"imap","folders":{"INBOX":{"uidvalidity":1,"last_uid":7}}}"#)
            .unwrap();
        assert_eq!(s.folders["INBOX"], FolderSync { uidvalidity: 1, last_uid: 7, ..FolderSync::default() });
        assert_eq!(
            s.encode(),
            br#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":1,"last_uid":7}}}"#.to_vec()
        );
    }

    #[test]
    fn version_2_has_nothing_pending_and_pending_is_written_as_ranges() {
        let s = SyncState::decode(br#"{"v":2,"protocol":"imap","folders":{"INBOX":{"uidvalidity":1,"last_uid":7,"skipped":[9]}}}"#)
            .unwrap();
        assert!(s.folders["INBOX"].pending.is_empty());
        let text = br#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":1,"last_uid":9,"pending":[[3,5],[7,7],[9,9]]}}}"#;
        let s = SyncState::decode(text).unwrap();
        assert_eq!(s.folders["INBOX"].pending, vec![3, 4, 5, 7, 9]);
        assert_eq!(s.encode(), text.to_vec());
        // Overlapping, repeated and reversed ranges are read as their union.
        let s = SyncState::decode(br#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":1,"last_uid":9,"pending":[[1,10],[3,2],[8,12],[5,5]]}}}"#)
            .unwrap();
        assert_eq!(s.folders["INBOX"].pending, (1..=12).collect::<Vec<u32>>());
    }

    #[test]
    fn pending_is_bounded_and_drops_the_oldest() {
        let s = SyncState::decode(br#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":1,"last_uid":9,"pending":[[0,4294967295]]}}}"#)
            .unwrap();
        let p = &s.folders["INBOX"].pending;
        assert_eq!(p.len(), MAX_PENDING);
        assert_eq!((p[0], p[MAX_PENDING - 1]), (u32::MAX - MAX_PENDING as u32 + 1, u32::MAX));

        let mut f = FolderSync::new(1);
        f.add_pending(&(1..=MAX_PENDING as u32).collect::<Vec<_>>());
        f.add_pending(&[MAX_PENDING as u32 + 5, 3]);
        assert_eq!(f.pending.len(), MAX_PENDING);
        assert_eq!((f.pending[0], *f.pending.last().unwrap()), (2, MAX_PENDING as u32 + 5));
        f.clear_pending(&[2, 3, 4]);
        assert_eq!(f.pending[0], 5);
    }

    #[test]
    fn foreign_or_future_state_is_invalid_input() {
        for bad in [
            &br#"{"v":4,"protocol":"imap","folders":{}}"#[..],
            br#"{"v":1,"protocol":"pop3","uidls":[]}"#,
            br#"{"v":1,"protocol":"imap","folders":{"INBOX":{"uidvalidity":-1,"last_uid":7}}}"#,
            b"not json",
        ] {
            assert_eq!(SyncState::decode(bad).unwrap_err().kind, ErrorKind::InvalidInput);
        }
    }
}
