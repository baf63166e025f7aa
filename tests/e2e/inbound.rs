//! Inbound without loss, against real Dovecot and a real SQLite store: after-fetch actions,
//! other clients' flags, UIDVALIDITY changes, a crash between storing and acknowledging,
//! messages that are special (unparsable, oversized, odd charset, no Message-ID) and the
//! classification of robots' mail.

use std::collections::BTreeSet;

use mailplug_host::config::{AfterFetch, FirstSync, TenantConfig};
use mailplug_host::db::Database;
use mailplug_host::driver::MessageSink;
use mailplug_host::engine::FetchedMessage;
use mailplug_host::ops;
use mailplug_host::HostError;
use mailplug_tests::{box_tenant as config, fetch_into as fetch, plugin, rig, sample_message, test_box};
use mailplug_tests::TempPath;

fn db_path(name: &str) -> TempPath {
    TempPath::file(&format!("inbound-{name}"), "mailplug.sqlite3")
}

fn stored_ids(db: &Database, cfg: &TenantConfig) -> Vec<String> {
    db.messages(&cfg.tenant, "inbox").expect("messages").into_iter().map(|m| m.message_id).collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn put_three(user: &str, tag: &str) -> Vec<String> {
    let r = rig();
    let ids: Vec<String> = (1..=3).map(|i| format!("{tag}-{i}@test")).collect();
    for id in &ids {
        r.put(user, "INBOX", &sample_message(id, &format!("about {id}")));
    }
    ids
}

/// Runs one after-fetch action over three messages, twice, and returns the INBOX listing.
async fn imap_action(boxn: u32, after: AfterFetch) -> (Vec<(u32, String, String)>, Database, TenantConfig, Vec<String>) {
    let r = rig();
    let (user, pass) = test_box(boxn);
    r.reset_mailbox(&user);
    let ids = put_three(&user, &format!("imap-{boxn}"));
    let cfg = config("imap", &user, &pass, after);
    let tmp = db_path(&format!("imap-action-{boxn}"));
    let db = Database::open(&tmp).expect("db");
    let s = fetch(&cfg, &db).await.expect("first fetch");
    assert_eq!(s.delivered, 3);
    // A second run finds nothing new and stores nothing twice.
    let s = fetch(&cfg, &db).await.expect("second fetch");
    assert_eq!(s.delivered, 0, "nothing new on the second run");
    let stored = stored_ids(&db, &cfg);
    assert_eq!(stored.len(), 3, "each message stored once: {stored:?}");
    assert_eq!(stored.iter().cloned().collect::<BTreeSet<_>>(), ids.iter().cloned().collect());
    (r.listing(&user, "INBOX"), db, cfg, ids)
}

#[tokio::test]
async fn imap_keep_leaves_messages_unseen() {
    let (inbox, ..) = imap_action(1, AfterFetch::Keep).await;
    assert_eq!(inbox.len(), 3);
    assert!(inbox.iter().all(|(_, flags, _)| !flags.contains("\\Seen")), "{inbox:?}");
}

#[tokio::test]
async fn imap_mark_seen_sets_seen_only() {
    let (inbox, ..) = imap_action(2, AfterFetch::MarkSeen).await;
    assert_eq!(inbox.len(), 3);
    assert!(inbox.iter().all(|(_, flags, _)| flags.contains("\\Seen") && !flags.contains("\\Deleted")), "{inbox:?}");
}

#[tokio::test]
async fn imap_delete_expunges_exactly_the_fetched_messages() {
    let (inbox, ..) = imap_action(3, AfterFetch::Delete).await;
    assert!(inbox.is_empty(), "{inbox:?}");
}

#[tokio::test]
async fn imap_move_creates_the_folder_and_moves() {
    let (inbox, _db, _cfg, ids) = imap_action(4, AfterFetch::MoveTo("Processed/Tickets".into())).await;
    assert!(inbox.is_empty(), "{inbox:?}");
    let (user, _) = test_box(4);
    // The config says "Processed/Tickets"; the rig's Dovecot separates levels with ".".
    let moved: BTreeSet<String> = rig().listing(&user, "Processed.Tickets").into_iter().map(|m| m.2).collect();
    assert_eq!(moved, ids.into_iter().collect());
}

#[tokio::test]
async fn pop3_keep_and_delete() {
    let r = rig();
    for (boxn, after) in [(5, AfterFetch::Keep), (6, AfterFetch::Delete)] {
        let (user, pass) = test_box(boxn);
        r.reset_mailbox(&user);
        let ids = put_three(&user, &format!("pop3-{boxn}"));
        let cfg = config("pop3", &user, &pass, after.clone());
        let tmp = db_path(&format!("pop3-{boxn}"));
        let db = Database::open(&tmp).expect("db");
        assert_eq!(fetch(&cfg, &db).await.expect("fetch").delivered, 3);
        assert_eq!(fetch(&cfg, &db).await.expect("fetch again").delivered, 0);
        let stored: BTreeSet<String> = stored_ids(&db, &cfg).into_iter().collect();
        assert_eq!(stored, ids.iter().cloned().collect::<BTreeSet<_>>());
        assert_eq!(db.messages(&cfg.tenant, "inbox").expect("messages").len(), 3);
        let left = r.listing(&user, "INBOX").len();
        match after {
            AfterFetch::Delete => assert_eq!(left, 0, "POP3 delete removes what was stored"),
            _ => assert_eq!(left, 3, "POP3 keep leaves the mailbox as it was"),
        }
    }
}

/// Stores durably, then "crashes" before the guest hears `stored`.
struct CrashAfterStore<'a>(mailplug_host::db::DbSink<'a>);

