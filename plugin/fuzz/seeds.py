#!/usr/bin/env python3
"""Writes the fuzz seed corpora (plugin/fuzz/seeds/<target>/) from the unit tests' bytes.

Protocol targets: for each test function of the transcript tests, the byte-string literals
(and the byte-string constants it names) in order, concatenated: roughly what the server
sent in that test. MIME: the sample messages and every byte string of parse.rs' tests.
Autoconfig and OAuth: every string literal of discover.rs / oauth.rs tests that looks like
XML / JSON / a redirect. Session seeds get the two configuration bytes of
`fuzzing::session` in front (implicit TLS and STARTTLS, one line per read).

Run from anywhere: python3 plugin/fuzz/seeds.py. Deterministic; safe to run again.
"""
import hashlib
import pathlib
import re

PLUGIN = pathlib.Path(__file__).resolve().parent.parent
SRC = PLUGIN / "src"
OUT = PLUGIN / "fuzz" / "seeds"

TOKEN = re.compile(
    r'(?P<raw>b?r(?P<hashes>#*)"(?P<rawbody>.*?)"(?P=hashes))'
    r'|(?P<str>(?P<bprefix>b?)"(?P<body>(?:\\.|\\\n|[^"\\])*)")'
    r"|(?P<char>b?'(?:\\.|[^'\\])')"
    r"|(?P<comment>//[^\n]*)"
    r"|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)",
    re.S,
)


def unescape(body: str) -> bytes:
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out += c.encode()
            i += 1
            continue
        n = body[i + 1]
        i += 2
        if n == "\n":  # line continuation: skip leading whitespace
            while i < len(body) and body[i] in " \t\n":
                i += 1
        elif n == "x":
            out.append(int(body[i : i + 2], 16))
            i += 2
        elif n == "u":
            end = body.index("}", i)
            out += chr(int(body[i + 1 : end], 16)).encode()
            i = end + 1
        else:
            out += {"n": b"\n", "r": b"\r", "t": b"\t", "0": b"\0", "\\": b"\\", '"': b'"', "'": b"'"}[n]
    return bytes(out)


def literals(path: pathlib.Path, consts=None):
    """Yields (function name, kind, bytes, word before) for each string literal; const names
    resolved (also those in `consts`, which collects this file's: a test module split into
    files shares its parent's constants)."""
    text = path.read_text()
    consts = {} if consts is None else consts
    fn = None
    pending_const = None
    prev = []
    for m in TOKEN.finditer(text):
        if m.group("comment") or m.group("char"):
            continue
        if m.group("ident"):
            word = m.group("ident")
            if len(prev) >= 1 and prev[-1] == "fn":
                fn = word
            if len(prev) >= 1 and prev[-1] == "const":
                pending_const = word
            elif word in consts:
                yield fn, consts[word][0], consts[word][1], prev[-1] if prev else None
            prev = (prev + [word])[-2:]
            continue
        if m.group("raw"):
            kind, data = ("b" if m.group(0).startswith("b") else "s"), m.group("rawbody").encode()
        else:
            kind, data = ("b" if m.group("bprefix") else "s"), unescape(m.group("body"))
        if pending_const:
            consts[pending_const] = (kind, data)
            pending_const = None
            continue
        yield fn, kind, data, prev[-1] if prev else None


def write(target: str, seeds):
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    # Generated seeds are named by their hash; other files (crashes found by fuzzing, kept as
    # regression seeds) stay.
    for old in d.iterdir():
        if re.fullmatch(r"[0-9a-f]{16}", old.name):
            old.unlink()
    seen = set()
    for s in seeds:
        if not s or len(s) > 256 * 1024:
            continue
        h = hashlib.sha1(s).hexdigest()[:16]
        if h in seen:
            continue
        seen.add(h)
        (d / h).write_bytes(s)
    print(f"{target}: {len(seen)} seeds")


SERVER = re.compile(rb"^(\* |\+ |\+\r|\+OK|-ERR|[2-5][0-9][0-9][\r -]|[A-Za-z0-9.]+ (OK|NO|BAD)\b)")


def per_test(paths, server_only=False, shared_consts=False):
    """One seed per test function: its byte strings in order (only what a server sends: the
    `S(...)` steps and literals that start like a server reply, when `server_only`). With
    `shared_consts` the constants of the first paths resolve in the later ones."""
    by_fn = {}
    shared = {} if shared_consts else None
    for p in paths:
        for fn, kind, data, before in literals(p, shared):
            if server_only and before != "S" and not SERVER.match(data):
                continue
            if fn and kind == "b":
                by_fn.setdefault((p.name, fn), bytearray()).extend(data)
    return [bytes(v) for v in by_fn.values()]


def session_seeds(paths, shared_consts=False):
    streams = per_test(paths, server_only=True, shared_consts=shared_consts)
    # byte 0: 0 = implicit TLS, 1 = STARTTLS (keep, all, fetch, password); byte 1: 0 = a line per read
    return [bytes([cfg, 0]) + s for s in streams for cfg in (0, 1)]


imap = per_test([SRC / "imap/tests.rs", SRC / "imap/append.rs"])
# pop3/tests is a folder: mod.rs (constants, helpers, session flow) and one file per concern.
POP3_TESTS = [SRC / "pop3/tests/mod.rs", *sorted(p for p in (SRC / "pop3/tests").glob("*.rs") if p.name != "mod.rs")]
pop3 = per_test(POP3_TESTS, shared_consts=True)
SMTP_TESTS = [SRC / "smtp/tests.rs", *sorted((SRC / "smtp/tests").glob("*.rs"))]
smtp = per_test(SMTP_TESTS, shared_consts=True)
write("imap_response", imap)
write("pop3_response", pop3)
write("smtp_reply", smtp)
write("imap_session", session_seeds([SRC / "imap/tests.rs", SRC / "imap/append.rs"]))
write("pop3_session", session_seeds(POP3_TESTS, shared_consts=True))
write("smtp_session", session_seeds(SMTP_TESTS, shared_consts=True))

samples = [p.read_bytes() for p in sorted((PLUGIN / "tests/samples").glob("*.eml"))]
mime_lits = [d for _, k, d, _ in literals(SRC / "parse.rs") if k == "b" and b":" in d]
write("mime", samples + mime_lits)

xml = [d for _, _, d, _ in literals(SRC / "discover/tests.rs") if b"<" in d and b">" in d]
write("autoconfig", xml)

oauth = [bytes([0]) + d for _, _, d, _ in literals(SRC / "oauth/tests.rs") if d.lstrip().startswith(b"{") or b"code=" in d or b"?" in d]
write("oauth_token", oauth)
