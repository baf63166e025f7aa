//! Support for the integration tests: the rig's coordinates (from `rig.env`, written by
//! `tests/rig/up.sh`), tenant configurations pointing at it, the shared component, a
//! recording TCP proxy, and mailbox helpers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use mailplug_host::{Plugin, TenantConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The running rig: every key of `rig.env`.
pub struct Rig {
    vars: HashMap<String, String>,
}

impl Rig {
    pub fn get(&self, key: &str) -> &str {
        self.vars.get(key).map(String::as_str).unwrap_or_else(|| panic!("rig.env has no {key}"))
    }
    pub fn port(&self, key: &str) -> u16 {
        self.get(key).parse().unwrap_or_else(|_| panic!("rig.env {key} is not a port"))
    }
    /// The password of a rig user, by role ("SUPPORT", "CUSTOMER", "AGENT", "SALES").
    pub fn pass(&self, role: &str) -> &str {
        self.get(&format!("RIG_{role}_PASS"))
    }
    pub fn user(&self, role: &str) -> &str {
        self.get(&format!("RIG_{role}_USER"))
    }

    /// Runs doveadm with the rig's config.
    pub fn doveadm(&self, args: &[&str]) -> String {
        let prefix: Vec<&str> = self.get("DOVEADM").split_whitespace().collect();
        let out = Command::new(prefix[0]).args(&prefix[1..]).args(args).output().expect("doveadm runs");
        assert!(out.status.success(), "doveadm {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The rig, read once. Panics with the command to run when the rig is not up.
pub fn rig() -> &'static Rig {
    static RIG: OnceLock<Rig> = OnceLock::new();
    RIG.get_or_init(|| {
        let dir = std::env::var("MAILPLUG_RIG_DIR").unwrap_or_else(|_| "/tmp/mailplug-rig".into());
        let path = Path::new(&dir).join("rig.env");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; start the servers with tests/rig/up.sh", path.display()));
        let mut vars = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            if let Some((k, v)) = line.split_once('=') {
                let v = v.trim();
                let v = v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')).unwrap_or(v);
                let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
                vars.insert(k.trim().to_string(), v.to_string());
            }
        }
        Rig { vars }
    })
}

/// The component, loaded once per test process (from the compile cache when it holds it),
/// with room for many instances: tests run in parallel, each holding one to three.
pub fn plugin() -> &'static Plugin {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    PLUGIN.get_or_init(|| {
        let path = wasm_path();
        let opts = mailplug_host::RuntimeOptions::default().with_instances(128);
        Plugin::load_with(&path, &opts).unwrap_or_else(|e| panic!("{e}; build it with tests/run.sh"))
    })
}

pub fn wasm_path() -> PathBuf {
    std::env::var("MAILPLUG_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/var/tmp/mailplug-target/wasm32-wasip2/release/mailplug_plugin.wasm"))
}

/// A server entry for a tenant config.
#[derive(Clone)]
pub struct ServerSpec {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub insecure_plaintext: bool,
    pub username: String,
    pub password: String,
}

impl ServerSpec {
    pub fn new(host: &str, port: u16, tls: bool, username: &str, password: &str) -> Self {
        ServerSpec {
            host: host.into(),
            port,
            tls,
            insecure_plaintext: false,
            username: username.into(),
            password: password.into(),
        }
    }
    fn toml(&self, env_name: &str) -> String {
        format!(
            "host = \"{}\"\nport = {}\ntls = {}\ninsecure_plaintext = {}\nusername = \"{}\"\npassword_env = \"{}\"\n",
            self.host, self.port, self.tls, self.insecure_plaintext, self.username, env_name
        )
    }
}

