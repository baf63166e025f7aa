//! Stored UIDs whose after-fetch action the server has not confirmed: kept pending in the
//! sync state, acted on first by the next run, never fetched again.

use super::*;

fn pending_state(uidvalidity: u32, last_uid: u32, pending: &str) -> Vec<u8> {
    format!(
        r#"{{"v":3,"protocol":"imap","folders":{{"INBOX":{{"uidvalidity":{uidvalidity},"last_uid":{last_uid},"pending":{pending}}}}}}}"#
    )
    .into_bytes()
}

#[test]
fn a_run_cut_before_the_action_is_confirmed_leaves_the_uids_pending() {
    let script = Script::login_rw_with("UIDPLUS")
        .stored_3_and_4()
        .c(b"a6 UID STORE 3:4 +FLAGS.SILENT (\\Deleted)\r\na7 UID EXPUNGE 3:4\r\n")
        .s(b"a6 OK Store completed.\r\n")
        .closed();
    let run = drive_all(|| ImapSession::new(with_after(AfterFetch::Delete), None).unwrap(), &script);
    assert_eq!(run.err().stage, Stage::FetchMessage);
    assert_eq!(
        run.sync(),
        r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":1,"last_uid":4,"pending":[[3,4]]}}}"#
    );

    // Confirmed: nothing stays pending.
    let script = Script::deleted_3_and_4();
    let run = ok_run(&with_after(AfterFetch::Delete), None, &script);
    assert_eq!(run.sync(), r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":1,"last_uid":4}}}"#);
}

#[test]
fn pending_uids_get_their_action_first_then_the_new_messages() {
    let state = pending_state(1, 4, "[[3,4]]");
    let script = Script::login_rw_with("UIDPLUS")
        .opened(3, 1, Some(6))
        // Exactly the pending UIDs, never fetched again.
        .c(b"a3 UID STORE 3:4 +FLAGS.SILENT (\\Deleted)\r\na4 UID EXPUNGE 3:4\r\n")
        .s(b"a3 OK done\r\n* 1 EXPUNGE\r\n* 1 EXPUNGE\r\na4 OK done\r\n")
        .c(b"a5 UID SEARCH UID 5:*\r\n")
        .s(b"* SEARCH 5\r\na5 OK ok\r\n")
        .stored_one(6, 5)
        .c(b"a8 UID STORE 5 +FLAGS.SILENT (\\Deleted)\r\na9 UID EXPUNGE 5\r\n")
        .s(b"a8 OK done\r\na9 OK done\r\n")
        .logout(10);
    let run = ok_run(&with_after(AfterFetch::Delete), Some(&state), &script);
    assert_eq!(run.delivered().iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["imap:INBOX:1:5"]);
    assert_eq!(run.sync(), r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":1,"last_uid":5}}}"#);

    // Move: the pending UIDs are moved, nothing new, logout.
    let mb = with_after(AfterFetch::MoveTo("Archive".into()));
    let script = Script::login_rw_with("MOVE")
        .opened(2, 1, Some(5))
        .c(b"a3 UID MOVE 3:4 \"Archive\"\r\n")
        .s(b"* 1 EXPUNGE\r\n* 1 EXPUNGE\r\na3 OK Move completed.\r\n")
        .logout(4);
    let run = ok_run(&mb, Some(&state), &script);
    assert!(run.delivered().is_empty());
    assert_eq!(run.sync(), r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":1,"last_uid":4}}}"#);
}

#[test]
fn a_refused_retry_keeps_the_uids_pending_fetches_new_mail_and_then_fails() {
    let state = pending_state(1, 4, "[[3,4]]");
    let mb = with_after(AfterFetch::Keep { mark_seen: true });
    let script = Script::login_rw()
        .opened(2, 1, Some(5))
        .c(b"a3 UID STORE 3:4 +FLAGS.SILENT (\\Seen)\r\n")
        .s(b"a3 NO [CANNOT] read-only folder\r\n")
        // Nothing new (UIDNEXT 5): the run ends with the refusal, after listing.
        .c(b"");
    let run = drive_all(|| ImapSession::new(mb.clone(), Some(&state)).unwrap(), &script);
    let e = run.err();
    assert_eq!((e.kind, e.stage), (ErrorKind::Protocol, Stage::FetchMessage));
    assert!(e.message.contains("refused to mark the fetched messages") && e.message.contains("next run"), "{}", e.message);
    assert!(!String::from_utf8_lossy(&run.wire).contains("BODY"), "nothing is fetched again");
    assert_eq!(run.sync().as_bytes(), &state[..]);
}

#[test]
fn a_uidvalidity_change_or_keep_drops_the_pending_uids() {
    let state = pending_state(1, 4, "[[3,4]]");
    let script = Script::login_rw()
        .opened(0, 2, None)
        .logout(3);
    let run = ok_run(&with_after(AfterFetch::Delete), Some(&state), &script);
    assert_eq!(run.sync(), r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":2,"last_uid":0}}}"#);

    // The action was changed to keep: nothing to apply, nothing written (read-only).
    let script = Script::login()
        .opened(2, 1, Some(5))
        .logout(3);
    let run = ok_run(&with_after(AfterFetch::Keep { mark_seen: false }), Some(&state), &script);
    assert_eq!(run.sync(), r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":1,"last_uid":4}}}"#);
}
