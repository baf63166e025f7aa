//! IMAP folders through the real component (issue 11, items 2 and 7): server namespaces, and
//! what mailplug does to folders.
//!
//! Courier keeps every folder under the personal namespace "INBOX." and is not in the rig, so
//! it is a scripted server here (`mailplug_tests::scripted`) answering as Courier 5.0 did:
//! configured names ("Sent", "Done", "Support") must reach it as "INBOX.Sent", "INBOX.Done",
//! "INBOX.Support", and a name it still refuses is explained with its prefix. Against the
//! rig's Dovecot (empty prefix, "." delimiter) through a recording proxy: `keep` opens folders
//! read-only (EXAMINE), a move target mailplug creates is subscribed, and the namespace changes
//! no name.

use mailplug_host::config::{AfterFetch, TenantConfig};
use mailplug_host::db::Database;
use mailplug_host::ops::{self, Reply, SavedReply};
use mailplug_host::store::{MemorySink, NoSyncState};
use mailplug_tests::scripted::{s, Fake, Step};
use mailplug_tests::{recording_proxy, rig, sample_message, tenant, test_box, ServerSpec};
use mailplug_tests::TempDatabase;
use Step::{Recv, RecvCommand};

const COURIER_GREETING: &str =
    "* OK [CAPABILITY IMAP4rev1 UIDPLUS CHILDREN NAMESPACE THREAD=ORDEREDSUBJECT SORT QUOTA IDLE LITERAL+ AUTH=PLAIN SASL-IR] Courier-IMAP ready. Copyright 1998-2018 Double Precision, Inc.\r\n";
const COURIER_NAMESPACE: &str = "* NAMESPACE ((\"INBOX.\" \".\")) NIL ((\"#shared.\" \".\"))\r\n";

fn unique() -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}", t.as_nanos())
}

/// The tagged command lines a client sent (literal contents and the login left out).
fn commands(fake: &Fake) -> Vec<String> {
    fake.received()
        .lines()
        .filter(|l| {
            let tag = l.split(' ').next().unwrap_or("");
            tag.len() > 1 && tag.starts_with('a') && tag[1..].bytes().all(|b| b.is_ascii_digit())
        })
        .filter(|l| !l.contains("AUTHENTICATE"))
        .map(|l| l.trim_end().to_string())
        .collect()
}

/// A tenant whose mailbox "inbox" is the scripted Courier at `port` (clear text, opted in),
/// sending through the rig's smtp2 (which only spools) as box19.
fn courier_tenant(port: u16) -> TenantConfig {
    let r = rig();
    let (user, pass) = test_box(19);
    let mut inbound = ServerSpec::new("localhost", port, false, &user, "courier-pw");
    inbound.insecure_plaintext = true;
    let smtp = ServerSpec::new(r.get("RIG_SMTP2_HOST"), r.port("RIG_SMTP2_TLS_PORT"), true, &user, &pass);
    tenant("imap", &inbound, &smtp, true)
}

/// The login every Courier script starts with: greeting, AUTHENTICATE, NAMESPACE.
fn courier_login() -> Vec<Step> {
    vec![
        s(COURIER_GREETING),
        Recv,
        s("a1 OK LOGIN Ok.\r\n"),
        Recv,
        s(&format!("{COURIER_NAMESPACE}a2 OK NAMESPACE completed.\r\n")),
    ]
}

fn temp_db() -> TempDatabase {
    TempDatabase::open("ns")
}

/// The body FETCH answer (tag a`tag`) for UID 1.
fn body_answer(tag: u32, raw: &[u8]) -> Step {
    Step::Send(
        [format!("* 1 FETCH (UID 1 BODY[] {{{}}}\r\n", raw.len()).into_bytes(), raw.to_vec(), format!(")\r\na{tag} OK FETCH completed.\r\n").into_bytes()]
            .concat(),
    )
}

