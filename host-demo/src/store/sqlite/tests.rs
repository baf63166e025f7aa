//! The store's own tests: deduplication, references, reporting, migration.

use super::*;
use crate::driver::MessageSink;
use crate::engine::{Classification, FetchedMessage, ParsedMessage};
use std::time::Duration;

/// A database path in a fresh temporary directory, removed with the database's companions
/// (`-wal`, `-shm`, segments) when the directory's guard drops: at the test's end and when it
/// panics (keep the guard in a variable, declared before the database).
pub(super) fn temp_db(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new().prefix(&format!("mailplug-dbtest-{name}-")).tempdir().unwrap();
    let path = dir.path().join("db.sqlite3");
    (dir, path)
}

fn message(server_id: &str, message_id: &str, body: &str) -> FetchedMessage {
    let raw = format!("Message-ID: <{message_id}>\r\nSubject: s\r\n\r\n{body}\r\n").into_bytes();
    FetchedMessage {
        id: server_id.into(),
        folder: "INBOX".into(),
        raw,
        parsed: Ok(ParsedMessage {
            message_id: message_id.into(),
            message_id_synthetic: false,
            in_reply_to: vec![],
            references: vec![],
            from: vec![],
            reply_to: vec![],
            to: vec![],
            cc: vec![],
            subject: Some("s".into()),
            date_ms: None,
            text_body: Some(body.into()),
            html_body: None,
            attachments: vec![],
            classification: Classification::Normal,
            warnings: vec![],
        }),
    }
}

fn deliver(db: &Database, source: &str, msgs: Vec<FetchedMessage>) -> Vec<Delivered> {
    let mut sink = db.sink("t", "m");
    sink.source(source);
    for m in msgs {
        sink.deliver(m).unwrap();
    }
    sink.commit().unwrap();
    sink.results.clone()
}

#[test]
fn a_forged_message_id_never_hides_the_genuine_message() {
    let (_tmp, path) = temp_db("forged");
    let db = Database::open(&path).unwrap();
    let r = deliver(&db, "imap:h:993:u", vec![message("imap:INBOX:1:1", "x@y", "forged"), message("imap:INBOX:1:2", "x@y", "genuine")]);
    assert!(r[0].new && !r[0].collision);
    assert!(r[1].new && r[1].collision, "the genuine message is stored as its own row: {r:?}");
    // The same messages again (another folder / a re-fetch): duplicates of their own rows.
    let again = deliver(&db, "imap:h:993:u", vec![message("imap:INBOX:1:2", "x@y", "genuine"), message("imap:Other:5:9", "x@y", "forged")]);
    assert_eq!((again[0].new, again[0].row), (false, r[1].row));
    assert_eq!((again[1].new, again[1].row), (false, r[0].row));
    // Another server reusing a server id is not a duplicate by that id.
    let other = deliver(&db, "pop3:other:995:u", vec![message("imap:INBOX:1:1", "z@y", "other server")]);
    assert!(other[0].new);
    assert_eq!(db.messages("t", "m").unwrap().len(), 3);
}

#[test]
fn references_must_say_what_they_name() {
    let (_tmp, path) = temp_db("find");
    let db = Database::open(&path).unwrap();
    let r = deliver(&db, "imap:h:993:u", vec![message("imap:INBOX:1:1", "17", "a"), message("imap:INBOX:1:2", "m@h", "b")]);
    let by_db = format!("db:{}", r[1].row);
    assert_eq!(db.find("t", &by_db).unwrap().1, message("", "m@h", "b").raw);
    assert_eq!(db.find("t", "mid:<17>").unwrap().1, message("", "17", "a").raw);
    assert_eq!(db.find("t", "<m@h>").unwrap().1, message("", "m@h", "b").raw);
    assert_eq!(db.find("t", "imap:INBOX:1:2").unwrap().1, message("", "m@h", "b").raw);
    for bare in ["17", "m@h", &r[1].row.to_string()] {
        let e = db.find("t", bare).unwrap_err().to_string();
        assert!(e.contains("db:<database id>") && e.contains("mid:"), "{bare}: {e}");
    }
    // A reused Message-ID is ambiguous: refused with both candidates.
    deliver(&db, "imap:h:993:u", vec![message("imap:INBOX:1:3", "m@h", "forged")]);
    let e = db.find("t", "mid:m@h").unwrap_err().to_string();
    assert!(e.contains("matches 2") && e.contains(&format!("db:{}", r[1].row)), "{e}");
    assert!(db.find("t", "db:999").is_err());
}

