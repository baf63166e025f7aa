//! The fault proxy: forwards a TCP connection and cuts or stalls it at a byte offset, naming
//! the protocol phase (the client command in progress) where the fault fired.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does once `limit` bytes (both directions together) have passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward exactly `limit` bytes, then close both connections.
    Cut,
    /// Forward exactly `limit` bytes, then forward nothing more either way while keeping both
    /// connections open, until the proxy is reset or dropped.
    Stall,
}

/// Where a fault fired.
#[derive(Clone, Debug, Default)]
pub struct FaultPoint {
    pub offset: usize,
    /// The client command in progress ("UID FETCH 1:6", "RETR 3", "LOGIN", ...) and how many
    /// bytes of the session have passed since it started.
    pub phase: String,
}

/// The outline of one connection: (offset at which a client command started, its label).
pub type Outline = Vec<(usize, String)>;

/// A proxy on 127.0.0.1 that forwards to an upstream server and, with a plan, cuts or stalls
/// each new connection at a byte offset. The plan can change between runs (same port, so the
/// same configuration and sync state serve the faulted run and the clean run).
pub struct FaultProxy {
    pub port: u16,
    plan: Arc<Mutex<Option<(usize, Fault)>>>,
    /// Bytes (both directions) of the most recent connection so far.
    pub last_total: Arc<AtomicUsize>,
    /// Client commands of the most recent connection.
    pub last_outline: Arc<Mutex<Outline>>,
    fired: Arc<Mutex<Option<FaultPoint>>>,
    /// Bumped to close every open connection.
    generation: watch::Sender<u64>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.generation.send_modify(|g| *g += 1);
        self.accept.abort();
    }
}

impl FaultProxy {
    /// The fault for the next connections (None: forward everything); closes the open ones.
    pub fn set_plan(&self, plan: Option<(usize, Fault)>) {
        self.generation.send_modify(|g| *g += 1);
        *self.plan.lock().expect("plan") = plan;
        *self.fired.lock().expect("fired") = None;
        self.last_total.store(0, Ordering::SeqCst);
        self.last_outline.lock().expect("outline").clear();
    }
    /// Where the fault fired, once it has.
    pub fn fired(&self) -> Option<FaultPoint> {
        self.fired.lock().expect("fired").clone()
    }
    /// The same, readable from another thread.
    pub fn fired_handle(&self) -> Arc<Mutex<Option<FaultPoint>>> {
        self.fired.clone()
    }
    /// The phase the most recent connection is in now.
    pub fn current_phase(&self) -> (usize, String) {
        let total = self.last_total.load(Ordering::SeqCst);
        (total, phase_at(&self.last_outline.lock().expect("outline"), total))
    }
}

/// Starts a fault proxy in front of `upstream`.
pub async fn fault_proxy(upstream: (String, u16), plan: Option<(usize, Fault)>) -> FaultProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let port = listener.local_addr().expect("addr").port();
    let plan = Arc::new(Mutex::new(plan));
    let last_total = Arc::new(AtomicUsize::new(0));
    let last_outline = Arc::new(Mutex::new(Outline::new()));
    let fired = Arc::new(Mutex::new(None));
    let (generation, gen_rx) = watch::channel(0u64);
    let (p, t, o, f) = (plan.clone(), last_total.clone(), last_outline.clone(), fired.clone());
    let accept = tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect((upstream.0.as_str(), upstream.1)).await else { continue };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let conn = Conn {
                plan: *p.lock().expect("plan"),
                counter: Arc::new(AtomicUsize::new(0)),
                total: t.clone(),
                outline: o.clone(),
                fired: f.clone(),
                done: Arc::new(tokio::sync::Notify::new()),
            };
            t.store(0, Ordering::SeqCst);
            o.lock().expect("outline").clear();
            let mut gen = gen_rx.clone();
            gen.mark_unchanged();
            tokio::spawn(async move {
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let both = async { tokio::join!(conn.pump(cr, sw, true), conn.pump(sr, cw, false)) };
                tokio::select! {
                    _ = both => {}
                    _ = gen.changed() => {}
                }
            });
        }
    });
    FaultProxy { port, plan, last_total, last_outline, fired, generation, accept }
}

/// One proxied connection.
struct Conn {
    plan: Option<(usize, Fault)>,
    counter: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
    outline: Arc<Mutex<Outline>>,
    fired: Arc<Mutex<Option<FaultPoint>>>,
    /// Notified when the connection is cut, to end the other direction.
    done: Arc<tokio::sync::Notify>,
}

