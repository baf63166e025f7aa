//! What an IMAP mailbox remembers between runs: per folder, the UIDVALIDITY, the highest UID
//! below which everything was delivered and stored (or skipped), and the skipped (oversized)
//! UIDs above it. Versioned JSON: version 2 added `skipped`; version 1 is still read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, Stage};

const VERSION: u32 = 2;
/// Versions `decode` reads (1 lacks `skipped`, which then defaults to empty).
const READABLE: [u32; 2] = [1, 2];
const PROTOCOL: &str = "imap";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderSync {
    pub uidvalidity: u32,
    pub last_uid: u32,
    /// Oversized UIDs above `last_uid` already reported as skipped, ascending. Entries at or
    /// below `last_uid` or gone from the server are pruned, so this stays small.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<u32>,
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
                format!("the stored IMAP sync state has version {}, this plugin reads versions 1 and {VERSION}; use a matching plugin version or clear it", header.v),
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
        let text = br#"{"v":2,"protocol":"imap","folders":{"A":{"uidvalidity":1,"last_uid":7,"skipped":[9,12]},"INBOX":{"uidvalidity":1,"last_uid":7}}}"#;
        let s = SyncState::decode(text).unwrap();
        assert_eq!(s.folders["INBOX"], FolderSync { uidvalidity: 1, last_uid: 7, skipped: vec![] });
        assert_eq!(s.folders["A"].skipped, vec![9, 12]);
        assert_eq!(s.encode(), text.to_vec());
    }

    #[test]
    fn version_1_is_migrated() {
        let s = SyncState::decode(br#"{"v":1,"protocol":"imap","folders":{"INBOX":{"uidvalidity":1,"last_uid":7}}}"#)
            .unwrap();
        assert_eq!(s.folders["INBOX"], FolderSync { uidvalidity: 1, last_uid: 7, skipped: vec![] });
        assert_eq!(
            s.encode(),
            br#"{"v":2,"protocol":"imap","folders":{"INBOX":{"uidvalidity":1,"last_uid":7}}}"#.to_vec()
        );
    }

    #[test]
    fn foreign_or_future_state_is_invalid_input() {
        for bad in [
            &br#"{"v":3,"protocol":"imap","folders":{}}"#[..],
            br#"{"v":1,"protocol":"pop3","uidls":[]}"#,
            br#"{"v":1,"protocol":"imap","folders":{"INBOX":{"uidvalidity":-1,"last_uid":7}}}"#,
            b"not json",
        ] {
            assert_eq!(SyncState::decode(bad).unwrap_err().kind, ErrorKind::InvalidInput);
        }
    }
}
