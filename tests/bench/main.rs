//! mailplug-bench: how fast mailplug ingests a mailbox (fetch, parse, store) compared with the
//! raw transfer of the same bytes and with Python's standard library doing the same job, all
//! measured in the same run against the rig's real Dovecot over TLS.
//!
//! Usage: mailplug-bench [MESSAGES] [KB_PER_MESSAGE] [RUNS]   (defaults 300 32 5)
//!        mailplug-bench send [MESSAGES] [KB] [RUNS]            (batch send, see send.rs)
//!        mailplug-bench send-steps [MESSAGES] [ROUNDS]         (the component's steps of a batch send, no network; steps.rs)
//!        mailplug-bench runtime [CLI_RUNS] [INSTANTIATIONS]  (defaults 50 2000; no servers needed)
//!        mailplug-bench corpus [MESSAGES] [RUNS]              (defaults 5000 3; see ingest.rs)
//!        mailplug-bench idle [N]                              (default 50; memory of idling IMAP mailboxes, idle.rs)
//!
//! Except in `send` and `corpus` modes the runtime's costs (`runtime.rs`: CLI start, instantiation with and without the
//! pool, idle instance memory) are measured first, in the same run.

mod runtime;
mod ingest;
mod idle;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mailplug_host::config::{AfterFetch, FirstSync, TenantConfig};
use mailplug_host::db::Database;
use mailplug_host::ops;
use mailplug_host::store::{MemorySink, NoSyncState};
use mailplug_tests::{plugin, rig, tenant, test_box, ServerSpec};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BASE64_LINE: &str = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3";

fn message(i: usize, kb: usize) -> Vec<u8> {
    let mut m = format!(
        "From: Customer {i} <customer{i}@example.test>\r\nTo: support@example.test\r\nSubject: Bench message {i}\r\n\
         Date: Fri, 27 Nov 2026 10:00:00 +0000\r\nMessage-ID: <bench-{i}@example.test>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Hello support,\r\nplease see the attached file. Grüße!\r\n\r\n--b\r\nContent-Type: application/octet-stream; name=\"data.bin\"\r\n\
         Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"data.bin\"\r\n\r\n"
    )
    .into_bytes();
    while m.len() < kb * 1024 {
        m.extend_from_slice(BASE64_LINE.as_bytes());
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(b"--b--\r\n");
    m
}

pub(crate) async fn tls(host: &str, port: u16, ca: &str) -> tokio_rustls::client::TlsStream<TcpStream> {
    let config = mailplug_host::net::tls_config(Some(std::path::Path::new(ca))).expect("tls config");
    let tcp = TcpStream::connect((host, port)).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from(host.to_string()).expect("name"), tcp)
        .await
        .expect("tls")
}

/// The raw transfer: one pipelined write of every command, then read to the end of stream.
pub(crate) async fn raw_session(host: &str, port: u16, ca: &str, commands: String) -> (Duration, usize) {
    let start = Instant::now();
    let mut s = tls(host, port, ca).await;
    let mut buf = vec![0u8; 256 * 1024];
    let n = s.read(&mut buf).await.expect("greeting");
    let mut total = n;
    s.write_all(commands.as_bytes()).await.expect("write");
    s.flush().await.expect("flush");
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
    (start.elapsed(), total)
}

pub(crate) fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub(crate) fn db_file(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("mailplug-bench-{name}.sqlite3"));
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", p.display()));
    }
    p
}

pub(crate) fn config(proto: &str, port: u16, user: &str, pass: &str, n: usize) -> TenantConfig {
    let r = rig();
    let inb = ServerSpec::new("localhost", port, true, user, pass);
    let smtp = ServerSpec::new("localhost", r.port("RIG_SMTPS_PORT"), true, r.user("AGENT"), r.pass("AGENT"));
    let mut cfg = tenant(proto, &inb, &smtp, true);
    cfg.mailboxes[0].after_fetch = AfterFetch::Keep;
    cfg.mailboxes[0].first_sync = FirstSync::All;
    cfg.limits.max_batch_messages = n as u32 + 10;
    cfg
}

mod parse;
mod send;
mod steps;

