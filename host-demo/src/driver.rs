//! Runs one guest session over a real connection: the host half of the sans-IO contract.
//! It performs the guest's actions in order and feeds back events; it knows no protocol.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::ClientConfig;

use crate::engine::{
    Action, Event, FetchedMessage, GuestSecurity, Instance, Outcome, SessionHandle, SkippedMessage, StepReport,
};
use crate::error::HostError;
use crate::net::Conn;

/// Bytes read per `read` call and handed to the guest at once (one copy across the boundary).
const READ_CHUNK: usize = 256 * 1024;

/// The host's clock, in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Where delivered messages go. `commit` must make everything stored so far durable; only
/// then does the guest hear `stored` and change anything on the server.
pub trait MessageSink {
    fn deliver(&mut self, message: FetchedMessage) -> Result<(), HostError>;
    /// A message the guest will not deliver (over a limit); reported once.
    fn skipped(&mut self, _notice: SkippedMessage) -> Result<(), HostError> {
        Ok(())
    }
    fn commit(&mut self) -> Result<(), HostError>;
    /// A step of a check session completed (see `check`); nothing to store.
    fn progress(&mut self, _report: StepReport) {}
    /// The server the deliveries of this session come from (`store::binding`), told before
    /// the session starts: server ids are only unique per server.
    fn source(&mut self, _server: &str) {}
    /// Something the admin should know about the run (English, German); nothing failed.
    fn warning(&mut self, _en: &str, _de: &str) {}
    /// Whether `stored_state` wants the guest's sync state after each `stored`.
    fn wants_stored_state(&self) -> bool {
        false
    }
    /// The guest's committed sync state right after it handled `stored`: it covers everything
    /// committed so far, so a run cut or trapped later resumes from here.
    fn stored_state(&mut self, _state: Option<Vec<u8>>) -> Result<(), HostError> {
        Ok(())
    }
}

/// What the driver needs besides the session.
pub struct DriveOptions<'a> {
    /// host:port pairs the tenant configured; nothing else is ever connected to.
    pub allowed: &'a [(String, u16)],
    pub tls: Arc<ClientConfig>,
    pub connect_timeout: Duration,
    /// Backstop when the guest sets no deadline of its own.
    pub idle_timeout: Duration,
}

/// Drives `session` to completion. The session is dropped at the end either way.
pub async fn drive(
    instance: &mut Instance,
    session: SessionHandle,
    opts: &DriveOptions<'_>,
    sink: &mut dyn MessageSink,
) -> Result<Outcome, HostError> {
    let result = drive_keep(instance, session, opts, sink).await;
    instance.drop_session(session).await;
    result
}

/// Drives `session` to completion and leaves it alive, so the caller can still read its
/// sync state; the caller drops it.
pub async fn drive_keep(
    instance: &mut Instance,
    session: SessionHandle,
    opts: &DriveOptions<'_>,
    sink: &mut dyn MessageSink,
) -> Result<Outcome, HostError> {
    let server = allowed_server(instance, session, opts).await?;
    let implicit = matches!(server.security, GuestSecurity::ImplicitTls);
    let mut conn = Conn::connect(&server.host, server.port, implicit, opts.tls.clone(), opts.connect_timeout).await?;
    run_and_close(instance, session, &mut conn, opts, sink).await
}

/// Drives `session` over a connection the caller opened itself (the connection check times
/// resolving, connecting and TLS as steps of their own), then closes it.
pub async fn drive_on(
    instance: &mut Instance,
    session: SessionHandle,
    conn: &mut Conn,
    opts: &DriveOptions<'_>,
    sink: &mut dyn MessageSink,
) -> Result<Outcome, HostError> {
    if let Err(e) = allowed_server(instance, session, opts).await {
        conn.close().await;
        return Err(e);
    }
    run_and_close(instance, session, conn, opts, sink).await
}

async fn run_and_close(
    instance: &mut Instance,
    session: SessionHandle,
    conn: &mut Conn,
    opts: &DriveOptions<'_>,
    sink: &mut dyn MessageSink,
) -> Result<Outcome, HostError> {
    let result = run_loop(instance, session, conn, opts, sink).await;
    conn.close().await;
    result
}

/// The session's server, when it is one the tenant configured; nothing else is connected to.
async fn allowed_server(
    instance: &mut Instance,
    session: SessionHandle,
    opts: &DriveOptions<'_>,
) -> Result<crate::engine::GuestServer, HostError> {
    let server = instance.server(session).await?;
    if !opts.allowed.iter().any(|(h, p)| h.eq_ignore_ascii_case(&server.host) && *p == server.port) {
        return Err(HostError::NotAllowed(format!("{}:{}", server.host, server.port)));
    }
    Ok(server)
}