#[test]
fn unreported_rows_are_reported_once() {
    let (_tmp, path) = temp_db("reported");
    let db = Database::open(&path).unwrap();
    let r = deliver(&db, "pop3:h:995:u", vec![message("pop3:a", "a@h", "a"), message("pop3:b", "b@h", "b")]);
    assert_eq!(db.unreported("t", "m", false).unwrap().len(), 2);
    db.mark_reported(&[r[0].row]).unwrap();
    let left = db.unreported("t", "m", true).unwrap();
    assert_eq!(left.iter().map(|u| u.server_id.as_str()).collect::<Vec<_>>(), ["pop3:b"]);
    let again = deliver(&db, "pop3:h:995:u", vec![message("pop3:a", "a@h", "a"), message("pop3:b", "b@h", "b")]);
    assert!(again[0].reported && !again[1].reported);
}

/// A database written by the previous version (UNIQUE Message-ID, no binding) opens, keeps
/// its rows and attachments, counts them as reported, and then stores a colliding message.
#[test]
fn databases_of_the_previous_version_are_migrated() {
    let (_tmp, path) = temp_db("migrate");
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            r#"CREATE TABLE messages (id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, mailbox TEXT NOT NULL, server_id TEXT NOT NULL,
                folder TEXT NOT NULL, message_id TEXT NOT NULL, message_id_synthetic INTEGER NOT NULL, subject TEXT, from_addr TEXT,
                date_ms INTEGER, classification TEXT NOT NULL, parse_error TEXT, text_body TEXT, html_body TEXT, size INTEGER NOT NULL,
                raw BLOB NOT NULL, stored_at_ms INTEGER NOT NULL, UNIQUE (tenant, mailbox, server_id), UNIQUE (tenant, mailbox, message_id));
            CREATE TABLE attachments (message INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE, name TEXT,
                media_type TEXT NOT NULL, size INTEGER NOT NULL, content_id TEXT, bytes BLOB NOT NULL);
            CREATE TABLE sync_state (tenant TEXT NOT NULL, mailbox TEXT NOT NULL, state BLOB NOT NULL, PRIMARY KEY (tenant, mailbox));
            INSERT INTO sync_state VALUES ('t', 'm', X'7B7D');"#,
        )
        .unwrap();
        let old = message("imap:INBOX:1:1", "x@y", "genuine");
        c.execute(
            "INSERT INTO messages (tenant, mailbox, server_id, folder, message_id, message_id_synthetic, classification, size, raw, stored_at_ms)
             VALUES ('t', 'm', 'imap:INBOX:1:1', 'INBOX', 'x@y', 0, 'normal', 1, ?1, 0)",
            params![old.raw],
        )
        .unwrap();
        c.execute("INSERT INTO attachments VALUES (1, 'a.pdf', 'application/pdf', 3, NULL, X'')", []).unwrap();
    }
    let db = Database::open(&path).unwrap();
    let rows = db.messages("t", "m").unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].reported && rows[0].attachments == 1);
    let saved = db.load("t", "m").unwrap().unwrap();
    assert_eq!((saved.state.as_slice(), saved.binding), (&b"{}"[..], None));
    // The same message again is a duplicate (Message-ID and content); another one with its
    // Message-ID is stored, which the old constraint forbade.
    let r = deliver(&db, "imap:h:993:u", vec![message("imap:INBOX:1:1", "x@y", "genuine"), message("imap:INBOX:1:2", "x@y", "other")]);
    assert!(!r[0].new && r[0].reported);
    assert!(r[1].new && r[1].collision);
    drop(db);
    // Opening again changes nothing.
    assert_eq!(Database::open(&path).unwrap().messages("t", "m").unwrap().len(), 2);
}

