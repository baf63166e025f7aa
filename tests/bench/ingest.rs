//! `mailplug-bench corpus [MESSAGES] [RUNS]`: ingest of the generated corpus (tests/src/corpus.rs:
//! sizes 2-190 KB, median ~15 KB, a third with 1-3 attachments, QP/base64/8bit bodies in UTF-8
//! and ISO-8859-1) from the rig's Dovecot over IMAPS, side by side in one run:
//!
//! - raw transfer: pipelined LOGIN/SELECT/`UID FETCH 1:* BODY.PEEK[]`, read to the end;
//! - mailplug in-process (`ops::fetch`, the component compiled once): with the SQLite store,
//!   and with an in-memory sink;
//! - the `mailplug fetch` CLI with its SQLite store (a process per run: it compiles the
//!   component first), and its peak RSS (GNU time); the peak RSS on an empty mailbox too;
//! - the native Rust peer: the `imap` crate + the published mail-parser, no storage;
//! - the Python peer (bench/peer.py): imaplib + email + sqlite3.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailplug_host::db::Database;
use mailplug_host::ops;
use mailplug_host::store::{MemorySink, NoSyncState};
use mailplug_tests::{corpus, plugin, rig, test_box, wasm_path};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{config, db_file, median, raw_session, tls};

pub(crate) const SEED: u64 = 12;

/// Empties the mailbox and APPENDs the corpus over one pipelined connection (LITERAL+).
/// With `MAILPLUG_BENCH_REUSE=1` the mailbox is taken as filled by an earlier run with the
/// same `n` (only the size is computed).
async fn fill(user: &str, pass: &str, n: usize) -> usize {
    if std::env::var("MAILPLUG_BENCH_REUSE").as_deref() == Ok("1") {
        return (0..n).map(|i| corpus::message(SEED, i).0.len()).sum();
    }
    let r = rig();
    r.reset_mailbox(user);
    let mut s = tls("localhost", r.port("RIG_IMAPS_PORT"), r.get("RIG_CA")).await;
    let mut buf = vec![0u8; 64 * 1024];
    let _ = s.read(&mut buf).await.expect("greeting");
    s.write_all(format!("l LOGIN \"{user}\" \"{pass}\"\r\n").as_bytes()).await.expect("login");
    let mut bytes = 0;
    // Written while the responses are read, so neither side stalls.
    let mut out = Vec::new();
    for i in 0..n {
        let (m, _) = corpus::message(SEED, i);
        bytes += m.len();
        out.extend_from_slice(format!("a{i} APPEND INBOX {{{}+}}\r\n", m.len()).as_bytes());
        out.extend_from_slice(&m);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"z LOGOUT\r\n");
    let (mut rd, mut wr) = tokio::io::split(s);
    let writer = async move {
        wr.write_all(&out).await.expect("append");
        wr.flush().await.expect("flush");
        wr
    };
    let reader = async move {
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(k) => seen.extend_from_slice(&buf[..k]),
            }
        }
        seen
    };
    let (_, seen) = tokio::join!(writer, reader);
    let ok = String::from_utf8_lossy(&seen).lines().filter(|l| l.starts_with('a') && l.contains(" OK ")).count();
    assert_eq!(ok, n, "appended {ok} of {n} messages");
    bytes
}

/// The tenant file for the CLI: the mailbox, a database under `dir`, no batch limit.
fn cli_config(dir: &Path, user: &str, pass: &str, n: usize) -> PathBuf {
    let r = rig();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(dir.join("in.pw"), pass).expect("pw");
    let text = format!(
        "tenant = \"bench\"\nlicensed = true\nextra_ca_file = \"{ca}\"\ndatabase = \"{db}\"\n\n\
         [limits]\nmax_batch_messages = {batch}\nmax_batch_bytes = {bytes}\n\n\
         [[mailbox]]\nname = \"inbox\"\naddress = \"{user}\"\nprotocol = \"imap\"\nfirst_sync = \"all\"\n\
         host = \"localhost\"\nport = {port}\ntls = true\nusername = \"{user}\"\npassword_file = \"in.pw\"\n",
        ca = r.get("RIG_CA"),
        db = dir.join("mailplug.sqlite3").display(),
        batch = n + 10,
        bytes = 4u64 << 30,
        port = r.port("RIG_IMAPS_PORT"),
    );
    let path = dir.join("tenant.toml");
    std::fs::write(&path, text).expect("config");
    path
}