impl MessageSink for CrashAfterStore<'_> {
    fn deliver(&mut self, m: FetchedMessage) -> Result<(), HostError> {
        self.0.deliver(m)
    }
    fn commit(&mut self) -> Result<(), HostError> {
        self.0.commit()?;
        Err(HostError::Storage("simulated host crash after the commit".into()))
    }
}

#[tokio::test]
async fn crash_between_store_and_acknowledge_deletes_nothing_and_deduplicates() {
    let r = rig();
    for (boxn, proto) in [(7, "imap"), (8, "pop3")] {
        let (user, pass) = test_box(boxn);
        r.reset_mailbox(&user);
        let ids = put_three(&user, &format!("crash-{proto}"));
        let cfg = config(proto, &user, &pass, AfterFetch::Delete);
        let tmp = db_path(&format!("crash-{proto}"));
        let db = Database::open(&tmp).expect("db");
        {
            let mut sink = CrashAfterStore(db.sink(&cfg.tenant, "inbox"));
            let e = ops::fetch(plugin(), &cfg, "inbox", &mut sink, &db).await.expect_err("the host crashed");
            assert!(e.to_string().contains("simulated host crash"), "{e}");
        }
        assert!(!stored_ids(&db, &cfg).is_empty(), "{proto}: something was stored before the crash");
        assert_eq!(r.listing(&user, "INBOX").len(), 3, "{proto}: nothing deleted without the acknowledgement");
        fetch(&cfg, &db).await.expect("clean run");
        let stored = stored_ids(&db, &cfg);
        assert_eq!(stored.len(), 3, "{proto}: every message once: {stored:?}");
        assert_eq!(stored.into_iter().collect::<BTreeSet<_>>(), ids.into_iter().collect());
        assert!(r.listing(&user, "INBOX").is_empty(), "{proto}: deleted after the clean run");
    }
}