/// Helper D (issue 13): each newly stored message writes one `message.stored` event in the
/// sink's transaction; a duplicate writes none.
#[test]
fn each_stored_message_writes_one_event_and_a_duplicate_none() {
    use crate::store::events::{Events, MESSAGE_STORED};
    let (_tmp, path) = temp_db("events");
    let db = Database::open(&path).unwrap();
    let r = deliver(&db, "imap:h:993:u", vec![message("imap:INBOX:1:1", "a@h", "a"), message("imap:INBOX:1:2", "b@h", "b")]);
    deliver(&db, "imap:h:993:u", vec![message("imap:INBOX:1:1", "a@h", "a")]);
    let events = db.list_after("t", None, 10).unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    for (e, d) in events.iter().zip(&r) {
        assert_eq!(e.kind, MESSAGE_STORED);
        assert_eq!(e.payload["message"], format!("db:{}", d.row));
        assert_eq!(e.payload["mailbox"], "m");
        assert_eq!(e.payload["server_id"], d.id);
    }
}

/// New messages' bytes are in a private segment file, not in the row, and read back exactly;
/// bytes that changed on disk are an error naming the folder, never other bytes.
#[test]
fn raw_bytes_are_kept_in_private_segments_and_checked_when_read() {
    use std::os::unix::fs::PermissionsExt;
    let (_tmp, path) = temp_db("segments");
    let r = deliver(&Database::open(&path).unwrap(), "imap:h:993:u", vec![message("imap:INBOX:1:1", "a@h", "first"), message("imap:INBOX:1:2", "b@h", "second")]);
    let db = Database::open(&path).unwrap();
    let rows = db.messages("t", "m").unwrap();
    assert_eq!(rows[0].raw, message("", "a@h", "first").raw);
    assert_eq!(rows[1].raw, message("", "b@h", "second").raw);
    let inline: Vec<u8> = db.conn.query_row("SELECT raw FROM messages WHERE id = ?1", [r[0].row], |x| x.get(0)).unwrap();
    assert!(inline.is_empty(), "the row does not hold the bytes a second time");
    let dir = raw_folder(&path);
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    let segs: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(segs.len(), 1, "{segs:?}");
    assert_eq!(std::fs::metadata(&segs[0]).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(db.find("t", &format!("db:{}", r[1].row)).unwrap().1, message("", "b@h", "second").raw);
    // One byte of the second message changed: its read fails and says where; the first still reads.
    let mut bytes = std::fs::read(&segs[0]).unwrap();
    let second = message("", "b@h", "second").raw;
    let at = bytes.windows(second.len()).position(|w| w == second.as_slice()).unwrap();
    bytes[at + second.len() - 3] ^= 1;
    std::fs::write(&segs[0], &bytes).unwrap();
    let e = db.find("t", &format!("db:{}", r[1].row)).unwrap_err().to_string();
    assert!(e.contains(&dir.display().to_string()) && e.contains("differ"), "{e}");
    assert_eq!(db.find("t", &format!("db:{}", r[0].row)).unwrap().1, message("", "a@h", "first").raw);
    std::fs::remove_dir_all(&dir).unwrap();
    let e = db.messages("t", "m").unwrap_err().to_string();
    assert!(e.contains("belongs to the database"), "{e}");
}

/// Waits (at most 5 s) until some connection holds the database's write lock.
fn wait_for_write_lock(path: &Path) {
    let end = std::time::Instant::now() + Duration::from_secs(5);
    let probe = Connection::open(path).unwrap();
    probe.busy_timeout(Duration::ZERO).unwrap();
    while probe.execute_batch("BEGIN IMMEDIATE").is_ok() {
        probe.execute_batch("ROLLBACK").unwrap();
        assert!(std::time::Instant::now() < end, "no sink took the write lock");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Two sinks of one database (two mailboxes of one tenant) deliver interleaved and commit
/// from one thread, and the database's other writes (a sync state) happen while a batch is
/// open: none waits for the other's lock (with a writer per sink, the first commit waited for
/// SQLite's busy timeout, 10 s, and failed: the stall of `mailplug serve`). Their bytes go to
/// the writer's one segment; a later sink appends to it.
#[test]
fn concurrent_sinks_interleave_without_waiting_for_each_other() {
    let (_tmp, path) = temp_db("two-sinks");
    let db = Database::open(&path).unwrap();
    let mut a = db.sink("t", "m");
    let mut b = db.sink("t", "n");
    a.source("imap:h:993:u");
    b.source("imap:h:993:v");
    let started = std::time::Instant::now();
    for round in 0..2 {
        // `b` opens a batch and holds the lock before `a` delivers and commits.
        b.deliver(message(&format!("imap:INBOX:1:{}", round * 10), &format!("b{}@h", round * 10), &"b".repeat(1000 + round * 10))).unwrap();
        wait_for_write_lock(&path);
        for i in round * 10..round * 10 + 10 {
            a.deliver(message(&format!("imap:INBOX:1:{i}"), &format!("a{i}@h"), &"a".repeat(1000 + i))).unwrap();
            if i > round * 10 {
                b.deliver(message(&format!("imap:INBOX:1:{i}"), &format!("b{i}@h"), &"b".repeat(1000 + i))).unwrap();
            }
        }
        let t = std::time::Instant::now();
        a.commit().unwrap();
        assert!(t.elapsed() < Duration::from_secs(3), "a's commit waited {:?}", t.elapsed());
        assert_eq!(a.results.len(), 10);
        // A batch of `b` is open again; the sync state is saved meanwhile.
        b.deliver(message(&format!("imap:INBOX:1:{}", 50 + round), &format!("b{}@h", 50 + round), "late")).unwrap();
        wait_for_write_lock(&path);
        let t = std::time::Instant::now();
        db.save("t", "m", "imap:h:993:u", b"state").unwrap();
        assert!(t.elapsed() < Duration::from_secs(3), "the sync-state save waited {:?}", t.elapsed());
        b.commit().unwrap();
        assert_eq!(b.results.len(), 11, "b's own commit reports all its deliveries, also those a's commit stored");
    }
    assert!(started.elapsed() < Duration::from_secs(8), "took {:?}", started.elapsed());
    drop((a, b));
    let count = || std::fs::read_dir(raw_folder(&path)).unwrap().count();
    assert_eq!(count(), 1, "one writer, one segment");
    deliver(&db, "imap:h:993:u", vec![message("imap:INBOX:1:99", "c@h", "later")]);
    assert_eq!(count(), 1, "the later sink reuses the free segment");
    for (mb, ch) in [("m", 'a'), ("n", 'b')] {
        let rows = db.messages("t", mb).unwrap();
        let mut ids: Vec<String> = rows.iter().filter(|r| r.message_id.starts_with(ch)).map(|r| r.message_id.clone()).collect();
        ids.sort();
        assert_eq!(ids.len(), if ch == 'a' { 20 } else { 22 }, "{mb}: {ids:?}");
        for r in rows.iter().filter(|r| r.raw.len() > 1000) {
            let i: usize = r.message_id[1..r.message_id.find('@').unwrap()].parse().unwrap();
            assert_eq!(r.raw, message("", &r.message_id, &ch.to_string().repeat(1000 + i)).raw);
        }
    }
    assert_eq!(db.load("t", "m").unwrap().unwrap().state, b"state");
}

/// A database of version 2 (bytes in `raw`) keeps its rows readable; new rows go to segments.
#[test]
fn databases_of_version_2_keep_their_inline_bytes() {
    let (_tmp, path) = temp_db("v2");
    let old = message("imap:INBOX:1:1", "old@h", "old");
    {
        let c = Connection::open(&path).unwrap();
        let v2 = SCHEMA.replace("    raw_segment     INTEGER,\n    raw_offset      INTEGER,\n", "");
        assert!(!v2.contains("raw_segment     INTEGER"));
        c.execute_batch(&v2).unwrap();
        c.execute_batch("PRAGMA user_version = 2").unwrap();
        c.execute(
            "INSERT INTO messages (tenant, mailbox, source, server_id, folder, message_id, message_id_synthetic, content_hash,
                classification, size, raw, stored_at_ms, reported) VALUES ('t', 'm', 'imap:h:993:u', 'imap:INBOX:1:1', 'INBOX',
                'old@h', 0, ?1, 'normal', ?2, ?3, 0, 1)",
            params![content_hash(&old.raw), old.raw.len() as i64, old.raw],
        )
        .unwrap();
    }
    let db = Database::open(&path).unwrap();
    let version: i64 = db.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, migrate::SCHEMA_VERSION);
    let r = deliver(&db, "imap:h:993:u", vec![message("imap:INBOX:1:1", "old@h", "old"), message("imap:INBOX:1:2", "new@h", "new")]);
    assert!(!r[0].new && r[1].new);
    let rows = db.messages("t", "m").unwrap();
    assert_eq!(rows[0].raw, old.raw);
    assert_eq!(rows[1].raw, message("", "new@h", "new").raw);
}

#[test]
fn the_raw_bytes_by_id_are_the_tenants_only() {
    let (_tmp, path) = temp_db("raw-of");
    let r = deliver(&Database::open(&path).unwrap(), "imap:h:993:u", vec![message("imap:INBOX:1:1", "a@h", "first")]);
    let db = Database::open(&path).unwrap();
    let raw = message("", "a@h", "first").raw;
    assert_eq!(db.message_raw("t", r[0].row).unwrap(), Some(raw.clone()));
    assert_eq!(db.find("t", &format!("db:{}", r[0].row)).unwrap(), ("m".to_string(), raw));
    assert_eq!(db.message_raw("another", r[0].row).unwrap(), None, "another tenant's id reads nothing");
    assert_eq!(db.message_raw("t", r[0].row + 1).unwrap(), None);
}

/// Helper B (session 6): since version 4 a message's text and HTML bodies follow its raw
/// bytes in the segment; the row keeps none of them, the API's detail reads them back checked,
/// and altered body bytes are an error naming the folder, never another body.
#[test]
fn bodies_are_kept_in_the_segment_and_checked_when_read() {
    let (_tmp, path) = temp_db("bodies");
    let mut html = message("imap:INBOX:1:2", "h@h", "plain part");
    if let Ok(p) = &mut html.parsed {
        p.html_body = Some("<p>grüße</p>".into());
    }
    let mut none = message("imap:INBOX:1:3", "n@h", "x");
    if let Ok(p) = &mut none.parsed {
        p.text_body = None;
    }
    let r = deliver(&Database::open(&path).unwrap(), "imap:h:993:u", vec![message("imap:INBOX:1:1", "a@h", "text only"), html, none]);
    let db = Database::open(&path).unwrap();
    let inline: Vec<(Option<String>, Option<String>)> =
        db.conn.prepare("SELECT text_body, html_body FROM messages ORDER BY id").unwrap().query_map([], |x| Ok((x.get(0)?, x.get(1)?))).unwrap().map(Result::unwrap).collect();
    assert!(inline.iter().all(|b| *b == (None, None)), "the rows hold no bodies: {inline:?}");
    let d = |i: usize| db.message_detail("t", r[i].row).unwrap().unwrap();
    assert_eq!((d(0).text_body.as_deref(), d(0).html_body.as_deref()), (Some("text only"), None));
    assert_eq!((d(1).text_body.as_deref(), d(1).html_body.as_deref()), (Some("plain part"), Some("<p>grüße</p>")));
    assert_eq!((d(2).text_body, d(2).html_body), (None, None));
    // The raw bytes still read back exactly, bodies or not after them.
    let rows = db.messages("t", "m").unwrap();
    assert_eq!(rows[1].raw, message("", "h@h", "plain part").raw);
    assert_eq!(rows[2].raw, message("", "n@h", "x").raw);
    // Reporting rewrites only the small rows and changes nothing read back.
    db.mark_reported(&[r[0].row, r[1].row]).unwrap();
    assert_eq!(d(1).html_body.as_deref(), Some("<p>grüße</p>"));
    // One byte of the HTML body altered on disk: the detail fails and says where.
    let seg = std::fs::read_dir(raw_folder(&path)).unwrap().next().unwrap().unwrap().path();
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.windows(4).position(|w| w == b"<p>g").unwrap();
    bytes[at + 1] ^= 1;
    std::fs::write(&seg, &bytes).unwrap();
    let e = db.message_detail("t", r[1].row).unwrap_err().to_string();
    assert!(e.contains(&raw_folder(&path).display().to_string()) && e.contains("differ"), "{e}");
    assert_eq!(d(0).text_body.as_deref(), Some("text only"));
}

/// Helper B (session 6): a database of version 3 (bodies in the row, raw bytes in segments)
/// opens as version 4; its rows read back with their bodies, and new rows keep theirs in the
/// segment.
#[test]
fn databases_of_version_3_keep_their_bodies_in_the_row() {
    let (_tmp, path) = temp_db("v3");
    let old = message("imap:INBOX:1:1", "old@h", "old body");
    {
        let c = Connection::open(&path).unwrap();
        let v3 = SCHEMA
            .replace("    text_len        INTEGER,\n    html_len        INTEGER,\n    body_check      INTEGER,\n", "")
            .replace("    raw_check       INTEGER,\n", "");
        assert!(!v3.contains("body_check      INTEGER") && !v3.contains("raw_check       INTEGER"));
        c.execute_batch(&v3).unwrap();
        c.execute_batch("PRAGMA user_version = 3").unwrap();
        // A version 3 row: raw bytes in segment 1 at offset 0, bodies in the row.
        let dir = raw_folder(&path);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("000001.seg"), &old.raw).unwrap();
        c.execute(
            "INSERT INTO messages (tenant, mailbox, source, server_id, folder, message_id, message_id_synthetic, content_hash,
                classification, size, raw, stored_at_ms, reported, text_body, html_body, raw_segment, raw_offset)
                VALUES ('t', 'm', 'imap:h:993:u', 'imap:INBOX:1:1', 'INBOX', 'old@h', 0, ?1, 'normal', ?2, X'', 0, 1,
                'old body', '<b>old</b>', 1, 0)",
            params![content_hash(&old.raw), old.raw.len() as i64],
        )
        .unwrap();
    }
    let db = Database::open(&path).unwrap();
    let version: i64 = db.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, 4);
    let old_row = db.messages("t", "m").unwrap()[0].row;
    let detail = db.message_detail("t", old_row).unwrap().unwrap();
    assert_eq!((detail.text_body.as_deref(), detail.html_body.as_deref()), (Some("old body"), Some("<b>old</b>")));
    let r = deliver(&db, "imap:h:993:u", vec![message("imap:INBOX:1:1", "old@h", "old body"), message("imap:INBOX:1:2", "new@h", "new body")]);
    assert!(!r[0].new && r[1].new);
    assert_eq!(db.message_detail("t", r[1].row).unwrap().unwrap().text_body.as_deref(), Some("new body"));
    let rows = db.messages("t", "m").unwrap();
    assert_eq!((rows[0].raw.as_slice(), rows[1].raw.as_slice()), (old.raw.as_slice(), message("", "new@h", "new body").raw.as_slice()));
    drop(db);
    assert_eq!(Database::open(&path).unwrap().messages("t", "m").unwrap().len(), 2);
}