/// Runs `mailplug fetch` to completion: wall time and peak RSS (KiB) of that process alone.
/// GNU time reports it: a child spawned straight from this process would inherit this
/// process's own high-water mark (Linux carries it over exec), and the bench holds a whole
/// mailbox in memory.
fn cli_fetch(bin: &Path, cfg: &Path) -> (Duration, i64) {
    let start = Instant::now();
    let out = std::process::Command::new("/usr/bin/time")
        .args(["-f", "mailplug-maxrss-kib %M"])
        .arg(bin)
        .args(["fetch", "--config"])
        .arg(cfg)
        .env("MAILPLUG_WASM", wasm_path())
        .output()
        .expect("/usr/bin/time mailplug fetch (GNU time must be installed)");
    let elapsed = start.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mailplug fetch failed: {err}");
    let kib = err
        .lines()
        .filter_map(|l| l.strip_prefix("mailplug-maxrss-kib "))
        .last()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS from GNU time: {err}"));
    (elapsed, kib)
}

/// The native peer: the `imap` crate over rustls, mail-parser on every message, nothing stored.
fn native_peer(user: &str, pass: &str) -> (Duration, usize) {
    let r = rig();
    let start = Instant::now();
    let cfg: Arc<rustls::ClientConfig> =
        mailplug_host::net::tls_config(Some(Path::new(r.get("RIG_CA")))).expect("tls config");
    let tcp = std::net::TcpStream::connect(("localhost", r.port("RIG_IMAPS_PORT"))).expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let conn = rustls::ClientConnection::new(cfg, "localhost".try_into().expect("name")).expect("tls");
    let stream = rustls::StreamOwned::new(conn, tcp);
    let mut client = imap::Client::new(stream);
    client.read_greeting().expect("greeting");
    let mut session = client.login(user, pass).map_err(|e| e.0).expect("login");
    session.examine("INBOX").expect("examine");
    let fetches = session.uid_fetch("1:*", "BODY.PEEK[]").expect("fetch");
    let mut parsed = 0;
    for f in fetches.iter() {
        if let Some(m) = f.body().and_then(|b| mail_parser::MessageParser::default().parse(b)) {
            parsed += 1;
            std::hint::black_box((m.body_text(0), m.attachments().map(|a| a.len()).sum::<usize>()));
        }
    }
    let _ = session.logout();
    (start.elapsed(), parsed)
}

/// CPU time (user + system) of this process and of the calling thread, in ms, from /proc
/// (clock ticks of 10 ms): where an ingest's time goes besides the fetching thread.
fn cpu_ms() -> (u64, u64) {
    let read = |path: &str| {
        let stat = std::fs::read_to_string(path).unwrap_or_default();
        // After the command name in parentheses, fields 14 and 15 (utime, stime) are at 11 and 12.
        let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, r)| r).split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        (ticks(11) + ticks(12)) * 10
    };
    (read("/proc/self/stat"), read("/proc/thread-self/stat"))
}

/// Removes a database and its WAL files (the corpus databases are hundreds of MB each).
fn remove_db(path: &Path) {
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
    }
    let _ = std::fs::remove_dir_all(mailplug_host::db::raw_folder(path));
}

