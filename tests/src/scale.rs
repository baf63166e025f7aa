//! The scale-out test's harness (tests/e2e/scale.rs, issue 14): several `mailplug serve` nodes on
//! one PostgreSQL schema of their own, 200 generated mailboxes on the rig's `scaleN` users in a
//! few tenant files, a steady inflow over Dovecot's LMTP socket, an SMTP proxy that can hold the
//! server's answer to a message's final dot (to catch a sender in flight), and the reads the
//! checks need (PostgreSQL rows, Dovecot listings).
//!
//! - **Database**: the rig's test role may not create databases, so each run gets a schema of
//!   its own (`ScaleDb::create`, a name from `pg::unique`); the nodes reach it through the
//!   store URL's `options=-csearch_path=...` (no space: the store re-encodes the URL's query and
//!   a space would come out as `+`), this harness through its own connection. Nothing
//!   another test writes (tenants, leases, node heartbeats) is visible to the run.
//! - **Mailboxes** (`Layout`): per rig box a kind: IMAP idling (over the rig's no-TLS listener,
//!   so an idling session holds no `imap-login` TLS proxy: the rig's Dovecot runs at most 100
//!   login processes), IMAP polled, IMAP polled and deleting after the store, POP3 polled, POP3
//!   deleting; a third of the polled ones over TLS. Each tenant has one queue for all its
//!   mailboxes, sending through Postfix (STARTTLS), or through the `DotHoldProxy` to Postfix's
//!   no-TLS submission for the last tenant.
//! - **Nodes** (`Node`): each with its own copy of the tenant files (`<dir>/<node id>/tenants`),
//!   as machines of their own would have: what a node keeps beside the files (a queue's sender
//!   lock file, `flock`ed while it drains) must not be shared, or a stopped node's lock would
//!   keep the queue's new holder from draining.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::pg::{pg_env, unique};
use crate::serve::{libc_kill, private, wait_for, Serve, ADMIN};
use crate::{rig, scale_box, test_box, wasm_path};

// ---------------------------------------------------------------------------------------------
// The database

/// A schema of the rig's PostgreSQL for one run, and a connection to it (its own small runtime).
pub struct ScaleDb {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    pub schema: String,
    /// The URL for `mailplug serve --store`: the rig's, with the schema as search path.
    pub url: String,
    pub password_file: PathBuf,
    /// Dropped with the schema at the end unless the test failed (then kept to look at).
    pub keep: AtomicBool,
}

impl ScaleDb {
    /// A new schema named after `what`, or None when the rig has no PostgreSQL (`pg_env` says why).
    pub fn create(what: &str) -> Option<ScaleDb> {
        let (url, password_file) = pg_env()?;
        let schema = unique(what).replace('-', "_").to_ascii_lowercase();
        let password = std::fs::read_to_string(&password_file).expect("the PostgreSQL password file");
        let mut cfg: tokio_postgres::Config = url.parse().expect("the rig's PostgreSQL URL");
        cfg.password(password.trim_end());
        cfg.options(format!("-c search_path={schema}"));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let client = rt.block_on(async {
            let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.expect("connect to the rig's PostgreSQL");
            tokio::spawn(conn);
            client
        });
        rt.block_on(client.batch_execute(&format!("CREATE SCHEMA {schema}"))).expect("create the run's schema");
        // No space in the options: the store re-encodes the query, and a space would become "+".
        let url = format!("{url}?options=-csearch_path%3D{schema}");
        Some(ScaleDb { rt, client, schema, url, password_file, keep: AtomicBool::new(false) })
    }

