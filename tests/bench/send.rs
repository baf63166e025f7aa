//! `mailplug-bench send [MESSAGES] [KB] [RUNS]` (defaults 1000 10 5): a batch of messages over
//! one SMTP connection, side by side in one run against the same sink (Postfix's `smtp-sink`
//! on a free loopback port, plain TCP):
//!
//! - raw pipelined client: the floor. Greeting, EHLO, AUTH PLAIN, then per message MAIL, RCPT
//!   and DATA in one write, the data after the 354 with the next message's MAIL/RCPT/DATA in
//!   the same write (RFC 2920), QUIT. Builds nothing, checks only the reply codes.
//! - mailplug batch send, messages composed beforehand (`open-batch` driven by the host's
//!   driver): what the component and the host add to the raw client.
//! - the same with the armed writes ignored (`MessageSink::armed_writes` false): every reply
//!   goes through the component before the write it calls for, as before session 11.
//! - mailplug batch send (`ops::send_batch`): composing every message in the component, then
//!   the same session.
//! - Python's smtplib: `login`, then `sendmail` per message (no pipelining).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use mailplug_host::driver::{drive, now_ms, MessageSink};
use mailplug_host::engine::{
    BasicCredentials, BatchEnvelope, ComposedMessage, Credentials, Delivery, FetchedMessage, GuestLimits, GuestSecurity, GuestServer,
    MessageResult, Outcome, SubmissionServer,
};
use mailplug_host::ops::{self, NoJournal, Outgoing};
use mailplug_host::store::NoSyncState;
use mailplug_host::HostError;
use mailplug_tests::{plugin, rig, tenant, ServerSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FROM: &str = "bench@example.test";
const TO: &str = "sink@example.test";
const PASSWORD: &str = "Sink-Pw-1!";

/// A composed 10 KB-ish message (CRLF, no line starting with a dot).
fn raw_message(i: usize, kb: usize) -> Vec<u8> {
    let mut m = format!(
        "From: <{FROM}>\r\nTo: <{TO}>\r\nSubject: bench {i}\r\nDate: Sun, 6 Dec 2026 23:00:00 +0000\r\n\
         Message-ID: <send-bench-{i}@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    .into_bytes();
    while m.len() < kb * 1024 {
        m.extend_from_slice(b"The quick brown fox jumps over the lazy dog, again and again, line after line.\r\n");
    }
    m
}

fn body_text(kb: usize) -> String {
    "The quick brown fox jumps over the lazy dog, again and again, line after line.\n".repeat(kb * 1024 / 80)
}

/// Reads replies until `want` final replies (lines with a space after the code) arrived;
/// panics on anything but 2xx/3xx.
async fn replies(s: &mut TcpStream, buf: &mut Vec<u8>, pending: &mut Vec<u8>, want: usize) {
    let mut got = 0;
    while got < want {
        while let Some(i) = pending.windows(2).position(|w| w == b"\r\n") {
            let line: Vec<u8> = pending.drain(..i + 2).collect();
            if line.len() >= 4 && line[3] != b'-' {
                assert!(matches!(line[0], b'2' | b'3'), "raw client: {}", String::from_utf8_lossy(&line));
                got += 1;
                if got == want {
                    break;
                }
            }
        }
        if got == want {
            break;
        }
        let n = s.read(buf).await.expect("read");
        assert!(n > 0, "sink closed");
        pending.extend_from_slice(&buf[..n]);
    }
}

/// Standard base64 with padding (the AUTH PLAIN initial response).
fn base64(input: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let v = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ABC[(v >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn raw_client(port: u16, data: &[Vec<u8>]) -> Duration {
    let start = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let (mut buf, mut pending) = (vec![0u8; 64 * 1024], Vec::new());
    replies(&mut s, &mut buf, &mut pending, 1).await;
    s.write_all(b"EHLO bench\r\n").await.expect("write");
    replies(&mut s, &mut buf, &mut pending, 1).await;
    let ir = base64(format!("\0{FROM}\0{PASSWORD}").as_bytes());
    s.write_all(format!("AUTH PLAIN {ir}\r\n").as_bytes()).await.expect("write");
    replies(&mut s, &mut buf, &mut pending, 1).await;
    let envelope = format!("MAIL FROM:<{FROM}>\r\nRCPT TO:<{TO}>\r\nDATA\r\n");
    s.write_all(envelope.as_bytes()).await.expect("write");
    for (i, d) in data.iter().enumerate() {
        // MAIL, RCPT, DATA of this message (and the previous one's final reply).
        replies(&mut s, &mut buf, &mut pending, if i == 0 { 3 } else { 4 }).await;
        let mut out = Vec::with_capacity(d.len() + envelope.len());
        out.extend_from_slice(d);
        if i + 1 < data.len() {
            out.extend_from_slice(envelope.as_bytes());
        }
        s.write_all(&out).await.expect("write");
    }
    replies(&mut s, &mut buf, &mut pending, 1).await;
    s.write_all(b"QUIT\r\n").await.expect("write");
    replies(&mut s, &mut buf, &mut pending, 1).await;
    start.elapsed()
}

/// Hands over the messages' bytes and counts the outcomes of a driven batch.
struct Count<'a> {
    composed: &'a [ComposedMessage],
    delivered: usize,
    commits: usize,
    arms: bool,
}

impl MessageSink for Count<'_> {
    fn armed_writes(&self) -> bool {
        self.arms
    }
    fn batch_message(&mut self, index: u32, slack: usize) -> Result<Vec<u8>, HostError> {
        // One copy (the raw client copies each message into its write buffer once too).
        let raw = &self.composed[index as usize].raw;
        let mut out = Vec::with_capacity(raw.len() + slack);
        out.extend_from_slice(raw);
        Ok(out)
    }
    fn deliver(&mut self, _: FetchedMessage) -> Result<(), HostError> {
        Err(HostError::Plugin("no deliveries in a send".into()))
    }
    fn commit(&mut self) -> Result<(), HostError> {
        Ok(())
    }
    fn commit_point(&mut self, _index: u32) -> Result<(), HostError> {
        self.commits += 1;
        Ok(())
    }
    fn message_done(&mut self, r: MessageResult) -> Result<(), HostError> {
        assert!(matches!(r.delivery, Delivery::Delivered), "{:?}", r.error);
        self.delivered += 1;
        Ok(())
    }
}

/// The guest memory cap of both mailplug rows: the configuration's floor, below the batch's size.
const GUEST_MEMORY_MB: u32 = 16;

/// The whole batch send, the part of it before connecting (instantiate, open-batch), and the
/// guest's peak memory. `tls` is built once per process, as `ops` shares it (`idle::shared_tls`):
/// loading the system's root certificates again in every run cost about 16M instructions (4 to
/// 5 ms) that no real batch pays.
async fn mailplug_precomposed(
    port: u16,
    composed: &[ComposedMessage],
    tls: &std::sync::Arc<rustls::ClientConfig>,
    arms: bool,
) -> (Duration, Duration, usize) {
    let start = Instant::now();
    let mut instance = plugin().instantiate((GUEST_MEMORY_MB as usize) << 20, 10_000).await.expect("instance");
    let sub = SubmissionServer {
        server: GuestServer { host: "127.0.0.1".into(), port, security: GuestSecurity::InsecurePlaintext },
        credentials: Credentials::Basic(BasicCredentials { username: FROM.into(), password: PASSWORD.into() }),
        helo_name: "bench".into(),
        limits: GuestLimits {
            max_line_bytes: 8192,
            max_message_bytes: 1 << 20,
            max_batch_messages: 1,
            max_batch_bytes: 1 << 20,
            reply_timeout_ms: 30_000,
        },
    };
    let envelopes: Vec<BatchEnvelope> = composed
        .iter()
        .map(|c| BatchEnvelope {
            message_id: c.message_id.clone(),
            envelope_from: c.envelope_from.clone(),
            envelope_to: c.envelope_to.clone(),
            size: c.raw.len() as u64,
        })
        .collect();
    let session = instance.open_batch(&sub, &envelopes, now_ms()).await.expect("open batch");
    let setup = start.elapsed();
    let allowed = vec![("127.0.0.1".to_string(), port, GuestSecurity::InsecurePlaintext)];
    let opts = mailplug_host::driver::DriveOptions {
        allowed: &allowed,
        tls: tls.clone(),
        connect_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(30),
        reply_timeout: Duration::from_secs(30),
        greeting_timeout: Duration::from_secs(10),
        max_session: Duration::from_secs(600),
    };
    let mut count = Count { composed, delivered: 0, commits: 0, arms };
    let outcome = drive(&mut instance, session, &opts, &mut count).await.expect("batch");
    let elapsed = start.elapsed();
    assert!(matches!(outcome, Outcome::SentBatch(ref r) if r.delivered as usize == composed.len()), "{outcome:?}");
    assert_eq!((count.delivered, count.commits), (composed.len(), composed.len()));
    (elapsed, setup, instance.memory_peak_bytes())
}

async fn mailplug_send_batch(port: u16, n: usize, kb: usize) -> Duration {
    let r = rig();
    let inb = ServerSpec::new("localhost", r.port("RIG_IMAPS_PORT"), true, r.user("SUPPORT"), r.pass("SUPPORT"));
    let mut smtp = ServerSpec::new("127.0.0.1", port, false, FROM, PASSWORD);
    smtp.insecure_plaintext = true;
    let mut cfg = tenant("imap", &inb, &smtp, true);
    cfg.limits.guest_memory_mb = GUEST_MEMORY_MB;
    let text = body_text(kb);
    let messages: Vec<Outgoing> =
        (0..n).map(|i| Outgoing { to: vec![TO.into()], subject: format!("bench {i}"), text_body: text.clone() }).collect();
    let start = Instant::now();
    let outcomes = ops::send_batch(plugin(), &cfg, "q", &messages, &NoSyncState, &mut NoJournal).await.expect("send_batch");
    let elapsed = start.elapsed();
    assert!(outcomes.iter().all(|o| o.delivered()), "{:?}", outcomes.iter().find(|o| !o.delivered()));
    elapsed
}

fn python_smtplib(port: u16, dir: &std::path::Path) -> Duration {
    let peer = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench").join("send_peer.py");
    let out =
        Command::new("python3").arg(&peer).args(["127.0.0.1", &port.to_string(), FROM, PASSWORD, TO]).arg(dir).output().expect("python3");
    assert!(out.status.success(), "peer failed: {}", String::from_utf8_lossy(&out.stderr));
    let secs: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("peer time");
    Duration::from_secs_f64(secs)
}

/// CPU time this thread has run so far (user and kernel, nanoseconds; the runtime is
/// single-threaded, so a row's client work is all on it), from /proc/thread-self/schedstat.
fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    Duration::from_nanos(text.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0))
}

/// The median, zero for a row that did not run.
fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

pub async fn run(args: &[usize]) {
    let (n, kb, runs) = (*args.first().unwrap_or(&1000), *args.get(1).unwrap_or(&10), *args.get(2).unwrap_or(&5));
    let data: Vec<Vec<u8>> = (0..n).map(|i| [raw_message(i, kb), b".\r\n".to_vec()].concat()).collect();
    let composed: Vec<ComposedMessage> = (0..n)
        .map(|i| ComposedMessage {
            message_id: format!("send-bench-{i}@example.test"),
            envelope_from: FROM.into(),
            envelope_to: vec![TO.into()],
            raw: raw_message(i, kb),
        })
        .collect();
    // The same bytes for the Python peer, one file per message.
    let dir = std::env::temp_dir().join(format!("mailplug-send-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    for (i, m) in composed.iter().enumerate() {
        std::fs::write(dir.join(format!("{i:06}.eml")), &m.raw).expect("eml");
    }
    let bytes: usize = composed.iter().map(|m| m.raw.len()).sum();
    let _ = plugin(); // compile the component before timing
    let sink = mailplug_tests::SmtpSink::start(256);
    let tls = mailplug_host::net::tls_config(None).expect("tls");
    let (mut raw, mut pre, mut full, mut py, mut setup) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut unarmed = Vec::new();
    let (mut raw_cpu, mut pre_cpu) = (Vec::new(), Vec::new());
    let mut peak = 0;
    // `MAILPLUG_SEND_ONLY=raw,pre,unarmed,full,py` runs only those rows (for profiling one of
    // them under callgrind or strace); all five by default.
    let only = std::env::var("MAILPLUG_SEND_ONLY").unwrap_or_else(|_| "raw,pre,unarmed,full,py".into());
    let on = |row: &str| only.split(',').any(|x| x.trim() == row);
    for _ in 0..runs {
        if on("raw") {
            let cpu = thread_cpu();
            raw.push(raw_client(sink.port, &data).await);
            raw_cpu.push(thread_cpu() - cpu);
        }
        if on("pre") {
            let cpu = thread_cpu();
            let (t, s, p) = mailplug_precomposed(sink.port, &composed, &tls, true).await;
            pre_cpu.push(thread_cpu() - cpu);
            pre.push(t);
            setup.push(s);
            peak = peak.max(p);
        }
        if on("unarmed") {
            unarmed.push(mailplug_precomposed(sink.port, &composed, &tls, false).await.0);
        }
        if on("full") {
            full.push(mailplug_send_batch(sink.port, n, kb).await);
        }
        if on("py") {
            py.push(python_smtplib(sink.port, &dir));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (raw_runs, pre_runs, unarmed_runs) = (raw.clone(), pre.clone(), unarmed.clone());
    let rows = [
        ("raw pipelined client (RFC 2920: waits for each 354, next envelope with the data)", median(raw)),
        ("mailplug batch send, composed beforehand (open-batch + driver)", median(pre)),
        ("the same, armed writes ignored (each reply through the component first)", median(unarmed)),
        ("mailplug batch send with composing (ops::send_batch)", median(full)),
        ("Python smtplib (login, sendmail per message)", median(py)),
    ];
    println!(
        "{n} messages x {kb} KB = {:.1} MB over one plain TCP connection to smtp-sink on loopback; median of {runs} runs\n",
        bytes as f64 / 1e6
    );
    println!("| what | time (ms) | messages/s | ratio to raw |");
    println!("|---|---:|---:|---:|");
    let floor = rows[0].1.as_secs_f64();
    let setup = median(setup);
    for (name, t) in rows {
        let t = t.as_secs_f64();
        if t == 0.0 {
            continue;
        }
        println!("| {name} | {:.0} | {:.0} | {:.2} |", t * 1e3, n as f64 / t, t / floor);
    }
    println!(
        "\nof which mailplug (composed beforehand) spent {:.1} ms before connecting (instantiate, open-batch with the envelopes)",
        setup.as_secs_f64() * 1e3
    );
    println!("guest memory cap {GUEST_MEMORY_MB} MB; peak guest memory (composed beforehand) {:.2} MB", peak as f64 / (1 << 20) as f64);
    // Per run, in the order run, to judge the spread on a loaded machine.
    println!("raw per run (ms): {:?}", raw_runs.iter().map(|d| d.as_millis()).collect::<Vec<_>>());
    println!("mailplug composed beforehand per run (ms): {:?}", pre_runs.iter().map(|d| d.as_millis()).collect::<Vec<_>>());
    // The median of each run's own ratio to the raw client's run just before it: less spread
    // than the ratio of the medians on a noisy machine.
    for (name, runs) in [("composed beforehand", &pre_runs), ("armed writes ignored", &unarmed_runs)] {
        let mut ratios: Vec<f64> = raw_runs.iter().zip(runs.iter()).map(|(r, m)| m.as_secs_f64() / r.as_secs_f64()).collect();
        ratios.sort_by(f64::total_cmp);
        if let Some(mid) = ratios.get(ratios.len() / 2) {
            println!("{name}: median of the per-run ratios to raw {mid:.3} (lowest {:.3}, highest {:.3})", ratios[0], ratios[ratios.len() - 1]);
        }
    }
    // The client's own CPU time (the sink's is not counted); compare the two of one run only.
    let (rc, pc) = (median(raw_cpu).as_secs_f64() * 1e3, median(pre_cpu).as_secs_f64() * 1e3);
    if rc > 0.0 && pc > 0.0 {
        println!("client CPU per run, median (ms): raw {rc:.1}, mailplug composed beforehand {pc:.1} ({:.2}x)", pc / rc);
    }
}