#[tokio::test]
async fn other_clients_flags_do_not_hide_mail_and_their_deleted_mail_survives() {
    let r = rig();
    let (user, pass) = test_box(9);
    r.reset_mailbox(&user);
    // Another client already flagged this one \Deleted (but did not expunge).
    r.put(&user, "INBOX", &sample_message("theirs@test", "their deleted mail"));
    let theirs_uid = r.listing(&user, "INBOX")[0].0;
    r.add_flags(&user, "INBOX", theirs_uid, "\\Deleted");
    let mut cfg = config("imap", &user, &pass, AfterFetch::Delete);
    cfg.mailboxes[0].first_sync = FirstSync::NewOnly;
    let tmp = db_path("flags");
    let db = Database::open(&tmp).expect("db");
    assert_eq!(fetch(&cfg, &db).await.expect("baseline").delivered, 0, "new-only: old mail is not imported");

    // New mail that another client reads and flags before we fetch.
    r.put(&user, "INBOX", &sample_message("seen@test", "already read"));
    r.put(&user, "INBOX", &sample_message("flagged@test", "flagged deleted by someone"));
    r.put(&user, "INBOX", &sample_message("plain@test", "plain"));
    for (uid, _, mid) in r.listing(&user, "INBOX") {
        match mid.as_str() {
            "seen@test" => r.add_flags(&user, "INBOX", uid, "\\Seen"),
            "flagged@test" => r.add_flags(&user, "INBOX", uid, "\\Deleted"),
            _ => {}
        }
    }
    assert_eq!(fetch(&cfg, &db).await.expect("fetch").delivered, 3);
    let stored: BTreeSet<String> = stored_ids(&db, &cfg).into_iter().collect();
    assert_eq!(stored, set(&["seen@test", "flagged@test", "plain@test"]));
    let left = r.listing(&user, "INBOX");
    assert_eq!(left.len(), 1, "only the other client's old \\Deleted mail remains: {left:?}");
    assert_eq!(left[0].2, "theirs@test");
    assert!(left[0].1.contains("\\Deleted"));
}

#[tokio::test]
async fn uidvalidity_change_resyncs_without_duplicates() {
    let r = rig();
    let (user, pass) = test_box(10);
    r.reset_mailbox(&user);
    for i in 1..=3 {
        r.put(&user, "Work", &sample_message(&format!("work-{i}@test"), "work"));
    }
    let mut cfg = config("imap", &user, &pass, AfterFetch::Keep);
    cfg.mailboxes[0].folders = vec!["Work".into()];
    let tmp = db_path("uidvalidity");
    let db = Database::open(&tmp).expect("db");
    assert_eq!(fetch(&cfg, &db).await.expect("first").delivered, 3);

    // The folder is recreated (new UIDVALIDITY) with the same mail plus one new message.
    r.doveadm(&["mailbox", "delete", "-u", &user, "-r", "Work"]);
    for i in 1..=4 {
        r.put(&user, "Work", &sample_message(&format!("work-{i}@test"), "work"));
    }
    fetch(&cfg, &db).await.expect("after the UIDVALIDITY change");
    let stored = stored_ids(&db, &cfg);
    assert_eq!(stored.len(), 4, "re-sync adds only the new message: {stored:?}");
    assert_eq!(fetch(&cfg, &db).await.expect("third").delivered, 0);
}

const UNKNOWN_CHARSET: &[u8] = b"From: a@example.test\r\nTo: b@example.test\r\nSubject: odd charset\r\nMessage-ID: <charset@test>\r\n\
MIME-Version: 1.0\r\nContent-Type: text/plain; charset=x-unknown-42\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGr\xfc\xdfe \xff\xfe text\r\n";

const NO_MESSAGE_ID: &[u8] = b"From: a@example.test\r\nTo: b@example.test\r\nSubject: no id\r\n\r\nbody without id\r\n";

const GARBAGE: &[u8] = b"\x00\x01\x02\xff\xfe not a message at all \x00\x00\r\n\x80\x81";

