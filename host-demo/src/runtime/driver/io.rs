//! The driver's reads and writes: the wait for the next event, the writes (armed ones too) and
//! the I/O errors as the admin reads them.

use super::*;

/// Performs an armed write whose lines arrived: the commit point, the message's bytes as the
/// host holds them and the bytes after them, in one socket write.
pub(super) async fn perform_armed(
    a: ArmedWrite,
    held: &mut Vec<(u32, Vec<u8>)>,
    conn: &mut Conn,
    out: &mut Vec<u8>,
    sink: &mut dyn MessageSink,
    end: Instant,
    opts: &DriveOptions<'_>,
) -> Result<(), HostError> {
    // Taken first: bytes the driver does not hold end the session before the commit point.
    let mut raw = take_held(held, a.message)?;
    sink.commit_point(a.message)?;
    raw.extend_from_slice(&a.after);
    append(out, raw);
    flush(conn, out, end, opts).await?;
    sink.armed_write(a.message);
    Ok(())
}

/// The bytes of batch message `index` the driver holds (from `message-data`), to be written
/// now (`write-message`, an armed write); they are written once.
pub(super) fn take_held(held: &mut Vec<(u32, Vec<u8>)>, index: u32) -> Result<Vec<u8>, HostError> {
    let Some(k) = held.iter().position(|(i, _)| *i == index) else {
        return Err(HostError::Plugin(format!(
            "the mail component asked to write message {index} of the batch, whose bytes it was not handed or which was written already"
        )));
    };
    Ok(held.swap_remove(k).1)
}

/// Adds `bytes` to the pending write (consecutive writes are one socket write); moved, not
/// copied, when nothing is pending.
pub(super) fn append(out: &mut Vec<u8>, bytes: Vec<u8>) {
    if out.is_empty() {
        *out = bytes;
    } else {
        out.extend_from_slice(&bytes);
    }
}

/// A read error for the admin (see `io_failed`).
pub(super) fn read_failed(e: &std::io::Error) -> String {
    io_failed("read", e)
}

/// An I/O error for the admin: TLS libraries word a cut connection with a link to their
/// manual, which helps no admin; links are cut from any other error text too.
pub(super) fn io_failed(what: &str, e: &std::io::Error) -> String {
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
pub(super) async fn flush(conn: &mut Conn, out: &mut Vec<u8>, end: Instant, opts: &DriveOptions<'_>) -> Result<(), HostError> {
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
pub(super) fn starttls_timeout(server: String, limit: Duration) -> HostError {
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
pub(super) struct Greeting {
    /// None once a line ending arrived.
    pub(super) until: Option<Instant>,
    pub(super) implicit_tls: bool,
}

pub(super) async fn next_event(
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
