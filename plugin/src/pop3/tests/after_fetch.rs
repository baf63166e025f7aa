//! First-sync policies and deletion after the host stored the messages.

use super::*;

fn deleting() -> Mailbox {
    configured(AfterFetch::Delete, FirstSync::All, limits())
}

/// Logs in on a server without PIPELINING; STAT was just sent.
fn logged_in_one_at_a_time(mailbox: Mailbox, state: Option<&[u8]>, chunk: usize) -> Host {
    let mut h = Host::new(mailbox, state, chunk);
    h.connect();
    h.exchange(GREETING, b"CAPA\r\n", vec![]);
    h.exchange(CAPA_PLAIN_NO_PIPELINING, &auth_plain(), vec![]);
    h.exchange(b"+OK Logged in.\r\n", b"STAT\r\n", vec![]);
    h
}

/// STAT, UIDL and LIST answered one at a time; after LIST we must write `expect_written`.
fn list_one_at_a_time(h: &mut Host, entries: &[(u32, &str, u64)], expect_written: &[u8], expect_others: Vec<Action>) {
    let total: u64 = entries.iter().map(|e| e.2).sum();
    h.exchange(format!("+OK {} {total}\r\n", entries.len()).as_bytes(), b"UIDL\r\n", vec![]);
    let uidl: String = entries.iter().map(|(n, uid, _)| format!("{n} {uid}\r\n")).collect();
    h.exchange(format!("+OK\r\n{uidl}.\r\n").as_bytes(), b"LIST\r\n", vec![]);
    let list: String = entries.iter().map(|(n, _, size)| format!("{n} {size}\r\n")).collect();
    h.exchange(format!("+OK\r\n{list}.\r\n").as_bytes(), expect_written, expect_others);
}

fn msg(subject: &str) -> String {
    format!("Subject: {subject}\r\n\r\nbody\r\n")
}

fn four() -> Vec<u8> {
    listing(&[(1, "u1", 30), (2, "u2", 30), (3, "u3", 30), (4, "u4", 30)])
}

#[test]
fn first_sync_new_only_delivers_nothing_and_remembers_the_mailbox() {
    let mut state_after = Vec::new();
    for chunk in CHUNKS {
        let mb = configured(AfterFetch::Delete, FirstSync::NewOnly, limits());
        let mut h = logged_in(mb, None, chunk);
        h.exchange(&four(), b"QUIT\r\n", vec![]);
        h.exchange(b"+OK\r\n", b"", finished(0, 0));
        assert_eq!(state_of(&h.session), state(&[], &[], &["u1", "u2", "u3", "u4"]));
        state_after = h.session.sync_state().unwrap();
    }
    // Next run: only the new message is fetched, and with Delete only it is deleted; the old
    // ones were never imported, so they stay on the server.
    let mb = configured(AfterFetch::Delete, FirstSync::NewOnly, limits());
    let mut h = logged_in(mb, Some(&state_after), 3);
    h.exchange(&listing(&[(1, "u2", 30), (2, "u4", 30), (3, "u5", 30)]), b"RETR 3\r\n", vec![]);
    h.exchange(&wire(&msg("5")), b"", vec![deliver("u5", msg("5").as_bytes())]);
    let (w, _) = h.event(Event::Stored).unwrap();
    assert_eq!(text(&w), "DELE 3\r\nQUIT\r\n");
    h.exchange(b"+OK\r\n+OK\r\n", b"", finished(1, 0));
    // u1 and u3 were deleted by someone else: pruned. u5 was deleted by us: forgotten.
    assert_eq!(state_of(&h.session), state(&[], &[], &["u2", "u4"]));
    assert!(!text(&h.all_written).contains("DELE 1") && !text(&h.all_written).contains("DELE 2"));
}

