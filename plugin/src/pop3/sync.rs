//! The POP3 sync state, as versioned JSON:
//! `{"v":2,"protocol":"pop3","stored":[...],"skipped":{"<uidl>":<bytes>},"ignored":[...]}`.
//!
//! - `stored`: UIDLs delivered and confirmed stored by the host. Never delivered again; with
//!   after-fetch `Delete` they are deleted while still on the server.
//! - `skipped`: UIDLs too large for the limits, with the largest size seen. Reported once and
//!   left on the server; fetched only once the limits are raised above that size.
//! - `ignored`: UIDLs already in the mailbox at the first sync and not wanted by the first-sync
//!   policy. Never delivered, reported or deleted.
//!
//! All lists only hold UIDLs still on the server, so the state is as small as the mailbox.
//! Version 1 (`{"v":1,"protocol":"pop3","seen":[...]}`) only recorded stored messages, so its
//! `seen` becomes `stored`.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, Stage};

const VERSION: u64 = 2;
const PROTOCOL: &str = "pop3";

/// Read first, so that a future layout is reported as an unknown version rather than as
/// unreadable JSON.
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

#[derive(Deserialize)]
struct StoredV2 {
    #[serde(default)]
    stored: Vec<String>,
    #[serde(default)]
    skipped: BTreeMap<String, u64>,
    #[serde(default)]
    ignored: Vec<String>,
}

