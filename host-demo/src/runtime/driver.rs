//! Runs one guest session over a real connection: the host half of the sans-IO contract.
//! It performs the guest's actions in order and feeds back events; it knows no protocol.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::ClientConfig;

use crate::engine::{
    Action, ArmedWrite, BatchData, CleanBytes, Event, FetchedMessage, GuestSecurity, GuestServer, Idling, Instance, MessageBytes, MessageResult,
    Outcome, SessionHandle, SkippedMessage, StepReport,
};
use crate::error::HostError;
use crate::net::Conn;

/// Bytes read per `read` call and handed to the guest at once (one copy across the boundary).
const READ_CHUNK: usize = 256 * 1024;

/// Spare room in a batch message's buffer for what the guest writes after it in the same
/// socket write (the final dot, the next message's MAIL/RCPT/DATA): asked of the sink, which
/// copies the message into a buffer this much larger (one copy, not a copy and a realloc).
pub const WRITE_SLACK: usize = 512;

/// A commit makes the session wait until the sink's writer stored everything delivered and
/// synced it. While less than `COMMIT_GRACE_BYTES` is uncommitted, a read that would wait is
/// given `COMMIT_GRACE` for more data first: a server that only paused (it shares the CPU
/// with us) keeps streaming into the same batch instead of each pause costing a commit.
/// The transaction open across the grace holds nobody else of this process up: the store's
/// sinks share one writer per database, and its other writes take a turn that commits first
/// (`store::sqlite::writer`), so `mailplug serve`'s actors on one thread keep it too.
const COMMIT_GRACE: Duration = Duration::from_millis(10);
const COMMIT_GRACE_BYTES: usize = 64 << 20;

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
    /// A batch submission is about to write the final dot of message `index`: record it
    /// durably now. The driver performs no write that follows the commit point before this
    /// returns; an error ends the session before the dot is written.
    fn commit_point(&mut self, _index: u32) -> Result<(), HostError> {
        Ok(())
    }
    /// A batch submission's armed write for message `index` was performed as its replies
    /// arrived (`arm-write`), right after `commit_point(index)`; for counting only.
    fn armed_write(&mut self, _index: u32) {}
    /// A batch submission knows the fate of one message; record it.
    fn message_done(&mut self, _result: MessageResult) -> Result<(), HostError> {
        Ok(())
    }
    /// A batch submission asks for the bytes of message `index` (`need-message`): the driver
    /// calls this once the writes of the step that asked are performed, and hands them over
    /// with `message-data` before reading again, so the copy overlaps the server's work. Return them with at least
    /// `slack` bytes of spare capacity (`Vec::with_capacity(len + slack)`): the final dot and
    /// the next commands are appended there when the message is written; without the room the
    /// driver makes it, which copies the message once more.
    fn batch_message(&mut self, index: u32, _slack: usize) -> Result<Vec<u8>, HostError> {
        Err(HostError::Plugin(format!("the component asked for message {index}, but this session sends none")))
    }
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

/// One server the tenant configured: host, port and the security it must be reached with.
pub type AllowedServer = (String, u16, GuestSecurity);

/// What the driver needs besides the session.
pub struct DriveOptions<'a> {
    /// The servers the tenant configured, each with its configured security; nothing else is
    /// ever connected to, and never with weaker security than configured.
    pub allowed: &'a [AllowedServer],
    pub tls: Arc<ClientConfig>,
    pub connect_timeout: Duration,
    /// Backstop when the guest sets no deadline of its own.
    pub idle_timeout: Duration,
    /// The longest the TLS handshake after STARTTLS / STLS may take (the guest has no deadline
    /// while the host runs it): the tenant's reply timeout.
    pub reply_timeout: Duration,
    /// The longest the host waits for the server's first line (its greeting) once connected,
    /// after the handshake with implicit TLS (`limits.greeting_timeout_secs`, at most the
    /// reply timeout); then the session ends with `HostError::NoGreeting`.
    pub greeting_timeout: Duration,
    /// The longest a whole session may take, connecting included; it then ends with
    /// `HostError::SessionLimit`.
    pub max_session: Duration,
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
    let end = Instant::now() + opts.max_session;
    let server = allowed_server(instance, session, opts).await?;
    let implicit = matches!(server.security, GuestSecurity::ImplicitTls);
    let label = format!("{}:{}", server.host, server.port);
    let connect = Conn::connect(&server.host, server.port, implicit, opts.tls.clone(), opts.connect_timeout);
    let mut conn = match tokio::time::timeout(remaining(end), connect).await {
        Ok(c) => c?,
        Err(_) => return Err(session_limit(label, opts)),
    };
    run_and_close(instance, session, &mut conn, opts, sink, end, implicit).await
}

