//! Server responses: framing (lines plus the literals they announce, each bounded) and
//! parsing of the subset this client uses.

use std::collections::VecDeque;

use super::namespace::Namespaces;
use crate::error::{Error, Result, Stage};
use crate::link::Link;

/// One complete server response: its line text with each literal announcement removed, and
/// the literals with the text offset at which each stood.
#[derive(Debug, Default)]
pub struct Frame {
    pub text: Vec<u8>,
    pub literals: VecDeque<(usize, Vec<u8>)>,
}

/// Assembles frames from the link across reads. Line text and literals that are not a
/// message body share the `max_line_bytes` budget; message body literals of one response
/// may add up to `max_message_bytes`.
#[derive(Debug)]
pub struct Framer {
    partial: Frame,
    pending_literal: Option<usize>,
    /// Text plus small literals of the partial frame.
    line_used: usize,
    /// Body literals of the partial frame.
    body_used: u64,
    max_line: usize,
    max_message: u64,
}

impl Framer {
    pub fn new(max_line: usize, max_message: u64) -> Self {
        Framer { partial: Frame::default(), pending_literal: None, line_used: 0, body_used: 0, max_line, max_message }
    }

    /// The next complete response, or `None` until more bytes arrive.
    pub fn next(&mut self, link: &mut Link, stage: Stage) -> Result<Option<Frame>> {
        loop {
            if let Some(n) = self.pending_literal {
                let Some(bytes) = link.take_exact(n) else { return Ok(None) };
                self.partial.literals.push_back((self.partial.text.len(), bytes));
                self.pending_literal = None;
            }
            let Some(line) = link.next_line(stage)? else { return Ok(None) };
            let line = line.0;
            if self.line_used + line.len() > self.max_line {
                return Err(line_budget_exceeded(self.max_line, stage));
            }
            self.line_used += line.len();
            let line_start = self.partial.text.len();
            self.partial.text.extend_from_slice(line);
            match literal_announcement(&self.partial.text[line_start..]) {
                None => {
                    self.line_used = 0;
                    self.body_used = 0;
                    return Ok(Some(std::mem::take(&mut self.partial)));
                }
                Some((len, announce_len)) => {
                    let keep = self.partial.text.len() - announce_len;
                    self.partial.text.truncate(keep);
                    self.accept_literal(len, stage)?;
                }
            }
        }
    }

    fn accept_literal(&mut self, len: u64, stage: Stage) -> Result<()> {
        if announces_message_body(&self.partial.text) {
            if self.body_used.saturating_add(len) > self.max_message {
                return Err(Error::limit(
                    Stage::FetchMessage,
                    format!(
                        "the server announced a message of {len} bytes, more than the limit of {} bytes; raise max-message-bytes or remove the message from the mailbox",
                        self.max_message
                    ),
                ));
            }
            let size = usize::try_from(len).map_err(|_| {
                Error::limit(Stage::FetchMessage, format!("a message of {len} bytes cannot be held on this platform"))
            })?;
            self.body_used += len;
            self.pending_literal = Some(size);
            return Ok(());
        }
        if (self.line_used as u64).saturating_add(len) > self.max_line as u64 {
            return Err(line_budget_exceeded(self.max_line, stage));
        }
        self.line_used += len as usize;
        self.pending_literal = Some(len as usize);
        Ok(())
    }
}

fn line_budget_exceeded(max: usize, stage: Stage) -> Error {
    Error::limit(
        stage,
        format!(
            "the server sent a response longer than {max} bytes during {}; raise max-line-bytes if the mailbox is very large",
            stage.as_str()
        ),
    )
}

/// `{n}`, `{n+}` or `~{n}` at the end of a line: (n, length of the announcement).
fn literal_announcement(line: &[u8]) -> Option<(u64, usize)> {
    let body = line.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&b| b == b'{')?;
    let mut digits = &body[open + 1..];
    if let Some(d) = digits.strip_suffix(b"+") {
        digits = d;
    }
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // An absurd length saturates and then fails the size checks.
    let n = digits.iter().fold(0u64, |acc, &d| acc.saturating_mul(10).saturating_add(u64::from(d - b'0')));
    let tilde = usize::from(open > 0 && body[open - 1] == b'~');
    Some((n, line.len() - open + tilde))
}

