//! Server namespaces (RFC 2342): where a server keeps a user's folders, and configured folder
//! names mapped into it.
//!
//! Some servers keep every folder of the user under a prefix: Courier answers
//! `* NAMESPACE (("INBOX." ".")) NIL NIL`, and refuses `CREATE "Sent"` with `NO Invalid
//! mailbox name.` while `INBOX.Sent` works. Configured names are written the way the admin sees
//! folders in a mail program ("Sent", "Support/Archive"), so they are mapped into the first
//! personal namespace: the prefix goes in front and "/" becomes the namespace's hierarchy
//! delimiter. INBOX itself and names already under a namespace's prefix ("INBOX.Sent",
//! "INBOX/Sent" on such a server, "#shared/x") stay as they are. An empty prefix (Dovecot's
//! default) changes nothing.

use super::response::{Lexer, Token};
use super::utf7::encode_folder_name;
use crate::error::{quote, Error, Result, Stage};

/// Namespaces of one class the client keeps; a real server has one to three.
pub(crate) const MAX_NAMESPACES: usize = 100;

/// One namespace: its prefix exactly as the server spells it (modified UTF-7, printable
/// ASCII) and its hierarchy delimiter (None: flat).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    pub prefix: String,
    pub delimiter: Option<char>,
}

/// The three classes of a NAMESPACE response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Namespaces {
    pub personal: Vec<Namespace>,
    pub other_users: Vec<Namespace>,
    pub shared: Vec<Namespace>,
}

impl Namespaces {
    /// The personal namespace new folders go to (the first one, RFC 2342 section 5).
    pub fn personal(&self) -> Option<&Namespace> {
        self.personal.first()
    }

    /// The personal prefix when it is not empty: the one that changes names.
    pub fn personal_prefix(&self) -> Option<&str> {
        self.personal().map(|n| n.prefix.as_str()).filter(|p| !p.is_empty())
    }

    /// `wire` (a configured name already in the server's delimiter and modified UTF-7) in the
    /// personal namespace.
    pub fn map(&self, wire: String) -> String {
        let Some(ns) = self.personal() else { return wire };
        if ns.prefix.is_empty() || wire.eq_ignore_ascii_case("INBOX") {
            return wire;
        }
        let all = self.personal.iter().chain(&self.other_users).chain(&self.shared);
        if all.filter(|n| !n.prefix.is_empty()).any(|n| under(&wire, &n.prefix)) {
            return wire;
        }
        let mut out = ns.prefix.clone();
        if let Some(d) = ns.delimiter {
            if !out.ends_with(d) {
                out.push(d);
            }
        }
        out.push_str(&wire);
        out
    }
}

/// True when `wire` lies under `prefix` ("INBOX" compared without case, as IMAP does).
fn under(wire: &str, prefix: &str) -> bool {
    let (w, p) = (wire.as_bytes(), prefix.as_bytes());
    if w.len() < p.len() {
        // "INBOX" under the prefix "INBOX.": the prefix's own parent is not a folder of it.
        return false;
    }
    let inbox = p.len() >= 5 && p[..5].eq_ignore_ascii_case(b"INBOX");
    if inbox {
        w[..5].eq_ignore_ascii_case(&p[..5]) && w[5..p.len()] == p[5..]
    } else {
        w.starts_with(p)
    }
}

/// A configured name ("/" between levels, UTF-8) as the server spells it: `delimiter` between
/// levels, modified UTF-7, then mapped into `namespaces` when the server told them.
pub fn wire_name(name: &str, delimiter: Option<char>, namespaces: Option<&Namespaces>) -> String {
    let wire = match delimiter {
        Some(d) if d != '/' => encode_folder_name(&name.replace('/', &d.to_string())),
        _ => encode_folder_name(name),
    };
    match namespaces {
        Some(ns) => ns.map(wire),
        None => wire,
    }
}

/// The arguments of `* NAMESPACE` (after the word): personal, other users', shared; each NIL
/// or a list of `(prefix delimiter *extension)`. None when malformed (or a prefix is not
/// printable ASCII); a `limit` error past `MAX_NAMESPACES` of one kind.
pub(super) fn parse(lx: &mut Lexer<'_, '_>, stage: Stage) -> Result<Option<Namespaces>> {
    let mut out = Namespaces::default();
    for class in [&mut out.personal, &mut out.other_users, &mut out.shared] {
        match class_list(lx, stage)? {
            Some(list) => *class = list,
            None => return Ok(None),
        }
    }
    // Nothing may follow the three classes.
    Ok(lx.next().is_none().then_some(out))
}