#[derive(Serialize)]
struct Encoded<'a> {
    v: u64,
    protocol: &'a str,
    stored: &'a BTreeSet<String>,
    skipped: &'a BTreeMap<String, u64>,
    ignored: &'a BTreeSet<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SyncState {
    stored: BTreeSet<String>,
    skipped: BTreeMap<String, u64>,
    ignored: BTreeSet<String>,
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
        let malformed = "the list of handled messages is malformed";
        match header.v {
            1 => {
                let v1: StoredV1 = serde_json::from_slice(bytes).map_err(|_| unreadable(malformed))?;
                Ok(SyncState { stored: v1.seen.into_iter().collect(), ..SyncState::default() })
            }
            VERSION => {
                let v2: StoredV2 = serde_json::from_slice(bytes).map_err(|_| unreadable(malformed))?;
                // A UIDL in two lists cannot come from us; the list that never deletes wins.
                let ignored: BTreeSet<String> = v2.ignored.into_iter().collect();
                let mut skipped = v2.skipped;
                skipped.retain(|uid, _| !ignored.contains(uid));
                let stored = v2
                    .stored
                    .into_iter()
                    .filter(|uid| !ignored.contains(uid) && !skipped.contains_key(uid))
                    .collect();
                Ok(SyncState { stored, skipped, ignored })
            }
            other => Err(Error::invalid(
                Stage::Connect,
                format!(
                    "the stored POP3 sync state has version {other}, which this plugin does not know (it writes version {VERSION}); upgrade the plugin or reset the sync state"
                ),
            )),
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let encoded = Encoded {
            v: VERSION,
            protocol: PROTOCOL,
            stored: &self.stored,
            skipped: &self.skipped,
            ignored: &self.ignored,
        };
        // Serialising strings into JSON cannot fail; an empty state is the safe fallback anyway.
        serde_json::to_vec(&encoded).unwrap_or_default()
    }

    /// Delivered in an earlier batch and confirmed stored.
    pub(crate) fn is_stored(&self, uid: &str) -> bool {
        self.stored.contains(uid)
    }

    /// Left out by the first-sync policy.
    pub(crate) fn is_ignored(&self, uid: &str) -> bool {
        self.ignored.contains(uid)
    }

    /// The size it had when it was reported as too large, if it was.
    pub(crate) fn skipped_size(&self, uid: &str) -> Option<u64> {
        self.skipped.get(uid).copied()
    }

    /// The host confirmed the message is stored.
    pub(crate) fn record_stored(&mut self, uid: String) {
        self.skipped.remove(&uid);
        self.ignored.remove(&uid);
        self.stored.insert(uid);
    }

    /// Reported as too large; left on the server.
    pub(crate) fn record_skipped(&mut self, uid: String, size: u64) {
        self.stored.remove(&uid);
        self.ignored.remove(&uid);
        let known = self.skipped.entry(uid).or_insert(size);
        *known = (*known).max(size);
    }

    /// Left out by the first-sync policy; left on the server.
    pub(crate) fn record_ignored(&mut self, uid: String) {
        self.stored.remove(&uid);
        self.skipped.remove(&uid);
        self.ignored.insert(uid);
    }

    /// The server confirmed the message is deleted.
    pub(crate) fn forget(&mut self, uid: &str) {
        self.stored.remove(uid);
        self.skipped.remove(uid);
        self.ignored.remove(uid);
    }

    /// Forgets UIDLs no longer on the server, so the state stays as small as the mailbox.
    pub(crate) fn retain_present(&mut self, present: &HashSet<&str>) {
        self.stored.retain(|uid| present.contains(uid.as_str()));
        self.skipped.retain(|uid, _| present.contains(uid.as_str()));
        self.ignored.retain(|uid| present.contains(uid.as_str()));
    }

    #[cfg(test)]
    pub(crate) fn stored(&self) -> Vec<&str> {
        self.stored.iter().map(String::as_str).collect()
    }

    #[cfg(test)]
    pub(crate) fn ignored(&self) -> Vec<&str> {
        self.ignored.iter().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    #[test]
    fn round_trip() {
        let mut s = SyncState::default();
        s.record_stored("b".into());
        s.record_stored("a".into());
        s.record_ignored("c".into());
        s.record_skipped("d".into(), 90);
        s.record_skipped("d".into(), 70);
        let bytes = s.encode();
        assert_eq!(text(&bytes), r#"{"v":2,"protocol":"pop3","stored":["a","b"],"skipped":{"d":90},"ignored":["c"]}"#);
        assert_eq!(SyncState::decode(&bytes).unwrap(), s);
    }

    #[test]
    fn version_1_seen_becomes_stored() {
        let s = SyncState::decode(br#"{"v":1,"protocol":"pop3","seen":["x","y"]}"#).unwrap();
        assert_eq!(s.stored(), vec!["x", "y"]);
        assert!(s.ignored().is_empty());
        assert_eq!(text(&s.encode()), r#"{"v":2,"protocol":"pop3","stored":["x","y"],"skipped":{},"ignored":[]}"#);
        assert_eq!(SyncState::decode(br#"{"v":1,"protocol":"pop3"}"#).unwrap(), SyncState::default());
    }

    #[test]
    fn a_uid_in_two_lists_is_never_deleted() {
        let s = SyncState::decode(
            br#"{"v":2,"protocol":"pop3","stored":["a","b","c"],"skipped":{"c":9,"b":9},"ignored":["b"]}"#,
        )
        .unwrap();
        assert!(s.is_stored("a") && !s.is_stored("b") && !s.is_stored("c"));
        assert!(s.is_ignored("b") && s.skipped_size("b").is_none());
        assert_eq!(s.skipped_size("c"), Some(9));
    }

    #[test]
    fn unknown_version_protocol_or_garbage_is_invalid_input() {
        for bad in [
            &br#"{"v":3,"protocol":"pop3","stored":{"x":1}}"#[..],
            br#"{"v":2,"protocol":"imap","stored":[]}"#,
            br#"{"v":1,"protocol":"pop3","seen":[1]}"#,
            br#"{"v":2,"protocol":"pop3","ignored":"x"}"#,
            br#"{"v":2,"protocol":"pop3","skipped":{"x":-1}}"#,
            b"not json",
        ] {
            let e = SyncState::decode(bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidInput, "{}", String::from_utf8_lossy(bad));
        }
        let e = SyncState::decode(br#"{"v":3,"protocol":"pop3"}"#).unwrap_err();
        assert!(e.message.contains("version 3"), "{}", e.message);
    }

    #[test]
    fn prune_keeps_only_present_in_both_lists() {
        let mut s = SyncState::default();
        for u in ["a", "b", "c"] {
            s.record_stored(u.into());
        }
        for u in ["i", "j"] {
            s.record_ignored(u.into());
        }
        s.record_skipped("k".into(), 1);
        s.record_skipped("l".into(), 1);
        s.retain_present(&["b", "j", "l", "z"].into_iter().collect());
        assert_eq!((s.stored(), s.ignored()), (vec!["b"], vec!["j"]));
        assert_eq!((s.skipped_size("k"), s.skipped_size("l")), (None, Some(1)));
        s.forget("b");
        assert!(s.stored().is_empty());
    }
}
