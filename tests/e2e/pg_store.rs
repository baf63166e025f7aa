//! The PostgreSQL store (host-demo/src/store/postgres) against a real PostgreSQL 15, started by
//! tests/rig/postgres/up.sh (which writes $MAILPLUG_RIG_DIR/postgres.env). Without that file
//! every test here says so and passes without checking anything.
//!
//! The behaviour tests run the same code against the SQLite store and the PostgreSQL store
//! through the shared traits (`MessageSink`, `SyncStateStore`, `Outbox`, `Events`,
//! `MessageQuery`); messages are parsed by the real component. The lease tests race many
//! threads on one PostgreSQL. Every test works in tenants of its own, so the tests share one
//! database and may run in parallel.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use mailplug_host::db::{Database, Delivered};
use mailplug_host::driver::MessageSink;
use mailplug_host::engine::{FetchedMessage, Tokens};
use mailplug_host::error::HostError;
use mailplug_host::store::events::Events;
use mailplug_host::store::outbox::{Envelope, Explanation, NewOutbound, Outbox, OutboxState, RecordedOutcome};
use mailplug_host::store::postgres::lease::{mailbox_resource, queue_resource};
use mailplug_host::store::postgres::{Lease, Leases, PgStore};
use mailplug_host::store::{MessageQuery, Store, SyncStateStore};
use mailplug_host::tokens::SecretKeys;
use mailplug_tests::pg::{acquire_when_free, is_lease_lost, pg_env, unique};
use mailplug_tests::plugin;
use mailplug_tests::{TempDatabase, TempPath};

const KEY: [u8; 32] = [7; 32];

fn pg() -> Option<PgStore> {
    let (url, pw) = pg_env()?;
    Some(PgStore::connect_with_keys(&url, Some(&pw), SecretKeys::new(Some(&KEY), None)).expect("connects to the test PostgreSQL"))
}

/// A SQLite store (with the test's keys) in `tmp`, owned by the caller; declare `tmp` first.
fn sqlite_in(tmp: &mailplug_tests::TempPath) -> Database {
    Database::open_with_keys(tmp, SecretKeys::new(Some(&KEY), None)).expect("sqlite store")
}

fn sqlite(name: &str) -> TempDatabase {
    TempDatabase::open_with(&format!("pgtest-{name}"), |p| Database::open_with_keys(p, SecretKeys::new(Some(&KEY), None)).expect("sqlite store"))
}

/// A message as the component parses it.
async fn message(server_id: &str, message_id: &str, body: &str) -> FetchedMessage {
    let raw = format!("Message-ID: <{message_id}>\r\nFrom: A <a@example.test>\r\nSubject: s {body}\r\n\r\n{body}\r\n").into_bytes();
    let mut instance = plugin().instantiate(64 << 20, 2000).await.expect("instance");
    let parsed = instance.parse_message(&raw).await.expect("parser runs");
    FetchedMessage { id: server_id.into(), folder: "INBOX".into(), raw, parsed }
}

/// Delivers and commits one batch from `source`; what each delivery did.
fn deliver(sink: &mut dyn MessageSink, source: &str, msgs: Vec<FetchedMessage>) -> Result<(), HostError> {
    sink.source(source);
    for m in msgs {
        sink.deliver(m)?;
    }
    sink.commit()
}

/// (new, collision, index of the first delivery with the same row) for each delivery: the
/// same shape whatever the store's row numbers.
fn shape(all: &[Delivered]) -> Vec<(bool, bool, usize)> {
    all.iter().map(|d| (d.new, d.collision, all.iter().position(|e| e.row == d.row).unwrap())).collect()
}