#[tokio::test]
async fn special_messages_never_block_the_mailbox() {
    let r = rig();
    let (user, pass) = test_box(11);
    r.reset_mailbox(&user);
    r.put(&user, "INBOX", &sample_message("before@test", "normal before"));
    r.put(&user, "INBOX", GARBAGE);
    let mut big = sample_message("big@test", "oversized");
    big.extend(std::iter::repeat_n(b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n", 2000).flatten());
    r.put(&user, "INBOX", &big);
    r.put(&user, "INBOX", UNKNOWN_CHARSET);
    r.put(&user, "INBOX", NO_MESSAGE_ID);
    r.put(&user, "INBOX", &sample_message("after@test", "normal after"));

    let mut cfg = config("imap", &user, &pass, AfterFetch::Keep);
    cfg.limits.max_message_bytes = 64 * 1024;
    let tmp = db_path("special");
    let db = Database::open(&tmp).expect("db");
    let s = fetch(&cfg, &db).await.expect("fetch");
    assert_eq!(s.delivered, 5, "everything but the oversized message");
    assert_eq!(s.skipped, 1);
    let msgs = db.messages(&cfg.tenant, "inbox").expect("messages");
    let by_subject = |sub: &str| msgs.iter().find(|m| m.subject.as_deref() == Some(sub)).cloned();
    assert!(by_subject("normal before").is_some() && by_subject("normal after").is_some());
    let charset = by_subject("odd charset").expect("unknown charset delivered");
    assert!(charset.parse_error.is_none());
    let noid = by_subject("no id").expect("no Message-ID delivered");
    assert!(noid.message_id.ends_with("@mailplug.invalid"), "synthetic id: {}", noid.message_id);
    let skipped = db.skipped(&cfg.tenant, "inbox").expect("skipped");
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0].1 > 64 * 1024 && skipped[0].2.contains("max_message_bytes"), "{skipped:?}");
    assert!(msgs.iter().all(|m| m.message_id != "big@test"));
    // The garbage is stored raw and flagged as unparseable, never dropped.
    let garbage = msgs.iter().find(|m| m.raw.windows(8).any(|w| w == b"not a me")).expect("garbage stored raw");
    assert!(garbage.parse_error.is_some(), "flagged as unparseable");

    // Reported once: a second run reports nothing again and delivers nothing.
    let s = fetch(&cfg, &db).await.expect("second fetch");
    assert_eq!((s.delivered, s.skipped), (0, 0));
    // The synthetic id is stable: the same bytes do not become a second message.
    assert_eq!(db.messages(&cfg.tenant, "inbox").expect("messages").len(), 5);
}

#[tokio::test]
async fn robots_are_classified() {
    let r = rig();
    let (user, pass) = test_box(12);
    r.reset_mailbox(&user);
    let samples: [(&str, &[u8]); 4] = [
        ("normal", b"From: Person <p@example.test>\r\nTo: s@example.test\r\nSubject: help\r\nMessage-ID: <n@test>\r\n\r\nPlease help.\r\n"),
        ("auto-reply", b"From: Person <p@example.test>\r\nTo: s@example.test\r\nSubject: Out of office\r\nAuto-Submitted: auto-replied\r\nMessage-ID: <a@test>\r\n\r\nI am away.\r\n"),
        ("bulk", b"From: News <news@example.test>\r\nTo: s@example.test\r\nSubject: Weekly\r\nPrecedence: bulk\r\nList-Id: <news.example.test>\r\nMessage-ID: <b@test>\r\n\r\nNews.\r\n"),
        ("bounce", b"From: Mail Delivery System <MAILER-DAEMON@example.test>\r\nTo: s@example.test\r\nSubject: Undelivered Mail Returned to Sender\r\nMessage-ID: <d@test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nFailed.\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; example.test\r\n\r\nFinal-Recipient: rfc822; x@example.test\r\nAction: failed\r\nStatus: 5.1.1\r\n--B--\r\n"),
    ];
    for (_, raw) in samples {
        r.put(&user, "INBOX", raw);
    }
    let cfg = config("imap", &user, &pass, AfterFetch::Keep);
    let tmp = db_path("classify");
    let db = Database::open(&tmp).expect("db");
    assert_eq!(fetch(&cfg, &db).await.expect("fetch").delivered, 4);
    let msgs = db.messages(&cfg.tenant, "inbox").expect("messages");
    for (want, raw) in samples {
        let m = msgs.iter().find(|m| m.raw.ends_with(raw)).expect("stored");
        assert_eq!(m.classification, want, "{}", String::from_utf8_lossy(raw));
    }
}
