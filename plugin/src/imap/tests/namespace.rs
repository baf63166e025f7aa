//! Server namespaces: NAMESPACE asked after the login when a configured name is not INBOX,
//! names mapped into the personal namespace (Courier's "INBOX."), refusals naming the prefix.

use super::*;

/// Courier's capabilities: NAMESPACE and UIDPLUS, no MOVE.
const COURIER: &[u8] = b"* OK [CAPABILITY IMAP4rev1 UIDPLUS CHILDREN NAMESPACE IDLE] Courier-IMAP ready.\r\n";
const COURIER_NAMESPACE: &[u8] = b"* NAMESPACE ((\"INBOX.\" \".\")) NIL ((\"#shared.\" \".\"))\r\na2 OK NAMESPACE completed\r\n";

fn courier_login(mb_rw: bool) -> Vec<Step<'static>> {
    let mut script = if mb_rw { login_prefix_rw() } else { login_prefix() };
    script[0] = S(COURIER);
    script[3] = C(b"a2 NAMESPACE\r\n");
    script.push(S(COURIER_NAMESPACE));
    script
}

#[test]
fn folders_and_the_move_target_go_under_couriers_inbox_prefix() {
    let mut mb = with_after(AfterFetch::MoveTo("Done".into()));
    mb.folders = vec!["Support".into()];
    let n = MSG2.len();
    let mut script = courier_login(true);
    script.extend([
        C(b"a3 SELECT \"INBOX.Support\"\r\n"),
        S(b"* 1 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\na3 OK [READ-WRITE] ok\r\n"),
        C(b"a4 UID SEARCH ALL\r\n"),
        S(b"* SEARCH 3\r\na4 OK ok\r\n"),
        C(b"a5 UID FETCH 3 (UID RFC822.SIZE)\r\n"),
        S(leak(format!("* 1 FETCH (UID 3 RFC822.SIZE {n})\r\na5 OK ok\r\n").into_bytes())),
        C(b"a6 UID FETCH 3 (UID BODY.PEEK[])\r\n"),
        S(leak([body_fetch(1, 3, MSG2), b"a6 OK ok\r\n".to_vec()].concat())),
        C(b""),
        Idle,
        Stored,
        C(b"a7 UID COPY 3 \"INBOX.Done\"\r\n"),
        S(b"a7 NO [TRYCREATE] Mailbox does not exist.\r\n"),
        C(b"a8 CREATE \"INBOX.Done\"\r\na9 SUBSCRIBE \"INBOX.Done\"\r\na10 UID COPY 3 \"INBOX.Done\"\r\n"),
        S(b"a8 OK \"INBOX.Done\" created.\r\na9 OK Folder subscribed.\r\na10 OK [COPYUID 1 3 1] COPY completed.\r\n"),
        C(b"a11 UID STORE 3 +FLAGS.SILENT (\\Deleted)\r\na12 UID EXPUNGE 3\r\n"),
        S(b"a11 OK STORE completed.\r\na12 OK EXPUNGE completed.\r\n"),
        C(b"a13 LOGOUT\r\n"),
        S(b"* BYE Courier-IMAP server shutting down\r\na13 OK LOGOUT completed\r\n"),
    ]);
    let run = ok_run(&mb, None, &script);
    // The configured names stay what the host sees.
    assert_eq!(run.delivered().iter().map(|m| m.folder.as_str()).collect::<Vec<_>>(), ["Support"]);
    assert!(run.sync().contains("\"Support\""), "{}", run.sync());
}

#[test]
fn nested_names_use_the_namespace_delimiter_without_list_and_keep_examines() {
    let mut mb = mailbox(Security::ImplicitTls);
    mb.folders = vec!["Kunden/Anfragen".into(), "INBOX".into(), "INBOX/Alt".into()];
    let mut script = courier_login(false);
    script.extend([
        C(b"a3 EXAMINE \"INBOX.Kunden.Anfragen\"\r\n"),
        S(b"* 0 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\na3 OK [READ-ONLY] ok\r\n"),
        C(b"a4 EXAMINE \"INBOX\"\r\n"),
        S(b"* 0 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\na4 OK [READ-ONLY] ok\r\n"),
        // Already under the prefix: as it is.
        C(b"a5 EXAMINE \"INBOX.Alt\"\r\n"),
        S(b"a5 NO Mailbox does not exist.\r\n"),
    ]);
    let run = drive_all(|| ImapSession::new(mb.clone(), None).unwrap(), &script);
    let e = run.err();
    assert_eq!((e.kind, e.stage), (ErrorKind::Protocol, Stage::SelectMailbox));
    assert!(e.message.contains("could not open the folder \"INBOX/Alt\""), "{}", e.message);
    assert!(e.message.contains("keeps its folders under the prefix \"INBOX.\""), "{}", e.message);
    assert!(e.message.contains("was asked for as \"INBOX.Alt\""), "{}", e.message);
    assert_eq!(crate::imap::namespace::prefix_named_in(&e.message), Some("INBOX."));
}