#[test]
fn first_sync_newest_n_delivers_the_highest_numbers() {
    for chunk in CHUNKS {
        let mut h = logged_in(configured(AfterFetch::default(), FirstSync::Newest(2), limits()), None, chunk);
        h.exchange(&four(), b"RETR 3\r\nRETR 4\r\n", vec![]);
        assert_eq!(state_of(&h.session), state(&[], &[], &["u1", "u2"]));
        h.exchange(
            &[wire(&msg("3")), wire(&msg("4"))].concat(),
            b"",
            vec![deliver("u3", msg("3").as_bytes()), deliver("u4", msg("4").as_bytes())],
        );
        let (w, _) = h.event(Event::Stored).unwrap();
        assert_eq!(text(&w), "QUIT\r\n", "Keep deletes nothing");
        h.exchange(b"+OK\r\n", b"", finished(2, 0));
        assert_eq!(state_of(&h.session), state(&["u3", "u4"], &[], &["u1", "u2"]));
    }

    // More wanted than there are: everything. None wanted: nothing.
    let mut h = logged_in(configured(AfterFetch::default(), FirstSync::Newest(9), limits()), None, usize::MAX);
    h.exchange(&listing(&[(1, "u1", 30), (2, "u2", 30)]), b"RETR 1\r\nRETR 2\r\n", vec![]);
    let mut h = logged_in(configured(AfterFetch::default(), FirstSync::Newest(0), limits()), None, usize::MAX);
    h.exchange(&listing(&[(1, "u1", 30), (2, "u2", 30)]), b"QUIT\r\n", vec![]);
    assert_eq!(state_of(&h.session), state(&[], &[], &["u1", "u2"]));

    // The newest three do not fit one batch: the rest of them come in the next run.
    let one = Limits { max_batch_messages: 1, ..limits() };
    let mut h = logged_in(configured(AfterFetch::default(), FirstSync::Newest(3), one), None, usize::MAX);
    h.exchange(&four(), b"RETR 2\r\n", vec![]);
    h.exchange(&wire(&msg("2")), b"", vec![deliver("u2", msg("2").as_bytes())]);
    h.event(Event::Stored).unwrap();
    h.exchange(b"+OK\r\n", b"", finished(1, 2));
    let state_after = h.session.sync_state().unwrap();
    let mut h = logged_in(configured(AfterFetch::default(), FirstSync::Newest(3), one), Some(&state_after), 4);
    h.exchange(&four(), b"RETR 3\r\n", vec![]);
    h.exchange(&wire(&msg("3")), b"", vec![deliver("u3", msg("3").as_bytes())]);
    h.event(Event::Stored).unwrap();
    h.exchange(b"+OK\r\n", b"", finished(1, 1));
}

#[test]
fn first_sync_policy_applies_only_without_a_sync_state() {
    let empty = stored_state(&[]);
    let mut h = logged_in(configured(AfterFetch::default(), FirstSync::NewOnly, limits()), Some(empty.as_bytes()), 7);
    h.exchange(&listing(&[(1, "u1", 30), (2, "u2", 30)]), b"RETR 1\r\nRETR 2\r\n", vec![]);
}

#[test]
fn delete_waits_for_stored_then_pipelines_dele_and_quit() {
    for chunk in CHUNKS {
        let mut h = logged_in(deleting(), None, chunk);
        h.exchange(&two_messages(), b"RETR 1\r\nRETR 2\r\n", vec![]);
        h.exchange(
            &[MSG1_WIRE, MSG2_WIRE].concat(),
            b"",
            vec![deliver("000000015a1b2c3d", MSG1_RAW), deliver("000000025a1b2c3d", MSG2_RAW)],
        );
        assert!(!text(&h.all_written).contains("DELE"), "nothing is deleted before Stored");
        assert_eq!(h.session.deadline(), None);
        let (w, o) = h.event(Event::Stored).unwrap();
        assert_eq!((text(&w), o), ("DELE 1\r\nDELE 2\r\nQUIT\r\n".to_string(), vec![]));
        h.assert_waiting();
        h.exchange(b"+OK Marked to be deleted.\r\n", b"", vec![]);
        h.assert_waiting();
        h.exchange(b"+OK Marked to be deleted.\r\n", b"", vec![]);
        // Until QUIT succeeds nothing is deleted: both are still recorded as stored.
        assert_eq!(state_of(&h.session), stored_state(&["000000015a1b2c3d", "000000025a1b2c3d"]));
        h.exchange(b"+OK Logging out, messages deleted.\r\n", b"", finished(2, 0));
        assert_eq!(state_of(&h.session), stored_state(&[]));
        assert_eq!(h.session.deadline(), None);
    }
}

