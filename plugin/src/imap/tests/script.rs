//! The openings and endings the `ImapSession` transcripts share, as `Script` builders: logged
//! in (read-only or for writing, other capabilities), INBOX opened, UIDs 3 and 4 fetched,
//! LOGOUT; and the helpers that run them.

use super::*;

pub(super) fn leak(v: Vec<u8>) -> &'static [u8] {
    Box::leak(v.into_boxed_slice())
}

impl Script {
    /// Logged in, INBOX opened read-only (after-fetch `keep`): `login_prefix`.
    pub(super) fn login() -> Script {
        Script::from(login_prefix())
    }

    /// Logged in, INBOX selected for writing (an after-fetch action that changes the server).
    pub(super) fn login_rw() -> Script {
        Script::from(login_prefix_rw())
    }

    /// `login_rw` with a greeting that offers `IMAP4rev1 <caps>`.
    pub(super) fn login_rw_with(caps: &str) -> Script {
        Script::login_rw().with_step(0, S(leak(format!("* OK [CAPABILITY IMAP4rev1 {caps}] ready\r\n").into_bytes())))
    }

    /// The server's answer to the EXAMINE or SELECT of INBOX (tag a2): `exists` messages,
    /// UIDVALIDITY and, when given, UIDNEXT.
    pub(super) fn opened(self, exists: u32, uidvalidity: u32, uidnext: Option<u32>) -> Script {
        let next = uidnext.map(|n| format!("* OK [UIDNEXT {n}] ok\r\n")).unwrap_or_default();
        self.s(format!("* {exists} EXISTS\r\n* OK [UIDVALIDITY {uidvalidity}] ok\r\n{next}a2 OK ok\r\n"))
    }

    /// INBOX opened with UIDs 3 and 4 (UIDVALIDITY 1), listed, sized and fetched (tags
    /// a2..a5); ends right after the fetch's tagged OK, with no further bytes written.
    pub(super) fn fetch_3_and_4(self) -> Script {
        let n = MSG2.len();
        self.opened(2, 1, None)
            .c(b"a3 UID SEARCH ALL\r\n")
            .s(b"* SEARCH 3 4\r\na3 OK ok\r\n")
            .c(b"a4 UID FETCH 3:4 (UID RFC822.SIZE)\r\n")
            .s(format!("* 1 FETCH (UID 3 RFC822.SIZE {n})\r\n* 2 FETCH (UID 4 RFC822.SIZE {n})\r\na4 OK ok\r\n"))
            .c(b"a5 UID FETCH 3:4 (UID BODY.PEEK[])\r\n")
            .s([body_fetch(1, 3, MSG2), body_fetch(2, 4, MSG2), b"a5 OK ok\r\n".to_vec()].concat())
            .c(b"")
    }

    /// `fetch_3_and_4`, then the host reports both stored: the after-fetch action (tag a6)
    /// comes next.
    pub(super) fn stored_3_and_4(self) -> Script {
        self.fetch_3_and_4().idle().stored()
    }

    /// With UIDPLUS, UIDs 3 and 4 fetched, stored, and deleted (STORE and UID EXPUNGE
    /// pipelined in one write, tags a6 and a7), then LOGOUT (a8).
    pub(super) fn deleted_3_and_4() -> Script {
        Script::login_rw_with("UIDPLUS")
            .stored_3_and_4()
            .c(b"a6 UID STORE 3:4 +FLAGS.SILENT (\\Deleted)\r\na7 UID EXPUNGE 3:4\r\n")
            .s(b"a6 OK Store completed.\r\n* 1 EXPUNGE\r\n* 1 EXPUNGE\r\na7 OK Expunge completed.\r\n")
            .logout(8)
    }

    /// UID `uid` (message 1 of the folder) sized and fetched with tags `a<tag>` and
    /// `a<tag + 1>`, then stored: the after-fetch action comes next.
    pub(super) fn stored_one(self, tag: u32, uid: u32) -> Script {
        let (n, next) = (MSG2.len(), tag + 1);
        self.c(format!("a{tag} UID FETCH {uid} (UID RFC822.SIZE)\r\n"))
            .s(format!("* 1 FETCH (UID {uid} RFC822.SIZE {n})\r\na{tag} OK ok\r\n"))
            .c(format!("a{next} UID FETCH {uid} (UID BODY.PEEK[])\r\n"))
            .s([body_fetch(1, uid, MSG2), format!("a{next} OK ok\r\n").into_bytes()].concat())
            .c(b"")
            .idle()
            .stored()
    }

    /// The client logs out with tag `a<tag>` (the server does not answer).
    pub(super) fn logout(self, tag: u32) -> Script {
        self.c(format!("a{tag} LOGOUT\r\n"))
    }

    /// The client logs out with tag `a<tag>`, the server says OK.
    pub(super) fn logout_bye(self, tag: u32) -> Script {
        self.logout(tag).s(format!("a{tag} OK bye\r\n"))
    }
}

pub(super) fn with_after(after: AfterFetch) -> Mailbox {
    let mut mb = mailbox(Security::ImplicitTls);
    mb.after_fetch = after;
    mb
}

pub(super) fn ok_run(mb: &Mailbox, state: Option<&[u8]>, script: &[Step<'_>]) -> Run {
    let run = drive_all(|| ImapSession::new(mb.clone(), state).unwrap(), script);
    assert!(run.error.is_none(), "{:?}", run.error);
    run
}
