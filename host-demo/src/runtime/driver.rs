//! Runs one guest session over a real connection: the host half of the sans-IO contract.
//! It performs the guest's actions in order and feeds back events; it knows no protocol.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::ClientConfig;

use crate::engine::{
    Action, ArmedWrite, BatchData, CleanBytes, Event, GuestSecurity, GuestServer, Idling, Instance, MessageBytes, Outcome, SessionHandle,
};
use crate::error::HostError;
use crate::net::Conn;

mod allow;
mod io;
mod sink;

use allow::allowed_server;
pub use allow::{is_allowed, AllowedServer};
use io::{append, flush, next_event, perform_armed, read_failed, starttls_timeout, take_held, Greeting};
pub use sink::MessageSink;

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
                    append(&mut out, bytes);
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
                Action::ArmWrite(a) => armed = sink.armed_writes().then_some(a),
                // Bytes that need no change on the wire, checked by the host (`clean`) or by
                // the guest when they were handed over: the host's copy is written.
                Action::WriteMessage(index) => {
                    let raw = take_held(&mut held, index)?;
                    wrote |= !raw.is_empty();
                    append(&mut out, raw);
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

/// Hands the guest's sync state to a sink that keeps it after each `stored`.
async fn save_stored_state(instance: &mut Instance, session: SessionHandle, sink: &mut dyn MessageSink) -> Result<(), HostError> {
    if sink.wants_stored_state() {
        let state = instance.sync_state(session).await?;
        sink.stored_state(state)?;
    }
    Ok(())
}