fn class_list(lx: &mut Lexer<'_, '_>, stage: Stage) -> Result<Option<Vec<Namespace>>> {
    let mut list = Vec::new();
    match lx.next() {
        Some(Token::Nil) => return Ok(Some(list)),
        Some(Token::Open) => {}
        _ => return Ok(None),
    }
    loop {
        match lx.next() {
            Some(Token::Close) => return Ok(Some(list)),
            Some(Token::Open) => {}
            _ => return Ok(None),
        }
        let Some(ns) = descriptor(lx) else { return Ok(None) };
        if list.len() == MAX_NAMESPACES {
            return Err(Error::limit(
                stage,
                format!("the server listed more than {MAX_NAMESPACES} namespaces of one kind in its NAMESPACE answer; the server may be faulty or hostile: check it with its administrator"),
            ));
        }
        list.push(ns);
    }
}

/// `prefix delimiter *(extension)` and the closing parenthesis.
fn descriptor(lx: &mut Lexer<'_, '_>) -> Option<Namespace> {
    let Some(Token::String(prefix)) = lx.next() else { return None };
    // Sent back inside quoted strings: printable ASCII only (modified UTF-7 is).
    if !prefix.iter().all(|b| (0x20..0x7f).contains(b)) {
        return None;
    }
    let delimiter = match lx.next()? {
        Token::Nil => None,
        Token::String(d) if d.len() == 1 && (0x20..0x7f).contains(&d[0]) => Some(char::from(d[0])),
        _ => return None,
    };
    loop {
        match lx.next()? {
            Token::Close => break,
            // An extension: its name, then a parenthesised list of values.
            Token::String(_) => lx.skip_value()?,
            _ => return None,
        }
    }
    Some(Namespace { prefix: String::from_utf8(prefix).ok()?, delimiter })
}

/// Marker of the sentence `prefix_note` adds; `diagnose` finds the prefix after it.
pub(crate) const KEEPS_FOLDERS_UNDER: &str = "this server keeps its folders under the prefix ";

/// `e` with a sentence saying that this server keeps folders under `prefix` and which name
/// `folder` was asked for as (`wire`); both quoted from the server's words through `quote`.
pub(crate) fn prefix_note(e: Error, prefix: &str, folder: &str, wire: &str) -> Error {
    let p = quote(prefix.as_bytes(), 80);
    let w = quote(wire.as_bytes(), 120);
    let mut e = e;
    e.message.push_str(&format!(
        "; {KEEPS_FOLDERS_UNDER}{p} (its personal namespace), so {folder:?} was asked for as {w}: configure a name the server accepts under that prefix, or create the folder under it in a mail program"
    ));
    e.with_quote(p).with_quote(w)
}