#[test]
fn delete_without_pipelining_sends_one_command_at_a_time() {
    let mut h = logged_in_one_at_a_time(deleting(), None, 2);
    list_one_at_a_time(&mut h, &[(1, "a", 120), (2, "b", 230)], b"RETR 1\r\n", vec![]);
    h.exchange(MSG1_WIRE, b"RETR 2\r\n", vec![deliver("a", MSG1_RAW)]);
    h.exchange(MSG2_WIRE, b"", vec![deliver("b", MSG2_RAW)]);
    let (w, _) = h.event(Event::Stored).unwrap();
    assert_eq!(text(&w), "DELE 1\r\n");
    h.exchange(b"+OK\r\n", b"DELE 2\r\n", vec![]);
    h.exchange(b"+OK\r\n", b"QUIT\r\n", vec![]);
    h.exchange(b"+OK\r\n", b"", finished(2, 0));
    assert_eq!(state_of(&h.session), stored_state(&[]));
}

#[test]
fn stored_mid_batch_covers_only_what_was_delivered_before_it() {
    // Message 2 turns out larger than LIST said, so after the mid-batch Stored nothing else
    // is delivered: only message 1 is covered, and only it is deleted.
    let small = Limits { max_message_bytes: 100, ..limits() };
    let big = format!("Subject: big\r\n\r\n{}\r\n{}\r\n", "y".repeat(60), "y".repeat(60));
    for chunk in [1, 5, usize::MAX] {
        let mut h = logged_in_one_at_a_time(configured(AfterFetch::Delete, FirstSync::All, small), None, chunk);
        list_one_at_a_time(&mut h, &[(1, "a", 50), (2, "b", 60)], b"RETR 1\r\n", vec![]);
        h.exchange(&wire(&msg("1")), b"RETR 2\r\n", vec![deliver("a", msg("1").as_bytes())]);
        assert_eq!(h.event(Event::Stored).unwrap(), (vec![], vec![]), "no DELE while RETR 2 is outstanding");
        h.assert_waiting();
        assert_eq!(state_of(&h.session), stored_state(&["a"]));
        let (w, o) = h.server(&wire(&big)).unwrap();
        assert_eq!(text(&w), "DELE 1\r\n");
        assert!(matches!(o.as_slice(), [Action::Skipped(s)] if s.id == "pop3:b" && s.size == 140), "{o:?}");
        h.exchange(b"+OK\r\n", b"QUIT\r\n", vec![]);
        h.exchange(b"+OK\r\n", b"", finished_skipping(1, 0, 1));
        assert!(!text(&h.all_written).contains("DELE 2"));
    }

    // Stored arrives between two deliveries; the second one waits for its own Stored.
    let mut h = logged_in_one_at_a_time(deleting(), None, usize::MAX);
    list_one_at_a_time(&mut h, &[(1, "a", 120), (2, "b", 230)], b"RETR 1\r\n", vec![]);
    h.exchange(MSG1_WIRE, b"RETR 2\r\n", vec![deliver("a", MSG1_RAW)]);
    h.event(Event::Stored).unwrap();
    h.exchange(MSG2_WIRE, b"", vec![deliver("b", MSG2_RAW)]);
    assert!(!text(&h.all_written).contains("DELE"));
    assert_eq!(state_of(&h.session), stored_state(&["a"]));
    let (w, _) = h.event(Event::Stored).unwrap();
    assert_eq!(text(&w), "DELE 1\r\n");
    assert_eq!(state_of(&h.session), stored_state(&["a", "b"]));
}

