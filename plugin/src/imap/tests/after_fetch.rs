//! First-sync policies, after-fetch actions (mark seen, delete, move/copy, TRYCREATE) and
//! the reporting of skipped messages.

use super::*;

#[test]
fn first_sync_new_only_delivers_nothing_and_starts_at_uidnext() {
    let mut mb = mailbox(Security::ImplicitTls);
    mb.first_sync = FirstSync::NewOnly;
    let script = Script::login()
        .opened(500, 7, Some(901))
        .logout_bye(3);
    let run = ok_run(&mb, None, &script);
    assert!(run.delivered().is_empty());
    assert_eq!(run.sync(), r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":7,"last_uid":900}}}"#);

    // The starting point is kept even if the run fails afterwards (here: the next folder).
    let mut two = mb.clone();
    two.folders = vec!["INBOX".into(), "Archiv".into()];
    let script = Script::login()
        .opened(500, 7, Some(901))
        .c(b"a3 EXAMINE \"Archiv\"\r\n")
        .s(b"a3 NO no such folder\r\n");
    let run = drive_all(|| ImapSession::new(two.clone(), None).unwrap(), &script);
    assert_eq!(run.err().stage, Stage::SelectMailbox);
    assert_eq!(run.sync(), r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":7,"last_uid":900}}}"#);

    // No UIDNEXT: ask for the highest UID.
    let script = Script::login()
        .opened(500, 7, None)
        .c(b"a3 UID FETCH * (UID)\r\n")
        .s(b"* 500 FETCH (UID 873)\r\na3 OK ok\r\n")
        .logout_bye(4);
    let run = ok_run(&mb, None, &script);
    assert!(run.delivered().is_empty());
    assert_eq!(run.sync(), r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":7,"last_uid":873}}}"#);

    // Empty folder without UIDNEXT: 0, no round trip.
    let script = Script::login()
        .opened(0, 7, None)
        .logout(3);
    let run = ok_run(&mb, None, &script);
    let s = run.session.unwrap().sync_state().unwrap();
    assert_eq!(s, br#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":7,"last_uid":0}}}"#);
}

#[test]
fn first_sync_newest_n_fetches_only_the_highest_uids() {
    let mut mb = mailbox(Security::ImplicitTls);
    mb.first_sync = FirstSync::Newest(2);
    let n = MSG2.len();
    let sizes = format!("* 4 FETCH (UID 20 RFC822.SIZE {n})\r\n* 5 FETCH (UID 31 RFC822.SIZE {n})\r\na3 OK ok\r\n");
    // The newest two listed by sequence number, then the body fetch of `uids`.
    let script = |uids: &str, bodies: &[Vec<u8>]| {
        Script::login()
            .opened(5, 7, Some(32))
            .c(b"a3 FETCH 4:* (UID RFC822.SIZE)\r\n")
            .s(sizes.clone())
            .c(format!("a4 UID FETCH {uids} (UID BODY.PEEK[])\r\n"))
            .s([bodies.concat(), b"a4 OK ok\r\n".to_vec()].concat())
            .stored()
            .logout_bye(5)
    };
    let run = ok_run(&mb, None, &script("20,31", &[body_fetch(4, 20, MSG2), body_fetch(5, 31, MSG2)]));
    assert_eq!(
        run.delivered().iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        ["imap:INBOX:7:20", "imap:INBOX:7:31"]
    );
    assert_eq!(run.sync(), r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":7,"last_uid":31}}}"#);

    // With a batch of one, the state starts just below the newest two, so the older ones are
    // never fetched and the other new one comes next run.
    mb.limits.max_batch_messages = 1;
    let run = ok_run(&mb, None, &script("20", &[body_fetch(4, 20, MSG2)]));
    assert_eq!(run.finished(), Some(&FetchSummary { delivered: 1, remaining: 1, skipped: 0 }));
    assert_eq!(run.sync(), r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":7,"last_uid":20}}}"#);
}

#[test]
fn keep_without_mark_seen_writes_nothing_but_logout() {
    let script = Script::login()
        .stored_3_and_4()
        .logout(6);
    ok_run(&with_after(AfterFetch::Keep { mark_seen: false }), None, &script);
}

#[test]
fn mark_seen_after_stored_only() {
    let script = Script::login_rw()
        .stored_3_and_4()
        .c(b"a6 UID STORE 3:4 +FLAGS.SILENT (\\Seen)\r\n")
        .s(b"a6 OK Store completed.\r\n")
        .logout_bye(7);
    let run = ok_run(&with_after(AfterFetch::Keep { mark_seen: true }), None, &script);
    assert_eq!(run.finished(), Some(&FetchSummary { delivered: 2, remaining: 0, skipped: 0 }));
}

#[test]
fn delete_uses_uid_expunge_with_uidplus_and_only_flags_without() {
    // Pipelined in one write; never a plain EXPUNGE.
    let script = Script::deleted_3_and_4();
    let run = ok_run(&with_after(AfterFetch::Delete), None, &script);
    assert!(!String::from_utf8_lossy(&run.wire).contains(" EXPUNGE\r\n"));

    let script = Script::login_rw()
        .stored_3_and_4()
        .c(b"a6 UID STORE 3:4 +FLAGS.SILENT (\\Deleted)\r\n")
        .s(b"a6 OK Store completed.\r\n")
        .logout(7);
    ok_run(&with_after(AfterFetch::Delete), None, &script);
}

#[test]
fn move_uses_uid_move_or_copy_then_delete() {
    let mb = with_after(AfterFetch::MoveTo("Erledigt Übernommen".into()));
    let script = Script::login_rw_with("MOVE UIDPLUS")
        .stored_3_and_4()
        .c(b"a6 UID MOVE 3:4 \"Erledigt &ANw-bernommen\"\r\n")
        .s(b"* OK [COPYUID 5 3:4 10:11] Moved\r\n* 1 EXPUNGE\r\n* 1 EXPUNGE\r\na6 OK Move completed.\r\n")
        .logout(7);
    ok_run(&mb, None, &script);

    // No MOVE: COPY, and only after its OK the delete path (pipelined).
    let script = Script::login_rw_with("UIDPLUS")
        .stored_3_and_4()
        .c(b"a6 UID COPY 3:4 \"Erledigt &ANw-bernommen\"\r\n")
        .s(b"a6 OK [COPYUID 5 3:4 10:11] Copy completed.\r\n")
        .c(b"a7 UID STORE 3:4 +FLAGS.SILENT (\\Deleted)\r\na8 UID EXPUNGE 3:4\r\n")
        .s(b"a7 OK done\r\na8 OK done\r\n")
        .logout(9);
    ok_run(&mb, None, &script);

    // A failed COPY must not flag anything \Deleted.
    let script = Script::login_rw_with("UIDPLUS")
        .stored_3_and_4()
        .c(b"a6 UID COPY 3:4 \"Erledigt &ANw-bernommen\"\r\n")
        .s(b"a6 NO [OVERQUOTA] Quota exceeded\r\n");
    let run = drive_all(|| ImapSession::new(mb.clone(), None).unwrap(), &script);
    let e = run.err();
    assert_eq!((e.kind, e.stage), (ErrorKind::Protocol, Stage::FetchMessage));
    assert!(
        e.message.contains("copy") && e.message.contains("\"INBOX\"") && e.message.contains("Erledigt Übernommen"),
        "{}",
        e.message
    );
    assert_eq!(e.reply.as_ref().unwrap().text, "[OVERQUOTA] Quota exceeded");
    assert!(!String::from_utf8_lossy(&run.wire).contains("Deleted"));
    // The messages are stored: the state already moved past them, and keeps them pending
    // for the next run's retry of the action.
    assert_eq!(
        run.sync(),
        r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":1,"last_uid":4,"pending":[[3,4]]}}}"#
    );
}

#[test]
fn trycreate_creates_the_target_and_retries_once() {
    let mb = with_after(AfterFetch::MoveTo("Done".into()));
    let script = Script::login_rw_with("MOVE")
        .stored_3_and_4()
        .c(b"a6 UID MOVE 3:4 \"Done\"\r\n")
        .s(b"a6 NO [TRYCREATE] Mailbox doesn't exist: Done\r\n")
        // Created and subscribed (a refused SUBSCRIBE does not matter), then moved.
        .c(b"a7 CREATE \"Done\"\r\na8 SUBSCRIBE \"Done\"\r\na9 UID MOVE 3:4 \"Done\"\r\n")
        .s(b"a7 OK Create completed.\r\na8 NO Subscriptions are off.\r\na9 OK Move completed.\r\n")
        .logout(10);
    ok_run(&mb, None, &script);

    // A second TRYCREATE is an error naming the folder and the action.
    let script = Script::login_rw_with("MOVE")
        .stored_3_and_4()
        .c(b"a6 UID MOVE 3:4 \"Done\"\r\n")
        .s(b"a6 NO [TRYCREATE] no such folder\r\n")
        .c(b"a7 CREATE \"Done\"\r\na8 SUBSCRIBE \"Done\"\r\na9 UID MOVE 3:4 \"Done\"\r\n")
        .s(b"a7 OK Create completed.\r\na8 OK Subscribed.\r\na9 NO [TRYCREATE] still none\r\n");
    let run = drive_all(|| ImapSession::new(mb.clone(), None).unwrap(), &script);
    assert!(
        run.err().message.contains("move the fetched messages to \"Done\" in folder \"INBOX\""),
        "{}",
        run.err().message
    );
}

#[test]
fn a_stored_in_the_middle_of_the_batch_writes_nothing_until_the_batch_is_covered() {
    let n = MSG2.len();
    let script = Script::login_rw_with("UIDPLUS")
        .opened(2, 1, None)
        .c(b"a3 UID SEARCH ALL\r\n")
        .s(b"* SEARCH 3 4\r\na3 OK ok\r\n")
        .c(b"a4 UID FETCH 3:4 (UID RFC822.SIZE)\r\n")
        .s(
            format!("* 1 FETCH (UID 3 RFC822.SIZE {n})\r\n* 2 FETCH (UID 4 RFC822.SIZE {n})\r\na4 OK ok\r\n")
                .into_bytes(),
        )
        .c(b"a5 UID FETCH 3:4 (UID BODY.PEEK[])\r\n")
        .s(body_fetch(1, 3, MSG2))
        .stored()
        .c(b"")
        .s([body_fetch(2, 4, MSG2), b"a5 OK ok\r\n".to_vec()].concat())
        .c(b"")
        .idle()
        .stored()
        .c(b"a6 UID STORE 3:4 +FLAGS.SILENT (\\Deleted)\r\na7 UID EXPUNGE 3:4\r\n");
    let run = ok_run(&with_after(AfterFetch::Delete), None, &script);
    assert_eq!(run.delivered().len(), 2);
}

#[test]
fn connection_closed_before_stored_is_an_error_and_changes_nothing() {
    for after in [AfterFetch::Delete, AfterFetch::Keep { mark_seen: true }, AfterFetch::MoveTo("Done".into())] {
        let script = Script::login_rw_with("UIDPLUS MOVE")
            .fetch_3_and_4()
            .idle()
            .s(b"* BYE Autologout\r\n");
        let run = drive_all(|| ImapSession::new(with_after(after.clone()), None).unwrap(), &script);
        assert_eq!(run.err().stage, Stage::FetchMessage);
        assert_eq!(run.session.as_ref().unwrap().sync_state(), None, "nothing stored, nothing committed");

        let script = Script::login_rw_with("UIDPLUS MOVE")
            .fetch_3_and_4()
            .idle()
            .closed();
        let run = drive_all(|| ImapSession::new(with_after(after.clone()), None).unwrap(), &script);
        assert_eq!((run.err().kind, run.err().stage), (ErrorKind::Network, Stage::FetchMessage));
        assert!(run.err().message.contains("folder \"INBOX\""), "{}", run.err().message);
        assert_eq!(run.session.as_ref().unwrap().sync_state(), None);
        let wire = String::from_utf8_lossy(&run.wire).to_string();
        for verb in ["STORE", "EXPUNGE", "MOVE", "COPY"] {
            assert!(!wire.contains(verb), "{verb} written before Stored: {wire}");
        }
    }
}

#[test]
fn each_folder_gets_its_action_before_the_next_select() {
    let mut mb = with_after(AfterFetch::Keep { mark_seen: true });
    mb.folders = vec!["INBOX".into(), "Support".into()];
    let script = Script::login_rw()
        .stored_3_and_4()
        .c(b"a6 UID STORE 3:4 +FLAGS.SILENT (\\Seen)\r\n")
        .s(b"a6 OK done\r\n")
        .c(b"a7 SELECT \"Support\"\r\n")
        .s(b"* 1 EXISTS\r\n* OK [UIDVALIDITY 2] ok\r\na7 OK ok\r\n")
        .c(b"a8 UID SEARCH ALL\r\n")
        .s(b"* SEARCH 9\r\na8 OK ok\r\n")
        .stored_one(9, 9)
        .c(b"a11 UID STORE 9 +FLAGS.SILENT (\\Seen)\r\n")
        .s(b"a11 OK done\r\n")
        .logout_bye(12);
    let run = ok_run(&mb, None, &script);
    assert_eq!(run.finished(), Some(&FetchSummary { delivered: 3, remaining: 0, skipped: 0 }));
}

#[test]
fn move_target_that_is_fetched_is_invalid() {
    for (folders, target) in [(vec![], "inbox"), (vec!["INBOX".to_string(), "Done".to_string()], "Done"), (vec![], "")]
    {
        let mut mb = with_after(AfterFetch::MoveTo(target.into()));
        mb.folders = folders;
        assert_eq!(ImapSession::new(mb, None).unwrap_err().kind, ErrorKind::InvalidInput, "{target:?}");
    }
}

#[test]
fn uidvalidity_change_refetches_everything_even_with_new_only() {
    let mut mb = mailbox(Security::ImplicitTls);
    mb.first_sync = FirstSync::NewOnly;
    let script = Script::login()
        .fetch_3_and_4()
        .stored()
        .logout(6);
    // fetch_3_and_4 reports UIDVALIDITY 1; the state knew 99.
    let state = state_json(99, 50);
    let run = ok_run(&mb, Some(&state), &script);
    assert_eq!(run.delivered().len(), 2);
    assert_eq!(run.sync().as_bytes(), &state_json(1, 4)[..]);
}

#[test]
fn oversized_message_is_reported_once_and_an_omitted_uid_is_not_jumped_over() {
    let mut mb = mailbox(Security::ImplicitTls);
    mb.limits.max_message_bytes = 100;
    let sizes = b"* 1 FETCH (UID 1 RFC822.SIZE 50)\r\n* 2 FETCH (UID 2 RFC822.SIZE 5000)\r\n* 3 FETCH (UID 3 RFC822.SIZE 60)\r\na4 OK ok\r\n";
    // UIDs 1 to 3 listed and sized, 1 and 3 asked for; the server answers with `bodies`.
    let script = |bodies: &[Vec<u8>]| {
        Script::login()
            .opened(3, 1, None)
            .c(b"a3 UID SEARCH ALL\r\n")
            .s(b"* SEARCH 1 2 3\r\na3 OK ok\r\n")
            .c(b"a4 UID FETCH 1:3 (UID RFC822.SIZE)\r\n")
            .s(sizes)
            .c(b"a5 UID FETCH 1,3 (UID BODY.PEEK[])\r\n")
            .s([bodies.concat(), b"a5 OK ok\r\n".to_vec()].concat())
            .stored()
            .logout_bye(6)
    };
    // Run 1: UID 2 is too big; the server leaves UID 1 out of its FETCH answer.
    let run = ok_run(&mb, None, &script(&[body_fetch(3, 3, MSG2)]));
    let skipped: Vec<_> =
        run.actions.iter().filter_map(|a| if let Action::Skipped(s) = a { Some(s) } else { None }).collect();
    assert_eq!(skipped.len(), 1);
    assert_eq!(
        (skipped[0].id.as_str(), skipped[0].folder.as_str(), skipped[0].size),
        ("imap:INBOX:1:2", "INBOX", 5000)
    );
    assert!(
        skipped[0].reason.contains("max_message_bytes") && skipped[0].reason.contains("raise"),
        "{}",
        skipped[0].reason
    );
    assert_eq!(run.finished(), Some(&FetchSummary { delivered: 1, remaining: 0, skipped: 1 }));
    // UID 1 was never delivered: last_uid stays below it, and UID 2 is remembered as reported.
    let state = run.sync();
    assert_eq!(state, r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":1,"last_uid":0,"skipped":[2]}}}"#);

    // Run 2 with that state: UID 1 is asked for again, UID 2 is not reported again.
    let run = ok_run(&mb, Some(state.as_bytes()), &script(&[body_fetch(1, 1, MSG2), body_fetch(3, 3, MSG2)]));
    assert!(!run.actions.iter().any(|a| matches!(a, Action::Skipped(_))));
    assert_eq!(run.finished(), Some(&FetchSummary { delivered: 2, remaining: 0, skipped: 0 }));
    let state = run.sync();
    assert_eq!(state, r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":1,"last_uid":3}}}"#);

    // Run 3: nothing above 3, nothing reported.
    let script = Script::login()
        .opened(3, 1, Some(4))
        .logout(3);
    let run = ok_run(&mb, Some(state.as_bytes()), &script);
    assert!(run.actions.iter().all(|a| !matches!(a, Action::Skipped(_) | Action::Deliver(_))));
}

#[test]
fn skipped_message_gets_no_after_fetch_action() {
    let mut mb = with_after(AfterFetch::Delete);
    mb.limits.max_message_bytes = 100;
    let script = Script::login_rw_with("UIDPLUS")
        .opened(2, 1, None)
        .c(b"a3 UID SEARCH ALL\r\n")
        .s(b"* SEARCH 1 2\r\na3 OK ok\r\n")
        .c(b"a4 UID FETCH 1:2 (UID RFC822.SIZE)\r\n")
        .s(b"* 1 FETCH (UID 1 RFC822.SIZE 50)\r\n* 2 FETCH (UID 2 RFC822.SIZE 5000)\r\na4 OK ok\r\n")
        .c(b"a5 UID FETCH 1 (UID BODY.PEEK[])\r\n")
        .s([body_fetch(1, 1, MSG2), b"a5 OK ok\r\n".to_vec()].concat())
        .stored()
        .c(b"a6 UID STORE 1 +FLAGS.SILENT (\\Deleted)\r\na7 UID EXPUNGE 1\r\n")
        .s(b"a6 OK ok\r\na7 OK ok\r\n")
        .logout(8);
    let run = ok_run(&mb, None, &script);
    assert_eq!(run.sync(), r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":1,"last_uid":2}}}"#);
}

/// A 50,000-message folder, first sync All, default limits: no SEARCH line grows with the
/// folder; UIDs and sizes are listed one FETCH line per message in UID windows sized to the
/// batch (widened while they come back short), and only the batch is kept.
#[test]
fn first_sync_of_fifty_thousand_messages_fits_the_limits() {
    const COUNT: u32 = 50_000;
    let mut mb = mailbox(Security::ImplicitTls);
    mb.limits = Limits::default();
    let body = b"Subject: x\r\n\r\nhi\r\n";
    // Every other UID is gone, so a SEARCH answer would be about 300 KB.
    let listing = |tag: &str, from: u32, to: u32| {
        let mut v = Vec::new();
        for uid in (from..=to).filter(|u| u % 2 == 0) {
            v.extend_from_slice(format!("* {} FETCH (UID {uid} RFC822.SIZE {})\r\n", uid / 2, body.len()).as_bytes());
        }
        v.extend_from_slice(format!("{tag} OK ok\r\n").as_bytes());
        v
    };
    let batch: Vec<u32> = (1..=500).map(|i| i * 2).collect();
    let fetch_cmd = format!("a5 UID FETCH {} (UID BODY.PEEK[])\r\n", super::command::sequence_set(&batch));
    let mut bodies = Vec::new();
    for uid in &batch {
        bodies.extend(body_fetch(uid / 2, *uid, body));
    }
    bodies.extend_from_slice(b"a5 OK ok\r\n");
    let (first, second) = (listing("a3", 1, 500), listing("a4", 501, 1500));
    let script = Script::login()
        .opened(50000, 1, Some(100001))
        .c(b"a3 UID FETCH 1:500 (UID RFC822.SIZE)\r\n")
        .s(first.clone())
        .c(b"a4 UID FETCH 501:1500 (UID RFC822.SIZE)\r\n")
        .s(second.clone())
        .c(fetch_cmd.clone())
        .s(bodies.clone())
        .stored()
        .logout_bye(6);
    for chunk in [usize::MAX, 4096, 333] {
        let run = drive(ImapSession::new(mb.clone(), None).unwrap(), &script, chunk);
        assert!(run.error.is_none(), "{:?}", run.error);
        assert_eq!(run.delivered().len(), 500);
        assert_eq!(run.finished(), Some(&FetchSummary { delivered: 500, remaining: COUNT - 500, skipped: 0 }));
        assert_eq!(run.sync(), r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":1,"last_uid":1000}}}"#);
    }
    // The next run continues above the last UID, the same way.
    let script = Script::login()
        .opened(50000, 1, Some(100001))
        .c(b"a3 UID FETCH 1001:1500 (UID RFC822.SIZE)\r\n");
    let state = state_json(1, 1000);
    let run = drive(ImapSession::new(mb.clone(), Some(&state)).unwrap(), &script, usize::MAX);
    assert!(run.error.is_none(), "{:?}", run.error);
}

#[test]
fn sparse_large_folder_widens_windows_and_counts_the_rest() {
    let mut mb = mailbox(Security::ImplicitTls);
    mb.limits.max_batch_messages = 2;
    let n = MSG2.len();
    let script = Script::login()
        // 100 messages could make a SEARCH line longer than the 1024-byte limit.
        .s(b"* 100 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\n* OK [UIDNEXT 5001] ok\r\na2 OK ok\r\n")
        .c(b"a3 UID FETCH 1:2 (UID RFC822.SIZE)\r\n")
        .s(b"a3 OK ok\r\n")
        .c(b"a4 UID FETCH 3:6 (UID RFC822.SIZE)\r\n")
        .s(b"a4 OK ok\r\n")
        .c(b"a5 UID FETCH 7:14 (UID RFC822.SIZE)\r\n")
        .s(format!("* 1 FETCH (UID 10 RFC822.SIZE {n})\r\na5 OK ok\r\n"))
        .c(b"a6 UID FETCH 15:30 (UID RFC822.SIZE)\r\n")
        .s(
            format!("* 3 FETCH (UID 25 RFC822.SIZE {n})\r\n* 2 FETCH (UID 20 RFC822.SIZE {n})\r\na6 OK ok\r\n")
                .into_bytes(),
        )
        .c(b"a7 UID FETCH 10,20 (UID BODY.PEEK[])\r\n")
        .s([body_fetch(1, 10, MSG2), body_fetch(2, 20, MSG2), b"a7 OK ok\r\n".to_vec()].concat())
        .stored()
        .logout_bye(8);
    let run = ok_run(&mb, None, &script);
    // UID 25 plus the 97 messages above sequence number 3.
    assert_eq!(run.finished(), Some(&FetchSummary { delivered: 2, remaining: 98, skipped: 0 }));
    assert_eq!(run.sync(), r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":1,"last_uid":20}}}"#);
}