#[test]
fn an_empty_prefix_changes_nothing_and_inbox_alone_asks_nothing() {
    // Dovecot: NAMESPACE (("" ".")): the names as configured, with its delimiter.
    let mut mb = mailbox(Security::ImplicitTls);
    mb.folders = vec!["Kunden/Anfragen".into()];
    let mut script = login_prefix();
    script[0] = S(b"* OK [CAPABILITY IMAP4rev1 NAMESPACE] Dovecot ready.\r\n");
    script[3] = C(b"a2 NAMESPACE\r\n");
    script.extend([
        S(b"* NAMESPACE ((\"\" \".\")) NIL NIL\r\na2 OK Namespace completed.\r\n"),
        C(b"a3 EXAMINE \"Kunden.Anfragen\"\r\n"),
        S(b"a3 NO [NONEXISTENT] Mailbox doesn't exist\r\n"),
    ]);
    let e = drive_all(|| ImapSession::new(mb.clone(), None).unwrap(), &script).err().clone();
    assert!(!e.message.contains("prefix"), "no prefix to blame: {}", e.message);

    // Only INBOX: nothing to map, no NAMESPACE round trip.
    let mut script = login_prefix();
    script[0] = S(b"* OK [CAPABILITY IMAP4rev1 NAMESPACE] ready\r\n");
    script.extend([S(b"* 0 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\na2 OK ok\r\n"), C(b"a3 LOGOUT\r\n")]);
    ok_run(&mailbox(Security::ImplicitTls), None, &script);

    // Offered but refused (NO or BAD), or answered in a form this client cannot read (a raw
    // UTF-8 prefix): the names as configured, then LIST for the delimiter.
    let unreadable = "* NAMESPACE ((\"Posteingang\u{e4}.\" \".\")) NIL NIL\r\na2 OK done\r\n".as_bytes();
    for refusal in [&b"a2 NO not now\r\n"[..], b"a2 BAD unknown command\r\n", unreadable] {
        let mut script = login_prefix();
        script[0] = S(b"* OK [CAPABILITY IMAP4rev1 NAMESPACE] ready\r\n");
        script[3] = C(b"a2 NAMESPACE\r\n");
        script.extend([
            S(refusal),
            C(b"a3 LIST \"\" \"\"\r\n"),
            S(b"* LIST (\\Noselect) \"/\" \"\"\r\na3 OK done\r\n"),
            C(b"a4 EXAMINE \"Kunden/Anfragen\"\r\n"),
            S(b"* 0 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\na4 OK ok\r\n"),
            C(b"a5 LOGOUT\r\n"),
        ]);
        ok_run(&mb, None, &script);
    }
}

#[test]
fn unsolicited_namespace_answers_count_against_the_untagged_cap() {
    let mut script = login_prefix();
    let flood = b"* NAMESPACE ((\"INBOX.\" \".\")) NIL NIL\r\n".repeat(10_001);
    script.push(S(leak(flood)));
    let run = drive(ImapSession::new(mailbox(Security::ImplicitTls), None).unwrap(), &script, usize::MAX);
    let e = run.err();
    assert_eq!(e.kind, ErrorKind::Limit, "{e}");
    assert!(e.message.contains("more than 10000 untagged responses"), "{}", e.message);
}

#[test]
fn a_check_examines_the_mapped_names() {
    let mut mb = mailbox(Security::ImplicitTls);
    mb.folders = vec!["Support".into()];
    let mut script = courier_login(false);
    script.extend([
        C(b"a3 EXAMINE \"INBOX.Support\"\r\n"),
        S(b"* 4 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\na3 OK [READ-ONLY] ok\r\n"),
        C(b"a4 LOGOUT\r\n"),
        S(b"a4 OK bye\r\n"),
    ]);
    let run = drive_all(|| ImapSession::check(mb.clone()).unwrap(), &script);
    assert!(run.error.is_none(), "{:?}", run.error);
}
