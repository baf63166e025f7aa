use super::*;
use crate::config::{Limits, Security, Server};
use crate::error::ErrorKind;
use crate::session::Event;

fn link(max_line: u32) -> Link {
    let server = Server { host: "h".into(), port: 993, security: Security::ImplicitTls };
    Link::new(&server, &Limits { max_line_bytes: max_line, ..Limits::default() })
}

fn frames(input: &[u8], max_line: u32, max_message: u64) -> Result<Vec<Response>> {
    let mut l = link(max_line);
    let mut f = Framer::new(max_line as usize, max_message);
    let mut out = Vec::new();
    l.absorb(&Event::Received(input), 0, Stage::FetchMessage)?;
    while let Some(frame) = f.next(&mut l, Stage::FetchMessage)? {
        out.push(parse(frame, Stage::FetchMessage)?);
    }
    Ok(out)
}

#[test]
fn status_responses_and_codes() {
    let r = frames(
        b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready\r\na1 NO [AUTHENTICATIONFAILED] nope\r\n",
        1000,
        1000,
    )
    .unwrap();
    assert_eq!(
        r[0],
        Response::Status {
            tag: None,
            status: Status::Ok,
            code: Some(Code::Capability(vec!["IMAP4rev1".into(), "SASL-IR".into(), "AUTH=PLAIN".into()])),
            text: "[CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready".into()
        }
    );
    assert!(
        matches!(&r[1], Response::Status { tag: Some(t), status: Status::No, text, .. } if t == "a1" && text == "[AUTHENTICATIONFAILED] nope")
    );
}

#[test]
fn fetch_with_body_literal_and_other_items() {
    let body = b"Subject: x\r\n\r\n)\r\n.\r\n{3}\r\n";
    let mut input =
        format!("* 3 FETCH (FLAGS (\\Seen) UID 42 MODSEQ (7) BODY[] {{{}}}\r\n", body.len()).into_bytes();
    input.extend_from_slice(body);
    input.extend_from_slice(b" INTERNALDATE \"x \\\"y\\\"\")\r\n* 4 FETCH (UID 43 BODY[] \"tiny\")\r\n* 5 FETCH (UID 44 BODY[] NIL)\r\n");
    let r = frames(&input, 100, 1000).unwrap();
    assert_eq!(r[0], Response::Fetch(Fetch { seq: 3, uid: Some(42), size: None, body: Some(body.to_vec()) }));
    assert_eq!(r[1], Response::Fetch(Fetch { seq: 4, uid: Some(43), size: None, body: Some(b"tiny".to_vec()) }));
    assert_eq!(r[2], Response::Fetch(Fetch { seq: 5, uid: Some(44), size: None, body: None }));
}

#[test]
fn literal8_and_section_origin() {
    let r = frames(b"* 1 FETCH (UID 9 BINARY[] ~{300}\r\n", 100, 1000);
    assert!(r.unwrap().is_empty(), "waits for the literal");
    let mut input = b"* 1 FETCH (UID 9 BODY[]<0> ~{200}\r\n".to_vec();
    input.extend_from_slice(&[b'x'; 200]);
    input.extend_from_slice(b")\r\n");
    let r = frames(&input, 100, 1000).unwrap();
    assert!(matches!(&r[0], Response::Fetch(Fetch { uid: Some(9), body: Some(b), .. }) if b.len() == 200));
}

#[test]
fn oversized_body_literal_is_a_limit_error_before_reading_it() {
    let e = frames(b"* 1 FETCH (UID 9 BODY[] {1001}\r\n", 100, 1000).unwrap_err();
    assert_eq!((e.kind, e.stage), (ErrorKind::Limit, Stage::FetchMessage));
    let e = frames(b"* 1 FETCH (UID 9 BODY[] {99999999999999999999}\r\n", 100, 1000).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Limit);
}

#[test]
fn non_body_literal_is_bounded_by_the_line_limit() {
    let e = frames(b"* LIST () \"/\" {500}\r\n", 100, 100_000).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Limit);
    let e = frames(b"* 1 FETCH (UID 1 ENVELOPE ({500}\r\n", 100, 100_000).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Limit);
    // Small ones are fine.
    let r = frames(b"* LIST () \"/\" {5}\r\nINBOX\r\n", 100, 100_000).unwrap();
    assert_eq!(r, vec![Response::List { delimiter: Some('/') }]);
    let r = frames(b"* LIST (\\Noselect) \"\\\\\" \"\"\r\n* LIST () NIL \"\"\r\n", 100, 100_000).unwrap();
    assert_eq!(r, vec![Response::List { delimiter: Some('\\') }, Response::List { delimiter: None }]);
}

#[test]
fn search_and_esearch() {
    let r = frames(
        b"* SEARCH 2 5 9\r\n* SEARCH\r\n* ESEARCH (TAG \"a5\") UID ALL 3:5,8\r\n* ESEARCH (TAG \"a6\") UID\r\n",
        100,
        100,
    )
    .unwrap();
    assert_eq!(
        r,
        vec![
            Response::Search(vec![(2, 2), (5, 5), (9, 9)]),
            Response::Search(vec![]),
            Response::Search(vec![(3, 5), (8, 8)]),
            Response::Search(vec![])
        ]
    );
}

#[test]
fn garbage_is_a_protocol_error_not_a_panic() {
    for input in [
        &b"* 1 FETCH UID 5\r\n"[..],
        b"* 1 FETCH (UID x)\r\n",
        b"* 1 FETCH (X-ITEM \"a {3}\r\nb\"c\" FLAGS ())\r\n",
        b"* 1 FETCH (X-ITEM (a {3}\r\nb\"c\" FLAGS ())\r\n",
        b"* ESEARCH (TAG \"a1\") UID ALL 1:x\r\n",
        b"* 1 FETCH (UID 1 BODY[] \"open\r\n",
        b"a1 WHAT\r\n",
        b"\r\n",
        b"* 1 FETCH (FLAGS (\\Seen)\r\n",
    ] {
        let e = frames(input, 100, 100).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Protocol, "{:?}", String::from_utf8_lossy(input));
    }
}
