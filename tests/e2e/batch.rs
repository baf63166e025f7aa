//! Batch submissions (`outbound.open-batch`, issue 12 item 3) through the real .wasm: many
//! messages over one SMTP session against Postfix (each arrives once), against smtp2 with
//! refused recipients (busy and nouser) and a 4xx in the middle, an oversize message against
//! smtp2's port without a SIZE number (552 after DATA, issue 11 item 6 end to end), and a
//! connection cut right after the final dot of message k (uncertain, nothing after it sent,
//! the ones before delivered once); through the host library and `mailplug send --batch`.
//! The messages' bytes are handed over one by one (`need-message`): a NUL in message 2 of 3
//! gives it its own outcome and the others arrive (Postfix), and a batch four times the
//! tenant's guest memory cap goes through (smtp-sink), and 240 random messages full of bare
//! CR/LF, leading dots, 8-bit bytes and the odd NUL reach smtp-sink line for line (the
//! component's SIMD scan and dot-stuffing against the server's reading of them).
//! Rig mailboxes: box17 (SMTP login for Postfix and smtp2, and the recipient in Postfix runs),
//! box63 (the NUL batch through Postfix).

use std::time::Duration;

use mailplug_host::engine::{ComposedMessage, Delivery};
use mailplug_host::error::{Kind, RefusalCause, Retry};
use mailplug_host::ops::{self, BatchJournal, MessageOutcome, NoJournal, Outgoing};
use mailplug_host::store::NoSyncState;
use mailplug_host::{HostError, TenantConfig};
use mailplug_tests::{dot_cut_proxy, nth_end_of_data, plugin, rig, run_mailplug, smtp2_spec, smtp2_wait_spooled, tenant, test_box, ServerSpec};
use mailplug_tests::{outgoing as message, smtp2_cli_config, unique_text as unique};
use mailplug_tests::TempPath;

fn inbound() -> ServerSpec {
    let (user, pw) = test_box(17);
    ServerSpec::new("localhost", rig().port("RIG_IMAPS_PORT"), true, &user, &pw)
}

/// Box17 sends through Postfix's submission port (STARTTLS).
fn postfix_tenant() -> TenantConfig {
    let (user, pw) = test_box(17);
    let smtp = ServerSpec::new("localhost", rig().port("RIG_SUBMISSION_PORT"), false, &user, &pw);
    tenant("imap", &inbound(), &smtp, true)
}

/// Box17 sends through smtp2 on `port` (STARTTLS).
fn smtp2_tenant(port: Option<u16>) -> TenantConfig {
    let (user, pw) = test_box(17);
    let mut smtp = smtp2_spec(false, &user, &pw);
    if let Some(p) = port {
        smtp.port = p;
    }
    tenant("imap", &inbound(), &smtp, true)
}