/// The dedup scenario's batches: (source, messages).
async fn dedup_batches() -> Vec<(&'static str, Vec<FetchedMessage>)> {
    vec![
        ("imap:h:993:u", vec![message("imap:INBOX:1:1", "x@y", "forged").await, message("imap:INBOX:1:2", "x@y", "genuine").await]),
        // The same messages again (another folder, a re-fetch): duplicates of their rows.
        ("imap:h:993:u", vec![message("imap:INBOX:1:2", "x@y", "genuine").await, message("imap:Other:5:9", "x@y", "forged").await]),
        // Another server reusing a server id is not a duplicate by that id.
        ("pop3:other:995:u", vec![message("imap:INBOX:1:1", "z@y", "other server").await]),
        // The same bytes from another server: a duplicate by Message-ID and content.
        ("pop3:other:995:u", vec![message("pop3:uidl-7", "x@y", "genuine").await]),
        // Within one batch: the same server id twice, then the same bytes under another id.
        ("imap:h:993:u", vec![message("imap:INBOX:1:8", "d@y", "d").await, message("imap:INBOX:1:8", "d@y", "d").await, message("imap:INBOX:1:9", "d@y", "d").await]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deduplication_is_the_same_in_both_stores() {
    let Some(pg) = pg() else { return };
    let t = unique("dedup");
    let tmp = mailplug_tests::TempPath::file("pgtest-dedup", "mailplug.sqlite3");
    let db = sqlite_in(&tmp);
    let mut sq = Vec::new();
    for (source, msgs) in dedup_batches().await {
        let mut sink = db.sink(&t, "m");
        deliver(&mut sink, source, msgs).expect("SQLite stores");
        sq.extend(sink.results.clone());
    }
    let mut p = Vec::new();
    for (source, msgs) in dedup_batches().await {
        let mut sink = pg.sink(&t, "m");
        deliver(&mut sink, source, msgs).expect("PostgreSQL stores");
        p.extend(sink.results.clone());
    }
    // A duplicate reports its row's collision flag (the genuine row collides with the forged one).
    let want = vec![(true, false, 0), (true, true, 1), (false, true, 1), (false, false, 0), (true, false, 4), (false, true, 1), (true, false, 6), (false, false, 6), (false, false, 6)];
    assert_eq!(shape(&sq), want, "SQLite: {sq:?}");
    assert_eq!(shape(&p), want, "PostgreSQL: {p:?}");
    let stored = pg.messages(&t, "m").unwrap();
    assert_eq!(stored.len(), 4);
    assert_eq!(stored[1].raw, message("", "x@y", "genuine").await.raw, "raw bytes round-trip through bytea");
    assert!(stored[1].collision && !stored[0].collision);
    // The query side reads the same back from both.
    assert_eq!(MessageQuery::count_messages(&pg, &t).unwrap(), 4);
    assert_eq!(MessageQuery::count_messages(&db, &t).unwrap(), 4);
    let page = MessageQuery::list_messages(&pg, &t, 0, 10).unwrap();
    let detail = MessageQuery::message_detail(&pg, &t, page[0].id).unwrap().expect("detail");
    assert_eq!((detail.summary.subject.as_deref(), detail.summary.from.as_deref()), (Some("s forged"), Some("A <a@example.test>")));
    assert_eq!(MessageQuery::message_raw(&pg, &t, page[2].id).unwrap().unwrap(), message("", "z@y", "other server").await.raw);
    assert!(MessageQuery::message_raw(&pg, "another-tenant", page[2].id).unwrap().is_none(), "scoped by tenant");
    // Every new row wrote one message.stored event, in order.
    let events = pg.list_after(&t, None, 100).unwrap();
    let rows: Vec<String> = events.iter().map(|e| e.payload["message"].as_str().unwrap().to_string()).collect();
    assert_eq!(rows, page.iter().map(|m| format!("db:{}", m.id)).collect::<Vec<_>>());
}

// ---- helper B (session 7): what the CLI and serve need beyond the traits, through the
// store selection's handle (`store::Store`), the same in both stores.

/// `unreported` lists what a run stored but did not report (with the bytes only when asked),
/// `mark_reported` takes rows off it; `find` names a message by db:, mid: or server id and
/// refuses an ambiguous or unknown reference the same way in both stores.
async fn unreported_and_find(store: &Store, t: &str) {
    let mut sink = store.sink(t, "m");
    deliver(&mut sink, "imap:h:993:u", vec![message("imap:INBOX:1:1", "a@y", "one").await, message("imap:INBOX:1:2", "b@y", "two").await])
        .expect("stored");
    let results = sink.results().to_vec();
    assert_eq!(sink.stats().stored, 2);
    drop(sink);
    let all = store.unreported(t, "m", false).unwrap();
    assert_eq!(all.iter().map(|u| u.server_id.as_str()).collect::<Vec<_>>(), ["imap:INBOX:1:1", "imap:INBOX:1:2"], "oldest first");
    assert!(all.iter().all(|u| u.raw.is_empty()), "no bytes unless asked");
    assert_eq!((all[0].subject.as_deref(), all[0].from.as_deref(), all[0].classification.as_str()), (Some("s one"), Some("A <a@example.test>"), "normal"));
    let with_raw = store.unreported(t, "m", true).unwrap();
    assert_eq!(with_raw[1].raw, message("", "b@y", "two").await.raw);
    assert_eq!(with_raw[1].size, with_raw[1].raw.len() as u64);
    store.mark_reported(&[results[0].row]).unwrap();
    let left = store.unreported(t, "m", false).unwrap();
    assert_eq!(left.iter().map(|u| u.row).collect::<Vec<_>>(), [results[1].row]);
    assert!(store.unreported(t, "other", false).unwrap().is_empty());
    assert!(store.unreported("another-tenant", "m", false).unwrap().is_empty());
    store.mark_reported(&[]).unwrap();

    // find: by database id, Message-ID (both spellings) and server id.
    let want = message("", "b@y", "two").await.raw;
    for r in [format!("db:{}", results[1].row), "mid:b@y".into(), "<b@y>".into(), "imap:INBOX:1:2".into()] {
        let (mailbox, raw) = store.find(t, &r).unwrap_or_else(|e| panic!("{r}: {e}"));
        assert_eq!((mailbox.as_str(), &raw), ("m", &want), "{r}");
    }
    // Unknown, of another tenant, bare, or ambiguous: NotFound with the candidates.
    for r in ["mid:nobody@y", "17", "db:x"] {
        assert!(matches!(store.find(t, r), Err(HostError::NotFound(_))), "{r}");
    }
    assert!(matches!(store.find("another-tenant", &format!("db:{}", results[1].row)), Err(HostError::NotFound(_))));
    let mut sink = store.sink(t, "m2");
    deliver(&mut sink, "pop3:h:995:u", vec![message("pop3:x", "b@y", "another two").await]).expect("stored");
    drop(sink);
    let e = store.find(t, "mid:b@y").unwrap_err().to_string();
    assert!(e.contains("matches 2 stored messages") && e.contains("mailbox m2"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreported_and_find_are_the_same_in_both_stores() {
    let Some(pg) = pg() else { return };
    let tmp = mailplug_tests::TempPath::file("pgtest-unreported", "mailplug.sqlite3");
    unreported_and_find(&Store::Sqlite(sqlite_in(&tmp)), &unique("b-unrep")).await;
    unreported_and_find(&Store::Postgres(pg), &unique("b-unrep")).await;
}

fn sync_state_round_trip(s: &dyn SyncStateStore, tenant: &str) {
    assert!(s.load(tenant, "m").unwrap().is_none());
    s.save(tenant, "m", "imap:h:993:u", b"state one\0\xff").unwrap();
    let got = s.load(tenant, "m").unwrap().unwrap();
    assert_eq!((got.state.as_slice(), got.binding.as_deref()), (&b"state one\0\xff"[..], Some("imap:h:993:u")));
    s.save(tenant, "m", "pop3:h:995:u", b"two").unwrap();
    let got = s.load(tenant, "m").unwrap().unwrap();
    assert_eq!((got.state.as_slice(), got.binding.as_deref()), (&b"two"[..], Some("pop3:h:995:u")));
    assert!(s.load(tenant, "other").unwrap().is_none());
    // Tokens: stored encrypted, read back whole.
    let t = Tokens { access_token: "at-secret".into(), refresh_token: Some("rt-secret".into()), expires_at: Some(99), scopes: vec!["a".into(), "b".into()], account: Some("u@x".into()) };
    s.token_storage_ready().unwrap();
    s.save_tokens(tenant, "c", "u", &t).unwrap();
    let back = s.load_tokens(tenant, "c", "u").unwrap().unwrap();
    assert_eq!((back.access_token, back.refresh_token, back.expires_at, back.scopes, back.account), (t.access_token, t.refresh_token, t.expires_at, t.scopes, t.account));
}

#[test]
fn sync_state_and_tokens_round_trip_in_both_stores() {
    let Some(pg) = pg() else { return };
    sync_state_round_trip(&*sqlite("state"), &unique("state"));
    let t = unique("state");
    sync_state_round_trip(&pg, &t);
    // At rest the tokens are ciphertext in the SQLite format, bound to their row.
    let (url, pw) = pg_env().unwrap();
    let out = psql(&url, &pw, &format!("SELECT access_token || ' ' || refresh_token FROM oauth_tokens WHERE tenant = '{t}'"));
    assert!(out.starts_with("mpenc1:") && !out.contains("secret"), "{out}");
    let other_key = PgStore::connect_with_keys(&url, Some(&pw), SecretKeys::new(Some(&[8; 32]), None)).unwrap();
    let e = other_key.load_tokens(&t, "c", "u").unwrap_err().to_string();
    assert!(e.contains("neither") && !e.contains("secret"), "another key cannot read them: {e}");
}

/// Runs psql as the test role (the password through PGPASSWORD, never the command line).
fn psql(url: &str, pw: &PathBuf, sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args(["-X", "-A", "-t", "-q", url, "-c", sql])
        .env("PGPASSWORD", std::fs::read_to_string(pw).unwrap().trim())
        .output()
        .expect("psql runs");
    assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn new(tenant: &str, message_id: &str) -> NewOutbound {
    NewOutbound {
        tenant: tenant.into(),
        queue: "q".into(),
        message_id: message_id.into(),
        envelope: Envelope { from: "a@x".into(), to: vec!["b@y".into()] },
        raw: format!("Message-ID: <{message_id}>\r\n\r\nhi\r\n").into_bytes(),
        max_age_ms: 60_000,
        save_copy: None,
    }
}

fn states(s: &dyn Events, tenant: &str) -> Vec<(String, Option<String>)> {
    s.list_after(tenant, None, 100)
        .unwrap()
        .into_iter()
        .map(|e| (e.payload["state"].as_str().unwrap_or("").to_string(), e.payload["previous_state"].as_str().map(str::to_string)))
        .collect()
}

/// The outbox's life and its events, against one store.
fn outbox_life<S: Outbox + Events>(s: &S, t: &str) {
    let a = s.enqueue(&new(t, "a@x"), 1000).unwrap();
    let b = s.enqueue(&new(t, "b@x"), 1001).unwrap();
    assert_eq!(a.state, OutboxState::Queued);
    let due = s.take_due(t, "q", 10, 1000).unwrap();
    assert_eq!(due.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [a.id.as_str()], "b is not due yet at 1000");
    assert_eq!(due[0].raw, new(t, "a@x").raw, "the bytes fixed at enqueue");
    s.record_commit_point(&a.id, 1100).unwrap();
    assert_eq!(s.get(t, &a.id, false).unwrap().unwrap().state, OutboxState::InFlight);
    assert!(s.record_commit_point(&a.id, 1100).is_err(), "a commit point is only for a queued row");
    let delivered = RecordedOutcome { state: OutboxState::Delivered, next_attempt_at_ms: 0, last_reply: Some("250 ok".into()), explanation: None };
    s.record_outcome(&a.id, &delivered, 1200).unwrap();
    let retry = RecordedOutcome { state: OutboxState::Queued, next_attempt_at_ms: 61_000, last_reply: Some("451 busy".into()), explanation: None };
    s.record_outcome(&b.id, &retry, 1300).unwrap();
    let rb = s.get(t, &b.id, false).unwrap().unwrap();
    assert_eq!((rb.state, rb.attempts, rb.next_attempt_at_ms, rb.last_reply.as_deref()), (OutboxState::Queued, 1, 61_000, Some("451 busy")));
    assert!(s.take_due(t, "q", 10, 60_999).unwrap().is_empty());
    assert_eq!(s.take_due(t, "q", 10, 61_000).unwrap().len(), 1);
    let want: Vec<(String, Option<String>)> = [("queued", None), ("queued", None), ("in-flight", Some("queued")), ("delivered", Some("in-flight")), ("queued", Some("queued"))]
        .into_iter()
        .map(|(s, p)| (s.to_string(), p.map(str::to_string)))
        .collect();
    assert_eq!(states(s, t), want);
    for e in [s.resend(t, &a.id, 2000).unwrap_err(), s.cancel(t, &a.id, 2000).unwrap_err(), Outbox::mark_delivered(s, t, &a.id, 2000).unwrap_err()] {
        assert!(e.to_string().contains("is delivered"), "{e}");
        assert!(matches!(&e, HostError::Refused(r) if r.state == OutboxState::Delivered), "refused by type: {e:?}");
    }
    let queued = s.count(t, "q", OutboxState::Queued).unwrap();
    assert_eq!((queued.rows, queued.oldest_created_at_ms, queued.earliest_next_attempt_at_ms), (1, Some(1001), Some(61_000)));
    assert_eq!(s.count(t, "q", OutboxState::Delivered).unwrap().rows, 1);
    assert_eq!(s.count(t, "other", OutboxState::Queued).unwrap().rows, 0);
    assert_eq!(states(s, t).len(), 5, "a refused change writes no event");
    // Left in flight by a sender that stopped: held, never resent silently; then resent by hand.
    s.record_commit_point(&b.id, 61_000).unwrap();
    let why = Explanation { en: "stopped".into(), de: "abgebrochen".into() };
    assert_eq!(s.recover(t, "q", &why, 61_001).unwrap(), [b.id.clone()]);
    assert_eq!(s.get(t, &b.id, false).unwrap().unwrap().explanation, Some(why));
    assert!(s.take_due(t, "q", 10, 99_999).unwrap().is_empty(), "held rows are never taken");
    assert_eq!(s.resend(t, &b.id, 62_000).unwrap().state, OutboxState::Queued);
    assert!(s.get("another-tenant", &b.id, false).unwrap().is_none(), "scoped by tenant");
    // Webhook bookkeeping on the events.
    let all = s.list_after(t, None, 100).unwrap();
    let after = s.list_after(t, Some(&all[1].id), 2).unwrap();
    assert_eq!(after.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), [all[2].id.clone(), all[3].id.clone()]);
    assert!(s.list_after(t, Some("01NOSUCHEVENT"), 10).is_err());
    Events::mark_delivered(s, &all[0].id, 10).unwrap();
    s.mark_failed(&all[1].id, 99).unwrap();
    s.mark_dead(&all[2].id).unwrap();
    let left = s.next_undelivered(t, 2).unwrap();
    assert_eq!(left.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), [all[1].id.clone(), all[3].id.clone()]);
    assert_eq!((left[0].attempts, left[0].next_attempt_at_ms), (1, Some(99)));
    assert!(Events::mark_delivered(s, "no-such-id", 1).is_err());
}

#[test]
fn outbox_transitions_and_events_are_the_same_in_both_stores() {
    let Some(pg) = pg() else { return };
    outbox_life(&*sqlite("outbox"), &unique("outbox"));
    outbox_life(&pg, &unique("outbox"));
}

#[test]
fn events_of_concurrent_writers_are_listed_in_commit_order() {
    // Writers on several connections commit at once; a reader that continues after the last
    // event it saw (as SSE replay does) must still see every event: none may appear behind it.
    let Some(pg) = pg() else { return };
    let t = unique("order");
    let (writers, each) = (6, 25);
    let done = Arc::new(AtomicU32::new(0));
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (pg, t, done) = (pg.clone(), t.clone(), done.clone());
            std::thread::spawn(move || {
                for i in 0..each {
                    pg.enqueue(&new(&t, &format!("{w}-{i}@x")), 1).unwrap();
                }
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let finished = done.load(Ordering::SeqCst) == writers;
        let page = pg.list_after(&t, seen.last().map(String::as_str), 7).unwrap();
        seen.extend(page.iter().map(|e| e.id.clone()));
        if finished && page.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the writers did not finish in 60 s");
    }
    for h in handles {
        h.join().unwrap();
    }
    let all: Vec<String> = pg.list_after(&t, None, 1000).unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(all.len(), (writers * each) as usize);
    assert_eq!(seen, all, "the incremental reader saw every event, in the final order");
}

const TTL: Duration = Duration::from_millis(800);


#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_takeover_the_old_owner_cannot_store_or_save_state() {
    let Some(pg) = pg() else { return };
    let t = unique("takeover");
    let res = mailbox_resource(&t, "m");
    let a = pg.acquire(&res, "node-a", TTL).unwrap().expect("free");
    assert!(pg.acquire(&res, "node-b", TTL).unwrap().is_none(), "held by node-a");
    let again = pg.acquire(&res, "node-a", TTL).unwrap().unwrap();
    assert_eq!(again.token, a.token, "the owner re-taking its live lease keeps its token");
    let a = pg.renew(&a, TTL).unwrap();
    let fenced_a = pg.fenced(a.fence());
    // While a holds it, its writes go through.
    deliver(&mut fenced_a.sink(&t, "m"), "imap:h:993:u", vec![message("imap:INBOX:1:1", "1@x", "one").await]).unwrap();
    fenced_a.save(&t, "m", "imap:h:993:u", b"after 1").unwrap();
    // a stops renewing (paused); b takes over after expiry with a larger token.
    let b = acquire_when_free(&pg, &res, "node-b", TTL);
    assert!(b.token > a.token, "{} > {}", b.token, a.token);
    // a wakes up: everything it tries is refused with the typed error, nothing is written.
    let e = deliver(&mut fenced_a.sink(&t, "m"), "imap:h:993:u", vec![message("imap:INBOX:1:2", "2@x", "two").await]).unwrap_err();
    assert!(is_lease_lost(&e, &res, Some("node-b")), "{e:?}");
    let e = fenced_a.save(&t, "m", "imap:h:993:u", b"after 2 (a)").unwrap_err();
    assert!(is_lease_lost(&e, &res, Some("node-b")), "{e:?}");
    let e = pg.renew(&a, TTL).unwrap_err();
    assert!(is_lease_lost(&e, &res, Some("node-b")), "{e:?}");
    pg.release(&a).unwrap();
    assert_eq!(pg.list_leases(&res).unwrap()[0].owner.as_deref(), Some("node-b"), "a's late release does not free b's lease");
    // b continues from the last committed state.
    assert_eq!(pg.load(&t, "m").unwrap().unwrap().state, b"after 1");
    let fenced_b = pg.fenced(b.fence());
    deliver(&mut fenced_b.sink(&t, "m"), "imap:h:993:u", vec![message("imap:INBOX:1:2", "2@x", "two").await]).unwrap();
    fenced_b.save(&t, "m", "imap:h:993:u", b"after 2 (b)").unwrap();
    let ids: Vec<String> = pg.messages(&t, "m").unwrap().into_iter().map(|m| m.server_id).collect();
    assert_eq!(ids, ["imap:INBOX:1:1", "imap:INBOX:1:2"], "each message stored once, a's refused commit left nothing");
    // A lease that was released is free at once, with a new token.
    pg.release(&b).unwrap();
    let c = pg.acquire(&res, "node-c", TTL).unwrap().expect("free after release");
    assert!(c.token > b.token);
    let e = fenced_b.save(&t, "m", "x", b"late").unwrap_err();
    assert!(is_lease_lost(&e, &res, Some("node-c")), "{e:?}");
}

#[test]
fn after_a_takeover_the_old_sender_cannot_move_outbox_rows() {
    let Some(pg) = pg() else { return };
    let t = unique("queue");
    let res = queue_resource(&t, "q");
    let a = pg.acquire(&res, "node-a", TTL).unwrap().unwrap();
    let fenced_a = pg.fenced(a.fence());
    let m1 = pg.enqueue(&new(&t, "1@x"), 1).unwrap();
    let m2 = pg.enqueue(&new(&t, "2@x"), 1).unwrap();
    fenced_a.record_commit_point(&m1.id, 2).unwrap();
    let other = pg.enqueue(&NewOutbound { queue: "other".into(), ..new(&t, "3@x") }, 1).unwrap();
    assert!(fenced_a.record_commit_point(&other.id, 2).unwrap_err().to_string().contains("not in the queue of the lease"));
    let b = acquire_when_free(&pg, &res, "node-b", TTL);
    // a (paused past its lease) cannot mark m2 in flight nor record m1's outcome.
    let e = fenced_a.record_commit_point(&m2.id, 3).unwrap_err();
    assert!(is_lease_lost(&e, &res, Some("node-b")), "{e:?}");
    let ok = RecordedOutcome { state: OutboxState::Delivered, next_attempt_at_ms: 0, last_reply: Some("250".into()), explanation: None };
    assert!(is_lease_lost(&fenced_a.record_outcome(&m1.id, &ok, 3).unwrap_err(), &res, Some("node-b")));
    assert_eq!(pg.get(&t, &m2.id, false).unwrap().unwrap().state, OutboxState::Queued);
    // b holds m1 (uncertain: a may have written its dot) and sends m2.
    let fenced_b = pg.fenced(b.fence());
    let why = Explanation { en: "the node sending it lost its lease".into(), de: "der sendende Knoten verlor seinen Lease".into() };
    assert_eq!(fenced_b.recover(&t, "q", &why, 4).unwrap(), [m1.id.clone()]);
    fenced_b.record_commit_point(&m2.id, 5).unwrap();
    fenced_b.record_outcome(&m2.id, &ok, 6).unwrap();
    assert_eq!(pg.get(&t, &m1.id, false).unwrap().unwrap().state, OutboxState::Held);
    assert_eq!(pg.get(&t, &m2.id, false).unwrap().unwrap().state, OutboxState::Delivered);
}

#[test]
fn racing_nodes_never_hold_one_lease_at_once_and_tokens_only_grow() {
    let Some(pg) = pg() else { return };
    let t = unique("race");
    let res = mailbox_resource(&t, "m");
    let (nodes, rounds) = (12, 8);
    // Long TTL: leases end by release only, so held intervals must never overlap.
    let ttl = Duration::from_secs(30);
    let held: Arc<Mutex<Vec<(i64, String, Instant, Instant)>>> = Arc::default();
    let start = Arc::new(Barrier::new(nodes));
    let handles: Vec<_> = (0..nodes)
        .map(|n| {
            let (pg, res, held, start) = (pg.clone(), res.clone(), held.clone(), start.clone());
            std::thread::spawn(move || {
                let owner = format!("node-{n}");
                start.wait();
                let mut got = 0;
                let end = Instant::now() + Duration::from_secs(60);
                while got < rounds {
                    assert!(Instant::now() < end, "{owner} starved");
                    let Some(l) = pg.acquire(&res, &owner, ttl).unwrap() else { continue };
                    let from = Instant::now();
                    // A fenced write while holding it always succeeds.
                    pg.fenced(l.fence()).save(&res, "m", "b", &l.token.to_be_bytes()).unwrap();
                    let to = Instant::now();
                    pg.release(&l).unwrap();
                    held.lock().unwrap().push((l.token, owner.clone(), from, to));
                    got += 1;
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let mut held = held.lock().unwrap().clone();
    assert_eq!(held.len(), nodes * rounds);
    held.sort_by_key(|h| h.2);
    for w in held.windows(2) {
        assert!(w[0].3 <= w[1].2, "{} (token {}) and {} (token {}) held the lease at once", w[0].1, w[0].0, w[1].1, w[1].0);
        assert!(w[1].0 > w[0].0, "token {} after {}", w[1].0, w[0].0);
    }
    // The last fenced save is the largest token's.
    let last = pg.load(&res, "m").unwrap().unwrap().state;
    assert_eq!(i64::from_be_bytes(last.try_into().unwrap()), held.last().unwrap().0);
}

#[test]
fn nodes_claiming_free_leases_split_them_without_overlap() {
    let Some(pg) = pg() else { return };
    let t = unique("claim");
    let resources: Vec<String> = (0..40).map(|i| mailbox_resource(&t, &format!("m{i:02}"))).collect();
    let start = Arc::new(Barrier::new(5));
    let handles: Vec<_> = (0..5)
        .map(|n| {
            let (pg, resources, start) = (pg.clone(), resources.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let mut mine = Vec::new();
                for _ in 0..4 {
                    mine.extend(pg.acquire_free(&resources, &format!("node-{n}"), Duration::from_secs(30), 5).unwrap());
                }
                mine
            })
        })
        .collect();
    let mut all: Vec<Lease> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    assert_eq!(all.len(), 40, "every resource claimed: {}", all.len());
    all.sort_by(|a, b| a.resource.cmp(&b.resource));
    all.dedup_by(|a, b| a.resource == b.resource);
    assert_eq!(all.len(), 40, "no resource claimed twice");
    let listed = pg.list_leases(&mailbox_resource(&t, "")).unwrap();
    assert!(listed.iter().all(|l| l.live) && listed.len() == 40);
    for l in &all {
        assert_eq!(listed.iter().find(|x| x.resource == l.resource).unwrap().owner.as_deref(), Some(l.owner.as_str()));
    }
    assert!(pg.acquire_free(&resources, "node-late", Duration::from_secs(30), 40).unwrap().is_empty(), "nothing left");
}

#[test]
fn only_loopback_servers_and_private_password_files_are_accepted() {
    let e = PgStore::connect("postgres://u@db.example.com:5432/x", None).err().expect("refused").to_string();
    assert!(e.contains("db.example.com") && e.contains("without TLS"), "{e}");
    let Some((url, _)) = pg_env() else { return };
    let pw_dir = TempPath::dir("pgtest-pw");
    let pw = pw_dir.join("pw");
    std::fs::write(&pw, "x").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = PgStore::connect(&url, Some(&pw)).err().expect("refused").to_string();
    assert!(e.contains("chmod 600"), "{e}");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let e = PgStore::connect(&url, Some(&pw)).err().expect("wrong password refused").to_string();
    assert!(e.contains("password authentication failed"), "{e}");
    // Nodes starting together apply the migrations once.
    let (url, pw) = pg_env().unwrap();
    let hs: Vec<_> = (0..4).map(|_| {
        let (url, pw) = (url.clone(), pw.clone());
        std::thread::spawn(move || PgStore::connect(&url, Some(&pw)).unwrap().schema_version().unwrap())
    }).collect();
    for h in hs {
        assert_eq!(h.join().unwrap(), 1);
    }
}

/// Not a check: how fast each store takes batches of parsed messages through its sink
/// (`cargo test --test pg_store -- --ignored --nocapture store_rate`). Figures in docs/SCALING.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn store_rate_of_both_stores() {
    let Some(pg) = pg() else { return };
    let (batches, per_batch) = (20, 100);
    let body = "Lorem ipsum dolor sit amet. ".repeat(140); // about 4 KB
    let template = message("x", "template@x", &body).await;
    let make = |b: usize, i: usize| {
        let mut m = template.clone();
        let mid = format!("m{b}-{i}@x");
        m.id = format!("imap:INBOX:1:{}", b * per_batch + i);
        m.raw = format!("Message-ID: <{mid}>\r\nSubject: s\r\n\r\n{body}\r\n").into_bytes();
        if let Ok(p) = &mut m.parsed {
            p.message_id = mid;
        }
        m
    };
    let t = unique("rate");
    let tmp = mailplug_tests::TempPath::file("pgtest-rate", "mailplug.sqlite3");
    let db = sqlite_in(&tmp);
    let start = Instant::now();
    for b in 0..batches {
        let mut sink = db.sink(&t, "m");
        deliver(&mut sink, "imap:h:993:u", (0..per_batch).map(|i| make(b, i)).collect()).unwrap();
    }
    let sq = start.elapsed();
    let start = Instant::now();
    for b in 0..batches {
        let mut sink = pg.sink(&t, "m");
        deliver(&mut sink, "imap:h:993:u", (0..per_batch).map(|i| make(b, i)).collect()).unwrap();
    }
    let p = start.elapsed();
    let lease = pg.acquire(&mailbox_resource(&t, "f"), "node", Duration::from_secs(60)).unwrap().unwrap();
    let fenced = pg.fenced(lease.fence());
    let start = Instant::now();
    for b in 0..batches {
        let mut sink = fenced.sink(&t, "f");
        deliver(&mut sink, "imap:h:993:u", (0..per_batch).map(|i| make(b, i)).collect()).unwrap();
    }
    let pf = start.elapsed();
    let n = (batches * per_batch) as f64;
    assert_eq!(pg.messages(&t, "f").unwrap().len(), batches * per_batch);
    println!(
        "{} messages of {} bytes in batches of {per_batch}: SQLite {:.0}/s, PostgreSQL {:.0}/s, PostgreSQL fenced {:.0}/s",
        n, template.raw.len() + 30, n / sq.as_secs_f64(), n / p.as_secs_f64(), n / pf.as_secs_f64()
    );
}