/// A customer's message fetched from a scripted Courier INBOX (keep: EXAMINE, no NAMESPACE
/// needed for INBOX alone) into `db`; returns its Message-ID, to reply to.
async fn original_from_courier(db: &Database) -> String {
    let id = format!("courier-{}@customer.example.test", unique());
    let raw = sample_message(&id, "Order 4711 via Courier");
    let n = raw.len();
    let courier = Fake::start(vec![
        s(COURIER_GREETING),
        Recv,
        s("a1 OK LOGIN Ok.\r\n"),
        Recv,
        s("* 1 EXISTS\r\n* OK [UIDVALIDITY 1765000000] Ok\r\na2 OK [READ-ONLY] Ok\r\n"),
        Recv,
        s("* SEARCH 1\r\na3 OK SEARCH done.\r\n"),
        Recv,
        s(&format!("* 1 FETCH (UID 1 RFC822.SIZE {n})\r\na4 OK FETCH completed.\r\n")),
        Recv,
        body_answer(5, &raw),
        Recv,
        s("a6 OK LOGOUT completed\r\n"),
    ])
    .await;
    let cfg = courier_tenant(courier.port);
    let mut sink = db.sink(&cfg.tenant, "inbox");
    ops::fetch(mailplug_tests::plugin(), &cfg, "inbox", &mut sink, db).await.expect("fetch the original from Courier");
    id
}

/// `folders = ["Support"]` is selected as "INBOX.Support", and `move_to = "Done"` is copied to
/// (Courier has no MOVE), created and subscribed as "INBOX.Done".
#[tokio::test]
async fn courier_fetch_selects_and_moves_under_the_inbox_prefix() {
    let original = sample_message(&format!("courier-{}@customer.example.test", unique()), "Order 4711 via Courier");
    let n = original.len();
    let mut fetch_script = courier_login();
    fetch_script.extend([
        Recv,
        s("* FLAGS (\\Draft \\Answered \\Flagged \\Deleted \\Seen \\Recent)\r\n* 1 EXISTS\r\n* 1 RECENT\r\n* OK [UIDVALIDITY 1765000000] Ok\r\na3 OK [READ-WRITE] Ok\r\n"),
        Recv,
        s("* SEARCH 1\r\na4 OK SEARCH done.\r\n"),
        Recv,
        s(&format!("* 1 FETCH (UID 1 RFC822.SIZE {n})\r\na5 OK FETCH completed.\r\n")),
        Recv,
        body_answer(6, &original),
        Recv,
        s("a7 NO [TRYCREATE] Mailbox does not exist.\r\n"),
        Recv,
        Recv,
        Recv,
        s("a8 OK \"INBOX.Done\" created.\r\na9 OK Folder subscribed.\r\na10 OK [COPYUID 1765000001 1 1] COPY completed.\r\n"),
        Recv,
        Recv,
        s("a11 OK STORE completed.\r\na12 OK EXPUNGE completed.\r\n"),
        Recv,
        s("* BYE Courier-IMAP server shutting down\r\na13 OK LOGOUT completed\r\n"),
    ]);
    let courier = Fake::start(fetch_script).await;
    let mut cfg = courier_tenant(courier.port);
    cfg.mailboxes[0].folders = vec!["Support".into()];
    cfg.mailboxes[0].after_fetch = AfterFetch::MoveTo("Done".into());
    let db = temp_db();
    let mut sink = db.sink(&cfg.tenant, "inbox");
    ops::fetch(mailplug_tests::plugin(), &cfg, "inbox", &mut sink, &*db).await.expect("fetch from Courier");
    assert_eq!(
        commands(&courier),
        [
            "a2 NAMESPACE",
            "a3 SELECT \"INBOX.Support\"",
            "a4 UID SEARCH ALL",
            "a5 UID FETCH 1 (UID RFC822.SIZE)",
            "a6 UID FETCH 1 (UID BODY.PEEK[])",
            "a7 UID COPY 1 \"INBOX.Done\"",
            "a8 CREATE \"INBOX.Done\"",
            "a9 SUBSCRIBE \"INBOX.Done\"",
            "a10 UID COPY 1 \"INBOX.Done\"",
            "a11 UID STORE 1 +FLAGS.SILENT (\\Deleted)",
            "a12 UID EXPUNGE 1",
            "a13 LOGOUT",
        ]
    );
    let stored = db.messages(&cfg.tenant, "inbox").expect("stored");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].folder, "Support", "the host sees the configured name");
}