impl Conn {
    async fn pump(&self, mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, from_client: bool) {
        let mut buf = [0u8; 16 * 1024];
        // The client line being read: where it started and its first bytes.
        let mut line: Option<(usize, Vec<u8>)> = None;
        loop {
            let n = tokio::select! {
                r = from.read(&mut buf) => match r { Ok(0) | Err(_) => break, Ok(n) => n },
                _ = self.done.notified() => break,
            };
            let before = self.counter.fetch_add(n, Ordering::SeqCst);
            self.total.fetch_max(before + n, Ordering::SeqCst);
            let allowed = match self.plan {
                Some((limit, _)) if before + n >= limit => limit.saturating_sub(before),
                _ => n,
            };
            if from_client {
                self.note_client_bytes(&buf[..allowed], before, &mut line);
            }
            if allowed > 0 && to.write_all(&buf[..allowed]).await.is_err() {
                break;
            }
            if let Some((limit, fault)) = self.plan {
                if before + n >= limit {
                    self.fire(limit);
                    match fault {
                        Fault::Cut => {
                            self.done.notify_waiters();
                            self.done.notify_one();
                            break;
                        }
                        // Hold both connections open; the proxy's reset or drop ends this task.
                        Fault::Stall => std::future::pending::<()>().await,
                    }
                }
            }
        }
        let _ = to.shutdown().await;
    }

    /// Records where client commands start, with a label (credentials never recorded).
    fn note_client_bytes(&self, bytes: &[u8], offset: usize, line: &mut Option<(usize, Vec<u8>)>) {
        for (i, &b) in bytes.iter().enumerate() {
            let cur = line.get_or_insert_with(|| (offset + i, Vec::new()));
            if b == b'\n' {
                let (start, text) = line.take().expect("line");
                let label = command_label(&text);
                let mut o = self.outline.lock().expect("outline");
                match o.last_mut() {
                    Some(last) if last.0 == start => last.1 = label,
                    _ => o.push((start, label)),
                }
            } else {
                if cur.1.is_empty() {
                    // A command has started: record it now, labelled once its line is complete.
                    self.outline.lock().expect("outline").push((cur.0, "(partial command)".into()));
                }
                if cur.1.len() < 120 {
                    cur.1.push(b);
                }
            }
        }
        // A command cut short is labelled by what was sent of it.
        if let Some((start, text)) = line {
            if let Some(last) = self.outline.lock().expect("outline").last_mut().filter(|l| l.0 == *start) {
                last.1 = match command_label(text).as_str() {
                    "(continuation)" => "(a command, partly sent)".to_string(),
                    label => format!("{label} (partly sent)"),
                };
            }
        }
    }

    fn fire(&self, limit: usize) {
        let mut f = self.fired.lock().expect("fired");
        if f.is_none() {
            *f = Some(FaultPoint { offset: limit, phase: phase_at(&self.outline.lock().expect("outline"), limit) });
        }
    }
}

/// The phase a byte offset falls in: the last client command started before it.
pub fn phase_at(outline: &Outline, offset: usize) -> String {
    match outline.iter().rev().find(|(start, _)| *start < offset) {
        Some((start, label)) => format!("{label} +{}", offset - start),
        None => format!("greeting +{offset}"),
    }
}

const POP3_VERBS: &[&str] =
    &["USER", "PASS", "AUTH", "APOP", "CAPA", "STLS", "STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "NOOP", "RSET", "QUIT"];

/// A client command line as a phase label: the verb (after the IMAP tag) and, for message
/// commands, their argument. Login commands and SASL continuations show no argument.
pub fn command_label(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let words: Vec<&str> = text.split_whitespace().collect();
    let Some(first) = words.first() else { return "(empty line)".into() };
    let up = |s: &str| s.to_ascii_uppercase();
    if POP3_VERBS.contains(&up(first).as_str()) {
        let verb = up(first);
        return match (verb.as_str(), words.get(1)) {
            ("RETR" | "DELE" | "LIST" | "UIDL" | "TOP", Some(arg)) => format!("{verb} {arg}"),
            _ => verb,
        };
    }
    let Some(verb) = words.get(1).map(|w| up(w)) else { return "(continuation)".into() };
    match verb.as_str() {
        "UID" => {
            let sub = words.get(2).map(|w| up(w)).unwrap_or_default();
            let set = words.get(3).map(|w| w.to_string()).unwrap_or_default();
            // The first data item tells a size listing from a download.
            let item: String = words.get(4..).map(|w| w.join(" ").chars().take(32).collect()).unwrap_or_default();
            format!("UID {sub} {set} {item}").trim_end().to_string()
        }
        "SELECT" | "EXAMINE" | "CREATE" => format!("{verb} {}", words.get(2).unwrap_or(&"")),
        _ => verb,
    }
}