/// True when the text so far is `* <n> FETCH (... <section>` with a message-body section
/// right before the literal: BODY[...], BINARY[...] (with an optional <origin>), or RFC822.
fn announces_message_body(text: &[u8]) -> bool {
    let mut words = text.split(|&b| b == b' ');
    let head_ok = words.next() == Some(b"*")
        && words.next().is_some_and(|n| !n.is_empty() && n.iter().all(u8::is_ascii_digit))
        && words.next().is_some_and(|w| w.eq_ignore_ascii_case(b"FETCH"));
    if !head_ok {
        return false;
    }
    let trimmed = text.strip_suffix(b" ").unwrap_or(text);
    let last = trimmed.rsplit(|&b| b == b' ' || b == b'(').next().unwrap_or(b"");
    let upper = last.to_ascii_uppercase();
    let section = match upper.iter().rposition(|&b| b == b'<') {
        Some(p) if upper.ends_with(b">") => &upper[..p],
        _ => &upper[..],
    };
    section == b"RFC822"
        || ((section.starts_with(b"BODY[") || section.starts_with(b"BINARY[")) && section.ends_with(b"]"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
    Bye,
    Preauth,
}

impl Status {
    fn parse(word: &[u8]) -> Option<Status> {
        let w = word.to_ascii_uppercase();
        Some(match &w[..] {
            b"OK" => Status::Ok,
            b"NO" => Status::No,
            b"BAD" => Status::Bad,
            b"BYE" => Status::Bye,
            b"PREAUTH" => Status::Preauth,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::No => "NO",
            Status::Bad => "BAD",
            Status::Bye => "BYE",
            Status::Preauth => "PREAUTH",
        }
    }
}

/// The response codes we act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Code {
    Capability(Vec<String>),
    UidValidity(u32),
    UidNext(u32),
    Other(String),
}

#[derive(Debug, PartialEq, Eq)]
pub enum Response {
    /// Tagged (`tag` is Some) or untagged status response. `text` is everything after the
    /// status word, response code included, for the admin.
    Status {
        tag: Option<String>,
        status: Status,
        code: Option<Code>,
        text: String,
    },
    Capability(Vec<String>),
    Exists(u32),
    /// UIDs from `* SEARCH` or `* ESEARCH ... ALL`, as inclusive ranges (ESEARCH sends
    /// compact sets; expanding them is bounded by the caller).
    Search(Vec<(u32, u32)>),
    Fetch(Fetch),
    /// `* LIST (flags) "<delimiter>" name`: the hierarchy delimiter (None for NIL: flat).
    List { delimiter: Option<char> },
    /// `* NAMESPACE personal other-users shared` (RFC 2342).
    Namespace(Namespaces),
    Continuation(String),
    /// Anything else (FLAGS, RECENT, EXPUNGE, ...): tolerated and ignored.
    Other,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fetch {
    pub seq: u32,
    pub uid: Option<u32>,
    pub size: Option<u64>,
    pub body: Option<Vec<u8>>,
}

fn malformed(stage: Stage, what: &str, text: &[u8]) -> Error {
    let shown = crate::error::quote(text, 120);
    Error::protocol(stage, format!("the server sent a malformed {what} during {}: {shown}", stage.as_str())).with_quote(shown)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn number<T: std::str::FromStr>(b: &[u8]) -> Option<T> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn split_word(b: &[u8]) -> (&[u8], &[u8]) {
    match b.iter().position(|&c| c == b' ') {
        Some(p) => (&b[..p], &b[p + 1..]),
        None => (b, &[]),
    }
}

/// Parses one frame. `stage` names the step for error messages.
pub fn parse(frame: Frame, stage: Stage) -> Result<Response> {
    let Frame { text, mut literals } = frame;
    if let Some(rest) = text.strip_prefix(b"+") {
        return Ok(Response::Continuation(lossy(rest.strip_prefix(b" ").unwrap_or(rest))));
    }
    let (first, rest) = split_word(&text);
    if first == b"*" {
        let (word, after) = split_word(rest);
        if let Some(n) = number::<u32>(word) {
            let (kind, after_kind) = split_word(after);
            let kind = kind.to_ascii_uppercase();
            return match &kind[..] {
                b"EXISTS" => Ok(Response::Exists(n)),
                b"FETCH" => {
                    let offset = text.len() - after_kind.len();
                    parse_fetch(n, &text, offset, &mut literals, stage).map(Response::Fetch)
                }
                _ => Ok(Response::Other),
            };
        }
        if let Some(status) = Status::parse(word) {
            return Ok(status_response(None, status, after));
        }
        let upper = word.to_ascii_uppercase();
        return Ok(match &upper[..] {
            b"CAPABILITY" => Response::Capability(capabilities(after)),
            b"LIST" => Response::List { delimiter: list_delimiter(after).ok_or_else(|| malformed(stage, "LIST response", &text))? },
            b"SEARCH" => Response::Search(search_numbers(after).ok_or_else(|| malformed(stage, "SEARCH response", &text))?),
            b"ESEARCH" => {
                Response::Search(esearch_all(after).ok_or_else(|| malformed(stage, "ESEARCH response", &text))?)
            }
            b"NAMESPACE" => {
                let offset = text.len() - after.len();
                let mut lx = Lexer { text: &text, pos: offset, literals: &mut literals };
                // An answer this client cannot read leaves the names unmapped (as if the server
                // had no NAMESPACE) rather than ending the session.
                match super::namespace::parse(&mut lx, stage)? {
                    Some(namespaces) => Response::Namespace(namespaces),
                    None => Response::Other,
                }
            }
            _ => Response::Other,
        });
    }
    if first.is_empty() || !first.iter().all(|&b| b.is_ascii_graphic() && b != b'+' && b != b'*') {
        return Err(malformed(stage, "response", &text));
    }
    let (word, after) = split_word(rest);
    match Status::parse(word) {
        Some(status @ (Status::Ok | Status::No | Status::Bad)) => {
            Ok(status_response(Some(lossy(first)), status, after))
        }
        _ => Err(malformed(stage, "tagged response", &text)),
    }
}

/// The delimiter of `(flags) "d" name`: `Some(Some(d))`, `Some(None)` for NIL, `None` when
/// malformed.
fn list_delimiter(args: &[u8]) -> Option<Option<char>> {
    let close = args.iter().position(|&b| b == b')')?;
    let rest = args.get(close + 1..)?.strip_prefix(b" ")?;
    if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(b"NIL") {
        return Some(None);
    }
    let inner = rest.strip_prefix(b"\"")?;
    let (c, tail) = match inner {
        [b'\\', c, tail @ ..] => (*c, tail),
        [c, tail @ ..] => (*c, tail),
        [] => return None,
    };
    (tail.first() == Some(&b'"') && c.is_ascii()).then_some(Some(char::from(c)))
}

fn capabilities(list: &[u8]) -> Vec<String> {
    list.split(|&b| b == b' ').filter(|w| !w.is_empty()).map(lossy).collect()
}

fn status_response(tag: Option<String>, status: Status, resp_text: &[u8]) -> Response {
    let code = resp_text.strip_prefix(b"[").and_then(|inner| {
        let end = inner.iter().position(|&b| b == b']')?;
        let (name, args) = split_word(&inner[..end]);
        let name = name.to_ascii_uppercase();
        Some(match &name[..] {
            b"CAPABILITY" => Code::Capability(capabilities(args)),
            b"UIDVALIDITY" => number(args).map(Code::UidValidity).unwrap_or_else(|| Code::Other(lossy(&inner[..end]))),
            b"UIDNEXT" => number(args).map(Code::UidNext).unwrap_or_else(|| Code::Other(lossy(&inner[..end]))),
            _ => Code::Other(lossy(&inner[..end])),
        })
    });
    Response::Status { tag, status, code, text: lossy(resp_text) }
}

/// `(TAG "a5") UID ALL 1:3,7` -> the ranges of ALL; no ALL means none matched.
fn esearch_all(args: &[u8]) -> Option<Vec<(u32, u32)>> {
    let mut words = args.split(|&b| b == b' ').filter(|w| !w.is_empty()).peekable();
    while let Some(w) = words.next() {
        if w.eq_ignore_ascii_case(b"ALL") {
            let set = words.next()?;
            return parse_sequence_set(set);
        }
    }
    Some(Vec::new())
}

/// The numbers of a `* SEARCH` answer as one-element ranges. A number that is 0 or does not
/// fit in 32 bits is malformed (no UID is 0); other words (a CONDSTORE "(MODSEQ n)") are skipped.
fn search_numbers(args: &[u8]) -> Option<Vec<(u32, u32)>> {
    let mut out = Vec::new();
    for w in args.split(|&b| b == b' ').filter(|w| !w.is_empty() && w.iter().all(u8::is_ascii_digit)) {
        let n: u32 = number(w).filter(|&n| n > 0)?;
        out.push((n, n));
    }
    Some(out)
}

/// Parses a sequence set of explicit numbers ("1:3,7") into ranges; "*" is not valid in a
/// server's set.
fn parse_sequence_set(set: &[u8]) -> Option<Vec<(u32, u32)>> {
    let mut out = Vec::new();
    for item in set.split(|&b| b == b',') {
        match item.iter().position(|&b| b == b':') {
            Some(p) => {
                let a: u32 = number(&item[..p]).filter(|&n| n > 0)?;
                let b: u32 = number(&item[p + 1..]).filter(|&n| n > 0)?;
                out.push(if a <= b { (a, b) } else { (b, a) });
            }
            None => {
                let n = number(item).filter(|&n| n > 0)?;
                out.push((n, n));
            }
        }
    }
    Some(out)
}

pub(super) enum Token<'a> {
    Open,
    Close,
    Atom(&'a [u8]),
    String(Vec<u8>),
    Nil,
}

/// Tokens of a FETCH attribute list, with literals taken (not copied) from the frame.
pub(super) struct Lexer<'a, 'l> {
    text: &'a [u8],
    pos: usize,
    literals: &'l mut VecDeque<(usize, Vec<u8>)>,
}

impl<'a> Lexer<'a, '_> {
    fn next_literal_at(&self) -> usize {
        self.literals.front().map_or(usize::MAX, |(at, _)| *at)
    }

    pub(super) fn next(&mut self) -> Option<Token<'a>> {
        let lit_at = self.next_literal_at();
        if lit_at < self.pos {
            // A literal inside a quoted string or a section: not a shape we accept.
            return None;
        }
        while self.pos < self.text.len() && self.pos < lit_at && self.text[self.pos] == b' ' {
            self.pos += 1;
        }
        if self.pos == lit_at {
            let (_, bytes) = self.literals.pop_front()?;
            return Some(Token::String(bytes));
        }
        let text = self.text;
        let c = *text.get(self.pos)?;
        match c {
            b'(' => {
                self.pos += 1;
                Some(Token::Open)
            }
            b')' => {
                self.pos += 1;
                Some(Token::Close)
            }
            b'"' => {
                let mut out = Vec::new();
                let mut i = self.pos + 1;
                loop {
                    if i >= lit_at {
                        return None;
                    }
                    match *text.get(i)? {
                        b'"' => break,
                        b'\\' => {
                            out.push(*text.get(i + 1)?);
                            i += 2;
                        }
                        b => {
                            out.push(b);
                            i += 1;
                        }
                    }
                }
                self.pos = i + 1;
                Some(Token::String(out))
            }
            _ => {
                let start = self.pos;
                let mut i = start;
                let mut in_section = false;
                while i < text.len() && i < lit_at {
                    let b = text[i];
                    if in_section {
                        in_section = b != b']';
                    } else if b == b'[' {
                        in_section = true;
                    } else if b == b' ' || b == b'(' || b == b')' {
                        break;
                    }
                    i += 1;
                }
                if i == start {
                    return None;
                }
                self.pos = i;
                let atom = &text[start..i];
                if atom.eq_ignore_ascii_case(b"NIL") {
                    Some(Token::Nil)
                } else {
                    Some(Token::Atom(atom))
                }
            }
        }
    }

    /// Skips one value (atom, string, NIL or a nested list).
    pub(super) fn skip_value(&mut self) -> Option<()> {
        let mut depth = 0usize;
        loop {
            match self.next()? {
                Token::Open => depth += 1,
                Token::Close => depth = depth.checked_sub(1)?,
                _ => {}
            }
            if depth == 0 {
                return Some(());
            }
        }
    }
}

/// BODY[], BINARY[] (with an optional <origin>) and RFC822 carry the whole message.
fn is_body_item(upper: &[u8]) -> bool {
    let base = match upper.iter().position(|&b| b == b'<') {
        Some(p) if upper.ends_with(b">") => &upper[..p],
        _ => upper,
    };
    matches!(base, b"BODY[]" | b"BINARY[]" | b"RFC822")
}

fn parse_fetch(
    seq: u32,
    text: &[u8],
    offset: usize,
    literals: &mut VecDeque<(usize, Vec<u8>)>,
    stage: Stage,
) -> Result<Fetch> {
    let bad = || malformed(stage, "FETCH response", text);
    let mut lx = Lexer { text, pos: offset, literals };
    if !matches!(lx.next(), Some(Token::Open)) {
        return Err(bad());
    }
    let mut fetch = Fetch { seq, ..Fetch::default() };
    loop {
        let name = match lx.next().ok_or_else(bad)? {
            Token::Close => break,
            Token::Atom(a) => a.to_ascii_uppercase(),
            _ => return Err(bad()),
        };
        match &name[..] {
            b"UID" => match lx.next() {
                Some(Token::Atom(n)) => fetch.uid = Some(number(n).ok_or_else(bad)?),
                _ => return Err(bad()),
            },
            b"RFC822.SIZE" => match lx.next() {
                Some(Token::Atom(n)) => fetch.size = Some(number(n).ok_or_else(bad)?),
                _ => return Err(bad()),
            },
            n if is_body_item(n) => match lx.next() {
                Some(Token::String(s)) => fetch.body = Some(s),
                Some(Token::Nil) => {}
                _ => return Err(bad()),
            },
            _ => lx.skip_value().ok_or_else(bad)?,
        }
    }
    Ok(fetch)
}

#[cfg(test)]
mod tests;
