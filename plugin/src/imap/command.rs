//! Encoding client commands: tags, strings (quoted or literal), sequence sets.

use std::fmt;

/// Hands out short increasing tags: a1, a2, ...
#[derive(Debug, Default)]
pub struct Tagger {
    last: u32,
}

impl Tagger {
    /// Continues after `last` tags were handed out (a session resumed from an idle state).
    pub fn resumed(last: u32) -> Self {
        Tagger { last }
    }

    /// How many tags were handed out so far.
    pub fn last(&self) -> u32 {
        self.last
    }

    pub fn next(&mut self) -> String {
        self.last += 1;
        format!("a{}", self.last)
    }
}

/// Command bytes that may contain a secret; `Debug` never shows them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Wire(pub Vec<u8>);

impl fmt::Debug for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Wire(<{} bytes>)", self.0.len())
    }
}

/// How literals may be sent: synchronising (wait for "+" after each announcement), or
/// non-synchronising (RFC 7888 LITERAL+ for any size, LITERAL- up to 4096 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiteralMode {
    Sync,
    NonSyncAny,
    NonSyncSmall,
}

/// A command split at the synchronising literals it contains: send `parts[0]`, then each
/// following part after the server's "+" continuation.
#[derive(Debug, Default)]
pub struct Command {
    pub parts: Vec<Wire>,
}

impl Command {
    pub fn new(tag: &str, verb: &str) -> Self {
        Command { parts: vec![Wire(format!("{tag} {verb}").into_bytes())] }
    }

    fn cur(&mut self) -> &mut Vec<u8> {
        if self.parts.is_empty() {
            self.parts.push(Wire::default());
        }
        let last = self.parts.len() - 1;
        &mut self.parts[last].0
    }

    /// Appends " " and an IMAP string: quoted when every byte may appear in a quoted string
    /// (7-bit, no CR/LF/NUL), otherwise a literal.
    pub fn string(mut self, value: &str, mode: LiteralMode) -> Self {
        let bytes = value.as_bytes();
        let quotable = bytes.iter().all(|&b| b != 0 && b != b'\r' && b != b'\n' && b < 0x80);
        if quotable {
            let cur = self.cur();
            cur.reserve(bytes.len() + 3);
            cur.extend_from_slice(b" \"");
            for &b in bytes {
                if b == b'"' || b == b'\\' {
                    cur.push(b'\\');
                }
                cur.push(b);
            }
            cur.push(b'"');
            return self;
        }
        self.literal(bytes, mode)
    }

    /// Appends " " and `bytes` as a literal. A synchronising literal starts a new part; room
    /// for the CRLF that ends the command is reserved, so a large literal is copied once.
    pub fn literal(mut self, bytes: &[u8], mode: LiteralMode) -> Self {
        let non_sync = match mode {
            LiteralMode::NonSyncAny => true,
            LiteralMode::NonSyncSmall => bytes.len() <= 4096,
            LiteralMode::Sync => false,
        };
        let plus = if non_sync { "+" } else { "" };
        self.cur().extend_from_slice(format!(" {{{}{plus}}}\r\n", bytes.len()).as_bytes());
        if non_sync {
            let cur = self.cur();
            cur.reserve(bytes.len() + 2);
            cur.extend_from_slice(bytes);
        } else {
            let mut part = Vec::with_capacity(bytes.len() + 2);
            part.extend_from_slice(bytes);
            self.parts.push(Wire(part));
        }
        self
    }

    /// Appends protocol text as is (" (\\Seen)"); never for values.
    pub fn raw(mut self, text: &str) -> Self {
        self.cur().extend_from_slice(text.as_bytes());
        self
    }

    /// Ends the command with CRLF.
    pub fn finish(mut self) -> Self {
        self.cur().extend_from_slice(b"\r\n");
        self
    }
}

/// A compact sequence set for ascending, distinct numbers: "1:3,5,8:9". Empty input gives "".
pub fn sequence_set(sorted: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && Some(sorted[i + 1]) == end.checked_add(1) {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(c: &Command) -> Vec<Vec<u8>> {
        c.parts.iter().map(|w| w.0.clone()).collect()
    }

    #[test]
    fn tags_increase() {
        let mut t = Tagger::default();
        assert_eq!((t.next(), t.next(), t.next()), ("a1".to_string(), "a2".to_string(), "a3".to_string()));
    }

    #[test]
    fn quoting_escapes_quote_and_backslash() {
        let c =
            Command::new("a1", "LOGIN").string("joe", LiteralMode::Sync).string(r#"p"w\d"#, LiteralMode::Sync).finish();
        assert_eq!(wire(&c), vec![b"a1 LOGIN \"joe\" \"p\\\"w\\\\d\"\r\n".to_vec()]);
    }

    #[test]
    fn non_ascii_becomes_a_literal() {
        let c = Command::new("a1", "LOGIN").string("jörg", LiteralMode::Sync).string("pw", LiteralMode::Sync).finish();
        assert_eq!(wire(&c), vec![b"a1 LOGIN {5}\r\n".to_vec(), "jörg \"pw\"\r\n".as_bytes().to_vec()]);
        let c = Command::new("a1", "LOGIN")
            .string("u", LiteralMode::NonSyncAny)
            .string("p\r\n", LiteralMode::NonSyncAny)
            .finish();
        assert_eq!(wire(&c), vec![b"a1 LOGIN \"u\" {3+}\r\np\r\n\r\n".to_vec()]);
        let big = "é".repeat(3000);
        let c = Command::new("a1", "LOGIN").string(&big, LiteralMode::NonSyncSmall).finish();
        assert_eq!(c.parts.len(), 2, "LITERAL- allows non-synchronising literals only up to 4096 bytes");
    }

    #[test]
    fn debug_hides_bytes() {
        let c = Command::new("a1", "LOGIN").string("u", LiteralMode::Sync).string("hunter2", LiteralMode::Sync);
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn sequence_sets_are_compact() {
        assert_eq!(sequence_set(&[]), "");
        assert_eq!(sequence_set(&[7]), "7");
        assert_eq!(sequence_set(&[1, 2, 3, 5, 8, 9]), "1:3,5,8:9");
        assert_eq!(sequence_set(&[u32::MAX - 1, u32::MAX]), format!("{}:{}", u32::MAX - 1, u32::MAX));
    }
}