async fn run_loop(
    instance: &mut Instance,
    session: SessionHandle,
    conn: &mut Conn,
    opts: &DriveOptions<'_>,
    sink: &mut dyn MessageSink,
) -> Result<Outcome, HostError> {
    let mut events: VecDeque<Event> = VecDeque::from([Event::Connected]);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut out: Vec<u8> = Vec::new();
    // Deliveries stored but not yet committed. Commits (each an fsync) are batched: while the
    // server keeps streaming we keep reading, and commit + send `stored` once a read would wait.
    let mut uncommitted = false;
    loop {
        if events.is_empty() && uncommitted {
            match tokio::time::timeout(Duration::ZERO, conn.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => events.push_back(Event::Received(buf[..n].to_vec())),
                ready => {
                    sink.commit()?;
                    uncommitted = false;
                    events.push_back(Event::Stored);
                    match ready {
                        Ok(Ok(_)) => events.push_back(Event::Closed),
                        Ok(Err(e)) => {
                            // The guest still hears `stored`, so its state covers what was kept.
                            let _ = instance.handle(session, &Event::Stored, now_ms()).await;
                            save_stored_state(instance, session, sink).await?;
                            return Err(HostError::Network { server: conn.label().to_string(), message: read_failed(&e) });
                        }
                        Err(_) => {}
                    }
                }
            }
        }
        let event = match events.pop_front() {
            Some(e) => e,
            None => next_event(instance, session, conn, opts, &mut buf).await?,
        };
        let actions = instance.handle(session, &event, now_ms()).await?;
        if matches!(event, Event::Stored) {
            save_stored_state(instance, session, sink).await?;
        }
        for action in actions {
            match action {
                // Consecutive writes are coalesced into one socket write.
                Action::Write(bytes) => {
                    if out.is_empty() {
                        out = bytes;
                    } else {
                        out.extend_from_slice(&bytes);
                    }
                }
                Action::StartTls => {
                    flush(conn, &mut out).await?;
                    match conn.start_tls().await {
                        Ok(()) => events.push_back(Event::TlsEstablished),
                        Err(e) => events.push_back(Event::TlsFailed(e.to_string())),
                    }
                }
                Action::Deliver(message) => {
                    sink.deliver(message)?;
                    uncommitted = true;
                }
                Action::Skipped(notice) => sink.skipped(notice)?,
                Action::Progress(report) => sink.progress(report),
                Action::Close => {
                    flush(conn, &mut out).await?;
                    conn.close().await;
                }
                Action::Finished(outcome) => {
                    flush(conn, &mut out).await?;
                    if uncommitted {
                        sink.commit()?;
                    }
                    return Ok(outcome);
                }
            }
        }
        flush(conn, &mut out).await?;
    }
}

/// Hands the guest's sync state to a sink that keeps it after each `stored`.
async fn save_stored_state(instance: &mut Instance, session: SessionHandle, sink: &mut dyn MessageSink) -> Result<(), HostError> {
    if sink.wants_stored_state() {
        let state = instance.sync_state(session).await?;
        sink.stored_state(state)?;
    }
    Ok(())
}

/// A read error for the admin (see `io_failed`).
fn read_failed(e: &std::io::Error) -> String {
    io_failed("read", e)
}

/// An I/O error for the admin: TLS libraries word a cut connection with a link to their
/// manual, which helps no admin; links are cut from any other error text too.
fn io_failed(what: &str, e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        return format!("{what} failed: the connection was closed without a proper TLS ending (cut by the server or the network)");
    }
    let text = e.to_string();
    let text = match text.find("http://").or_else(|| text.find("https://")) {
        Some(i) => text[..i].trim_end_matches([' ', ':', ';', ',']).to_string(),
        None => text,
    };
    format!("{what} failed: {text}")
}

async fn flush(conn: &mut Conn, out: &mut Vec<u8>) -> Result<(), HostError> {
    if out.is_empty() {
        return Ok(());
    }
    let r = conn.write_all(out).await;
    out.clear();
    r.map_err(|e| HostError::Network { server: conn.label().to_string(), message: io_failed("write", &e) })
}

async fn next_event(
    instance: &mut Instance,
    session: SessionHandle,
    conn: &mut Conn,
    opts: &DriveOptions<'_>,
    buf: &mut [u8],
) -> Result<Event, HostError> {
    let deadline = instance.deadline(session).await?;
    let wait = match deadline {
        Some(d) => Duration::from_millis(d.saturating_sub(now_ms())),
        None => opts.idle_timeout,
    };
    match tokio::time::timeout(wait, conn.read(buf)).await {
        Ok(Ok(0)) => Ok(Event::Closed),
        Ok(Ok(n)) => Ok(Event::Received(buf[..n].to_vec())),
        Ok(Err(e)) => Err(HostError::Network { server: conn.label().to_string(), message: read_failed(&e) }),
        Err(_) if deadline.is_some() => Ok(Event::Timer),
        // The guest set no deadline yet nothing happened: a backstop so no session hangs.
        Err(_) => Err(HostError::Timeout {
            server: conn.label().to_string(),
            message: format!("nothing happened for {} s", opts.idle_timeout.as_secs()),
        }),
    }
}
