"""Peer for mailplug-bench: Python's standard library fetching, parsing and storing the same
mailbox (imaplib / poplib, email, sqlite3). Prints the elapsed seconds of the whole session."""
import email
import email.policy
import imaplib
import poplib
import sqlite3
import ssl
import sys
import time

proto, host, port, user, password, ca, db = sys.argv[1:8]
ctx = ssl.create_default_context(cafile=ca)
start = time.perf_counter()
conn = sqlite3.connect(db)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("PRAGMA synchronous=FULL")
conn.execute("CREATE TABLE IF NOT EXISTS m (id TEXT PRIMARY KEY, subject TEXT, body TEXT, raw BLOB)")


def store(raw):
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    body = msg.get_body(preferencelist=("plain", "html"))
    text = body.get_content() if body is not None else None
    conn.execute("INSERT OR IGNORE INTO m VALUES (?, ?, ?, ?)", (msg["Message-ID"], msg["Subject"], text, raw))


if proto == "imap":
    c = imaplib.IMAP4_SSL(host, int(port), ssl_context=ctx)
    c.login(user, password)
    c.select("INBOX", readonly=True)
    typ, data = c.uid("FETCH", "1:*", "(BODY.PEEK[])")
    for item in data:
        if isinstance(item, tuple):
            store(item[1])
    c.logout()
else:
    c = poplib.POP3_SSL(host, int(port), context=ctx)
    c.user(user)
    c.pass_(password)
    count, _ = c.stat()
    for i in range(1, count + 1):
        _, lines, _ = c.retr(i)
        store(b"\r\n".join(lines) + b"\r\n")
    c.quit()
conn.commit()
conn.close()
print(f"{time.perf_counter() - start:.6f}")
