//! The POP3 sync state: the UIDLs already delivered and stored by the host, as versioned
//! JSON (`{"v":1,"protocol":"pop3","seen":[...]}`).

use std::collections::{BTreeSet, HashSet};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, Stage};

const VERSION: u64 = 1;
const PROTOCOL: &str = "pop3";

/// Read first, so that a future layout of `seen` is reported as an unknown version rather
/// than as unreadable JSON.
#[derive(Deserialize)]
struct Header {
    v: u64,
    protocol: String,
}

#[derive(Deserialize)]
struct StoredV1 {
    #[serde(default)]
    seen: Vec<String>,
}

#[derive(Serialize)]
struct Encoded<'a> {
    v: u64,
    protocol: &'a str,
    seen: &'a BTreeSet<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SyncState {
    seen: BTreeSet<String>,
}

impl SyncState {
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        let unreadable = |why: &str| {
            Error::invalid(
                Stage::Connect,
                format!("the stored POP3 sync state is unreadable ({why}); reset the mailbox's sync state to fetch again (messages still on the server will be fetched again)"),
            )
        };
        let header: Header = serde_json::from_slice(bytes).map_err(|_| unreadable("not the expected JSON"))?;
        if header.protocol != PROTOCOL {
            return Err(Error::invalid(
                Stage::Connect,
                format!(
                    "the stored sync state belongs to a {} mailbox, not POP3; the mailbox's protocol was changed, so reset its sync state",
                    header.protocol
                ),
            ));
        }
        if header.v != VERSION {
            return Err(Error::invalid(
                Stage::Connect,
                format!(
                    "the stored POP3 sync state has version {}, which this plugin does not know (it writes version {VERSION}); upgrade the plugin or reset the sync state",
                    header.v
                ),
            ));
        }
        let stored: StoredV1 =
            serde_json::from_slice(bytes).map_err(|_| unreadable("the list of seen messages is malformed"))?;
        Ok(SyncState { seen: stored.seen.into_iter().collect() })
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let encoded = Encoded { v: VERSION, protocol: PROTOCOL, seen: &self.seen };
        // Serialising strings into JSON cannot fail; an empty state is the safe fallback anyway.
        serde_json::to_vec(&encoded).unwrap_or_default()
    }

    pub(crate) fn contains(&self, uid: &str) -> bool {
        self.seen.contains(uid)
    }

    pub(crate) fn insert(&mut self, uid: String) {
        self.seen.insert(uid);
    }

    /// Forgets UIDLs no longer on the server, so the state stays as small as the mailbox.
    pub(crate) fn retain_present(&mut self, present: &HashSet<&str>) {
        self.seen.retain(|uid| present.contains(uid.as_str()));
    }

    #[cfg(test)]
    pub(crate) fn seen(&self) -> Vec<&str> {
        self.seen.iter().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn round_trip() {
        let mut s = SyncState::default();
        s.insert("b".into());
        s.insert("a".into());
        let bytes = s.encode();
        assert_eq!(bytes, br#"{"v":1,"protocol":"pop3","seen":["a","b"]}"#);
        assert_eq!(SyncState::decode(&bytes).unwrap(), s);
    }

    #[test]
    fn unknown_version_protocol_or_garbage_is_invalid_input() {
        for bad in [
            &br#"{"v":2,"protocol":"pop3","seen":{"x":1}}"#[..],
            br#"{"v":1,"protocol":"imap","seen":[]}"#,
            br#"{"v":1,"protocol":"pop3","seen":[1]}"#,
            b"not json",
        ] {
            let e = SyncState::decode(bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidInput, "{}", String::from_utf8_lossy(bad));
        }
        let e = SyncState::decode(br#"{"v":2,"protocol":"pop3"}"#).unwrap_err();
        assert!(e.message.contains("version 2"), "{}", e.message);
    }

    #[test]
    fn prune_keeps_only_present() {
        let mut s = SyncState::default();
        for u in ["a", "b", "c"] {
            s.insert(u.into());
        }
        s.retain_present(&["b", "z"].into_iter().collect());
        assert_eq!(s.seen(), vec!["b"]);
    }
}
