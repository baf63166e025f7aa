//! Running the real `mailplug serve` binary in tests (tests/e2e/serve*.rs): a work folder with
//! tenants, secrets and the store, the process with its API address, requests over plain HTTP,
//! and bounded waits that poll the API.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::wasm_path;

pub const ADMIN: &str = "admin-token-for-the-serve-tests-0001";

pub use crate::mailplug_bin as bin;

/// A fresh folder for one test: tenants/, secrets/, the store and the logs. It is removed when
/// the value drops (declare it before the `Serve` so the process stops first).
pub fn workdir(name: &str) -> crate::TempPath {
    let d = crate::TempPath::dir(&format!("serve-{name}"));
    std::fs::create_dir_all(d.join("tenants")).expect("tenants dir");
    std::fs::create_dir_all(d.join("secrets")).expect("secrets dir");
    private(&d.join("secrets/admin.token"), ADMIN);
    d
}

pub fn private(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write secret");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}


pub fn write_tenant(dir: &Path, file: &str, text: &str) {
    // Written beside and renamed, so a scan never sees half a file.
    let tmp = dir.join(format!("tenants/.{file}.tmp"));
    std::fs::write(&tmp, text).expect("write tenant");
    std::fs::rename(&tmp, dir.join("tenants").join(file)).expect("rename tenant");
}

/// A running `mailplug serve`.
pub struct Serve {
    pub child: Child,
    pub addr: String,
}

impl Serve {
    pub fn start(dir: &Path, log: &str) -> Serve {
        Serve::start_with(dir, log, &[], &[])
    }

    /// `start` with more command-line arguments and environment variables.
    pub fn start_with(dir: &Path, log: &str, args: &[&str], env: &[(&str, &str)]) -> Serve {
        let log = std::fs::File::create(dir.join(log)).expect("log file");
        // The SQLite store in the work folder unless `args` names a store (helper B, session 7).
        let store: Vec<std::ffi::OsString> =
            if args.contains(&"--store") { Vec::new() } else { vec!["--store".into(), dir.join("store.sqlite3").into()] };
        let mut child = Command::new(bin())
            .args(["serve", "--tenants"])
            .arg(dir.join("tenants"))
            .args(store)
            .args(["--listen", "127.0.0.1:0", "--admin-token-file"])
            .arg(dir.join("secrets/admin.token"))
            .args(["--backoff-secs", "1", "--backoff-max-secs", "2", "--log", "info"])
            .args(args)
            .envs(env.iter().copied())
            .env("MAILPLUG_WASM", wasm_path())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("mailplug serve starts");
        let line = crate::first_stdout_line(&mut child, Duration::from_secs(120)).expect("serve prints where it listens within 120 s");
        let addr = line.trim().rsplit("http://").next().unwrap_or_default().to_string();
        assert!(addr.starts_with("127.0.0.1:"), "unexpected first line: {line:?}");
        let s = Serve { child, addr };
        wait_for("the service is ready", 60, || (s.get("/readyz", None).0 == 200).then_some(()));
        s
    }

    /// (status, body) of a request; `Connection: close`, so the body ends with the stream.
    pub fn request(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, Vec<u8>) {
        let mut s = TcpStream::connect(&self.addr).expect("connect to the API");
        s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let body = body.unwrap_or("");
        let ct = if body.is_empty() { "" } else { "Content-Type: application/json\r\n" };
        // A server refusing a large body may answer and close before reading all of it: a
        // failed write or a reset after the answer arrived is not the test's concern.
        let _ = write!(s, "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}{ct}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", self.addr, body.len());
        let mut buf = Vec::new();
        if let Err(e) = s.read_to_end(&mut buf) {
            assert!(!buf.is_empty(), "no response to {method} {path}: {e}");
        }
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("response head");
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status code");
        let mut body = buf[end + 4..].to_vec();
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            body = dechunk(&body);
        }
        (status, body)
    }

    /// (status, body as JSON, or null) of a request with a JSON body.
    pub fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, Value) {
        let (status, body) = self.request(method, path, token, body);
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let (status, body) = self.request("GET", path, token, None);
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    pub fn admin(&self, path: &str) -> Value {
        let (status, v) = self.get(path, Some(ADMIN));
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }

    pub fn metrics(&self) -> String {
        let (status, body) = self.request("GET", "/metrics", Some(ADMIN), None);
        assert_eq!(status, 200);
        String::from_utf8_lossy(&body).into_owned()
    }

    /// SIGTERM; the exit status and how long it took.
    pub fn terminate(mut self) -> (std::process::ExitStatus, Duration) {
        let t = Instant::now();
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc_kill(self.child.id() as i32, 15) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status, t.elapsed());
            }
            assert!(Instant::now() < deadline, "serve did not exit within 30 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

extern "C" {
    #[link_name = "kill"]
    pub fn libc_kill(pid: i32, sig: i32) -> i32;
}

pub fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if n == 0 || b.len() < eol + 2 + n {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[(eol + 2 + n + 2).min(b.len())..];
    }
    out
}