/// A one-mailbox, one-queue tenant. `trust_rig_ca` adds the rig's CA; without it the rig's
/// certificates are untrusted.
pub fn tenant(protocol: &str, inbound: &ServerSpec, smtp: &ServerSpec, trust_rig_ca: bool) -> TenantConfig {
    let r = rig();
    let ca = if trust_rig_ca { format!("extra_ca_file = \"{}\"\n", r.get("RIG_CA")) } else { String::new() };
    let text = format!(
        "tenant = \"test\"\nlicensed = true\n{ca}database = \"/nonexistent/mailplug.sqlite3\"\n[limits]\nreply_timeout_secs = 15\nconnect_timeout_secs = 5\n\
         [[mailbox]]\nname = \"inbox\"\naddress = \"{addr}\"\nprotocol = \"{protocol}\"\nfirst_sync = \"all\"\n{mb}\
         [[queue]]\nname = \"q\"\nmailboxes = [\"inbox\"]\n[queue.smtp]\n{sm}",
        addr = inbound.username,
        mb = inbound.toml("IN_PW"),
        sm = smtp.toml("OUT_PW"),
    );
    let (inpw, outpw) = (inbound.password.clone(), smtp.password.clone());
    TenantConfig::parse(&text, "test.toml", Path::new("/tmp"), &move |k| match k {
        "IN_PW" => Some(inpw.clone()),
        "OUT_PW" => Some(outpw.clone()),
        _ => None,
    })
    .expect("test config parses")
}

/// A TCP proxy on 127.0.0.1 that forwards to `upstream` and records every byte the client sent.
pub struct RecordingProxy {
    pub port: u16,
    pub client_bytes: Arc<Mutex<Vec<u8>>>,
}

pub async fn recording_proxy(upstream: (String, u16)) -> RecordingProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let port = listener.local_addr().expect("addr").port();
    let client_bytes = Arc::new(Mutex::new(Vec::new()));
    let rec = client_bytes.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let mut server = match TcpStream::connect((upstream.0.as_str(), upstream.1)).await {
                Ok(s) => s,
                Err(_) => continue,
            };
            let rec = rec.clone();
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.split();
                let (mut sr, mut sw) = server.split();
                let up = async {
                    let mut buf = [0u8; 8192];
                    loop {
                        match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                rec.lock().expect("lock").extend_from_slice(&buf[..n]);
                                if sw.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = sw.shutdown().await;
                };
                let down = async {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    let _ = cw.shutdown().await;
                };
                tokio::join!(up, down);
            });
        }
    });
    RecordingProxy { port, client_bytes }
}