/// `store_only`: only the raw transfer and mailplug in-process with and without the store
/// (`mailplug-bench corpus-store N RUNS`: the quick loop for work on the store).
pub async fn run(args: &[usize], store_only: bool) {
    let (n, runs) = (*args.first().unwrap_or(&5000), *args.get(1).unwrap_or(&3));
    let r = rig();
    let (user, pass) = test_box(35);
    let (empty_user, empty_pass) = test_box(36);
    let port = r.port("RIG_IMAPS_PORT");
    let ca = r.get("RIG_CA").to_string();
    eprintln!("filling {user} with {n} corpus messages ...");
    let bytes = fill(&user, &pass, n).await;
    r.reset_mailbox(&empty_user);
    let bin = std::env::var("MAILPLUG_BIN").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "/var/tmp/mailplug-target".into()))
            .join("bench-fast/mailplug")
    });
    let peer = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench").join("peer.py");
    let _ = plugin();
    let cfg = config("imap", port, &user, &pass, n);
    let commands = format!("a LOGIN \"{user}\" \"{pass}\"\r\nb SELECT INBOX\r\nc UID FETCH 1:* (BODY.PEEK[])\r\nd LOGOUT\r\n");
    let tmp = std::env::temp_dir().join("mailplug-bench-cli");

    let load_start = super::runtime::load();
    let mut t: [Vec<Duration>; 6] = Default::default();
    let (mut rss, mut rss_empty) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let (d, got) = raw_session("localhost", port, &ca, commands.clone()).await;
        assert!(got >= bytes, "raw session read {got} bytes, mailbox holds {bytes}");
        t[0].push(d);

        let path = db_file(&format!("corpus-{run}"));
        let db = Database::open(&path).expect("db");
        let (cpu0, thread0) = cpu_ms();
        let start = Instant::now();
        let mut sink = db.sink(&cfg.tenant, "inbox");
        let s = ops::fetch(plugin(), &cfg, "inbox", &mut sink, &db).await.expect("mailplug fetch");
        let stats = sink.stats;
        drop(sink);
        t[1].push(start.elapsed());
        let (cpu1, thread1) = cpu_ms();
        eprintln!(
            "run {run}: with the store {} ms, of which {} commits waited for {} ms and the writer's backlog for {} ms; CPU {} ms in the fetching thread, {} ms in others",
            t[1][run].as_millis(),
            stats.commits,
            stats.commit_wait.as_millis(),
            stats.backlog_wait.as_millis(),
            thread1 - thread0,
            (cpu1 - cpu0).saturating_sub(thread1 - thread0)
        );
        assert_eq!(s.delivered as usize, n);
        drop(db);
        remove_db(&path);

        let (cpu0, thread0) = cpu_ms();
        let start = Instant::now();
        let mut sink = MemorySink::default();
        ops::fetch(plugin(), &cfg, "inbox", &mut sink, &NoSyncState).await.expect("mailplug fetch");
        t[2].push(start.elapsed());
        let (cpu1, thread1) = cpu_ms();
        eprintln!(
            "run {run}: without the store {} ms; CPU {} ms in the fetching thread, {} ms in others",
            t[2][run].as_millis(),
            thread1 - thread0,
            (cpu1 - cpu0).saturating_sub(thread1 - thread0)
        );
        drop(sink);
        if store_only {
            continue;
        }

        let (d, kib) = cli_fetch(&bin, &cli_config(&tmp.join(format!("full-{run}")), &user, &pass, n));
        t[3].push(d);
        rss.push(kib);
        let (_, kib) = cli_fetch(&bin, &cli_config(&tmp.join(format!("empty-{run}")), &empty_user, &empty_pass, n));
        rss_empty.push(kib);

        let (d, parsed) = native_peer(&user, &pass);
        assert_eq!(parsed, n, "native peer parsed {parsed} of {n}");
        t[4].push(d);

        let py_db = db_file(&format!("py-corpus-{run}"));
        let out = std::process::Command::new("python3")
            .arg(&peer)
            .args(["imap", "localhost", &port.to_string(), &user, &pass, &ca])
            .arg(&py_db)
            .output()
            .expect("python3");
        remove_db(&py_db);
        assert!(out.status.success(), "peer failed: {}", String::from_utf8_lossy(&out.stderr));
        let secs: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("peer time");
        t[5].push(Duration::from_secs_f64(secs));
    }
    let _ = std::fs::remove_dir_all(&tmp);

    let names = [
        "raw transfer (pipelined commands, read to end)",
        "mailplug in-process: fetch + parse + SQLite store",
        "mailplug in-process: fetch + parse, no store",
        "`mailplug fetch` CLI (compile cache warm): fetch + parse + SQLite store",
        "native Rust peer: imap crate + mail-parser, no store",
        "Python peer: imaplib + email + sqlite3",
    ];
    println!(
        "IMAP, generated corpus: {n} messages = {:.1} MB over TLS on loopback; median of {runs} runs; load average {load_start} at the start, {} at the end\n",
        bytes as f64 / 1e6,
        super::runtime::load()
    );
    println!("| what | time (ms) | MB/s | ratio to raw |");
    println!("|---|---:|---:|---:|");
    let rows = if store_only { 3 } else { t.len() };
    let medians: Vec<Duration> = t[..rows].iter().map(|v| median(v.clone())).collect();
    let raw = medians[0].as_secs_f64();
    for (name, d) in names.iter().zip(&medians) {
        let s = d.as_secs_f64();
        println!("| {name} | {:.0} | {:.1} | {:.2} |", s * 1e3, bytes as f64 / 1e6 / s, s / raw);
    }
    if store_only {
        return;
    }
    rss.sort();
    rss_empty.sort();
    println!(
        "\n`mailplug fetch` peak RSS: {:.1} MB for the {n} messages, {:.1} MB for an empty mailbox (max of {runs} runs)",
        *rss.last().unwrap_or(&0) as f64 / 1024.0,
        *rss_empty.last().unwrap_or(&0) as f64 / 1024.0
    );
}