/// Helper B (session 6): since version 4 the SHA-256 that tells a duplicate from a collision
/// is only computed when a stored row has the same Message-ID; it is then filled in for that
/// row, and the bytes in segments are checked with their CRC-32 instead.
#[test]
fn content_hashes_are_computed_when_a_message_id_repeats() {
    let (_tmp, path) = temp_db("lazy-hash");
    let db = Database::open(&path).unwrap();
    let hashes = || -> Vec<Option<String>> {
        db.conn.prepare("SELECT content_hash FROM messages ORDER BY id").unwrap().query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    let r = deliver(&db, "imap:h:993:u", vec![message("imap:INBOX:1:1", "a@h", "one"), message("imap:INBOX:1:2", "b@h", "two")]);
    assert_eq!(hashes(), vec![None, None], "no row shares a Message-ID: no SHA-256 yet");
    // The same bytes from another folder: a duplicate, found by computing the stored row's hash.
    let again = deliver(&db, "imap:h:993:u", vec![message("imap:Other:7:1", "a@h", "one")]);
    assert_eq!((again[0].new, again[0].row), (false, r[0].row));
    let one = content_hash(&message("", "a@h", "one").raw);
    assert_eq!(hashes(), vec![Some(one.clone()), None]);
    // Other bytes under that Message-ID: stored as a collision, with its own hash.
    let other = deliver(&db, "imap:h:993:u", vec![message("imap:Other:7:2", "a@h", "forged")]);
    assert!(other[0].new && other[0].collision);
    assert_eq!(hashes(), vec![Some(one), None, Some(content_hash(&message("", "a@h", "forged").raw))]);
    // A stored row whose bytes are gone is never taken for a duplicate: the new one is kept.
    let seg = std::fs::read_dir(raw_folder(&db.path)).unwrap().next().unwrap().unwrap().path();
    let lost = message("imap:Other:7:3", "b@h", "two");
    std::fs::write(&seg, b"").unwrap();
    let kept = deliver(&db, "imap:h:993:u", vec![lost]);
    assert!(kept[0].new && kept[0].collision, "{kept:?}");
}

/// The same message twice in one batch (two folders): the second is a duplicate of the first,
/// whose bytes are still gathered in the writer's buffer when the second is compared.
#[test]
fn a_message_repeated_in_one_batch_is_a_duplicate() {
    let (_tmp, path) = temp_db("batch-dup");
    let db = Database::open(&path).unwrap();
    let r = deliver(&db, "imap:h:993:u", vec![message("imap:INBOX:1:1", "a@h", "one"), message("imap:Other:7:1", "a@h", "one")]);
    assert!(r[0].new && !r[0].collision, "{r:?}");
    assert_eq!((r[1].new, r[1].row, r[1].collision), (false, r[0].row, false), "{r:?}");
    assert_eq!(db.messages("t", "m").unwrap().len(), 1);
}

/// A write of gathered segment bytes that fails (here: the segment is /dev/full) loses
/// appends that were already answered, so no commit that would refer to them is made, at the
/// sink's commit or at its close, and the next transaction stores normally.
#[test]
fn a_failed_segment_write_fails_the_commit_and_stores_nothing_of_it() {
    let (_tmp, path) = temp_db("devfull");
    let db = Database::open(&path).unwrap();
    let dir = segments::folder(&path);
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink("/dev/full", dir.join("000001.seg")).unwrap();
    {
        let mut sink = db.sink("t", "m");
        sink.source("imap:h:993:u");
        sink.deliver(message("imap:INBOX:1:1", "a@y", "one")).unwrap();
        sink.deliver(message("imap:INBOX:1:2", "b@y", "two")).unwrap();
        let e = sink.commit().unwrap_err().to_string();
        assert!(e.contains("cannot write") && e.contains("000001.seg"), "{e}");
        assert!(sink.results.is_empty());
    }
    assert!(db.messages("t", "m").unwrap().is_empty(), "rows that refer to lost bytes were committed");
    // The write fails in the middle of a batch (a large message makes the gathered bytes go
    // out): the sink's commit reports it, and the rows delivered before it are not committed
    // when the sink closes either.
    {
        let mut sink = db.sink("t", "m");
        sink.source("imap:h:993:u");
        sink.deliver(message("imap:INBOX:1:1", "a@y", "one")).unwrap();
        sink.deliver(message("imap:INBOX:1:2", "b@y", "two")).unwrap();
        sink.deliver(message("imap:INBOX:1:3", "c@y", &"large ".repeat(200_000))).unwrap();
        let e = sink.commit().unwrap_err().to_string();
        assert!(e.contains("cannot write"), "{e}");
    }
    assert!(db.messages("t", "m").unwrap().is_empty(), "rows that refer to lost bytes were committed at the close");
    std::fs::remove_file(dir.join("000001.seg")).unwrap();
    let r = deliver(&db, "imap:h:993:u", vec![message("imap:INBOX:1:1", "a@y", "one"), message("imap:INBOX:1:2", "b@y", "two")]);
    assert!(r.iter().all(|d| d.new), "{r:?}");
    let rows = db.messages("t", "m").unwrap();
    assert_eq!(rows.len(), 2);
}