/// True when `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Every form in which a password could leak onto the wire or into text: itself, and inside
/// base64 SASL PLAIN / LOGIN encodings.
pub fn secret_forms(user: &str, password: &str) -> Vec<Vec<u8>> {
    use std::fmt::Write;
    let b64 = |raw: &[u8]| -> Vec<u8> {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in raw.chunks(3) {
            let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    let _ = out.write_char(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out.into_bytes()
    };
    let mut plain = vec![0u8];
    plain.extend_from_slice(user.as_bytes());
    plain.push(0);
    plain.extend_from_slice(password.as_bytes());
    vec![password.as_bytes().to_vec(), b64(&plain), b64(password.as_bytes())]
}

/// A rig user reserved for one test: ("boxN@example.test", password).
pub fn test_box(n: u32) -> (String, String) {
    let r = rig();
    (r.user(&format!("BOX{n}")).to_string(), r.pass(&format!("BOX{n}")).to_string())
}

/// Login and password of the scale-out test's mailbox `n` (1..=200, rig users `scaleN`).
pub fn scale_box(n: u32) -> (String, String) {
    let r = rig();
    (r.user(&format!("SCALE{n}")).to_string(), r.pass(&format!("SCALE{n}")).to_string())
}

impl Rig {
    /// Empties a user's mailbox: every folder but INBOX deleted, INBOX expunged.
    pub fn reset_mailbox(&self, user: &str) {
        let list = self.doveadm(&["mailbox", "list", "-u", user]);
        for folder in list.lines().map(str::trim).filter(|f| !f.is_empty() && *f != "INBOX") {
            let _ = Command::new(self.get("DOVEADM")).args(["mailbox", "delete", "-u", user, "-r", "-s", folder]).output();
        }
        self.doveadm(&["expunge", "-u", user, "mailbox", "INBOX", "all"]);
    }

    /// Saves a raw message into a folder (created when missing).
    pub fn put(&self, user: &str, folder: &str, raw: &[u8]) {
        use std::io::Write;
        if folder != "INBOX" {
            let _ = Command::new(self.get("DOVEADM")).args(["mailbox", "create", "-u", user, folder]).output();
        }
        let mut child = Command::new(self.get("DOVEADM"))
            .args(["save", "-u", user, "-m", folder])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("doveadm save");
        child.stdin.take().expect("stdin").write_all(raw).expect("write");
        assert!(child.wait().expect("wait").success(), "doveadm save into {user} {folder}");
    }

    /// (uid, flags, message-id) of every message in a folder; empty when the folder is missing.
    pub fn listing(&self, user: &str, folder: &str) -> Vec<(u32, String, String)> {
        let out = Command::new(self.get("DOVEADM"))
            .args(["-f", "tab", "fetch", "-u", user, "uid flags hdr.message-id", "mailbox", folder, "all"])
            .output()
            .expect("doveadm fetch");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .skip(1)
            .filter_map(|l| {
                let mut f = l.split('\t');
                let uid = f.next()?.trim().parse().ok()?;
                let flags = f.next().unwrap_or("").to_string();
                let mid = f.next().unwrap_or("").trim().trim_start_matches('<').trim_end_matches('>').to_string();
                Some((uid, flags, mid))
            })
            .collect()
    }

    /// Adds IMAP flags to one message, as another mail client would.
    pub fn add_flags(&self, user: &str, folder: &str, uid: u32, flags: &str) {
        self.doveadm(&["flags", "add", "-u", user, flags, "mailbox", folder, "uid", &uid.to_string()]);
    }
}

/// A simple message with a known Message-ID.
pub fn sample_message(id: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: Customer <customer@example.test>\r\nTo: support@example.test\r\nSubject: {subject}\r\n\
         Date: Fri, 27 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{id}>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nHello, this is {id}.\r\n.line with a dot\r\n"
    )
    .into_bytes()
}

/// A TCP proxy that forwards both ways and, with a limit, cuts both connections once that many
/// bytes (both directions together) have passed. `total` counts what passed (in the most
/// recent connection). Built on `sweep::fault_proxy`, which can also stall a connection.
pub struct CuttingProxy {
    pub port: u16,
    pub total: Arc<std::sync::atomic::AtomicUsize>,
    _proxy: sweep::FaultProxy,
}

pub async fn cutting_proxy(upstream: (String, u16), limit: Option<usize>) -> CuttingProxy {
    let proxy = sweep::fault_proxy(upstream, limit.map(|l| (l, sweep::Fault::Cut))).await;
    CuttingProxy { port: proxy.port, total: proxy.last_total.clone(), _proxy: proxy }
}

// ---- helper B (durable inbound) ----

/// A TCP proxy on 127.0.0.1 that keeps its port while the cut changes (the sweep's fault
/// proxy), so runs through the same proxy look like one server to the host, cut or not.
pub struct SwitchProxy {
    pub port: u16,
    proxy: sweep::FaultProxy,
}

impl SwitchProxy {
    /// The cut for connections accepted from now on (None: forward everything).
    pub fn set_cut(&self, limit: Option<usize>) {
        self.proxy.set_plan(limit.map(|l| (l, sweep::Fault::Cut)));
    }
    /// Bytes the most recent connection passed.
    pub fn last_total(&self) -> usize {
        self.proxy.last_total.load(std::sync::atomic::Ordering::SeqCst)
    }
}

pub async fn switch_proxy(upstream: (String, u16)) -> SwitchProxy {
    let proxy = sweep::fault_proxy(upstream, None).await;
    SwitchProxy { port: proxy.port, proxy }
}

// ---- helper F (fault sweep): the sweep's proxy, mailboxes, cases and checks (tests/src/sweep/).
pub mod sweep;

// ---- helper a: SMTP refusals against smtp2 (issue 11 items 1 and 6) ----

/// smtp2, the rig's second submission server (npm smtp-server): implicit TLS when `tls`, else
/// STARTTLS, logging in as `user`.
pub fn smtp2_spec(tls: bool, user: &str, password: &str) -> ServerSpec {
    let r = rig();
    let port = if tls { r.port("RIG_SMTP2_TLS_PORT") } else { r.port("RIG_SMTP2_STARTTLS_PORT") };
    ServerSpec::new(r.get("RIG_SMTP2_HOST"), port, tls, user, password)
}

/// The record smtp2 spooled for the message with this Message-ID (without angle brackets):
/// `{"id", "user", "mail_from", "rcpt_to", "size", "message_id"}`, or None.
pub fn smtp2_spooled(message_id: &str) -> Option<serde_json::Value> {
    let dir = rig().get("RIG_SMTP2_SPOOL");
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("smtp2 spool {dir}: {e}"));
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .find(|v| v["message_id"].as_str().map(|m| m.trim_matches(['<', '>'])) == Some(message_id))
}