/// A reply's copy for `save_sent = "Sent"` is appended to "INBOX.Sent", created and subscribed
/// there when missing.
#[tokio::test]
async fn courier_sent_copy_goes_to_inbox_sent() {
    let db = temp_db();
    let original_id = original_from_courier(&db).await;
    let mut save_script = courier_login();
    save_script.extend([
        RecvCommand,
        s("a3 NO [TRYCREATE] Mailbox does not exist.\r\n"),
        Recv,
        s("a4 OK \"INBOX.Sent\" created.\r\n"),
        Recv,
        RecvCommand,
        s("a5 OK Folder subscribed.\r\na6 OK [APPENDUID 1765000002 1] APPEND Ok.\r\n"),
        Recv,
        s("* BYE Courier-IMAP server shutting down\r\na7 OK LOGOUT completed\r\n"),
    ]);
    let courier = Fake::start(save_script).await;
    let mut cfg = courier_tenant(courier.port);
    cfg.mailboxes[0].save_sent = Some("Sent".into());
    let reply = Reply { text_body: "It ships today.".into(), html_body: None, force: false };
    let sent = ops::send_reply(mailplug_tests::plugin(), &cfg, "q", &*db, &format!("mid:{original_id}"), &reply)
        .await
        .expect("the reply is sent through smtp2");
    assert!(
        matches!(&sent.saved, SavedReply::Saved { folder, created_folder: true, uid: Some(1) } if folder == "Sent"),
        "{:?}",
        sent.saved
    );
    let n = sent.sent.raw.len();
    assert_eq!(
        commands(&courier),
        [
            "a2 NAMESPACE".to_string(),
            format!("a3 APPEND \"INBOX.Sent\" (\\Seen) {{{n}+}}"),
            "a4 CREATE \"INBOX.Sent\"".to_string(),
            "a5 SUBSCRIBE \"INBOX.Sent\"".to_string(),
            format!("a6 APPEND \"INBOX.Sent\" (\\Seen) {{{n}+}}"),
            "a7 LOGOUT".to_string(),
        ]
    );

}

/// A Courier that still refuses the name: the send succeeds, and the warning says that the
/// copy was refused, quotes the server and names its prefix (English and German), instead of
/// a "protocol error during message data" with advice about ports.
#[tokio::test]
async fn courier_refusing_the_copy_warns_with_its_prefix() {
    let db = temp_db();
    let original_id = original_from_courier(&db).await;
    let reply = Reply { text_body: "It ships today.".into(), html_body: None, force: false };
    let mut refusing = courier_login();
    refusing.extend([RecvCommand, s("a3 NO Invalid mailbox name.\r\n")]);
    let courier = Fake::start(refusing).await;
    let mut cfg = courier_tenant(courier.port);
    cfg.mailboxes[0].save_sent = Some("Sent".into());
    let sent = ops::send_reply(mailplug_tests::plugin(), &cfg, "q", &*db, &format!("mid:{original_id}"), &reply)
        .await
        .expect("the send itself succeeds");
    let (en, de) = (sent.saved.warning().expect("a warning"), sent.saved.warning_de().expect("German too"));
    eprintln!("warning: {en}\nWarnung: {de}");
    for want in [
        "the reply was sent, but no copy was saved in folder \"Sent\"",
        "refused to save the copy",
        "\"NO Invalid mailbox name.\"",
        "keeps its folders under the prefix \"INBOX.\"",
        "asked for as \"INBOX.Sent\"",
    ] {
        assert!(en.contains(want), "{want:?} missing: {en}");
    }
    assert!(!en.contains("protocol error") && !en.contains("message data"), "{en}");
    assert!(!en.contains("check that the port"), "{en}");
    for want in ["keine Kopie im Ordner \"Sent\"", "unter dem Präfix \"INBOX.\""] {
        assert!(de.contains(want), "{want:?} missing: {de}");
    }
    assert_eq!(commands(&courier)[..2], ["a2 NAMESPACE".to_string(), format!("a3 APPEND \"INBOX.Sent\" (\\Seen) {{{}+}}", sent.sent.raw.len())]);
}