#[test]
fn connection_closed_before_stored_writes_no_dele() {
    // Closed while messages are still coming: a network error; nothing recorded, nothing deleted.
    let mut h = logged_in(deleting(), None, usize::MAX);
    h.exchange(&two_messages(), b"RETR 1\r\nRETR 2\r\n", vec![]);
    h.server(MSG1_WIRE).unwrap();
    let e = h.event(Event::Closed).unwrap_err();
    assert_eq!((e.kind, e.stage), (ErrorKind::Network, Stage::FetchMessage));
    assert_eq!(state_of(&h.session), stored_state(&[]));
    assert!(!text(&h.all_written).contains("DELE"));

    // Closed while the host stores the batch: the Stored that follows finishes the session
    // without writing anything; the next run deletes them without delivering them again.
    let mut h = logged_in(deleting(), None, usize::MAX);
    h.exchange(&two_messages(), b"RETR 1\r\nRETR 2\r\n", vec![]);
    h.server(&[MSG1_WIRE, MSG2_WIRE].concat()).unwrap();
    assert_eq!(h.event(Event::Closed).unwrap(), (vec![], vec![]));
    let (w, o) = h.event(Event::Stored).unwrap();
    assert!(w.is_empty(), "no DELE or QUIT on a closed connection");
    assert_eq!(o, finished(2, 0));
    assert!(!text(&h.all_written).contains("DELE"));
    let state_after = h.session.sync_state().unwrap();
    assert_eq!(text(&state_after), stored_state(&["000000015a1b2c3d", "000000025a1b2c3d"]));

    let mut h = logged_in(deleting(), Some(&state_after), 3);
    h.exchange(&two_messages(), b"DELE 1\r\nDELE 2\r\nQUIT\r\n", vec![]);
    h.exchange(b"+OK\r\n+OK\r\n+OK\r\n", b"", finished(0, 0));
    assert_eq!(state_of(&h.session), stored_state(&[]));
}

#[test]
fn stored_but_still_on_the_server_is_deleted_without_redelivery() {
    // A version-1 state: its seen UIDLs were all stored by the host.
    let v1 = br#"{"v":1,"protocol":"pop3","seen":["u1","gone"]}"#;
    for chunk in CHUNKS {
        let mut h = logged_in(deleting(), Some(v1), chunk);
        h.exchange(&listing(&[(1, "u1", 30), (2, "u2", 30)]), b"RETR 2\r\n", vec![]);
        h.exchange(&wire(&msg("2")), b"", vec![deliver("u2", msg("2").as_bytes())]);
        let (w, _) = h.event(Event::Stored).unwrap();
        assert_eq!(text(&w), "DELE 1\r\nDELE 2\r\nQUIT\r\n");
        h.exchange(b"+OK\r\n+OK\r\n+OK\r\n", b"", finished(1, 0));
        assert_eq!(state_of(&h.session), stored_state(&[]));
    }
    // Keep: the same state only skips it.
    let mut h = logged_in(mailbox(Security::ImplicitTls, basic(), limits()), Some(v1), usize::MAX);
    h.exchange(&listing(&[(1, "u1", 30)]), b"QUIT\r\n", vec![]);
    h.exchange(b"+OK\r\n", b"", finished(0, 0));
    assert_eq!(state_of(&h.session), stored_state(&["u1"]));
    // Without pipelining, with nothing new.
    let mut h = logged_in_one_at_a_time(deleting(), Some(v1), 4);
    list_one_at_a_time(&mut h, &[(1, "x", 30), (2, "u1", 30)], b"RETR 1\r\n", vec![]);
    h.exchange(&wire(&msg("x")), b"", vec![deliver("x", msg("x").as_bytes())]);
    let (w, _) = h.event(Event::Stored).unwrap();
    assert_eq!(text(&w), "DELE 1\r\n");
    h.exchange(b"+OK\r\n", b"DELE 2\r\n", vec![]);
}