/// Waits (at most 10 s) for smtp2 to have spooled the message with this Message-ID.
pub async fn smtp2_wait_spooled(message_id: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(v) = smtp2_spooled(message_id) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "smtp2 never spooled <{message_id}>");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

// ---- helper b (i11-imap): the scripted servers, moved here from e2e/hostile.rs so that
// e2e/namespaces.rs uses the same one.
pub mod scripted;

// ---- helper f: batch submissions (issue 12 item 3) ----

/// A TCP proxy on 127.0.0.1 for plaintext SMTP that forwards both ways until the client has
/// sent its `k`-th end-of-data ("\r\n.\r\n", k counted from 1): it forwards exactly up to and
/// including that dot, then closes both connections, so the server has the whole message and
/// the client never hears the verdict. `forwarded` holds every client byte that reached the
/// server; `withheld` the client bytes that arrived after the cut (then dropped).
pub struct DotCutProxy {
    pub port: u16,
    pub forwarded: Arc<Mutex<Vec<u8>>>,
    pub withheld: Arc<Mutex<Vec<u8>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for DotCutProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Where the `k`-th "\r\n.\r\n" of `bytes` ends (k from 1), if it is there.
pub fn nth_end_of_data(bytes: &[u8], k: usize) -> Option<usize> {
    let mut seen = 0;
    for (i, w) in bytes.windows(5).enumerate() {
        if w == b"\r\n.\r\n" {
            seen += 1;
            if seen == k {
                return Some(i + 5);
            }
        }
    }
    None
}

pub async fn dot_cut_proxy(upstream: (String, u16), k: usize) -> DotCutProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let port = listener.local_addr().expect("addr").port();
    let forwarded = Arc::new(Mutex::new(Vec::new()));
    let withheld = Arc::new(Mutex::new(Vec::new()));
    let (fw, wh) = (forwarded.clone(), withheld.clone());
    let accept = tokio::spawn(async move {
        // One connection: the batch session.
        let Ok((client, _)) = listener.accept().await else { return };
        let Ok(server) = TcpStream::connect((upstream.0.as_str(), upstream.1)).await else { return };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        let down = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = sr.read(&mut buf).await {
                if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            cw
        });
        let mut buf = vec![0u8; 65536];
        loop {
            let n = match tokio::time::timeout(std::time::Duration::from_secs(30), cr.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => n,
                _ => break,
            };
            let cut = {
                let mut all = fw.lock().expect("lock");
                let before = all.len();
                all.extend_from_slice(&buf[..n]);
                let end = nth_end_of_data(&all, k);
                if let Some(end) = end {
                    wh.lock().expect("lock").extend_from_slice(&all[end..]);
                    all.truncate(end);
                }
                end.map(|end| end - before)
            };
            if let Some(pass) = cut {
                let _ = sw.write_all(&buf[..pass]).await;
                let _ = sw.flush().await;
                // Give the server the dot, then cut both ways.
                let _ = sw.shutdown().await;
                down.abort();
                return;
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        down.abort();
    });
    DotCutProxy { port, forwarded, withheld, accept }
}

// ---- helper E (ingest, issue 12 item 4): the generated benchmark corpus (tests/src/corpus.rs).
pub mod corpus;

// ---- helper D (durable outbox, issue 13): an SMTP server whose every final dot gets a
// scripted answer (accept, a reply, a cut, a stall), counted across connections
// (tests/src/scripted_smtp.rs).
pub mod scripted_smtp;

/// Removes a test database and everything beside it (WAL, shared memory, the `-raw` folder of
/// message segments), so a test starts from nothing.
pub fn remove_database(p: &std::path::Path) {
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", p.display()));
    }
    let _ = std::fs::remove_dir_all(format!("{}-raw", p.display()));
}