struct Row {
    name: String,
    time: Duration,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    if std::env::args().nth(1).as_deref() == Some("runtime") {
        let (cli_runs, inst) = (*args.first().unwrap_or(&50), *args.get(1).unwrap_or(&2000));
        println!("{}", runtime::run(&mailplug_tests::wasm_path(), cli_runs, inst).await);
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("send") {
        return send::run(&args).await;
    }
    if std::env::args().nth(1).as_deref() == Some("send-steps") {
        return steps::run(&args).await;
    }
    if std::env::args().nth(1).as_deref() == Some("parse") {
        return parse::run(&args).await;
    }
    if std::env::args().nth(1).as_deref() == Some("corpus") {
        return ingest::run(&args, false).await;
    }
    if std::env::args().nth(1).as_deref() == Some("corpus-store") {
        return ingest::run(&args, true).await;
    }
    if std::env::args().nth(1).as_deref() == Some("idle") {
        return idle::run(&args).await;
    }
    let runtime_tables = runtime::run(&mailplug_tests::wasm_path(), 30, 2000).await;
    let (n, kb, runs) = (*args.first().unwrap_or(&300), *args.get(1).unwrap_or(&32), *args.get(2).unwrap_or(&5));
    let r = rig();
    let (user, pass) = test_box(15);
    let ca = r.get("RIG_CA").to_string();
    eprintln!("filling {user} with {n} messages of {kb} KB ...");
    r.reset_mailbox(&user);
    let mut bytes = 0;
    for i in 0..n {
        let m = message(i, kb);
        bytes += m.len();
        r.put(&user, "INBOX", &m);
    }
    let peer = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench").join("peer.py");
    let _ = plugin(); // compile the component before timing

    let mut table: Vec<(String, Vec<Row>)> = Vec::new();
    for (proto, port_key) in [("imap", "RIG_IMAPS_PORT"), ("pop3", "RIG_POP3S_PORT")] {
        let port = r.port(port_key);
        let cfg = config(proto, port, &user, &pass, n);
        let commands = if proto == "imap" {
            format!("a LOGIN \"{user}\" \"{pass}\"\r\nb SELECT INBOX\r\nc UID FETCH 1:* (BODY.PEEK[])\r\nd LOGOUT\r\n")
        } else {
            let mut c = format!("USER {user}\r\nPASS {pass}\r\n");
            for i in 1..=n {
                c.push_str(&format!("RETR {i}\r\n"));
            }
            c.push_str("QUIT\r\n");
            c
        };
        let (mut raw, mut with_db, mut no_db, mut py) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for run in 0..runs {
            let (t, got) = raw_session("localhost", port, &ca, commands.clone()).await;
            assert!(got >= bytes, "{proto} raw session read {got} bytes, mailbox holds {bytes}");
            raw.push(t);

            let db = Database::open(&db_file(&format!("{proto}-{run}"))).expect("db");
            let start = Instant::now();
            let mut sink = db.sink(&cfg.tenant, "inbox");
            let s = ops::fetch(plugin(), &cfg, "inbox", &mut sink, &db).await.expect("mailplug fetch");
            drop(sink);
            with_db.push(start.elapsed());
            assert_eq!(s.delivered as usize, n);

            let start = Instant::now();
            let mut sink = MemorySink::default();
            ops::fetch(plugin(), &cfg, "inbox", &mut sink, &NoSyncState).await.expect("mailplug fetch");
            no_db.push(start.elapsed());
            drop(sink);

            let out = std::process::Command::new("python3")
                .arg(&peer)
                .args([proto, "localhost", &port.to_string(), &user, &pass, &ca])
                .arg(db_file(&format!("py-{proto}-{run}")))
                .output()
                .expect("python3");
            assert!(out.status.success(), "peer failed: {}", String::from_utf8_lossy(&out.stderr));
            let secs: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("peer time");
            py.push(Duration::from_secs_f64(secs));
        }
        table.push((
            proto.to_uppercase(),
            vec![
                Row { name: "raw transfer (pipelined commands, read to end)".into(), time: median(raw) },
                Row { name: "mailplug: fetch + parse + SQLite store".into(), time: median(with_db) },
                Row { name: "mailplug: fetch + parse, no store".into(), time: median(no_db) },
                Row { name: format!("Python {} + email + sqlite3 (peer)", if proto == "imap" { "imaplib" } else { "poplib" }), time: median(py) },
            ],
        ));
    }

    println!("{runtime_tables}");
    println!("{n} messages x {kb} KB = {:.1} MB over TLS on loopback; median of {runs} runs\n", bytes as f64 / 1e6);
    println!("| protocol | what | time (ms) | MB/s | ratio to raw |");
    println!("|---|---|---:|---:|---:|");
    for (proto, rows) in &table {
        let raw = rows[0].time.as_secs_f64();
        for row in rows {
            let t = row.time.as_secs_f64();
            println!("| {proto} | {} | {:.0} | {:.1} | {:.2} |", row.name, t * 1e3, bytes as f64 / 1e6 / t, t / raw);
        }
    }
}