/// Polls `f` every 200 ms until it gives a value, at most `secs`.
pub fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting after {secs} s for: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The tenant's stored messages (every page).
pub fn messages(s: &Serve, tenant: &str, token: &str) -> Vec<Value> {
    try_messages(s, tenant, token).unwrap_or_else(|(status, v)| panic!("listing {tenant}'s messages: {status} {v}"))
}

/// The same, or the answer when it was not 200 (a tenant not loaded yet).
pub fn try_messages(s: &Serve, tenant: &str, token: &str) -> Result<Vec<Value>, (u16, Value)> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let (status, v) = s.get(&format!("/v1/tenants/{tenant}/messages?after={after}&limit=2"), Some(token));
        if status != 200 {
            return Err((status, v));
        }
        let page = v["messages"].as_array().cloned().unwrap_or_default();
        all.extend(page);
        match v["next_after"].as_i64() {
            Some(n) => after = n,
            None => return Ok(all),
        }
    }
}

pub fn with_mid<'a>(list: &'a [Value], mid: &str) -> Vec<&'a Value> {
    list.iter().filter(|m| m["message_id"] == mid).collect()
}

pub fn mailbox_state(s: &Serve, tenant: &str, mailbox: &str) -> Value {
    s.admin(&format!("/v1/tenants/{tenant}"))["mailboxes"][mailbox].clone()
}


// ---- helper C (store threading) ----

/// APPENDs `messages` to `user`'s INBOX over one pipelined plain-text IMAP connection to the
/// rig's no-TLS listener (127.0.0.2, LITERAL+): hundreds of messages in about a second, where
/// one `doveadm save` each takes a process per message. The APPENDs are sent once LOGIN was
/// answered (before that, Dovecot's login process has only a small input buffer). Asserts
/// every APPEND was accepted.
pub fn append_many(user: &str, password: &str, messages: &[Vec<u8>]) {
    let r = crate::rig();
    let s = TcpStream::connect(("127.0.0.2", r.port("RIG_IMAP_NOTLS_PORT"))).expect("connect to IMAP");
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let mut w = s.try_clone().expect("clone");
    let mut rd = BufReader::new(s);
    write!(w, "l LOGIN \"{user}\" \"{password}\"\r\n").expect("login");
    let mut line = String::new();
    loop {
        line.clear();
        assert!(rd.read_line(&mut line).expect("read") > 0, "the server closed before answering LOGIN");
        if line.starts_with("l ") {
            assert!(line.starts_with("l OK"), "LOGIN as {user}: {line}");
            break;
        }
    }
    let mut out = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        out.extend_from_slice(format!("a{i} APPEND INBOX {{{}+}}\r\n", m.len()).as_bytes());
        out.extend_from_slice(m);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"z LOGOUT\r\n");
    // Written while the answers are read, so neither side stalls.
    let writer = std::thread::spawn(move || w.write_all(&out).expect("append"));
    let mut seen = Vec::new();
    let _ = rd.read_to_end(&mut seen);
    writer.join().expect("writer");
    let text = String::from_utf8_lossy(&seen);
    let ok = text.lines().filter(|l| l.starts_with('a') && l.contains(" OK")).count();
    assert_eq!(ok, messages.len(), "appended {ok} of {}: {}", messages.len(), text.lines().find(|l| l.contains(" NO ") || l.contains(" BAD ")).unwrap_or(""));
}

/// A tenant file with IMAP mailboxes on the rig (name, rig box), polled every `poll` seconds;
/// the passwords and the API token in files of their own.
pub fn imap_tenant(dir: &Path, id: &str, token: &str, poll: u32, mailboxes: &[(&str, u32)]) -> String {
    let r = crate::rig();
    let p = dir.join(format!("secrets/{id}.token"));
    private(&p, token);
    let mut t = format!("tenant = \"{id}\"\nlicensed = true\nextra_ca_file = \"{}\"\napi_token_file = \"{}\"\n", r.get("RIG_CA"), p.display());
    t += "[limits]\nreply_timeout_secs = 15\nconnect_timeout_secs = 5\n";
    for (name, n) in mailboxes {
        let (user, pass) = crate::test_box(*n);
        let pw = dir.join(format!("secrets/box{n}.pw"));
        private(&pw, &pass);
        t += &format!(
            "[[mailbox]]\nname = \"{name}\"\naddress = \"{user}\"\nprotocol = \"imap\"\nfirst_sync = \"all\"\npoll_interval_secs = {poll}\n\
             host = \"localhost\"\nport = {}\ntls = true\nusername = \"{user}\"\npassword_file = \"{}\"\n",
            r.port("RIG_IMAPS_PORT"),
            pw.display()
        );
    }
    t
}

// ---- helper E (session 6): SSE with comment lines, a webhook receiver with a chosen answer,
// metric values.

