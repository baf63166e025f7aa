//! What an IMAP mailbox remembers between runs: per folder, the UIDVALIDITY and the highest
//! UID delivered and stored. Versioned JSON so later versions can migrate it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, Stage};

const VERSION: u32 = 1;
const PROTOCOL: &str = "imap";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderSync {
    pub uidvalidity: u32,
    pub last_uid: u32,
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
        if header.v != VERSION {
            return Err(Error::invalid(
                Stage::Connect,
                format!("the stored IMAP sync state has version {}, this plugin reads version {VERSION}; use a matching plugin version or clear it", header.v),
            ));
        }
        let body: Body = serde_json::from_slice(bytes).map_err(unreadable)?;
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
        let s = SyncState::decode(br#"{"v":1,"protocol":"imap","folders":{"INBOX":{"uidvalidity":1,"last_uid":7}}}"#)
            .unwrap();
        assert_eq!(s.folders["INBOX"], FolderSync { uidvalidity: 1, last_uid: 7 });
        assert_eq!(
            s.encode(),
            br#"{"v":1,"protocol":"imap","folders":{"INBOX":{"uidvalidity":1,"last_uid":7}}}"#.to_vec()
        );
    }

    #[test]
    fn foreign_or_future_state_is_invalid_input() {
        for bad in [
            &br#"{"v":2,"protocol":"imap","folders":{}}"#[..],
            br#"{"v":1,"protocol":"pop3","uidls":[]}"#,
            br#"{"v":1,"protocol":"imap","folders":{"INBOX":{"uidvalidity":-1,"last_uid":7}}}"#,
            b"not json",
        ] {
            assert_eq!(SyncState::decode(bad).unwrap_err().kind, ErrorKind::InvalidInput);
        }
    }
}