/// The real `mailplug serve` binary in tests: work folder, process, API requests, waits.
pub mod serve;

/// Postfix's smtp-sink on a free loopback port (it takes any login, answers 250 to every
/// message), stopped on drop. `backlog`: its listen backlog / connection limit argument.
pub struct SmtpSink {
    child: std::process::Child,
    pub port: u16,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SmtpSink {
    /// Starts it and waits (at most 5 s per try, 5 tries on other ports) until it accepts.
    pub fn start(backlog: u32) -> SmtpSink {
        SmtpSink::start_with(backlog, &[])
    }

    /// `start` with smtp-sink's options `args` before the address.
    fn start_with(backlog: u32, args: &[&std::ffi::OsStr]) -> SmtpSink {
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
            let mut child = Command::new("/usr/sbin/smtp-sink")
                .args(["-u", "nobody"])
                .args(args)
                .args([&format!("127.0.0.1:{port}"), &backlog.to_string()])
                .spawn()
                .expect("smtp-sink runs");
            for _ in 0..250 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return SmtpSink { child, port };
                }
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("smtp-sink did not start");
    }
}

/// The test PostgreSQL: connection settings and unique names.
pub mod pg;

// ---- helper F (session 7, admin page): headless Chromium over WebDriver (tests/src/browser.rs).
pub mod browser;

// ---- helper G (s7): the `mailplug` binary, a child's first line, rig tenants, Dovecot's log ----

/// The `mailplug` binary the tests run (`MAILPLUG_BIN`, else the shared build's).
pub fn mailplug_bin() -> PathBuf {
    std::env::var("MAILPLUG_BIN").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from("/var/tmp/mailplug-target/debug/mailplug"))
}