    pub fn query(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> Vec<tokio_postgres::Row> {
        self.rt.block_on(self.client.query(sql, params)).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The first column of the first row, as i64 (a count).
    pub fn count(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> i64 {
        self.query(sql, params).first().map(|r| r.get::<_, i64>(0)).unwrap_or(0)
    }

    /// Whether the nodes' migrations have made the tables.
    pub fn has_tables(&self) -> bool {
        self.count("SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'leases'", &[]) == 1
    }

    /// Every lease: resource -> (owner, live).
    pub fn leases(&self) -> BTreeMap<String, (Option<String>, bool)> {
        self.query("SELECT resource, owner, expires_at > now() FROM leases", &[])
            .into_iter()
            .map(|r| (r.get::<_, String>(0), (r.get::<_, Option<String>>(1), r.get::<_, bool>(2))))
            .collect()
    }

    /// The live owner of `resource`, if any.
    pub fn owner(&self, resource: &str) -> Option<String> {
        self.query("SELECT owner FROM leases WHERE resource = $1 AND expires_at > now()", &[&resource])
            .first()
            .and_then(|r| r.get::<_, Option<String>>(0))
    }

    /// How many of `mids` are stored for (tenant, mailbox).
    pub fn stored_of(&self, tenant: &str, mailbox: &str, mids: &[String]) -> i64 {
        self.count("SELECT count(*) FROM messages WHERE tenant = $1 AND mailbox = $2 AND message_id = ANY($3)", &[&tenant, &mailbox, &mids])
    }

    /// Rows inserted, updated and deleted in each table of the run's schema so far
    /// (`pg_stat_user_tables`: exact for the schema, flushed by the server's backends at most
    /// once a second).
    pub fn table_writes(&self) -> BTreeMap<String, (i64, i64, i64)> {
        self.query(
            "SELECT relname::text, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables WHERE schemaname = current_schema()",
            &[],
        )
        .into_iter()
        .map(|r| (r.get::<_, String>(0), (r.get(1), r.get(2), r.get(3))))
        .collect()
    }

    /// The database's committed transactions and the cluster's WAL position in bytes (both
    /// shared with whatever else uses the rig's PostgreSQL at the time).
    pub fn xacts_and_wal(&self) -> (i64, i64) {
        let r = self.query(
            "SELECT xact_commit, (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint FROM pg_stat_database WHERE datname = current_database()",
            &[],
        );
        r.first().map(|r| (r.get(0), r.get(1))).unwrap_or((0, 0))
    }

    /// Message-IDs stored per (tenant, mailbox), each with how often.
    pub fn stored(&self) -> HashMap<(String, String), HashMap<String, i64>> {
        let mut out: HashMap<(String, String), HashMap<String, i64>> = HashMap::new();
        for r in self.query("SELECT tenant, mailbox, message_id, count(*) FROM messages GROUP BY 1, 2, 3", &[]) {
            out.entry((r.get(0), r.get(1))).or_default().insert(r.get(2), r.get(3));
        }
        out
    }
}

impl Drop for ScaleDb {
    fn drop(&mut self) {
        if std::thread::panicking() || self.keep.load(Ordering::SeqCst) {
            eprintln!("kept the run's schema {} to look at", self.schema);
            return;
        }
        let _ = self.rt.block_on(self.client.batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema)));
    }
}

// ---------------------------------------------------------------------------------------------
// The mailboxes and tenant files

/// How a generated mailbox is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// IMAP, idling between fetches (no-TLS listener).
    ImapIdle,
    /// IMAP, polled (`idle = false`), messages kept.
    ImapPoll,
    /// IMAP, polled, each message deleted (expunged) once stored.
    ImapDelete,
    /// POP3, polled, messages kept.
    Pop3,
    /// POP3, polled, each message deleted once stored.
    Pop3Delete,
}

impl Kind {
    /// 1 in 10 idling, 2 in 10 IMAP polled, 1 IMAP deleting, 3 POP3 keeping, 3 POP3 deleting.
    pub fn of(n: u32) -> Kind {
        match n % 10 {
            0 => Kind::ImapIdle,
            1 | 2 => Kind::ImapPoll,
            3 => Kind::ImapDelete,
            4..=6 => Kind::Pop3,
            _ => Kind::Pop3Delete,
        }
    }
    pub fn deletes(self) -> bool {
        matches!(self, Kind::ImapDelete | Kind::Pop3Delete)
    }
}