/// How a session that may idle ended (see `drive_to_idle`).
pub enum Parked {
    /// The session finished; its connection is closed.
    Finished(Outcome),
    /// The session went idle (`action::idle`): its connection is left open for the caller,
    /// who keeps it with the idle and sync state and drops the session (and the instance).
    /// `wrote` says whether this run wrote anything to the server: a run that wrote nothing (it
    /// only read what the server said while idling) did not restart the server's idea of the
    /// client's activity, so a re-IDLE timer keeps running.
    Idle { conn: Conn, idling: Idling, wrote: bool },
}

/// Like `drive_keep`, for a session that may go idle: then the connection is returned open
/// with what the guest handed over; otherwise it is closed. The session stays alive either way
/// (the caller reads its sync state and drops it).
pub async fn drive_to_idle(
    instance: &mut Instance,
    session: SessionHandle,
    opts: &DriveOptions<'_>,
    sink: &mut dyn MessageSink,
) -> Result<Parked, HostError> {
    let end = Instant::now() + opts.max_session;
    let server = allowed_server(instance, session, opts).await?;
    let implicit = matches!(server.security, GuestSecurity::ImplicitTls);
    let label = format!("{}:{}", server.host, server.port);
    let connect = Conn::connect(&server.host, server.port, implicit, opts.tls.clone(), opts.connect_timeout);
    let conn = match tokio::time::timeout(remaining(end), connect).await {
        Ok(c) => c?,
        Err(_) => return Err(session_limit(label, opts)),
    };
    let greeting = Greeting { until: Some(Instant::now() + opts.greeting_timeout), implicit_tls: implicit };
    run_or_park(instance, session, conn, vec![Event::Connected], opts, sink, end, greeting).await
}

/// Drives a session resumed from an idle state (`inbound.resume`) on the connection the
/// caller kept, starting with the events in `first` (what ended the caller's wait:
/// `received`, `timer`, `stop`, `closed`) instead of `connected`. `max_session` applies to
/// this run alone. The session's server is checked against the allow-list again.
pub async fn drive_resumed(
    instance: &mut Instance,
    session: SessionHandle,
    mut conn: Conn,
    first: Vec<Event>,
    opts: &DriveOptions<'_>,
    sink: &mut dyn MessageSink,
) -> Result<Parked, HostError> {
    let end = Instant::now() + opts.max_session;
    let implicit = match allowed_server(instance, session, opts).await {
        Ok(server) => matches!(server.security, GuestSecurity::ImplicitTls),
        Err(e) => {
            conn.close().await;
            return Err(e);
        }
    };
    let greeting = Greeting { until: None, implicit_tls: implicit };
    run_or_park(instance, session, conn, first, opts, sink, end, greeting).await
}

#[allow(clippy::too_many_arguments)]
async fn run_or_park(
    instance: &mut Instance,
    session: SessionHandle,
    mut conn: Conn,
    first: Vec<Event>,
    opts: &DriveOptions<'_>,
    sink: &mut dyn MessageSink,
    end: Instant,
    greeting: Greeting,
) -> Result<Parked, HostError> {
    match run_loop(instance, session, &mut conn, opts, sink, end, first, greeting).await {
        Ok(Ended::Idle(idling, wrote)) => Ok(Parked::Idle { conn, idling, wrote }),
        Ok(Ended::Finished(outcome)) => {
            conn.close().await;
            Ok(Parked::Finished(outcome))
        }
        Err(e) => {
            conn.close().await;
            Err(e)
        }
    }
}

/// How `run_loop` ended.
enum Ended {
    Finished(Outcome),
    /// What the guest handed over, and whether the run wrote anything.
    Idle(Idling, bool),
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
    let end = Instant::now() + opts.max_session;
    let implicit = match allowed_server(instance, session, opts).await {
        Ok(server) => matches!(server.security, GuestSecurity::ImplicitTls),
        Err(e) => {
            conn.close().await;
            return Err(e);
        }
    };
    run_and_close(instance, session, conn, opts, sink, end, implicit).await
}