#[test]
fn deletions_left_from_earlier_runs_are_bounded_per_run() {
    let stored: Vec<String> = (1..=5).map(|n| format!("u{n}")).collect();
    let refs: Vec<&str> = stored.iter().map(String::as_str).collect();
    let state_before = stored_state(&refs);
    let entries: Vec<(u32, &str, u64)> = refs.iter().enumerate().map(|(i, u)| (i as u32 + 1, *u, 30)).collect();
    let two = Limits { max_batch_messages: 2, ..limits() };
    let mut h = logged_in(configured(AfterFetch::Delete, FirstSync::All, two), Some(state_before.as_bytes()), 64);
    h.exchange(&listing(&entries), b"DELE 1\r\nDELE 2\r\nQUIT\r\n", vec![]);
    h.exchange(b"+OK\r\n+OK\r\n+OK\r\n", b"", finished(0, 0));
    assert_eq!(state_of(&h.session), stored_state(&["u3", "u4", "u5"]));
}

#[test]
fn many_deletions_are_windowed() {
    let uids: Vec<String> = (1..=100).map(|n| format!("u{n}")).collect();
    let refs: Vec<&str> = uids.iter().map(String::as_str).collect();
    let state_before = stored_state(&refs);
    let entries: Vec<(u32, &str, u64)> = refs.iter().enumerate().map(|(i, u)| (i as u32 + 1, *u, 30)).collect();
    let mut h = logged_in(deleting(), Some(state_before.as_bytes()), usize::MAX);
    let first: String = (1..=64).map(|n| format!("DELE {n}\r\n")).collect();
    h.exchange(&listing(&entries), first.as_bytes(), vec![]);
    // 31 answered: 33 still in flight, above half the window.
    h.exchange(&b"+OK\r\n".repeat(31), b"", vec![]);
    // The 32nd brings it to half: topped up to a full window again.
    let more: String = (65..=96).map(|n| format!("DELE {n}\r\n")).collect();
    h.exchange(b"+OK\r\n", more.as_bytes(), vec![]);
    h.exchange(&b"+OK\r\n".repeat(31), b"", vec![]);
    // The last ones go out with the QUIT behind them.
    let rest: String = (97..=100).map(|n| format!("DELE {n}\r\n")).collect::<String>() + "QUIT\r\n";
    h.exchange(b"+OK\r\n", rest.as_bytes(), vec![]);
    h.exchange(&b"+OK\r\n".repeat(36), b"", vec![]);
    let mut sorted = refs.clone();
    sorted.sort_unstable();
    assert_eq!(state_of(&h.session), stored_state(&sorted), "not deleted before QUIT succeeds");
    h.exchange(b"+OK\r\n", b"", finished(0, 0));
    assert_eq!(state_of(&h.session), stored_state(&[]));
}

#[test]
fn dele_refused_is_a_protocol_error_naming_the_message() {
    let mut h = logged_in(deleting(), None, usize::MAX);
    h.exchange(&two_messages(), b"RETR 1\r\nRETR 2\r\n", vec![]);
    h.server(&[MSG1_WIRE, MSG2_WIRE].concat()).unwrap();
    h.event(Event::Stored).unwrap();
    let e = h.fails(b"+OK\r\n-ERR Message is locked\r\n");
    assert_eq!((e.kind, e.stage), (ErrorKind::Protocol, Stage::Logout));
    assert!(e.message.contains("message 2") && e.message.contains("000000025a1b2c3d"), "{e}");
    assert!(e.message.contains("already stored"), "{e}");
    assert_eq!(e.reply.unwrap().text, "Message is locked");
    // Both stay recorded as stored: the next run deletes them, it does not deliver them again.
    assert_eq!(state_of(&h.session), stored_state(&["000000015a1b2c3d", "000000025a1b2c3d"]));
    assert_eq!(h.session.deadline(), None);
}