/// One generated mailbox on rig user `scale{n}`.
#[derive(Clone, Debug)]
pub struct ScaleBox {
    pub n: u32,
    pub tenant: String,
    pub name: String,
    pub kind: Kind,
    pub user: String,
    pub pass: String,
    pub tls: bool,
}

impl ScaleBox {
    pub fn resource(&self) -> String {
        format!("mailbox:{}/{}", self.tenant, self.name)
    }
}

#[derive(Clone, Debug)]
pub struct ScaleTenant {
    pub id: String,
    pub token: String,
    pub queue: String,
    /// Its queue sends through the `DotHoldProxy` (plain SMTP) instead of Postfix's STARTTLS port.
    pub held_queue: bool,
}

impl ScaleTenant {
    pub fn queue_resource(&self) -> String {
        format!("queue:{}/{}", self.id, self.queue)
    }
}

pub struct Layout {
    pub tenants: Vec<ScaleTenant>,
    pub boxes: Vec<ScaleBox>,
    pub poll_secs: u32,
}

impl Layout {
    /// `boxes` rig scale boxes (1..=boxes) spread round-robin over `tenants` tenants.
    pub fn new(tenants: usize, boxes: u32, poll_secs: u32) -> Layout {
        let tenants: Vec<ScaleTenant> = (0..tenants)
            .map(|i| ScaleTenant {
                id: format!("t{}", i + 1),
                token: format!("scale-tenant-{}-token-0123456789abcdef", i + 1),
                queue: "out".into(),
                held_queue: i + 1 == tenants,
            })
            .collect();
        let boxes = (1..=boxes)
            .map(|n| {
                let (user, pass) = scale_box(n);
                let kind = Kind::of(n);
                ScaleBox {
                    n,
                    tenant: tenants[(n as usize - 1) % tenants.len()].id.clone(),
                    name: format!("m{n:03}"),
                    kind,
                    user,
                    pass,
                    tls: kind != Kind::ImapIdle && n % 3 == 0,
                }
            })
            .collect();
        Layout { tenants, boxes, poll_secs }
    }

    pub fn tenant(&self, id: &str) -> &ScaleTenant {
        self.tenants.iter().find(|t| t.id == id).expect("a tenant of the layout")
    }

    pub fn by_resource(&self, resource: &str) -> Option<&ScaleBox> {
        self.boxes.iter().find(|b| b.resource() == resource)
    }

    /// Every resource the nodes must hold a lease on: the mailboxes and the queues.
    pub fn resources(&self) -> Vec<String> {
        self.boxes.iter().map(ScaleBox::resource).chain(self.tenants.iter().map(ScaleTenant::queue_resource)).collect()
    }