async fn run_and_close(
    instance: &mut Instance,
    session: SessionHandle,
    conn: &mut Conn,
    opts: &DriveOptions<'_>,
    sink: &mut dyn MessageSink,
    end: Instant,
    implicit_tls: bool,
) -> Result<Outcome, HostError> {
    let greeting = Greeting { until: Some(Instant::now() + opts.greeting_timeout), implicit_tls };
    let result = run_loop(instance, session, conn, opts, sink, end, vec![Event::Connected], greeting).await;
    conn.close().await;
    match result? {
        Ended::Finished(outcome) => Ok(outcome),
        // Only sessions opened with `idle` go idle, and those are driven by `drive_to_idle`.
        Ended::Idle(..) => Err(HostError::Plugin("the mail component went idle though this operation did not ask it to".into())),
    }
}

/// Time left until `end` (zero once it passed).
fn remaining(end: Instant) -> Duration {
    end.saturating_duration_since(Instant::now())
}

fn session_limit(server: String, opts: &DriveOptions<'_>) -> HostError {
    HostError::SessionLimit { server, limit_secs: opts.max_session.as_secs() }
}

/// How strong a security mode is: implicit TLS > STARTTLS > plaintext.
fn strength(s: GuestSecurity) -> u8 {
    match s {
        GuestSecurity::ImplicitTls => 2,
        GuestSecurity::Starttls => 1,
        GuestSecurity::InsecurePlaintext => 0,
    }
}

/// Whether the tenant configured `server`: its host and port, with security at least as
/// strong as every entry configured for that host and port. The guest's `server()` is not
/// trusted to carry the configured security.
pub fn is_allowed(allowed: &[AllowedServer], server: &GuestServer) -> Result<(), HostError> {
    let label = format!("{}:{}", server.host, server.port);
    let mut matching = allowed.iter().filter(|(h, p, _)| h.eq_ignore_ascii_case(&server.host) && *p == server.port).peekable();
    if matching.peek().is_none() {
        return Err(HostError::NotAllowed(label));
    }
    if let Some((_, _, configured)) = matching.find(|(_, _, c)| strength(server.security) < strength(*c)) {
        return Err(HostError::WeakerSecurity {
            server: label,
            configured: security_name(*configured),
            asked: security_name(server.security),
        });
    }
    Ok(())
}

fn security_name(s: GuestSecurity) -> &'static str {
    match s {
        GuestSecurity::ImplicitTls => "implicit TLS",
        GuestSecurity::Starttls => "STARTTLS",
        GuestSecurity::InsecurePlaintext => "no TLS (insecure plaintext)",
    }
}

/// The session's server, when it is one the tenant configured; nothing else is connected to.
async fn allowed_server(
    instance: &mut Instance,
    session: SessionHandle,
    opts: &DriveOptions<'_>,
) -> Result<crate::engine::GuestServer, HostError> {
    let server = instance.server(session).await?;
    is_allowed(opts.allowed, &server)?;
    Ok(server)
}