/// Runs `mailplug ARGS` with the component under test and waits for it.
pub fn run_mailplug(args: &[&str]) -> std::process::Output {
    Command::new(mailplug_bin())
        .args(args)
        .env("MAILPLUG_WASM", wasm_path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", mailplug_bin().display()))
}

/// What a finished `mailplug` printed, stdout then stderr.
pub fn output_text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The first line `child` prints on its stdout (taken from it), waiting at most `wait`;
/// `None` when none came in time or the stream ended first (empty line).
pub fn first_stdout_line(child: &mut std::process::Child, wait: std::time::Duration) -> Option<String> {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("the child's stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(wait).ok().filter(|l| !l.is_empty())
}

/// A tenant fetching rig mailbox `user` over IMAP or POP3 with implicit TLS (sending as the
/// rig's agent), with `after` as its after-fetch action.
pub fn box_tenant(protocol: &str, user: &str, pass: &str, after: mailplug_host::config::AfterFetch) -> TenantConfig {
    let r = rig();
    let port = if protocol == "imap" { r.port("RIG_IMAPS_PORT") } else { r.port("RIG_POP3S_PORT") };
    let inb = ServerSpec::new("localhost", port, true, user, pass);
    let smtp = ServerSpec::new("localhost", r.port("RIG_SMTPS_PORT"), true, r.user("AGENT"), r.pass("AGENT"));
    let mut cfg = tenant(protocol, &inb, &smtp, true);
    cfg.mailboxes[0].after_fetch = after;
    cfg
}

/// One fetch of `cfg`'s mailbox "inbox" into `db` (its sync state there too).
pub async fn fetch_into(cfg: &TenantConfig, db: &mailplug_host::db::Database) -> Result<mailplug_host::ops::FetchSummary, mailplug_host::HostError> {
    let mut sink = db.sink(&cfg.tenant, "inbox");
    mailplug_host::ops::fetch(plugin(), cfg, "inbox", &mut sink, db).await
}

fn dovecot_log() -> String {
    format!("{}/logs/dovecot.log", rig().get("RIG_DIR"))
}

/// Lines Dovecot logged after `from` (a byte offset of its log) about `user`'s IMAP sessions.
pub fn dovecot_log_since(from: u64, user: &str) -> Vec<String> {
    let text = std::fs::read(dovecot_log()).unwrap_or_default();
    let tail = &text[(from as usize).min(text.len())..];
    String::from_utf8_lossy(tail).lines().filter(|l| l.contains(&format!("imap({user})"))).map(str::to_string).collect()
}

/// The length of Dovecot's log now (for `dovecot_log_since`).
pub fn dovecot_log_len() -> u64 {
    std::fs::metadata(dovecot_log()).map(|m| m.len()).unwrap_or(0)
}

/// A subject (or other text) no other test run uses: `what` and the time in nanoseconds.
pub fn unique_text(what: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
    format!("{what} {nanos}")
}

/// A message to `to` with a unique subject starting with `what`, and `what` as its body.
pub fn outgoing(to: &[&str], what: &str) -> mailplug_host::ops::Outgoing {
    mailplug_host::ops::Outgoing { to: to.iter().map(|s| s.to_string()).collect(), subject: unique_text(what), text_body: format!("{what}\n") }
}

/// A tenant file's head for the CLI: licensed, trusting the rig's CA, its database at `database`.
pub fn tenant_head_toml(tenant: &str, database: &Path) -> String {
    format!("tenant = \"{tenant}\"\nlicensed = true\nextra_ca_file = \"{}\"\ndatabase = \"{}\"\n", rig().get("RIG_CA"), database.display())
}

/// A server entry of a tenant file for the CLI: `host`:`port`, the TLS switch, the user and
/// the file (beside the tenant file) that holds the password.
pub fn server_toml(host: &str, port: u16, tls: bool, user: &str, password_file: &str) -> String {
    format!("host = \"{host}\"\nport = {port}\ntls = {tls}\nusername = \"{user}\"\npassword_file = \"{password_file}\"\n")
}

/// Writes `dir/tenant.toml` for the CLI: tenant `name` with box17's IMAP mailbox "box" and a
/// queue "out" sending through smtp2 as box17 (`tls`: TLS from the first byte, else STARTTLS).
pub fn smtp2_cli_config(dir: &Path, name: &str, tls: bool) -> PathBuf {
    let r = rig();
    let (user, pw) = test_box(17);
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(dir.join("box.pw"), &pw).expect("pw");
    let smtp = smtp2_spec(tls, &user, &pw);
    let text = format!(
        "{head}\n[[mailbox]]\nname = \"box\"\naddress = \"{user}\"\nprotocol = \"imap\"\n{inbound}\n\
         [[queue]]\nname = \"out\"\nmailboxes = [\"box\"]\n[queue.smtp]\n{submission}",
        head = tenant_head_toml(name, &dir.join("mailplug.sqlite3")),
        inbound = server_toml("localhost", r.port("RIG_IMAPS_PORT"), true, &user, "box.pw"),
        submission = server_toml(&smtp.host, smtp.port, tls, &user, "box.pw"),
    );
    let path = dir.join("tenant.toml");
    std::fs::write(&path, text).expect("config");
    path
}

// ---- helper G (s8): temporary directories and databases removed when the test ends ----

/// A fresh directory `mailplug-<name>-XXXXXX` under the system's temp dir (or a path inside
/// it), removed with everything in it when this value is dropped: at the end of the test and
/// also when the test panics, so runs never leave files behind in /tmp.
pub struct TempPath {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TempPath {
    /// A new empty directory.
    pub fn dir(name: &str) -> TempPath {
        let dir = tempfile::Builder::new().prefix(&format!("mailplug-{name}-")).tempdir().expect("temp dir");
        TempPath { path: dir.path().to_path_buf(), _dir: dir }
    }

    /// The path `file` (not created) inside a new directory: for a database, whose `-wal`,
    /// `-shm` and `-raw` companions land beside it and go with it.
    pub fn file(name: &str, file: &str) -> TempPath {
        let mut t = TempPath::dir(name);
        t.path = t.path.join(file);
        t
    }
}

impl std::ops::Deref for TempPath {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for TempPath {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

/// A SQLite store in its own temporary directory, removed (with its segments) after the store
/// is closed, when this value is dropped.
pub struct TempDatabase {
    db: mailplug_host::db::Database,
    path: TempPath,
}

impl TempDatabase {
    /// Opens a new store `mailplug-<name>-XXXXXX/mailplug.sqlite3`.
    pub fn open(name: &str) -> TempDatabase {
        TempDatabase::open_with(name, |p| mailplug_host::db::Database::open(p).expect("db"))
    }

    /// Opens a new store at such a path with `open` (for other keys or options).
    pub fn open_with(name: &str, open: impl FnOnce(&Path) -> mailplug_host::db::Database) -> TempDatabase {
        let path = TempPath::file(name, "mailplug.sqlite3");
        TempDatabase { db: open(&path), path }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl std::ops::Deref for TempDatabase {
    type Target = mailplug_host::db::Database;
    fn deref(&self) -> &mailplug_host::db::Database {
        &self.db
    }
}

#[cfg(test)]
mod temp_path_tests {
    use super::TempPath;

    #[test]
    fn a_temp_path_is_removed_with_its_contents_when_dropped_and_when_the_test_panics() {
        let dir = TempPath::dir("temp-path-test");
        std::fs::write(dir.join("a"), b"x").unwrap();
        let kept = dir.to_path_buf();
        assert!(kept.file_name().unwrap().to_string_lossy().starts_with("mailplug-temp-path-test-"), "{kept:?}");
        drop(dir);
        assert!(!kept.exists(), "{kept:?}");

        let file = TempPath::file("temp-path-test", "db.sqlite3");
        assert!(!file.exists() && file.parent().unwrap().is_dir(), "the file is not created, its folder is");
        let folder = file.parent().unwrap().to_path_buf();
        let panicked = std::panic::catch_unwind(move || {
            std::fs::write(&*file, b"x").unwrap();
            std::fs::write(format!("{}-wal", file.display()), b"x").unwrap();
            panic!("a failing test");
        });
        assert!(panicked.is_err());
        assert!(!folder.exists(), "removed while unwinding: {folder:?}");
    }
}

// ---- helper A (session 7): an smtp-sink that keeps what it received ----

impl SmtpSink {
    /// `start` with `smtp-sink -D dump -S separator`: each transaction is appended to the file
    /// `dump` after `separator` (smtp-sink expands C escapes such as `\n` in it), followed by
    /// smtp-sink's own X- and Received headers, then the message as received: dot-stuffing
    /// removed, LF line ends, and an empty line at the end. `dump`'s folder must be writable
    /// by `nobody` (smtp-sink drops to that user).
    pub fn start_dumping(backlog: u32, dump: &std::path::Path, separator: &str) -> SmtpSink {
        SmtpSink::start_with(backlog, &["-S".as_ref(), separator.as_ref(), "-D".as_ref(), dump.as_os_str()])
    }
}

// ---- helper D (session 7): the scale-out test's harness (tests/src/scale.rs): nodes on a
// PostgreSQL schema of their own, 200 generated mailboxes, LMTP inflow, an SMTP dot-holding proxy.
pub mod scale;