#[test]
fn quit_failure_leaves_the_messages_recorded_for_deletion_next_run() {
    for chunk in CHUNKS {
        let mut h = logged_in(deleting(), None, chunk);
        h.exchange(&two_messages(), b"RETR 1\r\nRETR 2\r\n", vec![]);
        h.server(&[MSG1_WIRE, MSG2_WIRE].concat()).unwrap();
        h.event(Event::Stored).unwrap();
        let e = h.fails(b"+OK\r\n+OK\r\n-ERR Some deleted messages not removed\r\n");
        assert_eq!((e.kind, e.stage), (ErrorKind::Protocol, Stage::Logout), "{e}");
        assert!(e.message.contains("2 messages marked for deletion"), "{e}");
        assert_eq!(e.reply.unwrap().text, "Some deleted messages not removed");
        assert_eq!(state_of(&h.session), stored_state(&["000000015a1b2c3d", "000000025a1b2c3d"]));
    }

    // The connection ends before QUIT is answered: the run is done, but the deletions are not
    // known to have happened, so they stay recorded.
    let mut h = logged_in(deleting(), None, usize::MAX);
    h.exchange(&two_messages(), b"RETR 1\r\nRETR 2\r\n", vec![]);
    h.server(&[MSG1_WIRE, MSG2_WIRE].concat()).unwrap();
    h.event(Event::Stored).unwrap();
    h.exchange(b"+OK\r\n+OK\r\n", b"", vec![]);
    assert_eq!(h.event(Event::Closed).unwrap(), (vec![], finished(2, 0)));
    assert_eq!(state_of(&h.session), stored_state(&["000000015a1b2c3d", "000000025a1b2c3d"]));

    // The connection ends while DELE replies are outstanding: nothing was committed.
    let mut h = logged_in(deleting(), None, usize::MAX);
    h.exchange(&two_messages(), b"RETR 1\r\nRETR 2\r\n", vec![]);
    h.server(&[MSG1_WIRE, MSG2_WIRE].concat()).unwrap();
    h.event(Event::Stored).unwrap();
    h.exchange(b"+OK\r\n", b"", vec![]);
    let e = h.event(Event::Closed).unwrap_err();
    assert_eq!((e.kind, e.stage), (ErrorKind::Network, Stage::Logout));
    assert!(e.message.contains("nothing was deleted"), "{e}");
    assert_eq!(state_of(&h.session), stored_state(&["000000015a1b2c3d", "000000025a1b2c3d"]));

    // No deletions pending: an -ERR to QUIT changes nothing, the run is done.
    let mut h = logged_in(deleting(), None, usize::MAX);
    h.exchange(&listing(&[]), b"QUIT\r\n", vec![]);
    h.exchange(b"-ERR whatever\r\n", b"", finished(0, 0));
}

#[test]
fn dele_replies_time_out_like_any_other_wait() {
    let mut h = logged_in(deleting(), None, usize::MAX);
    h.exchange(&listing(&[(1, "u1", 120)]), b"RETR 1\r\n", vec![]);
    h.server(MSG1_WIRE).unwrap();
    h.now += 10;
    h.event(Event::Stored).unwrap();
    let deadline = h.session.deadline().unwrap();
    assert_eq!(deadline, h.now + TIMEOUT);
    h.now = deadline;
    let e = h.event(Event::Timer).unwrap_err();
    assert_eq!((e.kind, e.stage), (ErrorKind::Timeout, Stage::Logout));
}

#[test]
fn keep_deletes_nothing_and_ignores_mark_seen() {
    let mb = configured(AfterFetch::Keep { mark_seen: true }, FirstSync::All, limits());
    let mut h = logged_in(mb, Some(stored_state(&["000000015a1b2c3d"]).as_bytes()), usize::MAX);
    h.exchange(&two_messages(), b"RETR 2\r\n", vec![]);
    h.exchange(MSG2_WIRE, b"", vec![deliver("000000025a1b2c3d", MSG2_RAW)]);
    let (w, _) = h.event(Event::Stored).unwrap();
    assert_eq!(text(&w), "QUIT\r\n");
    h.exchange(b"+OK\r\n", b"", finished(1, 0));
    assert!(!text(&h.all_written).contains("DELE"));
}

#[test]
fn move_to_is_refused_for_pop3() {
    let mb = configured(AfterFetch::MoveTo("Archive/Imported".into()), FirstSync::All, limits());
    let e = Pop3Session::new(mb, None).unwrap_err();
    assert_eq!((e.kind, e.stage), (ErrorKind::InvalidInput, Stage::Connect));
    assert!(e.message.contains("Archive/Imported") && e.message.contains("IMAP"), "{e}");
}