/// A Dovecot tenant for a rig box through a recording proxy to the rig's IMAP port without TLS
/// (clear text opted in, so the proxy can read the commands).
async fn dovecot_via_proxy(rig_box: u32) -> (TenantConfig, mailplug_tests::RecordingProxy) {
    let r = rig();
    let (user, pass) = test_box(rig_box);
    let proxy = recording_proxy((r.get("RIG_IMAP_NOTLS_HOST").to_string(), r.port("RIG_IMAP_NOTLS_PORT"))).await;
    let mut inbound = ServerSpec::new("127.0.0.1", proxy.port, false, &user, &pass);
    inbound.insecure_plaintext = true;
    let smtp = ServerSpec::new("localhost", r.port("RIG_SMTPS_PORT"), true, &user, &pass);
    (tenant("imap", &inbound, &smtp, true), proxy)
}

/// What the client sent, without the login line (it carries the password).
fn sent_text(proxy: &mailplug_tests::RecordingProxy) -> String {
    let all = String::from_utf8_lossy(&proxy.client_bytes.lock().expect("lock")).into_owned();
    all.split_inclusive('\n').filter(|l| !l.contains("AUTHENTICATE") && !l.contains(" LOGIN ")).collect()
}

/// Dovecot: `keep` opens INBOX with EXAMINE (read-only: \Recent stays for other clients) and
/// sends nothing that needs write access; INBOX alone needs no NAMESPACE round trip.
#[tokio::test]
async fn dovecot_keep_examines() {
    let r = rig();
    let (user, _) = test_box(19);
    r.reset_mailbox(&user);
    r.put(&user, "INBOX", &sample_message(&format!("keep-{}@ns", unique()), "keep"));
    let (cfg, proxy) = dovecot_via_proxy(19).await;
    let mut sink = MemorySink::default();
    ops::fetch(mailplug_tests::plugin(), &cfg, "inbox", &mut sink, &NoSyncState).await.expect("fetch with keep");
    assert_eq!(sink.messages.len(), 1);
    let text = sent_text(&proxy);
    assert!(text.contains(" EXAMINE \"INBOX\"\r\n"), "{text}");
    assert!(!text.contains("SELECT") && !text.contains("STORE") && !text.contains("NAMESPACE"), "{text}");
    let flags = r.listing(&user, "INBOX");
    assert!(!flags[0].1.contains("\\Seen"), "keep changes no flag: {flags:?}");
}

/// Dovecot: move_to a nested folder that does not exist: NAMESPACE (Dovecot answers
/// (("" "."))), the names unchanged but for the delimiter, the target created and subscribed.
#[tokio::test]
async fn dovecot_move_target_created_by_mailplug_is_subscribed_and_names_stay() {
    let r = rig();
    let (user, _) = test_box(18);
    r.reset_mailbox(&user);
    r.put(&user, "Support.Anfragen", &sample_message(&format!("move-{}@ns", unique()), "move"));
    let (mut cfg, proxy) = dovecot_via_proxy(18).await;
    cfg.mailboxes[0].folders = vec!["Support/Anfragen".into()];
    cfg.mailboxes[0].after_fetch = AfterFetch::MoveTo("Erledigt/2026".into());
    let mut sink = MemorySink::default();
    ops::fetch(mailplug_tests::plugin(), &cfg, "inbox", &mut sink, &NoSyncState).await.expect("fetch with move");
    assert_eq!(sink.messages.len(), 1);
    let text = sent_text(&proxy);
    for want in [
        " NAMESPACE\r\n",
        " SELECT \"Support.Anfragen\"\r\n",
        " CREATE \"Erledigt.2026\"\r\n",
        " SUBSCRIBE \"Erledigt.2026\"\r\n",
        " UID MOVE 1 \"Erledigt.2026\"\r\n",
    ] {
        assert!(text.contains(want), "{want:?} missing: {text}");
    }
    assert!(!text.contains("LIST \"\" \"\""), "the namespace told the delimiter: {text}");
    let subscribed = r.doveadm(&["mailbox", "list", "-s", "-u", &user]);
    assert!(subscribed.lines().any(|l| l.trim() == "Erledigt.2026"), "the created target is subscribed: {subscribed}");
    assert_eq!(r.listing(&user, "Erledigt.2026").len(), 1, "moved");
    assert!(r.listing(&user, "Support.Anfragen").is_empty(), "moved away");
}