/// The prefix a `prefix_note` in `message` names, as quoted there.
pub(crate) fn prefix_named_in(message: &str) -> Option<&str> {
    let rest = message.split_once(KEEPS_FOLDERS_UNDER)?.1;
    let rest = rest.strip_prefix('"')?;
    Some(&rest[..rest.find("\" (its personal namespace)")?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::response::{self, Frame, Response};

    fn parse_line(line: &str) -> Result<Response> {
        response::parse(Frame { text: line.as_bytes().to_vec(), ..Frame::default() }, Stage::SelectMailbox)
    }

    fn ns(prefix: &str, d: Option<char>) -> Namespace {
        Namespace { prefix: prefix.into(), delimiter: d }
    }

    #[test]
    fn parses_courier_dovecot_and_extended_answers() {
        let courier = parse_line("* NAMESPACE ((\"INBOX.\" \".\")) NIL NIL").unwrap();
        assert_eq!(
            courier,
            Response::Namespace(Namespaces { personal: vec![ns("INBOX.", Some('.'))], ..Namespaces::default() })
        );
        let dovecot = parse_line("* NAMESPACE ((\"\" \"/\")) NIL NIL").unwrap();
        assert_eq!(dovecot, Response::Namespace(Namespaces { personal: vec![ns("", Some('/'))], ..Namespaces::default() }));
        // RFC 2342 example 5.9, plus an extension (RFC 4466) and a flat namespace.
        let many = parse_line(
            "* NAMESPACE ((\"\" \"/\")(\"#mh/\" \"/\" \"X-PARAM\" (\"FLAG1\" \"FLAG2\"))) ((\"~\" \"/\")) ((\"#shared/\" \"/\")(\"#public/\" \"/\")(\"#ftp/\" \"/\")(\"#news.\" NIL))",
        )
        .unwrap();
        let Response::Namespace(n) = many else { panic!("{many:?}") };
        assert_eq!(n.personal, vec![ns("", Some('/')), ns("#mh/", Some('/'))]);
        assert_eq!(n.other_users, vec![ns("~", Some('/'))]);
        assert_eq!(n.shared.len(), 4);
        assert_eq!(n.shared[3], ns("#news.", None));
        // Lower case, escaped delimiter.
        let lower = parse_line("* namespace ((\"INBOX\\\\\" \"\\\\\")) nil nil").unwrap();
        assert_eq!(lower, Response::Namespace(Namespaces { personal: vec![ns("INBOX\\", Some('\\'))], ..Namespaces::default() }));
    }

    #[test]
    fn unreadable_answers_are_ignored_and_long_lists_a_limit() {
        for bad in [
            "* NAMESPACE",
            "* NAMESPACE ((\"INBOX.\" \".\")) NIL",
            "* NAMESPACE ((\"INBOX.\" \".\")) NIL NIL extra",
            "* NAMESPACE ((\"INBOX.\")) NIL NIL",
            "* NAMESPACE ((\"INBOX.\" \"..\")) NIL NIL",
            "* NAMESPACE ((INBOX \".\")) NIL NIL",
            "* NAMESPACE ((\"INBOX.\" \".\") NIL NIL",
            "* NAMESPACE ((\"IN\u{7}BOX.\" \".\")) NIL NIL",
            "* NAMESPACE ((\"Posteingang\u{e4}.\" \".\")) NIL NIL",
        ] {
            assert_eq!(parse_line(bad).unwrap(), Response::Other, "{bad}");
        }
        let ok = format!("* NAMESPACE ({}) NIL NIL", "(\"a.\" \".\")".repeat(MAX_NAMESPACES));
        assert!(parse_line(&ok).is_ok());
        let over = format!("* NAMESPACE ({}) NIL NIL", "(\"a.\" \".\")".repeat(MAX_NAMESPACES + 1));
        let e = parse_line(&over).unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::Limit, "{e}");
    }

    #[test]
    fn names_map_into_the_personal_namespace() {
        let courier = Namespaces { personal: vec![ns("INBOX.", Some('.'))], ..Namespaces::default() };
        let d = Some('.');
        let map = |name: &str| wire_name(name, d, Some(&courier));
        assert_eq!(map("Sent"), "INBOX.Sent");
        assert_eq!(map("Support/Archiv 2026"), "INBOX.Support.Archiv 2026");
        assert_eq!(map("Gesendete Objekte/Grüße"), "INBOX.Gesendete Objekte.Gr&APwA3w-e");
        // INBOX itself and names already under the prefix stay.
        assert_eq!(map("INBOX"), "INBOX");
        assert_eq!(map("inbox"), "inbox");
        assert_eq!(map("INBOX/Sent"), "INBOX.Sent");
        assert_eq!(map("INBOX.Sent"), "INBOX.Sent");
        assert_eq!(map("Inbox/Sent"), "Inbox.Sent");
        // "INBOXES" is not under "INBOX.".
        assert_eq!(map("INBOXES"), "INBOX.INBOXES");

        // An empty prefix (Dovecot's default) changes nothing; no answer changes nothing.
        let dovecot = Namespaces { personal: vec![ns("", Some('/'))], ..Namespaces::default() };
        assert_eq!(wire_name("Support/Archiv", Some('/'), Some(&dovecot)), "Support/Archiv");
        assert_eq!(wire_name("Sent", None, None), "Sent");
        assert_eq!(wire_name("Support/Archiv", Some('.'), None), "Support.Archiv");

        // Names under another namespace's prefix stay; a prefix without its delimiter gets it.
        let mixed = Namespaces {
            personal: vec![ns("Mail", Some('/'))],
            shared: vec![ns("#shared/", Some('/'))],
            ..Namespaces::default()
        };
        assert_eq!(wire_name("#shared/team", Some('/'), Some(&mixed)), "#shared/team");
        assert_eq!(wire_name("Sent", Some('/'), Some(&mixed)), "Mail/Sent");
        // No personal namespace: nothing to map into.
        let none = Namespaces { shared: vec![ns("#shared/", Some('/'))], ..Namespaces::default() };
        assert_eq!(wire_name("Sent", Some('/'), Some(&none)), "Sent");
    }

    #[test]
    fn the_prefix_note_quotes_and_can_be_found_again() {
        let e = prefix_note(Error::protocol(Stage::Data, "the server refused"), "INBOX.", "Sent", "INBOX.Sent");
        assert!(e.message.contains("keeps its folders under the prefix \"INBOX.\""), "{e}");
        assert!(e.message.contains("\"Sent\" was asked for as \"INBOX.Sent\""), "{e}");
        assert_eq!(e.quoted, vec!["\"INBOX.\"".to_string(), "\"INBOX.Sent\"".to_string()]);
        assert_eq!(prefix_named_in(&e.message), Some("INBOX."));
        assert_eq!(prefix_named_in("the server refused"), None);
    }
}