/// How many times each Message-ID is in box17's INBOX, waiting (at most 30 s) until every
/// one of `expected` is there.
async fn wait_in_box17(expected: &[&str]) -> Vec<usize> {
    let (user, _) = test_box(17);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let listing = rig().listing(&user, "INBOX");
        let counts: Vec<usize> = expected.iter().map(|m| listing.iter().filter(|(_, _, id)| id == m).count()).collect();
        if counts.iter().all(|&c| c > 0) || std::time::Instant::now() >= deadline {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn in_box17(message_id: &str) -> usize {
    let (user, _) = test_box(17);
    rig().listing(&user, "INBOX").iter().filter(|(_, _, id)| id == message_id).count()
}

/// How many records smtp2 spooled for this Message-ID.
fn spooled_count(message_id: &str) -> usize {
    let dir = rig().get("RIG_SMTP2_SPOOL");
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("smtp2 spool {dir}: {e}"))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter(|v| v["message_id"].as_str().map(|m| m.trim_matches(['<', '>'])) == Some(message_id))
        .count()
}

fn mid(o: &MessageOutcome) -> &str {
    o.message_id.as_deref().expect("composed")
}

fn deliveries(outcomes: &[MessageOutcome]) -> Vec<Delivery> {
    outcomes.iter().map(|o| o.delivery).collect()
}

/// Records what a durable outbox would: commit points and outcomes, in order.
#[derive(Default)]
struct Journal {
    events: Vec<String>,
}

impl BatchJournal for Journal {
    fn commit_point(&mut self, index: usize, _message_id: &str) -> Result<(), HostError> {
        self.events.push(format!("commit {index}"));
        Ok(())
    }
    fn message_done(&mut self, o: &MessageOutcome) {
        self.events.push(format!("done {} {}", o.index, ops::delivery_name(o.delivery)));
    }
}

/// The journal's order as a durable outbox relies on it: the commit points `commits` in order,
/// outcomes in order with these deliveries, each commit point before its message's outcome,
/// and at any point at most two committed messages without an outcome (an armed write, or an
/// outcome held back for the `message-data` step, can commit the next message before the
/// outcome of the one before is recorded).
fn assert_journal(events: &[String], commits: &[usize], dones: &[&str]) {
    let (mut committed, mut done) = (Vec::new(), 0usize);
    for e in events {
        if let Some(i) = e.strip_prefix("commit ") {
            committed.push(i.parse::<usize>().expect("index"));
        } else {
            assert_eq!(*e, format!("done {done} {}", dones[done]), "outcomes in order: {events:?}");
            done += 1;
        }
        let open = committed.iter().filter(|&&i| i >= done).count();
        assert!(open <= 2, "at most two committed messages without an outcome: {events:?}");
    }
    assert_eq!(committed, commits, "commit points in order: {events:?}");
    assert_eq!(done, dones.len(), "{events:?}");
    for i in commits {
        let c = events.iter().position(|e| *e == format!("commit {i}"));
        let d = events.iter().position(|e| e.starts_with(&format!("done {i} ")));
        assert!(c.is_some() && c < d, "commit point {i} before its outcome: {events:?}");
    }
}

#[tokio::test]
async fn a_batch_through_postfix_arrives_once_each() {
    let cfg = postfix_tenant();
    let (me, _) = test_box(17);
    let messages: Vec<Outgoing> = (0..5).map(|i| message(&[&me], &format!("postfix batch {i}"))).collect();
    let mut journal = Journal::default();
    let outcomes = ops::send_batch(plugin(), &cfg, "q", &messages, &NoSyncState, &mut journal).await.expect("batch");
    assert_eq!(deliveries(&outcomes), [Delivery::Delivered; 5]);
    // Each commit point before its outcome, outcomes in order, as soon as known.
    assert_journal(&journal.events, &[0, 1, 2, 3, 4], &["delivered"; 5]);
    for o in &outcomes {
        let r = o.final_reply.as_ref().expect("final reply");
        assert!(r.code.starts_with('2'), "{r:?}");
        assert!(o.recipients.iter().all(|x| x.accepted) && o.error.is_none());
    }
    let ids: Vec<&str> = outcomes.iter().map(mid).collect();
    assert_eq!(wait_in_box17(&ids).await, [1; 5], "each message arrives exactly once");
}

#[tokio::test]
async fn refused_recipients_in_the_middle_of_a_batch_do_not_stop_it() {
    let cfg = smtp2_tenant(None);
    let r = rig();
    let (busy, nouser) = (r.get("RIG_SMTP2_BUSY_RCPT"), r.get("RIG_SMTP2_NOUSER_RCPT"));
    let ok = "someone@smtp2.test";
    let messages = vec![
        message(&[ok], "batch first"),
        message(&[busy], "batch busy only"),
        message(&[busy, nouser, ok], "batch mixed"),
        message(&[nouser], "batch nouser only"),
        message(&[ok], "batch last"),
    ];
    let outcomes = ops::send_batch(plugin(), &cfg, "q", &messages, &NoSyncState, &mut NoJournal).await.expect("batch");
    assert_eq!(
        deliveries(&outcomes),
        [Delivery::Delivered, Delivery::Transient, Delivery::Delivered, Delivery::Permanent, Delivery::Delivered]
    );
    // The 4xx in the middle: a refusal with the recipient's answer, retry later.
    let e = outcomes[1].error.as_ref().expect("error");
    let HostError::Guest(g) = e else { panic!("{e}") };
    assert_eq!((g.kind, e.retry()), (Kind::Refused, Retry::Later), "{e}");
    assert!(matches!(g.refused.as_ref().map(|r| &r.cause), Some(RefusalCause::Recipients)));
    assert_eq!(g.message_id.as_deref(), Some(mid(&outcomes[1])));
    assert_eq!(outcomes[1].recipients.iter().map(|x| x.reply.code.as_str()).collect::<Vec<_>>(), ["451"]);
    // The permanent one.
    assert_eq!(outcomes[3].error.as_ref().expect("error").retry(), Retry::FixFirst);
    assert_eq!(outcomes[3].recipients.iter().map(|x| x.reply.code.as_str()).collect::<Vec<_>>(), ["550"]);
    // Mixed: delivered to the accepted one, the refused ones listed with their own advice.
    let codes: Vec<(&str, bool)> = outcomes[2].recipients.iter().map(|x| (x.reply.code.as_str(), x.accepted)).collect();
    assert_eq!(codes, [("451", false), ("550", false), ("250", true)]);
    for i in [0, 2, 4] {
        let v = smtp2_wait_spooled(mid(&outcomes[i])).await;
        assert_eq!(v["rcpt_to"], serde_json::json!([ok]), "message {i}");
        assert_eq!(spooled_count(mid(&outcomes[i])), 1, "message {i} spooled once");
    }
    for i in [1, 3] {
        assert_eq!(spooled_count(mid(&outcomes[i])), 0, "message {i} must not reach the spool");
    }
}

#[tokio::test]
async fn an_oversize_message_refused_after_its_data_is_permanent_and_the_batch_goes_on() {
    let r = rig();
    let cfg = smtp2_tenant(Some(r.port("RIG_SMTP2_NOSIZE_PORT")));
    let limit: u64 = r.get("RIG_SMTP2_SIZE_LIMIT").parse().expect("limit");
    let ok = "someone@smtp2.test";
    let mut big = message(&[ok], "batch oversize");
    big.text_body = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n".repeat((limit / 64 + 1024) as usize);
    let messages = vec![message(&[ok], "before oversize"), big, message(&[ok], "after oversize")];
    let outcomes = ops::send_batch(plugin(), &cfg, "q", &messages, &NoSyncState, &mut NoJournal).await.expect("batch");
    assert_eq!(deliveries(&outcomes), [Delivery::Delivered, Delivery::Permanent, Delivery::Delivered]);
    let e = outcomes[1].error.as_ref().expect("error");
    let HostError::Guest(g) = e else { panic!("{e}") };
    assert_eq!(g.kind, Kind::Refused, "{e}");
    assert!(matches!(g.refused.as_ref().map(|r| &r.cause), Some(RefusalCause::MessageTooBig(_))), "{e}");
    assert_eq!(outcomes[1].final_reply.as_ref().map(|r| r.code.as_str()), Some("552"));
    let line = e.to_string();
    assert!(line.contains("set by the provider") && !line.contains("Raise the limit"), "{line}");
    for i in [0, 2] {
        smtp2_wait_spooled(mid(&outcomes[i])).await;
    }
    assert_eq!(spooled_count(mid(&outcomes[1])), 0);
}

#[tokio::test]
async fn a_connection_cut_after_a_final_dot_leaves_that_message_uncertain_and_sends_nothing_after_it() {
    let r = rig();
    let (me, pw) = test_box(17);
    // Cut right after the final dot of message 3 (index 2) of 5.
    let k = 3;
    let proxy = dot_cut_proxy((r.get("RIG_SMTP_NOTLS_HOST").to_string(), r.port("RIG_SMTP_NOTLS_PORT")), k).await;
    let mut smtp = ServerSpec::new("127.0.0.1", proxy.port, false, &me, &pw);
    smtp.insecure_plaintext = true;
    let cfg = tenant("imap", &inbound(), &smtp, true);
    let messages: Vec<Outgoing> = (0..5).map(|i| message(&[&me], &format!("cut batch {i}"))).collect();
    let mut journal = Journal::default();
    let outcomes = ops::send_batch(plugin(), &cfg, "q", &messages, &NoSyncState, &mut journal).await.expect("batch");
    assert_eq!(
        deliveries(&outcomes),
        [Delivery::Delivered, Delivery::Delivered, Delivery::Uncertain, Delivery::NotSent, Delivery::NotSent]
    );
    // A crash at any point leaves at most two committed messages without an outcome; nothing
    // after the cut message is committed.
    assert_journal(&journal.events, &[0, 1, 2], &["delivered", "delivered", "uncertain", "not-sent", "not-sent"]);
    let e = outcomes[2].error.as_ref().expect("error");
    assert_eq!(e.retry(), Retry::Uncertain, "{e}");
    assert!(e.to_string().contains(mid(&outcomes[2])), "the Message-ID is named: {e}");
    for o in &outcomes[3..] {
        let e = o.error.as_ref().expect("error");
        assert_eq!(e.retry(), Retry::Later, "{e}");
        assert!(e.to_string().contains("not sent"), "{e}");
    }
    // The server got exactly k final dots: no data of any later message went out.
    let forwarded = proxy.forwarded.lock().expect("lock").clone();
    assert!(nth_end_of_data(&forwarded, k).is_some() && nth_end_of_data(&forwarded, k + 1).is_none());
    let withheld = proxy.withheld.lock().expect("lock").clone();
    assert!(nth_end_of_data(&[b"\r\n".as_slice(), &withheld].concat(), 1).is_none(), "no later data: {:?}", String::from_utf8_lossy(&withheld));
    // The ones before arrived exactly once.
    let before: Vec<&str> = outcomes[..2].iter().map(mid).collect();
    assert_eq!(wait_in_box17(&before).await, [1, 1]);
    assert!(in_box17(mid(&outcomes[2])) <= 1, "the uncertain one at most once");
    for o in &outcomes[3..] {
        assert_eq!(in_box17(mid(o)), 0, "nothing after the uncertain message");
    }
}

// ---- the messages' bytes one by one (need-message) ----

/// How many times each Message-ID is in `user`'s INBOX, waiting (at most 30 s) until every
/// one of `expected` is there.
async fn wait_in_inbox(user: &str, expected: &[&str]) -> Vec<usize> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let listing = rig().listing(user, "INBOX");
        let counts: Vec<usize> = expected.iter().map(|m| listing.iter().filter(|(_, _, id)| id == m).count()).collect();
        if counts.iter().all(|&c| c > 0) || std::time::Instant::now() >= deadline {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A message composed by hand (as an outbox would have stored it), from and to `me`.
fn composed(me: &str, what: &str, body: &[u8]) -> ComposedMessage {
    let id = format!("{}@batch.example.test", unique(what).replace(' ', "-"));
    let mut raw = format!("From: <{me}>\r\nTo: <{me}>\r\nSubject: {what}\r\nMessage-ID: <{id}>\r\nDate: Mon, 7 Dec 2026 01:00:00 +0000\r\n\r\n").into_bytes();
    raw.extend_from_slice(body);
    ComposedMessage { message_id: id, envelope_from: me.into(), envelope_to: vec![me.into()], raw }
}

#[tokio::test]
async fn a_nul_in_message_2_of_3_gives_it_its_own_outcome_and_1_and_3_arrive_once() {
    let (me, pw) = test_box(63);
    let inb = ServerSpec::new("localhost", rig().port("RIG_IMAPS_PORT"), true, &me, &pw);
    let smtp = ServerSpec::new("localhost", rig().port("RIG_SUBMISSION_PORT"), false, &me, &pw);
    let cfg = tenant("imap", &inb, &smtp, true);
    let messages = vec![
        composed(&me, "nul batch first", b"first\r\n"),
        composed(&me, "nul batch second", b"bin\0ary\r\n"),
        composed(&me, "nul batch third", b"third\r\n.leading dot\r\n"),
    ];
    let mut journal = Journal::default();
    let outcomes = ops::send_composed_batch(plugin(), &cfg, "q", &messages, &NoSyncState, &mut journal).await.expect("batch");
    assert_eq!(deliveries(&outcomes), [Delivery::Delivered, Delivery::Permanent, Delivery::Delivered]);
    // Message 2 was never handed to the server: no commit point, its own typed outcome.
    assert_journal(&journal.events, &[0, 2], &["delivered", "permanent", "delivered"]);
    let e = outcomes[1].error.as_ref().expect("error");
    let HostError::Guest(g) = e else { panic!("{e}") };
    assert_eq!((g.kind, e.retry()), (Kind::InvalidInput, Retry::FixFirst), "{e}");
    assert!(e.to_string().contains("NUL byte") && outcomes[1].final_reply.is_none(), "{e}");
    assert_eq!(g.message_id.as_deref(), Some(messages[1].message_id.as_str()));
    let ids: Vec<&str> = messages.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(wait_in_inbox(&me, &[ids[0], ids[2]]).await, [1, 1], "1 and 3 arrive once each");
    assert_eq!(wait_in_inbox(&me, &[ids[1]]).await, [0], "2 never arrives");
}

/// A tenant whose queue "q" sends through `sink` (smtp-sink, plain TCP, the test server opt-in).
fn sink_tenant(sink: &mailplug_tests::SmtpSink) -> TenantConfig {
    let (me, pw) = test_box(63);
    let inb = ServerSpec::new("localhost", rig().port("RIG_IMAPS_PORT"), true, &me, &pw);
    let mut smtp = ServerSpec::new("127.0.0.1", sink.port, false, &me, "any");
    smtp.insecure_plaintext = true;
    tenant("imap", &inb, &smtp, true)
}

#[tokio::test]
async fn a_batch_four_times_the_guest_memory_cap_goes_through() {
    let sink = mailplug_tests::SmtpSink::start(16);
    let mut cfg = sink_tenant(&sink);
    // 64 messages of 1 MB through a component that may use 16 MB: the session holds one or
    // two messages at a time, never the batch.
    cfg.limits.guest_memory_mb = 16;
    let body = "The quick brown fox jumps over the lazy dog, again and again, line after line.\n".repeat((1 << 20) / 80);
    let messages: Vec<Outgoing> =
        (0..64).map(|i| Outgoing { to: vec!["sink@example.test".into()], subject: format!("big batch {i}"), text_body: body.clone() }).collect();
    let outcomes = ops::send_batch(plugin(), &cfg, "q", &messages, &NoSyncState, &mut NoJournal).await.expect("batch");
    assert_eq!(outcomes.len(), 64);
    for o in &outcomes {
        assert!(o.delivered(), "message {}: {:?}", o.index, o.error);
        assert!(o.final_reply.as_ref().is_some_and(|r| r.code.starts_with('2')));
    }
}

/// Counts what the host did for a batch: commit points and armed writes, in order.
#[derive(Default)]
struct Counting {
    commits: Vec<usize>,
    armed: Vec<usize>,
}

impl BatchJournal for Counting {
    fn commit_point(&mut self, index: usize, _message_id: &str) -> Result<(), HostError> {
        self.commits.push(index);
        Ok(())
    }
    fn armed_write(&mut self, index: usize) {
        assert_eq!(self.commits.last(), Some(&index), "the commit point comes first");
        self.armed.push(index);
    }
}

/// smtp-sink's dump of what it received: each transaction appended to a file after a separator
/// line, dot-stuffing removed, LF line ends (`SmtpSink::start_dumping`).
struct Dump {
    _dir: TempPath,
    path: std::path::PathBuf,
    separator: &'static str,
}

impl Dump {
    /// A sink that dumps into a fresh folder of its own (writable by `nobody`, as smtp-sink runs).
    fn start(name: &str, separator: &'static str) -> (Dump, mailplug_tests::SmtpSink) {
        let dir = temp_dir(name);
        std::fs::set_permissions(&*dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).expect("chmod");
        let path = dir.join("dump");
        let sink = mailplug_tests::SmtpSink::start_dumping(16, &path, &format!("{separator}\\n"));
        (Dump { _dir: dir, path, separator }, sink)
    }

    /// The dump once it holds `n` transactions (it is written as each one ends), or as it is
    /// after 20 s.
    async fn wait(&self, n: usize) -> Vec<u8> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read(&self.path).unwrap_or_default();
            let count = text.windows(self.separator.len()).filter(|w| *w == self.separator.as_bytes()).count();
            if count >= n || std::time::Instant::now() >= deadline {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Armed writes (`arm-write`) against smtp-sink, which answers a message's final dot and the
/// next envelope's MAIL, RCPT and DATA in one write: most messages go out as their 354
/// arrives, each with its commit point first, and each transaction the server read holds
/// exactly its own message (smtp-sink's dump: the right bytes went out for the right 354).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn armed_writes_send_most_messages_of_a_batch_as_their_354_arrives() {
    const SEPARATOR: &str = "=====mailplug-armed-message=====";
    let (dump, sink) = Dump::start("armed", SEPARATOR);
    let cfg = sink_tenant(&sink);
    let n = 40;
    let messages: Vec<Outgoing> = (0..n)
        .map(|i| Outgoing { to: vec!["sink@example.test".into()], subject: format!("armed {i}"), text_body: format!("Armed {i} and ready.\n").repeat(600) })
        .collect();
    let mut journal = Counting::default();
    let outcomes = ops::send_batch(plugin(), &cfg, "q", &messages, &NoSyncState, &mut journal).await.expect("batch");
    assert!(outcomes.iter().all(|o| o.delivered()), "{:?}", outcomes.iter().find(|o| !o.delivered()));
    assert_eq!(journal.commits, (0..n).collect::<Vec<_>>(), "one commit point per message, in order");
    // Message 0's 354 comes with the first replies; any later message can go armed. A read
    // split by the scheduler falls back to the component's own write, so not all of them must.
    assert!(journal.armed.len() >= n / 2, "armed writes: {:?}", journal.armed);
    assert!(journal.armed.windows(2).all(|w| w[0] < w[1]), "{:?}", journal.armed);
    let text = String::from_utf8_lossy(&dump.wait(n).await).into_owned();
    drop(sink);
    let parts: Vec<&str> = text.split(SEPARATOR).skip(1).collect();
    assert_eq!(parts.len(), n, "one transaction per message");
    for (i, part) in parts.iter().enumerate() {
        assert!(part.contains(&format!("Subject: armed {i}\n")), "transaction {i} is message {i}");
        assert_eq!(part.matches("and ready.").count(), 600, "transaction {i}: its whole body, nothing else");
        assert_eq!(part.matches(&format!("Armed {i} and ready.")).count(), 600, "transaction {i}: its own body");
    }
}

/// Splits into lines at CRLF, bare CR and bare LF, as the encoder does.
fn lines_of(raw: &[u8]) -> Vec<&[u8]> {
    let mut lines = Vec::new();
    let mut rest = raw;
    while let Some(i) = rest.iter().position(|&b| b == b'\r' || b == b'\n') {
        lines.push(&rest[..i]);
        let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') { 2 } else { 1 };
        rest = &rest[i + skip..];
    }
    if !rest.is_empty() {
        lines.push(rest);
    }
    lines
}

#[tokio::test]
async fn random_messages_rich_in_cr_lf_dots_and_nuls_arrive_line_for_line_through_the_wasm_scan_or_the_hosts() {
    // smtp-sink appends each transaction to a dump file, dot-stuffing removed and with LF line
    // ends: what the server read as the message, to compare with what was handed over.
    const SEPARATOR: &str = "=====mailplug-scan-message=====";
    let (dump, sink) = Dump::start("scan", SEPARATOR);
    let (me, pw) = test_box(63);
    let inb = ServerSpec::new("localhost", rig().port("RIG_IMAPS_PORT"), true, &me, &pw);
    let mut smtp = ServerSpec::new("127.0.0.1", sink.port, false, &me, "any");
    smtp.insecure_plaintext = true;
    let cfg = tenant("imap", &inb, &smtp, true);
    // Bodies around the scan's block (16) and group (64) borders, from clean CRLF text to
    // text full of bare CR, bare LF, lines starting with dots, 8-bit bytes and the odd NUL.
    let mut rng = mailplug_wire::testing::Rng(0x7363_616e_2d65_3265);
    let messages: Vec<ComposedMessage> = (0..240)
        .map(|i| {
            let id = format!("scan-{i}-{}@batch.example.test", std::process::id());
            let mut raw = format!("Subject: scan {i}\r\nMessage-ID: <{id}>\r\n\r\n").into_bytes();
            let len = match i % 3 {
                0 => 16 * rng.below(40) + rng.below(3),
                1 => 64 * rng.below(12) + rng.below(34),
                _ => rng.below(1200),
            };
            let rare = 1 + rng.below(80);
            let body_start = raw.len();
            while raw.len() - body_start < len {
                let r = rng.below(rare * 8);
                match r {
                    0 => raw.push(b'.'),
                    1 => raw.push(b'\r'),
                    2 => raw.push(b'\n'),
                    3 if rng.below(40) == 0 => raw.push(0),
                    4 => raw.push(0xE9),
                    5..=9 => raw.extend_from_slice(b"\r\n"),
                    10 => raw.extend_from_slice(b"\r\n."),
                    11 => raw.extend_from_slice(b"\n.\r\n"),
                    _ => raw.push(b'a' + (r % 26) as u8),
                }
            }
            if i % 4 == 3 {
                // Every fourth one clean and ending with CRLF (some with 8-bit bytes): the
                // host checks these itself and writes them without handing them over.
                raw.truncate(body_start);
                for k in 0..=rng.below(200) {
                    raw.extend_from_slice(if k % 7 == 6 { "Gr\u{fc}\u{df}e.\r\n".as_bytes() } else { b"clean line.\r\n" });
                }
            }
            ComposedMessage { message_id: id, envelope_from: me.clone(), envelope_to: vec!["sink@example.test".into()], raw }
        })
        .collect();
    // Both paths are taken: bytes the host checked and writes itself, and bytes it hands over.
    let host_checked = messages.iter().filter(|m| mailplug_wire::clean_for_data(&m.raw).is_some()).count();
    assert!(host_checked >= 60 && host_checked < 150, "{host_checked} of {} clean", messages.len());
    let outcomes = ops::send_composed_batch(plugin(), &cfg, "q", &messages, &NoSyncState, &mut NoJournal).await.expect("batch");
    assert_eq!(outcomes.len(), messages.len());
    let mut sent = Vec::new();
    for (m, o) in messages.iter().zip(&outcomes) {
        if m.raw.contains(&0) {
            assert_eq!(o.delivery, Delivery::Permanent, "{}: a NUL must refuse the message", m.message_id);
            assert!(o.error.as_ref().is_some_and(|e| e.to_string().contains("NUL byte")), "{:?}", o.error);
        } else {
            assert!(o.delivered(), "{}: {:?}", m.message_id, o.error);
            sent.push(m);
        }
    }
    assert!(sent.len() > 150 && sent.len() < messages.len(), "{} of {} without a NUL", sent.len(), messages.len());
    let text = dump.wait(sent.len()).await;
    drop(sink);
    let sep = format!("{SEPARATOR}\n");
    let mut parts: Vec<&[u8]> = Vec::new();
    let mut rest = &text[..];
    while let Some(at) = rest.windows(sep.len()).position(|w| w == sep.as_bytes()) {
        if !parts.is_empty() || at > 0 {
            parts.push(&rest[..at]);
        }
        rest = &rest[at + sep.len()..];
    }
    parts.push(rest);
    assert_eq!(parts.len(), sent.len(), "one transaction per message without a NUL, none more");
    for (m, part) in sent.iter().zip(parts) {
        // smtp-sink's headers come first; the message starts with its Subject.
        let start = part.windows(14).position(|w| w == b"\nSubject: scan").expect("message in the dump") + 1;
        let got = &part[start..];
        let mut want: Vec<u8> = lines_of(&m.raw).join(&b"\n"[..]);
        want.extend_from_slice(b"\n\n");
        assert!(got == want.as_slice(), "{}: the server read\n{:?}\ninstead of\n{:?}", m.message_id, String::from_utf8_lossy(got), String::from_utf8_lossy(&want));
    }
}

// ---- through the CLI ----

fn temp_dir(name: &str) -> TempPath {
    TempPath::dir(&format!("batch-{name}"))
}

#[test]
fn cli_send_batch_reports_each_message_and_fails_when_one_was_not_delivered() {
    let dir = temp_dir("cli");
    let cfg = smtp2_cli_config(&dir, "batch", false);
    let drafts = dir.join("drafts");
    std::fs::create_dir_all(&drafts).expect("drafts");
    let nouser = rig().get("RIG_SMTP2_NOUSER_RCPT");
    std::fs::write(drafts.join("01.toml"), format!("to = \"someone@smtp2.test\"\nsubject = \"{}\"\nbody = \"one\\n\"\n", unique("cli batch 1"))).expect("draft");
    std::fs::write(drafts.join("02.json"), serde_json::json!({"to": [nouser], "subject": unique("cli batch 2"), "body": "two"}).to_string()).expect("draft");
    std::fs::write(drafts.join("notes.txt"), "not a draft").expect("note");
    let lines = dir.join("more.jsonl");
    std::fs::write(&lines, format!("{}\n\n", serde_json::json!({"to": "someone@smtp2.test", "subject": unique("cli batch 3"), "body": "three"}))).expect("lines");
    let run = |json: bool| {
        let mut args = vec!["send", "--config", cfg.to_str().expect("utf8"), "--queue", "out", "--batch", drafts.to_str().expect("utf8"), "--batch-file", lines.to_str().expect("utf8")];
        if json {
            args.push("--json");
        }
        run_mailplug(&args)
    };
    let out = run(true);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "one message was not delivered: {stdout} {stderr}");
    let objects: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert_eq!(objects.len(), 3, "one object per message: {stdout}");
    let shown: Vec<(u64, &str, bool)> = objects.iter().map(|v| (v["index"].as_u64().unwrap(), v["delivery"].as_str().unwrap(), v["sent"].as_bool().unwrap())).collect();
    assert_eq!(shown, [(0, "delivered", true), (1, "permanent", false), (2, "delivered", true)]);
    assert!(objects[0]["source"].as_str().unwrap().ends_with("01.toml"));
    assert!(objects[2]["source"].as_str().unwrap().ends_with("more.jsonl:1"));
    assert_eq!(objects[1]["retry"], "fix-first");
    assert_eq!(objects[1]["error"]["kind"], "refused");
    assert_eq!(objects[1]["recipients"][0]["code"], "550");
    assert!(objects[1]["explanation"]["action"]["de"].is_string(), "{}", objects[1]);
    assert!(stderr.contains("skipping") && stderr.contains("notes.txt"), "{stderr}");
    for v in [&objects[0], &objects[2]] {
        assert_eq!(spooled_count(v["message_id"].as_str().unwrap()), 1, "{v}");
    }
    // Text: one line per message.
    let out = run(false);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1));
    let kinds: Vec<&str> = stdout.lines().map(|l| l.split(' ').nth(1).unwrap_or("")).collect();
    assert_eq!(kinds, ["delivered", "permanent", "delivered"], "{stdout}");
    // A bad draft is a usage error: nothing is sent.
    std::fs::write(drafts.join("03.json"), "{\"to\": 5}").expect("bad");
    let out = run(true);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty());
}