#[allow(clippy::too_many_arguments)]
async fn run_loop(
    instance: &mut Instance,
    session: SessionHandle,
    conn: &mut Conn,
    opts: &DriveOptions<'_>,
    sink: &mut dyn MessageSink,
    end: Instant,
    first: Vec<Event>,
    // Until the server's first line has arrived: when waiting for it ends.
    mut greeting: Greeting,
) -> Result<Ended, HostError> {
    let mut events: VecDeque<Event> = VecDeque::from(first);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut out: Vec<u8> = Vec::new();
    // Deliveries stored but not yet committed. Commits (each an fsync) are batched: while the
    // server keeps streaming we keep reading, and commit + send `stored` once a read would wait.
    let mut uncommitted = false;
    // The guest's deadline after the last event (from `step`).
    let mut guest_deadline = None;
    // Messages the guest asked for in this step (batch submissions): their bytes are fetched
    // from the sink after this step's writes went out and handed over in one event.
    let mut wanted: Vec<u32> = Vec::new();
    // Batch submissions: the bytes answered for, kept until the guest asks to write them
    // (`write-message`) or reports the message done without it. At most the guest's window.
    let mut held: Vec<(u32, Vec<u8>)> = Vec::new();
    // Whether anything was written to the server in this run (see `Parked::Idle`).
    let mut wrote = false;
    // Bytes of the deliveries not yet committed.
    let mut uncommitted_bytes = 0usize;
    // Batch submissions: the write armed for the next bytes read (`arm-write`).
    let mut armed: Option<ArmedWrite> = None;
    loop {
        if Instant::now() >= end {
            // What was delivered is kept: the next run deduplicates what the guest did not
            // hear `stored` for.
            if uncommitted {
                sink.commit()?;
            }
            return Err(session_limit(conn.label().to_string(), opts));
        }
        if events.is_empty() && uncommitted {
            let grace = if uncommitted_bytes < COMMIT_GRACE_BYTES { COMMIT_GRACE.min(remaining(end)) } else { Duration::ZERO };
            match tokio::time::timeout(grace, conn.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => events.push_back(Event::Received(buf[..n].to_vec())),
                ready => {
                    sink.commit()?;
                    uncommitted = false;
                    uncommitted_bytes = 0;
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
            None => next_event(guest_deadline, conn, opts, &mut buf, end, &greeting).await?,
        };
        if let (Event::Received(bytes), Some(_)) = (&event, greeting.until) {
            if bytes.contains(&b'\n') {
                greeting.until = None;
            }
        }
        // An armed write goes out the moment the bytes it waits for arrive, before the guest's
        // step; any other event but `message-data` ends it.
        let event = match event {
            Event::MessageData(_) => event,
            Event::Received(bytes) => match armed.take() {
                Some(a) if mailplug_wire::armed_lines_match(&bytes, &a.lines, a.max_line as usize) => {
                    perform_armed(a, &mut held, conn, &mut out, sink, end, opts).await?;
                    wrote = true;
                    Event::ReceivedArmed(bytes)
                }
                _ => Event::Received(bytes),
            },
            other => {
                armed = None;
                other
            }
        };
        // `step`: the actions and the deadline after them in one call.
        let (actions, deadline) = instance.step(session, &event, now_ms()).await?;
        guest_deadline = deadline;
        if matches!(event, Event::Stored) {
            save_stored_state(instance, session, sink).await?;
        }
        if let Event::MessageData(list) = event {
            // Bytes handed over (`raw`): the host keeps its own (the clean ones are held already).
            held.extend(list.into_iter().filter_map(|d| match d.bytes {
                MessageBytes::Raw(raw) => Some((d.index, raw)),
                MessageBytes::Clean(_) => None,
            }));
        }
        for action in actions {
            match action {
                // Consecutive writes are coalesced into one socket write.
                Action::Write(bytes) => {
                    wrote |= !bytes.is_empty();
                    if out.is_empty() {
                        out = bytes;
                    } else {
                        out.extend_from_slice(&bytes);
                    }
                }
                Action::StartTls => {
                    flush(conn, &mut out, end, opts).await?;
                    // The guest has no deadline while the host runs the handshake: bounded here.
                    let wait = opts.reply_timeout.min(remaining(end));
                    match tokio::time::timeout(wait, conn.start_tls()).await {
                        Ok(Ok(())) => events.push_back(Event::TlsEstablished),
                        Ok(Err(e)) => events.push_back(Event::TlsFailed(e.to_string())),
                        Err(_) if wait < opts.reply_timeout => return Err(session_limit(conn.label().to_string(), opts)),
                        Err(_) => return Err(starttls_timeout(conn.label().to_string(), opts.reply_timeout)),
                    }
                }
                Action::Deliver(message) => {
                    // Parsed in the parse instance, with its own budget: a message that cannot
                    // be parsed is delivered flagged and never ends the session.
                    let message = instance.parse_delivery(message).await?;
                    uncommitted_bytes += message.raw.len();
                    sink.deliver(message)?;
                    uncommitted = true;
                }
                Action::Skipped(notice) => sink.skipped(notice)?,
                Action::Progress(report) => sink.progress(report),
                // Writes before the commit point may still be buffered in `out`: they precede
                // it, so sending them later is fine; the ones after it are added only now.
                Action::CommitPoint(index) => sink.commit_point(index)?,
                Action::MessageDone(result) => {
                    // Not written (refused before its data): its bytes are no longer needed.
                    held.retain(|(index, _)| *index != result.index);
                    sink.message_done(result)?
                }
                // Fetched and handed over after this list's writes went out (`out` is
                // flushed below), before the next read: the copy overlaps the server's work
                // instead of delaying the write the server waits for.
                Action::NeedMessage(index) => wanted.push(index),
                // Performed when the next bytes read match (above); a later one replaces it.
                Action::ArmWrite(a) => armed = Some(a),
                // Bytes that need no change on the wire, checked by the host (`clean`) or by
                // the guest when they were handed over: the host's copy is written.
                Action::WriteMessage(index) => {
                    let Some(k) = held.iter().position(|(i, _)| *i == index) else {
                        return Err(HostError::Plugin(format!(
                            "the mail component asked to write message {index} of the batch, whose bytes it was not handed or which was written already"
                        )));
                    };
                    let raw = held.swap_remove(k).1;
                    wrote |= !raw.is_empty();
                    if out.is_empty() {
                        out = raw;
                    } else {
                        out.extend_from_slice(&raw);
                    }
                }
                Action::Close => {
                    flush(conn, &mut out, end, opts).await?;
                    conn.close().await;
                }
                Action::Finished(outcome) => {
                    flush(conn, &mut out, end, opts).await?;
                    if uncommitted {
                        sink.commit()?;
                    }
                    return Ok(Ended::Finished(outcome));
                }
                // The server idles: the connection stays open for the caller.
                Action::Idle(idling) => {
                    flush(conn, &mut out, end, opts).await?;
                    if uncommitted {
                        sink.commit()?;
                    }
                    return Ok(Ended::Idle(idling, wrote));
                }
            }
        }
        flush(conn, &mut out, end, opts).await?;
        if !wanted.is_empty() {
            // Room for the final dot and the next commands, written with the message
            // (`write-message`).
            let mut list = Vec::with_capacity(wanted.len());
            for index in wanted.drain(..) {
                let mut raw = sink.batch_message(index, WRITE_SLACK)?;
                raw.reserve(WRITE_SLACK);
                // Clean bytes (composed messages are) stay here: the component's own check,
                // made natively, so they never cross the boundary; anything else is handed
                // over for the component to encode or refuse.
                let bytes = match mailplug_wire::clean_for_data(&raw) {
                    Some(clean) => {
                        let size = raw.len() as u64;
                        held.push((index, raw));
                        MessageBytes::Clean(CleanBytes { size, eight_bit: clean.eight_bit })
                    }
                    None => MessageBytes::Raw(raw),
                };
                list.push(BatchData { index, bytes });
            }
            events.push_back(Event::MessageData(list));
        }
    }
}

/// Performs an armed write whose lines arrived: the commit point, the message's bytes as the
/// host holds them and the bytes after them, in one socket write.
async fn perform_armed(
    a: ArmedWrite,
    held: &mut Vec<(u32, Vec<u8>)>,
    conn: &mut Conn,
    out: &mut Vec<u8>,
    sink: &mut dyn MessageSink,
    end: Instant,
    opts: &DriveOptions<'_>,
) -> Result<(), HostError> {
    let Some(k) = held.iter().position(|(i, _)| *i == a.message) else {
        return Err(HostError::Plugin(format!(
            "the mail component armed a write of message {} of the batch, whose bytes it was not handed or which was written already",
            a.message
        )));
    };
    sink.commit_point(a.message)?;
    let mut raw = held.swap_remove(k).1;
    raw.extend_from_slice(&a.after);
    if out.is_empty() {
        *out = raw;
    } else {
        out.extend_from_slice(&raw);
    }
    flush(conn, out, end, opts).await?;
    sink.armed_write(a.message);
    Ok(())
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

/// Writes what the guest asked for; a server that stops reading holds it at most until the
/// session's end.
async fn flush(conn: &mut Conn, out: &mut Vec<u8>, end: Instant, opts: &DriveOptions<'_>) -> Result<(), HostError> {
    if out.is_empty() {
        return Ok(());
    }
    let r = match tokio::time::timeout(remaining(end), conn.write_all(out)).await {
        Ok(r) => r,
        Err(_) => return Err(session_limit(conn.label().to_string(), opts)),
    };
    out.clear();
    r.map_err(|e| HostError::Network { server: conn.label().to_string(), message: io_failed("write", &e) })
}

/// The server accepted STARTTLS / STLS, then the handshake did not finish in time.
fn starttls_timeout(server: String, limit: Duration) -> HostError {
    HostError::Timeout {
        server,
        message: format!(
            "the TLS handshake after STARTTLS did not finish within {} s (limits.reply_timeout_secs): the server accepted STARTTLS but never started TLS; check that the server (or a proxy or firewall in between) really supports STARTTLS on this port, or use the port for TLS from the first byte",
            limit.as_secs()
        ),
    }
}

/// The wait for the server's first line: the host bounds it by the greeting timeout, shorter
/// than the guest's reply timeout, because a server that never greets usually waits for a TLS
/// handshake (the TLS switch is off for a TLS port) and the admin should hear so quickly.
struct Greeting {
    /// None once a line ending arrived.
    until: Option<Instant>,
    implicit_tls: bool,
}

async fn next_event(
    deadline: Option<u64>,
    conn: &mut Conn,
    opts: &DriveOptions<'_>,
    buf: &mut [u8],
    end: Instant,
    greeting: &Greeting,
) -> Result<Event, HostError> {
    let mut wait = match deadline {
        Some(d) => Duration::from_millis(d.saturating_sub(now_ms())),
        None => opts.idle_timeout,
    };
    if let Some(until) = greeting.until {
        wait = wait.min(until.saturating_duration_since(Instant::now()));
    }
    let left = remaining(end);
    match tokio::time::timeout(wait.min(left), conn.read(buf)).await {
        Ok(Ok(0)) => Ok(Event::Closed),
        Ok(Ok(n)) => Ok(Event::Received(buf[..n].to_vec())),
        Ok(Err(e)) => Err(HostError::Network { server: conn.label().to_string(), message: read_failed(&e) }),
        Err(_) if left < wait => Err(session_limit(conn.label().to_string(), opts)),
        // No first line yet: whichever wait ran out (the greeting timeout is never longer than
        // the guest's reply timeout), the server did not greet.
        Err(_) if greeting.until.is_some() => Err(HostError::NoGreeting {
            server: conn.label().to_string(),
            port: conn.port(),
            secs: opts.greeting_timeout.as_secs(),
            implicit_tls: greeting.implicit_tls,
        }),
        Err(_) if deadline.is_some() => Ok(Event::Timer),
        // The guest set no deadline yet nothing happened: a backstop so no session hangs.
        Err(_) => Err(HostError::Timeout {
            server: conn.label().to_string(),
            message: format!("nothing happened for {} s", opts.idle_timeout.as_secs()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(host: &str, port: u16, security: GuestSecurity) -> GuestServer {
        GuestServer { host: host.into(), port, security }
    }

    #[test]
    fn the_allow_list_enforces_the_configured_security() {
        use GuestSecurity::*;
        let allowed: Vec<AllowedServer> = vec![("imap.example.test".into(), 993, ImplicitTls), ("smtp.example.test".into(), 587, Starttls)];
        assert!(is_allowed(&allowed, &server("IMAP.example.test", 993, ImplicitTls)).is_ok());
        assert!(is_allowed(&allowed, &server("smtp.example.test", 587, Starttls)).is_ok());
        // Stronger than configured cannot leak anything.
        assert!(is_allowed(&allowed, &server("smtp.example.test", 587, ImplicitTls)).is_ok());
        for (host, port, asked) in [
            ("imap.example.test", 993, Starttls),
            ("imap.example.test", 993, InsecurePlaintext),
            ("smtp.example.test", 587, InsecurePlaintext),
        ] {
            let e = is_allowed(&allowed, &server(host, port, asked)).unwrap_err();
            assert!(matches!(e, HostError::WeakerSecurity { .. }), "{e}");
            assert!(e.to_string().contains("the tenant configured"), "{e}");
        }
        assert!(matches!(is_allowed(&allowed, &server("evil.test", 993, ImplicitTls)), Err(HostError::NotAllowed(_))));
        assert!(matches!(is_allowed(&allowed, &server("imap.example.test", 143, ImplicitTls)), Err(HostError::NotAllowed(_))));
        // The same host and port configured twice: the strongest entry decides.
        let twice: Vec<AllowedServer> = vec![("h".into(), 1, InsecurePlaintext), ("h".into(), 1, ImplicitTls)];
        assert!(is_allowed(&twice, &server("h", 1, Starttls)).is_err());
    }
}