    /// Writes the tenant files (and their secrets) into `dir/tenants`; `held_smtp_port` is the
    /// `DotHoldProxy`'s port for the last tenant's queue.
    pub fn write(&self, dir: &Path, held_smtp_port: u16) {
        let r = rig();
        for t in &self.tenants {
            let tok = dir.join(format!("secrets/{}.token", t.id));
            private(&tok, &t.token);
            let mut s = format!(
                "tenant = \"{}\"\nlicensed = true\nextra_ca_file = \"{}\"\napi_token_file = \"{}\"\n\
                 [limits]\nreply_timeout_secs = 30\nconnect_timeout_secs = 5\nmax_batch_messages = 10\n",
                t.id,
                r.get("RIG_CA"),
                tok.display()
            );
            let mine: Vec<&ScaleBox> = self.boxes.iter().filter(|b| b.tenant == t.id).collect();
            for b in &mine {
                let pw = dir.join(format!("secrets/scale{}.pw", b.n));
                private(&pw, &b.pass);
                let (protocol, host, port, tls) = match (b.kind, b.tls) {
                    (Kind::Pop3 | Kind::Pop3Delete, true) => ("pop3", "localhost".to_string(), r.port("RIG_POP3S_PORT"), true),
                    (Kind::Pop3 | Kind::Pop3Delete, false) => ("pop3", r.get("RIG_POP3_NOTLS_HOST").to_string(), r.port("RIG_POP3_NOTLS_PORT"), false),
                    (_, true) => ("imap", "localhost".to_string(), r.port("RIG_IMAPS_PORT"), true),
                    (_, false) => ("imap", r.get("RIG_IMAP_NOTLS_HOST").to_string(), r.port("RIG_IMAP_NOTLS_PORT"), false),
                };
                s += &format!(
                    "[[mailbox]]\nname = \"{}\"\naddress = \"{}\"\nprotocol = \"{protocol}\"\nfirst_sync = \"all\"\n\
                     poll_interval_secs = {}\nhost = \"{host}\"\nport = {port}\ntls = {tls}\nusername = \"{}\"\npassword_file = \"{}\"\n",
                    b.name,
                    b.user,
                    self.poll_secs,
                    b.user,
                    pw.display()
                );
                if !tls {
                    s += "insecure_plaintext = true\n";
                }
                if b.kind.deletes() {
                    s += "after_fetch = \"delete\"\n";
                }
                if matches!(b.kind, Kind::ImapPoll | Kind::ImapDelete) {
                    s += "idle = false\n";
                }
            }
            // The queue logs in as the tenant's first mailbox and may send as each of them.
            let login = mine[0];
            let names: Vec<String> = mine.iter().map(|b| format!("\"{}\"", b.name)).collect();
            let pw = dir.join(format!("secrets/scale{}.pw", login.n));
            s += &format!("[[queue]]\nname = \"{}\"\nmailboxes = [{}]\nsend_permission = \"send-as\"\n", t.queue, names.join(", "));
            if t.held_queue {
                s += &format!("[queue.smtp]\nhost = \"127.0.0.1\"\nport = {held_smtp_port}\ntls = false\ninsecure_plaintext = true\n");
            } else {
                s += &format!("[queue.smtp]\nhost = \"localhost\"\nport = {}\ntls = false\n", r.port("RIG_SUBMISSION_PORT"));
            }
            s += &format!("username = \"{}\"\npassword_file = \"{}\"\n", login.user, pw.display());
            crate::serve::write_tenant(dir, &format!("{}.toml", t.id), &s);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The nodes

/// Lease TTL of the test's nodes, and the poll interval of its mailboxes.
pub const TTL_SECS: u64 = 3;

/// One `mailplug serve` node of the run.
pub struct Node {
    pub id: String,
    pub serve: Serve,
    pub log: PathBuf,
    pub pid: i32,
    pub killed: bool,
    pub stopped: bool,
}

impl Node {
    /// Starts node `id` on the tenants folder of `dir` and the run's schema.
    pub fn start(dir: &Path, id: &str, db: &ScaleDb, extra_env: &[(&str, &str)]) -> Node {
        Node::start_many(dir, &[id], db, extra_env).pop().expect("one node")
    }

    /// Starts several nodes at once (spawned together, then each waited for), so they race for
    /// the leases as nodes of a cluster starting together do.
    pub fn start_many(dir: &Path, ids: &[&str], db: &ScaleDb, extra_env: &[(&str, &str)]) -> Vec<Node> {
        let spawned: Vec<_> = ids
            .iter()
            .map(|id| {
                let log = dir.join(format!("{id}.log"));
                let file = std::fs::File::create(&log).expect("log file");
                // Each node its own copy of the tenant files, as on machines of their own (what
                // a node keeps beside them, such as a queue's sender lock file, is its own).
                let tenants = dir.join(id).join("tenants");
                std::fs::create_dir_all(&tenants).expect("the node's tenants folder");
                for f in std::fs::read_dir(dir.join("tenants")).expect("the tenants folder").flatten() {
                    std::fs::copy(f.path(), tenants.join(f.file_name())).expect("copy a tenant file");
                }
                let mut child = Command::new(crate::serve::bin())
                    .args(["serve", "--tenants"])
                    .arg(&tenants)
                    .arg("--store")
                    .arg(&db.url)
                    .arg("--store-password-file")
                    .arg(&db.password_file)
                    .args(["--node-id", id, "--lease-ttl", &TTL_SECS.to_string()])
                    .args(["--listen", "127.0.0.1:0", "--admin-token-file"])
                    .arg(dir.join("secrets/admin.token"))
                    .args(["--backoff-secs", "1", "--backoff-max-secs", "2", "--max-concurrent", "32", "--max-per-tenant", "32", "--log", "info"])
                    .env("MAILPLUG_WASM", wasm_path())
                    .env("MAILPLUG_LEASE_TTL_SECS", TTL_SECS.to_string())
                    .env("MAILPLUG_SSE_HEARTBEAT_SECS", "1")
                    .envs(extra_env.iter().copied())
                    .stdout(Stdio::piped())
                    .stderr(file)
                    .spawn()
                    .expect("mailplug serve starts");
                let stdout = child.stdout.take().expect("stdout");
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    let mut line = String::new();
                    let _ = BufReader::new(stdout).read_line(&mut line);
                    let _ = tx.send(line);
                });
                (id.to_string(), log, child, rx)
            })
            .collect();
        spawned
            .into_iter()
            .map(|(id, log, child, rx)| {
                let pid = child.id() as i32;
                let line = rx.recv_timeout(Duration::from_secs(120)).unwrap_or_default();
                let addr = line.trim().rsplit("http://").next().unwrap_or_default().to_string();
                let serve = Serve { child, addr };
                assert!(
                    serve.addr.starts_with("127.0.0.1:"),
                    "node {id} did not say where it listens ({line:?}); its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                wait_for(&format!("node {id} ready"), 60, || (serve.get("/readyz", None).0 == 200).then_some(()));
                Node { id, serve, log, pid, killed: false, stopped: false }
            })
            .collect()
    }

    /// Running and not stopped: its API answers.
    pub fn live(&self) -> bool {
        !self.killed && !self.stopped
    }

    pub fn kill9(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc_kill(self.pid, 9) };
        let _ = self.serve.child.wait();
        self.killed = true;
    }

    pub fn sigstop(&mut self) {
        // SAFETY: as above.
        unsafe { libc_kill(self.pid, 19) };
        self.stopped = true;
    }

    pub fn sigcont(&mut self) {
        // SAFETY: as above.
        unsafe { libc_kill(self.pid, 18) };
        self.stopped = false;
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// CPU time (user + system) the process used so far, from /proc/PID/stat.
    pub fn cpu(&self) -> Duration {
        proc_cpu(self.pid)
    }

    /// The tenant as this node's API shows it (None when it does not answer 200).
    pub fn tenant_state(&self, tenant: &str) -> Option<serde_json::Value> {
        let (status, v) = self.serve.get(&format!("/v1/tenants/{tenant}"), Some(ADMIN));
        (status == 200).then_some(v)
    }
}

/// CPU time (user + system) of a process, from /proc/PID/stat (clock ticks of 10 ms).
pub fn proc_cpu(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|u| u.parse().ok()).unwrap_or(0) + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Resident memory of a process in bytes, from /proc/PID/status.
pub fn proc_rss(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

// ---------------------------------------------------------------------------------------------
// The inflow

/// A message as a customer (one of rig boxes 93-96) writes it, about 2 KB.
pub fn customer_message(mid: &str, from: &str, to: &str, i: usize) -> Vec<u8> {
    let line = format!("Customer question {i}, line after line, for {to}.\r\n");
    format!(
        "From: Customer <{from}>\r\nTo: {to}\r\nSubject: scale {i}\r\nDate: Mon, 07 Dec 2026 07:00:00 +0000\r\n\
         Message-ID: <{mid}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}",
        line.repeat(2000 / line.len())
    )
    .into_bytes()
}

/// The customers' addresses: rig boxes 93 to 96.
pub fn customers() -> Vec<String> {
    (93..=96).map(|n| test_box(n).0).collect()
}

/// An LMTP session on the rig Dovecot's socket: deliveries as Postfix makes them.
pub struct Lmtp {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl Lmtp {
    pub fn connect() -> Lmtp {
        let path = format!("{}/dovecot/run/lmtp", rig().get("RIG_DIR"));
        let s = UnixStream::connect(&path).unwrap_or_else(|e| panic!("LMTP socket {path}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let w = s.try_clone().expect("clone");
        let mut l = Lmtp { r: BufReader::new(s), w };
        l.reply("greeting", "220");
        l.send("LHLO scale.test\r\n");
        l.reply("LHLO", "250");
        l
    }

    fn send(&mut self, s: &str) {
        self.w.write_all(s.as_bytes()).expect("LMTP write");
    }

    /// Reads one (possibly multi-line) reply; asserts its code.
    fn reply(&mut self, what: &str, code: &str) {
        loop {
            let mut line = String::new();
            assert!(self.r.read_line(&mut line).expect("LMTP read") > 0, "LMTP closed at {what}");
            assert!(line.starts_with(code), "LMTP {what}: {line}");
            if line.as_bytes().get(3) != Some(&b'-') {
                return;
            }
        }
    }

    /// Delivers one message to one rig user.
    pub fn deliver(&mut self, from: &str, to: &str, raw: &[u8]) {
        self.send(&format!("MAIL FROM:<{from}>\r\n"));
        self.reply("MAIL FROM", "250");
        self.send(&format!("RCPT TO:<{to}>\r\n"));
        self.reply("RCPT TO", "250");
        self.send("DATA\r\n");
        self.reply("DATA", "354");
        let mut data = Vec::with_capacity(raw.len() + 8);
        for line in raw.split_inclusive(|b| *b == b'\n') {
            if line.first() == Some(&b'.') {
                data.push(b'.');
            }
            data.extend_from_slice(line);
        }
        if !data.ends_with(b"\r\n") {
            data.extend_from_slice(b"\r\n");
        }
        data.extend_from_slice(b".\r\n");
        self.w.write_all(&data).expect("LMTP data");
        self.reply("end of data", "250");
    }
}

impl Drop for Lmtp {
    fn drop(&mut self) {
        let _ = self.w.write_all(b"QUIT\r\n");
    }
}

/// The Message-IDs in the INBOX of every rig user matching `mask` (such as `scale*`), in one
/// doveadm run: user -> Message-IDs (each as often as it is there; users with an empty INBOX
/// are missing).
pub fn inbox_mids_of_all(mask: &str) -> HashMap<String, Vec<String>> {
    let out = Command::new(rig().get("DOVEADM"))
        .args(["-f", "tab", "fetch", "-u", mask, "hdr.message-id", "mailbox", "INBOX", "all"])
        .output()
        .expect("doveadm fetch");
    assert!(out.status.success(), "doveadm fetch -u {mask}: {}", String::from_utf8_lossy(&out.stderr));
    let mut all: HashMap<String, Vec<String>> = HashMap::new();
    for l in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
        let mut f = l.split('\t');
        let (Some(user), Some(mid)) = (f.next(), f.next()) else { continue };
        all.entry(user.trim().to_string()).or_default().push(mid.trim().trim_start_matches('<').trim_end_matches('>').to_string());
    }
    all
}

/// The Message-IDs in a rig user's INBOX (each as often as it is there).
pub fn inbox_mids(user: &str) -> Vec<String> {
    rig().listing(user, "INBOX").into_iter().map(|(_, _, mid)| mid).collect()
}

// ---------------------------------------------------------------------------------------------
// An SMTP proxy that can hold the answer to a final dot

/// A plain TCP proxy for SMTP without TLS: forwards both ways; once `arm`ed, the next message's
/// final dot ("\r\n.\r\n" from the client) is forwarded (the server has the whole message) but
/// the server's answers on that connection are held back until `release`: the sender is caught
/// with its message handed over and no verdict, for as long as the test wants.
pub struct DotHoldProxy {
    pub port: u16,
    state: Arc<(Mutex<HoldState>, Condvar)>,
}

#[derive(Default)]
struct HoldState {
    armed: bool,
    /// The connection whose answers are held, while held.
    holding: Option<u64>,
    /// Connections accepted so far.
    conns: u64,
}

impl DotHoldProxy {
    pub fn start(upstream: (String, u16)) -> DotHoldProxy {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let state: Arc<(Mutex<HoldState>, Condvar)> = Arc::default();
        let st = state.clone();
        std::thread::spawn(move || {
            for client in l.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect((upstream.0.as_str(), upstream.1)) else { continue };
                let conn = {
                    let mut s = st.0.lock().expect("lock");
                    s.conns += 1;
                    s.conns
                };
                let (c2, s2) = (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
                let (up, down) = (st.clone(), st.clone());
                // Client to server: watch for the final dot.
                std::thread::spawn(move || {
                    let (mut cr, mut sw) = (client, server);
                    let mut buf = [0u8; 16384];
                    let mut tail: Vec<u8> = Vec::new();
                    while let Ok(n) = cr.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        tail.extend_from_slice(&buf[..n]);
                        if tail.windows(5).any(|w| w == b"\r\n.\r\n") {
                            let (lock, cv) = &*up;
                            let mut s = lock.lock().expect("lock");
                            if s.armed && s.holding.is_none() {
                                s.armed = false;
                                s.holding = Some(conn);
                                cv.notify_all();
                            }
                        }
                        let keep = tail.len().saturating_sub(4);
                        tail.drain(..keep);
                        if sw.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = sw.shutdown(std::net::Shutdown::Write);
                });
                // Server to client: wait while this connection is held.
                std::thread::spawn(move || {
                    let (mut sr, mut cw) = (s2, c2);
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = sr.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        {
                            let (lock, cv) = &*down;
                            let mut s = lock.lock().expect("lock");
                            while s.holding == Some(conn) {
                                s = cv.wait(s).expect("wait");
                            }
                        }
                        if cw.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = cw.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        DotHoldProxy { port, state }
    }

    /// The next final dot's answer will be held.
    pub fn arm(&self) {
        self.state.0.lock().expect("lock").armed = true;
    }

    /// Waits (at most `secs`) until a final dot's answer is held.
    pub fn wait_holding(&self, secs: u64) -> bool {
        let (lock, cv) = &*self.state;
        let s = lock.lock().expect("lock");
        let (s, _) = cv.wait_timeout_while(s, Duration::from_secs(secs), |s| s.holding.is_none()).expect("wait");
        s.holding.is_some()
    }

    /// Lets the held answer through; disarms.
    pub fn release(&self) {
        let (lock, cv) = &*self.state;
        let mut s = lock.lock().expect("lock");
        s.holding = None;
        s.armed = false;
        cv.notify_all();
    }
}

impl Drop for DotHoldProxy {
    fn drop(&mut self) {
        self.release();
    }
}

// ---------------------------------------------------------------------------------------------
// Small things

/// Milliseconds since the Unix epoch (the clock the service's `*_ms` fields use).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64
}

/// A counter of things done by a background thread, with a stop flag.
#[derive(Default)]
pub struct Pace {
    pub stop: AtomicBool,
    pub done: AtomicU64,
}

/// Waits until `at` (no-op when past): a steady pace for a feeder, not a wait on a server.
pub fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

/// (status, JSON body) of a request to a node's API, or None when the node does not answer
/// within `secs` (killed, stopped): for threads that must not hang on a stopped node.
pub fn try_call(addr: &str, method: &str, path: &str, token: &str, body: Option<&str>, secs: u64) -> Option<(u16, serde_json::Value)> {
    let sock: std::net::SocketAddr = addr.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(secs)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(secs))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(secs))).ok()?;
    let body = body.unwrap_or("");
    let ct = if body.is_empty() { "" } else { "Content-Type: application/json\r\n" };
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n{ct}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let mut rest = buf[end + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        rest = crate::serve::dechunk(&rest);
    }
    Some((status, serde_json::from_slice(&rest).unwrap_or(serde_json::Value::Null)))
}

/// A small xorshift generator: the feeders' choices, reproducible from the printed seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