/// What an SSE stream sent: an event (id, event name, data as JSON) or a comment line.
#[derive(Debug, Clone)]
pub enum SseItem {
    Event(String, String, Value),
    Comment(String),
}

/// Opens the SSE stream at `path` (with `Last-Event-ID` when given): the status, and what the
/// stream sends through a channel (closed when the stream ends). Dropping the receiver ends
/// the reading thread at the next line.
pub fn sse_stream(addr: &str, path: &str, token: &str, last_event_id: Option<&str>) -> (u16, std::sync::mpsc::Receiver<SseItem>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let last = last_event_id.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n{last}\r\n").expect("request");
    let mut r = BufReader::new(s);
    let mut status_line = String::new();
    r.read_line(&mut status_line).expect("status");
    let status: u16 = status_line.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status code");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Chunked framing lines are skipped: only field and comment lines matter.
        let (mut id, mut kind) = (String::new(), String::new());
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            let l = line.trim_end_matches(['\r', '\n']).to_string();
            line.clear();
            let item = if let Some(v) = l.strip_prefix(':') {
                Some(SseItem::Comment(v.trim().to_string()))
            } else if let Some(v) = l.strip_prefix("id:") {
                id = v.trim().to_string();
                None
            } else if let Some(v) = l.strip_prefix("event:") {
                kind = v.trim().to_string();
                None
            } else {
                l.strip_prefix("data:").map(|v| SseItem::Event(id.clone(), kind.clone(), serde_json::from_str(v.trim()).unwrap_or(Value::Null)))
            };
            if let Some(item) = item {
                if tx.send(item).is_err() {
                    return;
                }
            }
        }
    });
    (status, rx)
}

/// A plain-HTTP webhook receiver on 127.0.0.1:0 answering every request with the status in
/// `status` (changeable while it runs); the bodies it got, as JSON, in `seen`, and for each
/// whether its `Mailplug-Signature` verified with the secret (`start_signed`) in `valid`.
pub struct HookReceiver {
    pub port: u16,
    pub status: std::sync::Arc<std::sync::atomic::AtomicU16>,
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    pub valid: std::sync::Arc<std::sync::Mutex<Vec<bool>>>,
}

impl HookReceiver {
    pub fn start(status: u16) -> HookReceiver {
        HookReceiver::start_signed(status, "")
    }

    /// `start`, checking each request's signature with `secret` (HMAC-SHA256 of
    /// "timestamp.body", docs/WEBHOOKS.md); with an empty secret every request counts as invalid.
    pub fn start_signed(status: u16, secret: &str) -> HookReceiver {
        use std::sync::atomic::{AtomicU16, Ordering};
        use std::sync::{Arc, Mutex};
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let status = Arc::new(AtomicU16::new(status));
        let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
        let valid: Arc<Mutex<Vec<bool>>> = Arc::default();
        let (st, log, checks, secret) = (status.clone(), seen.clone(), valid.clone(), secret.to_string());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut c) = conn else { return };
                let (st, log, checks, secret) = (st.clone(), log.clone(), checks.clone(), secret.clone());
                std::thread::spawn(move || {
                    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut r = BufReader::new(c.try_clone().expect("clone"));
                    loop {
                        let mut headers = Vec::new();
                        loop {
                            let mut line = String::new();
                            if r.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if line == "\r\n" {
                                break;
                            }
                            if let Some((k, v)) = line.split_once(':') {
                                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                            }
                        }
                        let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or_default();
                        let len: usize = header("content-length").parse().unwrap_or(0);
                        let mut body = vec![0; len.min(1 << 20)];
                        if r.read_exact(&mut body).is_err() {
                            return;
                        }
                        let ok = !secret.is_empty() && signature_valid(&secret, header("mailplug-timestamp"), header("mailplug-signature"), &body);
                        {
                            let mut log = log.lock().unwrap();
                            log.push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                            checks.lock().unwrap().push(ok);
                        }
                        let code = st.load(Ordering::SeqCst);
                        if write!(c, "HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n").is_err() {
                            return;
                        }
                    }
                });
            }
        });
        HookReceiver { port, status, seen, valid }
    }

    /// Whether every request so far carried a valid signature.
    pub fn all_signed(&self) -> bool {
        self.valid.lock().unwrap().iter().all(|ok| *ok)
    }

    pub fn set_status(&self, code: u16) {
        self.status.store(code, std::sync::atomic::Ordering::SeqCst);
    }

    /// The requests so far.
    pub fn requests(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }
}

/// Whether `signature` ("v1=" and hex) is the HMAC-SHA256 with `secret` of "timestamp.body".
fn signature_valid(secret: &str, timestamp: &str, signature: &str, body: &[u8]) -> bool {
    let Some(hex) = signature.strip_prefix("v1=") else { return false };
    let tag: Option<Vec<u8>> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect();
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    tag.is_some_and(|t| ring::hmac::verify(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes()), &signed, &t).is_ok())
}

/// The value of the metric line that starts with `series` (name and labels), if present.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
}
